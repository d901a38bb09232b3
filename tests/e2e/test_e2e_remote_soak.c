/*
 * Zero-loss soak of a remote function under member churn (issue 14;
 * ctest: e2e.remote_soak). Three member slots serve one idempotent
 * function, acme.soak@1.0.0, through the serving API of libfidbus; each
 * slot keeps joining and leaving at random, in one of three ways:
 *
 * - a thread member that closes its connection (the calls it held are
 *   lost: the daemon redelivers them, the function being idempotent);
 * - a thread member that leaves with fidbus_unregister (the drain);
 * - a member process (this binary, re-executed) killed with SIGKILL.
 *
 * Meanwhile two publishers keep a window of acked PUBLISHes in flight
 * (fidbus_publish_seq + fidbus_client_recv). At the end every publish must
 * have had exactly one answer, an ACK with result 1; no ERROR, no second
 * answer to a seq; and every event so acked must have been run by at
 * least one member: members mark the event's number (its payload) in a
 * shared memory map before they answer ok. A slot leaves only while
 * another one is registered, so the daemon always has a member and an
 * UNAVAILABLE answer is a loss.
 *
 * The run lasts $FIDBUS_SOAK_SECONDS (default 20); tools/dev.sh soak
 * runs it longer under TSan. Threads make no assertion (Check is not
 * thread-safe): they record the first failure (soak_pub.h) and the main
 * thread asserts after joining them.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fidbus/client.h>

#include "harness.h"
#include "soak_pub.h"

extern char **environ;

#define FN "acme.soak@1.0.0"
#define SOAK_DEFAULT_S 20.0
#define NPUB 2
#define NSLOT 3
#define WINDOW 64
/* Events per publisher at most (the map has one byte per event): enough
 * for the run at 150,000/s, within 4 Mi .. 32 Mi. */
static uint64_t maxev;
#define MAXEV maxev
#define MEMBER_ENV "FIDBUS_RSOAK_MEMBER"
#define MAP_FD 100

/* clang-format off */
static const char conf[] =
    "[remote acme]\ncredit = 8\ntimeout_ms = 20000\nattempts = 10\n"
    "[route soak]\nevent = soak.ev\nto = " FN "\n";
/* clang-format on */

static const struct fidbus_client_opts client_opts = {.timeout_ms = 60000};

/* handled[n]: how many times members ran event n ok (only 0 matters).
 * Shared with the member processes, like *held after it: the calls
 * members kept unanswered and then went away with. */
static uint8_t *handled;
static size_t map_len;
#define HELD() ((uint64_t *)(handled + map_len))

/* One membership's callback state. Once `hold` is set the member stops
 * answering (FIDBUS_CALL_PENDING, never completed, not marked) and goes
 * away with those calls, which the daemon must run again elsewhere. */
struct member_arg {
    atomic_uint_fast64_t *calls;
    atomic_bool hold;
    uint64_t hold_after; /* process members: hold from this call on */
    uint64_t n;
};

static int on_call(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    (void)c;
    struct member_arg *ma = arg;
    if (call->payload_len != 9 || call->payload[0] != 0x1b)
        return FIDBUS_HANDLER_FAILED;
    uint64_t n = 0;
    for (int i = 1; i < 9; i++)
        n = n << 8 | call->payload[i];
    if (n >= map_len)
        return FIDBUS_HANDLER_FAILED;
    if (++ma->n > ma->hold_after ||
        atomic_load_explicit(&ma->hold, memory_order_relaxed)) {
        __atomic_fetch_add(HELD(), 1, __ATOMIC_RELAXED);
        return FIDBUS_CALL_PENDING;
    }
    __atomic_fetch_add(&handled[n], 1, __ATOMIC_RELAXED);
    if (ma->calls)
        atomic_fetch_add_explicit(ma->calls, 1, memory_order_relaxed);
    return 0;
}

static int member_register(struct fidbus_client *c, struct member_arg *ma)
{
    struct fidbus_serve_opts so = {
        .size = sizeof so, .credit = 8, .flags = FIDBUS_FLAG_IDEMPOTENT};
    return fidbus_register(c, FN, "event:any", &so, on_call, ma, NULL);
}

