/*
 * Bus connections: read frames, decode, dispatch, answer.
 *
 * The read path is allocation-free: libuv reads straight into the frame
 * reader's buffer, each whole frame is decoded in place into the worker's
 * scratch message, and the event handed to handlers points into that
 * buffer. Answers (ACK, ERROR) are encoded into the connection's stream
 * (stream.c) output buffer and written once per read batch, usually by a
 * single uv_try_write: one syscall for many acks.
 *
 * Back-pressure ([limits], config_limits.c): a client that does not read
 * its answers cannot make the daemon buffer without bound. Once
 * output_soft bytes of answers are pending, or max_inflight of its events
 * have blocking calls in flight (PINGs waiting for them count too: each
 * would otherwise be a queued answer the client can add without limit),
 * the connection stops decoding frames and stops reading until that
 * drains; the unread frames stay in the reader's buffer (at most
 * max_frame plus one read), and the publisher blocks in its own send.
 * Answers of blocking calls that finish meanwhile still grow the output:
 * past output_hard the connection is closed, with an ERROR BUSY if the
 * socket takes it. No answer is built for a connection already past
 * output_hard: the frame loop and the PING release stop there, so one
 * batch cannot build much more than that. Every pause and close is
 * counted.
 *
 * End of input (stream.h): a client that shuts down its write side gets
 * every answer owed -- blocking calls' included -- and then the close.
 *
 * Fair share: one read callback handles at most max_frames_per_read
 * frames; then the connection stops reading and queues itself on the
 * worker's yield list, which the worker's idle handle runs after the
 * loop has polled every other socket. No allocation: the list is linked
 * through the connections.
 *
 * Idle timeouts and the input_soft watch are the worker timer's sweep,
 * conn_sweep.c; struct fb_conn is in conn_private.h for it.
 *
 * Authentication (auth.h): a TCP connection with `tcp_auth = key` keeps a
 * struct fb_auth until its first frame, a valid AUTH, arrives; until then
 * every frame goes to auth_frame instead of the dispatcher. That is the
 * only test the hot path pays for it.
 */
#include "bus/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "base/log.h"
#include "bus/auth.h"
#include "bus/conn_admit.h"
#include "bus/conn_list.h"
#include "bus/conn_private.h"
#include "bus/stream.h"
#include "config/config.h"
#include "routing/dispatch.h"
#include "bus/member.h"
#include "routing/pool.h"
#include "routing/remote.h"
#include "routing/routes.h"

static void process_input(struct fb_conn *c, bool ignore_cap);
static void conn_resume(struct fb_conn *c);
static void run_yielded(struct fb_worker *w);

static void conn_unref(struct fb_conn *c)
{
    if (--c->refs)
        return;
    fb_stream_destroy(&c->st);
    free(c);
}

/* ------------------------------------------------------------ answers */

static void send_ack(struct fb_conn *c, uint64_t seq, uint64_t result)
{
    if (c->st.flags & (FB_S_CLOSING | FB_S_PEER_GONE))
        return;
    size_t cap;
    uint8_t *p = fb_stream_space(&c->st, 32, &cap);
    size_t n = p ? fidbus_enc_ack(p, cap, seq, result) : 0;
    if (!n) {
        fb_stream_oom(&c->st);
        return;
    }
    c->st.out.len += n;
    c->st.frames_out++;
}

/* ERROR BUSY for an event with `busy` of its `n` handler calls not run:
 * the pool's queue (or this client's share of it) was full, or the
 * daemon is stopping and gave them up. */
static void send_busy(struct fb_conn *c, bool has_seq, uint64_t seq, uint32_t ok,
                      uint32_t busy, uint32_t n)
{
    fb_conn_count_limit(c, FB_LIM_BUSY);
    if (c->w->stopping)
        fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_BUSY, true, ok,
                             "daemon stopping: %u of %u handler calls not run", busy, n);
    else
        fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_BUSY, true, ok,
                             "blocking pool full: %u of %u handler calls refused (this "
                             "client's share of the queue, or the queue, is full)",
                             busy, n);
}

/* Answer for an acked event once all its handlers have returned. A call
 * refused because the blocking pool is full is BUSY (the daemon shed it)
 * unless a handler also failed. */
