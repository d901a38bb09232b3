/*
 * Message decoding and validation (design section 2, <fidbus/proto.h>).
 *
 * fidbus_msg_decode() is the daemon's hot path: every frame goes through it.
 * It drives libcbor's streaming decoder (cbor_stream_decode) one data item
 * head at a time: the callbacks only record what was seen into a token, and
 * a small pull parser here walks the envelope map. No item tree is built,
 * nothing is allocated, and nothing recurses on the C stack:
 *
 *   - payload (4), result (8), args (10) and the values of unknown keys are
 *     skipped with an explicit stack of open containers (skip_item), which
 *     checks well-formedness, bounds the nesting depth, and leaves their
 *     exact original bytes as a slice of the body (never re-encoded);
 *   - event id and tags are copied into the message's arena so they can be
 *     NUL-terminated for the plugin API; other text and byte strings are
 *     slices of the body unless they arrive as indefinite-length chunks,
 *     which are concatenated into the arena.
 *
 * Depth: the nesting of a raw item counts the arrays, maps and CBOR tags
 * open at its deepest point, the item itself included: `1` has depth 0,
 * `[1]` and `6(1)` depth 1, `[[1]]` and `{"a": 6(1)}` depth 2. An item
 * deeper than max_depth is TOO_LARGE. Tags count so that a chain of tags
 * cannot nest unboundedly either. Indefinite-length strings do not count
 * (their chunks cannot nest). max_depth 0 means the default (64), and values
 * above FB_DEPTH_HARD_MAX are clamped to it: the container stack lives on
 * the C stack and must have a fixed bound.
 *
 * Errors: MALFORMED and TOO_LARGE stop decoding at once. INVALID (an event
 * id or tag outside the limits) is remembered and returned only once the
 * whole body has proven well-formed, so a body that is both gets MALFORMED,
 * and a seq that follows a bad event id is still recovered.
 *
 * Text in the envelope (event, tag keys and values, message, command, name,
 * args keys) must be valid UTF-8 (strict: no overlongs, no surrogates,
 * nothing above U+10FFFF; each chunk of a chunked string on its own, as RFC
 * 8949 requires). Text inside payload/result/args values is not checked:
 * those items are opaque to the bus and are handed on byte-exact.
 *
 * Tag values must not contain NUL bytes (INVALID): plugins receive tags as
 * C strings, where an embedded NUL would silently truncate the value.
 */
#include <string.h>

#include <cbor.h>

#include <fidbus/proto.h>

/* Hard upper bound of max_depth; see above. 8 bytes of C stack per level. */
#define FB_DEPTH_HARD_MAX 1024u
/* Arena bytes reserved for chunked message/command/name/nonce/mac, after
 * the room an event id and 32 tags can take (see FIDBUS_MSG_ARENA). */
#define FB_CHUNK_BUDGET 4096u

/* ------------------------------------------------------------ validators */

enum {
    CC_ID = 1,  /* [A-Za-z0-9_.:-] */
    CC_KEY = 2, /* [A-Za-z0-9_.-] */
};

static const uint8_t char_class[256] = {
    ['0' ... '9'] = CC_ID | CC_KEY,
    ['A' ... 'Z'] = CC_ID | CC_KEY,
    ['a' ... 'z'] = CC_ID | CC_KEY,
    ['_'] = CC_ID | CC_KEY,
    ['.'] = CC_ID | CC_KEY,
    ['-'] = CC_ID | CC_KEY,
    [':'] = CC_ID,
};

static bool all_class(const uint8_t *s, size_t len, uint8_t cls)
{
    uint8_t acc = cls;
    for (size_t i = 0; i < len; i++)
        acc &= char_class[s[i]];
    return acc != 0;
}

bool fidbus_event_id_valid(const char *id, size_t len)
{
    return id && len >= 1 && len <= FIDBUS_MAX_ID_LEN &&
           all_class((const uint8_t *)id, len, CC_ID);
}

bool fidbus_tag_key_valid(const char *key, size_t len)
{
    return key && len >= 1 && len <= FIDBUS_MAX_TAG_KEY_LEN &&
           all_class((const uint8_t *)key, len, CC_KEY);
}

