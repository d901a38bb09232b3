/*
 * End-to-end tests of the control socket's size limits (ctest:
 * e2e.ctl_limits):
 *   - a REPLY longer than max_frame (route.list, config.export and stats
 *     of 15,000 routes) reaches the library and fidbusctl whole, and one
 *     over [control] max_reply is refused with REPLY INTERNAL "too large"
 *     instead of being sent as a frame no client can read; a REQUEST
 *     over max_frame is refused by fidbusctl before it is sent;
 *   - a plugin's config keys are bounded (FB_PLUGIN_KEYS_MAX = 256) in a
 *     plugin.load and in a [plugin NAME] section alike;
 *   - the log plugin does not follow a symbolic link at its file path;
 *   - PING on the control socket is answered with its ACK, in order, as
 *     on the bus (an unauthorized peer gets UNAUTHORIZED and the close).
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define EXIT_IS(st, n) (WIFEXITED(st) && WEXITSTATUS(st) == (n))

/* ----------------------------------------------------- CBOR, growable */

static void cw_head(struct fidbus_buf *b, unsigned major, uint64_t v)
{
    uint8_t h[9];
    size_t n;
    major <<= 5;
    if (v < 24) {
        h[0] = (uint8_t)(major | v), n = 1;
    } else if (v <= 0xff) {
        h[0] = (uint8_t)(major | 24), h[1] = (uint8_t)v, n = 2;
    } else if (v <= 0xffff) {
        h[0] = (uint8_t)(major | 25), h[1] = (uint8_t)(v >> 8), h[2] = (uint8_t)v, n = 3;
    } else {
        ck_assert(v <= 0xffffffffu);
        h[0] = (uint8_t)(major | 26);
        for (int i = 0; i < 4; i++)
            h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
        n = 5;
    }
    ck_assert_int_eq(fidbus_buf_append(b, h, n), 0);
}

static void cw_text(struct fidbus_buf *b, const char *s)
{
    cw_head(b, FB_E2E_CB_TEXT, strlen(s));
    ck_assert_int_eq(fidbus_buf_append(b, s, strlen(s)), 0);
}

/* route.apply args adding n routes "rNNNNN" (event "eNNNNN.*", to
 * fidbus.count), from index first on. */
static void routes_args(struct fidbus_buf *b, unsigned first, unsigned n)
{
    char s[32];
    b->len = 0;
    cw_head(b, FB_E2E_CB_MAP, 1);
    cw_text(b, "add");
    cw_head(b, FB_E2E_CB_ARRAY, n);
    for (unsigned i = first; i < first + n; i++) {
        cw_head(b, FB_E2E_CB_MAP, 3);
        cw_text(b, "name");
        snprintf(s, sizeof s, "r%05u", i);
        cw_text(b, s);
        cw_text(b, "event");
        snprintf(s, sizeof s, "e%05u.*", i);
        cw_text(b, s);
        cw_text(b, "to");
        cw_head(b, FB_E2E_CB_ARRAY, 1);
        cw_text(b, "fidbus.count");
    }
}

/* --------------------------------------------------------------- helpers */

static struct fidbus_client *connect_control(const struct fb_e2e *t)
{
    /* generous: 15,000 routes under a sanitizer on a busy machine */
    struct fidbus_client_opts o = {.timeout_ms = 60000};
    return fb_e2e_connect_control(t, &o);
}

/* Adds n routes in one route.apply, asserting that the REQUEST itself fits
 * the daemon's default max_frame (it is REQUESTs that max_frame bounds). */
