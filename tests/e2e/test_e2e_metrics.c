/*
 * End-to-end tests of [metrics] listen (README "Operations", fidbusd.conf(5)):
 * /metrics fetched over HTTP with a plain socket and parsed by the Python
 * Prometheus client's text parser (python3-prometheus-client, the official
 * client library); the latency histogram's _count equals the function's
 * calls; /healthz; 404 and 405; a port already taken stops start-up with
 * one line and exit 1; no listener without the section. The Grafana
 * dashboard (packaging/grafana/fidbus.json) is checked against a real
 * /metrics output here too.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e/harness.h"

#define PYTHON "/usr/bin/python3"
#define COUNT_ALL FB_E2E_COUNT "[route all]\nevent = *\nto = fidbus.count\n"
#define METRICS_ANY "[metrics]\nlisten = 127.0.0.1:0\n"

/* The port of status' "metrics: 127.0.0.1:PORT". */
static unsigned metrics_port(struct fb_e2e *t)
{
    char *out = fb_e2e_ctl(t, 0, NULL, "status", (const char *)NULL);
    const char *p = strstr(out, "\nmetrics: 127.0.0.1:");
    ck_assert_msg(p, "no metrics address in status:\n%s", out);
    unsigned port = (unsigned)strtoul(p + strlen("\nmetrics: 127.0.0.1:"), NULL, 10);
    ck_assert_uint_gt(port, 0);
    free(out);
    return port;
}

struct http_reply {
    int status;
    char *head; /* status line and headers */
    char *body;
};

static void http_reply_free(struct http_reply *r)
{
    free(r->head);
    r->head = r->body = NULL;
}

/* One HTTP/1.0 request (the server closes after it), the whole answer read
 * before a generous deadline. */
static struct http_reply http(unsigned port, const char *method, const char *path,
                              const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect :%u: %s",
                  port, strerror(errno));
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n%s",
                     method, path, body ? "Content-Length: 5\r\n" : "", body ? body : "");
    ck_assert_int_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    uint64_t deadline = fb_e2e_now_ms() + 20000;
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t r = fb_e2e_recv_by(fd, buf + len, cap - len - 1, deadline);
        ck_assert_msg(r >= 0, "reading the HTTP answer: %s", strerror((int)-r));
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    struct http_reply rep = {0};
    ck_assert_msg(sscanf(buf, "HTTP/1.%*d %d", &rep.status) == 1, "not HTTP: %s", buf);
    char *sep = strstr(buf, "\r\n\r\n");
    ck_assert_msg(sep, "no end of head: %s", buf);
    *sep = '\0';
    rep.head = buf;
    rep.body = sep + 4;
    return rep;
}

/* Runs python3 -c script with args; returns its stdout, asserts status 0. */
static char *python(struct fb_e2e *t, const char *script, const char *a1, const char *a2)
{
    const char *argv[] = {PYTHON, "-c", script, a1, a2, NULL};
    char *out = NULL, *err = NULL;
    int st = fb_e2e_run(t, argv, &out, &err);
    ck_assert_msg(st == 0, "python3 failed (0x%x):\n%s%s", st, out, err);
    free(err);
    return out;
}

/*
 * Parses the exposition file argv[1] with prometheus_client's parser and
 * prints one line per histogram series of fidbus_function_duration_seconds:
 * "canonical count sum buckets_ok", and each calls_total value.
 */
