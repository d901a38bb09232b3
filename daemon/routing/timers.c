/*
 * Plugin timers (host->timer_start / timer_stop) on the daemon's main loop.
 *
 * Every timer is a uv_timer_t owned by the main loop, so a timer callback
 * never runs concurrently with plugin init/fini or with another timer
 * callback. Plugins may ask for timers from any thread (an inline handler
 * on an I/O worker, a blocking call on the pool): such a request gets its
 * id at once from an atomic counter and is queued under `lock`, and a
 * uv_async wakes the main loop to act on it. A request from the main
 * thread itself acts directly.
 *
 * `lock` also guards the list of live timers, because timer_stop from
 * another thread must answer -ENOENT synchronously: it looks for the id
 * in the live list and in the queue of starts not yet acted on. The lock
 * is only ever held for list surgery, never across a callback.
 *
 * A timer's memory belongs to libuv from uv_close until its close
 * callback; `nhandles` counts handles not yet closed so fb_timers_close
 * frees the object only after the last close callback. fb_timers_close
 * therefore comes last at shutdown, after every plugin is unloaded and
 * every thread that could call in (I/O workers, the pool) has stopped.
 *
 * Plugins are loaded and unloaded on the control thread, so cancelling an
 * owner's timers must work off the loop too: its timers are marked dead
 * and unlinked under the lock (a dead timer's callback is skipped), the
 * caller waits until no callback of that owner is running, and the loop
 * closes the handles when the async wakes it. After that return the
 * plugin's fini can run without racing one of its own timer callbacks.
 *
 * A plugin loaded at run time runs init on the control thread while the
 * loop goes on: a timer it starts there would fire before init returned
 * (a 0 ms timer at once), racing init on the state its callback reads.
 * The loader holds the owner around init (fb_timers_hold/release): its
 * queued requests wait in the queue until init has returned.
 */
#include "routing/timers.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "base/log.h"

struct fb_timer {
    uv_timer_t h;
    struct fb_timers *t;
    void *owner;
    uint64_t id;
    uint64_t repeat_ms;
    void (*cb)(void *arg);
    void *arg;
    bool linked;                  /* in the live list; under t->lock */
    bool dead;                    /* cancelled off the loop; under t->lock */
    struct fb_timer *prev, *next; /* live or dead list, under t->lock */
};

enum req_kind { REQ_START, REQ_STOP };

struct req {
    enum req_kind kind;
    void *owner;
    uint64_t id;
    uint64_t after_ms, repeat_ms;
    void (*cb)(void *arg);
    void *arg;
    struct req *next;
};

struct fb_timers {
    uv_loop_t *loop;
    pthread_t thread; /* the loop's thread */
    uv_async_t async;
    pthread_mutex_t lock;
    struct req *queue, *queue_tail; /* under lock */
    struct fb_timer *live;          /* under lock */
    struct fb_timer *dead;          /* under lock: for the loop to close */
    void *running;                  /* under lock: owner of the callback running */
    void *held;                     /* under lock: owner whose init runs off the loop */
    pthread_cond_t idle;            /* signalled when running goes NULL */
    _Atomic uint64_t next_id;
    unsigned nhandles; /* main thread only */
    bool closing;      /* main thread only */
};

static bool on_loop_thread(const struct fb_timers *t)
{
    return pthread_equal(pthread_self(), t->thread);
}

