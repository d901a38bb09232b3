/*
 * The daemon's log: one line per message on stderr, "LEVEL: text", which
 * journald picks up under systemd (a "<N>" syslog prefix replaces
 * "fidbusd: LEVEL: " when JOURNAL_STREAM names our stderr, so the journal
 * sees the level). Thread-safe: each line goes out in one write(2).
 */
#ifndef FB_LOG_H
#define FB_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

/* [daemon] log_level; the config (config/config.c) parses it. */
enum fb_log_level { FB_LOG_ERROR = 0, FB_LOG_WARN, FB_LOG_INFO, FB_LOG_DEBUG };

void fb_log_set_level(enum fb_log_level level);
enum fb_log_level fb_log_get_level(void);
/* "error", "warn", "info", "debug" (static storage). */
const char *fb_log_level_name(enum fb_log_level l);
void fb_log(enum fb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fb_logv(enum fb_log_level level, const char *prefix, const char *fmt, va_list ap);

#define fb_error(...) fb_log(FB_LOG_ERROR, __VA_ARGS__)
#define fb_warn(...) fb_log(FB_LOG_WARN, __VA_ARGS__)
#define fb_info(...) fb_log(FB_LOG_INFO, __VA_ARGS__)
#define fb_debug(...) fb_log(FB_LOG_DEBUG, __VA_ARGS__)

/*
 * Rate-limited lines, for what a client can make the daemon say as often
 * as it likes (refusals, limits hit): a client looping on a refusal could
 * otherwise write thousands of lines a second, past journald's own rate
 * limit, which would then drop the daemon's other warnings too.
 *
 * Each call site has its own limiter (fb_warn_limited declares a static
 * one): FB_LOG_BURST lines go out at once (or the burst the site gives,
 * fb_warn_limited_burst), then at most one per FB_LOG_INTERVAL_MS (a GCRA
 * token bucket). The first line let through
 * after some were held back is preceded by "N more suppressed like the
 * next line", so nothing is hidden without a count. The count is written
 * only when a later line of the site gets through. Thread-safe (a mutex
 * per site: these lines are never on the per-event path, only on its
 * refusals).
 */
#define FB_LOG_BURST 10u
#define FB_LOG_INTERVAL_MS 1000u

struct fb_log_limit {
    pthread_mutex_t lock;
    uint64_t tat_ns;     /* GCRA's theoretical arrival time */
    uint64_t suppressed; /* lines held back since the last one written */
    unsigned burst;      /* lines let through at once, at least 1 */
};
/* clang-format off */
#define FB_LOG_LIMIT_INIT(burst) {PTHREAD_MUTEX_INITIALIZER, 0, 0, (burst)}
/* clang-format on */

/* Decides one line of the site at now_ns (CLOCK_MONOTONIC): returns true
 * if it may go out, with *held the lines held back before it (to report),
 * else counts it as held back. */
bool fb_log_limit_take(struct fb_log_limit *l, uint64_t now_ns, uint64_t *held);
void fb_log_limited(struct fb_log_limit *l, enum fb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fb_warn_limited_burst(burst, ...)                                                \
    do {                                                                                 \
        static struct fb_log_limit fb_log_limit_ = FB_LOG_LIMIT_INIT(burst);             \
        fb_log_limited(&fb_log_limit_, FB_LOG_WARN, __VA_ARGS__);                        \
    } while (0)
#define fb_warn_limited(...) fb_warn_limited_burst(FB_LOG_BURST, __VA_ARGS__)

#endif
