/*
 * Unit tests for route tables (daemon/routing/routes.c): the precedence order of
 * README "Routes" (table-driven, one row per rule), prefix and case
 * semantics, build errors, latest vs pinned resolution, split selection
 * (weights, stable split_by) and listings. Functions are built by hand
 * with fb_func_init and registered; no plugins are loaded.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "routing/registry.h"
#include "config/route_spec.h"
#include "routing/routes.h"

/* The tables below give only the fields a row needs; the rest are zero on
 * purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static int nop(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

/* ------------------------------------------------------------ fixture */

static const struct fidbus_function fixture_fns[] = {
    { .ns = "demo", .name = "log", .version = "1.0.0", .signature = "event:any", .handle = nop },
    { .ns = "demo", .name = "count", .version = "1.0.0", .signature = "event:any", .handle = nop },
    { .ns = "demo", .name = "v", .version = "1.0.0", .signature = "v", .handle = nop },
    { .ns = "demo", .name = "v", .version = "1.9.0", .signature = "v", .handle = nop },
    { .ns = "demo", .name = "v", .version = "1.10.0", .signature = "v", .handle = nop },
    { .ns = "ab", .name = "a", .version = "1.0.0", .signature = "ab", .handle = nop },
    { .ns = "ab", .name = "b", .version = "1.0.0", .signature = "ab", .handle = nop },
    { .ns = "ab", .name = "c", .version = "1.0.0", .signature = "ab", .handle = nop },
};
#define NFIX (sizeof(fixture_fns) / sizeof(fixture_fns[0]))

static struct fb_func fns[NFIX];
static struct fb_registry *reg;

static void setup(void)
{
    char err[256];

    ck_assert_int_eq(fb_registry_new(&reg), 0);
    for (size_t i = 0; i < NFIX; i++)
        ck_assert_int_eq(fb_func_init(&fns[i], &fixture_fns[i], err, sizeof(err)), 0);
    ck_assert_int_eq(fb_registry_check(reg, fns, NFIX, err, sizeof(err)), 0);
    ck_assert_int_eq(fb_registry_add(reg, fns, NFIX), 0);
}

static void teardown(void)
{
    reg = fb_registry_free(reg);
}

static struct fb_func *fn(const char *canonical)
{
    return fb_registry_lookup(reg, fidbus_funcid(canonical));
}

/* --------------------------------------------------------- spec helpers */

struct rdef {
    const char *name;
    const char *event;
    const char *tags;      /* "k=v, k2=*" or NULL */
    int64_t priority;
    const char *to;        /* NULL = "demo.log" */
    enum fb_route_mode mode;
    const char *split_by;
    const char *signature;
};

#define MAX_ROUTES 8

