/*
 * End-to-end tests of the durable runtime state (ctest: e2e.state; design
 * section 6, "the latest intent wins"): changes made over the control
 * socket survive kill -9 (route.list, plugin.list and func.list compared
 * byte for byte before and after, generation never going back); a failed
 * change leaves state.cbor as it was; a damaged state.cbor (truncated,
 * empty, garbage, a map of the wrong format) is renamed
 * state.cbor.corrupt-<digits>, logged, and the config used; a config edited
 * while the daemon was down wins over the state, which is kept as
 * state.cbor.bak-<digits>.
 *
 * The daemon is killed with fb_e2e_kill9 (its sockets stay behind as
 * after a real crash) and started again in place with fb_e2e_start: same
 * config file, same runtime and state dirs. Control arguments are written
 * as JSON with ' for " and converted to CBOR with ctl/json_cbor.c.
 */
#include <cbor.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "json_cbor.h"

/* ------------------------------------------------------------ helpers */

static struct fidbus_client *connect_control(const struct fb_e2e *t)
{
    /* Each change fsyncs state.cbor; a busy virtual disk can take seconds. */
    struct fidbus_client_opts o = {.timeout_ms = 60000};
    return fb_e2e_connect_control(t, &o);
}

/*
 * REQUEST cmd with args given as JSON text (printf format; ' stands for ",
 * "@B@" for the build dir; NULL fmt: no args). Returns the protocol code
 * (0 = ok) and, on success and when out is non-NULL, the result map.
 */
static int reqv(struct fidbus_client *c, cbor_item_t **out, const char *cmd,
                const char *fmt, va_list ap)
{
    uint8_t *args = NULL;
    size_t alen = 0;
    if (fmt) {
        char json[4096], sub[8192];
        int n = vsnprintf(json, sizeof json, fmt, ap);
        ck_assert_msg(n > 0 && (size_t)n < sizeof json, "%s: args too long", cmd);
        size_t k = 0;
        for (const char *p = json; *p; p++) {
            if (strncmp(p, "@B@", 3) == 0) {
                k += (size_t)snprintf(sub + k, sizeof sub - k, "%s", fb_e2e_build_dir());
                p += 2;
            } else {
                sub[k++] = *p == '\'' ? '"' : *p;
            }
            ck_assert_msg(k < sizeof sub - 1, "%s: args too long", cmd);
        }
        sub[k] = '\0';
        char err[200];
        ck_assert_msg(fbctl_json_to_cbor(sub, k, &args, &alen, err, sizeof err) == 0,
                      "%s args: %s: %s", cmd, err, sub);
    }
    uint8_t *res = NULL;
    size_t rlen = 0;
    int rc = fidbus_request(c, cmd, args, alen, &res, &rlen);
    free(args);
    if (out)
        *out = NULL;
    int code = rc == 0 ? 0 : fidbus_error_code(rc);
    ck_assert_msg(rc == 0 || code != 0, "%s: %s", cmd, fidbus_strerror(rc));
    if (rc == 0 && out) {
        struct cbor_load_result lr;
        cbor_item_t *it = cbor_load(res, rlen, &lr);
        ck_assert_msg(it && lr.error.code == CBOR_ERR_NONE && lr.read == rlen &&
                          cbor_isa_map(it),
                      "%s: result is not one CBOR map", cmd);
        *out = it;
    }
    free(res);
    return code;
}

/* reqv asserting success; the result map (cbor_decref it) or NULL when
 * out is not wanted. */
