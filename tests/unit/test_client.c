/*
 * Unit tests for the client library (lib/client.c, lib/strerror.c) and the
 * JSON-to-CBOR converter fidbusctl uses (ctl/json_cbor.c).
 *
 * The server side is a tiny scripted peer: a thread that accepts one
 * connection on a Unix socket in a temporary directory (or on loopback
 * TCP) and runs a script function -- send HELLO, read a frame, answer it,
 * hang up -- written with the library's own encoder and decoder. No daemon
 * is involved. Scripts record their first failed expectation in the peer
 * (Check's asserts belong to the test's own thread), and every read they
 * do is bounded by a poll() timeout so a broken client cannot hang them.
 * Some tests take the accepted socket over from the script ("handover")
 * to look at exactly which bytes the client sent, and when.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fidbus/client.h>

#include "json_cbor.h"

#define PEER_WAIT_MS 5000

struct peer;
typedef void (*script_fn)(struct peer *p, int fd);

struct peer {
    char dir[64];
    char path[100];
    char addr[200];
    int lfd;
    int fd; /* accepted socket, when the script hands it over */
    pthread_t th;
    script_fn script;
    int arg;       /* scenario parameter for the script */
    char bad[256]; /* first failed expectation in the script */
    /* what the script saw */
    char event[256];
    char command[64];
    uint64_t seq;
    uint64_t flags;
    size_t ntags;
    bool mac_ok;
    bool name_ok;
    long first; /* s_backlog: the first event number on the new connection */
    struct fidbus_msg msg;
};

static void peer_fail(struct peer *p, int line, const char *fmt, ...)
{
    if (p->bad[0])
        return;
    int n = snprintf(p->bad, sizeof(p->bad), "script line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->bad + n, sizeof(p->bad) - (size_t)n, fmt, ap);
    va_end(ap);
}

#define PEER_CHECK(p, cond)                                                              \
    do {                                                                                 \
        if (!(cond))                                                                     \
            peer_fail((p), __LINE__, "%s", #cond);                                       \
    } while (0)

/* ------------------------------------------------------------ peer I/O */

static void send_bytes(struct peer *p, int fd, const uint8_t *data, size_t len,
                       size_t chunk)
{
    size_t off = 0;
    while (off < len) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        ssize_t w = send(fd, data + off, n, MSG_NOSIGNAL);
        if (w <= 0) {
            peer_fail(p, __LINE__, "send: %s", strerror(errno));
            return;
        }
        off += (size_t)w;
    }
}

static void send_msg(struct peer *p, int fd, const struct fidbus_msg_out *o, size_t chunk)
{
    struct fidbus_buf b = {0};
    if (fidbus_msg_encode(&b, o) != 0)
        peer_fail(p, __LINE__, "encode failed");
    else
        send_bytes(p, fd, b.data, b.len, chunk);
    fidbus_buf_free(&b);
}

static void send_hello(struct peer *p, int fd, uint64_t version, const uint8_t *nonce,
                       size_t nonce_len, size_t chunk)
{
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_VERSION) |
                   FIDBUS_BIT(FIDBUS_K_NAME),
        .type = FIDBUS_MSG_HELLO,
        .version = version,
        .name = "test-peer",
    };
    if (nonce) {
        o.present |= FIDBUS_BIT(FIDBUS_K_NONCE);
        o.nonce.ptr = nonce;
        o.nonce.len = nonce_len;
    }
    send_msg(p, fd, &o, chunk);
}

static void send_ack(struct peer *p, int fd, uint64_t seq, uint64_t result, size_t chunk)
{
    uint8_t out[64];
    size_t n = fidbus_enc_ack(out, sizeof(out), seq, result);
    PEER_CHECK(p, n > 0);
    send_bytes(p, fd, out, n, chunk);
}

static void send_error(struct peer *p, int fd, bool has_seq, uint64_t seq, uint64_t code,
                       const char *message, bool with_result, uint64_t result,
                       size_t chunk)
{
    uint8_t out[4200];
    size_t n = fidbus_enc_error(out, sizeof(out), has_seq, seq, code, message,
                                with_result, result);
    PEER_CHECK(p, n > 0);
    send_bytes(p, fd, out, n, chunk);
}

/* Exactly len bytes, or false at EOF / after PEER_WAIT_MS. */
static bool read_exact(int fd, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, PEER_WAIT_MS) <= 0)
            return false;
        ssize_t n = recv(fd, buf + off, len - off, 0);
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}

/* Reads one frame and decodes it into p->msg (body kept in *keep). */
static bool recv_msg(struct peer *p, int fd, struct fidbus_buf *keep)
{
    uint8_t hdr[4];
    if (!read_exact(fd, hdr, 4)) {
        peer_fail(p, __LINE__, "no frame from the client");
        return false;
    }
    size_t len =
        (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    keep->len = 0;
    if (len == 0 || fidbus_buf_reserve(keep, len) != 0 ||
        !read_exact(fd, keep->data, len)) {
        peer_fail(p, __LINE__, "bad frame from the client");
        return false;
    }
    keep->len = len;
    int rc = fidbus_msg_decode(keep->data, len, 0, &p->msg);
    if (rc != 0) {
        peer_fail(p, __LINE__, "client frame does not decode: %s", p->msg.why);
        return false;
    }
    p->seq = p->msg.seq;
    p->flags = p->msg.flags;
    p->ntags = p->msg.ntags;
    if (p->msg.event)
        snprintf(p->event, sizeof(p->event), "%s", p->msg.event);
    return true;
}

static void wait_eof(int fd)
{
    uint8_t buf[4096];
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (poll(&pf, 1, PEER_WAIT_MS) > 0 && recv(fd, buf, sizeof(buf), 0) > 0)
        ;
}

/* -------------------------------------------------------------- peers */

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
    if (poll(&pf, 1, PEER_WAIT_MS) <= 0) {
        peer_fail(p, __LINE__, "nobody connected");
        return NULL;
    }
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0) {
        peer_fail(p, __LINE__, "accept: %s", strerror(errno));
        return NULL;
    }
    p->fd = fd;
    p->script(p, fd);
    return NULL;
}

