/*
 * daemon/fidbusctl.c -- the command-line client.
 *
 *     fidbusctl [--socket CONTROL] [--bus ADDR] [--json] COMMAND ...
 *
 * `publish` talks to the bus; the control commands (status, stats,
 * plugin ..., func list, route ..., config ...) send one REQUEST to the
 * control socket and render its REPLY with ctl_render.c: a table for
 * people, the result map as one line of JSON with --json. Every design
 * command is sent as it is, even one this fidbusd does not implement yet:
 * its UNSUPPORTED reply is reported like any other failure, and the
 * command starts working when the daemon gains it.
 *
 * Contract for scripts: exit 0 on success; 1 when the daemon answered with
 * an error; 2 for a usage error (bad flag, JSON, hex, tag or event id)
 * found before anything is sent; 3 when the daemon cannot be reached, the
 * connection is lost or an answer times out. Every error is one line on
 * stderr starting "fidbusctl: ".
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cbor.h>
#include <jansson.h>

#include <fidbus/client.h>

#include "build_config.h"
#include "ctl_render.h"
#include "json_cbor.h"

enum {
    EXIT_OK = 0,
    EXIT_BUS = 1, /* the bus answered with an error */
    EXIT_USAGE = 2,
    EXIT_CONN = 3, /* cannot connect, connection lost, timeout */
};

/* Refuse to slurp more than this from --data-file: no frame is this big. */
#define MAX_FILE_BYTES (64u * 1024u * 1024u)

struct ctl {
    const char *socket; /* control socket */
    const char *bus;
    bool json;
    char socket_buf[4096];
    char bus_buf[4096];
};

static const char usage_text[] =
    "usage: fidbusctl [--socket CONTROL] [--bus ADDR] [--json] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  publish EVENT [--tag K=V]... [--data-json JSON | --data-hex HEX |\n"
    "                 --data-file FILE] [--ack]\n"
    "      publish one event; with --ack wait for the daemon's ACK and print\n"
    "      how many handlers succeeded\n"
    "  status | stats                      the daemon's state and counters\n"
    "  plugin list                         plugins and their funcIDs\n"
    "  plugin load PATH [--name NAME] [--config JSON]\n"
    "  plugin unload NAME\n"
    "  plugin reload NAME [--path PATH]\n"
    "  func list                           every function with its sighash\n"
    "  route list                          the running routes and generation\n"
    "  route add NAME EVENT [--tag K=V]... --to TARGET[:WEIGHT]...\n"
    "            [--mode all|split] [--split-by TAG] [--priority N]\n"
    "            [--signature HEX]\n"
    "  route del NAME\n"
    "  route apply FILE [--replace]        FILE: JSON or CBOR {add, del, replace}\n"
    "  route test EVENT [--tag K=V]... [--apply FILE]\n"
    "  config reload | config export\n"
    "\n"
    "options:\n"
    "  --bus ADDR       bus address: unix:PATH, PATH or tcp:HOST:PORT\n"
    "                   (default: $FIDBUS_BUS, else the first bus.sock found in\n"
    "                   $FIDBUS_RUNTIME_DIR, $XDG_RUNTIME_DIR/fidbus, /run/fidbus,\n"
    "                   /tmp/fidbus-$UID)\n"
    "  --socket PATH    control socket (default: $FIDBUS_CONTROL, else control.sock\n"
    "                   in the same places)\n"
    "  --json           machine-readable output on stdout\n"
    "  --help, --version\n"
    "\n"
    "payload (one CBOR item; none by default):\n"
    "  --data-json JSON  JSON text converted to CBOR\n"
    "  --data-hex HEX    CBOR bytes in hex (any case, whitespace ignored)\n"
    "  --data-file FILE  raw CBOR bytes from FILE ('-' reads stdin)\n"
    "\n"
    "exit status: 0 ok, 1 the daemon answered with an error, 2 usage error,\n"
    "3 cannot connect, connection lost or timeout\n";

