/*
 * prom/prom.c -- the stats result as Prometheus text (format 0.0.4).
 *
 * fidbusctl's control.c calls fb_prom_render instead of the table
 * renderer for `stats --prometheus`; fidbusd's /metrics endpoint
 * (daemon/control/metrics_http.c) calls it on the same stats result.
 * Each metric family is written whole (# HELP, # TYPE, then its
 * samples) because the format requires a family's samples to be
 * contiguous; a family is announced only when its first sample is
 * written, so a daemon that leaves a key out (an older one has no
 * `generation` nor histograms) yields no empty families.
 *
 * Latency: the daemon reports, per function, a histogram of every call
 * (latency_buckets, latency_counts cumulative, latency_count, latency_sum_ns;
 * daemon/base/latency.h says how it is kept), written as a `histogram`
 * family whose _count equals the function's calls. stats' p50_ns/p99_ns
 * are not exported: quantiles do not aggregate, histogram_quantile does.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"

struct family {
    const char *name, *type, *help;
    bool started;
};

struct label {
    const char *name, *value; /* value NULL: the label is left out */
};

/* Large enough for any int64 or "%.17g" double. */
#define VALUE_MAX 40

static void family_start(FILE *out, struct family *f)
{
    if (f->started)
        return;
    f->started = true;
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
}

/* The three escapes the format defines for label values. */
static void write_label_value(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            fputs("\\\\", out);
            break;
        case '"':
            fputs("\\\"", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        default:
            fputc(*s, out);
        }
    }
}

static void sample(FILE *out, struct family *f, const struct label *labels, size_t nl,
                   const char *value)
{
    family_start(out, f);
    fputs(f->name, out);
    bool first = true;
    for (size_t i = 0; i < nl; i++) {
        if (!labels[i].value)
            continue;
        fprintf(out, "%s%s=\"", first ? "{" : ",", labels[i].name);
        write_label_value(out, labels[i].value);
        fputc('"', out);
        first = false;
    }
    fprintf(out, "%s %s\n", first ? "" : "}", value);
}

/*
 * A double as the format's Go-style float: NaN, +Inf, -Inf, or the
 * shortest of %.15g / %.17g that reads back as the same value.
 */
static void real_text(double d, char *buf, size_t cap)
{
    if (isnan(d))
        snprintf(buf, cap, "NaN");
    else if (isinf(d))
        snprintf(buf, cap, "%s", d > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(buf, cap, "%.15g", d);
        if (strtod(buf, NULL) != d)
            snprintf(buf, cap, "%.17g", d);
    }
}

/* A number as a sample value; false for anything else (no sample). */
static bool value_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v))
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        real_text(json_real_value(v), buf, cap);
    else
        return false;
    return true;
}

/*
 * Nanoseconds as seconds. Integers are converted in decimal, digit for
 * digit (1500 -> 0.0000015), so no binary rounding shows up in the output.
 */
static bool seconds_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        json_int_t ns = json_integer_value(v);
        json_int_t s = ns / 1000000000, frac = ns % 1000000000;
        if (frac == 0) {
            snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, s);
            return true;
        }
        int n = snprintf(buf, cap, "%" JSON_INTEGER_FORMAT ".%09" JSON_INTEGER_FORMAT, s,
                         frac);
        while (n > 0 && (size_t)n < cap && buf[n - 1] == '0')
            buf[--n] = '\0';
        return true;
    }
    if (json_is_number(v)) {
        real_text(json_number_value(v) / 1e9, buf, cap);
        return true;
    }
    return false;
}

/* Generation numbers sort as numbers, everything else as bytes. */
static int key_cmp(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    bool digits =
        lx && ly && strspn(x, "0123456789") == lx && strspn(y, "0123456789") == ly;
    if (digits && lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x, y);
}

/*
 * obj's keys in order, borrowed from obj, in a malloc'd *out; *out is NULL
 * when obj is empty or memory is short (the caller then walks obj
 * unsorted: complete output matters more than its order).
 */
