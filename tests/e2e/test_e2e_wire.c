/*
 * End-to-end tests of the wire protocol against a real fidbusd (ctest:
 * e2e.wire), with hand-made frames on raw sockets.
 *
 * Frames split at every byte and pipelined before HELLO; malformed,
 * unsupported and invalid bodies on one connection (each answered with
 * the right ERROR, the connection staying usable) while another
 * connection's events all arrive; a zero-length frame and frames over
 * max_frame, which close only their own connection.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* clang-format off */
static const char publish_conf[] =
    FB_E2E_LOG FB_E2E_COUNT
    "[route one]\nevent = pub.one\nto = fidbus.log\n"
    "[route fan]\nevent = pub.fan\nto = fidbus.log, fidbus.count\n";
/* clang-format on */

/* Collects n answers from a raw connection, indexed by seq (< 16). */
struct raw_answer {
    bool seen;
    uint64_t type, code, result;
};

static void raw_collect(struct fb_e2e_raw *r, int n, struct raw_answer out[16])
{
    for (int i = 0; i < n; i++) {
        int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
        ck_assert_msg(rc == 1, "answer %d of %d: %s", i + 1, n,
                      rc == 0 ? "connection closed" : strerror(-rc));
        const struct fidbus_msg *m = &r->msg;
        ck_assert_msg(m->type == FIDBUS_MSG_ACK || m->type == FIDBUS_MSG_ERROR,
                      "unexpected message type %" PRIu64, m->type);
        ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_SEQ) && m->seq < 16 && !out[m->seq].seen,
                      "answer with unexpected seq %" PRIu64, m->seq);
        struct raw_answer *a = &out[m->seq];
        a->seen = true;
        a->type = m->type;
        a->code = m->code;
        a->result = UINT64_MAX;
        if (fidbus_msg_has(m, FIDBUS_K_RESULT))
            fb_e2e_cbor_uint(m->result, &a->result);
    }
}

/* Pipelining before HELLO, with every byte in its own write: the daemon
 * reassembles frames split anywhere. _i: 0 = Unix, 1 = TCP. */
START_TEST(test_e2e_publish_split_writes)
{
    struct fb_e2e_opts o = {.tcp = true};
    struct fb_e2e *t = fb_e2e_up(&o, publish_conf);
    struct fb_e2e_raw *r = _i == 0 ? fb_e2e_raw_unix(t) : fb_e2e_raw_tcp(t);

    struct fidbus_buf b = {0};
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = 1,
        .event = "pub.one",
        .flags = FIDBUS_FLAG_ACK,
    };
    ck_assert_int_eq(fidbus_msg_encode(&b, &m), 0);
    m.seq = 2;
    m.flags = 0;
    ck_assert_int_eq(fidbus_msg_encode(&b, &m), 0);
    m.seq = 3;
    m.event = "pub.fan";
    m.flags = FIDBUS_FLAG_ACK;
    ck_assert_int_eq(fidbus_msg_encode(&b, &m), 0);
    struct fidbus_msg_out ping = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = 4,
    };
    ck_assert_int_eq(fidbus_msg_encode(&b, &ping), 0);
    for (size_t i = 0; i < b.len; i++)
        fb_e2e_raw_send(r, b.data + i, 1);
    fidbus_buf_free(&b);

    fb_e2e_raw_hello(r);
    struct raw_answer ans[16] = {0};
    raw_collect(r, 3, ans);
    ck_assert(ans[1].seen && ans[1].type == FIDBUS_MSG_ACK && ans[1].result == 1);
    ck_assert(!ans[2].seen);
    ck_assert(ans[3].seen && ans[3].type == FIDBUS_MSG_ACK && ans[3].result == 2);
    ck_assert(ans[4].seen && ans[4].type == FIDBUS_MSG_ACK && ans[4].result == 0);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    FB_E2E_ASSERT_LINES(log, "pub.one", 1, 1);
    FB_E2E_ASSERT_LINES(log, "pub.one", 2, 1);
    FB_E2E_ASSERT_LINES(log, "pub.fan", 3, 1);
    free(log);
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ----------------------------------------------------------- bad frames */

