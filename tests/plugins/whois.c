/*
 * Test plugin: test.whois@1.0.0 (inline) and test.whois_blocking@1.0.0
 * (blocking, so the pool's copy of the event is what it reads). Each call
 * appends "FN EVENT uid=U pid=P conn=C\n" to `file`: the publisher's
 * identity as struct fidbus_event gives it. An event whose id starts with
 * "again." is first republished through host->publish as "whois.re", so
 * the identity of a plugin's own publish shows up as well.
 */
#include <stdio.h>
#include <string.h>

#include "tp_util.h"

struct whois {
    const struct fidbus_host *host;
    const char *file;
};

static int note(struct whois *w, const char *fn, const struct fidbus_event *ev)
{
    if (strncmp(ev->id, "again.", 6) == 0) {
        int rc = w->host->publish(w->host->handle, "whois.re", NULL, 0, NULL, 0);
        if (rc < 0)
            return rc;
    }
    char line[512];
    snprintf(line, sizeof line, "%s %s uid=%lld pid=%lld conn=%llu\n", fn, ev->id,
             (long long)ev->uid, (long long)ev->pid, (unsigned long long)ev->conn);
    tp_append(w->file, line);
    return 0;
}

static int handle(void *ctx, const struct fidbus_event *ev)
{
    return note(ctx, "inline", ev);
}

static int handle_blocking(void *ctx, const struct fidbus_event *ev)
{
    return note(ctx, "blocking", ev);
}

static int init(const struct fidbus_host *host, void **ctx)
{
    struct whois *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->host = host;
    w->file = host->config(host->handle, "file");
    if (!w->file) {
        free(w);
        return -EINVAL;
    }
    *ctx = w;
    return 0;
}

static void fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "whois",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
    {.ns = "test",
     .name = "whois_blocking",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = FIDBUS_FN_BLOCKING,
     .handle = handle_blocking},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "whois",
    .version = "1.0.0",
    .description = "writes who published each event it gets",
    .init = init,
    .fini = fini,
    .functions = functions,
    .nfunctions = sizeof functions / sizeof functions[0],
};