/*
 * Strict UTF-8 check; with no_nul also refuses NUL bytes (tag values end up
 * as C strings). ASCII runs, the common case, are tested 8 bytes at a time.
 */
static bool utf8_scan(const uint8_t *s, size_t len, bool no_nul)
{
    const uint64_t ones = UINT64_C(0x0101010101010101),
                   highs = UINT64_C(0x8080808080808080);
    size_t i = 0;
    while (i < len) {
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & highs)
                break;
            if (no_nul && ((w - ones) & ~w & highs))
                return false;
            i += 8;
        }
        if (i >= len)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0 && no_nul)
                return false;
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates U+D800..DFFF */
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return false; /* continuation byte, 0xc0/0xc1, 0xf5.. */
        }
        if (len - i < n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        }
        i += n;
    }
    return true;
}

bool fidbus_utf8_valid(const uint8_t *s, size_t len)
{
    return utf8_scan(s, len, false);
}

bool fidbus_tag_value_valid(const char *value, size_t len)
{
    if (len > FIDBUS_MAX_TAG_VALUE_LEN || (len && !value))
        return false;
    return utf8_scan((const uint8_t *)value, len, true);
}

const char *fidbus_code_name(int code)
{
    static const char *const names[] = {
        [FIDBUS_OK] = "OK",
        [FIDBUS_MALFORMED] = "MALFORMED",
        [FIDBUS_UNSUPPORTED] = "UNSUPPORTED",
        [FIDBUS_TOO_LARGE] = "TOO_LARGE",
        [FIDBUS_UNAUTHORIZED] = "UNAUTHORIZED",
        [FIDBUS_NO_ROUTE] = "NO_ROUTE",
        [FIDBUS_HANDLER_FAILED] = "HANDLER_FAILED",
        [FIDBUS_BUSY] = "BUSY",
        [FIDBUS_NOT_FOUND] = "NOT_FOUND",
        [FIDBUS_CONFLICT] = "CONFLICT",
        [FIDBUS_INVALID] = "INVALID",
        [FIDBUS_SIGNATURE_MISMATCH] = "SIGNATURE_MISMATCH",
        [FIDBUS_INTERNAL] = "INTERNAL",
    };
    if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
        return "UNKNOWN";
    return names[code];
}

/* ------------------------------------------------------- token stream */

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

/* The callbacks only record what libcbor saw; the parser acts on it. */
#define TOK(c) ((struct tok *)(c))
#define CB_NUM(fn, T, k)                                                                 \
    static void fn(void *c, T v)                                                         \
    {                                                                                    \
        TOK(c)->kind = (k);                                                              \
        TOK(c)->val = (uint64_t)v;                                                       \
    }
#define CB_STR(fn, k)                                                                    \
    static void fn(void *c, cbor_data s, size_t n)                                       \
    {                                                                                    \
        TOK(c)->kind = (k);                                                              \
        TOK(c)->s = s;                                                                   \
        TOK(c)->len = n;                                                                 \
    }
#define CB_KIND(fn, T, k)                                                                \
    static void fn(void *c, T v)                                                         \
    {                                                                                    \
        (void)v;                                                                         \
        TOK(c)->kind = (k);                                                              \
    }
#define CB_BARE(fn, k)                                                                   \
    static void fn(void *c)                                                              \
    {                                                                                    \
        TOK(c)->kind = (k);                                                              \
    }

CB_NUM(cb_u8, uint8_t, T_UINT)
CB_NUM(cb_u16, uint16_t, T_UINT)
CB_NUM(cb_u32, uint32_t, T_UINT)
CB_NUM(cb_u64, uint64_t, T_UINT)
CB_NUM(cb_n8, uint8_t, T_NEGINT)
CB_NUM(cb_n16, uint16_t, T_NEGINT)
CB_NUM(cb_n32, uint32_t, T_NEGINT)
CB_NUM(cb_n64, uint64_t, T_NEGINT)
CB_NUM(cb_array, size_t, T_ARRAY)
CB_NUM(cb_map, size_t, T_MAP)
CB_NUM(cb_tag, uint64_t, T_TAG)
CB_STR(cb_bstr, T_BSTR)
CB_STR(cb_tstr, T_TSTR)
CB_KIND(cb_float, float, T_SIMPLE)
CB_KIND(cb_double, double, T_SIMPLE)
CB_KIND(cb_bool, bool, T_SIMPLE)
CB_BARE(cb_bstr_indef, T_BSTR_INDEF)
CB_BARE(cb_tstr_indef, T_TSTR_INDEF)
CB_BARE(cb_array_indef, T_ARRAY_INDEF)
CB_BARE(cb_map_indef, T_MAP_INDEF)
CB_BARE(cb_simple, T_SIMPLE)
CB_BARE(cb_break, T_BREAK)

