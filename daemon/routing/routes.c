/*
 * Route tables (README "Routes"): build, match, select, publish.
 *
 * A table is built once from a set of route specs and never changed
 * afterwards; every change builds a new one and swaps it in with
 * fb_routes_publish. The table owns everything it points to (its own copy
 * of each spec), except the struct fb_func targets, which belong to their
 * plugin instances; a plugin is unloaded only after no published table
 * refers to it and a grace period has passed.
 *
 * Matching. Precedence between routes is fixed at build time: every
 * route goes into exactly one bucket -- exact ids in one hash table,
 * "prefix.*" patterns in another keyed by the prefix, "*" in a list --
 * and each bucket's candidates are sorted by the tie-break order (more tag
 * constraints, then more exact tag values, then higher priority, then
 * name). A lookup then tries the buckets from most to least specific
 * (the exact id, its prefixes longest first, "*") and returns the first
 * candidate whose tag constraints hold. Because the order between buckets
 * is the first precedence rule, and the order inside a bucket is the
 * rest, the first hit is the most specific match. Keys are hashed eight
 * bytes at a time (id_hash): a byte-at-a-time hash was the largest part of
 * a lookup (about 200 instructions for a 16-byte id). A prefix is hashed
 * on its own only where the id has a '.' at a length some prefix route
 * has (prefix_lens), which is rarely more than once or twice per event.
 *
 * Reader rules (RCU, liburcu memb flavour):
 *   - a dispatching thread calls urcu_memb_register_thread() once;
 *   - per event: urcu_memb_read_lock(); t = fb_routes_deref(slot) (an
 *     rcu_dereference that TSan understands, see routes.h); match, select
 *     and call the targets; FB_ROUTES_READ_DONE(); urcu_memb_read_unlock();
 *   - no pointer taken from t (route, target, function, spec string) may
 *     be used after the unlock: the table may be freed as soon as the
 *     last reader that could have seen it leaves its critical section;
 *   - everything the event needs later (a blocking call queued to the
 *     pool) must be copied, or pinned by other means, before the unlock;
 *   - only fb_routes_publish writes the slot, from a thread that is not
 *     inside a read-side critical section (it waits for a grace period).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <fidbus/funcid.h>

#include "routing/plugin_loader.h"
#include "base/err.h"
#include "routing/routes.h"
#include "routing/remote.h"

#ifdef FB_ROUTES_TSAN
/* See routes.h: the release target of every reader's FB_ROUTES_READ_DONE. */
char fb_routes_tsan_gp;
#endif

/* A route's tag constraint, with what the matcher needs at hand. */
struct ctag {
    const char *key;
    const char *value;
    bool any; /* value "*" */
};

/* One candidate in a bucket: the route and its constraints, contiguous so
 * a lookup walks one array. */
struct cand {
    const struct fb_route *route;
    const struct ctag *tags;
    size_t ntags;
};

struct slot {
    uint64_t hash;
    const char *key; /* prefix without ".*", or the exact id */
    uint32_t len;
    uint32_t first; /* into the candidate array */
    uint32_t n;     /* 0 = empty slot */
};

struct htab {
    struct slot *slots;
    size_t mask; /* slots - 1; 0 slots when empty */
    size_t used;
};

struct fb_route_table {
    uint64_t generation;
    struct fb_striped routed; /* events routed by this table */
    size_t nroutes;
    struct fb_route *routes;     /* in name order */
    struct fb_route_spec *specs; /* the copies routes[].spec point to */
    struct fb_route_target *targets;
    struct ctag *ctags;
    struct cand *cands;
    struct htab exact;
    struct htab prefix;
    const struct cand *star; /* into cands */
    size_t nstar;
    /* Which prefix lengths occur at all, so a lookup only probes the
     * prefix table for '.' positions that can possibly hit. */
    uint64_t prefix_lens[4];
};

/* ------------------------------------------------------------ counters */

static struct fb_route_counter *counter_new(void)
{
    struct fb_route_counter *c = aligned_alloc(64, sizeof(*c));
    if (c) {
        memset(c, 0, sizeof(*c));
        atomic_init(&c->refs, 1);
    }
    return c;
}

