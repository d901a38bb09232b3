/*
 * fidbusd: command line, configuration, and the daemon's run.
 *
 * Runs in the foreground (systemd supervises; no self-daemonising). With
 * --default-config it runs the embedded quick-start configuration with
 * every path under a per-user runtime dir, so no root is needed.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "build_config.h"
#include "base/err.h"
#include "config/config.h"
#include "daemon.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: fidbusd [-c FILE | --default-config] [--check-config]\n"
        "       fidbusd --version | --help\n"
        "\n"
        "Runs the fidbus event bus in the foreground.\n"
        "\n"
        "  -c, --config FILE   configuration file (default " FIDBUS_SYSCONF_CONFIG ")\n"
        "      --default-config  use the embedded quick-start configuration: sockets\n"
        "                      and state under $FIDBUS_RUNTIME_DIR, else sockets in\n"
        "                      $XDG_RUNTIME_DIR/fidbus, else /tmp/fidbus-UID (made\n"
        "                      mode 0700), and the state in state-HASH there, one\n"
        "                      per directory fidbusd runs from; the shipped log and\n"
        "                      count plugins (next to fidbusd's build or install\n"
        "                      tree); every event to both\n"
        "      --check-config  validate the configuration and exit 0 (valid) or 1\n"
        "      --version       print the version and exit\n"
        "  -h, --help          print this help and exit\n"
        "\n"
        "A runtime_dir or state_dir that exists but is owned by another user (not\n"
        "root) or that group or others can write is refused, with the path and the\n"
        "fix, as are such a state file and, when run as root, a plugin file (or its\n"
        "directory) that another user can write.\n"
        "\n"
        "Signals: SIGTERM/SIGINT stop cleanly (what was read is finished, every\n"
        "plugin's fini runs, sockets are removed).\n");
}

/* Replaces every occurrence of key in text (malloc'd result). */
static char *replace_all(const char *text, const char *key, const char *val)
{
    size_t kl = strlen(key), vl = strlen(val), n = 0;
    for (const char *p = text; (p = strstr(p, key)); p += kl)
        n++;
    char *out = malloc(strlen(text) + n * vl + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = text;;) {
        const char *q = strstr(p, key);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, val, vl);
        o += vl;
        p = q + kl;
    }
    return out;
}

/* The directory fidbusd runs from (no trailing slash), or "" if unknown. */
static void exe_dir(char *out, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    out[0] = '\0';
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    snprintf(out, len, "%s", exe);
}

/* runtime: where the sockets go; state: where state.cbor goes. */
static void default_dirs(char *runtime, char *state, size_t len)
{
    const char *e = getenv("FIDBUS_RUNTIME_DIR");
    if (e && *e) {
        /* the caller gave this instance a place of its own: all of it there */
        snprintf(runtime, len, "%s", e);
        snprintf(state, len, "%s/state", e);
        return;
    }
    e = getenv("XDG_RUNTIME_DIR");
    if (e && *e && access(e, W_OK) == 0) {
        snprintf(runtime, len, "%s/fidbus", e);
    } else {
        /* Without a session's runtime dir (normal under sudo) the quick
         * start still needs a place both fidbusd and fidbusctl find, as
         * tmux does: /tmp/fidbus-UID, made private here. One that already
         * exists but is not ours (another user may have planted it, with a
         * state file naming their plugin) is refused at start-up with the
         * path and the fix (fb_daemon_start, trusted_dir.h); fidbusctl
         * ignores it. */
        snprintf(runtime, len, "/tmp/fidbus-%u", (unsigned)getuid());
        (void)mkdir(runtime, 0700);
    }
    /* The sockets are per user, so fidbusctl finds them without options,
     * but the state is per checkout (or install prefix): the state of
     * another clone's quick start, with its plugin paths and generation,
     * would make a first start warn about a changed config. FNV-1a of the
     * directory fidbusd runs from names it. */
    char dir[PATH_MAX];
    exe_dir(dir, sizeof dir);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = dir; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    int n = snprintf(state, len, "%s/state-%012llx", runtime,
                     (unsigned long long)(h & 0xffffffffffffull));
    if (n < 0 || (size_t)n >= len) /* a runtime dir that long fails later anyway */
        snprintf(state, len, "%s", runtime);
}

/* The build tree's plugins when run from it, else the installed ones,
 * found from where fidbusd is: an install moved to another prefix
 * (cmake --install --prefix) finds its own plugins, not those of the
 * prefix the tree was configured for. */
static void default_plugin_dir(char *out, size_t len)
{
    const char *e = getenv("FIDBUS_PLUGIN_DIR");
    if (e && *e) {
        snprintf(out, len, "%s", e);
        return;
    }
    char dir[PATH_MAX / 2];
    exe_dir(dir, sizeof dir);
    if (dir[0]) {
        const char *rel[] = {"../plugins", FIDBUS_PLUGIN_REL_DIR};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char probe[PATH_MAX + 32];
            snprintf(probe, sizeof probe, "%s/%s/log.so", dir, rel[i]);
            char real[PATH_MAX];
            if (access(probe, R_OK) == 0 && realpath(probe, real)) {
                *strrchr(real, '/') = '\0'; /* drop "/log.so" */
                snprintf(out, len, "%s", real);
                return;
            }
        }
    }
    snprintf(out, len, "%s", FIDBUS_PLUGIN_INSTALL_DIR);
}

