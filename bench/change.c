/*
 * fidbus-bench change: route changes and plugin reloads under full
 * publishing load (bench/README.md, "change").
 *
 * One private fidbusd (spawn.c) with count.so routed by `event = *`;
 * throughput.c's publishers write un-acked events as fast as the daemon
 * takes them for the whole run, while one controller connection on the
 * control socket (through fidbus_request, one REQUEST at a time, each
 * waiting for its REPLY) runs the phases in turn, each o->seconds long:
 *
 *   baseline       no changes: the events/s the dips are measured against;
 *   route add/del  route.add and route.del of a side route, alternating;
 *   route.apply    one transaction moving the weights of a split route
 *                  (del + add of one name), cycling through five splits;
 *   plugin.reload  the count instance every event is routed to.
 *
 * Each REQUEST -> REPLY is timed; the daemon writes state.cbor (fsync
 * included) before it replies, so every figure is a durable change; the
 * bench times the same save on its own first, the floor under them. A
 * sampler thread reads the publishers' written-events counter every
 * 100 ms; a bucket that lies wholly inside a phase counts for it.
 *
 * Exactly once: a reload fini's the old count instance before the REPLY,
 * and its fini rewrites report_file. So after every reload the report is
 * read and removed, and at the end the last instance's report (SIGTERM)
 * is added: the sum must equal the events sent. The daemon's `stats`
 * (received == sent, unrouted == 0, errors == 0) is checked as well.
 */
#include "bench.h"

#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <fidbus/client.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CH_EVENT "bench.change"
#define CH_SAMPLE_NS 100000000ull
#define CH_SAVE_ROUNDS 200

static const char *const phase_names[FB_BENCH_CH_PHASES] = {
    "baseline",
    "route add/del",
    "route.apply",
    "plugin.reload",
};

/* ------------------------------------------------------ CBOR arguments */

static bool put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    cbor_item_t *k = cbor_build_string(key);
    bool ok = map && k && value &&
              cbor_map_add(map, (struct cbor_pair){.key = k, .value = value});
    if (k)
        cbor_decref(&k);
    if (value)
        cbor_decref(&value);
    return ok;
}

static bool push(cbor_item_t *array, cbor_item_t *value)
{
    bool ok = array && value && cbor_array_push(array, value);
    if (value)
        cbor_decref(&value);
    return ok;
}

/* Serialises and frees item (NULL after a failed build). */
static int encode(cbor_item_t *item, bool ok, uint8_t **buf, size_t *len)
{
    size_t cap = 0;

    *buf = NULL;
    *len = 0;
    if (item && ok)
        *len = cbor_serialize_alloc(item, buf, &cap);
    if (item)
        cbor_decref(&item);
    return *len ? 0 : -ENOMEM;
}

/* The split route the apply phase moves: count gets 100 - w of the
 * users, log w (no event the publishers send matches it, so the flips
 * cost what a real canary's would without bending the exactly-once
 * check). */
static cbor_item_t *canary_route(unsigned w, bool *ok)
{
    char t1[64], t2[64];
    cbor_item_t *r = cbor_new_definite_map(5), *to = cbor_new_definite_array(2);

    snprintf(t1, sizeof(t1), "fidbus.count:%u", 100 - w);
    snprintf(t2, sizeof(t2), "fidbus.log:%u", w);
    *ok = push(to, cbor_build_string(t1)) && push(to, cbor_build_string(t2));
    *ok = put(r, "name", cbor_build_string("canary")) && *ok;
    *ok = put(r, "event", cbor_build_string("bench.canary")) && *ok;
    *ok = put(r, "mode", cbor_build_string("split")) && *ok;
    *ok = put(r, "split_by", cbor_build_string("user")) && *ok;
    *ok = put(r, "to", to) && *ok;
    return r;
}

static int args_route_add_canary(unsigned w, uint8_t **buf, size_t *len)
{
    bool ok;
    cbor_item_t *m = cbor_new_definite_map(1), *r = canary_route(w, &ok);
    ok = put(m, "route", r) && ok;
    return encode(m, ok, buf, len);
}

