/*
 * ctl/top.c -- `fidbusctl top`: a live view of the daemon.
 *
 * Every interval (1 s) it asks the control socket for `stats` and
 * `conn.list` on one connection, and shows rates computed from the
 * difference between this sample and the last: events in, dispatched,
 * errors; per route (matched/s) and per function (calls/s, errors/s and
 * the p99 of the interval's calls, from the latency histogram's bucket
 * counts: the upper bound of the bucket holding it), each function named
 * by its canonical name next to its funcID; connections (in frames/s
 * each), paused connections, pool queue depth, calls in flight. Tables are
 * sorted by rate, busiest first, then by name.
 *
 * Modes:
 *  - stdout a terminal: a full-screen view redrawn in place every second
 *    with plain ANSI/VT100 escapes (alternate screen, cursor home, clear to
 *    end of line), cut to the window's size. The terminal is put in raw
 *    mode (no echo, no line buffering) so one key works: 'q' quits. The
 *    terminal settings and the screen are restored on every way out --
 *    'q', end of stdin, SIGINT, SIGTERM, SIGHUP, a lost daemon.
 *    ncurses is not used: one full redraw a second needs only cursor-home,
 *    clear-line and the alternate screen, which every terminal emulator in
 *    use understands, and leaving it out keeps fidbusctl's dependencies
 *    (and its behaviour under a pty in the tests) simple.
 *  - stdout not a terminal: the same view as plain text, a block per
 *    interval separated by an empty line (like `top -b`), until killed.
 *  - --once: two samples one interval apart, one plain-text block with
 *    every route and function, idle ones included, then exit: rates are
 *    over that one interval, never "since start".
 *
 * Remote members (func.members) have a section of their own: per member
 * of each remote function, its calls/s, in flight against its credit,
 * errors and timeouts; "none" when no process serves a function.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <fidbus/client.h>

#include "fidbusctl.h"

#define TOP_INTERVAL_MS 1000

/* ------------------------------------------------------------ terminal */

static struct termios saved_tio;
static bool tio_saved, screen_on;
static volatile sig_atomic_t got_signal;

static void term_restore(void)
{
    if (screen_on) {
        /* cursor back on, leave the alternate screen */
        (void)!write(STDOUT_FILENO, "\033[?25h\033[?1049l", 14);
        screen_on = false;
    }
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        tio_saved = false;
    }
}

static void on_signal(int sig)
{
    got_signal = sig;
}

/* Raw keys (when stdin is a terminal) and the alternate screen. */
static void term_enter(void)
{
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
        struct termios raw = saved_tio;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0)
            tio_saved = true;
    }
    fputs("\033[?1049h\033[?25l", stdout);
    fflush(stdout);
    screen_on = true;
    atexit(term_restore);
}

static void window_size(unsigned *rows, unsigned *cols)
{
    struct winsize ws;
    *rows = 24;
    *cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}

/* -------------------------------------------------------------- lines */

struct lines {
    char **v;
    size_t n, cap;
};

static void addf(struct lines *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void addf(struct lines *l, const char *fmt, ...)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) >= 0)
        l->v[l->n++] = s;
    va_end(ap);
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (struct lines){0};
}

/* ------------------------------------------------------------- numbers */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t jnum(const json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v > 0 ? (uint64_t)v : 0;
}

/* (now - before) per second, 0 when the counter went back (a restart or a
 * route that came back under the same name). */
static double rate(uint64_t now, uint64_t before, double secs)
{
    return now >= before && secs > 0 ? (double)(now - before) / secs : 0.0;
}

static void dur_text(char *buf, size_t cap, uint64_t ns)
{
    if (ns < 1000u)
        snprintf(buf, cap, "%" PRIu64 "ns", ns);
    else if (ns < 1000000u)
        snprintf(buf, cap, "%.3gus", (double)ns / 1e3);
    else if (ns < 1000000000u)
        snprintf(buf, cap, "%.3gms", (double)ns / 1e6);
    else
        snprintf(buf, cap, "%.3gs", (double)ns / 1e9);
}

/*
 * The p99 of the calls between two samples of a function: from the
 * difference of the cumulative bucket counts, the upper bound of the
 * first bucket holding 99 % of them ("-" when there were none).
 */
