/*
 * Route specifications: parsing the operator's text ("to" and "tags"
 * lists) into struct fb_route_spec, and the checks that need nothing but
 * the spec itself. Whether a target names a loaded function, and whether
 * its sighash matches, is decided later by fb_routes_build against the
 * registry. The rules for single values (route names, event patterns,
 * sighashes) live here too, and config.c applies them to its lines.
 *
 * Every failure returns FIDBUS_INVALID with a reason that names the route,
 * the offending piece of text and what is wrong with it, because the
 * operator reads it in a config error or a control-socket reply.
 */
#include "config/route_spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "base/err.h"

#define ROUTE_NAME_MAX 64

/* "route 'x': " when the spec has a name, so messages read the same from
 * the config loader and the control socket. */
static const char *route_prefix(const struct fb_route_spec *spec, char *buf, size_t len)
{
    if (spec && spec->name)
        snprintf(buf, len, "route '%s': ", spec->name);
    else
        buf[0] = '\0';
    return buf;
}

static char *dup_range(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Bounds of s without leading and trailing ASCII whitespace. */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/*
 * A comma-separated list, walked in place. An empty item (",," or a
 * trailing comma) is yielded like any other, so the caller can name it.
 */
struct list_iter {
    const char *p, *end;
    bool done;
};

/* Opens text (NULL reads as empty), trimmed, and returns the most items it
 * can hold, one more than its commas, so one allocation does; 0 when it is
 * empty, and then list_next yields nothing. */
static size_t list_open(struct list_iter *li, const char *text)
{
    const char *p = text ? text : "";
    size_t all = strlen(p);
    trim(&p, &all);
    *li = (struct list_iter){.p = p, .end = p + all, .done = all == 0};
    if (all == 0)
        return 0;
    size_t count = 1;
    for (const char *q = p; q < li->end; q++)
        count += *q == ',';
    return count;
}

/* The next item, trimmed, in *item and *n; false after the last one. */
static bool list_next(struct list_iter *li, const char **item, size_t *n)
{
    if (li->done)
        return false;
    const char *comma = memchr(li->p, ',', (size_t)(li->end - li->p));
    const char *item_end = comma ? comma : li->end;
    *item = li->p;
    *n = (size_t)(item_end - li->p);
    trim(item, n);
    if (comma)
        li->p = comma + 1;
    else
        li->done = true;
    return true;
}

static void target_clear(struct fb_target_spec *t)
{
    free(t->ns);
    free(t->name);
    free(t->version);
    memset(t, 0, sizeof *t);
}

static void tag_clear(struct fb_tag_spec *t)
{
    free(t->key);
    free(t->value);
    memset(t, 0, sizeof *t);
}

/* Decimal 0..FB_MAX_WEIGHT, digits only. */
static int parse_weight(const char *s, size_t n, uint32_t *out)
{
    if (n == 0 || n > 7)
        return -EINVAL;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > FB_MAX_WEIGHT)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Target parsing on a bounded range, so list parsing needs no copies. */
static int target_parse_range(const char *text, size_t len, struct fb_target_spec *out,
                              char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    trim(&text, &len);
    int tl = len > 200 ? 200 : (int)len; /* keeps messages one short line */

    if (len == 0) {
        fb_set_err(err, errlen, "empty target");
        return FIDBUS_INVALID;
    }
    const char *end = text + len;
    const char *dot = memchr(text, '.', len);
    if (!dot) {
        fb_set_err(err, errlen,
                   "target '%.*s': must be NAMESPACE.NAME[@MAJOR.MINOR.PATCH][:WEIGHT]",
                   tl, text);
        return FIDBUS_INVALID;
    }
    const char *colon = memchr(text, ':', len);
    const char *spec_end = colon ? colon : end;
    const char *at = memchr(text, '@', (size_t)(spec_end - text));
    const char *name_end = at ? at : spec_end;

    if (dot > name_end) {
        fb_set_err(err, errlen,
                   "target '%.*s': must be NAMESPACE.NAME[@MAJOR.MINOR.PATCH][:WEIGHT]",
                   tl, text);
        return FIDBUS_INVALID;
    }

    out->ns = dup_range(text, (size_t)(dot - text));
    out->name = dup_range(dot + 1, (size_t)(name_end - dot - 1));
    if (at)
        out->version = dup_range(at + 1, (size_t)(spec_end - at - 1));
    if (!out->ns || !out->name || (at && !out->version)) {
        target_clear(out);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }

    if (!fidbus_name_valid(out->ns)) {
        fb_set_err(err, errlen,
                   "target '%.*s': namespace '%s' must be 1-64 bytes of [A-Za-z0-9_-]",
                   tl, text, out->ns);
        goto invalid;
    }
    if (!fidbus_name_valid(out->name)) {
        fb_set_err(err, errlen,
                   "target '%.*s': name '%s' must be 1-64 bytes of [A-Za-z0-9_-]", tl,
                   text, out->name);
        goto invalid;
    }
    if (out->version) {
        struct fidbus_semver sv;
        if (fidbus_semver_parse(out->version, &sv) != 0) {
            fb_set_err(err, errlen, "target '%.*s': version must be MAJOR.MINOR.PATCH",
                       tl, text);
            goto invalid;
        }
    }
    out->weight = 1;
    if (colon) {
        if (parse_weight(colon + 1, (size_t)(end - colon - 1), &out->weight) != 0) {
            fb_set_err(err, errlen,
                       "target '%.*s': weight must be a whole number from 0 to %u", tl,
                       text, FB_MAX_WEIGHT);
            goto invalid;
        }
        out->has_weight = true;
    }
    return 0;

invalid:
    target_clear(out);
    return FIDBUS_INVALID;
}

int fb_target_parse(const char *text, struct fb_target_spec *out, char *err,
                    size_t errlen)
{
    if (!text) {
        memset(out, 0, sizeof *out);
        fb_set_err(err, errlen, "empty target");
        return FIDBUS_INVALID;
    }
    return target_parse_range(text, strlen(text), out, err, errlen);
}

static bool same_target(const struct fb_target_spec *a, const struct fb_target_spec *b)
{
    if (strcmp(a->ns, b->ns) != 0 || strcmp(a->name, b->name) != 0)
        return false;
    if (!a->version || !b->version)
        return !a->version && !b->version;
    return strcmp(a->version, b->version) == 0;
}

void fb_target_text(const struct fb_target_spec *t, char *buf, size_t len)
{
    if (t->version)
        snprintf(buf, len, "%s.%s@%s", t->ns, t->name, t->version);
    else
        snprintf(buf, len, "%s.%s", t->ns, t->name);
}

int fb_targets_parse_list(const char *text, struct fb_route_spec *spec, char *err,
                          size_t errlen)
{
    char pre[ROUTE_NAME_MAX + 16], sub[512];
    route_prefix(spec, pre, sizeof pre);
    size_t old_n = spec->nto;
    int rc = 0;

    struct list_iter li;
    size_t count = list_open(&li, text);
    if (count == 0) {
        fb_set_err(err, errlen, "%s'to' lists no targets", pre);
        return FIDBUS_INVALID;
    }
    if (old_n + count > FB_MAX_TARGETS) {
        fb_set_err(err, errlen, "%smore than %d targets", pre, FB_MAX_TARGETS);
        return FIDBUS_INVALID;
    }
    struct fb_target_spec *to = realloc(spec->to, (old_n + count) * sizeof *to);
    if (!to) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    spec->to = to;

    const char *it;
    size_t n;
    while (list_next(&li, &it, &n)) {
        if (n == 0) {
            fb_set_err(err, errlen, "%sempty target in 'to' (stray comma?)", pre);
            rc = FIDBUS_INVALID;
            goto fail;
        }
        struct fb_target_spec t;
        rc = target_parse_range(it, n, &t, sub, sizeof sub);
        if (rc != 0) {
            fb_set_err(err, errlen, "%s%s", pre, sub);
            goto fail;
        }
        for (size_t i = 0; i < spec->nto; i++) {
            if (same_target(&spec->to[i], &t)) {
                char tt[FIDBUS_CANONICAL_MAX];
                fb_target_text(&t, tt, sizeof tt);
                fb_set_err(err, errlen, "%starget '%s' is listed twice", pre, tt);
                target_clear(&t);
                rc = FIDBUS_INVALID;
                goto fail;
            }
        }
        spec->to[spec->nto++] = t;
    }
    return 0;

fail:
    /* Leave the spec as it was before the call. */
    while (spec->nto > old_n)
        target_clear(&spec->to[--spec->nto]);
    return rc;
}

static bool tag_value_ok(const char *v)
{
    return strcmp(v, "*") == 0 || fidbus_tag_value_valid(v, strlen(v));
}

int fb_tags_parse_list(const char *text, struct fb_route_spec *spec, char *err,
                       size_t errlen)
{
    char pre[ROUTE_NAME_MAX + 16];
    route_prefix(spec, pre, sizeof pre);
    size_t old_n = spec->ntags;
    int rc = 0;

    struct list_iter li;
    size_t count = list_open(&li, text);
    if (count == 0)
        return 0; /* no constraints */
    if (old_n + count > FIDBUS_MAX_TAGS) {
        fb_set_err(err, errlen, "%smore than %u tags", pre, FIDBUS_MAX_TAGS);
        return FIDBUS_INVALID;
    }
    struct fb_tag_spec *tags = realloc(spec->tags, (old_n + count) * sizeof *tags);
    if (!tags) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    spec->tags = tags;

    const char *it;
    size_t n;
    while (list_next(&li, &it, &n)) {
        int tl = n > 200 ? 200 : (int)n;
        if (n == 0) {
            fb_set_err(err, errlen, "%sempty tag in 'tags' (stray comma?)", pre);
            rc = FIDBUS_INVALID;
            goto fail;
        }
        const char *eq = memchr(it, '=', n);
        if (!eq) {
            fb_set_err(err, errlen, "%stag '%.*s' must be KEY=VALUE (VALUE '*' = any)",
                       pre, tl, it);
            rc = FIDBUS_INVALID;
            goto fail;
        }
        const char *k = it, *v = eq + 1;
        size_t kn = (size_t)(eq - it), vn = (size_t)(it + n - v);
        trim(&k, &kn);
        trim(&v, &vn);
        struct fb_tag_spec t = {dup_range(k, kn), dup_range(v, vn)};
        if (!t.key || !t.value) {
            tag_clear(&t);
            fb_set_err(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto fail;
        }
        if (!fidbus_tag_key_valid(t.key, kn)) {
            fb_set_err(err, errlen,
                       "%stag '%.*s': key must be 1-64 bytes of [A-Za-z0-9_.-]", pre, tl,
                       it);
            tag_clear(&t);
            rc = FIDBUS_INVALID;
            goto fail;
        }
        if (!tag_value_ok(t.value)) {
            fb_set_err(err, errlen,
                       "%stag '%.*s': value must be '*' or 0-255 bytes of UTF-8", pre, tl,
                       it);
            tag_clear(&t);
            rc = FIDBUS_INVALID;
            goto fail;
        }
        for (size_t i = 0; i < spec->ntags; i++) {
            if (strcmp(spec->tags[i].key, t.key) == 0) {
                fb_set_err(err, errlen, "%stag key '%s' is given twice", pre, t.key);
                tag_clear(&t);
                rc = FIDBUS_INVALID;
                goto fail;
            }
        }
        spec->tags[spec->ntags++] = t;
    }
    return 0;

fail:
    while (spec->ntags > old_n)
        tag_clear(&spec->tags[--spec->ntags]);
    return rc;
}

bool fb_route_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > ROUTE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

bool fb_event_pattern_valid(const char *e)
{
    size_t n = strlen(e);
    if (n == 1 && e[0] == '*')
        return true;
    /* "PREFIX.*": the prefix is itself a valid id, so "order.*" matches
     * "order.created" and never "orders.x" */
    if (n >= 3 && e[n - 1] == '*' && e[n - 2] == '.')
        return fidbus_event_id_valid(e, n - 2);
    return fidbus_event_id_valid(e, n);
}

bool fb_sighash_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!isxdigit((unsigned char)s[n]))
            return false;
    return n == 64;
}

