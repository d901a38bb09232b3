/*
 * e2e.trust: what fidbusd and fidbusctl trust on disk (README "Directories
 * and files it trusts").
 *
 * The attacks are played end to end as another local user would: a state
 * dir (or runtime dir, or state file) that another user made or can write,
 * holding a state.cbor whose config_hash matches and that names a plugin;
 * a plugin file or its directory that another user can write; a planted
 * /tmp/fidbus-UID with a listening socket for fidbusctl's default search.
 * Each must be refused with one line naming the path, and the plugin (the
 * lifecycle test plugin, which writes "init" to a file) must never run.
 * The daemon runs as root here (as in CI), so "another user" is played by
 * chown to uid 65534 or 2001 and by setuid children.
 *
 * Also: a state disk that is full at start-up (RLIMIT_FSIZE) must leave
 * state.cbor as it was, and a FIFO at state.cbor must not hang start-up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e/harness.h"

#define NOBODY 65534
/* A uid no account has: the user fidbusctl or fidbusd runs as below. */
#define VICTIM 64999u
#define ATTACKER 2001u

/* ------------------------------------------------------------ helpers */

static int ctl(struct fb_e2e *t, const char *const args[], char **out)
{
    const char *argv[24] = {fb_e2e_built("daemon/fidbusctl"), "--socket", t->control};
    size_t n = 3;
    for (size_t i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *err = NULL;
    int st = fb_e2e_run(t, argv, out, &err);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fprintf(stderr, "fidbusctl %s: %s\n", args[0], err ? err : "");
    free(err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The daemon's stderr has exactly one error line, and it contains needle
 * and the fix: `fix`, or with fix NULL "remove it", "chmod" or "chown". */
static void assert_one_error_line(struct fb_e2e *t, const char *needle, const char *fix)
{
    char *log = fb_e2e_stderr(t);
    int errors = 0;
    bool named = false;
    for (char *line = log, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!strstr(line, "error"))
            continue;
        errors++;
        named = strstr(line, needle) &&
                (fix ? strstr(line, fix) != NULL
                     : strstr(line, "remove it") || strstr(line, "chmod") ||
                           strstr(line, "chown"));
    }
    free(log);
    char *again = fb_e2e_stderr(t);
    ck_assert_msg(errors == 1 && named,
                  "want one error line naming %s and the fix, got %d; stderr:\n%s",
                  needle, errors, again);
    free(again);
}

static void assert_refused(struct fb_e2e *t, const char *needle)
{
    int st = fb_e2e_start_fail(t, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "fidbusd: wait status %d", st);
    assert_one_error_line(t, needle, NULL);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
    size_t len = 0;
    char *b = fb_e2e_read(from, &len);
    ck_assert_msg(b != NULL, "cannot read %s", from);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ck_assert_msg(fd >= 0, "%s: %s", to, strerror(errno));
    ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
    ck_assert_int_eq(chmod(to, mode), 0);
    free(b);
}

/* -------------------------------------------- item 1: planted dirs */

/*
 * The attack of item 1 with everything in place: a state.cbor written
 * from this very config (so its config_hash matches) that names a plugin,
 * in a state dir another user owns or can write, or in a runtime dir
 * such; or the state file itself another user's. Every variant is refused
 * with one line, and the plugin never runs. Once the dirs are ours again
 * the same state is restored and the plugin runs: the bait was real.
 */
START_TEST(test_e2e_trust_planted_state)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_LOG);
    char marker[200];
    snprintf(marker, sizeof marker, "%s", fb_e2e_file(t, "ran.txt"));
    char conf[256];
    snprintf(conf, sizeof conf, "{\"file\": \"%s\"}", marker);
    const char *load[] = {"plugin", "load", fb_e2e_built("tests/plugins/lifecycle.so"),
                          "--name", "evil", "--config",
                          conf,     NULL};
    ck_assert_int_eq(ctl(t, load, NULL), 0);
    fb_e2e_stop_ok(t);
    ck_assert_int_eq(unlink(marker), 0);

    char state_dir[200], state_file[220], run_dir[200];
    snprintf(state_dir, sizeof state_dir, "%s/state", t->dir);
    snprintf(state_file, sizeof state_file, "%s/state.cbor", state_dir);
    snprintf(run_dir, sizeof run_dir, "%s/run", t->dir);
    ck_assert(exists(state_file));

    /* another user's state dir (and file), mode 0750 */
    ck_assert_int_eq(chown(state_dir, NOBODY, NOBODY), 0);
    ck_assert_int_eq(chown(state_file, NOBODY, NOBODY), 0);
    assert_refused(t, state_dir);
    ck_assert_msg(!exists(marker), "the planted plugin ran");
    ck_assert_int_eq(chown(state_dir, 0, 0), 0);

    /* our state dir, but the state file is another user's */
    assert_refused(t, state_file);
    ck_assert_msg(!exists(marker), "the planted plugin ran");
    ck_assert_int_eq(chown(state_file, 0, 0), 0);

    /* our state dir, mode 0777 (the daemon's own uid owns it) */
    ck_assert_int_eq(chmod(state_dir, 0777), 0);
    assert_refused(t, state_dir);
    ck_assert_msg(!exists(marker), "the planted plugin ran");
    /* sticky does not make the directory itself safe */
    ck_assert_int_eq(chmod(state_dir, 01777), 0);
    assert_refused(t, state_dir);
    ck_assert_int_eq(chmod(state_dir, 0750), 0);

    /* our state file, but group/others may write it */
    ck_assert_int_eq(chmod(state_file, 0666), 0);
    assert_refused(t, state_file);
    ck_assert_int_eq(chmod(state_file, 0640), 0);

    /* the runtime dir (plugin copies, sockets): another user's, then 0777 */
    ck_assert_int_eq(chown(run_dir, NOBODY, NOBODY), 0);
    assert_refused(t, run_dir);
    ck_assert_int_eq(chown(run_dir, 0, 0), 0);
    ck_assert_int_eq(chmod(run_dir, 0777), 0);
    assert_refused(t, run_dir);
    ck_assert_int_eq(chmod(run_dir, 0755), 0);
    /* a symlink in place of the runtime dir is not followed */
    char moved[220];
    snprintf(moved, sizeof moved, "%s/run-real", t->dir);
    ck_assert_int_eq(rename(run_dir, moved), 0);
    ck_assert_int_eq(symlink(moved, run_dir), 0);
    assert_refused(t, run_dir);
    ck_assert_int_eq(unlink(run_dir), 0);
    ck_assert_int_eq(rename(moved, run_dir), 0);
    ck_assert_msg(!exists(marker), "the planted plugin ran");

    /* All ours again, under a sticky world-writable ancestor (as /tmp):
     * the state is restored and the plugin it names runs. */
    ck_assert_int_eq(chmod(t->dir, 01777), 0);
    fb_e2e_start(t);
    char *m = fb_e2e_read(marker, NULL);
    ck_assert_msg(m && strstr(m, "init"), "the state was not restored: %s", m);
    free(m);
    fb_e2e_stop_ok(t);
    ck_assert_int_eq(chmod(t->dir, 0700), 0);
    fb_e2e_free(t);
}
END_TEST

