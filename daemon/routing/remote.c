/*
 * Remote functions: the directory, members and config.reload (remote.h
 * says who owns what; member choice, credit and the life of a call are
 * in remote_call.c).
 */
#include "routing/remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "config/config.h"
#include "routing/remote_private.h"
#include "routing/routes.h"

struct fb_remote *fb_remote_dir;

static void sections_free(struct fb_remote_conf *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].ns);
        free(v[i].uids);
        free(v[i].gids);
    }
    free(v);
}

/* Deep copy of cfg's [remote] sections into *out; 0 or -ENOMEM. */
static int sections_copy(const struct fb_config *cfg, struct fb_config *out)
{
    size_t n = cfg ? cfg->nremotes : 0;
    struct fb_remote_conf *v = n ? calloc(n, sizeof *v) : NULL;
    if (n && !v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct fb_remote_conf *a = &cfg->remotes[i];
        v[i] = *a;
        v[i].ns = strdup(a->ns);
        v[i].uids = a->nuids ? malloc(a->nuids * sizeof *a->uids) : NULL;
        v[i].gids = a->ngids ? malloc(a->ngids * sizeof *a->gids) : NULL;
        if (!v[i].ns || (a->nuids && !v[i].uids) || (a->ngids && !v[i].gids)) {
            sections_free(v, i + 1);
            return -ENOMEM;
        }
        if (a->nuids)
            memcpy(v[i].uids, a->uids, a->nuids * sizeof *a->uids);
        if (a->ngids)
            memcpy(v[i].gids, a->gids, a->ngids * sizeof *a->gids);
    }
    memset(out, 0, sizeof *out);
    out->remotes = v;
    out->nremotes = n;
    return 0;
}

int fb_remote_new(struct fb_daemon *d, struct fb_remote **out)
{
    struct fb_remote *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    if (sections_copy(d->cfg, &r->sections) < 0) {
        free(r);
        return -ENOMEM;
    }
    r->d = d;
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->next_key, 1);
    fb_remote_dir = r;
    *out = r;
    return 0;
}

struct fb_remote *fb_remote_free(struct fb_remote *r)
{
    if (!r)
        return NULL;
    for (size_t i = 0; i < r->n; i++) {
        struct fb_func *f = r->fns[i];
        struct fb_rfunc *rf = f->remote;
        while (rf->wq_head) {
            struct fb_call *c = rf->wq_head;
            rf->wq_head = c->next;
            fb_remote_call_free_mem(c);
        }
        if (rf->mset) {
            for (size_t k = 0; k < rf->mset->n; k++)
                fb_remote_member_put(rf->mset->m[k]);
            free(rf->mset);
        }
        pthread_mutex_destroy(&rf->lock);
        free(rf);
        free(f);
    }
    free(r->fns);
    free(r->plugin_ids);
    sections_free(r->sections.remotes, r->sections.nremotes);
    pthread_mutex_destroy(&r->lock);
    if (fb_remote_dir == r)
        fb_remote_dir = NULL;
    free(r);
    return NULL;
}

void fb_remote_set_ops(struct fb_remote *r, const struct fb_remote_ops *ops)
{
    r->ops = *ops;
}

void fb_remote_lock(struct fb_remote *r)
{
    pthread_mutex_lock(&r->lock);
}

void fb_remote_unlock(struct fb_remote *r)
{
    pthread_mutex_unlock(&r->lock);
}

size_t fb_remote_count(const struct fb_remote *r)
{
    return r->n;
}

struct fb_func *fb_remote_at(const struct fb_remote *r, size_t i)
{
    return i < r->n ? r->fns[i] : NULL;
}

