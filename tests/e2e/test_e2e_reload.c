/*
 * End-to-end tests of config.reload's per-item rule (ctest: e2e.reload;
 * proto/control.md, config.reload; README, "Restarts and the state
 * file"): a reload applies what changed in the file since the daemon last
 * applied it, by a three-way comparison of the config last applied, the
 * file now and the running set. Runtime routes and plugins the file did
 * not change survive a reload (and SIGHUP) as they survive a restart; an
 * item changed in both places takes the file's version and is listed
 * under `overridden`; an unchanged file changes nothing, not even the
 * generation or state.cbor. dry_run answers the same without doing it.
 * A start after the file was edited follows the same rule; a state file
 * from before "base" existed gets the config applied whole.
 *
 * Requests go over the control socket with the client library (args as
 * JSON with ' for ", converted by ctl/json_cbor.c), some through
 * fidbusctl.
 */
#include <cbor.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_json.h"
#include "json_cbor.h"

/* log.so and count.so; route ra sends a.* to the log, rd d.* to count. */
#define BASE                                                                             \
    FB_E2E_LOG FB_E2E_COUNT "[route ra]\nevent = a.*\nto = fidbus.log\n"                 \
                            "[route rd]\nevent = d.*\nto = fidbus.count\n"
#define RB "[route rb]\nevent = b.x\nto = fidbus.count\n"
#define CANARY "{'route':{'name':'rc','event':'a.x','to':['fidbus.count']}}"

/* ------------------------------------------------------- CBOR and JSON */

/* Asserts the command is refused; returns its message (valid until the
 * next request on c). */
static const char *refused(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *refused(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *res;
    int rc = fb_e2e_vreq(c, cmd, &res, fmt, ap);
    va_end(ap);
    ck_assert_msg(rc != 0, "%s succeeded", cmd);
    return fidbus_client_last_error(c);
}

static void done(json_t *r)
{
    json_decref(r);
}

static bool jbool(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_boolean(v), "'%s' missing or not a boolean", key);
    return json_is_true(v);
}

/* An array of names (or of {kind, name}: "kind:name") as "a,b,c". */
static void assert_names(const json_t *v, const char *want, const char *what)
{
    ck_assert_msg(json_is_array(v), "%s is not an array", what);
    char got[4096] = "";
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (json_is_object(e))
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%s:%s", i ? "," : "",
                                  json_string_value(json_object_get(e, "kind")),
                                  json_string_value(json_object_get(e, "name")));
        else
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%s", i ? "," : "",
                                  json_is_string(e) ? json_string_value(e) : "?");
        ck_assert_uint_lt(n, sizeof got);
    }
    ck_assert_msg(strcmp(got, want) == 0, "%s: [%s], expected [%s]", what, got, want);
}

#define NAMES(r, key, want) assert_names(json_object_get((r), key), want, key)

/* ------------------------------------------------------ daemon queries */

static struct fidbus_client *control(const struct fb_e2e *t)
{
    struct fidbus_client_opts o = {.name = "test", .timeout_ms = 30000};
    return fb_e2e_connect_control(t, &o);
}

static long long generation(struct fidbus_client *c)
{
    json_t *s = fb_e2e_ok(c, "status", NULL);
    long long g = fb_e2e_jint(s, "generation");
    json_decref(s);
    return g;
}

static void assert_routes(struct fidbus_client *c, const char *want)
{
    json_t *l = fb_e2e_ok(c, "route.list", NULL);
    json_t *names = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(l, "routes"), i, r)
        json_array_append(names, json_object_get(r, "name"));
    assert_names(names, want, "route.list");
    json_decref(names);
    json_decref(l);
}

static void assert_plugins(struct fidbus_client *c, const char *want)
{
    json_t *l = fb_e2e_ok(c, "plugin.list", NULL);
    json_t *names = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(l, "plugins"), i, p)
        json_array_append(names, json_object_get(p, "name"));
    assert_names(names, want, "plugin.list");
    json_decref(names);
    json_decref(l);
}

