/*
 * daemon/config/config_values.h -- internal to the config parser: what config.c
 * (sections, keys and whole-file checks), config_values.c (reading lines
 * and parsing single values), config_route.c ([route NAME]) and
 * config_limits.c ([limits]) share. Nothing else includes it.
 *
 * Both halves work on one struct parser, and both report errors through
 * fail(), which keeps the first error with its line number; so the parser
 * state and the error helpers live here.
 */
#ifndef FB_CONFIG_VALUES_H
#define FB_CONFIG_VALUES_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

#define ERR_MAX 512

enum section_kind {
    SEC_NONE = 0, /* before the first header */
    SEC_DAEMON,
    SEC_LISTEN,
    SEC_CONTROL,
    SEC_PLUGIN,
    SEC_ROUTE,
    SEC_LIMITS, /* config_limits.c */
    SEC_REMOTE, /* config_remote.c */
    SEC_METRICS,
    SEC__COUNT
};

/* Every key of the fixed sections and of [route NAME]. */
enum key_id {
    K_WORKERS,
    K_RUNTIME_DIR,
    K_STATE_DIR,
    K_MAX_FRAME,
    K_MAX_DEPTH,
    K_LOG_LEVEL,
    K_BLOCKING_THREADS,
    K_HANDLER_DEADLINE_MS,
    K_QUARANTINE_AFTER,
    K_UNIX,
    K_UNIX_MODE,
    K_TCP,
    K_TCP_AUTH,
    K_TCP_KEY_FILE,
    K_SOCKET,
    K_MODE,
    K_GROUP,
    K_MAX_REPLY,
    K_R_EVENT,
    K_R_TAGS,
    K_R_TO,
    K_R_MODE,
    K_R_SPLIT_BY,
    K_R_PRIORITY,
    K_R_SIGNATURE,
    /* [limits], config_limits.c */
    K_L_MAX_CONNECTIONS,
    K_L_MAX_CONNECTIONS_PER_UID,
    K_L_MAX_CONNECTIONS_TCP,
    K_L_OUTPUT_SOFT,
    K_L_OUTPUT_HARD,
    K_L_MAX_INFLIGHT,
    K_L_AUTH_TIMEOUT_MS,
    K_L_UNAUTH_MAX,
    K_L_UNAUTH_PER_ADDR,
    K_L_IDLE_TIMEOUT_UNIX_MS,
    K_L_IDLE_TIMEOUT_TCP_MS,
    K_L_MAX_FRAMES_PER_READ,
    K_L_INPUT_SOFT,
    K_L_INPUT_SOFT_MS,
    K_L_MAX_REPUBLISH,
    K_M_LISTEN, /* [metrics] listen */
    K__COUNT
};

/* Where the lines come from: a FILE or a string. */
struct source {
    FILE *fp;
    const char *text;
    size_t pos;
};

enum line_kind { LINE_BLANK, LINE_COMMENT, LINE_SECTION, LINE_KEY, LINE_CONT };

struct parser {
    const char *file; /* for messages */
    struct fb_config *c;
    struct source src;

    /* the line libinih is working on */
    int lineno;
    char *raw;
    size_t rawcap;
    enum line_kind kind;
    bool prev_key; /* mirrors libinih's prev_name: may continue */

    /* the current section */
    enum section_kind sec;
    int sec_line;
    bool sec_seen[SEC__COUNT];
    int sec_first_line[SEC__COUNT];
    enum key_id last_key; /* for continuation lines */
    bool last_key_valid;
    int key_line[K__COUNT];  /* fixed sections: line each key was set on */
    int rkey_line[K__COUNT]; /* current route's keys */
    struct fb_route_spec route;
    bool in_route;
    int comma_line;         /* a list line ended in ',' and wants more */
    bool tcp_loopback;      /* [listen] tcp is on a loopback address */
    int remote_key_line[8]; /* current [remote NS]'s keys (config_remote.c) */
    int remote_list;        /* its users/groups list continued by an indented
                             * line: 1 + the key's index, 0 = none */

    int err_line; /* first error, 0 = none yet */
    int rc;
    char err[ERR_MAX];
};

