/*
 * The daemon's life: bring-up in dependency order, the build-and-flip
 * operation and orderly shutdown.
 *
 * Bring-up binds nothing until every plugin is loaded and the first route
 * table is built, so a bad plugin or route leaves no trace on the system.
 * Shutdown runs in reverse: stop accepting, let every worker finish what
 * it read (blocking calls included), drain the pool, free the table, then
 * fini and dlclose each plugin, last loaded first.
 */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include "base/clock.h"
#include "base/counters.h"
#include "base/err.h"
#include "base/log.h"
#include "bus/listener.h"
#include "bus/member.h"
#include "bus/worker.h"
#include "config/config.h"
#include "config/merge.h"
#include "config/state.h"
#include "control/change.h"
#include "control/control.h"
#include "control/metrics_http.h"
#include "routing/dispatch.h"
#include "routing/plugin_loader.h"
#include "routing/pool.h"
#include "routing/registry.h"
#include "routing/remote.h"
#include "routing/routes.h"
#include "routing/tap.h"
#include "routing/timers.h"
#include "service/activation.h"
#include "service/notify.h"
#include "trusted_dir.h"

static void daemon_stop(struct fb_daemon *d);

/* ------------------------------------------------------ the first set */

/* Sets state.cbor aside (as KIND-time) and says so: it cannot be read. */
static void set_state_aside(struct fb_daemon *d, const char *kind, const char *why)
{
    char name[256] = "";
    int rc = fb_state_set_aside(d->state, kind, name, sizeof name);
    if (rc < 0)
        fb_error("%s/%s: %s; could not rename it: %s", d->cfg->state_dir, FB_STATE_FILE,
                 why, strerror(-rc));
    else
        fb_warn("%s/%s: %s; kept as %s", d->cfg->state_dir, FB_STATE_FILE, why, name);
}

/*
 * A readable state.cbor that the config replaces is kept under a backup
 * name, but as a hard link while the config is applied: if that fails
 * (a plugin, a full disk), state.cbor must still be there as it was for
 * the next start, with its routes and generation.
 * Only where hard links are missing is it renamed at once, as before.
 */
struct stale_state {
    char name[256]; /* the backup's name; "" when none was made */
    bool linked;
};

static void stale_keep(struct fb_daemon *d, struct stale_state *ss)
{
    int rc = fb_state_link_aside(d->state, "bak", ss->name, sizeof ss->name);
    if (rc == 0) {
        ss->linked = true;
        return;
    }
    ss->name[0] = '\0';
    if (rc == -ENOENT)
        return;
    rc = fb_state_set_aside(d->state, "bak", ss->name, sizeof ss->name);
    if (rc < 0) {
        ss->name[0] = '\0';
        fb_error("%s/%s: could not keep a copy of it: %s", d->cfg->state_dir,
                 FB_STATE_FILE, strerror(-rc));
    }
}

/* The config was applied (ok) or not: says where the old state went, or
 * takes the backup link away again. */
static void stale_done(struct fb_daemon *d, struct stale_state *ss, bool ok,
                       const char *why)
{
    if (!ss->name[0])
        return;
    if (!ok && ss->linked) {
        fb_state_drop_aside(d->state, ss->name);
        return;
    }
    if (ok)
        fb_warn("%s/%s: %s; kept as %s", d->cfg->state_dir, FB_STATE_FILE, why, ss->name);
}

/* Logs the items a start's per-item merge gave the file's version over a
 * runtime change of their own (config/merge.h). */
static void log_overridden(const struct fb_merge *m)
{
    for (size_t i = 0; i < m->nplugins; i++)
        if (m->plugins[i].why == FB_MERGE_OVERRIDE)
            fb_warn("plugin %s was changed in the config file and at runtime: the "
                    "file's version is applied",
                    m->plugins[i].name);
    for (size_t i = 0; i < m->nroutes; i++)
        if (m->routes[i].why == FB_MERGE_OVERRIDE)
            fb_warn("route %s was changed in the config file and at runtime: the "
                    "file's version is applied",
                    m->routes[i].name);
}

/*
 * A state from an earlier config whose items it knows ("base"): what the
 * edit of the file changed is applied per item, the rest of the state is
 * restored. 0 when done; *fallback when it could not be applied (why says
 * so: the caller applies the config whole); else a failure to stop for.
 */