static size_t sorted_keys(const json_t *obj, const char ***out)
{
    *out = NULL;
    size_t n = json_is_object(obj) ? json_object_size(obj) : 0;
    if (n == 0)
        return 0;
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return 0;
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        (void)v;
        keys[i++] = k;
    }
    qsort(keys, n, sizeof(*keys), key_cmp);
    *out = keys;
    return n;
}

typedef void each_fn(FILE *out, struct family *f, const char *key, const json_t *v);

/* fn for every member of obj, in key order when memory allows. */
static void for_each_sorted(FILE *out, struct family *f, const json_t *obj, each_fn *fn)
{
    if (!json_is_object(obj))
        return;
    const char **keys;
    size_t n = sorted_keys(obj, &keys);
    if (keys) {
        for (size_t i = 0; i < n; i++)
            fn(out, f, keys[i], json_object_get(obj, keys[i]));
        free(keys);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        fn(out, f, k, v);
    }
}

static void scalar(FILE *out, struct family *f, const json_t *stats, const char *key)
{
    char val[VALUE_MAX];
    if (value_text(json_object_get(stats, key), val, sizeof(val)))
        sample(out, f, NULL, 0, val);
}

static void each_generation(FILE *out, struct family *f, const char *key, const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[] = {{"generation", key}};
    if (value_text(v, val, sizeof(val)))
        sample(out, f, l, 1, val);
}

static void each_route(FILE *out, struct family *f, const char *key, const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[] = {{"route", key}};
    if (value_text(json_object_get(v, "matched"), val, sizeof(val)))
        sample(out, f, l, 1, val);
}

static void each_limit(FILE *out, struct family *f, const char *key, const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[] = {{"reason", key}};
    if (value_text(v, val, sizeof(val)))
        sample(out, f, l, 1, val);
}

/* A function's labels: canonical and plugin only when the daemon gives them. */
static void func_labels(struct label l[4], const char *id, const json_t *v)
{
    l[0] = (struct label){"funcid", id};
    l[1] =
        (struct label){"canonical", json_string_value(json_object_get(v, "canonical"))};
    l[2] = (struct label){"plugin", json_string_value(json_object_get(v, "plugin"))};
    l[3] = (struct label){"le", NULL};
}

static void each_func_calls(FILE *out, struct family *f, const char *key, const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[4];
    func_labels(l, key, v);
    if (value_text(json_object_get(v, "calls"), val, sizeof(val)))
        sample(out, f, l, 4, val);
}

static void each_func_errors(FILE *out, struct family *f, const char *key,
                             const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[4];
    func_labels(l, key, v);
    if (value_text(json_object_get(v, "errors"), val, sizeof(val)))
        sample(out, f, l, 4, val);
}

/* late, skipped (counters) and quarantined (true/false as a 1/0 gauge). */
static void func_field(FILE *out, struct family *f, const char *key, const json_t *v,
                       const char *field)
{
    char val[VALUE_MAX];
    struct label l[4];
    func_labels(l, key, v);
    const json_t *x = json_object_get(v, field);
    if (json_is_boolean(x))
        snprintf(val, sizeof val, "%d", json_is_true(x) ? 1 : 0);
    else if (!value_text(x, val, sizeof(val)))
        return;
    sample(out, f, l, 4, val);
}

static void each_func_late(FILE *out, struct family *f, const char *key, const json_t *v)
{
    func_field(out, f, key, v, "late");
}

static void each_func_skipped(FILE *out, struct family *f, const char *key,
                              const json_t *v)
{
    func_field(out, f, key, v, "skipped");
}

/* A remote function's keys (proto/control.md `stats`); a plugin function
 * has none, so it yields no sample. */
static void each_func_timeouts(FILE *out, struct family *f, const char *key,
                               const json_t *v)
{
    func_field(out, f, key, v, "timeouts");
}

static void each_func_redelivered(FILE *out, struct family *f, const char *key,
                                  const json_t *v)
{
    func_field(out, f, key, v, "redelivered");
}

static void each_func_unavailable(FILE *out, struct family *f, const char *key,
                                  const json_t *v)
{
    func_field(out, f, key, v, "unavailable");
}

static void each_func_waiting(FILE *out, struct family *f, const char *key,
                              const json_t *v)
{
    func_field(out, f, key, v, "waiting");
}

