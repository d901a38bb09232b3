/*
 * lib/cbor_scan.c -- the libcbor callbacks behind fb_cbor_next_tok() and
 * the item skipper, fb_cbor_skip_item() (see cbor_scan.h).
 *
 * fidbus_msg_decode() (msg.c) reads the envelope's own keys and values
 * token by token; everything it does not look inside -- payload (4),
 * result (8), the values of args (10) and of unknown keys -- goes through
 * fb_cbor_skip_item(), which checks that the item is well-formed, bounds
 * its nesting depth, and leaves its exact original bytes in place so that
 * the caller can hand them on as a slice of the body (never re-encoded).
 */
#include "cbor_scan.h"

/* ------------------------------------------------------- token stream */

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
const struct cbor_callbacks fb_cbor_tok_callbacks = {
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
 * deeper than max_depth. The item's bytes are [start, s->p) afterwards.
 */
int fb_cbor_skip_item(struct fb_cbor_scan *s, unsigned max_depth)
{
    uint64_t stack[FB_DEPTH_HARD_MAX + 1]; /* + 1: a chunked string on top */
    unsigned sp = 0;                       /* entries in stack */
    unsigned depth = 0;                    /* containers and tags open */
    struct tok t;
    int rc;

    for (;;) {
        if ((rc = fb_cbor_next_tok(s, &t)))
            return rc;
        if (sp && LVL_KIND(stack[sp - 1]) >= L_BSTR_INDEF) {
            enum tok_kind want =
                LVL_KIND(stack[sp - 1]) == L_BSTR_INDEF ? T_BSTR : T_TSTR;
            if (t.kind == want)
                continue;
            if (t.kind != T_BREAK)
                return fb_cbor_fail(s, FIDBUS_MALFORMED,
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
                return fb_cbor_fail(s, FIDBUS_TOO_LARGE, "item nested too deep");
            size_t avail = (size_t)(s->end - s->p);
            uint64_t n = t.val;
            if (t.kind == T_MAP) {
                /* Every item takes at least one byte: a count above the
                 * bytes left is truncated, and doubling cannot overflow. */
                if (n > avail / 2)
                    return fb_cbor_fail(s, FIDBUS_MALFORMED, "truncated CBOR map");
                n *= 2;
            } else if (t.kind == T_ARRAY && n > avail) {
                return fb_cbor_fail(s, FIDBUS_MALFORMED, "truncated CBOR array");
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
                return fb_cbor_fail(s, FIDBUS_MALFORMED,
                                    "break outside an indefinite-length item");
            if (LVL_KIND(stack[sp - 1]) == L_MAP_INDEF && LVL_N(stack[sp - 1]) != 0)
                return fb_cbor_fail(s, FIDBUS_MALFORMED, "map with a key but no value");
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
