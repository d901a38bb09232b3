/*
 * fidbusd.conf: INI (README "Configuration") read with libinih, then checked in
 * full before the daemon binds or loads anything.
 *
 * libinih tokenises (comments, "key = value", indented continuation
 * lines); everything else is ours. libinih reads through our own line
 * source (config_values.c says why), and section headers are parsed here
 * from the raw line, as Debian's libinih keeps only 50 bytes of a section
 * name: "[route NAME]" keeps a 64-byte NAME, and a section with no keys at
 * all is still seen. config_values.c also parses single values (numbers,
 * modes, log levels, tcp addresses); this file gives them meaning:
 * sections, keys, the checks that need the whole file, fb_config_*.
 * The [route NAME] keys are config_route.c's, the [limits] ones
 * config_limits.c's.
 *
 * The rules are strict on purpose: an unknown section or key, a duplicate,
 * or a value out of range is an error naming FILE:LINE, because a typo in
 * a daemon's config that passes silently is found much later and much
 * more expensively. [plugin NAME] sections are the exception for keys:
 * every key but path belongs to the plugin, which checks its own.
 */
#include "config/config.h"
#include "base/err.h"
#include "config/config_values.h"
#include "config/spec_cbor.h"
#include "config/state.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>
#include <fidbus/proto.h>

/* Longest path a Unix socket address holds (sun_path minus the NUL). */
#define SOCK_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static const char *const section_names[] = {
    [SEC_NONE] = "",           [SEC_DAEMON] = "daemon", [SEC_LISTEN] = "listen",
    [SEC_CONTROL] = "control", [SEC_PLUGIN] = "plugin", [SEC_ROUTE] = "route",
    [SEC_LIMITS] = "limits",   [SEC_REMOTE] = "remote", [SEC_METRICS] = "metrics",
};

static const struct {
    enum section_kind sec;
    const char *name;
} keys[K__COUNT] = {
    [K_WORKERS] = {SEC_DAEMON, "workers"},
    [K_RUNTIME_DIR] = {SEC_DAEMON, "runtime_dir"},
    [K_STATE_DIR] = {SEC_DAEMON, "state_dir"},
    [K_MAX_FRAME] = {SEC_DAEMON, "max_frame"},
    [K_MAX_DEPTH] = {SEC_DAEMON, "max_depth"},
    [K_LOG_LEVEL] = {SEC_DAEMON, "log_level"},
    [K_BLOCKING_THREADS] = {SEC_DAEMON, "blocking_threads"},
    [K_HANDLER_DEADLINE_MS] = {SEC_DAEMON, "handler_deadline_ms"},
    [K_QUARANTINE_AFTER] = {SEC_DAEMON, "quarantine_after"},
    [K_UNIX] = {SEC_LISTEN, "unix"},
    [K_UNIX_MODE] = {SEC_LISTEN, "unix_mode"},
    [K_TCP] = {SEC_LISTEN, "tcp"},
    [K_TCP_AUTH] = {SEC_LISTEN, "tcp_auth"},
    [K_TCP_KEY_FILE] = {SEC_LISTEN, "tcp_key_file"},
    [K_SOCKET] = {SEC_CONTROL, "socket"},
    [K_MODE] = {SEC_CONTROL, "mode"},
    [K_GROUP] = {SEC_CONTROL, "group"},
    [K_MAX_REPLY] = {SEC_CONTROL, "max_reply"},
    [K_R_EVENT] = {SEC_ROUTE, "event"},
    [K_R_TAGS] = {SEC_ROUTE, "tags"},
    [K_R_TO] = {SEC_ROUTE, "to"},
    [K_R_MODE] = {SEC_ROUTE, "mode"},
    [K_R_SPLIT_BY] = {SEC_ROUTE, "split_by"},
    [K_R_PRIORITY] = {SEC_ROUTE, "priority"},
    [K_R_SIGNATURE] = {SEC_ROUTE, "signature"},
    /* [limits]: values in config_limits.c */
    [K_L_MAX_CONNECTIONS] = {SEC_LIMITS, "max_connections"},
    [K_L_MAX_CONNECTIONS_PER_UID] = {SEC_LIMITS, "max_connections_per_uid"},
    [K_L_MAX_CONNECTIONS_TCP] = {SEC_LIMITS, "max_connections_tcp"},
    [K_L_OUTPUT_SOFT] = {SEC_LIMITS, "output_soft"},
    [K_L_OUTPUT_HARD] = {SEC_LIMITS, "output_hard"},
    [K_L_MAX_INFLIGHT] = {SEC_LIMITS, "max_inflight"},
    [K_L_AUTH_TIMEOUT_MS] = {SEC_LIMITS, "auth_timeout_ms"},
    [K_L_UNAUTH_MAX] = {SEC_LIMITS, "unauth_max"},
    [K_L_UNAUTH_PER_ADDR] = {SEC_LIMITS, "unauth_per_addr"},
    [K_L_IDLE_TIMEOUT_UNIX_MS] = {SEC_LIMITS, "idle_timeout_unix_ms"},
    [K_L_IDLE_TIMEOUT_TCP_MS] = {SEC_LIMITS, "idle_timeout_tcp_ms"},
    [K_L_MAX_FRAMES_PER_READ] = {SEC_LIMITS, "max_frames_per_read"},
    [K_L_INPUT_SOFT] = {SEC_LIMITS, "input_soft"},
    [K_L_INPUT_SOFT_MS] = {SEC_LIMITS, "input_soft_ms"},
    [K_L_MAX_REPUBLISH] = {SEC_LIMITS, "max_republish"},
    [K_M_LISTEN] = {SEC_METRICS, "listen"},
};

