/*
 * Unit tests for the plugin loader (daemon/routing/plugin_loader.c), plugin timers
 * (daemon/routing/timers.c), the shipped plugins log.so and count.so, and the
 * README's example plugin (hello.so, extracted from README.md at build
 * time).
 *
 * Each test builds a minimal struct fb_daemon by hand: a config whose
 * runtime dir is a fresh temporary directory, a registry, a private uv
 * loop as the main loop and the timers on it. Plugins come from the build
 * tree ($FIDBUS_BUILD_DIR, set by ctest). Handlers are called directly,
 * not through routes; nothing here publishes, so the loader's publish hook
 * is never reached. Every test ends by closing the timers and asserting
 * uv_loop_close() == 0: a leaked handle fails it.
 */
#include <check.h>
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include <fidbus/funcid.h>
#include <fidbus/plugin.h>
#include <fidbus/proto.h>

#include "config/config.h"
#include "daemon.h"
#include "base/log.h"
#include "routing/plugin_loader.h"
#include "routing/registry.h"
#include "routing/timers.h"

static struct {
    /* short enough that "DIR/file" always fits a PATH_MAX buffer */
    char dir[256];     /* temporary, removed at teardown */
    char run[300];     /* dir/run: the runtime dir */
    char plugdir[320]; /* dir/run/plugins: private copies */
    struct fb_config cfg;
    struct fb_daemon d;
    uv_loop_t loop;
} fx;