static void counter_put(struct fb_route_counter *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

void fb_routes_inherit_counters(struct fb_route_table *t, const struct fb_route_table *prev)
{
    if (!t || !prev)
        return;
    /* Both tables are in name order: one merge walk. */
    size_t j = 0;
    for (size_t i = 0; i < t->nroutes; i++) {
        struct fb_route *r = &t->routes[i];
        int c = 1;
        while (j < prev->nroutes && (c = strcmp(prev->routes[j].name, r->name)) < 0)
            j++;
        if (j == prev->nroutes)
            break;
        if (c != 0 || prev->routes[j].matched == r->matched)
            continue;
        struct fb_route_counter *keep = prev->routes[j].matched;
        atomic_fetch_add(&keep->refs, 1);
        /* t is not published yet: nobody counts into its own counter. */
        counter_put(r->matched);
        r->matched = keep;
    }
}

uint64_t fb_routes_routed(const struct fb_route_table *t)
{
    return t ? fb_striped_sum(&t->routed) : 0;
}

void fb_routes_count_routed(const struct fb_route_table *t)
{
    fb_striped_add((struct fb_striped *)&t->routed, 1);
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = FNV_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

/*
 * The hash of an event id or prefix: whole 8-byte words, then the tail
 * byte by byte (never a read past len: the id may end a buffer), each
 * step a multiply and a shift. Only used within one table, built and
 * read by this file, so it may change freely.
 */
static inline uint64_t id_hash(const char *s, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len;

    for (; len >= 8; s += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
    }
    if (len) {
        uint64_t w = 0;
        for (size_t i = 0; i < len; i++)
            w |= (uint64_t)(unsigned char)s[i] << (8 * i);
        h = (h ^ w) * 0x94d049bb133111ebull;
        h ^= h >> 29;
    }
    return h * 0xbf58476d1ce4e5b9ull ^ (h >> 32);
}

static uint64_t splitmix64_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------- buckets */

enum kind { K_EXACT = 0, K_PREFIX = 1, K_STAR = 2 };

struct entry {
    enum kind kind;
    const char *key;
    size_t len;
    struct cand cand;
    size_t nexact; /* tag constraints with a concrete value */
    int64_t priority;
};

static void classify(const char *event, enum kind *kind, size_t *len)
{
    size_t n = strlen(event);

    if (n == 1 && event[0] == '*') {
        *kind = K_STAR;
        *len = 0;
    } else if (n >= 2 && event[n - 1] == '*' && event[n - 2] == '.') {
        *kind = K_PREFIX;
        *len = n - 2;
    } else {
        *kind = K_EXACT;
        *len = n;
    }
}

/* Bucket order first, then the tie-breaks of section 4 inside a bucket. */
static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;

    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int c = memcmp(x->key, y->key, x->len);
    if (c)
        return c;
    if (x->cand.ntags != y->cand.ntags)
        return x->cand.ntags > y->cand.ntags ? -1 : 1;
    if (x->nexact != y->nexact)
        return x->nexact > y->nexact ? -1 : 1;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return strcmp(x->cand.route->name, y->cand.route->name);
}

static int htab_init(struct htab *h, size_t nkeys)
{
    size_t cap = 0;

    h->used = 0;
    if (nkeys == 0) {
        h->slots = NULL;
        h->mask = 0;
        return 0;
    }
    /* At most half full, so probe chains stay short. */
    cap = 8;
    while (cap < nkeys * 2)
        cap *= 2;
    h->slots = calloc(cap, sizeof(*h->slots));
    if (!h->slots)
        return -ENOMEM;
    h->mask = cap - 1;
    return 0;
}

static void htab_put(struct htab *h, const char *key, size_t len, uint32_t first,
                     uint32_t n)
{
    uint64_t hash = id_hash(key, len);
    size_t i = hash & h->mask;

    while (h->slots[i].n)
        i = (i + 1) & h->mask;
    h->slots[i] = (struct slot){
        .hash = hash, .key = key, .len = (uint32_t)len, .first = first, .n = n};
    h->used++;
}

static inline const struct slot *htab_get(const struct htab *h, uint64_t hash,
                                          const char *key, size_t len)
{
    if (!h->slots)
        return NULL;
    for (size_t i = hash & h->mask;; i = (i + 1) & h->mask) {
        const struct slot *s = &h->slots[i];
        if (!s->n)
            return NULL;
        if (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0)
            return s;
    }
}

/* ---------------------------------------------------------------- build */

static int cmp_name_idx(const void *a, const void *b, void *arg)
{
    const struct fb_route_spec *specs = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(specs[x].name, specs[y].name);

    if (c)
        return c;
    return x < y ? -1 : x > y;
}

/* Resolves and checks every target of one route into r->targets. */
static int resolve_route(struct fb_route *r, const struct fb_route_spec *s,
                         const struct fb_registry *reg, char *err, size_t errlen)
{
    uint8_t want[FIDBUS_SIGHASH_LEN];
    bool check_sig = false;

    if (s->signature) {
        if (fidbus_sighash_parse(s->signature, want) != 0) {
            fb_set_err(err, errlen,
                       "route '%s': invalid signature '%s' (want 64 hex digits)", s->name,
                       s->signature);
            return FIDBUS_INVALID;
        }
        check_sig = true;
    }

    r->total_weight = 0;
    for (size_t i = 0; i < s->nto; i++) {
        const struct fb_target_spec *ts = &s->to[i];
        struct fb_route_target *t = &r->targets[i];
        char text[FIDBUS_CANONICAL_MAX];
        struct fb_func *f;

        fb_target_text(ts, text, sizeof(text));
        if (ts->version) {
            f = fb_registry_lookup(reg, fidbus_funcid(text));
            /* A funcID hit with another canonical name would be a hash
             * collision; the registry refuses those, but never bind a
             * route to a function it did not name. */
            if (f && strcmp(f->canonical, text) != 0)
                f = NULL;
            /* No plugin provides it: a versioned target in a [remote NS]
             * namespace is a remote function, known by its name alone
             * (routing/remote.h), with or without members. */
            struct fb_remote *rd = fb_registry_remote(reg);
            if (!f && rd && fb_remote_ns_allowed(rd, ts->ns)) {
                f = fb_remote_get(rd, text, true);
                if (!f) {
                    fb_set_err(err, errlen,
                               "route '%s': target '%s': funcID collision or out of "
                               "memory",
                               s->name, text);
                    return FIDBUS_CONFLICT;
                }
            }
            if (!f) {
                fb_set_err(err, errlen,
                           "route '%s': target '%s': no such function loaded", s->name,
                           text);
                return FIDBUS_NOT_FOUND;
            }
        } else {
            f = fb_registry_latest(reg, ts->ns, ts->name);
            struct fb_remote *rd = fb_registry_remote(reg);
            if (!f && rd && fb_remote_ns_allowed(rd, ts->ns)) {
                fb_set_err(err, errlen,
                           "route '%s': target '%s': no plugin provides it, and a remote "
                           "function needs its version (%s.%s@MAJOR.MINOR.PATCH)",
                           s->name, text, ts->ns, ts->name);
                return FIDBUS_INVALID;
            }
            if (!f) {
                fb_set_err(
                    err, errlen,
                    "route '%s': target '%s': no version of this function is loaded",
                    s->name, text);
                return FIDBUS_NOT_FOUND;
            }
        }
        /* A remote function's signature is known only while members
         * serve it; REGISTER checks routes then (remote.c). */
        uint8_t have[FIDBUS_SIGHASH_LEN];
        bool sig_known = true;
        if (f->flags & FB_FN_REMOTE)
            sig_known = fb_remote_sighash(f, have);
        else
            memcpy(have, f->sighash, sizeof have);
        if (check_sig && sig_known && memcmp(have, want, sizeof(want)) != 0) {
            char have_hex[FIDBUS_SIGHASH_HEX], want_hex[FIDBUS_SIGHASH_HEX];
            fidbus_sighash_hex(have, have_hex);
            fidbus_sighash_hex(want, want_hex);
            fb_set_err(
                err, errlen,
                "route '%s': target '%s' (%s) has sighash %s, the route expects %s",
                s->name, text, f->canonical, have_hex, want_hex);
            return FIDBUS_SIGNATURE_MISMATCH;
        }
        for (size_t j = 0; j < i; j++) {
            if (r->targets[j].fn == f) {
                char first[FIDBUS_CANONICAL_MAX];
                fb_target_text(&s->to[j], first, sizeof(first));
                fb_set_err(err, errlen,
                           "route '%s': targets '%s' and '%s' are the same function %s "
                           "(list each function once)",
                           s->name, first, text, f->canonical);
                return FIDBUS_INVALID;
            }
        }
        t->fn = f;
        t->pinned = ts->version != NULL;
        t->weight = ts->weight; /* parsers default it to 1 */
        r->total_weight += t->weight;
    }
    r->ntargets = s->nto;
    return 0;
}

/* Builds the bucket index over t->routes. */
static int build_index(struct fb_route_table *t)
{
    size_t n = t->nroutes, nctags = 0, nexact_keys = 0, nprefix_keys = 0;
    struct entry *e;
    int rc = -ENOMEM;

    for (size_t i = 0; i < n; i++)
        nctags += t->routes[i].spec->ntags;
    t->ctags = calloc(nctags ? nctags : 1, sizeof(*t->ctags));
    t->cands = calloc(n ? n : 1, sizeof(*t->cands));
    e = calloc(n ? n : 1, sizeof(*e));
    if (!t->ctags || !t->cands || !e)
        goto out;

    struct ctag *ct = t->ctags;
    for (size_t i = 0; i < n; i++) {
        const struct fb_route *r = &t->routes[i];
        const struct fb_route_spec *s = r->spec;

        e[i].cand = (struct cand){.route = r, .tags = ct, .ntags = s->ntags};
        for (size_t k = 0; k < s->ntags; k++) {
            ct[k].key = s->tags[k].key;
            ct[k].value = s->tags[k].value;
            ct[k].any = strcmp(s->tags[k].value, "*") == 0;
            if (!ct[k].any)
                e[i].nexact++;
        }
        ct += s->ntags;
        classify(s->event, &e[i].kind, &e[i].len);
        e[i].key = s->event;
        e[i].priority = s->priority;
    }
    qsort(e, n, sizeof(*e), cmp_entry);

    for (size_t i = 0; i < n; i++) {
        t->cands[i] = e[i].cand;
        bool new_key = i == 0 || e[i].kind != e[i - 1].kind || e[i].len != e[i - 1].len ||
                       memcmp(e[i].key, e[i - 1].key, e[i].len) != 0;
        if (new_key && e[i].kind == K_EXACT)
            nexact_keys++;
        if (new_key && e[i].kind == K_PREFIX)
            nprefix_keys++;
    }
    if (htab_init(&t->exact, nexact_keys) || htab_init(&t->prefix, nprefix_keys))
        goto out;

    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && e[j].kind == e[i].kind && e[j].len == e[i].len &&
               memcmp(e[j].key, e[i].key, e[i].len) == 0)
            j++;
        switch (e[i].kind) {
        case K_EXACT:
            htab_put(&t->exact, e[i].key, e[i].len, (uint32_t)i, (uint32_t)(j - i));
            break;
        case K_PREFIX:
            htab_put(&t->prefix, e[i].key, e[i].len, (uint32_t)i, (uint32_t)(j - i));
            if (e[i].len < 256)
                t->prefix_lens[e[i].len / 64] |= 1ull << (e[i].len % 64);
            break;
        case K_STAR:
            t->star = &t->cands[i];
            t->nstar = j - i;
            break;
        }
        i = j;
    }
    rc = 0;
