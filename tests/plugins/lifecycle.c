/*
 * Test plugin: test.life@1.0.0, inline, returns 0. init appends "init\n"
 * to `file`, fini appends "fini\n"; with `tick_ms` set, a repeating timer
 * appends "tick\n". Shows the order of the lifecycle calls and that
 * timers fire on the main loop and stop at unload. With `init_wait_ms`,
 * init starts a 0 ms one-shot timer and then waits that long: if the
 * timer fired meanwhile (a callback racing init), init fails, saying so.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "tp_util.h"

struct life {
    const char *file;
    atomic_bool fired;
};

static void fire(void *arg)
{
    struct life *l = arg;
    atomic_store(&l->fired, true);
}

/* Waits up to ms for the 0 ms timer; true when it fired during init. */
static bool fired_during(struct life *l, long long ms)
{
    for (long long waited = 0; waited < ms; waited += 5) {
        if (atomic_load(&l->fired))
            return true;
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    }
    return atomic_load(&l->fired);
}

static int handle(void *ctx, const struct fidbus_event *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

static void tick(void *arg)
{
    struct life *l = arg;
    tp_append(l->file, "tick\n");
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct life *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->file = host->config(host->handle, "file");
    long long tick_ms = tp_config_num(host, "tick_ms", 0);
    long long wait_ms = tp_config_num(host, "init_wait_ms", 0);
    if (tick_ms < 0 || wait_ms < 0) {
        free(l);
        return -EINVAL;
    }
    if (wait_ms > 0) {
        uint64_t id;
        int rc = host->timer_start(host->handle, 0, 0, fire, l, &id);
        if (rc == 0 && fired_during(l, wait_ms))
            rc = -EBUSY;
        if (rc < 0) {
            host->set_error(host->handle, rc == -EBUSY
                                              ? "a timer callback ran during init"
                                              : "timer_start failed");
            free(l);
            return rc;
        }
    }
    if (l->file) {
        int rc = tp_append(l->file, "init\n");
        if (rc < 0) {
            free(l);
            return rc;
        }
        if (tick_ms > 0) {
            uint64_t id;
            rc = host->timer_start(host->handle, (uint64_t)tick_ms, (uint64_t)tick_ms,
                                   tick, l, &id);
            if (rc < 0) {
                free(l);
                return rc;
            }
        }
    }
    *ctx = l;
    return 0;
}

static void fini(void *ctx)
{
    struct life *l = ctx;
    if (l->file)
        tp_append(l->file, "fini\n");
    free(l);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "life",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "lifecycle",
    .version = "1.0.0",
    .description = "records init, timer ticks and fini in a file",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = 1,
};
