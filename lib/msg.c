/*
 * Message decoding and validation (proto/README.md, <fidbus/proto.h>).
 *
 * fidbus_msg_decode() is the daemon's hot path: every frame goes through it.
 * A small pull parser here walks the envelope map over the token reader of
 * cbor_scan.h, which reads one data item head at a time with libcbor's
 * streaming decoder. No item tree is built, nothing is allocated, and
 * nothing recurses on the C stack:
 *
 *   - payload (4), result (8), args (10) and the values of unknown keys are
 *     skipped with fb_cbor_skip_item(), which checks well-formedness,
 *     bounds the nesting depth, and leaves their exact original bytes as a
 *     slice of the body (never re-encoded);
 *   - event id and tags are copied into the message's arena so they can be
 *     NUL-terminated for the plugin API; other text and byte strings are
 *     slices of the body unless they arrive as indefinite-length chunks,
 *     which are concatenated into the arena.
 *
 * Depth (as cbor_scan.h defines it): an item deeper than max_depth is
 * TOO_LARGE. max_depth 0 means the default (64), and values above
 * FB_DEPTH_HARD_MAX are clamped to it.
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

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "cbor_scan.h"

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

bool fidbus_event_valid(const char *id, const struct fidbus_tag *tags, size_t ntags)
{
    /* strnlen: a string past its limit is invalid however long it is */
    if (!id || !fidbus_event_id_valid(id, strnlen(id, FIDBUS_MAX_ID_LEN + 1)))
        return false;
    if (ntags > FIDBUS_MAX_TAGS || (ntags && !tags))
        return false;
    for (size_t i = 0; i < ntags; i++) {
        const char *k = tags[i].key, *v = tags[i].value;
        if (!k || !v ||
            !fidbus_tag_key_valid(k, strnlen(k, FIDBUS_MAX_TAG_KEY_LEN + 1)) ||
            !fidbus_tag_value_valid(v, strnlen(v, FIDBUS_MAX_TAG_VALUE_LEN + 1)))
            return false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(tags[j].key, k) == 0)
                return false;
    }
    return true;
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
        [FIDBUS_UNAVAILABLE] = "UNAVAILABLE",
        [FIDBUS_RETRY] = "RETRY",
    };
    if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
        return "UNKNOWN";
    return names[code];
}

/* --------------------------------------------------------- envelope */

