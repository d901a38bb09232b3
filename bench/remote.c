/*
 * `fidbus-bench remote`: a remote function (issue 14) under load. The
 * spawned daemon gets a `[remote bench]` section allowing the bench's uid
 * and a route `event = bench.remote` to bench.sink@1.0.0 (more specific
 * than the count plugin's `*`, so those events go only there). N members,
 * one thread and one connection each, serve it through the serving API of
 * <fidbus/client.h> and answer every call at once (the library batches
 * the RESULTs with `upto`).
 *
 * Throughput: throughput.c's publisher (one connection, no ack) writes
 * --events PUBLISHes, then its PING barrier, which the daemon answers only
 * after every remote call before it was answered; each member counts its
 * calls, and the sum must equal the events sent (exactly once). With
 * several members it also prints each one's share (fairness).
 *
 * --idle: N members register and stay idle; the daemon's VmRSS before and
 * after.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fidbus/client.h>

#include "bench.h"

#define REMOTE_FN "bench.sink@1.0.0"
#define REMOTE_EVENT "bench.remote"
#define REMOTE_CREDIT 1024

struct member {
    const char *addr;
    struct fidbus_client *c;
    pthread_t thread;
    bool started;
    atomic_uint_fast64_t calls;
    int rc;
    char err[200];
};

struct fb_bench_members {
    unsigned n;
    struct member m[];
};

static int on_call(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    (void)c;
    (void)call;
    struct member *m = arg;
    atomic_fetch_add_explicit(&m->calls, 1, memory_order_relaxed);
    return 0;
}

static int member_join(struct member *m, int timeout_ms)
{
    struct fidbus_client_opts co = {.timeout_ms = timeout_ms};
    int rc = fidbus_client_connect(&m->c, m->addr, &co);
    if (rc < 0) {
        snprintf(m->err, sizeof m->err, "connect: %s", fidbus_strerror(rc));
        return rc;
    }
    struct fidbus_serve_opts so = {.size = sizeof so, .credit = REMOTE_CREDIT};
    rc = fidbus_register(m->c, REMOTE_FN, "event:any", &so, on_call, m, NULL);
    if (rc < 0) {
        snprintf(m->err, sizeof m->err, "register: %s (%s)", fidbus_strerror(rc),
                 fidbus_client_last_error(m->c));
        fidbus_client_close(m->c);
        m->c = NULL;
    }
    return rc;
}

static void *member_main(void *arg)
{
    struct member *m = arg;
    int rc;
    while ((rc = fidbus_serve(m->c, -1)) == 0)
        ;
    if (rc < 0) {
        m->rc = rc;
        snprintf(m->err, sizeof m->err, "serve: %s (%s)", fidbus_strerror(rc),
                 fidbus_client_last_error(m->c));
    }
    return NULL;
}

const char *fb_bench_remote_conf(char *buf, size_t len, const char *event)
{
    snprintf(buf, len,
             "\n[remote bench]\nusers = %u\ncredit = %d\n\n"
             "[route remote]\nevent = %s\nto = " REMOTE_FN "\n",
             (unsigned)getuid(), REMOTE_CREDIT, event);
    return buf;
}

int fb_bench_members_start(struct fb_bench_members **out, const char *addr, unsigned n,
                           int timeout_ms)
{
    struct fb_bench_members *ms = calloc(1, sizeof *ms + n * sizeof ms->m[0]);
    *out = NULL;
    if (strncmp(addr, "tcp:", 4) == 0) {
        /* [remote] tcp = yes needs tcp_auth = key, which the bench does not do. */
        fprintf(stderr,
                "fidbus-bench: remote members need the Unix socket; drop --tcp\n");
        free(ms);
        return -EINVAL;
    }
    if (!ms)
        return -ENOMEM;
    ms->n = n;
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        struct member *m = &ms->m[i];
        m->addr = addr;
        if ((rc = member_join(m, timeout_ms)) < 0)
            fprintf(stderr, "fidbus-bench: member %u: %s\n", i, m->err);
        else if ((rc = -pthread_create(&m->thread, NULL, member_main, m)) == 0)
            m->started = true;
    }
    if (rc < 0) {
        fb_bench_members_stop(ms);
        return rc;
    }
    *out = ms;
    return 0;
}

uint64_t fb_bench_members_calls(struct fb_bench_members *ms, uint64_t *per, unsigned nper)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < ms->n; i++) {
        uint64_t k = atomic_load(&ms->m[i].calls);
        if (i < nper)
            per[i] = k;
        sum += k;
    }
    return sum;
}

int fb_bench_members_stop(struct fb_bench_members *ms)
{
    if (!ms)
        return 0;
    int rc = 0;
    for (unsigned i = 0; i < ms->n; i++)
        if (ms->m[i].started)
            fidbus_serve_stop(ms->m[i].c);
    for (unsigned i = 0; i < ms->n; i++) {
        struct member *m = &ms->m[i];
        if (m->started)
            pthread_join(m->thread, NULL);
        if (m->rc < 0) {
            fprintf(stderr, "fidbus-bench: member %u: %s\n", i, m->err);
            rc = m->rc;
        }
        if (m->c)
            fidbus_client_close(m->c);
    }
    free(ms);
    return rc;
}

static double self_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_of(const struct fb_bench_daemon *d)
{
    struct fb_bench_cpu c;
    return fb_bench_daemon_cpu(d, &c) == 0 ? c.total : -1;
}