static void p99_text(char *buf, size_t cap, const json_t *now, const json_t *before)
{
    const json_t *bounds = json_object_get(now, "latency_buckets");
    const json_t *c1 = json_object_get(now, "latency_counts");
    const json_t *c0 = before ? json_object_get(before, "latency_counts") : NULL;
    uint64_t n1 = jnum(now, "latency_count"),
             n0 = before ? jnum(before, "latency_count") : 0;
    if (!json_is_array(bounds) || !json_is_array(c1) || n1 <= n0) {
        snprintf(buf, cap, "-");
        return;
    }
    uint64_t total = n1 - n0, want = (total * 99 + 99) / 100;
    for (size_t i = 0; i < json_array_size(bounds); i++) {
        uint64_t a = (uint64_t)json_integer_value(json_array_get(c1, i));
        uint64_t b = c0 ? (uint64_t)json_integer_value(json_array_get(c0, i)) : 0;
        if (a >= b && a - b >= want) {
            char d[32];
            dur_text(d, sizeof d,
                     (uint64_t)json_integer_value(json_array_get(bounds, i)));
            snprintf(buf, cap, "<=%s", d);
            return;
        }
    }
    char d[32];
    size_t last = json_array_size(bounds);
    dur_text(d, sizeof d,
             last ? (uint64_t)json_integer_value(json_array_get(bounds, last - 1)) : 0);
    snprintf(buf, cap, ">%s", d);
}

/* -------------------------------------------------------------- view */

struct row {
    char *name;
    double rate;
    char text[512];
};

static int by_rate(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->rate != y->rate)
        return x->rate < y->rate ? 1 : -1;
    return strcmp(x->name, y->name);
}

static void rows_emit(struct lines *l, struct row *rows, size_t n)
{
    if (n)
        qsort(rows, n, sizeof *rows, by_rate);
    for (size_t i = 0; i < n; i++) {
        addf(l, "%s", rows[i].text);
        free(rows[i].name);
    }
    free(rows);
}

static void view_routes(struct lines *l, const json_t *s1, const json_t *s0, double secs)
{
    const json_t *r1 = json_object_get(s1, "routes");
    const json_t *r0 = s0 ? json_object_get(s0, "routes") : NULL;
    size_t n = json_object_size(r1);
    struct row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows)
        return;
    addf(l, "%-32s %12s %14s", "ROUTE", "MATCHED/S", "MATCHED");
    const char *name;
    json_t *v;
    size_t k = 0;
    json_object_foreach((json_t *)r1, name, v)
    {
        uint64_t m1 = jnum(v, "matched");
        uint64_t m0 = r0 ? jnum(json_object_get(r0, name), "matched") : m1;
        struct row *r = &rows[k++];
        r->name = strdup(name);
        r->rate = rate(m1, m0, secs);
        snprintf(r->text, sizeof r->text, "%-32s %12.1f %14" PRIu64, name, r->rate, m1);
        if (!r->name)
            k--;
    }
    rows_emit(l, rows, k);
}

static void view_functions(struct lines *l, const json_t *s1, const json_t *s0,
                           double secs)
{
    const json_t *f1 = json_object_get(s1, "functions");
    const json_t *f0 = s0 ? json_object_get(s0, "functions") : NULL;
    size_t n = json_object_size(f1);
    struct row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows)
        return;
    addf(l, "%-32s %-16s %10s %10s %10s %12s %8s", "FUNCTION", "ID", "CALLS/S", "P99",
         "ERRORS/S", "CALLS", "ERRORS");
    const char *id;
    json_t *v;
    size_t k = 0;
    json_object_foreach((json_t *)f1, id, v)
    {
        const json_t *before = f0 ? json_object_get(f0, id) : NULL;
        uint64_t c1 = jnum(v, "calls"), e1 = jnum(v, "errors");
        uint64_t c0 = before ? jnum(before, "calls") : c1;
        uint64_t e0 = before ? jnum(before, "errors") : e1;
        const char *canon = json_string_value(json_object_get(v, "canonical"));
        char p99[40];
        p99_text(p99, sizeof p99, v, before);
        struct row *r = &rows[k++];
        r->name = strdup(canon ? canon : id);
        r->rate = rate(c1, c0, secs);
        snprintf(r->text, sizeof r->text,
                 "%-32s %-16s %10.1f %10s %10.1f %12" PRIu64 " %8" PRIu64 "%s",
                 canon ? canon : "?", id, r->rate, p99, rate(e1, e0, secs), c1, e1,
                 json_is_true(json_object_get(v, "quarantined")) ? "  quarantined" : "");
        if (!r->name)
            k--;
    }
    rows_emit(l, rows, k);
}

