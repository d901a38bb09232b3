/*
 * End-to-end tests of the command lines (ctest: e2e.cli): fidbusd's
 * --check-config, --version and --help, config errors reported as
 * FILE:LINE, the TCP auth settings this issue refuses, and
 * `fidbusctl publish` against a real daemon (payloads, tags, --ack, exit
 * codes 0 / 1 / 2 / 3 with one-line errors).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* Runs a program, asserting its exit code; returns stdout+stderr (freed
 * by the caller) when want_out, else NULL. */
static char *run_expect(struct fb_e2e *t, const char *const argv[], int code,
                        bool want_out)
{
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    char cmd[1024] = "";
    for (size_t i = 0; argv[i]; i++) {
        strncat(cmd, i ? " " : "", sizeof cmd - strlen(cmd) - 1);
        strncat(cmd, i ? argv[i] : strrchr(argv[0], '/') + 1,
                sizeof cmd - strlen(cmd) - 1);
    }
    ck_assert_msg(EXIT_IS(st, code),
                  "`%s` ended with %s %d, expected exit %d; "
                  "stdout: %s; stderr: %s",
                  cmd, WIFEXITED(st) ? "exit" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), code, out, err);
    if (!want_out) {
        free(out);
        free(err);
        return NULL;
    }
    size_t n = strlen(out) + strlen(err) + 1;
    char *all = malloc(n);
    ck_assert_ptr_nonnull(all);
    snprintf(all, n, "%s%s", out, err);
    free(out);
    free(err);
    return all;
}

/* ------------------------------------------------------------- fidbusd */

START_TEST(test_e2e_cli_version_help)
{
    struct fb_e2e *t = fb_e2e_new();
    const char *fidbusd = fb_e2e_built("daemon/fidbusd");
    const char *v[] = {fidbusd, "--version", NULL};
    char *out = run_expect(t, v, 0, true);
    ck_assert_msg(strstr(out, "0.1.0"), "--version: %s", out);
    free(out);
    const char *h[] = {fidbusd, "--help", NULL};
    out = run_expect(t, h, 0, true);
    ck_assert_msg(strstr(out, "--check-config") && strstr(out, "--config"), "--help: %s",
                  out);
    free(out);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_cli_check_config_good)
{
    struct fb_e2e *t = fb_e2e_new();
    struct fb_e2e_opts o = {.tcp = true};
    /* clang-format off */
    fb_e2e_config(t, &o, FB_E2E_LOG FB_E2E_COUNT
                  "[route all]\nevent = *\ntags = version=v2, region=*\n"
                  "to = fidbus.log, fidbus.count@1.0.0\n");
    /* clang-format on */
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c", t->conf,
                          NULL};
    run_expect(t, argv, 0, false);
    ck_assert_msg(access(t->bus, F_OK) != 0, "--check-config created %s", t->bus);
    fb_e2e_free(t);
}
END_TEST

struct bad_conf {
    const char *what;
    const char *text;
    int line; /* expected in "FILE:LINE", 0 = not checked */
};

/* clang-format off */
static const struct bad_conf bad_confs[] = {
    {"workers not a number", "[daemon]\nruntime_dir = @D@/run\nworkers = banana\n", 3},
    {"bad log level", "[daemon]\n\nlog_level = chatty\n", 3},
    {"max_frame zero", "[daemon]\nmax_frame = 0\n", 2},
    {"bad event pattern",
     "[plugin log]\npath = @B@/plugins/log.so\n[route r]\nevent = a b\nto = fidbus.log\n", 4},
    {"bad mode",
     "[plugin log]\npath = @B@/plugins/log.so\n[route r]\nevent = x\nto = fidbus.log\n"
     "mode = sideways\n", 6},
    {"route without to", "[route r]\nevent = x\n", 0},
    {"plugin without path", "[plugin p]\nfile = -\n", 0},
    {"tcp_auth none off loopback", "[listen]\ntcp = 0.0.0.0:7878\ntcp_auth = none\n", 0},
    {"bad tcp_auth", "[listen]\ntcp = 127.0.0.1:7878\ntcp_auth = maybe\n", 3},
    {"not INI", "this is not a config\n", 1},
};
/* clang-format on */

