/*
 * Test plugin: a valid shared object that exports no `fidbus_plugin`
 * symbol (its table is hidden), so the loader must refuse it as "not a
 * fidbus plugin".
 */
#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "no_symbol",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

/* Not exported: built with -fvisibility=hidden and no FIDBUS_PLUGIN_EXPORT. */
const struct fidbus_plugin not_the_symbol = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "no_symbol",
    .functions = functions,
    .nfunctions = 1,
};

/* Something the object does export, so it is a real library. */
FIDBUS_PLUGIN_EXPORT int no_symbol_marker(void)
{
    return not_the_symbol.abi == FIDBUS_PLUGIN_ABI;
}
