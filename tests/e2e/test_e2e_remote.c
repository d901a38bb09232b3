/*
 * End-to-end tests of remote functions (proto/README.md "Remote
 * functions"; ctest: e2e.remote). A member here is a raw
 * connection that sends REGISTER and answers CALLs with RESULT frames;
 * publishers are raw connections too, so every answer (and its absence)
 * is seen frame by frame.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fidbus/funcid.h>

#include "harness.h"

#define FN "acme.audit@1.0.0"
#define SIG "event:any"

/* clang-format off */
static const char conf[] =
    "[remote acme]\ncredit = 8\ntimeout_ms = 30000\nattempts = 3\n"
    "[route audit]\nevent = a.x\nto = " FN "\n";
/* clang-format on */

static uint64_t fn_id(void)
{
    return fidbus_funcid(FN);
}

static struct fb_e2e_raw *conn(struct fb_e2e *t)
{
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    return r;
}

static void send_register(struct fb_e2e_raw *r, uint64_t seq, const char *fn,
                          const char *sig, uint64_t credit, uint64_t timeout_ms,
                          bool idempotent)
{
    uint8_t frame[8192];
    size_t n = fidbus_enc_register(frame, sizeof frame, seq, fn, sig, credit, timeout_ms,
                                   idempotent ? FIDBUS_FLAG_IDEMPOTENT : 0);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
}

/* A member of FN: REGISTER, then its ACK with the funcID. */
static struct fb_e2e_raw *member(struct fb_e2e *t, uint64_t credit, uint64_t timeout_ms,
                                 bool idempotent)
{
    struct fb_e2e_raw *r = conn(t);
    send_register(r, 1, FN, SIG, credit, timeout_ms, idempotent);
    fb_e2e_raw_expect_ack(r, 1, fn_id());
    return r;
}

static void send_result(struct fb_e2e_raw *r, bool upto, uint64_t id, uint64_t code)
{
    uint8_t frame[256];
    size_t n = fidbus_enc_result(frame, sizeof frame, upto, id, code, NULL);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
}

/* A PUBLISH of event a.x with tag user=USER (NULL: no tags) and the
 * payload 42. */
static void publish(struct fb_e2e_raw *r, uint64_t seq, bool ack, const char *user)
{
    struct fidbus_tag tag = {"user", user};
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS) |
                   FIDBUS_BIT(FIDBUS_K_PAYLOAD) | (user ? FIDBUS_BIT(FIDBUS_K_TAGS) : 0),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = seq,
        .event = "a.x",
        .tags = user ? &tag : NULL,
        .ntags = user ? 1 : 0,
        .payload = {(const uint8_t *)"\x18\x2a", 2},
        .flags = ack ? FIDBUS_FLAG_ACK : 0,
    };
    fb_e2e_raw_msg(r, &o);
}

struct call {
    uint64_t id, attempt, seqtag;
    char user[32];
};

/* The next frame on r must be a CALL of FN; returns its id and attempt. */
static struct call expect_call(struct fb_e2e_raw *r)
{
    int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rc == 1, "waiting for a CALL: %d", rc);
    const struct fidbus_msg *m = &r->msg;
    ck_assert_msg(m->type == FIDBUS_MSG_CALL,
                  "expected CALL, got type %" PRIu64 " code %" PRIu64 " '%s'", m->type,
                  m->code, fb_e2e_msg_text(m));
    ck_assert(fidbus_msg_has(m, FIDBUS_K_ID) && m->id == fn_id());
    ck_assert(fidbus_msg_has(m, FIDBUS_K_EVENT) && strcmp(m->event, "a.x") == 0);
    ck_assert(fidbus_msg_has(m, FIDBUS_K_GENERATION) && m->generation >= 1);
    ck_assert(fidbus_msg_has(m, FIDBUS_K_ATTEMPT) && m->attempt >= 1);
    ck_assert(fidbus_msg_has(m, FIDBUS_K_PAYLOAD) && m->payload.len == 2 &&
              memcmp(m->payload.ptr, "\x18\x2a", 2) == 0);
    struct call c = {.id = m->seq, .attempt = m->attempt};
    for (size_t i = 0; i < m->ntags; i++)
        if (strcmp(m->tags[i].key, "user") == 0)
            snprintf(c.user, sizeof c.user, "%s", m->tags[i].value);
    return c;
}

/* Nothing arrives on r within ms (a negative check: generous bound). */
static void expect_quiet(struct fb_e2e_raw *r, int ms)
{
    int rc = fb_e2e_raw_recv(r, ms);
    ck_assert_msg(rc == -ETIMEDOUT,
                  "expected nothing, got type %" PRIu64 " seq %" PRIu64 " code %" PRIu64,
                  r->msg.type, r->msg.seq, r->msg.code);
}

