/*
 * ctl/control.c -- fidbusctl's control commands.
 *
 * status, stats, plugin ..., func list, route ... and config ...: each
 * is one row of control_cmds, which says the words typed, the protocol's
 * command name, the positional arguments and which options apply. The
 * command line becomes the REQUEST's args map (built as JSON, sent as
 * CBOR); the REPLY's result is rendered by render.c, or printed as
 * one line of JSON with --json (or, for stats --prometheus, as Prometheus
 * text by prom/prom.c).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <fidbus/client.h>

#include "prom.h"
#include "render.h"
#include "fidbusctl.h"
#include "json_cbor.h"

/* Options a control command may take (bits of control_cmd.opts). */
enum {
    CO_NAME = 1u << 0,
    CO_CONFIG = 1u << 1,
    CO_PATH = 1u << 2,
    CO_TAG = 1u << 3,
    CO_TO = 1u << 4,
    CO_MODE = 1u << 5,
    CO_SPLIT_BY = 1u << 6,
    CO_PRIORITY = 1u << 7,
    CO_SIGNATURE = 1u << 8,
    CO_REPLACE = 1u << 9,
    CO_APPLY = 1u << 10,
    CO_PROMETHEUS = 1u << 11,
    CO_DRY_RUN = 1u << 12,
    CO_OPTARG = 1u << 30, /* not an option: one more positional argument may follow */
    CO_MORE = 1u << 31,   /* not an option: nargs or more positional arguments */
};

struct control_cmd {
    const char *group, *verb; /* the words typed; verb NULL for one word */
    const char *command;      /* the command's name in proto/control.md */
    const char *args;         /* positional arguments, for usage lines */
    unsigned nargs;           /* exactly these; at least these with CO_MORE */
    unsigned opts;
};

static const struct control_cmd control_cmds[] = {
    {"status", NULL, "status", "", 0, 0},
    {"stats", NULL, "stats", " [--prometheus]", 0, CO_PROMETHEUS},
    {"plugin", "list", "plugin.list", "", 0, 0},
    {"plugin", "load", "plugin.load", " PATH [--name NAME] [--config JSON]", 1,
     CO_NAME | CO_CONFIG},
    {"plugin", "unload", "plugin.unload", " NAME", 1, 0},
    {"plugin", "reload", "plugin.reload", " NAME [--path PATH]", 1, CO_PATH},
    {"func", "list", "func.list", "", 0, 0},
    {"func", "release", "func.release", " ID", 1, 0},
    {"func", "members", "func.members", " [ID]", 0, CO_OPTARG},
    {"route", "list", "route.list", "", 0, 0},
    {"route", "add", "route.add",
     " NAME EVENT [--tag K=V]... --to TARGET[:WEIGHT]... [--mode all|split]"
     " [--split-by TAG] [--priority N] [--signature HEX]",
     2, CO_TAG | CO_TO | CO_MODE | CO_SPLIT_BY | CO_PRIORITY | CO_SIGNATURE},
    {"route", "del", "route.del", " NAME", 1, 0},
    {"route", "apply", "route.apply", " FILE|- [--replace]", 1, CO_REPLACE},
    /* route.list, then one route.apply (route_weight.c) */
    {"route", "weight", "route.apply", " ROUTE TARGET=WEIGHT...", 2, CO_MORE},
    {"route", "test", "route.test", " EVENT [--tag K=V]... [--apply FILE]", 1,
     CO_TAG | CO_APPLY},
    {"config", "reload", "config.reload", " [--dry-run]", 0, CO_DRY_RUN},
    {"config", "export", "config.export", "", 0, 0},
    {"conn", "list", "conn.list", "", 0, 0},
};

bool fbctl_is_control_group(const char *word)
{
    for (size_t i = 0; i < sizeof(control_cmds) / sizeof(control_cmds[0]); i++)
        if (strcmp(control_cmds[i].group, word) == 0)
            return true;
    return false;
}

/*
 * A JSON or CBOR file as a JSON object: JSON when its first non-blank
 * byte is '{', CBOR otherwise (route apply accepts both; byte strings in
 * CBOR would become hex text, but route specs hold none).
 */