static void maybe_free(struct fb_timers *t)
{
    if (t->closing && t->nhandles == 0) {
        pthread_cond_destroy(&t->idle);
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
}

static void timer_closed(uv_handle_t *h)
{
    struct fb_timer *tm = h->data;
    struct fb_timers *t = tm->t;
    free(tm);
    t->nhandles--;
    maybe_free(t);
}

static void async_closed(uv_handle_t *h)
{
    struct fb_timers *t = h->data;
    t->nhandles--;
    maybe_free(t);
}

/* Caller holds t->lock. */
static void unlink_live(struct fb_timers *t, struct fb_timer *tm)
{
    tm->linked = false;
    if (tm->prev)
        tm->prev->next = tm->next;
    else
        t->live = tm->next;
    if (tm->next)
        tm->next->prev = tm->prev;
    tm->prev = tm->next = NULL;
}

/* Main thread: takes a live timer out of the list and closes its handle;
 * its memory goes when libuv calls timer_closed. */
static void retire(struct fb_timers *t, struct fb_timer *tm)
{
    pthread_mutex_lock(&t->lock);
    bool mine = tm->linked;
    if (mine)
        unlink_live(t, tm);
    pthread_mutex_unlock(&t->lock);
    /* Unlinked by an off-loop cancel: it sits in the dead list, which
     * closes it. */
    if (!mine)
        return;
    uv_timer_stop(&tm->h);
    uv_close((uv_handle_t *)&tm->h, timer_closed);
}

static void timer_fired(uv_timer_t *h)
{
    struct fb_timer *tm = h->data;
    struct fb_timers *t = tm->t;
    void (*cb)(void *) = tm->cb;
    void *arg = tm->arg;
    void *owner = tm->owner;

    /* A one-shot timer is retired before its callback, so a timer_stop
     * of its own id from inside the callback answers -ENOENT and nothing
     * touches it twice. Its memory stays valid until the close callback,
     * which runs in a later loop phase. */
    pthread_mutex_lock(&t->lock);
    if (tm->dead) {
        pthread_mutex_unlock(&t->lock);
        return;
    }
    t->running = owner;
    bool once = tm->repeat_ms == 0;
    if (once)
        unlink_live(t, tm);
    pthread_mutex_unlock(&t->lock);
    if (once) {
        uv_timer_stop(&tm->h);
        uv_close((uv_handle_t *)&tm->h, timer_closed);
    }
    cb(arg);
    pthread_mutex_lock(&t->lock);
    t->running = NULL;
    pthread_cond_broadcast(&t->idle);
    pthread_mutex_unlock(&t->lock);
}

/* Loop thread: closes what off-loop cancels left in the dead list. */
static void close_dead(struct fb_timers *t)
{
    pthread_mutex_lock(&t->lock);
    struct fb_timer *tm = t->dead;
    t->dead = NULL;
    pthread_mutex_unlock(&t->lock);
    while (tm) {
        struct fb_timer *next = tm->next;
        tm->prev = tm->next = NULL;
        uv_timer_stop(&tm->h);
        uv_close((uv_handle_t *)&tm->h, timer_closed);
        tm = next;
    }
}

/* Main thread. Returns 0 or -errno; on error nothing is left running. */
static int start_now(struct fb_timers *t, void *owner, uint64_t id, uint64_t after_ms,
                     uint64_t repeat_ms, void (*cb)(void *), void *arg)
{
    struct fb_timer *tm = calloc(1, sizeof *tm);
    if (!tm)
        return -ENOMEM;
    int rc = uv_timer_init(t->loop, &tm->h);
    if (rc < 0) {
        free(tm);
        return rc;
    }
    t->nhandles++;
    tm->h.data = tm;
    tm->t = t;
    tm->owner = owner;
    tm->id = id;
    tm->repeat_ms = repeat_ms;
    tm->cb = cb;
    tm->arg = arg;
    rc = uv_timer_start(&tm->h, timer_fired, after_ms, repeat_ms);
    if (rc < 0) {
        uv_close((uv_handle_t *)&tm->h, timer_closed);
        return rc;
    }
    pthread_mutex_lock(&t->lock);
    tm->next = t->live;
    if (t->live)
        t->live->prev = tm;
    t->live = tm;
    tm->linked = true;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* Caller holds t->lock: appends q (its next is NULL) to the queue. */
static void enqueue(struct fb_timers *t, struct req *q)
{
    if (t->queue_tail)
        t->queue_tail->next = q;
    else
        t->queue = q;
    t->queue_tail = q;
}

/* Main thread: finds the live timer (owner, id). */
static struct fb_timer *find_live(struct fb_timers *t, void *owner, uint64_t id)
{
    for (struct fb_timer *tm = t->live; tm; tm = tm->next)
        if (tm->id == id && tm->owner == owner)
            return tm;
    return NULL;
}

static void drain_queue(uv_async_t *a)
{
    struct fb_timers *t = a->data;

    close_dead(t);
    /* The requests of a held owner stay queued, in order, for the drain
     * after fb_timers_release. */
    pthread_mutex_lock(&t->lock);
    struct req *q = t->queue, *run = NULL, **run_tail = &run;
    t->queue = t->queue_tail = NULL;
    while (q) {
        struct req *next = q->next;
        q->next = NULL;
        if (t->held && q->owner == t->held) {
            enqueue(t, q);
        } else {
            *run_tail = q;
            run_tail = &q->next;
        }
        q = next;
    }
    q = run;
    pthread_mutex_unlock(&t->lock);

    while (q) {
        struct req *next = q->next;
        if (!t->closing) {
            if (q->kind == REQ_START) {
                /* The caller already holds an id and a 0 return; a start
                 * that fails here can only be reported to the log. */
                int rc = start_now(t, q->owner, q->id, q->after_ms, q->repeat_ms, q->cb,
                                   q->arg);
                if (rc < 0)
                    fb_error("plugin timer %" PRIu64 " not started: %s", q->id,
                             uv_strerror(rc));
            } else {
                pthread_mutex_lock(&t->lock);
                struct fb_timer *tm = find_live(t, q->owner, q->id);
                pthread_mutex_unlock(&t->lock);
                if (tm)
                    retire(t, tm);
            }
        }
        free(q);
        q = next;
    }
}

int fb_timers_new(uv_loop_t *loop, struct fb_timers **out)
{
    struct fb_timers *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->loop = loop;
    t->thread = pthread_self();
    atomic_init(&t->next_id, 1);
    int rc = pthread_mutex_init(&t->lock, NULL);
    if (rc != 0) {
        free(t);
        return -rc;
    }
    pthread_cond_init(&t->idle, NULL);
    rc = uv_async_init(loop, &t->async, drain_queue);
    if (rc < 0) {
        pthread_cond_destroy(&t->idle);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    t->async.data = t;
    t->nhandles = 1;
    /* The async alone must not keep the loop alive: the timers it creates
     * do, and the daemon's main loop has its own reasons to run. */
    uv_unref((uv_handle_t *)&t->async);
    *out = t;
    return 0;
}

void fb_timers_close(struct fb_timers *t)
{
    if (!t || t->closing)
        return;
    t->closing = true;
    close_dead(t);

    pthread_mutex_lock(&t->lock);
    struct req *q = t->queue;
    t->queue = t->queue_tail = NULL;
    struct fb_timer *tm = t->live;
    t->live = NULL;
    pthread_mutex_unlock(&t->lock);

    while (q) {
        struct req *next = q->next;
        free(q);
        q = next;
    }
    while (tm) {
        struct fb_timer *next = tm->next;
        tm->prev = tm->next = NULL;
        uv_timer_stop(&tm->h);
        uv_close((uv_handle_t *)&tm->h, timer_closed);
        tm = next;
    }
    uv_close((uv_handle_t *)&t->async, async_closed);
}

int fb_timer_start(struct fb_timers *t, void *owner, uint64_t after_ms,
                   uint64_t repeat_ms, void (*cb)(void *arg), void *arg,
                   uint64_t *timer_id)
{
    if (!t || !cb)
        return -EINVAL;
    uint64_t id = atomic_fetch_add_explicit(&t->next_id, 1, memory_order_relaxed);

    if (on_loop_thread(t)) {
        if (t->closing)
            return -ESHUTDOWN;
        int rc = start_now(t, owner, id, after_ms, repeat_ms, cb, arg);
        if (rc == 0 && timer_id)
            *timer_id = id;
        return rc;
    }

    struct req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    *q = (struct req){.kind = REQ_START,
                      .owner = owner,
                      .id = id,
                      .after_ms = after_ms,
                      .repeat_ms = repeat_ms,
                      .cb = cb,
                      .arg = arg};
    pthread_mutex_lock(&t->lock);
    enqueue(t, q);
    pthread_mutex_unlock(&t->lock);
    if (timer_id)
        *timer_id = id;
    uv_async_send(&t->async);
    return 0;
}

/* Caller holds t->lock: removes a queued start of (owner, id). */
static bool drop_queued_start(struct fb_timers *t, void *owner, uint64_t id)
{
    struct req *prev = NULL;
    for (struct req *q = t->queue; q; prev = q, q = q->next) {
        if (q->kind != REQ_START || q->id != id || q->owner != owner)
            continue;
        if (prev)
            prev->next = q->next;
        else
            t->queue = q->next;
        if (t->queue_tail == q)
            t->queue_tail = prev;
        free(q);
        return true;
    }
    return false;
}

int fb_timer_stop(struct fb_timers *t, void *owner, uint64_t timer_id)
{
    if (!t)
        return -ENOENT;

    if (on_loop_thread(t)) {
        pthread_mutex_lock(&t->lock);
        bool queued = drop_queued_start(t, owner, timer_id);
        struct fb_timer *tm = queued ? NULL : find_live(t, owner, timer_id);
        pthread_mutex_unlock(&t->lock);
        if (tm)
            retire(t, tm);
        return queued || tm ? 0 : -ENOENT;
    }

    struct req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    *q = (struct req){.kind = REQ_STOP, .owner = owner, .id = timer_id};

    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (drop_queued_start(t, owner, timer_id)) {
        free(q);
        q = NULL;
    } else if (find_live(t, owner, timer_id)) {
        enqueue(t, q);
    } else {
        free(q);
        q = NULL;
        rc = -ENOENT;
    }
    pthread_mutex_unlock(&t->lock);
    if (q)
        uv_async_send(&t->async);
    return rc;
}

void fb_timers_hold(struct fb_timers *t, void *owner)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->held = owner;
    pthread_mutex_unlock(&t->lock);
}

void fb_timers_release(struct fb_timers *t, void *owner)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    bool was = t->held == owner;
    if (was)
        t->held = NULL;
    pthread_mutex_unlock(&t->lock);
    /* Off the loop: what the owner queued meanwhile starts now. On the
     * loop nothing was held (its starts act directly). */
    if (was && !on_loop_thread(t) && !t->closing)
        uv_async_send(&t->async);
}

void fb_timers_cancel_owner(struct fb_timers *t, void *owner)
{
    if (!t)
        return;

    pthread_mutex_lock(&t->lock);
    if (t->held == owner)
        t->held = NULL;
    /* queued starts and stops of owner: neither may act later */
    struct req **pp = &t->queue;
    t->queue_tail = NULL;
    while (*pp) {
        struct req *q = *pp;
        if (q->owner == owner) {
            *pp = q->next;
            free(q);
        } else {
            t->queue_tail = q;
            pp = &q->next;
        }
    }
    struct fb_timer *mine = NULL;
    bool here = on_loop_thread(t);
    for (struct fb_timer *tm = t->live, *next; tm; tm = next) {
        next = tm->next;
        if (tm->owner != owner)
            continue;
        unlink_live(t, tm);
        if (here) {
            tm->next = mine;
            mine = tm;
        } else {
            tm->dead = true;
            tm->next = t->dead;
            t->dead = tm;
        }
    }
    if (!here) {
        /* A callback of owner that started before we took the lock may
         * still be running on the loop: fini must not race it. */
        while (t->running == owner)
            pthread_cond_wait(&t->idle, &t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    if (!here) {
        /* Off-loop callers (the control thread) are joined before
         * fb_timers_close, so the async is still open. */
        uv_async_send(&t->async);
        return;
    }

    while (mine) {
        struct fb_timer *next = mine->next;
        mine->next = NULL;
        uv_timer_stop(&mine->h);
        uv_close((uv_handle_t *)&mine->h, timer_closed);
        mine = next;
    }
}
