/*
 * Bus connections: read frames, decode, dispatch, answer.
 *
 * The read path is allocation-free: libuv reads straight into the frame
 * reader's buffer, each whole frame is decoded in place into the worker's
 * scratch message, and the event handed to handlers points into that
 * buffer. Answers (ACK, ERROR) are encoded into one output buffer per
 * connection and written once per read batch, usually by a single
 * uv_try_write: one syscall for many acks.
 *
 * Back-pressure: a client that does not read its answers cannot make the
 * daemon buffer without bound. Once FB_OUT_HIGH bytes of answers are
 * pending, the connection stops decoding frames and stops reading until
 * the write drains; the unread frames stay in the reader's buffer.
 */
#include "conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include "build_config.h"
#include "dispatch.h"
#include "log.h"
#include "pool.h"

#define FB_OUT_HIGH (256u * 1024u)
/* Events with blocking calls in flight, per connection, before its input
 * is held back: bounds the event copies one client can park in the pool. */
#define FB_CONN_MAX_WAITERS 1024u
#define FB_ERR_RESERVE 4200u /* an ERROR frame with a 4 KiB message */

enum {
    C_READING = 1u << 0,     /* uv_read_start is in effect */
    C_PAUSED = 1u << 1,      /* output above FB_OUT_HIGH: input on hold */
    C_WRITING = 1u << 2,     /* wbuf is being written */
    C_FLUSH_CLOSE = 1u << 3, /* protocol error: send what is queued, then close */
    C_STOPPING = 1u << 4,    /* daemon shutdown: no more input */
    C_CLOSING = 1u << 5,     /* uv_close called: no more output either */
    C_DRAINING = 1u << 6,    /* after FLUSH_CLOSE: discarding input until EOF */
    C_IN_INPUT = 1u << 7,    /* process_input is on the stack */
};

struct fb_ping {
    struct fb_ping *next;
    uint64_t seq;
    uint64_t barrier; /* waiters that must finish first */
};

struct fb_conn {
    struct fb_worker *w;
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } u;
    struct fidbus_frame_reader rd;
    struct fidbus_buf out;  /* answers not yet handed to the kernel */
    struct fidbus_buf wbuf; /* answers in an uv_write */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    unsigned flags;
    unsigned refs; /* the handle + unfinished waiters */
    uint64_t waiters_created;
    uint64_t waiters_finished;
    struct fb_waiter *wq_head, *wq_tail;
    struct fb_ping *ping_head, *ping_tail;
    struct fb_conn *prev, *next;
};

static void conn_close(struct fb_conn *c);
static void conn_flush(struct fb_conn *c);
static void process_input(struct fb_conn *c, bool ignore_cap);

static void conn_unref(struct fb_conn *c)
{
    if (--c->refs)
        return;
    fidbus_frame_reader_destroy(&c->rd);
    fidbus_buf_free(&c->out);
    fidbus_buf_free(&c->wbuf);
    free(c);
}

static bool conn_idle(const struct fb_conn *c)
{
    return !c->wq_head && !(c->flags & C_WRITING) && c->out.len == 0;
}

/* ------------------------------------------------------------ answers */

static uint8_t *out_space(struct fb_conn *c, size_t need, size_t *cap)
{
    if (fidbus_buf_reserve(&c->out, need) < 0)
        return NULL;
    *cap = c->out.cap - c->out.len;
    return c->out.data + c->out.len;
}

static void send_ack(struct fb_conn *c, uint64_t seq, uint64_t result)
{
    if (c->flags & C_CLOSING)
        return;
    size_t cap;
    uint8_t *p = out_space(c, 32, &cap);
    size_t n = p ? fidbus_enc_ack(p, cap, seq, result) : 0;
    if (!n) {
        fb_error("out of memory answering a client; closing it");
        conn_close(c);
        return;
    }
    c->out.len += n;
}

