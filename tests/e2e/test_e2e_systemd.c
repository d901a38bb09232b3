/*
 * End-to-end tests of fidbusd run the way systemd runs it, without systemd
 * (ctest: e2e.systemd; README "Operations"): the sd_notify datagrams a Type=notify-
 * reload unit sees, in order, with their STATUS= lines, also on an
 * abstract NOTIFY_SOCKET; and socket activation -- listening sockets the
 * test binds itself and passes at descriptors 3, 4, ... with LISTEN_FDS,
 * LISTEN_PID (the daemon's own pid, set between fork and exec) and
 * LISTEN_FDNAMES, as a .socket unit would.
 *
 * The harness plays the service manager: it owns the notify socket and,
 * here, the passed sockets, which the daemon must use as they are (mode
 * untouched) and leave in place when it stops. The last test checks the
 * log format journald wants when JOURNAL_STREAM names the daemon's stderr.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* log.so; route `ra` sends a.* to it. */
#define BASE FB_E2E_LOG "[route ra]\nevent = a.*\nto = fidbus.log\n"
/* The same plus a second route. */
#define BASE2 BASE "[route rb]\nevent = b.*\nto = fidbus.log\n"

static uint64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The datagrams of a notify log (fb_e2e_notify_log), split in place into
 * dg[]; returns how many. */
static int split_log(char *log, char *dg[], int max)
{
    int n = 0;
    char *p = log;
    while (*p && n < max) {
        char *sep = strstr(p, "\n\n");
        ck_assert(sep != NULL);
        *sep = '\0';
        dg[n++] = p;
        p = sep + 2;
    }
    return n;
}

static bool has_line(const char *dg, const char *line)
{
    size_t ll = strlen(line);
    for (const char *p = dg; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == ll && memcmp(p, line, ll) == 0)
            return true;
        p = nl ? nl + 1 : NULL;
    }
    return false;
}

/* The value of KEY= in a datagram, or NULL (static buffer). */
static const char *value_of(const char *dg, const char *key)
{
    static char v[256];
    size_t kl = strlen(key);
    for (const char *p = dg; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(v, sizeof v, "%.*s", (int)(len - kl - 1), p + kl + 1);
            return v;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* A listening (or, with listening false, only bound) Unix stream socket
 * at path with mode. */
static int unix_socket(const char *path, unsigned mode, bool listening)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa;
    fb_e2e_sun(&sa, path);
    unlink(path);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", path,
                  strerror(errno));
    ck_assert_msg(chmod(path, mode) == 0, "chmod %s: %s", path, strerror(errno));
    if (listening)
        ck_assert_msg(listen(fd, 16) == 0, "listen: %s", strerror(errno));
    return fd;
}

/* A listening TCP socket on 127.0.0.1, any port. */
static int tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind: %s",
                  strerror(errno));
    ck_assert_msg(listen(fd, 16) == 0, "listen: %s", strerror(errno));
    return fd;
}

/* The run dir the sockets go in (the harness's runtime_dir). */
static void make_run_dir(struct fb_e2e *t)
{
    ck_assert_msg(mkdir(fb_e2e_file(t, "run"), 0755) == 0 || errno == EEXIST,
                  "mkdir run: %s", strerror(errno));
}

/* Does the daemon (pid) hold a descriptor for the socket fd refers to? */
static bool daemon_holds(pid_t pid, int fd)
{
    struct stat st;
    ck_assert(fstat(fd, &st) == 0);
    char want[64], dir[64], link[PATH_MAX], target[128];
    snprintf(want, sizeof want, "socket:[%lu]", (unsigned long)st.st_ino);
    snprintf(dir, sizeof dir, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s: %s", dir, strerror(errno));
    bool found = false;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, want) == 0)
            found = true;
    }
    closedir(d);
    return found;
}

static char *run_ctl_status(struct fb_e2e *t)
{
    const char *argv[] = {fb_e2e_built("daemon/fidbusctl"),
                          "--socket",
                          t->control,
                          "--json",
                          "status",
                          NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "fidbusctl status: status 0x%x; stdout %s; stderr %s",
                  st, out, err);
    free(err);
    return out;
}

/* ------------------------------------------------------------- notify */

