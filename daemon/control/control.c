/*
 * The control socket's thread: accept, check the peer, read frames, run
 * one command at a time, write the REPLY. See control.h for the protocol
 * rules and control_cmds.c for the commands; the socket's reading,
 * writing and error close are stream.c's, shared with bus connections.
 *
 * Everything here except fb_control_new/stop/free runs on the control
 * thread, so connection state needs no locks. Commands run synchronously
 * in the read callback: control traffic is a few requests a second from
 * an operator or a script, and running them in order on one thread is what
 * makes each change atomic with respect to the next. The price is that a
 * slow command delays other control clients, never the bus.
 */
#include "control/control.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>
#include <uv.h>

#include <fidbus/proto.h>

#include "base/clock.h"
#include "base/counters.h"
#include "base/daemon_t.h"
#include "base/err.h"
#include "base/log.h"
#include "bus/conn_list.h"
#include "bus/listener.h"
#include "bus/nofd.h"
#include "bus/stream.h"
#include "config/config.h"
#include "control/control_cmds.h"
#include "routing/dispatch.h"
#include "routing/tap.h"
#include "service/activation.h"

/* Reply bytes the kernel has not taken yet before a client's input is
 * held back: one client that does not read its replies cannot make the
 * daemon buffer without bound. */
#define CTL_OUT_HIGH (4u * 1024u * 1024u)

/* Peers not allowed to run commands get one UNAUTHORIZED answer and the
 * close, and at most this many are connected at once; past it a peer not
 * allowed is refused at accept (ERROR UNAUTHORIZED, close), so a local
 * user cannot hold thousands of descriptors and buffers here. Allowed
 * peers are never counted nor refused. */
#define CTL_UNAUTH_MAX 16u
/* The largest frame read from a peer not allowed: its answer is the same
 * whatever it asks, so there is no reason to buffer max_frame for it. */
#define CTL_UNAUTH_MAX_FRAME 4096u

enum {
    K_PAUSED = FB_S_USER, /* too many reply bytes pending: input on hold */
};

struct fb_control;

struct ctl_conn {
    struct fb_stream st; /* the socket; freed from its close callback */
    struct fb_control *ctl;
    uid_t uid;
    bool allowed; /* else counted in ctl->nunauth */
    struct ctl_conn *prev, *next;
    uint64_t id, since_ns, frames_in; /* conn.list (fb_control_list_conns) */
    int tap;                          /* its tap's slot (routing/tap.h), -1 for none */
    size_t tap_cap; /* the tap's buffer: how much output may wait here */
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
    uv_async_t async;     /* stop, reload */
    uv_async_t tap_async; /* an I/O thread filled an empty tap buffer */
    uv_poll_t poll;       /* accept; only with a socket (fd >= 0) */
    struct fb_nofd nofd;  /* accepting at EMFILE; with poll */
    bool loop_ok, handles_ok, thread_ok;
    _Atomic bool stop_requested;
    _Atomic bool reload_requested;

    /* control thread only */
    bool closing;
    struct ctl_conn *conns;
    unsigned nunauth;        /* connected peers not allowed (CTL_UNAUTH_MAX) */
    _Atomic unsigned nconns; /* open control connections (stats, metrics) */
    struct fidbus_msg *msg;  /* decode scratch, one frame at a time */
};

static void process_input(struct ctl_conn *c);

/* ------------------------------------------------------------- answers */

/* ---------------------------------------------------------------- taps */

static void tap_close(struct ctl_conn *c)
{
    if (c->tap < 0)
        return;
    fb_tap_close(c->ctl->d, c->tap);
    c->tap = -1;
}

/* Writes what the tap's buffer holds, unless this connection still has a
 * buffer's worth unwritten: then the copies wait in the tap (and are
 * dropped when it fills), never here, and conn_written calls again. */
