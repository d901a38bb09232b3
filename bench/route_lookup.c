/*
 * bench/route_lookup.c -- fidbus-bench-routes: the cost of routing one
 * event, in-process, without sockets or a daemon.
 *
 *     fidbus-bench-routes [--iterations N] [--runs K]
 *
 * Routing is fb_routes_match (daemon/routing/routes.c) followed by fb_route_select;
 * this links the daemon's modules (fidbusd_core) and times exactly those
 * two calls against tables of 10, 100, 1,000 and 10,000 routes. The
 * registry holds a few functions built by hand with fb_func_init, as the
 * unit tests do, so no plugin is loaded.
 *
 * Each table is a mix, in groups of five routes per service k:
 *   svc.k.created                  exact, mode all
 *   svc.k.created {region=eu}      exact with a tag, split by `user`
 *   svc.k.updated                  exact
 *   svc.k.*                        prefix
 *   svc.k.audit.* {tier=*}         longer prefix with a tag
 * plus one `*` {debug=*} route (the table's last route), so every lookup
 * also walks the `*` list. Three pre-generated event sets are timed
 * separately: "exact" ids that hit an exact route (half of them carry
 * region=eu and a user, so the tagged split route fires), "prefix" ids
 * that only a prefix route matches (svc.k.items.N, svc.k.audit.N with a
 * tier tag), and "miss" ids that match nothing (other.k.created,
 * svc.K.created past the last service; no debug tag). Before timing, every
 * event is checked to land where its set says, so a change in matching
 * semantics cannot silently make the figures measure something else.
 *
 * A figure is the median over --runs runs of (elapsed / --iterations) for
 * one set, CLOCK_MONOTONIC, with every result folded into a volatile sink
 * so the compiler cannot drop a lookup. The event arrays are larger than
 * the small tables but far smaller than L2, so the figures are for a warm
 * cache: the dispatch path's steady state, not a cold miss.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "routing/registry.h"
#include "config/route_spec.h"
#include "routing/routes.h"

/* Events per set: a power of two, so the timed loop indexes with a mask. */
#define NEVENTS 4096u
#define MAX_RUNS 101u

