/*
 * ctl/render.c -- control results for people and for scripts
 * (see render.h).
 *
 * Not a hot path: the REPLY's bytes go through cbor_load, then into a
 * jansson tree, and the tables are drawn from that tree. Column widths
 * are measured first so every table lines up; cells never hold spaces
 * (lists are joined with ","), so `awk '{print $1}'` works on them --
 * except a named function, "CANONICAL (ID)", which stays in the last
 * column or, in stats, is the first column (its first word is the name).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "cbor_json.h"
#include "render.h"

/* Out of memory in a command-line tool: say so on one line and stop. */
static void *oom(void *p)
{
    if (!p) {
        fputs("fidbusctl: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return oom(n < 0 ? NULL : s);
}

int fbctl_result_json(const uint8_t *p, size_t len, json_t **out, char *why,
                      size_t why_len)
{
    *out = fb_cbor_json(p, len, why, why_len);
    return *out ? 0 : -1;
}

/* ---------------------------------------------------------- text cells */

/* A value as one line of text; list items joined by sep. */
static char *value_text(const json_t *v, const char *sep)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return oom(strdup(json_string_length(v) ? json_string_value(v) : "-"));
    case JSON_INTEGER:
        return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return xasprintf("%.17g", json_real_value(v));
    case JSON_TRUE:
        return oom(strdup("yes"));
    case JSON_FALSE:
        return oom(strdup("no"));
    case JSON_NULL:
        return oom(strdup("-"));
    case JSON_ARRAY: {
        if (json_array_size(v) == 0)
            return oom(strdup("-"));
        char *s = oom(strdup(""));
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            char *t = value_text(e, sep);
            char *n = xasprintf("%s%s%s", s, i ? sep : "", t);
            free(t);
            free(s);
            s = n;
        }
        return s;
    }
    case JSON_OBJECT:
        break;
    }
    /* config.reload's {kind, name} items (kept_runtime, overridden) */
    const json_t *kind = json_object_get(v, "kind"), *name = json_object_get(v, "name");
    if (json_object_size(v) == 2 && json_is_string(kind) && json_is_string(name))
        return xasprintf("%s %s", json_string_value(kind), json_string_value(name));
    if (json_object_size(v) == 0)
        return oom(strdup("-"));
    return oom(json_dumps(v, JSON_COMPACT));
}

/* A column of an object: its text, "-" when absent. */
static char *field(const json_t *o, const char *key)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return v ? value_text(v, ",") : oom(strdup("-"));
}

/* --------------------------------------------------------------- tables */

struct table {
    size_t ncols, nrows, cap;
    char **cells; /* row-major; row 0 is the header */
};

static void table_init(struct table *t, const char *const *header, size_t ncols)
{
    *t = (struct table){.ncols = ncols};
    char **row = oom(calloc(ncols, sizeof(*row)));
    for (size_t i = 0; i < ncols; i++)
        row[i] = oom(strdup(header[i]));
    t->cells = row;
    t->nrows = t->cap = 1;
}

/* Takes the ncols malloc'd strings of row. */
static void table_add(struct table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap *= 2;
        t->cells = oom(reallocarray(t->cells, t->cap * t->ncols, sizeof(char *)));
    }
    memcpy(t->cells + t->nrows * t->ncols, row, t->ncols * sizeof(char *));
    t->nrows++;
}

/* Prints and frees. */
static void table_print(FILE *out, struct table *t)
{
    size_t *w = oom(calloc(t->ncols, sizeof(*w)));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t n = strlen(t->cells[r * t->ncols + c]);
            if (n > w[c])
                w[c] = n;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (c + 1 < t->ncols)
                fprintf(out, "%-*s  ", (int)w[c], s);
            else
                fprintf(out, "%s\n", s);
            free(t->cells[r * t->ncols + c]);
        }
    }
    free(t->cells);
    free(w);
}

/* "canonical (id)" when names know id, else id. */
static char *named_id(const char *id, const json_t *names)
{
    const json_t *c = names ? json_object_get(names, id) : NULL;
    if (json_is_string(c) && json_string_length(c))
        return xasprintf("%s (%s)", json_string_value(c), id);
    return oom(strdup(id));
}

/* A list of funcIDs, each named, joined by sep; NULL when v is not one. */
static char *named_ids(const json_t *v, const json_t *names, const char *sep)
{
    if (!names || !json_is_array(v) || json_array_size(v) == 0)
        return NULL;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e))
            return NULL;
    }
    char *s = oom(strdup(""));
    json_array_foreach(v, i, e)
    {
        char *t = named_id(json_string_value(e), names);
        char *n = xasprintf("%s%s%s", s, i ? sep : "", t);
        free(t);
        free(s);
        s = n;
    }
    return s;
}