/* libcbor's member names for indefinite/definite starts are swapped in its
 * header comments; these assignments follow what the decoder calls. */
static const struct cbor_callbacks tok_callbacks = {
    .uint8 = cb_u8,
    .uint16 = cb_u16,
    .uint32 = cb_u32,
    .uint64 = cb_u64,
    .negint8 = cb_n8,
    .negint16 = cb_n16,
    .negint32 = cb_n32,
    .negint64 = cb_n64,
    .byte_string_start = cb_bstr_indef,
    .byte_string = cb_bstr,
    .string = cb_tstr,
    .string_start = cb_tstr_indef,
    .indef_array_start = cb_array_indef,
    .array_start = cb_array,
    .indef_map_start = cb_map_indef,
    .map_start = cb_map,
    .tag = cb_tag,
    .float2 = cb_float,
    .float4 = cb_float,
    .float8 = cb_double,
    .undefined = cb_simple,
    .null = cb_simple,
    .boolean = cb_bool,
    .indef_break = cb_break,
};

struct dec {
    const uint8_t *p, *end;
    struct fidbus_msg *m;
    unsigned max_depth;
    size_t chunk_budget;     /* arena bytes left for chunked plain strings */
    const char *invalid_why; /* first INVALID reason, reported at the end */
};

static int fail(struct dec *d, int code, const char *why)
{
    d->m->why = why;
    return code;
}

static void set_invalid(struct dec *d, const char *why)
{
    if (!d->invalid_why)
        d->invalid_why = why;
}

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
static inline int next_tok(struct dec *d, struct tok *t)
{
    if (d->p >= d->end)
        return fail(d, FIDBUS_MALFORMED, "truncated CBOR item");
    uint8_t ib = *d->p;
    if (ib < 0x18) {
        t->kind = T_UINT;
        t->val = ib;
        d->p++;
        return 0;
    }
    if (ib >= 0xc6 && ib <= 0xd4) {
        t->kind = T_TAG;
        t->val = ib - 0xc0u;
        d->p++;
        return 0;
    }
    if (ib >= 0xe0 && ib <= 0xf3) {
        t->kind = T_SIMPLE;
        d->p++;
        return 0;
    }
    if (ib == 0xf8) {
        if (d->end - d->p < 2)
            return fail(d, FIDBUS_MALFORMED, "truncated CBOR item");
        if (d->p[1] < 0x20)
            return fail(d, FIDBUS_MALFORMED, "simple value below 32 in two bytes");
        t->kind = T_SIMPLE;
        d->p += 2;
        return 0;
    }
    struct cbor_decoder_result r =
        cbor_stream_decode(d->p, (size_t)(d->end - d->p), &tok_callbacks, t);
    if (r.status == CBOR_DECODER_FINISHED) {
        d->p += r.read;
        return 0;
    }
    if (r.status == CBOR_DECODER_NEDATA)
        return fail(d, FIDBUS_MALFORMED, "truncated CBOR item");
    return fail(d, FIDBUS_MALFORMED, "reserved CBOR initial byte");
}

/* ------------------------------------------------------- raw items */

/* Container stack entry: remaining item count << 3 | kind. A definite
 * count is at most twice the body length, far below 2^61. For indefinite
 * maps the count field holds the parity of the items seen. */
enum lvl_kind {
    L_DEF, /* definite array, map (2n items) or tag (1 item) */
    L_ARRAY_INDEF,
    L_MAP_INDEF,
    L_BSTR_INDEF, /* chunked strings: only chunks of the same type inside */
    L_TSTR_INDEF,
};

