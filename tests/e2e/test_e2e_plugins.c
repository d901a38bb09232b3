/*
 * End-to-end tests of plugins in a real fidbusd (ctest: e2e.plugins).
 *
 * Plugins and routes that must stop the daemon at startup (wrong ABI, no
 * symbol, missing file, a funcID conflict, unknown target, signature
 * mismatch), clean shutdown calling every fini, plugin timers, the
 * republish hop limit and budget, and the README's example plugin (hello.so).
 */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <fidbus/plugin.h>

#include "harness.h"

/* ------------------------------------------------------ refused at start */

struct refuse_case {
    const char *what;
    const char *sections;
    const char *needles[3]; /* one stderr line holds all (any case) */
};

/* clang-format off */
static const struct refuse_case refuse_cases[] = {
    {"wrong ABI", FB_E2E_TP("bad_abi"), {"bad_abi", "abi", NULL}},
    {"no fidbus_plugin symbol", FB_E2E_TP("no_symbol"), {"no_symbol", "fidbus_plugin", NULL}},
    {"missing file", "[plugin ghost]\npath = @D@/nope.so\n", {"ghost", "nope.so", NULL}},
    {"funcID conflict", FB_E2E_LOG FB_E2E_TP("dup"), {"dup", "fidbus.log@1.0.0", NULL}},
    {"route to an unknown function",
     FB_E2E_LOG "[route r_unknown]\nevent = x\nto = nosuch.fn\n", {"r_unknown", NULL}},
    {"signature mismatch",
     FB_E2E_LOG "[route r_sig]\nevent = x\nto = fidbus.log\nsignature = "
                "0000000000000000000000000000000000000000000000000000000000000000\n",
     {"r_sig", NULL}},
};
/* clang-format on */

START_TEST(test_e2e_plugin_refused)
{
    const struct refuse_case *rc = &refuse_cases[_i];
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, rc->sections);
    double secs = 0;
    int st = fb_e2e_start_fail(t, &secs);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1,
                  "%s: fidbusd ended with %s %d, expected exit 1; stderr:\n%s", rc->what,
                  WIFEXITED(st) ? "exit" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), err);
    ck_assert_msg(secs < 5.0, "%s: refusing took %.1f s", rc->what, secs);
    ck_assert_msg(fb_e2e_has_line(err, rc->needles),
                  "%s: no stderr line mentions \"%s\"%s%s; stderr:\n%s", rc->what,
                  rc->needles[0], rc->needles[1] ? " and " : "",
                  rc->needles[1] ? rc->needles[1] : "", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------- shutdown */

/* clang-format off */
static const char shutdown_conf[] =
    FB_E2E_LOG FB_E2E_COUNT FB_E2E_TP("lifecycle") "file = @D@/life.txt\n"
    FB_E2E_TP("slow") "delay_ms = 50\nfile = @D@/slow.txt\n"
    "[route life]\nevent = sd.life\nto = test.life\n"
    "[route slow]\nevent = sd.slow\nto = test.slow\n"
    "[route all]\nevent = sd.*\nto = fidbus.count\n";
/* clang-format on */

/* _i: 0 = SIGTERM, 1 = SIGINT. */
START_TEST(test_e2e_clean_shutdown)
{
    struct fb_e2e *t = fb_e2e_up(NULL, shutdown_conf);
    char *life = fb_e2e_read(fb_e2e_file(t, "life.txt"), NULL);
    ck_assert_msg(life && strcmp(life, "init\n") == 0, "life.txt while running: \"%s\"",
                  life ? life : "(missing)");
    free(life);

    struct fidbus_client *a = fb_e2e_connect(t);
    struct fidbus_client *b = fb_e2e_connect(t);
    fb_e2e_publish_ack(a, "sd.life", 1);
    for (int i = 0; i < 3000; i++) {
        ck_assert_int_eq(fidbus_publish(a, "sd.a", NULL, 0, NULL, 0), 0);
        ck_assert_int_eq(fidbus_publish(b, "sd.b", NULL, 0, NULL, 0), 0);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fidbus_publish(b, "sd.slow", NULL, 0, NULL, 0), 0);
    fb_e2e_ping(a);
    fb_e2e_ping(b);
    ck_assert_uint_eq(fidbus_client_async_errors(a), 0);
    ck_assert_uint_eq(fidbus_client_async_errors(b), 0);

    /* stop with the clients still connected: they owe nothing and are
     * owed nothing, so the daemon has no reason to linger (its stop
     * timeout for clients that do not take their answers is 5 s) */
    uint64_t t0 = fb_e2e_now_ms();
    int st = fb_e2e_stop_signal(t, _i == 0 ? SIGTERM : SIGINT);
    uint64_t took = fb_e2e_now_ms() - t0;
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "fidbusd did not exit 0 on %s; stderr:\n%s", _i ? "SIGINT" : "SIGTERM",
                  err);
    free(err);
    /* below the 5 s linger, with room for a loaded machine */
    ck_assert_msg(took < 4500, "shutdown with idle clients connected took %" PRIu64 " ms",
                  took);
    ck_assert_msg(t->stopping_seen, "no STOPPING=1 on NOTIFY_SOCKET");
    fidbus_client_close(a);
    fidbus_client_close(b);

    life = fb_e2e_read(fb_e2e_file(t, "life.txt"), NULL);
    ck_assert_msg(life && strcmp(life, "init\nfini\n") == 0,
                  "life.txt after exit: \"%s\"", life ? life : "(missing)");
    free(life);
    char *slow = fb_e2e_read(fb_e2e_file(t, "slow.txt"), NULL);
    ck_assert_msg(slow && fb_e2e_lines_with(slow, "sd.slow", -1) == 3, "slow.txt: %s",
                  slow ? slow : "(missing)");
    free(slow);
    char *json = fb_e2e_read(fb_e2e_file(t, "count.json"), NULL);
    ck_assert_msg(json && fb_e2e_json_count(json, "sd.a") == 3000 &&
                      fb_e2e_json_count(json, "sd.b") == 3000 &&
                      fb_e2e_json_count(json, "sd.slow") == -1 &&
                      fb_e2e_json_count(json, "_total") == 6000,
                  "count report: %s", json ? json : "(missing)");
    free(json);
    fb_e2e_free(t);
}
END_TEST

