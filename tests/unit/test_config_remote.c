/*
 * Unit tests for the [remote NS] sections of fidbusd.conf
 * (daemon/config/config_remote.c): values and defaults, users and groups
 * by name or number, every error naming FILE:LINE, the section that
 * governs a namespace, and the text config.export writes reading back to
 * the same sections. Run under ASan too, for the error paths' frees.
 */
#include <check.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "unit/config_check.h"

START_TEST(test_config_remote_values)
{
    struct fb_config *c = load_ok("[remote acme]\n"
                                  "users = root, 1001, 0\n"
                                  "groups = root, 4242\n"
                                  "tcp = no\n"
                                  "credit = 1024\n"
                                  "timeout_ms = 3600000\n"
                                  "attempts = 10\n"
                                  "[remote *]\n"
                                  "[remote billing-2_x]\n"
                                  "tcp = yes\n"
                                  "credit = 1\n"
                                  "timeout_ms = 1\n"
                                  "attempts = 1\n");
    ck_assert_uint_eq(c->nremotes, 3);
    const struct fb_remote_conf *r = &c->remotes[0];
    ck_assert_str_eq(r->ns, "acme");
    ck_assert_int_eq(r->line, 1);
    /* root and 0 are one uid: kept once */
    ck_assert_uint_eq(r->nuids, 2);
    ck_assert_uint_eq(r->uids[0], 0);
    ck_assert_uint_eq(r->uids[1], 1001);
    ck_assert_uint_eq(r->ngids, 2);
    ck_assert_uint_eq(r->gids[0], 0);
    ck_assert_uint_eq(r->gids[1], 4242);
    ck_assert(!r->tcp);
    ck_assert_uint_eq(r->credit, 1024);
    ck_assert_uint_eq(r->timeout_ms, 3600000);
    ck_assert_uint_eq(r->attempts, 10);

    /* A section without keys: the defaults. */
    r = &c->remotes[1];
    ck_assert_str_eq(r->ns, "*");
    ck_assert_uint_eq(r->nuids, 0);
    ck_assert_uint_eq(r->ngids, 0);
    ck_assert(!r->tcp);
    ck_assert_uint_eq(r->credit, 16);
    ck_assert_uint_eq(r->timeout_ms, 30000);
    ck_assert_uint_eq(r->attempts, 3);

    r = &c->remotes[2];
    ck_assert(r->tcp);
    ck_assert_uint_eq(r->credit, 1);
    ck_assert_uint_eq(r->timeout_ms, 1);
    ck_assert_uint_eq(r->attempts, 1);

    /* A namespace's own section wins over [remote *]. */
    ck_assert_ptr_eq(fb_config_remote_find(c, "acme"), &c->remotes[0]);
    ck_assert_ptr_eq(fb_config_remote_find(c, "billing-2_x"), &c->remotes[2]);
    ck_assert_ptr_eq(fb_config_remote_find(c, "other"), &c->remotes[1]);
    fb_config_free(c);

    /* Without [remote *] another namespace has no section. */
    c = load_ok("[remote acme]\n");
    ck_assert_ptr_null(fb_config_remote_find(c, "other"));
    ck_assert_ptr_nonnull(fb_config_remote_find(c, "acme"));
    fb_config_free(c);
    c = load_ok("");
    ck_assert_uint_eq(c->nremotes, 0);
    ck_assert_ptr_null(fb_config_remote_find(c, "acme"));
    fb_config_free(c);
}
END_TEST

/* Users and groups resolve by name as getpwnam/getgrnam say. */
START_TEST(test_config_remote_names)
{
    struct passwd *pw = getpwuid(getuid());
    ck_assert_ptr_nonnull(pw);
    char text[512];
    struct group *gr = getgrgid(getgid());
    ck_assert_ptr_nonnull(gr);
    snprintf(text, sizeof text, "[remote a]\nusers = %s\ngroups = %s\n", pw->pw_name,
             gr->gr_name);
    struct fb_config *c = load_ok(text);
    ck_assert_uint_eq(c->remotes[0].nuids, 1);
    ck_assert_uint_eq(c->remotes[0].uids[0], getuid());
    ck_assert_uint_eq(c->remotes[0].ngids, 1);
    ck_assert_uint_eq(c->remotes[0].gids[0], getgid());
    fb_config_free(c);
}
END_TEST

