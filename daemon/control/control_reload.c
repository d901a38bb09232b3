/*
 * config.reload (and SIGHUP): applies what changed in the config file
 * since the daemon last applied it, per item, by the three-way rule of
 * config/merge.h -- BASE (d->base, the config last applied), FILE (the
 * file now), RUNNING (the running set). Routes and plugins the file did
 * not change keep their runtime state, so a canary added with route.add
 * survives a reload as it survives a restart; an item changed in both
 * places takes the file's version and is listed as `overridden`.
 *
 * A plugin whose section is unchanged is not reloaded when its .so was
 * replaced on disk: the reload follows the file only (the instance is
 * named under `replaced_on_disk`; plugin.reload loads the new file).
 *
 * With dry_run the reply says what the reload would do; nothing is
 * loaded, published or saved (proto/control.md, config.reload).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "config/merge.h"
#include "config/state.h"
#include "control/change.h"
#include "control/control_cmds.h"
#include "control/ctl_cbor.h"
#include "routing/plugin_loader.h"
#include "routing/registry.h"
#include "routing/remote.h"
#include "routing/routes.h"
#include "service/notify.h"

static void fail(struct fb_ctl_reply *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct fb_ctl_reply *out, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    out->code = code;
}

static bool same_keys(const struct fb_plugin *p, const struct fb_plugin_conf *pc)
{
    if (p->nkeys != pc->nkeys)
        return false;
    for (size_t i = 0; i < pc->nkeys; i++)
        if (strcmp(p->keys[i].key, pc->keys[i].key) != 0 ||
            strcmp(p->keys[i].value, pc->keys[i].value) != 0)
            return false;
    return true;
}

/* The file the instance came from was replaced on disk since. */
static bool replaced_on_disk(const struct fb_plugin *p)
{
    struct stat st;
    if (stat(p->path, &st) < 0)
        return true;
    return !(st.st_dev == p->src_dev && st.st_ino == p->src_ino &&
             st.st_size == p->src_size && st.st_mtim.tv_sec == p->src_mtime.tv_sec &&
             st.st_mtim.tv_nsec == p->src_mtime.tv_nsec);
}

/* The [daemon], [listen] and [control] keys whose new values need a
 * restart (the reload applies plugins, routes and log_level). */
static void restart_keys(struct cb *b, cbor_item_t *arr, const struct fb_config *a,
                         const struct fb_config *n)
{
#define STR_DIFF(x)                                                                      \
    ((a->x == NULL) != (n->x == NULL) || (a->x && strcmp(a->x, n->x) != 0))
    struct {
        const char *key;
        bool differs;
    } keys[] = {
        {"workers", a->workers != n->workers},
        {"runtime_dir", STR_DIFF(runtime_dir)},
        {"state_dir", STR_DIFF(state_dir)},
        {"max_frame", a->max_frame != n->max_frame},
        {"max_depth", a->max_depth != n->max_depth},
        {"blocking_threads", a->blocking_threads != n->blocking_threads},
        {"handler_deadline_ms", a->handler_deadline_ms != n->handler_deadline_ms},
        {"quarantine_after", a->quarantine_after != n->quarantine_after},
        {"unix", STR_DIFF(unix_path)},
        {"unix_mode", a->unix_mode != n->unix_mode},
        {"tcp", STR_DIFF(tcp)},
        {"tcp_auth", a->tcp_auth != n->tcp_auth},
        {"tcp_key_file", STR_DIFF(tcp_key_file)},
        {"control.socket", STR_DIFF(control_socket)},
        {"control.mode", a->control_mode != n->control_mode},
        {"control.group", STR_DIFF(control_group)},
        {"control.max_reply", a->control_max_reply != n->control_max_reply},
        {"metrics.listen", STR_DIFF(metrics_listen)},
    };
#undef STR_DIFF
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (keys[i].differs)
            push(b, arr, text(keys[i].key));
}

/* The reply's lists, filled before the commit: the names they hold
 * point into instances and a table the commit may free. */
