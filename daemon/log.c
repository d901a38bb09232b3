/*
 * Line-at-a-time logging to stderr. The level test is a relaxed atomic load
 * so a disabled debug line costs one compare on the hot path.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic int log_level = FB_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities for sd-daemon(3) style prefixes */
static const char *const level_prio[] = {"<3>", "<4>", "<6>", "<7>"};

void fb_log_set_level(enum fb_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

enum fb_log_level fb_log_get_level(void)
{
    return (enum fb_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

void fb_logv(enum fb_log_level level, const char *prefix, const char *fmt, va_list ap)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    if ((int)level < 0 || level > FB_LOG_DEBUG)
        level = FB_LOG_ERROR;

    char line[2048];
    int n;
    if (getenv("JOURNAL_STREAM"))
        n = snprintf(line, sizeof line, "%s", level_prio[level]);
    else
        n = snprintf(line, sizeof line, "fidbusd: %s: ", level_names[level]);
    if (prefix && n >= 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s: ", prefix);
    if (n >= 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
    /* one line per message, even if the text had newlines */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void fb_log(enum fb_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fb_logv(level, NULL, fmt, ap);
    va_end(ap);
}

const char *fb_log_level_name(enum fb_log_level l)
{
    return (unsigned)l <= FB_LOG_DEBUG ? level_names[l] : "?";
}
