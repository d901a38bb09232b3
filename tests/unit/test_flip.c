/*
 * The atomic flip under load (docs/architecture.md, "The change transaction").
 *
 * Four reader threads dispatch events the way the daemon's I/O workers do
 * (read lock, load the slot with fb_routes_deref, match, select, call
 * every chosen target, unlock) while a writer thread builds and publishes thousands of
 * tables that alternate between two route sets sending the same events to
 * different functions: odd generations to set A, even ones to set B.
 *
 * What must hold: every event reaches exactly the handlers one table says
 * (fan-out: both targets, split: one) and no others, all of them from the
 * same generation; generations never go backwards in one reader; and no
 * freed table is touched (ASan reports it; in plain builds freed tables
 * are zeroed, which the checks below would see as generation 0 or a route
 * without targets). The TSan build checks the publication and grace-period
 * ordering with FB_ROUTES_READ_DONE.
 *
 * FIDBUS_FLIP_COUNT sets the number of flips (default 5000).
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu/urcu-memb.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "routing/registry.h"
#include "config/route_spec.h"
#include "routing/routes.h"

#define NREADERS 4
#define NFUNCS 4        /* a1 a2 (set A), b1 b2 (set B) */
#define MIN_EVENTS 1000 /* per reader, even if the writer is quick */

/* Per function: which set it belongs to and how often it ran. */
struct fctx {
    int set; /* 1 = A (odd generations), 0 = B (even) */
    _Atomic uint64_t hits;
};

static struct fctx ctxs[NFUNCS];
static struct fb_func funcs[NFUNCS];
static struct fb_registry *reg;
static struct fb_route_table *slot;
static atomic_bool writer_done;

struct reader {
    pthread_t thread;
    unsigned id;
    uint64_t sent_fan;   /* events sent to the fan-out route */
    uint64_t sent_split; /* events sent to the split route */
    uint64_t bad_set;    /* a target from the wrong generation */
    uint64_t bad_count;  /* wrong number of targets / no route */
    uint64_t bad_order;  /* generation went backwards */
    uint64_t first_gen, last_gen;
    uint64_t gens_seen; /* generation changes observed */
};

static int handler(void *ctx, const struct fidbus_event *ev)
{
    struct fctx *c = ctx;

    atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
    /* the handler learns the generation that routed it from the event */
    return (int)(ev->generation % 2) == c->set ? 0 : -1;
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    char user[32];
    size_t out[FB_MAX_TARGETS];
    uint64_t i = 0;

    urcu_memb_register_thread();
    for (;;) {
        /* Read writer_done before the event, so the last event after it
         * flips is routed by the final table. */
        bool last =
            atomic_load_explicit(&writer_done, memory_order_acquire) && i >= MIN_EVENTS;
        bool split = i % 2;
        const char *id = split ? "order.split" : "order.created";
        snprintf(user, sizeof(user), "u%u-%llu", rd->id, (unsigned long long)i);
        struct fidbus_tag tags[2] = {{"region", "cn-east"}, {"user", user}};

        urcu_memb_read_lock();
        const struct fb_route_table *t = fb_routes_deref(&slot);
        uint64_t gen = fb_routes_generation(t);
        const struct fb_route *r = fb_routes_match(t, id, strlen(id), tags, 2);
        struct fidbus_event ev = {.id = id, .tags = tags, .ntags = 2, .generation = gen};

        if (gen < rd->last_gen)
            rd->bad_order++;
        if (gen != rd->last_gen)
            rd->gens_seen++;
        if (rd->first_gen == 0)
            rd->first_gen = gen;
        rd->last_gen = gen;

        size_t n = r ? fb_route_select(r, tags, 2, out) : 0;
        if (n != (split ? 1u : 2u))
            rd->bad_count++;
        for (size_t k = 0; k < n; k++) {
            struct fb_func *f = r->targets[out[k]].fn;
            fb_striped_add(&f->calls, 1);
            if (f->handle(f->ctx, &ev) != 0)
                rd->bad_set++;
        }
        FB_ROUTES_READ_DONE();
        urcu_memb_read_unlock();

        if (split)
            rd->sent_split++;
        else
            rd->sent_fan++;
        i++;
        if (last)
            break;
    }
    urcu_memb_unregister_thread();
    return NULL;
}

struct writer {
    pthread_t thread;
    unsigned flips;
    uint64_t final_gen;
    double seconds;
    int rc;
    char err[256];
};

