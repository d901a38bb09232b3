/*
 * End-to-end test harness: runs a real fidbusd in a private temp dir and
 * talks to it over the wire.
 *
 * A test writes a config (the harness supplies [daemon], [listen] and
 * [control]; the test adds [plugin ...] and [route ...] sections), starts
 * the daemon and waits for its sd_notify "READY=1" datagram on a socket the
 * harness binds -- never a sleep. It then talks to the daemon with the
 * client library (fidbus_client) or with raw sockets for hand-made frames,
 * uses PING as the barrier before reading what plugins wrote, and stops the
 * daemon with SIGTERM, checking the exit status and that the sockets are
 * gone.
 *
 * Paths come from $FIDBUS_BUILD_DIR (set by ctest): daemon/fidbusd,
 * daemon/fidbusctl, plugins/{log,count}.so, tests/plugins/NAME.so. In the
 * config text a test hands over, "@B@" stands for the build dir and "@D@"
 * for the temp dir.
 *
 * harness.c runs processes (the daemon, the command-line tools);
 * harness_wire.c talks to the daemon and reads what plugins wrote.
 *
 * Children run from here (the daemon, the tools) are also checked for
 * sanitizer reports in their stderr when they exit.
 *
 * Every failure is a Check assertion. A failed test's process ends at once
 * (Check's _exit), so cleanup does not depend on it: the daemon has
 * PR_SET_PDEATHSIG and dies with the test process (also when Check kills
 * it on timeout), and fb_e2e_main removes the temp dirs afterwards,
 * printing the stderr of the daemons of failed tests.
 */
#ifndef FB_E2E_HARNESS_H
#define FB_E2E_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <fidbus/client.h>
#include <fidbus/proto.h>

/* Config sections used by many tests. */
#define FB_E2E_LOG "[plugin log]\npath = @B@/plugins/log.so\nfile = @D@/log.txt\n"
#define FB_E2E_COUNT                                                                     \
    "[plugin count]\npath = @B@/plugins/count.so\n"                                      \
    "report_file = @D@/count.json\ninterval_ms = 0\n"
/* [plugin NAME] for tests/plugins/NAME.so, followed by its keys. */
#define FB_E2E_TP(name) "[plugin " name "]\npath = @B@/tests/plugins/" name ".so\n"

/* How long the harness waits for the daemon to become ready or to exit. */
#define FB_E2E_TIMEOUT_MS 10000

struct fb_e2e_opts {
    bool tcp;                  /* loopback TCP listener, tcp_auth = none */
    unsigned workers;          /* 0: 2 */
    uint32_t max_frame;        /* 0: not written (daemon default) */
    unsigned blocking_threads; /* 0: not written (daemon default) */
    const char *listen_extra;  /* more lines for [listen] (@B@, @D@ work), or NULL */
    const char *control_extra; /* more lines for [control] (mode, group), or NULL */
};

struct fb_e2e {
    char dir[128];      /* private temp dir, removed by fb_e2e_free */
    char conf[160];     /* the config file */
    char bus[160];      /* Unix bus socket */
    char control[160];  /* control socket (configured; may be unused) */
    char bus_addr[170]; /* "unix:" + bus */
    char tcp_addr[64];  /* "tcp:127.0.0.1:PORT", or "" without TCP */
    char errfile[160];  /* the daemon's stdout+stderr */
    char notify[160];   /* our NOTIFY_SOCKET ("@NAME": abstract) */
    int notify_fd;
    int pidfd;          /* -1 if pidfd_open is unavailable */
    pid_t pid;          /* 0 when no daemon is running */
    bool stopping_seen; /* "STOPPING=1" arrived */
    char *notify_log;   /* every datagram since the last spawn, each
                         * followed by an empty line (fb_e2e_notify_log) */
    size_t notify_len;
    size_t notify_pos;       /* fb_e2e_notify_wait looked up to here */
    struct fb_e2e_opts opts; /* what fb_e2e_config was given last */
    char *sections;          /* (copy) */
};