static void spec_from(struct fb_route_spec *s, const struct rdef *d)
{
    char err[256];

    memset(s, 0, sizeof(*s));
    s->name = strdup(d->name);
    s->event = strdup(d->event);
    ck_assert_ptr_nonnull(s->name);
    ck_assert_ptr_nonnull(s->event);
    ck_assert_msg(fb_tags_parse_list(d->tags, s, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(fb_targets_parse_list(d->to ? d->to : "demo.log", s, err, sizeof(err)) == 0,
                  "%s", err);
    s->priority = d->priority;
    s->mode = d->mode;
    s->split_by = d->split_by ? strdup(d->split_by) : NULL;
    s->signature = d->signature ? strdup(d->signature) : NULL;
}

static void specs_clear(struct fb_route_spec *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fb_route_spec_clear(&s[i]);
}

/* Builds a table from defs (terminated by a NULL name); returns the code. */
static int build(const struct rdef *defs, uint64_t gen, struct fb_route_table **out,
                 char *err, size_t errlen)
{
    struct fb_route_spec specs[MAX_ROUTES];
    size_t n = 0;
    int rc;

    while (n < MAX_ROUTES && defs[n].name) {
        spec_from(&specs[n], &defs[n]);
        n++;
    }
    rc = fb_routes_build(specs, n, reg, gen, out, err, errlen);
    /* The table owns copies: the caller's specs can go at once. */
    specs_clear(specs, n);
    return rc;
}

static struct fb_route_table *build_ok(const struct rdef *defs)
{
    struct fb_route_table *t = NULL;
    char err[512] = "";

    ck_assert_msg(build(defs, 1, &t, err, sizeof(err)) == 0, "build: %s", err);
    return t;
}

/* Event tags from "k=v,k2=v2" (no spaces), into storage owned by ev. */
struct ev {
    char buf[512];
    struct fidbus_tag tags[16];
    size_t ntags;
};

static void ev_tags(struct ev *e, const char *text)
{
    e->ntags = 0;
    if (!text || !*text)
        return;
    snprintf(e->buf, sizeof(e->buf), "%s", text);
    for (char *save = NULL, *kv = strtok_r(e->buf, ",", &save); kv;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        ck_assert_ptr_nonnull(eq);
        *eq = '\0';
        e->tags[e->ntags++] = (struct fidbus_tag){ kv, eq + 1 };
    }
}

static const struct fb_route *match(const struct fb_route_table *t, const char *id,
                                    const char *tags)
{
    struct ev e;

    ev_tags(&e, tags);
    return fb_routes_match(t, id, strlen(id), e.tags, e.ntags);
}

/* ------------------------------------------------------ precedence table */

struct probe {
    const char *id;
    const char *tags;
    const char *want;      /* route name, NULL = no route */
};

struct row {
    const char *what;
    struct rdef routes[MAX_ROUTES];
    struct probe probes[8];
};

static const struct row rows[] = {
    { "design example chain",
      { { "a-full", "order.created", "version=v2, region=cn-east" },
        { "b-any-region", "order.created", "version=v2, region=*" },
        { "c-version", "order.created", "version=v2" },
        { "d-plain", "order.created" },
        { "e-prefix", "order.*" } },
      { { "order.created", "version=v2,region=cn-east", "a-full" },
        { "order.created", "region=cn-east,version=v2", "a-full" },
        { "order.created", "version=v2,region=us-west", "b-any-region" },
        { "order.created", "version=v2", "c-version" },
        { "order.created", "version=v3,region=cn-east", "d-plain" },
        { "order.created", NULL, "d-plain" },
        { "order.updated", "version=v2,region=cn-east", "e-prefix" } } },

    /* rule 1: exact > longer prefix > shorter prefix > '*', whatever the
     * tags and priorities further down the order say */
    { "exact beats prefix with more tags and priority",
      { { "exact", "order.created" },
        { "prefix", "order.*", "a=1, b=2", 1000 },
        { "star", "*", "a=1, b=2, c=3", 2000 } },
      { { "order.created", "a=1,b=2,c=3", "exact" },
        { "order.deleted", "a=1,b=2,c=3", "prefix" },
        { "orders", "a=1,b=2,c=3", "star" } } },
    { "longer prefix beats shorter prefix",
      { { "short", "a.*", "x=1, y=2", 50 },
        { "long", "a.b.*" },
        { "longer", "a.b.c.*" } },
      { { "a.b.c.d", "x=1,y=2", "longer" },
        { "a.b.c.d.e", NULL, "longer" },
        { "a.b.c", "x=1,y=2", "long" },
        { "a.b.x", NULL, "long" },
        { "a.b", "x=1,y=2", "short" },
        { "a.c", NULL, NULL } } },
    { "prefix beats star",
      { { "star", "*", NULL, 1000 }, { "prefix", "order.*" } },
      { { "order.x", NULL, "prefix" }, { "other", NULL, "star" } } },
    { "a bucket whose tags fail falls through to the next",
      { { "exact-tagged", "order.created", "region=cn" },
        { "prefix-tagged", "order.*", "region=us" },
        { "star", "*" } },
      { { "order.created", "region=cn", "exact-tagged" },
        { "order.created", "region=us", "prefix-tagged" },
        { "order.created", "region=eu", "star" },
        { "order.created", NULL, "star" } } },

    /* rule 2: more tag constraints > fewer */
    { "more constraints beat fewer exact ones",
      { { "two-any", "e", "a=*, b=*" }, { "one-exact", "e", "a=1", 99 } },
      { { "e", "a=1,b=2", "two-any" }, { "e", "a=1", "one-exact" } } },
    /* rule 3: more exact values > more '*' values */
    { "exact values beat wildcards",
      { { "any-any", "e", "a=*, b=*", 99 },
        { "one-exact", "e", "a=1, b=*" },
        { "two-exact", "e", "a=1, b=2" } },
      { { "e", "a=1,b=2", "two-exact" },
        { "e", "a=1,b=3", "one-exact" },
        { "e", "a=9,b=3", "any-any" },
        { "e", "a=9", NULL } } },
    /* rule 4: higher priority */
    { "priority",
      { { "a-low", "e", "k=v", -5 }, { "b-mid", "e", "k=v" }, { "c-high", "e", "k=v", 7 } },
      { { "e", "k=v", "c-high" } } },
    { "priority within a prefix and in '*'",
      { { "p-a", "x.*", NULL, 1 }, { "p-b", "x.*", NULL, 2 },
        { "s-a", "*", NULL, 3 }, { "s-b", "*", NULL, 2 } },
      { { "x.y", NULL, "p-b" }, { "y", NULL, "s-a" } } },
    /* rule 5: the name that sorts first, byte order */
    { "name tie-break",
      { { "route-b", "e" }, { "route-a", "e" }, { "route-c", "e" } },
      { { "e", NULL, "route-a" } } },
    { "name tie-break is byte order",
      { { "alpha", "e" }, { "Zulu", "e" }, { "_x", "e" } },
      { { "e", NULL, "Zulu" } } },

    /* prefix semantics */
    { "prefix matches whole segments only",
      { { "p", "order.*" } },
      { { "order.created", NULL, "p" },
        { "order.a.b", NULL, "p" },
        { "order", NULL, NULL },
        { "orders.x", NULL, NULL },
        { "order_x", NULL, NULL },
        { "xorder.created", NULL, NULL } } },
    { "exact id equal to a prefix's stem",
      { { "exact", "order" }, { "prefix", "order.*" } },
      { { "order", NULL, "exact" }, { "order.x", NULL, "prefix" } } },
    { "ids and tags are case-sensitive",
      { { "exact", "Order.Created", "Region=CN" }, { "prefix", "Order.*" } },
      { { "Order.Created", "Region=CN", "exact" },
        { "Order.Created", "region=CN", "prefix" },
        { "Order.Created", "Region=cn", "prefix" },
        { "order.created", "Region=CN", NULL },
        { "ORDER.x", NULL, NULL } } },
    { "value '*' needs the tag to be present",
      { { "any", "e", "k=*" } },
      { { "e", "k=", "any" }, { "e", "k=x", "any" }, { "e", "j=x", NULL }, { "e", NULL, NULL } } },
    { "star alone routes everything",
      { { "all", "*" } },
      { { "a", NULL, "all" }, { "a.b.c", "x=y", "all" } } },
    { "empty table",
      { { NULL } },
      { { "a", NULL, NULL } } },
};

START_TEST(test_routes_precedence)
{
    const struct row *row = &rows[_i];
    struct fb_route_table *t = build_ok(row->routes);

    for (size_t p = 0; p < 8 && row->probes[p].id; p++) {
        const struct probe *pr = &row->probes[p];
        const struct fb_route *r = match(t, pr->id, pr->tags);

        if (pr->want)
            ck_assert_msg(r && strcmp(r->name, pr->want) == 0,
                          "%s: %s {%s}: want %s, got %s", row->what, pr->id,
                          pr->tags ? pr->tags : "", pr->want, r ? r->name : "(none)");
        else
            ck_assert_msg(!r, "%s: %s {%s}: want no route, got %s", row->what, pr->id,
                          pr->tags ? pr->tags : "", r ? r->name : "");
    }
    fb_routes_free(t);
}
END_TEST

/* The order must not depend on the order routes are given in. */
START_TEST(test_routes_precedence_input_order)
{
    const struct row *row = &rows[0];
    struct rdef rev[MAX_ROUTES + 1] = { { 0 } };
    size_t n = 0;

    while (row->routes[n].name)
        n++;
    for (size_t i = 0; i < n; i++)
        rev[i] = row->routes[n - 1 - i];
    struct fb_route_table *t = build_ok(rev);
    for (size_t p = 0; row->probes[p].id; p++) {
        const struct fb_route *r = match(t, row->probes[p].id, row->probes[p].tags);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(r->name, row->probes[p].want);
    }
    fb_routes_free(t);
}
END_TEST

/* Many buckets (forces hash probing past collisions) still find each one. */
START_TEST(test_routes_many)
{
    enum { N = 300 };
    struct fb_route_spec *specs = calloc(N, sizeof(*specs));
    struct fb_route_table *t;
    char err[256], name[64], ev[64];

    ck_assert_ptr_nonnull(specs);
    for (int i = 0; i < N; i++) {
        struct rdef d = { name, ev };
        snprintf(name, sizeof(name), "r%03d", i);
        if (i % 3 == 0)
            snprintf(ev, sizeof(ev), "svc%d.evt%d", i % 17, i);
        else if (i % 3 == 1)
            snprintf(ev, sizeof(ev), "svc%d.n%d.*", i % 17, i);
        else
            snprintf(ev, sizeof(ev), "p%d.*", i);
        spec_from(&specs[i], &d);
    }
    ck_assert_msg(fb_routes_build(specs, N, reg, 9, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(fb_routes_count(t), N);
    for (int i = 0; i < N; i++) {
        const struct fb_route *r;
        snprintf(name, sizeof(name), "r%03d", i);
        if (i % 3 == 0)
            snprintf(ev, sizeof(ev), "svc%d.evt%d", i % 17, i);
        else if (i % 3 == 1)
            snprintf(ev, sizeof(ev), "svc%d.n%d.deep.er", i % 17, i);
        else
            snprintf(ev, sizeof(ev), "p%d.x", i);
        r = match(t, ev, NULL);
        ck_assert_msg(r && strcmp(r->name, name) == 0, "%s -> %s", ev, r ? r->name : "none");
        ck_assert_str_eq(fb_routes_at(t, (size_t)i)->name, name);
    }
    ck_assert_ptr_null(match(t, "svc1.nothing", NULL));
    fb_routes_free(t);
    specs_clear(specs, N);
    free(specs);
}
END_TEST

/* ---------------------------------------------------------- build errors */

static void expect_build_error(const struct rdef *defs, int code, const char *const *needles)
{
    struct fb_route_table *t = (struct fb_route_table *)&t;   /* must stay untouched */
    char err[512] = "";
    int rc = build(defs, 1, &t, err, sizeof(err));

    ck_assert_msg(rc == code, "want %s, got %d (%s)", fidbus_code_name(code), rc, err);
    ck_assert_ptr_eq(t, (struct fb_route_table *)&t);
    for (size_t i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]), "err '%s' lacks '%s'", err, needles[i]);
}

START_TEST(test_routes_build_duplicate_name)
{
    const struct rdef d[] = { { "r1", "a" }, { "dup", "b" }, { "dup", "c" }, { NULL } };
    const char *const needles[] = { "'dup'", "twice", NULL };

    expect_build_error(d, FIDBUS_CONFLICT, needles);
}
END_TEST

START_TEST(test_routes_build_unknown_function)
{
    const struct rdef d[] = { { "ok", "a" }, { "bad", "b", .to = "demo.log, demo.nope" },
                              { NULL } };
    const char *const needles[] = { "'bad'", "'demo.nope'", NULL };

    expect_build_error(d, FIDBUS_NOT_FOUND, needles);
}
END_TEST

START_TEST(test_routes_build_pinned_missing)
{
    const struct rdef d[] = { { "pin", "b", .to = "demo.v@3.0.0" }, { NULL } };
    const char *const needles[] = { "'pin'", "'demo.v@3.0.0'", NULL };

    expect_build_error(d, FIDBUS_NOT_FOUND, needles);
}
END_TEST

/* Two targets that resolve to one function: latest and the pinned latest
 * version, or a target that names the same function. */
START_TEST(test_routes_build_same_function_twice)
{
    const struct rdef d[] = { { "ok", "a", .to = "demo.v@1.9.0, demo.v" },
                              { "dup", "b", .to = "demo.log, demo.v, demo.v@1.10.0" },
                              { NULL } };
    const char *const needles[] = { "'dup'", "'demo.v'", "'demo.v@1.10.0'", "demo.v@1.10.0",
                                    "same function", NULL };

    expect_build_error(d, FIDBUS_INVALID, needles);

    const struct rdef d2[] = { { "dup2", "b", .to = "demo.v@1.10.0:3, demo.v:1" }, { NULL } };
    const char *const needles2[] = { "'dup2'", "same function", NULL };
    expect_build_error(d2, FIDBUS_INVALID, needles2);
}
END_TEST

START_TEST(test_routes_build_signature)
{
    uint8_t h[FIDBUS_SIGHASH_LEN];
    char want[FIDBUS_SIGHASH_HEX], have[FIDBUS_SIGHASH_HEX];
    struct fb_route_table *t;
    char err[512];

    /* The right hash (either case) binds. */
    fidbus_sighash("event:any", h);
    fidbus_sighash_hex(h, have);
    struct rdef ok[] = { { "signed", "a", .to = "demo.log, demo.count", .signature = have },
                         { NULL } };
    ck_assert_msg(build(ok, 1, &t, err, sizeof(err)) == 0, "%s", err);
    fb_routes_free(t);
    char upper[FIDBUS_SIGHASH_HEX];
    for (size_t i = 0; i < sizeof(upper); i++)
        upper[i] = (char)(have[i] >= 'a' && have[i] <= 'f' ? have[i] - 32 : have[i]);
    ok[0].signature = upper;
    ck_assert_msg(build(ok, 1, &t, err, sizeof(err)) == 0, "%s", err);
    fb_routes_free(t);

    /* demo.log matches, demo.v@1.9.0 does not: the error names the route,
     * the target and both hashes. */
    fidbus_sighash("v", h);
    fidbus_sighash_hex(h, want);
    const struct rdef bad[] = { { "signed", "a", .to = "demo.log, demo.v@1.9.0",
                                  .signature = have },
                                { NULL } };
    const char *const needles[] = { "'signed'", "demo.v@1.9.0", have, want, NULL };
    expect_build_error(bad, FIDBUS_SIGNATURE_MISMATCH, needles);
}
END_TEST

START_TEST(test_routes_build_invalid)
{
    const struct rdef d1[] = { { "ok", "a" }, { "badevent", "order.*x" }, { NULL } };
    const char *const n1[] = { "'badevent'", NULL };
    expect_build_error(d1, FIDBUS_INVALID, n1);

    const struct rdef d2[] = { { "bad name", "a" }, { NULL } };
    const char *const n2[] = { "bad name", NULL };
    expect_build_error(d2, FIDBUS_INVALID, n2);

    const struct rdef d3[] = { { "badsplit", "a", .mode = FB_MODE_ALL, .split_by = "user" },
                               { NULL } };
    const char *const n3[] = { "'badsplit'", "split_by", NULL };
    expect_build_error(d3, FIDBUS_INVALID, n3);

    const struct rdef d4[] = { { "badsig", "a", .signature = "abc" }, { NULL } };
    const char *const n4[] = { "'badsig'", "signature", NULL };
    expect_build_error(d4, FIDBUS_INVALID, n4);

    /* no targets: built by hand, the parser would refuse it first */
    struct fb_route_spec s = { .name = "empty", .event = "a" };
    struct fb_route_table *t = NULL;
    char err[256] = "";
    ck_assert_int_eq(fb_routes_build(&s, 1, reg, 1, &t, err, sizeof(err)), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "'empty'"));
    ck_assert_ptr_null(t);
}
END_TEST

/* ----------------------------------------------------------- resolution */

START_TEST(test_routes_latest_vs_pinned)
{
    const struct rdef d[] = { { "latest", "a", .to = "demo.v" },
                              { "pinned", "b", .to = "demo.v@1.9.0" },
                              { NULL } };
    struct fb_route_table *t = build_ok(d);
    const struct fb_route *r = match(t, "a", NULL);

    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->ntargets, 1);
    ck_assert_ptr_eq(r->targets[0].fn, fn("demo.v@1.10.0"));
    ck_assert(!r->targets[0].pinned);
    r = match(t, "b", NULL);
    ck_assert_ptr_eq(r->targets[0].fn, fn("demo.v@1.9.0"));
    ck_assert(r->targets[0].pinned);
    fb_routes_free(t);

    /* A newer version loaded: a rebuilt table's latest moves, pinned stays. */
    struct fb_func newer;
    const struct fidbus_function src = { .ns = "demo", .name = "v", .version = "2.0.0",
                                         .signature = "v", .handle = nop };
    char err[256];
    ck_assert_int_eq(fb_func_init(&newer, &src, err, sizeof(err)), 0);
    ck_assert_int_eq(fb_registry_add(reg, &newer, 1), 0);
    t = build_ok(d);
    ck_assert_ptr_eq(match(t, "a", NULL)->targets[0].fn, &newer);
    ck_assert_ptr_eq(match(t, "b", NULL)->targets[0].fn, fn("demo.v@1.9.0"));
    fb_routes_free(t);
    fb_registry_remove(reg, &newer, 1);
}
END_TEST

