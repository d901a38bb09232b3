/*
 * The function registry (<fidbus/funcid.h>): every loaded handler function,
 * keyed by funcID.
 *
 * The registry is a sorted array of pointers ordered by funcID, so lookup
 * is a binary search and listings come out in funcID order for free. It is
 * the writers' view only (config load, control socket, plugin load/unload,
 * all under the daemon's change lock): dispatch never touches it because
 * route tables hold resolved struct fb_func pointers. Adds and removes are
 * therefore allowed to be O(n); n is the number of loaded functions.
 *
 * The registry does not own the functions: each struct fb_func lives in
 * its plugin instance's funcs array.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

#include "base/log.h"
#include "base/err.h"
#include "routing/plugin_loader.h"
#include "routing/registry.h"
#include "routing/remote.h"

void fb_func_note_result(struct fb_func *f, int rc, uint32_t quarantine_after)
{
    if (rc == 0) {
        /* Load first: the common case writes nothing shared. */
        if (atomic_load_explicit(&f->consec_fail, memory_order_relaxed))
            atomic_store_explicit(&f->consec_fail, 0, memory_order_relaxed);
        return;
    }
    uint32_t n = atomic_fetch_add_explicit(&f->consec_fail, 1, memory_order_relaxed) + 1;
    if (!quarantine_after || n < quarantine_after)
        return;
    bool was = false;
    /* Only the call that flips the flag logs: "logged once". */
    if (atomic_compare_exchange_strong_explicit(
            &f->quarantined, &was, true, memory_order_relaxed, memory_order_relaxed))
        fb_warn("function %s (%016llx) quarantined after %u consecutive failures; "
                "'fidbusctl func release %016llx' brings it back",
                f->canonical, (unsigned long long)f->id, n, (unsigned long long)f->id);
}

bool fb_func_release(struct fb_func *f)
{
    atomic_store_explicit(&f->consec_fail, 0, memory_order_relaxed);
    bool was = atomic_exchange_explicit(&f->quarantined, false, memory_order_relaxed);
    if (was)
        fb_info("function %s (%016llx) released from quarantine", f->canonical,
                (unsigned long long)f->id);
    return was;
}

struct fb_registry {
    struct fb_func **fns; /* sorted by id, ids unique */
    size_t n;
    size_t cap;
    struct fb_remote *remote; /* NULL: no remote functions (unit tests) */
};

void fb_registry_set_remote(struct fb_registry *r, struct fb_remote *rd)
{
    r->remote = rd;
}

struct fb_remote *fb_registry_remote(const struct fb_registry *r)
{
    return r->remote;
}

int fb_func_init(struct fb_func *f, const struct fidbus_function *src, char *err,
                 size_t errlen)
{
    memset(f, 0, sizeof(*f));
    memset(&f->calls, 0, sizeof f->calls);
    memset(&f->errors, 0, sizeof f->errors);
    memset(&f->latency, 0, sizeof f->latency);
    memset(&f->hist, 0, sizeof f->hist);

    /* fidbus_funcid_make only says -EINVAL; find the part that is wrong
     * first so the operator gets a useful reason. */
    if (!src->ns || !fidbus_name_valid(src->ns)) {
        fb_set_err(err, errlen, "invalid namespace '%s' (1-64 bytes of [A-Za-z0-9_-])",
                   src->ns ? src->ns : "(null)");
        return FIDBUS_INVALID;
    }
    if (!src->name || !fidbus_name_valid(src->name)) {
        fb_set_err(err, errlen,
                   "%s: invalid function name '%s' (1-64 bytes of [A-Za-z0-9_-])",
                   src->ns, src->name ? src->name : "(null)");
        return FIDBUS_INVALID;
    }
    if (!src->version || strlen(src->version) > FIDBUS_VERSION_MAX ||
        fidbus_semver_parse(src->version, &f->semver) != 0) {
        fb_set_err(err, errlen, "%s.%s: invalid version '%s' (want MAJOR.MINOR.PATCH)",
                   src->ns, src->name, src->version ? src->version : "(null)");
        return FIDBUS_INVALID;
    }
    if (fidbus_funcid_make(src->ns, src->name, src->version, f->canonical, &f->id) != 0) {
        fb_set_err(err, errlen, "%s.%s@%s: invalid function name", src->ns, src->name,
                   src->version);
        return FIDBUS_INVALID;
    }
    if (!src->handle) {
        fb_set_err(err, errlen, "%s: no handler", f->canonical);
        return FIDBUS_INVALID;
    }
    /* The lengths were validated above, so these copies cannot truncate. */
    snprintf(f->ns, sizeof(f->ns), "%s", src->ns);
    snprintf(f->name, sizeof(f->name), "%s", src->name);
    snprintf(f->version, sizeof(f->version), "%s", src->version);
    /* A missing signature is treated as the empty contract: its sighash is
     * still well defined, and a route that pins a signature will refuse it. */
    fidbus_sighash(src->signature ? src->signature : "", f->sighash);
    f->flags = src->flags;
    f->handle = src->handle;
    return 0;
}

