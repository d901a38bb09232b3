/*
 * fidbus-bench: sockets, clocks and frames.
 *
 * Small helpers the load generators share: connecting to a bus address
 * (Unix, or TCP on a loopback address only), encoding the PUBLISH and PING
 * frames they send with libfidbus's encoder, and reading answers with its
 * frame reader and streaming decoder, so the bench speaks exactly the wire
 * format the daemon parses.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

uint64_t fb_bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t fb_bench_deadline(int ms)
{
    return fb_bench_now_ns() + (uint64_t)(ms < 0 ? 0 : ms) * 1000000u;
}

int fb_bench_ms_left(uint64_t deadline)
{
    uint64_t now = fb_bench_now_ns();

    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static int connect_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        snprintf(err, errlen, "connect %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

static int connect_tcp(const char *hostport, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');

    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host)) {
        snprintf(err, errlen, "bad TCP address (want tcp:HOST:PORT): %s", hostport);
        return -EINVAL;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", hostport, gai_strerror(rc));
        return -EINVAL;
    }
    if (!is_loopback(res->ai_addr)) {
        snprintf(err, errlen,
                 "%s is not a loopback address: the bench only "
                 "uses loopback and Unix sockets",
                 hostport);
        freeaddrinfo(res);
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        int e = errno;
        snprintf(err, errlen, "connect %s: %s", hostport, strerror(e));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -e;
    }
    freeaddrinfo(res);
    /* Latency runs send one small frame at a time: Nagle would hold it. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int fb_bench_connect(const char *addr, char *err, size_t errlen)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return connect_unix(addr + 5, err, errlen);
    if (strncmp(addr, "tcp:", 4) == 0)
        return connect_tcp(addr + 4, err, errlen);
    return connect_unix(addr, err, errlen);
}

/* Header bytes a CBOR byte string of n content bytes needs. */
static size_t bstr_header(size_t n)
{
    return n < 24 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

size_t fb_bench_payload_item(uint8_t *out, size_t cap, size_t bytes)
{
    if (bytes == 0 || bytes > cap)
        return 0;
    /*
     * The header grows at 24, 256 and 65536 content bytes, so a few totals
     * (25, 258, 65539...) cannot be hit exactly: step down to the next one
     * that can.
     */
    size_t total = bytes, n = 0, hdr = 0;
    for (; total > 0; total--) {
        static const size_t hdrs[] = {1, 2, 3, 5};
        for (size_t i = 0; i < 4 && hdr == 0; i++)
            if (total >= hdrs[i] && bstr_header(total - hdrs[i]) == hdrs[i]) {
                hdr = hdrs[i];
                n = total - hdr;
            }
        if (hdr)
            break;
    }
    switch (hdr) {
    case 1:
        out[0] = (uint8_t)(0x40 | n);
        break;
    case 2:
        out[0] = 0x58;
        out[1] = (uint8_t)n;
        break;
    case 3:
        out[0] = 0x59;
        out[1] = (uint8_t)(n >> 8);
        out[2] = (uint8_t)n;
        break;
    default:
        out[0] = 0x5a;
        out[1] = (uint8_t)(n >> 24);
        out[2] = (uint8_t)(n >> 16);
        out[3] = (uint8_t)(n >> 8);
        out[4] = (uint8_t)n;
        break;
    }
    for (size_t i = 0; i < n; i++)
        out[hdr + i] = (uint8_t)('a' + i % 26);
    return hdr + n;
}

int fb_bench_encode_publish(struct fidbus_buf *b, const char *event, bool has_seq,
                            uint64_t seq, uint32_t flags, const uint8_t *payload,
                            size_t payload_len)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT),
        .type = FIDBUS_MSG_PUBLISH,
        .event = event,
        .seq = seq,
        .flags = flags,
        .payload = {payload, payload_len},
    };

    if (has_seq)
        m.present |= FIDBUS_BIT(FIDBUS_K_SEQ);
    if (flags)
        m.present |= FIDBUS_BIT(FIDBUS_K_FLAGS);
    if (payload_len)
        m.present |= FIDBUS_BIT(FIDBUS_K_PAYLOAD);
    return fidbus_msg_encode(b, &m);
}

int fb_bench_encode_ping(struct fidbus_buf *b, uint64_t seq)
{
    struct fidbus_msg_out m = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = seq,
    };
    return fidbus_msg_encode(b, &m);
}

int fb_bench_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fb_bench_reader_init(struct fb_bench_reader *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->msg = malloc(sizeof(*r->msg));
    if (!r->msg)
        return -ENOMEM;
    int rc = fidbus_frame_reader_init(&r->fr, FIDBUS_MAX_FRAME_DEFAULT, 256 * 1024);
    if (rc < 0) {
        free(r->msg);
        r->msg = NULL;
    }
    return rc;
}

void fb_bench_reader_destroy(struct fb_bench_reader *r)
{
    fidbus_frame_reader_destroy(&r->fr);
    free(r->msg);
    r->msg = NULL;
}

ssize_t fb_bench_reader_fill(struct fb_bench_reader *r)
{
    uint8_t *p;
    size_t len;
    int rc = fidbus_frame_reader_space(&r->fr, &p, &len);

    if (rc < 0)
        return rc;
    for (;;) {
        ssize_t n = read(r->fd, p, len);
        if (n >= 0) {
            fidbus_frame_reader_commit(&r->fr, (size_t)n);
            return n;
        }
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int fb_bench_reader_next(struct fb_bench_reader *r)
{
    const uint8_t *body;
    size_t len;
    int rc = fidbus_frame_next(&r->fr, &body, &len);

    if (rc != 1)
        return rc;
    rc = fidbus_msg_decode(body, len, FIDBUS_MAX_DEPTH_DEFAULT, r->msg);
    return rc == 0 ? 1 : rc;
}

int fb_bench_read_hello(struct fb_bench_reader *r, int timeout_ms, char *err,
                        size_t errlen)
{
    uint64_t deadline = fb_bench_deadline(timeout_ms);

    for (;;) {
        int rc = fb_bench_reader_next(r);
        if (rc == 1) {
            struct fidbus_msg *m = r->msg;
            if (m->type != FIDBUS_MSG_HELLO) {
                snprintf(err, errlen, "expected HELLO, got message type %llu",
                         (unsigned long long)m->type);
                return -EPROTO;
            }
            if (fidbus_msg_has(m, FIDBUS_K_NONCE)) {
                snprintf(err, errlen,
                         "the server requires authentication; "
                         "the bench only uses unauthenticated buses");
                return -EACCES;
            }
            return 0;
        }
        if (rc != 0) {
            snprintf(err, errlen, "bad frame while waiting for HELLO: %s",
                     fidbus_code_name(rc));
            return -EPROTO;
        }
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int left = fb_bench_ms_left(deadline);
        if (left == 0 || poll(&pfd, 1, left) == 0) {
            snprintf(err, errlen, "no HELLO within %d ms", timeout_ms);
            return -ETIMEDOUT;
        }
        ssize_t n = fb_bench_reader_fill(r);
        if (n == 0) {
            snprintf(err, errlen, "connection closed before HELLO");
            return -ECONNRESET;
        }
        if (n < 0 && n != -EAGAIN) {
            snprintf(err, errlen, "read: %s", strerror((int)-n));
            return (int)n;
        }
    }
}
