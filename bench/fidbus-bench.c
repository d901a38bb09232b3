/*
 * fidbus-bench: load generator and benchmark harness for fidbusd.
 *
 *   fidbus-bench throughput --events N --conns C --payload BYTES [--workers W]
 *   fidbus-bench latency --rate R --seconds S [--payload BYTES]
 *                        [--baseline echo | --compare]
 *   fidbus-bench rss
 *   fidbus-bench change [--seconds S] [--conns C] [--workers W]
 *   fidbus-bench all
 *
 * By default every run starts its own fidbusd from the build tree (see
 * spawn.c) and checks afterwards, with the count plugin's report, that
 * every event sent was dispatched exactly once; --bus ADDR attaches to a
 * running daemon instead (no exactly-once check then). This file parses
 * the command line and prints the figures; bench/README.md says how to
 * read them.
 */
#include "bench.h"

#include <errno.h>
#include <fidbus/client.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FIDBUS_BUILD_DIR
#define FIDBUS_BUILD_DIR "."
#endif

FILE *fb_bench_out;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: fidbus-bench [OPTIONS] MODE\n"
        "modes:\n"
        "  throughput   C connections publish N events without ack, pipelined;\n"
        "               reports events/s and checks exactly-once delivery\n"
        "  latency      acked publishes at a fixed offered rate (open loop);\n"
        "               reports p50/p90/p99/p99.9/max round trip\n"
        "  rss          idle VmRSS/VmHWM of fidbusd with count.so and log.so\n"
        "  change       route changes and plugin reloads under full publishing\n"
        "               load: REQUEST->REPLY p50/p99/max, changes/s, events/s dip\n"
        "  isolation    acked round trips/s on one worker, alone and next to a\n"
        "               client that never reads its answers (--events each)\n"
        "  remote       a remote function served by --members N member threads\n"
        "               (serving API): calls/s with the exactly-once check and\n"
        "               each member's share; --idle: fidbusd's RSS with N members\n"
        "  all          the issue's figures in one go, with a summary table\n"
        "options:\n"
        "  --events N        throughput: events in total (default 10000000);\n"
        "                    isolation: round trips in each phase (default 20000)\n"
        "  --conns C         throughput, change: publisher connections (default 1)\n"
        "  --payload BYTES   size of the CBOR payload item (default 64)\n"
        "  --workers W       fidbusd workers (default: throughput, change min(C, CPUs),\n"
        "                    latency 1, rss the daemon's default)\n"
        "  --repeat K        throughput runs, median reported (default 1; all: 3)\n"
        "  --rate R          latency: offered events/s (default 20000)\n"
        "  --seconds S       latency: duration; change: each phase's (default 5)\n"
        "  --warmup-ms MS    latency: sent but not measured, each round (default 50)\n"
        "  --rounds K        latency: alternating rounds (default 10 with --compare)\n"
        "  --spin            latency: busy-wait for send times instead of sleeping\n"
        "  --closed          latency: closed loop, one event in flight (--rate x\n"
        "                    --seconds events), each timed from its write\n"
        "  --baseline echo   latency: measure the in-process libuv echo server\n"
        "  --baseline decode throughput: measure the in-process decode baseline (a\n"
        "                    libuv reader that only decodes each frame with libfidbus)\n"
        "  --compare         latency: echo and fidbusd in alternating rounds, side by\n"
        "                    side; throughput: decode baseline and fidbusd alternately\n"
        "  --bus ADDR        use a running daemon (unix:PATH, PATH, tcp:HOST:PORT)\n"
        "  --tcp             spawned daemon: connect over 127.0.0.1 TCP\n"
        "  --fidbusd PATH    daemon binary (default $FIDBUS_BUILD_DIR/daemon/fidbusd)\n"
        "  --plugin-dir DIR  count.so/log.so (default $FIDBUS_BUILD_DIR/plugins)\n"
        "  --timeout S       bound on every wait of a run (default 60)\n"
        "  --json            machine-readable results on stdout\n"
        "  --keep            keep the spawned daemon's temp dir\n"
        "  --members N       remote: serving members (default 1)\n"
        "  --idle            remote: register the members, report idle VmRSS\n"
        "  --remote          latency: route the events to a remote function served\n"
        "                    by --members member threads (--compare: next to echo)\n");
}

static unsigned ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static unsigned default_tp_workers(const struct fb_bench_opts *o)
{
    if (o->workers)
        return o->workers;
    return o->conns < ncpus() ? o->conns : ncpus();
}

/* ------------------------------------------------------------ printing */

static void print_verify(int verify, uint64_t sent, long long counted)
{
    if (verify == 0)
        fprintf(fb_bench_out, "verify: OK sent=%llu counted=%lld\n",
                (unsigned long long)sent, counted);
    else if (verify == 1)
        fprintf(fb_bench_out, "verify: FAIL sent=%llu counted=%lld\n",
                (unsigned long long)sent, counted);
}

static json_t *tp_json(const struct fb_bench_tp_result *r)
{
    return json_pack("{s:i, s:i, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:s, s:I, s:b}",
                     "conns", r->conns, "workers", r->workers, "payload", (int)r->payload,
                     "frame", (int)r->frame_len, "sent", (json_int_t)r->sent, "errors",
                     (json_int_t)r->errors, "seconds", r->seconds, "events_per_s",
                     r->events_per_s, "mb_per_s", r->mb_per_s, "daemon_cpu",
                     r->daemon_cpu, "verify",
                     r->verify == 0   ? "OK"
                     : r->verify == 1 ? "FAIL"
                                      : "skipped",
                     "counted", (json_int_t)r->counted, "ok", r->ok);
}

