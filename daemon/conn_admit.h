/*
 * Admission of bus connections: max_connections in all and
 * max_connections_per_uid per Unix peer ([limits]). The listener (main
 * thread) admits at accept; the worker that closes the connection gives
 * its place back (any thread), so the counts are of open connections.
 * A refused client gets ERROR BUSY ("too many connections ...") written
 * straight to its fresh socket, and the socket is closed: it never
 * reaches a worker and costs nothing past the accept.
 *
 * Root is not exempt from the per-uid limit: a system service running as
 * root is as able to leak connections as any other; max_connections
 * bounds everyone, and max_connections_per_uid = 0 turns the per-uid
 * limit off.
 */
#ifndef FB_CONN_ADMIT_H
#define FB_CONN_ADMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"

/* What a connection holds: its uid slot is counted iff has_uid.
 * principal: the peer's uid on Unix (SO_PEERCRED), else
 * FB_PRINCIPAL_OTHER; whose share of the blocking pool its events use
 * (pool.h). */
struct fb_admit {
    bool has_uid;
    uid_t uid;
    uint32_t principal;
};

/* Admits fd or writes the refusal, counts it and closes fd: true iff
 * admitted (then *a says what to give back). Main thread. */
bool fb_conn_admit(struct fb_daemon *d, int fd, bool is_tcp, struct fb_admit *a);
/* Writes fd ERROR BUSY with msg, counts `why`, half-closes and closes
 * it: for a connection refused before it reaches a worker. */
void fb_conn_refuse(struct fb_daemon *d, int fd, enum fb_limit_reason why,
                    const char *msg);
/* Gives an admitted connection's place back. Any thread. */
void fb_conn_admit_release(struct fb_daemon *d, const struct fb_admit *a);

#endif