static cbor_item_t *req_ok(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cbor_item_t *req_ok(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cbor_item_t *r = NULL;
    int code = reqv(c, &r, cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(code == 0, "%s: code %d: %s", cmd, code, fidbus_client_last_error(c));
    return r;
}

/* reqv asserting failure with `want`. */
static void req_fails(struct fidbus_client *c, int want, const char *cmd, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void req_fails(struct fidbus_client *c, int want, const char *cmd, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    int code = reqv(c, NULL, cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(code == want, "%s: code %d (%s), expected %d", cmd, code,
                  code ? fidbus_client_last_error(c) : "ok", want);
}

/* The value under text key `key` of map m, NULL if absent. */
static cbor_item_t *mget(const cbor_item_t *m, const char *key)
{
    ck_assert_msg(m && cbor_isa_map(m), "looking up '%s' in a non-map", key);
    struct cbor_pair *p = cbor_map_handle(m);
    size_t n = strlen(key);
    for (size_t i = 0; i < cbor_map_size(m); i++)
        if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
            cbor_string_length(p[i].key) == n &&
            memcmp(cbor_string_handle(p[i].key), key, n) == 0)
            return p[i].value;
    return NULL;
}

static uint64_t muint(const cbor_item_t *m, const char *key)
{
    cbor_item_t *v = mget(m, key);
    ck_assert_msg(v && cbor_isa_uint(v), "'%s' missing or not an unsigned integer", key);
    return cbor_get_int(v);
}

static uint64_t generation(struct fidbus_client *c)
{
    cbor_item_t *r = req_ok(c, "status", NULL);
    uint64_t g = muint(r, "generation");
    cbor_decref(&r);
    return g;
}

/* A compact JSON-like rendering of v, for failure messages. */
static void dump(const cbor_item_t *v, FILE *f)
{
    switch (cbor_typeof(v)) {
    case CBOR_TYPE_UINT:
        fprintf(f, "%llu", (unsigned long long)cbor_get_int(v));
        break;
    case CBOR_TYPE_NEGINT:
        fprintf(f, "-%llu", (unsigned long long)cbor_get_int(v) + 1);
        break;
    case CBOR_TYPE_STRING:
        if (cbor_string_is_definite(v))
            fprintf(f, "\"%.*s\"", (int)cbor_string_length(v),
                    (const char *)cbor_string_handle(v));
        else
            fputs("\"(chunked)\"", f);
        break;
    case CBOR_TYPE_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < cbor_array_size(v); i++) {
            fputs(i ? ", " : "", f);
            dump(cbor_array_handle(v)[i], f);
        }
        fputc(']', f);
        break;
    case CBOR_TYPE_MAP:
        fputc('{', f);
        for (size_t i = 0; i < cbor_map_size(v); i++) {
            fputs(i ? ", " : "", f);
            dump(cbor_map_handle(v)[i].key, f);
            fputs(": ", f);
            dump(cbor_map_handle(v)[i].value, f);
        }
        fputc('}', f);
        break;
    case CBOR_TYPE_FLOAT_CTRL:
        if (cbor_is_null(v))
            fputs("null", f);
        else if (cbor_is_bool(v))
            fputs(cbor_get_bool(v) ? "true" : "false", f);
        else
            fputs("(simple/float)", f);
        break;
    default:
        fputs("(other)", f);
    }
}

/* What the daemon runs, as its listings give it: serialised CBOR of
 * route.list's routes, plugin.list's plugins and func.list's functions,
 * plus a readable rendering for failure messages. */
struct listing {
    unsigned char *bin[3];
    size_t len[3];
    char *text;
    uint64_t generation;
};

static void take_part(struct listing *l, int i, const char *cmd, const char *key,
                      struct fidbus_client *c, FILE *f)
{
    cbor_item_t *r = req_ok(c, cmd, NULL);
    cbor_item_t *v = mget(r, key);
    ck_assert_msg(v && cbor_isa_array(v), "%s: '%s' is not an array", cmd, key);
    size_t cap = 0;
    l->len[i] = cbor_serialize_alloc(v, &l->bin[i], &cap);
    ck_assert_uint_gt(l->len[i], 0);
    fprintf(f, "%s %s: ", cmd, key);
    dump(v, f);
    fputc('\n', f);
    cbor_decref(&r);
}

static struct listing listing_take(struct fidbus_client *c)
{
    struct listing l = {0};
    size_t tlen = 0;
    FILE *f = open_memstream(&l.text, &tlen);
    ck_assert_ptr_nonnull(f);
    take_part(&l, 0, "route.list", "routes", c, f);
    take_part(&l, 1, "plugin.list", "plugins", c, f);
    take_part(&l, 2, "func.list", "functions", c, f);
    ck_assert_int_eq(fclose(f), 0);
    l.generation = generation(c);
    return l;
}

static void listing_clear(struct listing *l)
{
    for (int i = 0; i < 3; i++)
        free(l->bin[i]);
    free(l->text);
    memset(l, 0, sizeof *l);
}

#define ASSERT_SAME_LISTING(a, b, when)                                                  \
    do {                                                                                 \
        for (int i_ = 0; i_ < 3; i_++)                                                   \
            ck_assert_msg((a).len[i_] == (b).len[i_] &&                                  \
                              memcmp((a).bin[i_], (b).bin[i_], (a).len[i_]) == 0,        \
                          "%s: the listings differ.\nbefore:\n%.3000s\nafter:\n%.3000s", \
                          (when), (a).text, (b).text);                                   \
    } while (0)

/* Does the listing text mention s? */
static bool listing_has(const struct listing *l, const char *s)
{
    return strstr(l->text, s) != NULL;
}

/* Files in the state dir named PREFIX<digits>[-<digits>]; the first one's
 * name goes to first (if non-NULL, room for 256 bytes). */
static int aside_files(const struct fb_e2e *t, const char *prefix, char *first)
{
    DIR *d = opendir(fb_e2e_file(t, "state"));
    ck_assert_msg(d != NULL, "no state dir");
    int n = 0;
    size_t pl = strlen(prefix);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        const char *p = e->d_name + pl;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0)
            continue;
        p += digits;
        if (*p == '-' && p[1] && strspn(p + 1, "0123456789") == strlen(p + 1))
            p += strlen(p);
        if (*p)
            continue;
        if (first && n == 0)
            snprintf(first, 256, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static const char *state_file(const struct fb_e2e *t)
{
    return fb_e2e_file(t, "state/state.cbor");
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* Asserts the daemon's stderr has a line naming `what`. */
static void assert_logged(const struct fb_e2e *t, const char *what)
{
    char *err = fb_e2e_stderr(t);
    const char *const needles[] = {what, NULL};
    ck_assert_msg(fb_e2e_has_line(err, needles), "no log line with '%s'; stderr:\n%s",
                  what, err);
    free(err);
}

/* Closes c, kills the daemon with kill -9 and starts it again in place;
 * returns a new control connection. */
static struct fidbus_client *kill9_restart(struct fb_e2e *t, struct fidbus_client *c)
{
    fidbus_client_close(c);
    fb_e2e_kill9(t);
    fb_e2e_start(t);
    return connect_control(t);
}

/* What the set-aside tests change before the restart: a route and a
 * plugin instance the config does not have. */
static void add_rt_and_extra(struct fidbus_client *c)
{
    cbor_item_t *r =
        req_ok(c, "route.add",
               "{'route': {'name': 'rt', 'event': 'r.x', 'to': ['fidbus.log']}}");
    cbor_decref(&r);
    r = req_ok(c, "plugin.load",
               "{'path': '@B@/tests/plugins/ver1.so', 'name': 'extra'}");
    cbor_decref(&r);
}

/* ------------------------------------------------------------- tests */

#define BASE                                                                             \
    FB_E2E_LOG FB_E2E_COUNT "[route all]\nevent = a.*\nto = fidbus.log, "                \
                            "fidbus.count@1.0.0:3\n"

#define RESTORE_SECTIONS                                                                 \
    BASE FB_E2E_TP("ver1") FB_E2E_TP("hello") "[route v]\nevent = v.x\nto = test.ver\n"

/* Every kind of change, kill -9, and the same set comes back. */
START_TEST(test_e2e_state_restored_after_kill9)
{
    struct fb_e2e *t = fb_e2e_up(NULL, RESTORE_SECTIONS);
    struct fidbus_client *c = connect_control(t);
    struct listing cfg = listing_take(c);

    cbor_item_t *r = req_ok(c, "route.add",
                            "{'route': {'name': 'added', 'event': 'b.x', 'tags': "
                            "{'region': 'eu', 'k': '*'}, 'to': ['fidbus.count@1.0.0:2', "
                            "'fidbus.log:1'], 'mode': 'split', 'split_by': 'user', "
                            "'priority': 5}}");
    ck_assert_uint_eq(muint(r, "generation"), cfg.generation + 1);
    cbor_decref(&r);
    /* test.ver@2.0.0 becomes the latest: route v follows it */
    r = req_ok(c, "plugin.load",
               "{'path': '@B@/tests/plugins/ver2.so', 'name': 'v2extra', "
               "'config': {'colour': 'blue', 'n': 3}}");
    cbor_decref(&r);
    r = req_ok(c, "route.apply",
               "{'del': ['all'], 'add': [{'name': 'all', 'event': 'a.*', 'to': "
               "['fidbus.log']}, {'name': 'pinned', 'event': 'p.x', 'to': "
               "['test.ver@1.0.0:1', 'test.ver@2.0.0:4'], 'mode': 'split'}]}");
    cbor_decref(&r);
    r = req_ok(c, "plugin.unload", "{'name': 'hello'}");
    cbor_decref(&r);
    r = req_ok(c, "plugin.reload", "{'name': 'ver1'}");
    cbor_decref(&r);

    struct listing before = listing_take(c);
    ck_assert_uint_eq(before.generation, cfg.generation + 5);
    ck_assert_msg(
        listing_has(&before, "\"v2extra\"") && !listing_has(&before, "\"hello\"") &&
            listing_has(&before, "\"pinned\"") && listing_has(&before, "\"added\""),
        "the changes are not in the listings:\n%s", before.text);

    c = kill9_restart(t, c);
    struct listing after = listing_take(c);
    ASSERT_SAME_LISTING(before, after, "after kill -9");
    ck_assert_msg(after.generation >= before.generation,
                  "generation went back: %llu before kill -9, %llu after",
                  (unsigned long long)before.generation,
                  (unsigned long long)after.generation);
    ck_assert_int_eq(aside_files(t, "state.cbor.corrupt-", NULL), 0);
    ck_assert_int_eq(aside_files(t, "state.cbor.bak-", NULL), 0);
    assert_logged(t, "restored");
    fidbus_client_close(c);

    /* the restored set serves: route v calls test.ver@2.0.0 (v2extra) */
    struct fidbus_client *bus = fb_e2e_connect(t);
    fb_e2e_publish_ack(bus, "v.x", 1);
    fb_e2e_publish_ack(bus, "p.x", 1);
    fidbus_client_close(bus);

    /* and a clean stop keeps it too */
    fb_e2e_stop_ok(t);
    fb_e2e_start(t);
    c = connect_control(t);
    struct listing again = listing_take(c);
    ASSERT_SAME_LISTING(before, again, "after SIGTERM and a restart");
    ck_assert_uint_ge(again.generation, after.generation);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);

    listing_clear(&cfg);
    listing_clear(&before);
    listing_clear(&after);
    listing_clear(&again);
    fb_e2e_free(t);
}
END_TEST

/* Refused changes reach neither the running set nor state.cbor. */
START_TEST(test_e2e_state_failed_change_not_saved)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE FB_E2E_TP("ver1"));
    struct fidbus_client *c = connect_control(t);
    cbor_item_t *r = req_ok(
        c, "route.add", "{'route': {'name': 'ok', 'event': 'o.x', 'to': ['test.ver']}}");
    cbor_decref(&r);
    struct listing before = listing_take(c);
    size_t slen = 0;
    char *saved = fb_e2e_read(state_file(t), &slen);
    ck_assert_msg(saved && slen > 0, "no state.cbor after a change");

    req_fails(c, FIDBUS_NOT_FOUND, "route.add",
              "{'route': {'name': 'ghost', 'event': 'g.x', 'to': ['no.such@1.0.0']}}");
    req_fails(c, FIDBUS_CONFLICT, "route.apply",
              "{'add': [{'name': 'good', 'event': 'g.y', 'to': ['fidbus.log']}, "
              "{'name': 'ok', 'event': 'x.y', 'to': ['fidbus.log']}]}");
    req_fails(c, FIDBUS_NOT_FOUND, "route.apply",
              "{'del': ['nope'], 'add': [{'name': 'good', 'event': 'g.y', 'to': "
              "['fidbus.log']}]}");
    req_fails(c, FIDBUS_SIGNATURE_MISMATCH, "route.add",
              "{'route': {'name': 'sig', 'event': 's.x', 'to': ['fidbus.log'], "
              "'signature': '%064d'}}",
              0);
    req_fails(c, FIDBUS_NOT_FOUND, "plugin.load",
              "{'path': '@B@/tests/plugins/no_such_plugin.so', 'name': 'ghost'}");
    req_fails(c, FIDBUS_CONFLICT, "plugin.load",
              "{'path': '@B@/tests/plugins/ver1.so', 'name': 'again'}");
    req_fails(c, FIDBUS_CONFLICT, "plugin.unload", "{'name': 'log'}");
    req_fails(c, FIDBUS_NOT_FOUND, "plugin.reload", "{'name': 'ghost'}");

    struct listing now = listing_take(c);
    ASSERT_SAME_LISTING(before, now, "after refused changes");
    ck_assert_uint_eq(now.generation, before.generation);
    size_t nlen = 0;
    char *cur = fb_e2e_read(state_file(t), &nlen);
    ck_assert_msg(cur && nlen == slen && memcmp(cur, saved, slen) == 0,
                  "a refused change rewrote state.cbor");
    free(cur);

    c = kill9_restart(t, c);
    struct listing after = listing_take(c);
    ASSERT_SAME_LISTING(before, after, "after kill -9");
    ck_assert_uint_ge(after.generation, before.generation);
    ck_assert_msg(!listing_has(&after, "\"ghost\"") && !listing_has(&after, "\"good\"") &&
                      !listing_has(&after, "\"again\"") &&
                      !listing_has(&after, "\"sig\""),
                  "a refused change came back:\n%s", after.text);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);

    free(saved);
    listing_clear(&before);
    listing_clear(&now);
    listing_clear(&after);
    fb_e2e_free(t);
}
END_TEST