START_TEST(test_routes_table_owns_its_data)
{
    struct fb_route_spec s;
    struct fb_route_table *t;
    const struct rdef d = { "own", "order.*", "k=v", 3, "demo.log:2, demo.count",
                            FB_MODE_SPLIT, "user" };
    char err[256];

    spec_from(&s, &d);
    ck_assert_int_eq(fb_routes_build(&s, 1, reg, 42, &t, err, sizeof(err)), 0);
    fb_route_spec_clear(&s);   /* the table must not point into it */

    const struct fb_route *r = match(t, "order.x", "k=v");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->name, "own");
    ck_assert_str_eq(r->spec->event, "order.*");
    ck_assert_str_eq(r->split_by, "user");
    ck_assert_int_eq(r->mode, FB_MODE_SPLIT);
    ck_assert_int_eq(r->spec->priority, 3);
    ck_assert_uint_eq(r->ntargets, 2);
    ck_assert_uint_eq(r->targets[0].weight, 2);
    ck_assert_uint_eq(r->targets[1].weight, 1);
    ck_assert_uint_eq(r->total_weight, 3);
    ck_assert_uint_eq(fb_routes_generation(t), 42);
    fb_routes_free(t);
}
END_TEST

START_TEST(test_routes_listing_and_plugin)
{
    const struct rdef d[] = { { "zeta", "a", .to = "demo.log" },
                              { "alpha", "b", .to = "ab.a, ab.b" },
                              { "mid", "c", .to = "ab.b" },
                              { NULL } };
    struct fb_route_table *t = build_ok(d);
    const char *rn = NULL;
    /* fake owners: only pointer identity matters */
    struct fb_plugin *p1 = (struct fb_plugin *)0x1000, *p2 = (struct fb_plugin *)0x2000,
                     *p3 = (struct fb_plugin *)0x3000;

    ck_assert_uint_eq(fb_routes_count(t), 3);
    ck_assert_str_eq(fb_routes_at(t, 0)->name, "alpha");
    ck_assert_str_eq(fb_routes_at(t, 1)->name, "mid");
    ck_assert_str_eq(fb_routes_at(t, 2)->name, "zeta");
    ck_assert_ptr_null(fb_routes_at(t, 3));

    fn("ab.b@1.0.0")->plugin = p1;
    fn("demo.log@1.0.0")->plugin = p2;
    ck_assert(fb_routes_uses_plugin(t, p1, &rn));
    ck_assert_str_eq(rn, "alpha");
    ck_assert(fb_routes_uses_plugin(t, p2, &rn));
    ck_assert_str_eq(rn, "zeta");
    ck_assert(!fb_routes_uses_plugin(t, p3, &rn));
    ck_assert(!fb_routes_uses_plugin(NULL, p1, &rn));
    fn("ab.b@1.0.0")->plugin = NULL;
    fn("demo.log@1.0.0")->plugin = NULL;
    fb_routes_free(t);
    ck_assert_ptr_null(fb_routes_free(NULL));
}
END_TEST

