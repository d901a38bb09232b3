/*
 * End-to-end tests of the control commands that change the running daemon
 * (ctest: e2e.change; proto/control.md): route.add, route.del,
 * route.apply, route.test with `apply` (the dry run), plugin.load,
 * plugin.unload, plugin.reload (also of a .so overwritten in place),
 * config.reload and SIGHUP, the per-generation and per-route counters
 * across flips, config.export loaded by a fresh daemon, and a 95/5 canary
 * split by user.
 *
 * Every command is checked for success and for each failure code it can
 * give, and every refusal for leaving route.list, plugin.list and the
 * generation exactly as they were. Requests go over the control socket
 * with the client library (args written as JSON with ' for ", converted
 * to CBOR by ctl/json_cbor.c; results converted back to JSON here for
 * the checks), some through `fidbusctl` (tables, --json, one-line errors
 * with exit 1).
 *
 * Which version handled an event is read from `stats` (per-function
 * calls) or, for the canary, from tests/plugins/rec1.so / rec2.so, which
 * append a line per event with its version and `user` tag.
 */
#include <cbor.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fidbus/funcid.h>

#include "harness.h"
#include "harness_json.h"
#include "json_cbor.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* log.so and count.so; route `ra` sends a.* to the log. */
#define BASE FB_E2E_LOG FB_E2E_COUNT "[route ra]\nevent = a.*\nto = fidbus.log\n"

#define LOG_FN "fidbus.log@1.0.0"
#define COUNT_FN "fidbus.count@1.0.0"
#define VER1_FN "test.ver@1.0.0"
#define VER2_FN "test.ver@2.0.0"

/* ------------------------------------------------------- CBOR and JSON */

/* Asserts the command is refused with `code` and a message; returns the
 * message (valid until the next request on c). */
static const char *refused(struct fidbus_client *c, int code, const char *cmd,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static const char *refused(struct fidbus_client *c, int code, const char *cmd,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *res;
    int rc = fb_e2e_vreq(c, cmd, &res, fmt, ap);
    va_end(ap);
    const char *msg = fidbus_client_last_error(c);
    ck_assert_msg(fidbus_error_code(rc) == code, "%s: expected %s, got %s (%s)", cmd,
                  fidbus_code_name(code), fidbus_strerror(rc), rc ? msg : "ok");
    ck_assert_msg(msg && *msg, "%s: %s without a message", cmd, fidbus_code_name(code));
    return msg;
}

#define ASSERT_HAS(msg, needle)                                                          \
    ck_assert_msg(strstr((msg), (needle)), "message lacks '%s': %s", (needle), (msg))

static const char *jstr(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "'%s' missing or not text", key);
    return json_string_value(v);
}

/* The JSON text of v (malloc'd), for messages and comparisons. */
static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* Asserts the array of text v is exactly `want` ("a,b,c"; "" = empty). */
static void assert_names(const json_t *v, const char *want, const char *what)
{
    ck_assert_msg(json_is_array(v), "%s is not an array", what);
    char got[4096] = "";
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_is_string(e)   ? json_string_value(e)
                        : json_is_object(e) ? jstr(e, "name")
                                            : "?";
        n += (size_t)snprintf(got + n, sizeof got - n, "%s%s", i ? "," : "", s);
        ck_assert_uint_lt(n, sizeof got);
    }
    ck_assert_msg(strcmp(got, want) == 0, "%s: [%s], expected [%s]", what, got, want);
}

static void hex_id(const char *canonical, char out[FIDBUS_FUNCID_HEX])
{
    fidbus_funcid_hex(fidbus_funcid(canonical), out);
}

/* ------------------------------------------------------ daemon queries */

static struct fidbus_client *connect_control(const struct fb_e2e *t)
{
    struct fidbus_client_opts o = {.name = "test", .timeout_ms = 30000};
    return fb_e2e_connect_control(t, &o);
}

/* The end of a test: the connections closed (bus may be NULL), a clean
 * stop asserted, the test dir freed. */
static void finish(struct fb_e2e *t, struct fidbus_client *c, struct fidbus_client *bus)
{
    fidbus_client_close(bus);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}

static long long generation(struct fidbus_client *c)
{
    json_t *s = fb_e2e_ok(c, "status", NULL);
    long long g = fb_e2e_jint(s, "generation");
    json_decref(s);
    return g;
}

/* What a refused change must leave as it was: route.list (with its
 * generation), plugin.list and status.generation. */
static json_t *snapshot(struct fidbus_client *c)
{
    json_t *s = json_object();
    json_object_set_new(s, "route.list", fb_e2e_ok(c, "route.list", NULL));
    json_object_set_new(s, "plugin.list", fb_e2e_ok(c, "plugin.list", NULL));
    json_object_set_new(s, "generation", json_integer(generation(c)));
    return s;
}

static void assert_unchanged(struct fidbus_client *c, const json_t *before,
                             const char *after)
{
    json_t *now = snapshot(c);
    if (!json_equal(now, before)) {
        char *a = dump(before), *b = dump(now);
        ck_abort_msg("%s changed the running set:\nbefore %s\nafter  %s", after, a, b);
    }
    json_decref(now);
}

/* The route named `name` in a route.list result (NULL if none). */
static json_t *route_in(const json_t *list, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(list, "routes"), i, r)
    {
        if (strcmp(jstr(r, "name"), name) == 0)
            return r;
    }
    return NULL;
}

/* Asserts route `name`'s target i is bound to the function `canonical`. */
static void assert_bound(struct fidbus_client *c, const char *name, size_t i,
                         const char *canonical)
{
    char id[FIDBUS_FUNCID_HEX];
    hex_id(canonical, id);
    json_t *l = fb_e2e_ok(c, "route.list", NULL);
    json_t *r = route_in(l, name);
    ck_assert_msg(r, "no route %s", name);
    json_t *tg = json_array_get(json_object_get(r, "to"), i);
    ck_assert_msg(tg && strcmp(jstr(tg, "id"), id) == 0,
                  "route %s target %zu: %s, expected %s (%s)", name, i,
                  tg ? jstr(tg, "id") : "(none)", id, canonical);
    json_decref(l);
}

static void assert_route_names(struct fidbus_client *c, const char *want)
{
    json_t *l = fb_e2e_ok(c, "route.list", NULL);
    assert_names(json_object_get(l, "routes"), want, "route.list");
    json_decref(l);
}

static void assert_plugin_names(struct fidbus_client *c, const char *want)
{
    json_t *l = fb_e2e_ok(c, "plugin.list", NULL);
    assert_names(json_object_get(l, "plugins"), want, "plugin.list");
    json_decref(l);
}

/* stats: the function's calls, -1 when it is not loaded. */
static long long fn_calls(struct fidbus_client *c, const char *canonical)
{
    char id[FIDBUS_FUNCID_HEX];
    hex_id(canonical, id);
    json_t *s = fb_e2e_ok(c, "stats", NULL);
    json_t *f = json_object_get(json_object_get(s, "functions"), id);
    long long n = f ? fb_e2e_jint(f, "calls") : -1;
    json_decref(s);
    return n;
}

/* An acked publish of event (with tag k=v when k); returns the ACK's
 * result (handlers that succeeded), or -(protocol code) on ERROR. */
static long long pub(struct fidbus_client *bus, const char *event, const char *k,
                     const char *v)
{
    struct fidbus_tag tag = {k, v};
    uint64_t res = 0;
    int rc = fidbus_publish_ack(bus, event, k ? &tag : NULL, k ? 1 : 0, NULL, 0, &res);
    if (rc == 0)
        return (long long)res;
    ck_assert_msg(fidbus_error_code(rc), "publish %s: %s", event, fidbus_strerror(rc));
    return -fidbus_error_code(rc);
}

/* ------------------------------------------------------------ fidbusctl */

/* Asserts fidbusctl's refusal: exit 1, nothing on stdout, one line on
 * stderr "fidbusctl: WORDS failed: CODE: ..." that contains `needle`. */
