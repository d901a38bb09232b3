/*
 * The blocking pool. A plain mutex + condition variable queue: blocking
 * handlers are by definition slow (disk, network), so the queue is never
 * the bottleneck, and a lock-free design would buy nothing here.
 *
 * Fairness (pool.h): the queue is a round robin of users, each a round
 * robin of connection queues (struct fb_pool_src, in the connection) plus
 * one of its own for jobs no connection waits for (republished events).
 * A user's record is linked while it has jobs queued and kept on a free
 * list afterwards, so submitting allocates only the first time a user
 * appears; the users are found by a scan of those with jobs queued,
 * usually a handful.
 *
 * Deadline (handler_deadline_ms): no timer per call. Each pool thread
 * records in its slot which function it runs and since when; a watchdog
 * thread scans the slots a few times per deadline and flags a call still
 * running past it (logged once, counted), and a call that ends past the
 * deadline before a scan saw it is flagged by its own thread on return.
 * Either way its result is handled as if on time. The slot lock is what
 * lets the watchdog read fn: the pool thread clears the slot under it
 * before dropping the plugin's inflight count, so fn is alive meanwhile.
 *
 * Shutdown (fb_pool_begin_stop): a call past the deadline is given up.
 * Its slot is marked abandoned and its waiter answered through the
 * slot's spare job (allocated up front: giving up must not fail); when
 * the handler returns, its thread sees the mark under the slot lock and
 * leaves without touching anything the daemon may have freed meanwhile
 * (the job, the daemon, the worker). The plugin's inflight count stays
 * up, so the plugin is never unloaded under it (plugin_loader.c), and the
 * pool itself is kept for that thread.
 */
#include "routing/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu/urcu-memb.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "base/log.h"
#include "config/config.h"
#include "routing/dispatch.h"
#include "routing/plugin_loader.h"

struct fb_slot {
    struct fb_pool *p;
    pthread_t thread;
    pthread_mutex_t lock;
    struct fb_func *fn; /* running now, NULL when idle */
    struct fb_job *job; /* the job of fn */
    uint64_t start_ns;
    bool late;            /* this call was already flagged */
    bool abandoned;       /* shutdown gave up on this call */
    struct fb_job *spare; /* answers the waiter of a call given up */
};

/* A user's queues: see pool.h. */
struct fb_pool_user {
    struct fb_pool_user *next; /* the pool's round robin, or free list */
    uint32_t principal;
    size_t n; /* jobs queued, all its queues */
    struct fb_pool_src *rr_head, *rr_tail;
    unsigned nsrc;            /* queues linked */
    struct fb_pool_src local; /* jobs with no connection */
};

struct fb_pool {
    struct fb_daemon *d;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* jobs queued / stop */
    pthread_cond_t wd_cond;   /* wakes the watchdog for stop */
    pthread_cond_t gone_cond; /* a thread ended or was given up */
    struct fb_pool_user *users_head, *users_tail, *free_users;
    unsigned nusers; /* with jobs queued */
    size_t queued, max_queued;
    size_t user_cap; /* what one user alone may hold (pool.h) */
    bool stop;       /* threads end once the queue is empty */
    bool stopping;   /* shutdown: calls past the deadline are given up */
    unsigned nlive;  /* threads not given up */
    unsigned nended; /* threads that returned (to be joined) */
    unsigned nabandoned;
    uint64_t deadline_ns; /* 0: no watchdog */
    bool wd_running;
    bool wd_exit; /* the watchdog ends (after the threads) */
    pthread_t watchdog;
    _Atomic uint64_t late_total;
    unsigned nthreads;
    struct fb_slot slots[];
};

/* Pools left with a thread still in a handler: kept, and reachable. */
static struct fb_pool *_Atomic kept_pools[8];

/* ---------------------------------------------------------------- jobs */

void fb_job_free(struct fb_job *j)
{
    if (!j)
        return;
    fb_budget_put(j->budget);
    free(j);
}