static int load_args_file(const char *opt, const char *path, json_t **out)
{
    struct fidbus_buf b = {0};
    char why[512];
    int rc = fbctl_read_file(opt, path, &b);
    if (rc)
        return rc;
    size_t i = 0;
    while (i < b.len && isspace(b.data[i]))
        i++;
    if (i < b.len && b.data[i] == '{') {
        json_error_t e;
        *out = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
        if (!*out)
            rc = fbctl_fail(EXIT_USAGE, "%s '%s': line %d, column %d: %s", opt, path,
                            e.line, e.column, e.text);
    } else if (fbctl_result_json(b.data, b.len, out, why, sizeof(why)) < 0) {
        rc = fbctl_fail(EXIT_USAGE, "%s '%s': neither a JSON object nor CBOR: %s", opt,
                        path, why);
    }
    if (rc == 0 && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        rc = fbctl_fail(EXIT_USAGE, "%s '%s': expected a map / JSON object", opt, path);
    }
    fidbus_buf_free(&b);
    return rc;
}

/*
 * A plugin path as the daemon needs it: absolute, since its working
 * directory is not ours. Relative to ours, not resolved further (a
 * symlink stays a symlink, so a reload follows it again).
 */
static json_t *abs_path(const char *path)
{
    if (path[0] == '/')
        return json_string(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return json_string(path); /* the daemon says why it cannot use it */
    size_t n = strlen(cwd);
    char *full = malloc(n + strlen(path) + 2);
    if (!full)
        return json_string(path);
    sprintf(full, "%s/%s", cwd, path[0] == '.' && path[1] == '/' ? path + 2 : path);
    json_t *j = json_string(full);
    free(full);
    return j;
}

/* K=V into obj[K] = V. */
static int add_kv(const char *what, const char *arg, json_t *obj)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return fbctl_fail(EXIT_USAGE, "invalid %s '%s': expected KEY=VALUE", what, arg);
    char *k = strndup(arg, (size_t)(eq - arg));
    if (!k)
        return fbctl_fail(EXIT_USAGE, "out of memory");
    if (json_object_get(obj, k)) {
        int rc = fbctl_fail(EXIT_USAGE, "%s '%s' given twice", what, k);
        free(k);
        return rc;
    }
    json_object_set_new(obj, k, json_string(eq + 1));
    free(k);
    return 0;
}

