/*
 * conn.list's snapshot of the bus connections (conn_list.h): the request
 * the control thread leaves with each worker, and the worker's answer.
 */
#include "bus/conn_list.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <uv.h>

#include "base/daemon_t.h"
#include "bus/conn_private.h"
#include "bus/worker.h"

struct fb_conn_snap {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* pending reached 0 */
    unsigned refs;       /* the asker's and each asked worker's */
    unsigned pending;    /* workers asked that have not answered */
    bool done;           /* the asker stopped waiting: answers are dropped */
    bool oom;
    struct fb_conn_infos infos;
};

static _Atomic uint64_t next_id = 1;

uint64_t fb_conn_id_next(void)
{
    return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
}

struct fb_conn_info *fb_conn_infos_add(struct fb_conn_infos *a)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct fb_conn_info *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return NULL;
        a->v = v;
        a->cap = cap;
    }
    struct fb_conn_info *i = &a->v[a->n++];
    memset(i, 0, sizeof *i);
    i->uid = i->pid = -1;
    return i;
}

void fb_conn_infos_free(struct fb_conn_infos *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

void fb_conn_set_name(char **name, const struct fidbus_msg *m)
{
    if (!fidbus_msg_has(m, FIDBUS_K_NAME))
        return;
    size_t len = m->name.len;
    if (len > FB_CONN_NAME_MAX) {
        len = FB_CONN_NAME_MAX;
        /* The name is valid UTF-8 (lib/msg.c checks it): back up over
         * continuation bytes so the cut keeps it valid. */
        while (len && (m->name.ptr[len] & 0xC0) == 0x80)
            len--;
    }
    char *s = malloc(len + 1);
    if (!s)
        return;
    memcpy(s, m->name.ptr, len);
    s[len] = '\0';
    free(*name);
    *name = s;
}

void fb_conn_info_peercred(struct fb_conn_info *info, int fd)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
        info->uid = cr.uid;
        info->pid = cr.pid;
    }
}

static void tcp_peer(struct fb_conn *c, char *out, size_t cap)
{
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    char host[INET6_ADDRSTRLEN];
    if (uv_tcp_getpeername(&c->st.u.tcp, (struct sockaddr *)&sa, &salen) < 0)
        return;
    if (sa.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&sa, host, sizeof host);
        snprintf(out, cap, "[%s]:%u", host,
                 (unsigned)ntohs(((struct sockaddr_in6 *)&sa)->sin6_port));
    } else if (sa.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&sa, host, sizeof host);
        snprintf(out, cap, "%s:%u", host,
                 (unsigned)ntohs(((struct sockaddr_in *)&sa)->sin_port));
    }
}

static void fill(struct fb_worker *w, struct fb_conn *c, struct fb_conn_info *i)
{
    i->id = c->id;
    i->kind = c->st.u.h.type == UV_TCP ? FB_CONN_TCP : FB_CONN_UNIX;
    if (i->kind == FB_CONN_TCP) {
        tcp_peer(c, i->peer, sizeof i->peer);
    } else {
        uv_os_fd_t fd = -1;
        if (uv_fileno(&c->st.u.h, &fd) == 0)
            fb_conn_info_peercred(i, fd);
    }
    if (c->name) {
        snprintf(i->name, sizeof i->name, "%s", c->name);
        i->has_name = true;
    }
    i->since_ns = c->since_ns;
    i->frames_in = c->frames_in;
    i->frames_out = c->st.frames_out;
    i->bytes_in = c->st.bytes_in;
    i->bytes_out = c->st.bytes_out;
    i->inflight = c->waiters_created - c->waiters_finished;
    i->paused = (c->st.flags & C_PAUSED) != 0;
    i->worker = (int)w->index;
}

static void snap_unref(struct fb_conn_snap *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned n = --s->refs;
    pthread_mutex_unlock(&s->lock);
    if (n)
        return;
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    fb_conn_infos_free(&s->infos);
    free(s);
}

void fb_conn_snap_drop(struct fb_conn_snap *s)
{
    if (s)
        snap_unref(s);
}

void fb_conn_snap_answer(struct fb_worker *w, struct fb_conn_snap *s)
{
    pthread_mutex_lock(&s->lock);
    bool done = s->done;
    pthread_mutex_unlock(&s->lock);

    /* Copied here, without the request's lock: the asker may be reading
     * other workers' answers meanwhile. */
    struct fb_conn_infos mine = {0};
    bool oom = false;
    for (struct fb_conn *c = w->conns; c && !done && !oom; c = fb_conn_next(c)) {
        if (c->st.flags & FB_S_CLOSING)
            continue; /* on its way out: not connected any more */
        struct fb_conn_info *i = fb_conn_infos_add(&mine);
        if (i)
            fill(w, c, i);
        oom = !i;
    }

    pthread_mutex_lock(&s->lock);
    for (size_t k = 0; k < mine.n && !s->done && !oom; k++) {
        struct fb_conn_info *i = fb_conn_infos_add(&s->infos);
        if (!i)
            oom = true;
        else
            *i = mine.v[k];
    }
    s->oom |= oom;
    s->pending--;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    fb_conn_infos_free(&mine);
    snap_unref(s);
}

int fb_conn_snapshot(struct fb_daemon *d, struct fb_conn_infos *out, unsigned *missing)
{
    *missing = 0;
    struct fb_conn_snap *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 1;

    for (unsigned k = 0; k < d->nworkers; k++) {
        struct fb_worker *w = d->workers ? d->workers[k] : NULL;
        if (!w) {
            ++*missing;
            continue;
        }
        pthread_mutex_lock(&w->lock);
        /* A worker asked to stop may close its async handle at any time
         * after; one still holding an older request is stuck: both count
         * as missing. The wake-up is sent under w->lock, so the worker
         * cannot be told to stop in between (it closes the handle only
         * after reading stop_requested under this lock). */
        bool ask = !w->stop_requested && !w->snap;
        if (ask) {
            pthread_mutex_lock(&s->lock);
            s->refs++;
            s->pending++;
            pthread_mutex_unlock(&s->lock);
            w->snap = s;
            uv_async_send(&w->async);
        }
        pthread_mutex_unlock(&w->lock);
        if (!ask)
            ++*missing;
    }

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += FB_CONN_SNAP_WAIT_MS / 1000;
    until.tv_nsec += (long)(FB_CONN_SNAP_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (s->pending && pthread_cond_timedwait(&s->cond, &s->lock, &until) != ETIMEDOUT)
        ;
    *missing += s->pending;
    s->done = true;
    if (s->oom) {
        rc = -ENOMEM;
    } else {
        for (size_t k = 0; k < s->infos.n && rc == 0; k++) {
            struct fb_conn_info *i = fb_conn_infos_add(out);
            if (!i)
                rc = -ENOMEM;
            else
                *i = s->infos.v[k];
        }
    }
    pthread_mutex_unlock(&s->lock);
    snap_unref(s);
    return rc;
}