/* Builds bad body number i into c; returns false past the last one. */
static bool bad_body(int i, struct fb_e2e_cbor *c, int *code, long long *seq,
                     const char **what)
{
    c->n = 0;
    *seq = -1;
    switch (i) {
    case 0:
        *what = "not CBOR (a stray break)";
        fb_e2e_cb_raw(c, "\xff\xff", 2);
        *code = FIDBUS_MALFORMED;
        return true;
    case 1:
        *what = "truncated map";
        fb_e2e_cb_raw(c, "\xa3\x00\x03\x01", 4);
        *code = FIDBUS_MALFORMED;
        return true;
    case 2:
        *what = "an array, not a map";
        fb_e2e_cb_raw(c, "\x82\x01\x02", 3);
        *code = FIDBUS_MALFORMED;
        return true;
    case 3:
        *what = "text key";
        fb_e2e_cb_head(c, FB_E2E_CB_MAP, 1);
        fb_e2e_cb_text(c, "type");
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, FIDBUS_MSG_PING);
        *code = FIDBUS_MALFORMED;
        return true;
    case 4:
        *what = "negative key";
        fb_e2e_cb_raw(c, "\xa3\x00\x08\x01\x04\x20\x01", 7);
        *code = FIDBUS_MALFORMED;
        return true;
    case 5:
        *what = "event is a uint";
        fb_e2e_cb_raw(c, "\xa3\x00\x03\x01\x05\x02\x05", 7);
        *code = FIDBUS_MALFORMED;
        *seq = 5;
        return true;
    case 6:
        *what = "trailing bytes";
        fb_e2e_cb_raw(c, "\xa2\x00\x08\x01\x06\x00", 6);
        *code = FIDBUS_MALFORMED;
        return true;
    case 7:
        *what = "duplicate key";
        fb_e2e_cb_raw(c, "\xa3\x00\x08\x01\x07\x01\x07", 7);
        *code = FIDBUS_MALFORMED;
        return true;
    case 8:
        *what = "no type";
        fb_e2e_cb_raw(c, "\xa1\x01\x08", 3);
        *code = FIDBUS_MALFORMED;
        *seq = 8;
        return true;
    case 9:
        *what = "PUBLISH without event";
        fb_e2e_cb_raw(c, "\xa3\x00\x03\x01\x09\x05\x00", 7);
        *code = FIDBUS_MALFORMED;
        *seq = 9;
        return true;
    case 10:
        *what = "unknown type 99";
        fb_e2e_cb_raw(c, "\xa2\x00\x18\x63\x01\x0a", 6);
        *code = FIDBUS_UNSUPPORTED;
        *seq = 10;
        return true;
    case 11:
        /* A REGISTER is decoded and checked like any message. */
        *what = "REGISTER without function";
        fb_e2e_cb_raw(c, "\xa2\x00\x10\x01\x0b", 5);
        *code = FIDBUS_MALFORMED;
        *seq = 11;
        return true;
    default:
        break;
    }
    /* PUBLISH {type, seq, event, tags?, payload?} with bad values */
    char long_id[300];
    switch (i) {
    case 12:
    case 13:
    case 14:
        *what = i == 12 ? "id with a space" : i == 13 ? "empty id" : "256-byte id";
        fb_e2e_cb_head(c, FB_E2E_CB_MAP, 3);
        fb_e2e_cb_raw(c, "\x00\x03\x01", 3);
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, (uint64_t)i);
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, FIDBUS_K_EVENT);
        memset(long_id, 'a', 256);
        long_id[256] = '\0';
        fb_e2e_cb_text(c, i == 12 ? "bad id!" : i == 13 ? "" : long_id);
        *code = FIDBUS_INVALID;
        *seq = i;
        return true;
    case 15:
    case 16:
    case 17:
    case 18:
    case 19:
    case 20:
        fb_e2e_cb_head(c, FB_E2E_CB_MAP, 4);
        fb_e2e_cb_raw(c, "\x00\x03\x01", 3);
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, (uint64_t)i);
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, FIDBUS_K_EVENT);
        fb_e2e_cb_text(c, "bf.bad");
        *seq = i;
        if (i == 19) {
            *what = "payload nested 100 deep";
            fb_e2e_cb_head(c, FB_E2E_CB_UINT, FIDBUS_K_PAYLOAD);
            for (int d = 0; d < 100; d++)
                fb_e2e_cb_head(c, FB_E2E_CB_ARRAY, 1);
            fb_e2e_cb_head(c, FB_E2E_CB_UINT, 0);
            *code = FIDBUS_TOO_LARGE;
            return true;
        }
        fb_e2e_cb_head(c, FB_E2E_CB_UINT, FIDBUS_K_TAGS);
        if (i == 15) {
            *what = "tag key with a space";
            fb_e2e_cb_head(c, FB_E2E_CB_MAP, 1);
            fb_e2e_cb_text(c, "bad key");
            fb_e2e_cb_text(c, "v");
            *code = FIDBUS_INVALID;
        } else if (i == 16) {
            *what = "tag value not UTF-8";
            fb_e2e_cb_head(c, FB_E2E_CB_MAP, 1);
            fb_e2e_cb_text(c, "k");
            fb_e2e_cb_raw(c, "\x62\xc3\x28", 3);
            *code = FIDBUS_MALFORMED;
        } else if (i == 17) {
            *what = "33 tags";
            fb_e2e_cb_head(c, FB_E2E_CB_MAP, 33);
            for (int k = 0; k < 33; k++) {
                char key[8];
                snprintf(key, sizeof key, "k%d", k);
                fb_e2e_cb_text(c, key);
                fb_e2e_cb_text(c, "v");
            }
            *code = FIDBUS_INVALID;
        } else if (i == 18) {
            *what = "tags is not a map";
            fb_e2e_cb_text(c, "k=v");
            *code = FIDBUS_MALFORMED;
        } else {
            *what = "256-byte tag value";
            fb_e2e_cb_head(c, FB_E2E_CB_MAP, 1);
            fb_e2e_cb_text(c, "k");
            memset(long_id, 'v', 256);
            long_id[256] = '\0';
            fb_e2e_cb_text(c, long_id);
            *code = FIDBUS_INVALID;
        }
        return true;
    default:
        return false;
    }
}

