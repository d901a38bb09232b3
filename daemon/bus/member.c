/*
 * Serving connections and the hand-over of remote calls between I/O
 * workers (member.h, routing/remote.h, proto/README.md "Remote
 * functions").
 *
 * Hand-over: a call is staged on the thread that moves it (the
 * publisher's worker on dispatch, the member's on a RESULT, a deadline or
 * a loss), per destination worker, and the stages are handed over when
 * that thread's batch ends (fb_worker_remote_flush: the end of a read
 * batch, of an async wake-up, of a deadline sweep, of a close): one lock
 * and one uv_async_send per destination per batch, not per call. A thread
 * that is no I/O worker (a blocking handler's or a timer's host->publish)
 * hands each call over at once.
 *
 * On the member's worker a call is written as a CALL into the
 * connection's output (flushed once per batch) and kept on the
 * connection's held list, in call-id order, until its RESULT, its
 * deadline (the worker's rtimer) or the connection's end.
 */
#include "bus/member.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "base/log.h"
#include "bus/conn.h"
#include "bus/conn_private.h"
#include "bus/stream.h"
#include "bus/worker.h"
#include "config/config.h"
#include "routing/remote.h"
#include "routing/routes.h"

static _Thread_local struct fb_worker *tls_w;
static struct fb_daemon *g_d;
static _Atomic uint64_t next_conn_id = 1;

/* ------------------------------------------------------------ hand-over */

static void append(struct fb_call **head, struct fb_call **tail, struct fb_call *c)
{
    c->next = NULL;
    if (*tail)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
}

/* Hands a list to w at once (lock, append, wake); false when w's loop
 * has ended. */
static bool post(struct fb_worker *w, struct fb_call *in, struct fb_call *in_tail,
                 struct fb_call *back, struct fb_call *back_tail)
{
    pthread_mutex_lock(&w->lock);
    if (w->rclosed) {
        pthread_mutex_unlock(&w->lock);
        return false;
    }
    if (in) {
        if (w->rin_tail)
            w->rin_tail->next = in;
        else
            w->rin_head = in;
        w->rin_tail = in_tail;
    }
    if (back) {
        if (w->rback_tail)
            w->rback_tail->next = back;
        else
            w->rback_head = back;
        w->rback_tail = back_tail;
    }
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
    return true;
}

/* Calls a worker whose loop has ended will not take: for its members,
 * lost (never written); home, nobody is left to answer (a home worker
 * ends only once its waiters have: not reached). */
static void refused(struct fb_call *in, struct fb_call *back)
{
    while (in) {
        struct fb_call *c = in;
        in = c->next;
        fb_remote_lost(c);
    }
    while (back) {
        struct fb_call *c = back;
        back = c->next;
        fb_warn("a remote call's publisher is gone before its answer");
        fb_remote_call_release(c);
    }
}

static void stage(struct fb_worker *to, struct fb_call *c, bool home)
{
    struct fb_worker *me = tls_w;
    if (!me) {
        c->next = NULL;
        if (!(home ? post(to, NULL, NULL, c, c) : post(to, c, c, NULL, NULL)))
            refused(home ? NULL : c, home ? c : NULL);
        return;
    }
    struct fb_rstage *s = &me->stage[to->index];
    if (home)
        append(&s->back_head, &s->back_tail, c);
    else
        append(&s->in_head, &s->in_tail, c);
    if (!s->dirty) {
        s->dirty = true;
        me->dirty[me->ndirty++] = to->index;
    }
}

static void op_deliver(struct fb_call *c)
{
    stage(c->m->worker, c, false);
}

static void op_finish(struct fb_call *c)
{
    stage(c->home, c, true);
}

void fb_worker_remote_flush(struct fb_worker *w)
{
    /* A refused hand-over may stage again (redelivery): loop until none. */
    while (w->ndirty) {
        unsigned i = w->dirty[--w->ndirty];
        struct fb_rstage *s = &w->stage[i];
        struct fb_call *in = s->in_head, *in_tail = s->in_tail;
        struct fb_call *back = s->back_head, *back_tail = s->back_tail;
        s->in_head = s->in_tail = s->back_head = s->back_tail = NULL;
        s->dirty = false;
        if (!post(w->d->workers[i], in, in_tail, back, back_tail))
            refused(in, back);
    }
}