static int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int status, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One line, whatever the server put in its message. */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    fprintf(stderr, "fidbusctl: %s\n", line);
    return status;
}

/*
 * $ENV, else NAME in the first runtime dir that has it (the same places
 * fidbusd picks, most specific first), else the system path.
 */
static const char *default_path(const char *env, const char *name, char *buf, size_t cap)
{
    const char *e = getenv(env);
    if (e && *e)
        return e;

    const char *rt = getenv("FIDBUS_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (rt && *rt) {
        snprintf(buf, cap, "%s/%s", rt, name);
        if (stat(buf, &st) == 0)
            return buf;
    }
    if (xdg && *xdg) {
        snprintf(buf, cap, "%s/fidbus/%s", xdg, name);
        if (stat(buf, &st) == 0)
            return buf;
    }
    snprintf(buf, cap, "/run/fidbus/%s", name);
    if (stat(buf, &st) == 0)
        return buf;
    snprintf(buf, cap, "/tmp/fidbus-%u/%s", (unsigned)getuid(), name);
    if (stat(buf, &st) == 0)
        return buf;
    snprintf(buf, cap, "/run/fidbus/%s", name);
    return buf;
}

/* getopt's complaint, in our one-line form. */
static int bad_option(int c, char **argv)
{
    const char *opt = argv[optind - 1];
    if (c == ':')
        return fail(EXIT_USAGE, "option '%s' needs an argument (try --help)", opt);
    if (optopt)
        return fail(EXIT_USAGE, "unknown option '-%c' (try --help)", optopt);
    return fail(EXIT_USAGE, "unknown option '%s' (try --help)", opt);
}

/* ------------------------------------------------------------ payload */

static int hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int parse_hex(const char *s, struct fidbus_buf *out)
{
    int hi = -1;
    for (size_t i = 0; s[i]; i++) {
        if (isspace((unsigned char)s[i]))
            continue;
        int d = hex_digit((unsigned char)s[i]);
        if (d < 0)
            return fail(EXIT_USAGE,
                        "invalid --data-hex: '%c' at position %zu is not a hex digit",
                        s[i], i + 1);
        if (hi < 0) {
            hi = d;
            continue;
        }
        uint8_t byte = (uint8_t)(hi << 4 | d);
        if (fidbus_buf_append(out, &byte, 1) < 0)
            return fail(EXIT_USAGE, "out of memory");
        hi = -1;
    }
    if (hi >= 0)
        return fail(EXIT_USAGE, "invalid --data-hex: odd number of hex digits");
    return 0;
}

