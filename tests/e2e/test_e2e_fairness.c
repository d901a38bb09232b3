/*
 * End-to-end tests of the blocking pool's fairness (daemon/routing/pool.h) and of
 * the rule that a PUBLISH the daemon does not run is answered with an
 * ERROR, acked or not (proto/README.md).
 *
 * The hog: one uid (root, the test itself) with 4 connections pipelines
 * 4,000 un-acked blocking events while test.gate holds the pool's 2
 * threads, so the queue is in a known state: nothing drains until the
 * test opens the gate. Another uid (65534: the connection is made with
 * that effective uid, SO_PEERCRED records it) must still get its acked
 * events in, and they must run early, not behind the hog's backlog; for
 * the hog, every event sent is either run (a line in the plugin's file)
 * or answered with an ERROR BUSY: run + ERRORs = sent. Within one uid,
 * connections are served in turn as well.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "e2e/harness.h"

#define HOG_CONNS 4
/* Below max_inflight (1024): the daemon reads all of it at once. */
#define HOG_EACH 1000
#define OTHER_N 5
#define PING_SEQ 999999999ull

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (polling the daemon's stats, 30 s at most) until it has decoded
 * `n` PUBLISH frames: all that was sent has been dispatched. */
static void wait_received(struct fb_e2e *t, long long n)
{
    long long got = -1;
    for (uint64_t end = fb_e2e_now_ms() + 30000; fb_e2e_now_ms() < end; pause_ms(20))
        if ((got = fb_e2e_prom_value(t, "fidbus_received_total")) >= n)
            return;
    ck_abort_msg("the daemon decoded %lld PUBLISH frames, expected %lld", got, n);
}

/* A raw connection made with effective uid `uid` (the daemon takes the
 * peer's credentials at connect), then back to root. */
static struct fb_e2e_raw *raw_as(const struct fb_e2e *t, uid_t uid)
{
    ck_assert_int_eq(setresuid((uid_t)-1, uid, (uid_t)-1), 0);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    ck_assert_int_eq(setresuid((uid_t)-1, 0, (uid_t)-1), 0);
    return r;
}

static int line_index(const char *text, const char *event, int from)
{
    int i = 0;
    for (const char *p = text; p && *p; i++) {
        const char *nl = strchr(p, '\n');
        if (i >= from && !strncmp(p, event, strlen(event)) && p[strlen(event)] == ' ')
            return i;
        p = nl ? nl + 1 : NULL;
    }
    return -1;
}

START_TEST(test_e2e_fairness_hog)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_e2e_fairness_hog: SKIPPED: needs root to connect as "
                        "another uid\n");
        return;
    }
    struct fb_e2e_opts o = {.blocking_threads = 2, .listen_extra = "unix_mode = 0666"};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("gate") "gate = @D@/open\n"
                                        "file = @D@/gate.txt\n"
                                        "[route hog]\nevent = hog.x\nto = "
                                        "test.gate\n"
                                        "[route other]\nevent = other.x\nto "
                                        "= test.gate\n"
                                        "[route cli]\nevent = cli.x\nto = "
                                        "test.gate\n");
    /* let uid 65534 reach the bus socket (base dir, test dir, run/) */
    fb_e2e_let_others_in(t);

    /* The hog: 4 connections, 1,000 un-acked events each, all pipelined. */
    struct fb_e2e_raw *hog[HOG_CONNS];
    for (int k = 0; k < HOG_CONNS; k++) {
        hog[k] = fb_e2e_raw_unix(t);
        for (uint64_t i = 1; i <= HOG_EACH; i++)
            fb_e2e_raw_publish(hog[k], (uint64_t)(k + 1) * 100000u + i, false, "hog.x");
    }
    wait_received(t, HOG_CONNS * HOG_EACH);

    /* Another user, while the hog's backlog is queued and nothing runs. */
    struct fb_e2e_raw *other = raw_as(t, 65534);
    for (uint64_t i = 1; i <= OTHER_N; i++)
        fb_e2e_raw_publish(other, i, true, "other.x");
    wait_received(t, HOG_CONNS * HOG_EACH + OTHER_N);

    /* The hog's uid is over its share now: a new publish of it is not
     * run, and `fidbusctl publish` without --ack must say so. */
    const char *argv[] = {
        fb_e2e_built("daemon/fidbusctl"), "--bus", t->bus_addr, "publish", "cli.x", NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0,
                  "fidbusctl publish (no --ack) of an event that was not run exited 0; "
                  "out: %s err: %s",
                  out, err);
    ck_assert_msg(strstr(err, "BUSY") || strstr(err, "blocking pool full"),
                  "fidbusctl publish: no BUSY in: %s", err);
    free(out);
    free(err);

    fb_e2e_write(t, "open", "");

    /* The other user's events all ran and were acked. */
    fb_e2e_raw_hello(other);
    int acked = 0;
    for (int i = 0; i < OTHER_N; i++) {
        ck_assert_int_eq(fb_e2e_raw_recv(other, 30000), 1);
        const struct fidbus_msg *m = &other->msg;
        ck_assert_msg(m->type == FIDBUS_MSG_ACK,
                      "uid 65534's acked publish got message type %llu (ERROR code %llu) "
                      "while uid 0 hogged the pool",
                      (unsigned long long)m->type, (unsigned long long)m->code);
        uint64_t res = 0;
        ck_assert(fb_e2e_cbor_uint(m->result, &res));
        ck_assert_uint_eq(res, 1);
        acked++;
    }
    fb_e2e_raw_ping(other, PING_SEQ);
    fb_e2e_raw_expect_ack(other, PING_SEQ, 0);

    /* The hog: every answer up to its PING barrier. */
    long long errors = 0;
    for (int k = 0; k < HOG_CONNS; k++) {
        fb_e2e_raw_hello(hog[k]);
        fb_e2e_raw_ping(hog[k], PING_SEQ);
        for (;;) {
            ck_assert_int_eq(fb_e2e_raw_recv(hog[k], 30000), 1);
            const struct fidbus_msg *m = &hog[k]->msg;
            if (m->type == FIDBUS_MSG_ACK) {
                ck_assert_uint_eq(m->seq, PING_SEQ);
                break;
            }
            ck_assert_msg(m->type == FIDBUS_MSG_ERROR && m->code == FIDBUS_BUSY,
                          "hog: message type %llu code %llu", (unsigned long long)m->type,
                          (unsigned long long)m->code);
            ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_SEQ) &&
                              m->seq / 100000u == (uint64_t)(k + 1),
                          "hog: ERROR without the publish's seq");
            errors++;
        }
        hog[k] = fb_e2e_raw_close(hog[k]);
    }

    char *lines = fb_e2e_read(fb_e2e_file(t, "gate.txt"), NULL);
    ck_assert_ptr_nonnull(lines);
    long long run = fb_e2e_lines_with(lines, "hog.x", -1);
    long long sent = HOG_CONNS * HOG_EACH;
    fprintf(stderr,
            "test_e2e_fairness_hog: hog (uid 0, %d connections) sent %lld un-acked "
            "events: %lld run + %lld ERROR BUSY = %lld; uid 65534: %d of %d acked\n",
            HOG_CONNS, sent, run, errors, run + errors, acked, OTHER_N);
    ck_assert_msg(run + errors == sent, "hog: %lld run + %lld ERRORs != %lld sent", run,
                  errors, sent);
    ck_assert_msg(errors > 0 && run > 0, "hog: %lld run, %lld refused", run, errors);
    ck_assert_int_eq(fb_e2e_lines_with(lines, "other.x", -1), OTHER_N);
    ck_assert_int_eq(fb_e2e_lines_with(lines, "cli.x", -1), 0);
    /* Served in turn with the hog, not behind its backlog: the hog had
     * over a thousand events queued ahead of them. */
    int last = -1;
    for (int i = 0; i < OTHER_N; i++)
        last = line_index(lines, "other.x", last + 1);
    ck_assert_msg(last >= 0 && last < 40,
                  "uid 65534's last event ran as line %d of the file, behind the hog",
                  last);
    free(lines);
    ck_assert_int_gt(fb_e2e_limit_hits(t, "busy"), 0);

    other = fb_e2e_raw_close(other);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * Within one uid, connections are served in turn too: a connection with
 * 900 events queued does not make a second connection's 5 acked events
 * wait behind all of them.
 */