static void ctl_refused(struct fb_e2e *t, const char *words, const char *code,
                        const char *needle, ...)
{
    const char *argv[24] = {fb_e2e_built("daemon/fidbusctl"), "--socket", t->control};
    size_t n = 3;
    va_list ap;
    va_start(ap, needle);
    for (const char *a; (a = va_arg(ap, const char *));) {
        ck_assert_uint_lt(n, 23);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    char head[128];
    snprintf(head, sizeof head, "fidbusctl: %s failed: %s: ", words, code);
    ck_assert_msg(
        EXIT_IS(st, 1) && strcmp(out, "") == 0 && strncmp(err, head, strlen(head)) == 0 &&
            strchr(err, '\n') == err + strlen(err) - 1 && strstr(err, needle),
        "fidbusctl %s: status 0x%x, expected exit 1 with one line \"%s...%s...\"; "
        "stdout: %s; stderr: %s",
        words, st, head, needle, out, err);
    free(out);
    free(err);
}

/* Copies a file by writing a new one next to `to` and renaming it over
 * `to`, as an installer replaces a library. */
static void install_file(const char *from, const char *to)
{
    size_t len = 0;
    char *data = fb_e2e_read(from, &len);
    ck_assert_msg(data, "cannot read %s", from);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.new", to);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ck_assert_msg(fd >= 0, "%s: %s", tmp, strerror(errno));
    ck_assert_msg(write(fd, data, len) == (ssize_t)len, "write %s", tmp);
    ck_assert_int_eq(close(fd), 0);
    ck_assert_msg(rename(tmp, to) == 0, "rename %s: %s", to, strerror(errno));
    free(data);
}

#define TP(name) fb_e2e_built("tests/plugins/" name ".so")

/* ------------------------------------------------------------ route.add */

START_TEST(test_e2e_change_route_add)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    uint8_t sh[FIDBUS_SIGHASH_LEN];
    char sig[FIDBUS_SIGHASH_HEX], count_id[FIDBUS_FUNCID_HEX];
    fidbus_sighash("event:any", sh);
    fidbus_sighash_hex(sh, sig);
    hex_id(COUNT_FN, count_id);
    ck_assert_int_eq(generation(c), 1);
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), -FIDBUS_NO_ROUTE);

    json_t *r = fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'rb','event':'b.x','to':['%s']}}", COUNT_FN);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    ck_assert_int_eq(generation(c), 2);
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, COUNT_FN), 1);

    /* every key of a route */
    r = fb_e2e_ok(
        c, "route.add",
        "{'route':{'name':'rfull','event':'c.*','tags':{'region':'*','tier':'gold'},"
        "'to':['fidbus.log:1','%s:3'],'mode':'split','split_by':'user',"
        "'signature':'%s','priority':-2}}",
        COUNT_FN, sig);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    json_decref(r);
    json_t *l = fb_e2e_ok(c, "route.list", NULL);
    ck_assert_int_eq(fb_e2e_jint(l, "generation"), 3);
    assert_names(json_object_get(l, "routes"), "ra,rb,rfull", "route.list");
    json_t *rf = route_in(l, "rfull");
    ck_assert_str_eq(jstr(rf, "event"), "c.*");
    ck_assert_str_eq(jstr(json_object_get(rf, "tags"), "region"), "*");
    ck_assert_str_eq(jstr(json_object_get(rf, "tags"), "tier"), "gold");
    ck_assert_str_eq(jstr(rf, "mode"), "split");
    ck_assert_str_eq(jstr(rf, "split_by"), "user");
    ck_assert_str_eq(jstr(rf, "signature"), sig);
    ck_assert_int_eq(fb_e2e_jint(rf, "priority"), -2);
    json_t *t1 = json_array_get(json_object_get(rf, "to"), 1);
    ck_assert_str_eq(jstr(t1, "target"), COUNT_FN);
    ck_assert_str_eq(jstr(t1, "id"), count_id);
    ck_assert_int_eq(fb_e2e_jint(t1, "weight"), 3);
    json_decref(l);

    /* each refusal, and nothing changed by any of them */
    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_CONFLICT, "route.add",
                            "{'route':{'name':'rb','event':'z.x','to':['fidbus.log']}}");
    ASSERT_HAS(m, "'rb'");
    m = refused(c, FIDBUS_INVALID, "route.add",
                "{'route':{'name':'bad','event':'no spaces!','to':['fidbus.log']}}");
    ASSERT_HAS(m, "no spaces!");
    m = refused(c, FIDBUS_INVALID, "route.add",
                "{'route':{'name':'bad','event':'a.*.b','to':['fidbus.log']}}");
    ASSERT_HAS(m, "'bad'");
    m = refused(c, FIDBUS_INVALID, "route.add",
                "{'route':{'name':'zero','event':'z.x','mode':'split',"
                "'to':['fidbus.log:0','fidbus.count:0']}}");
    ASSERT_HAS(m, "'zero'");
    refused(c, FIDBUS_INVALID, "route.add", "{'route':{'name':'nto','event':'z.x'}}");
    refused(c, FIDBUS_INVALID, "route.add",
            "{'route':{'name':'key','event':'z.x','to':['fidbus.log'],'colour':'red'}}");
    refused(c, FIDBUS_INVALID, "route.add", "{'name':'noroute'}");
    m = refused(c, FIDBUS_NOT_FOUND, "route.add",
                "{'route':{'name':'nf','event':'z.x','to':['fidbus.log','no.such']}}");
    ASSERT_HAS(m, "no.such");
    m = refused(c, FIDBUS_NOT_FOUND, "route.add",
                "{'route':{'name':'nf','event':'z.x','to':['fidbus.log@9.0.0']}}");
    ASSERT_HAS(m, "fidbus.log@9.0.0");
    m = refused(c, FIDBUS_SIGNATURE_MISMATCH, "route.add",
                "{'route':{'name':'sig','event':'z.x','to':['fidbus.log'],"
                "'signature':'%064d'}}",
                0);
    ASSERT_HAS(m, "'sig'");
    /* two targets that resolve to one function (latest and its pinned
     * version, or the same function written two ways) */
    m = refused(c, FIDBUS_INVALID, "route.add",
                "{'route':{'name':'twice','event':'z.x','to':['fidbus.log','%s']}}",
                LOG_FN);
    ASSERT_HAS(m, "'twice'");
    ASSERT_HAS(m, "same function " LOG_FN);
    assert_unchanged(c, before, "refused route.add");
    json_decref(before);
    ck_assert_int_eq(pub(bus, "z.x", NULL, NULL), -FIDBUS_NO_ROUTE);

    /* fidbusctl: a table line, --json, one-line refusals */
    char *out = fb_e2e_ctl(t, 0, NULL, "route", "add", "rcli", "d.x", "--tag", "k=v",
                           "--to", "fidbus.log", "--to", "fidbus.count@1.0.0:5", "--mode",
                           "split", "--split-by", "user", "--priority", "4", NULL);
    ck_assert_str_eq(out, "generation: 4\n");
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "route", "add", "rcli2", "d.y", "--to",
                     "fidbus.log", NULL);
    ck_assert_str_eq(out, "{\"generation\":5}\n");
    free(out);
    l = fb_e2e_ok(c, "route.list", NULL);
    rf = route_in(l, "rcli");
    ck_assert_msg(rf, "no route rcli");
    ck_assert_str_eq(jstr(json_object_get(rf, "tags"), "k"), "v");
    ck_assert_str_eq(jstr(rf, "split_by"), "user");
    ck_assert_int_eq(fb_e2e_jint(rf, "priority"), 4);
    ck_assert_int_eq(fb_e2e_jint(json_array_get(json_object_get(rf, "to"), 1), "weight"),
                     5);
    json_decref(l);
    before = snapshot(c);
    ctl_refused(t, "route add", "CONFLICT", "rcli", "route", "add", "rcli", "e.x", "--to",
                "fidbus.log", NULL);
    ctl_refused(t, "route add", "NOT_FOUND", "no.such", "route", "add", "rx", "e.x",
                "--to", "no.such", NULL);
    ctl_refused(t, "route add", "INVALID", "rx", "route", "add", "rx", "e.x", "--to",
                "fidbus.log:0", "--mode", "split", NULL);
    ctl_refused(t, "route add", "INVALID", "split_by", "route", "add", "rx", "e.x",
                "--to", "fidbus.log", "--split-by", "user", NULL);
    ctl_refused(t, "route add", "INVALID", "same function " COUNT_FN, "route", "add",
                "rx", "e.x", "--to", COUNT_FN ":2", "--to", "fidbus.count", NULL);
    char *err = NULL;
    out = fb_e2e_ctl(t, 1, &err, "--json", "route", "add", "rcli", "e.x", "--to",
                     "fidbus.log", NULL);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(json_is_false(json_object_get(j, "ok")) &&
                      fb_e2e_jint(j, "code") == FIDBUS_CONFLICT &&
                      strcmp(jstr(j, "error"), "CONFLICT") == 0 &&
                      strchr(err, '\n') == err + strlen(err) - 1,
                  "--json refusal: stdout %s; stderr %s", out, err);
    json_decref(j);
    free(out);
    free(err);
    assert_unchanged(c, before, "refused fidbusctl route add");
    json_decref(before);

    finish(t, c, bus);
}
END_TEST

