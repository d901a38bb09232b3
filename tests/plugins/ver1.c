/* Test plugin: test.ver@1.0.0 (inline, returns 0), for latest and pinned
 * route targets next to ver2.so. */
#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "ver",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "ver1",
    .version = "1.0.0",
    .description = "test.ver at version 1.0.0",
    .functions = functions,
    .nfunctions = 1,
};