/* route NAME's targets as "t1,t2" (the text the operator gave). */
static char *route_targets(struct fidbus_client *c, const char *name)
{
    json_t *l = fb_e2e_ok(c, "route.list", NULL);
    char buf[512] = "";
    size_t i, n = 0;
    json_t *r;
    bool found = false;
    json_array_foreach(json_object_get(l, "routes"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "name")), name) != 0)
            continue;
        found = true;
        size_t k;
        json_t *tg;
        json_array_foreach(json_object_get(r, "to"), k, tg) n +=
            (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", k ? "," : "",
                             json_string_value(json_object_get(tg, "target")));
    }
    json_decref(l);
    ck_assert_msg(found, "no route %s", name);
    return strdup(buf);
}

#define ASSERT_TARGETS(c, name, want)                                                    \
    do {                                                                                 \
        char *got_ = route_targets((c), (name));                                         \
        ck_assert_msg(strcmp(got_, (want)) == 0, "route %s: to [%s], expected [%s]",     \
                      (name), got_, (want));                                             \
        free(got_);                                                                      \
    } while (0)

/* route.list, plugin.list and the generation, as one JSON text. */
static char *snapshot(struct fidbus_client *c)
{
    json_t *s = json_object();
    json_object_set_new(s, "routes", fb_e2e_ok(c, "route.list", NULL));
    json_object_set_new(s, "plugins", fb_e2e_ok(c, "plugin.list", NULL));
    json_object_set_new(s, "generation", json_integer(generation(c)));
    char *text = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(s);
    return text;
}

static char *state_bytes(const struct fb_e2e *t, size_t *len)
{
    char *b = fb_e2e_read(fb_e2e_file(t, "state/state.cbor"), len);
    ck_assert_msg(b != NULL, "no state.cbor");
    return b;
}

static int bak_files(const struct fb_e2e *t)
{
    DIR *d = opendir(fb_e2e_file(t, "state"));
    ck_assert_msg(d != NULL, "no state dir");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, "state.cbor.bak-", 15) == 0;
    closedir(d);
    return n;
}

static void finish(struct fb_e2e *t, struct fidbus_client *c)
{
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}

/* --------------------------------------------------------------- tests */

/* A canary added at runtime, then a reload of the very same file: nothing
 * changes -- no flip, no new generation, state.cbor as it was. SIGHUP
 * the same. */
START_TEST(test_e2e_reload_unchanged_file_keeps_runtime)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "route.add", CANARY));
    done(fb_e2e_ok(c, "plugin.load", "{'path':'%s','name':'extra'}",
                   fb_e2e_built("tests/plugins/ver1.so")));
    ck_assert_int_eq(generation(c), 3);
    char *before = snapshot(c);
    size_t slen, slen2;
    char *st = state_bytes(t, &slen);

    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    ck_assert(!jbool(r, "changed"));
    ck_assert(!jbool(r, "dry_run"));
    NAMES(r, "kept_runtime", "plugin:extra,route:rc");
    NAMES(r, "overridden", "");
    NAMES(r, "dropped_routes", "");
    NAMES(r, "dropped_plugins", "");
    NAMES(r, "unchanged_plugins", "count,extra,log");
    json_decref(r);
    char *after = snapshot(c);
    ck_assert_msg(strcmp(before, after) == 0, "reload of an unchanged file:\n%s\n%s",
                  before, after);
    char *st2 = state_bytes(t, &slen2);
    ck_assert_msg(slen == slen2 && memcmp(st, st2, slen) == 0,
                  "state.cbor was written by a reload that changed nothing");
    free(after);
    free(st2);

    /* SIGHUP (systemctl reload): the same */
    ck_assert_int_eq(kill(t->pid, SIGHUP), 0);
    ck_assert_msg(fb_e2e_wait_contains(t->errfile, "nothing changed (generation 3)",
                                       FB_E2E_TIMEOUT_MS),
                  "SIGHUP's reload was not logged");
    after = snapshot(c);
    ck_assert_msg(strcmp(before, after) == 0, "SIGHUP:\n%s\n%s", before, after);

    /* fidbusctl shows the outcome in text */
    char *out = fb_e2e_ctl(t, 0, NULL, "config", "reload", NULL);
    ck_assert_msg(strstr(out, "changed: no") && strstr(out, "kept_runtime:") &&
                      strstr(out, "generation: 3"),
                  "fidbusctl config reload:\n%s", out);
    free(out);

    /* a comment added: no item changed, so no flip; the state learns the
     * new file, so a restart restores it without taking it for an edit */
    fb_e2e_config(t, NULL, BASE "# a comment\n");
    r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert(!jbool(r, "changed"));
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    json_decref(r);
    fidbus_client_close(c);
    fb_e2e_kill9(t);
    fb_e2e_start(t);
    c = control(t);
    assert_routes(c, "ra,rc,rd");
    assert_plugins(c, "log,count,extra");
    ck_assert_int_eq(bak_files(t), 0);

    free(before);
    free(after);
    free(st);
    finish(t, c);
}
END_TEST

