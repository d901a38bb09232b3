/*
 * The [limits] section of fidbusd.conf: what one client may make the
 * daemon hold, and how long it may hold a connection doing nothing. The
 * keys are named in config.c's table with the others; their values, the
 * defaults and the checks between them live here, so the section is one
 * block (README "Limits and backpressure" documents every key).
 */
#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"
#include "config/config_values.h"

/* Unless set, max_connections_tcp is this or half of max_connections,
 * whichever is less: TCP never gets every place by default. */
#define FB_MAX_CONNECTIONS_TCP_DEFAULT 256u

static const struct fb_limits limits_default = {
    .max_connections = 1024,
    .max_connections_per_uid = 128,
    .max_connections_tcp = FB_MAX_CONNECTIONS_TCP_DEFAULT,
    .output_soft = 256u * 1024u,
    .output_hard = 8u * 1024u * 1024u,
    .max_inflight = 1024,
    .auth_timeout_ms = 10000,
    .unauth_max = 64,
    .unauth_per_addr = 8,
    .idle_timeout_unix_ms = 0,
    .idle_timeout_tcp_ms = 300000,
    .max_frames_per_read = 64,
    .input_soft = 256u * 1024u,
    .input_soft_ms = 30000,
    .max_republish = 1024,
};

void fb_config_limits_defaults(struct fb_config *c)
{
    c->limits = limits_default;
}

/* max_connections_tcp when the file does not set it (fb_config_limits_finish). */
static unsigned tcp_default(unsigned max_connections)
{
    unsigned half = max_connections > 1 ? max_connections / 2 : 1;
    return FB_MAX_CONNECTIONS_TCP_DEFAULT < half ? FB_MAX_CONNECTIONS_TCP_DEFAULT : half;
}

void fb_config_limits_write(FILE *f, const struct fb_limits *l)
{
    const struct fb_limits *d = &limits_default;
    const struct {
        const char *name;
        unsigned long long v, def;
    } keys[] = {
        {"max_connections", l->max_connections, d->max_connections},
        {"max_connections_per_uid", l->max_connections_per_uid,
         d->max_connections_per_uid},
        {"max_connections_tcp", l->max_connections_tcp, tcp_default(l->max_connections)},
        {"output_soft", l->output_soft, d->output_soft},
        {"output_hard", l->output_hard, d->output_hard},
        {"max_inflight", l->max_inflight, d->max_inflight},
        {"auth_timeout_ms", l->auth_timeout_ms, d->auth_timeout_ms},
        {"unauth_max", l->unauth_max, d->unauth_max},
        {"unauth_per_addr", l->unauth_per_addr, d->unauth_per_addr},
        {"idle_timeout_unix_ms", l->idle_timeout_unix_ms, d->idle_timeout_unix_ms},
        {"idle_timeout_tcp_ms", l->idle_timeout_tcp_ms, d->idle_timeout_tcp_ms},
        {"max_frames_per_read", l->max_frames_per_read, d->max_frames_per_read},
        {"input_soft", l->input_soft, d->input_soft},
        {"input_soft_ms", l->input_soft_ms, d->input_soft_ms},
        {"max_republish", l->max_republish, d->max_republish},
    };
    bool header = false;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (keys[i].v == keys[i].def)
            continue;
        if (!header)
            fputs("\n[limits]\n", f);
        header = true;
        fprintf(f, "%s = %llu\n", keys[i].name, keys[i].v);
    }
}

#define DAY_MS 86400000ull