/* A member process ($MEMBER_ENV = "HOLD_AFTER MAP_LEN ADDR"): serves until it
 * is killed, holding every call from the HOLD_AFTER+1st on. Tells its
 * parent it is registered by writing one byte on fd 1 (a pipe). */
static int member_main(const char *arg)
{
    char *end;
    struct member_arg ma = {.hold_after = strtoull(arg, &end, 10)};
    map_len = strtoull(end, &end, 10);
    const char *addr = end;
    if (*addr != ' ' || !map_len)
        return 2;
    handled = mmap(NULL, map_len + 64, PROT_READ | PROT_WRITE, MAP_SHARED, MAP_FD, 0);
    if (handled == MAP_FAILED)
        return 2;
    struct fidbus_client *c;
    int rc = fidbus_client_connect(&c, addr + 1, &client_opts);
    if (rc < 0 || member_register(c, &ma) < 0)
        return 3;
    if (write(1, "r", 1) != 1)
        return 4;
    while ((rc = fidbus_serve(c, -1)) == 0)
        ;
    return 5;
}

struct soak {
    struct fb_soak_fail fail;
    char addr[200];
    char self[4096];
    atomic_bool stop_pub;     /* the run is over: drain */
    atomic_bool stop_members; /* the publishers are done */
    atomic_int registered;    /* slots the daemon has as members */
    atomic_uint_fast64_t calls;
    uint64_t leaves[3]; /* by close, unregister, SIGKILL */
    pthread_mutex_t lock;
};

struct slot {
    struct soak *s;
    unsigned id;
    unsigned seed;
    pthread_t thread;
};

struct pub {
    struct soak *s;
    unsigned id;
    pthread_t thread;
    uint64_t sent, ok;
    uint8_t *answers; /* per event: answers seen */
};

/* Takes this slot out of the count if another one stays registered. */
static bool may_leave(struct soak *s)
{
    int n = atomic_load(&s->registered);
    while (n > 1)
        if (atomic_compare_exchange_weak(&s->registered, &n, n - 1))
            return true;
    return false;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void count_leave(struct soak *s, int how)
{
    pthread_mutex_lock(&s->lock);
    s->leaves[how]++;
    pthread_mutex_unlock(&s->lock);
}

/* One membership as a thread on its own connection; leaves by closing
 * (how 0) or unregistering (how 1). */
static bool thread_member(struct slot *sl, int how)
{
    struct soak *s = sl->s;
    struct fidbus_client *c;
    int rc = fidbus_client_connect(&c, s->addr, &client_opts);
    if (rc < 0) {
        fb_soak_failf(&s->fail, "slot %u: connect: %s", sl->id, fidbus_strerror(rc));
        return false;
    }
    struct member_arg ma = {.calls = &s->calls, .hold_after = UINT64_MAX};
    if ((rc = member_register(c, &ma)) < 0) {
        fb_soak_failf(&s->fail, "slot %u: register: %s (%s)", sl->id, fidbus_strerror(rc),
                      fidbus_client_last_error(c));
        fidbus_client_close(c);
        return false;
    }
    atomic_fetch_add(&s->registered, 1);
    uint64_t until = fb_e2e_now_ms() + 20 + rand_r(&sl->seed) % 300;
    for (;;) {
        uint64_t now = fb_e2e_now_ms();
        if (now >= until && (atomic_load(&s->stop_members) || may_leave(s)))
            break;
        rc = fidbus_serve(c, now >= until ? 10 : (int)(until - now));
        if (rc < 0) {
            fb_soak_failf(&s->fail, "slot %u: serve: %s (%s)", sl->id,
                          fidbus_strerror(rc), fidbus_client_last_error(c));
            fidbus_client_close(c);
            return false;
        }
    }
    if (how == 0 && !atomic_load(&s->stop_members)) {
        /* Go away with some calls held. */
        atomic_store(&ma.hold, true);
        uint64_t hold_until = fb_e2e_now_ms() + 5 + rand_r(&sl->seed) % 20;
        for (uint64_t now; (now = fb_e2e_now_ms()) < hold_until;)
            if (fidbus_serve(c, (int)(hold_until - now)) < 0)
                break;
    }
    if (how == 1 && (rc = fidbus_unregister(c, NULL)) < 0) {
        fb_soak_failf(&s->fail, "slot %u: unregister: %s (%s)", sl->id,
                      fidbus_strerror(rc), fidbus_client_last_error(c));
        fidbus_client_close(c);
        return false;
    }
    fidbus_client_close(c);
    count_leave(s, how);
    return true;
}

/* One membership as a process, killed with SIGKILL. */
static bool process_member(struct slot *sl, int mapfd)
{
    struct soak *s = sl->s;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fb_soak_failf(&s->fail, "pipe: %s", strerror(errno));
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, mapfd, MAP_FD);
    char env[300];
    snprintf(env, sizeof env, MEMBER_ENV "=%u %zu %s", rand_r(&sl->seed) % 4000, map_len,
             s->addr);
    /* environ plus ours (the sanitizers' options pass on). */
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 2, sizeof *envp);
    if (!envp) {
        fb_soak_failf(&s->fail, "out of memory");
        return false;
    }
    memcpy(envp, environ, ne * sizeof *envp);
    envp[ne] = env;
    char *argv[] = {s->self, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, s->self, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        fb_soak_failf(&s->fail, "spawn %s: %s", s->self, strerror(rc));
        return false;
    }
    char b;
    ssize_t k;
    do
        k = read(p[0], &b, 1);
    while (k < 0 && errno == EINTR);
    close(p[0]);
    if (k != 1) {
        int st = 0;
        waitpid(pid, &st, 0);
        fb_soak_failf(&s->fail, "slot %u: member process did not register (status %#x)",
                      sl->id, st);
        return false;
    }
    atomic_fetch_add(&s->registered, 1);
    nap_ms(20 + rand_r(&sl->seed) % 300);
    while (!atomic_load(&s->stop_members) && !may_leave(s))
        nap_ms(10);
    kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
        fb_soak_failf(&s->fail, "slot %u: member process ended with status %#x", sl->id,
                      st);
        return false;
    }
    count_leave(s, 2);
    return true;
}