static int args_route_add_side(uint8_t **buf, size_t *len)
{
    cbor_item_t *m = cbor_new_definite_map(1), *r = cbor_new_definite_map(3);
    cbor_item_t *to = cbor_new_definite_array(1);
    bool ok = push(to, cbor_build_string("fidbus.count"));
    ok = put(r, "name", cbor_build_string("side")) && ok;
    ok = put(r, "event", cbor_build_string("bench.side")) && ok;
    ok = put(r, "to", to) && ok;
    ok = put(m, "route", r) && ok;
    return encode(m, ok, buf, len);
}

static int args_name(const char *name, uint8_t **buf, size_t *len)
{
    cbor_item_t *m = cbor_new_definite_map(1);
    bool ok = put(m, "name", cbor_build_string(name));
    return encode(m, ok, buf, len);
}

static int args_apply_weights(unsigned w, uint8_t **buf, size_t *len)
{
    bool ok;
    cbor_item_t *m = cbor_new_definite_map(2), *add = cbor_new_definite_array(1);
    cbor_item_t *del = cbor_new_definite_array(1), *r = canary_route(w, &ok);
    ok = push(add, r) && ok;
    ok = push(del, cbor_build_string("canary")) && ok;
    ok = put(m, "del", del) && ok;
    ok = put(m, "add", add) && ok;
    return encode(m, ok, buf, len);
}

static int args_plugin_load(const char *path, const char *name, uint8_t **buf,
                            size_t *len)
{
    cbor_item_t *m = cbor_new_definite_map(3), *conf = cbor_new_definite_map(1);
    bool ok = put(conf, "file", cbor_build_string("/dev/null"));
    ok = put(m, "path", cbor_build_string(path)) && ok;
    ok = put(m, "name", cbor_build_string(name)) && ok;
    ok = put(m, "config", conf) && ok;
    return encode(m, ok, buf, len);
}