/* ---------------------------------------------------------------- tests */

/* The route is valid before any member; no member = UNAVAILABLE at once,
 * acked or not; with a member the CALL carries the event byte-exact and
 * the ACK counts the member's ok. */
START_TEST(test_remote_basic)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 10, true, "u1");
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 10);
    publish(p, 11, false, "u1");
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 11);

    struct fb_e2e_raw *m = member(t, 0, 0, false);
    publish(p, 12, true, "u1");
    struct call c = expect_call(m);
    ck_assert_uint_eq(c.attempt, 1);
    ck_assert_str_eq(c.user, "u1");
    expect_quiet(p, 200); /* the ACK waits for the RESULT */
    send_result(m, false, c.id, FIDBUS_OK);
    fb_e2e_raw_expect_ack(p, 12, 1);

    /* HANDLER_FAILED, and a code outside 0/6/14 counts as 6 */
    publish(p, 13, true, "u1");
    c = expect_call(m);
    send_result(m, false, c.id, FIDBUS_HANDLER_FAILED);
    fb_e2e_raw_expect_error(p, FIDBUS_HANDLER_FAILED, 13);
    publish(p, 14, true, "u1");
    c = expect_call(m);
    send_result(m, false, c.id, 99);
    fb_e2e_raw_expect_error(p, FIDBUS_HANDLER_FAILED, 14);

    /* the member leaves: the route stays, the call is UNAVAILABLE again */
    fb_e2e_raw_close(m);
    fb_e2e_raw_ping(p, 15); /* any order with the close: retry until gone */
    fb_e2e_raw_expect_ack(p, 15, 0);
    for (int i = 0;; i++) {
        publish(p, 100 + (uint64_t)i, true, NULL);
        int rc = fb_e2e_raw_recv(p, FB_E2E_TIMEOUT_MS);
        ck_assert_int_eq(rc, 1);
        ck_assert_uint_eq(p->msg.type, FIDBUS_MSG_ERROR);
        if (p->msg.code == FIDBUS_UNAVAILABLE)
            break;
        ck_assert_int_lt(i, 1000);
    }
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* REGISTER's rules: CONFLICT (this connection again, another signature,
 * a plugin's function), SIGNATURE_MISMATCH against a route, UNAUTHORIZED
 * outside every section, NOT_FOUND for UNREGISTER, INVALID credit 0. */
