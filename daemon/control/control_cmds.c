/*
 * The control commands of proto/control.md: the table of commands, the
 * read-only ones (status, plugin.list, func.list, route.list, stats,
 * route.test; config.export's text is written by control_export.c) and
 * args decoding. The commands that change something are in
 * control_change.c.
 *
 * Results are built as a libcbor item tree (ctl_cbor.h) and serialised
 * once.
 */
#include "control/control_cmds.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fidbus/funcid.h>
#include <fidbus/plugin.h>

#include "build_config.h"
#include "base/clock.h"
#include "base/counters.h"
#include "base/daemon_t.h"
#include "base/err.h"
#include "config/cbor_util.h"
#include "bus/worker.h"
#include "config/route_spec.h"
#include "control/control.h"
#include "control/ctl_cbor.h"
#include "control/metrics_http.h"
#include "routing/plugin_loader.h"
#include "routing/pool.h"
#include "routing/registry.h"
#include "routing/routes.h"

/* ------------------------------------------------------------ commands */

static cbor_item_t *cmd_status(const struct fb_ctl_env *env, struct cb *b)
{
    struct fb_daemon *d = env->d;
    cbor_item_t *listeners = mk_array(b, env->nlisteners);
    for (size_t i = 0; i < env->nlisteners; i++)
        push(b, listeners, text(env->listeners[i]));

    const char *metrics = fb_metrics_addr(d->metrics);
    cbor_item_t *m = mk_map(b, metrics ? 10 : 9);
    put(b, m, "version", text(FIDBUS_VERSION));
    put(b, m, "pid", u64((uint64_t)getpid()));
    put(b, m, "uptime_s", u64((fb_now_ns() - d->start_ns) / 1000000000u));
    put(b, m, "generation", u64(d->generation));
    put(b, m, "workers", u64(d->nworkers));
    put(b, m, "listeners", listeners);
    put(b, m, "plugins", u64(fb_plugin_count(d->plugins)));
    put(b, m, "routes", u64(fb_routes_count(d->table)));
    put(b, m, "functions", u64(fb_registry_count(d->reg)));
    if (metrics) /* as bound: the real port when [metrics] listen asked for 0 */
        put(b, m, "metrics", text(metrics));
    return m;
}

cbor_item_t *fb_ctl_func_stats(struct cb *b, struct fb_func *f, const char *plugin,
                               uint64_t late, size_t room)
{
    uint64_t samples = 0;
    uint64_t p50 = fb_lat_quantile(&f->latency, 0.50, &samples);
    uint64_t p99 = fb_lat_quantile(&f->latency, 0.99, NULL);
    /* calls is the histogram's count, read with it, so the two agree */
    struct fb_hist_snap h;
    fb_hist_read(&f->hist, &f->calls, &h);
    cbor_item_t *bounds = mk_array(b, FB_HIST_BOUNDS);
    cbor_item_t *counts = mk_array(b, FB_HIST_BOUNDS);
    for (unsigned k = 0; k < FB_HIST_BOUNDS; k++) {
        push(b, bounds, u64(fb_hist_bounds_ns[k]));
        push(b, counts, u64(h.counts[k]));
    }
    cbor_item_t *e = mk_map(b, (samples ? 13 : 11) + room);
    put(b, e, "canonical", text(f->canonical));
    put(b, e, "plugin", plugin ? text(plugin) : cbor_new_null());
    put(b, e, "calls", u64(h.count));
    put(b, e, "latency_buckets", bounds);
    put(b, e, "latency_counts", counts);
    put(b, e, "latency_count", u64(h.count));
    put(b, e, "latency_sum_ns", u64(h.sum_ns));
    put(b, e, "errors", u64(fb_striped_sum(&f->errors)));
    put(b, e, "late", u64(late));
    put(b, e, "skipped", u64(fb_striped_sum(&f->skips)));
    put(b, e, "quarantined", cbor_build_bool(fb_func_quarantined(f)));
    if (samples) {
        put(b, e, "p50_ns", u64(p50));
        put(b, e, "p99_ns", u64(p99));
    }
    return e;
}

cbor_item_t *fb_ctl_plugin_entry(struct cb *b, const struct fb_plugin *p, size_t room)
{
    cbor_item_t *fns = mk_array(b, p->nfuncs);
    for (size_t i = 0; i < p->nfuncs; i++)
        push(b, fns, funcid_text(p->funcs[i].id));
    cbor_item_t *e = mk_map(b, 4 + room);
    put(b, e, "name", text(p->name));
    put(b, e, "version", text(p->desc ? p->desc->version : NULL));
    put(b, e, "path", text(p->path));
    put(b, e, "functions", fns);
    return e;
}