int fb_route_spec_validate(const struct fb_route_spec *spec, char *err, size_t errlen)
{
    if (!spec->name || !fb_route_name_valid(spec->name)) {
        fb_set_err(err, errlen, "route name '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]",
                   spec->name ? spec->name : "");
        return FIDBUS_INVALID;
    }
    const char *rn = spec->name;

    if (!spec->event || !spec->event[0]) {
        fb_set_err(err, errlen, "route '%s': no event pattern (set 'event')", rn);
        return FIDBUS_INVALID;
    }
    if (!fb_event_pattern_valid(spec->event)) {
        fb_set_err(err, errlen,
                   "route '%s': event '%.260s' must be an event id (1-255 bytes of "
                   "[A-Za-z0-9_.:-]), a prefix 'ID.*', or '*'",
                   rn, spec->event);
        return FIDBUS_INVALID;
    }

    if (spec->ntags > FIDBUS_MAX_TAGS) {
        fb_set_err(err, errlen, "route '%s': more than %u tags", rn, FIDBUS_MAX_TAGS);
        return FIDBUS_INVALID;
    }
    for (size_t i = 0; i < spec->ntags; i++) {
        const struct fb_tag_spec *t = &spec->tags[i];
        if (!t->key || !fidbus_tag_key_valid(t->key, strlen(t->key))) {
            fb_set_err(err, errlen,
                       "route '%s': tag key '%.80s' must be 1-64 bytes of [A-Za-z0-9_.-]",
                       rn, t->key ? t->key : "");
            return FIDBUS_INVALID;
        }
        if (!t->value || !tag_value_ok(t->value)) {
            fb_set_err(err, errlen,
                       "route '%s': tag '%s': value must be '*' or 0-255 bytes of UTF-8",
                       rn, t->key);
            return FIDBUS_INVALID;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(spec->tags[j].key, t->key) == 0) {
                fb_set_err(err, errlen, "route '%s': tag key '%s' is given twice", rn,
                           t->key);
                return FIDBUS_INVALID;
            }
        }
    }

    if (spec->nto == 0) {
        fb_set_err(err, errlen, "route '%s': no targets (set 'to')", rn);
        return FIDBUS_INVALID;
    }
    if (spec->nto > FB_MAX_TARGETS) {
        fb_set_err(err, errlen, "route '%s': more than %d targets", rn, FB_MAX_TARGETS);
        return FIDBUS_INVALID;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < spec->nto; i++) {
        const struct fb_target_spec *t = &spec->to[i];
        if (!t->ns || !fidbus_name_valid(t->ns) || !t->name ||
            !fidbus_name_valid(t->name)) {
            fb_set_err(err, errlen,
                       "route '%s': target '%.64s.%.64s': namespace and name must be "
                       "1-64 bytes of [A-Za-z0-9_-]",
                       rn, t->ns ? t->ns : "", t->name ? t->name : "");
            return FIDBUS_INVALID;
        }
        char tt[FIDBUS_CANONICAL_MAX + 16];
        fb_target_text(t, tt, sizeof tt);
        struct fidbus_semver sv;
        if (t->version && fidbus_semver_parse(t->version, &sv) != 0) {
            fb_set_err(err, errlen,
                       "route '%s': target '%s': version must be "
                       "MAJOR.MINOR.PATCH",
                       rn, tt);
            return FIDBUS_INVALID;
        }
        if (t->weight > FB_MAX_WEIGHT) {
            fb_set_err(err, errlen,
                       "route '%s': target '%s': weight must be a whole "
                       "number from 0 to %u",
                       rn, tt, FB_MAX_WEIGHT);
            return FIDBUS_INVALID;
        }
        for (size_t j = 0; j < i; j++) {
            if (same_target(&spec->to[j], t)) {
                fb_set_err(err, errlen, "route '%s': target '%s' is listed twice", rn,
                           tt);
                return FIDBUS_INVALID;
            }
        }
        total += t->weight;
    }

    if (spec->mode != FB_MODE_ALL && spec->mode != FB_MODE_SPLIT) {
        fb_set_err(err, errlen, "route '%s': mode must be 'all' or 'split'", rn);
        return FIDBUS_INVALID;
    }
    if (spec->split_by) {
        if (spec->mode != FB_MODE_SPLIT) {
            fb_set_err(err, errlen, "route '%s': split_by needs mode = split", rn);
            return FIDBUS_INVALID;
        }
        if (!fidbus_tag_key_valid(spec->split_by, strlen(spec->split_by))) {
            fb_set_err(err, errlen,
                       "route '%s': split_by '%.80s' must be a tag key (1-64 bytes of "
                       "[A-Za-z0-9_.-])",
                       rn, spec->split_by);
            return FIDBUS_INVALID;
        }
    }
    if (spec->mode == FB_MODE_SPLIT && total == 0) {
        fb_set_err(err, errlen,
                   "route '%s': mode = split needs at least one target with a weight "
                   "above 0",
                   rn);
        return FIDBUS_INVALID;
    }

    if (spec->signature && !fb_sighash_valid(spec->signature)) {
        fb_set_err(err, errlen,
                   "route '%s': signature must be 64 hex digits (the SHA-256 sighash)",
                   rn);
        return FIDBUS_INVALID;
    }
    return 0;
}

