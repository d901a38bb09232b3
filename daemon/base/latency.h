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
#include <stdint.h>

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

#endif
