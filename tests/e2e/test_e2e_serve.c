/*
 * End-to-end tests of the serving side of libfidbus and of fidbus-serve
 * against a real fidbusd (ctest: e2e.serve; proto/README.md, README
 * "Serving functions from your process"):
 *
 *   - a member registers, serves, and an acked publish routed to it is
 *     answered through it (ACK result 1; the member saw the payload);
 *   - calls answered later from another thread (fidbus_call_done), some
 *     failed: the publisher gets ok or HANDLER_FAILED for each;
 *   - RETRY goes to the other member; with no other member UNAVAILABLE;
 *   - fidbus_unregister drains: a call held while it runs still ends ok,
 *     and afterwards the function has no member (UNAVAILABLE);
 *   - a reconnecting member registers again after the daemon restarts;
 *   - fidbus-serve hosting plugins/log.so and count.so (and count.so
 *     again with namespace=acme), stopped by SIGTERM (exit 0, fini ran);
 *   - the README's serving example (tests/readme_serve, extracted from
 *     README.md by tests/CMakeLists.txt) serves 5 calls and leaves;
 *   - fidbus-serve with a blocking plugin: calls held on its pool at
 *     once, SIGTERM drains them (every publish ok); SIGTERM while the
 *     daemon is away exits at once;
 *   - fidbus-serve with a plugin that crashes on a chosen event: the
 *     daemon lives on, the publisher gets UNAVAILABLE, and a restarted
 *     fidbus-serve serves again.
 *
 * A daemon built before remote functions were served answers REGISTER
 * with UNSUPPORTED: then, and only then, the tests end early and the
 * whole test reports itself skipped (77).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fidbus/funcid.h>

#include "harness.h"

#define FN "acme.audit@1.0.0"

/* Set by a test (a forked child) when the daemon answered UNSUPPORTED. */
static atomic_int *unsupported;

/* clang-format off */
static const char conf[] =
    "[remote acme]\ncredit = 8\ntimeout_ms = 5000\nattempts = 3\n"
    "[route audit]\nevent = order.*\nto = acme.audit@1.0.0\n";
static const char conf_serve[] =
    "[remote *]\n"
    "[route log]\nevent = log.*\nto = fidbus.log@1.0.0\n"
    "[route count]\nevent = count.*\nto = fidbus.count@1.0.0\n"
    "[route crash]\nevent = crash.*\nto = test.crash@1.0.0\n"
    "[route gate]\nevent = gate.*\nto = test.gate@1.0.0\n"
    "[route acme]\nevent = acme.*\nto = acme.count@1.0.0\n";
/* clang-format on */

/* fidbus_register, or false (and the skip noted) on UNSUPPORTED. */
static bool reg(struct fidbus_client *c, const char *fn,
                const struct fidbus_serve_opts *o, fidbus_call_fn cb, void *arg)
{
    int rc = fidbus_register(c, fn, "event:any", o, cb, arg, NULL);
    if (rc == FIDBUS_EPROTO_CODE(FIDBUS_UNSUPPORTED)) {
        atomic_store(unsupported, 1);
        return false;
    }
    ck_assert_msg(rc == 0, "register %s: %s: %s", fn, fidbus_strerror(rc),
                  fidbus_client_last_error(c));
    return true;
}

/* A member serving on its own thread until `quit`. */
struct member {
    struct fidbus_client *c;
    pthread_t th;
    atomic_int quit;
    atomic_int calls;
    atomic_int payload_ok;
    int ret; /* what the callback returns */
    /* pending calls answered from another thread */
    bool later;
    uint64_t tokens[256];
    uint64_t attempt1[256];
    atomic_int ntok;
};

static int member_cb(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    struct member *m = arg;
    atomic_fetch_add(&m->calls, 1);
    /* payload: the publisher's CBOR uint 42 */
    if (call->payload_len == 2 && call->payload[0] == 0x18 && call->payload[1] == 42 &&
        call->funcid == fidbus_funcid(FN) && strncmp(call->event, "order.", 6) == 0)
        atomic_fetch_add(&m->payload_ok, 1);
    if (m->later) {
        int i = atomic_load(&m->ntok);
        if (i < 256) {
            m->tokens[i] = call->token;
            atomic_store(&m->ntok, i + 1);
        }
        return FIDBUS_CALL_PENDING;
    }
    return m->ret;
}

