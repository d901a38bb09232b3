/*
 * End-to-end tests of two plugin-instance features (README "Writing a
 * plugin", "[plugin NAME]"):
 *
 * - host->set_error: a plugin's init says why it fails, and that reason
 *   is the refusal -- in the plugin.load / plugin.reload REPLY, in the
 *   start-up error that makes fidbusd exit 1, and in the log -- bounded,
 *   one line, and never formatted with %n (tests/plugins/why.c);
 * - `namespace = NS`: an instance's functions renamed into NS, so two
 *   log.so instances have two funcIDs, each route delivering to its own
 *   file; a bad namespace is FILE:LINE at start and INVALID over control;
 *   the key survives a restart (state.cbor) and config.export.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fidbus/plugin.h>

#include "e2e/harness.h"

#define EXIT_IS(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))

/* `fidbusctl plugin load SO --name NAME --config JSON`, expected to fail:
 * its stderr (malloc'd). */
static char *load_fails(struct fb_e2e *t, const char *so, const char *name,
                        const char *json)
{
    const char *argv[] = {fb_e2e_built("daemon/fidbusctl"),
                          "--socket",
                          t->control,
                          "plugin",
                          "load",
                          so,
                          "--name",
                          name,
                          "--config",
                          json,
                          NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(EXIT_IS(st, 1),
                  "plugin load %s %s: status 0x%x, stdout: %s; stderr: %s", name, json,
                  st, out, err);
    free(out);
    return err;
}

/* The reason after "init failed: " in text, up to the end of its line
 * (malloc'd); fails the test when there is none. */
static char *reason_in(const char *text)
{
    const char *r = strstr(text, "init failed: ");
    ck_assert_msg(r, "no 'init failed: ' in: %s", text);
    r += strlen("init failed: ");
    return strndup(r, strcspn(r, "\n"));
}

/* ------------------------------------------------- set_error: control */

#define WHY_SO "tests/plugins/why.so"

START_TEST(test_e2e_init_reason_load)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n");
    char so[512]; /* fb_e2e_built's buffers rotate */
    snprintf(so, sizeof so, "%s", fb_e2e_built(WHY_SO));

    /* the reason replaces the bare return code, in the REPLY and the log */
    char *err = load_fails(t, so, "w1", "{\"mode\": \"reason\", \"what\": \"/no/such\"}");
    const char *want = "plugin w1 (";
    const char *want2 = "): init failed: cannot open /no/such: No such file or directory";
    ck_assert_msg(strstr(err, "INVALID") && strstr(err, want) && strstr(err, want2), "%s",
                  err);
    free(err);
    char *log = fb_e2e_stderr(t);
    const char *line[] = {"plugin w1 (", want2, NULL};
    ck_assert_msg(fb_e2e_has_line(log, line), "daemon log: %s", log);
    free(log);

    /* the last call wins */
    err = load_fails(t, so, "w2", "{\"mode\": \"twice\"}");
    char *r = reason_in(err);
    ck_assert_msg(strcmp(r, "second") == 0, "reason '%s' in %s", r, err);
    free(r);
    free(err);

    /* a %n format is not formatted: nothing is written through the
     * pointer (why.c would then return -EFAULT), a fixed text instead */
    err = load_fails(t, so, "w3", "{\"mode\": \"percent_n\"}");
    r = reason_in(err);
    ck_assert_msg(strstr(r, "%n conversion; refused") && !strstr(r, "wrote"), "'%s'", r);
    free(r);
    free(err);
    err = load_fails(t, so, "w3",
                     "{\"mode\": \"percent_n\", \"fmt\": \"a %1$-*2$.3hhn b\"}");
    r = reason_in(err);
    ck_assert_msg(strstr(r, "%n conversion; refused"), "'%s'", r);
    free(r);
    free(err);

    /* 5,003 bytes of reason: cut to FIDBUS_ERROR_MAX - 1, marked */
    err = load_fails(t, so, "w4", "{\"mode\": \"long\"}");
    r = reason_in(err);
    ck_assert_msg(strlen(r) == FIDBUS_ERROR_MAX - 1 && strncmp(r, "xxxxxxxx", 8) == 0 &&
                      strcmp(r + strlen(r) - 4, "x...") == 0 && !strstr(r, "END"),
                  "%zu bytes: '%s'", strlen(r), r);
    free(r);
    free(err);

    /* control characters cannot split the line or reach a terminal */
    err = load_fails(t, so, "w5", "{\"mode\": \"ctrl\"}");
    r = reason_in(err);
    ck_assert_msg(strcmp(r, "line one?line two?[31m red") == 0, "'%s' in %s", r, err);
    free(r);
    free(err);

    /* a plugin that only logs keeps what it logged in the refusal */
    err = load_fails(t, so, "w6", "{\"mode\": \"logged\"}");
    ck_assert_msg(strstr(err, "init failed: -22: only logged: bad thing"), "%s", err);
    free(err);

    /* no reason at all: the return code */
    err = load_fails(t, so, "w7", "{\"mode\": \"none\"}");
    ck_assert_msg(strstr(err, "init failed: -22"), "%s", err);
    free(err);

    /* a reason from an init that then succeeds is dropped, and a handler
     * calling set_error is ignored */
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "load", so, "--name", "w8", "--config",
                           "{\"mode\": \"ok\"}", NULL);
    free(out);
    out =
        fb_e2e_ctl(t, 0, NULL, "route", "add", "why", "why.x", "--to", "test.why", NULL);
    free(out);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "why.x", 1);
    fb_e2e_publish_ack(c, "why.x", 1);
    fidbus_client_close(c);

    /* the shipped log.so says why too */
    char json[512];
    snprintf(json, sizeof json, "{\"file\": \"%s\", \"namespace\": \"alt\"}",
             fb_e2e_file(t, "none/log.txt"));
    err = load_fails(t, fb_e2e_built("plugins/log.so"), "log2", json);
    char want3[600];
    snprintf(want3, sizeof want3,
             "init failed: cannot open %s: No such file or directory",
             fb_e2e_file(t, "none/log.txt"));
    ck_assert_msg(strstr(err, want3), "%s", err);
    free(err);

    log = fb_e2e_stderr(t);
    ck_assert_msg(!strstr(log, "said but not failed") && !strstr(log, "from a handler"),
                  "%s", log);
    free(log);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* plugin.reload of an instance whose init now fails: the reason is in the
 * REPLY, and the running instance stays. */
