/*
 * Plugin maps in CBOR (spec_cbor.h): what plugin.load sends over the
 * control socket and what state.cbor stores, decoded into the same struct
 * fb_plugin_conf a config file's [plugin NAME] section fills; and the
 * deep copy and release of that struct.
 *
 * As for routes (spec_cbor.c), everything the decoder accepts must come
 * back unchanged through config.export and config.c, so a path or config
 * value is refused when a config line could not hold it
 * (fb_cbor_value_problem, the FB_CFG_* line limits). Integers and booleans
 * in the config map are taken as the decimal / true|false text a config
 * file would have given the plugin. Every refusal is FIDBUS_INVALID with a
 * message naming the plugin and the key.
 */
#include "config/spec_cbor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "config/cbor_util.h"

/* ------------------------------------------------------------ decoding */

/* The decimal text of a CBOR integer, any of its 65-bit range. */
static void int_text(const cbor_item_t *it, char *buf, size_t len)
{
    uint64_t v = cbor_get_int(it);
    if (cbor_isa_uint(it))
        snprintf(buf, len, "%" PRIu64, v);
    else if (v == UINT64_MAX) /* -1 - v does not fit in 64 bits */
        snprintf(buf, len, "-18446744073709551616");
    else
        snprintf(buf, len, "-%" PRIu64, v + 1);
}

enum plugin_key { PK_NAME, PK_PATH, PK_CONFIG, PK__COUNT };

static const char *const plugin_keys[PK__COUNT] = {
    [PK_NAME] = "name",
    [PK_PATH] = "path",
    [PK_CONFIG] = "config",
};

static int plugin_path(struct fb_cbor_dec *d, const cbor_item_t *v,
                       struct fb_plugin_conf *out)
{
    int rc = fb_cbor_value_text(d, v, "path", &out->path);
    if (rc)
        return rc;
    if (!out->path[0])
        return fb_cbor_invalid(d, "path must not be empty");
    const char *why = fb_cbor_value_problem(out->path, true);
    if (why)
        return fb_cbor_invalid(d, "path %s", why);
    if (strlen(out->path) > (size_t)FB_CFG_SINGLE_MAX(4))
        return fb_cbor_invalid(
            d,
            "path is %zu bytes, longer than the %d a 'path = ...' config "
            "line holds",
            strlen(out->path), FB_CFG_SINGLE_MAX(4));
    return 0;
}

/* One config value as the text a config file would give the plugin. */
static int config_value(struct fb_cbor_dec *d, const char *key, const cbor_item_t *v,
                        char **out)
{
    char num[32];
    const char *lit = NULL;
    if (cbor_isa_uint(v) || cbor_isa_negint(v)) {
        int_text(v, num, sizeof num);
        lit = num;
    } else if (fb_cbor_is_ctrl(v) && cbor_is_bool(v)) {
        lit = cbor_get_bool(v) ? "true" : "false";
    }
    if (lit) {
        *out = strdup(lit);
        return *out ? 0 : fb_cbor_nomem(d);
    }
    int rc = fb_cbor_text_dup(v, out);
    if (rc < 0)
        return fb_cbor_nomem(d);
    if (rc == FB_CBOR_TEXT_NUL)
        return fb_cbor_invalid(d, "config '%s': value contains a NUL byte", key);
    if (rc)
        return fb_cbor_invalid(
            d, "config '%s': value must be text, an integer or a boolean", key);
    return 0;
}

/* The config map's entries into out->keys[1..], after "path". */
static int plugin_config(struct fb_cbor_dec *d, const cbor_item_t *cfg,
                         struct fb_plugin_conf *out)
{
    size_t n = cfg ? cbor_map_size(cfg) : 0;
    struct cbor_pair *pairs = cfg ? cbor_map_handle(cfg) : NULL;

    if (n > FB_PLUGIN_KEYS_MAX)
        return fb_cbor_invalid(
            d, "'config' has %zu keys, more than the %d a plugin may have", n,
            FB_PLUGIN_KEYS_MAX);

    out->keys = calloc(n + 1, sizeof *out->keys);
    if (!out->keys)
        return fb_cbor_nomem(d);
    out->keys[0].key = strdup("path");
    out->keys[0].value = strdup(out->path);
    out->nkeys = 1;
    if (!out->keys[0].key || !out->keys[0].value)
        return fb_cbor_nomem(d);

    for (size_t i = 0; i < n; i++) {
        struct fb_kv *kv = &out->keys[out->nkeys];
        int rc = fb_cbor_text_dup(pairs[i].key, &kv->key);
        if (rc < 0)
            return fb_cbor_nomem(d);
        if (rc)
            return fb_cbor_invalid(d, "'config': a key is not a text string");
        out->nkeys++; /* counted now so fb_plugin_conf_clear frees it */
        const char *k = kv->key;
        if (!fb_route_name_valid(k))
            return fb_cbor_invalid(
                d, "config key '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]", k);
        if (strcmp(k, "path") == 0)
            return fb_cbor_invalid(d,
                                   "config key 'path' is not allowed: the plugin's path "
                                   "is its own key");
        for (size_t j = 1; j + 1 < out->nkeys; j++)
            if (strcmp(out->keys[j].key, k) == 0)
                return fb_cbor_invalid(d, "config key '%s' is given twice", k);
        rc = config_value(d, k, pairs[i].value, &kv->value);
        if (rc)
            return rc;
        const char *why = fb_cbor_value_problem(kv->value, true);
        if (why)
            return fb_cbor_invalid(d, "config '%s': value %s", k, why);
        /* the daemon's key (plugin_loader.c), checked as config.c does */
        if (strcmp(k, "namespace") == 0 && !fidbus_name_valid(kv->value))
            return fb_cbor_invalid(
                d, "config 'namespace': '%.80s' must be 1-64 bytes of [A-Za-z0-9_-]",
                kv->value);
        /* export falls back to "key=value" when "key = value" is too long */
        size_t line = strlen(k) + 1 + strlen(kv->value);
        if (line > FB_CFG_LINE_MAX)
            return fb_cbor_invalid(
                d,
                "config '%s': 'KEY=VALUE' is %zu bytes, longer than the %d "
                "a config line holds",
                k, line, FB_CFG_LINE_MAX);
    }
    return 0;
}

