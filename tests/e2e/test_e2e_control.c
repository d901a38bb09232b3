/*
 * End-to-end tests of the control socket's read-only commands (ctest:
 * e2e.control): `status`, `stats`, `plugin.list`, `func.list` and
 * `route.list` over the wire (REQUEST/REPLY, results checked key by key
 * against proto/control.md and against funcIDs and sighashes computed
 * here), the same through `fidbusctl` (tables and --json), commands this
 * daemon does not know (UNSUPPORTED), a malformed frame (ERROR
 * MALFORMED, the connection still answers), and a peer with another uid
 * (UNAUTHORIZED; needs root to switch uid, skipped otherwise).
 */
#include <cbor.h>
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fidbus/funcid.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* Routes only "a.*": "b.*" events count as unrouted. */
#define SECTIONS                                                                         \
    FB_E2E_LOG FB_E2E_COUNT "[route all]\nevent = a.*\nto = fidbus.log, "                \
                            "fidbus.count@1.0.0:3\n"

static struct fidbus_client *connect_control(const struct fb_e2e *t)
{
    return fb_e2e_connect_control(t, NULL);
}

/* REQUEST cmd (no args); asserts code 0; returns the decoded result map. */
static cbor_item_t *request(struct fidbus_client *c, const char *cmd)
{
    uint8_t *res = NULL;
    size_t len = 0;
    int rc = fidbus_request(c, cmd, NULL, 0, &res, &len);
    ck_assert_msg(rc == 0, "%s: %s (%s)", cmd, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    ck_assert_msg(res && len, "%s: REPLY without a result", cmd);
    struct cbor_load_result lr;
    cbor_item_t *it = cbor_load(res, len, &lr);
    ck_assert_msg(it && lr.error.code == CBOR_ERR_NONE && lr.read == len,
                  "%s: result is not one CBOR item", cmd);
    free(res);
    ck_assert_msg(cbor_isa_map(it), "%s: result is not a map", cmd);
    return it;
}

/* The value under text key `key` of map m, NULL if absent. */
static cbor_item_t *mget(const cbor_item_t *m, const char *key)
{
    ck_assert_msg(m && cbor_isa_map(m), "looking up '%s' in a non-map", key);
    struct cbor_pair *p = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m); i++)
        if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
            cbor_string_length(p[i].key) == strlen(key) &&
            memcmp(cbor_string_handle(p[i].key), key, strlen(key)) == 0)
            return p[i].value;
    return NULL;
}

static uint64_t muint(const cbor_item_t *m, const char *key)
{
    cbor_item_t *v = mget(m, key);
    ck_assert_msg(v && cbor_isa_uint(v), "'%s' missing or not an unsigned integer", key);
    return cbor_get_int(v);
}

static bool text_is(const cbor_item_t *v, const char *s)
{
    return v && cbor_isa_string(v) && cbor_string_is_definite(v) &&
           cbor_string_length(v) == strlen(s) &&
           memcmp(cbor_string_handle(v), s, strlen(s)) == 0;
}

static void assert_text(const cbor_item_t *m, const char *key, const char *want)
{
    cbor_item_t *v = mget(m, key);
    ck_assert_msg(text_is(v, want), "'%s' is not the text \"%s\"", key, want);
}

/* The element of array `a` whose `key` is the text `want`. */
static cbor_item_t *find_by(const cbor_item_t *a, const char *key, const char *want)
{
    ck_assert_msg(a && cbor_isa_array(a), "expected an array to search by %s", key);
    for (size_t i = 0; i < cbor_array_size(a); i++)
        if (text_is(mget(cbor_array_handle(a)[i], key), want))
            return cbor_array_handle(a)[i];
    ck_abort_msg("no element with %s = %s", key, want);
    return NULL;
}

static void hex_id(const char *canonical, char out[FIDBUS_FUNCID_HEX])
{
    fidbus_funcid_hex(fidbus_funcid(canonical), out);
}

static void any_sighash(char out[FIDBUS_SIGHASH_HEX])
{
    uint8_t h[FIDBUS_SIGHASH_LEN];
    fidbus_sighash("event:any", h);
    fidbus_sighash_hex(h, out);
}

/* Runs fidbusctl --socket CONTROL args...; asserts the exit code; returns
 * stdout (freed by the caller) and, if err != NULL, stderr. */
static char *ctl(struct fb_e2e *t, int code, char **err, const char *a1, const char *a2,
                 const char *a3, const char *a4)
{
    return fb_e2e_ctl(t, code, err, a1, a2, a3, a4, (const char *)NULL);
}

