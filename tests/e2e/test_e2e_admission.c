/*
 * End-to-end tests of who gets a connection when someone floods the
 * daemon with them (ctest: e2e.admission; conn_admit.h, README "Limits
 * and backpressure"):
 *
 * - TCP connections that never send AUTH have places of their own
 *   (unauth_max, unauth_per_addr), and TCP as a whole a share
 *   (max_connections_tcp), so neither locks out the host's Unix clients
 *   or a TCP client with the key from another address. Other source
 *   addresses are other loopback addresses (127.0.0.2 ...), which Linux
 *   routes to lo.
 * - A control peer that may not run commands gets one UNAUTHORIZED and
 *   EOF, and only a few such peers are connected at once.
 * - A flood of refusals writes a bounded number of log lines, with the
 *   count of the rest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "e2e/harness.h"

#define KEY "admission test key 0123456789abcdef"

#define COUNT_ALL FB_E2E_COUNT "[route all]\nevent = *\nto = fidbus.count\n"

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000L};
    nanosleep(&ts, NULL); /* a client's own pace, not synchronisation */
}

/* A daemon with a loopback TCP listener that wants AUTH (key KEY), and
 * `sections` after the harness's. */
static struct fb_e2e *key_up(const char *sections)
{
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config_tcp_key(t, &(struct fb_e2e_opts){.workers = 2}, KEY, 0600, sections);
    fb_e2e_start(t);
    return t;
}

static uint16_t tcp_port(const struct fb_e2e *t)
{
    return (uint16_t)atoi(strrchr(t->tcp_addr, ':') + 1);
}

/* A raw connection around fd, as the harness's own (fb_e2e_raw_close
 * frees it). */
static struct fb_e2e_raw *raw_fd(int fd)
{
    struct fb_e2e_raw *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->fd = fd;
    r->cap = 65536;
    r->buf = malloc(r->cap);
    ck_assert_ptr_nonnull(r->buf);
    return r;
}

/* A socket from loopback address `src` to t's TCP listener. */
static int tcp_fd_from(const struct fb_e2e *t, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in me = {.sin_family = AF_INET};
    ck_assert_int_eq(inet_pton(AF_INET, src, &me.sin_addr), 1);
    ck_assert_msg(bind(fd, (struct sockaddr *)&me, sizeof me) == 0, "bind %s: %s", src,
                  strerror(errno));
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(tcp_port(t))};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&to, sizeof to) == 0,
                  "connect from %s: %s", src, strerror(errno));
    return fd;
}

/* The first frame of a new connection: HELLO (true) or the refusal, ERROR
 * BUSY then EOF (false, its message in why). */
static bool admitted(struct fb_e2e_raw *r, char *why, size_t whylen)
{
    ck_assert_int_eq(fb_e2e_raw_recv(r, 10000), 1);
    if (r->msg.type == FIDBUS_MSG_HELLO)
        return true;
    ck_assert_msg(r->msg.type == FIDBUS_MSG_ERROR && r->msg.code == FIDBUS_BUSY,
                  "a new connection got message type %llu (code %llu), not HELLO or "
                  "ERROR BUSY",
                  (unsigned long long)r->msg.type, (unsigned long long)r->msg.code);
    snprintf(why, whylen, "%s", fb_e2e_msg_text(&r->msg));
    fb_e2e_raw_expect_eof(r);
    return false;
}

/* Opens connections from src that never AUTH until one is refused (at
 * most max); they are kept in held[]. Returns how many were admitted;
 * the refusal's message is in why. */
static int flood_from(const struct fb_e2e *t, const char *src, int max,
                      struct fb_e2e_raw **held, char *why, size_t whylen)
{
    int n = 0;
    why[0] = '\0';
    for (int i = 0; i < max; i++) {
        struct fb_e2e_raw *r = raw_fd(tcp_fd_from(t, src));
        if (!admitted(r, why, whylen)) {
            fb_e2e_raw_close(r);
            break;
        }
        held[n++] = r;
    }
    return n;
}