/* The entry of `conns` (conn.list's array) with this id, or NULL. */
static const json_t *conn_by_id(const json_t *conns, json_int_t id)
{
    size_t i;
    json_t *c;
    json_array_foreach(conns, i, c)
    {
        if (json_integer_value(json_object_get(c, "id")) == id)
            return c;
    }
    return NULL;
}

static void view_conns(struct lines *l, const json_t *c1, const json_t *c0, double secs)
{
    const json_t *a1 = json_object_get(c1, "connections");
    const json_t *a0 = c0 ? json_object_get(c0, "connections") : NULL;
    size_t n = json_array_size(a1);
    struct row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows)
        return;
    addf(l, "%-8s %-8s %-6s %-24s %-16s %10s %10s %8s %6s", "CONN", "KIND", "WORKER",
         "PEER", "NAME", "IN/S", "OUT/S", "INFLIGHT", "PAUSED");
    size_t i, k = 0;
    json_t *c;
    json_array_foreach(a1, i, c)
    {
        json_int_t id = json_integer_value(json_object_get(c, "id"));
        const json_t *b = a0 ? conn_by_id(a0, id) : NULL;
        uint64_t in1 = jnum(c, "frames_in"), out1 = jnum(c, "frames_out");
        /* new since the last sample: its frames so far are this interval's */
        uint64_t in0 = b ? jnum(b, "frames_in") : (a0 ? 0 : in1);
        uint64_t out0 = b ? jnum(b, "frames_out") : (a0 ? 0 : out1);
        const char *kind = json_string_value(json_object_get(c, "kind"));
        const json_t *peer = json_object_get(c, "peer");
        const json_t *w = json_object_get(c, "worker");
        const char *name = json_string_value(json_object_get(c, "name"));
        char who[64], wk[16];
        if (json_is_string(peer))
            snprintf(who, sizeof who, "%s", json_string_value(peer));
        else
            snprintf(who, sizeof who,
                     "uid %" JSON_INTEGER_FORMAT " pid %" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(c, "uid")),
                     json_integer_value(json_object_get(c, "pid")));
        if (json_is_integer(w))
            snprintf(wk, sizeof wk, "%" JSON_INTEGER_FORMAT, json_integer_value(w));
        else
            snprintf(wk, sizeof wk, "-");
        struct row *r = &rows[k++];
        char idt[24];
        snprintf(idt, sizeof idt, "%020" JSON_INTEGER_FORMAT, id);
        r->name = strdup(idt);
        r->rate = rate(in1, in0, secs);
        snprintf(r->text, sizeof r->text,
                 "%-8" JSON_INTEGER_FORMAT
                 " %-8s %-6s %-24s %-16.16s %10.1f %10.1f %8" PRIu64 " %6s",
                 id, kind ? kind : "?", wk, who, name ? name : "-", r->rate,
                 rate(out1, out0, secs), jnum(c, "inflight"),
                 json_is_true(json_object_get(c, "paused")) ? "yes" : "no");
        if (!r->name)
            k--;
    }
    rows_emit(l, rows, k);
    if (json_is_true(json_object_get(c1, "truncated")))
        addf(l, "(%zu of %" PRIu64 " connections listed: the rest did not fit a reply)",
             n, jnum(c1, "total"));
}

/* The entry of `members` (func.members' array) for (function id, conn). */
static const json_t *member_by(const json_t *members, const char *id, json_int_t conn)
{
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        const char *mid = json_string_value(json_object_get(m, "id"));
        if (mid && strcmp(mid, id) == 0 &&
            json_integer_value(json_object_get(m, "conn")) == conn)
            return m;
    }
    return NULL;
}

/* Remote members, by calls/s: the function's name from stats, the member's
 * connection, pid or peer, calls/s, in flight / credit, errors, timeouts. */