/* Ways a state file can be unusable. */
enum damage { TRUNCATED, EMPTY, GARBAGE, WRONG_FORMAT, NDAMAGE };
static const char *const damage_name[NDAMAGE] = {"truncated to half", "empty",
                                                 "garbage bytes", "format 99"};

static void damage(const char *path, enum damage how)
{
    size_t len = 0;
    char *old = fb_e2e_read(path, &len);
    ck_assert_msg(old && len > 8, "no state file to damage at %s", path);
    switch (how) {
    case TRUNCATED:
        ck_assert_int_eq(truncate(path, (off_t)(len / 2)), 0);
        break;
    case EMPTY:
        ck_assert_int_eq(truncate(path, 0), 0);
        break;
    case GARBAGE: {
        /* 0xff is a "break" outside any indefinite item: never well-formed */
        static const unsigned char junk[] = {0xff, 0x00, 'n', 'o',  't',  ' ', 'c',
                                             'b',  'o',  'r', 0xfe, 0x1c, 0x9a};
        write_bytes(path, junk, sizeof junk);
        break;
    }
    case WRONG_FORMAT: {
        /* {"format": 99}: well-formed CBOR, not a state this daemon reads */
        static const unsigned char m[] = {0xa1, 0x66, 'f', 'o',  'r',
                                          'm',  'a',  't', 0x18, 99};
        write_bytes(path, m, sizeof m);
        break;
    }
    case NDAMAGE:
        break;
    }
    free(old);
}

