/*
 * Per-thread counter blocks (counters.h): a thread finds its own through
 * a thread-local pointer and registers a new one under the lock once;
 * readers sum every block under the same lock.
 */
#include "base/counters.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/daemon_t.h"

static _Thread_local struct fb_counters *tls_counters;
static _Thread_local struct fb_daemon *tls_counters_owner;

struct fb_counters *fb_counters_self(struct fb_daemon *d)
{
    if (tls_counters && tls_counters_owner == d)
        return tls_counters;
    struct fb_counters *c = aligned_alloc(64, sizeof *c);
    if (!c) {
        /* Counting is not worth dying for: share a static sink. */
        static struct fb_counters sink;
        return &sink;
    }
    memset(c, 0, sizeof *c);
    pthread_mutex_lock(&d->counters_lock);
    c->next = d->counters;
    d->counters = c;
    pthread_mutex_unlock(&d->counters_lock);
    tls_counters = c;
    tls_counters_owner = d;
    return c;
}

struct fb_totals fb_counters_sum(struct fb_daemon *d)
{
    struct fb_totals t = {0};
    pthread_mutex_lock(&d->counters_lock);
    for (struct fb_counters *c = d->counters; c; c = c->next) {
        t.received += atomic_load_explicit(&c->received, memory_order_relaxed);
        t.dispatched += atomic_load_explicit(&c->dispatched, memory_order_relaxed);
        t.unrouted += atomic_load_explicit(&c->unrouted, memory_order_relaxed);
        t.errors += atomic_load_explicit(&c->errors, memory_order_relaxed);
        t.bad_frames += atomic_load_explicit(&c->bad_frames, memory_order_relaxed);
    }
    pthread_mutex_unlock(&d->counters_lock);
    return t;
}

const char *const fb_limit_names[FB_LIM__COUNT] = {
    [FB_LIM_CONNECTIONS] = "connections",
    [FB_LIM_CONNECTIONS_UID] = "connections_uid",
    [FB_LIM_OUTPUT_HARD] = "output_hard",
    [FB_LIM_PAUSE_OUTPUT] = "pause_output",
    [FB_LIM_PAUSE_INFLIGHT] = "pause_inflight",
    [FB_LIM_AUTH_TIMEOUT] = "auth_timeout",
    [FB_LIM_IDLE_TIMEOUT] = "idle_timeout",
    [FB_LIM_DEPTH] = "depth",
    [FB_LIM_FRAME_TOO_LARGE] = "frame_too_large",
    [FB_LIM_BUSY] = "busy",
    [FB_LIM_YIELD] = "yield",
    [FB_LIM_INPUT_SOFT] = "input_soft",
    [FB_LIM_FDS] = "fds",
    [FB_LIM_CONNECTIONS_TCP] = "connections_tcp",
    [FB_LIM_UNAUTH] = "unauth",
    [FB_LIM_UNAUTH_ADDR] = "unauth_addr",
    [FB_LIM_CONTROL_UNAUTH] = "control_unauth",
    [FB_LIM_REPUBLISH] = "republish",
};

void fb_counters_sum_limits(struct fb_daemon *d, uint64_t out[FB_LIM__COUNT])
{
    memset(out, 0, FB_LIM__COUNT * sizeof out[0]);
    pthread_mutex_lock(&d->counters_lock);
    for (struct fb_counters *c = d->counters; c; c = c->next)
        for (int i = 0; i < FB_LIM__COUNT; i++)
            out[i] += atomic_load_explicit(&c->limits[i], memory_order_relaxed);
    pthread_mutex_unlock(&d->counters_lock);
}

void fb_counters_free(struct fb_daemon *d)
{
    while (d->counters) {
        struct fb_counters *c = d->counters;
        d->counters = c->next;
        free(c);
    }
    if (tls_counters_owner == d)
        tls_counters = NULL, tls_counters_owner = NULL;
}
