/* Test plugin: test.why@1.0.0, inline. Its init says why it fails through
 * host->set_error, picked by the key `mode`:
 *   reason   "cannot open WHAT: No such file or directory" (WHAT: key
 *            `what`), then -ENOENT
 *   twice    "first", then "second": the last call wins
 *   percent_n  a format with %n (writes through a pointer): refused
 *   long     5,000 bytes of 'x' then "END": cut to FIDBUS_ERROR_MAX
 *   ctrl     a reason with a newline and an escape character
 *   logged   no set_error, only an ERROR log line (the older way)
 *   ok       calls set_error, then succeeds: no reason, a normal load;
 *            the handler calls set_error too (ignored: not during init)
 * Any other mode (or none) fails with no reason at all. */
#include <errno.h>
#include <string.h>

#include <fidbus/plugin.h>

static int handle(void *ctx, const struct fidbus_event *ev)
{
    const struct fidbus_host *h = ctx;
    (void)ev;
    h->set_error(h->handle, "from a handler: %s", "ignored");
    return 0;
}

static int init(const struct fidbus_host *h, void **ctx)
{
    const char *mode = h->config(h->handle, "mode");
    *ctx = (void *)h;
    if (!mode)
        return -EINVAL;
    if (strcmp(mode, "reason") == 0) {
        const char *what = h->config(h->handle, "what");
        h->set_error(h->handle, "cannot open %s: %s", what ? what : "?",
                     strerror(ENOENT));
        return -ENOENT;
    }
    if (strcmp(mode, "twice") == 0) {
        h->set_error(h->handle, "first");
        h->set_error(h->handle, "second");
        return -EINVAL;
    }
    if (strcmp(mode, "percent_n") == 0) {
        static int written = 12345;
        /* what a hostile or careless plugin could hand over; the daemon
         * must not write through the pointer */
        const char *fmt = h->config(h->handle, "fmt");
        if (!fmt)
            fmt = "wrote %n here";
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
        h->set_error(h->handle, fmt, &written);
#pragma GCC diagnostic pop
        return written == 12345 ? -EINVAL : -EFAULT;
    }
    if (strcmp(mode, "long") == 0) {
        static char big[5004];
        memset(big, 'x', 5000);
        memcpy(big + 5000, "END", 4);
        h->set_error(h->handle, "%s", big);
        return -E2BIG;
    }
    if (strcmp(mode, "ctrl") == 0) {
        h->set_error(h->handle, "line one\nline two\033[31m red");
        return -EINVAL;
    }
    if (strcmp(mode, "logged") == 0) {
        h->log(h->handle, FIDBUS_LOG_ERROR, "only logged: %s", "bad thing");
        return -EINVAL;
    }
    if (strcmp(mode, "ok") == 0) {
        h->set_error(h->handle, "said but not failed");
        return 0;
    }
    return -EINVAL;
}

static const struct fidbus_function functions[] = {
    {.ns = "test",
     .name = "why",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "why",
    .version = "1.0.0",
    .description = "an init that says why it fails",
    .init = init,
    .functions = functions,
    .nfunctions = 1,
};
