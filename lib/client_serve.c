/*
 * lib/client_serve.c -- serving functions over a client connection
 * (fidbus_register, fidbus_serve, fidbus_call_done, fidbus_unregister;
 * proto/README.md "Remote functions").
 *
 * CALLs arrive through the same pump as every answer (lib/client.c's
 * handle_frame hands them here), so a callback that publishes, or waits
 * for an ACK, reads on the one connection like any other call. What keeps
 * that sound:
 *
 *   - A CALL read while the serve loop waits is run at once, its event,
 *     tags and payload pointing into the read buffer and c->msg (zero
 *     copy). During the callback frames are decoded into another struct
 *     (c->mp), and the read buffer is pinned: should a nested read need
 *     room the buffer cannot give behind the call's bytes, the unread tail
 *     moves to a new buffer and the old one is freed when the callback
 *     returns (fb_serve_read_space), instead of being moved under it.
 *   - A CALL read by any other wait (a callback's fidbus_publish_ack,
 *     fidbus_register) is copied to a deferred queue and run by the serve
 *     loop next, in arrival order; two queues swap so a callback run from
 *     one can defer into the other without moving its bytes.
 *   - Every call is entered in `held` when it arrives, so held is in
 *     call-id order whatever ran when; RESULTs are written from held
 *     (fb_held_flush) once per batch: the leading answered calls with one
 *     code as a single `upto`, the rest one by one. The daemon numbers a
 *     connection's calls upwards; should ids ever not increase, `upto` is
 *     not used on that connection again, since it would answer a call not
 *     yet read.
 *   - fidbus_call_done may come from any thread: completions go to a
 *     mutex-guarded array and an eventfd wakes the loop, which applies
 *     them. Tokens carry the connection's epoch in their top 16 bits, so a
 *     completion for a call lost with an earlier connection cannot answer
 *     a new call that happens to reuse its id.
 *
 * Queues grow by doubling and are reused: steady serving allocates nothing
 * per call.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>

#include "client_private.h"
#include "client_serve.h"

#define FB_TOKEN_ID_BITS 48
#define FB_TOKEN_ID_MASK ((UINT64_C(1) << FB_TOKEN_ID_BITS) - 1)
/* A REGISTER's frame: the codec's bounds for signature and name, and room. */
#define FB_REGISTER_FRAME (FIDBUS_SIGNATURE_MAX + FIDBUS_CANONICAL_MAX + 128)
#define FB_TIMEOUT_DEFAULT_MS 30000u /* fidbusd.conf(5)'s [remote] timeout_ms */

enum fb_fn_state {
    FB_FN_FREE,          /* slot unused */
    FB_FN_REGISTERING,   /* REGISTER sent, no answer yet */
    FB_FN_REGISTERED,    /* served */
    FB_FN_UNREGISTERING, /* UNREGISTER sent: draining */
    FB_FN_REFUSED,       /* the daemon refused the REGISTER (code) */
};

struct fb_serve_fn {
    char *function, *signature;
    uint64_t funcid;
    uint32_t credit, timeout_ms, flags;
    fidbus_call_fn cb;
    void *arg;
    enum fb_fn_state state;
    uint64_t seq;  /* of the REGISTER or UNREGISTER waiting for an answer */
    uint64_t code; /* FB_FN_REFUSED: why */
    bool again;    /* a re-registration after a reconnection */
};

struct fb_done {
    uint64_t token;
    uint8_t code;
};

struct fb_serve {
    struct fb_serve_fn *fns;
    size_t nfns, capfns;
    size_t last_fn; /* the function of the last call: usually the next one's */

    struct fb_held *held; /* held[hhead..hlen): calls held, in arrival order */
    size_t hhead, hlen, hcap;
    uint64_t last_id;
    bool has_last, allow_upto;
    uint32_t epoch; /* connections so far; the top bits of a token */

    struct fidbus_buf dq[2]; /* deferred CALL bodies, each [u32 len][body] */
    int dcur;                /* the queue new deferrals go to */

