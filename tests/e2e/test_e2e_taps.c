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

static Suite *suite(void)
{
    Suite *s = suite_create("e2e.taps");
    TCase *tc = tcase_create("taps");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_taps_identity);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fb_e2e_main(suite());
}