/* --------------------------------------------------------------- timers */

START_TEST(test_e2e_plugin_timer)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_TP("lifecycle")
                                 "file = @D@/life.txt\ntick_ms = 10\n"
                                 "[route life]\nevent = tm.x\nto = test.life\n");
    /* clang-format on */
    const char *path = fb_e2e_file(t, "life.txt");
    ck_assert_msg(fb_e2e_wait_contains(path, "tick\ntick\n", FB_E2E_TIMEOUT_MS),
                  "no two ticks of a 10 ms timer within %d ms", FB_E2E_TIMEOUT_MS);
    fb_e2e_stop_ok(t);
    /* init first, fini last, only ticks between: timers were cancelled
     * before fini and none fired after it */
    char *life = fb_e2e_read(path, NULL);
    ck_assert_ptr_nonnull(life);
    size_t len = strlen(life);
    ck_assert_msg(strncmp(life, "init\n", 5) == 0 && len >= 10 &&
                      strcmp(life + len - 5, "fini\n") == 0,
                  "life.txt: %s", life);
    for (size_t i = 5; i < len - 5; i += 5)
        ck_assert_msg(strncmp(life + i, "tick\n", 5) == 0, "life.txt: %s", life);
    free(life);
    fb_e2e_free(t);
}
END_TEST

/* A plugin loaded at run time: its init runs on the control thread while
 * the main loop goes on. A 0 ms timer it starts must not fire before init
 * has returned (lifecycle.so's init waits 300 ms for it and fails, saying
 * so, if it did). At start-up init runs before the loop, so the load over
 * control is the case that can race. */