static void each_func_members(FILE *out, struct family *f, const char *key,
                              const json_t *v)
{
    func_field(out, f, key, v, "members");
}

static void each_func_quarantined(FILE *out, struct family *f, const char *key,
                                  const json_t *v)
{
    func_field(out, f, key, v, "quarantined");
}

/* One function's histogram: a _bucket per bound (cumulative), +Inf, _sum
 * and _count; nothing unless the arrays are there and agree in length. */
static void each_func_histogram(FILE *out, struct family *f, const char *key,
                                const json_t *v)
{
    const json_t *bounds = json_object_get(v, "latency_buckets");
    const json_t *counts = json_object_get(v, "latency_counts");
    const json_t *count = json_object_get(v, "latency_count");
    const json_t *sum = json_object_get(v, "latency_sum_ns");
    char val[VALUE_MAX], le[VALUE_MAX], cnt[VALUE_MAX], sumv[VALUE_MAX];
    if (!json_is_array(bounds) || !json_is_array(counts) ||
        json_array_size(bounds) != json_array_size(counts) ||
        !value_text(count, cnt, sizeof cnt) || !seconds_text(sum, sumv, sizeof sumv))
        return;
    for (size_t i = 0; i < json_array_size(bounds); i++)
        if (!seconds_text(json_array_get(bounds, i), le, sizeof le) ||
            !value_text(json_array_get(counts, i), val, sizeof val))
            return;
    struct label l[4];
    func_labels(l, key, v);
    struct family fb = *f, fs = *f, fc = *f;
    char nb[128], ns[128], nc[128];
    snprintf(nb, sizeof nb, "%s_bucket", f->name);
    snprintf(ns, sizeof ns, "%s_sum", f->name);
    snprintf(nc, sizeof nc, "%s_count", f->name);
    family_start(out, f);
    fb.name = nb, fs.name = ns, fc.name = nc;
    fb.started = fs.started = fc.started = true;
    for (size_t i = 0; i < json_array_size(bounds); i++) {
        seconds_text(json_array_get(bounds, i), le, sizeof le);
        value_text(json_array_get(counts, i), val, sizeof val);
        l[3].value = le;
        sample(out, &fb, l, 4, val);
    }
    l[3].value = "+Inf";
    sample(out, &fb, l, 4, cnt);
    l[3].value = NULL;
    sample(out, &fs, l, 4, sumv);
    sample(out, &fc, l, 4, cnt);
}

static void each_connections(FILE *out, struct family *f, const char *key,
                             const json_t *v)
{
    char val[VALUE_MAX];
    struct label l[] = {{"kind", key}};
    if (value_text(v, val, sizeof(val)))
        sample(out, f, l, 1, val);
}

/* fidbus_build_info{version="..."} 1, the usual info-metric shape. */
static void build_info(FILE *out, struct family *f, const json_t *stats)
{
    const char *v = json_string_value(json_object_get(stats, "version"));
    struct label l[] = {{"version", v}};
    if (v)
        sample(out, f, l, 1, "1");
}

