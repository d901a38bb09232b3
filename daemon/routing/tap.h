/*
 * Taps (proto/control.md `tap.open`): copies of the events that match a
 * pattern, for `fidbusctl tail`. A tap never changes routing, an ACK or a
 * publisher's pace: the I/O thread that dispatches an event encodes one
 * EVENT frame into the tap's buffer under the tap's own lock, or, when the
 * buffer is full, drops the copy and counts it; the control thread takes
 * the filled buffer (a pointer swap under the same lock) and writes it to
 * the tap's connection (control/control.c). See docs/architecture.md.
 *
 * With no tap open the dispatch path pays one relaxed load of d->ntaps
 * per event (dispatch.c). Slots are fixed for the daemon's life, so an I/O
 * thread never follows a pointer to a tap that is being freed.
 */
#ifndef FB_TAP_H
#define FB_TAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/plugin.h>

struct fb_daemon;
struct fb_route;
struct fb_route_table;

#define FB_TAPS_MAX 16u                       /* open at once; the 17th is BUSY */
#define FB_TAP_BUFFER_DEFAULT (1024u * 1024u) /* bytes of EVENT frames held */
#define FB_TAP_BUFFER_MIN 4096u
#define FB_TAP_BUFFER_MAX (64u * 1024u * 1024u)

/* What a tap matches: an event pattern as a route's (exact, "prefix.*",
 * "*") and tag constraints (value "*": the tag is present). */
struct fb_tap_spec {
    char *event;
    struct fidbus_tag *tags; /* owned strings */
    size_t ntags;
    size_t buffer;
};

void fb_tap_spec_clear(struct fb_tap_spec *s);

struct fb_tap {
    pthread_mutex_t lock;
    _Atomic bool open; /* read without the lock first: a closed slot costs no lock */
    /* under lock */
    struct fb_tap_spec spec;
    uint8_t *buf, *spare; /* I/O threads fill buf; the owner drains spare */
    size_t len, cap;
    uint64_t dropped; /* copies lost since the last EVENT put in buf */
    void (*wake)(void *arg);
    void *arg;
};

struct fb_taps {
    pthread_mutex_t open_lock; /* opening and closing slots */
    struct fb_tap t[FB_TAPS_MAX];
};

int fb_taps_new(struct fb_taps **out);
/* Every slot closed; no thread dispatches any more. NULL-safe. */
struct fb_taps *fb_taps_free(struct fb_taps *ts);

/*
 * Opens a tap on spec (taken over: cleared here whatever the result).
 * wake(arg) is called, under the tap's lock from an I/O thread, when its
 * buffer goes from empty to not empty. Returns the slot (0 ..
 * FB_TAPS_MAX - 1), -EBUSY when FB_TAPS_MAX are open, or -ENOMEM.
 */
int fb_tap_open(struct fb_daemon *d, struct fb_tap_spec *spec, void (*wake)(void *),
                void *arg);
/* Closes slot; wake is not called for it any more once this returns. */
void fb_tap_close(struct fb_daemon *d, int slot);

/*
 * The owner takes what the slot holds: *out points at len bytes of whole
 * EVENT frames, valid until the next call for this slot. 0: nothing.
 */
size_t fb_tap_take(struct fb_daemon *d, int slot, const uint8_t **out);

/* The dispatch path's copy (dispatch.c calls it only while d->ntaps is
 * not 0): r NULL for an unrouted event. */
void fb_tap_offer(struct fb_daemon *d, const struct fb_route_table *t,
                  const struct fb_route *r, const struct fidbus_event *ev, size_t idlen);

#endif