static void add_routes(struct fidbus_client *c, unsigned n)
{
    struct fidbus_buf b = {0};
    routes_args(&b, 0, n);
    ck_assert_msg(b.len + 64 < FIDBUS_MAX_FRAME_DEFAULT,
                  "route.apply of %u routes is %zu bytes: batch it", n, b.len);
    int rc = fidbus_request(c, "route.apply", b.data, b.len, NULL, NULL);
    ck_assert_msg(rc == 0, "route.apply of %u routes: %s (%s)", n, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    fidbus_buf_free(&b);
}

/* fidbusctl --socket CONTROL ARGS...; asserts exit status `code`. */
static char *ctl(struct fb_e2e *t, int code, char **err, const char *a1, const char *a2,
                 const char *a3)
{
    return fb_e2e_ctl(t, code, err, a1, a2, a3, (const char *)NULL);
}

static json_t *ctl_json(struct fb_e2e *t, const char *a1, const char *a2)
{
    char *out = ctl(t, 0, NULL, "--json", a1, a2);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(json_is_object(j), "--json %s %s: not a JSON object (%s)", a1,
                  a2 ? a2 : "", e.text);
    free(out);
    return j;
}

static size_t count_str(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ------------------------------------------------------ big REPLYs */

#define MANY_ROUTES 15000u

START_TEST(test_e2e_ctl_limits_many_routes)
{
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_COUNT);
    struct fidbus_client *c = connect_control(t);
    add_routes(c, MANY_ROUTES);

    /* The REPLY is longer than max_frame (the daemon's and this client's),
     * and the library reads it whole. */
    uint8_t *res = NULL;
    size_t len = 0;
    int rc = fidbus_request(c, "route.list", NULL, 0, &res, &len);
    ck_assert_msg(rc == 0, "route.list: %s (%s)", fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    ck_assert_msg(len > FIDBUS_MAX_FRAME_DEFAULT,
                  "route.list of %u routes is only %zu bytes: the test crosses nothing",
                  MANY_ROUTES, len);
    free(res);
    /* the connection goes on with frames of the usual size */
    ck_assert_int_eq(fidbus_request(c, "status", NULL, 0, NULL, NULL), 0);
    fb_e2e_ping(c);

    json_t *j = ctl_json(t, "route", "list");
    json_t *routes = json_object_get(j, "routes");
    ck_assert_msg(json_is_array(routes) && json_array_size(routes) == MANY_ROUTES,
                  "fidbusctl route list: %zu routes, expected %u",
                  json_is_array(routes) ? json_array_size(routes) : 0, MANY_ROUTES);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(routes, 0), "name")), "r00000");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(routes, MANY_ROUTES - 1), "name")),
                     "r14999");
    json_decref(j);

    j = ctl_json(t, "stats", NULL);
    ck_assert_uint_eq(json_object_size(json_object_get(j, "routes")), MANY_ROUTES);
    json_decref(j);

    /* the table too: a header line, then one line per route */
    char *out = ctl(t, 0, NULL, "route", "list", NULL);
    ck_assert_uint_ge(count_str(out, "\n"), MANY_ROUTES);
    free(out);

    out = ctl(t, 0, NULL, "config", "export", NULL);
    ck_assert_uint_eq(count_str(out, "\n[route "), MANY_ROUTES);
    ck_assert_msg(strstr(out, "\nmax_reply = 67108864\n"), "no [control] max_reply line");
    free(out);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_ctl_limits_max_reply)
{
    struct fb_e2e_opts o = {.control_extra = "max_reply = 65536\n"};
    struct fb_e2e *t = fb_e2e_up(&o, FB_E2E_COUNT);
    struct fidbus_client *c = connect_control(t);
    add_routes(c, 2000); /* route.list ~280 KB, config.export ~140 KB */

    static const char *const big[] = {"route.list", "config.export"};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *res = NULL;
        size_t len = 0;
        int rc = fidbus_request(c, big[i], NULL, 0, &res, &len);
        ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INTERNAL,
                      "%s over max_reply: expected INTERNAL, got %s", big[i],
                      fidbus_strerror(rc));
        ck_assert_ptr_null(res);
        const char *msg = fidbus_client_last_error(c);
        ck_assert_msg(strstr(msg, "too large") && strstr(msg, "65536") &&
                          strstr(msg, "max_reply"),
                      "%s: unclear refusal: %s", big[i], msg);
    }
    /* what fits still comes, on the same connection */
    ck_assert_int_eq(fidbus_request(c, "status", NULL, 0, NULL, NULL), 0);
    json_t *j = ctl_json(t, "stats", NULL);
    ck_assert_uint_eq(json_object_size(json_object_get(j, "routes")), 2000);
    json_decref(j);

    /* fidbusctl says it in one line, exit 1 */
    char *err = NULL;
    char *out = ctl(t, 1, &err, "route", "list", NULL);
    ck_assert_str_eq(out, "");
    ck_assert_msg(strstr(err, "route list failed: INTERNAL") &&
                      strstr(err, "too large") &&
                      strchr(err, '\n') == err + strlen(err) - 1,
                  "expected one INTERNAL 'too large' line, got: %s", err);
    free(out);
    free(err);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_ctl_limits_max_reply_config)
{
    static const char *const bad[][2] = {
        {"max_reply = 4095\n", "[control] max_reply must be a whole number from 4096 to "
                               "67108864"},
        {"max_reply = 67108865\n", "[control] max_reply must be a whole number from 4096 "
                                   "to 67108864"},
    };
    for (size_t i = 0; i < 2; i++) {
        struct fb_e2e *t = fb_e2e_new();
        fb_e2e_config(t, &(struct fb_e2e_opts){.control_extra = bad[i][0]}, "");
        fb_e2e_start_fail_says(t, bad[i][1]);
        fb_e2e_free(t);
    }
}
END_TEST