/* The command's options (after its words) into args / route. */
static int control_options(struct ctl *ctl, const struct control_cmd *cc, int argc,
                           char **argv, json_t *args, json_t *route, json_t *tags,
                           json_t *to, bool *help, bool *prom)
{
    enum {
        O_NAME = 1000,
        O_CONFIG,
        O_PATH,
        O_TAG,
        O_TO,
        O_MODE,
        O_SPLIT_BY,
        O_PRIORITY,
        O_SIGNATURE,
        O_REPLACE,
        O_APPLY,
        O_PROMETHEUS,
        O_DRY_RUN,
    };
    static const struct option opts[] = {
        CTL_GLOBAL_OPTIONS,
        {"name", required_argument, NULL, O_NAME},
        {"config", required_argument, NULL, O_CONFIG},
        {"path", required_argument, NULL, O_PATH},
        {"tag", required_argument, NULL, O_TAG},
        {"to", required_argument, NULL, O_TO},
        {"mode", required_argument, NULL, O_MODE},
        {"split-by", required_argument, NULL, O_SPLIT_BY},
        {"priority", required_argument, NULL, O_PRIORITY},
        {"signature", required_argument, NULL, O_SIGNATURE},
        {"replace", no_argument, NULL, O_REPLACE},
        {"apply", required_argument, NULL, O_APPLY},
        {"prometheus", no_argument, NULL, O_PROMETHEUS},
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c, rc, li = 0;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &li)) != -1) {
        if (c >= O_NAME && !(cc->opts & (1u << (c - O_NAME))))
            return fbctl_fail(
                EXIT_USAGE, "%s%s%s: option '--%s' does not apply (try --help)",
                cc->group, cc->verb ? " " : "", cc->verb ? cc->verb : "", opts[li].name);
        if (fbctl_global_option(ctl, c))
            continue;
        switch (c) {
        case O_NAME:
            json_object_set_new(args, "name", json_string(optarg));
            break;
        case O_PATH:
            json_object_set_new(args, "path", abs_path(optarg));
            break;
        case O_CONFIG: {
            json_error_t e;
            json_t *j = json_loads(optarg, JSON_REJECT_DUPLICATES, &e);
            if (!json_is_object(j)) {
                json_decref(j);
                return fbctl_fail(EXIT_USAGE, "invalid --config: %s",
                                  j ? "expected a JSON object" : e.text);
            }
            json_object_set_new(args, "config", j);
            break;
        }
        case O_TAG:
            rc = add_kv("tag", optarg, tags);
            if (rc)
                return rc;
            break;
        case O_TO:
            json_array_append_new(to, json_string(optarg));
            break;
        case O_MODE:
            json_object_set_new(route, "mode", json_string(optarg));
            break;
        case O_SPLIT_BY:
            json_object_set_new(route, "split_by", json_string(optarg));
            break;
        case O_PRIORITY: {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end)
                return fbctl_fail(EXIT_USAGE,
                                  "invalid --priority '%s': expected an integer", optarg);
            json_object_set_new(route, "priority", json_integer(v));
            break;
        }
        case O_SIGNATURE:
            json_object_set_new(route, "signature", json_string(optarg));
            break;
        case O_REPLACE:
            json_object_set_new(args, "replace", json_true());
            break;
        case O_APPLY: {
            json_t *a;
            rc = load_args_file("--apply", optarg, &a);
            if (rc)
                return rc;
            json_object_set_new(args, "apply", a);
            break;
        }
        case O_PROMETHEUS:
            *prom = true;
            break;
        case O_DRY_RUN:
            json_object_set_new(args, "dry_run", json_true());
            break;
        case 'h':
            *help = true;
            return 0;
        default:
            return fbctl_bad_option(c, argv);
        }
    }
    return 0;
}

/* Positional arguments into args, by command. */
static int control_positional(const struct control_cmd *cc, char **pos, json_t *args,
                              json_t *route)
{
    if (strcmp(cc->command, "plugin.load") == 0)
        json_object_set_new(args, "path", abs_path(pos[0]));
    else if (strcmp(cc->command, "route.add") == 0) {
        json_object_set_new(route, "name", json_string(pos[0]));
        json_object_set_new(route, "event", json_string(pos[1]));
    } else if (strcmp(cc->command, "route.test") == 0)
        json_object_set_new(args, "event", json_string(pos[0]));
    else if (strcmp(cc->command, "func.release") == 0)
        json_object_set_new(args, "id", json_string(pos[0]));
    else if (strcmp(cc->command, "func.members") == 0) {
        if (pos[0])
            json_object_set_new(args, "id", json_string(pos[0]));
    } else if (strcmp(cc->command, "route.apply") == 0) {
        json_t *file;
        int rc = load_args_file("route apply", pos[0], &file);
        if (rc)
            return rc;
        /* the file is the args map; flags given here win */
        json_object_update_missing(args, file);
        json_decref(file);
    } else if (cc->nargs == 1)
        json_object_set_new(args, "name", json_string(pos[0]));
    return 0;
}

int fbctl_control_open(const struct ctl *ctl, struct fidbus_client **out)
{
    char addr[4200];
    if (strncmp(ctl->socket, "unix:", 5) == 0)
        snprintf(addr, sizeof(addr), "%s", ctl->socket);
    else
        snprintf(addr, sizeof(addr), "unix:%s", ctl->socket);
    /* a reload drains in-flight calls: give the daemon longer than a publish */
    struct fidbus_client_opts opts = {.name = "fidbusctl", .timeout_ms = 60000};
    int rc = fidbus_client_connect(out, addr, &opts);
    if (rc < 0) {
        *out = NULL;
        if (rc == -EINVAL || rc == -ENAMETOOLONG)
            return fbctl_fail(EXIT_USAGE, "invalid control socket path '%s'",
                              ctl->socket);
        /* a protocol code is the daemon's refusal, anything else unreachable */
        return fbctl_fail(fidbus_error_code(rc) ? EXIT_BUS : EXIT_CONN,
                          "cannot connect to the control socket %s: %s", ctl->socket,
                          fbctl_connect_why(rc));
    }
    return EXIT_OK;
}

