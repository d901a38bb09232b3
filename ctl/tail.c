/*
 * `fidbusctl tail [PATTERN] [--tag K=V]... [--json] [--buffer BYTES]`: opens
 * a tap (proto/control.md `tap.open`) and prints one line per EVENT, each
 * flushed as it is written so a pipe sees it at once. Plain lines are the
 * log plugin's (plugins/log.c) with what an EVENT carries:
 *
 *     gen=3 event=order.created tags={"user":"u1"} payload={"a": 1} route=orders conn=7
 *
 * (route=- when unrouted; no payload= without a payload). --json prints
 * one object per line: event, tags, payload (the JSON mapping of the CBOR
 * item, RFC 8949 section 6.1, or payload_hex when the bytes are not one
 * well-formed item), generation, route (null when unrouted), conn. stdout
 * carries nothing else: drops reported by the daemon go to stderr. SIGINT
 * and SIGTERM end it with status 0.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>
#include <jansson.h>

#include <fidbus/client.h>
#include <fidbus/proto.h>

#include "cbor_text.h"
#include "fidbusctl.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* tap.open's args as CBOR (caller frees), or NULL on ENOMEM. */
static unsigned char *tap_args(const char *event, char **tags, int ntags, uint64_t buffer,
                               size_t *len)
{
    cbor_item_t *args = cbor_new_indefinite_map();
    cbor_item_t *t = ntags ? cbor_new_indefinite_map() : NULL;
    bool ok = args && (!ntags || t);
    ok =
        ok && cbor_map_add(args, (struct cbor_pair){cbor_move(cbor_build_string("event")),
                                                    cbor_move(cbor_build_string(event))});
    for (int i = 0; ok && i < ntags; i++) {
        char *eq = strchr(tags[i], '=');
        *eq = '\0';
        ok = cbor_map_add(t, (struct cbor_pair){cbor_move(cbor_build_string(tags[i])),
                                                cbor_move(cbor_build_string(eq + 1))});
        *eq = '=';
    }
    if (ok && t)
        ok = cbor_map_add(args,
                          (struct cbor_pair){cbor_move(cbor_build_string("tags")), t});
    if (ok && buffer)
        ok = cbor_map_add(args, (struct cbor_pair){cbor_move(cbor_build_string("buffer")),
                                                   cbor_move(cbor_build_uint64(buffer))});
    unsigned char *out = NULL;
    size_t cap = 0;
    *len = ok ? cbor_serialize_alloc(args, &out, &cap) : 0;
    if (t)
        cbor_decref(&t);
    if (args)
        cbor_decref(&args);
    if (!*len) {
        free(out);
        return NULL;
    }
    return out;
}

static void put_hex(struct fb_ct *s, const uint8_t *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        fb_ct_putc(s, hx[p[i] >> 4]);
        fb_ct_putc(s, hx[p[i] & 15]);
    }
}

/* Is p[0..n) exactly one well-formed CBOR item? */
static bool one_item(const uint8_t *p, size_t n)
{
    struct cbor_load_result r;
    cbor_item_t *it = cbor_load(p, n, &r);
    bool one = it && r.error.code == CBOR_ERR_NONE && r.read == n;
    if (it)
        cbor_decref(&it);
    return one;
}