static void set_specs(struct fb_route_spec s[2], const char *fan_to, const char *split_to)
{
    char err[256];

    memset(s, 0, 2 * sizeof(*s));
    s[0].name = strdup("fan");
    s[0].event = strdup("order.*");
    ck_assert_int_eq(fb_tags_parse_list("region=*", &s[0], err, sizeof(err)), 0);
    ck_assert_int_eq(fb_targets_parse_list(fan_to, &s[0], err, sizeof(err)), 0);
    s[1].name = strdup("canary");
    s[1].event = strdup("order.split");
    s[1].mode = FB_MODE_SPLIT;
    s[1].split_by = strdup("user");
    ck_assert_int_eq(fb_targets_parse_list(split_to, &s[1], err, sizeof(err)), 0);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct fb_route_spec spec_a[2], spec_b[2];

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    double t0 = now_s();

    /* Generation 1 (set A) is already published. */
    for (unsigned i = 0; i < w->flips; i++) {
        uint64_t gen = i + 2;
        struct fb_route_table *t;

        w->rc = fb_routes_build(gen % 2 ? spec_a : spec_b, 2, reg, gen, &t, w->err,
                                sizeof(w->err));
        if (w->rc)
            break;
        fb_routes_free(fb_routes_publish(&slot, t));
        w->final_gen = gen;
    }
    w->seconds = now_s() - t0;
    atomic_store_explicit(&writer_done, true, memory_order_release);
    return NULL;
}

START_TEST(test_flip_concurrent)
{
    static const char *const names[NFUNCS][2] = {
        {"a", "one"},
        {"a", "two"},
        {"b", "one"},
        {"b", "two"},
    };
    struct reader rd[NREADERS];
    struct writer w = {.flips = 5000};
    const char *env = getenv("FIDBUS_FLIP_COUNT");
    char err[256];

    if (env && atoi(env) > 0)
        w.flips = (unsigned)atoi(env);

    ck_assert_int_eq(fb_registry_new(&reg), 0);
    for (int i = 0; i < NFUNCS; i++) {
        struct fidbus_function src = {.ns = names[i][0],
                                      .name = names[i][1],
                                      .version = "1.0.0",
                                      .signature = "s",
                                      .handle = handler};
        ck_assert_int_eq(fb_func_init(&funcs[i], &src, err, sizeof(err)), 0);
        ctxs[i].set = i < 2;
        funcs[i].ctx = &ctxs[i];
    }
    ck_assert_int_eq(fb_registry_add(reg, funcs, NFUNCS), 0);
    set_specs(spec_a, "a.one, a.two", "a.one:30, a.two:70");
    set_specs(spec_b, "b.one, b.two", "b.one:70, b.two:30");

    struct fb_route_table *t0;
    ck_assert_msg(fb_routes_build(spec_a, 2, reg, 1, &t0, err, sizeof(err)) == 0, "%s",
                  err);
    rcu_assign_pointer(slot, t0);
    atomic_store(&writer_done, false);

    memset(rd, 0, sizeof(rd));
    for (unsigned i = 0; i < NREADERS; i++) {
        rd[i].id = i;
        ck_assert_int_eq(pthread_create(&rd[i].thread, NULL, reader_main, &rd[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
    for (unsigned i = 0; i < NREADERS; i++)
        ck_assert_int_eq(pthread_join(rd[i].thread, NULL), 0);
    ck_assert_msg(w.rc == 0, "build failed: %s", w.err);

    uint64_t fan = 0, split = 0, calls = 0, hits = 0, gens = 0;
    for (unsigned i = 0; i < NREADERS; i++) {
        ck_assert_uint_eq(rd[i].bad_set, 0);
        ck_assert_uint_eq(rd[i].bad_count, 0);
        ck_assert_uint_eq(rd[i].bad_order, 0);
        ck_assert_uint_ge(rd[i].first_gen, 1);
        /* the event after the writer finished saw the final table */
        ck_assert_uint_eq(rd[i].last_gen, w.final_gen);
        fan += rd[i].sent_fan;
        split += rd[i].sent_split;
        gens += rd[i].gens_seen;
    }
    for (int i = 0; i < NFUNCS; i++) {
        calls += fb_striped_sum(&funcs[i].calls);
        hits += atomic_load(&ctxs[i].hits);
    }
    /* exactly once: fan-out events reached two handlers, split events one */
    ck_assert_uint_eq(calls, 2 * fan + split);
    ck_assert_uint_eq(hits, calls);
    ck_assert_uint_eq(w.final_gen, (uint64_t)w.flips + 1);

    fprintf(stderr,
            "flip: %u flips in %.2f s (%.0f flips/s), %llu events, "
            "%llu generation changes seen by readers\n",
            w.flips, w.seconds, w.flips / (w.seconds > 0 ? w.seconds : 1e-9),
            (unsigned long long)(fan + split), (unsigned long long)gens);

    fb_routes_free(fb_routes_publish(&slot, NULL)); /* frees the last table */
    ck_assert_ptr_null(slot);
    fb_route_spec_clear(&spec_a[0]);
    fb_route_spec_clear(&spec_a[1]);
    fb_route_spec_clear(&spec_b[0]);
    fb_route_spec_clear(&spec_b[1]);
    reg = fb_registry_free(reg);
}
END_TEST

static Suite *flip_suite(void)
{
    Suite *s = suite_create("flip");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_flip_concurrent);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(flip_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
