/*
 * ctl/main.c -- the command-line client: main, global options,
 * dispatch and the exit-code conventions.
 *
 *     fidbusctl [--socket CONTROL] [--bus ADDR] [--json] COMMAND ...
 *
 * `publish` talks to the bus; the control commands (status, stats,
 * plugin ..., func list, route ..., config ...) send one REQUEST to the
 * control socket and render its REPLY with render.c: a table for
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
 *
 * The commands live in publish.c and control.c; what
 * they share with this file is declared in fidbusctl.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <fidbus/client.h>

#include "fidbusctl.h"
#include "trusted_dir.h"

/* Refuse to slurp more than this from a file: no frame is this big. */
#define MAX_FILE_BYTES (64u * 1024u * 1024u)

static const char usage_text[] =
    "usage: fidbusctl [--socket CONTROL] [--bus ADDR] [--key-file FILE] [--json]\n"
    "                 COMMAND ...\n"
    "\n"
    "commands:\n"
    "  publish EVENT [--tag K=V]... [--data-json JSON | --data-hex HEX |\n"
    "                 --data-file FILE] [--ack]\n"
    "      publish one event; with --ack wait for the daemon's ACK and print\n"
    "      how many handlers succeeded\n"
    "  status | stats                      the daemon's state and counters\n"
    "  stats --prometheus                  the counters as Prometheus text\n"
    "  plugin list                         plugins and their funcIDs\n"
    "  plugin load PATH [--name NAME] [--config JSON]\n"
    "  plugin unload NAME\n"
    "  plugin reload NAME [--path PATH]\n"
    "  func list                           every function with its sighash\n"
    "  func release ID                     lift a function's quarantine\n"
    "  func members [ID]                   members serving remote functions\n"
    "  route list                          the running routes and generation\n"
    "  route add NAME EVENT [--tag K=V]... --to TARGET[:WEIGHT]...\n"
    "            [--mode all|split] [--split-by TAG] [--priority N]\n"
    "            [--signature HEX]\n"
    "  route del NAME\n"
    "  route weight ROUTE TARGET=WEIGHT...\n"
    "      new weights for some of a route's targets (TARGET as written in\n"
    "      the route, its canonical name or funcID) in one transaction\n"
    "  route apply FILE|- [--replace]\n"
    "      FILE ('-': stdin): JSON or CBOR {add, del, replace, if_generation}\n"
    "  route test EVENT [--tag K=V]... [--apply FILE]\n"
    "  config reload [--dry-run] | config export\n"
    "  conn list                           who is connected: bus and control\n"
    "                                      connections with their counters\n"
    "  top [--once]                        live view: rates per route and\n"
    "                                      function, connections, queue ('q' quits)\n"
    "  tail [PATTERN] [--tag K=V]... [--json] [--buffer BYTES]\n"
    "                                      watch events as they pass (a tap);\n"
    "                                      drops go to stderr, Ctrl-C ends it\n"
    "\n"
    "options:\n"
    "  --bus ADDR       bus address: unix:PATH, PATH or tcp:HOST:PORT\n"
    "                   (default: $FIDBUS_BUS, else the first bus.sock found in\n"
    "                   $FIDBUS_RUNTIME_DIR, $XDG_RUNTIME_DIR/fidbus, /run/fidbus,\n"
    "                   /tmp/fidbus-$UID; of these, only $FIDBUS_RUNTIME_DIR is\n"
    "                   used when another user could have made or can write it)\n"
    "  --socket PATH    control socket (default: $FIDBUS_CONTROL, else control.sock\n"
    "                   in the same places)\n"
    "  --key-file FILE  the shared key for a tcp: bus that requires auth\n"
    "                   (default: $FIDBUS_KEY_FILE; mode 0600 or 0400)\n"
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

const char *fbctl_connect_why(int rc)
{
    static char why[600];
    const char *msg = fidbus_connect_error();
    if (!fidbus_error_code(rc) || !*msg)
        return fidbus_strerror(rc);
    snprintf(why, sizeof why, "%s: %s", fidbus_code_name(fidbus_error_code(rc)), msg);
    return why;
}