/* An unrelated edit of the file: applied, the canary stays. */
START_TEST(test_e2e_reload_unrelated_edit_keeps_runtime)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t), *bus = fb_e2e_connect(t);
    done(fb_e2e_ok(c, "route.add", CANARY));
    fb_e2e_config(t, NULL, BASE RB);
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    ck_assert(jbool(r, "changed"));
    NAMES(r, "added_routes", "rb");
    NAMES(r, "changed_routes", "");
    NAMES(r, "dropped_routes", "");
    NAMES(r, "kept_runtime", "route:rc");
    json_decref(r);
    assert_routes(c, "ra,rb,rc,rd");
    /* the canary still takes a.x */
    json_t *rt = fb_e2e_ok(c, "route.test", "{'event':'a.x'}");
    ck_assert_str_eq(json_string_value(json_object_get(rt, "route")), "rc");
    json_decref(rt);
    fb_e2e_publish_ack(bus, "a.x", 1);
    fb_e2e_publish_ack(bus, "b.x", 1);
    fidbus_client_close(bus);
    finish(t, c);
}
END_TEST

/* The same route changed at runtime and in the file: the file's version,
 * listed as overridden. One changed to the same thing in both: nothing to
 * do, not overridden. */
START_TEST(test_e2e_reload_both_changed_overridden)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(
        c, "route.apply",
        "{'del':['ra','rd'],'add':[{'name':'ra','event':'a.*','to':['fidbus.count']},"
        "{'name':'rd','event':'d.*','to':['fidbus.log']}]}"));
    long long g = generation(c);
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG FB_E2E_COUNT "[route ra]\nevent = a.*\nto = fidbus.log, "
                                          "fidbus.count\n"
                                          "[route rd]\nevent = d.*\nto = fidbus.log\n");
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), g + 1);
    NAMES(r, "overridden", "route:ra");
    NAMES(r, "changed_routes", "ra");
    NAMES(r, "kept_runtime", "");
    json_decref(r);
    ASSERT_TARGETS(c, "ra", "fidbus.log,fidbus.count");
    ASSERT_TARGETS(c, "rd", "fidbus.log");

    /* ra changed at runtime again, deleted in the file: deleted, and
     * overridden (fidbusctl's text names it; so does the log) */
    done(fb_e2e_ok(
        c, "route.apply",
        "{'del':['ra'],'add':[{'name':'ra','event':'a.*','to':['fidbus.count']}]}"));
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG FB_E2E_COUNT "[route rd]\nevent = d.*\nto = fidbus.log\n");
    char *out = fb_e2e_ctl(t, 0, NULL, "config", "reload", NULL);
    ck_assert_msg(strstr(out, "overridden: route ra\n") &&
                      strstr(out, "dropped_routes: ra\n"),
                  "fidbusctl config reload:\n%s", out);
    free(out);
    assert_routes(c, "rd");
    ck_assert_msg(fb_e2e_wait_contains(t->errfile,
                                       "route ra was changed in the file and at runtime",
                                       FB_E2E_TIMEOUT_MS),
                  "the override was not logged");
    finish(t, c);
}
END_TEST

/* Deleted in the file, untouched at runtime: gone. Deleted at runtime,
 * untouched in the file: stays deleted. */
