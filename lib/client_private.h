/*
 * lib/client_private.h -- what lib/client.c, lib/client_addr.c and
 * lib/client_reconnect.c share.
 * Private to libfidbus (not installed); the library is built with
 * -fvisibility=hidden, so the fb_ functions below are not exported.
 *
 * client_addr.c turns an address string into a connected, non-blocking
 * stream socket; client.c speaks the protocol over it. Both wait against
 * the same kind of deadline, so the time helpers are here.
 */
#ifndef FB_CLIENT_PRIVATE_H
#define FB_CLIENT_PRIVATE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>
#include <time.h>

#include <fidbus/proto.h>

/* --------------------------------------------------------------- time */

/* Deadlines are CLOCK_MONOTONIC milliseconds; -1 means none. */
static inline int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left for poll(): -1 forever, 0 when the deadline passed. */
static inline int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ------------------------------------------------------------ address */

struct fb_addr {
    bool is_unix;
    struct sockaddr_un un;
    char host[256];
    char port[6];
};

/*
 * "unix:PATH", "tcp:HOST:PORT" ("tcp:[::1]:7878" for IPv6), or a plain
 * path. Anything else that starts like a URL scheme ("udp:...") is refused
 * rather than taken as a relative file name; "./name:x" reaches such a file.
 * Returns 0, -EINVAL, or -ENAMETOOLONG for a path sun_path cannot hold.
 */
int fb_addr_parse(const char *addr, struct fb_addr *a);

/*
 * Connects to a parsed address before the deadline. Returns the socket
 * (non-blocking, close-on-exec, owned by the caller) or a negative errno:
 * -ETIMEDOUT when the deadline passed, -ENXIO when a host name does not
 * resolve.
 */
int fb_addr_connect(const struct fb_addr *a, int64_t deadline);

/* ------------------------------------------------------- reconnection */

/*
 * The acked-mode PUBLISH frames a reconnecting client sent (or queued)
 * and has no answer for yet, in the order they were queued: what it
 * re-sends after a reconnection. Entries are answered (dropped) by seq;
 * answers mostly come in order, so the search from the front is short.
 * Zero-initialise; fb_pending_free releases it.
 */
struct fb_pending_frame {
    uint64_t seq;
    /* malloc'd copy of the whole frame, header included; NULL once answered */
    uint8_t *frame;
    size_t len;
};

struct fb_pending {
    struct fb_pending_frame *v;
    size_t head; /* v[head..len) may hold live entries */
    size_t len, cap;
    size_t count; /* live entries */
    size_t bytes; /* sum of their len */
};

/* Keeps a copy of frame. 0 or -ENOMEM. */
int fb_pending_add(struct fb_pending *p, uint64_t seq, const uint8_t *frame, size_t len);
/* Drops the oldest live entry with this seq; false if there is none. */
bool fb_pending_answer(struct fb_pending *p, uint64_t seq);
/* Appends every live frame, oldest first. 0 or -ENOMEM (out unchanged). */
int fb_pending_append_all(const struct fb_pending *p, struct fidbus_buf *out);
void fb_pending_free(struct fb_pending *p);

/* The first delay after a failed attempt, doubled after each further one. */
#define FB_BACKOFF_FIRST_MS 50u
/*
 * The next backoff step after `cur_ms` (0 = none yet), capped at max_ms,
 * and in *delay_ms that step with jitter: a uniform draw from its upper
 * half, so clients cut off together do not come back in lockstep.
 * *rng is the caller's xorshift state (never 0).
 */
unsigned fb_backoff_next(unsigned cur_ms, unsigned max_ms, uint64_t *rng,
                         unsigned *delay_ms);

#endif
