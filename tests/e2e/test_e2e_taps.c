/*
 * End-to-end tests of who published an event (struct fidbus_event's uid,
 * pid and conn; CALL's uid and pid) and of taps (`tap.open`, EVENT frames,
 * `fidbusctl tail`): README "Watching traffic".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cbor.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>

#include <fidbus/funcid.h>

#include "e2e/harness.h"

/* clang-format off */
static const char whois_conf[] =
    FB_E2E_LOG FB_E2E_TP("whois") "file = @D@/whois.txt\n"
    "[route who]\nevent = who.*\nto = test.whois, test.whois_blocking, fidbus.log\n"
    "[route again]\nevent = again.*\nto = test.whois\n"
    "[route re]\nevent = whois.re\nto = test.whois\n"
    "[remote acme]\ncredit = 8\ntimeout_ms = 30000\n"
    "[route rem]\nevent = rem.x\nto = acme.audit@1.0.0\n";
/* clang-format on */

/* In a child running as uid 65534: publishes who.nobody and again.nobody
 * acked; the exit status says which step failed (0: both acked). */
static int publish_as_nobody(const char *bus)
{
    if (fb_e2e_drop_to(65534, 65534) != 0)
        return 10;
    char addr[200];
    snprintf(addr, sizeof addr, "unix:%s", bus);
    struct fidbus_client *c = NULL;
    if (fidbus_client_connect(&c, addr, NULL) < 0)
        return 11;
    /* rem.x un-acked: its CALL waits in the test's member until we exit */
    if (fidbus_publish_seq(c, 9, 0, "rem.x", NULL, 0, NULL, 0) < 0)
        return 16;
    const char *ids[] = {"who.nobody", "again.nobody"};
    for (int i = 0; i < 2; i++) {
        if (fidbus_publish_seq(c, (uint64_t)i + 1, FIDBUS_FLAG_ACK, ids[i], NULL, 0, NULL,
                               0) < 0 ||
            fidbus_flush(c) < 0)
            return 12;
        struct fidbus_answer a = {0};
        if (fidbus_client_recv(c, &a, 10000) < 0 || a.type != FIDBUS_MSG_ACK)
            return 13 + i;
    }
    fidbus_client_close(c);
    return 0;
}

/* A member of acme.audit@1.0.0 on the bus (raw wire). */
static struct fb_e2e_raw *member(struct fb_e2e *t)
{
    struct fb_e2e_raw *r = fb_e2e_raw_unix(t);
    fb_e2e_raw_hello(r);
    uint8_t frame[512];
    size_t n = fidbus_enc_register(frame, sizeof frame, 1, "acme.audit@1.0.0",
                                   "event:any", 0, 0, 0);
    ck_assert_uint_gt(n, 0);
    fb_e2e_raw_send(r, frame, n);
    fb_e2e_raw_expect_ack(r, 1, fidbus_funcid("acme.audit@1.0.0"));
    return r;
}

