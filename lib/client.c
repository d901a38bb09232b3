/*
 * lib/client.c -- the blocking client API of <fidbus/client.h>.
 *
 * One client owns one stream socket (Unix or TCP), a frame reader for what
 * the server sends and a fidbus_buf of encoded frames not yet written.
 * The socket itself is non-blocking: every call that has to wait does so
 * in poll() against a deadline taken from the client's timeout, so a
 * stuck server can never hold a caller longer than that. To the caller the
 * API is blocking. This file is the protocol spoken over the socket:
 * reading and handling answers, the write buffer, connecting, publishing.
 * The other pieces, sharing struct fidbus_client through
 * client_private.h: client_addr.c (parsing the address, connecting the
 * socket), client_request.c (the handshake, PING, REQUEST and
 * fidbus_client_recv), client_reconnect.c (everything a reconnecting
 * client does differently).
 *
 * Everything that moves bytes goes through fb_client_pump(): it writes what is
 * buffered and, at the same time, reads and handles whatever the server
 * sends, until the call's wait is satisfied. Reading while writing matters:
 * the server answers a burst of bad publishes with ERRORs, and if we never
 * read them both sides could end up blocked on full socket buffers.
 *
 * Answers are matched by seq. An ACK or ERROR with a seq that is not the
 * one the current call waits for (fidbus_flush, fidbus_ping or the
 * automatic flush of fidbus_publish_seq reading a pipeliner's answers) is
 * kept, in order, for fidbus_client_recv (client_answers.c). Seqs the
 * library picks for its own requests (publish_ack, ping, request) count
 * up from 1 and never set the top bit
 * (they show up in logs, where small numbers read well); a caller mixing
 * its own fidbus_publish_seq seqs with them uses the top-bit half.
 * fidbus_publish sends no seq at all: nobody could match it anyway.
 *
 * Reconnection (opt-in, opts->reconnect_max_ms) wraps the single
 * connection loop, fb_client_pump_once() here, which reports a lost
 * connection as FB_LOST instead of marking the client dead;
 * fb_client_pump() in client_reconnect.c then reconnects (connect,
 * handshake, re-queue the pending acked frames, then what was buffered
 * meanwhile) and
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

#include <fidbus/client.h>

#include "client_private.h"
#include "client_serve.h"

/* Buffered publishes are written once more than this is waiting. */
#define FB_SEND_THRESHOLD (64u * 1024u)
#define FB_DEFAULT_TIMEOUT_MS 10000

/* ------------------------------------------------------------ reading */
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
    struct fidbus_msg *m = c->mp;

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
    if (m->type == FIDBUS_MSG_CALL)
        return c->serve ? fb_serve_on_call(c, w, body, len) : 0;
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
    /* The answer to a REGISTER or UNREGISTER the serving side sent. */
    if (c->serve && has_seq && m->type != FIDBUS_MSG_REPLY && fb_serve_on_answer(c, w))
        return 0;

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
    case FB_WAIT_SERVE:
        break;
    }
    if (!match) {
        if (is_error) {
            c->async_errors++;
            if (!has_seq)
                w->conn_code = code;
        }
        if (!has_seq || m->type == FIDBUS_MSG_REPLY)
            return 0; /* nobody could match it; a late REPLY is dropped */
        /* A pipelined answer: fidbus_client_recv hands it out later. */
        struct fidbus_answer a = {.type = m->type, .seq = m->seq, .code = code};
        if (fidbus_msg_has(m, FIDBUS_K_RESULT) && !raw_uint(m->result, &a.result))
            a.result = 0;
        return fb_answers_push(&c->kept, &a, m->message);
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
    bool pinned = false;
    int rc = c->serve ? fb_serve_read_space(c, &p, &len, &pinned) : 0;
    if (rc == 0 && !pinned)
        rc = fidbus_frame_reader_space(&c->rd, &p, &len);
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
size_t fb_client_frame_size(const struct fidbus_client *c, size_t off)
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
            while (c->out_frame + fb_client_frame_size(c, c->out_frame) <= c->out_sent)
                c->out_frame += fb_client_frame_size(c, c->out_frame);
        }
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return errno == EPIPE ? -ECONNRESET : -errno;
}

/*
 * The connection cannot be used any more: later calls get `rc` at once.
 * A reconnecting client instead drops the connection and returns FB_LOST
 * (or, inside a handshake, the error itself: the reconnection attempt in
 * client_reconnect.c cleans up).
 */
