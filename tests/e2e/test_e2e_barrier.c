/*
 * End-to-end tests of what a connection is owed and what it may make the
 * daemon hold, around the PING barrier and the end of input (README
 * "Limits and backpressure", proto/README.md "Rules"):
 *
 *   - PINGs queued behind a blocking call count towards max_inflight: a
 *     flood of them behind one slow handler pauses the connection instead
 *     of growing the daemon's memory (each waiting PING was a malloc:
 *     100 MiB of them took it from 6 to 252 MiB), everyone else is served
 *     meanwhile, and every PING is answered, in order, once the handler
 *     returns. With output_soft = 0 the same flood ends in the output_hard
 *     close with the daemon's memory still bounded: no answer is built
 *     past it.
 *   - A client that shuts down its write side after its last frame gets
 *     every answer owed, inline handlers' and blocking ones', then EOF;
 *     also when the daemon stops meanwhile. A client that closes both
 *     directions is let go at once, blocking calls in flight or not.
 *
 * The floods are written by a thread (blocking sends: the daemon pausing
 * us is what stops it) while the test thread watches the daemon.
 * FIDBUS_BARRIER_PING_MIB (default 100) sets the PING flood's size; the
 * RSS figures go to stderr.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e/harness.h"

/* A "Vm...:" line of /proc/PID/status in KiB, -1 if unknown. */
static long vm_kib(pid_t pid, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *st = fb_e2e_read(path, NULL);
    const char *p = st ? strstr(st, key) : NULL;
    long kib = p ? strtol(p + strlen(key), NULL, 10) : -1;
    free(st);
    return kib;
}

static uint64_t ping_mib(void)
{
    const char *e = getenv("FIDBUS_BARRIER_PING_MIB");
    long v = e ? atol(e) : 0;
    return v > 0 ? (uint64_t)v : 100;
}

/* PINGs in ping_mib() MiB: past seq 65535 a PING frame is 13 bytes
 * (length, map head, type, seq key, seq as a 4-byte uint). */
static uint64_t flood_pings(void)
{
    return (ping_mib() << 20) / 13;
}

/* ------------------------------------------------------------ writer */

/* Frames written by a thread with blocking sends; the test thread sees
 * its progress. n PINGs or acked PUBLISHes of `event`, seq 1..n, then
 * shutdown(SHUT_WR) if asked. */
struct writer {
    int fd;
    bool pings;
    const char *event;
    uint64_t n;
    bool shut_wr;
    pthread_t thread;
    _Atomic uint64_t bytes; /* written so far */
    _Atomic bool done;
    int err; /* errno that ended it early, or 0 */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct fidbus_buf b = {0};
    enum { CHUNK = 4096 };
    uint64_t seq = 1;
    while (seq <= w->n) {
        b.len = 0;
        for (int i = 0; i < CHUNK && seq <= w->n; i++, seq++) {
            struct fidbus_msg_out m = {
                .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
                .type = w->pings ? FIDBUS_MSG_PING : FIDBUS_MSG_PUBLISH,
                .seq = seq,
            };
            if (!w->pings) {
                m.present |= FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS);
                m.event = w->event;
                m.flags = FIDBUS_FLAG_ACK;
            }
            if (fidbus_msg_encode(&b, &m) != 0) {
                w->err = ENOMEM;
                goto out;
            }
        }
        for (size_t off = 0; off < b.len;) {
            ssize_t k = send(w->fd, b.data + off, b.len - off, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                w->err = errno;
                goto out;
            }
            off += (size_t)k;
            atomic_fetch_add(&w->bytes, (uint64_t)k);
        }
    }
    if (w->shut_wr && shutdown(w->fd, SHUT_WR) < 0)
        w->err = errno;
out:
    fidbus_buf_free(&b);
    atomic_store(&w->done, true);
    return NULL;
}