/* The embedded config with its placeholders filled in; *text (malloc'd)
 * is kept for config.reload. */
static int load_default(struct fb_config **cfg, char **text, char *err, size_t errlen)
{
    char runtime[PATH_MAX], state[PATH_MAX], plugins[PATH_MAX];
    default_dirs(runtime, state, sizeof runtime);
    default_plugin_dir(plugins, sizeof plugins);
    char *a = replace_all(fb_default_config, "@STATE@", state);
    char *b = a ? replace_all(a, "@RUNTIME@", runtime) : NULL;
    free(a);
    a = b;
    b = a ? replace_all(a, "@PLUGINDIR@", plugins) : NULL;
    free(a);
    if (!b) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = fb_config_load_string(b, "<embedded default>", cfg, err, errlen);
    if (rc == 0)
        *text = b;
    else
        free(b);
    return rc;
}

/*
 * Every connection is a descriptor, and [limits] max_connections (1024 by
 * default) plus listeners, plugins and the state dir need more than the
 * soft RLIMIT_NOFILE of 1024 most sessions start with. Raise the soft
 * limit to what the connection cap needs (up to the hard limit; under
 * systemd LimitNOFILE= sets both); warn when even that is too few, so an
 * admin sees why accept(2) fails with EMFILE before max_connections.
 */
static void raise_nofile(const struct fb_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->limits.max_connections + 256;
    if (cfg->limits.max_connections == 0 || want > rl.rlim_max)
        want = rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return;
    }
    if (cfg->limits.max_connections &&
        rl.rlim_cur < (rlim_t)cfg->limits.max_connections + 64)
        fb_warn("open-file limit %llu is below max_connections = %u plus room for "
                "listeners and plugins; raise LimitNOFILE= or lower max_connections",
                (unsigned long long)rl.rlim_cur, cfg->limits.max_connections);
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_VERSION, OPT_DEFAULT };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"default-config", no_argument, NULL, OPT_DEFAULT},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *file = NULL;
    bool check = false, use_default = false;
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            file = optarg;
            break;
        case OPT_CHECK:
            check = true;
            break;
        case OPT_DEFAULT:
            use_default = true;
            break;
        case OPT_VERSION:
            printf("fidbusd %s (protocol 1, plugin ABI 1)\n", FIDBUS_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fidbusd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (file && use_default) {
        fprintf(stderr, "fidbusd: --config and --default-config exclude each other\n");
        return 2;
    }

    struct fb_config *cfg = NULL;
    char err[1024] = "";
    char *embedded = NULL;
    int rc = use_default ? load_default(&cfg, &embedded, err, sizeof err)
                         : fb_config_load_file(file ? file : FIDBUS_SYSCONF_CONFIG, &cfg,
                                               err, sizeof err);
    if (rc) {
        /* Through the logger, not fprintf: under systemd this is the one
         * line that says why the unit failed, and journald needs its <3>
         * to file it as an error. On a terminal (--check-config included)
         * it reads "fidbusd: error: FILE:LINE: ...". */
        fb_error("%s", err);
        return 1;
    }
    if (check) {
        printf("%s: configuration OK (%zu plugin%s, %zu route%s)\n", cfg->file,
               cfg->nplugins, cfg->nplugins == 1 ? "" : "s", cfg->nroutes,
               cfg->nroutes == 1 ? "" : "s");
        fb_config_free(cfg);
        free(embedded);
        return 0;
    }
    fb_log_set_level(cfg->log_level);
    raise_nofile(cfg);

    struct fb_daemon *d = NULL;
    rc = fb_daemon_new(cfg, &d);
    if (rc < 0) {
        fb_error("cannot set the daemon up: %s", strerror(-rc));
        fb_config_free(cfg);
        free(embedded);
        return 1;
    }
    d->embedded_config = embedded;
    rc = fb_daemon_start(d, err, sizeof err);
    if (rc) {
        fb_error("%s", err);
        fb_daemon_free(d);
        return 1;
    }
    if (use_default && cfg->unix_path) {
        /* the fidbusctl next to this fidbusd: the build tree's or the
         * installed one, whichever runs */
        char ctl[PATH_MAX + 16];
        exe_dir(ctl, PATH_MAX);
        strcat(ctl, "/fidbusctl");
        if (ctl[0] != '/' || access(ctl, X_OK) != 0)
            strcpy(ctl, "fidbusctl");
        fprintf(stderr,
                "\nfidbusd is running with the embedded default config.\n"
                "Publish an event from another terminal with:\n"
                "  %s --bus unix:%s publish demo.hello --tag user=me "
                "--data-json '{\"hello\": \"world\"}' --ack\n"
                "Stop it with Ctrl-C.\n\n",
                ctl, cfg->unix_path);
    }
    rc = fb_daemon_run(d);
    fb_daemon_free(d);
    fb_info("stopped");
    return rc;
}
