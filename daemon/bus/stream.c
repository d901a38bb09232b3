/*
 * The framed stream socket shared by bus and control connections: reads
 * into the frame reader, writes answers with try-write-then-write, and
 * the flush-shutdown-drain-close sequence after a protocol error. See
 * stream.h for the rules; the owner decides what frames mean and when
 * input is held back.
 */
#include "bus/stream.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>

#include "base/log.h"
#include "build_config.h"

#define FB_ERR_RESERVE 4200u /* an ERROR frame with a 4 KiB message */

int fb_stream_init(struct fb_stream *s, uv_loop_t *loop, bool is_tcp, size_t max_frame,
                   size_t rd_cap, const struct fb_stream_ops *ops)
{
    s->ops = ops;
    int rc = fidbus_frame_reader_init(&s->rd, max_frame, rd_cap);
    if (rc < 0)
        return rc;
    rc = is_tcp ? uv_tcp_init(loop, &s->u.tcp) : uv_pipe_init(loop, &s->u.pipe, 0);
    if (rc < 0) {
        fb_error("%scannot adopt a client socket: %s", ops->who, uv_strerror(rc));
        fidbus_frame_reader_destroy(&s->rd);
        return rc;
    }
    s->u.h.data = s;
    return 0;
}

int fb_stream_open(struct fb_stream *s, int fd, bool is_tcp)
{
    int rc = is_tcp ? uv_tcp_open(&s->u.tcp, fd) : uv_pipe_open(&s->u.pipe, fd);
    if (rc < 0) {
        fb_error("%scannot adopt a client socket: %s", s->ops->who, uv_strerror(rc));
        return rc;
    }
    if (is_tcp)
        uv_tcp_nodelay(&s->u.tcp, 1);
    return 0;
}

void fb_stream_destroy(struct fb_stream *s)
{
    fidbus_frame_reader_destroy(&s->rd);
    fidbus_buf_free(&s->out);
    fidbus_buf_free(&s->wbuf);
}

static void on_close(uv_handle_t *h)
{
    struct fb_stream *s = h->data;
    s->ops->closed(s);
}

void fb_stream_close(struct fb_stream *s)
{
    if (s->flags & FB_S_CLOSING)
        return;
    s->flags |= FB_S_CLOSING;
    s->flags &= ~FB_S_READING;
    uv_close(&s->u.h, on_close);
}

void fb_stream_oom(struct fb_stream *s)
{
    fb_error("%sout of memory answering a client; closing it", s->ops->who);
    fb_stream_close(s);
}

/* ------------------------------------------------------------- answers */

int fb_stream_send_hello(struct fb_stream *s)
{
    return fb_stream_send_hello_nonce(s, NULL, 0);
}

int fb_stream_send_hello_nonce(struct fb_stream *s, const uint8_t *nonce,
                               size_t nonce_len)
{
    size_t cap;
    uint8_t *p = fb_stream_space(s, 128 + nonce_len, &cap);
    size_t n =
        p ? fidbus_enc_hello(p, cap, "fidbusd/" FIDBUS_VERSION, nonce, nonce_len) : 0;
    if (!n)
        return -ENOMEM;
    s->out.len += n;
    s->frames_out++;
    return 0;
}

void fb_stream_send_error(struct fb_stream *s, bool has_seq, uint64_t seq, int code,
                          bool with_result, uint64_t result, const char *fmt, ...)
{
    if (s->flags & (FB_S_CLOSING | FB_S_PEER_GONE))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t cap;
    uint8_t *p = fb_stream_space(s, FB_ERR_RESERVE, &cap);
    size_t n = p ? fidbus_enc_error(p, cap, has_seq, seq, (uint64_t)code, msg,
                                    with_result, result)
                 : 0;
    if (!n) {
        fb_stream_oom(s);
        return;
    }
    s->out.len += n;
    s->frames_out++;
}

/* ------------------------------------------------ error close: drain */

static void on_drain_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fb_stream *s = h->data;
    /* discard: reuse the reader's buffer from the start */
    buf->base = (char *)s->rd.buf;
    buf->len = s->rd.cap;
}

static void on_drain_read(uv_stream_t *us, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0)
        fb_stream_close(us->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct fb_stream *s = req->data;
    if (s->flags & FB_S_CLOSING)
        return;
    if (status < 0) {
        fb_stream_close(s);
        return;
    }
    /* Keep reading (and discarding) until the client closes; see stream.h. */
    s->flags |= FB_S_DRAINING;
    uv_read_stop(&s->u.s);
    s->rd.start = s->rd.end = 0;
    if (uv_read_start(&s->u.s, on_drain_alloc, on_drain_read) < 0)
        fb_stream_close(s);
}

/* -------------------------------------------------------------- writes */