static const char parse_py[] =
    "import sys, math\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "fams = {f.name: f for f in "
    "text_string_to_metric_families(open(sys.argv[1]).read())}\n"
    "h = fams['fidbus_function_duration_seconds']\n"
    "assert h.type == 'histogram', h.type\n"
    "series = {}\n"
    "for s in h.samples:\n"
    "    k = s.labels['canonical']\n"
    "    d = series.setdefault(k, {'b': []})\n"
    "    if s.name.endswith('_bucket'): d['b'].append((float(s.labels['le']), s.value))\n"
    "    elif s.name.endswith('_count'): d['count'] = s.value\n"
    "    elif s.name.endswith('_sum'): d['sum'] = s.value\n"
    "for k, d in sorted(series.items()):\n"
    "    b = d['b']\n"
    "    ok = b == sorted(b) and all(b[i][1] <= b[i+1][1] for i in range(len(b)-1))\n"
    "    ok = ok and b[-1][0] == math.inf and b[-1][1] == d['count']\n"
    "    print('hist', k, int(d['count']), repr(d['sum']), 'cumulative' if ok else "
    "'BAD')\n"
    "for s in fams['fidbus_function_calls'].samples:\n"
    "    print('calls', s.labels['canonical'], int(s.value))\n"
    "for s in fams['fidbus_build_info'].samples:\n"
    "    print('build', s.labels['version'], int(s.value))\n"
    "for s in fams['fidbus_connections'].samples:\n"
    "    print('conns', s.labels['kind'], int(s.value))\n"
    "for n in ('fidbus_uptime_seconds', 'fidbus_connections_paused', "
    "'fidbus_pool_queued',"
    " 'fidbus_inflight_calls'):\n"
    "    print('gauge', n, fams[n].type, int(fams[n].samples[0].value))\n";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* N acked publishes, then /metrics through the official parser: the
 * histogram counts every call, _sum > 0, buckets cumulative up to +Inf. */
START_TEST(test_e2e_metrics_histogram_counts_every_call)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    unsigned port = metrics_port(t);
    struct fidbus_client *c = fb_e2e_connect(t);
    enum { N = 237 }; /* not a multiple of the sampling period */
    for (int i = 0; i < N; i++)
        fb_e2e_publish_ack(c, "metrics.hist", 1);

    struct http_reply r = http(port, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.head, "text/plain; version=0.0.4"), "%s", r.head);
    const char *file = fb_e2e_file(t, "metrics.txt");
    write_file(file, r.body);
    char *out = python(t, parse_py, file, NULL);
    char want[160];
    snprintf(want, sizeof want, "hist fidbus.count@1.0.0 %d ", N);
    const char *h = strstr(out, want);
    ck_assert_msg(h, "no histogram with count %d:\n%s", N, out);
    double sum = strtod(h + strlen(want), NULL);
    ck_assert_msg(sum > 0, "_sum is %g:\n%s", sum, out);
    ck_assert_msg(strstr(h, " cumulative\n"), "buckets not cumulative:\n%s", out);
    snprintf(want, sizeof want, "calls fidbus.count@1.0.0 %d\n", N);
    ck_assert_msg(strstr(out, want), "calls differ from the histogram:\n%s", out);
    ck_assert_msg(strstr(out, "build 0.") || strstr(out, "build 1."), "%s", out);
    ck_assert_msg(strstr(out, "conns unix 1\n"), "%s", out);
    ck_assert_msg(strstr(out, "gauge fidbus_pool_queued gauge 0\n"), "%s", out);
    ck_assert_msg(strstr(out, "gauge fidbus_inflight_calls gauge 0\n"), "%s", out);
    ck_assert_msg(strstr(out, "gauge fidbus_connections_paused gauge 0\n"), "%s", out);
    free(out);
    http_reply_free(&r);

    /* The same rendering as fidbusctl's, family for family. */
    char *ctl = fb_e2e_ctl(t, 0, NULL, "stats", "--prometheus", (const char *)NULL);
    ck_assert_msg(strstr(ctl, "# TYPE fidbus_function_duration_seconds histogram\n"),
                  "%s", ctl);
    free(ctl);

    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* /healthz, HEAD, an unknown path, a POST with a body, a query string. */
START_TEST(test_e2e_metrics_paths_and_methods)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    unsigned port = metrics_port(t);

    struct http_reply r = http(port, "GET", "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "ok\n");
    http_reply_free(&r);

    r = http(port, "HEAD", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "");
    http_reply_free(&r);

    r = http(port, "GET", "/metrics?x=1", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "fidbus_received_total"), "no counters in /metrics?x=1");
    http_reply_free(&r);

    r = http(port, "GET", "/", NULL);
    ck_assert_int_eq(r.status, 404);
    http_reply_free(&r);
    r = http(port, "GET", "/metricsx", NULL);
    ck_assert_int_eq(r.status, 404);
    http_reply_free(&r);

    r = http(port, "POST", "/metrics", "hello");
    ck_assert_int_eq(r.status, 405);
    ck_assert_msg(strstr(r.head, "Allow: GET, HEAD"), "%s", r.head);
    http_reply_free(&r);
    r = http(port, "PUT", "/healthz", "hello");
    ck_assert_int_eq(r.status, 405);
    http_reply_free(&r);

    /* still serving the bus after all that */
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "metrics.after", 1);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

struct scraper {
    unsigned port;
    int rounds;
};

static void *scrape(void *arg)
{
    struct scraper *s = arg;
    for (int i = 0; i < s->rounds; i++) {
        struct http_reply r = http(s->port, "GET", "/metrics", NULL);
        ck_assert_int_eq(r.status, 200);
        http_reply_free(&r);
    }
    return NULL;
}

