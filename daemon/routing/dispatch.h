/*
 * Dispatch: one decoded event, one route table, the handlers it selects.
 * Inline handlers are called right here; blocking ones are copied into a
 * job for the worker pool. Allocation-free unless a blocking target is
 * selected.
 */
#ifndef FB_DISPATCH_H
#define FB_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/plugin.h>

struct fb_daemon;
struct fb_route_table;

struct fb_waiter;

/*
 * A target whose function is quarantined (registry.h) is skipped. The
 * outcome counts skips apart from failed calls; the connection (bus/conn.c)
 * reports a skip as a failed call: an acked PUBLISH whose targets were all
 * (or partly) skipped gets ERROR HANDLER_FAILED with result = the calls
 * that did succeed, so a publisher never takes a skipped handler for a
 * delivered event. A split route is not re-routed to another target: its
 * key-to-target mapping stays stable while the quarantine lasts.
 */
struct fb_outcome {
    bool routed;
    uint32_t ok;      /* inline calls that succeeded */
    uint32_t failed;  /* inline calls that failed */
    uint32_t skipped; /* targets skipped: function quarantined */
    uint32_t queued;  /* blocking calls queued (report to the waiter) */
    uint32_t refused; /* blocking calls that could not be queued (ENOMEM) */
    uint32_t busy;    /* blocking calls refused: the pool's queue is full */
    uint32_t remote;  /* remote calls on their way (report to the waiter) */
    uint32_t unavail; /* remote calls that found no member (UNAVAILABLE) */
};

struct fb_job;
struct fb_pool_src;

/* Whoever waits for an event's blocking calls (bus/conn.c: the ACK and
 * the PING barrier) says how they report back. The waiter is opaque here:
 * the caller counts out->queued into it once fb_dispatch returns. */
struct fb_wait_ops {
    /* Called once, at the first blocking target, with wait_arg; NULL on
     * ENOMEM (the blocking calls are then refused). */
    struct fb_waiter *(*create)(void *wait_arg);
    /* The pool queue the waiter's jobs go to (its connection's, pool.h). */
    struct fb_pool_src *(*src)(const struct fb_waiter *wt);
    /* Becomes each job's done callback (pool.h). */
    void (*done)(struct fb_job *j);
};

/*
 * Dispatches ev under t (caller holds the RCU read lock and keeps ev valid
 * for the call). ev->generation is set here. With wait NULL, blocking
 * calls are queued with nobody waiting for them.
 */
void fb_dispatch(struct fb_daemon *d, const struct fb_route_table *t,
                 struct fidbus_event *ev, size_t idlen, const struct fb_wait_ops *wait,
                 void *wait_arg, struct fb_outcome *out);

/* On a pool thread: runs a blocking job's handler with the job's hop
 * count, budget and principal, counts the call, returns the handler's
 * result. returned(arg), when given, is asked first once the handler is
 * back: false (*kept = false) means the call was given up meanwhile
 * (pool.c) and nothing but the job may be touched, not even to count. */
int fb_dispatch_call_blocking(struct fb_job *j, bool (*returned)(void *), void *arg,
                              bool *kept);
struct fb_budget;
/* Drops a reference to a republish budget (pool.h). NULL-safe. */
void fb_budget_put(struct fb_budget *b);
/* Whose events the calling thread dispatches from now on: a Unix peer's
 * uid or FB_PRINCIPAL_OTHER (pool.h). Jobs queued for the pool carry it. */
void fb_dispatch_set_principal(uint32_t principal);

/*
 * For plugins (host->publish): validates, then dispatches on the calling
 * thread under the current table with the hop count of the event being
 * handled on this thread plus one. Returns handlers reached, -EINVAL,
 * -ELOOP, -EDQUOT (over [limits] max_republish for the client event it
 * came from) or -ENOENT (see <fidbus/plugin.h>).
 */
int fb_dispatch_local(struct fb_daemon *d, const char *id, const struct fidbus_tag *tags,
                      size_t ntags, const uint8_t *payload, size_t payload_len);

/* Marks the calling thread as a registered RCU reader that may dispatch
 * (I/O workers, the pool, the main thread); host->publish from any other
 * thread returns -EPERM. */
void fb_dispatch_mark_rcu_thread(void);
/* Marks an I/O worker or pool thread: a host->publish on it always comes
 * from a handler, inside its event's republish budget (dispatch.c). */
void fb_dispatch_mark_tree_thread(void);

#endif
