/*
 * Route tables (README "Routes"; docs/architecture.md).
 *
 * fb_routes_build resolves a set of route specs against the registry into
 * an immutable table: targets become struct fb_func pointers, patterns are
 * indexed (exact ids and prefixes in hash tables, candidates pre-sorted by
 * precedence), so a lookup walks at most one bucket per '.'-boundary of
 * the id plus the '*' list, and allocates nothing.
 *
 * Publication: a table is published into a slot with fb_routes_publish,
 * which swaps the pointer atomically (rcu_xchg_pointer) and frees the old
 * table after an RCU grace period (liburcu, memb flavour). Readers hold
 * urcu_memb_read_lock() from rcu_dereference(slot) until they are done
 * with every route and function pointer taken from the table, so an event
 * is dispatched entirely against one table.
 */
#ifndef FB_ROUTES_H
#define FB_ROUTES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/proto.h>

#include "config/route_spec.h"
#include "routing/registry.h"

struct fb_route_target {
    struct fb_func *fn;
    uint32_t weight;
    bool pinned; /* version given in the spec */
};

struct fb_route {
    const struct fb_route_spec *spec; /* the table's own copy */
    const char *name;
    enum fb_route_mode mode;
    const char *split_by; /* NULL if none */
    struct fb_route_target *targets;
    size_t ntargets;
    uint64_t total_weight;
    /* Events this route routed. Shared with the same-named route of the
     * tables before and after it (fb_routes_inherit_counters), so the
     * count survives flips; freed with the last table that holds it. */
    struct fb_route_counter *matched;
};

struct fb_route_counter {
    struct fb_striped n;
    _Atomic uint32_t refs;
};

struct fb_route_table;

/*
 * Builds a table from n specs. Every spec is validated
 * (fb_route_spec_validate), names must be unique, every target must
 * resolve (pinned: that exact funcID; latest: highest loaded version) to a
 * function no other target of the route resolves to (INVALID), and
 * a route's signature must equal each target's sighash. Returns 0 with
 * *out set (caller owns it), or a protocol code with err naming the route
 * and target: FIDBUS_INVALID, FIDBUS_CONFLICT (duplicate route name),
 * FIDBUS_NOT_FOUND (no such function), FIDBUS_SIGNATURE_MISMATCH; or
 * -ENOMEM. Nothing is published.
 */
int fb_routes_build(const struct fb_route_spec *specs, size_t n,
                    const struct fb_registry *reg, uint64_t generation,
                    struct fb_route_table **out, char *err, size_t errlen);

/* NULL-safe, immediate free (the table must be unpublished and past its
 * grace period). Returns NULL. */
struct fb_route_table *fb_routes_free(struct fb_route_table *t);

/*
 * The route that fires for this event (most specific match, section 4), or
 * NULL. Lock-free, allocation-free; t must be held under the read lock.
 */
const struct fb_route *fb_routes_match(const struct fb_route_table *t, const char *id,
                                       size_t idlen, const struct fidbus_tag *tags,
                                       size_t ntags);

/*
 * Which targets to call for an event that matched r: for mode all every
 * target (its index into r->targets), for split exactly one: chosen by a
 * stable hash of the split_by tag's value when the event carries it,
 * otherwise by weighted pseudo-random choice. Writes indexes into
 * out[FB_MAX_TARGETS]; returns how many.
 */
size_t fb_route_select(const struct fb_route *r, const struct fidbus_tag *tags,
                       size_t ntags, size_t *out);

/* The split target for a given split_by value (stable across processes
 * and restarts: FNV-1a 64 of the value, mixed, modulo total weight). */
size_t fb_route_split_pick(const struct fb_route *r, const char *value);

/*
 * Makes every route of t that has a same-named route in prev count into
 * prev's counter (t's own fresh counter is dropped), so per-route totals
 * run on across a flip. Call after fb_routes_build, before publishing t;
 * prev may be NULL. Writers only (the change lock's holder).
 */
void fb_routes_inherit_counters(struct fb_route_table *t, const struct fb_route_table *prev);

uint64_t fb_routes_generation(const struct fb_route_table *t);
/* Events this table routed (one per event, whatever its fan-out): the
 * per-generation count of stats. */
uint64_t fb_routes_routed(const struct fb_route_table *t);
/* The dispatcher's count of one routed event. */
void fb_routes_count_routed(const struct fb_route_table *t);
size_t fb_routes_count(const struct fb_route_table *t);
/* i-th route in name order. */
const struct fb_route *fb_routes_at(const struct fb_route_table *t, size_t i);
/* Does any route in t target a function of this plugin? Writes the first
 * such route's name to *route_name. */
bool fb_routes_uses_plugin(const struct fb_route_table *t, const struct fb_plugin *p,
                           const char **route_name);

/*
 * Publishes next into *slot with one atomic pointer store, waits for a
 * grace period and returns the previous table, which no reader can see any
 * more: the caller reads its final counts and frees it. Blocks for the
 * grace period: call it from a control/main thread that is not an RCU
 * reader, never from an I/O loop callback.
 */
struct fb_route_table *fb_routes_publish(struct fb_route_table **slot,
                                         struct fb_route_table *next);

/*
 * The reader's load of a published slot: rcu_dereference as liburcu does
 * it with _LGPL_SOURCE (an atomic consume load), whichever way the caller
 * included liburcu. Use it instead of rcu_dereference(slot): without
 * _LGPL_SOURCE that macro reads the slot with a plain load before calling
 * into liburcu, which ThreadSanitizer rightly reports as racing with
 * fb_routes_publish; with _LGPL_SOURCE, liburcu's inline read_unlock has
 * races of its own that TSan reports. So readers keep the library's
 * urcu_memb_read_lock/unlock calls and load the slot with this.
 */
static inline struct fb_route_table *fb_routes_deref(struct fb_route_table *const *slot)
{
    return __atomic_load_n(slot, __ATOMIC_CONSUME);
}

/*
 * ThreadSanitizer cannot see liburcu's grace period (membarrier and plain
 * counter reads inside an uninstrumented library), so without help it
 * reports the free of an old table as racing with readers that finished
 * long before. Readers call FB_ROUTES_READ_DONE() right before
 * urcu_memb_read_unlock(); fb_routes_publish acquires the same address
 * after the grace period. Compiles to nothing outside TSan builds.
 */
#if defined(__SANITIZE_THREAD__)
#define FB_ROUTES_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FB_ROUTES_TSAN 1
#endif
#endif
#ifdef FB_ROUTES_TSAN
#include <sanitizer/tsan_interface.h>
extern char fb_routes_tsan_gp;
#define FB_ROUTES_READ_DONE() __tsan_release(&fb_routes_tsan_gp)
#else
#define FB_ROUTES_READ_DONE() ((void)0)
#endif

#endif
