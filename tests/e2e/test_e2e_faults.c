/*
 * End-to-end tests of handler faults (ctest: e2e.faults; README "Handler faults"):
 *
 *   - handler_deadline_ms: a blocking call that runs past it is logged
 *     once at warn (funcID, canonical name, how long) and counted (`late`
 *     per function in stats, and the total), and its result still answers
 *     the acked PUBLISH: ACK for a success, ERROR HANDLER_FAILED for a
 *     failure; a call within the deadline is not counted;
 *   - quarantine_after: N consecutive failures (inline or blocking)
 *     quarantine a function: func.list and stats show it, further events
 *     skip it (stats `calls` does not move, `skipped` does; an acked
 *     PUBLISH gets HANDLER_FAILED with result 0), a success in between
 *     resets the run; `fidbusctl func release ID` brings it back;
 *     func.release answers NOT_FOUND / INVALID for unknown / bad ids;
 *   - a split route whose pick for a key is quarantined skips that key's
 *     events instead of moving them to another target;
 *   - a blocking call hung past the deadline delays neither SIGTERM nor
 *     plugin unload for longer than the deadline (each says it stopped
 *     waiting; the plugin stays loaded but detached);
 *   - bad values for the two keys stop the daemon at start.
 *
 * Handlers are tests/plugins/flaky.so (fails on the tag fail=1, the
 * blocking one sleeps delay_ms first) and slow.so. Control goes through
 * fidbusctl (--json results parsed with jansson). The harness writes
 * [daemon] itself, so the tests add their keys to its config text.
 */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <fidbus/funcid.h>

#include "e2e/harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

#define FLAKY_FN "test.flaky@1.0.0"
#define FLAKY_SLOW_FN "test.flaky_slow@1.0.0"
#define SLOW_FN "test.slow@1.0.0"

/* The harness's config with `daemon_keys` added to its [daemon] section. */
static struct fb_e2e *up_with(const char *daemon_keys, const char *sections)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, sections);
    char *text = fb_e2e_read(t->conf, NULL);
    ck_assert_ptr_nonnull(text);
    char *at = strstr(text, "[daemon]\n");
    ck_assert_ptr_nonnull(at);
    at += strlen("[daemon]\n");
    size_t need = strlen(text) + strlen(daemon_keys) + 1;
    char *out = malloc(need);
    ck_assert_ptr_nonnull(out);
    snprintf(out, need, "%.*s%s%s", (int)(at - text), text, daemon_keys, at);
    FILE *f = fopen(t->conf, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(out, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    free(out);
    free(text);
    return t;
}

static void hex_id(const char *canonical, char out[FIDBUS_FUNCID_HEX])
{
    fidbus_funcid_hex(fidbus_funcid(canonical), out);
}

/* fidbusctl --socket CONTROL ARGS... (NULL-terminated): asserts the exit
 * code, returns stdout (malloc'd); stderr in *err when err != NULL. */
static char *ctl(struct fb_e2e *t, int code, char **err, ...)
{
    const char *argv[16] = {fb_e2e_built("daemon/fidbusctl"), "--socket", t->control};
    size_t n = 3;
    va_list ap;
    va_start(ap, err);
    for (const char *a; (a = va_arg(ap, const char *));) {
        ck_assert_uint_lt(n, 15);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *e = NULL;
    int st = fb_e2e_run(t, argv, &out, &e);
    ck_assert_msg(EXIT_IS(st, code),
                  "fidbusctl %s %s: status 0x%x, want %d; out %s err %s", argv[3],
                  n > 4 ? argv[4] : "", st, code, out, e);
    if (err)
        *err = e;
    else
        free(e);
    return out;
}

/* fidbusctl --json COMMAND... as a JSON object (asserts success). */
static json_t *ctl_json(struct fb_e2e *t, const char *a, const char *b, const char *c)
{
    char *out = ctl(t, 0, NULL, "--json", a, b, c, (const char *)NULL);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(json_is_object(j), "fidbusctl --json %s: not a JSON object: %s", a,
                  out);
    free(out);
    return j;
}

/* stats.functions[canonical's id][key] as an integer (asserts it is one). */
static long long fn_stat(struct fb_e2e *t, const char *canonical, const char *key)
{
    char id[FIDBUS_FUNCID_HEX];
    hex_id(canonical, id);
    json_t *s = ctl_json(t, "stats", NULL, NULL);
    json_t *v =
        json_object_get(json_object_get(json_object_get(s, "functions"), id), key);
    ck_assert_msg(json_is_integer(v), "stats functions.%s.%s missing", canonical, key);
    long long n = json_integer_value(v);
    json_decref(s);
    return n;
}

/* stats and func.list agree on whether canonical is quarantined; returns it. */
static bool quarantined(struct fb_e2e *t, const char *canonical)
{
    char id[FIDBUS_FUNCID_HEX];
    hex_id(canonical, id);
    json_t *s = ctl_json(t, "stats", NULL, NULL);
    json_t *q = json_object_get(json_object_get(json_object_get(s, "functions"), id),
                                "quarantined");
    ck_assert_msg(json_is_boolean(q), "stats: %s has no quarantined", canonical);
    bool in_stats = json_is_true(q);
    json_decref(s);

    json_t *l = ctl_json(t, "func", "list", NULL);
    size_t i;
    json_t *f;
    int found = -1;
    json_array_foreach(json_object_get(l, "functions"), i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "id")), id) == 0) {
            json_t *fq = json_object_get(f, "quarantined");
            ck_assert_msg(json_is_boolean(fq), "func.list: %s has no quarantined", id);
            found = json_is_true(fq);
        }
    }
    json_decref(l);
    ck_assert_msg(found >= 0, "func.list has no %s", canonical);
    ck_assert_msg((bool)found == in_stats, "%s: func.list says %d, stats %d", canonical,
                  found, in_stats);
    return in_stats;
}