static void send_error(struct fb_conn *c, bool has_seq, uint64_t seq, int code,
                       bool with_result, uint64_t result, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void send_error(struct fb_conn *c, bool has_seq, uint64_t seq, int code,
                       bool with_result, uint64_t result, const char *fmt, ...)
{
    if (c->flags & C_CLOSING)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t cap;
    uint8_t *p = out_space(c, FB_ERR_RESERVE, &cap);
    size_t n = p ? fidbus_enc_error(p, cap, has_seq, seq, (uint64_t)code, msg,
                                    with_result, result)
                 : 0;
    if (!n) {
        fb_error("out of memory answering a client; closing it");
        conn_close(c);
        return;
    }
    c->out.len += n;
}

/* Answer for an acked event once all its handlers have returned. A call
 * refused because the blocking pool is full is BUSY (the daemon shed it)
 * unless a handler also failed. */
static void send_outcome(struct fb_conn *c, bool has_seq, uint64_t seq, uint32_t ok,
                         uint32_t failed, uint32_t busy)
{
    if (!failed && !busy)
        send_ack(c, seq, ok);
    else if (!failed)
        send_error(c, has_seq, seq, FIDBUS_BUSY, true, ok,
                   "blocking pool full: %u of %u handler calls refused", busy, ok + busy);
    else
        send_error(c, has_seq, seq, FIDBUS_HANDLER_FAILED, true, ok,
                   "%u of %u handler calls failed", failed + busy, ok + failed + busy);
}

static bool input_blocked(const struct fb_conn *c)
{
    return c->out.len >= FB_OUT_HIGH ||
           c->waiters_created - c->waiters_finished >= FB_CONN_MAX_WAITERS;
}

/* Input was held back; resume it if what held it back has cleared. */
static void maybe_unpause(struct fb_conn *c)
{
    if ((c->flags & C_PAUSED) && !(c->flags & C_IN_INPUT) && !input_blocked(c)) {
        c->flags &= ~C_PAUSED;
        process_input(c, false);
    }
}

/* -------------------------------------------------------------- writes */

static void on_close(uv_handle_t *h)
{
    struct fb_conn *c = h->data;
    struct fb_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&w->nconns, 1, memory_order_relaxed);
    while (c->ping_head) {
        struct fb_ping *p = c->ping_head;
        c->ping_head = p->next;
        free(p);
    }
    conn_unref(c);
    fb_worker_maybe_finish(w);
}

static void conn_close(struct fb_conn *c)
{
    if (c->flags & C_CLOSING)
        return;
    c->flags |= C_CLOSING;
    c->flags &= ~C_READING;
    uv_close(&c->u.h, on_close);
}

static void on_drain_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fb_conn *c = h->data;
    /* discard: reuse the reader's buffer from the start */
    buf->base = (char *)c->rd.buf;
    buf->len = c->rd.cap;
}

static void on_drain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0)
        conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct fb_conn *c = req->data;
    if (c->flags & C_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Keep reading (and discarding) until the client closes: closing a TCP
     * socket with unread input sends a RST that can destroy the ERROR we
     * just wrote before the client reads it. */
    c->flags |= C_DRAINING;
    uv_read_stop(&c->u.s);
    c->rd.start = c->rd.end = 0;
    if (uv_read_start(&c->u.s, on_drain_alloc, on_drain_read) < 0)
        conn_close(c);
}