struct fb_job *fb_job_new(struct fb_daemon *d, struct fb_func *fn,
                          const struct fidbus_event *ev, unsigned hop)
{
    size_t idlen = strlen(ev->id) + 1;
    size_t strs = idlen;
    for (size_t i = 0; i < ev->ntags; i++)
        strs += strlen(ev->tags[i].key) + strlen(ev->tags[i].value) + 2;
    size_t tagsz = ev->ntags * sizeof(struct fidbus_tag);
    struct fb_job *j = malloc(sizeof *j + tagsz + strs + ev->payload_len);
    if (!j)
        return NULL;
    char *p = (char *)j->tags + tagsz;
    j->next = NULL;
    j->d = d;
    j->fn = fn;
    j->waiter = NULL;
    j->src = NULL;
    j->budget = NULL;
    j->principal = FB_PRINCIPAL_OTHER;
    j->hop = hop;
    j->rc = 0;
    j->ev = *ev;
    memcpy(p, ev->id, idlen);
    j->ev.id = p;
    p += idlen;
    for (size_t i = 0; i < ev->ntags; i++) {
        size_t kl = strlen(ev->tags[i].key) + 1, vl = strlen(ev->tags[i].value) + 1;
        memcpy(p, ev->tags[i].key, kl);
        j->tags[i].key = p;
        p += kl;
        memcpy(p, ev->tags[i].value, vl);
        j->tags[i].value = p;
        p += vl;
    }
    j->ev.tags = ev->ntags ? j->tags : NULL;
    if (ev->payload_len) {
        memcpy(p, ev->payload, ev->payload_len);
        j->ev.payload = (const uint8_t *)p;
    } else {
        j->ev.payload = NULL;
    }
    return j;
}

/* A job that will not run: its plugin is let go, its waiter told. */
static void job_not_run(struct fb_job *j)
{
    atomic_fetch_sub_explicit(&j->fn->plugin->inflight, 1, memory_order_release);
    j->fn = NULL;
    j->rc = FB_JOB_NOT_RUN;
    if (j->waiter)
        j->done(j);
    else
        fb_job_free(j);
}

/* --------------------------------------------------------- the queues */

/* Caller holds p->lock. */
static struct fb_pool_user *find_user(struct fb_pool *p, uint32_t principal)
{
    for (struct fb_pool_user *u = p->users_head; u; u = u->next)
        if (u->principal == principal)
            return u;
    return NULL;
}

/* The share of `cap` one of n holders may take: see pool.h. */
static size_t share(size_t cap, unsigned n)
{
    size_t s = cap / (n ? n : 1);
    return s ? s : 1;
}

/* Caller holds p->lock. The next job, round robin over users, then over
 * the user's queues; NULL when none is queued. */
static struct fb_job *dequeue(struct fb_pool *p)
{
    struct fb_pool_user *u = p->users_head;
    if (!u)
        return NULL;
    struct fb_pool_src *s = u->rr_head;
    struct fb_job *j = s->head;
    s->head = j->next;
    if (!s->head)
        s->tail = NULL;
    s->n--;
    u->n--;
    p->queued--;
    u->rr_head = s->next;
    if (!u->rr_head)
        u->rr_tail = NULL;
    s->next = NULL;
    if (s->n) {
        if (u->rr_tail)
            u->rr_tail->next = s;
        else
            u->rr_head = s;
        u->rr_tail = s;
    } else {
        s->active = false;
        u->nsrc--;
    }
    p->users_head = u->next;
    if (!p->users_head)
        p->users_tail = NULL;
    u->next = NULL;
    if (u->n) {
        if (p->users_tail)
            p->users_tail->next = u;
        else
            p->users_head = u;
        p->users_tail = u;
    } else {
        p->nusers--;
        u->next = p->free_users;
        p->free_users = u;
    }
    j->next = NULL;
    return j;
}

