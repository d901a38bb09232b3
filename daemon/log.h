/*
 * The daemon's log: one line per message on stderr, "LEVEL: text", which
 * journald picks up under systemd (a "<N>" syslog prefix replaces
 * "fidbusd: LEVEL: " when JOURNAL_STREAM names our stderr, so the journal
 * sees the level). Thread-safe: each line goes out in one write(2).
 */
#ifndef FB_LOG_H
#define FB_LOG_H

#include <stdarg.h>

#include "config.h"

void fb_log_set_level(enum fb_log_level level);
enum fb_log_level fb_log_get_level(void);
void fb_log(enum fb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fb_logv(enum fb_log_level level, const char *prefix, const char *fmt, va_list ap);

#define fb_error(...) fb_log(FB_LOG_ERROR, __VA_ARGS__)
#define fb_warn(...) fb_log(FB_LOG_WARN, __VA_ARGS__)
#define fb_info(...) fb_log(FB_LOG_INFO, __VA_ARGS__)
#define fb_debug(...) fb_log(FB_LOG_DEBUG, __VA_ARGS__)

#endif
