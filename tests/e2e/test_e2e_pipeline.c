/*
 * End-to-end tests of pipelining with the client library against a real
 * fidbusd (ctest: e2e.pipeline).
 *
 * A producer buffers acked publishes with fidbus_publish_seq and reads the
 * answers with fidbus_client_recv. Calls that read the connection for
 * something else -- fidbus_flush, fidbus_ping, the automatic flush once
 * 64 KiB is buffered -- must keep those answers for fidbus_client_recv,
 * ERRORs with their seq. Each test runs with reconnection off (_i = 0)
 * and on (_i = 1): a reconnecting client also tracks the acked frames.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* clang-format off */
static const char pipeline_conf[] =
    FB_E2E_COUNT
    "[route ok]\nevent = pipe.ok\nto = fidbus.count\n";
/* clang-format on */

/* Seqs of the caller's own, top bit set (client.h). */
#define SEQ0 (UINT64_C(1) << 63)

static struct fidbus_client *connect_for(const struct fb_e2e *t, int reconnect)
{
    struct fidbus_client_opts o = {.timeout_ms = 10000};
    if (reconnect) {
        o.reconnect_max_ms = 1000;
        o.reconnect_buffer = 64u << 20; /* the windows below fit */
    }
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, t->bus, &o);
    ck_assert_msg(rc == 0, "connect %s: %s", t->bus, fidbus_strerror(rc));
    return c;
}

/* Publishes seq SEQ0 + i acked; odd i go to an unrouted event when
 * mixed, so their answer is ERROR NO_ROUTE. */
static void publish(struct fidbus_client *c, uint64_t i, bool mixed, size_t payload_len)
{
    static uint8_t payload[256];
    if (payload_len) {
        /* one CBOR byte string of payload_len bytes (< 256) */
        payload[0] = 0x58;
        payload[1] = (uint8_t)(payload_len - 2);
        memset(payload + 2, 'p', payload_len - 2);
    }
    const char *event = mixed && (i & 1) ? "pipe.nowhere" : "pipe.ok";
    int rc = fidbus_publish_seq(c, SEQ0 + i, FIDBUS_FLAG_ACK, event, NULL, 0,
                                payload_len ? payload : NULL, payload_len);
    ck_assert_msg(rc == 0, "publish %" PRIu64 ": %s", i, fidbus_strerror(rc));
}

/* Receives one answer (asserting it comes within 3 s), checks it against
 * what publish sent and marks its seq in seen. */
static void recv_one(struct fidbus_client *c, bool mixed, uint64_t n, uint8_t *seen)
{
    struct fidbus_answer a = {0};
    int rc = fidbus_client_recv(c, &a, 3000);
    ck_assert_msg(rc == 0, "recv: %s", fidbus_strerror(rc));
    ck_assert_msg(a.seq >= SEQ0 && a.seq - SEQ0 < n, "answer with seq %" PRIx64, a.seq);
    uint64_t i = a.seq - SEQ0;
    ck_assert_msg(!seen[i], "seq %" PRIu64 " answered twice", i);
    seen[i] = 1;
    if (mixed && (i & 1)) {
        ck_assert_msg(a.type == FIDBUS_MSG_ERROR && a.code == FIDBUS_NO_ROUTE,
                      "seq %" PRIu64 ": type %" PRIu64 " code %" PRIu64, i, a.type,
                      a.code);
    } else {
        ck_assert_msg(a.type == FIDBUS_MSG_ACK && a.code == 0 && a.result == 1,
                      "seq %" PRIu64 ": type %" PRIu64 " code %" PRIu64
                      " result %" PRIu64,
                      i, a.type, a.code, a.result);
    }
}

/* Nothing else is left to receive. */
static void assert_drained(struct fidbus_client *c)
{
    struct fidbus_answer a = {0};
    int rc = fidbus_client_recv(c, &a, 100);
    ck_assert_msg(rc == -ETIMEDOUT, "one answer too many: seq %" PRIx64 " (rc %d)", a.seq,
                  rc);
}

/* 1,000 acked publishes, each followed by fidbus_flush; then recv all. */
START_TEST(test_e2e_pipeline_flush_in_loop)
{
    struct fb_e2e *t = fb_e2e_up(NULL, pipeline_conf);
    struct fidbus_client *c = connect_for(t, _i);
    enum { N = 1000 };
    uint8_t *seen = calloc(N, 1);
    for (uint64_t i = 0; i < N; i++) {
        publish(c, i, false, 0);
        ck_assert_int_eq(fidbus_flush(c), 0);
    }
    for (uint64_t i = 0; i < N; i++)
        recv_one(c, false, N, seen);
    assert_drained(c);
    free(seen);
    fidbus_client_close(c);
    fb_e2e_free(t);
}
END_TEST

/* A window of 1,024 publishes of 103 bytes (more than the 64 KiB that
 * triggers the automatic flush, which reads answers too), 20,000 in all,
 * NO_ROUTE mixed in; no explicit flush: fidbus_client_recv writes. */
START_TEST(test_e2e_pipeline_window)
{
    struct fb_e2e *t = fb_e2e_up(NULL, pipeline_conf);
    struct fidbus_client *c = connect_for(t, _i);
    enum { N = 20000, WINDOW = 1024 };
    uint8_t *seen = calloc(N, 1);
    uint64_t sent = 0, got = 0;
    while (got < N) {
        while (sent < N && sent - got < WINDOW)
            publish(c, sent++, true, 103);
        recv_one(c, true, N, seen);
        got++;
    }
    assert_drained(c);
    free(seen);
    fidbus_client_close(c);
    fb_e2e_free(t);
}
END_TEST

/* 10 pipelined publishes, then fidbus_ping: all 10 answers are left for
 * fidbus_client_recv, the ERRORs among them with their seq. */
START_TEST(test_e2e_pipeline_ping_after_burst)
{
    struct fb_e2e *t = fb_e2e_up(NULL, pipeline_conf);
    struct fidbus_client *c = connect_for(t, _i);
    enum { N = 10 };
    uint8_t seen[N] = {0};
    for (uint64_t i = 0; i < N; i++)
        publish(c, i, true, 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    for (uint64_t i = 0; i < N; i++)
        recv_one(c, true, N, seen);
    ck_assert_int_eq(fidbus_client_last_error_code(c), FIDBUS_NO_ROUTE);
    ck_assert_str_ne(fidbus_client_last_error(c), "");
    assert_drained(c);
    /* fidbus_publish_ack between pipelined publishes: its own answer is
     * its own, the others stay */
    publish(c, 0, true, 0);
    publish(c, 1, true, 0);
    uint64_t result = 0;
    ck_assert_int_eq(fidbus_publish_ack(c, "pipe.ok", NULL, 0, NULL, 0, &result), 0);
    ck_assert_uint_eq(result, 1);
    memset(seen, 0, sizeof seen);
    recv_one(c, true, N, seen);
    recv_one(c, true, N, seen);
    ck_assert(seen[0] && seen[1]);
    assert_drained(c);
    fidbus_client_close(c);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_pipeline_suite(void)
{
    Suite *s = suite_create("e2e_pipeline");
    TCase *tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_e2e_pipeline_flush_in_loop, 0, 2);
    tcase_add_loop_test(tc, test_e2e_pipeline_window, 0, 2);
    tcase_add_loop_test(tc, test_e2e_pipeline_ping_after_burst, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_pipeline_suite());
}
