/*
 * The daemon's shared state: configuration, registry, the published route
 * table, plugin instances, the main loop and the I/O workers.
 *
 * Threads:
 *   - main thread: runs main_loop (listeners' accept, signals, plugin
 *     timers) and builds the first set at start-up under change_lock;
 *   - I/O workers (cfg->workers): each runs its own uv loop and owns the
 *     connections handed to it; they dispatch inline handlers;
 *   - the blocking pool (cfg->blocking_threads): FIDBUS_FN_BLOCKING calls;
 *   - the control thread (control.c): serves the control socket and makes
 *     every runtime change (change.c) under change_lock, off the main loop
 *     and workers; SIGHUP's config reload runs there too.
 * Every thread that dispatches is registered with liburcu (memb flavour).
 */
#ifndef FB_DAEMON_H
#define FB_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "routing/registry.h"
#include "routing/routes.h"
#include "service/activation.h"

struct fb_plugin;
struct fb_timers;
struct fb_pool;
struct fb_worker;
struct fb_listener;
struct fb_control;
struct fb_state_file;
struct fb_uid_count;
struct fb_addr_count;

/* Retired tables whose totals stats still shows, per generation. */
#define FB_GEN_HISTORY 16

struct fb_gen_count {
    uint64_t generation;
    uint64_t routed;
};

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

/* Totals, one block per dispatching thread, summed on read (no shared
 * cache line is written on the hot path). Only the owning thread writes. */
struct fb_counters {
    _Atomic uint64_t received;   /* PUBLISH frames decoded */
    _Atomic uint64_t dispatched; /* handler invocations started */
    _Atomic uint64_t unrouted;   /* events that matched no route */
    _Atomic uint64_t errors;     /* handler calls that failed */
    _Atomic uint64_t bad_frames; /* protocol errors */
    _Atomic uint64_t limits[FB_LIM__COUNT];
    struct fb_counters *next;
} __attribute__((aligned(64)));

struct fb_daemon {
    struct fb_config *cfg;
    uv_loop_t *main_loop;
    pthread_t main_thread;

    pthread_mutex_t change_lock; /* writers: registry, table, plugins */
    struct fb_registry *reg;
    struct fb_route_table *table; /* RCU-published; readers only via
                                   * rcu_dereference under read lock */
    uint64_t generation;          /* of the published table */
    struct fb_plugin *plugins;    /* loaded instances, in load order */
    struct fb_state_file *state;  /* state.cbor (NULL: not kept) */
    char config_hash[65];         /* of the config the set derives from */
    /* For config.reload: the --default-config text (NULL: re-read
     * cfg->file). */
    char *embedded_config;
    struct fb_gen_count gens[FB_GEN_HISTORY]; /* retired, oldest first */
    size_t ngens;

    struct fb_timers *timers;
    struct fb_pool *pool;
    struct fb_worker **workers;
    unsigned nworkers;
    struct fb_listener **listeners;
    unsigned nlisteners;
    struct fb_control *control; /* the control socket and its thread */
    /* Sockets the service manager passed (activation.h); a field goes
     * to -1 when its listener or the control socket takes it over. */
    struct fb_activation act;

    pthread_mutex_t counters_lock;
    struct fb_counters *counters; /* list of per-thread blocks */

    /* Bus connections open (conn_admit.c): the main thread admits, the
     * worker that closes one gives it back. */
    _Atomic unsigned nconns;
    _Atomic unsigned ntcp;     /* of them over TCP */
    pthread_mutex_t uids_lock; /* uids, nunauth and addrs */
    struct fb_uid_count *uids; /* per Unix peer uid, open ones only */
    size_t nuids, capuids;
    unsigned nunauth;            /* TCP connections awaiting AUTH */
    struct fb_addr_count *addrs; /* ...per client address, if any */
    size_t naddrs, capaddrs;

    uv_signal_t sig_term, sig_int, sig_hup;
    bool signals_on;
    bool rcu_registered; /* main thread registered with liburcu */

    uint64_t start_ns;
    _Atomic bool stopping;
};

/* The calling thread's counter block (registered on first use). */
struct fb_counters *fb_counters_self(struct fb_daemon *d);
/* Sum of all blocks. */
void fb_counters_sum(struct fb_daemon *d, uint64_t out[5]);
/* Sum of all blocks' limit counters. */
void fb_counters_sum_limits(struct fb_daemon *d, uint64_t out[FB_LIM__COUNT]);

static inline void fb_count(_Atomic uint64_t *c, uint64_t n)
{
    /* single writer: a relaxed load+store, no locked instruction */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

uint64_t fb_now_ns(void); /* CLOCK_MONOTONIC */

/* Takes ownership of cfg. Sets up nothing outside the process yet. */
int fb_daemon_new(struct fb_config *cfg, struct fb_daemon **out);
/*
 * Brings the daemon up in this order: runtime and state dirs, blocking
 * pool, plugins, routes, listeners bound, workers, accepting, control
 * socket, signals, READY=1. On failure returns non-zero with err naming
 * what failed; what was started is torn down by fb_daemon_free.
 */
int fb_daemon_start(struct fb_daemon *d, char *err, size_t errlen);
/* Runs the main loop until SIGTERM/SIGINT has been handled; returns the
 * process exit status. */
int fb_daemon_run(struct fb_daemon *d);
/* Begins an orderly stop (what the signal handler does). Main thread. */
void fb_daemon_stop(struct fb_daemon *d);
/* Joins, calls every plugin's fini, removes sockets, frees. NULL-safe. */
struct fb_daemon *fb_daemon_free(struct fb_daemon *d);

#endif
