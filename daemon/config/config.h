/*
 * fidbusd's configuration file (INI, README "Configuration"), parsed with
 * libinih and validated in full before anything is bound or loaded.
 *
 * Every key of the contract is parsed and checked here, including those
 * whose features arrive in later work: a config error is reported as
 * "FILE:LINE: reason" and the daemon exits non-zero without touching the
 * system. With a TCP listener and tcp_auth = key, loading also reads the
 * key file (and refuses one that others may read), so a bad key stops the
 * daemon before it binds anything, and --check-config catches it too.
 */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "base/log.h"
#include "config/route_spec.h"

enum fb_tcp_auth { FB_TCP_AUTH_KEY = 0, FB_TCP_AUTH_NONE = 1 };

struct fb_kv {
    char *key;
    char *value;
};

/* Config keys one plugin instance may have, path not counted, in a
 * [plugin NAME] section, a plugin.load's config and state.cbor alike:
 * each key is checked against the others, and tens of thousands held
 * the control thread for seconds. */
#define FB_PLUGIN_KEYS_MAX 256

struct fb_plugin_conf {
    char *name;         /* the NAME of [plugin NAME] */
    char *path;         /* required */
    struct fb_kv *keys; /* every key of the section, path included */
    size_t nkeys;
    int line;
};

/* [limits]: what one client may make the daemon hold (README "Limits and
 * backpressure"). Sizes are bytes, times ms; 0 turns a limit off where
 * the docs say it may. */
struct fb_limits {
    unsigned max_connections;         /* bus connections in all; 1024 */
    unsigned max_connections_per_uid; /* per Unix peer uid (root too); 128 */
    unsigned max_connections_tcp;     /* of them over TCP; 256 or half the total */
    uint32_t output_soft;             /* answers pending: stop reading; 256 KiB */
    uint32_t output_hard;             /* answers pending: ERROR BUSY, close; 8 MiB */
    unsigned max_inflight;            /* events with blocking calls: pause; 1024 */
    unsigned auth_timeout_ms;         /* TCP AUTH deadline; 10000 */
    unsigned unauth_max;              /* TCP connections awaiting AUTH; 64 */
    unsigned unauth_per_addr;         /* ...per IPv4 address or IPv6 /64; 8 */
    unsigned idle_timeout_unix_ms;    /* 0 = off (default) */
    unsigned idle_timeout_tcp_ms;     /* 300000 */
    unsigned max_frames_per_read;     /* fair share per read callback; 64 */
    uint32_t input_soft;              /* one unfinished frame buffered: watch; 256 KiB */
    unsigned input_soft_ms;           /* ...for longer than this: BUSY, close; 30000 */
    unsigned max_republish;           /* host->publish calls per client event; 1024 */
};

/*
 * One [remote NS] section (README "Remote functions", fidbusd.conf(5)):
 * who may serve functions of namespace NS ("*": any) from a client
 * process, and the defaults and caps of their members. users and groups
 * are resolved to ids when the file is read; root and the daemon's own
 * uid may always serve where a section exists (the registry checks that).
 */
struct fb_remote_conf {
    char *ns;    /* a namespace (fidbus_name_valid) or "*" */
    uid_t *uids; /* `users`, by name or number; no repeats */
    size_t nuids;
    gid_t *gids; /* `groups`, primary or supplementary; no repeats */
    size_t ngids;
    bool tcp;            /* key-authenticated TCP clients may serve; no */
    unsigned credit;     /* a member's default and most credit, 1-1024; 16 */
    uint32_t timeout_ms; /* a call's default and longest deadline, 1-3600000; 30000 */
    unsigned attempts;   /* deliveries of an idempotent call at most, 1-10; 3 */
    int line;
};

