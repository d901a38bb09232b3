/*
 * Zero loss under change (ctest: e2e.soak; docs/architecture.md): publishers
 * send acked and un-acked events as fast as they can while a controller
 * changes the running set over the control socket without pause, and at
 * the end every event sent was counted exactly once.
 *
 * - Publishers: NPUB threads, each with its own bus connection, send
 *   bursts of BURST un-acked PUBLISHes and then one acked one, until told
 *   to stop; then a PING barrier. Every event carries a unique number as
 *   its payload (a CBOR uint) and a `user` tag.
 * - Controller: one thread, one control connection, in a loop: route.add
 *   and route.del of a side route (more specific than the main one, so
 *   events really move), route.apply moving the weights of the main
 *   `split` route between test.tally@1.0.0 and @2.0.0, plugin.reload of
 *   the routed tally instances (every other time after overwriting the
 *   .so the instance was loaded from, by writing a new file and renaming
 *   it over the old one), and plugin.load / plugin.unload of an unrelated
 *   instance (ver1.so). Every change must succeed, and each generation
 *   must be above the one before.
 * - Counting: tests/plugins/tally{1,2}.so count and sum the payloads they
 *   handle; each instance appends its totals to one file at fini (after
 *   its drain), so after SIGTERM the file has one line per instance that
 *   ever ran, and their sums must equal what was sent: the count catches
 *   a lost or doubled event, the sum of the numbers one that happens to
 *   be paired with the other.
 * - At the end: no publisher saw an error (every acked event got an ACK
 *   with result 1, no ERROR came for an un-acked one), `stats` says
 *   received == dispatched == sent, unrouted == 0 and errors == 0, the
 *   daemon exits 0 on SIGTERM, and the tally lines add up.
 *
 * The run lasts $FIDBUS_SOAK_SECONDS (default 20; 10 under ASan, 5 under
 * TSan, which is much slower); `tools/dev.sh soak` runs it for 300. The
 * rates reached are printed to stderr ("soak: ..."), and with
 * $FIDBUS_SOAK_VERBOSE set every control request slower than 100 ms.
 * Latency is reported, not asserted: each change fsyncs state.cbor, and
 * on this test's disk a flush can stall for seconds. Threads here make no
 * Check assertion (Check is not thread-safe): they record the first
 * failure, which the main thread asserts after joining them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>

#include "harness.h"
#include "soak_pub.h"
#include "json_cbor.h"

#define NPUB 3
#define BURST 200
#define NUSERS 997
#define MAX_LAT 2000000 /* flip latencies kept for percentiles */

#if defined(__SANITIZE_THREAD__)
#define SOAK_DEFAULT_S 5.0
#elif defined(__SANITIZE_ADDRESS__)
#define SOAK_DEFAULT_S 10.0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOAK_DEFAULT_S 5.0
#elif __has_feature(address_sanitizer)
#define SOAK_DEFAULT_S 10.0
#endif
#endif
#ifndef SOAK_DEFAULT_S
#define SOAK_DEFAULT_S 20.0
#endif

/* Every change fsyncs state.cbor before its REPLY, and on a busy virtual
 * disk a flush has been seen to take seconds: wait longer than the
 * library's 10 s before calling a request lost. Latency is reported,
 * not asserted. */
static const struct fidbus_client_opts client_opts = {.timeout_ms = 60000};

struct soak {
    char bus_addr[200], control_addr[200];
    char tally_so[400];   /* the copy ta was loaded from (overwritten) */
    char tally_tmp[400];  /* where the new file is written first */
    char ver1_so[400];    /* the unrelated plugin */
    uint8_t *tally_bytes; /* tally1.so, to write over tally_so */
    size_t tally_len;
    uint64_t deadline_ms;
    struct fb_soak_fail fail;
    struct fb_soak_pub pubs[NPUB];

