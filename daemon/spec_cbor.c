/*
 * Route maps and plugin maps in CBOR (spec_cbor.h): what route.add,
 * route.apply and plugin.load send over the control socket and what
 * state.cbor stores, decoded into the same structs the config file fills.
 *
 * The rule the decoders keep is that everything they accept can be
 * written back by config.export (control_export.c) as "key = value" lines
 * and read back by config.c unchanged. So each value is checked twice: by
 * the shared validators of route_spec.c (what a value means), and here
 * against what libinih would do to it in a config line (what a value can
 * look like): it trims blanks, takes a ';' after a blank as the start of a
 * comment, cannot hold a line break, and config_values.c refuses lines
 * past 198 bytes. Tags and targets are written as comma lists, which
 * fb_tags_parse_list and fb_targets_parse_list split on ',' and '='.
 *
 * Text may arrive as definite or indefinite (chunked) CBOR strings; both
 * are read. Every refusal is FIDBUS_INVALID with a message that names the
 * route or plugin and the key, as the operator sees it in a REPLY or in
 * the log line of a state file set aside.
 */
#include "spec_cbor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

/* config_values.c refuses a line of 199 bytes or more (libinih's 200-byte
 * buffer holds 198 and the newline); control_export.c writes to it. */
#define LINE_MAX_BYTES 198
/* "key = value": what export writes for single values. */
#define SINGLE_MAX(keylen) (LINE_MAX_BYTES - (int)(keylen)-3)
/* A list item on the first line "key = item," (the comma when more
 * follow); continuation lines ("    item,") hold more, so this bounds both. */
#define ITEM_MAX(keylen) (LINE_MAX_BYTES - (int)(keylen)-3 - 1)

#define PRE_MAX 96 /* "route 'NAME': " with a 64-byte NAME */
#define SUB_MAX 512

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int nomem(char *err, size_t errlen)
{
    set_err(err, errlen, "out of memory");
    return -ENOMEM;
}

/* ------------------------------------------------------------ reading */

enum text_rc { TEXT_OK = 0, TEXT_NOT_TEXT = 1, TEXT_NUL = 2 };

/*
 * A CBOR text string, definite or chunked, as a malloc'd C string.
 * Returns TEXT_OK with *out set, TEXT_NOT_TEXT, TEXT_NUL (a NUL byte would
 * silently cut the C string short), or -ENOMEM.
 */
static int text_dup(const cbor_item_t *it, char **out)
{
    *out = NULL;
    if (!it || !cbor_isa_string(it))
        return TEXT_NOT_TEXT;

    cbor_item_t *const *chunks;
    size_t nchunks;
    cbor_item_t *self = (cbor_item_t *)it; /* libcbor's handles are not const */
    if (cbor_string_is_definite(it)) {
        chunks = &self;
        nchunks = 1;
    } else {
        chunks = cbor_string_chunks_handle(it);
        nchunks = cbor_string_chunk_count(it);
    }
    size_t len = 0;
    for (size_t i = 0; i < nchunks; i++) {
        if (!cbor_isa_string(chunks[i]) || !cbor_string_is_definite(chunks[i]))
            return TEXT_NOT_TEXT;
        len += cbor_string_length(chunks[i]);
    }
    char *s = malloc(len + 1);
    if (!s)
        return -ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t n = cbor_string_length(chunks[i]);
        if (n) /* an empty string's handle may be NULL */
            memcpy(s + at, cbor_string_handle(chunks[i]), n);
        at += n;
    }
    s[len] = '\0';
    if (memchr(s, '\0', len)) {
        free(s);
        return TEXT_NUL;
    }
    *out = s;
    return TEXT_OK;
}

/* libcbor asserts when a float is asked for its control value, so simple
 * values are told from floats first. */
static bool is_ctrl(const cbor_item_t *it)
{
    return cbor_isa_float_ctrl(it) && cbor_float_get_width(it) == CBOR_FLOAT_0;
}

static bool is_null(const cbor_item_t *it)
{
    return is_ctrl(it) && cbor_is_null(it);
}