/* The next CALL on m; answered ok. */
static const struct fidbus_msg *next_call(struct fb_e2e_raw *m)
{
    ck_assert_int_eq(fb_e2e_raw_recv(m, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_uint_eq(m->msg.type, FIDBUS_MSG_CALL);
    uint8_t frame[64];
    size_t n = fidbus_enc_result(frame, sizeof frame, false, m->msg.seq, FIDBUS_OK, NULL);
    fb_e2e_raw_send(m, frame, n);
    return &m->msg;
}

/* The line of `text` that starts with `prefix`, copied; fails if none. */
static char *line_of(const char *text, const char *prefix)
{
    for (const char *l = text; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (strncmp(l, prefix, strlen(prefix)) == 0)
            return strndup(l, n);
        l = nl ? nl + 1 : NULL;
    }
    ck_abort_msg("no line starting with '%s' in:\n%s", prefix, text);
    return NULL;
}

static void expect_ids(const char *text, const char *prefix, const char *want)
{
    char *l = line_of(text, prefix);
    ck_assert_msg(strstr(l, want), "'%s' lacks '%s'", l, want);
    free(l);
}

/* A publisher running as another uid is named by uid, pid and conn: to an
 * inline handler, to a blocking one (the pool's copy) and in the log
 * plugin's line; a TCP publisher has uid and pid -1; a plugin's own
 * publish has -1, -1 and conn 0. */
START_TEST(test_e2e_taps_identity)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_e2e_taps_identity: SKIPPED: needs root to run a "
                        "publisher as another uid\n");
        return;
    }
    struct fb_e2e_opts o = {.tcp = true, .listen_extra = "unix_mode = 0666"};
    struct fb_e2e *t = fb_e2e_up(&o, whois_conf);
    fb_e2e_let_others_in(t);
    struct fb_e2e_raw *m = member(t);

    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(publish_as_nobody(t->bus));
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "publisher child status 0x%x",
                  ws);

    /* the CALL names the Unix publisher; a TCP publisher's has no uid/pid */
    const struct fidbus_msg *call = next_call(m);
    ck_assert(fidbus_msg_has(call, FIDBUS_K_UID) && call->uid == 65534);
    ck_assert(fidbus_msg_has(call, FIDBUS_K_PID) && call->pid == (uint64_t)pid);

    struct fidbus_client *c = fb_e2e_connect_tcp(t);
    ck_assert_int_eq(fidbus_publish_seq(c, 2, 0, "rem.x", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(
        fidbus_publish_seq(c, 1, FIDBUS_FLAG_ACK, "who.tcp", NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(fidbus_flush(c), 0);
    struct fidbus_answer a = {0};
    ck_assert_int_ge(fidbus_client_recv(c, &a, -1), 0);
    ck_assert_uint_eq(a.type, FIDBUS_MSG_ACK);
    fidbus_client_close(c);
    call = next_call(m);
    ck_assert(!fidbus_msg_has(call, FIDBUS_K_UID) && !fidbus_msg_has(call, FIDBUS_K_PID));
    fb_e2e_raw_close(m);

    char who[96];
    snprintf(who, sizeof who, "uid=65534 pid=%d conn=", (int)pid);
    char *w = fb_e2e_read(fb_e2e_file(t, "whois.txt"), NULL);
    expect_ids(w, "inline who.nobody ", who);
    expect_ids(w, "blocking who.nobody ", who);
    expect_ids(w, "inline again.nobody ", who);
    /* the plugin published whois.re itself */
    expect_ids(w, "inline whois.re ", "uid=-1 pid=-1 conn=0");
    expect_ids(w, "inline who.tcp ", "uid=-1 pid=-1 conn=");
    char *l = line_of(w, "inline who.nobody ");
    ck_assert_msg(!strstr(l, "conn=0"), "%s: no connection id", l);
    free(l);
    free(w);

    char *log = fb_e2e_read(fb_e2e_file(t, "log.txt"), NULL);
    l = strstr(log, "event=who.nobody ");
    ck_assert_ptr_nonnull(l);
    ck_assert_msg(strstr(l, who), "log line lacks '%s':\n%s", who, log);
    free(log);

    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------------------------------- taps */

/* clang-format off */
static const char tap_conf[] =
    FB_E2E_COUNT
    "[route ta]\nevent = t.a\nto = fidbus.count\n";
/* clang-format on */

/* A control connection with a tap open on `event` (NULL: no key), tag
 * tk=tv (tk NULL: none), buffer bytes (0: no key); asserts the REPLY is
 * `want` (0: ok) and returns the connection (NULL when refused). */
static struct fb_e2e_raw *tap_try(struct fb_e2e *t, const char *event, const char *tk,
                                  const char *tv, uint64_t buffer, int *code)
{
    struct fb_e2e_raw *r = fb_e2e_raw_control(t);
    fb_e2e_raw_hello(r);
    cbor_item_t *args = cbor_new_indefinite_map();
    if (event)
        cbor_map_add(args, (struct cbor_pair){cbor_move(cbor_build_string("event")),
                                              cbor_move(cbor_build_string(event))});
    if (tk) {
        cbor_item_t *tags = cbor_new_indefinite_map();
        cbor_map_add(tags, (struct cbor_pair){cbor_move(cbor_build_string(tk)),
                                              cbor_move(cbor_build_string(tv))});
        cbor_map_add(args, (struct cbor_pair){cbor_move(cbor_build_string("tags")),
                                              cbor_move(tags)});
    }
    if (buffer)
        cbor_map_add(args,
                     (struct cbor_pair){cbor_move(cbor_build_string("buffer")),
                                        cbor_move(cbor_build_uint32((uint32_t)buffer))});
    unsigned char *ab = NULL;
    size_t cap = 0, alen = cbor_serialize_alloc(args, &ab, &cap);
    cbor_decref(&args);
    ck_assert_uint_gt(alen, 0);
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND) | FIDBUS_BIT(FIDBUS_K_ARGS),
        .type = FIDBUS_MSG_REQUEST,
        .seq = 1,
        .command = "tap.open",
        .args = {ab, alen},
    };
    fb_e2e_raw_msg(r, &o);
    free(ab);
    ck_assert_int_eq(fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS), 1);
    ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_REPLY);
    *code = (int)r->msg.code;
    if (*code) {
        fb_e2e_raw_close(r);
        return NULL;
    }
    return r;
}

