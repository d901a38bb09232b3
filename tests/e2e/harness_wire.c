/*
 * End-to-end test harness, the talking half (see harness.h): reading what
 * plugins wrote, library and raw connections to the daemon, and a small
 * CBOR writer for hand-made frames. harness.c runs the daemon.
 *
 * Waits are on events (a socket or an inotify descriptor becoming
 * readable) with a deadline, never sleeps.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

/* ---------------------------------------------------- reading outputs */

bool fb_e2e_wait_contains(const char *path, const char *needle, int timeout_ms)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    ck_assert(slash != NULL);
    *slash = '\0';
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    ck_assert_msg(in >= 0, "inotify_init1: %s", strerror(errno));
    ck_assert_msg(inotify_add_watch(
                      in, dir, IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO) >= 0,
                  "inotify_add_watch %s: %s", dir, strerror(errno));
    uint64_t deadline = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    bool found = false;
    for (;;) {
        /* Check after the watch exists, so no change can slip between. */
        char *text = fb_e2e_read(path, NULL);
        found = text && strstr(text, needle);
        free(text);
        uint64_t now = fb_e2e_now_ms();
        if (found || now >= deadline)
            break;
        struct pollfd p = {.fd = in, .events = POLLIN};
        poll(&p, 1, (int)(deadline - now));
        char ev[4096];
        while (read(in, ev, sizeof ev) > 0)
            ;
    }
    close(in);
    return found;
}

/* Does line [b, e) contain "seq=SEQ" exactly? */
static bool line_has_seq(const char *b, const char *e, long long seq)
{
    for (const char *p = b; p + 4 <= e; p++) {
        if (memcmp(p, "seq=", 4) != 0)
            continue;
        if (p > b && (p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z')))
            continue;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p + 4, &end, 10);
        if (end != p + 4 && errno == 0 && (long long)v == seq)
            return true;
    }
    return false;
}

static const char *find_line(const char *event, long long seq, const char **from,
                             size_t *len)
{
    const char *p = *from;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        if (!e)
            e = p + strlen(p);
        size_t n = (size_t)(e - p);
        bool ok = memmem(p, n, event, strlen(event)) != NULL &&
                  (seq < 0 || line_has_seq(p, e, seq));
        const char *line = p;
        p = *e ? e + 1 : e;
        if (ok) {
            *from = p;
            *len = n;
            return line;
        }
    }
    *from = p;
    return NULL;
}

int fb_e2e_lines_with(const char *text, const char *event, long long seq)
{
    int count = 0;
    const char *from = text;
    size_t len;
    while (text && find_line(event, seq, &from, &len))
        count++;
    return count;
}

bool fb_e2e_has_line(const char *text, const char *const needles[])
{
    for (const char *p = text; p && *p;) {
        const char *e = strchr(p, '\n');
        if (!e)
            e = p + strlen(p);
        char *line = strndup(p, (size_t)(e - p));
        ck_assert_msg(line != NULL, "out of memory");
        bool all = true;
        for (size_t i = 0; needles[i] && all; i++)
            all = strcasestr(line, needles[i]) != NULL;
        free(line);
        if (all)
            return true;
        p = *e ? e + 1 : e;
    }
    return false;
}

char *fb_e2e_line_with(const char *text, const char *event, long long seq)
{
    const char *from = text;
    size_t len;
    const char *line = text ? find_line(event, seq, &from, &len) : NULL;
    if (!line)
        return NULL;
    char *s = strndup(line, len);
    ck_assert_msg(s != NULL, "out of memory");
    return s;
}

long long fb_e2e_json_count(const char *json, const char *key)
{
    if (!json)
        return -1;
    char quoted[300];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    for (const char *p = json; (p = strstr(p, quoted)) != NULL; p++) {
        const char *q = p + strlen(quoted);
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q != ':')
            continue; /* a value, not a key */
        q++;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q < '0' || *q > '9')
            return -1;
        return strtoll(q, NULL, 10);
    }
    return -1;
}

/* -------------------------------------------------- library connections */