static void peer_spawn(struct peer *p)
{
    ck_assert_int_eq(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static struct peer *peer_unix(script_fn script, int arg)
{
    struct peer *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->fd = -1;
    p->script = script;
    p->arg = arg;
    snprintf(p->dir, sizeof(p->dir), "/tmp/fidbus-test-client-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(p->dir));
    snprintf(p->path, sizeof(p->path), "%s/bus.sock", p->dir);
    snprintf(p->addr, sizeof(p->addr), "unix:%s", p->path);
    p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->lfd, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", p->path);
    ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)&un, sizeof(un)), 0);
    ck_assert_int_eq(listen(p->lfd, 4), 0);
    peer_spawn(p);
    return p;
}

/* A loopback TCP peer; NULL when the address family is not available. */
static struct peer *peer_tcp(script_fn script, int arg, bool v6)
{
    struct peer *p = calloc(1, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    p->fd = -1;
    p->script = script;
    p->arg = arg;
    p->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    }
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&ss, len) != 0 ||
        listen(p->lfd, 4) != 0 ||
        getsockname(p->lfd, (struct sockaddr *)&ss, &len) != 0) {
        ck_assert_msg(v6, "IPv4 loopback unavailable: %s", strerror(errno));
        if (p->lfd >= 0)
            close(p->lfd);
        free(p);
        return NULL;
    }
    unsigned port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                             : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(p->addr, sizeof(p->addr), v6 ? "tcp:[::1]:%u" : "tcp:127.0.0.1:%u", port);
    peer_spawn(p);
    return p;
}

/* Joins the script, asserts it saw what it expected, cleans up. */
static void peer_end(struct peer *p)
{
    ck_assert_int_eq(pthread_join(p->th, NULL), 0);
    if (p->fd >= 0)
        close(p->fd);
    close(p->lfd);
    if (p->path[0])
        unlink(p->path);
    if (p->dir[0])
        rmdir(p->dir);
    char bad[sizeof(p->bad)];
    memcpy(bad, p->bad, sizeof(bad));
    free(p);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
}

static struct fidbus_client *connect_ok(struct peer *p, int timeout_ms)
{
    struct fidbus_client_opts o = {.timeout_ms = timeout_ms};
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, p->addr, &o);
    ck_assert_msg(rc == 0, "connect %s: %s", p->addr, fidbus_strerror(rc));
    ck_assert_ptr_nonnull(c);
    return c;
}

/* ------------------------------------------------------------ scripts */

/* HELLO, then leave the socket to the test (it sets p->fd). */
static void s_handover(struct peer *p, int fd)
{
    send_hello(p, fd, 1, NULL, 0, 0);
}

static void s_hello_wait(struct peer *p, int fd)
{
    send_hello(p, fd, (uint64_t)p->arg, NULL, 0, 0);
    wait_eof(fd);
    close(fd);
    p->fd = -1;
}

/* Answers one acked publish with ACK(result = p->arg). */
static void s_ack(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PUBLISH);
        PEER_CHECK(p, p->msg.flags & FIDBUS_FLAG_ACK);
        PEER_CHECK(p, fidbus_msg_has(&p->msg, FIDBUS_K_SEQ));
        send_ack(p, fd, p->msg.seq, (uint64_t)p->arg, 0);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Answers one acked publish with ERROR(code = p->arg). */
static void s_error(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b)) {
        bool failed = p->arg == FIDBUS_HANDLER_FAILED;
        send_error(p, fd, true, p->msg.seq, (uint64_t)p->arg,
                   failed ? "handler demo.x failed" : "no route matches 'x'", failed, 1,
                   0);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Everything one byte per write, with an unrelated ERROR before the ACK. */
static void s_split(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 1);
    if (recv_msg(p, fd, &b)) {
        send_error(p, fd, true, 999, FIDBUS_INVALID, "bad tag value", false, 0, 1);
        send_ack(p, fd, p->msg.seq, 3, 1);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Reads one frame, then hangs up without answering. */
static void s_close(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    recv_msg(p, fd, &b);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Reads whatever comes and never answers. */
static void s_silent(struct peer *p, int fd)
{
    send_hello(p, fd, 1, NULL, 0, 0);
    wait_eof(fd);
    close(fd);
    p->fd = -1;
}

static const uint8_t test_key[] = "0123456789abcdef0123456789abcdef";
static const uint8_t test_nonce[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                                       9, 10, 11, 12, 13, 14, 15, 16};

/* HELLO with a nonce; checks AUTH, then acks the PING or refuses. */
static void s_auth(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, test_nonce, sizeof(test_nonce), 0);
    if (p->arg == 0 || !recv_msg(p, fd, &b)) {
        wait_eof(fd); /* the client is expected to give up */
        goto out;
    }
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), test_key, sizeof(test_key) - 1, test_nonce, sizeof(test_nonce),
         mac, &mac_len);
    PEER_CHECK(p, p->msg.type == FIDBUS_MSG_AUTH);
    p->mac_ok = p->msg.mac.len == mac_len && memcmp(p->msg.mac.ptr, mac, mac_len) == 0;
    p->name_ok = p->msg.name.len == 4 && memcmp(p->msg.name.ptr, "unit", 4) == 0;
    if (!p->mac_ok) {
        send_error(p, fd, false, 0, FIDBUS_UNAUTHORIZED, "wrong mac", false, 0, 0);
        goto out;
    }
    if (recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
        send_ack(p, fd, p->msg.seq, 0, 0);
    }
    wait_eof(fd);
out:
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* One REQUEST: "ok" gets REPLY code 0 with result [1, 2]; others NOT_FOUND. */
static void s_request(struct peer *p, int fd)
{
    static const uint8_t result[] = {0x82, 0x01, 0x02};
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_REQUEST);
        snprintf(p->command, sizeof(p->command), "%.*s", (int)p->msg.command.len,
                 (const char *)p->msg.command.ptr);
        /* args arrive byte-exact: the test sent {"name": "r"} */
        static const uint8_t args[] = {0xa1, 0x64, 'n', 'a', 'm', 'e', 0x61, 'r'};
        PEER_CHECK(p, p->msg.args.len == sizeof(args) &&
                          memcmp(p->msg.args.ptr, args, sizeof(args)) == 0);
        bool ok = strcmp(p->command, "ok") == 0;
        struct fidbus_msg_out o = {
            .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                       FIDBUS_BIT(FIDBUS_K_CODE) |
                       (ok ? FIDBUS_BIT(FIDBUS_K_RESULT) : FIDBUS_BIT(FIDBUS_K_MESSAGE)),
            .type = FIDBUS_MSG_REPLY,
            .seq = p->msg.seq,
            .code = ok ? 0 : FIDBUS_NOT_FOUND,
            .result = {result, sizeof(result)},
            .message = "no such route 'r'",
        };
        send_msg(p, fd, &o, 0);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Two pipelined publishes (seq 1 and 2): ACK for 1, ERROR for 2. */
static void s_pipeline(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b) && recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.seq == 2);
        send_ack(p, fd, 1, 4, 0);
        send_error(p, fd, true, 2, FIDBUS_NO_ROUTE, "no route matches 'b'", false, 0, 0);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* Answers two pipelined publishes and a seq-less ERROR before the PING's
 * ACK, then one more publish and PING, all in one go each. */