START_TEST(test_e2e_reload_deletes)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "route.del", "{'name':'ra'}"));
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG FB_E2E_COUNT "[route ra]\nevent = a.*\nto = "
                                          "fidbus.log\n" RB);
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    NAMES(r, "dropped_routes", "rd");
    NAMES(r, "added_routes", "rb");
    NAMES(r, "kept_runtime", "route:ra");
    json_decref(r);
    assert_routes(c, "rb");
    finish(t, c);
}
END_TEST

/* Plugins follow the same rule: a runtime-loaded instance survives, a
 * runtime-unloaded one stays unloaded, one whose section the file changed
 * is reloaded, one changed in both places is overridden. */
START_TEST(test_e2e_reload_plugins)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, BASE FB_E2E_TP("ver2") "[plugin vx]\npath = "
                                               "@B@/tests/plugins/ver1.so\n");
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "plugin.load",
                   "{'path':'%s','name':'extra','config':{'file':'%s'}}",
                   fb_e2e_built("tests/plugins/rec1.so"), fb_e2e_file(t, "rec.txt")));
    done(fb_e2e_ok(c, "plugin.unload", "{'name':'ver2'}"));
    done(fb_e2e_ok(c, "plugin.reload", "{'name':'vx','path':'%s'}",
                   fb_e2e_built("tests/plugins/ver2.so")));
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG
                  "[plugin count]\npath = @B@/plugins/count.so\nreport_file = "
                  "@D@/count2.json\ninterval_ms = 0\n"
                  "[route ra]\nevent = a.*\nto = fidbus.log\n"
                  "[route rd]\nevent = d.*\nto = fidbus.count\n" FB_E2E_TP(
                      "ver2") "[plugin vx]\npath = @B@/tests/plugins/ver1.so\nx = 1\n");
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    NAMES(r, "reloaded_plugins", "count,vx");
    NAMES(r, "loaded_plugins", "");
    NAMES(r, "dropped_plugins", "");
    NAMES(r, "overridden", "plugin:vx");
    NAMES(r, "kept_runtime", "plugin:extra,plugin:ver2");
    json_decref(r);
    assert_plugins(c, "log,count,vx,extra");
    /* vx is the file's again: version 1's function */
    json_t *l = fb_e2e_ok(c, "func.list", NULL);
    char *text = json_dumps(l, JSON_COMPACT);
    ck_assert_msg(strstr(text, "test.ver@1.0.0") && !strstr(text, "test.ver@2.0.0"),
                  "func.list: %s", text);
    free(text);
    json_decref(l);
    finish(t, c);
}
END_TEST

/* dry_run: the reply of the reload without doing it -- route.list,
 * plugin.list, the generation and state.cbor stay; no plugin code runs;
 * the real reload then does what the dry run said. */