/* The whole of path ('-' = stdin); `what` names it in errors. */
static int read_file(const char *what, const char *path, struct fidbus_buf *out)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return fail(EXIT_USAGE, "cannot read %s '%s': %s", what, path,
                    strerror(errno));
    int rc = 0;
    for (;;) {
        if (fidbus_buf_reserve(out, 65536) < 0) {
            rc = fail(EXIT_USAGE, "out of memory reading '%s'", path);
            break;
        }
        size_t n = fread(out->data + out->len, 1, out->cap - out->len, f);
        out->len += n;
        if (out->len > MAX_FILE_BYTES) {
            rc = fail(EXIT_USAGE, "%s '%s' is larger than %u bytes", what, path,
                      MAX_FILE_BYTES);
            break;
        }
        if (n == 0) {
            if (ferror(f))
                rc = fail(EXIT_USAGE, "cannot read %s '%s': %s", what, path,
                          strerror(errno));
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    return rc;
}

/*
 * When the bytes start with a whole item and go on, how many follow it
 * (0 otherwise). Only to word the error: the decoder inside the PUBLISH
 * would just see "trailing bytes after the message".
 */
static size_t trailing_bytes(const struct fidbus_buf *p)
{
    struct cbor_load_result res;
    cbor_item_t *item = cbor_load(p->data, p->len, &res);
    if (!item)
        return 0;
    cbor_decref(&item);
    return res.error.code == CBOR_ERR_NONE && res.read < p->len ? p->len - res.read : 0;
}

/*
 * The bytes must be exactly one well-formed CBOR item. The check is the
 * daemon's own: wrap them in a PUBLISH and run the library's decoder, so
 * what passes here is what the daemon will accept.
 */
static int check_payload(const char *opt, const struct fidbus_buf *p)
{
    if (p->len == 0)
        return fail(EXIT_USAGE, "%s: empty: a payload is one CBOR item", opt);
    struct fidbus_buf b = {0};
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT) |
                   FIDBUS_BIT(FIDBUS_K_PAYLOAD),
        .type = FIDBUS_MSG_PUBLISH,
        .event = "x",
        .payload = {p->data, p->len},
    };
    struct fidbus_msg *m = malloc(sizeof(*m));
    size_t extra;
    int rc = m ? fidbus_msg_encode(&b, &o) : -ENOMEM;
    if (rc < 0) {
        free(m);
        fidbus_buf_free(&b);
        return fail(EXIT_USAGE, "%s: %s", opt, strerror(-rc));
    }
    rc = fidbus_msg_decode(b.data + FIDBUS_FRAME_HEADER, b.len - FIDBUS_FRAME_HEADER,
                           FIDBUS_MAX_DEPTH_DEFAULT, m);
    if (rc == FIDBUS_TOO_LARGE)
        rc = fail(EXIT_USAGE, "%s: the CBOR item is nested deeper than %u levels", opt,
                  FIDBUS_MAX_DEPTH_DEFAULT);
    else if (rc != 0 && (extra = trailing_bytes(p)) > 0)
        rc = fail(EXIT_USAGE, "%s: %zu byte%s after the first CBOR item", opt, extra,
                  extra == 1 ? "" : "s");
    else if (rc != 0)
        rc = fail(EXIT_USAGE, "%s: not one well-formed CBOR item: %s", opt,
                  m->why ? m->why : fidbus_code_name(rc));
    else if (m->payload.len != p->len)
        rc = fail(EXIT_USAGE, "%s: %zu bytes after the first CBOR item", opt,
                  p->len - m->payload.len);
    free(m);
    fidbus_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------ publish */

static int parse_tag(char *arg, struct fidbus_tag *tags, size_t *ntags)
{
    char *eq = strchr(arg, '=');
    if (!eq)
        return fail(EXIT_USAGE, "invalid tag '%s': expected KEY=VALUE", arg);
    if (*ntags == FIDBUS_MAX_TAGS)
        return fail(EXIT_USAGE, "too many tags: at most %u", FIDBUS_MAX_TAGS);
    *eq = '\0';
    const char *k = arg, *v = eq + 1;
    int rc = 0;
    if (!fidbus_tag_key_valid(k, strlen(k)))
        rc =
            fail(EXIT_USAGE, "invalid tag key '%s': 1-%u characters of A-Z a-z 0-9 _ . -",
                 k, FIDBUS_MAX_TAG_KEY_LEN);
    else if (!fidbus_tag_value_valid(v, strlen(v)))
        rc = fail(EXIT_USAGE, "invalid value for tag '%s': at most %u bytes of UTF-8", k,
                  FIDBUS_MAX_TAG_VALUE_LEN);
    for (size_t i = 0; rc == 0 && i < *ntags; i++)
        if (strcmp(tags[i].key, k) == 0)
            rc = fail(EXIT_USAGE, "tag '%s' given twice", k);
    if (rc)
        return rc;
    tags[*ntags].key = k;
    tags[*ntags].value = v;
    (*ntags)++;
    return 0;
}

static void print_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(obj);
}

