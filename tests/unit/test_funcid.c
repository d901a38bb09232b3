/*
 * Unit tests for funcID, sighash, semantic versions and name validation
 * (lib/funcid.c, <fidbus/funcid.h>). The three vectors are fixed: any
 * other implementation (a client in another language, a remote peer) must
 * produce the same IDs.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include <fidbus/funcid.h>

START_TEST(test_funcid_vectors)
{
    static const struct {
        const char *ns, *name, *version, *canonical, *hex;
    } v[] = {
        {"demo", "log", "1.0.0", "demo.log@1.0.0", "db123dc2ef959d8a"},
        {"demo", "count", "1.0.0", "demo.count@1.0.0", "403554bc72d71ba9"},
        {"acme", "audit", "2.1.0", "acme.audit@2.1.0", "a2297bde37fbdeac"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char canonical[FIDBUS_CANONICAL_MAX], hex[FIDBUS_FUNCID_HEX];
        uint64_t id = 0;
        ck_assert_int_eq(
            fidbus_funcid_make(v[i].ns, v[i].name, v[i].version, canonical, &id), 0);
        ck_assert_str_eq(canonical, v[i].canonical);
        fidbus_funcid_hex(id, hex);
        ck_assert_str_eq(hex, v[i].hex);
        ck_assert_uint_eq(fidbus_funcid(v[i].canonical), id);
    }
    ck_assert_uint_eq(fidbus_funcid("demo.log@1.0.0"), UINT64_C(0xdb123dc2ef959d8a));
}
END_TEST

START_TEST(test_funcid_make_rejects_bad_parts)
{
    char canonical[FIDBUS_CANONICAL_MAX];
    uint64_t id;
    ck_assert_int_eq(fidbus_funcid_make("demo", "log", "1.0", canonical, &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_make("de.mo", "log", "1.0.0", canonical, &id),
                     -EINVAL);
    ck_assert_int_eq(fidbus_funcid_make("demo", "", "1.0.0", canonical, &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_make("demo", "l@g", "1.0.0", canonical, &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_make(NULL, "log", "1.0.0", canonical, &id), -EINVAL);

    /* The longest legal parts fit the canonical buffer exactly. */
    char n64[65], ver[FIDBUS_VERSION_MAX + 1];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    strcpy(ver, "4294967295.4294967295.4294967295");
    ck_assert_int_eq(fidbus_funcid_make(n64, n64, ver, canonical, &id), 0);
    ck_assert_uint_eq(strlen(canonical), 64 + 1 + 64 + 1 + strlen(ver));
}
END_TEST

START_TEST(test_funcid_name_validation)
{
    ck_assert(fidbus_name_valid("a"));
    ck_assert(fidbus_name_valid("Order_Created-2"));
    ck_assert(!fidbus_name_valid(""));
    ck_assert(!fidbus_name_valid(NULL));
    ck_assert(!fidbus_name_valid("a.b"));
    ck_assert(!fidbus_name_valid("a b"));
    ck_assert(!fidbus_name_valid("é"));
    char s[66];
    memset(s, 'x', 65);
    s[64] = '\0';
    ck_assert(fidbus_name_valid(s));
    s[64] = 'x';
    s[65] = '\0';
    ck_assert(!fidbus_name_valid(s));
}
END_TEST

START_TEST(test_funcid_semver_parse)
{
    struct fidbus_semver v;
    ck_assert_int_eq(fidbus_semver_parse("1.2.3", &v), 0);
    ck_assert_uint_eq(v.major, 1);
    ck_assert_uint_eq(v.minor, 2);
    ck_assert_uint_eq(v.patch, 3);
    ck_assert_int_eq(fidbus_semver_parse("0.0.0", &v), 0);
    ck_assert_int_eq(fidbus_semver_parse("10.20.4294967295", &v), 0);
    ck_assert_uint_eq(v.patch, 4294967295u);

    static const char *const bad[] = {
        "",       "1",         "1.2",     "1.2.3.4",        "01.2.3", "1.02.3",
        "1.2.03", "1.2.3-rc1", "1.2.3+b", "v1.2.3",         "1..3",   "1.2.",
        " 1.2.3", "1.2.3 ",    "-1.2.3",  "4294967296.0.0", "1.2.x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(fidbus_semver_parse(bad[i], &v) == -EINVAL, "accepted '%s'",
                      bad[i]);
    ck_assert_int_eq(fidbus_semver_parse(NULL, &v), -EINVAL);
}
END_TEST

