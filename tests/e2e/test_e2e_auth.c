/*
 * End-to-end tests of authenticated TCP (ctest: e2e.auth), design
 * section 2: a daemon with `tcp_auth = key` sends a fresh nonce in every
 * TCP HELLO and wants AUTH {mac = HMAC-SHA256(key, nonce)} as the first
 * frame. The hand-made cases (wrong key, no AUTH, AUTH twice, a replayed
 * or over-long mac, silence past the deadline) use raw sockets; the right
 * key is tried with the library and with `fidbusctl --key-file`. A key
 * file that others may read keeps the daemon from starting.
 *
 * The AUTH deadline is shortened with [limits] auth_timeout_ms, so the
 * silent-client case takes about a second.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

#define KEY "correct horse battery staple 0123456789"
#define DEADLINE_MS 1000

/* clang-format off */
static const char conf[] =
    FB_E2E_COUNT
    "[route all]\nevent = *\nto = fidbus.count\n"
    "[limits]\nauth_timeout_ms = 1000\n";
/* clang-format on */

/* The key file (with one trailing newline, which is not part of the key)
 * at mode, and a config with a loopback TCP listener that requires it. */
static struct fb_e2e *auth_config(mode_t mode)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config_tcp_key(t, NULL, KEY, mode, conf);
    return t;
}

static struct fb_e2e *auth_up(void)
{
    struct fb_e2e *t = auth_config(0600);
    fb_e2e_start(t);
    return t;
}

/* Reads the HELLO and copies its nonce (asserting it has 32 bytes). */
static void hello_nonce(struct fb_e2e_raw *r, uint8_t nonce[32])
{
    fb_e2e_raw_hello(r);
    ck_assert_msg(fidbus_msg_has(&r->msg, FIDBUS_K_NONCE) && r->msg.nonce.len == 32,
                  "TCP HELLO without a 32-byte nonce (%zu bytes)", r->msg.nonce.len);
    memcpy(nonce, r->msg.nonce.ptr, 32);
}

static void mac_of(const char *key, const uint8_t nonce[32], uint8_t mac[32])
{
    unsigned len = 0;
    ck_assert(HMAC(EVP_sha256(), key, (int)strlen(key), nonce, 32, mac, &len) != NULL);
    ck_assert_uint_eq(len, 32);
}

static void send_auth(struct fb_e2e_raw *r, const uint8_t *mac, size_t len)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_MAC),
        .type = FIDBUS_MSG_AUTH,
        .mac = {mac, len},
    };
    fb_e2e_raw_msg(r, &m);
}

/* A raw TCP connection that has passed AUTH (checked with a PING). */
static struct fb_e2e_raw *raw_authed(struct fb_e2e *t, uint8_t mac_out[32])
{
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    uint8_t nonce[32], mac[32];
    hello_nonce(r, nonce);
    mac_of(KEY, nonce, mac);
    send_auth(r, mac, sizeof mac);
    fb_e2e_raw_ping(r, 1);
    fb_e2e_raw_expect_ack(r, 1, 0);
    if (mac_out)
        memcpy(mac_out, mac, 32);
    return r;
}

/* UNAUTHORIZED (seq as fb_e2e_raw_expect_error) with `why` in its
 * message -- not the deadline's, so the refusal came from the frame --
 * then the daemon closes. */
static void expect_refused(struct fb_e2e_raw *r, long long seq, const char *why)
{
    const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, seq);
    char msg[256];
    snprintf(msg, sizeof msg, "%.*s", (int)m->message.len, (const char *)m->message.ptr);
    ck_assert_msg(strstr(msg, why), "ERROR message \"%s\" lacks \"%s\"", msg, why);
    fb_e2e_raw_expect_eof(r);
}