START_TEST(test_remote_register_rules)
{
    char sighex[FIDBUS_SIGHASH_HEX];
    uint8_t sh[FIDBUS_SIGHASH_LEN];
    fidbus_sighash("other", sh);
    fidbus_sighash_hex(sh, sighex);
    char sections[1024];
    snprintf(sections, sizeof sections,
             "%s[remote acme]\n[remote fidbus]\n"
             "[route audit]\nevent = a.x\nto = " FN "\n"
             "[route signed]\nevent = a.y\nto = acme.signed@1.0.0\nsignature = %s\n",
             FB_E2E_COUNT, sighex);
    struct fb_e2e *t = fb_e2e_up(NULL, sections);
    struct fb_e2e_raw *a = conn(t);
    send_register(a, 1, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_ack(a, 1, fn_id());
    send_register(a, 2, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_error(a, FIDBUS_CONFLICT, 2);
    send_register(a, 3, "fidbus.count@1.0.0", "event:any", 0, 0, false);
    fb_e2e_raw_expect_error(a, FIDBUS_CONFLICT, 3);
    send_register(a, 4, "acme.signed@1.0.0", "event:any", 0, 0, false);
    fb_e2e_raw_expect_error(a, FIDBUS_SIGNATURE_MISMATCH, 4);
    send_register(a, 5, "acme.signed@1.0.0", "other", 0, 0, false);
    fb_e2e_raw_expect_ack(a, 5, fidbus_funcid("acme.signed@1.0.0"));
    send_register(a, 6, "zork.x@1.0.0", "s", 0, 0, false);
    fb_e2e_raw_expect_error(a, FIDBUS_UNAUTHORIZED, 6);
    uint8_t frame[256];
    size_t n = fidbus_enc_unregister(frame, sizeof frame, 7, "acme.none@1.0.0");
    fb_e2e_raw_send(a, frame, n);
    fb_e2e_raw_expect_error(a, FIDBUS_NOT_FOUND, 7);
    /* credit 0 on the wire is INVALID (the encoder leaves 0 out) */
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_FUNCTION) | FIDBUS_BIT(FIDBUS_K_SIGNATURE) |
                   FIDBUS_BIT(FIDBUS_K_CREDIT),
        .type = FIDBUS_MSG_REGISTER,
        .seq = 8,
        .function = "acme.c@1.0.0",
        .signature = "s",
        .credit = 0};
    fb_e2e_raw_msg(a, &o);
    fb_e2e_raw_expect_error(a, FIDBUS_INVALID, 8);

    /* another connection: another signature is CONFLICT, the same joins */
    struct fb_e2e_raw *b = conn(t);
    send_register(b, 1, FN, "different", 0, 0, false);
    fb_e2e_raw_expect_error(b, FIDBUS_CONFLICT, 1);
    send_register(b, 2, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_ack(b, 2, fn_id());

    /* UNREGISTER, then again: NOT_FOUND */
    n = fidbus_enc_unregister(frame, sizeof frame, 9, FN);
    fb_e2e_raw_send(a, frame, n);
    fb_e2e_raw_expect_ack(a, 9, 0);
    fb_e2e_raw_send(a, frame, n);
    fb_e2e_raw_expect_error(a, FIDBUS_NOT_FOUND, 9);
    fb_e2e_raw_close(a);
    fb_e2e_raw_close(b);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* plugin.load of a function a member serves is CONFLICT. */
START_TEST(test_remote_plugin_conflict)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[remote fidbus]\n");
    struct fb_e2e_raw *a = conn(t);
    send_register(a, 1, "fidbus.count@1.0.0", "event:any", 0, 0, false);
    fb_e2e_raw_expect_ack(a, 1, fidbus_funcid("fidbus.count@1.0.0"));
    const char *argv[] = {
        fb_e2e_built("daemon/fidbusctl"), "--socket", t->control, "plugin", "load",
        fb_e2e_built("plugins/count.so"), NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "plugin load succeeded: %s",
                  out);
    ck_assert_msg(strstr(err, "CONFLICT") || strstr(err, "served by remote"),
                  "stderr: %s", err);
    free(out);
    free(err);
    fb_e2e_raw_close(a);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Targets: unversioned in a remote namespace is INVALID, outside every
 * [remote] NOT_FOUND. */
START_TEST(test_remote_route_rules)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, "[remote acme]\n[route r]\nevent = a.x\nto = acme.audit\n");
    fb_e2e_start_fail_says(t, "needs its version");
    fb_e2e_config(t, NULL, "[remote acme]\n[route r]\nevent = a.x\nto = zork.x@1.0.0\n");
    fb_e2e_start_fail_says(t, "no such function");
    fb_e2e_free(t);
}
END_TEST

/* A member never holds more than its credit; calls wait (not lost) and
 * go out as credit comes back, in order; RESULT upto answers a run. */
START_TEST(test_remote_credit_upto)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *m = member(t, 2, 0, false);
    struct fb_e2e_raw *p = conn(t);
    for (uint64_t i = 0; i < 6; i++)
        publish(p, 20 + i, true, NULL);
    struct call c1 = expect_call(m), c2 = expect_call(m);
    expect_quiet(m, 300);
    send_result(m, false, c1.id, FIDBUS_OK);
    struct call c3 = expect_call(m);
    expect_quiet(m, 200);
    ck_assert_uint_gt(c3.id, c2.id);
    send_result(m, true, c3.id, FIDBUS_OK); /* c2 and c3 */
    struct call c4 = expect_call(m), c5 = expect_call(m);
    expect_quiet(m, 200);
    send_result(m, true, c5.id, FIDBUS_OK);
    struct call c6 = expect_call(m);
    send_result(m, false, c6.id, FIDBUS_OK);
    (void)c4;
    for (uint64_t i = 0; i < 6; i++)
        fb_e2e_raw_expect_ack(p, 20 + i, 1);
    /* a RESULT for a call it does not hold is ignored: nothing comes */
    send_result(m, false, c6.id, FIDBUS_OK);
    send_result(m, false, 9999, FIDBUS_OK);
    fb_e2e_raw_ping(p, 30);
    fb_e2e_raw_expect_ack(p, 30, 0);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Member lost mid-call: idempotent calls go to another member with
 * attempt 2; a non-idempotent one is UNAVAILABLE. */