/* A connection from src that passes AUTH with KEY (checked with a PING);
 * NULL, with the refusal in why, if it was refused at connect. */
static struct fb_e2e_raw *authed_from(const struct fb_e2e *t, const char *src, char *why,
                                      size_t whylen)
{
    struct fb_e2e_raw *r = raw_fd(tcp_fd_from(t, src));
    if (!admitted(r, why, whylen))
        return fb_e2e_raw_close(r);
    ck_assert_msg(fidbus_msg_has(&r->msg, FIDBUS_K_NONCE) && r->msg.nonce.len == 32,
                  "TCP HELLO without a nonce");
    uint8_t mac[32];
    unsigned len = 0;
    ck_assert(HMAC(EVP_sha256(), KEY, (int)strlen(KEY), r->msg.nonce.ptr, 32, mac, &len));
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_MAC),
        .type = FIDBUS_MSG_AUTH,
        .mac = {mac, sizeof mac},
    };
    fb_e2e_raw_msg(r, &m);
    fb_e2e_raw_ping(r, 1);
    fb_e2e_raw_expect_ack(r, 1, 0);
    return r;
}

/* An acked publish on an authenticated raw connection, answered ACK 1. */
static void raw_publish_ok(struct fb_e2e_raw *r, uint64_t seq)
{
    fb_e2e_raw_publish(r, seq, true, "adm.tcp");
    fb_e2e_raw_expect_ack(r, seq, 1);
}

/* n Unix clients, each a new connection with one acked publish (as
 * `fidbusctl publish --ack` does it). */
static void unix_publishes(struct fb_e2e *t, int n)
{
    for (int i = 0; i < n; i++) {
        struct fidbus_client *c = fb_e2e_connect(t);
        fb_e2e_publish_ack(c, "adm.unix", 1);
        fidbus_client_close(c);
    }
}

static void close_all(struct fb_e2e_raw **r, int n)
{
    for (int i = 0; i < n; i++)
        r[i] = fb_e2e_raw_close(r[i]);
}

/* ------------------------------------------------------ unauthenticated */

/* Connections that never AUTH: unauth_per_addr from one address, then
 * unauth_max from all; meanwhile Unix clients and a TCP client with the
 * key from another address get in, and AUTH or a close gives a place
 * back. max_connections is far above what they may take: before these
 * limits, the flood took every place. */