int fb_registry_new(struct fb_registry **out)
{
    struct fb_registry *r = calloc(1, sizeof(*r));

    if (!r)
        return -ENOMEM;
    *out = r;
    return 0;
}

struct fb_registry *fb_registry_free(struct fb_registry *r)
{
    if (r) {
        free(r->fns);
        free(r);
    }
    return NULL;
}

/* Index of the first entry with id >= key. */
static size_t lower_bound(const struct fb_registry *r, uint64_t id)
{
    size_t lo = 0, hi = r->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->fns[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct fb_func *fb_registry_lookup(const struct fb_registry *r, uint64_t id)
{
    size_t i = lower_bound(r, id);

    return i < r->n && r->fns[i]->id == id ? r->fns[i] : NULL;
}

static const char *owner(const struct fb_func *f)
{
    return f->plugin && f->plugin->name ? f->plugin->name : NULL;
}

/* Describes a conflict between a (already there, or earlier in the batch)
 * and b (being added). Same canonical name: the function is provided
 * twice. Different names: a genuine funcID collision, which the daemon
 * refuses rather than silently shadowing one function with another. */
static void conflict_msg(const struct fb_func *a, const struct fb_func *b, bool batch,
                         char *err, size_t errlen)
{
    char hex[FIDBUS_FUNCID_HEX];
    char ao[FIDBUS_NAME_MAX + 32] = "", bo[FIDBUS_NAME_MAX + 32] = "";

    fidbus_funcid_hex(a->id, hex);
    if (owner(a))
        snprintf(ao, sizeof(ao), " (plugin %.64s)", owner(a));
    if (owner(b))
        snprintf(bo, sizeof(bo), " (plugin %.64s)", owner(b));

    if (strcmp(a->canonical, b->canonical) == 0) {
        if (batch)
            fb_set_err(err, errlen, "function %s (funcID %s) is provided twice%s",
                       b->canonical, hex, bo);
        else
            fb_set_err(err, errlen, "function %s (funcID %s)%s is already registered%s",
                       b->canonical, hex, bo, ao);
    } else {
        fb_set_err(err, errlen, "funcID collision: %s%s and %s%s both have funcID %s",
                   b->canonical, bo, a->canonical, ao, hex);
    }
}

int fb_registry_check(const struct fb_registry *r, const struct fb_func *fns, size_t n,
                      char *err, size_t errlen)
{
    /* A function a member serves cannot come from a plugin too. */
    if (r->remote) {
        int rc = fb_remote_plugin_check(r->remote, fns, n, err, errlen);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const struct fb_func *have = fb_registry_lookup(r, fns[i].id);

        if (have) {
            conflict_msg(have, &fns[i], false, err, errlen);
            return FIDBUS_CONFLICT;
        }
        /* Batches are one plugin's function table: small, so quadratic is
         * cheaper than sorting a copy. */
        for (size_t j = 0; j < i; j++) {
            if (fns[j].id == fns[i].id) {
                conflict_msg(&fns[j], &fns[i], true, err, errlen);
                return FIDBUS_CONFLICT;
            }
        }
    }
    return 0;
}

static int cmp_func_ptr(const void *a, const void *b)
{
    const struct fb_func *x = *(struct fb_func *const *)a;
    const struct fb_func *y = *(struct fb_func *const *)b;

    return x->id < y->id ? -1 : x->id > y->id;
}

int fb_registry_add(struct fb_registry *r, struct fb_func *fns, size_t n)
{
    if (n == 0)
        return 0;
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 16;
        while (cap < r->n + n)
            cap *= 2;
        struct fb_func **p = realloc(r->fns, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        r->fns = p;
        r->cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        r->fns[r->n + i] = &fns[i];
    r->n += n;
    qsort(r->fns, r->n, sizeof(*r->fns), cmp_func_ptr);
    if (r->remote)
        fb_remote_plugin_mark(r->remote, fns, n, true);
    return 0;
}

void fb_registry_remove(struct fb_registry *r, const struct fb_func *fns, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = lower_bound(r, fns[i].id);

        /* Pointer identity: a caller that never registered this entry (or
         * registered another entry with the same id) must not remove it. */
        if (k < r->n && r->fns[k] == &fns[i]) {
            memmove(&r->fns[k], &r->fns[k + 1], (r->n - k - 1) * sizeof(*r->fns));
            r->n--;
            if (r->remote)
                fb_remote_plugin_mark(r->remote, &fns[i], 1, false);
        }
    }
}

struct fb_func *fb_registry_latest(const struct fb_registry *r, const char *ns,
                                   const char *name)
{
    struct fb_func *best = NULL;

    /* Linear: called only while building a table, never on dispatch. */
    for (size_t i = 0; i < r->n; i++) {
        struct fb_func *f = r->fns[i];

        if (strcmp(f->ns, ns) != 0 || strcmp(f->name, name) != 0)
            continue;
        if (!best || fidbus_semver_cmp(&f->semver, &best->semver) > 0)
            best = f;
    }
    return best;
}

size_t fb_registry_count(const struct fb_registry *r)
{
    return r->n;
}

struct fb_func *fb_registry_at(const struct fb_registry *r, size_t i)
{
    return i < r->n ? r->fns[i] : NULL;
}
