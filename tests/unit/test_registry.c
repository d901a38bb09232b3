/*
 * Unit tests for the function registry (daemon/routing/registry.c): fb_func_init,
 * funcID conflict detection against the registry and inside one batch,
 * lookup, latest-by-semver and removal.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "routing/registry.h"

static int nop(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static void mk(struct fb_func *f, const char *ns, const char *name, const char *ver)
{
    struct fidbus_function src = {
        .ns = ns,
        .name = name,
        .version = ver,
        .signature = "sig",
        .handle = nop,
    };
    char err[256];

    ck_assert_int_eq(fb_func_init(f, &src, err, sizeof(err)), 0);
}

START_TEST(test_registry_func_init)
{
    struct fb_func f;
    uint8_t want[FIDBUS_SIGHASH_LEN];
    struct fidbus_function src = {
        .ns = "demo",
        .name = "log",
        .version = "1.0.0",
        .signature = "event:any",
        .flags = FIDBUS_FN_BLOCKING,
        .handle = nop,
    };
    char err[256] = "";

    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), 0);
    ck_assert_uint_eq(f.id, 0xdb123dc2ef959d8aull);
    ck_assert_str_eq(f.canonical, "demo.log@1.0.0");
    ck_assert_str_eq(f.ns, "demo");
    ck_assert_str_eq(f.name, "log");
    ck_assert_str_eq(f.version, "1.0.0");
    ck_assert_uint_eq(f.semver.major, 1);
    ck_assert_uint_eq(f.flags, FIDBUS_FN_BLOCKING);
    ck_assert_ptr_eq(f.handle, nop);
    fidbus_sighash("event:any", want);
    ck_assert_mem_eq(f.sighash, want, sizeof(want));
    ck_assert_uint_eq(fb_striped_sum(&f.calls), 0);
}
END_TEST

START_TEST(test_registry_func_init_invalid)
{
    struct fb_func f;
    char err[256];
    struct fidbus_function src = {
        .ns = "de mo", .name = "log", .version = "1.0.0", .signature = "", .handle = nop};

    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "namespace"));

    src.ns = "demo";
    src.name = "";
    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "name"));

    src.name = "log";
    src.version = "1.0";
    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "version"));

    src.version = "01.0.0";
    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), FIDBUS_INVALID);

    src.version = "1.0.0";
    src.handle = NULL;
    ck_assert_int_eq(fb_func_init(&f, &src, err, sizeof(err)), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "demo.log@1.0.0"));
}
END_TEST

START_TEST(test_registry_lookup_and_order)
{
    struct fb_registry *r;
    struct fb_func f[3];

    mk(&f[0], "demo", "log", "1.0.0");
    mk(&f[1], "demo", "count", "1.0.0");
    mk(&f[2], "acme", "audit", "2.1.0");
    ck_assert_int_eq(fb_registry_new(&r), 0);
    ck_assert_int_eq(fb_registry_check(r, f, 3, NULL, 0), 0);
    ck_assert_int_eq(fb_registry_add(r, f, 3), 0);
    ck_assert_uint_eq(fb_registry_count(r), 3);

    ck_assert_ptr_eq(fb_registry_lookup(r, 0xdb123dc2ef959d8aull), &f[0]);
    ck_assert_ptr_eq(fb_registry_lookup(r, 0x403554bc72d71ba9ull), &f[1]);
    ck_assert_ptr_eq(fb_registry_lookup(r, 0xa2297bde37fbdeacull), &f[2]);
    ck_assert_ptr_null(fb_registry_lookup(r, 0x1234));

    /* listings come out in funcID order */
    ck_assert_ptr_eq(fb_registry_at(r, 0), &f[1]);
    ck_assert_ptr_eq(fb_registry_at(r, 1), &f[2]);
    ck_assert_ptr_eq(fb_registry_at(r, 2), &f[0]);
    ck_assert_ptr_null(fb_registry_at(r, 3));
    r = fb_registry_free(r);
    ck_assert_ptr_null(r);
    ck_assert_ptr_null(fb_registry_free(NULL));
}
END_TEST