static cbor_item_t *cmd_plugin_list(const struct fb_ctl_env *env, struct cb *b)
{
    struct fb_daemon *d = env->d;
    cbor_item_t *plugins = mk_array(b, fb_plugin_count(d->plugins));
    for (const struct fb_plugin *p = d->plugins; p; p = p->next)
        push(b, plugins, fb_ctl_plugin_entry(b, p, 0));
    cbor_item_t *m = mk_map(b, 1);
    put(b, m, "plugins", plugins);
    return m;
}

static cbor_item_t *cmd_func_list(const struct fb_ctl_env *env, struct cb *b)
{
    const struct fb_registry *reg = env->d->reg;
    size_t n = fb_registry_count(reg);
    size_t nremote = fb_ctl_remote_count(env->d);
    cbor_item_t *fns = mk_array(b, n + nremote);
    for (size_t i = 0; i < n; i++) {
        const struct fb_func *f = fb_registry_at(reg, i);
        char sig[FIDBUS_SIGHASH_HEX];
        fidbus_sighash_hex(f->sighash, sig);
        cbor_item_t *e = mk_map(b, 7);
        put(b, e, "kind", text("plugin"));
        put(b, e, "id", funcid_text(f->id));
        put(b, e, "canonical", text(f->canonical));
        put(b, e, "sighash", text(sig));
        put(b, e, "plugin", text(f->plugin ? f->plugin->name : NULL));
        put(b, e, "blocking", cbor_build_bool((f->flags & FIDBUS_FN_BLOCKING) != 0));
        put(b, e, "quarantined", cbor_build_bool(fb_func_quarantined(f)));
        push(b, fns, e);
    }
    fb_ctl_remote_func_list(env->d, b, fns, nremote);
    cbor_item_t *m = mk_map(b, 1);
    put(b, m, "functions", fns);
    return m;
}

/* The target as text (fb_target_text); the weight has a key of its own. */
static cbor_item_t *target_item(const struct fb_target_spec *t)
{
    char buf[FIDBUS_CANONICAL_MAX];
    fb_target_text(t, buf, sizeof buf);
    return cbor_build_string(buf);
}

static cbor_item_t *route_entry(const struct fb_route *r, struct cb *b)
{
    const struct fb_route_spec *s = r->spec;
    cbor_item_t *tags = mk_map(b, s->ntags);
    for (size_t i = 0; i < s->ntags; i++)
        put(b, tags, s->tags[i].key, text(s->tags[i].value));
    /* The table keeps targets in the order of the spec's `to`. */
    cbor_item_t *to = mk_array(b, r->ntargets);
    for (size_t i = 0; i < r->ntargets && i < s->nto; i++) {
        cbor_item_t *t = mk_map(b, 3);
        put(b, t, "target", target_item(&s->to[i]));
        put(b, t, "id", funcid_text(r->targets[i].fn->id));
        put(b, t, "weight", u64(r->targets[i].weight));
        push(b, to, t);
    }
    cbor_item_t *e = mk_map(b, 8);
    put(b, e, "name", text(r->name));
    put(b, e, "event", text(s->event));
    put(b, e, "tags", tags);
    put(b, e, "to", to);
    put(b, e, "mode", text(r->mode == FB_MODE_SPLIT ? "split" : "all"));
    put(b, e, "split_by", text(r->split_by));
    put(b, e, "priority", i64(s->priority));
    put(b, e, "signature", text(s->signature));
    return e;
}

static cbor_item_t *cmd_route_list(const struct fb_ctl_env *env, struct cb *b)
{
    const struct fb_route_table *t = env->d->table;
    size_t n = fb_routes_count(t);
    cbor_item_t *routes = mk_array(b, n);
    for (size_t i = 0; i < n; i++) /* fb_routes_at is in name order */
        push(b, routes, route_entry(fb_routes_at(t, i), b));
    cbor_item_t *m = mk_map(b, 2);
    put(b, m, "generation", u64(env->d->generation));
    put(b, m, "routes", routes);
    return m;
}

