/*
 * CBOR to text (see cbor_text.h): a streaming walk over one CBOR item.
 *
 * libcbor's cbor_stream_decode reports one data item (or container
 * header, or chunk) per call; the walk keeps an explicit stack of open
 * containers so it can place separators and closing brackets, and closes a
 * definite container when its last item completes.
 *
 * JSON, where CBOR has no JSON equivalent (RFC 8949 section 6.1): byte
 * strings become base64url strings without padding; tags are dropped and
 * their content rendered (a bignum, tag 2/3, is its base64url bytes);
 * NaN, Infinity, undefined and simple(N) become null; a map key that is
 * not a text string becomes a JSON string holding its diagnostic notation
 * (1 -> "1", h'01' -> "h'01'"). Integers beyond 2^53 are written exactly,
 * as JSON allows; some readers will round them.
 */
#include "cbor_text.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#define INITIAL_BUF 4096

enum frame_kind { FR_ARRAY, FR_MAP, FR_TAG, FR_BYTES, FR_TEXT };

/* ---- output buffer ---------------------------------------------------- */

bool fb_ct_reserve(struct fb_ct *s, size_t n)
{
    if (s->len + n <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : INITIAL_BUF;
    while (cap < s->len + n)
        cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b) {
        s->failed = s->oom = true;
        return false;
    }
    s->buf = b;
    s->cap = cap;
    return true;
}

void fb_ct_put(struct fb_ct *s, const char *p, size_t n)
{
    if (!fb_ct_reserve(s, n))
        return;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

void fb_ct_puts(struct fb_ct *s, const char *p)
{
    fb_ct_put(s, p, strlen(p));
}

void fb_ct_putc(struct fb_ct *s, char c)
{
    if (fb_ct_reserve(s, 1))
        s->buf[s->len++] = c;
}

static void putu(struct fb_ct *s, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    fb_ct_put(s, tmp, (size_t)n);
}

static bool json_mode(const struct fb_ct *s)
{
    return s->json && s->diag_depth == 0;
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* The inside of a quoted string, JSON escapes (valid in diag notation
 * too); invalid UTF-8 becomes U+FFFD so the line stays valid text. */
void fb_ct_put_escaped(struct fb_ct *s, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n && !s->failed) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            fb_ct_put(s, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '\n')
                fb_ct_put(s, "\\n", 2);
            else if (c == '\t')
                fb_ct_put(s, "\\t", 2);
            else if (c == '\r')
                fb_ct_put(s, "\\r", 2);
            else
                fb_ct_put(s, e, 6);
            i++;
        } else {
            size_t k = utf8_len(p + i, n - i);
            if (k == 0) {
                fb_ct_put(s, "\\ufffd", 6);
                i++;
            } else {
                fb_ct_put(s, (const char *)p + i, k);
                i += k;
            }
        }
    }
}

static void put_hex(struct fb_ct *s, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!fb_ct_reserve(s, 2 * n))
        return;
    for (size_t i = 0; i < n; i++) {
        s->buf[s->len++] = hex[p[i] >> 4];
        s->buf[s->len++] = hex[p[i] & 15];
    }
}

/* base64url without padding, resumable across chunks with a carry of at
 * most two bytes. */
static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_triplet(struct fb_ct *s, const uint8_t t[3])
{
    char o[4] = {b64url[t[0] >> 2], b64url[(t[0] & 3) << 4 | t[1] >> 4],
                 b64url[(t[1] & 15) << 2 | t[2] >> 6], b64url[t[2] & 63]};
    fb_ct_put(s, o, 4);
}

static void b64_feed(struct fb_ct *s, uint8_t carry[2], uint8_t *ncarry, const uint8_t *p,
                     size_t n)
{
    uint8_t t[3];
    while (*ncarry > 0 && n > 0) {
        if (*ncarry == 2) {
            t[0] = carry[0];
            t[1] = carry[1];
            t[2] = *p++;
            n--;
            b64_triplet(s, t);
            *ncarry = 0;
        } else if (n >= 2) {
            t[0] = carry[0];
            t[1] = p[0];
            t[2] = p[1];
            p += 2;
            n -= 2;
            b64_triplet(s, t);
            *ncarry = 0;
        } else {
            carry[1] = *p++;
            n--;
            *ncarry = 2;
        }
    }
    if (!fb_ct_reserve(s, n / 3 * 4))
        return;
    for (; n >= 3; p += 3, n -= 3)
        b64_triplet(s, p);
    for (size_t i = 0; i < n; i++)
        carry[(*ncarry)++] = p[i];
}

