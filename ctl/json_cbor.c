/*
 * ctl/json_cbor.c -- JSON text to one CBOR item (see json_cbor.h for
 * the mapping). jansson parses; libcbor's cbor_encode_* helpers write each
 * head straight into a fidbus_buf, so no CBOR item tree is ever built.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <jansson.h>

#include <fidbus/proto.h>

#include "json_cbor.h"

/* A CBOR head is at most 9 bytes: reserve that, let libcbor write it. */
#define HEAD_MAX 9

typedef size_t (*head_fn)(uint64_t, unsigned char *, size_t);

static int put_head(struct fidbus_buf *b, head_fn fn, uint64_t v)
{
    if (fidbus_buf_reserve(b, HEAD_MAX) < 0)
        return -ENOMEM;
    b->len += fn(v, b->data + b->len, b->cap - b->len);
    return 0;
}

/* libcbor's length-taking encoders take size_t, not uint64_t. */
static size_t string_head(uint64_t n, unsigned char *p, size_t cap)
{
    return cbor_encode_string_start((size_t)n, p, cap);
}

static size_t array_head(uint64_t n, unsigned char *p, size_t cap)
{
    return cbor_encode_array_start((size_t)n, p, cap);
}

static size_t map_head(uint64_t n, unsigned char *p, size_t cap)
{
    return cbor_encode_map_start((size_t)n, p, cap);
}

static int put_text(struct fidbus_buf *b, const char *s, size_t n)
{
    if (put_head(b, string_head, n) < 0)
        return -ENOMEM;
    return fidbus_buf_append(b, s, n);
}

static int put_real(struct fidbus_buf *b, double d)
{
    if (fidbus_buf_reserve(b, HEAD_MAX) < 0)
        return -ENOMEM;
    float f = (float)d;
    unsigned char *p = b->data + b->len;
    size_t cap = b->cap - b->len;
    /* the shorter form only when it round-trips exactly */
    b->len +=
        (double)f == d ? cbor_encode_single(f, p, cap) : cbor_encode_double(d, p, cap);
    return 0;
}

static int put_simple(struct fidbus_buf *b, int which)
{
    if (fidbus_buf_reserve(b, 1) < 0)
        return -ENOMEM;
    unsigned char *p = b->data + b->len;
    size_t cap = b->cap - b->len;
    b->len += which < 0 ? cbor_encode_null(p, cap) : cbor_encode_bool(which, p, cap);
    return 0;
}

static int put_value(struct fidbus_buf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (put_head(b, map_head, json_object_size(v)) < 0)
            return -ENOMEM;
        const char *key;
        json_t *val;
        /* jansson keeps insertion order, so the map keeps the text's order */
        json_object_foreach((json_t *)v, key, val)
        {
            if (put_text(b, key, strlen(key)) < 0 || put_value(b, val) < 0)
                return -ENOMEM;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (put_head(b, array_head, n) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++)
            if (put_value(b, json_array_get(v, i)) < 0)
                return -ENOMEM;
        return 0;
    }
    case JSON_STRING:
        return put_text(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i >= 0)
            return put_head(b, cbor_encode_uint, (uint64_t)i);
        /* CBOR stores -1 - n; this form cannot overflow for LLONG_MIN */
        return put_head(b, cbor_encode_negint, (uint64_t)(-(i + 1)));
    }
    case JSON_REAL:
        return put_real(b, json_real_value(v));
    case JSON_TRUE:
        return put_simple(b, 1);
    case JSON_FALSE:
        return put_simple(b, 0);
    case JSON_NULL:
        return put_simple(b, -1);
    }
    return -EINVAL;
}

int fbctl_json_to_cbor(const char *text, size_t len, uint8_t **out, size_t *out_len,
                       char *err, size_t err_len)
{
    json_error_t jerr;
    *out = NULL;
    *out_len = 0;
    json_t *root = json_loadb(
        text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        if (err && err_len)
            snprintf(err, err_len, "line %d, column %d: %s", jerr.line, jerr.column,
                     jerr.text);
        return -1;
    }
    struct fidbus_buf b = {0};
    int rc = put_value(&b, root);
    json_decref(root);
    if (rc < 0) {
        fidbus_buf_free(&b);
        if (err && err_len)
            snprintf(err, err_len, "%s", strerror(-rc));
        return rc;
    }
    *out = b.data;
    *out_len = b.len;
    return 0;
}