static json_t *ctl_json(struct fb_e2e *t, const char *a1, const char *a2)
{
    char *out = ctl(t, 0, NULL, "--json", a1, a2, NULL);
    ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1,
                  "--json %s: not exactly one line: %s", a1, out);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(json_is_object(j), "--json %s: not a JSON object (%s): %s", a1, e.text,
                  out);
    free(out);
    return j;
}

/* ---------------------------------------------------------- over the wire */

START_TEST(test_e2e_control_status)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *c = connect_control(t);
    cbor_item_t *r = request(c, "status");

    ck_assert_uint_eq(muint(r, "generation"), 1);
    ck_assert_uint_eq(muint(r, "plugins"), 2);
    ck_assert_uint_eq(muint(r, "routes"), 1);
    ck_assert_uint_eq(muint(r, "functions"), 2);
    ck_assert_uint_eq(muint(r, "workers"), 2);
    ck_assert_uint_eq(muint(r, "pid"), (uint64_t)t->pid);
    (void)muint(r, "uptime_s");
    cbor_item_t *v = mget(r, "version");
    ck_assert_msg(v && cbor_isa_string(v) && cbor_string_length(v) > 0, "version");
    cbor_item_t *ls = mget(r, "listeners");
    ck_assert_msg(ls && cbor_isa_array(ls), "listeners is not an array");
    bool seen = false;
    for (size_t i = 0; i < cbor_array_size(ls); i++)
        seen |= text_is(cbor_array_handle(ls)[i], t->bus_addr);
    ck_assert_msg(seen, "listeners lacks %s", t->bus_addr);
    cbor_decref(&r);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_control_plugin_func_route_list)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *c = connect_control(t);
    char log_id[FIDBUS_FUNCID_HEX], count_id[FIDBUS_FUNCID_HEX];
    char sig[FIDBUS_SIGHASH_HEX];
    hex_id("fidbus.log@1.0.0", log_id);
    hex_id("fidbus.count@1.0.0", count_id);
    any_sighash(sig);

    /* plugin.list */
    cbor_item_t *r = request(c, "plugin.list");
    cbor_item_t *ps = mget(r, "plugins");
    ck_assert_msg(ps && cbor_isa_array(ps) && cbor_array_size(ps) == 2, "plugins");
    cbor_item_t *log = find_by(ps, "name", "log");
    cbor_item_t *path = mget(log, "path");
    ck_assert_msg(path && cbor_isa_string(path), "path");
    ck_assert_msg(mget(log, "version") != NULL, "plugin without version");
    cbor_item_t *fs = mget(log, "functions");
    ck_assert_msg(fs && cbor_isa_array(fs) && cbor_array_size(fs) == 1 &&
                      text_is(cbor_array_handle(fs)[0], log_id),
                  "log's functions should be [\"%s\"]", log_id);
    fs = mget(find_by(ps, "name", "count"), "functions");
    ck_assert_msg(fs && cbor_array_size(fs) == 1 &&
                      text_is(cbor_array_handle(fs)[0], count_id),
                  "count's functions should be [\"%s\"]", count_id);
    cbor_decref(&r);

    /* func.list */
    r = request(c, "func.list");
    fs = mget(r, "functions");
    ck_assert_msg(fs && cbor_isa_array(fs) && cbor_array_size(fs) == 2, "functions");
    cbor_item_t *f = find_by(fs, "canonical", "fidbus.log@1.0.0");
    assert_text(f, "id", log_id);
    assert_text(f, "sighash", sig);
    assert_text(f, "plugin", "log");
    cbor_item_t *b = mget(f, "blocking");
    ck_assert_msg(b && cbor_is_bool(b) && !cbor_get_bool(b), "log is not blocking");
    f = find_by(fs, "canonical", "fidbus.count@1.0.0");
    assert_text(f, "id", count_id);
    assert_text(f, "plugin", "count");
    cbor_decref(&r);

    /* route.list */
    r = request(c, "route.list");
    ck_assert_uint_eq(muint(r, "generation"), 1);
    cbor_item_t *rs = mget(r, "routes");
    ck_assert_msg(rs && cbor_isa_array(rs) && cbor_array_size(rs) == 1, "routes");
    cbor_item_t *rt = cbor_array_handle(rs)[0];
    assert_text(rt, "name", "all");
    assert_text(rt, "event", "a.*");
    assert_text(rt, "mode", "all");
    ck_assert_uint_eq(muint(rt, "priority"), 0);
    cbor_item_t *to = mget(rt, "to");
    ck_assert_msg(to && cbor_isa_array(to) && cbor_array_size(to) == 2, "to");
    cbor_item_t *t0 = cbor_array_handle(to)[0], *t1 = cbor_array_handle(to)[1];
    assert_text(t0, "target", "fidbus.log");
    assert_text(t0, "id", log_id);
    ck_assert_uint_eq(muint(t0, "weight"), 1);
    assert_text(t1, "target", "fidbus.count@1.0.0");
    assert_text(t1, "id", count_id);
    ck_assert_uint_eq(muint(t1, "weight"), 3);
    cbor_decref(&r);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