/* "key: value" for every key, or only the scalar ones; the funcID lists
 * of route.test (targets) and of a plugin entry (functions) named. */
static void key_values(FILE *out, const json_t *o, bool scalars_only, const json_t *names)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (scalars_only && (json_is_object(v) || json_is_array(v)))
            continue;
        char *s = !strcmp(k, "targets") || !strcmp(k, "functions")
                      ? named_ids(v, names, ", ")
                      : NULL;
        if (!s)
            s = value_text(v, ", ");
        fprintf(out, "%s: %s\n", k, s);
        free(s);
    }
}

static void render_plugins(FILE *out, const json_t *r, const json_t *names)
{
    static const char *const h[] = {"NAME", "VERSION", "PATH", "FUNCTIONS"};
    struct table t;
    table_init(&t, h, 4);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(r, "plugins"), i, p)
    {
        char *fns = named_ids(json_object_get(p, "functions"), names, ", ");
        char *row[] = {field(p, "name"), field(p, "version"), field(p, "path"),
                       fns ? fns : field(p, "functions")};
        table_add(&t, row);
    }
    table_print(out, &t);
}

static void render_functions(FILE *out, const json_t *r)
{
    static const char *const h[] = {"ID",       "CANONICAL",   "SIGHASH", "PLUGIN",
                                    "BLOCKING", "QUARANTINED", "KIND",    "MEMBERS"};
    struct table t;
    table_init(&t, h, 8);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "functions"), i, f)
    {
        char *sig = field(f, "sighash");
        if (strlen(sig) > 16)
            sig[16] = '\0'; /* enough to tell signatures apart by eye */
        char *row[] = {field(f, "id"),     field(f, "canonical"), sig,
                       field(f, "plugin"), field(f, "blocking"),  field(f, "quarantined"),
                       field(f, "kind"),   field(f, "members")};
        table_add(&t, row);
    }
    table_print(out, &t);
}

/* func.members: one row per member of a remote function. */
static void render_members(FILE *out, const json_t *r)
{
    static const char *const h[] = {"ID",    "CONN",   "PID",      "UID",
                                    "PEER",  "NAME",   "CREDIT",   "INFLIGHT",
                                    "CALLS", "ERRORS", "TIMEOUTS", "SINCE_S"};
    struct table t;
    table_init(&t, h, 12);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(r, "members"), i, m)
    {
        char *row[] = {field(m, "id"),     field(m, "conn"),     field(m, "pid"),
                       field(m, "uid"),    field(m, "peer"),     field(m, "name"),
                       field(m, "credit"), field(m, "inflight"), field(m, "calls"),
                       field(m, "errors"), field(m, "timeouts"), field(m, "since_s")};
        table_add(&t, row);
    }
    table_print(out, &t);
}

/* tags {k: v} -> "k=v,k2=v2" */
static char *tags_text(const json_t *tags)
{
    if (!json_is_object(tags) || json_object_size(tags) == 0)
        return oom(strdup("-"));
    char *s = oom(strdup(""));
    const char *k;
    json_t *v;
    bool first = true;
    json_object_foreach((json_t *)tags, k, v)
    {
        char *vt =
            json_is_string(v) ? oom(strdup(json_string_value(v))) : value_text(v, ",");
        char *n = xasprintf("%s%s%s=%s", s, first ? "" : ",", k, vt);
        free(vt);
        free(s);
        s = n;
        first = false;
    }
    return s;
}

/* to [{target, id, weight}] -> "target(id):weight,..." */
static char *targets_text(const json_t *to)
{
    if (!json_is_array(to) || json_array_size(to) == 0)
        return oom(strdup("-"));
    char *s = oom(strdup(""));
    size_t i;
    json_t *e;
    json_array_foreach(to, i, e)
    {
        char *tg = field(e, "target"), *id = field(e, "id"), *w = field(e, "weight");
        char *n = xasprintf("%s%s%s(%s):%s", s, i ? "," : "", tg, id, w);
        free(tg);
        free(id);
        free(w);
        free(s);
        s = n;
    }
    return s;
}

static void render_routes(FILE *out, const json_t *r)
{
    char *gen = field(r, "generation");
    fprintf(out, "generation: %s\n", gen);
    free(gen);
    static const char *const h[] = {"NAME", "EVENT", "TAGS", "TO", "MODE", "PRIORITY"};
    struct table t;
    table_init(&t, h, 6);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "routes"), i, e)
    {
        char *mode = field(e, "mode");
        const json_t *sb = json_object_get(e, "split_by");
        if (json_is_string(sb) && json_string_length(sb)) {
            char *m = xasprintf("%s(%s)", mode, json_string_value(sb));
            free(mode);
            mode = m;
        }
        char *row[] = {field(e, "name"),
                       field(e, "event"),
                       tags_text(json_object_get(e, "tags")),
                       targets_text(json_object_get(e, "to")),
                       mode,
                       field(e, "priority")};
        table_add(&t, row);
    }
    table_print(out, &t);
}