static void writer_start(struct writer *w)
{
    ck_assert_int_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static void writer_join(struct writer *w)
{
    ck_assert_int_eq(pthread_join(w->thread, NULL), 0);
}

/* Waits until the writer is done or has made no progress for a second
 * (the daemon stopped reading it). Returns whether it is done. */
static bool writer_done_or_held(struct writer *w)
{
    uint64_t last = atomic_load(&w->bytes), since = fb_e2e_now_ms();
    for (;;) {
        if (atomic_load(&w->done))
            return true;
        usleep(20000); /* watching a counter, not waiting for a guess */
        uint64_t now = atomic_load(&w->bytes);
        if (now != last) {
            last = now;
            since = fb_e2e_now_ms();
        } else if (fb_e2e_now_ms() - since >= 1000) {
            return atomic_load(&w->done);
        }
    }
}

/* ------------------------------------------------------------ reader */

/* Reads frames in place from a big buffer: millions of answers, where
 * fb_e2e_raw_recv copies and moves each. r->msg's slices point into buf
 * until the next call. Per frame, conditions are tested with if and only
 * a failure goes to Check: every ck_assert that passes costs a write to
 * Check's log. */
struct reader {
    int fd;
    uint8_t *buf;
    size_t pos, len, cap;
    struct fidbus_msg msg;
    /* An EOF inside a frame is a close too: the output_hard close drops a
     * write the client had not taken whole. */
    bool torn_ok;
};

static void reader_init(struct reader *r, struct fb_e2e_raw *raw)
{
    ck_assert_msg(raw->len == 0, "%zu unread bytes after HELLO", raw->len);
    r->fd = raw->fd;
    r->cap = 1 << 20;
    r->buf = malloc(r->cap);
    ck_assert(r->buf != NULL);
    r->pos = r->len = 0;
}

/* 1: a frame in r->msg; 0: EOF; -ETIMEDOUT; -errno. */
static int reader_next(struct reader *r, int timeout_ms)
{
    for (;;) {
        size_t have = r->len - r->pos;
        if (have >= 4) {
            const uint8_t *p = r->buf + r->pos;
            size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
            if (n == 0 || n >= r->cap - 4)
                ck_abort_msg("daemon sent a frame of length %zu", n);
            if (have >= 4 + n) {
                int rc = fidbus_msg_decode(p + 4, n, FIDBUS_MAX_DEPTH_DEFAULT, &r->msg);
                if (rc != 0)
                    ck_abort_msg("daemon sent an undecodable frame (%d)", rc);
                r->pos += 4 + n;
                return 1;
            }
        }
        memmove(r->buf, r->buf + r->pos, have);
        r->pos = 0;
        r->len = have;
        ssize_t k = fb_e2e_recv_by(r->fd, r->buf + r->len, r->cap - r->len,
                                   fb_e2e_now_ms() + (uint64_t)timeout_ms);
        if (k < 0)
            return (int)k;
        if (k == 0) {
            if (have && !r->torn_ok)
                ck_abort_msg("EOF inside a frame (%zu bytes pending)", have);
            return 0;
        }
        r->len += (size_t)k;
    }
}

static void reader_free(struct reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* The next frame is ACK(seq, result). */
static void reader_ack(struct reader *r, uint64_t seq, uint64_t result)
{
    int rc = reader_next(r, 30000);
    if (rc != 1)
        ck_abort_msg("waiting for ACK seq %llu: %s", (unsigned long long)seq,
                     rc == 0 ? "EOF" : strerror(-rc));
    uint64_t res = ~0ull;
    if (r->msg.type != FIDBUS_MSG_ACK || r->msg.seq != seq ||
        !fb_e2e_cbor_uint(r->msg.result, &res) || res != result)
        ck_abort_msg("expected ACK seq %llu result %llu, got type %llu seq %llu result "
                     "%llu (%s)",
                     (unsigned long long)seq, (unsigned long long)result,
                     (unsigned long long)r->msg.type, (unsigned long long)r->msg.seq,
                     (unsigned long long)res,
                     r->msg.type == FIDBUS_MSG_ERROR ? fb_e2e_msg_text(&r->msg) : "");
}

/* --------------------------------------------------------- PING flood */

/* Under the default handler_deadline_ms (5000). */
enum { SLOW_MS = 4000 };
static const uint64_t PUB_SEQ = 1ull << 40; /* apart from the PINGs' 1, 2, ... */

#define SLOW_ROUTE                                                                       \
    FB_E2E_TP("slow")                                                                    \
    "delay_ms = 4000\n"                                                                  \
    "[route slow]\nevent = b.slow\nto = test.slow\n" FB_E2E_COUNT                        \
    "[route other]\nevent = b.other\nto = fidbus.count\n"

/* One acked PUBLISH to a 4 s blocking handler, then a PING flood from a
 * thread that never reads. Returns the raw connection (HELLO read) once
 * the flood is held back or all written, and asserts, in this order: the
 * daemon's RSS grew by under 64 MiB meanwhile, the flood was held back,
 * and all of it happened while the handler ran (nothing was answered). */
static struct fb_e2e_raw *flood_behind_slow(struct fb_e2e *t, struct writer *w,
                                            long *rss0)
{
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    *rss0 = fb_e2e_vm_rss_kib(t->pid);
    ck_assert_int_gt(*rss0, 0);
    uint64_t t0 = fb_e2e_now_ms();
    fb_e2e_raw_publish(r, PUB_SEQ, true, "b.slow");
    *w = (struct writer){.fd = r->fd, .pings = true, .n = flood_pings()};
    writer_start(w);
    bool held = !writer_done_or_held(w);
    uint64_t ms = fb_e2e_now_ms() - t0;
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    bool answered = poll(&p, 1, 0) != 0;
    long rss = fb_e2e_vm_rss_kib(t->pid);
    fprintf(stderr,
            "ping flood %llu MiB: %s after %llu bytes; daemon RSS %ld KiB before, "
            "%ld KiB now\n",
            (unsigned long long)ping_mib(), held ? "held back" : "all read",
            (unsigned long long)atomic_load(&w->bytes), *rss0, rss);
    ck_assert_msg(rss - *rss0 < 64 * 1024,
                  "daemon RSS grew from %ld to %ld KiB under the PING flood", *rss0, rss);
    ck_assert_msg(held, "the daemon read the whole PING flood behind a blocking call");
    ck_assert_msg(!answered && ms < SLOW_MS,
                  "an answer is readable %llu ms after the publish: the flood was not "
                  "held behind the blocking call (machine too slow?)",
                  (unsigned long long)ms);
    return r;
}

/* Another client on the same worker is served meanwhile. */
static void other_client_served(struct fb_e2e *t)
{
    struct fidbus_client *o = fb_e2e_connect(t);
    fb_e2e_publish_ack(o, "b.other", 1);
    fb_e2e_ping(o);
    fidbus_client_close(o);
}

/*
 * 100 MiB of PINGs behind one blocking call: the connection is paused
 * (the waiting PINGs count towards max_inflight), the daemon's RSS grows
 * by well under 64 MiB, another client is served meanwhile, and once the
 * handler returns every PING is answered, in order, after the PUBLISH's
 * ACK. output_soft holds the flood back again while we read, so the
 * connection never nears output_hard.
 */
START_TEST(test_e2e_barrier_ping_flood)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t = fb_e2e_up(&o, SLOW_ROUTE);
    struct writer w;
    long rss0;
    struct fb_e2e_raw *r = flood_behind_slow(t, &w, &rss0);
    ck_assert_int_ge(fb_e2e_limit_hits(t, "pause_inflight"), 1);
    other_client_served(t);

    /* The handler returns: the PUBLISH's ACK, then every PING in order. */
    struct reader rd;
    reader_init(&rd, r);
    reader_ack(&rd, PUB_SEQ, 1);
    for (uint64_t s = 1; s <= w.n; s++)
        reader_ack(&rd, s, 0);
    writer_join(&w);
    ck_assert_msg(w.err == 0, "writer: %s", strerror(w.err));
    long hwm = vm_kib(t->pid, "VmHWM:");
    fprintf(stderr,
            "ping flood %llu MiB: %llu PINGs answered; daemon RSS peak %ld KiB "
            "(growth %ld KiB)\n",
            (unsigned long long)ping_mib(), (unsigned long long)w.n, hwm, hwm - rss0);
    ck_assert_msg(hwm - rss0 < 64 * 1024, "daemon RSS peaked at %ld KiB from %ld KiB",
                  hwm, rss0);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "output_hard"), 0);
    reader_free(&rd);
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * The same flood with output_soft = 0 (never pause on output) and a small
 * output_hard: once the handler returns, the answers the client does not
 * read pass output_hard and the connection is closed -- with the daemon's
 * memory bounded throughout, as no answer is built past output_hard. What
 * the client can still read is a correct prefix: the PUBLISH's ACK, PING
 * ACKs in order, at most an ERROR BUSY naming output_hard, then EOF
 * (possibly inside a frame: what the daemon was writing when it gave up).
 */
