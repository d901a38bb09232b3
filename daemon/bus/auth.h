/*
 * Authenticated TCP (proto/README.md, AUTH): the shared key, the per-connection
 * nonce and the check of the client's AUTH.
 *
 * With `tcp_auth = key`, every TCP connection starts in the "awaiting
 * AUTH" state: the server's HELLO carries a fresh 32-byte random nonce,
 * and the client's first frame must be AUTH whose mac is
 * HMAC-SHA256(key, nonce). Anything else -- another frame first, a wrong
 * or over-long mac, nothing at all within the deadline -- is answered with
 * ERROR UNAUTHORIZED and the connection is closed. A fresh nonce per
 * connection makes a recorded mac useless on any other connection.
 *
 * conn.c owns the state machine (struct fb_conn keeps a struct fb_auth
 * while it awaits AUTH); this file owns the secrets and the timer, so the
 * bus hot path of an authenticated or Unix connection never sees any of
 * it. Unix connections and `tcp_auth = none` get no nonce and no AUTH.
 *
 * The key is read once, when the config is loaded (config.c), with the
 * library's fidbus_key_load rules; it lives in struct fb_config for the
 * daemon's life and is wiped when the config is freed.
 */
#ifndef FB_AUTH_H
#define FB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define FB_AUTH_NONCE_LEN 32
#define FB_AUTH_MAC_LEN 32 /* SHA-256 */
/* How long a TCP client has to send its AUTH after connecting is
 * [limits] auth_timeout_ms (config_limits.c), handed to fb_auth_new. */
/* After a refusal the ERROR is flushed and the write side shut down;
 * a client that then keeps the socket open is closed after this long, so
 * an unauthenticated peer cannot hold a descriptor for ever. */
#define FB_AUTH_LINGER_MS 2000u
/* The largest frame accepted before AUTH (an AUTH is about 100 bytes):
 * a peer without the key cannot make the daemon buffer max_frame. */
#define FB_AUTH_MAX_FRAME 4096u

/* One connection's pending authentication: nonce and deadline timer. */
struct fb_auth;

/*
 * Draws a fresh nonce and starts the deadline timer (deadline_ms) on loop:
 * when it fires, expired(arg) runs on the loop's thread. The timer belongs
 * to *out until fb_auth_free. Returns 0 or a negative errno (nothing to
 * free).
 */
int fb_auth_new(struct fb_auth **out, uv_loop_t *loop, unsigned deadline_ms,
                void (*expired)(void *arg), void *arg);
/* The nonce to put in HELLO (FB_AUTH_NONCE_LEN bytes, owned by a). */
const uint8_t *fb_auth_nonce(const struct fb_auth *a);
/* True iff mac is HMAC-SHA256(key, nonce), compared in constant time; a
 * mac of any other length is false. */
bool fb_auth_verify(const struct fb_auth *a, const uint8_t *key, size_t key_len,
                    const uint8_t *mac, size_t mac_len);
/* Restarts the timer for FB_AUTH_LINGER_MS (after a refusal). */
void fb_auth_linger(struct fb_auth *a);
/* Stops the timer (expired will not run any more); the memory goes in the
 * timer's close callback. NULL-safe; returns NULL. */
struct fb_auth *fb_auth_free(struct fb_auth *a);

#endif