/* Reports a failed call: the exit status says whose fault it was. */
static int report(const struct ctl *ctl, struct fidbus_client *c, int rc, int code,
                  bool has_result, uint64_t result)
{
    if (code) {
        const char *name = fidbus_code_name(code);
        const char *msg = c ? fidbus_client_last_error(c) : "";
        if (!*msg) {
            /* fidbus_strerror reads "NAME: text": keep just the text */
            msg = strchr(fidbus_strerror(FIDBUS_EPROTO_CODE(code)), ':');
            msg = msg ? msg + 2 : "";
        }
        if (ctl->json) {
            json_t *o = json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error",
                                  name, "message", msg);
            if (o && has_result)
                json_object_set_new(o, "result", json_integer((json_int_t)result));
            if (o)
                print_json(o);
        }
        if (has_result)
            return fail(EXIT_BUS, "publish failed: %s: %s (%llu handler%s succeeded)",
                        name, msg, (unsigned long long)result, result == 1 ? "" : "s");
        return fail(EXIT_BUS, "publish failed: %s: %s", name, msg);
    }
    switch (rc) {
    case -EMSGSIZE:
        return fail(EXIT_USAGE,
                    "publish failed: the message is larger than the "
                    "maximum frame (%u bytes)",
                    FIDBUS_MAX_FRAME_DEFAULT);
    case -EINVAL:
        return fail(EXIT_USAGE, "publish failed: invalid event id or tags");
    case -ETIMEDOUT:
        return fail(EXIT_CONN, "publish failed: timed out waiting for the bus at %s",
                    ctl->bus);
    case -ECONNRESET:
        return fail(EXIT_CONN, "publish failed: the bus at %s closed the connection",
                    ctl->bus);
    default:
        return fail(EXIT_CONN, "publish failed: %s", fidbus_strerror(rc));
    }
}

static int connect_bus(const struct ctl *ctl, struct fidbus_client **c)
{
    struct fidbus_client_opts opts = {.name = "fidbusctl"};
    int rc = fidbus_client_connect(c, ctl->bus, &opts);
    if (rc == 0)
        return 0;
    if (rc == -EINVAL || rc == -ENAMETOOLONG)
        return fail(EXIT_USAGE,
                    "invalid bus address '%s': expected unix:PATH, PATH "
                    "or tcp:HOST:PORT",
                    ctl->bus);
    if (fidbus_error_code(rc))
        return fail(EXIT_BUS, "cannot connect to %s: %s", ctl->bus, fidbus_strerror(rc));
    return fail(EXIT_CONN, "cannot connect to %s: %s", ctl->bus, fidbus_strerror(rc));
}

static const char publish_usage[] =
    "usage: fidbusctl [--bus ADDR] [--json] publish EVENT [--tag K=V]...\n"
    "           [--data-json JSON | --data-hex HEX | --data-file FILE] [--ack]\n";