/* Nothing the refused connections sent reached a handler. */
static void stop_expect_count(struct fb_e2e *t, const char *event, long long n)
{
    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, event, n);
    free(json);
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_e2e_auth_right_key)
{
    struct fb_e2e *t = auth_up();
    struct fidbus_client_opts opts = {
        .name = "e2e",
        .key = (const uint8_t *)KEY,
        .key_len = strlen(KEY),
    };
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, t->tcp_addr, &opts);
    ck_assert_msg(rc == 0, "connect with the key: %s", fidbus_strerror(rc));
    fb_e2e_publish_ack(c, "auth.ok", 1);
    fb_e2e_publish_n(c, "auth.ok", 3);
    fb_e2e_ping(c);
    /* Once authenticated, the pre-AUTH frame cap (FB_AUTH_MAX_FRAME, 4 KiB)
     * is lifted: a 60 KB payload (a CBOR byte string) is an ordinary event. */
    size_t big_len = 3 + 60000;
    uint8_t *big = calloc(1, big_len);
    ck_assert_ptr_nonnull(big);
    big[0] = 0x59; /* bytes, 16-bit length */
    big[1] = 60000 >> 8;
    big[2] = 60000 & 0xff;
    uint64_t handled = 0;
    rc = fidbus_publish_ack(c, "auth.ok", NULL, 0, big, big_len, &handled);
    ck_assert_msg(rc == 0 && handled == 1, "60 KB publish after AUTH: %s (%s)",
                  fidbus_strerror(rc), fidbus_client_last_error(c));
    free(big);
    fidbus_client_close(c);

    /* The same over the raw wire, AUTH pipelined with a PUBLISH. */
    struct fb_e2e_raw *r = raw_authed(t, NULL);
    fb_e2e_raw_publish(r, 2, true, "auth.ok");
    fb_e2e_raw_expect_ack(r, 2, 1);
    fb_e2e_raw_close(r);

    /* Unix connections are unchanged: no nonce, no AUTH needed. */
    r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    ck_assert_msg(!fidbus_msg_has(&r->msg, FIDBUS_K_NONCE), "Unix HELLO has a nonce");
    fb_e2e_raw_publish(r, 3, true, "auth.ok");
    fb_e2e_raw_expect_ack(r, 3, 1);
    fb_e2e_raw_close(r);

    /* Without a key the library refuses the server's nonce itself. */
    c = NULL;
    rc = fidbus_client_connect(&c, t->tcp_addr, NULL);
    ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED));
    ck_assert_ptr_null(c);
    stop_expect_count(t, "auth.ok", 1 + 3 + 1 + 1 + 1);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_auth_wrong_key)
{
    struct fb_e2e *t = auth_up();
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    uint8_t nonce[32], mac[32];
    hello_nonce(r, nonce);
    mac_of("not the key at all, sorry", nonce, mac);
    send_auth(r, mac, sizeof mac);
    fb_e2e_raw_publish(r, 5, true, "auth.bad");
    expect_refused(r, -2, "wrong key");
    fb_e2e_raw_close(r);

    /* The library reports the refusal as UNAUTHORIZED. */
    struct fidbus_client_opts opts = {.key = (const uint8_t *)"0123456789abcdefXX",
                                      .key_len = 18};
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, t->tcp_addr, &opts);
    ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED));
    stop_expect_count(t, "auth.bad", -1);
    fb_e2e_free(t);
}
END_TEST

/* A PUBLISH before AUTH: refused with its seq, never dispatched. */
START_TEST(test_e2e_auth_missing)
{
    struct fb_e2e *t = auth_up();
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    uint8_t nonce[32];
    hello_nonce(r, nonce);
    fb_e2e_raw_publish(r, 7, true, "auth.none");
    expect_refused(r, 7, "first frame must be AUTH");
    fb_e2e_raw_close(r);

    /* A PING first is no better. */
    r = fb_e2e_raw_tcp(t);
    hello_nonce(r, nonce);
    fb_e2e_raw_ping(r, 8);
    expect_refused(r, 8, "first frame must be AUTH");
    fb_e2e_raw_close(r);
    stop_expect_count(t, "auth.none", -1);
    fb_e2e_free(t);
}
END_TEST

/* A second AUTH on an authenticated connection: UNAUTHORIZED and close
 * (documented in proto/README.md), even with the right mac. */
