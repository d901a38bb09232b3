/* Test plugin: test.crash@1.0.0, inline; crashes its process (a write
 * through a NULL pointer) on an event whose id is `crash_on` (config key,
 * default "crash.now"), succeeds on any other. For fidbus-serve: a
 * plugin that crashes takes down only the process that hosts it
 * (tests/e2e/test_e2e_serve.c). */
#include <stdlib.h>
#include <string.h>

#include <fidbus/plugin.h>

static const char *crash_on = "crash.now";

static int init(const struct fidbus_host *host, void **ctx)
{
    const char *v = host->config(host->handle, "crash_on");
    if (v)
        crash_on = v;
    *ctx = NULL;
    return 0;
}

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    if (strcmp(ev->id, crash_on) == 0) {
        volatile int *p = NULL;
        *p = 1;
    }
    return 0;
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "crash",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "crash",
    .version = "1.0.0",
    .description = "crashes its process on a chosen event",
    .init = init,
    .functions = functions,
    .nfunctions = 1,
};