int fbctl_control_request(const struct ctl *ctl, struct fidbus_client *cl,
                          const char *words, const char *command, const json_t *args,
                          json_t **result, int *code)
{
    uint8_t *abuf = NULL;
    size_t alen = 0;
    *result = NULL;
    if (code)
        *code = 0;
    if (args && json_object_size(args) > 0) {
        char why[512];
        char *text = json_dumps(args, JSON_COMPACT);
        int rc =
            text ? fbctl_json_to_cbor(text, strlen(text), &abuf, &alen, why, sizeof(why))
                 : -ENOMEM;
        free(text);
        if (rc < 0)
            return fbctl_fail(EXIT_USAGE, "%s: cannot encode the arguments: %s", words,
                              rc == -1 ? why : strerror(-rc));
    }

    uint8_t *res = NULL;
    size_t res_len = 0;
    int rc = fidbus_request(cl, command, abuf, alen, &res, &res_len);
    free(abuf);
    int status = EXIT_OK;
    int err = fidbus_error_code(rc);
    if (err) {
        if (code) {
            /* the caller decides what to say (a retry, or its own words) */
            *code = err;
            status = EXIT_BUS;
        } else {
            status =
                fbctl_refused(ctl, words, err, fidbus_client_last_error(cl), false, 0);
        }
    } else if (rc == -EMSGSIZE) {
        /* nothing was sent: the library refuses a frame over max_frame */
        status = fbctl_fail(EXIT_USAGE,
                            "%s failed: the request is %zu bytes, larger than the "
                            "maximum frame (%u bytes); split it (route apply: a few "
                            "files, or fewer routes per file)",
                            words, alen, FIDBUS_MAX_FRAME_DEFAULT);
    } else if (rc < 0) {
        status = fbctl_lost(words, "daemon", ctl->socket, rc);
    } else {
        char why[512];
        if (fbctl_result_json(res, res_len, result, why, sizeof(why)) < 0)
            status =
                fbctl_fail(EXIT_BUS, "%s failed: the daemon's reply: %s", words, why);
    }
    free(res);
    return status;
}

json_t *fbctl_func_names(const struct ctl *ctl, struct fidbus_client *cl)
{
    json_t *r = NULL;
    int code;
    if (fbctl_control_request(ctl, cl, "func list", "func.list", NULL, &r, &code) !=
        EXIT_OK) {
        json_decref(r);
        return NULL;
    }
    json_t *names = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "functions"), i, f)
    {
        const char *id = json_string_value(json_object_get(f, "id"));
        json_t *canon = json_object_get(f, "canonical");
        if (names && id && json_is_string(canon))
            json_object_set(names, id, canon);
    }
    json_decref(r);
    return names;
}

/* Commands whose text output names the funcIDs it shows (render.h). */
static bool wants_names(const char *command)
{
    return !strcmp(command, "route.test") || !strcmp(command, "plugin.list") ||
           !strcmp(command, "plugin.load") || !strcmp(command, "plugin.reload");
}