START_TEST(test_e2e_systemd_notify_order)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);

    char *ready = fb_e2e_notify_wait(t, "READY=1", 0);
    ck_assert_msg(ready != NULL, "no READY=1 in the log: %s", fb_e2e_notify_log(t));
    const char *status = value_of(ready, "STATUS");
    ck_assert_msg(status && strcmp(status, "1 plugin, 1 route, generation 1") == 0,
                  "READY=1 without the expected STATUS=: %s", ready);
    const char *mainpid = value_of(ready, "MAINPID");
    ck_assert_msg(mainpid && atol(mainpid) == (long)t->pid, "MAINPID: %s", ready);
    free(ready);

    /* A reload that changes the set: the READY after it says so. */
    fb_e2e_config(t, NULL, BASE2);
    uint64_t before = mono_usec();
    ck_assert(kill(t->pid, SIGHUP) == 0);
    char *rel = fb_e2e_notify_wait(t, "RELOADING=1", FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rel != NULL, "no RELOADING=1 after SIGHUP: %s", fb_e2e_notify_log(t));
    const char *usec = value_of(rel, "MONOTONIC_USEC");
    ck_assert_msg(usec != NULL, "RELOADING=1 without MONOTONIC_USEC: %s", rel);
    unsigned long long u = strtoull(usec, NULL, 10);
    ck_assert_msg(
        u >= before && u <= mono_usec(),
        "MONOTONIC_USEC=%llu is not the CLOCK_MONOTONIC time it was sent (%llu..)", u,
        (unsigned long long)before);
    ck_assert_msg(has_line(rel, "STATUS=reloading"), "RELOADING=1 datagram: %s", rel);
    free(rel);
    char *ready2 = fb_e2e_notify_wait(t, "READY=1", FB_E2E_TIMEOUT_MS);
    ck_assert_msg(ready2 != NULL, "no READY=1 after the reload: %s",
                  fb_e2e_notify_log(t));
    status = value_of(ready2, "STATUS");
    ck_assert_msg(status && strcmp(status, "1 plugin, 2 routes, generation 2") == 0,
                  "READY=1 after reload without a fresh STATUS=: %s", ready2);
    free(ready2);

    fb_e2e_stop_ok(t);
    ck_assert(t->stopping_seen);

    /* Exactly these four, in this order. */
    char *log = strdup(fb_e2e_notify_log(t));
    char *dg[16];
    int n = split_log(log, dg, 16);
    ck_assert_msg(n == 4, "expected 4 datagrams, got %d: %s", n, fb_e2e_notify_log(t));
    ck_assert(has_line(dg[0], "READY=1"));
    ck_assert(has_line(dg[1], "RELOADING=1"));
    ck_assert(has_line(dg[2], "READY=1"));
    ck_assert(has_line(dg[3], "STOPPING=1"));
    ck_assert_msg(has_line(dg[3], "STATUS=shutting down"), "STOPPING=1 datagram: %s",
                  dg[3]);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(!has_line(dg[i], "STOPPING=1"), "STOPPING=1 too early: %s", dg[i]);
    free(log);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_systemd_notify_abstract)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, BASE);
    struct fb_e2e_spawn sp = {.notify_abstract = true};
    fb_e2e_start_with(t, &sp);
    ck_assert_msg(t->notify[0] == '@', "not abstract: %s", t->notify);
    char *ready = fb_e2e_notify_wait(t, "READY=1", 0);
    ck_assert_msg(ready && value_of(ready, "STATUS"), "READY=1 with STATUS: %s",
                  fb_e2e_notify_log(t));
    free(ready);
    fb_e2e_stop_ok(t);
    ck_assert_msg(t->stopping_seen, "no STOPPING=1 on the abstract socket: %s",
                  fb_e2e_notify_log(t));
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------------------- socket activation */

START_TEST(test_e2e_systemd_listen_fds)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, BASE);
    make_run_dir(t);
    /* Modes the daemon would never choose: adopting must not change them. */
    int fds[2] = {unix_socket(t->bus, 0666, true), unix_socket(t->control, 0640, true)};
    struct fb_e2e_spawn sp = {.fds = fds, .nfds = 2, .fdnames = "bus:control"};
    fb_e2e_start_with(t, &sp);

    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "a.one", 1);
    fidbus_client_close(c);

    char *out = run_ctl_status(t);
    char want[200];
    snprintf(want, sizeof want, "\"unix:%s\"", t->bus);
    ck_assert_msg(strstr(out, want) != NULL, "status does not list %s: %s", want, out);
    free(out);

    char *err = fb_e2e_stderr(t);
    const char *adopt_bus[] = {"adopting", t->bus, "bus socket", NULL};
    const char *adopt_ctl[] = {"adopting", t->control, "control socket", NULL};
    ck_assert_msg(fb_e2e_has_line(err, adopt_bus) && fb_e2e_has_line(err, adopt_ctl),
                  "adoption not logged: %s", err);
    free(err);

    struct stat st;
    ck_assert(stat(t->bus, &st) == 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0666);
    ck_assert(stat(t->control, &st) == 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);

    int status = fb_e2e_stop_passed(t);
    ck_assert_msg(EXIT_IS(status, 0), "exit status 0x%x", status);
    ck_assert_msg(access(t->bus, F_OK) == 0, "the daemon removed the passed %s", t->bus);
    ck_assert_msg(access(t->control, F_OK) == 0, "the daemon removed the passed %s",
                  t->control);

    /* The manager still listens: a client connecting between two runs is
     * queued, and the next daemon given the same socket serves it. */
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_start_with(t, &sp);
    fb_e2e_raw_hello(r);
    fb_e2e_raw_publish(r, 7, true, "a.two");
    fb_e2e_raw_expect_ack(r, 7, 1);
    fb_e2e_raw_close(r);
    status = fb_e2e_stop_passed(t);
    ck_assert_msg(EXIT_IS(status, 0), "exit status 0x%x", status);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    FB_E2E_ASSERT_LINES(log, "a.one", -1, 1);
    FB_E2E_ASSERT_LINES(log, "a.two", -1, 1);
    free(log);
    close(fds[0]);
    close(fds[1]);
    fb_e2e_free(t);
}
END_TEST