/* --------------------------------------------------------- [daemon] ... */

static const char *known_keys(enum section_kind sec, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int k = 0; k < K__COUNT; k++) {
        if (keys[k].sec != sec)
            continue;
        int w = snprintf(buf + n, len - n, "%s%s", n ? ", " : "", keys[k].name);
        if (w < 0 || (size_t)w >= len - n)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* A whole number from min to max into *out, or false after an error that
 * gives the range, then note (" (bytes)"), so bound and message agree. */
static bool whole_number(struct parser *p, enum key_id k, const char *v,
                         unsigned long long min, unsigned long long max, const char *note,
                         unsigned long long *out)
{
    if (fb_config_parse_ulong(v, min, max, out))
        return true;
    fail(p, p->lineno, "[%s] %s must be a whole number from %llu to %llu%s, not '%s'",
         section_names[keys[k].sec], keys[k].name, min, max, note, v);
    return false;
}

static int fixed_key(struct parser *p, enum key_id k, const char *v)
{
    struct fb_config *c = p->c;
    const char *sec = section_names[keys[k].sec];
    const char *name = keys[k].name;
    unsigned long long u;
    int line = p->lineno;

    switch (k) {
    case K_WORKERS:
        if (!whole_number(p, k, v, 0, 256, " (0 = one per CPU)", &u))
            return p->rc;
        c->workers = (unsigned)u;
        break;
    case K_MAX_FRAME:
        if (!whole_number(p, k, v, 16, 1073741824ull, " (bytes)", &u))
            return p->rc;
        c->max_frame = (uint32_t)u;
        break;
    case K_MAX_DEPTH:
        if (!whole_number(p, k, v, 1, 1024, "", &u))
            return p->rc;
        c->max_depth = (unsigned)u;
        break;
    case K_BLOCKING_THREADS:
        if (!whole_number(p, k, v, 1, 256, "", &u))
            return p->rc;
        c->blocking_threads = (unsigned)u;
        break;
    case K_HANDLER_DEADLINE_MS:
        if (!whole_number(p, k, v, 0, 86400000, " (milliseconds, 0 = off)", &u))
            return p->rc;
        c->handler_deadline_ms = (uint32_t)u;
        break;
    case K_QUARANTINE_AFTER:
        if (!whole_number(p, k, v, 0, 1000000, " (0 = off)", &u))
            return p->rc;
        c->quarantine_after = (uint32_t)u;
        break;
    case K_LOG_LEVEL:
        if (!fb_config_parse_log_level(v, &c->log_level))
            return fail(p, line,
                        "[%s] %s must be error, warn, info or debug, "
                        "not '%s'",
                        sec, name, v);
        break;
    case K_RUNTIME_DIR:
    case K_STATE_DIR:
    case K_TCP_KEY_FILE:
        if (!*v)
            return fail(p, line, "[%s] %s must not be empty", sec, name);
        fb_config_set_str(p,
                          k == K_RUNTIME_DIR ? &c->runtime_dir
                          : k == K_STATE_DIR ? &c->state_dir
                                             : &c->tcp_key_file,
                          v, false);
        break;
    case K_UNIX:
    case K_SOCKET:
        /* [listen] unix may be empty: no Unix listener (TCP only) */
        if (k == K_SOCKET && !*v)
            return fail(p, line, "[%s] %s must not be empty", sec, name);
        if (strlen(v) > SOCK_PATH_MAX)
            return fail(p, line,
                        "[%s] %s: the path is %zu bytes, longer than "
                        "the %zu a Unix socket address holds",
                        sec, name, strlen(v), SOCK_PATH_MAX);
        fb_config_set_str(p, k == K_UNIX ? &c->unix_path : &c->control_socket, v,
                          k == K_UNIX);
        break;
    case K_UNIX_MODE:
    case K_MODE:
        if (!fb_config_parse_mode(v, k == K_MODE ? &c->control_mode : &c->unix_mode))
            return fail(p, line,
                        "[%s] %s must be an octal file mode from 0 to "
                        "0777, not '%s'",
                        sec, name, v);
        break;
    case K_TCP: {
        free(c->tcp);
        free(c->tcp_host);
        c->tcp = c->tcp_host = NULL;
        c->tcp_port = 0;
        if (!*v)
            break; /* empty = no TCP listener */
        const char *why =
            fb_config_parse_tcp(v, &c->tcp_host, &c->tcp_port, &p->tcp_loopback);
        if (why)
            return fail(p, line, "[%s] %s = %s: %s", sec, name, v, why);
        fb_config_set_str(p, &c->tcp, v, false);
        break;
    }
    case K_TCP_AUTH:
        if (strcmp(v, "key") == 0)
            c->tcp_auth = FB_TCP_AUTH_KEY;
        else if (strcmp(v, "none") == 0)
            c->tcp_auth = FB_TCP_AUTH_NONE;
        else
            return fail(p, line, "[%s] %s must be key or none, not '%s'", sec, name, v);
        break;
    case K_GROUP:
        if (!*v)
            return fail(p, line,
                        "[%s] %s must not be empty (leave it out for "
                        "no group)",
                        sec, name);
        for (const char *s = v; *s; s++)
            if (isspace((unsigned char)*s) || *s == ':')
                return fail(p, line, "[%s] %s '%s' is not a group name", sec, name, v);
        fb_config_set_str(p, &c->control_group, v, false);
        break;
    case K_M_LISTEN: {
        /* empty = no HTTP listener, as when the key is left out */
        free(c->metrics_listen);
        free(c->metrics_host);
        c->metrics_listen = c->metrics_host = NULL;
        c->metrics_port = 0;
        if (!*v)
            break;
        bool loopback;
        const char *why =
            fb_config_parse_hostport0(v, &c->metrics_host, &c->metrics_port, &loopback);
        if (why)
            return fail(p, line, "[%s] %s = %s: %s", sec, name, v, why);
        fb_config_set_str(p, &c->metrics_listen, v, false);
        break;
    }
    case K_MAX_REPLY:
        /* Not above what every control client is built to read. */
        if (!whole_number(p, k, v, 4096, FIDBUS_CONTROL_REPLY_MAX, " (bytes)", &u))
            return p->rc;
        c->control_max_reply = (uint32_t)u;
        break;
    default:
        break;
    }
    return p->rc;
}

/* ------------------------------------------------------ [plugin NAME] */

static struct fb_plugin_conf *cur_plugin(struct parser *p)
{
    return &p->c->plugins[p->c->nplugins - 1];
}

static int plugin_key(struct parser *p, const char *k, const char *v)
{
    struct fb_plugin_conf *pc = cur_plugin(p);

    for (size_t i = 0; i < pc->nkeys; i++)
        if (strcmp(pc->keys[i].key, k) == 0)
            return fail(p, p->lineno, "[plugin %s] key '%s' is set twice", pc->name, k);
    /* nkeys counts path once it is set: the limit is on the others */
    size_t others = pc->nkeys - (pc->path ? 1 : 0);
    if (strcmp(k, "path") != 0 && others >= FB_PLUGIN_KEYS_MAX)
        return fail(p, p->lineno, "[plugin %s] has more than %d keys besides path",
                    pc->name, FB_PLUGIN_KEYS_MAX);
    if (strcmp(k, "path") == 0) {
        if (!*v)
            return fail(p, p->lineno, "[plugin %s] path must not be empty", pc->name);
        if (!fb_config_set_str(p, &pc->path, v, false))
            return p->rc;
    }
    /* the daemon's key (plugin_loader.c): its functions' namespace */
    if (strcmp(k, "namespace") == 0 && !fidbus_name_valid(v))
        return fail(p, p->lineno,
                    "[plugin %s] namespace '%.80s' must be 1-64 bytes of [A-Za-z0-9_-]",
                    pc->name, v);
    struct fb_kv *kv = realloc(pc->keys, (pc->nkeys + 1) * sizeof *kv);
    if (!kv)
        return fail_nomem(p);
    pc->keys = kv;
    kv[pc->nkeys].key = strdup(k);
    kv[pc->nkeys].value = strdup(v);
    if (!kv[pc->nkeys].key || !kv[pc->nkeys].value) {
        free(kv[pc->nkeys].key);
        free(kv[pc->nkeys].value);
        return fail_nomem(p);
    }
    pc->nkeys++;
    return 0;
}

/* ------------------------------------------------------------ sections */

static void finish_section(struct parser *p)
{
    if (failed(p))
        return;
    if (p->sec == SEC_PLUGIN && !cur_plugin(p)->path)
        fail(p, p->sec_line, "[plugin %s] missing 'path' (the plugin's .so file)",
             cur_plugin(p)->name);
    else if (p->sec == SEC_ROUTE && p->in_route)
        fb_config_route_finish(p);
    else if (p->sec == SEC_REMOTE)
        fb_config_remote_end(p);
}

/* "[...]" from the raw line: start points at '['. */
static int begin_section(struct parser *p, char *start)
{
    finish_section(p);
    if (failed(p))
        return p->rc;
    p->last_key_valid = false;

    char *rb = strchr(start, ']');
    if (!rb)
        return fail(p, p->lineno, "section header without ']'");
    char *after = rb + 1;
    while (isspace((unsigned char)*after))
        after++;
    if (*after && *after != ';' && *after != '#')
        return fail(p, p->lineno, "unexpected text '%s' after the section header", after);
    *rb = '\0';
    char *word = start + 1;
    while (isspace((unsigned char)*word))
        word++;
    char *we = word;
    while (*we && !isspace((unsigned char)*we))
        we++;
    char *arg = we;
    while (isspace((unsigned char)*arg))
        arg++;
    char *ae = arg + strlen(arg);
    while (ae > arg && isspace((unsigned char)ae[-1]))
        ae--;
    *ae = '\0';
    *we = '\0';

    enum section_kind sec = SEC_NONE;
    for (int s = SEC_DAEMON; s < SEC__COUNT; s++)
        if (strcmp(word, section_names[s]) == 0)
            sec = (enum section_kind)s;
    if (sec == SEC_NONE)
        return fail(p, p->lineno,
                    "unknown section [%s] (expected [daemon], [listen], [control], "
                    "[limits], [metrics], [plugin NAME], [route NAME] or [remote NS])",
                    word);
    p->sec = sec;
    p->sec_line = p->lineno;

    if (sec == SEC_DAEMON || sec == SEC_LISTEN || sec == SEC_CONTROL ||
        sec == SEC_LIMITS || sec == SEC_METRICS) {
        if (*arg)
            return fail(p, p->lineno, "section [%s] takes no name", word);
        if (p->sec_seen[sec])
            return fail(p, p->lineno,
                        "section [%s] appears twice (first on "
                        "line %d)",
                        word, p->sec_first_line[sec]);
        p->sec_seen[sec] = true;
        p->sec_first_line[sec] = p->lineno;
        return 0;
    }

    if (sec == SEC_REMOTE) /* NS is a namespace or "*", not a route name */
        return fb_config_remote_begin(p, arg);
    if (!*arg)
        return fail(p, p->lineno, "section [%s] needs a name: [%s NAME]", word, word);
    if (!fb_route_name_valid(arg))
        return fail(p, p->lineno,
                    "%s name '%s' must be 1-64 bytes of "
                    "[A-Za-z0-9_.-]",
                    word, arg);

    struct fb_config *c = p->c;
    if (sec == SEC_PLUGIN) {
        for (size_t i = 0; i < c->nplugins; i++)
            if (strcmp(c->plugins[i].name, arg) == 0)
                return fail(p, p->lineno,
                            "plugin '%s' is defined twice (first "
                            "on line %d)",
                            arg, c->plugins[i].line);
        struct fb_plugin_conf *pl = realloc(c->plugins, (c->nplugins + 1) * sizeof *pl);
        if (!pl)
            return fail_nomem(p);
        c->plugins = pl;
        memset(&pl[c->nplugins], 0, sizeof *pl);
        pl[c->nplugins].line = p->lineno;
        pl[c->nplugins].name = strdup(arg);
        c->nplugins++; /* counted before the check so free sees it */
        if (!pl[c->nplugins - 1].name)
            return fail_nomem(p);
        return 0;
    }

    for (size_t i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i].name, arg) == 0)
            return fail(p, p->lineno,
                        "route '%s' is defined twice (first on "
                        "line %d)",
                        arg, c->routes[i].line);
    memset(&p->route, 0, sizeof p->route);
    memset(p->rkey_line, 0, sizeof p->rkey_line);
    p->route.mode = FB_MODE_ALL;
    p->route.line = p->lineno;
    p->route.name = strdup(arg);
    p->in_route = true;
    p->comma_line = 0;
    if (!p->route.name)
        return fail_nomem(p);
    return 0;
}

