/*
 * lib/client_serve.h -- the serving side of the client (lib/client_serve.c)
 * as lib/client.c and client_reconnect.c see it, and the RESULT batching
 * rule (lib/client_serve_batch.c) on its own so tests/unit/test_serve_batch.c
 * can check it.
 * Private to libfidbus (not installed).
 */
#ifndef FB_CLIENT_SERVE_H
#define FB_CLIENT_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fidbus_client;
struct fb_wait;

/* ------------------------------------------------------- held calls */

enum fb_held_state {
    FB_HELD_OPEN, /* callback not run yet, running, or pending */
    FB_HELD_DONE, /* answered by the callback, RESULT not written yet */
    FB_HELD_SENT, /* its own RESULT was written; the daemon no longer holds it */
};

/* One call the member holds, in the order the CALLs arrived. */
struct fb_held {
    uint64_t id;
    uint8_t state;
    uint8_t code;
};

/*
 * Writes RESULTs for the answered calls in v[0..n), which hold ascending
 * call ids in arrival order. Each leading run of answered calls sharing
 * one code (calls already SENT inside it do not break it: the daemon no
 * longer holds them, and `upto` answers only what it holds) goes as one
 * RESULT with upto = the run's last id when it answers two or more and
 * `upto` is allowed; everything else answered goes as single RESULTs by
 * seq and becomes SENT. emit returns 0 or a negative errno, which stops
 * the flush. Returns how many entries at the front are finished (the
 * caller drops them) or the negative errno.
 */
typedef int (*fb_result_emit)(void *ctx, bool upto, uint64_t id, uint8_t code);
long fb_held_flush(struct fb_held *v, size_t n, bool allow_upto, fb_result_emit emit,
                   void *ctx);

/* --------------------------------------------------- client.c hooks */

/* A CALL frame, decoded into *m (== c->mp), arrived while waiting in w. */
int fb_serve_on_call(struct fidbus_client *c, struct fb_wait *w, const uint8_t *body,
                     size_t len);
/* An ACK/ERROR with a seq: true when it answered a REGISTER/UNREGISTER. */
bool fb_serve_on_answer(struct fidbus_client *c, struct fb_wait *w);
/* read_some: true (with the space to read into) when a callback pins the
 * read buffer; a full buffer is then replaced, not moved. */
int fb_serve_read_space(struct fidbus_client *c, uint8_t **p, size_t *len, bool *pinned);
/* client_reconnect.c: the connection was dropped / a new one is up. */
void fb_serve_conn_lost(struct fidbus_client *c);
int fb_serve_reconnected(struct fidbus_client *c);
/* client_free. */
void fb_serve_free(struct fidbus_client *c);

#endif