/*
 * Runs the suite (Check, CK_NORMAL) and returns the process exit status.
 * Every test's temp dir lives under one base dir made here: Check ends a
 * failing forked test with _exit, so the test cannot clean up after
 * itself. Dirs still there afterwards belong to failed tests: their
 * daemon's stderr is printed, then the base dir is removed (kept when
 * $FIDBUS_E2E_KEEP is set). Frees the suite.
 */
int fb_e2e_main(Suite *s);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t fb_e2e_now_ms(void);
/* Fills a sockaddr_un for path (asserts it fits). */
void fb_e2e_sun(struct sockaddr_un *sa, const char *path);
/* A loopback TCP port that was free when asked (bound, then closed: it
 * may be taken again before the caller binds it). */
uint16_t fb_e2e_free_tcp_port(void);

/* $FIDBUS_BUILD_DIR, or the build dir this binary sits in. */
const char *fb_e2e_build_dir(void);

/* A path under the temp dir / the build dir, in one of a few rotating static
 * buffers (valid for the next 7 calls): fine for building argument lists. */
const char *fb_e2e_file(const struct fb_e2e *t, const char *name);
const char *fb_e2e_built(const char *rel);

/* Creates the temp dir. Never returns NULL (asserts). */
struct fb_e2e *fb_e2e_new(void);
/* Kills a daemon still running (dumping its stderr), removes the temp dir,
 * frees. NULL-safe; returns NULL. */
struct fb_e2e *fb_e2e_free(struct fb_e2e *t);

/* Writes t->conf: the harness's [daemon]/[listen]/[control] sections, then
 * `sections` with @B@/@D@ substituted. o may be NULL. */
void fb_e2e_config(struct fb_e2e *t, const struct fb_e2e_opts *o, const char *sections);
/* fb_e2e_config with a loopback TCP listener that wants AUTH: `key` and a
 * newline written to tcp.key at `mode`, a port that was free, and
 * t->tcp_addr set to it. o (may be NULL) must not have tcp or
 * listen_extra. */
void fb_e2e_config_tcp_key(struct fb_e2e *t, const struct fb_e2e_opts *o, const char *key,
                           mode_t mode, const char *sections);
/* Writes text (placeholders substituted) to the temp dir file `name` and
 * returns its path (rotating buffer). */
const char *fb_e2e_write(struct fb_e2e *t, const char *name, const char *text);

/* Spawns `fidbusd -c t->conf` and waits for READY=1 (asserts, with the
 * daemon's stderr in the message, if it exits or times out first). If it
 * exits because its TCP port was taken meanwhile, the config is written
 * again with another port and the daemon restarted (up to 3 times). */
void fb_e2e_start(struct fb_e2e *t);
/* new + config + start. */
struct fb_e2e *fb_e2e_up(const struct fb_e2e_opts *o, const char *sections);
/* Spawns the daemon expecting it to refuse to start: asserts that it exits
 * within FB_E2E_TIMEOUT_MS without sending READY=1, and that no bus socket
 * was created. Returns the wait status; *secs gets the time it took. */
int fb_e2e_start_fail(struct fb_e2e *t, double *secs);
/* fb_e2e_start_fail, then asserts that the daemon's stderr contains want
 * (the reason it gave). */
void fb_e2e_start_fail_says(struct fb_e2e *t, const char *want);
/* Socket activation as systemd does it: fds[i] becomes descriptor 3 + i in
 * the daemon (and nothing else above 2 is inherited), with LISTEN_FDS =
 * nfds, LISTEN_PID = the daemon's own pid (set in the child between fork
 * and exec) and LISTEN_FDNAMES = fdnames unless it is NULL. The caller
 * keeps its fds. */
struct fb_e2e_spawn {
    const int *fds;
    size_t nfds;
    const char *fdnames;
    /* Bind the harness's notify socket in the abstract namespace and pass
     * it as "@NAME" (for this and every later spawn of t). Only on the
     * first spawn of t. */
    bool notify_abstract;
    /* > 0: the daemon runs under this open-file limit, soft and hard. */
    unsigned nofile;
    /* > 0: under this file-size limit in bytes (RLIMIT_FSIZE), SIGXFSZ
     * ignored: a write that would pass it fails with EFBIG, as on a full
     * disk. The daemon's stderr file counts too: keep it above the log. */
    unsigned long fsize;
};
/* fb_e2e_start / fb_e2e_start_fail with passed sockets (sp may be NULL).
 * fb_e2e_start_with makes one attempt (no TCP port retry) and does not
 * check the bus socket file; fb_e2e_start_fail_with checks that no bus
 * socket was created only when no fds are passed. */
