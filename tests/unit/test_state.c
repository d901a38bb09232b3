/*
 * Unit tests for route / plugin maps in CBOR (daemon/config/spec_cbor.c) and the
 * state file (daemon/config/state.c): specs survive spec -> CBOR -> spec, every
 * value a config file could not hold is refused with a message naming the
 * key, the longest values accepted still load through the config parser,
 * and state.cbor is saved atomically and refused whole when corrupt or
 * truncated. Run under ASan too, so error paths are checked for leaks.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cbor.h>

#include <fidbus/proto.h>

#include "config/config.h"
#include "config/route_spec.h"
#include "config/spec_cbor.h"
#include "config/cbor_util.h"
#include "config/state.h"

#define SIG64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char err[1024];

/* ----------------------------------------------------------- helpers */

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* A string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void add(cbor_item_t *map, const char *key, cbor_item_t *val)
{
    ck_assert_ptr_nonnull(val);
    bool ok =
        cbor_map_add(map, (struct cbor_pair){.key = cbor_move(cbor_build_string(key)),
                                             .value = cbor_move(val)});
    ck_assert(ok);
}

static cbor_item_t *text(const char *s)
{
    return cbor_build_string(s);
}

static cbor_item_t *text_array(const char *const *items, size_t n)
{
    cbor_item_t *a = cbor_new_definite_array(n);
    for (size_t i = 0; i < n; i++)
        ck_assert(cbor_array_push(a, cbor_move(text(items[i]))));
    return a;
}

static cbor_item_t *one_tag(const char *k, const char *v)
{
    cbor_item_t *m = cbor_new_definite_map(1);
    add(m, k, text(v));
    return m;
}

/*
 * A valid route map (name r1) with key `skip` left out and, when `key` is
 * given, key => val added (val consumed). So a case can drop a key,
 * replace one (skip == key), or add an unknown one.
 */
static cbor_item_t *route_with(const char *skip, const char *key, cbor_item_t *val)
{
    static const char *const to[] = {"shop.ship@1.0.0"};
    cbor_item_t *m = cbor_new_indefinite_map();
    const char *sk = skip ? skip : "";
    if (strcmp(sk, "name") != 0)
        add(m, "name", text("r1"));
    if (strcmp(sk, "event") != 0)
        add(m, "event", text("order.created"));
    if (strcmp(sk, "tags") != 0)
        add(m, "tags", one_tag("region", "eu"));
    if (strcmp(sk, "to") != 0)
        add(m, "to", text_array(to, 1));
    if (strcmp(sk, "mode") != 0)
        add(m, "mode", text("all"));
    if (strcmp(sk, "priority") != 0)
        add(m, "priority", cbor_build_uint8(0));
    if (key)
        add(m, key, val);
    return m;
}

static cbor_item_t *plugin_with(const char *skip, const char *key, cbor_item_t *val)
{
    cbor_item_t *m = cbor_new_indefinite_map();
    const char *sk = skip ? skip : "";
    if (strcmp(sk, "name") != 0)
        add(m, "name", text("p1"));
    if (strcmp(sk, "path") != 0)
        add(m, "path", text("/usr/lib/fidbus/log.so"));
    if (key)
        add(m, key, val);
    return m;
}

/* A config map with one entry k => v (v consumed). */
static cbor_item_t *config1(const char *k, cbor_item_t *v)
{
    cbor_item_t *m = cbor_new_definite_map(1);
    add(m, k, v);
    return m;
}

/* Serialises and reloads, so a test decodes what went over the wire. */
static cbor_item_t *reload(const cbor_item_t *it)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    size_t n = cbor_serialize_alloc(it, &buf, &cap);
    ck_assert_uint_gt(n, 0);
    struct cbor_load_result res;
    cbor_item_t *back = cbor_load(buf, n, &res);
    free(buf);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(res.read, n);
    return back;
}

