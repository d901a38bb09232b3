/*
 * End-to-end tests of who is connected and the live view (ctest:
 * e2e.conns): the conn.list control command -- a Unix publisher with its
 * uid, pid and exact frame and byte counts, a TCP client with its address
 * and AUTH name, the control connection asking, a connection held back
 * with events in flight, ids unique and stable, a closed connection gone,
 * the reply bounded by [control] max_reply -- `fidbusctl conn list` as
 * JSON and as a table, and `fidbusctl top`: --once listing every route and
 * function by name, plain text when stdout is not a terminal, and the
 * interactive view quitting on 'q' with the terminal restored.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "harness_json.h"

#define KEY "conns test key 0123456789 abcdefghij"

/* clang-format off */
#define COUNT_ALL FB_E2E_COUNT "[route all]\nevent = *\nto = fidbus.count\n"
/* clang-format on */

static json_t *conn_list(struct fidbus_client *ctl)
{
    json_t *r = fb_e2e_ok(ctl, "conn.list", NULL);
    ck_assert_msg(json_is_array(json_object_get(r, "connections")), "no connections");
    ck_assert_int_eq(fb_e2e_jint(r, "missing_workers"), 0);
    return r;
}

/* The entry with `key` == v (an integer), or NULL. */
static json_t *find_int(json_t *r, const char *key, long long v)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r, "connections"), i, c)
    {
        json_t *x = json_object_get(c, key);
        if (json_is_integer(x) && json_integer_value(x) == v)
            return c;
    }
    return NULL;
}

/* The only entry of `kind` other than the ids in skip (0-terminated). */
static json_t *find_kind(json_t *r, const char *kind, long long not_id)
{
    json_t *found = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r, "connections"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "kind")), kind) == 0 &&
            fb_e2e_jint(c, "id") != not_id) {
            ck_assert_msg(!found, "more than one %s connection", kind);
            found = c;
        }
    }
    return found;
}

/* Frames for a raw connection: n un-acked PUBLISHes of `event` and a PING
 * (seq n + 1), encoded here so their exact size is known. */
static void encode_batch(struct fidbus_buf *b, int n, const char *event)
{
    for (int s = 1; s <= n; s++) {
        struct fidbus_msg_out m = {
            .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                       FIDBUS_BIT(FIDBUS_K_EVENT),
            .type = FIDBUS_MSG_PUBLISH,
            .seq = (uint64_t)s,
            .event = event,
        };
        ck_assert_int_eq(fidbus_msg_encode(b, &m), 0);
    }
    struct fidbus_msg_out p = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = (uint64_t)n + 1,
    };
    ck_assert_int_eq(fidbus_msg_encode(b, &p), 0);
}

/* ------------------------------------------------------------ conn.list */