static void b64_flush(struct fb_ct *s, const uint8_t carry[2], uint8_t ncarry)
{
    if (ncarry == 1) {
        char o[2] = {b64url[carry[0] >> 2], b64url[(carry[0] & 3) << 4]};
        fb_ct_put(s, o, 2);
    } else if (ncarry == 2) {
        char o[3] = {b64url[carry[0] >> 2], b64url[(carry[0] & 3) << 4 | carry[1] >> 4],
                     b64url[(carry[1] & 15) << 2]};
        fb_ct_put(s, o, 3);
    }
}

static void put_b64(struct fb_ct *s, const uint8_t *p, size_t n)
{
    uint8_t carry[2], ncarry = 0;
    b64_feed(s, carry, &ncarry, p, n);
    b64_flush(s, carry, ncarry);
}

/*
 * The shortest decimal digits that read back as v: *m has nd digits
 * (nd <= 17) and v == 0.m * 10^(exp + 1). printf rounds to nearest, which
 * at some precision can miss a string one unit away that does read back
 * (2^-24 is 5.960464477539063e-8 in RFC 8949, 5.96046447753906e-08 and
 * 5.960464477539062e-08 from %.*e), so the neighbours are tried too.
 */
static int shortest_digits(double v, char digits[20], int *exp)
{
    char e[48];
    if (v == 0) {
        digits[0] = '0';
        *exp = 0;
        return 1;
    }
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        char *x = strchr(e, 'e');
        int ex = atoi(x + 1);
        uint64_t m = 0;
        for (const char *c = e; c < x; c++)
            if (*c >= '0' && *c <= '9')
                m = m * 10 + (uint64_t)(*c - '0');
        uint64_t lo = 1;
        for (int i = 0; i < prec; i++)
            lo *= 10;
        uint64_t cand[3] = {m, m + 1, m - 1};
        for (int k = 0; k < 3; k++) {
            uint64_t c = cand[k];
            int cex = ex;
            if (c == lo * 10) { /* 9.99 + 1 unit carries over */
                c = lo;
                cex++;
            } else if (c < lo) { /* would lose a digit: skip */
                continue;
            }
            char t[48];
            snprintf(t, sizeof t, "%s%" PRIu64 "e%d", v < 0 ? "-" : "", c, cex - prec);
            if (strtod(t, NULL) == v) {
                int nd = snprintf(digits, 20, "%" PRIu64, c);
                while (nd > 1 && digits[nd - 1] == '0')
                    nd--;
                *exp = cex;
                return nd;
            }
        }
    }
    /* unreachable for finite doubles: 17 digits always read back */
    snprintf(e, sizeof e, "%.16e", v);
    *exp = atoi(strchr(e, 'e') + 1);
    int nd = 0;
    for (const char *c = e; *c != 'e'; c++)
        if (*c >= '0' && *c <= '9')
            digits[nd++] = *c;
    return nd;
}

/*
 * Written the way RFC 8949's examples are: always with a fraction
 * ("1.0"), plain for exponents in [-7, 21), "d.ddde+N" outside.
 */
static void put_double(struct fb_ct *s, double v)
{
    char digits[20];
    int exp;
    size_t nd = (size_t)shortest_digits(v, digits, &exp);
    char out[64];
    size_t o = 0;

    if (signbit(v))
        out[o++] = '-';
    if (exp >= -7 && exp < 21) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)exp + 1 < nd)
                for (size_t i = (size_t)exp + 1; i < nd; i++)
                    out[o++] = digits[i];
            else
                out[o++] = '0';
        } else {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                out[o++] = '0';
            for (size_t i = 0; i < nd; i++)
                out[o++] = digits[i];
        }
        fb_ct_put(s, out, o);
    } else {
        out[o++] = digits[0];
        out[o++] = '.';
        if (nd > 1)
            for (size_t i = 1; i < nd; i++)
                out[o++] = digits[i];
        else
            out[o++] = '0';
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%d", exp < 0 ? '-' : '+',
                              exp < 0 ? -exp : exp);
        fb_ct_put(s, out, o);
    }
}

