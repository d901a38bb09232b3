/*
 * The one way the running set changes (proto/control.md, "Transactions";
 * docs/architecture.md): a transaction that loads new plugin instances,
 * drops old ones, and publishes a complete new route table in one flip --
 * or changes nothing.
 *
 * Every control command that changes something (route.add/del/apply,
 * plugin.load/unload/reload, config.reload) and the daemon's start-up are
 * a struct fb_change handed to fb_change_commit. In order:
 *   1. the functions of the instances to drop leave the registry (the
 *      writers' view; the published table still calls them);
 *   2. the new instances are loaded (private copy, dlopen, checks, init)
 *      and registered; an instance name must be unique (checked before
 *      init, so a refused load never runs the plugin's init or fini);
 *   3. the new table is built from the complete route set against that
 *      registry (pinned targets must exist, "latest" ones take the
 *      highest version now loaded);
 *   4. state.cbor is saved with the new set (before any REPLY);
 *   5. the table is published with one pointer swap, then a grace period;
 *      per-route counters carry over by name, the old table's count is
 *      kept as its generation's total;
 *   6. the dropped instances are drained (in-flight blocking calls),
 *      their timers cancelled, fini'd and dlclosed.
 * A failure in 1-4 undoes what was done (new instances unloaded, dropped
 * ones registered again) and leaves the running table, its generation and
 * state.cbor as they were.
 *
 * Callers hold d->change_lock and are not RCU readers (the control thread,
 * or the main thread at start-up before any worker runs).
 */
#ifndef FB_CHANGE_H
#define FB_CHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "config/route_spec.h"

struct fb_daemon;

struct fb_plugin;

struct fb_change {
    /* New instances, in load order. A NULL name takes the plugin's own
     * name (struct fidbus_plugin.name). */
    const struct fb_plugin_conf *load;
    size_t nload;
    /* Running instances to unload. One with the same instance name as a
     * loaded one is replaced in place (the list keeps its position). */
    struct fb_plugin *const *drop;
    size_t ndrop;
    /* The complete route set of the new table. */
    const struct fb_route_spec *routes;
    size_t nroutes;
    /* The config text the set now derives from (its hash is saved with
     * the state); NULL keeps the current one. */
    const char *config_hash;
    /* The plugins and routes of that config (config/merge.h's BASE),
     * saved with the state. On success the daemon keeps it as d->base
     * (freeing the old one); on failure it stays the caller's. NULL keeps
     * d->base. */
    struct fb_runset *base;
};

struct fb_change_result {
    uint64_t generation; /* of the table published */
    /* The new instances, as in change.load (owned by the daemon). */
    struct fb_plugin **loaded;
    size_t nloaded;
    /* When a load failed: its index in change.load; SIZE_MAX otherwise. */
    size_t failed_load;
    /* Everything was valid but the state file could not be saved (a full
     * disk): a failure to save, not a reason to doubt what was asked. */
    bool save_failed;
};

/*
 * Runs the transaction. Returns 0 with *res filled (free res->loaded with
 * fb_change_result_clear), or a protocol code (FIDBUS_INVALID,
 * FIDBUS_NOT_FOUND, FIDBUS_CONFLICT, FIDBUS_SIGNATURE_MISMATCH,
 * FIDBUS_INTERNAL for a state file that cannot be saved) or -ENOMEM, with
 * err saying which plugin or route failed and why; then nothing changed.
 */
int fb_change_commit(struct fb_daemon *d, const struct fb_change *c,
                     struct fb_change_result *res, char *err, size_t errlen);
void fb_change_result_clear(struct fb_change_result *res);

/*
 * Saves state.cbor with the running set as it is (no flip, same
 * generation) and a new config the set derives from: its hash and its
 * items. For a config.reload whose file changed in no way that changes
 * the running set. On success the daemon keeps base (as d->base); on
 * failure it stays the caller's. 0, or -errno / -ENOMEM with err.
 */
int fb_change_rebase(struct fb_daemon *d, struct fb_runset *base, const char *config_hash,
                     char *err, size_t errlen);

/*
 * The route set of the running table as specs (shallow copies that point
 * into the table: valid while the caller holds change_lock and makes no
 * change). *out is malloc'd (n may be 0 with a non-NULL *out). 0 or -ENOMEM.
 */
int fb_change_current_routes(const struct fb_daemon *d, struct fb_route_spec **out,
                             size_t *n);

/* The live set's size, for READY=1 (service/notify.h) and the log. */
struct fb_set_size {
    size_t plugins, routes;
    uint64_t generation;
};
/* Takes change_lock to read it (the control thread may be changing the
 * set): call it without holding the lock. */
struct fb_set_size fb_change_set_size(struct fb_daemon *d);

#endif