static void op_revoke(void *worker)
{
    struct fb_worker *w = worker;
    pthread_mutex_lock(&w->lock);
    bool closed = w->rclosed;
    w->rrevoke = true;
    pthread_mutex_unlock(&w->lock);
    if (!closed)
        uv_async_send(&w->async);
}

void fb_member_install(struct fb_daemon *d)
{
    static const struct fb_remote_ops ops = {
        .deliver = op_deliver, .finish = op_finish, .revoke = op_revoke};
    g_d = d;
    fb_remote_set_ops(d->remote, &ops);
}

/* --------------------------------------------------------------- worker */

static void on_rtimer(uv_timer_t *t);

int fb_member_worker_init(struct fb_worker *w)
{
    unsigned n = w->d->cfg->workers ? w->d->cfg->workers : 1;
    w->stage = calloc(n, sizeof *w->stage);
    w->dirty = calloc(n, sizeof *w->dirty);
    if (!w->stage || !w->dirty) {
        free(w->stage);
        free(w->dirty);
        w->stage = NULL;
        w->dirty = NULL;
        return -ENOMEM;
    }
    uv_timer_init(&w->loop, &w->rtimer);
    w->rtimer.data = w;
    uv_unref((uv_handle_t *)&w->rtimer);
    return 0;
}

/* On w's thread, at its start. */
static void thread_start(struct fb_worker *w)
{
    tls_w = w;
    fb_remote_set_thread_home(w);
}

void fb_member_worker_end(struct fb_worker *w)
{
    free(w->stage);
    free(w->dirty);
    w->stage = NULL;
    w->dirty = NULL;
}

void fb_member_worker_close(struct fb_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->rclosed = true;
    struct fb_call *in = w->rin_head, *back = w->rback_head;
    w->rin_head = w->rin_tail = w->rback_head = w->rback_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    refused(in, back);
    fb_worker_remote_flush(w);
    if (!uv_is_closing((uv_handle_t *)&w->rtimer))
        uv_close((uv_handle_t *)&w->rtimer, NULL);
    fb_remote_thread_end();
    tls_w = NULL;
}

/* ---------------------------------------------------------- the member */

static void touch(struct fb_worker *w, struct fb_conn *c, struct fb_conn **touched)
{
    (void)w;
    if (!c->rc->touched) {
        c->rc->touched = true;
        c->rc->tnext = *touched;
        *touched = c;
    }
}

static void flush_touched(struct fb_conn *touched)
{
    while (touched) {
        struct fb_conn *c = touched;
        touched = c->rc->tnext;
        c->rc->touched = false;
        fb_conn_flush(c);
    }
}

static void arm(struct fb_worker *w, uint64_t deadline, uint64_t now)
{
    if (w->rtimer_due && w->rtimer_due <= deadline)
        return;
    w->rtimer_due = deadline;
    uint64_t ms = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
    uv_timer_start(&w->rtimer, on_rtimer, ms, 0);
}

static void held_unlink(struct fb_rconn *rc, struct fb_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        rc->held_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        rc->held_tail = c->prev;
    c->next = c->prev = NULL;
}

