/*
 * Dispatch: route lookup, target selection, inline calls and blocking
 * jobs. This is the hot path: for inline targets it allocates nothing and
 * copies nothing; the event's strings and payload stay where the decoder
 * left them (the receive buffer and the decode arena).
 *
 * The hop count of the event being handled lives in a thread-local: a
 * handler that calls host->publish does so on the thread that called it,
 * so the nested event gets hop + 1 and is refused past FIDBUS_MAX_HOPS.
 *
 * Republish budget ([limits] max_republish): the hop limit bounds depth,
 * not breadth (N copies per hop would be N^8 calls), so host->publish
 * calls are also counted per client event. While the tree of republishes
 * stays on one thread (inline handlers), the count is a thread-local,
 * reset when the client event's dispatch ends. A blocking job created
 * inside the tree takes it along: the count moves into a small shared,
 * refcounted struct fb_budget that the job and everything it republishes
 * use. A blocking handler of the client event itself starts a budget of
 * its own, so the bound is max_republish per client event and per
 * blocking handler it reached directly.
 */
#include "routing/dispatch.h"

#include <errno.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "base/clock.h"
#include "base/counters.h"
#include "base/daemon_t.h"
#include "base/log.h"
#include "config/config.h"
#include "routing/plugin_loader.h"
#include "routing/pool.h"
#include "routing/remote.h"
#include "routing/routes.h"
#include "routing/tap.h"

static _Thread_local unsigned tls_hop;
static _Thread_local bool tls_rcu_thread;
/* Whose events this thread dispatches (the pool's fairness, pool.h). */
static _Thread_local uint32_t tls_principal = FB_PRINCIPAL_OTHER;
/* Republishes of this tree counted here while tls_budget is NULL. */
static _Thread_local uint32_t tls_used;
static _Thread_local struct fb_budget *tls_budget;
/* Handlers run on this thread inside a tree: set for good on I/O workers
 * and pool threads, where every host->publish comes from a handler of a
 * client event or job; on the main and control threads (plugin timers,
 * init) each host->publish starts a tree of its own. */
static _Thread_local bool tls_tree;

/* The tree on this thread is done: its count goes, its budget is let go. */
static void tree_end(void)
{
    tls_used = 0;
    if (__builtin_expect(tls_budget != NULL, 0)) {
        fb_budget_put(tls_budget);
        tls_budget = NULL;
    }
}

void fb_dispatch_mark_rcu_thread(void)
{
    tls_rcu_thread = true;
}

void fb_dispatch_mark_tree_thread(void)
{
    tls_tree = true;
}

void fb_dispatch_set_principal(uint32_t principal)
{
    tls_principal = principal;
}

