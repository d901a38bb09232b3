/*
 * The [remote NS] sections of fidbusd.conf: who may serve the functions of
 * namespace NS from a client process, and the defaults and caps of those
 * members (README "Remote functions", fidbusd.conf(5), proto/README.md).
 * config.c finds the section header and hands its NS and keys here; the
 * registry reads the result through fb_config_remote_find.
 *
 * users and groups are resolved to ids when the file is read (getpwnam_r,
 * getgrnam_r), so a name that does not exist is a FILE:LINE error now
 * rather than a member refused later for no visible reason, and a peer is
 * then checked against numbers (SO_PEERCRED gives numbers). A number is
 * taken as it is: a uid need not have a passwd entry (containers, DynamicUser).
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fidbus/funcid.h>
#include <fidbus/proto.h>

#include "config/config.h"
#include "config/config_values.h"

enum remote_key {
    RK_USERS,
    RK_GROUPS,
    RK_TCP,
    RK_CREDIT,
    RK_TIMEOUT_MS,
    RK_ATTEMPTS,
    RK__COUNT
};

static const char *const remote_keys[RK__COUNT] = {
    [RK_USERS] = "users",   [RK_GROUPS] = "groups",         [RK_TCP] = "tcp",
    [RK_CREDIT] = "credit", [RK_TIMEOUT_MS] = "timeout_ms", [RK_ATTEMPTS] = "attempts",
};

_Static_assert(RK__COUNT <= sizeof(((struct parser *)0)->remote_key_line) / sizeof(int),
               "parser.remote_key_line too small");

/* The defaults, as man/fidbusd.conf.5.scd ([remote NS]) documents them. */
#define REMOTE_CREDIT_DEFAULT 16u
#define REMOTE_TIMEOUT_MS_DEFAULT 30000u
#define REMOTE_ATTEMPTS_DEFAULT 3u

/* A uid or gid given as a number: 0 .. 2^32 - 2 ((uid_t)-1 means "none"
 * to the kernel's set*id calls, so it can be nobody's). */
#define ID_MAX 4294967294ull

_Static_assert(sizeof(uid_t) == sizeof(uint32_t) && sizeof(gid_t) == sizeof(uint32_t),
               "ids are kept as 32-bit numbers");

static struct fb_remote_conf *cur(struct parser *p)
{
    return &p->c->remotes[p->c->nremotes - 1];
}

int fb_config_remote_begin(struct parser *p, const char *arg)
{
    struct fb_config *c = p->c;
    if (!*arg)
        return fail(p, p->lineno,
                    "section [remote] needs a namespace: [remote NS], or [remote *] "
                    "for every namespace");
    if (strcmp(arg, "*") != 0 && !fidbus_name_valid(arg))
        return fail(p, p->lineno,
                    "[remote %s]: a namespace is 1-64 bytes of [A-Za-z0-9_-], or * for "
                    "every namespace",
                    arg);
    for (size_t i = 0; i < c->nremotes; i++)
        if (strcmp(c->remotes[i].ns, arg) == 0)
            return fail(p, p->lineno,
                        "section [remote %s] appears twice (first on line %d)", arg,
                        c->remotes[i].line);
    struct fb_remote_conf *r = realloc(c->remotes, (c->nremotes + 1) * sizeof *r);
    if (!r)
        return fail_nomem(p);
    c->remotes = r;
    r = &r[c->nremotes];
    memset(r, 0, sizeof *r);
    r->credit = REMOTE_CREDIT_DEFAULT;
    r->timeout_ms = REMOTE_TIMEOUT_MS_DEFAULT;
    r->attempts = REMOTE_ATTEMPTS_DEFAULT;
    r->line = p->lineno;
    c->nremotes++; /* counted before the strdup so free sees it */
    memset(p->remote_key_line, 0, sizeof p->remote_key_line);
    p->remote_list = 0;
    if (!(r->ns = strdup(arg)))
        return fail_nomem(p);
    return 0;
}

/* Looks a user or group name up; 1 found (*id set), 0 no such name, or a
 * negative errno when the lookup itself failed. */
static int lookup(bool user, const char *name, unsigned long long *id)
{
    long hint = sysconf(user ? _SC_GETPW_R_SIZE_MAX : _SC_GETGR_R_SIZE_MAX);
    size_t cap = hint > 0 ? (size_t)hint : 16384;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf)
            return -ENOMEM;
        int e;
        bool found;
        if (user) {
            struct passwd pw, *res = NULL;
            e = getpwnam_r(name, &pw, buf, cap, &res);
            found = e == 0 && res;
            if (found)
                *id = pw.pw_uid;
        } else {
            struct group gr, *res = NULL;
            e = getgrnam_r(name, &gr, buf, cap, &res);
            found = e == 0 && res;
            if (found)
                *id = gr.gr_gid;
        }
        free(buf);
        if (e == ERANGE && cap < (1u << 20)) {
            cap *= 2;
            continue;
        }
        /* glibc reports "no such name" as 0 with no result; some NSS
         * modules as ENOENT or ESRCH, which mean the same here. */
        if (e == 0 || e == ENOENT || e == ESRCH)
            return found;
        return -e;
    }
}

