/*
 * daemon/bus/conn_private.h -- struct fb_conn, shared by conn.c (reading,
 * dispatching, answering) and conn_sweep.c (the worker's timer sweep).
 * Nothing else includes it: everyone else sees conn.h.
 */
#ifndef FB_CONN_PRIVATE_H
#define FB_CONN_PRIVATE_H

#include <stdint.h>

#include "base/counters.h"
#include "bus/conn.h"
#include "bus/conn_admit.h"
#include "bus/stream.h"
#include "bus/worker.h"
#include "routing/pool.h"

struct fb_daemon;

/* After an idle or input_soft close was sent, how long the client has to
 * go away. */
#define FB_LINGER_MS 2000u

/* Our bits in st.flags, next to the stream's FB_S_* ones. */
enum {
    C_PAUSED = FB_S_USER << 0,   /* output above FB_OUT_HIGH: input on hold */
    C_STOPPING = FB_S_USER << 1, /* daemon shutdown: no more input */
    C_IN_INPUT = FB_S_USER << 2, /* process_input is on the stack */
    C_AUTHED = FB_S_USER << 3,   /* passed AUTH: a second AUTH is refused */
    C_YIELD = FB_S_USER << 4,    /* on the worker's yield list */
};

/* A PING waiting for its barrier (conn.h). */
struct fb_ping {
    uint64_t seq;
    uint64_t barrier; /* waiters that must finish first */
};

struct fb_conn {
    struct fb_stream st; /* the socket; its close callback drops a ref */
    struct fb_worker *w;
    unsigned refs; /* the handle + unfinished waiters */
    uint64_t waiters_created;
    uint64_t waiters_finished;
    struct fb_waiter *wq_head, *wq_tail;
    /* PINGs waiting for their barrier, oldest at pings[ping_head]: a ring
     * of ping_cap (a power of two) entries, allocated on the first PING
     * that has to wait and doubled when full, so waiting costs no
     * allocation per PING. Each counts towards max_inflight, which keeps
     * ping_n at most max_inflight while input is read normally; only the
     * stop (which handles what was read regardless of limits) may go
     * past it, by what the reader's buffer holds. */
    struct fb_ping *pings;
    uint32_t ping_cap, ping_head, ping_n;
    struct fb_conn *prev, *next;
    /* Awaiting AUTH, or refused and lingering until the close; NULL on
     * Unix, unauthenticated TCP and once AUTH succeeded. */
    struct fb_auth *auth;
    /* [limits], copied at accept: the read path touches no config. */
    uint32_t out_soft; /* 0 = never pause on output */
    uint32_t out_hard;
    uint32_t max_inflight;
    uint32_t max_frames;  /* per read callback */
    uint64_t idle_ns;     /* 0 = no idle timeout */
    uint64_t last_ns;     /* last input handled */
    uint64_t closing_ns;  /* idle/input_soft close sent at; 0 = not yet */
    uint32_t in_soft;     /* input_soft bytes */
    uint64_t in_soft_ns;  /* input_soft_ms; 0 = not watched */
    uint64_t in_frame_at; /* stream offset of the frame being watched */
    uint64_t in_since_ns; /* it went over in_soft at; 0 = none is */
    struct fb_conn *yield_next;
    struct fb_admit admit;
    /* Its queue in the blocking pool (pool.h); the pool's lock guards it. */
    struct fb_pool_src psrc;
    /* Serving remote functions (bus/member.c); NULL until a REGISTER. */
    struct fb_rconn *rc;
};

static inline void fb_conn_count_limit(struct fb_conn *c, enum fb_limit_reason r)
{
    fb_count(&c->w->counters->limits[r], 1);
}

#endif
