/*
 * End-to-end tests of the bus against a real fidbusd (ctest: e2e.bus).
 *
 * Publishing with and without ack over Unix and TCP, fan-out, NO_ROUTE,
 * route precedence, HANDLER_FAILED, blocking handlers and a
 * many-connection run (protocol errors on the wire: test_e2e_wire.c).
 * Each test starts its own daemon in a temp dir (see harness.h), uses PING
 * as the barrier before it reads what the log plugin wrote, and reads the
 * count plugin's report only after the daemon has exited (fini writes it).
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "harness.h"

/* Publishes with the ACK flag and returns the answer. */
static struct fidbus_answer publish_acked(struct fidbus_client *c, uint64_t seq,
                                          const char *event,
                                          const struct fidbus_tag *tags, size_t ntags)
{
    int rc = fidbus_publish_seq(c, seq, FIDBUS_FLAG_ACK, event, tags, ntags, NULL, 0);
    ck_assert_msg(rc == 0, "publish %s: %s", event, fidbus_strerror(rc));
    ck_assert_int_eq(fidbus_flush(c), 0);
    struct fidbus_answer a = {0};
    rc = fidbus_client_recv(c, &a, -1);
    ck_assert_msg(rc >= 0, "waiting for the answer to %s seq %" PRIu64 ": %s", event, seq,
                  fidbus_strerror(rc));
    ck_assert_msg(a.seq == seq, "answer for seq %" PRIu64 " carries seq %" PRIu64, seq,
                  a.seq);
    return a;
}

/* ------------------------------------------------------------- publish */

/* clang-format off */
static const char publish_conf[] =
    FB_E2E_LOG FB_E2E_COUNT
    "[route one]\nevent = pub.one\nto = fidbus.log\n"
    "[route fan]\nevent = pub.fan\nto = fidbus.log, fidbus.count\n";
/* clang-format on */