#define TOP (UINT64_C(1) << 63)
static void s_kept(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b) && recv_msg(p, fd, &b) && recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
        uint64_t ping = p->msg.seq;
        send_ack(p, fd, TOP | 1, 4, 0);
        send_error(p, fd, true, TOP | 2, FIDBUS_NO_ROUTE, "no route matches 'b'", false,
                   0, 0);
        send_error(p, fd, false, 0, FIDBUS_NO_ROUTE, "no route matches 'c'", false, 0, 0);
        send_ack(p, fd, ping, 0, 0);
    }
    if (recv_msg(p, fd, &b) && recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
        uint64_t ping = p->msg.seq;
        send_error(p, fd, true, TOP | 3, FIDBUS_NO_ROUTE, "no route matches 'd'", false,
                   0, 0);
        send_ack(p, fd, ping, 0, 0);
    }
    wait_eof(fd);
    fidbus_buf_free(&b);
    close(fd);
    p->fd = -1;
}

/* ------------------------------------------------ reconnecting scripts */

/* The next connection on the listening socket, or -1 after PEER_WAIT_MS. */
static int accept_next(struct peer *p)
{
    struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
    if (poll(&pf, 1, PEER_WAIT_MS) <= 0) {
        peer_fail(p, __LINE__, "the client did not reconnect");
        return -1;
    }
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0)
        peer_fail(p, __LINE__, "accept: %s", strerror(errno));
    return fd;
}

/* HELLO with a nonce, then the client's AUTH (checked) and PING (acked). */
static bool auth_exchange(struct peer *p, int fd, struct fidbus_buf *b)
{
    send_hello(p, fd, 1, test_nonce, sizeof(test_nonce), 0);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), test_key, sizeof(test_key) - 1, test_nonce, sizeof(test_nonce),
         mac, &mac_len);
    if (!recv_msg(p, fd, b))
        return false;
    PEER_CHECK(p, p->msg.type == FIDBUS_MSG_AUTH);
    PEER_CHECK(p, p->msg.mac.len == mac_len && memcmp(p->msg.mac.ptr, mac, mac_len) == 0);
    if (!recv_msg(p, fd, b))
        return false;
    PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
    send_ack(p, fd, p->msg.seq, 0, 0);
    return true;
}

/*
 * Auth on both connections. The first takes an acked publish and hangs up
 * without answering; the second must get that same frame again (same seq)
 * after a fresh AUTH, and answers it with ACK(result 7).
 */
static void s_resend(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    if (auth_exchange(p, fd, &b) && recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PUBLISH);
        PEER_CHECK(p, strcmp(p->event, "first.try") == 0);
    }
    uint64_t seq = p->seq;
    close(fd);
    p->fd = fd = accept_next(p);
    if (fd >= 0 && auth_exchange(p, fd, &b) && recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PUBLISH);
        PEER_CHECK(p, p->msg.flags & FIDBUS_FLAG_ACK);
        PEER_CHECK(p, p->msg.seq == seq);
        PEER_CHECK(p, strcmp(p->event, "first.try") == 0);
        send_ack(p, fd, p->msg.seq, 7, 0);
        wait_eof(fd);
    }
    if (fd >= 0)
        close(fd);
    p->fd = -1;
    fidbus_buf_free(&b);
}

/*
 * The first connection answers one PING and hangs up while the client is
 * idle; the second must carry the un-acked publishes buffered meanwhile,
 * in order, then a PING. p->arg counts the publishes the script saw.
 */
static void s_idle_close(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    if (recv_msg(p, fd, &b)) {
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
        send_ack(p, fd, p->msg.seq, 0, 0);
    }
    close(fd);
    p->fd = fd = accept_next(p);
    if (fd >= 0) {
        send_hello(p, fd, 1, NULL, 0, 0);
        static const char *const want[] = {"buffered.one", "buffered.two"};
        for (int i = 0; i < 2 && recv_msg(p, fd, &b); i++) {
            PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PUBLISH);
            PEER_CHECK(p, strcmp(p->event, want[i]) == 0);
            p->arg++;
        }
        if (recv_msg(p, fd, &b)) {
            PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PING);
            send_ack(p, fd, p->msg.seq, 0, 0);
        }
        wait_eof(fd);
        close(fd);
    }
    p->fd = -1;
    fidbus_buf_free(&b);
}