static void send_outcome(struct fb_conn *c, bool has_seq, uint64_t seq, uint32_t ok,
                         uint32_t failed, uint32_t busy, uint32_t skipped,
                         uint32_t unavail)
{
    if (__builtin_expect(unavail != 0, 0)) {
        /* Remote calls that found no member or lost it (proto/README.md
         * "Remote functions"): UNAVAILABLE when every failed target failed
         * that way. */
        if (!failed && !busy)
            fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_UNAVAILABLE, true, ok,
                                 "%u of %u handler calls unavailable (remote function "
                                 "without a member, or its member lost the call)",
                                 unavail, ok + unavail);
        else
            fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_HANDLER_FAILED, true, ok,
                                 "%u of %u handler calls failed (%u unavailable)",
                                 failed + busy + unavail, ok + failed + busy + unavail,
                                 unavail);
        return;
    }
    if (!failed && !busy) {
        send_ack(c, seq, ok);
    } else if (!failed) {
        send_busy(c, has_seq, seq, ok, busy, ok + busy);
    } else if (skipped) {
        fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_HANDLER_FAILED, true, ok,
                             "%u of %u handler calls failed (%u skipped: function "
                             "quarantined)",
                             failed + busy, ok + failed + busy, skipped);
    } else {
        fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_HANDLER_FAILED, true, ok,
                             "%u of %u handler calls failed", failed + busy,
                             ok + failed + busy);
    }
}

static bool input_blocked(const struct fb_conn *c)
{
    return (c->out_soft && c->st.out.len >= c->out_soft) ||
           c->waiters_created - c->waiters_finished + c->ping_n >= c->max_inflight;
}

/* Answers past output_hard are never sent (flush_or_close closes the
 * connection), so none is built either. */
static bool over_hard(const struct fb_conn *c)
{
    return __builtin_expect(fb_stream_pending(&c->st) > c->out_hard, 0);
}

/* Flushes, unless more than output_hard bytes of answers are pending:
 * then they are dropped and the connection closed, after an ERROR BUSY
 * if the socket takes it now (a client that reads nothing would never
 * see it queued behind the rest). Returns false if it closed. */
static bool flush_or_close(struct fb_conn *c)
{
    struct fb_stream *st = &c->st;
    if (__builtin_expect(fb_stream_pending(st) <= c->out_hard, 1) ||
        (st->flags & FB_S_CLOSING)) {
        fb_stream_flush(st);
        return !(st->flags & FB_S_CLOSING);
    }
    fb_conn_count_limit(c, FB_LIM_OUTPUT_HARD);
    fb_warn_limited("a client has %zu bytes of answers unread, over output_hard (%u); "
                    "closing it",
                    fb_stream_pending(st), (unsigned)c->out_hard);
    st->out.len = 0;
    if (!(st->flags & FB_S_WRITING)) {
        fb_stream_send_error(st, false, 0, FIDBUS_BUSY, false, 0,
                             "over %u bytes of answers unread (output_hard); closing",
                             (unsigned)c->out_hard);
        uv_buf_t b = uv_buf_init((char *)st->out.data, (unsigned)st->out.len);
        if (st->out.len)
            (void)uv_try_write(&st->u.s, &b, 1);
        st->out.len = 0;
    }
    fb_stream_close(st);
    return false;
}

/* C_PAUSED on or off, and the worker's count of paused connections
 * (stats' paused) with it; the worker's thread is its only writer. */
static void set_paused(struct fb_conn *c, bool on)
{
    if (!(c->st.flags & C_PAUSED) == !on)
        return;
    c->st.flags = on ? c->st.flags | C_PAUSED : c->st.flags & ~C_PAUSED;
    unsigned n = atomic_load_explicit(&c->w->npaused, memory_order_relaxed);
    atomic_store_explicit(&c->w->npaused, on ? n + 1 : n - 1, memory_order_relaxed);
}

/* Input was held back; resume it if what held it back has cleared. */
static void maybe_unpause(struct fb_conn *c)
{
    if ((c->st.flags & C_PAUSED) && !(c->st.flags & C_IN_INPUT) && !input_blocked(c)) {
        set_paused(c, false);
        process_input(c, false);
    }
}

/* ------------------------------------------------------- stream hooks */