struct lists {
    cbor_item_t *loaded, *reloaded, *unchanged, *dropped, *replaced;
    cbor_item_t *added_routes, *changed_routes, *dropped_routes;
    cbor_item_t *kept_runtime, *overridden;
    size_t nloaded, nreloaded, ndropped, nadded_r, nchanged_r, ndropped_r, noverridden;
};

static void lists_free(struct lists *l)
{
    cbor_item_t **all[] = {&l->loaded,         &l->reloaded,       &l->unchanged,
                           &l->dropped,        &l->replaced,       &l->added_routes,
                           &l->changed_routes, &l->dropped_routes, &l->kept_runtime,
                           &l->overridden};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i])
            cbor_decref(all[i]);
}

static cbor_item_t *kind_name(struct cb *b, const char *kind, const char *name)
{
    cbor_item_t *m = mk_map(b, 2);
    put(b, m, "kind", text(kind));
    put(b, m, "name", text(name));
    return m;
}

static void note_why(struct cb *b, struct lists *l, const struct fb_merge_item *it,
                     const char *kind)
{
    if (it->why == FB_MERGE_RUNTIME)
        push(b, l->kept_runtime, kind_name(b, kind, it->name));
    if (it->why == FB_MERGE_OVERRIDE) {
        push(b, l->overridden, kind_name(b, kind, it->name));
        l->noverridden++;
    }
}

/* After a reload that changed the set: each override, as a warning. Read
 * from the reply's list: an item the file deleted is named by the running
 * instance or route, which the commit has freed. */
static void log_overridden(const cbor_item_t *list)
{
    for (size_t i = 0; list && i < cbor_array_size(list); i++) {
        const cbor_item_t *it = cbor_array_handle(list)[i];
        if (cbor_map_size(it) != 2) /* built short of memory */
            continue;
        struct cbor_pair *kv = cbor_map_handle(it);
        fb_warn("config reload: %.*s %.*s was changed in the file and at runtime: the "
                "file's version wins",
                (int)cbor_string_length(kv[0].value),
                (const char *)cbor_string_handle(kv[0].value),
                (int)cbor_string_length(kv[1].value),
                (const char *)cbor_string_handle(kv[1].value));
    }
}

/* Everything a real or dry reload needs, built from the three sets. */
struct plan {
    struct fb_merge m;
    struct fb_plugin **inst; /* RUNNING's instances, as run.plugins */
    struct fb_plugin_conf *run_plugins;
    struct fb_route_spec *run_routes;
    struct fb_plugin_conf *load; /* shallow, from the file */
    struct fb_plugin **drop;
    size_t nload, ndrop;
};

static void plan_clear(struct plan *p)
{
    fb_merge_clear(&p->m);
    free(p->inst);
    free(p->run_plugins);
    free(p->run_routes);
    free(p->load);
    free(p->drop);
}

static int plan_build(struct fb_daemon *d, const struct fb_config *cfg, struct cb *b,
                      struct plan *pl, struct lists *l)
{
    size_t nrun = fb_plugin_count(d->plugins), nroutes = 0;
    pl->inst = calloc(nrun + 1, sizeof *pl->inst);
    pl->run_plugins = calloc(nrun + 1, sizeof *pl->run_plugins);
    pl->load = calloc(cfg->nplugins + 1, sizeof *pl->load);
    pl->drop = calloc(nrun + 1, sizeof *pl->drop);
    if (!pl->inst || !pl->run_plugins || !pl->load || !pl->drop ||
        fb_change_current_routes(d, &pl->run_routes, &nroutes) < 0)
        return -ENOMEM;
    size_t k = 0;
    for (struct fb_plugin *p = d->plugins; p; p = p->next, k++) {
        pl->inst[k] = p;
        pl->run_plugins[k] = (struct fb_plugin_conf){
            .name = p->name, .path = p->path, .keys = p->keys, .nkeys = p->nkeys};
    }
    struct fb_runset run = {pl->run_plugins, nrun, pl->run_routes, nroutes};
    struct fb_runset file = {cfg->plugins, cfg->nplugins, cfg->routes, cfg->nroutes};
    struct fb_runset none = {0};
    int rc = fb_merge_run(d->base ? d->base : &none, &file, &run, &pl->m);
    if (rc)
        return rc;