/* _i: 0 = Unix, 1 = TCP on loopback with tcp_auth = none. */
START_TEST(test_e2e_publish)
{
    struct fb_e2e_opts o = {.tcp = true};
    struct fb_e2e *t = fb_e2e_up(&o, publish_conf);
    /* both dirs were missing: the daemon made them; the socket has the
     * default unix_mode 0660 */
    struct stat st;
    ck_assert_msg(stat(fb_e2e_file(t, "state"), &st) == 0 && S_ISDIR(st.st_mode),
                  "the daemon did not create its state_dir");
    ck_assert_msg(stat(t->bus, &st) == 0 && S_ISSOCK(st.st_mode), "no socket %s", t->bus);
    ck_assert_msg((st.st_mode & 0777) == 0660, "bus socket mode %o, expected 0660",
                  (unsigned)(st.st_mode & 0777));
    struct fidbus_client *c = _i == 0 ? fb_e2e_connect(t) : fb_e2e_connect_tcp(t);
    ck_assert_str_ne(fidbus_client_server_name(c), "");

    const struct fidbus_tag tags[] = {{"color", "teal"}, {"shape", "round-e2e"}};
    /* text "payload-42": shows up as such in CBOR diagnostic notation */
    static const uint8_t payload[] = {0x6a, 'p', 'a', 'y', 'l', 'o',
                                      'a',  'd', '-', '4', '2'};
    ck_assert_int_eq(
        fidbus_publish_seq(c, 101, 0, "pub.one", tags, 2, payload, sizeof payload), 0);
    ck_assert_int_eq(fidbus_publish_seq(c, 102, FIDBUS_FLAG_ACK, "pub.one", tags, 2,
                                        payload, sizeof payload),
                     0);
    ck_assert_int_eq(fidbus_flush(c), 0);
    struct fidbus_answer a = {0};
    ck_assert_int_ge(fidbus_client_recv(c, &a, -1), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(a.seq, 102);
    ck_assert_uint_eq(a.result, 1);

    uint64_t res = 99;
    int rc = fidbus_publish_ack(c, "pub.one", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack pub.one: %s", fidbus_strerror(rc));
    ck_assert_uint_eq(res, 1);

    /* fan-out: both targets run */
    fb_e2e_publish_n(c, "pub.fan", 10);
    res = 99;
    rc = fidbus_publish_ack(c, "pub.fan", tags, 1, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack pub.fan: %s", fidbus_strerror(rc));
    ck_assert_uint_eq(res, 2);
    fb_e2e_ping(c);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 0);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    FB_E2E_ASSERT_LINES(log, "pub.one", 101, 1);
    FB_E2E_ASSERT_LINES(log, "pub.one", 102, 1);
    FB_E2E_ASSERT_LINES(log, "pub.one", -1, 3);
    FB_E2E_ASSERT_LINES(log, "pub.fan", -1, 11);
    char *line = fb_e2e_line_with(log, "pub.one", 101);
    static const char *const want[] = {"gen=",  "color",     "teal",
                                       "shape", "round-e2e", "payload-42"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(line, want[i]), "log line lacks \"%s\": %s", want[i], line);
    free(line);
    free(log);
    fidbus_client_close(c);

    char *json = fb_e2e_stop_report(t);
    FB_E2E_ASSERT_COUNT(json, "pub.fan", 11);
    FB_E2E_ASSERT_COUNT(json, "pub.one", -1);
    FB_E2E_ASSERT_COUNT(json, "_total", 11);
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ no route */

START_TEST(test_e2e_no_route)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_LOG "[route yes]\nevent = nr.yes\n"
                                                  "to = fidbus.log\n");
    /* clang-format on */
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_publish(r, 77, true, "nr.none");
    fb_e2e_raw_expect_error(r, FIDBUS_NO_ROUTE, 77);
    /* un-acked: no answer at all, so the next frame is the PING's ACK */
    fb_e2e_raw_publish(r, 78, false, "nr.none");
    fb_e2e_raw_ping(r, 79);
    fb_e2e_raw_expect_ack(r, 79, 0);
    fb_e2e_raw_publish(r, 80, true, "nr.yes");
    fb_e2e_raw_expect_ack(r, 80, 1);
    fb_e2e_raw_close(r);

    struct fidbus_client *c = fb_e2e_connect(t);
    uint64_t res = 99;
    int rc = fidbus_publish_ack(c, "nr.none", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == FIDBUS_EPROTO_CODE(FIDBUS_NO_ROUTE), "expected NO_ROUTE, got %s",
                  fidbus_strerror(rc));
    ck_assert_int_eq(fidbus_error_code(rc), FIDBUS_NO_ROUTE);
    fb_e2e_publish_n(c, "nr.none", 100);
    fb_e2e_ping(c);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 0);
    rc = fidbus_publish_ack(c, "nr.yes", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack after NO_ROUTE: %s", fidbus_strerror(rc));
    ck_assert_uint_eq(res, 1);
    fidbus_client_close(c);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    FB_E2E_ASSERT_LINES(log, "nr.none", -1, 0);
    FB_E2E_ASSERT_LINES(log, "nr.yes", -1, 2);
    free(log);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------------------- route precedence */

/* Each route has a target set with a distinct observable outcome: the
 * (ACK | HANDLER_FAILED, result) pair and whether log.txt got a line. */
/* clang-format off */
static const char precedence_conf[] =
    FB_E2E_LOG FB_E2E_COUNT FB_E2E_TP("fail")
    "[route exact]\nevent = p.order.created\nto = fidbus.log\n"
    "[route tag1]\nevent = p.order.created\ntags = version=v2\nto = test.fail\n"
    "[route tag2]\nevent = p.order.created\ntags = version=v2, region=*\n"
    "to = fidbus.log, fidbus.count\n"
    "[route tag2exact]\nevent = p.order.created\ntags = version=v2, region=cn-east\n"
    "to = test.fail, fidbus.log\n"
    "[route long]\nevent = p.order.*\nto = fidbus.count\n"
    "[route short]\nevent = p.*\nto = fidbus.count, fidbus.log\n"
    "[route star]\nevent = *\nto = fidbus.count, fidbus.log, test.fail\n"
    "[route prio_lo]\nevent = p.prio\nto = test.fail\n"
    "[route prio_hi]\nevent = p.prio\npriority = 5\nto = fidbus.log\n"
    "[route tie_b]\nevent = q.tie\nto = test.fail\n"
    "[route tie_a]\nevent = q.tie\nto = fidbus.count\n"
    "[route tx]\nevent = q.t\ntags = region=cn-east\nto = fidbus.log\n"
    "[route ts]\nevent = q.t\ntags = region=*\nto = test.fail\n";
/* clang-format on */

struct prec_case {
    const char *event;
    struct fidbus_tag tags[2];
    size_t ntags;
    int code; /* 0: ACK; else the ERROR code */
    uint64_t result;
    int logged; /* lines in log.txt for this seq */
    const char *why;
};

#define HF FIDBUS_HANDLER_FAILED
/* clang-format off */
static const struct prec_case prec_cases[] = {
    {"p.order.created", {{0}}, 0, 0, 1, 1, "exact beats prefix and *"},
    {"p.order.created", {{"version", "v1"}}, 1, 0, 1, 1, "unmatched tag falls back"},
    {"p.order.created", {{"version", "v2"}}, 1, HF, 0, 0, "tags beat no tags"},
    {"p.order.created", {{"version", "v2"}, {"region", "eu"}}, 2, 0, 2, 1,
     "two constraints beat one"},
    {"p.order.created", {{"region", "cn-east"}, {"version", "v2"}}, 2, HF, 1, 1,
     "exact values beat *"},
    {"p.order.updated", {{0}}, 0, 0, 1, 0, "longer prefix beats shorter"},
    {"p.order.a.b", {{0}}, 0, 0, 1, 0, "prefix matches deeper ids"},
    {"p.order", {{0}}, 0, 0, 2, 1, "p.order.* does not match p.order"},
    {"p.orders.x", {{0}}, 0, 0, 2, 1, "p.order.* does not match p.orders.x"},
    {"p.x", {{0}}, 0, 0, 2, 1, "short prefix"},
    {"P.order.created", {{0}}, 0, HF, 2, 1, "ids are case-sensitive"},
    {"p", {{0}}, 0, HF, 2, 1, "p.* does not match p"},
    {"zzz", {{0}}, 0, HF, 2, 1, "* catches the rest"},
    {"p.prio", {{0}}, 0, 0, 1, 1, "higher priority wins"},
    {"q.tie", {{0}}, 0, 0, 1, 0, "name sorting first wins a tie"},
    {"q.t", {{"region", "cn-east"}}, 1, 0, 1, 1, "exact value beats * value"},
    {"q.t", {{"region", "eu"}}, 1, HF, 0, 0, "* value matches any value"},
    {"q.t", {{0}}, 0, HF, 2, 1, "a tag constraint needs the tag"},
};
/* clang-format on */

START_TEST(test_e2e_route_precedence)
{
    struct fb_e2e *t = fb_e2e_up(NULL, precedence_conf);
    struct fidbus_client *c = fb_e2e_connect(t);
    size_t n = sizeof prec_cases / sizeof prec_cases[0];
    for (size_t i = 0; i < n; i++) {
        const struct prec_case *pc = &prec_cases[i];
        uint64_t seq = 1000 + i;
        struct fidbus_answer a = publish_acked(c, seq, pc->event, pc->tags, pc->ntags);
        uint64_t want_type = pc->code ? FIDBUS_MSG_ERROR : FIDBUS_MSG_ACK;
        ck_assert_msg(a.type == want_type && a.code == (uint64_t)pc->code &&
                          a.result == pc->result,
                      "case %zu (%s, %s): got %s code %" PRIu64 " result %" PRIu64
                      ", expected %s code %d result %" PRIu64,
                      i, pc->event, pc->why, a.type == FIDBUS_MSG_ACK ? "ACK" : "ERROR",
                      a.code, a.result, pc->code ? "ERROR" : "ACK", pc->code, pc->result);
    }
    fb_e2e_ping(c);
    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    for (size_t i = 0; i < n; i++) {
        const struct prec_case *pc = &prec_cases[i];
        ck_assert_msg(fb_e2e_lines_with(log, pc->event, 1000 + i) == pc->logged,
                      "case %zu (%s, %s): %d log line(s), expected %d; log:\n%s", i,
                      pc->event, pc->why, fb_e2e_lines_with(log, pc->event, 1000 + i),
                      pc->logged, log ? log : "(missing)");
    }
    free(log);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* -------------------------------------------------------- handler failed */

START_TEST(test_e2e_handler_failed)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_LOG FB_E2E_TP("fail")
                                 "[route both]\nevent = hf.x\nto = test.fail, fidbus.log\n"
                                 "[route only]\nevent = hf.only\nto = test.fail\n");
    /* clang-format on */
    struct fidbus_client *c = fb_e2e_connect(t);
    uint64_t res = 99;
    int rc = fidbus_publish_ack(c, "hf.x", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == FIDBUS_EPROTO_CODE(FIDBUS_HANDLER_FAILED),
                  "expected HANDLER_FAILED, got %s", fidbus_strerror(rc));
    ck_assert_uint_eq(res, 1);
    fb_e2e_ping(c);
    fidbus_client_close(c);

    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_publish(r, 5, true, "hf.x");
    const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, FIDBUS_HANDLER_FAILED, 5);
    uint64_t v = 99;
    ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_RESULT) && fb_e2e_cbor_uint(m->result, &v),
                  "HANDLER_FAILED without a uint result");
    ck_assert_uint_eq(v, 1);
    fb_e2e_raw_publish(r, 6, true, "hf.only");
    m = fb_e2e_raw_expect_error(r, FIDBUS_HANDLER_FAILED, 6);
    v = 99;
    ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_RESULT) && fb_e2e_cbor_uint(m->result, &v),
                  "HANDLER_FAILED without a uint result");
    ck_assert_uint_eq(v, 0);
    fb_e2e_raw_ping(r, 7);
    fb_e2e_raw_expect_ack(r, 7, 0);
    fb_e2e_raw_close(r);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    FB_E2E_ASSERT_LINES(log, "hf.x", 5, 1);
    FB_E2E_ASSERT_LINES(log, "hf.x", -1, 2);
    free(log);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ blocking handler */

