/*
 * lib/client_addr.c -- from an address string to a connected socket, for
 * fidbus_client_connect() (client.c; the interface is client_private.h).
 *
 * Unix sockets connect blocking, bounded by SO_SNDTIMEO, and are made
 * non-blocking afterwards; TCP resolves with getaddrinfo() and tries each
 * address with a non-blocking connect() and poll(), all against the one
 * deadline of the fidbus_client_connect() call.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_private.h"

/*
 * "unix:PATH", "tcp:HOST:PORT" ("tcp:[::1]:7878" for IPv6), or a plain
 * path. Anything else that starts like a URL scheme ("udp:...") is refused
 * rather than taken as a relative file name; "./name:x" reaches such a file.
 */
int fb_addr_parse(const char *addr, struct fb_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (!addr || !*addr)
        return -EINVAL;

    if (strncmp(addr, "tcp:", 4) == 0) {
        const char *h = addr + 4, *hend, *p;
        if (*h == '[') {
            hend = strchr(h, ']');
            if (!hend || hend[1] != ':')
                return -EINVAL;
            p = hend + 2;
            h++;
        } else {
            hend = strrchr(h, ':');
            if (!hend || memchr(h, ':', (size_t)(hend - h)))
                return -EINVAL; /* no port, or IPv6 without brackets */
            p = hend + 1;
        }
        size_t hlen = (size_t)(hend - h);
        size_t plen = strlen(p);
        if (hlen == 0 || hlen >= sizeof(a->host) || plen == 0 || plen > 5)
            return -EINVAL;
        unsigned long port = 0;
        for (const char *q = p; *q; q++) {
            if (*q < '0' || *q > '9')
                return -EINVAL;
            port = port * 10 + (unsigned long)(*q - '0');
        }
        if (port == 0 || port > 65535)
            return -EINVAL;
        memcpy(a->host, h, hlen);
        memcpy(a->port, p, plen);
        return 0;
    }

    const char *path = addr;
    if (strncmp(addr, "unix:", 5) == 0) {
        path = addr + 5;
    } else {
        size_t n = strspn(addr, "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        if (n > 0 && addr[n] == ':')
            return -EINVAL; /* an unknown scheme */
    }
    size_t len = strlen(path);
    if (len == 0)
        return -EINVAL;
    if (len >= sizeof(a->un.sun_path))
        return -ENAMETOOLONG;
    a->is_unix = true;
    a->un.sun_family = AF_UNIX;
    memcpy(a->un.sun_path, path, len + 1);
    return 0;
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/*
 * A Unix connect only waits when the listener's backlog is full; Linux
 * bounds that wait by SO_SNDTIMEO, which is simpler than retrying a
 * non-blocking connect that fails with EAGAIN.
 */
static int connect_unix(const struct fb_addr *a, int64_t deadline)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc;
    for (;;) {
        int left = remaining(deadline);
        if (left == 0) {
            rc = -ETIMEDOUT;
            goto fail;
        }
        struct timeval tv = {0, 0};
        if (left > 0) {
            tv.tv_sec = left / 1000;
            tv.tv_usec = (left % 1000) * 1000;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (const struct sockaddr *)&a->un, sizeof(a->un)) == 0)
            break;
        if (errno == EINTR)
            continue;
        rc = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
        goto fail;
    }
    struct timeval zero = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
    rc = set_nonblocking(fd);
    if (rc < 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return rc;
}

static int connect_one_tcp(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        for (;;) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n = poll(&p, 1, remaining(deadline));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = -errno;
                goto fail;
            }
            if (n == 0) {
                if (remaining(deadline) != 0)
                    continue;
                rc = -ETIMEDOUT;
                goto fail;
            }
            break;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            rc = -err;
            goto fail;
        }
    }
    /* Small frames go out at once: latency matters more than packets. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
fail:
    close(fd);
    return rc;
}

static int connect_tcp(const struct fb_addr *a, int64_t deadline)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV,
    };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0) {
        switch (g) {
        case EAI_AGAIN:
            return -EAGAIN;
        case EAI_MEMORY:
            return -ENOMEM;
        case EAI_SYSTEM:
            return errno ? -errno : -EIO;
        case EAI_NONAME:
        case EAI_NODATA:
        case EAI_FAIL:
            return -ENXIO; /* the host name does not resolve */
        default:
            return -EINVAL;
        }
    }
    int rc = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = connect_one_tcp(ai, deadline);
        if (rc >= 0 || rc == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

int fb_addr_connect(const struct fb_addr *a, int64_t deadline)
{
    return a->is_unix ? connect_unix(a, deadline) : connect_tcp(a, deadline);
}