static void *member_main(void *arg)
{
    struct member *m = arg;
    while (!atomic_load(&m->quit)) {
        int rc = fidbus_serve(m->c, 50);
        if (rc < 0 && rc != -ETIMEDOUT)
            break;
    }
    return NULL;
}

static struct member *member_new(struct fb_e2e *t, bool reconnect)
{
    struct member *m = calloc(1, sizeof(*m));
    struct fidbus_client_opts o = {.timeout_ms = 10000,
                                   .reconnect_max_ms = reconnect ? 200 : 0};
    ck_assert_int_eq(fidbus_client_connect(&m->c, t->bus_addr, &o), 0);
    return m;
}

static void member_run(struct member *m)
{
    pthread_create(&m->th, NULL, member_main, m);
}

static void member_free(struct member *m)
{
    if (m->th) {
        atomic_store(&m->quit, 1);
        fidbus_serve_stop(m->c);
        pthread_join(m->th, NULL);
    }
    fidbus_client_close(m->c);
    free(m);
}

static const uint8_t p42[] = {0x18, 42};

static int probe_cb(struct fidbus_client *c, const struct fidbus_call *call, void *arg)
{
    return 0;
}

static int publish(struct fidbus_client *c, const char *ev, uint64_t *result)
{
    return fidbus_publish_ack(c, ev, NULL, 0, p42, sizeof p42, result);
}

/* ------------------------------------------------------------- probe */

/*
 * Runs first: a daemon with only a [remote] section (no route to a remote
 * function, which an older daemon refuses at start-up) is asked to
 * REGISTER. UNSUPPORTED sets `unsupported`, and every later test then
 * ends at once (the binary exits 77); any other refusal fails.
 */
