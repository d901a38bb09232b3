/*
 * Restarting the daemon under a reconnecting publisher (ctest:
 * e2e.restart; README "Reconnecting"): a
 * publisher thread with reconnect_max_ms set sends N acked events through
 * the bus socket, pipelined (up to WINDOW unanswered), while the test
 * stops the daemon with SIGTERM and starts it again in place -- same
 * config, same socket path -- twice. At the end every event got exactly
 * one answer, an ACK with result 1 (the publisher never saw an error), and
 * the handler saw every one of the N events at least once over the three
 * daemon runs. Duplicates (an event handled by a daemon that went away
 * before its ACK reached the client, then re-sent) are allowed and
 * reported on stderr ("restart: ...").
 *
 * It runs twice: with the daemon binding its bus socket itself each time,
 * and under socket activation, the test holding the listening socket as
 * systemd would and passing it to every run (LISTEN_FDS/LISTEN_PID/
 * LISTEN_FDNAMES).
 *
 * The handler is tests/plugins/seen.so: it counts each event number (the
 * payload) and appends one record of counts per daemon run at fini; the
 * test adds the records up.
 *
 * The stops are deterministic, not timed: the publisher pauses at N/3
 * and 2N/3 with events in flight, and resumes as soon as the test has sent
 * SIGTERM, so it keeps publishing into a daemon that is shutting down and
 * then into no daemon at all. The publisher thread makes no Check
 * assertion (Check is not thread-safe): it records its first failure,
 * which the main thread asserts after joining it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define N 20000
#define WINDOW 64
#define STOPS 2
#define TOP_BIT (UINT64_C(1) << 63)
#define PAUSE_MS 60000

static const char config[] = FB_E2E_TP("seen") "report_file = @D@/seen.bin\n"
                                               "max = 20000\n"
                                               "[route all]\n"
                                               "event = *\n"
                                               "to = test.seen\n";

struct pub {
    char addr[200];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int reached; /* pauses the publisher arrived at */
    int go;      /* pauses the test released */
    uint8_t answers[N];
    char err[512];
    uint64_t reconnects;
    size_t in_flight[STOPS + 1]; /* unanswered acked publishes at each pause */
};

