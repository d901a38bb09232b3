/*
 * The [route NAME] sections of fidbusd.conf: each key's value into the
 * route being read (p->route), and the checks once the section ends,
 * before the route joins the config. config.c finds the sections and
 * keys; the route's meaning (targets, tags, the checks the control socket
 * runs too) is route_spec.c's.
 */
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

#include "config/config.h"
#include "config/config_values.h"
#include "config/route_spec.h"

/* One line's worth of a list value ("to" or "tags"); a trailing comma says
 * an indented continuation line follows. */
int fb_config_route_list_chunk(struct parser *p, enum key_id k, const char *v)
{
    char buf[ERR_MAX], sub[ERR_MAX];
    size_t n = strlen(v);
    bool comma = n > 0 && v[n - 1] == ',';
    if (comma) {
        if (n >= sizeof buf) {
            return fail(p, p->lineno, "line too long");
        }
        memcpy(buf, v, n - 1);
        buf[n - 1] = '\0';
        v = buf;
    }
    int rc = k == K_R_TO ? fb_targets_parse_list(v, &p->route, sub, sizeof sub)
                         : fb_tags_parse_list(v, &p->route, sub, sizeof sub);
    if (rc < 0)
        return fail_nomem(p);
    if (rc > 0)
        return fail(p, p->lineno, "%s", sub);
    p->comma_line = comma ? p->lineno : 0;
    return 0;
}

int fb_config_route_key(struct parser *p, enum key_id k, const char *v)
{
    struct fb_route_spec *r = &p->route;
    const char *rn = r->name;
    int line = p->lineno;

    switch (k) {
    case K_R_EVENT:
        if (!*v)
            return fail(p, line, "route '%s': event must not be empty", rn);
        if (!fb_event_pattern_valid(v))
            return fail(p, line,
                        "route '%s': event '%s' must be an event id "
                        "(1-255 bytes of [A-Za-z0-9_.:-]), a prefix 'ID.*', or '*'",
                        rn, v);
        fb_config_set_str(p, &r->event, v, false);
        break;
    case K_R_TO:
        if (!*v)
            return fail(p, line, "route '%s': 'to' lists no targets", rn);
        fb_config_route_list_chunk(p, k, v);
        break;
    case K_R_TAGS:
        fb_config_route_list_chunk(p, k, v);
        break;
    case K_R_MODE:
        if (strcmp(v, "all") == 0)
            r->mode = FB_MODE_ALL;
        else if (strcmp(v, "split") == 0)
            r->mode = FB_MODE_SPLIT;
        else
            return fail(p, line, "route '%s': mode must be all or split, not '%s'", rn,
                        v);
        break;
    case K_R_SPLIT_BY:
        if (!fidbus_tag_key_valid(v, strlen(v)))
            return fail(p, line,
                        "route '%s': split_by '%s' must be a tag key "
                        "(1-64 bytes of [A-Za-z0-9_.-])",
                        rn, v);
        fb_config_set_str(p, &r->split_by, v, false);
        break;
    case K_R_PRIORITY:
        if (!fb_config_parse_int64(v, &r->priority))
            return fail(p, line,
                        "route '%s': priority must be a whole number "
                        "(64-bit, may be negative), not '%s'",
                        rn, v);
        break;
    case K_R_SIGNATURE:
        if (!fb_sighash_valid(v))
            return fail(p, line,
                        "route '%s': signature must be 64 hex digits "
                        "(the SHA-256 sighash of the expected signature)",
                        rn);
        fb_config_set_str(p, &r->signature, v, false);
        break;
    default:
        break;
    }
    return p->rc;
}

int fb_config_route_finish(struct parser *p)
{
    struct fb_route_spec *r = &p->route;
    const char *rn = r->name;
    char sub[ERR_MAX];

    if (p->comma_line)
        return fail(p, p->comma_line,
                    "route '%s': the list ends with a comma but "
                    "no indented continuation line follows",
                    rn);
    if (!p->rkey_line[K_R_EVENT])
        return fail(p, p->sec_line,
                    "route '%s': missing 'event' (an event id, "
                    "'prefix.*' or '*')",
                    rn);
    if (!p->rkey_line[K_R_TO])
        return fail(p, p->sec_line,
                    "route '%s': missing 'to' (one or more "
                    "targets)",
                    rn);
    if (r->split_by && r->mode != FB_MODE_SPLIT)
        return fail(p, p->rkey_line[K_R_SPLIT_BY],
                    "route '%s': split_by needs "
                    "mode = split",
                    rn);
    if (r->mode == FB_MODE_SPLIT) {
        uint64_t total = 0;
        for (size_t i = 0; i < r->nto; i++)
            total += r->to[i].weight;
        if (total == 0)
            return fail(p, p->rkey_line[K_R_TO],
                        "route '%s': mode = split needs "
                        "at least one target with a weight above 0",
                        rn);
    }
    /* the same checks the control socket runs, as a backstop */
    if (fb_route_spec_validate(r, sub, sizeof sub) != 0)
        return fail(p, p->sec_line, "%s", sub);

    struct fb_config *c = p->c;
    struct fb_route_spec *routes = realloc(c->routes, (c->nroutes + 1) * sizeof *routes);
    if (!routes)
        return fail_nomem(p);
    c->routes = routes;
    c->routes[c->nroutes++] = *r;
    memset(r, 0, sizeof *r);
    p->in_route = false;
    return 0;
}

int fb_config_route_line(const struct fb_config *cfg, const char *why)
{
    static const char pre[] = "route '";

    if (strncmp(why, pre, sizeof(pre) - 1) != 0)
        return 0;
    why += sizeof(pre) - 1;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        size_t n = strlen(cfg->routes[i].name);
        if (strncmp(why, cfg->routes[i].name, n) == 0 && why[n] == '\'')
            return cfg->routes[i].line;
    }
    return 0;
}
