/*
 * Striped counters: one counter spread over cache lines, so threads that
 * count the same thing (two workers dispatching to one route or function)
 * do not bounce one cache line between cores on every event. Each thread
 * adds to its own stripe (assigned round robin on first use); a reader
 * sums the stripes. Measured: a single shared counter made two workers
 * slower than one (fidbus-bench throughput, 2 connections).
 */
#ifndef FB_STRIPE_H
#define FB_STRIPE_H

#include <stdatomic.h>
#include <stdint.h>

#define FB_STRIPES 8

struct fb_stripe {
    _Atomic uint64_t v;
} __attribute__((aligned(64)));

struct fb_striped {
    struct fb_stripe s[FB_STRIPES];
};

/* This thread's stripe, 0 .. FB_STRIPES-1. */
unsigned fb_stripe_assign(void);
extern _Thread_local unsigned fb_tls_stripe; /* stripe + 1; 0 = unassigned */

static inline unsigned fb_stripe_id(void)
{
    unsigned s = fb_tls_stripe;
    return s ? s - 1 : fb_stripe_assign();
}

static inline void fb_striped_add(struct fb_striped *c, uint64_t n)
{
    /* Stripes are shared only when threads outnumber them: keep it atomic. */
    atomic_fetch_add_explicit(&c->s[fb_stripe_id()].v, n, memory_order_relaxed);
}

static inline uint64_t fb_striped_sum(const struct fb_striped *c)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < FB_STRIPES; i++)
        t += atomic_load_explicit(&c->s[i].v, memory_order_relaxed);
    return t;
}

#endif