void fb_e2e_start_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp);
int fb_e2e_start_fail_with(struct fb_e2e *t, const struct fb_e2e_spawn *sp, double *secs);

/* The daemon's sd_notify datagrams since it was last spawned, in the order
 * they arrived, each followed by an empty line ("READY=1\nSTATUS=...\n\n").
 * Reads what is pending first. Owned by t; valid until the next harness
 * call on t. */
const char *fb_e2e_notify_log(struct fb_e2e *t);
/* Waits up to timeout_ms for a datagram with the line `line` (exactly),
 * looking only at datagrams after the one the previous call returned;
 * returns a malloc'd copy of it, or NULL on timeout. */
char *fb_e2e_notify_wait(struct fb_e2e *t, const char *line, int timeout_ms);

/* SIGTERM, waits (asserting it exits in time), asserts the sockets were
 * removed; returns the wait status. */
int fb_e2e_stop(struct fb_e2e *t);
/* The same with another signal (SIGINT). */
int fb_e2e_stop_signal(struct fb_e2e *t, int sig);
/* fb_e2e_stop for a daemon given its sockets (fb_e2e_start_with): the
 * socket files are the service manager's and stay, so they are not
 * checked. */
int fb_e2e_stop_passed(struct fb_e2e *t);
/* fb_e2e_stop and assert a normal exit with status 0. */
void fb_e2e_stop_ok(struct fb_e2e *t);
/* fb_e2e_stop_ok, then the count plugin's report (FB_E2E_COUNT's
 * report_file, written at fini), malloc'd; asserts it exists. */
char *fb_e2e_stop_report(struct fb_e2e *t);
/* A crash: SIGKILL, waits for the daemon (asserting it died of SIGKILL).
 * Its sockets and files stay behind as after a real kill -9;
 * fb_e2e_start runs it again in place (same config file and dirs). */
void fb_e2e_kill9(struct fb_e2e *t);

/* Runs argv[0] (a path) with argv, stdout and stderr captured; returns the
 * wait status and, when out/err are non-NULL, malloc'd NUL-terminated
 * copies of what it wrote. Asserts it finishes within FB_E2E_TIMEOUT_MS. */
int fb_e2e_run(struct fb_e2e *t, const char *const argv[], char **out, char **err);

/* Lets another user reach t's sockets (asserts): mode 0711 on the
 * harness's base dir, t->dir and its run/, so that only the socket's own
 * mode and the daemon's peer checks stand in the way. */
void fb_e2e_let_others_in(const struct fb_e2e *t);
/* For a forked child (no Check calls there): drops every supplementary
 * group and becomes gid, then uid, for good (setgroups, setresgid,
 * setresuid). Returns 0, or -1 with errno set. */
int fb_e2e_drop_to(uid_t uid, gid_t gid);

/* Runs fidbusctl --socket t->control ARGS... (a NULL-terminated list of
 * const char *, at most 20); asserts it exits with `code`. Returns its
 * stdout (malloc'd) and, when err is non-NULL, its stderr in *err. */
char *fb_e2e_ctl(struct fb_e2e *t, int code, char **err, ...);

/* Whole file, malloc'd and NUL-terminated; NULL if it cannot be read. */
char *fb_e2e_read(const char *path, size_t *len);
/* VmRSS of process pid in KiB, -1 if unknown. */
long fb_e2e_vm_rss_kib(pid_t pid);
/* The daemon's stderr so far (malloc'd, "" if none). */
char *fb_e2e_stderr(const struct fb_e2e *t);
/* Waits (inotify, no sleeping) until `path` contains `needle`; returns
 * whether it did within timeout_ms. */
bool fb_e2e_wait_contains(const char *path, const char *needle, int timeout_ms);

/* In a text of lines: how many lines contain `event` and, if seq >= 0,
 * "seq=SEQ" with exactly that number. */