/* An unsigned value of a top-level key of a CBOR map. */
static bool map_u64(const cbor_item_t *map, const char *key, uint64_t *out)
{
    size_t n = cbor_map_size(map), klen = strlen(key);
    struct cbor_pair *p = cbor_map_handle(map);

    for (size_t i = 0; i < n; i++) {
        if (!cbor_isa_string(p[i].key) || !cbor_string_is_definite(p[i].key) ||
            cbor_string_length(p[i].key) != klen ||
            memcmp(cbor_string_handle(p[i].key), key, klen) != 0)
            continue;
        if (!cbor_isa_uint(p[i].value))
            return false;
        *out = cbor_get_int(p[i].value);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------ sampler */

struct sampler {
    struct fb_bench_pubs *pubs;
    atomic_bool stop;
    uint64_t *t, *w; /* sample times and events written by then */
    size_t n, cap;
};

static void *sampler_thread(void *arg)
{
    struct sampler *s = arg;
    uint64_t next = fb_bench_now_ns();

    while (!atomic_load(&s->stop)) {
        /* phases run long when requests stall: keep sampling (the arrays
         * are only read after this thread is joined) */
        if (s->n == s->cap) {
            uint64_t *t = realloc(s->t, 2 * s->cap * sizeof(*t));
            if (t)
                s->t = t;
            uint64_t *w = t ? realloc(s->w, 2 * s->cap * sizeof(*w)) : NULL;
            if (!w)
                break;
            s->w = w;
            s->cap *= 2;
        }
        s->t[s->n] = fb_bench_now_ns();
        s->w[s->n] = fb_bench_pubs_written(s->pubs);
        s->n++;
        next += CH_SAMPLE_NS;
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                              .tv_nsec = (long)(next % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
    return NULL;
}

/* Events/s over the buckets wholly inside [t0, t1], and the slowest. */
static void phase_rate(const struct sampler *s, uint64_t t0, uint64_t t1,
                       struct fb_bench_ch_phase *ph)
{
    uint64_t events = 0, ns = 0;

    ph->eps = ph->eps_min = 0;
    ph->buckets = 0;
    for (size_t k = 1; k < s->n; k++) {
        if (s->t[k - 1] < t0 || s->t[k] > t1)
            continue;
        uint64_t e = s->w[k] - s->w[k - 1], d = s->t[k] - s->t[k - 1];
        double r = (double)e * 1e9 / (double)d;
        if (ph->buckets == 0 || r < ph->eps_min)
            ph->eps_min = r;
        ph->buckets++;
        events += e;
        ns += d;
    }
    if (ns)
        ph->eps = (double)events * 1e9 / (double)ns;
}

/* ---------------------------------------------------------- controller */

/* The daemon's and this process's CPU seconds so far (-1 if unknown):
 * on 2 cores a phase's dip is mostly CPU the control path took. */
static void cpu_now(const struct fb_bench_daemon *d, double *daemon, double *self)
{
    struct fb_bench_cpu c;
    struct rusage ru;

    *daemon = fb_bench_daemon_cpu(d, &c) == 0 ? c.total : -1;
    *self = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        *self = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

struct lat_list {
    uint64_t *v;
    size_t n, cap;
};

static int lat_add(struct lat_list *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint64_t *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ns;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v, in ms. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)n + 0.999999);
    i = i ? i - 1 : 0;
    return (double)v[i < n ? i : n - 1] / 1e6;
}

struct ctl {
    struct fidbus_client *cl;
    const struct fb_bench_daemon *d;
    struct lat_list lat;
    bool reported_failure;
    /* reload phase: the retired count instances' reports */
    long long counted;
    unsigned reports;
    bool report_missing;
};

/* One timed REQUEST; on success *ns is its round trip. */
static int request(struct ctl *c, const char *cmd, const uint8_t *args, size_t len,
                   uint64_t *ns)
{
    uint64_t t0 = fb_bench_now_ns();
    int rc = fidbus_request(c->cl, cmd, args, len, NULL, NULL);

    *ns = fb_bench_now_ns() - t0;
    if (rc < 0 && !c->reported_failure) {
        c->reported_failure = true;
        fprintf(stderr, "fidbus-bench: %s: %s%s%s\n", cmd, fidbus_strerror(rc),
                fidbus_error_code(rc) ? ": " : "",
                fidbus_error_code(rc) ? fidbus_client_last_error(c->cl) : "");
    }
    return rc;
}

/* After a reload's REPLY the old count instance has been fini'd and its
 * report is on disk: add it, and remove it so no report counts twice. */
static void take_report(struct ctl *c)
{
    long long n, total;

    if (fb_bench_daemon_count(c->d, CH_EVENT, &n, &total) < 0 || n < 0) {
        c->report_missing = true;
        return;
    }
    c->counted += n;
    c->reports++;
    unlink(c->d->report);
}

struct phase_args {
    const char *cmd[5];
    uint8_t *args[5];
    size_t len[5];
    unsigned n; /* requests cycled through */
};

static void phase_args_free(struct phase_args *a)
{
    for (unsigned i = 0; i < a->n; i++)
        free(a->args[i]);
}

/*
 * Runs one phase until `seconds` have passed (a route add/del phase also
 * sends the del that puts the table back). Fills ph's counts and
 * latencies; t0/t1 get the phase's span for the events/s buckets.
 */
static int run_phase(struct ctl *c, int phase, const struct phase_args *a, double seconds,
                     struct fb_bench_ch_phase *ph, uint64_t *t0, uint64_t *t1)
{
    uint64_t end;
    double dcpu0, scpu0, dcpu1, scpu1;
    int rc = 0;

    ph->name = phase_names[phase];
    c->lat.n = 0;
    cpu_now(c->d, &dcpu0, &scpu0);
    *t0 = fb_bench_now_ns();
    end = *t0 + (uint64_t)(seconds * 1e9);
    if (!a) {
        struct timespec ts = {.tv_sec = (time_t)(end / 1000000000u),
                              .tv_nsec = (long)(end % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
    /* whole cycles only: the add/del phase ends with the side route gone */
    for (uint64_t i = 0; a && (fb_bench_now_ns() < end || i % a->n != 0); i++) {
        unsigned k = (unsigned)(i % a->n);
        uint64_t ns;
        int r = request(c, a->cmd[k], a->args[k], a->len[k], &ns);
        if (r < 0) {
            ph->failed++;
            /* a lost connection or a timeout ends the phase */
            if (!fidbus_error_code(r)) {
                rc = r;
                break;
            }
            continue;
        }
        ph->changes++;
        if ((rc = lat_add(&c->lat, ns)) < 0)
            break;
        if (phase == FB_BENCH_CH_RELOAD)
            take_report(c);
    }
    *t1 = fb_bench_now_ns();
    cpu_now(c->d, &dcpu1, &scpu1);
    ph->seconds = (double)(*t1 - *t0) / 1e9;
    ph->daemon_cpu = dcpu0 >= 0 && dcpu1 >= 0 ? (dcpu1 - dcpu0) / ph->seconds : -1;
    ph->bench_cpu = scpu0 >= 0 && scpu1 >= 0 ? (scpu1 - scpu0) / ph->seconds : -1;
    ph->per_s = ph->seconds > 0 ? (double)ph->changes / ph->seconds : 0;
    if (c->lat.n)
        qsort(c->lat.v, c->lat.n, sizeof(*c->lat.v), cmp_u64);
    ph->p50_ms = pct_ms(c->lat.v, c->lat.n, 0.50);
    ph->p99_ms = pct_ms(c->lat.v, c->lat.n, 0.99);
    ph->max_ms = c->lat.n ? (double)c->lat.v[c->lat.n - 1] / 1e6 : 0;
    return rc;
}

/* The phases' requests, encoded once: the controller's loop only sends. */
static int build_phase_args(struct phase_args a[FB_BENCH_CH_PHASES])
{
    static const unsigned weights[] = {5, 25, 50, 100, 0};
    int rc = 0;

    memset(a, 0, FB_BENCH_CH_PHASES * sizeof(*a));
    struct phase_args *r = &a[FB_BENCH_CH_ROUTE];
    r->cmd[0] = "route.add";
    r->cmd[1] = "route.del";
    if ((rc = args_route_add_side(&r->args[r->n], &r->len[r->n])) == 0)
        r->n++;
    if (rc == 0 && (rc = args_name("side", &r->args[r->n], &r->len[r->n])) == 0)
        r->n++;
    struct phase_args *ap = &a[FB_BENCH_CH_APPLY];
    for (unsigned i = 0; rc == 0 && i < 5; i++) {
        ap->cmd[i] = "route.apply";
        if ((rc = args_apply_weights(weights[i], &ap->args[i], &ap->len[i])) == 0)
            ap->n++;
    }
    struct phase_args *rl = &a[FB_BENCH_CH_RELOAD];
    rl->cmd[0] = "plugin.reload";
    if (rc == 0 && (rc = args_name("count", &rl->args[0], &rl->len[0])) == 0)
        rl->n++;
    return rc;
}

/* log.so and the split route the apply phase moves, before the clock. */
static int setup(struct ctl *c, const char *plugin_dir)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    uint8_t *args = NULL;
    size_t len;
    uint64_t ns;
    int rc;

    if (!realpath(plugin_dir, dir)) {
        fprintf(stderr, "fidbus-bench: %s: %s\n", plugin_dir, strerror(errno));
        return -errno;
    }
    snprintf(path, sizeof(path), "%s/log.so", dir);
    if ((rc = args_plugin_load(path, "log", &args, &len)) == 0)
        rc = request(c, "plugin.load", args, len, &ns);
    free(args);
    args = NULL;
    if (rc == 0 && (rc = args_route_add_canary(5, &args, &len)) == 0)
        rc = request(c, "route.add", args, len, &ns);
    free(args);
    return rc;
}

/*
 * What one durable save costs on this disk, without the daemon: the
 * change latencies can then be read as this floor plus the daemon's own
 * work. The same steps as the state file's save, in a dir of its own.
 */
static int save_floor(const struct fb_bench_daemon *d, struct fb_bench_ch_result *res,
                      int k)
{
    char dir[320], path[340];
    struct stat st;
    uint8_t buf[65536];
    uint64_t v[CH_SAVE_ROUNDS];
    int rc = 0;

    snprintf(path, sizeof(path), "%s/state/state.cbor", d->dir);
    res->save_bytes =
        stat(path, &st) == 0 && st.st_size > 0 && (size_t)st.st_size <= sizeof(buf)
            ? (size_t)st.st_size
            : 512;
    memset(buf, 0xa5, res->save_bytes);
    snprintf(dir, sizeof(dir), "%s/save-floor", d->dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    unsigned n = 0;
    for (; n < CH_SAVE_ROUNDS; n++) {
        uint64_t t0 = fb_bench_now_ns();
        int fd = openat(dfd, "state.tmp", O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = -errno;
            break;
        }
        rc = fb_bench_write_all(fd, buf, res->save_bytes);
        if (rc == 0 && fdatasync(fd) < 0)
            rc = -errno;
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc == 0 &&
            (renameat(dfd, "state.tmp", dfd, "state.cbor") < 0 || fsync(dfd) < 0))
            rc = -errno;
        if (rc < 0)
            break;
        v[n] = fb_bench_now_ns() - t0;
    }
    close(dfd);
    if (n)
        qsort(v, n, sizeof(*v), cmp_u64);
    res->save_n[k] = n;
    res->save_p50_ms[k] = pct_ms(v, n, 0.50);
    res->save_p99_ms[k] = pct_ms(v, n, 0.99);
    return rc;
}

static int read_stats(struct ctl *c, struct fb_bench_ch_result *res)
{
    uint8_t *out = NULL;
    size_t len = 0;
    struct cbor_load_result lr;

    int rc = fidbus_request(c->cl, "stats", NULL, 0, &out, &len);
    if (rc < 0) {
        fprintf(stderr, "fidbus-bench: stats: %s\n", fidbus_strerror(rc));
        return rc;
    }
    cbor_item_t *m = cbor_load(out, len, &lr);
    free(out);
    if (!m || !cbor_isa_map(m) || !map_u64(m, "received", &res->received) ||
        !map_u64(m, "dispatched", &res->dispatched) ||
        !map_u64(m, "unrouted", &res->unrouted) ||
        !map_u64(m, "errors", &res->daemon_errors)) {
        fprintf(stderr, "fidbus-bench: stats: unexpected reply\n");
        rc = -EPROTO;
    } else {
        res->have_stats = true;
    }
    if (m)
        cbor_decref(&m);
    return rc;
}

int fb_bench_change(const struct fb_bench_opts *o, struct fb_bench_ch_result *res)
{
    struct fb_bench_daemon *d = NULL;
    struct fb_bench_pubs *pubs = NULL;
    struct phase_args pa[FB_BENCH_CH_PHASES];
    struct ctl c = {0};
    struct sampler s = {0};
    pthread_t sth;
    bool sampling = false;
    uint64_t span[FB_BENCH_CH_PHASES][2] = {{0}};
    int rc;
    /* every wait of the run: the phases, plus --timeout for the rest */
    double run = o->timeout_s * 1000.0 + FB_BENCH_CH_PHASES * o->seconds * 1000;
    int run_ms = run < INT_MAX ? (int)run : INT_MAX;

    memset(res, 0, sizeof(*res));
    res->conns = o->conns;
    res->workers = o->workers;
    res->verify = 1;
    res->counted = -1;
    for (int i = 0; i < FB_BENCH_CH_PHASES; i++)
        res->ph[i].name = phase_names[i];
    if ((rc = build_phase_args(pa)) < 0)
        goto out;

    struct fb_bench_daemon_conf dc = fb_bench_daemon_conf_for(o);
    if ((rc = fb_bench_daemon_start(&d, &dc)) < 0)
        goto out;
    c.d = d;
    char addr[320];
    snprintf(addr, sizeof(addr), "unix:%s/control.sock", d->dir);
    struct fidbus_client_opts copts = {.name = "fidbus-bench", .timeout_ms = run_ms};
    if ((rc = fidbus_client_connect(&c.cl, addr, &copts)) < 0) {
        fprintf(stderr, "fidbus-bench: control socket %s: %s\n", addr,
                fidbus_strerror(rc));
        goto out;
    }
    if ((rc = setup(&c, o->plugin_dir)) < 0)
        goto out;
    if ((rc = save_floor(d, res, 0)) < 0) {
        fprintf(stderr, "fidbus-bench: timing a save in %s: %s\n", d->dir, strerror(-rc));
        goto out;
    }

    rc = fb_bench_pubs_start(&pubs, d->addr, o->conns, o->payload, CH_EVENT, run_ms,
                             &res->frame_len);
    if (rc < 0)
        goto out;
    s.pubs = pubs;
    atomic_init(&s.stop, false);
    s.cap = (size_t)(FB_BENCH_CH_PHASES * o->seconds * 10) + 600;
    s.t = calloc(s.cap, sizeof(*s.t));
    s.w = calloc(s.cap, sizeof(*s.w));
    if (!s.t || !s.w) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = -pthread_create(&sth, NULL, sampler_thread, &s)) < 0)
        goto out;
    sampling = true;

    for (int i = 0; i < FB_BENCH_CH_PHASES && rc == 0; i++) {
        rc = run_phase(&c, i, i == FB_BENCH_CH_BASELINE ? NULL : &pa[i], o->seconds,
                       &res->ph[i], &span[i][0], &span[i][1]);
        /* between phases, so no phase's buckets hold it */
        if (rc == 0 && i == FB_BENCH_CH_BASELINE && (rc = save_floor(d, res, 1)) < 0)
            fprintf(stderr, "fidbus-bench: timing a save: %s\n", strerror(-rc));
    }

out:
    if (sampling) {
        atomic_store(&s.stop, true);
        pthread_join(sth, NULL);
        for (int i = 0; i < FB_BENCH_CH_PHASES && rc == 0; i++)
            phase_rate(&s, span[i][0], span[i][1], &res->ph[i]);
    }
    if (pubs) {
        int prc = fb_bench_pubs_stop(pubs, &res->sent, &res->errors);
        if (rc == 0)
            rc = prc;
    }
    if (rc == 0)
        rc = read_stats(&c, res);
    fidbus_client_close(c.cl);
    c.cl = NULL;
    if (rc == 0) {
        long long n, total;
        if (fb_bench_daemon_stop(d, o->timeout_s * 1000) < 0 ||
            fb_bench_daemon_count(d, CH_EVENT, &n, &total) < 0 || n < 0) {
            rc = -EIO;
        } else {
            res->counted = c.counted + n;
            res->reports = c.reports + 1;
            res->verify =
                !c.report_missing && (uint64_t)res->counted == res->sent ? 0 : 1;
        }
    }
    bool changes_ok = true;
    for (int i = 0; i < FB_BENCH_CH_PHASES; i++)
        changes_ok = changes_ok && res->ph[i].failed == 0;
    res->ok = rc == 0 && res->errors == 0 && res->verify == 0 && changes_ok &&
              res->have_stats && res->received == res->sent && res->unrouted == 0 &&
              res->daemon_errors == 0;
    if (rc < 0 && d)
        fb_bench_daemon_dump_log(d);
    for (int i = 0; i < FB_BENCH_CH_PHASES; i++)
        phase_args_free(&pa[i]);
    free(c.lat.v);
    free(s.t);
    free(s.w);
    fidbus_client_close(c.cl);
    fb_bench_daemon_free(d);
    return rc;
}