static void print_event(struct fb_ct *s, const struct fidbus_msg *m, bool json)
{
    s->len = 0;
    s->oom = false;
    bool has_payload = fidbus_msg_has(m, FIDBUS_K_PAYLOAD) && m->payload.len;
    if (json) {
        fb_ct_puts(s, "{\"event\":\"");
        fb_ct_put_escaped(s, (const uint8_t *)m->event, strlen(m->event));
        fb_ct_puts(s, "\",\"tags\":{");
    } else {
        char head[320];
        int n = snprintf(head, sizeof head, "gen=%" PRIu64 " event=%s tags={",
                         m->generation, m->event);
        fb_ct_put(s, head, n < (int)sizeof head ? (size_t)n : sizeof head - 1);
    }
    for (size_t i = 0; i < m->ntags; i++) {
        if (i)
            fb_ct_putc(s, ',');
        fb_ct_putc(s, '"');
        fb_ct_put_escaped(s, (const uint8_t *)m->tags[i].key, strlen(m->tags[i].key));
        fb_ct_puts(s, "\":\"");
        fb_ct_put_escaped(s, (const uint8_t *)m->tags[i].value, strlen(m->tags[i].value));
        fb_ct_putc(s, '"');
    }
    fb_ct_putc(s, '}');
    char tail[96];
    if (json) {
        if (has_payload && one_item(m->payload.ptr, m->payload.len)) {
            fb_ct_puts(s, ",\"payload\":");
            fb_ct_render(s, m->payload.ptr, m->payload.len, true);
        } else if (has_payload) {
            fb_ct_puts(s, ",\"payload_hex\":\"");
            put_hex(s, m->payload.ptr, m->payload.len);
            fb_ct_putc(s, '"');
        }
        snprintf(tail, sizeof tail,
                 ",\"generation\":%" PRIu64 ",\"route\":", m->generation);
        fb_ct_puts(s, tail);
        if (m->route.ptr) {
            fb_ct_putc(s, '"');
            fb_ct_put_escaped(s, m->route.ptr, m->route.len);
            fb_ct_putc(s, '"');
        } else {
            fb_ct_puts(s, "null");
        }
        snprintf(tail, sizeof tail, ",\"conn\":%" PRIu64 "}\n", m->conn);
        fb_ct_puts(s, tail);
    } else {
        if (has_payload) {
            fb_ct_puts(s, " payload=");
            fb_ct_render(s, m->payload.ptr, m->payload.len, false);
        }
        fb_ct_puts(s, " route=");
        if (m->route.ptr)
            fb_ct_put(s, (const char *)m->route.ptr, m->route.len);
        else
            fb_ct_putc(s, '-');
        snprintf(tail, sizeof tail, " conn=%" PRIu64 "\n", m->conn);
        fb_ct_puts(s, tail);
    }
    if (s->oom) {
        fprintf(stderr, "fidbusctl: tail: out of memory rendering an event\n");
        return;
    }
    fwrite(s->buf, 1, s->len, stdout);
    fflush(stdout);
}

static int usage(void)
{
    printf("usage: fidbusctl [--socket CONTROL] tail [PATTERN] [--tag K=V]... [--json] "
           "[--buffer BYTES]\n");
    return EXIT_OK;
}