/* A config route whose targets resolve to one function: the daemon does
 * not start, and says FILE:LINE of the route and which function. */
START_TEST(test_e2e_change_route_same_function_config)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL,
                  BASE "[route dup]\nevent = d.x\nto = fidbus.count, " COUNT_FN ":2\n");
    char *conf = fb_e2e_read(t->conf, NULL);
    ck_assert_ptr_nonnull(conf);
    int line = 1;
    const char *sec = strstr(conf, "[route dup]");
    ck_assert_ptr_nonnull(sec);
    for (const char *p = conf; p < sec; p++)
        line += *p == '\n';
    free(conf);
    char want[512];
    snprintf(want, sizeof want,
             "%s:%d: route 'dup': targets 'fidbus.count' and '" COUNT_FN
             "' are the same function " COUNT_FN,
             t->conf, line);
    fb_e2e_start_fail_says(t, want);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ route.del */

START_TEST(test_e2e_change_route_del)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, BASE "[route rb]\nevent = b.x\nto = fidbus.count\n"
                             "[route rc]\nevent = c.x\nto = fidbus.count\n");
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);

    json_t *r = fb_e2e_ok(c, "route.del", "{'name':'ra'}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    assert_route_names(c, "rb,rc");
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), -FIDBUS_NO_ROUTE);
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), 1);

    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_NOT_FOUND, "route.del", "{'name':'ra'}");
    ASSERT_HAS(m, "'ra'");
    refused(c, FIDBUS_INVALID, "route.del", NULL);
    refused(c, FIDBUS_INVALID, "route.del", "{'name':7}");
    assert_unchanged(c, before, "refused route.del");
    json_decref(before);

    char *out = fb_e2e_ctl(t, 0, NULL, "route", "del", "rb", NULL);
    ck_assert_str_eq(out, "generation: 3\n");
    free(out);
    ctl_refused(t, "route del", "NOT_FOUND", "'rb'", "route", "del", "rb", NULL);
    assert_route_names(c, "rc");
    ck_assert_int_eq(generation(c), 3);

    finish(t, c, bus);
}
END_TEST

/* ---------------------------------------------------------- route.apply */

#define R(name, event) "{'name':'" name "','event':'" event "','to':['fidbus.log']}"
#define FIVE                                                                             \
    R("x1", "x.1")                                                                       \
    "," R("x2", "x.2") "," R("x3", "x.3") "," R("x4", "x.*") "," R("x5", "*")

START_TEST(test_e2e_change_route_apply)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, BASE "[route rb]\nevent = b.x\nto = fidbus.count\n");
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);

    /* five adds and two dels: one flip */
    json_t *r = fb_e2e_ok(c, "route.apply", "{'del':['ra','rb'],'add':[" FIVE "]}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    ck_assert_int_eq(generation(c), 2);
    assert_route_names(c, "x1,x2,x3,x4,x5");
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), 1); /* by x5 now */

    /* changing a route: del and add of one name */
    r = fb_e2e_ok(
        c, "route.apply",
        "{'del':['x1'],'add':[{'name':'x1','event':'x.1','to':['fidbus.count']}]}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    json_decref(r);
    assert_bound(c, "x1", 0, COUNT_FN);

    /* refusals: nothing changed, the message names the culprit */
    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_NOT_FOUND, "route.apply",
                            "{'del':['x2','nosuch'],'add':[" R("y1", "y.1") "]}");
    ASSERT_HAS(m, "nosuch");
    m = refused(c, FIDBUS_CONFLICT, "route.apply",
                "{'add':[" R("y1", "y.1") "," R("x3", "z") "]}");
    ASSERT_HAS(m, "x3");
    m = refused(c, FIDBUS_CONFLICT, "route.apply",
                "{'add':[" R("y1", "y.1") "," R("y1", "y.2") "]}");
    ASSERT_HAS(m, "'y1' is given twice");
    m = refused(c, FIDBUS_INVALID, "route.apply",
                "{'add':[" R("y1", "y.1") ",{'name':'dupfn','event':'y.2',"
                                          "'to':['fidbus.count','%s']}]}",
                COUNT_FN);
    ASSERT_HAS(m, "'dupfn'");
    ASSERT_HAS(m, "same function " COUNT_FN);
    m = refused(c, FIDBUS_INVALID, "route.apply",
                "{'del':['x2'],'add':[" R("y1", "y.1") "," R("y2", "y.2") "," R(
                    "middle", "bad event!") "," R("y4", "y.4") "]}");
    ASSERT_HAS(m, "'middle'");
    m = refused(
        c, FIDBUS_NOT_FOUND, "route.apply",
        "{'del':['x2'],'add':[" R("y1", "y.1") ",{'name':'middle2','event':'y.2',"
                                               "'to':['fidbus.log','no.such@1.0.0']}," R(
                                                   "y3", "y.3") "]}");
    ASSERT_HAS(m, "middle2");
    ASSERT_HAS(m, "no.such@1.0.0");
    refused(c, FIDBUS_INVALID, "route.apply", "{'add':[],'frobnicate':1}");
    refused(c, FIDBUS_INVALID, "route.apply", "{'replace':'yes'}");
    refused(c, FIDBUS_INVALID, "route.apply", "{'add':" R("y1", "y.1") "}");
    refused(c, FIDBUS_INVALID, "route.apply", "{'del':[1]}");
    assert_unchanged(c, before, "refused route.apply");
    json_decref(before);

    /* replace: the set is exactly `add` */
    r = fb_e2e_ok(c, "route.apply", "{'replace':true,'add':[" R("only", "o.x") "]}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 4);
    json_decref(r);
    assert_route_names(c, "only");
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), -FIDBUS_NO_ROUTE);
    ck_assert_int_eq(pub(bus, "o.x", NULL, NULL), 1);

    /* fidbusctl: a JSON file, a CBOR file with --replace, a refusal */
    const char *jf = fb_e2e_write(t, "apply.json",
                                  "{\"del\": [\"only\"], \"add\": [{\"name\": \"j1\", "
                                  "\"event\": \"j.1\", \"to\": [\"fidbus.count\"]}, "
                                  "{\"name\": \"j2\", \"event\": \"j.2\", "
                                  "\"to\": [\"fidbus.log\"]}]}\n");
    char *out = fb_e2e_ctl(t, 0, NULL, "route", "apply", jf, NULL);
    ck_assert_str_eq(out, "generation: 5\n");
    free(out);
    assert_route_names(c, "j1,j2");
    static const char cjson[] =
        "{\"add\": [{\"name\": \"c1\", \"event\": \"c.*\", \"to\": [\"fidbus.log\"]}]}";
    uint8_t *cb = NULL;
    size_t cblen = 0;
    char why[128];
    ck_assert_int_eq(
        fbctl_json_to_cbor(cjson, strlen(cjson), &cb, &cblen, why, sizeof why), 0);
    const char *cf = fb_e2e_file(t, "apply.cbor");
    FILE *f = fopen(cf, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cb, 1, cblen, f), cblen);
    ck_assert_int_eq(fclose(f), 0);
    free(cb);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "route", "apply", cf, "--replace", NULL);
    ck_assert_str_eq(out, "{\"generation\":6}\n");
    free(out);
    assert_route_names(c, "c1");
    ctl_refused(t, "route apply", "CONFLICT", "c1", "route", "apply", cf, NULL);
    ck_assert_int_eq(generation(c), 6);

    finish(t, c, bus);
}
END_TEST