static struct fidbus_client *connect_to(const char *addr,
                                        const struct fidbus_client_opts *o)
{
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, addr, o);
    ck_assert_msg(rc == 0, "fidbus_client_connect(%s): %s", addr, fidbus_strerror(rc));
    ck_assert(c != NULL);
    return c;
}

struct fidbus_client *fb_e2e_connect(const struct fb_e2e *t)
{
    return connect_to(t->bus_addr, NULL);
}

struct fidbus_client *fb_e2e_connect_tcp(const struct fb_e2e *t)
{
    ck_assert_msg(t->tcp_addr[0], "this daemon has no TCP listener");
    return connect_to(t->tcp_addr, NULL);
}

struct fidbus_client *fb_e2e_connect_control(const struct fb_e2e *t,
                                             const struct fidbus_client_opts *o)
{
    char addr[200];
    snprintf(addr, sizeof addr, "unix:%s", t->control);
    return connect_to(addr, o);
}

void fb_e2e_ping(struct fidbus_client *c)
{
    int rc = fidbus_ping(c);
    ck_assert_msg(rc == 0, "PING: %s", fidbus_strerror(rc));
}

void fb_e2e_publish_n(struct fidbus_client *c, const char *event, int n)
{
    static const uint8_t payload[] = {0x44, 1, 2, 3, 4}; /* h'01020304' */
    for (int i = 0; i < n; i++) {
        int rc = fidbus_publish(c, event, NULL, 0, payload, sizeof payload);
        ck_assert_msg(rc == 0, "publish %s #%d: %s", event, i, fidbus_strerror(rc));
    }
    int rc = fidbus_flush(c);
    ck_assert_msg(rc == 0, "flush: %s", fidbus_strerror(rc));
}

void fb_e2e_publish_ack(struct fidbus_client *c, const char *event, uint64_t want)
{
    uint64_t res = UINT64_MAX;
    int rc = fidbus_publish_ack(c, event, NULL, 0, NULL, 0, &res);
    ck_assert_msg(rc == 0, "publish_ack %s: %s (%s)", event, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    ck_assert_msg(res == want, "publish_ack %s: result %" PRIu64 ", expected %" PRIu64,
                  event, res, want);
}

/* ----------------------------------------------------- raw connections */

static struct fb_e2e_raw *raw_new(int fd)
{
    struct fb_e2e_raw *r = calloc(1, sizeof *r);
    ck_assert_msg(r != NULL, "out of memory");
    r->fd = fd;
    r->cap = 65536;
    r->buf = malloc(r->cap);
    ck_assert_msg(r->buf != NULL, "out of memory");
    return r;
}

struct fb_e2e_raw *fb_e2e_raw_unix(const struct fb_e2e *t)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa;
    fb_e2e_sun(&sa, t->bus);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s",
                  t->bus, strerror(errno));
    return raw_new(fd);
}

struct fb_e2e_raw *fb_e2e_raw_control(const struct fb_e2e *t)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa;
    fb_e2e_sun(&sa, t->control);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s",
                  t->control, strerror(errno));
    return raw_new(fd);
}