/* ---- the item walk ---------------------------------------------------- */

static struct fb_ct_frame *top(struct fb_ct *s)
{
    return s->depth > 0 ? &s->st[s->depth - 1] : NULL;
}

/* Before an item: its separator, and in JSON whether a map key needs
 * quoting. is_text says the item is a text string. */
static void begin_item(struct fb_ct *s, bool is_text)
{
    struct fb_ct_frame *f = top(s);
    if (!f) {
        if (s->top_items > 0)
            s->failed = true; /* trailing bytes after the payload item */
        return;
    }
    if (f->kind == FR_BYTES || f->kind == FR_TEXT) {
        s->failed = true; /* only chunks belong in a string */
        return;
    }
    bool json = json_mode(s);
    if (f->kind == FR_ARRAY) {
        if (f->count > 0)
            fb_ct_puts(s, json ? "," : ", ");
    } else if (f->kind == FR_MAP) {
        if (f->count % 2 == 1) {
            fb_ct_puts(s, json ? ":" : ": ");
        } else {
            if (f->count > 0)
                fb_ct_puts(s, json ? "," : ", ");
            if (json && !is_text) {
                f->key_as_string = true;
                f->start = s->len;
                s->diag_depth++;
            }
        }
    }
}

/* JSON: the diagnostic text from `from` to the end becomes a string. The
 * escaped copy is built past the end (room reserved first, so the source
 * does not move) and then slid down: no allocation. */
static void quote_tail(struct fb_ct *s, size_t from)
{
    size_t n = s->len - from;
    if (!fb_ct_reserve(s, 6 * n + 2))
        return;
    size_t at = s->len;
    const uint8_t *src = (const uint8_t *)s->buf + from;
    fb_ct_putc(s, '"');
    fb_ct_put_escaped(s, src, n);
    fb_ct_putc(s, '"');
    memmove(s->buf + from, s->buf + at, s->len - at);
    s->len = from + (s->len - at);
}

static void close_frame(struct fb_ct *s);

/* After an item: counts it, closes definite containers it completes. */
static void end_item(struct fb_ct *s)
{
    struct fb_ct_frame *f = top(s);
    if (!f) {
        s->top_items++;
        return;
    }
    if (f->kind == FR_MAP && f->count % 2 == 0 && f->key_as_string) {
        s->diag_depth--;
        f->key_as_string = false;
        quote_tail(s, f->start);
    }
    f->count++;
    if (!f->indef && f->count == f->total)
        close_frame(s);
}

static void close_frame(struct fb_ct *s)
{
    struct fb_ct_frame *f = top(s);
    bool json = json_mode(s);
    switch (f->kind) {
    case FR_ARRAY:
        fb_ct_putc(s, ']');
        break;
    case FR_MAP:
        fb_ct_putc(s, '}');
        break;
    case FR_TAG:
        if (!json)
            fb_ct_putc(s, ')');
        break;
    case FR_BYTES:
        if (json) {
            b64_flush(s, f->carry, f->ncarry);
            fb_ct_putc(s, '"');
        } else if (f->count == 0) {
            s->len = f->start; /* RFC 8949 8.1: empty is ''_ */
            fb_ct_puts(s, "''_");
        } else {
            fb_ct_putc(s, ')');
        }
        break;
    case FR_TEXT:
        if (json) {
            fb_ct_putc(s, '"');
        } else if (f->count == 0) {
            s->len = f->start;
            fb_ct_puts(s, "\"\"_");
        } else {
            fb_ct_putc(s, ')');
        }
        break;
    }
    s->depth--;
    end_item(s);
}

static struct fb_ct_frame *push(struct fb_ct *s, enum frame_kind kind, bool indef,
                                uint64_t total)
{
    if (s->depth == FB_CT_MAX_DEPTH) {
        s->failed = true;
        return NULL;
    }
    struct fb_ct_frame *f = &s->st[s->depth++];
    *f = (struct fb_ct_frame){
        .kind = (uint8_t)kind, .indef = indef, .total = total, .start = s->len};
    return f;
}

/* A scalar rendered as text. Called straight from callbacks, so it does
 * their check for a walk that has already failed. */
static void scalar(struct fb_ct *s, const char *text)
{
    if (s->failed)
        return;
    begin_item(s, false);
    fb_ct_puts(s, text);
    end_item(s);
}