/*
 * The first connection is never read (the client's writes back up), and is
 * dropped when the second arrives; on the second the script reads
 * publishes "n.I" until a PING, checking that the numbers run without a
 * gap, and records the first in p->first and how many in p->arg.
 */
static void s_backlog(struct peer *p, int fd)
{
    struct fidbus_buf b = {0};
    send_hello(p, fd, 1, NULL, 0, 0);
    int fd2 = accept_next(p);
    close(fd);
    p->fd = fd = fd2;
    if (fd < 0)
        return;
    send_hello(p, fd, 1, NULL, 0, 0);
    long next = -1;
    while (recv_msg(p, fd, &b)) {
        if (p->msg.type == FIDBUS_MSG_PING) {
            send_ack(p, fd, p->msg.seq, 0, 0);
            break;
        }
        long n = strncmp(p->event, "n.", 2) == 0 ? strtol(p->event + 2, NULL, 10) : -2;
        PEER_CHECK(p, p->msg.type == FIDBUS_MSG_PUBLISH);
        PEER_CHECK(p, next < 0 || n == next);
        if (next < 0)
            p->first = n;
        next = n + 1;
        p->arg++;
    }
    wait_eof(fd);
    close(fd);
    p->fd = -1;
    fidbus_buf_free(&b);
}

/* HELLO, then gone for good: the connection and the listener close. */
static void s_vanish(struct peer *p, int fd)
{
    send_hello(p, fd, 1, NULL, 0, 0);
    close(fd);
    p->fd = -1;
    close(p->lfd);
    p->lfd = -1;
}

/* ------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool readable(int fd)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    return poll(&pf, 1, 0) == 1;
}

/* Connects to a handover peer and takes its socket. */
static struct fidbus_client *connect_handover(struct peer **pp, int *srv)
{
    struct peer *p = peer_unix(s_handover, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_int_eq(pthread_join(p->th, NULL), 0);
    ck_assert_msg(p->bad[0] == '\0', "%s", p->bad);
    *srv = p->fd;
    *pp = p;
    return c;
}

static void handover_end(struct peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    close(p->lfd);
    unlink(p->path);
    rmdir(p->dir);
    free(p);
}

/* --------------------------------------------------------------- tests */

START_TEST(test_client_bad_addresses)
{
    static const char *const bad[] = {
        "",           "unix:",          "tcp:",
        "tcp:host",   "tcp::80",        "tcp:host:",
        "tcp:host:0", "tcp:host:65536", "tcp:host:12a",
        "tcp:[::1",   "tcp:[::1]80",    "tcp:[]:80",
        "tcp:::1:80", "udp:x",          "http://x",
    };
    struct fidbus_client *c = (struct fidbus_client *)1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(fidbus_client_connect(&c, bad[i], NULL) == -EINVAL, "%s", bad[i]);
        ck_assert_ptr_null(c);
    }
    ck_assert_int_eq(fidbus_client_connect(&c, NULL, NULL), -EINVAL);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    ck_assert_int_eq(fidbus_client_connect(&c, longpath, NULL), -ENAMETOOLONG);
    ck_assert_int_eq(fidbus_client_connect(&c, "unix:/nonexistent/fidbus/bus.sock", NULL),
                     -ENOENT);
}
END_TEST

