/* Stripe assignment for striped counters (see stripe.h). */
#include "base/stripe.h"

_Thread_local unsigned fb_tls_stripe;
static _Atomic unsigned next_stripe;

unsigned fb_stripe_assign(void)
{
    unsigned s =
        atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % FB_STRIPES;
    fb_tls_stripe = s + 1;
    return s;
}