START_TEST(test_e2e_auth_twice)
{
    struct fb_e2e *t = auth_up();
    uint8_t mac[32];
    struct fb_e2e_raw *r = raw_authed(t, mac);
    send_auth(r, mac, sizeof mac);
    fb_e2e_raw_publish(r, 9, true, "auth.twice");
    expect_refused(r, -2, "AUTH again");
    fb_e2e_raw_close(r);
    stop_expect_count(t, "auth.twice", -1);
    fb_e2e_free(t);
}
END_TEST

/* A mac that worked on one connection is worthless on the next: the
 * nonce differs. */
START_TEST(test_e2e_auth_replay)
{
    struct fb_e2e *t = auth_up();
    uint8_t mac[32], nonce1[32], nonce2[32];
    struct fb_e2e_raw *r1 = fb_e2e_raw_tcp(t);
    hello_nonce(r1, nonce1);
    mac_of(KEY, nonce1, mac);
    send_auth(r1, mac, sizeof mac);
    fb_e2e_raw_ping(r1, 1);
    fb_e2e_raw_expect_ack(r1, 1, 0);

    struct fb_e2e_raw *r2 = fb_e2e_raw_tcp(t);
    hello_nonce(r2, nonce2);
    ck_assert_msg(memcmp(nonce1, nonce2, 32) != 0, "two connections got the same nonce");
    send_auth(r2, mac, sizeof mac);
    expect_refused(r2, -2, "wrong key");
    fb_e2e_raw_close(r2);

    /* The first connection is not disturbed. */
    fb_e2e_raw_publish(r1, 2, true, "auth.replay");
    fb_e2e_raw_expect_ack(r1, 2, 1);
    fb_e2e_raw_close(r1);
    stop_expect_count(t, "auth.replay", 1);
    fb_e2e_free(t);
}
END_TEST

/* The right HMAC with a byte appended, or cut short: the length is part
 * of the check. */