START_TEST(test_client_connect_unix_and_plain_path)
{
    struct peer *p = peer_unix(s_hello_wait, 1);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_str_eq(fidbus_client_server_name(c), "test-peer");
    ck_assert_int_ge(fidbus_client_fd(c), 0);
    fidbus_client_close(c);
    peer_end(p);

    p = peer_unix(s_hello_wait, 1);
    struct fidbus_client_opts o = {0};
    ck_assert_int_eq(fidbus_client_connect(&c, p->path, &o), 0); /* no "unix:" */
    ck_assert_str_eq(fidbus_client_server_name(c), "test-peer");
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_connect_tcp)
{
    struct peer *p = peer_tcp(s_ack, 1, false);
    struct fidbus_client *c = connect_ok(p, 0);
    uint64_t n = 0;
    ck_assert_int_eq(fidbus_publish_ack(c, "over.tcp", NULL, 0, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 1);
    fidbus_client_close(c);
    peer_end(p);

    p = peer_tcp(s_hello_wait, 1, true);
    if (p) { /* IPv6 loopback may be disabled in a container */
        c = connect_ok(p, 0);
        fidbus_client_close(c);
        peer_end(p);
    }
}
END_TEST

START_TEST(test_client_connect_refused)
{
    /* A bound socket that never listens: connect is refused at once. */
    char dir[] = "/tmp/fidbus-test-client-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[100], addr[140];
    snprintf(path, sizeof(path), "%s/bus.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    struct fidbus_client *c;
    ck_assert_int_eq(fidbus_client_connect(&c, addr, NULL), -ECONNREFUSED);
    close(fd);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_client_hello_wrong_version)
{
    struct peer *p = peer_unix(s_hello_wait, 2);
    struct fidbus_client *c = (struct fidbus_client *)1;
    ck_assert_int_eq(fidbus_client_connect(&c, p->addr, NULL), -EPROTONOSUPPORT);
    ck_assert_ptr_null(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_auth)
{
    /* a nonce and a key: AUTH with the right HMAC and our name, then PING */
    struct peer *p = peer_unix(s_auth, 1);
    struct fidbus_client_opts o = {
        .name = "unit",
        .key = test_key,
        .key_len = sizeof(test_key) - 1,
    };
    struct fidbus_client *c = NULL;
    ck_assert_int_eq(fidbus_client_connect(&c, p->addr, &o), 0);
    fidbus_client_close(c);
    ck_assert(p->mac_ok);
    ck_assert(p->name_ok);
    peer_end(p);

    /* the wrong key: the server's seq-less UNAUTHORIZED is the answer */
    p = peer_unix(s_auth, 1);
    o.key_len = 5;
    ck_assert_int_eq(fidbus_client_connect(&c, p->addr, &o),
                     FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED));
    ck_assert_ptr_null(c);
    peer_end(p);

    /* a nonce and no key: refused without sending anything */
    p = peer_unix(s_auth, 0);
    ck_assert_int_eq(fidbus_client_connect(&c, p->addr, NULL),
                     FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED));
    peer_end(p);
}
END_TEST

START_TEST(test_client_publish_buffers_until_flush)
{
    struct peer *p;
    int srv;
    struct fidbus_client *c = connect_handover(&p, &srv);
    static const struct fidbus_tag tags[] = {{"region", "eu"}, {"version", "v2"}};
    static const uint8_t payload[] = {0xa1, 0x61, 'n', 0x01}; /* {"n": 1} */

    ck_assert_int_eq(
        fidbus_publish(c, "order.created", tags, 2, payload, sizeof(payload)), 0);
    ck_assert_int_eq(fidbus_publish(c, "bare", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_publish_seq(c, 7, 0, "with.seq", NULL, 0, NULL, 0), 0);
    ck_assert(!readable(srv)); /* buffered, nothing sent yet */
    ck_assert_int_eq(fidbus_flush(c), 0);

    struct fidbus_buf want = {0};
    struct fidbus_msg_out o1 = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT) |
                   FIDBUS_BIT(FIDBUS_K_TAGS) | FIDBUS_BIT(FIDBUS_K_PAYLOAD),
        .type = FIDBUS_MSG_PUBLISH,
        .event = "order.created",
        .tags = tags,
        .ntags = 2,
        .payload = {payload, sizeof(payload)},
    };
    struct fidbus_msg_out o2 = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT),
        .type = FIDBUS_MSG_PUBLISH,
        .event = "bare",
    };
    struct fidbus_msg_out o3 = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT) |
                   FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PUBLISH,
        .event = "with.seq",
        .seq = 7,
    };
    ck_assert_int_eq(fidbus_msg_encode(&want, &o1), 0);
    ck_assert_int_eq(fidbus_msg_encode(&want, &o2), 0);
    ck_assert_int_eq(fidbus_msg_encode(&want, &o3), 0);
    uint8_t *got = malloc(want.len);
    ck_assert(read_exact(srv, got, want.len));
    ck_assert_mem_eq(got, want.data, want.len);
    ck_assert(!readable(srv)); /* and nothing else */
    free(got);
    fidbus_buf_free(&want);
    fidbus_client_close(c);
    handover_end(p);
}
END_TEST

START_TEST(test_client_publish_sends_above_64k)
{
    struct peer *p;
    int srv;
    struct fidbus_client *c = connect_handover(&p, &srv);
    uint8_t payload[1003] = {0x59, 0x03, 0xe8}; /* a 1000-byte bstr */

    struct fidbus_buf one = {0};
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT) |
                   FIDBUS_BIT(FIDBUS_K_PAYLOAD),
        .type = FIDBUS_MSG_PUBLISH,
        .event = "bulk",
        .payload = {payload, sizeof(payload)},
    };
    ck_assert_int_eq(fidbus_msg_encode(&one, &o), 0);
    size_t n = 65536 / one.len + 1; /* the first count above 64 KiB */
    for (size_t i = 0; i + 1 < n; i++)
        ck_assert_int_eq(fidbus_publish(c, "bulk", NULL, 0, payload, sizeof(payload)), 0);
    ck_assert(!readable(srv));
    ck_assert_int_eq(fidbus_publish(c, "bulk", NULL, 0, payload, sizeof(payload)), 0);
    ck_assert(readable(srv));

    uint8_t *got = malloc(n * one.len);
    ck_assert(read_exact(srv, got, n * one.len));
    for (size_t i = 0; i < n; i++)
        ck_assert_mem_eq(got + i * one.len, one.data, one.len);
    ck_assert(!readable(srv));
    free(got);
    fidbus_buf_free(&one);
    fidbus_client_close(c);
    handover_end(p);
}
END_TEST

