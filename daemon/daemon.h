/*
 * The daemon's life (daemon.c): bring-up, the main loop, orderly stop. The
 * shared state itself, struct fb_daemon, is in base/daemon_t.h.
 */
#ifndef FB_DAEMON_H
#define FB_DAEMON_H

#include <stddef.h>

#include "base/daemon_t.h"

struct fb_config;

/* Takes ownership of cfg. Sets up nothing outside the process yet. */
int fb_daemon_new(struct fb_config *cfg, struct fb_daemon **out);
/*
 * Brings the daemon up in this order: runtime and state dirs, blocking
 * pool, plugins, routes, listeners bound, workers, accepting, control
 * socket, signals, READY=1. On failure returns non-zero with err naming
 * what failed; what was started is torn down by fb_daemon_free.
 */
int fb_daemon_start(struct fb_daemon *d, char *err, size_t errlen);
/* Runs the main loop until SIGTERM/SIGINT has been handled; returns the
 * process exit status. */
int fb_daemon_run(struct fb_daemon *d);
/* Joins, calls every plugin's fini, removes sockets, frees. NULL-safe. */
struct fb_daemon *fb_daemon_free(struct fb_daemon *d);

#endif