static int start_merged(struct fb_daemon *d, struct fb_state *st, struct fb_runset **base,
                        const char *stale_why, bool *fallback, char *why, size_t whylen,
                        char *err, size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    struct fb_runset file = {cfg->plugins, cfg->nplugins, cfg->routes, cfg->nroutes};
    struct fb_merge m;
    struct fb_change_result res;
    struct stale_state stale = {0};
    int rc = fb_merge_run(&st->base, &file, &st->set, &m);
    if (rc) {
        fb_set_err(err, errlen, "merging the config into the state: %s", strerror(-rc));
        return rc;
    }
    stale_keep(d, &stale);
    struct fb_change c = {
        .load = m.set.plugins,
        .nload = m.set.nplugins,
        .routes = m.set.routes,
        .nroutes = m.set.nroutes,
        .base = *base,
    };
    rc = fb_change_commit(d, &c, &res, why, whylen);
    stale_done(d, &stale, rc == 0, stale_why);
    if (rc == 0) {
        *base = NULL; /* the daemon's now */
        fb_info("applied %zu item%s the config file changed and restored the rest "
                "from %s/%s",
                m.nchanges, m.nchanges == 1 ? "" : "s", cfg->state_dir, FB_STATE_FILE);
        log_overridden(&m);
        fb_change_result_clear(&res);
    } else if (res.save_failed) {
        snprintf(err, errlen,
                 "%s; %s/%s is kept as it was: make room (or fix the error) and start "
                 "again",
                 why, cfg->state_dir, FB_STATE_FILE);
    } else {
        *fallback = true;
    }
    fb_merge_clear(&m);
    return rc;
}

/*
 * The latest intent wins (README, "Restarts and the state file"):
 * state.cbor written from this very config text is the config plus every
 * acknowledged runtime change, so it is restored. A config edited since
 * is the admin's newer intent: what the edit changed is applied per item
 * over the state (config/merge.h, the rule of config.reload), and the old
 * state kept aside; a state that does not know the config it came from
 * (no "base": an older daemon's) gets the config applied whole. Either
 * way the generation continues from the state's, so it never goes back.
 */
static int start_set(struct fb_daemon *d, char *err, size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    struct fb_change_result res;
    struct fb_state st = {0};
    struct stale_state stale = {0};
    struct fb_runset *base = NULL;
    char why[1024], stale_why[1200] = "";
    int rc;

    snprintf(d->config_hash, sizeof d->config_hash, "%s", cfg->hash);
    rc = fb_runset_dup(cfg->plugins, cfg->nplugins, cfg->routes, cfg->nroutes, &base);
    if (rc) {
        fb_set_err(err, errlen, "out of memory");
        return rc;
    }
    rc = fb_state_open(cfg->state_dir, &d->state, why, sizeof why);
    if (rc) {
        fb_set_err(err, errlen, "state_dir %s", why);
        goto out;
    }
    rc = fb_state_load(d->state, &st, why, sizeof why);
    bool restore = false, merge = false;
    if (rc == 0) {
        d->generation = st.generation;
        if (strcmp(st.config_hash, cfg->hash) == 0)
            restore = true;
        else if ((merge = st.has_base))
            snprintf(stale_why, sizeof stale_why,
                     "the config file changed since it was written, so what the edit "
                     "changed is applied over it");
        else
            snprintf(stale_why, sizeof stale_why,
                     "the config file changed since it was written, so the config is "
                     "applied");
    } else if (rc == FIDBUS_INVALID) {
        char line[1200];
        snprintf(line, sizeof line, "unusable (%s), so the config is applied", why);
        set_state_aside(d, "corrupt", line);
    } else if (rc != -ENOENT) {
        /* Unreadable or not ours is not corrupt: refuse rather than
         * overwrite it. */
        fb_set_err(err, errlen, "%s", why);
        goto out;
    }

    if (restore) {
        struct fb_change c = {
            .load = st.set.plugins,
            .nload = st.set.nplugins,
            .routes = st.set.routes,
            .nroutes = st.set.nroutes,
            .base = base,
        };
        rc = fb_change_commit(d, &c, &res, why, sizeof why);
        if (rc == 0) {
            base = NULL;
            fb_info("restored %zu plugin%s and %zu route%s from %s/%s", st.set.nplugins,
                    st.set.nplugins == 1 ? "" : "s", st.set.nroutes,
                    st.set.nroutes == 1 ? "" : "s", cfg->state_dir, FB_STATE_FILE);
            fb_change_result_clear(&res);
            goto out;
        }
        if (res.save_failed) {
            /* The state was good; only writing it again failed. Applying
             * the config instead would fail the same way and throw the
             * acknowledged changes away: stop, state.cbor untouched. */
            snprintf(
                err, errlen,
                "%s; %s/%s is kept as it was: make room (or fix the error) and start "
                "again",
                why, cfg->state_dir, FB_STATE_FILE);
            goto out;
        }
        snprintf(stale_why, sizeof stale_why,
                 "cannot be restored (%s), so the config is applied", why);
    } else if (merge) {
        bool fallback = false;
        rc = start_merged(d, &st, &base, stale_why, &fallback, why, sizeof why, err,
                          errlen);
        if (!fallback)
            goto out;
        snprintf(stale_why, sizeof stale_why,
                 "the config file changed since it was written and its edit cannot be "
                 "applied over it (%s), so the config is applied",
                 why);
    }
    fb_state_clear(&st);
    if (stale_why[0])
        stale_keep(d, &stale);

    struct fb_change c = {
        .load = cfg->plugins,
        .nload = cfg->nplugins,
        .routes = cfg->routes,
        .nroutes = cfg->nroutes,
        .base = base,
    };
    rc = fb_change_commit(d, &c, &res, why, sizeof why);
    stale_done(d, &stale, rc == 0, stale_why);
    if (rc) {
        if (res.failed_load != SIZE_MAX)
            fb_set_err(err, errlen, "%s:%d: %s", cfg->file,
                       cfg->plugins[res.failed_load].line, why);
        else if (fb_config_route_line(cfg, why) > 0)
            fb_set_err(err, errlen, "%s:%d: %s", cfg->file,
                       fb_config_route_line(cfg, why), why);
        else
            fb_set_err(err, errlen, "%s: %s", cfg->file, why);
        goto out;
    }
    base = NULL;
    fb_change_result_clear(&res);
out:
    fb_state_clear(&st);
    fb_runset_free(base);
    return rc;
}

