/*
 * The hot path allocates nothing per event.
 *
 * This test runs a real daemon in-process (fb_daemon_start on its own
 * thread, a Unix socket in a temp dir, count.so routed from "*"), and
 * interposes malloc/calloc/realloc/aligned_alloc in this executable to
 * count every allocation made by any thread other than the test's own
 * client thread. After a warm-up (connection buffers grown, the count
 * plugin's first sighting of the id), it publishes many more events --
 * un-acked, acked, and PINGs -- and asserts that the daemon made zero
 * allocations for them. The second test does the same for calls of a
 * remote function served by a member connection on another I/O worker
 * (routing/remote.h): call records, waiters and the hand-over between
 * workers come from free lists and preallocated stages.
 *
 * Not built under sanitizers: they bring their own allocator.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fidbus/client.h>

#include "config/config.h"
#include "daemon.h"

/* ----------------------------------------------------- counting malloc */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic unsigned long allocs;
static _Thread_local bool not_counted;

void *malloc(size_t n)
{
    if (!not_counted)
        atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (!not_counted)
        atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (!not_counted)
        atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    if (!not_counted)
        atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
    return __libc_memalign(al, n);
}

/* ------------------------------------------------------------- daemon */

static char dir[64];
static char notify_path[128];
static struct fb_daemon *daemon_obj;
static int daemon_rc = -1;

static void *daemon_thread(void *arg)
{
    char err[512];
    int rc = fb_daemon_start(daemon_obj, err, sizeof err);
    if (rc) {
        fprintf(stderr, "start: %s\n", err);
        daemon_rc = rc;
        return NULL;
    }
    daemon_rc = fb_daemon_run(daemon_obj);
    daemon_obj = fb_daemon_free(daemon_obj);
    return NULL;
}

static int wait_ready(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char buf[512];
    while (poll(&p, 1, 10000) == 1) {
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            return -1;
        buf[n] = '\0';
        if (strstr(buf, "READY=1"))
            return 0;
    }
    return -1;
}

/* Loads conf, starts the daemon on its own thread with NOTIFY_SOCKET in
 * dir, and returns once it is ready; *nfd is the notify socket. */