/* An acked publish; returns the ACK result, or -(code) on ERROR with the
 * success count in *res. */
static long long pub(struct fidbus_client *bus, const char *event, bool fail,
                     uint64_t *res)
{
    struct fidbus_tag tag = {"fail", "1"};
    uint64_t r = 0;
    int rc =
        fidbus_publish_ack(bus, event, fail ? &tag : NULL, fail ? 1 : 0, NULL, 0, &r);
    if (res)
        *res = r;
    if (rc == 0)
        return (long long)r;
    ck_assert_msg(fidbus_error_code(rc), "publish %s: %s", event, fidbus_strerror(rc));
    return -fidbus_error_code(rc);
}

static size_t count_lines(const char *text, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char *line = strndup(l, len);
        if (strstr(line, a) && (!b || strstr(line, b)))
            n++;
        free(line);
        l = e ? e + 1 : l + len;
    }
    return n;
}

/* ---------------------------------------------------------- deadline */

START_TEST(test_e2e_faults_deadline)
{
    /* 100 ms deadline; flaky_slow sleeps 400 ms, slow.so 0 ms. */
    struct fb_e2e *t =
        up_with("handler_deadline_ms = 100\n",
                FB_E2E_TP("flaky") "delay_ms = 400\n" FB_E2E_TP(
                    "slow") "delay_ms = 0\n"
                            "[route late]\nevent = late.*\nto = " FLAKY_SLOW_FN "\n"
                            "[route quick]\nevent = quick.*\nto = " SLOW_FN "\n");
    fb_e2e_start(t);
    struct fidbus_client *bus = fb_e2e_connect(t);

    /* Within the deadline: ACK, not late. */
    ck_assert_int_eq(pub(bus, "quick.a", false, NULL), 1);
    /* Past it: the late results still answer, each as if on time. */
    ck_assert_int_eq(pub(bus, "late.ok", false, NULL), 1);
    uint64_t res = 99;
    ck_assert_int_eq(pub(bus, "late.bad", true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(res, 0);

    ck_assert_int_eq(fn_stat(t, FLAKY_SLOW_FN, "late"), 2);
    ck_assert_int_eq(fn_stat(t, FLAKY_SLOW_FN, "calls"), 2);
    ck_assert_int_eq(fn_stat(t, FLAKY_SLOW_FN, "errors"), 1);
    ck_assert_int_eq(fn_stat(t, SLOW_FN, "late"), 0);
    json_t *s = ctl_json(t, "stats", NULL, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "late")), 2);
    json_decref(s);

    /* Logged once per late call, at warn, naming the function and the
     * deadline (the flag is set before the call's answer is sent). */
    char id[FIDBUS_FUNCID_HEX];
    hex_id(FLAKY_SLOW_FN, id);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(count_lines(err, FLAKY_SLOW_FN, "past handler_deadline_ms = 100") == 2,
                  "expected 2 deadline lines; stderr:\n%s", err);
    ck_assert_msg(count_lines(err, id, "past handler_deadline_ms") == 2, "no funcID: %s",
                  err);
    ck_assert_msg(count_lines(err, "warn", "past handler_deadline_ms") == 2 ||
                      count_lines(err, "WARN", "past handler_deadline_ms") == 2,
                  "not at warn: %s", err);
    ck_assert_msg(count_lines(err, SLOW_FN, "handler_deadline_ms") == 0, "%s", err);
    free(err);

    /* Prometheus: the total and the per-function counter. */
    char *prom = ctl(t, 0, NULL, "stats", "--prometheus", (const char *)NULL);
    ck_assert_msg(strstr(prom, "\nfidbus_handler_late_total 2\n"), "%s", prom);
    ck_assert_msg(count_lines(prom, "fidbus_function_late_total{", FLAKY_SLOW_FN) == 1,
                  "%s", prom);
    ck_assert_msg(strstr(prom, "fidbus_function_quarantined{"), "%s", prom);
    free(prom);

    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ----------------------------------------------- a hung blocking call */

/* slow.so sleeping 60 s, a 300 ms deadline, a route to it. */
#define HUNG_SECTIONS                                                                    \
    FB_E2E_TP("slow")                                                                    \
    "delay_ms = 60000\nfile = @D@/slow.txt\n"                                            \
    "[route hang]\nevent = hang.x\nto = " SLOW_FN "\n"

/* An acked hang.x on a raw connection, and the wait until the deadline
 * watchdog has seen its call still running. */
static struct fb_e2e_raw *hang_one(struct fb_e2e *t)
{
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_publish(r, 7, true, "hang.x");
    ck_assert_msg(fb_e2e_wait_contains(t->errfile, "still running after", 10000),
                  "the hung call was never flagged late");
    return r;
}

/*
 * SIGTERM with a blocking call hung for 60 s: the daemon waits for it up
 * to handler_deadline_ms (300 ms here), then says it stopped waiting,
 * answers the acked publish, and exits 0 with the plugin left loaded --
 * within the harness's 10 s, far from the 60 s the call would take.
 */
START_TEST(test_e2e_faults_stop_hung_call)
{
    struct fb_e2e *t = up_with("handler_deadline_ms = 300\n", HUNG_SECTIONS);
    fb_e2e_start(t);
    struct fb_e2e_raw *r = hang_one(t);

    uint64_t t0 = fb_e2e_now_ms();
    int st = fb_e2e_stop(t);
    uint64_t took = fb_e2e_now_ms() - t0;
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x; stderr:\n%s", st,
                  err);
    fprintf(stderr, "test_e2e_faults_stop_hung_call: SIGTERM to exit %llu ms\n",
            (unsigned long long)took);
    ck_assert_msg(took < 5000, "SIGTERM took %llu ms with a hung call; stderr:\n%s",
                  (unsigned long long)took, err);
    ck_assert_msg(count_lines(err, "stopped waiting for a blocking call to " SLOW_FN,
                              "handler_deadline_ms = 300") == 1,
                  "no line saying shutdown stopped waiting; stderr:\n%s", err);
    ck_assert_msg(count_lines(err, "plugin slow", "left loaded") == 1, "%s", err);
    free(err);

    /* The acked publish was answered before the close. */
    const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, FIDBUS_HANDLER_FAILED, 7);
    ck_assert_msg(
        m->message.len && memmem(m->message.ptr, m->message.len, "stopped waiting", 15),
        "ERROR message: %.*s", (int)m->message.len, (const char *)m->message.ptr);
    fb_e2e_raw_close(r);
    char *slow = fb_e2e_read(fb_e2e_file(t, "slow.txt"), NULL);
    ck_assert_msg(!slow, "the hung call finished: %s", slow);
    fb_e2e_free(t);
}
END_TEST