/* ----------------------------------------------------------- bring-up */

/*
 * Makes dir (mkdir -p) and checks that it is ours: a runtime or state dir
 * that another user made or can write would let them plant a state file
 * naming their plugin, or a socket, before we start (trusted_dir.h).
 */
static int make_trusted_dir(const char *key, const char *dir, mode_t mode, char *err,
                            size_t errlen)
{
    char why[900];
    int fd = fb_trusted_dir_open(dir, mode, why, sizeof why);
    if (fd < 0) {
        fb_set_err(err, errlen, "%s %s", key, why);
        return fd;
    }
    close(fd);
    return 0;
}

int fb_daemon_new(struct fb_config *cfg, struct fb_daemon **out)
{
    struct fb_daemon *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->cfg = cfg;
    d->main_thread = pthread_self();
    d->start_ns = fb_now_ns();
    pthread_mutex_init(&d->change_lock, NULL);
    pthread_mutex_init(&d->counters_lock, NULL);
    pthread_mutex_init(&d->uids_lock, NULL);
    d->act = malloc(sizeof *d->act);
    if (d->act)
        fb_activation_init(d->act);
    d->main_loop = d->act ? malloc(sizeof *d->main_loop) : NULL;
    int rc = d->main_loop ? uv_loop_init(d->main_loop) : -ENOMEM;
    if (rc < 0) {
        free(d->main_loop);
        d->main_loop = NULL;
        fb_daemon_free(d);
        return rc;
    }
    rc = fb_registry_new(&d->reg);
    if (rc == 0)
        rc = fb_remote_new(d, &d->remote);
    if (rc == 0)
        rc = fb_taps_new(&d->taps);
    if (rc < 0) {
        fb_daemon_free(d);
        return rc;
    }
    fb_registry_set_remote(d->reg, d->remote);
    fb_member_install(d);
    *out = d;
    return 0;
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct fb_daemon *d = s->data;
    if (signum == SIGHUP) {
        fb_info("SIGHUP: reloading the configuration");
        fb_control_reload(d->control);
        return;
    }
    fb_info("%s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    daemon_stop(d);
}

static int start_signals(struct fb_daemon *d)
{
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(d->main_loop, sigs[i]);
        sigs[i]->data = d;
        int rc = uv_signal_start(sigs[i], on_signal, nums[i]);
        if (rc < 0)
            return rc;
    }
    d->signals_on = true;
    return 0;
}

static void stop_signals(struct fb_daemon *d)
{
    if (!d->signals_on)
        return;
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    d->signals_on = false;
}

