/*
 * Test plugin: test.slow@1.0.0, FIDBUS_FN_BLOCKING. Sleeps `delay_ms`
 * (default 50), then, if `file` is set, appends "ID SEQ\n" with one write
 * and returns 0. Used to check that blocking calls run on the pool, that
 * acks wait for them and that shutdown drains them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "tp_util.h"

struct slow {
    const char *file; /* host config string, valid until fini */
    long long delay_ms;
};

static int handle(void *ctx, const struct fidbus_event *ev)
{
    const struct slow *s = ctx;
    struct timespec ts = {.tv_sec = s->delay_ms / 1000,
                          .tv_nsec = (s->delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    if (s->file) {
        char line[320];
        snprintf(line, sizeof line, "%s %" PRIu64 "\n", ev->id, ev->seq);
        return tp_append(s->file, line);
    }
    return 0;
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct slow *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->file = host->config(host->handle, "file");
    s->delay_ms = tp_config_num(host, "delay_ms", 50);
    if (s->delay_ms < 0) {
        host->log(host->handle, FIDBUS_LOG_ERROR, "delay_ms: want milliseconds");
        free(s);
        return -EINVAL;
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
