/* Test plugin: provides fidbus.log@1.0.0 again, so loading it next to
 * log.so is a funcID CONFLICT and must leave nothing of it registered. */
#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

/* A function of its own first, so a refusal must undo more than one. */
static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "dup_own",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
    {.ns = "fidbus",
     .name = "log",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "dup",
    .version = "1.0.0",
    .description = "collides with log.so",
    .functions = functions,
    .nfunctions = 2,
};
