/*
 * Hostile and broken clients soak (ctest: e2e.hostile_soak;
 * README "Limits and backpressure").
 *
 * Well-behaved publishers run next to clients that misbehave in every way
 * a bus sees in the field, all on the daemon's Unix socket:
 *
 *   - publishers (NPUB threads, one connection each): bursts of BURST
 *     un-acked PUBLISHes, then an acked one, each carrying a unique number
 *     (CBOR uint payload) to tests/plugins/tally1.so; a PING at the end;
 *   - garbage: connects, writes junk (frames of non-CBOR bytes, a zero
 *     length, a length far above max_frame, random bytes), reads what
 *     comes back until the daemon closes;
 *   - slowloris: keeps SLOW_CONNS connections that send a frame header and
 *     then one byte of the body now and then, never finishing a frame;
 *   - never-reads: writes acked PUBLISHes (to fidbus.count) as fast as the
 *     socket takes them and never reads an answer, until the daemon stops
 *     reading it; then starts over on a new connection;
 *   - flood: un-acked PUBLISHes to fidbus.count as fast as it can, through
 *     the client library;
 *   - storm: connect / close (sometimes after half a frame) in a loop;
 *   - half-big: HALF_CONNS connections that each send 200 KiB of a frame
 *     promising 512 KiB and stop, pinning what the daemon buffered until
 *     input_soft_ms (1 s here) closes them; then again.
 *
 * Every loop is bounded in time (the run's end) and count. At the end:
 * no well-behaved publisher saw an error (every acked event ACKed with
 * result 1), the daemon is alive and answers `stats` (bad_frames > 0: the
 * garbage was seen; an input_soft close for every half-big connection
 * told so), it exits 0 on SIGTERM, and tally's totals equal what
 * the well-behaved publishers sent, count and sum (nothing lost, nothing
 * doubled, nothing of the junk counted as theirs).
 *
 * Duration: $FIDBUS_SOAK_SECONDS (default 5: a CI smoke run);
 * `tools/dev.sh hostile-soak` runs it for 300 s under ASan. Per-kind
 * figures are printed to stderr ("hostile: ..."). Threads make no Check
 * assertion (Check is not thread-safe): they record the first failure,
 * which the main thread asserts after joining them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "soak_pub.h"

#define NPUB 3
#define BURST 100
#define SLOW_CONNS 16
#define HALF_CONNS 4
#define SOAK_DEFAULT_S 5.0

static const struct fidbus_client_opts client_opts = {.timeout_ms = 60000};

struct soak {
    struct sockaddr_un sa; /* the bus socket, for raw connections */
    char bus_addr[200];
    uint64_t end_ms;
    struct fb_soak_fail fail;
    struct fb_soak_pub pubs[NPUB];
    /* what the misbehaving clients got done */
    _Atomic uint64_t garbage_conns, slow_bytes, slow_conns, noread_conns, noread_frames,
        flood_events, storm_conns, half_soft, half_other;
};

static bool done(struct soak *s)
{
    return atomic_load_explicit(&s->fail.stop, memory_order_relaxed) ||
           fb_e2e_now_ms() >= s->end_ms;
}

static void nap_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* A raw connection to the bus, or -1 (the daemon may refuse while busy:
 * the hostile loops just try again). */
static int raw_connect(struct soak *s, bool nonblock)
{
    int fd =
        socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&s->sa, sizeof s->sa) < 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Reads and drops what the daemon sends until EOF or timeout_ms. */
static void drain(int fd, int timeout_ms)
{
    uint8_t buf[4096];
    uint64_t until = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = fb_e2e_now_ms();
        if (now >= until)
            return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(until - now)) <= 0)
            return;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN)))
            return;
    }
}

/* ------------------------------------------------------ misbehaving */

