/* Test plugin: test.fail@1.0.0, inline, always fails with -EIO (handler
 * errors, HANDLER_FAILED acks). */
#include <errno.h>

#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return -EIO;
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "fail",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "fail",
    .version = "1.0.0",
    .description = "a handler that always fails",
    .functions = functions,
    .nfunctions = 1,
};
