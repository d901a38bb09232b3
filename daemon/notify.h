/*
 * The service manager notification protocol (sd_notify(3)): one datagram
 * of newline-separated "KEY=VALUE" lines to the Unix socket named by
 * $NOTIFY_SOCKET ('@' = abstract namespace). A no-op without it, so the
 * daemon runs the same with or without systemd. Tests and the bench use it
 * as their ready signal.
 */
#ifndef FB_NOTIFY_H
#define FB_NOTIFY_H

/* Sends state (e.g. "READY=1\nSTATUS=..."). 0, or -errno; 0 when unset. */
int fb_notify(const char *state);

#endif
