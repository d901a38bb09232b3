/*
 * Route maps in CBOR (spec_cbor.h): what route.add and route.apply send
 * over the control socket and what state.cbor stores, decoded into the
 * same struct fb_route_spec the config file fills. Plugin maps, the other
 * half of spec_cbor.h, are in plugin_cbor.c; what both share (reading
 * text, the error prefix, the config-line rules, building items) is in
 * cbor_util.c.
 *
 * The rule the decoder keeps is that everything it accepts can be written
 * back by config.export (control_export.c) as "key = value" lines and
 * read back by config.c unchanged. So each value is checked twice: by the
 * shared validators of route_spec.c (what a value means), and here
 * against what libinih would do to it in a config line (what a value can
 * look like, fb_cbor_value_problem and the FB_CFG_* line limits). Tags
 * and targets are written as comma lists, which fb_tags_parse_list and
 * fb_targets_parse_list split on ',' and '='.
 *
 * Every refusal is FIDBUS_INVALID with a message that names the route and
 * the key, as the operator sees it in a REPLY or in the log line of a
 * state file set aside.
 */
#include "config/spec_cbor.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "config/cbor_util.h"

/* ------------------------------------------------------------ decoding */

enum route_key {
    RK_NAME,
    RK_EVENT,
    RK_TAGS,
    RK_TO,
    RK_MODE,
    RK_SPLIT_BY,
    RK_SIGNATURE,
    RK_PRIORITY,
    RK__COUNT
};

static const char *const route_keys[RK__COUNT] = {
    [RK_NAME] = "name",           [RK_EVENT] = "event",
    [RK_TAGS] = "tags",           [RK_TO] = "to",
    [RK_MODE] = "mode",           [RK_SPLIT_BY] = "split_by",
    [RK_SIGNATURE] = "signature", [RK_PRIORITY] = "priority",
};

static int route_event(struct fb_cbor_dec *d, const cbor_item_t *v,
                       struct fb_route_spec *out)
{
    int rc = fb_cbor_value_text(d, v, "event", &out->event);
    if (rc)
        return rc;
    const char *e = out->event;
    if (!*e)
        return fb_cbor_invalid(d, "event must not be empty");
    if (!fb_event_pattern_valid(e))
        return fb_cbor_invalid(d,
                               "event '%.80s' must be an event id (1-255 bytes of "
                               "[A-Za-z0-9_.:-]), a prefix 'ID.*', or '*'",
                               e);
    if (strlen(e) > (size_t)FB_CFG_SINGLE_MAX(5))
        return fb_cbor_invalid(d,
                               "event is %zu bytes, longer than the %d an 'event = ...' "
                               "config line holds",
                               strlen(e), FB_CFG_SINGLE_MAX(5));
    return 0;
}

static int route_tags(struct fb_cbor_dec *d, const cbor_item_t *v,
                      struct fb_route_spec *out)
{
    if (!cbor_isa_map(v))
        return fb_cbor_invalid(d,
                               "'tags' must be a map of text to text ('*' = any value)");
    size_t n = cbor_map_size(v);
    struct cbor_pair *pairs = cbor_map_handle(v);
    if (n > FIDBUS_MAX_TAGS)
        return fb_cbor_invalid(d, "'tags': more than %u tags", FIDBUS_MAX_TAGS);
    if (n == 0)
        return 0;
    out->tags = calloc(n, sizeof *out->tags);
    if (!out->tags)
        return fb_cbor_nomem(d);

    for (size_t i = 0; i < n; i++) {
        struct fb_tag_spec *t = &out->tags[out->ntags];
        int rc = fb_cbor_text_dup(pairs[i].key, &t->key);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(d, "'tags': a key is not a text string");
        out->ntags++; /* counted now so fb_route_spec_clear frees it */
        if (!fidbus_tag_key_valid(t->key, strlen(t->key)))
            return fb_cbor_invalid(
                d, "tag key '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]", t->key);
        for (size_t j = 0; j + 1 < out->ntags; j++)
            if (strcmp(out->tags[j].key, t->key) == 0)
                return fb_cbor_invalid(d, "tag key '%s' is given twice", t->key);
        rc = fb_cbor_text_dup(pairs[i].value, &t->value);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(
                d, "tag '%s': value must be a text string ('*' = any value)", t->key);
        const char *val = t->value;
        if (strcmp(val, "*") != 0) {
            if (!fidbus_tag_value_valid(val, strlen(val)))
                return fb_cbor_invalid(
                    d, "tag '%s': value must be '*' or 0-255 bytes of UTF-8", t->key);
            if (strpbrk(val, ",="))
                return fb_cbor_invalid(d,
                                       "tag '%s': value must not contain ',' or '=' (the "
                                       "config file's tags list is split on them)",
                                       t->key);
            const char *why = fb_cbor_value_problem(val, false);
            if (why)
                return fb_cbor_invalid(d, "tag '%s': value %s", t->key, why);
        }
        size_t item = strlen(t->key) + 1 + strlen(val);
        if (item > (size_t)FB_CFG_ITEM_MAX(4))
            return fb_cbor_invalid(
                d,
                "tag '%s': '%s=VALUE' is %zu bytes, longer than the %d a "
                "config 'tags' line holds",
                t->key, t->key, item, FB_CFG_ITEM_MAX(4));
    }
    return 0;
}