static void *garbage(void *arg)
{
    struct soak *s = arg;
    uint32_t seed = 12345;
    for (unsigned round = 0; !done(s) && round < 1000000; round++) {
        int fd = raw_connect(s, false);
        if (fd < 0) {
            nap_ms(5);
            continue;
        }
        uint8_t b[256];
        size_t n = 0;
        switch (round % 4) {
        case 0: /* a frame of bytes that are not CBOR (0xff: a lone "break") */
            put_be32(b, 32);
            memset(b + 4, 0xff, 32);
            n = 36;
            break;
        case 1: /* zero length */
            put_be32(b, 0);
            n = 4;
            break;
        case 2: /* far above max_frame */
            put_be32(b, 0x7fffffffu);
            memset(b + 4, 'x', 60);
            n = 64;
            break;
        default: /* random bytes */
            for (n = 0; n < sizeof b; n++) {
                seed = seed * 1103515245u + 12345u;
                b[n] = (uint8_t)(seed >> 16);
            }
            break;
        }
        (void)!send(fd, b, n, MSG_NOSIGNAL);
        drain(fd, 50);
        close(fd);
        atomic_fetch_add(&s->garbage_conns, 1);
    }
    return NULL;
}

static void *slowloris(void *arg)
{
    struct soak *s = arg;
    int fds[SLOW_CONNS];
    for (int i = 0; i < SLOW_CONNS; i++)
        fds[i] = -1;
    while (!done(s)) {
        for (int i = 0; i < SLOW_CONNS && !done(s); i++) {
            if (fds[i] < 0) {
                fds[i] = raw_connect(s, true);
                if (fds[i] < 0)
                    continue;
                uint8_t h[4];
                put_be32(h, 1000); /* promises 1000 bytes, sends a few */
                if (send(fds[i], h, 4, MSG_NOSIGNAL) != 4) {
                    close(fds[i]);
                    fds[i] = -1;
                    continue;
                }
                atomic_fetch_add(&s->slow_conns, 1);
            }
            uint8_t one = 0xa1; /* a map of one pair: valid so far */
            if (send(fds[i], &one, 1, MSG_NOSIGNAL) != 1) {
                close(fds[i]); /* the daemon gave up on it: fine */
                fds[i] = -1;
                continue;
            }
            atomic_fetch_add(&s->slow_bytes, 1);
            /* drop what it says (HELLO, an ERROR before it closes) */
            uint8_t sink[512];
            while (read(fds[i], sink, sizeof sink) > 0)
                ;
        }
        nap_ms(50);
    }
    for (int i = 0; i < SLOW_CONNS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

static void *never_reads(void *arg)
{
    struct soak *s = arg;
    struct fidbus_buf frame = {0};
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = 1,
        .event = "junk.noread",
        .flags = FIDBUS_FLAG_ACK,
    };
    if (fidbus_msg_encode(&frame, &m) != 0) {
        fb_soak_failf(&s->fail, "never-reads: encode");
        return NULL;
    }
    /* 64 frames a write: the same frame, the seq does not matter here */
    size_t chunk = frame.len * 64;
    uint8_t *buf = malloc(chunk);
    for (size_t i = 0; buf && i < 64; i++)
        memcpy(buf + i * frame.len, frame.data, frame.len);
    while (buf && !done(s)) {
        int fd = raw_connect(s, true);
        if (fd < 0) {
            nap_ms(5);
            continue;
        }
        atomic_fetch_add(&s->noread_conns, 1);
        uint64_t stalled_since = 0;
        for (unsigned w = 0; w < 100000 && !done(s); w++) {
            ssize_t n = send(fd, buf, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                atomic_fetch_add(&s->noread_frames, (uint64_t)n / frame.len);
                stalled_since = 0;
                continue;
            }
            if (n < 0 && errno != EAGAIN)
                break; /* closed on us */
            /* the daemon stopped reading us: hold on a little, then go */
            if (!stalled_since)
                stalled_since = fb_e2e_now_ms();
            else if (fb_e2e_now_ms() - stalled_since > 500)
                break;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 50);
        }
        close(fd);
    }
    free(buf);
    fidbus_buf_free(&frame);
    return NULL;
}

static void *flood(void *arg)
{
    struct soak *s = arg;
    while (!done(s)) {
        struct fidbus_client *c = NULL;
        if (fidbus_client_connect(&c, s->bus_addr, &client_opts) < 0) {
            nap_ms(5);
            continue;
        }
        for (unsigned i = 0; i < 200000 && !done(s); i++) {
            if (fidbus_publish(c, "junk.flood", NULL, 0, NULL, 0) < 0)
                break;
            atomic_fetch_add_explicit(&s->flood_events, 1, memory_order_relaxed);
        }
        fidbus_flush(c);
        fidbus_client_close(c);
    }
    return NULL;
}