/*
 * plugin unload (after route del) with its blocking call hung: the unload
 * waits up to handler_deadline_ms, then goes on and says so. The plugin's
 * code is still running, so it is detached (no functions, no routes) but
 * not closed; the same file loads again as a new instance at once, and
 * shutdown does not wait for the old call either.
 */
START_TEST(test_e2e_faults_unload_hung_call)
{
    struct fb_e2e *t = up_with("handler_deadline_ms = 300\n", HUNG_SECTIONS);
    fb_e2e_start(t);
    struct fb_e2e_raw *r = hang_one(t);

    free(ctl(t, 0, NULL, "route", "del", "hang", (const char *)NULL));
    uint64_t t0 = fb_e2e_now_ms();
    free(ctl(t, 0, NULL, "plugin", "unload", "slow", (const char *)NULL));
    uint64_t took = fb_e2e_now_ms() - t0;
    char *err = fb_e2e_stderr(t);
    fprintf(stderr, "test_e2e_faults_unload_hung_call: plugin unload %llu ms\n",
            (unsigned long long)took);
    ck_assert_msg(took < 5000, "plugin unload took %llu ms with a hung call",
                  (unsigned long long)took);
    ck_assert_msg(count_lines(err, "plugin slow: stopped waiting for 1 blocking call",
                              "detached but left loaded") == 1,
                  "no line saying the unload stopped waiting; stderr:\n%s", err);
    free(err);
    char *list = ctl(t, 0, NULL, "plugin", "list", (const char *)NULL);
    ck_assert_msg(!strstr(list, "slow"), "still listed: %s", list);
    free(list);

    /* A new instance of the same file, and it works. */
    char cfg[64];
    snprintf(cfg, sizeof cfg, "{\"delay_ms\": \"0\"}");
    free(ctl(t, 0, NULL, "plugin", "load", fb_e2e_built("tests/plugins/slow.so"),
             "--name", "slow", "--config", cfg, (const char *)NULL));
    free(ctl(t, 0, NULL, "route", "add", "quick", "quick.x", "--to", SLOW_FN,
             (const char *)NULL));
    struct fidbus_client *bus = fb_e2e_connect(t);
    fb_e2e_publish_ack(bus, "quick.x", 1);
    fidbus_client_close(bus);

    uint64_t t1 = fb_e2e_now_ms();
    int st = fb_e2e_stop(t);
    err = fb_e2e_stderr(t);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x; %s", st, err);
    ck_assert_msg(fb_e2e_now_ms() - t1 < 5000, "SIGTERM took %llu ms; %s",
                  (unsigned long long)(fb_e2e_now_ms() - t1), err);
    ck_assert_msg(count_lines(err, "plugin slow", "still running at exit") == 1, "%s",
                  err);
    free(err);
    fb_e2e_raw_close(r);
    fb_e2e_free(t);
}
END_TEST