static json_t *lat_json(const struct fb_bench_lat_result *r)
{
    return json_pack("{s:s, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f,"
                     " s:f, s:f, s:f, s:f, s:f, s:f, s:s, s:b}",
                     "target", r->target, "offered", r->offered, "achieved", r->achieved,
                     "scheduled", (json_int_t)r->scheduled, "measured",
                     (json_int_t)r->measured, "errors", (json_int_t)r->errors, "missing",
                     (json_int_t)r->missing, "p50_us", r->p50, "p90_us", r->p90, "p99_us",
                     r->p99, "p999_us", r->p999, "max_us", r->max, "from_write_p50_us",
                     r->w50, "from_write_p99_us", r->w99, "from_write_p999_us", r->w999,
                     "send_lag_p50_us", r->lag_p50, "send_lag_p99_us", r->lag_p99,
                     "send_lag_max_us", r->lag_max, "verify",
                     r->verify == 0   ? "OK"
                     : r->verify == 1 ? "FAIL"
                                      : "skipped",
                     "ok", r->ok);
}

static int cmp_tp(const void *a, const void *b)
{
    const struct fb_bench_tp_result *x = a, *y = b;

    return x->events_per_s < y->events_per_s ? -1 : x->events_per_s > y->events_per_s;
}

/* ----------------------------------------------------------------- modes */

/* Runs throughput `repeat` times; *median gets the median run. */
static int run_throughput(const struct fb_bench_opts *o, unsigned repeat,
                          struct fb_bench_tp_result *median, json_t *js)
{
    struct fb_bench_tp_result *runs = calloc(repeat, sizeof(*runs));
    bool all_ok = true;
    int rc = 0;

    if (!runs)
        return -ENOMEM;
    char workers[32] = "";
    if (!o->bus)
        snprintf(workers, sizeof(workers), ", workers=%u", o->workers);
    fprintf(fb_bench_out,
            "throughput: %u conn%s%s, payload %zu B, %llu events, "
            "no ack%s%s\n",
            o->conns, o->conns == 1 ? "" : "s", workers, o->payload,
            (unsigned long long)o->events,
            o->bus   ? ", bus "
            : o->tcp ? ", over TCP"
                     : "",
            o->bus ? o->bus : "");
    json_t *arr = json_array();
    unsigned done = 0;
    for (; done < repeat; done++) {
        struct fb_bench_tp_result *r = &runs[done];
        rc = fb_bench_throughput(o, r);
        if (rc < 0) {
            fprintf(fb_bench_out, "  run %u/%u: FAILED (%s)\n", done + 1, repeat,
                    strerror(-rc));
            print_verify(r->verify, r->sent, r->counted);
            all_ok = false;
            break;
        }
        fprintf(fb_bench_out,
                "  run %u/%u: %.3f M events/s  %.1f MB/s  "
                "(%llu in %.3f s, %zu-byte frames",
                done + 1, repeat, r->events_per_s / 1e6, r->mb_per_s,
                (unsigned long long)r->sent, r->seconds, r->frame_len);
        if (r->daemon_cpu >= 0) {
            fprintf(fb_bench_out, ", daemon CPU %.0f%%", r->daemon_cpu * 100);
            for (unsigned i = 0; i < r->nthreads; i++)
                fprintf(fb_bench_out, "%s%.0f", i ? "+" : " = ", r->thread_cpu[i] * 100);
        }
        fprintf(fb_bench_out, ")  errors=%llu\n", (unsigned long long)r->errors);
        print_verify(r->verify, r->sent, r->counted);
        json_array_append_new(arr, tp_json(r));
        if (!r->ok)
            all_ok = false;
    }
    if (done > 0) {
        qsort(runs, done, sizeof(*runs), cmp_tp);
        *median = runs[done / 2];
        median->ok = all_ok;
        if (done > 1)
            fprintf(fb_bench_out, "  median of %u: %.3f M events/s  %.1f MB/s\n", done,
                    median->events_per_s / 1e6, median->mb_per_s);
    } else {
        memset(median, 0, sizeof(*median));
    }
    if (js) {
        json_t *m = done ? tp_json(median) : json_null();
        json_object_set_new(js, "runs", arr);
        json_object_set_new(js, "median", m);
        json_object_set_new(js, "ok", json_boolean(all_ok && rc == 0));
    } else {
        json_decref(arr);
    }
    free(runs);
    return rc < 0 ? rc : all_ok ? 0 : 1;
}

/*
 * throughput --compare: the decode baseline and fidbusd, `repeat` rounds
 * each in alternating order (decode first in even rounds), so both see
 * the same stretch of a noisy machine; medians and fidbusd's share of the
 * baseline.
 */
