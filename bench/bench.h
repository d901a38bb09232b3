/*
 * fidbus-bench internals: the pieces shared by the benchmark modes.
 *
 * fidbus-bench.c parses the command line and prints results; spawn.c runs
 * a private fidbusd (temp dir, generated config, NOTIFY_SOCKET readiness,
 * SIGTERM at the end, the count plugin's report for the exactly-once
 * check); wire.c has the socket and frame helpers; throughput.c and
 * latency.c are the two load generators; echo.c is the in-process libuv
 * echo server used as the latency baseline; change.c times control
 * requests (route changes, plugin reloads) under throughput.c's load.
 *
 * The bench talks to the daemon with raw sockets rather than through
 * <fidbus/client.h>: the throughput mode writes a pre-encoded frame
 * replicated into a large buffer, and the latency mode needs a separate
 * sender and receiver thread on one connection, neither of which the
 * blocking client API is meant for. Control requests (change.c) do go
 * through fidbus_request: one blocking REQUEST/REPLY at a time is exactly
 * what is measured there.
 */
#ifndef FB_BENCH_H
#define FB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <fidbus/proto.h>

struct fb_bench_opts {
    const char *fidbusd;    /* daemon binary */
    const char *plugin_dir; /* holds count.so and log.so */
    const char *bus;        /* attach to this bus instead of spawning */
    bool tcp;               /* spawned daemon: connect over 127.0.0.1 TCP */
    unsigned workers;       /* 0 = conns, capped at the CPU count */
    uint64_t events;
    unsigned conns;
    size_t payload; /* size of the whole CBOR payload item */
    unsigned repeat;
    double rate; /* latency: offered events per second */
    double seconds;
    unsigned warmup_ms;   /* latency: sent but not measured, each round */
    unsigned rounds;      /* latency: alternating rounds, 0 = default */
    bool spin;            /* latency: busy-wait for send deadlines */
    bool closed;          /* latency: closed loop, one event in flight */
    bool echo_baseline;   /* latency against the echo server only */
    bool decode_baseline; /* throughput against the decode baseline only */
    bool compare;         /* latency: echo and fidbusd back to back */
    int timeout_s;        /* bound on every wait of one run */
    bool json;
    bool keep;        /* keep the temp dir for inspection */
    unsigned members; /* remote: serving members (default 1) */
    bool idle;        /* remote: idle RSS with the members registered */
    bool remote;      /* latency: the fidbusd target routes to remote members */
};

/* Human-readable output goes here: stdout, or stderr with --json. */
extern FILE *fb_bench_out;

/* ------------------------------------------------------------- wire.c */

uint64_t fb_bench_now_ns(void);
/* Absolute CLOCK_MONOTONIC deadline `ms` from now, and ms left until it
 * (clamped to 0 .. INT_MAX for poll). */
uint64_t fb_bench_deadline(int ms);
int fb_bench_ms_left(uint64_t deadline);

/*
 * Connects to "unix:PATH", a plain path, or "tcp:HOST:PORT" (loopback
 * hosts only: the bench never loads a real network). Returns a blocking
 * socket fd, or a negative errno with a reason in err.
 */
int fb_bench_connect(const char *addr, char *err, size_t errlen);

/* Writes the CBOR byte string whose whole encoding is at most `bytes`
 * long (exactly, when such a string exists) into out; returns its length
 * or 0 if cap is too small or bytes is 0. */
size_t fb_bench_payload_item(uint8_t *out, size_t cap, size_t bytes);

/* Appends one PUBLISH frame; has_seq false leaves the seq key out. */
int fb_bench_encode_publish(struct fidbus_buf *b, const char *event, bool has_seq,
                            uint64_t seq, uint32_t flags, const uint8_t *payload,
                            size_t payload_len);
int fb_bench_encode_ping(struct fidbus_buf *b, uint64_t seq);

/* Writes all of p on a blocking fd. 0 or a negative errno. */
int fb_bench_write_all(int fd, const uint8_t *p, size_t n);