static bool str_eq_opt(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static void assert_spec_eq(const struct fb_route_spec *a, const struct fb_route_spec *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert_str_eq(a->event, b->event);
    ck_assert_uint_eq(a->ntags, b->ntags);
    for (size_t i = 0; i < a->ntags; i++) {
        ck_assert_str_eq(a->tags[i].key, b->tags[i].key);
        ck_assert_str_eq(a->tags[i].value, b->tags[i].value);
    }
    ck_assert_uint_eq(a->nto, b->nto);
    for (size_t i = 0; i < a->nto; i++) {
        ck_assert_str_eq(a->to[i].ns, b->to[i].ns);
        ck_assert_str_eq(a->to[i].name, b->to[i].name);
        ck_assert(str_eq_opt(a->to[i].version, b->to[i].version));
        ck_assert_uint_eq(a->to[i].weight, b->to[i].weight);
        ck_assert_int_eq(a->to[i].has_weight, b->to[i].has_weight);
    }
    ck_assert_int_eq(a->mode, b->mode);
    ck_assert(str_eq_opt(a->split_by, b->split_by));
    ck_assert(str_eq_opt(a->signature, b->signature));
    ck_assert_int_eq(a->priority, b->priority);
}

static void assert_plugin_eq(const struct fb_plugin_conf *a,
                             const struct fb_plugin_conf *b)
{
    ck_assert(str_eq_opt(a->name, b->name));
    ck_assert_str_eq(a->path, b->path);
    ck_assert_uint_eq(a->nkeys, b->nkeys);
    for (size_t i = 0; i < a->nkeys; i++) {
        ck_assert_str_eq(a->keys[i].key, b->keys[i].key);
        ck_assert_str_eq(a->keys[i].value, b->keys[i].value);
    }
}

/* Decodes a route map that must be refused with a message holding want. */
static void route_refused(cbor_item_t *map, const char *want)
{
    struct fb_route_spec s;
    err[0] = '\0';
    int rc = fb_route_from_cbor(map, &s, err, sizeof err);
    cbor_decref(&map);
    ck_assert_msg(rc == FIDBUS_INVALID, "rc %d for '%s' (err '%s')", rc, want, err);
    ck_assert_msg(strstr(err, want), "error '%s' does not say '%s'", err, want);
    ck_assert_ptr_null(s.name); /* left zeroed */
    ck_assert_ptr_null(s.to);
}

static void plugin_refused(cbor_item_t *map, const char *want)
{
    struct fb_plugin_conf pc;
    err[0] = '\0';
    int rc = fb_plugin_conf_from_cbor(map, &pc, err, sizeof err);
    cbor_decref(&map);
    ck_assert_msg(rc == FIDBUS_INVALID, "rc %d for '%s' (err '%s')", rc, want, err);
    ck_assert_msg(strstr(err, want), "error '%s' does not say '%s'", err, want);
    ck_assert_ptr_null(pc.name);
    ck_assert_ptr_null(pc.keys);
}

/* A canary route with every key set. */
static void canary_spec(struct fb_route_spec *s)
{
    memset(s, 0, sizeof *s);
    s->name = xstrdup("canary");
    s->event = xstrdup("order.*");
    s->ntags = 2;
    s->tags = calloc(2, sizeof *s->tags);
    s->tags[0] = (struct fb_tag_spec){xstrdup("region"), xstrdup("eu-west ü")};
    s->tags[1] = (struct fb_tag_spec){xstrdup("user"), xstrdup("*")};
    s->nto = 2;
    s->to = calloc(2, sizeof *s->to);
    s->to[0] = (struct fb_target_spec){xstrdup("shop"), xstrdup("ship"), xstrdup("1.0.0"),
                                       95, true};
    s->to[1] = (struct fb_target_spec){xstrdup("shop"), xstrdup("ship"), xstrdup("2.0.0"),
                                       5, true};
    s->mode = FB_MODE_SPLIT;
    s->split_by = xstrdup("user");
    s->priority = -42;
    s->signature = xstrdup(SIG64);
}

static void plain_spec(struct fb_route_spec *s, const char *name)
{
    memset(s, 0, sizeof *s);
    s->name = xstrdup(name);
    s->event = xstrdup("*");
    s->nto = 1;
    s->to = calloc(1, sizeof *s->to);
    s->to[0] = (struct fb_target_spec){xstrdup("log"), xstrdup("print"), NULL, 1, false};
    s->priority = INT64_MAX;
}

static void plugin_spec(struct fb_plugin_conf *pc, const char *name, size_t extra)
{
    memset(pc, 0, sizeof *pc);
    pc->name = xstrdup(name);
    pc->path = xstrdup("/opt/fidbus/plugins/log.so");
    pc->nkeys = 1 + extra;
    pc->keys = calloc(pc->nkeys, sizeof *pc->keys);
    pc->keys[0] = (struct fb_kv){xstrdup("path"), xstrdup(pc->path)};
    for (size_t i = 0; i < extra; i++) {
        char k[32], v[48];
        snprintf(k, sizeof k, "key%zu", i);
        snprintf(v, sizeof v, "value %zu; x=y", i);
        pc->keys[1 + i] = (struct fb_kv){xstrdup(k), xstrdup(v)};
    }
}

static void sample_state(struct fb_state *st)
{
    memset(st, 0, sizeof *st);
    st->set.nplugins = 2;
    st->set.plugins = calloc(2, sizeof *st->set.plugins);
    plugin_spec(&st->set.plugins[0], "log", 2);
    plugin_spec(&st->set.plugins[1], "count", 0);
    st->set.nroutes = 2;
    st->set.routes = calloc(2, sizeof *st->set.routes);
    canary_spec(&st->set.routes[0]);
    plain_spec(&st->set.routes[1], "all-events");
    fb_sha256_hex("[daemon]\n", 9, st->config_hash);
    st->generation = 7;
    st->written_at = 1700000000;
}

static void assert_state_eq(const struct fb_state *a, const struct fb_state *b)
{
    ck_assert_str_eq(a->config_hash, b->config_hash);
    ck_assert_uint_eq(a->generation, b->generation);
    ck_assert_int_eq(a->written_at, b->written_at);
    ck_assert_uint_eq(a->set.nplugins, b->set.nplugins);
    for (size_t i = 0; i < a->set.nplugins; i++)
        assert_plugin_eq(&a->set.plugins[i], &b->set.plugins[i]);
    ck_assert_uint_eq(a->set.nroutes, b->set.nroutes);
    for (size_t i = 0; i < a->set.nroutes; i++)
        assert_spec_eq(&a->set.routes[i], &b->set.routes[i]);
}

/* A fresh temporary dir; its state subdir does not exist yet. */
static char tmpdir[64], statedir[96];

static void make_dirs(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb-state-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(statedir, sizeof statedir, "%s/state", tmpdir);
}

static void remove_dirs(void)
{
    DIR *d = opendir(statedir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", statedir, e->d_name);
            if (unlink(p) != 0)
                rmdir(p);
        }
        closedir(d);
        rmdir(statedir);
    }
    rmdir(tmpdir);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0640);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void state_path(char *buf, size_t len, const char *leaf)
{
    snprintf(buf, len, "%s/%s", statedir, leaf);
}

/* ------------------------------------------------------------- routes */