static void conn_closed(struct fb_stream *st)
{
    struct fb_conn *c = fb_stream_owner(st, struct fb_conn, st);
    struct fb_worker *w = c->w;
    if (__builtin_expect(c->rc != NULL, 0))
        fb_member_conn_gone(c); /* its members are lost (proto/README.md) */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (st->flags & C_YIELD) {
        struct fb_conn **pp = &w->yield_head, *prev = NULL;
        while (*pp && *pp != c)
            prev = *pp, pp = &(*pp)->yield_next;
        if (*pp) {
            *pp = c->yield_next;
            if (w->yield_tail == c)
                w->yield_tail = prev;
        }
        if (!w->yield_head)
            uv_idle_stop(&w->yield_idle);
    }
    set_paused(c, false);
    atomic_fetch_sub_explicit(&w->nconns, 1, memory_order_relaxed);
    fb_conn_admit_release(w->d, &c->admit);
    c->auth = fb_auth_free(c->auth);
    free(c->name);
    c->name = NULL;
    free(c->pings);
    c->pings = NULL;
    c->ping_n = c->ping_cap = 0;
    conn_unref(c);
    fb_worker_maybe_finish(w);
}

/* Answers of blocking calls still to come: the error close waits for them. */
static bool conn_owes(const struct fb_stream *st)
{
    return fb_stream_owner(st, const struct fb_conn, st)->wq_head != NULL;
}

static void conn_idle(struct fb_stream *st)
{
    if (st->flags & C_STOPPING)
        fb_stream_close(st);
}

/* A write finished. A paused connection hands what collected meanwhile to
 * the kernel first and then looks again: if the pause was output_soft and
 * that flush took everything, no later write would come to unpause it. */
static bool conn_written(struct fb_stream *st)
{
    struct fb_conn *c = fb_stream_owner(st, struct fb_conn, st);
    if (!(st->flags & C_PAUSED))
        return false;
    if (flush_or_close(c))
        maybe_unpause(c);
    return true;
}

/* ------------------------------------------------------------- waiters */

static struct fb_waiter *waiter_new(void *arg)
{
    struct fb_conn *c = arg;
    /* From the worker's free list when it has one: an event with remote or
     * blocking calls then costs no allocation in steady state. */
    struct fb_worker *w = c->w;
    struct fb_waiter *wt = w->wfree;
    if (wt) {
        w->wfree = wt->next;
        w->nwfree--;
        memset(wt, 0, sizeof *wt);
    } else if (!(wt = calloc(1, sizeof *wt))) {
        return NULL;
    }
    wt->conn = c;
    if (c->wq_tail)
        c->wq_tail->next = wt;
    else
        c->wq_head = wt;
    c->wq_tail = wt;
    c->waiters_created++;
    c->refs++;
    c->w->nwaiters++;
    return wt;
}

static struct fb_pool_src *waiter_src(const struct fb_waiter *wt)
{
    return &wt->conn->psrc;
}

/* Pool thread: the job goes back to the worker that owns the waiter's
 * connection, which runs fb_conn_job_done. */
static void waiter_job_done(struct fb_job *j)
{
    fb_worker_post_done(j->waiter->conn->w, j);
}

static const struct fb_wait_ops wait_ops = {
    .create = waiter_new,
    .src = waiter_src,
    .done = waiter_job_done,
};

/* Answers the PINGs whose barrier has passed, oldest first. */
static void release_pings(struct fb_conn *c)
{
    while (c->ping_n && !over_hard(c)) {
        const struct fb_ping *p = &c->pings[c->ping_head];
        if (p->barrier > c->waiters_finished)
            break;
        send_ack(c, p->seq, 0);
        c->ping_head = (c->ping_head + 1) & (c->ping_cap - 1);
        c->ping_n--;
    }
}

