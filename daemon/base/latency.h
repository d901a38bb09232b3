/*
 * Handler latency, sampled. Timing every call would put two clock reads
 * (~40 ns) on the hot path of a bus that dispatches an event in ~130 ns, so
 * a call is timed when its thread's stripe of the function's call counter
 * is a multiple of FB_LAT_SAMPLE (the first call of each thread included,
 * so rarely called functions are measured too). Samples go to a log-linear
 * histogram: 4 sub-buckets per power of two, so a percentile is within 25%
 * of the true value, which is what p50/p99 in `stats` need.
 */
#ifndef FB_LATENCY_H
#define FB_LATENCY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/stripe.h"

#define FB_LAT_SAMPLE 16u
#define FB_LAT_BUCKETS 256u

struct fb_latency {
    _Atomic uint64_t b[FB_LAT_BUCKETS];
};

static inline unsigned fb_lat_bucket(uint64_t ns)
{
    if (ns < 4)
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    return 4u * (msb - 1u) + (unsigned)((ns >> (msb - 2u)) & 3u);
}

static inline void fb_lat_record(struct fb_latency *l, uint64_t ns)
{
    atomic_fetch_add_explicit(&l->b[fb_lat_bucket(ns)], 1, memory_order_relaxed);
}

/* The q-quantile (0 < q <= 1) of the samples, in ns (a bucket's midpoint);
 * 0 when there are none. *samples gets the sample count if non-NULL. */
uint64_t fb_lat_quantile(const struct fb_latency *l, double q, uint64_t *samples);

/*
 * The Prometheus histogram of a function's calls (stats' latency_*,
 * fidbus_function_duration_seconds): it counts EVERY call, so its count is
 * `calls`, without timing every call. Each timed call (the sampled ones
 * above) opens a period on its stripe; every call of that stripe until the
 * next timed one is counted in the bucket of that timed call's duration,
 * and adds that duration to the sum. The untimed calls cost nothing extra
 * (the stripe's call counter is the period's end); a timed call closes the
 * previous period (a few relaxed stores under the stripe's sequence
 * counter, once in FB_LAT_SAMPLE calls); a reader adds the open period.
 * So the buckets and the sum are estimates of each call's duration by the
 * nearest earlier timed one on the same thread, and the count is exact.
 */
#define FB_HIST_BOUNDS 25u /* finite upper bounds; the +Inf bucket is the count */
extern const uint64_t fb_hist_bounds_ns[FB_HIST_BOUNDS];

struct fb_hist_stripe {
    _Atomic uint32_t seq;     /* odd while a timed call updates the rest */
    _Atomic uint32_t last;    /* bucket of the open period (FB_HIST_BOUNDS: +Inf) */
    _Atomic uint64_t last_ns; /* its duration */
    _Atomic uint64_t start;   /* the call counter where it opened */
    _Atomic uint64_t sum_ns;  /* closed periods */
    _Atomic uint64_t b[FB_HIST_BOUNDS + 1]; /* closed periods, not cumulative */
} __attribute__((aligned(64)));

struct fb_hist {
    struct fb_hist_stripe s[FB_STRIPES];
};

/* A cumulative snapshot: counts[i] calls took <= fb_hist_bounds_ns[i]. */
struct fb_hist_snap {
    uint64_t counts[FB_HIST_BOUNDS];
    uint64_t count; /* every call: the +Inf bucket */
    uint64_t sum_ns;
};

static inline unsigned fb_hist_bucket(uint64_t ns)
{
    unsigned i = 0;
    while (i < FB_HIST_BOUNDS && ns > fb_hist_bounds_ns[i])
        i++;
    return i;
}

/*
 * A timed call of the stripe `stripe` whose call counter was `at` before
 * the call, took ns. Only from the thread that owns the stripe; when two
 * threads share one (more threads than FB_STRIPES) and collide, the
 * sample is dropped and the open period goes on (the count stays exact).
 */
static inline void fb_hist_timed(struct fb_hist *h, unsigned stripe, uint64_t at,
                                 uint64_t ns)
{
    struct fb_hist_stripe *s = &h->s[stripe];
    uint32_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);
    if ((q & 1u) || !atomic_compare_exchange_strong_explicit(
                        &s->seq, &q, q + 1, memory_order_acquire, memory_order_relaxed))
        return;
    /* A seqlock without fences (TSan has none): the acquire CAS keeps the
     * stores below after it, each store is a release so a reader that
     * sees it also sees seq odd. The CAS makes this writer the only one:
     * plain adds. */
    uint64_t start = atomic_load_explicit(&s->start, memory_order_relaxed);
    if (at >= start) {
        uint64_t n = at - start;
        if (n) {
            unsigned l = atomic_load_explicit(&s->last, memory_order_relaxed);
            uint64_t ln = atomic_load_explicit(&s->last_ns, memory_order_relaxed);
            atomic_store_explicit(
                &s->b[l], atomic_load_explicit(&s->b[l], memory_order_relaxed) + n,
                memory_order_release);
            atomic_store_explicit(&s->sum_ns,
                                  atomic_load_explicit(&s->sum_ns, memory_order_relaxed) +
                                      n * ln,
                                  memory_order_release);
        }
        atomic_store_explicit(&s->last, fb_hist_bucket(ns), memory_order_release);
        atomic_store_explicit(&s->last_ns, ns, memory_order_release);
        atomic_store_explicit(&s->start, at, memory_order_release);
    }
    atomic_store_explicit(&s->seq, q + 2, memory_order_release);
}

/*
 * The histogram of h, whose stripes' call counters are `calls` (the
 * function's), summed over the stripes. out->count is the call count the
 * buckets agree with: report it as `calls` next to them.
 */
void fb_hist_read(const struct fb_hist *h, const struct fb_striped *calls,
                  struct fb_hist_snap *out);

#endif