static void on_uint(void *ctx, uint64_t v)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    begin_item(s, false);
    putu(s, v);
    end_item(s);
}

static void on_uint8(void *ctx, uint8_t v)
{
    on_uint(ctx, v);
}

static void on_uint16(void *ctx, uint16_t v)
{
    on_uint(ctx, v);
}

static void on_uint32(void *ctx, uint32_t v)
{
    on_uint(ctx, v);
}

/* libcbor hands over the encoded n of the value -1-n. */
static void on_negint(void *ctx, uint64_t n)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    begin_item(s, false);
    if (n == UINT64_MAX) {
        fb_ct_puts(s, "-18446744073709551616");
    } else {
        fb_ct_putc(s, '-');
        putu(s, n + 1);
    }
    end_item(s);
}

static void on_negint8(void *ctx, uint8_t v)
{
    on_negint(ctx, v);
}

static void on_negint16(void *ctx, uint16_t v)
{
    on_negint(ctx, v);
}

static void on_negint32(void *ctx, uint32_t v)
{
    on_negint(ctx, v);
}

static void on_bytes(void *ctx, cbor_data p, size_t n)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    struct fb_ct_frame *f = top(s);
    if (f && f->kind == FR_BYTES) { /* a chunk */
        if (json_mode(s)) {
            b64_feed(s, f->carry, &f->ncarry, p, n);
        } else {
            if (f->count > 0)
                fb_ct_puts(s, ", ");
            fb_ct_puts(s, "h'");
            put_hex(s, p, n);
            fb_ct_putc(s, '\'');
        }
        f->count++;
        return;
    }
    begin_item(s, false);
    if (json_mode(s)) {
        fb_ct_putc(s, '"');
        put_b64(s, p, n);
        fb_ct_putc(s, '"');
    } else {
        fb_ct_puts(s, "h'");
        put_hex(s, p, n);
        fb_ct_putc(s, '\'');
    }
    end_item(s);
}

/* An indefinite-length string (FR_BYTES or FR_TEXT): its chunks follow. */
static void string_start(struct fb_ct *s, enum frame_kind kind)
{
    if (s->failed)
        return;
    begin_item(s, kind == FR_TEXT);
    if (!push(s, kind, true, 0))
        return;
    fb_ct_puts(s, json_mode(s) ? "\"" : "(_ ");
}

static void on_bytes_start(void *ctx)
{
    string_start(ctx, FR_BYTES);
}

static void on_text(void *ctx, cbor_data p, size_t n)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    struct fb_ct_frame *f = top(s);
    if (f && f->kind == FR_TEXT) { /* a chunk */
        if (json_mode(s)) {
            fb_ct_put_escaped(s, p, n);
        } else {
            if (f->count > 0)
                fb_ct_puts(s, ", ");
            fb_ct_putc(s, '"');
            fb_ct_put_escaped(s, p, n);
            fb_ct_putc(s, '"');
        }
        f->count++;
        return;
    }
    begin_item(s, true);
    fb_ct_putc(s, '"');
    fb_ct_put_escaped(s, p, n);
    fb_ct_putc(s, '"');
    end_item(s);
}

static void on_text_start(void *ctx)
{
    string_start(ctx, FR_TEXT);
}

/* An array or map header (n items or pairs, unless indef). Called straight
 * from callbacks, so it does their check for a failed walk. */
static void container(struct fb_ct *s, enum frame_kind kind, bool indef, uint64_t n)
{
    if (s->failed)
        return;
    begin_item(s, false);
    if (s->failed)
        return;
    if (!indef && n == 0) {
        fb_ct_puts(s, kind == FR_ARRAY ? "[]" : "{}");
        end_item(s);
        return;
    }
    if (!push(s, kind, indef, kind == FR_MAP ? 2 * n : n))
        return;
    bool marker = indef && !json_mode(s);
    if (kind == FR_ARRAY)
        fb_ct_puts(s, marker ? "[_ " : "[");
    else
        fb_ct_puts(s, marker ? "{_ " : "{");
}

static void on_array(void *ctx, size_t n)
{
    container(ctx, FR_ARRAY, false, n);
}

static void on_indef_array(void *ctx)
{
    container(ctx, FR_ARRAY, true, 0);
}

