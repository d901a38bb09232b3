/*
 * The control socket's thread: accept, check the peer, read frames, run
 * one command at a time, write the REPLY. See control.h for the protocol
 * rules and control_cmds.c for the commands.
 *
 * Everything here except fb_control_new/stop/free runs on the control
 * thread, so connection state needs no locks. Commands run synchronously
 * in the read callback: control traffic is a few requests a second from
 * an operator or a script, and running them in order on one thread is what
 * makes each change atomic with respect to the next. The price is that a
 * slow command delays other control clients, never the bus.
 */
#include "control.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include <fidbus/proto.h>

#include "build_config.h"
#include "control_cmds.h"
#include "listener.h"
#include "log.h"

/* Replies pending in the kernel's and libuv's hands before a client's
 * input is held back: one client that does not read its replies cannot
 * make the daemon buffer without bound. */
#define CTL_OUT_HIGH (4u * 1024u * 1024u)
#define CTL_ERR_RESERVE 4200u /* an ERROR frame with a 4 KiB message */

enum {
    K_READING = 1u << 0,     /* uv_read_start is in effect */
    K_PAUSED = 1u << 1,      /* too many reply bytes pending: input on hold */
    K_FLUSH_CLOSE = 1u << 2, /* bad frame length: ERROR sent, then shutdown */
    K_CLOSING = 1u << 3,     /* uv_close called */
};

struct fb_control;

struct ctl_conn {
    struct fb_control *ctl;
    uv_pipe_t pipe;
    uv_shutdown_t sreq;
    struct fidbus_frame_reader rd;
    unsigned flags;
    size_t wpending; /* bytes in unfinished uv_writes */
    uid_t uid;
    bool allowed;
    bool warned; /* the refusal was logged once for this connection */
    struct ctl_conn *prev, *next;
};

struct ctl_write {
    uv_write_t req;
    struct ctl_conn *c;
    struct fidbus_buf buf;
};

struct fb_control {
    struct fb_daemon *d;
    struct fb_ctl_env env;
    int fd; /* listening socket */
    char *path;
    dev_t dev;
    ino_t ino;
    gid_t gid; /* (gid_t)-1 when no group is configured */

    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t async; /* stop */
    uv_poll_t poll;   /* accept */
    bool loop_ok, handles_ok, thread_ok;
    _Atomic bool stop_requested;

    /* control thread only */
    bool closing;
    struct ctl_conn *conns;
    struct fidbus_msg *msg; /* decode scratch, one frame at a time */
};

static void process_input(struct ctl_conn *c);

/* ------------------------------------------------------------- writing */

static void conn_on_close(uv_handle_t *h)
{
    struct ctl_conn *c = h->data;
    struct fb_control *ctl = c->ctl;
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    fidbus_frame_reader_destroy(&c->rd);
    free(c);
}

static void conn_close(struct ctl_conn *c)
{
    if (c->flags & K_CLOSING)
        return;
    c->flags |= K_CLOSING;
    c->flags &= ~K_READING;
    uv_close((uv_handle_t *)&c->pipe, conn_on_close);
}

static void on_write(uv_write_t *req, int status)
{
    struct ctl_write *w = req->data;
    struct ctl_conn *c = w->c;
    c->wpending -= w->buf.len;
    fidbus_buf_free(&w->buf);
    free(w);
    /* On uv_close pending writes end with UV_ECANCELED before the close
     * callback, so c is still valid here. */
    if (c->flags & K_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if ((c->flags & K_PAUSED) && c->wpending < CTL_OUT_HIGH) {
        c->flags &= ~K_PAUSED;
        process_input(c);
    }
}

/* Hands one encoded frame (b's bytes, taken over) to libuv. */
static void send_buf(struct ctl_conn *c, struct fidbus_buf *b)
{
    struct ctl_write *w = calloc(1, sizeof *w);
    if (!w) {
        fidbus_buf_free(b);
        fb_error("control: out of memory answering a client; closing it");
        conn_close(c);
        return;
    }
    w->c = c;
    w->buf = *b;
    *b = (struct fidbus_buf){0};
    w->req.data = w;
    uv_buf_t ub = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &ub, 1, on_write);
    if (rc < 0) {
        fidbus_buf_free(&w->buf);
        free(w);
        conn_close(c);
        return;
    }
    c->wpending += w->buf.len;
}