static int cmd_publish(struct ctl *ctl, int argc, char **argv)
{
    enum { O_TAG = 1000, O_JSON_DATA, O_HEX, O_FILE, O_ACK, O_JSON, O_BUS, O_SOCKET };
    static const struct option opts[] = {
        {"tag", required_argument, NULL, O_TAG},
        {"data-json", required_argument, NULL, O_JSON_DATA},
        {"data-hex", required_argument, NULL, O_HEX},
        {"data-file", required_argument, NULL, O_FILE},
        {"ack", no_argument, NULL, O_ACK},
        {"json", no_argument, NULL, O_JSON},
        {"bus", required_argument, NULL, O_BUS},
        {"socket", required_argument, NULL, O_SOCKET},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct fidbus_tag tags[FIDBUS_MAX_TAGS];
    size_t ntags = 0;
    int data_opt = 0;
    const char *data_arg = NULL;
    bool ack = false;
    int c, rc;

    optind = 0; /* restart GNU getopt on the command's own arguments */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_TAG:
            rc = parse_tag(optarg, tags, &ntags);
            if (rc)
                return rc;
            break;
        case O_JSON_DATA:
        case O_HEX:
        case O_FILE:
            if (data_opt)
                return fail(EXIT_USAGE, "only one of --data-json, --data-hex, "
                                        "--data-file may be given");
            data_opt = c;
            data_arg = optarg;
            break;
        case O_ACK:
            ack = true;
            break;
        case O_JSON:
            ctl->json = true;
            break;
        case O_BUS:
            ctl->bus = optarg;
            break;
        case O_SOCKET:
            ctl->socket = optarg;
            break;
        case 'h':
            fputs(publish_usage, stdout);
            return EXIT_OK;
        default:
            return bad_option(c, argv);
        }
    }
    if (optind >= argc)
        return fail(EXIT_USAGE, "publish: missing EVENT (try --help)");
    if (argc - optind > 1)
        return fail(EXIT_USAGE, "publish: unexpected argument '%s'", argv[optind + 1]);
    const char *event = argv[optind];
    if (!fidbus_event_id_valid(event, strlen(event)))
        return fail(EXIT_USAGE,
                    "invalid event id '%s': 1-%u characters of "
                    "A-Z a-z 0-9 _ . : -",
                    event, FIDBUS_MAX_ID_LEN);

    struct fidbus_buf payload = {0};
    rc = 0;
    if (data_opt == O_JSON_DATA) {
        char why[512];
        uint8_t *p;
        size_t n;
        if (fb_json_to_cbor(data_arg, strlen(data_arg), &p, &n, why, sizeof(why)) < 0)
            return fail(EXIT_USAGE, "invalid --data-json: %s", why);
        payload.data = p;
        payload.len = payload.cap = n;
    } else if (data_opt == O_HEX) {
        rc = parse_hex(data_arg, &payload);
        if (rc == 0)
            rc = check_payload("--data-hex", &payload);
    } else if (data_opt == O_FILE) {
        rc = read_file("--data-file", data_arg, &payload);
        if (rc == 0)
            rc = check_payload("--data-file", &payload);
    }
    if (rc) {
        fidbus_buf_free(&payload);
        return rc;
    }

    struct fidbus_client *cl = NULL;
    rc = connect_bus(ctl, &cl);
    if (rc) {
        fidbus_buf_free(&payload);
        return rc;
    }

    uint64_t result = 0;
    int status = EXIT_OK;
    if (ack) {
        rc = fidbus_publish_ack(cl, event, tags, ntags, payload.data, payload.len,
                                &result);
        int code = fidbus_error_code(rc);
        if (rc < 0) {
            status = report(ctl, cl, rc, code, code == FIDBUS_HANDLER_FAILED, result);
        } else if (ctl->json) {
            print_json(json_pack("{s:b, s:I}", "ok", 1, "result", (json_int_t)result));
        } else {
            printf("ok: %llu handler%s\n", (unsigned long long)result,
                   result == 1 ? "" : "s");
        }
    } else {
        /*
         * A PUBLISH without ACK is answered only when it fails. The PING
         * after it is a barrier: once its ACK is back, any ERROR for the
         * publish has arrived too, so success here is the daemon's word.
         */
        rc = fidbus_publish(cl, event, tags, ntags, payload.data, payload.len);
        if (rc == 0)
            rc = fidbus_ping(cl);
        if (rc < 0)
            status = report(ctl, cl, rc, fidbus_error_code(rc), false, 0);
        else if (fidbus_client_async_errors(cl) > 0)
            status = report(ctl, cl, rc,
                            fidbus_client_last_error_code(cl)
                                ? fidbus_client_last_error_code(cl)
                                : FIDBUS_INTERNAL,
                            false, 0);
        else if (ctl->json)
            print_json(json_pack("{s:b}", "ok", 1));
    }
    fidbus_client_close(cl);
    fidbus_buf_free(&payload);
    if (fflush(stdout) != 0 && status == EXIT_OK)
        status = fail(EXIT_CONN, "cannot write output: %s", strerror(errno));
    return status;
}

/* ------------------------------------------------------------ control */

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
};

struct control_cmd {
    const char *group, *verb; /* the words typed; verb NULL for one word */
    const char *command;      /* the design's command name */
    const char *args;         /* positional arguments, for usage lines */
    unsigned nargs;
    unsigned opts;
};

