/*
 * <fidbus/plugin.h> -- the fidbus plugin ABI (version 1).
 *
 * A plugin is a shared object that exports exactly one symbol,
 * `fidbus_plugin`, of type `const struct fidbus_plugin`. fidbusd copies the
 * .so to a private file, dlopen()s it with RTLD_NOW|RTLD_LOCAL, checks
 * `abi == FIDBUS_PLUGIN_ABI`, validates every function's names and version,
 * computes their funcIDs, refuses the whole plugin on any conflict, calls
 * `init`, and only then makes its functions routable.
 *
 * A minimal plugin (build with `cc -shared -fPIC -fvisibility=hidden`):
 *
 *     #include <fidbus/plugin.h>
 *
 *     static int hello(void *ctx, const struct fidbus_event *ev)
 *     {
 *         const struct fidbus_host *host = ctx;
 *         host->log(host->handle, FIDBUS_LOG_INFO, "got %s", ev->id);
 *         return 0;
 *     }
 *
 *     static int init(const struct fidbus_host *host, void **ctx)
 *     {
 *         *ctx = (void *)host;    // the host table outlives every call
 *         return 0;
 *     }
 *
 *     static const struct fidbus_function fns[] = {
 *         { .ns = "demo", .name = "hello", .version = "1.0.0",
 *           .signature = "event:any", .flags = 0, .handle = hello },
 *     };
 *
 *     FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
 *         .abi = FIDBUS_PLUGIN_ABI, .name = "hello", .version = "1.0.0",
 *         .description = "logs every event it gets",
 *         .init = init, .fini = NULL,
 *         .functions = fns, .nfunctions = 1,
 *     };
 *
 * Threads. fidbusd runs several I/O threads (`workers`). An inline function
 * (flags without FIDBUS_FN_BLOCKING) is called on whichever I/O thread read
 * the event, so it may run on several threads at once and must be
 * thread-safe; it must not block (no disk or network waits, no long locks):
 * while it runs, no other connection on that thread makes progress. A
 * FIDBUS_FN_BLOCKING function runs on the daemon's worker pool with a copy
 * of the event; an acked publish is answered only after it returns.
 * Events from one connection are dispatched in the order they were read;
 * blocking calls of one connection may finish out of order.
 *
 * Memory. Nothing the daemon hands to a plugin is the plugin's to free.
 * `struct fidbus_event` and everything it points to is valid only during
 * the handler call: copy what you keep. The host table passed to `init`
 * and the strings returned by `host->config` are valid until `fini`
 * returns. The plugin's own `struct fidbus_plugin` and function table must
 * stay valid and unchanged while the plugin is loaded (make them static
 * const). Whatever `init` stores in *ctx is the plugin's: free it in
 * `fini`.
 *
 * Return codes. `init` and `handle` return 0 for success; anything else is
 * a failure (a negative errno is the convention). A failing `init` refuses
 * the load (fini is not called); call host->set_error first to say why. A failing
 * `handle` is counted as a handler error and turns an acked publish into HANDLER_FAILED.
 * Host calls return 0 or a negative errno as documented on each.
 */
#ifndef FIDBUS_PLUGIN_H
#define FIDBUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structs below. */
#define FIDBUS_PLUGIN_ABI 1

/* Run on the worker pool, not the I/O loop. */
#define FIDBUS_FN_BLOCKING 0x1u

/* Exports the one symbol from a plugin built with -fvisibility=hidden. */
#define FIDBUS_PLUGIN_EXPORT __attribute__((visibility("default")))

/* Levels for host->log. */
#define FIDBUS_LOG_ERROR 0
#define FIDBUS_LOG_WARN 1
#define FIDBUS_LOG_INFO 2
#define FIDBUS_LOG_DEBUG 3

/* The longest reason host->set_error keeps, NUL included. */
#define FIDBUS_ERROR_MAX 256

/* How many times an event may be republished by handlers before
 * host->publish refuses it with -ELOOP. */
#define FIDBUS_MAX_HOPS 8

#ifndef FIDBUS_TAG_DEFINED
#define FIDBUS_TAG_DEFINED
/* One tag; both strings NUL-terminated. */
struct fidbus_tag {
    const char *key;
    const char *value;
};
#endif

/* An event as a handler sees it. Valid only during the handler call. */
struct fidbus_event {
    const char *id;                /* event id, NUL-terminated */
    const struct fidbus_tag *tags; /* ntags tags, in the order sent */
    size_t ntags;
    const uint8_t *payload; /* the payload item's raw CBOR bytes, zero
                             * copy; exactly as the publisher sent them */
    size_t payload_len;     /* NULL and 0 when the event has none */
    uint64_t seq;           /* publisher's seq (0 if none) */
    uint64_t generation;    /* of the route table that routed it */
    uint64_t recv_ns;       /* CLOCK_MONOTONIC when its frame was read */
    /* Who published it. Appended after the fields above: the host
     * allocates this struct, so a plugin built against an older header
     * (which reads only the fields above) keeps working unchanged.
     * uid, pid: the publisher's credentials (SO_PEERCRED, read once when
     * its connection was accepted) for a Unix-socket peer, -1 for a TCP
     * peer and for an event a plugin published with host->publish (the
     * daemon does not pass the original publisher's identity on: the
     * plugin, not that client, chose to publish it). conn: the
     * publisher's connection id as `fidbusctl conn list` shows it, 0 for
     * an event a plugin published. */
    int64_t uid;
    int64_t pid;
    uint64_t conn;
};