/* ----------------------------------------------------- route.test apply */

START_TEST(test_e2e_change_route_test_apply)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    char log_id[FIDBUS_FUNCID_HEX], count_id[FIDBUS_FUNCID_HEX];
    hex_id(LOG_FN, log_id);
    hex_id(COUNT_FN, count_id);
    json_t *before = snapshot(c);

    /* the running table */
    json_t *r = fb_e2e_ok(c, "route.test", "{'event':'a.x'}");
    ck_assert_str_eq(jstr(r, "route"), "ra");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 1);
    json_decref(r);

    /* proposed: a more specific route, the old one gone, a replace */
    r = fb_e2e_ok(
        c, "route.test",
        "{'event':'a.x','tags':{'user':'u1'},'apply':{'add':[{'name':'rx','event':'a.x',"
        "'to':['fidbus.count','fidbus.log'],'mode':'split','split_by':'user'}]}}");
    ck_assert_str_eq(jstr(r, "route"), "rx");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_t *ts = json_object_get(r, "targets");
    ck_assert_msg(json_array_size(ts) == 1 &&
                      (!strcmp(json_string_value(json_array_get(ts, 0)), log_id) ||
                       !strcmp(json_string_value(json_array_get(ts, 0)), count_id)),
                  "split targets: %s", dump(ts));
    json_decref(r);
    r = fb_e2e_ok(c, "route.test", "{'event':'a.x','apply':{'del':['ra']}}");
    ck_assert_msg(json_is_null(json_object_get(r, "route")), "route after del ra");
    ck_assert_uint_eq(json_array_size(json_object_get(r, "targets")), 0);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    r = fb_e2e_ok(c, "route.test",
                  "{'event':'q.x','apply':{'replace':true,'add':[{'name':'q','event':'*',"
                  "'to':['fidbus.count','fidbus.log']}]}}");
    ck_assert_str_eq(jstr(r, "route"), "q");
    ts = json_object_get(r, "targets");
    ck_assert_uint_eq(json_array_size(ts), 2);
    ck_assert_str_eq(json_string_value(json_array_get(ts, 0)), count_id);
    ck_assert_str_eq(json_string_value(json_array_get(ts, 1)), log_id);
    json_decref(r);

    /* a proposal that would be refused is refused the same way */
    refused(c, FIDBUS_NOT_FOUND, "route.test",
            "{'event':'a.x','apply':{'del':['nosuch']}}");
    refused(c, FIDBUS_CONFLICT, "route.test",
            "{'event':'a.x','apply':{'add':[" R("ra", "a.x") "]}}");
    refused(
        c, FIDBUS_NOT_FOUND, "route.test",
        "{'event':'a.x','apply':{'add':[{'name':'n','event':'a.x','to':['no.such']}]}}");
    refused(c, FIDBUS_INVALID, "route.test", "{'event':'a.x','apply':[1]}");

    /* a dry run: nothing changed, the running table still serves */
    assert_unchanged(c, before, "route.test with apply");
    json_decref(before);
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, LOG_FN), 1);
    ck_assert_int_eq(fn_calls(c, COUNT_FN), 0);

    const char *af = fb_e2e_write(t, "proposal.json",
                                  "{\"del\": [\"ra\"], \"add\": [{\"name\": \"p\", "
                                  "\"event\": \"a.*\", \"to\": [\"fidbus.count\"]}]}");
    char *out = fb_e2e_ctl(t, 0, NULL, "route", "test", "a.x", "--apply", af, NULL);
    ck_assert_msg(strstr(out, "route: p\n") && strstr(out, count_id) &&
                      strstr(out, "generation: 2\n"),
                  "route test --apply:\n%s", out);
    free(out);
    ck_assert_int_eq(generation(c), 1);

    finish(t, c, bus);
}
END_TEST

/* ---------------------------------------------------------- plugin.load */

START_TEST(test_e2e_change_plugin_load)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, FB_E2E_LOG "[route ra]\nevent = a.*\nto = fidbus.log\n");
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    char count_id[FIDBUS_FUNCID_HEX], v1[FIDBUS_FUNCID_HEX];
    hex_id(COUNT_FN, count_id);
    hex_id(VER1_FN, v1);
    char report[200];
    snprintf(report, sizeof report, "%s", fb_e2e_file(t, "cnt.json"));

    /* count.so under another name, with config keys it reads in init */
    char *count_so = strdup(fb_e2e_built("plugins/count.so"));
    json_t *r = fb_e2e_ok(c, "plugin.load",
                          "{'path':'%s','name':'cnt','config':{'report_file':'%s',"
                          "'interval_ms':'0'}}",
                          count_so, report);
    ck_assert_str_eq(jstr(r, "name"), "cnt");
    ck_assert_str_eq(jstr(r, "version"), "1.0.0");
    ck_assert_str_eq(jstr(r, "path"), count_so);
    assert_names(json_object_get(r, "functions"), count_id, "plugin.load functions");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    assert_plugin_names(c, "log,cnt");
    json_t *fl = fb_e2e_ok(c, "func.list", NULL);
    size_t i;
    json_t *f;
    bool seen = false;
    json_array_foreach(json_object_get(fl, "functions"), i, f)
    {
        if (!strcmp(jstr(f, "canonical"), COUNT_FN))
            seen = !strcmp(jstr(f, "plugin"), "cnt") && !strcmp(jstr(f, "id"), count_id);
    }
    ck_assert_msg(seen, "func.list lacks %s of cnt", COUNT_FN);
    json_decref(fl);

    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'rc','event':'c.x','to':['fidbus.count']}}"));
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(pub(bus, "c.x", NULL, NULL), 1);
    json_decref(fb_e2e_ok(c, "route.del", "{'name':'rc'}"));
    json_decref(fb_e2e_ok(c, "plugin.unload", "{'name':'cnt'}"));
    /* fini wrote the report where the runtime config said */
    char *rep = fb_e2e_read(report, NULL);
    ck_assert_msg(rep, "count wrote no %s: its config did not arrive", report);
    FB_E2E_ASSERT_COUNT(rep, "c.x", 3);
    free(rep);

    /* no name: the plugin's own */
    r = fb_e2e_ok(c, "plugin.load", "{'path':'%s'}", TP("ver1"));
    ck_assert_str_eq(jstr(r, "name"), "ver1");
    assert_names(json_object_get(r, "functions"), v1, "ver1 functions");
    json_decref(r);

    /* an instance named like ver2.so's own name, providing something else */
    json_decref(fb_e2e_ok(c, "plugin.load",
                          "{'path':'%s','name':'ver2','config':{'file':'%s'}}",
                          TP("rec1"), fb_e2e_file(t, "rec.txt")));

    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_NOT_FOUND, "plugin.load", "{'path':'%s'}",
                            fb_e2e_file(t, "nosuch.so"));
    ASSERT_HAS(m, "nosuch.so");
    m = refused(c, FIDBUS_INVALID, "plugin.load", "{'path':'%s'}", TP("no_symbol"));
    ASSERT_HAS(m, "no_symbol.so");
    m = refused(c, FIDBUS_INVALID, "plugin.load", "{'path':'%s','name':'x'}",
                TP("bad_abi"));
    ASSERT_HAS(m, "ABI");
    refused(c, FIDBUS_INVALID, "plugin.load", "{'path':'%s'}",
            fb_e2e_write(t, "text.so", "not an ELF file\n"));
    refused(c, FIDBUS_INVALID, "plugin.load", "{'path':'plugins/count.so'}");
    refused(c, FIDBUS_INVALID, "plugin.load", "{'name':'nopath'}");
    /* an instance name in use, given or the plugin's own */
    m = refused(c, FIDBUS_CONFLICT, "plugin.load", "{'path':'%s','name':'log'}",
                TP("ver2"));
    ASSERT_HAS(m, "'log'");
    m = refused(c, FIDBUS_CONFLICT, "plugin.load", "{'path':'%s'}", TP("ver1"));
    ASSERT_HAS(m, "ver1");
    m = refused(c, FIDBUS_CONFLICT, "plugin.load", "{'path':'%s'}", TP("ver2"));
    ASSERT_HAS(m, "'ver2'");
    /* the same file under another name: its funcID is taken */
    m = refused(c, FIDBUS_CONFLICT, "plugin.load", "{'path':'%s','name':'again'}",
                TP("ver1"));
    ASSERT_HAS(m, VER1_FN);
    refused(c, FIDBUS_INVALID, "plugin.load", "{'path':'%s','config':[1]}", TP("ver2"));
    assert_unchanged(c, before, "refused plugin.load");
    json_decref(before);
    /* the refused instances left nothing registered behind */
    ck_assert_int_eq(fn_calls(c, VER2_FN), -1);
    json_decref(fb_e2e_ok(c, "plugin.unload", "{'name':'ver2'}"));

    /* fidbusctl */
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"report_file\": \"%s\", \"interval_ms\": \"0\"}",
             report);
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "load", count_so, "--name", "c2",
                           "--config", cfg, NULL);
    ck_assert_msg(strstr(out, "name: c2\n") && strstr(out, count_id) &&
                      strstr(out, "generation: 9\n"),
                  "plugin load:\n%s", out);
    free(out);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "plugin", "load", TP("ver2"), NULL);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(j && !strcmp(jstr(j, "name"), "ver2") &&
                      fb_e2e_jint(j, "generation") == 10,
                  "plugin load --json: %s", out);
    json_decref(j);
    free(out);
    ctl_refused(t, "plugin load", "NOT_FOUND", "nosuch.so", "plugin", "load",
                fb_e2e_file(t, "nosuch.so"), NULL);
    ctl_refused(t, "plugin load", "INVALID", "no_symbol", "plugin", "load",
                TP("no_symbol"), NULL);
    ctl_refused(t, "plugin load", "CONFLICT", "c2", "plugin", "load", count_so, "--name",
                "c2", NULL);
    assert_plugin_names(c, "log,ver1,c2,ver2");
    ck_assert_int_eq(generation(c), 10);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 0);

    free(count_so);
    finish(t, c, bus);
}
END_TEST