void fb_budget_put(struct fb_budget *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

/* The tree's shared budget, made on first need; NULL on ENOMEM. */
static struct fb_budget *tree_budget(void)
{
    if (!tls_budget) {
        struct fb_budget *b = malloc(sizeof *b);
        if (!b)
            return NULL;
        atomic_init(&b->used, tls_used);
        atomic_init(&b->refs, 1); /* the frame that owns the tree */
        tls_budget = b;
    }
    atomic_fetch_add_explicit(&tls_budget->refs, 1, memory_order_relaxed);
    return tls_budget;
}

/* Bookkeeping after a handler call: latency sample, counts, quarantine.
 * Inlined by force: it is on the per-event path, and as a call of its own
 * it cost 2% of the instructions per event (callgrind). */
static inline __attribute__((always_inline)) void call_done(struct fb_daemon *d,
                                                            struct fb_func *fn,
                                                            unsigned stripe, uint64_t at,
                                                            uint64_t t0, int rc)
{
    if (t0) {
        uint64_t ns = fb_now_ns() - t0;
        fb_lat_record(&fn->latency, ns);
        fb_hist_timed(&fn->hist, stripe, at, ns);
    }
    atomic_fetch_add_explicit(&fn->calls.s[stripe].v, 1, memory_order_relaxed);
    if (rc)
        fb_striped_add(&fn->errors, 1);
    fb_func_note_result(fn, rc, d->cfg->quarantine_after);
}

static int call_inline(struct fb_daemon *d, struct fb_func *fn,
                       const struct fidbus_event *ev)
{
    /* Sampled timing (latency.h): this thread's stripe of the call count. */
    unsigned stripe = fb_stripe_id();
    _Atomic uint64_t *mine = &fn->calls.s[stripe].v;
    uint64_t at = atomic_load_explicit(mine, memory_order_relaxed);
    uint64_t t0 = at % FB_LAT_SAMPLE == 0 ? fb_now_ns() : 0;
    int rc = fn->handle(fn->ctx, ev);
    call_done(d, fn, stripe, at, t0, rc);
    return rc;
}

/* One target that is a remote function (routing/remote.h): a call to a
 * member, which the waiter counts like a blocking call. */
static void remote_target(struct fb_daemon *d, struct fb_func *fn,
                          const struct fb_route *r, const struct fidbus_event *ev,
                          const struct fb_wait_ops *wait, void *wait_arg,
                          struct fb_waiter **waiter, struct fb_outcome *out)
{
    if (!fb_remote_has_members(fn)) {
        (void)fb_remote_call(d->remote, fn, r, ev, NULL); /* counts it */
        out->unavail++;
        return;
    }
    if (wait && !*waiter && !(*waiter = wait->create(wait_arg))) {
        fb_error("out of memory starting a remote call to %s", fn->canonical);
        out->refused++;
        return;
    }
    int rc = fb_remote_call(d->remote, fn, r, ev, *waiter);
    if (rc == 0)
        out->remote++;
    else if (rc == FIDBUS_UNAVAILABLE)
        out->unavail++;
    else
        out->refused++;
}

void fb_dispatch(struct fb_daemon *d, const struct fb_route_table *t,
                 struct fidbus_event *ev, size_t idlen, const struct fb_wait_ops *wait,
                 void *wait_arg, struct fb_outcome *out)
{
    struct fb_counters *cnt = fb_counters_self(d);
    memset(out, 0, sizeof *out);

    const struct fb_route *r =
        t ? fb_routes_match(t, ev->id, idlen, ev->tags, ev->ntags) : NULL;
    /* The one relaxed load per event while no tap is open (tap.h). */
    if (__builtin_expect(atomic_load_explicit(&d->ntaps, memory_order_relaxed) != 0, 0))
        fb_tap_offer(d, t, r, ev, idlen);
    if (!r) {
        fb_count(&cnt->unrouted, 1);
        return;
    }
    out->routed = true;
    fb_striped_add(&r->matched->n, 1);
    fb_routes_count_routed(t);
    ev->generation = fb_routes_generation(t);

    size_t idx[FB_MAX_TARGETS];
    size_t n = fb_route_select(r, ev->tags, ev->ntags, idx);
    struct fb_waiter *waiter = NULL;
    for (size_t i = 0; i < n; i++) {
        struct fb_func *fn = r->targets[idx[i]].fn;
        if (fb_func_quarantined(fn)) {
            /* Skipped, not re-routed: a split route's choice stays stable
             * per key, and the publisher learns of it (see dispatch.h). */
            fb_striped_add(&fn->skips, 1);
            out->skipped++;
            continue;
        }
        if (!(fn->flags & (FIDBUS_FN_BLOCKING | FB_FN_REMOTE))) {
            if (call_inline(d, fn, ev) == 0)
                out->ok++;
            else
                out->failed++;
            continue;
        }
        if (fn->flags & FB_FN_REMOTE) {
            remote_target(d, fn, r, ev, wait, wait_arg, &waiter, out);
            continue;
        }
        struct fb_job *j = fb_job_new(d, fn, ev, tls_hop);
        if (j && tls_hop && !(j->budget = tree_budget())) {
            fb_job_free(j);
            j = NULL;
        }
        if (j && wait && !waiter) {
            waiter = wait->create(wait_arg);
            if (!waiter) {
                fb_job_free(j);
                j = NULL;
            }
        }
        if (!j) {
            fb_error("out of memory queueing a blocking call to %s", fn->canonical);
            out->refused++;
            continue;
        }
        j->waiter = waiter;
        j->src = waiter ? wait->src(waiter) : NULL;
        j->done = waiter ? wait->done : NULL;
        j->principal = tls_principal;
        /* Counted before the job is visible to the pool, under the read
         * lock: an unload that has waited a grace period sees it. */
        atomic_fetch_add_explicit(&fn->plugin->inflight, 1, memory_order_relaxed);
        if (fb_pool_submit(d->pool, j) < 0) {
            atomic_fetch_sub_explicit(&fn->plugin->inflight, 1, memory_order_relaxed);
            fb_job_free(j);
            out->busy++;
            continue;
        }
        out->queued++;
    }
    fb_count(&cnt->dispatched, n - out->skipped);
    if (out->failed + out->refused + out->busy + out->unavail)
        fb_count(&cnt->errors, out->failed + out->refused + out->busy + out->unavail);
    /* The client event's tree is done on this thread (see the top); reads
     * only, unless it republished. */
    if (!tls_hop && __builtin_expect(tls_used != 0 || tls_budget != NULL, 0))
        tree_end();
}

int fb_dispatch_call_blocking(struct fb_job *j, bool (*returned)(void *), void *arg,
                              bool *kept)
{
    unsigned saved_hop = tls_hop;
    uint32_t saved_principal = tls_principal, saved_used = tls_used;
    struct fb_budget *saved_budget = tls_budget;
    tls_hop = j->hop;
    tls_principal = j->principal;
    tls_used = 0;
    tls_budget = j->budget;

    struct fb_func *fn = j->fn;
    unsigned stripe = fb_stripe_id();
    _Atomic uint64_t *mine = &fn->calls.s[stripe].v;
    uint64_t at = atomic_load_explicit(mine, memory_order_relaxed);
    uint64_t t0 = at % FB_LAT_SAMPLE == 0 ? fb_now_ns() : 0;
    int rc = fn->handle(fn->ctx, &j->ev);

    /* A budget this call made is its own to drop; its jobs hold theirs. */
    if (tls_budget != j->budget)
        fb_budget_put(tls_budget);
    tls_hop = saved_hop;
    tls_principal = saved_principal;
    tls_used = saved_used;
    tls_budget = saved_budget;
    *kept = !returned || returned(arg);
    if (!*kept)
        return rc; /* given up at shutdown (pool.c): touch nothing */
    call_done(j->d, fn, stripe, at, t0, rc);
    if (rc) {
        struct fb_counters *cnt = fb_counters_self(j->d);
        fb_count(&cnt->errors, 1);
    }
    return rc;
}

int fb_dispatch_local(struct fb_daemon *d, const char *id, const struct fidbus_tag *tags,
                      size_t ntags, const uint8_t *payload, size_t payload_len)
{
    if (!tls_rcu_thread)
        return -EPERM; /* not a daemon thread: it is not an RCU reader */
    if (!fidbus_event_valid(id, tags, ntags) || (payload_len && !payload))
        return -EINVAL;
    if (tls_hop >= FIDBUS_MAX_HOPS)
        return -ELOOP;
    bool root = !tls_tree; /* not from a handler: a tree of its own */
    uint32_t max = d->cfg->limits.max_republish;
    bool over = tls_budget ? atomic_fetch_add_explicit(&tls_budget->used, 1,
                                                       memory_order_relaxed) >= max
                           : tls_used++ >= max;
    if (over) {
        fb_count(&fb_counters_self(d)->limits[FB_LIM_REPUBLISH], 1);
        /* One line a second at most: a handler that republishes in a
         * loop must not flood the journal. */
        fb_warn_limited_burst(1,
                              "republish of '%s' refused: its client event already led "
                              "to max_republish = %u republishes",
                              id, d->cfg->limits.max_republish);
        if (root)
            tree_end();
        return -EDQUOT;
    }

    size_t idlen = strlen(id);
    struct fidbus_event ev = {
        .id = id,
        .tags = ntags ? tags : NULL,
        .ntags = ntags,
        .payload = payload_len ? payload : NULL,
        .payload_len = payload_len,
        .recv_ns = fb_now_ns(),
        .uid = -1, /* the plugin published it, not a peer (plugin.h) */
        .pid = -1,
        .conn = 0,
    };
    struct fb_counters *cnt = fb_counters_self(d);
    fb_count(&cnt->received, 1);

    unsigned saved = tls_hop;
    tls_hop = saved + 1;
    tls_tree = true;
    struct fb_outcome out;
    urcu_memb_read_lock();
    fb_dispatch(d, fb_routes_deref(&d->table), &ev, idlen, NULL, NULL, &out);
    FB_ROUTES_READ_DONE();
    urcu_memb_read_unlock();
    tls_hop = saved;
    if (root) {
        tls_tree = false;
        tree_end();
    }

    if (!out.routed)
        return -ENOENT;
    return (int)(out.ok + out.failed + out.queued + out.remote);
}