int fb_pool_submit(struct fb_pool *p, struct fb_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->queued >= p->max_queued || (p->stopping && !p->nlive))
        goto busy;
    struct fb_pool_user *u = find_user(p, j->principal);
    size_t ushare = share(p->user_cap, p->nusers + (u ? 0 : 1));
    if (u && u->n >= ushare)
        goto busy;
    if (!u) {
        u = p->free_users;
        if (u)
            p->free_users = u->next;
        else if (!(u = malloc(sizeof *u)))
            goto busy;
        *u = (struct fb_pool_user){.principal = j->principal};
        if (p->users_tail)
            p->users_tail->next = u;
        else
            p->users_head = u;
        p->users_tail = u;
        p->nusers++;
    }
    struct fb_pool_src *s = j->src ? j->src : &u->local;
    if (s->active && s->n >= share(ushare, u->nsrc))
        goto busy;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->n++;
    if (!s->active) {
        s->active = true;
        s->next = NULL;
        if (u->rr_tail)
            u->rr_tail->next = s;
        else
            u->rr_head = s;
        u->rr_tail = s;
        u->nsrc++;
    }
    u->n++;
    p->queued++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
busy:
    pthread_mutex_unlock(&p->lock);
    return -EBUSY;
}

/* ------------------------------------------------------------ deadline */

/* Caller holds s->lock and s->fn is set and not yet flagged. */
static void flag_late(struct fb_slot *s, uint64_t ran_ns, bool running)
{
    struct fb_pool *p = s->p;
    s->late = true;
    atomic_fetch_add_explicit(&s->fn->late, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->late_total, 1, memory_order_relaxed);
    fb_warn_limited(
        "blocking call to %s (%016llx) %s %llu ms, past handler_deadline_ms = %llu",
        s->fn->canonical, (unsigned long long)s->fn->id,
        running ? "still running after" : "returned after",
        (unsigned long long)(ran_ns / 1000000),
        (unsigned long long)(p->deadline_ns / 1000000));
}

/* Shutdown: gives up on s's call (caller holds s->lock, the call runs
 * past the deadline). Returns the spare job to post to its waiter, or
 * NULL. */
static struct fb_job *abandon(struct fb_slot *s, uint64_t ran_ns)
{
    struct fb_pool *p = s->p;
    struct fb_job *j = s->job;
    s->abandoned = true;
    fb_warn("stopping: stopped waiting for a blocking call to %s (%016llx) running for "
            "%llu ms, past handler_deadline_ms = %llu; its thread is left to it and "
            "plugin %s stays loaded",
            s->fn->canonical, (unsigned long long)s->fn->id,
            (unsigned long long)(ran_ns / 1000000),
            (unsigned long long)(p->deadline_ns / 1000000), s->fn->plugin->name);
    if (!j->waiter)
        return NULL;
    struct fb_job *g = s->spare;
    s->spare = NULL;
    g->next = NULL;
    g->waiter = j->waiter;
    g->done = j->done;
    g->fn = NULL;
    g->budget = NULL;
    g->rc = FB_JOB_GIVEN_UP;
    return g;
}

/* Caller holds p->lock: the queue, taken out when no thread is left to
 * run it. */
static struct fb_job *take_all(struct fb_pool *p)
{
    struct fb_job *list = NULL, *j;
    while ((j = dequeue(p))) {
        j->next = list;
        list = j;
    }
    return list;
}