static void after_flush(struct fb_conn *c)
{
    if (c->flags & (C_CLOSING | C_DRAINING) || !conn_idle(c))
        return;
    if (c->flags & C_FLUSH_CLOSE) {
        c->sreq.data = c;
        if (uv_shutdown(&c->sreq, &c->u.s, on_shutdown) < 0)
            conn_close(c);
        c->flags |= C_DRAINING;
    } else if (c->flags & C_STOPPING) {
        conn_close(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct fb_conn *c = req->data;
    c->flags &= ~C_WRITING;
    c->wbuf.len = 0;
    if (c->flags & C_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->flags & C_PAUSED) {
        maybe_unpause(c);
        if (!(c->flags & C_PAUSED))
            return; /* process_input flushed and restarted reading */
    }
    conn_flush(c);
}

static void conn_flush(struct fb_conn *c)
{
    if (c->flags & (C_WRITING | C_CLOSING) || c->out.len == 0) {
        after_flush(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    int n = uv_try_write(&c->u.s, &b, 1);
    if (n == (int)c->out.len) {
        c->out.len = 0;
        after_flush(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n < 0)
        n = 0;
    /* The rest goes through uv_write; new answers collect in out meanwhile. */
    struct fidbus_buf tmp = c->wbuf;
    c->wbuf = c->out;
    c->out = tmp;
    c->out.len = 0;
    b = uv_buf_init((char *)c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, &c->u.s, &b, 1, on_write) < 0) {
        conn_close(c);
        return;
    }
    c->flags |= C_WRITING;
}

/* ------------------------------------------------------------- waiters */

static struct fb_waiter *waiter_new(void *arg)
{
    struct fb_conn *c = arg;
    struct fb_waiter *wt = calloc(1, sizeof *wt);
    if (!wt)
        return NULL;
    wt->conn = c;
    if (c->wq_tail)
        c->wq_tail->next = wt;
    else
        c->wq_head = wt;
    c->wq_tail = wt;
    c->waiters_created++;
    c->refs++;
    c->w->nwaiters++;
    return wt;
}

struct fb_worker *fb_waiter_worker(const struct fb_waiter *wt)
{
    return wt->conn->w;
}

static void release_pings(struct fb_conn *c)
{
    while (c->ping_head && c->ping_head->barrier <= c->waiters_finished) {
        struct fb_ping *p = c->ping_head;
        c->ping_head = p->next;
        if (!c->ping_head)
            c->ping_tail = NULL;
        send_ack(c, p->seq, 0);
        free(p);
    }
}

static void waiter_finish(struct fb_conn *c, struct fb_waiter *wt)
{
    wt->done = true;
    if (wt->ack)
        send_outcome(c, wt->has_seq, wt->seq, wt->ok, wt->failed, wt->busy);
    unsigned popped = 0;
    while (c->wq_head && c->wq_head->done) {
        struct fb_waiter *h = c->wq_head;
        c->wq_head = h->next;
        if (!c->wq_head)
            c->wq_tail = NULL;
        free(h);
        c->w->nwaiters--;
        c->waiters_finished++;
        popped++;
    }
    release_pings(c);
    c->refs++; /* keep c while it may resume input below */
    conn_flush(c);
    while (popped--)
        conn_unref(c);
    if (!(c->flags & C_CLOSING))
        maybe_unpause(c);
    struct fb_worker *w = c->w;
    conn_unref(c);
    fb_worker_maybe_finish(w);
}

void fb_conn_job_done(struct fb_job *j)
{
    struct fb_waiter *wt = j->waiter;
    if (j->rc == 0)
        wt->ok++;
    else
        wt->failed++;
    free(j);
    if (--wt->pending == 0)
        waiter_finish(wt->conn, wt);
}

/* -------------------------------------------------------------- frames */

static void handle_publish(struct fb_conn *c, const struct fb_route_table *t,
                           struct fidbus_msg *m, uint64_t now)
{
    struct fb_worker *w = c->w;
    fb_count(&w->counters->received, 1);
    bool has_seq = fidbus_msg_has(m, FIDBUS_K_SEQ);
    bool ack = (m->flags & FIDBUS_FLAG_ACK) != 0;
    struct fidbus_event ev = {
        .id = m->event,
        .tags = m->ntags ? m->tags : NULL,
        .ntags = m->ntags,
        .payload = m->payload.len ? m->payload.ptr : NULL,
        .payload_len = m->payload.len,
        .seq = has_seq ? m->seq : 0,
        .recv_ns = now,
    };
    struct fb_outcome out;
    struct fb_waiter *before = c->wq_tail;
    fb_dispatch(w->d, t, &ev, m->event_len, waiter_new, c, &out);
    if (!out.routed) {
        if (ack)
            send_error(c, has_seq, m->seq, FIDBUS_NO_ROUTE, false, 0,
                       "no route matches event '%s'", m->event);
        return;
    }
    if (c->wq_tail != before) {
        /* Blocking calls are in flight: the waiter answers when they end.
         * Completions run on this thread, so none can have arrived yet. */
        struct fb_waiter *wt = c->wq_tail;
        wt->ack = ack;
        wt->has_seq = has_seq;
        wt->seq = ev.seq;
        wt->ok += out.ok;
        wt->failed += out.failed + out.refused;
        wt->busy += out.busy;
        if (wt->pending == 0) /* every blocking call was refused */
            waiter_finish(c, wt);
        return;
    }
    if (ack)
        send_outcome(c, has_seq, ev.seq, out.ok, out.failed + out.refused, out.busy);
}

static void handle_ping(struct fb_conn *c, struct fidbus_msg *m)
{
    uint64_t seq = fidbus_msg_has(m, FIDBUS_K_SEQ) ? m->seq : 0;
    if (c->waiters_finished == c->waiters_created) {
        send_ack(c, seq, 0);
        return;
    }
    struct fb_ping *p = malloc(sizeof *p);
    if (!p) {
        fb_error("out of memory queueing a PING; closing the client");
        conn_close(c);
        return;
    }
    p->next = NULL;
    p->seq = seq;
    p->barrier = c->waiters_created;
    if (c->ping_tail)
        c->ping_tail->next = p;
    else
        c->ping_head = p;
    c->ping_tail = p;
}

static void handle_frame(struct fb_conn *c, const struct fb_route_table *t,
                         const uint8_t *body, size_t len, uint64_t now)
{
    struct fb_worker *w = c->w;
    struct fidbus_msg *m = w->msg;
    int rc = fidbus_msg_decode(body, len, w->d->cfg->max_depth, m);
    if (rc == 0)
        rc = fidbus_msg_check(m);
    if (rc) {
        fb_count(&w->counters->bad_frames, 1);
        send_error(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq, rc, false, 0, "%s",
                   m->why ? m->why : fidbus_code_name(rc));
        return;
    }
    switch (m->type) {
    case FIDBUS_MSG_PUBLISH:
        handle_publish(c, t, m, now);
        return;
    case FIDBUS_MSG_PING:
        handle_ping(c, m);
        return;
    case FIDBUS_MSG_AUTH:
        return; /* this listener requires no authentication */
    case FIDBUS_MSG_REQUEST:
        fb_count(&w->counters->bad_frames, 1);
        send_error(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq, FIDBUS_UNSUPPORTED, false,
                   0, "control requests go to the control socket, not the bus");
        return;
    default:
        fb_count(&w->counters->bad_frames, 1);
        send_error(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq, FIDBUS_UNSUPPORTED, false,
                   0, "message type %llu is not accepted from a client",
                   (unsigned long long)m->type);
        return;
    }
}

static void process_input(struct fb_conn *c, bool ignore_cap)
{
    struct fb_worker *w = c->w;
    if (c->flags & (C_CLOSING | C_FLUSH_CLOSE))
        return;
    uint64_t now = fb_now_ns();
    c->flags |= C_IN_INPUT;
    urcu_memb_read_lock();
    const struct fb_route_table *t = fb_routes_deref(&w->d->table);
    for (;;) {
        if (!ignore_cap && input_blocked(c)) {
            c->flags |= C_PAUSED;
            break;
        }
        const uint8_t *body;
        size_t len;
        int rc = fidbus_frame_next(&c->rd, &body, &len);
        if (rc == 1) {
            handle_frame(c, t, body, len, now);
            if (c->flags & (C_CLOSING | C_FLUSH_CLOSE))
                break;
            continue;
        }
        if (rc == 0)
            break;
        /* A bad length cannot be resynchronised: answer and close. */
        fb_count(&w->counters->bad_frames, 1);
        if (rc == FIDBUS_TOO_LARGE)
            send_error(c, false, 0, rc, false, 0,
                       "frame longer than max_frame (%u bytes); closing",
                       (unsigned)w->d->cfg->max_frame);
        else
            send_error(c, false, 0, FIDBUS_MALFORMED, false, 0,
                       "zero-length frame; closing");
        c->flags |= C_FLUSH_CLOSE;
        break;
    }
    FB_ROUTES_READ_DONE();
    urcu_memb_read_unlock();
    c->flags &= ~C_IN_INPUT;

    bool want_read = !(c->flags & (C_PAUSED | C_FLUSH_CLOSE | C_STOPPING | C_CLOSING));
    if (!want_read && (c->flags & C_READING)) {
        uv_read_stop(&c->u.s);
        c->flags &= ~C_READING;
    }
    conn_flush(c);
    if (want_read && !(c->flags & (C_READING | C_CLOSING)))
        fb_conn_resume(c);
}

/* --------------------------------------------------------------- reads */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fb_conn *c = h->data;
    uint8_t *p;
    size_t len;
    if (fidbus_frame_reader_space(&c->rd, &p, &len) < 0) {
        buf->base = NULL;
        buf->len = 0; /* libuv reports UV_ENOBUFS */
        return;
    }
    buf->base = (char *)p;
    buf->len = len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fb_conn *c = s->data;
    if (nread > 0) {
        fidbus_frame_reader_commit(&c->rd, (size_t)nread);
        process_input(c, false);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS)
        fb_error("out of memory reading from a client; closing it");
    /* EOF or error: everything read has been handled. Answers still owed
     * (blocking calls) go nowhere; the waiters finish quietly. */
    conn_close(c);
}

void fb_conn_resume(struct fb_conn *c)
{
    if (uv_read_start(&c->u.s, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    c->flags |= C_READING;
}

/* ------------------------------------------------------------ lifetime */

int fb_conn_new(struct fb_worker *w, int fd, bool is_tcp)
{
    struct fb_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->w = w;
    c->refs = 1;
    int rc = fidbus_frame_reader_init(&c->rd, w->d->cfg->max_frame, 0);
    if (rc < 0) {
        free(c);
        close(fd);
        return rc;
    }
    rc =
        is_tcp ? uv_tcp_init(&w->loop, &c->u.tcp) : uv_pipe_init(&w->loop, &c->u.pipe, 0);
    if (rc < 0) {
        fb_error("cannot adopt a client socket: %s", uv_strerror(rc));
        fidbus_frame_reader_destroy(&c->rd);
        free(c);
        close(fd);
        return rc;
    }
    c->u.h.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->nconns, 1, memory_order_relaxed);
    rc = is_tcp ? uv_tcp_open(&c->u.tcp, fd) : uv_pipe_open(&c->u.pipe, fd);
    if (rc < 0) {
        fb_error("cannot adopt a client socket: %s", uv_strerror(rc));
        close(fd);
        conn_close(c);
        return rc;
    }
    if (is_tcp)
        uv_tcp_nodelay(&c->u.tcp, 1);

    size_t cap;
    uint8_t *p = out_space(c, 128, &cap);
    size_t n = p ? fidbus_enc_hello(p, cap, "fidbusd/" FIDBUS_VERSION, NULL, 0) : 0;
    if (!n) {
        conn_close(c);
        return -ENOMEM;
    }
    c->out.len += n;
    conn_flush(c);
    if (!(c->flags & C_CLOSING))
        fb_conn_resume(c);
    return 0;
}

void fb_conn_begin_stop(struct fb_conn *c)
{
    if (c->flags & C_CLOSING)
        return;
    c->flags |= C_STOPPING;
    if (c->flags & (C_FLUSH_CLOSE | C_DRAINING)) {
        conn_close(c);
        return;
    }
    if (c->flags & C_READING) {
        uv_read_stop(&c->u.s);
        c->flags &= ~C_READING;
    }
    /* Frames already read but held back by back-pressure are handled now. */
    if (c->flags & C_PAUSED) {
        c->flags &= ~C_PAUSED;
        process_input(c, true);
    }
    conn_flush(c);
}

void fb_conn_abort(struct fb_conn *c)
{
    conn_close(c);
}

struct fb_conn *fb_conn_next(struct fb_conn *c)
{
    return c->next;
}