static struct fb_e2e_raw *tap_open(struct fb_e2e *t, const char *event, const char *tk,
                                   const char *tv, uint64_t buffer, int want)
{
    int code;
    struct fb_e2e_raw *r = tap_try(t, event, tk, tv, buffer, &code);
    ck_assert_msg(code == want, "tap.open: code %d, want %d", code, want);
    return r;
}

/* The next EVENT on r (asserts one arrives). */
static const struct fidbus_msg *next_event(struct fb_e2e_raw *r)
{
    int rc = fb_e2e_raw_recv(r, FB_E2E_TIMEOUT_MS);
    ck_assert_msg(rc == 1, "waiting for an EVENT: %d", rc);
    ck_assert_uint_eq(r->msg.type, FIDBUS_MSG_EVENT);
    ck_assert(fidbus_msg_has(&r->msg, FIDBUS_K_GENERATION) &&
              fidbus_msg_has(&r->msg, FIDBUS_K_ROUTE) &&
              fidbus_msg_has(&r->msg, FIDBUS_K_CONN) &&
              fidbus_msg_has(&r->msg, FIDBUS_K_DROPPED));
    return &r->msg;
}

static void pub_acked(struct fidbus_client *c, uint64_t seq, const char *event,
                      const struct fidbus_tag *tags, size_t ntags, const uint8_t *payload,
                      size_t plen)
{
    ck_assert_int_eq(
        fidbus_publish_seq(c, seq, FIDBUS_FLAG_ACK, event, tags, ntags, payload, plen),
        0);
    ck_assert_int_eq(fidbus_flush(c), 0);
    struct fidbus_answer a = {0};
    ck_assert_int_ge(fidbus_client_recv(c, &a, -1), 0);
    ck_assert_uint_eq(a.seq, seq);
}

/* A tap sees exactly the events it matches, routed or not, with their
 * payload byte-exact, the route's name (null when unrouted), the
 * publisher's connection and no drops; a second tap with a tag
 * constraint sees only its own; 3,000 events in a row all arrive. */