static void tap_drain(struct ctl_conn *c)
{
    if (c->tap < 0 || (c->st.flags & (FB_S_CLOSING | FB_S_PEER_GONE)) ||
        fb_stream_pending(&c->st) >= c->tap_cap)
        return;
    const uint8_t *p;
    size_t n = fb_tap_take(c->ctl->d, c->tap, &p);
    if (!n)
        return;
    if (fidbus_buf_append(&c->st.out, p, n) < 0) {
        fb_stream_oom(&c->st);
        return;
    }
    for (size_t off = 0; off + FIDBUS_FRAME_HEADER <= n; c->st.frames_out++)
        off += FIDBUS_FRAME_HEADER + ((size_t)p[off] << 24 | (size_t)p[off + 1] << 16 |
                                      (size_t)p[off + 2] << 8 | p[off + 3]);
    fb_stream_flush(&c->st);
}

/* Called by an I/O thread under a tap's lock (routing/tap.c). */
static void tap_wake(void *arg)
{
    struct fb_control *ctl = arg;
    uv_async_send(&ctl->tap_async);
}

static void on_tap_async(uv_async_t *a)
{
    struct fb_control *ctl = a->data;
    for (struct ctl_conn *c = ctl->conns; c; c = c->next)
        tap_drain(c);
}

static void send_reply(struct ctl_conn *c, const struct fidbus_msg *m,
                       const struct fb_ctl_reply *r);

/* tap.open: REPLY, then this connection carries the tap's EVENT frames
 * until it closes. One tap per connection. */
static void tap_open(struct ctl_conn *c, const struct fidbus_msg *m)
{
    struct fb_ctl_reply r = {0};
    struct fb_tap_spec spec;
    if (c->tap >= 0) {
        r.code = FIDBUS_CONFLICT;
        snprintf(r.message, sizeof r.message,
                 "this connection has a tap open already (one per connection)");
        send_reply(c, m, &r);
        return;
    }
    r.code = fb_ctl_tap_args(m->args, &spec, r.message, sizeof r.message);
    if (r.code) {
        send_reply(c, m, &r);
        return;
    }
    size_t cap = spec.buffer;
    uint8_t *res = NULL;
    size_t reslen = 0;
    if (fb_ctl_tap_result(cap, &res, &reslen) < 0) {
        fb_tap_spec_clear(&spec);
        r.code = FIDBUS_INTERNAL;
        snprintf(r.message, sizeof r.message, "tap.open: out of memory");
        send_reply(c, m, &r);
        return;
    }
    int slot = fb_tap_open(c->ctl->d, &spec, tap_wake, c->ctl);
    if (slot < 0) {
        free(res);
        r.code = slot == -EBUSY ? FIDBUS_BUSY : FIDBUS_INTERNAL;
        snprintf(r.message, sizeof r.message,
                 slot == -EBUSY ? "%u taps are open, the most there may be"
                                : "tap.open: out of memory (%u taps at most)",
                 FB_TAPS_MAX);
        send_reply(c, m, &r);
        return;
    }
    c->tap = slot;
    c->tap_cap = cap;
    r.result = res;
    r.result_len = reslen;
    send_reply(c, m, &r);
    free(res);
}

static void conn_closed(struct fb_stream *st)
{
    struct ctl_conn *c = fb_stream_owner(st, struct ctl_conn, st);
    struct fb_control *ctl = c->ctl;
    tap_close(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!c->allowed)
        ctl->nunauth--;
    atomic_fetch_sub_explicit(&ctl->nconns, 1, memory_order_relaxed);
    fb_stream_destroy(&c->st);
    free(c);
}

/* A big REPLY (up to max_reply) grew the stream's buffers: give that
 * back once it is written, so an idle control client holds little. */
#define CTL_BUF_KEEP (1024u * 1024u)

static void trim_buffers(struct fb_stream *st)
{
    if (st->out.len == 0 && st->out.cap > CTL_BUF_KEEP)
        fidbus_buf_free(&st->out);
    if (!(st->flags & FB_S_WRITING) && st->wbuf.cap > CTL_BUF_KEEP)
        fidbus_buf_free(&st->wbuf);
}