START_TEST(test_e2e_bad_frames)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_COUNT "[route good]\nevent = bf.good\n"
                                                    "to = fidbus.count\n");
    /* clang-format on */
    struct fidbus_client *good = fb_e2e_connect(t);
    struct fb_e2e_raw *bad = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(bad);

    const int per_round = 400;
    int sent = 0;
    struct fb_e2e_cbor *cb = malloc(sizeof *cb);
    ck_assert_ptr_nonnull(cb);
    int code;
    long long seq;
    const char *what;
    for (int i = 0; bad_body(i, cb, &code, &seq, &what); i++) {
        fb_e2e_publish_n(good, "bf.good", per_round);
        sent += per_round;
        fb_e2e_raw_frame(bad, cb->b, cb->n);
        const struct fidbus_msg *m = &bad->msg;
        int rc = fb_e2e_raw_recv(bad, FB_E2E_TIMEOUT_MS);
        ck_assert_msg(rc == 1, "bad body %d (%s): no ERROR, %s", i, what,
                      rc == 0 ? "connection closed" : strerror(-rc));
        ck_assert_msg(m->type == FIDBUS_MSG_ERROR && m->code == (uint64_t)code,
                      "bad body %d (%s): got type %" PRIu64 " code %" PRIu64
                      " (%s), expected ERROR %s",
                      i, what, m->type, m->code, fidbus_code_name((int)m->code),
                      fidbus_code_name(code));
        if (seq >= 0)
            ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_SEQ) && m->seq == (uint64_t)seq,
                          "bad body %d (%s): ERROR without seq %lld", i, what, seq);
    }
    free(cb);

    /* the bad connection is still open and in sync */
    fb_e2e_raw_ping(bad, 99);
    fb_e2e_raw_expect_ack(bad, 99, 0);
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = 100,
        .event = "bf.good",
        .flags = FIDBUS_FLAG_ACK,
    };
    fb_e2e_raw_msg(bad, &m);
    fb_e2e_raw_expect_ack(bad, 100, 1);
    /* a zero-length frame cannot be resynchronised: MALFORMED, then close */
    fb_e2e_raw_send(bad, "\0\0\0\0", 4);
    fb_e2e_raw_expect_error(bad, FIDBUS_MALFORMED, -1);
    fb_e2e_raw_expect_eof(bad);
    fb_e2e_raw_close(bad);

    fb_e2e_publish_n(good, "bf.good", per_round);
    sent += per_round;
    fb_e2e_ping(good);
    ck_assert_uint_eq(fidbus_client_async_errors(good), 0);
    fidbus_client_close(good);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "bf.good", sent + 1);
    FB_E2E_ASSERT_COUNT(json, "_total", sent + 1);
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ too large */