#define N_ROUTED 25
#define N_UNROUTED 3

START_TEST(test_e2e_control_stats_counts)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *bus = fb_e2e_connect(t);
    fb_e2e_publish_n(bus, "a.x", N_ROUTED);
    fb_e2e_publish_n(bus, "b.x", N_UNROUTED);
    fb_e2e_ping(bus); /* every publish before it is fully handled and counted */

    struct fidbus_client *c = connect_control(t);
    cbor_item_t *r = request(c, "stats");
    ck_assert_uint_eq(muint(r, "received"), N_ROUTED + N_UNROUTED);
    /* dispatched counts handler invocations (daemon.h): two targets */
    ck_assert_uint_eq(muint(r, "dispatched"), 2 * N_ROUTED);
    ck_assert_uint_eq(muint(r, "unrouted"), N_UNROUTED);
    ck_assert_uint_eq(muint(r, "errors"), 0);
    ck_assert_uint_eq(muint(r, "bad_frames"), 0);
    cbor_item_t *gens = mget(r, "generations");
    ck_assert_msg(gens && cbor_isa_map(gens), "generations");
    ck_assert_uint_eq(muint(gens, "1"), N_ROUTED);
    cbor_item_t *routes = mget(r, "routes");
    ck_assert_uint_eq(muint(mget(routes, "all"), "matched"), N_ROUTED);
    char id[FIDBUS_FUNCID_HEX];
    cbor_item_t *fn = mget(r, "functions");
    hex_id("fidbus.log@1.0.0", id);
    ck_assert_uint_eq(muint(mget(fn, id), "calls"), N_ROUTED);
    ck_assert_uint_eq(muint(mget(fn, id), "errors"), 0);
    hex_id("fidbus.count@1.0.0", id);
    ck_assert_uint_eq(muint(mget(fn, id), "calls"), N_ROUTED);
    /* sampled handler latency: present once a function has run */
    uint64_t p50 = muint(mget(fn, id), "p50_ns"), p99 = muint(mget(fn, id), "p99_ns");
    ck_assert_uint_gt(p50, 0);
    ck_assert_uint_ge(p99, p50);
    ck_assert_uint_lt(p99, 1000000000u);
    cbor_decref(&r);

    /* an acked publish is counted before its ACK is sent */
    fb_e2e_publish_ack(bus, "a.y", 2);
    r = request(c, "stats");
    ck_assert_uint_eq(muint(r, "dispatched"), 2 * (N_ROUTED + 1));
    cbor_decref(&r);

    fidbus_client_close(c);
    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_control_unsupported)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *c = connect_control(t);

    /* names the daemon does not know, one inside a known group */
    static const char *const cmds[] = {"plugin.frobnicate", "no.such.command"};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *res = NULL;
        size_t len = 0;
        int rc = fidbus_request(c, cmds[i], NULL, 0, &res, &len);
        ck_assert_msg(fidbus_error_code(rc) == FIDBUS_UNSUPPORTED,
                      "%s: expected UNSUPPORTED, got %s", cmds[i], fidbus_strerror(rc));
        ck_assert_ptr_null(res);
        ck_assert_msg(*fidbus_client_last_error(c), "%s: REPLY without a message",
                      cmds[i]);
    }
    /* the connection still answers */
    cbor_item_t *r = request(c, "status");
    ck_assert_uint_eq(muint(r, "generation"), 1);
    cbor_decref(&r);

    /* fidbusctl sends only commands it knows: a refusal is one line too */
    char *err = NULL;
    char *out = ctl(t, 1, &err, "plugin", "load", "/nonexistent/x.so", NULL);
    ck_assert_str_eq(out, "");
    ck_assert_msg(strncmp(err, "fidbusctl: plugin load failed: NOT_FOUND", 40) == 0 &&
                      strchr(err, '\n') == err + strlen(err) - 1,
                  "expected one NOT_FOUND line, got: %s", err);
    free(out);
    free(err);
    /* a subcommand fidbusctl does not know is a usage error, sent nowhere */
    out = ctl(t, 2, &err, "route", "frobnicate", NULL, NULL);
    ck_assert_msg(strstr(err, "unknown command 'route frobnicate'"), "%s", err);
    free(out);
    free(err);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_control_malformed_frame)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    /* the raw helpers dial t->bus: point a copy at the control socket */
    struct fb_e2e tc = *t;
    memcpy(tc.bus, t->control, sizeof tc.bus);
    struct fb_e2e_raw *r = fb_e2e_raw_unix(&tc);
    fb_e2e_raw_hello(r);

    static const uint8_t junk[] = {0xff}; /* a lone "break": not well-formed */
    fb_e2e_raw_frame(r, junk, sizeof junk);
    fb_e2e_raw_expect_error(r, FIDBUS_MALFORMED, -1);

    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND),
        .type = FIDBUS_MSG_REQUEST,
        .seq = 77,
        .command = "status",
    };
    fb_e2e_raw_msg(r, &m);
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_REPLY);
    ck_assert_uint_eq(r->msg.seq, 77);
    ck_assert_msg(!fidbus_msg_has(&r->msg, FIDBUS_K_CODE) || r->msg.code == 0,
                  "status after a malformed frame failed with code %llu",
                  (unsigned long long)r->msg.code);
    ck_assert_msg(fidbus_msg_has(&r->msg, FIDBUS_K_RESULT), "REPLY without a result");

    /* PING is the same barrier here as on the bus: ACK with its seq */
    struct fidbus_msg_out ping = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = 78,
    };
    fb_e2e_raw_msg(r, &ping);
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(r->msg.seq, 78);
    fb_e2e_raw_close(r);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * The child's exit status: the REPLY code of `status` (0 = allowed), or
 * 100 + which step failed (101: the uid switch).
 */