/* A long list continues on indented lines after a trailing comma. */
START_TEST(test_config_remote_list_continuation)
{
    struct fb_config *c = load_ok("[remote a]\n"
                                  "users = 1, 2,\n"
                                  "   3 ; a comment\n"
                                  "groups = 7,\n"
                                  "  8,\n"
                                  "  9\n"
                                  "credit = 2\n");
    ck_assert_uint_eq(c->remotes[0].nuids, 3);
    ck_assert_uint_eq(c->remotes[0].uids[2], 3);
    ck_assert_uint_eq(c->remotes[0].ngids, 3);
    ck_assert_uint_eq(c->remotes[0].gids[2], 9);
    ck_assert_uint_eq(c->remotes[0].credit, 2);
    fb_config_free(c);
}
END_TEST

static const struct bad_config bad[] = {
    {"[remote]\n", 1, "[remote] needs a namespace"},
    {"[remote a.b]\n", 1, "[remote a.b]: a namespace is 1-64 bytes of [A-Za-z0-9_-]"},
    {"[remote a b]\n", 1, "a namespace is"},
    {"[remote **]\n", 1, "a namespace is"},
    {"[remote "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n",
     1, "a namespace is"},
    {"[remote a]\n[route r]\nevent = x\nto = a.b\n[remote a]\n", 5,
     "section [remote a] appears twice (first on line 1)"},
    {"[remote *]\n[remote *]\n", 2, "section [remote *] appears twice"},
    {"[remote a]\nusers = fidbus-no-such-user\n", 2,
     "[remote a] users: no user 'fidbus-no-such-user' on this system"},
    {"[remote a]\ngroups = root, fidbus-no-such-group\n", 2,
     "[remote a] groups: no group 'fidbus-no-such-group' on this system"},
    {"[remote a]\nusers = 4294967295\n", 2, "user id 4294967295 is out of range"},
    {"[remote a]\ngroups = 99999999999\n", 2, "group id 99999999999 is out of range"},
    {"[remote a]\nusers =\n", 2, "[remote a] users must not be empty"},
    {"[remote a]\nusers = root,,1\n", 2, "users: an empty entry"},
    {"[remote a]\nusers = , root\n", 2, "users: an empty entry"},
    {"[remote a]\nusers = root,\n", 2, "the users list ends with a comma"},
    {"[remote a]\nusers = root,\ncredit = 2\n", 2, "the users list ends with a comma"},
    {"[remote a]\nusers = root,\n[remote b]\n", 2, "ends with a comma"},
    {"[remote a]\ncredit = 2\n  3\n", 3, "unexpected indented line"},
    {"[remote a]\nusers = root\nusers = 1\n", 3,
     "[remote a] key 'users' is set twice (first on line 2)"},
    {"[remote a]\nflavour = mild\n", 2,
     "unknown key 'flavour' in [remote a] (known: users, groups, tcp, credit, "
     "timeout_ms, attempts)"},
    {"[remote a]\ntcp = true\n", 2, "[remote a] tcp must be yes or no, not 'true'"},
    {"[remote a]\ncredit = 0\n", 2,
     "[remote a] credit must be a whole number from 1 to 1024"},
    {"[remote a]\ncredit = 1025\n", 2, "credit must be a whole number from 1 to 1024"},
    {"[remote a]\ncredit = -1\n", 2, "credit must be"},
    {"[remote a]\ntimeout_ms = 0\n", 2,
     "[remote a] timeout_ms must be a whole number from 1 to 3600000 (milliseconds)"},
    {"[remote a]\ntimeout_ms = 3600001\n", 2, "timeout_ms must be"},
    {"[remote a]\nattempts = 0\n", 2,
     "[remote a] attempts must be a whole number from 1 to 10"},
    {"[remote a]\nattempts = 11\n", 2, "attempts must be"},
    {"[remote a]\nattempts = 3x\n", 2, "attempts must be"},
    {"[listen]\ntcp = 127.0.0.1:7878\ntcp_auth = none\n[remote a]\ntcp = yes\n", 4,
     "[remote a] tcp = yes needs [listen] tcp_auth = key"},
    {"[remotes a]\n", 1, "unknown section [remotes]"},
};