static void *storm(void *arg)
{
    struct soak *s = arg;
    for (unsigned i = 0; !done(s) && i < 10000000; i++) {
        int fd = raw_connect(s, false);
        if (fd < 0) {
            nap_ms(1);
            continue;
        }
        if (i % 3 == 1) {
            uint8_t half[6] = {0, 0, 0, 9, 0xa2, 0x00}; /* half a frame */
            (void)!send(fd, half, sizeof half, MSG_NOSIGNAL);
        }
        close(fd);
        atomic_fetch_add(&s->storm_conns, 1);
        if (i % 64 == 63)
            nap_ms(1); /* leave the accept loop some air on 2 cores */
    }
    return NULL;
}

/* ---------------------------------------------------------- the test */

static void *halfbig(void *arg)
{
    struct soak *s = arg;
    static const uint8_t body[200 * 1024]; /* never finished, so never decoded */
    uint8_t h[4];
    put_be32(h, 512 * 1024);
    while (!done(s)) {
        int fds[HALF_CONNS];
        for (int i = 0; i < HALF_CONNS; i++) {
            fds[i] = raw_connect(s, false);
            if (fds[i] >= 0 &&
                (send(fds[i], h, 4, MSG_NOSIGNAL) != 4 ||
                 send(fds[i], body, sizeof body, MSG_NOSIGNAL) != (ssize_t)sizeof body)) {
                close(fds[i]);
                fds[i] = -1;
            }
        }
        /* Until the daemon closes each one (EOF or a reset), or the end;
         * what it said first tells an input_soft close from a refusal at
         * connect (max_connections, filled by the storm). */
        for (int i = 0; i < HALF_CONNS; i++) {
            uint8_t got[2048];
            size_t len = 0;
            while (fds[i] >= 0 && !done(s)) {
                struct pollfd p = {.fd = fds[i], .events = POLLIN};
                if (poll(&p, 1, 100) <= 0)
                    continue;
                uint8_t sink[512];
                ssize_t n = read(fds[i], sink, sizeof sink);
                if (n > 0 && len + (size_t)n <= sizeof got) {
                    memcpy(got + len, sink, (size_t)n);
                    len += (size_t)n;
                }
                if (n == 0 || (n < 0 && errno != EINTR)) {
                    bool soft = memmem(got, len, "input_soft_ms", 13) != NULL;
                    atomic_fetch_add(soft ? &s->half_soft : &s->half_other, 1);
                    close(fds[i]);
                    fds[i] = -1;
                }
            }
            if (fds[i] >= 0)
                close(fds[i]);
        }
    }
    return NULL;
}

/* Every client here runs as one uid, so the per-uid cap would pit the good
 * publishers against the attackers; e2e.hostile crosses that cap on its
 * own. The soak shows isolation by everything else. */
#define SECTIONS                                                                         \
    "[limits]\nmax_connections_per_uid = 0\ninput_soft = 65536\ninput_soft_ms = "        \
    "1000\n" FB_E2E_COUNT "[plugin ta]\npath = @B@/tests/plugins/tally1.so\n"            \
    "report_file = @D@/tally.txt\n"                                                      \
    "[route good]\nevent = good.ev\nto = test.tally@1.0.0\n"                             \
    "[route junk]\nevent = junk.*\nto = fidbus.count@1.0.0\n"