/*
 * Frames read from one fd and decoded. The reader owns a frame reader and
 * a decoded-message struct (large: keep one per thread).
 */
struct fb_bench_reader {
    struct fidbus_frame_reader fr;
    struct fidbus_msg *msg;
    int fd;
};

int fb_bench_reader_init(struct fb_bench_reader *r, int fd);
void fb_bench_reader_destroy(struct fb_bench_reader *r);
/* One read() into the reader: >0 bytes, 0 at EOF, -EAGAIN, or -errno. */
ssize_t fb_bench_reader_fill(struct fb_bench_reader *r);
/* Next whole frame decoded into r->msg: 1, 0 if none buffered, or a
 * protocol code (the stream is broken for framing errors). */
int fb_bench_reader_next(struct fb_bench_reader *r);

/*
 * Reads the server's HELLO (waiting up to timeout_ms). Fails when the
 * server asks for authentication, which the bench does not do.
 */
int fb_bench_read_hello(struct fb_bench_reader *r, int timeout_ms, char *err,
                        size_t errlen);

/* ------------------------------------------------------------ spawn.c */

struct fb_bench_daemon_conf {
    const char *fidbusd;
    const char *plugin_dir;
    unsigned workers;
    bool tcp;          /* also listen on 127.0.0.1:PORT with tcp_auth = none */
    bool with_log;     /* load log.so (file = /dev/null) too, routed with count */
    const char *extra; /* appended to the config (remote.c's sections) */
    bool keep;
    int timeout_ms; /* readiness wait */
};

/* The conf the command line asks for: no log.so, and --timeout for the
 * readiness wait. */
struct fb_bench_daemon_conf fb_bench_daemon_conf_for(const struct fb_bench_opts *o);

struct fb_bench_daemon {
    pid_t pid;
    int pidfd;
    bool running;
    int exit_status; /* raw waitpid status once reaped */
    bool keep;
    char dir[256];     /* the temp dir, removed by _free */
    char addr[300];    /* where to connect: unix:... or tcp:... */
    char report[300];  /* the count plugin's report_file */
    char logfile[300]; /* fidbusd's stdout+stderr */
};

/*
 * Makes a temp dir, writes the config, starts fidbusd with NOTIFY_SOCKET
 * and waits for READY=1. On failure prints why (with fidbusd's output)
 * and returns a negative errno; *out is then NULL.
 */
int fb_bench_daemon_start(struct fb_bench_daemon **out,
                          const struct fb_bench_daemon_conf *c);
/* SIGTERM and reap. 0 if it exited with status 0, else -1 (printed). */
int fb_bench_daemon_stop(struct fb_bench_daemon *d, int timeout_ms);
/* After _stop: the count for `event` and the "_total" from report_file. */
int fb_bench_daemon_count(const struct fb_bench_daemon *d, const char *event,
                          long long *count, long long *total);
/* VmRSS and VmHWM of the running daemon, in KiB. */
int fb_bench_daemon_rss(const struct fb_bench_daemon *d, long *rss_kib, long *hwm_kib);
/* CPU time (utime + stime, seconds) of the running daemon, in total and
 * per thread, so a run can show how the load spread over the workers. */
#define FB_BENCH_MAX_THREADS 64
struct fb_bench_cpu {
    double total;
    size_t n;
    pid_t tid[FB_BENCH_MAX_THREADS];
    double cpu[FB_BENCH_MAX_THREADS];
};
int fb_bench_daemon_cpu(const struct fb_bench_daemon *d, struct fb_bench_cpu *s);
/* Prints the tail of fidbusd's output to stderr. */
void fb_bench_daemon_dump_log(const struct fb_bench_daemon *d);
/* Kills a daemon still running, removes the temp dir. NULL-safe. */
struct fb_bench_daemon *fb_bench_daemon_free(struct fb_bench_daemon *d);

/* ------------------------------------------------------- throughput.c */