/* -------------------------------------------------------- plugin.unload */

#define UNLOAD_ROUTES                                                                    \
    "[route r1]\nevent = b.x\nto = fidbus.count\n"                                       \
    "[route r2]\nevent = c.*\nto = fidbus.log, fidbus.count@1.0.0\n"

START_TEST(test_e2e_change_plugin_unload)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE FB_E2E_TP("ver1") UNLOAD_ROUTES);
    struct fidbus_client *c = connect_control(t);

    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_CONFLICT, "plugin.unload", "{'name':'count'}");
    ck_assert_msg(strstr(m, "routes r1, r2:"), "the refusal should name r1 and r2: %s",
                  m);
    m = refused(c, FIDBUS_NOT_FOUND, "plugin.unload", "{'name':'nosuch'}");
    ASSERT_HAS(m, "nosuch");
    refused(c, FIDBUS_INVALID, "plugin.unload", NULL);
    assert_unchanged(c, before, "refused plugin.unload");
    json_decref(before);

    json_t *r = fb_e2e_ok(c, "plugin.unload", "{'name':'ver1'}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 2);
    json_decref(r);
    assert_plugin_names(c, "log,count");
    ck_assert_int_eq(fn_calls(c, VER1_FN), -1);
    refused(c, FIDBUS_NOT_FOUND, "route.add",
            "{'route':{'name':'v','event':'v.x','to':['test.ver']}}");

    /* fidbusctl */
    ctl_refused(t, "plugin unload", "NOT_FOUND", "nosuch", "plugin", "unload", "nosuch",
                NULL);
    ctl_refused(t, "plugin unload", "CONFLICT", "routes r2, ra:", "plugin", "unload",
                "log", NULL);
    json_decref(fb_e2e_ok(c, "route.apply", "{'del':['ra','r2']}"));
    char *out = fb_e2e_ctl(t, 0, NULL, "plugin", "unload", "log", NULL);
    ck_assert_str_eq(out, "generation: 4\n");
    free(out);
    assert_plugin_names(c, "count");

    finish(t, c, NULL);
}
END_TEST

/* -------------------------------------------------------- plugin.reload */

START_TEST(test_e2e_change_plugin_reload)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    char v1[FIDBUS_FUNCID_HEX], v2[FIDBUS_FUNCID_HEX];
    hex_id(VER1_FN, v1);
    hex_id(VER2_FN, v2);
    char so[200];
    snprintf(so, sizeof so, "%s", fb_e2e_file(t, "vx.so"));
    install_file(TP("ver1"), so);

    json_t *r = fb_e2e_ok(c, "plugin.load", "{'path':'%s','name':'vx'}", so);
    assert_names(json_object_get(r, "functions"), v1, "vx functions");
    json_decref(r);
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'lt','event':'e.x','to':['test.ver']}}"));
    ck_assert_int_eq(pub(bus, "e.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER1_FN), 1);
    long long g = generation(c);

    /* the same file again: a new instance, same function */
    r = fb_e2e_ok(c, "plugin.reload", "{'name':'vx'}");
    ck_assert_str_eq(jstr(r, "name"), "vx");
    ck_assert_str_eq(jstr(r, "path"), so);
    assert_names(json_object_get(r, "functions"), v1, "reloaded functions");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), g + 1);
    json_decref(r);
    ck_assert_int_eq(pub(bus, "e.x", NULL, NULL), 1);

    /* the .so replaced on disk by version 2: the reload picks it up and the
     * "latest" route moves in the same flip */
    install_file(TP("ver2"), so);
    r = fb_e2e_ok(c, "plugin.reload", "{'name':'vx'}");
    ck_assert_str_eq(jstr(r, "version"), "2.0.0");
    assert_names(json_object_get(r, "functions"), v2, "functions after overwrite");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), g + 2);
    json_decref(r);
    assert_bound(c, "lt", 0, VER2_FN);
    ck_assert_int_eq(pub(bus, "e.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 1);
    ck_assert_int_eq(fn_calls(c, VER1_FN), -1);

    /* a pinned route to 2.0.0, then version 1 on disk: the reload fails
     * whole and version 2 keeps serving */
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'pin','event':'p.x','to':['" VER2_FN "']}}"));
    install_file(TP("ver1"), so);
    json_t *before = snapshot(c);
    const char *m = refused(c, FIDBUS_NOT_FOUND, "plugin.reload", "{'name':'vx'}");
    ASSERT_HAS(m, VER2_FN);
    ASSERT_HAS(m, "pin");
    refused(c, FIDBUS_NOT_FOUND, "plugin.reload", "{'name':'nosuch'}");
    refused(c, FIDBUS_NOT_FOUND, "plugin.reload", "{'name':'vx','path':'%s'}",
            fb_e2e_file(t, "gone.so"));
    refused(c, FIDBUS_INVALID, "plugin.reload", "{'name':'vx','path':'vx.so'}");
    refused(c, FIDBUS_INVALID, "plugin.reload", "{'name':'vx','path':'%s'}",
            TP("bad_abi"));
    m = refused(c, FIDBUS_CONFLICT, "plugin.reload", "{'name':'vx','path':'%s'}",
                fb_e2e_built("plugins/log.so"));
    ASSERT_HAS(m, LOG_FN);
    ctl_refused(t, "plugin reload", "NOT_FOUND", VER2_FN, "plugin", "reload", "vx", NULL);
    assert_unchanged(c, before, "refused plugin.reload");
    json_decref(before);
    ck_assert_int_eq(pub(bus, "p.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 2);

    /* another path: the instance now comes from there */
    char *out =
        fb_e2e_ctl(t, 0, NULL, "plugin", "reload", "vx", "--path", TP("ver2"), NULL);
    ck_assert_msg(strstr(out, "name: vx\n") && strstr(out, v2), "plugin reload:\n%s",
                  out);
    free(out);
    json_t *pl = fb_e2e_ok(c, "plugin.list", NULL);
    json_t *p = json_array_get(json_object_get(pl, "plugins"), 2);
    ck_assert_str_eq(jstr(p, "name"), "vx");
    ck_assert_str_eq(jstr(p, "path"), TP("ver2"));
    json_decref(pl);
    ck_assert_int_eq(pub(bus, "e.x", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "p.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 2); /* a new instance's counters */

    finish(t, c, bus);
}
END_TEST

/* -------------------------------------------- two versions of one name */

/* Pinned to each version, and "latest". */
#define VERSIONS                                                                         \
    "[route p1]\nevent = e.1\nto = " VER1_FN "\n"                                        \
    "[route p2]\nevent = e.2\nto = " VER2_FN "\n"                                        \
    "[route lt]\nevent = e.3\nto = test.ver\n"

START_TEST(test_e2e_change_two_versions)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_TP("ver1") FB_E2E_TP("ver2") VERSIONS);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);

    assert_bound(c, "p1", 0, VER1_FN);
    assert_bound(c, "p2", 0, VER2_FN);
    assert_bound(c, "lt", 0, VER2_FN);
    ck_assert_int_eq(pub(bus, "e.1", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "e.2", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "e.3", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER1_FN), 1);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 2);

    /* a route pinning 2.0.0 holds it; "latest" may move to 1.0.0 */
    const char *m = refused(c, FIDBUS_CONFLICT, "plugin.unload", "{'name':'ver2'}");
    ck_assert_msg(strstr(m, "p2") && !strstr(m, "lt"), "should name p2 only: %s", m);
    json_decref(fb_e2e_ok(c, "route.del", "{'name':'p2'}"));
    json_t *r = fb_e2e_ok(c, "plugin.unload", "{'name':'ver2'}");
    long long g = fb_e2e_jint(r, "generation");
    json_decref(r);
    assert_bound(c, "lt", 0, VER1_FN);
    assert_bound(c, "p1", 0, VER1_FN);
    ck_assert_int_eq(pub(bus, "e.3", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER1_FN), 2);

    /* a higher version loaded again: "latest" follows it in that flip,
     * the pinned route stays */
    r = fb_e2e_ok(c, "plugin.load", "{'path':'%s'}", TP("ver2"));
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), g + 1);
    json_decref(r);
    assert_bound(c, "lt", 0, VER2_FN);
    assert_bound(c, "p1", 0, VER1_FN);
    ck_assert_int_eq(pub(bus, "e.3", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "e.1", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, VER2_FN), 1);
    ck_assert_int_eq(fn_calls(c, VER1_FN), 3);

    /* the lower one can go: nothing pins it, lt is on 2.0.0 */
    json_decref(fb_e2e_ok(c, "route.del", "{'name':'p1'}"));
    json_decref(fb_e2e_ok(c, "plugin.unload", "{'name':'ver1'}"));
    assert_bound(c, "lt", 0, VER2_FN);
    /* the last provider of test.ver is held by the "latest" route */
    m = refused(c, FIDBUS_CONFLICT, "plugin.unload", "{'name':'ver2'}");
    ASSERT_HAS(m, "lt");

    finish(t, c, bus);
}
END_TEST

