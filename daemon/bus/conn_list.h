/*
 * conn.list (proto/control.md): who is connected, with a few counters per
 * connection.
 *
 * Connections belong to their I/O worker and nothing on them is locked
 * (docs/architecture.md, "Threads and who owns what"), so the control
 * thread never walks a worker's list itself: it leaves a request in each
 * worker's inbox (the mutex taken once per wake-up, worker.c) and wakes
 * it; the worker copies its connections into the request on its own
 * thread, between two callbacks, and the control thread waits for the
 * answers, at most FB_CONN_SNAP_WAIT_MS. What each connection reports is
 * therefore consistent (read by its owner), and the counters behind it are
 * plain fields its owner writes: the hot path pays an add per read batch
 * (frames_in, bytes_in), one per flush (bytes_out) and an increment per
 * answer (frames_out), no atomics and no locks. A worker that does not
 * answer in time (stuck in an inline handler) is reported as missing; its
 * answer, if it comes later, is dropped (the request is reference
 * counted, so a late answer writes into live memory).
 *
 * Connection ids come from one 64-bit counter for the daemon's life, bus
 * and control connections alike: an id is never reused, so it names a
 * connection in logs and in other commands (taps, publisher identity).
 */
#ifndef FB_CONN_LIST_H
#define FB_CONN_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/proto.h>

struct fb_daemon;
struct fb_worker;

/* How long conn.list waits for the workers' answers. */
#define FB_CONN_SNAP_WAIT_MS 2000u
/* A client's AUTH name is kept up to this many bytes (cut at a UTF-8
 * character boundary): conn.list's entry stays small and bounded. */
#define FB_CONN_NAME_MAX 64u

enum fb_conn_kind { FB_CONN_UNIX, FB_CONN_TCP, FB_CONN_CONTROL };

/* One connection as conn.list shows it. */
struct fb_conn_info {
    uint64_t id;
    enum fb_conn_kind kind;
    int64_t uid, pid;                /* Unix peers (SO_PEERCRED); -1 otherwise */
    char peer[64];                   /* TCP: "HOST:PORT" ("[V6]:PORT"); "" otherwise */
    char name[FB_CONN_NAME_MAX + 1]; /* "" when none */
    bool has_name;
    uint64_t since_ns; /* connected at (fb_now_ns) */
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t inflight; /* events whose blocking calls have not all finished */
    bool paused;       /* input held back (backpressure) */
    int worker;        /* the I/O worker's index; -1 for control */
};

/* A growable array of infos. */
struct fb_conn_infos {
    struct fb_conn_info *v;
    size_t n, cap;
};

/* Room for one more at the end (zeroed), or NULL when out of memory. */
struct fb_conn_info *fb_conn_infos_add(struct fb_conn_infos *a);
void fb_conn_infos_free(struct fb_conn_infos *a);

/* The next connection id (any thread): 1, 2, ... never reused. */
uint64_t fb_conn_id_next(void);

/* Keeps m's name (AUTH), if it has one, in *name (malloc'd; replaces an
 * older one), cut at FB_CONN_NAME_MAX bytes. Out of memory keeps none. */
void fb_conn_set_name(char **name, const struct fidbus_msg *m);

/* Unix peer credentials of fd into info->uid/pid (left -1 on failure). */
void fb_conn_info_peercred(struct fb_conn_info *info, int fd);

/*
 * Asks every worker of d for its connections and waits for the answers
 * (FB_CONN_SNAP_WAIT_MS at most), appending them to *out. *missing gets
 * how many workers did not answer (stopping or stuck). Returns 0 or
 * -ENOMEM. Any thread but a worker's; one call at a time (the control
 * thread).
 */
int fb_conn_snapshot(struct fb_daemon *d, struct fb_conn_infos *out, unsigned *missing);

/* The snapshot request object, opaque to the workers. */
struct fb_conn_snap;
/* Worker w answers snap (its own thread, from its inbox callback). */
void fb_conn_snap_answer(struct fb_worker *w, struct fb_conn_snap *snap);
/* Drops a request a worker never answered (worker freed). NULL-safe. */
void fb_conn_snap_drop(struct fb_conn_snap *snap);

#endif
