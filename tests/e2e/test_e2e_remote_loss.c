/*
 * No silent loss of remote calls (proto/README.md "Remote functions",
 * "Answers to the publisher"; ctest: e2e.remote_loss): a call the daemon
 * never ran gets ERROR UNAVAILABLE with its publish's seq, acked or not,
 * also when its member leaves after dispatch found it (the call was
 * waiting for credit, or on its way to the member's worker).
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>

#include "harness.h"

#define FN "acme.audit@1.0.0"
#define SIG "event:any"

/* clang-format off */
static const char conf[] =
    "[remote acme]\ncredit = 8\ntimeout_ms = 30000\nattempts = 3\n"
    "[route audit]\nevent = a.x\nto = " FN "\n";
/* clang-format on */

static struct fb_e2e_raw *conn(struct fb_e2e *t)
{
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    return r;
}

static struct fb_e2e_raw *member(struct fb_e2e *t, uint64_t credit, bool idempotent)
{
    struct fb_e2e_raw *r = conn(t);
    uint8_t frame[1024];
    size_t n = fidbus_enc_register(frame, sizeof frame, 1, FN, SIG, credit, 30000,
                                   idempotent ? FIDBUS_FLAG_IDEMPOTENT : 0);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    fb_e2e_raw_expect_ack(r, 1, fidbus_funcid(FN));
    return r;
}

/* The next CALL on r (its call id). */
static uint64_t next_call(struct fb_e2e_raw *r)
{
    int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rc == 1, "waiting for a CALL: %d", rc);
    ck_assert_msg(r->msg.type == FIDBUS_MSG_CALL, "expected CALL, got type %" PRIu64,
                  r->msg.type);
    return r->msg.seq;
}

static void answer(struct fb_e2e_raw *r, uint64_t id)
{
    uint8_t frame[64];
    size_t n = fidbus_enc_result(frame, sizeof frame, false, id, FIDBUS_OK, NULL);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
}

#define N_PUB 300u
#define ROUNDS 20

/* One round: a member of credit 1 answers `answered` calls, reads one
 * more and closes without answering it. The publisher's N_PUB un-acked
 * publishes were all sent before: the calls the member never saw waited
 * for its credit (or were on their way to it) when it left; each must
 * get ERROR UNAVAILABLE with its seq before the PING behind them is
 * answered. The call it read and dropped may have run: only counted
 * (proto/README.md), so: answered + ERRORs + 1 == N_PUB. */
static void one_round(struct fb_e2e *t, struct fb_e2e_raw *p, uint64_t base,
                      unsigned answered)
{
    struct fb_e2e_raw *m = member(t, 1, false);
    for (unsigned i = 0; i < N_PUB; i++)
        fb_e2e_raw_publish(p, base + i, false, "a.x");
    for (unsigned i = 0; i < answered; i++)
        answer(m, next_call(m));
    (void)next_call(m);
    fb_e2e_raw_close(m);
    uint64_t ping = base + N_PUB;
    fb_e2e_raw_ping(p, ping);
    static bool seen[N_PUB];
    memset(seen, 0, sizeof seen);
    unsigned errors = 0;
    for (;;) {
        int rc = fb_e2e_raw_recv(p, FB_E2E_TIMEOUT_MS);
        ck_assert_msg(rc == 1, "round at %" PRIu64 ": waiting for the PING: %d", base,
                      rc);
        const struct fidbus_msg *msg = &p->msg;
        if (msg->type == FIDBUS_MSG_ACK) {
            ck_assert_uint_eq(msg->seq, ping);
            break;
        }
        ck_assert_msg(msg->type == FIDBUS_MSG_ERROR && msg->code == FIDBUS_UNAVAILABLE,
                      "type %" PRIu64 " code %" PRIu64 " '%s'", msg->type, msg->code,
                      fb_e2e_msg_text(msg));
        ck_assert(fidbus_msg_has(msg, FIDBUS_K_SEQ));
        ck_assert_msg(msg->seq >= base && msg->seq < base + N_PUB,
                      "ERROR for seq %" PRIu64 " outside the round", msg->seq);
        ck_assert_msg(!seen[msg->seq - base], "seq %" PRIu64 " answered twice", msg->seq);
        seen[msg->seq - base] = true;
        errors++;
    }
    ck_assert_msg(answered + errors + 1 == N_PUB,
                  "round at %" PRIu64 ": %u answered by the member + %u ERRORs + 1 "
                  "dropped != %u published: %u calls lost silently",
                  base, answered, errors, N_PUB, N_PUB - answered - errors - 1);
}

