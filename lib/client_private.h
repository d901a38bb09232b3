/*
 * lib/client_private.h -- what lib/client.c, client_addr.c,
 * client_request.c, client_reconnect.c and client_answers.c share.
 * Private to libfidbus (not installed); the library is built with
 * -fvisibility=hidden, so the fb_ functions below are not exported.
 *
 * client_addr.c turns an address string into a connected, non-blocking
 * stream socket; client.c speaks the protocol over it. Both wait against
 * the same kind of deadline, so the time helpers are here.
 */
#ifndef FB_CLIENT_PRIVATE_H
#define FB_CLIENT_PRIVATE_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>
#include <time.h>

#include <fidbus/client.h>
#include <fidbus/proto.h>

/* --------------------------------------------------------------- time */

/* Deadlines are CLOCK_MONOTONIC milliseconds; -1 means none. */
static inline int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left for poll(): -1 forever, 0 when the deadline passed. */
static inline int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ------------------------------------------------------------ address */

struct fb_addr {
    bool is_unix;
    struct sockaddr_un un;
    char host[256];
    char port[6];
};

/*
 * "unix:PATH", "tcp:HOST:PORT" ("tcp:[::1]:7878" for IPv6), or a plain
 * path. Anything else that starts like a URL scheme ("udp:...") is refused
 * rather than taken as a relative file name; "./name:x" reaches such a file.
 * Returns 0, -EINVAL, or -ENAMETOOLONG for a path sun_path cannot hold.
 */
int fb_addr_parse(const char *addr, struct fb_addr *a);

/*
 * Connects to a parsed address before the deadline. Returns the socket
 * (non-blocking, close-on-exec, owned by the caller) or a negative errno:
 * -ETIMEDOUT when the deadline passed, -ENXIO when a host name does not
 * resolve.
 */
int fb_addr_connect(const struct fb_addr *a, int64_t deadline);

/* ------------------------------------------------------- reconnection */

/*
 * The acked-mode PUBLISH frames a reconnecting client sent (or queued)
 * and has no answer for yet, in the order they were queued: what it
 * re-sends after a reconnection. Entries are answered (dropped) by seq;
 * answers mostly come in order, so the search from the front is short.
 * Zero-initialise; fb_pending_free releases it.
 */
struct fb_pending_frame {
    uint64_t seq;
    /* malloc'd copy of the whole frame, header included; NULL once answered */
    uint8_t *frame;
    size_t len;
};

struct fb_pending {
    struct fb_pending_frame *v;
    size_t head; /* v[head..len) may hold live entries */
    size_t len, cap;
    size_t count; /* live entries */
    size_t bytes; /* sum of their len */
};

/* Keeps a copy of frame. 0 or -ENOMEM. */
int fb_pending_add(struct fb_pending *p, uint64_t seq, const uint8_t *frame, size_t len);
/* Drops the oldest live entry with this seq; false if there is none. */
bool fb_pending_answer(struct fb_pending *p, uint64_t seq);
/* Appends every live frame, oldest first. 0 or -ENOMEM (out unchanged). */
int fb_pending_append_all(const struct fb_pending *p, struct fidbus_buf *out);
void fb_pending_free(struct fb_pending *p);

/* The first delay after a failed attempt, doubled after each further one. */
#define FB_BACKOFF_FIRST_MS 50u
/*
 * The next backoff step after `cur_ms` (0 = none yet), capped at max_ms,
 * and in *delay_ms that step with jitter: a uniform draw from its upper
 * half, so clients cut off together do not come back in lockstep.
 * *rng is the caller's xorshift state (never 0).
 */
unsigned fb_backoff_next(unsigned cur_ms, unsigned max_ms, uint64_t *rng,
                         unsigned *delay_ms);

/* ------------------------------------------------------------ answers */

/*
 * ACKs and ERRORs carrying a seq that arrived while a call waited for
 * something else, oldest first, for fidbus_client_recv (client_answers.c).
 * A ring of a power-of-two cap, grown by doubling and reused.
 * Zero-initialise; fb_answers_free releases it.
 */
struct fb_kept {
    struct fidbus_answer ans;
    char *message; /* ERROR: malloc'd copy of its message; NULL for ACK */
};

struct fb_answers {
    struct fb_kept *v;
    size_t head, len, cap;
};

/* Keeps a copy of a (and of message for an ERROR). 0 or -ENOMEM. */
int fb_answers_push(struct fb_answers *q, const struct fidbus_answer *a,
                    struct fidbus_slice message);
/* The oldest answer, false when none; *message (NULL for ACK) passes to
 * the caller, who frees it. */
bool fb_answers_pop(struct fb_answers *q, struct fidbus_answer *a, char **message);
void fb_answers_free(struct fb_answers *q);

/* ------------------------------------------------------------ client */

#define FB_SEQ_INTERNAL (UINT64_C(1) << 63)
#define FB_MAX_NONCE 256u
#define FB_LAST_ERROR_MAX 4096u
/* fb_client_pump_once: the connection was lost and a reconnecting client
 * may carry on (never returned to the API's callers). */
#define FB_LOST 1

enum fb_wait_kind {
    FB_WAIT_NONE,  /* only write what is buffered */
    FB_WAIT_HELLO, /* the server's first frame */
    FB_WAIT_SEQ,   /* the answer carrying one seq */
    FB_WAIT_ANY,   /* the next ACK or ERROR, whatever its seq */
    FB_WAIT_SERVE, /* a batch of CALLs or a wake-up (lib/client_serve.c) */
};