START_TEST(test_funcid_semver_cmp)
{
    struct fidbus_semver a, b;
    static const char *const order[] = {"0.0.1", "0.1.0",  "0.9.9", "0.10.0",
                                        "1.0.0", "1.0.10", "2.0.0", "10.0.0"};
    size_t n = sizeof(order) / sizeof(order[0]);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            ck_assert_int_eq(fidbus_semver_parse(order[i], &a), 0);
            ck_assert_int_eq(fidbus_semver_parse(order[j], &b), 0);
            int c = fidbus_semver_cmp(&a, &b);
            if (i < j)
                ck_assert_int_lt(c, 0);
            else if (i > j)
                ck_assert_int_gt(c, 0);
            else
                ck_assert_int_eq(c, 0);
        }
    }
}
END_TEST

START_TEST(test_funcid_hex_round_trip)
{
    static const uint64_t ids[] = {0, 1, UINT64_C(0xdb123dc2ef959d8a), UINT64_MAX,
                                   UINT64_C(0x0000000100000000)};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char hex[FIDBUS_FUNCID_HEX];
        uint64_t back = 42;
        fidbus_funcid_hex(ids[i], hex);
        ck_assert_uint_eq(strlen(hex), 16);
        ck_assert_int_eq(fidbus_funcid_parse(hex, &back), 0);
        ck_assert_uint_eq(back, ids[i]);
    }
    uint64_t id;
    ck_assert_int_eq(fidbus_funcid_parse("DB123DC2EF959D8A", &id), 0);
    ck_assert_uint_eq(id, UINT64_C(0xdb123dc2ef959d8a));
    ck_assert_int_eq(fidbus_funcid_parse("db123dc2ef959d8", &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_parse("db123dc2ef959d8a0", &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_parse("db123dc2ef959d8g", &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_parse("", &id), -EINVAL);
    ck_assert_int_eq(fidbus_funcid_parse(NULL, &id), -EINVAL);
}
END_TEST

START_TEST(test_funcid_sighash)
{
    uint8_t h[FIDBUS_SIGHASH_LEN], back[FIDBUS_SIGHASH_LEN];
    char hex[FIDBUS_SIGHASH_HEX];

    /* SHA-256("event:any"), computed independently (sha256sum). */
    fidbus_sighash("event:any", h);
    fidbus_sighash_hex(h, hex);
    ck_assert_str_eq(hex,
                     "75c909e5a6de13d4f211c25ef95da0a710aa5082788fb047e2840d3e4ce55b31");
    ck_assert_int_eq(fidbus_sighash_parse(hex, back), 0);
    ck_assert_mem_eq(back, h, sizeof(h));

    fidbus_sighash("order.created/v2 -> ok", h);
    fidbus_sighash_hex(h, hex);
    ck_assert_str_eq(hex,
                     "efe0675ea18694620016087e317844673e3b7e6ec81f864cd53588b3f02f399e");

    /* Upper case parses to the same bytes; wrong lengths and digits fail. */
    char upper[FIDBUS_SIGHASH_HEX];
    for (size_t i = 0; i < sizeof(upper); i++)
        upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    ck_assert_int_eq(fidbus_sighash_parse(upper, back), 0);
    ck_assert_mem_eq(back, h, sizeof(h));
    hex[63] = '\0';
    ck_assert_int_eq(fidbus_sighash_parse(hex, back), -EINVAL);
    ck_assert_int_eq(fidbus_sighash_parse("zz", back), -EINVAL);
    ck_assert_int_eq(fidbus_sighash_parse(NULL, back), -EINVAL);
}
END_TEST

Suite *funcid_suite(void)
{
    Suite *s = suite_create("funcid");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_funcid_vectors);
    tcase_add_test(tc, test_funcid_make_rejects_bad_parts);
    tcase_add_test(tc, test_funcid_name_validation);
    tcase_add_test(tc, test_funcid_semver_parse);
    tcase_add_test(tc, test_funcid_semver_cmp);
    tcase_add_test(tc, test_funcid_hex_round_trip);
    tcase_add_test(tc, test_funcid_sighash);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(funcid_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