/* Deadline 0 switches it off: a 300 ms call is not counted. */
START_TEST(test_e2e_faults_deadline_off)
{
    struct fb_e2e *t = up_with(
        "handler_deadline_ms = 0\n",
        FB_E2E_TP("flaky") "delay_ms = 300\n"
                           "[route late]\nevent = late.*\nto = " FLAKY_SLOW_FN "\n");
    fb_e2e_start(t);
    struct fidbus_client *bus = fb_e2e_connect(t);
    ck_assert_int_eq(pub(bus, "late.ok", false, NULL), 1);
    ck_assert_int_eq(fn_stat(t, FLAKY_SLOW_FN, "late"), 0);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(!strstr(err, "handler_deadline_ms"), "%s", err);
    free(err);
    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* -------------------------------------------------------- quarantine */

#define QUAR_SECTIONS                                                                    \
    FB_E2E_TP("flaky")                                                                   \
    "[route q]\nevent = q.*\nto = " FLAKY_FN "\n"                                        \
    "[route b]\nevent = b.*\nto = " FLAKY_SLOW_FN "\n"

/* Three failures in a row quarantine `fn` (routed by `event`); asserts the
 * state after each step. */
static void quarantine(struct fb_e2e *t, struct fidbus_client *bus, const char *event,
                       const char *fn)
{
    uint64_t res;
    /* Two failures, a success: the run starts over. */
    ck_assert_int_eq(pub(bus, event, true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_int_eq(pub(bus, event, true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_int_eq(pub(bus, event, false, NULL), 1);
    ck_assert(!quarantined(t, fn));
    ck_assert_int_eq(pub(bus, event, true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_int_eq(pub(bus, event, true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert(!quarantined(t, fn));
    ck_assert_int_eq(pub(bus, event, true, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(res, 0);
    ck_assert(quarantined(t, fn));
    ck_assert_int_eq(fn_stat(t, fn, "calls"), 6);
    ck_assert_int_eq(fn_stat(t, fn, "errors"), 5);
    ck_assert_int_eq(fn_stat(t, fn, "skipped"), 0);

    /* Skipped now: an event that would succeed is refused, acked or not,
     * and the handler is not called. */
    ck_assert_int_eq(pub(bus, event, false, &res), -FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(res, 0);
    const char *msg = fidbus_client_last_error(bus);
    ck_assert_msg(msg && strstr(msg, "failed"), "message: %s", msg);
    fb_e2e_publish_n(bus, event, 5);
    fb_e2e_ping(bus);
    ck_assert_int_eq(fn_stat(t, fn, "calls"), 6);
    ck_assert_int_eq(fn_stat(t, fn, "skipped"), 6);

    char *err = fb_e2e_stderr(t);
    ck_assert_msg(count_lines(err, fn, "quarantined after 3 consecutive failures") == 1,
                  "expected one quarantine line for %s:\n%s", fn, err);
    free(err);
}

START_TEST(test_e2e_faults_quarantine)
{
    struct fb_e2e *t = up_with("quarantine_after = 3\n", QUAR_SECTIONS);
    fb_e2e_start(t);
    struct fidbus_client *bus = fb_e2e_connect(t);

    quarantine(t, bus, "q.x", FLAKY_FN);
    /* The other function is untouched; then it goes the same way on the
     * blocking path. */
    ck_assert(!quarantined(t, FLAKY_SLOW_FN));
    quarantine(t, bus, "b.x", FLAKY_SLOW_FN);

    /* The tables show it. */
    char *list = ctl(t, 0, NULL, "func", "list", (const char *)NULL);
    ck_assert_msg(strstr(list, "QUARANTINED") && count_lines(list, FLAKY_FN, "yes") == 1,
                  "%s", list);
    free(list);
    char *prom = ctl(t, 0, NULL, "stats", "--prometheus", (const char *)NULL);
    ck_assert_msg(count_lines(prom, "fidbus_function_quarantined{", "} 1") == 2, "%s",
                  prom);
    ck_assert_msg(count_lines(prom, "fidbus_function_skipped_total{", "} 6") == 2, "%s",
                  prom);
    free(prom);

    /* Release: called again, and a success answers ACK. */
    char id[FIDBUS_FUNCID_HEX];
    hex_id(FLAKY_FN, id);
    json_t *r = ctl_json(t, "func", "release", id);
    ck_assert_str_eq(json_string_value(json_object_get(r, "id")), id);
    ck_assert(json_is_true(json_object_get(r, "released")));
    json_decref(r);
    ck_assert(!quarantined(t, FLAKY_FN));
    ck_assert(quarantined(t, FLAKY_SLOW_FN));
    ck_assert_int_eq(pub(bus, "q.x", false, NULL), 1);
    ck_assert_int_eq(fn_stat(t, FLAKY_FN, "calls"), 7);
    /* Releasing one that is not quarantined is a no-op. */
    r = ctl_json(t, "func", "release", id);
    ck_assert(json_is_false(json_object_get(r, "released")));
    json_decref(r);
    /* The table form. */
    hex_id(FLAKY_SLOW_FN, id);
    char *out = ctl(t, 0, NULL, "func", "release", id, (const char *)NULL);
    ck_assert_msg(count_lines(out, "released", "yes") == 1, "%s", out);
    free(out);
    ck_assert_int_eq(pub(bus, "b.x", false, NULL), 1);
    ck_assert_int_eq(fn_stat(t, FLAKY_SLOW_FN, "calls"), 7);

    /* Refusals. */
    char *err = NULL;
    out = ctl(t, 1, &err, "func", "release", "0000000000000001", (const char *)NULL);
    ck_assert_msg(strstr(err, "NOT_FOUND"), "%s", err);
    free(out);
    free(err);
    out = ctl(t, 1, &err, "func", "release", "xyz", (const char *)NULL);
    ck_assert_msg(strstr(err, "INVALID"), "%s", err);
    free(out);
    free(err);
    out = ctl(t, 1, &err, "func", "release", "00000000000000011", (const char *)NULL);
    ck_assert_msg(strstr(err, "INVALID"), "%s", err);
    free(out);
    free(err);

    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A split route whose pick for a key is quarantined: that key's events
 * are skipped (HANDLER_FAILED, result 0), not moved to the other target;
 * keys that pick the other target are unaffected. */
START_TEST(test_e2e_faults_quarantine_split)
{
    struct fb_e2e *t =
        up_with("quarantine_after = 3\n", FB_E2E_COUNT QUAR_SECTIONS
                "[route sp]\nevent = sp.x\nto = " FLAKY_FN
                ":1, fidbus.count@1.0.0:1\nmode = split\nsplit_by = user\n");
    fb_e2e_start(t);
    struct fidbus_client *bus = fb_e2e_connect(t);
    char flaky[FIDBUS_FUNCID_HEX];
    hex_id(FLAKY_FN, flaky);
    /* One user that picks flaky and one that picks count (route test). */
    char to_flaky[16] = "", to_count[16] = "";
    for (int u = 0; u < 200 && !(to_flaky[0] && to_count[0]); u++) {
        char tag[32], user[16];
        snprintf(user, sizeof user, "u%d", u);
        snprintf(tag, sizeof tag, "user=%s", user);
        char *out = ctl(t, 0, NULL, "--json", "route", "test", "sp.x", "--tag", tag,
                        (const char *)NULL);
        bool picks_flaky = strstr(out, flaky) != NULL;
        snprintf(picks_flaky ? to_flaky : to_count, 16, "%s", user);
        free(out);
    }
    ck_assert_msg(to_flaky[0] && to_count[0], "no user for one of the targets");

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pub(bus, "q.x", true, NULL), -FIDBUS_HANDLER_FAILED);
    ck_assert(quarantined(t, FLAKY_FN));

    struct fidbus_tag tf = {"user", to_flaky}, tc = {"user", to_count};
    uint64_t res = 99;
    int rc = fidbus_publish_ack(bus, "sp.x", &tf, 1, NULL, 0, &res);
    ck_assert_int_eq(fidbus_error_code(rc), FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(res, 0);
    const char *why = fidbus_client_last_error(bus);
    ck_assert_msg(why && strstr(why, "1 skipped: function quarantined"), "%s", why);
    rc = fidbus_publish_ack(bus, "sp.x", &tc, 1, NULL, 0, &res);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(res, 1);
    ck_assert_int_eq(fn_stat(t, FLAKY_FN, "calls"), 3);
    ck_assert_int_eq(fn_stat(t, FLAKY_FN, "skipped"), 1);
    ck_assert_int_eq(fn_stat(t, "fidbus.count@1.0.0", "calls"), 1);

    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Default (quarantine_after = 0): failures never quarantine. */
START_TEST(test_e2e_faults_quarantine_off)
{
    struct fb_e2e *t = up_with("", QUAR_SECTIONS);
    fb_e2e_start(t);
    struct fidbus_client *bus = fb_e2e_connect(t);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(pub(bus, "q.x", true, NULL), -FIDBUS_HANDLER_FAILED);
    ck_assert(!quarantined(t, FLAKY_FN));
    ck_assert_int_eq(pub(bus, "q.x", false, NULL), 1);
    ck_assert_int_eq(fn_stat(t, FLAKY_FN, "calls"), 21);
    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_faults_bad_config)
{
    static const char *const bad[] = {"handler_deadline_ms = soon\n",
                                      "handler_deadline_ms = -1\n",
                                      "quarantine_after = many\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fb_e2e *t = up_with(bad[i], "");
        double secs;
        int st = fb_e2e_start_fail(t, &secs);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "%s: status 0x%x", bad[i],
                      st);
        char *err = fb_e2e_stderr(t);
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(bad[i], " "), bad[i]);
        ck_assert_msg(strstr(err, key) && strstr(err, "whole number"), "%s: %s", bad[i],
                      err);
        free(err);
        fb_e2e_free(t);
    }
}
END_TEST

static Suite *e2e_faults_suite(void)
{
    Suite *s = suite_create("e2e_faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_faults_deadline);
    tcase_add_test(tc, test_e2e_faults_deadline_off);
    tcase_add_test(tc, test_e2e_faults_stop_hung_call);
    tcase_add_test(tc, test_e2e_faults_unload_hung_call);
    tcase_add_test(tc, test_e2e_faults_quarantine);
    tcase_add_test(tc, test_e2e_faults_quarantine_split);
    tcase_add_test(tc, test_e2e_faults_quarantine_off);
    tcase_add_test(tc, test_e2e_faults_bad_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_faults_suite());
}
