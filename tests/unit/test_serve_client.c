/*
 * Unit tests for the serving client (lib/client_serve.c) against a fake
 * daemon: a thread that listens on a Unix socket and speaks the wire
 * protocol with libfidbus's codec (HELLO, ACK to REGISTER/UNREGISTER,
 * CALLs out, RESULTs in). It checks what the library puts on the wire,
 * which fidbusd cannot show: RESULTs batched as one `upto`, answers from
 * another thread, RETRY, publishes from inside a callback (their ACKs are
 * not CALLs, and CALLs read meanwhile run afterwards, in order), a
 * callback's payload left intact while a nested read needs a bigger
 * buffer, unregister waiting for the calls held (drain), and
 * re-registration after a reconnect. tests/e2e/test_e2e_serve.c runs the
 * same API against a real fidbusd.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#define FN "acme.audit@1.0.0"
#define MAXCALLS 64

/* ------------------------------------------------------- fake daemon */

struct srv {
    int lfd, fd;
    char path[108];
    struct fidbus_frame_reader rd;
    struct fidbus_msg m;
    /* what the member answered: code per call id (-1: not yet), frames */
    int code[MAXCALLS];
    int answers[MAXCALLS]; /* times each call was answered */
    int result_frames, upto_frames;
    int registers, unregisters, publishes;
    int err; /* a server-side check that failed (line number) */
    atomic_int done;
};

static struct srv S;

#define SRV_CHECK(x)                                                                     \
    do {                                                                                 \
        if (!(x) && !S.err)                                                              \
            S.err = __LINE__;                                                            \
    } while (0)

static void srv_listen(void)
{
    memset(&S, 0, sizeof S);
    for (int i = 0; i < MAXCALLS; i++)
        S.code[i] = -1;
    snprintf(S.path, sizeof S.path, "/tmp/fidbus-serve-test-%d.sock", (int)getpid());
    unlink(S.path);
    S.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, S.path);
    ck_assert_int_eq(bind(S.lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(S.lfd, 4), 0);
    S.fd = -1;
}