static int route_to(struct fb_cbor_dec *d, const cbor_item_t *v,
                    struct fb_route_spec *out)
{
    if (!cbor_isa_array(v))
        return fb_cbor_invalid(d, "'to' must be an array of text targets "
                                  "(NAMESPACE.NAME[@MAJOR.MINOR.PATCH][:WEIGHT])");
    size_t n = cbor_array_size(v);
    cbor_item_t **items = cbor_array_handle(v);
    if (n > FB_MAX_TARGETS)
        return fb_cbor_invalid(d, "'to': more than %d targets", FB_MAX_TARGETS);
    if (n == 0)
        return 0; /* fb_route_spec_validate names it */
    out->to = calloc(n, sizeof *out->to);
    if (!out->to)
        return fb_cbor_nomem(d);

    for (size_t i = 0; i < n; i++) {
        char *text, sub[FB_CBOR_MSG_MAX];
        int rc = fb_cbor_text_dup(items[i], &text);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(d, "'to' item %zu is not a text string", i + 1);
        const char *why = fb_cbor_value_problem(text, false);
        if (why) {
            rc = fb_cbor_invalid(d, "'to' target '%.80s' %s", text, why);
            free(text);
            return rc;
        }
        rc = fb_target_parse(text, &out->to[out->nto], sub, sizeof sub);
        free(text);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(d, "'to': %s", sub);
        out->nto++;
    }
    return 0;
}

static int route_mode(struct fb_cbor_dec *d, const cbor_item_t *v,
                      struct fb_route_spec *out)
{
    char *m;
    int rc = fb_cbor_value_text(d, v, "mode", &m);
    if (rc)
        return rc;
    if (strcmp(m, "all") == 0)
        out->mode = FB_MODE_ALL;
    else if (strcmp(m, "split") == 0)
        out->mode = FB_MODE_SPLIT;
    else
        rc = fb_cbor_invalid(d, "mode must be 'all' or 'split', not '%.40s'", m);
    free(m);
    return rc;
}

/* split_by and signature: text, or null for none. */
static int route_opt(struct fb_cbor_dec *d, const cbor_item_t *v, const char *key,
                     char **slot)
{
    if (fb_cbor_is_null(v))
        return 0;
    if (!cbor_isa_string(v))
        return fb_cbor_invalid(d, "'%s' must be a text string or null", key);
    return fb_cbor_value_text(d, v, key, slot);
}

/* One value of the route map, for fb_cbor_walk_keys; arg is the spec. */
static int route_value(void *arg, struct fb_cbor_dec *d, int id, const cbor_item_t *v)
{
    struct fb_route_spec *out = arg;
    int rc;
    switch ((enum route_key)id) {
    case RK_NAME:
        return 0; /* read first, by fb_cbor_dec_name */
    case RK_EVENT:
        return route_event(d, v, out);
    case RK_TAGS:
        return route_tags(d, v, out);
    case RK_TO:
        return route_to(d, v, out);
    case RK_MODE:
        return route_mode(d, v, out);
    case RK_SPLIT_BY:
        rc = route_opt(d, v, "split_by", &out->split_by);
        if (rc == 0 && out->split_by &&
            !fidbus_tag_key_valid(out->split_by, strlen(out->split_by)))
            rc = fb_cbor_invalid(d,
                                 "split_by '%.80s' must be a tag key (1-64 bytes of "
                                 "[A-Za-z0-9_.-])",
                                 out->split_by);
        return rc;
    case RK_SIGNATURE:
        rc = route_opt(d, v, "signature", &out->signature);
        if (rc == 0 && out->signature && !fb_sighash_valid(out->signature))
            rc = fb_cbor_invalid(d,
                                 "signature must be 64 hex digits (the SHA-256 sighash)");
        return rc;
    case RK_PRIORITY:
        if (!fb_cbor_get_int64(v, &out->priority))
            return fb_cbor_invalid(
                d, "'priority' must be an integer (64-bit, may be negative)");
        return 0;
    default:
        return 0;
    }
}