static void waiter_finish(struct fb_conn *c, struct fb_waiter *wt)
{
    wt->done = true;
    if (wt->ack && wt->given_up)
        fb_stream_send_error(
            &c->st, wt->has_seq, wt->seq, FIDBUS_HANDLER_FAILED, true, wt->ok,
            "daemon stopping: stopped waiting for %u of %u handler calls "
            "(running past handler_deadline_ms); whether they finish is "
            "unknown",
            wt->given_up, wt->ok + wt->failed + wt->busy + wt->not_run);
    else if (wt->ack)
        send_outcome(c, wt->has_seq, wt->seq, wt->ok, wt->failed, wt->busy + wt->not_run,
                     wt->skipped, wt->unavail);
    else if (wt->not_run) /* un-acked: refused at dispatch was answered then */
        send_busy(c, wt->has_seq, wt->seq, wt->ok, wt->not_run + wt->unran,
                  wt->ok + wt->failed + wt->busy + wt->not_run + wt->unavail);
    else if (wt->unran)
        /* Un-acked, and a remote call never ran: its member left between
         * dispatch and the call's placing (it waited for credit, or was
         * on its way to the member's worker), or RETRY used the attempts
         * up. Never silent (proto/README.md "Remote functions"). */
        fb_stream_send_error(&c->st, wt->has_seq, wt->seq, FIDBUS_UNAVAILABLE, true,
                             wt->ok,
                             "%u of %u handler calls unavailable: remote function "
                             "without a member",
                             wt->unran, wt->ok + wt->failed + wt->unavail);
    unsigned popped = 0;
    while (c->wq_head && c->wq_head->done) {
        struct fb_waiter *h = c->wq_head;
        c->wq_head = h->next;
        if (!c->wq_head)
            c->wq_tail = NULL;
        if (c->w->nwfree < FB_WAITER_FREE_MAX) {
            h->next = c->w->wfree;
            c->w->wfree = h;
            c->w->nwfree++;
        } else {
            free(h);
        }
        c->w->nwaiters--;
        c->waiters_finished++;
        popped++;
    }
    release_pings(c);
    c->refs++; /* keep c while it may resume input below */
    flush_or_close(c);
    while (popped--)
        conn_unref(c);
    if (!(c->st.flags & FB_S_CLOSING))
        maybe_unpause(c);
    struct fb_worker *w = c->w;
    conn_unref(c);
    fb_worker_maybe_finish(w);
}

void fb_conn_job_done(struct fb_job *j)
{
    struct fb_waiter *wt = j->waiter;
    if (j->rc == 0)
        wt->ok++;
    else if (j->rc == FB_JOB_NOT_RUN)
        wt->not_run++;
    else
        wt->failed++;
    wt->given_up += j->rc == FB_JOB_GIVEN_UP;
    fb_job_free(j);
    if (--wt->pending == 0)
        waiter_finish(wt->conn, wt);
}

void fb_conn_call_done(struct fb_call *call)
{
    struct fb_waiter *wt = call->waiter;
    if (call->outcome == 0)
        wt->ok++;
    else if (call->outcome == FIDBUS_UNAVAILABLE) {
        wt->unavail++;
        wt->unran += !call->ran_maybe;
    } else
        wt->failed++;
    fb_remote_call_release(call);
    if (--wt->pending == 0)
        waiter_finish(wt->conn, wt);
}

void fb_conn_send_ack(struct fb_conn *c, uint64_t seq, uint64_t result)
{
    send_ack(c, seq, result);
}

bool fb_conn_flush(struct fb_conn *c)
{
    return flush_or_close(c);
}

/* ---------------------------------------------------------------- auth */

/* Every authentication failure: UNAUTHORIZED, then the flush-and-close
 * of a protocol error (stream.h), bounded by the linger timer. */
static void auth_refuse(struct fb_conn *c, bool has_seq, uint64_t seq, const char *why)
{
    fb_count(&c->w->counters->bad_frames, 1);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    char host[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->st.u.tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
    }
    fb_warn_limited("tcp client %s port %d refused: %s", host, port, why);
    fb_stream_send_error(&c->st, has_seq, seq, FIDBUS_UNAUTHORIZED, false, 0,
                         "%s; closing", why);
    c->st.flags |= FB_S_FLUSH_CLOSE;
    fb_auth_linger(c->auth);
}

/* The first frame of a connection that requires AUTH. */
static void auth_frame(struct fb_conn *c, const uint8_t *body, size_t len)
{
    const struct fb_config *cfg = c->w->d->cfg;
    struct fidbus_msg *m = c->w->msg;
    int rc = fidbus_msg_decode(body, len, cfg->max_depth, m);
    if (rc == 0)
        rc = fidbus_msg_check(m);
    bool has_seq = rc == 0 && fidbus_msg_has(m, FIDBUS_K_SEQ);
    if (rc || m->type != FIDBUS_MSG_AUTH) {
        auth_refuse(c, has_seq, m->seq,
                    "authentication required: the first frame must be AUTH");
        return;
    }
    if (!fb_auth_verify(c->auth, cfg->tcp_key, cfg->tcp_key_len, m->mac.ptr,
                        m->mac.len)) {
        auth_refuse(c, has_seq, m->seq, "AUTH refused: wrong key");
        return;
    }
    c->auth = fb_auth_free(c->auth);
    fb_conn_set_name(&c->name, m);
    fb_conn_admit_authed(c->w->d, &c->admit);
    c->st.flags |= C_AUTHED;
    c->st.rd.max_frame = cfg->max_frame;
}

