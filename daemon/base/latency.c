/* Quantiles of the sampled handler-latency histograms (see latency.h). */
#include "base/latency.h"

#include <sched.h>
#include <string.h>

/* 1-2.5-5 steps from 100 ns (an inline handler) to 10 s (a stuck blocking
 * one): the `le` labels of fidbus_function_duration_seconds, a contract. */
const uint64_t fb_hist_bounds_ns[FB_HIST_BOUNDS] = {
    100,        250,        500,        1000,        2500,      5000,      10000,
    25000,      50000,      100000,     250000,      500000,    1000000,   2500000,
    5000000,    10000000,   25000000,   50000000,    100000000, 250000000, 500000000,
    1000000000, 2500000000, 5000000000, 10000000000,
};

/* One stripe: a consistent view of its fields and its call counter. */
static void read_stripe(const struct fb_hist_stripe *s, const struct fb_stripe *calls,
                        uint64_t b[FB_HIST_BOUNDS + 1], uint64_t *sum)
{
    for (unsigned tries = 0;; tries++) {
        uint32_t q = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (q & 1u) {
            if (tries > 64)
                sched_yield();
            continue;
        }
        /* acquire loads: the seq check below cannot move before them, and
         * a value a timed call stored brings its odd seq with it */
        for (unsigned i = 0; i <= FB_HIST_BOUNDS; i++)
            b[i] = atomic_load_explicit(&s->b[i], memory_order_acquire);
        *sum = atomic_load_explicit(&s->sum_ns, memory_order_acquire);
        unsigned last = atomic_load_explicit(&s->last, memory_order_acquire);
        uint64_t last_ns = atomic_load_explicit(&s->last_ns, memory_order_acquire);
        uint64_t start = atomic_load_explicit(&s->start, memory_order_acquire);
        uint64_t n = atomic_load_explicit(&calls->v, memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) != q)
            continue;
        /* the open period: the calls since the last timed one */
        if (n > start && last <= FB_HIST_BOUNDS) {
            b[last] += n - start;
            *sum += (n - start) * last_ns;
        }
        return;
    }
}

void fb_hist_read(const struct fb_hist *h, const struct fb_striped *calls,
                  struct fb_hist_snap *out)
{
    uint64_t b[FB_HIST_BOUNDS + 1], tot[FB_HIST_BOUNDS + 1] = {0}, sum;
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < FB_STRIPES; i++) {
        read_stripe(&h->s[i], &calls->s[i], b, &sum);
        for (unsigned j = 0; j <= FB_HIST_BOUNDS; j++)
            tot[j] += b[j];
        out->sum_ns += sum;
    }
    uint64_t run = 0;
    for (unsigned j = 0; j < FB_HIST_BOUNDS; j++)
        out->counts[j] = run += tot[j];
    out->count = run + tot[FB_HIST_BOUNDS];
}

static uint64_t bucket_low(unsigned i)
{
    if (i < 4)
        return i;
    unsigned msb = i / 4u + 1u, sub = i % 4u;
    return (uint64_t)(4u + sub) << (msb - 2u);
}

uint64_t fb_lat_quantile(const struct fb_latency *l, double q, uint64_t *samples)
{
    uint64_t n[FB_LAT_BUCKETS], total = 0;
    for (unsigned i = 0; i < FB_LAT_BUCKETS; i++) {
        n[i] = atomic_load_explicit(&l->b[i], memory_order_relaxed);
        total += n[i];
    }
    if (samples)
        *samples = total;
    if (!total)
        return 0;
    /* the smallest bucket at which the running count reaches q * total */
    uint64_t want = (uint64_t)(q * (double)total + 0.999999);
    if (want < 1)
        want = 1;
    uint64_t run = 0;
    for (unsigned i = 0; i < FB_LAT_BUCKETS; i++) {
        run += n[i];
        if (run >= want) {
            uint64_t lo = bucket_low(i);
            uint64_t hi = i + 1 < FB_LAT_BUCKETS ? bucket_low(i + 1) : lo * 2;
            return lo + (hi - lo) / 2;
        }
    }
    return bucket_low(FB_LAT_BUCKETS - 1);
}