/* Bytes of the `to` item export writes for t: the weight is written when
 * given, and always on a split route. */
static size_t target_item_len(const struct fb_target_spec *t, enum fb_route_mode mode)
{
    size_t n = strlen(t->ns) + 1 + strlen(t->name);
    if (t->version)
        n += 1 + strlen(t->version);
    if (t->has_weight || mode == FB_MODE_SPLIT) {
        char w[16];
        n += 1 + (size_t)snprintf(w, sizeof w, "%" PRIu32, t->weight);
    }
    return n;
}

int fb_route_from_cbor(const cbor_item_t *map, struct fb_route_spec *out, char *err,
                       size_t errlen)
{
    struct fb_cbor_dec d = {.pre = "route: ", .err = err, .errlen = errlen};
    int rc;

    memset(out, 0, sizeof *out);
    out->mode = FB_MODE_ALL;
    if (!map || !cbor_isa_map(map)) {
        rc = fb_cbor_invalid(&d, "not a map (expected {name, event, to, ...})");
        goto fail;
    }
    rc = fb_cbor_dec_name(&d, map, "route", false, &out->name);
    if (rc)
        goto fail;

    unsigned seen;
    rc = fb_cbor_walk_keys(&d, map, route_keys, RK__COUNT, route_value, out, &seen);
    if (rc)
        goto fail;
    if (!(seen & (1u << RK_EVENT))) {
        rc = fb_cbor_invalid(&d, "missing 'event' (an event id, 'prefix.*' or '*')");
        goto fail;
    }
    if (!(seen & (1u << RK_TO))) {
        rc = fb_cbor_invalid(&d, "missing 'to' (an array of targets)");
        goto fail;
    }
    for (size_t i = 0; i < out->nto; i++) {
        size_t il = target_item_len(&out->to[i], out->mode);
        if (il > (size_t)FB_CFG_ITEM_MAX(2)) {
            rc = fb_cbor_invalid(
                &d,
                "'to' target %zu is %zu bytes, longer than the %d a config "
                "'to' line holds",
                i + 1, il, FB_CFG_ITEM_MAX(2));
            goto fail;
        }
    }
    rc = fb_route_spec_validate(out, err, errlen);
    if (rc)
        goto fail;
    return 0;

fail:
    fb_route_spec_clear(out);
    return rc;
}
/* ------------------------------------------------------------ encoding */

cbor_item_t *fb_route_to_cbor(const struct fb_route_spec *spec)
{
    cbor_item_t *map = cbor_new_definite_map(RK__COUNT);
    cbor_item_t *tags = cbor_new_definite_map(spec->ntags);
    cbor_item_t *to = cbor_new_definite_array(spec->nto);
    bool ok = map && tags && to;

    for (size_t i = 0; ok && i < spec->ntags; i++)
        ok = fb_cbor_put(tags, spec->tags[i].key, cbor_build_string(spec->tags[i].value));
    for (size_t i = 0; ok && i < spec->nto; i++) {
        const struct fb_target_spec *t = &spec->to[i];
        char item[FIDBUS_CANONICAL_MAX + 16];
        int n = snprintf(item, sizeof item, "%s.%s", t->ns, t->name);
        if (t->version)
            n += snprintf(item + n, sizeof item - (size_t)n, "@%s", t->version);
        /* the weight as the operator gave it, so has_weight survives */
        if (t->has_weight || t->weight != 1)
            snprintf(item + n, sizeof item - (size_t)n, ":%" PRIu32, t->weight);
        ok = fb_cbor_push(to, cbor_build_string(item));
    }
    ok = ok && fb_cbor_put(map, "name", cbor_build_string(spec->name));
    ok = ok && fb_cbor_put(map, "event", cbor_build_string(spec->event));
    if (ok) {
        ok = fb_cbor_put(map, "tags", tags);
        tags = NULL;
    }
    if (ok) {
        ok = fb_cbor_put(map, "to", to);
        to = NULL;
    }
    ok = ok &&
         fb_cbor_put(map, "mode",
                     cbor_build_string(spec->mode == FB_MODE_SPLIT ? "split" : "all"));
    ok = ok && fb_cbor_put(map, "split_by", fb_cbor_text_or_null(spec->split_by));
    ok = ok && fb_cbor_put(map, "signature", fb_cbor_text_or_null(spec->signature));
    ok = ok && fb_cbor_put(map, "priority", fb_cbor_int(spec->priority));

    if (tags)
        cbor_decref(&tags);
    if (to)
        cbor_decref(&to);
    if (!ok && map)
        cbor_decref(&map);
    return ok ? map : NULL;
}