static int status_as(const char *control, uid_t uid, gid_t gid)
{
    if (fb_e2e_drop_to(uid, gid) != 0)
        return 101;
    char addr[200];
    snprintf(addr, sizeof addr, "unix:%s", control);
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, addr, NULL);
    if (rc < 0) {
        fprintf(stderr, "uid %u: connect %s: %s\n", (unsigned)uid, addr,
                fidbus_strerror(rc));
        return fidbus_error_code(rc) ? fidbus_error_code(rc) : 103;
    }
    rc = fidbus_request(c, "status", NULL, 0, NULL, NULL);
    fidbus_client_close(c);
    if (rc == 0)
        return 0;
    return fidbus_error_code(rc) ? fidbus_error_code(rc) : 104;
}

START_TEST(test_e2e_control_unauthorized)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_e2e_control_unauthorized: SKIPPED: needs root to run a "
                        "client as another uid\n");
        return;
    }
    struct fb_e2e_opts o = {.control_extra = "mode = 0666"};
    struct fb_e2e *t = fb_e2e_up(&o, SECTIONS);
    /* let uid 65534 reach the socket (the harness's base dir, the test's
     * dir, run/): only the peer check may stop it */
    fb_e2e_let_others_in(t);
    struct stat st;
    ck_assert_int_eq(stat(t->control, &st), 0);
    ck_assert_msg((st.st_mode & 0777) == 0666, "control socket mode %o, wanted 0666",
                  (unsigned)(st.st_mode & 0777));

    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(status_as(t->control, 65534, 65534));
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == FIDBUS_UNAUTHORIZED,
                  "uid 65534: expected UNAUTHORIZED (%d), child status 0x%x",
                  FIDBUS_UNAUTHORIZED, ws);

    /* root itself is still served */
    struct fidbus_client *c = connect_control(t);
    cbor_item_t *r = request(c, "status");
    ck_assert_uint_eq(muint(r, "generation"), 1);
    cbor_decref(&r);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------- fidbusctl */

