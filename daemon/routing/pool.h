/*
 * The blocking pool: threads that run FIDBUS_FN_BLOCKING handlers, so an
 * I/O loop never waits on one. A job carries its own copy of the event
 * (the receive buffer it came from is reused as soon as the frame is
 * handled). When a job has a waiter, the pool hands it to the job's done
 * callback (the connection's, which posts it back to its I/O worker to
 * send the ACK and release PING barriers); otherwise the job is freed on
 * the pool thread.
 */
#ifndef FB_POOL_H
#define FB_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/plugin.h>

struct fb_daemon;

struct fb_waiter;
struct fb_pool_user;

/* Who a job is queued for (pool fairness, below): a Unix peer's uid, or
 * FB_PRINCIPAL_OTHER for every TCP peer and a Unix peer without
 * credentials together. */
#define FB_PRINCIPAL_OTHER UINT32_MAX

/*
 * One connection's queue in the pool, embedded in the connection. The
 * pool links it while it holds jobs; every job queued holds a waiter and
 * so a reference on the connection, so it outlives its time in the pool.
 * Zero-initialised; the pool's lock guards every field.
 */
struct fb_pool_src {
    struct fb_pool_src *next; /* its user's round robin */
    struct fb_job *head, *tail;
    size_t n;
    bool active; /* linked, n > 0 */
};

/*
 * Republishing budget shared by the blocking calls an event led to
 * (dispatch.c): FIDBUS republishes counted in `used`, refcounted by the
 * jobs and the call that hold it.
 */
struct fb_budget {
    _Atomic uint32_t used;
    _Atomic uint32_t refs;
};

/* A job's rc when it never ran (the pool gave it up at shutdown), and
 * the rc of the spare job that answers for a call still running when
 * shutdown stopped waiting for it (pool.c). */
#define FB_JOB_NOT_RUN (-1000000)
#define FB_JOB_GIVEN_UP (-1000001)

struct fb_job {
    struct fb_job *next;
    struct fb_daemon *d;
    struct fb_func *fn;
    struct fb_waiter *waiter; /* NULL: nobody waits */
    /* With a waiter: called on the pool thread once the job is done (run,
     * not run, or given up), and owns j from then on. Set by whoever
     * created the waiter (the connection, bus/conn.c), so the pool calls
     * nothing above it. */
    void (*done)(struct fb_job *j);
    struct fb_pool_src *src;  /* the connection's queue; NULL: its user's own */
    struct fb_budget *budget; /* republish budget of its event, or NULL */
    uint32_t principal;       /* uid, or FB_PRINCIPAL_OTHER */
    unsigned hop;             /* republish depth of the event */
    int rc;                   /* handler's return value, or FB_JOB_NOT_RUN */
    struct fidbus_event ev;   /* points into storage below */
    struct fidbus_tag tags[]; /* then id, tag strings, payload */
};

/*
 * A job for fn holding a deep copy of ev (src, budget and principal
 * NULL/0: the caller sets them). Returns NULL on ENOMEM. Free with
 * fb_job_free.
 */
struct fb_job *fb_job_new(struct fb_daemon *d, struct fb_func *fn,
                          const struct fidbus_event *ev, unsigned hop);
/* Frees j and drops its budget reference. NULL-safe. */
void fb_job_free(struct fb_job *j);

struct fb_pool;

/*
 * Jobs waiting per pool thread before submissions are refused: blocking
 * handlers are slow by definition, and an unbounded queue of event copies
 * is how a busy bus runs out of memory.
 *
 * Fairness: the queue is one queue per user (principal above) and, in a
 * user's, one per connection; the threads take a job from each user in
 * turn, and within a user from each connection in turn. With
 * C = FB_POOL_QUEUE_PER_THREAD * threads, a user may hold C / U jobs, U
 * the users with jobs queued (itself counted), and one of its connections
 * its user's share / K, K its connections with jobs queued. The queue
 * holds C + C / 4, so a user with nothing queued finds room even when
 * another holds all of C: a hog is answered BUSY for its own events while
 * others' still get in. Shares shrink as users arrive; one over its share
 * gets no more until it has drained below it. A user alone may still
 * queue C, as much as the whole queue held before.
 */
#define FB_POOL_QUEUE_PER_THREAD 1024u

int fb_pool_new(struct fb_daemon *d, unsigned nthreads, struct fb_pool **out);
/* Queues j (any thread); the pool owns it until it is handed back.
 * Returns 0, or -EBUSY when the queue, j's user's share or its
 * connection's share is full (j stays the caller's). */
int fb_pool_submit(struct fb_pool *p, struct fb_job *j);
/*
 * Shutdown has begun (main thread, before the workers are joined): from
 * now on, the watchdog gives up on a call running past
 * handler_deadline_ms -- its waiter is answered as failed, its thread is
 * left to it -- and once no thread is left, the jobs still queued are
 * answered as not run. Each is logged. With the deadline off (0) the
 * pool waits for every call as before.
 */
void fb_pool_begin_stop(struct fb_pool *p);
/* Blocking calls that ran past handler_deadline_ms so far. NULL-safe. */
uint64_t fb_pool_late_total(const struct fb_pool *p);
/* Jobs waiting for a pool thread (stats' pool_queued). */
size_t fb_pool_queued(struct fb_pool *p);
/* True once a pool was freed with a call given up still running: the
 * daemon keeps what such a call may touch (daemon.c). */
bool fb_pool_left_threads(void);
/* Runs every queued job, joins the threads, frees. A pool with a call
 * given up is left allocated (its thread may still come back to it).
 * NULL-safe. */
struct fb_pool *fb_pool_free(struct fb_pool *p);

#endif