/* Runs argv as uid VICTIM with env, stdout and stderr to /dev/null. While
 * it runs, accepts on listen_fd (non-blocking); returns how many
 * connections came, *status the wait status. */
static int run_as_victim(const char *const argv[], const char *const env[], int listen_fd,
                         int *status)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0);
        dup2(dn, 1);
        dup2(dn, 2);
        if (fb_e2e_drop_to(VICTIM, VICTIM) != 0)
            _exit(120);
        execve(argv[0], (char *const *)argv, (char *const *)env);
        _exit(127);
    }
    int conns = 0;
    uint64_t deadline = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    for (;;) {
        struct pollfd p = {.fd = listen_fd, .events = POLLIN};
        if (listen_fd >= 0 && poll(&p, 1, 20) > 0) {
            int c = accept(listen_fd, NULL, NULL);
            if (c >= 0) {
                conns++;
                close(c); /* no HELLO: the client fails at once */
            }
        } else if (listen_fd < 0) {
            poll(NULL, 0, 20);
        }
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            break;
        if (fb_e2e_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            ck_abort_msg("%s as uid %u did not finish in time", argv[0], VICTIM);
        }
    }
    return conns;
}

/* /tmp/fidbus-VICTIM made by ATTACKER with mode `mode` (or by VICTIM), a
 * listening bus.sock in it. Returns the listening fd. */
