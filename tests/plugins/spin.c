/*
 * Test plugin: test.spin@1.0.0, an inline handler that busy-waits
 * `spin_us` microseconds (default 100) on the worker's own thread. Used
 * to make one connection's flood expensive for its worker, so the fair
 * share test (e2e.hostile) can see whether other connections wait.
 */
#include <time.h>

#include "tp_util.h"

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ev;
    long long until = now_ns() + *(const long long *)ctx * 1000;
    while (now_ns() < until)
        ;
    return 0;
}

static int init(const struct fidbus_host *host, void **ctx)
{
    long long *us = malloc(sizeof *us);
    if (!us)
        return -ENOMEM;
    int rc = tp_config_amount(host, "spin_us", 100, "microseconds", us);
    if (rc < 0) {
        free(us);
        return rc;
    }
    *ctx = us;
    return 0;
}

static void fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "spin",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = 0,
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "spin",
    .version = "1.0.0",
    .description = "an inline handler that busy-waits",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