START_TEST(test_e2e_serve_probe)
{
    struct fb_e2e *t = fb_e2e_up(NULL, "[remote *]\n");
    struct fidbus_client *c = fb_e2e_connect(t);
    int rc = fidbus_register(c, "probe.p@1.0.0", "", NULL, probe_cb, NULL, NULL);
    if (rc == FIDBUS_EPROTO_CODE(FIDBUS_UNSUPPORTED))
        atomic_store(unsupported, 1);
    else
        ck_assert_msg(rc == 0, "register: %s: %s", fidbus_strerror(rc),
                      fidbus_client_last_error(c));
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* Every test but the probe starts with this. */
#define SKIP_IF_UNSUPPORTED()                                                            \
    do {                                                                                 \
        if (atomic_load(unsupported))                                                    \
            return;                                                                      \
    } while (0)

/* ------------------------------------------------- register and serve */

START_TEST(test_e2e_serve_acked_publish)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct member *m = member_new(t, false);
    if (!reg(m->c, FN, NULL, member_cb, m))
        goto out;
    member_run(m);
    struct fidbus_client *p = fb_e2e_connect(t);
    for (int i = 0; i < 50; i++) {
        uint64_t r = 0;
        ck_assert_int_eq(publish(p, "order.created", &r), 0);
        ck_assert_uint_eq(r, 1);
    }
    /* un-acked ones, then the PING barrier waits for their calls too */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(fidbus_publish(p, "order.paid", NULL, 0, p42, sizeof p42), 0);
    fb_e2e_ping(p);
    ck_assert_int_eq(atomic_load(&m->calls), 150);
    ck_assert_int_eq(atomic_load(&m->payload_ok), 150);
    /* fidbusctl top names the remote function and lists its member */
    char *top = fb_e2e_ctl(t, 0, NULL, "top", "--once", NULL);
    char row[128];
    snprintf(row, sizeof row, "%s ", FN);
    const char *sec = strstr(top, "REMOTE FUNCTION (MEMBER)");
    ck_assert_msg(sec && strstr(sec, row) && !strstr(top, "REMOTE MEMBERS: none"),
                  "top --once lacks the member of %s:\n%s", FN, top);
    free(top);
    fidbus_client_close(p);
out:
    member_free(m);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* --------------------------------- answered later from another thread */

static void *completer(void *arg)
{
    struct member *m = arg;
    int done = 0;
    while (!atomic_load(&m->quit) || done < atomic_load(&m->ntok)) {
        int n = atomic_load(&m->ntok);
        for (; done < n; done++) /* every third one fails */
            fidbus_call_done(m->c, m->tokens[done],
                             done % 3 == 2 ? FIDBUS_HANDLER_FAILED : 0);
        usleep(1000);
    }
    return NULL;
}

START_TEST(test_e2e_serve_async_completion)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct member *m = member_new(t, false);
    m->later = true;
    if (!reg(m->c, FN, NULL, member_cb, m))
        goto out;
    member_run(m);
    pthread_t w;
    pthread_create(&w, NULL, completer, m);
    struct fidbus_client *p = fb_e2e_connect(t);
    int ok = 0, failed = 0;
    for (int i = 0; i < 60; i++) {
        uint64_t r = 9;
        int rc = publish(p, "order.created", &r);
        if (rc == 0 && r == 1)
            ok++;
        else if (rc == FIDBUS_EPROTO_CODE(FIDBUS_HANDLER_FAILED) && r == 0)
            failed++;
        else
            ck_abort_msg("publish %d: %s (result %llu)", i, fidbus_strerror(rc),
                         (unsigned long long)r);
    }
    ck_assert_int_eq(ok, 40);
    ck_assert_int_eq(failed, 20);
    atomic_store(&m->quit, 1);
    pthread_join(w, NULL);
    fidbus_client_close(p);
out:
    member_free(m);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* -------------------------------------------------------------- RETRY */

START_TEST(test_e2e_serve_retry)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct member *a = member_new(t, false), *b = member_new(t, false);
    a->ret = FIDBUS_RETRY;
    if (!reg(a->c, FN, NULL, member_cb, a))
        goto out;
    member_run(a);
    struct fidbus_client *p = fb_e2e_connect(t);
    /* alone, a member that only says RETRY: the call cannot run */
    uint64_t r = 9;
    ck_assert_int_eq(publish(p, "order.created", &r),
                     FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
    ck_assert_uint_eq(r, 0);
    ck_assert_int_ge(atomic_load(&a->calls), 1);

    ck_assert(reg(b->c, FN, NULL, member_cb, b));
    member_run(b);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(publish(p, "order.created", &r), 0);
        ck_assert_uint_eq(r, 1);
    }
    ck_assert_int_eq(atomic_load(&b->calls), 20); /* every one ran on b */
    fidbus_client_close(p);
out:
    member_free(a);
    member_free(b);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------------ unregister drains */

struct pub_one {
    struct fb_e2e *t;
    int rc;
    uint64_t r;
};

static void *publish_one(void *arg)
{
    struct pub_one *po = arg;
    struct fidbus_client *p = fb_e2e_connect(po->t);
    po->rc = publish(p, "order.created", &po->r);
    fidbus_client_close(p);
    return NULL;
}

static void *answer_after(void *arg)
{
    struct member *m = arg;
    usleep(300 * 1000); /* while fidbus_unregister waits */
    fidbus_call_done(m->c, m->tokens[0], 0);
    return NULL;
}

START_TEST(test_e2e_serve_unregister_drains)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct member *m = member_new(t, false);
    m->later = true;
    if (!reg(m->c, FN, NULL, member_cb, m))
        goto out;
    struct pub_one po = {.t = t};
    pthread_t pt, w;
    pthread_create(&pt, NULL, publish_one, &po);
    /* serve (on this thread) until the call is held */
    for (int i = 0; i < 400 && atomic_load(&m->ntok) < 1; i++)
        ck_assert_int_ge(fidbus_serve(m->c, 25), 0);
    ck_assert_int_eq(atomic_load(&m->ntok), 1);
    pthread_create(&w, NULL, answer_after, m);
    ck_assert_int_eq(fidbus_unregister(m->c, FN), 0);
    pthread_join(w, NULL);
    pthread_join(pt, NULL);
    ck_assert_msg(po.rc == 0 && po.r == 1, "held call ended %s", fidbus_strerror(po.rc));
    /* gone: no member left */
    struct fidbus_client *p = fb_e2e_connect(t);
    uint64_t r;
    ck_assert_int_eq(publish(p, "order.created", &r),
                     FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
    ck_assert_int_eq(fidbus_unregister(m->c, FN), -ENOENT);
    fidbus_client_close(p);
out:
    member_free(m);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* ---------------------------------------- reconnect registers again */

START_TEST(test_e2e_serve_reconnect)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct member *m = member_new(t, true);
    if (!reg(m->c, FN, NULL, member_cb, m))
        goto out;
    member_run(m);
    struct fidbus_client *p = fb_e2e_connect(t);
    uint64_t r;
    ck_assert_int_eq(publish(p, "order.created", &r), 0);
    fidbus_client_close(p);

    fb_e2e_stop_ok(t);
    fb_e2e_start(t);
    p = fb_e2e_connect(t);
    /* the member comes back by itself; until then the call is UNAVAILABLE */
    int rc = -1;
    for (int i = 0; i < 200; i++) {
        rc = publish(p, "order.created", &r);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
        usleep(25 * 1000);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r, 1);
    ck_assert_uint_ge(fidbus_client_reconnects(m->c), 1);
    fidbus_client_close(p);
out:
    member_free(m);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* -------------------------------------------------------- fidbus-serve */

struct served {
    pid_t pid;
    char err[200];
};

/* Runs argv with stdout and stderr to s->err (in the test dir). */
static void spawn(struct served *s, const char *const argv[])
{
    pid_t parent = getpid();
    s->pid = fork();
    ck_assert_int_ge(s->pid, 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(s->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
}

/* Runs fidbus-serve --bus BUS ARGS... */
static void serve_spawn(struct fb_e2e *t, struct served *s, const char *tag,
                        const char *const args[])
{
    const char *argv[16];
    int n = 0;
    argv[n++] = fb_e2e_built("daemon/fidbus-serve");
    argv[n++] = "--bus";
    argv[n++] = t->bus_addr;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(s->err, sizeof s->err, "%s/serve-%s.err", t->dir, tag);
    spawn(s, argv);
}

/* Waits for "serving" in its stderr; false when it said UNSUPPORTED. */
static bool serve_ready(struct served *s)
{
    for (int i = 0; i < 400; i++) {
        char *e = fb_e2e_read(s->err, NULL);
        bool ready = e && strstr(e, "serving ");
        bool unsup = e && strstr(e, "UNSUPPORTED");
        if (unsup)
            atomic_store(unsupported, 1);
        ck_assert_msg(!e || !strstr(e, "Sanitizer"), "fidbus-serve:\n%s", e);
        free(e);
        if (ready)
            return true;
        if (unsup)
            return false;
        int st;
        ck_assert_msg(waitpid(s->pid, &st, WNOHANG) == 0, "fidbus-serve exited early");
        usleep(25 * 1000);
    }
    ck_abort_msg("fidbus-serve did not register within 10 s");
    return false;
}

/* SIGTERM; returns the wait status. */
static int serve_stop(struct served *s)
{
    int st = 0;
    kill(s->pid, SIGTERM);
    ck_assert_int_eq(waitpid(s->pid, &st, 0), s->pid);
    char *e = fb_e2e_read(s->err, NULL);
    ck_assert_msg(!e || !strstr(e, "Sanitizer"), "fidbus-serve:\n%s", e);
    free(e);
    return st;
}

START_TEST(test_e2e_serve_log_and_count)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf_serve);
    char logf[200], countf[200];
    snprintf(logf, sizeof logf, "file=%s/remote-log.txt", t->dir);
    snprintf(countf, sizeof countf, "report_file=%s/remote-count.json", t->dir);
    struct served l, c;
    serve_spawn(t, &l, "log",
                (const char *const[]){fb_e2e_built("plugins/log.so"), logf, NULL});
    if (!serve_ready(&l)) {
        kill(l.pid, SIGKILL);
        waitpid(l.pid, NULL, 0);
        goto out;
    }
    serve_spawn(t, &c, "count",
                (const char *const[]){"--credit", "4", fb_e2e_built("plugins/count.so"),
                                      countf, "interval_ms=0", NULL});
    ck_assert(serve_ready(&c));

    /* the same plugin again, under another namespace */
    struct served a;
    serve_spawn(
        t, &a, "acme",
        (const char *const[]){fb_e2e_built("plugins/count.so"), "namespace=acme", NULL});
    ck_assert(serve_ready(&a));
    char *said = fb_e2e_read(a.err, NULL);
    ck_assert_msg(strstr(said, "serving acme.count@1.0.0"), "%s", said);
    free(said);

    struct fidbus_client *p = fb_e2e_connect(t);
    uint64_t r;
    ck_assert_int_eq(publish(p, "acme.x", &r), 0);
    ck_assert_uint_eq(r, 1);
    int st0 = serve_stop(&a);
    ck_assert_msg(WIFEXITED(st0) && WEXITSTATUS(st0) == 0, "namespace=acme: status %d",
                  st0);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(publish(p, "log.line", &r), 0);
        ck_assert_uint_eq(r, 1);
        ck_assert_int_eq(publish(p, "count.me", &r), 0);
        ck_assert_uint_eq(r, 1);
    }
    fidbus_client_close(p);
    int st = serve_stop(&l);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fidbus-serve log.so: status %d",
                  st);
    st = serve_stop(&c);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "fidbus-serve count.so: status %d", st);

    char path[200];
    snprintf(path, sizeof path, "%s/remote-log.txt", t->dir);
    char *text = fb_e2e_read(path, NULL);
    ck_assert_int_eq(fb_e2e_lines_with(text, "log.line", -1), 10);
    free(text);
    snprintf(path, sizeof path, "%s/remote-count.json", t->dir);
    text = fb_e2e_read(path, NULL); /* written by fini */
    ck_assert_msg(strstr(text, "count.me") && fb_e2e_json_count(text, "count.me") == 10,
                  "count report: %s", text);
    free(text);