    /* the controller's figures */
    uint64_t flips, applies, reloads, overwrites, loads;
    uint32_t *lat_us; /* route change REQUEST -> REPLY, microseconds */
    size_t nlat;
    double ctl_secs;
    uint64_t slowest_us; /* the slowest control request of any kind */
    char slowest[32];
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---------------------------------------------------------- controller */

/*
 * REQUEST cmd with args as JSON (printf format, ' standing for "). 0 with
 * the result's generation in *gen, or -1 after failf.
 */
static int control(struct soak *s, struct fidbus_client *c, uint64_t *gen,
                   const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int control(struct soak *s, struct fidbus_client *c, uint64_t *gen,
                   const char *cmd, const char *fmt, ...)
{
    char json[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(json, sizeof json, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof json) {
        fb_soak_failf(&s->fail, "%s: args too long", cmd);
        return -1;
    }
    for (char *q = json; *q; q++)
        if (*q == '\'')
            *q = '"';
    uint8_t *args = NULL, *res = NULL;
    size_t alen = 0, rlen = 0;
    char err[200];
    if (fbctl_json_to_cbor(json, (size_t)n, &args, &alen, err, sizeof err) != 0) {
        fb_soak_failf(&s->fail, "%s: bad args %s: %s", cmd, json, err);
        return -1;
    }
    uint64_t t0 = now_us();
    int rc = fidbus_request(c, cmd, args, alen, &res, &rlen);
    uint64_t took = now_us() - t0;
    if (took > s->slowest_us) {
        s->slowest_us = took;
        snprintf(s->slowest, sizeof s->slowest, "%s", cmd);
    }
    if (getenv("FIDBUS_SOAK_VERBOSE") && took > 100000)
        fprintf(stderr, "soak: %s took %.1f ms\n", cmd, took / 1000.0);
    free(args);
    if (rc < 0) {
        fb_soak_failf(&s->fail, "%s %s: %s: %s", cmd, json, fidbus_strerror(rc),
                      fidbus_client_last_error(c));
        free(res);
        return -1;
    }
    /* The result map's "generation". */
    struct cbor_load_result lr;
    cbor_item_t *m = cbor_load(res, rlen, &lr);
    free(res);
    bool found = false;
    for (size_t i = 0; m && cbor_isa_map(m) && i < cbor_map_size(m); i++) {
        struct cbor_pair *pr = &cbor_map_handle(m)[i];
        if (cbor_isa_string(pr->key) && cbor_string_length(pr->key) == 10 &&
            memcmp(cbor_string_handle(pr->key), "generation", 10) == 0 &&
            cbor_isa_uint(pr->value)) {
            *gen = cbor_get_int(pr->value);
            found = true;
        }
    }
    if (m)
        cbor_decref(&m);
    if (!found) {
        fb_soak_failf(&s->fail, "%s: no generation in the result", cmd);
        return -1;
    }
    return 0;
}

/* Replaces the file ta was loaded from: a new file, renamed over it. */
static int overwrite_tally(struct soak *s)
{
    int fd = open(s->tally_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (fd < 0) {
        fb_soak_failf(&s->fail, "create %s: %s", s->tally_tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < s->tally_len) {
        ssize_t w = write(fd, s->tally_bytes + off, s->tally_len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fb_soak_failf(&s->fail, "write %s: %s", s->tally_tmp, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    close(fd);
    if (rename(s->tally_tmp, s->tally_so) < 0) {
        fb_soak_failf(&s->fail, "rename %s: %s", s->tally_tmp, strerror(errno));
        return -1;
    }
    return 0;
}

/* A route change, its latency kept. */
static int flip(struct soak *s, struct fidbus_client *c, uint64_t *gen, const char *cmd,
                const char *json)
{
    uint64_t t0 = now_us();
    int rc = control(s, c, gen, cmd, "%s", json);
    if (rc == 0 && s->nlat < MAX_LAT)
        s->lat_us[s->nlat++] = (uint32_t)(now_us() - t0);
    s->flips++;
    return rc;
}

#define SIDE_ADD                                                                         \
    "{'route': {'name': 'side', 'event': 'soak.ev', 'tags': {'user': '*'}, 'to': "       \
    "['test.tally']}}"

static void *controller(void *arg)
{
    struct soak *s = arg;
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, s->control_addr, &client_opts);
    if (rc < 0) {
        fb_soak_failf(&s->fail, "controller: connect: %s", fidbus_strerror(rc));
        return NULL;
    }
    uint64_t t0 = now_us(), last = 0;
    char apply[512];
    for (unsigned i = 0; !atomic_load(&s->fail.stop); i++) {
        if (fb_e2e_now_ms() >= s->deadline_ms)
            break;
        /* Weights 0..100 and the rest: never both 0. */
        unsigned w = (i * 37u) % 101u;
        snprintf(apply, sizeof apply,
                 "{'del': ['main'], 'add': [{'name': 'main', 'event': 'soak.ev', 'to': "
                 "['test.tally@1.0.0:%u', 'test.tally@2.0.0:%u'], 'mode': 'split', "
                 "'split_by': 'user'}]}",
                 w, 100u - w);
        uint64_t g[6] = {0};
        int k = 0;
        if (flip(s, c, &g[k++], "route.add", SIDE_ADD) < 0 ||
            flip(s, c, &g[k++], "route.apply", apply) < 0 ||
            flip(s, c, &g[k++], "route.del", "{'name': 'side'}") < 0)
            break;
        s->applies++;
        snprintf(apply, sizeof apply,
                 "{'del': ['main'], 'add': [{'name': 'main', 'event': 'soak.ev', 'to': "
                 "['test.tally@1.0.0:%u', 'test.tally@2.0.0:%u'], 'mode': 'split', "
                 "'split_by': 'user'}]}",
                 100u - w, w == 0 ? 1u : w);
        if (flip(s, c, &g[k++], "route.apply", apply) < 0)
            break;
        s->applies++;
        switch (i % 4) {
        case 0: /* the routed copy, overwritten in place first */
            if (overwrite_tally(s) < 0)
                goto out;
            s->overwrites++;
            rc = control(s, c, &g[k++], "plugin.reload", "{'name': 'ta'}");
            s->reloads++;
            break;
        case 1:
            rc = control(s, c, &g[k++], "plugin.load", "{'path': '%s', 'name': 'extra'}",
                         s->ver1_so);
            s->loads++;
            break;
        case 2:
            rc = control(s, c, &g[k++], "plugin.reload", "{'name': 'tb'}");
            s->reloads++;
            break;
        default:
            rc = control(s, c, &g[k++], "plugin.unload", "{'name': 'extra'}");
            s->loads++;
            break;
        }
        if (rc < 0)
            break;
        for (int j = 0; j < k; j++) {
            if (g[j] <= last) {
                fb_soak_failf(&s->fail,
                              "controller: generation %" PRIu64 " after %" PRIu64
                              " (cycle %u, step %d)",
                              g[j], last, i, j);
                goto out;
            }
            last = g[j];
        }
    }
out:
    s->ctl_secs = (double)(now_us() - t0) / 1e6;
    fidbus_client_close(c);
    atomic_store(&s->fail.stop, true);
    return NULL;
}

/* ---------------------------------------------------------------- test */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

#define SOAK_SECTIONS                                                                    \
    "[plugin ta]\npath = @D@/tally1.so\nreport_file = @D@/tally.txt\n"                   \
    "[plugin tb]\npath = @B@/tests/plugins/tally2.so\nreport_file = @D@/tally.txt\n"     \
    "[route main]\nevent = soak.ev\nto = test.tally@1.0.0:50, test.tally@2.0.0:50\n"     \
    "mode = split\nsplit_by = user\n"

START_TEST(test_e2e_soak_zero_loss_under_change)
{
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    ck_assert_msg(secs > 0, "FIDBUS_SOAK_SECONDS=%s: want a number of seconds",
                  getenv("FIDBUS_SOAK_SECONDS"));
    struct soak *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    s->lat_us = malloc(MAX_LAT * sizeof *s->lat_us);
    ck_assert_ptr_nonnull(s->lat_us);
    fb_soak_fail_init(&s->fail);

    struct fb_e2e *t = fb_e2e_new();
    s->tally_bytes =
        (uint8_t *)fb_e2e_read(fb_e2e_built("tests/plugins/tally1.so"), &s->tally_len);
    ck_assert_msg(s->tally_bytes && s->tally_len > 0, "no tests/plugins/tally1.so");
    snprintf(s->tally_so, sizeof s->tally_so, "%s", fb_e2e_file(t, "tally1.so"));
    snprintf(s->tally_tmp, sizeof s->tally_tmp, "%s", fb_e2e_file(t, "tally1.so.new"));
    snprintf(s->ver1_so, sizeof s->ver1_so, "%s", fb_e2e_built("tests/plugins/ver1.so"));
    ck_assert_int_eq(overwrite_tally(s), 0);
    fb_e2e_config(t, NULL, SOAK_SECTIONS);
    fb_e2e_start(t);
    snprintf(s->bus_addr, sizeof s->bus_addr, "%s", t->bus_addr);
    snprintf(s->control_addr, sizeof s->control_addr, "unix:%s", t->control);

    uint64_t start_ms = fb_e2e_now_ms();
    s->deadline_ms = start_ms + (uint64_t)(secs * 1000.0);
    for (unsigned i = 0; i < NPUB; i++) {
        s->pubs[i] = (struct fb_soak_pub){.fail = &s->fail,
                                          .addr = s->bus_addr,
                                          .event = "soak.ev",
                                          .burst = BURST,
                                          .nusers = NUSERS,
                                          .id = i};
        ck_assert_int_eq(
            pthread_create(&s->pubs[i].thread, NULL, fb_soak_publisher, &s->pubs[i]), 0);
    }
    pthread_t ctl;
    ck_assert_int_eq(pthread_create(&ctl, NULL, controller, s), 0);
    pthread_join(ctl, NULL);
    for (unsigned i = 0; i < NPUB; i++)
        pthread_join(s->pubs[i].thread, NULL);
    double pub_secs = (double)(fb_e2e_now_ms() - start_ms) / 1000.0;
    ck_assert_msg(!s->fail.failure[0], "%s", s->fail.failure);

    uint64_t sent = 0, acked = 0, sum = 0;
    for (unsigned i = 0; i < NPUB; i++) {
        sent += s->pubs[i].sent;
        acked += s->pubs[i].acked;
        sum += s->pubs[i].sum;
    }

    /* The daemon's view, before it stops. */
    static const char *const keys[] = {"received", "dispatched", "unrouted", "errors"};
    uint64_t v[4];
    fb_e2e_stats(t, 4, keys, v);
    uint64_t received = v[0], dispatched = v[1], unrouted = v[2], errors = v[3];
    ck_assert_msg(errors == 0 && unrouted == 0,
                  "stats: errors = %" PRIu64 ", unrouted = %" PRIu64, errors, unrouted);
    ck_assert_msg(received == sent && dispatched == sent,
                  "stats: received %" PRIu64 ", dispatched %" PRIu64 "; sent %" PRIu64,
                  received, dispatched, sent);

    fb_e2e_stop_ok(t);

    /* Every instance that ever ran appended one line at its fini. */
    char *text = fb_e2e_read(fb_e2e_file(t, "tally.txt"), NULL);
    ck_assert_msg(text != NULL, "no tally report");
    uint64_t counted = 0, csum = 0, lines = 0, per_v[2] = {0, 0};
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        unsigned major = 0;
        uint64_t n = 0, sm = 0;
        ck_assert_msg(sscanf(line, "tally v=%u.0.0 count=%" SCNu64 " sum=%" SCNu64,
                             &major, &n, &sm) == 3 &&
                          (major == 1 || major == 2),
                      "tally.txt: bad line '%s'", line);
        counted += n;
        csum += sm;
        per_v[major - 1] += n;
        lines++;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    /* ta and tb at the start, one more per reload */
    ck_assert_msg(lines == 2 + s->reloads,
                  "tally.txt has %" PRIu64 " lines; expected %" PRIu64 " instances",
                  lines, 2 + s->reloads);
    ck_assert_msg(counted == sent && csum == sum,
                  "sent %" PRIu64 " events (sum %" PRIu64 "), handlers counted %" PRIu64
                  " (sum %" PRIu64 ")",
                  sent, sum, counted, csum);
    /* Both versions took traffic: the flips moved events around. */
    ck_assert_msg(per_v[0] > 0 && per_v[1] > 0,
                  "one version got nothing: v1 %" PRIu64 ", v2 %" PRIu64, per_v[0],
                  per_v[1]);
    ck_assert_msg(s->flips > 0 && s->reloads > 0 && s->loads > 0,
                  "the controller did not get round: %" PRIu64 " flips, %" PRIu64
                  " reloads, %" PRIu64 " loads",
                  s->flips, s->reloads, s->loads);

    qsort(s->lat_us, s->nlat, sizeof *s->lat_us, cmp_u32);
    uint32_t p50 = s->nlat ? s->lat_us[s->nlat / 2] : 0;
    uint32_t p99 = s->nlat ? s->lat_us[s->nlat * 99 / 100] : 0;
    uint32_t mx = s->nlat ? s->lat_us[s->nlat - 1] : 0;
    double cs = s->ctl_secs > 0 ? s->ctl_secs : 1;
    fprintf(stderr,
            "soak: %.1f s, %d publishers, %d workers: %" PRIu64
            " events (%.0f/s), %" PRIu64 " acked, all counted once (v1 %" PRIu64
            ", v2 %" PRIu64 ")\n"
            "soak: %" PRIu64 " route flips (%.1f/s; %" PRIu64 " of them route.apply), "
            "REQUEST->REPLY p50 %.2f ms, p99 %.2f ms, max %.2f ms\n"
            "soak: %" PRIu64 " plugin reloads (%.1f/s; %" PRIu64
            " after overwriting the .so), %" PRIu64 " plugin loads+unloads (%.1f/s)\n",
            pub_secs, NPUB, 2, sent, (double)sent / pub_secs, acked, per_v[0], per_v[1],
            s->flips, (double)s->flips / cs, s->applies, p50 / 1000.0, p99 / 1000.0,
            mx / 1000.0, s->reloads, (double)s->reloads / cs, s->overwrites, s->loads,
            (double)s->loads / cs);

    free(s->tally_bytes);
    free(s->lat_us);
    fb_soak_fail_destroy(&s->fail);
    free(s);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_soak_suite(void)
{
    Suite *s = suite_create("e2e.soak");
    TCase *tc = tcase_create("soak");
    /* The run, plus start-up, the drain and the stop under a sanitizer. */
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    tcase_set_timeout(tc, (secs > 0 ? secs : SOAK_DEFAULT_S) + 120);
    tcase_add_test(tc, test_e2e_soak_zero_loss_under_change);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_soak_suite());
}