START_TEST(test_e2e_barrier_ping_flood_output_hard)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t = fb_e2e_up(&o, SLOW_ROUTE "[limits]\noutput_soft = 0\n"
                                                "output_hard = 262144\n");
    struct writer w;
    long rss0;
    struct fb_e2e_raw *r = flood_behind_slow(t, &w, &rss0);
    other_client_served(t);

    /* The handler returns; we read nothing until the daemon gives up. */
    writer_join(&w);
    ck_assert_msg(w.err == EPIPE || w.err == ECONNRESET,
                  "writer ended with '%s' after %llu bytes, not with the close",
                  strerror(w.err), (unsigned long long)atomic_load(&w.bytes));
    ck_assert_int_eq(fb_e2e_limit_hits(t, "output_hard"), 1);
    long hwm = vm_kib(t->pid, "VmHWM:");
    ck_assert_msg(hwm - rss0 < 64 * 1024, "daemon RSS peaked at %ld KiB from %ld KiB",
                  hwm, rss0);

    struct reader rd;
    reader_init(&rd, r);
    rd.torn_ok = true;
    reader_ack(&rd, PUB_SEQ, 1);
    uint64_t next = 1;
    for (;;) {
        int rc = reader_next(&rd, 30000);
        if (rc == 0 || rc == -ECONNRESET)
            break;
        if (rc != 1)
            ck_abort_msg("reading: %s", strerror(-rc));
        if (rd.msg.type == FIDBUS_MSG_ERROR) {
            ck_assert_uint_eq(rd.msg.code, FIDBUS_BUSY);
            ck_assert_msg(strstr(fb_e2e_msg_text(&rd.msg), "output_hard"), "%s",
                          fb_e2e_msg_text(&rd.msg));
            ck_assert_int_le(reader_next(&rd, 30000), 0);
            break;
        }
        if (rd.msg.type != FIDBUS_MSG_ACK || rd.msg.seq != next)
            ck_abort_msg("expected ACK seq %llu, got type %llu seq %llu",
                         (unsigned long long)next, (unsigned long long)rd.msg.type,
                         (unsigned long long)rd.msg.seq);
        next++;
    }
    ck_assert_uint_gt(next, 1);
    reader_free(&rd);
    fb_e2e_raw_close(r);
    other_client_served(t);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------------------------- half-close */

