/*
 * config.export (proto/control.md): the running daemon written out as a
 * fidbusd.conf that, loaded by a fresh daemon, gives the same plugins and
 * routes.
 *
 * [daemon], [listen] and [control] come from the running config with
 * every key at its current value (workers resolved to a number, default
 * socket paths spelled out), so the file does not depend on the defaults
 * of the daemon that reads it; [limits] follows with every key that is not
 * at its default (nothing is lost when the export is a backup), then every
 * [remote NS] with all its keys (users and groups as numeric ids, which
 * read back the same wherever the names resolve differently). Then one [plugin NAME]
 * per loaded instance in load order (its original path, then its other keys in file
 * order) and one [route NAME] per route of the running table in name order.
 *
 * The text is written for config.c's parser: "key = value" lines of at
 * most LINE_MAX bytes, long `to` and `tags` lists continued on indented
 * lines after a trailing comma. Every value here came through that parser
 * (config file) and so reads back as it was.
 */
#include "control/control_cmds.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build_config.h"
#include "base/daemon_t.h"
#include "config/config.h"
#include "routing/plugin_loader.h"
#include "routing/routes.h"

/* config_values.c refuses a line of 199 bytes or more (libinih's 200-byte
 * buffer holds 198 and the newline). */
#define LINE_MAX_BYTES 198

/* One item of a `to` list, as fb_target_parse reads it. */
static void target_item(char *buf, size_t len, const struct fb_target_spec *t,
                        bool weighted)
{
    int n = snprintf(buf, len, "%s.%s", t->ns, t->name);
    if (t->version && n >= 0 && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, "@%s", t->version);
    if (weighted && n >= 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, ":%" PRIu32, t->weight);
}

/*
 * "key = a, b, c" on as many lines as it takes: items are joined with ", "
 * while the line stays within LINE_MAX_BYTES; otherwise the line ends
 * with a comma and the next item starts an indented continuation line.
 */
struct list_out {
    FILE *f;
    size_t col;   /* bytes on the current line */
    bool started; /* an item was written */
};

static void list_begin(struct list_out *lo, FILE *f, const char *key)
{
    lo->f = f;
    lo->started = false;
    int n = fprintf(f, "%s = ", key);
    lo->col = n > 0 ? (size_t)n : 0;
}

static void list_item(struct list_out *lo, const char *item)
{
    size_t il = strlen(item);
    /* + 1: the comma that ends this line if another item follows */
    if (lo->started && lo->col + 2 + il + 1 > LINE_MAX_BYTES) {
        fputs(",\n    ", lo->f);
        lo->col = 4;
    } else if (lo->started) {
        fputs(", ", lo->f);
        lo->col += 2;
    }
    fputs(item, lo->f);
    lo->col += il;
    lo->started = true;
}

static void write_route(FILE *f, const struct fb_route_spec *s)
{
    fprintf(f, "\n[route %s]\nevent = %s\n", s->name, s->event);

    char item[FIDBUS_MAX_TAG_KEY_LEN + FIDBUS_MAX_TAG_VALUE_LEN + 2 + 64];
    struct list_out lo;
    if (s->ntags) {
        list_begin(&lo, f, "tags");
        for (size_t i = 0; i < s->ntags; i++) {
            snprintf(item, sizeof item, "%s=%s", s->tags[i].key, s->tags[i].value);
            list_item(&lo, item);
        }
        fputc('\n', f);
    }
    /* A weight the operator wrote is kept; split routes always carry
     * theirs, so the file shows the traffic split it gives. */
    list_begin(&lo, f, "to");
    for (size_t i = 0; i < s->nto; i++) {
        target_item(item, sizeof item, &s->to[i],
                    s->to[i].has_weight || s->mode == FB_MODE_SPLIT);
        list_item(&lo, item);
    }
    fputc('\n', f);

    fprintf(f, "mode = %s\n", s->mode == FB_MODE_SPLIT ? "split" : "all");
    if (s->split_by)
        fprintf(f, "split_by = %s\n", s->split_by);
    if (s->priority)
        fprintf(f, "priority = %" PRId64 "\n", s->priority);
    if (s->signature)
        fprintf(f, "signature = %s\n", s->signature);
}

static void write_plugin(FILE *f, const struct fb_plugin *p)
{
    fprintf(f, "\n[plugin %s]\npath = %s\n", p->name, p->path);
    for (size_t i = 0; i < p->nkeys; i++) {
        const struct fb_kv *kv = &p->keys[i];
        if (strcmp(kv->key, "path") == 0)
            continue;
        /* the file may have said "key=value": keep such a line in bounds */
        bool tight = strlen(kv->key) + 3 + strlen(kv->value) > LINE_MAX_BYTES;
        fprintf(f, "%s%s%s\n", kv->key, tight ? "=" : " = ", kv->value);
    }
}

static void write_fixed(FILE *f, const struct fb_config *c)
{
    fprintf(f,
            "[daemon]\nworkers = %u\nruntime_dir = %s\nstate_dir = %s\n"
            "max_frame = %" PRIu32 "\nmax_depth = %u\nlog_level = %s\n"
            "blocking_threads = %u\n",
            c->workers, c->runtime_dir, c->state_dir, c->max_frame, c->max_depth,
            fb_log_level_name(c->log_level), c->blocking_threads);
    fprintf(f, "handler_deadline_ms = %" PRIu32 "\nquarantine_after = %" PRIu32 "\n",
            c->handler_deadline_ms, c->quarantine_after);

    /* an empty unix means "no Unix listener" */
    fprintf(f, "\n[listen]\nunix = %s\nunix_mode = %04o\n",
            c->unix_path ? c->unix_path : "", c->unix_mode);
    if (c->tcp)
        fprintf(f, "tcp = %s\n", c->tcp);
    fprintf(f, "tcp_auth = %s\n", c->tcp_auth == FB_TCP_AUTH_NONE ? "none" : "key");
    if (c->tcp_key_file)
        fprintf(f, "tcp_key_file = %s\n", c->tcp_key_file);

    fprintf(f, "\n[control]\nsocket = %s\nmode = %04o\nmax_reply = %" PRIu32 "\n",
            c->control_socket, c->control_mode, c->control_max_reply);
    if (c->control_group)
        fprintf(f, "group = %s\n", c->control_group);

    /* as written: port 0 stays "any free port" for the daemon that loads it */
    if (c->metrics_listen)
        fprintf(f, "\n[metrics]\nlisten = %s\n", c->metrics_listen);

    fb_config_limits_write(f, &c->limits);
    fb_config_remote_write(f, c);
}

int fb_ctl_export_config(const struct fb_daemon *d, char **out)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;

    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(when, sizeof when, "%lld", (long long)now);
    fprintf(f, "; exported by fidbusd %s at %s, route table generation %" PRIu64 "\n",
            FIDBUS_VERSION, when, d->generation);

    write_fixed(f, d->cfg);
    for (const struct fb_plugin *p = d->plugins; p; p = p->next)
        write_plugin(f, p);
    size_t n = fb_routes_count(d->table);
    for (size_t i = 0; i < n; i++) /* name order */
        write_route(f, fb_routes_at(d->table, i)->spec);

    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad || !buf) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    return 0;
}
