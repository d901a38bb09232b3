/*
 * Authenticated TCP: nonces, the MAC check and the AUTH deadline timer
 * (the key itself is read with the config, config/config.c). See auth.h
 * for the protocol and who owns what.
 */
#include "bus/auth.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/log.h"

struct fb_auth {
    uv_timer_t timer;
    void (*expired)(void *arg);
    void *arg;
    uint8_t nonce[FB_AUTH_NONCE_LEN];
};

static void on_timer(uv_timer_t *t)
{
    struct fb_auth *a = t->data;
    a->expired(a->arg);
}

int fb_auth_new(struct fb_auth **out, uv_loop_t *loop, unsigned deadline,
                void (*expired)(void *arg), void *arg)
{
    struct fb_auth *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    /* getrandom without flags reads the kernel's CSPRNG; it blocks only
     * before the pool is first seeded, which is over long before a
     * network client can connect. */
    ssize_t n;
    do
        n = getrandom(a->nonce, sizeof a->nonce, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof a->nonce) {
        int rc = n < 0 ? -errno : -EIO;
        fb_error("cannot draw a nonce for a TCP client: %s", strerror(-rc));
        free(a);
        return rc;
    }
    a->expired = expired;
    a->arg = arg;
    int rc = uv_timer_init(loop, &a->timer);
    if (rc < 0) {
        free(a);
        return rc;
    }
    a->timer.data = a;
    uv_timer_start(&a->timer, on_timer, deadline, 0);
    *out = a;
    return 0;
}

const uint8_t *fb_auth_nonce(const struct fb_auth *a)
{
    return a->nonce;
}

bool fb_auth_verify(const struct fb_auth *a, const uint8_t *key, size_t key_len,
                    const uint8_t *mac, size_t mac_len)
{
    if (!key || mac_len != FB_AUTH_MAC_LEN || key_len > INT_MAX)
        return false;
    uint8_t want[EVP_MAX_MD_SIZE];
    unsigned want_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, a->nonce, sizeof a->nonce, want,
              &want_len) ||
        want_len != FB_AUTH_MAC_LEN)
        return false;
    bool ok = CRYPTO_memcmp(want, mac, FB_AUTH_MAC_LEN) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

void fb_auth_linger(struct fb_auth *a)
{
    if (a)
        uv_timer_start(&a->timer, on_timer, FB_AUTH_LINGER_MS, 0);
}

static void on_close(uv_handle_t *h)
{
    free(h->data);
}

struct fb_auth *fb_auth_free(struct fb_auth *a)
{
    if (a)
        uv_close((uv_handle_t *)&a->timer, on_close);
    return NULL;
}
