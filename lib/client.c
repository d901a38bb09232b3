/*
 * lib/client.c -- the blocking client API of <fidbus/client.h>.
 *
 * One client owns one stream socket (Unix or TCP), a frame reader for what
 * the server sends and a fidbus_buf of encoded frames not yet written.
 * The socket itself is non-blocking: every call that has to wait does so
 * in poll() against a deadline taken from the client's timeout, so a
 * stuck server can never hold a caller longer than that. To the caller the
 * API is blocking. Parsing the address and connecting the socket are in
 * client_addr.c (shared declarations in client_private.h); this file is
 * the protocol spoken over the socket.
 *
 * Everything that moves bytes goes through pump(): it writes what is
 * buffered and, at the same time, reads and handles whatever the server
 * sends, until the call's wait is satisfied. Reading while writing matters:
 * the server answers a burst of bad publishes with ERRORs, and if we never
 * read them both sides could end up blocked on full socket buffers.
 *
 * Answers are matched by seq. Seqs the library picks for its own requests
 * (publish_ack, ping, request) count up from 1 and never set the top bit
 * (they show up in logs, where small numbers read well); a caller mixing
 * its own fidbus_publish_seq seqs with them uses the top-bit half.
 * fidbus_publish sends no seq at all: nobody could match it anyway.
 *
 * Reconnection (opt-in, opts->reconnect_max_ms) wraps pump(): the single
 * connection loop is pump_once(), which reports a lost connection as
 * FB_LOST instead of marking the client dead; pump() then reconnects
 * (reconnect_once: connect, handshake, re-queue the pending acked
 * frames from client_reconnect.c, then what was buffered meanwhile) and
 * carries on with the same wait until its deadline. To know which
 * buffered frames were never begun on the old socket, the write buffer
 * keeps whole frames at its front (out_frame marks the frame being
 * written) instead of being compacted at an arbitrary byte.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fidbus/client.h>

#include "client_private.h"

/* Buffered publishes are written once more than this is waiting. */
#define FB_SEND_THRESHOLD (64u * 1024u)
#define FB_DEFAULT_TIMEOUT_MS 10000
#define FB_SEQ_INTERNAL (UINT64_C(1) << 63)
#define FB_MAX_NONCE 256u
#define FB_LAST_ERROR_MAX 4096u
#define FB_RECONNECT_BUFFER_DEFAULT (1024u * 1024u)
/* pump_once: the connection was lost and a reconnecting client may
 * carry on (never returned to the API's callers). */
#define FB_LOST 1

enum fb_wait_kind {
    FB_WAIT_NONE,  /* only write what is buffered */
    FB_WAIT_HELLO, /* the server's first frame */
    FB_WAIT_SEQ,   /* the answer carrying one seq */
    FB_WAIT_ANY,   /* the next ACK or ERROR, whatever its seq */
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
    bool handshaking; /* inside reconnect_once: failures end the attempt */
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
    struct fidbus_msg msg; /* large: decoded into, reused */
};

/* ------------------------------------------------------------ reading */

/* A raw CBOR unsigned integer, as ACK and ERROR carry in `result`. */
static bool raw_uint(struct fidbus_slice s, uint64_t *v)
{
    if (s.len == 0 || (s.ptr[0] >> 5) != 0)
        return false;
    uint8_t ai = s.ptr[0] & 0x1f;
    size_t n;
    if (ai < 24) {
        *v = ai;
        return true;
    }
    if (ai > 27)
        return false;
    n = (size_t)1 << (ai - 24);
    if (s.len < 1 + n)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | s.ptr[1 + i];
    *v = x;
    return true;
}

