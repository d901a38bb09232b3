/*
 * Unit tests for the config loader (daemon/config/config.c) and route spec
 * parsing (daemon/config/route_spec.c): the shipped configs parse, every error
 * names FILE:LINE, and the target/tag syntax and spec checks behave as
 * documented. Run under ASan too, so the copy/clear and error paths are
 * checked for leaks.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fidbus/proto.h>

#include "config/config.h"
#include "config/route_spec.h"
#include "unit/config_check.h"

/* Replaces every `from` in s by `to`; caller frees. */
static char *replace(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = s; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(s) + n * tl + 1), *o = out;
    ck_assert_ptr_nonnull(out);
    for (const char *p = s;;) {
        const char *q = strstr(p, from);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
        p = q + fl;
    }
    return out;
}

static const char *source_dir(void)
{
    const char *d = getenv("FIDBUS_SOURCE_DIR");
    return d ? d : ".";
}

/* ------------------------------------------------------- whole files */

/* A group is useless on a 0600 socket: without `mode` it gets 0660. */
START_TEST(test_config_control_group_mode)
{
    struct fb_config *c = load_ok("[control]\ngroup = adm\n");
    ck_assert_uint_eq(c->control_mode, 0660);
    fb_config_free(c);
    c = load_ok("[control]\ngroup = adm\nmode = 0600\n");
    ck_assert_uint_eq(c->control_mode, 0600);
    fb_config_free(c);
}
END_TEST

START_TEST(test_config_example_parses)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/conf/fidbusd.conf", source_dir());
    struct fb_config *c = NULL;
    int rc = fb_config_load_file(path, &c, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_uint_eq(c->workers, (unsigned)(ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu));
    ck_assert_str_eq(c->file, path);
    ck_assert_str_eq(c->runtime_dir, "/run/fidbus");
    ck_assert_str_eq(c->state_dir, "/var/lib/fidbus");
    ck_assert_uint_eq(c->max_frame, 1048576);
    ck_assert_uint_eq(c->max_depth, 64);
    ck_assert_uint_eq(c->blocking_threads, 4);
    ck_assert_int_eq(c->log_level, FB_LOG_INFO);
    ck_assert_str_eq(c->unix_path, "/run/fidbus/bus.sock");
    ck_assert_uint_eq(c->unix_mode, 0660);
    ck_assert_ptr_null(c->tcp);
    ck_assert_str_eq(c->control_socket, "/run/fidbus/control.sock");
    ck_assert_uint_eq(c->control_mode, 0600);
    ck_assert_ptr_null(c->control_group);

    ck_assert_uint_eq(c->nplugins, 2);
    ck_assert_str_eq(c->plugins[0].name, "log");
    ck_assert_str_eq(c->plugins[0].path,
                     "/usr/lib/x86_64-linux-gnu/fidbus/plugins/log.so");
    ck_assert_uint_eq(c->plugins[0].nkeys, 2);
    ck_assert_str_eq(c->plugins[0].keys[1].key, "file");
    ck_assert_str_eq(c->plugins[0].keys[1].value, "-");
    ck_assert_str_eq(c->plugins[1].name, "count");

    /* the catch-all route counts; logging every event is commented out */
    ck_assert_uint_eq(c->nroutes, 1);
    struct fb_route_spec *r = &c->routes[0];
    ck_assert_str_eq(r->name, "everything");
    ck_assert_str_eq(r->event, "*");
    ck_assert_uint_eq(r->nto, 1);
    ck_assert_str_eq(r->to[0].ns, "fidbus");
    ck_assert_str_eq(r->to[0].name, "count");
    ck_assert_str_eq(r->to[0].version, "1.0.0");
    ck_assert_int_eq(r->mode, FB_MODE_ALL);
    ck_assert_int_eq(r->priority, 0);
    ck_assert_int_gt(r->line, 0);
    fb_config_free(c);
}
END_TEST

START_TEST(test_config_default_parses)
{
    char *s = replace(fb_default_config, "@STATE@", "/tmp/fidbus-test-run/state-0123");
    char *a = replace(s, "@RUNTIME@", "/tmp/fidbus-test-run");
    char *text = replace(a, "@PLUGINDIR@", "/opt/fidbus/plugins");
    free(s);
    free(a);
    ck_assert_ptr_null(strchr(text, '@'));

    struct fb_config *c = load_ok(text);
    ck_assert_str_eq(c->runtime_dir, "/tmp/fidbus-test-run");
    ck_assert_str_eq(c->state_dir, "/tmp/fidbus-test-run/state-0123");
    ck_assert_str_eq(c->unix_path, "/tmp/fidbus-test-run/bus.sock");
    ck_assert_str_eq(c->control_socket, "/tmp/fidbus-test-run/control.sock");
    ck_assert_ptr_null(c->tcp);
    ck_assert_uint_ge(c->workers, 1);
    ck_assert_uint_eq(c->nplugins, 2);
    ck_assert_str_eq(c->plugins[0].path, "/opt/fidbus/plugins/log.so");
    ck_assert_str_eq(c->plugins[1].path, "/opt/fidbus/plugins/count.so");
    ck_assert_uint_eq(c->nroutes, 1);
    ck_assert_str_eq(c->routes[0].event, "*");
    ck_assert_uint_eq(c->routes[0].nto, 2);
    ck_assert_str_eq(c->routes[0].to[1].name, "count");
    fb_config_free(c);
    free(text);
}
END_TEST