/* What one call waits for, and what it got. */
struct fb_wait {
    enum fb_wait_kind kind;
    uint64_t seq;
    uint64_t want_type; /* ACK or REPLY, with FB_WAIT_SEQ */
    bool done;
    struct fidbus_answer ans;
    bool has_result;
    bool copy_result; /* REPLY: keep a malloc'd copy of result */
    uint8_t *result;
    size_t result_len;
    uint64_t conn_code; /* a seq-less ERROR seen during the call */
    bool is_ping;       /* re-send PING(seq) after a reconnection */
    bool no_reconnect;  /* a lost connection ends the wait with 0 (buffered) */
    bool served;        /* FB_WAIT_SERVE: a CALL or a REGISTER answer was read */
    int wake_fd;        /* FB_WAIT_SERVE: also poll this (eventfd) */
    bool woken;         /* ... and it was readable */
};

struct fidbus_client {
    int fd;
    int timeout_ms; /* -1: wait forever */
    uint32_t max_frame;
    int dead; /* 0, or why the connection is unusable */
    uint64_t next_seq;
    uint64_t async_errors;
    uint64_t last_code;
    uint64_t version; /* from HELLO */
    struct fidbus_buf out;
    size_t out_sent; /* bytes at the front of out already written */
    struct fidbus_frame_reader rd;
    uint8_t nonce[FB_MAX_NONCE];
    size_t nonce_len;
    char server_name[256];
    char last_error[FB_LAST_ERROR_MAX];
    /* Reconnection, when opts->reconnect_max_ms > 0. While disconnected,
     * fd is -1 and out holds only un-acked publishes; acked ones live in
     * pend (always, connected or not, until answered). */
    bool reconnect;
    bool handshaking; /* inside a reconnection attempt: failures end it */
    unsigned backoff_max_ms;
    unsigned backoff_ms; /* current step; 0 after a success */
    int64_t next_attempt;
    size_t buffer_max;
    size_t out_frame; /* start of the frame holding byte out_sent */
    uint64_t reconnects;
    uint64_t rng;
    struct fb_addr addr;
    char *name;
    uint8_t *key;
    size_t key_len;
    struct fb_pending pend;
    /* answers read by other calls, waiting for fidbus_client_recv */
    struct fb_answers kept;
    /* Serving (lib/client_serve.c); NULL until fidbus_register. */
    struct fb_serve *serve;
    /* Where frames are decoded: &msg, or another struct while a serving
     * callback runs (its call points into msg). */
    struct fidbus_msg *mp;
    struct fidbus_msg msg; /* large: decoded into, reused */
};

static inline int fb_client_proto_rc(uint64_t code)
{
    return code > 0 && code < 256 ? FIDBUS_EPROTO_CODE(code) : -EPROTO;
}

static inline uint64_t fb_client_next_seq(struct fidbus_client *c)
{
    /* 1, 2, 3, ...: small numbers read well in logs; callers of
     * fidbus_publish_seq keep to the top-bit half. */
    return ++c->next_seq & ~FB_SEQ_INTERNAL;
}

/* client.c */

/* Writes what is buffered and reads answers until w is satisfied, on the
 * current connection only. 0, FB_LOST (reconnecting client), or a
 * negative errno / protocol code. */
int fb_client_pump_once(struct fidbus_client *c, struct fb_wait *w, int64_t deadline);
/* Appends one encoded frame to the write buffer. 0, -ENOMEM, -EMSGSIZE. */
int fb_client_enqueue(struct fidbus_client *c, const struct fidbus_msg_out *o);
/* Appends one whole frame already encoded (header included). 0, -ENOMEM. */
int fb_client_enqueue_raw(struct fidbus_client *c, const uint8_t *frame, size_t len);
/* Waits (the client's timeout) for the answer of type want_type to seq. */
int fb_client_wait_seq(struct fidbus_client *c, struct fb_wait *w, uint64_t seq,
                       uint64_t want_type);
/* The whole size of the frame starting at off in c->out (header included). */
size_t fb_client_frame_size(const struct fidbus_client *c, size_t off);

/* client_request.c */

/* HELLO, then AUTH and a PING when the server sent a nonce. key (may be
 * NULL) and name are only read. 0 or a negative errno / protocol code. */
int fb_client_handshake(struct fidbus_client *c, const char *name, const uint8_t *key,
                        size_t key_len, int64_t deadline);

/* client_reconnect.c */

/* fb_client_pump_once, reconnecting (until deadline) when the client
 * asked for it; the pump every call uses. */
int fb_client_pump(struct fidbus_client *c, struct fb_wait *w, int64_t deadline);
/* Remembers what later handshakes need (copies of name and key). 0 or
 * -ENOMEM. */
int fb_client_reconnect_setup(struct fidbus_client *c, const struct fb_addr *a,
                              const struct fidbus_client_opts *opts);
/* Drops the connection, keeping what must be sent again. */
void fb_client_conn_lost(struct fidbus_client *c);
/* One attempt if the backoff allows it; for calls that do not wait. */
void fb_client_reconnect_if_due(struct fidbus_client *c);
/* Connects again, retrying with backoff until the deadline. */
int fb_client_wait_connected(struct fidbus_client *c, int64_t deadline);
/* Notices a connection the daemon closed while the client was idle. */
void fb_client_probe(struct fidbus_client *c);

#endif
