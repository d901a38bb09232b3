/*
 * fidbus-bench: the echo and decode baselines.
 *
 * A minimal libuv server on its own thread and loop, listening on a Unix
 * socket (or on 127.0.0.1 when fidbusd is measured over TCP, so both go
 * through the same transport): it reads length-prefixed frames and writes each complete
 * frame back unchanged, all frames of one read in one write. It is the floor for a
 * request/answer round trip through one libuv loop on this machine, so the latency mode
 * measures it and fidbusd in the same run and compares their p99s. It does no decoding
 * and no dispatch: whatever fidbusd adds above it is the cost of being a bus.
 *
 * The decode baseline is the same server with one difference: instead of
 * echoing, it decodes and checks every frame with libfidbus's own decoder
 * (fidbus_msg_decode + fidbus_msg_check, as fidbusd does) and counts the
 * PUBLISHes; it greets with HELLO and answers PING with ACK, so the
 * throughput publisher runs against it unchanged. It is our own limit for
 * one connection: throughput measures it and fidbusd in the same run.
 */
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define ECHO_BUF (FIDBUS_MAX_FRAME_DEFAULT + FIDBUS_FRAME_HEADER)

struct echo_client {
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h; /* first: the handle pointer is the client's */
    struct fb_bench_echo *e;
    size_t have;
    uint8_t buf[];
};

struct echo_write {
    uv_write_t req;
    uint8_t data[];
};

struct fb_bench_echo {
    uv_loop_t loop;
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } server;
    bool tcp;
    int port;
    uv_async_t stop;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int state; /* 0 starting, 1 listening, <0 failed (errno) */
    bool decode;
    _Atomic uint64_t decoded; /* decode: PUBLISHes that decoded and checked */
    _Atomic uint64_t bad;     /* decode: frames that did not */
    char path[256];
};

static void on_close_free(uv_handle_t *h)
{
    free(h);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct echo_client *c = (struct echo_client *)h;

    buf->base = (char *)c->buf + c->have;
    buf->len = ECHO_BUF - c->have;
}

static void on_write(uv_write_t *req, int status)
{
    free(req);
}

/* Writes n bytes of p now, or a queued copy of what did not go. */
static int send_bytes(uv_stream_t *s, const uint8_t *p, size_t n)
{
    uv_buf_t out = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write(s, &out, 1);
    if (w < 0 && w != UV_EAGAIN)
        return w;
    size_t done = w < 0 ? 0 : (size_t)w;
    if (done == n)
        return 0;
    struct echo_write *q = malloc(sizeof(*q) + n - done);
    if (!q)
        return UV_ENOMEM;
    memcpy(q->data, p + done, n - done);
    uv_buf_t rest = uv_buf_init((char *)q->data, (unsigned)(n - done));
    int rc = uv_write(&q->req, s, &rest, 1, on_write);
    if (rc < 0)
        free(q);
    return rc;
}

/* The decode baseline: every whole frame in c->buf[0..end) decoded and
 * checked; a PING answered with its ACK; nothing else written. */
