/*
 * Test plugin: test.seen@1.0.0 (signature "event:any", inline), for the
 * restart test (tests/e2e/test_e2e_restart.c), which must show that every
 * numbered event arrived at least once across several daemon runs and
 * count the ones that arrived twice.
 *
 * Each event's payload is a CBOR unsigned integer below the `max` key
 * (required): the publisher's event number. The instance counts how often
 * it saw each number (relaxed atomic adds: two I/O threads may handle
 * events at once). At fini it appends one binary record to the file named
 * by `report_file` (required): the 4 bytes "SEEN", `max` as a 32-bit
 * little-endian number, then `max` 16-bit little-endian counts (saturated
 * at 65535), in one O_APPEND write. One daemon run gives one record; the
 * test adds the records up. A payload that is missing, not an unsigned
 * integer, or not below `max` fails the handler (-EINVAL), which the
 * daemon answers with HANDLER_FAILED and the publisher reports.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp_util.h"

#define SEEN_MAX_LIMIT 10000000LL

struct seen {
    const struct fidbus_host *host;
    const char *file; /* host->config string: valid until fini */
    size_t max;
    _Atomic uint16_t *counts;
};

static int seen_handle(void *ctx, const struct fidbus_event *ev)
{
    struct seen *s = ctx;
    uint64_t v;
    if (tp_payload_uint(ev->payload, ev->payload_len, &v) < 0 || v >= s->max)
        return -EINVAL;
    /* Saturate rather than wrap: a count that wrapped to 0 would read as a
     * lost event. */
    uint16_t old = atomic_load_explicit(&s->counts[v], memory_order_relaxed);
    while (old != UINT16_MAX && !atomic_compare_exchange_weak_explicit(
                                    &s->counts[v], &old, (uint16_t)(old + 1),
                                    memory_order_relaxed, memory_order_relaxed))
        ;
    return 0;
}

static int seen_init(const struct fidbus_host *host, void **ctx)
{
    long long max = tp_config_num(host, "max", -1);
    const char *file = host->config(host->handle, "report_file");
    if (!file || max <= 0 || max > SEEN_MAX_LIMIT) {
        host->log(host->handle, FIDBUS_LOG_ERROR,
                  "seen: 'report_file' and 'max' (1..%lld) are required", SEEN_MAX_LIMIT);
        return -EINVAL;
    }
    struct seen *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->counts = calloc((size_t)max, sizeof *s->counts);
    if (!s->counts) {
        free(s);
        return -ENOMEM;
    }
    s->host = host;
    s->file = file;
    s->max = (size_t)max;
    *ctx = s;
    return 0;
}

static void seen_fini(void *ctx)
{
    struct seen *s = ctx;
    size_t n = 8 + 2 * s->max;
    uint8_t *rec = malloc(n);
    int rc = -ENOMEM;
    if (rec) {
        memcpy(rec, "SEEN", 4);
        for (int i = 0; i < 4; i++)
            rec[4 + i] = (uint8_t)((uint32_t)s->max >> (8 * i));
        for (size_t i = 0; i < s->max; i++) {
            uint16_t c = atomic_load_explicit(&s->counts[i], memory_order_relaxed);
            rec[8 + 2 * i] = (uint8_t)c;
            rec[9 + 2 * i] = (uint8_t)(c >> 8);
        }
        rc = 0;
        int fd = open(s->file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = -errno;
        } else {
            ssize_t w = write(fd, rec, n);
            rc = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
            close(fd);
        }
        free(rec);
    }
    if (rc < 0)
        s->host->log(s->host->handle, FIDBUS_LOG_ERROR, "seen: cannot append to %s: %s",
                     s->file, strerror(-rc));
    free(s->counts);
    free(s);
}

static const struct fidbus_function seen_functions[] = {
    {.ns = "test",
     .name = "seen",
     .version = "1.0.0",
     .signature = "event:any",
     .handle = seen_handle},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "seen",
    .version = "1.0.0",
    .description = "test.seen: counts each numbered event, appends the counts at fini",
    .init = seen_init,
    .fini = seen_fini,
    .functions = seen_functions,
    .nfunctions = 1,
};