#define LVL(kind, n) ((uint64_t)(n) << 3 | (uint64_t)(kind))
#define LVL_KIND(v) ((enum lvl_kind)((v)&7u))
#define LVL_N(v) ((v) >> 3)

/*
 * Skips one complete data item, checking that it is well-formed and no
 * deeper than max_depth. The item's bytes are [start, d->p) afterwards.
 */
static int skip_item(struct dec *d, unsigned max_depth)
{
    uint64_t stack[FB_DEPTH_HARD_MAX + 1]; /* + 1: a chunked string on top */
    unsigned sp = 0;                       /* entries in stack */
    unsigned depth = 0;                    /* containers and tags open */
    struct tok t;
    int rc;

    for (;;) {
        if ((rc = next_tok(d, &t)))
            return rc;
        if (sp && LVL_KIND(stack[sp - 1]) >= L_BSTR_INDEF) {
            enum tok_kind want =
                LVL_KIND(stack[sp - 1]) == L_BSTR_INDEF ? T_BSTR : T_TSTR;
            if (t.kind == want)
                continue;
            if (t.kind != T_BREAK)
                return fail(d, FIDBUS_MALFORMED,
                            "bad chunk in an indefinite-length string");
            sp--;
            goto item_done;
        }
        switch (t.kind) {
        case T_UINT:
        case T_NEGINT:
        case T_BSTR:
        case T_TSTR:
        case T_SIMPLE:
            break;
        case T_BSTR_INDEF:
        case T_TSTR_INDEF:
            stack[sp++] = LVL(t.kind == T_BSTR_INDEF ? L_BSTR_INDEF : L_TSTR_INDEF, 0);
            continue;
        case T_ARRAY:
        case T_MAP:
        case T_TAG:
        case T_ARRAY_INDEF:
        case T_MAP_INDEF: {
            if (depth >= max_depth)
                return fail(d, FIDBUS_TOO_LARGE, "item nested too deep");
            size_t avail = (size_t)(d->end - d->p);
            uint64_t n = t.val;
            if (t.kind == T_MAP) {
                /* Every item takes at least one byte: a count above the
                 * bytes left is truncated, and doubling cannot overflow. */
                if (n > avail / 2)
                    return fail(d, FIDBUS_MALFORMED, "truncated CBOR map");
                n *= 2;
            } else if (t.kind == T_ARRAY && n > avail) {
                return fail(d, FIDBUS_MALFORMED, "truncated CBOR array");
            } else if (t.kind == T_TAG) {
                n = 1;
            }
            if ((t.kind == T_ARRAY || t.kind == T_MAP) && n == 0)
                break; /* empty: complete at once */
            enum lvl_kind k = t.kind == T_ARRAY_INDEF ? L_ARRAY_INDEF
                              : t.kind == T_MAP_INDEF ? L_MAP_INDEF
                                                      : L_DEF;
            stack[sp++] = LVL(k, k == L_DEF ? n : 0);
            depth++;
            continue;
        }
        case T_BREAK:
            if (sp == 0 || LVL_KIND(stack[sp - 1]) == L_DEF)
                return fail(d, FIDBUS_MALFORMED,
                            "break outside an indefinite-length item");
            if (LVL_KIND(stack[sp - 1]) == L_MAP_INDEF && LVL_N(stack[sp - 1]) != 0)
                return fail(d, FIDBUS_MALFORMED, "map with a key but no value");
            sp--;
            depth--;
            break;
        }
    item_done:
        /* One item completed at the top level: count it against its parent,
         * closing every definite container that this fills up. */
        while (sp) {
            uint64_t *top = &stack[sp - 1];
            enum lvl_kind k = LVL_KIND(*top);
            if (k == L_DEF) {
                *top -= 1u << 3;
                if (LVL_N(*top) == 0) {
                    sp--;
                    depth--;
                    continue;
                }
            } else if (k == L_MAP_INDEF) {
                *top ^= 1u << 3;
            }
            break;
        }
        if (sp == 0)
            return 0;
    }
}

/* --------------------------------------------------------- envelope */

enum str_mode {
    S_SLICE, /* a slice of the body; chunks concatenated into the arena */
    S_CSTR,  /* always copied into the arena and NUL-terminated */
    S_CHECK, /* validated only (args keys, tags past the 32nd) */
};

