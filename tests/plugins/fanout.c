/*
 * Test plugin: test.fanout@1.0.0 (inline) and test.fanout_blocking@1.0.0
 * (blocking). Each call republishes `copies` (default 2) copies of the
 * event it gets (same id, tags and payload) through host->publish, so a
 * route back to it makes a tree of copies^hops events, bounded by the hop
 * limit and by [limits] max_republish. At fini it writes
 * "published=N loop_refused=M budget_refused=B\n" to `file`: publish
 * calls that succeeded, refused with -ELOOP and refused with -EDQUOT.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "tp_util.h"

struct fanout {
    const struct fidbus_host *host;
    const char *file;
    long long copies;
    _Atomic unsigned long published;
    _Atomic unsigned long loop_refused;
    _Atomic unsigned long budget_refused;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    struct fanout *f = ctx;
    for (long long i = 0; i < f->copies; i++) {
        int rc = f->host->publish(f->host->handle, ev->id, ev->tags, ev->ntags,
                                  ev->payload, ev->payload_len);
        if (rc >= 0)
            atomic_fetch_add(&f->published, 1);
        else if (rc == -ELOOP)
            atomic_fetch_add(&f->loop_refused, 1);
        else if (rc == -EDQUOT)
            atomic_fetch_add(&f->budget_refused, 1);
    }
    return 0;
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct fanout *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->host = host;
    f->file = host->config(host->handle, "file");
    f->copies = tp_config_num(host, "copies", 2);
    if (f->copies < 0) {
        free(f);
        return -EINVAL;
    }
    *ctx = f;
    return 0;
}

static void fini(void *ctx)
{
    struct fanout *f = ctx;
    if (f->file) {
        char line[128];
        snprintf(line, sizeof line, "published=%lu loop_refused=%lu budget_refused=%lu\n",
                 atomic_load(&f->published), atomic_load(&f->loop_refused),
                 atomic_load(&f->budget_refused));
        tp_append(f->file, line);
    }
    free(f);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "fanout",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
    {.ns = "test",
     .name = "fanout_blocking",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = FIDBUS_FN_BLOCKING,
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "fanout",
    .version = "1.0.0",
    .description = "republishes copies of what it receives (republish budget test)",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 2,
};