START_TEST(test_e2e_plugin_timer_after_init)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "");
    char config[300];
    snprintf(config, sizeof config, "{\"file\": \"%s\", \"init_wait_ms\": \"300\"}",
             fb_e2e_file(t, "life.txt"));
    const char *so = fb_e2e_built("tests/plugins/lifecycle.so");
    char *err = NULL;
    char *out = fb_e2e_ctl(t, 0, &err, "plugin", "load", so, "--config", config, NULL);
    ck_assert_msg(out, "plugin load failed: %s", err ? err : "?");
    free(out);
    free(err);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------- a taken instance name */

/* plugin.load without --name takes the plugin's own name ("lifecycle");
 * another plugin already runs under it: CONFLICT before init, so init
 * and fini are never called and no "loaded"/"unloaded" line is logged. */
START_TEST(test_e2e_plugin_load_taken_name)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[plugin lifecycle]\npath = @B@/plugins/log.so\n"
                                       "file = @D@/log.txt\n"
                                       "[route all]\nevent = *\nto = fidbus.log\n");
    const char *life = fb_e2e_file(t, "life.txt");
    char config[300];
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", life);
    const char *ctl = fb_e2e_built("daemon/fidbusctl");
    const char *so = fb_e2e_built("tests/plugins/lifecycle.so");
    const char *const argv[][8] = {
        {ctl, "--socket", t->control, "plugin", "load", so, NULL},
        {ctl, "--socket", t->control, "plugin", "load", so, "--config", config},
    };
    for (size_t i = 0; i < 2; i++) {
        const char *a[10];
        size_t n = 0;
        for (; n < 8 && argv[i][n]; n++)
            a[n] = argv[i][n];
        a[n] = NULL;
        char *out = NULL, *err = NULL;
        int st = fb_e2e_run(t, a, &out, &err);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1 &&
                          strstr(err, "plugin load failed: CONFLICT: ") &&
                          strstr(err, "'lifecycle' is already loaded"),
                      "load %zu: status 0x%x, stdout: %s; stderr: %s", i, st, out, err);
        free(out);
        free(err);
    }
    /* the running instance is untouched */
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    ck_assert_msg(strstr(out, "lifecycle") && strstr(out, "log.so"), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);

    char *life_txt = fb_e2e_read(life, NULL);
    ck_assert_msg(!life_txt, "init/fini ran for a refused load: %s", life_txt);
    char *log = fb_e2e_stderr(t);
    /* one "loaded" line (the config's instance) and its "unloaded" at stop */
    int loaded = 0, unloaded = 0;
    for (const char *p = log; (p = strstr(p, "plugin lifecycle: ")); p++) {
        loaded += strncmp(p + 18, "loaded ", 7) == 0;
        unloaded += strncmp(p + 18, "unloaded", 8) == 0;
    }
    ck_assert_msg(loaded == 1 && unloaded == 1, "loaded %d, unloaded %d: %s", loaded,
                  unloaded, log);
    ck_assert_msg(!strstr(log, "lifecycle.so (lifecycle 1.0.0"), "%s", log);
    free(log);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ hop limit */

START_TEST(test_e2e_hop_limit)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_LOG FB_E2E_TP("republish")
                                 "file = @D@/rep.txt\n"
                                 "[route loop]\nevent = hop.x\nto = test.republish, fidbus.log\n"
                                 "[route ok]\nevent = hop.ok\nto = fidbus.log\n");
    /* clang-format on */
    struct fidbus_client *c = fb_e2e_connect(t);
    /* Answered either way (the plugin decides what a refused republish
     * means for its own return value); what matters is that it ends. */
    uint64_t res = 0;
    int rc = fidbus_publish_ack(c, "hop.x", NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0 || rc == FIDBUS_EPROTO_CODE(FIDBUS_HANDLER_FAILED),
                  "publish_ack hop.x: %s", fidbus_strerror(rc));
    fb_e2e_ping(c);
    fidbus_client_close(c);

    /* the daemon is fine */
    c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "hop.ok", 1);
    fidbus_client_close(c);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    int lines = fb_e2e_lines_with(log, "hop.x", -1);
    ck_assert_msg(lines == FIDBUS_MAX_HOPS + 1,
                  "hop.x reached the log %d times, expected the original plus %d "
                  "republished; log:\n%s",
                  lines, FIDBUS_MAX_HOPS, log ? log : "");
    free(log);
    fb_e2e_stop_ok(t);

    char *rep = fb_e2e_read(fb_e2e_file(t, "rep.txt"), NULL);
    unsigned long published = 0, refused = 0;
    ck_assert_msg(
        rep && sscanf(rep, "published=%lu loop_refused=%lu", &published, &refused) == 2,
        "rep.txt: %s", rep ? rep : "(missing)");
    ck_assert_msg(refused == 1 && published == FIDBUS_MAX_HOPS,
                  "rep.txt: %s (expected published=%d loop_refused=1)", rep,
                  FIDBUS_MAX_HOPS);
    free(rep);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ republish budget */