/* Adds one name or number of a users/groups list to *ids (no repeats). */
static int id_add(struct parser *p, const char *key, bool user, const char *tok,
                  uint32_t **ids, size_t *n)
{
    const char *ns = cur(p)->ns, *what = user ? "user" : "group";
    unsigned long long id;
    bool numeric = true;
    for (const char *q = tok; *q; q++)
        numeric = numeric && isdigit((unsigned char)*q);
    if (numeric) {
        if (!fb_config_parse_ulong(tok, 0, ID_MAX, &id))
            return fail(p, p->lineno, "[remote %s] %s: %s id %s is out of range", ns, key,
                        what, tok);
    } else {
        int rc = lookup(user, tok, &id);
        if (rc == -ENOMEM)
            return fail_nomem(p);
        if (rc < 0)
            return fail(p, p->lineno, "[remote %s] %s: cannot look %s '%s' up: %s", ns,
                        key, what, tok, strerror(-rc));
        if (rc == 0)
            return fail(p, p->lineno, "[remote %s] %s: no %s '%s' on this system", ns,
                        key, what, tok);
    }
    for (size_t i = 0; i < *n; i++)
        if ((*ids)[i] == (uint32_t)id)
            return 0; /* "alice, 1001" may name one uid twice: kept once */
    uint32_t *grown = realloc(*ids, (*n + 1) * sizeof **ids);
    if (!grown)
        return fail_nomem(p);
    *ids = grown;
    (*ids)[(*n)++] = (uint32_t)id;
    return 0;
}

/*
 * One line's worth of a users/groups list (rk): comma-separated names or
 * numbers. A trailing comma says an indented line continues the list, as
 * for a route's `to` and `tags`.
 */
static int id_chunk(struct parser *p, enum remote_key rk, const char *v)
{
    struct fb_remote_conf *r = cur(p);
    bool user = rk == RK_USERS;
    const char *key = remote_keys[rk];
    const char *s = v;
    p->remote_list = 0;
    p->comma_line = 0;
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && isspace((unsigned char)t[-1]))
            t--;
        size_t len = (size_t)(t - s);
        if (len == 0 && !*e && s != v && e[-1] == ',') {
            /* "a, b," : the list goes on on the next, indented line */
            p->remote_list = 1 + (int)rk;
            p->comma_line = p->lineno;
            return 0;
        }
        if (len == 0)
            return fail(p, p->lineno,
                        !*v ? "[remote %s] %s must not be empty (leave it out for none)"
                            : "[remote %s] %s: an empty entry in the list",
                        r->ns, key);
        char tok[256];
        if (len >= sizeof tok)
            return fail(p, p->lineno, "[remote %s] %s: an entry is too long", r->ns, key);
        memcpy(tok, s, len);
        tok[len] = '\0';
        int rc = user ? id_add(p, key, true, tok, (uint32_t **)&r->uids, &r->nuids)
                      : id_add(p, key, false, tok, (uint32_t **)&r->gids, &r->ngids);
        if (rc)
            return rc;
        if (!*e)
            return 0;
        s = e + 1;
    }
}

int fb_config_remote_cont(struct parser *p, const char *v)
{
    if (!p->remote_list)
        return fail(p, p->lineno,
                    "unexpected indented line: in [remote %s] only a users or groups "
                    "list ending with a comma continues on indented lines",
                    cur(p)->ns);
    return id_chunk(p, (enum remote_key)(p->remote_list - 1), v);
}

int fb_config_remote_end(struct parser *p)
{
    if (p->remote_list)
        return fail(p, p->comma_line,
                    "[remote %s] the %s list ends with a comma but no indented "
                    "continuation line follows",
                    cur(p)->ns, remote_keys[p->remote_list - 1]);
    return 0;
}