static void send_error(struct ctl_conn *c, bool has_seq, uint64_t seq, int code,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void send_error(struct ctl_conn *c, bool has_seq, uint64_t seq, int code,
                       const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct fidbus_buf b = {0};
    size_t n = 0;
    if (fidbus_buf_reserve(&b, CTL_ERR_RESERVE) == 0)
        n = fidbus_enc_error(b.data, b.cap, has_seq, seq, (uint64_t)code, msg, false, 0);
    if (!n) {
        fidbus_buf_free(&b);
        fb_error("control: out of memory answering a client; closing it");
        conn_close(c);
        return;
    }
    b.len = n;
    send_buf(c, &b);
}

static void send_reply(struct ctl_conn *c, const struct fidbus_msg *m,
                       const struct fb_ctl_reply *r)
{
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_CODE),
        .type = FIDBUS_MSG_REPLY,
        .code = (uint64_t)r->code,
    };
    if (fidbus_msg_has(m, FIDBUS_K_SEQ)) {
        o.present |= FIDBUS_BIT(FIDBUS_K_SEQ);
        o.seq = m->seq;
    }
    if (r->code) {
        o.present |= FIDBUS_BIT(FIDBUS_K_MESSAGE);
        o.message = r->message;
    }
    if (r->result) {
        o.present |= FIDBUS_BIT(FIDBUS_K_RESULT);
        o.result = (struct fidbus_slice){r->result, r->result_len};
    }
    struct fidbus_buf b = {0};
    int rc = fidbus_msg_encode(&b, &o);
    if (rc < 0) {
        fidbus_buf_free(&b);
        if (rc == -ENOMEM) {
            fb_error("control: out of memory answering a client; closing it");
            conn_close(c);
            return;
        }
        /* -EMSGSIZE: the result does not fit a frame */
        struct fb_ctl_reply big = {.code = FIDBUS_INTERNAL};
        snprintf(big.message, sizeof big.message, "result too large for one frame");
        send_reply(c, m, &big);
        return;
    }
    send_buf(c, &b);
}

/* ------------------------------------------------------------- reading */

static void handle_frame(struct ctl_conn *c, const uint8_t *body, size_t len)
{
    struct fb_control *ctl = c->ctl;
    struct fidbus_msg *m = ctl->msg;
    int rc = fidbus_msg_decode(body, len, ctl->d->cfg->max_depth, m);
    if (rc == 0)
        rc = fidbus_msg_check(m);
    if (rc) {
        send_error(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                   rc > 0 ? rc : FIDBUS_INTERNAL, "%s",
                   m->why ? m->why : fidbus_code_name(rc));
        return;
    }
    if (m->type != FIDBUS_MSG_REQUEST) {
        send_error(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq, FIDBUS_UNSUPPORTED,
                   "message type %llu is not accepted on the control socket "
                   "(send REQUEST)",
                   (unsigned long long)m->type);
        return;
    }
    struct fb_ctl_reply r = {0};
    if (!c->allowed) {
        r.code = FIDBUS_UNAUTHORIZED;
        snprintf(r.message, sizeof r.message,
                 "peer uid %ld is not allowed on the control socket", (long)c->uid);
        if (!c->warned) {
            fb_warn("control: refused a request from uid %ld", (long)c->uid);
            c->warned = true;
        }
        send_reply(c, m, &r);
        return;
    }
    fb_ctl_run(&ctl->env, (const char *)m->command.ptr, m->command.len, m->args, &r);
    send_reply(c, m, &r);
    free(r.result);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ctl_conn *c = h->data;
    uint8_t *p;
    size_t len;
    if (fidbus_frame_reader_space(&c->rd, &p, &len) < 0) {
        buf->base = NULL;
        buf->len = 0; /* libuv reports UV_ENOBUFS */
        return;
    }
    buf->base = (char *)p;
    buf->len = len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ctl_conn *c = s->data;
    if (nread > 0) {
        fidbus_frame_reader_commit(&c->rd, (size_t)nread);
        process_input(c);
        return;
    }
    if (nread < 0)
        conn_close(c); /* EOF, error or out of memory */
}

/* After a bad frame length: discard input until the client closes, so our
 * ERROR is not lost to a reset (the bus does the same). */
static void on_drain_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ctl_conn *c = h->data;
    buf->base = (char *)c->rd.buf;
    buf->len = c->rd.cap;
}

static void on_drain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0)
        conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct ctl_conn *c = req->data;
    if (c->flags & K_CLOSING)
        return;
    c->rd.start = c->rd.end = 0;
    if (status < 0 ||
        uv_read_start((uv_stream_t *)&c->pipe, on_drain_alloc, on_drain_read) < 0)
        conn_close(c);
}