static void pub_fail(struct pub *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pub_fail(struct pub *p, const char *fmt, ...)
{
    if (p->err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
}

static void abs_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Reads one answer within timeout_ms (-1: the client's timeout): 1, 0 if
 * none came in time (only with timeout_ms 0), -1 (with the failure
 * recorded) if it is not an ACK with result 1 for an event that had no
 * answer yet. */
static int answer(struct pub *p, struct fidbus_client *c, int timeout_ms)
{
    struct fidbus_answer a;
    int rc = fidbus_client_recv(c, &a, timeout_ms);
    if (rc == -ETIMEDOUT && timeout_ms == 0)
        return 0;
    if (rc < 0) {
        pub_fail(p, "recv: %s", fidbus_strerror(rc));
        return -1;
    }
    uint64_t i = a.seq & ~TOP_BIT;
    if (a.type != FIDBUS_MSG_ACK || a.result != 1 || !(a.seq & TOP_BIT) || i >= N) {
        pub_fail(p, "answer type %llu seq %llu code %llu result %llu (%s)",
                 (unsigned long long)a.type, (unsigned long long)a.seq,
                 (unsigned long long)a.code, (unsigned long long)a.result,
                 fidbus_client_last_error(c));
        return -1;
    }
    if (p->answers[i]++) {
        pub_fail(p, "event %llu answered twice", (unsigned long long)i);
        return -1;
    }
    return 1;
}

static bool take_answer(struct pub *p, struct fidbus_client *c)
{
    return answer(p, c, -1) == 1;
}

/* Waits until the test has sent SIGTERM for pause k. */
static bool pause_at(struct pub *p, int k)
{
    struct timespec ts;
    abs_deadline(&ts, PAUSE_MS);
    pthread_mutex_lock(&p->mu);
    p->reached = k;
    pthread_cond_broadcast(&p->cv);
    int rc = 0;
    while (p->go < k && rc == 0)
        rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    pthread_mutex_unlock(&p->mu);
    if (rc)
        pub_fail(p, "pause %d: the test never released it", k);
    return rc == 0;
}

static void *publisher(void *arg)
{
    struct pub *p = arg;
    struct fidbus_client_opts o = {.timeout_ms = 30000, .reconnect_max_ms = 100};
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, p->addr, &o);
    if (rc < 0) {
        pub_fail(p, "connect: %s", fidbus_strerror(rc));
        p->reached = STOPS; /* let the test go on to its asserts */
        return NULL;
    }
    int inflight = 0, next_pause = 1;
    for (uint64_t i = 0; i < N && !p->err[0]; i++) {
        if (next_pause <= STOPS && i == (uint64_t)N * next_pause / (STOPS + 1)) {
            /* Write out what is buffered (a zero wait still writes), so the
             * window is in the daemon's hands when SIGTERM comes; its
             * answers are left unread, as if they were still on the way. */
            int r = answer(p, c, 0);
            if (r < 0)
                break;
            inflight -= r;
            p->in_flight[next_pause] = fidbus_client_unanswered(c);
            if (!pause_at(p, next_pause++))
                break;
        }
        while (inflight >= WINDOW && take_answer(p, c))
            inflight--;
        if (p->err[0])
            break;
        uint8_t payload[3] = {0x19, (uint8_t)(i >> 8), (uint8_t)i}; /* uint16 */
        rc = fidbus_publish_seq(c, TOP_BIT | i, FIDBUS_FLAG_ACK, "restart.event", NULL, 0,
                                payload, 3);
        if (rc < 0)
            pub_fail(p, "publish %llu: %s", (unsigned long long)i, fidbus_strerror(rc));
        else
            inflight++;
    }
    while (inflight > 0 && !p->err[0] && take_answer(p, c))
        inflight--;
    if (!p->err[0] && fidbus_client_unanswered(c) != 0)
        pub_fail(p, "%zu acked publishes still unanswered", fidbus_client_unanswered(c));
    p->reconnects = fidbus_client_reconnects(c);
    fidbus_client_close(c);
    pthread_mutex_lock(&p->mu);
    p->reached = STOPS; /* in case it ended early */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The daemon got SIGTERM from us: wait for it like fb_e2e_stop does. A
 * daemon that bound its own bus socket removes it; a passed one is the
 * manager's and stays. */
static void wait_stopped(struct fb_e2e *t, bool passed)
{
    uint64_t deadline = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(t->pid, &status, WNOHANG);
        if (r == t->pid)
            break;
        ck_assert_msg(r == 0, "waitpid: %s", strerror(errno));
        uint64_t now = fb_e2e_now_ms();
        ck_assert_msg(now < deadline, "fidbusd did not exit within %d ms of SIGTERM",
                      FB_E2E_TIMEOUT_MS);
        int left = (int)(deadline - now);
        struct pollfd pf = {.fd = t->pidfd, .events = POLLIN};
        /* without a pidfd: a bounded wait for an exit, not a sync sleep */
        poll(t->pidfd >= 0 ? &pf : NULL, t->pidfd >= 0 ? 1 : 0,
             t->pidfd >= 0 || left < 20 ? left : 20);
    }
    t->pid = 0;
    char *err = fb_e2e_stderr(t);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "fidbusd did not exit 0 after SIGTERM (status 0x%x); stderr:\n%s",
                  status, err);
    ck_assert_msg(!strstr(err, "ERROR: AddressSanitizer") &&
                      !strstr(err, "ERROR: LeakSanitizer") &&
                      !strstr(err, "runtime error:"),
                  "sanitizer report from fidbusd:\n%s", err);
    free(err);
    if (passed)
        ck_assert_msg(access(t->bus, F_OK) == 0, "fidbusd removed the passed %s", t->bus);
    else
        ck_assert_msg(access(t->bus, F_OK) != 0, "fidbusd exited but left %s", t->bus);
}

/*
 * The whole scenario on a running daemon t: with sp NULL, every restart
 * is fb_e2e_start (the daemon binds the bus socket again); otherwise it is
 * fb_e2e_start_with(sp), the same passed sockets each time, as systemd
 * restarts a socket-activated service. `what` names the run in the report.
 */
static void run_restarts(struct fb_e2e *t, const struct fb_e2e_spawn *sp,
                         const char *what)
{
    struct pub *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    snprintf(p->addr, sizeof p->addr, "%s", t->bus_addr);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, publisher, p), 0);

    for (int k = 1; k <= STOPS; k++) {
        struct timespec ts;
        abs_deadline(&ts, PAUSE_MS);
        int rc = 0;
        pthread_mutex_lock(&p->mu);
        while (p->reached < k && rc == 0)
            rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        pthread_mutex_unlock(&p->mu);
        ck_assert_msg(rc == 0, "the publisher never reached pause %d", k);
        ck_assert_msg(kill(t->pid, SIGTERM) == 0, "kill: %s", strerror(errno));
        pthread_mutex_lock(&p->mu);
        p->go = k;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        wait_stopped(t, sp != NULL);
        if (sp) {
            fb_e2e_start_with(t, sp); /* the same listening sockets */
            char *err = fb_e2e_stderr(t);
            const char *adopt[] = {"adopting", t->bus, "bus socket", NULL};
            ck_assert_msg(fb_e2e_has_line(err, adopt), "run %d: adoption not logged: %s",
                          k + 1, err);
            free(err);
        } else
            fb_e2e_start(t); /* same config, same socket path */
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(p->err[0] == '\0', "publisher: %s", p->err);
    for (int i = 0; i < N; i++)
        ck_assert_msg(p->answers[i] == 1, "event %d: %d answers", i, p->answers[i]);
    ck_assert_msg(p->reconnects == STOPS, "%llu reconnections, expected %d",
                  (unsigned long long)p->reconnects, STOPS);
    int status = sp ? fb_e2e_stop_passed(t) : fb_e2e_stop(t);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "fidbusd did not exit 0 (status 0x%x)", status);

    /* One record per daemon run: "SEEN", max (LE32), max LE16 counts. */
    size_t len = 0;
    char *rec = fb_e2e_read(fb_e2e_file(t, "seen.bin"), &len);
    ck_assert_msg(rec != NULL, "seen.so wrote no report");
    size_t rlen = 8 + 2 * (size_t)N;
    ck_assert_msg(len == rlen * (STOPS + 1), "seen.bin: %zu bytes, expected %d records",
                  len, STOPS + 1);
    unsigned long long total = 0, dups = 0;
    for (int i = 0; i < N; i++) {
        unsigned n = 0;
        for (size_t r = 0; r < STOPS + 1; r++) {
            const uint8_t *b = (const uint8_t *)rec + r * rlen;
            ck_assert_msg(memcmp(b, "SEEN", 4) == 0, "record %zu: bad magic", r);
            n += b[8 + 2 * i] | (unsigned)b[9 + 2 * i] << 8;
        }
        ck_assert_msg(n >= 1, "event %d was acked but never handled", i);
        total += n;
        dups += n - 1;
    }
    fprintf(stderr,
            "restart (%s): %d acked events over %d daemon restarts: all handled, %llu "
            "handler calls, %llu duplicates; in flight at the stops: %zu, %zu\n",
            what, N, STOPS, total, dups, p->in_flight[1], p->in_flight[2]);
    free(rec);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

