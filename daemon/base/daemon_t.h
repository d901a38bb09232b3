/*
 * struct fb_daemon, the state every layer of the daemon shares, as a type
 * only: the parts it points to are declared, not included, so including
 * this file pulls in no layer and a folder below bus/ or control/ can read
 * the fields of its own layer and the ones below without seeing the ones
 * above (tools/check_layers.sh keeps it so). The functions that build,
 * run and free it are in daemon.h / daemon.c, at the top.
 *
 * What it holds: configuration, registry, the published route table,
 * plugin instances, the main loop and the I/O workers.
 *
 * Threads:
 *   - main thread: runs main_loop (listeners' accept, signals, plugin
 *     timers) and builds the first set at start-up under change_lock;
 *   - I/O workers (cfg->workers): each runs its own uv loop and owns the
 *     connections handed to it; they dispatch inline handlers;
 *   - the blocking pool (cfg->blocking_threads): FIDBUS_FN_BLOCKING calls;
 *   - the control thread (control/control.c): serves the control socket and makes
 *     every runtime change (control/change.c) under change_lock, off the main loop
 *     and workers; SIGHUP's config reload runs there too.
 * Every thread that dispatches is registered with liburcu (memb flavour).
 */
#ifndef FB_DAEMON_T_H
#define FB_DAEMON_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct fb_activation;
struct fb_addr_count;
struct fb_config;
struct fb_control;
struct fb_counters;
struct fb_listener;
struct fb_metrics;
struct fb_plugin;
struct fb_pool;
struct fb_registry;
struct fb_remote;
struct fb_runset;
struct fb_route_table;
struct fb_state_file;
struct fb_timers;
struct fb_uid_count;
struct fb_worker;

/* Retired tables whose totals stats still shows, per generation. */
#define FB_GEN_HISTORY 16

struct fb_gen_count {
    uint64_t generation;
    uint64_t routed;
};

struct fb_daemon {
    struct fb_config *cfg;
    uv_loop_t *main_loop;
    pthread_t main_thread;

    pthread_mutex_t change_lock; /* writers: registry, table, plugins */
    struct fb_registry *reg;
    struct fb_remote *remote;     /* remote functions (routing/remote.h) */
    struct fb_route_table *table; /* RCU-published; readers only via
                                   * rcu_dereference under read lock */
    uint64_t generation;          /* of the published table */
    struct fb_plugin *plugins;    /* loaded instances, in load order */
    struct fb_state_file *state;  /* state.cbor (NULL: not kept) */
    char config_hash[65];         /* of the config the set derives from */
    /* The plugins and routes of that config: the BASE of config.reload's
     * three-way rule (config/merge.h), saved in state.cbor as "base". */
    struct fb_runset *base;
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
    struct fb_metrics *metrics; /* [metrics] listen's HTTP thread, or NULL */
    /* Taps (routing/tap.h): the slots, and how many are open -- the one
     * relaxed load the dispatch path pays per event with none open. */
    struct fb_taps *taps;
    _Atomic unsigned ntaps;
    /* Sockets the service manager passed (service/activation.h); a field
     * goes to -1 when its listener or the control socket takes it over.
     * Allocated by fb_daemon_new: a pointer, so this type needs no
     * service/ header. */
    struct fb_activation *act;

    pthread_mutex_t counters_lock;
    struct fb_counters *counters; /* list of per-thread blocks */

    /* Bus connections open (bus/conn_admit.c): the main thread admits, the
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

#endif
