/*
 * ctl/json_cbor.h -- JSON text to one encoded CBOR item, for
 * `fidbusctl publish --data-json` (and later control-command arguments).
 *
 * Mapping: JSON integers become CBOR integers (major type 0 or 1, shortest
 * form); reals become the shorter of float32 and float64 that holds the
 * value exactly (1.5 -> fa 3fc00000, 0.1 -> fb 3fb999999999999a), so a real
 * stays a float even when it has no fraction (1.0); strings are text
 * strings (\u0000 allowed); arrays are arrays; objects are maps with text
 * keys in the order they appear (duplicate keys are refused); true, false
 * and null are the CBOR simple values. Every length is definite.
 */
#ifndef FBCTL_JSON_CBOR_H
#define FBCTL_JSON_CBOR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Converts `len` bytes of JSON text (any value at the top level, not only
 * objects and arrays). Returns 0 with a malloc'd buffer in *out (the
 * caller frees it) and its length in *out_len; or -1 with a one-line
 * reason in err ("line 1, column 5: ..."), or -ENOMEM.
 */
int fbctl_json_to_cbor(const char *text, size_t len, uint8_t **out, size_t *out_len,
                       char *err, size_t err_len);

#endif
