/*
 * The control socket (proto/control.md): a Unix socket of its own, served
 * by its own thread and uv loop (the control thread), so control work --
 * listings now; table builds, dlopen, fsync and grace-period waits later --
 * never runs on an I/O worker or the main loop.
 *
 * Same framing as the bus. The daemon sends HELLO, then every REQUEST
 * gets exactly one REPLY {seq, code, message, result}; a frame that is not
 * a decodable REQUEST gets an ERROR and the connection stays open (a
 * zero-length or too-large frame closes it, as on the bus). The peer is
 * checked with SO_PEERCRED when it connects: the daemon's uid, root, or a
 * member of [control] group may run commands; every REQUEST from anyone
 * else is answered UNAUTHORIZED and nothing runs.
 */
#ifndef FB_CONTROL_H
#define FB_CONTROL_H

#include <stddef.h>

struct fb_daemon;

struct fb_control;

/*
 * Starts the control thread, which makes every runtime change, and, when
 * cfg->control_socket is set, binds it (mode cfg->control_mode, group
 * cfg->control_group; a stale file is replaced, a live one refused) and
 * starts the control thread. A socket passed by the service manager
 * (d->act.control, activation.h) is taken over instead of binding one; its
 * file is left alone at stop. Call once the bus listeners are bound and the
 * workers run: their names and count are copied now. Returns 0 with *out
 * set, or -errno with err naming the socket or the unknown group.
 */
int fb_control_new(struct fb_daemon *d, struct fb_control **out, char *err,
                   size_t errlen);
/* SIGHUP: asks the control thread to run config.reload (any thread;
 * returns at once; repeated requests before it runs merge into one). */
void fb_control_reload(struct fb_control *ctl);
/* Removes the socket file (if still ours) and asks the control thread to
 * close every connection and end. Any thread; idempotent; does not wait. */
void fb_control_stop(struct fb_control *ctl);
/* Control connections open now (any thread; NULL-safe). */
unsigned fb_control_conns(const struct fb_control *ctl);
/* Stops, joins the control thread and frees. NULL-safe; returns NULL. */
struct fb_control *fb_control_free(struct fb_control *ctl);

#endif
