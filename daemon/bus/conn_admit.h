/*
 * Admission of bus connections ([limits]): max_connections in all,
 * max_connections_tcp of them over TCP, max_connections_per_uid per Unix
 * peer, and, on a `tcp_auth = key` listener, unauth_max connections that
 * have not authenticated yet, unauth_per_addr of them per client address.
 * The listener (main thread) admits at accept; the worker that closes the
 * connection gives its place back (any thread), so the counts are of open
 * connections. A refused client gets ERROR BUSY ("too many connections
 * ...") written straight to its fresh socket, and the socket is closed:
 * it never reaches a worker and costs nothing past the accept.
 *
 * Why TCP has a share of its own: a Unix peer is a local uid, bounded per
 * uid; a TCP peer may be anyone who can reach the port. Without a cap of
 * their own, connections that never send AUTH (or, with tcp_auth = none,
 * any TCP client) could take every place and lock out the host's Unix
 * clients. max_connections_tcp below max_connections keeps the rest for
 * Unix; unauth_max and unauth_per_addr keep an unauthenticated flood from
 * one address from locking out TCP clients that have the key, and the
 * AUTH deadline (auth_timeout_ms) bounds how long each place is held.
 * Addresses are counted as IPv4 addresses and IPv6 /64 prefixes (one
 * host is commonly given a whole /64).
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
#include <sys/socket.h>
#include <sys/types.h>

#include "base/counters.h"

struct fb_daemon;

/* What a connection holds, to give back: its uid slot iff has_uid, a TCP
 * place iff tcp, an unauthenticated place (and its address's, iff
 * has_addr) iff unauth. principal: the peer's uid on Unix (SO_PEERCRED),
 * else FB_PRINCIPAL_OTHER; whose share of the blocking pool its events use
 * (pool.h). */
struct fb_admit {
    bool has_uid;
    bool tcp;
    bool unauth;
    bool has_addr;
    uid_t uid;
    uint8_t addr[16]; /* IPv4-mapped IPv4 address, or IPv6 /64 prefix */
    uint32_t principal;
    /* A Unix peer's credentials, read once here (SO_PEERCRED) and given to
     * every event it publishes (struct fidbus_event); -1 otherwise. */
    int64_t peer_uid, peer_pid;
};

/* Admits fd (its peer address `peer`, NULL if unknown) or writes the
 * refusal, counts it, logs it (rate-limited) and closes fd: true iff
 * admitted (then *a says what to give back). Main thread. */
bool fb_conn_admit(struct fb_daemon *d, int fd, bool is_tcp, const struct sockaddr *peer,
                   struct fb_admit *a);
/* Writes fd ERROR BUSY with msg, counts `why`, half-closes and closes
 * it: for a connection refused before it reaches a worker. */
void fb_conn_refuse(struct fb_daemon *d, int fd, enum fb_limit_reason why,
                    const char *msg);
/* The connection passed AUTH: its unauthenticated place is given back
 * (it keeps its TCP one). Any thread. */
void fb_conn_admit_authed(struct fb_daemon *d, struct fb_admit *a);
/* Gives an admitted connection's places back. Any thread. */
void fb_conn_admit_release(struct fb_daemon *d, const struct fb_admit *a);

#endif