/* ------------------------------------------------------- inih plumbing */

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parser *p = user;
    (void)section; /* ours, from begin_section: libinih truncates names */
    if (failed(p))
        return 0;

    if (p->kind == LINE_CONT) {
        /* An indented line continues the previous key's value. Only the
         * lists can say what that means; elsewhere it is almost always an
         * indentation mistake. */
        if (p->sec == SEC_ROUTE && p->last_key_valid &&
            (p->last_key == K_R_TO || p->last_key == K_R_TAGS)) {
            char v[ERR_MAX];
            fb_config_cont_value(v, sizeof v, value);
            fb_config_route_list_chunk(p, p->last_key, v);
        } else if (p->sec == SEC_REMOTE) {
            char v[ERR_MAX];
            fb_config_cont_value(v, sizeof v, value);
            fb_config_remote_cont(p, v);
        } else {
            fail(p, p->lineno,
                 "unexpected indented line: only 'to' and 'tags' "
                 "of a route continue on indented lines");
        }
        return failed(p) ? 0 : 1;
    }

    if (p->comma_line && p->sec == SEC_REMOTE) {
        fb_config_remote_end(p);
        return 0;
    }
    if (p->comma_line) {
        fail(p, p->comma_line,
             "route '%s': the list ends with a comma but no "
             "indented continuation line follows",
             p->route.name);
        return 0;
    }
    p->last_key_valid = false;

    char kn[ERR_MAX];
    switch (p->sec) {
    case SEC_NONE:
        fail(p, p->lineno, "key '%s' outside any section", name);
        break;
    case SEC_PLUGIN:
        plugin_key(p, name, value);
        break;
    case SEC_REMOTE:
        fb_config_remote_key(p, name, value);
        break;
    default: {
        int k;
        for (k = 0; k < K__COUNT; k++)
            if (keys[k].sec == p->sec && strcmp(keys[k].name, name) == 0)
                break;
        const char *sn = section_names[p->sec];
        if (k == K__COUNT) {
            if (p->sec == SEC_ROUTE)
                fail(p, p->lineno, "route '%s': unknown key '%s' (known: %s)",
                     p->route.name, name, known_keys(p->sec, kn, sizeof kn));
            else
                fail(p, p->lineno, "unknown key '%s' in [%s] (known: %s)", name, sn,
                     known_keys(p->sec, kn, sizeof kn));
            break;
        }
        int *seen = p->sec == SEC_ROUTE ? p->rkey_line : p->key_line;
        if (seen[k]) {
            if (p->sec == SEC_ROUTE)
                fail(p, p->lineno,
                     "route '%s': key '%s' is set twice (first on "
                     "line %d)",
                     p->route.name, name, seen[k]);
            else
                fail(p, p->lineno, "[%s] key '%s' is set twice (first on line %d)", sn,
                     name, seen[k]);
            break;
        }
        seen[k] = p->lineno;
        p->last_key = (enum key_id)k;
        p->last_key_valid = true;
        if (p->sec == SEC_ROUTE)
            fb_config_route_key(p, (enum key_id)k, value);
        else if (p->sec == SEC_LIMITS)
            fb_config_limit_key(p, (enum key_id)k, name, value);
        else
            fixed_key(p, (enum key_id)k, value);
        break;
    }
    }
    return failed(p) ? 0 : 1;
}