/* Reads until EOF: exactly one ACK(seq, result) for each seq 1..n, in any
 * order. */
static void acks_until_eof(struct fb_e2e_raw *raw, uint64_t n, uint64_t result)
{
    struct reader rd;
    reader_init(&rd, raw);
    char *seen = calloc(n + 1, 1);
    uint64_t got = 0;
    int rc;
    while ((rc = reader_next(&rd, 30000)) == 1) {
        const struct fidbus_msg *m = &rd.msg;
        uint64_t res = ~0ull;
        if (m->type != FIDBUS_MSG_ACK || m->seq < 1 || m->seq > n || seen[m->seq] ||
            !fb_e2e_cbor_uint(m->result, &res) || res != result)
            ck_abort_msg("unexpected answer: type %llu seq %llu result %llu (%s)",
                         (unsigned long long)m->type, (unsigned long long)m->seq,
                         (unsigned long long)res,
                         m->type == FIDBUS_MSG_ERROR ? fb_e2e_msg_text(m) : "");
        seen[m->seq] = 1;
        got++;
    }
    ck_assert_msg(rc == 0, "after %llu ACKs: %s", (unsigned long long)got, strerror(-rc));
    ck_assert_msg(got == n, "%llu of %llu ACKs before EOF", (unsigned long long)got,
                  (unsigned long long)n);
    free(seen);
    reader_free(&rd);
}

