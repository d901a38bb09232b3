/*
 * CBOR helpers (cbor_util.h) for the route and plugin map decoders and
 * state.cbor. Text may arrive as definite or indefinite (chunked) CBOR
 * strings; both are read, because a control-socket client may send
 * either. Every refusal the decoding helpers write is FIDBUS_INVALID with
 * the decoder's prefix, so the operator sees which route or plugin and
 * which key, in a REPLY or in the log line of a state file set aside.
 */
#include "config/cbor_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

#include "base/err.h"
#include "config/route_spec.h"

/* ----------------------------------------------------- config lines */

const char *fb_cbor_value_problem(const char *v, bool line_start)
{
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return "contains a control character (a config line cannot hold it)";
    }
    if (n && (v[0] == ' ' || v[n - 1] == ' '))
        return "starts or ends with a blank (the config file trims it)";
    if (strstr(v, " ;"))
        return "has a ';' after a blank (the config file reads a comment there)";
    if (line_start && v[0] == ';')
        return "starts with ';' (the config file reads a comment there)";
    return NULL;
}

/* ------------------------------------------------- bounded loading */

enum plaus_kind { P_SCALAR, P_DEF, P_INDEF, P_TAG, P_BREAK };

struct plaus {
    enum plaus_kind kind;
    uint64_t n; /* items a definite container holds (pairs count twice) */
};

static void pl_array(void *ctx, size_t n)
{
    ((struct plaus *)ctx)->kind = P_DEF;
    ((struct plaus *)ctx)->n = n;
}

static void pl_map(void *ctx, size_t n)
{
    ((struct plaus *)ctx)->kind = P_DEF;
    /* a count this large cannot be backed by bytes anyway */
    ((struct plaus *)ctx)->n = n > SIZE_MAX / 2 ? SIZE_MAX : 2 * (uint64_t)n;
}

static void pl_indef(void *ctx)
{
    ((struct plaus *)ctx)->kind = P_INDEF;
}

static void pl_tag(void *ctx, uint64_t v)
{
    ((struct plaus *)ctx)->kind = P_TAG;
}

static void pl_break(void *ctx)
{
    ((struct plaus *)ctx)->kind = P_BREAK;
}

/* 0 when buf's first item is plausible (or not CBOR at all: cbor_load
 * then says why), else the offset + 1 of the head that is not, with
 * *short_data set when it claims more items than bytes follow. */
static size_t implausible_at(const uint8_t *buf, size_t len, unsigned max_depth,
                             bool *short_data)
{
    struct cbor_callbacks cb = cbor_empty_callbacks;
    cb.array_start = pl_array;
    cb.map_start = pl_map;
    cb.indef_array_start = pl_indef;
    cb.indef_map_start = pl_indef;
    cb.byte_string_start = pl_indef;
    cb.string_start = pl_indef;
    cb.tag = pl_tag;
    cb.indef_break = pl_break;
    /* items still owed by each open container; UINT64_MAX = indefinite */
    uint64_t stack[FB_CBOR_LOAD_DEPTH + 1];
    unsigned depth = 0;
    if (max_depth > FB_CBOR_LOAD_DEPTH)
        max_depth = FB_CBOR_LOAD_DEPTH;
    size_t off = 0;
    do {
        struct plaus pl = {.kind = P_SCALAR};
        struct cbor_decoder_result r = cbor_stream_decode(buf + off, len - off, &cb, &pl);
        if (r.status != CBOR_DECODER_FINISHED)
            return 0;
        size_t head = off;
        off += r.read;
        bool done = false; /* this head completed an item */
        switch (pl.kind) {
        case P_DEF:
            if (pl.n > len - off) {
                *short_data = true;
                return head + 1;
            }
            if (pl.n == 0) {
                done = true;
                break;
            }
            /* fall through */
        case P_TAG:
        case P_INDEF:
            if (depth == max_depth)
                return head + 1;
            stack[depth++] = pl.kind == P_DEF ? pl.n : pl.kind == P_TAG ? 1 : UINT64_MAX;
            break;
        case P_BREAK:
            if (!depth || stack[depth - 1] != UINT64_MAX)
                return 0; /* a stray break: cbor_load refuses it */
            depth--;
            done = true;
            break;
        case P_SCALAR:
            done = true;
            break;
        }
        while (done && depth && stack[depth - 1] != UINT64_MAX) {
            done = --stack[depth - 1] == 0;
            if (done)
                depth--;
        }
    } while (depth);
    return 0;
}