START_TEST(test_state_route_round_trip)
{
    struct fb_route_spec in, out;
    canary_spec(&in);
    ck_assert_int_eq(fb_route_spec_validate(&in, err, sizeof err), 0);

    cbor_item_t *m = fb_route_to_cbor(&in);
    ck_assert_ptr_nonnull(m);
    cbor_item_t *back = reload(m);
    cbor_decref(&m);
    int rc = fb_route_from_cbor(back, &out, err, sizeof err);
    cbor_decref(&back);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    assert_spec_eq(&in, &out);
    fb_route_spec_clear(&out);
    ck_assert_ptr_null(out.name); /* clear leaves it zeroed */
    fb_route_spec_clear(&in);

    /* no weights, no split_by, no signature: nulls and has_weight survive */
    plain_spec(&in, "plain");
    m = fb_route_to_cbor(&in);
    ck_assert_ptr_nonnull(m);
    back = reload(m);
    cbor_decref(&m);
    rc = fb_route_from_cbor(back, &out, err, sizeof err);
    cbor_decref(&back);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    assert_spec_eq(&in, &out);
    ck_assert_ptr_null(out.split_by);
    ck_assert_ptr_null(out.signature);
    ck_assert(!out.to[0].has_weight);
    fb_route_spec_clear(&out);
    fb_route_spec_clear(&in);
}
END_TEST

START_TEST(test_state_route_minimal_and_chunked)
{
    /* only the required keys, text sent as chunked strings */
    cbor_item_t *m = cbor_new_indefinite_map();
    cbor_item_t *ev = cbor_new_indefinite_string();
    ck_assert(cbor_string_add_chunk(ev, cbor_move(text("order."))));
    ck_assert(cbor_string_add_chunk(ev, cbor_move(text("created"))));
    add(m, "event", ev);
    add(m, "name", text("r2"));
    cbor_item_t *to = cbor_new_indefinite_array();
    cbor_item_t *t = cbor_new_indefinite_string();
    ck_assert(cbor_string_add_chunk(t, cbor_move(text("a.b"))));
    ck_assert(cbor_string_add_chunk(t, cbor_move(text(":3"))));
    ck_assert(cbor_array_push(to, cbor_move(t)));
    add(m, "to", to);
    add(m, "split_by", cbor_new_null());
    add(m, "priority", cbor_build_negint64(UINT64_C(9223372036854775807)));
    cbor_item_t *back = reload(m);
    cbor_decref(&m);

    struct fb_route_spec s;
    int rc = fb_route_from_cbor(back, &s, err, sizeof err);
    cbor_decref(&back);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    ck_assert_str_eq(s.name, "r2");
    ck_assert_str_eq(s.event, "order.created");
    ck_assert_uint_eq(s.ntags, 0);
    ck_assert_uint_eq(s.nto, 1);
    ck_assert_str_eq(s.to[0].ns, "a");
    ck_assert_uint_eq(s.to[0].weight, 3);
    ck_assert_int_eq(s.mode, FB_MODE_ALL);
    ck_assert_ptr_null(s.split_by);
    ck_assert(s.priority == INT64_MIN);
    fb_route_spec_clear(&s);
}
END_TEST

START_TEST(test_state_route_refusals)
{
    static const char *const bad_to[] = {"shop"};
    static const char *const bad_ver[] = {"shop.ship@1.0"};
    static const char *const blank_to[] = {" shop.ship"};
    static const char *const no_to[] = {NULL};
    char *long_tag = repeat('v', 189); /* "k=" + 189 = 191 > 190 */
    char *long_event = repeat('e', 191);

    route_refused(route_with("name", NULL, NULL), "route: missing 'name'");
    route_refused(route_with("name", "name", text("bad name")), "name 'bad name'");
    route_refused(route_with("name", "name", cbor_build_uint8(1)), "'name'");
    route_refused(route_with("event", NULL, NULL), "route 'r1': missing 'event'");
    route_refused(route_with("to", NULL, NULL), "route 'r1': missing 'to'");
    route_refused(route_with(NULL, "colour", text("red")), "unknown key 'colour'");
    route_refused(route_with(NULL, "event", text("x")), "key 'event' is given twice");
    route_refused(route_with("event", "event", cbor_build_uint8(3)), "'event'");
    route_refused(route_with("event", "event", text("order created")), "event");
    route_refused(route_with("event", "event", text(long_event)), "event is 191 bytes");
    route_refused(route_with("priority", "priority", text("5")), "'priority'");
    route_refused(route_with("priority", "priority",
                             cbor_build_uint64(UINT64_C(9223372036854775808))),
                  "'priority'");
    route_refused(route_with("priority", "priority", cbor_build_negint64(UINT64_MAX)),
                  "'priority'");
    route_refused(route_with("priority", "priority", cbor_new_null()), "'priority'");
    route_refused(route_with("tags", "tags", text_array(bad_to, 1)), "'tags'");
    route_refused(route_with("to", "to", text("shop.ship")), "'to'");
    route_refused(route_with("to", "to", text_array(no_to, 0)), "no targets");
    route_refused(route_with("mode", "mode", text("fanout")), "mode");
    route_refused(route_with("mode", "mode", cbor_build_bool(true)), "'mode'");
    route_refused(route_with(NULL, "split_by", cbor_build_uint8(1)), "'split_by'");
    route_refused(route_with(NULL, "split_by", cbor_build_float8(1.0)), "'split_by'");
    route_refused(route_with(NULL, "split_by", text("user")), "split_by needs mode");
    route_refused(route_with(NULL, "signature", text("abc")), "signature");
    route_refused(route_with(NULL, "signature", cbor_build_bool(false)), "'signature'");
    route_refused(route_with("to", "to", text_array(bad_to, 1)), "target 'shop'");
    route_refused(route_with("to", "to", text_array(bad_ver, 1)), "version");
    route_refused(route_with("to", "to", text_array(blank_to, 1)), "'to' target");
    route_refused(route_with("tags", "tags", one_tag("region", "eu,us")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("region", "a=b")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("region", " eu")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("region", "eu ")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("region", "eu ;x")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("region", "e\tu")), "control");
    route_refused(route_with("tags", "tags", one_tag("region", "\xff")), "tag 'region'");
    route_refused(route_with("tags", "tags", one_tag("bad key", "x")),
                  "tag key 'bad key'");
    route_refused(route_with("tags", "tags", one_tag("k", long_tag)), "tag 'k'");

    cbor_item_t *tag_int = cbor_new_definite_map(1);
    add(tag_int, "region", cbor_build_uint8(1));
    route_refused(route_with("tags", "tags", tag_int), "tag 'region'");

    /* a NUL inside text would cut the C string short */
    route_refused(route_with("event", "event", cbor_build_stringn("a\0b", 3)), "NUL");
    /* not a map at all */
    route_refused(text("route"), "not a map");

    free(long_tag);
    free(long_event);
}
END_TEST

