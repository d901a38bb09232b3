/*
 * The optional HTTP listener of [metrics] listen: GET /metrics (the stats
 * result as Prometheus text, rendered by prom/prom.c exactly as
 * `fidbusctl stats --prometheus` renders it) and GET /healthz. Built on
 * libmicrohttpd with its own polling thread, so a scrape never runs on the
 * main loop or an I/O worker; it takes change_lock for the time it takes
 * to read stats, as a control command does (control_cmds.h).
 */
#ifndef FB_METRICS_HTTP_H
#define FB_METRICS_HTTP_H

#include <stddef.h>

struct fb_daemon;
struct fb_metrics;

/*
 * Binds cfg->metrics_host:metrics_port (port 0: any free one) and starts
 * serving. Call before the daemon reports ready, once the workers and the
 * control thread exist. With no [metrics] listen, *out = NULL and 0.
 * Returns 0 or -errno with err saying which address and why.
 */
int fb_metrics_start(struct fb_daemon *d, struct fb_metrics **out, char *err,
                     size_t errlen);
/* "HOST:PORT" as bound (the real port when 0 was asked); NULL-safe. */
const char *fb_metrics_addr(const struct fb_metrics *m);
/* Stops serving: closes the socket and joins the thread, waiting for a
 * request in progress; the address stays readable. NULL-safe, idempotent. */
void fb_metrics_stop(struct fb_metrics *m);
/* Stops if still serving and frees. NULL-safe; returns NULL. */
struct fb_metrics *fb_metrics_free(struct fb_metrics *m);

#endif
