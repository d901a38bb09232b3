/*
 * Control commands (proto/control.md): one function per command, each
 * turning a REQUEST's args into a REPLY's code, message and CBOR result.
 *
 * They run on the control thread only (control.c), one at a time, with
 * the daemon's change_lock held for the whole command: writers hold that
 * lock too, so the registry, the published table and the plugin list
 * cannot change underneath a listing and no RCU read lock is needed.
 * Results are CBOR maps with text keys, built with libcbor's item API (the
 * control socket is not a hot path).
 */
#ifndef FB_CONTROL_CMDS_H
#define FB_CONTROL_CMDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#include <fidbus/proto.h>

struct fb_daemon;

/* What the commands may read besides the daemon: facts fixed at start-up
 * that the control thread keeps its own copy of (the listeners free
 * themselves on the main loop during shutdown, so their names are copied). */
struct fb_control;
struct fb_ctl_env {
    struct fb_daemon *d;
    /* The control thread's own state (conn.list lists its connections);
     * NULL where commands run elsewhere (the metrics thread's stats). */
    struct fb_control *ctl;
    char **listeners; /* "unix:PATH" / "tcp:HOST:PORT" */
    size_t nlisteners;
};

/* A command's answer. result is malloc'd CBOR (caller frees), NULL for
 * none; message is set when code != 0. */
struct fb_ctl_reply {
    int code;
    char message[1024];
    uint8_t *result;
    size_t result_len;
};

/*
 * Runs one command (command: command_len bytes of UTF-8, not
 * NUL-terminated; args: the REQUEST's raw CBOR args, len 0 if absent).
 * Takes and releases d->change_lock. Fills *out; never fails otherwise.
 */
void fb_ctl_run(const struct fb_ctl_env *env, const char *command, size_t command_len,
                struct fidbus_slice args, struct fb_ctl_reply *out);

/*
 * Args helpers for the commands that take args. fb_ctl_args_load decodes
 * the raw args (cbor_load) into *out, which the caller releases with
 * cbor_decref; absent args (len 0) give an empty map. Returns 0, or
 * FIDBUS_INVALID with err set when args are not one well-formed CBOR map,
 * or -ENOMEM.
 */
int fb_ctl_args_load(struct fidbus_slice args, cbor_item_t **out, char *err,
                     size_t errlen);
/* The value of text key `key` in map, borrowed from it; NULL if absent. */
cbor_item_t *fb_ctl_arg(const cbor_item_t *map, const char *key);
/*
 * Text value of `key` as a malloc'd NUL-terminated string in *out (NULL
 * when absent and not required). Returns 0, FIDBUS_INVALID with err set
 * (missing but required, not text, contains NUL), or -ENOMEM.
 */
int fb_ctl_arg_text(const cbor_item_t *map, const char *key, bool required, char **out,
                    char *err, size_t errlen);

/*
 * tap.open (control_tap.c): its args into *s (event pattern, default
 * "*"; tags; buffer, default and bounds in routing/tap.h). 0, or
 * FIDBUS_INVALID / FIDBUS_INTERNAL with err set (s is then empty). And
 * its result, {buffer, max_taps}, malloc'd CBOR: 0 or -ENOMEM.
 */
struct fb_tap_spec;
int fb_ctl_tap_args(struct fidbus_slice args, struct fb_tap_spec *s, char *err,
                    size_t errlen);
int fb_ctl_tap_result(size_t buffer, uint8_t **out, size_t *len);

/*
 * config.export's text (control_export.c): a config file that, loaded by
 * a fresh daemon, gives the running plugins and routes, with the
 * [daemon], [listen] and [control] settings of the running config.
 * Caller holds d->change_lock. Returns 0 with a malloc'd *out, or -ENOMEM.
 */
int fb_ctl_export_config(const struct fb_daemon *d, char **out);

/*
 * The commands that change the running set (control_change.c). Each has
 * the shape of fb_ctl_run's table: on success it returns the result map;
 * on failure it sets out->code and out->message and returns NULL.
 * Caller holds d->change_lock.
 */
struct cb;
cbor_item_t *fb_ctl_route_add(const struct fb_ctl_env *env, const cbor_item_t *args,
                              struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_route_del(const struct fb_ctl_env *env, const cbor_item_t *args,
                              struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_route_apply(const struct fb_ctl_env *env, const cbor_item_t *args,
                                struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_plugin_load(const struct fb_ctl_env *env, const cbor_item_t *args,
                                struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_plugin_unload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_plugin_reload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out);
/* Remote functions (control_remote.c): func.members; func.list's and
 * stats' entries for remote functions, at most max of them. */
cbor_item_t *fb_ctl_func_members(const struct fb_ctl_env *env, const cbor_item_t *args,
                                 struct cb *b, struct fb_ctl_reply *out);
size_t fb_ctl_remote_count(const struct fb_daemon *d);
void fb_ctl_remote_func_list(const struct fb_daemon *d, struct cb *b, cbor_item_t *fns,
                             size_t max);
void fb_ctl_remote_stats(const struct fb_daemon *d, struct cb *b, cbor_item_t *fns,
                         size_t max);
cbor_item_t *fb_ctl_func_release(const struct fb_ctl_env *env, const cbor_item_t *args,
                                 struct cb *b, struct fb_ctl_reply *out);
cbor_item_t *fb_ctl_config_reload(const struct fb_ctl_env *env, const cbor_item_t *args,
                                  struct cb *b, struct fb_ctl_reply *out);

/* conn.list (control_conns.c): bus and control connections, bounded by
 * [control] max_reply. Control thread (it lists the control connections,
 * which are that thread's). */
cbor_item_t *fb_ctl_conn_list(const struct fb_ctl_env *env, struct cb *b);

/* plugin.list's entry for p ({name, version, path, functions}) with room
 * for `room` more keys. */
struct fb_plugin;
cbor_item_t *fb_ctl_plugin_entry(struct cb *b, const struct fb_plugin *p, size_t room);
/* args.tags (absent or null: none) into tags[0..*ntags), checked by the
 * rules a PUBLISH's tags meet (lib/msg.c): at most FIDBUS_MAX_TAGS, text
 * => text, valid keys and values, no key twice. tags has room for
 * FIDBUS_MAX_TAGS; its keys and values are malloc'd and the caller's, on
 * failure too (*ntags counts them). 0, FIDBUS_INVALID with err, or
 * -ENOMEM. */
struct fidbus_tag;
int fb_ctl_tags_arg(const cbor_item_t *args, struct fidbus_tag *tags, size_t *ntags,
                    char *err, size_t errlen);
/* A function's entry in stats' `functions`, plugin or remote: canonical,
 * plugin (NULL: null), calls with the latency histogram read together,
 * errors, late, skipped, quarantined, p50/p99 once timed; room for that
 * many more keys the caller puts. */
struct fb_func;
cbor_item_t *fb_ctl_func_stats(struct cb *b, struct fb_func *f, const char *plugin,
                               uint64_t late, size_t room);

/*
 * route.test's dry run: the table a route.apply with these args would
 * publish (generation + 1), built but never published; the caller frees
 * it with fb_routes_free. 0 or a protocol code with err set, or -ENOMEM.
 */
struct fb_route_table;
int fb_ctl_apply_table(struct fb_daemon *d, const cbor_item_t *apply,
                       struct fb_route_table **out, char *err, size_t errlen);

/* SIGHUP: config.reload with RELOADING=1 / READY=1 around it, the outcome
 * logged. Control thread; takes the change lock. */
void fb_ctl_reload_from_signal(const struct fb_ctl_env *env);

#endif