static const struct control_cmd control_cmds[] = {
    {"status", NULL, "status", "", 0, 0},
    {"stats", NULL, "stats", "", 0, 0},
    {"plugin", "list", "plugin.list", "", 0, 0},
    {"plugin", "load", "plugin.load", " PATH [--name NAME] [--config JSON]", 1,
     CO_NAME | CO_CONFIG},
    {"plugin", "unload", "plugin.unload", " NAME", 1, 0},
    {"plugin", "reload", "plugin.reload", " NAME [--path PATH]", 1, CO_PATH},
    {"func", "list", "func.list", "", 0, 0},
    {"route", "list", "route.list", "", 0, 0},
    {"route", "add", "route.add",
     " NAME EVENT [--tag K=V]... --to TARGET[:WEIGHT]... [--mode all|split]"
     " [--split-by TAG] [--priority N] [--signature HEX]",
     2, CO_TAG | CO_TO | CO_MODE | CO_SPLIT_BY | CO_PRIORITY | CO_SIGNATURE},
    {"route", "del", "route.del", " NAME", 1, 0},
    {"route", "apply", "route.apply", " FILE [--replace]", 1, CO_REPLACE},
    {"route", "test", "route.test", " EVENT [--tag K=V]... [--apply FILE]", 1,
     CO_TAG | CO_APPLY},
    {"config", "reload", "config.reload", "", 0, 0},
    {"config", "export", "config.export", "", 0, 0},
};

static bool is_control_group(const char *word)
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
    int rc = read_file(opt, path, &b);
    if (rc)
        return rc;
    size_t i = 0;
    while (i < b.len && isspace(b.data[i]))
        i++;
    if (i < b.len && b.data[i] == '{') {
        json_error_t e;
        *out = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
        if (!*out)
            rc = fail(EXIT_USAGE, "%s '%s': line %d, column %d: %s", opt, path, e.line,
                      e.column, e.text);
    } else if (fb_ctl_result_json(b.data, b.len, out, why, sizeof(why)) < 0) {
        rc = fail(EXIT_USAGE, "%s '%s': neither a JSON object nor CBOR: %s", opt, path,
                  why);
    }
    if (rc == 0 && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        rc = fail(EXIT_USAGE, "%s '%s': expected a map / JSON object", opt, path);
    }
    fidbus_buf_free(&b);
    return rc;
}

