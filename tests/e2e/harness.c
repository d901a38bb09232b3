/*
 * End-to-end test harness, the process half (see harness.h): temp dirs,
 * config files, spawning fidbusd with a NOTIFY_SOCKET readiness handshake,
 * stopping it, running the command-line tools, and cleanup. The talking
 * half (connections, frames, output readers) is harness_wire.c.
 *
 * Synchronisation is always on an event: the READY=1 datagram, or the
 * child's pidfd becoming readable when it exits. Nothing here sleeps to let
 * the daemon "catch up".
 */
#include "harness.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

extern char **environ;

/* ------------------------------------------------------------ utilities */

uint64_t fb_e2e_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    ck_assert_msg(p != NULL, "out of memory");
    return p;
}

void fb_e2e_sun(struct sockaddr_un *sa, const char *path)
{
    size_t n = strlen(path);
    ck_assert_msg(n < sizeof sa->sun_path, "socket path too long: %s", path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n + 1);
}

/* Rotating static buffers: paths built inline in argument lists. */
static char *rot_buf(void)
{
    static char bufs[8][PATH_MAX];
    static unsigned next;
    return bufs[next++ % 8];
}

const char *fb_e2e_build_dir(void)
{
    static char dir[PATH_MAX];
    if (dir[0])
        return dir;
    const char *env = getenv("FIDBUS_BUILD_DIR");
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
        return dir;
    }
    /* Run by hand: this binary is BUILD/tests/test_e2e_*. */
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    ck_assert_msg(n > 0, "FIDBUS_BUILD_DIR is not set and /proc/self/exe is unreadable");
    dir[n] = '\0';
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(dir, '/');
        ck_assert_msg(slash != NULL, "cannot find the build dir from %s", dir);
        *slash = '\0';
    }
    return dir;
}

const char *fb_e2e_file(const struct fb_e2e *t, const char *name)
{
    char *b = rot_buf();
    snprintf(b, PATH_MAX, "%s/%s", t->dir, name);
    return b;
}

const char *fb_e2e_built(const char *rel)
{
    char *b = rot_buf();
    snprintf(b, PATH_MAX, "%s/%s", fb_e2e_build_dir(), rel);
    return b;
}

/* fb_e2e_read without Check calls, for use outside a test (fb_e2e_main). */
static char *slurp(const char *path, size_t *lenp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, len = 0;
    char *p = malloc(cap);
    while (p) {
        if (cap - len < 2) {
            char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
        ssize_t n = read(fd, p + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (p) {
        p[len] = '\0';
        if (lenp)
            *lenp = len;
    }
    return p;
}

char *fb_e2e_read(const char *path, size_t *lenp)
{
    errno = 0;
    char *p = slurp(path, lenp);
    ck_assert_msg(p != NULL || errno != ENOMEM, "out of memory reading %s", path);
    return p;
}

long fb_e2e_vm_rss_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *st = fb_e2e_read(path, NULL);
    const char *p = st ? strstr(st, "VmRSS:") : NULL;
    long kib = p ? strtol(p + 6, NULL, 10) : -1;
    free(st);
    return kib;
}

static void write_all(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_msg(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n > 0, "write %s: %s", path, strerror(errno));
        off += (size_t)n;
    }
    close(fd);
}

/* Replaces @B@ with the build dir and @D@ with the temp dir. */
static char *substitute(const struct fb_e2e *t, const char *text)
{
    const char *bdir = fb_e2e_build_dir();
    size_t cap = strlen(text) + 1, len = 0;
    for (const char *p = text; (p = strchr(p, '@')) != NULL; p++)
        cap += PATH_MAX;
    char *out = malloc(cap);
    ck_assert_msg(out != NULL, "out of memory");
    for (const char *p = text; *p;) {
        const char *rep = NULL;
        if (strncmp(p, "@B@", 3) == 0)
            rep = bdir;
        else if (strncmp(p, "@D@", 3) == 0)
            rep = t->dir;
        if (rep) {
            size_t n = strlen(rep);
            memcpy(out + len, rep, n);
            len += n;
            p += 3;
        } else {
            out[len++] = *p++;
        }
    }
    out[len] = '\0';
    return out;
}

/* The last `max` bytes of the daemon's stderr, for failure messages. */
static const char *stderr_tail(const struct fb_e2e *t, size_t max)
{
    static char tail[4096];
    if (max >= sizeof tail)
        max = sizeof tail - 1;
    size_t len = 0;
    char *all = fb_e2e_read(t->errfile, &len);
    if (!all) {
        snprintf(tail, sizeof tail, "(no stderr file)");
        return tail;
    }
    const char *from = len > max ? all + len - max : all;
    snprintf(tail, sizeof tail, "%s", from);
    free(all);
    return tail;
}

/* A sanitizer report in a child's output. In sanitizer builds a leak or
 * error turns the exit status into 1 (ASan's exitcode), which a test that
 * expects exit 1 could not tell apart, so look for the report itself. */
static const char *sanitizer_report(const char *text)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; text && i < sizeof marks / sizeof marks[0]; i++) {
        const char *p = strstr(text, marks[i]);
        if (p)
            return p;
    }
    return NULL;
}