static void copy_text(char *dst, size_t cap, struct fidbus_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static uint64_t error_code_of(const struct fidbus_msg *m)
{
    /* An ERROR always means failure, whatever a broken server says. */
    if (!fidbus_msg_has(m, FIDBUS_K_CODE) || m->code == FIDBUS_OK)
        return FIDBUS_INTERNAL;
    return m->code;
}

/* Handles one frame body. Negative only when the stream is unusable. */
static int handle_frame(struct fidbus_client *c, struct fb_wait *w, const uint8_t *body,
                        size_t len)
{
    struct fidbus_msg *m = &c->msg;

    if (fidbus_msg_decode(body, len, FIDBUS_MAX_DEPTH_DEFAULT, m) != 0 ||
        !fidbus_msg_has(m, FIDBUS_K_TYPE))
        return -EPROTO;

    if (m->type == FIDBUS_MSG_HELLO) {
        if (w->kind != FB_WAIT_HELLO)
            return 0; /* only the first one means anything */
        if (!fidbus_msg_has(m, FIDBUS_K_VERSION) || m->nonce.len > FB_MAX_NONCE)
            return -EPROTO;
        c->version = m->version;
        copy_text(c->server_name, sizeof(c->server_name), m->name);
        c->nonce_len = m->nonce.len;
        if (m->nonce.len)
            memcpy(c->nonce, m->nonce.ptr, m->nonce.len);
        w->ans.type = FIDBUS_MSG_HELLO;
        w->done = true;
        return 0;
    }
    if (m->type != FIDBUS_MSG_ACK && m->type != FIDBUS_MSG_ERROR &&
        m->type != FIDBUS_MSG_REPLY)
        return 0; /* nothing a client acts on; ignore for compatibility */

    bool has_seq = fidbus_msg_has(m, FIDBUS_K_SEQ);
    bool is_error = m->type == FIDBUS_MSG_ERROR;
    if (c->reconnect && has_seq && m->type != FIDBUS_MSG_REPLY)
        fb_pending_answer(&c->pend, m->seq); /* answered: never re-sent */
    uint64_t code = is_error                           ? error_code_of(m)
                    : fidbus_msg_has(m, FIDBUS_K_CODE) ? m->code
                                                       : 0;
    if (is_error || code != 0) {
        copy_text(c->last_error, sizeof(c->last_error), m->message);
        c->last_code = code;
    }

    bool match = false;
    switch (w->kind) {
    case FB_WAIT_HELLO:
        match = is_error; /* refused before any HELLO (BUSY, ...) */
        break;
    case FB_WAIT_ANY:
        match = m->type != FIDBUS_MSG_REPLY;
        break;
    case FB_WAIT_SEQ:
        match = has_seq && m->seq == w->seq && (is_error || m->type == w->want_type);
        break;
    case FB_WAIT_NONE:
        break;
    }
    if (!match) {
        if (is_error) {
            c->async_errors++;
            if (!has_seq)
                w->conn_code = code;
        }
        return 0;
    }

    w->done = true;
    w->ans.type = m->type;
    w->ans.seq = has_seq ? m->seq : 0;
    w->ans.code = code;
    w->has_result =
        fidbus_msg_has(m, FIDBUS_K_RESULT) && raw_uint(m->result, &w->ans.result);
    if (w->copy_result && m->type == FIDBUS_MSG_REPLY && code == 0 &&
        fidbus_msg_has(m, FIDBUS_K_RESULT) && m->result.len) {
        w->result = malloc(m->result.len);
        if (!w->result)
            return -ENOMEM;
        memcpy(w->result, m->result.ptr, m->result.len);
        w->result_len = m->result.len;
    }
    return 0;
}

/* Handles complete frames already received, up to the one w waits for. */
static int drain_frames(struct fidbus_client *c, struct fb_wait *w)
{
    while (!w->done) {
        const uint8_t *body;
        size_t len;
        int r = fidbus_frame_next(&c->rd, &body, &len);
        if (r == 0)
            return 0;
        if (r != 1)
            return -EPROTO; /* a zero or oversized length: cannot resync */
        int rc = handle_frame(c, w, body, len);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One recv(). >0 bytes, 0 nothing yet, -ECONNRESET at end of stream. */
static int read_some(struct fidbus_client *c)
{
    uint8_t *p;
    size_t len;
    int rc = fidbus_frame_reader_space(&c->rd, &p, &len);
    if (rc < 0)
        return rc;
    if (len == 0)
        return -EPROTO;
    ssize_t n = recv(c->fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
        fidbus_frame_reader_commit(&c->rd, (size_t)n);
        return n > INT_MAX ? INT_MAX : (int)n;
    }
    if (n == 0)
        return -ECONNRESET;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return errno == EPIPE ? -ECONNRESET : -errno;
}

/* The whole size of the frame starting at off in out (header included). */
static size_t frame_size(const struct fidbus_client *c, size_t off)
{
    const uint8_t *h = c->out.data + off;
    return FIDBUS_FRAME_HEADER +
           ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]);
}

static int write_some(struct fidbus_client *c)
{
    ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
        c->out_sent += (size_t)n;
        if (c->out_sent == c->out.len) {
            c->out.len = c->out_sent = c->out_frame = 0;
        } else if (c->reconnect) {
            while (c->out_frame + frame_size(c, c->out_frame) <= c->out_sent)
                c->out_frame += frame_size(c, c->out_frame);
        }
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return errno == EPIPE ? -ECONNRESET : -errno;
}

static int proto_rc(uint64_t code)
{
    return code > 0 && code < 256 ? FIDBUS_EPROTO_CODE(code) : -EPROTO;
}

static void conn_lost(struct fidbus_client *c);

/*
 * The connection cannot be used any more: later calls get `rc` at once.
 * A reconnecting client instead drops the connection and returns FB_LOST
 * (or, inside a handshake, the error itself: reconnect_once cleans up).
 */
static int client_fail(struct fidbus_client *c, int rc)
{
    if (rc == -ETIMEDOUT || rc == -ENOMEM)
        return rc; /* the stream is still in step */
    if (c->reconnect) {
        if (c->handshaking)
            return rc;
        conn_lost(c);
        return FB_LOST;
    }
    if (!c->dead)
        c->dead = fidbus_error_code(rc) ? -ECONNRESET : rc;
    c->out.len = c->out_sent = 0;
    return rc;
}

/*
 * The server hung up. A seq-less ERROR just before that (UNAUTHORIZED,
 * TOO_LARGE, ...) says why, which is worth more than "connection reset".
 */
static int closed(struct fidbus_client *c, struct fb_wait *w)
{
    int rc = drain_frames(c, w);
    int lost = client_fail(c, -ECONNRESET);
    if (rc == 0 && w->done)
        return 0;
    if (lost == FB_LOST)
        return FB_LOST;
    if (rc == 0)
        rc = w->conn_code ? proto_rc(w->conn_code) : -ECONNRESET;
    return rc;
}

/* Writes what is buffered and reads answers until w is satisfied, on
 * the current connection. */
static int pump_once(struct fidbus_client *c, struct fb_wait *w, int64_t deadline)
{
    if (c->dead)
        return c->dead;
    for (;;) {
        int rc = drain_frames(c, w);
        if (rc < 0)
            return client_fail(c, rc);
        if (w->done)
            return 0;
        bool want_out = c->out_sent < c->out.len;
        if (!want_out && w->kind == FB_WAIT_NONE)
            return 0;

        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (want_out)
            p.events |= POLLOUT;
        int n = poll(&p, 1, remaining(deadline));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return client_fail(c, -errno);
        }
        if (n == 0) {
            if (remaining(deadline) == 0)
                return -ETIMEDOUT;
            continue;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            rc = read_some(c);
            if (rc == -ECONNRESET)
                return closed(c, w);
            if (rc < 0)
                return client_fail(c, rc);
        }
        if (want_out && (p.revents & POLLOUT)) {
            rc = write_some(c);
            if (rc < 0) {
                /* Read what the server said before it went away. */
                int r;
                do {
                    r = drain_frames(c, w);
                    if (r == 0)
                        r = read_some(c);
                } while (r > 0);
                if (r == -ECONNRESET)
                    return closed(c, w);
                rc = client_fail(c, rc);
                return w->done ? 0 : rc;
            }
        }
    }
}