static bool conn_written(struct fb_stream *st)
{
    trim_buffers(st);
    struct ctl_conn *c = fb_stream_owner(st, struct ctl_conn, st);
    bool flushed = false;
    if (c->tap >= 0) {
        /* Flush what waits first: tap_drain skips while a buffer's worth is
         * unwritten, and a flush that empties it in one go brings no
         * further write callback, so the tap would stall full. */
        fb_stream_flush(st);
        tap_drain(c);
        flushed = true;
    }
    if ((st->flags & K_PAUSED) && fb_stream_pending(st) < CTL_OUT_HIGH) {
        st->flags &= ~K_PAUSED;
        process_input(c);
        return true;
    }
    return flushed;
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
    if (c->st.flags & FB_S_CLOSING)
        return;
    /* A REPLY is bound by [control] max_reply, not by max_frame: clients
     * read REPLYs up to FIDBUS_CONTROL_REPLY_MAX (proto/control.md), so a
     * bigger one would be a frame no client can take. */
    uint32_t max = c->ctl->d->cfg->control_max_reply;
    size_t before = c->st.out.len;
    int rc = r->result_len > max ? -EMSGSIZE : fidbus_msg_encode(&c->st.out, &o);
    if (rc == 0 && c->st.out.len - before - FIDBUS_FRAME_HEADER > max) {
        c->st.out.len = before;
        rc = -EMSGSIZE;
    }
    if (rc == 0)
        c->st.frames_out++;
    if (rc < 0) {
        if (rc == -ENOMEM) {
            fb_stream_oom(&c->st);
            return;
        }
        struct fb_ctl_reply big = {.code = FIDBUS_INTERNAL};
        snprintf(big.message, sizeof big.message,
                 "result too large: %zu bytes, over the %" PRIu32
                 " a REPLY may carry ([control] max_reply)",
                 r->result_len, max);
        send_reply(c, m, &big);
    }
}

/* ------------------------------------------------------------- reading */

/* A peer not allowed: whatever its first frame (m, NULL if it could not
 * be read), it is answered UNAUTHORIZED -- a REPLY to a REQUEST, else an
 * ERROR -- and the connection is closed once that is written. */
static void refuse_peer(struct ctl_conn *c, const struct fidbus_msg *m)
{
    fb_warn_limited("control: refused uid %ld (not allowed on the control socket)",
                    (long)c->uid);
    char why[96];
    snprintf(why, sizeof why, "peer uid %ld is not allowed on the control socket",
             (long)c->uid);
    if (m && m->type == FIDBUS_MSG_REQUEST) {
        struct fb_ctl_reply r = {.code = FIDBUS_UNAUTHORIZED};
        snprintf(r.message, sizeof r.message, "%s", why);
        send_reply(c, m, &r);
    } else {
        bool has_seq = m && fidbus_msg_has(m, FIDBUS_K_SEQ);
        fb_stream_send_error(&c->st, has_seq, has_seq ? m->seq : 0, FIDBUS_UNAUTHORIZED,
                             false, 0, "%s; closing", why);
    }
    c->st.flags |= FB_S_FLUSH_CLOSE;
}