/* What to read. cls (text only) is a character class the caller wants the
 * text checked against: CC_ID, CC_KEY, CC_NONUL (no NUL byte) or 0. */
struct str_req {
    enum tok_kind major; /* T_TSTR or T_BSTR */
    enum str_mode mode;
    uint8_t cls;
    size_t max; /* S_CSTR: longest text kept */
    const char *what;
};

struct str_res {
    struct fidbus_slice s; /* s.ptr is NULL when too_long */
    bool too_long;         /* S_CSTR and longer than max */
    bool bad_chars;        /* outside req->cls */
};

#define CC_NONUL 4

/*
 * Checks one (chunk of) text: MALFORMED unless valid UTF-8. A text that is
 * all in the caller's class is ASCII, hence valid UTF-8, so the common case
 * costs one table pass; only a text outside the class is checked again.
 */
static int check_text(struct dec *d, const uint8_t *s, size_t n, uint8_t cls,
                      struct str_res *res)
{
    if (cls == CC_NONUL) {
        if (utf8_scan(s, n, true))
            return 0;
        res->bad_chars = true;
    } else if (cls) {
        if (all_class(s, n, cls))
            return 0;
        res->bad_chars = true;
    }
    if (!fidbus_utf8_valid(s, n))
        return fail(d, FIDBUS_MALFORMED, "text is not valid UTF-8");
    return 0;
}

/*
 * Reads a text or byte string, definite or chunked (each chunk checked on
 * its own, as RFC 8949 requires). In S_CSTR mode at most req->max bytes
 * are kept; the caller decides whether too_long / bad_chars make the
 * message INVALID. In S_SLICE mode chunked strings share the arena's chunk
 * budget (TOO_LARGE when it runs out).
 */
static int read_str(struct dec *d, const struct str_req *req, struct str_res *res)
{
    struct fidbus_msg *m = d->m;
    bool text = req->major == T_TSTR;
    struct tok t = {.s = NULL,
                    .len = 0}; /* set by callbacks; quiets -Wmaybe-uninitialized */
    int rc;

    res->too_long = res->bad_chars = false;
    if ((rc = next_tok(d, &t)))
        return rc;
    if (t.kind == req->major) {
        if (text && (rc = check_text(d, t.s, t.len, req->cls, res)))
            return rc;
        res->s.len = t.len;
        if (req->mode != S_CSTR) {
            res->s.ptr = t.s;
            return 0;
        }
        if (t.len > req->max) {
            res->too_long = true;
            res->s.ptr = NULL;
            return 0;
        }
        char *dst = m->arena + m->arena_used;
        memcpy(dst, t.s, t.len);
        dst[t.len] = '\0';
        m->arena_used += t.len + 1;
        res->s.ptr = (const uint8_t *)dst;
        return 0;
    }
    if (t.kind != (text ? T_TSTR_INDEF : T_BSTR_INDEF))
        return fail(d, FIDBUS_MALFORMED, req->what);

    size_t start = m->arena_used, total = 0;
    bool keep = req->mode != S_CHECK;
    size_t limit = req->mode == S_CSTR ? req->max : d->chunk_budget;
    for (;;) {
        if ((rc = next_tok(d, &t)))
            return rc;
        if (t.kind == T_BREAK)
            break;
        if (t.kind != req->major)
            return fail(d, FIDBUS_MALFORMED, "bad chunk in an indefinite-length string");
        if (text && (rc = check_text(d, t.s, t.len, req->cls, res)))
            return rc;
        if (!keep)
            continue;
        if (t.len > limit - total) {
            if (req->mode == S_SLICE)
                return fail(d, FIDBUS_TOO_LARGE,
                            "chunked strings exceed the decode arena");
            keep = false;
            res->too_long = true;
            continue;
        }
        memcpy(m->arena + start + total, t.s, t.len);
        total += t.len;
    }
    res->s.ptr = NULL;
    res->s.len = 0;
    if (!keep)
        return 0;
    res->s.ptr = (const uint8_t *)m->arena + start;
    res->s.len = total;
    if (req->mode == S_CSTR)
        m->arena[start + total++] = '\0';
    else
        d->chunk_budget -= total;
    m->arena_used = start + total;
    return 0;
}

