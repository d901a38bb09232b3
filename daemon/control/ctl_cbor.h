/*
 * Building control-command results (control_cmds.c, control_change.c):
 * libcbor item trees, serialised once per REPLY. Building never stops
 * halfway on an allocation failure: struct cb remembers that one happened
 * and the command answers INTERNAL instead of a partial map.
 */
#ifndef FB_CTL_CBOR_H
#define FB_CTL_CBOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cbor.h>

#include <fidbus/funcid.h>

#include "config/cbor_util.h"


struct cb {
    bool oom;
};

static inline cbor_item_t *mk_map(struct cb *b, size_t n)
{
    cbor_item_t *m = cbor_new_definite_map(n);
    if (!m)
        b->oom = true;
    return m;
}

static inline cbor_item_t *mk_array(struct cb *b, size_t n)
{
    cbor_item_t *a = cbor_new_definite_array(n);
    if (!a)
        b->oom = true;
    return a;
}

/* Adds key => v to map and drops our reference to v (map_add takes its
 * own), so v is freed here if it could not be added. */
static inline void put(struct cb *b, cbor_item_t *map, const char *key, cbor_item_t *v)
{
    cbor_item_t *k = cbor_build_string(key);
    if (!map || !k || !v || !cbor_map_add(map, (struct cbor_pair){.key = k, .value = v}))
        b->oom = true;
    if (k)
        cbor_decref(&k);
    if (v)
        cbor_decref(&v);
}

static inline void push(struct cb *b, cbor_item_t *array, cbor_item_t *v)
{
    if (!array || !v || !cbor_array_push(array, v))
        b->oom = true;
    if (v)
        cbor_decref(&v);
}

/* Integers in their shortest encoding, as the wire protocol writes them. */
static inline cbor_item_t *u64(uint64_t v)
{
    return fb_cbor_uint(v);
}

static inline cbor_item_t *i64(int64_t v)
{
    return fb_cbor_int(v);
}

/* Text, or null for a NULL string. */
static inline cbor_item_t *text(const char *s)
{
    return s ? cbor_build_string(s) : cbor_new_null();
}

static inline cbor_item_t *funcid_text(uint64_t id)
{
    char hex[FIDBUS_FUNCID_HEX];
    fidbus_funcid_hex(id, hex);
    return cbor_build_string(hex);
}

#endif
