/*
 * [metrics] listen: /metrics and /healthz over HTTP (metrics_http.h).
 *
 * libmicrohttpd parses HTTP; this file only answers. The listening socket
 * is made here, not by libmicrohttpd, so a bind failure says why
 * (errno) on the one line fidbusd prints before it exits. Limits: at most
 * METRICS_CONN_MAX connections (METRICS_PER_IP each address), each closed
 * after METRICS_TIMEOUT_S idle seconds, METRICS_MEM bytes of request
 * head; only GET and HEAD, no request body, and any other path is 404.
 *
 * libmicrohttpd is loaded with dlopen when a listener is configured, not
 * linked: Debian's is built with GnuTLS, and linking it mapped GnuTLS,
 * p11-kit, nettle, gmp and more into every fidbusd, about 2.5 MiB of idle
 * RSS for a listener that is off by default. The calls go through `mhd`,
 * whose members have the header's own types.
 */
#include "control/metrics_http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "config/config.h"
#include "control/control_cmds.h"

#include "cbor_json.h"
#include "prom.h"

/* The soname the headers describe (Debian 12: libmicrohttpd12). */
#define MHD_SONAME "libmicrohttpd.so.12"

static struct {
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
} mhd;

/* Loads libmicrohttpd once (kept for the process's life). 0, or -ENOENT
 * with the reason in err. Called on the thread that starts the daemon,
 * before the HTTP thread exists. */
static int mhd_load(char *err, size_t errlen)
{
    static void *lib;
    if (lib)
        return 0;
    void *h = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fb_set_err(err, errlen, "[metrics] needs %s (Debian: libmicrohttpd12): %s",
                   MHD_SONAME, dlerror());
        return -ENOENT;
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {
        {"MHD_create_response_from_buffer", (void **)&mhd.create_response_from_buffer},
        {"MHD_add_response_header", (void **)&mhd.add_response_header},
        {"MHD_queue_response", (void **)&mhd.queue_response},
        {"MHD_destroy_response", (void **)&mhd.destroy_response},
        {"MHD_start_daemon", (void **)&mhd.start_daemon},
        {"MHD_stop_daemon", (void **)&mhd.stop_daemon},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            fb_set_err(err, errlen, "[metrics]: %s has no %s", MHD_SONAME, syms[i].name);
            dlclose(h);
            return -ENOENT;
        }
    }
    lib = h;
    return 0;
}

#define METRICS_CONN_MAX 16u
#define METRICS_PER_IP 8u
#define METRICS_TIMEOUT_S 10u
#define METRICS_MEM (32u * 1024u)

struct fb_metrics {
    struct fb_daemon *d;
    struct fb_ctl_env env; /* no listeners: stats does not read them */
    struct MHD_Daemon *mhd;
    char addr[INET6_ADDRSTRLEN + 8];
};

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type,
                              char *body, size_t len, bool owned)
{
    struct MHD_Response *r = mhd.create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = mhd.queue_response(c, status, r);
    mhd.destroy_response(r);
    return ok;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *s)
{
    return answer(c, status, "text/plain; charset=utf-8", (char *)s, strlen(s), false);
}

/* The stats command's result, rendered. */
static enum MHD_Result metrics(struct fb_metrics *m, struct MHD_Connection *c)
{
    struct fb_ctl_reply rep;
    fb_ctl_run(&m->env, "stats", 5, (struct fidbus_slice){0}, &rep);
    if (rep.code) {
        fb_warn("metrics: stats failed: %s", rep.message);
        free(rep.result);
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "stats failed\n");
    }
    char why[160];
    json_t *j = fb_cbor_json(rep.result, rep.result_len, why, sizeof why);
    free(rep.result);
    if (!j) {
        fb_warn("metrics: %s", why);
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "stats failed\n");
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        fb_prom_render(f, j);
        if (fclose(f) != 0) {
            free(buf);
            buf = NULL;
        }
    }
    json_decref(j);
    if (!buf)
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, len,
                  true);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    struct fb_metrics *m = cls;
    (void)version, (void)upload, (void)state;
    /* Answered on the first call, before any body is read: a request
     * with a body is refused, and libmicrohttpd then closes the
     * connection rather than read it. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (*upload_size)
        return text(c, MHD_HTTP_BAD_REQUEST, "no request body\n");
    if (strcmp(url, "/metrics") == 0)
        return metrics(m, c);
    if (strcmp(url, "/healthz") == 0)
        return atomic_load(&m->d->stopping)
                   ? text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n")
                   : text(c, MHD_HTTP_OK, "ok\n");
    return text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics and /healthz are served\n");
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    fb_warn_limited("metrics: %s", line);
}

/* The bound socket, or -errno. */
static int bind_listen(const char *host, uint16_t port, bool *v6, uint16_t *bound)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        sl = sizeof *a4;
        *v6 = false;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        sl = sizeof *a6;
        *v6 = true;
    } else {
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (*v6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *bound = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    return fd;
}

int fb_metrics_start(struct fb_daemon *d, struct fb_metrics **out, char *err,
                     size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    *out = NULL;
    if (!cfg->metrics_listen)
        return 0;
    int rc = mhd_load(err, errlen);
    if (rc < 0)
        return rc;
    struct fb_metrics *m = calloc(1, sizeof *m);
    if (!m) {
        fb_set_err(err, errlen, "[metrics] listen: out of memory");
        return -ENOMEM;
    }
    m->d = d;
    m->env.d = d;
    bool v6 = false;
    uint16_t port = cfg->metrics_port;
    int fd = bind_listen(cfg->metrics_host, cfg->metrics_port, &v6, &port);
    if (fd < 0) {
        fb_set_err(err, errlen, "[metrics] listen = %s: %s", cfg->metrics_listen,
                   strerror(-fd));
        free(m);
        return fd;
    }
    snprintf(m->addr, sizeof m->addr, v6 ? "[%s]:%u" : "%s:%u", cfg->metrics_host,
             (unsigned)port);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    m->mhd = mhd.start_daemon(
        flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, METRICS_CONN_MAX,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, METRICS_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
        METRICS_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_MEM,
        MHD_OPTION_END);
    if (!m->mhd) {
        fb_set_err(err, errlen, "[metrics] listen = %s: cannot start the HTTP server",
                   cfg->metrics_listen);
        free(m);
        return -EIO;
    }
    fb_info("metrics on http://%s/metrics", m->addr);
    *out = m;
    return 0;
}

const char *fb_metrics_addr(const struct fb_metrics *m)
{
    return m ? m->addr : NULL;
}

void fb_metrics_stop(struct fb_metrics *m)
{
    if (!m || !m->mhd)
        return;
    /* joins the thread and closes the listening socket it was given */
    mhd.stop_daemon(m->mhd);
    m->mhd = NULL;
}

struct fb_metrics *fb_metrics_free(struct fb_metrics *m)
{
    fb_metrics_stop(m);
    free(m);
    return NULL;
}