cbor_item_t *fb_cbor_load(const uint8_t *buf, size_t len, unsigned max_depth,
                          struct cbor_load_result *res)
{
    bool short_data = false;
    size_t bad = implausible_at(buf, len, max_depth, &short_data);
    if (bad) {
        memset(res, 0, sizeof *res);
        /* what cbor_load itself would say, had it the memory */
        res->error.code = short_data ? CBOR_ERR_NOTENOUGHDATA : CBOR_ERR_MALFORMATED;
        res->error.position = bad - 1;
        return NULL;
    }
    return cbor_load(buf, len, res);
}

/* ---------------------------------------------------------- reading */

int fb_cbor_text_dup(const cbor_item_t *it, char **out)
{
    *out = NULL;
    if (!it || !cbor_isa_string(it))
        return FB_CBOR_NOT_TEXT;

    cbor_item_t *const *chunks;
    size_t nchunks;
    cbor_item_t *self = (cbor_item_t *)it; /* libcbor's handles are not const */
    if (cbor_string_is_definite(it)) {
        chunks = &self;
        nchunks = 1;
    } else {
        chunks = cbor_string_chunks_handle(it);
        nchunks = cbor_string_chunk_count(it);
    }
    size_t len = 0;
    for (size_t i = 0; i < nchunks; i++) {
        if (!cbor_isa_string(chunks[i]) || !cbor_string_is_definite(chunks[i]))
            return FB_CBOR_NOT_TEXT;
        len += cbor_string_length(chunks[i]);
    }
    char *s = malloc(len + 1);
    if (!s)
        return -ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t n = cbor_string_length(chunks[i]);
        if (n) /* an empty string's handle may be NULL */
            memcpy(s + at, cbor_string_handle(chunks[i]), n);
        at += n;
    }
    s[len] = '\0';
    if (memchr(s, '\0', len)) {
        free(s);
        return FB_CBOR_TEXT_NUL;
    }
    *out = s;
    return FB_CBOR_TEXT_OK;
}

bool fb_cbor_get_int64(const cbor_item_t *it, int64_t *out)
{
    if (cbor_isa_uint(it)) {
        uint64_t v = cbor_get_int(it);
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
        return true;
    }
    if (cbor_isa_negint(it)) {
        uint64_t n = cbor_get_int(it); /* the value is -1 - n */
        if (n > INT64_MAX)
            return false;
        *out = -1 - (int64_t)n;
        return true;
    }
    return false;
}

int fb_cbor_map_find(const cbor_item_t *map, const char *key, const cbor_item_t **val)
{
    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    *val = NULL;
    for (size_t i = 0; i < n; i++) {
        char *k;
        int rc = fb_cbor_text_dup(pairs[i].key, &k);
        if (rc < 0)
            return rc;
        bool hit = rc == FB_CBOR_TEXT_OK && strcmp(k, key) == 0;
        free(k);
        if (hit) {
            *val = pairs[i].value;
            return 0;
        }
    }
    return 0;
}

/* --------------------------------------------------------- decoding */

int fb_cbor_invalid(struct fb_cbor_dec *d, const char *fmt, ...)
{
    char sub[FB_CBOR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sub, sizeof sub, fmt, ap);
    va_end(ap);
    fb_set_err(d->err, d->errlen, "%s%s", d->pre, sub);
    return FIDBUS_INVALID;
}

int fb_cbor_nomem(struct fb_cbor_dec *d)
{
    fb_set_err(d->err, d->errlen, "out of memory");
    return -ENOMEM;
}