/* -------------------------------------------------------- config.reload */

#define COUNT_AT(file)                                                                   \
    "[plugin count]\npath = @B@/plugins/count.so\nreport_file = @D@/" file               \
    "\ninterval_ms = 0\n"

/* vf: a copy of ver1.so in the temp dir, replaced on disk below. */
#define VF "[plugin vf]\npath = @D@/vf.so\n"
#define RA "[route ra]\nevent = a.*\nto = fidbus.log\n"
#define RN "[route rn]\nevent = n.x\nto = fidbus.count\n"

START_TEST(test_e2e_change_config_reload)
{
    struct fb_e2e *t = fb_e2e_new();
    char vf[200];
    snprintf(vf, sizeof vf, "%s", fb_e2e_file(t, "vf.so"));
    install_file(TP("ver1"), vf);
    fb_e2e_config(t, NULL, FB_E2E_LOG COUNT_AT("count1.json") VF RA);
    fb_e2e_start(t);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);

    /* runtime-only changes: the file does not touch them, so a reload of
     * it keeps them (the three-way rule; tests/e2e/test_e2e_reload.c) */
    json_decref(fb_e2e_ok(c, "plugin.load",
                          "{'path':'%s','name':'rt1','config':{'file':'%s'}}", TP("rec1"),
                          fb_e2e_file(t, "rec.txt")));
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'rt','event':'t.x','to':['fidbus.count']}}"));
    ck_assert_int_eq(generation(c), 3);

    /* the file: count's report_file changed, ver2 and a route added; vf's
     * .so replaced on disk (same text for it: not reloaded, only named) */
    fb_e2e_config(t, NULL, FB_E2E_LOG COUNT_AT("count2.json") VF FB_E2E_TP("ver2") RA RN);
    install_file(TP("ver1"), vf);
    json_t *r = fb_e2e_ok(c, "config.reload", NULL);
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 4);
    assert_names(json_object_get(r, "loaded_plugins"), "ver2", "loaded_plugins");
    assert_names(json_object_get(r, "reloaded_plugins"), "count", "reloaded_plugins");
    assert_names(json_object_get(r, "unchanged_plugins"), "log,rt1,vf",
                 "unchanged_plugins");
    assert_names(json_object_get(r, "replaced_on_disk"), "vf", "replaced_on_disk");
    assert_names(json_object_get(r, "dropped_plugins"), "", "dropped_plugins");
    assert_names(json_object_get(r, "added_routes"), "rn", "added_routes");
    assert_names(json_object_get(r, "dropped_routes"), "", "dropped_routes");
    assert_names(json_object_get(r, "restart_needed"), "", "restart_needed");
    json_decref(r);
    assert_route_names(c, "ra,rn,rt");
    assert_plugin_names(c, "log,count,vf,rt1,ver2");
    /* log was kept: the same instance, its counters go on */
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);
    ck_assert_int_eq(fn_calls(c, LOG_FN), 2);
    ck_assert_int_eq(pub(bus, "n.x", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "t.x", NULL, NULL), 1);

    /* a syntax error: INVALID naming file and line, nothing changed, the
     * old table serving */
    json_t *before = snapshot(c);
    fb_e2e_config(t, NULL, FB_E2E_LOG "[route ra]\nevent = a.*\nthis line is not ini\n");
    const char *m = refused(c, FIDBUS_INVALID, "config.reload", NULL);
    char where[200];
    snprintf(where, sizeof where, "config not reloaded, nothing changed: %s:", t->conf);
    ck_assert_msg(strncmp(m, where, strlen(where)) == 0, "message: %s", m);
    assert_unchanged(c, before, "config.reload of a broken file");
    ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "n.x", NULL, NULL), 1);
    json_t *s = fb_e2e_ok(c, "stats", NULL);
    ck_assert_int_eq(fb_e2e_jint(json_object_get(s, "generations"), "4"),
                     5); /* a.x, n.x, t.x, a.x, n.x */
    json_decref(s);
    /* a route to a function nothing provides: refused whole, too */
    fb_e2e_config(t, NULL, BASE "[route ghost]\nevent = g.x\nto = no.such\n");
    m = refused(c, FIDBUS_NOT_FOUND, "config.reload", NULL);
    ASSERT_HAS(m, "config not reloaded, nothing changed");
    ASSERT_HAS(m, "ghost");
    /* a plugin that does not load: refused, naming its line */
    fb_e2e_config(t, NULL, BASE FB_E2E_TP("bad_abi"));
    m = refused(c, FIDBUS_INVALID, "config.reload", NULL);
    ASSERT_HAS(m, "bad_abi");
    assert_unchanged(c, before, "config.reload of a file that cannot apply");
    json_decref(before);
    ctl_refused(t, "config reload", "INVALID", "bad_abi", "config", "reload", NULL);

    /* fidbusctl, --json; a [daemon] key that only a restart applies; what
     * the file drops goes, the runtime-only rt1 and rt stay */
    struct fb_e2e_opts o = {.max_frame = 65536};
    fb_e2e_config(t, &o, FB_E2E_LOG COUNT_AT("count2.json") RA);
    char *out = fb_e2e_ctl(t, 0, NULL, "--json", "config", "reload", NULL);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(j, "config reload --json: %s", out);
    ck_assert_int_eq(fb_e2e_jint(j, "generation"), 5);
    assert_names(json_object_get(j, "unchanged_plugins"), "count,log,rt1",
                 "unchanged_plugins");
    assert_names(json_object_get(j, "dropped_plugins"), "ver2,vf", "dropped_plugins");
    assert_names(json_object_get(j, "dropped_routes"), "rn", "dropped_routes");
    assert_names(json_object_get(j, "restart_needed"), "max_frame", "restart_needed");
    json_decref(j);
    free(out);
    assert_route_names(c, "ra,rt");

    fidbus_client_close(bus);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    /* the reloaded count instance got its new key: its fini reported there */
    char *rep = fb_e2e_read(fb_e2e_file(t, "count2.json"), NULL);
    ck_assert_msg(rep, "no count2.json");
    FB_E2E_ASSERT_COUNT(rep, "n.x", 2);
    free(rep);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_change_sighup)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'rt','event':'t.x','to':['fidbus.log']}}"));

    fb_e2e_config(t, NULL, BASE "[route rh]\nevent = h.x\nto = fidbus.count\n");
    ck_assert_int_eq(kill(t->pid, SIGHUP), 0);
    /* the reload runs on the control thread: poll until it flipped */
    uint64_t deadline = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    while (generation(c) == 2)
        ck_assert_msg(fb_e2e_now_ms() < deadline, "no flip after SIGHUP");
    ck_assert_int_eq(generation(c), 3);
    /* the runtime route stays: the file did not change it */
    assert_route_names(c, "ra,rh,rt");
    ck_assert_int_eq(pub(bus, "h.x", NULL, NULL), 1);
    ck_assert_msg(fb_e2e_wait_contains(t->errfile, "config reloaded", FB_E2E_TIMEOUT_MS),
                  "the reload was not logged");

    /* a broken file: logged, nothing changed */
    json_t *before = snapshot(c);
    fb_e2e_config(t, NULL, BASE "[route broken]\nevent = bad event!\nto = fidbus.log\n");
    ck_assert_int_eq(kill(t->pid, SIGHUP), 0);
    ck_assert_msg(
        fb_e2e_wait_contains(t->errfile, "config not reloaded", FB_E2E_TIMEOUT_MS),
        "a refused SIGHUP reload was not logged");
    assert_unchanged(c, before, "SIGHUP with a broken file");
    json_decref(before);
    ck_assert_int_eq(pub(bus, "h.x", NULL, NULL), 1);

    finish(t, c, bus);
}
END_TEST