static int mapfd = -1;

static void *slot_main(void *arg)
{
    struct slot *sl = arg;
    struct soak *s = sl->s;
    while (!atomic_load(&s->stop_members) && !atomic_load(&s->fail.stop)) {
        int how = (int)(rand_r(&sl->seed) % 3);
        bool ok = how == 2 ? process_member(sl, mapfd) : thread_member(sl, how);
        if (!ok)
            break;
    }
    return NULL;
}

/* The event number of publisher p's i-th event (a 9-byte CBOR uint). */
static void encode_n(uint8_t out[9], uint64_t n)
{
    out[0] = 0x1b;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(n >> (56 - 8 * i));
}

static bool take_answer(struct pub *p, const struct fidbus_answer *a, const char *err)
{
    struct soak *s = p->s;
    /* seq = the event number + 1 with the top bit set (fidbus_publish_seq) */
    uint64_t n = (a->seq & ~(1ull << 63)) - 1;
    uint64_t i = n - (uint64_t)p->id * MAXEV;
    if (!(a->seq >> 63) || i >= p->sent) {
        fb_soak_failf(&s->fail, "publisher %u: answer to unknown seq %#" PRIx64, p->id,
                      a->seq);
        return false;
    }
    if (p->answers[i]++) {
        fb_soak_failf(&s->fail, "publisher %u: event %" PRIu64 " answered twice", p->id,
                      i);
        return false;
    }
    if (a->type != FIDBUS_MSG_ACK || a->result != 1) {
        fb_soak_failf(&s->fail,
                      "publisher %u: event %" PRIu64 " answered type %" PRIu64
                      " code %" PRIu64 " result %" PRIu64 " (%s)",
                      p->id, i, a->type, a->code, a->result, err);
        return false;
    }
    p->ok++;
    return true;
}