static void decode_frames(uv_stream_t *s, struct echo_client *c, size_t end)
{
    uint64_t ok = 0, bad = 0;
    int rc = 0;
    for (size_t off = 0; off < end && rc == 0;) {
        const uint8_t *p = c->buf + off;
        uint32_t len =
            (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        struct fidbus_msg m;
        if (fidbus_msg_decode(p + FIDBUS_FRAME_HEADER, len, FIDBUS_MAX_DEPTH_DEFAULT,
                              &m) != 0 ||
            fidbus_msg_check(&m) != 0) {
            bad++;
        } else if (m.type == FIDBUS_MSG_PUBLISH) {
            ok++;
        } else if (m.type == FIDBUS_MSG_PING) {
            /* what came before the PING is counted before its ACK leaves */
            atomic_fetch_add_explicit(&c->e->decoded, ok, memory_order_relaxed);
            ok = 0;
            uint8_t ack[64];
            size_t n = fidbus_enc_ack(ack, sizeof(ack), m.seq, 0);
            rc = send_bytes(s, ack, n);
        }
        off += FIDBUS_FRAME_HEADER + len;
    }
    atomic_fetch_add_explicit(&c->e->decoded, ok, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->e->bad, bad, memory_order_relaxed);
    memmove(c->buf, c->buf + end, c->have - end);
    c->have -= end;
    if (rc < 0)
        uv_close((uv_handle_t *)s, on_close_free);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct echo_client *c = (struct echo_client *)s;

    if (nread < 0) {
        uv_close((uv_handle_t *)s, on_close_free);
        return;
    }
    c->have += (size_t)nread;

    /* Everything up to the last complete frame goes back in one write. */
    size_t off = 0;
    while (c->have - off >= FIDBUS_FRAME_HEADER) {
        const uint8_t *p = c->buf + off;
        uint32_t len =
            (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (len == 0 || len > FIDBUS_MAX_FRAME_DEFAULT) {
            uv_close((uv_handle_t *)s, on_close_free);
            return;
        }
        if (c->have - off - FIDBUS_FRAME_HEADER < len)
            break;
        off += FIDBUS_FRAME_HEADER + len;
    }
    if (off == 0)
        return;
    if (c->e->decode) {
        decode_frames(s, c, off);
        return;
    }

    uv_buf_t out = uv_buf_init((char *)c->buf, (unsigned)off);
    int n = uv_try_write(s, &out, 1);
    if (n < 0 && n != UV_EAGAIN) {
        uv_close((uv_handle_t *)s, on_close_free);
        return;
    }
    size_t done = n < 0 ? 0 : (size_t)n;
    if (done < off) {
        /* The socket is full: queue a copy of the rest. */
        struct echo_write *w = malloc(sizeof(*w) + off - done);
        if (!w) {
            uv_close((uv_handle_t *)s, on_close_free);
            return;
        }
        memcpy(w->data, c->buf + done, off - done);
        uv_buf_t rest = uv_buf_init((char *)w->data, (unsigned)(off - done));
        if (uv_write(&w->req, s, &rest, 1, on_write) < 0) {
            free(w);
            uv_close((uv_handle_t *)s, on_close_free);
            return;
        }
    }
    memmove(c->buf, c->buf + off, c->have - off);
    c->have -= off;
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct echo_client *c = malloc(sizeof(*c) + ECHO_BUF);
    if (!c)
        return;
    c->e = server->data;
    c->have = 0;
    if (server->type == UV_TCP)
        uv_tcp_init(server->loop, &c->h.tcp);
    else
        uv_pipe_init(server->loop, &c->h.pipe, 0);
    if (uv_accept(server, (uv_stream_t *)&c->h) < 0 ||
        uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read) < 0) {
        uv_close((uv_handle_t *)&c->h, on_close_free);
        return;
    }
    if (server->type == UV_TCP)
        uv_tcp_nodelay(&c->h.tcp, 1);
    if (c->e->decode) {
        uint8_t hello[64];
        size_t n = fidbus_enc_hello(hello, sizeof(hello), "decode-baseline", NULL, 0);
        if (send_bytes((uv_stream_t *)&c->h, hello, n) < 0)
            uv_close((uv_handle_t *)&c->h, on_close_free);
    }
}

static void close_client(uv_handle_t *h, void *arg)
{
    struct fb_bench_echo *e = arg;

    if (uv_is_closing(h))
        return;
    if (h == (uv_handle_t *)&e->server || h == (uv_handle_t *)&e->stop)
        uv_close(h, NULL);
    else
        uv_close(h, on_close_free);
}

static void on_stop(uv_async_t *a)
{
    uv_walk(a->loop, close_client, a->data);
}

static void set_state(struct fb_bench_echo *e, int state)
{
    pthread_mutex_lock(&e->lock);
    e->state = state;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* Binds the Unix socket, or 127.0.0.1 on a free port for TCP. */
static int echo_bind(struct fb_bench_echo *e)
{
    if (!e->tcp) {
        uv_pipe_init(&e->loop, &e->server.pipe, 0);
        return uv_pipe_bind(&e->server.pipe, e->path);
    }
    struct sockaddr_in sa;
    int len = sizeof(sa);
    int rc;
    uv_tcp_init(&e->loop, &e->server.tcp);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if ((rc = uv_tcp_bind(&e->server.tcp, (struct sockaddr *)&sa, 0)) < 0 ||
        (rc = uv_tcp_getsockname(&e->server.tcp, (struct sockaddr *)&sa, &len)) < 0)
        return rc;
    e->port = ntohs(sa.sin_port);
    return 0;
}

static void *echo_main(void *arg)
{
    struct fb_bench_echo *e = arg;
    int rc;

    rc = echo_bind(e);
    if (e->tcp)
        e->server.tcp.data = e;
    else
        e->server.pipe.data = e;
    if (rc < 0 || (rc = uv_listen((uv_stream_t *)&e->server, 16, on_connection)) < 0) {
        uv_close((uv_handle_t *)&e->server, NULL);
        uv_close((uv_handle_t *)&e->stop, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        set_state(e, rc);
        return NULL;
    }
    set_state(e, 1);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    return NULL;
}

int fb_bench_echo_start(struct fb_bench_echo **out, const char *path, int *port,
                        bool decode)
{
    struct fb_bench_echo *e = calloc(1, sizeof(*e));
    int rc;

    *out = NULL;
    if (!e)
        return -ENOMEM;
    e->tcp = path == NULL;
    e->decode = decode;
    snprintf(e->path, sizeof(e->path), "%s", path ? path : "");
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    if ((rc = uv_loop_init(&e->loop)) < 0)
        goto fail_sync;
    if ((rc = uv_async_init(&e->loop, &e->stop, on_stop)) < 0)
        goto fail_loop;
    e->stop.data = e;
    if ((rc = -pthread_create(&e->thread, NULL, echo_main, e)) < 0) {
        uv_close((uv_handle_t *)&e->stop, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        goto fail_loop;
    }
    pthread_mutex_lock(&e->lock);
    while (e->state == 0)
        pthread_cond_wait(&e->cond, &e->lock);
    rc = e->state;
    pthread_mutex_unlock(&e->lock);
    if (rc < 0) {
        pthread_join(e->thread, NULL);
        goto fail_loop;
    }
    if (port)
        *port = e->port;
    *out = e;
    return 0;

fail_loop:
    uv_loop_close(&e->loop);
fail_sync:
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
    return rc;
}

uint64_t fb_bench_echo_decoded(struct fb_bench_echo *e, uint64_t *bad)
{
    if (bad)
        *bad = atomic_load(&e->bad);
    return atomic_load(&e->decoded);
}

struct fb_bench_echo *fb_bench_echo_stop(struct fb_bench_echo *e)
{
    if (!e)
        return NULL;
    uv_async_send(&e->stop);
    pthread_join(e->thread, NULL);
    uv_loop_close(&e->loop);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    if (!e->tcp)
        unlink(e->path);
    free(e);
    return NULL;
}
