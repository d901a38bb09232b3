/*
 * fidbus-bench throughput: pipelined PUBLISH without ack, C connections.
 *
 * One PUBLISH frame is encoded once and replicated into a 256 KiB buffer;
 * each connection's thread writes that buffer in big chunks (a syscall
 * costs about a microsecond here, so one write carries thousands of
 * events), reads and counts anything the server sends back (ERRORs), and
 * ends with a PING. The PING's ACK is the barrier that says every event
 * before it on that connection was fully handled, so the clock runs from
 * the first byte written on any connection to the last PING ACK.
 *
 * Afterwards the daemon is stopped with SIGTERM and the count plugin's
 * final report must show exactly the number of events sent.
 *
 * The same publisher, run until told to stop instead of for N events
 * (fb_bench_pubs_*), is the load under which the change mode (change.c)
 * times route changes and plugin reloads; it publishes the count of
 * events written so far for that mode's 100 ms samples.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TP_EVENT "bench.throughput"
#define TP_CHUNK (256u * 1024u)
#define TP_PING_SEQ 0xbe000000u

struct tp_conn {
    unsigned id;
    struct fb_bench_reader rd;
    uint64_t n;              /* events to send (a cap when stop is set) */
    const atomic_bool *stop; /* NULL, or: publish until it becomes true */
    /* Bytes of whole PUBLISH frames written: every segment is whole
     * frames and is finished before the next, so at the end this is
     * exactly sent * frame_len. Written by the thread only, read by a
     * sampler while it runs. */
    _Atomic uint64_t data_bytes;
    const uint8_t *chunk; /* chunk_frames copies of one frame */
    size_t chunk_frames, frame_len;
    struct fidbus_buf ping;
    uint64_t ping_seq;
    pthread_barrier_t *start;
    int timeout_ms;
    uint64_t t_first, t_done;
    uint64_t errors, first_error, unexpected;
    char first_msg[160];
    int rc;
    char err[200];
};

/* Handles every whole frame buffered; 1 once the PING's ACK was seen. */
static int tp_drain(struct tp_conn *c)
{
    int rc;

    while ((rc = fb_bench_reader_next(&c->rd)) != 0) {
        const struct fidbus_msg *m = c->rd.msg;
        if (rc != 1) {
            snprintf(c->err, sizeof(c->err), "undecodable frame from server: %s",
                     fidbus_code_name(rc));
            return -EPROTO;
        }
        if (m->type == FIDBUS_MSG_ACK && m->seq == c->ping_seq &&
            fidbus_msg_has(m, FIDBUS_K_SEQ))
            return 1;
        if (m->type == FIDBUS_MSG_ERROR) {
            if (c->errors++ == 0) {
                c->first_error = m->code;
                snprintf(c->first_msg, sizeof(c->first_msg), "%.*s", (int)m->message.len,
                         (const char *)m->message.ptr);
            }
        } else if (m->type != FIDBUS_MSG_HELLO) {
            c->unexpected++;
        }
    }
    return 0;
}

static int tp_send(struct tp_conn *c)
{
    int fd = c->rd.fd;
    uint64_t deadline = fb_bench_deadline(c->timeout_ms);
    uint64_t left = c->n;
    const uint8_t *seg = NULL;
    size_t seg_len = 0, off = 0;
    uint64_t data_bytes = 0;
    bool ping_queued = false;

    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        return -errno;
    c->t_first = fb_bench_now_ns();
    for (;;) {
        if (seg == NULL || off == seg_len) {
            off = 0;
            if (c->stop && atomic_load_explicit(c->stop, memory_order_relaxed))
                left = 0;
            if (left > 0) {
                uint64_t k = left < c->chunk_frames ? left : c->chunk_frames;
                seg = c->chunk;
                seg_len = (size_t)k * c->frame_len;
                left -= k;
            } else if (!ping_queued) {
                seg = c->ping.data;
                seg_len = c->ping.len;
                ping_queued = true;
            } else {
                seg = NULL;
            }
        }
        if (seg) {
            ssize_t w = write(fd, seg + off, seg_len - off);
            if (w > 0) {
                off += (size_t)w;
                if (seg != c->ping.data) {
                    data_bytes += (uint64_t)w;
                    atomic_store_explicit(&c->data_bytes, data_bytes,
                                          memory_order_relaxed);
                }
                continue;
            }
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(c->err, sizeof(c->err), "write: %s", strerror(errno));
                return -errno;
            }
        }
        /* The socket is full (or all is sent): wait, and read what came. */
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (seg ? POLLOUT : 0)};
        int ms = fb_bench_ms_left(deadline);
        if (ms == 0 || poll(&pfd, 1, ms) == 0) {
            snprintf(c->err, sizeof(c->err),
                     "timed out after %d ms (%llu events "
                     "not yet written)",
                     c->timeout_ms, (unsigned long long)left);
            return -ETIMEDOUT;
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = fb_bench_reader_fill(&c->rd);
        if (n == 0) {
            snprintf(c->err, sizeof(c->err), "server closed the connection");
            return -ECONNRESET;
        }
        if (n < 0 && n != -EAGAIN) {
            snprintf(c->err, sizeof(c->err), "read: %s", strerror((int)-n));
            return (int)n;
        }
        int rc = tp_drain(c);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            c->t_done = fb_bench_now_ns();
            return 0;
        }
    }
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* Daemon CPU over the run, in total and for its busiest threads: whether
 * the connections really landed on different workers shows up here. */
