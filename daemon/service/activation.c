/*
 * Socket activation: taking the sockets a service manager passed. See
 * activation.h for the names we know and what adopting means.
 *
 * The checks are strict on purpose. A socket named "bus" that is not a
 * listening Unix stream socket is a unit-file mistake, and a daemon that
 * started anyway would poll a descriptor that never accepts, or accept on
 * the wrong family, and look healthy while nothing connects: refusing to
 * start with the reason is the kinder failure.
 */
#include "service/activation.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"

/* sd_listen_fds(3): passed descriptors start here. */
#define FDS_START 3
/* More than anyone would configure; bounds the loops below. */
#define FDS_MAX 64

void fb_activation_init(struct fb_activation *a)
{
    a->bus = a->control = a->tcp = -1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void fb_activation_close(struct fb_activation *a)
{
    close_fd(&a->bus);
    close_fd(&a->control);
    close_fd(&a->tcp);
}

void fb_activation_describe(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, len, "fd %d", fd);
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *su = (const struct sockaddr_un *)&ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = sl > off ? sl - off : 0;
        if (n > sizeof su->sun_path)
            n = sizeof su->sun_path;
        if (n == 0)
            snprintf(buf, len, "unix:(unnamed)");
        else if (su->sun_path[0] == '\0')
            snprintf(buf, len, "unix:@%.*s", (int)(n - 1), su->sun_path + 1);
        else
            snprintf(buf, len, "unix:%.*s", (int)strnlen(su->sun_path, n), su->sun_path);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *si = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &si->sin_addr, host, sizeof host);
        snprintf(buf, len, "tcp:%s:%u", host, (unsigned)ntohs(si->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *si = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &si->sin6_addr, host, sizeof host);
        snprintf(buf, len, "tcp:[%s]:%u", host, (unsigned)ntohs(si->sin6_port));
    } else {
        snprintf(buf, len, "fd %d (family %d)", fd, (int)ss.ss_family);
    }
}

/* Family, type and whether it listens; false if fd is not a socket. */
static bool sock_kind(int fd, int *domain, int *type, bool *listening)
{
    int v = 0;
    socklen_t sl = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &sl) < 0)
        return false;
    *domain = v;
    sl = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &sl) < 0)
        return false;
    *type = v;
    sl = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &sl) < 0)
        return false;
    *listening = v != 0;
    return true;
}

/* Is fd's local address the Unix path `path`? */
static bool unix_path_is(int fd, const char *path)
{
    if (!path)
        return false;
    struct sockaddr_un su;
    socklen_t sl = sizeof su;
    memset(&su, 0, sizeof su);
    if (getsockname(fd, (struct sockaddr *)&su, &sl) < 0 || su.sun_family != AF_UNIX)
        return false;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = sl > off ? sl - off : 0;
    if (n == 0 || su.sun_path[0] == '\0' || n > sizeof su.sun_path)
        return false;
    size_t plen = strnlen(su.sun_path, n);
    return plen == strlen(path) && memcmp(su.sun_path, path, plen) == 0;
}

/* Parses a whole decimal number in [min, max]. */
static bool parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

enum role { ROLE_BUS, ROLE_CONTROL, ROLE_TCP, ROLE_NONE };
static const char *const role_names[] = {"bus", "control", "tcp"};

/* Sorts one passed descriptor into *a, or closes it (unknown name), or
 * refuses it (-EINVAL, err set). */