static void process_input(struct ctl_conn *c)
{
    for (;;) {
        if (c->flags & (K_CLOSING | K_FLUSH_CLOSE))
            break;
        if (c->wpending >= CTL_OUT_HIGH) {
            c->flags |= K_PAUSED;
            break;
        }
        const uint8_t *body;
        size_t len;
        int rc = fidbus_frame_next(&c->rd, &body, &len);
        if (rc == 1) {
            handle_frame(c, body, len);
            continue;
        }
        if (rc == 0)
            break;
        /* A bad length cannot be resynchronised: answer and close. */
        if (rc == FIDBUS_TOO_LARGE)
            send_error(c, false, 0, rc, "frame longer than max_frame (%u bytes); closing",
                       (unsigned)c->ctl->d->cfg->max_frame);
        else
            send_error(c, false, 0, FIDBUS_MALFORMED, "zero-length frame; closing");
        if (c->flags & K_CLOSING)
            break;
        c->flags |= K_FLUSH_CLOSE;
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->flags &= ~K_READING;
        /* uv_shutdown waits for the queued ERROR to be written. */
        c->sreq.data = c;
        if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) < 0)
            conn_close(c);
        return;
    }
    if (c->flags & K_CLOSING)
        return;
    bool want = !(c->flags & (K_PAUSED | K_FLUSH_CLOSE));
    if (!want && (c->flags & K_READING)) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->flags &= ~K_READING;
    } else if (want && !(c->flags & K_READING)) {
        if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0)
            conn_close(c);
        else
            c->flags |= K_READING;
    }
}

/* ---------------------------------------------------------- the peer */

/* Is uid (primary gid pgid) a member of gid, by its primary group or a
 * supplementary one from the user database? */
static bool peer_in_group(uid_t uid, gid_t pgid, gid_t gid)
{
    if (pgid == gid)
        return true;
    char buf[4096];
    struct passwd pw, *res = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) != 0 || !res)
        return false;
    if (pw.pw_gid == gid)
        return true;
    int n = 64;
    gid_t *groups = malloc((size_t)n * sizeof *groups);
    if (!groups)
        return false;
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0) {
        gid_t *more = realloc(groups, (size_t)n * sizeof *groups);
        if (!more) {
            free(groups);
            return false;
        }
        groups = more;
        if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
            n = 0;
    }
    bool found = false;
    for (int i = 0; i < n && !found; i++)
        found = groups[i] == gid;
    free(groups);
    return found;
}

static void check_peer(struct fb_control *ctl, struct ctl_conn *c, int fd)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        fb_warn("control: SO_PEERCRED: %s; the peer may not run commands",
                strerror(errno));
        c->uid = (uid_t)-1;
        c->allowed = false;
        return;
    }
    c->uid = cr.uid;
    c->allowed = cr.uid == geteuid() || cr.uid == 0 ||
                 (ctl->gid != (gid_t)-1 && peer_in_group(cr.uid, cr.gid, ctl->gid));
}

/* ----------------------------------------------------------- accepting */

static void conn_new(struct fb_control *ctl, int fd)
{
    struct ctl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->ctl = ctl;
    if (fidbus_frame_reader_init(&c->rd, ctl->d->cfg->max_frame, 4096) < 0) {
        free(c);
        close(fd);
        return;
    }
    int rc = uv_pipe_init(&ctl->loop, &c->pipe, 0);
    if (rc < 0) {
        fb_error("control: cannot adopt a client socket: %s", uv_strerror(rc));
        fidbus_frame_reader_destroy(&c->rd);
        free(c);
        close(fd);
        return;
    }
    c->pipe.data = c;
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    check_peer(ctl, c, fd);
    if ((rc = uv_pipe_open(&c->pipe, fd)) < 0) {
        fb_error("control: cannot adopt a client socket: %s", uv_strerror(rc));
        close(fd);
        conn_close(c);
        return;
    }
    struct fidbus_buf b = {0};
    size_t n = 0;
    if (fidbus_buf_reserve(&b, 128) == 0)
        n = fidbus_enc_hello(b.data, b.cap, "fidbusd/" FIDBUS_VERSION, NULL, 0);
    if (!n) {
        fidbus_buf_free(&b);
        conn_close(c);
        return;
    }
    b.len = n;
    send_buf(c, &b);
    if (!(c->flags & K_CLOSING))
        process_input(c);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct fb_control *ctl = h->data;
    if (status < 0) {
        fb_warn("control: poll error: %s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < 64; i++) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fb_warn("control: accept: %s", strerror(errno));
            return;
        }
        if (ctl->closing) {
            close(fd);
            continue;
        }
        conn_new(ctl, fd);
    }
}

/* ------------------------------------------------------------ the thread */

static void on_async(uv_async_t *a)
{
    struct fb_control *ctl = a->data;
    if (!atomic_load(&ctl->stop_requested) || ctl->closing)
        return;
    ctl->closing = true;
    uv_poll_stop(&ctl->poll);
    uv_close((uv_handle_t *)&ctl->poll, NULL);
    for (struct ctl_conn *c = ctl->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&ctl->async, NULL);
    /* The loop ends once these close callbacks have run. */
}