/* The AUTH deadline passed (or, after a refusal, the linger time). */
static void auth_expired(void *arg)
{
    struct fb_conn *c = arg;
    if (c->st.flags & (FB_S_FLUSH_CLOSE | FB_S_DRAINING | FB_S_CLOSING)) {
        fb_stream_close(&c->st);
        return;
    }
    char why[80];
    fb_conn_count_limit(c, FB_LIM_AUTH_TIMEOUT);
    snprintf(why, sizeof why, "no AUTH within %u ms",
             c->w->d->cfg->limits.auth_timeout_ms);
    auth_refuse(c, false, 0, why);
    fb_stream_read_stop(&c->st);
    fb_stream_flush(&c->st);
}

/* -------------------------------------------------------------- frames */

static void handle_publish(struct fb_conn *c, const struct fb_route_table *t,
                           struct fidbus_msg *m, uint64_t now)
{
    struct fb_worker *w = c->w;
    fb_count(&w->counters->received, 1);
    bool has_seq = fidbus_msg_has(m, FIDBUS_K_SEQ);
    bool ack = (m->flags & FIDBUS_FLAG_ACK) != 0;
    struct fidbus_event ev = {
        .id = m->event,
        .tags = m->ntags ? m->tags : NULL,
        .ntags = m->ntags,
        .payload = m->payload.len ? m->payload.ptr : NULL,
        .payload_len = m->payload.len,
        .seq = has_seq ? m->seq : 0,
        .recv_ns = now,
        .uid = c->admit.peer_uid,
        .pid = c->admit.peer_pid,
        .conn = c->id,
    };
    struct fb_outcome out;
    struct fb_waiter *before = c->wq_tail;
    fb_dispatch(w->d, t, &ev, m->event_len, &wait_ops, c, &out);
    if (!out.routed) {
        if (ack)
            fb_stream_send_error(&c->st, has_seq, m->seq, FIDBUS_NO_ROUTE, false, 0,
                                 "no route matches event '%s'", m->event);
        return;
    }
    bool waits = c->wq_tail != before;
    if (!ack && __builtin_expect(out.unavail != 0, 0) && !waits) {
        /* A call that never ran (no member) is answered even un-acked,
         * like any event the daemon does not run (proto/README.md "Remote
         * functions"); when other calls of the event are in flight, once,
         * by the waiter with theirs. */
        uint32_t n = out.ok + out.failed + out.skipped + out.queued + out.busy +
                     out.refused + out.remote + out.unavail;
        fb_stream_send_error(&c->st, has_seq, ev.seq, FIDBUS_UNAVAILABLE, true, out.ok,
                             "%u of %u handler calls unavailable: remote function "
                             "without a member",
                             out.unavail, n);
    }
    if (!ack && __builtin_expect(out.busy + out.refused != 0, 0)) {
        /* Not run is answered even un-acked (proto/README.md): a silent
         * drop would look like success behind the next PING. */
        uint32_t n =
            out.ok + out.failed + out.skipped + out.queued + out.busy + out.refused;
        if (out.busy)
            send_busy(c, has_seq, ev.seq, out.ok, out.busy + out.refused, n);
        else
            fb_stream_send_error(&c->st, has_seq, ev.seq, FIDBUS_INTERNAL, true, out.ok,
                                 "out of memory: %u of %u handler calls not run",
                                 out.refused, n);
    }
    if (waits) {
        /* Blocking calls are in flight: the waiter answers when they end.
         * Completions run on this thread, so none can have arrived yet. */
        struct fb_waiter *wt = c->wq_tail;
        wt->pending = out.queued + out.remote;
        wt->ack = ack;
        wt->has_seq = has_seq;
        wt->seq = ev.seq;
        wt->ok += out.ok;
        wt->failed += out.failed + out.skipped + out.refused;
        wt->busy += out.busy;
        wt->skipped += out.skipped;
        wt->unavail += out.unavail;
        wt->unran += out.unavail;
        if (wt->pending == 0) /* every blocking call was refused */
            waiter_finish(c, wt);
        return;
    }
    if (ack)
        send_outcome(c, has_seq, ev.seq, out.ok, out.failed + out.skipped + out.refused,
                     out.busy, out.skipped, out.unavail);
}

