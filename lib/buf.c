/*
 * Growable output buffer (struct fidbus_buf, see <fidbus/proto.h>).
 *
 * The encoders append whole frames here; a connection keeps one per
 * direction and reuses it, so after warm-up appending allocates nothing.
 * Growth is geometric so a stream of appends costs amortised O(1) per byte.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

int fidbus_buf_reserve(struct fidbus_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return -ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int fidbus_buf_append(struct fidbus_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = fidbus_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void fidbus_buf_free(struct fidbus_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
