/*
 * ctl/route_weight.c -- `fidbusctl route weight ROUTE TARGET=WEIGHT...`,
 * a canary step as one transaction.
 *
 * The daemon has no command that changes one weight, so this is a
 * read-modify-write on one connection: route.list (and func.list, to
 * match a TARGET by its canonical name), then one route.apply that
 * deletes the route and adds it back with the new weights -- one
 * transaction, one generation, and no table in which the route is
 * missing (proto/control.md "Transactions"). The apply carries the
 * generation that was read as `if_generation`, so a change someone else
 * made in between is refused by the daemon (CONFLICT) rather than
 * overwritten; the step is then done again on what is running now, a
 * few times at most. The weights themselves (0 allowed, range, a split
 * route needing one above 0) are the daemon's rules and its message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <fidbus/client.h>

#include "fidbusctl.h"

/* Re-reads after a CONFLICT before giving up: each needs another admin's
 * change to land between our read and our apply. */
#define WEIGHT_ATTEMPTS 5

/* The keys of a route map (proto/control.md "Value rules"): route.list
 * entries are sent back with only these, so a key a later daemon adds
 * to the listing never makes the apply INVALID. */
static const char *const route_keys[] = {"name", "event",    "tags",     "mode",
                                         "to",   "split_by", "priority", "signature"};

struct weight_arg {
    char *target; /* as typed */
    const char *weight;
    size_t at; /* index in the route's `to`, once matched */
};

/* TARGET=WEIGHT; WEIGHT digits only (the daemon checks the range). */
static int parse_weights(const char *words, char **pos, int n, struct weight_arg *w)
{
    for (int i = 0; i < n; i++) {
        const char *eq = strrchr(pos[i], '=');
        const char *d = eq ? eq + 1 : NULL;
        if (!eq || eq == pos[i] || !*d || strspn(d, "0123456789") != strlen(d) ||
            strlen(d) > 10)
            return fbctl_fail(EXIT_USAGE,
                              "%s: invalid '%s': expected TARGET=WEIGHT (a whole number)",
                              words, pos[i]);
        w[i].target = strndup(pos[i], (size_t)(eq - pos[i]));
        if (!w[i].target)
            return fbctl_fail(EXIT_USAGE, "out of memory");
        w[i].weight = d;
        for (int j = 0; j < i; j++)
            if (strcmp(w[j].target, w[i].target) == 0)
                return fbctl_fail(EXIT_USAGE, "%s: target '%s' given twice", words,
                                  w[i].target);
    }
    return 0;
}

/* The entry of route.list named `name`, borrowed; NULL if none. */
static json_t *find_route(json_t *list, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(list, "routes"), i, r)
    {
        const char *n = json_string_value(json_object_get(r, "name"));
        if (n && strcmp(n, name) == 0)
            return r;
    }
    return NULL;
}

/*
 * The index in `to` of the target `want` names: the target as written in
 * the route, else its function's canonical name, else its funcID.
 * Returns -1 when none.
 */
static long find_target(const json_t *to, const json_t *names, const char *want)
{
    for (int pass = 0; pass < 3; pass++) {
        size_t i;
        json_t *t;
        json_array_foreach(to, i, t)
        {
            const char *id = json_string_value(json_object_get(t, "id"));
            const char *s =
                pass == 0 ? json_string_value(json_object_get(t, "target"))
                : pass == 1
                    ? (id && names ? json_string_value(json_object_get(names, id)) : NULL)
                    : id;
            if (s && strcmp(s, want) == 0)
                return (long)i;
        }
    }
    return -1;
}

/* "a, b, c": the route's targets as written, for an error message. */
static void targets_list(const json_t *to, char *buf, size_t cap)
{
    size_t i, len = 0;
    json_t *t;
    buf[0] = '\0';
    json_array_foreach(to, i, t)
    {
        const char *s = json_string_value(json_object_get(t, "target"));
        if (s && len < cap)
            len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", s);
    }
}

/*
 * The route map to send back: entry's route keys with `to` rewritten as
 * "target:weight" texts (null values and empty tags left out, as absent).
 * Returns 0, or an exit status after saying why.
 */
