/*
 * What the two soaks (e2e.soak, e2e.hostile_soak) share: the record of the
 * first failure their threads hit (Check is not thread-safe, so threads
 * make no assertion: they record, and the main thread asserts after
 * joining them), the run's length, and the well-behaved publisher whose
 * every event must come out counted exactly once.
 */
#ifndef FB_E2E_SOAK_PUB_H
#define FB_E2E_SOAK_PUB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* The first failure ("" while all is well); any failure sets stop. */
struct fb_soak_fail {
    atomic_bool stop;
    pthread_mutex_t lock;
    char failure[1024];
};
void fb_soak_fail_init(struct fb_soak_fail *f);
void fb_soak_fail_destroy(struct fb_soak_fail *f);
void fb_soak_failf(struct fb_soak_fail *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* $FIDBUS_SOAK_SECONDS, dflt when unset; -1 unless it is a number of
 * seconds above 0 and below a day. */
double fb_soak_seconds(double dflt);

/*
 * One publisher thread (fb_soak_publisher(pub)) on its own connection to
 * addr: bursts of `burst` un-acked PUBLISHes of `event` and then one acked
 * one, which must be ACKed with result 1, until fail->stop (or end_ms, if
 * not 0); then a PING, the barrier that every event sent was handled. The
 * payload of each is a number (a 9-byte CBOR uint) unique across
 * publishers, by id; sent, acked and sum (mod 2^64) are what the counting
 * plugin must report. With nusers > 0 each event carries the tag
 * user=u<number mod nusers>.
 */
struct fb_soak_pub {
    struct fb_soak_fail *fail;
    const char *addr;
    const char *event;
    unsigned burst;
    unsigned nusers;
    uint64_t end_ms;
    unsigned id;
    pthread_t thread;
    uint64_t sent, acked, sum;
};
void *fb_soak_publisher(void *pub);

#endif
