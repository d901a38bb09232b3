/*
 * lib/client_reconnect.c -- the bookkeeping behind a reconnecting client
 * (fidbus_client_opts.reconnect_max_ms): the queue of acked-mode PUBLISH
 * frames still waiting for their answer, and the backoff between
 * connection attempts. lib/client.c decides when to use them.
 *
 * A pending frame is kept byte-exact, seq included, so a re-send after a
 * reconnection is the same message the daemon may already have handled:
 * that is what makes delivery "at least once" rather than "twice with
 * different seqs". The queue is an array used as a FIFO: answers come
 * mostly in send order, so answering searches from the oldest live entry
 * and usually stops at the first; answered slots at the front are skipped
 * and the array is compacted once they are half of it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client_private.h"

int fb_pending_add(struct fb_pending *p, uint64_t seq, const uint8_t *frame, size_t len)
{
    if (p->len == p->cap) {
        if (p->head > 0) {
            /* compact: the front is answered entries only */
            memmove(p->v, p->v + p->head, (p->len - p->head) * sizeof(*p->v));
            p->len -= p->head;
            p->head = 0;
        }
        if (p->len == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 64;
            struct fb_pending_frame *v = realloc(p->v, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            p->v = v;
            p->cap = cap;
        }
    }
    uint8_t *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, frame, len);
    p->v[p->len++] = (struct fb_pending_frame){.seq = seq, .frame = copy, .len = len};
    p->count++;
    p->bytes += len;
    return 0;
}

bool fb_pending_answer(struct fb_pending *p, uint64_t seq)
{
    for (size_t i = p->head; i < p->len; i++) {
        struct fb_pending_frame *f = &p->v[i];
        if (!f->frame || f->seq != seq)
            continue;
        free(f->frame);
        f->frame = NULL;
        p->count--;
        p->bytes -= f->len;
        while (p->head < p->len && !p->v[p->head].frame)
            p->head++;
        if (p->head == p->len)
            p->head = p->len = 0;
        return true;
    }
    return false;
}

int fb_pending_append_all(const struct fb_pending *p, struct fidbus_buf *out)
{
    if (fidbus_buf_reserve(out, p->bytes) != 0)
        return -ENOMEM;
    for (size_t i = p->head; i < p->len; i++)
        if (p->v[i].frame)
            fidbus_buf_append(out, p->v[i].frame, p->v[i].len); /* reserved above */
    return 0;
}

void fb_pending_free(struct fb_pending *p)
{
    for (size_t i = p->head; i < p->len; i++)
        free(p->v[i].frame);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

unsigned fb_backoff_next(unsigned cur_ms, unsigned max_ms, uint64_t *rng,
                         unsigned *delay_ms)
{
    unsigned next =
        cur_ms ? (cur_ms > max_ms / 2 ? max_ms : cur_ms * 2) : FB_BACKOFF_FIRST_MS;
    if (next > max_ms)
        next = max_ms;
    /* xorshift64: plenty for spreading retries, no global state */
    uint64_t x = *rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    unsigned half = next / 2;
    *delay_ms = next - half + (unsigned)(x % ((uint64_t)half + 1));
    return next;
}
