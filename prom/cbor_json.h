/*
 * prom/cbor_json.h -- a control result (one CBOR map, proto/control.md) as
 * a jansson tree: maps -> objects (a key that is not text becomes its JSON
 * text, e.g. 7 -> "7"), arrays -> arrays, text -> strings, integers ->
 * integers (beyond int64: a real), floats -> reals (NaN and infinities ->
 * null), true/false/null/undefined -> true/false/null/null, byte strings ->
 * lowercase hex text, tags -> their content.
 *
 * Not public API: a static library (prom/CMakeLists.txt) that fidbusctl
 * and fidbusd both link, so `stats --prometheus` and /metrics are one
 * rendering of one stats result.
 */
#ifndef FB_CBOR_JSON_H
#define FB_CBOR_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* `len` bytes, exactly one CBOR item (len 0: an empty object), as a new
 * JSON value; NULL with a one-line reason in why (bad CBOR, trailing
 * bytes, out of memory). */
json_t *fb_cbor_json(const uint8_t *p, size_t len, char *why, size_t why_len);

#endif