/*
 * libinih's line source: fb_config_read_line() reads and classifies each
 * line; section headers are handled here, before libinih sees the keys
 * that follow. Returning NULL after an error stops the parse there.
 */
static char *reader(char *str, int num, void *stream)
{
    struct parser *p = stream;
    char *section;
    char *line = fb_config_read_line(p, str, num, &section);

    if (line && section) {
        begin_section(p, section);
        return failed(p) ? NULL : line;
    }
    return line;
}

/* --------------------------------------------------------- whole file */

static void set_defaults(struct fb_config *c)
{
    c->max_frame = FIDBUS_MAX_FRAME_DEFAULT;
    c->max_depth = FIDBUS_MAX_DEPTH_DEFAULT;
    c->log_level = FB_LOG_INFO;
    c->blocking_threads = 4;
    c->handler_deadline_ms = 5000;
    c->unix_mode = 0660;
    c->control_mode = 0600;
    c->control_max_reply = FIDBUS_CONTROL_REPLY_MAX;
    c->tcp_auth = FB_TCP_AUTH_KEY;
    fb_config_limits_defaults(c);
}

/* "DIR/leaf" as the default socket path under a configured runtime dir. */
static int default_sock(struct parser *p, char **slot, const char *leaf, const char *what)
{
    const char *dir = p->c->runtime_dir;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    if (asprintf(slot, "%.*s/%s", (int)dl, dir, leaf) < 0) {
        *slot = NULL;
        return fail_nomem(p);
    }
    if (strlen(*slot) > SOCK_PATH_MAX)
        return fail(p, p->key_line[K_RUNTIME_DIR],
                    "the default %s %s is %zu "
                    "bytes, longer than the %zu a Unix socket address holds; set "
                    "it explicitly",
                    what, *slot, strlen(*slot), SOCK_PATH_MAX);
    return 0;
}

