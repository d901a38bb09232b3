/* Control requests with JSON in and out; see harness_json.h. */
#include "harness_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_cbor.h"

json_t *fb_e2e_to_json(const cbor_item_t *it)
{
    switch (cbor_typeof(it)) {
    case CBOR_TYPE_UINT:
        return json_integer((json_int_t)cbor_get_int(it));
    case CBOR_TYPE_NEGINT:
        return json_integer(-1 - (json_int_t)cbor_get_int(it));
    case CBOR_TYPE_STRING:
        ck_assert_msg(cbor_string_is_definite(it), "indefinite text in a result");
        return json_stringn((const char *)cbor_string_handle(it), cbor_string_length(it));
    case CBOR_TYPE_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < cbor_array_size(it); i++)
            json_array_append_new(a, fb_e2e_to_json(cbor_array_handle(it)[i]));
        return a;
    }
    case CBOR_TYPE_MAP: {
        json_t *o = json_object();
        struct cbor_pair *p = cbor_map_handle(it);
        for (size_t i = 0; i < cbor_map_size(it); i++) {
            ck_assert_msg(cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key),
                          "a result map key is not text");
            char *k = strndup((const char *)cbor_string_handle(p[i].key),
                              cbor_string_length(p[i].key));
            ck_assert_msg(!json_object_get(o, k), "key '%s' twice in a result", k);
            json_object_set_new(o, k, fb_e2e_to_json(p[i].value));
            free(k);
        }
        return o;
    }
    case CBOR_TYPE_FLOAT_CTRL:
        if (cbor_is_null(it))
            return json_null();
        if (cbor_is_bool(it))
            return json_boolean(cbor_get_bool(it));
        return json_real(cbor_float_get_float(it));
    default:
        ck_abort_msg("unexpected CBOR type %d in a result", (int)cbor_typeof(it));
        return NULL;
    }
}

uint8_t *fb_e2e_json_args(size_t *len, const char *fmt, va_list ap)
{
    char text[16384];
    int n = vsnprintf(text, sizeof text, fmt, ap);
    ck_assert_msg(n > 0 && (size_t)n < sizeof text, "args too long");
    for (char *p = text; *p; p++)
        if (*p == '\'')
            *p = '"';
    uint8_t *buf = NULL;
    char why[256];
    int rc = fbctl_json_to_cbor(text, strlen(text), &buf, len, why, sizeof why);
    ck_assert_msg(rc == 0, "bad test args %s: %s", text, why);
    return buf;
}

int fb_e2e_vreq(struct fidbus_client *c, const char *cmd, json_t **res, const char *fmt,
                va_list ap)
{
    uint8_t *a = NULL, *r = NULL;
    size_t alen = 0, rlen = 0;
    if (fmt)
        a = fb_e2e_json_args(&alen, fmt, ap);
    int rc = fidbus_request(c, cmd, a, alen, &r, &rlen);
    free(a);
    *res = NULL;
    if (rc == 0) {
        ck_assert_msg(r && rlen, "%s: REPLY without a result", cmd);
        struct cbor_load_result lr;
        cbor_item_t *it = cbor_load(r, rlen, &lr);
        ck_assert_msg(it && lr.error.code == CBOR_ERR_NONE && lr.read == rlen,
                      "%s: result is not one CBOR item", cmd);
        *res = fb_e2e_to_json(it);
        cbor_decref(&it);
        ck_assert_msg(json_is_object(*res), "%s: result is not a map", cmd);
    }
    free(r);
    return rc;
}

json_t *fb_e2e_ok(struct fidbus_client *c, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *res;
    int rc = fb_e2e_vreq(c, cmd, &res, fmt, ap);
    va_end(ap);
    ck_assert_msg(rc == 0, "%s: %s (%s)", cmd, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    return res;
}

long long fb_e2e_jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "'%s' missing or not an integer", key);
    return json_integer_value(v);
}