START_TEST(test_e2e_admission_unauth_flood)
{
    struct fb_e2e *t = key_up(COUNT_ALL "[limits]\nmax_connections = 48\n"
                                        "max_connections_per_uid = 0\n"
                                        "unauth_max = 12\nunauth_per_addr = 4\n"
                                        "auth_timeout_ms = 60000\n");
    struct fb_e2e_raw *held[64];
    int nheld = 0;
    char why[1100];

    int n = flood_from(t, "127.0.0.1", 56, held, why, sizeof why);
    nheld += n;
    ck_assert_msg(n == 4, "127.0.0.1 held %d connections without AUTH (want 4); then: %s",
                  n, why);
    ck_assert_msg(strstr(why, "awaiting AUTH from 127.0.0.1 (unauth_per_addr = 4)"), "%s",
                  why);

    /* Unix clients and a keyed client from elsewhere are served. */
    unix_publishes(t, 20);
    struct fb_e2e_raw *ok = authed_from(t, "127.0.0.2", why, sizeof why);
    ck_assert_msg(ok != NULL, "a client with the key was refused: %s", why);
    raw_publish_ok(ok, 2);

    /* Its AUTH gave its place back: two more addresses fill unauth_max
     * (4 + 4 + 4 = 12), and then no one new gets in over TCP... */
    n = flood_from(t, "127.0.0.3", 10, held + nheld, why, sizeof why);
    nheld += n;
    ck_assert_msg(n == 4, "127.0.0.3 held %d (want 4): %s", n, why);
    n = flood_from(t, "127.0.0.4", 10, held + nheld, why, sizeof why);
    nheld += n;
    ck_assert_msg(n == 4, "127.0.0.4 held %d (want 4): %s", n, why);
    ck_assert_msg(strstr(why, "too many TCP connections awaiting AUTH (unauth_max = 12)"),
                  "%s", why);
    n = flood_from(t, "127.0.0.5", 10, held + nheld, why, sizeof why);
    ck_assert_int_eq(n, 0);
    ck_assert_msg(strstr(why, "too many TCP connections awaiting AUTH (unauth_max = 12)"),
                  "%s", why);
    ck_assert_ptr_null(authed_from(t, "127.0.0.2", why, sizeof why));
    ck_assert_msg(strstr(why, "unauth_max = 12"), "%s", why);

    /* ... while Unix clients and the client already in are not touched. */
    unix_publishes(t, 20);
    raw_publish_ok(ok, 3);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "unauth_addr"), 2); /* .1 and .3 */
    ck_assert_int_eq(fb_e2e_limit_hits(t, "unauth"), 3);      /* .4, .5 and .2 */
    ck_assert_int_eq(fb_e2e_limit_hits(t, "connections"), 0);

    /* Closed connections give their places back. The daemon sees the
     * closes on its own time: retry, boundedly. */
    close_all(held, 4);
    struct fb_e2e_raw *late = NULL;
    for (uint64_t t0 = fb_e2e_now_ms(); !late && fb_e2e_now_ms() - t0 < 10000;)
        if (!(late = authed_from(t, "127.0.0.5", why, sizeof why)))
            pause_ms(20);
    ck_assert_msg(late != NULL, "still refused after the flood closed: %s", why);
    raw_publish_ok(late, 2);

    fb_e2e_raw_close(late);
    fb_e2e_raw_close(ok);
    close_all(held + 4, nheld - 4);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* --------------------------------------------------- the repeated attack */

#define ATTACK_FDS 200
#define ATTACK_MS 3000

/*
 * The unauthenticated-TCP attacker, in a child process: as many connections as
 * it may hold to the TCP listener, never sending anything, each
 * reopened as soon as the daemon closes it (refused, or past the AUTH
 * deadline). Writes one byte to `ready` at its first close (so its
 * connections are at whatever cap applies), then goes on for ATTACK_MS
 * and writes "opened closed" to `ready`. No Check calls: it is a
 * grandchild of the test runner.
 */
static void attacker(uint16_t port, int ready)
{
    struct pollfd p[ATTACK_FDS];
    int n = 0;
    unsigned long opened = 0, closed = 0;
    bool told = false;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint64_t end = 0;
    char buf[4096];
    for (;;) {
        if (told && fb_e2e_now_ms() >= end)
            break;
        while (n < ATTACK_FDS) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0)
                break;
            if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 &&
                errno != EINPROGRESS) {
                close(fd);
                break;
            }
            p[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
            opened++;
        }
        if (poll(p, (nfds_t)n, 5) < 0 && errno != EINTR)
            _exit(2);
        for (int i = 0; i < n; i++) {
            if (!p[i].revents)
                continue;
            ssize_t k = read(p[i].fd, buf, sizeof buf);
            if (k > 0 || (k < 0 && errno == EAGAIN))
                continue;
            close(p[i].fd);
            p[i--] = p[--n];
            closed++;
            if (!told) {
                told = true;
                end = fb_e2e_now_ms() + ATTACK_MS;
                (void)!write(ready, "!", 1);
            }
        }
        pause_ms(1); /* leave the machine's other tests some CPU */
    }
    dprintf(ready, "%lu %lu", opened, closed);
    _exit(0);
}

/* The unauthenticated-TCP attack, repeated: connections that never AUTH, each
 * reopened as soon as it is closed, with max_connections and the AUTH
 * deadline small so the daemon re-arms it quickly. Every new Unix client
 * publishing meanwhile (acked) must get in. Old keys only: the defaults
 * of the new limits must be enough. */
