/*
 * Remote functions: member choice, credit, the wait queue and the life of
 * a call, from dispatch to its outcome (routing/remote.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/daemon_t.h"
#include "config/config.h"
#include "routing/remote_private.h"
#include "routing/routes.h"

#define g_dir fb_remote_dir

static _Thread_local void *tls_home;
static _Thread_local struct fb_call *tls_free;
static _Thread_local size_t tls_nfree;
#define FREE_MAX 4096u
#define CALL_MIN_CAP 512u

void fb_remote_call_free_mem(struct fb_call *c)
{
    free(c->buf);
    free(c);
}

/* --------------------------------------------------------------- picking */

uint64_t fb_remote_key_hash(const char *value)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t fb_remote_rendezvous(uint64_t khash, uint64_t member_key)
{
    /* splitmix64 of the pair: independent-looking weights per member */
    uint64_t z = khash ^ (member_key * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static bool take_credit(struct fb_member *m)
{
    uint32_t cur = atomic_load_explicit(&m->inflight, memory_order_relaxed);
    while (cur < m->credit)
        if (atomic_compare_exchange_weak_explicit(
                &m->inflight, &cur, cur + 1, memory_order_seq_cst, memory_order_relaxed))
            return true;
    return false;
}

enum pick { PICK_OK, PICK_NO_CREDIT, PICK_NONE };

/* Under the read lock: a member for c with credit taken (and a reference),
 * or why not. */
static enum pick pick(struct fb_rfunc *rf, struct fb_call *c)
{
    const struct fb_mset *ms = __atomic_load_n(&rf->mset, __ATOMIC_CONSUME);
    size_t n = ms ? ms->n : 0;
    if (c->sticky) {
        struct fb_member *best = NULL;
        uint64_t bw = 0;
        for (size_t i = 0; i < n; i++) {
            struct fb_member *m = ms->m[i];
            if (m->key == c->exclude ||
                atomic_load_explicit(&m->gone, memory_order_relaxed))
                continue;
            uint64_t wgt = fb_remote_rendezvous(c->khash, m->key);
            if (!best || wgt > bw)
                best = m, bw = wgt;
        }
        if (!best)
            return PICK_NONE;
        if (!take_credit(best))
            return PICK_NO_CREDIT;
        atomic_fetch_add_explicit(&best->refs, 1, memory_order_relaxed);
        c->m = best;
        return PICK_OK;
    }
    for (int tries = 0; tries < 4; tries++) {
        struct fb_member *best = NULL;
        uint32_t bi = 0, bc = 1;
        size_t start =
            n ? atomic_fetch_add_explicit(&rf->rr, 1, memory_order_relaxed) % n : 0;
        bool any = false;
        for (size_t k = 0; k < n; k++) {
            struct fb_member *m = ms->m[(start + k) % n];
            if (m->key == c->exclude ||
                atomic_load_explicit(&m->gone, memory_order_relaxed))
                continue;
            any = true;
            uint32_t in = atomic_load_explicit(&m->inflight, memory_order_relaxed);
            if (in >= m->credit)
                continue;
            /* lowest in-flight/credit; the first found wins ties, and the
             * start rotates: round robin among equals */
            if (!best || (uint64_t)in * bc < (uint64_t)bi * m->credit)
                best = m, bi = in, bc = m->credit;
        }
        if (!any)
            return PICK_NONE;
        if (!best)
            return PICK_NO_CREDIT;
        if (take_credit(best)) {
            atomic_fetch_add_explicit(&best->refs, 1, memory_order_relaxed);
            c->m = best;
            return PICK_OK;
        }
    }
    return PICK_NO_CREDIT;
}

static void read_lock(void)
{
    urcu_memb_read_lock();
}

static void read_unlock(void)
{
    FB_ROUTES_READ_DONE();
    urcu_memb_read_unlock();
}

/* Places c: on a member with credit, on the wait queue, or UNAVAILABLE
 * when no member is left to take it. */
static void place(struct fb_call *c)
{
    struct fb_rfunc *rf = c->fn->remote;
    read_lock();
    enum pick p = pick(rf, c);
    if (p == PICK_NO_CREDIT) {
        /* waiting is raised before the second try: a member giving credit
         * back reads it after its decrement, so either this try sees the
         * credit or that member sees a waiter and kicks (remote.h). */
        pthread_mutex_lock(&rf->lock);
        atomic_fetch_add(&rf->waiting, 1);
        p = pick(rf, c);
        if (p == PICK_NO_CREDIT) {
            c->next = NULL;
            c->prev = rf->wq_tail;
            if (rf->wq_tail)
                rf->wq_tail->next = c;
            else
                rf->wq_head = c;
            rf->wq_tail = c;
        } else {
            atomic_fetch_sub(&rf->waiting, 1);
        }
        pthread_mutex_unlock(&rf->lock);
    }
    read_unlock();
    if (p == PICK_OK)
        g_dir->ops.deliver(c);
    else if (p == PICK_NONE)
        fb_remote_finish(c, FIDBUS_UNAVAILABLE);
}

void fb_remote_kick(struct fb_func *fn)
{
    struct fb_rfunc *rf = fn->remote;
    if (!atomic_load(&rf->waiting))
        return;
    struct fb_call *go = NULL, **tail = &go, *dead = NULL;
    read_lock();
    pthread_mutex_lock(&rf->lock);
    while (rf->wq_head) {
        struct fb_call *c = rf->wq_head;
        enum pick p = pick(rf, c);
        if (p == PICK_NO_CREDIT)
            break;
        rf->wq_head = c->next;
        if (!rf->wq_head)
            rf->wq_tail = NULL;
        atomic_fetch_sub(&rf->waiting, 1);
        c->next = NULL;
        if (p == PICK_OK) {
            *tail = c;
            tail = &c->next;
        } else {
            c->next = dead;
            dead = c;
        }
    }
    pthread_mutex_unlock(&rf->lock);
    read_unlock();
    while (go) {
        struct fb_call *c = go;
        go = c->next;
        g_dir->ops.deliver(c);
    }
    while (dead) {
        struct fb_call *c = dead;
        dead = c->next;
        fb_remote_finish(c, FIDBUS_UNAVAILABLE);
    }
}

/* ------------------------------------------------------------------ calls */

static struct fb_call *call_alloc(size_t need)
{
    struct fb_call *c = tls_free;
    if (c && tls_home) {
        tls_free = c->next;
        tls_nfree--;
        if (c->cap >= need)
            return c;
        uint8_t *b = realloc(c->buf, need);
        if (!b) {
            fb_remote_call_free_mem(c);
            return NULL;
        }
        c->buf = b;
        c->cap = need;
        return c;
    }
    c = malloc(sizeof *c);
    if (!c)
        return NULL;
    size_t cap = need < CALL_MIN_CAP ? CALL_MIN_CAP : need;
    c->buf = malloc(cap);
    if (!c->buf) {
        free(c);
        return NULL;
    }
    c->cap = cap;
    return c;
}

void fb_remote_call_release(struct fb_call *c)
{
    if (!c->heap && tls_home && tls_nfree < FREE_MAX) {
        c->next = tls_free;
        tls_free = c;
        tls_nfree++;
        return;
    }
    fb_remote_call_free_mem(c);
}

void fb_remote_thread_end(void)
{
    while (tls_free) {
        struct fb_call *c = tls_free;
        tls_free = c->next;
        fb_remote_call_free_mem(c);
    }
    tls_nfree = 0;
    tls_home = NULL;
}

void fb_remote_set_thread_home(void *w)
{
    tls_home = w;
}

/* Copies ev into c->buf: tags, then id and tag strings, then payload. */
static size_t event_size(const struct fidbus_event *ev, size_t *strs)
{
    size_t s = strlen(ev->id) + 1;
    for (size_t i = 0; i < ev->ntags; i++)
        s += strlen(ev->tags[i].key) + strlen(ev->tags[i].value) + 2;
    *strs = s;
    return ev->ntags * sizeof(struct fidbus_tag) + s + ev->payload_len;
}

static void event_copy(struct fb_call *c, const struct fidbus_event *ev)
{
    uint8_t *p = c->buf;
    struct fidbus_tag *tags = (struct fidbus_tag *)p;
    p += ev->ntags * sizeof *tags;
    char *s = (char *)p;
    size_t l = strlen(ev->id) + 1;
    memcpy(s, ev->id, l);
    c->ev = *ev;
    c->ev.id = s;
    s += l;
    for (size_t i = 0; i < ev->ntags; i++) {
        l = strlen(ev->tags[i].key) + 1;
        memcpy(s, ev->tags[i].key, l);
        tags[i].key = s;
        s += l;
        l = strlen(ev->tags[i].value) + 1;
        memcpy(s, ev->tags[i].value, l);
        tags[i].value = s;
        s += l;
    }
    c->ev.tags = ev->ntags ? tags : NULL;
    if (ev->payload_len) {
        memcpy(s, ev->payload, ev->payload_len);
        c->ev.payload = (const uint8_t *)s;
    } else {
        c->ev.payload = NULL;
    }
}

int fb_remote_call(struct fb_remote *rd, struct fb_func *fn, const struct fb_route *r,
                   const struct fidbus_event *ev, struct fb_waiter *waiter)
{
    struct fb_rfunc *rf = fn->remote;
    (void)rd;
    if (!fb_remote_has_members(fn)) {
        atomic_fetch_add_explicit(&rf->unavailable, 1, memory_order_relaxed);
        fb_striped_add(&fn->calls, 1);
        fb_striped_add(&fn->errors, 1);
        return FIDBUS_UNAVAILABLE;
    }
    size_t strs;
    size_t need = event_size(ev, &strs);
    bool heap = !(waiter && tls_home);
    struct fb_call *c = call_alloc(need ? need : 1);
    if (!c)
        return -ENOMEM;
    event_copy(c, ev);
    c->next = c->prev = NULL;
    c->fn = fn;
    c->m = NULL;
    c->waiter = heap ? NULL : waiter;
    c->home = heap ? NULL : tls_home;
    c->heap = heap;
    c->exclude = 0;
    c->call_id = 0;
    c->written_ns = c->deadline_ns = 0;
    c->attempt = 1;
    c->outcome = 0;
    c->written = false;
    c->ran_maybe = false;
    c->sticky = false;
    if (r && r->split_by) {
        for (size_t i = 0; i < ev->ntags; i++) {
            if (strcmp(ev->tags[i].key, r->split_by) == 0) {
                c->sticky = true;
                c->khash = fb_remote_key_hash(ev->tags[i].value);
                break;
            }
        }
    }
    place(c);
    return 0;
}

/* c's member lets go of it (credit and reference). */
static void drop_member(struct fb_call *c)
{
    struct fb_member *m = c->m;
    if (!m)
        return;
    c->m = NULL;
    atomic_fetch_sub_explicit(&m->inflight, 1, memory_order_seq_cst);
    fb_remote_member_put(m);
}

/* c's end, counted; took_ns: CALL written to RESULT read (0: no RESULT).
 * The histogram counts every call, as for plugin functions (base/latency.h:
 * one in FB_LAT_SAMPLE per thread timed, the others in its bucket), so
 * stats' latency_count is calls; a call without a RESULT is untimed. */
static void finish(struct fb_call *c, int outcome, uint64_t took_ns)
{
    struct fb_func *fn = c->fn;
    c->outcome = outcome;
    unsigned stripe = fb_stripe_id();
    _Atomic uint64_t *mine = &fn->calls.s[stripe].v;
    uint64_t at = atomic_load_explicit(mine, memory_order_relaxed);
    if (took_ns && at % FB_LAT_SAMPLE == 0)
        fb_hist_timed(&fn->hist, stripe, at, took_ns);
    atomic_fetch_add_explicit(mine, 1, memory_order_relaxed);
    /* quarantine_after counts a remote function's failed calls too */
    fb_func_note_result(fn, outcome, g_dir->d->cfg->quarantine_after);
    if (outcome) {
        fb_striped_add(&fn->errors, 1);
        if (outcome == FIDBUS_UNAVAILABLE)
            atomic_fetch_add_explicit(&fn->remote->unavailable, 1, memory_order_relaxed);
    }
    if (c->home)
        g_dir->ops.finish(c);
    else
        fb_remote_call_free_mem(c);
}

void fb_remote_finish(struct fb_call *c, int outcome)
{
    finish(c, outcome, 0);
}

/* Again on another member (attempt already set), or UNAVAILABLE. */
static void redeliver(struct fb_call *c, uint64_t exclude, bool counted)
{
    c->exclude = exclude;
    c->written = false;
    if (counted)
        atomic_fetch_add_explicit(&c->fn->remote->redelivered, 1, memory_order_relaxed);
    place(c);
}

void fb_remote_result(struct fb_call *c, uint64_t code, uint64_t now_ns)
{
    struct fb_member *m = c->m;
    struct fb_func *fn = c->fn;
    code = fidbus_result_outcome(code);
    uint64_t n = atomic_fetch_add_explicit(&m->calls, 1, memory_order_relaxed);
    if (code != FIDBUS_OK)
        atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
    /* sampled as plugin calls are (base/latency.h): one in FB_LAT_SAMPLE
     * per member, its first included */
    uint64_t took = c->written_ns && now_ns > c->written_ns ? now_ns - c->written_ns : 0;
    if (n % FB_LAT_SAMPLE == 0 && took)
        fb_lat_record(&fn->latency, took);
    uint32_t attempts = m->attempts;
    uint64_t key = m->key;
    drop_member(c);
    if (code == FIDBUS_RETRY) {
        if (c->attempt < attempts) {
            c->attempt++;
            redeliver(c, key, true);
        } else {
            fb_remote_finish(c, FIDBUS_UNAVAILABLE);
        }
    } else {
        finish(c, code == FIDBUS_OK ? 0 : FIDBUS_HANDLER_FAILED, took);
    }
    fb_remote_kick(fn);
}

static void lost_or_late(struct fb_call *c)
{
    struct fb_member *m = c->m;
    struct fb_func *fn = c->fn;
    bool ran_maybe = c->written;
    bool again = !ran_maybe || (m->idempotent && c->attempt < m->attempts);
    uint64_t key = m->key;
    drop_member(c);
    c->ran_maybe |= ran_maybe;
    if (again) {
        if (ran_maybe)
            c->attempt++;
        redeliver(c, key, ran_maybe);
    } else {
        fb_remote_finish(c, FIDBUS_UNAVAILABLE);
    }
    fb_remote_kick(fn);
}

void fb_remote_lost(struct fb_call *c)
{
    lost_or_late(c);
}

void fb_remote_timeout(struct fb_call *c)
{
    atomic_fetch_add_explicit(&c->m->timeouts, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->fn->remote->timeouts, 1, memory_order_relaxed);
    lost_or_late(c);
}