/*
 * Acked inline publishes, then shutdown(SHUT_WR): every ACK, then EOF
 * (the daemon closes once nothing is owed). First 200,000 with
 * output_soft above what their ACKs take (2.6 MB), reading only after the
 * shutdown, so that at EOF most answers are still queued in the daemon
 * (they used to be dropped: the kernel takes a few hundred KiB at most);
 * then 50,000 with the defaults, reading as they come, so
 * that the connection is paused on output_soft as its EOF nears.
 */
START_TEST(test_e2e_barrier_half_close_inline)
{
    for (int late = 1; late >= 0; late--) {
        const uint64_t n = late ? 200000 : 50000;
        struct fb_e2e_opts o = {.workers = 1};
        struct fb_e2e *t = fb_e2e_up(
            &o, late ? FB_E2E_COUNT "[route all]\nevent = *\nto = fidbus.count\n"
                                    "[limits]\noutput_soft = 4194304\n"
                     : FB_E2E_COUNT "[route all]\nevent = *\nto = fidbus.count\n");
        struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
        fb_e2e_raw_hello(r);
        struct writer w = {.fd = r->fd, .event = "b.inline", .n = n, .shut_wr = true};
        writer_start(&w);
        if (late)
            writer_join(&w);
        acks_until_eof(r, n, 1);
        if (!late)
            writer_join(&w);
        ck_assert_msg(w.err == 0, "writer: %s", strerror(w.err));
        fb_e2e_raw_close(r);
        char *json = fb_e2e_stop_report(t);
        FB_E2E_ASSERT_COUNT(json, "b.inline", n);
        free(json);
        fb_e2e_free(t);
    }
}
END_TEST

/* 50 acked publishes to a blocking handler, then shutdown(SHUT_WR): all 50
 * ACKs arrive (the daemon waits for the handlers), then EOF. */
START_TEST(test_e2e_barrier_half_close_blocking)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t = fb_e2e_up(
        &o, FB_E2E_TP("slow") "delay_ms = 20\nfile = @D@/slow.txt\n"
                              "[route slow]\nevent = b.block\nto = test.slow\n");
    enum { N = 50 };
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    for (uint64_t s = 1; s <= N; s++)
        fb_e2e_raw_publish(r, s, true, "b.block");
    ck_assert_int_eq(shutdown(r->fd, SHUT_WR), 0);
    acks_until_eof(r, N, 1);
    fb_e2e_raw_close(r);
    fb_e2e_stop_ok(t);
    char *lines = fb_e2e_read(fb_e2e_file(t, "slow.txt"), NULL);
    ck_assert_int_eq(fb_e2e_lines_with(lines, "b.block ", -1), N);
    free(lines);
    fb_e2e_free(t);
}
END_TEST

/* The daemon's events-received counter reaches n (polled). */
static void wait_received(struct fb_e2e *t, long long n)
{
    long long got = 0;
    for (uint64_t end = fb_e2e_now_ms() + 20000; fb_e2e_now_ms() < end;) {
        if ((got = fb_e2e_prom_value(t, "fidbus_received_total")) >= n)
            return;
        usleep(20000); /* polling a counter, not waiting for a guess */
    }
    ck_abort_msg("the daemon received %lld of %lld events", got, n);
}