/* ------------------------------------------------------------ plugins */

START_TEST(test_state_plugin_round_trip)
{
    cbor_item_t *cfg = cbor_new_indefinite_map();
    add(cfg, "level", text("debug"));
    add(cfg, "count", cbor_build_uint16(500));
    add(cfg, "neg", cbor_build_negint8(2));
    add(cfg, "on", cbor_build_bool(true));
    add(cfg, "off", cbor_build_bool(false));
    add(cfg, "empty", text(""));
    cbor_item_t *m = plugin_with(NULL, "config", cfg);
    cbor_item_t *back = reload(m);
    cbor_decref(&m);

    struct fb_plugin_conf pc, pc2, pc3;
    int rc = fb_plugin_conf_from_cbor(back, &pc, err, sizeof err);
    cbor_decref(&back);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    ck_assert_str_eq(pc.name, "p1");
    ck_assert_str_eq(pc.path, "/usr/lib/fidbus/log.so");
    static const char *const want[][2] = {
        {"path", "/usr/lib/fidbus/log.so"},
        {"level", "debug"},
        {"count", "500"},
        {"neg", "-3"},
        {"on", "true"},
        {"off", "false"},
        {"empty", ""},
    };
    ck_assert_uint_eq(pc.nkeys, 7);
    for (size_t i = 0; i < 7; i++) {
        ck_assert_str_eq(pc.keys[i].key, want[i][0]);
        ck_assert_str_eq(pc.keys[i].value, want[i][1]);
    }

    /* back out and in again: the same conf */
    m = fb_plugin_conf_to_cbor(&pc);
    ck_assert_ptr_nonnull(m);
    back = reload(m);
    cbor_decref(&m);
    rc = fb_plugin_conf_from_cbor(back, &pc2, err, sizeof err);
    cbor_decref(&back);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    assert_plugin_eq(&pc, &pc2);

    pc.line = 12;
    ck_assert_int_eq(fb_plugin_conf_copy(&pc3, &pc), 0);
    assert_plugin_eq(&pc, &pc3);
    ck_assert_int_eq(pc3.line, 12);
    ck_assert_ptr_ne(pc3.keys, pc.keys);

    fb_plugin_conf_clear(&pc);
    fb_plugin_conf_clear(&pc2);
    fb_plugin_conf_clear(&pc3);
    ck_assert_ptr_null(pc3.keys);
    fb_plugin_conf_clear(NULL);

    /* no name: the caller picks one */
    m = plugin_with("name", NULL, NULL);
    rc = fb_plugin_conf_from_cbor(m, &pc, err, sizeof err);
    cbor_decref(&m);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_null(pc.name);
    ck_assert_uint_eq(pc.nkeys, 1);
    fb_plugin_conf_clear(&pc);
}
END_TEST

START_TEST(test_state_plugin_refusals)
{
    char *v196 = repeat('x', 196), *v197 = repeat('x', 197);
    char *long_path = repeat('p', 192);
    long_path[0] = '/';

    plugin_refused(plugin_with("path", NULL, NULL), "plugin 'p1': missing 'path'");
    plugin_refused(plugin_with("path", "path", text("")), "path");
    plugin_refused(plugin_with("path", "path", text(";x.so")), "path");
    plugin_refused(plugin_with("path", "path", text("/a/b.so ")), "path");
    plugin_refused(plugin_with("path", "path", text(long_path)), "path is 192 bytes");
    plugin_refused(plugin_with("path", "path", cbor_build_uint8(1)), "'path'");
    plugin_refused(plugin_with("name", "name", text("a b")), "plugin: name 'a b'");
    plugin_refused(plugin_with(NULL, "cfg", text("x")), "unknown key 'cfg'");
    plugin_refused(plugin_with(NULL, "config", text("x")), "'config'");
    plugin_refused(plugin_with(NULL, "config", config1("path", text("/x.so"))),
                   "config key 'path'");
    plugin_refused(plugin_with(NULL, "config", config1("a b", text("x"))),
                   "config key 'a b'");
    plugin_refused(plugin_with(NULL, "config", config1("level", text(" x"))),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("level", text("x ;y"))),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("level", text(";y"))),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("level", text("a\nb"))),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("level", cbor_build_float8(1.5))),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("level", cbor_new_null())),
                   "config 'level'");
    plugin_refused(plugin_with(NULL, "config", config1("k", text(v197))), "config 'k'");

    cbor_item_t *dup = cbor_new_indefinite_map();
    add(dup, "a", text("1"));
    add(dup, "a", text("2"));
    plugin_refused(plugin_with(NULL, "config", dup), "config key 'a' is given twice");

    /* "k=" + 196 = 198 bytes: the longest line, still accepted */
    struct fb_plugin_conf pc;
    cbor_item_t *m = plugin_with(NULL, "config", config1("k", text(v196)));
    int rc = fb_plugin_conf_from_cbor(m, &pc, err, sizeof err);
    cbor_decref(&m);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    fb_plugin_conf_clear(&pc);

    free(v196);
    free(v197);
    free(long_path);
}
END_TEST

