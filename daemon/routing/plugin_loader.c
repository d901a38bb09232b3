/*
 * Plugin loader (<fidbus/plugin.h>): turns a [plugin NAME] section into a
 * loaded, initialised instance whose functions sit in the registry, and
 * back.
 *
 * The .so is first copied to a private file under RUNTIME_DIR/plugins.
 * Two reasons: the operator may replace the original on disk while it is
 * loaded (a reload then really loads the new file), and dlopen() of a path
 * it has already opened hands back the cached handle, so two instances of
 * one file would share their globals. Each instance gets its own copy and
 * therefore its own globals and thread-locals.
 *
 * Every step of a load is undone, in reverse order, if a later one fails;
 * the refusal is one line ("plugin NAME (PATH): reason") that goes both to
 * the caller and to the log. Loading and unloading run with the change
 * lock held (the main thread at start-up, the control thread afterwards);
 * the host table's calls run on any thread.
 */
#include "base/daemon_t.h"
#include "base/clock.h"
#include "routing/plugin_loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fidbus/proto.h>

#include "base/log.h"
#include "routing/dispatch.h"
#include "routing/timers.h"
#include "trusted_dir.h"

/* More functions than this in one plugin is a broken table, not a plugin. */
#define MAX_FUNCTIONS 4096

/* ---- the host table ------------------------------------------------- */

/* The plugin whose init runs on this thread, and the last error it
 * logged: a refused load then says why in its REPLY or start-up error
 * ("cannot open FILE: ..."), not only "init failed: -40" with the reason
 * in the log. Thread-local, so a plugin's own threads logging meanwhile
 * do not write into it. */
static _Thread_local const struct fb_plugin *init_plugin;
static _Thread_local char init_error[256];
/* What the plugin said with host->set_error during init, same rules. */
static _Thread_local char init_reason[FIDBUS_ERROR_MAX];

/* set_error took a slot that was reserved: the table must keep the size
 * and every offset it had, or plugins built against an older header
 * would call the wrong pointer (FIDBUS_PLUGIN_ABI stays 1). */
_Static_assert(offsetof(struct fidbus_host, handle) == 0, "ABI 1: handle");
_Static_assert(offsetof(struct fidbus_host, log) == 1 * sizeof(void *), "ABI 1: log");
_Static_assert(offsetof(struct fidbus_host, config) == 2 * sizeof(void *),
               "ABI 1: config");
_Static_assert(offsetof(struct fidbus_host, publish) == 3 * sizeof(void *),
               "ABI 1: publish");
_Static_assert(offsetof(struct fidbus_host, timer_start) == 4 * sizeof(void *),
               "ABI 1: timer_start");
_Static_assert(offsetof(struct fidbus_host, timer_stop) == 5 * sizeof(void *),
               "ABI 1: timer_stop");
_Static_assert(offsetof(struct fidbus_host, set_error) == 6 * sizeof(void *),
               "ABI 1: set_error is the old reserved[0]");
_Static_assert(offsetof(struct fidbus_host, reserved) == 7 * sizeof(void *),
               "ABI 1: reserved");
_Static_assert(sizeof(struct fidbus_host) == 14 * sizeof(void *), "ABI 1: host size");
_Static_assert(offsetof(struct fidbus_plugin, reserved) == 8 * sizeof(void *) &&
                   sizeof(struct fidbus_plugin) == 16 * sizeof(void *),
               "ABI 1: plugin layout");

/* Whether a printf format has a %n conversion: it writes through a
 * pointer argument, which a reason has no business doing. Everything
 * between '%' and the conversion letter is a flag, width, precision,
 * position or length modifier, none of which is a conversion itself. */
static bool format_writes(const char *fmt)
{
    for (const char *c = fmt; *c; c++) {
        if (*c != '%')
            continue;
        c++;
        if (*c == '%')
            continue;
        c += strspn(c, "0123456789$*.-+ #'IhlqjztLZ");
        if (*c == 'n')
            return true;
        if (!*c)
            break;
    }
    return false;
}

/* Makes a reason one line of valid UTF-8 in place: control characters
 * become '?', and so does every non-ASCII byte when the text is not
 * valid UTF-8 (it is plugin text bound for a CBOR text string). */
static void clean_reason(char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            s[i] = '?';
    if (!fidbus_utf8_valid((const uint8_t *)s, len))
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] >= 0x80)
                s[i] = '?';
}