/* ------------------------------------------------------------- selection */

START_TEST(test_routes_select_all)
{
    const struct rdef d[] = { { "fan", "a", .to = "ab.a, ab.b:0, ab.c:7" }, { NULL } };
    struct fb_route_table *t = build_ok(d);
    const struct fb_route *r = match(t, "a", NULL);
    size_t out[FB_MAX_TARGETS];

    /* fan-out ignores weights, even 0 */
    ck_assert_uint_eq(fb_route_select(r, NULL, 0, out), 3);
    ck_assert_uint_eq(out[0], 0);
    ck_assert_uint_eq(out[1], 1);
    ck_assert_uint_eq(out[2], 2);
    ck_assert_ptr_eq(r->targets[out[2]].fn, fn("ab.c@1.0.0"));
    fb_routes_free(t);
}
END_TEST

/* The documented split hash, written independently: FNV-1a 64, splitmix64
 * finaliser, modulo total weight. A stable pick across processes and
 * releases is a promise to operators, so pin the function itself. */
static uint64_t ref_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

START_TEST(test_routes_split_hash_is_documented)
{
    const struct rdef d[] = { { "s", "a", .to = "ab.a:3, ab.b:0, ab.c:4", .mode = FB_MODE_SPLIT,
                                .split_by = "user" },
                              { NULL } };
    struct fb_route_table *t = build_ok(d);
    const struct fb_route *r = match(t, "a", NULL);
    char user[32];

    ck_assert_uint_eq(r->total_weight, 7);
    for (int i = 0; i < 1000; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        uint64_t x = ref_hash(user) % 7;
        size_t want = x < 3 ? 0 : 2;
        ck_assert_uint_eq(fb_route_split_pick(r, user), want);
    }
    fb_routes_free(t);
}
END_TEST

