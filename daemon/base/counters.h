/*
 * The daemon's totals (stats' received, dispatched, ... and the "limits"
 * map): one block of counters per dispatching thread, summed on read, so
 * no shared cache line is written on the hot path. The blocks hang off
 * struct fb_daemon (base/daemon_t.h); only the owning thread writes one.
 */
#ifndef FB_COUNTERS_H
#define FB_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

struct fb_daemon;

/* Why a limit was hit or a connection paused ([limits]); the names are
 * the keys of stats' "limits" map (fb_limit_names), a user contract. */
enum fb_limit_reason {
    FB_LIM_CONNECTIONS,     /* over max_connections: refused */
    FB_LIM_CONNECTIONS_UID, /* over max_connections_per_uid: refused */
    FB_LIM_OUTPUT_HARD,     /* answers pending over output_hard: closed */
    FB_LIM_PAUSE_OUTPUT,    /* answers pending over output_soft: paused */
    FB_LIM_PAUSE_INFLIGHT,  /* max_inflight blocking events: paused */
    FB_LIM_AUTH_TIMEOUT,    /* no AUTH within auth_timeout_ms: closed */
    FB_LIM_IDLE_TIMEOUT,    /* idle_timeout_*_ms: closed */
    FB_LIM_DEPTH,           /* payload nested deeper than max_depth */
    FB_LIM_FRAME_TOO_LARGE, /* frame over max_frame: closed */
    FB_LIM_BUSY,            /* blocking pool full: an event answered BUSY */
    FB_LIM_YIELD,           /* max_frames_per_read reached: yielded */
    FB_LIM_INPUT_SOFT,      /* a frame sat unfinished over input_soft: closed */
    FB_LIM_FDS,             /* accept at EMFILE/ENFILE: refused */
    FB_LIM_CONNECTIONS_TCP, /* over max_connections_tcp: refused */
    FB_LIM_UNAUTH,          /* over unauth_max: refused */
    FB_LIM_UNAUTH_ADDR,     /* over unauth_per_addr: refused */
    FB_LIM_CONTROL_UNAUTH,  /* too many unauthorized control peers: refused */
    FB_LIM_REPUBLISH,       /* over max_republish: a host->publish refused */
    FB_LIM__COUNT
};
extern const char *const fb_limit_names[FB_LIM__COUNT];

/* One thread's block. */
struct fb_counters {
    _Atomic uint64_t received;   /* PUBLISH frames decoded */
    _Atomic uint64_t dispatched; /* handler invocations started */
    _Atomic uint64_t unrouted;   /* events that matched no route */
    _Atomic uint64_t errors;     /* handler calls that failed */
    _Atomic uint64_t bad_frames; /* protocol errors */
    _Atomic uint64_t limits[FB_LIM__COUNT];
    struct fb_counters *next;
} __attribute__((aligned(64)));

/* The calling thread's counter block (registered on first use). */
struct fb_counters *fb_counters_self(struct fb_daemon *d);
/* The totals of every block, as stats shows them. */
struct fb_totals {
    uint64_t received;
    uint64_t dispatched;
    uint64_t unrouted;
    uint64_t errors;
    uint64_t bad_frames;
};
/* Sum of all blocks. */
struct fb_totals fb_counters_sum(struct fb_daemon *d);
/* Sum of all blocks' limit counters. */
void fb_counters_sum_limits(struct fb_daemon *d, uint64_t out[FB_LIM__COUNT]);
/* Frees every block of d (no thread counts any more). */
void fb_counters_free(struct fb_daemon *d);

static inline void fb_count(_Atomic uint64_t *c, uint64_t n)
{
    /* single writer: a relaxed load+store, no locked instruction */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

#endif
