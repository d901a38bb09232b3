/*
 * Test plugin: test.life@1.0.0, inline, returns 0. init appends "init\n"
 * to `file`, fini appends "fini\n"; with `tick_ms` set, a repeating timer
 * appends "tick\n". Shows the order of the lifecycle calls and that
 * timers fire on the main loop and stop at unload.
 */
#include "tp_util.h"

struct life {
    const char *file;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static void tick(void *arg)
{
    struct life *l = arg;
    tp_append(l->file, "tick\n");
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct life *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->file = host->config(host->handle, "file");
    long long tick_ms = tp_config_num(host, "tick_ms", 0);
    if (tick_ms < 0) {
        free(l);
        return -EINVAL;
    }
    if (l->file) {
        int rc = tp_append(l->file, "init\n");
        if (rc < 0) {
            free(l);
            return rc;
        }
        if (tick_ms > 0) {
            uint64_t id;
            rc = host->timer_start(host->handle, (uint64_t)tick_ms, (uint64_t)tick_ms,
                                   tick, l, &id);
            if (rc < 0) {
                free(l);
                return rc;
            }
        }
    }
    *ctx = l;
    return 0;
}

static void fini(void *ctx)
{
    struct life *l = ctx;
    if (l->file)
        tp_append(l->file, "fini\n");
    free(l);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "life",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "lifecycle",
    .version = "1.0.0",
    .description = "records init, timer ticks and fini in a file",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