/* --------------------------------------------------- stats across flips */

/* Lines of the log plugin's file containing "gen=G ". */
static int log_lines_gen(const struct fb_e2e *t, int g)
{
    char *text = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    ck_assert_ptr_nonnull(text);
    char needle[32];
    snprintf(needle, sizeof needle, "gen=%d ", g);
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    free(text);
    return n;
}

START_TEST(test_e2e_change_stats_generations)
{
    enum { N = 7, M = 5, K = 3 };
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'rb','event':'b.x','to':['fidbus.log']}}"));
    for (int i = 0; i < M; i++)
        ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);
    ck_assert_int_eq(pub(bus, "b.x", NULL, NULL), 1);
    json_decref(fb_e2e_ok(c, "route.del", "{'name':'rb'}"));
    for (int i = 0; i < K; i++)
        ck_assert_int_eq(pub(bus, "a.x", NULL, NULL), 1);

    json_t *s = fb_e2e_ok(c, "stats", NULL);
    ck_assert_int_eq(fb_e2e_jint(s, "generation"), 3);
    json_t *g = json_object_get(s, "generations");
    ck_assert_msg(json_object_size(g) == 3, "generations: %s", dump(g));
    ck_assert_int_eq(fb_e2e_jint(g, "1"), N);
    ck_assert_int_eq(fb_e2e_jint(g, "2"), M + 1);
    ck_assert_int_eq(fb_e2e_jint(g, "3"), K);
    json_t *routes = json_object_get(s, "routes");
    ck_assert_int_eq(fb_e2e_jint(json_object_get(routes, "ra"), "matched"), N + M + K);
    ck_assert_msg(!json_object_get(routes, "rb"), "a deleted route in stats");
    ck_assert_int_eq(fb_e2e_jint(s, "received"), N + M + K + 1);
    json_decref(s);
    /* each event is stamped with the generation that routed it */
    fb_e2e_ping(bus);
    ck_assert_int_eq(log_lines_gen(t, 1), N);
    ck_assert_int_eq(log_lines_gen(t, 2), M + 1);
    ck_assert_int_eq(log_lines_gen(t, 3), K);

    char *out = fb_e2e_ctl(t, 0, NULL, "stats", NULL);
    const char *head[] = {"GENERATION", "EVENTS", NULL};
    /* (the table is checked below, before more flips) */
    const char *g1[] = {"1 ", " 7", NULL};
    const char *ra[] = {"ra ", " 15", NULL};
    ck_assert_msg(fb_e2e_has_line(out, head) && fb_e2e_has_line(out, g1) &&
                      fb_e2e_has_line(out, ra) && strstr(out, "generation: 3\n"),
                  "stats:\n%s", out);
    free(out);

    /* the running table and the last 16 retired ones */
    for (int i = 0; i < 20; i++)
        json_decref(
            fb_e2e_ok(c, "route.apply", "{'replace':true,'add':[" R("ra", "a.*") "]}"));
    s = fb_e2e_ok(c, "stats", NULL);
    g = json_object_get(s, "generations");
    ck_assert_msg(json_object_size(g) == 17 && !json_object_get(g, "6") &&
                      fb_e2e_jint(g, "7") == 0 && fb_e2e_jint(g, "23") == 0,
                  "generations after 23: %s", dump(g));
    ck_assert_int_eq(
        fb_e2e_jint(json_object_get(json_object_get(s, "routes"), "ra"), "matched"),
        N + M + K);
    json_decref(s);

    finish(t, c, bus);
}
END_TEST

/* ------------------------------------------------------- config.export */

/* text with every `from` replaced by `to` (malloc'd). */
static char *replace_all(const char *text, const char *from, const char *to)
{
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = text; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(text) + n * (tl + 1) + 1), *o = out;
    ck_assert_ptr_nonnull(out);
    for (const char *p = text, *q; *p; p = q + fl) {
        q = strstr(p, from);
        if (!q) {
            strcpy(o, p);
            return out;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
    }
    *o = '\0';
    return out;
}

START_TEST(test_e2e_change_export_fresh)
{
    struct fb_e2e *t =
        fb_e2e_up(NULL, BASE "[route rb]\nevent = b.x\nto = fidbus.count\n");
    struct fidbus_client *c = connect_control(t);
    json_decref(fb_e2e_ok(c, "plugin.load", "{'path':'%s'}", TP("ver1")));
    json_decref(fb_e2e_ok(c, "plugin.load",
                          "{'path':'%s','name':'second','config':{'k':'v w'}}",
                          TP("ver2")));
    json_decref(
        fb_e2e_ok(c, "route.apply",
                  "{'del':['ra'],'add':[{'name':'canary','event':'s.x','to':['" VER1_FN
                  ":95','test.ver:5'],'mode':'split','split_by':'user'},"
                  "{'name':'tagged','event':'o.*','tags':{'region':'*','tier':'gold'},"
                  "'to':['fidbus.log','fidbus.count@1.0.0:2'],'priority':-7}]}"));
    json_decref(fb_e2e_ok(c, "route.add",
                          "{'route':{'name':'star','event':'*','to':['test.ver']}}"));
    json_t *routes1 = fb_e2e_ok(c, "route.list", NULL),
           *plugins1 = fb_e2e_ok(c, "plugin.list", NULL);
    json_t *e = fb_e2e_ok(c, "config.export", NULL);
    char *text = strdup(jstr(e, "config"));
    json_decref(e);
    fidbus_client_close(c);

    /* a second daemon with the exported file, its own paths */
    struct fb_e2e *t2 = fb_e2e_new();
    char *text2 = replace_all(text, t->dir, t2->dir);
    FILE *f = fopen(t2->conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text2, f);
    ck_assert_int_eq(fclose(f), 0);
    fb_e2e_start(t2);
    c = connect_control(t2);
    json_t *routes2 = fb_e2e_ok(c, "route.list", NULL),
           *plugins2 = fb_e2e_ok(c, "plugin.list", NULL);
    ck_assert_int_eq(fb_e2e_jint(routes2, "generation"), 1);
    json_t *a = json_object_get(routes1, "routes"),
           *b = json_object_get(routes2, "routes");
    ck_assert_msg(json_equal(a, b), "route.list differs:\n%s\n%s\nexport:\n%s", dump(a),
                  dump(b), text);
    a = json_object_get(plugins1, "plugins");
    b = json_object_get(plugins2, "plugins");
    ck_assert_msg(json_equal(a, b), "plugin.list differs:\n%s\n%s\nexport:\n%s", dump(a),
                  dump(b), text);
    ck_assert_msg(strstr(text2, "[plugin second]\n") && strstr(text2, "k = v w\n"),
                  "export lacks second's config key:\n%s", text2);
    json_decref(routes1);
    json_decref(routes2);
    json_decref(plugins1);
    json_decref(plugins2);
    free(text);
    free(text2);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t2);
    fb_e2e_free(t2);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* --------------------------------------------------------------- canary */