static int run_throughput_compare(const struct fb_bench_opts *o, unsigned repeat,
                                  json_t *js)
{
    struct fb_bench_tp_result *runs[2] = {calloc(repeat, sizeof(**runs)),
                                          calloc(repeat, sizeof(**runs))};
    const char *const name[2] = {"decode", "fidbusd"};
    bool all_ok = true;
    int rc = 0;

    if (!runs[0] || !runs[1]) {
        free(runs[0]);
        free(runs[1]);
        return -ENOMEM;
    }
    fprintf(fb_bench_out,
            "throughput: 1 conn each, payload %zu B, %llu events, no ack, decode "
            "baseline and fidbusd (workers=%u) in %u alternating rounds\n",
            o->payload, (unsigned long long)o->events, o->workers, repeat);
    unsigned done = 0;
    for (; done < repeat && rc == 0; done++) {
        for (int k = 0; k < 2 && rc == 0; k++) {
            int which = done % 2 == 0 ? k : 1 - k;
            struct fb_bench_opts x = *o;
            x.conns = 1;
            x.decode_baseline = which == 0;
            struct fb_bench_tp_result *r = &runs[which][done];
            if ((rc = fb_bench_throughput(&x, r)) < 0) {
                fprintf(fb_bench_out, "  round %u %s: FAILED (%s)\n", done + 1,
                        name[which], strerror(-rc));
                break;
            }
            fprintf(fb_bench_out, "  round %u %-7s %.3f M events/s\n", done + 1,
                    name[which], r->events_per_s / 1e6);
            print_verify(r->verify, r->sent, r->counted);
            all_ok = all_ok && r->ok;
        }
    }
    if (rc == 0) {
        double med[2];
        for (int k = 0; k < 2; k++) {
            qsort(runs[k], done, sizeof(*runs[k]), cmp_tp);
            med[k] = runs[k][done / 2].events_per_s;
        }
        double share = med[0] > 0 ? med[1] / med[0] : 0;
        fprintf(fb_bench_out,
                "  median of %u: decode %.3f M/s, fidbusd %.3f M/s: fidbusd at %.0f%% "
                "of the decode baseline\n",
                done, med[0] / 1e6, med[1] / 1e6, share * 100);
        if (js) {
            json_object_set_new(js, "decode_median", tp_json(&runs[0][done / 2]));
            json_object_set_new(js, "fidbusd_median", tp_json(&runs[1][done / 2]));
            json_object_set_new(js, "share_of_decode", json_real(share));
            json_object_set_new(js, "ok", json_boolean(all_ok));
        }
    }
    free(runs[0]);
    free(runs[1]);
    return rc < 0 ? rc : all_ok ? 0 : 1;
}

static void print_lat(const struct fb_bench_lat_result *r)
{
    char offered[64] = "closed loop (one in flight)";
    if (r->offered > 0)
        snprintf(offered, sizeof(offered), "offered %.0f/s", r->offered);
    fprintf(fb_bench_out,
            "latency %s: %s, achieved %.0f/s, %llu events in "
            "%u round%s (%llu measured, first %llu of each round not)\n",
            r->target, offered, r->achieved, (unsigned long long)r->scheduled, r->rounds,
            r->rounds == 1 ? "" : "s", (unsigned long long)r->measured,
            (unsigned long long)r->warmup_n);
    fprintf(fb_bench_out,
            "  p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
            "max %.1f us  errors=%llu missing=%llu\n",
            r->p50, r->p90, r->p99, r->p999, r->max, (unsigned long long)r->errors,
            (unsigned long long)r->missing);
    fprintf(fb_bench_out,
            "  sender lateness (included above): p50 %.1f us  p99 %.1f us  "
            "max %.1f us\n",
            r->lag_p50, r->lag_p99, r->lag_max);
    fprintf(fb_bench_out,
            "  from the actual write instead:    p50 %.1f us  p99 %.1f us  "
            "p99.9 %.1f us\n",
            r->w50, r->w99, r->w999);
    print_verify(r->verify, r->scheduled, r->counted);
}

static int run_latency(const struct fb_bench_opts *o, struct fb_bench_lat_result *echo,
                       struct fb_bench_lat_result *bus, json_t *js)
{
    struct fb_bench_opts lo = *o;
    bool want_echo = o->echo_baseline || o->compare;
    bool want_bus = !o->echo_baseline || o->compare;
    bool ok = true;
    int rc;

    if (!lo.workers)
        lo.workers = 1;
    memset(echo, 0, sizeof(*echo));
    memset(bus, 0, sizeof(*bus));
    fprintf(fb_bench_out,
            "latency: 1 conn, acked publish, payload %zu B, %s %.0f/s "
            "for %.1f s%s\n",
            o->payload, o->closed ? "closed loop, events of" : "offered", o->rate,
            o->seconds,
            o->compare && o->remote ? " each, echo and remote in alternating rounds"
            : o->compare            ? " each, echo and fidbusd in alternating rounds"
            : want_echo             ? " (echo baseline)"
                                    : "");
    rc = fb_bench_latency(&lo, want_echo ? echo : NULL, want_bus ? bus : NULL);
    if (rc < 0) {
        fprintf(fb_bench_out, "latency: FAILED (%s)\n", strerror(-rc));
        return rc;
    }
    if (want_echo) {
        print_lat(echo);
        ok = ok && echo->ok;
        if (js)
            json_object_set_new(js, "echo", lat_json(echo));
    }
    if (want_bus) {
        print_lat(bus);
        ok = ok && bus->ok;
        if (js)
            json_object_set_new(js, "fidbusd", lat_json(bus));
    }
    if (o->compare) {
        double ratio = echo->p99 > 0 ? bus->p99 / echo->p99 : 0;
        fprintf(fb_bench_out, "  %-8s %9s %9s %9s %9s %9s %11s\n", "", "p50 us", "p90 us",
                "p99 us", "p99.9 us", "max us", "achieved/s");
        const struct fb_bench_lat_result *rs[2] = {echo, bus};
        for (int i = 0; i < 2; i++)
            fprintf(fb_bench_out, "  %-8s %9.1f %9.1f %9.1f %9.1f %9.1f %11.0f\n",
                    rs[i]->target, rs[i]->p50, rs[i]->p90, rs[i]->p99, rs[i]->p999,
                    rs[i]->max, rs[i]->achieved);
        fprintf(fb_bench_out, "  from the actual write:\n");
        for (int i = 0; i < 2; i++)
            fprintf(fb_bench_out, "  %-8s %9.1f %9s %9.1f %9.1f\n", rs[i]->target,
                    rs[i]->w50, "", rs[i]->w99, rs[i]->w999);
        double wratio = echo->w99 > 0 ? bus->w99 / echo->w99 : 0;
        fprintf(fb_bench_out,
                "  p99 ratio %s/echo: %.2f from the scheduled time, "
                "%.2f from the write (target <= %s)\n",
                bus->target, ratio, wratio, o->remote ? "2.5" : "1.30");
        if (js) {
            json_object_set_new(js, "p99_ratio", json_real(ratio));
            json_object_set_new(js, "p99_ratio_from_write", json_real(wratio));
        }
    }
    if (js)
        json_object_set_new(js, "ok", json_boolean(ok));
    return ok ? 0 : 1;
}