int fb_daemon_start(struct fb_daemon *d, char *err, size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* First: a bad passed socket stops us before anything is loaded, and
     * the LISTEN_* variables are gone before any other thread runs. */
    struct fb_activation_want want = {
        .unix_path = cfg->unix_path,
        .control_socket = cfg->control_socket,
        .tcp = cfg->tcp_host != NULL,
    };
    if ((rc = fb_activation_take(&want, d->act, err, errlen)) < 0)
        return rc;
    urcu_memb_register_thread();
    d->rcu_registered = true;
    fb_dispatch_mark_rcu_thread();

    if ((rc = make_trusted_dir("runtime_dir", cfg->runtime_dir, 0755, err, errlen)) < 0)
        return rc;
    if ((rc = make_trusted_dir("state_dir", cfg->state_dir, 0750, err, errlen)) < 0)
        return rc;
    fb_plugin_sweep_copies(cfg->runtime_dir);
    if ((rc = fb_timers_new(d->main_loop, &d->timers)) < 0) {
        fb_set_err(err, errlen, "timers: %s", uv_strerror(rc));
        return rc;
    }
    if ((rc = fb_pool_new(d, cfg->blocking_threads, &d->pool)) < 0) {
        fb_set_err(err, errlen, "cannot start the blocking pool: %s", strerror(-rc));
        return rc;
    }

    /* Plugins and routes, under the change lock like any later change. */
    pthread_mutex_lock(&d->change_lock);
    rc = start_set(d, err, errlen);
    pthread_mutex_unlock(&d->change_lock);
    if (rc)
        return rc;

    /* Listeners: bound now, accepting once the workers run. */
    d->listeners = calloc(2, sizeof *d->listeners);
    if (!d->listeners) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (d->act->bus >= 0) {
        rc = fb_listener_unix_fd(d, d->act->bus, &d->listeners[d->nlisteners], err,
                                 errlen);
        if (rc < 0)
            return rc;
        d->act->bus = -1;
        d->nlisteners++;
    } else if (cfg->unix_path) {
        rc = fb_listener_unix(d, cfg->unix_path, cfg->unix_mode,
                              &d->listeners[d->nlisteners], err, errlen);
        if (rc < 0)
            return rc;
        d->nlisteners++;
    }
    if (d->act->tcp >= 0) {
        rc =
            fb_listener_tcp_fd(d, d->act->tcp, &d->listeners[d->nlisteners], err, errlen);
        if (rc < 0)
            return rc;
        d->act->tcp = -1;
        d->nlisteners++;
    } else if (cfg->tcp_host) {
        rc = fb_listener_tcp(d, cfg->tcp_host, cfg->tcp_port,
                             &d->listeners[d->nlisteners], err, errlen);
        if (rc < 0)
            return rc;
        d->nlisteners++;
    }

    d->workers = calloc(cfg->workers, sizeof *d->workers);
    if (!d->workers) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (unsigned i = 0; i < cfg->workers; i++) {
        rc = fb_worker_start(d, i, &d->workers[i]);
        if (rc < 0) {
            fb_set_err(err, errlen, "cannot start I/O worker %u: %s", i, uv_strerror(rc));
            return rc;
        }
        d->nworkers++;
    }
    for (unsigned i = 0; i < d->nlisteners; i++) {
        rc = fb_listener_start(d->listeners[i]);
        if (rc < 0) {
            fb_set_err(err, errlen, "%s: %s", fb_listener_name(d->listeners[i]),
                       uv_strerror(rc));
            return rc;
        }
        fb_info("listening on %s", fb_listener_name(d->listeners[i]));
    }
    bool control_passed = d->act->control >= 0;
    if ((rc = fb_control_new(d, &d->control, err, errlen)) < 0)
        return rc;
    if (cfg->control_socket && !control_passed)
        fb_info("control socket on unix:%s", cfg->control_socket);
    /* After d->control is set (a scrape reads it); under the lock status
     * reads d->metrics with, as the control thread runs already. */
    struct fb_metrics *metrics;
    if ((rc = fb_metrics_start(d, &metrics, err, errlen)) < 0)
        return rc;
    pthread_mutex_lock(&d->change_lock);
    d->metrics = metrics;
    pthread_mutex_unlock(&d->change_lock);
    if ((rc = start_signals(d)) < 0) {
        fb_set_err(err, errlen, "signals: %s", uv_strerror(rc));
        return rc;
    }

    struct fb_set_size n = fb_change_set_size(d);
    fb_info("ready: %u worker%s, %zu plugin%s, %zu route%s, generation %llu", d->nworkers,
            d->nworkers == 1 ? "" : "s", n.plugins, n.plugins == 1 ? "" : "s", n.routes,
            n.routes == 1 ? "" : "s", (unsigned long long)n.generation);
    fb_notify_ready(n.plugins, n.routes, n.generation);
    return 0;
}