/* The PING ring is full: double it, unwrapping it to start at 0. */
static int grow_pings(struct fb_conn *c)
{
    uint32_t cap = c->ping_cap ? c->ping_cap * 2 : 16;
    if (cap < c->ping_cap)
        return -ENOMEM;
    struct fb_ping *n = malloc((size_t)cap * sizeof *n);
    if (!n)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->ping_n; i++)
        n[i] = c->pings[(c->ping_head + i) & (c->ping_cap - 1)];
    free(c->pings);
    c->pings = n;
    c->ping_cap = cap;
    c->ping_head = 0;
    return 0;
}

static void handle_ping(struct fb_conn *c, struct fidbus_msg *m)
{
    uint64_t seq = fidbus_msg_has(m, FIDBUS_K_SEQ) ? m->seq : 0;
    /* No PING waits unless a waiter does (release_pings runs as each
     * finishes), so this keeps answers in order. */
    if (c->waiters_finished == c->waiters_created) {
        send_ack(c, seq, 0);
        return;
    }
    if (c->ping_n == c->ping_cap && grow_pings(c) < 0) {
        fb_error("out of memory queueing a PING; closing the client");
        fb_stream_close(&c->st);
        return;
    }
    struct fb_ping *p = &c->pings[(c->ping_head + c->ping_n) & (c->ping_cap - 1)];
    p->seq = seq;
    p->barrier = c->waiters_created;
    c->ping_n++;
}

/* Inlined by force into process_input's frame loop: once the loop grew its
 * output_hard check, gcc stopped inlining it, and the call cost 1.5% of
 * the instructions per event (callgrind, fidbus-bench throughput). */
static inline __attribute__((always_inline)) void
handle_frame(struct fb_conn *c, const struct fb_route_table *t, const uint8_t *body,
             size_t len, uint64_t now)
{
    struct fb_worker *w = c->w;
    if (__builtin_expect(c->auth != NULL, 0)) {
        auth_frame(c, body, len);
        return;
    }
    struct fidbus_msg *m = w->msg;
    int rc = fidbus_msg_decode(body, len, w->d->cfg->max_depth, m);
    if (rc == 0)
        rc = fidbus_msg_check(m);
    if (rc) {
        fb_count(&w->counters->bad_frames, 1);
        if (rc == FIDBUS_TOO_LARGE)
            fb_conn_count_limit(c, FB_LIM_DEPTH);
        fb_stream_send_error(&c->st, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq, rc, false,
                             0, "%s", m->why ? m->why : fidbus_code_name(rc));
        return;
    }
    switch (m->type) {
    case FIDBUS_MSG_PUBLISH:
        handle_publish(c, t, m, now);
        return;
    case FIDBUS_MSG_PING:
        handle_ping(c, m);
        return;
    case FIDBUS_MSG_AUTH:
        /* Once is the protocol; a second AUTH is refused like a bad one.
         * A listener that requires no authentication ignores AUTH. */
        if (c->st.flags & C_AUTHED)
            auth_refuse(c, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                        "AUTH again on an authenticated connection");
        else
            fb_conn_set_name(&c->name, m); /* ignored but for conn.list */
        return;
    case FIDBUS_MSG_REGISTER:
        fb_member_register(c, t, m);
        return;
    case FIDBUS_MSG_UNREGISTER:
        fb_member_unregister(c, m);
        return;
    case FIDBUS_MSG_RESULT:
        /* A RESULT for a call the member does not hold is ignored and
         * counted, never answered (an ERROR per late RESULT would flood a
         * member that just timed out): bus/member.c. */
        fb_member_result(c, m, now);
        return;
    case FIDBUS_MSG_REQUEST:
        fb_count(&w->counters->bad_frames, 1);
        fb_stream_send_error(&c->st, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                             FIDBUS_UNSUPPORTED, false, 0,
                             "control requests go to the control socket, not the bus");
        return;
    default:
        fb_count(&w->counters->bad_frames, 1);
        fb_stream_send_error(&c->st, fidbus_msg_has(m, FIDBUS_K_SEQ), m->seq,
                             FIDBUS_UNSUPPORTED, false, 0,
                             "message type %llu is not accepted from a client",
                             (unsigned long long)m->type);
        return;
    }
}

static void on_yield_idle(uv_idle_t *h)
{
    run_yielded(h->data);
}