/*
 * What the daemon offers a plugin. Given to init; valid until fini
 * returns. Every call takes `handle` as its first argument. All calls are
 * thread-safe.
 */
struct fidbus_host {
    void *handle;

    /* One line to the daemon's log (stderr), prefixed with the plugin
     * instance name; level is FIDBUS_LOG_*. No trailing newline needed. */
    void (*log)(void *handle, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

    /* The value of `key` in this instance's config section ([plugin NAME]),
     * NULL if unset. `path` and `namespace` are the daemon's own keys and
     * also readable. */
    const char *(*config)(void *handle, const char *key);

    /* Publishes a new event into the bus, routed like any other. The event
     * is dispatched before publish returns (blocking targets are queued).
     * Data is copied as needed; the caller keeps ownership. Returns the
     * number of handlers it reached (>= 0), -EINVAL for a bad id or tags (a tag key given
     * twice included), -ELOOP when the event has already been republished FIDBUS_MAX_HOPS
     * times (a handler that republishes what it receives cannot loop
     * forever), -EDQUOT when the client event it all came from has led to
     * [limits] max_republish republishes already (N copies per hop cannot
     * make N^8 calls), -ENOENT when it matches no route. */
    int (*publish)(void *handle, const char *id, const struct fidbus_tag *tags,
                   size_t ntags, const uint8_t *payload, size_t payload_len);

    /* Calls cb(arg) after `after_ms`, then every `repeat_ms` if non-zero,
     * on the daemon's main thread, never before init has returned nor
     * once fini has begun (a timer started in init waits for its end).
     * Stores an id for timer_stop in *timer_id. Timers still running are
     * cancelled before fini. Returns 0 or a negative errno. */
    int (*timer_start)(void *handle, uint64_t after_ms, uint64_t repeat_ms,
                       void (*cb)(void *arg), void *arg, uint64_t *timer_id);

    /* Cancels a timer; a callback already running finishes. Returns 0 or
     * -ENOENT. */
    int (*timer_stop)(void *handle, uint64_t timer_id);

    /* Says why init is about to fail: the text (printf-like, formatted
     * by the daemon with vsnprintf; a format with a %n conversion is
     * refused and replaced by a fixed text) becomes the reason in the
     * refusal, "plugin NAME (PATH): init failed: REASON", in the
     * plugin.load / plugin.reload / config.reload REPLY, at start-up and
     * in the log, instead of only init's return code. At most
     * FIDBUS_ERROR_MAX - 1 bytes are kept (longer text is cut and ends in
     * "..."); control characters become '?', so it stays one line (and
     * so do non-ASCII bytes when the text is not valid UTF-8). Pass text
     * you did not write as ("%s", text), never as the format. The
     * last call wins; it counts only if init then returns non-zero. Only
     * calls from init, on the thread that runs it, count: any other call
     * (a handler, a timer, fini, a thread of the plugin's own) is ignored.
     * Takes what was reserved[0] in the first releases of ABI 1, so a
     * daemon from before it has NULL here: a plugin that must also load
     * there checks `host->set_error` before calling it. */
    void (*set_error)(void *handle, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

    void *reserved[7];
};

/* One handler function. */
struct fidbus_function {
    const char *ns;        /* 1-64 bytes of [A-Za-z0-9_-]; an instance
                            * loaded with `namespace = NS` has its
                            * functions under NS instead */
    const char *name;      /* 1-64 bytes of [A-Za-z0-9_-] */
    const char *version;   /* MAJOR.MINOR.PATCH */
    const char *signature; /* the contract it implements, free text; its
                            * SHA-256 is the sighash routes may pin */
    uint32_t flags;        /* FIDBUS_FN_* */
    /* Handles one event; ctx is what init stored. 0 = ok. */
    int (*handle)(void *ctx, const struct fidbus_event *ev);
};

/* The one exported symbol. */
struct fidbus_plugin {
    uint32_t abi;            /* FIDBUS_PLUGIN_ABI */
    const char *name;        /* for logs and listings */
    const char *version;     /* the plugin's own version, free text */
    const char *description; /* one line */
    /* Called once, before any handler or timer callback: on the daemon's
     * main thread at start-up, on its control thread for a plugin loaded
     * at run time (one load at a time). May be NULL. 0 = ok; otherwise the
     * load fails. */
    int (*init)(const struct fidbus_host *host, void **ctx);
    /* Called once at unload or shutdown, after the last handler call and
     * timer callback have returned. May be NULL. */
    void (*fini)(void *ctx);
    const struct fidbus_function *functions;
    size_t nfunctions;
    void *reserved[8];
};

#ifdef __cplusplus
}
#endif
#endif