static cbor_item_t *cmd_stats(const struct fb_ctl_env *env, struct cb *b)
{
    struct fb_daemon *d = env->d;
    struct fb_totals tot = fb_counters_sum(d);

    const struct fb_route_table *t = d->table;
    size_t nr = fb_routes_count(t);
    cbor_item_t *routes = mk_map(b, nr);
    for (size_t i = 0; i < nr; i++) {
        const struct fb_route *r = fb_routes_at(t, i);
        cbor_item_t *e = mk_map(b, 1);
        put(b, e, "matched", u64(fb_striped_sum(&r->matched->n)));
        put(b, routes, r->name, e);
    }
    /* The running table and the last FB_GEN_HISTORY retired ones (their
     * totals are final: taken after the grace period of their flip). */
    char gen[24];
    cbor_item_t *gens = mk_map(b, d->ngens + 1);
    for (size_t i = 0; i < d->ngens; i++) {
        snprintf(gen, sizeof gen, "%" PRIu64, d->gens[i].generation);
        put(b, gens, gen, u64(d->gens[i].routed));
    }
    snprintf(gen, sizeof gen, "%" PRIu64, fb_routes_generation(t));
    put(b, gens, gen, u64(fb_routes_routed(t)));

    /* p50_ns/p99_ns come from sampled timings (daemon/base/latency.h); they are
     * left out for a function that has not run yet rather than given as 0. */
    size_t nf = fb_registry_count(d->reg);
    size_t nremote = fb_ctl_remote_count(d);
    cbor_item_t *fns = mk_map(b, nf + nremote);
    for (size_t i = 0; i < nf; i++) {
        struct fb_func *f = fb_registry_at(d->reg, i);
        char hex[FIDBUS_FUNCID_HEX];
        fidbus_funcid_hex(f->id, hex);
        cbor_item_t *e =
            fb_ctl_func_stats(b, f, f->plugin ? f->plugin->name : NULL,
                              atomic_load_explicit(&f->late, memory_order_relaxed), 0);
        put(b, fns, hex, e);
    }
    fb_ctl_remote_stats(d, b, fns, nremote);

    /* Every limit hit and backpressure pause, by reason ([limits]). */
    uint64_t lim[FB_LIM__COUNT];
    fb_counters_sum_limits(d, lim);
    cbor_item_t *limits = mk_map(b, FB_LIM__COUNT);
    for (int i = 0; i < FB_LIM__COUNT; i++)
        put(b, limits, fb_limit_names[i], u64(lim[i]));

    /* Gauges: what is open, held back or waiting now. */
    unsigned nconns = atomic_load_explicit(&d->nconns, memory_order_relaxed);
    unsigned ntcp = atomic_load_explicit(&d->ntcp, memory_order_relaxed);
    cbor_item_t *conns = mk_map(b, 3);
    put(b, conns, "unix", u64(nconns > ntcp ? nconns - ntcp : 0));
    put(b, conns, "tcp", u64(ntcp));
    put(b, conns, "control", u64(fb_control_conns(d->control)));
    uint64_t paused = 0, inflight = 0;
    for (unsigned i = 0; i < d->nworkers; i++)
        if (d->workers && d->workers[i])
            paused += atomic_load_explicit(&d->workers[i]->npaused, memory_order_relaxed);
    for (const struct fb_plugin *p = d->plugins; p; p = p->next)
        inflight += atomic_load_explicit(&p->inflight, memory_order_relaxed);

    cbor_item_t *m = mk_map(b, 17);
    put(b, m, "version", text(FIDBUS_VERSION));
    put(b, m, "uptime_s", u64((fb_now_ns() - d->start_ns) / 1000000000u));
    put(b, m, "connections", conns);
    put(b, m, "paused", u64(paused));
    put(b, m, "pool_queued", u64(fb_pool_queued(d->pool)));
    put(b, m, "inflight", u64(inflight));
    put(b, m, "generation", u64(d->generation));
    put(b, m, "received", u64(tot.received));
    put(b, m, "dispatched", u64(tot.dispatched));
    put(b, m, "unrouted", u64(tot.unrouted));
    put(b, m, "errors", u64(tot.errors));
    put(b, m, "bad_frames", u64(tot.bad_frames));
    put(b, m, "late", u64(fb_pool_late_total(d->pool)));
    put(b, m, "generations", gens);
    put(b, m, "routes", routes);
    put(b, m, "functions", fns);
    put(b, m, "limits", limits);
    return m;
}

/* ---------------------------------------------------------- route.test */

static int text_dup(const cbor_item_t *s, char **out, size_t *outlen);