/* Sends the REQUEST and renders the REPLY (as Prometheus text with prom). */
static int control_call(const struct ctl *ctl, const char *words,
                        const struct control_cmd *cc, json_t *args, bool prom)
{
    struct fidbus_client *cl = NULL;
    int status = fbctl_control_open(ctl, &cl);
    if (status)
        return status;
    json_t *j = NULL;
    status = fbctl_control_request(ctl, cl, words, cc->command, args, &j, NULL);
    if (status == EXIT_OK) {
        if (ctl->json) {
            char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s)
                printf("%s\n", s);
            else
                status = fbctl_fail(EXIT_BUS, "%s: out of memory", words);
            free(s);
        } else if (prom) {
            fb_prom_render(stdout, j);
        } else {
            /* One more request, after the command: its reply shows bare
             * funcIDs, and a function gone in between stays bare. */
            json_t *names = wants_names(cc->command) ? fbctl_func_names(ctl, cl) : NULL;
            fbctl_render_table(stdout, cc->command, j, names);
            json_decref(names);
        }
    }
    json_decref(j);
    fidbus_client_close(cl);
    return fbctl_flush(status);
}

int fbctl_control(struct ctl *ctl, int argc, char **argv)
{
    const struct control_cmd *cc = NULL;
    const size_t ncmds = sizeof(control_cmds) / sizeof(control_cmds[0]);
    for (size_t i = 0; i < ncmds && !cc; i++) {
        if (strcmp(control_cmds[i].group, argv[0]) != 0)
            continue;
        if (!control_cmds[i].verb || (argc > 1 && !strcmp(control_cmds[i].verb, argv[1])))
            cc = &control_cmds[i];
    }
    if (!cc) {
        if (argc < 2 || argv[1][0] == '-')
            return fbctl_fail(EXIT_USAGE, "%s: missing subcommand (try --help)", argv[0]);
        return fbctl_fail(EXIT_USAGE, "unknown command '%s %s' (try --help)", argv[0],
                          argv[1]);
    }
    char words[64];
    snprintf(words, sizeof(words), "%s%s%s", cc->group, cc->verb ? " " : "",
             cc->verb ? cc->verb : "");
    int skip = cc->verb ? 1 : 0; /* getopt sees argv[0] as the program name */

    json_t *args = json_object(), *route = json_object(), *tags = json_object(),
           *to = json_array();
    bool help = false, prom = false;
    int rc = args && route && tags && to ? 0 : fbctl_fail(EXIT_USAGE, "out of memory");
    if (rc == 0)
        rc = control_options(ctl, cc, argc - skip, argv + skip, args, route, tags, to,
                             &help, &prom);
    if (rc == 0 && !help && prom && ctl->json)
        rc = fbctl_fail(EXIT_USAGE, "%s: --prometheus and --json do not go together",
                        words);
    if (rc == 0 && help) {
        printf("usage: fidbusctl [--socket CONTROL] [--json] %s%s\n", words, cc->args);
        goto out;
    }
    int npos = rc == 0 ? argc - skip - optind : 0;
    if (rc == 0 && npos < (int)cc->nargs)
        rc = fbctl_fail(EXIT_USAGE, "%s: missing argument (usage: %s%s)", words, words,
                        cc->args);
    else if (rc == 0 && npos > (int)cc->nargs && !(cc->opts & CO_MORE) &&
             !((cc->opts & CO_OPTARG) && npos == (int)cc->nargs + 1))
        rc = fbctl_fail(EXIT_USAGE, "%s: unexpected argument '%s'", words,
                        argv[skip + optind + cc->nargs]);
    if (rc == 0 && (cc->opts & CO_MORE)) {
        rc = fbctl_route_weight(ctl, words, argv + skip + optind, npos);
        goto out;
    }
    if (rc == 0)
        rc = control_positional(cc, argv + skip + optind, args, route);
    if (rc)
        goto out;

    if (json_object_size(tags)) {
        if (strcmp(cc->command, "route.add") == 0)
            json_object_set(route, "tags", tags);
        else
            json_object_set(args, "tags", tags);
    }
    if (json_array_size(to))
        json_object_set(route, "to", to);
    if (strcmp(cc->command, "route.add") == 0) {
        if (!json_array_size(to)) {
            rc = fbctl_fail(EXIT_USAGE, "route add: at least one --to TARGET is needed");
            goto out;
        }
        json_object_set(args, "route", route);
    }
    rc = control_call(ctl, words, cc, args, prom);
out:
    json_decref(args);
    json_decref(route);
    json_decref(tags);
    json_decref(to);
    return rc;
}