START_TEST(test_e2e_init_reason_reload)
{
    struct fb_e2e *t = fb_e2e_new();
    const char *sub = fb_e2e_file(t, "sub");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    fb_e2e_config(t, NULL,
                  "[plugin log]\npath = @B@/plugins/log.so\nfile = @D@/sub/log.txt\n"
                  "[route all]\nevent = *\nto = fidbus.log\n");
    fb_e2e_start(t);
    const char *file = fb_e2e_file(t, "sub/log.txt");
    char keep[512];
    snprintf(keep, sizeof keep, "%s", file);
    ck_assert_int_eq(unlink(keep), 0);
    ck_assert_int_eq(rmdir(fb_e2e_file(t, "sub")), 0);

    char *err = NULL;
    char *out = fb_e2e_ctl(t, 1, &err, "plugin", "reload", "log", NULL);
    char want[700];
    snprintf(want, sizeof want, "init failed: cannot open %s: No such file or directory",
             keep);
    ck_assert_msg(strstr(err, "plugin reload failed: INVALID") && strstr(err, want), "%s",
                  err);
    free(out);
    free(err);
    out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    ck_assert_msg(strstr(out, "log.so"), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* config.reload adding an instance whose init fails: the reason is in
 * the REPLY, and nothing changes. */
START_TEST(test_e2e_init_reason_config_reload)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n");
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n" FB_E2E_TP(
                      "why") "mode = reason\nwhat = /srv/reload-me\n");
    char *err = NULL;
    char *out = fb_e2e_ctl(t, 1, &err, "config", "reload", NULL);
    ck_assert_msg(
        strstr(err, "INVALID") &&
            strstr(err, "init failed: cannot open /srv/reload-me: No such file"),
        "%s", err);
    free(out);
    free(err);
    out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    ck_assert_msg(!strstr(out, "why"), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------ set_error: start-up */

START_TEST(test_e2e_init_reason_startup)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL,
                  FB_E2E_TP("why") "mode = reason\nwhat = /etc/nowhere.conf\n"
                                   "[route all]\nevent = *\nto = test.why\n");
    int st = fb_e2e_start_fail(t, NULL);
    ck_assert_msg(EXIT_IS(st, 1), "status 0x%x", st);
    char *err = fb_e2e_stderr(t);
    const char *line[] = {
        "plugin why (",
        "init failed: cannot open /etc/nowhere.conf: No such file or directory", NULL};
    ck_assert_msg(fb_e2e_has_line(err, line), "%s", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ namespace */

#define TWO_LOGS                                                                         \
    "[plugin log]\npath = @B@/plugins/log.so\nfile = @D@/main.txt\n"                     \
    "[plugin tap]\npath = @B@/plugins/log.so\nfile = @D@/tap.txt\nnamespace = tap\n"     \
    "[route main]\nevent = main.*\nto = fidbus.log\n"                                    \
    "[route tap]\nevent = tap.*\nto = tap.log@1.0.0\n"

/* The funcID of canonical in `func list` output (16 hex digits), into id. */
static void funcid_of(const char *list, const char *canonical, char id[17])
{
    const char *at = strstr(list, canonical);
    ck_assert_msg(at, "%s not in:\n%s", canonical, list);
    const char *bol = at;
    while (bol > list && bol[-1] != '\n')
        bol--;
    ck_assert_msg(strspn(bol, "0123456789abcdef") == 16, "line: %.80s", bol);
    memcpy(id, bol, 16);
    id[16] = '\0';
}

START_TEST(test_e2e_namespace_two_logs)
{
    struct fb_e2e *t = fb_e2e_up(NULL, TWO_LOGS);
    char *out = fb_e2e_ctl(t, 0, NULL, "func", "list", NULL);
    char main_id[17], tap_id[17];
    funcid_of(out, "fidbus.log@1.0.0", main_id);
    funcid_of(out, "tap.log@1.0.0", tap_id);
    ck_assert_str_ne(main_id, tap_id);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    const char *row_main[] = {"log ", main_id, NULL};
    const char *row_tap[] = {"tap ", tap_id, NULL};
    ck_assert_msg(fb_e2e_has_line(out, row_main) && fb_e2e_has_line(out, row_tap), "%s",
                  out);
    free(out);

    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "main.a", 1);
    fb_e2e_publish_ack(c, "tap.b", 1);
    fb_e2e_publish_ack(c, "main.c", 1);
    fb_e2e_ping(c);
    fidbus_client_close(c);

    /* a third instance over control; its namespace is taken: CONFLICT */
    char json[512];
    snprintf(json, sizeof json, "{\"namespace\": \"tap\", \"file\": \"%s\"}",
             fb_e2e_file(t, "tap2.txt"));
    char *err = load_fails(t, fb_e2e_built("plugins/log.so"), "tap2", json);
    ck_assert_msg(strstr(err, "CONFLICT") && strstr(err, "tap.log@1.0.0"), "%s", err);
    free(err);
    snprintf(json, sizeof json, "{\"namespace\": \"tap2\", \"file\": \"%s\"}",
             fb_e2e_file(t, "tap2.txt"));
    out = fb_e2e_ctl(t, 0, NULL, "plugin", "load", fb_e2e_built("plugins/log.so"),
                     "--name", "tap2", "--config", json, NULL);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "func", "list", NULL);
    ck_assert_msg(strstr(out, "tap2.log@1.0.0"), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);

    char *m = fb_e2e_read(fb_e2e_file(t, "main.txt"), NULL);
    char *p = fb_e2e_read(fb_e2e_file(t, "tap.txt"), NULL);
    FB_E2E_ASSERT_LINES(m, "event=main.a", -1, 1);
    FB_E2E_ASSERT_LINES(m, "event=main.c", -1, 1);
    FB_E2E_ASSERT_LINES(m, "event=tap.b", -1, 0);
    FB_E2E_ASSERT_LINES(p, "event=tap.b", -1, 1);
    FB_E2E_ASSERT_LINES(p, "event=main.", -1, 0);
    free(m);
    free(p);
    fb_e2e_free(t);
}
END_TEST

