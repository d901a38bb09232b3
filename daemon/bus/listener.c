/*
 * Bus listeners on the main loop. See listener.h for why we create the
 * sockets by hand. Accepting at EMFILE: nofd.h.
 */
#include "bus/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "bus/nofd.h"
#include "bus/worker.h"
#include "service/activation.h"

struct fb_listener {
    struct fb_daemon *d;
    uv_poll_t poll;
    struct fb_nofd nofd; /* accepting at EMFILE */
    int fd;
    bool is_tcp;
    bool polling;
    unsigned open_handles;
    char *path; /* Unix socket file we created, else NULL */
    dev_t dev;  /* identity of that file, so we only unlink ours */
    ino_t ino;
    unsigned next_worker;
    char name[300];
};

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct fb_listener *l = h->data;
    if (status < 0) {
        fb_warn("%s: poll error: %s", l->name, uv_strerror(status));
        return;
    }
    /* Bounded so one busy listener cannot starve the rest of the loop. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd =
            accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) &&
                fb_nofd_refuse(&l->nofd, l->fd, errno))
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EMFILE &&
                errno != ENFILE)
                fb_warn_limited("%s: accept: %s", l->name, strerror(errno));
            return;
        }
        fb_nofd_ok(&l->nofd);
        if (atomic_load(&l->d->stopping)) {
            close(fd);
            continue;
        }
        if (l->is_tcp) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct fb_admit a;
        if (!fb_conn_admit(l->d, fd, l->is_tcp,
                           l->is_tcp ? (struct sockaddr *)&peer : NULL, &a))
            continue;
        struct fb_worker *w = l->d->workers[l->next_worker++ % l->d->nworkers];
        fb_worker_add_conn(w, fd, l->is_tcp, &a);
    }
}

static struct fb_listener *listener_alloc(struct fb_daemon *d, int fd, bool is_tcp)
{
    struct fb_listener *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->d = d;
    l->fd = fd;
    l->is_tcp = is_tcp;
    return l;
}

int fb_unix_listen(const char *path, unsigned mode, gid_t group, int *fd_out,
                   struct stat *st_out, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fb_set_err(err, errlen, "unix socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fb_set_err(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fb_set_err(err, errlen, "%s exists and is not a socket", path);
            close(fd);
            return -EEXIST;
        }
        /* A socket file: in use if someone accepts on it, else stale. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            fb_set_err(err, errlen,
                       "%s is in use by another process (is fidbusd already running?)",
                       path);
            close(fd);
            return -EADDRINUSE;
        }
        unlink(path);
    }
    /* umask decides the mode between bind and chmod: make it strict. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0) {
        rc = -errno;
        fb_set_err(err, errlen, "bind %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    /* The group is set before the mode opens the socket to it. */
    if (group != (gid_t)-1 && chown(path, (uid_t)-1, group) < 0) {
        rc = -errno;
        fb_set_err(err, errlen, "chgrp %s to gid %u: %s", path, (unsigned)group,
                   strerror(errno));
        unlink(path);
        close(fd);
        return rc;
    }
    if (chmod(path, mode) < 0 || listen(fd, SOMAXCONN) < 0 || stat(path, &st) < 0) {
        rc = -errno;
        fb_set_err(err, errlen, "%s: %s", path, strerror(errno));
        unlink(path);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *st_out = st;
    return 0;
}

void fb_unix_unlink_own(const char *path, dev_t dev, ino_t ino)
{
    struct stat st;
    if (stat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
        unlink(path);
}

int fb_listener_unix(struct fb_daemon *d, const char *path, unsigned mode,
                     struct fb_listener **out, char *err, size_t errlen)
{
    int fd;
    struct stat st;
    int rc = fb_unix_listen(path, mode, (gid_t)-1, &fd, &st, err, errlen);
    if (rc < 0)
        return rc;
    struct fb_listener *l = listener_alloc(d, fd, false);
    if (!l || !(l->path = strdup(path))) {
        free(l);
        unlink(path);
        close(fd);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    snprintf(l->name, sizeof l->name, "unix:%s", path);
    *out = l;
    return 0;
}

int fb_listener_tcp(struct fb_daemon *d, const char *host, uint16_t port,
                    struct fb_listener **out, char *err, size_t errlen)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(host, portstr, &hints, &ai);
    if (g) {
        fb_set_err(err, errlen, "tcp %s:%u: %s", host, port, gai_strerror(g));
        return -EINVAL;
    }
    int rc = -EADDRNOTAVAIL, fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (rc < 0) {
        fb_set_err(err, errlen, "tcp %s:%u: %s", host, port, strerror(-rc));
        return rc;
    }
    struct fb_listener *l = listener_alloc(d, fd, true);
    if (!l) {
        close(fd);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    bool v6 = strchr(host, ':') != NULL;
    snprintf(l->name, sizeof l->name, v6 ? "tcp:[%s]:%u" : "tcp:%s:%u", host, port);
    *out = l;
    return 0;
}

/* A passed socket: no path of ours (never unlinked, mode untouched). */
static int listener_adopt(struct fb_daemon *d, int fd, bool is_tcp,
                          struct fb_listener **out, char *err, size_t errlen)
{
    struct fb_listener *l = listener_alloc(d, fd, is_tcp);
    if (!l) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    fb_activation_describe(fd, l->name, sizeof l->name);
    *out = l;
    return 0;
}

int fb_listener_unix_fd(struct fb_daemon *d, int fd, struct fb_listener **out, char *err,
                        size_t errlen)
{
    return listener_adopt(d, fd, false, out, err, errlen);
}

int fb_listener_tcp_fd(struct fb_daemon *d, int fd, struct fb_listener **out, char *err,
                       size_t errlen)
{
    return listener_adopt(d, fd, true, out, err, errlen);
}

int fb_listener_start(struct fb_listener *l)
{
    int rc = uv_poll_init(l->d->main_loop, &l->poll, l->fd);
    if (rc < 0)
        return rc;
    l->poll.data = l;
    l->polling = true;
    l->open_handles = 1;
    if ((rc = fb_nofd_init(&l->nofd, l->d->main_loop, l->d, &l->poll, on_accept,
                           l->name)) < 0)
        return rc;
    l->open_handles = 2;
    return uv_poll_start(&l->poll, UV_READABLE, on_accept);
}

static void listener_free(struct fb_listener *l)
{
    close(l->fd);
    free(l->path);
    free(l);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct fb_listener *l = h->data;
    if (--l->open_handles == 0)
        listener_free(l);
}

static void on_pause_closed(uv_handle_t *h)
{
    struct fb_nofd *n = h->data;
    struct fb_listener *l =
        (struct fb_listener *)((char *)n - offsetof(struct fb_listener, nofd));
    if (--l->open_handles == 0)
        listener_free(l);
}

void fb_listener_close(struct fb_listener *l)
{
    if (!l)
        return;
    if (l->path)
        fb_unix_unlink_own(l->path, l->dev, l->ino);
    if (l->polling) {
        l->polling = false;
        uv_poll_stop(&l->poll);
        uv_close((uv_handle_t *)&l->poll, on_poll_closed);
        if (l->open_handles == 2)
            fb_nofd_close(&l->nofd, on_pause_closed);
    } else {
        listener_free(l);
    }
}

const char *fb_listener_name(const struct fb_listener *l)
{
    return l->name;
}