static void setup(void)
{
    memset(&fx, 0, sizeof fx);
    snprintf(fx.dir, sizeof fx.dir, "%s/fbpl.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(fx.dir));
    snprintf(fx.run, sizeof fx.run, "%s/run", fx.dir);
    snprintf(fx.plugdir, sizeof fx.plugdir, "%s/plugins", fx.run);
    ck_assert_int_eq(mkdir(fx.run, 0700), 0);

    fx.cfg.runtime_dir = fx.run;
    fx.d.cfg = &fx.cfg;
    ck_assert_int_eq(uv_loop_init(&fx.loop), 0);
    fx.d.main_loop = &fx.loop;
    fx.d.main_thread = pthread_self();
    pthread_mutex_init(&fx.d.change_lock, NULL);
    ck_assert_int_eq(fb_registry_new(&fx.d.reg), 0);
    ck_assert_int_eq(fb_timers_new(&fx.loop, &fx.d.timers), 0);
}

static void rm_rf(const char *path)
{
    DIR *dir = opendir(path);
    if (dir) {
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void teardown(void)
{
    rm_rf(fx.dir);
}

/* The end of every test: no handle may be left on the loop. */
static void finish(void)
{
    fb_timers_close(fx.d.timers);
    fx.d.timers = NULL;
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&fx.loop), 0);
    ck_assert_uint_eq(fb_registry_count(fx.d.reg), 0);
    fx.d.reg = fb_registry_free(fx.d.reg);
    pthread_mutex_destroy(&fx.d.change_lock);
}

/* $FIDBUS_BUILD_DIR/sub/name */
static const char *built(const char *sub, const char *name)
{
    static char path[4][PATH_MAX];
    static int slot;
    const char *b = getenv("FIDBUS_BUILD_DIR");
    ck_assert_msg(b != NULL, "FIDBUS_BUILD_DIR is not set (run through ctest)");
    char *p = path[slot++ % 4];
    snprintf(p, PATH_MAX, "%s/%s/%s", b, sub, name);
    return p;
}

#define SHIPPED(n) built("plugins", n)
#define TESTPLUGIN(n) built("tests/plugins", n)

/* A [plugin NAME] section: name, path, then key/value pairs, NULL-ended. */
struct conf {
    struct fb_plugin_conf pc;
    struct fb_kv kv[8];
};

static void conf_init(struct conf *c, const char *name, const char *path, ...)
{
    memset(c, 0, sizeof *c);
    c->pc.name = (char *)name;
    c->pc.path = (char *)path;
    c->pc.keys = c->kv;
    c->kv[0] = (struct fb_kv){.key = "path", .value = (char *)path};
    c->pc.nkeys = 1;
    va_list ap;
    va_start(ap, path);
    const char *k;
    while ((k = va_arg(ap, const char *)) && c->pc.nkeys < 8) {
        c->kv[c->pc.nkeys].key = (char *)k;
        c->kv[c->pc.nkeys].value = va_arg(ap, char *);
        c->pc.nkeys++;
    }
    va_end(ap);
}

static struct fb_plugin *load_ok(const char *name, const char *path, ...)
{
    /* up to three key/value pairs, NULL-ended */
    struct conf c;
    const char *k[3] = {0}, *v[3] = {0};
    va_list ap;
    va_start(ap, path);
    for (int i = 0; i < 3; i++) {
        k[i] = va_arg(ap, const char *);
        if (!k[i])
            break;
        v[i] = va_arg(ap, const char *);
    }
    va_end(ap);
    conf_init(&c, name, path, k[0], v[0], k[1], v[1], k[2], v[2], NULL);

    struct fb_plugin *p = NULL;
    char err[512] = "";
    int rc = fb_plugin_load(&fx.d, &c.pc, &p, err, sizeof err);
    ck_assert_msg(rc == 0, "load %s: %d %s", path, rc, err);
    ck_assert_ptr_nonnull(p);
    return p;
}

static size_t count_files(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        fwrite(tmp, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static size_t count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static uint64_t funcid(const char *hex)
{
    uint64_t id;
    ck_assert_int_eq(fidbus_funcid_parse(hex, &id), 0);
    return id;
}

static struct fidbus_event event(const char *id, uint64_t seq)
{
    return (struct fidbus_event){
        .id = id, .seq = seq, .generation = 1, .uid = -1, .pid = -1, .conn = 0};
}

/* ---- loading -------------------------------------------------------- */

START_TEST(test_plugin_loader_loads_shipped)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *log = load_ok("log", SHIPPED("log.so"), "file", logfile, NULL);
    struct fb_plugin *cnt =
        load_ok("count", SHIPPED("count.so"), "interval_ms", "0", NULL);

    /* funcIDs from <fidbus/funcid.h>'s rule, computed independently */
    struct fb_func *f = fb_registry_lookup(fx.d.reg, funcid("572db69f652ea126"));
    ck_assert_ptr_eq(f, &log->funcs[0]);
    ck_assert_str_eq(f->canonical, "fidbus.log@1.0.0");
    ck_assert_ptr_eq(f->plugin, log);
    ck_assert_ptr_eq(f->ctx, log->ctx);
    f = fb_registry_lookup(fx.d.reg, funcid("4c86a687398f8262"));
    ck_assert_ptr_eq(f, &cnt->funcs[0]);
    ck_assert_str_eq(f->canonical, "fidbus.count@1.0.0");
    ck_assert_uint_eq(fb_registry_count(fx.d.reg), 2);
    ck_assert(log->initialized && cnt->initialized);
    ck_assert_uint_eq(count_files(fx.plugdir), 2);

    /* the private copies live under RUNTIME/plugins, one per instance */
    ck_assert_int_eq(strncmp(log->copy_path, fx.plugdir, strlen(fx.plugdir)), 0);
    ck_assert_str_ne(log->copy_path, cnt->copy_path);
    struct stat st;
    ck_assert_int_eq(stat(fx.plugdir, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0700);

    fb_plugin_unload(&fx.d, log);
    fb_plugin_unload(&fx.d, cnt);
    ck_assert_uint_eq(count_files(fx.plugdir), 0);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_private_copy)
{
    /* load from a file we then clobber */
    char orig[PATH_MAX], logfile[PATH_MAX];
    snprintf(orig, sizeof orig, "%s/mylog.so", fx.dir);
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    char *so = NULL;
    {
        FILE *in = fopen(SHIPPED("log.so"), "rb");
        ck_assert_ptr_nonnull(in);
        FILE *out = fopen(orig, "wb");
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            fwrite(buf, 1, n, out);
        fclose(in);
        fclose(out);
        so = orig;
    }
    struct fb_plugin *p = load_ok("mine", so, "file", logfile, NULL);
    ck_assert_str_eq(p->path, orig);
    ck_assert_str_ne(p->copy_path, orig);
    ck_assert_int_eq(access(p->copy_path, R_OK), 0);
    ck_assert_ptr_nonnull(strstr(p->copy_path, "/plugins/mine."));

    /* overwrite the original in place: the loaded code is the copy */
    int fd = open(orig, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "garbage", 7), 7);
    close(fd);

    struct fidbus_event ev = event("still.works", 1);
    ck_assert_int_eq(p->funcs[0].handle(p->funcs[0].ctx, &ev), 0);
    char *text = slurp(logfile);
    ck_assert_str_eq(text,
                     "gen=1 event=still.works seq=1 tags={} uid=-1 pid=-1 conn=0\n");
    free(text);

    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", p->copy_path);
    fb_plugin_unload(&fx.d, p);
    ck_assert_int_eq(access(copy, F_OK), -1);
    finish();
}
END_TEST

static int load_err(const char *name, const char *path, char *err, size_t errlen)
{
    struct conf c;
    conf_init(&c, name, path, NULL);
    struct fb_plugin *p = (struct fb_plugin *)0x1;
    int rc = fb_plugin_load(&fx.d, &c.pc, &p, err, errlen);
    ck_assert_ptr_eq(p, (struct fb_plugin *)0x1); /* untouched on failure */
    /* nothing left behind */
    ck_assert_uint_eq(fb_registry_count(fx.d.reg), 0);
    ck_assert_uint_eq(count_files(fx.plugdir), 0);
    /* one line */
    ck_assert_ptr_null(strchr(err, '\n'));
    return rc;
}

START_TEST(test_plugin_loader_bad_abi)
{
    char err[512] = "";
    ck_assert_int_eq(load_err("bad", TESTPLUGIN("bad_abi.so"), err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "plugin bad") && strstr(err, "ABI 999") &&
                      strstr(err, "supports 1"),
                  "%s", err);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_no_symbol)
{
    char err[512] = "";
    ck_assert_int_eq(load_err("nosym", TESTPLUGIN("no_symbol.so"), err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "plugin nosym") &&
                      strstr(err, "not a fidbus plugin: no fidbus_plugin symbol"),
                  "%s", err);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_missing_file)
{
    char err[512] = "", path[PATH_MAX];
    snprintf(path, sizeof path, "%s/nope.so", fx.dir);
    ck_assert_int_eq(load_err("gone", path, err, sizeof err), FIDBUS_NOT_FOUND);
    ck_assert_msg(strstr(err, "plugin gone") && strstr(err, "nope.so"), "%s", err);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_not_a_shared_object)
{
    char err[512] = "", path[PATH_MAX];
    snprintf(path, sizeof path, "%s/text.so", fx.dir);
    FILE *f = fopen(path, "w");
    fputs("not an ELF file\n", f);
    fclose(f);
    ck_assert_int_eq(load_err("text", path, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "plugin text") && strstr(err, "dlopen"), "%s", err);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_conflict)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *log = load_ok("log", SHIPPED("log.so"), "file", logfile, NULL);

    struct conf c;
    conf_init(&c, "dup", TESTPLUGIN("dup.so"), NULL);
    struct fb_plugin *p = NULL;
    char err[512] = "";
    ck_assert_int_eq(fb_plugin_load(&fx.d, &c.pc, &p, err, sizeof err), FIDBUS_CONFLICT);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err, "plugin dup") && strstr(err, "fidbus.log@1.0.0"), "%s",
                  err);
    /* the whole plugin is refused: its own function is not there either */
    ck_assert_uint_eq(fb_registry_count(fx.d.reg), 1);
    ck_assert_ptr_null(fb_registry_lookup(fx.d.reg, funcid("fa08e3e608eafca1")));
    ck_assert_ptr_eq(fb_registry_lookup(fx.d.reg, funcid("572db69f652ea126")),
                     &log->funcs[0]);
    ck_assert_uint_eq(count_files(fx.plugdir), 1);

    fb_plugin_unload(&fx.d, log);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_config_keys)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *p =
        load_ok("log", SHIPPED("log.so"), "file", logfile, "format", "json", NULL);
    ck_assert_str_eq(fb_plugin_config(p, "format"), "json");
    ck_assert_str_eq(p->host.config(p->host.handle, "file"), logfile);
    ck_assert_str_eq(p->host.config(p->host.handle, "path"), SHIPPED("log.so"));
    ck_assert_ptr_null(p->host.config(p->host.handle, "nope"));
    ck_assert_ptr_eq(p->host.handle, p);
    fb_plugin_unload(&fx.d, p);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_init_failure)
{
    /* lifecycle's init refuses a malformed tick_ms after nothing else */
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/life.txt", fx.dir);
    struct conf c;
    conf_init(&c, "life", TESTPLUGIN("lifecycle.so"), "file", file, "tick_ms", "soon",
              NULL);
    struct fb_plugin *p = NULL;
    char err[512] = "";
    ck_assert_int_eq(fb_plugin_load(&fx.d, &c.pc, &p, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "plugin life") && strstr(err, "init failed: -22"), "%s",
                  err);
    ck_assert_uint_eq(fb_registry_count(fx.d.reg), 0);
    ck_assert_uint_eq(count_files(fx.plugdir), 0);
    finish();
}
END_TEST

