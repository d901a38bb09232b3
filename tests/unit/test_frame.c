/*
 * Unit tests for the frame reader (lib/frame.c): a byte stream split at any
 * point must come out as the same whole frames, handed out in place (no
 * copy), with the buffer growing only as far as the current frame needs.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

/* A stream of frames with recognisable bodies. */
struct stream {
    uint8_t *data;
    size_t len;
    size_t nframes;
    size_t sizes[64];
    size_t offsets[64]; /* of each body in data */
};

static uint8_t body_byte(size_t frame, size_t i)
{
    return (uint8_t)(frame * 31 + i * 7 + 1);
}

static void stream_add(struct stream *s, size_t n)
{
    s->data = realloc(s->data, s->len + 4 + n);
    ck_assert_ptr_nonnull(s->data);
    uint8_t *p = s->data + s->len;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    for (size_t i = 0; i < n; i++)
        p[4 + i] = body_byte(s->nframes, i);
    s->offsets[s->nframes] = s->len + 4;
    s->sizes[s->nframes++] = n;
    s->len += 4 + n;
}

static void stream_free(struct stream *s)
{
    free(s->data);
    memset(s, 0, sizeof(*s));
}

/* Pulls every complete frame, checking each against the stream; returns the
 * number of frames seen so far. Also checks that bodies are slices of the
 * reader's own buffer (zero copy). */
static size_t drain(struct fidbus_frame_reader *r, const struct stream *s, size_t seen)
{
    const uint8_t *body;
    size_t len;
    int rc;
    while ((rc = fidbus_frame_next(r, &body, &len)) == 1) {
        ck_assert(seen < s->nframes && len == s->sizes[seen]);
        ck_assert(body >= r->buf && body + len <= r->buf + r->cap);
        /* memcmp, not an assertion per byte: Check's asserts are slow. */
        ck_assert(memcmp(body, s->data + s->offsets[seen], len) == 0);
        seen++;
    }
    ck_assert_int_eq(rc, 0);
    return seen;
}

/* Feeds data[0..n) in reads of at most `chunk` bytes. */
static size_t feed(struct fidbus_frame_reader *r, const struct stream *s, size_t from,
                   size_t n, size_t chunk, size_t seen)
{
    size_t off = from;
    while (off < from + n) {
        uint8_t *p;
        size_t room;
        ck_assert(fidbus_frame_reader_space(r, &p, &room) == 0 && room > 0 &&
                  r->cap <= (size_t)r->max_frame + 4);
        size_t k = from + n - off;
        if (k > chunk)
            k = chunk;
        if (k > room)
            k = room;
        memcpy(p, s->data + off, k);
        fidbus_frame_reader_commit(r, k);
        off += k;
        seen = drain(r, s, seen);
    }
    return seen;
}

static void make_mixed(struct stream *s)
{
    static const size_t sizes[] = {1, 2, 3, 4, 5, 17, 255, 256, 1000, 4099, 1, 70};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        stream_add(s, sizes[i]);
}