out:
    free(e);
    return rc;
}

int fb_routes_build(const struct fb_route_spec *specs, size_t n,
                    const struct fb_registry *reg, uint64_t generation,
                    struct fb_route_table **out, char *err, size_t errlen)
{
    struct fb_route_table *t = NULL;
    size_t *order = NULL, *pos, ntargets = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        rc = fb_route_spec_validate(&specs[i], err, errlen);
        if (rc)
            return rc;
        /* fb_route_select writes into out[FB_MAX_TARGETS]: never trust a
         * caller that skipped the limit. */
        if (specs[i].nto > FB_MAX_TARGETS) {
            fb_set_err(err, errlen, "route '%s': more than %d targets", specs[i].name,
                       FB_MAX_TARGETS);
            return FIDBUS_INVALID;
        }
        ntargets += specs[i].nto;
    }

    /* Sort by name once: finds duplicates and gives the listing order.
     * pos is the inverse permutation: input index -> table index. */
    order = malloc((n ? 2 * n : 1) * sizeof(*order));
    if (!order)
        return -ENOMEM;
    pos = order + n;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_name_idx, (void *)specs);
    for (size_t i = 1; i < n; i++) {
        const struct fb_route_spec *a = &specs[order[i - 1]], *b = &specs[order[i]];
        if (strcmp(a->name, b->name) == 0) {
            if (a->line > 0 && b->line > 0)
                fb_set_err(err, errlen, "route '%s' is defined twice (lines %d and %d)",
                           a->name, a->line, b->line);
            else
                fb_set_err(err, errlen, "route '%s' is defined twice", a->name);
            rc = FIDBUS_CONFLICT;
            goto fail;
        }
    }

    rc = -ENOMEM;
    t = calloc(1, sizeof(*t));
    if (!t)
        goto fail;
    t->generation = generation;
    t->routes = calloc(n ? n : 1, sizeof(*t->routes));
    t->specs = calloc(n ? n : 1, sizeof(*t->specs));
    t->targets = calloc(ntargets ? ntargets : 1, sizeof(*t->targets));
    if (!t->routes || !t->specs || !t->targets)
        goto fail;

    /* Resolve in the caller's order, so the first bad route in the input
     * is the one reported. */
    struct fb_route_target *tp = t->targets;
    for (size_t k = 0; k < n; k++)
        pos[order[k]] = k;
    t->nroutes = n; /* specs are zeroed: a failure can clear them all */
    for (size_t i = 0; i < n; i++) {
        size_t k = pos[i];
        struct fb_route *r = &t->routes[k];

        if (fb_route_spec_copy(&t->specs[k], &specs[i]) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
        r->targets = tp;
        rc = resolve_route(r, &specs[i], reg, err, errlen);
        if (rc)
            goto fail;
        tp += specs[i].nto;
    }

    for (size_t k = 0; k < n; k++) {
        struct fb_route *r = &t->routes[k];
        const struct fb_route_spec *s = &t->specs[k];

        r->spec = s;
        r->name = s->name;
        r->mode = s->mode;
        r->split_by = s->split_by;
        r->matched = counter_new();
        if (!r->matched) {
            rc = -ENOMEM;
            goto fail;
        }
    }

    rc = build_index(t);
    if (rc)
        goto fail;

    free(order);
    *out = t;
    return 0;

fail:
    free(order);
    fb_routes_free(t);
    return rc;
}