START_TEST(test_config_empty_gives_defaults)
{
    struct fb_config *c = load_ok("");
    ck_assert_str_eq(c->file, "t.conf");
    ck_assert_str_eq(c->runtime_dir, "/run/fidbus");
    ck_assert_str_eq(c->state_dir, "/var/lib/fidbus");
    ck_assert_str_eq(c->unix_path, "/run/fidbus/bus.sock");
    ck_assert_str_eq(c->control_socket, "/run/fidbus/control.sock");
    ck_assert_uint_eq(c->unix_mode, 0660);
    ck_assert_uint_eq(c->control_mode, 0600);
    ck_assert_uint_eq(c->control_max_reply, FIDBUS_CONTROL_REPLY_MAX);
    ck_assert_uint_eq(c->max_frame, FIDBUS_MAX_FRAME_DEFAULT);
    ck_assert_uint_eq(c->max_depth, FIDBUS_MAX_DEPTH_DEFAULT);
    ck_assert_uint_eq(c->blocking_threads, 4);
    ck_assert_int_eq(c->log_level, FB_LOG_INFO);
    ck_assert_uint_ge(c->workers, 1);
    ck_assert_ptr_null(c->tcp);
    ck_assert_ptr_null(c->tcp_key_file);
    ck_assert_ptr_null(c->control_group);
    ck_assert_uint_eq(c->nplugins, 0);
    ck_assert_uint_eq(c->nroutes, 0);
    fb_config_free(c);
    ck_assert_ptr_null(fb_config_free(NULL));
}
END_TEST

START_TEST(test_config_runtime_dir_moves_sockets)
{
    struct fb_config *c = load_ok("[daemon]\nruntime_dir = /srv/fb/\n");
    ck_assert_str_eq(c->unix_path, "/srv/fb/bus.sock");
    ck_assert_str_eq(c->control_socket, "/srv/fb/control.sock");
    fb_config_free(c);

    /* an explicit path wins; an empty unix means no Unix listener */
    c = load_ok("[daemon]\nruntime_dir = /srv/fb\n"
                "[listen]\nunix =\ntcp = 127.0.0.1:7878\ntcp_auth = none\n"
                "[control]\nsocket = /x/c.sock\n");
    ck_assert_ptr_null(c->unix_path);
    ck_assert_str_eq(c->control_socket, "/x/c.sock");
    fb_config_free(c);
}
END_TEST

START_TEST(test_config_all_keys)
{
    struct fb_config *c = load_ok("# comment\n"
                                  "[daemon]\n"
                                  "workers = 3\n"
                                  "runtime_dir = /r\n"
                                  "state_dir = /s\n"
                                  "max_frame = 16\n"
                                  "max_depth = 1024\n"
                                  "log_level = debug\n"
                                  "blocking_threads = 256\n"
                                  "[listen]\n"
                                  "unix = /r/b.sock\n"
                                  "unix_mode = 0600\n"
                                  "tcp = [::1]:65535\n"
                                  "tcp_auth = none\n"
                                  "tcp_key_file = /k\n"
                                  "[control]\n"
                                  "socket = /r/c.sock\n"
                                  "mode = 660\n"
                                  "group = fidbus\n"
                                  "max_reply = 4096\n"
                                  "[plugin p1]\n"
                                  "path = /p.so\n"
                                  "anything = goes here ; but not the comment\n"
                                  "[route r.1]\n"
                                  "event = order.*\n"
                                  "tags = version=v2, region=*\n"
                                  "to = a.b@1.2.3:5, c.d:0\n"
                                  "mode = split\n"
                                  "split_by = user\n"
                                  "priority = -42\n"
                                  "signature = "
                                  "0123456789abcdef0123456789ABCDEF"
                                  "0123456789abcdef0123456789abcdef\n");
    ck_assert_uint_eq(c->workers, 3);
    ck_assert_str_eq(c->runtime_dir, "/r");
    ck_assert_str_eq(c->state_dir, "/s");
    ck_assert_uint_eq(c->max_frame, 16);
    ck_assert_uint_eq(c->max_depth, 1024);
    ck_assert_int_eq(c->log_level, FB_LOG_DEBUG);
    ck_assert_uint_eq(c->blocking_threads, 256);
    ck_assert_str_eq(c->unix_path, "/r/b.sock");
    ck_assert_uint_eq(c->unix_mode, 0600);
    ck_assert_str_eq(c->tcp, "[::1]:65535");
    ck_assert_str_eq(c->tcp_host, "::1");
    ck_assert_uint_eq(c->tcp_port, 65535);
    ck_assert_int_eq(c->tcp_auth, FB_TCP_AUTH_NONE);
    ck_assert_str_eq(c->tcp_key_file, "/k");
    ck_assert_str_eq(c->control_socket, "/r/c.sock");
    ck_assert_uint_eq(c->control_mode, 0660);
    ck_assert_str_eq(c->control_group, "fidbus");
    ck_assert_uint_eq(c->control_max_reply, 4096);
    ck_assert_uint_eq(c->nplugins, 1);
    ck_assert_uint_eq(c->plugins[0].nkeys, 2);
    ck_assert_str_eq(c->plugins[0].keys[0].key, "path");
    ck_assert_str_eq(c->plugins[0].keys[1].value, "goes here");
    ck_assert_int_eq(c->plugins[0].line, 21);

    struct fb_route_spec *r = &c->routes[0];
    ck_assert_str_eq(r->name, "r.1");
    ck_assert_int_eq(r->line, 24);
    ck_assert_str_eq(r->event, "order.*");
    ck_assert_uint_eq(r->ntags, 2);
    ck_assert_str_eq(r->tags[1].key, "region");
    ck_assert_str_eq(r->tags[1].value, "*");
    ck_assert_uint_eq(r->nto, 2);
    ck_assert_uint_eq(r->to[0].weight, 5);
    ck_assert(r->to[0].has_weight);
    ck_assert_uint_eq(r->to[1].weight, 0);
    ck_assert_int_eq(r->mode, FB_MODE_SPLIT);
    ck_assert_str_eq(r->split_by, "user");
    ck_assert_int_eq(r->priority, -42);
    ck_assert_uint_eq(strlen(r->signature), 64);
    fb_config_free(c);
}
END_TEST