struct dec {
    struct fb_cbor_scan in; /* in.why is &m->why */
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
    if ((rc = fb_cbor_next_tok(&d->in, &t)))
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
        if ((rc = fb_cbor_next_tok(&d->in, &t)))
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
    int rc = fb_cbor_next_tok(&d->in, &t);
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
    int rc = fb_cbor_next_tok(&d->in, &t);
    if (rc)
        return rc;
    if (t.kind == T_MAP_INDEF) {
        *indef = true;
        *n = 0;
        return 0;
    }
    if (t.kind != T_MAP)
        return fail(d, FIDBUS_MALFORMED, what);
    if (t.val > (size_t)(d->in.end - d->in.p) / 2)
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
    if (d->in.p < d->in.end && *d->in.p == 0xff) {
        d->in.p++;
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
    const uint8_t *start = d->in.p;
    int rc = fb_cbor_skip_item(&d->in, max_depth);
    if (rc)
        return rc;
    out->ptr = start;
    out->len = (size_t)(d->in.p - start);
    return 0;
}

/* args: map tstr => any. The map is depth 1 of the item. */
static int read_args(struct dec *d)
{
    struct fidbus_msg *m = d->m;
    const uint8_t *start = d->in.p;
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
        if ((rc = fb_cbor_skip_item(&d->in, d->max_depth - 1)))
            return rc;
    }
    m->args.ptr = start;
    m->args.len = (size_t)(d->in.p - start);
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
    static const struct str_req function_req = {T_TSTR, S_SLICE, 0, 0,
                                                "function is not a text string"};
    static const struct str_req signature_req = {T_TSTR, S_SLICE, 0, 0,
                                                 "signature is not a text string"};
    static const struct str_req route_req = {T_TSTR, S_SLICE, 0, 0,
                                             "route is neither text nor null"};
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
    case FIDBUS_K_FUNCTION:
        dst = &m->function, req = &function_req;
        break;
    case FIDBUS_K_ID:
        return read_uint(d, &m->id, "id is not an unsigned integer");
    case FIDBUS_K_SIGNATURE:
        dst = &m->signature, req = &signature_req;
        break;
    case FIDBUS_K_CREDIT:
        return read_uint(d, &m->credit, "credit is not an unsigned integer");
    case FIDBUS_K_TIMEOUT_MS:
        return read_uint(d, &m->timeout_ms, "timeout_ms is not an unsigned integer");
    case FIDBUS_K_GENERATION:
        return read_uint(d, &m->generation, "generation is not an unsigned integer");
    case FIDBUS_K_ATTEMPT:
        return read_uint(d, &m->attempt, "attempt is not an unsigned integer");
    case FIDBUS_K_UPTO:
        return read_uint(d, &m->upto, "upto is not an unsigned integer");
    case FIDBUS_K_ROUTE:
        /* null (simple value 22, one byte 0xf6): an unrouted event */
        if (d->in.p < d->in.end && *d->in.p == 0xf6) {
            d->in.p++;
            m->route.ptr = NULL;
            m->route.len = 0;
            return 0;
        }
        dst = &m->route, req = &route_req;
        break;
    case FIDBUS_K_CONN:
        return read_uint(d, &m->conn, "conn is not an unsigned integer");
    case FIDBUS_K_DROPPED:
        return read_uint(d, &m->dropped, "dropped is not an unsigned integer");
    case FIDBUS_K_UID:
        return read_uint(d, &m->uid, "uid is not an unsigned integer");
    case FIDBUS_K_PID:
        return read_uint(d, &m->pid, "pid is not an unsigned integer");
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
        .in.why = &m->why,
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
    d.in.p = body;
    d.in.end = body + len;
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
    if (d.in.p != d.in.end)
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

/* ------------------------------------------------ remote functions */

static int check_fail(struct fidbus_msg *m, int code, const char *why)
{
    m->why = why;
    return code;
}

/*
 * REGISTER, UNREGISTER, CALL and RESULT (proto/README.md "Remote
 * functions"). Required keys first (MALFORMED, as for every type), then
 * the values (INVALID). seq is required where an answer must be matched:
 * REGISTER and UNREGISTER are answered, and a CALL's seq is its call id.
 */
static __attribute__((noinline)) int check_remote(struct fidbus_msg *m)
{
    uint32_t pr = m->present;
    switch (m->type) {
    case FIDBUS_MSG_REGISTER:
    case FIDBUS_MSG_UNREGISTER: {
        bool reg = m->type == FIDBUS_MSG_REGISTER;
        if (!(pr & FIDBUS_BIT(FIDBUS_K_SEQ)))
            return check_fail(m, FIDBUS_MALFORMED,
                              reg ? "REGISTER without seq" : "UNREGISTER without seq");
        if (!(pr & FIDBUS_BIT(FIDBUS_K_FUNCTION)))
            return check_fail(m, FIDBUS_MALFORMED,
                              reg ? "REGISTER without function"
                                  : "UNREGISTER without function");
        if (reg && !(pr & FIDBUS_BIT(FIDBUS_K_SIGNATURE)))
            return check_fail(m, FIDBUS_MALFORMED, "REGISTER without signature");
        if (!fidbus_canonical_valid((const char *)m->function.ptr, m->function.len))
            return check_fail(
                m, FIDBUS_INVALID,
                "function is not a canonical name ns.name@MAJOR.MINOR.PATCH");
        if (!reg)
            return 0;
        /* The daemon hashes the signature as a C string, as for plugins:
         * a NUL would cut it, so two different texts could share a hash. */
        if (m->signature.len > FIDBUS_SIGNATURE_MAX)
            return check_fail(m, FIDBUS_INVALID, "signature longer than 4096 bytes");
        if (m->signature.len && memchr(m->signature.ptr, '\0', m->signature.len))
            return check_fail(m, FIDBUS_INVALID, "signature contains a NUL byte");
        /* Above the [remote] section's value is cut to it by the daemon;
         * 0 would be a member that can never be given a call, or a call
         * that times out before it is written. */
        if ((pr & FIDBUS_BIT(FIDBUS_K_CREDIT)) && m->credit == 0)
            return check_fail(m, FIDBUS_INVALID, "credit must be at least 1");
        if ((pr & FIDBUS_BIT(FIDBUS_K_TIMEOUT_MS)) && m->timeout_ms == 0)
            return check_fail(m, FIDBUS_INVALID, "timeout_ms must be at least 1");
        return 0;
    }
    case FIDBUS_MSG_CALL: {
        static const struct {
            unsigned key;
            const char *why;
        } need[] = {
            {FIDBUS_K_SEQ, "CALL without seq"},
            {FIDBUS_K_ID, "CALL without id"},
            {FIDBUS_K_EVENT, "CALL without event"},
            {FIDBUS_K_GENERATION, "CALL without generation"},
            {FIDBUS_K_ATTEMPT, "CALL without attempt"},
        };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
            if (!(pr & FIDBUS_BIT(need[i].key)))
                return check_fail(m, FIDBUS_MALFORMED, need[i].why);
        if (m->attempt == 0)
            return check_fail(m, FIDBUS_INVALID, "attempt must be at least 1");
        return 0;
    }
    default: /* FIDBUS_MSG_RESULT */ {
        bool seq = pr & FIDBUS_BIT(FIDBUS_K_SEQ), upto = pr & FIDBUS_BIT(FIDBUS_K_UPTO);
        if (!seq && !upto)
            return check_fail(m, FIDBUS_MALFORMED, "RESULT without seq or upto");
        /* One RESULT answers one call or a range: with both, which one the
         * member meant is a guess, and a wrong guess answers calls twice. */
        if (seq && upto)
            return check_fail(m, FIDBUS_MALFORMED, "RESULT with both seq and upto");
        if (!(pr & FIDBUS_BIT(FIDBUS_K_CODE)))
            return check_fail(m, FIDBUS_MALFORMED, "RESULT without code");
        return 0;
    }
    }
}

int fidbus_msg_check(struct fidbus_msg *m)
{
    uint32_t need;
    /* PUBLISH first: with types up to 19 the switch below costs a PUBLISH
     * four more instructions than it did with types up to 8 (callgrind). */
    if (__builtin_expect(m->type == FIDBUS_MSG_PUBLISH &&
                             (m->present & FIDBUS_BIT(FIDBUS_K_EVENT)),
                         1))
        return 0;
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
    case FIDBUS_MSG_EVENT:
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
    case FIDBUS_MSG_REGISTER:
    case FIDBUS_MSG_UNREGISTER:
    case FIDBUS_MSG_CALL:
    case FIDBUS_MSG_RESULT:
        /* Out of line: these types are rare next to PUBLISH, whose check
         * stays the two instructions above. */
        return check_remote(m);
    default:
        m->why = "unsupported message type";
        return FIDBUS_UNSUPPORTED;
    }
    if ((m->present & need) != need) {
        static const char *const missing[FIDBUS_K__COUNT] = {
            [FIDBUS_K_VERSION] = "HELLO without version",
            [FIDBUS_K_MAC] = "AUTH without mac",
            [FIDBUS_K_EVENT] = "PUBLISH or EVENT without event",
            [FIDBUS_K_CODE] = "message without code",
            [FIDBUS_K_COMMAND] = "REQUEST without command",
        };
        m->why = missing[__builtin_ctz(need & ~m->present)];
        return FIDBUS_MALFORMED;
    }
    return 0;
}