static void assert_no_sanitizer_report(const char *path, const char *who)
{
    char *text = slurp(path, NULL);
    const char *rep = sanitizer_report(text);
    ck_assert_msg(rep == NULL, "%s: sanitizer report:\n%.1500s", who, rep ? rep : "");
    free(text);
}

char *fb_e2e_stderr(const struct fb_e2e *t)
{
    char *s = fb_e2e_read(t->errfile, NULL);
    return s ? s : xstrdup("");
}

/* ------------------------------------------------- cleanup at exit */

#define MAX_LIVE 8
static struct fb_e2e *live[MAX_LIVE];
static bool atexit_done;

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
    (void)st;
    (void)type;
    (void)f;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    if (getenv("FIDBUS_E2E_KEEP")) {
        fprintf(stderr, "e2e: kept %s\n", dir);
        return;
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void kill_daemon(struct fb_e2e *t, bool dump)
{
    if (!t->pid)
        return;
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    t->pid = 0;
    if (dump) {
        char *err = slurp(t->errfile, NULL);
        fprintf(stderr,
                "---- fidbusd stderr (%s), killed by the harness ----\n%s"
                "---- end of fidbusd stderr ----\n",
                t->dir, err ? err : "");
        free(err);
    }
}

static void at_exit(void)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        struct fb_e2e *t = live[i];
        if (!t)
            continue;
        kill_daemon(t, true);
        remove_tree(t->dir);
        live[i] = NULL;
    }
}

/* ------------------------------------------------------------- main */

/*
 * Where the tests' dirs go: $TMPDIR, else /dev/shm when it is a writable
 * tmpfs that allows exec (the daemon dlopens private copies from its
 * runtime dir), else /tmp. Every acknowledged control change fsyncs
 * state.cbor; on a shared disk that fsync has stalled for seconds under
 * parallel builds, and the tests are about behaviour, not disk latency
 * (bench/ measures that, on the real disk).
 */
static const char *tmp_base(size_t maxlen)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp && *tmp && strlen(tmp) <= maxlen)
        return tmp;
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0 && !(vfs.f_flag & (ST_NOEXEC | ST_RDONLY)) &&
        access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    return "/tmp";
}

int fb_e2e_main(Suite *s)
{
    const char *tmp = tmp_base(40);
    char base[64];
    snprintf(base, sizeof base, "%s/fidbus-e2e-XXXXXX", tmp);
    if (!mkdtemp(base)) {
        fprintf(stderr, "e2e: mkdtemp %s: %s\n", base, strerror(errno));
        return EXIT_FAILURE;
    }
    setenv("FIDBUS_E2E_BASE", base, 1);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    DIR *d = opendir(base);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s/fidbusd.stderr", base, e->d_name);
        char *err = slurp(path, NULL);
        if (err && *err)
            fprintf(stderr, "---- %s (left by a failed test) ----\n%s---- end ----\n",
                    path, err);
        free(err);
    }
    if (d)
        closedir(d);
    remove_tree(base);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* ---------------------------------------------------------- lifecycle */

struct fb_e2e *fb_e2e_new(void)
{
    if (!atexit_done) {
        atexit(at_exit);
        atexit_done = true;
        signal(SIGPIPE, SIG_IGN);
    }
    struct fb_e2e *t = calloc(1, sizeof *t);
    ck_assert_msg(t != NULL, "out of memory");
    t->notify_fd = -1;
    t->pidfd = -1;