START_TEST(test_e2e_taps_matching)
{
    struct fb_e2e *t = fb_e2e_up(NULL, tap_conf);
    struct fb_e2e_raw *a = tap_open(t, "t.*", NULL, NULL, 0, 0);
    struct fb_e2e_raw *b = tap_open(t, "*", "color", "*", 0, 0);
    /* bad args: INVALID, and the connection is not a tap */
    ck_assert_ptr_null(tap_open(t, "t a", NULL, NULL, 0, FIDBUS_INVALID));
    ck_assert_ptr_null(tap_open(t, "t.*", NULL, NULL, 100, FIDBUS_INVALID));

    struct fidbus_client *c = fb_e2e_connect(t);
    static const uint8_t p1[] = {0x83, 0x01, 0x62, 'h', 'i', 0xf6}; /* [1, "hi", null] */
    static const uint8_t p2[] = {0x44, 0x00, 0xff, 0x10, 0x7f};     /* h'00ff107f' */
    const struct fidbus_tag red = {"color", "red"};
    pub_acked(c, 1, "t.a", NULL, 0, p1, sizeof p1); /* a (routed) */
    pub_acked(c, 2, "t.b", NULL, 0, NULL, 0);       /* a (unrouted) */
    pub_acked(c, 3, "x.c", &red, 1, p2, sizeof p2); /* b (unrouted) */
    pub_acked(c, 4, "x.d", NULL, 0, p2, sizeof p2); /* nobody */
    pub_acked(c, 5, "t.a", &red, 1, p2, sizeof p2); /* a and b */

    const struct fidbus_msg *m = next_event(a);
    ck_assert_str_eq(m->event, "t.a");
    ck_assert(m->payload.len == sizeof p1 && memcmp(m->payload.ptr, p1, sizeof p1) == 0);
    ck_assert(m->route.ptr && m->route.len == 2 && memcmp(m->route.ptr, "ta", 2) == 0);
    ck_assert_uint_ge(m->generation, 1);
    ck_assert_uint_eq(m->dropped, 0);
    uint64_t conn = m->conn;
    ck_assert_uint_gt(conn, 0);
    m = next_event(a);
    ck_assert_str_eq(m->event, "t.b");
    ck_assert(!fidbus_msg_has(m, FIDBUS_K_PAYLOAD));
    ck_assert_ptr_null(m->route.ptr);
    ck_assert_uint_eq(m->conn, conn);
    m = next_event(a);
    ck_assert_str_eq(m->event, "t.a");
    ck_assert(m->ntags == 1 && strcmp(m->tags[0].value, "red") == 0);
    ck_assert(m->payload.len == sizeof p2 && memcmp(m->payload.ptr, p2, sizeof p2) == 0);

    m = next_event(b);
    ck_assert_str_eq(m->event, "x.c");
    ck_assert_ptr_null(m->route.ptr);
    ck_assert(m->payload.len == sizeof p2 && memcmp(m->payload.ptr, p2, sizeof p2) == 0);
    m = next_event(b);
    ck_assert_str_eq(m->event, "t.a");

    /* keeping up loses nothing: every one, in order */
    enum { MANY = 3000 };
    for (uint32_t i = 0; i < MANY; i++) {
        uint8_t pl[5] = {0x1a, (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
                         (uint8_t)i};
        ck_assert_int_eq(fidbus_publish_seq(c, 0, 0, "t.many", NULL, 0, pl, sizeof pl),
                         0);
    }
    pub_acked(c, 6, "t.end", NULL, 0, NULL, 0);
    for (uint32_t i = 0; i < MANY; i++) {
        m = next_event(a);
        ck_assert_str_eq(m->event, "t.many");
        ck_assert_uint_eq(m->dropped, 0);
        ck_assert(m->payload.len == 5 && m->payload.ptr[1] == (uint8_t)(i >> 24) &&
                  m->payload.ptr[4] == (uint8_t)i &&
                  m->payload.ptr[3] == (uint8_t)(i >> 8));
    }
    m = next_event(a);
    ck_assert_str_eq(m->event, "t.end");
    /* and tap b saw none of them */
    ck_assert_int_eq(fb_e2e_raw_recv(b, 200), -ETIMEDOUT);

    fidbus_client_close(c);
    fb_e2e_raw_close(a);
    fb_e2e_raw_close(b);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A tap whose reader never reads: no publish is refused or held (every
 * ACK arrives), and once it reads again the copies it got and the drops
 * its EVENTs report add up to every event published. */
START_TEST(test_e2e_taps_never_reads)
{
    struct fb_e2e *t = fb_e2e_up(NULL, tap_conf);
    struct fb_e2e_raw *a = tap_open(t, "t.*", NULL, NULL, 4096, 0);
    struct fidbus_client *c = fb_e2e_connect(t);
    uint8_t pl[300];
    pl[0] = 0x59, pl[1] = 0x01, pl[2] = 0x29; /* 297-byte byte string */
    memset(pl + 3, 0xab, sizeof pl - 3);
    enum { N = 20000, BATCH = 100 };
    uint64_t published = 0;
    for (int i = 0; i < N / BATCH; i++) {
        for (int k = 0; k < BATCH; k++)
            ck_assert_int_eq(fidbus_publish_seq(c, (uint64_t)(i * BATCH + k + 1),
                                                FIDBUS_FLAG_ACK, "t.a", NULL, 0, pl,
                                                sizeof pl),
                             0);
        ck_assert_int_eq(fidbus_flush(c), 0);
        for (int k = 0; k < BATCH; k++) {
            struct fidbus_answer ans = {0};
            ck_assert_int_ge(fidbus_client_recv(c, &ans, -1), 0);
            ck_assert_msg(ans.type == FIDBUS_MSG_ACK,
                          "publish %d: answer type %d code %d", i * BATCH + k,
                          (int)ans.type, (int)ans.code);
        }
        published += BATCH;
    }
    /* no publisher connection was held back or refused meanwhile */
    ck_assert_int_eq(fb_e2e_limit_hits(t, "pause_output"), 0);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "pause_inflight"), 0);
    ck_assert_int_eq(fb_e2e_limit_hits(t, "busy"), 0);
    /* now read: until one of our markers arrives */
    uint64_t got = 0, dropped = 0;
    bool last = false;
    for (int round = 0; round < 100 && !last; round++) {
        pub_acked(c, 1000000 + (uint64_t)round, "t.last", NULL, 0, NULL, 0);
        published++;
        while (!last) {
            int rc = fb_e2e_raw_recv(a, 500);
            if (rc == -ETIMEDOUT)
                break;
            ck_assert_int_eq(rc, 1);
            ck_assert_uint_eq(a->msg.type, FIDBUS_MSG_EVENT);
            got++;
            dropped += a->msg.dropped;
            last = strcmp(a->msg.event, "t.last") == 0;
        }
    }
    ck_assert_msg(last, "the tap never delivered a t.last");
    ck_assert_msg(dropped > 0, "a 4 KiB tap that was not read dropped nothing");
    ck_assert_msg(got + dropped == published,
                  "got %" PRIu64 " + dropped %" PRIu64 " != published %" PRIu64, got,
                  dropped, published);
    fidbus_client_close(c);
    fb_e2e_raw_close(a);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* 16 taps at most; closing one frees its slot (and, under ASan, its
 * buffers); one tap per connection. */
START_TEST(test_e2e_taps_limit_and_close)
{
    struct fb_e2e *t = fb_e2e_up(NULL, tap_conf);
    struct fb_e2e_raw *taps[16];
    for (int i = 0; i < 16; i++)
        taps[i] = tap_open(t, "*", NULL, NULL, 0, 0);
    ck_assert_ptr_null(tap_open(t, "*", NULL, NULL, 0, FIDBUS_BUSY));
    for (int i = 0; i < 16; i++)
        fb_e2e_raw_close(taps[i]);
    /* the daemon closes them in its own time: each slot comes back */
    for (int i = 0; i < 16; i++) {
        int code = FIDBUS_BUSY;
        uint64_t until = fb_e2e_now_ms() + FB_E2E_TIMEOUT_MS;
        while (!(taps[i] = tap_try(t, "*", NULL, NULL, 0, &code)) &&
               code == FIDBUS_BUSY && fb_e2e_now_ms() < until)
            usleep(10000); /* polling the daemon's close, bounded */
        ck_assert_msg(taps[i], "tap %d: code %d after the others closed", i, code);
    }
    ck_assert_ptr_null(tap_open(t, "*", NULL, NULL, 0, FIDBUS_BUSY));
    for (int i = 0; i < 16; i++)
        fb_e2e_raw_close(taps[i]);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------------------------------- tail */

/* The next line from fd within FB_E2E_TIMEOUT_MS (NULL at timeout or
 * EOF); kept bytes in buf/len. */
static char *read_line(int fd, char *buf, size_t cap, size_t *len, int timeout_ms)
{
    uint64_t until = fb_e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *nl = memchr(buf, '\n', *len);
        if (nl) {
            char *line = strndup(buf, (size_t)(nl - buf));
            size_t rest = *len - (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, rest);
            *len = rest;
            return line;
        }
        ck_assert_uint_lt(*len, cap);
        uint64_t now = fb_e2e_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (now >= until || poll(&pfd, 1, (int)(until - now)) <= 0)
            return NULL;
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n <= 0)
            return NULL;
        *len += (size_t)n;
    }
}

