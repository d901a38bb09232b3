/*
 * Line-at-a-time logging to stderr. The level test is a relaxed atomic load
 * so a disabled debug line costs one compare on the hot path.
 *
 * No timestamps in either format: a terminal user has the shell, and
 * journald (or any supervisor's log) stamps every line itself, so ours
 * would be a second one.
 */
#include "base/log.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = FB_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities for sd-daemon(3) style prefixes */
static const char *const level_prio[] = {"<3>", "<4>", "<6>", "<7>"};

/* -1 not decided yet, then 0 or 1. Deciding twice (a race between two
 * first lines) gives the same answer, so no lock. */
static _Atomic int to_journal = -1;

/*
 * journald's rule (sd_journal_stream_fd(3), systemd.exec(5)): JOURNAL_STREAM
 * is "DEV:INO" of the stream systemd connected, and it counts only while
 * stderr is still that stream -- a child whose stderr was redirected to a
 * file inherits the variable and must not put "<N>" into the file.
 */
static bool stderr_is_journal(void)
{
    int v = atomic_load_explicit(&to_journal, memory_order_relaxed);
    if (v >= 0)
        return v;
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    v = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
        fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
        (unsigned long long)st.st_ino == ino;
    atomic_store_explicit(&to_journal, v, memory_order_relaxed);
    return v;
}

void fb_log_set_level(enum fb_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

enum fb_log_level fb_log_get_level(void)
{
    return (enum fb_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* Formats one line, newline included, into line (size bytes, at least 2):
 * the level's prefix, then prefix (if any), then the text. Returns its
 * length, 0 on a format error. */
static size_t format_line(char *line, size_t size, enum fb_log_level level,
                          const char *prefix, const char *fmt, va_list ap)
{
    int n;
    if (stderr_is_journal())
        n = snprintf(line, size, "%s", level_prio[level]);
    else
        n = snprintf(line, size, "fidbusd: %s: ", level_names[level]);
    if (prefix && n >= 0 && (size_t)n < size)
        n += snprintf(line + n, size - (size_t)n, "%s: ", prefix);
    if (n >= 0 && (size_t)n < size)
        n += vsnprintf(line + n, size - (size_t)n, fmt, ap);
    if (n < 0)
        return 0;
    size_t len = (size_t)n < size - 1 ? (size_t)n : size - 2;
    /* one line per message, even if the text had newlines */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[len++] = '\n';
    return len;
}

static size_t format_linef(char *line, size_t size, enum fb_log_level level,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, size, level, NULL, fmt, ap);
    va_end(ap);
    return n;
}

void fb_logv(enum fb_log_level level, const char *prefix, const char *fmt, va_list ap)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    if ((int)level < 0 || level > FB_LOG_DEBUG)
        level = FB_LOG_ERROR;
    char line[2048];
    size_t len = format_line(line, sizeof line, level, prefix, fmt, ap);
    if (len)
        (void)!write(STDERR_FILENO, line, len);
}

void fb_log(enum fb_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fb_logv(level, NULL, fmt, ap);
    va_end(ap);
}

bool fb_log_limit_take(struct fb_log_limit *l, uint64_t now_ns, uint64_t *held)
{
    const uint64_t interval = FB_LOG_INTERVAL_MS * 1000000ull;
    const uint64_t tolerance = (uint64_t)(l->burst - 1) * interval;
    pthread_mutex_lock(&l->lock);
    uint64_t tat = l->tat_ns > now_ns ? l->tat_ns : now_ns;
    bool ok = tat - now_ns <= tolerance;
    if (ok) {
        l->tat_ns = tat + interval;
        *held = l->suppressed;
        l->suppressed = 0;
    } else {
        l->suppressed++;
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

void fb_log_limited(struct fb_log_limit *l, enum fb_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    if ((int)level < 0 || level > FB_LOG_DEBUG)
        level = FB_LOG_ERROR;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t held = 0;
    if (!fb_log_limit_take(l, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec,
                           &held))
        return;
    /* The count and the line in one write, so no other thread's line
     * comes between them. */
    char lines[2048 + 160];
    size_t n = 0;
    if (held)
        n = format_linef(lines, 160, level,
                         "%llu more suppressed like the next line (past %u at once, "
                         "one a second)",
                         (unsigned long long)held, l->burst);
    va_list ap;
    va_start(ap, fmt);
    size_t m = format_line(lines + n, sizeof lines - n, level, NULL, fmt, ap);
    va_end(ap);
    if (m)
        (void)!write(STDERR_FILENO, lines, n + m);
}

const char *fb_log_level_name(enum fb_log_level l)
{
    return (unsigned)l <= FB_LOG_DEBUG ? level_names[l] : "?";
}
