/*
 * Control requests with JSON in and out, for e2e tests that check many
 * results (test_e2e_change.c, test_e2e_reload.c): args are written as JSON
 * with ' standing for " (a printf format), converted to CBOR by
 * ctl/json_cbor.c; a result comes back as JSON (jansson), checked to be
 * one well-formed CBOR map on the way.
 *
 * A test using it links harness_json.c, fidbusctl_core and jansson.
 */
#ifndef FB_E2E_HARNESS_JSON_H
#define FB_E2E_HARNESS_JSON_H

#include <cbor.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/* A CBOR result as JSON: definite text only, no map key twice. */
json_t *fb_e2e_to_json(const cbor_item_t *it);

/* The args fmt (JSON, ' for ") as CBOR (malloc'd, *len bytes). */
uint8_t *fb_e2e_json_args(size_t *len, const char *fmt, va_list ap);

/* REQUEST cmd with args (fmt NULL: none). Returns the rc; on 0 the
 * result (a map) as JSON in *res, else *res is NULL. */
int fb_e2e_vreq(struct fidbus_client *c, const char *cmd, json_t **res, const char *fmt,
                va_list ap);

/* Asserts the command succeeds; returns its result. */
json_t *fb_e2e_ok(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* o[key], asserted to be an integer. */
long long fb_e2e_jint(const json_t *o, const char *key);

#endif