START_TEST(test_e2e_control_cli_tables)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *bus = fb_e2e_connect(t);
    fb_e2e_publish_n(bus, "a.x", 4);
    fb_e2e_ping(bus);
    char log_id[FIDBUS_FUNCID_HEX], sig[FIDBUS_SIGHASH_HEX];
    hex_id("fidbus.log@1.0.0", log_id);
    any_sighash(sig);
    sig[16] = '\0';

    char *out = ctl(t, 0, NULL, "status", NULL, NULL, NULL);
    ck_assert_msg(strstr(out, "generation: 1\n") && strstr(out, "plugins: 2\n") &&
                      strstr(out, t->bus_addr),
                  "status:\n%s", out);
    free(out);

    out = ctl(t, 0, NULL, "plugin", "list", NULL, NULL);
    const char *pl_head[] = {"NAME", "VERSION", "PATH", "FUNCTIONS", NULL};
    const char *pl_log[] = {"log ", "log.so", log_id, NULL};
    ck_assert_msg(fb_e2e_has_line(out, pl_head) && fb_e2e_has_line(out, pl_log),
                  "plugin list:\n%s", out);
    free(out);

    out = ctl(t, 0, NULL, "func", "list", NULL, NULL);
    const char *fl_head[] = {"ID", "CANONICAL", "SIGHASH", "PLUGIN", "BLOCKING", NULL};
    const char *fl_log[] = {log_id, "fidbus.log@1.0.0", sig, " no", NULL};
    ck_assert_msg(fb_e2e_has_line(out, fl_head) && fb_e2e_has_line(out, fl_log),
                  "func list:\n%s", out);
    free(out);

    out = ctl(t, 0, NULL, "route", "list", NULL, NULL);
    char to[64];
    snprintf(to, sizeof to, "fidbus.log(%s):1,", log_id);
    const char *rl_head[] = {"NAME", "EVENT", "TAGS", "TO", "MODE", "PRIORITY", NULL};
    const char *rl_all[] = {"all ", "a.*", to, "fidbus.count@1.0.0(", " all ", NULL};
    ck_assert_msg(strncmp(out, "generation: 1\n", 14) == 0 &&
                      fb_e2e_has_line(out, rl_head) && fb_e2e_has_line(out, rl_all),
                  "route list:\n%s", out);
    free(out);

    out = ctl(t, 0, NULL, "stats", NULL, NULL, NULL);
    const char *st_fn[] = {log_id, " 4 ", NULL};
    const char *st_rt[] = {"all ", " 4", NULL};
    ck_assert_msg(strstr(out, "received: 4\n") && strstr(out, "dispatched: 8\n") &&
                      fb_e2e_has_line(out, st_fn) && fb_e2e_has_line(out, st_rt),
                  "stats:\n%s", out);
    free(out);

    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_control_cli_json)
{
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct fidbus_client *bus = fb_e2e_connect(t);
    fb_e2e_publish_n(bus, "a.x", 6);
    fb_e2e_ping(bus);
    char log_id[FIDBUS_FUNCID_HEX], sig[FIDBUS_SIGHASH_HEX];
    hex_id("fidbus.log@1.0.0", log_id);
    any_sighash(sig);

    json_t *j = ctl_json(t, "status", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "generation")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "plugins")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "pid")), t->pid);
    json_decref(j);

    j = ctl_json(t, "plugin", "list");
    json_t *ps = json_object_get(j, "plugins"), *p;
    size_t i;
    bool seen = false;
    json_array_foreach(ps, i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "name")), "log") == 0)
            seen = !strcmp(
                json_string_value(json_array_get(json_object_get(p, "functions"), 0)),
                log_id);
    }
    ck_assert_msg(seen, "plugin list --json lacks log with %s", log_id);
    json_decref(j);

    j = ctl_json(t, "func", "list");
    seen = false;
    json_array_foreach(json_object_get(j, "functions"), i, p)
    {
        if (!strcmp(json_string_value(json_object_get(p, "id")), log_id))
            seen = !strcmp(json_string_value(json_object_get(p, "sighash")), sig) &&
                   json_is_false(json_object_get(p, "blocking"));
    }
    ck_assert_msg(seen, "func list --json: log's entry wrong or missing");
    json_decref(j);

    j = ctl_json(t, "route", "list");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "generation")), 1);
    json_t *r0 = json_array_get(json_object_get(j, "routes"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(r0, "name")), "all");
    json_t *t0 = json_array_get(json_object_get(r0, "to"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(t0, "id")), log_id);
    ck_assert_int_eq(json_integer_value(json_object_get(t0, "weight")), 1);
    json_decref(j);

    j = ctl_json(t, "stats", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "received")), 6);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dispatched")), 12);
    json_t *fn = json_object_get(json_object_get(j, "functions"), log_id);
    ck_assert_int_eq(json_integer_value(json_object_get(fn, "calls")), 6);
    json_decref(j);

    /* a failure with --json: still one line on stderr, exit 1 */
    char *err = NULL;
    char *out = ctl(t, 1, &err, "--json", "plugin", "unload", "nosuch");
    ck_assert_msg(strstr(out, "\"ok\":false") &&
                      strstr(err, "plugin unload failed: NOT_FOUND: ") &&
                      strchr(err, '\n') == err + strlen(err) - 1,
                  "stdout: %s; stderr: %s", out, err);
    free(out);
    free(err);

    fidbus_client_close(bus);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------ route.test, config.export */