struct fb_e2e_raw *fb_e2e_raw_tcp(const struct fb_e2e *t)
{
    ck_assert_msg(t->tcp_addr[0], "this daemon has no TCP listener");
    const char *colon = strrchr(t->tcp_addr, ':');
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(colon + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s",
                  t->tcp_addr, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return raw_new(fd);
}

struct fb_e2e_raw *fb_e2e_raw_close(struct fb_e2e_raw *r)
{
    if (!r)
        return NULL;
    close(r->fd);
    free(r->buf);
    free(r->body);
    free(r);
    return NULL;
}

void fb_e2e_raw_send(struct fb_e2e_raw *r, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(r->fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
            return;
        ck_assert_msg(k > 0, "send: %s", strerror(errno));
        b += k;
        n -= (size_t)k;
    }
}

void fb_e2e_raw_frame(struct fb_e2e_raw *r, const void *body, size_t n)
{
    uint8_t *f = malloc(n + 4);
    ck_assert_msg(f != NULL, "out of memory");
    f[0] = (uint8_t)(n >> 24);
    f[1] = (uint8_t)(n >> 16);
    f[2] = (uint8_t)(n >> 8);
    f[3] = (uint8_t)n;
    if (n)
        memcpy(f + 4, body, n);
    fb_e2e_raw_send(r, f, n + 4);
    free(f);
}

void fb_e2e_raw_msg(struct fb_e2e_raw *r, const struct fidbus_msg_out *m)
{
    struct fidbus_buf b = {0};
    int rc = fidbus_msg_encode(&b, m);
    ck_assert_msg(rc == 0, "fidbus_msg_encode: %d", rc);
    fb_e2e_raw_send(r, b.data, b.len);
    fidbus_buf_free(&b);
}

bool fb_e2e_push_unread(int fd, const char *event, uint64_t max, struct fidbus_buf *b,
                        size_t *off, uint64_t *sent)
{
    struct fidbus_buf own = {0};
    size_t own_off;
    if (!b) {
        b = &own;
        off = &own_off;
    }
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    *sent = 0;
    *off = b->len = 0;
    bool stalled = false, closed = false;
    while (*sent < max && !stalled && !closed) {
        if (*off == b->len) {
            b->len = *off = 0;
            for (int i = 0; i < FB_E2E_PUSH_CHUNK; i++) {
                struct fidbus_msg_out m = {
                    .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                               FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
                    .type = FIDBUS_MSG_PUBLISH,
                    .seq = *sent + (uint64_t)i + 1,
                    .event = event,
                    .flags = FIDBUS_FLAG_ACK,
                };
                ck_assert_int_eq(fidbus_msg_encode(b, &m), 0);
            }
        }
        ssize_t n = send(fd, b->data + *off, b->len - *off, MSG_NOSIGNAL);
        if (n > 0) {
            *off += (size_t)n;
            if (*off == b->len)
                *sent += FB_E2E_PUSH_CHUNK;
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET) {
            closed = true;
            break;
        }
        ck_assert_int_eq(errno, EAGAIN);
        /* The daemon stopped reading us if the socket stays full. */
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int rc = poll(&p, 1, 1000);
        if (rc == 0)
            stalled = true;
        else if (p.revents & (POLLHUP | POLLERR))
            closed = true;
    }
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
    ck_assert_msg(stalled || closed,
                  "wrote %llu acked events without reading an ACK: the daemon never "
                  "pushed back",
                  (unsigned long long)*sent);
    fidbus_buf_free(&own);
    return stalled;
}

void fb_e2e_raw_publish(struct fb_e2e_raw *r, uint64_t seq, bool ack, const char *event)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_FLAGS),
        .type = FIDBUS_MSG_PUBLISH,
        .seq = seq,
        .event = event,
        .flags = ack ? FIDBUS_FLAG_ACK : 0,
    };
    fb_e2e_raw_msg(r, &m);
}

void fb_e2e_raw_ping(struct fb_e2e_raw *r, uint64_t seq)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = seq,
    };
    fb_e2e_raw_msg(r, &m);
}

ssize_t fb_e2e_recv_by(int fd, void *buf, size_t cap, uint64_t deadline)
{
    for (;;) {
        uint64_t now = fb_e2e_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return -ETIMEDOUT;
        ssize_t k = recv(fd, buf, cap, 0);
        if (k < 0 && errno == EINTR)
            continue;
        return k < 0 ? -errno : k;
    }
}

