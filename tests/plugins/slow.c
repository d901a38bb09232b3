/*
 * Test plugin: test.slow@1.0.0, FIDBUS_FN_BLOCKING. Sleeps `delay_ms`
 * (default 50), then, if `file` is set, appends "ID SEQ\n" with one write
 * and returns 0. Used to check that blocking calls run on the pool, that
 * acks wait for them and that shutdown drains them.
 */
#include "tp_util.h"

struct slow {
    const char *file; /* host config string, valid until fini */
    long long delay_ms;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    const struct slow *s = ctx;
    tp_sleep_ms(s->delay_ms);
    return tp_append_id_seq(s->file, ev);
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct slow *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->file = host->config(host->handle, "file");
    int rc = tp_config_amount(host, "delay_ms", 50, "milliseconds", &s->delay_ms);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *ctx = s;
    return 0;
}

static void fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "slow",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = FIDBUS_FN_BLOCKING,
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "slow",
    .version = "1.0.0",
    .description = "a blocking handler that sleeps",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
