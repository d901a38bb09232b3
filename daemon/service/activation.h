/*
 * Socket activation (sd_listen_fds(3), "LISTEN_FDS protocol"): a service
 * manager binds the sockets, starts the daemon with them at descriptors
 * 3, 4, ... and says so in LISTEN_PID (our pid), LISTEN_FDS (how many) and
 * LISTEN_FDNAMES (colon-separated names, from FileDescriptorName=).
 *
 * The daemon adopts a passed socket by name:
 *   "bus"     -> the Unix bus listener, instead of binding [listen] unix;
 *   "control" -> the control socket, instead of binding [control] socket;
 *   "tcp"     -> the TCP listener, instead of binding [listen] tcp (only
 *                when [listen] tcp is configured: its auth policy lives
 *                there);
 * a Unix stream socket with another name whose path is [listen] unix or
 * [control] socket counts as "bus" or "control" (a unit without
 * FileDescriptorName=). Any other socket is logged and closed. Whatever
 * was not passed is bound as usual. A passed socket belongs to the
 * service manager: its file is never unlinked and its mode never changed,
 * so it survives a restart with the connections queued on it.
 *
 * Hand-written for the reasons notify.c gives.
 */
#ifndef FB_ACTIVATION_H
#define FB_ACTIVATION_H

#include <stdbool.h>
#include <stddef.h>

/* Adopted descriptors, -1 when not passed. Whoever uses one sets the
 * field to -1: what is left is closed by fb_activation_close. */
struct fb_activation {
    int bus;
    int control;
    int tcp;
};

/* What the config serves, to tell the passed sockets apart (the caller
 * fills it from struct fb_config: this layer reads no config). */
struct fb_activation_want {
    const char *unix_path;      /* [listen] unix, or NULL */
    const char *control_socket; /* [control] socket, or NULL */
    bool tcp;                   /* [listen] tcp is configured */
};

/* All -1. */
void fb_activation_init(struct fb_activation *a);
/*
 * Reads and unsets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, marks every passed
 * descriptor close-on-exec and non-blocking, and sorts them into *a as
 * above. Environment meant for another process (LISTEN_PID not ours) is
 * ignored. Returns 0, or -errno with err set when a passed socket is not
 * what its name says (not listening, wrong family or type), a name comes
 * twice, or the variables are malformed: the daemon must not start then.
 * Call before any other thread runs (it changes the environment).
 */
int fb_activation_take(const struct fb_activation_want *conf, struct fb_activation *a,
                       char *err, size_t errlen);
/* Closes descriptors nobody took. */
void fb_activation_close(struct fb_activation *a);
/* "unix:/path", "unix:@name" or "tcp:host:port" for a socket's local
 * address, for logs and listings. */
void fb_activation_describe(int fd, char *buf, size_t len);

#endif