/* host->set_error: ignored unless p's init runs on this thread (see
 * <fidbus/plugin.h>), so a handler or a plugin thread calling it cannot
 * touch another load's reason. */
static void host_set_error(void *handle, const char *fmt, ...)
{
    const struct fb_plugin *p = handle;
    if (!p || init_plugin != p)
        return;
    if (!fmt) {
        snprintf(init_reason, sizeof init_reason, "(set_error without a text)");
        return;
    }
    if (format_writes(fmt)) {
        snprintf(init_reason, sizeof init_reason,
                 "(set_error format has a %%n conversion; refused)");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(init_reason, sizeof init_reason, fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(init_reason, sizeof init_reason, "(set_error format failed: %s)",
                 strerror(errno));
        return;
    }
    if ((size_t)n >= sizeof init_reason) {
        /* cut on a character boundary, then mark the cut */
        size_t cut = sizeof init_reason - 4;
        while (cut > 0 && ((unsigned char)init_reason[cut] & 0xc0) == 0x80)
            cut--;
        memcpy(init_reason + cut, "...", 4);
    }
    clean_reason(init_reason);
}

static void host_log(void *handle, int level, const char *fmt, ...)
{
    const struct fb_plugin *p = handle;
    char prefix[300];

    if (level < FIDBUS_LOG_ERROR)
        level = FIDBUS_LOG_ERROR;
    if (level > FIDBUS_LOG_DEBUG)
        level = FIDBUS_LOG_DEBUG;
    if (level == FIDBUS_LOG_ERROR && init_plugin == p) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(init_error, sizeof init_error, fmt, ap);
        va_end(ap);
    }
    if ((int)fb_log_get_level() < level)
        return;
    snprintf(prefix, sizeof prefix, "plugin %s", p->name);
    va_list ap;
    va_start(ap, fmt);
    fb_logv((enum fb_log_level)level, prefix, fmt, ap);
    va_end(ap);
}

static const char *host_config(void *handle, const char *key)
{
    return fb_plugin_config(handle, key);
}

static int host_publish(void *handle, const char *id, const struct fidbus_tag *tags,
                        size_t ntags, const uint8_t *payload, size_t payload_len)
{
    const struct fb_plugin *p = handle;
    return fb_dispatch_local(p->d, id, tags, ntags, payload, payload_len);
}

static int host_timer_start(void *handle, uint64_t after_ms, uint64_t repeat_ms,
                            void (*cb)(void *arg), void *arg, uint64_t *timer_id)
{
    struct fb_plugin *p = handle;
    return fb_timer_start(p->d->timers, p, after_ms, repeat_ms, cb, arg, timer_id);
}

static int host_timer_stop(void *handle, uint64_t timer_id)
{
    struct fb_plugin *p = handle;
    return fb_timer_stop(p->d->timers, p, timer_id);
}

const char *fb_plugin_config(const struct fb_plugin *p, const char *key)
{
    if (!p || !key)
        return NULL;
    for (size_t i = 0; i < p->nkeys; i++)
        if (strcmp(p->keys[i].key, key) == 0)
            return p->keys[i].value;
    return NULL;
}

/* ---- the private copy ----------------------------------------------- */

