/*
 * CBOR helpers shared inside the daemon by the route and plugin map
 * decoders (spec_cbor.c, plugin_cbor.c) and state.cbor (state.c): reading
 * text and integers out of libcbor items, the decoding context that
 * prefixes every refusal with the route or plugin it is about, the
 * config-line rules a decoded value must keep, and building items with
 * the reference counting done in one place.
 *
 * Not a general CBOR layer: each helper is here because two of those
 * files needed the same thing, and behaves exactly as they relied on.
 */
#ifndef FB_CBOR_UTIL_H
#define FB_CBOR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

/* ----------------------------------------------------- config lines */

/* config_values.c refuses a line of 199 bytes or more (libinih's 200-byte
 * buffer holds 198 and the newline); control_export.c writes to it. */
#define FB_CFG_LINE_MAX 198
/* "key = value": what export writes for single values. */
#define FB_CFG_SINGLE_MAX(keylen) (FB_CFG_LINE_MAX - (int)(keylen)-3)
/* A list item on the first line "key = item," (the comma when more
 * follow); continuation lines ("    item,") hold more, so this bounds both. */
#define FB_CFG_ITEM_MAX(keylen) (FB_CFG_LINE_MAX - (int)(keylen)-3 - 1)

/*
 * Why v could not be written as a config value and read back the same, or
 * NULL when it can. line_start: v follows "key = " directly, where libinih
 * takes a leading ';' for a comment (its inline-comment test runs before
 * it skips the blank after '='). The reason is a static string.
 */
const char *fb_cbor_value_problem(const char *v, bool line_start);

/* ---------------------------------------------------------- reading */

/* Deepest nesting a control args map or state.cbor may have: the deepest
 * shape we read (route.test's apply.add[i].tags) is five levels. */
#define FB_CBOR_LOAD_DEPTH 16

/*
 * cbor_load for bytes from outside (control args, state.cbor), after a
 * pass that refuses what libcbor would turn into a huge allocation or a
 * deep recursion: a definite array or map that claims more items than
 * there are bytes left (libcbor allocates the claimed count up front, so
 * five bytes could ask for 32 GiB), or nesting deeper than max_depth
 * (cbor_decref recurses). Such input gets NULL with res->error.code
 * CBOR_ERR_NOTENOUGHDATA (the claimed items cannot be there) or
 * CBOR_ERR_MALFORMATED (too deep), res->error.position at the head;
 * everything else is exactly cbor_load. Found by tests/fuzz/fuzz_request.
 */
cbor_item_t *fb_cbor_load(const uint8_t *buf, size_t len, unsigned max_depth,
                          struct cbor_load_result *res);

enum fb_cbor_text_rc { FB_CBOR_TEXT_OK = 0, FB_CBOR_NOT_TEXT = 1, FB_CBOR_TEXT_NUL = 2 };

/*
 * A CBOR text string, definite or chunked, as a malloc'd C string the
 * caller owns. Returns FB_CBOR_TEXT_OK with *out set, FB_CBOR_NOT_TEXT,
 * FB_CBOR_TEXT_NUL (a NUL byte would silently cut the C string short), or
 * -ENOMEM; *out is NULL on every failure.
 */
int fb_cbor_text_dup(const cbor_item_t *it, char **out);

/* libcbor asserts when a float is asked for its control value, so simple
 * values are told from floats first. */
static inline bool fb_cbor_is_ctrl(const cbor_item_t *it)
{
    return cbor_isa_float_ctrl(it) && cbor_float_get_width(it) == CBOR_FLOAT_0;
}

static inline bool fb_cbor_is_null(const cbor_item_t *it)
{
    return fb_cbor_is_ctrl(it) && cbor_is_null(it);
}

/* A CBOR integer that fits int64_t into *out; false for anything else. */
bool fb_cbor_get_int64(const cbor_item_t *it, int64_t *out);

/*
 * The value of text key `key` in map (borrowed from map), NULL when
 * absent. Chunked keys are compared too, so a key is found however the
 * sender encoded it. 0, or -ENOMEM.
 */
int fb_cbor_map_find(const cbor_item_t *map, const char *key, const cbor_item_t **val);

/* --------------------------------------------------------- decoding */

#define FB_CBOR_PRE_MAX 96  /* "route 'NAME': " with a 64-byte NAME */
#define FB_CBOR_MSG_MAX 512 /* one refusal, before the prefix */

/* One decode's error reporting: every refusal is pre + message in err. */
struct fb_cbor_dec {
    char pre[FB_CBOR_PRE_MAX]; /* "route 'NAME': ", "plugin: ", ... */
    char *err;                 /* the caller's buffer; may be NULL */
    size_t errlen;
};

/* "PREFIX" + message into d->err; returns FIDBUS_INVALID. */
int fb_cbor_invalid(struct fb_cbor_dec *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "out of memory" (no prefix) into d->err; returns -ENOMEM. */
int fb_cbor_nomem(struct fb_cbor_dec *d);

/* The text of a key's value into *out (owned); FIDBUS_INVALID naming the
 * key when it is not text or holds a NUL, -ENOMEM. */
int fb_cbor_value_text(struct fb_cbor_dec *d, const cbor_item_t *v, const char *key,
                       char **out);

/*
 * Reads map's "name" into *out (owned) as a route or plugin name
 * (fb_route_name_valid) and, from then on, prefixes refusals with "KIND
 * 'NAME': " (before it, "KIND: "). optional: an absent or null name is
 * fine and leaves *out NULL; otherwise absent is "missing 'name'". Returns
 * 0, FIDBUS_INVALID or -ENOMEM.
 */
int fb_cbor_dec_name(struct fb_cbor_dec *d, const cbor_item_t *map, const char *kind,
                     bool optional, char **out);

/* Called for each value by fb_cbor_walk_keys: id is the key's index in
 * names[]; a non-zero return stops the walk and is returned. */
typedef int (*fb_cbor_key_fn)(void *arg, struct fb_cbor_dec *d, int id,
                              const cbor_item_t *v);

/*
 * Walks map (a CBOR map) in the sender's order: every key must be text and
 * one of names[0..count-1] (count <= 32), each at most once, and fn(arg,
 * d, id, value) is called for it before the next key is read, so the
 * first problem in the map is the one reported. *seen gets bit id for each
 * key found. Returns 0, fn's first non-zero, FIDBUS_INVALID ("a key is not
 * a text string", "unknown key 'K' (known: a, b, ...)", "key 'K' is given
 * twice") or -ENOMEM.
 */
int fb_cbor_walk_keys(struct fb_cbor_dec *d, const cbor_item_t *map,
                      const char *const *names, int count, fb_cbor_key_fn fn, void *arg,
                      unsigned *seen);

/* ---------------------------------------------------------- writing */

/* Integers in their shortest encoding, as a hand-written CBOR file would
 * have them. NULL on allocation failure. */
cbor_item_t *fb_cbor_uint(uint64_t v);
cbor_item_t *fb_cbor_int(int64_t v);

/* Text, or null for a NULL string. */
static inline cbor_item_t *fb_cbor_text_or_null(const char *s)
{
    return s ? cbor_build_string(s) : cbor_new_null();
}

/*
 * Adds key => value to a definite map sized for it, taking over the
 * caller's reference to value (NULL, an allocation failure, fails).
 * cbor_map_add takes references of its own, so ours are dropped either
 * way. The same for fb_cbor_push and a definite array.
 */
bool fb_cbor_put(cbor_item_t *map, const char *key, cbor_item_t *value);
bool fb_cbor_push(cbor_item_t *array, cbor_item_t *value);

#endif