struct fb_bench_tp_result {
    unsigned conns, workers;
    size_t payload, frame_len;
    uint64_t sent;
    uint64_t errors;      /* ERROR frames received */
    uint64_t first_error; /* code of the first one */
    double seconds;       /* first byte written .. last PING ACK */
    double events_per_s;
    double mb_per_s;      /* frame bytes on the wire, 10^6 B/s */
    double daemon_cpu;    /* daemon CPU seconds / wall seconds, or -1 */
    double thread_cpu[8]; /* the same for its busiest threads, descending */
    unsigned nthreads;    /* threads above 5% */
    int verify;           /* 0 OK, 1 FAIL, -1 not checked (--bus) */
    long long counted;
    bool ok; /* ran to the end, no errors, verify not FAIL */
};

int fb_bench_throughput(const struct fb_bench_opts *o, struct fb_bench_tp_result *res);

/*
 * The same publishers, running until stopped (change.c's load): `conns`
 * connections, one thread each, writing PUBLISH frames of `event` without
 * ack as fast as the daemon takes them; every wait is bounded by
 * timeout_ms from the start. *frame_len gets the frame size.
 */
struct fb_bench_pubs;
int fb_bench_pubs_start(struct fb_bench_pubs **out, const char *addr, unsigned conns,
                        size_t payload, const char *event, int timeout_ms,
                        size_t *frame_len);
/* Events fully written so far on all connections (for 100 ms samples). */
uint64_t fb_bench_pubs_written(struct fb_bench_pubs *p);
/* Stops them: each connection finishes its frame, sends a PING and waits
 * for its ACK (the barrier), then everything is closed and freed. *sent
 * gets the events written, *errors the ERROR frames received. 0 or a
 * negative errno (a connection failed; printed). */
int fb_bench_pubs_stop(struct fb_bench_pubs *p, uint64_t *sent, uint64_t *errors);

/* ----------------------------------------------------------- change.c */

enum {
    FB_BENCH_CH_BASELINE, /* publishing, no changes */
    FB_BENCH_CH_ROUTE,    /* route.add / route.del of a side route, alternating */
    FB_BENCH_CH_APPLY,    /* route.apply moving a split route's weights */
    FB_BENCH_CH_RELOAD,   /* plugin.reload of the routed count instance */
    FB_BENCH_CH_PHASES
};

struct fb_bench_ch_phase {
    const char *name;
    double seconds;
    uint64_t changes; /* REQUESTs answered with code 0 */
    uint64_t failed;  /* answered with an error, or not answered */
    double per_s;
    double p50_ms, p99_ms, max_ms; /* REQUEST written .. REPLY read */
    double eps;                    /* publishers' events/s over the phase */
    double eps_min;                /* its slowest 100 ms bucket */
    unsigned buckets;
    double daemon_cpu, bench_cpu; /* CPU seconds / wall seconds (1 = a core) */
};

struct fb_bench_ch_result {
    unsigned conns, workers;
    size_t frame_len;
    struct fb_bench_ch_phase ph[FB_BENCH_CH_PHASES];
    uint64_t sent, errors;
    /* The daemon's `stats` after the publishers' PING barriers. */
    bool have_stats;
    uint64_t received, dispatched, unrouted, daemon_errors;
    /* The floor under every REPLY: the same save as the daemon's (write
     * state.cbor's size to a temp file, fdatasync, rename, fsync the dir),
     * timed by the bench in the same filesystem: [0] before the load
     * starts, [1] under it (between the baseline and the first changes). */
    unsigned save_n[2];
    size_t save_bytes;
    double save_p50_ms[2], save_p99_ms[2];
    unsigned reports; /* count.so reports summed: one per instance */
    long long counted;
    int verify; /* 0 OK, 1 FAIL */
    bool ok;
};

/*
 * Route changes and plugin reloads under full publishing load: spawns a
 * daemon, starts o->conns publishers, then runs the phases above for
 * o->seconds each while sampling events/s every 100 ms.
 */
int fb_bench_change(const struct fb_bench_opts *o, struct fb_bench_ch_result *res);

/* ---------------------------------------------------------- latency.c */