char *fb_dup_opt(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p)
        *ok = false;
    return p;
}

int fb_route_spec_copy(struct fb_route_spec *dst, const struct fb_route_spec *src)
{
    bool ok = true;
    memset(dst, 0, sizeof *dst);
    dst->mode = src->mode;
    dst->priority = src->priority;
    dst->line = src->line;
    dst->name = fb_dup_opt(src->name, &ok);
    dst->event = fb_dup_opt(src->event, &ok);
    dst->split_by = fb_dup_opt(src->split_by, &ok);
    dst->signature = fb_dup_opt(src->signature, &ok);

    if (src->ntags) {
        dst->tags = calloc(src->ntags, sizeof *dst->tags);
        if (!dst->tags) {
            ok = false;
        } else {
            dst->ntags = src->ntags;
            for (size_t i = 0; i < src->ntags; i++) {
                dst->tags[i].key = fb_dup_opt(src->tags[i].key, &ok);
                dst->tags[i].value = fb_dup_opt(src->tags[i].value, &ok);
            }
        }
    }
    if (src->nto) {
        dst->to = calloc(src->nto, sizeof *dst->to);
        if (!dst->to) {
            ok = false;
        } else {
            dst->nto = src->nto;
            for (size_t i = 0; i < src->nto; i++) {
                const struct fb_target_spec *s = &src->to[i];
                struct fb_target_spec *d = &dst->to[i];
                d->ns = fb_dup_opt(s->ns, &ok);
                d->name = fb_dup_opt(s->name, &ok);
                d->version = fb_dup_opt(s->version, &ok);
                d->weight = s->weight;
                d->has_weight = s->has_weight;
            }
        }
    }
    if (!ok) {
        fb_route_spec_clear(dst);
        return -ENOMEM;
    }
    return 0;
}

void fb_route_spec_clear(struct fb_route_spec *spec)
{
    if (!spec)
        return;
    free(spec->name);
    free(spec->event);
    for (size_t i = 0; i < spec->ntags; i++)
        tag_clear(&spec->tags[i]);
    free(spec->tags);
    for (size_t i = 0; i < spec->nto; i++)
        target_clear(&spec->to[i]);
    free(spec->to);
    free(spec->split_by);
    free(spec->signature);
    memset(spec, 0, sizeof *spec);
}
