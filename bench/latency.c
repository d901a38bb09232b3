/*
 * fidbus-bench latency: acked PUBLISH round trips at a fixed offered rate.
 *
 * Open loop, so a slow answer cannot slow the sender down and hide itself
 * (coordinated omission): event i is due at t0 + i/rate, a sender thread
 * sleeps until each due time (clock_nanosleep on an absolute deadline with
 * 1 ns timer slack, or a busy-wait with --spin) and, if it woke late,
 * sends everything that is due in one write. A receiver thread on the
 * same connection matches answers by seq and measures each round trip
 * from the event's SCHEDULED time, so sender lateness is counted against
 * the system, as a real client would see it.
 *
 * The same code measures the echo baseline: the frames are identical,
 * the echo server returns each one unchanged, and the echoed PUBLISH (with
 * its seq) stands for the answer.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LAT_EVENT "bench.latency"
#define LAT_NONE UINT64_MAX
#define LAT_MAX_BATCH 1024u

struct lat_run {
    struct fb_bench_reader rd;
    bool echo;
    bool spin;
    uint64_t n;               /* events scheduled */
    double interval_ns;
    uint64_t t0;
    uint64_t warmup_n;        /* seq below this is sent but not measured */
    const uint8_t *payload;
    size_t plen;
    int timeout_ms;
    uint64_t *lat;            /* per seq, ns after its due time; LAT_NONE */
    uint64_t *lag;            /* per seq, ns the sender was late writing it */
    /* sender */
    uint64_t sent, t_last_send;
    int send_rc;
    char send_err[160];
    /* receiver */
    uint64_t answered, errors, dups, unexpected, first_error;
    char first_msg[160];
    int recv_rc;
    char recv_err[160];
};

static inline uint64_t due_ns(const struct lat_run *r, uint64_t i)
{
    return r->t0 + (uint64_t)((double)i * r->interval_ns);
}

static void *lat_sender(void *arg)
{
    struct lat_run *r = arg;
    struct fidbus_buf b = { 0 };
    uint64_t i = 0;

    /* The default 50 us of timer slack would be most of a 50 us period. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    while (i < r->n) {
        uint64_t due = due_ns(r, i), now = fb_bench_now_ns();
        if (now < due) {
            if (r->spin) {
                while ((now = fb_bench_now_ns()) < due)
                    ;
            } else {
                struct timespec ts = { .tv_sec = (time_t)(due / 1000000000u),
                                       .tv_nsec = (long)(due % 1000000000u) };
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                    ;
                now = fb_bench_now_ns();
            }
        }
        b.len = 0;
        for (unsigned k = 0; k < LAT_MAX_BATCH && i < r->n && due_ns(r, i) <= now; k++, i++) {
            int rc = fb_bench_encode_publish(&b, LAT_EVENT, true, i,
                                             r->echo ? 0 : FIDBUS_FLAG_ACK,
                                             r->payload, r->plen);
            if (rc < 0) {
                r->send_rc = rc;
                snprintf(r->send_err, sizeof(r->send_err), "encode: %s", strerror(-rc));
                goto fail;
            }
            r->lag[i] = now - due_ns(r, i);
        }
        int rc = fb_bench_write_all(r->rd.fd, b.data, b.len);
        if (rc < 0) {
            r->send_rc = rc;
            snprintf(r->send_err, sizeof(r->send_err), "write: %s", strerror(-rc));
            goto fail;
        }
        r->sent = i;
        r->t_last_send = now;
    }
    fidbus_buf_free(&b);
    return NULL;

fail:
    /* Wake the receiver: it sees EOF instead of waiting for its deadline. */
    shutdown(r->rd.fd, SHUT_RDWR);
    fidbus_buf_free(&b);
    return NULL;
}

static void lat_answer(struct lat_run *r, uint64_t now)
{
    const struct fidbus_msg *m = r->rd.msg;
    uint64_t want = r->echo ? FIDBUS_MSG_PUBLISH : FIDBUS_MSG_ACK;

    if (m->type == FIDBUS_MSG_HELLO)
        return;
    if (m->type == FIDBUS_MSG_ERROR && r->errors++ == 0) {
        r->first_error = m->code;
        snprintf(r->first_msg, sizeof(r->first_msg), "%.*s", (int)m->message.len,
                 (const char *)m->message.ptr);
    }
    if ((m->type != want && m->type != FIDBUS_MSG_ERROR) ||
        !fidbus_msg_has(m, FIDBUS_K_SEQ) || m->seq >= r->n) {
        r->unexpected++;
        return;
    }
    if (r->lat[m->seq] != LAT_NONE) {
        r->dups++;
        return;
    }
    /* An ERROR answers the event but is no successful round trip: it is
     * counted, and its time is not mixed into the percentiles. */
    r->lat[m->seq] = m->type == FIDBUS_MSG_ERROR ? LAT_NONE - 1 : now - due_ns(r, m->seq);
    r->answered++;
}