static int nop(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static const struct fidbus_function bench_fns[] = {
    {.ns = "bench",
     .name = "log",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = nop},
    {.ns = "bench",
     .name = "count",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = nop},
    {.ns = "bench", .name = "svc", .version = "1.0.0", .signature = "svc", .handle = nop},
    {.ns = "bench", .name = "svc", .version = "2.0.0", .signature = "svc", .handle = nop},
};
#define NFNS (sizeof(bench_fns) / sizeof(bench_fns[0]))

struct event {
    const char *id;
    size_t idlen;
    struct fidbus_tag tags[2];
    size_t ntags;
};

struct event_set {
    const char *name;
    struct event ev[NEVENTS];
    char *ids; /* owns every id of ev */
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fidbus-bench-routes: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        die("out of memory");
    return d;
}

/* Deterministic, so every run and every machine times the same events. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* ------------------------------------------------------------- tables */

static void spec_init(struct fb_route_spec *s, size_t i, const char *event,
                      const char *tags, const char *to, enum fb_route_mode mode,
                      const char *split_by)
{
    char name[32], err[256];
    memset(s, 0, sizeof(*s));
    snprintf(name, sizeof(name), "r%zu", i);
    s->name = xstrdup(name);
    s->event = xstrdup(event);
    s->mode = mode;
    s->split_by = split_by ? xstrdup(split_by) : NULL;
    if (fb_tags_parse_list(tags, s, err, sizeof(err)) ||
        fb_targets_parse_list(to, s, err, sizeof(err)))
        die("route %s: %s", name, err);
}

/* The mix described at the top: n routes, the last one `*` {debug=*}. */
static struct fb_route_table *table_build(size_t n, const struct fb_registry *reg)
{
    struct fb_route_spec *specs = calloc(n, sizeof(*specs));
    char ev[64], err[512];
    if (!specs)
        die("out of memory");
    for (size_t i = 0; i + 1 < n; i++) {
        size_t k = i / 5;
        switch (i % 5) {
        case 0:
            snprintf(ev, sizeof(ev), "svc.%zu.created", k);
            spec_init(&specs[i], i, ev, NULL, "bench.log", FB_MODE_ALL, NULL);
            break;
        case 1:
            snprintf(ev, sizeof(ev), "svc.%zu.created", k);
            spec_init(&specs[i], i, ev, "region=eu",
                      "bench.svc@1.0.0:95, bench.svc@2.0.0:5", FB_MODE_SPLIT, "user");
            break;
        case 2:
            snprintf(ev, sizeof(ev), "svc.%zu.updated", k);
            spec_init(&specs[i], i, ev, NULL, "bench.log, bench.count", FB_MODE_ALL,
                      NULL);
            break;
        case 3:
            snprintf(ev, sizeof(ev), "svc.%zu.*", k);
            spec_init(&specs[i], i, ev, NULL, "bench.count", FB_MODE_ALL, NULL);
            break;
        default:
            snprintf(ev, sizeof(ev), "svc.%zu.audit.*", k);
            spec_init(&specs[i], i, ev, "tier=*", "bench.log", FB_MODE_ALL, NULL);
            break;
        }
    }
    spec_init(&specs[n - 1], n - 1, "*", "debug=*", "bench.log", FB_MODE_ALL, NULL);

    struct fb_route_table *t = NULL;
    int rc = fb_routes_build(specs, n, reg, 1, &t, err, sizeof(err));
    if (rc)
        die("building %zu routes: %s (%d)", n, err, rc);
    for (size_t i = 0; i < n; i++)
        fb_route_spec_clear(&specs[i]);
    free(specs);
    return t;
}

/* Services whose route of kind `kind` (0..4) exists in an n-route table. */
static size_t services_with(size_t n, size_t kind)
{
    /* routes 0 .. n-2 are the mix; service k's kind route is 5k + kind */
    return (n - 1 + 4 - kind) / 5;
}

/* ------------------------------------------------------------- events */

enum set_kind { SET_EXACT, SET_PREFIX, SET_MISS, NSETS };
static const char *const set_names[NSETS] = {"exact", "prefix", "miss"};

static const char *const regions[] = {"eu", "us"};
static const char *const tiers[] = {"gold", "silver"};

static void set_fill(struct event_set *s, enum set_kind kind, size_t nroutes)
{
    /* one buffer for all ids, so the set is compact in memory */
    enum { ID_MAX = 48 };
    static char users[16][8];
    s->name = set_names[kind];
    s->ids = malloc(NEVENTS * ID_MAX);
    if (!s->ids)
        die("out of memory");
    for (size_t u = 0; u < 16; u++)
        snprintf(users[u], sizeof(users[u]), "u%zu", u);

    size_t nsvc = services_with(nroutes, 0);
    for (size_t i = 0; i < NEVENTS; i++) {
        struct event *e = &s->ev[i];
        char *id = s->ids + i * ID_MAX;
        e->ntags = 0;
        switch (kind) {
        case SET_EXACT: {
            /* created (untagged or eu+user) where kind 0/1 exist, else updated */
            size_t k = rnd((uint32_t)nsvc);
            unsigned pick = rnd(3);
            if (pick == 2 && k < services_with(nroutes, 2)) {
                snprintf(id, ID_MAX, "svc.%zu.updated", k);
            } else {
                snprintf(id, ID_MAX, "svc.%zu.created", k);
                if (pick == 1 && k < services_with(nroutes, 1)) {
                    e->tags[0] = (struct fidbus_tag){"region", "eu"};
                    e->tags[1] = (struct fidbus_tag){"user", users[rnd(16)]};
                    e->ntags = 2;
                } else if (pick == 1) {
                    e->tags[0] = (struct fidbus_tag){"region", regions[1]};
                    e->ntags = 1;
                }
            }
            break;
        }
        case SET_PREFIX: {
            size_t k3 = services_with(nroutes, 3), k4 = services_with(nroutes, 4);
            if (k4 && rnd(2)) {
                snprintf(id, ID_MAX, "svc.%" PRIu32 ".audit.%" PRIu32, rnd((uint32_t)k4),
                         rnd(1000));
                e->tags[0] = (struct fidbus_tag){"tier", tiers[rnd(2)]};
                e->ntags = 1;
            } else {
                snprintf(id, ID_MAX, "svc.%" PRIu32 ".items.%" PRIu32, rnd((uint32_t)k3),
                         rnd(1000));
            }
            break;
        }
        default:
            if (rnd(2))
                snprintf(id, ID_MAX, "other.%" PRIu32 ".created", rnd(100000));
            else
                snprintf(id, ID_MAX, "svc.%zu.created", nsvc + rnd(100000));
            e->tags[0] = (struct fidbus_tag){"region", regions[rnd(2)]};
            e->ntags = 1;
            break;
        }
        e->id = id;
        e->idlen = strlen(id);
    }
}

/* Every event lands where its set says: exact route, prefix route, none. */
static void set_check(const struct event_set *s, enum set_kind kind,
                      const struct fb_route_table *t)
{
    for (size_t i = 0; i < NEVENTS; i++) {
        const struct event *e = &s->ev[i];
        const struct fb_route *r = fb_routes_match(t, e->id, e->idlen, e->tags, e->ntags);
        const char *pat = r ? r->spec->event : NULL;
        size_t pl = pat ? strlen(pat) : 0;
        bool is_prefix = pat && pl >= 2 && strcmp(pat + pl - 2, ".*") == 0;
        bool ok = kind == SET_MISS     ? r == NULL
                  : kind == SET_PREFIX ? is_prefix
                                       : pat && !strchr(pat, '*');
        if (!ok)
            die("%zu routes: %s event '%s' matched %s", fb_routes_count(t), s->name,
                e->id, pat ? pat : "nothing");
    }
}

/* ------------------------------------------------------------- timing */

static volatile uintptr_t sink;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ns per routed event over `iters` lookups of the set, cycling through it. */
static double time_set(const struct fb_route_table *t, const struct event_set *s,
                       uint64_t iters)
{
    size_t idx[FB_MAX_TARGETS];
    uintptr_t acc = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        const struct event *e = &s->ev[i & (NEVENTS - 1)];
        const struct fb_route *r = fb_routes_match(t, e->id, e->idlen, e->tags, e->ntags);
        if (r) {
            size_t n = fb_route_select(r, e->tags, e->ntags, idx);
            acc += n ? n + idx[0] : 0;
        }
        acc += (uintptr_t)r;
    }
    uint64_t t1 = now_ns();
    sink = acc;
    return (double)(t1 - t0) / (double)iters;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t parse_count(const char *opt, const char *s, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max || s[0] == '-') {
        fprintf(stderr,
                "fidbus-bench-routes: invalid %s '%s': expected an integer from 1 to "
                "%" PRIu64 "\n",
                opt, s, max);
        exit(2); /* a usage error, as fidbus-bench's */
    }
    return v;
}