out:
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

START_TEST(test_e2e_serve_plugin_crash)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf_serve);
    struct served s;
    const char *const args[] = {fb_e2e_built("tests/plugins/crash.so"), NULL};
    serve_spawn(t, &s, "crash1", args);
    if (!serve_ready(&s)) {
        kill(s.pid, SIGKILL);
        waitpid(s.pid, NULL, 0);
        goto out;
    }
    struct fidbus_client *p = fb_e2e_connect(t);
    uint64_t r;
    ck_assert_int_eq(publish(p, "crash.not", &r), 0);
    ck_assert_uint_eq(r, 1);
    ck_assert_int_eq(publish(p, "crash.now", &r), FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
    int st;
    ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "the plugin did not crash");
    fb_e2e_ping(p); /* the daemon lives on */
    ck_assert_int_eq(publish(p, "crash.not", &r), FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));

    serve_spawn(t, &s, "crash2", args);
    ck_assert(serve_ready(&s));
    ck_assert_int_eq(publish(p, "crash.not", &r), 0);
    ck_assert_uint_eq(r, 1);
    st = serve_stop(&s);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fidbus-serve: status %d", st);
    fidbus_client_close(p);
out:
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * fidbus-serve with a FIDBUS_FN_BLOCKING plugin (tests/plugins/gate.c):
 * four calls held at once on its pool (func.members says inflight 4),
 * SIGTERM while they are held: it drains -- keeps running until they
 * finish -- and every acked publish ends ok, none UNAVAILABLE.
 */