static size_t lower_bound(struct fb_func *const *a, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t lower_bound_u64(const uint64_t *a, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool plugin_has(const struct fb_remote *r, uint64_t id)
{
    size_t k = lower_bound_u64(r->plugin_ids, r->nplugin, id);
    return k < r->nplugin && r->plugin_ids[k] == id;
}

/* Dir lock held. */
static struct fb_func *get_locked(struct fb_remote *r, const char *canonical, bool create)
{
    uint64_t id = fidbus_funcid(canonical);
    size_t k = lower_bound(r->fns, r->n, id);
    if (k < r->n && r->fns[k]->id == id)
        return strcmp(r->fns[k]->canonical, canonical) == 0 ? r->fns[k] : NULL;
    if (!create)
        return NULL;
    const char *dot = strchr(canonical, '.'), *at = strchr(canonical, '@');
    if (!dot || !at || at < dot || (size_t)(dot - canonical) > FIDBUS_NAME_MAX ||
        (size_t)(at - dot - 1) > FIDBUS_NAME_MAX || strlen(at + 1) > FIDBUS_VERSION_MAX)
        return NULL;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct fb_func **p = realloc(r->fns, cap * sizeof *p);
        if (!p)
            return NULL;
        r->fns = p;
        r->cap = cap;
    }
    struct fb_func *f = calloc(1, sizeof *f);
    struct fb_rfunc *rf = calloc(1, sizeof *rf);
    if (!f || !rf) {
        free(f);
        free(rf);
        return NULL;
    }
    f->id = id;
    snprintf(f->canonical, sizeof f->canonical, "%s", canonical);
    snprintf(f->ns, sizeof f->ns, "%.*s", (int)(dot - canonical), canonical);
    snprintf(f->name, sizeof f->name, "%.*s", (int)(at - dot - 1), dot + 1);
    snprintf(f->version, sizeof f->version, "%s", at + 1);
    (void)fidbus_semver_parse(f->version, &f->semver);
    f->flags = FB_FN_REMOTE;
    f->remote = rf;
    rf->fn = f;
    pthread_mutex_init(&rf->lock, NULL);
    memmove(&r->fns[k + 1], &r->fns[k], (r->n - k) * sizeof *r->fns);
    r->fns[k] = f;
    r->n++;
    return f;
}

struct fb_func *fb_remote_lookup(struct fb_remote *r, uint64_t id)
{
    pthread_mutex_lock(&r->lock);
    size_t k = lower_bound(r->fns, r->n, id);
    struct fb_func *f = k < r->n && r->fns[k]->id == id ? r->fns[k] : NULL;
    pthread_mutex_unlock(&r->lock);
    return f;
}

struct fb_func *fb_remote_get(struct fb_remote *r, const char *canonical, bool create)
{
    pthread_mutex_lock(&r->lock);
    struct fb_func *f = get_locked(r, canonical, create);
    pthread_mutex_unlock(&r->lock);
    return f;
}

bool fb_remote_ns_allowed(struct fb_remote *r, const char *ns)
{
    pthread_mutex_lock(&r->lock);
    bool ok = fb_config_remote_find(&r->sections, ns) != NULL;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

static bool has_members(const struct fb_rfunc *rf)
{
    const struct fb_mset *ms = __atomic_load_n(&rf->mset, __ATOMIC_ACQUIRE);
    return ms && ms->n;
}

bool fb_remote_has_members(const struct fb_func *fn)
{
    const struct fb_mset *ms = __atomic_load_n(&fn->remote->mset, __ATOMIC_CONSUME);
    return ms && ms->n;
}

bool fb_remote_sighash(struct fb_func *fn, uint8_t *out)
{
    struct fb_rfunc *rf = fn->remote;
    pthread_mutex_lock(&rf->lock);
    bool known = rf->has_sig;
    if (known)
        memcpy(out, fn->sighash, FIDBUS_SIGHASH_LEN);
    pthread_mutex_unlock(&rf->lock);
    return known;
}

int fb_remote_plugin_check(struct fb_remote *r, const struct fb_func *fns, size_t n,
                           char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t k = lower_bound(r->fns, r->n, fns[i].id);
        if (k < r->n && r->fns[k]->id == fns[i].id && has_members(r->fns[k]->remote)) {
            fb_set_err(err, errlen,
                       "function %s is served by remote members; it cannot be loaded "
                       "from a plugin while they serve it",
                       fns[i].canonical);
            rc = FIDBUS_CONFLICT;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void fb_remote_plugin_mark(struct fb_remote *r, const struct fb_func *fns, size_t n,
                           bool provided)
{
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < n; i++) {
        uint64_t id = fns[i].id;
        size_t k = lower_bound_u64(r->plugin_ids, r->nplugin, id);
        if (provided) {
            if (r->nplugin == r->capplugin) {
                size_t cap = r->capplugin ? r->capplugin * 2 : 16;
                uint64_t *p = realloc(r->plugin_ids, cap * sizeof *p);
                if (!p)
                    continue; /* a later REGISTER may slip through: logged */
                r->plugin_ids = p;
                r->capplugin = cap;
            }
            memmove(&r->plugin_ids[k + 1], &r->plugin_ids[k],
                    (r->nplugin - k) * sizeof *r->plugin_ids);
            r->plugin_ids[k] = id;
            r->nplugin++;
        } else if (k < r->nplugin && r->plugin_ids[k] == id) {
            memmove(&r->plugin_ids[k], &r->plugin_ids[k + 1],
                    (r->nplugin - k - 1) * sizeof *r->plugin_ids);
            r->nplugin--;
        }
    }
    pthread_mutex_unlock(&r->lock);
}

/* ------------------------------------------------------------- members */

void fb_remote_member_put(struct fb_member *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

/* TSan cannot see liburcu hand a callback to its call_rcu thread: the
 * queuing side releases the object, the callback acquires it (and the
 * readers' FB_ROUTES_READ_DONE, as for route tables). */
#ifdef FB_ROUTES_TSAN
#define HANDOFF_RELEASE(p) __tsan_release(p)
#define HANDOFF_ACQUIRE(p)                                                               \
    do {                                                                                 \
        __tsan_acquire(p);                                                               \
        __tsan_acquire(&fb_routes_tsan_gp);                                              \
    } while (0)
#else
#define HANDOFF_RELEASE(p) ((void)0)
#define HANDOFF_ACQUIRE(p) ((void)0)
#endif

static void mset_free_cb(struct rcu_head *h)
{
    struct fb_mset *ms = caa_container_of(h, struct fb_mset, rcu);
    HANDOFF_ACQUIRE(ms);
    free(ms);
}

/* A member left the set: the set's reference on it goes after a grace
 * period (a reader may be about to take a reference of its own). */
struct put_later {
    struct rcu_head rcu;
    struct fb_member *m;
};

static void put_later_cb(struct rcu_head *h)
{
    struct put_later *p = caa_container_of(h, struct put_later, rcu);
    HANDOFF_ACQUIRE(p);
    fb_remote_member_put(p->m);
    free(p);
}

/* Function lock held. Publishes a copy of the set with m added (add) or
 * removed; 0 or -ENOMEM. */
static int mset_change(struct fb_rfunc *rf, struct fb_member *m, bool add)
{
    struct fb_mset *old = rf->mset;
    size_t n = old ? old->n : 0;
    struct fb_mset *ms = malloc(sizeof *ms + (n + 1) * sizeof(struct fb_member *));
    if (!ms)
        return -ENOMEM;
    ms->n = 0;
    for (size_t i = 0; i < n; i++)
        if (old->m[i] != m)
            ms->m[ms->n++] = old->m[i];
    if (add)
        ms->m[ms->n++] = m;
    else if (ms->n == n) {
        free(ms); /* not there */
        return 0;
    }
    __atomic_store_n(&rf->mset, ms, __ATOMIC_RELEASE);
    if (old) {
        HANDOFF_RELEASE(old);
        urcu_memb_call_rcu(&old->rcu, mset_free_cb);
    }
    return 0;
}

/* Does a route of t name fn with a signature other than sighash? */
static const char *route_sig_clash(const struct fb_route_table *t, uint64_t id,
                                   const uint8_t *sighash)
{
    if (!t)
        return NULL;
    size_t n = fb_routes_count(t);
    for (size_t i = 0; i < n; i++) {
        const struct fb_route *r = fb_routes_at(t, i);
        if (!r->spec->signature)
            continue;
        for (size_t k = 0; k < r->ntargets; k++) {
            if (r->targets[k].fn->id != id)
                continue;
            uint8_t want[FIDBUS_SIGHASH_LEN];
            if (fidbus_sighash_parse(r->spec->signature, want) == 0 &&
                memcmp(want, sighash, sizeof want) != 0)
                return r->name;
        }
    }
    return NULL;
}

static bool id_in(uint32_t id, const uint32_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] == id)
            return true;
    return false;
}

static bool peer_allowed(const struct fb_remote_conf *rc, const struct fb_reg_req *q,
                         const struct fb_config *cfg)
{
    if (q->is_tcp)
        return rc->tcp && cfg->tcp_auth == FB_TCP_AUTH_KEY && q->tcp_authed;
    if (!q->has_cred)
        return false;
    if (q->uid == 0 || q->uid == (uint32_t)geteuid())
        return true;
    if (id_in(q->uid, (const uint32_t *)rc->uids, rc->nuids))
        return true;
    if (id_in(q->gid, (const uint32_t *)rc->gids, rc->ngids))
        return true;
    for (size_t i = 0; i < q->ngroups; i++)
        if (id_in(q->groups[i], (const uint32_t *)rc->gids, rc->ngids))
            return true;
    return false;
}

int fb_remote_register(struct fb_remote *r, const struct fb_route_table *t,
                       const struct fb_reg_req *q, void *conn, void *worker,
                       struct fb_member **out, char *err, size_t errlen)
{
    const struct fb_config *cfg = r->d->cfg;
    const char *dot = strchr(q->function, '.');
    char ns[FIDBUS_NAME_MAX + 1];
    snprintf(ns, sizeof ns, "%.*s", dot ? (int)(dot - q->function) : 0, q->function);
    pthread_mutex_lock(&r->lock);
    const struct fb_remote_conf *rc = fb_config_remote_find(&r->sections, ns);
    if (!rc) {
        pthread_mutex_unlock(&r->lock);
        fb_set_err(err, errlen,
                   "no [remote %s] (nor [remote *]) section: %s may not be "
                   "served by a client",
                   ns, q->function);
        return FIDBUS_UNAUTHORIZED;
    }
    if (!peer_allowed(rc, q, cfg)) {
        pthread_mutex_unlock(&r->lock);
        if (q->is_tcp)
            fb_set_err(err, errlen,
                       "[remote %s] does not let TCP clients serve (tcp = yes with "
                       "tcp_auth = key)",
                       rc->ns);
        else
            fb_set_err(err, errlen,
                       "uid %u is not allowed to serve %s ([remote %s] users, "
                       "groups)",
                       (unsigned)q->uid, q->function, rc->ns);
        return FIDBUS_UNAUTHORIZED;
    }
    struct fb_member *m = calloc(1, sizeof *m);
    if (!m) {
        pthread_mutex_unlock(&r->lock);
        return -ENOMEM;
    }
    m->credit = q->credit && q->credit < rc->credit ? (uint32_t)q->credit : rc->credit;
    m->timeout_ms = q->timeout_ms && q->timeout_ms < rc->timeout_ms
                        ? (uint32_t)q->timeout_ms
                        : rc->timeout_ms;
    m->attempts = rc->attempts;
    pthread_mutex_unlock(&r->lock);
    uint8_t sighash[FIDBUS_SIGHASH_LEN];
    fidbus_sighash(q->signature, sighash);
    const char *clash = route_sig_clash(t, fidbus_funcid(q->function), sighash);
    if (clash) {
        free(m);
        fb_set_err(err, errlen, "route '%s' expects another signature of %s", clash,
                   q->function);
        return FIDBUS_SIGNATURE_MISMATCH;
    }
    m->is_tcp = q->is_tcp;
    m->tcp_authed = q->tcp_authed;
    m->gid = q->gid;
    m->ngroups = q->ngroups < FB_MEMBER_GROUPS ? (uint32_t)q->ngroups : FB_MEMBER_GROUPS;
    for (size_t i = 0; i < m->ngroups; i++)
        m->groups[i] = q->groups[i];
    m->idempotent = q->idempotent;
    m->conn = conn;
    m->worker = worker;
    m->conn_id = q->conn_id;
    m->has_cred = q->has_cred;
    m->uid = q->uid;
    m->pid = q->pid;
    snprintf(m->peer, sizeof m->peer, "%s", q->peer ? q->peer : "");
    snprintf(m->name, sizeof m->name, "%s", q->name ? q->name : "");
    m->since_ns = fb_now_ns();
    m->key = atomic_fetch_add_explicit(&r->next_key, 1, memory_order_relaxed);
    atomic_init(&m->refs, 2); /* the connection's and the set's */

    pthread_mutex_lock(&r->lock);
    if (plugin_has(r, fidbus_funcid(q->function))) {
        pthread_mutex_unlock(&r->lock);
        free(m);
        fb_set_err(err, errlen, "a plugin provides %s", q->function);
        return FIDBUS_CONFLICT;
    }
    struct fb_func *f = get_locked(r, q->function, true);
    if (!f) {
        pthread_mutex_unlock(&r->lock);
        free(m);
        fb_set_err(err, errlen, "%s: funcID collision or out of memory", q->function);
        return FIDBUS_CONFLICT;
    }
    struct fb_rfunc *rf = f->remote;
    pthread_mutex_lock(&rf->lock);
    pthread_mutex_unlock(&r->lock);
    if (has_members(rf) && memcmp(f->sighash, sighash, sizeof sighash) != 0) {
        pthread_mutex_unlock(&rf->lock);
        free(m);
        fb_set_err(err, errlen,
                   "other members serve %s with another signature (sighash differs)",
                   q->function);
        return FIDBUS_CONFLICT;
    }
    m->fn = f;
    if (mset_change(rf, m, true) < 0) {
        pthread_mutex_unlock(&rf->lock);
        free(m);
        return -ENOMEM;
    }
    if (!rf->has_sig) {
        memcpy(f->sighash, sighash, sizeof sighash);
        rf->has_sig = true;
    }
    pthread_mutex_unlock(&rf->lock);
    *out = m;
    fb_remote_kick(f);
    return 0;
}

void fb_remote_member_remove(struct fb_member *m)
{
    struct fb_rfunc *rf = m->fn->remote;
    if (atomic_exchange(&m->gone, true))
        return;
    struct fb_call *orphans = NULL;
    pthread_mutex_lock(&rf->lock);
    struct put_later *pl = malloc(sizeof *pl);
    if (pl && mset_change(rf, m, false) == 0) {
        pl->m = m;
        HANDOFF_RELEASE(pl);
        urcu_memb_call_rcu(&pl->rcu, put_later_cb);
    } else {
        /* Out of memory: m stays listed but gone, so no call picks it;
         * its set reference is kept until the daemon frees the set. */
        free(pl);
    }
    bool none = !has_members(rf);
    if (none) {
        rf->has_sig = false;
        orphans = rf->wq_head;
        rf->wq_head = rf->wq_tail = NULL;
        atomic_store(&rf->waiting, 0);
    }
    pthread_mutex_unlock(&rf->lock);
    while (orphans) {
        struct fb_call *c = orphans;
        orphans = c->next;
        fb_remote_finish(c, FIDBUS_UNAVAILABLE);
    }
    if (!none)
        fb_remote_kick(m->fn);
}

void fb_remote_count_late(struct fb_remote *r, uint64_t n)
{
    atomic_fetch_add_explicit(&r->late, n, memory_order_relaxed);
}

uint64_t fb_remote_late(const struct fb_remote *r)
{
    return atomic_load_explicit(&r->late, memory_order_relaxed);
}

/* ----------------------------------------------------- config.reload */

int fb_remote_sections_swap(struct fb_remote *r, const struct fb_config *cfg,
                            struct fb_config *old)
{
    struct fb_config fresh;
    if (sections_copy(cfg, &fresh) < 0)
        return -ENOMEM;
    pthread_mutex_lock(&r->lock);
    *old = r->sections;
    r->sections = fresh;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

void fb_remote_sections_restore(struct fb_remote *r, struct fb_config *old)
{
    pthread_mutex_lock(&r->lock);
    struct fb_config now = r->sections;
    r->sections = *old;
    pthread_mutex_unlock(&r->lock);
    sections_free(now.remotes, now.nremotes);
    memset(old, 0, sizeof *old);
}

size_t fb_remote_sections_commit(struct fb_remote *r, struct fb_config *old)
{
    sections_free(old->remotes, old->nremotes);
    memset(old, 0, sizeof *old);
    const struct fb_config *cfg = r->d->cfg;
    struct fb_member **drop = NULL;
    size_t ndrop = 0, cap = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        struct fb_func *f = r->fns[i];
        struct fb_rfunc *rf = f->remote;
        const struct fb_remote_conf *rc = fb_config_remote_find(&r->sections, f->ns);
        pthread_mutex_lock(&rf->lock);
        for (size_t k = 0; rf->mset && k < rf->mset->n; k++) {
            struct fb_member *m = rf->mset->m[k];
            struct fb_reg_req q = {
                .is_tcp = m->is_tcp,
                .tcp_authed = m->tcp_authed,
                .has_cred = m->has_cred,
                .uid = m->uid,
                .gid = m->gid,
                .groups = m->groups,
                .ngroups = m->ngroups,
            };
            if (rc && peer_allowed(rc, &q, cfg))
                continue;
            if (ndrop == cap) {
                size_t nc = cap ? cap * 2 : 16;
                struct fb_member **p = realloc(drop, nc * sizeof *p);
                if (!p)
                    break; /* logged below: those stay until they leave */
                drop = p;
                cap = nc;
            }
            atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
            atomic_store(&m->revoked, true);
            drop[ndrop++] = m;
        }
        pthread_mutex_unlock(&rf->lock);
    }
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < ndrop; i++) {
        struct fb_member *m = drop[i];
        fb_warn(
            "config.reload: %s may no longer be served by connection %llu; dropping it",
            m->fn->canonical, (unsigned long long)m->conn_id);
        fb_remote_member_remove(m); /* no new calls */
        r->ops.revoke(m->worker);   /* its connection goes: its calls are lost */
        fb_remote_member_put(m);
    }
    free(drop);
    return ndrop;
}