static void control_thread(void *arg)
{
    struct fb_control *ctl = arg;
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

int fb_control_new(struct fb_daemon *d, struct fb_control **out, char *err, size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    struct fb_control *ctl = calloc(1, sizeof *ctl);
    if (!ctl) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ctl->d = d;
    ctl->fd = -1;
    ctl->gid = (gid_t)-1;
    ctl->env.d = d;
    int rc = -ENOMEM;

    if (cfg->control_group) {
        char buf[4096];
        struct group gr, *res = NULL;
        int e = getgrnam_r(cfg->control_group, &gr, buf, sizeof buf, &res);
        if (e != 0 || !res) {
            snprintf(err, errlen, "[control] group '%s': %s", cfg->control_group,
                     e ? strerror(e) : "no such group");
            fb_control_free(ctl);
            return e ? -e : -ENOENT;
        }
        ctl->gid = gr.gr_gid;
    }

    ctl->msg = malloc(sizeof *ctl->msg);
    ctl->env.listeners = calloc(d->nlisteners ? d->nlisteners : 1, sizeof(char *));
    if (!ctl->msg || !ctl->env.listeners)
        goto oom;
    for (unsigned i = 0; i < d->nlisteners; i++) {
        ctl->env.listeners[i] = strdup(fb_listener_name(d->listeners[i]));
        if (!ctl->env.listeners[i])
            goto oom;
        ctl->env.nlisteners++;
    }

    struct stat st;
    rc = fb_unix_listen(cfg->control_socket, cfg->control_mode, ctl->gid, &ctl->fd, &st,
                        err, errlen);
    if (rc < 0) {
        ctl->fd = -1;
        fb_control_free(ctl);
        return rc;
    }
    ctl->dev = st.st_dev;
    ctl->ino = st.st_ino;
    if (!(ctl->path = strdup(cfg->control_socket))) {
        unlink(cfg->control_socket);
        rc = -ENOMEM;
        goto oom;
    }

    if ((rc = uv_loop_init(&ctl->loop)) < 0)
        goto uv_fail;
    ctl->loop_ok = true;
    if ((rc = uv_async_init(&ctl->loop, &ctl->async, on_async)) < 0)
        goto uv_fail;
    ctl->async.data = ctl;
    if ((rc = uv_poll_init(&ctl->loop, &ctl->poll, ctl->fd)) < 0) {
        uv_close((uv_handle_t *)&ctl->async, NULL);
        goto uv_fail;
    }
    ctl->poll.data = ctl;
    ctl->handles_ok = true;
    if ((rc = uv_poll_start(&ctl->poll, UV_READABLE, on_accept)) < 0 ||
        (rc = uv_thread_create(&ctl->thread, control_thread, ctl)) < 0)
        goto uv_fail;
    ctl->thread_ok = true;
    *out = ctl;
    return 0;

uv_fail:
    snprintf(err, errlen, "control socket %s: %s", cfg->control_socket, uv_strerror(rc));
    fb_control_free(ctl);
    return rc;
oom:
    snprintf(err, errlen, "control socket: out of memory");
    fb_control_free(ctl);
    return -ENOMEM;
}

void fb_control_stop(struct fb_control *ctl)
{
    if (!ctl || atomic_exchange(&ctl->stop_requested, true))
        return;
    /* The file goes first, so no new client finds a socket nobody serves. */
    if (ctl->path)
        fb_unix_unlink_own(ctl->path, ctl->dev, ctl->ino);
    if (ctl->thread_ok)
        uv_async_send(&ctl->async);
}

struct fb_control *fb_control_free(struct fb_control *ctl)
{
    if (!ctl)
        return NULL;
    fb_control_stop(ctl);
    if (ctl->thread_ok) {
        uv_thread_join(&ctl->thread);
    } else if (ctl->handles_ok) {
        /* Never ran: close the handles on this thread. */
        uv_close((uv_handle_t *)&ctl->poll, NULL);
        uv_close((uv_handle_t *)&ctl->async, NULL);
    }
    if (ctl->loop_ok) {
        uv_run(&ctl->loop, UV_RUN_DEFAULT);
        int rc = uv_loop_close(&ctl->loop);
        if (rc < 0)
            fb_warn("control loop closed with handles left: %s", uv_strerror(rc));
    }
    if (ctl->fd >= 0)
        close(ctl->fd);
    for (size_t i = 0; i < ctl->env.nlisteners; i++)
        free(ctl->env.listeners[i]);
    free(ctl->env.listeners);
    free(ctl->msg);
    free(ctl->path);
    free(ctl);
    return NULL;
}
