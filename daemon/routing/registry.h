/*
 * The function registry: every handler function of every loaded plugin
 * instance, keyed by funcID.
 *
 * The registry is the writers' view. It is changed only by the thread
 * that holds the daemon's change lock (config load, later the control
 * socket), and never read on the dispatch path: route tables hold
 * resolved struct fb_func pointers, so dispatch does no registry lookup.
 * A struct fb_func is owned by its plugin instance and lives until that
 * instance is unloaded, after a grace period.
 */
#ifndef FB_REGISTRY_H
#define FB_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/funcid.h>
#include <fidbus/plugin.h>

#include "base/latency.h"
#include "base/stripe.h"

struct fb_plugin;
struct fb_rfunc;
struct fb_remote;

struct fb_func {
    uint64_t id;
    char canonical[FIDBUS_CANONICAL_MAX]; /* ns.name@version */
    char ns[FIDBUS_NAME_MAX + 1];
    char name[FIDBUS_NAME_MAX + 1];
    char version[FIDBUS_VERSION_MAX + 1];
    struct fidbus_semver semver;
    uint8_t sighash[FIDBUS_SIGHASH_LEN];
    uint32_t flags; /* FIDBUS_FN_* */
    int (*handle)(void *ctx, const struct fidbus_event *ev);
    void *ctx;                 /* the instance's init ctx */
    struct fb_plugin *plugin;  /* owner; NULL for a remote function */
    struct fb_rfunc *remote;   /* remote functions only (routing/remote.h) */
    struct fb_striped calls;   /* invocations */
    struct fb_striped errors;  /* invocations that failed */
    struct fb_latency latency; /* sampled handler run times */
    struct fb_hist hist;       /* every call, by the sampled times */
    /* Handler faults (runtime only, never persisted: a reloaded plugin is
     * a new instance and starts clean). consec_fail is reset by any
     * success; quarantined is set once it reaches quarantine_after, read
     * (relaxed) by dispatch for every call, cleared by func.release. */
    _Atomic uint32_t consec_fail;
    _Atomic bool quarantined;
    _Atomic uint64_t late;   /* blocking calls that ran past the deadline */
    struct fb_striped skips; /* calls skipped while quarantined */
};

static inline bool fb_func_quarantined(const struct fb_func *f)
{
    return atomic_load_explicit(&f->quarantined, memory_order_relaxed);
}

/*
 * Notes a call's result: a failure counts towards quarantine_after
 * consecutive ones (0 = never quarantine), a success resets the run. The
 * call that quarantines the function logs it, once. Any thread.
 */
void fb_func_note_result(struct fb_func *f, int rc, uint32_t quarantine_after);
/* Lifts a quarantine; returns whether f was quarantined. Any thread. */
bool fb_func_release(struct fb_func *f);

/*
 * Fills f from a plugin's function description (validates names and
 * version, computes funcID and sighash). Returns 0 or FIDBUS_INVALID with
 * a reason in err.
 */
int fb_func_init(struct fb_func *f, const struct fidbus_function *src, char *err,
                 size_t errlen);

struct fb_registry;

int fb_registry_new(struct fb_registry **out);
/* The remote-function directory (routing/remote.h): route building
 * resolves versioned targets of [remote NS] namespaces there, and plugin
 * functions added or removed are told to it. */
void fb_registry_set_remote(struct fb_registry *r, struct fb_remote *rd);
struct fb_remote *fb_registry_remote(const struct fb_registry *r);
/* NULL-safe; does not free the functions (their plugins own them). */
struct fb_registry *fb_registry_free(struct fb_registry *r);

/*
 * Would adding these n functions conflict? A funcID already registered
 * (same canonical name provided twice, or two canonical names with one
 * funcID), or a collision inside fns itself, is FIDBUS_CONFLICT with err
 * naming both sides. Returns 0 or FIDBUS_CONFLICT.
 */
int fb_registry_check(const struct fb_registry *r, const struct fb_func *fns, size_t n,
                      char *err, size_t errlen);

/* Adds n functions (check first). 0 or -ENOMEM (nothing added). */
int fb_registry_add(struct fb_registry *r, struct fb_func *fns, size_t n);
/* Removes these functions (by pointer identity). */
void fb_registry_remove(struct fb_registry *r, const struct fb_func *fns, size_t n);

struct fb_func *fb_registry_lookup(const struct fb_registry *r, uint64_t id);
/* The highest version (semver) of ns.name, or NULL. */
struct fb_func *fb_registry_latest(const struct fb_registry *r, const char *ns,
                                   const char *name);
size_t fb_registry_count(const struct fb_registry *r);
/* The i-th function, in funcID order, for listings. */
struct fb_func *fb_registry_at(const struct fb_registry *r, size_t i);

#endif