START_TEST(test_remote_member_lost)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *a = member(t, 1, 0, true);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 40, true, NULL);
    struct call c = expect_call(a);
    ck_assert_uint_eq(c.attempt, 1);
    struct fb_e2e_raw *b = member(t, 1, 0, true);
    fb_e2e_raw_close(a);
    c = expect_call(b);
    ck_assert_uint_eq(c.attempt, 2);
    send_result(b, false, c.id, FIDBUS_OK);
    fb_e2e_raw_expect_ack(p, 40, 1);
    fb_e2e_raw_close(b);

    /* not idempotent */
    struct fb_e2e_raw *n1 = conn(t);
    send_register(n1, 1, FN, SIG, 1, 0, false);
    fb_e2e_raw_expect_ack(n1, 1, fn_id());
    /* wait until the idempotent pair has left: the new member gets it */
    publish(p, 41, true, NULL);
    c = expect_call(n1);
    struct fb_e2e_raw *n2 = member(t, 1, 0, false);
    fb_e2e_raw_close(n1);
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 41);
    expect_quiet(n2, 200);
    fb_e2e_raw_close(n2);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A member that never reads its CALLs: credit lets 1024 in, but the CALLs
 * it leaves unread in its connection's output are bounded like any
 * client's answers, by [limits] output_hard: past it the daemon closes the
 * member (limit output_hard) and its calls end as lost. Every acked
 * publish is answered exactly once (UNAVAILABLE: the only member never
 * answered), and the daemon holds no more than about output_hard for it. */
START_TEST(test_remote_member_never_reads)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL,
        "[limits]\noutput_soft = 65536\noutput_hard = 262144\n"
        "[remote acme]\ncredit = 1024\ntimeout_ms = 30000\nattempts = 3\n"
        "[route audit]\nevent = a.x\nto = " FN "\n");
    /* clang-format on */
    struct fb_e2e_raw *m = member(t, 1024, 0, false);
    struct fb_e2e_raw *p = conn(t);
    enum { N = 64, PAYLOAD = 16384 };
    static uint8_t payload[3 + PAYLOAD]; /* a byte string of PAYLOAD bytes */
    payload[0] = 0x59;
    payload[1] = PAYLOAD >> 8;
    payload[2] = PAYLOAD & 0xff;
    memset(payload + 3, 'x', PAYLOAD);
    for (uint64_t seq = 1; seq <= N; seq++) {
        struct fidbus_msg_out o = {
            .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                       FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS) |
                       FIDBUS_BIT(FIDBUS_K_PAYLOAD),
            .type = FIDBUS_MSG_PUBLISH,
            .seq = seq,
            .event = "a.x",
            .payload = {payload, sizeof payload},
            .flags = FIDBUS_FLAG_ACK,
        };
        fb_e2e_raw_msg(p, &o);
    }
    bool seen[N + 1] = {false};
    for (int i = 0; i < N; i++) {
        int rc = fb_e2e_raw_recv(p, FB_E2E_TIMEOUT_MS);
        ck_assert_msg(rc == 1, "answer %d of %d: %d", i + 1, N, rc);
        const struct fidbus_msg *a = &p->msg;
        ck_assert_msg(a->type == FIDBUS_MSG_ERROR && a->code == FIDBUS_UNAVAILABLE,
                      "type %" PRIu64 " code %" PRIu64 " '%s'", a->type, a->code,
                      fb_e2e_msg_text(a));
        ck_assert(fidbus_msg_has(a, FIDBUS_K_SEQ) && a->seq >= 1 && a->seq <= N);
        ck_assert_msg(!seen[a->seq], "seq %" PRIu64 " answered twice", a->seq);
        seen[a->seq] = true;
    }
    ck_assert_int_ge(fb_e2e_limit_hits(t, "output_hard"), 1);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* RETRY goes to another member (attempt 2); with no other member left it
 * is UNAVAILABLE. Deadline: a call not answered within timeout_ms is
 * UNAVAILABLE; the late RESULT is ignored. */
START_TEST(test_remote_retry_deadline)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *a = member(t, 1, 0, false);
    struct fb_e2e_raw *b = member(t, 1, 0, false);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 50, true, NULL);
    /* whichever gets it answers RETRY; the other gets attempt 2 */
    struct pollfd pf[2] = {{a->fd, POLLIN, 0}, {b->fd, POLLIN, 0}};
    ck_assert_int_eq(poll(pf, 2, FB_E2E_TIMEOUT_MS), 1);
    struct fb_e2e_raw *first = (pf[0].revents & POLLIN) ? a : b;
    struct fb_e2e_raw *second = first == a ? b : a;
    struct call c = expect_call(first);
    send_result(first, false, c.id, FIDBUS_RETRY);
    c = expect_call(second);
    ck_assert_uint_eq(c.attempt, 2);
    send_result(second, false, c.id, FIDBUS_RETRY);
    /* attempt 3 may only go to another member than second: first */
    c = expect_call(first);
    ck_assert_uint_eq(c.attempt, 3);
    send_result(first, false, c.id, FIDBUS_RETRY); /* attempts (3) used up */
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 50);
    fb_e2e_raw_close(a);
    fb_e2e_raw_close(b);

    struct fb_e2e_raw *d = conn(t);
    send_register(d, 1, FN, SIG, 1, 300, false);
    fb_e2e_raw_expect_ack(d, 1, fn_id());
    for (int i = 0;; i++) { /* until a and b have left */
        uint64_t t0 = fb_e2e_now_ms();
        publish(p, 60 + (uint64_t)i, true, NULL);
        int rc = fb_e2e_raw_recv(d, 500);
        if (rc == 1) {
            ck_assert_uint_eq(d->msg.type, FIDBUS_MSG_CALL);
            c.id = d->msg.seq;
            fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 60 + i);
            /* not before the deadline (300 ms after the CALL was written) */
            ck_assert_uint_ge(fb_e2e_now_ms() - t0, 290);
            break;
        }
        fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 60 + i);
        ck_assert_int_lt(i, 20);
    }
    send_result(d, false, c.id, FIDBUS_OK); /* late */
    fb_e2e_raw_ping(p, 90);
    fb_e2e_raw_expect_ack(p, 90, 0);
    fb_e2e_raw_close(d);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* split_by: every event of one user goes to one member. */