/* Scrapes while events are dispatched (TSan: the HTTP thread reads what
 * the workers write), then the totals agree once it is quiet. */
START_TEST(test_e2e_metrics_scrape_under_load)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    struct scraper s = {.port = metrics_port(t), .rounds = 20};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, scrape, &s), 0);
    struct fidbus_client *c = fb_e2e_connect(t);
    enum { N = 4000 };
    for (int i = 0; i < 8; i++)
        fb_e2e_publish_n(c, "metrics.load", N / 8);
    fb_e2e_ping(c);
    ck_assert_int_eq(pthread_join(th, NULL), 0);

    struct http_reply r = http(s.port, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *file = fb_e2e_file(t, "metrics.txt");
    write_file(file, r.body);
    char *out = python(t, parse_py, file, NULL);
    char want[160];
    snprintf(want, sizeof want, "hist fidbus.count@1.0.0 %d ", N);
    ck_assert_msg(strstr(out, want), "%s", out);
    free(out);
    http_reply_free(&r);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* A port someone else holds: one line naming the key and the reason,
 * exit status 1, and READY never sent. */
START_TEST(test_e2e_metrics_bind_conflict)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    socklen_t sl = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    unsigned port = ntohs(a.sin_port);

    char sections[256];
    snprintf(sections, sizeof sections, COUNT_ALL "[metrics]\nlisten = 127.0.0.1:%u\n",
             port);
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, sections);
    int st = fb_e2e_start_fail(t, NULL);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status 0x%x", st);
    char *err = fb_e2e_stderr(t);
    char want[128];
    snprintf(want, sizeof want, "[metrics] listen = 127.0.0.1:%u: Address already in use",
             port);
    ck_assert_msg(strstr(err, want), "expected '%s' in:\n%s", want, err);
    int lines = 0;
    for (const char *p = err; (p = strstr(p, "error")); p++)
        lines++;
    ck_assert_msg(lines == 1, "the failure is not one line:\n%s", err);
    free(err);
    close(fd);
    fb_e2e_free(t);
}
END_TEST

/* Bad values are config errors with FILE:LINE. */
START_TEST(test_e2e_metrics_config_errors)
{
    static const struct {
        const char *value, *want;
    } cases[] = {
        {"9464", "must be HOST:PORT"},
        {"127.0.0.1:70000", "port must be a number from 0 (any free port) to 65535"},
        {"metrics.example:9464", "names are not resolved"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sections[256];
        snprintf(sections, sizeof sections, COUNT_ALL "[metrics]\nlisten = %s\n",
                 cases[i].value);
        struct fb_e2e *t = fb_e2e_new();
        fb_e2e_config(t, NULL, sections);
        fb_e2e_start_fail_says(t, cases[i].want);
        char *err = fb_e2e_stderr(t);
        char where[200];
        snprintf(where, sizeof where, "%s:", t->conf);
        ck_assert_msg(strstr(err, where), "no FILE:LINE in: %s", err);
        free(err);
        fb_e2e_free(t);
    }
    struct fb_e2e *t = fb_e2e_new();
    fb_e2e_config(t, NULL, COUNT_ALL "[metrics]\nport = 1\n");
    fb_e2e_start_fail_says(t, "unknown key 'port' in [metrics] (known: listen)");
    fb_e2e_free(t);
}
END_TEST

/* The socket inodes of pid's descriptors, as "socket:[N]" strings. */
static bool has_tcp_listener(pid_t pid)
{
    char path[64], link[300], inodes[4096] = "";
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    ck_assert_ptr_nonnull(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        char fdp[400];
        snprintf(fdp, sizeof fdp, "%s/%s", path, e->d_name);
        ssize_t n = readlink(fdp, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1) {
            size_t l = strlen(inodes);
            snprintf(inodes + l, sizeof inodes - l, " %lu ", ino);
        }
    }
    closedir(dir);
    bool found = false;
    const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t i = 0; i < 2 && !found; i++) {
        char *tab = fb_e2e_read(tables[i], NULL);
        if (!tab)
            continue;
        for (char *line = strtok(tab, "\n"); line && !found; line = strtok(NULL, "\n")) {
            unsigned st;
            unsigned long ino;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, "%*s %*s %*s %x %*s %*s %*s %*s %*s %lu", &st, &ino) != 2)
                continue;
            char key[32];
            snprintf(key, sizeof key, " %lu ", ino);
            if (st == 0x0A && strstr(inodes, key))
                found = true;
        }
        free(tab);
    }
    return found;
}