static void handle_frame(struct ctl_conn *c, const uint8_t *body, size_t len)
{
    struct fb_control *ctl = c->ctl;
    struct fidbus_msg *m = ctl->msg;
    int rc = fidbus_msg_decode(body, len, ctl->d->cfg->max_depth, m);
    if (rc == 0)
        rc = fidbus_msg_check(m);
    if (!c->allowed) {
        refuse_peer(c, rc ? NULL : m);
        return;
    }
    if (rc) {
        fb_stream_send_error(&c->st, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                             rc > 0 ? rc : FIDBUS_INTERNAL, false, 0, "%s",
                             m->why ? m->why : fidbus_code_name(rc));
        return;
    }
    if (m->type == FIDBUS_MSG_PING) {
        /* The barrier works on every socket (proto/README.md): the
         * requests before it have all been answered, in order. */
        if (c->st.flags & FB_S_CLOSING)
            return;
        size_t cap;
        uint8_t *p = fb_stream_space(&c->st, 32, &cap);
        size_t n = p ? fidbus_enc_ack(p, cap, m->seq, 0) : 0;
        if (!n) {
            fb_stream_oom(&c->st);
        } else {
            c->st.out.len += n;
            c->st.frames_out++;
        }
        return;
    }
    if (m->type != FIDBUS_MSG_REQUEST) {
        fb_stream_send_error(&c->st, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                             FIDBUS_UNSUPPORTED, false, 0,
                             "message type %llu is not accepted on the control socket "
                             "(send REQUEST)",
                             (unsigned long long)m->type);
        return;
    }
    static const char tap_cmd[] = "tap.open";
    if (m->command.len == sizeof tap_cmd - 1 &&
        memcmp(m->command.ptr, tap_cmd, sizeof tap_cmd - 1) == 0) {
        tap_open(c, m);
        return;
    }
    struct fb_ctl_reply r = {0};
    fb_ctl_run(&ctl->env, (const char *)m->command.ptr, m->command.len, m->args, &r);
    send_reply(c, m, &r);
    free(r.result);
}

static void process_input(struct ctl_conn *c)
{
    for (;;) {
        if (c->st.flags & (FB_S_CLOSING | FB_S_FLUSH_CLOSE))
            break;
        if (fb_stream_pending(&c->st) >= CTL_OUT_HIGH) {
            c->st.flags |= K_PAUSED;
            break;
        }
        const uint8_t *body;
        size_t len;
        int rc = fidbus_frame_next(&c->st.rd, &body, &len);
        if (rc == 1) {
            c->frames_in++;
            handle_frame(c, body, len);
            fb_stream_flush(&c->st);
            trim_buffers(&c->st);
            continue;
        }
        if (rc == 0)
            break;
        /* A bad length cannot be resynchronised: answer and close. */
        if (!c->allowed)
            refuse_peer(c, NULL);
        else if (rc == FIDBUS_TOO_LARGE)
            fb_stream_send_error(&c->st, false, 0, rc, false, 0,
                                 "frame longer than max_frame (%u bytes); closing",
                                 (unsigned)c->ctl->d->cfg->max_frame);
        else
            fb_stream_send_error(&c->st, false, 0, FIDBUS_MALFORMED, false, 0,
                                 "zero-length frame; closing");
        if (c->st.flags & FB_S_CLOSING)
            break;
        c->st.flags |= FB_S_FLUSH_CLOSE;
        fb_stream_read_stop(&c->st);
        /* Shuts down once the ERROR is written, then drains until EOF. */
        fb_stream_flush(&c->st);
        return;
    }
    if (c->st.flags & FB_S_CLOSING)
        return;
    bool want = !(c->st.flags & (K_PAUSED | FB_S_FLUSH_CLOSE));
    if (!want)
        fb_stream_read_stop(&c->st);
    else if (!(c->st.flags & FB_S_READING))
        fb_stream_read_start(&c->st);
}

static void conn_input(struct fb_stream *st)
{
    process_input(fb_stream_owner(st, struct ctl_conn, st));
}

static const struct fb_stream_ops conn_ops = {
    .who = "control: ",
    .input = conn_input,
    .written = conn_written,
    .closed = conn_closed,
};

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

/* Over CTL_UNAUTH_MAX: the answer goes straight to the fresh socket,
 * which takes it whole, then EOF. */