START_TEST(test_remote_split_by)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[remote acme]\n[route audit]\nevent = a.x\n"
                                       "to = " FN "\nmode = split\nsplit_by = user\n");
    struct fb_e2e_raw *ms[3] = {member(t, 64, 0, false), member(t, 64, 0, false),
                                member(t, 64, 0, false)};
    struct fb_e2e_raw *p = conn(t);
    int owner[16];
    int per[3] = {0, 0, 0};
    for (int i = 0; i < 16; i++)
        owner[i] = -1;
    for (int round = 0; round < 3; round++) {
        for (int u = 0; u < 16; u++) {
            char user[16];
            snprintf(user, sizeof user, "user%d", u);
            publish(p, (uint64_t)(1000 + round * 16 + u), true, user);
            struct pollfd pf[3];
            for (int k = 0; k < 3; k++)
                pf[k] = (struct pollfd){ms[k]->fd, POLLIN, 0};
            ck_assert_int_eq(poll(pf, 3, FB_E2E_TIMEOUT_MS), 1);
            int k = (pf[0].revents & POLLIN) ? 0 : (pf[1].revents & POLLIN) ? 1 : 2;
            struct call c = expect_call(ms[k]);
            ck_assert_str_eq(c.user, user);
            if (owner[u] < 0)
                owner[u] = k, per[k]++;
            ck_assert_int_eq(owner[u], k);
            send_result(ms[k], false, c.id, FIDBUS_OK);
            fb_e2e_raw_expect_ack(p, (uint64_t)(1000 + round * 16 + u), 1);
        }
    }
    ck_assert(per[0] + per[1] + per[2] == 16);
    for (int k = 0; k < 3; k++)
        fb_e2e_raw_close(ms[k]);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* PING waits for remote calls of un-acked publishes; UNREGISTER drains:
 * its ACK comes after the calls it held are answered. */
START_TEST(test_remote_barrier_drain)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *m = member(t, 4, 0, false);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 70, false, NULL);
    fb_e2e_raw_ping(p, 71);
    struct call c = expect_call(m);
    expect_quiet(p, 300);
    uint8_t frame[256];
    size_t n = fidbus_enc_unregister(frame, sizeof frame, 2, FN);
    fb_e2e_raw_send(m, frame, n);
    /* a PING on m: UNREGISTER is handled, and its ACK has not come (the
     * PING's is the next frame) while m holds the call */
    fb_e2e_raw_ping(m, 3);
    fb_e2e_raw_expect_ack(m, 3, 0);
    publish(p, 72, true, NULL); /* no new call for a leaving member */
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 72);
    send_result(m, false, c.id, FIDBUS_OK);
    fb_e2e_raw_expect_ack(m, 2, 0);
    fb_e2e_raw_expect_ack(p, 71, 0);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* func.list kind/members, func.members, stats per function. */