START_TEST(test_e2e_cli_check_config_bad)
{
    const struct bad_conf *bc = &bad_confs[_i];
    struct fb_e2e *t = fb_e2e_new();
    const char *path = fb_e2e_write(t, "bad.conf", bc->text);
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c", path,
                          NULL};
    char *out = run_expect(t, argv, 1, true);
    ck_assert_msg(strstr(out, "bad.conf"), "%s: the output does not name the file: %s",
                  bc->what, out);
    if (bc->line) {
        char where[64];
        snprintf(where, sizeof where, "bad.conf:%d", bc->line);
        ck_assert_msg(strstr(out, where), "%s: the output lacks \"%s\": %s", bc->what,
                      where, out);
    }
    free(out);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_cli_missing_config)
{
    struct fb_e2e *t = fb_e2e_new();
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c",
                          fb_e2e_file(t, "nope.conf"), NULL};
    char *out = run_expect(t, argv, 1, true);
    ck_assert_msg(strstr(out, "nope.conf"), "the output does not name the file: %s", out);
    free(out);
    fb_e2e_free(t);
}
END_TEST

/* The daemon itself refuses a config error, binding nothing. */
START_TEST(test_e2e_cli_start_bad_config)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, "[route r]\nevent = x\nto = fidbus.log\nmode = sideways\n");
    int st = fb_e2e_start_fail(t, NULL);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(EXIT_IS(st, 1), "exit status 0x%x; stderr: %s", st, err);
    ck_assert_msg(strstr(err, "fidbusd.conf:"), "stderr does not give FILE:LINE: %s",
                  err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* tcp_auth = key with a key file others may read: refused before binding
 * (test_e2e_auth covers the working key). */
START_TEST(test_e2e_cli_tcp_auth_key_refused)
{
    struct fb_e2e *t = fb_e2e_new();
    const char *key = fb_e2e_write(t, "tcp.key", "0123456789abcdef0123456789abcdef\n");
    ck_assert_int_eq(chmod(key, 0644), 0);
    struct fb_e2e_opts o = {
        .listen_extra = "tcp = 127.0.0.1:1\ntcp_auth = key\ntcp_key_file = @D@/tcp.key",
    };
    fb_e2e_config(t, &o, FB_E2E_LOG);
    int st = fb_e2e_start_fail(t, NULL);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(EXIT_IS(st, 1), "exit status 0x%x; stderr: %s", st, err);
    const char *const needles[] = {"tcp_key_file", "mode 0600 or 0400", NULL};
    ck_assert_msg(fb_e2e_has_line(err, needles), "stderr: %s", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

/* ----------------------------------------------------------- fidbusctl */

/* Asserts stderr is exactly one line starting "fidbusctl: ". */
static void assert_one_line(const char *what, const char *err)
{
    size_t len = strlen(err);
    ck_assert_msg(strncmp(err, "fidbusctl: ", 11) == 0 && len > 11 &&
                      err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1,
                  "%s: stderr is not one \"fidbusctl: ...\" line: \"%s\"", what, err);
}

static void ctl_fail(struct fb_e2e *t, const char *what, const char *const argv[],
                     int code)
{
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(EXIT_IS(st, code),
                  "%s: fidbusctl ended with status 0x%x, expected "
                  "exit %d; stderr: %s",
                  what, st, code, err);
    assert_one_line(what, err);
    free(out);
    free(err);
}

START_TEST(test_e2e_cli_fidbusctl_publish)
{
    struct fb_e2e_opts o = {.tcp = true};
    /* clang-format off */
    struct fb_e2e *t = fb_e2e_up(&o, FB_E2E_LOG "[route ctl]\nevent = ctl.*\n"
                                                "to = fidbus.log\n");
    /* clang-format on */
    const char *ctl = fb_e2e_built("daemon/fidbusctl");
    const char *bus = t->bus_addr;
    const char *log = fb_e2e_file(t, "log.txt");
    char *text;

    /* argument lists read best one command per line */
    /* clang-format off */
    /* without --ack: exit 0 once sent; the line shows up */
    const char *a1[] = {ctl, "--bus", bus, "publish", "ctl.noack", NULL};
    run_expect(t, a1, 0, false);
    ck_assert_msg(fb_e2e_wait_contains(log, "ctl.noack", FB_E2E_TIMEOUT_MS),
                  "un-acked fidbusctl publish never reached the log");

    /* --ack: handled by the time fidbusctl exits */
    const char *a2[] = {ctl, "--bus", bus, "publish", "ctl.json", "--tag", "color=blue",
                        "--tag", "size=xl", "--data-json", "{\"n\": 42, \"s\": \"hi-json\"}",
                        "--ack", NULL};
    run_expect(t, a2, 0, false);
    const char *a3[] = {ctl, "--bus", bus, "publish", "ctl.hex", "--data-hex",
                        "66686578706179", "--ack", NULL};   /* text "hexpay" */
    run_expect(t, a3, 0, false);
    /* a plain path and tcp: work as --bus too */
    const char *a4[] = {ctl, "--bus", t->bus, "publish", "ctl.path", "--ack", NULL};
    run_expect(t, a4, 0, false);
    const char *a5[] = {ctl, "--bus", t->tcp_addr, "publish", "ctl.tcp", "--ack", NULL};
    run_expect(t, a5, 0, false);
    const char *file = fb_e2e_write(t, "payload.cbor", "gfilepay");  /* 0x67 = text(7) */
    const char *a6[] = {ctl, "--bus", bus, "publish", "ctl.file", "--data-file", file,
                        "--ack", NULL};
    run_expect(t, a6, 0, false);

    text = fb_e2e_read(log, NULL);
    ck_assert_ptr_nonnull(text);
    char *line = fb_e2e_line_with(text, "ctl.json", -1);
    ck_assert_msg(line && strstr(line, "hi-json") && strstr(line, "42") &&
                      strstr(line, "blue") && strstr(line, "size"),
                  "ctl.json line: %s; log:\n%s", line ? line : "(none)", text);
    free(line);
    line = fb_e2e_line_with(text, "ctl.hex", -1);
    ck_assert_msg(line && strstr(line, "hexpay"), "ctl.hex line: %s", line ? line : "(none)");
    free(line);
    ck_assert_int_eq(fb_e2e_lines_with(text, "ctl.path", -1), 1);
    ck_assert_int_eq(fb_e2e_lines_with(text, "ctl.tcp", -1), 1);
    line = fb_e2e_line_with(text, "ctl.file", -1);
    ck_assert_msg(line && strstr(line, "filepay"), "ctl.file line: %s",
                  line ? line : "(none)");
    free(line);
    free(text);

    /* NO_ROUTE: an error only with --ack */
    const char *n1[] = {ctl, "--bus", bus, "publish", "zzz.none", "--ack", NULL};
    ctl_fail(t, "NO_ROUTE with --ack", n1, 1);
    const char *n2[] = {ctl, "--bus", bus, "publish", "zzz.none", NULL};
    run_expect(t, n2, 0, false);

    /* usage errors */
    const char *u1[] = {ctl, "--bus", bus, "publish", "ctl.x", "--data-json", "{", NULL};
    ctl_fail(t, "bad JSON", u1, 2);
    const char *u2[] = {ctl, "--bus", bus, "publish", "ctl.x", "--data-hex", "zz", NULL};
    ctl_fail(t, "bad hex", u2, 2);
    const char *u3[] = {ctl, "--bus", bus, "publish", "ctl.x", "--data-hex", "abc", NULL};
    ctl_fail(t, "odd-length hex", u3, 2);
    const char *u4[] = {ctl, "--bus", bus, "publish", "ctl.x", "--tag", "novalue", NULL};
    ctl_fail(t, "tag without =", u4, 2);
    const char *u5[] = {ctl, "--bus", bus, "publish", "ctl.x", "--tag", "bad key=v", NULL};
    ctl_fail(t, "bad tag key", u5, 2);
    const char *u6[] = {ctl, "--bus", bus, "publish", "bad id", NULL};
    ctl_fail(t, "bad event id", u6, 2);

    /* nobody listening */
    const char *d1[] = {ctl, "--bus", fb_e2e_file(t, "none.sock"), "publish", "ctl.x",
                        "--ack", NULL};
    ctl_fail(t, "no daemon", d1, 3);

    /* clang-format on */

    /* none of the failures reached the log */
    struct fidbus_client *c = fb_e2e_connect(t);
    int rc = fidbus_ping(c);
    ck_assert_msg(rc == 0, "PING: %s", fidbus_strerror(rc));
    fidbus_client_close(c);
    text = fb_e2e_read(log, NULL);
    ck_assert_int_eq(fb_e2e_lines_with(text, "ctl.x", -1), 0);
    free(text);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * FIDBUS_RUNTIME_DIR (or --socket/--bus) naming a place without a socket:
 * fidbusctl fails with one line naming that path, even when a daemon
 * answers in a place it would otherwise search ($XDG_RUNTIME_DIR/fidbus).
 */
START_TEST(test_e2e_cli_runtime_dir_no_fallback)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route all]\nevent = *\nto = fidbus.log\n");
    char xdg[200], other[220], link[260], empty[200];
    snprintf(xdg, sizeof xdg, "%s/xdg", t->dir);
    snprintf(other, sizeof other, "%s/fidbus", xdg);
    snprintf(empty, sizeof empty, "%s/empty", t->dir);
    ck_assert_int_eq(mkdir(xdg, 0700), 0);
    ck_assert_int_eq(mkdir(other, 0700), 0);
    ck_assert_int_eq(mkdir(empty, 0700), 0);
    snprintf(link, sizeof link, "%s/bus.sock", other);
    ck_assert_int_eq(symlink(t->bus, link), 0);
    snprintf(link, sizeof link, "%s/control.sock", other);
    ck_assert_int_eq(symlink(t->control, link), 0);
    unsetenv("FIDBUS_BUS");
    unsetenv("FIDBUS_CONTROL");
    ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", xdg, 1), 0);

    const char *ctl = fb_e2e_built("daemon/fidbusctl");
    const char *status[] = {ctl, "status", NULL};
    const char *publish[] = {ctl, "publish", "a.b", "--ack", NULL};
    char *out = NULL, *err = NULL;

    /* without FIDBUS_RUNTIME_DIR the daemon in $XDG_RUNTIME_DIR/fidbus answers */
    unsetenv("FIDBUS_RUNTIME_DIR");
    int st = fb_e2e_run(t, status, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "status via XDG_RUNTIME_DIR: 0x%x: %s", st, err);
    free(out);
    free(err);

    ck_assert_int_eq(setenv("FIDBUS_RUNTIME_DIR", empty, 1), 0);
    const char *const *cmds[] = {status, publish};
    const char *names[] = {"control.sock", "bus.sock"};
    for (size_t i = 0; i < 2; i++) {
        char want[260];
        snprintf(want, sizeof want, "%s/%s", empty, names[i]);
        st = fb_e2e_run(t, cmds[i], &out, &err);
        ck_assert_msg(
            !EXIT_IS(st, 0) && strcmp(out, "") == 0 && strstr(err, want) &&
                strchr(err, '\n') == err + strlen(err) - 1,
            "%s with FIDBUS_RUNTIME_DIR=%s: status 0x%x, stdout: %s; stderr: %s",
            cmds[i][1], empty, st, out, err);
        free(out);
        free(err);
    }

    /* --socket / --bus naming a missing socket: the same, not a search */
    char sock[260], bus[270];
    snprintf(sock, sizeof sock, "%s/none.sock", empty);
    snprintf(bus, sizeof bus, "unix:%s", sock);
    unsetenv("FIDBUS_RUNTIME_DIR");
    const char *s2[] = {ctl, "--socket", sock, "status", NULL};
    const char *p2[] = {ctl, "--bus", bus, "publish", "a.b", NULL};
    const char *const *cmds2[] = {s2, p2};
    for (size_t i = 0; i < 2; i++) {
        st = fb_e2e_run(t, cmds2[i], &out, &err);
        ck_assert_msg(!EXIT_IS(st, 0) && strstr(err, sock) &&
                          strchr(err, '\n') == err + strlen(err) - 1,
                      "%s %s: status 0x%x, stderr: %s", cmds2[i][1], cmds2[i][2], st,
                      err);
        free(out);
        free(err);
    }

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_cli_suite(void)
{
    Suite *s = suite_create("e2e_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_cli_version_help);
    tcase_add_test(tc, test_e2e_cli_check_config_good);
    tcase_add_loop_test(tc, test_e2e_cli_check_config_bad, 0,
                        (int)(sizeof bad_confs / sizeof bad_confs[0]));
    tcase_add_test(tc, test_e2e_cli_missing_config);
    tcase_add_test(tc, test_e2e_cli_start_bad_config);
    tcase_add_test(tc, test_e2e_cli_tcp_auth_key_refused);
    tcase_add_test(tc, test_e2e_cli_fidbusctl_publish);
    tcase_add_test(tc, test_e2e_cli_runtime_dir_no_fallback);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_cli_suite());
}