static void view_members(struct lines *l, const json_t *s1, const json_t *m1,
                         const json_t *m0, double secs)
{
    const json_t *a1 = json_object_get(m1, "members");
    const json_t *a0 = m0 ? json_object_get(m0, "members") : NULL;
    const json_t *funcs = json_object_get(s1, "functions");
    size_t n = json_array_size(a1);
    if (n == 0) {
        addf(l, "REMOTE MEMBERS: none");
        return;
    }
    struct row *rows = calloc(n, sizeof *rows);
    if (!rows)
        return;
    addf(l, "%-40s %-8s %-22s %10s %9s %8s %8s", "REMOTE FUNCTION (MEMBER)", "CONN",
         "PID / PEER", "CALLS/S", "INFLIGHT", "ERRORS", "TIMEOUTS");
    size_t i, k = 0;
    json_t *m;
    json_array_foreach(a1, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        json_int_t conn = json_integer_value(json_object_get(m, "conn"));
        if (!id)
            continue;
        const json_t *f = json_object_get(funcs, id);
        const char *canon = f ? json_string_value(json_object_get(f, "canonical")) : NULL;
        const json_t *b = a0 ? member_by(a0, id, conn) : NULL;
        uint64_t c1 = jnum(m, "calls");
        uint64_t c0 = b ? jnum(b, "calls") : (a0 ? 0 : c1);
        const json_t *peer = json_object_get(m, "peer");
        char who[32];
        if (json_is_string(peer))
            snprintf(who, sizeof who, "%s", json_string_value(peer));
        else
            snprintf(who, sizeof who, "pid %" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(m, "pid")));
        char inflight[48];
        snprintf(inflight, sizeof inflight, "%" PRIu64 "/%" PRIu64, jnum(m, "inflight"),
                 jnum(m, "credit"));
        struct row *r = &rows[k];
        char key[64];
        snprintf(key, sizeof key, "%s.%020" JSON_INTEGER_FORMAT, id, conn);
        if (!(r->name = strdup(key)))
            continue;
        r->rate = rate(c1, c0, secs);
        snprintf(r->text, sizeof r->text,
                 "%-40.40s %-8" JSON_INTEGER_FORMAT " %-22.22s %10.1f %9s %8" PRIu64
                 " %8" PRIu64,
                 canon ? canon : id, conn, who, r->rate, inflight, jnum(m, "errors"),
                 jnum(m, "timeouts"));
        k++;
    }
    rows_emit(l, rows, k);
}

struct sample {
    json_t *stats, *conns, *members;
    uint64_t at_ms;
};

/* The whole view from sample n and, for rates, sample o taken secs
 * earlier (NULL: no rates yet). */
static void view(struct lines *l, const struct sample *n, const struct sample *o,
                 double secs, bool live)
{
    const json_t *s1 = n->stats, *c1 = n->conns, *s0 = o ? o->stats : NULL,
                 *c0 = o ? o->conns : NULL;
    const json_t *cc = json_object_get(s1, "connections");
    addf(l, "fidbusd %s  uptime %" PRIu64 "s  generation %" PRIu64 "  rates over %.1fs%s",
         json_string_value(json_object_get(s1, "version"))
             ? json_string_value(json_object_get(s1, "version"))
             : "?",
         jnum(s1, "uptime_s"), jnum(s1, "generation"), secs, live ? "  (q quits)" : "");
    addf(l,
         "events in %.1f/s  dispatched %.1f/s  errors %.1f/s  unrouted %.1f/s  bad "
         "frames %.1f/s",
         rate(jnum(s1, "received"), s0 ? jnum(s0, "received") : 0, s0 ? secs : 0),
         rate(jnum(s1, "dispatched"), s0 ? jnum(s0, "dispatched") : 0, s0 ? secs : 0),
         rate(jnum(s1, "errors"), s0 ? jnum(s0, "errors") : 0, s0 ? secs : 0),
         rate(jnum(s1, "unrouted"), s0 ? jnum(s0, "unrouted") : 0, s0 ? secs : 0),
         rate(jnum(s1, "bad_frames"), s0 ? jnum(s0, "bad_frames") : 0, s0 ? secs : 0));
    addf(l,
         "connections %" PRIu64 " (unix %" PRIu64 ", tcp %" PRIu64 ", control %" PRIu64
         ")  paused %" PRIu64 "  pool queued %" PRIu64 "  in flight %" PRIu64,
         jnum(cc, "unix") + jnum(cc, "tcp") + jnum(cc, "control"), jnum(cc, "unix"),
         jnum(cc, "tcp"), jnum(cc, "control"), jnum(s1, "paused"),
         jnum(s1, "pool_queued"), jnum(s1, "inflight"));
    addf(l, "%s", "");
    view_routes(l, s1, s0, s0 ? secs : 0);
    addf(l, "%s", "");
    view_functions(l, s1, s0, s0 ? secs : 0);
    addf(l, "%s", "");
    view_members(l, s1, n->members, o ? o->members : NULL, o ? secs : 0);
    addf(l, "%s", "");
    if (c1)
        view_conns(l, c1, c0, c0 ? secs : 0);
}

/* ------------------------------------------------------------ sampling */

static void sample_free(struct sample *s)
{
    json_decref(s->stats);
    json_decref(s->conns);
    json_decref(s->members);
    *s = (struct sample){0};
}

