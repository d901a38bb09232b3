/*
 * ctl/publish.c -- fidbusctl's `publish` command.
 *
 * Builds one PUBLISH from the command line: the event id, --tag K=V
 * pairs and at most one payload (--data-json converted to CBOR,
 * --data-hex or --data-file taken as CBOR bytes and checked with the
 * daemon's own decoder before anything is sent). With --ack it waits
 * for the daemon's ACK and prints the handler count; without, a PING
 * after the PUBLISH makes sure any ERROR for it has arrived.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <jansson.h>

#include <fidbus/client.h>

#include "fidbusctl.h"
#include "json_cbor.h"

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
            return fbctl_fail(
                EXIT_USAGE, "invalid --data-hex: '%c' at position %zu is not a hex digit",
                s[i], i + 1);
        if (hi < 0) {
            hi = d;
            continue;
        }
        uint8_t byte = (uint8_t)(hi << 4 | d);
        if (fidbus_buf_append(out, &byte, 1) < 0)
            return fbctl_fail(EXIT_USAGE, "out of memory");
        hi = -1;
    }
    if (hi >= 0)
        return fbctl_fail(EXIT_USAGE, "invalid --data-hex: odd number of hex digits");
    return 0;
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
        return fbctl_fail(EXIT_USAGE, "%s: empty: a payload is one CBOR item", opt);
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
        return fbctl_fail(EXIT_USAGE, "%s: %s", opt, strerror(-rc));
    }
    rc = fidbus_msg_decode(b.data + FIDBUS_FRAME_HEADER, b.len - FIDBUS_FRAME_HEADER,
                           FIDBUS_MAX_DEPTH_DEFAULT, m);
    if (rc == FIDBUS_TOO_LARGE)
        rc = fbctl_fail(EXIT_USAGE, "%s: the CBOR item is nested deeper than %u levels",
                        opt, FIDBUS_MAX_DEPTH_DEFAULT);
    else if (rc != 0 && (extra = trailing_bytes(p)) > 0)
        rc = fbctl_fail(EXIT_USAGE, "%s: %zu byte%s after the first CBOR item", opt,
                        extra, extra == 1 ? "" : "s");
    else if (rc != 0)
        rc = fbctl_fail(EXIT_USAGE, "%s: not one well-formed CBOR item: %s", opt,
                        m->why ? m->why : fidbus_code_name(rc));
    else if (m->payload.len != p->len)
        rc = fbctl_fail(EXIT_USAGE, "%s: %zu bytes after the first CBOR item", opt,
                        p->len - m->payload.len);
    free(m);
    fidbus_buf_free(&b);
    return rc;
}

static int parse_tag(char *arg, struct fidbus_tag *tags, size_t *ntags)
{
    char *eq = strchr(arg, '=');
    if (!eq)
        return fbctl_fail(EXIT_USAGE, "invalid tag '%s': expected KEY=VALUE", arg);
    if (*ntags == FIDBUS_MAX_TAGS)
        return fbctl_fail(EXIT_USAGE, "too many tags: at most %u", FIDBUS_MAX_TAGS);
    *eq = '\0';
    const char *k = arg, *v = eq + 1;
    int rc = 0;
    if (!fidbus_tag_key_valid(k, strlen(k)))
        rc = fbctl_fail(EXIT_USAGE,
                        "invalid tag key '%s': 1-%u characters of A-Z a-z 0-9 _ . -", k,
                        FIDBUS_MAX_TAG_KEY_LEN);
    else if (!fidbus_tag_value_valid(v, strlen(v)))
        rc = fbctl_fail(EXIT_USAGE,
                        "invalid value for tag '%s': at most %u bytes of UTF-8", k,
                        FIDBUS_MAX_TAG_VALUE_LEN);
    for (size_t i = 0; rc == 0 && i < *ntags; i++)
        if (strcmp(tags[i].key, k) == 0)
            rc = fbctl_fail(EXIT_USAGE, "tag '%s' given twice", k);
    if (rc)
        return rc;
    tags[*ntags].key = k;
    tags[*ntags].value = v;
    (*ntags)++;
    return 0;
}

/* Reports a failed call: the exit status says whose fault it was. */
static int report(const struct ctl *ctl, struct fidbus_client *c, int rc, int code,
                  bool has_result, uint64_t result)
{
    if (code) {
        const char *msg = c ? fidbus_client_last_error(c) : "";
        if (!*msg) {
            /* fidbus_strerror reads "NAME: text": keep just the text */
            msg = strchr(fidbus_strerror(FIDBUS_EPROTO_CODE(code)), ':');
            msg = msg ? msg + 2 : "";
        }
        return fbctl_refused(ctl, "publish", code, msg, has_result, result);
    }
    switch (rc) {
    case -EMSGSIZE:
        return fbctl_fail(EXIT_USAGE,
                          "publish failed: the message is larger than the "
                          "maximum frame (%u bytes)",
                          FIDBUS_MAX_FRAME_DEFAULT);
    case -EINVAL:
        return fbctl_fail(EXIT_USAGE, "publish failed: invalid event id or tags");
    default:
        return fbctl_lost("publish", "bus", ctl->bus, rc);
    }
}

