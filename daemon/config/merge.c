/*
 * The three-way merge of config.reload and of an edited config at start
 * (merge.h). Each of the three sets is indexed by name, sorted, and
 * walked side by side, so a set of 15,000 routes merges in n log n; an
 * item's value is its CBOR encoding, compared byte for byte.
 */
#include "config/merge.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "config/spec_cbor.h"

struct entry {
    const char *name;
    size_t at;
    unsigned char *enc;
    size_t len;
};

struct side {
    struct entry *v;
    size_t n;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void side_free(struct side *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].enc);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int encode(cbor_item_t *it, struct entry *e)
{
    if (!it)
        return -ENOMEM;
    size_t cap = 0;
    e->len = cbor_serialize_alloc(it, &e->enc, &cap);
    cbor_decref(&it);
    return e->len ? 0 : -ENOMEM;
}

/* routes when r, plugins otherwise */
static int side_build(const struct fb_runset *rs, bool r, struct side *s)
{
    size_t n = !rs ? 0 : r ? rs->nroutes : rs->nplugins;
    s->v = calloc(n ? n : 1, sizeof *s->v);
    if (!s->v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct entry *e = &s->v[s->n];
        e->at = i;
        e->name = r ? rs->routes[i].name : rs->plugins[i].name;
        if (!e->name)
            continue; /* a config always names its instances */
        int rc = encode(r ? fb_route_to_cbor(&rs->routes[i])
                          : fb_plugin_conf_to_cbor(&rs->plugins[i]),
                        e);
        s->n++;
        if (rc)
            return rc;
    }
    qsort(s->v, s->n, sizeof *s->v, by_name);
    return 0;
}

static bool same(const struct entry *a, const struct entry *b)
{
    if (!a || !b)
        return a == b;
    return a->len == b->len && memcmp(a->enc, b->enc, a->len) == 0;
}

/* The entry of s named name at its cursor *i (advancing it), or NULL. */
static const struct entry *take(const struct side *s, size_t *i, const char *name)
{
    if (*i < s->n && strcmp(s->v[*i].name, name) == 0)
        return &s->v[(*i)++];
    return NULL;
}

static const char *least(const struct side *sd, const size_t *cur)
{
    const char *m = NULL;
    for (int k = 0; k < 3; k++)
        if (cur[k] < sd[k].n && (!m || strcmp(sd[k].v[cur[k]].name, m) < 0))
            m = sd[k].v[cur[k]].name;
    return m;
}

/* Walks the three sides of one kind into items (sorted by name). */
static int walk(struct side *sd, struct fb_merge_item **out, size_t *nout,
                struct fb_merge *m)
{
    size_t cap = sd[0].n + sd[1].n + sd[2].n;
    struct fb_merge_item *v = calloc(cap ? cap : 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t cur[3] = {0, 0, 0}, n = 0;
    for (const char *name; (name = least(sd, cur));) {
        const struct entry *b = take(&sd[0], &cur[0], name);
        const struct entry *f = take(&sd[1], &cur[1], name);
        const struct entry *r = take(&sd[2], &cur[2], name);
        if (!same(f, b))
            m->nedits++;
        if (!f && !r) /* gone from both: nothing to say about it */
            continue;
        struct fb_merge_item *it = &v[n++];
        it->name = name;
        it->file_at = f ? f->at : SIZE_MAX;
        it->run_at = r ? r->at : SIZE_MAX;
        const struct entry *want = r;
        if (same(f, b)) {
            it->why = same(r, b) ? FB_MERGE_SAME : FB_MERGE_RUNTIME;
        } else if (same(r, f)) {
            it->why = FB_MERGE_SAME;
        } else {
            it->why = same(r, b) ? FB_MERGE_APPLIED : FB_MERGE_OVERRIDE;
            want = f;
        }
        if (want == r)
            it->change = FB_MERGE_NONE;
        else if (!r)
            it->change = FB_MERGE_ADD;
        else if (!want)
            it->change = FB_MERGE_DELETE;
        else
            it->change = FB_MERGE_CHANGE;
        if (it->change != FB_MERGE_NONE)
            m->nchanges++;
    }
    *out = v;
    *nout = n;
    return 0;
}

const struct fb_merge_item *fb_merge_find(const struct fb_merge_item *v, size_t n,
                                          const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid].name, name);
        if (c == 0)
            return &v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

#define BUILD_SET(kind, type)                                                            \
    do {                                                                                 \
        size_t nr = running ? running->n##kind : 0, nf = file ? file->n##kind : 0;       \
        type *v = calloc(nr + nf + 1, sizeof *v);                                        \
        if (!v)                                                                          \
            return -ENOMEM;                                                              \
        size_t k = 0;                                                                    \
        for (size_t i = 0; i < nr; i++) {                                                \
            const struct fb_merge_item *it =                                             \
                fb_merge_find(m->kind, m->n##kind, running->kind[i].name);               \
            if (!it || it->change == FB_MERGE_NONE)                                      \
                v[k++] = running->kind[i];                                               \
            else if (it->change == FB_MERGE_CHANGE)                                      \
                v[k++] = file->kind[it->file_at];                                        \
        }                                                                                \
        for (size_t i = 0; i < nf; i++) {                                                \
            const struct fb_merge_item *it =                                             \
                fb_merge_find(m->kind, m->n##kind, file->kind[i].name);                  \
            if (it && it->change == FB_MERGE_ADD)                                        \
                v[k++] = file->kind[i];                                                  \
        }                                                                                \
        m->set.kind = v;                                                                 \
        m->set.n##kind = k;                                                              \
    } while (0)

static int build_set(const struct fb_runset *file, const struct fb_runset *running,
                     struct fb_merge *m)
{
    BUILD_SET(plugins, struct fb_plugin_conf);
    BUILD_SET(routes, struct fb_route_spec);
    return 0;
}

int fb_merge_run(const struct fb_runset *base, const struct fb_runset *file,
                 const struct fb_runset *running, struct fb_merge *out)
{
    memset(out, 0, sizeof *out);
    const struct fb_runset *sets[3] = {base, file, running};
    struct side sd[3] = {{0}};
    int rc = 0;
    for (int kind = 0; kind < 2 && rc == 0; kind++) {
        for (int k = 0; k < 3 && rc == 0; k++)
            rc = side_build(sets[k], kind == 1, &sd[k]);
        if (rc == 0)
            rc = kind == 1 ? walk(sd, &out->routes, &out->nroutes, out)
                           : walk(sd, &out->plugins, &out->nplugins, out);
        /* names from FILE or RUNNING: BASE is often replaced first */
        struct fb_merge_item *v = kind == 1 ? out->routes : out->plugins;
        size_t n = kind == 1 ? out->nroutes : out->nplugins;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            const struct fb_runset *s = v[i].file_at != SIZE_MAX ? file : running;
            size_t at = v[i].file_at != SIZE_MAX ? v[i].file_at : v[i].run_at;
            v[i].name = kind == 1 ? s->routes[at].name : s->plugins[at].name;
        }
        for (int k = 0; k < 3; k++)
            side_free(&sd[k]);
    }
    if (rc == 0)
        rc = build_set(file, running, out);
    if (rc)
        fb_merge_clear(out);
    return rc;
}

void fb_merge_clear(struct fb_merge *m)
{
    if (!m)
        return;
    free(m->set.plugins);
    free(m->set.routes);
    free(m->plugins);
    free(m->routes);
    memset(m, 0, sizeof *m);
}
