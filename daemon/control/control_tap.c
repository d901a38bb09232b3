/*
 * tap.open's args and result (proto/control.md). The tap itself lives in
 * routing/tap.c; control.c ties it to the connection that opened it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "base/err.h"
#include "config/cbor_util.h"
#include "config/route_spec.h"
#include "control/control_cmds.h"
#include "control/ctl_cbor.h"
#include "routing/tap.h"

/* A definite-length text without NUL as a C string; NULL otherwise (out
 * of memory for a few bytes included: answered INVALID, not worth a code
 * path of its own). */
static char *text_of(const cbor_item_t *it)
{
    if (!cbor_isa_string(it) || !cbor_string_is_definite(it))
        return NULL;
    size_t n = cbor_string_length(it);
    const char *p = (const char *)cbor_string_handle(it);
    if (n && memchr(p, '\0', n))
        return NULL;
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int tags_load(const cbor_item_t *args, struct fb_tap_spec *s, char *err,
                     size_t errlen)
{
    const cbor_item_t *m = fb_ctl_arg(args, "tags");
    if (!m || cbor_is_null(m))
        return 0;
    if (!cbor_isa_map(m)) {
        fb_set_err(err, errlen, "argument 'tags' must be a map of text => text");
        return FIDBUS_INVALID;
    }
    size_t n = cbor_map_size(m);
    if (n > FIDBUS_MAX_TAGS) {
        fb_set_err(err, errlen, "more than %u tags", FIDBUS_MAX_TAGS);
        return FIDBUS_INVALID;
    }
    if (n && !(s->tags = calloc(n, sizeof *s->tags)))
        return -ENOMEM;
    struct cbor_pair *pairs = cbor_map_handle(m);
    for (size_t i = 0; i < n; i++) {
        char *k = text_of(pairs[i].key), *v = text_of(pairs[i].value);
        if (!k || !v) {
            free(k);
            free(v);
            fb_set_err(err, errlen,
                       "argument 'tags': keys and values must be text without NUL");
            return FIDBUS_INVALID;
        }
        s->tags[s->ntags].key = k;
        s->tags[s->ntags].value = v;
        s->ntags++;
        if (!fidbus_tag_key_valid(k, strlen(k))) {
            fb_set_err(err, errlen, "tag key '%.64s' is not 1-64 bytes of [A-Za-z0-9_.-]",
                       k);
            return FIDBUS_INVALID;
        }
        if (!fidbus_tag_value_valid(v, strlen(v))) {
            fb_set_err(err, errlen, "tag '%s': the value is not 0-255 bytes of UTF-8", k);
            return FIDBUS_INVALID;
        }
    }
    return 0;
}

int fb_ctl_tap_args(struct fidbus_slice args, struct fb_tap_spec *s, char *err,
                    size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->buffer = FB_TAP_BUFFER_DEFAULT;
    cbor_item_t *amap = NULL;
    int rc = fb_ctl_args_load(args, &amap, err, errlen);
    if (rc == 0)
        rc = fb_ctl_arg_text(amap, "event", false, &s->event, err, errlen);
    if (rc == 0 && !s->event && !(s->event = strdup("*")))
        rc = -ENOMEM;
    if (rc == 0 && !fb_event_pattern_valid(s->event)) {
        fb_set_err(
            err, errlen,
            "event '%.255s' is not an event id, a prefix pattern \"a.b.*\" or \"*\"",
            s->event);
        rc = FIDBUS_INVALID;
    }
    if (rc == 0)
        rc = tags_load(amap, s, err, errlen);
    const cbor_item_t *b = rc == 0 ? fb_ctl_arg(amap, "buffer") : NULL;
    if (b) {
        int64_t v = 0;
        if (!fb_cbor_get_int64(b, &v) || v < FB_TAP_BUFFER_MIN || v > FB_TAP_BUFFER_MAX) {
            fb_set_err(err, errlen,
                       "argument 'buffer' must be a whole number of bytes from %u to %u",
                       FB_TAP_BUFFER_MIN, FB_TAP_BUFFER_MAX);
            rc = FIDBUS_INVALID;
        } else {
            s->buffer = (size_t)v;
        }
    }
    if (amap)
        cbor_decref(&amap);
    if (rc)
        fb_tap_spec_clear(s);
    if (rc < 0)
        fb_set_err(err, errlen, "tap.open: out of memory");
    return rc < 0 ? FIDBUS_INTERNAL : rc;
}

int fb_ctl_tap_result(size_t buffer, uint8_t **out, size_t *len)
{
    struct cb b = {0};
    cbor_item_t *m = mk_map(&b, 2);
    put(&b, m, "buffer", u64(buffer));
    put(&b, m, "max_taps", u64(FB_TAPS_MAX));
    size_t cap = 0;
    *out = NULL;
    *len = m && !b.oom ? cbor_serialize_alloc(m, out, &cap) : 0;
    if (m)
        cbor_decref(&m);
    return *len ? 0 : -ENOMEM;
}