START_TEST(test_config_remote_errors)
{
    load_refused(_i, bad[_i].text, bad[_i].line, bad[_i].why);
}
END_TEST

/* tcp = yes where no TCP listener exists yet is fine (one may be added). */
START_TEST(test_config_remote_tcp_without_listener)
{
    struct fb_config *c = load_ok("[remote a]\ntcp = yes\n");
    ck_assert(c->remotes[0].tcp);
    fb_config_free(c);
}
END_TEST

/* What config.export writes (fb_config_remote_write) reads back the same,
 * long id lists included (continued within the 198-byte line bound). */
START_TEST(test_config_remote_write_round_trip)
{
    char text[8192];
    size_t n = (size_t)snprintf(text, sizeof text, "[remote acme]\nusers = root,\n");
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "  %u,\n",
                              4000000000u + (unsigned)i);
    n += (size_t)snprintf(text + n, sizeof text - n,
                          "  7\ngroups = 5\ntcp = yes\ncredit = 3\ntimeout_ms = 250\n"
                          "attempts = 2\n[remote *]\n");
    struct fb_config *a = load_ok(text);
    ck_assert_uint_eq(a->remotes[0].nuids, 62);

    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(f);
    fb_config_remote_write(f, a);
    ck_assert_int_eq(fclose(f), 0);
    for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1)
        ck_assert_msg(nl - line <= 198, "line of %d bytes: %.*s", (int)(nl - line),
                      (int)(nl - line), line);
    ck_assert_ptr_nonnull(strstr(out, "[remote *]\ntcp = no\ncredit = 16\n"));

    struct fb_config *b = load_ok(out);
    ck_assert_uint_eq(b->nremotes, a->nremotes);
    for (size_t i = 0; i < a->nremotes; i++) {
        const struct fb_remote_conf *x = &a->remotes[i], *y = &b->remotes[i];
        ck_assert_str_eq(x->ns, y->ns);
        ck_assert_uint_eq(x->nuids, y->nuids);
        if (x->nuids)
            ck_assert_mem_eq(x->uids, y->uids, x->nuids * sizeof *x->uids);
        ck_assert_uint_eq(x->ngids, y->ngids);
        if (x->ngids)
            ck_assert_mem_eq(x->gids, y->gids, x->ngids * sizeof *x->gids);
        ck_assert_int_eq(x->tcp, y->tcp);
        ck_assert_uint_eq(x->credit, y->credit);
        ck_assert_uint_eq(x->timeout_ms, y->timeout_ms);
        ck_assert_uint_eq(x->attempts, y->attempts);
    }
    free(out);
    fb_config_free(a);
    fb_config_free(b);
}
END_TEST

/* The quick-start config lets anyone allowed serve any namespace. */
START_TEST(test_config_remote_default_config)
{
    ck_assert_ptr_nonnull(strstr(fb_default_config, "\n[remote *]\n"));
}
END_TEST

static Suite *config_remote_suite(void)
{
    Suite *s = suite_create("config_remote");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_config_remote_values);
    tcase_add_test(tc, test_config_remote_names);
    tcase_add_test(tc, test_config_remote_list_continuation);
    tcase_add_loop_test(tc, test_config_remote_errors, 0,
                        (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_config_remote_tcp_without_listener);
    tcase_add_test(tc, test_config_remote_write_round_trip);
    tcase_add_test(tc, test_config_remote_default_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_remote_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