START_TEST(test_e2e_admission_repeated_attack)
{
    struct fb_e2e *t = key_up(COUNT_ALL "[limits]\nmax_connections = 64\n"
                                        "max_connections_per_uid = 0\n"
                                        "auth_timeout_ms = 300\n");
    int pp[2];
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pp[0]);
        attacker(tcp_port(t), pp[1]);
    }
    close(pp[1]);
    char c;
    ck_assert_msg(read(pp[0], &c, 1) == 1, "the attacker never saw a close");

    unsigned long ok = 0, failed = 0;
    char first_err[300] = "";
    for (;;) {
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid) {
            ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "attacker: status 0x%x",
                          ws);
            break;
        }
        struct fidbus_client *cl = NULL;
        uint64_t res = 0;
        int rc = fidbus_client_connect(&cl, t->bus_addr, NULL);
        if (rc == 0)
            rc = fidbus_publish_ack(cl, "adm.unix", NULL, 0, NULL, 0, &res);
        if (rc == 0 && res == 1) {
            ok++;
        } else if (failed++ == 0) {
            snprintf(first_err, sizeof first_err, "%s (%s)", fidbus_strerror(rc),
                     cl ? fidbus_client_last_error(cl) : fidbus_connect_error());
        }
        if (cl)
            fidbus_client_close(cl);
    }
    char figures[64] = "";
    ck_assert(read(pp[0], figures, sizeof figures - 1) > 0);
    close(pp[0]);
    unsigned long opened = 0, closed = 0;
    sscanf(figures, "%lu %lu", &opened, &closed);
    fprintf(stderr,
            "e2e.admission repeated attack: %lu TCP connections opened, %lu closed by "
            "the daemon in ~%u ms; Unix publishes meanwhile: %lu acked, %lu failed%s%s\n",
            opened, closed, ATTACK_MS, ok, failed, failed ? "; first: " : "", first_err);
    ck_assert_msg(failed == 0, "%lu of %lu Unix publishes failed during the flood: %s",
                  failed, ok + failed, first_err);
    ck_assert_msg(ok >= 10, "only %lu Unix publishes in %u ms", ok, ATTACK_MS);
    ck_assert_msg(closed > 8, "the attacker was closed only %lu times", closed);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "connections"), 0);
    ck_assert_int_gt(fb_e2e_limit_hits(t, "unauth_addr"), 0);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ----------------------------------------------------------- TCP share */

/* With tcp_auth = none any TCP client is in at once: max_connections_tcp
 * keeps the rest of max_connections for Unix clients. */
START_TEST(test_e2e_admission_tcp_share)
{
    struct fb_e2e_opts o = {.workers = 1, .tcp = true};
    struct fb_e2e *t =
        fb_e2e_up(&o, COUNT_ALL "[limits]\nmax_connections = 8\nmax_connections_tcp = 3\n"
                                "max_connections_per_uid = 0\n");
    struct fb_e2e_raw *tcp[3], *uni[5];
    char why[1100];
    for (int i = 0; i < 3; i++) {
        tcp[i] = raw_fd(tcp_fd_from(t, "127.0.0.1"));
        ck_assert_msg(admitted(tcp[i], why, sizeof why), "TCP #%d refused: %s", i, why);
    }
    struct fb_e2e_raw *x = raw_fd(tcp_fd_from(t, "127.0.0.2"));
    ck_assert(!admitted(x, why, sizeof why));
    ck_assert_msg(strstr(why, "too many TCP connections (max_connections_tcp = 3)"), "%s",
                  why);
    fb_e2e_raw_close(x);
    /* The Unix places are all there: 8 - 3. */
    for (int i = 0; i < 5; i++) {
        uni[i] = fb_e2e_raw_unix(t);
        ck_assert_msg(admitted(uni[i], why, sizeof why), "Unix #%d refused: %s", i, why);
    }
    x = fb_e2e_raw_unix(t);
    ck_assert(!admitted(x, why, sizeof why));
    ck_assert_msg(strstr(why, "too many connections (max_connections = 8)"), "%s", why);
    fb_e2e_raw_close(x);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "connections_tcp"), 1);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "connections"), 1);
    close_all(tcp, 3);
    close_all(uni, 5);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------------------ the log */