/* Precedence (README "Routes"): exact > prefix > '*'; more tags win. The
 * '*' route needs a tag, so an event without it matches nothing. */
#define TEST_SECTIONS                                                                    \
    FB_E2E_LOG FB_E2E_COUNT "[route exact]\nevent = a.b\nto = fidbus.log\n"              \
                            "[route tagged]\nevent = a.b\ntags = region=*\n"             \
                            "to = fidbus.count\n"                                        \
                            "[route prefix]\nevent = a.*\nto = fidbus.count\n"           \
                            "[route star]\nevent = *\ntags = only=*\n"                   \
                            "to = fidbus.log, fidbus.count\n"                            \
                            "[route split]\nevent = s.x\nto = fidbus.log:1, "            \
                            "fidbus.count:1\nmode = split\nsplit_by = user\n"

/* REQUEST route.test {event, tags: {k: v}} (k NULL: no tags; event NULL:
 * no event; apply: an "apply" key too). Returns the rc; the result map in
 * *out when it is 0. */
static int route_test(struct fidbus_client *c, const char *event, const char *k,
                      const char *v, bool apply, cbor_item_t **out)
{
    cbor_item_t *args = cbor_new_definite_map(3);
    if (event)
        ck_assert(cbor_map_add(
            args, (struct cbor_pair){.key = cbor_move(cbor_build_string("event")),
                                     .value = cbor_move(cbor_build_string(event))}));
    if (k) {
        cbor_item_t *tags = cbor_new_definite_map(1);
        ck_assert(cbor_map_add(
            tags, (struct cbor_pair){.key = cbor_move(cbor_build_string(k)),
                                     .value = cbor_move(cbor_build_string(v))}));
        ck_assert(cbor_map_add(
            args, (struct cbor_pair){.key = cbor_move(cbor_build_string("tags")),
                                     .value = cbor_move(tags)}));
    }
    if (apply)
        ck_assert(cbor_map_add(
            args, (struct cbor_pair){.key = cbor_move(cbor_build_string("apply")),
                                     .value = cbor_move(cbor_new_definite_map(0))}));
    unsigned char *buf = NULL;
    size_t cap = 0, len = cbor_serialize_alloc(args, &buf, &cap);
    cbor_decref(&args);
    ck_assert_uint_gt(len, 0);
    uint8_t *res = NULL;
    size_t rlen = 0;
    int rc = fidbus_request(c, "route.test", buf, len, &res, &rlen);
    free(buf);
    if (out)
        *out = NULL;
    if (rc == 0) {
        struct cbor_load_result lr;
        cbor_item_t *it = cbor_load(res, rlen, &lr);
        ck_assert_msg(it && cbor_isa_map(it), "route.test: result is not a map");
        ck_assert(out);
        *out = it;
    }
    free(res);
    return rc;
}

/* Asserts route.test answers route `want` (NULL: none) and returns how
 * many targets; the first is copied to first. */