START_TEST(test_config_tcp_loopback_none)
{
    struct fb_config *c = load_ok("[listen]\ntcp = localhost:7878\ntcp_auth = none\n");
    ck_assert_str_eq(c->tcp_host, "127.0.0.1");
    ck_assert_uint_eq(c->tcp_port, 7878);
    fb_config_free(c);
    c = load_ok("[listen]\ntcp = 127.9.9.9:1\ntcp_auth = none\n");
    ck_assert_str_eq(c->tcp_host, "127.9.9.9");
    fb_config_free(c);
    /* auth none without tcp is harmless */
    c = load_ok("[listen]\ntcp =\ntcp_auth = none\n");
    ck_assert_ptr_null(c->tcp);
    fb_config_free(c);
}
END_TEST

/* TCP's share of the connections and the places before AUTH
 * (conn_admit.h): unset, TCP never gets more than half. */
/* fb_config_limits_write (config.export's [limits]) reads back to the
 * same limits: every key set away from its default, max_connections_tcp
 * set and derived, and nothing at all for defaults. */
static void limits_roundtrip(const char *limits, const char *want_text)
{
    char conf[2048];
    snprintf(conf, sizeof conf, "[listen]\nunix = /tmp/x.sock\n%s", limits);
    struct fb_config *c = load_ok(conf);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    fb_config_limits_write(f, &c->limits);
    ck_assert_int_eq(fclose(f), 0);
    if (want_text)
        ck_assert_str_eq(buf, want_text);
    snprintf(conf, sizeof conf, "[listen]\nunix = /tmp/x.sock\n%s", buf);
    struct fb_config *c2 = load_ok(conf);
    ck_assert_msg(memcmp(&c->limits, &c2->limits, sizeof c->limits) == 0,
                  "limits differ after writing:\n%s\nread back from:\n%s", limits, buf);
    free(buf);
    fb_config_free(c);
    fb_config_free(c2);
}

START_TEST(test_config_limits_write)
{
    limits_roundtrip("", "");
    limits_roundtrip("[limits]\nmax_connections = 1024\nmax_republish = 1024\n", "");
    limits_roundtrip("[limits]\nmax_connections = 100\n",
                     "\n[limits]\nmax_connections = 100\n");
    limits_roundtrip("[limits]\nmax_connections = 100\nmax_connections_tcp = 100\n",
                     "\n[limits]\nmax_connections = 100\nmax_connections_tcp = 100\n");
    limits_roundtrip("[limits]\nmax_connections_tcp = 256\n", "");
    limits_roundtrip("[limits]\nmax_connections = 5000\nmax_connections_per_uid = 0\n"
                     "max_connections_tcp = 4000\noutput_soft = 0\noutput_hard = 4096\n"
                     "max_inflight = 1\nauth_timeout_ms = 1\nunauth_max = 2\n"
                     "unauth_per_addr = 3\nidle_timeout_unix_ms = 86400000\n"
                     "idle_timeout_tcp_ms = 0\nmax_frames_per_read = 1\ninput_soft = 7\n"
                     "input_soft_ms = 0\nmax_republish = 0\n",
                     "\n[limits]\nmax_connections = 5000\nmax_connections_per_uid = 0\n"
                     "max_connections_tcp = 4000\noutput_soft = 0\noutput_hard = 4096\n"
                     "max_inflight = 1\nauth_timeout_ms = 1\nunauth_max = 2\n"
                     "unauth_per_addr = 3\nidle_timeout_unix_ms = 86400000\n"
                     "idle_timeout_tcp_ms = 0\nmax_frames_per_read = 1\ninput_soft = 7\n"
                     "input_soft_ms = 0\nmax_republish = 0\n");
}
END_TEST

START_TEST(test_config_admission_limits)
{
    struct fb_config *c = load_ok("");
    ck_assert_uint_eq(c->limits.max_connections_tcp, 256);
    ck_assert_uint_eq(c->limits.unauth_max, 64);
    ck_assert_uint_eq(c->limits.unauth_per_addr, 8);
    fb_config_free(c);
    c = load_ok("[limits]\nmax_connections = 100\n");
    ck_assert_uint_eq(c->limits.max_connections_tcp, 50);
    fb_config_free(c);
    c = load_ok("[limits]\nmax_connections = 1\n");
    ck_assert_uint_eq(c->limits.max_connections_tcp, 1);
    fb_config_free(c);
    c = load_ok("[limits]\nmax_connections = 100\nmax_connections_tcp = 100\n");
    ck_assert_uint_eq(c->limits.max_connections_tcp, 100);
    fb_config_free(c);
    c = load_ok(
        "[limits]\nmax_connections_tcp = 5\nunauth_max = 3\nunauth_per_addr = 2\n");
    ck_assert_uint_eq(c->limits.max_connections_tcp, 5);
    ck_assert_uint_eq(c->limits.unauth_max, 3);
    ck_assert_uint_eq(c->limits.unauth_per_addr, 2);
    fb_config_free(c);
}
END_TEST