/* How many lines of text contain needle; *held gets the sum of the
 * "N more suppressed like the next line" lines that precede those. */
static int count_lines(const char *text, const char *needle, unsigned long long *held)
{
    int n = 0;
    unsigned long long prev = 0;
    *held = 0;
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[2100];
        snprintf(line, sizeof line, "%.*s", (int)(len < 2099 ? len : 2099), l);
        if (strstr(line, needle)) {
            n++;
            *held += prev;
        }
        prev = 0;
        const char *m = strstr(line, " more suppressed like the next line");
        if (m) {
            const char *d = m;
            while (d > line && d[-1] >= '0' && d[-1] <= '9')
                d--;
            prev = strtoull(d, NULL, 10);
        }
        l += len + (e != NULL);
    }
    return n;
}

/* A client refused again and again (a frame before AUTH): the daemon
 * says so in at most FB_LOG_BURST lines plus one a second, and says how
 * many it held back. */
START_TEST(test_e2e_admission_log_rate_limited)
{
    struct fb_e2e *t = key_up(COUNT_ALL);
    static const char line[] = "refused: authentication required";
    uint64_t t0 = fb_e2e_now_ms();
    int refused = 0, printed = 0;
    unsigned long long held = 0;
    bool seen = false;
    while (!seen) {
        uint64_t ms = fb_e2e_now_ms() - t0;
        ck_assert_msg(ms < 30000, "no \"more suppressed\" line after %d refusals",
                      refused);
        struct fb_e2e_raw *r = raw_fd(tcp_fd_from(t, "127.0.0.1"));
        char why[1100];
        if (!admitted(r, why, sizeof why)) {
            /* Our earlier connections are still closing on the daemon's
             * side (unauth_per_addr): not a refusal by AUTH. */
            fb_e2e_raw_close(r);
            pause_ms(5);
            continue;
        }
        fb_e2e_raw_ping(r, 1);
        const struct fidbus_msg *m = fb_e2e_raw_expect_error(r, FIDBUS_UNAUTHORIZED, 1);
        ck_assert_msg(strstr(fb_e2e_msg_text(m), "the first frame must be AUTH"), "%s",
                      fb_e2e_msg_text(m));
        fb_e2e_raw_expect_eof(r);
        fb_e2e_raw_close(r);
        if (++refused % 20)
            continue;
        char *err = fb_e2e_stderr(t);
        printed = count_lines(err, line, &held);
        seen = held > 0;
        free(err);
        /* Lines written so far, by the time taken: 10 at once, then one a
         * second (and one more for the second the check falls in). */
        ms = fb_e2e_now_ms() - t0;
        ck_assert_msg(printed <= 10 + (int)(ms / 1000) + 1,
                      "%d refusal lines in %llu ms for %d refusals", printed,
                      (unsigned long long)ms, refused);
    }
    ck_assert_msg(printed + held <= (unsigned long long)refused,
                  "%d lines + %llu suppressed > %d refusals", printed, held, refused);
    ck_assert_msg(printed < refused, "%d lines for %d refusals", printed, refused);
    fprintf(stderr,
            "e2e.admission log: %d refusals, %d lines, %llu counted as suppressed\n",
            refused, printed, held);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* -------------------------------------------------------- control peers */

#define CTL_PEERS 40
#define CTL_UNAUTH_MAX 16 /* daemon/control/control.c */

/* In a child running as uid 65534: of CTL_PEERS connections at once
 * only CTL_UNAUTH_MAX get a HELLO, the others UNAUTHORIZED at connect;
 * then a request on one of those held is answered UNAUTHORIZED and the
 * connection ends. The exit status says which step failed. No Check
 * calls (a grandchild of the test runner). */
static int unauthorized_peer(const char *control)
{
    if (fb_e2e_drop_to(65534, 65534) != 0)
        return 10;
    char addr[200];
    snprintf(addr, sizeof addr, "unix:%s", control);
    struct fidbus_client_opts o = {.timeout_ms = 5000};
    struct fidbus_client *many[CTL_PEERS];
    int in = 0, out = 0;
    for (int i = 0; i < CTL_PEERS; i++) {
        many[i] = NULL;
        int rc = fidbus_client_connect(&many[i], addr, &o);
        if (rc == 0) {
            in++;
        } else if (fidbus_error_code(rc) == FIDBUS_UNAUTHORIZED &&
                   strstr(fidbus_connect_error(), "not allowed on the control socket")) {
            out++;
        } else {
            fprintf(stderr, "connect #%d: %s (%s)\n", i, fidbus_strerror(rc),
                    fidbus_connect_error());
            return 11;
        }
    }
    if (in != CTL_UNAUTH_MAX || out != CTL_PEERS - CTL_UNAUTH_MAX || !many[0]) {
        fprintf(stderr, "%d peers held, %d refused (want %d, %d)\n", in, out,
                CTL_UNAUTH_MAX, CTL_PEERS - CTL_UNAUTH_MAX);
        return 12;
    }
    int rc = fidbus_request(many[0], "status", NULL, 0, NULL, NULL);
    if (fidbus_error_code(rc) != FIDBUS_UNAUTHORIZED) {
        fprintf(stderr, "status: %s\n", fidbus_strerror(rc));
        return 13;
    }
    /* Then EOF: the daemon answers nothing more (it used to wait for
     * more requests, each answered, with 4 MiB of replies allowed). */
    char b[64];
    ssize_t k =
        fb_e2e_recv_by(fidbus_client_fd(many[0]), b, sizeof b, fb_e2e_now_ms() + 5000);
    if (k != 0) {
        fprintf(stderr, "after UNAUTHORIZED: read %zd (%s), not EOF\n", k,
                k < 0 ? strerror((int)-k) : "data");
        return 14;
    }
    for (int i = 0; i < CTL_PEERS; i++)
        if (many[i])
            fidbus_client_close(many[i]);
    return 0;
}

START_TEST(test_e2e_admission_control_unauthorized)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_e2e_admission_control_unauthorized: SKIPPED: needs root "
                        "to run a client as another uid\n");
        return;
    }
    struct fb_e2e_opts o = {.control_extra = "mode = 0666"};
    struct fb_e2e *t = fb_e2e_up(&o, COUNT_ALL);
    /* uid 65534 may reach the socket: only the peer check stops it */
    fb_e2e_let_others_in(t);

    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(unauthorized_peer(t->control));
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
                  "uid 65534 on the control socket: child status 0x%x (10 setuid, 11 "
                  "connect, 12 not capped, 13 not UNAUTHORIZED, 14 no EOF)",
                  ws);
    /* Allowed peers are not counted against the cap, nor refused: root's
     * fidbusctl reads the count. */
    ck_assert_int_eq(fb_e2e_limit_hits(t, "control_unauth"), CTL_PEERS - CTL_UNAUTH_MAX);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e.admission");
    TCase *tc = tcase_create("admission");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_admission_unauth_flood);
    tcase_add_test(tc, test_e2e_admission_repeated_attack);
    tcase_add_test(tc, test_e2e_admission_tcp_share);
    tcase_add_test(tc, test_e2e_admission_log_rate_limited);
    tcase_add_test(tc, test_e2e_admission_control_unauthorized);
    suite_add_tcase(s, tc);
    return fb_e2e_main(s);
}