    /* Unix socket paths are limited to 108 bytes: stay in a short dir. */
    const char *base = getenv("FIDBUS_E2E_BASE");
    if (base && *base && strlen(base) < 60) {
        snprintf(t->dir, sizeof t->dir, "%s/t-XXXXXX", base);
    } else {
        snprintf(t->dir, sizeof t->dir, "%s/fidbus-e2e-XXXXXX", tmp_base(60));
    }
    ck_assert_msg(mkdtemp(t->dir) != NULL, "mkdtemp %s: %s", t->dir, strerror(errno));

    snprintf(t->conf, sizeof t->conf, "%s/fidbusd.conf", t->dir);
    snprintf(t->bus, sizeof t->bus, "%s/run/bus.sock", t->dir);
    snprintf(t->control, sizeof t->control, "%s/run/control.sock", t->dir);
    snprintf(t->bus_addr, sizeof t->bus_addr, "unix:%s", t->bus);
    snprintf(t->errfile, sizeof t->errfile, "%s/fidbusd.stderr", t->dir);
    snprintf(t->notify, sizeof t->notify, "%s/notify.sock", t->dir);

    int i;
    for (i = 0; i < MAX_LIVE && live[i]; i++)
        ;
    ck_assert_msg(i < MAX_LIVE, "too many harness instances at once");
    live[i] = t;
    return t;
}

struct fb_e2e *fb_e2e_free(struct fb_e2e *t)
{
    if (!t)
        return NULL;
    kill_daemon(t, true);
    if (t->notify_fd >= 0)
        close(t->notify_fd);
    if (t->pidfd >= 0)
        close(t->pidfd);
    free(t->notify_log);
    remove_tree(t->dir);
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == t)
            live[i] = NULL;
    free(t->sections);
    free(t);
    return NULL;
}

uint16_t fb_e2e_free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind: %s",
                  strerror(errno));
    socklen_t sl = sizeof sa;
    ck_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

void fb_e2e_config(struct fb_e2e *t, const struct fb_e2e_opts *o, const char *sections)
{
    static const struct fb_e2e_opts defaults;
    if (!o)
        o = &defaults;
    /* Kept so fb_e2e_start can write it again with another TCP port. */
    if (o != &t->opts)
        t->opts = *o;
    if (sections != t->sections) {
        free(t->sections);
        t->sections = xstrdup(sections ? sections : "");
    }
    char head[4096];
    int n = snprintf(head, sizeof head,
                     "; written by the fidbus e2e harness\n"
                     "[daemon]\n"
                     "workers = %u\n"
                     "runtime_dir = %s/run\n"
                     "state_dir = %s/state\n"
                     "log_level = info\n",
                     o->workers ? o->workers : 2, t->dir, t->dir);
    if (o->max_frame)
        n += snprintf(head + n, sizeof head - n, "max_frame = %u\n", o->max_frame);
    if (o->blocking_threads)
        n += snprintf(head + n, sizeof head - n, "blocking_threads = %u\n",
                      o->blocking_threads);
    n += snprintf(head + n, sizeof head - n, "\n[listen]\nunix = %s\n", t->bus);
    t->tcp_addr[0] = '\0';
    if (o->tcp) {
        uint16_t port = fb_e2e_free_tcp_port();
        snprintf(t->tcp_addr, sizeof t->tcp_addr, "tcp:127.0.0.1:%u", port);
        n += snprintf(head + n, sizeof head - n, "tcp = 127.0.0.1:%u\ntcp_auth = none\n",
                      port);
    }
    if (o->listen_extra) {
        char *extra = substitute(t, o->listen_extra);
        n += snprintf(head + n, sizeof head - n, "%s\n", extra);
        free(extra);
    }
    n += snprintf(head + n, sizeof head - n, "\n[control]\nsocket = %s\n", t->control);
    if (o->control_extra) {
        char *extra = substitute(t, o->control_extra);
        n += snprintf(head + n, sizeof head - n, "%s\n", extra);
        free(extra);
    }
    n += snprintf(head + n, sizeof head - n, "\n");
    ck_assert_int_lt(n, (int)sizeof head);

    char *body = substitute(t, sections ? sections : "");
    size_t len = (size_t)n + strlen(body) + 1;
    char *all = malloc(len);
    ck_assert_msg(all != NULL, "out of memory");
    snprintf(all, len, "%s%s", head, body);
    write_all(t->conf, all);
    free(all);
    free(body);
}