START_TEST(test_config_list_continuation)
{
    struct fb_config *c = load_ok("[route r]\n"
                                  "event = a\n"
                                  "to = a.b,\n"
                                  "     c.d@1.0.0\n"
                                  "\t e.f:3, g.h ; trailing comment\n"
                                  "  ; an indented comment is a comment\n"
                                  "tags = k=v,\n"
                                  "   k2=*\n");
    ck_assert_uint_eq(c->routes[0].nto, 4);
    ck_assert_str_eq(c->routes[0].to[2].name, "f");
    ck_assert_uint_eq(c->routes[0].to[2].weight, 3);
    ck_assert_str_eq(c->routes[0].to[3].ns, "g");
    ck_assert_uint_eq(c->routes[0].ntags, 2);
    fb_config_free(c);
}
END_TEST

/* Every error: the text, the line it must name, a piece of the reason. */
static const struct bad_config bad[] = {
    {"[daemon]\nworkerz = 1\n", 2, "unknown key 'workerz' in [daemon]"},
    {"[listen]\n\nunix_mod = 0660\n", 3, "unknown key 'unix_mod'"},
    {"[control]\nsock = /x\n", 2, "unknown key 'sock'"},
    {"[deamon]\n", 1, "unknown section [deamon]"},
    {"workers = 1\n", 1, "outside any section"},
    {"[daemon]\nworkers = 1\n[daemon]\n", 3, "appears twice (first on line 1)"},
    {"[daemon]\nworkers = 1\nworkers = 2\n", 3, "set twice (first on line 2)"},
    {"[daemon x]\n", 1, "takes no name"},
    {"[daemon]\nworkers = lots\n", 2, "workers must be a whole number from 0 to 256"},
    {"[daemon]\nworkers = 257\n", 2, "from 0 to 256"},
    {"[daemon]\nworkers = -1\n", 2, "workers"},
    {"[daemon]\nmax_frame = 15\n", 2, "max_frame"},
    {"[daemon]\nmax_frame = 1073741825\n", 2, "max_frame"},
    {"[daemon]\nmax_depth = 0\n", 2, "max_depth"},
    {"[daemon]\nblocking_threads = 0\n", 2, "blocking_threads"},
    {"[daemon]\nlog_level = loud\n", 2, "error, warn, info or debug"},
    {"[daemon]\nruntime_dir =\n", 2, "must not be empty"},
    {"[listen]\nunix_mode = 0880\n", 2, "octal file mode"},
    {"[listen]\nunix_mode = 01777\n", 2, "octal file mode"},
    {"[control]\nmode = rw\n", 2, "octal file mode"},
    {"[control]\ngroup =\n", 2, "group must not be empty"},
    {"[control]\nsocket =\n", 2, "socket must not be empty"},
    {"[control]\nmax_reply = 4095\n", 2,
     "[control] max_reply must be a whole number from 4096 to 67108864 (bytes)"},
    {"[control]\nmax_reply = 67108865\n", 2, "max_reply"},
    {"[listen]\ntcp = example.com:7878\ntcp_auth = none\n", 2, "names are not resolved"},
    {"[listen]\ntcp = 127.0.0.1\n", 2, "HOST:PORT"},
    {"[listen]\ntcp = 127.0.0.1:0\ntcp_auth = none\n", 2, "port must be"},
    {"[listen]\ntcp = 127.0.0.1:65536\n", 2, "port must be"},
    {"[listen]\ntcp = [::1:7878\n", 2, "[ADDR]:PORT"},
    {"[listen]\ntcp = 0.0.0.0:7878\ntcp_auth = none\n", 3,
     "tcp_auth = none is only allowed on a loopback address"},
    {"[listen]\ntcp = [::]:7878\ntcp_auth = none\n", 3, "loopback"},
    {"[listen]\ntcp = 127.0.0.1:7878\ntcp_auth = key\n", 3,
     "[listen] tcp_auth = key needs tcp_key_file"},
    {"[listen]\ntcp = 127.0.0.1:7878\n", 2, "tcp_auth = key needs tcp_key_file"},
    {"[listen]\ntcp = 127.0.0.1:7878\ntcp_key_file = /nonexistent/fidbus.key\n", 3,
     "[listen] tcp_key_file /nonexistent/fidbus.key: No such file"},
    {"[listen]\ntcp_auth = maybe\n", 2, "key or none"},
    {"[listen]\nunix =\n", 2, "no listener"},
    {"[listen]\nunix = "
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
     2, "Unix socket address"},
    {"[plugin log]\nfile = -\n", 1, "[plugin log] missing 'path'"},
    {"[plugin log]\n", 1, "missing 'path'"},
    {"[plugin log]\npath = /a.so\n[plugin log]\npath = /b.so\n", 3,
     "plugin 'log' is defined twice (first on line 1)"},
    {"[plugin log]\npath = /a.so\npath = /b.so\n", 3, "set twice"},
    {"[plugin log]\npath =\n", 2, "path must not be empty"},
    {"[plugin]\npath = /a.so\n", 1, "needs a name"},
    {"[plugin a/b]\npath = /a.so\n", 1, "plugin name 'a/b'"},
    {"[route r]\nto = a.b\n", 1, "route 'r': missing 'event'"},
    {"[route r]\nevent = x\n\n", 1, "route 'r': missing 'to'"},
    {"[route r]\nevent = x\nto = a.b\n[route r]\nevent = y\nto = a.b\n", 4,
     "route 'r' is defined twice (first on line 1)"},
    {"[route r]\nevent = x\nto = a.b\ndestination = a.b\n", 4,
     "route 'r': unknown key 'destination'"},
    {"[route r]\nevent = x\nevent = y\nto = a.b\n", 3, "set twice"},
    {"[route r]\nevent = a/b\nto = a.b\n", 2, "event 'a/b'"},
    {"[route r]\nevent = a b\nto = a.b\n", 2, "event"},
    {"[route r]\nevent = .*\nto = a.b\n", 2, "event"},
    {"[route r]\nevent = x\nto = a.b@1.0\n", 3,
     "route 'r': target 'a.b@1.0': version must be MAJOR.MINOR.PATCH"},
    {"[route r]\nevent = x\nto = ab\n", 3, "target 'ab'"},
    {"[route r]\nevent = x\nto = a.b:1000001\n", 3, "weight"},
    {"[route r]\nevent = x\nto = a.b, a.b\n", 3, "listed twice"},
    {"[route r]\nevent = x\nto = a.b,\n", 3, "ends with a comma"},
    {"[route r]\nevent = x\nto = a.b,\nmode = all\n", 3, "ends with a comma"},
    {"[route r]\nevent = x\nto =\n", 3, "lists no targets"},
    {"[route r]\nevent = x\nto = a.b\ntags = k\n", 4, "tag 'k' must be KEY=VALUE"},
    {"[route r]\nevent = x\nto = a.b\ntags = k=1, k=2\n", 4,
     "tag key 'k' is given twice"},
    {"[route r]\nevent = x\nto = a.b\ntags = k/x=1\n", 4, "key must be"},
    {"[route r]\nevent = x\nto = a.b\nmode = some\n", 4, "mode must be all or split"},
    {"[route r]\nevent = x\nto = a.b\nsplit_by = user\n", 4,
     "split_by needs mode = split"},
    {"[route r]\nevent = x\nto = a.b:0, c.d:0\nmode = split\n", 3,
     "at least one target with a weight above 0"},
    {"[route r]\nevent = x\nto = a.b\nsignature = abc\n", 4, "64 hex digits"},
    {"[route r]\nevent = x\nto = a.b\nsignature = "
     "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
     4, "64 hex digits"},
    {"[route r]\nevent = x\nto = a.b\npriority = high\n", 4, "priority"},
    {"[route r]\nevent = x\nto = a.b\npriority = 9223372036854775808\n", 4, "priority"},
    {"[route bad name]\nevent = x\nto = a.b\n", 1, "route name 'bad name'"},
    {"[daemon]\n  workers = 1\nlog_level = info\n  workers = 2\n", 4,
     "unexpected indented line"},
    {"[daemon]\nthis line has no equals sign\n", 2, "syntax error"},
    {"[daemon\n", 1, "without ']'"},
    {"[daemon] junk\n", 1, "unexpected text"},
    {"[daemon]\n= 4\n", 2, "no key name"},
    {"[limits]\nmax_connections = 10\nmax_connections_tcp = 11\n", 3,
     "[limits] max_connections_tcp (11) must not be above max_connections (10)"},
    {"[limits]\nmax_connections_tcp = 0\n", 2,
     "[limits] max_connections_tcp must be a whole number from 1 to 1000000"},
    {"[limits]\nunauth_max = 0\n", 2,
     "[limits] unauth_max must be a whole number from 1 to 1000000"},
    {"[limits]\nunauth_per_addr = many\n", 2,
     "[limits] unauth_per_addr must be a whole number from 1 to 1000000"},
};