/* Without [metrics] nothing listens on TCP and status has no address;
 * with it, the daemon has a listening TCP socket (the check can fail). */
START_TEST(test_e2e_metrics_off_by_default)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL);
    ck_assert_msg(!has_tcp_listener(t->pid), "fidbusd listens on TCP without [metrics]");
    char *out = fb_e2e_ctl(t, 0, NULL, "status", (const char *)NULL);
    ck_assert_msg(!strstr(out, "metrics"), "%s", out);
    free(out);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);

    t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    ck_assert_msg(has_tcp_listener(t->pid), "no TCP listener with [metrics]");
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/*
 * packaging/grafana/fidbus.json parses, and every fidbus_* series its
 * queries name is in a real /metrics output (a _bucket/_sum/_count name
 * where the family is a histogram).
 */
static const char grafana_py[] =
    "import sys, json, re\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "dash = json.load(open(sys.argv[1]))\n"
    "names = set()\n"
    "for f in text_string_to_metric_families(open(sys.argv[2]).read()):\n"
    "    for s in f.samples: names.add(s.name)\n"
    "exprs = []\n"
    "def walk(o):\n"
    "    if isinstance(o, dict):\n"
    "        for k, v in o.items():\n"
    "            if k == 'expr' and isinstance(v, str): exprs.append(v)\n"
    "            else: walk(v)\n"
    "    elif isinstance(o, list):\n"
    "        for v in o: walk(v)\n"
    "walk(dash)\n"
    "assert exprs, 'no queries'\n"
    "used = set(m for e in exprs for m in re.findall(r'\\bfidbus_[a-z_]+', e))\n"
    "missing = sorted(used - names)\n"
    "print('queries', len(exprs), 'metrics', len(used))\n"
    "if missing: print('missing', ' '.join(missing)); sys.exit(1)\n";

START_TEST(test_e2e_metrics_grafana_dashboard)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    unsigned port = metrics_port(t);
    struct fidbus_client *c = fb_e2e_connect(t);
    fb_e2e_publish_ack(c, "metrics.dash", 1);
    struct http_reply r = http(port, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *file = fb_e2e_file(t, "metrics.txt");
    write_file(file, r.body);
    const char *src = getenv("FIDBUS_SOURCE_DIR");
    ck_assert_ptr_nonnull(src);
    char dash[512];
    snprintf(dash, sizeof dash, "%s/packaging/grafana/fidbus.json", src);
    char *out = python(t, grafana_py, dash, file);
    ck_assert_msg(strstr(out, "queries "), "%s", out);
    free(out);
    http_reply_free(&r);
    fidbus_client_close(c);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

/* config.export keeps [metrics] as written (port 0 stays "any"), and a
 * reload that changes it says a restart is needed and keeps serving. */
START_TEST(test_e2e_metrics_export_and_reload)
{
    struct fb_e2e *t = fb_e2e_up(NULL, COUNT_ALL METRICS_ANY);
    unsigned port = metrics_port(t);
    char *out = fb_e2e_ctl(t, 0, NULL, "config", "export", (const char *)NULL);
    ck_assert_msg(strstr(out, "\n[metrics]\nlisten = 127.0.0.1:0\n"), "%s", out);
    free(out);

    fb_e2e_config(t, NULL, COUNT_ALL);
    out = fb_e2e_ctl(t, 0, NULL, "--json", "config", "reload", (const char *)NULL);
    ck_assert_msg(strstr(out, "\"restart_needed\":[\"metrics.listen\"]"), "%s", out);
    free(out);
    /* the running listener stays until the restart */
    struct http_reply r = http(port, "GET", "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    http_reply_free(&r);
    fb_e2e_stop_ok(t);
    fb_e2e_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e.metrics");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_e2e_metrics_histogram_counts_every_call);
    tcase_add_test(tc, test_e2e_metrics_paths_and_methods);
    tcase_add_test(tc, test_e2e_metrics_scrape_under_load);
    tcase_add_test(tc, test_e2e_metrics_bind_conflict);
    tcase_add_test(tc, test_e2e_metrics_config_errors);
    tcase_add_test(tc, test_e2e_metrics_off_by_default);
    tcase_add_test(tc, test_e2e_metrics_grafana_dashboard);
    tcase_add_test(tc, test_e2e_metrics_export_and_reload);
    suite_add_tcase(s, tc);
    return fb_e2e_main(s);
}
