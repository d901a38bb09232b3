/*
 * End-to-end tests of the remote-function messages (REGISTER, UNREGISTER,
 * CALL, RESULT; proto/README.md "Remote functions") at the wire level, on
 * a fidbusd whose config has no [remote] section (ctest: e2e.remote_wire;
 * serving itself is e2e.remote).
 *
 * The daemon answers them on a connection that stays open and in sync: a
 * valid REGISTER gets ERROR UNAUTHORIZED (no [remote NS] allows it), an
 * UNREGISTER of a function not served NOT_FOUND, a malformed one
 * the decoder's MALFORMED or INVALID with its seq, a client's CALL (a
 * daemon -> client type) UNSUPPORTED, a valid RESULT nothing at all (it
 * answers no call: ignored and counted), a malformed RESULT an ERROR. The
 * connection's own events and another connection's all arrive.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

/* clang-format off */
static const char conf[] =
    FB_E2E_COUNT
    "[route good]\nevent = rw.good\nto = fidbus.count\n";
/* clang-format on */

/* Asserts the next frame on r is ERROR code with seq (-2: no seq key) and
 * a message containing `says`. */
static void expect_error_says(struct fb_e2e_raw *r, int code, long long seq,
                              const char *says, const char *what)
{
    const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, code, seq);
    const char *text = fb_e2e_msg_text(m);
    ck_assert_msg(strstr(text, says), "%s: ERROR %s says '%s', expected '%s'", what,
                  fidbus_code_name(code), text, says);
}

/* An acked PUBLISH of rw.good on r, then its ACK (result 1: routed). */
static void publish_good(struct fb_e2e_raw *r, uint64_t seq)
{
    fb_e2e_raw_publish(r, seq, true, "rw.good");
    fb_e2e_raw_expect_ack(r, seq, 1);
}

static const struct fidbus_msg_out register_ok = {
    .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
               FIDBUS_BIT(FIDBUS_K_FUNCTION) | FIDBUS_BIT(FIDBUS_K_SIGNATURE) |
               FIDBUS_BIT(FIDBUS_K_CREDIT) | FIDBUS_BIT(FIDBUS_K_TIMEOUT_MS) |
               FIDBUS_BIT(FIDBUS_K_FLAGS),
    .type = FIDBUS_MSG_REGISTER,
    .seq = 1,
    .function = "acme.audit@1.0.0",
    .signature = "event:any",
    .credit = 16,
    .timeout_ms = 30000,
    .flags = FIDBUS_FLAG_IDEMPOTENT,
};

START_TEST(test_e2e_remote_register_unauthorized)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fidbus_client *other = fb_e2e_connect(t);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);

    fb_e2e_publish_n(other, "rw.good", 100);
    fb_e2e_raw_msg(r, &register_ok);
    expect_error_says(r, FIDBUS_UNAUTHORIZED, 1, "no [remote acme]",
                      "REGISTER");
    publish_good(r, 2);

    /* The fixed-buffer encoder's frame is the same to the daemon. */
    uint8_t frame[512];
    size_t n =
        fidbus_enc_register(frame, sizeof frame, 3, "acme.audit@1.0.0", "", 0, 0, 0);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    expect_error_says(r, FIDBUS_UNAUTHORIZED, 3, "no [remote acme]",
                      "REGISTER (fidbus_enc_register)");

    n = fidbus_enc_unregister(frame, sizeof frame, 4, "acme.audit@1.0.0");
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    expect_error_says(r, FIDBUS_NOT_FOUND, 4, "does not serve",
                      "UNREGISTER");
    publish_good(r, 5);

    fb_e2e_publish_n(other, "rw.good", 100);
    fb_e2e_ping(other);
    ck_assert_uint_eq(fidbus_client_async_errors(other), 0);
    fidbus_client_close(other);
    fb_e2e_raw_close(r);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "rw.good", 200 + 2);
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* One malformed or invalid REGISTER/UNREGISTER/RESULT per i, with the
 * answer it must get; false past the last. */