/* ---- lifecycle and timers ------------------------------------------- */

START_TEST(test_plugin_loader_lifecycle_timers)
{
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/life.txt", fx.dir);
    struct fb_plugin *p =
        load_ok("life", TESTPLUGIN("lifecycle.so"), "file", file, "tick_ms", "1", NULL);
    char *text = slurp(file);
    ck_assert_str_eq(text, "init\n");
    free(text);
    ck_assert_ptr_eq(fb_registry_lookup(fx.d.reg, funcid("478fac6ce55cab46")),
                     &p->funcs[0]);

    /* the repeating timer ticks on the main loop: run it until two ticks
     * have arrived (the loop blocks in epoll until the timer is due) */
    size_t ticks = 0;
    for (int i = 0; i < 10000 && ticks < 2; i++) {
        uv_run(&fx.loop, UV_RUN_ONCE);
        text = slurp(file);
        ticks = count_str(text, "tick\n");
        free(text);
    }
    ck_assert_uint_ge(ticks, 2);

    fb_plugin_unload(&fx.d, p);
    text = slurp(file);
    size_t n = strlen(text);
    ck_assert_uint_ge(n, 5);
    ck_assert_str_eq(text + n - 5, "fini\n");
    ticks = count_str(text, "tick\n");
    free(text);

    /* no timer left: the loop has nothing to wait for and returns at once
     * (its only other handle, the timers' async, is unreferenced) */
    ck_assert_int_eq(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    text = slurp(file);
    ck_assert_uint_eq(count_str(text, "tick\n"), ticks);
    free(text);
    finish();
}
END_TEST

static void bump(void *arg)
{
    (*(int *)arg)++;
}

static void watchdog_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

struct cross {
    struct fb_timers *t;
    int *fired;
    int rc_start, rc_stop_unknown, rc_stop_queued;
    uint64_t id;
};

static void *cross_thread(void *arg)
{
    struct cross *x = arg;
    uint64_t other;
    x->rc_start = fb_timer_start(x->t, x, 1, 0, bump, x->fired, &x->id);
    x->rc_stop_unknown = fb_timer_stop(x->t, x, 999999);
    /* a start not yet acted on can still be stopped from here */
    fb_timer_start(x->t, x, 1, 0, bump, x->fired, &other);
    x->rc_stop_queued = fb_timer_stop(x->t, x, other);
    return NULL;
}

START_TEST(test_plugin_loader_timer_cross_thread)
{
    int fired = 0;
    struct cross x = {.t = fx.d.timers, .fired = &fired};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cross_thread, &x), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(x.rc_start, 0);
    ck_assert_uint_gt(x.id, 0);
    ck_assert_int_eq(x.rc_stop_unknown, -ENOENT);
    ck_assert_int_eq(x.rc_stop_queued, 0);

    /* The async hands the start to the loop; the one-shot fires once. The
     * timers' async is unreferenced (in fidbusd the listeners and signals
     * keep the main loop alive), so a watchdog timer stands in for them. */
    uv_timer_t watchdog;
    int expired = 0;
    ck_assert_int_eq(uv_timer_init(&fx.loop, &watchdog), 0);
    watchdog.data = &expired;
    ck_assert_int_eq(uv_timer_start(&watchdog, watchdog_cb, 10000, 0), 0);
    while (fired == 0 && !expired)
        uv_run(&fx.loop, UV_RUN_ONCE);
    ck_assert_int_eq(expired, 0);
    uv_close((uv_handle_t *)&watchdog, NULL);
    ck_assert_int_eq(fired, 1);
    ck_assert_int_eq(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(fired, 1);
    /* fired one-shots are gone */
    ck_assert_int_eq(fb_timer_stop(fx.d.timers, &x, x.id), -ENOENT);

    /* main-thread start/stop, and cancel by owner */
    uint64_t a, b;
    ck_assert_int_eq(fb_timer_start(fx.d.timers, &x, 60000, 0, bump, &fired, &a), 0);
    ck_assert_int_eq(fb_timer_start(fx.d.timers, &fired, 60000, 0, bump, &fired, &b), 0);
    ck_assert_int_eq(fb_timer_stop(fx.d.timers, &fired, a), -ENOENT); /* not its owner */
    fb_timers_cancel_owner(fx.d.timers, &x);
    ck_assert_int_eq(fb_timer_stop(fx.d.timers, &x, a), -ENOENT);
    ck_assert_int_eq(fb_timer_stop(fx.d.timers, &fired, b), 0);
    ck_assert_int_eq(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(fired, 1);
    finish();
}
END_TEST

/* ---- the README example --------------------------------------------- */

START_TEST(test_plugin_loader_readme_hello)
{
    struct fb_plugin *p =
        load_ok("hello", TESTPLUGIN("hello.so"), "greeting", "hi", NULL);
    struct fb_func *f = fb_registry_lookup(fx.d.reg, funcid("8217e057d8ae6589"));
    ck_assert_ptr_eq(f, &p->funcs[0]);
    ck_assert_str_eq(f->canonical, "demo.hello@1.0.0");

    /* its handler logs through host->log: capture the daemon's stderr */
    char cap[PATH_MAX];
    snprintf(cap, sizeof cap, "%s/stderr.txt", fx.dir);
    int fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    struct fidbus_tag tags[] = {{"user", "u1"}};
    static const uint8_t payload[] = {0xa1, 0x61, 0x6e, 0x01};
    struct fidbus_event ev = {.id = "demo.greet",
                              .tags = tags,
                              .ntags = 1,
                              .payload = payload,
                              .payload_len = sizeof payload,
                              .seq = 5,
                              .generation = 1};
    int rc = f->handle(f->ctx, &ev);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    ck_assert_int_eq(rc, 0);
    char *text = slurp(cap);
    ck_assert_msg(
        strstr(text, "plugin hello: hi: demo.greet seq=5 tags=1 payload=4 bytes"), "%s",
        text);
    free(text);

    fb_plugin_unload(&fx.d, p);
    finish();
}
END_TEST

/* ---- log.so ---------------------------------------------------------- */

/* RFC 8949 Appendix A (and section 8.1's empty indefinite strings):
 * hex, diagnostic notation, JSON. */
static const struct vec {
    const char *hex, *diag, *json;
} vectors[] = {
    {"00", "0", "0"},
    {"17", "23", "23"},
    {"1818", "24", "24"},
    {"1b000000e8d4a51000", "1000000000000", "1000000000000"},
    {"1bffffffffffffffff", "18446744073709551615", "18446744073709551615"},
    {"c249010000000000000000", "2(h'010000000000000000')", "\"AQAAAAAAAAAA\""},
    {"3bffffffffffffffff", "-18446744073709551616", "-18446744073709551616"},
    {"20", "-1", "-1"},
    {"3903e7", "-1000", "-1000"},
    {"f90000", "0.0", "0.0"},
    {"f98000", "-0.0", "-0.0"},
    {"fb3ff199999999999a", "1.1", "1.1"},
    {"f97bff", "65504.0", "65504.0"},
    {"fa47c35000", "100000.0", "100000.0"},
    {"fa7f7fffff", "3.4028234663852886e+38", "3.4028234663852886e+38"},
    {"fb7e37e43c8800759c", "1.0e+300", "1.0e+300"},
    {"f90001", "5.960464477539063e-8", "5.960464477539063e-8"},
    {"f90400", "0.00006103515625", "0.00006103515625"},
    {"fbc010666666666666", "-4.1", "-4.1"},
    {"f97c00", "Infinity", "null"},
    {"f97e00", "NaN", "null"},
    {"fbfff0000000000000", "-Infinity", "null"},
    {"f4", "false", "false"},
    {"f6", "null", "null"},
    {"f7", "undefined", "null"},
    {"f0", "simple(16)", "null"},
    {"f8ff", "simple(255)", "null"},
    {"c074323031332d30332d32315432303a30343a30305a", "0(\"2013-03-21T20:04:00Z\")",
     "\"2013-03-21T20:04:00Z\""},
    {"c1fb41d452d9ec200000", "1(1363896240.5)", "1363896240.5"},
    {"d74401020304", "23(h'01020304')", "\"AQIDBA\""},
    {"40", "h''", "\"\""},
    {"60", "\"\"", "\"\""},
    {"62225c", "\"\\\"\\\\\"", "\"\\\"\\\\\""},
    {"62c3bc", "\"\xc3\xbc\"", "\"\xc3\xbc\""},
    {"64f0908591", "\"\xf0\x90\x85\x91\"", "\"\xf0\x90\x85\x91\""},
    {"80", "[]", "[]"},
    {"8301820203820405", "[1, [2, 3], [4, 5]]", "[1,[2,3],[4,5]]"},
    {"a0", "{}", "{}"},
    {"a201020304", "{1: 2, 3: 4}", "{\"1\":2,\"3\":4}"},
    {"a26161016162820203", "{\"a\": 1, \"b\": [2, 3]}", "{\"a\":1,\"b\":[2,3]}"},
    {"5f42010243030405ff", "(_ h'0102', h'030405')", "\"AQIDBAU\""},
    {"7f657374726561646d696e67ff", "(_ \"strea\", \"ming\")", "\"streaming\""},
    {"9fff", "[_ ]", "[]"},
    {"9f018202039f0405ffff", "[_ 1, [2, 3], [_ 4, 5]]", "[1,[2,3],[4,5]]"},
    {"bf61610161629f0203ffff", "{_ \"a\": 1, \"b\": [_ 2, 3]}", "{\"a\":1,\"b\":[2,3]}"},
    {"bf6346756ef563416d7421ff", "{_ \"Fun\": true, \"Amt\": -2}",
     "{\"Fun\":true,\"Amt\":-2}"},
    {"5fff", "''_", "\"\""},
    {"7fff", "\"\"_", "\"\""},
    /* a non-string key in JSON becomes the string of its diagnostic form */
    {"a1820102f5", "{[1, 2]: true}", "{\"[1, 2]\":true}"},
    /* not one well-formed item: the raw bytes */
    {"8201", "h'8201'", "\"ggE\""},
    {"0000", "h'0000'", "\"AAA\""},
};

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void check_vectors(bool json)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *p = load_ok("log", SHIPPED("log.so"), "file", logfile, "format",
                                  json ? "json" : "diag", NULL);
    struct fb_func *f = &p->funcs[0];
    size_t nvec = sizeof vectors / sizeof vectors[0];

    for (size_t i = 0; i < nvec; i++) {
        uint8_t buf[128];
        struct fidbus_event ev = event("t.v", i);
        ev.payload = buf;
        ev.payload_len = unhex(vectors[i].hex, buf);
        ck_assert_int_eq(f->handle(f->ctx, &ev), 0);
    }
    char *text = slurp(logfile);
    char *line = text;
    for (size_t i = 0; i < nvec; i++) {
        char *nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        char want[512];
        snprintf(want, sizeof want,
                 "gen=1 event=t.v seq=%zu tags={} payload=%s uid=-1 pid=-1 conn=0", i,
                 json ? vectors[i].json : vectors[i].diag);
        ck_assert_str_eq(line, want);
        line = nl + 1;
    }
    ck_assert_str_eq(line, "");
    free(text);
    fb_plugin_unload(&fx.d, p);
}

START_TEST(test_plugin_loader_log_diag)
{
    check_vectors(false);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_log_json)
{
    check_vectors(true);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_log_tags_and_bad_format)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *p = load_ok("log", SHIPPED("log.so"), "file", logfile, NULL);
    struct fidbus_tag tags[] = {{"user", "u1"}, {"note", "a \"b\"\n"}};
    struct fidbus_event ev = event("order.created", 7);
    ev.generation = 3;
    ev.tags = tags;
    ev.ntags = 2;
    ev.uid = 1000;
    ev.pid = 4242;
    ev.conn = 7;
    ck_assert_int_eq(p->funcs[0].handle(p->funcs[0].ctx, &ev), 0);
    char *text = slurp(logfile);
    ck_assert_str_eq(text, "gen=3 event=order.created seq=7 "
                           "tags={\"user\":\"u1\",\"note\":\"a \\\"b\\\"\\n\"} "
                           "uid=1000 pid=4242 conn=7\n");
    free(text);
    fb_plugin_unload(&fx.d, p);

    struct conf c;
    conf_init(&c, "badlog", SHIPPED("log.so"), "format", "xml", NULL);
    char err[512] = "";
    ck_assert_int_eq(fb_plugin_load(&fx.d, &c.pc, &p, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, "init failed"), "%s", err);
    finish();
}
END_TEST

