/*
 * The control commands that change the running set: route.add, route.del,
 * route.apply, plugin.load, plugin.unload, plugin.reload, and the
 * proposed table of route.test's dry run (config.reload: control_reload.c).
 *
 * Each turns its args into one struct fb_change (change.h) -- the complete
 * new route set, the instances to load and to drop -- and commits it: all
 * checks happen before the flip, and a refusal leaves the running table,
 * its generation and state.cbor untouched. They run on the control thread
 * with the change lock held (fb_ctl_run).
 */
#include "control/control_cmds.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <fidbus/funcid.h>

#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "config/spec_cbor.h"
#include "control/change.h"
#include "control/ctl_cbor.h"
#include "routing/plugin_loader.h"
#include "routing/registry.h"
#include "routing/remote.h"
#include "routing/routes.h"
#include "service/notify.h"

/* ---------------------------------------------------------------- sets */

/* A proposed route set: shallow entries (pointing into the running table)
 * plus the specs decoded from the request, which it owns. */
struct set {
    struct fb_route_spec *v;
    size_t n;
    struct fb_route_spec *owned;
    size_t nowned;
    size_t first_added; /* v[first_added..] came from this request's `add` */
};

static void set_clear(struct set *s)
{
    for (size_t i = 0; i < s->nowned; i++)
        fb_route_spec_clear(&s->owned[i]);
    free(s->owned);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static ssize_t set_find(const struct set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void set_remove(struct set *s, size_t i)
{
    memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(s->v[0]));
    s->n--;
}

/* Room for `more` entries; the current routes when s is empty and fresh. */
static int set_start(const struct fb_daemon *d, struct set *s, size_t more, bool empty)
{
    struct fb_route_spec *cur = NULL;
    size_t n = 0;
    if (!empty && fb_change_current_routes(d, &cur, &n) < 0)
        return -ENOMEM;
    s->v = realloc(cur, (n + more + 1) * sizeof(*s->v));
    if (!s->v) {
        free(cur);
        return -ENOMEM;
    }
    s->n = n;
    s->first_added = n;
    s->owned = calloc(more + 1, sizeof(*s->owned));
    return s->owned ? 0 : -ENOMEM;
}

/*
 * The names of a set, hashed (open addressing, slot = index + 1, 0 free),
 * for route.apply's adds: a linear search per added route made 15,000 of
 * them hold the control thread for seconds. Built once the deletes are
 * done, since removing shifts the indexes.
 */
struct name_index {
    size_t *slot;
    size_t mask;
};

static size_t name_hash(const char *name)
{
    size_t h = 14695981039346656037ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static ssize_t index_find(const struct name_index *ix, const struct set *s,
                          const char *name)
{
    for (size_t i = name_hash(name) & ix->mask; ix->slot[i]; i = (i + 1) & ix->mask)
        if (strcmp(s->v[ix->slot[i] - 1].name, name) == 0)
            return (ssize_t)(ix->slot[i] - 1);
    return -1;
}

static void index_put(struct name_index *ix, const struct set *s, size_t at)
{
    size_t i = name_hash(s->v[at].name) & ix->mask;
    while (ix->slot[i])
        i = (i + 1) & ix->mask;
    ix->slot[i] = at + 1;
}

/* For the set's entries now and `more` to come: at most half full. */
static int index_build(struct name_index *ix, const struct set *s, size_t more)
{
    size_t cap = 16;
    while (cap < 2 * (s->n + more))
        cap *= 2;
    ix->slot = calloc(cap, sizeof *ix->slot);
    if (!ix->slot)
        return -ENOMEM;
    ix->mask = cap - 1;
    for (size_t i = 0; i < s->n; i++)
        index_put(ix, s, i);
    return 0;
}

/* Removes every route named in `del` (an array), each of which must be in
 * the set once: marked through the name index, then compacted in one pass,
 * so deleting thousands of routes is linear, not a shift per name. */
static int set_delete(struct set *s, const cbor_item_t *del, char *err, size_t errlen)
{
    size_t ndel = cbor_array_size(del);
    if (ndel == 0)
        return 0;
    struct name_index ix = {0};
    bool *gone = calloc(s->n + 1, sizeof *gone);
    int rc = gone ? index_build(&ix, s, 0) : -ENOMEM;
    for (size_t i = 0; i < ndel && rc == 0; i++) {
        cbor_item_t *it = cbor_array_handle(del)[i];
        if (!cbor_isa_string(it) || !cbor_string_is_definite(it) ||
            cbor_string_length(it) > 64) {
            fb_set_err(err, errlen, "route.apply: 'del' item %zu is not a route name", i);
            rc = FIDBUS_INVALID;
            break;
        }
        char name[65];
        memcpy(name, cbor_string_handle(it), cbor_string_length(it));
        name[cbor_string_length(it)] = '\0';
        ssize_t at = index_find(&ix, s, name);
        if (at < 0 || gone[at]) {
            fb_set_err(err, errlen, "route.apply: cannot delete '%s': no such route",
                       name);
            rc = FIDBUS_NOT_FOUND;
            break;
        }
        gone[at] = true;
    }
    if (rc == 0) {
        size_t n = 0;
        for (size_t i = 0; i < s->n; i++)
            if (!gone[i])
                s->v[n++] = s->v[i];
        s->n = n;
    }
    free(ix.slot);
    free(gone);
    return rc;
}

/* Decodes a route map and adds it (room was made by set_start). A name
 * already in the set is a CONFLICT. ix, when given, indexes the set and
 * is kept up to date. */
static int set_add(struct set *s, struct name_index *ix, const cbor_item_t *map,
                   char *err, size_t errlen)
{
    struct fb_route_spec *r = &s->owned[s->nowned];
    int rc = fb_route_from_cbor(map, r, err, errlen);
    if (rc)
        return rc;
    s->nowned++;
    ssize_t at = ix ? index_find(ix, s, r->name) : set_find(s, r->name);
    if (at >= 0 && (size_t)at >= s->first_added) {
        fb_set_err(err, errlen, "route '%s' is given twice in 'add'", r->name);
        return FIDBUS_CONFLICT;
    }
    if (at >= 0) {
        fb_set_err(err, errlen,
                   "route '%s' already exists (delete it in the same route.apply to "
                   "replace it)",
                   r->name);
        return FIDBUS_CONFLICT;
    }
    s->v[s->n++] = *r;
    if (ix)
        index_put(ix, s, s->n - 1);
    return 0;
}

static int fail(struct fb_ctl_reply *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct fb_ctl_reply *out, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    out->code = code;
    return code;
}

/* A negative rc (out of memory) becomes INTERNAL; codes pass through. */
static void answer_rc(struct fb_ctl_reply *out, int rc, const char *what)
{
    if (rc < 0) {
        out->code = FIDBUS_INTERNAL;
        snprintf(out->message, sizeof out->message, "%s: %s", what, strerror(-rc));
    } else {
        out->code = rc;
    }
}

static cbor_item_t *generation_result(struct cb *b, uint64_t gen)
{
    cbor_item_t *m = mk_map(b, 1);
    put(b, m, "generation", u64(gen));
    return m;
}

static int commit_routes(struct fb_daemon *d, const struct set *s, uint64_t *gen,
                         struct fb_ctl_reply *out)
{
    struct fb_change c = {.routes = s->v, .nroutes = s->n};
    struct fb_change_result res;
    int rc = fb_change_commit(d, &c, &res, out->message, sizeof out->message);
    if (rc) {
        answer_rc(out, rc, "route change");
        return rc;
    }
    *gen = res.generation;
    fb_change_result_clear(&res);
    return 0;
}

/* ----------------------------------------------------------- route.add */

cbor_item_t *fb_ctl_route_add(const struct fb_ctl_env *env, const cbor_item_t *args,
                              struct cb *b, struct fb_ctl_reply *out)
{
    const cbor_item_t *route = fb_ctl_arg(args, "route");
    if (!route) {
        fail(out, FIDBUS_INVALID, "missing argument 'route'");
        return NULL;
    }
    struct set s = {0};
    uint64_t gen = 0;
    int rc = set_start(env->d, &s, 1, false);
    if (rc == 0)
        rc = set_add(&s, NULL, route, out->message, sizeof out->message);
    if (rc == 0)
        rc = commit_routes(env->d, &s, &gen, out);
    else
        answer_rc(out, rc, "route.add");
    if (rc == 0)
        fb_info("control: route %s added (generation %" PRIu64 ")", s.owned[0].name, gen);
    set_clear(&s);
    return rc ? NULL : generation_result(b, gen);
}

/* ----------------------------------------------------------- route.del */

cbor_item_t *fb_ctl_route_del(const struct fb_ctl_env *env, const cbor_item_t *args,
                              struct cb *b, struct fb_ctl_reply *out)
{
    char *name = NULL;
    struct set s = {0};
    uint64_t gen = 0;
    int rc = fb_ctl_arg_text(args, "name", true, &name, out->message, sizeof out->message);
    if (rc == 0)
        rc = set_start(env->d, &s, 0, false);
    if (rc == 0) {
        ssize_t i = set_find(&s, name);
        if (i < 0)
            rc = fail(out, FIDBUS_NOT_FOUND, "no route named '%s'", name);
        else
            set_remove(&s, (size_t)i);
    } else {
        answer_rc(out, rc, "route.del");
    }
    if (rc == 0 && (rc = commit_routes(env->d, &s, &gen, out)) == 0)
        fb_info("control: route %s deleted (generation %" PRIu64 ")", name, gen);
    set_clear(&s);
    free(name);
    return rc ? NULL : generation_result(b, gen);
}

/* --------------------------------------------------------- route.apply */

/*
 * The set a route.apply with these args gives: the running routes (none
 * with replace), minus every name in `del` (each must exist), plus every
 * route in `add` (whose names must then be free). So replacing a route is
 * a del and an add of one name in one apply. With `if_generation`, only
 * while the running generation is that one: a read-modify-write client
 * (fidbusctl route weight) sends the generation it read, so a change
 * made by someone else in between is refused (CONFLICT) instead of
 * overwritten. Commands run one at a time under the change lock, so the
 * check holds until the commit.
 */
static int apply_set(const struct fb_daemon *d, const cbor_item_t *args, struct set *s,
                     char *err, size_t errlen)
{
    if (!cbor_isa_map(args)) {
        fb_set_err(err, errlen, "route.apply args must be a map {add, del, replace}");
        return FIDBUS_INVALID;
    }
    struct cbor_pair *kv = cbor_map_handle(args);
    for (size_t i = 0; i < cbor_map_size(args); i++) {
        const cbor_item_t *k = kv[i].key;
        static const char *const known[] = {"add", "del", "replace", "if_generation"};
        bool ok = false;
        for (size_t j = 0; j < 4 && !ok; j++)
            ok = cbor_isa_string(k) && cbor_string_is_definite(k) &&
                 cbor_string_length(k) == strlen(known[j]) &&
                 memcmp(cbor_string_handle(k), known[j], strlen(known[j])) == 0;
        if (!ok) {
            fb_set_err(err, errlen,
                       "route.apply: unknown argument (expected add, del, replace, "
                       "if_generation)");
            return FIDBUS_INVALID;
        }
    }
    const cbor_item_t *ifgen = fb_ctl_arg(args, "if_generation");
    if (ifgen && !cbor_isa_uint(ifgen)) {
        fb_set_err(err, errlen,
                   "route.apply: 'if_generation' must be an unsigned integer");
        return FIDBUS_INVALID;
    }
    if (ifgen && cbor_get_int(ifgen) != d->generation) {
        fb_set_err(err, errlen,
                   "route.apply: the generation is %" PRIu64 ", not %" PRIu64
                   " (if_generation): the running set changed since it was read",
                   d->generation, cbor_get_int(ifgen));
        return FIDBUS_CONFLICT;
    }
    const cbor_item_t *add = fb_ctl_arg(args, "add");
    const cbor_item_t *del = fb_ctl_arg(args, "del");
    const cbor_item_t *rep = fb_ctl_arg(args, "replace");
    if (add && !cbor_isa_array(add)) {
        fb_set_err(err, errlen, "route.apply: 'add' must be an array of routes");
        return FIDBUS_INVALID;
    }
    if (del && !cbor_isa_array(del)) {
        fb_set_err(err, errlen, "route.apply: 'del' must be an array of route names");
        return FIDBUS_INVALID;
    }
    if (rep && !cbor_is_bool(rep)) {
        fb_set_err(err, errlen, "route.apply: 'replace' must be true or false");
        return FIDBUS_INVALID;
    }
    bool replace = rep && cbor_get_bool(rep);
    size_t nadd = add ? cbor_array_size(add) : 0;

    int rc = set_start(d, s, nadd, false);
    if (rc)
        return rc;
    if (del && (rc = set_delete(s, del, err, errlen)) != 0)
        return rc;
    if (replace)
        s->n = 0;
    s->first_added = s->n;
    struct name_index ix = {0};
    if (nadd > 1 && (rc = index_build(&ix, s, nadd)) < 0)
        return rc;
    for (size_t i = 0; i < nadd && rc == 0; i++)
        rc = set_add(s, ix.slot ? &ix : NULL, cbor_array_handle(add)[i], err, errlen);
    free(ix.slot);
    return rc;
}

cbor_item_t *fb_ctl_route_apply(const struct fb_ctl_env *env, const cbor_item_t *args,
                                struct cb *b, struct fb_ctl_reply *out)
{
    struct set s = {0};
    uint64_t gen = 0;
    int rc = apply_set(env->d, args, &s, out->message, sizeof out->message);
    if (rc)
        answer_rc(out, rc, "route.apply");
    else if ((rc = commit_routes(env->d, &s, &gen, out)) == 0)
        fb_info("control: route.apply: %zu route%s (generation %" PRIu64 ")", s.n,
                s.n == 1 ? "" : "s", gen);
    set_clear(&s);
    return rc ? NULL : generation_result(b, gen);
}

int fb_ctl_apply_table(struct fb_daemon *d, const cbor_item_t *apply,
                       struct fb_route_table **out, char *err, size_t errlen)
{
    struct set s = {0};
    int rc = apply_set(d, apply, &s, err, errlen);
    if (rc == 0)
        rc = fb_routes_build(s.v, s.n, d->reg, d->generation + 1, out, err, errlen);
    set_clear(&s);
    return rc;
}

/* ------------------------------------------------------------- plugins */

static struct fb_plugin *find_plugin(const struct fb_daemon *d, const char *name)
{
    for (struct fb_plugin *p = d->plugins; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* Does another instance than p provide fn's namespace.name? */
static bool other_provider(const struct fb_daemon *d, const struct fb_func *fn,
                           const struct fb_plugin *p)
{
    for (size_t i = 0; i < fb_registry_count(d->reg); i++) {
        const struct fb_func *f = fb_registry_at(d->reg, i);
        if (f->plugin != p && strcmp(f->ns, fn->ns) == 0 &&
            strcmp(f->name, fn->name) == 0)
            return true;
    }
    return false;
}

/* The routes that hold p, "a, b, c", in *names (malloc'd): a pinned
 * target bound to one of its functions, or a "latest" one that no other
 * instance could take over (otherwise the unload's flip moves it to the
 * highest version left, as a load moves it to a higher one). */
static size_t routes_using(const struct fb_daemon *d, const struct fb_plugin *p,
                           char **names)
{
    size_t n = 0, len = 0;
    char *buf = NULL;
    for (size_t i = 0; i < fb_routes_count(d->table); i++) {
        const struct fb_route *r = fb_routes_at(d->table, i);
        bool uses = false;
        for (size_t k = 0; k < r->ntargets && !uses; k++)
            uses = r->targets[k].fn->plugin == p &&
                   (r->targets[k].pinned || !other_provider(d, r->targets[k].fn, p));
        if (!uses)
            continue;
        size_t add = strlen(r->name) + 2;
        char *nb = realloc(buf, len + add + 1);
        if (!nb)
            break;
        buf = nb;
        len += (size_t)sprintf(buf + len, "%s%s", n ? ", " : "", r->name);
        n++;
    }
    *names = buf;
    return n;
}

/* The entry of plugin.list for p, plus the new generation. */
static cbor_item_t *plugin_result(struct cb *b, const struct fb_plugin *p, uint64_t gen)
{
    cbor_item_t *e = fb_ctl_plugin_entry(b, p, 1);
    put(b, e, "generation", u64(gen));
    return e;
}

/* Commits loading pc (replacing `drop` when not NULL) with the running
 * routes; answers the new instance's entry. */
static cbor_item_t *commit_plugin(const struct fb_ctl_env *env, const struct fb_plugin_conf *pc,
                                  struct fb_plugin *drop, struct cb *b,
                                  struct fb_ctl_reply *out, const char *verb)
{
    struct fb_daemon *d = env->d;
    struct set s = {0};
    int rc = set_start(d, &s, 0, false);
    if (rc) {
        answer_rc(out, rc, verb);
        return NULL;
    }
    struct fb_change c = {
        .load = pc,
        .nload = 1,
        .drop = drop ? &drop : NULL,
        .ndrop = drop ? 1 : 0,
        .routes = s.v,
        .nroutes = s.n,
    };
    struct fb_change_result res;
    rc = fb_change_commit(d, &c, &res, out->message, sizeof out->message);
    set_clear(&s);
    if (rc) {
        answer_rc(out, rc, verb);
        fb_warn("control: %s refused: %s", verb, out->message);
        return NULL;
    }
    const struct fb_plugin *p = res.loaded[0];
    fb_info("control: %s %s from %s (generation %" PRIu64 ")", verb, p->name, p->path,
            res.generation);
    cbor_item_t *m = plugin_result(b, p, res.generation);
    fb_change_result_clear(&res);
    return m;
}

cbor_item_t *fb_ctl_plugin_load(const struct fb_ctl_env *env, const cbor_item_t *args,
                                struct cb *b, struct fb_ctl_reply *out)
{
    struct fb_plugin_conf pc;
    int rc = fb_plugin_conf_from_cbor(args, &pc, out->message, sizeof out->message);
    if (rc) {
        answer_rc(out, rc, "plugin.load");
        return NULL;
    }
    cbor_item_t *m = NULL;
    if (pc.path[0] != '/')
        fail(out, FIDBUS_INVALID, "plugin.load: path '%s' must be absolute", pc.path);
    else if (pc.name && find_plugin(env->d, pc.name))
        fail(out, FIDBUS_CONFLICT, "plugin instance '%s' is already loaded", pc.name);
    else
        m = commit_plugin(env, &pc, NULL, b, out, "plugin.load");
    fb_plugin_conf_clear(&pc);
    return m;
}

/* func.release: lifts a quarantine (registry.h). The flag lives on the
 * function entry the route tables point at, so no table is rebuilt. */
cbor_item_t *fb_ctl_func_release(const struct fb_ctl_env *env, const cbor_item_t *args,
                                 struct cb *b, struct fb_ctl_reply *out)
{
    char *hex = NULL;
    cbor_item_t *m = NULL;
    uint64_t id;
    int rc = fb_ctl_arg_text(args, "id", true, &hex, out->message, sizeof out->message);
    if (rc) {
        answer_rc(out, rc, "func.release");
        return NULL;
    }
    if (strlen(hex) != 16 || fidbus_funcid_parse(hex, &id) != 0) {
        fail(out, FIDBUS_INVALID, "id must be a funcID of 16 hex digits, not '%.64s'",
             hex);
        goto done;
    }
    struct fb_func *f = fb_registry_lookup(env->d->reg, id);
    if (!f)
        f = fb_remote_lookup(env->d->remote, id);
    if (!f) {
        fail(out, FIDBUS_NOT_FOUND, "no function with funcID %s", hex);
        goto done;
    }
    bool was = fb_func_release(f);
    m = mk_map(b, 2);
    put(b, m, "id", funcid_text(f->id));
    put(b, m, "released", cbor_build_bool(was));
done:
    free(hex);
    return m;
}

cbor_item_t *fb_ctl_plugin_unload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out)
{
    struct fb_daemon *d = env->d;
    char *name = NULL, *users = NULL;
    cbor_item_t *m = NULL;
    int rc = fb_ctl_arg_text(args, "name", true, &name, out->message, sizeof out->message);
    if (rc) {
        answer_rc(out, rc, "plugin.unload");
        return NULL;
    }
    struct fb_plugin *p = find_plugin(d, name);
    if (!p) {
        fail(out, FIDBUS_NOT_FOUND, "no plugin instance named '%s'", name);
        goto done;
    }
    size_t n = routes_using(d, p, &users);
    if (n) {
        fail(out, FIDBUS_CONFLICT, "plugin '%s' is in use by route%s %s: delete or move %s first",
             name, n == 1 ? "" : "s", users ? users : "?", n == 1 ? "it" : "them");
        goto done;
    }
    struct set s = {0};
    if ((rc = set_start(d, &s, 0, false)) < 0) {
        answer_rc(out, rc, "plugin.unload");
        goto done;
    }
    struct fb_change c = {.drop = &p, .ndrop = 1, .routes = s.v, .nroutes = s.n};
    struct fb_change_result res;
    rc = fb_change_commit(d, &c, &res, out->message, sizeof out->message);
    set_clear(&s);
    if (rc) {
        answer_rc(out, rc, "plugin.unload");
        goto done;
    }
    fb_info("control: plugin %s unloaded (generation %" PRIu64 ")", name, res.generation);
    m = generation_result(b, res.generation);
    fb_change_result_clear(&res);
done:
    free(users);
    free(name);
    return m;
}

cbor_item_t *fb_ctl_plugin_reload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out)
{
    struct fb_daemon *d = env->d;
    char *name = NULL, *path = NULL;
    cbor_item_t *m = NULL;
    struct fb_plugin_conf pc = {0};
    int rc = fb_ctl_arg_text(args, "name", true, &name, out->message, sizeof out->message);
    if (rc == 0)
        rc = fb_ctl_arg_text(args, "path", false, &path, out->message, sizeof out->message);
    if (rc) {
        answer_rc(out, rc, "plugin.reload");
        goto done;
    }
    struct fb_plugin *p = find_plugin(d, name);
    if (!p) {
        fail(out, FIDBUS_NOT_FOUND, "no plugin instance named '%s'", name);
        goto done;
    }
    if (path && path[0] != '/') {
        fail(out, FIDBUS_INVALID, "plugin.reload: path '%s' must be absolute", path);
        goto done;
    }
    /* Same instance name and config, the file from path or where it came
     * from (which may have been overwritten in place). */
    struct fb_plugin_conf cur = {
        .name = p->name, .path = p->path, .keys = p->keys, .nkeys = p->nkeys};
    if (fb_plugin_conf_copy(&pc, &cur) < 0) {
        answer_rc(out, -ENOMEM, "plugin.reload");
        goto done;
    }
    if (path) {
        free(pc.path);
        pc.path = path;
        path = NULL;
        for (size_t i = 0; i < pc.nkeys; i++) {
            if (strcmp(pc.keys[i].key, "path") != 0)
                continue;
            char *v = strdup(pc.path);
            if (!v) {
                answer_rc(out, -ENOMEM, "plugin.reload");
                goto done;
            }
            free(pc.keys[i].value);
            pc.keys[i].value = v;
        }
    }
    m = commit_plugin(env, &pc, p, b, out, "plugin.reload");
done:
    fb_plugin_conf_clear(&pc);
    free(path);
    free(name);
    return m;
}