START_TEST(test_e2e_state_corrupt_file_set_aside)
{
    enum damage how = (enum damage)_i;
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t);
    struct listing cfg = listing_take(c);
    add_rt_and_extra(c);
    fidbus_client_close(c);
    fb_e2e_kill9(t);

    damage(state_file(t), how);
    fb_e2e_start(t);
    c = connect_control(t);
    struct listing after = listing_take(c);
    ASSERT_SAME_LISTING(cfg, after, damage_name[how]);
    char name[256];
    ck_assert_msg(aside_files(t, "state.cbor.corrupt-", name) == 1,
                  "%s: no state.cbor.corrupt-<digits> in the state dir",
                  damage_name[how]);
    ck_assert_int_eq(aside_files(t, "state.cbor.bak-", NULL), 0);
    assert_logged(t, name);

    /* the daemon wrote a good state again: a second crash is uneventful */
    c = kill9_restart(t, c);
    struct listing again = listing_take(c);
    ASSERT_SAME_LISTING(cfg, again, "the restart after the one that set the state aside");
    ck_assert_uint_ge(again.generation, after.generation);
    ck_assert_int_eq(aside_files(t, "state.cbor.corrupt-", NULL), 1);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);

    listing_clear(&cfg);
    listing_clear(&after);
    listing_clear(&again);
    fb_e2e_free(t);
}
END_TEST