const char *fb_e2e_write(struct fb_e2e *t, const char *name, const char *text)
{
    char *body = substitute(t, text);
    const char *path = fb_e2e_file(t, name);
    write_all(path, body);
    free(body);
    return path;
}

/* ------------------------------------------------------ child processes */

/* Variables of ours a child must not inherit: the daemon's are set
 * explicitly. */
static bool env_private(const char *e)
{
    return strncmp(e, "NOTIFY_SOCKET=", 14) == 0 || strncmp(e, "LISTEN_", 7) == 0;
}

/* environ without NOTIFY_SOCKET and LISTEN_*, plus the nextra strings of
 * extra, plus one empty slot before the NULL for spawn's LISTEN_PID. Caller
 * frees the array (not the strings). */
static char **child_env_v(const char *const *extra, size_t nextra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + nextra + 2, sizeof *env);
    ck_assert_msg(env != NULL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!env_private(environ[i]))
            env[k++] = environ[i];
    for (size_t i = 0; i < nextra; i++)
        env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

static char **child_env(const char *extra)
{
    return child_env_v(&extra, extra ? 1 : 0);
}

/* fork + exec with stdout/stderr to out_path/err_path (may be equal). The
 * child dies with us (PR_SET_PDEATHSIG) and inherits no descriptor but
 * 0-2 and, when nfds > 0, fds[i] as 3 + i with LISTEN_PID=its pid added to
 * env (in the slot child_env_v leaves); with nofile > 0, under an open-file
 * limit (soft and hard) of nofile; with fsize > 0, under a file-size limit
 * of fsize bytes and SIGXFSZ ignored (a write past it fails with EFBIG). */
static pid_t spawn_fds(const char *const argv[], char **env, const char *out_path,
                       const char *err_path, const int *fds, size_t nfds, unsigned nofile,
                       unsigned long fsize)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        int err = strcmp(out_path, err_path) == 0
                      ? out
                      : open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        if (in < 0 || out < 0 || err < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        /* Out of the way first, so fds[i] and 3 + j cannot collide. */
        int high[16];
        if (nfds > 16)
            _exit(125);
        for (size_t i = 0; i < nfds; i++)
            if ((high[i] = fcntl(fds[i], F_DUPFD, 100)) < 0)
                _exit(125);
        for (size_t i = 0; i < nfds; i++)
            if (dup2(high[i], 3 + (int)i) < 0)
                _exit(125);
        syscall(SYS_close_range, 3u + (unsigned)nfds, ~0u, 0u);
        char pidvar[40];
        if (nfds) {
            snprintf(pidvar, sizeof pidvar, "LISTEN_PID=%ld", (long)getpid());
            size_t k = 0;
            while (env[k])
                k++;
            env[k] = pidvar; /* the spare slot; env[k + 1] is NULL */
        }
        struct rlimit rl = {nofile, nofile};
        if (nofile && setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(124);
        struct rlimit fl = {fsize, fsize};
        if (fsize &&
            (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &fl) != 0))
            _exit(124);
        signal(SIGPIPE, SIG_DFL);
        execve(argv[0], (char *const *)argv, env);
        dprintf(2, "e2e harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static pid_t spawn(const char *const argv[], char **env, const char *out_path,
                   const char *err_path)
{
    return spawn_fds(argv, env, out_path, err_path, NULL, 0, 0, 0);
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/* Waits up to timeout_ms for pid to exit. Returns true with *status set. */
static bool wait_exit(pid_t pid, int pidfd, int timeout_ms, int *status)
{
    uint64_t deadline = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return true;
        ck_assert_msg(r == 0, "waitpid: %s", strerror(errno));
        uint64_t now = fb_e2e_now_ms();
        if (now >= deadline)
            return false;
        int left = (int)(deadline - now);
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, left);
        } else {
            /* No pidfd (old kernel): this is a wait for an exit, bounded
             * by the deadline, not a synchronisation sleep. */
            poll(NULL, 0, left < 20 ? left : 20);
        }
    }
}

enum ready_result { READY_OK, READY_EXITED, READY_TIMEOUT };