START_TEST(test_e2e_fairness_connections)
{
    struct fb_e2e_opts o = {.blocking_threads = 1};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("gate") "gate = @D@/open\n"
                                        "file = @D@/gate.txt\n"
                                        "[route bulk]\nevent = bulk.x\nto = "
                                        "test.gate\n"
                                        "[route mine]\nevent = mine.x\nto = "
                                        "test.gate\n");
    enum { BULK = 900 };
    struct fb_e2e_raw *bulk = fb_e2e_raw_unix(t), *mine = fb_e2e_raw_unix(t);
    for (uint64_t i = 1; i <= BULK; i++)
        fb_e2e_raw_publish(bulk, i, false, "bulk.x");
    wait_received(t, BULK);
    for (uint64_t i = 1; i <= OTHER_N; i++)
        fb_e2e_raw_publish(mine, i, true, "mine.x");
    wait_received(t, BULK + OTHER_N);
    fb_e2e_write(t, "open", "");

    fb_e2e_raw_hello(mine);
    for (int i = 0; i < OTHER_N; i++) {
        ck_assert_int_eq(fb_e2e_raw_recv(mine, 30000), 1);
        ck_assert_msg(mine->msg.type == FIDBUS_MSG_ACK, "mine.x: type %llu code %llu",
                      (unsigned long long)mine->msg.type,
                      (unsigned long long)mine->msg.code);
    }
    fb_e2e_raw_hello(bulk);
    fb_e2e_raw_ping(bulk, PING_SEQ);
    fb_e2e_raw_expect_ack(bulk, PING_SEQ, 0); /* all 900 ran: no ERROR first */

    char *lines = fb_e2e_read(fb_e2e_file(t, "gate.txt"), NULL);
    ck_assert_ptr_nonnull(lines);
    ck_assert_int_eq(fb_e2e_lines_with(lines, "bulk.x", -1), BULK);
    int last = -1;
    for (int i = 0; i < OTHER_N; i++)
        last = line_index(lines, "mine.x", last + 1);
    ck_assert_msg(last >= 0 && last < 20,
                  "the second connection's last event ran as line %d, behind the first's "
                  "backlog of %d",
                  last, BULK);
    free(lines);
    fb_e2e_raw_close(bulk);
    fb_e2e_raw_close(mine);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_fairness_suite(void)
{
    Suite *s = suite_create("e2e_fairness");
    TCase *tc = tcase_create("fairness");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_fairness_hog);
    tcase_add_test(tc, test_e2e_fairness_connections);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_fairness_suite());
}