/* Reasons are cut to fit the caller's buffer; that is intended. */
__attribute__((format(printf, 3, 4))) static void say(char *buf, size_t len,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* Copies the open file in into a new file RUNTIME/plugins/NAME.PID.XXXXXX.so;
 * *out is malloc'd. Returns 0 or -errno with a reason in why. */
static int make_copy(const char *runtime_dir, const char *name, int in, char **out,
                     char *why, size_t whylen)
{
    char dir[PATH_MAX];
    int rc;

    if (snprintf(dir, sizeof dir, "%s/plugins", runtime_dir) >= (int)sizeof dir) {
        say(why, whylen, "runtime dir path too long");
        return -ENAMETOOLONG;
    }
    /* What is dlopen()ed is the copy: a plugins dir another user can
     * write would let them swap it for their own code (trusted_dir.h).
     * fidbusd makes its runtime dir at startup; a missing one here is a
     * test or a removed directory, made again rather than failed. */
    int dfd = fb_trusted_dir_open(dir, 0700, why, whylen);
    if (dfd < 0)
        return dfd;
    close(dfd);

    /* The instance name becomes part of a file name: keep it tame. */
    char safe[65];
    size_t n = 0;
    for (const char *c = name; *c && n < sizeof safe - 1; c++, n++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '_' || *c == '-';
        safe[n] = ok ? *c : '_';
    }
    safe[n] = '\0';

    char *tmpl = NULL;
    /* The pid in the name lets the next start tell a copy left by a
     * process that died (kill -9) from one in use. */
    if (asprintf(&tmpl, "%s/%s.%ld.XXXXXX.so", dir, n ? safe : "plugin", (long)getpid()) <
        0) {
        say(why, whylen, "out of memory");
        return -ENOMEM;
    }

    int outfd = mkstemps(tmpl, 3);
    if (outfd < 0) {
        rc = -errno;
        say(why, whylen, "cannot create a copy in %s: %s", dir, strerror(-rc));
        free(tmpl);
        return rc;
    }

    rc = 0;
    bool use_cfr = true;
    for (;;) {
        ssize_t w;
        if (use_cfr) {
            w = copy_file_range(in, NULL, outfd, NULL, 1 << 20, 0);
            if (w < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                          errno == EOPNOTSUPP)) {
                use_cfr = false;
                continue;
            }
        } else {
            char buf[65536];
            ssize_t r = read(in, buf, sizeof buf);
            if (r <= 0) {
                w = r;
            } else {
                w = 0;
                while (w < r) {
                    ssize_t k = write(outfd, buf + w, (size_t)(r - w));
                    if (k < 0 && errno == EINTR)
                        continue;
                    if (k < 0) {
                        w = -1;
                        break;
                    }
                    w += k;
                }
            }
        }
        if (w == 0)
            break;
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            say(why, whylen, "copying to %s: %s", tmpl, strerror(-rc));
            break;
        }
    }
    if (close(outfd) < 0 && rc == 0) {
        rc = -errno;
        say(why, whylen, "copying to %s: %s", tmpl, strerror(-rc));
    }
    if (rc < 0) {
        unlink(tmpl);
        free(tmpl);
        return rc;
    }
    *out = tmpl;
    return 0;
}

void fb_plugin_sweep_copies(const char *runtime_dir)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/plugins", runtime_dir) >= (int)sizeof dir)
        return;
    /* Unlinking by name is only safe in a directory no one else can
     * write; an untrusted one is refused with a reason at the first load. */
    char why[600];
    int dfd = fb_trusted_dir_open(dir, 0, why, sizeof why);
    if (dfd < 0)
        return;
    DIR *dh = fdopendir(dfd);
    if (!dh) {
        close(dfd);
        return;
    }
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(dh))) {
        /* NAME.PID.XXXXXX.so: the pid is the second field from the end */
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 3, ".so") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%s", e->d_name);
        name[len - 3] = '\0';
        char *rnd = strrchr(name, '.');
        if (!rnd)
            continue;
        *rnd = '\0';
        char *pid_s = strrchr(name, '.');
        if (!pid_s)
            continue;
        char *end;
        long pid = strtol(pid_s + 1, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno == EPERM)
            continue; /* alive: another daemon's, leave it */
        if (unlinkat(dirfd(dh), e->d_name, 0) == 0)
            n++;
    }
    closedir(dh);
    if (n)
        fb_info("removed %u private plugin cop%s left by a daemon that is gone from %s",
                n, n == 1 ? "y" : "ies", dir);
}

/* ---- load and unload ------------------------------------------------ */

/*
 * Opens the plugin file at path, *st its fstat. The copy is made from this
 * descriptor, so what was checked is what gets loaded. As root, a file
 * that another user can write, or in a directory another user can write
 * (a sticky one such as /tmp excepted), is refused as the key file is
 * (lib/client_key.c): that user could put their code into the daemon.
 * Symlinks are resolved first, so the directory judged is the one that
 * holds the file itself. 0, or a protocol code with the reason in why.
 */
static int open_source(const char *path, int *out, struct stat *st, char *why,
                       size_t whylen)
{
    char real[PATH_MAX];
    int e = 0, fd = -1;
    if (!realpath(path, real)) {
        e = errno;
        goto errno_fail;
    }
    if (geteuid() != 0) {
        fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 || fstat(fd, st) != 0) {
            e = errno;
            goto errno_fail;
        }
    } else {
        char *slash = strrchr(real, '/');
        *slash = '\0';
        const char *dir = slash == real ? "/" : real;
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            e = errno;
            goto errno_fail;
        }
        char reason[300];
        struct stat dst;
        if (fstat(dfd, &dst) != 0) {
            e = errno;
            close(dfd);
            goto errno_fail;
        }
        if (fb_trust_stat(&dst, true, reason, sizeof reason) != FB_TRUST_OK) {
            close(dfd);
            say(why, whylen, "refusing to load it as root: its directory %s is %s", dir,
                reason);
            return FIDBUS_INVALID;
        }
        fd = openat(dfd, slash + 1,
                    O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
        e = errno;
        close(dfd);
        if (fd < 0 || fstat(fd, st) != 0) {
            e = fd < 0 ? e : errno;
            goto errno_fail;
        }
        if (S_ISREG(st->st_mode) &&
            fb_trust_stat(st, false, reason, sizeof reason) != FB_TRUST_OK) {
            close(fd);
            say(why, whylen, "refusing to load it as root: the file is %s", reason);
            return FIDBUS_INVALID;
        }
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        say(why, whylen, "not a regular file");
        return FIDBUS_INVALID;
    }
    *out = fd;
    return 0;

