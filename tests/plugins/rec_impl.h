/*
 * The body of the recorder test plugins rec1.c and rec2.c: two versions of
 * one function, test.rec@REC_VERSION (signature "event:any", inline), so a
 * test can see which version each event went to. Every call appends one
 * line "rec v=VERSION user=USER gen=GENERATION event=ID" to the file named
 * by the `file` key (USER is the event's `user` tag, "-" without one), with
 * one O_APPEND write so lines from several I/O threads never interleave.
 * Without `file` init fails.
 *
 * The includer defines REC_VERSION and REC_PLUGIN (the plugin's own name).
 */
#ifndef REC_IMPL_H
#define REC_IMPL_H

#include <inttypes.h>
#include <stdio.h>

#include "tp_util.h"

struct rec {
    const char *file; /* host->config string: valid until fini */
};

static int rec_handle(void *ctx, const struct fidbus_event *ev)
{
    const struct rec *r = ctx;
    const char *user = "-";
    for (size_t i = 0; i < ev->ntags; i++)
        if (strcmp(ev->tags[i].key, "user") == 0)
            user = ev->tags[i].value;
    char line[600];
    int n = snprintf(line, sizeof line, "rec v=%s user=%.255s gen=%" PRIu64 " event=%s\n",
                     REC_VERSION, user, ev->generation, ev->id);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    return tp_append(r->file, line) == 0 ? 0 : -1;
}

static int rec_init(const struct fidbus_host *host, void **ctx)
{
    struct rec *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->file = host->config(host->handle, "file");
    if (!r->file) {
        host->log(host->handle, FIDBUS_LOG_ERROR, "rec: the 'file' key is required");
        free(r);
        return -EINVAL;
    }
    *ctx = r;
    return 0;
}

static void rec_fini(void *ctx)
{
    free(ctx);
}

static const struct fidbus_function rec_functions[] = {
    {.ns = "test",
     .name = "rec",
     .version = REC_VERSION,
     .signature = "event:any",
     .handle = rec_handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = REC_PLUGIN,
    .version = REC_VERSION,
    .description = "test.rec: records the version, user tag and generation of each event",
    .init = rec_init,
    .fini = rec_fini,
    .functions = rec_functions,
    .nfunctions = 1,
};

#endif