START_TEST(test_registry_conflict_same_canonical)
{
    struct fb_registry *r;
    struct fb_func a, b;
    char err[512] = "";

    mk(&a, "demo", "log", "1.0.0");
    mk(&b, "demo", "log", "1.0.0");
    ck_assert_int_eq(fb_registry_new(&r), 0);
    ck_assert_int_eq(fb_registry_add(r, &a, 1), 0);

    ck_assert_int_eq(fb_registry_check(r, &b, 1, err, sizeof(err)), FIDBUS_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "demo.log@1.0.0"));
    ck_assert_ptr_nonnull(strstr(err, "db123dc2ef959d8a"));
    ck_assert_ptr_nonnull(strstr(err, "already registered"));
    ck_assert_ptr_null(strstr(err, "collision"));
    fb_registry_free(r);
}
END_TEST

START_TEST(test_registry_conflict_collision)
{
    struct fb_registry *r;
    struct fb_func a, b;
    char err[512] = "";

    /* A real SHA-256 prefix collision cannot be produced in a test, so
     * force one: b keeps its own canonical name but takes a's funcID. */
    mk(&a, "demo", "log", "1.0.0");
    mk(&b, "acme", "audit", "2.1.0");
    b.id = a.id;
    ck_assert_int_eq(fb_registry_new(&r), 0);
    ck_assert_int_eq(fb_registry_add(r, &a, 1), 0);

    ck_assert_int_eq(fb_registry_check(r, &b, 1, err, sizeof(err)), FIDBUS_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "collision"));
    ck_assert_ptr_nonnull(strstr(err, "demo.log@1.0.0"));
    ck_assert_ptr_nonnull(strstr(err, "acme.audit@2.1.0"));
    ck_assert_ptr_nonnull(strstr(err, "db123dc2ef959d8a"));
    ck_assert_ptr_null(strstr(err, "already registered"));
    fb_registry_free(r);
}
END_TEST

START_TEST(test_registry_conflict_in_batch)
{
    struct fb_registry *r;
    struct fb_func batch[3];
    char err[512] = "";

    ck_assert_int_eq(fb_registry_new(&r), 0);

    mk(&batch[0], "demo", "log", "1.0.0");
    mk(&batch[1], "demo", "count", "1.0.0");
    mk(&batch[2], "demo", "log", "1.0.0");
    ck_assert_int_eq(fb_registry_check(r, batch, 3, err, sizeof(err)), FIDBUS_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "demo.log@1.0.0"));
    ck_assert_ptr_nonnull(strstr(err, "twice"));

    mk(&batch[2], "acme", "audit", "2.1.0");
    batch[2].id = batch[1].id;
    ck_assert_int_eq(fb_registry_check(r, batch, 3, err, sizeof(err)), FIDBUS_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "collision"));
    ck_assert_ptr_nonnull(strstr(err, "demo.count@1.0.0"));
    ck_assert_ptr_nonnull(strstr(err, "acme.audit@2.1.0"));

    /* a batch with distinct ids is fine, and nothing was added by checks */
    mk(&batch[2], "acme", "audit", "2.1.0");
    ck_assert_int_eq(fb_registry_check(r, batch, 3, err, sizeof(err)), 0);
    ck_assert_uint_eq(fb_registry_count(r), 0);
    fb_registry_free(r);
}
END_TEST