/*
 * The longest values the decoders accept, written as a config file the way
 * config.export does, load through the config parser to the same specs.
 */
START_TEST(test_state_longest_values_load_as_config)
{
    char *tagv = repeat('t', 188);  /* "tags = k=" + 188 + "," = 198 */
    char *event = repeat('e', 190); /* "event = " + 190 = 198 */
    char *cfgv = repeat('c', 196);  /* "k=" + 196 = 198 */
    static const char *const to[] = {"shop.ship@1.0.0:5", "shop.ship@2.0.0:0"};

    cbor_item_t *m = cbor_new_definite_map(8);
    add(m, "name", text("long"));
    add(m, "event", text(event));
    cbor_item_t *tags = cbor_new_definite_map(2);
    add(tags, "k", text(tagv));
    add(tags, "user", text("*"));
    add(m, "tags", tags);
    add(m, "to", text_array(to, 2));
    add(m, "mode", text("split"));
    add(m, "split_by", text("user"));
    add(m, "priority", cbor_build_negint8(2));
    add(m, "signature", text(SIG64));
    struct fb_route_spec s;
    int rc = fb_route_from_cbor(m, &s, err, sizeof err);
    cbor_decref(&m);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);

    m = plugin_with(NULL, "config", config1("k", text(cfgv)));
    struct fb_plugin_conf pc;
    rc = fb_plugin_conf_from_cbor(m, &pc, err, sizeof err);
    cbor_decref(&m);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);

    char *conf = NULL;
    ck_assert_int_gt(asprintf(&conf,
                              "[plugin p1]\npath = %s\nk=%s\n"
                              "[route long]\nevent = %s\ntags = k=%s,\n    user=*\n"
                              "to = shop.ship@1.0.0:5, shop.ship@2.0.0:0\nmode = split\n"
                              "split_by = user\npriority = -3\nsignature = %s\n",
                              pc.path, cfgv, event, tagv, SIG64),
                     0);
    struct fb_config *c = NULL;
    rc = fb_config_load_string(conf, "t.conf", &c, err, sizeof err);
    free(conf);
    ck_assert_msg(rc == 0, "config refused: %s", err);
    ck_assert_uint_eq(c->nroutes, 1);
    assert_spec_eq(&s, &c->routes[0]);
    ck_assert_uint_eq(c->nplugins, 1);
    assert_plugin_eq(&pc, &c->plugins[0]);

    fb_config_free(c);
    fb_route_spec_clear(&s);
    fb_plugin_conf_clear(&pc);
    free(tagv);
    free(event);
    free(cfgv);
}
END_TEST

/* -------------------------------------------------------------- state */

START_TEST(test_state_sha256)
{
    char h[FB_HASH_HEX];
    fb_sha256_hex("abc", 3, h);
    ck_assert_str_eq(h,
                     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    fb_sha256_hex("", 0, h);
    ck_assert_str_eq(h,
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(test_state_encode_decode)
{
    struct fb_state in, out;
    sample_state(&in);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);
    int rc = fb_state_decode(buf, len, &out, err, sizeof err);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    assert_state_eq(&in, &out);
    fb_state_clear(&out);
    free(buf);

    /* an empty running set is a valid state too */
    struct fb_state empty = {.generation = 1};
    fb_sha256_hex("", 0, empty.config_hash);
    ck_assert_int_eq(fb_state_encode(&empty, &buf, &len), 0);
    ck_assert_int_eq(fb_state_decode(buf, len, &out, err, sizeof err), 0);
    ck_assert_uint_eq(out.set.nroutes, 0);
    ck_assert_uint_eq(out.generation, 1);
    free(buf);
    fb_state_clear(&out);
    fb_state_clear(&in);
    ck_assert_ptr_null(in.set.routes);
}
END_TEST

/* "base" (the config last applied) round-trips; a file without it (an
 * older daemon's) still loads, with has_base false; a bad one is refused. */
START_TEST(test_state_base)
{
    struct fb_state in, out;
    sample_state(&in);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);
    ck_assert_int_eq(fb_state_decode(buf, len, &out, err, sizeof err), 0);
    ck_assert(!out.has_base);
    ck_assert_ptr_null(memmem(buf, len, "base", 4));
    fb_state_clear(&out);
    free(buf);

    /* base: the first plugin and the second route of the set */
    struct fb_runset *b = NULL;
    ck_assert_int_eq(fb_runset_dup(in.set.plugins, 1, &in.set.routes[1], 1, &b), 0);
    in.base = *b;
    in.has_base = true;
    free(b);
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);
    int rc = fb_state_decode(buf, len, &out, err, sizeof err);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, err);
    assert_state_eq(&in, &out);
    ck_assert(out.has_base);
    ck_assert_uint_eq(out.base.nplugins, 1);
    assert_plugin_eq(&in.base.plugins[0], &out.base.plugins[0]);
    ck_assert_uint_eq(out.base.nroutes, 1);
    assert_spec_eq(&in.base.routes[0], &out.base.routes[0]);
    fb_state_clear(&out);

    /* a base that is not {plugins, routes} makes the file invalid */
    uint8_t *k = memmem(buf, len, "base", 4);
    ck_assert_ptr_nonnull(k);
    k[4] = 0x80; /* the map head becomes an empty array */
    rc = fb_state_decode(buf, len, &out, err, sizeof err);
    ck_assert_int_eq(rc, FIDBUS_INVALID);
    free(buf);
    fb_state_clear(&in);
}
END_TEST