struct fb_config {
    char *file;    /* path it was read from, or "<embedded>" */
    char hash[65]; /* SHA-256 (hex) of the text parsed */
    /* [daemon] */
    unsigned workers; /* resolved: 0 in the file means nproc */
    char *runtime_dir;
    char *state_dir;
    uint32_t max_frame; /* 16 .. 1 GiB; default 1048576 */
    unsigned max_depth; /* 1 .. 1024; default 64 (our addition) */
    enum fb_log_level log_level;
    unsigned blocking_threads; /* worker pool size, default 4 (our addition) */
    /* A blocking call running longer is logged and counted; 0 = off. */
    uint32_t handler_deadline_ms; /* default 5000 */
    /* Consecutive failures that quarantine a function; 0 = never. */
    uint32_t quarantine_after; /* default 0 */
    /* [listen] */
    char *unix_path; /* NULL = no Unix listener */
    unsigned unix_mode;
    char *tcp;      /* "HOST:PORT" or NULL */
    char *tcp_host; /* split from tcp */
    uint16_t tcp_port;
    enum fb_tcp_auth tcp_auth;
    char *tcp_key_file; /* required with tcp and tcp_auth = key */
    uint8_t *tcp_key;   /* its key, read at load (auth.h); else NULL */
    size_t tcp_key_len;
    /* [control] */
    char *control_socket;
    unsigned control_mode;
    char *control_group;        /* NULL if unset */
    uint32_t control_max_reply; /* largest REPLY body; 4 KiB .. 64 MiB (default) */
    /* [metrics]: the HTTP /metrics and /healthz listener, off when NULL */
    char *metrics_listen; /* "HOST:PORT" as written */
    char *metrics_host;   /* split from it (an address literal) */
    uint16_t metrics_port; /* 0 = any free port (status says which) */
    struct fb_limits limits;
    /* [plugin NAME] and [route NAME], in file order */
    struct fb_plugin_conf *plugins;
    size_t nplugins;
    struct fb_route_spec *routes;
    size_t nroutes;
    struct fb_remote_conf *remotes; /* [remote NS] sections, in file order */
    size_t nremotes;
};

/*
 * Parses and validates. Returns 0 with *out (caller frees with
 * fb_config_free), or -EINVAL / -ENOENT / -ENOMEM with a one-line reason
 * "FILE:LINE: ..." in err.
 */
int fb_config_load_file(const char *path, struct fb_config **out, char *err,
                        size_t errlen);
/* The config line of the route an error names ("route 'NAME': ..."), so
 * a route that fails to resolve at start or reload is reported as
 * FILE:LINE; 0 if the error names no route of the file. */
int fb_config_route_line(const struct fb_config *cfg, const char *why);
/* Same from a string; `name` is used in messages. */
int fb_config_load_string(const char *text, const char *name, struct fb_config **out,
                          char *err, size_t errlen);

/* NULL-safe; returns NULL. */
struct fb_config *fb_config_free(struct fb_config *c);

/* Writes "[limits]" (after a blank line) and every key of l whose value is
 * not what a file without it would give (max_connections_tcp against the
 * default derived from l->max_connections); nothing when all are default.
 * The lines read back through fb_config_load_* to the same limits. */
void fb_config_limits_write(FILE *f, const struct fb_limits *l);

/* The [remote NS] section that governs namespace ns (a namespace's own
 * section, else [remote *]), or NULL: nothing of ns may be served. The
 * pointer lives as long as c. config_remote.c. */
const struct fb_remote_conf *fb_config_remote_find(const struct fb_config *c,
                                                   const char *ns);
/* Writes every [remote NS] section of c, each after a blank line, in a
 * form fb_config_load_* reads back to the same values (users and groups
 * as numeric ids). config_remote.c. */
void fb_config_remote_write(FILE *f, const struct fb_config *c);

/* The embedded default config (conf/default.conf at build time), with
 * @RUNTIME@ standing for the quick-start runtime dir and @PLUGINDIR@ for
 * the build's plugin dir. */
extern const char fb_default_config[];

#endif