/* A CBOR integer that fits int64_t. */
static bool get_int64(const cbor_item_t *it, int64_t *out)
{
    if (cbor_isa_uint(it)) {
        uint64_t v = cbor_get_int(it);
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
        return true;
    }
    if (cbor_isa_negint(it)) {
        uint64_t n = cbor_get_int(it); /* the value is -1 - n */
        if (n > INT64_MAX)
            return false;
        *out = -1 - (int64_t)n;
        return true;
    }
    return false;
}

/*
 * Why v could not be written as a config value and read back the same, or
 * NULL when it can. line_start: v follows "key = " directly, where libinih
 * takes a leading ';' for a comment (its inline-comment test runs before
 * it skips the blank after '=').
 */
static const char *value_problem(const char *v, bool line_start)
{
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return "contains a control character (a config line cannot hold it)";
    }
    if (n && (v[0] == ' ' || v[n - 1] == ' '))
        return "starts or ends with a blank (the config file trims it)";
    if (strstr(v, " ;"))
        return "has a ';' after a blank (the config file reads a comment there)";
    if (line_start && v[0] == ';')
        return "starts with ';' (the config file reads a comment there)";
    return NULL;
}

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

/* Finds the value of text key `key`; NULL when absent. Chunked keys are
 * compared too, so a key is found however the sender encoded it. */
static int map_find(const cbor_item_t *map, const char *key, const cbor_item_t **val)
{
    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    *val = NULL;
    for (size_t i = 0; i < n; i++) {
        char *k;
        int rc = text_dup(pairs[i].key, &k);
        if (rc < 0)
            return rc;
        bool hit = rc == TEXT_OK && strcmp(k, key) == 0;
        free(k);
        if (hit) {
            *val = pairs[i].value;
            return 0;
        }
    }
    return 0;
}

/* Index of key in names[], -1 when it is none of them. */
static int key_index(const char *key, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(key, names[i]) == 0)
            return i;
    return -1;
}

static void join_names(char *buf, size_t len, const char *const *names, int count)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && at < len; i++) {
        int w = snprintf(buf + at, len - at, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        at += (size_t)w;
    }
}

/* ------------------------------------------------------------- routes */

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

struct dec {
    char pre[PRE_MAX]; /* "route 'NAME': " */
    char *err;
    size_t errlen;
};