void fb_prom_render(FILE *out, const json_t *stats)
{
    struct family received = {"fidbus_received_total", "counter",
                              "Events received from publishers.", false};
    struct family dispatched = {"fidbus_dispatched_total", "counter",
                                "Handler calls started.", false};
    struct family unrouted = {"fidbus_unrouted_total", "counter",
                              "Events no route matched.", false};
    struct family errors = {"fidbus_handler_errors_total", "counter",
                            "Handler calls that failed.", false};
    struct family bad = {"fidbus_bad_frames_total", "counter",
                         "Protocol errors: frames that could not be decoded.", false};
    struct family limits = {"fidbus_limit_hits_total", "counter",
                            "Limit hits and backpressure pauses, by reason ([limits]).",
                            false};
    struct family gen = {"fidbus_table_generation", "gauge",
                         "Generation of the running route table.", false};
    struct family gens = {"fidbus_generation_routed_total", "counter",
                          "Events routed, by route table generation.", false};
    struct family routes = {"fidbus_route_matched_total", "counter",
                            "Events matched, by route.", false};
    struct family calls = {"fidbus_function_calls_total", "counter",
                           "Handler calls, by function.", false};
    struct family ferrors = {"fidbus_function_errors_total", "counter",
                             "Failed handler calls, by function.", false};
    struct family late = {"fidbus_handler_late_total", "counter",
                          "Blocking calls that ran past handler_deadline_ms.", false};
    struct family flate = {"fidbus_function_late_total", "counter",
                           "Blocking calls past handler_deadline_ms, by function.",
                           false};
    struct family fskipped = {"fidbus_function_skipped_total", "counter",
                              "Calls skipped while quarantined, by function.", false};
    struct family fquar = {"fidbus_function_quarantined", "gauge",
                           "1 while the function is quarantined.", false};
    struct family ftimeouts = {"fidbus_function_timeouts_total", "counter",
                               "Remote calls whose deadline passed, by function.", false};
    struct family fredelivered = {"fidbus_function_redelivered_total", "counter",
                                  "Remote call deliveries after the first, by function.",
                                  false};
    struct family funavailable = {"fidbus_function_unavailable_total", "counter",
                                  "Remote calls that ended UNAVAILABLE (no member, or "
                                  "lost with the call in flight), by function.",
                                  false};
    struct family fwaiting = {"fidbus_function_waiting", "gauge",
                              "Remote calls waiting for a member's credit, by function.",
                              false};
    struct family fmembers = {"fidbus_function_members", "gauge",
                              "Members serving the remote function.", false};
    struct family duration = {"fidbus_function_duration_seconds", "histogram",
                              "Handler run time by function, in seconds: every call is "
                              "counted, one in 16 per thread is timed and the calls "
                              "after it count in its bucket.",
                              false};
    struct family info = {"fidbus_build_info", "gauge",
                          "Always 1; the label says which fidbusd runs.", false};
    struct family uptime = {"fidbus_uptime_seconds", "gauge",
                            "Seconds since fidbusd started.", false};
    struct family conns = {"fidbus_connections", "gauge",
                           "Connections open, by kind (unix, tcp, control).", false};
    struct family paused = {"fidbus_connections_paused", "gauge",
                            "Bus connections whose input is on hold (backpressure).",
                            false};
    struct family queued = {"fidbus_pool_queued", "gauge",
                            "Blocking calls waiting for a pool thread.", false};
    struct family inflight = {"fidbus_inflight_calls", "gauge",
                              "Blocking calls queued or running.", false};

    if (!json_is_object(stats))
        return;
    build_info(out, &info, stats);
    scalar(out, &uptime, stats, "uptime_s");
    for_each_sorted(out, &conns, json_object_get(stats, "connections"), each_connections);
    scalar(out, &paused, stats, "paused");
    scalar(out, &queued, stats, "pool_queued");
    scalar(out, &inflight, stats, "inflight");
    scalar(out, &received, stats, "received");
    scalar(out, &dispatched, stats, "dispatched");
    scalar(out, &unrouted, stats, "unrouted");
    scalar(out, &errors, stats, "errors");
    scalar(out, &bad, stats, "bad_frames");
    scalar(out, &late, stats, "late");
    scalar(out, &gen, stats, "generation");
    for_each_sorted(out, &gens, json_object_get(stats, "generations"), each_generation);
    for_each_sorted(out, &routes, json_object_get(stats, "routes"), each_route);
    const json_t *fns = json_object_get(stats, "functions");
    for_each_sorted(out, &calls, fns, each_func_calls);
    for_each_sorted(out, &ferrors, fns, each_func_errors);
    for_each_sorted(out, &flate, fns, each_func_late);
    for_each_sorted(out, &fskipped, fns, each_func_skipped);
    for_each_sorted(out, &fquar, fns, each_func_quarantined);
    for_each_sorted(out, &ftimeouts, fns, each_func_timeouts);
    for_each_sorted(out, &fredelivered, fns, each_func_redelivered);
    for_each_sorted(out, &funavailable, fns, each_func_unavailable);
    for_each_sorted(out, &fwaiting, fns, each_func_waiting);
    for_each_sorted(out, &fmembers, fns, each_func_members);
    for_each_sorted(out, &duration, fns, each_func_histogram);
    for_each_sorted(out, &limits, json_object_get(stats, "limits"), each_limit);
}