START_TEST(test_config_errors)
{
    load_refused(_i, bad[_i].text, bad[_i].line, bad[_i].why);
    ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(test_config_file_errors)
{
    char path[] = "/tmp/fidbus-test-config-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char text[] = "[daemon]\n; a comment\n\nlog_level = chatty\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);

    struct fb_config *c = NULL;
    char want[64];
    int rc = fb_config_load_file(path, &c, err, sizeof err);
    ck_assert_int_eq(rc, -EINVAL);
    snprintf(want, sizeof want, "%s:4: ", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_ptr_null(c);
    unlink(path);

    rc = fb_config_load_file(path, &c, err, sizeof err);
    ck_assert_int_eq(rc, -ENOENT);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, path));
}
END_TEST

START_TEST(test_config_long_line)
{
    char text[600];
    int n = snprintf(text, sizeof text, "[plugin p]\npath = /p.so\nx = ");
    memset(text + n, 'v', 300);
    strcpy(text + n + 300, "\n");
    struct fb_config *c = NULL;
    int rc = fb_config_load_string(text, "t.conf", &c, err, sizeof err);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_msg(strncmp(err, "t.conf:3: line longer than", 26) == 0, "%s", err);
}
END_TEST

/* ------------------------------------------------------- route specs */

START_TEST(test_config_target_parse)
{
    struct fb_target_spec t;
    ck_assert_int_eq(fb_target_parse("acme.audit", &t, err, sizeof err), 0);
    ck_assert_str_eq(t.ns, "acme");
    ck_assert_str_eq(t.name, "audit");
    ck_assert_ptr_null(t.version);
    ck_assert_uint_eq(t.weight, 1);
    ck_assert(!t.has_weight);
    free(t.ns);
    free(t.name);

    ck_assert_int_eq(fb_target_parse(" a-1.b_2@10.0.3:1000000 ", &t, err, sizeof err), 0);
    ck_assert_str_eq(t.ns, "a-1");
    ck_assert_str_eq(t.name, "b_2");
    ck_assert_str_eq(t.version, "10.0.3");
    ck_assert_uint_eq(t.weight, FB_MAX_WEIGHT);
    ck_assert(t.has_weight);
    free(t.ns);
    free(t.name);
    free(t.version);

    ck_assert_int_eq(fb_target_parse("a.b:0", &t, err, sizeof err), 0);
    ck_assert_uint_eq(t.weight, 0);
    free(t.ns);
    free(t.name);

    static const struct {
        const char *text, *why;
    } no[] = {
        {"", "empty target"},
        {"ab", "must be NAMESPACE.NAME"},
        {".b", "namespace ''"},
        {"a.", "name ''"},
        {"a.b.c", "name 'b.c'"},
        {"a:1.b", "must be NAMESPACE.NAME"},
        {"a.b@", "version must be MAJOR.MINOR.PATCH"},
        {"a.b@1.0", "target 'a.b@1.0': version must be MAJOR.MINOR.PATCH"},
        {"a.b@01.0.0", "version"},
        {"a.b@1.0.0-rc1", "version"},
        {"a.b:", "weight"},
        {"a.b:-1", "weight"},
        {"a.b:1000001", "weight must be a whole number from 0 to 1000000"},
        {"a.b:1x", "weight"},
        {"a.b:5@1.0.0", "weight"},
        {"a b.c", "namespace 'a b'"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b",
         "namespace"},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        memset(&t, 0x5a, sizeof t);
        int rc = fb_target_parse(no[i].text, &t, err, sizeof err);
        ck_assert_msg(rc == FIDBUS_INVALID, "'%s' accepted", no[i].text);
        ck_assert_msg(strstr(err, no[i].why), "'%s': '%s' lacks '%s'", no[i].text, err,
                      no[i].why);
        ck_assert_ptr_null(t.ns);
        ck_assert_ptr_null(t.name);
        ck_assert_ptr_null(t.version);
    }
}
END_TEST