#define USERS 2000
#define PER_USER 3

/* Reads rec.txt from byte `from` on: for each line "rec v=V user=uN ...",
 * ver[N] |= 1 (V 1.0.0) or 2 (V 2.0.0) and seen[N]++. Returns the lines. */
static int read_rec(const struct fb_e2e *t, size_t from, int ver[USERS], int seen[USERS],
                    size_t *end)
{
    size_t len = 0;
    char *text = fb_e2e_read(fb_e2e_file(t, "rec.txt"), &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_le(from, len);
    int lines = 0;
    for (char *p = text + from, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        ck_assert_msg(nl, "unterminated line in rec.txt");
        *nl = '\0';
        char v[16];
        int u;
        ck_assert_msg(sscanf(p, "rec v=%15s user=u%d ", v, &u) == 2 && u >= 0 &&
                          u < USERS,
                      "rec.txt line: %s", p);
        ck_assert_msg(!strcmp(v, "1.0.0") || !strcmp(v, "2.0.0"), "rec.txt line: %s", p);
        ver[u] |= v[0] == '1' ? 1 : 2;
        seen[u]++;
        lines++;
    }
    *end = len;
    free(text);
    return lines;
}

/* Acked publishes of c.x for every user, `per` each, pipelined. */
static void publish_users(struct fidbus_client *bus, int per)
{
    uint64_t seq = 1ull << 63;
    for (int r = 0; r < per; r++) {
        for (int u = 0; u < USERS; u++) {
            char name[16];
            snprintf(name, sizeof name, "u%d", u);
            struct fidbus_tag tag = {"user", name};
            ck_assert_int_eq(
                fidbus_publish_seq(bus, seq++, FIDBUS_FLAG_ACK, "c.x", &tag, 1, NULL, 0),
                0);
        }
        ck_assert_int_eq(fidbus_flush(bus), 0);
        for (int u = 0; u < USERS; u++) {
            struct fidbus_answer a;
            ck_assert_int_eq(fidbus_client_recv(bus, &a, -1), 0);
            ck_assert_msg(a.type == FIDBUS_MSG_ACK && a.result == 1,
                          "user event: type %llu code %llu result %llu",
                          (unsigned long long)a.type, (unsigned long long)a.code,
                          (unsigned long long)a.result);
        }
    }
}

START_TEST(test_e2e_change_canary)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_TP("rec1") "file = @D@/rec.txt\n" FB_E2E_TP(
                                           "rec2") "file = @D@/rec.txt\n");
    struct fidbus_client *c = connect_control(t), *bus = fb_e2e_connect(t);
    char *out = fb_e2e_ctl(t, 0, NULL, "route", "add", "canary", "c.x", "--to",
                           "test.rec@1.0.0:95", "--to", "test.rec@2.0.0:5", "--mode",
                           "split", "--split-by", "user", NULL);
    ck_assert_str_eq(out, "generation: 2\n");
    free(out);

    static int ver[USERS], seen[USERS];
    memset(ver, 0, sizeof ver);
    memset(seen, 0, sizeof seen);
    publish_users(bus, PER_USER);
    size_t end = 0;
    ck_assert_int_eq(read_rec(t, 0, ver, seen, &end), USERS * PER_USER);
    int v2 = 0;
    for (int u = 0; u < USERS; u++) {
        ck_assert_msg(seen[u] == PER_USER, "u%d: %d events recorded", u, seen[u]);
        ck_assert_msg(ver[u] == 1 || ver[u] == 2, "u%d's events went to both versions",
                      u);
        v2 += ver[u] == 2;
    }
    /* 5% of 2000 users is 100, sd sqrt(2000 * 0.05 * 0.95) = 9.7: the
     * tolerance 5% +- 1.5% (70..130 users) is 3 sd. The pick hashes the
     * user (fb_route_split_pick), so these users always give one share. */
    ck_assert_msg(v2 >= 70 && v2 <= 130,
                  "%d of %d users on 2.0.0 (%.2f%%), expected 5%% +- 1.5%%", v2, USERS,
                  100.0 * v2 / USERS);
    /* route.test answers what dispatch did */
    char v1id[FIDBUS_FUNCID_HEX], v2id[FIDBUS_FUNCID_HEX];
    hex_id("test.rec@1.0.0", v1id);
    hex_id("test.rec@2.0.0", v2id);
    for (int u = 0; u < 40; u++) {
        json_t *r =
            fb_e2e_ok(c, "route.test", "{'event':'c.x','tags':{'user':'u%d'}}", u);
        const char *id =
            json_string_value(json_array_get(json_object_get(r, "targets"), 0));
        ck_assert_msg(id && !strcmp(id, ver[u] == 2 ? v2id : v1id),
                      "route.test for u%d disagrees with dispatch", u);
        json_decref(r);
    }

    /* roll forward: 0/100 moves everyone */
    json_t *r = fb_e2e_ok(c, "route.apply",
                          "{'del':['canary'],'add':[{'name':'canary','event':'c.x','to':["
                          "'test.rec@1.0.0:0','test.rec@2.0.0:100'],'mode':'split',"
                          "'split_by':'user'}]}");
    ck_assert_int_eq(fb_e2e_jint(r, "generation"), 3);
    json_decref(r);
    memset(ver, 0, sizeof ver);
    memset(seen, 0, sizeof seen);
    publish_users(bus, 1);
    ck_assert_int_eq(read_rec(t, end, ver, seen, &end), USERS);
    for (int u = 0; u < USERS; u++)
        ck_assert_msg(seen[u] == 1 && ver[u] == 2,
                      "u%d after 0/100: seen %d, version bits %d", u, seen[u], ver[u]);

    json_t *s = fb_e2e_ok(c, "stats", NULL);
    ck_assert_int_eq(
        fb_e2e_jint(json_object_get(json_object_get(s, "routes"), "canary"), "matched"),
        USERS * (PER_USER + 1));
    ck_assert_int_eq(fb_e2e_jint(json_object_get(s, "generations"), "2"),
                     USERS * PER_USER);
    ck_assert_int_eq(fb_e2e_jint(json_object_get(s, "generations"), "3"), USERS);
    json_decref(s);
    fprintf(stderr, "test_e2e_change_canary: %d of %d users (%.2f%%) on 2.0.0 at 95/5\n",
            v2, USERS, 100.0 * v2 / USERS);

    finish(t, c, bus);
}
END_TEST

static Suite *e2e_change_suite(void)
{
    Suite *s = suite_create("e2e.change");
    TCase *tc = tcase_create("change");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_change_route_add);
    tcase_add_test(tc, test_e2e_change_route_same_function_config);
    tcase_add_test(tc, test_e2e_change_route_del);
    tcase_add_test(tc, test_e2e_change_route_apply);
    tcase_add_test(tc, test_e2e_change_route_test_apply);
    tcase_add_test(tc, test_e2e_change_plugin_load);
    tcase_add_test(tc, test_e2e_change_plugin_unload);
    tcase_add_test(tc, test_e2e_change_plugin_reload);
    tcase_add_test(tc, test_e2e_change_two_versions);
    tcase_add_test(tc, test_e2e_change_config_reload);
    tcase_add_test(tc, test_e2e_change_sighup);
    tcase_add_test(tc, test_e2e_change_stats_generations);
    tcase_add_test(tc, test_e2e_change_export_fresh);
    tcase_add_test(tc, test_e2e_change_canary);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_change_suite());
}