/* Sizes no bytes back and nesting past FB_CBOR_LOAD_DEPTH are refused as
 * invalid files before libcbor allocates (found by fuzz_state: a
 * 9-byte array head asked for 15 GB). */
START_TEST(test_state_decode_implausible)
{
    struct fb_state out;
    static const uint8_t huge[] = {0xa1, 0x65, 'r',  'o',  'u',  't',  'e',  0x9b,
                                   0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
    ck_assert_int_eq(fb_state_decode(huge, sizeof huge, &out, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "truncated"), "%s", err);
    uint8_t deep[FB_CBOR_LOAD_DEPTH + 2];
    memset(deep, 0x81, sizeof deep); /* [[[...[0]...]]] one level too deep */
    deep[sizeof deep - 1] = 0x00;
    ck_assert_int_eq(fb_state_decode(deep, sizeof deep, &out, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "malformed"), "%s", err);
    /* the deepest allowed still loads (and is then refused for its shape) */
    ck_assert_int_eq(fb_state_decode(deep + 1, sizeof deep - 1, &out, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_msg(!strstr(err, "malformed"), "%s", err);
}
END_TEST

START_TEST(test_state_decode_refusals)
{
    struct fb_state in, out;
    sample_state(&in);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);

    /* every prefix is truncated */
    for (size_t n = 0; n < len; n++) {
        err[0] = '\0';
        int rc = fb_state_decode(buf, n, &out, err, sizeof err);
        ck_assert_msg(rc == FIDBUS_INVALID, "prefix %zu: rc %d", n, rc);
        ck_assert_msg(n == 0 || strstr(err, "truncated at byte"), "prefix %zu: %s", n,
                      err);
        ck_assert_ptr_null(out.set.routes);
    }

    /* trailing garbage */
    uint8_t *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0x00;
    ck_assert_int_eq(fb_state_decode(more, len + 1, &out, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "trailing"));

    /* format 2: "format" is followed by its value, the one byte 0x01 */
    uint8_t *f = memmem(more, len, "format\x01", 7);
    ck_assert_ptr_nonnull(f);
    f[6] = 0x02;
    ck_assert_int_eq(fb_state_decode(more, len, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "format 2"));
    free(more);

    /* garbage and other shapes */
    static const char garbage[] = "\xff\xfe not a state file";
    ck_assert_int_eq(fb_state_decode((const uint8_t *)garbage, sizeof garbage - 1, &out,
                                     err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "not CBOR"));
    static const uint8_t array[] = {0x81, 0x01};
    ck_assert_int_eq(fb_state_decode(array, sizeof array, &out, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "not a map"));

    /* keys: an unknown one is ignored, a missing one is refused */
    struct cbor_load_result res;
    cbor_item_t *root = cbor_load(buf, len, &res);
    ck_assert_ptr_nonnull(root);
    cbor_item_t *plus = cbor_new_indefinite_map(), *minus = cbor_new_indefinite_map();
    struct cbor_pair *p = cbor_map_handle(root);
    for (size_t i = 0; i < cbor_map_size(root); i++) {
        ck_assert(cbor_map_add(plus, p[i]));
        if (!(cbor_string_length(p[i].key) == 6 &&
              memcmp(cbor_string_handle(p[i].key), "routes", 6) == 0))
            ck_assert(cbor_map_add(minus, p[i]));
    }
    add(plus, "future", cbor_build_uint8(1));
    unsigned char *b2 = NULL;
    size_t cap, n2 = cbor_serialize_alloc(plus, &b2, &cap);
    ck_assert_int_eq(fb_state_decode(b2, n2, &out, err, sizeof err), 0);
    assert_state_eq(&in, &out);
    fb_state_clear(&out);
    free(b2);
    n2 = cbor_serialize_alloc(minus, &b2, &cap);
    ck_assert_int_eq(fb_state_decode(b2, n2, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "missing 'routes'"));
    free(b2);
    cbor_decref(&plus);
    cbor_decref(&minus);
    cbor_decref(&root);

    /* a route the decoders refuse makes the whole file invalid */
    free(in.set.routes[1].event);
    in.set.routes[1].event = xstrdup("bad event");
    free(buf);
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);
    ck_assert_int_eq(fb_state_decode(buf, len, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "route 'all-events'"));
    free(buf);

    /* as are two routes of one name */
    free(in.set.routes[1].event);
    in.set.routes[1].event = xstrdup("*");
    free(in.set.routes[1].name);
    in.set.routes[1].name = xstrdup("canary");
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);
    ck_assert_int_eq(fb_state_decode(buf, len, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "appears twice"));
    free(buf);
    fb_state_clear(&in);
}
END_TEST

