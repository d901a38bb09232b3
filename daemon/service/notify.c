/*
 * The sd_notify protocol, written out here rather than taken from
 * libsystemd. Why: the protocol is one datagram of text to a socket named
 * by an environment variable, a few dozen lines that are stable and
 * documented (sd_notify(3), "The NOTIFY_SOCKET protocol"); linking
 * libsystemd would add a hard run-time dependency (or a build option and
 * #ifdefs) to a daemon that must build and run the same on hosts without
 * systemd, in containers and under other supervisors, for no behaviour we
 * need. The same reasoning holds for socket activation (activation.c).
 * What we give up -- fd store, watchdog, barrier -- fidbusd does not use.
 *
 * The details libsystemd gets right that we must too: '@' names an
 * abstract socket (leading NUL, address length without a terminator); the
 * datagram is sent with MSG_NOSIGNAL; a missing NOTIFY_SOCKET is not an
 * error. We send with our own credentials, so MAINPID is only a hint for
 * supervisors that want it.
 */
#include "service/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int fb_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    size_t plen = strlen(path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (plen >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
        return -EINVAL;
    memcpy(sa.sun_path, path, plen);
    /* Abstract: the name is the bytes after the NUL, and the address
     * length (below) counts exactly those, no terminator. */
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    ssize_t n =
        sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int rc = n < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int fb_notify_ready(size_t nplugins, size_t nroutes, uint64_t generation)
{
    unsigned long long gen = (unsigned long long)generation;
    char msg[256];
    snprintf(msg, sizeof msg,
             "READY=1\nSTATUS=%zu plugin%s, %zu route%s, generation %llu\nMAINPID=%ld",
             nplugins, nplugins == 1 ? "" : "s", nroutes, nroutes == 1 ? "" : "s", gen,
             (long)getpid());
    return fb_notify(msg);
}

int fb_notify_reloading(void)
{
    /* systemd's Type=notify-reload (v253+) ignores RELOADING=1 without
     * the CLOCK_MONOTONIC time it was sent at. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull +
                 (unsigned long long)ts.tv_nsec / 1000u);
    return fb_notify(msg);
}

int fb_notify_stopping(void)
{
    return fb_notify("STOPPING=1\nSTATUS=shutting down");
}