    /* Room for every item (a definite array holds no more than that; it
     * is written with the count pushed). */
    const struct fb_merge *m = &pl->m;
    size_t np = m->nplugins, nr = m->nroutes;
    l->loaded = mk_array(b, np);
    l->reloaded = mk_array(b, np);
    l->unchanged = mk_array(b, np);
    l->dropped = mk_array(b, np);
    l->replaced = mk_array(b, np);
    l->added_routes = mk_array(b, nr);
    l->changed_routes = mk_array(b, nr);
    l->dropped_routes = mk_array(b, nr);
    l->kept_runtime = mk_array(b, np + nr);
    l->overridden = mk_array(b, np + nr);

    /* Plugins in the order of the resulting list, so loads keep it. */
    for (size_t i = 0; i < m->set.nplugins; i++) {
        const struct fb_merge_item *it =
            fb_merge_find(m->plugins, m->nplugins, m->set.plugins[i].name);
        if (!it || it->change == FB_MERGE_NONE)
            continue;
        pl->load[pl->nload++] = cfg->plugins[it->file_at];
        if (it->change == FB_MERGE_CHANGE)
            pl->drop[pl->ndrop++] = pl->inst[it->run_at];
    }
    for (size_t i = 0; i < m->nplugins; i++) {
        const struct fb_merge_item *it = &m->plugins[i];
        note_why(b, l, it, "plugin");
        switch (it->change) {
        case FB_MERGE_ADD:
            push(b, l->loaded, text(it->name));
            l->nloaded++;
            break;
        case FB_MERGE_CHANGE:
            push(b, l->reloaded, text(it->name));
            l->nreloaded++;
            break;
        case FB_MERGE_DELETE:
            pl->drop[pl->ndrop++] = pl->inst[it->run_at];
            push(b, l->dropped, text(it->name));
            l->ndropped++;
            break;
        case FB_MERGE_NONE:
            if (it->run_at == SIZE_MAX)
                break;
            push(b, l->unchanged, text(it->name));
            if (it->file_at != SIZE_MAX && replaced_on_disk(pl->inst[it->run_at]) &&
                same_keys(pl->inst[it->run_at], &cfg->plugins[it->file_at]))
                push(b, l->replaced, text(it->name));
            break;
        }
    }
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct fb_merge_item *it = &m->routes[i];
        note_why(b, l, it, "route");
        if (it->change == FB_MERGE_ADD) {
            push(b, l->added_routes, text(it->name));
            l->nadded_r++;
        } else if (it->change == FB_MERGE_CHANGE) {
            push(b, l->changed_routes, text(it->name));
            l->nchanged_r++;
        } else if (it->change == FB_MERGE_DELETE) {
            push(b, l->dropped_routes, text(it->name));
            l->ndropped_r++;
        }
    }
    return 0;
}

/*
 * A dry run checks what it can without running plugin code: every file it
 * would load exists, and -- when it would load none -- the new table
 * builds against the functions that would be left. 0, or a code with
 * err; *checked says whether the routes were built.
 */
static int dry_check(struct fb_daemon *d, const struct plan *pl, bool *checked, char *err,
                     size_t errlen)
{
    *checked = false;
    for (size_t i = 0; i < pl->nload; i++) {
        if (access(pl->load[i].path, R_OK) != 0) {
            int e = errno;
            fb_set_err(err, errlen, "plugin '%s': %s: %s", pl->load[i].name,
                       pl->load[i].path, strerror(e));
            return e == ENOENT ? FIDBUS_NOT_FOUND : FIDBUS_INVALID;
        }
    }
    if (pl->nload)
        return 0;
    /* As fb_change_commit's step 1: removing never shrinks the registry,
     * so adding back cannot fail. */
    for (size_t i = 0; i < pl->ndrop; i++)
        fb_registry_remove(d->reg, pl->drop[i]->funcs, pl->drop[i]->nfuncs);
    struct fb_route_table *t = NULL;
    int rc = fb_routes_build(pl->m.set.routes, pl->m.set.nroutes, d->reg,
                             d->generation + 1, &t, err, errlen);
    fb_routes_free(t);
    for (size_t i = 0; i < pl->ndrop; i++)
        (void)fb_registry_add(d->reg, pl->drop[i]->funcs, pl->drop[i]->nfuncs);
    *checked = rc == 0;
    return rc;
}