START_TEST(test_e2e_hostile_soak)
{
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    ck_assert_msg(secs > 0, "FIDBUS_SOAK_SECONDS=%s: want a number of seconds",
                  getenv("FIDBUS_SOAK_SECONDS"));
    struct fb_e2e *t = fb_e2e_up(NULL, SECTIONS);
    struct soak *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    fb_soak_fail_init(&s->fail);
    fb_e2e_sun(&s->sa, t->bus);
    snprintf(s->bus_addr, sizeof s->bus_addr, "%s", t->bus_addr);

    uint64_t start = fb_e2e_now_ms();
    s->end_ms = start + (uint64_t)(secs * 1000.0);
    for (unsigned i = 0; i < NPUB; i++) {
        s->pubs[i] = (struct fb_soak_pub){.fail = &s->fail,
                                          .addr = s->bus_addr,
                                          .event = "good.ev",
                                          .burst = BURST,
                                          .end_ms = s->end_ms,
                                          .id = i};
        ck_assert_int_eq(
            pthread_create(&s->pubs[i].thread, NULL, fb_soak_publisher, &s->pubs[i]), 0);
    }
    void *(*const bad[])(void *) = {garbage, slowloris, never_reads,
                                    flood,   storm,     halfbig};
    pthread_t badt[sizeof bad / sizeof bad[0]];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(pthread_create(&badt[i], NULL, bad[i], s), 0);
    for (unsigned i = 0; i < NPUB; i++)
        pthread_join(s->pubs[i].thread, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        pthread_join(badt[i], NULL);
    double ran = (double)(fb_e2e_now_ms() - start) / 1000.0;
    ck_assert_msg(!s->fail.failure[0], "%s", s->fail.failure);

    uint64_t sent = 0, acked = 0, sum = 0;
    for (unsigned i = 0; i < NPUB; i++) {
        sent += s->pubs[i].sent;
        acked += s->pubs[i].acked;
        sum += s->pubs[i].sum;
    }
    ck_assert_msg(acked > 0, "no acked event went through");

    /* Alive and answering, and it saw the garbage. */
    ck_assert_msg(kill(t->pid, 0) == 0, "the daemon is gone");
    static const char *const keys[] = {"bad_frames", "received"};
    uint64_t v[2];
    fb_e2e_stats(t, 2, keys, v);
    uint64_t bad_frames = v[0], received = v[1];
    ck_assert_msg(bad_frames > 0, "stats: no bad_frames after the garbage");
    ck_assert_msg(received >= sent, "stats: received %" PRIu64 " < sent %" PRIu64,
                  received, sent);
    long long input_soft = fb_e2e_limit_hits(t, "input_soft");
    ck_assert_msg(input_soft >= (long long)atomic_load(&s->half_soft),
                  "input_soft closes %lld < half-big connections told so %" PRIu64,
                  input_soft, atomic_load(&s->half_soft));
    ck_assert_msg(secs < 3 || atomic_load(&s->half_soft) > 0,
                  "no half-big connection closed by input_soft in %.1f s", secs);

    fb_e2e_stop_ok(t);

    /* tally's one line (one instance): exactly what was sent. */
    char *text = fb_e2e_read(fb_e2e_file(t, "tally.txt"), NULL);
    ck_assert_msg(text != NULL, "no tally report");
    uint64_t counted = 0, csum = 0;
    ck_assert_msg(sscanf(text, "tally v=1.0.0 count=%" SCNu64 " sum=%" SCNu64, &counted,
                         &csum) == 2,
                  "tally.txt: %s", text);
    free(text);
    ck_assert_msg(counted == sent && csum == sum,
                  "sent %" PRIu64 " (sum %" PRIu64 "), tally counted %" PRIu64
                  " (sum %" PRIu64 ")",
                  sent, sum, counted, csum);

    fprintf(stderr,
            "hostile: %.1f s: %" PRIu64 " good events (%" PRIu64
            " acked), all ACKed and counted once\n"
            "hostile: garbage %" PRIu64 " conns, slowloris %" PRIu64 " conns / %" PRIu64
            " bytes, never-reads %" PRIu64 " conns / %" PRIu64 " frames, flood %" PRIu64
            " events, storm %" PRIu64 " conns, half-big %" PRIu64
            " closed by input_soft / %" PRIu64 " otherwise, daemon bad_frames %" PRIu64
            "\n",
            ran, sent, acked, atomic_load(&s->garbage_conns), atomic_load(&s->slow_conns),
            atomic_load(&s->slow_bytes), atomic_load(&s->noread_conns),
            atomic_load(&s->noread_frames), atomic_load(&s->flood_events),
            atomic_load(&s->storm_conns), atomic_load(&s->half_soft),
            atomic_load(&s->half_other), bad_frames);
    fb_soak_fail_destroy(&s->fail);
    free(s);
    fb_e2e_free(t);
}
END_TEST

int main(void)
{
    double secs = fb_soak_seconds(SOAK_DEFAULT_S);
    Suite *s = suite_create("e2e_hostile_soak");
    TCase *tc = tcase_create("hostile");
    /* the run, plus the drain and the stop */
    tcase_set_timeout(tc, (secs > 0 ? secs : 0) + 120);
    tcase_add_test(tc, test_e2e_hostile_soak);
    suite_add_tcase(s, tc);
    return fb_e2e_main(s);
}