static void cpu_share(struct fb_bench_tp_result *res, const struct fb_bench_cpu *a,
                      const struct fb_bench_cpu *b)
{
    double busy[FB_BENCH_MAX_THREADS];
    size_t n = 0;

    res->daemon_cpu = (b->total - a->total) / res->seconds;
    for (size_t i = 0; i < b->n; i++) {
        double before = 0;
        for (size_t j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i])
                before = a->cpu[j];
        double share = (b->cpu[i] - before) / res->seconds;
        if (share >= 0.05)
            busy[n++] = share;
    }
    qsort(busy, n, sizeof(*busy), cmp_desc);
    for (size_t i = 0; i < n && i < 8; i++)
        res->thread_cpu[res->nthreads++] = busy[i];
}

static void *tp_thread(void *arg)
{
    struct tp_conn *c = arg;

    pthread_barrier_wait(c->start);
    c->rc = tp_send(c);
    return NULL;
}

int fb_bench_throughput(const struct fb_bench_opts *o, struct fb_bench_tp_result *res)
{
    struct fb_bench_daemon *d = NULL;
    struct fidbus_buf frame = {0};
    uint8_t payload[65536 + 8];
    struct tp_conn *conns = NULL;
    uint8_t *chunk = NULL;
    pthread_barrier_t start;
    unsigned connected = 0, started = 0;
    int rc;
    const char *addr = o->bus;
    int timeout_ms = o->timeout_s * 1000;
    char dec_dir[256] = "", dec_addr[300];
    struct fb_bench_echo *dec = NULL; /* the decode baseline, instead of d */

    memset(res, 0, sizeof(*res));
    res->conns = o->conns;
    res->workers = o->workers;
    res->payload = o->payload;
    res->daemon_cpu = -1;
    res->verify = -1;
    res->counted = -1;

    if (o->payload > sizeof(payload) - 8) {
        fprintf(stderr, "fidbus-bench: --payload above 65536 is not supported\n");
        return -EINVAL;
    }
    size_t plen = fb_bench_payload_item(payload, sizeof(payload), o->payload);
    res->payload = plen;
    if ((rc = fb_bench_encode_publish(&frame, TP_EVENT, false, 0, 0, payload, plen)) < 0)
        goto out;
    res->frame_len = frame.len;

    /* The replicated buffer: whole frames only, so every write ends on a
     * frame boundary and the count of events per write is exact. */
    size_t chunk_frames = TP_CHUNK / frame.len ? TP_CHUNK / frame.len : 1;
    chunk = malloc(chunk_frames * frame.len);
    conns = calloc(o->conns, sizeof(*conns));
    if (!chunk || !conns) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < chunk_frames; i++)
        memcpy(chunk + i * frame.len, frame.data, frame.len);

    if (!addr && o->decode_baseline) {
        snprintf(dec_dir, sizeof(dec_dir), "%s/fidbus-bench-decode.XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dec_dir)) {
            rc = -errno;
            dec_dir[0] = '\0';
            goto out;
        }
        snprintf(dec_addr, sizeof(dec_addr), "unix:%s/decode.sock", dec_dir);
        if ((rc = fb_bench_echo_start(&dec, dec_addr + 5, NULL, true)) < 0) {
            fprintf(stderr, "fidbus-bench: decode baseline: %s\n", strerror(-rc));
            goto out;
        }
        addr = dec_addr;
    } else if (!addr) {
        struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
        if ((rc = fb_bench_daemon_start(&d, &dc)) < 0)
            goto out;
        addr = d->addr;
    }

    for (unsigned i = 0; i < o->conns; i++, connected++) {
        struct tp_conn *c = &conns[i];
        char err[256];
        c->id = i;
        c->n = o->events / o->conns + (i < o->events % o->conns ? 1 : 0);
        c->chunk = chunk;
        c->chunk_frames = chunk_frames;
        c->frame_len = frame.len;
        c->ping_seq = TP_PING_SEQ + i;
        c->start = &start;
        c->timeout_ms = timeout_ms;
        int fd = fb_bench_connect(addr, err, sizeof(err));
        if (fd < 0) {
            fprintf(stderr, "fidbus-bench: %s\n", err);
            rc = fd;
            goto out;
        }
        if ((rc = fb_bench_reader_init(&c->rd, fd)) < 0) {
            close(fd);
            goto out;
        }
        if ((rc = fb_bench_encode_ping(&c->ping, c->ping_seq)) < 0 ||
            (rc = fb_bench_read_hello(&c->rd, timeout_ms, err, sizeof(err))) < 0) {
            fprintf(stderr, "fidbus-bench: connection %u: %s\n", i, err);
            connected++;
            goto out;
        }
    }

    struct fb_bench_cpu cpu0, cpu1;
    bool have_cpu = d && fb_bench_daemon_cpu(d, &cpu0) == 0;
    pthread_t *th = calloc(o->conns, sizeof(*th));
    if (!th) {
        rc = -ENOMEM;
        goto out;
    }
    pthread_barrier_init(&start, NULL, o->conns);
    for (; started < o->conns; started++)
        if ((rc = -pthread_create(&th[started], NULL, tp_thread, &conns[started])) < 0)
            break;
    if (started < o->conns) {
        /* Threads already waiting at the barrier can never pass it. */
        fprintf(stderr, "fidbus-bench: pthread_create: %s\n", strerror(-rc));
        exit(2);
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    pthread_barrier_destroy(&start);
    have_cpu = have_cpu && fb_bench_daemon_cpu(d, &cpu1) == 0;

    uint64_t t0 = UINT64_MAX, t1 = 0;
    rc = 0;
    for (unsigned i = 0; i < o->conns; i++) {
        struct tp_conn *c = &conns[i];
        if (c->rc < 0) {
            fprintf(stderr, "fidbus-bench: connection %u: %s\n", i, c->err);
            rc = c->rc;
            continue;
        }
        res->sent += c->n;
        if (c->errors && !res->errors) {
            res->first_error = c->first_error;
            fprintf(stderr, "fidbus-bench: connection %u: ERROR %s: %s\n", i,
                    fidbus_code_name((int)c->first_error), c->first_msg);
        }
        res->errors += c->errors;
        if (c->t_first < t0)
            t0 = c->t_first;
        if (c->t_done > t1)
            t1 = c->t_done;
    }
    if (rc < 0)
        goto out;
    res->seconds = (double)(t1 - t0) / 1e9;
    res->events_per_s = (double)res->sent / res->seconds;
    res->mb_per_s = (double)res->sent * (double)frame.len / res->seconds / 1e6;
    if (have_cpu)
        cpu_share(res, &cpu0, &cpu1);

    if (dec) {
        /* Every PING was answered after the frames before it: all decoded. */
        uint64_t bad = 0;
        res->counted = (long long)fb_bench_echo_decoded(dec, &bad);
        res->verify = (uint64_t)res->counted == res->sent && bad == 0 ? 0 : 1;
    }
    if (d) {
        for (unsigned i = 0; i < connected; i++) {
            close(conns[i].rd.fd);
            conns[i].rd.fd = -1;
        }
        long long total;
        if (fb_bench_daemon_stop(d, timeout_ms) < 0 ||
            fb_bench_daemon_count(d, TP_EVENT, &res->counted, &total) < 0) {
            res->verify = 1;
            rc = -EIO;
            goto out;
        }
        res->verify = (uint64_t)res->counted == res->sent ? 0 : 1;
    }
    res->ok = res->errors == 0 && res->verify != 1;

out:
    for (unsigned i = 0; i < connected && conns; i++) {
        if (conns[i].rd.fd >= 0)
            close(conns[i].rd.fd);
        fb_bench_reader_destroy(&conns[i].rd);
        fidbus_buf_free(&conns[i].ping);
    }
    free(conns);
    free(chunk);
    fidbus_buf_free(&frame);
    fb_bench_daemon_free(d);
    fb_bench_echo_stop(dec);
    if (dec_dir[0])
        rmdir(dec_dir);
    return rc;
}