START_TEST(test_e2e_conns_unix_and_control)
{
    struct fb_e2e_opts o = {.workers = 2};
    struct fb_e2e *t = fb_e2e_up(&o, COUNT_ALL);
    struct fidbus_client *ctl = fb_e2e_connect_control(t, NULL);

    /* Before the publisher: only the control connection, with our pid. */
    json_t *r0 = conn_list(ctl);
    ck_assert_int_eq(json_array_size(json_object_get(r0, "connections")), 1);
    json_t *me = find_kind(r0, "control", 0);
    ck_assert_ptr_nonnull(me);
    ck_assert_int_eq(fb_e2e_jint(me, "uid"), (long long)getuid());
    ck_assert_int_eq(fb_e2e_jint(me, "pid"), (long long)getpid());
    ck_assert(json_is_null(json_object_get(me, "worker")));
    ck_assert_int_ge(fb_e2e_jint(me, "frames_in"), 1);
    long long ctl_id = fb_e2e_jint(me, "id");

    enum { N = 57 };
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    struct fidbus_buf b = {0};
    encode_batch(&b, N, "conns.unix");
    fb_e2e_raw_send(r, b.data, b.len);
    fb_e2e_raw_expect_ack(r, N + 1, 0); /* the barrier: all N handled */

    json_t *r1 = conn_list(ctl);
    json_t *pub = find_kind(r1, "unix", 0);
    ck_assert_ptr_nonnull(pub);
    ck_assert_int_eq(fb_e2e_jint(pub, "uid"), (long long)getuid());
    ck_assert_int_eq(fb_e2e_jint(pub, "pid"), (long long)getpid());
    ck_assert(json_is_null(json_object_get(pub, "peer")));
    ck_assert(json_is_null(json_object_get(pub, "name")));
    ck_assert_int_eq(fb_e2e_jint(pub, "frames_in"), N + 1);
    ck_assert_int_eq(fb_e2e_jint(pub, "bytes_in"), (long long)b.len);
    ck_assert_int_eq(fb_e2e_jint(pub, "frames_out"), 2); /* HELLO, the PING's ACK */
    ck_assert_int_gt(fb_e2e_jint(pub, "bytes_out"), 0);
    ck_assert_int_eq(fb_e2e_jint(pub, "inflight"), 0);
    ck_assert(json_is_false(json_object_get(pub, "paused")));
    long long w = fb_e2e_jint(pub, "worker");
    ck_assert(w == 0 || w == 1);
    ck_assert_int_ge(fb_e2e_jint(pub, "since_s"), 0);
    long long pub_id = fb_e2e_jint(pub, "id");
    ck_assert_int_ne(pub_id, ctl_id);
    ck_assert_int_eq(fb_e2e_jint(r1, "total"), 2);
    ck_assert(json_is_false(json_object_get(r1, "truncated")));

    /* Ids are stable: the same connections have the same ids next time,
     * and the control connection counts the requests it sent. */
    json_t *r2 = conn_list(ctl);
    json_t *pub2 = find_int(r2, "id", pub_id);
    json_t *me2 = find_int(r2, "id", ctl_id);
    ck_assert_ptr_nonnull(pub2);
    ck_assert_ptr_nonnull(me2);
    ck_assert_str_eq(json_string_value(json_object_get(pub2, "kind")), "unix");
    ck_assert_str_eq(json_string_value(json_object_get(me2, "kind")), "control");
    ck_assert_int_eq(fb_e2e_jint(me2, "frames_in"), fb_e2e_jint(me, "frames_in") + 2);

    /* A closed connection goes from the list (the daemon sees the EOF
     * on its own time: looked for until a generous deadline). */
    fb_e2e_raw_close(r);
    json_t *r3 = NULL;
    for (uint64_t t0 = fb_e2e_now_ms(); fb_e2e_now_ms() - t0 < 10000;) {
        json_decref(r3);
        r3 = conn_list(ctl);
        if (!find_int(r3, "id", pub_id))
            break;
        usleep(20000);
    }
    ck_assert_msg(!find_int(r3, "id", pub_id), "closed connection still listed");
    ck_assert_ptr_nonnull(find_int(r3, "id", ctl_id));

    /* A new connection gets a new id, never an old one. */
    struct fidbus_client *c2 = fb_e2e_connect(t);
    fb_e2e_ping(c2);
    json_t *r4 = conn_list(ctl);
    json_t *pub3 = find_kind(r4, "unix", 0);
    ck_assert_ptr_nonnull(pub3);
    ck_assert_int_gt(fb_e2e_jint(pub3, "id"), pub_id);
    fidbus_client_close(c2);

    json_decref(r0);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    json_decref(r4);
    fidbus_buf_free(&b);
    fidbus_client_close(ctl);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_conns_tcp_name)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config_tcp_key(t, NULL, KEY, 0600, COUNT_ALL);
    fb_e2e_start(t);
    struct fidbus_client_opts opts = {
        .name = "conns-e2e",
        .key = (const uint8_t *)KEY,
        .key_len = strlen(KEY),
    };
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, t->tcp_addr, &opts);
    ck_assert_msg(rc == 0, "connect with the key: %s", fidbus_strerror(rc));
    fb_e2e_publish_n(c, "conns.tcp", 5);
    fb_e2e_ping(c);

    struct sockaddr_in me;
    socklen_t len = sizeof me;
    ck_assert_int_eq(getsockname(fidbus_client_fd(c), (struct sockaddr *)&me, &len), 0);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)ntohs(me.sin_port));

    struct fidbus_client *ctl = fb_e2e_connect_control(t, NULL);
    json_t *r = conn_list(ctl);
    json_t *tcp = find_kind(r, "tcp", 0);
    ck_assert_ptr_nonnull(tcp);
    ck_assert_str_eq(json_string_value(json_object_get(tcp, "peer")), want);
    ck_assert_str_eq(json_string_value(json_object_get(tcp, "name")), "conns-e2e");
    ck_assert(json_is_null(json_object_get(tcp, "uid")));
    ck_assert(json_is_null(json_object_get(tcp, "pid")));
    /* AUTH, the handshake's PING (lib/client_request.c), 5 events, PING */
    ck_assert_int_eq(fb_e2e_jint(tcp, "frames_in"), 1 + 1 + 5 + 1);
    long long tcp_id = fb_e2e_jint(tcp, "id");
    json_decref(r);

    /* A long name is kept to 64 bytes, cut between characters: 40 "é"
     * (80 bytes) become 32. */
    char longname[128] = "", want_name[128] = "";
    for (int i = 0; i < 40; i++)
        strcat(longname, "\xc3\xa9");
    for (int i = 0; i < 32; i++)
        strcat(want_name, "\xc3\xa9");
    opts.name = longname;
    struct fidbus_client *c2 = NULL;
    rc = fidbus_client_connect(&c2, t->tcp_addr, &opts);
    ck_assert_msg(rc == 0, "connect: %s", fidbus_strerror(rc));
    r = conn_list(ctl);
    json_t *tcp2 = find_kind(r, "tcp", tcp_id);
    ck_assert_ptr_nonnull(tcp2);
    ck_assert_str_eq(json_string_value(json_object_get(tcp2, "name")), want_name);
    json_decref(r);
    fidbus_client_close(c2);
    fidbus_client_close(ctl);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A connection held back (max_inflight reached while the gate is shut):
 * inflight and paused say so; opening the gate lets everything through. */