/* Records the first error only: later ones are usually its consequences. */
static inline __attribute__((format(printf, 3, 4))) int fail(struct parser *p, int line,
                                                             const char *fmt, ...)
{
    if (p->err_line || p->rc)
        return p->rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->err_line = line > 0 ? line : -1;
    p->rc = -EINVAL;
    return p->rc;
}

static inline int fail_nomem(struct parser *p)
{
    if (p->rc)
        return p->rc;
    snprintf(p->err, sizeof p->err, "out of memory");
    p->err_line = -1;
    p->rc = -ENOMEM;
    return p->rc;
}

static inline bool failed(const struct parser *p)
{
    return p->rc != 0;
}

/* ------------------------------------------------------------ values */

/*
 * Each parser takes the whole value as libinih hands it over (trimmed) and
 * refuses trailing text; when it returns false, *out is left alone.
 * config.c words the error: it knows the section, the key and the line.
 */

/* Decimal, from min to max. */
bool fb_config_parse_ulong(const char *v, unsigned long long min, unsigned long long max,
                           unsigned long long *out);
/* Octal file mode, 1-4 digits, at most 0777. */
bool fb_config_parse_mode(const char *v, unsigned *out);
/* Decimal, optionally signed, any int64_t. */
bool fb_config_parse_int64(const char *v, int64_t *out);
/* error, warn, info or debug. */
bool fb_config_parse_log_level(const char *v, enum fb_log_level *out);

/*
 * [listen] tcp: "HOST:PORT" with HOST an IPv4 literal, "[IPv6]" or
 * "localhost". Returns NULL with *host (malloc'd, the caller frees it),
 * *port and *loopback set, or a phrase saying what is wrong.
 */
const char *fb_config_parse_tcp(const char *v, char **host, uint16_t *port,
                                bool *loopback);
/* The same, but port 0 is allowed (any free port: [metrics] listen). */
const char *fb_config_parse_hostport0(const char *v, char **host, uint16_t *port,
                                      bool *loopback);

/* [limits] key k's value into p->c->limits; config_limits.c. */
int fb_config_limit_key(struct parser *p, enum key_id k, const char *name, const char *v);
/* The [limits] defaults. */
void fb_config_limits_defaults(struct fb_config *c);
/* Checks between [limits] keys, once the file is read. */
int fb_config_limits_finish(struct parser *p);

/* [route NAME] (config_route.c): key k's value into p->route; one line
 * of a "to" or "tags" list (a trailing comma: a continuation follows);
 * the checks at the section's end, which then add p->route to the
 * config. Each returns p->rc. */
int fb_config_route_key(struct parser *p, enum key_id k, const char *v);
int fb_config_route_list_chunk(struct parser *p, enum key_id k, const char *v);
int fb_config_route_finish(struct parser *p);

/* [remote NS] (config_remote.c): a new section for arg (the NS, maybe
 * empty), one key of the current section, an indented line continuing
 * its users or groups list, the section's end, the checks that need the
 * whole file, and freeing c's sections. Each but the last returns p->rc. */
int fb_config_remote_begin(struct parser *p, const char *arg);
int fb_config_remote_key(struct parser *p, const char *name, const char *v);
int fb_config_remote_cont(struct parser *p, const char *v); /* an indented line */
int fb_config_remote_end(struct parser *p);                 /* the section ends */
int fb_config_remote_finish(struct parser *p);
void fb_config_remote_free(struct fb_config *c);

/* Replaces *slot with a copy of v ("" -> NULL when empty_is_null); false
 * (and the error set) when out of memory. */
bool fb_config_set_str(struct parser *p, char **slot, const char *v, bool empty_is_null);

/* -------------------------------------------------------------- lines */

/*
 * The classifying half of libinih's line source (config.c's reader): reads
 * the next line, copies it into str (num bytes, libinih's buffer) and sets
 * p->kind the way libinih will treat it. For a section header, *section
 * points at its '[' in p->raw, for the caller to parse. Returns str, or
 * NULL at the end or after an error.
 */
char *fb_config_read_line(struct parser *p, char *str, int num, char **section);

/*
 * A continuation line's value as libinih hands it over, into v (cap
 * bytes), without the inline comment libinih leaves on it.
 */
void fb_config_cont_value(char *v, size_t cap, const char *value);

#endif
