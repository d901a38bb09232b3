/*
 * End-to-end tests of fidbusctl's canary step and named output (ctest:
 * e2e.cli_weight): `route weight ROUTE TARGET=WEIGHT...` as one
 * transaction (one generation, nothing changed on any error), route.apply's
 * `if_generation` that makes it safe against another admin's change,
 * `route apply -` reading stdin, and text output that names the
 * functions it used to show as bare funcIDs (`route test`, `stats`,
 * `plugin list`) while --json stays as it was.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* clang-format off */
#define CANARY_CONF                                                                      \
    FB_E2E_LOG FB_E2E_COUNT                                                              \
    "[route canary]\nevent = order.*\nmode = split\nsplit_by = user\n"                   \
    "to = fidbus.log:90, fidbus.count@1.0.0:10\n"                                        \
    "[route audit]\nevent = audit.*\ntags = region=*\nto = fidbus.count@1.0.0\n"         \
    "priority = -1\n"
/* clang-format on */

/* `fidbusctl --json route list`, parsed. */
static json_t *route_list(struct fb_e2e *t)
{
    char *out = fb_e2e_ctl(t, 0, NULL, "--json", "route", "list", NULL);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(json_is_object(j), "route list --json: %s: %s", e.text, out);
    free(out);
    return j;
}

static long long generation(const json_t *list)
{
    return json_integer_value(json_object_get(list, "generation"));
}

/* `route list` says generation `gen` and `nroutes` routes. */
static void assert_list(struct fb_e2e *t, long long gen, size_t nroutes)
{
    json_t *l = route_list(t);
    ck_assert_int_eq(generation(l), gen);
    ck_assert_int_eq(json_array_size(json_object_get(l, "routes")), nroutes);
    json_decref(l);
}

static const json_t *route_named(const json_t *list, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(list, "routes"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "name")), name) == 0)
            return r;
    }
    ck_abort_msg("no route '%s' in route list", name);
    return NULL;
}

/* The weight of `target` (as written) in route `name`. */
static long long weight_of(const json_t *list, const char *name, const char *target)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(route_named(list, name), "to"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "target")), target) == 0)
            return json_integer_value(json_object_get(e, "weight"));
    }
    ck_abort_msg("route '%s' has no target '%s'", name, target);
    return -1;
}

/* Asserts err is exactly one line "fidbusctl: ..." containing want. */
static void one_line(const char *what, const char *err, const char *want)
{
    size_t len = strlen(err);
    ck_assert_msg(
        strncmp(err, "fidbusctl: ", 11) == 0 && len > 11 && err[len - 1] == '\n' &&
            strchr(err, '\n') == err + len - 1 && strstr(err, want),
        "%s: stderr is not one \"fidbusctl: ...%s...\" line: \"%s\"", what, want, err);
}

/* ---------------------------------------------------------- route weight */