errno_fail:
    if (fd >= 0)
        close(fd);
    say(why, whylen, "%s", strerror(e));
    return e == ENOENT || e == ENOTDIR ? FIDBUS_NOT_FOUND : FIDBUS_INVALID;
}

static void free_keys(struct fb_kv *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(keys[i].key);
        free(keys[i].value);
    }
    free(keys);
}

static void free_plugin(struct fb_plugin *p)
{
    if (!p)
        return;
    free_keys(p->keys, p->nkeys);
    free(p->funcs);
    free(p->copy_path);
    free(p->path);
    free(p->name);
    free(p);
}

static int copy_keys(struct fb_plugin *p, const struct fb_plugin_conf *pc)
{
    if (pc->nkeys == 0)
        return 0;
    p->keys = calloc(pc->nkeys, sizeof *p->keys);
    if (!p->keys)
        return -ENOMEM;
    for (size_t i = 0; i < pc->nkeys; i++) {
        p->keys[i].key = strdup(pc->keys[i].key ? pc->keys[i].key : "");
        p->keys[i].value = strdup(pc->keys[i].value ? pc->keys[i].value : "");
        p->nkeys = i + 1;
        if (!p->keys[i].key || !p->keys[i].value)
            return -ENOMEM;
    }
    return 0;
}

/* Undoes whatever part of a load p has reached, in reverse order. */
static void unwind(struct fb_daemon *d, struct fb_plugin *p)
{
    if (p->initialized) {
        fb_timers_cancel_owner(d->timers, p);
        if (p->desc->fini)
            p->desc->fini(p->ctx);
        /* a fini that starts a timer must not leave it pointing into
         * code that is about to be unmapped */
        fb_timers_cancel_owner(d->timers, p);
        p->initialized = false;
    }
    if (p->dl)
        dlclose(p->dl);
    p->dl = NULL;
    if (p->copy_path) {
        unlink(p->copy_path);
        /* the last copy out tidies the directory; with others left in it
         * this fails with ENOTEMPTY, which is fine */
        char *slash = strrchr(p->copy_path, '/');
        if (slash) {
            *slash = '\0';
            rmdir(p->copy_path);
        }
    }
    free_plugin(p);
}

int fb_plugin_load(struct fb_daemon *d, const struct fb_plugin_conf *pc,
                   struct fb_plugin **out, char *err, size_t errlen)
{
    return fb_plugin_load_checked(d, pc, NULL, NULL, out, err, errlen);
}

int fb_plugin_load_checked(struct fb_daemon *d, const struct fb_plugin_conf *pc,
                           fb_plugin_name_taken_fn taken, void *arg,
                           struct fb_plugin **out, char *err, size_t errlen)
{
    char why[512] = "";
    int rc;
    /* No name: the plugin's own, known once it is open. */
    const char *name = pc->name ? pc->name : "plugin";
    const char *path = pc->path ? pc->path : "";

    struct fb_plugin *p = calloc(1, sizeof *p);
    if (!p) {
        rc = -ENOMEM;
        say(why, sizeof why, "out of memory");
        goto refuse;
    }
    p->d = d;
    atomic_init(&p->inflight, 0);
    p->name = strdup(name);
    p->path = strdup(path);
    if (!p->name || !p->path || copy_keys(p, pc) < 0) {
        rc = -ENOMEM;
        say(why, sizeof why, "out of memory");
        goto fail;
    }

    struct stat st;
    int in = -1;
    if (!pc->path) {
        rc = FIDBUS_NOT_FOUND;
        say(why, sizeof why, "%s", strerror(ENOENT));
        goto fail;
    }
    rc = open_source(path, &in, &st, why, sizeof why);
    if (rc)
        goto fail;
    p->src_dev = st.st_dev;
    p->src_ino = st.st_ino;
    p->src_size = st.st_size;
    p->src_mtime = st.st_mtim;

