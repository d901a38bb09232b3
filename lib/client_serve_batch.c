/*
 * lib/client_serve_batch.c -- which answered calls one RESULT may answer
 * (fb_held_flush, declared in lib/client_serve.h): the serving client's
 * batching rule, kept apart from the I/O in lib/client_serve.c so that
 * tests/unit/test_serve_batch.c checks it on plain arrays.
 *
 * `upto` = N answers every call the member holds with an id <= N, so it
 * may only be used over a run of answered calls at the front of the held
 * queue: an open call inside the run would be answered before it ran.
 * Calls already answered one by one (SENT) are no longer held by the
 * daemon and do not break a run.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client_serve.h"

long fb_held_flush(struct fb_held *v, size_t n, bool allow_upto, fb_result_emit emit,
                   void *ctx)
{
    size_t i = 0;
    while (i < n && v[i].state != FB_HELD_OPEN) {
        if (v[i].state == FB_HELD_SENT) {
            i++;
            continue;
        }
        uint8_t code = v[i].code;
        size_t last = i, count = 0;
        for (size_t j = i; j < n; j++) {
            if (v[j].state == FB_HELD_SENT)
                continue;
            if (v[j].state != FB_HELD_DONE || v[j].code != code)
                break;
            last = j;
            count++;
        }
        if (count >= 2 && allow_upto) {
            int rc = emit(ctx, true, v[last].id, code);
            if (rc < 0)
                return rc;
            for (size_t j = i; j <= last; j++)
                v[j].state = FB_HELD_SENT;
        } else {
            for (size_t j = i; j <= last; j++) {
                if (v[j].state != FB_HELD_DONE)
                    continue;
                int rc = emit(ctx, false, v[j].id, code);
                if (rc < 0)
                    return rc;
                v[j].state = FB_HELD_SENT;
            }
        }
        i = last + 1;
    }
    size_t front = i;
    /* Behind an open call: one by one, or the upto would answer it. */
    for (; i < n; i++) {
        if (v[i].state != FB_HELD_DONE)
            continue;
        int rc = emit(ctx, false, v[i].id, v[i].code);
        if (rc < 0)
            return rc;
        v[i].state = FB_HELD_SENT;
    }
    return (long)front;
}