/* Without LISTEN_FDNAMES (a unit without FileDescriptorName=) the bus is
 * recognised by its path; the control socket is bound as usual. */
START_TEST(test_e2e_systemd_listen_by_path)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, BASE);
    make_run_dir(t);
    int fd = unix_socket(t->bus, 0666, true);
    struct fb_e2e_spawn sp = {.fds = &fd, .nfds = 1};
    fb_e2e_start_with(t, &sp);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "a.one", 1);
    fidbus_client_close(c);
    char *out = run_ctl_status(t);
    free(out);
    int status = fb_e2e_stop_passed(t);
    ck_assert_msg(EXIT_IS(status, 0), "exit status 0x%x", status);
    ck_assert_msg(access(t->bus, F_OK) == 0, "the daemon removed the passed %s", t->bus);
    /* The control socket was the daemon's own: removed. */
    ck_assert_msg(access(t->control, F_OK) != 0, "the daemon left %s", t->control);
    close(fd);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_systemd_listen_unknown_name)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, BASE);
    make_run_dir(t);
    int fds[2] = {unix_socket(t->bus, 0660, true),
                  unix_socket(fb_e2e_file(t, "run/other.sock"), 0600, true)};
    struct fb_e2e_spawn sp = {.fds = fds, .nfds = 2, .fdnames = "bus:other"};
    fb_e2e_start_with(t, &sp);

    char *err = fb_e2e_stderr(t);
    const char *closing[] = {"closing fd 4", "'other'", "other.sock", NULL};
    ck_assert_msg(fb_e2e_has_line(err, closing), "unknown socket not logged: %s", err);
    free(err);
    ck_assert_msg(daemon_holds(t->pid, fds[0]),
                  "the daemon does not hold the bus socket");
    ck_assert_msg(!daemon_holds(t->pid, fds[1]),
                  "the daemon kept the unknown socket open");

    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "a.one", 1);
    fidbus_client_close(c);
    int status = fb_e2e_stop_passed(t);
    ck_assert_msg(EXIT_IS(status, 0), "exit status 0x%x", status);
    close(fds[0]);
    close(fds[1]);
    fb_e2e_free(t);
}
END_TEST

/* Each case: what is passed, and a word the refusal must contain. */
START_TEST(test_e2e_systemd_listen_refused)
{
    static const struct {
        const char *names;
        int kind; /* 0 bound, not listening; 1 TCP named bus; 2 tcp unconfigured;
                   * 3 names do not match the count; 4 bus twice */
        const char *want;
    } cases[] = {
        {"bus", 0, "not listening"},
        {"bus", 1, "wrong family"},
        {"tcp", 2, "[listen] tcp is not configured"},
        {"bus:control:tcp", 3, "LISTEN_FDNAMES"},
        {"bus:bus", 4, "two sockets for 'bus'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fb_e2e *t = fb_e2e_new();
        fb_e2e_config(t, NULL, BASE);
        make_run_dir(t);
        int fds[2];
        size_t n = 1;
        switch (cases[i].kind) {
        case 0:
            fds[0] = unix_socket(t->bus, 0660, false);
            break;
        case 1:
        case 2:
            fds[0] = tcp_socket();
            break;
        case 3:
            fds[0] = unix_socket(t->bus, 0660, true);
            break;
        default:
            fds[0] = unix_socket(t->bus, 0660, true);
            fds[1] = unix_socket(fb_e2e_file(t, "run/b2.sock"), 0660, true);
            n = 2;
        }
        struct fb_e2e_spawn sp = {.fds = fds, .nfds = n, .fdnames = cases[i].names};
        int st = fb_e2e_start_fail_with(t, &sp, NULL);
        ck_assert_msg(EXIT_IS(st, 1), "case %zu: exit status 0x%x", i, st);
        char *err = fb_e2e_stderr(t);
        ck_assert_msg(strstr(err, cases[i].want) != NULL,
                      "case %zu: refusal does not say '%s': %s", i, cases[i].want, err);
        /* Refused before anything was loaded: log.so never ran. */
        ck_assert_msg(access(fb_e2e_file(t, "log.txt"), F_OK) != 0,
                      "case %zu: the plugin was loaded", i);
        free(err);
        for (size_t k = 0; k < n; k++)
            close(fds[k]);
        fb_e2e_free(t);
    }
}
END_TEST

/* ------------------------------------------------------------ logging */

/* Every line of text starts with prefix (and there is at least one). */
static bool every_line_starts(const char *text, const char *prefix, const char *alt)
{
    int n = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, prefix, strlen(prefix)) != 0 &&
            (!alt || strncmp(p, alt, strlen(alt)) != 0))
            return false;
        n++;
        p = nl ? nl + 1 : p + strlen(p);
    }
    return n > 0;
}