int fb_e2e_lines_with(const char *text, const char *event, long long seq);
/* Is there one line containing every string of the NULL-terminated list
 * `needles`, compared case-insensitively? */
bool fb_e2e_has_line(const char *text, const char *const needles[]);
/* The first such line, malloc'd (NULL if none). */
char *fb_e2e_line_with(const char *text, const char *event, long long seq);
/* In a JSON object such as count's report, the unsigned number stored under
 * "key"; -1 if the key is absent. */
long long fb_e2e_json_count(const char *json, const char *key);
/* The value of one sample of `fidbusctl stats --prometheus` against t's
 * daemon: the line starting with `series` (metric name and labels, e.g.
 * "fidbus_received_total" or "fidbus_limit_hits_total{reason=\"yield\"}").
 * Fails the test when fidbusctl fails or the series is missing. */
long long fb_e2e_prom_value(struct fb_e2e *t, const char *series);
/* fidbus_limit_hits_total{reason="REASON"} (fb_e2e_prom_value). */
long long fb_e2e_limit_hits(struct fb_e2e *t, const char *reason);
/* vals[i] = the unsigned number under keys[i] in the daemon's `stats`
 * result, asked over t's control socket; a key missing or not a uint
 * fails the test. In harness_stats.c: link libcbor to use it. */
void fb_e2e_stats(const struct fb_e2e *t, size_t n, const char *const keys[],
                  uint64_t vals[]);

/* Asserts that text (a plugin's output) has n lines with event and seq. */
#define FB_E2E_ASSERT_LINES(text, event, seq, n)                                         \
    ck_assert_msg(fb_e2e_lines_with((text), (event), (seq)) == (n),                      \
                  "expected %d line(s) with %s seq=%lld, found %d; file:\n%s", (n),      \
                  (event), (long long)(seq), fb_e2e_lines_with((text), (event), (seq)),  \
                  (text) ? (text) : "(missing)")
/* Asserts that count's report holds n for key (-1: key absent). */
#define FB_E2E_ASSERT_COUNT(json, key, n)                                                \
    ck_assert_msg(fb_e2e_json_count((json), (key)) == (long long)(n),                    \
                  "count report: %s = %lld, expected %lld; report: %s", (key),           \
                  fb_e2e_json_count((json), (key)), (long long)(n), (json))

/* --------------------------------------------------- library connections */

/* Connects with the client library to the Unix / TCP listener (asserts). */
struct fidbus_client *fb_e2e_connect(const struct fb_e2e *t);
struct fidbus_client *fb_e2e_connect_tcp(const struct fb_e2e *t);
/* Connects with the client library to t's control socket (asserts); o as
 * for fidbus_client_connect (NULL: defaults). */
struct fidbus_client *fb_e2e_connect_control(const struct fb_e2e *t,
                                             const struct fidbus_client_opts *o);
/* PING, asserting the ACK. */
void fb_e2e_ping(struct fidbus_client *c);
/* n un-acked publishes of event (a small payload), then a flush. */
void fb_e2e_publish_n(struct fidbus_client *c, const char *event, int n);
/* An acked publish of event, asserting ACK with result `want`. */
void fb_e2e_publish_ack(struct fidbus_client *c, const char *event, uint64_t want);

/* ------------------------------------------------------ raw connections */

struct fb_e2e_raw {
    int fd;
    uint8_t *buf; /* received, not yet consumed bytes */
    size_t len, cap;
    uint8_t *body; /* the current frame's body (owned copy) */
    size_t body_len;
    struct fidbus_msg msg; /* the current frame, decoded */
};

/* A socket to the Unix / TCP listener; HELLO is not read yet. */
struct fb_e2e_raw *fb_e2e_raw_unix(const struct fb_e2e *t);
struct fb_e2e_raw *fb_e2e_raw_tcp(const struct fb_e2e *t);
/* A socket to the control socket; HELLO is not read yet. */
struct fb_e2e_raw *fb_e2e_raw_control(const struct fb_e2e *t);
struct fb_e2e_raw *fb_e2e_raw_close(struct fb_e2e_raw *r);

/* Writes bytes as they are (EPIPE is not an error: the daemon may already
 * have closed). */
