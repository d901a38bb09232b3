/*
 * Connection admission (conn_admit.h). The per-uid counts are a small
 * array under a mutex: it is touched once per accept and once per close,
 * never per event, and holds only the uids with connections open.
 */
#include "conn_admit.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fidbus/proto.h>

#include "log.h"
#include "pool.h"

struct fb_uid_count {
    uid_t uid;
    unsigned n;
};

/* The refusal is small and the socket new, so its buffer takes it whole;
 * anything the kernel refuses is lost with the connection anyway. */
void fb_conn_refuse(struct fb_daemon *d, int fd, enum fb_limit_reason why,
                    const char *msg)
{
    fb_count(&fb_counters_self(d)->limits[why], 1);
    uint8_t buf[4200];
    size_t n = fidbus_enc_error(buf, sizeof buf, false, 0, FIDBUS_BUSY, msg, false, 0);
    if (n)
        (void)!send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    /* Half-close first: the client reads the ERROR, then EOF. */
    shutdown(fd, SHUT_WR);
    close(fd);
}

static struct fb_uid_count *uid_slot(struct fb_daemon *d, uid_t uid, bool add)
{
    for (size_t i = 0; i < d->nuids; i++)
        if (d->uids[i].uid == uid)
            return &d->uids[i];
    if (!add)
        return NULL;
    if (d->nuids == d->capuids) {
        size_t cap = d->capuids ? d->capuids * 2 : 16;
        struct fb_uid_count *u = realloc(d->uids, cap * sizeof *u);
        if (!u)
            return NULL;
        d->uids = u;
        d->capuids = cap;
    }
    d->uids[d->nuids] = (struct fb_uid_count){.uid = uid};
    return &d->uids[d->nuids++];
}

bool fb_conn_admit(struct fb_daemon *d, int fd, bool is_tcp, struct fb_admit *a)
{
    const struct fb_limits *l = &d->cfg->limits;
    char msg[128];
    *a = (struct fb_admit){.principal = FB_PRINCIPAL_OTHER};
    unsigned open = atomic_fetch_add(&d->nconns, 1);
    if (open >= l->max_connections) {
        atomic_fetch_sub(&d->nconns, 1);
        snprintf(msg, sizeof msg, "too many connections (max_connections = %u); closing",
                 l->max_connections);
        fb_conn_refuse(d, fd, FB_LIM_CONNECTIONS, msg);
        return false;
    }
    if (is_tcp)
        return true;
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return true; /* no credentials: only the total applies */
    a->principal = (uint32_t)cr.uid;
    if (!l->max_connections_per_uid)
        return true;
    pthread_mutex_lock(&d->uids_lock);
    struct fb_uid_count *u = uid_slot(d, cr.uid, true);
    bool over = u && u->n >= l->max_connections_per_uid;
    if (u && !over)
        u->n++;
    pthread_mutex_unlock(&d->uids_lock);
    if (over) {
        atomic_fetch_sub(&d->nconns, 1);
        snprintf(
            msg, sizeof msg,
            "too many connections for uid %u (max_connections_per_uid = %u); closing",
            (unsigned)cr.uid, l->max_connections_per_uid);
        fb_conn_refuse(d, fd, FB_LIM_CONNECTIONS_UID, msg);
        return false;
    }
    if (u) {
        a->has_uid = true;
        a->uid = cr.uid;
    }
    return true;
}

void fb_conn_admit_release(struct fb_daemon *d, const struct fb_admit *a)
{
    atomic_fetch_sub(&d->nconns, 1);
    if (!a->has_uid)
        return;
    pthread_mutex_lock(&d->uids_lock);
    struct fb_uid_count *u = uid_slot(d, a->uid, false);
    if (u && --u->n == 0)
        *u = d->uids[--d->nuids];
    pthread_mutex_unlock(&d->uids_lock);
}
