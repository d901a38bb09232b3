/*
 * log.so: the shipped `fidbus.log@1.0.0` handler (signature `event:any`,
 * inline). It writes one line per event to a file or stderr:
 *
 *     gen=3 event=order.created seq=7 tags={"user":"u1"} payload={"a": 1} uid=1000
 * pid=4242 conn=7
 *
 * gen is the generation of the route table that routed the event, seq the
 * publisher's sequence number; tags are always written as a JSON object.
 * uid, pid and conn say who published it (struct fidbus_event): -1, -1
 * for a TCP peer or a plugin's host->publish, conn 0 for the latter.
 * The payload is rendered from its raw CBOR bytes (cbor_text.c) as RFC 8949
 * diagnostic notation (`format = diag`, the default) or JSON (`format =
 * json`); an event without a payload has no `payload=` field.
 *
 * Config keys ([plugin NAME] section):
 *   file    "-" or unset: stderr; otherwise a path, opened
 *           O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW with mode 0644 (created
 *           if missing; a symbolic link there is refused).
 *   format  "diag" (default) or "json".
 *
 * Threads: the handler is inline and may run on several I/O threads at
 * once. Each line is built in a buffer of the calling thread and written
 * with one write(2) on an O_APPEND descriptor, so lines never interleave
 * (on a pipe, only lines up to PIPE_BUF bytes are atomic) and a reader
 * sees the line as soon as the handler returns. The per-thread buffer grows
 * only when a line is longer than any before it, so the steady state
 * allocates nothing. Each thread's state is also on the instance's list
 * (the lock is taken only when a thread first logs), so fini frees them
 * all.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fidbus/plugin.h>

#include "cbor_text.h"

#define INITIAL_BUF 4096

/* One per thread that logs through this instance. */
struct tstate {
    struct fb_ct ct;
    struct tstate *next; /* the instance's list */
};

struct log_ctx {
    const struct fidbus_host *host;
    uint64_t serial; /* tells this instance's thread states apart */
    int fd;
    bool own_fd;
    bool json;
    pthread_mutex_t lock; /* guards states (first use per thread only) */
    struct tstate *states;
};

/* The calling thread's state and the instance it belongs to. The pair is
 * compared without dereferencing tls, which may have been freed by the
 * fini of an earlier instance. */
static __thread struct tstate *tls;
static __thread const void *tls_owner;
static __thread uint64_t tls_serial;
static _Atomic uint64_t next_serial = 1;

/* ---- the plugin --------------------------------------------------------- */

static struct tstate *state_for(struct log_ctx *c)
{
    if (tls && tls_owner == c && tls_serial == c->serial)
        return tls;
    struct tstate *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->ct.buf = malloc(INITIAL_BUF);
    if (!s->ct.buf) {
        free(s);
        return NULL;
    }
    s->ct.cap = INITIAL_BUF;
    pthread_mutex_lock(&c->lock);
    s->next = c->states;
    c->states = s;
    pthread_mutex_unlock(&c->lock);
    tls = s;
    tls_owner = c;
    tls_serial = c->serial;
    return s;
}