/* fidbusctl tail --json on a pipe: one JSON object per line, flushed as
 * each event passes, with event, tags, payload as JSON, generation, route
 * and conn; nothing else on stdout, nothing on stderr; SIGINT ends it
 * with status 0. */
START_TEST(test_e2e_taps_tail_json)
{
    struct fb_e2e *t = fb_e2e_up(NULL, tap_conf);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    char errpath[256];
    snprintf(errpath, sizeof errpath, "%s", fb_e2e_file(t, "tail.err"));
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[1], 1);
        int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(e, 2);
        close(p[0]);
        execl(fb_e2e_built("daemon/fidbusctl"), "fidbusctl", "--socket", t->control,
              "tail", "t.*", "--json", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    struct fidbus_client *c = fb_e2e_connect(t);
    char buf[65536];
    size_t len = 0;
    /* the tap opens in fidbusctl's time: publish until its first line */
    char *line = NULL;
    for (int i = 0; i < 100 && !line; i++) {
        pub_acked(c, 100 + (uint64_t)i, "t.ready", NULL, 0, NULL, 0);
        line = read_line(p[0], buf, sizeof buf, &len, 100);
    }
    ck_assert_msg(line, "fidbusctl tail printed nothing");
    free(line);

    static const uint8_t p1[] = {0x83, 0x01, 0x62, 'h', 'i', 0xf6}; /* [1, "hi", null] */
    const struct fidbus_tag tg = {"user", "u\"1"};
    pub_acked(c, 1, "t.a", &tg, 1, p1, sizeof p1);
    pub_acked(c, 2, "x.none", NULL, 0, p1, sizeof p1);
    pub_acked(c, 3, "t.b", NULL, 0, NULL, 0);
    int seen = 0;
    while (seen < 2) {
        line = read_line(p[0], buf, sizeof buf, &len, FB_E2E_TIMEOUT_MS);
        ck_assert_msg(line, "tail: a line is missing");
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        ck_assert_msg(o && json_is_object(o), "not a JSON object: %s", line);
        const char *ev = json_string_value(json_object_get(o, "event"));
        ck_assert_ptr_nonnull(ev);
        if (strcmp(ev, "t.ready") == 0) {
            json_decref(o);
            free(line);
            continue;
        }
        ck_assert(json_is_integer(json_object_get(o, "generation")));
        ck_assert(json_integer_value(json_object_get(o, "conn")) > 0);
        ck_assert(json_is_object(json_object_get(o, "tags")));
        if (seen == 0) {
            ck_assert_str_eq(ev, "t.a");
            ck_assert_str_eq(json_string_value(json_object_get(o, "route")), "ta");
            ck_assert_str_eq(
                json_string_value(json_object_get(json_object_get(o, "tags"), "user")),
                "u\"1");
            json_t *want = json_loads("[1, \"hi\", null]", 0, NULL);
            ck_assert_msg(json_equal(json_object_get(o, "payload"), want),
                          "payload in %s", line);
            json_decref(want);
        } else {
            ck_assert_str_eq(ev, "t.b");
            ck_assert(json_is_null(json_object_get(o, "route")));
            ck_assert_ptr_null(json_object_get(o, "payload"));
        }
        seen++;
        json_decref(o);
        free(line);
    }
    kill(pid, SIGINT);
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "tail after SIGINT: 0x%x", ws);
    /* nothing more on stdout but whole lines of t.* events */
    while ((line = read_line(p[0], buf, sizeof buf, &len, 1000))) {
        ck_assert_msg(strstr(line, "\"event\":\"t."), "stray stdout line: %s", line);
        free(line);
    }
    ck_assert_uint_eq(len, 0);
    close(p[0]);
    size_t elen = 0;
    char *err = fb_e2e_read(errpath, &elen);
    ck_assert_msg(elen == 0, "tail's stderr: %s", err);
    free(err);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("e2e.taps");
    TCase *tc = tcase_create("taps");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_taps_identity);
    tcase_add_test(tc, test_e2e_taps_matching);
    tcase_add_test(tc, test_e2e_taps_never_reads);
    tcase_add_test(tc, test_e2e_taps_limit_and_close);
    tcase_add_test(tc, test_e2e_taps_tail_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(suite());
}