/* Waits for the ACK of the PING with `seq`. */
static int ping_roundtrip(struct fb_bench_reader *rd, uint64_t seq, int timeout_ms)
{
    struct fidbus_buf b = {0};
    uint64_t deadline = fb_bench_deadline(timeout_ms);
    int rc = fb_bench_encode_ping(&b, seq);

    if (rc == 0)
        rc = fb_bench_write_all(rd->fd, b.data, b.len);
    fidbus_buf_free(&b);
    while (rc == 0) {
        int n = fb_bench_reader_next(rd);
        if (n == 1 && rd->msg->type == FIDBUS_MSG_ACK && rd->msg->seq == seq)
            return 0;
        if (n == 1)
            continue;
        if (n != 0)
            return -EPROTO;
        struct pollfd pfd = {.fd = rd->fd, .events = POLLIN};
        int ms = fb_bench_ms_left(deadline);
        if (ms == 0 || poll(&pfd, 1, ms) == 0)
            return -ETIMEDOUT;
        ssize_t got = fb_bench_reader_fill(rd);
        if (got == 0)
            return -ECONNRESET;
        if (got < 0 && got != -EAGAIN)
            rc = (int)got;
    }
    return rc;
}

static int run_rss(const struct fb_bench_opts *o, long *rss, long *hwm, json_t *js)
{
    struct fb_bench_daemon *d = NULL;
    struct fb_bench_reader rd = {.fd = -1};
    char err[256] = "";
    int rc, fd = -1;
    struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
    dc.with_log = true;

    if (o->bus) {
        fprintf(stderr, "fidbus-bench: rss measures a daemon it starts itself; "
                        "drop --bus\n");
        return -EINVAL;
    }
    if ((rc = fb_bench_daemon_start(&d, &dc)) < 0)
        return rc;
    if ((fd = fb_bench_connect(d->addr, err, sizeof(err))) < 0) {
        rc = fd;
        goto out;
    }
    if ((rc = fb_bench_reader_init(&rd, fd)) < 0)
        goto out;
    if ((rc = fb_bench_read_hello(&rd, dc.timeout_ms, err, sizeof(err))) < 0)
        goto out;
    if ((rc = ping_roundtrip(&rd, 1, dc.timeout_ms)) < 0) {
        snprintf(err, sizeof(err), "PING: %s", strerror(-rc));
        goto out;
    }
    if ((rc = fb_bench_daemon_rss(d, rss, hwm)) < 0) {
        snprintf(err, sizeof(err), "reading /proc/%d/status: %s", (int)d->pid,
                 strerror(-rc));
        goto out;
    }
    fprintf(fb_bench_out,
            "rss: fidbusd idle (workers=%u%s, count.so + log.so, one "
            "client after a PING): VmRSS %.2f MiB, VmHWM %.2f MiB\n",
            o->workers, o->workers ? "" : " = CPUs", *rss / 1024.0, *hwm / 1024.0);
    if (js) {
        json_object_set_new(js, "vmrss_mib", json_real(*rss / 1024.0));
        json_object_set_new(js, "vmhwm_mib", json_real(*hwm / 1024.0));
    }
    close(fd);
    fd = -1;
    if (fb_bench_daemon_stop(d, dc.timeout_ms) < 0)
        rc = 1;

out:
    if (rc < 0 && err[0])
        fprintf(stderr, "fidbus-bench: rss: %s\n", err);
    if (fd >= 0)
        close(fd);
    if (rd.msg)
        fb_bench_reader_destroy(&rd);
    fb_bench_daemon_free(d);
    return rc;
}

static json_t *ch_phase_json(const struct fb_bench_ch_phase *p)
{
    return json_pack("{s:s, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                     "phase", p->name, "seconds", p->seconds, "changes",
                     (json_int_t)p->changes, "failed", (json_int_t)p->failed, "per_s",
                     p->per_s, "reply_p50_ms", p->p50_ms, "reply_p99_ms", p->p99_ms,
                     "reply_max_ms", p->max_ms, "events_per_s", p->eps,
                     "events_per_s_min_100ms", p->eps_min, "daemon_cpu", p->daemon_cpu,
                     "bench_cpu", p->bench_cpu);
}