static int log_event(void *ctx, const struct fidbus_event *ev)
{
    struct log_ctx *c = ctx;
    struct tstate *t = state_for(c);
    if (!t)
        return -ENOMEM;
    struct fb_ct *s = &t->ct;

    s->len = 0;
    s->oom = s->failed = false;
    /* an event id is at most 255 bytes, so the head always fits */
    char head[320];
    int n = snprintf(head, sizeof head, "gen=%" PRIu64 " event=%s seq=%" PRIu64 " tags={",
                     ev->generation, ev->id, ev->seq);
    fb_ct_put(s, head, n < (int)sizeof head ? (size_t)n : sizeof head - 1);
    for (size_t i = 0; i < ev->ntags; i++) {
        if (i)
            fb_ct_putc(s, ',');
        fb_ct_putc(s, '"');
        fb_ct_put_escaped(s, (const uint8_t *)ev->tags[i].key, strlen(ev->tags[i].key));
        fb_ct_puts(s, "\":\"");
        fb_ct_put_escaped(s, (const uint8_t *)ev->tags[i].value,
                          strlen(ev->tags[i].value));
        fb_ct_putc(s, '"');
    }
    fb_ct_putc(s, '}');
    if (ev->payload && ev->payload_len > 0) {
        fb_ct_puts(s, " payload=");
        fb_ct_render(s, ev->payload, ev->payload_len, c->json);
    }
    /* Appended last so the fields before keep their place for readers of
     * older lines. */
    n = snprintf(head, sizeof head, " uid=%" PRId64 " pid=%" PRId64 " conn=%" PRIu64 "\n",
                 ev->uid, ev->pid, ev->conn);
    fb_ct_put(s, head, n < (int)sizeof head ? (size_t)n : sizeof head - 1);
    if (s->oom)
        return -ENOMEM;

    /* One write: O_APPEND places it atomically at the end of the file. A
     * short write only happens on pipes and full disks; finish it rather
     * than lose the tail. */
    size_t off = 0;
    while (off < s->len) {
        ssize_t w = write(c->fd, s->buf + off, s->len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)w;
    }
    return 0;
}

static void log_fini(void *ctx)
{
    struct log_ctx *c = ctx;
    if (!c)
        return;
    /* Every handler call has returned: no thread uses its state now. */
    for (struct tstate *s = c->states, *next; s; s = next) {
        next = s->next;
        free(s->ct.buf);
        free(s);
    }
    if (tls_owner == c)
        tls = NULL, tls_owner = NULL;
    if (c->own_fd)
        close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A refusal says why through host->set_error: the reason then is the
 * load's error (REPLY, start-up line), not a separate log line. */
static int log_init(const struct fidbus_host *host, void **ctx)
{
    struct log_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->host = host;
    c->serial = atomic_fetch_add(&next_serial, 1);
    c->fd = STDERR_FILENO;
    pthread_mutex_init(&c->lock, NULL);

    const char *format = host->config(host->handle, "format");
    if (!format || strcmp(format, "diag") == 0) {
        c->json = false;
    } else if (strcmp(format, "json") == 0) {
        c->json = true;
    } else {
        host->set_error(host->handle, "format = %s: want diag or json", format);
        log_fini(c);
        return -EINVAL;
    }

    const char *file = host->config(host->handle, "file");
    if (file && strcmp(file, "-") != 0) {
        if (!*file) {
            host->set_error(host->handle, "file is empty (use - for stderr)");
            log_fini(c);
            return -EINVAL;
        }
        /* Not through a symbolic link: the daemon may run as root, and a
         * link planted at the path (a dangling one included, which
         * O_CREAT would follow) would make it append to, or create, a
         * file of the link owner's choosing. */
        int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            int e = errno;
            host->set_error(host->handle, "cannot open %s: %s", file,
                            e == ELOOP ? "it is a symbolic link (not followed; give the "
                                         "file's own path)"
                                       : strerror(e));
            log_fini(c);
            return -e;
        }
        c->fd = fd;
        c->own_fd = true;
    }
    *ctx = c;
    return 0;
}

static const struct fidbus_function log_functions[] = {
    {.ns = "fidbus",
     .name = "log",
     .version = "1.0.0",
     .signature = "event:any",
     .flags = 0,
     .handle = log_event},
};

FIDBUS_PLUGIN_EXPORT const struct fidbus_plugin fidbus_plugin = {
    .abi = FIDBUS_PLUGIN_ABI,
    .name = "log",
    .version = "1.0.0",
    .description = "writes every event as one line (diagnostic notation or JSON)",
    .init = log_init,
    .fini = log_fini,
    .functions = log_functions,
    .nfunctions = 1,
};