static size_t expect_route(struct fidbus_client *c, const char *event, const char *k,
                           const char *v, const char *want, char first[FIDBUS_FUNCID_HEX])
{
    cbor_item_t *r = NULL;
    int rc = route_test(c, event, k, v, false, &r);
    ck_assert_msg(rc == 0, "route.test %s: %s (%s)", event, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    ck_assert_uint_eq(muint(r, "generation"), 1);
    cbor_item_t *route = mget(r, "route");
    if (want)
        ck_assert_msg(text_is(route, want), "route.test %s %s=%s: expected route %s",
                      event, k ? k : "", v ? v : "", want);
    else
        ck_assert_msg(route && cbor_is_null(route), "route.test %s: expected null",
                      event);
    cbor_item_t *ts = mget(r, "targets");
    ck_assert_msg(ts && cbor_isa_array(ts), "targets is not an array");
    size_t n = cbor_array_size(ts);
    if (first && n) {
        cbor_item_t *t0 = cbor_array_handle(ts)[0];
        ck_assert(cbor_isa_string(t0) && cbor_string_length(t0) == FIDBUS_FUNCID_HEX - 1);
        memcpy(first, cbor_string_handle(t0), FIDBUS_FUNCID_HEX - 1);
        first[FIDBUS_FUNCID_HEX - 1] = '\0';
    }
    cbor_decref(&r);
    return n;
}

START_TEST(test_e2e_control_route_test)
{
    struct fb_e2e *t = fb_e2e_up(NULL, TEST_SECTIONS);
    struct fidbus_client *c = connect_control(t);
    char log_id[FIDBUS_FUNCID_HEX], count_id[FIDBUS_FUNCID_HEX], got[FIDBUS_FUNCID_HEX];
    hex_id("fidbus.log@1.0.0", log_id);
    hex_id("fidbus.count@1.0.0", count_id);

    ck_assert_uint_eq(expect_route(c, "a.b", NULL, NULL, "exact", got), 1);
    ck_assert_str_eq(got, log_id);
    ck_assert_uint_eq(expect_route(c, "a.b", "region", "eu", "tagged", got), 1);
    ck_assert_str_eq(got, count_id);
    ck_assert_uint_eq(expect_route(c, "a.c.d", "region", "eu", "prefix", got), 1);
    ck_assert_str_eq(got, count_id);
    ck_assert_uint_eq(expect_route(c, "zzz", "only", "1", "star", got), 2);
    ck_assert_str_eq(got, log_id);
    ck_assert_uint_eq(expect_route(c, "zzz", NULL, NULL, NULL, NULL), 0);
    ck_assert_uint_eq(expect_route(c, "a", "region", "eu", NULL, NULL), 0);

    /* split by user: one target, the same every time for one user */
    char first[FIDBUS_FUNCID_HEX];
    ck_assert_uint_eq(expect_route(c, "s.x", "user", "alice", "split", first), 1);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(expect_route(c, "s.x", "user", "alice", "split", got), 1);
        ck_assert_str_eq(got, first);
    }
    /* two users out of a few land on different targets with 1:1 weights */
    bool other = false;
    char name[16];
    for (int i = 0; i < 32 && !other; i++) {
        snprintf(name, sizeof name, "u%d", i);
        ck_assert_uint_eq(expect_route(c, "s.x", "user", name, "split", got), 1);
        other = strcmp(got, first) != 0;
    }
    ck_assert_msg(other, "32 users all split to %s", first);
    /* without the split_by tag: every target it may choose from */
    ck_assert_uint_eq(expect_route(c, "s.x", NULL, NULL, "split", NULL), 2);

    /* bad input */
    int rc = route_test(c, "bad id!", NULL, NULL, false, NULL);
    ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INVALID, "bad id: %s",
                  fidbus_strerror(rc));
    ck_assert_msg(strstr(fidbus_client_last_error(c), "bad id!"), "message: %s",
                  fidbus_client_last_error(c));
    rc = route_test(c, NULL, NULL, NULL, false, NULL);
    ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INVALID, "no event: %s",
                  fidbus_strerror(rc));
    rc = route_test(c, "a.b", "bad key", "x", false, NULL);
    ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INVALID, "bad tag key: %s",
                  fidbus_strerror(rc));
    /* an empty proposal: the running routes, in the next generation (the
     * dry run itself is tested by e2e.change) */
    cbor_item_t *r = NULL;
    rc = route_test(c, "a.b", NULL, NULL, true, &r);
    ck_assert_msg(rc == 0, "apply: %s", fidbus_strerror(rc));
    ck_assert_msg(text_is(mget(r, "route"), "exact"), "apply: expected route exact");
    ck_assert_uint_eq(muint(r, "generation"), 2);
    cbor_decref(&r);
    r = request(c, "status");
    ck_assert_uint_eq(muint(r, "generation"), 1);
    cbor_decref(&r);

    /* fidbusctl */
    char *out = ctl(t, 0, NULL, "route", "test", "a.b", "--tag=region=eu");
    ck_assert_msg(strstr(out, "route: tagged\n") && strstr(out, count_id), "%s", out);
    free(out);
    out = ctl(t, 0, NULL, "--json", "route", "test", "a.c");
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(json_is_object(j), "--json route test: %s", out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "route")), "prefix");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "targets"), 0)),
                     count_id);
    json_decref(j);
    free(out);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Long tag values so the tags list takes continuation lines. */
#define V50 "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"
#define EXPORT_SECTIONS                                                                  \
    TEST_SECTIONS "[route long]\nevent = l.x\ntags = k1=" V50 ", k2=" V50 ",\n"          \
                  "  k3=" V50 ", k4=*, k5=" V50                                          \
                  "\nto = fidbus.log@1.0.0, fidbus.count:7\n"                            \
                  "priority = -3\nsignature = @SIG@\n"                                   \
                  "[limits]\nmax_connections = 300\nmax_inflight = 77\n"                 \
                  "idle_timeout_unix_ms = 60000\nmax_republish = 0\n"
/* What the export of those limits must say (max_connections_tcp follows
 * max_connections: 150, not written). */
#define EXPORT_LIMITS                                                                    \
    "\n[limits]\nmax_connections = 300\nmax_inflight = 77\n"                             \
    "idle_timeout_unix_ms = 60000\nmax_republish = 0\n"

