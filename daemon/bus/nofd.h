/*
 * Accepting when the daemon is out of file descriptors (EMFILE, ENFILE),
 * for the bus listeners (listener.c) and the control socket (control.c).
 *
 * The pending connection stays in the backlog and the listening socket
 * stays readable, so a plain retry would spin the loop and flood the log,
 * while the client hangs without knowing why. Each listening socket
 * therefore holds one spare descriptor (/dev/null): at EMFILE it gives the
 * spare up, accepts the connection with it, writes ERROR BUSY ("the daemon
 * is out of file descriptors"), closes it and takes the spare back. Should
 * the spare be lost to another thread meanwhile, polling stops for
 * FB_NOFD_PAUSE_MS instead. One warning per episode; every refusal counts
 * as limit reason "fds". All on the loop thread of the poll handle.
 */
#ifndef FB_NOFD_H
#define FB_NOFD_H

#include <stdbool.h>

#include <uv.h>

struct fb_daemon;

#define FB_NOFD_PAUSE_MS 100

struct fb_nofd {
    struct fb_daemon *d;
    uv_poll_t *poll; /* the listening socket's; restarted after a pause */
    uv_poll_cb on_accept;
    uv_timer_t pause;
    int spare;
    bool warned;
    const char *who; /* log prefix, e.g. the listener's name */
};

/* Takes the spare and sets up the pause timer on loop. 0 or a uv error
 * (then nothing needs closing). */
int fb_nofd_init(struct fb_nofd *n, uv_loop_t *loop, struct fb_daemon *d, uv_poll_t *poll,
                 uv_poll_cb on_accept, const char *who);
/* accept4 on lfd failed with err (EMFILE or ENFILE): true if one pending
 * connection was refused and accepting may go on; false if polling is
 * paused for a moment. */
bool fb_nofd_refuse(struct fb_nofd *n, int lfd, int err);
/* A connection was accepted: an episode is over. */
static inline void fb_nofd_ok(struct fb_nofd *n)
{
    n->warned = false;
}
/* Gives back the spare and closes the timer (uv_close with cb). */
void fb_nofd_close(struct fb_nofd *n, uv_close_cb cb);

#endif