static int read_uint(struct dec *d, uint64_t *v, const char *what)
{
    struct tok t;
    int rc = next_tok(d, &t);
    if (rc)
        return rc;
    if (t.kind != T_UINT)
        return fail(d, FIDBUS_MALFORMED, what);
    *v = t.val;
    return 0;
}

/* Map head: definite (count in *n) or indefinite (*indef). */
static int read_map_head(struct dec *d, uint64_t *n, bool *indef, const char *what)
{
    struct tok t;
    int rc = next_tok(d, &t);
    if (rc)
        return rc;
    if (t.kind == T_MAP_INDEF) {
        *indef = true;
        *n = 0;
        return 0;
    }
    if (t.kind != T_MAP)
        return fail(d, FIDBUS_MALFORMED, what);
    if (t.val > (size_t)(d->end - d->p) / 2)
        return fail(d, FIDBUS_MALFORMED, "truncated CBOR map");
    *indef = false;
    *n = t.val;
    return 0;
}

/* Is there another entry in a map being read? Consumes the break. */
static bool map_more(struct dec *d, bool indef, uint64_t n, uint64_t i)
{
    if (!indef)
        return i < n;
    if (d->p < d->end && *d->p == 0xff) {
        d->p++;
        return false;
    }
    return true;
}

static int read_event(struct dec *d)
{
    static const struct str_req req = {T_TSTR, S_CSTR, CC_ID, FIDBUS_MAX_ID_LEN,
                                       "event is not a text string"};
    struct fidbus_msg *m = d->m;
    struct str_res r;
    int rc = read_str(d, &req, &r);
    if (rc)
        return rc;
    if (r.too_long) {
        set_invalid(d, "event id longer than 255 bytes");
    } else if (r.bad_chars) {
        set_invalid(d, "event id has a character outside [A-Za-z0-9_.:-]");
    } else if (r.s.len == 0) {
        set_invalid(d, "event id is empty");
    } else {
        m->event = (const char *)r.s.ptr;
        m->event_len = r.s.len;
        m->present |= FIDBUS_BIT(FIDBUS_K_EVENT);
    }
    return 0;
}

static int read_tags(struct dec *d)
{
    static const struct str_req key_req = {T_TSTR, S_CSTR, CC_KEY, FIDBUS_MAX_TAG_KEY_LEN,
                                           "tag key is not a text string"};
    static const struct str_req val_req = {T_TSTR, S_CSTR, CC_NONUL,
                                           FIDBUS_MAX_TAG_VALUE_LEN,
                                           "tag value is not a text string"};
    /* Past the 32nd tag only check: the arena has room for 32. */
    static const struct str_req key_chk = {T_TSTR, S_CHECK, 0, 0,
                                           "tag key is not a text string"};
    static const struct str_req val_chk = {T_TSTR, S_CHECK, 0, 0,
                                           "tag value is not a text string"};
    struct fidbus_msg *m = d->m;
    uint64_t n, i;
    bool indef;
    int rc = read_map_head(d, &n, &indef, "tags is not a map");
    if (rc)
        return rc;
    for (i = 0; map_more(d, indef, n, i); i++) {
        size_t mark = m->arena_used;
        bool store = i < FIDBUS_MAX_TAGS;
        struct str_res k, v;
        if ((rc = read_str(d, store ? &key_req : &key_chk, &k)))
            return rc;
        if ((rc = read_str(d, store ? &val_req : &val_chk, &v)))
            return rc;
        if (!store) {
            set_invalid(d, "more than 32 tags");
            continue;
        }
        const char *bad = NULL;
        if (k.too_long || k.bad_chars || k.s.len == 0)
            bad = "tag key is not 1-64 bytes of [A-Za-z0-9_.-]";
        else if (v.too_long)
            bad = "tag value longer than 255 bytes";
        else if (v.bad_chars)
            bad = "tag value contains a NUL byte";
        for (size_t j = 0; !bad && j < m->ntags; j++) {
            if (strcmp(m->tags[j].key, (const char *)k.s.ptr) == 0)
                bad = "duplicate tag key";
        }
        if (bad) {
            set_invalid(d, bad);
            /* Not kept: give the arena back so 32 tags always fit. */
            m->arena_used = mark;
            continue;
        }
        m->tags[m->ntags].key = (const char *)k.s.ptr;
        m->tags[m->ntags].value = (const char *)v.s.ptr;
        m->ntags++;
    }
    m->present |= FIDBUS_BIT(FIDBUS_K_TAGS);
    return 0;
}