static int client_fail(struct fidbus_client *c, int rc)
{
    if (rc == -ETIMEDOUT || rc == -ENOMEM)
        return rc; /* the stream is still in step */
    if (c->reconnect) {
        if (c->handshaking)
            return rc;
        fb_client_conn_lost(c);
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
        rc = w->conn_code ? fb_client_proto_rc(w->conn_code) : -ECONNRESET;
    return rc;
}

/* Writes what is buffered and reads answers until w is satisfied, on
 * the current connection. */
int fb_client_pump_once(struct fidbus_client *c, struct fb_wait *w, int64_t deadline)
{
    if (c->dead)
        return c->dead;
    for (;;) {
        int rc = drain_frames(c, w);
        if (rc < 0)
            return client_fail(c, rc);
        if (w->done || w->served || w->woken)
            return 0; /* a serve loop answers a batch of CALLs at a time */
        bool want_out = c->out_sent < c->out.len;
        if (!want_out && w->kind == FB_WAIT_NONE)
            return 0;

        struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN},
                                {.fd = w->wake_fd, .events = POLLIN}};
        if (want_out)
            pfd[0].events |= POLLOUT;
        int n = poll(pfd, w->kind == FB_WAIT_SERVE ? 2 : 1, remaining(deadline));
        if (n > 0 && w->kind == FB_WAIT_SERVE && pfd[1].revents)
            w->woken = true;

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
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            rc = read_some(c);
            if (rc == -ECONNRESET)
                return closed(c, w);
            if (rc < 0)
                return client_fail(c, rc);
        }
        if (want_out && (pfd[0].revents & POLLOUT)) {
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

/* ------------------------------------------------------------ sending */

/* Appends one frame to out; *at (may be NULL) gets where it starts. */
static int enqueue_at(struct fidbus_client *c, const struct fidbus_msg_out *o, size_t *at)
{
    /* A reconnecting client drops only whole frames from the front, so
     * the buffer always starts at a frame (see fb_client_conn_lost). */
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

int fb_client_enqueue(struct fidbus_client *c, const struct fidbus_msg_out *o)
{
    return enqueue_at(c, o, NULL);
}

int fb_client_enqueue_raw(struct fidbus_client *c, const uint8_t *frame, size_t len)
{
    size_t from = c->reconnect ? c->out_frame : c->out_sent;
    if (from && c->out_sent < c->out.len) {
        memmove(c->out.data, c->out.data + from, c->out.len - from);
        c->out.len -= from;
        c->out_sent -= from;
        c->out_frame = 0;
    }
    return fidbus_buf_append(&c->out, frame, len) == 0 ? 0 : -ENOMEM;
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
        return fb_client_pump(c, &w, deadline_in(c->timeout_ms));
    }
    return fidbus_flush(c);
}

int fb_client_wait_seq(struct fidbus_client *c, struct fb_wait *w, uint64_t seq,
                       uint64_t want_type)
{
    w->kind = FB_WAIT_SEQ;
    w->seq = seq;
    w->want_type = want_type;
    return fb_client_pump(c, w, deadline_in(c->timeout_ms));
}

static struct fidbus_client *client_free(struct fidbus_client *c)
{
    if (!c)
        return NULL;
    fb_serve_free(c);
    if (c->fd >= 0)
        close(c->fd);
    fidbus_frame_reader_destroy(&c->rd);
    fidbus_buf_free(&c->out);
    fb_pending_free(&c->pend);
    fb_answers_free(&c->kept);
    free(c->name);
    if (c->key) {
        explicit_bzero(c->key, c->key_len);
        free(c->key);
    }
    free(c);
    return NULL;
}

/* fidbus_connect_error's text: the client it came from is gone by then. */
static _Thread_local char connect_error[FB_LAST_ERROR_MAX];

const char *fidbus_connect_error(void)
{
    return connect_error;
}

int fidbus_client_connect(struct fidbus_client **out, const char *addr,
                          const struct fidbus_client_opts *opts)
{
    connect_error[0] = '\0';
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
    c->mp = &c->msg;
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
    rc = opts ? fb_client_handshake(c, opts->name, opts->key, opts->key_len, deadline)
              : fb_client_handshake(c, NULL, NULL, 0, deadline);
    if (rc == 0 && opts && opts->reconnect_max_ms)
        rc = fb_client_reconnect_setup(c, &a, opts);
    if (rc < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    if (fidbus_error_code(rc))
        memcpy(connect_error, c->last_error, sizeof connect_error);
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
            (void)fb_client_pump(c, &w, deadline_in(c->timeout_ms));
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
    fb_client_reconnect_if_due(c);
    int rc = enqueue_publish(c, false, 0, 0, event, tags, ntags, payload, payload_len);
    return rc < 0 ? rc : maybe_send(c);
}

int fidbus_publish_seq(struct fidbus_client *c, uint64_t seq, uint32_t flags,
                       const char *event, const struct fidbus_tag *tags, size_t ntags,
                       const uint8_t *payload, size_t payload_len)
{
    if (!c)
        return -EINVAL;
    fb_client_reconnect_if_due(c);
    int rc =
        enqueue_publish(c, true, seq, flags, event, tags, ntags, payload, payload_len);
    return rc < 0 ? rc : maybe_send(c);
}

int fidbus_flush(struct fidbus_client *c)
{
    if (!c)
        return -EINVAL;
    struct fb_wait w = {.kind = FB_WAIT_NONE};
    fb_client_probe(c);
    return fb_client_pump(c, &w, deadline_in(c->timeout_ms));
}

int fidbus_publish_ack(struct fidbus_client *c, const char *event,
                       const struct fidbus_tag *tags, size_t ntags,
                       const uint8_t *payload, size_t payload_len, uint64_t *result)
{
    if (!c)
        return -EINVAL;
    if (result)
        *result = 0;
    fb_client_probe(c);
    uint64_t seq = fb_client_next_seq(c);
    int rc = enqueue_publish(c, true, seq, FIDBUS_FLAG_ACK, event, tags, ntags, payload,
                             payload_len);
    if (rc < 0)
        return rc;
    struct fb_wait w = {0};
    rc = fb_client_wait_seq(c, &w, seq, FIDBUS_MSG_ACK);
    if (rc < 0)
        return rc;
    if (result && w.has_result)
        *result = w.ans.result; /* HANDLER_FAILED counts successes too */
    return w.ans.type == FIDBUS_MSG_ACK ? 0 : fb_client_proto_rc(w.ans.code);
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
