/*
 * lib/client_answers.c -- the answers a call read but did not wait for.
 *
 * Every call that moves bytes also reads what the server sends (see
 * lib/client.c). An ACK or ERROR carrying a seq that is not the answer the
 * call waits for belongs to a pipelining caller (fidbus_publish_seq, read
 * back with fidbus_client_recv), so it is kept here, in arrival order,
 * until fidbus_client_recv hands it out. The ring grows by doubling and is
 * reused, so a steady pipeline allocates nothing per answer; only an
 * ERROR's message is copied (ERRORs are not the hot path).
 *
 * Bound: the daemon answers a frame at most once, so the ring never holds
 * more entries than seq-carrying frames the client sent and has not read
 * an answer for -- what the caller has in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client_private.h"

int fb_answers_push(struct fb_answers *q, const struct fidbus_answer *a,
                    struct fidbus_slice message)
{
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct fb_kept *v = malloc(cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        /* unroll the ring into the front of the new array */
        for (size_t i = 0; i < q->len; i++)
            v[i] = q->v[(q->head + i) & (q->cap - 1)];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    struct fb_kept *k = &q->v[(q->head + q->len) & (q->cap - 1)];
    k->ans = *a;
    k->message = NULL;
    if (a->type == FIDBUS_MSG_ERROR) {
        size_t n =
            message.len < FB_LAST_ERROR_MAX - 1 ? message.len : FB_LAST_ERROR_MAX - 1;
        k->message = malloc(n + 1);
        if (!k->message)
            return -ENOMEM;
        if (n)
            memcpy(k->message, message.ptr, n);
        k->message[n] = '\0';
    }
    q->len++;
    return 0;
}

bool fb_answers_pop(struct fb_answers *q, struct fidbus_answer *a, char **message)
{
    if (q->len == 0)
        return false;
    struct fb_kept *k = &q->v[q->head];
    *a = k->ans;
    *message = k->message;
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return true;
}

void fb_answers_free(struct fb_answers *q)
{
    for (size_t i = 0; i < q->len; i++)
        free(q->v[(q->head + i) & (q->cap - 1)].message);
    free(q->v);
    memset(q, 0, sizeof(*q));
}