START_TEST(test_e2e_ctl_limits_request_too_big)
{
    /* A REQUEST is still bound by max_frame: fidbusctl says so, sends
     * nothing, and exits 2 */
    struct fb_e2e *t = fb_e2e_up(NULL, FB_E2E_COUNT);
    size_t cap = 20000u * 100u + 64u, n = 0;
    char *json = malloc(cap);
    ck_assert_ptr_nonnull(json);
    n += (size_t)snprintf(json + n, cap - n, "{\"add\": [");
    for (unsigned i = 0; i < 20000; i++)
        n += (size_t)snprintf(json + n, cap - n,
                              "%s{\"name\": \"route-number-%05u\", \"event\": "
                              "\"event.number.%05u.*\", \"to\": [\"fidbus.count\"]}",
                              i ? ", " : "", i, i);
    snprintf(json + n, cap - n, "]}");
    const char *file = fb_e2e_write(t, "big.json", json);
    free(json);

    char *err = NULL;
    char *out = ctl(t, 2, &err, "route", "apply", file);
    ck_assert_msg(strstr(err, "route apply failed: the request is") &&
                      strstr(err, "larger than the maximum frame (1048576 bytes)"),
                  "%s", err);
    free(out);
    free(err);
    json_t *j = ctl_json(t, "status", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "generation")), 1);
    json_decref(j);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------- plugin config keys */

/* plugin.load args: log.so as `name`, file in the temp dir, then nkeys
 * more keys "kN" (the log plugin ignores keys it does not read). */
static void plugin_args(struct fb_e2e *t, struct fidbus_buf *b, const char *name,
                        unsigned nkeys)
{
    char k[32];
    b->len = 0;
    cw_head(b, FB_E2E_CB_MAP, 3);
    cw_text(b, "path");
    cw_text(b, fb_e2e_built("plugins/log.so"));
    cw_text(b, "name");
    cw_text(b, name);
    cw_text(b, "config");
    cw_head(b, FB_E2E_CB_MAP, nkeys + 1);
    cw_text(b, "file");
    cw_text(b, fb_e2e_file(t, "log.txt"));
    for (unsigned i = 0; i < nkeys; i++) {
        snprintf(k, sizeof k, "k%u", i);
        cw_text(b, k);
        cw_text(b, "v");
    }
}

START_TEST(test_e2e_ctl_limits_plugin_keys)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "");
    struct fidbus_client *c = connect_control(t);
    struct fidbus_buf b = {0};

    /* one key over, and tens of thousands, are refused with the limit named */
    static const unsigned over[] = {256, 60000};
    int rc;
    for (size_t i = 0; i < 2; i++) {
        plugin_args(t, &b, "over", over[i]);
        ck_assert_uint_lt(b.len + 64, FIDBUS_MAX_FRAME_DEFAULT);
        rc = fidbus_request(c, "plugin.load", b.data, b.len, NULL, NULL);
        ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INVALID,
                      "%u config keys: expected INVALID, got %s", over[i] + 1,
                      fidbus_strerror(rc));
        ck_assert_msg(strstr(fidbus_client_last_error(c), "more than the 256"),
                      "%u config keys: %s", over[i] + 1, fidbus_client_last_error(c));
    }
    /* 256 keys (file and 255 more): the limit itself loads */
    plugin_args(t, &b, "at_limit", 255);
    rc = fidbus_request(c, "plugin.load", b.data, b.len, NULL, NULL);
    ck_assert_msg(rc == 0, "256 config keys: %s (%s)", fidbus_strerror(rc),
                  fidbus_client_last_error(c));

    fidbus_buf_free(&b);

    json_t *j = ctl_json(t, "plugin", "list");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "plugins")), 1);
    json_decref(j);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_ctl_limits_plugin_keys_config)
{
    /* a [plugin NAME] section with 257 keys besides path */
    size_t cap = 300 * 16 + 256, n = 0;
    char *sec = malloc(cap);
    ck_assert_ptr_nonnull(sec);
    n += (size_t)snprintf(sec + n, cap - n, "%s", FB_E2E_LOG);
    for (unsigned i = 0; i < 256; i++)
        n += (size_t)snprintf(sec + n, cap - n, "k%u = v\n", i);

    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, sec);
    fb_e2e_start_fail_says(t, "[plugin log] has more than 256 keys besides path");
    fb_e2e_free(t);

    /* 256 of them start (file and 255 more) */
    n = (size_t)snprintf(sec, cap, "%s", FB_E2E_LOG);
    for (unsigned i = 0; i < 255; i++)
        n += (size_t)snprintf(sec + n, cap - n, "k%u = v\n", i);
    t = fb_e2e_up(NULL, sec);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
    free(sec);
}
END_TEST

