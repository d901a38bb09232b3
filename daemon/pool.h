/*
 * The blocking pool: threads that run FIDBUS_FN_BLOCKING handlers, so an
 * I/O loop never waits on one. A job carries its own copy of the event
 * (the receive buffer it came from is reused as soon as the frame is
 * handled). When a job has a waiter, its completion goes back to the I/O
 * worker that owns the waiter's connection, which sends the ACK and
 * releases PING barriers; otherwise the job is freed on the pool thread.
 */
#ifndef FB_POOL_H
#define FB_POOL_H

#include <stdint.h>

#include <fidbus/plugin.h>

#include "daemon.h"

struct fb_waiter;

struct fb_job {
    struct fb_job *next;
    struct fb_daemon *d;
    struct fb_func *fn;
    struct fb_waiter *waiter; /* NULL: nobody waits */
    unsigned hop;             /* republish depth of the event */
    int rc;                   /* handler's return value */
    struct fidbus_event ev;   /* points into storage below */
    struct fidbus_tag tags[]; /* then id, tag strings, payload */
};

/*
 * A job for fn holding a deep copy of ev. Returns NULL on ENOMEM.
 * Free with free().
 */
struct fb_job *fb_job_new(struct fb_daemon *d, struct fb_func *fn,
                          const struct fidbus_event *ev, unsigned hop);

struct fb_pool;

/* Jobs waiting per pool thread before submissions are refused: blocking
 * handlers are slow by definition, and an unbounded queue of event copies
 * is how a busy bus runs out of memory. */
#define FB_POOL_QUEUE_PER_THREAD 1024u

int fb_pool_new(struct fb_daemon *d, unsigned nthreads, struct fb_pool **out);
/* Queues j (any thread); the pool owns it until it is handed back.
 * Returns 0, or -EBUSY when FB_POOL_QUEUE_PER_THREAD * threads jobs are
 * already waiting (j stays the caller's). */
int fb_pool_submit(struct fb_pool *p, struct fb_job *j);
/* Blocking calls that ran past handler_deadline_ms so far. NULL-safe. */
uint64_t fb_pool_late_total(const struct fb_pool *p);
/* Runs every queued job, joins the threads, frees. NULL-safe. */
struct fb_pool *fb_pool_free(struct fb_pool *p);

#endif