    bool in_cb;
    uint8_t *pin_buf; /* the read buffer a running callback points into */
    size_t pin_hi;    /* ... up to this offset */

    pthread_mutex_t mu; /* guards cq, cn, ccap */
    struct fb_done *cq, *cq_spare;
    size_t cn, ccap, spare_cap;
    int wake_fd;
    atomic_int stop;
    int err; /* a refused re-registration, for fidbus_serve to return */

    struct fidbus_msg alt; /* decoded into while a callback runs */
};

/* ------------------------------------------------------------ batching */

/* fb_held_flush, the rule itself, is lib/client_serve_batch.c. */

static int emit_result(void *ctx, bool upto, uint64_t id, uint8_t code)
{
    uint8_t frame[64];
    size_t n = fidbus_enc_result(frame, sizeof frame, upto, id, code, NULL);
    if (n == 0)
        return -EMSGSIZE;
    return fb_client_enqueue_raw(ctx, frame, n);
}

static int flush_results(struct fidbus_client *c)
{
    struct fb_serve *s = c->serve;
    if (s->hhead == s->hlen)
        return 0;
    long front = fb_held_flush(s->held + s->hhead, s->hlen - s->hhead, s->allow_upto,
                               emit_result, c);
    if (front < 0)
        return (int)front;
    s->hhead += (size_t)front;
    if (s->hhead == s->hlen)
        s->hhead = s->hlen = 0;
    return 0;
}

/* ----------------------------------------------------------- held calls */

