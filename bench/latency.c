/*
 * fidbus-bench latency: acked PUBLISH round trips at a fixed offered rate.
 *
 * Open loop, so a slow answer cannot slow the sender down and hide itself
 * (coordinated omission): within a round, event i is due at t0 + i/rate; a
 * sender thread sleeps until each due time (clock_nanosleep on an absolute
 * deadline with 1 ns timer slack, or a busy-wait with --spin) and, if it
 * woke late, sends everything that is due in one write. A receiver thread
 * on the same connection matches answers by seq and measures each round
 * trip from the event's SCHEDULED time, so sender lateness is counted
 * against the system, as a real client would see it. The lateness itself
 * is recorded too, so the round trip from the actual write can be shown.
 *
 * The same code measures the echo baseline: the frames are identical, the
 * echo server returns each one unchanged, and the echoed PUBLISH (with its
 * seq) stands for the answer. When both are measured, the run is cut into
 * rounds that alternate between the two targets (echo, fidbusd, fidbusd,
 * echo, ...), so both sample the same stretch of a noisy machine instead
 * of one getting the quiet seconds and the other the busy ones.
 *
 * --closed measures the other way a client waits: closed loop, one event
 * in flight; the next is written the moment the answer to the previous one
 * is read, on one thread, and each round trip is timed from its write.
 * There is no offered rate and no sender lateness; the round trips show
 * the floor of one request/answer, without queueing behind earlier ones.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LAT_EVENT "bench.latency"
#define LAT_NONE UINT64_MAX
#define LAT_ERROR (UINT64_MAX - 1)
#define LAT_MAX_BATCH 1024u

/* One measured endpoint: the echo server or fidbusd, and its samples. */
struct lat_target {
    struct fb_bench_lat_result *res;
    bool echo;
    struct fb_bench_reader rd;
    struct fb_bench_daemon *d;
    struct fb_bench_echo *es;
    struct fb_bench_members *mem; /* --remote: the members answering */
    char echo_dir[256];
    uint64_t *lat; /* per seq, ns after its due time; LAT_NONE/ERROR */
    uint64_t *lag; /* per seq, ns the sender was late writing it */
    uint64_t sent, answered, errors, dups, unexpected, first_error;
    uint64_t send_events, send_ns; /* for the achieved rate */
    char first_msg[160];
};

/* One round on one target: seqs [first, end) on a fresh timetable. */
struct lat_round {
    struct lat_target *t;
    uint64_t first, end;
    uint64_t t0;
    double interval_ns;
    bool spin;
    bool closed;      /* closed loop: one in flight, due = its write */
    uint64_t written; /* closed loop: when the event in flight was written */
    const uint8_t *payload;
    size_t plen;
    int timeout_ms;
    /* sender */
    uint64_t sent, t_last_send;
    int send_rc;
    char send_err[160];
    /* receiver */
    uint64_t answered;
    int recv_rc;
    char recv_err[160];
};

static inline uint64_t due_ns(const struct lat_round *r, uint64_t i)
{
    if (r->closed)
        return r->written;
    return r->t0 + (uint64_t)((double)(i - r->first) * r->interval_ns);
}

static void *lat_sender(void *arg)
{
    struct lat_round *r = arg;
    struct fidbus_buf b = {0};
    uint64_t i = r->first;

    /* The default 50 us of timer slack would be a whole 20,000/s period. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    while (i < r->end) {
        uint64_t due = due_ns(r, i), now = fb_bench_now_ns();
        if (now < due) {
            if (r->spin) {
                while ((now = fb_bench_now_ns()) < due)
                    ;
            } else {
                struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
                                      .tv_nsec = (long)(due % 1000000000u)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
                       EINTR)
                    ;
                now = fb_bench_now_ns();
            }
        }
        b.len = 0;
        for (unsigned k = 0; k < LAT_MAX_BATCH && i < r->end && due_ns(r, i) <= now;
             k++, i++) {
            int rc = fb_bench_encode_publish(&b, LAT_EVENT, true, i,
                                             r->t->echo ? 0 : FIDBUS_FLAG_ACK, r->payload,
                                             r->plen);
            if (rc < 0) {
                r->send_rc = rc;
                snprintf(r->send_err, sizeof(r->send_err), "encode: %s", strerror(-rc));
                goto fail;
            }
            r->t->lag[i] = now - due_ns(r, i);
        }
        int rc = fb_bench_write_all(r->t->rd.fd, b.data, b.len);
        if (rc < 0) {
            r->send_rc = rc;
            snprintf(r->send_err, sizeof(r->send_err), "write: %s", strerror(-rc));
            goto fail;
        }
        r->sent = i - r->first;
        r->t_last_send = now;
    }
    fidbus_buf_free(&b);
    return NULL;

fail:
    /* Wake the receiver: it sees EOF instead of waiting for its deadline. */
    shutdown(r->t->rd.fd, SHUT_RDWR);
    fidbus_buf_free(&b);
    return NULL;
}