static bool bad_remote(int i, struct fidbus_msg_out *o, int *code, long long *seq,
                       const char **says)
{
    *o = register_ok;
    o->seq = 100 + (uint64_t)i;
    *seq = (long long)o->seq;
    *code = FIDBUS_INVALID;
    switch (i) {
    case 0:
        o->present &= ~FIDBUS_BIT(FIDBUS_K_FUNCTION);
        *code = FIDBUS_MALFORMED;
        *says = "REGISTER without function";
        return true;
    case 1:
        o->present &= ~FIDBUS_BIT(FIDBUS_K_SIGNATURE);
        *code = FIDBUS_MALFORMED;
        *says = "REGISTER without signature";
        return true;
    case 2:
        o->present &= ~FIDBUS_BIT(FIDBUS_K_SEQ);
        *code = FIDBUS_MALFORMED;
        *seq = -2;
        *says = "REGISTER without seq";
        return true;
    case 3:
        o->function = "acme.audit"; /* no version */
        *says = "canonical";
        return true;
    case 4:
        o->function = "acme.au dit@1.0.0";
        *says = "canonical";
        return true;
    case 5:
        o->credit = 0;
        *says = "credit must be at least 1";
        return true;
    case 6:
        o->timeout_ms = 0;
        *says = "timeout_ms must be at least 1";
        return true;
    case 7:
        o->type = FIDBUS_MSG_UNREGISTER;
        o->present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ);
        *code = FIDBUS_MALFORMED;
        *says = "UNREGISTER without function";
        return true;
    case 8:
        o->type = FIDBUS_MSG_RESULT;
        o->present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                     FIDBUS_BIT(FIDBUS_K_UPTO) | FIDBUS_BIT(FIDBUS_K_CODE);
        o->upto = 7;
        o->code = 0;
        *code = FIDBUS_MALFORMED;
        *says = "both seq and upto";
        return true;
    case 9:
        o->type = FIDBUS_MSG_RESULT;
        o->present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ);
        *code = FIDBUS_MALFORMED;
        *says = "RESULT without code";
        return true;
    case 10:
        o->type = FIDBUS_MSG_RESULT;
        o->present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_CODE);
        *code = FIDBUS_MALFORMED;
        *seq = -2;
        *says = "RESULT without seq or upto";
        return true;
    default:
        return false;
    }
}

START_TEST(test_e2e_remote_bad_frames)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);

    struct fidbus_msg_out o;
    int code, i;
    long long seq;
    const char *says;
    for (i = 0; bad_remote(i, &o, &code, &seq, &says); i++) {
        fb_e2e_raw_msg(r, &o);
        char what[32];
        snprintf(what, sizeof what, "bad remote frame %d", i);
        expect_error_says(r, code, seq, says, what);
    }
    /* A wrong value type is MALFORMED with the seq read before it:
     * {0: 16, 1: 200, 15: 7} (function is a uint). */
    fb_e2e_raw_frame(r, "\xa3\x00\x10\x01\x18\xc8\x0f\x07", 8);
    expect_error_says(r, FIDBUS_MALFORMED, 200, "function is not a text string",
                      "function as uint");
    /* {0: 16, 1: 201, 15: "a.b@1.0.0", 17: "", 18: "x"} */
    fb_e2e_raw_frame(r,
                     "\xa5\x00\x10\x01\x18\xc9\x0f\x69"
                     "a.b@1.0.0\x11\x60\x12\x61x",
                     22);
    expect_error_says(r, FIDBUS_MALFORMED, 201, "credit is not an unsigned integer",
                      "credit as text");
    /* still open and in sync */
    publish_good(r, 300);
    fb_e2e_raw_close(r);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "rw.good", 1);
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* A client may not send CALL (daemon -> client); a valid RESULT answers
 * no call on a daemon without remote functions: no reply, counted. */