static int connect_bus(const struct ctl *ctl, struct fidbus_client **c)
{
    struct fidbus_client_opts opts = {.name = "fidbusctl"};
    uint8_t *key = NULL;
    size_t key_len = 0;
    /* Only TCP listeners ask for the key; a Unix bus never sees it. */
    if (ctl->key_file && strncmp(ctl->bus, "tcp:", 4) == 0) {
        int krc = fidbus_key_load(ctl->key_file, &key, &key_len);
        if (krc < 0)
            return fbctl_fail(EXIT_USAGE, "key file '%s': %s", ctl->key_file,
                              fidbus_key_strerror(krc));
        opts.key = key;
        opts.key_len = key_len;
    }
    int rc = fidbus_client_connect(c, ctl->bus, &opts);
    fidbus_key_free(key, key_len);
    if (rc == 0)
        return 0;
    if (rc == -EINVAL || rc == -ENAMETOOLONG)
        return fbctl_fail(EXIT_USAGE,
                          "invalid bus address '%s': expected unix:PATH, PATH "
                          "or tcp:HOST:PORT",
                          ctl->bus);
    /* a protocol code is the daemon's refusal, anything else unreachable */
    return fbctl_fail(fidbus_error_code(rc) ? EXIT_BUS : EXIT_CONN,
                      "cannot connect to %s: %s", ctl->bus, fbctl_connect_why(rc));
}

static const char publish_usage[] =
    "usage: fidbusctl [--bus ADDR] [--key-file FILE] [--json] publish EVENT\n"
    "           [--tag K=V]...\n"
    "           [--data-json JSON | --data-hex HEX | --data-file FILE] [--ack]\n";

int fbctl_publish(struct ctl *ctl, int argc, char **argv)
{
    enum { O_TAG = 1000, O_JSON_DATA, O_HEX, O_FILE, O_ACK };
    static const struct option opts[] = {
        CTL_GLOBAL_OPTIONS,
        {"tag", required_argument, NULL, O_TAG},
        {"data-json", required_argument, NULL, O_JSON_DATA},
        {"data-hex", required_argument, NULL, O_HEX},
        {"data-file", required_argument, NULL, O_FILE},
        {"ack", no_argument, NULL, O_ACK},
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
        if (fbctl_global_option(ctl, c))
            continue;
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
                return fbctl_fail(EXIT_USAGE, "only one of --data-json, --data-hex, "
                                              "--data-file may be given");
            data_opt = c;
            data_arg = optarg;
            break;
        case O_ACK:
            ack = true;
            break;
        case 'h':
            fputs(publish_usage, stdout);
            return EXIT_OK;
        default:
            return fbctl_bad_option(c, argv);
        }
    }
    if (optind >= argc)
        return fbctl_fail(EXIT_USAGE, "publish: missing EVENT (try --help)");
    if (argc - optind > 1)
        return fbctl_fail(EXIT_USAGE, "publish: unexpected argument '%s'",
                          argv[optind + 1]);
    const char *event = argv[optind];
    if (!fidbus_event_id_valid(event, strlen(event)))
        return fbctl_fail(EXIT_USAGE,
                          "invalid event id '%s': 1-%u characters of "
                          "A-Z a-z 0-9 _ . : -",
                          event, FIDBUS_MAX_ID_LEN);

    struct fidbus_buf payload = {0};
    rc = 0;
    if (data_opt == O_JSON_DATA) {
        char why[512];
        uint8_t *p;
        size_t n;
        if (fbctl_json_to_cbor(data_arg, strlen(data_arg), &p, &n, why, sizeof(why)) < 0)
            return fbctl_fail(EXIT_USAGE, "invalid --data-json: %s", why);
        payload.data = p;
        payload.len = payload.cap = n;
    } else if (data_opt == O_HEX) {
        rc = parse_hex(data_arg, &payload);
        if (rc == 0)
            rc = check_payload("--data-hex", &payload);
    } else if (data_opt == O_FILE) {
        rc = fbctl_read_file("--data-file", data_arg, &payload);
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
            fbctl_print_json(
                json_pack("{s:b, s:I}", "ok", 1, "result", (json_int_t)result));
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
            fbctl_print_json(json_pack("{s:b}", "ok", 1));
    }
    fidbus_client_close(cl);
    fidbus_buf_free(&payload);
    return fbctl_flush(status);
}