static void *pub_main(void *arg)
{
    struct pub *p = arg;
    struct soak *s = p->s;
    struct fidbus_client *c;
    int rc = fidbus_client_connect(&c, s->addr, &client_opts);
    if (rc < 0) {
        fb_soak_failf(&s->fail, "publisher %u: connect: %s", p->id, fidbus_strerror(rc));
        return NULL;
    }
    uint64_t base = (uint64_t)p->id * MAXEV;
    struct fidbus_answer a;
    while (!atomic_load(&s->fail.stop) && p->sent < MAXEV) {
        while (p->sent - p->ok < WINDOW && p->sent < MAXEV) {
            uint8_t pl[9];
            uint64_t n = base + p->sent;
            encode_n(pl, n);
            rc = fidbus_publish_seq(c, (n + 1) | 1ull << 63, FIDBUS_FLAG_ACK, "soak.ev",
                                    NULL, 0, pl, sizeof pl);
            if (rc < 0) {
                fb_soak_failf(&s->fail, "publisher %u: publish: %s", p->id,
                              fidbus_strerror(rc));
                goto out;
            }
            p->sent++;
        }
        if ((rc = fidbus_client_recv(c, &a, -1)) < 0) {
            fb_soak_failf(&s->fail, "publisher %u: waiting for an answer: %s", p->id,
                          fidbus_strerror(rc));
            goto out;
        }
        if (!take_answer(p, &a, fidbus_client_last_error(c)))
            goto out;
        if (atomic_load(&s->stop_pub))
            break;
    }
    /* The rest of the window. */
    while (p->ok < p->sent) {
        if ((rc = fidbus_client_recv(c, &a, -1)) < 0) {
            fb_soak_failf(&s->fail, "publisher %u: %" PRIu64 " unanswered: %s", p->id,
                          p->sent - p->ok, fidbus_strerror(rc));
            goto out;
        }
        if (!take_answer(p, &a, fidbus_client_last_error(c)))
            goto out;
    }
    /* The barrier; a second answer to anything would come before its ACK
     * or be kept by it. */
    if ((rc = fidbus_ping(c)) < 0) {
        fb_soak_failf(&s->fail, "publisher %u: final PING: %s", p->id,
                      fidbus_strerror(rc));
        goto out;
    }
    while (fidbus_client_recv(c, &a, 0) == 0)
        if (!take_answer(p, &a, fidbus_client_last_error(c)))
            goto out;
out:
    if (fidbus_client_async_errors(c))
        fb_soak_failf(&s->fail, "publisher %u: %" PRIu64 " async ERROR(s), last: %s",
                      p->id, fidbus_client_async_errors(c), fidbus_client_last_error(c));
    fidbus_client_close(c);
    return NULL;
}

