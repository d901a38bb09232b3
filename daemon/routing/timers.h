/*
 * Plugin timers. They run on the daemon's main loop; timer_start and
 * timer_stop may be called from any thread (a handler on an I/O thread, a
 * blocking call on the pool): requests from other threads are queued and
 * handed to the main loop with a uv_async.
 */
#ifndef FB_TIMERS_H
#define FB_TIMERS_H

#include <stdint.h>

#include <uv.h>

struct fb_timers;

/* Must be called on the thread that runs loop. */
int fb_timers_new(uv_loop_t *loop, struct fb_timers **out);
/* Closes every timer and the async handle; run the loop afterwards so
 * their close callbacks fire, then the object is freed. NULL-safe. */
void fb_timers_close(struct fb_timers *t);

/* owner is an opaque key (the plugin instance). Returns 0 or -errno. */
int fb_timer_start(struct fb_timers *t, void *owner, uint64_t after_ms,
                   uint64_t repeat_ms, void (*cb)(void *arg), void *arg,
                   uint64_t *timer_id);
/* 0 or -ENOENT (no such timer of this owner). */
int fb_timer_stop(struct fb_timers *t, void *owner, uint64_t timer_id);
/* Around a plugin's init off the loop: while owner is held, the timers it
 * starts are queued but not started, so no callback of owner runs before
 * its init has returned. One owner at a time (changes are serialised);
 * release starts what was queued. fb_timers_cancel_owner drops the hold. */
void fb_timers_hold(struct fb_timers *t, void *owner);
void fb_timers_release(struct fb_timers *t, void *owner);
/* Cancels every timer of owner, from any thread: on return no callback of
 * owner is running or will run again (off the loop it waits for a running
 * one to finish; the loop closes the handles later). */
void fb_timers_cancel_owner(struct fb_timers *t, void *owner);

#endif