static int read_raw(struct dec *d, struct fidbus_slice *out, unsigned max_depth)
{
    const uint8_t *start = d->p;
    int rc = skip_item(d, max_depth);
    if (rc)
        return rc;
    out->ptr = start;
    out->len = (size_t)(d->p - start);
    return 0;
}

/* args: map tstr => any. The map is depth 1 of the item. */
static int read_args(struct dec *d)
{
    struct fidbus_msg *m = d->m;
    const uint8_t *start = d->p;
    uint64_t n, i;
    bool indef;
    int rc = read_map_head(d, &n, &indef, "args is not a map");
    if (rc)
        return rc;
    if (d->max_depth < 1)
        return fail(d, FIDBUS_TOO_LARGE, "item nested too deep");
    for (i = 0; map_more(d, indef, n, i); i++) {
        static const struct str_req key_req = {T_TSTR, S_CHECK, 0, 0,
                                               "args key is not a text string"};
        struct str_res k;
        if ((rc = read_str(d, &key_req, &k)))
            return rc;
        if ((rc = skip_item(d, d->max_depth - 1)))
            return rc;
    }
    m->args.ptr = start;
    m->args.len = (size_t)(d->p - start);
    return 0;
}

static int read_value(struct dec *d, uint64_t key)
{
    static const struct str_req message_req = {T_TSTR, S_SLICE, 0, 0,
                                               "message is not a text string"};
    static const struct str_req command_req = {T_TSTR, S_SLICE, 0, 0,
                                               "command is not a text string"};
    static const struct str_req name_req = {T_TSTR, S_SLICE, 0, 0,
                                            "name is not a text string"};
    static const struct str_req nonce_req = {T_BSTR, S_SLICE, 0, 0,
                                             "nonce is not a byte string"};
    static const struct str_req mac_req = {T_BSTR, S_SLICE, 0, 0,
                                           "mac is not a byte string"};
    struct fidbus_msg *m = d->m;
    struct fidbus_slice *dst;
    const struct str_req *req;
    struct str_res r;
    int rc;

    switch (key) {
    case FIDBUS_K_TYPE:
        return read_uint(d, &m->type, "type is not an unsigned integer");
    case FIDBUS_K_SEQ:
        rc = read_uint(d, &m->seq, "seq is not an unsigned integer");
        if (rc == 0)
            m->present |= FIDBUS_BIT(FIDBUS_K_SEQ); /* errors may carry it */
        return rc;
    case FIDBUS_K_EVENT:
        return read_event(d);
    case FIDBUS_K_TAGS:
        return read_tags(d);
    case FIDBUS_K_PAYLOAD:
        return read_raw(d, &m->payload, d->max_depth);
    case FIDBUS_K_FLAGS:
        return read_uint(d, &m->flags, "flags is not an unsigned integer");
    case FIDBUS_K_CODE:
        return read_uint(d, &m->code, "code is not an unsigned integer");
    case FIDBUS_K_MESSAGE:
        dst = &m->message, req = &message_req;
        break;
    case FIDBUS_K_RESULT:
        return read_raw(d, &m->result, d->max_depth);
    case FIDBUS_K_COMMAND:
        dst = &m->command, req = &command_req;
        break;
    case FIDBUS_K_ARGS:
        return read_args(d);
    case FIDBUS_K_VERSION:
        return read_uint(d, &m->version, "version is not an unsigned integer");
    case FIDBUS_K_NAME:
        dst = &m->name, req = &name_req;
        break;
    case FIDBUS_K_NONCE:
        dst = &m->nonce, req = &nonce_req;
        break;
    case FIDBUS_K_MAC:
        dst = &m->mac, req = &mac_req;
        break;
    default: {
        /* Unknown key: skipped for forward compatibility, but it must still
         * be well-formed and bounded like any other item. */
        struct fidbus_slice ignored;
        return read_raw(d, &ignored, d->max_depth);
    }
    }
    if ((rc = read_str(d, req, &r)))
        return rc;
    *dst = r.s;
    return 0;
}