static int invalid(struct dec *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "PREFIX" + message into err; FIDBUS_INVALID. */
static int invalid(struct dec *d, const char *fmt, ...)
{
    char sub[SUB_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sub, sizeof sub, fmt, ap);
    va_end(ap);
    set_err(d->err, d->errlen, "%s%s", d->pre, sub);
    return FIDBUS_INVALID;
}

/* The text of a key's value; FIDBUS_INVALID naming the key otherwise. */
static int value_text(struct dec *d, const cbor_item_t *v, const char *key, char **out)
{
    int rc = text_dup(v, out);
    if (rc < 0)
        return nomem(d->err, d->errlen);
    if (rc == TEXT_NOT_TEXT)
        return invalid(d, "'%s' must be a text string", key);
    if (rc == TEXT_NUL)
        return invalid(d, "'%s' contains a NUL byte", key);
    return 0;
}

static int route_name(const cbor_item_t *map, struct fb_route_spec *out, struct dec *d)
{
    const cbor_item_t *v;
    snprintf(d->pre, sizeof d->pre, "route: ");
    if (map_find(map, "name", &v) < 0)
        return nomem(d->err, d->errlen);
    if (!v)
        return invalid(d, "missing 'name'");
    int rc = value_text(d, v, "name", &out->name);
    if (rc)
        return rc;
    if (!fb_route_name_valid(out->name))
        return invalid(d, "name '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]", out->name);
    snprintf(d->pre, sizeof d->pre, "route '%s': ", out->name);
    return 0;
}

static int route_event(struct dec *d, const cbor_item_t *v, struct fb_route_spec *out)
{
    int rc = value_text(d, v, "event", &out->event);
    if (rc)
        return rc;
    const char *e = out->event;
    if (!*e)
        return invalid(d, "event must not be empty");
    if (!fb_event_pattern_valid(e))
        return invalid(d,
                       "event '%.80s' must be an event id (1-255 bytes of "
                       "[A-Za-z0-9_.:-]), a prefix 'ID.*', or '*'",
                       e);
    if (strlen(e) > (size_t)SINGLE_MAX(5))
        return invalid(d,
                       "event is %zu bytes, longer than the %d an 'event = ...' "
                       "config line holds",
                       strlen(e), SINGLE_MAX(5));
    return 0;
}

static int route_tags(struct dec *d, const cbor_item_t *v, struct fb_route_spec *out)
{
    if (!cbor_isa_map(v))
        return invalid(d, "'tags' must be a map of text to text ('*' = any value)");
    size_t n = cbor_map_size(v);
    struct cbor_pair *pairs = cbor_map_handle(v);
    if (n > FIDBUS_MAX_TAGS)
        return invalid(d, "'tags': more than %u tags", FIDBUS_MAX_TAGS);
    if (n == 0)
        return 0;
    out->tags = calloc(n, sizeof *out->tags);
    if (!out->tags)
        return nomem(d->err, d->errlen);

    for (size_t i = 0; i < n; i++) {
        struct fb_tag_spec *t = &out->tags[out->ntags];
        int rc = text_dup(pairs[i].key, &t->key);
        if (rc < 0)
            return nomem(d->err, d->errlen);
        if (rc)
            return invalid(d, "'tags': a key is not a text string");
        out->ntags++; /* counted now so fb_route_spec_clear frees it */
        if (!fidbus_tag_key_valid(t->key, strlen(t->key)))
            return invalid(d, "tag key '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]",
                           t->key);
        for (size_t j = 0; j + 1 < out->ntags; j++)
            if (strcmp(out->tags[j].key, t->key) == 0)
                return invalid(d, "tag key '%s' is given twice", t->key);
        rc = text_dup(pairs[i].value, &t->value);
        if (rc < 0)
            return nomem(d->err, d->errlen);
        if (rc)
            return invalid(d, "tag '%s': value must be a text string ('*' = any value)",
                           t->key);
        const char *val = t->value;
        if (strcmp(val, "*") != 0) {
            if (!fidbus_tag_value_valid(val, strlen(val)))
                return invalid(d, "tag '%s': value must be '*' or 0-255 bytes of UTF-8",
                               t->key);
            if (strpbrk(val, ",="))
                return invalid(d,
                               "tag '%s': value must not contain ',' or '=' (the "
                               "config file's tags list is split on them)",
                               t->key);
            const char *why = value_problem(val, false);
            if (why)
                return invalid(d, "tag '%s': value %s", t->key, why);
        }
        size_t item = strlen(t->key) + 1 + strlen(val);
        if (item > (size_t)ITEM_MAX(4))
            return invalid(d,
                           "tag '%s': '%s=VALUE' is %zu bytes, longer than the %d a "
                           "config 'tags' line holds",
                           t->key, t->key, item, ITEM_MAX(4));
    }
    return 0;
}

static int route_to(struct dec *d, const cbor_item_t *v, struct fb_route_spec *out)
{
    if (!cbor_isa_array(v))
        return invalid(d, "'to' must be an array of text targets "
                          "(NAMESPACE.NAME[@MAJOR.MINOR.PATCH][:WEIGHT])");
    size_t n = cbor_array_size(v);
    cbor_item_t **items = cbor_array_handle(v);
    if (n > FB_MAX_TARGETS)
        return invalid(d, "'to': more than %d targets", FB_MAX_TARGETS);
    if (n == 0)
        return 0; /* fb_route_spec_validate names it */
    out->to = calloc(n, sizeof *out->to);
    if (!out->to)
        return nomem(d->err, d->errlen);

    for (size_t i = 0; i < n; i++) {
        char *text, sub[SUB_MAX];
        int rc = text_dup(items[i], &text);
        if (rc < 0)
            return nomem(d->err, d->errlen);
        if (rc)
            return invalid(d, "'to' item %zu is not a text string", i + 1);
        const char *why = value_problem(text, false);
        if (why) {
            rc = invalid(d, "'to' target '%.80s' %s", text, why);
            free(text);
            return rc;
        }
        rc = fb_target_parse(text, &out->to[out->nto], sub, sizeof sub);
        free(text);
        if (rc < 0)
            return nomem(d->err, d->errlen);
        if (rc)
            return invalid(d, "'to': %s", sub);
        out->nto++;
    }
    return 0;
}

static int route_mode(struct dec *d, const cbor_item_t *v, struct fb_route_spec *out)
{
    char *m;
    int rc = value_text(d, v, "mode", &m);
    if (rc)
        return rc;
    if (strcmp(m, "all") == 0)
        out->mode = FB_MODE_ALL;
    else if (strcmp(m, "split") == 0)
        out->mode = FB_MODE_SPLIT;
    else
        rc = invalid(d, "mode must be 'all' or 'split', not '%.40s'", m);
    free(m);
    return rc;
}

/* split_by and signature: text, or null for none. */
static int route_opt(struct dec *d, const cbor_item_t *v, const char *key, char **slot)
{
    if (is_null(v))
        return 0;
    if (!cbor_isa_string(v))
        return invalid(d, "'%s' must be a text string or null", key);
    return value_text(d, v, key, slot);
}

static int route_value(struct dec *d, enum route_key k, const cbor_item_t *v,
                       struct fb_route_spec *out)
{
    int rc;
    switch (k) {
    case RK_NAME:
        return 0; /* read first, by route_name */
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
            rc = invalid(d,
                         "split_by '%.80s' must be a tag key (1-64 bytes of "
                         "[A-Za-z0-9_.-])",
                         out->split_by);
        return rc;
    case RK_SIGNATURE:
        rc = route_opt(d, v, "signature", &out->signature);
        if (rc == 0 && out->signature && !fb_sighash_valid(out->signature))
            rc = invalid(d, "signature must be 64 hex digits (the SHA-256 sighash)");
        return rc;
    case RK_PRIORITY:
        if (!get_int64(v, &out->priority))
            return invalid(d, "'priority' must be an integer (64-bit, may be negative)");
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
    struct dec d = {.pre = "route: ", .err = err, .errlen = errlen};
    int rc;

    memset(out, 0, sizeof *out);
    out->mode = FB_MODE_ALL;
    if (!map || !cbor_isa_map(map)) {
        rc = invalid(&d, "not a map (expected {name, event, to, ...})");
        goto fail;
    }
    rc = route_name(map, out, &d);
    if (rc)
        goto fail;

    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++) {
        char *k;
        rc = text_dup(pairs[i].key, &k);
        if (rc < 0) {
            rc = nomem(err, errlen);
            goto fail;
        }
        if (rc) {
            rc = invalid(&d, "a key is not a text string");
            goto fail;
        }
        int id = key_index(k, route_keys, RK__COUNT);
        if (id < 0) {
            char known[128];
            join_names(known, sizeof known, route_keys, RK__COUNT);
            rc = invalid(&d, "unknown key '%.64s' (known: %s)", k, known);
            free(k);
            goto fail;
        }
        free(k);
        if (seen & (1u << id)) {
            rc = invalid(&d, "key '%s' is given twice", route_keys[id]);
            goto fail;
        }
        seen |= 1u << id;
        rc = route_value(&d, (enum route_key)id, pairs[i].value, out);
        if (rc)
            goto fail;
    }
    if (!(seen & (1u << RK_EVENT))) {
        rc = invalid(&d, "missing 'event' (an event id, 'prefix.*' or '*')");
        goto fail;
    }
    if (!(seen & (1u << RK_TO))) {
        rc = invalid(&d, "missing 'to' (an array of targets)");
        goto fail;
    }
    for (size_t i = 0; i < out->nto; i++) {
        size_t il = target_item_len(&out->to[i], out->mode);
        if (il > (size_t)ITEM_MAX(2)) {
            rc = invalid(&d,
                         "'to' target %zu is %zu bytes, longer than the %d a config "
                         "'to' line holds",
                         i + 1, il, ITEM_MAX(2));
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

/* ------------------------------------------------------------ writing */

/* The shortest encoding, as a hand-written CBOR file would have it. */
static cbor_item_t *build_uint(uint64_t v)
{
    if (v <= UINT8_MAX)
        return cbor_build_uint8((uint8_t)v);
    if (v <= UINT16_MAX)
        return cbor_build_uint16((uint16_t)v);
    if (v <= UINT32_MAX)
        return cbor_build_uint32((uint32_t)v);
    return cbor_build_uint64(v);
}

static cbor_item_t *build_int(int64_t v)
{
    if (v >= 0)
        return build_uint((uint64_t)v);
    uint64_t n = (uint64_t)(-(v + 1)); /* CBOR stores -1 - n */
    if (n <= UINT8_MAX)
        return cbor_build_negint8((uint8_t)n);
    if (n <= UINT16_MAX)
        return cbor_build_negint16((uint16_t)n);
    if (n <= UINT32_MAX)
        return cbor_build_negint32((uint32_t)n);
    return cbor_build_negint64(n);
}

static cbor_item_t *build_text_or_null(const char *s)
{
    return s ? cbor_build_string(s) : cbor_new_null();
}

/*
 * Adds key => value to a definite map sized for it, taking over the
 * caller's reference to value (NULL, an allocation failure, fails).
 * cbor_map_add takes references of its own, so ours are dropped either
 * way.
 */
static bool put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    cbor_item_t *k = cbor_build_string(key);
    bool ok =
        k && value && cbor_map_add(map, (struct cbor_pair){.key = k, .value = value});
    if (k)
        cbor_decref(&k);
    if (value)
        cbor_decref(&value);
    return ok;
}

static bool push(cbor_item_t *array, cbor_item_t *value)
{
    bool ok = value && cbor_array_push(array, value);
    if (value)
        cbor_decref(&value);
    return ok;
}

cbor_item_t *fb_route_to_cbor(const struct fb_route_spec *spec)
{
    cbor_item_t *map = cbor_new_definite_map(RK__COUNT);
    cbor_item_t *tags = cbor_new_definite_map(spec->ntags);
    cbor_item_t *to = cbor_new_definite_array(spec->nto);
    bool ok = map && tags && to;

    for (size_t i = 0; ok && i < spec->ntags; i++)
        ok = put(tags, spec->tags[i].key, cbor_build_string(spec->tags[i].value));
    for (size_t i = 0; ok && i < spec->nto; i++) {
        const struct fb_target_spec *t = &spec->to[i];
        char item[FIDBUS_CANONICAL_MAX + 16];
        int n = snprintf(item, sizeof item, "%s.%s", t->ns, t->name);
        if (t->version)
            n += snprintf(item + n, sizeof item - (size_t)n, "@%s", t->version);
        /* the weight as the operator gave it, so has_weight survives */
        if (t->has_weight || t->weight != 1)
            snprintf(item + n, sizeof item - (size_t)n, ":%" PRIu32, t->weight);
        ok = push(to, cbor_build_string(item));
    }
    ok = ok && put(map, "name", cbor_build_string(spec->name));
    ok = ok && put(map, "event", cbor_build_string(spec->event));
    if (ok) {
        ok = put(map, "tags", tags);
        tags = NULL;
    }
    if (ok) {
        ok = put(map, "to", to);
        to = NULL;
    }
    ok = ok && put(map, "mode",
                   cbor_build_string(spec->mode == FB_MODE_SPLIT ? "split" : "all"));
    ok = ok && put(map, "split_by", build_text_or_null(spec->split_by));
    ok = ok && put(map, "signature", build_text_or_null(spec->signature));
    ok = ok && put(map, "priority", build_int(spec->priority));

    if (tags)
        cbor_decref(&tags);
    if (to)
        cbor_decref(&to);
    if (!ok && map)
        cbor_decref(&map);
    return ok ? map : NULL;
}

/* ------------------------------------------------------------ plugins */

enum plugin_key { PK_NAME, PK_PATH, PK_CONFIG, PK__COUNT };

static const char *const plugin_keys[PK__COUNT] = {
    [PK_NAME] = "name",
    [PK_PATH] = "path",
    [PK_CONFIG] = "config",
};

static int plugin_name(const cbor_item_t *map, struct fb_plugin_conf *out, struct dec *d)
{
    const cbor_item_t *v;
    snprintf(d->pre, sizeof d->pre, "plugin: ");
    if (map_find(map, "name", &v) < 0)
        return nomem(d->err, d->errlen);
    if (!v || is_null(v))
        return 0; /* the caller picks one */
    int rc = value_text(d, v, "name", &out->name);
    if (rc)
        return rc;
    if (!fb_route_name_valid(out->name))
        return invalid(d, "name '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]", out->name);
    snprintf(d->pre, sizeof d->pre, "plugin '%s': ", out->name);
    return 0;
}

static int plugin_path(struct dec *d, const cbor_item_t *v, struct fb_plugin_conf *out)
{
    int rc = value_text(d, v, "path", &out->path);
    if (rc)
        return rc;
    if (!out->path[0])
        return invalid(d, "path must not be empty");
    const char *why = value_problem(out->path, true);
    if (why)
        return invalid(d, "path %s", why);
    if (strlen(out->path) > (size_t)SINGLE_MAX(4))
        return invalid(d,
                       "path is %zu bytes, longer than the %d a 'path = ...' config "
                       "line holds",
                       strlen(out->path), SINGLE_MAX(4));
    return 0;
}

/* One config value as the text a config file would give the plugin. */
static int config_value(struct dec *d, const char *key, const cbor_item_t *v, char **out)
{
    char num[32];
    const char *lit = NULL;
    if (cbor_isa_uint(v) || cbor_isa_negint(v)) {
        int_text(v, num, sizeof num);
        lit = num;
    } else if (is_ctrl(v) && cbor_is_bool(v)) {
        lit = cbor_get_bool(v) ? "true" : "false";
    }
    if (lit) {
        *out = strdup(lit);
        return *out ? 0 : nomem(d->err, d->errlen);
    }
    int rc = text_dup(v, out);
    if (rc < 0)
        return nomem(d->err, d->errlen);
    if (rc == TEXT_NUL)
        return invalid(d, "config '%s': value contains a NUL byte", key);
    if (rc)
        return invalid(d, "config '%s': value must be text, an integer or a boolean",
                       key);
    return 0;
}

/* The config map's entries into out->keys[1..], after "path". */
static int plugin_config(struct dec *d, const cbor_item_t *cfg,
                         struct fb_plugin_conf *out)
{
    size_t n = cfg ? cbor_map_size(cfg) : 0;
    struct cbor_pair *pairs = cfg ? cbor_map_handle(cfg) : NULL;

    out->keys = calloc(n + 1, sizeof *out->keys);
    if (!out->keys)
        return nomem(d->err, d->errlen);
    out->keys[0].key = strdup("path");
    out->keys[0].value = strdup(out->path);
    out->nkeys = 1;
    if (!out->keys[0].key || !out->keys[0].value)
        return nomem(d->err, d->errlen);

    for (size_t i = 0; i < n; i++) {
        struct fb_kv *kv = &out->keys[out->nkeys];
        int rc = text_dup(pairs[i].key, &kv->key);
        if (rc < 0)
            return nomem(d->err, d->errlen);
        if (rc)
            return invalid(d, "'config': a key is not a text string");
        out->nkeys++; /* counted now so fb_plugin_conf_clear frees it */
        const char *k = kv->key;
        if (!fb_route_name_valid(k))
            return invalid(d, "config key '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]",
                           k);
        if (strcmp(k, "path") == 0)
            return invalid(d, "config key 'path' is not allowed: the plugin's path "
                              "is its own key");
        for (size_t j = 1; j + 1 < out->nkeys; j++)
            if (strcmp(out->keys[j].key, k) == 0)
                return invalid(d, "config key '%s' is given twice", k);
        rc = config_value(d, k, pairs[i].value, &kv->value);
        if (rc)
            return rc;
        const char *why = value_problem(kv->value, true);
        if (why)
            return invalid(d, "config '%s': value %s", k, why);
        /* export falls back to "key=value" when "key = value" is too long */
        size_t line = strlen(k) + 1 + strlen(kv->value);
        if (line > LINE_MAX_BYTES)
            return invalid(d,
                           "config '%s': 'KEY=VALUE' is %zu bytes, longer than the %d "
                           "a config line holds",
                           k, line, LINE_MAX_BYTES);
    }
    return 0;
}

int fb_plugin_conf_from_cbor(const cbor_item_t *map, struct fb_plugin_conf *out,
                             char *err, size_t errlen)
{
    struct dec d = {.pre = "plugin: ", .err = err, .errlen = errlen};
    const cbor_item_t *cfg = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if (!map || !cbor_isa_map(map)) {
        rc = invalid(&d, "not a map (expected {name, path, config})");
        goto fail;
    }
    rc = plugin_name(map, out, &d);
    if (rc)
        goto fail;

    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++) {
        char *k;
        rc = text_dup(pairs[i].key, &k);
        if (rc < 0) {
            rc = nomem(err, errlen);
            goto fail;
        }
        if (rc) {
            rc = invalid(&d, "a key is not a text string");
            goto fail;
        }
        int id = key_index(k, plugin_keys, PK__COUNT);
        if (id < 0) {
            rc = invalid(&d, "unknown key '%.64s' (known: name, path, config)", k);
            free(k);
            goto fail;
        }
        free(k);
        if (seen & (1u << id)) {
            rc = invalid(&d, "key '%s' is given twice", plugin_keys[id]);
            goto fail;
        }
        seen |= 1u << id;
        const cbor_item_t *v = pairs[i].value;
        if (id == PK_PATH) {
            rc = plugin_path(&d, v, out);
        } else if (id == PK_CONFIG && !is_null(v)) {
            if (!cbor_isa_map(v))
                rc = invalid(&d, "'config' must be a map of text to text, integer or "
                                 "boolean");
            cfg = v; /* read after path, which comes first in keys */
        }
        if (rc)
            goto fail;
    }
    if (!out->path) {
        rc = invalid(&d, "missing 'path' (the plugin's .so file)");
        goto fail;
    }
    rc = plugin_config(&d, cfg, out);
    if (rc)
        goto fail;
    return 0;

fail:
    fb_plugin_conf_clear(out);
    return rc;
}

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
            ok = put(cfg, pc->keys[i].key, cbor_build_string(pc->keys[i].value));
    ok = ok && put(map, "name", build_text_or_null(pc->name));
    ok = ok && put(map, "path", build_text_or_null(path));
    if (ok) {
        ok = put(map, "config", cfg);
        cfg = NULL;
    }
    if (cfg)
        cbor_decref(&cfg);
    if (!ok && map)
        cbor_decref(&map);
    return ok ? map : NULL;
}

/* strdup of an optional string: NULL stays NULL, *ok turns false on ENOMEM. */
static char *dup_opt(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p)
        *ok = false;
    return p;
}

int fb_plugin_conf_copy(struct fb_plugin_conf *dst, const struct fb_plugin_conf *src)
{
    bool ok = true;
    memset(dst, 0, sizeof *dst);
    dst->line = src->line;
    dst->name = dup_opt(src->name, &ok);
    dst->path = dup_opt(src->path, &ok);
    if (src->nkeys) {
        dst->keys = calloc(src->nkeys, sizeof *dst->keys);
        if (!dst->keys) {
            ok = false;
        } else {
            dst->nkeys = src->nkeys;
            for (size_t i = 0; i < src->nkeys; i++) {
                dst->keys[i].key = dup_opt(src->keys[i].key, &ok);
                dst->keys[i].value = dup_opt(src->keys[i].value, &ok);
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