START_TEST(test_registry_latest_semver)
{
    struct fb_registry *r;
    struct fb_func f[5];

    mk(&f[0], "demo", "log", "1.9.0");
    mk(&f[1], "demo", "log", "1.10.0");
    mk(&f[2], "demo", "log", "1.2.30");
    mk(&f[3], "demo", "logx", "9.0.0"); /* other name, not a candidate */
    mk(&f[4], "demox", "log", "9.0.0"); /* other namespace */
    ck_assert_int_eq(fb_registry_new(&r), 0);
    ck_assert_int_eq(fb_registry_add(r, f, 5), 0);

    /* numeric, not lexical: 1.10.0 > 1.9.0 > 1.2.30 */
    ck_assert_ptr_eq(fb_registry_latest(r, "demo", "log"), &f[1]);
    ck_assert_ptr_eq(fb_registry_latest(r, "demo", "logx"), &f[3]);
    ck_assert_ptr_null(fb_registry_latest(r, "demo", "nope"));
    ck_assert_ptr_null(fb_registry_latest(r, "Demo", "log"));

    fb_registry_remove(r, &f[1], 1);
    ck_assert_ptr_eq(fb_registry_latest(r, "demo", "log"), &f[0]);
    fb_registry_free(r);
}
END_TEST

START_TEST(test_registry_remove)
{
    struct fb_registry *r;
    struct fb_func a[2], b[1], stranger;

    mk(&a[0], "demo", "log", "1.0.0");
    mk(&a[1], "demo", "count", "1.0.0");
    mk(&b[0], "acme", "audit", "2.1.0");
    mk(&stranger, "demo", "count", "1.0.0"); /* same id as a[1], never added */
    ck_assert_int_eq(fb_registry_new(&r), 0);
    ck_assert_int_eq(fb_registry_add(r, a, 2), 0);
    ck_assert_int_eq(fb_registry_add(r, b, 1), 0);
    ck_assert_uint_eq(fb_registry_count(r), 3);

    /* removal is by pointer identity: an equal entry is not ours */
    fb_registry_remove(r, &stranger, 1);
    ck_assert_uint_eq(fb_registry_count(r), 3);
    ck_assert_ptr_eq(fb_registry_lookup(r, a[1].id), &a[1]);

    fb_registry_remove(r, a, 2);
    ck_assert_uint_eq(fb_registry_count(r), 1);
    ck_assert_ptr_null(fb_registry_lookup(r, a[0].id));
    ck_assert_ptr_null(fb_registry_lookup(r, a[1].id));
    ck_assert_ptr_eq(fb_registry_lookup(r, b[0].id), &b[0]);

    /* after removal the same function can be registered again */
    ck_assert_int_eq(fb_registry_check(r, a, 2, NULL, 0), 0);
    ck_assert_int_eq(fb_registry_add(r, a, 2), 0);
    ck_assert_uint_eq(fb_registry_count(r), 3);
    fb_registry_remove(r, b, 1);
    fb_registry_remove(r, b, 1); /* twice is harmless */
    ck_assert_uint_eq(fb_registry_count(r), 2);
    fb_registry_free(r);
}
END_TEST

START_TEST(test_registry_many)
{
    enum { N = 500 };
    struct fb_registry *r;
    struct fb_func *f = calloc(N, sizeof(*f));
    char name[32];

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fb_registry_new(&r), 0);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "fn%d", i);
        mk(&f[i], "bulk", name, "1.0.0");
        ck_assert_int_eq(fb_registry_check(r, &f[i], 1, NULL, 0), 0);
        ck_assert_int_eq(fb_registry_add(r, &f[i], 1), 0);
    }
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(fb_registry_lookup(r, f[i].id), &f[i]);
    for (size_t i = 1; i < fb_registry_count(r); i++)
        ck_assert_uint_lt(fb_registry_at(r, i - 1)->id, fb_registry_at(r, i)->id);
    fb_registry_free(r);
    free(f);
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_registry_func_init);
    tcase_add_test(tc, test_registry_func_init_invalid);
    tcase_add_test(tc, test_registry_lookup_and_order);
    tcase_add_test(tc, test_registry_conflict_same_canonical);
    tcase_add_test(tc, test_registry_conflict_collision);
    tcase_add_test(tc, test_registry_conflict_in_batch);
    tcase_add_test(tc, test_registry_latest_semver);
    tcase_add_test(tc, test_registry_remove);
    tcase_add_test(tc, test_registry_many);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