/* An admin edited the config while the daemon was down: what the edit
 * changed wins, item by item; the runtime items the edit did not touch
 * stay (the rule of config.reload; tests/e2e/test_e2e_reload.c has the
 * per-item cases). */
START_TEST(test_e2e_state_edited_config_wins)
{
    struct fb_e2e *t = fb_e2e_up(NULL, BASE);
    struct fidbus_client *c = connect_control(t);
    add_rt_and_extra(c);
    struct listing before = listing_take(c);
    fidbus_client_close(c);
    fb_e2e_kill9(t);
    size_t slen = 0;
    char *saved = fb_e2e_read(state_file(t), &slen);
    ck_assert_msg(saved && slen > 0, "no state.cbor");

    fb_e2e_config(t, NULL, BASE "[route edited]\nevent = e.x\nto = fidbus.count\n");
    fb_e2e_start(t);
    c = connect_control(t);
    struct listing after = listing_take(c);
    ck_assert_msg(listing_has(&after, "\"edited\"") && listing_has(&after, "\"rt\"") &&
                      listing_has(&after, "\"extra\"") && listing_has(&after, "test.ver"),
                  "the edit was not applied over the state:\n%s", after.text);
    ck_assert_msg(after.generation > before.generation,
                  "generation went back: %llu before, %llu after the edited config",
                  (unsigned long long)before.generation,
                  (unsigned long long)after.generation);
    char name[256];
    ck_assert_msg(aside_files(t, "state.cbor.bak-", name) == 1,
                  "no state.cbor.bak-<digits> in the state dir");
    ck_assert_int_eq(aside_files(t, "state.cbor.corrupt-", NULL), 0);
    char bak[300];
    snprintf(bak, sizeof bak, "state/%s", name);
    size_t blen = 0;
    char *kept = fb_e2e_read(fb_e2e_file(t, bak), &blen);
    ck_assert_msg(kept && blen == slen && memcmp(kept, saved, slen) == 0,
                  "%s is not the old state", name);
    assert_logged(t, name);

    /* the config is unchanged from now on: the new state is restored */
    c = kill9_restart(t, c);
    struct listing again = listing_take(c);
    ASSERT_SAME_LISTING(after, again, "a restart with the edited config unchanged");
    ck_assert_int_eq(aside_files(t, "state.cbor.bak-", NULL), 1);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);

    free(saved);
    free(kept);
    listing_clear(&before);
    listing_clear(&after);
    listing_clear(&again);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_state_suite(void)
{
    Suite *s = suite_create("e2e.state");
    TCase *tc = tcase_create("state");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_state_restored_after_kill9);
    tcase_add_test(tc, test_e2e_state_failed_change_not_saved);
    tcase_add_loop_test(tc, test_e2e_state_corrupt_file_set_aside, 0, NDAMAGE);
    tcase_add_test(tc, test_e2e_state_edited_config_wins);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_state_suite());
}
