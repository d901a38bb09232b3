/* Helpers shared by the test plugins (header only: every .c here is one
 * plugin). */
#ifndef TP_UTIL_H
#define TP_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
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

#endif