START_TEST(test_state_save_load)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    int rc = fb_state_open(statedir, &sf, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(statedir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));

    struct fb_state in, out;
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), -ENOENT);

    sample_state(&in);
    rc = fb_state_save(sf, &in, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    char p[256];
    state_path(p, sizeof p, FB_STATE_FILE ".tmp");
    ck_assert_int_ne(access(p, F_OK), 0); /* renamed away */
    state_path(p, sizeof p, FB_STATE_FILE);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(st.st_mode & 0027, 0); /* 0640 at most */

    rc = fb_state_load(sf, &out, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    assert_state_eq(&in, &out);
    fb_state_clear(&out);

    /* a second save replaces the first */
    in.generation = 8;
    ck_assert_int_eq(fb_state_save(sf, &in, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    ck_assert_uint_eq(out.generation, 8);
    fb_state_clear(&out);

    fb_state_clear(&in);
    sf = fb_state_close(sf);
    ck_assert_ptr_null(sf);
    ck_assert_ptr_null(fb_state_close(NULL));
    remove_dirs();
}
END_TEST

START_TEST(test_state_save_is_atomic)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    struct fb_state a, b, out;
    sample_state(&a);
    sample_state(&b);
    b.generation = 99;
    fb_route_spec_clear(&b.set.routes[1]);
    b.set.nroutes = 1;

    /* a crash left a half-written tmp file: the next save does not care */
    char tmp[256];
    state_path(tmp, sizeof tmp, FB_STATE_FILE ".tmp");
    write_file(tmp, "\xa6\x66half", 6);
    ck_assert_int_eq(fb_state_save(sf, &a, err, sizeof err), 0);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    assert_state_eq(&a, &out);
    fb_state_clear(&out);

    /* a save that fails (the tmp name is taken by a directory) leaves the
     * previous state in place and says which step failed */
    ck_assert_int_eq(mkdir(tmp, 0700), 0);
    err[0] = '\0';
    int rc = fb_state_save(sf, &b, err, sizeof err);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "create"), "%s", err);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    assert_state_eq(&a, &out);
    fb_state_clear(&out);

    /* and once the way is clear, saving works again */
    ck_assert_int_eq(rmdir(tmp), 0);
    ck_assert_int_eq(fb_state_save(sf, &b, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    assert_state_eq(&b, &out);
    fb_state_clear(&out);

    fb_state_clear(&a);
    fb_state_clear(&b);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

START_TEST(test_state_load_corrupt)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    struct fb_state in, out;
    sample_state(&in);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(fb_state_encode(&in, &buf, &len), 0);

    char p[256];
    state_path(p, sizeof p, FB_STATE_FILE);
    /* a sample of truncations, as a crash mid-write without rename would
     * leave them if the file were written in place */
    for (size_t n = 0; n < len; n += 1 + n / 3) {
        write_file(p, buf, n);
        err[0] = '\0';
        int rc = fb_state_load(sf, &out, err, sizeof err);
        ck_assert_msg(rc == FIDBUS_INVALID, "length %zu: rc %d", n, rc);
        ck_assert_msg(strstr(err, FB_STATE_FILE), "%s", err);
    }
    write_file(p, "garbage\n", 8);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), FIDBUS_INVALID);
    write_file(p, buf, len);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    fb_state_clear(&out);

    free(buf);
    fb_state_clear(&in);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

static bool aside_name_ok(const char *name)
{
    static const char pre[] = "state.cbor.corrupt-";
    if (strncmp(name, pre, sizeof pre - 1) != 0)
        return false;
    const char *s = name + sizeof pre - 1;
    int groups = 0;
    while (*s) {
        if (*s < '0' || *s > '9')
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
        groups++;
        if (*s == '-')
            s++;
        else if (*s)
            return false;
    }
    return groups == 1 || groups == 2;
}

START_TEST(test_state_set_aside)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    char n1[128], n2[128], p[256];

    ck_assert_int_eq(fb_state_set_aside(sf, "corrupt", n1, sizeof n1), -ENOENT);

    struct fb_state st;
    sample_state(&st);
    ck_assert_int_eq(fb_state_save(sf, &st, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_set_aside(sf, "corrupt", n1, sizeof n1), 0);
    ck_assert_msg(aside_name_ok(n1), "%s", n1);
    state_path(p, sizeof p, n1);
    ck_assert_int_eq(access(p, F_OK), 0);
    state_path(p, sizeof p, FB_STATE_FILE);
    ck_assert_int_ne(access(p, F_OK), 0);

    ck_assert_int_eq(fb_state_save(sf, &st, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_set_aside(sf, "corrupt", n2, sizeof n2), 0);
    ck_assert_msg(aside_name_ok(n2), "%s", n2);
    ck_assert_str_ne(n1, n2);
    state_path(p, sizeof p, n1);
    ck_assert_int_eq(access(p, F_OK), 0);
    state_path(p, sizeof p, n2);
    ck_assert_int_eq(access(p, F_OK), 0);

    ck_assert_int_eq(fb_state_save(sf, &st, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_set_aside(sf, "../x", n2, sizeof n2), -EINVAL);
    ck_assert_int_eq(fb_state_set_aside(sf, "bak", n2, sizeof n2), 0);
    ck_assert_int_eq(strncmp(n2, "state.cbor.bak-", 15), 0);

    fb_state_clear(&st);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

/* Not a regular file at state.cbor: a FIFO (open must not wait for a
 * writer), a symlink (not followed), a socket: corrupt, set aside. */
START_TEST(test_state_load_not_regular)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    char p[256], target[256];
    struct fb_state out;
    state_path(p, sizeof p, FB_STATE_FILE);

    ck_assert_int_eq(mkfifo(p, 0600), 0);
    err[0] = '\0';
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
    ck_assert_int_eq(unlink(p), 0);

    /* a symlink to a good state file is still not followed */
    struct fb_state in;
    sample_state(&in);
    ck_assert_int_eq(fb_state_save(sf, &in, err, sizeof err), 0);
    state_path(target, sizeof target, "real.cbor");
    ck_assert_int_eq(rename(p, target), 0);
    ck_assert_int_eq(symlink(target, p), 0);
    err[0] = '\0';
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);

    char n[128];
    ck_assert_int_eq(fb_state_set_aside(sf, "corrupt", n, sizeof n), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), -ENOENT);
    fb_state_clear(&in);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

/* A state file another user could have written is refused (-EPERM, with
 * the path and the fix), never restored; so is a state dir others can
 * write (as root: chown plays the other user). */
START_TEST(test_state_untrusted)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    struct fb_state in, out;
    sample_state(&in);
    ck_assert_int_eq(fb_state_save(sf, &in, err, sizeof err), 0);
    char p[256];
    state_path(p, sizeof p, FB_STATE_FILE);

    ck_assert_int_eq(chmod(p, 0646), 0);
    err[0] = '\0';
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), -EPERM);
    ck_assert_msg(strstr(err, p) && strstr(err, "chmod go-w"), "%s", err);
    ck_assert_int_eq(chmod(p, 0640), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    fb_state_clear(&out);
    if (geteuid() == 0) {
        ck_assert_int_eq(chown(p, 65534, 65534), 0);
        ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), -EPERM);
        ck_assert_msg(strstr(err, "owned by uid 65534"), "%s", err);
        ck_assert_int_eq(chown(p, 0, 0), 0);
    }
    fb_state_close(sf);

    ck_assert_int_eq(chmod(statedir, 0777), 0);
    sf = (void *)1;
    err[0] = '\0';
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), -EPERM);
    ck_assert_ptr_null(sf);
    ck_assert_msg(strstr(err, statedir) && strstr(err, "mode 0777"), "%s", err);
    ck_assert_int_eq(chmod(statedir, 0750), 0);
    if (geteuid() == 0) {
        ck_assert_int_eq(chown(statedir, 65534, 65534), 0);
        ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), -EPERM);
        ck_assert_int_eq(chown(statedir, 0, 0), 0);
    }
    fb_state_clear(&in);
    remove_dirs();
}
END_TEST