START_TEST(test_e2e_serve_blocking_drain)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf_serve);
    char gate[200], file[200], gate_kv[220], file_kv[220];
    snprintf(gate, sizeof gate, "%s/gate", t->dir);
    snprintf(file, sizeof file, "%s/gate.txt", t->dir);
    snprintf(gate_kv, sizeof gate_kv, "gate=%s", gate);
    snprintf(file_kv, sizeof file_kv, "file=%s", file);
    struct served s;
    serve_spawn(t, &s, "gate",
                (const char *const[]){"--credit", "4", "--threads", "4",
                                      fb_e2e_built("tests/plugins/gate.so"), gate_kv,
                                      file_kv, NULL});
    ck_assert(serve_ready(&s));
    struct fidbus_client *p = fb_e2e_connect(t);
    const uint64_t top = UINT64_C(1) << 63;
    for (uint64_t i = 1; i <= 4; i++)
        ck_assert_int_eq(fidbus_publish_seq(p, top | i, FIDBUS_FLAG_ACK, "gate.x", NULL,
                                            0, p42, sizeof p42),
                         0);
    ck_assert_int_eq(fidbus_flush(p), 0);

    char hex[FIDBUS_FUNCID_HEX];
    fidbus_funcid_hex(fidbus_funcid("test.gate@1.0.0"), hex);
    bool held = false;
    for (int i = 0; i < 400 && !held; i++) {
        char *out = fb_e2e_ctl(t, 0, NULL, "--json", "func", "members", hex, NULL);
        held = strstr(out, "\"inflight\":4") != NULL;
        free(out);
        if (!held)
            usleep(25 * 1000);
    }
    ck_assert_msg(held, "the four calls were never held at once");

    kill(s.pid, SIGTERM);
    usleep(100 * 1000);
    ck_assert_msg(waitpid(s.pid, NULL, WNOHANG) == 0,
                  "fidbus-serve left without draining");
    int fd = open(gate, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    int st;
    ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fidbus-serve: status %d", st);
    for (int i = 0; i < 4; i++) {
        struct fidbus_answer a;
        ck_assert_int_eq(fidbus_client_recv(p, &a, 10000), 0);
        ck_assert_msg(a.type == FIDBUS_MSG_ACK && a.result == 1,
                      "answer %d: type %llu code %llu", i, (unsigned long long)a.type,
                      (unsigned long long)a.code);
    }
    char *text = fb_e2e_read(file, NULL);
    ck_assert_int_eq(fb_e2e_lines_with(text, "gate.x", -1), 4);
    free(text);
    fidbus_client_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* SIGTERM while the daemon is away (fidbus-serve reconnecting): exit 0 at
 * once, not after the backoff or a drain that cannot happen. */
START_TEST(test_e2e_serve_stop_while_daemon_down)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf_serve);
    char logf[200];
    snprintf(logf, sizeof logf, "file=%s/remote-log.txt", t->dir);
    struct served l;
    serve_spawn(t, &l, "log",
                (const char *const[]){fb_e2e_built("plugins/log.so"), logf, NULL});
    ck_assert(serve_ready(&l));
    fb_e2e_stop_ok(t);
    usleep(200 * 1000); /* it notices and starts reconnecting */
    uint64_t t0 = fb_e2e_now_ms();
    kill(l.pid, SIGTERM);
    int st = 0;
    pid_t got = 0;
    while ((got = waitpid(l.pid, &st, WNOHANG)) == 0 && fb_e2e_now_ms() - t0 < 10000)
        usleep(10 * 1000);
    if (got == 0) {
        kill(l.pid, SIGKILL);
        waitpid(l.pid, NULL, 0);
        ck_abort_msg("fidbus-serve still running 10 s after SIGTERM with no daemon");
    }
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fidbus-serve: status %d", st);
    fb_e2e_free(t);
}
END_TEST