void fb_e2e_raw_send(struct fb_e2e_raw *r, const void *p, size_t n);
/* Writes one frame: 4-byte big-endian length, then body. */
void fb_e2e_raw_frame(struct fb_e2e_raw *r, const void *body, size_t n);
/* Encodes and writes a message with the library's encoder. */
void fb_e2e_raw_msg(struct fb_e2e_raw *r, const struct fidbus_msg_out *m);
/*
 * Acked PUBLISHes of `event` written to fd without reading an answer,
 * FB_E2E_PUSH_CHUNK pre-encoded frames at a time (the socket is made
 * non-blocking for the while), until the daemon stops reading us (the
 * socket stays full for a second: returns true), it closes the connection
 * (false), or max frames are out: no push back, which fails the test.
 * *sent counts the frames of fully written chunks; *b keeps the current
 * chunk and *off how much of it went out (the caller frees b), unless b
 * and off are NULL.
 */
enum { FB_E2E_PUSH_CHUNK = 1000 };
bool fb_e2e_push_unread(int fd, const char *event, uint64_t max, struct fidbus_buf *b,
                        size_t *off, uint64_t *sent);
/* PUBLISH {seq, event, flags} (no tags, no payload) / PING {seq}. */
void fb_e2e_raw_publish(struct fb_e2e_raw *r, uint64_t seq, bool ack, const char *event);
void fb_e2e_raw_ping(struct fb_e2e_raw *r, uint64_t seq);

/* One recv(2) of up to cap bytes from fd once it is readable, waiting
 * until deadline (fb_e2e_now_ms) at the most; EINTR is retried. Returns
 * the byte count, 0 at EOF, -ETIMEDOUT, or a negative errno. No Check
 * calls: fine in a forked child. */
ssize_t fb_e2e_recv_by(int fd, void *buf, size_t cap, uint64_t deadline);
/* Reads the next frame into r->msg. Returns 1 (a message, decoded without
 * error), 0 at EOF, -ETIMEDOUT, or a negative errno (ECONNRESET...). */
int fb_e2e_raw_recv(struct fb_e2e_raw *r, int timeout_ms);
/* Asserts the next frame is HELLO with version 1. */
void fb_e2e_raw_hello(struct fb_e2e_raw *r);
/* Asserts the next frame is ACK(seq, result). */
void fb_e2e_raw_expect_ack(struct fb_e2e_raw *r, uint64_t seq, uint64_t result);
/* Asserts the next frame is ERROR with `code`, and with `seq` when seq >= 0
 * (without a seq key when seq == -2; -1 = not checked). Returns a pointer
 * to r->msg for further checks. */
const struct fidbus_msg *fb_e2e_raw_expect_error(struct fb_e2e_raw *r, int code,
                                                 long long seq);
/* Asserts the daemon closes the connection (EOF or reset) with nothing more
 * sent. */
void fb_e2e_raw_expect_eof(struct fb_e2e_raw *r);

/* m's message (an ERROR's text) as a string, cut at 1,099 bytes, in a
 * static buffer (valid until the next call). */
const char *fb_e2e_msg_text(const struct fidbus_msg *m);
/* The uint in a raw CBOR slice (ACK/ERROR result). */
bool fb_e2e_cbor_uint(struct fidbus_slice s, uint64_t *v);

/* ---------------------------------------------- hand-made CBOR bodies */

/* A tiny CBOR writer for bodies the library's encoder would refuse to
 * make. Writes past the end are an assertion failure. */
struct fb_e2e_cbor {
    uint8_t b[8192];
    size_t n;
};
void fb_e2e_cb_head(struct fb_e2e_cbor *c, unsigned major, uint64_t v);
void fb_e2e_cb_text(struct fb_e2e_cbor *c, const char *s);
void fb_e2e_cb_raw(struct fb_e2e_cbor *c, const void *p, size_t n);
#define FB_E2E_CB_UINT 0u
#define FB_E2E_CB_NEG 1u
#define FB_E2E_CB_BYTES 2u
#define FB_E2E_CB_TEXT 3u
#define FB_E2E_CB_ARRAY 4u
#define FB_E2E_CB_MAP 5u

#endif
