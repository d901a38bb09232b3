/*
 * Unit tests of the three-way rule of config.reload and of a start after
 * an edit (daemon/config/merge.h): every combination of BASE, FILE and
 * RUNNING for one route -- absent, one version, another version -- gives
 * the item, the change and the set the rule says; plugins compare by
 * path and keys; the set keeps RUNNING's order with FILE's additions
 * after it.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/merge.h"
#include "config/route_spec.h"

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Route `name` for events `event` to fidbus.log. */
static void route(struct fb_route_spec *s, const char *name, const char *event)
{
    memset(s, 0, sizeof *s);
    s->name = xstrdup(name);
    s->event = xstrdup(event);
    s->nto = 1;
    s->to = calloc(1, sizeof *s->to);
    s->to[0] = (struct fb_target_spec){xstrdup("fidbus"), xstrdup("log"), NULL, 1, false};
}

static void plugin(struct fb_plugin_conf *pc, const char *name, const char *path,
                   const char *key, const char *value)
{
    memset(pc, 0, sizeof *pc);
    pc->name = xstrdup(name);
    pc->path = xstrdup(path);
    pc->nkeys = key ? 2 : 1;
    pc->keys = calloc(2, sizeof *pc->keys);
    pc->keys[0] = (struct fb_kv){xstrdup("path"), xstrdup(path)};
    if (key)
        pc->keys[1] = (struct fb_kv){xstrdup(key), xstrdup(value)};
}

/* A set of one route "x" with event v (none when v is NULL). */
static void one(struct fb_runset *rs, const char *v)
{
    memset(rs, 0, sizeof *rs);
    if (!v)
        return;
    rs->routes = calloc(1, sizeof *rs->routes);
    route(&rs->routes[0], "x", v);
    rs->nroutes = 1;
}

static bool eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* _i: the combination, base-3 digits of BASE, FILE, RUNNING (0: absent,
 * 1: "a.x", 2: "b.x"). */
START_TEST(test_merge_every_combination)
{
    static const char *const v[] = {NULL, "a.x", "b.x"};
    const char *b = v[_i / 9], *f = v[(_i / 3) % 3], *r = v[_i % 3];
    struct fb_runset base, file, run;
    one(&base, b);
    one(&file, f);
    one(&run, r);
    struct fb_merge m;
    ck_assert_int_eq(fb_merge_run(&base, &file, &run, &m), 0);

    /* the rule, as proto/control.md states it */
    const char *want = r;
    enum fb_merge_why why;
    if (eq(f, b)) {
        why = eq(r, b) ? FB_MERGE_SAME : FB_MERGE_RUNTIME;
    } else if (eq(r, f)) {
        why = FB_MERGE_SAME;
    } else {
        why = eq(r, b) ? FB_MERGE_APPLIED : FB_MERGE_OVERRIDE;
        want = f;
    }
    if (!f && !r) {
        ck_assert_uint_eq(m.nroutes, 0);
    } else {
        ck_assert_uint_eq(m.nroutes, 1);
        ck_assert_str_eq(m.routes[0].name, "x");
        ck_assert_msg(m.routes[0].why == why, "b=%s f=%s r=%s: why %d, want %d", b, f, r,
                      (int)m.routes[0].why, (int)why);
        enum fb_merge_change ch = eq(want, r) ? FB_MERGE_NONE
                                  : !r        ? FB_MERGE_ADD
                                  : !want     ? FB_MERGE_DELETE
                                              : FB_MERGE_CHANGE;
        ck_assert_int_eq(m.routes[0].change, ch);
        ck_assert_uint_eq(m.nchanges, ch != FB_MERGE_NONE);
    }
    ck_assert_uint_eq(m.nedits, !eq(f, b));
    ck_assert_uint_eq(m.set.nroutes, want != NULL);
    if (want)
        ck_assert_str_eq(m.set.routes[0].event, want);
    fb_merge_clear(&m);
    fb_runset_clear(&base);
    fb_runset_clear(&file);
    fb_runset_clear(&run);
}
END_TEST

/* Plugins by path and keys; the set in RUNNING's order, a changed item in
 * place, FILE's additions last in FILE's order; BASE may be NULL. */
START_TEST(test_merge_plugins_and_order)
{
    struct fb_runset base = {0}, file = {0}, run = {0};
    base.plugins = calloc(3, sizeof *base.plugins);
    plugin(&base.plugins[0], "log", "/p/log.so", "file", "-");
    plugin(&base.plugins[1], "count", "/p/count.so", NULL, NULL);
    plugin(&base.plugins[2], "gone", "/p/gone.so", NULL, NULL);
    base.nplugins = 3;
    file.plugins = calloc(4, sizeof *file.plugins);
    plugin(&file.plugins[0], "new2", "/p/n2.so", NULL, NULL);
    plugin(&file.plugins[1], "log", "/p/log.so", "file", "/var/log/x"); /* edited */
    plugin(&file.plugins[2], "count", "/p/count.so", NULL, NULL);
    plugin(&file.plugins[3], "new1", "/p/n1.so", NULL, NULL);
    file.nplugins = 4;
    run.plugins = calloc(4, sizeof *run.plugins);
    plugin(&run.plugins[0], "count", "/p/count.so", NULL, NULL);
    plugin(&run.plugins[1], "extra", "/p/extra.so", NULL, NULL); /* runtime */
    plugin(&run.plugins[2], "log", "/p/log.so", "file", "-");
    plugin(&run.plugins[3], "gone", "/p/gone.so", NULL, NULL);
    run.nplugins = 4;

    struct fb_merge m;
    ck_assert_int_eq(fb_merge_run(&base, &file, &run, &m), 0);
    const char *order[] = {"count", "extra", "log", "new2", "new1"};
    ck_assert_uint_eq(m.set.nplugins, 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_str_eq(m.set.plugins[i].name, order[i]);
    ck_assert_str_eq(m.set.plugins[2].keys[1].value, "/var/log/x");
    const struct fb_merge_item *it = fb_merge_find(m.plugins, m.nplugins, "extra");
    ck_assert(it && it->why == FB_MERGE_RUNTIME && it->change == FB_MERGE_NONE);
    it = fb_merge_find(m.plugins, m.nplugins, "gone");
    ck_assert(it && it->why == FB_MERGE_APPLIED && it->change == FB_MERGE_DELETE);
    it = fb_merge_find(m.plugins, m.nplugins, "log");
    ck_assert(it && it->why == FB_MERGE_APPLIED && it->change == FB_MERGE_CHANGE);
    ck_assert_uint_eq(m.nchanges, 4); /* log, gone, new1, new2 */
    fb_merge_clear(&m);

    /* no BASE (nothing applied yet): every file item counts as an edit */
    ck_assert_int_eq(fb_merge_run(NULL, &file, &run, &m), 0);
    ck_assert_uint_eq(m.nedits, 4);
    it = fb_merge_find(m.plugins, m.nplugins, "gone");
    ck_assert(it && it->why == FB_MERGE_RUNTIME);
    fb_merge_clear(&m);
    fb_runset_clear(&base);
    fb_runset_clear(&file);
    fb_runset_clear(&run);
}
END_TEST

static Suite *merge_suite(void)
{
    Suite *s = suite_create("merge");
    TCase *tc = tcase_create("merge");
    tcase_add_loop_test(tc, test_merge_every_combination, 0, 27);
    tcase_add_test(tc, test_merge_plugins_and_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(merge_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