static int count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; p && *p; p++)
        n += *p == '\n';
    return n;
}

START_TEST(test_e2e_blocking_handler)
{
    /* One pool thread, so the order of slow.txt's lines is the order in
     * which the calls were queued, i.e. dispatched. */
    struct fb_e2e_opts o = {.blocking_threads = 1};
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(&o, FB_E2E_LOG FB_E2E_TP("slow")
                                 "delay_ms = 100\nfile = @D@/slow.txt\n"
                                 "[route slow]\nevent = sl.x\nto = test.slow\n"
                                 "[route log]\nevent = sl.log\nto = fidbus.log\n");
    /* clang-format on */
    const char *slow = fb_e2e_file(t, "slow.txt");
    struct fidbus_client *a = fb_e2e_connect(t);
    struct fidbus_client *b = fb_e2e_connect(t);

    /* the ACK comes after the handler ran */
    uint64_t t0 = fb_e2e_now_ms();
    struct fidbus_answer ans = publish_acked(a, 1, "sl.x", NULL, 0);
    uint64_t took = fb_e2e_now_ms() - t0;
    ck_assert_uint_eq(ans.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(ans.result, 1);
    ck_assert_msg(took >= 100, "ACK after %" PRIu64 " ms, before the 100 ms handler",
                  took);
    char *text = fb_e2e_read(slow, NULL);
    ck_assert_msg(text && strcmp(text, "sl.x 1\n") == 0,
                  "slow.txt when the ACK arrived: \"%s\"", text ? text : "(missing)");
    free(text);

    /* queue five; an inline handler on another connection is not held up */
    t0 = fb_e2e_now_ms();
    for (uint64_t s = 10; s < 15; s++)
        ck_assert_int_eq(fidbus_publish_seq(a, s, 0, "sl.x", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_flush(a), 0);
    uint64_t res = 0;
    int rc = fidbus_publish_ack(b, "sl.log", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack sl.log: %s", fidbus_strerror(rc));
    text = fb_e2e_read(slow, NULL);
    ck_assert_msg(count_lines(text) < 6,
                  "the inline ACK waited for all blocking calls; slow.txt:\n%s", text);
    free(text);

    /* PING waits for blocking calls; they ran in publish order */
    fb_e2e_ping(a);
    took = fb_e2e_now_ms() - t0;
    text = fb_e2e_read(slow, NULL);
    ck_assert_msg(text && strcmp(text, "sl.x 1\nsl.x 10\nsl.x 11\nsl.x 12\nsl.x 13\n"
                                       "sl.x 14\n") == 0,
                  "slow.txt after PING:\n%s", text ? text : "(missing)");
    free(text);
    ck_assert_msg(took >= 500, "5 x 100 ms on one pool thread took %" PRIu64 " ms", took);
    fidbus_client_close(a);
    fidbus_client_close(b);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ many events */

#define MANY_CONNS 4
#define MANY_EVENTS 20000

struct many_arg {
    struct fb_e2e *t;
    int idx;
    int rc;
    char err[200];
};

static void *many_thread(void *p)
{
    struct many_arg *m = p;
    struct fidbus_client *c = NULL;
    const char *addr = m->idx < 2 ? m->t->bus_addr : m->t->tcp_addr;
    m->rc = fidbus_client_connect(&c, addr, NULL);
    if (m->rc < 0) {
        snprintf(m->err, sizeof m->err, "connect %s: %s", addr, fidbus_strerror(m->rc));
        return NULL;
    }
    char event[32];
    snprintf(event, sizeof event, "many.c%d", m->idx);
    const struct fidbus_tag tag = {"conn", event};
    uint8_t payload[16] = {0x4f}; /* bstr(15) */
    for (int i = 0; i < MANY_EVENTS && m->rc == 0; i++) {
        memcpy(payload + 1, &i, sizeof i);
        m->rc = fidbus_publish(c, event, &tag, 1, payload, sizeof payload);
    }
    if (m->rc == 0)
        m->rc = fidbus_ping(c);
    if (m->rc < 0)
        snprintf(m->err, sizeof m->err, "conn %d: %s", m->idx, fidbus_strerror(m->rc));
    else if (fidbus_client_async_errors(c))
        snprintf(m->err, sizeof m->err, "conn %d: %" PRIu64 " async errors: %s", m->idx,
                 fidbus_client_async_errors(c), fidbus_client_last_error(c));
    fidbus_client_close(c);
    return NULL;
}

START_TEST(test_e2e_many_events)
{
    struct fb_e2e_opts o = {.tcp = true, .workers = 2};
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(&o, FB_E2E_COUNT "[route many]\nevent = many.*\n"
                                                  "to = fidbus.count\n");
    /* clang-format on */
    pthread_t th[MANY_CONNS];
    struct many_arg args[MANY_CONNS];
    for (int i = 0; i < MANY_CONNS; i++) {
        args[i] = (struct many_arg){.t = t, .idx = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, many_thread, &args[i]), 0);
    }
    for (int i = 0; i < MANY_CONNS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < MANY_CONNS; i++)
        ck_assert_msg(args[i].rc == 0 && !args[i].err[0], "%s", args[i].err);

    char *json = fb_e2e_stop_report(t);
    for (int i = 0; i < MANY_CONNS; i++) {
        char event[32];
        snprintf(event, sizeof event, "many.c%d", i);
        FB_E2E_ASSERT_COUNT(json, event, MANY_EVENTS);
    }
    FB_E2E_ASSERT_COUNT(json, "_total", MANY_CONNS * MANY_EVENTS);
    free(json);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_bus_suite(void)
{
    Suite *s = suite_create("e2e_bus");
    TCase *tc = tcase_create("bus");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_e2e_publish, 0, 2);
    tcase_add_test(tc, test_e2e_no_route);
    tcase_add_test(tc, test_e2e_route_precedence);
    tcase_add_test(tc, test_e2e_handler_failed);
    tcase_add_test(tc, test_e2e_blocking_handler);
    tcase_add_test(tc, test_e2e_many_events);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_bus_suite());
}