static void on_map(void *ctx, size_t n)
{
    struct fb_ct *s = ctx;
    if (n > UINT64_MAX / 2) {
        s->failed = true;
        return;
    }
    container(s, FR_MAP, false, n);
}

static void on_indef_map(void *ctx)
{
    container(ctx, FR_MAP, true, 0);
}

static void on_tag(void *ctx, uint64_t tag)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    begin_item(s, false);
    if (!push(s, FR_TAG, false, 1))
        return;
    if (!json_mode(s)) {
        putu(s, tag);
        fb_ct_putc(s, '(');
    }
}

static void on_double(void *ctx, double v)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    begin_item(s, false);
    if (isnan(v))
        fb_ct_puts(s, json_mode(s) ? "null" : "NaN");
    else if (isinf(v))
        fb_ct_puts(s, json_mode(s) ? "null" : v < 0 ? "-Infinity" : "Infinity");
    else
        put_double(s, v);
    end_item(s);
}

static void on_float(void *ctx, float v)
{
    on_double(ctx, (double)v);
}

static void on_undefined(void *ctx)
{
    struct fb_ct *s = ctx;
    scalar(s, json_mode(s) ? "null" : "undefined");
}

static void on_null(void *ctx)
{
    scalar(ctx, "null");
}

static void on_bool(void *ctx, bool v)
{
    scalar(ctx, v ? "true" : "false");
}

static void on_break(void *ctx)
{
    struct fb_ct *s = ctx;
    if (s->failed)
        return;
    struct fb_ct_frame *f = top(s);
    if (!f || !f->indef || (f->kind == FR_MAP && f->count % 2 == 1)) {
        s->failed = true;
        return;
    }
    close_frame(s);
}

static const struct cbor_callbacks render_cbs = {
    .uint8 = on_uint8,
    .uint16 = on_uint16,
    .uint32 = on_uint32,
    .uint64 = on_uint,
    .negint8 = on_negint8,
    .negint16 = on_negint16,
    .negint32 = on_negint32,
    .negint64 = on_negint,
    .byte_string = on_bytes,
    .byte_string_start = on_bytes_start,
    .string = on_text,
    .string_start = on_text_start,
    .array_start = on_array,
    .indef_array_start = on_indef_array,
    .map_start = on_map,
    .indef_map_start = on_indef_map,
    .tag = on_tag,
    .float2 = on_float,
    .float4 = on_float,
    .float8 = on_double,
    .undefined = on_undefined,
    .null = on_null,
    .boolean = on_bool,
    .indef_break = on_break,
};

void fb_ct_render(struct fb_ct *s, const uint8_t *p, size_t n, bool json)
{
    size_t start = s->len;
    size_t off = 0;

    s->json = json;
    s->failed = s->oom;
    s->depth = 0;
    s->diag_depth = 0;
    s->top_items = 0;
    while (off < n && !s->failed) {
        uint8_t b = p[off];
        /* libcbor 0.8's streaming decoder refuses simple values other
         * than false/true/null/undefined; they are well-formed CBOR. */
        if ((b >= 0xe0 && b <= 0xf3) || b == 0xf8) {
            unsigned v = b & 0x1f;
            size_t used = 1;
            if (b == 0xf8) {
                if (off + 1 >= n) {
                    s->failed = true;
                    break;
                }
                v = p[off + 1];
                used = 2;
            }
            begin_item(s, false);
            if (json_mode(s)) {
                fb_ct_puts(s, "null");
            } else {
                char t[16];
                snprintf(t, sizeof t, "simple(%u)", v);
                fb_ct_puts(s, t);
            }
            end_item(s);
            off += used;
            continue;
        }
        struct cbor_decoder_result r =
            cbor_stream_decode(p + off, n - off, &render_cbs, s);
        if (r.status != CBOR_DECODER_FINISHED || r.read == 0) {
            s->failed = true;
            break;
        }
        off += r.read;
    }
    if (s->depth != 0 || s->top_items != 1)
        s->failed = true;
    if (s->failed && !s->oom) {
        s->failed = false;
        s->len = start;
        if (s->json) {
            fb_ct_putc(s, '"');
            put_b64(s, p, n);
            fb_ct_putc(s, '"');
        } else {
            fb_ct_puts(s, "h'");
            put_hex(s, p, n);
            fb_ct_putc(s, '\'');
        }
    }
}
