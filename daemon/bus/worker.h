/*
 * I/O workers: each runs its own libuv loop on its own thread and owns the
 * connections the listeners hand to it. Everything a connection does --
 * read, decode, dispatch inline handlers, write answers, and finish acked
 * events whose blocking calls completed on the pool -- happens on its
 * worker's thread, so connection state needs no locks.
 */
#ifndef FB_WORKER_H
#define FB_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include <uv.h>

#include <fidbus/proto.h>

#include "base/counters.h"
#include "bus/conn_admit.h"

struct fb_daemon;

struct fb_job;
struct fb_waiter;
struct fb_conn;
struct fb_conn_snap;
struct fb_call;
struct fb_rstage;

#define FB_WAITER_FREE_MAX 4096u

struct fb_new_fd {
    int fd;
    bool is_tcp;
    struct fb_admit admit;
};

struct fb_worker {
    struct fb_daemon *d;
    unsigned index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t async;      /* new fds, completions, stop */
    uv_timer_t stop_timer; /* bounds how long a stop waits for clients */

    pthread_mutex_t lock; /* guards the fields below, to rrevoke */
    struct fb_new_fd *new_fds;
    size_t nnew, capnew;
    struct fb_job *done_head;  /* finished blocking jobs, LIFO */
    struct fb_conn_snap *snap; /* conn.list asks for a snapshot (conn_list.h) */
    bool stop_requested;
    /* Remote calls (bus/member.c): for members on this worker, and back
     * home to publishers on it, FIFO; rclosed: the loop has ended, a
     * call handed here now is handled by the sender. */
    struct fb_call *rin_head, *rin_tail;
    struct fb_call *rback_head, *rback_tail;
    bool rclosed;
    bool rrevoke; /* config.reload revoked members here (member.c) */

    /* loop-thread only */
    bool stopping;
    struct fb_conn *conns; /* doubly linked */
    _Atomic unsigned nconns;
    _Atomic unsigned npaused; /* of them with input on hold (stats' paused) */
    size_t nwaiters; /* alive waiters: jobs may still post to us */
    struct fb_counters *counters;
    struct fidbus_msg *msg; /* decode scratch, reused for every frame */
    /* Fair share (conn.c): connections that reached max_frames_per_read
     * in one callback wait here, linked through the connection, and go on
     * from the idle handle, after the loop has polled everyone else. */
    uv_idle_t yield_idle;
    struct fb_conn *yield_head, *yield_tail;
    /* Idle timeouts and input_soft: a sweep over conns every quarter of
     * the shortest (conn_sweep.c). */
    uv_timer_t sweep_timer;
    /* Remote calls staged for other workers (and this one) while a batch
     * of frames is handled, handed over at its end: one lock and one
     * wake per destination per batch (bus/member.c). */
    struct fb_rstage *stage; /* [d->nworkers] */
    unsigned *dirty;         /* indexes of stages holding calls */
    unsigned ndirty;
    struct fb_conn *rconns;  /* connections that serve (member.c) */
    uv_timer_t rtimer;       /* call deadlines */
    /* Finished waiters kept for reuse (conn.c), at most FB_WAITER_FREE_MAX. */
    struct fb_waiter *wfree;
    unsigned nwfree;
    uint64_t rtimer_due;     /* 0: not armed */
};

int fb_worker_start(struct fb_daemon *d, unsigned index, struct fb_worker **out);
/* Hands an accepted, non-blocking socket to w (any thread). */
void fb_worker_add_conn(struct fb_worker *w, int fd, bool is_tcp,
                        const struct fb_admit *a);
/* A blocking job with a waiter finished (pool thread). */
void fb_worker_post_done(struct fb_worker *w, struct fb_job *j);
/* Asks w to finish: stop reading, complete what was read (blocking calls
 * included), flush answers, close connections, end the loop. */
void fb_worker_stop(struct fb_worker *w);
/* Joins the thread and frees. NULL-safe. */
struct fb_worker *fb_worker_join(struct fb_worker *w);
/* A stopping worker ends its loop once its last connection and waiter are
 * gone; connections call this when they go (close callbacks run after the
 * loop's check phase, so the check hook alone would leave the loop asleep
 * until its stop timer). */
void fb_worker_maybe_finish(struct fb_worker *w);
/* Hands the remote calls staged on w's thread to their workers. */
void fb_worker_remote_flush(struct fb_worker *w);

#endif