int fb_bench_remote(const struct fb_bench_opts *o, struct fb_bench_remote_result *res)
{
    unsigned n = o->members ? o->members : 1;
    int timeout_ms = o->timeout_s * 1000;
    char extra[512];
    struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
    dc.workers = o->workers ? o->workers : 1;
    dc.extra = fb_bench_remote_conf(extra, sizeof extra, REMOTE_EVENT);
    memset(res, 0, sizeof *res);
    res->members = n;
    res->workers = dc.workers;

    if (o->bus) {
        fprintf(stderr, "fidbus-bench: remote needs a daemon it starts itself "
                        "(its [remote] section); drop --bus\n");
        return -EINVAL;
    }
    struct fb_bench_daemon *d = NULL;
    struct fb_bench_members *ms = NULL;
    int rc = fb_bench_daemon_start(&d, &dc);
    if (rc < 0)
        return rc;
    long hwm = 0;
    fb_bench_daemon_rss(d, &res->rss0_kib, &hwm);
    if ((rc = fb_bench_members_start(&ms, d->addr, n, timeout_ms)) < 0)
        goto out;

    if (o->idle) {
        /* Every REGISTER was ACKed before _start returned; one more
         * connection's HELLO shows the daemon is serving, as `rss` does. */
        char err[256];
        int fd = fb_bench_connect(d->addr, err, sizeof err);
        struct fb_bench_reader rd = {.fd = -1};
        if (fd < 0 || (rc = fb_bench_reader_init(&rd, fd)) < 0 ||
            (rc = fb_bench_read_hello(&rd, timeout_ms, err, sizeof err)) < 0) {
            fprintf(stderr, "fidbus-bench: %s\n", err);
            rc = rc < 0 ? rc : fd;
            if (rd.msg)
                fb_bench_reader_destroy(&rd);
            if (fd >= 0)
                close(fd);
            goto out;
        }
        fb_bench_reader_destroy(&rd);
        close(fd);
        if ((rc = fb_bench_daemon_rss(d, &res->rss_kib, &res->hwm_kib)) < 0)
            goto out;
        fprintf(fb_bench_out,
                "remote idle: fidbusd (workers=%u, count.so) VmRSS %.2f MiB before, "
                "%.2f MiB with %u registered idle members (VmHWM %.2f MiB)\n",
                dc.workers, res->rss0_kib / 1024.0, res->rss_kib / 1024.0, n,
                res->hwm_kib / 1024.0);
        res->verify = 0;
        res->ok = true;
        goto out;
    }

    struct fb_bench_pubs *p = NULL;
    double cpu0 = cpu_of(d), self0 = self_cpu();
    uint64_t t0 = fb_bench_now_ns();
    rc = fb_bench_pubs_start(&p, d->addr, 1, o->payload, REMOTE_EVENT, timeout_ms,
                             &res->frame_len);
    if (rc < 0)
        goto out;
    uint64_t deadline = fb_bench_deadline(timeout_ms);
    while (fb_bench_pubs_written(p) < o->events && fb_bench_ms_left(deadline) > 0) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* The PING barrier: answered after every call before it was answered. */
    rc = fb_bench_pubs_stop(p, &res->sent, &res->errors);
    uint64_t t1 = fb_bench_now_ns();
    double cpu1 = cpu_of(d), self1 = self_cpu();
    res->seconds = (double)(t1 - t0) / 1e9;
    res->calls_per_s = res->seconds > 0 ? (double)res->sent / res->seconds : 0;
    res->daemon_cpu = cpu0 >= 0 && cpu1 >= 0 ? (cpu1 - cpu0) / res->seconds : -1;
    res->bench_cpu = (self1 - self0) / res->seconds;
    res->answered =
        fb_bench_members_calls(ms, res->per_member, FB_BENCH_REMOTE_MAX_SHOWN);
    res->verify = res->answered == res->sent ? 0 : 1;
    fprintf(fb_bench_out,
            "remote: %u member%s, 1 publisher, payload %zu B (frame %zu B), no ack, "
            "workers=%u: %.0f calls/s (%llu in %.2f s), CPU daemon %.0f%%, bench "
            "(publisher + members) %.0f%%\n",
            n, n == 1 ? "" : "s", o->payload, res->frame_len, dc.workers,
            res->calls_per_s, (unsigned long long)res->sent, res->seconds,
            res->daemon_cpu * 100, res->bench_cpu * 100);
    if (n > 1) {
        fprintf(fb_bench_out, "  calls per member:");
        for (unsigned i = 0; i < n && i < FB_BENCH_REMOTE_MAX_SHOWN; i++)
            fprintf(
                fb_bench_out, " %llu (%.1f%%)", (unsigned long long)res->per_member[i],
                res->sent ? 100.0 * (double)res->per_member[i] / (double)res->sent : 0);
        fputc('\n', fb_bench_out);
    }
    fprintf(fb_bench_out, "verify: %s sent=%llu answered=%llu errors=%llu\n",
            res->verify == 0 ? "OK" : "FAIL", (unsigned long long)res->sent,
            (unsigned long long)res->answered, (unsigned long long)res->errors);
    res->ok = rc == 0 && res->verify == 0 && res->errors == 0;

out:
    if (fb_bench_members_stop(ms) < 0)
        res->ok = false;
    int src = fb_bench_daemon_stop(d, timeout_ms);
    fb_bench_daemon_free(d);
    if (rc == 0 && src < 0)
        rc = src;
    if (rc == 0 && !res->ok)
        rc = -EPROTO;
    return rc;
}