int fbctl_fail(int status, const char *fmt, ...)
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
 * Whether the default search may use dir: a bus found there gets our
 * events, payloads included, so it must be one no third user could have
 * made or can write (trusted_dir.h): owned by us or root, or -- as systemd
 * hands /run/fidbus to the fidbus user -- made by root in a parent only
 * root can write. Never a /tmp/fidbus-UID another user planted.
 */
static bool search_dir_ok(const char *dir)
{
    char why[8];
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    enum fb_trust t =
        fstat(fd, &st) == 0 ? fb_trust_stat(&st, false, why, sizeof why) : FB_TRUST_MODE;
    if (t == FB_TRUST_OWNER && !(st.st_mode & (S_IWGRP | S_IWOTH))) {
        /* only root can make a directory in a parent only root writes */
        struct stat pst;
        t = fstatat(fd, "..", &pst, 0) == 0 && pst.st_uid == 0 &&
                    !(pst.st_mode & (S_IWGRP | S_IWOTH))
                ? FB_TRUST_OK
                : FB_TRUST_OWNER;
    }
    close(fd);
    return t == FB_TRUST_OK;
}

/*
 * $ENV, else NAME in $FIDBUS_RUNTIME_DIR when that is set (the user's
 * explicit choice: used as given, whether or not the socket exists, so a
 * missing daemon is an error naming it and not a fallback to another
 * one), else NAME in the first runtime dir that has it (the same places
 * fidbusd picks, most specific first) and passes search_dir_ok, else the
 * system path.
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
        /* Used as given, with or without a socket in it: connecting then
         * fails naming this path, never another daemon's socket. */
        snprintf(buf, cap, "%s/%s", rt, name);
        return buf;
    }
    char dir[PATH_MAX];
    if (xdg && *xdg) {
        if (snprintf(dir, sizeof dir, "%s/fidbus", xdg) < (int)sizeof dir &&
            snprintf(buf, cap, "%s/%s", dir, name) < (int)cap && stat(buf, &st) == 0 &&
            search_dir_ok(dir))
            return buf;
    }
    snprintf(buf, cap, "/run/fidbus/%s", name);
    if (stat(buf, &st) == 0 && search_dir_ok("/run/fidbus"))
        return buf;
    snprintf(dir, sizeof dir, "/tmp/fidbus-%u", (unsigned)getuid());
    if (snprintf(buf, cap, "%s/%s", dir, name) < (int)cap && stat(buf, &st) == 0 &&
        search_dir_ok(dir))
        return buf;
    snprintf(buf, cap, "/run/fidbus/%s", name);
    return buf;
}

int fbctl_bad_option(int c, char **argv)
{
    const char *opt = argv[optind - 1];
    if (c == ':')
        return fbctl_fail(EXIT_USAGE, "option '%s' needs an argument (try --help)", opt);
    if (optopt)
        return fbctl_fail(EXIT_USAGE, "unknown option '-%c' (try --help)", optopt);
    return fbctl_fail(EXIT_USAGE, "unknown option '%s' (try --help)", opt);
}

/* main's options, also taken after any command so they can go at the end. */
bool fbctl_global_option(struct ctl *ctl, int c)
{
    switch (c) {
    case CTL_OPT_JSON:
        ctl->json = true;
        return true;
    case CTL_OPT_BUS:
        ctl->bus = optarg;
        return true;
    case CTL_OPT_SOCKET:
        ctl->socket = optarg;
        return true;
    case CTL_OPT_KEY_FILE:
        ctl->key_file = optarg;
        return true;
    default:
        return false;
    }
}