START_TEST(test_e2e_conns_paused)
{
    struct fb_e2e_opts o = {.workers = 1, .blocking_threads = 2};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("gate") "gate = @D@/open\n"
                                        "[route g]\nevent = g.*\nto = test.gate\n"
                                        "[limits]\nmax_inflight = 4\n");
    struct fidbus_client *ctl = fb_e2e_connect_control(t, NULL);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    enum { N = 10 };
    for (uint64_t s = 1; s <= N; s++)
        fb_e2e_raw_publish(r, s, true, "g.x");
    json_t *l = NULL, *c = NULL;
    for (uint64_t t0 = fb_e2e_now_ms(); fb_e2e_now_ms() - t0 < 10000;) {
        json_decref(l);
        l = conn_list(ctl);
        c = find_kind(l, "unix", 0);
        if (c && json_is_true(json_object_get(c, "paused")))
            break;
        usleep(20000);
    }
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(json_is_true(json_object_get(c, "paused")), "never paused");
    ck_assert_int_eq(fb_e2e_jint(c, "inflight"), 4);
    json_decref(l);

    fclose(fopen(fb_e2e_file(t, "open"), "w"));
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(fb_e2e_raw_recv(r, 10000), 1);
        ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_ACK);
    }
    fb_e2e_raw_ping(r, N + 1);
    fb_e2e_raw_expect_ack(r, N + 1, 0);
    l = conn_list(ctl);
    c = find_kind(l, "unix", 0);
    ck_assert(json_is_false(json_object_get(c, "paused")));
    ck_assert_int_eq(fb_e2e_jint(c, "inflight"), 0);
    ck_assert_int_eq(fb_e2e_jint(c, "frames_in"), N + 1);
    json_decref(l);
    fb_e2e_raw_close(r);
    fidbus_client_close(ctl);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A worker stuck in a long inline handler does not answer in time: the
 * list comes back after the bounded wait without its connections, says
 * so, and once the worker is free again (its late answer dropped) the
 * list is whole. */