static pthread_t daemon_up(const char *conf, const char *dir, int *nfd)
{
    struct fb_config *cfg = NULL;
    char err[512];
    ck_assert_msg(fb_config_load_string(conf, "hotpath", &cfg, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(fb_daemon_new(cfg, &daemon_obj), 0);

    *nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(*nfd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(notify_path, sizeof notify_path, "%s/notify", dir);
    strcpy(sa.sun_path, notify_path);
    ck_assert_int_eq(bind(*nfd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", notify_path, 1);

    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, daemon_thread, NULL), 0);
    ck_assert_msg(wait_ready(*nfd) == 0, "daemon did not become ready");
    return th;
}

/* Stops the daemon (SIGTERM: its uv_signal handles it), checks it ended
 * cleanly, and removes dir. */
static void daemon_down(pthread_t th, int nfd, const char *dir)
{
    kill(getpid(), SIGTERM);
    pthread_join(th, NULL);
    ck_assert_int_eq(daemon_rc, 0);
    close(nfd);
    unlink(notify_path);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_hotpath_no_alloc_per_event)
{
    not_counted = true; /* this thread is the client */

    snprintf(dir, sizeof dir, "/tmp/fidbus-hotpath.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *build = getenv("FIDBUS_BUILD_DIR");
    ck_assert_ptr_nonnull(build);

    char conf[2048];
    snprintf(conf, sizeof conf,
             "[daemon]\nworkers = 1\nruntime_dir = %s\nstate_dir = %s/state\n"
             "log_level = warn\n"
             "[listen]\nunix = %s/bus.sock\n"
             "[plugin count]\npath = %s/plugins/count.so\ninterval_ms = 0\n"
             "[route all]\nevent = *\nto = fidbus.count\n",
             dir, dir, dir, build);
    int nfd;
    pthread_t th = daemon_up(conf, dir, &nfd);

    char addr[128];
    snprintf(addr, sizeof addr, "unix:%s/bus.sock", dir);
    struct fidbus_client *c = NULL;
    ck_assert_int_eq(fidbus_client_connect(&c, addr, NULL), 0);

    static const uint8_t payload[64] = {0x58, 62}; /* bstr(62) */
    struct fidbus_tag tags[] = {{"user", "u1"}, {"region", "cn-east"}};
    uint64_t result = 0;

    /* warm-up: buffers reach their working size, count sees the id */
    for (int i = 0; i < 20000; i++)
        ck_assert_int_eq(
            fidbus_publish(c, "order.created", tags, 2, payload, sizeof payload), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(fidbus_publish_ack(c, "order.created", tags, 2, payload,
                                            sizeof payload, &result),
                         0);

    unsigned long before = atomic_load(&allocs);
    /* the interposer works: start-up and the warm-up did allocate */
    ck_assert_uint_gt(before, 0);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 20000; i++)
            ck_assert_int_eq(
                fidbus_publish(c, "order.created", tags, 2, payload, sizeof payload), 0);
        ck_assert_int_eq(fidbus_ping(c), 0);
        for (int i = 0; i < 200; i++) {
            ck_assert_int_eq(fidbus_publish_ack(c, "order.created", tags, 2, payload,
                                                sizeof payload, &result),
                             0);
            ck_assert_uint_eq(result, 1);
        }
    }
    unsigned long after = atomic_load(&allocs);
    ck_assert_msg(after == before,
                  "the daemon allocated %lu times for 101000 events (expected 0)",
                  after - before);

    fidbus_client_close(c);
    daemon_down(th, nfd, dir);
}
END_TEST

/* ------------------------------------------------------ remote member */

static int member_fd = -1;
static _Atomic bool member_stop;
static _Atomic unsigned long member_calls;

/* Registers acme.audit@1.0.0, then answers every CALL it reads with one
 * RESULT upto per read (how a member in call-id order batches). */
static void *member_thread(void *arg)
{
    (void)arg;
    not_counted = true;
    static struct fidbus_msg m;
    static uint8_t buf[1 << 20];
    size_t len = 0;
    uint8_t out[256];
    size_t n = fidbus_enc_register(out, sizeof out, 1, "acme.audit@1.0.0", "s", 64, 0, 0);
    if (write(member_fd, out, n) != (ssize_t)n)
        return NULL;
    while (!atomic_load(&member_stop)) {
        struct pollfd p = {.fd = member_fd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        ssize_t r = read(member_fd, buf + len, sizeof buf - len);
        if (r <= 0)
            return NULL;
        len += (size_t)r;
        size_t off = 0;
        uint64_t upto = 0;
        while (len - off >= 4) {
            uint32_t fl = (uint32_t)buf[off] << 24 | (uint32_t)buf[off + 1] << 16 |
                          (uint32_t)buf[off + 2] << 8 | buf[off + 3];
            if (len - off - 4 < fl)
                break;
            if (fidbus_msg_decode(buf + off + 4, fl, 64, &m) == 0 &&
                m.type == FIDBUS_MSG_CALL) {
                upto = m.seq;
                atomic_fetch_add(&member_calls, 1);
            }
            off += 4 + fl;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
        if (upto) {
            n = fidbus_enc_result(out, sizeof out, true, upto, 0, NULL);
            if (write(member_fd, out, n) != (ssize_t)n)
                return NULL;
        }
    }
    return NULL;
}

START_TEST(test_hotpath_remote_no_alloc_per_call)
{
    not_counted = true;
    snprintf(dir, sizeof dir, "/tmp/fidbus-hotpath.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char conf[2048];
    snprintf(conf, sizeof conf,
             "[daemon]\nworkers = 2\nruntime_dir = %s\nstate_dir = %s/state\n"
             "log_level = warn\n"
             "[listen]\nunix = %s/bus.sock\n"
             "[remote acme]\ncredit = 64\n"
             "[route r]\nevent = r.*\nto = acme.audit@1.0.0\n",
             dir, dir, dir);
    int nfd;
    pthread_t th = daemon_up(conf, dir, &nfd);

    /* the member first (worker 0), then the publisher (worker 1) */
    struct sockaddr_un bus = {.sun_family = AF_UNIX};
    snprintf(bus.sun_path, sizeof bus.sun_path, "%s/bus.sock", dir);
    member_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(member_fd, (struct sockaddr *)&bus, sizeof bus), 0);
    pthread_t mt;
    ck_assert_int_eq(pthread_create(&mt, NULL, member_thread, NULL), 0);

    char addr[128];
    snprintf(addr, sizeof addr, "unix:%s/bus.sock", dir);
    struct fidbus_client *c = NULL;
    ck_assert_int_eq(fidbus_client_connect(&c, addr, NULL), 0);
    static const uint8_t payload[64] = {0x58, 62};
    struct fidbus_tag tags[] = {{"user", "u1"}};
    uint64_t result = 0;
    /* until the member is registered, calls are UNAVAILABLE */
    int rc;
    for (int i = 0; (rc = fidbus_publish_ack(c, "r.x", tags, 1, payload, sizeof payload,
                                             &result)) != 0;
         i++) {
        ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
        ck_assert_int_lt(i, 100000);
        usleep(1000);
    }
    for (int i = 0; i < 20000; i++)
        ck_assert_int_eq(fidbus_publish(c, "r.x", tags, 1, payload, sizeof payload), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(
            fidbus_publish_ack(c, "r.x", tags, 1, payload, sizeof payload, &result), 0);

    unsigned long before = atomic_load(&allocs);
    unsigned long calls0 = atomic_load(&member_calls);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10000; i++)
            ck_assert_int_eq(fidbus_publish(c, "r.x", tags, 1, payload, sizeof payload),
                             0);
        ck_assert_int_eq(fidbus_ping(c), 0);
        for (int i = 0; i < 200; i++) {
            ck_assert_int_eq(
                fidbus_publish_ack(c, "r.x", tags, 1, payload, sizeof payload, &result),
                0);
            ck_assert_uint_eq(result, 1);
        }
    }
    unsigned long after = atomic_load(&allocs);
    ck_assert_uint_eq(atomic_load(&member_calls) - calls0, 3 * 10200);
    ck_assert_msg(after == before,
                  "the daemon allocated %lu times for 30600 remote calls (expected 0)",
                  after - before);

    fidbus_client_close(c);
    atomic_store(&member_stop, true);
    pthread_join(mt, NULL);
    close(member_fd);
    daemon_down(th, nfd, dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hotpath");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_hotpath_no_alloc_per_event);
    tcase_add_test(tc, test_hotpath_remote_no_alloc_per_call);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