/* ------------------------------------------------ log file symlink */

/* plugin.load of log.so as `name` writing to `file`. */
static int load_log(struct fidbus_client *c, const char *name, const char *file)
{
    struct fidbus_buf b = {0};
    cw_head(&b, FB_E2E_CB_MAP, 3);
    cw_text(&b, "path");
    cw_text(&b, fb_e2e_built("plugins/log.so"));
    cw_text(&b, "name");
    cw_text(&b, name);
    cw_text(&b, "config");
    cw_head(&b, FB_E2E_CB_MAP, 1);
    cw_text(&b, "file");
    cw_text(&b, file);
    int rc = fidbus_request(c, "plugin.load", b.data, b.len, NULL, NULL);
    fidbus_buf_free(&b);
    return rc;
}

START_TEST(test_e2e_ctl_limits_log_symlink)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "");
    struct fidbus_client *c = connect_control(t);

    /* a link to a file that exists, and a dangling one (O_CREAT would
     * create its target) */
    char target[200], dangling[200], link1[200], link2[200];
    snprintf(target, sizeof target, "%s", fb_e2e_file(t, "target.txt"));
    snprintf(dangling, sizeof dangling, "%s", fb_e2e_file(t, "created-through-link"));
    snprintf(link1, sizeof link1, "%s", fb_e2e_file(t, "link1.txt"));
    snprintf(link2, sizeof link2, "%s", fb_e2e_file(t, "link2.txt"));
    fb_e2e_write(t, "target.txt", "");
    ck_assert_int_eq(symlink(target, link1), 0);
    ck_assert_int_eq(symlink(dangling, link2), 0);

    const char *links[] = {link1, link2};
    for (size_t i = 0; i < 2; i++) {
        int rc = load_log(c, "lnk", links[i]);
        ck_assert_msg(fidbus_error_code(rc) == FIDBUS_INVALID,
                      "log file at a symlink: expected INVALID, got %s",
                      fidbus_strerror(rc));
        const char *msg = fidbus_client_last_error(c);
        ck_assert_msg(strstr(msg, links[i]) && strstr(msg, "symbolic link"),
                      "the refusal does not say why: %s", msg);
    }
    struct stat st;
    ck_assert_int_eq(stat(target, &st), 0);
    ck_assert_int_eq(st.st_size, 0);
    ck_assert_msg(lstat(dangling, &st) < 0 && errno == ENOENT,
                  "the log plugin created the target of a dangling link");

    /* the same path, once no link is there, loads */
    ck_assert_int_eq(unlink(link1), 0);
    int rc = load_log(c, "lnk", link1);
    ck_assert_msg(rc == 0, "log file at a plain path: %s (%s)", fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    ck_assert_int_eq(lstat(link1, &st), 0);
    ck_assert(S_ISREG(st.st_mode));

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);

    /* the same in the config file stops the start, saying why */
    t = fb_e2e_new();
    ck_assert_int_eq(symlink(fb_e2e_file(t, "elsewhere.txt"), fb_e2e_file(t, "log.txt")),
                     0);
    fb_e2e_config(t, NULL, FB_E2E_LOG);
    fb_e2e_start_fail_says(t, "log.txt: it is a symbolic link");
    ck_assert_msg(lstat(fb_e2e_file(t, "elsewhere.txt"), &st) < 0 && errno == ENOENT,
                  "the log plugin created the target of a dangling link");
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------ PING on control */