static void srv_send(const uint8_t *f, size_t n)
{
    while (n) {
        ssize_t w = send(S.fd, f, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        f += w;
        n -= (size_t)w;
    }
}

static void srv_accept(void)
{
    if (S.fd >= 0) {
        close(S.fd);
        fidbus_frame_reader_destroy(&S.rd);
    }
    S.fd = accept(S.lfd, NULL, NULL);
    fidbus_frame_reader_init(&S.rd, FIDBUS_MAX_FRAME_DEFAULT, 0);
    uint8_t f[256];
    srv_send(f, fidbus_enc_hello(f, sizeof f, "fake", NULL, 0));
}

/* The next frame from the member, decoded into S.m; false at EOF/timeout. */
static bool srv_next(void)
{
    for (;;) {
        const uint8_t *body;
        size_t len;
        if (fidbus_frame_next(&S.rd, &body, &len) == 1)
            return fidbus_msg_decode(body, len, 64, &S.m) == 0;
        struct pollfd p = {.fd = S.fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            return false;
        uint8_t *sp;
        size_t n;
        fidbus_frame_reader_space(&S.rd, &sp, &n);
        ssize_t r = recv(S.fd, sp, n, 0);
        if (r <= 0)
            return false;
        fidbus_frame_reader_commit(&S.rd, (size_t)r);
    }
}

static void srv_ack(uint64_t seq, uint64_t result)
{
    uint8_t f[64];
    srv_send(f, fidbus_enc_ack(f, sizeof f, seq, result));
}

static size_t call_frame(uint8_t *f, size_t cap, uint64_t id, const uint8_t *payload,
                         size_t len)
{
    struct fidbus_call_out o = {.call_id = id,
                                .funcid = fidbus_funcid(FN),
                                .event = "order.created",
                                .payload = {payload, len},
                                .generation = 7,
                                .attempt = 1};
    return fidbus_enc_call(f, cap, &o);
}

static void srv_call(uint64_t id)
{
    uint8_t f[256], p[] = {0x18, (uint8_t)id}; /* CBOR uint(id) */
    srv_send(f, call_frame(f, sizeof f, id, p, sizeof p));
}

/* Handles one frame: REGISTER is ACKed, RESULTs recorded. Returns its type. */
static uint64_t srv_step(void)
{
    if (!srv_next())
        return 0;
    const struct fidbus_msg *m = &S.m;
    switch (m->type) {
    case FIDBUS_MSG_REGISTER:
        S.registers++;
        SRV_CHECK(fidbus_msg_check(&S.m) == 0);
        srv_ack(m->seq, fidbus_funcid(FN));
        break;
    case FIDBUS_MSG_RESULT:
        S.result_frames++;
        if (fidbus_msg_has(m, FIDBUS_K_UPTO)) {
            S.upto_frames++;
            for (uint64_t i = 1; i <= m->upto && i < MAXCALLS; i++)
                if (S.code[i] == -1 || S.answers[i] == 0) {
                    S.code[i] = (int)m->code;
                    S.answers[i]++;
                }
        } else if (m->seq < MAXCALLS) {
            S.code[m->seq] = (int)m->code;
            S.answers[m->seq]++;
        }
        break;
    case FIDBUS_MSG_PUBLISH:
        S.publishes++;
        break;
    case FIDBUS_MSG_UNREGISTER:
        S.unregisters++;
        break;
    }
    return m->type;
}

static int answered(int upto)
{
    int n = 0;
    for (int i = 1; i <= upto; i++)
        n += S.answers[i] > 0;
    return n;
}

static void srv_close(void)
{
    if (S.fd >= 0)
        close(S.fd);
    close(S.lfd);
    fidbus_frame_reader_destroy(&S.rd);
    unlink(S.path);
}

/* ------------------------------------------------------------ member */

static struct fidbus_client *connect_member(bool reconnect)
{
    struct fidbus_client *c = NULL;
    struct fidbus_client_opts o = {.timeout_ms = 10000,
                                   .reconnect_max_ms = reconnect ? 100 : 0};
    ck_assert_int_eq(fidbus_client_connect(&c, S.path, &o), 0);
    return c;
}

static atomic_int calls_seen;

static int cb_ok(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    atomic_fetch_add(&calls_seen, 1);
    return arg ? *(int *)arg : 0;
}

/* Serves until the fake daemon says it is done. */
static void serve_until_done(struct fidbus_client *c)
{
    for (int i = 0; i < 200 && !atomic_load(&S.done); i++) {
        int rc = fidbus_serve(c, 50);
        ck_assert_int_ge(rc, 0);
    }
    ck_assert(atomic_load(&S.done));
}

/* ------------------------------------------------- in order: one upto */

static void *srv_batch(void *arg)
{
    srv_accept();
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    uint8_t f[2048];
    size_t n = 0;
    for (uint64_t id = 1; id <= 5; id++) {
        uint8_t p[] = {0x18, (uint8_t)id};
        n += call_frame(f + n, sizeof f - n, id, p, sizeof p);
    }
    srv_send(f, n); /* one write: read as one batch */
    while (answered(5) < 5 && srv_step())
        ;
    atomic_store(&S.done, 1);
    return NULL;
}

START_TEST(in_order_calls_one_upto)
{
    srv_listen();
    pthread_t t;
    pthread_create(&t, NULL, srv_batch, NULL);
    struct fidbus_client *c = connect_member(false);
    uint64_t id = 0;
    ck_assert_int_eq(fidbus_register(c, FN, "event:any", NULL, cb_ok, NULL, &id), 0);
    ck_assert_uint_eq(id, fidbus_funcid(FN));
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb_ok, NULL, NULL), -EEXIST);
    serve_until_done(c);
    pthread_join(t, NULL);
    ck_assert_int_eq(S.err, 0);
    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(S.answers[i], 1);
        ck_assert_int_eq(S.code[i], 0);
    }
    ck_assert_int_eq(S.result_frames, 1);
    ck_assert_int_eq(S.upto_frames, 1);
    fidbus_client_close(c);
    srv_close();
}
END_TEST

START_TEST(retry_and_failed_codes)
{
    srv_listen();
    pthread_t t;
    pthread_create(&t, NULL, srv_batch, NULL);
    struct fidbus_client *c = connect_member(false);
    static int retry = FIDBUS_RETRY;
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb_ok, &retry, NULL), 0);
    serve_until_done(c);
    pthread_join(t, NULL);
    for (int i = 1; i <= 5; i++)
        ck_assert_int_eq(S.code[i], FIDBUS_RETRY);
    fidbus_client_close(c);
    srv_close();
}
END_TEST

/* ------------------------------------- answered later, another thread */

struct later {
    struct fidbus_client *c;
    uint64_t tokens[MAXCALLS];
    uint64_t ids[MAXCALLS];
    atomic_int n;
};
static struct later L;

static int cb_later(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    int i = atomic_load(&L.n);
    L.tokens[i] = call->token;
    L.ids[i] = call->call_id;
    atomic_store(&L.n, i + 1);
    return FIDBUS_CALL_PENDING;
}