struct fb_route_table *fb_routes_free(struct fb_route_table *t)
{
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->nroutes; i++) {
        fb_route_spec_clear(&t->specs[i]);
        if (t->routes)
            counter_put(t->routes[i].matched);
    }
    free(t->exact.slots);
    free(t->prefix.slots);
    free(t->cands);
    free(t->ctags);
    free(t->targets);
    free(t->specs);
    /* Poison what a reader that broke the rules would look at first, so a
     * use after free shows up as generation 0 / no routes even in builds
     * without ASan, instead of silently reading stale data. */
    if (t->routes)
        explicit_bzero(t->routes, t->nroutes * sizeof(*t->routes));
    free(t->routes);
    explicit_bzero(t, sizeof(*t));
    free(t);
    return NULL;
}

/* ---------------------------------------------------------------- match */

/* Tag keys and values are short: an inline loop beats a call to strcmp,
 * and most mismatches end at the first byte. */
static inline bool streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static inline bool tags_match(const struct cand *c, const struct fidbus_tag *tags,
                              size_t ntags)
{
    for (size_t k = 0; k < c->ntags; k++) {
        const struct ctag *ct = &c->tags[k];
        bool ok = false;

        for (size_t j = 0; j < ntags; j++) {
            if (streq(tags[j].key, ct->key) &&
                (ct->any || streq(tags[j].value, ct->value))) {
                ok = true;
                break;
            }
        }
        if (!ok)
            return false;
    }
    return true;
}

