/*
 * Test plugin: test.gate@1.0.0, FIDBUS_FN_BLOCKING. Each call waits until
 * the file `gate` exists (checked every millisecond), then, if `file` is
 * set, appends "ID SEQ\n" with one write and returns 0. A test keeps the
 * gate shut to hold the blocking pool's threads and fill its queue in a
 * known state, then opens it (creates the file) to let everything run.
 */
#include "tp_util.h"

struct gate {
    const char *gate; /* host config strings, valid until fini */
    const char *file;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    const struct gate *g = ctx;
    while (access(g->gate, F_OK) != 0)
        tp_sleep_ms(1);
    return tp_append_id_seq(g->file, ev);
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct gate *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->gate = host->config(host->handle, "gate");
    g->file = host->config(host->handle, "file");
    if (!g->gate) {
        host->log(host->handle, FIDBUS_LOG_ERROR,
                  "gate: the key 'gate' (a path) is required");
        free(g);
        return -EINVAL;
    }
    *ctx = g;
    return 0;
}

static void fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "gate",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = FIDBUS_FN_BLOCKING,
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "gate",
    .version = "1.0.0",
    .description = "a blocking handler that waits for a file to exist",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