int fb_e2e_raw_recv(struct fb_e2e_raw *r, int timeout_ms)
{
    uint64_t deadline = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (r->len >= 4) {
            size_t n = (size_t)r->buf[0] << 24 | (size_t)r->buf[1] << 16 |
                       (size_t)r->buf[2] << 8 | r->buf[3];
            ck_assert_msg(n > 0 && n <= FIDBUS_MAX_FRAME_DEFAULT,
                          "daemon sent a frame of length %zu", n);
            if (r->len >= 4 + n) {
                free(r->body);
                r->body = malloc(n);
                ck_assert_msg(r->body != NULL, "out of memory");
                memcpy(r->body, r->buf + 4, n);
                r->body_len = n;
                memmove(r->buf, r->buf + 4 + n, r->len - 4 - n);
                r->len -= 4 + n;
                int rc = fidbus_msg_decode(r->body, n, FIDBUS_MAX_DEPTH_DEFAULT, &r->msg);
                ck_assert_msg(rc == 0, "daemon sent an undecodable frame (%d: %s)", rc,
                              r->msg.why ? r->msg.why : "?");
                return 1;
            }
            if (r->cap < 4 + n) {
                r->cap = 4 + n;
                r->buf = realloc(r->buf, r->cap);
                ck_assert_msg(r->buf != NULL, "out of memory");
            }
        }
        if (r->len == r->cap) {
            r->cap *= 2;
            r->buf = realloc(r->buf, r->cap);
            ck_assert_msg(r->buf != NULL, "out of memory");
        }
        ssize_t k = fb_e2e_recv_by(r->fd, r->buf + r->len, r->cap - r->len, deadline);
        if (k < 0)
            return (int)k;
        if (k == 0) {
            ck_assert_msg(r->len == 0,
                          "daemon closed in the middle of a frame "
                          "(%zu bytes pending)",
                          r->len);
            return 0;
        }
        r->len += (size_t)k;
    }
}

static const char *type_name(uint64_t type)
{
    switch (type) {
    case FIDBUS_MSG_HELLO:
        return "HELLO";
    case FIDBUS_MSG_ACK:
        return "ACK";
    case FIDBUS_MSG_ERROR:
        return "ERROR";
    case FIDBUS_MSG_REPLY:
        return "REPLY";
    default:
        return "?";
    }
}

static void recv_one(struct fb_e2e_raw *r, const char *what)
{
    int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rc == 1, "waiting for %s: %s", what,
                  rc == 0            ? "the daemon closed the connection"
                  : rc == -ETIMEDOUT ? "timed out"
                                     : strerror(-rc));
}

void fb_e2e_raw_hello(struct fb_e2e_raw *r)
{
    recv_one(r, "HELLO");
    ck_assert_msg(r->msg.type == FIDBUS_MSG_HELLO,
                  "first frame is %s (%" PRIu64 "), not HELLO", type_name(r->msg.type),
                  r->msg.type);
    ck_assert_msg(fidbus_msg_has(&r->msg, FIDBUS_K_VERSION) && r->msg.version == 1,
                  "HELLO without version 1");
    ck_assert_msg(fidbus_msg_has(&r->msg, FIDBUS_K_NAME) && r->msg.name.len > 0,
                  "HELLO without a server name");
}

void fb_e2e_raw_expect_ack(struct fb_e2e_raw *r, uint64_t seq, uint64_t result)
{
    char what[64];
    snprintf(what, sizeof what, "ACK seq %" PRIu64, seq);
    recv_one(r, what);
    const struct fidbus_msg *m = &r->msg;
    ck_assert_msg(m->type == FIDBUS_MSG_ACK,
                  "expected ACK seq %" PRIu64 ", got %s seq %" PRIu64 " code %" PRIu64
                  " (%s) message \"%.*s\"",
                  seq, type_name(m->type), m->seq, m->code,
                  fidbus_code_name((int)m->code), (int)m->message.len,
                  (const char *)m->message.ptr);
    ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_SEQ) && m->seq == seq,
                  "expected ACK seq %" PRIu64 ", got seq %" PRIu64, seq, m->seq);
    uint64_t v = UINT64_MAX;
    ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_RESULT) && fb_e2e_cbor_uint(m->result, &v),
                  "ACK seq %" PRIu64 " has no uint result", seq);
    ck_assert_msg(v == result,
                  "ACK seq %" PRIu64 ": result %" PRIu64 ", expected %" PRIu64, seq, v,
                  result);
}