START_TEST(test_e2e_reload_dry_run)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "route.add", CANARY));
    long long g = generation(c);
    char *before = snapshot(c);
    size_t slen, slen2;
    char *st = state_bytes(t, &slen);

    fb_e2e_config(t, NULL, FB_E2E_LOG FB_E2E_COUNT RB);
    json_t *dry = fb_e2e_ok(c, "config.reload", "{'dry_run':true}");
    ck_assert(jbool(dry, "dry_run"));
    ck_assert(jbool(dry, "changed"));
    ck_assert(jbool(dry, "routes_checked"));
    ck_assert_int_eq(fb_e2e_jint(dry, "generation"), g + 1);
    NAMES(dry, "added_routes", "rb");
    NAMES(dry, "dropped_routes", "ra,rd");
    NAMES(dry, "kept_runtime", "route:rc");
    char *after = snapshot(c);
    ck_assert_msg(strcmp(before, after) == 0, "a dry run changed the set:\n%s\n%s",
                  before, after);
    char *st2 = state_bytes(t, &slen2);
    ck_assert_msg(slen == slen2 && memcmp(st, st2, slen) == 0,
                  "a dry run wrote state.cbor");
    free(st2);
    free(after);

    /* a route to a function that is not there: the dry run refuses it as
     * the reload would, with the file's line */
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG FB_E2E_COUNT RB "[route gh]\nevent = g.x\nto = no.such\n");
    const char *m = refused(c, "config.reload", "{'dry_run':true}");
    char where[300];
    snprintf(where, sizeof where, "%s:", t->conf);
    ck_assert_msg(strstr(m, "dry run") && strstr(m, where) && strstr(m, "gh"),
                  "dry run refusal: %s", m);

    /* a plugin it would load: named, its code not run (no init line) */
    fb_e2e_config(
        t, NULL,
        FB_E2E_LOG FB_E2E_COUNT RB FB_E2E_TP("lifecycle") "file = @D@/life.txt\n");
    json_t *dp = fb_e2e_ok(c, "config.reload", "{'dry_run':true}");
    NAMES(dp, "loaded_plugins", "lifecycle");
    ck_assert(!jbool(dp, "routes_checked"));
    json_decref(dp);
    ck_assert_msg(access(fb_e2e_file(t, "life.txt"), F_OK) != 0,
                  "a dry run ran the plugin's init");
    after = snapshot(c);
    ck_assert_msg(strcmp(before, after) == 0, "a dry run changed the set");
    free(after);

    /* fidbusctl --dry-run */
    fb_e2e_config(t, NULL, FB_E2E_LOG FB_E2E_COUNT RB);
    char *out = fb_e2e_ctl(t, 0, NULL, "config", "reload", "--dry-run", NULL);
    ck_assert_msg(strstr(out, "dry_run: yes") && strstr(out, "added_routes: rb"),
                  "fidbusctl config reload --dry-run:\n%s", out);
    free(out);
    after = snapshot(c);
    ck_assert_msg(strcmp(before, after) == 0, "fidbusctl --dry-run changed the set");
    free(after);

    /* the real one does what the dry run said */
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), g + 1);
    ck_assert(jbool(r, "changed"));
    ck_assert(!jbool(r, "dry_run"));
    const char *keys[] = {"added_routes",   "changed_routes",   "dropped_routes",
                          "loaded_plugins", "reloaded_plugins", "dropped_plugins",
                          "overridden",     "kept_runtime"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(
            json_equal(json_object_get(r, keys[i]), json_object_get(dry, keys[i])),
            "%s differs between the dry run and the reload", keys[i]);
    json_decref(r);
    json_decref(dry);
    assert_routes(c, "rb,rc");

    free(before);
    free(st);
    finish(t, c);
}
END_TEST

/* A route naming one function twice: refused with the file's line, as a
 * start refuses it. */
START_TEST(test_e2e_reload_same_function_twice_line)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    fb_e2e_config(t, NULL,
                  BASE
                  "[route twice]\nevent = t.x\nto = fidbus.count, fidbus.count@1.0.0\n");
    const char *m = refused(c, "config.reload", NULL);
    /* the [route twice] header is the config's 5th section: find its line */
    char *conf = fb_e2e_read(t->conf, NULL);
    int line = 1;
    for (const char *p = conf; p < strstr(conf, "[route twice]"); p++)
        line += *p == '\n';
    char where[300];
    snprintf(where, sizeof where, "%s:%d: ", t->conf, line);
    ck_assert_msg(strstr(m, where) && strstr(m, "twice"), "message: %s (want %s)", m,
                  where);
    free(conf);
    finish(t, c);
}
END_TEST