/* Queues c on its worker's yield list (reading stops meanwhile). */
static void yield(struct fb_conn *c)
{
    struct fb_worker *w = c->w;
    if (c->st.flags & C_YIELD)
        return; /* queued already (resumed by a write meanwhile) */
    fb_conn_count_limit(c, FB_LIM_YIELD);
    c->st.flags |= C_YIELD;
    c->yield_next = NULL;
    if (w->yield_tail)
        w->yield_tail->yield_next = c;
    else
        uv_idle_start(&w->yield_idle, on_yield_idle);
    w->yield_tail = c;
    if (!w->yield_head)
        w->yield_head = c;
}

static void process_input(struct fb_conn *c, bool ignore_cap)
{
    struct fb_worker *w = c->w;
    if (c->st.flags & (FB_S_CLOSING | FB_S_FLUSH_CLOSE))
        return;
    uint64_t now = fb_now_ns();
    c->last_ns = now;
    c->st.flags |= C_IN_INPUT;
    fb_dispatch_set_principal(c->admit.principal);
    urcu_memb_read_lock();
    const struct fb_route_table *t = fb_routes_deref(&w->d->table);
    uint32_t budget = c->max_frames;
    uint64_t nframes = 0; /* conn.list's frames_in, added once per batch */
    for (;;) {
        if (over_hard(c))
            break; /* flush_or_close below closes it */
        if (!ignore_cap && input_blocked(c)) {
            set_paused(c, true);
            fb_conn_count_limit(c, c->out_soft && c->st.out.len >= c->out_soft
                                       ? FB_LIM_PAUSE_OUTPUT
                                       : FB_LIM_PAUSE_INFLIGHT);
            break;
        }
        if (!ignore_cap && budget-- == 0) {
            /* Fair share: the rest waits for the next loop iteration, if
             * bytes are waiting at all. Alone on its worker, a connection
             * has no one to share with: it goes on, and saves the read
             * stop/start a yield costs. */
            if (atomic_load_explicit(&w->nconns, memory_order_relaxed) <= 1) {
                budget = c->max_frames - 1;
            } else {
                if (c->st.rd.end > c->st.rd.start)
                    yield(c);
                break;
            }
        }
        const uint8_t *body;
        size_t len;
        int rc = fidbus_frame_next(&c->st.rd, &body, &len);
        if (rc == 1) {
            nframes++;
            handle_frame(c, t, body, len, now);
            if (c->st.flags & (FB_S_CLOSING | FB_S_FLUSH_CLOSE))
                break;
            continue;
        }
        if (rc == 0)
            break;
        /* A bad length cannot be resynchronised: answer and close. */
        if (c->auth) {
            char why[96];
            snprintf(why, sizeof why,
                     "authentication required: a frame before AUTH is empty or over %u "
                     "bytes",
                     (unsigned)c->st.rd.max_frame);
            auth_refuse(c, false, 0, why);
            break;
        }
        fb_count(&w->counters->bad_frames, 1);
        if (rc == FIDBUS_TOO_LARGE) {
            fb_conn_count_limit(c, FB_LIM_FRAME_TOO_LARGE);
            fb_stream_send_error(&c->st, false, 0, rc, false, 0,
                                 "frame longer than max_frame (%u bytes); closing",
                                 (unsigned)w->d->cfg->max_frame);
        } else {
            fb_stream_send_error(&c->st, false, 0, FIDBUS_MALFORMED, false, 0,
                                 "zero-length frame; closing");
        }
        c->st.flags |= FB_S_FLUSH_CLOSE;
        break;
    }
    FB_ROUTES_READ_DONE();
    urcu_memb_read_unlock();
    c->frames_in += nframes;
    c->st.flags &= ~C_IN_INPUT;
    if (__builtin_expect(w->ndirty != 0, 0))
        fb_worker_remote_flush(w); /* remote calls this batch made, one wake each */

    bool want_read = !(c->st.flags & (C_PAUSED | C_YIELD | FB_S_FLUSH_CLOSE | C_STOPPING |
                                      FB_S_CLOSING));
    if (!want_read)
        fb_stream_read_stop(&c->st);
    if (!flush_or_close(c))
        return;
    if (want_read && !(c->st.flags & (FB_S_READING | FB_S_CLOSING)))
        conn_resume(c);
}

/* (Re)starts reading. */
static void conn_resume(struct fb_conn *c)
{
    fb_stream_read_start(&c->st);
}

/* ------------------------------------------------------------ lifetime */