struct fb_bench_lat_result {
    const char *target; /* "fidbusd" or "echo" */
    double offered;     /* events/s; 0 in a closed loop */
    double achieved;    /* events actually sent per second */
    uint64_t scheduled;
    unsigned rounds;
    uint64_t warmup_n; /* events not measured at the start of each round */
    uint64_t measured; /* answered after the warm-ups */
    uint64_t answered;
    uint64_t errors;
    uint64_t missing;
    double p50, p90, p99, p999, max;  /* from the scheduled time, us */
    double w50, w99, w999;            /* from the actual write, us */
    double lag_p50, lag_p99, lag_max; /* sender lateness, microseconds */
    int verify;
    long long counted;
    bool ok;
};

/*
 * Latency runs: against the echo baseline (echo non-NULL), fidbusd (bus
 * non-NULL), or both, in o->rounds alternating rounds (default 10 when both,
 * else 1). Spawns what it needs unless o->bus is set.
 */
int fb_bench_latency(const struct fb_bench_opts *o, struct fb_bench_lat_result *echo,
                     struct fb_bench_lat_result *bus);

/* -------------------------------------------------------- isolation.c */

struct fb_bench_iso_result {
    unsigned n;            /* acked round trips timed, each phase */
    double before, during; /* round trips per second */
    double ratio;          /* during / before */
    uint64_t stuck_frames; /* acked PUBLISHes the stuck client got written */
    long rss_kib, hwm_kib; /* daemon, with the stuck client held back */
    bool ok;
};

/* A well-behaved client's acked round trips on one worker, alone and next
 * to a client that never reads its answers (o->events round trips each). */
int fb_bench_isolation(const struct fb_bench_opts *o, struct fb_bench_iso_result *res);

/* ----------------------------------------------------------- remote.c */

#define FB_BENCH_REMOTE_MAX_SHOWN 16
struct fb_bench_remote_result {
    unsigned members, workers;
    size_t frame_len;
    uint64_t sent, answered, errors;
    double seconds, calls_per_s, daemon_cpu, bench_cpu; /* 1 = a core */
    uint64_t per_member[FB_BENCH_REMOTE_MAX_SHOWN];
    long rss0_kib, rss_kib, hwm_kib; /* --idle */
    int verify;
    bool ok;
};

/* A remote function served by o->members member threads: calls/s end to
 * end with the exactly-once check, or (o->idle) the daemon's idle RSS. */
int fb_bench_remote(const struct fb_bench_opts *o, struct fb_bench_remote_result *res);

/* The config sections for a remote function bench.sink@1.0.0 that the
 * bench's uid may serve, with `event` routed to it. */
const char *fb_bench_remote_conf(char *buf, size_t len, const char *event);
/* n members of it, each a thread on its own connection to addr, answering
 * every call ok at once; _calls sums their calls (per[i]: member i's). */
struct fb_bench_members;
int fb_bench_members_start(struct fb_bench_members **out, const char *addr, unsigned n,
                           int timeout_ms);
uint64_t fb_bench_members_calls(struct fb_bench_members *ms, uint64_t *per,
                                unsigned nper);
/* Stops, joins and closes them; NULL-safe. 0 or a member's error. */
int fb_bench_members_stop(struct fb_bench_members *ms);

/* ------------------------------------------------------------- echo.c */

struct fb_bench_echo;

/* Starts the echo server thread listening on the Unix socket `path`, or
 * with path NULL on 127.0.0.1 at a free port, stored in *port. With
 * decode, the decode baseline instead (echo.c): frames decoded, counted,
 * PINGs answered, nothing echoed. */
int fb_bench_echo_start(struct fb_bench_echo **out, const char *path, int *port,
                        bool decode);
/* Decode baseline: the PUBLISHes decoded so far; *bad, when given, the
 * frames that did not decode or check. */
uint64_t fb_bench_echo_decoded(struct fb_bench_echo *e, uint64_t *bad);
/* Stops it and joins its thread. NULL-safe; returns NULL. */
struct fb_bench_echo *fb_bench_echo_stop(struct fb_bench_echo *e);

#endif
