/*
 * Frame reassembly (struct fidbus_frame_reader, see <fidbus/proto.h>).
 *
 * A connection reads straight into the reader's buffer and gets whole frame
 * bodies back as slices of it, so a frame is never copied on the way from
 * the socket to the decoder. The only copies are:
 *   - compaction: the unconsumed tail (an incomplete frame, never a whole
 *     one that was already handed out) moves to the front of the buffer
 *     when the free space behind it runs low or the frame would not fit;
 *   - growth: when the frame being assembled is larger than the buffer, the
 *     buffer is reallocated to exactly the size of that frame (header
 *     included), and never beyond max_frame + 4 bytes. A peer therefore
 *     cannot make us allocate more than its current frame needs.
 * Once a large frame has been consumed and the buffer is empty, the buffer
 * shrinks back to the default size, so one big publish does not pin a
 * megabyte per idle connection.
 *
 * A zero length or a length above max_frame is fatal for the stream: there
 * is no way to find the next frame boundary, so the caller must close.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

#define FRAME_DEFAULT_CAP (64u * 1024u)
/* A buffer that grew past this for a big frame shrinks back when empty. */
#define FRAME_SHRINK_ABOVE (4u * FRAME_DEFAULT_CAP)
/* Compact when less than this fraction of the buffer is free behind the
 * data: moving a short tail is cheaper than issuing short reads. */
#define FRAME_COMPACT_DIV 4u

static inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t frame_limit(const struct fidbus_frame_reader *r)
{
    return (size_t)r->max_frame + FIDBUS_FRAME_HEADER;
}

int fidbus_frame_reader_init(struct fidbus_frame_reader *r, uint32_t max_frame,
                             size_t initial_cap)
{
    memset(r, 0, sizeof(*r));
    /* 0 is not a usable limit (a frame has at least one byte): take it to
     * mean the default, like initial_cap. */
    r->max_frame = max_frame ? max_frame : FIDBUS_MAX_FRAME_DEFAULT;
    size_t cap = initial_cap ? initial_cap : FRAME_DEFAULT_CAP;
    if (cap > frame_limit(r))
        cap = frame_limit(r);
    if (cap < FIDBUS_FRAME_HEADER + 1)
        cap = FIDBUS_FRAME_HEADER + 1;
    r->buf = malloc(cap);
    if (!r->buf)
        return -ENOMEM;
    r->cap = cap;
    return 0;
}

void fidbus_frame_reader_destroy(struct fidbus_frame_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

static void compact(struct fidbus_frame_reader *r)
{
    size_t pending = r->end - r->start;
    if (r->start == 0)
        return;
    if (pending)
        memmove(r->buf, r->buf + r->start, pending);
    r->start = 0;
    r->end = pending;
}

static int resize(struct fidbus_frame_reader *r, size_t cap)
{
    /* Compact first so realloc copies only the pending bytes that matter. */
    compact(r);
    uint8_t *p = realloc(r->buf, cap);
    if (!p)
        return -ENOMEM;
    r->buf = p;
    r->cap = cap;
    return 0;
}

int fidbus_frame_reader_space(struct fidbus_frame_reader *r, uint8_t **ptr, size_t *len)
{
    size_t pending = r->end - r->start;

    if (pending == 0) {
        r->start = r->end = 0;
        /* If shrinking fails the big buffer stays; it is still usable. */
        if (r->cap > FRAME_SHRINK_ABOVE)
            (void)resize(r, FRAME_DEFAULT_CAP);
    } else if (pending >= FIDBUS_FRAME_HEADER) {
        uint32_t flen = load_be32(r->buf + r->start);
        /* A bad length is reported by fidbus_frame_next; do not grow for it. */
        if (flen != 0 && flen <= r->max_frame) {
            size_t need = (size_t)flen + FIDBUS_FRAME_HEADER;
            if (need > r->cap) {
                int rc = resize(r, need);
                if (rc)
                    return rc;
            } else if (r->start + need > r->cap) {
                compact(r);
            }
        }
    }
    if (r->start > 0 && r->cap - r->end < r->cap / FRAME_COMPACT_DIV)
        compact(r);
    *ptr = r->buf + r->end;
    *len = r->cap - r->end;
    return 0;
}

void fidbus_frame_reader_commit(struct fidbus_frame_reader *r, size_t n)
{
    if (n > r->cap - r->end)
        n = r->cap - r->end; /* a caller bug; never run past the buffer */
    r->end += n;
}

int fidbus_frame_next(struct fidbus_frame_reader *r, const uint8_t **body, size_t *len)
{
    size_t pending = r->end - r->start;
    if (pending < FIDBUS_FRAME_HEADER)
        return 0;
    uint32_t flen = load_be32(r->buf + r->start);
    if (flen == 0)
        return -EBADMSG; /* not FIDBUS_MALFORMED: it equals 1, "a frame" */
    if (flen > r->max_frame)
        return FIDBUS_TOO_LARGE;
    if (pending - FIDBUS_FRAME_HEADER < flen)
        return 0;
    *body = r->buf + r->start + FIDBUS_FRAME_HEADER;
    *len = flen;
    r->start += FIDBUS_FRAME_HEADER + flen;
    return 1;
}