/* An event's tags as route.test takes them, owned. */
struct test_tags {
    struct fidbus_tag tags[FIDBUS_MAX_TAGS];
    size_t ntags;
};

static void test_tags_clear(struct test_tags *tt)
{
    for (size_t i = 0; i < tt->ntags; i++) {
        free((char *)tt->tags[i].key);
        free((char *)tt->tags[i].value);
    }
    tt->ntags = 0;
}

int fb_ctl_tags_arg(const cbor_item_t *args, struct fidbus_tag *tags, size_t *ntags,
                    char *err, size_t errlen)
{
    const cbor_item_t *m = fb_ctl_arg(args, "tags");
    if (!m || cbor_is_null(m))
        return 0;
    if (!cbor_isa_map(m)) {
        fb_set_err(err, errlen, "argument 'tags' must be a map of text => text");
        return FIDBUS_INVALID;
    }
    if (cbor_map_size(m) > FIDBUS_MAX_TAGS) {
        fb_set_err(err, errlen, "more than %u tags", FIDBUS_MAX_TAGS);
        return FIDBUS_INVALID;
    }
    struct cbor_pair *pairs = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m); i++) {
        if (!cbor_isa_string(pairs[i].key) || !cbor_isa_string(pairs[i].value)) {
            fb_set_err(err, errlen, "argument 'tags': keys and values must be text");
            return FIDBUS_INVALID;
        }
        char *k = NULL, *v = NULL;
        size_t kl, vl;
        if (text_dup(pairs[i].key, &k, &kl) < 0 ||
            text_dup(pairs[i].value, &v, &vl) < 0) {
            free(k);
            return -ENOMEM;
        }
        tags[*ntags].key = k;
        tags[*ntags].value = v;
        (*ntags)++; /* owned from here, whatever the checks say */
        if (!fidbus_tag_key_valid(k, kl)) {
            fb_set_err(err, errlen, "tag key '%.64s' is not 1-64 bytes of [A-Za-z0-9_.-]",
                       k);
            return FIDBUS_INVALID;
        }
        if (!fidbus_tag_value_valid(v, vl)) {
            fb_set_err(err, errlen,
                       "tag '%s': the value is not 0-255 bytes of UTF-8 without NUL", k);
            return FIDBUS_INVALID;
        }
        for (size_t j = 0; j + 1 < *ntags; j++) {
            if (strcmp(tags[j].key, k) == 0) {
                fb_set_err(err, errlen, "duplicate tag key '%s'", k);
                return FIDBUS_INVALID;
            }
        }
    }
    return 0;
}

/* args.tags checked by the rules a PUBLISH's tags meet, so the answer is
 * about an event the bus would accept. */
static int test_tags_load(const cbor_item_t *args, struct test_tags *tt, char *err,
                          size_t errlen)
{
    return fb_ctl_tags_arg(args, tt->tags, &tt->ntags, err, errlen);
}

/* What dispatch would do with this event under the running table, except
 * that a split route without its split_by tag (a weighted random choice
 * per event) answers every target it may choose from. */
static cbor_item_t *cmd_route_test(const struct fb_ctl_env *env, const cbor_item_t *args,
                                   struct cb *b, struct fb_ctl_reply *out)
{
    char *event = NULL;
    struct fb_route_table *proposed = NULL;
    struct test_tags tt = {.ntags = 0};
    cbor_item_t *m = NULL;
    int rc =
        fb_ctl_arg_text(args, "event", true, &event, out->message, sizeof out->message);
    if (rc == 0 && !fidbus_event_id_valid(event, strlen(event))) {
        snprintf(out->message, sizeof out->message,
                 "event '%.255s' is not an event id (1-255 bytes of [A-Za-z0-9_.:-])",
                 event);
        rc = FIDBUS_INVALID;
    }
    if (rc == 0)
        rc = test_tags_load(args, &tt, out->message, sizeof out->message);
    const cbor_item_t *apply = fb_ctl_arg(args, "apply");
    if (rc == 0 && apply)
        rc = fb_ctl_apply_table(env->d, apply, &proposed, out->message,
                                sizeof out->message);
    if (rc < 0) {
        b->oom = true; /* answered as INTERNAL by fb_ctl_run */
        goto done;
    }
    if (rc > 0) {
        out->code = rc;
        goto done;
    }