/* A restart after the file was edited: the same per-item rule. */
START_TEST(test_e2e_reload_restart_after_edit)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "route.add", CANARY));
    done(fb_e2e_ok(c, "plugin.load", "{'path':'%s','name':'extra'}",
                   fb_e2e_built("tests/plugins/ver1.so")));
    done(fb_e2e_ok(
        c, "route.apply",
        "{'del':['ra'],'add':[{'name':'ra','event':'a.*','to':['fidbus.count']}]}"));
    long long g = generation(c);
    fidbus_client_close(c);
    fb_e2e_kill9(t);

    /* ra edited in the file too (overridden), rb added; rd, rc, extra
     * untouched by the edit */
    fb_e2e_config(t, NULL,
                  FB_E2E_LOG FB_E2E_COUNT
                  "[route ra]\nevent = a.*\nto = fidbus.log, "
                  "fidbus.count\n"
                  "[route rd]\nevent = d.*\nto = fidbus.count\n" RB);
    fb_e2e_start(t);
    c = control(t);
    assert_routes(c, "ra,rb,rc,rd");
    assert_plugins(c, "log,count,extra");
    ASSERT_TARGETS(c, "ra", "fidbus.log,fidbus.count");
    ck_assert_int_gt(generation(c), g);
    ck_assert_int_eq(bak_files(t), 1);
    ck_assert_msg(fb_e2e_wait_contains(t->errfile,
                                       "route ra was changed in the config file "
                                       "and at runtime",
                                       FB_E2E_TIMEOUT_MS),
                  "the overridden route was not logged");

    /* the file is now what was applied: a reload changes nothing, and a
     * restart restores the same set */
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert(!jbool(r, "changed"));
    NAMES(r, "overridden", "");
    /* the items restored from state.cbor compare equal to the file's */
    NAMES(r, "kept_runtime", "plugin:extra,route:rc");
    json_decref(r);
    fidbus_client_close(c);
    fb_e2e_kill9(t);
    fb_e2e_start(t);
    c = control(t);
    assert_routes(c, "ra,rb,rc,rd");
    assert_plugins(c, "log,count,extra");
    ck_assert_int_eq(bak_files(t), 1);
    r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert(!jbool(r, "changed"));
    NAMES(r, "kept_runtime", "plugin:extra,route:rc");
    json_decref(r);
    finish(t, c);
}
END_TEST

/* state.cbor from a daemon that did not save "base": an edited config is
 * applied whole, as before, and the old state kept as .bak. */
START_TEST(test_e2e_reload_old_state_without_base)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = control(t);
    done(fb_e2e_ok(c, "route.add", CANARY));
    fidbus_client_close(c);
    fb_e2e_kill9(t);

    size_t len;
    char *b = state_bytes(t, &len);
    struct cbor_load_result lr;
    cbor_item_t *root = cbor_load((const unsigned char *)b, len, &lr);
    ck_assert_msg(root && cbor_isa_map(root), "state.cbor is not a map");
    cbor_item_t *old = cbor_new_definite_map(cbor_map_size(root));
    bool had = false;
    for (size_t i = 0; i < cbor_map_size(root); i++) {
        struct cbor_pair p = cbor_map_handle(root)[i];
        if (cbor_string_length(p.key) == 4 &&
            !memcmp(cbor_string_handle(p.key), "base", 4)) {
            had = true;
            continue;
        }
        ck_assert(cbor_map_add(old, p));
    }
    ck_assert_msg(had, "state.cbor has no 'base'");
    unsigned char *nb = NULL;
    size_t cap = 0, n = cbor_serialize_alloc(old, &nb, &cap);
    FILE *f = fopen(fb_e2e_file(t, "state/state.cbor"), "wb");
    ck_assert(f && fwrite(nb, 1, n, f) == n && fclose(f) == 0);
    free(nb);
    cbor_decref(&old);
    cbor_decref(&root);
    free(b);

    fb_e2e_config(t, NULL, BASE RB);
    fb_e2e_start(t);
    c = control(t);
    assert_routes(c, "ra,rb,rd");
    ck_assert_int_eq(bak_files(t), 1);
    finish(t, c);
}
END_TEST

static Suite *e2e_reload_suite(void)
{
    Suite *s = suite_create("e2e.reload");
    TCase *tc = tcase_create("reload");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_reload_unchanged_file_keeps_runtime);
    tcase_add_test(tc, test_e2e_reload_unrelated_edit_keeps_runtime);
    tcase_add_test(tc, test_e2e_reload_both_changed_overridden);
    tcase_add_test(tc, test_e2e_reload_deletes);
    tcase_add_test(tc, test_e2e_reload_plugins);
    tcase_add_test(tc, test_e2e_reload_dry_run);
    tcase_add_test(tc, test_e2e_reload_same_function_twice_line);
    tcase_add_test(tc, test_e2e_reload_restart_after_edit);
    tcase_add_test(tc, test_e2e_reload_old_state_without_base);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_reload_suite());
}
