/*
 * daemon/config/config_values.c -- the lexical half of fidbusd.conf parsing:
 * reading lines for libinih and parsing single values. config.c gives them
 * meaning (sections, keys, whole-file checks); config_values.h is what
 * the two share.
 *
 * Debian builds libinih without INI_HANDLER_LINENO and with a 200-byte
 * line buffer, so config.c hands it our own reader (ini_parse_stream calls
 * it once per line): lines come from a FILE or a string, are counted, are
 * kept whole in p->raw (section headers are parsed from there), are
 * refused when they would not fit rather than letting libinih split them,
 * and are classified exactly as libinih will treat them (a key, a section
 * header, or an indented continuation of the previous key).
 *
 * The value parsers are strict (the whole value, no trailing text) and
 * know nothing of sections or keys: they say whether a value parses, and
 * config.c words the error with the section, key and line.
 */
#include "config/config_values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* ------------------------------------------------------------ values */

bool fb_config_parse_ulong(const char *v, unsigned long long min, unsigned long long max,
                           unsigned long long *out)
{
    if (!*v)
        return false;
    for (const char *s = v; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    errno = 0;
    unsigned long long x = strtoull(v, NULL, 10);
    if (errno || x < min || x > max)
        return false;
    *out = x;
    return true;
}

bool fb_config_parse_mode(const char *v, unsigned *out)
{
    if (!*v || strlen(v) > 4)
        return false;
    unsigned m = 0;
    for (const char *s = v; *s; s++) {
        if (*s < '0' || *s > '7')
            return false;
        m = m * 8 + (unsigned)(*s - '0');
    }
    if (m > 0777)
        return false;
    *out = m;
    return true;
}

bool fb_config_parse_int64(const char *v, int64_t *out)
{
    const char *s = v;
    if (*s == '-' || *s == '+')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    errno = 0;
    long long x = strtoll(v, NULL, 10);
    if (errno)
        return false;
    *out = x;
    return true;
}

bool fb_config_parse_log_level(const char *v, enum fb_log_level *out)
{
    if (strcmp(v, "error") == 0)
        *out = FB_LOG_ERROR;
    else if (strcmp(v, "warn") == 0)
        *out = FB_LOG_WARN;
    else if (strcmp(v, "info") == 0)
        *out = FB_LOG_INFO;
    else if (strcmp(v, "debug") == 0)
        *out = FB_LOG_DEBUG;
    else
        return false;
    return true;
}

/*
 * "HOST:PORT" with HOST an IPv4 literal, "[IPv6]" or "localhost" (which
 * means 127.0.0.1, so the daemon needs no resolver). Names are refused:
 * what a name resolves to can change under a running daemon, and whether
 * an address is loopback decides whether auth may be off.
 */
static const char *parse_hostport(const char *v, char **host, uint16_t *port,
                                  bool *loopback, unsigned long long min_port);

const char *fb_config_parse_tcp(const char *v, char **host, uint16_t *port,
                                bool *loopback)
{
    return parse_hostport(v, host, port, loopback, 1);
}

const char *fb_config_parse_hostport0(const char *v, char **host, uint16_t *port,
                                      bool *loopback)
{
    return parse_hostport(v, host, port, loopback, 0);
}

static const char *parse_hostport(const char *v, char **host, uint16_t *port,
                                  bool *loopback, unsigned long long min_port)
{
    const char *colon;
    char buf[INET6_ADDRSTRLEN + 1];
    size_t hn;
    bool v6 = false;

    if (v[0] == '[') {
        const char *rb = strchr(v, ']');
        if (!rb || rb[1] != ':')
            return "must be HOST:PORT with an IPv6 address as [ADDR]:PORT";
        hn = (size_t)(rb - v - 1);
        if (hn == 0 || hn >= sizeof buf)
            return "is not an IPv6 address in [ADDR]:PORT";
        memcpy(buf, v + 1, hn);
        colon = rb + 1;
        v6 = true;
    } else {
        colon = strrchr(v, ':');
        if (!colon || colon == v)
            return "must be HOST:PORT (an IPv4 address, [IPv6] or localhost)";
        hn = (size_t)(colon - v);
        if (hn >= sizeof buf)
            return "host must be an IPv4 address, [IPv6] or localhost";
        memcpy(buf, v, hn);
    }
    buf[hn] = '\0';

    unsigned long long pv;
    if (!fb_config_parse_ulong(colon + 1, min_port, 65535, &pv))
        return min_port ? "port must be a number from 1 to 65535"
                        : "port must be a number from 0 (any free port) to 65535";

    if (v6) {
        struct in6_addr a;
        if (inet_pton(AF_INET6, buf, &a) != 1)
            return "is not an IPv6 address in [ADDR]:PORT";
        *loopback = IN6_IS_ADDR_LOOPBACK(&a) ||
                    (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
    } else if (strcmp(buf, "localhost") == 0) {
        strcpy(buf, "127.0.0.1");
        *loopback = true;
    } else {
        struct in_addr a;
        if (inet_pton(AF_INET, buf, &a) != 1)
            return "host must be an IPv4 address, [IPv6] or localhost "
                   "(names are not resolved)";
        *loopback = (ntohl(a.s_addr) >> 24) == 127;
    }
    *host = strdup(buf);
    if (!*host)
        return "out of memory";
    *port = (uint16_t)pv;
    return NULL;
}

/* -------------------------------------------------------------- lines */

/* Next raw line (without its newline) into p->raw; false at the end. */
static bool next_raw(struct parser *p, size_t *len)
{
    if (p->src.fp) {
        ssize_t n = getline(&p->raw, &p->rawcap, p->src.fp);
        if (n < 0) {
            if (ferror(p->src.fp)) {
                snprintf(p->err, sizeof p->err, "read error: %s", strerror(errno));
                p->err_line = -1;
                p->rc = -EIO;
            }
            return false;
        }
        *len = (size_t)n;
    } else {
        const char *s = p->src.text + p->src.pos;
        if (!*s)
            return false;
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s + 1) : strlen(s);
        if (n + 1 > p->rawcap) {
            char *r = realloc(p->raw, n + 1);
            if (!r) {
                fail_nomem(p);
                return false;
            }
            p->raw = r;
            p->rawcap = n + 1;
        }
        memcpy(p->raw, s, n);
        p->raw[n] = '\0';
        p->src.pos += n;
        *len = n;
    }
    if (*len > 0 && p->raw[*len - 1] == '\n')
        p->raw[--*len] = '\0';
    return true;
}

/*
 * Classifies each line the way libinih will, so the handler knows a
 * continuation from a key. Returning NULL after an error stops the parse
 * there.
 */
char *fb_config_read_line(struct parser *p, char *str, int num, char **section)
{
    size_t len;

    *section = NULL;
    if (failed(p) || !next_raw(p, &len))
        return NULL;
    p->lineno++;
    char *line = p->raw;
    if (memchr(line, '\0', len)) {
        fail(p, p->lineno, "NUL byte in the line");
        return NULL;
    }
    /* libinih would skip a BOM on line 1 itself; we do it so the copy
     * below and our own classification agree */
    if (p->lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    if (len >= (size_t)num - 1) {
        fail(p, p->lineno,
             "line longer than %d bytes (continue a long 'to' or "
             "'tags' list on indented lines)",
             num - 2);
        return NULL;
    }

    char *s = line;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s) {
        p->kind = LINE_BLANK;
    } else if (*s == ';' || *s == '#') {
        p->kind = LINE_COMMENT;
    } else if (p->prev_key && s > line) {
        p->kind = LINE_CONT;
    } else if (*s == '[') {
        p->kind = LINE_SECTION;
        p->prev_key = false;
        /* libinih still gets the line (it must reset its own state) but a
         * copy: begin_section writes into p->raw */
        *section = s;
    } else {
        /* the test libinih makes: '=' or ':' before any inline comment */
        const char *q = s;
        bool was_space = false;
        while (*q && *q != '=' && *q != ':' && !(was_space && *q == ';')) {
            was_space = isspace((unsigned char)*q);
            q++;
        }
        if (*q != '=' && *q != ':') {
            fail(p, p->lineno,
                 "syntax error: expected [section], 'key = value' "
                 "or a comment");
            return NULL;
        }
        if (q == s) {
            fail(p, p->lineno, "syntax error: no key name before '%c'", *q);
            return NULL;
        }
        p->kind = LINE_KEY;
        p->prev_key = true;
    }
    memcpy(str, line, len + 1);
    return str;
}

/* libinih 55 keeps inline comments on continuation lines */
void fb_config_cont_value(char *v, size_t cap, const char *value)
{
    snprintf(v, cap, "%s", value);
    for (char *s = v + 1; *s; s++) {
        if (*s == ';' && isspace((unsigned char)s[-1])) {
            *s = '\0';
            break;
        }
    }
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        v[--n] = '\0';
}

bool fb_config_set_str(struct parser *p, char **slot, const char *v, bool empty_is_null)
{
    free(*slot);
    *slot = NULL;
    if (empty_is_null && !*v)
        return true;
    *slot = strdup(v);
    if (!*slot) {
        fail_nomem(p);
        return false;
    }
    return true;
}