static inline const struct fb_route *first_match(const struct fb_route_table *t,
                                                 const struct slot *s,
                                                 const struct fidbus_tag *tags,
                                                 size_t ntags)
{
    const struct cand *c = &t->cands[s->first];

    for (uint32_t i = 0; i < s->n; i++)
        if (tags_match(&c[i], tags, ntags))
            return c[i].route;
    return NULL;
}

const struct fb_route *fb_routes_match(const struct fb_route_table *t, const char *id,
                                       size_t idlen, const struct fidbus_tag *tags,
                                       size_t ntags)
{
    const struct fb_route *r;
    const struct slot *s;

    if (t->exact.used > 0) {
        s = htab_get(&t->exact, id_hash(id, idlen), id, idlen);
        if (s && (r = first_match(t, s, tags, ntags)))
            return r;
    }
    if (t->prefix.used > 0) {
        /* The prefixes that end just before a '.', at lengths some prefix
         * route has (all < 256), longest first. */
        const char *dot = id + (idlen < 256 ? idlen : 256);
        while ((dot = memrchr(id, '.', (size_t)(dot - id))) != NULL) {
            size_t i = (size_t)(dot - id);
            if (!(t->prefix_lens[i / 64] >> (i % 64) & 1))
                continue;
            s = htab_get(&t->prefix, id_hash(id, i), id, i);
            if (s && (r = first_match(t, s, tags, ntags)))
                return r;
        }
    }
    for (size_t i = 0; i < t->nstar; i++)
        if (tags_match(&t->star[i], tags, ntags))
            return t->star[i].route;
    return NULL;
}