static int new_route(const struct ctl *ctl, const char *words, const json_t *entry,
                     const json_t *names, struct weight_arg *w, int n, json_t **out)
{
    const char *rname = json_string_value(json_object_get(entry, "name"));
    const json_t *to = json_object_get(entry, "to");
    for (int i = 0; i < n; i++) {
        long at = find_target(to, names, w[i].target);
        if (at < 0) {
            char list[1024], msg[1400];
            targets_list(to, list, sizeof list);
            snprintf(msg, sizeof msg, "route '%s' has no target '%s' (its targets: %s)",
                     rname, w[i].target, list);
            return fbctl_refused(ctl, words, FIDBUS_NOT_FOUND, msg, false, 0);
        }
        w[i].at = (size_t)at;
        for (int j = 0; j < i; j++)
            if (w[j].at == w[i].at)
                return fbctl_fail(EXIT_USAGE, "%s: '%s' and '%s' name the same target",
                                  words, w[j].target, w[i].target);
    }

    json_t *r = json_object(), *nto = json_array();
    if (!r || !nto) {
        json_decref(r);
        json_decref(nto);
        return fbctl_fail(EXIT_USAGE, "out of memory");
    }
    for (size_t k = 0; k < sizeof route_keys / sizeof route_keys[0]; k++) {
        json_t *v = json_object_get(entry, route_keys[k]);
        if (!v || json_is_null(v) || !strcmp(route_keys[k], "to") ||
            (json_is_object(v) && json_object_size(v) == 0))
            continue;
        json_object_set(r, route_keys[k], v);
    }
    size_t i;
    json_t *t;
    json_array_foreach(to, i, t)
    {
        const char *target = json_string_value(json_object_get(t, "target"));
        char wbuf[32];
        const char *weight = NULL;
        for (int k = 0; k < n; k++)
            if (w[k].at == i)
                weight = w[k].weight;
        if (!weight) {
            snprintf(wbuf, sizeof wbuf, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(t, "weight")));
            weight = wbuf;
        }
        char *item = NULL;
        if (!target || asprintf(&item, "%s:%s", target, weight) < 0) {
            json_decref(r);
            json_decref(nto);
            return fbctl_fail(EXIT_BUS,
                              "%s failed: the daemon's route.list is not "
                              "what proto/control.md says",
                              words);
        }
        json_array_append_new(nto, json_string(item));
        free(item);
    }
    json_object_set_new(r, "to", nto);
    *out = r;
    return 0;
}

/* Prints the outcome: "key: value" lines, or one JSON object. */
static void print_done(const struct ctl *ctl, const char *rname, json_t *route,
                       json_t *applied)
{
    json_t *o =
        json_pack("{s:s, s:O, s:O}", "route", rname, "to", json_object_get(route, "to"),
                  "generation", json_object_get(applied, "generation"));
    if (ctl->json) {
        fbctl_print_json(o);
        return;
    }
    printf("route: %s\nto:", rname);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(route, "to"), i, t)
        printf("%s %s", i ? "," : "", json_string_value(t));
    printf("\ngeneration: %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(applied, "generation")));
    json_decref(o);
}

/* One read-modify-write; *conflict when the apply lost the race. */
static int weight_once(const struct ctl *ctl, struct fidbus_client *cl, const char *words,
                       const char *rname, struct weight_arg *w, int n, bool last,
                       bool *conflict)
{
    json_t *list = NULL, *names = NULL, *route = NULL, *args = NULL, *applied = NULL;
    int code = 0;
    *conflict = false;
    int status = fbctl_control_request(ctl, cl, words, "route.list", NULL, &list, NULL);
    if (status)
        goto out;
    json_t *entry = find_route(list, rname);
    if (!entry) {
        char msg[128];
        snprintf(msg, sizeof msg, "no route named '%s'", rname);
        status = fbctl_refused(ctl, words, FIDBUS_NOT_FOUND, msg, false, 0);
        goto out;
    }
    names = fbctl_func_names(ctl, cl);
    status = new_route(ctl, words, entry, names, w, n, &route);
    if (status)
        goto out;
    args = json_pack("{s:[s], s:[O], s:O}", "del", rname, "add", route, "if_generation",
                     json_object_get(list, "generation"));
    if (!args) {
        status = fbctl_fail(EXIT_USAGE, "out of memory");
        goto out;
    }
    status = fbctl_control_request(ctl, cl, words, "route.apply", args, &applied, &code);
    if (code == FIDBUS_CONFLICT && !last) {
        *conflict = true;
    } else if (code) {
        status = fbctl_refused(ctl, words, code, fidbus_client_last_error(cl), false, 0);
    } else if (status == EXIT_OK) {
        print_done(ctl, rname, route, applied);
    }
out:
    json_decref(list);
    json_decref(names);
    json_decref(route);
    json_decref(args);
    json_decref(applied);
    return status;
}

int fbctl_route_weight(const struct ctl *ctl, const char *words, char **pos, int npos)
{
    int n = npos - 1;
    struct weight_arg *w = calloc((size_t)n, sizeof *w);
    if (!w)
        return fbctl_fail(EXIT_USAGE, "out of memory");
    int status = parse_weights(words, pos + 1, n, w);
    struct fidbus_client *cl = NULL;
    if (status == EXIT_OK)
        status = fbctl_control_open(ctl, &cl);
    for (int attempt = 1; status == EXIT_OK && cl; attempt++) {
        bool conflict;
        status = weight_once(ctl, cl, words, pos[0], w, n, attempt == WEIGHT_ATTEMPTS,
                             &conflict);
        if (!conflict)
            break;
        status = EXIT_OK;
    }
    if (cl)
        fidbus_client_close(cl);
    for (int i = 0; i < n; i++)
        free(w[i].target);
    free(w);
    return fbctl_flush(status);
}