struct plugin_walk {
    struct fb_plugin_conf *out;
    const cbor_item_t *cfg; /* read after path, which comes first in keys */
};

static int plugin_value(void *arg, struct fb_cbor_dec *d, int id, const cbor_item_t *v)
{
    struct plugin_walk *w = arg;
    if (id == PK_PATH)
        return plugin_path(d, v, w->out);
    if (id == PK_CONFIG && !fb_cbor_is_null(v)) {
        if (!cbor_isa_map(v))
            return fb_cbor_invalid(d, "'config' must be a map of text to text, integer "
                                      "or boolean");
        w->cfg = v;
    }
    return 0; /* PK_NAME: read first, by fb_cbor_dec_name */
}

int fb_plugin_conf_from_cbor(const cbor_item_t *map, struct fb_plugin_conf *out,
                             char *err, size_t errlen)
{
    struct fb_cbor_dec d = {.pre = "plugin: ", .err = err, .errlen = errlen};
    struct plugin_walk w = {.out = out};
    int rc;

    memset(out, 0, sizeof *out);
    if (!map || !cbor_isa_map(map)) {
        rc = fb_cbor_invalid(&d, "not a map (expected {name, path, config})");
        goto fail;
    }
    rc = fb_cbor_dec_name(&d, map, "plugin", true, &out->name);
    if (rc)
        goto fail;

    unsigned seen;
    rc = fb_cbor_walk_keys(&d, map, plugin_keys, PK__COUNT, plugin_value, &w, &seen);
    if (rc)
        goto fail;
    if (!out->path) {
        rc = fb_cbor_invalid(&d, "missing 'path' (the plugin's .so file)");
        goto fail;
    }
    rc = plugin_config(&d, w.cfg, out);
    if (rc)
        goto fail;
    return 0;

fail:
    fb_plugin_conf_clear(out);
    return rc;
}

/* ------------------------------------------------------------ encoding */

cbor_item_t *fb_plugin_conf_to_cbor(const struct fb_plugin_conf *pc)
{
    const char *path = pc->path;
    size_t nconf = 0;
    for (size_t i = 0; i < pc->nkeys; i++) {
        if (strcmp(pc->keys[i].key, "path") == 0) {
            if (!path)
                path = pc->keys[i].value;
        } else {
            nconf++;
        }
    }
    cbor_item_t *map = cbor_new_definite_map(PK__COUNT);
    cbor_item_t *cfg = cbor_new_definite_map(nconf);
    bool ok = map && cfg;

    for (size_t i = 0; ok && i < pc->nkeys; i++)
        if (strcmp(pc->keys[i].key, "path") != 0)
            ok = fb_cbor_put(cfg, pc->keys[i].key, cbor_build_string(pc->keys[i].value));
    ok = ok && fb_cbor_put(map, "name", fb_cbor_text_or_null(pc->name));
    ok = ok && fb_cbor_put(map, "path", fb_cbor_text_or_null(path));
    if (ok) {
        ok = fb_cbor_put(map, "config", cfg);
        cfg = NULL;
    }
    if (cfg)
        cbor_decref(&cfg);
    if (!ok && map)
        cbor_decref(&map);
    return ok ? map : NULL;
}

/* ---------------------------------------------------------- ownership */

int fb_plugin_conf_copy(struct fb_plugin_conf *dst, const struct fb_plugin_conf *src)
{
    bool ok = true;
    memset(dst, 0, sizeof *dst);
    dst->line = src->line;
    dst->name = fb_dup_opt(src->name, &ok);
    dst->path = fb_dup_opt(src->path, &ok);
    if (src->nkeys) {
        dst->keys = calloc(src->nkeys, sizeof *dst->keys);
        if (!dst->keys) {
            ok = false;
        } else {
            dst->nkeys = src->nkeys;
            for (size_t i = 0; i < src->nkeys; i++) {
                dst->keys[i].key = fb_dup_opt(src->keys[i].key, &ok);
                dst->keys[i].value = fb_dup_opt(src->keys[i].value, &ok);
            }
        }
    }
    if (!ok) {
        fb_plugin_conf_clear(dst);
        return -ENOMEM;
    }
    return 0;
}

void fb_plugin_conf_clear(struct fb_plugin_conf *pc)
{
    if (!pc)
        return;
    free(pc->name);
    free(pc->path);
    for (size_t i = 0; i < pc->nkeys; i++) {
        free(pc->keys[i].key);
        free(pc->keys[i].value);
    }
    free(pc->keys);
    memset(pc, 0, sizeof *pc);
}