/* Writes c to its member's connection, or loses it. */
static void deliver(struct fb_worker *w, struct fb_call *c, uint64_t now,
                    struct fb_conn **touched)
{
    struct fb_member *m = c->m;
    struct fb_conn *conn = m->conn;
    if (m->closed ||
        (conn->st.flags & (FB_S_CLOSING | FB_S_PEER_GONE | FB_S_FLUSH_CLOSE))) {
        fb_remote_lost(c);
        return;
    }
    struct fb_rconn *rc = conn->rc;
    struct fidbus_call_out o = {
        .call_id = ++rc->next_call_id,
        .funcid = c->fn->id,
        .event = c->ev.id,
        .tags = c->ev.tags,
        .ntags = c->ev.ntags,
        .payload = {c->ev.payload, c->ev.payload_len},
        .generation = c->ev.generation,
        .attempt = c->attempt,
    };
    size_t need = 64 + c->ev.payload_len + strlen(c->ev.id);
    for (size_t i = 0; i < c->ev.ntags; i++)
        need += 16 + strlen(c->ev.tags[i].key) + strlen(c->ev.tags[i].value);
    size_t cap;
    uint8_t *p = fb_stream_space(&conn->st, need, &cap);
    size_t n = p ? fidbus_enc_call(p, cap, &o) : 0;
    if (!n) {
        fb_error("cannot write a CALL of %s (out of memory)", c->fn->canonical);
        fb_remote_lost(c);
        return;
    }
    conn->st.out.len += n;
    conn->st.frames_out++; /* conn.list counts every frame it sends */
    c->call_id = o.call_id;
    c->written = true;
    c->written_ns = now;
    c->deadline_ns = now + (uint64_t)m->timeout_ms * 1000000u;
    c->next = NULL;
    c->prev = rc->held_tail;
    if (rc->held_tail)
        rc->held_tail->next = c;
    else
        rc->held_head = c;
    rc->held_tail = c;
    touch(w, conn, touched);
    arm(w, c->deadline_ns, now);
}

/* Draining members whose last call is answered get their UNREGISTER's
 * ACK now, and leave the connection. */
static void drained(struct fb_conn *c)
{
    struct fb_rconn *rc = c->rc;
    for (struct fb_member **pp = &rc->members; *pp;) {
        struct fb_member *m = *pp;
        if (m->draining && atomic_load(&m->inflight) == 0) {
            fb_conn_send_ack(c, m->drain_seq, 0); /* proto/README.md: result 0 */
            *pp = m->conn_next;
            fb_remote_member_put(m);
            continue;
        }
        pp = &m->conn_next;
    }
}

void fb_member_inbox(struct fb_worker *w, struct fb_call *in, struct fb_call *back)
{
    uint64_t now = fb_now_ns();
    while (back) {
        struct fb_call *c = back;
        back = c->next;
        fb_conn_call_done(c);
    }
    struct fb_conn *touched = NULL;
    while (in) {
        struct fb_call *c = in;
        in = c->next;
        deliver(w, c, now, &touched);
    }
    flush_touched(touched);
    fb_worker_remote_flush(w);
}

static void on_rtimer(uv_timer_t *t)
{
    struct fb_worker *w = t->data;
    uint64_t now = fb_now_ns(), next = 0;
    w->rtimer_due = 0;
    struct fb_conn *touched = NULL;
    for (struct fb_conn *c = w->rconns; c; c = c->rc->wnext) {
        struct fb_rconn *rc = c->rc;
        bool any = false;
        for (struct fb_call *k = rc->held_head; k;) {
            struct fb_call *nx = k->next;
            if (k->deadline_ns <= now) {
                held_unlink(rc, k);
                fb_remote_timeout(k);
                any = true;
            } else if (!next || k->deadline_ns < next) {
                next = k->deadline_ns;
            }
            k = nx;
        }
        if (any) {
            drained(c);
            touch(w, c, &touched);
        }
    }
    flush_touched(touched);
    if (next)
        arm(w, next, now);
    fb_worker_remote_flush(w);
}

/* ----------------------------------------------------------- the frames */

static struct fb_rconn *rconn(struct fb_conn *c)
{
    if (c->rc)
        return c->rc;
    struct fb_rconn *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    rc->id = atomic_fetch_add(&next_conn_id, 1);
    rc->wnext = c->w->rconns;
    if (c->w->rconns)
        c->w->rconns->rc->wprev = c;
    c->w->rconns = c;
    c->rc = rc;
    return rc;
}