static void lat_answer(struct lat_round *r, uint64_t now)
{
    struct lat_target *t = r->t;
    const struct fidbus_msg *m = t->rd.msg;
    uint64_t want = t->echo ? FIDBUS_MSG_PUBLISH : FIDBUS_MSG_ACK;

    if (m->type == FIDBUS_MSG_HELLO)
        return;
    if (m->type == FIDBUS_MSG_ERROR && t->errors++ == 0) {
        t->first_error = m->code;
        snprintf(t->first_msg, sizeof(t->first_msg), "%.*s", (int)m->message.len,
                 (const char *)m->message.ptr);
    }
    if ((m->type != want && m->type != FIDBUS_MSG_ERROR) ||
        !fidbus_msg_has(m, FIDBUS_K_SEQ) || m->seq < r->first || m->seq >= r->end) {
        t->unexpected++;
        return;
    }
    if (t->lat[m->seq] != LAT_NONE) {
        t->dups++;
        return;
    }
    /* An ERROR answers the event but is no successful round trip: it is
     * counted, and its time is not mixed into the percentiles. */
    t->lat[m->seq] = m->type == FIDBUS_MSG_ERROR ? LAT_ERROR : now - due_ns(r, m->seq);
    r->answered++;
}

static void *lat_receiver(void *arg)
{
    struct lat_round *r = arg;
    struct fb_bench_reader *rd = &r->t->rd;
    uint64_t end = due_ns(r, r->end) + (uint64_t)r->timeout_ms * 1000000u;
    int rc;

    /*
     * A blocking read with SO_RCVTIMEO (set when the target was opened)
     * rather than poll + read: one syscall per wakeup instead of two, on
     * the path being measured.
     */
    while (r->answered < r->end - r->first) {
        ssize_t n = fb_bench_reader_fill(rd);
        uint64_t now = fb_bench_now_ns();
        if (n == -EAGAIN) {
            if (now >= end)
                return NULL; /* what is still missing is reported as missing */
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
        while ((rc = fb_bench_reader_next(rd)) == 1)
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

/* Closed loop on the calling thread: write event i, read until its answer,
 * then i + 1. An answer missing after timeout_ms ends the round (it is
 * reported as missing). */
static int lat_closed_run(struct lat_round *r)
{
    struct lat_target *t = r->t;
    struct fidbus_buf b = {0};
    int rc = 0;

    r->t0 = fb_bench_now_ns();
    uint64_t i = r->first;
    for (; i < r->end && rc == 0; i++) {
        b.len = 0;
        if ((rc = fb_bench_encode_publish(&b, LAT_EVENT, true, i,
                                          t->echo ? 0 : FIDBUS_FLAG_ACK, r->payload,
                                          r->plen)) < 0)
            break;
        r->written = fb_bench_now_ns();
        t->lag[i] = 0;
        if ((rc = fb_bench_write_all(t->rd.fd, b.data, b.len)) < 0)
            break;
        r->sent++;
        r->t_last_send = r->written;
        uint64_t deadline = r->written + (uint64_t)r->timeout_ms * 1000000u;
        while (t->lat[i] == LAT_NONE) {
            ssize_t n = fb_bench_reader_fill(&t->rd);
            uint64_t now = fb_bench_now_ns();
            if (n == -EAGAIN) {
                if (now >= deadline)
                    break;
                continue;
            }
            if (n <= 0) {
                rc = n == 0 ? -ECONNRESET : (int)n;
                break;
            }
            int k;
            while ((k = fb_bench_reader_next(&t->rd)) == 1)
                lat_answer(r, now);
            if (k != 0) {
                rc = -EPROTO;
                break;
            }
        }
        if (t->lat[i] == LAT_NONE)
            break;
    }
    fidbus_buf_free(&b);
    if (rc < 0) {
        fprintf(stderr, "fidbus-bench: %s: closed-loop latency: %s\n", t->res->target,
                strerror(-rc));
        return rc;
    }
    t->sent += r->sent;
    t->answered += r->answered;
    if (r->sent > 1 && r->t_last_send > r->t0) {
        t->send_events += r->sent - 1;
        t->send_ns += r->t_last_send - r->t0;
    }
    return 0;
}

static int lat_round_run(struct lat_round *r)
{
    pthread_t snd, rcv;
    int rc;

    if (r->closed)
        return lat_closed_run(r);

    /* A little in the future, so both threads are up before the first event. */
    r->t0 = fb_bench_now_ns() + 20000000u;
    if ((rc = -pthread_create(&rcv, NULL, lat_receiver, r)) < 0)
        return rc;
    if ((rc = -pthread_create(&snd, NULL, lat_sender, r)) < 0) {
        shutdown(r->t->rd.fd, SHUT_RDWR);
        pthread_join(rcv, NULL);
        return rc;
    }
    pthread_join(snd, NULL);
    pthread_join(rcv, NULL);
    if (r->send_rc < 0) {
        fprintf(stderr, "fidbus-bench: %s: latency sender: %s\n", r->t->res->target,
                r->send_err);
        return r->send_rc;
    }
    if (r->recv_rc < 0) {
        fprintf(stderr, "fidbus-bench: %s: latency receiver: %s\n", r->t->res->target,
                r->recv_err);
        return r->recv_rc;
    }
    r->t->sent += r->sent;
    r->t->answered += r->answered;
    if (r->sent > 1 && r->t_last_send > r->t0) {
        r->t->send_events += r->sent - 1;
        r->t->send_ns += r->t_last_send - r->t0;
    }
    return 0;
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

static uint64_t round_start(uint64_t n, unsigned rounds, unsigned k)
{
    return n * k / rounds;
}

/*
 * Fills t->res from the samples. Three distributions over the measured
 * events (each round's first warm_n are not measured): the round trip from
 * the scheduled time (the headline, free of coordinated omission), the
 * sender's lateness, and their difference, the round trip from the moment
 * the frame was actually written. On this VM a timed sleep wakes ~40 us
 * late; that lateness is the same for every target, and the from-write
 * figures show what is left without it.
 */
static int lat_stats(struct lat_target *t, uint64_t n, unsigned rounds, uint64_t warm_n)
{
    struct fb_bench_lat_result *res = t->res;
    uint64_t *wr = malloc(n * sizeof(*wr));
    size_t m = 0, nl = 0;

    if (!wr)
        return -ENOMEM;
    for (unsigned k = 0; k < rounds; k++) {
        uint64_t first = round_start(n, rounds, k), end = round_start(n, rounds, k + 1);
        for (uint64_t i = first + warm_n; i < end; i++) {
            if (t->lat[i] < LAT_ERROR) {
                wr[m] = t->lat[i] > t->lag[i] ? t->lat[i] - t->lag[i] : 0;
                t->lat[m++] = t->lat[i];
            }
            t->lag[nl++] = t->lag[i];
        }
    }
    qsort(t->lat, m, sizeof(*t->lat), cmp_u64);
    qsort(wr, m, sizeof(*wr), cmp_u64);
    qsort(t->lag, nl, sizeof(*t->lag), cmp_u64);
    res->scheduled = n;
    res->measured = m;
    res->answered = t->answered;
    res->errors = t->errors;
    res->missing = n - t->answered;
    res->p50 = pct_us(t->lat, m, 0.50);
    res->p90 = pct_us(t->lat, m, 0.90);
    res->p99 = pct_us(t->lat, m, 0.99);
    res->p999 = pct_us(t->lat, m, 0.999);
    res->max = m ? (double)t->lat[m - 1] / 1000.0 : 0;
    res->w50 = pct_us(wr, m, 0.50);
    res->w99 = pct_us(wr, m, 0.99);
    res->w999 = pct_us(wr, m, 0.999);
    res->lag_p50 = pct_us(t->lag, nl, 0.50);
    res->lag_p99 = pct_us(t->lag, nl, 0.99);
    res->lag_max = nl ? (double)t->lag[nl - 1] / 1000.0 : 0;
    res->achieved = t->send_ns ? (double)t->send_events * 1e9 / (double)t->send_ns : 0;
    res->ok = res->missing == 0 && res->errors == 0 && t->dups == 0 && t->unexpected == 0;
    if (t->errors)
        fprintf(stderr, "fidbus-bench: %s: %llu ERROR answers, first %s: %s\n",
                res->target, (unsigned long long)t->errors,
                fidbus_code_name((int)t->first_error), t->first_msg);
    if (t->dups || t->unexpected)
        fprintf(stderr, "fidbus-bench: %s: %llu duplicate and %llu unexpected answers\n",
                res->target, (unsigned long long)t->dups,
                (unsigned long long)t->unexpected);
    free(wr);
    return 0;
}

/* Starts what the target needs (echo server or fidbusd) and connects. */
static int lat_open(struct lat_target *t, const struct fb_bench_opts *o, uint64_t n)
{
    const char *addr = o->bus;
    char path[300], err[256] = "";
    int timeout_ms = o->timeout_s * 1000;
    int rc, fd;

    t->lat = malloc(n * sizeof(*t->lat));
    t->lag = calloc(n, sizeof(*t->lag));
    if (!t->lat || !t->lag)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++)
        t->lat[i] = LAT_NONE;

    if (t->echo) {
        const char *tmp = getenv("TMPDIR");
        snprintf(t->echo_dir, sizeof(t->echo_dir), "%s/fidbus-bench-echo.XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(t->echo_dir)) {
            t->echo_dir[0] = '\0';
            return -errno;
        }
        snprintf(path, sizeof(path), "%s/echo.sock", t->echo_dir);
        int port = 0;
        if ((rc = fb_bench_echo_start(&t->es, o->tcp ? NULL : path, &port, false)) < 0) {
            fprintf(stderr, "fidbus-bench: echo server: %s\n", strerror(-rc));
            return rc;
        }
        if (o->tcp)
            snprintf(path, sizeof(path), "tcp:127.0.0.1:%d", port);
        addr = path;
    } else if (!addr) {
        struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
        char extra[512];
        if (o->remote)
            dc.extra = fb_bench_remote_conf(extra, sizeof extra, LAT_EVENT);
        if ((rc = fb_bench_daemon_start(&t->d, &dc)) < 0)
            return rc;
        addr = t->d->addr;
        if (o->remote &&
            (rc = fb_bench_members_start(&t->mem, addr, o->members ? o->members : 1,
                                         timeout_ms)) < 0)
            return rc;
    }

    if ((fd = fb_bench_connect(addr, err, sizeof(err))) < 0) {
        fprintf(stderr, "fidbus-bench: %s\n", err);
        return fd;
    }
    if ((rc = fb_bench_reader_init(&t->rd, fd)) < 0) {
        close(fd);
        t->rd.fd = -1;
        return rc;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    if (!t->echo &&
        (rc = fb_bench_read_hello(&t->rd, timeout_ms, err, sizeof(err))) < 0) {
        fprintf(stderr, "fidbus-bench: %s\n", err);
        return rc;
    }
    return 0;
}

/* Stops the daemon and checks its count (fidbusd targets we spawned). */
static void lat_verify(struct lat_target *t, int timeout_ms)
{
    struct fb_bench_lat_result *res = t->res;
    long long total;

    close(t->rd.fd);
    t->rd.fd = -1;
    if (t->mem) {
        /* Every event was answered, so every call was: the members'
         * count is final. */
        res->counted = (long long)fb_bench_members_calls(t->mem, NULL, 0);
        int mrc = fb_bench_members_stop(t->mem);
        t->mem = NULL;
        res->verify = fb_bench_daemon_stop(t->d, timeout_ms) < 0 || mrc < 0 ||
                      (uint64_t)res->counted != t->sent;
    } else if (fb_bench_daemon_stop(t->d, timeout_ms) < 0 ||
               fb_bench_daemon_count(t->d, LAT_EVENT, &res->counted, &total) < 0)
        res->verify = 1;
    else
        res->verify = (uint64_t)res->counted == t->sent ? 0 : 1;
    if (res->verify)
        res->ok = false;
}

static void lat_close(struct lat_target *t)
{
    if (t->rd.fd >= 0)
        close(t->rd.fd);
    if (t->rd.msg)
        fb_bench_reader_destroy(&t->rd);
    free(t->lat);
    free(t->lag);
    fb_bench_echo_stop(t->es);
    fb_bench_members_stop(t->mem);
    if (t->echo_dir[0])
        rmdir(t->echo_dir);
    fb_bench_daemon_free(t->d);
}

int fb_bench_latency(const struct fb_bench_opts *o, struct fb_bench_lat_result *echo,
                     struct fb_bench_lat_result *bus)
{
    struct lat_target tg[2];
    unsigned nt = 0;
    uint8_t payload[65536 + 8];
    uint64_t n = (uint64_t)llround(o->rate * o->seconds);
    int rc = 0;

    if (o->payload > sizeof(payload) - 8) {
        fprintf(stderr, "fidbus-bench: --payload above 65536 is not supported\n");
        return -EINVAL;
    }
    if (n == 0) {
        fprintf(stderr, "fidbus-bench: --rate x --seconds is zero events\n");
        return -EINVAL;
    }
    memset(tg, 0, sizeof(tg));
    struct fb_bench_lat_result *which[2] = {echo, bus};
    for (int i = 0; i < 2; i++) {
        if (!which[i])
            continue;
        memset(which[i], 0, sizeof(*which[i]));
        which[i]->target = i == 0 ? "echo" : o->remote ? "remote" : "fidbusd";
        which[i]->offered = o->closed ? 0 : o->rate;
        which[i]->verify = -1;
        which[i]->counted = -1;
        tg[nt].res = which[i];
        tg[nt].echo = i == 0;
        tg[nt].rd.fd = -1;
        nt++;
    }
    unsigned rounds = o->rounds ? o->rounds : nt > 1 ? 10 : 1;
    if (rounds > n)
        rounds = (unsigned)n;
    uint64_t warm_n = (uint64_t)llround(o->rate * o->warmup_ms / 1000.0);
    if (warm_n >= n / rounds)
        warm_n = 0;
    size_t plen = fb_bench_payload_item(payload, sizeof(payload), o->payload);

    for (unsigned i = 0; i < nt; i++)
        if ((rc = lat_open(&tg[i], o, n)) < 0)
            goto out;
    for (unsigned k = 0; k < rounds; k++) {
        for (unsigned j = 0; j < nt; j++) {
            /* Alternate which target goes first, so neither always follows
             * the other's wake-up pattern. */
            struct lat_target *t = &tg[k % 2 ? nt - 1 - j : j];
            struct lat_round r = {
                .t = t,
                .first = round_start(n, rounds, k),
                .end = round_start(n, rounds, k + 1),
                .interval_ns = 1e9 / o->rate,
                .spin = o->spin,
                .closed = o->closed,
                .payload = payload,
                .plen = plen,
                .timeout_ms = o->timeout_s * 1000,
            };
            if ((rc = lat_round_run(&r)) < 0)
                goto out;
        }
    }
    for (unsigned i = 0; i < nt; i++) {
        if ((rc = lat_stats(&tg[i], n, rounds, warm_n)) < 0)
            goto out;
        tg[i].res->rounds = rounds;
        tg[i].res->warmup_n = warm_n;
        if (tg[i].d)
            lat_verify(&tg[i], o->timeout_s * 1000);
    }

out:
    for (unsigned i = 0; i < nt; i++)
        lat_close(&tg[i]);
    return rc;
}