static int held_push(struct fb_serve *s, uint64_t id, uint8_t state, uint8_t code)
{
    if (s->hlen == s->hcap) {
        if (s->hhead > 0) {
            memmove(s->held, s->held + s->hhead, (s->hlen - s->hhead) * sizeof(*s->held));
            s->hlen -= s->hhead;
            s->hhead = 0;
        }
        if (s->hlen == s->hcap) {
            size_t cap = s->hcap ? s->hcap * 2 : 64;
            struct fb_held *v = realloc(s->held, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            s->held = v;
            s->hcap = cap;
        }
    }
    s->held[s->hlen++] = (struct fb_held){.id = id, .state = state, .code = code};
    return 0;
}

/* The held call whose id has these low bits (a token's), or NULL. */
static struct fb_held *held_find(struct fb_serve *s, uint64_t low)
{
    size_t lo = s->hhead, hi = s->hlen;
    if (!s->allow_upto) {
        for (size_t i = lo; i < hi; i++)
            if ((s->held[i].id & FB_TOKEN_ID_MASK) == low)
                return &s->held[i];
        return NULL;
    }
    while (lo < hi) { /* ids increase: binary search */
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v = s->held[mid].id & FB_TOKEN_ID_MASK;
        if (v == low)
            return &s->held[mid];
        if (v < low)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint8_t outcome_of(int rc)
{
    return rc == 0              ? FIDBUS_OK
           : rc == FIDBUS_RETRY ? FIDBUS_RETRY
                                : FIDBUS_HANDLER_FAILED;
}

static void held_answer(struct fb_serve *s, uint64_t low, uint8_t code)
{
    struct fb_held *h = held_find(s, low);
    if (h && h->state == FB_HELD_OPEN) {
        h->state = FB_HELD_DONE;
        h->code = code;
    }
}

static uint64_t token_of(const struct fb_serve *s, uint64_t id)
{
    return (uint64_t)(s->epoch & 0xffffu) << FB_TOKEN_ID_BITS | (id & FB_TOKEN_ID_MASK);
}

/* ------------------------------------------------------------ functions */

static struct fb_serve_fn *fn_by_id(struct fb_serve *s, uint64_t funcid)
{
    if (s->last_fn < s->nfns && s->fns[s->last_fn].funcid == funcid)
        return &s->fns[s->last_fn];
    for (size_t i = 0; i < s->nfns; i++)
        if (s->fns[i].state != FB_FN_FREE && s->fns[i].funcid == funcid) {
            s->last_fn = i;
            return &s->fns[i];
        }
    return NULL;
}

static void fn_clear(struct fb_serve_fn *f)
{
    free(f->function);
    free(f->signature);
    memset(f, 0, sizeof(*f));
}

static int send_register(struct fidbus_client *c, struct fb_serve_fn *f)
{
    uint8_t frame[FB_REGISTER_FRAME];
    f->seq = fb_client_next_seq(c);
    size_t n = fidbus_enc_register(frame, sizeof frame, f->seq, f->function, f->signature,
                                   f->credit, f->timeout_ms, f->flags);
    if (n == 0)
        return -EMSGSIZE;
    f->state = FB_FN_REGISTERING;
    return fb_client_enqueue_raw(c, frame, n);
}

static int send_unregister(struct fidbus_client *c, struct fb_serve_fn *f)
{
    uint8_t frame[FIDBUS_CANONICAL_MAX + 64];
    f->seq = fb_client_next_seq(c);
    size_t n = fidbus_enc_unregister(frame, sizeof frame, f->seq, f->function);
    if (n == 0)
        return -EMSGSIZE;
    f->state = FB_FN_UNREGISTERING;
    return fb_client_enqueue_raw(c, frame, n);
}

/* ---------------------------------------------------------------- calls */

/* Runs one call decoded into c->msg; body_pinned: its bytes are in c->rd. */
static void run_call(struct fidbus_client *c, const struct fidbus_msg *m,
                     const uint8_t *body_end)
{
    struct fb_serve *s = c->serve;
    struct fb_serve_fn *f = fn_by_id(s, m->id);
    /* REGISTERING: the daemon sends calls only once it took the REGISTER,
     * whatever order its ACK comes in. */
    if (!f || f->state == FB_FN_REFUSED) {
        /* Not (or no longer) ours: another member may run it. */
        held_answer(s, m->seq & FB_TOKEN_ID_MASK, FIDBUS_RETRY);
        return;
    }
    uint32_t epoch = s->epoch;
    struct fidbus_call call = {
        .call_id = m->seq,
        .token = token_of(s, m->seq),
        .funcid = m->id,
        .function = f->function,
        .event = m->event,
        .tags = m->tags,
        .ntags = m->ntags,
        .payload = fidbus_msg_has(m, FIDBUS_K_PAYLOAD) ? m->payload.ptr : NULL,
        .payload_len = fidbus_msg_has(m, FIDBUS_K_PAYLOAD) ? m->payload.len : 0,
        .generation = m->generation,
        .attempt = m->attempt,
        .uid = fidbus_msg_has(m, FIDBUS_K_UID) ? (int64_t)m->uid : -1,
        .pid = fidbus_msg_has(m, FIDBUS_K_PID) ? (int64_t)m->pid : -1,
    };
    fidbus_call_fn cb = f->cb;
    void *arg = f->arg;

    struct fidbus_msg *saved = c->mp;
    c->mp = &s->alt;
    s->in_cb = true;
    if (body_end) {
        s->pin_buf = c->rd.buf;
        s->pin_hi = (size_t)(body_end - c->rd.buf);
    }
    int rc = cb(c, &call, arg);
    if (s->pin_buf) {
        if (c->rd.buf != s->pin_buf)
            free(s->pin_buf); /* replaced while the callback read on */
        s->pin_buf = NULL;
    }
    s->in_cb = false;
    c->mp = saved;
    if (epoch != s->epoch || rc == FIDBUS_CALL_PENDING)
        return; /* lost with its connection, or answered later */
    held_answer(s, m->seq & FB_TOKEN_ID_MASK, outcome_of(rc));
}

int fb_serve_on_call(struct fidbus_client *c, struct fb_wait *w, const uint8_t *body,
                     size_t len)
{
    struct fb_serve *s = c->serve;
    struct fidbus_msg *m = c->mp;
    if (w->kind == FB_WAIT_SERVE)
        w->served = true;
    if (fidbus_msg_check(m) != 0) {
        /* A CALL the daemon should never send: fail it if it can be named. */
        return fidbus_msg_has(m, FIDBUS_K_SEQ)
                   ? held_push(s, m->seq, FB_HELD_DONE, FIDBUS_HANDLER_FAILED)
                   : 0;
    }
    if (s->has_last && m->seq <= s->last_id)
        s->allow_upto = false;
    s->has_last = true;
    s->last_id = m->seq;
    int rc = held_push(s, m->seq, FB_HELD_OPEN, 0);
    if (rc < 0)
        return rc;
    struct fidbus_buf *q = &s->dq[s->dcur];
    if (w->kind == FB_WAIT_SERVE && !s->in_cb && q->len == 0 && m == &c->msg) {
        run_call(c, m, body + len);
        return 0;
    }
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    if (fidbus_buf_reserve(q, 4 + len) != 0)
        return -ENOMEM;
    fidbus_buf_append(q, hdr, 4); /* reserved above */
    fidbus_buf_append(q, body, len);
    return 0;
}

/* Runs the CALLs other waits deferred, oldest first. */
static void run_deferred(struct fidbus_client *c)
{
    struct fb_serve *s = c->serve;
    while (s->dq[s->dcur].len) {
        struct fidbus_buf *b = &s->dq[s->dcur];
        s->dcur ^= 1; /* callbacks below defer into the other queue */
        uint32_t epoch = s->epoch;
        for (size_t off = 0; off + 4 <= b->len && epoch == s->epoch;) {
            const uint8_t *h = b->data + off;
            size_t len =
                (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
            off += 4 + len;
            if (fidbus_msg_decode(h + 4, len, FIDBUS_MAX_DEPTH_DEFAULT, c->mp) == 0)
                run_call(c, c->mp, NULL); /* it decoded once already */
        }
        b->len = 0;
    }
}

int fb_serve_read_space(struct fidbus_client *c, uint8_t **p, size_t *len, bool *pinned)
{
    struct fb_serve *s = c->serve;
    struct fidbus_frame_reader *r = &c->rd;
    if (!s->pin_buf || r->buf != s->pin_buf)
        return 0;
    *pinned = true;
    size_t pending = r->end - r->start, need = 1;
    if (pending >= FIDBUS_FRAME_HEADER) {
        const uint8_t *h = r->buf + r->start;
        uint32_t flen =
            (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (flen && flen <= r->max_frame && flen + FIDBUS_FRAME_HEADER > pending)
            need = flen + FIDBUS_FRAME_HEADER - pending;
    }
    if (r->end >= s->pin_hi && r->cap - r->end >= need) {
        *p = r->buf + r->end;
        *len = r->cap - r->end;
        return 0;
    }
    size_t cap = pending + need < 65536 ? 65536 : pending + need;
    uint8_t *nb = malloc(cap);
    if (!nb)
        return -ENOMEM;
    if (pending)
        memcpy(nb, r->buf + r->start, pending);
    r->buf = nb; /* the old one is freed when the callback returns */
    r->cap = cap;
    r->start = 0;
    r->end = pending;
    *p = nb + pending;
    *len = cap - pending;
    return 0;
}

/* ------------------------------------------------------ answers, links */

bool fb_serve_on_answer(struct fidbus_client *c, struct fb_wait *w)
{
    struct fb_serve *s = c->serve;
    const struct fidbus_msg *m = c->mp;
    for (size_t i = 0; i < s->nfns; i++) {
        struct fb_serve_fn *f = &s->fns[i];
        if ((f->state != FB_FN_REGISTERING && f->state != FB_FN_UNREGISTERING) ||
            f->seq == 0 || f->seq != m->seq)
            continue; /* seq 0: not sent yet (library seqs start at 1) */
        bool ok = m->type == FIDBUS_MSG_ACK;
        uint64_t code = ok                                            ? 0
                        : fidbus_msg_has(m, FIDBUS_K_CODE) && m->code ? m->code
                                                                      : FIDBUS_INTERNAL;
        if (f->state == FB_FN_UNREGISTERING) {
            fn_clear(f); /* NOT_FOUND too: it is not served either way */
        } else if (ok) {
            f->state = FB_FN_REGISTERED;
        } else {
            f->state = FB_FN_REFUSED;
            f->code = code;
            if (f->again && !s->err)
                s->err = fb_client_proto_rc(code);
        }
        if (w->kind == FB_WAIT_SERVE)
            w->served = true;
        return true;
    }
    return false;
}

void fb_serve_conn_lost(struct fidbus_client *c)
{
    struct fb_serve *s = c->serve;
    s->epoch++;
    s->hhead = s->hlen = 0;
    s->dq[0].len = s->dq[1].len = 0;
    s->has_last = false;
    s->allow_upto = true;
}

int fb_serve_reconnected(struct fidbus_client *c)
{
    struct fb_serve *s = c->serve;
    for (size_t i = 0; i < s->nfns; i++) {
        struct fb_serve_fn *f = &s->fns[i];
        if (f->state == FB_FN_UNREGISTERING) {
            fn_clear(f); /* the closed connection unregistered it */
        } else if (f->state == FB_FN_REGISTERED || f->state == FB_FN_REGISTERING) {
            f->again = true;
            int rc = send_register(c, f);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

void fb_serve_free(struct fidbus_client *c)
{
    struct fb_serve *s = c->serve;
    if (!s)
        return;
    for (size_t i = 0; i < s->nfns; i++)
        fn_clear(&s->fns[i]);
    free(s->fns);
    free(s->held);
    fidbus_buf_free(&s->dq[0]);
    fidbus_buf_free(&s->dq[1]);
    free(s->cq);
    free(s->cq_spare);
    pthread_mutex_destroy(&s->mu);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s);
    c->serve = NULL;
}

static int serve_init(struct fidbus_client *c)
{
    if (c->serve)
        return 0;
    struct fb_serve *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0) {
        int rc = -errno;
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->allow_upto = true;
    s->epoch = 1;
    c->serve = s;
    return 0;
}

/* --------------------------------------------------------- completions */

static void take_completions(struct fb_serve *s)
{
    pthread_mutex_lock(&s->mu);
    struct fb_done *v = s->cq;
    size_t n = s->cn, cap = s->ccap;
    s->cq = s->cq_spare;
    s->ccap = s->spare_cap;
    s->cn = 0;
    pthread_mutex_unlock(&s->mu);
    uint64_t epoch = s->epoch & 0xffffu;
    for (size_t i = 0; i < n; i++)
        if (v[i].token >> FB_TOKEN_ID_BITS == epoch)
            held_answer(s, v[i].token & FB_TOKEN_ID_MASK, v[i].code);
    s->cq_spare = v; /* only this thread swaps, so spare is its own */
    s->spare_cap = cap;
}

int fidbus_call_done(struct fidbus_client *c, uint64_t token, int code)
{
    if (!c || !c->serve || code == FIDBUS_CALL_PENDING)
        return -EINVAL;
    struct fb_serve *s = c->serve;
    pthread_mutex_lock(&s->mu);
    if (s->cn == s->ccap) {
        size_t cap = s->ccap ? s->ccap * 2 : 64;
        struct fb_done *v = realloc(s->cq, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&s->mu);
            return -ENOMEM;
        }
        s->cq = v;
        s->ccap = cap;
    }
    s->cq[s->cn++] = (struct fb_done){.token = token, .code = outcome_of(code)};
    pthread_mutex_unlock(&s->mu);
    uint64_t one = 1;
    ssize_t n = write(s->wake_fd, &one, sizeof one);
    (void)n; /* a full counter is awake anyway */
    return 0;
}

void fidbus_serve_stop(struct fidbus_client *c)
{
    if (!c || !c->serve)
        return;
    int saved = errno; /* a signal handler must not change it */
    atomic_store(&c->serve->stop, 1);
    uint64_t one = 1;
    ssize_t n = write(c->serve->wake_fd, &one, sizeof one);
    (void)n;
    errno = saved;
}

/* ---------------------------------------------------------------- loop */

enum fb_until { FB_UNTIL_STOP, FB_UNTIL_REGISTERED, FB_UNTIL_UNREGISTERED };

/* Writes what is buffered if the socket takes it now. */
static void write_now(struct fidbus_client *c)
{
    struct fb_wait w = {.kind = FB_WAIT_NONE, .no_reconnect = true};
    if (c->fd >= 0 && c->out_sent < c->out.len)
        (void)fb_client_pump(c, &w, now_ms());
}

/*
 * Disconnected: the next attempt when the backoff allows it, and until
 * then a wait that fidbus_serve_stop and fidbus_call_done interrupt (the
 * pump's own reconnection loop would not notice them).
 */
static int wait_reconnect(struct fidbus_client *c, int64_t deadline, struct fb_wait *w)
{
    int64_t now = now_ms();
    if (now >= c->next_attempt) {
        fb_client_reconnect_if_due(c);
        return 0;
    }
    int left = remaining(deadline);
    if (left == 0)
        return -ETIMEDOUT;
    int64_t wait = c->next_attempt - now;
    if (left > 0 && wait > left)
        wait = left;
    struct pollfd p = {.fd = c->serve->wake_fd, .events = POLLIN};
    if (poll(&p, 1, (int)wait) > 0)
        w->woken = true;
    return 0;
}

static bool until_met(struct fb_serve *s, enum fb_until u, size_t idx)
{
    if (u == FB_UNTIL_REGISTERED)
        return s->fns[idx].state != FB_FN_REGISTERING;
    for (size_t i = 0; i < s->nfns; i++)
        if (s->fns[i].state == FB_FN_UNREGISTERING)
            return false;
    return true;
}

static int serve_run(struct fidbus_client *c, int64_t deadline, enum fb_until u,
                     size_t idx)
{
    struct fb_serve *s = c->serve;
    for (;;) {
        run_deferred(c);
        take_completions(s);
        int rc = flush_results(c);
        if (rc < 0)
            return rc;
        if (u == FB_UNTIL_STOP) {
            if (atomic_exchange(&s->stop, 0)) {
                write_now(c);
                return FIDBUS_SERVE_STOPPED;
            }
            if (s->err) {
                rc = s->err;
                s->err = 0;
                write_now(c);
                return rc;
            }
        } else if (until_met(s, u, idx)) {
            return 0;
        }
        struct fb_wait w = {.kind = FB_WAIT_SERVE, .wake_fd = s->wake_fd};
        if (c->reconnect && c->fd < 0)
            rc = wait_reconnect(c, deadline, &w);
        else
            rc = fb_client_pump(c, &w, deadline);
        if (w.woken) {
            uint64_t v;
            ssize_t n = read(s->wake_fd, &v, sizeof v);
            (void)n;
        }
        if (rc == -ETIMEDOUT) {
            run_deferred(c);
            take_completions(s);
            if (flush_results(c) == 0)
                write_now(c);
            return u == FB_UNTIL_STOP ? 0 : -ETIMEDOUT;
        }
        if (rc < 0)
            return rc;
    }
}

int fidbus_serve(struct fidbus_client *c, int timeout_ms)
{
    if (!c)
        return -EINVAL;
    if (!c->serve)
        return -ENOENT;
    if (c->serve->in_cb)
        return -EDEADLK;
    return serve_run(c, deadline_in(timeout_ms), FB_UNTIL_STOP, 0);
}

int fidbus_register(struct fidbus_client *c, const char *function, const char *signature,
                    const struct fidbus_serve_opts *opts, fidbus_call_fn cb, void *arg,
                    uint64_t *funcid)
{
    if (funcid)
        *funcid = 0;
    if (!c || !function || !cb || !fidbus_canonical_valid(function, strlen(function)))
        return -EINVAL;
    if (!signature)
        signature = "";
    if (strlen(signature) > FIDBUS_SIGNATURE_MAX)
        return -EINVAL;
    if (opts &&
        opts->size < offsetof(struct fidbus_serve_opts, flags) + sizeof(opts->flags))
        return -EINVAL;
    if (c->dead)
        return c->dead;
    int rc = serve_init(c);
    if (rc < 0)
        return rc;
    struct fb_serve *s = c->serve;
    if (s->in_cb)
        return -EDEADLK;
    size_t idx = s->nfns;
    for (size_t i = 0; i < s->nfns; i++) {
        if (s->fns[i].state == FB_FN_FREE) {
            if (idx == s->nfns)
                idx = i;
        } else if (strcmp(s->fns[i].function, function) == 0) {
            return -EEXIST;
        }
    }
    if (idx == s->nfns) {
        if (s->nfns == s->capfns) {
            size_t cap = s->capfns ? s->capfns * 2 : 8;
            struct fb_serve_fn *v = realloc(s->fns, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            s->fns = v;
            s->capfns = cap;
        }
        memset(&s->fns[s->nfns++], 0, sizeof(*s->fns));
    }
    struct fb_serve_fn *f = &s->fns[idx];
    f->function = strdup(function);
    f->signature = strdup(signature);
    if (!f->function || !f->signature) {
        fn_clear(f);
        return -ENOMEM;
    }
    f->funcid = fidbus_funcid(function);
    if (opts) {
        f->credit = opts->credit;
        f->timeout_ms = opts->timeout_ms;
        f->flags = opts->flags & FIDBUS_FLAG_IDEMPOTENT;
    }
    f->cb = cb;
    f->arg = arg;
    fb_client_probe(c);
    if (c->reconnect && c->fd < 0) {
        /* Registered with the connection that comes next. */
        f->state = FB_FN_REGISTERING;
        f->seq = 0;
    } else if ((rc = send_register(c, f)) < 0) {
        fn_clear(f);
        return rc;
    }
    rc = serve_run(c, deadline_in(c->timeout_ms), FB_UNTIL_REGISTERED, idx);
    f = &s->fns[idx];
    if (rc < 0 && rc != -ETIMEDOUT && f->state == FB_FN_REGISTERING) {
        fn_clear(f); /* the connection failed: never registered */
        return rc;
    }
    if (rc == 0 && f->state == FB_FN_REFUSED) {
        rc = fb_client_proto_rc(f->code);
        if (f->again)
            s->err = 0; /* returned here, not by fidbus_serve too */
        fn_clear(f);
    }
    if (rc == 0 && funcid)
        *funcid = f->funcid;
    return rc;
}

int fidbus_unregister(struct fidbus_client *c, const char *function)
{
    if (!c)
        return -EINVAL;
    struct fb_serve *s = c->serve;
    if (!s)
        return -ENOENT;
    if (s->in_cb)
        return -EDEADLK;
    uint32_t longest = 0;
    bool any = false;
    if (c->reconnect && c->fd < 0) {
        /* The connection that registered them is gone, and with it every
         * registration and held call: nothing to drain. */
        for (size_t i = 0; i < s->nfns; i++) {
            struct fb_serve_fn *f = &s->fns[i];
            if (f->state != FB_FN_FREE &&
                (!function || strcmp(f->function, function) == 0)) {
                fn_clear(f);
                any = true;
            }
        }
        return any ? 0 : -ENOENT;
    }
    for (size_t i = 0; i < s->nfns; i++) {
        struct fb_serve_fn *f = &s->fns[i];
        if (f->state == FB_FN_FREE || (function && strcmp(f->function, function) != 0))
            continue;
        if (f->state == FB_FN_REFUSED || (c->fd < 0 && f->state == FB_FN_REGISTERING)) {
            fn_clear(f); /* not registered with the daemon */
            any = true;
            continue;
        }
        if (f->state != FB_FN_REGISTERED && f->state != FB_FN_UNREGISTERING)
            continue;
        any = true;
        uint32_t t = f->timeout_ms ? f->timeout_ms : FB_TIMEOUT_DEFAULT_MS;
        if (t > longest)
            longest = t;
        if (f->state == FB_FN_REGISTERED) {
            int rc = send_unregister(c, f);
            if (rc < 0)
                return rc;
        }
    }
    if (!any)
        return -ENOENT;
    int64_t deadline =
        c->timeout_ms < 0 ? -1 : now_ms() + (int64_t)longest + (int64_t)c->timeout_ms;
    return serve_run(c, deadline, FB_UNTIL_UNREGISTERED, 0);
}