static void expect_reply(struct fb_e2e_raw *r, uint64_t seq, uint64_t code)
{
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_msg(r->msg.type == FIDBUS_MSG_REPLY && r->msg.seq == seq &&
                      r->msg.code == code,
                  "expected REPLY seq %llu code %llu, got type %llu seq %llu code %llu",
                  (unsigned long long)seq, (unsigned long long)code,
                  (unsigned long long)r->msg.type, (unsigned long long)r->msg.seq,
                  (unsigned long long)r->msg.code);
}

static void send_request(struct fb_e2e_raw *r, uint64_t seq, const char *cmd)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND),
        .type = FIDBUS_MSG_REQUEST,
        .seq = seq,
        .command = cmd,
    };
    fb_e2e_raw_msg(r, &m);
}

static const uint8_t seqless_ping[] = {0xa1, 0x00, 0x08}; /* {0: 8} */

/* Pipelined REQUESTs and PINGs come back in order; a PING without a seq
 * gets an ACK with seq 0. */
static void ping_session(struct fb_e2e_raw *r)
{
    fb_e2e_raw_hello(r);
    send_request(r, 1, "status");
    fb_e2e_raw_ping(r, 2);
    send_request(r, 3, "no.such.command");
    fb_e2e_raw_frame(r, seqless_ping, sizeof seqless_ping);
    fb_e2e_raw_ping(r, 5);

    expect_reply(r, 1, 0);
    fb_e2e_raw_expect_ack(r, 2, 0);
    expect_reply(r, 3, FIDBUS_UNSUPPORTED);
    fb_e2e_raw_expect_ack(r, 0, 0);
    fb_e2e_raw_expect_ack(r, 5, 0);
}

/* A peer that may not run commands gets UNAUTHORIZED for its first frame,
 * a PING too, and the close: it is held for nothing (proto/control.md). */
static void ping_session_unauthorized(struct fb_e2e_raw *r)
{
    fb_e2e_raw_hello(r);
    fb_e2e_raw_ping(r, 1);
    fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, 1);
    fb_e2e_raw_expect_eof(r);
}

START_TEST(test_e2e_ctl_limits_ping)
{
    struct fb_e2e_opts o = {.control_extra = "mode = 0666\n"};
    struct fb_e2e *t = fb_e2e_up(&o, "");
    struct fb_e2e tc = *t; /* the raw helpers dial t->bus */
    memcpy(tc.bus, t->control, sizeof tc.bus);

    struct fb_e2e_raw *r = fb_e2e_raw_unix(&tc);
    ping_session(r);
    fb_e2e_raw_close(r);

    /* A peer that may not run commands gets no ACK: its first frame is
     * refused. Needs root to switch uid. */
    if (geteuid() == 0) {
        /* let uid 65534 reach the socket (the harness's base dir, the
         * test's dir, run/): only the peer check may stop it */
        fb_e2e_let_others_in(t);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            if (fb_e2e_drop_to(65534, 65534) != 0)
                _exit(3);
            struct fb_e2e_raw *u = fb_e2e_raw_unix(&tc);
            ping_session_unauthorized(u);
            fb_e2e_raw_close(u);
            _exit(0);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(EXIT_IS(st, 0), "unauthorized PING session: status 0x%x", st);
    } else {
        fprintf(stderr, "test_e2e_ctl_limits_ping: unauthorized part SKIPPED: needs "
                        "root to run a client as another uid\n");
    }

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("e2e.ctl_limits");
    TCase *tc = tcase_create("ctl_limits");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_e2e_ctl_limits_many_routes);
    tcase_add_test(tc, test_e2e_ctl_limits_max_reply);
    tcase_add_test(tc, test_e2e_ctl_limits_max_reply_config);
    tcase_add_test(tc, test_e2e_ctl_limits_request_too_big);
    tcase_add_test(tc, test_e2e_ctl_limits_plugin_keys);
    tcase_add_test(tc, test_e2e_ctl_limits_plugin_keys_config);
    tcase_add_test(tc, test_e2e_ctl_limits_log_symlink);
    tcase_add_test(tc, test_e2e_ctl_limits_ping);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(suite());
}