static void *answer_later(void *arg)
{
    int want = (int)(intptr_t)arg;
    while (atomic_load(&L.n) < want)
        usleep(1000);
    /* out of order: last first; odd ids fail */
    for (int i = want - 1; i >= 0; i--)
        fidbus_call_done(L.c, L.tokens[i], L.ids[i] % 2 ? FIDBUS_HANDLER_FAILED : 0);
    return NULL;
}

START_TEST(answered_from_another_thread)
{
    srv_listen();
    memset(&L, 0, sizeof L);
    pthread_t t, w;
    pthread_create(&t, NULL, srv_batch, NULL);
    L.c = connect_member(false);
    ck_assert_int_eq(fidbus_register(L.c, FN, "", NULL, cb_later, NULL, NULL), 0);
    pthread_create(&w, NULL, answer_later, (void *)(intptr_t)5);
    serve_until_done(L.c);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    ck_assert_int_eq(S.err, 0);
    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(S.answers[i], 1);
        ck_assert_int_eq(S.code[i], i % 2 ? FIDBUS_HANDLER_FAILED : 0);
    }
    /* a token whose call is gone is ignored, not an error */
    ck_assert_int_eq(fidbus_call_done(L.c, L.tokens[0], 0), 0);
    ck_assert_int_eq(fidbus_serve(L.c, 10), 0);
    fidbus_client_close(L.c);
    srv_close();
}
END_TEST

/* -------------------------------- publishing from inside a callback */

#define BIG (300u * 1024u)

static void *srv_publish_inside(void *arg)
{
    srv_accept();
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    srv_call(1);
    /* the callback publishes with ACK: before answering it, send a second
     * CALL with a payload bigger than the member's read buffer */
    while (srv_step() != FIDBUS_MSG_PUBLISH)
        SRV_CHECK(S.m.type != 0);
    uint64_t pseq = S.m.seq;
    uint8_t *big = malloc(BIG + 64), *f = malloc(BIG + 256);
    big[0] = 0x5a; /* bstr, 4-byte length */
    big[1] = (uint8_t)(BIG >> 24);
    big[2] = (uint8_t)(BIG >> 16);
    big[3] = (uint8_t)(BIG >> 8);
    big[4] = (uint8_t)BIG;
    memset(big + 5, 0xab, BIG);
    srv_send(f, call_frame(f, BIG + 256, 2, big, BIG + 5));
    free(big);
    free(f);
    srv_ack(pseq, 1);
    while (answered(2) < 2 && srv_step())
        ;
    atomic_store(&S.done, 1);
    return NULL;
}

static atomic_int payload_intact, big_seen, order_ok;

static int cb_publish(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    if (call->call_id == 1) {
        uint8_t before[2];
        memcpy(before, call->payload, 2);
        const char *ev = call->event;
        uint64_t r = 0;
        int rc = fidbus_publish_ack(c, "audit.done", NULL, 0, NULL, 0, &r);
        /* the big CALL was read meanwhile: our bytes did not move */
        atomic_store(&payload_intact, rc == 0 && r == 1 && call->payload_len == 2 &&
                                          memcmp(before, call->payload, 2) == 0 &&
                                          strcmp(ev, "order.created") == 0 &&
                                          atomic_load(&big_seen) == 0);
        atomic_store(&order_ok, 1);
        return 0;
    }
    atomic_store(&big_seen, call->payload_len == BIG + 5 &&
                                call->payload[BIG + 4] == 0xab && atomic_load(&order_ok));
    return 0;
}

START_TEST(publish_from_a_callback)
{
    srv_listen();
    pthread_t t;
    pthread_create(&t, NULL, srv_publish_inside, NULL);
    struct fidbus_client *c = connect_member(false);
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb_publish, NULL, NULL), 0);
    serve_until_done(c);
    pthread_join(t, NULL);
    ck_assert_int_eq(S.err, 0);
    ck_assert(atomic_load(&payload_intact));
    ck_assert(atomic_load(&big_seen));
    ck_assert_int_eq(S.answers[1], 1);
    ck_assert_int_eq(S.answers[2], 1);
    ck_assert_int_eq(fidbus_client_async_errors(c), 0);
    fidbus_client_close(c);
    srv_close();
}
END_TEST

/* ------------------------------------------------- unregister drains */

static void *srv_drain(void *arg)
{
    srv_accept();
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    srv_call(1);
    while (srv_step() != FIDBUS_MSG_UNREGISTER)
        SRV_CHECK(S.m.type != 0);
    uint64_t useq = S.m.seq;
    SRV_CHECK(S.answers[1] == 0); /* still held */
    while (answered(1) < 1 && srv_step())
        ;
    srv_ack(useq, 0); /* only now: the drain */
    atomic_store(&S.done, 1);
    return NULL;
}