/* The CBOR of result[key], serialised, for comparing two daemons. */
static unsigned char *part(cbor_item_t *r, const char *key, size_t *len)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    cbor_item_t *v = mget(r, key);
    ck_assert_msg(v, "no '%s'", key);
    *len = cbor_serialize_alloc(v, &buf, &cap);
    ck_assert_uint_gt(*len, 0);
    return buf;
}

START_TEST(test_e2e_control_config_export)
{
    char sig[FIDBUS_SIGHASH_HEX];
    any_sighash(sig);
    char sections[2048];
    const char *at = strstr(EXPORT_SECTIONS, "@SIG@");
    snprintf(sections, sizeof sections, "%.*s%s%s", (int)(at - EXPORT_SECTIONS),
             EXPORT_SECTIONS, sig, at + 5);
    struct fb_e2e *t = fb_e2e_up(NULL, sections);
    struct fidbus_client *c = connect_control(t);

    cbor_item_t *r = request(c, "config.export");
    cbor_item_t *conf = mget(r, "config");
    ck_assert_msg(conf && cbor_isa_string(conf) && cbor_string_is_definite(conf),
                  "config is not text");
    char *text =
        strndup((const char *)cbor_string_handle(conf), cbor_string_length(conf));
    cbor_decref(&r);
    ck_assert_msg(strncmp(text, "; exported by fidbusd ", 22) == 0 &&
                      strstr(text, "generation 1\n") && strstr(text, "[route long]\n") &&
                      strstr(text, ",\n    k") && strstr(text, EXPORT_LIMITS),
                  "export:\n%s", text);

    const char *file = fb_e2e_write(t, "export.conf", text);
    const char *argv[] = {fb_e2e_built("daemon/fidbusd"), "--check-config", "-c", file,
                          NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(EXIT_IS(st, 0), "--check-config: 0x%x: %s%s\nfile:\n%s", st, out, err,
                  text);
    free(out);
    free(err);

    size_t rl1, pl1, rl2, pl2;
    r = request(c, "route.list");
    unsigned char *routes1 = part(r, "routes", &rl1);
    cbor_decref(&r);
    r = request(c, "plugin.list");
    unsigned char *plugins1 = part(r, "plugins", &pl1);
    cbor_decref(&r);

    out = ctl(t, 0, NULL, "config", "export", NULL, NULL);
    ck_assert_msg(strstr(out, "[plugin count]\n") && strstr(out, "[route split]\n"), "%s",
                  out);
    free(out);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);

    /* the same paths serve a second daemon once the first is gone */
    FILE *f = fopen(t->conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    fb_e2e_start(t);
    c = connect_control(t);
    r = request(c, "route.list");
    unsigned char *routes2 = part(r, "routes", &rl2);
    cbor_decref(&r);
    r = request(c, "plugin.list");
    unsigned char *plugins2 = part(r, "plugins", &pl2);
    cbor_decref(&r);
    ck_assert_msg(rl1 == rl2 && memcmp(routes1, routes2, rl1) == 0,
                  "route.list differs after export");
    ck_assert_msg(pl1 == pl2 && memcmp(plugins1, plugins2, pl1) == 0,
                  "plugin.list differs after export");
    /* the second daemon runs with the same limits: its export says so */
    r = request(c, "config.export");
    conf = mget(r, "config");
    ck_assert_msg(conf && cbor_isa_string(conf), "config is not text");
    char *text2 =
        strndup((const char *)cbor_string_handle(conf), cbor_string_length(conf));
    cbor_decref(&r);
    ck_assert_msg(strstr(text2, EXPORT_LIMITS), "second export:\n%s", text2);
    free(text2);

    free(routes1);
    free(routes2);
    free(plugins1);
    free(plugins2);
    free(text);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_control_suite(void)
{
    Suite *s = suite_create("e2e.control");
    TCase *tc = tcase_create("control");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_control_status);
    tcase_add_test(tc, test_e2e_control_plugin_func_route_list);
    tcase_add_test(tc, test_e2e_control_stats_counts);
    tcase_add_test(tc, test_e2e_control_unsupported);
    tcase_add_test(tc, test_e2e_control_malformed_frame);
    tcase_add_test(tc, test_e2e_control_unauthorized);
    tcase_add_test(tc, test_e2e_control_cli_tables);
    tcase_add_test(tc, test_e2e_control_cli_json);
    tcase_add_test(tc, test_e2e_control_route_test);
    tcase_add_test(tc, test_e2e_control_config_export);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_control_suite());
}
