/*
 * Route specifications: a route as written by an operator (config file
 * section, later a control-socket map), before it is resolved against the
 * registry. Specs are plain owned data; fb_routes_build turns a set of them
 * into an immutable table.
 */
#ifndef FB_ROUTE_SPEC_H
#define FB_ROUTE_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fb_route_mode {
    FB_MODE_ALL = 0,   /* fan-out: every target gets the event */
    FB_MODE_SPLIT = 1, /* exactly one target, chosen by weight */
};

struct fb_tag_spec {
    char *key;
    char *value; /* "*" = present with any value */
};

struct fb_target_spec {
    char *ns;
    char *name;
    char *version;   /* NULL = latest loaded version */
    uint32_t weight; /* default 1 */
    bool has_weight;
};

struct fb_route_spec {
    char *name;
    char *event; /* exact id, "prefix.*" or "*" */
    struct fb_tag_spec *tags;
    size_t ntags;
    struct fb_target_spec *to;
    size_t nto;
    enum fb_route_mode mode;
    char *split_by; /* NULL unless mode == FB_MODE_SPLIT and set */
    int64_t priority;
    char *signature; /* NULL or 64 hex digits (expected sighash) */
    int line;        /* config line of the section, 0 if not from a file */
};

#define FB_MAX_TARGETS 64
#define FB_MAX_WEIGHT 1000000u

/*
 * Parses one target "ns.name[@MAJOR.MINOR.PATCH][:WEIGHT]" into *out
 * (owned strings). Returns 0, or FIDBUS_INVALID with a reason in err.
 */
int fb_target_parse(const char *text, struct fb_target_spec *out, char *err,
                    size_t errlen);

/*
 * Parses a comma-separated target list ("a.b, c.d@1.0.0:5"). Appends to
 * spec->to. Returns 0 or FIDBUS_INVALID with err set.
 */
int fb_targets_parse_list(const char *text, struct fb_route_spec *spec, char *err,
                          size_t errlen);

/*
 * Parses "k=v, k2=*" into spec->tags. Returns 0 or FIDBUS_INVALID.
 */
int fb_tags_parse_list(const char *text, struct fb_route_spec *spec, char *err,
                       size_t errlen);

/*
 * Validates a whole spec that does not need the registry: name (1-64 bytes
 * of [A-Za-z0-9_.-]), event pattern, tags, at least one target, weights,
 * split_by only with split, all weights 0, signature hex. Returns 0 or
 * FIDBUS_INVALID with err set.
 */
int fb_route_spec_validate(const struct fb_route_spec *spec, char *err, size_t errlen);

/*
 * The single-value rules, shared with the config parser so a file and the
 * control socket accept exactly the same text. fb_route_name_valid: 1-64
 * bytes of [A-Za-z0-9_.-] (NULL is not), also the rule for [plugin NAME].
 * fb_event_pattern_valid: an event id, a prefix "ID.*", or "*".
 * fb_sighash_valid: exactly 64 hex digits.
 */
bool fb_route_name_valid(const char *s);
bool fb_event_pattern_valid(const char *e);
bool fb_sighash_valid(const char *s);

/* Deep copy into *dst (zeroed first). 0 or -ENOMEM. */
int fb_route_spec_copy(struct fb_route_spec *dst, const struct fb_route_spec *src);
/* The target as the operator wrote it, without the weight: "ns.name" for
 * the latest version, "ns.name@1.2.3" when pinned. For messages and
 * listings; truncated to len. */
void fb_target_text(const struct fb_target_spec *t, char *buf, size_t len);

/* Frees what spec owns (not spec itself); leaves it zeroed. */
void fb_route_spec_clear(struct fb_route_spec *spec);

/*
 * strdup of an optional string, for the spec code (route_spec.c,
 * plugin_cbor.c): the copy is the caller's; NULL
 * stays NULL, and *ok turns false on ENOMEM so a deep copy can check once
 * at the end.
 */
char *fb_dup_opt(const char *s, bool *ok);

#endif