static void *answer_after(void *arg)
{
    while (atomic_load(&L.n) < 1)
        usleep(1000);
    usleep(100 * 1000);
    fidbus_call_done(L.c, L.tokens[0], 0);
    return NULL;
}

START_TEST(unregister_waits_for_held_calls)
{
    srv_listen();
    memset(&L, 0, sizeof L);
    pthread_t t, w;
    pthread_create(&t, NULL, srv_drain, NULL);
    L.c = connect_member(false);
    ck_assert_int_eq(fidbus_register(L.c, FN, "", NULL, cb_later, NULL, NULL), 0);
    while (atomic_load(&L.n) < 1)
        ck_assert_int_ge(fidbus_serve(L.c, 20), 0);
    pthread_create(&w, NULL, answer_after, NULL);
    ck_assert_int_eq(fidbus_unregister(L.c, NULL), 0);
    ck_assert_int_eq(fidbus_unregister(L.c, FN), -ENOENT);
    pthread_join(t, NULL);
    ck_assert(atomic_load(&S.done)); /* it ACKed only after the RESULT */
    ck_assert_int_eq(S.answers[1], 1);
    pthread_join(w, NULL);
    ck_assert_int_eq(S.err, 0);
    fidbus_client_close(L.c);
    srv_close();
}
END_TEST

/* ---------------------------------------------- reconnect re-registers */

static void *srv_reconnect(void *arg)
{
    srv_accept();
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    srv_call(1); /* held when the connection goes */
    usleep(50 * 1000);
    srv_accept(); /* closes the first connection */
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    srv_call(1); /* ids start again on a new connection */
    while (answered(1) < 1 && srv_step())
        ;
    atomic_store(&S.done, 1);
    return NULL;
}

static atomic_int reconnect_calls;

static int cb_count(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    /* the first delivery stays pending and is lost with its connection */
    return atomic_fetch_add(&reconnect_calls, 1) == 0 ? FIDBUS_CALL_PENDING : 0;
}

START_TEST(reconnect_registers_again)
{
    srv_listen();
    atomic_store(&reconnect_calls, 0);
    pthread_t t;
    pthread_create(&t, NULL, srv_reconnect, NULL);
    struct fidbus_client *c = connect_member(true);
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb_count, NULL, NULL), 0);
    serve_until_done(c);
    pthread_join(t, NULL);
    ck_assert_int_eq(S.err, 0);
    ck_assert_int_eq(S.registers, 2);
    ck_assert_int_eq(S.answers[1], 1); /* only the new connection's call 1 */
    ck_assert_int_eq(atomic_load(&reconnect_calls), 2);
    ck_assert_uint_ge(fidbus_client_reconnects(c), 1);
    fidbus_client_close(c);
    srv_close();
}
END_TEST

/* ---------------------------------------------------------- stopping */

static void *stop_later(void *arg)
{
    usleep(50 * 1000);
    fidbus_serve_stop(arg);
    return NULL;
}

static void *srv_idle(void *arg)
{
    srv_accept();
    SRV_CHECK(srv_step() == FIDBUS_MSG_REGISTER);
    while (srv_step())
        ;
    return NULL;
}

START_TEST(stop_from_another_thread)
{
    srv_listen();
    pthread_t t, w;
    pthread_create(&t, NULL, srv_idle, NULL);
    struct fidbus_client *c = connect_member(false);
    ck_assert_int_eq(fidbus_serve(c, 10), -ENOENT); /* nothing registered */
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb_ok, NULL, NULL), 0);
    ck_assert_int_eq(fidbus_serve(c, 10), 0); /* timeout */
    pthread_create(&w, NULL, stop_later, c);
    ck_assert_int_eq(fidbus_serve(c, -1), FIDBUS_SERVE_STOPPED);
    pthread_join(w, NULL);
    fidbus_client_close(c);
    pthread_join(t, NULL);
    ck_assert_int_eq(S.err, 0);
    srv_close();
}
END_TEST

static Suite *serve_client_suite(void)
{
    Suite *s = suite_create("serve_client");
    TCase *tc = tcase_create("fake daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, in_order_calls_one_upto);
    tcase_add_test(tc, retry_and_failed_codes);
    tcase_add_test(tc, answered_from_another_thread);
    tcase_add_test(tc, publish_from_a_callback);
    tcase_add_test(tc, unregister_waits_for_held_calls);
    tcase_add_test(tc, reconnect_registers_again);
    tcase_add_test(tc, stop_from_another_thread);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(serve_client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