/* ------------------------------------------- the README's example */

START_TEST(test_e2e_serve_readme_example)
{
    SKIP_IF_UNSUPPORTED();
    struct fb_e2e *t = fb_e2e_up(NULL, conf);
    struct served s;
    snprintf(s.err, sizeof s.err, "%s/readme-serve.out", t->dir);
    const char *const argv[] = {fb_e2e_built("tests/readme_serve"), t->bus_addr, "5",
                                NULL};
    spawn(&s, argv);
    ck_assert(serve_ready(&s));
    struct fidbus_client *p = fb_e2e_connect(t);
    uint64_t r;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(publish(p, "order.created", &r), 0);
        ck_assert_uint_eq(r, 1);
    }
    int st;
    ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid); /* stops itself after 5 */
    char *out = fb_e2e_read(s.err, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "serve.c: status %d:\n%s", st,
                  out);
    ck_assert_msg(
        strstr(out, "served 5 calls") &&
            fb_e2e_lines_with(out, "order.created: 2 payload bytes, attempt 1", -1) == 5,
        "serve.c said:\n%s", out);
    free(out);
    /* it unregistered: no member now */
    ck_assert_int_eq(publish(p, "order.created", &r),
                     FIDBUS_EPROTO_CODE(FIDBUS_UNAVAILABLE));
    fidbus_client_close(p);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

static Suite *serve_suite(void)
{
    Suite *s = suite_create("e2e_serve");
    TCase *tc = tcase_create("serve");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_serve_probe);
    tcase_add_test(tc, test_e2e_serve_acked_publish);
    tcase_add_test(tc, test_e2e_serve_async_completion);
    tcase_add_test(tc, test_e2e_serve_retry);
    tcase_add_test(tc, test_e2e_serve_unregister_drains);
    tcase_add_test(tc, test_e2e_serve_reconnect);
    tcase_add_test(tc, test_e2e_serve_log_and_count);
    tcase_add_test(tc, test_e2e_serve_plugin_crash);
    tcase_add_test(tc, test_e2e_serve_readme_example);
    tcase_add_test(tc, test_e2e_serve_stop_while_daemon_down);
    tcase_add_test(tc, test_e2e_serve_blocking_drain);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    unsupported = mmap(NULL, sizeof *unsupported, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (unsupported == MAP_FAILED)
        return 1;
    int rc = fb_e2e_main(serve_suite());
    if (rc == 0 && atomic_load(unsupported)) {
        printf("e2e.serve: SKIPPED: the daemon answers REGISTER with UNSUPPORTED "
               "(remote functions not served by this build)\n");
        return 77;
    }
    return rc;
}
