/*
 * Test plugin: test.republish@1.0.0, inline. Republishes every event it
 * gets (same id, tags and payload) through host->publish, so a route that
 * sends the event back to it loops until the hop limit stops it. At fini
 * it writes "published=N loop_refused=M\n" to `file`: N publish calls that
 * succeeded (>= 0), M refused with -ELOOP.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "tp_util.h"

struct repub {
    const struct fidbus_host *host;
    const char *file;
    _Atomic unsigned long published;
    _Atomic unsigned long loop_refused;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    struct repub *r = ctx;
    int rc = r->host->publish(r->host->handle, ev->id, ev->tags, ev->ntags, ev->payload,
                              ev->payload_len);
    if (rc >= 0)
        atomic_fetch_add(&r->published, 1);
    else if (rc == -ELOOP)
        atomic_fetch_add(&r->loop_refused, 1);
    return 0;
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct repub *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->host = host;
    r->file = host->config(host->handle, "file");
    *ctx = r;
    return 0;
}

static void fini(void *ctx)
{
    struct repub *r = ctx;
    if (r->file) {
        char line[96];
        snprintf(line, sizeof line, "published=%lu loop_refused=%lu\n",
                 atomic_load(&r->published), atomic_load(&r->loop_refused));
        tp_append(r->file, line);
    }
    free(r);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "republish",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "republish",
    .version = "1.0.0",
    .description = "republishes what it receives (hop limit test)",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
