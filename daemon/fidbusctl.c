/*
 * daemon/fidbusctl.c -- the command-line client.
 *
 *     fidbusctl [--socket CONTROL] [--bus ADDR] [--json] COMMAND ...
 *
 * This issue gives it one command, `publish`, built on the client library
 * (<fidbus/client.h>); the control commands arrive with the control socket
 * and will sit beside cmd_publish, sharing the option parsing, the
 * defaults and the error reporting below.
 *
 * Contract for scripts: exit 0 on success; 1 when the bus answered with an
 * error; 2 for a usage error (bad flag, JSON, hex, tag or event id) found
 * before anything is sent; 3 when the bus cannot be reached, the
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
    const char *socket; /* control socket (later issue) */
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
    "exit status: 0 ok, 1 the bus answered with an error, 2 usage error,\n"
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

static int read_file(const char *path, struct fidbus_buf *out)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return fail(EXIT_USAGE, "cannot read --data-file '%s': %s", path,
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
            rc = fail(EXIT_USAGE, "--data-file '%s' is larger than %u bytes", path,
                      MAX_FILE_BYTES);
            break;
        }
        if (n == 0) {
            if (ferror(f))
                rc = fail(EXIT_USAGE, "cannot read --data-file '%s': %s", path,
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
        rc = read_file(data_arg, &payload);
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
    return fail(EXIT_USAGE, "unknown command '%s'", cmd);
}