START_TEST(test_routes_split_weights_converge)
{
    const struct rdef d[] = { { "canary", "a", .to = "ab.a:95, ab.b:5", .mode = FB_MODE_SPLIT,
                                .split_by = "user" },
                              { NULL } };
    struct fb_route_table *t = build_ok(d);
    const struct fb_route *r = match(t, "a", NULL);
    size_t counts[2] = { 0 }, out[FB_MAX_TARGETS];
    char user[32];
    enum { USERS = 100000 };

    for (int i = 0; i < USERS; i++) {
        struct fidbus_tag tag[2] = { { "region", "x" }, { "user", user } };
        snprintf(user, sizeof(user), "user-%d", i);
        ck_assert_uint_eq(fb_route_select(r, tag, 2, out), 1);
        counts[out[0]]++;
    }
    double pa = 100.0 * (double)counts[0] / USERS;
    ck_assert_msg(pa > 94.0 && pa < 96.0, "ab.a got %.2f%%", pa);
    fb_routes_free(t);
}
END_TEST

START_TEST(test_routes_split_random_converges)
{
    /* split_by set but the event lacks the tag, and no split_by at all:
     * both fall back to the weighted pseudo-random choice. */
    const struct rdef d[] = { { "r1", "a", .to = "ab.a:70, ab.b:0, ab.c:30", .mode = FB_MODE_SPLIT,
                                .split_by = "user" },
                              { "r2", "b", .to = "ab.a:70, ab.b:0, ab.c:30", .mode = FB_MODE_SPLIT },
                              { NULL } };
    struct fb_route_table *t = build_ok(d);
    enum { N = 100000 };

    for (int k = 0; k < 2; k++) {
        const struct fb_route *r = match(t, k ? "b" : "a", NULL);
        size_t counts[3] = { 0 }, out[FB_MAX_TARGETS];
        struct fidbus_tag tag = { "other", "x" };
        for (int i = 0; i < N; i++) {
            ck_assert_uint_eq(fb_route_select(r, &tag, 1, out), 1);
            counts[out[0]]++;
        }
        ck_assert_uint_eq(counts[1], 0);
        double pa = 100.0 * (double)counts[0] / N;
        ck_assert_msg(pa > 69.0 && pa < 71.0, "ab.a got %.2f%%", pa);
    }
    fb_routes_free(t);
}
END_TEST