/* Keeps a datagram for fb_e2e_notify_log, with its empty-line separator. */
static void notify_append(struct fb_e2e *t, const char *dg, size_t n)
{
    char *p = realloc(t->notify_log, t->notify_len + n + 3);
    ck_assert_msg(p != NULL, "out of memory");
    t->notify_log = p;
    memcpy(p + t->notify_len, dg, n);
    t->notify_len += n;
    /* "\n\n" ends each datagram, whether or not it ended in a newline. */
    if (n == 0 || dg[n - 1] != '\n')
        p[t->notify_len++] = '\n';
    p[t->notify_len++] = '\n';
    p[t->notify_len] = '\0';
}

/* Drains the notify socket, noting READY=1 / STOPPING=1. */
static bool drain_notify(struct fb_e2e *t)
{
    bool ready = false;
    char dg[4096];
    for (;;) {
        ssize_t n = recv(t->notify_fd, dg, sizeof dg - 1, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        dg[n] = '\0';
        notify_append(t, dg, (size_t)n);
        for (char *line = strtok(dg, "\n"); line; line = strtok(NULL, "\n")) {
            if (strcmp(line, "READY=1") == 0)
                ready = true;
            else if (strcmp(line, "STOPPING=1") == 0)
                t->stopping_seen = true;
        }
    }
    return ready;
}

static enum ready_result wait_ready(struct fb_e2e *t, int *status)
{
    uint64_t deadline = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    for (;;) {
        if (drain_notify(t))
            return READY_OK;
        pid_t r = waitpid(t->pid, status, WNOHANG);
        if (r == t->pid) {
            /* It may have said READY just before dying. */
            return drain_notify(t) ? READY_OK : READY_EXITED;
        }
        uint64_t now = fb_e2e_now_ms();
        if (now >= deadline)
            return READY_TIMEOUT;
        struct pollfd p[2] = {{.fd = t->notify_fd, .events = POLLIN},
                              {.fd = t->pidfd, .events = POLLIN}};
        int left = (int)(deadline - now);
        if (t->pidfd < 0 && left > 20)
            left = 20; /* see wait_exit */
        poll(p, t->pidfd >= 0 ? 2 : 1, left);
    }
}

const char *fb_e2e_notify_log(struct fb_e2e *t)
{
    if (t->notify_fd >= 0)
        drain_notify(t);
    return t->notify_log ? t->notify_log : "";
}

/* Is `line` one of the lines of the datagram [p, end)? */
static bool dg_has_line(const char *p, const char *end, const char *line)
{
    size_t ll = strlen(line);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) == ll && memcmp(p, line, ll) == 0)
            return true;
        p = le + 1;
    }
    return false;
}

char *fb_e2e_notify_wait(struct fb_e2e *t, const char *line, int timeout_ms)
{
    ck_assert_msg(t->notify_fd >= 0, "no notify socket (daemon never spawned)");
    uint64_t deadline = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        drain_notify(t);
        while (t->notify_log && t->notify_pos < t->notify_len) {
            const char *dg = t->notify_log + t->notify_pos;
            const char *sep = strstr(dg, "\n\n");
            ck_assert(sep != NULL);
            t->notify_pos = (size_t)(sep + 2 - t->notify_log);
            if (dg_has_line(dg, sep, line)) {
                char *copy = strndup(dg, (size_t)(sep - dg));
                ck_assert_msg(copy != NULL, "out of memory");
                return copy;
            }
        }
        uint64_t now = fb_e2e_now_ms();
        if (now >= deadline)
            return NULL;
        struct pollfd p = {.fd = t->notify_fd, .events = POLLIN};
        poll(&p, 1, (int)(deadline - now));
    }
}

static void spawn_daemon_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp);

static void spawn_daemon(struct fb_e2e *t)
{
    spawn_daemon_with(t, NULL);
}