/* K=V into obj[K] = V. */
static int add_kv(const char *what, const char *arg, json_t *obj)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return fail(EXIT_USAGE, "invalid %s '%s': expected KEY=VALUE", what, arg);
    char *k = strndup(arg, (size_t)(eq - arg));
    if (!k)
        return fail(EXIT_USAGE, "out of memory");
    if (json_object_get(obj, k)) {
        int rc = fail(EXIT_USAGE, "%s '%s' given twice", what, k);
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
                           json_t *to, bool *help)
{
    enum {
        O_JSON = 1000,
        O_BUS,
        O_SOCKET,
        O_NAME,
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
    };
    static const struct option opts[] = {
        {"json", no_argument, NULL, O_JSON},
        {"bus", required_argument, NULL, O_BUS},
        {"socket", required_argument, NULL, O_SOCKET},
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
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c, rc, li = 0;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &li)) != -1) {
        if (c >= O_NAME && !(cc->opts & (1u << (c - O_NAME))))
            return fail(EXIT_USAGE, "%s%s%s: option '--%s' does not apply (try --help)",
                        cc->group, cc->verb ? " " : "", cc->verb ? cc->verb : "",
                        opts[li].name);
        switch (c) {
        case O_JSON:
            ctl->json = true;
            break;
        case O_BUS:
            ctl->bus = optarg;
            break;
        case O_SOCKET:
            ctl->socket = optarg;
            break;
        case O_NAME:
            json_object_set_new(args, "name", json_string(optarg));
            break;
        case O_PATH:
            json_object_set_new(args, "path", json_string(optarg));
            break;
        case O_CONFIG: {
            json_error_t e;
            json_t *j = json_loads(optarg, JSON_REJECT_DUPLICATES, &e);
            if (!json_is_object(j)) {
                json_decref(j);
                return fail(EXIT_USAGE, "invalid --config: %s",
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
                return fail(EXIT_USAGE, "invalid --priority '%s': expected an integer",
                            optarg);
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
        case 'h':
            *help = true;
            return 0;
        default:
            return bad_option(c, argv);
        }
    }
    return 0;
}

/* Positional arguments into args, by command. */
static int control_positional(const struct control_cmd *cc, char **pos, json_t *args,
                              json_t *route)
{
    if (strcmp(cc->command, "plugin.load") == 0)
        json_object_set_new(args, "path", json_string(pos[0]));
    else if (strcmp(cc->command, "route.add") == 0) {
        json_object_set_new(route, "name", json_string(pos[0]));
        json_object_set_new(route, "event", json_string(pos[1]));
    } else if (strcmp(cc->command, "route.test") == 0)
        json_object_set_new(args, "event", json_string(pos[0]));
    else if (strcmp(cc->command, "route.apply") == 0) {
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

/* Sends the REQUEST and renders the REPLY. */
static int control_call(const struct ctl *ctl, const char *words,
                        const struct control_cmd *cc, json_t *args)
{
    uint8_t *abuf = NULL;
    size_t alen = 0;
    if (json_object_size(args) > 0) {
        char why[512];
        char *text = json_dumps(args, JSON_COMPACT);
        int rc = text ? fb_json_to_cbor(text, strlen(text), &abuf, &alen, why, sizeof(why))
                      : -ENOMEM;
        free(text);
        if (rc < 0)
            return fail(EXIT_USAGE, "%s: cannot encode the arguments: %s", words,
                        rc == -1 ? why : strerror(-rc));
    }

    char addr[4200];
    if (strncmp(ctl->socket, "unix:", 5) == 0)
        snprintf(addr, sizeof(addr), "%s", ctl->socket);
    else
        snprintf(addr, sizeof(addr), "unix:%s", ctl->socket);
    /* a reload drains in-flight calls: give the daemon longer than a publish */
    struct fidbus_client_opts opts = {.name = "fidbusctl", .timeout_ms = 60000};
    struct fidbus_client *cl = NULL;
    int rc = fidbus_client_connect(&cl, addr, &opts);
    if (rc < 0) {
        free(abuf);
        if (rc == -EINVAL || rc == -ENAMETOOLONG)
            return fail(EXIT_USAGE, "invalid control socket path '%s'", ctl->socket);
        if (fidbus_error_code(rc))
            return fail(EXIT_BUS, "cannot connect to the control socket %s: %s",
                        ctl->socket, fidbus_strerror(rc));
        return fail(EXIT_CONN, "cannot connect to the control socket %s: %s",
                    ctl->socket, fidbus_strerror(rc));
    }

    uint8_t *res = NULL;
    size_t res_len = 0;
    rc = fidbus_request(cl, cc->command, abuf, alen, &res, &res_len);
    free(abuf);
    int status = EXIT_OK;
    int code = fidbus_error_code(rc);
    if (code) {
        const char *name = fidbus_code_name(code);
        const char *msg = fidbus_client_last_error(cl);
        if (ctl->json)
            print_json(json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error",
                                 name, "message", msg));
        status = *msg ? fail(EXIT_BUS, "%s failed: %s: %s", words, name, msg)
                      : fail(EXIT_BUS, "%s failed: %s", words, name);
    } else if (rc == -ETIMEDOUT) {
        status = fail(EXIT_CONN, "%s failed: timed out waiting for the daemon at %s",
                      words, ctl->socket);
    } else if (rc == -ECONNRESET) {
        status = fail(EXIT_CONN, "%s failed: the daemon at %s closed the connection",
                      words, ctl->socket);
    } else if (rc < 0) {
        status = fail(EXIT_CONN, "%s failed: %s", words, fidbus_strerror(rc));
    } else {
        json_t *j;
        char why[512];
        if (fb_ctl_result_json(res, res_len, &j, why, sizeof(why)) < 0) {
            status = fail(EXIT_BUS, "%s failed: the daemon's reply: %s", words, why);
        } else if (ctl->json) {
            char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s)
                printf("%s\n", s);
            else
                status = fail(EXIT_BUS, "%s: out of memory", words);
            free(s);
            json_decref(j);
        } else {
            fb_ctl_render_table(stdout, cc->command, j);
            json_decref(j);
        }
    }
    free(res);
    fidbus_client_close(cl);
    if (fflush(stdout) != 0 && status == EXIT_OK)
        status = fail(EXIT_CONN, "cannot write output: %s", strerror(errno));
    return status;
}

static int cmd_control(struct ctl *ctl, int argc, char **argv)
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
            return fail(EXIT_USAGE, "%s: missing subcommand (try --help)", argv[0]);
        return fail(EXIT_USAGE, "unknown command '%s %s' (try --help)", argv[0], argv[1]);
    }
    char words[64];
    snprintf(words, sizeof(words), "%s%s%s", cc->group, cc->verb ? " " : "",
             cc->verb ? cc->verb : "");
    int skip = cc->verb ? 1 : 0; /* getopt sees argv[0] as the program name */

    json_t *args = json_object(), *route = json_object(), *tags = json_object(),
           *to = json_array();
    bool help = false;
    int rc = args && route && tags && to ? 0 : fail(EXIT_USAGE, "out of memory");
    if (rc == 0)
        rc = control_options(ctl, cc, argc - skip, argv + skip, args, route, tags, to,
                             &help);
    if (rc == 0 && help) {
        printf("usage: fidbusctl [--socket CONTROL] [--json] %s%s\n", words, cc->args);
        goto out;
    }
    int npos = rc == 0 ? argc - skip - optind : 0;
    if (rc == 0 && npos < (int)cc->nargs)
        rc = fail(EXIT_USAGE, "%s: missing argument (usage: %s%s)", words, words,
                  cc->args);
    else if (rc == 0 && npos > (int)cc->nargs)
        rc = fail(EXIT_USAGE, "%s: unexpected argument '%s'", words,
                  argv[skip + optind + cc->nargs]);
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
            rc = fail(EXIT_USAGE, "route add: at least one --to TARGET is needed");
            goto out;
        }
        json_object_set(args, "route", route);
    }
    rc = control_call(ctl, words, cc, args);