static void scan(struct fb_pool *p)
{
    uint64_t now = fb_now_ns();
    bool stopping;
    pthread_mutex_lock(&p->lock);
    stopping = p->stopping;
    pthread_mutex_unlock(&p->lock);
    unsigned given_up = 0;
    for (unsigned i = 0; i < p->nthreads; i++) {
        struct fb_slot *s = &p->slots[i];
        struct fb_job *g = NULL;
        pthread_mutex_lock(&s->lock);
        if (s->fn && !s->late && now - s->start_ns >= p->deadline_ns)
            flag_late(s, now - s->start_ns, true);
        if (stopping && s->fn && !s->abandoned && now - s->start_ns >= p->deadline_ns) {
            g = abandon(s, now - s->start_ns);
            given_up++;
        }
        pthread_mutex_unlock(&s->lock);
        if (g)
            g->done(g);
    }
    if (!given_up)
        return;
    pthread_mutex_lock(&p->lock);
    p->nlive -= given_up;
    p->nabandoned += given_up;
    struct fb_job *left = NULL;
    size_t nleft = p->queued;
    if (!p->nlive)
        left = take_all(p);
    pthread_cond_broadcast(&p->gone_cond);
    pthread_mutex_unlock(&p->lock);
    if (left)
        fb_warn("stopping: every blocking pool thread is stuck; %zu queued blocking "
                "call(s) not run",
                nleft);
    while (left) {
        struct fb_job *next = left->next;
        job_not_run(left);
        left = next;
    }
}