START_TEST(test_remote_control)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    char *out = fb_e2e_ctl(t, 0, NULL, "--json", "func", "list", NULL);
    ck_assert_msg(strstr(out, "\"remote\"") && strstr(out, "\"members\":0"), "%s", out);
    free(out);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 1, true, NULL);
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 1);
    struct fb_e2e_raw *m = member(t, 3, 0, true);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "func", "list", NULL);
    ck_assert_msg(strstr(out, "\"members\":1"), "%s", out);
    free(out);
    char hex[FIDBUS_FUNCID_HEX];
    fidbus_funcid_hex(fn_id(), hex);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "func", "members", hex, NULL);
    ck_assert_msg(strstr(out, "\"credit\":3") && strstr(out, hex) &&
                      strstr(out, "\"uid\":") && strstr(out, "\"pid\":"),
                  "%s", out);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "func", "members", NULL);
    ck_assert_msg(strstr(out, "INFLIGHT") && strstr(out, hex), "%s", out);
    free(out);
    free(fb_e2e_ctl(t, 1, NULL, "func", "members", "0123456789abcdef", NULL));
    out = fb_e2e_ctl(t, 0, NULL, "--json", "stats", NULL);
    ck_assert_msg(strstr(out, "\"unavailable\":1") && strstr(out, "\"waiting\":0") &&
                      strstr(out, "\"timeouts\":0") && strstr(out, "\"redelivered\":0"),
                  "%s", out);
    free(out);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* config.reload that takes a namespace's [remote] section away drops its
 * members (their connection closes with UNAUTHORIZED) and their calls are
 * lost; members of a namespace still allowed stay. */
START_TEST(test_remote_reload_revokes)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[remote acme]\n[remote keep]\n"
                                       "[route audit]\nevent = a.x\nto = " FN "\n");
    struct fb_e2e_raw *m = member(t, 4, 0, false);
    struct fb_e2e_raw *k = conn(t);
    send_register(k, 1, "keep.x@1.0.0", "s", 0, 0, false);
    fb_e2e_raw_expect_ack(k, 1, fidbus_funcid("keep.x@1.0.0"));
    struct fb_e2e_raw *p = conn(t);
    publish(p, 5, true, NULL);
    (void)expect_call(m);

    fb_e2e_config(t, NULL, "[remote keep]\n");
    free(fb_e2e_ctl(t, 0, NULL, "config", "reload", NULL));
    fb_e2e_raw_expect_error(m, FIDBUS_UNAUTHORIZED, -2);
    fb_e2e_raw_expect_eof(m);
    fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 5);
    /* keep.x is still served by k */
    uint8_t frame[256];
    size_t n = fidbus_enc_unregister(frame, sizeof frame, 2, "keep.x@1.0.0");
    fb_e2e_raw_send(k, frame, n);
    fb_e2e_raw_expect_ack(k, 2, 0);
    /* and acme may not be served any more */
    send_register(k, 3, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_error(k, FIDBUS_UNAUTHORIZED, 3);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(k);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A member waiting for calls is not idle: idle_timeout closes a silent
 * plain connection, not a silent member. */
START_TEST(test_remote_member_not_idle)
{
    struct fb_e2e_opts o = {.workers = 1};
    char sections[256];
    snprintf(sections, sizeof sections, "[limits]\nidle_timeout_unix_ms = 200\n%s", conf);
    struct fb_e2e *t = fb_e2e_up(&o, sections);
    struct fb_e2e_raw *m = member(t, 4, 0, false);
    struct fb_e2e_raw *plain = conn(t); /* connected after m, silent too */
    fb_e2e_raw_expect_error(plain, FIDBUS_BUSY, -2);
    fb_e2e_raw_expect_eof(plain);
    struct fb_e2e_raw *p = conn(t);
    publish(p, 1, true, NULL);
    struct call c = expect_call(m);
    send_result(m, false, c.id, FIDBUS_OK);
    fb_e2e_raw_expect_ack(p, 1, 1);
    fb_e2e_raw_close(plain);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A canary split across two remote versions, 95/5 by user: each user
 * stays on one version, and the shares are close to the weights. */
START_TEST(test_remote_canary)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[remote acme]\n[route canary]\nevent = a.x\n"
                                       "to = acme.audit@1.0.0:95, acme.audit@2.0.0:5\n"
                                       "mode = split\nsplit_by = user\n");
    struct fb_e2e_raw *v1 = member(t, 16, 0, false);
    struct fb_e2e_raw *v2 = conn(t);
    send_register(v2, 1, "acme.audit@2.0.0", SIG, 16, 0, false);
    fb_e2e_raw_expect_ack(v2, 1, fidbus_funcid("acme.audit@2.0.0"));
    struct fb_e2e_raw *p = conn(t);
    enum { USERS = 1000 };
    static signed char ver[USERS];
    memset(ver, 0, sizeof ver);
    int n2 = 0;
    for (int round = 0; round < 2; round++)
        for (int u = 0; u < USERS; u++) {
            char user[16];
            snprintf(user, sizeof user, "user%d", u);
            uint64_t seq = (uint64_t)(round * USERS + u);
            publish(p, seq, true, user);
            struct pollfd pf[2] = {{v1->fd, POLLIN, 0}, {v2->fd, POLLIN, 0}};
            ck_assert_int_eq(poll(pf, 2, FB_E2E_TIMEOUT_MS), 1);
            int v = (pf[0].revents & POLLIN) ? 1 : 2;
            struct fb_e2e_raw *m = v == 1 ? v1 : v2;
            ck_assert_int_eq(fb_e2e_raw_recv(m, FB_E2E_TIMEOUT_MS), 1);
            ck_assert_uint_eq(m->msg.type, FIDBUS_MSG_CALL);
            ck_assert_uint_eq(m->msg.id, fidbus_funcid(v == 1 ? "acme.audit@1.0.0"
                                                              : "acme.audit@2.0.0"));
            if (round == 0) {
                ver[u] = (signed char)v;
                n2 += v == 2;
            }
            ck_assert_int_eq(ver[u], v);
            send_result(m, false, m->msg.seq, FIDBUS_OK);
            fb_e2e_raw_expect_ack(p, seq, 1);
        }
    /* 5% of 1000 is 50; a stable hash of the user lands within 20-90 */
    ck_assert_msg(n2 >= 20 && n2 <= 90, "%d of %d users on the canary", n2, USERS);
    fb_e2e_raw_close(v1);
    fb_e2e_raw_close(v2);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Stopping with a call in flight and calls waiting for credit: the
 * daemon exits cleanly, and the publisher gets an answer for each. */
START_TEST(test_remote_stop_in_flight)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *m = member(t, 1, 0, true);
    struct fb_e2e_raw *p = conn(t);
    for (uint64_t i = 0; i < 3; i++)
        publish(p, 80 + i, true, NULL);
    (void)expect_call(m); /* held, never answered; two wait for credit */
    fb_e2e_stop_ok(t);
    for (uint64_t i = 0; i < 3; i++) {
        ck_assert_int_eq(fb_e2e_raw_recv(p, FB_E2E_TIMEOUT_MS), 1);
        ck_assert_uint_eq(p->msg.type, FIDBUS_MSG_ERROR);
        ck_assert_uint_eq(p->msg.code, FIDBUS_UNAVAILABLE);
    }
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_free(t);
}
END_TEST