/* ------------------------------------------ publishers until stopped */

struct fb_bench_pubs {
    unsigned n, connected, started;
    struct tp_conn *conns;
    pthread_t *th;
    pthread_barrier_t start;
    atomic_bool stop;
    uint8_t *chunk;
    struct fidbus_buf frame;
};

static void pubs_free(struct fb_bench_pubs *p)
{
    for (unsigned i = 0; i < p->connected; i++) {
        if (p->conns[i].rd.fd >= 0)
            close(p->conns[i].rd.fd);
        fb_bench_reader_destroy(&p->conns[i].rd);
        fidbus_buf_free(&p->conns[i].ping);
    }
    free(p->conns);
    free(p->th);
    free(p->chunk);
    fidbus_buf_free(&p->frame);
    free(p);
}

int fb_bench_pubs_start(struct fb_bench_pubs **out, const char *addr, unsigned conns,
                        size_t payload, const char *event, int timeout_ms,
                        size_t *frame_len)
{
    uint8_t pl[65536 + 8];
    int rc;

    *out = NULL;
    if (payload > sizeof(pl) - 8)
        return -EINVAL;
    struct fb_bench_pubs *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->n = conns;
    atomic_init(&p->stop, false);
    size_t plen = fb_bench_payload_item(pl, sizeof(pl), payload);
    if ((rc = fb_bench_encode_publish(&p->frame, event, false, 0, 0, pl, plen)) < 0)
        goto fail;
    size_t flen = p->frame.len;
    size_t chunk_frames = TP_CHUNK / flen ? TP_CHUNK / flen : 1;
    p->chunk = malloc(chunk_frames * flen);
    p->conns = calloc(conns, sizeof(*p->conns));
    p->th = calloc(conns, sizeof(*p->th));
    if (!p->chunk || !p->conns || !p->th) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < chunk_frames; i++)
        memcpy(p->chunk + i * flen, p->frame.data, flen);

    for (unsigned i = 0; i < conns; i++) {
        struct tp_conn *c = &p->conns[i];
        char err[256];
        c->id = i;
        c->n = UINT64_MAX;
        c->stop = &p->stop;
        atomic_init(&c->data_bytes, 0);
        c->chunk = p->chunk;
        c->chunk_frames = chunk_frames;
        c->frame_len = flen;
        c->ping_seq = TP_PING_SEQ + i;
        c->start = &p->start;
        c->timeout_ms = timeout_ms;
        c->rd.fd = -1;
        int fd = fb_bench_connect(addr, err, sizeof(err));
        if (fd < 0) {
            fprintf(stderr, "fidbus-bench: %s\n", err);
            rc = fd;
            goto fail;
        }
        if ((rc = fb_bench_reader_init(&c->rd, fd)) < 0) {
            close(fd);
            goto fail;
        }
        p->connected++;
        if ((rc = fb_bench_encode_ping(&c->ping, c->ping_seq)) < 0 ||
            (rc = fb_bench_read_hello(&c->rd, timeout_ms, err, sizeof(err))) < 0) {
            fprintf(stderr, "fidbus-bench: publisher %u: %s\n", i, err);
            goto fail;
        }
    }
    pthread_barrier_init(&p->start, NULL, conns);
    for (; p->started < conns; p->started++)
        if ((rc = -pthread_create(&p->th[p->started], NULL, tp_thread,
                                  &p->conns[p->started])) < 0)
            break;
    if (p->started < conns) {
        /* Threads already waiting at the barrier can never pass it. */
        fprintf(stderr, "fidbus-bench: pthread_create: %s\n", strerror(-rc));
        exit(2);
    }
    *frame_len = flen;
    *out = p;
    return 0;