START_TEST(test_e2e_conns_stuck_worker)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("spin") "spin_us = 4000000\n"
                                        "[route s]\nevent = s.*\nto = test.spin\n");
    struct fidbus_client *ctl = fb_e2e_connect_control(t, NULL);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_publish(r, 1, false, "s.x");
    /* The worker reads the event on its own time: ask until it is busy. */
    json_t *l = NULL;
    uint64_t t0 = fb_e2e_now_ms();
    for (;;) {
        l = fb_e2e_ok(ctl, "conn.list", NULL);
        if (fb_e2e_jint(l, "missing_workers") == 1)
            break;
        ck_assert_msg(fb_e2e_now_ms() - t0 < 5000, "the worker always answered");
        json_decref(l);
    }
    ck_assert_uint_ge(fb_e2e_now_ms() - t0, 1900); /* it waited its 2 s */
    ck_assert_ptr_null(find_kind(l, "unix", 0));
    ck_assert_ptr_nonnull(find_kind(l, "control", 0));
    json_decref(l);
    /* Free again (the spin is 4 s): the whole list, the event counted. */
    json_t *c = NULL;
    for (t0 = fb_e2e_now_ms(); fb_e2e_now_ms() - t0 < 15000;) {
        l = fb_e2e_ok(ctl, "conn.list", NULL);
        if (fb_e2e_jint(l, "missing_workers") == 0)
            break;
        json_decref(l);
        l = NULL;
        usleep(50000);
    }
    ck_assert_ptr_nonnull(l);
    c = find_kind(l, "unix", 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(fb_e2e_jint(c, "frames_in"), 1);
    json_decref(l);
    fb_e2e_raw_ping(r, 2);
    fb_e2e_raw_expect_ack(r, 2, 0);
    fb_e2e_raw_close(r);
    fidbus_client_close(ctl);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Hundreds of connections: all listed under the default max_reply, and
 * a small max_reply cuts the list (oldest first) and says so. */
static void many(const char *control_extra, bool cut)
{
    enum { N = 300 };
    struct fb_e2e_opts o = {.workers = 2, .control_extra = control_extra};
    struct fb_e2e *t = fb_e2e_up(&o, COUNT_ALL "[limits]\nmax_connections_per_uid = 0\n");
    struct fb_e2e_raw *r[N];
    for (int i = 0; i < N; i++) {
        r[i] = fb_e2e_raw_unix(t);
        fb_e2e_raw_hello(r[i]); /* the daemon has it once HELLO came */
    }
    struct fidbus_client *ctl = fb_e2e_connect_control(t, NULL);
    json_t *l = conn_list(ctl);
    json_t *conns = json_object_get(l, "connections");
    ck_assert_int_eq(fb_e2e_jint(l, "total"), N + 1);
    if (cut) {
        ck_assert(json_is_true(json_object_get(l, "truncated")));
        ck_assert_int_lt(json_array_size(conns), N);
        ck_assert_int_gt(json_array_size(conns), 0);
    } else {
        ck_assert(json_is_false(json_object_get(l, "truncated")));
        ck_assert_int_eq(json_array_size(conns), N + 1);
    }
    /* Unique, in increasing order. */
    long long prev = 0;
    size_t i;
    json_t *c;
    json_array_foreach(conns, i, c)
    {
        ck_assert_int_gt(fb_e2e_jint(c, "id"), prev);
        prev = fb_e2e_jint(c, "id");
    }
    json_decref(l);
    fidbus_client_close(ctl);
    for (int k = 0; k < N; k++)
        fb_e2e_raw_close(r[k]);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}

START_TEST(test_e2e_conns_many)
{
    many(NULL, false);
    many("max_reply = 65536\n", true);
}
END_TEST

/* ------------------------------------------------------ fidbusctl conn */

START_TEST(test_e2e_conns_cli)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_n(c, "conns.cli", 3);
    fb_e2e_ping(c);

    char *out = fb_e2e_ctl(t, 0, NULL, "conn", "list", "--json", NULL);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(json_is_object(j), "conn list --json: %s: %s", e.text, out);
    json_t *u = find_kind(j, "unix", 0);
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(fb_e2e_jint(u, "frames_in"), 4);
    ck_assert_int_eq(fb_e2e_jint(u, "pid"), (long long)getpid());
    json_t *me = find_kind(j, "control", 0);
    ck_assert_ptr_nonnull(me);
    ck_assert_int_ne(fb_e2e_jint(me, "pid"), (long long)getpid()); /* fidbusctl's */
    json_decref(j);
    free(out);

    out = fb_e2e_ctl(t, 0, NULL, "conn", "list", NULL);
    ck_assert_msg(strstr(out, "ID") && strstr(out, "KIND") && strstr(out, "FRAMES_IN") &&
                      strstr(out, "PAUSED"),
                  "no header: %s", out);
    ck_assert_msg(strstr(out, "unix") && strstr(out, "control"), "rows: %s", out);
    free(out);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------------ top */

/* clang-format off */
#define TOP_CONF                                                                         \
    FB_E2E_LOG FB_E2E_COUNT                                                              \
    "[route busy]\nevent = top.busy\nto = fidbus.count@1.0.0\n"                          \
    "[route idle]\nevent = top.idle\nto = fidbus.log@1.0.0\n"
/* clang-format on */

/* --once with stdout a pipe: one plain block with every route and
 * function by name, the idle ones included, and the connection gauges;
 * it ends on its own. */
START_TEST(test_e2e_conns_top_once)
{
    struct fb_e2e *t = fb_e2e_up(NULL, TOP_CONF);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_n(c, "top.busy", 20);
    fb_e2e_ping(c);
    uint64_t t0 = fb_e2e_now_ms();
    char *out = fb_e2e_ctl(t, 0, NULL, "top", "--once", NULL);
    /* rates need two samples an interval (1 s) apart */
    ck_assert_uint_ge(fb_e2e_now_ms() - t0, 900);
    const char *want[] = {"events in",
                          "dispatched",
                          "errors",
                          "connections",
                          "paused",
                          "pool queued",
                          "ROUTE",
                          "busy",
                          "idle",
                          "FUNCTION",
                          "fidbus.count@1.0.0",
                          "fidbus.log@1.0.0",
                          "P99",
                          "REMOTE MEMBERS",
                          "CONN",
                          "control",
                          "unix"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]), "top --once lacks '%s':\n%s", want[i], out);
    ck_assert_msg(!strchr(out, '\033'), "escape sequences in plain output:\n%s", out);
    /* one block: the header line once */
    ck_assert_ptr_eq(strstr(strstr(out, "FUNCTION") + 1, "FUNCTION"), NULL);
    free(out);
    char *err = NULL;
    out = fb_e2e_ctl(t, 2, &err, "top", "--bogus", NULL);
    ck_assert_msg(strstr(err, "bogus"), "%s", err);
    free(out);
    free(err);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Interactive on a pty (tests/e2e/top_pty.py): 'q', SIGINT and SIGTERM
 * each end it with status 0 and the terminal as it was; on a pipe it
 * prints plain blocks, one a second, until SIGTERM. */