static int pump(struct fidbus_client *c, struct fb_wait *w, int64_t deadline);

/* ------------------------------------------------------------ sending */

/* Appends one frame to out; *at (may be NULL) gets where it starts. */
static int enqueue_at(struct fidbus_client *c, const struct fidbus_msg_out *o, size_t *at)
{
    /* A reconnecting client drops only whole frames from the front, so
     * the buffer always starts at a frame (see conn_lost). */
    size_t from = c->reconnect ? c->out_frame : c->out_sent;
    if (from && c->out_sent < c->out.len) {
        memmove(c->out.data, c->out.data + from, c->out.len - from);
        c->out.len -= from;
        c->out_sent -= from;
        c->out_frame = 0;
    }
    size_t before = c->out.len;
    int rc = fidbus_msg_encode(&c->out, o);
    if (rc < 0)
        return rc;
    if (c->out.len - before - FIDBUS_FRAME_HEADER > c->max_frame) {
        c->out.len = before; /* the server would drop the connection */
        return -EMSGSIZE;
    }
    if (at)
        *at = before;
    return 0;
}

static int enqueue(struct fidbus_client *c, const struct fidbus_msg_out *o)
{
    return enqueue_at(c, o, NULL);
}

static int check_publish(const char *event, const struct fidbus_tag *tags, size_t ntags,
                         const uint8_t *payload, size_t payload_len)
{
    if (!fidbus_event_valid(event, tags, ntags) || (payload_len && !payload))
        return -EINVAL;
    return 0;
}

