/* CLOCK_MONOTONIC in nanoseconds (clock.h). */
#include "base/clock.h"

#include <time.h>

uint64_t fb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