/* Checks that need the whole file, and the defaults that depend on it. */
/*
 * Every plugin and route must also pass the control socket's decoders
 * (spec_cbor.h): state.cbor stores them in that shape, and a section this
 * parser took but the state loader refused would get the state set aside
 * at the next start. Round-tripping each one through CBOR keeps the two
 * rule sets one.
 */
static int check_representable(struct parser *p)
{
    struct fb_config *c = p->c;
    char why[512];
    for (size_t i = 0; i < c->nplugins; i++) {
        struct fb_plugin_conf tmp;
        cbor_item_t *it = fb_plugin_conf_to_cbor(&c->plugins[i]);
        if (!it)
            return fail_nomem(p);
        int rc = fb_plugin_conf_from_cbor(it, &tmp, why, sizeof why);
        cbor_decref(&it);
        if (rc < 0)
            return fail_nomem(p);
        if (rc)
            return fail(p, c->plugins[i].line, "[plugin %s] %s", c->plugins[i].name, why);
        fb_plugin_conf_clear(&tmp);
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        struct fb_route_spec tmp;
        cbor_item_t *it = fb_route_to_cbor(&c->routes[i]);
        if (!it)
            return fail_nomem(p);
        int rc = fb_route_from_cbor(it, &tmp, why, sizeof why);
        cbor_decref(&it);
        if (rc < 0)
            return fail_nomem(p);
        if (rc)
            return fail(p, c->routes[i].line, "%s", why);
        fb_route_spec_clear(&tmp);
    }
    return 0;
}

