/*
 * Unit tests for the RESULT batching rule of the serving client
 * (fb_held_flush in lib/client_serve.c): which answered calls one RESULT
 * with `upto` may answer, and which must go one by one. The rule that
 * matters is safety: an `upto` must never cover a call still open (it
 * would answer it before it ran) -- so every case below also checks that
 * no emitted upto reaches past an open call.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <fidbus/proto.h>

#include "client_serve.h"

struct rec {
    bool upto;
    uint64_t id;
    uint8_t code;
};

static struct rec out[64];
static size_t nout;
static int fail_after = -1;

static int emit(void *ctx, bool upto, uint64_t id, uint8_t code)
{
    (void)ctx;
    if (fail_after >= 0 && (int)nout == fail_after)
        return -ENOMEM;
    out[nout++] = (struct rec){upto, id, code};
    return 0;
}

static struct fb_held H(uint64_t id, uint8_t state, uint8_t code) {
    return (struct fb_held){.id = id, .state = state, .code = code};
}

static void
reset(void)
{
    nout = 0;
    fail_after = -1;
    memset(out, 0, sizeof out);
}

/* No upto may answer an open call. */
static void assert_safe(const struct fb_held *before, size_t n)
{
    for (size_t k = 0; k < nout; k++) {
        for (size_t i = 0; i < n; i++) {
            if (before[i].state != FB_HELD_OPEN)
                continue;
            if (out[k].upto)
                ck_assert_uint_gt(before[i].id, out[k].id);
            else
                ck_assert_uint_ne(before[i].id, out[k].id);
        }
    }
}

static long flush(struct fb_held *v, size_t n, bool allow)
{
    struct fb_held copy[32];
    memcpy(copy, v, n * sizeof(*v));
    long r = fb_held_flush(v, n, allow, emit, NULL);
    assert_safe(copy, n);
    return r;
}

START_TEST(all_in_order_one_upto)
{
    reset();
    struct fb_held v[] = {H(1, FB_HELD_DONE, 0), H(2, FB_HELD_DONE, 0),
                          H(3, FB_HELD_DONE, 0), H(7, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 4, true), 4);
    ck_assert_uint_eq(nout, 1);
    ck_assert(out[0].upto);
    ck_assert_uint_eq(out[0].id, 7);
    ck_assert_uint_eq(out[0].code, 0);
}
END_TEST

START_TEST(single_goes_by_seq)
{
    reset();
    struct fb_held v[] = {H(5, FB_HELD_DONE, FIDBUS_HANDLER_FAILED)};
    ck_assert_int_eq(flush(v, 1, true), 1);
    ck_assert_uint_eq(nout, 1);
    ck_assert(!out[0].upto);
    ck_assert_uint_eq(out[0].id, 5);
    ck_assert_uint_eq(out[0].code, FIDBUS_HANDLER_FAILED);
}
END_TEST

START_TEST(open_call_stops_the_upto)
{
    reset();
    struct fb_held v[] = {H(1, FB_HELD_DONE, 0), H(2, FB_HELD_DONE, 0),
                          H(3, FB_HELD_OPEN, 0), H(4, FB_HELD_DONE, 0),
                          H(5, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 5, true), 2);
    ck_assert_uint_eq(nout, 3);
    ck_assert(out[0].upto);
    ck_assert_uint_eq(out[0].id, 2);
    /* behind the open call: one by one, never an upto */
    ck_assert(!out[1].upto);
    ck_assert_uint_eq(out[1].id, 4);
    ck_assert(!out[2].upto);
    ck_assert_uint_eq(out[2].id, 5);
    ck_assert_uint_eq(v[3].state, FB_HELD_SENT);
    ck_assert_uint_eq(v[4].state, FB_HELD_SENT);

    /* The open one answers later: the sent ones behind it are skipped,
     * not answered twice, and everything is finished. */
    reset();
    v[2].state = FB_HELD_DONE;
    ck_assert_int_eq(flush(v + 2, 3, true), 3);
    ck_assert_uint_eq(nout, 1);
    ck_assert(!out[0].upto);
    ck_assert_uint_eq(out[0].id, 3);
}
END_TEST

START_TEST(sent_inside_a_run_does_not_break_it)
{
    reset();
    struct fb_held v[] = {H(1, FB_HELD_DONE, 0), H(2, FB_HELD_SENT, 0),
                          H(3, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 3, true), 3);
    ck_assert_uint_eq(nout, 1);
    ck_assert(out[0].upto);
    ck_assert_uint_eq(out[0].id, 3);
}
END_TEST

START_TEST(codes_split_runs)
{
    reset();
    struct fb_held v[] = {H(1, FB_HELD_DONE, 0), H(2, FB_HELD_DONE, 0),
                          H(3, FB_HELD_DONE, FIDBUS_RETRY),
                          H(4, FB_HELD_DONE, FIDBUS_RETRY), H(5, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 5, true), 5);
    ck_assert_uint_eq(nout, 3);
    ck_assert(out[0].upto && out[0].id == 2 && out[0].code == 0);
    ck_assert(out[1].upto && out[1].id == 4 && out[1].code == FIDBUS_RETRY);
    ck_assert(!out[2].upto && out[2].id == 5 && out[2].code == 0);
}
END_TEST

START_TEST(no_upto_when_not_allowed)
{
    reset();
    struct fb_held v[] = {H(9, FB_HELD_DONE, 0), H(4, FB_HELD_DONE, 0),
                          H(10, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 3, false), 3);
    ck_assert_uint_eq(nout, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert(!out[i].upto);
    ck_assert_uint_eq(out[0].id, 9);
    ck_assert_uint_eq(out[1].id, 4);
    ck_assert_uint_eq(out[2].id, 10);
}
END_TEST

START_TEST(first_open_nothing_finished)
{
    reset();
    struct fb_held v[] = {H(1, FB_HELD_OPEN, 0), H(2, FB_HELD_OPEN, 0),
                          H(3, FB_HELD_DONE, 0)};
    ck_assert_int_eq(flush(v, 3, true), 0);
    ck_assert_uint_eq(nout, 1);
    ck_assert(!out[0].upto);
    ck_assert_uint_eq(out[0].id, 3);
    /* flushed again with nothing new: nothing is sent twice */
    reset();
    ck_assert_int_eq(flush(v, 3, true), 0);
    ck_assert_uint_eq(nout, 0);
}
END_TEST

START_TEST(emit_error_stops)
{
    reset();
    fail_after = 1;
    struct fb_held v[] = {H(1, FB_HELD_DONE, 0), H(2, FB_HELD_OPEN, 0),
                          H(3, FB_HELD_DONE, 0)};
    ck_assert_int_eq(fb_held_flush(v, 3, true, emit, NULL), -ENOMEM);
    ck_assert_uint_eq(v[0].state, FB_HELD_SENT);
    ck_assert_uint_eq(v[2].state, FB_HELD_DONE); /* not lost: sent next time */
}
END_TEST

static Suite *serve_batch_suite(void)
{
    Suite *s = suite_create("serve_batch");
    TCase *tc = tcase_create("flush");
    tcase_add_test(tc, all_in_order_one_upto);
    tcase_add_test(tc, single_goes_by_seq);
    tcase_add_test(tc, open_call_stops_the_upto);
    tcase_add_test(tc, sent_inside_a_run_does_not_break_it);
    tcase_add_test(tc, codes_split_runs);
    tcase_add_test(tc, no_upto_when_not_allowed);
    tcase_add_test(tc, first_open_nothing_finished);
    tcase_add_test(tc, emit_error_stops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(serve_batch_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