START_TEST(test_frame_every_split_point)
{
    struct stream s = {0};
    make_mixed(&s);
    /* A small initial buffer so that splits also cross compaction and growth. */
    for (size_t k = 0; k <= s.len; k++) {
        struct fidbus_frame_reader r;
        ck_assert_int_eq(fidbus_frame_reader_init(&r, 8192, 64), 0);
        size_t seen = feed(&r, &s, 0, k, SIZE_MAX, 0);
        seen = feed(&r, &s, k, s.len - k, SIZE_MAX, seen);
        ck_assert_uint_eq(seen, s.nframes);
        ck_assert_uint_eq(fidbus_frame_reader_pending(&r), 0);
        fidbus_frame_reader_destroy(&r);
    }
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_one_byte_reads)
{
    struct stream s = {0};
    make_mixed(&s);
    stream_add(&s, 100000); /* grows past the initial buffer byte by byte */
    stream_add(&s, 3);
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 200000, 0), 0);
    ck_assert_uint_eq(feed(&r, &s, 0, s.len, 1, 0), s.nframes);
    ck_assert_uint_eq(fidbus_frame_reader_pending(&r), 0);
    fidbus_frame_reader_destroy(&r);
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_odd_read_sizes)
{
    struct stream s = {0};
    make_mixed(&s);
    static const size_t chunks[] = {2, 3, 5, 7, 13, 64, 999, 4096};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct fidbus_frame_reader r;
        ck_assert_int_eq(fidbus_frame_reader_init(&r, 8192, 128), 0);
        ck_assert_uint_eq(feed(&r, &s, 0, s.len, chunks[c], 0), s.nframes);
        fidbus_frame_reader_destroy(&r);
    }
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_exactly_max_frame)
{
    struct stream s = {0};
    stream_add(&s, 1000);
    stream_add(&s, 1);
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1000, 0), 0);
    ck_assert_uint_le(r.cap, 1004); /* the initial buffer is capped too */
    ck_assert_uint_eq(feed(&r, &s, 0, s.len, 7, 0), 2);
    ck_assert_uint_le(r.cap, 1004);
    fidbus_frame_reader_destroy(&r);
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_one_byte_over_max)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1000, 16), 0);
    static const uint8_t hdr[] = {0, 0, 0x03, 0xe9, 'x'}; /* 1001 */
    uint8_t *p;
    size_t room;
    const uint8_t *body;
    size_t len;
    /* The header alone, in two reads, then a body byte: never grows. */
    for (size_t i = 0; i < sizeof(hdr); i++) {
        ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
        *p = hdr[i];
        fidbus_frame_reader_commit(&r, 1);
        int rc = fidbus_frame_next(&r, &body, &len);
        ck_assert_int_eq(rc, i < 3 ? 0 : FIDBUS_TOO_LARGE);
    }
    ck_assert_uint_eq(r.cap, 16);
    /* The error is sticky: the stream cannot be resynchronised. */
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), FIDBUS_TOO_LARGE);
    fidbus_frame_reader_destroy(&r);

    /* The largest possible length is refused too. */
    ck_assert_int_eq(fidbus_frame_reader_init(&r, FIDBUS_MAX_FRAME_DEFAULT, 0), 0);
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    memset(p, 0xff, 4);
    fidbus_frame_reader_commit(&r, 4);
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), FIDBUS_TOO_LARGE);
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    ck_assert_uint_le(r.cap, FIDBUS_MAX_FRAME_DEFAULT + 4);
    fidbus_frame_reader_destroy(&r);
}
END_TEST

START_TEST(test_frame_zero_length)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1000, 0), 0);
    /* One good frame, then a zero length: the good one still comes out. */
    static const uint8_t in[] = {0, 0, 0, 1, 0xa0, 0, 0, 0, 0, 0xa0};
    uint8_t *p;
    size_t room;
    const uint8_t *body;
    size_t len;
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    memcpy(p, in, sizeof(in));
    fidbus_frame_reader_commit(&r, sizeof(in));
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), 1);
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq(body[0], 0xa0);
    /* -EBADMSG, answered with MALFORMED (which equals 1, "a frame"). */
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), -EBADMSG);
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), -EBADMSG);
    fidbus_frame_reader_destroy(&r);
}
END_TEST