/* Two instances of one file without namespaces still conflict. */
START_TEST(test_e2e_namespace_same_conflicts)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL,
                  "[plugin log]\npath = @B@/plugins/log.so\nfile = @D@/main.txt\n"
                  "[plugin tap]\npath = @B@/plugins/log.so\nfile = @D@/tap.txt\n"
                  "namespace = fidbus\n");
    fb_e2e_start_fail_says(t, "fidbus.log@1.0.0");
    char *err = fb_e2e_stderr(t);
    const char *line[] = {"plugin tap (", "fidbus.log@1.0.0", NULL};
    ck_assert_msg(fb_e2e_has_line(err, line), "%s", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* The line number of the first line of the config holding text. */
static int conf_line(const struct fb_e2e *t, const char *text)
{
    char *conf = fb_e2e_read(t->conf, NULL);
    ck_assert_ptr_nonnull(conf);
    const char *at = strstr(conf, text);
    ck_assert_msg(at, "'%s' not in the config", text);
    int line = 1;
    for (const char *c = conf; c < at; c++)
        line += *c == '\n';
    free(conf);
    return line;
}

static const char *const bad_ns[] = {
    "bad.ns",
    "a b",
    "tap/x",
    "",
    "n1234567890123456789012345678901234567890123456789012345678901234", /* 65 */
};

START_TEST(test_e2e_namespace_invalid_config)
{
    const char *ns = bad_ns[_i];
    struct fb_e2e *t = fb_e2e_new();
    char sections[512];
    snprintf(sections, sizeof sections,
             "[plugin tap]\npath = @B@/plugins/log.so\nnamespace = %s\nfile = -\n", ns);
    fb_e2e_config(t, NULL, sections);
    char key[200];
    snprintf(key, sizeof key, "namespace = %s\n", ns);
    char want[700];
    snprintf(want, sizeof want, "%s:%d: [plugin tap] namespace '%s' must be 1-64 bytes",
             t->conf, conf_line(t, key), ns);
    int st = fb_e2e_start_fail(t, NULL);
    ck_assert_msg(!EXIT_IS(st, 0), "status 0x%x", st);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(strstr(err, want), "expected '%s' in: %s", want, err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_namespace_invalid_control)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n");
    for (size_t i = 0; i < sizeof bad_ns / sizeof bad_ns[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"namespace\": \"%s\", \"file\": \"-\"}",
                 bad_ns[i]);
        char *err = load_fails(t, fb_e2e_built("plugins/log.so"), "tap", json);
        ck_assert_msg(strstr(err, "INVALID") && strstr(err, "'namespace'") &&
                          strstr(err, "must be 1-64 bytes of [A-Za-z0-9_-]"),
                      "%s: %s", bad_ns[i], err);
        free(err);
    }
    /* not text at all */
    char *err = load_fails(t, fb_e2e_built("plugins/log.so"), "tap",
                           "{\"namespace\": [1], \"file\": \"-\"}");
    ck_assert_msg(strstr(err, "INVALID"), "%s", err);
    free(err);
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    ck_assert_msg(!strstr(out, "tap "), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Loaded at run time: kept through a kill -9 (state.cbor) and written by
 * config.export, which loads back. */
START_TEST(test_e2e_namespace_state_export)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n");
    char json[512];
    snprintf(json, sizeof json, "{\"namespace\": \"tap\", \"file\": \"%s\"}",
             fb_e2e_file(t, "tap.txt"));
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "load", fb_e2e_built("plugins/log.so"),
                           "--name", "tap", "--config", json, NULL);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "route", "add", "tap", "tap.*", "--to", "tap.log", NULL);
    free(out);

    out = fb_e2e_ctl(t, 0, NULL, "config", "export", NULL);
    ck_assert_msg(strstr(out, "\n[plugin tap]\n") && strstr(out, "\nnamespace = tap\n"),
                  "%s", out);
    const char *file = fb_e2e_write(t, "export.conf", out);
    free(out);
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c", file,
                          NULL};
    char *cout = NULL, *cerr = NULL;
    int st = fb_e2e_run(t, argv, &cout, &cerr);
    ck_assert_msg(EXIT_IS(st, 0), "--check-config: 0x%x: %s%s", st, cout, cerr);
    free(cout);
    free(cerr);

    fb_e2e_kill9(t);
    fb_e2e_start(t);
    out = fb_e2e_ctl(t, 0, NULL, "func", "list", NULL);
    ck_assert_msg(strstr(out, "tap.log@1.0.0") && strstr(out, "fidbus.log@1.0.0"), "%s",
                  out);
    free(out);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "tap.after", 1);
    fb_e2e_publish_ack(c, "other.after", 1);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    char *p = fb_e2e_read(fb_e2e_file(t, "tap.txt"), NULL);
    FB_E2E_ASSERT_LINES(p, "event=tap.after", -1, 1);
    FB_E2E_ASSERT_LINES(p, "event=other.after", -1, 0);
    free(p);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_plugin_ns_suite(void)
{
    Suite *s = suite_create("e2e_plugin_ns");
    TCase *tc = tcase_create("plugin_ns");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_init_reason_load);
    tcase_add_test(tc, test_e2e_init_reason_reload);
    tcase_add_test(tc, test_e2e_init_reason_config_reload);
    tcase_add_test(tc, test_e2e_init_reason_startup);
    tcase_add_test(tc, test_e2e_namespace_two_logs);
    tcase_add_test(tc, test_e2e_namespace_same_conflicts);
    tcase_add_loop_test(tc, test_e2e_namespace_invalid_config, 0,
                        (int)(sizeof bad_ns / sizeof bad_ns[0]));
    tcase_add_test(tc, test_e2e_namespace_invalid_control);
    tcase_add_test(tc, test_e2e_namespace_state_export);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_plugin_ns_suite());
}
