/*
 * The worker's timer sweep over its bus connections (fb_conn_sweep,
 * every quarter of the shortest of the idle timeouts and input_soft_ms;
 * worker.c).
 *
 * Idle timeouts: a connection that has read nothing for
 * idle_timeout_{unix,tcp}_ms and owes no answers is sent ERROR BUSY and
 * closed.
 *
 * Input: the reader holds at most one frame (max_frame, the hard limit:
 * ERROR TOO_LARGE, close) plus one read. A frame larger than its default
 * buffer grows the buffer, so a client that sends most of a big frame and
 * stops pins that memory. The same sweep therefore watches the frame
 * being assembled: once more than input_soft bytes of one unfinished
 * frame have sat for input_soft_ms, the connection is sent ERROR BUSY and
 * closed, as Redis treats a client over its soft limit for too long. Not
 * while the daemon itself has stopped reading (a pause or a yield): then
 * the frame cannot finish, and that is not the client's doing. The frame
 * is known by its stream offset, so a client that keeps finishing big
 * frames is never closed for them. input_soft = 0 watches every
 * unfinished frame, down to a partial length: a deadline for a whole
 * frame, against a slowloris where neither AUTH nor the per-uid limit
 * applies (TCP with tcp_auth = none).
 */
#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "bus/conn_private.h"
#include "bus/member.h"

/* The length field of the frame being assembled (the caller checked that
 * its 4 bytes are there): big-endian on the wire, read with libc's
 * be32toh rather than another copy of lib/frame.c's byte loader. */
static uint32_t pending_frame_len(const struct fidbus_frame_reader *r)
{
    uint32_t be;
    memcpy(&be, r->buf + r->start, sizeof be);
    return be32toh(be);
}

/* True once one unfinished frame has held more than in_soft bytes for
 * in_soft_ns while the daemon was reading (the header comment). */
static bool input_overdue(struct fb_conn *c, uint64_t now)
{
    const struct fidbus_frame_reader *r = &c->st.rd;
    size_t pending = r->end - r->start;
    /* While the daemon reads, every whole frame has been handled: what is
     * left is part of one (or of its length). */
    bool watch =
        c->in_soft_ns && pending > c->in_soft && (c->st.flags & FB_S_READING) &&
        !(c->st.flags & (C_PAUSED | C_YIELD | FB_S_FLUSH_CLOSE | FB_S_DRAINING)) &&
        (pending < FIDBUS_FRAME_HEADER ||
         (uint64_t)pending_frame_len(r) + FIDBUS_FRAME_HEADER > pending);
    if (!watch) {
        c->in_since_ns = 0;
        return false;
    }
    uint64_t at = c->st.bytes_in - pending;
    if (!c->in_since_ns || at != c->in_frame_at) {
        c->in_frame_at = at;
        c->in_since_ns = now;
        return false;
    }
    return now - c->in_since_ns >= c->in_soft_ns;
}

/* After the ERROR of a sweep close: no more input, and the sweep closes
 * the handle if the client has not gone FB_LINGER_MS later. */
static void sweep_close(struct fb_conn *c, uint64_t now)
{
    c->closing_ns = now;
    c->st.flags |= FB_S_FLUSH_CLOSE;
    fb_stream_read_stop(&c->st);
    fb_stream_flush(&c->st);
}

void fb_conn_sweep(struct fb_worker *w)
{
    uint64_t now = fb_now_ns();
    for (struct fb_conn *c = w->conns; c; c = c->next) {
        if (c->auth || (c->st.flags & FB_S_CLOSING))
            continue;
        if (c->closing_ns) {
            if (now - c->closing_ns > FB_LINGER_MS * 1000000ull)
                fb_stream_close(&c->st);
            continue;
        }
        if (input_overdue(c, now)) {
            fb_conn_count_limit(c, FB_LIM_INPUT_SOFT);
            fb_stream_send_error(&c->st, false, 0, FIDBUS_BUSY, false, 0,
                                 "a frame unfinished for %llu ms with %zu bytes of it "
                                 "buffered (input_soft = %u, input_soft_ms); closing",
                                 (unsigned long long)(c->in_soft_ns / 1000000u),
                                 c->st.rd.end - c->st.rd.start, (unsigned)c->in_soft);
            sweep_close(c, now);
            continue;
        }
        /* A connection that serves remote functions waits for calls: it is
         * not idle (bus/member.c). */
        if (!c->idle_ns || c->wq_head || (c->rc && c->rc->members) ||
            now - c->last_ns < c->idle_ns)
            continue;
        if (c->st.flags & (FB_S_FLUSH_CLOSE | FB_S_DRAINING)) {
            c->closing_ns = now; /* closing already: only bound how long it lingers */
            continue;
        }
        fb_conn_count_limit(c, FB_LIM_IDLE_TIMEOUT);
        fb_stream_send_error(&c->st, false, 0, FIDBUS_BUSY, false, 0,
                             "idle for %llu ms (idle_timeout_%s_ms); closing",
                             (unsigned long long)(c->idle_ns / 1000000u),
                             c->st.u.h.type == UV_TCP ? "tcp" : "unix");
        sweep_close(c, now);
    }
}