int fb_config_remote_key(struct parser *p, const char *name, const char *v)
{
    struct fb_remote_conf *r = cur(p);
    int k;
    for (k = 0; k < RK__COUNT; k++)
        if (strcmp(remote_keys[k], name) == 0)
            break;
    if (k == RK__COUNT)
        return fail(p, p->lineno,
                    "unknown key '%s' in [remote %s] (known: users, groups, tcp, credit, "
                    "timeout_ms, attempts)",
                    name, r->ns);
    if (p->remote_key_line[k])
        return fail(p, p->lineno, "[remote %s] key '%s' is set twice (first on line %d)",
                    r->ns, name, p->remote_key_line[k]);
    p->remote_key_line[k] = p->lineno;

    unsigned long long u;
    switch ((enum remote_key)k) {
    case RK_USERS:
    case RK_GROUPS:
        return id_chunk(p, (enum remote_key)k, v);
    case RK_TCP:
        if (strcmp(v, "yes") == 0)
            r->tcp = true;
        else if (strcmp(v, "no") == 0)
            r->tcp = false;
        else
            return fail(p, p->lineno, "[remote %s] tcp must be yes or no, not '%s'",
                        r->ns, v);
        return 0;
    case RK_CREDIT:
    case RK_TIMEOUT_MS:
    case RK_ATTEMPTS: {
        static const struct {
            unsigned long long max;
            const char *note;
        } range[RK__COUNT] = {
            [RK_CREDIT] = {FIDBUS_CREDIT_MAX, " (unanswered calls a member holds)"},
            [RK_TIMEOUT_MS] = {FIDBUS_TIMEOUT_MS_MAX, " (milliseconds)"},
            [RK_ATTEMPTS] = {FIDBUS_ATTEMPTS_MAX, ""},
        };
        if (!fb_config_parse_ulong(v, 1, range[k].max, &u))
            return fail(
                p, p->lineno,
                "[remote %s] %s must be a whole number from 1 to %llu%s, not '%s'", r->ns,
                name, range[k].max, range[k].note, v);
        if (k == RK_CREDIT)
            r->credit = (unsigned)u;
        else if (k == RK_TIMEOUT_MS)
            r->timeout_ms = (uint32_t)u;
        else
            r->attempts = (unsigned)u;
        return 0;
    }
    case RK__COUNT:
        break;
    }
    return 0;
}

int fb_config_remote_finish(struct parser *p)
{
    const struct fb_config *c = p->c;
    /* proto/README.md: a TCP client serves only when the listener has
     * authenticated it. Saying yes where it never can would be a setting
     * that silently does nothing. */
    for (size_t i = 0; c->tcp && i < c->nremotes; i++)
        if (c->remotes[i].tcp && c->tcp_auth != FB_TCP_AUTH_KEY)
            return fail(p, c->remotes[i].line,
                        "[remote %s] tcp = yes needs [listen] tcp_auth = key: TCP "
                        "clients that did not authenticate never serve functions",
                        c->remotes[i].ns);
    return 0;
}

const struct fb_remote_conf *fb_config_remote_find(const struct fb_config *c,
                                                   const char *ns)
{
    const struct fb_remote_conf *any = NULL;
    for (size_t i = 0; i < c->nremotes; i++) {
        if (strcmp(c->remotes[i].ns, ns) == 0)
            return &c->remotes[i];
        if (strcmp(c->remotes[i].ns, "*") == 0)
            any = &c->remotes[i];
    }
    return any;
}

/* config_values.c refuses a line of 199 bytes or more (control_export.c
 * keeps to the same bound). */
#define LINE_MAX_BYTES 198

void fb_config_remote_write(FILE *f, const struct fb_config *c)
{
    for (size_t i = 0; i < c->nremotes; i++) {
        const struct fb_remote_conf *r = &c->remotes[i];
        fprintf(f, "\n[remote %s]\n", r->ns);
        for (int list = 0; list < 2; list++) {
            size_t n = list ? r->ngids : r->nuids;
            if (!n)
                continue;
            /* "users = 1, 2," then indented lines, each within the bound */
            int col = fprintf(f, "%s = ", list ? "groups" : "users");
            for (size_t j = 0; j < n; j++) {
                char id[16];
                int il = snprintf(id, sizeof id, "%" PRIu32,
                                  list ? (uint32_t)r->gids[j] : (uint32_t)r->uids[j]);
                if (j && col + 2 + il + 1 > LINE_MAX_BYTES) {
                    fputs(",\n   ", f);
                    col = 3;
                } else if (j) {
                    fputs(", ", f);
                    col += 2;
                }
                fputs(id, f);
                col += il;
            }
            fputc('\n', f);
        }
        fprintf(f, "tcp = %s\ncredit = %u\ntimeout_ms = %" PRIu32 "\nattempts = %u\n",
                r->tcp ? "yes" : "no", r->credit, r->timeout_ms, r->attempts);
    }
}

void fb_config_remote_free(struct fb_config *c)
{
    for (size_t i = 0; i < c->nremotes; i++) {
        free(c->remotes[i].ns);
        free(c->remotes[i].uids);
        free(c->remotes[i].gids);
    }
    free(c->remotes);
    c->remotes = NULL;
    c->nremotes = 0;
}
