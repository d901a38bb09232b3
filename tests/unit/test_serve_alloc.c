/*
 * The serving client allocates nothing per call in steady state
 * (lib/client_serve.c): this test interposes malloc/calloc/realloc in the
 * executable (as tests/unit/test_hotpath.c does; not with sanitizers,
 * which own malloc) and counts the calls made by the serving thread while
 * it serves 20,000 CALLs from a fake daemon thread -- answered inline, and
 * answered later with fidbus_call_done -- after a warm-up that lets its
 * queues grow to size. The count must be 0.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>
#include <fidbus/proto.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static atomic_ulong allocs;
static _Thread_local bool counting;

void *malloc(size_t n)
{
    if (counting)
        atomic_fetch_add(&allocs, 1);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (counting)
        atomic_fetch_add(&allocs, 1);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (counting)
        atomic_fetch_add(&allocs, 1);
    return __libc_realloc(p, n);
}

#define FN "acme.audit@1.0.0"
#define BATCH 64
#define WARM 2000
#define TOTAL (WARM + 20000)

static char path[108];
static int lfd;
static atomic_ulong answered_calls;

/* Marks the calls a RESULT answers (upto: every one still held <= it). */
static bool done_ids[TOTAL + 1];
static uint64_t low = 1; /* ids below are all answered */

static void count_results(const struct fidbus_msg *m)
{
    uint64_t hi = fidbus_msg_has(m, FIDBUS_K_UPTO) ? m->upto : m->seq;
    uint64_t lo = fidbus_msg_has(m, FIDBUS_K_UPTO) ? low : m->seq;
    for (uint64_t i = lo; i <= hi && i <= TOTAL; i++)
        if (!done_ids[i]) {
            done_ids[i] = true;
            atomic_fetch_add(&answered_calls, 1);
        }
    while (low <= TOTAL && done_ids[low])
        low++;
}

static void *fake_daemon(void *arg)
{
    (void)arg;
    int fd = accept(lfd, NULL, NULL);
    struct fidbus_frame_reader rd;
    static struct fidbus_msg m;
    fidbus_frame_reader_init(&rd, FIDBUS_MAX_FRAME_DEFAULT, 0);
    uint8_t out[BATCH * 128];
    size_t n = fidbus_enc_hello(out, sizeof out, "fake", NULL, 0);
    send(fd, out, n, MSG_NOSIGNAL);
    uint64_t next = 1;
    bool registered = false;
    while (atomic_load(&answered_calls) < TOTAL) {
        /* keep at most 2 batches in flight: like credit */
        if (registered && next <= TOTAL &&
            next - 1 - atomic_load(&answered_calls) < BATCH) {
            n = 0;
            for (int i = 0; i < BATCH && next <= TOTAL; i++, next++) {
                uint8_t p[] = {0x18, 42};
                struct fidbus_call_out o = {.call_id = next,
                                            .funcid = fidbus_funcid(FN),
                                            .event = "order.created",
                                            .payload = {p, sizeof p},
                                            .generation = 1,
                                            .attempt = 1};
                n += fidbus_enc_call(out + n, sizeof out - n, &o);
            }
            send(fd, out, n, MSG_NOSIGNAL);
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 10000) <= 0)
            break;
        uint8_t *sp;
        size_t len;
        fidbus_frame_reader_space(&rd, &sp, &len);
        ssize_t r = recv(fd, sp, len, 0);
        if (r <= 0)
            break;
        fidbus_frame_reader_commit(&rd, (size_t)r);
        const uint8_t *body;
        while (fidbus_frame_next(&rd, &body, &len) == 1) {
            if (fidbus_msg_decode(body, len, 64, &m) != 0)
                continue;
            if (m.type == FIDBUS_MSG_REGISTER) {
                n = fidbus_enc_ack(out, sizeof out, m.seq, fidbus_funcid(FN));
                send(fd, out, n, MSG_NOSIGNAL);
                registered = true;
            } else if (m.type == FIDBUS_MSG_RESULT) {
                count_results(&m);
            }
        }
    }
    fidbus_frame_reader_destroy(&rd);
    close(fd);
    return NULL;
}

static uint64_t pending_tokens[BATCH * 2];
static int npending;
static unsigned long served;

static int cb(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    served++;
    if (call->call_id % 2 && npending < BATCH * 2) {
        pending_tokens[npending++] = call->token; /* answered after the batch */
        return FIDBUS_CALL_PENDING;
    }
    return 0;
}

START_TEST(serving_allocates_nothing_per_call)
{
    snprintf(path, sizeof path, "/tmp/fidbus-serve-alloc-%d.sock", (int)getpid());
    unlink(path);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, path);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    pthread_t t;
    pthread_create(&t, NULL, fake_daemon, NULL);

    struct fidbus_client *c;
    ck_assert_int_eq(fidbus_client_connect(&c, path, NULL), 0);
    ck_assert_int_eq(fidbus_register(c, FN, "", NULL, cb, NULL, NULL), 0);
    unsigned long before = 0;
    int bad_rc = 0, bad_done = 0; /* no ck_assert in the loop: Check allocates */
    for (int i = 0; i < 100000 && atomic_load(&answered_calls) < TOTAL; i++) {
        if (served >= WARM && !counting) {
            counting = true;
            before = atomic_load(&allocs);
        }
        int rc = fidbus_serve(c, 20);
        if (rc == -ECONNRESET && atomic_load(&answered_calls) == TOTAL)
            break; /* the fake daemon saw every answer and hung up */
        if (rc < 0) {
            bad_rc = rc;
            break;
        }
        for (int k = 0; k < npending; k++)
            bad_done |= fidbus_call_done(c, pending_tokens[k], 0);
        npending = 0;
    }
    counting = false;
    unsigned long during = atomic_load(&allocs) - before;
    ck_assert_msg(bad_rc == 0, "serve: %d after %lu calls", bad_rc, served);
    ck_assert_int_eq(bad_done, 0);
    ck_assert_uint_eq(atomic_load(&answered_calls), TOTAL);
    ck_assert_msg(during == 0, "%lu allocations while serving %d calls", during,
                  TOTAL - WARM);
    pthread_join(t, NULL);
    fidbus_client_close(c);
    close(lfd);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve_alloc");
    TCase *tc = tcase_create("steady");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, serving_allocates_nothing_per_call);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