int fbctl_read_file(const char *what, const char *path, struct fidbus_buf *out)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return fbctl_fail(EXIT_USAGE, "cannot read %s '%s': %s", what, path,
                          strerror(errno));
    int rc = 0;
    for (;;) {
        if (fidbus_buf_reserve(out, 65536) < 0) {
            rc = fbctl_fail(EXIT_USAGE, "out of memory reading '%s'", path);
            break;
        }
        size_t n = fread(out->data + out->len, 1, out->cap - out->len, f);
        out->len += n;
        if (out->len > MAX_FILE_BYTES) {
            rc = fbctl_fail(EXIT_USAGE, "%s '%s' is larger than %u bytes", what, path,
                            MAX_FILE_BYTES);
            break;
        }
        if (n == 0) {
            if (ferror(f))
                rc = fbctl_fail(EXIT_USAGE, "cannot read %s '%s': %s", what, path,
                                strerror(errno));
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    return rc;
}

void fbctl_print_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(obj);
}

int fbctl_refused(const struct ctl *ctl, const char *words, int code, const char *msg,
                  bool has_result, uint64_t result)
{
    const char *name = fidbus_code_name(code);
    if (ctl->json) {
        json_t *o = json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error",
                              name, "message", msg);
        if (o && has_result)
            json_object_set_new(o, "result", json_integer((json_int_t)result));
        fbctl_print_json(o);
    }
    if (has_result)
        return fbctl_fail(EXIT_BUS, "%s failed: %s: %s (%llu handler%s succeeded)", words,
                          name, msg, (unsigned long long)result, result == 1 ? "" : "s");
    return *msg ? fbctl_fail(EXIT_BUS, "%s failed: %s: %s", words, name, msg)
                : fbctl_fail(EXIT_BUS, "%s failed: %s", words, name);
}

int fbctl_lost(const char *words, const char *peer, const char *addr, int rc)
{
    if (rc == -ETIMEDOUT)
        return fbctl_fail(EXIT_CONN, "%s failed: timed out waiting for the %s at %s",
                          words, peer, addr);
    if (rc == -ECONNRESET)
        return fbctl_fail(EXIT_CONN, "%s failed: the %s at %s closed the connection",
                          words, peer, addr);
    return fbctl_fail(EXIT_CONN, "%s failed: %s", words, fidbus_strerror(rc));
}

int fbctl_flush(int status)
{
    if (fflush(stdout) != 0 && status == EXIT_OK)
        status = fbctl_fail(EXIT_CONN, "cannot write output: %s", strerror(errno));
    return status;
}

/* --------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    enum { O_VERSION = 1000 };
    static const struct option opts[] = {
        CTL_GLOBAL_OPTIONS,
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},
        {0},
    };
    struct ctl ctl = {0};
    int c;

    opterr = 0;
    /* '+': stop at the command; its options are parsed by the command */
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (fbctl_global_option(&ctl, c))
            continue;
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return EXIT_OK;
        case O_VERSION:
            printf("fidbusctl %s\n", FIDBUS_VERSION);
            return EXIT_OK;
        default:
            return fbctl_bad_option(c, argv);
        }
    }
    if (optind >= argc)
        return fbctl_fail(EXIT_USAGE, "no command given (try --help)");
    if (!ctl.bus)
        ctl.bus =
            default_path("FIDBUS_BUS", "bus.sock", ctl.bus_buf, sizeof(ctl.bus_buf));
    if (!ctl.socket)
        ctl.socket = default_path("FIDBUS_CONTROL", "control.sock", ctl.socket_buf,
                                  sizeof(ctl.socket_buf));

    if (!ctl.key_file) {
        const char *k = getenv("FIDBUS_KEY_FILE");
        ctl.key_file = k && *k ? k : NULL;
    }

    const char *cmd = argv[optind];
    if (strcmp(cmd, "publish") == 0)
        return fbctl_publish(&ctl, argc - optind, argv + optind);
    if (strcmp(cmd, "top") == 0)
        return fbctl_top(&ctl, argc - optind, argv + optind);
    if (strcmp(cmd, "tail") == 0)
        return fbctl_tail(&ctl, argc - optind, argv + optind);
    if (fbctl_is_control_group(cmd))
        return fbctl_control(&ctl, argc - optind, argv + optind);
    return fbctl_fail(EXIT_USAGE, "unknown command '%s'", cmd);
}