static void refuse_at_accept(struct fb_control *ctl, int fd, uid_t uid)
{
    fb_count(&fb_counters_self(ctl->d)->limits[FB_LIM_CONTROL_UNAUTH], 1);
    fb_warn_limited("control: refused uid %ld at connect: not allowed, and %u peers "
                    "not allowed are connected already",
                    (long)uid, CTL_UNAUTH_MAX);
    char msg[128];
    snprintf(msg, sizeof msg,
             "peer uid %ld is not allowed on the control socket; closing", (long)uid);
    uint8_t buf[256];
    size_t n =
        fidbus_enc_error(buf, sizeof buf, false, 0, FIDBUS_UNAUTHORIZED, msg, false, 0);
    if (n)
        (void)!send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void conn_new(struct fb_control *ctl, int fd)
{
    struct ctl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->ctl = ctl;
    c->tap = -1;
    c->id = fb_conn_id_next();
    c->since_ns = fb_now_ns();
    check_peer(ctl, c, fd);
    if (!c->allowed && ctl->nunauth >= CTL_UNAUTH_MAX) {
        refuse_at_accept(ctl, fd, c->uid);
        free(c);
        return;
    }
    if (fb_stream_init(&c->st, &ctl->loop, false,
                       c->allowed ? ctl->d->cfg->max_frame : CTL_UNAUTH_MAX_FRAME, 4096,
                       &conn_ops) < 0) {
        free(c);
        close(fd);
        return;
    }
    if (!c->allowed)
        ctl->nunauth++;
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    atomic_fetch_add_explicit(&ctl->nconns, 1, memory_order_relaxed);
    if (fb_stream_open(&c->st, fd, false) < 0) {
        close(fd);
        fb_stream_close(&c->st);
        return;
    }
    if (fb_stream_send_hello(&c->st) < 0) {
        fb_stream_close(&c->st);
        return;
    }
    fb_stream_flush(&c->st);
    if (!(c->st.flags & FB_S_CLOSING))
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
            if ((errno == EMFILE || errno == ENFILE) &&
                fb_nofd_refuse(&ctl->nofd, ctl->fd, errno))
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EMFILE &&
                errno != ENFILE)
                fb_warn_limited("control: accept: %s", strerror(errno));
            return;
        }
        fb_nofd_ok(&ctl->nofd);
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
    if (atomic_exchange(&ctl->reload_requested, false) && !ctl->closing &&
        !atomic_load(&ctl->stop_requested))
        fb_ctl_reload_from_signal(&ctl->env);
    if (!atomic_load(&ctl->stop_requested) || ctl->closing)
        return;
    ctl->closing = true;
    if (ctl->fd >= 0) {
        uv_poll_stop(&ctl->poll);
        uv_close((uv_handle_t *)&ctl->poll, NULL);
        fb_nofd_close(&ctl->nofd, NULL);
    }
    /* Taps first: no I/O thread may wake tap_async once it is closing. */
    for (struct ctl_conn *c = ctl->conns; c; c = c->next) {
        tap_close(c);
        fb_stream_close(&c->st);
    }
    uv_close((uv_handle_t *)&ctl->async, NULL);
    uv_close((uv_handle_t *)&ctl->tap_async, NULL);
    /* The loop ends once these close callbacks have run. */
}

static void control_thread(void *arg)
{
    struct fb_control *ctl = arg;
    /* Plugin init and fini run here and may publish (host->publish), as
     * they may at start-up on the main thread: that makes this thread an
     * RCU reader too. It publishes tables only outside a read section. */
    urcu_memb_register_thread();
    fb_dispatch_mark_rcu_thread();
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
    urcu_memb_unregister_thread();
}