static void unplant_tmp_dir(const char *dir, int fd);

static int plant_tmp_dir(const char *dir, uid_t owner, mode_t mode)
{
    char sock[128];
    snprintf(sock, sizeof sock, "%s/bus.sock", dir);
    unplant_tmp_dir(dir, -1); /* left by an earlier failed run */
    ck_assert_msg(!exists(dir), "%s is in the way", dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert(fd >= 0);
    struct sockaddr_un sa;
    fb_e2e_sun(&sa, sock);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(chmod(sock, 0777), 0);
    ck_assert_int_eq(chown(dir, owner, owner), 0);
    ck_assert_int_eq(chmod(dir, mode), 0);
    return fd;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Closes fd and removes dir with whatever is in it (a daemon that ran
 * there may have left sockets, state and plugin copies). */
static void unplant_tmp_dir(const char *dir, int fd)
{
    if (fd >= 0)
        close(fd);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/*
 * fidbusctl's default search, with XDG_RUNTIME_DIR unset or pointing
 * nowhere: a /tmp/fidbus-UID another user made (mode 0777, a listening
 * bus.sock in it) gets no connection; the same dir made by the caller
 * does, and so does the planted one when named by FIDBUS_RUNTIME_DIR.
 */
START_TEST(test_e2e_trust_fidbusctl_planted_tmp)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/fidbus-%u", VICTIM);
    const char *argv[] = {fb_e2e_built("daemon/fidbusctl"), "publish", "trust.x", "--ack",
                          NULL};
    const char *no_xdg[] = {"PATH=/usr/bin:/bin", NULL};
    const char *xdg_nowhere[] = {"PATH=/usr/bin:/bin", "XDG_RUNTIME_DIR=/nonexistent-fb",
                                 NULL};
    char explicit_rt[96];
    snprintf(explicit_rt, sizeof explicit_rt, "FIDBUS_RUNTIME_DIR=%s", dir);
    const char *explicit_env[] = {"PATH=/usr/bin:/bin", explicit_rt, NULL};
    int st;

    int fd = plant_tmp_dir(dir, ATTACKER, 0777);
    ck_assert_msg(run_as_victim(argv, no_xdg, fd, &st) == 0,
                  "fidbusctl connected to the bus socket in a planted %s", dir);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 3, "fidbusctl: status %d", st);
    ck_assert_msg(run_as_victim(argv, xdg_nowhere, fd, &st) == 0,
                  "fidbusctl connected to the bus socket in a planted %s", dir);
    /* also when it is the caller's own uid on a dir others can write */
    ck_assert_int_eq(chown(dir, VICTIM, VICTIM), 0);
    ck_assert_msg(run_as_victim(argv, no_xdg, fd, &st) == 0,
                  "fidbusctl used a group/world-writable %s", dir);
    /* given explicitly, it is used as given */
    ck_assert_int_eq(chown(dir, ATTACKER, ATTACKER), 0);
    ck_assert_msg(run_as_victim(argv, explicit_env, fd, &st) == 1,
                  "FIDBUS_RUNTIME_DIR=%s was not used as given", dir);
    unplant_tmp_dir(dir, fd);

    /* the caller's own private dir is found */
    fd = plant_tmp_dir(dir, VICTIM, 0700);
    ck_assert_msg(run_as_victim(argv, no_xdg, fd, &st) == 1,
                  "fidbusctl did not find the bus in its own %s", dir);
    unplant_tmp_dir(dir, fd);
}
END_TEST

/*
 * fidbusd --default-config without XDG_RUNTIME_DIR (as under sudo) and a
 * /tmp/fidbus-UID that another user made: refused with one line naming it,
 * rather than run with whatever they put in it.
 */
START_TEST(test_e2e_trust_default_config_planted_tmp)
{
    char dir[64], state[80];
    snprintf(dir, sizeof dir, "/tmp/fidbus-%u", VICTIM);
    snprintf(state, sizeof state, "%s/state", dir);
    /* no socket in it: a daemon that accepted the dir would start */
    unplant_tmp_dir(dir, plant_tmp_dir(dir, ATTACKER, 0777));
    ck_assert_int_eq(mkdir(dir, 0777), 0);
    ck_assert_int_eq(chmod(dir, 0777), 0);
    ck_assert_int_eq(chown(dir, ATTACKER, ATTACKER), 0);
    int fd = -1;
    ck_assert_int_eq(mkdir(state, 0777), 0);
    ck_assert_int_eq(chmod(state, 0777), 0);
    ck_assert_int_eq(chown(state, ATTACKER, ATTACKER), 0);

    struct fb_e2e *t = fb_e2e_new();
    char errfile[200];
    snprintf(errfile, sizeof errfile, "%s", fb_e2e_file(t, "daemon.err"));
    int efd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    ck_assert(efd >= 0);
    ck_assert_int_eq(fchmod(efd, 0666), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        dup2(efd, 1);
        dup2(efd, 2);
        if (fb_e2e_drop_to(VICTIM, VICTIM) != 0)
            _exit(120);
        const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--default-config", NULL};
        const char *env[] = {"PATH=/usr/bin:/bin", NULL};
        execve(argv[0], (char *const *)argv, (char *const *)env);
        _exit(127);
    }
    close(efd);
    int st = 0;
    uint64_t deadline = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (fb_e2e_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            unplant_tmp_dir(dir, fd);
            ck_abort_msg("fidbusd --default-config ran in a planted %s", dir);
        }
        poll(NULL, 0, 20);
    }
    char *log = fb_e2e_read(errfile, NULL);
    unplant_tmp_dir(dir, fd);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d; stderr:\n%s", st,
                  log);
    int lines = 0;
    for (const char *p = log; p && *p; p++)
        lines += *p == '\n';
    ck_assert_msg(lines == 1 && strstr(log, dir) && strstr(log, "remove it"),
                  "want one line naming %s and the fix; stderr:\n%s", dir, log);
    free(log);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------ item 7: plugin files */