START_TEST(test_client_invalid_publish_sends_nothing)
{
    struct peer *p;
    int srv;
    struct fidbus_client *c = connect_handover(&p, &srv);
    char long_id[300];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[256] = '\0';
    struct fidbus_tag tags[FIDBUS_MAX_TAGS + 1];
    char keys[FIDBUS_MAX_TAGS + 1][8];
    for (size_t i = 0; i <= FIDBUS_MAX_TAGS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        tags[i].key = keys[i];
        tags[i].value = "v";
    }
    struct fidbus_tag bad_key[] = {{"a b", "v"}};
    struct fidbus_tag dup[] = {{"k", "1"}, {"k", "2"}};
    struct fidbus_tag bad_utf8[] = {{"k", "\xff"}};
    uint64_t n = 99;

    ck_assert_int_eq(fidbus_publish(c, "", NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, NULL, NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "bad id", NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "bad/id", NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, long_id, NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", tags, FIDBUS_MAX_TAGS + 1, NULL, 0),
                     -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", bad_key, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", dup, 2, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", bad_utf8, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(fidbus_publish(c, "ok", NULL, 0, NULL, 3), -EINVAL);
    ck_assert_int_eq(fidbus_publish_ack(c, "bad id", NULL, 0, NULL, 0, &n), -EINVAL);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(fidbus_publish_seq(c, 1, 0, "ok", dup, 2, NULL, 0), -EINVAL);
    /* the limits themselves are fine */
    long_id[255] = '\0';
    ck_assert_int_eq(fidbus_publish(c, long_id, tags, FIDBUS_MAX_TAGS, NULL, 0), 0);

    ck_assert(!readable(srv));
    fidbus_client_close(c); /* flushes the one valid publish */
    uint8_t hdr[4];
    ck_assert(read_exact(srv, hdr, 4));
    handover_end(p);
}
END_TEST

START_TEST(test_client_publish_ack_result)
{
    struct peer *p = peer_unix(s_ack, 2);
    struct fidbus_client *c = connect_ok(p, 0);
    static const struct fidbus_tag tags[] = {{"user", "42"}};
    uint64_t n = 0;
    ck_assert_int_eq(fidbus_publish_ack(c, "order.paid", tags, 1, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 0);
    ck_assert_str_eq(fidbus_client_last_error(c), "");
    fidbus_client_close(c);
    ck_assert_str_eq(p->event, "order.paid");
    ck_assert_uint_eq(p->ntags, 1);
    peer_end(p);
}
END_TEST

START_TEST(test_client_protocol_error)
{
    struct peer *p = peer_unix(s_error, FIDBUS_NO_ROUTE);
    struct fidbus_client *c = connect_ok(p, 0);
    uint64_t n = 7;
    int rc = fidbus_publish_ack(c, "x", NULL, 0, NULL, 0, &n);
    ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_NO_ROUTE));
    ck_assert_int_eq(fidbus_error_code(rc), FIDBUS_NO_ROUTE);
    ck_assert_uint_eq(n, 0);
    ck_assert_str_eq(fidbus_client_last_error(c), "no route matches 'x'");
    ck_assert_int_eq(fidbus_client_last_error_code(c), FIDBUS_NO_ROUTE);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 0); /* it was the answer */
    fidbus_client_close(c);
    peer_end(p);

    /* HANDLER_FAILED still reports how many handlers succeeded */
    p = peer_unix(s_error, FIDBUS_HANDLER_FAILED);
    c = connect_ok(p, 0);
    rc = fidbus_publish_ack(c, "x", NULL, 0, NULL, 0, &n);
    ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_HANDLER_FAILED));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(fidbus_client_last_error(c), "handler demo.x failed");
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_split_answers_and_async_error)
{
    struct peer *p = peer_unix(s_split, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_str_eq(fidbus_client_server_name(c), "test-peer");
    uint64_t n = 0;
    ck_assert_int_eq(fidbus_publish_ack(c, "x", NULL, 0, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 1);
    ck_assert_str_eq(fidbus_client_last_error(c), "bad tag value");
    ck_assert_int_eq(fidbus_client_last_error_code(c), FIDBUS_INVALID);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_server_close)
{
    struct peer *p = peer_unix(s_close, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_int_eq(fidbus_publish_ack(c, "x", NULL, 0, NULL, 0, NULL), -ECONNRESET);
    /* the connection stays dead, without waiting */
    ck_assert_int_eq(fidbus_ping(c), -ECONNRESET);
    ck_assert_int_eq(fidbus_publish(c, "x", NULL, 0, NULL, 0), -ECONNRESET);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_timeout)
{
    struct peer *p = peer_unix(s_silent, 0);
    struct fidbus_client *c = connect_ok(p, 100);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(fidbus_ping(c), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    ck_assert_int_ge(took, 95);
    ck_assert_int_lt(took, 2000);
    /* a timeout leaves the stream in step: the client can still be used */
    ck_assert_int_eq(fidbus_publish_ack(c, "x", NULL, 0, NULL, 0, NULL), -ETIMEDOUT);
    struct fidbus_answer a;
    ck_assert_int_eq(fidbus_client_recv(c, &a, 0), -ETIMEDOUT);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_request)
{
    static const uint8_t args[] = {0xa1, 0x64, 'n', 'a', 'm', 'e', 0x61, 'r'};
    struct peer *p = peer_unix(s_request, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    uint8_t *res = NULL;
    size_t len = 0;
    ck_assert_int_eq(fidbus_request(c, "ok", args, sizeof(args), &res, &len), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(res, "\x82\x01\x02", 3);
    free(res);
    fidbus_client_close(c);
    ck_assert_str_eq(p->command, "ok");
    peer_end(p);

    p = peer_unix(s_request, 0);
    c = connect_ok(p, 0);
    int rc = fidbus_request(c, "route.show", args, sizeof(args), &res, &len);
    ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_NOT_FOUND));
    ck_assert_ptr_null(res);
    ck_assert_str_eq(fidbus_client_last_error(c), "no such route 'r'");
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_pipeline_recv)
{
    struct peer *p = peer_unix(s_pipeline, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_int_eq(fidbus_publish_seq(c, 1, FIDBUS_FLAG_ACK, "a", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_publish_seq(c, 2, FIDBUS_FLAG_ACK, "b", NULL, 0, NULL, 0), 0);
    struct fidbus_answer a;
    ck_assert_int_eq(fidbus_client_recv(c, &a, -1), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(a.seq, 1);
    ck_assert_uint_eq(a.result, 4);
    ck_assert_int_eq(fidbus_client_recv(c, &a, -1), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ERROR);
    ck_assert_uint_eq(a.seq, 2);
    ck_assert_uint_eq(a.code, FIDBUS_NO_ROUTE);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 0);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

/* Answers fidbus_ping reads on the way to its own ACK are kept, in order,
 * for fidbus_client_recv (an ERROR with its seq and message); a seq-less
 * ERROR is only counted; what is kept at close is freed (ASan). */
START_TEST(test_client_ping_keeps_answers)
{
    struct peer *p = peer_unix(s_kept, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    ck_assert_int_eq(
        fidbus_publish_seq(c, TOP | 1, FIDBUS_FLAG_ACK, "a", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(
        fidbus_publish_seq(c, TOP | 2, FIDBUS_FLAG_ACK, "b", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    ck_assert_uint_eq(fidbus_client_async_errors(c), 2);
    ck_assert_str_eq(fidbus_client_last_error(c), "no route matches 'c'");
    struct fidbus_answer a;
    ck_assert_int_eq(fidbus_client_recv(c, &a, 100), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(a.seq, TOP | 1);
    ck_assert_uint_eq(a.result, 4);
    ck_assert_int_eq(fidbus_client_recv(c, &a, 100), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ERROR);
    ck_assert_uint_eq(a.seq, TOP | 2);
    ck_assert_uint_eq(a.code, FIDBUS_NO_ROUTE);
    ck_assert_str_eq(fidbus_client_last_error(c), "no route matches 'b'");
    ck_assert_int_eq(fidbus_client_recv(c, &a, 100), -ETIMEDOUT);
    /* one more kept, never received: fidbus_client_close frees it */
    ck_assert_int_eq(
        fidbus_publish_seq(c, TOP | 3, FIDBUS_FLAG_ACK, "d", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

static struct fidbus_client *connect_reconnecting(struct peer *p, int timeout_ms,
                                                  uint32_t max_frame, size_t buffer,
                                                  bool key)
{
    struct fidbus_client_opts o = {
        .timeout_ms = timeout_ms,
        .max_frame = max_frame,
        .reconnect_max_ms = 100,
        .reconnect_buffer = buffer,
    };
    if (key) {
        o.key = test_key;
        o.key_len = sizeof(test_key) - 1;
        o.name = "unit";
    }
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, p->addr, &o);
    ck_assert_msg(rc == 0, "connect %s: %s", p->addr, fidbus_strerror(rc));
    return c;
}

/* Waits until the peer's end of the client's socket is closed. */
static void wait_hangup(struct fidbus_client *c)
{
    struct pollfd pf = {.fd = fidbus_client_fd(c), .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, PEER_WAIT_MS), 1);
}

START_TEST(test_client_reconnect_resends_unanswered)
{
    struct peer *p = peer_unix(s_resend, 0);
    struct fidbus_client *c = connect_reconnecting(p, 0, 0, 0, true);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 0);
    uint64_t n = 0;
    ck_assert_int_eq(fidbus_publish_ack(c, "first.try", NULL, 0, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 7);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 1);
    ck_assert_uint_eq(fidbus_client_unanswered(c), 0);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_reconnect_after_idle_close)
{
    struct peer *p = peer_unix(s_idle_close, 0);
    struct fidbus_client *c = connect_reconnecting(p, 0, 0, 0, false);
    ck_assert_int_eq(fidbus_ping(c), 0);
    wait_hangup(c);
    /* Buffered on the dead connection: nothing of them was written. */
    ck_assert_int_eq(fidbus_publish(c, "buffered.one", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_publish(c, "buffered.two", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 1);
    fidbus_client_close(c);
    int seen = p->arg;
    peer_end(p);
    ck_assert_int_eq(seen, 2);
}
END_TEST

START_TEST(test_client_reconnect_carries_unwritten_publishes)
{
    struct peer *p = peer_unix(s_backlog, 0);
    struct fidbus_client *c = connect_reconnecting(p, 300, 0, 4u << 20, false);
    static uint8_t payload[1003] = {0x59, 0x03, 0xe8}; /* a 1000-byte string */
    /* A small send buffer: the first write-out (64 KiB) stops mid-frame. */
    int sndbuf = 16384;
    ck_assert_int_eq(
        setsockopt(fidbus_client_fd(c), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf),
        0);
    /* Publish until the socket is full and a write-out timed out (the
     * event that said so is queued all the same). */
    int n = 0, rc = 0;
    while (rc == 0 && n < 3000) {
        char ev[32];
        snprintf(ev, sizeof ev, "n.%d", n++);
        rc = fidbus_publish(c, ev, NULL, 0, payload, sizeof payload);
    }
    ck_assert_int_eq(rc, -ETIMEDOUT);
    /* The connection breaks under the client: what was written to it is
     * gone, what was not (whole frames only) goes on the next one. */
    ck_assert_int_eq(shutdown(fidbus_client_fd(c), SHUT_RDWR), 0);
    ck_assert_int_eq(fidbus_ping(c), 0);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 1);
    fidbus_client_close(c);
    long first = p->first;
    int seen = p->arg;
    peer_end(p);
    ck_assert_int_gt(first, 0);             /* some were written before */
    ck_assert_int_eq((int)first + seen, n); /* and the rest all came, in order */
    ck_assert_int_gt(seen, 0);
}
END_TEST

START_TEST(test_client_reconnect_buffer_bound)
{
    struct peer *p = peer_unix(s_vanish, 0);
    /* max_frame 64: the bound may be as small as 68 bytes; ask for 256. */
    struct fidbus_client *c = connect_reconnecting(p, 200, 64, 256, false);
    wait_hangup(c);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(fidbus_ping(c), -ETIMEDOUT); /* retried for its timeout */
    ck_assert_int_ge(mono_ms() - t0, 190);
    ck_assert_int_eq(fidbus_client_fd(c), -1);

    /* Acked publishes are kept until the bound, then refused. */
    int kept = 0, rc = 0;
    for (uint64_t seq = 1; seq <= 100 && rc == 0; seq++) {
        rc = fidbus_publish_seq(c, seq | (UINT64_C(1) << 63), FIDBUS_FLAG_ACK,
                                "kept.event", NULL, 0, NULL, 0);
        if (rc == 0)
            kept++;
    }
    ck_assert_int_eq(rc, -ENOBUFS);
    ck_assert_int_gt(kept, 2);
    ck_assert_int_lt(kept, 100);
    ck_assert_uint_eq(fidbus_client_unanswered(c), (size_t)kept);
    ck_assert_int_eq(fidbus_publish(c, "kept.event", NULL, 0, NULL, 0), -ENOBUFS);
    ck_assert_int_eq(fidbus_publish_ack(c, "kept.event", NULL, 0, NULL, 0, NULL),
                     -ENOBUFS);
    ck_assert_str_eq(fidbus_strerror(-ENOBUFS), "No buffer space available");
    ck_assert_uint_eq(fidbus_client_unanswered(c), (size_t)kept);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 0);
    fidbus_client_close(c); /* does not wait for a reconnection */
    peer_end(p);
}
END_TEST

START_TEST(test_client_no_reconnect_by_default)
{
    struct peer *p = peer_unix(s_vanish, 0);
    struct fidbus_client *c = connect_ok(p, 0);
    wait_hangup(c);
    ck_assert_int_eq(fidbus_ping(c), -ECONNRESET);
    ck_assert_int_eq(fidbus_publish(c, "x", NULL, 0, NULL, 0), -ECONNRESET);
    ck_assert_uint_eq(fidbus_client_reconnects(c), 0);
    ck_assert_uint_eq(fidbus_client_unanswered(c), 0);
    fidbus_client_close(c);
    peer_end(p);
}
END_TEST

START_TEST(test_client_strerror)
{
    ck_assert_str_eq(fidbus_strerror(0), "success");
    ck_assert_str_eq(fidbus_strerror(-ECONNRESET), "Connection reset by peer");
    ck_assert_str_eq(fidbus_strerror(-ETIMEDOUT), "Connection timed out");
    ck_assert_str_eq(fidbus_strerror(FIDBUS_EPROTO_CODE(FIDBUS_NO_ROUTE)),
                     "NO_ROUTE: no route matched the event");
    for (int code = FIDBUS_MALFORMED; code <= FIDBUS_INTERNAL; code++) {
        const char *s = fidbus_strerror(FIDBUS_EPROTO_CODE(code));
        const char *name = fidbus_code_name(code);
        ck_assert_msg(strncmp(s, name, strlen(name)) == 0 && s[strlen(name)] == ':',
                      "%d: %s", code, s);
    }
    ck_assert_str_eq(fidbus_strerror(FIDBUS_EPROTO_CODE(200)),
                     "UNKNOWN: unknown protocol error code");
    ck_assert_ptr_nonnull(fidbus_strerror(-99999));
    ck_assert_ptr_nonnull(fidbus_strerror(-4000));
}
END_TEST

static void check_json(const char *json, const char *hex)
{
    uint8_t *out = NULL;
    size_t len = 0;
    char err[256] = "";
    int rc = fbctl_json_to_cbor(json, strlen(json), &out, &len, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: %s", json, err);
    char got[512] = "";
    for (size_t i = 0; i < len && 2 * i + 2 < sizeof(got); i++)
        snprintf(got + 2 * i, 3, "%02x", out[i]);
    ck_assert_msg(strcmp(got, hex) == 0, "%s: got %s, want %s", json, got, hex);
    free(out);
}

START_TEST(test_client_json_cbor)
{
    check_json("{\"a\": [1, -2, 1.5, true, false, null, \"x\"]}",
               "a1616187012"
               "1fa3fc00000f5f4f66178");
    check_json("0", "00");
    check_json("23", "17");
    check_json("24", "1818");
    check_json("-1", "20");
    check_json("4294967296", "1b0000000100000000");
    check_json("-4294967297", "3b0000000100000000");
    check_json("9223372036854775807", "1b7fffffffffffffff");
    check_json("-9223372036854775808", "3b7fffffffffffffff");
    check_json("1.0", "fa3f800000");         /* a real stays a float */
    check_json("0.1", "fb3fb999999999999a"); /* not exact in float32 */
    check_json("\"\"", "60");
    check_json("\"h\\u00e9\"", "6368c3a9");
    check_json("\"a\\u0000b\"", "63610062");
    check_json("[]", "80");
    check_json("{}", "a0");
    check_json("{\"z\": 1, \"a\": 2}", "a2617a01616102"); /* text order kept */

    static const char *const bad[] = {"[1, 2", "{\"a\": 1, \"a\": 2}", "", "tru", "1 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t *out = (uint8_t *)1;
        size_t len = 1;
        char err[256] = "";
        ck_assert_int_eq(
            fbctl_json_to_cbor(bad[i], strlen(bad[i]), &out, &len, err, sizeof(err)), -1);
        ck_assert_ptr_null(out);
        ck_assert_msg(strncmp(err, "line 1, column ", 15) == 0, "%s", err);
        ck_assert_ptr_null(strchr(err, '\n'));
    }
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_client_bad_addresses);
    tcase_add_test(tc, test_client_connect_unix_and_plain_path);
    tcase_add_test(tc, test_client_connect_tcp);
    tcase_add_test(tc, test_client_connect_refused);
    tcase_add_test(tc, test_client_hello_wrong_version);
    tcase_add_test(tc, test_client_auth);
    tcase_add_test(tc, test_client_publish_buffers_until_flush);
    tcase_add_test(tc, test_client_publish_sends_above_64k);
    tcase_add_test(tc, test_client_invalid_publish_sends_nothing);
    tcase_add_test(tc, test_client_publish_ack_result);
    tcase_add_test(tc, test_client_protocol_error);
    tcase_add_test(tc, test_client_split_answers_and_async_error);
    tcase_add_test(tc, test_client_server_close);
    tcase_add_test(tc, test_client_timeout);
    tcase_add_test(tc, test_client_request);
    tcase_add_test(tc, test_client_pipeline_recv);
    tcase_add_test(tc, test_client_reconnect_resends_unanswered);
    tcase_add_test(tc, test_client_reconnect_after_idle_close);
    tcase_add_test(tc, test_client_reconnect_carries_unwritten_publishes);
    tcase_add_test(tc, test_client_reconnect_buffer_bound);
    tcase_add_test(tc, test_client_no_reconnect_by_default);
    tcase_add_test(tc, test_client_ping_keeps_answers);
    tcase_add_test(tc, test_client_strerror);
    tcase_add_test(tc, test_client_json_cbor);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