START_TEST(test_e2e_cli_weight_one_generation)
{
    struct fb_e2e *t = fb_e2e_up(NULL, CANARY_CONF);
    json_t *before = route_list(t);
    long long g = generation(before);

    /* by the target as written, two at once: one apply, one generation */
    char *out = fb_e2e_ctl(t, 0, NULL, "route", "weight", "canary", "fidbus.log=50",
                           "fidbus.count@1.0.0=50", NULL);
    ck_assert_msg(strstr(out, "generation: ") && strstr(out, "fidbus.log:50"),
                  "route weight said: %s", out);
    free(out);
    json_t *after = route_list(t);
    ck_assert_int_eq(generation(after), g + 1);
    ck_assert_int_eq(weight_of(after, "canary", "fidbus.log"), 50);
    ck_assert_int_eq(weight_of(after, "canary", "fidbus.count@1.0.0"), 50);
    /* everything else about both routes is as it was */
    ck_assert(json_equal((json_t *)route_named(before, "audit"),
                         (json_t *)route_named(after, "audit")));
    const char *keys[] = {"event", "tags", "mode", "split_by", "priority", "signature"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(json_equal(json_object_get(route_named(before, "canary"), keys[i]),
                                 json_object_get(route_named(after, "canary"), keys[i])),
                      "route weight changed canary's '%s'", keys[i]);
    json_decref(before);

    /* by canonical name, 0 allowed; --json gives route, to, generation */
    out = fb_e2e_ctl(t, 0, NULL, "--json", "route", "weight", "canary",
                     "fidbus.log@1.0.0=0", NULL);
    json_t *j = json_loads(out, 0, NULL);
    json_t *want = json_pack("[ss]", "fidbus.log:0", "fidbus.count@1.0.0:50");
    ck_assert_msg(json_is_object(j) &&
                      json_integer_value(json_object_get(j, "generation")) == g + 2 &&
                      json_equal(json_object_get(j, "to"), want),
                  "route weight --json: %s", out);
    json_decref(want);
    json_decref(j);
    free(out);
    json_decref(after);
    after = route_list(t);
    ck_assert_int_eq(weight_of(after, "canary", "fidbus.log"), 0);
    ck_assert_int_eq(generation(after), g + 2);
    json_decref(after);

    /* all weights 0 is the daemon's INVALID, its message, nothing changed */
    char *err = NULL;
    out =
        fb_e2e_ctl(t, 1, &err, "route", "weight", "canary", "fidbus.count@1.0.0=0", NULL);
    ck_assert_str_eq(out, "");
    one_line("all weights 0", err, "INVALID");
    free(out);
    free(err);
    after = route_list(t);
    ck_assert_int_eq(generation(after), g + 2);
    ck_assert_int_eq(weight_of(after, "canary", "fidbus.count@1.0.0"), 50);
    json_decref(after);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_cli_weight_refused)
{
    struct fb_e2e *t = fb_e2e_up(NULL, CANARY_CONF);
    json_t *before = route_list(t);
    static const struct {
        const char *what, *route, *arg, *want;
        int code;
    } bad[] = {
        {"unknown target", "canary", "acme.audit=5", "no target 'acme.audit'", 1},
        {"target of another route", "audit", "fidbus.log=5", "no target 'fidbus.log'", 1},
        {"unknown route", "nope", "fidbus.log=5", "no route named 'nope'", 1},
        {"no weight", "canary", "fidbus.log", "TARGET=WEIGHT", 2},
        {"weight not a number", "canary", "fidbus.log=ten", "TARGET=WEIGHT", 2},
        {"weight out of range", "canary", "fidbus.log=99999999999", "TARGET=WEIGHT", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = NULL;
        /* a good change next to the bad one is not made either */
        char *out = fb_e2e_ctl(t, bad[i].code, &err, "route", "weight", bad[i].route,
                               "fidbus.count@1.0.0=7", bad[i].arg, NULL);
        ck_assert_msg(strcmp(out, "") == 0, "%s: stdout: %s", bad[i].what, out);
        one_line(bad[i].what, err, bad[i].want);
        free(out);
        free(err);
    }
    /* the same target twice, by two names */
    char *err = NULL;
    char *out = fb_e2e_ctl(t, 2, &err, "route", "weight", "canary", "fidbus.log=1",
                           "fidbus.log@1.0.0=2", NULL);
    one_line("one target twice", err, "the same target");
    free(out);
    free(err);

    json_t *after = route_list(t);
    ck_assert_msg(json_equal(before, after), "a refused route weight changed the routes");
    json_decref(before);
    json_decref(after);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------- route apply -, if_generation */

/* `echo JSON | fidbusctl --socket S route apply -`; returns the status. */
static int apply_stdin(struct fb_e2e *t, const char *json, char **out, char **err)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "printf '%%s' '%s' | '%s' --socket '%s' route apply -",
             json, fb_e2e_built("daemon/fidbusctl"), t->control);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return fb_e2e_run(t, argv, out, err);
}

START_TEST(test_e2e_cli_apply_stdin_if_generation)
{
    struct fb_e2e *t = fb_e2e_up(NULL, CANARY_CONF);
    json_t *l = route_list(t);
    long long g = generation(l);
    json_decref(l);

    /* the help says `route apply -` reads stdin; it does */
    char *help = fb_e2e_ctl(t, 0, NULL, "--help", NULL);
    ck_assert_msg(strstr(help, "route apply FILE|-") && strstr(help, "route weight"),
                  "--help: %s", help);
    free(help);
    char *out = NULL, *err = NULL;
    int st = apply_stdin(t, "{\"del\": [\"audit\"]}", &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "route apply - : 0x%x: %s %s", st, out, err);
    free(out);
    free(err);
    assert_list(t, g + 1, 1);

    /* if_generation: a stale one is CONFLICT and changes nothing */
    char json[256];
    snprintf(json, sizeof json, "{\"del\": [\"canary\"], \"if_generation\": %lld}", g);
    st = apply_stdin(t, json, &out, &err);
    ck_assert_msg(EXIT_IS(st, 1) && strstr(err, "CONFLICT") &&
                      strstr(err, "if_generation"),
                  "stale if_generation: 0x%x: %s %s", st, out, err);
    free(out);
    free(err);
    assert_list(t, g + 1, 1);
    /* the running one applies */
    snprintf(json, sizeof json, "{\"del\": [\"canary\"], \"if_generation\": %lld}",
             g + 1);
    st = apply_stdin(t, json, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "current if_generation: 0x%x: %s %s", st, out, err);
    free(out);
    free(err);
    assert_list(t, g + 2, 0);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ named functions */

START_TEST(test_e2e_cli_named_functions)
{
    struct fb_e2e *t = fb_e2e_up(NULL, CANARY_CONF);
    const char *named = "fidbus.count@1.0.0 (";

    char *out =
        fb_e2e_ctl(t, 0, NULL, "route", "test", "audit.x", "--tag", "region=eu", NULL);
    ck_assert_msg(strstr(out, named), "route test: %s", out);
    free(out);
    /* --json unchanged: bare funcIDs */
    out = fb_e2e_ctl(t, 0, NULL, "--json", "route", "test", "audit.x", "--tag",
                     "region=eu", NULL);
    ck_assert_msg(!strstr(out, "fidbus.count") && strstr(out, "\"targets\":[\""),
                  "route test --json: %s", out);
    free(out);

    out = fb_e2e_ctl(t, 0, NULL, "--bus", t->bus_addr, "publish", "audit.x", "--tag",
                     "region=eu", "--ack", NULL);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "stats", NULL);
    ck_assert_msg(strstr(out, named), "stats: %s", out);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "plugin", "list", NULL);
    ck_assert_msg(strstr(out, named) && strstr(out, "fidbus.log@1.0.0 ("),
                  "plugin list: %s", out);
    free(out);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_cli_weight_suite(void)
{
    Suite *s = suite_create("e2e_cli_weight");
    TCase *tc = tcase_create("cli_weight");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_cli_weight_one_generation);
    tcase_add_test(tc, test_e2e_cli_weight_refused);
    tcase_add_test(tc, test_e2e_cli_apply_stdin_if_generation);
    tcase_add_test(tc, test_e2e_cli_named_functions);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_cli_weight_suite());
}