static void spawn_daemon_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp)
{
    ck_assert_msg(t->pid == 0, "daemon already running");
    if (t->notify_fd < 0) {
        t->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_msg(t->notify_fd >= 0, "socket: %s", strerror(errno));
        struct sockaddr_un sa;
        socklen_t sl = sizeof sa;
        if (sp && sp->notify_abstract) {
            /* Unique per test: the abstract namespace is per network
             * namespace, not per directory. */
            const char *base = strrchr(t->dir, '/');
            snprintf(t->notify, sizeof t->notify, "@fidbus-e2e-%ld-%s", (long)getpid(),
                     base ? base + 1 : t->dir);
            memset(&sa, 0, sizeof sa);
            sa.sun_family = AF_UNIX;
            size_t n = strlen(t->notify);
            memcpy(sa.sun_path + 1, t->notify + 1, n - 1);
            sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        } else {
            fb_e2e_sun(&sa, t->notify);
        }
        ck_assert_msg(bind(t->notify_fd, (struct sockaddr *)&sa, sl) == 0, "bind %s: %s",
                      t->notify, strerror(errno));
    }
    drain_notify(t);
    t->stopping_seen = false;
    t->notify_len = t->notify_pos = 0;
    if (t->notify_log)
        t->notify_log[0] = '\0';

    char envvar[200], fdsvar[40], namesvar[300];
    const char *extra[3] = {envvar, fdsvar, namesvar};
    size_t nextra = 1;
    snprintf(envvar, sizeof envvar, "NOTIFY_SOCKET=%s", t->notify);
    size_t nfds = sp ? sp->nfds : 0;
    if (nfds) {
        snprintf(fdsvar, sizeof fdsvar, "LISTEN_FDS=%zu", nfds);
        nextra++;
        if (sp->fdnames) {
            snprintf(namesvar, sizeof namesvar, "LISTEN_FDNAMES=%s", sp->fdnames);
            nextra++;
        }
    }
    char **env = child_env_v(extra, nextra);
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "-c", t->conf, NULL};
    ck_assert_msg(access(argv[0], X_OK) == 0, "%s: %s", argv[0], strerror(errno));
    t->pid = spawn_fds(argv, env, t->errfile, t->errfile, nfds ? sp->fds : NULL, nfds,
                       sp ? sp->nofile : 0, sp ? sp->fsize : 0);
    free(env);
    if (t->pidfd >= 0)
        close(t->pidfd);
    t->pidfd = pidfd_open_(t->pid);
}

/* Did the daemon fail because its TCP port was taken? fb_e2e_free_tcp_port's
 * port is only free when it looks: something may take it before the daemon
 * binds it (ephemeral ports of parallel tests' connections, say). */
static bool port_taken(const struct fb_e2e *t)
{
    if (!t->tcp_addr[0] || !t->opts.tcp || !t->sections)
        return false;
    char *err = fb_e2e_stderr(t);
    bool taken = strcasestr(err, "in use") != NULL;
    free(err);
    return taken;
}

void fb_e2e_start(struct fb_e2e *t)
{
    int status = 0;
    enum ready_result r;
    for (int attempt = 0;; attempt++) {
        spawn_daemon(t);
        r = wait_ready(t, &status);
        if (r != READY_EXITED || attempt == 3 || !port_taken(t))
            break;
        t->pid = 0;
        fb_e2e_config(t, &t->opts, t->sections);
    }
    if (r == READY_EXITED) {
        t->pid = 0;
        ck_abort_msg("fidbusd exited before READY=1 (status 0x%x); stderr:\n%s", status,
                     stderr_tail(t, 1500));
    }
    ck_assert_msg(r == READY_OK, "fidbusd sent no READY=1 within %d ms; stderr:\n%s",
                  FB_E2E_TIMEOUT_MS, stderr_tail(t, 1500));
    /* READY promises every listener is bound. */
    ck_assert_msg(access(t->bus, F_OK) == 0, "READY=1 but no socket %s", t->bus);
}

void fb_e2e_start_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp)
{
    int status = 0;
    spawn_daemon_with(t, sp);
    enum ready_result r = wait_ready(t, &status);
    if (r == READY_EXITED) {
        t->pid = 0;
        ck_abort_msg("fidbusd exited before READY=1 (status 0x%x); stderr:\n%s", status,
                     stderr_tail(t, 1500));
    }
    ck_assert_msg(r == READY_OK, "fidbusd sent no READY=1 within %d ms; stderr:\n%s",
                  FB_E2E_TIMEOUT_MS, stderr_tail(t, 1500));
}

struct fb_e2e *fb_e2e_up(const struct fb_e2e_opts *o, const char *sections)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, o, sections);
    fb_e2e_start(t);
    return t;
}

int fb_e2e_start_fail(struct fb_e2e *t, double *secs)
{
    return fb_e2e_start_fail_with(t, NULL, secs);
}