static void after_flush(struct fb_stream *s)
{
    if (s->flags & (FB_S_CLOSING | FB_S_DRAINING | FB_S_WRITING) || s->out.len)
        return;
    bool owes = s->ops->owes && s->ops->owes(s);
    if ((s->flags & FB_S_EOF) && (!owes || (s->flags & FB_S_PEER_GONE))) {
        /* Input ended and nothing more can be answered: see stream.h. */
        fb_stream_close(s);
        return;
    }
    if (owes)
        return;
    if (s->flags & FB_S_FLUSH_CLOSE) {
        s->sreq.data = s;
        if (uv_shutdown(&s->sreq, &s->u.s, on_shutdown) < 0)
            fb_stream_close(s);
        s->flags |= FB_S_DRAINING;
    } else if (s->ops->idle) {
        s->ops->idle(s);
    }
}

/* A write failed: drop answers, keep reading (see stream.h), unless the
 * stream was only waiting to close anyway. */
static void peer_gone(struct fb_stream *s)
{
    s->out.len = 0;
    s->wbuf.len = 0;
    if (s->flags & (FB_S_FLUSH_CLOSE | FB_S_DRAINING | FB_S_EOF)) {
        fb_stream_close(s);
        return;
    }
    s->flags |= FB_S_PEER_GONE;
}

static void on_write(uv_write_t *req, int status)
{
    struct fb_stream *s = req->data;
    s->flags &= ~FB_S_WRITING;
    s->wbuf.len = 0;
    /* On uv_close a pending write ends with UV_ECANCELED before the close
     * callback, so s is still valid here. */
    if (s->flags & FB_S_CLOSING)
        return;
    if (status < 0) {
        peer_gone(s);
        if (s->flags & FB_S_CLOSING)
            return;
    }
    if (s->ops->written && s->ops->written(s))
        return;
    fb_stream_flush(s);
}

void fb_stream_flush(struct fb_stream *s)
{
    if (s->flags & FB_S_PEER_GONE)
        s->out.len = 0;
    if (s->flags & (FB_S_WRITING | FB_S_CLOSING) || s->out.len == 0) {
        after_flush(s);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)s->out.data, (unsigned)s->out.len);
    int n = uv_try_write(&s->u.s, &b, 1);
    if (n >= 0 || n == UV_EAGAIN)
        s->bytes_out += s->out.len; /* now or by the uv_write below */
    if (n == (int)s->out.len) {
        s->out.len = 0;
        after_flush(s);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        peer_gone(s);
        after_flush(s);
        return;
    }
    if (n < 0)
        n = 0;
    /* The rest goes through uv_write; new answers collect in out meanwhile. */
    struct fidbus_buf tmp = s->wbuf;
    s->wbuf = s->out;
    s->out = tmp;
    s->out.len = 0;
    b = uv_buf_init((char *)s->wbuf.data + n, (unsigned)(s->wbuf.len - (size_t)n));
    s->wreq.data = s;
    if (uv_write(&s->wreq, &s->u.s, &b, 1, on_write) < 0) {
        peer_gone(s);
        after_flush(s);
        return;
    }
    s->flags |= FB_S_WRITING;
}

/* --------------------------------------------------------------- reads */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fb_stream *s = h->data;
    uint8_t *p;
    size_t len;
    if (fidbus_frame_reader_space(&s->rd, &p, &len) < 0) {
        buf->base = NULL;
        buf->len = 0; /* libuv reports UV_ENOBUFS */
        return;
    }
    buf->base = (char *)p;
    buf->len = len;
}

/* Has the peer closed both directions (stream.h, "End of input")? */
static bool peer_hung_up(struct fb_stream *s)
{
    uv_os_fd_t fd;
    if (uv_fileno(&s->u.h, &fd) < 0)
        return true;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

static void on_read(uv_stream_t *us, ssize_t nread, const uv_buf_t *buf)
{
    struct fb_stream *s = us->data;
    if (nread > 0) {
        fidbus_frame_reader_commit(&s->rd, (size_t)nread);
        s->bytes_in += (uint64_t)nread;
        s->ops->input(s);
        return;
    }
    if (nread == 0)
        return;
    /* Everything read has been handled (reading stops while the owner
     * holds frames back). At EOF the answers owed still go out. */
    if (nread == UV_EOF && !(s->flags & FB_S_PEER_GONE) && !peer_hung_up(s)) {
        s->flags |= FB_S_EOF;
        fb_stream_read_stop(s);
        fb_stream_flush(s);
        return;
    }
    if (nread == UV_ENOBUFS)
        fb_error("%sout of memory reading from a client; closing it", s->ops->who);
    fb_stream_close(s);
}

void fb_stream_read_start(struct fb_stream *s)
{
    if (s->flags & FB_S_EOF)
        return;
    if (uv_read_start(&s->u.s, on_alloc, on_read) < 0) {
        fb_stream_close(s);
        return;
    }
    s->flags |= FB_S_READING;
}

void fb_stream_read_stop(struct fb_stream *s)
{
    if (s->flags & FB_S_READING) {
        uv_read_stop(&s->u.s);
        s->flags &= ~FB_S_READING;
    }
}