static int finish_file(struct parser *p)
{
    struct fb_config *c = p->c;

    if (!c->runtime_dir && !fb_config_set_str(p, &c->runtime_dir, "/run/fidbus", false))
        return p->rc;
    if (!c->state_dir && !fb_config_set_str(p, &c->state_dir, "/var/lib/fidbus", false))
        return p->rc;
    /* Sockets follow runtime_dir unless set: a config that moves the
     * runtime dir (a user's own instance) moves its sockets with it. */
    if (!p->key_line[K_UNIX])
        default_sock(p, &c->unix_path, "bus.sock", "[listen] unix");
    if (!failed(p) && !p->key_line[K_SOCKET])
        default_sock(p, &c->control_socket, "control.sock", "[control] socket");
    if (failed(p))
        return p->rc;

    if (!c->unix_path && !c->tcp)
        return fail(p, p->key_line[K_UNIX],
                    "[listen] no listener: unix is empty "
                    "and tcp is not set");

    if (c->tcp) {
        int auth_line =
            p->key_line[K_TCP_AUTH] ? p->key_line[K_TCP_AUTH] : p->key_line[K_TCP];
        if (c->tcp_auth == FB_TCP_AUTH_NONE && !p->tcp_loopback)
            return fail(p, auth_line,
                        "[listen] tcp_auth = none is only allowed "
                        "on a loopback address (127.0.0.0/8, [::1] or localhost), "
                        "not on %s",
                        c->tcp);
        if (c->tcp_auth == FB_TCP_AUTH_KEY) {
            if (!c->tcp_key_file)
                return fail(p, auth_line,
                            "[listen] tcp_auth = key needs tcp_key_file, the file "
                            "holding the shared key");
            int rc = fidbus_key_load(c->tcp_key_file, &c->tcp_key, &c->tcp_key_len);
            if (rc < 0)
                return fail(p, p->key_line[K_TCP_KEY_FILE],
                            "[listen] tcp_key_file %s: %s", c->tcp_key_file,
                            fidbus_key_strerror(rc));
        }
    }

    /* A group is allowed in only if it can connect: with `group` set and
     * no `mode`, the socket is group-writable. */
    if (c->control_group && !p->key_line[K_MODE])
        c->control_mode = 0660;

    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
    }
    if (fb_config_limits_finish(p) || fb_config_remote_finish(p))
        return p->rc;
    return check_representable(p);
}

