/*
 * The change transaction (change.h): validate everything, save the state,
 * flip once, then retire what the old table held.
 *
 * The registry is only the writers' view, so steps 1-3 may reshape it
 * freely under the change lock: dispatch reads resolved pointers from the
 * published table and never looks at the registry. Undoing step 1 cannot
 * fail: removing entries never shrinks the registry's array, so adding the
 * same number back needs no allocation.
 */
#include "control/change.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "config/spec_cbor.h"
#include "config/state.h"
#include "routing/plugin_loader.h"
#include "routing/registry.h"
#include "routing/routes.h"

void fb_change_result_clear(struct fb_change_result *res)
{
    if (!res)
        return;
    free(res->loaded);
    res->loaded = NULL;
    res->nloaded = 0;
}

int fb_change_current_routes(const struct fb_daemon *d, struct fb_route_spec **out,
                             size_t *n)
{
    size_t k = fb_routes_count(d->table);
    *out = calloc(k ? k : 1, sizeof(**out));
    if (!*out)
        return -ENOMEM;
    for (size_t i = 0; i < k; i++)
        (*out)[i] = *fb_routes_at(d->table, i)->spec;
    *n = k;
    return 0;
}

static bool dropping(const struct fb_change *c, const struct fb_plugin *p)
{
    for (size_t i = 0; i < c->ndrop; i++)
        if (c->drop[i] == p)
            return true;
    return false;
}

/* The instance list after the change, in the order state and listings
 * keep: survivors in place, a replacement where its predecessor was, then
 * the other new instances. Writes at most n entries. */
static size_t next_list(const struct fb_daemon *d, const struct fb_change *c,
                        struct fb_plugin **loaded, size_t nloaded, struct fb_plugin **out)
{
    size_t k = 0;
    bool *placed = calloc(nloaded ? nloaded : 1, sizeof(*placed));
    for (struct fb_plugin *p = d->plugins; p; p = p->next) {
        if (!dropping(c, p)) {
            out[k++] = p;
            continue;
        }
        for (size_t i = 0; i < nloaded; i++) {
            if (loaded[i] && (!placed || !placed[i]) &&
                strcmp(loaded[i]->name, p->name) == 0) {
                out[k++] = loaded[i];
                if (placed)
                    placed[i] = true;
                break;
            }
        }
    }
    for (size_t i = 0; i < nloaded; i++) {
        if (!loaded[i] || (placed && placed[i]))
            continue;
        /* without `placed` (out of memory) fall back to a name check */
        bool seen = false;
        for (size_t j = 0; !placed && j < k; j++)
            seen |= out[j] == loaded[i];
        if (!seen)
            out[k++] = loaded[i];
    }
    free(placed);
    return k;
}