/*
 * As root, a plugin file another user can write (mode, or owner), or one
 * in a directory another user can write, is refused, and never runs; a
 * sticky directory such as /tmp is fine. State restore applies the same
 * check: a plugin made writable since it was loaded is not restored.
 */
START_TEST(test_e2e_trust_plugin_files)
{
    struct fb_e2e *t = fb_e2e_new();
    char pdir[200], so[220];
    snprintf(pdir, sizeof pdir, "%s/p", t->dir);
    snprintf(so, sizeof so, "%s/lifecycle.so", pdir);
    ck_assert_int_eq(mkdir(pdir, 0755), 0);
    copy_file(fb_e2e_built("tests/plugins/lifecycle.so"), so, 0644);
    char marker[200];
    snprintf(marker, sizeof marker, "%s", fb_e2e_file(t, "ran.txt"));
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG
                  "[plugin evil]\npath = @D@/p/lifecycle.so\nfile = @D@/ran.txt\n");

    ck_assert_int_eq(chmod(so, 0666), 0);
    assert_refused(t, so);
    ck_assert_int_eq(chmod(so, 0644), 0);
    ck_assert_int_eq(chown(so, NOBODY, NOBODY), 0);
    assert_refused(t, so);
    ck_assert_int_eq(chown(so, 0, 0), 0);
    ck_assert_int_eq(chmod(pdir, 0777), 0);
    assert_refused(t, pdir);
    ck_assert_int_eq(chmod(pdir, 0755), 0);
    ck_assert_int_eq(chown(pdir, NOBODY, NOBODY), 0);
    assert_refused(t, pdir);
    ck_assert_int_eq(chown(pdir, 0, 0), 0);
    ck_assert_msg(!exists(marker), "a plugin another user could write ran as root");

    /* a sticky world-writable dir (as /tmp) holding a root-owned file */
    ck_assert_int_eq(chmod(pdir, 01777), 0);
    fb_e2e_start(t);
    fb_e2e_stop_ok(t);
    ck_assert(exists(marker));
    ck_assert_int_eq(unlink(marker), 0);

    /* state restore: loaded at run time, made writable while stopped */
    fb_e2e_config(t, NULL, FB_E2E_LOG);
    fb_e2e_start(t);
    char conf[256];
    snprintf(conf, sizeof conf, "{\"file\": \"%s\"}", marker);
    const char *load[] = {"plugin", "load", so, "--name", "evil", "--config", conf, NULL};
    ck_assert_int_eq(ctl(t, load, NULL), 0);
    fb_e2e_stop_ok(t);
    ck_assert_int_eq(unlink(marker), 0);
    ck_assert_int_eq(chmod(so, 0646), 0);
    fb_e2e_start(t); /* the config is applied instead */
    char *log = fb_e2e_stderr(t);
    const char *want[] = {"cannot be restored", "refusing to load it as root", NULL};
    ck_assert_msg(fb_e2e_has_line(log, want), "stderr:\n%s", log);
    free(log);
    fb_e2e_stop_ok(t);
    ck_assert_msg(!exists(marker), "a plugin another user could write was restored");
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------ item 5: a full state disk */

