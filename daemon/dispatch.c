/*
 * Dispatch: route lookup, target selection, inline calls and blocking
 * jobs. This is the hot path: for inline targets it allocates nothing and
 * copies nothing; the event's strings and payload stay where the decoder
 * left them (the receive buffer and the decode arena).
 *
 * The hop count of the event being handled lives in a thread-local: a
 * handler that calls host->publish does so on the thread that called it,
 * so the nested event gets hop + 1 and is refused past FIDBUS_MAX_HOPS.
 */
#include "dispatch.h"

#include <errno.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "conn.h"
#include "log.h"
#include "plugin_loader.h"
#include "pool.h"

static _Thread_local unsigned tls_hop;
static _Thread_local bool tls_rcu_thread;

void fb_dispatch_mark_rcu_thread(void)
{
    tls_rcu_thread = true;
}

static int call_inline(struct fb_daemon *d, struct fb_func *fn,
                       const struct fidbus_event *ev)
{
    /* Sampled timing (latency.h): this thread's stripe of the call count. */
    _Atomic uint64_t *mine = &fn->calls.s[fb_stripe_id()].v;
    bool timed = atomic_load_explicit(mine, memory_order_relaxed) % FB_LAT_SAMPLE == 0;
    uint64_t t0 = timed ? fb_now_ns() : 0;
    int rc = fn->handle(fn->ctx, ev);
    if (timed)
        fb_lat_record(&fn->latency, fb_now_ns() - t0);
    atomic_fetch_add_explicit(mine, 1, memory_order_relaxed);
    if (rc)
        fb_striped_add(&fn->errors, 1);
    fb_func_note_result(fn, rc, d->cfg->quarantine_after);
    return rc;
}

void fb_dispatch(struct fb_daemon *d, const struct fb_route_table *t,
                 struct fidbus_event *ev, size_t idlen, fb_waiter_new_fn wait_new,
                 void *wait_arg, struct fb_outcome *out)
{
    struct fb_counters *cnt = fb_counters_self(d);
    memset(out, 0, sizeof *out);

    const struct fb_route *r =
        t ? fb_routes_match(t, ev->id, idlen, ev->tags, ev->ntags) : NULL;
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
        if (!(fn->flags & FIDBUS_FN_BLOCKING)) {
            if (call_inline(d, fn, ev) == 0)
                out->ok++;
            else
                out->failed++;
            continue;
        }
        struct fb_job *j = fb_job_new(d, fn, ev, tls_hop);
        if (j && wait_new && !waiter) {
            waiter = wait_new(wait_arg);
            if (!waiter) {
                free(j);
                j = NULL;
            }
        }
        if (!j) {
            fb_error("out of memory queueing a blocking call to %s", fn->canonical);
            out->refused++;
            continue;
        }
        j->waiter = waiter;
        /* Counted before the job is visible to the pool, under the read
         * lock: an unload that has waited a grace period sees it. */
        atomic_fetch_add_explicit(&fn->plugin->inflight, 1, memory_order_relaxed);
        if (fb_pool_submit(d->pool, j) < 0) {
            atomic_fetch_sub_explicit(&fn->plugin->inflight, 1, memory_order_relaxed);
            free(j);
            out->busy++;
            continue;
        }
        /* Completions are handled on this thread, later: safe to count now. */
        if (waiter)
            waiter->pending++;
        out->queued++;
    }
    fb_count(&cnt->dispatched, n - out->skipped);
    if (out->failed + out->refused + out->busy)
        fb_count(&cnt->errors, out->failed + out->refused + out->busy);
    out->failed += out->skipped;
}

int fb_dispatch_call_blocking(struct fb_job *j)
{
    unsigned saved = tls_hop;
    tls_hop = j->hop;
    int rc = call_inline(j->d, j->fn, &j->ev);
    tls_hop = saved;
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

    size_t idlen = strlen(id);
    struct fidbus_event ev = {
        .id = id,
        .tags = ntags ? tags : NULL,
        .ntags = ntags,
        .payload = payload_len ? payload : NULL,
        .payload_len = payload_len,
        .recv_ns = fb_now_ns(),
    };
    struct fb_counters *cnt = fb_counters_self(d);
    fb_count(&cnt->received, 1);

    unsigned saved = tls_hop;
    tls_hop = saved + 1;
    struct fb_outcome out;
    urcu_memb_read_lock();
    fb_dispatch(d, fb_routes_deref(&d->table), &ev, idlen, NULL, NULL, &out);
    FB_ROUTES_READ_DONE();
    urcu_memb_read_unlock();
    tls_hop = saved;

    if (!out.routed)
        return -ENOENT;
    return (int)(out.ok + out.failed - out.skipped + out.queued);
}