START_TEST(test_e2e_remote_call_and_result_from_client)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    long long bad0 = fb_e2e_prom_value(t, "fidbus_bad_frames_total");

    struct fidbus_call_out call = {
        .call_id = 5,
        .funcid = 0x0123456789abcdefull,
        .event = "rw.good",
        .payload = {(const uint8_t *)"\x18\x2a", 2},
        .generation = 1,
        .attempt = 1,
    };
    uint8_t frame[512];
    size_t n = fidbus_enc_call(frame, sizeof frame, &call);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    expect_error_says(r, FIDBUS_UNSUPPORTED, 5, "not accepted from a client", "CALL");

    /* RESULTs for calls nobody made: one by seq, one by upto, one with a
     * code outside 0/6/14 and a message. Nothing comes back; the PING's
     * ACK is the very next frame. */
    n = fidbus_enc_result(frame, sizeof frame, false, 5, FIDBUS_OK, NULL);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    n = fidbus_enc_result(frame, sizeof frame, true, 9, FIDBUS_RETRY, NULL);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    n = fidbus_enc_result(frame, sizeof frame, false, 10, 99, "odd code");
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    fb_e2e_raw_ping(r, 6);
    fb_e2e_raw_expect_ack(r, 6, 0);
    publish_good(r, 7);

    /* The CALL and the three RESULTs, and nothing else, were counted. */
    ck_assert_int_eq(fb_e2e_prom_value(t, "fidbus_bad_frames_total"), bad0 + 4);
    fb_e2e_raw_close(r);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "rw.good", 1);
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ [remote NS] */

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* config.export writes the [remote] sections; a daemon reads them back. */
START_TEST(test_e2e_remote_config_export)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_COUNT "[remote acme]\nusers = root, 1001\n"
                                                    "groups = root\ncredit = 4\n"
                                                    "timeout_ms = 500\nattempts = 2\n"
                                                    "[remote *]\n");
    char *out = fb_e2e_ctl(t, 0, NULL, "config", "export", NULL);
    ck_assert_msg(strstr(out, "\n[remote acme]\nusers = 0, 1001\ngroups = 0\ntcp = no\n"
                              "credit = 4\ntimeout_ms = 500\nattempts = 2\n") &&
                      strstr(out, "\n[remote *]\ntcp = no\ncredit = 16\n"
                                  "timeout_ms = 30000\nattempts = 3\n"),
                  "export:\n%s", out);
    const char *file = fb_e2e_write(t, "export.conf", out);
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c", file,
                          NULL};
    char *o = NULL, *e = NULL;
    int st = fb_e2e_run(t, argv, &o, &e);
    ck_assert_msg(EXIT_IS(st, 0), "--check-config: 0x%x: %s%s\nfile:\n%s", st, o, e, out);
    free(o);
    free(e);
    free(out);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A [remote] section naming a user the system does not have: the daemon
 * does not start, and says FILE:LINE. */
START_TEST(test_e2e_remote_config_unknown_user)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, "[remote acme]\nusers = fidbus-no-such-user\n");
    char *conf = fb_e2e_read(t->conf, NULL);
    ck_assert_ptr_nonnull(conf);
    int line = 2;
    const char *sec = strstr(conf, "[remote acme]");
    ck_assert_ptr_nonnull(sec);
    for (const char *p = conf; p < sec; p++)
        line += *p == '\n';
    free(conf);
    char want[512];
    snprintf(want, sizeof want,
             "%s:%d: [remote acme] users: no user 'fidbus-no-such-user' on this system",
             t->conf, line);
    fb_e2e_start_fail_says(t, want);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_remote_wire_suite(void)
{
    Suite *s = suite_create("e2e_remote_wire");
    TCase *tc = tcase_create("remote_wire");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_remote_register_unauthorized);
    tcase_add_test(tc, test_e2e_remote_bad_frames);
    tcase_add_test(tc, test_e2e_remote_call_and_result_from_client);
    tcase_add_test(tc, test_e2e_remote_config_export);
    tcase_add_test(tc, test_e2e_remote_config_unknown_user);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_remote_wire_suite());
}
