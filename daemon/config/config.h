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
};

/*
 * Parses and validates. Returns 0 with *out (caller frees with
 * fb_config_free), or -EINVAL / -ENOENT / -ENOMEM with a one-line reason
 * "FILE:LINE: ..." in err.
 */
int fb_config_load_file(const char *path, struct fb_config **out, char *err,
                        size_t errlen);
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

/* The embedded default config (conf/default.conf at build time), with
 * @RUNTIME@ standing for the quick-start runtime dir and @PLUGINDIR@ for
 * the build's plugin dir. */
extern const char fb_default_config[];

#endif