const struct fidbus_msg *fb_e2e_raw_expect_error(struct fb_e2e_raw *r, int code,
                                                 long long seq)
{
    char what[64];
    snprintf(what, sizeof what, "ERROR %s", fidbus_code_name(code));
    recv_one(r, what);
    const struct fidbus_msg *m = &r->msg;
    ck_assert_msg(m->type == FIDBUS_MSG_ERROR && m->code == (uint64_t)code,
                  "expected ERROR %s (seq %lld), got %s seq %" PRIu64 " code %" PRIu64
                  " (%s) message \"%.*s\"",
                  fidbus_code_name(code), seq, type_name(m->type), m->seq, m->code,
                  fidbus_code_name((int)m->code), (int)m->message.len,
                  (const char *)m->message.ptr);
    ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_MESSAGE) && m->message.len > 0,
                  "ERROR %s without a message", fidbus_code_name(code));
    if (seq >= 0)
        ck_assert_msg(fidbus_msg_has(m, FIDBUS_K_SEQ) && m->seq == (uint64_t)seq,
                      "ERROR %s: expected seq %lld, got %s%" PRIu64,
                      fidbus_code_name(code), seq,
                      fidbus_msg_has(m, FIDBUS_K_SEQ) ? "" : "none ", m->seq);
    else if (seq == -2)
        ck_assert_msg(!fidbus_msg_has(m, FIDBUS_K_SEQ),
                      "ERROR %s carries seq %" PRIu64 " although none was sent",
                      fidbus_code_name(code), m->seq);
    return m;
}

void fb_e2e_raw_expect_eof(struct fb_e2e_raw *r)
{
    int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rc != 1,
                  "expected the daemon to close, got %s seq %" PRIu64 " code %" PRIu64
                  " message \"%.*s\"",
                  type_name(r->msg.type), r->msg.seq, r->msg.code,
                  (int)r->msg.message.len, (const char *)r->msg.message.ptr);
    ck_assert_msg(rc == 0 || rc == -ECONNRESET, "expected the daemon to close: %s",
                  rc == -ETIMEDOUT ? "timed out, still open" : strerror(-rc));
}

const char *fb_e2e_msg_text(const struct fidbus_msg *m)
{
    static char buf[1100];
    size_t n = m->message.len < sizeof buf - 1 ? m->message.len : sizeof buf - 1;
    memcpy(buf, m->message.ptr, n);
    buf[n] = '\0';
    return buf;
}

bool fb_e2e_cbor_uint(struct fidbus_slice s, uint64_t *v)
{
    if (s.len < 1 || (s.ptr[0] >> 5) != 0)
        return false;
    unsigned ai = s.ptr[0] & 0x1f;
    if (ai < 24) {
        *v = ai;
        return s.len == 1;
    }
    if (ai > 27)
        return false;
    size_t n = (size_t)1 << (ai - 24);
    if (s.len != 1 + n)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | s.ptr[1 + i];
    *v = x;
    return true;
}

/* ------------------------------------------------------- CBOR writer */

void fb_e2e_cb_raw(struct fb_e2e_cbor *c, const void *p, size_t n)
{
    ck_assert_msg(c->n + n <= sizeof c->b, "hand-made CBOR body too long");
    memcpy(c->b + c->n, p, n);
    c->n += n;
}

void fb_e2e_cb_head(struct fb_e2e_cbor *c, unsigned major, uint64_t v)
{
    uint8_t h[9];
    size_t n;
    uint8_t mt = (uint8_t)(major << 5);
    if (v < 24) {
        h[0] = mt | (uint8_t)v;
        n = 1;
    } else if (v <= 0xff) {
        h[0] = mt | 24;
        h[1] = (uint8_t)v;
        n = 2;
    } else if (v <= 0xffff) {
        h[0] = mt | 25;
        h[1] = (uint8_t)(v >> 8);
        h[2] = (uint8_t)v;
        n = 3;
    } else if (v <= 0xffffffffu) {
        h[0] = mt | 26;
        for (int i = 0; i < 4; i++)
            h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
        n = 5;
    } else {
        h[0] = mt | 27;
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)(v >> (56 - 8 * i));
        n = 9;
    }
    fb_e2e_cb_raw(c, h, n);
}

void fb_e2e_cb_text(struct fb_e2e_cbor *c, const char *s)
{
    size_t n = strlen(s);
    fb_e2e_cb_head(c, FB_E2E_CB_TEXT, n);
    fb_e2e_cb_raw(c, s, n);
}
