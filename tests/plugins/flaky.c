/*
 * Test plugin for handler faults (tests/e2e/test_e2e_faults.c): two
 * functions that fail on demand, so a test can make a run of failures,
 * then a success.
 *   - test.flaky@1.0.0, inline;
 *   - test.flaky_slow@1.0.0, FIDBUS_FN_BLOCKING, sleeps `delay_ms`
 *     (default 0) first, to run past handler_deadline_ms.
 * Both return -EIO when the event has the tag fail=1 and 0 otherwise. How
 * often each was called is read from the daemon's `stats` (calls), which
 * counts only real handler invocations.
 */
#include <string.h>

#include "tp_util.h"

struct flaky {
    long long delay_ms;
};

static int verdict(const struct fidbus_event *ev)
{
    for (size_t i = 0; i < ev->ntags; i++)
        if (strcmp(ev->tags[i].key, "fail") == 0 && strcmp(ev->tags[i].value, "1") == 0)
            return -EIO;
    return 0;
}

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    return verdict(ev);
}

static int handle_slow(void *ctx, const struct fidbus_event *ev)
{
    const struct flaky *f = ctx;
    tp_sleep_ms(f->delay_ms);
    return verdict(ev);
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct flaky *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    int rc = tp_config_amount(host, "delay_ms", 0, "milliseconds", &f->delay_ms);
    if (rc < 0) {
        free(f);
        return rc;
    }
    *ctx = f;
    return 0;
}

static void fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "flaky",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
    {.ns = "test",
     .name = "flaky_slow",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = FIDBUS_FN_BLOCKING,
     .handle = handle_slow},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "flaky",
    .version = "1.0.0",
    .description = "handlers that fail on the tag fail=1",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 2,
};