/* Lines of text containing both a and b. */
static int lines_with_both(const char *text, const char *a, const char *b)
{
    int n = 0;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, len);
        n += line && strstr(line, a) && strstr(line, b);
        free(line);
        p = nl ? nl + 1 : NULL;
    }
    return n;
}

/*
 * A handler that republishes 4 copies of what it gets would make
 * 4 + 16 + ... + 4^8 = 87,380 events from one client event within the hop
 * limit. [limits] max_republish bounds the total: 100 per client event
 * for the inline tree, and 100 for the tree under a blocking handler
 * (whose copies run on the pool, in other threads); past it publish
 * returns -EDQUOT, counted and logged at most once a second.
 */
START_TEST(test_e2e_republish_budget)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_TP("fanout")
                                 "copies = 4\nfile = @D@/fan.txt\n"
                                 "[route fan]\nevent = fan.x\nto = test.fanout\n"
                                 "[route fanb]\nevent = fanb.x\nto = test.fanout_blocking\n"
                                 "[limits]\nmax_republish = 100\n");
    /* clang-format on */
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "fan.x", 1);
    long long hits = fb_e2e_limit_hits(t, "republish");
    ck_assert_msg(hits > 0, "no republish refused: %lld", hits);
    fb_e2e_publish_ack(c, "fanb.x", 1);
    fidbus_client_close(c);
    /* The blocking copies run after the ACK; shutdown drains them. */
    fb_e2e_stop_ok(t);

    char *fan = fb_e2e_read(fb_e2e_file(t, "fan.txt"), NULL);
    unsigned long published = 0, loop = 0, budget = 0;
    ck_assert_msg(fan && sscanf(fan, "published=%lu loop_refused=%lu budget_refused=%lu",
                                &published, &loop, &budget) == 3,
                  "fan.txt: %s", fan ? fan : "(missing)");
    /* Depth first, so the hop limit is met on the way too (loop). */
    ck_assert_msg(published == 200 && budget > 0,
                  "fan.txt: %s (expected published=200, budget_refused > 0; loop_refused "
                  "%lu)",
                  fan, loop);
    free(fan);
    char *err = fb_e2e_stderr(t);
    int warned = lines_with_both(err, "refused", "max_republish = 100");
    ck_assert_msg(warned >= 1 && warned <= 10 && (unsigned long)warned < budget,
                  "%d warn lines for %lu refusals; stderr:\n%s", warned, budget, err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ README example */

START_TEST(test_e2e_readme_plugin)
{
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(NULL, "[plugin hello]\npath = @B@/tests/plugins/hello.so\n"
                                       "[route hello]\nevent = hello.x\nto = demo.hello\n");
    /* clang-format on */
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "hello.x", 1);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_plugins_suite(void)
{
    Suite *s = suite_create("e2e_plugins");
    TCase *tc = tcase_create("plugins");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_e2e_plugin_refused, 0,
                        (int)(sizeof refuse_cases / sizeof refuse_cases[0]));
    tcase_add_loop_test(tc, test_e2e_clean_shutdown, 0, 2);
    tcase_add_test(tc, test_e2e_plugin_timer);
    tcase_add_test(tc, test_e2e_hop_limit);
    tcase_add_test(tc, test_e2e_republish_budget);
    tcase_add_test(tc, test_e2e_readme_plugin);
    tcase_add_test(tc, test_e2e_plugin_timer_after_init);
    tcase_add_test(tc, test_e2e_plugin_load_taken_name);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_plugins_suite());
}
