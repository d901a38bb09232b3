/* Helpers shared by the test plugins (header only: every .c here is one
 * plugin). */
#ifndef TP_UTIL_H
#define TP_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fidbus/plugin.h>

/* Appends text to path with one O_APPEND write, so lines from several
 * threads never interleave. Returns 0 or -errno. */
static inline int tp_append(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int rc = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
    close(fd);
    return rc;
}

/* The line the blocking test plugins (slow, gate) write for each call they
 * ran: "ID SEQ\n", appended to file with tp_append. 0 when file is NULL
 * (the key is unset), else what tp_append returns. */
static inline int tp_append_id_seq(const char *file, const struct fidbus_event *ev)
{
    if (!file)
        return 0;
    char line[320];
    snprintf(line, sizeof line, "%s %" PRIu64 "\n", ev->id, ev->seq);
    return tp_append(file, line);
}

/* The value of a CBOR unsigned integer that is the whole payload (the
 * counting test plugins take one number per event). 0, or -1 if the
 * payload is anything else. */
static inline int tp_payload_uint(const uint8_t *p, size_t n, uint64_t *v)
{
    if (!p || n == 0 || (p[0] >> 5) != 0)
        return -1;
    unsigned ai = p[0] & 0x1f;
    size_t len = ai < 24    ? 0
                 : ai == 24 ? 1
                 : ai == 25 ? 2
                 : ai == 26 ? 4
                 : ai == 27 ? 8
                            : 9;
    if (len == 9 || n != 1 + len)
        return -1;
    uint64_t x = ai < 24 ? ai : 0;
    for (size_t i = 0; i < len; i++)
        x = x << 8 | p[1 + i];
    *v = x;
    return 0;
}

/* A non-negative integer config key, or def if unset; -1 if malformed. */
static inline long long tp_config_num(const struct fidbus_host *host, const char *key,
                                      long long def)
{
    const char *v = host->config(host->handle, key);
    if (!v)
        return def;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < 0)
        return -1;
    return n;
}

/* tp_config_num into *out, or -EINVAL with "KEY: want UNIT" logged when
 * the value is malformed. */
static inline int tp_config_amount(const struct fidbus_host *host, const char *key,
                                   long long def, const char *unit, long long *out)
{
    *out = tp_config_num(host, key, def);
    if (*out >= 0)
        return 0;
    host->log(host->handle, FIDBUS_LOG_ERROR, "%s: want %s", key, unit);
    return -EINVAL;
}

/* Sleeps ms milliseconds, through signals. */
static inline void tp_sleep_ms(long long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

#endif