static int enqueue_publish(struct fidbus_client *c, bool has_seq, uint64_t seq,
                           uint32_t flags, const char *event,
                           const struct fidbus_tag *tags, size_t ntags,
                           const uint8_t *payload, size_t payload_len)
{
    int rc = check_publish(event, tags, ntags, payload, payload_len);
    if (rc < 0)
        return rc;
    if (c->dead)
        return c->dead;
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT),
        .type = FIDBUS_MSG_PUBLISH,
        .event = event,
    };
    if (has_seq) {
        o.present |= FIDBUS_BIT(FIDBUS_K_SEQ);
        o.seq = seq;
    }
    if (ntags) {
        o.present |= FIDBUS_BIT(FIDBUS_K_TAGS);
        o.tags = tags;
        o.ntags = ntags;
    }
    if (payload_len) {
        o.present |= FIDBUS_BIT(FIDBUS_K_PAYLOAD);
        o.payload.ptr = payload;
        o.payload.len = payload_len;
    }
    if (flags) {
        o.present |= FIDBUS_BIT(FIDBUS_K_FLAGS);
        o.flags = flags;
    }
    size_t before = 0;
    rc = enqueue_at(c, &o, &before);
    if (rc < 0 || !c->reconnect)
        return rc;

    /* Keep acked frames until answered, within the bound; while
     * disconnected they wait in pend only, so out holds what has no
     * other copy. */
    bool acked = has_seq && (flags & FIDBUS_FLAG_ACK);
    size_t flen = c->out.len - before;
    size_t kept = c->pend.bytes + (c->fd < 0 ? c->out.len : acked ? flen : 0);
    if (kept > c->buffer_max) {
        c->out.len = before;
        return -ENOBUFS;
    }
    if (acked) {
        rc = fb_pending_add(&c->pend, seq, c->out.data + before, flen);
        if (rc < 0 || c->fd < 0)
            c->out.len = before;
    }
    return rc;
}

static int maybe_send(struct fidbus_client *c)
{
    if (c->out.len - c->out_sent <= FB_SEND_THRESHOLD)
        return 0;
    if (c->reconnect) {
        /* A buffered publish never waits for a reconnection. */
        if (c->fd < 0)
            return 0;
        struct fb_wait w = {.kind = FB_WAIT_NONE, .no_reconnect = true};
        return pump(c, &w, deadline_in(c->timeout_ms));
    }
    return fidbus_flush(c);
}

static uint64_t internal_seq(struct fidbus_client *c)
{
    /* 1, 2, 3, ...: small numbers read well in logs; callers of
     * fidbus_publish_seq keep to the top-bit half. */
    return ++c->next_seq & ~FB_SEQ_INTERNAL;
}

static int wait_seq(struct fidbus_client *c, struct fb_wait *w, uint64_t seq,
                    uint64_t want_type)
{
    w->kind = FB_WAIT_SEQ;
    w->seq = seq;
    w->want_type = want_type;
    return pump(c, w, deadline_in(c->timeout_ms));
}

/* ------------------------------------------------------------ connect */