int fb_control_new(struct fb_daemon *d, struct fb_control **out, char *err, size_t errlen)
{
    const struct fb_config *cfg = d->cfg;
    struct fb_control *ctl = calloc(1, sizeof *ctl);
    if (!ctl) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ctl->d = d;
    ctl->fd = -1;
    ctl->gid = (gid_t)-1;
    ctl->env.d = d;
    ctl->env.ctl = ctl;
    int rc = -ENOMEM;

    if (cfg->control_group) {
        char buf[4096];
        struct group gr, *res = NULL;
        int e = getgrnam_r(cfg->control_group, &gr, buf, sizeof buf, &res);
        if (e != 0 || !res) {
            fb_set_err(err, errlen, "[control] group '%s': %s", cfg->control_group,
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

    /* Without a socket the thread still runs: SIGHUP's reload is a
     * change like any other and happens here, off the main loop. */
    struct stat st;
    if (d->act->control >= 0) {
        /* Passed by the service manager, which owns the file, its mode and
         * group: no path, so nothing is unlinked at stop. */
        ctl->fd = d->act->control;
        d->act->control = -1;
    } else if (cfg->control_socket) {
        rc = fb_unix_listen(cfg->control_socket, cfg->control_mode, ctl->gid, &ctl->fd,
                            &st, err, errlen);
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
    }

    if ((rc = uv_loop_init(&ctl->loop)) < 0)
        goto uv_fail;
    ctl->loop_ok = true;
    if ((rc = uv_async_init(&ctl->loop, &ctl->async, on_async)) < 0)
        goto uv_fail;
    ctl->async.data = ctl;
    if ((rc = uv_async_init(&ctl->loop, &ctl->tap_async, on_tap_async)) < 0) {
        uv_close((uv_handle_t *)&ctl->async, NULL);
        goto uv_fail;
    }
    ctl->tap_async.data = ctl;
    if (ctl->fd >= 0 && (rc = uv_poll_init(&ctl->loop, &ctl->poll, ctl->fd)) < 0) {
        uv_close((uv_handle_t *)&ctl->async, NULL);
        uv_close((uv_handle_t *)&ctl->tap_async, NULL);
        goto uv_fail;
    }
    if (ctl->fd >= 0 && (rc = fb_nofd_init(&ctl->nofd, &ctl->loop, d, &ctl->poll,
                                           on_accept, "control")) < 0) {
        uv_close((uv_handle_t *)&ctl->poll, NULL);
        uv_close((uv_handle_t *)&ctl->async, NULL);
        uv_close((uv_handle_t *)&ctl->tap_async, NULL);
        goto uv_fail;
    }
    ctl->poll.data = ctl;
    ctl->handles_ok = true;
    if ((ctl->fd >= 0 && (rc = uv_poll_start(&ctl->poll, UV_READABLE, on_accept)) < 0) ||
        (rc = uv_thread_create(&ctl->thread, control_thread, ctl)) < 0)
        goto uv_fail;
    ctl->thread_ok = true;
    *out = ctl;
    return 0;

uv_fail:
    fb_set_err(err, errlen, "control thread (socket %s): %s",
               cfg->control_socket ? cfg->control_socket : "none", uv_strerror(rc));
    fb_control_free(ctl);
    return rc;
oom:
    fb_set_err(err, errlen, "control socket: out of memory");
    fb_control_free(ctl);
    return -ENOMEM;
}

void fb_control_reload(struct fb_control *ctl)
{
    if (!ctl || !ctl->thread_ok)
        return;
    atomic_store(&ctl->reload_requested, true);
    uv_async_send(&ctl->async);
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

int fb_control_list_conns(const struct fb_control *ctl, struct fb_conn_infos *out)
{
    for (const struct ctl_conn *c = ctl ? ctl->conns : NULL; c; c = c->next) {
        if (c->st.flags & FB_S_CLOSING)
            continue;
        struct fb_conn_info *i = fb_conn_infos_add(out);
        if (!i)
            return -ENOMEM;
        i->id = c->id;
        i->kind = FB_CONN_CONTROL;
        uv_os_fd_t fd = -1;
        if (uv_fileno(&c->st.u.h, &fd) == 0)
            fb_conn_info_peercred(i, fd);
        i->since_ns = c->since_ns;
        i->frames_in = c->frames_in;
        i->frames_out = c->st.frames_out;
        i->bytes_in = c->st.bytes_in;
        i->bytes_out = c->st.bytes_out;
        i->paused = (c->st.flags & K_PAUSED) != 0;
        i->worker = -1;
    }
    return 0;
}

unsigned fb_control_conns(const struct fb_control *ctl)
{
    return ctl ? atomic_load_explicit(&ctl->nconns, memory_order_relaxed) : 0;
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
        if (ctl->fd >= 0) {
            uv_close((uv_handle_t *)&ctl->poll, NULL);
            fb_nofd_close(&ctl->nofd, NULL);
        }
        uv_close((uv_handle_t *)&ctl->async, NULL);
        uv_close((uv_handle_t *)&ctl->tap_async, NULL);
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