START_TEST(test_config_targets_list)
{
    struct fb_route_spec s = {.name = strdup("r")};
    ck_assert_int_eq(
        fb_targets_parse_list("a.b, c.d@1.0.0:5 ,e.f:0", &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.nto, 3);
    ck_assert_str_eq(s.to[1].version, "1.0.0");
    ck_assert_uint_eq(s.to[1].weight, 5);
    ck_assert_uint_eq(s.to[2].weight, 0);

    /* appends; a failure leaves the spec as it was */
    ck_assert_int_eq(fb_targets_parse_list("g.h", &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.nto, 4);
    ck_assert_int_eq(fb_targets_parse_list("x.y, a.b", &s, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_str_eq(err, "route 'r': target 'a.b' is listed twice");
    ck_assert_uint_eq(s.nto, 4);
    ck_assert_int_eq(fb_targets_parse_list("x.y,,z.w", &s, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "empty target"));
    ck_assert_int_eq(fb_targets_parse_list("x.y, z.w@1", &s, err, sizeof err),
                     FIDBUS_INVALID);
    ck_assert_str_eq(err, "route 'r': target 'z.w@1': version must be MAJOR.MINOR.PATCH");
    ck_assert_uint_eq(s.nto, 4);
    ck_assert_int_eq(fb_targets_parse_list("  ", &s, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "no targets"));
    /* pinned and unpinned are different targets */
    ck_assert_int_eq(fb_targets_parse_list("a.b@2.0.0", &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.nto, 5);
    fb_route_spec_clear(&s);
    ck_assert_ptr_null(s.to);
    ck_assert_uint_eq(s.nto, 0);

    /* FB_MAX_TARGETS is the limit */
    char big[FB_MAX_TARGETS * 16];
    size_t n = 0;
    for (int i = 0; i <= FB_MAX_TARGETS; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%sa.f%d", i ? "," : "", i);
    ck_assert_int_eq(fb_targets_parse_list(big, &s, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "more than 64 targets"));
    *strrchr(big, ',') = '\0';
    ck_assert_int_eq(fb_targets_parse_list(big, &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.nto, FB_MAX_TARGETS);
    fb_route_spec_clear(&s);
}
END_TEST

START_TEST(test_config_tags_list)
{
    struct fb_route_spec s = {0};
    ck_assert_int_eq(
        fb_tags_parse_list("version=v2, region = * ,empty=", &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.ntags, 3);
    ck_assert_str_eq(s.tags[0].key, "version");
    ck_assert_str_eq(s.tags[0].value, "v2");
    ck_assert_str_eq(s.tags[1].key, "region");
    ck_assert_str_eq(s.tags[1].value, "*");
    ck_assert_str_eq(s.tags[2].value, "");
    ck_assert_int_eq(fb_tags_parse_list("", &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.ntags, 3);
    ck_assert_int_eq(fb_tags_parse_list("a.b-c_d=x=y", &s, err, sizeof err), 0);
    ck_assert_str_eq(s.tags[3].value, "x=y");

    static const char *const no[] = {
        "k", "=v", "k=1,", "k=1,,j=2", "bad key=1", "version=v3", "k=\xff\xfe",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        ck_assert_msg(fb_tags_parse_list(no[i], &s, err, sizeof err) == FIDBUS_INVALID,
                      "'%s' accepted", no[i]);
        ck_assert_uint_eq(s.ntags, 4);
    }
    fb_route_spec_clear(&s);

    char big[33 * 8];
    size_t n = 0;
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%sk%d=v", i ? "," : "", i);
    ck_assert_int_eq(fb_tags_parse_list(big, &s, err, sizeof err), FIDBUS_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "more than 32 tags"));
    ck_assert_uint_eq(s.ntags, 0);
    *strrchr(big, ',') = '\0';
    ck_assert_int_eq(fb_tags_parse_list(big, &s, err, sizeof err), 0);
    ck_assert_uint_eq(s.ntags, 32);
    fb_route_spec_clear(&s);
}
END_TEST

/* A valid spec built by hand; tests break one thing at a time. */
static void good_spec(struct fb_route_spec *s)
{
    memset(s, 0, sizeof *s);
    s->name = strdup("orders.v2-canary_1");
    s->event = strdup("order.created");
    ck_assert_int_eq(fb_targets_parse_list("acme.orders@1.0.0:90, acme.orders@2.0.0:10",
                                           s, err, sizeof err),
                     0);
    ck_assert_int_eq(fb_tags_parse_list("region=*", s, err, sizeof err), 0);
    ck_assert_int_eq(fb_route_spec_validate(s, err, sizeof err), 0);
}

static void expect_invalid(struct fb_route_spec *s, const char *why)
{
    ck_assert_int_eq(fb_route_spec_validate(s, err, sizeof err), FIDBUS_INVALID);
    ck_assert_msg(strstr(err, why), "'%s' lacks '%s'", err, why);
    fb_route_spec_clear(s);
}

START_TEST(test_config_route_validate)
{
    struct fb_route_spec s;
    static const char *const events_ok[] = {"*", "order.*",   "a.b.*",
                                            "x", "a:b-c_d.e", "order.created"};
    for (size_t i = 0; i < sizeof events_ok / sizeof *events_ok; i++) {
        good_spec(&s);
        free(s.event);
        s.event = strdup(events_ok[i]);
        ck_assert_msg(fb_route_spec_validate(&s, err, sizeof err) == 0, "%s: %s",
                      events_ok[i], err);
        fb_route_spec_clear(&s);
    }
    static const char *const events_bad[] = {"",     ".*",  "a*",        "*.a",
                                             "a.**", "a b", "order.*.x", "a/b"};
    for (size_t i = 0; i < sizeof events_bad / sizeof *events_bad; i++) {
        good_spec(&s);
        free(s.event);
        s.event = strdup(events_bad[i]);
        ck_assert_msg(fb_route_spec_validate(&s, err, sizeof err) == FIDBUS_INVALID,
                      "event '%s' accepted", events_bad[i]);
        fb_route_spec_clear(&s);
    }

    good_spec(&s);
    free(s.name);
    s.name = strdup("a/b");
    expect_invalid(&s, "route name 'a/b'");

    good_spec(&s);
    free(s.name);
    s.name = NULL;
    expect_invalid(&s, "route name");

    good_spec(&s);
    free(s.name);
    s.name = strdup("r123456789r123456789r123456789r123456789r123456789r123456789abcde");
    expect_invalid(&s, "1-64 bytes");

    good_spec(&s);
    free(s.event);
    s.event = NULL;
    expect_invalid(&s, "no event pattern");

    good_spec(&s);
    for (size_t i = 0; i < s.nto; i++) {
        free(s.to[i].ns);
        free(s.to[i].name);
        free(s.to[i].version);
    }
    free(s.to);
    s.to = NULL;
    s.nto = 0;
    expect_invalid(&s, "no targets");

    good_spec(&s);
    s.split_by = strdup("user");
    expect_invalid(&s, "split_by needs mode = split");

    good_spec(&s);
    s.mode = FB_MODE_SPLIT;
    s.split_by = strdup("us er");
    expect_invalid(&s, "split_by 'us er'");

    good_spec(&s);
    s.mode = FB_MODE_SPLIT;
    s.split_by = strdup("user");
    ck_assert_int_eq(fb_route_spec_validate(&s, err, sizeof err), 0);
    s.to[0].weight = 0;
    s.to[1].weight = 0;
    expect_invalid(&s, "weight above 0");

    /* weights of 0 are fine for fan-out */
    good_spec(&s);
    s.to[0].weight = 0;
    s.to[1].weight = 0;
    ck_assert_int_eq(fb_route_spec_validate(&s, err, sizeof err), 0);
    s.to[1].weight = FB_MAX_WEIGHT + 1;
    expect_invalid(&s, "weight");

    good_spec(&s);
    s.signature =
        strdup("0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef");
    ck_assert_int_eq(fb_route_spec_validate(&s, err, sizeof err), 0);
    s.signature[63] = '\0';
    expect_invalid(&s, "64 hex digits");

    good_spec(&s);
    free(s.to[1].version);
    s.to[1].version = strdup("1.0.0");
    expect_invalid(&s, "target 'acme.orders@1.0.0' is listed twice");

    good_spec(&s);
    free(s.to[1].version);
    s.to[1].version = strdup("2.0");
    expect_invalid(&s, "route 'orders.v2-canary_1': target 'acme.orders@2.0': version "
                       "must be MAJOR.MINOR.PATCH");

    good_spec(&s);
    free(s.tags[0].value);
    s.tags[0].value = strdup("\xc3");
    expect_invalid(&s, "value must be");

    good_spec(&s);
    s.mode = (enum fb_route_mode)7;
    expect_invalid(&s, "mode");
}
END_TEST

START_TEST(test_config_spec_copy_clear)
{
    struct fb_route_spec s, d;
    good_spec(&s);
    s.mode = FB_MODE_SPLIT;
    s.split_by = strdup("user");
    s.signature =
        strdup("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    s.priority = -7;
    s.line = 12;
    ck_assert_int_eq(fb_route_spec_copy(&d, &s), 0);
    fb_route_spec_clear(&s);
    ck_assert_ptr_null(s.name);
    ck_assert_uint_eq(s.nto, 0);

    ck_assert_str_eq(d.name, "orders.v2-canary_1");
    ck_assert_str_eq(d.event, "order.created");
    ck_assert_uint_eq(d.nto, 2);
    ck_assert_str_eq(d.to[1].version, "2.0.0");
    ck_assert_uint_eq(d.to[1].weight, 10);
    ck_assert(d.to[1].has_weight);
    ck_assert_uint_eq(d.ntags, 1);
    ck_assert_str_eq(d.tags[0].value, "*");
    ck_assert_str_eq(d.split_by, "user");
    ck_assert_int_eq(d.priority, -7);
    ck_assert_int_eq(d.line, 12);
    ck_assert_int_eq(fb_route_spec_validate(&d, err, sizeof err), 0);

    /* a copy of a copy, then an empty spec */
    struct fb_route_spec e;
    ck_assert_int_eq(fb_route_spec_copy(&e, &d), 0);
    ck_assert_ptr_ne(e.to, d.to);
    ck_assert_ptr_ne(e.to[0].ns, d.to[0].ns);
    fb_route_spec_clear(&d);
    fb_route_spec_clear(&e);
    struct fb_route_spec z = {0};
    ck_assert_int_eq(fb_route_spec_copy(&e, &z), 0);
    ck_assert_ptr_null(e.name);
    ck_assert_ptr_null(e.to);
    fb_route_spec_clear(&e);
    fb_route_spec_clear(NULL);
}
END_TEST

/* A [plugin NAME] section: path and n more keys "kN = v". */
static char *plugin_section(unsigned n, bool path_last)
{
    size_t cap = 64 + (size_t)n * 16, len = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    len += (size_t)snprintf(s + len, cap - len, "[plugin p]\n%s",
                            path_last ? "" : "path = /p.so\n");
    for (unsigned i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "k%u = v\n", i);
    if (path_last)
        snprintf(s + len, cap - len, "path = /p.so\n");
    return s;
}

START_TEST(test_config_plugin_keys_max)
{
    /* FB_PLUGIN_KEYS_MAX keys besides path load, wherever path is */
    for (int last = 0; last < 2; last++) {
        char *text = plugin_section(FB_PLUGIN_KEYS_MAX, last);
        struct fb_config *c = load_ok(text);
        ck_assert_uint_eq(c->plugins[0].nkeys, FB_PLUGIN_KEYS_MAX + 1);
        fb_config_free(c);
        free(text);
    }
    /* one more is refused on its own line, path first or last */
    for (int last = 0; last < 2; last++) {
        char *text = plugin_section(FB_PLUGIN_KEYS_MAX + 1, last);
        struct fb_config *c = NULL;
        int rc = fb_config_load_string(text, "t.conf", &c, err, sizeof err);
        ck_assert_int_eq(rc, -EINVAL);
        ck_assert_ptr_null(c);
        char want[64];
        snprintf(want, sizeof want,
                 "t.conf:%d: ", FB_PLUGIN_KEYS_MAX + 2 + (last ? 0 : 1));
        ck_assert_msg(strncmp(err, want, strlen(want)) == 0,
                      "'%s' does not start with '%s'", err, want);
        ck_assert_msg(strstr(err, "[plugin p] has more than 256 keys besides path"), "%s",
                      err);
        free(text);
    }
    /* tens of thousands stop at the first key over */
    char *text = plugin_section(60000, false);
    struct fb_config *c = NULL;
    ck_assert_int_eq(fb_config_load_string(text, "t.conf", &c, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "more than 256 keys"), "%s", err);
    free(text);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("file");
    tcase_add_test(tc, test_config_example_parses);
    tcase_add_test(tc, test_config_control_group_mode);
    tcase_add_test(tc, test_config_default_parses);
    tcase_add_test(tc, test_config_empty_gives_defaults);
    tcase_add_test(tc, test_config_runtime_dir_moves_sockets);
    tcase_add_test(tc, test_config_all_keys);
    tcase_add_test(tc, test_config_tcp_loopback_none);
    tcase_add_test(tc, test_config_admission_limits);
    tcase_add_test(tc, test_config_limits_write);
    tcase_add_test(tc, test_config_list_continuation);
    tcase_add_loop_test(tc, test_config_errors, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_config_file_errors);
    tcase_add_test(tc, test_config_long_line);
    tcase_add_test(tc, test_config_plugin_keys_max);
    suite_add_tcase(s, tc);

    tc = tcase_create("route_spec");
    tcase_add_test(tc, test_config_target_parse);
    tcase_add_test(tc, test_config_targets_list);
    tcase_add_test(tc, test_config_tags_list);
    tcase_add_test(tc, test_config_route_validate);
    tcase_add_test(tc, test_config_spec_copy_clear);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
