/*
 * One client connection on the bus socket: frames in, answers out.
 *
 * Lifetime: a connection is referenced by its libuv handle and by each of
 * its unfinished waiters (events with blocking calls in flight). It is
 * freed when the handle's close callback has run and the last waiter has
 * finished, so a blocking call that outlives its client finishes safely.
 * All of this happens on the owning worker's thread.
 *
 * Ordering: frames are handled in the order read. An event with blocking
 * targets gets a waiter, queued in creation order; a PING is answered
 * once every waiter created before it has finished (the barrier), tracked
 * by counting waiters popped off the front of that queue.
 */
#ifndef FB_CONN_H
#define FB_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "bus/worker.h"

struct fb_conn;

struct fb_waiter {
    struct fb_waiter *next; /* the connection's FIFO */
    struct fb_conn *conn;
    uint64_t seq;
    uint32_t pending; /* blocking calls not yet finished */
    uint32_t ok, failed;
    uint32_t busy;     /* calls refused by a full pool queue */
    uint32_t skipped;  /* targets skipped: function quarantined (in failed) */
    uint32_t not_run;  /* calls given up unrun at shutdown (pool.c) */
    uint32_t given_up; /* calls still running when shutdown gave up (in failed) */
    uint32_t unavail;  /* remote calls without a member, or that lost it */
    uint32_t unran;    /* of unavail: calls that never ran (answered un-acked too) */
    bool has_seq, ack, done;
};

struct fb_pool_src;

/* Takes ownership of fd (closed on failure) and of the admission a (given
 * back when the connection goes). Loop thread of w. */
int fb_conn_new(struct fb_worker *w, int fd, bool is_tcp, const struct fb_admit *a);
/* Idle timeouts and input_soft (conn_sweep.c): closes the worker's
 * connections idle, or sitting on an unfinished frame, for too long. */
void fb_conn_sweep(struct fb_worker *w);
/* A blocking job of one of this worker's waiters finished. Frees j. */
void fb_conn_job_done(struct fb_job *j);
struct fb_call;
/* A remote call of one of this worker's waiters is back (routing/remote.h).
 * Releases call. */
void fb_conn_call_done(struct fb_call *call);
/* ACK on c's output; fb_conn_flush writes it (false: c closed). */
void fb_conn_send_ack(struct fb_conn *c, uint64_t seq, uint64_t result);
bool fb_conn_flush(struct fb_conn *c);
/* Worker stopping: stop reading, finish what was read, close when idle. */
void fb_conn_begin_stop(struct fb_conn *c);
/* Close now, whatever is pending (stop timeout). */
void fb_conn_abort(struct fb_conn *c);
/* The next connection in the worker's list, for walking it. */
struct fb_conn *fb_conn_next(struct fb_conn *c);
/* The connection's id: unique for the daemon's life, never reused, shared
 * with control connections (conn_list.h); what conn.list shows. Any code
 * holding c on its worker's thread may read it. */
uint64_t fb_conn_id(const struct fb_conn *c);

#endif