static void *lat_receiver(void *arg)
{
    struct lat_run *r = arg;
    uint64_t end = due_ns(r, r->n) + (uint64_t)r->timeout_ms * 1000000u;
    int rc;

    /*
     * A blocking read with SO_RCVTIMEO (set by lat_measure) rather than
     * poll + read: one syscall per wakeup instead of two, on the path
     * being measured.
     */
    while (r->answered < r->n) {
        ssize_t n = fb_bench_reader_fill(&r->rd);
        uint64_t now = fb_bench_now_ns();
        if (n == -EAGAIN) {
            if (now >= end)
                return NULL;  /* what is still missing is reported as missing */
            continue;
        }
        if (n == 0) {
            r->recv_rc = -ECONNRESET;
            snprintf(r->recv_err, sizeof(r->recv_err), "connection closed");
            return NULL;
        }
        if (n < 0) {
            r->recv_rc = (int)n;
            snprintf(r->recv_err, sizeof(r->recv_err), "read: %s", strerror((int)-n));
            return NULL;
        }
        /* Every frame of one read arrived at the same moment. */
        while ((rc = fb_bench_reader_next(&r->rd)) == 1)
            lat_answer(r, now);
        if (rc != 0) {
            r->recv_rc = -EPROTO;
            snprintf(r->recv_err, sizeof(r->recv_err), "undecodable answer: %s",
                     fidbus_code_name(rc));
            return NULL;
        }
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return (double)sorted[k ? k - 1 : 0] / 1000.0;
}

/* Runs the sender and receiver on an open connection and fills res. */
static int lat_measure(struct lat_run *r, const struct fb_bench_opts *o,
                       struct fb_bench_lat_result *res)
{
    pthread_t snd, rcv;
    int rc;

    r->lat = malloc(r->n * sizeof(*r->lat));
    r->lag = calloc(r->n, sizeof(*r->lag));
    if (!r->lat || !r->lag)
        return -ENOMEM;
    for (uint64_t i = 0; i < r->n; i++)
        r->lat[i] = LAT_NONE;
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    if (setsockopt(r->rd.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    /* A little in the future, so both threads are up before event 0. */
    r->t0 = fb_bench_now_ns() + 20000000u;
    if ((rc = -pthread_create(&rcv, NULL, lat_receiver, r)) < 0)
        return rc;
    if ((rc = -pthread_create(&snd, NULL, lat_sender, r)) < 0) {
        shutdown(r->rd.fd, SHUT_RDWR);
        pthread_join(rcv, NULL);
        return rc;
    }
    pthread_join(snd, NULL);
    pthread_join(rcv, NULL);
    if (r->send_rc < 0) {
        fprintf(stderr, "fidbus-bench: latency sender: %s\n", r->send_err);
        return r->send_rc;
    }
    if (r->recv_rc < 0) {
        fprintf(stderr, "fidbus-bench: latency receiver: %s\n", r->recv_err);
        return r->recv_rc;
    }
    if (r->errors)
        fprintf(stderr, "fidbus-bench: %s: %llu ERROR answers, first %s: %s\n",
                res->target, (unsigned long long)r->errors,
                fidbus_code_name((int)r->first_error), r->first_msg);

    /*
     * Three distributions over the measured events: the round trip from
     * the scheduled time (the headline, free of coordinated omission), the
     * sender's own lateness, and their difference, the round trip from the
     * moment the frame was actually written. On this VM a timed sleep
     * wakes ~40 us late; that lateness is the same for every target, and
     * the from-write figures show what is left without it.
     */
    uint64_t *wr = malloc(r->n * sizeof(*wr));
    if (!wr)
        return -ENOMEM;
    size_t m = 0, nl = 0;
    for (uint64_t i = r->warmup_n; i < r->n; i++) {
        if (r->lat[i] < LAT_NONE - 1) {
            wr[m] = r->lat[i] > r->lag[i] ? r->lat[i] - r->lag[i] : 0;
            r->lat[m++] = r->lat[i];
        }
        r->lag[nl++] = r->lag[i];
    }
    qsort(r->lat, m, sizeof(*r->lat), cmp_u64);
    qsort(wr, m, sizeof(*wr), cmp_u64);
    qsort(r->lag, nl, sizeof(*r->lag), cmp_u64);
    res->scheduled = r->n;
    res->measured = m;
    res->answered = r->answered;
    res->errors = r->errors;
    res->missing = r->n - r->answered;
    res->p50 = pct_us(r->lat, m, 0.50);
    res->p90 = pct_us(r->lat, m, 0.90);
    res->p99 = pct_us(r->lat, m, 0.99);
    res->p999 = pct_us(r->lat, m, 0.999);
    res->max = m ? (double)r->lat[m - 1] / 1000.0 : 0;
    res->w50 = pct_us(wr, m, 0.50);
    res->w99 = pct_us(wr, m, 0.99);
    res->w999 = pct_us(wr, m, 0.999);
    res->lag_p50 = pct_us(r->lag, nl, 0.50);
    res->lag_p99 = pct_us(r->lag, nl, 0.99);
    res->lag_max = nl ? (double)r->lag[nl - 1] / 1000.0 : 0;
    free(wr);
    if (r->sent > 1 && r->t_last_send > r->t0)
        res->achieved = (double)(r->sent - 1) * 1e9 / (double)(r->t_last_send - r->t0);
    res->ok = res->missing == 0 && res->errors == 0 && r->dups == 0 && r->unexpected == 0;
    if (r->dups || r->unexpected)
        fprintf(stderr, "fidbus-bench: %s: %llu duplicate and %llu unexpected answers\n",
                res->target, (unsigned long long)r->dups,
                (unsigned long long)r->unexpected);
    return 0;
}

int fb_bench_latency(const struct fb_bench_opts *o, bool echo,
                     struct fb_bench_lat_result *res)
{
    struct lat_run r = { .echo = echo, .spin = o->spin, .rd = { .fd = -1 } };
    struct fb_bench_daemon *d = NULL;
    struct fb_bench_echo *es = NULL;
    uint8_t payload[65536 + 8];
    char echo_dir[256] = "", echo_path[300], err[256] = "";
    const char *addr = o->bus;
    int timeout_ms = o->timeout_s * 1000;
    int fd = -1, rc;

    memset(res, 0, sizeof(*res));
    res->target = echo ? "echo" : "fidbusd";
    res->offered = o->rate;
    res->verify = -1;
    res->counted = -1;
    if (o->payload > sizeof(payload) - 8) {
        fprintf(stderr, "fidbus-bench: --payload above 65536 is not supported\n");
        return -EINVAL;
    }
    r.payload = payload;
    r.plen = fb_bench_payload_item(payload, sizeof(payload), o->payload);
    r.n = (uint64_t)llround(o->rate * o->seconds);
    r.interval_ns = 1e9 / o->rate;
    r.warmup_n = (uint64_t)llround(o->rate * o->warmup_ms / 1000.0);
    if (r.warmup_n >= r.n)
        r.warmup_n = 0;
    r.timeout_ms = timeout_ms;
    if (r.n == 0) {
        fprintf(stderr, "fidbus-bench: --rate x --seconds is zero events\n");
        return -EINVAL;
    }

    if (echo) {
        const char *tmp = getenv("TMPDIR");
        snprintf(echo_dir, sizeof(echo_dir), "%s/fidbus-bench-echo.XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(echo_dir)) {
            rc = -errno;
            echo_dir[0] = '\0';
            goto out;
        }
        snprintf(echo_path, sizeof(echo_path), "%s/echo.sock", echo_dir);
        int port = 0;
        if ((rc = fb_bench_echo_start(&es, o->tcp ? NULL : echo_path, &port)) < 0) {
            fprintf(stderr, "fidbus-bench: echo server: %s\n", strerror(-rc));
            goto out;
        }
        if (o->tcp)
            snprintf(echo_path, sizeof(echo_path), "tcp:127.0.0.1:%d", port);
        addr = echo_path;
    } else if (!addr) {
        struct fb_bench_daemon_conf dc = {
            .fidbusd = o->fidbusd, .plugin_dir = o->plugin_dir,
            .workers = o->workers, .tcp = o->tcp, .keep = o->keep,
            .timeout_ms = timeout_ms,
        };
        if ((rc = fb_bench_daemon_start(&d, &dc)) < 0)
            goto out;
        addr = d->addr;
    }

    if ((fd = fb_bench_connect(addr, err, sizeof(err))) < 0) {
        fprintf(stderr, "fidbus-bench: %s\n", err);
        rc = fd;
        goto out;
    }
    if ((rc = fb_bench_reader_init(&r.rd, fd)) < 0)
        goto out;
    if (!echo && (rc = fb_bench_read_hello(&r.rd, timeout_ms, err, sizeof(err))) < 0) {
        fprintf(stderr, "fidbus-bench: %s\n", err);
        goto out;
    }
    if ((rc = lat_measure(&r, o, res)) < 0)
        goto out;

    if (d) {
        close(fd);
        fd = -1;
        long long total;
        if (fb_bench_daemon_stop(d, timeout_ms) < 0 ||
            fb_bench_daemon_count(d, LAT_EVENT, &res->counted, &total) < 0) {
            res->verify = 1;
            res->ok = false;
            goto out;
        }
        res->verify = (uint64_t)res->counted == r.sent ? 0 : 1;
        if (res->verify)
            res->ok = false;
    }

out:
    if (fd >= 0)
        close(fd);
    if (r.rd.msg)
        fb_bench_reader_destroy(&r.rd);
    free(r.lat);
    free(r.lag);
    fb_bench_echo_stop(es);
    if (echo_dir[0])
        rmdir(echo_dir);
    fb_bench_daemon_free(d);
    return rc;
}