/* 1 - during/baseline, in percent (negative: faster than the baseline). */
static double dip_pct(const struct fb_bench_ch_result *r, int phase)
{
    double base = r->ph[FB_BENCH_CH_BASELINE].eps;

    return base > 0 ? (1 - r->ph[phase].eps / base) * 100 : 0;
}

static void print_changes(const char *label, const char *what,
                          const struct fb_bench_ch_phase *p, const char *target)
{
    fprintf(fb_bench_out,
            "%s: %llu %s in %.1f s = %.0f/s; reply p50 %.2f ms p99 %.2f ms max %.2f ms"
            "%s%s%s\n",
            label, (unsigned long long)p->changes, what, p->seconds, p->per_s, p->p50_ms,
            p->p99_ms, p->max_ms, *target ? "  (" : "", target, *target ? ")" : "");
    if (p->failed)
        fprintf(fb_bench_out, "  FAILED requests: %llu\n", (unsigned long long)p->failed);
}

static int run_change(const struct fb_bench_opts *o, struct fb_bench_ch_result *r,
                      json_t *js)
{
    if (o->bus) {
        fprintf(stderr, "fidbus-bench: change needs the control socket of a daemon it "
                        "starts itself; drop --bus\n");
        return -EINVAL;
    }
    fprintf(fb_bench_out,
            "change: %u publisher conn%s, workers=%u, payload %zu B, no ack; phases of "
            "%.1f s: baseline, route add/del, route.apply, plugin.reload\n",
            o->conns, o->conns == 1 ? "" : "s", o->workers, o->payload, o->seconds);
    int rc = fb_bench_change(o, r);
    if (rc < 0) {
        fprintf(fb_bench_out, "change: FAILED (%s)\n", fidbus_strerror(rc));
        if (js)
            json_object_set_new(js, "ok", json_false());
        return rc;
    }
    const struct fb_bench_ch_phase *ph = r->ph;
    fprintf(
        fb_bench_out,
        "the save alone, done by the bench (%zu B: write, fdatasync, rename, fsync "
        "dir): idle p50 %.2f ms p99 %.2f ms, under the load p50 %.2f ms p99 %.2f ms\n",
        r->save_bytes, r->save_p50_ms[0], r->save_p99_ms[0], r->save_p50_ms[1],
        r->save_p99_ms[1]);
    print_changes("route change", "changes", &ph[FB_BENCH_CH_ROUTE],
                  "route.add/route.del of a side route; target >= 500/s, p99 < 10 ms");
    print_changes("route.apply", "transactions", &ph[FB_BENCH_CH_APPLY],
                  "del + add moving a split route's weights");
    print_changes("plugin reload", "reloads", &ph[FB_BENCH_CH_RELOAD],
                  "the routed count instance; target >= 10/s");
    fprintf(fb_bench_out,
            "events/s: baseline %.2f M, during changes %.2f M (dip %.0f%%), during "
            "route.apply %.2f M (dip %.0f%%), during reloads %.2f M (dip %.0f%%)\n",
            ph[FB_BENCH_CH_BASELINE].eps / 1e6, ph[FB_BENCH_CH_ROUTE].eps / 1e6,
            dip_pct(r, FB_BENCH_CH_ROUTE), ph[FB_BENCH_CH_APPLY].eps / 1e6,
            dip_pct(r, FB_BENCH_CH_APPLY), ph[FB_BENCH_CH_RELOAD].eps / 1e6,
            dip_pct(r, FB_BENCH_CH_RELOAD));
    fprintf(fb_bench_out,
            "  slowest 100 ms bucket: baseline %.2f M, changes %.2f M, route.apply "
            "%.2f M, reloads %.2f M\n",
            ph[FB_BENCH_CH_BASELINE].eps_min / 1e6, ph[FB_BENCH_CH_ROUTE].eps_min / 1e6,
            ph[FB_BENCH_CH_APPLY].eps_min / 1e6, ph[FB_BENCH_CH_RELOAD].eps_min / 1e6);
    fprintf(fb_bench_out, "  CPU (100%% = one core) daemon / bench:");
    for (int i = 0; i < FB_BENCH_CH_PHASES; i++)
        fprintf(fb_bench_out, "%s %s %.0f%% / %.0f%%", i ? "," : "", ph[i].name,
                ph[i].daemon_cpu * 100, ph[i].bench_cpu * 100);
    fprintf(fb_bench_out, "\n");
    bool stats_ok = r->have_stats && r->received == r->sent && r->unrouted == 0 &&
                    r->daemon_errors == 0;
    fprintf(fb_bench_out,
            "stats: %s received=%llu dispatched=%llu unrouted=%llu errors=%llu "
            "(sent=%llu, ERROR frames=%llu)\n",
            stats_ok ? "OK" : "FAIL", (unsigned long long)r->received,
            (unsigned long long)r->dispatched, (unsigned long long)r->unrouted,
            (unsigned long long)r->daemon_errors, (unsigned long long)r->sent,
            (unsigned long long)r->errors);
    fprintf(fb_bench_out,
            "verify: %s sent=%llu counted=%lld (summed over %u count "
            "instances' reports)\n",
            r->verify == 0 ? "OK" : "FAIL", (unsigned long long)r->sent, r->counted,
            r->reports);
    if (js) {
        json_t *arr = json_array();
        for (int i = 0; i < FB_BENCH_CH_PHASES; i++)
            json_array_append_new(arr, ch_phase_json(&ph[i]));
        json_object_set_new(js, "phases", arr);
        json_object_set_new(js, "conns", json_integer(r->conns));
        json_object_set_new(js, "workers", json_integer(r->workers));
        json_object_set_new(js, "frame", json_integer((json_int_t)r->frame_len));
        json_object_set_new(js, "save_idle_p50_ms", json_real(r->save_p50_ms[0]));
        json_object_set_new(js, "save_idle_p99_ms", json_real(r->save_p99_ms[0]));
        json_object_set_new(js, "save_loaded_p50_ms", json_real(r->save_p50_ms[1]));
        json_object_set_new(js, "save_loaded_p99_ms", json_real(r->save_p99_ms[1]));
        json_object_set_new(js, "dip_route_pct",
                            json_real(dip_pct(r, FB_BENCH_CH_ROUTE)));
        json_object_set_new(js, "dip_apply_pct",
                            json_real(dip_pct(r, FB_BENCH_CH_APPLY)));
        json_object_set_new(js, "dip_reload_pct",
                            json_real(dip_pct(r, FB_BENCH_CH_RELOAD)));
        json_object_set_new(js, "sent", json_integer((json_int_t)r->sent));
        json_object_set_new(js, "received", json_integer((json_int_t)r->received));
        json_object_set_new(js, "dispatched", json_integer((json_int_t)r->dispatched));
        json_object_set_new(js, "unrouted", json_integer((json_int_t)r->unrouted));
        json_object_set_new(js, "daemon_errors",
                            json_integer((json_int_t)r->daemon_errors));
        json_object_set_new(js, "counted", json_integer(r->counted));
        json_object_set_new(js, "verify", json_string(r->verify == 0 ? "OK" : "FAIL"));
        json_object_set_new(js, "ok", json_boolean(r->ok));
    }
    return r->ok ? 0 : 1;
}

