/*
 * The service manager notification protocol (sd_notify(3)): one datagram
 * of newline-separated "KEY=VALUE" lines to the Unix socket named by
 * $NOTIFY_SOCKET ('@' = abstract namespace). A no-op without it, so the
 * daemon runs the same with or without systemd. Tests and the bench use it
 * as their ready signal.
 *
 * What the daemon says, and when:
 *   READY=1 + STATUS=summary + MAINPID  once every listener is bound and
 *                                       the first set is live, and again
 *                                       after each SIGHUP reload;
 *   RELOADING=1 + MONOTONIC_USEC        when a SIGHUP reload begins
 *                                       (Type=notify-reload needs both);
 *   STOPPING=1 + STATUS=shutting down   when the orderly stop begins.
 */
#ifndef FB_NOTIFY_H
#define FB_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

/* Sends state (e.g. "READY=1\nSTATUS=..."). 0, or -errno; 0 when unset. */
int fb_notify(const char *state);
/* READY=1 with STATUS="N plugins, M routes, generation G" and MAINPID.
 * The caller reads the counts (fb_change_set_size, control/change.h), so
 * this file needs nothing from the layers that own them. */
int fb_notify_ready(size_t nplugins, size_t nroutes, uint64_t generation);
/* RELOADING=1, STATUS=reloading and MONOTONIC_USEC=now (CLOCK_MONOTONIC). */
int fb_notify_reloading(void);
/* STOPPING=1, STATUS=shutting down. */
int fb_notify_stopping(void);

#endif