START_TEST(test_frame_growth_only_as_needed)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1u << 20, 32), 0);
    ck_assert_uint_eq(r.cap, 32);

    struct stream s = {0};
    stream_add(&s, 10);
    stream_add(&s, 5000);
    stream_add(&s, 20);
    /* The first frame and the header of the second. */
    size_t seen = feed(&r, &s, 0, 14 + 4, SIZE_MAX, 0);
    ck_assert_uint_eq(seen, 1);
    uint8_t *p;
    size_t room;
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    /* Exactly the second frame: header + 5000, no more. */
    ck_assert_uint_eq(r.cap, 5004);
    ck_assert_uint_ge(room, 5000);
    ck_assert_uint_eq(r.start, 0); /* the partial frame moved to the front */
    seen = feed(&r, &s, 18, s.len - 18, SIZE_MAX, seen);
    ck_assert_uint_eq(seen, 3);
    ck_assert_uint_eq(r.cap, 5004); /* small frames do not grow it further */
    fidbus_frame_reader_destroy(&r);
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_big_frame_then_shrink)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1u << 20, 0), 0);
    size_t initial = r.cap;
    struct stream s = {0};
    stream_add(&s, 1u << 20);
    stream_add(&s, 8);
    ck_assert_uint_eq(feed(&r, &s, 0, 4 + (1u << 20), 65536, 0), 1);
    ck_assert_uint_eq(r.cap, (1u << 20) + 4);
    /* Once the big frame is consumed the memory goes back. */
    uint8_t *p;
    size_t room;
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    ck_assert_uint_eq(r.cap, initial);
    ck_assert_uint_eq(feed(&r, &s, 4 + (1u << 20), 12, SIZE_MAX, 1), 2);
    fidbus_frame_reader_destroy(&r);
    stream_free(&s);
}
END_TEST

START_TEST(test_frame_many_frames_in_one_read)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1000, 0), 0);
    uint8_t *p;
    size_t room;
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    size_t n = room / 8;
    for (size_t i = 0; i < n; i++) {
        uint8_t f[8] = {
            0,         0, 0, 4, (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
            (uint8_t)i};
        memcpy(p + 8 * i, f, 8);
    }
    fidbus_frame_reader_commit(&r, 8 * n);
    const uint8_t *body;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), 1);
        ck_assert_uint_eq(len, 4);
        ck_assert_ptr_eq(body, p + 8 * i + 4); /* in place, not copied */
        uint32_t v = (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 |
                     (uint32_t)body[2] << 8 | body[3];
        ck_assert_uint_eq(v, i);
    }
    ck_assert_int_eq(fidbus_frame_next(&r, &body, &len), 0);
    ck_assert_uint_eq(fidbus_frame_reader_pending(&r), 0);
    fidbus_frame_reader_destroy(&r);
}
END_TEST

START_TEST(test_frame_compacts_partial_tail)
{
    struct fidbus_frame_reader r;
    ck_assert_int_eq(fidbus_frame_reader_init(&r, 1000, 100), 0);
    struct stream s = {0};
    stream_add(&s, 90); /* 94 bytes */
    stream_add(&s, 50); /* header + 2 body bytes arrive with the first */
    size_t seen = feed(&r, &s, 0, 100, SIZE_MAX, 0);
    ck_assert_uint_eq(seen, 1);
    uint8_t *p;
    size_t room;
    ck_assert_int_eq(fidbus_frame_reader_space(&r, &p, &room), 0);
    /* The 6-byte partial frame was moved to the front, not the buffer grown. */
    ck_assert_uint_eq(r.cap, 100);
    ck_assert_uint_eq(r.start, 0);
    ck_assert_uint_eq(r.end, 6);
    ck_assert_uint_eq(room, 94);
    ck_assert_uint_eq(feed(&r, &s, 100, s.len - 100, SIZE_MAX, seen), 2);
    fidbus_frame_reader_destroy(&r);
    stream_free(&s);
}
END_TEST

Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_frame_every_split_point);
    tcase_add_test(tc, test_frame_one_byte_reads);
    tcase_add_test(tc, test_frame_odd_read_sizes);
    tcase_add_test(tc, test_frame_exactly_max_frame);
    tcase_add_test(tc, test_frame_one_byte_over_max);
    tcase_add_test(tc, test_frame_zero_length);
    tcase_add_test(tc, test_frame_growth_only_as_needed);
    tcase_add_test(tc, test_frame_big_frame_then_shrink);
    tcase_add_test(tc, test_frame_many_frames_in_one_read);
    tcase_add_test(tc, test_frame_compacts_partial_tail);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(frame_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