static uint64_t generation(struct fb_e2e *t)
{
    const char *list[] = {"--json", "route", "list", NULL};
    char *out = NULL;
    ck_assert_int_eq(ctl(t, list, &out), 0);
    const char *g = strstr(out, "\"generation\":");
    ck_assert_msg(g != NULL, "route list: %s", out);
    uint64_t v = strtoull(g + 13, NULL, 10);
    free(out);
    return v;
}

static bool has_route(struct fb_e2e *t, const char *name)
{
    const char *list[] = {"--json", "route", "list", NULL};
    char *out = NULL;
    ck_assert_int_eq(ctl(t, list, &out), 0);
    char q[64];
    snprintf(q, sizeof q, "\"%s\"", name);
    bool yes = strstr(out, q) != NULL;
    free(out);
    return yes;
}

static size_t count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    ck_assert(d != NULL);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/*
 * Add routes, stop, start with writes failing (RLIMIT_FSIZE just below the
 * state file's size, as a full disk): it exits 1 and state.cbor is the
 * same, byte for byte, with no backup made of it. Started normally, the
 * routes are there and the generation goes on.
 */
START_TEST(test_e2e_trust_full_state_disk)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_TP("lifecycle"));
    /* enough routes that state.cbor is far larger than the plugin copy
     * and the log lines, which the same limit applies to */
    size_t cap = 1 << 20, n = 0;
    char *apply = malloc(cap);
    ck_assert(apply != NULL);
    n += (size_t)snprintf(apply + n, cap - n, "{\"add\": [");
    for (int i = 0; i < 600; i++)
        n += (size_t)snprintf(apply + n, cap - n,
                              "%s{\"name\": \"full%03d\", \"event\": \"full.%03d.*\", "
                              "\"tags\": {\"pad\": \"%0150d\"}, \"to\": [\"test.life\"]}",
                              i ? ", " : "", i, i, i);
    n += (size_t)snprintf(apply + n, cap - n, "]}\n");
    char file[200];
    snprintf(file, sizeof file, "%s", fb_e2e_write(t, "routes.json", apply));
    free(apply);
    const char *ap[] = {"route", "apply", file, NULL};
    ck_assert_int_eq(ctl(t, ap, NULL), 0);
    uint64_t gen = generation(t);
    fb_e2e_stop_ok(t);

    char state_dir[200], state_file[220];
    snprintf(state_dir, sizeof state_dir, "%s/state", t->dir);
    snprintf(state_file, sizeof state_file, "%s/state.cbor", state_dir);
    size_t len = 0, len2 = 0;
    char *before = fb_e2e_read(state_file, &len);
    ck_assert(before != NULL);
    struct stat so;
    ck_assert_int_eq(stat(fb_e2e_built("tests/plugins/lifecycle.so"), &so), 0);
    ck_assert_msg(len > (size_t)so.st_size + 8192, "state.cbor %zu bytes, plugin %lld",
                  len, (long long)so.st_size);

    struct fb_e2e_spawn sp = {.fsize = len - 1};
    int st = fb_e2e_start_fail_with(t, &sp, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
    char *after = fb_e2e_read(state_file, &len2);
    ck_assert_msg(after && len2 == len && memcmp(before, after, len) == 0,
                  "state.cbor changed by a start that could not save it");
    ck_assert_uint_eq(count_prefixed(state_dir, "state.cbor."), 0);
    assert_one_error_line(t, "kept as it was", "make room");
    free(before);
    free(after);

    fb_e2e_start(t);
    ck_assert(has_route(t, "full000"));
    ck_assert(has_route(t, "full599"));
    uint64_t gen2 = generation(t);
    ck_assert_msg(gen2 > gen, "generation %llu after %llu", (unsigned long long)gen2,
                  (unsigned long long)gen);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------ item 6: FIFO state */

/* A FIFO at state.cbor: start-up neither hangs in open() nor reads it;
 * it is set aside as corrupt and the config applied. */
START_TEST(test_e2e_trust_fifo_state)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, FB_E2E_LOG);
    char state_dir[200], state_file[220];
    snprintf(state_dir, sizeof state_dir, "%s/state", t->dir);
    snprintf(state_file, sizeof state_file, "%s/state.cbor", state_dir);
    ck_assert_int_eq(mkdir(state_dir, 0750), 0);
    ck_assert_int_eq(mkfifo(state_file, 0600), 0);
    fb_e2e_start(t);
    struct stat st;
    ck_assert_int_eq(lstat(state_file, &st), 0);
    ck_assert_msg(S_ISREG(st.st_mode), "state.cbor was not written anew");
    ck_assert_uint_eq(count_prefixed(state_dir, "state.cbor.corrupt-"), 1);
    char *log = fb_e2e_stderr(t);
    const char *want[] = {"not a regular file", "kept as state.cbor.corrupt-", NULL};
    ck_assert_msg(fb_e2e_has_line(log, want), "stderr:\n%s", log);
    free(log);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("e2e.trust");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    if (geteuid() == 0) {
        /* chown and setuid play the other users */
        tcase_add_test(tc, test_e2e_trust_planted_state);
        tcase_add_test(tc, test_e2e_trust_fidbusctl_planted_tmp);
        tcase_add_test(tc, test_e2e_trust_default_config_planted_tmp);
        tcase_add_test(tc, test_e2e_trust_plugin_files);
    }
    tcase_add_test(tc, test_e2e_trust_full_state_disk);
    tcase_add_test(tc, test_e2e_trust_fifo_state);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (geteuid() != 0)
        fprintf(stderr, "e2e.trust: not root: the tests that play other users are "
                        "skipped\n");
    return fb_e2e_main(suite());
}