static void render_stats(FILE *out, const json_t *r)
{
    key_values(out, r, true, NULL);

    const char *k;
    json_t *v;
    /* open now, by kind (unix, tcp, control) */
    const json_t *conns = json_object_get(r, "connections");
    if (json_is_object(conns)) {
        static const char *const h[] = {"CONNECTIONS", "OPEN"};
        struct table t;
        table_init(&t, h, 2);
        json_object_foreach((json_t *)conns, k, v)
        {
            char *row[] = {oom(strdup(k)), value_text(v, ",")};
            table_add(&t, row);
        }
        fputc('\n', out);
        table_print(out, &t);
    }
    const json_t *gens = json_object_get(r, "generations");
    if (json_is_object(gens)) {
        static const char *const h[] = {"GENERATION", "EVENTS"};
        struct table t;
        table_init(&t, h, 2);
        json_object_foreach((json_t *)gens, k, v)
        {
            char *row[] = {oom(strdup(k)), value_text(v, ",")};
            table_add(&t, row);
        }
        fputc('\n', out);
        table_print(out, &t);
    }
    const json_t *routes = json_object_get(r, "routes");
    if (json_is_object(routes)) {
        static const char *const h[] = {"ROUTE", "MATCHED"};
        struct table t;
        table_init(&t, h, 2);
        json_object_foreach((json_t *)routes, k, v)
        {
            char *row[] = {oom(strdup(k)), field(v, "matched")};
            table_add(&t, row);
        }
        fputc('\n', out);
        table_print(out, &t);
    }
    const json_t *funcs = json_object_get(r, "functions");
    if (json_is_object(funcs)) {
        static const char *const h[] = {"FUNCTION", "CALLS",       "ERRORS", "LATE",
                                        "SKIPPED",  "QUARANTINED", "P50_NS", "P99_NS"};
        struct table t;
        table_init(&t, h, 8);
        json_object_foreach((json_t *)funcs, k, v)
        {
            /* the reply names each function itself (`canonical`) */
            const json_t *c = json_object_get(v, "canonical");
            char *fn = json_is_string(c) && json_string_length(c)
                           ? xasprintf("%s (%s)", json_string_value(c), k)
                           : oom(strdup(k));
            char *row[] = {fn,
                           field(v, "calls"),
                           field(v, "errors"),
                           field(v, "late"),
                           field(v, "skipped"),
                           field(v, "quarantined"),
                           field(v, "p50_ns"),
                           field(v, "p99_ns")};
            table_add(&t, row);
        }
        fputc('\n', out);
        table_print(out, &t);
    }
    /* Limit hits and backpressure pauses, by reason ([limits]). */
    const json_t *limits = json_object_get(r, "limits");
    if (json_is_object(limits)) {
        static const char *const h[] = {"LIMIT", "HITS"};
        struct table t;
        table_init(&t, h, 2);
        json_object_foreach((json_t *)limits, k, v)
        {
            char *row[] = {oom(strdup(k)), value_text(v, ",")};
            table_add(&t, row);
        }
        fputc('\n', out);
        table_print(out, &t);
    }
    /* anything else the daemon added later, as it is */
    json_object_foreach((json_t *)r, k, v)
    {
        if (!json_is_object(v) && !json_is_array(v))
            continue;
        if (!strcmp(k, "generations") || !strcmp(k, "routes") ||
            !strcmp(k, "functions") || !strcmp(k, "limits") || !strcmp(k, "connections"))
            continue;
        char *s = value_text(v, ", ");
        fprintf(out, "%s: %s\n", k, s);
        free(s);
    }
}

void fbctl_render_table(FILE *out, const char *command, const json_t *result,
                        const json_t *names)
{
    if (!json_is_object(result)) {
        char *s = value_text(result, ", ");
        fprintf(out, "%s\n", s);
        free(s);
        return;
    }
    if (!strcmp(command, "plugin.list")) {
        render_plugins(out, result, names);
    } else if (!strcmp(command, "func.list")) {
        render_functions(out, result);
    } else if (!strcmp(command, "func.members")) {
        render_members(out, result);
    } else if (!strcmp(command, "route.list")) {
        render_routes(out, result);
    } else if (!strcmp(command, "stats")) {
        render_stats(out, result);
    } else if (!strcmp(command, "config.export") &&
               json_is_string(json_object_get(result, "config"))) {
        /* the config file itself, ready to redirect into a file */
        fputs(json_string_value(json_object_get(result, "config")), out);
    } else if (json_object_size(result) == 0) {
        fputs("ok\n", out);
    } else {
        key_values(out, result, false, names);
    }
}
