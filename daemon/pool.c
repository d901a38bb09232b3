/*
 * The blocking pool. A plain mutex + condition variable queue: blocking
 * handlers are by definition slow (disk, network), so the queue is never
 * the bottleneck, and a lock-free design would buy nothing here.
 *
 * Deadline (handler_deadline_ms): no timer per call. Each pool thread
 * records in its slot which function it runs and since when; a watchdog
 * thread scans the slots a few times per deadline and flags a call still
 * running past it (logged once, counted), and a call that ends past the
 * deadline before a scan saw it is flagged by its own thread on return.
 * Either way its result is handled as if on time. The slot lock is what
 * lets the watchdog read fn: the pool thread clears the slot under it
 * before dropping the plugin's inflight count, so fn is alive meanwhile.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu/urcu-memb.h>

#include "dispatch.h"
#include "log.h"
#include "plugin_loader.h"
#include "worker.h"

struct fb_slot {
    struct fb_pool *p;
    pthread_t thread;
    pthread_mutex_t lock;
    struct fb_func *fn; /* running now, NULL when idle */
    uint64_t start_ns;
    bool late; /* this call was already flagged */
};

struct fb_pool {
    struct fb_daemon *d;
    pthread_mutex_t lock;
    pthread_cond_t cond;    /* jobs queued / stop */
    pthread_cond_t wd_cond; /* wakes the watchdog for stop */
    struct fb_job *head, *tail;
    size_t queued, max_queued;
    bool stop;
    uint64_t deadline_ns; /* 0: no watchdog */
    bool wd_running;
    pthread_t watchdog;
    _Atomic uint64_t late_total;
    unsigned nthreads;
    struct fb_slot slots[];
};

/* Caller holds s->lock and s->fn is set and not yet flagged. */
static void flag_late(struct fb_slot *s, uint64_t ran_ns, bool running)
{
    struct fb_pool *p = s->p;
    s->late = true;
    atomic_fetch_add_explicit(&s->fn->late, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->late_total, 1, memory_order_relaxed);
    fb_warn("blocking call to %s (%016llx) %s %llu ms, past handler_deadline_ms = %llu",
            s->fn->canonical, (unsigned long long)s->fn->id,
            running ? "still running after" : "returned after",
            (unsigned long long)(ran_ns / 1000000),
            (unsigned long long)(p->deadline_ns / 1000000));
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
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + period;
        ts.tv_sec = (time_t)(t / 1000000000ull);
        ts.tv_nsec = (long)(t % 1000000000ull);
        pthread_cond_timedwait(&p->wd_cond, &p->lock, &ts);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->lock);
        uint64_t now = fb_now_ns();
        for (unsigned i = 0; i < p->nthreads; i++) {
            struct fb_slot *s = &p->slots[i];
            pthread_mutex_lock(&s->lock);
            if (s->fn && !s->late && now - s->start_ns >= p->deadline_ns)
                flag_late(s, now - s->start_ns, true);
            pthread_mutex_unlock(&s->lock);
        }
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

uint64_t fb_pool_late_total(const struct fb_pool *p)
{
    return p ? atomic_load_explicit(&p->late_total, memory_order_relaxed) : 0;
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

static void *pool_main(void *arg)
{
    struct fb_slot *s = arg;
    struct fb_pool *p = s->p;
    urcu_memb_register_thread();
    fb_dispatch_mark_rcu_thread();
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        struct fb_job *j = p->head;
        if (!j)
            break; /* stop requested and the queue is drained */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);

        if (p->deadline_ns) {
            pthread_mutex_lock(&s->lock);
            s->fn = j->fn;
            s->start_ns = fb_now_ns();
            s->late = false;
            pthread_mutex_unlock(&s->lock);
        }
        j->rc = fb_dispatch_call_blocking(j);
        if (p->deadline_ns) {
            pthread_mutex_lock(&s->lock);
            uint64_t ran = fb_now_ns() - s->start_ns;
            if (!s->late && ran >= p->deadline_ns)
                flag_late(s, ran, false);
            s->fn = NULL;
            pthread_mutex_unlock(&s->lock);
        }
        /* The plugin may be unloaded once inflight drops to zero: the job
         * must not touch fn after this. */
        atomic_fetch_sub_explicit(&j->fn->plugin->inflight, 1, memory_order_release);
        j->fn = NULL;
        if (j->waiter)
            fb_worker_post_done(fb_waiter_worker(j->waiter), j);
        else
            free(j);

        pthread_mutex_lock(&p->lock);
    }
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
    p->max_queued = (size_t)FB_POOL_QUEUE_PER_THREAD * nthreads;
    p->deadline_ns = (uint64_t)d->cfg->handler_deadline_ms * 1000000ull;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->wd_cond, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned i = 0; i < nthreads; i++) {
        struct fb_slot *s = &p->slots[i];
        s->p = p;
        pthread_mutex_init(&s->lock, NULL);
        int rc = pthread_create(&s->thread, NULL, pool_main, s);
        if (rc) {
            pthread_mutex_destroy(&s->lock);
            p->nthreads = i;
            fb_pool_free(p);
            return -rc;
        }
        p->nthreads = i + 1;
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

int fb_pool_submit(struct fb_pool *p, struct fb_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->queued >= p->max_queued) {
        pthread_mutex_unlock(&p->lock);
        return -EBUSY;
    }
    p->queued++;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

struct fb_pool *fb_pool_free(struct fb_pool *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_cond_broadcast(&p->wd_cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++) {
        pthread_join(p->slots[i].thread, NULL);
        pthread_mutex_destroy(&p->slots[i].lock);
    }
    if (p->wd_running)
        pthread_join(p->watchdog, NULL);
    pthread_cond_destroy(&p->wd_cond);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}