/* Sets JOURNAL_STREAM to the device:inode of the daemon's stderr file
 * (made now, so its inode is known: the harness opens it with O_TRUNC, the
 * same inode), or with `other` to another inode on that device. */
static void journal_stream_at_stderr(struct fb_e2e *t, bool other)
{
    if (access(t->errfile, F_OK) != 0)
        fb_e2e_write(t, "fidbusd.stderr", "");
    struct stat st;
    ck_assert(stat(t->errfile, &st) == 0);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + (other ? 1 : 0));
    ck_assert(setenv("JOURNAL_STREAM", js, 1) == 0);
}

/* journald's rule: "<N>" prefixes only while stderr is the stream named by
 * JOURNAL_STREAM; no timestamp either way (journald adds its own). */
START_TEST(test_e2e_systemd_journal_prefix)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, BASE);
    journal_stream_at_stderr(t, false);
    fb_e2e_start(t);
    fb_e2e_stop_ok(t);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(every_line_starts(err, "<6>", "<4>"),
                  "with JOURNAL_STREAM = stderr, lines lack a <N> prefix: %s", err);
    ck_assert_msg(strstr(err, "\n<6>ready: ") != NULL && strstr(err, "fidbusd:") == NULL,
                  "journal lines: %s", err);
    free(err);

    /* The variable inherited, but stderr is another file: plain lines. */
    journal_stream_at_stderr(t, true);
    fb_e2e_start(t);
    fb_e2e_stop_ok(t);
    err = fb_e2e_stderr(t);
    ck_assert_msg(every_line_starts(err, "fidbusd: info: ", "fidbusd: warn: "),
                  "JOURNAL_STREAM names another file, yet: %s", err);
    free(err);
    unsetenv("JOURNAL_STREAM");
    fb_e2e_free(t);
}
END_TEST

/* A config the daemon refuses is its last word under systemd: it goes
 * through the logger too, as an error ("<3>") for journald, and with the
 * usual "fidbusd: error: " on a terminal. */
START_TEST(test_e2e_systemd_config_error_priority)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, "[route r]\nevent = x\nto = fidbus.log\nmode = sideways\n");
    journal_stream_at_stderr(t, false);
    int status = fb_e2e_start_fail(t, NULL);
    unsetenv("JOURNAL_STREAM");
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(EXIT_IS(status, 1), "exit status 0x%x; stderr: %s", status, err);
    ck_assert_msg(strncmp(err, "<3>", 3) == 0 && strstr(err, "fidbusd.conf:") &&
                      every_line_starts(err, "<3>", NULL),
                  "the config error is not one <3> journal line: %s", err);
    free(err);

    status = fb_e2e_start_fail(t, NULL);
    err = fb_e2e_stderr(t);
    ck_assert_msg(EXIT_IS(status, 1), "exit status 0x%x; stderr: %s", status, err);
    ck_assert_msg(strncmp(err, "fidbusd: error: ", 16) == 0 &&
                      strstr(err, "fidbusd.conf:"),
                  "on a terminal the config error reads: %s", err);
    free(err);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_systemd_suite(void)
{
    Suite *s = suite_create("e2e.systemd");
    TCase *tc = tcase_create("systemd");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_systemd_notify_order);
    tcase_add_test(tc, test_e2e_systemd_notify_abstract);
    tcase_add_test(tc, test_e2e_systemd_listen_fds);
    tcase_add_test(tc, test_e2e_systemd_listen_by_path);
    tcase_add_test(tc, test_e2e_systemd_listen_unknown_name);
    tcase_add_test(tc, test_e2e_systemd_listen_refused);
    tcase_add_test(tc, test_e2e_systemd_journal_prefix);
    tcase_add_test(tc, test_e2e_systemd_config_error_priority);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_systemd_suite());
}