START_TEST(test_e2e_conns_top_pty)
{
    struct fb_e2e *t = fb_e2e_up(NULL, TOP_CONF);
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/e2e/top_pty.py",
             getenv("FIDBUS_SOURCE_DIR"));
    const char *hows[] = {"q", "sigint", "sigterm", "pipe"};
    for (size_t i = 0; i < 4; i++) {
        const char *argv[] = {
            "/usr/bin/python3", script,  fb_e2e_built("daemon/fidbusctl"),
            t->control,         hows[i], NULL};
        char *out = NULL, *err = NULL;
        int st = fb_e2e_run(t, argv, &out, &err);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "top_pty %s: %s %s", hows[i],
                      out, err);
        ck_assert_msg(strstr(out, "ok"), "top_pty %s: %s", hows[i], out);
        free(out);
        free(err);
    }
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("e2e_conns");
    TCase *tc = tcase_create("conns");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_conns_unix_and_control);
    tcase_add_test(tc, test_e2e_conns_tcp_name);
    tcase_add_test(tc, test_e2e_conns_paused);
    tcase_add_test(tc, test_e2e_conns_stuck_worker);
    tcase_add_test(tc, test_e2e_conns_many);
    tcase_add_test(tc, test_e2e_conns_cli);
    tcase_add_test(tc, test_e2e_conns_top_once);
    tcase_add_test(tc, test_e2e_conns_top_pty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(suite());
}
