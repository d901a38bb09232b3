/*
 * The body of the tally test plugins tally1.c and tally2.c: two versions
 * of one function, test.tally@TALLY_VERSION (signature "event:any",
 * inline), for the zero-loss soak (tests/e2e/test_e2e_soak.c).
 *
 * Each instance counts the events it handled and sums their payloads (a
 * CBOR unsigned integer: the publisher's unique event number), with
 * relaxed atomic adds. At fini it appends one line
 * "tally v=VERSION count=N sum=S" to the file named by the `report_file`
 * key (required), with one O_APPEND write. An instance that is reloaded or
 * unloaded gets its fini after the grace period and the drain, so its
 * line is final; several instances and versions share one file, and the
 * test sums every line. The sum (mod 2^64) next to the count tells a lost
 * event from a doubled one even when their numbers would cancel out.
 *
 * A payload that is missing or not an unsigned integer is an error (the
 * handler returns -1): the daemon counts it, and the soak asserts that
 * there are none.
 *
 * The includer defines TALLY_VERSION and TALLY_PLUGIN (the plugin's own
 * name).
 */
#ifndef TALLY_IMPL_H
#define TALLY_IMPL_H

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>

#include "tp_util.h"

struct tally {
    const char *file; /* host->config string: valid until fini */
    const struct fidbus_host *host;
    _Atomic uint64_t count;
    _Atomic uint64_t sum;
};

static int tally_handle(void *ctx, const struct fidbus_event *ev)
{
    struct tally *t = ctx;
    uint64_t v;
    if (tp_payload_uint(ev->payload, ev->payload_len, &v) < 0)
        return -1;
    atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->sum, v, memory_order_relaxed);
    return 0;
}

static int tally_init(const struct fidbus_host *host, void **ctx)
{
    struct tally *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->host = host;
    t->file = host->config(host->handle, "report_file");
    if (!t->file) {
        host->log(host->handle, FIDBUS_LOG_ERROR,
                  "tally: the 'report_file' key is required");
        free(t);
        return -EINVAL;
    }
    *ctx = t;
    return 0;
}

static void tally_fini(void *ctx)
{
    struct tally *t = ctx;
    char line[128];
    snprintf(line, sizeof line, "tally v=%s count=%" PRIu64 " sum=%" PRIu64 "\n",
             TALLY_VERSION, atomic_load(&t->count), atomic_load(&t->sum));
    int rc = tp_append(t->file, line);
    if (rc < 0)
        t->host->log(t->host->handle, FIDBUS_LOG_ERROR, "tally: cannot append to %s: %s",
                     t->file, strerror(-rc));
    free(t);
}

static const struct fidbus_function tally_functions[] = {
    {.ns = "test",
     .name = "tally",
     .version = TALLY_VERSION,
     .signature = "event:any",
     .handle = tally_handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = TALLY_PLUGIN,
    .version = TALLY_VERSION,
    .description = "test.tally: counts and sums events, appends the totals at fini",
    .init = tally_init,
    .fini = tally_fini,
    .functions = tally_functions,
    .nfunctions = 1,
};

#endif