START_TEST(test_remote_loss_unacked)
{
    struct fb_e2e_opts o = {.workers = (unsigned)_i};
    struct fb_e2e *t = fb_e2e_up(&o, conf);
    struct fb_e2e_raw *p = conn(t);
    for (unsigned r = 0; r < ROUNDS; r++)
        one_round(t, p, 1 + (uint64_t)r * 1000, r % 7);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A remote function's calls in stats and in Prometheus text: the latency
 * histogram counts every call (latency_count == calls, RESULT or not), and
 * its own keys are exported (proto/control.md `stats`); the text parses
 * with the Prometheus client's parser. */
START_TEST(test_remote_loss_metrics)
{
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct fb_e2e_raw *p = conn(t);
    enum { NONE = 5, ANSWERED = 37 }; /* 42: not a multiple of the sampling */
    for (unsigned i = 0; i < NONE; i++) {
        fb_e2e_raw_publish(p, 1 + i, true, "a.x");
        fb_e2e_raw_expect_error(p, FIDBUS_UNAVAILABLE, 1 + i);
    }
    struct fb_e2e_raw *m = member(t, 4, false);
    for (unsigned i = 0; i < ANSWERED; i++) {
        fb_e2e_raw_publish(p, 100 + i, true, "a.x");
        answer(m, next_call(m));
        fb_e2e_raw_expect_ack(p, 100 + i, 1);
    }
    char hex[FIDBUS_FUNCID_HEX], series[256];
    fidbus_funcid_hex(fidbus_funcid(FN), hex);
    const char *labels = "{funcid=\"%s\",canonical=\"" FN "\"}";
    char lab[128];
    snprintf(lab, sizeof lab, labels, hex);
    snprintf(series, sizeof series, "fidbus_function_calls_total%s", lab);
    ck_assert_int_eq(fb_e2e_prom_value(t, series), NONE + ANSWERED);
    snprintf(series, sizeof series, "fidbus_function_duration_seconds_count%s", lab);
    ck_assert_int_eq(fb_e2e_prom_value(t, series), NONE + ANSWERED);
    snprintf(series, sizeof series, "fidbus_function_unavailable_total%s", lab);
    ck_assert_int_eq(fb_e2e_prom_value(t, series), NONE);
    snprintf(series, sizeof series, "fidbus_function_members%s", lab);
    ck_assert_int_eq(fb_e2e_prom_value(t, series), 1);
    snprintf(series, sizeof series, "fidbus_function_waiting%s", lab);
    ck_assert_int_eq(fb_e2e_prom_value(t, series), 0);

    const char *ctl[] = {fb_e2e_built("daemon/fidbusctl"),
                         "--socket",
                         t->control,
                         "stats",
                         "--prometheus",
                         NULL};
    char *out = NULL;
    ck_assert_int_eq(fb_e2e_run(t, ctl, &out, NULL), 0);
    const char *file = fb_e2e_write(t, "metrics.txt", out);
    free(out);
    const char *py[] = {"/usr/bin/python3", "-c",
                        "import sys\n"
                        "from prometheus_client.parser import "
                        "text_string_to_metric_families as parse\n"
                        "n = sum(1 for f in parse(open(sys.argv[1]).read()) "
                        "for s in f.samples if s.labels.get('canonical') == '" FN "')\n"
                        "print(n)\n",
                        file, NULL};
    char *pyout = NULL, *pyerr = NULL;
    int st = fb_e2e_run(t, py, &pyout, &pyerr);
    ck_assert_msg(st == 0, "prometheus_client cannot parse: %s", pyerr);
    ck_assert_msg(atoi(pyout) > 10, "samples of " FN ": %s", pyout);
    free(pyout);
    free(pyerr);
    fb_e2e_raw_close(m);
    fb_e2e_raw_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e.remote_loss");
    TCase *tc = tcase_create("remote_loss");
    tcase_set_timeout(tc, 120);
    /* one worker (publisher and member share it) and two */
    tcase_add_loop_test(tc, test_remote_loss_unacked, 1, 3);
    tcase_add_test(tc, test_remote_loss_metrics);
    suite_add_tcase(s, tc);
    return fb_e2e_main(s);
}
