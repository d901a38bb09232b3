/* Quantiles of the sampled handler-latency histograms (see latency.h). */
#include "base/latency.h"

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
