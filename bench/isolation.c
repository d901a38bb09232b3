/*
 * fidbus-bench isolation: what a client that never reads its answers costs
 * another client on the same worker.
 *
 * e2e.hostile asserts only what load cannot change (the stuck client is
 * paused and counted, memory stays bounded, the other client is answered);
 * the rate ratio lives here, where a quiet machine can be asked for. One
 * worker; a well-behaved connection times N acked round trips (PUBLISH with
 * the ACK flag, routed to count.so), then a second connection writes acked
 * PUBLISHes without ever reading until the daemon stops taking them (its
 * socket stays full for 200 ms), and the first times N more.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* n acked round trips on rd; the rate, or a negative errno. */
static double roundtrips(struct fb_bench_reader *rd, uint64_t *seq, unsigned n,
                         int timeout_ms)
{
    struct fidbus_buf b = {0};
    uint64_t t0 = fb_bench_now_ns();
    for (unsigned i = 0; i < n; i++) {
        uint64_t s = ++*seq;
        b.len = 0;
        int rc = fb_bench_encode_publish(&b, "bench.isolation", true, s, FIDBUS_FLAG_ACK,
                                         NULL, 0);
        if (rc == 0)
            rc = fb_bench_write_all(rd->fd, b.data, b.len);
        uint64_t deadline = fb_bench_deadline(timeout_ms);
        while (rc == 0) {
            int got = fb_bench_reader_next(rd);
            if (got == 1 && rd->msg->seq == s) {
                rc = rd->msg->type == FIDBUS_MSG_ACK ? 1 : -EPROTO;
                break;
            }
            if (got == 1)
                continue;
            if (got != 0) {
                rc = -EPROTO;
                break;
            }
            struct pollfd pfd = {.fd = rd->fd, .events = POLLIN};
            int ms = fb_bench_ms_left(deadline);
            if (ms == 0 || poll(&pfd, 1, ms) == 0) {
                rc = -ETIMEDOUT;
                break;
            }
            ssize_t r = fb_bench_reader_fill(rd);
            if (r == 0)
                rc = -ECONNRESET;
            else if (r < 0 && r != -EAGAIN)
                rc = (int)r;
        }
        if (rc < 0) {
            fidbus_buf_free(&b);
            return rc;
        }
    }
    fidbus_buf_free(&b);
    double secs = (double)(fb_bench_now_ns() - t0) / 1e9;
    return n / (secs > 0 ? secs : 1e-9);
}

/* Writes acked PUBLISHes on fd, never reading, until the daemon has taken
 * nothing for 200 ms. The frames written, or a negative errno. */
static long long stuff(int fd, int timeout_ms)
{
    struct fidbus_buf b = {0};
    long long n = 0;
    int rc = 0;
    for (uint64_t s = 1; rc == 0 && s <= 4096; s++)
        rc =
            fb_bench_encode_publish(&b, "bench.stuck", true, s, FIDBUS_FLAG_ACK, NULL, 0);
    size_t frame = b.len / 4096;
    if (rc < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        fidbus_buf_free(&b);
        return rc < 0 ? rc : -errno;
    }
    uint64_t deadline = fb_bench_deadline(timeout_ms);
    size_t off = 0;
    for (;;) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w > 0) {
            off = (off + (size_t)w) % b.len;
            n += w;
            continue;
        }
        if (w < 0 && errno != EAGAIN) {
            rc = -errno;
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, 200) == 0)
            break; /* held back: nothing taken for 200 ms */
        if (fb_bench_ms_left(deadline) == 0) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    fidbus_buf_free(&b);
    return rc < 0 ? rc : n / (long long)frame;
}

int fb_bench_isolation(const struct fb_bench_opts *o, struct fb_bench_iso_result *res)
{
    struct fb_bench_daemon *d = NULL;
    struct fb_bench_reader rd = {.fd = -1}, bad = {.fd = -1};
    struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
    char err[256] = "";
    uint64_t seq = 0;
    int rc;

    memset(res, 0, sizeof *res);
    res->n = o->events > 1000000 ? 1000000 : (unsigned)o->events;
    dc.workers = 1; /* both clients on one worker: that is the point */
    if (o->bus) {
        fprintf(stderr, "fidbus-bench: isolation starts its own daemon; drop --bus\n");
        return -EINVAL;
    }
    if ((rc = fb_bench_daemon_start(&d, &dc)) < 0)
        return rc;
    int fds[2] = {fb_bench_connect(d->addr, err, sizeof err), -1};
    if (fds[0] >= 0)
        fds[1] = fb_bench_connect(d->addr, err, sizeof err);
    if (fds[0] < 0 || fds[1] < 0) {
        rc = fds[0] < 0 ? fds[0] : fds[1];
        goto out;
    }
    if ((rc = fb_bench_reader_init(&rd, fds[0])) < 0 ||
        (rc = fb_bench_reader_init(&bad, fds[1])) < 0)
        goto out;
    if ((rc = fb_bench_read_hello(&rd, dc.timeout_ms, err, sizeof err)) < 0 ||
        (rc = fb_bench_read_hello(&bad, dc.timeout_ms, err, sizeof err)) < 0)
        goto out;
    double r = roundtrips(&rd, &seq, res->n, dc.timeout_ms);
    if (r < 0) {
        rc = (int)r;
        snprintf(err, sizeof err, "round trips before: %s", strerror(-rc));
        goto out;
    }
    res->before = r;
    long long stuck = stuff(bad.fd, dc.timeout_ms);
    if (stuck < 0) {
        rc = (int)stuck;
        snprintf(err, sizeof err, "stuck client: %s", strerror(-rc));
        goto out;
    }
    res->stuck_frames = (uint64_t)stuck;
    if ((rc = fb_bench_daemon_rss(d, &res->rss_kib, &res->hwm_kib)) < 0)
        goto out;
    r = roundtrips(&rd, &seq, res->n, dc.timeout_ms);
    if (r < 0) {
        rc = (int)r;
        snprintf(err, sizeof err, "round trips with a stuck client: %s", strerror(-rc));
        goto out;
    }
    res->during = r;
    res->ratio = res->during / res->before;
    fprintf(fb_bench_out,
            "isolation: %u acked round trips on one worker: %.0f/s alone, %.0f/s next "
            "to a client that never reads (%llu frames written, then held back): "
            "ratio %.2f; daemon VmRSS %.1f MiB\n",
            res->n, res->before, res->during, (unsigned long long)res->stuck_frames,
            res->ratio, res->rss_kib / 1024.0);
    /* The stuck client goes first: the daemon would linger for its answers. */
    fb_bench_reader_destroy(&bad);
    close(fds[1]);
    fds[1] = -1;
    close(fds[0]);
    fds[0] = -1;
    rc = fb_bench_daemon_stop(d, dc.timeout_ms) < 0 ? 1 : 0;
    res->ok = rc == 0;

out:
    if (rc < 0 && err[0])
        fprintf(stderr, "fidbus-bench: isolation: %s\n", err);
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rd.msg)
        fb_bench_reader_destroy(&rd);
    if (bad.msg)
        fb_bench_reader_destroy(&bad);
    fb_bench_daemon_free(d);
    return rc;
}