int fb_daemon_run(struct fb_daemon *d)
{
    uv_run(d->main_loop, UV_RUN_DEFAULT);
    return 0;
}

/* Begins an orderly stop (what the signal handler does). Main thread. */
static void daemon_stop(struct fb_daemon *d)
{
    if (atomic_exchange(&d->stopping, true))
        return;
    fb_notify_stopping();
    fb_control_stop(d->control);
    for (unsigned i = 0; i < d->nlisteners; i++) {
        fb_listener_close(d->listeners[i]);
        d->listeners[i] = NULL;
    }
    for (unsigned i = 0; i < d->nworkers; i++)
        fb_worker_stop(d->workers[i]);
    fb_pool_begin_stop(d->pool);
    stop_signals(d);
    /* The workers finish on their own threads; the main loop ends when
     * its last handle (plugin timers excepted) is gone. Timers keep it
     * alive, so stop it explicitly and join below in fb_daemon_free. */
    uv_stop(d->main_loop);
}

/* Kept at exit for a handler still running (fb_daemon_free); reachable
 * here so leak checkers see it held on purpose. */
static struct fb_daemon *volatile kept_daemon;

struct fb_daemon *fb_daemon_free(struct fb_daemon *d)
{
    if (!d)
        return NULL;
    atomic_store(&d->stopping, true);
    /* A scrape reads the workers and d->control: the metrics thread ends
     * before both; status on the control thread reads d->metrics, which
     * is freed once that thread has gone too. */
    fb_metrics_stop(d->metrics);
    /* The control thread reads the table and plugins: it goes first. */
    d->control = fb_control_free(d->control);
    d->metrics = fb_metrics_free(d->metrics);
    for (unsigned i = 0; i < d->nlisteners; i++)
        fb_listener_close(d->listeners[i]);
    for (unsigned i = 0; i < d->nworkers; i++)
        fb_worker_stop(d->workers[i]);
    /* A hung blocking call is waited for up to handler_deadline_ms, not
     * for ever: the workers finish once the pool gives up on it. */
    fb_pool_begin_stop(d->pool);
    for (unsigned i = 0; i < d->nworkers; i++)
        fb_worker_join(d->workers[i]);
    free(d->workers);
    free(d->listeners);
    if (d->act)
        fb_activation_close(d->act);
    free(d->act);
    d->pool = fb_pool_free(d->pool);

    /* No thread dispatches any more: the table can go without a grace
     * period, and with it the last reference to plugin functions. */
    d->table = fb_routes_free(d->table);

    /* fini in reverse load order */
    struct fb_plugin *rev = NULL;
    while (d->plugins) {
        struct fb_plugin *p = d->plugins;
        d->plugins = p->next;
        p->next = rev;
        rev = p;
    }
    while (rev) {
        struct fb_plugin *p = rev;
        rev = p->next;
        fb_plugin_unload(d, p);
    }
    fb_plugin_reap_detached(d, true);

    stop_signals(d);
    if (d->timers)
        fb_timers_close(d->timers);
    if (d->main_loop) {
        uv_run(d->main_loop, UV_RUN_DEFAULT);
        int rc = uv_loop_close(d->main_loop);
        if (rc < 0)
            fb_warn("main loop closed with handles left: %s", uv_strerror(rc));
        free(d->main_loop);
    }
    d->reg = fb_registry_free(d->reg);
    /* Member sets retired by call_rcu hold member references: let those
     * callbacks run before the directory goes. */
    if (d->remote) {
        urcu_memb_barrier();
        d->remote = fb_remote_free(d->remote);
    }
    d->taps = fb_taps_free(d->taps); /* no thread dispatches any more */
    d->state = fb_state_close(d->state);
    fb_runset_free(d->base);
    d->base = NULL;
    free(d->embedded_config);
    if (fb_pool_left_threads()) {
        /* A handler given up at shutdown may still return, count its
         * call or publish (pool.c): what those touch -- the daemon, its
         * config and counters -- stays until the process exits. */
        kept_daemon = d;
        if (d->rcu_registered)
            urcu_memb_unregister_thread();
        return NULL;
    }
    fb_counters_free(d);
    pthread_mutex_destroy(&d->counters_lock);
    pthread_mutex_destroy(&d->uids_lock);
    free(d->uids);
    free(d->addrs);
    pthread_mutex_destroy(&d->change_lock);
    if (d->rcu_registered)
        urcu_memb_unregister_thread();
    fb_config_free(d->cfg);
    free(d);
    return NULL;
}