/*
 * The daemon stops while a half-closed client waits on a blocking call:
 * the call finishes, the client gets its ACK and its PING's, then EOF,
 * and the daemon exits 0. And a half-closed client is not taken for idle
 * while it is owed an answer (idle_timeout_unix_ms shorter than the call).
 */
START_TEST(test_e2e_barrier_half_close_stop)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("slow") "delay_ms = 1500\n"
                                        "[route slow]\nevent = b.stop\nto = test.slow\n"
                                        "[limits]\nidle_timeout_unix_ms = 200\n");
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    /* One write, so that the daemon has read the PING too once it counts
     * the PUBLISH (a stop reads nothing more). */
    struct fidbus_buf b = {0};
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = 1,
        .event = "b.stop",
        .flags = FIDBUS_FLAG_ACK,
    };
    ck_assert_int_eq(fidbus_msg_encode(&b, &m), 0);
    m = (struct fidbus_msg_out){
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = 2,
    };
    ck_assert_int_eq(fidbus_msg_encode(&b, &m), 0);
    fb_e2e_raw_send(r, b.data, b.len);
    fidbus_buf_free(&b);
    ck_assert_int_eq(shutdown(r->fd, SHUT_WR), 0);
    wait_received(t, 1);
    fb_e2e_stop_ok(t);
    /* What the daemon wrote before it exited is still ours to read. */
    fb_e2e_raw_expect_ack(r, 1, 1);
    fb_e2e_raw_expect_ack(r, 2, 0);
    fb_e2e_raw_expect_eof(r);
    fb_e2e_raw_close(r);
    fb_e2e_free(t);
}
END_TEST

/*
 * A client that closes both directions while its blocking call runs has
 * no one left to answer: its connection goes at once (its place under
 * max_connections_per_uid is free again long before the call returns),
 * and the call still runs to the end.
 */
START_TEST(test_e2e_barrier_full_close_goes_at_once)
{
    struct fb_e2e_opts o = {.workers = 1};
    struct fb_e2e *t =
        fb_e2e_up(&o, FB_E2E_TP("slow") "delay_ms = 4000\nfile = @D@/slow.txt\n"
                                        "[route slow]\nevent = b.gone\nto = test.slow\n"
                                        "[limits]\nmax_connections_per_uid = 1\n");
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    uint64_t t0 = fb_e2e_now_ms();
    fb_e2e_raw_publish(r, 1, true, "b.gone");
    wait_received(t, 1);
    fb_e2e_raw_close(r);
    /* The close reaches the daemon's loop soon, not after the handler. */
    bool again = false;
    while (!again && fb_e2e_now_ms() - t0 < 3000) {
        struct fb_e2e_raw *x = fb_e2e_raw_unix(t);
        ck_assert_int_eq(fb_e2e_raw_recv(x, FB_E2E_TIMEOUT_MS), 1);
        again = x->msg.type == FIDBUS_MSG_HELLO;
        fb_e2e_raw_close(x);
    }
    ck_assert_msg(again, "a closed client's place was held while its call ran");
    ck_assert_msg(fb_e2e_wait_contains(fb_e2e_file(t, "slow.txt"), "b.gone 1", 20000),
                  "the blocking call did not finish");
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_barrier_suite(void)
{
    Suite *s = suite_create("e2e_barrier");
    TCase *tc = tcase_create("ping_flood"); /* CK_RUN_CASE picks one */
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_e2e_barrier_ping_flood);
    tcase_add_test(tc, test_e2e_barrier_ping_flood_output_hard);
    suite_add_tcase(s, tc);
    tc = tcase_create("end_of_input");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_barrier_half_close_inline);
    tcase_add_test(tc, test_e2e_barrier_half_close_blocking);
    tcase_add_test(tc, test_e2e_barrier_half_close_stop);
    tcase_add_test(tc, test_e2e_barrier_full_close_goes_at_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_barrier_suite());
}