static int send_ping(struct fidbus_client *c, int64_t deadline)
{
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = internal_seq(c),
    };
    int rc = enqueue(c, &o);
    if (rc < 0)
        return rc;
    struct fb_wait w = {
        .kind = FB_WAIT_SEQ, .seq = o.seq, .want_type = FIDBUS_MSG_ACK, .is_ping = true};
    rc = pump(c, &w, deadline);
    if (rc < 0)
        return rc;
    return w.ans.type == FIDBUS_MSG_ACK ? 0 : proto_rc(w.ans.code);
}

/*
 * HELLO, then AUTH when the server sent a nonce. The protocol has no
 * answer to AUTH, so a PING follows it: its ACK proves the key was
 * accepted, and a refusal surfaces here instead of on the first publish.
 */
static int handshake(struct fidbus_client *c, const char *name, const uint8_t *key,
                     size_t key_len, int64_t deadline)
{
    struct fb_wait w = {.kind = FB_WAIT_HELLO};
    int rc = pump(c, &w, deadline);
    if (rc < 0)
        return rc;
    if (w.ans.type == FIDBUS_MSG_ERROR)
        return proto_rc(w.ans.code);
    if (c->version != FIDBUS_PROTO_VERSION)
        return -EPROTONOSUPPORT;
    if (c->nonce_len == 0)
        return 0;
    if (!key) {
        snprintf(c->last_error, sizeof(c->last_error),
                 "the server requires a key and none was given");
        return FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED);
    }

    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, c->nonce, c->nonce_len, mac, &mac_len))
        return -ENOMEM;
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_MAC),
        .type = FIDBUS_MSG_AUTH,
        .mac = {mac, mac_len},
    };
    if (name) {
        o.present |= FIDBUS_BIT(FIDBUS_K_NAME);
        o.name = name;
    }
    rc = enqueue(c, &o);
    if (rc < 0)
        return rc;
    return send_ping(c, deadline);
}

static struct fidbus_client *client_free(struct fidbus_client *c)
{
    if (!c)
        return NULL;
    if (c->fd >= 0)
        close(c->fd);
    fidbus_frame_reader_destroy(&c->rd);
    fidbus_buf_free(&c->out);
    fb_pending_free(&c->pend);
    free(c->name);
    if (c->key) {
        explicit_bzero(c->key, c->key_len);
        free(c->key);
    }
    free(c);
    return NULL;
}

/* ------------------------------------------------------- reconnection */

