/*
 * The three-way rule of config.reload and of a start whose config file
 * was edited since state.cbor was saved (README, "Restarts and the state
 * file"; proto/control.md, config.reload). Per item -- a plugin instance
 * by name (path and keys), a route by name (its whole spec):
 *
 *   BASE = the config the daemon last applied, FILE = the config now,
 *   RUNNING = the running set.
 *   FILE == BASE                 the running item stays as it is (a runtime
 *                                add, change or delete included);
 *   FILE != BASE, RUNNING == BASE  FILE's version is applied;
 *   FILE != BASE, RUNNING == FILE  nothing to do;
 *   otherwise                    FILE's version wins: "overridden".
 *
 * "Absent" is a value like any other, so an item added or deleted in the
 * file or at runtime follows the same four lines. Items compare by their
 * CBOR shape (spec_cbor.h, what state.cbor stores), so a config section
 * and the same item read back from state.cbor are equal.
 */
#ifndef FB_MERGE_H
#define FB_MERGE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/state.h"

enum fb_merge_why {
    FB_MERGE_SAME,     /* FILE == BASE == RUNNING, or RUNNING == FILE */
    FB_MERGE_RUNTIME,  /* FILE == BASE, RUNNING differs: the runtime state kept */
    FB_MERGE_APPLIED,  /* FILE changed, RUNNING was BASE: FILE's version */
    FB_MERGE_OVERRIDE, /* FILE changed, RUNNING changed too: FILE's version */
};

enum fb_merge_change {
    FB_MERGE_NONE,   /* the running item (or its absence) stays */
    FB_MERGE_ADD,    /* not running, FILE's version comes */
    FB_MERGE_CHANGE, /* running, replaced by FILE's version */
    FB_MERGE_DELETE, /* running, goes */
};

struct fb_merge_item {
    const char *name;
    enum fb_merge_why why;
    enum fb_merge_change change;
    size_t file_at, run_at; /* indexes into FILE's / RUNNING's set; SIZE_MAX: absent */
};

/*
 * The result of one merge. set holds shallow copies of entries of FILE and
 * RUNNING (free only its arrays, with fb_merge_clear): RUNNING's order
 * with changed items in place and deleted ones left out, then FILE's new
 * items in FILE's order.
 */
struct fb_merge {
    struct fb_runset set;
    struct fb_merge_item *plugins, *routes; /* every name of the three, sorted */
    size_t nplugins, nroutes;
    size_t nchanges; /* items whose change is not NONE */
    size_t nedits;   /* items FILE changed since BASE */
};

/* 0, or -ENOMEM (then out is cleared). base may be NULL (empty). */
int fb_merge_run(const struct fb_runset *base, const struct fb_runset *file,
                 const struct fb_runset *running, struct fb_merge *out);
void fb_merge_clear(struct fb_merge *m);
/* The item named name in items (sorted by name, as fb_merge gives them),
 * or NULL. */
const struct fb_merge_item *fb_merge_find(const struct fb_merge_item *items, size_t n,
                                          const char *name);

#endif
