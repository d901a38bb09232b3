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

/* The tap's tag constraints: the rules of route.test's tags (a value of
 * "*" means the tag is present, as in routes). */
static int tags_load(const cbor_item_t *args, struct fb_tap_spec *s, char *err,
                     size_t errlen)
{
    const cbor_item_t *m = fb_ctl_arg(args, "tags");
    if (!m || cbor_is_null(m))
        return 0;
    if (!(s->tags = calloc(FIDBUS_MAX_TAGS, sizeof *s->tags)))
        return -ENOMEM;
    return fb_ctl_tags_arg(args, s->tags, &s->ntags, err, errlen);
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