/* The refusal, naming the file's line of the plugin or route at fault. */
static void refuse(struct fb_ctl_reply *out, int rc, const struct fb_config *cfg,
                   const struct plan *pl, size_t failed_load, const char *why, bool dry)
{
    const char *pre = dry ? "dry run: config would not reload" : "config not reloaded";
    int line = failed_load < pl->nload ? pl->load[failed_load].line
                                       : fb_config_route_line(cfg, why);
    int code = rc < 0 ? FIDBUS_INTERNAL : rc;
    if (line > 0)
        fail(out, code, "%s, nothing changed: %s:%d: %s", pre, cfg->file, line, why);
    else
        fail(out, code, "%s, nothing changed: %s: %s", pre, cfg->file, why);
}

cbor_item_t *fb_ctl_config_reload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out)
{
    struct fb_daemon *d = env->d;
    const cbor_item_t *dr = args ? fb_ctl_arg(args, "dry_run") : NULL;
    if (args && !cbor_isa_map(args)) {
        out->code = FIDBUS_INVALID;
        snprintf(out->message, sizeof out->message, "config.reload args must be a map");
        return NULL;
    }
    if (dr && !cbor_is_bool(dr)) {
        out->code = FIDBUS_INVALID;
        snprintf(out->message, sizeof out->message,
                 "config.reload: 'dry_run' must be true or false");
        return NULL;
    }
    bool dry = dr && cbor_get_bool(dr);

    struct fb_config *cfg = NULL;
    char why[1024];
    int rc = d->embedded_config
                 ? fb_config_load_string(d->embedded_config, d->cfg->file, &cfg, why,
                                         sizeof why)
                 : fb_config_load_file(d->cfg->file, &cfg, why, sizeof why);
    if (rc) {
        fail(out, FIDBUS_INVALID, "%s, nothing changed: %s",
             dry ? "dry run: config would not reload" : "config not reloaded", why);
        return NULL;
    }

    struct plan pl = {0};
    struct lists l = {0};
    struct fb_runset *base = NULL;
    cbor_item_t *m = NULL;
    bool checked = false;
    uint64_t gen = d->generation;
    /* The file's items differ from the last applied, or only its text
     * (a comment): either way the state learns the new config. */
    bool edited = strcmp(cfg->hash, d->config_hash) != 0;
    /* [remote NS] sections take effect with the reload: the new table is
     * built against them (routes to remote functions), and they are put
     * back if the reload fails (routing/remote.h). */
    struct fb_config old_remote = {0};
    bool swapped = false;
    if (!dry) {
        rc = fb_remote_sections_swap(d->remote, cfg, &old_remote);
        if (rc) {
            fail(out, FIDBUS_INTERNAL, "config.reload: %s", strerror(-rc));
            goto done;
        }
        swapped = true;
    }
    rc = plan_build(d, cfg, b, &pl, &l);
    if (rc == 0 && !dry && edited)
        rc = fb_runset_dup(cfg->plugins, cfg->nplugins, cfg->routes, cfg->nroutes, &base);
    if (rc) {
        fail(out, FIDBUS_INTERNAL, "config.reload: %s", strerror(-rc));
        goto done;
    }
    bool changes = pl.m.nchanges > 0;

    if (dry) {
        if (changes && (rc = dry_check(d, &pl, &checked, why, sizeof why)) != 0) {
            refuse(out, rc, cfg, &pl, SIZE_MAX, why, true);
            goto done;
        }
        gen += changes;
    } else if (changes) {
        struct fb_change c = {
            .load = pl.load,
            .nload = pl.nload,
            .drop = pl.drop,
            .ndrop = pl.ndrop,
            .routes = pl.m.set.routes,
            .nroutes = pl.m.set.nroutes,
            .config_hash = cfg->hash,
            .base = base,
        };
        struct fb_change_result res;
        rc = fb_change_commit(d, &c, &res, why, sizeof why);
        if (rc) {
            refuse(out, rc, cfg, &pl, res.failed_load, why, false);
            goto done;
        }
        base = NULL; /* the daemon's now */
        gen = res.generation;
        log_overridden(l.overridden);
        fb_change_result_clear(&res);
    } else if (edited) {
        /* Nothing to flip, but the next reload and a restart must compare
         * with this file: saved without a new generation. */
        rc = fb_change_rebase(d, base, cfg->hash, why, sizeof why);
        if (rc) {
            refuse(out, rc, cfg, &pl, SIZE_MAX, why, false);
            goto done;
        }
        base = NULL;
    }
    if (!dry && cfg->log_level != d->cfg->log_level) {
        fb_log_set_level(cfg->log_level);
        d->cfg->log_level = cfg->log_level;
    }

    cbor_item_t *restart = mk_array(b, 16);
    restart_keys(b, restart, d->cfg, cfg);
    m = mk_map(b, 16);
    put(b, m, "generation", u64(gen));
    put(b, m, "changed", cbor_build_bool(changes));
    put(b, m, "dry_run", cbor_build_bool(dry));
    if (dry)
        put(b, m, "routes_checked", cbor_build_bool(checked || !changes));
    put(b, m, "loaded_plugins", l.loaded);
    put(b, m, "reloaded_plugins", l.reloaded);
    put(b, m, "unchanged_plugins", l.unchanged);
    put(b, m, "dropped_plugins", l.dropped);
    put(b, m, "replaced_on_disk", l.replaced);
    put(b, m, "added_routes", l.added_routes);
    put(b, m, "changed_routes", l.changed_routes);
    put(b, m, "dropped_routes", l.dropped_routes);
    put(b, m, "kept_runtime", l.kept_runtime);
    put(b, m, "overridden", l.overridden);
    put(b, m, "restart_needed", restart);
    if (dry)
        fb_info("config reload dry run from %s: %s", cfg->file,
                changes ? "would change the running set" : "nothing would change");
    else if (changes)
        fb_info("config reloaded from %s: generation %" PRIu64 ", plugins %zu loaded, "
                "%zu reloaded, %zu dropped; routes %zu added, %zu changed, %zu dropped; "
                "%zu overridden",
                cfg->file, gen, l.nloaded, l.nreloaded, l.ndropped, l.nadded_r,
                l.nchanged_r, l.ndropped_r, l.noverridden);
    else
        fb_info("config reloaded from %s: nothing changed (generation %" PRIu64 ")",
                cfg->file, gen);
    /* put() handed the lists to the reply */
    memset(&l, 0, sizeof l);
    if (swapped) {
        swapped = false;
        size_t dropped = fb_remote_sections_commit(d->remote, &old_remote);
        if (dropped)
            fb_info("config reloaded: %zu remote member(s) lost their permission",
                    dropped);
    }

done:
    if (swapped)
        fb_remote_sections_restore(d->remote, &old_remote);
    lists_free(&l);
    fb_runset_free(base);
    plan_clear(&pl);
    fb_config_free(cfg);
    return m;
}

void fb_ctl_reload_from_signal(const struct fb_ctl_env *env)
{
    fb_notify_reloading();
    struct fb_ctl_reply r;
    fb_ctl_run(env, "config.reload", strlen("config.reload"),
               (struct fidbus_slice){NULL, 0}, &r);
    if (r.code)
        fb_error("SIGHUP: %s", r.message);
    free(r.result);
    struct fb_set_size n = fb_change_set_size(env->d);
    fb_notify_ready(n.plugins, n.routes, n.generation);
}