/* A save never writes through what sits at the tmp name: a symlink there
 * is replaced, not followed, and its target is left alone. */
START_TEST(test_state_save_fresh_tmp)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    char tmp[256], target[256];
    state_path(tmp, sizeof tmp, FB_STATE_FILE ".tmp");
    snprintf(target, sizeof target, "%s/victim", tmpdir);
    write_file(target, "keep", 4);
    ck_assert_int_eq(symlink(target, tmp), 0);
    struct fb_state in, out;
    sample_state(&in);
    ck_assert_int_eq(fb_state_save(sf, &in, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_load(sf, &out, err, sizeof err), 0);
    struct stat st;
    ck_assert_int_eq(stat(target, &st), 0);
    ck_assert_int_eq(st.st_size, 4);
    unlink(target);
    fb_state_clear(&out);
    fb_state_clear(&in);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

/* link_aside keeps state.cbor in place; drop_aside takes the copy away. */
START_TEST(test_state_link_aside)
{
    make_dirs();
    struct fb_state_file *sf = NULL;
    ck_assert_int_eq(fb_state_open(statedir, &sf, err, sizeof err), 0);
    char n[128], p[256];
    ck_assert_int_eq(fb_state_link_aside(sf, "bak", n, sizeof n), -ENOENT);
    struct fb_state in;
    sample_state(&in);
    ck_assert_int_eq(fb_state_save(sf, &in, err, sizeof err), 0);
    ck_assert_int_eq(fb_state_link_aside(sf, "bak", n, sizeof n), 0);
    ck_assert_int_eq(strncmp(n, "state.cbor.bak-", 15), 0);
    state_path(p, sizeof p, n);
    ck_assert_int_eq(access(p, F_OK), 0);
    state_path(p, sizeof p, FB_STATE_FILE);
    ck_assert_int_eq(access(p, F_OK), 0);
    fb_state_drop_aside(sf, n);
    state_path(p, sizeof p, n);
    ck_assert_int_ne(access(p, F_OK), 0);
    fb_state_clear(&in);
    fb_state_close(sf);
    remove_dirs();
}
END_TEST

START_TEST(test_state_open_fails)
{
    struct fb_state_file *sf = (void *)1;
    err[0] = '\0';
    int rc = fb_state_open("/nonexistent-dir-fidbus/a/b", &sf, err, sizeof err);
    ck_assert_int_eq(rc, -ENOENT);
    ck_assert_ptr_null(sf);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir-fidbus/a/b"));
}
END_TEST

static Suite *state_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_state_route_round_trip);
    tcase_add_test(tc, test_state_decode_implausible);
    tcase_add_test(tc, test_state_route_minimal_and_chunked);
    tcase_add_test(tc, test_state_route_refusals);
    tcase_add_test(tc, test_state_plugin_round_trip);
    tcase_add_test(tc, test_state_plugin_refusals);
    tcase_add_test(tc, test_state_longest_values_load_as_config);
    tcase_add_test(tc, test_state_sha256);
    tcase_add_test(tc, test_state_encode_decode);
    tcase_add_test(tc, test_state_base);
    tcase_add_test(tc, test_state_decode_refusals);
    tcase_add_test(tc, test_state_save_load);
    tcase_add_test(tc, test_state_load_not_regular);
    tcase_add_test(tc, test_state_untrusted);
    tcase_add_test(tc, test_state_save_fresh_tmp);
    tcase_add_test(tc, test_state_link_aside);
    tcase_add_test(tc, test_state_save_is_atomic);
    tcase_add_test(tc, test_state_load_corrupt);
    tcase_add_test(tc, test_state_set_aside);
    tcase_add_test(tc, test_state_open_fails);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(state_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
