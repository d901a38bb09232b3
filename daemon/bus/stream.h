/*
 * A framed stream socket as the daemon serves it: the libuv handle, the
 * frame reader, and the output side both socket kinds share -- bus
 * connections (conn.c, on an I/O worker's loop) and control connections
 * (control.c, on the control thread's loop).
 *
 * Output: answers are encoded into `out` and handed to the kernel by
 * fb_stream_flush, usually with a single uv_try_write; whatever the kernel
 * does not take goes to one uv_write from `wbuf` (the two buffers swap), and
 * new answers collect in `out` meanwhile. Nothing is allocated per write.
 *
 * Peer gone: when a write fails (the client closed without reading its
 * answers), the stream drops answers from then on but keeps reading: every
 * frame the client sent before closing is still handled, and the handle
 * closes at EOF as usual. Closing on the write error would lose the events
 * still unread in the socket.
 *
 * End of input: EOF means the client has sent everything, not that it
 * stopped listening -- a client may shut down its write side and then
 * read its answers (shutdown(SHUT_WR)). Every frame read has been handled
 * by then (reading stops while the owner holds frames back), so the
 * stream stops reading, writes what is queued, waits for the answers the
 * owner still owes (ops->owes), and closes. Only if the peer has closed
 * both directions (poll reports POLLHUP: Unix sockets tell; a TCP peer's
 * full close looks like a half-close until a write fails) or a write
 * fails is there no one to answer, and the stream closes at once.
 *
 * Protocol error: the owner sets FB_S_FLUSH_CLOSE and flushes; once what
 * is queued is written (and the owner owes nothing more), the write side
 * is shut down and input is read and discarded until EOF, then the handle
 * closes. Closing a socket with unread input would send a reset that can
 * destroy the ERROR before the peer reads it.
 *
 * Lifetime: the stream is embedded in its owner. The handle, write and
 * shutdown requests and both buffers are in libuv's hands until the
 * handle's close callback, which calls ops->closed: only from there (or
 * later) may the owner free the memory, never from inside another
 * callback. fb_stream_destroy frees the buffers and the reader, not the
 * owner. Everything runs on the loop's thread.
 *
 * Flags: one word shared with the owner, which keeps its own bits at
 * FB_S_USER and above, so a single test covers both.
 */
#ifndef FB_STREAM_H
#define FB_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <fidbus/proto.h>

enum {
    FB_S_READING = 1u << 0,     /* uv_read_start is in effect */
    FB_S_WRITING = 1u << 1,     /* wbuf is being written */
    FB_S_FLUSH_CLOSE = 1u << 2, /* protocol error: send what is queued, then close */
    FB_S_CLOSING = 1u << 3,     /* uv_close called: no more output either */
    FB_S_DRAINING = 1u << 4,    /* after FLUSH_CLOSE: discarding input until EOF */
    FB_S_PEER_GONE = 1u << 5,   /* a write failed (EPIPE...): answers are dropped,
                                 * input is still read and handled until EOF */
    FB_S_EOF = 1u << 6,         /* the peer sent EOF: no more input; close once
                                 * what is owed is written */
    FB_S_USER = 1u << 8,        /* first bit the owner may use */
};

struct fb_stream;

/* The owner's side. Only input and closed are required. */
struct fb_stream_ops {
    const char *who; /* log prefix: "" or "control: " */
    /* New bytes are in s->rd. */
    void (*input)(struct fb_stream *s);
    /* A uv_write finished; return true if the hook flushed already. */
    bool (*written)(struct fb_stream *s);
    /* Answers are still to come: hold the FLUSH_CLOSE shutdown, the close
     * after EOF, and idle. */
    bool (*owes)(const struct fb_stream *s);
    /* Everything is written and no protocol-error close is pending. */
    void (*idle)(struct fb_stream *s);
    /* The handle's close callback: the owner may free itself now. */
    void (*closed)(struct fb_stream *s);
};

struct fb_stream {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } u;
    struct fidbus_frame_reader rd;
    struct fidbus_buf out;  /* answers not yet handed to the kernel */
    struct fidbus_buf wbuf; /* answers in an uv_write; empty otherwise */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    unsigned flags; /* FB_S_* and the owner's bits */
    /* Bytes read so far: with rd's pending count it names the stream
     * offset of the frame being assembled (conn.c's input_soft watch). */
    uint64_t bytes_in;
    /* conn.list (bus/conn_list.c): bytes handed to the socket (a write
     * still in progress included) and frames queued for the peer. Only
     * the loop's thread touches them. */
    uint64_t bytes_out;
    uint64_t frames_out;
    const struct fb_stream_ops *ops;
};

#define fb_stream_owner(s, type, member) ((type *)((char *)(s)-offsetof(type, member)))

/* Sets up the reader (rd_cap bytes to start) and the handle on loop. On
 * failure nothing is left to free. fd is not touched. */
int fb_stream_init(struct fb_stream *s, uv_loop_t *loop, bool is_tcp, size_t max_frame,
                   size_t rd_cap, const struct fb_stream_ops *ops);
/* Adopts fd. On failure the caller closes fd and the stream. */
int fb_stream_open(struct fb_stream *s, int fd, bool is_tcp);
/* Frees the reader and buffers. From ops->closed or later. */
void fb_stream_destroy(struct fb_stream *s);

/* uv_close once; ops->closed runs from the close callback. */
void fb_stream_close(struct fb_stream *s);
/* Hands out to the kernel; then shuts down (FLUSH_CLOSE) or calls idle. */
void fb_stream_flush(struct fb_stream *s);
/* (Re)starts reading into rd, ops->input on data; closes on failure. Does
 * nothing after EOF. */
void fb_stream_read_start(struct fb_stream *s);
void fb_stream_read_stop(struct fb_stream *s);

/* Queues HELLO; -ENOMEM if it cannot. */
int fb_stream_send_hello(struct fb_stream *s);
/* The same with a nonce (auth.h): the client must answer with AUTH. */
int fb_stream_send_hello_nonce(struct fb_stream *s, const uint8_t *nonce,
                               size_t nonce_len);
/* Queues an ERROR (message truncated to 1 KiB); closes if out of memory.
 * Nothing once the stream is closing or its peer is gone. */
void fb_stream_send_error(struct fb_stream *s, bool has_seq, uint64_t seq, int code,
                          bool with_result, uint64_t result, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Logs that an answer could not be queued and closes. */
void fb_stream_oom(struct fb_stream *s);

/* Room for need more bytes at the end of out (*cap of them), or NULL. */
static inline uint8_t *fb_stream_space(struct fb_stream *s, size_t need, size_t *cap)
{
    if (fidbus_buf_reserve(&s->out, need) < 0)
        return NULL;
    *cap = s->out.cap - s->out.len;
    return s->out.data + s->out.len;
}

/* Answer bytes queued or in a write. */
static inline size_t fb_stream_pending(const struct fb_stream *s)
{
    return s->out.len + s->wbuf.len;
}

#endif