    /* Unnamed: the file's name, until the plugin's own name is known. */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    rc = make_copy(d->cfg->runtime_dir, pc->name ? name : base, in, &p->copy_path, why,
                   sizeof why);
    close(in);
    if (rc < 0) {
        if (rc != -ENOMEM)
            rc = FIDBUS_INTERNAL;
        goto fail;
    }

    p->dl = dlopen(p->copy_path, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        const char *e = dlerror();
        rc = FIDBUS_INVALID;
        say(why, sizeof why, "dlopen: %s", e ? e : "failed");
        goto fail;
    }
    p->desc = dlsym(p->dl, "fidbus_plugin");
    if (!p->desc) {
        rc = FIDBUS_INVALID;
        say(why, sizeof why, "not a fidbus plugin: no fidbus_plugin symbol");
        goto fail;
    }
    if (p->desc->abi != FIDBUS_PLUGIN_ABI) {
        rc = FIDBUS_INVALID;
        say(why, sizeof why, "plugin ABI %u, daemon supports %d", (unsigned)p->desc->abi,
            FIDBUS_PLUGIN_ABI);
        goto fail;
    }
    if (!pc->name) {
        const char *own = p->desc->name;
        if (!own || !fb_route_name_valid(own)) {
            rc = FIDBUS_INVALID;
            say(why, sizeof why,
                "the plugin's own name is not a valid instance name: give one");
            goto fail;
        }
        char *dup = strdup(own);
        if (!dup) {
            rc = -ENOMEM;
            say(why, sizeof why, "out of memory");
            goto fail;
        }
        free(p->name);
        p->name = dup;
    }
    if (!p->desc->functions || p->desc->nfunctions == 0) {
        rc = FIDBUS_INVALID;
        say(why, sizeof why, "plugin provides no functions");
        goto fail;
    }
    if (p->desc->nfunctions > MAX_FUNCTIONS) {
        rc = FIDBUS_INVALID;
        say(why, sizeof why, "plugin claims %zu functions (at most %d)",
            p->desc->nfunctions, MAX_FUNCTIONS);
        goto fail;
    }

    p->funcs = calloc(p->desc->nfunctions, sizeof *p->funcs);
    if (!p->funcs) {
        rc = -ENOMEM;
        say(why, sizeof why, "out of memory");
        goto fail;
    }
    p->nfuncs = p->desc->nfunctions;
    /* `namespace = NS` puts every function of this instance under NS, so
     * two instances of one file have two sets of funcIDs. fb_func_init
     * copies the name, so the plugin's own table is never written. */
    const char *ns = fb_plugin_config(p, "namespace");
    for (size_t i = 0; i < p->nfuncs; i++) {
        struct fidbus_function fn = p->desc->functions[i];
        if (ns)
            fn.ns = ns;
        rc = fb_func_init(&p->funcs[i], &fn, why, sizeof why);
        if (rc != 0)
            goto fail;
    }
    rc = fb_registry_check(d->reg, p->funcs, p->nfuncs, why, sizeof why);
    if (rc != 0)
        goto fail;
    /* After the funcID check (loading one file twice reports the
     * function), before init: a refused load runs none of its code. */
    if (taken && taken(arg, p->name)) {
        rc = FIDBUS_CONFLICT;
        say(why, sizeof why, "plugin instance '%s' is already loaded (give another name)",
            p->name);
        goto fail;
    }

    p->host = (struct fidbus_host){
        .handle = p,
        .log = host_log,
        .config = host_config,
        .publish = host_publish,
        .timer_start = host_timer_start,
        .timer_stop = host_timer_stop,
        .set_error = host_set_error,
    };
    if (p->desc->init) {
        init_plugin = p;
        init_error[0] = '\0';
        init_reason[0] = '\0';
        fb_timers_hold(d->timers, p);
        int irc = p->desc->init(&p->host, &p->ctx);
        init_plugin = NULL;
        if (irc == 0)
            fb_timers_release(d->timers, p);
        if (irc != 0) {
            /* init may have started timers before failing */
            fb_timers_cancel_owner(d->timers, p);
            rc = FIDBUS_INVALID;
            if (init_reason[0])
                say(why, sizeof why, "init failed: %s", init_reason);
            else if (init_error[0])
                say(why, sizeof why, "init failed: %d: %s", irc, init_error);
            else
                say(why, sizeof why, "init failed: %d", irc);
            goto fail;
        }
    }
    p->initialized = true;

