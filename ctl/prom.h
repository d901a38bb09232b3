/*
 * ctl/prom.h -- `fidbusctl stats --prometheus`: the stats result in
 * the Prometheus text exposition format (version 0.0.4).
 *
 * The input is the stats REPLY's result as JSON (fbctl_result_json in
 * render.h), so this file knows the stats keys of proto/control.md and nothing
 * of CBOR or sockets; the output is meant for node_exporter's textfile
 * collector or any scraper that reads the format from a file.
 */
#ifndef FBCTL_PROM_H
#define FBCTL_PROM_H

#include <stdio.h>

#include <jansson.h>

/*
 * Writes `stats` (the result map of the `stats` command; borrowed) to out
 * as metric families fidbus_*: the totals as counters, the running table's
 * generation as a gauge, per-generation, per-route and per-function
 * counters with labels, and the handler latency quantiles as gauges in
 * seconds. A key the result lacks, or a value that is not a number, gives
 * no sample; a family with no samples is left out entirely. Keys are
 * sorted within each family so the output is stable between scrapes.
 */
void fbctl_render_prometheus(FILE *out, const json_t *stats);

#endif