static void row(FILE *f, const char *figure, const char *measured, const char *target)
{
    if (*target)
        fprintf(f, "%-44s %-32s %s\n", figure, measured, target);
    else
        fprintf(f, "%-44s %s\n", figure, measured);
}

static int run_all(const struct fb_bench_opts *o, unsigned repeat, json_t *js)
{
    struct fb_bench_opts t = *o;
    struct fb_bench_tp_result tp1, tp2;
    struct fb_bench_lat_result echo, bus;
    struct fb_bench_ch_result ch = {0};
    long rss = -1, hwm = -1;
    int rc1, rc2, rc3, rc4 = 0, rc5 = 0;
    json_t *j1 = js ? json_object() : NULL, *j2 = js ? json_object() : NULL;
    json_t *j3 = js ? json_object() : NULL, *j4 = js ? json_object() : NULL;
    json_t *j5 = js ? json_object() : NULL;

    t.conns = 1;
    t.workers = 1;
    rc1 = run_throughput(&t, repeat, &tp1, j1);
    t.conns = 2;
    t.workers = 2;
    rc2 = run_throughput(&t, repeat, &tp2, j2);
    t = *o;
    t.compare = true;
    t.workers = 1;
    rc3 = run_latency(&t, &echo, &bus, j3);
    if (!o->bus) {
        t = *o;
        t.workers = 0;
        rc4 = run_rss(&t, &rss, &hwm, j4);
        t = *o;
        t.workers = default_tp_workers(&t);
        rc5 = run_change(&t, &ch, j5);
    }

    FILE *f = fb_bench_out;
    char m[96];
    fprintf(f,
            "\n== fidbus-bench summary (throughput: median of %u; noisy machine: "
            "compare within one run) ==\n",
            repeat);
    row(f, "figure", "measured", "target");
    if (rc1 >= 0 && tp1.sent)
        snprintf(m, sizeof(m), "%.2f M events/s (%.0f MB/s)", tp1.events_per_s / 1e6,
                 tp1.mb_per_s);
    row(f, "throughput: 1 conn, 64 B, no ack, workers=1",
        rc1 >= 0 && tp1.sent ? m : "FAILED", ">= 3 M/s (aim 5 M/s)");
    if (rc2 >= 0 && tp2.sent)
        snprintf(m, sizeof(m), "%.2f M events/s (%.0f MB/s)", tp2.events_per_s / 1e6,
                 tp2.mb_per_s);
    row(f, "throughput: 2 conns, 64 B, no ack, workers=2",
        rc2 >= 0 && tp2.sent ? m : "FAILED", "");
    char label[64];
    snprintf(label, sizeof(label), "ack RTT @ %.0f/s p50/p99/p99.9, fidbusd", o->rate);
    snprintf(m, sizeof(m), "%.1f / %.1f / %.1f us", bus.p50, bus.p99, bus.p999);
    row(f, label, rc3 >= 0 ? m : "FAILED", "");
    snprintf(label, sizeof(label), "ack RTT @ %.0f/s p50/p99/p99.9, echo", o->rate);
    snprintf(m, sizeof(m), "%.1f / %.1f / %.1f us", echo.p50, echo.p99, echo.p999);
    row(f, label, rc3 >= 0 ? m : "FAILED", "");
    snprintf(m, sizeof(m), "%.2f", echo.p99 > 0 ? bus.p99 / echo.p99 : 0);
    row(f, "p99 ratio fidbusd/echo", rc3 >= 0 ? m : "FAILED", "<= 1.30");
    snprintf(m, sizeof(m), "%.1f / %.1f us, ratio %.2f", bus.w50, bus.w99,
             echo.w99 > 0 ? bus.w99 / echo.w99 : 0);
    row(f, "  same from the write, fidbusd p50/p99", rc3 >= 0 ? m : "FAILED", "");
    snprintf(m, sizeof(m), "%.1f us", (bus.lag_p50 + echo.lag_p50) / 2);
    row(f, "  sender wakeup lateness p50 (in RTTs)", rc3 >= 0 ? m : "FAILED", "");
    snprintf(m, sizeof(m), "%.2f MiB (VmHWM %.2f MiB)", rss / 1024.0, hwm / 1024.0);
    row(f, "idle RSS, count.so + log.so",
        o->bus     ? "skipped (--bus)"
        : rc4 >= 0 ? m
                   : "FAILED",
        "< 8 MiB");
    const struct fb_bench_ch_phase *cr = &ch.ph[FB_BENCH_CH_ROUTE];
    const struct fb_bench_ch_phase *cl = &ch.ph[FB_BENCH_CH_RELOAD];
    const char *ch_state = o->bus ? "skipped (--bus)" : "FAILED";
    snprintf(m, sizeof(m), "%.2f / %.2f / %.2f ms", cr->p50_ms, cr->p99_ms, cr->max_ms);
    row(f, "route change REPLY p50/p99/max, under load",
        !o->bus && rc5 >= 0 ? m : ch_state, "p99 < 10 ms");
    snprintf(m, sizeof(m), "%.0f/s", cr->per_s);
    row(f, "durable route changes/s, under load", !o->bus && rc5 >= 0 ? m : ch_state,
        ">= 500/s");
    snprintf(m, sizeof(m), "%.1f/s (REPLY p99 %.1f ms)", cl->per_s, cl->p99_ms);
    row(f, "plugin reloads/s, under load", !o->bus && rc5 >= 0 ? m : ch_state, ">= 10/s");
    snprintf(m, sizeof(m), "%.0f%% (%.2f M -> %.2f M events/s)",
             dip_pct(&ch, FB_BENCH_CH_ROUTE), ch.ph[FB_BENCH_CH_BASELINE].eps / 1e6,
             cr->eps / 1e6);
    row(f, "events/s dip during route changes", !o->bus && rc5 >= 0 ? m : ch_state, "");
    bool ok = rc1 == 0 && rc2 == 0 && rc3 == 0 && rc4 == 0 && rc5 == 0;
    row(f, "exactly-once and no errors, every run",
        o->bus ? (ok ? "no errors (not checked: --bus)" : "FAIL") : (ok ? "OK" : "FAIL"),
        "");
    if (js) {
        json_object_set_new(js, "throughput_1conn", j1);
        json_object_set_new(js, "throughput_2conns", j2);
        json_object_set_new(js, "latency", j3);
        json_object_set_new(js, "rss", j4);
        json_object_set_new(js, "change", j5);
        json_object_set_new(js, "ok", json_boolean(ok));
    }
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ main */

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return !errno && end != s && !*end && *out > 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"events", required_argument, NULL, 'n'},
        {"conns", required_argument, NULL, 'c'},
        {"payload", required_argument, NULL, 'p'},
        {"workers", required_argument, NULL, 'w'},
        {"repeat", required_argument, NULL, 'r'},
        {"rate", required_argument, NULL, 'R'},
        {"seconds", required_argument, NULL, 's'},
        {"warmup-ms", required_argument, NULL, 'W'},
        {"rounds", required_argument, NULL, 'o'},
        {"spin", no_argument, NULL, 'S'},
        {"closed", no_argument, NULL, 'L'},
        {"baseline", required_argument, NULL, 'b'},
        {"compare", no_argument, NULL, 'C'},
        {"bus", required_argument, NULL, 'B'},
        {"tcp", no_argument, NULL, 'T'},
        {"fidbusd", required_argument, NULL, 'f'},
        {"plugin-dir", required_argument, NULL, 'P'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"keep", no_argument, NULL, 'k'},
        {"members", required_argument, NULL, 'm'},
        {"idle", no_argument, NULL, 'I'},
        {"remote", no_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct fb_bench_opts o = {
        .events = 10000000,
        .conns = 1,
        .payload = 64,
        .rate = 20000,
        .seconds = 5,
        .warmup_ms = 50,
        .timeout_s = 60,
    };
    uint64_t v;
    double dv;
    int opt, idx = 0;
    bool events_given = false;

    fb_bench_out = stdout;
    while ((opt = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        bool ok = true;
        switch (opt) {
        case 'n':
            ok = parse_u64(optarg, &o.events) && o.events > 0;
            events_given = true;
            break;
        case 'c':
            ok = parse_u64(optarg, &v) && v > 0 && v <= 1024;
            o.conns = (unsigned)v;
            break;
        case 'p':
            ok = parse_u64(optarg, &v) && v <= 65536;
            o.payload = (size_t)v;
            break;
        case 'w':
            ok = parse_u64(optarg, &v) && v <= 256;
            o.workers = (unsigned)v;
            break;
        case 'r':
            ok = parse_u64(optarg, &v) && v > 0 && v <= 100;
            o.repeat = (unsigned)v;
            break;
        case 'R':
            ok = parse_double(optarg, &o.rate);
            break;
        case 's':
            ok = parse_double(optarg, &o.seconds);
            break;
        case 'W':
            ok = parse_u64(optarg, &v) && v < 3600000;
            o.warmup_ms = (unsigned)v;
            break;
        case 'o':
            ok = parse_u64(optarg, &v) && v > 0 && v <= 1000;
            o.rounds = (unsigned)v;
            break;
        case 'S':
            o.spin = true;
            break;
        case 'L':
            o.closed = true;
            break;
        case 'b':
            ok = strcmp(optarg, "echo") == 0 || strcmp(optarg, "decode") == 0;
            if (strcmp(optarg, "decode") == 0)
                o.decode_baseline = true;
            else
                o.echo_baseline = true;
            break;
        case 'C':
            o.compare = true;
            break;
        case 'B':
            o.bus = optarg;
            break;
        case 'T':
            o.tcp = true;
            break;
        case 'f':
            o.fidbusd = optarg;
            break;
        case 'P':
            o.plugin_dir = optarg;
            break;
        case 't':
            ok = parse_double(optarg, &dv) && dv < 86400;
            o.timeout_s = (int)(dv + 0.999);
            break;
        case 'j':
            o.json = true;
            break;
        case 'k':
            o.keep = true;
            break;
        case 'm':
            ok = parse_u64(optarg, &v) && v > 0 && v <= 1000;
            o.members = (unsigned)v;
            break;
        case 'I':
            o.idle = true;
            break;
        case 'M':
            o.remote = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "fidbus-bench: bad value for --%s: %s\n", longopts[idx].name,
                    optarg);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *mode = argv[optind];

    /* Paths: flags, then $FIDBUS_BUILD_DIR, then the build tree we came from. */
    static char daemon_path[PATH_MAX], plugin_path[PATH_MAX];
    const char *build = getenv("FIDBUS_BUILD_DIR");
    if (!build || !*build)
        build = FIDBUS_BUILD_DIR;
    if (!o.fidbusd) {
        snprintf(daemon_path, sizeof(daemon_path), "%s/daemon/fidbusd", build);
        o.fidbusd = daemon_path;
    }
    if (!o.plugin_dir) {
        snprintf(plugin_path, sizeof(plugin_path), "%s/plugins", build);
        o.plugin_dir = plugin_path;
    }
    if (o.json)
        fb_bench_out = stderr;
    setvbuf(fb_bench_out, NULL, _IOLBF, 0);
    /* A daemon that dies mid-run must fail a write, not kill the bench. */
    signal(SIGPIPE, SIG_IGN);

    json_t *js = o.json ? json_object() : NULL;
    if (js)
        json_object_set_new(js, "mode", json_string(mode));
    int rc;
    if (strcmp(mode, "throughput") == 0) {
        struct fb_bench_tp_result med;
        o.workers = default_tp_workers(&o);
        if (o.compare && !o.bus)
            rc = run_throughput_compare(&o, o.repeat ? o.repeat : 5, js);
        else
            rc = run_throughput(&o, o.repeat ? o.repeat : 1, &med, js);
    } else if (strcmp(mode, "latency") == 0) {
        struct fb_bench_lat_result echo, bus;
        rc = run_latency(&o, &echo, &bus, js);
    } else if (strcmp(mode, "rss") == 0) {
        long rss, hwm;
        rc = run_rss(&o, &rss, &hwm, js);
    } else if (strcmp(mode, "change") == 0) {
        struct fb_bench_ch_result ch;
        o.workers = default_tp_workers(&o);
        rc = run_change(&o, &ch, js);
    } else if (strcmp(mode, "isolation") == 0) {
        struct fb_bench_iso_result iso;
        if (!events_given)
            o.events = 20000;
        rc = fb_bench_isolation(&o, &iso);
        if (js)
            json_object_set_new(js, "isolation",
                                json_pack("{s:i, s:f, s:f, s:f, s:I, s:i, s:b}", "n",
                                          (int)iso.n, "before_per_s", iso.before,
                                          "during_per_s", iso.during, "ratio", iso.ratio,
                                          "stuck_frames", (json_int_t)iso.stuck_frames,
                                          "rss_kib", (int)iso.rss_kib, "ok", iso.ok));
    } else if (strcmp(mode, "remote") == 0) {
        struct fb_bench_remote_result rr;
        if (!events_given)
            o.events = 2000000;
        rc = fb_bench_remote(&o, &rr);
        if (js)
            json_object_set_new(
                js, "remote",
                json_pack("{s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:i, s:i, s:s, s:b}",
                          "members", (int)rr.members, "workers", (int)rr.workers, "sent",
                          (json_int_t)rr.sent, "answered", (json_int_t)rr.answered,
                          "seconds", rr.seconds, "calls_per_s", rr.calls_per_s,
                          "daemon_cpu", rr.daemon_cpu, "rss_before_kib", (int)rr.rss0_kib,
                          "rss_kib", (int)rr.rss_kib, "verify",
                          rr.verify == 0 ? "OK" : "FAIL", "ok", rr.ok));
    } else if (strcmp(mode, "all") == 0) {
        rc = run_all(&o, o.repeat ? o.repeat : 3, js);
    } else {
        fprintf(stderr, "fidbus-bench: unknown mode '%s'\n", mode);
        usage(stderr);
        json_decref(js);
        return 2;
    }
    if (js) {
        json_dumpf(js, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(js);
    }
    return rc == 0 ? 0 : 1;
}