/* TCP: only where the section says tcp = yes, and only after AUTH on a
 * key listener; a TCP member serves like any other. */
START_TEST(test_remote_tcp)
{
    /* a loopback listener without auth: TCP clients never serve */
    struct fb_e2e_opts o = {.tcp = true};
    struct fb_e2e *t = fb_e2e_up(&o, conf);
    struct fb_e2e_raw *r = fb_e2e_raw_tcp(t);
    fb_e2e_raw_hello(r);
    send_register(r, 1, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, 1);
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);

    static const char key[] = "0123456789abcdef0123456789abcdef";
    t = fb_e2e_new();
    fb_e2e_config_tcp_key(t, NULL, key, 0600,
                          "[remote acme]\n[remote keyed]\ntcp = yes\n"
                          "[route k]\nevent = a.x\nto = keyed.x@1.0.0\n");
    fb_e2e_start(t);
    r = fb_e2e_raw_tcp(t);
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert(fidbus_msg_has(&r->msg, FIDBUS_K_NONCE) && r->msg.nonce.len == 32);
    uint8_t mac[32];
    unsigned len = 0;
    ck_assert(HMAC(EVP_sha256(), key, (int)strlen(key), r->msg.nonce.ptr, 32, mac, &len));
    struct fidbus_msg_out a = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_MAC),
        .type = FIDBUS_MSG_AUTH,
        .mac = {mac, sizeof mac},
    };
    fb_e2e_raw_msg(r, &a);
    send_register(r, 1, FN, SIG, 0, 0, false);
    fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, 1);
    send_register(r, 2, "keyed.x@1.0.0", SIG, 0, 0, false);
    fb_e2e_raw_expect_ack(r, 2, fidbus_funcid("keyed.x@1.0.0"));
    struct fb_e2e_raw *p = conn(t);
    publish(p, 7, true, NULL);
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_CALL);
    send_result(r, false, r->msg.seq, FIDBUS_OK);
    fb_e2e_raw_expect_ack(p, 7, 1);
    char *out = fb_e2e_ctl(t, 0, NULL, "--json", "func", "members", NULL);
    ck_assert_msg(strstr(out, "\"peer\":\"127.0.0.1:"), "%s", out);
    free(out);
    fb_e2e_raw_close(r);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* One member registers hundreds of functions. */