static const char usage[] =
    "usage: fidbus-bench-routes [--iterations N] [--runs K]\n"
    "  --iterations N  lookups per run and event set (default 1000000)\n"
    "  --runs K        runs per figure; the median is printed (default 7, odd is best)\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"iterations", required_argument, NULL, 'i'},
        {"runs", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    static const size_t sizes[] = {10, 100, 1000, 10000};
    uint64_t iters = 1000000;
    unsigned runs = 7;
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            iters = parse_count("--iterations", optarg, UINT64_C(1) << 40);
            break;
        case 'r':
            runs = (unsigned)parse_count("--runs", optarg, MAX_RUNS);
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fputs(usage, stderr);
        return 2;
    }

    struct fb_registry *reg;
    static struct fb_func fns[NFNS];
    char err[256];
    if (fb_registry_new(&reg))
        die("out of memory");
    for (size_t i = 0; i < NFNS; i++)
        if (fb_func_init(&fns[i], &bench_fns[i], err, sizeof(err)))
            die("function %zu: %s", i, err);
    if (fb_registry_check(reg, fns, NFNS, err, sizeof(err)) ||
        fb_registry_add(reg, fns, NFNS))
        die("registry: %s", err);

    static struct event_set sets[NSETS];
    printf("route lookup (fb_routes_match + fb_route_select), ns per event, median of %u "
           "runs x %" PRIu64 " lookups\n",
           runs, iters);
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        struct fb_route_table *t = table_build(sizes[si], reg);
        double med[NSETS];
        for (int k = 0; k < NSETS; k++) {
            set_fill(&sets[k], (enum set_kind)k, sizes[si]);
            set_check(&sets[k], (enum set_kind)k, t);
        }
        for (int k = 0; k < NSETS; k++) {
            double v[MAX_RUNS];
            time_set(t, &sets[k], iters / 10 + 1); /* warm the caches */
            for (unsigned r = 0; r < runs; r++)
                v[r] = time_set(t, &sets[k], iters);
            qsort(v, runs, sizeof(v[0]), cmp_double);
            med[k] = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
        }
        printf("routes=%-6zu exact %6.1f ns  prefix %6.1f ns  miss %6.1f ns\n", sizes[si],
               med[SET_EXACT], med[SET_PREFIX], med[SET_MISS]);
        fflush(stdout);
        for (int k = 0; k < NSETS; k++)
            free(sets[k].ids);
        t = fb_routes_free(t);
    }
    reg = fb_registry_free(reg);
    return 0;
}
