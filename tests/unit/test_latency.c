/* Sampled handler-latency histograms: bucket mapping and quantiles; the
 * every-call histogram (fb_hist) that stats exports. */
#include <check.h>
#include <stdlib.h>

#include "base/latency.h"

/* Buckets grow with the value and cover every uint64_t. */
START_TEST(test_latency_buckets_monotonic)
{
    unsigned prev = 0;
    for (uint64_t v = 0; v < 100000; v++) {
        unsigned b = fb_lat_bucket(v);
        ck_assert_uint_ge(b, prev);
        ck_assert_uint_lt(b, FB_LAT_BUCKETS);
        prev = b;
    }
    ck_assert_uint_lt(fb_lat_bucket(UINT64_MAX), FB_LAT_BUCKETS);
    ck_assert_uint_eq(fb_lat_bucket(0), 0);
    ck_assert_uint_eq(fb_lat_bucket(3), 3);
    ck_assert_uint_ne(fb_lat_bucket(1000), fb_lat_bucket(2000));
}
END_TEST

START_TEST(test_latency_empty_is_zero)
{
    static struct fb_latency l;
    uint64_t n = 99;
    ck_assert_uint_eq(fb_lat_quantile(&l, 0.5, &n), 0);
    ck_assert_uint_eq(n, 0);
}
END_TEST

/* 99 samples of 1000 ns and one of 1 ms: p50 ~1000, p99 ~1000, p100 ~1 ms,
 * each within the histogram's 25% resolution. */
START_TEST(test_latency_quantiles_within_resolution)
{
    static struct fb_latency l;
    for (int i = 0; i < 99; i++)
        fb_lat_record(&l, 1000);
    fb_lat_record(&l, 1000000);
    uint64_t n = 0;
    uint64_t p50 = fb_lat_quantile(&l, 0.50, &n);
    ck_assert_uint_eq(n, 100);
    ck_assert_uint_ge(p50, 750);
    ck_assert_uint_le(p50, 1250);
    uint64_t p99 = fb_lat_quantile(&l, 0.99, NULL);
    ck_assert_uint_ge(p99, 750);
    ck_assert_uint_le(p99, 1250);
    uint64_t pmax = fb_lat_quantile(&l, 1.0, NULL);
    ck_assert_uint_ge(pmax, 750000);
    ck_assert_uint_le(pmax, 1250000);

    /* a spread: 1..10000 ns uniformly; p50 ~5000, p99 ~9900 */
    static struct fb_latency u;
    for (uint64_t v = 1; v <= 10000; v++)
        fb_lat_record(&u, v);
    p50 = fb_lat_quantile(&u, 0.50, NULL);
    p99 = fb_lat_quantile(&u, 0.99, NULL);
    ck_assert_uint_ge(p50, 3750);
    ck_assert_uint_le(p50, 6250);
    ck_assert_uint_ge(p99, 7425);
    ck_assert_uint_le(p99, 12375);
}
END_TEST

/* One call of a simulated dispatcher on stripe st, as dispatch.c does it:
 * a timed call (every FB_LAT_SAMPLE-th of the stripe) records its ns. */
static void hist_call(struct fb_hist *h, struct fb_striped *calls, unsigned st,
                      uint64_t ns)
{
    uint64_t at = atomic_load_explicit(&calls->s[st].v, memory_order_relaxed);
    if (at % FB_LAT_SAMPLE == 0)
        fb_hist_timed(h, st, at, ns);
    atomic_fetch_add_explicit(&calls->s[st].v, 1, memory_order_relaxed);
}

/* The histogram's count is the call count after any number of calls (not
 * only multiples of the sampling period), on several stripes; buckets are
 * cumulative; the sum is each call's nearest earlier timed duration. */
START_TEST(test_hist_counts_every_call)
{
    static struct fb_hist h;
    static struct fb_striped calls;
    struct fb_hist_snap snap;
    fb_hist_read(&h, &calls, &snap);
    ck_assert_uint_eq(snap.count, 0);
    ck_assert_uint_eq(snap.sum_ns, 0);
    uint64_t want_sum = 0, last[FB_STRIPES] = {0};
    for (unsigned n = 1; n <= 1000; n++) {
        unsigned st = n % 3;
        uint64_t ns = (n % 7) * 1000 + 50;
        uint64_t at = atomic_load_explicit(&calls.s[st].v, memory_order_relaxed);
        if (at % FB_LAT_SAMPLE == 0)
            last[st] = ns;
        want_sum += last[st];
        hist_call(&h, &calls, st, ns);
        fb_hist_read(&h, &calls, &snap);
        ck_assert_uint_eq(snap.count, n);
        ck_assert_uint_eq(snap.count, fb_striped_sum(&calls));
        ck_assert_uint_eq(snap.sum_ns, want_sum);
        for (unsigned i = 1; i < FB_HIST_BOUNDS; i++)
            ck_assert_uint_ge(snap.counts[i], snap.counts[i - 1]);
        ck_assert_uint_le(snap.counts[FB_HIST_BOUNDS - 1], snap.count);
    }
}
END_TEST

/* Bucket i holds what is <= bound i; a call past the last bound is only in
 * +Inf (the count). */
START_TEST(test_hist_bounds_inclusive)
{
    ck_assert_uint_eq(fb_hist_bucket(0), 0);
    ck_assert_uint_eq(fb_hist_bucket(100), 0);
    ck_assert_uint_eq(fb_hist_bucket(101), 1);
    ck_assert_uint_eq(fb_hist_bucket(10000000000ull), FB_HIST_BOUNDS - 1);
    ck_assert_uint_eq(fb_hist_bucket(10000000001ull), FB_HIST_BOUNDS);
    for (unsigned i = 1; i < FB_HIST_BOUNDS; i++)
        ck_assert_uint_gt(fb_hist_bounds_ns[i], fb_hist_bounds_ns[i - 1]);

    static struct fb_hist h;
    static struct fb_striped calls;
    hist_call(&h, &calls, 0, 20000000000ull); /* 20 s */
    hist_call(&h, &calls, 1, 100);
    struct fb_hist_snap snap;
    fb_hist_read(&h, &calls, &snap);
    ck_assert_uint_eq(snap.count, 2);
    ck_assert_uint_eq(snap.counts[0], 1);
    ck_assert_uint_eq(snap.counts[FB_HIST_BOUNDS - 1], 1);
    ck_assert_uint_eq(snap.sum_ns, 20000000100ull);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("latency");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_latency_buckets_monotonic);
    tcase_add_test(tc, test_latency_empty_is_zero);
    tcase_add_test(tc, test_latency_quantiles_within_resolution);
    tcase_add_test(tc, test_hist_counts_every_call);
    tcase_add_test(tc, test_hist_bounds_inclusive);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
