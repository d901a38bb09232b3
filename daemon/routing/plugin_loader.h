/*
 * Plugin loader (<fidbus/plugin.h>): private copy, dlopen, ABI check, name
 * validation, funcIDs, conflict refusal, init, and the host table a plugin
 * sees. Loading and unloading run with the change lock held (change.c);
 * handlers run elsewhere.
 */
#ifndef FB_PLUGIN_LOADER_H
#define FB_PLUGIN_LOADER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <fidbus/plugin.h>

#include "config/config.h"
#include "routing/registry.h"

struct fb_daemon;

struct fb_plugin {
    char *name;      /* instance name ([plugin NAME]) */
    char *path;      /* the file it was loaded from */
    char *copy_path; /* private copy under runtime_dir */
    void *dl;        /* dlopen handle */
    const struct fidbus_plugin *desc;
    void *ctx;             /* what init stored */
    bool initialized;      /* init succeeded: fini is owed */
    struct fb_func *funcs; /* nfuncs entries, registered */
    size_t nfuncs;
    struct fb_kv *keys; /* config section, copied */
    size_t nkeys;
    struct fidbus_host host; /* handed to init; handle = this */
    struct fb_daemon *d;
    _Atomic uint64_t inflight; /* blocking calls queued or running */
    /* The original file when it was loaded: config.reload reloads an
     * instance whose file changed on disk since. */
    dev_t src_dev;
    ino_t src_ino;
    off_t src_size;
    struct timespec src_mtime;
    struct fb_plugin *next; /* daemon's list */
};

/*
 * Loads one plugin instance (pc->name NULL: named after the plugin's own
 * name field, which must then be a valid instance name): copies pc->path to a private
 * file under the runtime dir, dlopens it, checks the ABI and every function, refuses
 * funcID conflicts with the registry, calls init, and registers its
 * functions (routes are built by the caller afterwards). On failure
 * nothing is left behind (handle closed, copy removed) and err holds one
 * line naming the plugin and the reason, for the caller to log. Returns 0, or
 * FIDBUS_NOT_FOUND (no such file), FIDBUS_INVALID (not a plugin, wrong ABI, bad names,
 * init failed), FIDBUS_CONFLICT, or -ENOMEM.
 */
int fb_plugin_load(struct fb_daemon *d, const struct fb_plugin_conf *pc,
                   struct fb_plugin **out, char *err, size_t errlen);

/* Whether an instance name is taken (the caller knows which instances a
 * change keeps and which it has loaded so far). */
typedef bool (*fb_plugin_name_taken_fn)(void *arg, const char *name);

/*
 * fb_plugin_load that refuses an instance name `taken` says is in use
 * (FIDBUS_CONFLICT) as soon as the name is known -- the plugin's own name
 * for an unnamed load -- and so before init: a refused load calls
 * neither init nor fini and logs no "loaded"/"unloaded" line. taken may
 * be NULL (no check).
 */
int fb_plugin_load_checked(struct fb_daemon *d, const struct fb_plugin_conf *pc,
                           fb_plugin_name_taken_fn taken, void *arg,
                           struct fb_plugin **out, char *err, size_t errlen);

/*
 * Unloads an instance that no published table references any more and
 * whose grace period has passed: removes its functions from the registry,
 * waits for its in-flight blocking calls, cancels its timers, calls fini,
 * dlcloses and removes the private copy. Frees p.
 */
void fb_plugin_unload(struct fb_daemon *d, struct fb_plugin *p);
/* Plugins in the list that starts at first (d->plugins; caller holds
 * change_lock or is the only thread that changes the set). */
size_t fb_plugin_count(const struct fb_plugin *first);
/*
 * The wait for in-flight calls lasts handler_deadline_ms at most (none at
 * shutdown, where the pool has waited already): past it the instance is
 * detached -- functions and timers gone -- but left loaded, neither
 * finalised nor closed, since a call is still running its code; it is
 * finished by a later unload, or at shutdown, once its calls are back.
 * fb_plugin_reap_detached does that (final: at shutdown, logging each
 * still left).
 */
void fb_plugin_reap_detached(struct fb_daemon *d, bool final);

/* Removes private copies under RUNTIME/plugins left by daemons that are
 * no longer running (killed before they could clean up). Start-up. */
void fb_plugin_sweep_copies(const char *runtime_dir);

/* The value of key in the instance's section, NULL if unset. */
const char *fb_plugin_config(const struct fb_plugin *p, const char *key);

#endif