static int take_one(const struct fb_activation_want *conf, struct fb_activation *a,
                    int fd, const char *name, char *err, size_t errlen)
{
    char desc[200];
    fb_activation_describe(fd, desc, sizeof desc);
    int domain = -1, type = -1;
    bool listening = false;
    bool is_sock = sock_kind(fd, &domain, &type, &listening);

    enum role role = ROLE_NONE;
    for (int r = 0; r < ROLE_NONE; r++)
        if (strcmp(name, role_names[r]) == 0)
            role = (enum role)r;
    bool unix_listener = is_sock && domain == AF_UNIX && type == SOCK_STREAM && listening;
    if (role == ROLE_NONE && unix_listener) {
        /* A unit without FileDescriptorName=: recognise it by its path. */
        if (unix_path_is(fd, conf->unix_path))
            role = ROLE_BUS;
        else if (unix_path_is(fd, conf->control_socket))
            role = ROLE_CONTROL;
    }
    if (role == ROLE_NONE) {
        fb_warn("socket activation: closing fd %d named '%s' (%s): fidbusd adopts only "
                "bus, control and tcp",
                fd, name, desc);
        close(fd);
        return 0;
    }

    bool ok;
    const char *want;
    if (role == ROLE_TCP) {
        ok = is_sock && (domain == AF_INET || domain == AF_INET6) &&
             type == SOCK_STREAM && listening;
        want = "a listening TCP socket";
    } else {
        ok = unix_listener;
        want = "a listening Unix stream socket";
    }
    if (!ok) {
        fb_set_err(err, errlen,
                   "socket activation: fd %d named '%s' (%s) is not %s (%s); check the "
                   "socket unit",
                   fd, name, desc, want,
                   !is_sock     ? "not a socket"
                   : !listening ? "not listening"
                                : "wrong family or type");
        return -EINVAL;
    }
    if (role == ROLE_TCP && !conf->tcp) {
        /* The TCP auth policy is part of [listen] tcp: without it we would
         * not know whether this socket may take unauthenticated clients. */
        fb_set_err(
            err, errlen,
            "socket activation: fd %d named 'tcp' (%s) was passed but [listen] tcp "
            "is not configured (its tcp_auth settings decide who may connect)",
            fd, desc);
        return -EINVAL;
    }
    int *slot = role == ROLE_BUS ? &a->bus : role == ROLE_CONTROL ? &a->control : &a->tcp;
    if (*slot >= 0) {
        fb_set_err(err, errlen,
                   "socket activation: two sockets for '%s' (fd %d and fd %d)",
                   role_names[role], *slot, fd);
        return -EINVAL;
    }
    /* accept4 loops until EAGAIN on the main loop: it must not block. The
     * flag is shared with the manager's copy, which does not mind. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        fb_set_err(err, errlen, "socket activation: fd %d: %s", fd, strerror(e));
        return -e;
    }
    *slot = fd;
    fb_info("socket activation: adopting %s as the %s socket (fd %d, named '%s')", desc,
            role_names[role], fd, name);
    return 0;
}

int fb_activation_take(const struct fb_activation_want *conf, struct fb_activation *a,
                       char *err, size_t errlen)
{
    fb_activation_init(a);
    /* Copies: the strings are not ours to keep once unset. */
    char pidbuf[32], fdsbuf[32];
    const char *spid = getenv("LISTEN_PID");
    const char *sfds = getenv("LISTEN_FDS");
    const char *snames = getenv("LISTEN_FDNAMES");
    /* Longer than a number can be: truncation keeps them invalid. */
    if (spid) {
        snprintf(pidbuf, sizeof pidbuf, "%s", spid);
        spid = pidbuf;
    }
    if (sfds) {
        snprintf(fdsbuf, sizeof fdsbuf, "%s", sfds);
        sfds = fdsbuf;
    }
    char *names = snames ? strdup(snames) : NULL;
    char *names_shown = snames ? strdup(snames) : NULL;
    long pid = 0, n = 0;
    bool ours =
        spid && sfds && parse_long(spid, 1, LONG_MAX, &pid) && pid == (long)getpid();
    bool fds_ok = sfds && parse_long(sfds, 0, FDS_MAX, &n);
    /* Never passed on: a child of ours (none today) must not think the
     * descriptors are its own. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    int rc = 0;

    if (!spid && !sfds)
        goto out;
    if (!ours) {
        fb_debug("socket activation: LISTEN_PID=%s is not this process; ignored",
                 spid ? spid : "(unset)");
        goto out;
    }
    if (!fds_ok) {
        fb_set_err(err, errlen, "socket activation: bad LISTEN_FDS '%s' (0 to %d)", sfds,
                   FDS_MAX);
        rc = -EINVAL;
        goto out;
    }
    if (snames && (!names || !names_shown)) {
        fb_set_err(err, errlen, "socket activation: out of memory");
        rc = -ENOMEM;
        goto out;
    }

    /* Split the names first: a count that does not match means we cannot
     * tell which socket is which, so nothing is adopted. */
    const char *name_of[FDS_MAX];
    long k = 0;
    if (names) {
        char *save = NULL;
        for (char *s = names;; s = NULL) {
            char *tok = strtok_r(s, ":", &save);
            if (!tok)
                break;
            if (k < FDS_MAX)
                name_of[k] = tok;
            k++;
        }
        /* strtok_r skips empty names; systemd never sends any. */
        if (k != n) {
            fb_set_err(err, errlen,
                       "socket activation: LISTEN_FDNAMES '%s' names %ld socket%s but "
                       "LISTEN_FDS is %ld",
                       names_shown, k, k == 1 ? "" : "s", n);
            rc = -EINVAL;
        }
    } else {
        for (k = 0; k < n; k++)
            name_of[k] = "unknown"; /* what sd_listen_fds_with_names says */
    }

    /* Every passed descriptor is ours to close from here on, adopted or
     * not, so mark them all first: a plugin's fork+exec must not keep the
     * manager's sockets open. */
    for (long i = 0; i < n; i++) {
        int fd = FDS_START + (int)i;
        int fl = fcntl(fd, F_GETFD);
        if (fl < 0) {
            if (rc == 0) {
                fb_set_err(err, errlen, "socket activation: LISTEN_FDS=%ld but fd %d: %s",
                           n, fd, strerror(errno));
                rc = -EBADF;
            }
            continue;
        }
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    /* On a refusal the daemon exits: what was not looked at yet is left
     * to the exit to close. */
    for (long i = 0; i < n && rc == 0; i++)
        rc = take_one(conf, a, FDS_START + (int)i, name_of[i], err, errlen);
    if (rc)
        fb_activation_close(a);

out:
    free(names);
    free(names_shown);
    return rc;
}