    const struct fb_route_table *t = proposed ? proposed : env->d->table;
    const struct fb_route *r =
        t ? fb_routes_match(t, event, strlen(event), tt.tags, tt.ntags) : NULL;
    const char *by = NULL;
    if (r && r->mode == FB_MODE_SPLIT && r->split_by)
        for (size_t i = 0; i < tt.ntags && !by; i++)
            if (strcmp(tt.tags[i].key, r->split_by) == 0)
                by = tt.tags[i].value;
    cbor_item_t *targets = mk_array(b, !r ? 0 : by ? 1 : r->ntargets);
    if (by)
        push(b, targets, funcid_text(r->targets[fb_route_split_pick(r, by)].fn->id));
    else
        for (size_t i = 0; r && i < r->ntargets; i++)
            /* a split never picks a weight-0 target; fan-out calls all */
            if (r->mode == FB_MODE_ALL || r->targets[i].weight)
                push(b, targets, funcid_text(r->targets[i].fn->id));

    m = mk_map(b, 3);
    put(b, m, "route", text(r ? r->name : NULL));
    put(b, m, "targets", targets);
    put(b, m, "generation", u64(fb_routes_generation(t)));
done:
    fb_routes_free(proposed);
    free(event);
    test_tags_clear(&tt);
    return m;
}

/* ------------------------------------------------------- config.export */

static cbor_item_t *cmd_config_export(const struct fb_ctl_env *env, struct cb *b)
{
    char *conf = NULL;
    if (fb_ctl_export_config(env->d, &conf) < 0) {
        b->oom = true;
        return NULL;
    }
    cbor_item_t *m = mk_map(b, 1);
    put(b, m, "config", cbor_build_string(conf));
    free(conf);
    return m;
}

/* ------------------------------------------------------------ dispatch */

typedef cbor_item_t *(*cmd_fn)(const struct fb_ctl_env *env, struct cb *b);
/* A command with args: on failure it sets out->code and out->message and
 * returns NULL. */
typedef cbor_item_t *(*cmd_args_fn)(const struct fb_ctl_env *env, const cbor_item_t *args,
                                    struct cb *b, struct fb_ctl_reply *out);

static const struct {
    const char *name;
    cmd_fn fn; /* NULL: in proto/control.md, not written yet (or takes args) */
    cmd_args_fn afn;
} commands[] = {
    {"status", cmd_status, NULL},
    {"stats", cmd_stats, NULL},
    {"plugin.list", cmd_plugin_list, NULL},
    {"plugin.load", NULL, fb_ctl_plugin_load},
    {"plugin.unload", NULL, fb_ctl_plugin_unload},
    {"plugin.reload", NULL, fb_ctl_plugin_reload},
    {"func.list", cmd_func_list, NULL},
    {"func.release", NULL, fb_ctl_func_release},
    {"func.members", NULL, fb_ctl_func_members},
    {"route.list", cmd_route_list, NULL},
    {"route.add", NULL, fb_ctl_route_add},
    {"route.del", NULL, fb_ctl_route_del},
    {"route.apply", NULL, fb_ctl_route_apply},
    {"route.test", NULL, cmd_route_test},
    {"config.reload", NULL, fb_ctl_config_reload},
    {"config.export", cmd_config_export, NULL},
    {"conn.list", fb_ctl_conn_list, NULL},
};

void fb_ctl_run(const struct fb_ctl_env *env, const char *command, size_t command_len,
                struct fidbus_slice args, struct fb_ctl_reply *out)
{
    memset(out, 0, sizeof *out);
    size_t i = 0, n = sizeof commands / sizeof commands[0];
    while (i < n && !(strlen(commands[i].name) == command_len &&
                      memcmp(commands[i].name, command, command_len) == 0))
        i++;
    if (i == n) {
        out->code = FIDBUS_UNSUPPORTED;
        snprintf(out->message, sizeof out->message, "unknown command '%.*s'",
                 (int)(command_len > 128 ? 128 : command_len), command);
        return;
    }
    if (!commands[i].fn && !commands[i].afn) {
        out->code = FIDBUS_UNSUPPORTED;
        snprintf(out->message, sizeof out->message, "%s is not implemented yet",
                 commands[i].name);
        return;
    }

    /* Only commands that take args decode them: the others answer
     * whatever args a client sends, as they always did. */
    cbor_item_t *amap = NULL;
    if (commands[i].afn) {
        int rc = fb_ctl_args_load(args, &amap, out->message, sizeof out->message);
        if (rc) {
            out->code = rc < 0 ? FIDBUS_INTERNAL : rc;
            if (rc < 0)
                snprintf(out->message, sizeof out->message, "%s: out of memory",
                         commands[i].name);
            return;
        }
    }

