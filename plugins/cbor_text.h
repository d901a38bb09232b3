/*
 * CBOR to text for log.so: renders one data item from its raw bytes as
 * RFC 8949 section 8 diagnostic notation or as JSON (RFC 8949 section 6.1),
 * walking it with libcbor's streaming decoder (no item tree is built).
 *
 * struct fb_ct is both the output buffer and the walker's stack, so one
 * per thread is all the state rendering needs: once the buffer is as large
 * as the longest line so far, rendering allocates nothing.
 */
#ifndef FB_CBOR_TEXT_H
#define FB_CBOR_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this is shown as raw bytes. */
#define FB_CT_MAX_DEPTH 256

struct fb_ct_frame {
    uint8_t kind; /* enum in cbor_text.c */
    bool indef;
    bool key_as_string; /* JSON: the key being rendered must be quoted */
    uint8_t ncarry;     /* JSON indefinite bytes: base64 leftover */
    uint8_t carry[2];
    uint64_t total; /* definite: items expected (a map counts 2n) */
    uint64_t count; /* items (or chunks) completed */
    size_t start;   /* where this frame's text, or a JSON key, began */
};

struct fb_ct {
    char *buf; /* malloc'd, owned by the struct's owner */
    size_t len, cap;
    bool oom; /* a reserve failed: the text is incomplete */
    /* the walker's state, reset by every fb_ct_render */
    bool json;
    bool failed;
    int diag_depth; /* > 0 while a JSON map key is rendered as diag */
    int depth;
    uint64_t top_items; /* complete items at depth 0 */
    struct fb_ct_frame st[FB_CT_MAX_DEPTH];
};

/* Makes room for n more bytes (doubling); false and oom set on ENOMEM. */
bool fb_ct_reserve(struct fb_ct *s, size_t n);
void fb_ct_put(struct fb_ct *s, const char *p, size_t n);
void fb_ct_puts(struct fb_ct *s, const char *p);
void fb_ct_putc(struct fb_ct *s, char c);
/* The inside of a JSON string: escapes, invalid UTF-8 as \ufffd. */
void fb_ct_put_escaped(struct fb_ct *s, const uint8_t *p, size_t n);

/*
 * Appends the rendering of the CBOR item in p[0..n) (json: JSON, else
 * diagnostic notation). A payload that is not exactly one well-formed
 * item, or nests deeper than FB_CT_MAX_DEPTH, is appended as its raw bytes
 * instead (h'...' or a base64url string). Check s->oom afterwards.
 */
void fb_ct_render(struct fb_ct *s, const uint8_t *p, size_t n, bool json);

#endif
