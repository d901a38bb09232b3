/*
 * Taps (tap.h). Lock order: open_lock -> a tap's lock. The I/O threads take
 * only a tap's lock, and only for slots marked open; what they do under it
 * is a match, one encode into the buffer and, when the buffer was empty,
 * one uv_async_send (the owner's wake): never a wait on the owner.
 */
#include "routing/tap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

#include "base/daemon_t.h"
#include "routing/routes.h"

void fb_tap_spec_clear(struct fb_tap_spec *s)
{
    free(s->event);
    for (size_t i = 0; i < s->ntags; i++) {
        free((char *)s->tags[i].key);
        free((char *)s->tags[i].value);
    }
    free(s->tags);
    memset(s, 0, sizeof *s);
}

int fb_taps_new(struct fb_taps **out)
{
    struct fb_taps *ts = calloc(1, sizeof *ts);
    if (!ts)
        return -ENOMEM;
    pthread_mutex_init(&ts->open_lock, NULL);
    for (size_t i = 0; i < FB_TAPS_MAX; i++)
        pthread_mutex_init(&ts->t[i].lock, NULL);
    *out = ts;
    return 0;
}

static void slot_release(struct fb_tap *tp)
{
    fb_tap_spec_clear(&tp->spec);
    free(tp->buf);
    free(tp->spare);
    tp->buf = tp->spare = NULL;
    tp->len = tp->cap = 0;
    tp->dropped = 0;
    tp->wake = NULL;
    tp->arg = NULL;
}

struct fb_taps *fb_taps_free(struct fb_taps *ts)
{
    if (!ts)
        return NULL;
    for (size_t i = 0; i < FB_TAPS_MAX; i++) {
        slot_release(&ts->t[i]);
        pthread_mutex_destroy(&ts->t[i].lock);
    }
    pthread_mutex_destroy(&ts->open_lock);
    free(ts);
    return NULL;
}

int fb_tap_open(struct fb_daemon *d, struct fb_tap_spec *spec, void (*wake)(void *),
                void *arg)
{
    struct fb_taps *ts = d->taps;
    uint8_t *a = malloc(spec->buffer), *b = malloc(spec->buffer);
    if (!a || !b) {
        free(a);
        free(b);
        fb_tap_spec_clear(spec);
        return -ENOMEM;
    }
    pthread_mutex_lock(&ts->open_lock);
    int slot = -EBUSY;
    for (size_t i = 0; i < FB_TAPS_MAX && slot < 0; i++)
        if (!atomic_load_explicit(&ts->t[i].open, memory_order_relaxed))
            slot = (int)i;
    if (slot < 0) {
        pthread_mutex_unlock(&ts->open_lock);
        free(a);
        free(b);
        fb_tap_spec_clear(spec);
        return slot;
    }
    struct fb_tap *tp = &ts->t[slot];
    pthread_mutex_lock(&tp->lock);
    tp->spec = *spec;
    memset(spec, 0, sizeof *spec);
    tp->buf = a;
    tp->spare = b;
    tp->cap = tp->spec.buffer;
    tp->len = 0;
    tp->dropped = 0;
    tp->wake = wake;
    tp->arg = arg;
    atomic_store_explicit(&tp->open, true, memory_order_relaxed);
    pthread_mutex_unlock(&tp->lock);
    atomic_fetch_add_explicit(&d->ntaps, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ts->open_lock);
    return slot;
}

void fb_tap_close(struct fb_daemon *d, int slot)
{
    struct fb_taps *ts = d->taps;
    if (slot < 0 || slot >= (int)FB_TAPS_MAX)
        return;
    struct fb_tap *tp = &ts->t[slot];
    pthread_mutex_lock(&ts->open_lock);
    pthread_mutex_lock(&tp->lock);
    bool was = atomic_load_explicit(&tp->open, memory_order_relaxed);
    atomic_store_explicit(&tp->open, false, memory_order_relaxed);
    slot_release(tp);
    pthread_mutex_unlock(&tp->lock);
    if (was)
        atomic_fetch_sub_explicit(&d->ntaps, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ts->open_lock);
}

size_t fb_tap_take(struct fb_daemon *d, int slot, const uint8_t **out)
{
    struct fb_tap *tp = &d->taps->t[slot];
    pthread_mutex_lock(&tp->lock);
    size_t n = tp->len;
    if (n) {
        uint8_t *full = tp->buf;
        tp->buf = tp->spare;
        tp->spare = full;
        tp->len = 0;
    }
    *out = tp->spare;
    pthread_mutex_unlock(&tp->lock);
    return n;
}

static bool matches(const struct fb_tap_spec *s, const struct fidbus_event *ev,
                    size_t idlen)
{
    const char *p = s->event;
    size_t pl = strlen(p);
    if (!(pl == 1 && p[0] == '*')) {
        if (pl >= 2 && p[pl - 1] == '*' && p[pl - 2] == '.') {
            /* "a.b.*": ids that start with "a.b." */
            if (idlen < pl || memcmp(ev->id, p, pl - 1) != 0)
                return false;
        } else if (idlen != pl || memcmp(ev->id, p, pl) != 0) {
            return false;
        }
    }
    for (size_t i = 0; i < s->ntags; i++) {
        const struct fidbus_tag *want = &s->tags[i];
        bool found = false;
        for (size_t j = 0; j < ev->ntags && !found; j++)
            found = strcmp(ev->tags[j].key, want->key) == 0 &&
                    (strcmp(want->value, "*") == 0 ||
                     strcmp(ev->tags[j].value, want->value) == 0);
        if (!found)
            return false;
    }
    return true;
}

void fb_tap_offer(struct fb_daemon *d, const struct fb_route_table *t,
                  const struct fb_route *r, const struct fidbus_event *ev, size_t idlen)
{
    struct fb_taps *ts = d->taps;
    struct fidbus_event_out o = {
        .event = ev->id,
        .tags = ev->tags,
        .ntags = ev->ntags,
        .payload = {ev->payload, ev->payload_len},
        .generation = t ? fb_routes_generation(t) : 0,
        .route = r ? r->name : NULL,
        .conn = ev->conn,
    };
    for (size_t i = 0; i < FB_TAPS_MAX; i++) {
        struct fb_tap *tp = &ts->t[i];
        if (!atomic_load_explicit(&tp->open, memory_order_relaxed))
            continue;
        pthread_mutex_lock(&tp->lock);
        if (tp->buf && matches(&tp->spec, ev, idlen)) {
            o.dropped = tp->dropped;
            size_t n = fidbus_enc_event(tp->buf + tp->len, tp->cap - tp->len, &o);
            if (n == 0) {
                tp->dropped++;
            } else {
                bool was_empty = tp->len == 0;
                tp->len += n;
                tp->dropped = 0;
                if (was_empty)
                    tp->wake(tp->arg);
            }
        }
        pthread_mutex_unlock(&tp->lock);
    }
}