out:
    json_decref(args);
    json_decref(route);
    json_decref(tags);
    json_decref(to);
    return rc;
}

/* --------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    enum { O_SOCKET = 1000, O_BUS, O_JSON, O_VERSION };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, O_SOCKET},
        {"bus", required_argument, NULL, O_BUS},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},
        {0},
    };
    struct ctl ctl = {0};
    int c;

    opterr = 0;
    /* '+': stop at the command; its options are parsed by the command */
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (c) {
        case O_SOCKET:
            ctl.socket = optarg;
            break;
        case O_BUS:
            ctl.bus = optarg;
            break;
        case O_JSON:
            ctl.json = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return EXIT_OK;
        case O_VERSION:
            printf("fidbusctl %s\n", FIDBUS_VERSION);
            return EXIT_OK;
        default:
            return bad_option(c, argv);
        }
    }
    if (optind >= argc)
        return fail(EXIT_USAGE, "no command given (try --help)");
    if (!ctl.bus)
        ctl.bus =
            default_path("FIDBUS_BUS", "bus.sock", ctl.bus_buf, sizeof(ctl.bus_buf));
    if (!ctl.socket)
        ctl.socket = default_path("FIDBUS_CONTROL", "control.sock", ctl.socket_buf,
                                  sizeof(ctl.socket_buf));

    const char *cmd = argv[optind];
    if (strcmp(cmd, "publish") == 0)
        return cmd_publish(&ctl, argc - optind, argv + optind);
    if (is_control_group(cmd))
        return cmd_control(&ctl, argc - optind, argv + optind);
    return fail(EXIT_USAGE, "unknown command '%s'", cmd);
}