static int save_state(struct fb_daemon *d, struct fb_plugin **list, size_t n,
                      const struct fb_change *c, uint64_t generation, char *err,
                      size_t errlen)
{
    if (!d->state)
        return 0;
    struct fb_state st = {0};
    /* Views of the instances' own strings: nothing is copied or freed. */
    struct fb_plugin_conf *pcs = calloc(n ? n : 1, sizeof(*pcs));
    if (!pcs) {
        fb_set_err(err, errlen, "state: out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        pcs[i] = (struct fb_plugin_conf){.name = list[i]->name,
                                         .path = list[i]->path,
                                         .keys = list[i]->keys,
                                         .nkeys = list[i]->nkeys};
    st.set.plugins = pcs;
    st.set.nplugins = n;
    st.set.routes = (struct fb_route_spec *)c->routes;
    st.set.nroutes = c->nroutes;
    snprintf(st.config_hash, sizeof st.config_hash, "%s",
             c->config_hash ? c->config_hash : d->config_hash);
    const struct fb_runset *base = c->base ? c->base : d->base;
    if (base) {
        st.base = *base; /* a view, as the rest */
        st.has_base = true;
    }
    st.generation = generation;
    st.written_at = (int64_t)time(NULL);
    char why[512];
    int rc = fb_state_save(d->state, &st, why, sizeof why);
    free(pcs);
    if (rc) {
        fb_set_err(err, errlen, "state not saved, nothing changed: %s", why);
        return rc;
    }
    return 0;
}

static void remember_generation(struct fb_daemon *d, const struct fb_route_table *old)
{
    if (!old)
        return;
    if (d->ngens == FB_GEN_HISTORY) {
        memmove(&d->gens[0], &d->gens[1], (FB_GEN_HISTORY - 1) * sizeof(d->gens[0]));
        d->ngens--;
    }
    d->gens[d->ngens++] = (struct fb_gen_count){
        .generation = fb_routes_generation(old),
        .routed = fb_routes_routed(old),
    };
}

/* A name is taken by a running instance the change keeps, or by one this
 * change loaded already. Asked by the loader before init, so a refused
 * load never runs the plugin's code. */
struct taken_arg {
    struct fb_daemon *d;
    const struct fb_change *c;
    struct fb_plugin *const *loaded;
    size_t nloaded;
};

static bool name_taken(void *arg, const char *name)
{
    const struct taken_arg *ta = arg;
    for (struct fb_plugin *q = ta->d->plugins; q; q = q->next)
        if (!dropping(ta->c, q) && strcmp(q->name, name) == 0)
            return true;
    for (size_t j = 0; j < ta->nloaded; j++)
        if (strcmp(ta->loaded[j]->name, name) == 0)
            return true;
    return false;
}

int fb_change_commit(struct fb_daemon *d, const struct fb_change *c,
                     struct fb_change_result *res, char *err, size_t errlen)
{
    int rc = 0;
    size_t nold = 0;
    for (struct fb_plugin *p = d->plugins; p; p = p->next)
        nold++;
    memset(res, 0, sizeof(*res));
    res->failed_load = SIZE_MAX;

    struct fb_plugin **loaded = calloc(c->nload ? c->nload : 1, sizeof(*loaded));
    struct fb_plugin **list = calloc(nold + c->nload + 1, sizeof(*list));
    if (!loaded || !list) {
        free(loaded);
        free(list);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }

    /* 1. */
    for (size_t i = 0; i < c->ndrop; i++)
        fb_registry_remove(d->reg, c->drop[i]->funcs, c->drop[i]->nfuncs);

    /* 2. */
    size_t nloaded = 0;
    for (size_t i = 0; i < c->nload; i++) {
        struct fb_plugin *p = NULL;
        struct taken_arg ta = {d, c, loaded, nloaded};
        rc = fb_plugin_load_checked(d, &c->load[i], name_taken, &ta, &p, err, errlen);
        if (rc) {
            res->failed_load = i;
            goto undo;
        }
        loaded[nloaded++] = p;
    }

    /* 3. */
    struct fb_route_table *t = NULL;
    rc = fb_routes_build(c->routes, c->nroutes, d->reg, d->generation + 1, &t, err, errlen);
    if (rc)
        goto undo;

    /* 4. */
    size_t nlist = next_list(d, c, loaded, nloaded, list);
    rc = save_state(d, list, nlist, c, d->generation + 1, err, errlen);
    if (rc) {
        res->save_failed = true;
        fb_routes_free(t);
        if (rc < 0 && rc != -ENOMEM)
            rc = FIDBUS_INTERNAL;
        goto undo;
    }

    /* 5. The new instances join the list before the flip: from here on
     * the table may call them, and the list is what listings show. */
    struct fb_plugin *retired = NULL;
    for (struct fb_plugin *p = d->plugins, *next; p; p = next) {
        next = p->next;
        if (dropping(c, p)) {
            p->next = retired;
            retired = p;
        }
    }
    for (size_t i = 0; i < nlist; i++)
        list[i]->next = i + 1 < nlist ? list[i + 1] : NULL;
    d->plugins = nlist ? list[0] : NULL;
    if (c->config_hash)
        snprintf(d->config_hash, sizeof d->config_hash, "%s", c->config_hash);
    if (c->base) {
        fb_runset_free(d->base);
        d->base = c->base;
    }

    fb_routes_inherit_counters(t, d->table);
    struct fb_route_table *old = fb_routes_publish(&d->table, t);
    d->generation++;
    remember_generation(d, old);
    fb_routes_free(old);

    /* 6. No reader can reach the retired instances' functions now; what
     * is left is their queued blocking calls, drained by the unload. */
    while (retired) {
        struct fb_plugin *p = retired;
        retired = p->next;
        fb_plugin_unload(d, p);
    }

    res->generation = d->generation;
    res->loaded = loaded;
    res->nloaded = nloaded;
    free(list);
    return 0;

undo:
    /* Never published: no reader saw them, no grace period is owed. */
    for (size_t i = nloaded; i-- > 0;)
        fb_plugin_unload(d, loaded[i]);
    for (size_t i = 0; i < c->ndrop; i++)
        (void)fb_registry_add(d->reg, c->drop[i]->funcs, c->drop[i]->nfuncs);
    free(loaded);
    free(list);
    return rc;
}

int fb_change_rebase(struct fb_daemon *d, struct fb_runset *base, const char *config_hash,
                     char *err, size_t errlen)
{
    size_t n = fb_plugin_count(d->plugins);
    struct fb_plugin **list = calloc(n + 1, sizeof(*list));
    struct fb_route_spec *routes = NULL;
    size_t nroutes = 0;
    if (!list || fb_change_current_routes(d, &routes, &nroutes) < 0) {
        free(list);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    size_t k = 0;
    for (struct fb_plugin *p = d->plugins; p; p = p->next)
        list[k++] = p;
    struct fb_change c = {
        .routes = routes, .nroutes = nroutes, .config_hash = config_hash, .base = base};
    int rc = save_state(d, list, k, &c, d->generation, err, errlen);
    free(list);
    free(routes);
    if (rc)
        return rc;
    snprintf(d->config_hash, sizeof d->config_hash, "%s", config_hash);
    fb_runset_free(d->base);
    d->base = base;
    return 0;
}

struct fb_set_size fb_change_set_size(struct fb_daemon *d)
{
    pthread_mutex_lock(&d->change_lock);
    struct fb_set_size n = {
        .plugins = fb_plugin_count(d->plugins),
        .routes = d->table ? fb_routes_count(d->table) : 0,
        .generation = d->generation,
    };
    pthread_mutex_unlock(&d->change_lock);
    return n;
}