START_TEST(test_e2e_remote_soak_churn)
{
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    ck_assert_msg(secs > 0, "FIDBUS_SOAK_SECONDS=%s: want a number of seconds",
                  getenv("FIDBUS_SOAK_SECONDS"));
    struct soak *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    fb_soak_fail_init(&s->fail);
    pthread_mutex_init(&s->lock, NULL);
    ssize_t k = readlink("/proc/self/exe", s->self, sizeof s->self - 1);
    ck_assert_int_gt(k, 0);
    s->self[k] = '\0';

    maxev = (uint64_t)(secs * 150000);
    maxev = maxev < 1u << 22 ? 1u << 22 : maxev > 1u << 25 ? 1u << 25 : maxev;
    map_len = (size_t)NPUB * maxev;
    mapfd = memfd_create("rsoak", MFD_CLOEXEC);
    ck_assert_int_ge(mapfd, 0);
    ck_assert_int_eq(ftruncate(mapfd, (off_t)map_len + 64), 0);
    handled = mmap(NULL, map_len + 64, PROT_READ | PROT_WRITE, MAP_SHARED, mapfd, 0);
    ck_assert(handled != MAP_FAILED);

    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    snprintf(s->addr, sizeof s->addr, "%s", t->bus_addr);

    struct slot slots[NSLOT];
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "remote soak: seed %u\n", seed);
    for (unsigned i = 0; i < NSLOT; i++) {
        slots[i] = (struct slot){.s = s, .id = i, .seed = seed + i};
        ck_assert_int_eq(pthread_create(&slots[i].thread, NULL, slot_main, &slots[i]), 0);
    }
    /* Publish once a member is there (until then a publish is UNAVAILABLE
     * by design, not a loss). */
    uint64_t wait_until = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    while (atomic_load(&s->registered) < 1 && !atomic_load(&s->fail.stop) &&
           fb_e2e_now_ms() < wait_until)
        nap_ms(1);
    ck_assert_msg(atomic_load(&s->registered) >= 1, "no member registered: %s",
                  s->fail.failure);

    struct pub pubs[NPUB];
    uint64_t start_ms = fb_e2e_now_ms();
    for (unsigned i = 0; i < NPUB; i++) {
        pubs[i] = (struct pub){.s = s, .id = i, .answers = calloc(MAXEV, 1)};
        ck_assert_ptr_nonnull(pubs[i].answers);
        ck_assert_int_eq(pthread_create(&pubs[i].thread, NULL, pub_main, &pubs[i]), 0);
    }
    uint64_t end_ms = start_ms + (uint64_t)(secs * 1000.0);
    while (fb_e2e_now_ms() < end_ms && !atomic_load(&s->fail.stop))
        nap_ms(50);
    /* Members keep serving (and churning) until the publishers drained. */
    atomic_store(&s->stop_pub, true);
    for (unsigned i = 0; i < NPUB; i++)
        pthread_join(pubs[i].thread, NULL);
    double pub_secs = (double)(fb_e2e_now_ms() - start_ms) / 1000.0;
    atomic_store(&s->stop_members, true);
    for (unsigned i = 0; i < NSLOT; i++)
        pthread_join(slots[i].thread, NULL);
    ck_assert_msg(!s->fail.failure[0], "%s", s->fail.failure);

    uint64_t sent = 0, unbacked = 0, first_unbacked = 0, runs = 0;
    for (unsigned i = 0; i < NPUB; i++) {
        struct pub *p = &pubs[i];
        ck_assert_msg(p->ok == p->sent, "publisher %u: %" PRIu64 " sent, %" PRIu64 " ok",
                      i, p->sent, p->ok);
        for (uint64_t j = 0; j < p->sent; j++) {
            ck_assert_msg(p->answers[j] == 1,
                          "publisher %u: event %" PRIu64 ": %u answers", i, j,
                          p->answers[j]);
            uint8_t h = handled[(size_t)i * MAXEV + j];
            runs += h;
            if (!h && !unbacked++)
                first_unbacked = (uint64_t)i * MAXEV + j;
        }
        sent += p->sent;
        free(p->answers);
    }
    ck_assert_msg(unbacked == 0,
                  "%" PRIu64 " events acked ok that no member ran (the first: %" PRIu64
                  ")",
                  unbacked, first_unbacked);
    ck_assert_msg(sent > 0, "nothing was published");
    uint64_t leaves = s->leaves[0] + s->leaves[1] + s->leaves[2];
    ck_assert_msg(leaves >= 3, "only %" PRIu64 " members left in %.1f s", leaves,
                  pub_secs);
    fprintf(stderr,
            "remote soak: %.1f s: %" PRIu64 " acked events (%.0f/s), each answered once, "
            "all ok and run by a member (%" PRIu64 " runs; %" PRIu64
            " calls held by members that then went away); members left %" PRIu64
            " times by close, %" PRIu64 " by unregister, %" PRIu64 " by SIGKILL\n",
            pub_secs, sent, (double)sent / pub_secs, runs, *HELD(), s->leaves[0],
            s->leaves[1], s->leaves[2]);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
    munmap(handled, map_len + 64);
    close(mapfd);
    pthread_mutex_destroy(&s->lock);
    fb_soak_fail_destroy(&s->fail);
    free(s);
}
END_TEST

static Suite *e2e_remote_soak_suite(void)
{
    Suite *s = suite_create("e2e.remote_soak");
    TCase *tc = tcase_create("remote_soak");
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    tcase_set_timeout(tc, (secs > 0 ? secs : SOAK_DEFAULT_S) + 120);
    tcase_add_test(tc, test_e2e_remote_soak_churn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *addr = getenv(MEMBER_ENV);
    if (addr)
        return member_main(addr);
    return fb_e2e_main(e2e_remote_soak_suite());
}