START_TEST(test_routes_split_by_stable)
{
    struct rdef d[] = { { "canary", "a", .to = "ab.a:50, ab.b:30, ab.c:20", .mode = FB_MODE_SPLIT,
                          .split_by = "user" },
                        { NULL } };
    struct fb_route_table *t1 = build_ok(d), *t2;
    char user[32];
    enum { USERS = 10000 };
    size_t *first = calloc(USERS, sizeof(*first));
    size_t out[FB_MAX_TARGETS];

    ck_assert_ptr_nonnull(first);
    for (int i = 0; i < USERS; i++) {
        snprintf(user, sizeof(user), "id:%d", i);
        struct fidbus_tag tag = { "user", user };
        first[i] = fb_route_split_pick(match(t1, "a", NULL), user);
        /* same user, same table: same answer every time */
        ck_assert_uint_eq(fb_route_select(match(t1, "a", NULL), &tag, 1, out), 1);
        ck_assert_uint_eq(out[0], first[i]);
    }
    /* a rebuilt table (new generation, new memory) agrees */
    t2 = build_ok(d);
    for (int i = 0; i < USERS; i++) {
        snprintf(user, sizeof(user), "id:%d", i);
        ck_assert_uint_eq(fb_route_split_pick(match(t2, "a", NULL), user), first[i]);
    }
    fb_routes_free(t2);
    fb_routes_free(t1);

    /* 0/100 moves everyone, 100/0 moves everyone back */
    d[0].to = "ab.a:0, ab.b:100";
    t1 = build_ok(d);
    d[0].to = "ab.a:100, ab.b:0";
    t2 = build_ok(d);
    for (int i = 0; i < USERS; i++) {
        snprintf(user, sizeof(user), "id:%d", i);
        ck_assert_uint_eq(fb_route_split_pick(match(t1, "a", NULL), user), 1);
        ck_assert_uint_eq(fb_route_split_pick(match(t2, "a", NULL), user), 0);
    }
    fb_routes_free(t2);
    fb_routes_free(t1);
    free(first);
}
END_TEST

static Suite *routes_suite(void)
{
    Suite *s = suite_create("routes");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_routes_precedence, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_test(tc, test_routes_precedence_input_order);
    tcase_add_test(tc, test_routes_many);
    tcase_add_test(tc, test_routes_build_duplicate_name);
    tcase_add_test(tc, test_routes_build_unknown_function);
    tcase_add_test(tc, test_routes_build_pinned_missing);
    tcase_add_test(tc, test_routes_build_same_function_twice);
    tcase_add_test(tc, test_routes_build_signature);
    tcase_add_test(tc, test_routes_build_invalid);
    tcase_add_test(tc, test_routes_latest_vs_pinned);
    tcase_add_test(tc, test_routes_table_owns_its_data);
    tcase_add_test(tc, test_routes_listing_and_plugin);
    tcase_add_test(tc, test_routes_select_all);
    tcase_add_test(tc, test_routes_split_hash_is_documented);
    tcase_add_test(tc, test_routes_split_weights_converge);
    tcase_add_test(tc, test_routes_split_random_converges);
    tcase_add_test(tc, test_routes_split_by_stable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(routes_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