int fb_cbor_value_text(struct fb_cbor_dec *d, const cbor_item_t *v, const char *key,
                       char **out)
{
    int rc = fb_cbor_text_dup(v, out);
    if (rc < 0)
        return fb_cbor_nomem(d);
    if (rc == FB_CBOR_NOT_TEXT)
        return fb_cbor_invalid(d, "'%s' must be a text string", key);
    if (rc == FB_CBOR_TEXT_NUL)
        return fb_cbor_invalid(d, "'%s' contains a NUL byte", key);
    return 0;
}

int fb_cbor_dec_name(struct fb_cbor_dec *d, const cbor_item_t *map, const char *kind,
                     bool optional, char **out)
{
    const cbor_item_t *v;
    snprintf(d->pre, sizeof d->pre, "%s: ", kind);
    if (fb_cbor_map_find(map, "name", &v) < 0)
        return fb_cbor_nomem(d);
    if (optional && (!v || fb_cbor_is_null(v)))
        return 0; /* the caller picks one */
    if (!v)
        return fb_cbor_invalid(d, "missing 'name'");
    int rc = fb_cbor_value_text(d, v, "name", out);
    if (rc)
        return rc;
    if (!fb_route_name_valid(*out))
        return fb_cbor_invalid(d, "name '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]",
                               *out);
    snprintf(d->pre, sizeof d->pre, "%s '%s': ", kind, *out);
    return 0;
}

/* Index of key in names[], -1 when it is none of them. */
static int key_index(const char *key, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(key, names[i]) == 0)
            return i;
    return -1;
}

static void join_names(char *buf, size_t len, const char *const *names, int count)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && at < len; i++) {
        int w = snprintf(buf + at, len - at, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        at += (size_t)w;
    }
}

int fb_cbor_walk_keys(struct fb_cbor_dec *d, const cbor_item_t *map,
                      const char *const *names, int count, fb_cbor_key_fn fn, void *arg,
                      unsigned *seen)
{
    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    *seen = 0;
    for (size_t i = 0; i < n; i++) {
        char *k;
        int rc = fb_cbor_text_dup(pairs[i].key, &k);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(d, "a key is not a text string");
        int id = key_index(k, names, count);
        if (id < 0) {
            char known[128];
            join_names(known, sizeof known, names, count);
            rc = fb_cbor_invalid(d, "unknown key '%.64s' (known: %s)", k, known);
            free(k);
            return rc;
        }
        free(k);
        if (*seen & (1u << id))
            return fb_cbor_invalid(d, "key '%s' is given twice", names[id]);
        *seen |= 1u << id;
        rc = fn(arg, d, id, pairs[i].value);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------- writing */

cbor_item_t *fb_cbor_uint(uint64_t v)
{
    if (v <= UINT8_MAX)
        return cbor_build_uint8((uint8_t)v);
    if (v <= UINT16_MAX)
        return cbor_build_uint16((uint16_t)v);
    if (v <= UINT32_MAX)
        return cbor_build_uint32((uint32_t)v);
    return cbor_build_uint64(v);
}

cbor_item_t *fb_cbor_int(int64_t v)
{
    if (v >= 0)
        return fb_cbor_uint((uint64_t)v);
    uint64_t n = (uint64_t)(-(v + 1)); /* CBOR stores -1 - n */
    if (n <= UINT8_MAX)
        return cbor_build_negint8((uint8_t)n);
    if (n <= UINT16_MAX)
        return cbor_build_negint16((uint16_t)n);
    if (n <= UINT32_MAX)
        return cbor_build_negint32((uint32_t)n);
    return cbor_build_negint64(n);
}

bool fb_cbor_put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    cbor_item_t *k = cbor_build_string(key);
    bool ok =
        k && value && cbor_map_add(map, (struct cbor_pair){.key = k, .value = value});
    if (k)
        cbor_decref(&k);
    if (value)
        cbor_decref(&value);
    return ok;
}

bool fb_cbor_push(cbor_item_t *array, cbor_item_t *value)
{
    bool ok = value && cbor_array_push(array, value);
    if (value)
        cbor_decref(&value);
    return ok;
}
