/*
 * prom/prom.h -- `fidbusctl stats --prometheus` and fidbusd's /metrics:
 * the stats result in the Prometheus text exposition format (0.0.4).
 *
 * The input is the stats REPLY's result as JSON (fb_cbor_json in
 * cbor_json.h), so this file knows the stats keys of proto/control.md and
 * nothing of CBOR or sockets; the output is what /metrics serves, and
 * what node_exporter's textfile collector reads from a file.
 */
#ifndef FB_PROM_H
#define FB_PROM_H

#include <stdio.h>

#include <jansson.h>

/*
 * Writes `stats` (the result map of the `stats` command; borrowed) to out
 * as metric families fidbus_*: the totals as counters, the running table's
 * generation as a gauge, per-generation, per-route and per-function
 * counters with labels, the gauges (build info, uptime, connections by
 * kind, paused connections, pool queue, in-flight calls) and each
 * function's latency histogram in seconds. A key the result lacks, or a value that is not a number, gives
 * no sample; a family with no samples is left out entirely. Keys are
 * sorted within each family so the output is stable between scrapes.
 */
void fb_prom_render(FILE *out, const json_t *stats);

#endif