static int load(struct parser *p, struct fb_config **out, char *err, size_t errlen)
{
    struct fb_config *c = calloc(1, sizeof *c);
    int rc;

    *out = NULL;
    if (!c || !(c->file = strdup(p->file))) {
        free(c);
        fb_set_err(err, errlen, "%s: out of memory", p->file);
        return -ENOMEM;
    }
    set_defaults(c);
    p->c = c;

    rc = ini_parse_stream(reader, p, on_key, p);
    if (rc == -2)
        fail_nomem(p);
    else if (rc > 0 && !failed(p))
        /* libinih refused a line our reader let through; the reader makes
         * the same tests, so this is a backstop */
        fail(p, rc,
             "syntax error: expected [section], 'key = value' or a "
             "comment");
    if (!failed(p))
        finish_section(p);
    if (!failed(p))
        finish_file(p);

    fb_route_spec_clear(&p->route);
    free(p->raw);
    p->raw = NULL;

    if (failed(p)) {
        if (err && errlen) {
            if (p->err_line > 0)
                fb_set_err(err, errlen, "%s:%d: %s", p->file, p->err_line, p->err);
            else
                fb_set_err(err, errlen, "%s: %s", p->file, p->err);
        }
        fb_config_free(c);
        return p->rc;
    }
    *out = c;
    return 0;
}