struct logger {
    struct fb_func *f;
    int id;
};

#define LOG_THREADS 4
#define LOG_EVENTS 500

static void *log_thread(void *arg)
{
    struct logger *l = arg;
    /* a payload long enough that a torn write would show: 300 bytes */
    uint8_t payload[303] = {0x59, 0x01, 0x2c};
    memset(payload + 3, 'a' + l->id, 300);
    char id[32];
    snprintf(id, sizeof id, "thread.%d", l->id);
    for (int i = 0; i < LOG_EVENTS; i++) {
        struct fidbus_event ev = event(id, (uint64_t)i);
        ev.payload = payload;
        ev.payload_len = sizeof payload;
        if (l->f->handle(l->f->ctx, &ev) != 0)
            return (void *)1;
    }
    return NULL;
}

START_TEST(test_plugin_loader_log_threads)
{
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof logfile, "%s/log.txt", fx.dir);
    struct fb_plugin *p = load_ok("log", SHIPPED("log.so"), "file", logfile, NULL);
    pthread_t th[LOG_THREADS];
    struct logger l[LOG_THREADS];
    for (int i = 0; i < LOG_THREADS; i++) {
        l[i] = (struct logger){.f = &p->funcs[0], .id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, log_thread, &l[i]), 0);
    }
    for (int i = 0; i < LOG_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        ck_assert_ptr_null(ret);
    }
    fb_plugin_unload(&fx.d, p);

    /* every line whole: its payload is 600 hex digits of its own thread */
    char *text = slurp(logfile);
    size_t lines = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        int t = -1;
        ck_assert_int_eq(sscanf(line, "gen=1 event=thread.%d", &t), 1);
        ck_assert(t >= 0 && t < LOG_THREADS);
        char *h = strstr(line, "payload=h'");
        ck_assert_ptr_nonnull(h);
        h += 10;
        char want[3];
        snprintf(want, sizeof want, "%02x", 'a' + t);
        for (int k = 0; k < 300; k++)
            ck_assert(h[2 * k] == want[0] && h[2 * k + 1] == want[1]);
        ck_assert_str_eq(h + 600, "' uid=-1 pid=-1 conn=0");
        lines++;
    }
    ck_assert_uint_eq(lines, LOG_THREADS * LOG_EVENTS);
    free(text);
    finish();
}
END_TEST