int fb_e2e_start_fail_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp, double *secs)
{
    uint64_t t0 = fb_e2e_now_ms();
    spawn_daemon_with(t, sp);
    int status = 0;
    enum ready_result r = wait_ready(t, &status);
    ck_assert_msg(r != READY_OK,
                  "fidbusd became ready although it should refuse the "
                  "config; stderr:\n%s",
                  stderr_tail(t, 1500));
    ck_assert_msg(r == READY_EXITED,
                  "fidbusd neither exited nor became ready within "
                  "%d ms; stderr:\n%s",
                  FB_E2E_TIMEOUT_MS, stderr_tail(t, 1500));
    t->pid = 0;
    if (secs)
        *secs = (double)(fb_e2e_now_ms() - t0) / 1000.0;
    /* With passed sockets the test made the files, not the daemon. */
    if (!sp || !sp->nfds)
        ck_assert_msg(access(t->bus, F_OK) != 0,
                      "fidbusd refused to start but left its socket %s", t->bus);
    assert_no_sanitizer_report(t->errfile, "fidbusd");
    return status;
}

int fb_e2e_stop(struct fb_e2e *t)
{
    return fb_e2e_stop_signal(t, SIGTERM);
}

static int stop_common(struct fb_e2e *t, int sig, bool check_files);

int fb_e2e_stop_signal(struct fb_e2e *t, int sig)
{
    return stop_common(t, sig, true);
}

int fb_e2e_stop_passed(struct fb_e2e *t)
{
    return stop_common(t, SIGTERM, false);
}

static int stop_common(struct fb_e2e *t, int sig, bool check_files)
{
    ck_assert_msg(t->pid > 0, "no daemon to stop");
    ck_assert_msg(kill(t->pid, sig) == 0, "kill: %s", strerror(errno));
    int status = 0;
    if (!wait_exit(t->pid, t->pidfd, FB_E2E_TIMEOUT_MS, &status)) {
        ck_abort_msg("fidbusd did not exit within %d ms of %s; stderr:\n%s",
                     FB_E2E_TIMEOUT_MS, strsignal(sig), stderr_tail(t, 1500));
    }
    t->pid = 0;
    drain_notify(t);
    assert_no_sanitizer_report(t->errfile, "fidbusd");
    if (!check_files)
        return status;
    ck_assert_msg(access(t->bus, F_OK) != 0, "fidbusd exited but left %s", t->bus);
    ck_assert_msg(access(t->control, F_OK) != 0, "fidbusd exited but left %s",
                  t->control);
    return status;
}

void fb_e2e_stop_ok(struct fb_e2e *t)
{
    int st = fb_e2e_stop(t);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "fidbusd did not exit 0 after SIGTERM (%s %d); stderr:\n%s",
                  WIFEXITED(st) ? "exit" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), stderr_tail(t, 1500));
}

char *fb_e2e_stop_report(struct fb_e2e *t)
{
    fb_e2e_stop_ok(t);
    char *json = fb_e2e_read(fb_e2e_file(t, "count.json"), NULL);
    ck_assert_msg(json != NULL, "the count plugin wrote no report_file at fini");
    return json;
}

void fb_e2e_kill9(struct fb_e2e *t)
{
    ck_assert_msg(t->pid > 0, "no daemon to kill");
    ck_assert_msg(kill(t->pid, SIGKILL) == 0, "kill: %s", strerror(errno));
    int status = 0;
    if (!wait_exit(t->pid, t->pidfd, FB_E2E_TIMEOUT_MS, &status))
        ck_abort_msg("fidbusd did not die within %d ms of SIGKILL", FB_E2E_TIMEOUT_MS);
    t->pid = 0;
    drain_notify(t);
    /* A report the sanitizers printed before the kill is still a failure. */
    assert_no_sanitizer_report(t->errfile, "fidbusd");
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "fidbusd was not killed by SIGKILL (status 0x%x)", status);
}

int fb_e2e_run(struct fb_e2e *t, const char *const argv[], char **out, char **err)
{
    static unsigned runs;
    char out_path[PATH_MAX], err_path[PATH_MAX];
    snprintf(out_path, sizeof out_path, "%s/run%u.out", t->dir, runs);
    snprintf(err_path, sizeof err_path, "%s/run%u.err", t->dir, runs);
    runs++;
    ck_assert_msg(access(argv[0], X_OK) == 0, "%s: %s", argv[0], strerror(errno));
    char **env = child_env(NULL);
    pid_t pid = spawn(argv, env, out_path, err_path);
    free(env);
    int pidfd = pidfd_open_(pid);
    int status = 0;
    bool done = wait_exit(pid, pidfd, FB_E2E_TIMEOUT_MS, &status);
    if (pidfd >= 0)
        close(pidfd);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ck_abort_msg("%s did not finish within %d ms", argv[0], FB_E2E_TIMEOUT_MS);
    }
    assert_no_sanitizer_report(err_path, argv[0]);
    if (out) {
        *out = fb_e2e_read(out_path, NULL);
        if (!*out)
            *out = xstrdup("");
    }
    if (err) {
        *err = fb_e2e_read(err_path, NULL);
        if (!*err)
            *err = xstrdup("");
    }
    return status;
}