START_TEST(test_e2e_auth_mac_length)
{
    struct fb_e2e *t = auth_up();
    for (int k = 0; k < 2; k++) {
        struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
        uint8_t nonce[32], mac[33];
        hello_nonce(r, nonce);
        mac_of(KEY, nonce, mac);
        mac[32] = 0;
        send_auth(r, mac, k == 0 ? 33 : 31);
        expect_refused(r, -2, "wrong key");
        fb_e2e_raw_close(r);
    }
    /* A mac of 64 KiB: over the limit for frames before AUTH. */
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    uint8_t nonce[32];
    hello_nonce(r, nonce);
    static uint8_t big[65536];
    mac_of(KEY, nonce, big);
    send_auth(r, big, sizeof big);
    expect_refused(r, -2, "frame before AUTH is empty or over 4096 bytes");
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A client that says nothing is refused once the deadline passes: the
 * configured one. FIDBUS_AUTH_DEADLINE_MS, once an undocumented override,
 * no longer changes it. */
START_TEST(test_e2e_auth_deadline)
{
    setenv("FIDBUS_AUTH_DEADLINE_MS", "60000", 1);
    struct fb_e2e *t = auth_up();
    unsetenv("FIDBUS_AUTH_DEADLINE_MS");
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    uint64_t t0 = fb_e2e_now_ms();
    uint8_t nonce[32];
    hello_nonce(r, nonce);
    const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, -2);
    char msg[256];
    snprintf(msg, sizeof msg, "%.*s", (int)m->message.len, (const char *)m->message.ptr);
    ck_assert_msg(strstr(msg, "no AUTH within 1000 ms"), "message: %s", msg);
    uint64_t took = fb_e2e_now_ms() - t0;
    ck_assert_msg(took >= DEADLINE_MS - 50, "refused after %" PRIu64 " ms", took);
    fb_e2e_raw_expect_eof(r);
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A key file that group or others may read: the daemon refuses to start. */
START_TEST(test_e2e_auth_key_file_mode)
{
    static const mode_t modes[] = {0644, 0640, 0604, 0660};
    struct fb_e2e *t = auth_config(modes[_i]);
    double secs = 0;
    int st = fb_e2e_start_fail(t, &secs);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(EXIT_IS(st, 1), "mode %o: exit status 0x%x; stderr: %s",
                  (unsigned)modes[_i], st, err);
    const char *const needles[] = {"tcp_key_file", "mode 0600 or 0400", NULL};
    ck_assert_msg(fb_e2e_has_line(err, needles), "stderr: %s", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_auth_fidbusctl)
{
    struct fb_e2e *t = auth_up();
    const char *ctl = fb_e2e_built("daemon/fidbusctl");
    char key[256];
    snprintf(key, sizeof key, "%s", fb_e2e_file(t, "tcp.key"));
    const char *const ok[] = {ctl,       "--bus",    t->tcp_addr, "--key-file", key,
                              "publish", "auth.ctl", "--ack",     NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, ok, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "status 0x%x; stdout %s; stderr %s", st, out, err);
    ck_assert_msg(strstr(out, "ok: 1 handler"), "stdout: %s", out);
    free(out);
    free(err);

    /* $FIDBUS_KEY_FILE, and the option after the command. */
    setenv("FIDBUS_KEY_FILE", key, 1);
    const char *const env[] = {ctl, "publish", "auth.ctl", "--bus", t->tcp_addr, NULL};
    st = fb_e2e_run(t, env, &out, &err);
    unsetenv("FIDBUS_KEY_FILE");
    ck_assert_msg(EXIT_IS(st, 0), "status 0x%x; stdout %s; stderr %s", st, out, err);
    free(out);
    free(err);
    const char *const after[] = {ctl,         "publish",    "auth.ctl", "--bus",
                                 t->tcp_addr, "--key-file", key,        NULL};
    st = fb_e2e_run(t, after, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "status 0x%x; stdout %s; stderr %s", st, out, err);
    free(out);
    free(err);

    /* Control commands take every global option after the command as
     * well, --key-file included (their socket needs no key). */
    const char *const ctl_after[] = {ctl, "status", "--socket",  t->control, "--key-file",
                                     key, "--bus",  t->tcp_addr, NULL};
    st = fb_e2e_run(t, ctl_after, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "status --key-file: 0x%x; stdout %s; stderr %s", st,
                  out, err);
    free(out);
    free(err);

    /* No key: the daemon's refusal, exit 1. */
    const char *const nokey[] = {ctl, "--bus", t->tcp_addr, "publish", "auth.ctl", NULL};
    st = fb_e2e_run(t, nokey, &out, &err);
    ck_assert_msg(EXIT_IS(st, 1), "status 0x%x; stdout %s; stderr %s", st, out, err);
    ck_assert_msg(strstr(err, "UNAUTHORIZED"), "stderr: %s", err);
    free(out);
    free(err);

    /* A key file others may read: refused before connecting, exit 2. */
    const char *open_key = fb_e2e_write(t, "open.key", KEY "\n");
    ck_assert_int_eq(chmod(open_key, 0644), 0);
    const char *const bad[] = {ctl,      "--bus",   t->tcp_addr, "--key-file",
                               open_key, "publish", "auth.ctl",  NULL};
    st = fb_e2e_run(t, bad, &out, &err);
    ck_assert_msg(EXIT_IS(st, 2), "status 0x%x; stdout %s; stderr %s", st, out, err);
    ck_assert_msg(strstr(err, "0600"), "stderr: %s", err);
    free(out);
    free(err);
    stop_expect_count(t, "auth.ctl", 3);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_auth_suite(void)
{
    Suite *s = suite_create("e2e_auth");
    TCase *tc = tcase_create("auth");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_auth_right_key);
    tcase_add_test(tc, test_e2e_auth_wrong_key);
    tcase_add_test(tc, test_e2e_auth_missing);
    tcase_add_test(tc, test_e2e_auth_twice);
    tcase_add_test(tc, test_e2e_auth_replay);
    tcase_add_test(tc, test_e2e_auth_mac_length);
    tcase_add_test(tc, test_e2e_auth_deadline);
    tcase_add_loop_test(tc, test_e2e_auth_key_file_mode, 0, 4);
    tcase_add_test(tc, test_e2e_auth_fidbusctl);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_auth_suite());
}