static void msg_reset(struct fidbus_msg *m)
{
    static const struct fidbus_slice none = {NULL, 0};
    m->present = 0;
    m->type = m->seq = m->flags = m->code = m->version = 0;
    m->event = NULL;
    m->event_len = 0;
    m->ntags = 0;
    m->payload = m->result = m->args = none;
    m->message = m->command = m->name = none;
    m->nonce = m->mac = none;
    m->why = NULL;
    m->arena_used = 0;
}

int fidbus_msg_decode(const uint8_t *body, size_t len, unsigned max_depth,
                      struct fidbus_msg *m)
{
    struct dec d = {
        .m = m,
        .max_depth = max_depth == 0                  ? FIDBUS_MAX_DEPTH_DEFAULT
                     : max_depth > FB_DEPTH_HARD_MAX ? FB_DEPTH_HARD_MAX
                                                     : max_depth,
        .chunk_budget = FB_CHUNK_BUDGET,
    };
    uint32_t seen = 0;
    uint64_t n, i;
    bool indef;
    int rc;

    msg_reset(m);
    if (!body || len == 0)
        return fail(&d, FIDBUS_MALFORMED, "empty body");
    d.p = body;
    d.end = body + len;
    if ((rc = read_map_head(&d, &n, &indef, "message is not a CBOR map")))
        return rc;
    for (i = 0; map_more(&d, indef, n, i); i++) {
        uint64_t key;
        if ((rc = read_uint(&d, &key, "map key is not an unsigned integer")))
            return rc;
        if (key < FIDBUS_K__COUNT) {
            if (seen & FIDBUS_BIT(key))
                return fail(&d, FIDBUS_MALFORMED, "duplicate map key");
            seen |= FIDBUS_BIT(key);
        }
        if ((rc = read_value(&d, key)))
            return rc;
    }
    if (d.p != d.end)
        return fail(&d, FIDBUS_MALFORMED, "trailing bytes after the message");
    /* Keys whose value is stored as read; event and tags set their own bit
     * only when valid, seq as soon as it is read. */
    m->present |= seen & ~(FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_TAGS));
    if (!(seen & FIDBUS_BIT(FIDBUS_K_TYPE)))
        return fail(&d, FIDBUS_MALFORMED, "message has no type");
    if (d.invalid_why)
        return fail(&d, FIDBUS_INVALID, d.invalid_why);
    return 0;
}

int fidbus_msg_check(struct fidbus_msg *m)
{
    uint32_t need;
    switch (m->type) {
    case FIDBUS_MSG_HELLO:
        need = FIDBUS_BIT(FIDBUS_K_VERSION);
        break;
    case FIDBUS_MSG_AUTH:
        need = FIDBUS_BIT(FIDBUS_K_MAC);
        break;
    case FIDBUS_MSG_PUBLISH:
        need = FIDBUS_BIT(FIDBUS_K_EVENT);
        break;
    case FIDBUS_MSG_ACK:
    case FIDBUS_MSG_PING:
        need = 0; /* seq is optional: without one there is nothing to echo */
        break;
    case FIDBUS_MSG_ERROR:
    case FIDBUS_MSG_REPLY:
        need = FIDBUS_BIT(FIDBUS_K_CODE);
        break;
    case FIDBUS_MSG_REQUEST:
        need = FIDBUS_BIT(FIDBUS_K_COMMAND);
        break;
    default:
        m->why = "unsupported message type";
        return FIDBUS_UNSUPPORTED;
    }
    if ((m->present & need) != need) {
        static const char *const missing[FIDBUS_K__COUNT] = {
            [FIDBUS_K_VERSION] = "HELLO without version",
            [FIDBUS_K_MAC] = "AUTH without mac",
            [FIDBUS_K_EVENT] = "PUBLISH without event",
            [FIDBUS_K_CODE] = "message without code",
            [FIDBUS_K_COMMAND] = "REQUEST without command",
        };
        m->why = missing[__builtin_ctz(need & ~m->present)];
        return FIDBUS_MALFORMED;
    }
    return 0;
}