START_TEST(test_restart_reconnecting_publisher_loses_nothing)
{
    struct fb_e2e *t = fb_e2e_up(NULL, config);
    run_restarts(t, NULL, "rebinding");
    fb_e2e_free(t);
}
END_TEST

/*
 * The same through socket activation: the test holds the listening bus
 * socket, as systemd's fidbusd.socket does, and every fidbusd run gets it
 * as fd 3 with LISTEN_FDS=1, LISTEN_FDNAMES=bus and LISTEN_PID set to the
 * daemon's own pid in the child between fork and exec (the harness).
 * Between two runs the socket keeps listening, so the publisher's
 * reconnection is queued in its backlog and served by the next run
 * instead of failing; at the end the socket file is still there, the
 * manager's, and the daemon of each run logged that it adopted it.
 */
START_TEST(test_restart_socket_activated_loses_nothing)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, config);
    ck_assert_msg(mkdir(fb_e2e_file(t, "run"), 0755) == 0 || errno == EEXIST,
                  "mkdir run: %s", strerror(errno));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa;
    fb_e2e_sun(&sa, t->bus);
    unlink(t->bus);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", t->bus,
                  strerror(errno));
    ck_assert_msg(listen(fd, 64) == 0, "listen: %s", strerror(errno));
    struct fb_e2e_spawn sp = {.fds = &fd, .nfds = 1, .fdnames = "bus"};
    fb_e2e_start_with(t, &sp);
    char *err = fb_e2e_stderr(t);
    const char *adopt[] = {"adopting", t->bus, "bus socket", NULL};
    ck_assert_msg(fb_e2e_has_line(err, adopt), "adoption not logged: %s", err);
    free(err);

    run_restarts(t, &sp, "socket activation");
    ck_assert_msg(access(t->bus, F_OK) == 0, "the passed %s is gone", t->bus);
    close(fd);
    fb_e2e_free(t);
}
END_TEST

static Suite *e2e_restart_suite(void)
{
    Suite *s = suite_create("e2e.restart");
    TCase *tc = tcase_create("restart");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_restart_reconnecting_publisher_loses_nothing);
    tcase_add_test(tc, test_restart_socket_activated_loses_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(e2e_restart_suite());
}