/* --------------------------------------------------------------- select */

size_t fb_route_split_pick(const struct fb_route *r, const char *value)
{
    uint64_t x, acc = 0;

    if (r->total_weight == 0 || r->ntargets == 0)
        return 0;
    x = splitmix64_mix(fnv1a(value, strlen(value))) % r->total_weight;
    /* Cumulative walk: a weight-0 target covers an empty range and is
     * never chosen. */
    for (size_t i = 0; i < r->ntargets; i++) {
        acc += r->targets[i].weight;
        if (x < acc)
            return i;
    }
    return r->ntargets - 1; /* unreachable: acc == total_weight > x */
}

/* Per-thread xorshift64*: weighted random choice without a shared lock or
 * a shared cache line. */
static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;

    if (x == 0) {
        /* Seed from the state's own address (distinct per thread) and a
         * process-wide counter; quality needs are modest. */
        static _Atomic uint64_t seeds;
        x = splitmix64_mix((uint64_t)(uintptr_t)&rng_state ^
                           (atomic_fetch_add_explicit(&seeds, 1, memory_order_relaxed) *
                            0x9e3779b97f4a7c15ull));
        if (x == 0)
            x = 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

size_t fb_route_select(const struct fb_route *r, const struct fidbus_tag *tags,
                       size_t ntags, size_t *out)
{
    if (r->mode == FB_MODE_ALL) {
        for (size_t i = 0; i < r->ntargets; i++)
            out[i] = i;
        return r->ntargets;
    }
    if (r->ntargets == 0 || r->total_weight == 0)
        return 0;
    if (r->split_by) {
        for (size_t j = 0; j < ntags; j++) {
            if (strcmp(tags[j].key, r->split_by) == 0) {
                out[0] = fb_route_split_pick(r, tags[j].value);
                return 1;
            }
        }
    }
    uint64_t x = rng_next() % r->total_weight, acc = 0;
    for (size_t i = 0; i < r->ntargets; i++) {
        acc += r->targets[i].weight;
        if (x < acc) {
            out[0] = i;
            return 1;
        }
    }
    out[0] = r->ntargets - 1;
    return 1;
}

/* ------------------------------------------------------------- listings */

uint64_t fb_routes_generation(const struct fb_route_table *t)
{
    return t->generation;
}

size_t fb_routes_count(const struct fb_route_table *t)
{
    return t->nroutes;
}

const struct fb_route *fb_routes_at(const struct fb_route_table *t, size_t i)
{
    return i < t->nroutes ? &t->routes[i] : NULL;
}

bool fb_routes_uses_plugin(const struct fb_route_table *t, const struct fb_plugin *p,
                           const char **route_name)
{
    if (!t)
        return false;
    for (size_t i = 0; i < t->nroutes; i++) {
        const struct fb_route *r = &t->routes[i];
        for (size_t k = 0; k < r->ntargets; k++) {
            if (r->targets[k].fn->plugin == p) {
                if (route_name)
                    *route_name = r->name;
                return true;
            }
        }
    }
    return false;
}

/* -------------------------------------------------------------- publish */

struct fb_route_table *fb_routes_publish(struct fb_route_table **slot,
                                         struct fb_route_table *next)
{
    struct fb_route_table *old;

#ifdef FB_ROUTES_TSAN
    /* The same locked xchg, but through a builtin ThreadSanitizer
     * understands (liburcu's is inline asm), so the table's construction
     * happens-before every reader's fb_routes_deref (an atomic consume
     * load, which TSan treats as acquire). */
    old = __atomic_exchange_n(slot, next, __ATOMIC_SEQ_CST);
#else
    old = rcu_xchg_pointer(slot, next);
#endif
    urcu_memb_synchronize_rcu();
#ifdef FB_ROUTES_TSAN
    /* Every reader that could still see old has released
     * fb_routes_tsan_gp before its unlock; acquiring it tells TSan what
     * the grace period guarantees. */
    __tsan_acquire(&fb_routes_tsan_gp);
#endif
    return old;
}