    struct cb b = {0};
    pthread_mutex_lock(&env->d->change_lock);
    cbor_item_t *root =
        commands[i].afn ? commands[i].afn(env, amap, &b, out) : commands[i].fn(env, &b);
    pthread_mutex_unlock(&env->d->change_lock);
    if (amap)
        cbor_decref(&amap);
    if (out->code) {
        if (root)
            cbor_decref(&root);
        return;
    }

    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    if (root && !b.oom)
        len = cbor_serialize_alloc(root, &buf, &cap);
    if (root)
        cbor_decref(&root);
    if (!len) {
        free(buf);
        out->code = FIDBUS_INTERNAL;
        snprintf(out->message, sizeof out->message, "%s: out of memory",
                 commands[i].name);
        return;
    }
    out->result = buf;
    out->result_len = len;
}

/* ---------------------------------------------------------------- args */

/* A text item's bytes (definite or chunked) as a malloc'd C string. */
static int text_dup(const cbor_item_t *s, char **out, size_t *outlen)
{
    size_t len = 0;
    if (cbor_string_is_definite(s)) {
        len = cbor_string_length(s);
    } else {
        cbor_item_t **ch = cbor_string_chunks_handle(s);
        for (size_t i = 0; i < cbor_string_chunk_count(s); i++)
            len += cbor_string_length(ch[i]);
    }
    char *p = malloc(len + 1);
    if (!p)
        return -ENOMEM;
    if (cbor_string_is_definite(s)) {
        if (len)
            memcpy(p, cbor_string_handle(s), len);
    } else {
        cbor_item_t **ch = cbor_string_chunks_handle(s);
        size_t at = 0;
        for (size_t i = 0; i < cbor_string_chunk_count(s); i++) {
            size_t l = cbor_string_length(ch[i]);
            if (l)
                memcpy(p + at, cbor_string_handle(ch[i]), l);
            at += l;
        }
    }
    p[len] = '\0';
    *out = p;
    *outlen = len;
    return 0;
}

int fb_ctl_args_load(struct fidbus_slice args, cbor_item_t **out, char *err,
                     size_t errlen)
{
    if (args.len == 0) {
        *out = cbor_new_definite_map(0);
        return *out ? 0 : -ENOMEM;
    }
    struct cbor_load_result res;
    cbor_item_t *item = fb_cbor_load(args.ptr, args.len, FB_CBOR_LOAD_DEPTH, &res);
    if (!item) {
        if (res.error.code == CBOR_ERR_MEMERROR)
            return -ENOMEM;
        fb_set_err(err, errlen, "args are not well-formed CBOR (at byte %zu)",
                   res.error.position);
        return FIDBUS_INVALID;
    }
    if (res.read != args.len || !cbor_isa_map(item)) {
        cbor_decref(&item);
        fb_set_err(err, errlen, "args must be one CBOR map");
        return FIDBUS_INVALID;
    }
    *out = item;
    return 0;
}

cbor_item_t *fb_ctl_arg(const cbor_item_t *map, const char *key)
{
    if (!map || !cbor_isa_map(map))
        return NULL;
    struct cbor_pair *pairs = cbor_map_handle(map);
    size_t klen = strlen(key);
    for (size_t i = 0; i < cbor_map_size(map); i++) {
        if (!cbor_isa_string(pairs[i].key))
            continue;
        char *k;
        size_t len;
        if (text_dup(pairs[i].key, &k, &len) < 0)
            return NULL;
        bool eq = len == klen && memcmp(k, key, klen) == 0;
        free(k);
        if (eq)
            return pairs[i].value;
    }
    return NULL;
}

int fb_ctl_arg_text(const cbor_item_t *map, const char *key, bool required, char **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    cbor_item_t *v = fb_ctl_arg(map, key);
    if (!v) {
        if (!required)
            return 0;
        fb_set_err(err, errlen, "missing argument '%s'", key);
        return FIDBUS_INVALID;
    }
    if (!cbor_isa_string(v)) {
        fb_set_err(err, errlen, "argument '%s' must be text", key);
        return FIDBUS_INVALID;
    }
    char *s;
    size_t len;
    if (text_dup(v, &s, &len) < 0)
        return -ENOMEM;
    if (strlen(s) != len) {
        free(s);
        fb_set_err(err, errlen, "argument '%s' contains a NUL byte", key);
        return FIDBUS_INVALID;
    }
    *out = s;
    return 0;
}