long long fb_e2e_prom_value(struct fb_e2e *t, const char *series)
{
    const char *argv[] = {fb_e2e_built("daemon/fidbusctl"),
                          "--socket",
                          t->control,
                          "stats",
                          "--prometheus",
                          NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(st == 0, "fidbusctl stats --prometheus: status 0x%x: %s", st, err);
    /* a sample starts a line and is followed by one space and its value */
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", series);
    const char *p = strstr(out, needle);
    ck_assert_msg(p, "no %s in:\n%s", series, out);
    long long n = strtoll(p + strlen(needle), NULL, 10);
    free(out);
    free(err);
    return n;
}

int fb_e2e_drop_to(uid_t uid, gid_t gid)
{
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0)
        return -1;
    return 0;
}

void fb_e2e_let_others_in(const struct fb_e2e *t)
{
    char path[200];
    snprintf(path, sizeof path, "%s", t->dir);
    *strrchr(path, '/') = '\0';
    ck_assert_int_eq(chmod(path, 0711), 0);
    ck_assert_int_eq(chmod(t->dir, 0711), 0);
    snprintf(path, sizeof path, "%s/run", t->dir);
    ck_assert_int_eq(chmod(path, 0711), 0);
}

long long fb_e2e_limit_hits(struct fb_e2e *t, const char *reason)
{
    char series[128];
    snprintf(series, sizeof series, "fidbus_limit_hits_total{reason=\"%s\"}", reason);
    return fb_e2e_prom_value(t, series);
}

void fb_e2e_start_fail_says(struct fb_e2e *t, const char *want)
{
    fb_e2e_start_fail(t, NULL);
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(strstr(err, want), "expected '%s' in: %s", want, err);
    free(err);
}

void fb_e2e_config_tcp_key(struct fb_e2e *t, const struct fb_e2e_opts *o, const char *key,
                           mode_t mode, const char *sections)
{
    struct fb_e2e_opts oo = o ? *o : (struct fb_e2e_opts){0};
    ck_assert_msg(!oo.tcp && !oo.listen_extra,
                  "fb_e2e_config_tcp_key writes the listener");
    char text[512];
    snprintf(text, sizeof text, "%s\n", key);
    const char *path = fb_e2e_write(t, "tcp.key", text);
    ck_assert_int_eq(chmod(path, mode), 0);
    uint16_t port = fb_e2e_free_tcp_port();
    char extra[256];
    snprintf(extra, sizeof extra,
             "tcp = 127.0.0.1:%u\ntcp_auth = key\ntcp_key_file = @D@/tcp.key", port);
    oo.listen_extra = extra;
    fb_e2e_config(t, &oo, sections);
    /* extra goes with this frame; with opts.tcp off nothing writes the
     * config again from t->opts */
    t->opts.listen_extra = NULL;
    snprintf(t->tcp_addr, sizeof t->tcp_addr, "tcp:127.0.0.1:%u", port);
}

char *fb_e2e_ctl(struct fb_e2e *t, int code, char **err, ...)
{
    const char *argv[24] = {fb_e2e_built("daemon/fidbusctl"), "--socket", t->control};
    size_t n = 3;
    char args[1024] = "";
    size_t len = 0;
    va_list ap;
    va_start(ap, err);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        ck_assert_msg(n < sizeof argv / sizeof argv[0] - 1,
                      "fb_e2e_ctl: too many arguments");
        argv[n++] = a;
        if (len < sizeof args)
            len += (size_t)snprintf(args + len, sizeof args - len, " %s", a);
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *e = NULL;
    int st = fb_e2e_run(t, argv, &out, &e);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == code,
                  "fidbusctl%s: status 0x%x, expected exit %d; stdout: %s; stderr: %s",
                  args, st, code, out, e);
    if (err)
        *err = e;
    else
        free(e);
    return out;
}