static void conn_input(struct fb_stream *st)
{
    process_input(fb_stream_owner(st, struct fb_conn, st), false);
}

/* At EOF everything read has been handled; the stream closes once every
 * answer owed (conn_owes) is written, or at once if the peer has gone
 * altogether (stream.h). */
static const struct fb_stream_ops conn_ops = {
    .who = "",
    .input = conn_input,
    .written = conn_written,
    .owes = conn_owes,
    .idle = conn_idle,
    .closed = conn_closed,
};

/* Fair share: the connections that yielded go on, in the order they
 * yielded; one that yields again queues for the next iteration. Close
 * callbacks cannot run meanwhile, so every connection listed is alive. */
/* Fair share: connections that yielded at max_frames_per_read go on. */
static void run_yielded(struct fb_worker *w)
{
    struct fb_conn *c = w->yield_head;
    w->yield_head = w->yield_tail = NULL;
    uv_idle_stop(&w->yield_idle);
    while (c) {
        struct fb_conn *next = c->yield_next;
        c->yield_next = NULL;
        c->st.flags &= ~C_YIELD;
        process_input(c, false);
        c = next;
    }
}

int fb_conn_new(struct fb_worker *w, int fd, bool is_tcp, const struct fb_admit *a)
{
    struct fb_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        fb_conn_admit_release(w->d, a);
        return -ENOMEM;
    }
    c->w = w;
    c->refs = 1;
    c->admit = *a;
    const struct fb_limits *l = &w->d->cfg->limits;
    c->out_soft = l->output_soft;
    c->out_hard = l->output_hard;
    c->max_inflight = l->max_inflight;
    c->max_frames = l->max_frames_per_read;
    c->idle_ns =
        (uint64_t)(is_tcp ? l->idle_timeout_tcp_ms : l->idle_timeout_unix_ms) * 1000000u;
    c->in_soft = l->input_soft;
    c->in_soft_ns = (uint64_t)l->input_soft_ms * 1000000u;
    c->last_ns = fb_now_ns();
    c->since_ns = c->last_ns;
    c->id = fb_conn_id_next();
    int rc = fb_stream_init(&c->st, &w->loop, is_tcp, w->d->cfg->max_frame, 0, &conn_ops);
    if (rc < 0) {
        free(c);
        close(fd);
        fb_conn_admit_release(w->d, a);
        return rc;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->nconns, 1, memory_order_relaxed);
    if ((rc = fb_stream_open(&c->st, fd, is_tcp)) < 0) {
        close(fd);
        fb_stream_close(&c->st);
        return rc;
    }
    if (is_tcp && w->d->cfg->tcp_auth == FB_TCP_AUTH_KEY) {
        if ((rc = fb_auth_new(&c->auth, &w->loop, l->auth_timeout_ms, auth_expired, c)) <
            0) {
            fb_stream_close(&c->st);
            return rc;
        }
        if (c->st.rd.max_frame > FB_AUTH_MAX_FRAME)
            c->st.rd.max_frame = FB_AUTH_MAX_FRAME;
        rc =
            fb_stream_send_hello_nonce(&c->st, fb_auth_nonce(c->auth), FB_AUTH_NONCE_LEN);
    } else {
        rc = fb_stream_send_hello(&c->st);
    }
    if (rc < 0) {
        fb_stream_close(&c->st);
        return -ENOMEM;
    }
    fb_stream_flush(&c->st);
    if (!(c->st.flags & FB_S_CLOSING))
        conn_resume(c);
    return 0;
}

void fb_conn_begin_stop(struct fb_conn *c)
{
    if (c->st.flags & FB_S_CLOSING)
        return;
    c->st.flags |= C_STOPPING;
    if (c->st.flags & (FB_S_FLUSH_CLOSE | FB_S_DRAINING)) {
        fb_stream_close(&c->st);
        return;
    }
    fb_stream_read_stop(&c->st);
    /* Frames already read but held back by back-pressure or a yield are
     * handled now. */
    if (c->st.flags & (C_PAUSED | C_YIELD)) {
        set_paused(c, false);
        process_input(c, true);
    }
    fb_stream_flush(&c->st);
}

void fb_conn_abort(struct fb_conn *c)
{
    fb_stream_close(&c->st);
}

struct fb_conn *fb_conn_next(struct fb_conn *c)
{
    return c->next;
}

uint64_t fb_conn_id(const struct fb_conn *c)
{
    return c->id;
}