int fbctl_tail(struct ctl *ctl, int argc, char **argv)
{
    enum { O_TAG = 1000, O_BUFFER };
    static const struct option opts[] = {
        CTL_GLOBAL_OPTIONS,
        {"tag", required_argument, NULL, O_TAG},
        {"buffer", required_argument, NULL, O_BUFFER},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    char *tags[FIDBUS_MAX_TAGS];
    int ntags = 0;
    uint64_t buffer = 0;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (fbctl_global_option(ctl, c))
            continue;
        switch (c) {
        case O_TAG:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return fbctl_fail(EXIT_USAGE, "tail: --tag wants KEY=VALUE, not '%s'",
                                  optarg);
            if (ntags == (int)FIDBUS_MAX_TAGS)
                return fbctl_fail(EXIT_USAGE, "tail: more than %u --tag",
                                  FIDBUS_MAX_TAGS);
            tags[ntags++] = optarg;
            break;
        case O_BUFFER: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || !*optarg || v == 0)
                return fbctl_fail(EXIT_USAGE, "tail: --buffer wants a number of bytes");
            buffer = v;
            break;
        }
        case 'h':
            return usage();
        default:
            return fbctl_bad_option(c, argv);
        }
    }
    const char *pattern = "*";
    if (optind < argc)
        pattern = argv[optind++];
    if (optind < argc)
        return fbctl_fail(EXIT_USAGE, "tail: unexpected argument '%s'", argv[optind]);

    size_t alen;
    unsigned char *args = tap_args(pattern, tags, ntags, buffer, &alen);
    if (!args)
        return fbctl_fail(EXIT_CONN, "tail: out of memory");
    struct fidbus_client *cl = NULL;
    int status = fbctl_control_open(ctl, &cl);
    if (status) {
        free(args);
        return status;
    }
    /* The tap's frames come on this connection after its REPLY: read them
     * here with a frame reader of our own, past the client library (which
     * has read only HELLO so far). */
    int fd = fidbus_client_fd(cl);
    struct fidbus_buf out = {0};
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND) | FIDBUS_BIT(FIDBUS_K_ARGS),
        .type = FIDBUS_MSG_REQUEST,
        .seq = 1,
        .command = "tap.open",
        .args = {args, alen},
    };
    int rc = fidbus_msg_encode(&out, &o);
    free(args);
    for (size_t off = 0; rc == 0 && off < out.len;) {
        ssize_t w = write(fd, out.data + off, out.len - off);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (w < 0)
            rc = -errno;
        else
            off += (size_t)w;
    }
    fidbus_buf_free(&out);
    if (rc < 0) {
        fidbus_client_close(cl);
        return fbctl_lost("tail", "daemon", ctl->socket, rc);
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct fidbus_frame_reader rd;
    struct fidbus_msg *m = malloc(sizeof *m);
    struct fb_ct ct = {0};
    if (!m || fidbus_frame_reader_init(&rd, FIDBUS_CONTROL_REPLY_MAX, 0) < 0) {
        free(m);
        fidbus_client_close(cl);
        return fbctl_fail(EXIT_CONN, "tail: out of memory");
    }
    bool open = false;
    status = EXIT_OK;
    while (!stop_signal && status == EXIT_OK) {
        const uint8_t *body;
        size_t len;
        int fr = fidbus_frame_next(&rd, &body, &len);
        if (fr == 1) {
            int dr = fidbus_msg_decode(body, len, 0, m);
            if (dr == 0)
                dr = fidbus_msg_check(m);
            if (dr) {
                status =
                    fbctl_fail(EXIT_CONN, "tail: undecodable frame from the daemon: %s",
                               m->why ? m->why : fidbus_code_name(dr));
            } else if (!open && m->type == FIDBUS_MSG_REPLY) {
                if (m->code) {
                    char why[1100];
                    snprintf(why, sizeof why, "%.*s", (int)m->message.len,
                             m->message.ptr ? (const char *)m->message.ptr : "");
                    status = fbctl_refused(ctl, "tail", (int)m->code, why, false, 0);
                }
                open = true;
            } else if (open && m->type == FIDBUS_MSG_EVENT) {
                if (m->dropped)
                    fprintf(stderr,
                            "fidbusctl: tail: %" PRIu64
                            " events dropped (the tap's buffer was full)\n",
                            m->dropped);
                print_event(&ct, m, ctl->json);
            }
            continue;
        }
        if (fr != 0) {
            status = fbctl_fail(EXIT_CONN, "tail: bad frame from the daemon");
            break;
        }
        uint8_t *p;
        size_t cap;
        if (fidbus_frame_reader_space(&rd, &p, &cap) < 0) {
            status = fbctl_fail(EXIT_CONN, "tail: out of memory");
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0)
            continue; /* EINTR: a signal; the loop checks it */
        ssize_t n = read(fd, p, cap);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            if (!stop_signal)
                status =
                    fbctl_lost("tail", "daemon", ctl->socket, n < 0 ? -errno : -EPIPE);
            break;
        }
        fidbus_frame_reader_commit(&rd, (size_t)n);
    }
    free(ct.buf);
    free(m);
    fidbus_frame_reader_destroy(&rd);
    fidbus_client_close(cl);
    return status;
}