static struct fb_member *served(struct fb_rconn *rc, uint64_t id)
{
    for (struct fb_member *m = rc ? rc->members : NULL; m; m = m->conn_next)
        if (m->fn->id == id)
            return m;
    return NULL;
}

static void text(char *out, size_t cap, struct fidbus_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    memcpy(out, s.ptr, n);
    out[n] = 0;
}

void fb_member_register(struct fb_conn *c, const struct fb_route_table *t,
                        struct fidbus_msg *m)
{
    char fn[FIDBUS_CANONICAL_MAX];
    static _Thread_local char sig[FIDBUS_SIGNATURE_MAX + 1];
    text(fn, sizeof fn, m->function);
    text(sig, sizeof sig, m->signature);
    struct fb_rconn *rc = rconn(c);
    if (!rc) {
        fb_stream_send_error(&c->st, true, m->seq, FIDBUS_INTERNAL, false, 0,
                             "out of memory");
        return;
    }
    if (served(rc, fidbus_funcid(fn))) {
        fb_stream_send_error(&c->st, true, m->seq, FIDBUS_CONFLICT, false, 0,
                             "this connection serves %s already", fn);
        return;
    }
    struct fb_reg_req q = {
        .function = fn,
        .signature = sig,
        .credit = fidbus_msg_has(m, FIDBUS_K_CREDIT) ? m->credit : 0,
        .timeout_ms = fidbus_msg_has(m, FIDBUS_K_TIMEOUT_MS) ? m->timeout_ms : 0,
        .idempotent =
            fidbus_msg_has(m, FIDBUS_K_FLAGS) && (m->flags & FIDBUS_FLAG_IDEMPOTENT),
        .is_tcp = c->admit.tcp,
        .tcp_authed = (c->st.flags & C_AUTHED) != 0,
        .conn_id = rc->id,
    };
    uint32_t groups[64];
    char peer[64] = "";
    int fd = -1;
    uv_fileno(&c->st.u.h, &fd);
    if (!c->admit.tcp && fd >= 0) {
        struct ucred cr;
        socklen_t l = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0) {
            q.has_cred = true;
            q.uid = cr.uid;
            q.gid = cr.gid;
            q.pid = (uint32_t)cr.pid;
        }
        l = sizeof groups;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &l) == 0) {
            q.groups = groups;
            q.ngroups = l / sizeof groups[0];
        }
    } else if (fd >= 0) {
        struct sockaddr_storage sa;
        socklen_t l = sizeof sa;
        if (getpeername(fd, (struct sockaddr *)&sa, &l) == 0) {
            char host[INET6_ADDRSTRLEN] = "?";
            int port = 0;
            if (sa.ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host,
                          sizeof host);
                port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
            } else {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host,
                          sizeof host);
                port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
            }
            snprintf(peer, sizeof peer, "%s:%d", host, port);
        }
    }
    q.peer = peer;
    char err[256] = "";
    struct fb_member *mem = NULL;
    int rc2 = fb_remote_register(c->w->d->remote, t, &q, c, c->w, &mem, err, sizeof err);
    if (rc2 == -ENOMEM) {
        fb_stream_send_error(&c->st, true, m->seq, FIDBUS_INTERNAL, false, 0,
                             "out of memory");
        return;
    }
    if (rc2) {
        fb_stream_send_error(&c->st, true, m->seq, rc2, false, 0, "%s", err);
        return;
    }
    mem->conn_next = rc->members;
    rc->members = mem;
    fb_conn_send_ack(c, m->seq, mem->fn->id);
}

void fb_member_unregister(struct fb_conn *c, struct fidbus_msg *m)
{
    char fn[FIDBUS_CANONICAL_MAX];
    text(fn, sizeof fn, m->function);
    struct fb_member *mem = served(c->rc, fidbus_funcid(fn));
    if (!mem || mem->draining) {
        fb_stream_send_error(&c->st, true, m->seq, FIDBUS_NOT_FOUND, false, 0,
                             "this connection does not serve %s%s", fn,
                             mem ? " (it is leaving already)" : "");
        return;
    }
    /* No new calls from now on; the ACK once every call it holds (or that
     * is on its way to it) is answered: drain. */
    fb_remote_member_remove(mem);
    mem->draining = true;
    mem->drain_seq = m->seq;
    drained(c);
}

