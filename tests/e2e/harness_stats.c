/*
 * End-to-end harness: the daemon's `stats` read over the control socket
 * as CBOR (harness.h, fb_e2e_stats). Apart from harness.c and
 * harness_wire.c because it needs libcbor, which only the tests that read
 * stats this way link.
 */
#include "harness.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

static uint64_t uint_under(const cbor_item_t *m, const char *key)
{
    for (size_t i = 0; i < cbor_map_size(m); i++) {
        struct cbor_pair *pr = &cbor_map_handle(m)[i];
        if (cbor_isa_string(pr->key) && cbor_string_length(pr->key) == strlen(key) &&
            memcmp(cbor_string_handle(pr->key), key, strlen(key)) == 0) {
            ck_assert_msg(cbor_isa_uint(pr->value), "stats: %s is not a uint", key);
            return cbor_get_int(pr->value);
        }
    }
    ck_abort_msg("stats: no %s", key);
    return 0;
}

void fb_e2e_stats(const struct fb_e2e *t, size_t n, const char *const keys[],
                  uint64_t vals[])
{
    char addr[sizeof t->control + 8];
    snprintf(addr, sizeof addr, "unix:%s", t->control);
    struct fidbus_client_opts o = {.timeout_ms = 60000};
    struct fidbus_client *c = NULL;
    int rc = fidbus_client_connect(&c, addr, &o);
    ck_assert_msg(rc == 0, "control connect: %s", fidbus_strerror(rc));
    uint8_t *res = NULL;
    size_t rlen = 0;
    rc = fidbus_request(c, "stats", NULL, 0, &res, &rlen);
    ck_assert_msg(rc == 0, "stats: %s", fidbus_strerror(rc));
    struct cbor_load_result lr;
    cbor_item_t *st = cbor_load(res, rlen, &lr);
    free(res);
    ck_assert_msg(st && cbor_isa_map(st), "stats: not a map");
    for (size_t i = 0; i < n; i++)
        vals[i] = uint_under(st, keys[i]);
    cbor_decref(&st);
    fidbus_client_close(c);
}