START_TEST(test_remote_many_functions)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *m = conn(t);
    for (int i = 0; i < 500; i++) {
        char fn[64];
        snprintf(fn, sizeof fn, "acme.f%d@1.0.0", i);
        send_register(m, (uint64_t)i + 1, fn, SIG, 4, 1000, i % 2);
    }
    for (int i = 0; i < 500; i++) {
        char fn[64];
        snprintf(fn, sizeof fn, "acme.f%d@1.0.0", i);
        fb_e2e_raw_expect_ack(m, (uint64_t)i + 1, fidbus_funcid(fn));
    }
    fb_e2e_raw_close(m);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A REGISTER storm: members come and go from several threads while a
 * publisher sends acked events; every publish is answered exactly once
 * (ACK or UNAVAILABLE), and ASan sees no leak at exit. */
struct storm {
    struct fb_e2e *t;
    int iters;
};

static void *storm_member(void *arg)
{
    struct storm *s = arg;
    for (int i = 0; i < s->iters; i++) {
        struct fb_e2e_raw *r = fb_e2e_raw_unix(s->t);
        uint8_t frame[512];
        size_t n = fidbus_enc_register(frame, sizeof frame, 1, FN, SIG, 4, 30000,
                                       FIDBUS_FLAG_IDEMPOTENT);
        fb_e2e_raw_send(r, frame, n);
        /* answer what comes for a few frames, then leave (UNREGISTER
         * every other round, a plain close otherwise) */
        for (int k = 0; k < 6; k++) {
            if (fb_e2e_raw_recv(r, 50) != 1)
                break;
            if (r->msg.type == FIDBUS_MSG_CALL) {
                n = fidbus_enc_result(frame, sizeof frame, false, r->msg.seq,
                                      k % 3 == 2 ? FIDBUS_RETRY : FIDBUS_OK, NULL);
                fb_e2e_raw_send(r, frame, n);
            }
        }
        if (i % 2) {
            n = fidbus_enc_unregister(frame, sizeof frame, 2, FN);
            fb_e2e_raw_send(r, frame, n);
            for (int k = 0; k < 20; k++) {
                if (fb_e2e_raw_recv(r, 100) != 1)
                    break;
                if (r->msg.type == FIDBUS_MSG_CALL) {
                    n = fidbus_enc_result(frame, sizeof frame, false, r->msg.seq,
                                          FIDBUS_OK, NULL);
                    fb_e2e_raw_send(r, frame, n);
                } else if (r->msg.type == FIDBUS_MSG_ACK && r->msg.seq == 2) {
                    break;
                }
            }
        }
        fb_e2e_raw_close(r);
    }
    return NULL;
}

START_TEST(test_remote_storm)
{
    struct fb_e2e_opts o = {.workers = 3};
    struct fb_e2e *t = fb_e2e_up(&o, conf);
    struct storm s = {t, 30};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, storm_member, &s), 0);
    struct fb_e2e_raw *p = conn(t);
    enum { N = 600 };
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    for (uint64_t i = 0; i < N; i++)
        publish(p, i, true, NULL);
    for (int got = 0; got < N; got++) {
        int rc = fb_e2e_raw_recv(p, 60000);
        ck_assert_int_eq(rc, 1);
        const struct fidbus_msg *m = &p->msg;
        ck_assert_msg(m->type == FIDBUS_MSG_ACK ||
                          (m->type == FIDBUS_MSG_ERROR && m->code == FIDBUS_UNAVAILABLE),
                      "type %" PRIu64 " code %" PRIu64 " '%s'", m->type, m->code,
                      fb_e2e_msg_text(m));
        ck_assert(m->seq < N);
        ck_assert_msg(!seen[m->seq], "seq %" PRIu64 " answered twice", m->seq);
        seen[m->seq] = 1;
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    fb_e2e_raw_ping(p, N + 1);
    fb_e2e_raw_expect_ack(p, N + 1, 0);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e.remote");
    TCase *tc = tcase_create("remote");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_remote_basic);
    tcase_add_test(tc, test_remote_register_rules);
    tcase_add_test(tc, test_remote_route_rules);
    tcase_add_test(tc, test_remote_plugin_conflict);
    tcase_add_test(tc, test_remote_credit_upto);
    tcase_add_test(tc, test_remote_member_lost);
    tcase_add_test(tc, test_remote_member_never_reads);
    tcase_add_test(tc, test_remote_retry_deadline);
    tcase_add_test(tc, test_remote_split_by);
    tcase_add_test(tc, test_remote_canary);
    tcase_add_test(tc, test_remote_barrier_drain);
    tcase_add_test(tc, test_remote_control);
    tcase_add_test(tc, test_remote_member_not_idle);
    tcase_add_test(tc, test_remote_reload_revokes);
    tcase_add_test(tc, test_remote_stop_in_flight);
    tcase_add_test(tc, test_remote_tcp);
    tcase_add_test(tc, test_remote_many_functions);
    tcase_add_test(tc, test_remote_storm);
    suite_add_tcase(s, tc);
    return fb_e2e_main(s);
}
