/*
 * lib/client_reconnect.c -- the bookkeeping behind a reconnecting client
 * (fidbus_client_opts.reconnect_max_ms): the queue of acked-mode PUBLISH
 * frames still waiting for their answer, the backoff between
 * connection attempts, and the connection loop around lib/client.c's
 * fb_client_pump_once() that reconnects when the connection is lost.
 *
 * A pending frame is kept byte-exact, seq included, so a re-send after a
 * reconnection is the same message the daemon may already have handled:
 * that is what makes delivery "at least once" rather than "twice with
 * different seqs". The queue is an array used as a FIFO: answers come
 * mostly in send order, so answering searches from the oldest live entry
 * and usually stops at the first; answered slots at the front are skipped
 * and the array is compacted once they are half of it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fidbus/client.h>

#include "client_private.h"
#include "client_serve.h"

#define FB_RECONNECT_BUFFER_DEFAULT (1024u * 1024u)

int fb_pending_add(struct fb_pending *p, uint64_t seq, const uint8_t *frame, size_t len)
{
    if (p->len == p->cap) {
        if (p->head > 0) {
            /* compact: the front is answered entries only */
            memmove(p->v, p->v + p->head, (p->len - p->head) * sizeof(*p->v));
            p->len -= p->head;
            p->head = 0;
        }
        if (p->len == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 64;
            struct fb_pending_frame *v = realloc(p->v, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            p->v = v;
            p->cap = cap;
        }
    }
    uint8_t *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, frame, len);
    p->v[p->len++] = (struct fb_pending_frame){.seq = seq, .frame = copy, .len = len};
    p->count++;
    p->bytes += len;
    return 0;
}

bool fb_pending_answer(struct fb_pending *p, uint64_t seq)
{
    for (size_t i = p->head; i < p->len; i++) {
        struct fb_pending_frame *f = &p->v[i];
        if (!f->frame || f->seq != seq)
            continue;
        free(f->frame);
        f->frame = NULL;
        p->count--;
        p->bytes -= f->len;
        while (p->head < p->len && !p->v[p->head].frame)
            p->head++;
        if (p->head == p->len)
            p->head = p->len = 0;
        return true;
    }
    return false;
}

int fb_pending_append_all(const struct fb_pending *p, struct fidbus_buf *out)
{
    if (fidbus_buf_reserve(out, p->bytes) != 0)
        return -ENOMEM;
    for (size_t i = p->head; i < p->len; i++)
        if (p->v[i].frame)
            fidbus_buf_append(out, p->v[i].frame, p->v[i].len); /* reserved above */
    return 0;
}

void fb_pending_free(struct fb_pending *p)
{
    for (size_t i = p->head; i < p->len; i++)
        free(p->v[i].frame);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

unsigned fb_backoff_next(unsigned cur_ms, unsigned max_ms, uint64_t *rng,
                         unsigned *delay_ms)
{
    unsigned next =
        cur_ms ? (cur_ms > max_ms / 2 ? max_ms : cur_ms * 2) : FB_BACKOFF_FIRST_MS;
    if (next > max_ms)
        next = max_ms;
    /* xorshift64: plenty for spreading retries, no global state */
    uint64_t x = *rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    unsigned half = next / 2;
    *delay_ms = next - half + (unsigned)(x % ((uint64_t)half + 1));
    return next;
}

/* ------------------------------------------------ the connection loop */

/* Remembers what later handshakes need. 0 or -ENOMEM. */
int fb_client_reconnect_setup(struct fidbus_client *c, const struct fb_addr *a,
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
    struct fidbus_msg *m = c->mp;
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
void fb_client_conn_lost(struct fidbus_client *c)
{
    close(c->fd);
    c->fd = -1;
    size_t off = c->out_frame, keep = 0;
    if (off < c->out.len && c->out_sent > off)
        off += fb_client_frame_size(c, off); /* partly written: lost with the socket */
    while (off < c->out.len) {
        size_t n = fb_client_frame_size(c, off);
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
    if (c->serve)
        fb_serve_conn_lost(c);
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
        rc = fb_client_handshake(c, c->name, c->key, c->key_len, deadline);
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
            /* A member's functions come back before anything re-sent is
             * handled: REGISTERs are the first frames after the handshake. */
            return c->serve ? fb_serve_reconnected(c) : 0;
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
void fb_client_reconnect_if_due(struct fidbus_client *c)
{
    if (c->reconnect && c->fd < 0 && now_ms() >= c->next_attempt)
        (void)reconnect_once(c);
}

/* Connects again, retrying with backoff until the deadline. */
int fb_client_wait_connected(struct fidbus_client *c, int64_t deadline)
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
void fb_client_probe(struct fidbus_client *c)
{
    if (!c->reconnect || c->fd < 0 || fidbus_frame_reader_pending(&c->rd))
        return;
    uint8_t b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        fb_client_conn_lost(c);
}

int fb_client_pump(struct fidbus_client *c, struct fb_wait *w, int64_t deadline)
{
    if (!c->reconnect || c->handshaking)
        return fb_client_pump_once(c, w, deadline);
    for (;;) {
        if (c->fd < 0) {
            /* A serve loop waits for the reconnection itself, so that
             * fidbus_serve_stop can interrupt it (lib/client_serve.c). */
            if (w->no_reconnect || w->kind == FB_WAIT_SERVE)
                return 0;
            int rc = fb_client_wait_connected(c, deadline);
            if (rc < 0)
                return rc;
            if (w->is_ping) {
                struct fidbus_msg_out o = {
                    .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
                    .type = FIDBUS_MSG_PING,
                    .seq = w->seq,
                };
                if ((rc = fb_client_enqueue(c, &o)) < 0)
                    return rc;
            }
        }
        int rc = fb_client_pump_once(c, w, deadline);
        if (rc != FB_LOST)
            return rc;
        /* A REQUEST may have been applied: the caller must decide. */
        if (w->kind == FB_WAIT_SEQ && w->want_type == FIDBUS_MSG_REPLY)
            return -ECONNRESET;
    }
}
