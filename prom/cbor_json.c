/*
 * prom/cbor_json.c -- a control REPLY's CBOR result as JSON (cbor_json.h).
 * Shared by fidbusctl (every --json and table output) and fidbusd (the
 * /metrics endpoint feeds the stats result through it to prom.c), so
 * memory running out gives NULL here and never exits.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "cbor_json.h"

static json_t *to_json(const cbor_item_t *it);

/* Text or bytes, definite or chunked, as one malloc'd buffer. */
static uint8_t *string_bytes(const cbor_item_t *it, size_t *len)
{
    bool bytes = cbor_isa_bytestring(it);
    if (bytes ? cbor_bytestring_is_definite(it) : cbor_string_is_definite(it)) {
        size_t n = bytes ? cbor_bytestring_length(it) : cbor_string_length(it);
        uint8_t *p = malloc(n + 1);
        if (!p)
            return NULL;
        memcpy(p, bytes ? cbor_bytestring_handle(it) : cbor_string_handle(it), n);
        *len = n;
        return p;
    }
    size_t nch = bytes ? cbor_bytestring_chunk_count(it) : cbor_string_chunk_count(it);
    cbor_item_t **ch =
        bytes ? cbor_bytestring_chunks_handle(it) : cbor_string_chunks_handle(it);
    size_t total = 0;
    for (size_t i = 0; i < nch; i++)
        total += bytes ? cbor_bytestring_length(ch[i]) : cbor_string_length(ch[i]);
    uint8_t *p = malloc(total + 1);
    if (!p)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < nch; i++) {
        size_t n = bytes ? cbor_bytestring_length(ch[i]) : cbor_string_length(ch[i]);
        memcpy(p + off, bytes ? cbor_bytestring_handle(ch[i]) : cbor_string_handle(ch[i]),
               n);
        off += n;
    }
    *len = total;
    return p;
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * n] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* A map key as object key text. */
static char *key_text(const cbor_item_t *k)
{
    if (cbor_isa_string(k)) {
        size_t n;
        char *s = (char *)string_bytes(k, &n);
        if (s)
            s[n] = '\0';
        return s;
    }
    json_t *j = to_json(k);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    /* a text rendering of a text-like key loses its quotes */
    if (s && s[0] == '"') {
        size_t n = strlen(s);
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
    }
    return s;
}

static json_t *to_json(const cbor_item_t *it)
{
    switch (cbor_typeof(it)) {
    case CBOR_TYPE_UINT: {
        uint64_t v = cbor_get_int(it);
        return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
    }
    case CBOR_TYPE_NEGINT: {
        uint64_t v = cbor_get_int(it); /* the value is -1 - v */
        return v < INT64_MAX ? json_integer(-1 - (json_int_t)v)
                             : json_real(-1.0 - (double)v);
    }
    case CBOR_TYPE_BYTESTRING: {
        size_t n;
        uint8_t *p = string_bytes(it, &n);
        json_t *j = p ? hex_json(p, n) : NULL;
        free(p);
        return j;
    }
    case CBOR_TYPE_STRING: {
        size_t n;
        uint8_t *p = string_bytes(it, &n);
        if (!p)
            return NULL;
        json_t *j = json_stringn((const char *)p, n);
        if (!j) /* not UTF-8 after all: show the bytes rather than lose them */
            j = hex_json(p, n);
        free(p);
        return j;
    }
    case CBOR_TYPE_ARRAY: {
        json_t *a = json_array();
        cbor_item_t **h = cbor_array_handle(it);
        for (size_t i = 0; a && i < cbor_array_size(it); i++)
            if (json_array_append_new(a, to_json(h[i])) < 0) {
                json_decref(a);
                a = NULL;
            }
        return a;
    }
    case CBOR_TYPE_MAP: {
        json_t *o = json_object();
        struct cbor_pair *h = cbor_map_handle(it);
        for (size_t i = 0; o && i < cbor_map_size(it); i++) {
            char *k = key_text(h[i].key);
            if (!k || json_object_set_new(o, k, to_json(h[i].value)) < 0) {
                json_decref(o);
                o = NULL;
            }
            free(k);
        }
        return o;
    }
    case CBOR_TYPE_TAG: {
        cbor_item_t *inner = cbor_tag_item(it);
        json_t *j = to_json(inner);
        cbor_decref(&inner);
        return j;
    }
    case CBOR_TYPE_FLOAT_CTRL:
        if (cbor_is_bool(it))
            return json_boolean(cbor_get_bool(it));
        if (cbor_float_ctrl_is_ctrl(it))
            return json_null(); /* null, undefined, other simple values */
        {
            double d = cbor_float_get_float(it);
            return isfinite(d) ? json_real(d) : json_null();
        }
    }
    return json_null();
}

json_t *fb_cbor_json(const uint8_t *p, size_t len, char *why, size_t why_len)
{
    if (len == 0) {
        json_t *o = json_object();
        if (!o)
            snprintf(why, why_len, "out of memory");
        return o;
    }
    struct cbor_load_result res;
    cbor_item_t *item = cbor_load(p, len, &res);
    if (!item || res.error.code != CBOR_ERR_NONE) {
        if (res.error.code == CBOR_ERR_MEMERROR)
            snprintf(why, why_len, "out of memory");
        else
            snprintf(why, why_len,
                     "the result is not well-formed CBOR (error %d at byte %zu)",
                     (int)res.error.code, res.error.position);
        if (item)
            cbor_decref(&item);
        return NULL;
    }
    if (res.read != len) {
        snprintf(why, why_len, "%zu bytes after the result's CBOR item", len - res.read);
        cbor_decref(&item);
        return NULL;
    }
    json_t *j = to_json(item);
    cbor_decref(&item);
    if (!j)
        snprintf(why, why_len, "out of memory");
    return j;
}