    for (size_t i = 0; i < p->nfuncs; i++) {
        p->funcs[i].ctx = p->ctx;
        p->funcs[i].plugin = p;
    }
    rc = fb_registry_add(d->reg, p->funcs, p->nfuncs);
    if (rc != 0) {
        say(why, sizeof why, "registering its functions: %s", strerror(-rc));
        goto fail;
    }

    fb_info("plugin %s: loaded %s (%s %s, %zu function%s)", p->name, p->path,
            p->desc->name ? p->desc->name : "?",
            p->desc->version ? p->desc->version : "?", p->nfuncs,
            p->nfuncs == 1 ? "" : "s");
    *out = p;
    return 0;

fail:
    unwind(d, p);
refuse : {
    char line[1024];
    if (pc->name)
        say(line, sizeof line, "plugin %s (%s): %s", name, path, why);
    else
        say(line, sizeof line, "plugin %s: %s", path, why);
    /* One line, logged by the caller, who adds where the request came
     * from (config file and line, later the control client). */
    if (err && errlen)
        say(err, errlen, "%s", line);
}
    return rc;
}

/*
 * Instances whose unload stopped waiting for a blocking call (below):
 * detached -- no functions, no routes, no timers -- but neither finalised
 * nor closed, since the call still runs their code. Finished by a later
 * unload or at shutdown once their calls have returned. Control thread,
 * or the main thread at shutdown after the control thread is gone.
 */
static struct fb_plugin *detached;

static void finish_unload(struct fb_daemon *d, struct fb_plugin *p)
{
    char *name = strdup(p->name);
    unwind(d, p);
    fb_info("plugin %s: unloaded", name ? name : "?");
    free(name);
}

void fb_plugin_reap_detached(struct fb_daemon *d, bool final)
{
    for (struct fb_plugin **pp = &detached; *pp;) {
        struct fb_plugin *p = *pp;
        uint64_t n = atomic_load_explicit(&p->inflight, memory_order_acquire);
        if (n && final)
            fb_warn("plugin %s: %" PRIu64 " blocking call(s) still running at exit; "
                    "left loaded (fini not called)",
                    p->name, n);
        if (n) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        finish_unload(d, p);
    }
}

void fb_plugin_unload(struct fb_daemon *d, struct fb_plugin *p)
{
    if (!p)
        return;
    fb_registry_remove(d->reg, p->funcs, p->nfuncs);
    fb_plugin_reap_detached(d, false);

    /* Blocking calls already queued still hold pointers into the plugin's
     * code and ctx. This is a drain at unload or shutdown, not a hot path:
     * a short poll is simpler than a condvar shared with the pool. It
     * lasts handler_deadline_ms at most (0: as long as it takes); at
     * shutdown the pool has already waited, and what is left is a call it
     * gave up on (pool.c), so there is no wait at all. */
    struct timespec tick = {.tv_sec = 0, .tv_nsec = 1000000};
    uint64_t limit_ms = d->cfg->handler_deadline_ms, start = fb_now_ns();
    unsigned waited = 0;
    uint64_t n;
    while ((n = atomic_load_explicit(&p->inflight, memory_order_acquire)) != 0) {
        uint64_t ms = (fb_now_ns() - start) / 1000000u;
        if (atomic_load(&d->stopping) || (limit_ms && ms >= limit_ms)) {
            /* Its code is running: closing it would pull it from under the
             * call, and fini would free what the call uses. */
            fb_timers_cancel_owner(d->timers, p);
            p->next = detached;
            detached = p;
            if (atomic_load(&d->stopping))
                return; /* the shutdown's final reap logs it */
            fb_warn("plugin %s: stopped waiting for %" PRIu64 " blocking call(s) after "
                    "%llu ms (handler_deadline_ms = %llu); the plugin is detached but "
                    "left loaded (fini and unload when they return)",
                    p->name, n, (unsigned long long)ms, (unsigned long long)limit_ms);
            return;
        }
        if (++waited == 5000)
            fb_warn("plugin %s: still waiting for %" PRIu64 " blocking call(s)", p->name,
                    n);
        nanosleep(&tick, NULL);
    }
    finish_unload(d, p);
}

size_t fb_plugin_count(const struct fb_plugin *first)
{
    size_t n = 0;
    for (const struct fb_plugin *p = first; p; p = p->next)
        n++;
    return n;
}