int fb_config_limit_key(struct parser *p, enum key_id k, const char *name, const char *v)
{
    struct fb_limits *l = &p->c->limits;
    unsigned long long min = 0, max = 0;
    const char *note = "";
    unsigned *slot = NULL;
    uint32_t *slot32 = NULL;

    switch (k) {
    case K_L_MAX_CONNECTIONS:
        min = 1, max = 1000000, slot = &l->max_connections;
        break;
    case K_L_MAX_CONNECTIONS_PER_UID:
        max = 1000000, note = " (0 = no per-uid limit)",
        slot = &l->max_connections_per_uid;
        break;
    case K_L_OUTPUT_SOFT:
        max = 1073741824ull, note = " (bytes; 0 = never pause)", slot32 = &l->output_soft;
        break;
    case K_L_OUTPUT_HARD:
        min = 4096, max = 1073741824ull, note = " (bytes)", slot32 = &l->output_hard;
        break;
    case K_L_MAX_INFLIGHT:
        min = 1, max = 1000000, slot = &l->max_inflight;
        break;
    case K_L_MAX_CONNECTIONS_TCP:
        min = 1, max = 1000000, slot = &l->max_connections_tcp;
        break;
    case K_L_UNAUTH_MAX:
        min = 1, max = 1000000, slot = &l->unauth_max;
        break;
    case K_L_UNAUTH_PER_ADDR:
        min = 1, max = 1000000, slot = &l->unauth_per_addr;
        break;
    case K_L_AUTH_TIMEOUT_MS:
        min = 1, max = DAY_MS, note = " (ms)", slot = &l->auth_timeout_ms;
        break;
    case K_L_IDLE_TIMEOUT_UNIX_MS:
        max = DAY_MS, note = " (ms; 0 = off)", slot = &l->idle_timeout_unix_ms;
        break;
    case K_L_IDLE_TIMEOUT_TCP_MS:
        max = DAY_MS, note = " (ms; 0 = off)", slot = &l->idle_timeout_tcp_ms;
        break;
    case K_L_MAX_FRAMES_PER_READ:
        min = 1, max = 1000000, slot = &l->max_frames_per_read;
        break;
    case K_L_INPUT_SOFT:
        max = 1073741824ull, note = " (bytes)", slot32 = &l->input_soft;
        break;
    case K_L_INPUT_SOFT_MS:
        max = DAY_MS, note = " (ms; 0 = off)", slot = &l->input_soft_ms;
        break;
    case K_L_MAX_REPUBLISH:
        max = 1000000, note = " (0 = handlers may not republish)",
        slot = &l->max_republish;
        break;
    default:
        return p->rc;
    }
    unsigned long long u;
    if (!fb_config_parse_ulong(v, min, max, &u))
        return fail(p, p->lineno,
                    "[limits] %s must be a whole number from %llu to %llu%s, not '%s'",
                    name, min, max, note, v);
    if (slot)
        *slot = (unsigned)u;
    else
        *slot32 = (uint32_t)u;
    return p->rc;
}

int fb_config_limits_finish(struct parser *p)
{
    struct fb_limits *l = &p->c->limits;
    /* TCP's share of the places: set, it must fit in the total (equal
     * leaves Unix clients nothing of their own, which a TCP-only daemon
     * may want); unset, it never takes more than half. */
    if (p->key_line[K_L_MAX_CONNECTIONS_TCP]) {
        if (l->max_connections_tcp > l->max_connections)
            return fail(p, p->key_line[K_L_MAX_CONNECTIONS_TCP],
                        "[limits] max_connections_tcp (%u) must not be above "
                        "max_connections (%u)",
                        l->max_connections_tcp, l->max_connections);
    } else if (l->max_connections_tcp > l->max_connections / 2) {
        l->max_connections_tcp = l->max_connections > 1 ? l->max_connections / 2 : 1;
    }
    /* A soft limit at or above the hard one would close clients that a
     * pause would have held back. */
    if (l->output_soft && l->output_soft >= l->output_hard) {
        int line = p->key_line[K_L_OUTPUT_SOFT] ? p->key_line[K_L_OUTPUT_SOFT]
                                                : p->key_line[K_L_OUTPUT_HARD];
        return fail(p, line,
                    "[limits] output_soft (%u) must be below output_hard (%u), or 0",
                    (unsigned)l->output_soft, (unsigned)l->output_hard);
    }
    return 0;
}
