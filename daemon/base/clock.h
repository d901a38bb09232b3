/*
 * The daemon's one clock: CLOCK_MONOTONIC in nanoseconds, for deadlines,
 * latencies and uptime. Depends on nothing (base/).
 */
#ifndef FB_CLOCK_H
#define FB_CLOCK_H

#include <stdint.h>

uint64_t fb_now_ns(void);

#endif