void fb_member_result(struct fb_conn *c, struct fidbus_msg *m, uint64_t now)
{
    struct fb_rconn *rc = c->rc;
    struct fb_remote *rd = c->w->d->remote;
    bool upto = fidbus_msg_has(m, FIDBUS_K_UPTO);
    uint64_t id = upto ? m->upto : m->seq;
    uint64_t code = fidbus_msg_has(m, FIDBUS_K_CODE) ? m->code : FIDBUS_OK;
    unsigned found = 0;
    if (rc) {
        if (upto) {
            while (rc->held_head && rc->held_head->call_id <= id) {
                struct fb_call *k = rc->held_head;
                held_unlink(rc, k);
                fb_remote_result(k, code, now);
                found++;
            }
        } else {
            for (struct fb_call *k = rc->held_head; k; k = k->next) {
                if (k->call_id == id) {
                    held_unlink(rc, k);
                    fb_remote_result(k, code, now);
                    found++;
                    break;
                }
                if (k->call_id > id)
                    break;
            }
        }
    }
    if (!found) {
        /* unknown, answered or timed out: ignored, counted (also as a bad
         * frame, as before any function was served: e2e.remote_wire) */
        fb_remote_count_late(rd, 1);
        fb_count(&c->w->counters->bad_frames, 1);
    } else if (rc)
        drained(c);
}

/* c's members are lost: out of the choice, their calls handled as lost
 * (the connection may still be flushing an ERROR). Once. */
static void conn_lose(struct fb_conn *c)
{
    struct fb_rconn *rc = c->rc;
    if (rc->gone)
        return;
    rc->gone = true;
    for (struct fb_member *m = rc->members; m; m = m->conn_next) {
        m->closed = true;
        fb_remote_member_remove(m);
    }
    while (rc->held_head) {
        struct fb_call *k = rc->held_head;
        held_unlink(rc, k);
        fb_remote_lost(k);
    }
}

void fb_member_conn_gone(struct fb_conn *c)
{
    struct fb_rconn *rc = c->rc;
    struct fb_worker *w = c->w;
    conn_lose(c);
    /* from the worker's list */
    if (rc->wprev)
        rc->wprev->rc->wnext = rc->wnext;
    else if (w->rconns == c)
        w->rconns = rc->wnext;
    if (rc->wnext)
        rc->wnext->rc->wprev = rc->wprev;
    while (rc->members) {
        struct fb_member *m = rc->members;
        rc->members = m->conn_next;
        fb_remote_member_put(m);
    }
    free(rc);
    c->rc = NULL;
    if (tls_w == w)
        fb_worker_remote_flush(w);
}

void fb_member_thread_start(struct fb_worker *w)
{
    thread_start(w);
}

void fb_member_revoked(struct fb_worker *w)
{
    for (struct fb_conn *c = w->rconns; c; c = c->rc->wnext) {
        const struct fb_member *gone = NULL;
        for (const struct fb_member *m = c->rc->members; m && !gone; m = m->conn_next)
            if (atomic_load(&m->revoked))
                gone = m;
        if (!gone || (c->st.flags & (FB_S_CLOSING | FB_S_FLUSH_CLOSE)))
            continue;
        /* The whole connection goes, as when AUTH fails: the client learns
         * why, reconnects and registers what it may still serve. */
        fb_stream_send_error(&c->st, false, 0, FIDBUS_UNAUTHORIZED, false, 0,
                             "config.reload: %s may no longer be served by this "
                             "client; closing",
                             gone->fn->canonical);
        c->st.flags |= FB_S_FLUSH_CLOSE;
        fb_stream_read_stop(&c->st);
        fb_stream_flush(&c->st);
        /* its calls are lost now, not when the peer gets round to closing */
        conn_lose(c);
    }
    fb_worker_remote_flush(w);
}
