/*
 * Connection admission (conn_admit.h). The per-uid and per-address counts
 * are small arrays under one mutex: they are touched once per accept,
 * once per AUTH and once per close, never per event, and hold only the
 * uids with connections open and the addresses with connections awaiting
 * AUTH (so at most unauth_max of those).
 */
#include "bus/conn_admit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fidbus/proto.h>

#include "base/daemon_t.h"
#include "base/log.h"
#include "config/config.h"
#include "routing/pool.h"

struct fb_uid_count {
    uid_t uid;
    unsigned n;
};

struct fb_addr_count {
    uint8_t addr[16];
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

/* One rate-limited log line for every admission refusal: a client looping
 * on a refused connect must not flood the log (log.h). */
__attribute__((format(printf, 4, 5))) static void
refuse(struct fb_daemon *d, int fd, enum fb_limit_reason why, const char *fmt, ...)
{
    char reason[200], msg[220];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    fb_warn_limited("refused a bus connection: %s", reason);
    snprintf(msg, sizeof msg, "%s; closing", reason);
    fb_conn_refuse(d, fd, why, msg);
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

static struct fb_addr_count *addr_slot(struct fb_daemon *d, const uint8_t addr[16],
                                       bool add)
{
    for (size_t i = 0; i < d->naddrs; i++)
        if (memcmp(d->addrs[i].addr, addr, 16) == 0)
            return &d->addrs[i];
    if (!add)
        return NULL;
    if (d->naddrs == d->capaddrs) {
        size_t cap = d->capaddrs ? d->capaddrs * 2 : 16;
        struct fb_addr_count *a = realloc(d->addrs, cap * sizeof *a);
        if (!a)
            return NULL;
        d->addrs = a;
        d->capaddrs = cap;
    }
    d->addrs[d->naddrs] = (struct fb_addr_count){.n = 0};
    memcpy(d->addrs[d->naddrs].addr, addr, 16);
    return &d->addrs[d->naddrs++];
}

/* The key a peer's address is counted under (conn_admit.h): an IPv4
 * address as ::ffff:a.b.c.d, so a dual-stack listener counts it the same
 * either way; an IPv6 address by its /64. False if there is none. */
static bool addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        memcpy(key, mapped, sizeof mapped);
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        memcpy(key, a, memcmp(a, mapped, sizeof mapped) == 0 ? 16 : 8);
        return true;
    }
    return false;
}

static void addr_name(const uint8_t key[16], char *buf, size_t len)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char s[INET6_ADDRSTRLEN] = "?";
    if (memcmp(key, mapped, sizeof mapped) == 0) {
        inet_ntop(AF_INET, key + 12, s, sizeof s);
        snprintf(buf, len, "%s", s);
    } else {
        inet_ntop(AF_INET6, key, s, sizeof s);
        snprintf(buf, len, "%s/64", s);
    }
}

/* The unauthenticated places (tcp_auth = key): false, with the refusal
 * written, when there is none for this peer. */
static bool admit_unauth(struct fb_daemon *d, int fd, const struct sockaddr *peer,
                         struct fb_admit *a)
{
    const struct fb_limits *l = &d->cfg->limits;
    a->has_addr = addr_key(peer, a->addr);
    pthread_mutex_lock(&d->uids_lock);
    bool all_full = d->nunauth >= l->unauth_max;
    struct fb_addr_count *s = NULL;
    if (!all_full && a->has_addr) {
        s = addr_slot(d, a->addr, true);
        a->has_addr = s != NULL; /* out of memory: only the total applies */
    }
    bool addr_full = s && s->n >= l->unauth_per_addr;
    if (!all_full && !addr_full) {
        d->nunauth++;
        if (s)
            s->n++;
        a->unauth = true;
    } else if (s && s->n == 0) {
        *s = d->addrs[--d->naddrs];
    }
    pthread_mutex_unlock(&d->uids_lock);
    if (all_full) {
        refuse(d, fd, FB_LIM_UNAUTH,
               "too many TCP connections awaiting AUTH (unauth_max = %u)", l->unauth_max);
        return false;
    }
    if (addr_full) {
        char name[INET6_ADDRSTRLEN + 8];
        addr_name(a->addr, name, sizeof name);
        refuse(d, fd, FB_LIM_UNAUTH_ADDR,
               "too many TCP connections awaiting AUTH from %s (unauth_per_addr = %u)",
               name, l->unauth_per_addr);
        return false;
    }
    return true;
}

bool fb_conn_admit(struct fb_daemon *d, int fd, bool is_tcp, const struct sockaddr *peer,
                   struct fb_admit *a)
{
    const struct fb_limits *l = &d->cfg->limits;
    *a = (struct fb_admit){
        .principal = FB_PRINCIPAL_OTHER, .peer_uid = -1, .peer_pid = -1};
    unsigned open = atomic_fetch_add(&d->nconns, 1);
    if (open >= l->max_connections) {
        atomic_fetch_sub(&d->nconns, 1);
        refuse(d, fd, FB_LIM_CONNECTIONS, "too many connections (max_connections = %u)",
               l->max_connections);
        return false;
    }
    if (is_tcp) {
        if (atomic_fetch_add(&d->ntcp, 1) >= l->max_connections_tcp) {
            atomic_fetch_sub(&d->ntcp, 1);
            atomic_fetch_sub(&d->nconns, 1);
            refuse(d, fd, FB_LIM_CONNECTIONS_TCP,
                   "too many TCP connections (max_connections_tcp = %u)",
                   l->max_connections_tcp);
            return false;
        }
        a->tcp = true;
        if (d->cfg->tcp_auth == FB_TCP_AUTH_KEY && !admit_unauth(d, fd, peer, a)) {
            atomic_fetch_sub(&d->ntcp, 1);
            atomic_fetch_sub(&d->nconns, 1);
            return false;
        }
        return true;
    }
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return true; /* no credentials: only the total applies */
    a->principal = (uint32_t)cr.uid;
    a->peer_uid = cr.uid;
    a->peer_pid = cr.pid;
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
        refuse(d, fd, FB_LIM_CONNECTIONS_UID,
               "too many connections for uid %u (max_connections_per_uid = %u)",
               (unsigned)cr.uid, l->max_connections_per_uid);
        return false;
    }
    if (u) {
        a->has_uid = true;
        a->uid = cr.uid;
    }
    return true;
}

void fb_conn_admit_authed(struct fb_daemon *d, struct fb_admit *a)
{
    if (!a->unauth)
        return;
    pthread_mutex_lock(&d->uids_lock);
    d->nunauth--;
    struct fb_addr_count *s = a->has_addr ? addr_slot(d, a->addr, false) : NULL;
    if (s && --s->n == 0)
        *s = d->addrs[--d->naddrs];
    pthread_mutex_unlock(&d->uids_lock);
    a->unauth = false;
}

void fb_conn_admit_release(struct fb_daemon *d, const struct fb_admit *a)
{
    atomic_fetch_sub(&d->nconns, 1);
    if (a->tcp)
        atomic_fetch_sub(&d->ntcp, 1);
    if (a->unauth) {
        struct fb_admit copy = *a;
        fb_conn_admit_authed(d, &copy);
    }
    if (!a->has_uid)
        return;
    pthread_mutex_lock(&d->uids_lock);
    struct fb_uid_count *u = uid_slot(d, a->uid, false);
    if (u && --u->n == 0)
        *u = d->uids[--d->nuids];
    pthread_mutex_unlock(&d->uids_lock);
}
