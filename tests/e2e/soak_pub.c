/* The soaks' shared failure record and publisher (soak_pub.h). */
#include "soak_pub.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <fidbus/client.h>

#include "harness.h"

void fb_soak_fail_init(struct fb_soak_fail *f)
{
    atomic_init(&f->stop, false);
    pthread_mutex_init(&f->lock, NULL);
    f->failure[0] = '\0';
}

void fb_soak_fail_destroy(struct fb_soak_fail *f)
{
    pthread_mutex_destroy(&f->lock);
}

void fb_soak_failf(struct fb_soak_fail *f, const char *fmt, ...)
{
    pthread_mutex_lock(&f->lock);
    if (!f->failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->failure, sizeof f->failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&f->lock);
    atomic_store(&f->stop, true);
}

double fb_soak_seconds(double dflt)
{
    const char *v = getenv("FIDBUS_SOAK_SECONDS");
    if (!v || !*v)
        return dflt;
    char *end;
    double x = strtod(v, &end);
    return *end == '\0' && x > 0 && x < 86400 ? x : -1;
}

/* Every change of a soak fsyncs state.cbor before its REPLY, and on a
 * busy virtual disk a flush has been seen to take seconds: wait longer
 * than the library's 10 s before calling an answer lost. */
static const struct fidbus_client_opts client_opts = {.timeout_ms = 60000};

static bool pub_done(const struct fb_soak_pub *p)
{
    return atomic_load_explicit(&p->fail->stop, memory_order_relaxed) ||
           (p->end_ms && fb_e2e_now_ms() >= p->end_ms);
}

/* One event: the payload is n as a 9-byte CBOR uint. */
static int send_one(const struct fb_soak_pub *p, struct fidbus_client *c, uint64_t n,
                    bool ack, uint64_t *result)
{
    uint8_t payload[9] = {0x1b};
    for (int i = 0; i < 8; i++)
        payload[1 + i] = (uint8_t)(n >> (56 - 8 * i));
    char user[16];
    struct fidbus_tag tag = {.key = "user", .value = user};
    size_t ntags = 0;
    if (p->nusers) {
        snprintf(user, sizeof user, "u%u", (unsigned)(n % p->nusers));
        ntags = 1;
    }
    const struct fidbus_tag *tags = ntags ? &tag : NULL;
    if (ack)
        return fidbus_publish_ack(c, p->event, tags, ntags, payload, sizeof payload,
                                  result);
    return fidbus_publish(c, p->event, tags, ntags, payload, sizeof payload);
}

void *fb_soak_publisher(void *arg)
{
    struct fb_soak_pub *p = arg;
    struct fb_soak_fail *f = p->fail;
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, p->addr, &client_opts);
    if (rc < 0) {
        fb_soak_failf(f, "publisher %u: connect: %s", p->id, fidbus_strerror(rc));
        return NULL;
    }
    /* Numbers never collide between publishers. */
    uint64_t next = (uint64_t)(p->id + 1) << 48;
    while (!pub_done(p)) {
        for (unsigned i = 0; i < p->burst; i++) {
            uint64_t n = next++;
            if ((rc = send_one(p, c, n, false, NULL)) < 0) {
                fb_soak_failf(f, "publisher %u: publish: %s", p->id, fidbus_strerror(rc));
                goto out;
            }
            p->sent++;
            p->sum += n;
        }
        uint64_t n = next++, result = 0;
        rc = send_one(p, c, n, true, &result);
        /* Sent whatever the answer: a refused event is a failure below,
         * and the counts at the end will not match either. */
        p->sent++;
        p->sum += n;
        if (rc < 0 || result != 1) {
            fb_soak_failf(f,
                          "publisher %u: acked publish #%" PRIu64
                          ": %s%s%s (result %" PRIu64 ", expected 1)",
                          p->id, p->acked, fidbus_strerror(rc), rc ? ": " : "",
                          rc ? fidbus_client_last_error(c) : "", result);
            goto out;
        }
        p->acked++;
    }
    /* The barrier: every event sent above has been handled. */
    if ((rc = fidbus_ping(c)) < 0)
        fb_soak_failf(f, "publisher %u: final PING: %s", p->id, fidbus_strerror(rc));
out:
    if (fidbus_client_async_errors(c))
        fb_soak_failf(
            f, "publisher %u: %" PRIu64 " ERROR(s) for un-acked publishes, last: %s",
            p->id, fidbus_client_async_errors(c), fidbus_client_last_error(c));
    fidbus_client_close(c);
    return NULL;
}