fail:
    pubs_free(p);
    return rc;
}

uint64_t fb_bench_pubs_written(struct fb_bench_pubs *p)
{
    uint64_t bytes = 0;

    for (unsigned i = 0; i < p->n; i++)
        bytes += atomic_load_explicit(&p->conns[i].data_bytes, memory_order_relaxed);
    return bytes / p->frame.len;
}

int fb_bench_pubs_stop(struct fb_bench_pubs *p, uint64_t *sent, uint64_t *errors)
{
    int rc = 0;

    *sent = *errors = 0;
    atomic_store(&p->stop, true);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->th[i], NULL);
    pthread_barrier_destroy(&p->start);
    for (unsigned i = 0; i < p->n; i++) {
        struct tp_conn *c = &p->conns[i];
        if (c->rc < 0) {
            fprintf(stderr, "fidbus-bench: publisher %u: %s\n", i, c->err);
            rc = c->rc;
        }
        *sent += atomic_load(&c->data_bytes) / p->frame.len;
        if (c->errors && !*errors)
            fprintf(stderr, "fidbus-bench: publisher %u: ERROR %s: %s\n", i,
                    fidbus_code_name((int)c->first_error), c->first_msg);
        *errors += c->errors;
    }
    pubs_free(p);
    return rc;
}