/* A config file bigger than this is not a config file. */
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)

int fb_config_load_file(const char *path, struct fb_config **out, char *err,
                        size_t errlen)
{
    /* Read whole, so the hash state.cbor records is of exactly the bytes
     * parsed (README, "the latest intent wins"). */
    *out = NULL;
    FILE *fp = fopen(path, "re");
    if (!fp) {
        int e = errno;
        if (err && errlen)
            fb_set_err(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *n = ncap <= CONFIG_MAX_BYTES + 8192 ? realloc(text, ncap) : NULL;
            if (!n) {
                rc = ncap <= CONFIG_MAX_BYTES + 8192 ? -ENOMEM : -EFBIG;
                break;
            }
            text = n;
            cap = ncap;
        }
        size_t r = fread(text + len, 1, cap - len - 1, fp);
        len += r;
        if (r == 0) {
            if (ferror(fp))
                rc = -EIO;
            break;
        }
        if (len > CONFIG_MAX_BYTES) {
            rc = -EFBIG;
            break;
        }
    }
    fclose(fp);
    if (rc == 0 && memchr(text, '\0', len))
        rc = -EINVAL;
    if (rc < 0) {
        if (err && errlen)
            fb_set_err(err, errlen, "%s: cannot read: %s", path,
                       rc == -EINVAL ? "it contains a NUL byte" : strerror(-rc));
        free(text);
        return rc;
    }
    text[len] = '\0';
    rc = fb_config_load_string(text, path, out, err, errlen);
    free(text);
    return rc;
}

int fb_config_load_string(const char *text, const char *name, struct fb_config **out,
                          char *err, size_t errlen)
{
    struct parser p = {.file = name ? name : "<string>"};
    p.src.text = text ? text : "";
    int rc = load(&p, out, err, errlen);
    if (rc == 0)
        fb_sha256_hex(p.src.text, strlen(p.src.text), (*out)->hash);
    return rc;
}

struct fb_config *fb_config_free(struct fb_config *c)
{
    if (!c)
        return NULL;
    free(c->file);
    free(c->runtime_dir);
    free(c->state_dir);
    free(c->unix_path);
    free(c->tcp);
    free(c->tcp_host);
    free(c->tcp_key_file);
    fidbus_key_free(c->tcp_key, c->tcp_key_len);
    free(c->control_socket);
    free(c->metrics_listen);
    free(c->metrics_host);
    free(c->control_group);
    for (size_t i = 0; i < c->nplugins; i++) {
        struct fb_plugin_conf *pc = &c->plugins[i];
        free(pc->name);
        free(pc->path);
        for (size_t j = 0; j < pc->nkeys; j++) {
            free(pc->keys[j].key);
            free(pc->keys[j].value);
        }
        free(pc->keys);
    }
    free(c->plugins);
    for (size_t i = 0; i < c->nroutes; i++)
        fb_route_spec_clear(&c->routes[i]);
    free(c->routes);
    fb_config_remote_free(c);
    free(c);
    return NULL;
}
