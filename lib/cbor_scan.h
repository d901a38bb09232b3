/*
 * lib/cbor_scan.h -- the CBOR token reader under fidbus_msg_decode().
 * Private to libfidbus (not installed): msg.c and cbor_scan.c include it.
 *
 * fb_cbor_next_tok() reads the head of one data item at a time, mostly
 * through libcbor's streaming decoder (cbor_stream_decode), whose callbacks
 * only record what was seen into a struct tok; fb_cbor_skip_item() walks a
 * whole item with an explicit stack of open containers. Neither builds an
 * item tree, allocates, or recurses on the C stack. msg.c's pull parser
 * walks the envelope map on top of them.
 *
 * fb_cbor_next_tok() lives here as a static inline, not in cbor_scan.c:
 * msg.c calls it for every key and small value of every frame, and a call
 * across files would cost more than its fast paths do.
 */
#ifndef FB_CBOR_SCAN_H
#define FB_CBOR_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#include <fidbus/proto.h>

/* Hard upper bound of max_depth: fb_cbor_skip_item()'s container stack
 * lives on the C stack and must have a fixed bound. 8 bytes per level. */
#define FB_DEPTH_HARD_MAX 1024u

enum tok_kind {
    T_UINT,
    T_NEGINT,
    T_BSTR,       /* definite byte string: s, len */
    T_TSTR,       /* definite text string: s, len */
    T_BSTR_INDEF, /* start of a chunked byte string */
    T_TSTR_INDEF, /* start of a chunked text string */
    T_ARRAY,      /* definite array of val items */
    T_ARRAY_INDEF,
    T_MAP, /* definite map of val pairs */
    T_MAP_INDEF,
    T_TAG,    /* tag number val, one item follows */
    T_SIMPLE, /* false, true, null, undefined, other simple values, floats */
    T_BREAK,
};

struct tok {
    enum tok_kind kind;
    uint64_t val;
    const uint8_t *s;
    size_t len;
};

/* Where the reader is in a body. why points at the slot (the message's
 * why) that gets the reason of a MALFORMED or TOO_LARGE. */
struct fb_cbor_scan {
    const uint8_t *p, *end;
    const char **why;
};

static inline int fb_cbor_fail(struct fb_cbor_scan *s, int code, const char *why)
{
    *s->why = why;
    return code;
}

/* libcbor's callbacks for fb_cbor_next_tok(), in cbor_scan.c. */
extern const struct cbor_callbacks fb_cbor_tok_callbacks;

/*
 * Reads the head of the next data item (for strings: the whole definite
 * string) into *t. Returns 0 or FIDBUS_MALFORMED.
 *
 * libcbor 0.8's cbor_stream_decode() reports CBOR_DECODER_ERROR for three
 * groups of initial bytes that RFC 8949 says are well-formed, so they are
 * decoded here before libcbor sees them (checked against every initial
 * byte; tests/unit/test_msg.c carries RFC 8949 Appendix A):
 *   0xc6..0xd4  tags 6..20 in the initial byte (libcbor: "unassigned tag");
 *   0xe0..0xf3  simple values 0..19 (e.g. simple(16) = 0xf0);
 *   0xf8 nn     one-byte simple value (e.g. simple(255) = 0xf8ff); RFC 8949
 *               section 3.3 makes nn < 32 not well-formed, so that stays an
 *               error.
 * One more group is decoded here for speed only: unsigned integers 0..23
 * (0x00-0x17), whose value is the initial byte itself. Every map key and
 * most small values are one, and a cbor_stream_decode() call costs about
 * 6 ns: inlining this one case took a typical PUBLISH from 6.8 to 10.2
 * million decodes per second on one core. Every other head goes through
 * libcbor.
 *
 * Everything else libcbor gets right: the reserved additional information
 * 28-30 and 31 where it has no meaning (0x1c-0x1f, 0x3c-0x3f, 0x5c-0x5e,
 * 0x7c-0x7e, 0x9c-0x9e, 0xbc-0xbe, 0xdc-0xdf, 0xfc-0xfe) are errors, and a
 * truncated head or string is NEDATA. The break byte 0xff is returned as a
 * token; whether it closes anything is the caller's business.
 */
static inline int fb_cbor_next_tok(struct fb_cbor_scan *s, struct tok *t)
{
    if (s->p >= s->end)
        return fb_cbor_fail(s, FIDBUS_MALFORMED, "truncated CBOR item");
    uint8_t ib = *s->p;
    if (ib < 0x18) {
        t->kind = T_UINT;
        t->val = ib;
        s->p++;
        return 0;
    }
    if (ib >= 0xc6 && ib <= 0xd4) {
        t->kind = T_TAG;
        t->val = ib - 0xc0u;
        s->p++;
        return 0;
    }
    if (ib >= 0xe0 && ib <= 0xf3) {
        t->kind = T_SIMPLE;
        s->p++;
        return 0;
    }
    if (ib == 0xf8) {
        if (s->end - s->p < 2)
            return fb_cbor_fail(s, FIDBUS_MALFORMED, "truncated CBOR item");
        if (s->p[1] < 0x20)
            return fb_cbor_fail(s, FIDBUS_MALFORMED,
                                "simple value below 32 in two bytes");
        t->kind = T_SIMPLE;
        s->p += 2;
        return 0;
    }
    struct cbor_decoder_result r =
        cbor_stream_decode(s->p, (size_t)(s->end - s->p), &fb_cbor_tok_callbacks, t);
    if (r.status == CBOR_DECODER_FINISHED) {
        s->p += r.read;
        return 0;
    }
    if (r.status == CBOR_DECODER_NEDATA)
        return fb_cbor_fail(s, FIDBUS_MALFORMED, "truncated CBOR item");
    return fb_cbor_fail(s, FIDBUS_MALFORMED, "reserved CBOR initial byte");
}

/*
 * Skips one complete data item, checking that it is well-formed and no
 * deeper than max_depth (at most FB_DEPTH_HARD_MAX). The item's bytes are
 * [start, s->p) afterwards. Returns 0, FIDBUS_MALFORMED or FIDBUS_TOO_LARGE.
 *
 * Depth: the nesting of an item counts the arrays, maps and CBOR tags open
 * at its deepest point, the item itself included: `1` has depth 0, `[1]`
 * and `6(1)` depth 1, `[[1]]` and `{"a": 6(1)}` depth 2. Tags count so
 * that a chain of tags cannot nest unboundedly either. Indefinite-length
 * strings do not count (their chunks cannot nest).
 */
int fb_cbor_skip_item(struct fb_cbor_scan *s, unsigned max_depth);

#endif
