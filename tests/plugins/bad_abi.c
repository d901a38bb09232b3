/*
 * Test plugin: looks like a plugin in every way but declares ABI 999. The
 * loader must refuse it with INVALID and a message naming the ABI, without
 * calling init.
 */
#include <errno.h>

#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static int init(const struct fidbus_host *host, void **ctx)
{
    (void)host;
    (void)ctx;
    return -EPERM; /* never reached: the ABI check comes first */
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "bad_abi",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = 999,
    .name = "bad_abi",
    .version = "1.0.0",
    .description = "declares an ABI the daemon does not speak",
    .init = init,
    .functions = functions,
    .nfunctions = 1,
};