START_TEST(test_e2e_too_large)
{
    struct fb_e2e_opts o = {.max_frame = 4096};
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(&o, FB_E2E_COUNT "[route x]\nevent = tl.x\n"
                                                  "to = fidbus.count\n");
    /* clang-format on */
    struct fidbus_client *good = fb_e2e_connect(t);
    fb_e2e_publish_n(good, "tl.x", 500);

    /* exactly max_frame: accepted */
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    struct fb_e2e_cbor *cb = malloc(sizeof *cb);
    ck_assert_ptr_nonnull(cb);
    cb->n = 0;
    fb_e2e_cb_raw(cb, "\xa5\x00\x03\x01\x01\x02\x64tl.x\x04", 12);
    fb_e2e_cb_head(cb, FB_E2E_CB_BYTES, 4079);
    uint8_t fill[4079];
    memset(fill, 0x5a, sizeof fill);
    fb_e2e_cb_raw(cb, fill, sizeof fill);
    fb_e2e_cb_raw(cb, "\x05\x01", 2);
    ck_assert_uint_eq(cb->n, 4096);
    fb_e2e_raw_frame(r, cb->b, cb->n);
    free(cb);
    fb_e2e_raw_expect_ack(r, 1, 1);

    /* one byte more: TOO_LARGE and that connection closes (only the
     * header is sent: the daemon must decide on it alone) */
    fb_e2e_raw_send(r, "\x00\x00\x10\x01", 4);
    fb_e2e_raw_expect_error(r, FIDBUS_TOO_LARGE, -1);
    fb_e2e_raw_expect_eof(r);
    fb_e2e_raw_close(r);

    r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_send(r, "\xff\xff\xff\xff", 4);
    fb_e2e_raw_expect_error(r, FIDBUS_TOO_LARGE, -1);
    fb_e2e_raw_expect_eof(r);
    fb_e2e_raw_close(r);

    /* the other connection never noticed */
    fb_e2e_publish_n(good, "tl.x", 500);
    uint64_t res = 0;
    int rc = fidbus_publish_ack(good, "tl.x", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack: %s", fidbus_strerror(rc));
    ck_assert_uint_eq(res, 1);
    fb_e2e_ping(good);
    ck_assert_uint_eq(fidbus_client_async_errors(good), 0);
    fidbus_client_close(good);

    /* and new connections are accepted */
    good = fb_e2e_connect(t);
    rc = fidbus_publish_ack(good, "tl.x", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack on a new connection: %s", fidbus_strerror(rc));
    fidbus_client_close(good);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "tl.x", 500 + 1 + 500 + 1 + 1);
    free(json);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_wire_suite(void)
{
    Suite *s = suite_create("e2e_wire");
    TCase *tc = tcase_create("wire");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_e2e_publish_split_writes, 0, 2);
    tcase_add_test(tc, test_e2e_bad_frames);
    tcase_add_test(tc, test_e2e_too_large);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_wire_suite());
}