static int sample_take(const struct ctl *ctl, struct fidbus_client *cl, struct sample *s)
{
    sample_free(s);
    int rc = fbctl_control_request(ctl, cl, "top", "stats", NULL, &s->stats, NULL);
    if (rc == EXIT_OK)
        rc = fbctl_control_request(ctl, cl, "top", "conn.list", NULL, &s->conns, NULL);
    if (rc == EXIT_OK)
        rc = fbctl_control_request(ctl, cl, "top", "func.members", NULL, &s->members,
                                   NULL);
    s->at_ms = now_ms();
    return rc;
}

/* Waits up to ms for a key: 'q' (or end of stdin) is true. */
static bool wait_key(int ms, bool keys)
{
    uint64_t until = now_ms() + (uint64_t)ms;
    for (;;) {
        if (got_signal)
            return true;
        uint64_t now = now_ms();
        if (now >= until)
            return false;
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int n = poll(&p, keys ? 1 : 0, (int)(until - now));
        if (n < 0 && errno != EINTR)
            return false;
        if (n > 0) {
            char c;
            ssize_t r = read(STDIN_FILENO, &c, 1);
            if (r == 0) {
                keys = false; /* stdin closed: only signals end it now */
                continue;
            }
            if (r == 1 && (c == 'q' || c == 'Q'))
                return true;
        }
    }
}

static void draw(const struct lines *l, bool tty)
{
    if (!tty) {
        for (size_t i = 0; i < l->n; i++)
            printf("%s\n", l->v[i]);
        fflush(stdout);
        return;
    }
    unsigned rows, cols;
    window_size(&rows, &cols);
    fputs("\033[H", stdout);
    for (size_t i = 0; i < l->n && i < rows; i++) {
        /* the last row without a newline, so the screen does not scroll */
        fprintf(stdout, "%.*s\033[K%s", (int)cols, l->v[i], i + 1 < rows ? "\r\n" : "");
    }
    fputs("\033[J", stdout);
    fflush(stdout);
}

int fbctl_top(struct ctl *ctl, int argc, char **argv)
{
    enum { O_ONCE = 1000 };
    static const struct option opts[] = {
        CTL_GLOBAL_OPTIONS,
        {"once", no_argument, NULL, O_ONCE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool once = false;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (fbctl_global_option(ctl, c))
            continue;
        switch (c) {
        case O_ONCE:
            once = true;
            break;
        case 'h':
            printf("usage: fidbusctl [--socket CONTROL] top [--once]\n");
            return EXIT_OK;
        default:
            return fbctl_bad_option(c, argv);
        }
    }
    if (optind < argc)
        return fbctl_fail(EXIT_USAGE, "top: unexpected argument '%s'", argv[optind]);
    if (ctl->json)
        return fbctl_fail(EXIT_USAGE, "top: --json does not apply (use stats --json and "
                                      "conn list --json)");

    struct fidbus_client *cl = NULL;
    int status = fbctl_control_open(ctl, &cl);
    if (status)
        return status;

    bool tty = !once && isatty(STDOUT_FILENO);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (tty)
        term_enter();

    struct sample prev = {0}, cur = {0};
    status = sample_take(ctl, cl, &prev);
    bool first = true;
    while (status == EXIT_OK && !got_signal) {
        /* In live mode the first screen comes at once, without rates. */
        if (tty && first) {
            struct lines l = {0};
            view(&l, &prev, NULL, 0, true);
            draw(&l, true);
            lines_free(&l);
        }
        first = false;
        if (wait_key(TOP_INTERVAL_MS, tty && tio_saved))
            break;
        status = sample_take(ctl, cl, &cur);
        if (status != EXIT_OK)
            break;
        struct lines l = {0};
        view(&l, &cur, &prev, (double)(cur.at_ms - prev.at_ms) / 1000.0, tty);
        draw(&l, tty);
        lines_free(&l);
        sample_free(&prev);
        prev = cur;
        cur = (struct sample){0};
        if (once)
            break;
        if (!tty)
            printf("\n");
    }
    term_restore();
    if (status != EXIT_OK && tty)
        /* what went wrong was written on the alternate screen, now gone */
        fbctl_fail(status, "top: stopped: no answer from the control socket %s",
                   ctl->socket);
    sample_free(&prev);
    sample_free(&cur);
    fidbus_client_close(cl);
    if (got_signal && status == EXIT_OK && !tty && !once)
        return fbctl_flush(EXIT_OK);
    return fbctl_flush(status);
}