static void *watchdog_main(void *arg)
{
    struct fb_pool *p = arg;
    /* A few scans per deadline, bounded: a call is flagged at most a
     * quarter deadline (or 1 s) after it went past. */
    uint64_t period = p->deadline_ns / 4;
    if (period < 10000000ull)
        period = 10000000ull;
    if (period > 1000000000ull)
        period = 1000000000ull;
    pthread_mutex_lock(&p->lock);
    while (!p->wd_exit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + period;
        ts.tv_sec = (time_t)(t / 1000000000ull);
        ts.tv_nsec = (long)(t % 1000000000ull);
        pthread_cond_timedwait(&p->wd_cond, &p->lock, &ts);
        if (p->wd_exit)
            break;
        pthread_mutex_unlock(&p->lock);
        scan(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

bool fb_pool_left_threads(void)
{
    return atomic_load(&kept_pools[0]) != NULL;
}

size_t fb_pool_queued(struct fb_pool *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    size_t n = p->queued;
    pthread_mutex_unlock(&p->lock);
    return n;
}

uint64_t fb_pool_late_total(const struct fb_pool *p)
{
    return p ? atomic_load_explicit(&p->late_total, memory_order_relaxed) : 0;
}

/* After the handler returned (dispatch.c): false when shutdown gave the
 * call up meanwhile, and then nothing but the slot may be touched. */
static bool call_returned(void *arg)
{
    struct fb_slot *s = arg;
    struct fb_pool *p = s->p;
    pthread_mutex_lock(&s->lock);
    if (s->abandoned) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    uint64_t ran = fb_now_ns() - s->start_ns;
    if (!s->late && ran >= p->deadline_ns)
        flag_late(s, ran, false);
    s->fn = NULL;
    s->job = NULL;
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* -------------------------------------------------------------- threads */

static void *pool_main(void *arg)
{
    struct fb_slot *s = arg;
    struct fb_pool *p = s->p;
    urcu_memb_register_thread();
    fb_dispatch_mark_rcu_thread();
    fb_dispatch_mark_tree_thread();
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->users_head && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        struct fb_job *j = dequeue(p);
        if (!j)
            break; /* stop requested and the queue is drained */
        pthread_mutex_unlock(&p->lock);

        if (p->deadline_ns) {
            pthread_mutex_lock(&s->lock);
            s->fn = j->fn;
            s->job = j;
            s->start_ns = fb_now_ns();
            s->late = false;
            pthread_mutex_unlock(&s->lock);
        }
        bool kept = true;
        j->rc =
            fb_dispatch_call_blocking(j, p->deadline_ns ? call_returned : NULL, s, &kept);
        if (!kept) {
            /* Given up at shutdown: the waiter was answered, the rest
             * may be gone. */
            fb_job_free(j);
            urcu_memb_unregister_thread();
            return NULL;
        }
        /* The plugin may be unloaded once inflight drops to zero: the job
         * must not touch fn after this. */
        atomic_fetch_sub_explicit(&j->fn->plugin->inflight, 1, memory_order_release);
        j->fn = NULL;
        if (j->waiter)
            j->done(j);
        else
            fb_job_free(j);

        pthread_mutex_lock(&p->lock);
    }
    p->nended++;
    pthread_cond_broadcast(&p->gone_cond);
    pthread_mutex_unlock(&p->lock);
    urcu_memb_unregister_thread();
    return NULL;
}

int fb_pool_new(struct fb_daemon *d, unsigned nthreads, struct fb_pool **out)
{
    struct fb_pool *p = calloc(1, sizeof *p + nthreads * sizeof(struct fb_slot));
    if (!p)
        return -ENOMEM;
    p->d = d;
    p->user_cap = (size_t)FB_POOL_QUEUE_PER_THREAD * nthreads;
    p->max_queued = p->user_cap + p->user_cap / 4;
    p->deadline_ns = (uint64_t)d->cfg->handler_deadline_ms * 1000000ull;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    pthread_cond_init(&p->gone_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->wd_cond, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned i = 0; i < nthreads; i++) {
        struct fb_slot *s = &p->slots[i];
        s->p = p;
        pthread_mutex_init(&s->lock, NULL);
        s->spare = p->deadline_ns ? malloc(sizeof *s->spare) : NULL;
        int rc = p->deadline_ns && !s->spare
                     ? ENOMEM
                     : pthread_create(&s->thread, NULL, pool_main, s);
        if (rc) {
            free(s->spare);
            pthread_mutex_destroy(&s->lock);
            p->nthreads = i;
            fb_pool_free(p);
            return -rc;
        }
        p->nthreads = i + 1;
        p->nlive = i + 1;
    }
    if (p->deadline_ns) {
        int rc = pthread_create(&p->watchdog, NULL, watchdog_main, p);
        if (rc) {
            fb_pool_free(p);
            return -rc;
        }
        p->wd_running = true;
    }
    *out = p;
    return 0;
}

void fb_pool_begin_stop(struct fb_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wd_cond);
    pthread_mutex_unlock(&p->lock);
}

struct fb_pool *fb_pool_free(struct fb_pool *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    /* The threads drain the queue; with the watchdog, one stuck past the
     * deadline is given up instead of waited for. */
    while (p->nended + p->nabandoned < p->nthreads)
        pthread_cond_wait(&p->gone_cond, &p->lock);
    p->wd_exit = true;
    pthread_cond_broadcast(&p->wd_cond);
    pthread_mutex_unlock(&p->lock);
    if (p->wd_running)
        pthread_join(p->watchdog, NULL);
    bool keep = false;
    for (unsigned i = 0; i < p->nthreads; i++) {
        struct fb_slot *s = &p->slots[i];
        pthread_mutex_lock(&s->lock);
        bool gone = s->abandoned;
        pthread_mutex_unlock(&s->lock);
        if (gone) {
            pthread_detach(s->thread);
            keep = true;
            continue;
        }
        pthread_join(s->thread, NULL);
    }
    if (keep) {
        /* A thread may come back to its slot: the pool stays. */
        for (size_t i = 0; i < sizeof kept_pools / sizeof kept_pools[0]; i++) {
            struct fb_pool *none = NULL;
            if (atomic_compare_exchange_strong(&kept_pools[i], &none, p))
                break;
        }
        return NULL;
    }
    for (unsigned i = 0; i < p->nthreads; i++) {
        pthread_mutex_destroy(&p->slots[i].lock);
        free(p->slots[i].spare);
    }
    while (p->free_users) {
        struct fb_pool_user *u = p->free_users;
        p->free_users = u->next;
        free(u);
    }
    pthread_cond_destroy(&p->gone_cond);
    pthread_cond_destroy(&p->wd_cond);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}