/* ---- count.so --------------------------------------------------------- */

START_TEST(test_plugin_loader_count_report)
{
    char report[PATH_MAX];
    snprintf(report, sizeof report, "%s/count.json", fx.dir);
    struct fb_plugin *p = load_ok("count", SHIPPED("count.so"), "interval_ms", "0",
                                  "report_file", report, NULL);
    struct fb_func *f = &p->funcs[0];
    const char *ids[] = {"b.x", "a", "b.x", "order.created", "b.x", "a"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        struct fidbus_event ev = event(ids[i], i);
        ck_assert_int_eq(f->handle(f->ctx, &ev), 0);
    }
    ck_assert_int_eq(access(report, F_OK), -1); /* no timer: only at fini */
    /* interval 0: no timer keeps the loop alive */
    ck_assert_int_eq(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    fb_plugin_unload(&fx.d, p);
    char *text = slurp(report);
    ck_assert_str_eq(text,
                     "{\"a\": 2, \"b.x\": 3, \"order.created\": 1, \"_total\": 6}\n");
    free(text);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_count_timer)
{
    char report[PATH_MAX];
    snprintf(report, sizeof report, "%s/count.json", fx.dir);
    struct fb_plugin *p = load_ok("count", SHIPPED("count.so"), "interval_ms", "1",
                                  "report_file", report, NULL);
    struct fidbus_event ev = event("tick.tock", 1);
    ck_assert_int_eq(p->funcs[0].handle(p->funcs[0].ctx, &ev), 0);
    for (int i = 0; i < 10000 && access(report, F_OK) != 0; i++)
        uv_run(&fx.loop, UV_RUN_ONCE);
    char *text = slurp(report);
    ck_assert_str_eq(text, "{\"tick.tock\": 1, \"_total\": 1}\n");
    free(text);
    /* the rename left no temporary behind */
    ck_assert_uint_eq(count_files(fx.dir), 2); /* run/ and count.json */
    fb_plugin_unload(&fx.d, p);
    finish();
}
END_TEST

START_TEST(test_plugin_loader_count_overflow)
{
    char report[PATH_MAX];
    snprintf(report, sizeof report, "%s/count.json", fx.dir);
    struct fb_plugin *p = load_ok("count", SHIPPED("count.so"), "interval_ms", "0",
                                  "report_file", report, NULL);
    struct fb_func *f = &p->funcs[0];
    /* more distinct ids than the table holds: the rest go to _other */
    fb_log_set_level(FB_LOG_WARN);
    for (int i = 0; i < 5000; i++) {
        char id[32];
        snprintf(id, sizeof id, "id.%d", i);
        struct fidbus_event ev = event(id, (uint64_t)i);
        ck_assert_int_eq(f->handle(f->ctx, &ev), 0);
        ck_assert_int_eq(f->handle(f->ctx, &ev), 0);
    }
    fb_plugin_unload(&fx.d, p);
    char *text = slurp(report);
    ck_assert_ptr_nonnull(strstr(text, "\"_other\": "));
    ck_assert_ptr_nonnull(strstr(text, "\"_total\": 10000}"));
    ck_assert_ptr_nonnull(strstr(text, "\"id.0\": 2, "));
    free(text);
    finish();
}
END_TEST

static Suite *plugin_loader_suite(void)
{
    Suite *s = suite_create("plugin_loader");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_plugin_loader_loads_shipped);
    tcase_add_test(tc, test_plugin_loader_private_copy);
    tcase_add_test(tc, test_plugin_loader_bad_abi);
    tcase_add_test(tc, test_plugin_loader_no_symbol);
    tcase_add_test(tc, test_plugin_loader_missing_file);
    tcase_add_test(tc, test_plugin_loader_not_a_shared_object);
    tcase_add_test(tc, test_plugin_loader_conflict);
    tcase_add_test(tc, test_plugin_loader_config_keys);
    tcase_add_test(tc, test_plugin_loader_init_failure);
    tcase_add_test(tc, test_plugin_loader_lifecycle_timers);
    tcase_add_test(tc, test_plugin_loader_timer_cross_thread);
    tcase_add_test(tc, test_plugin_loader_readme_hello);
    tcase_add_test(tc, test_plugin_loader_log_diag);
    tcase_add_test(tc, test_plugin_loader_log_json);
    tcase_add_test(tc, test_plugin_loader_log_tags_and_bad_format);
    tcase_add_test(tc, test_plugin_loader_log_threads);
    tcase_add_test(tc, test_plugin_loader_count_report);
    tcase_add_test(tc, test_plugin_loader_count_timer);
    tcase_add_test(tc, test_plugin_loader_count_overflow);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(plugin_loader_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