/* Remembers what later handshakes need. 0 or -ENOMEM. */
static int reconnect_setup(struct fidbus_client *c, const struct fb_addr *a,
                           const struct fidbus_client_opts *opts)
{
    c->reconnect = true;
    c->addr = *a;
    c->backoff_max_ms = opts->reconnect_max_ms;
    c->buffer_max =
        opts->reconnect_buffer ? opts->reconnect_buffer : FB_RECONNECT_BUFFER_DEFAULT;
    /* Any frame the client may send must fit, or it could never be kept. */
    if (c->buffer_max < (size_t)c->max_frame + FIDBUS_FRAME_HEADER)
        c->buffer_max = (size_t)c->max_frame + FIDBUS_FRAME_HEADER;
    c->rng = ((uint64_t)now_ms() << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
    if (!c->rng)
        c->rng = 1;
    if (opts->name && !(c->name = strdup(opts->name)))
        return -ENOMEM;
    if (opts->key) {
        c->key = malloc(opts->key_len ? opts->key_len : 1);
        if (!c->key)
            return -ENOMEM;
        memcpy(c->key, opts->key, opts->key_len);
        c->key_len = opts->key_len;
    }
    return 0;
}

/* Is the frame body an un-acked PUBLISH (worth carrying over)? */
static bool unacked_publish(struct fidbus_client *c, const uint8_t *body, size_t len)
{
    struct fidbus_msg *m = &c->msg;
    if (fidbus_msg_decode(body, len, FIDBUS_MAX_DEPTH_DEFAULT, m) != 0)
        return false;
    return m->type == FIDBUS_MSG_PUBLISH &&
           !(fidbus_msg_has(m, FIDBUS_K_FLAGS) && (m->flags & FIDBUS_FLAG_ACK));
}

/*
 * Drops the connection. Un-acked publishes not yet begun on it stay in
 * out, in order; everything else there goes: acked frames have their
 * copy in pend, and a PING is sent again by the wait that wanted it.
 */
static void conn_lost(struct fidbus_client *c)
{
    close(c->fd);
    c->fd = -1;
    size_t off = c->out_frame, keep = 0;
    if (off < c->out.len && c->out_sent > off)
        off += frame_size(c, off); /* partly written: lost with the socket */
    while (off < c->out.len) {
        size_t n = frame_size(c, off);
        if (unacked_publish(c, c->out.data + off + FIDBUS_FRAME_HEADER,
                            n - FIDBUS_FRAME_HEADER)) {
            memmove(c->out.data + keep, c->out.data + off, n);
            keep += n;
        }
        off += n;
    }
    c->out.len = keep;
    c->out_sent = c->out_frame = 0;
    c->rd.start = c->rd.end = 0; /* a new stream starts with a new frame */
    c->backoff_ms = 0;
    c->next_attempt = now_ms(); /* the first attempt goes at once */
}

/*
 * One attempt: connect, handshake, then queue the pending acked frames
 * followed by what was buffered meanwhile. On failure the next attempt is
 * scheduled after the backoff. 0 or a negative errno / protocol code.
 */
static int reconnect_once(struct fidbus_client *c)
{
    int64_t deadline = deadline_in(c->timeout_ms);
    int rc = fb_addr_connect(&c->addr, deadline);
    if (rc >= 0) {
        /* The handshake runs on an empty buffer: with auth, nothing but
         * AUTH may come first. */
        struct fidbus_buf held = c->out;
        c->out = (struct fidbus_buf){0};
        c->out_sent = c->out_frame = 0;
        c->fd = rc;
        c->nonce_len = 0;
        c->handshaking = true;
        rc = handshake(c, c->name, c->key, c->key_len, deadline);
        c->handshaking = false;
        size_t left = c->out.len - c->out_sent;
        if (rc == 0 && fidbus_buf_reserve(&c->out, c->pend.bytes + held.len + left) != 0)
            rc = -ENOMEM;
        if (rc == 0) {
            if (left && c->out_sent)
                memmove(c->out.data, c->out.data + c->out_sent, left);
            c->out.len = left;
            c->out_sent = c->out_frame = 0;
            fb_pending_append_all(&c->pend, &c->out); /* reserved above */
            if (held.len)
                fidbus_buf_append(&c->out, held.data, held.len);
            fidbus_buf_free(&held);
            c->backoff_ms = 0;
            c->reconnects++;
            return 0;
        }
        close(c->fd);
        c->fd = -1;
        fidbus_buf_free(&c->out);
        c->out = held;
        c->out_sent = c->out_frame = 0;
        c->rd.start = c->rd.end = 0;
    }
    unsigned delay;
    c->backoff_ms = fb_backoff_next(c->backoff_ms, c->backoff_max_ms, &c->rng, &delay);
    c->next_attempt = now_ms() + delay;
    return rc;
}

/* One attempt if the backoff allows it; for calls that do not wait. */
static void reconnect_if_due(struct fidbus_client *c)
{
    if (c->reconnect && c->fd < 0 && now_ms() >= c->next_attempt)
        (void)reconnect_once(c);
}

/* Connects again, retrying with backoff until the deadline. */
static int wait_connected(struct fidbus_client *c, int64_t deadline)
{
    while (c->fd < 0) {
        int64_t now = now_ms();
        if (now >= c->next_attempt) {
            if (reconnect_once(c) == -ENOMEM)
                return -ENOMEM;
            continue;
        }
        int left = remaining(deadline);
        if (left == 0)
            return -ETIMEDOUT;
        int64_t wait = c->next_attempt - now;
        if (left > 0 && wait > left)
            wait = left;
        /* waiting out the backoff: nothing to poll for */
        poll(NULL, 0, (int)wait);
    }
    return 0;
}

/*
 * Notices a connection the daemon closed while the client was idle (a
 * restart), before a call writes into it: end of stream with nothing
 * unread. Answers already received are left for the call to read.
 */
static void probe_connection(struct fidbus_client *c)
{
    if (!c->reconnect || c->fd < 0 || fidbus_frame_reader_pending(&c->rd))
        return;
    uint8_t b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_lost(c);
}

static int pump(struct fidbus_client *c, struct fb_wait *w, int64_t deadline)
{
    if (!c->reconnect || c->handshaking)
        return pump_once(c, w, deadline);
    for (;;) {
        if (c->fd < 0) {
            if (w->no_reconnect)
                return 0;
            int rc = wait_connected(c, deadline);
            if (rc < 0)
                return rc;
            if (w->is_ping) {
                struct fidbus_msg_out o = {
                    .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
                    .type = FIDBUS_MSG_PING,
                    .seq = w->seq,
                };
                if ((rc = enqueue(c, &o)) < 0)
                    return rc;
            }
        }
        int rc = pump_once(c, w, deadline);
        if (rc != FB_LOST)
            return rc;
        /* A REQUEST may have been applied: the caller must decide. */
        if (w->kind == FB_WAIT_SEQ && w->want_type == FIDBUS_MSG_REPLY)
            return -ECONNRESET;
    }
}

int fidbus_client_connect(struct fidbus_client **out, const char *addr,
                          const struct fidbus_client_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    struct fb_addr a;
    int rc = fb_addr_parse(addr, &a);
    if (rc < 0)
        return rc;

    struct fidbus_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    c->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : FB_DEFAULT_TIMEOUT_MS;
    if (c->timeout_ms < 0)
        c->timeout_ms = -1;
    c->max_frame = opts && opts->max_frame ? opts->max_frame : FIDBUS_MAX_FRAME_DEFAULT;
    rc = fidbus_frame_reader_init(&c->rd, c->max_frame, 0);
    if (rc < 0) {
        free(c);
        return rc;
    }

    int64_t deadline = deadline_in(c->timeout_ms);
    rc = fb_addr_connect(&a, deadline);
    if (rc < 0)
        goto fail;
    c->fd = rc;
    rc = opts ? handshake(c, opts->name, opts->key, opts->key_len, deadline)
              : handshake(c, NULL, NULL, 0, deadline);
    if (rc == 0 && opts && opts->reconnect_max_ms)
        rc = reconnect_setup(c, &a, opts);
    if (rc < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    client_free(c);
    return rc;
}

void fidbus_client_close(struct fidbus_client *c)
{
    if (!c)
        return;
    if (c->reconnect) {
        struct fb_wait w = {.kind = FB_WAIT_NONE, .no_reconnect = true};
        if (c->fd >= 0 && c->out_sent < c->out.len)
            (void)pump(c, &w, deadline_in(c->timeout_ms));
    } else if (!c->dead && c->out_sent < c->out.len) {
        (void)fidbus_flush(c);
    }
    client_free(c);
}

/* ---------------------------------------------------------------- API */

int fidbus_publish(struct fidbus_client *c, const char *event,
                   const struct fidbus_tag *tags, size_t ntags, const uint8_t *payload,
                   size_t payload_len)
{
    if (!c)
        return -EINVAL;
    reconnect_if_due(c);
    int rc = enqueue_publish(c, false, 0, 0, event, tags, ntags, payload, payload_len);
    return rc < 0 ? rc : maybe_send(c);
}

int fidbus_publish_seq(struct fidbus_client *c, uint64_t seq, uint32_t flags,
                       const char *event, const struct fidbus_tag *tags, size_t ntags,
                       const uint8_t *payload, size_t payload_len)
{
    if (!c)
        return -EINVAL;
    reconnect_if_due(c);
    int rc =
        enqueue_publish(c, true, seq, flags, event, tags, ntags, payload, payload_len);
    return rc < 0 ? rc : maybe_send(c);
}

int fidbus_flush(struct fidbus_client *c)
{
    if (!c)
        return -EINVAL;
    struct fb_wait w = {.kind = FB_WAIT_NONE};
    probe_connection(c);
    return pump(c, &w, deadline_in(c->timeout_ms));
}

int fidbus_publish_ack(struct fidbus_client *c, const char *event,
                       const struct fidbus_tag *tags, size_t ntags,
                       const uint8_t *payload, size_t payload_len, uint64_t *result)
{
    if (!c)
        return -EINVAL;
    if (result)
        *result = 0;
    probe_connection(c);
    uint64_t seq = internal_seq(c);
    int rc = enqueue_publish(c, true, seq, FIDBUS_FLAG_ACK, event, tags, ntags, payload,
                             payload_len);
    if (rc < 0)
        return rc;
    struct fb_wait w = {0};
    rc = wait_seq(c, &w, seq, FIDBUS_MSG_ACK);
    if (rc < 0)
        return rc;
    if (result && w.has_result)
        *result = w.ans.result; /* HANDLER_FAILED counts successes too */
    return w.ans.type == FIDBUS_MSG_ACK ? 0 : proto_rc(w.ans.code);
}

int fidbus_ping(struct fidbus_client *c)
{
    if (!c)
        return -EINVAL;
    if (c->dead)
        return c->dead;
    int64_t deadline = deadline_in(c->timeout_ms);
    if (c->reconnect) {
        probe_connection(c);
        int rc = wait_connected(c, deadline);
        if (rc < 0)
            return rc;
    }
    return send_ping(c, deadline);
}

int fidbus_client_recv(struct fidbus_client *c, struct fidbus_answer *ans, int timeout_ms)
{
    if (!c || !ans)
        return -EINVAL;
    struct fb_wait w = {.kind = FB_WAIT_ANY};
    int rc = pump(c, &w, deadline_in(timeout_ms == -1 ? c->timeout_ms : timeout_ms));
    if (rc < 0)
        return rc;
    *ans = w.ans;
    if (!w.has_result)
        ans->result = 0;
    return 0;
}

int fidbus_request(struct fidbus_client *c, const char *command, const uint8_t *args,
                   size_t args_len, uint8_t **reply_result, size_t *reply_result_len)
{
    if (reply_result)
        *reply_result = NULL;
    if (reply_result_len)
        *reply_result_len = 0;
    if (!c || !command || !*command || (args_len && !args))
        return -EINVAL;
    if (c->dead)
        return c->dead;
    if (c->reconnect) {
        probe_connection(c);
        int rc = wait_connected(c, deadline_in(c->timeout_ms));
        if (rc < 0)
            return rc;
    }
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND),
        .type = FIDBUS_MSG_REQUEST,
        .seq = internal_seq(c),
        .command = command,
    };
    if (args_len) {
        o.present |= FIDBUS_BIT(FIDBUS_K_ARGS);
        o.args.ptr = args;
        o.args.len = args_len;
    }
    int rc = enqueue(c, &o);
    if (rc < 0)
        return rc;
    struct fb_wait w = {.copy_result = reply_result != NULL};
    rc = wait_seq(c, &w, o.seq, FIDBUS_MSG_REPLY);
    if (rc < 0 || w.ans.type != FIDBUS_MSG_REPLY || w.ans.code != 0) {
        free(w.result);
        if (rc < 0)
            return rc;
        return proto_rc(w.ans.code); /* never 0 here: see handle_frame */
    }
    if (reply_result) {
        *reply_result = w.result;
        if (reply_result_len)
            *reply_result_len = w.result_len;
    }
    return 0;
}

const char *fidbus_client_last_error(const struct fidbus_client *c)
{
    return c ? c->last_error : "";
}

int fidbus_client_last_error_code(const struct fidbus_client *c)
{
    return c && c->last_code < 256 ? (int)c->last_code : 0;
}

uint64_t fidbus_client_async_errors(const struct fidbus_client *c)
{
    return c ? c->async_errors : 0;
}

const char *fidbus_client_server_name(const struct fidbus_client *c)
{
    return c ? c->server_name : "";
}

int fidbus_client_fd(const struct fidbus_client *c)
{
    return c ? c->fd : -1;
}

uint64_t fidbus_client_reconnects(const struct fidbus_client *c)
{
    return c ? c->reconnects : 0;
}

size_t fidbus_client_unanswered(const struct fidbus_client *c)
{
    return c ? c->pend.count : 0;
}
