/*
 * Unit tests for the remote-function messages in the codec (lib/msg.c,
 * lib/msg_encode.c, lib/funcid.c, lib/strerror.c): REGISTER, UNREGISTER,
 * CALL and RESULT (proto/README.md "Remote functions").
 *
 * Every encoder's frame must decode and pass fidbus_msg_check to the same
 * values; each required key, taken away, must give MALFORMED with the
 * right reason; each key with a value of the wrong type MALFORMED; each
 * value out of range INVALID. The generic fidbus_msg_encode must agree
 * byte for byte with the fixed-buffer encoders.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/client.h>
#include <fidbus/funcid.h>
#include <fidbus/proto.h>

static struct fidbus_msg m;

/* Decodes a whole frame (header + body) and checks it; returns the code. */
static int dec_frame(const uint8_t *f, size_t n)
{
    ck_assert_uint_ge(n, FIDBUS_FRAME_HEADER);
    uint32_t len =
        (uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 | (uint32_t)f[2] << 8 | f[3];
    ck_assert_uint_eq(len, n - FIDBUS_FRAME_HEADER);
    int rc = fidbus_msg_decode(f + FIDBUS_FRAME_HEADER, len, 0, &m);
    if (rc == 0)
        rc = fidbus_msg_check(&m);
    return rc;
}

/* Encodes o with fidbus_msg_encode, then decodes and checks it. */
static int dec_out(const struct fidbus_msg_out *o)
{
    static struct fidbus_buf b;
    b.len = 0;
    ck_assert_int_eq(fidbus_msg_encode(&b, o), 0);
    return dec_frame(b.data, b.len);
}

static bool slice_is(struct fidbus_slice s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/* ----------------------------------------------------------- round trips */

START_TEST(test_remote_codec_register_round_trip)
{
    uint8_t f[512];
    size_t n = fidbus_enc_register(f, sizeof f, 7, "acme.audit@1.2.3", "event:any", 16,
                                   30000, FIDBUS_FLAG_IDEMPOTENT);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_REGISTER);
    ck_assert_uint_eq(m.seq, 7);
    ck_assert(slice_is(m.function, "acme.audit@1.2.3"));
    ck_assert(slice_is(m.signature, "event:any"));
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_CREDIT) && m.credit == 16);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_TIMEOUT_MS) && m.timeout_ms == 30000);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_FLAGS) && m.flags == FIDBUS_FLAG_IDEMPOTENT);

    /* The same through the generic encoder: byte for byte. */
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_FLAGS) | FIDBUS_BIT(FIDBUS_K_FUNCTION) |
                   FIDBUS_BIT(FIDBUS_K_SIGNATURE) | FIDBUS_BIT(FIDBUS_K_CREDIT) |
                   FIDBUS_BIT(FIDBUS_K_TIMEOUT_MS),
        .type = FIDBUS_MSG_REGISTER,
        .seq = 7,
        .flags = FIDBUS_FLAG_IDEMPOTENT,
        .function = "acme.audit@1.2.3",
        .signature = "event:any",
        .credit = 16,
        .timeout_ms = 30000,
    };
    struct fidbus_buf b = {0};
    ck_assert_int_eq(fidbus_msg_encode(&b, &o), 0);
    ck_assert_uint_eq(b.len, n);
    ck_assert_mem_eq(b.data, f, n);
    fidbus_buf_free(&b);

    /* Optional keys left out: absent, and the check passes. The empty
     * signature is a plugin's missing one: allowed. */
    n = fidbus_enc_register(f, sizeof f, 8, "a.b@0.0.1", "", 0, 0, 0);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_CREDIT));
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_TIMEOUT_MS));
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_FLAGS));
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_SIGNATURE) && m.signature.len == 0);
    /* Largest values survive (the daemon caps, the codec does not). */
    n = fidbus_enc_register(f, sizeof f, UINT64_MAX, "a.b@0.0.1", "s", UINT64_MAX,
                            UINT64_MAX, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.seq, UINT64_MAX);
    ck_assert_uint_eq(m.credit, UINT64_MAX);
    ck_assert_uint_eq(m.timeout_ms, UINT64_MAX);
    /* Too small a buffer: 0, never a partial frame; NULL strings: 0. */
    ck_assert_uint_eq(fidbus_enc_register(f, 20, 1, "acme.audit@1.2.3", "x", 0, 0, 0), 0);
    ck_assert_uint_eq(fidbus_enc_register(f, sizeof f, 1, NULL, "x", 0, 0, 0), 0);
    ck_assert_uint_eq(fidbus_enc_register(f, sizeof f, 1, "a.b@1.0.0", NULL, 0, 0, 0), 0);
}
END_TEST

START_TEST(test_remote_codec_unregister_round_trip)
{
    uint8_t f[256];
    size_t n = fidbus_enc_unregister(f, sizeof f, 3, "acme.audit@1.2.3");
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_UNREGISTER);
    ck_assert_uint_eq(m.seq, 3);
    ck_assert(slice_is(m.function, "acme.audit@1.2.3"));
    ck_assert_uint_eq(fidbus_enc_unregister(f, 10, 3, "acme.audit@1.2.3"), 0);
    ck_assert_uint_eq(fidbus_enc_unregister(f, sizeof f, 3, NULL), 0);
}
END_TEST

START_TEST(test_remote_codec_call_round_trip)
{
    static const struct fidbus_tag tags[] = {{"user", "alice"}, {"k", ""}};
    static const uint8_t payload[] = {0xa1, 0x61, 0x78,
                                      0x9f, 0x01, 0xff}; /* {"x":[_ 1]} */
    struct fidbus_call_out c = {
        .call_id = 41,
        .funcid = 0xfedcba9876543210ull,
        .event = "order.created",
        .tags = tags,
        .ntags = 2,
        .payload = {payload, sizeof payload},
        .generation = 12,
        .attempt = 2,
    };
    uint8_t f[512];
    size_t n = fidbus_enc_call(f, sizeof f, &c);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_CALL);
    ck_assert_uint_eq(m.seq, 41);
    ck_assert_uint_eq(m.id, 0xfedcba9876543210ull);
    ck_assert_str_eq(m.event, "order.created");
    ck_assert_uint_eq(m.ntags, 2);
    ck_assert_str_eq(m.tags[0].key, "user");
    ck_assert_str_eq(m.tags[0].value, "alice");
    ck_assert_str_eq(m.tags[1].value, "");
    /* byte-exact: the indefinite array is not re-encoded */
    ck_assert_uint_eq(m.payload.len, sizeof payload);
    ck_assert_mem_eq(m.payload.ptr, payload, sizeof payload);
    ck_assert_uint_eq(m.generation, 12);
    ck_assert_uint_eq(m.attempt, 2);

    /* Same bytes from the generic encoder. */
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_TAGS) |
                   FIDBUS_BIT(FIDBUS_K_PAYLOAD) | FIDBUS_BIT(FIDBUS_K_ID) |
                   FIDBUS_BIT(FIDBUS_K_GENERATION) | FIDBUS_BIT(FIDBUS_K_ATTEMPT),
        .type = FIDBUS_MSG_CALL,
        .seq = 41,
        .event = "order.created",
        .tags = tags,
        .ntags = 2,
        .payload = {payload, sizeof payload},
        .id = 0xfedcba9876543210ull,
        .generation = 12,
        .attempt = 2,
    };
    struct fidbus_buf b = {0};
    ck_assert_int_eq(fidbus_msg_encode(&b, &o), 0);
    ck_assert_uint_eq(b.len, n);
    ck_assert_mem_eq(b.data, f, n);
    fidbus_buf_free(&b);

    /* An event without payload and tags: neither key is written. */
    c.payload.ptr = NULL;
    c.payload.len = 0;
    c.ntags = 0;
    n = fidbus_enc_call(f, sizeof f, &c);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_PAYLOAD));
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_TAGS));
    /* Does not fit: 0. */
    ck_assert_uint_eq(fidbus_enc_call(f, 30, &c), 0);
}
END_TEST

START_TEST(test_remote_codec_result_round_trip)
{
    uint8_t f[8192];
    size_t n = fidbus_enc_result(f, sizeof f, false, 41, FIDBUS_OK, NULL);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_RESULT);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_SEQ) && m.seq == 41);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_UPTO));
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_CODE) && m.code == 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_MESSAGE));

    n = fidbus_enc_result(f, sizeof f, true, 1000, FIDBUS_RETRY, "busy");
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_SEQ));
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_UPTO) && m.upto == 1000);
    ck_assert_uint_eq(m.code, FIDBUS_RETRY);
    ck_assert(slice_is(m.message, "busy"));

    /* A long message is cut at a character boundary to a 4 KiB frame, and
     * the upto after it still fits. */
    static char big[10000];
    for (size_t i = 0; i + 2 < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* U+00E9 */
    big[sizeof big - 1] = '\0';
    n = fidbus_enc_result(f, sizeof f, true, UINT64_MAX, 6, big);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_le(n, 4096);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.upto, UINT64_MAX);
    ck_assert_uint_gt(m.message.len, 3000);
    ck_assert(fidbus_utf8_valid(m.message.ptr, m.message.len));
    ck_assert_uint_eq(fidbus_enc_result(f, 4, false, 1, 0, NULL), 0);
}
END_TEST

/* RESULT codes: 0 and RETRY as sent; everything else counts as failed. */
START_TEST(test_remote_codec_result_outcome)
{
    ck_assert_uint_eq(fidbus_result_outcome(FIDBUS_OK), FIDBUS_OK);
    ck_assert_uint_eq(fidbus_result_outcome(FIDBUS_RETRY), FIDBUS_RETRY);
    ck_assert_uint_eq(fidbus_result_outcome(FIDBUS_HANDLER_FAILED),
                      FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(fidbus_result_outcome(FIDBUS_UNAVAILABLE), FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(fidbus_result_outcome(99), FIDBUS_HANDLER_FAILED);
    ck_assert_uint_eq(fidbus_result_outcome(UINT64_MAX), FIDBUS_HANDLER_FAILED);
    /* and the codec lets such a RESULT through: the daemon counts it */
    uint8_t f[64];
    size_t n = fidbus_enc_result(f, sizeof f, false, 1, 99, NULL);
    ck_assert_int_eq(dec_frame(f, n), 0);
    ck_assert_uint_eq(m.code, 99);
}
END_TEST

/* ------------------------------------------------- required keys missing */

static struct fidbus_msg_out full(uint64_t type)
{
    static const struct fidbus_tag tags[] = {{"k", "v"}};
    struct fidbus_msg_out o = {
        .type = type,
        .seq = 5,
        .event = "e.v",
        .tags = tags,
        .ntags = 1,
        .function = "acme.audit@1.0.0",
        .signature = "sig",
        .credit = 4,
        .timeout_ms = 100,
        .id = 77,
        .generation = 3,
        .attempt = 1,
        .code = 0,
        .upto = 9,
    };
    switch (type) {
    case FIDBUS_MSG_REGISTER:
        o.present = FIDBUS_BIT(FIDBUS_K_SEQ) | FIDBUS_BIT(FIDBUS_K_FUNCTION) |
                    FIDBUS_BIT(FIDBUS_K_SIGNATURE);
        break;
    case FIDBUS_MSG_UNREGISTER:
        o.present = FIDBUS_BIT(FIDBUS_K_SEQ) | FIDBUS_BIT(FIDBUS_K_FUNCTION);
        break;
    case FIDBUS_MSG_CALL:
        o.present = FIDBUS_BIT(FIDBUS_K_SEQ) | FIDBUS_BIT(FIDBUS_K_ID) |
                    FIDBUS_BIT(FIDBUS_K_EVENT) | FIDBUS_BIT(FIDBUS_K_GENERATION) |
                    FIDBUS_BIT(FIDBUS_K_ATTEMPT);
        break;
    default:
        o.present = FIDBUS_BIT(FIDBUS_K_SEQ) | FIDBUS_BIT(FIDBUS_K_CODE);
        break;
    }
    o.present |= FIDBUS_BIT(FIDBUS_K_TYPE);
    return o;
}

START_TEST(test_remote_codec_required_keys)
{
    static const struct {
        uint64_t type;
        unsigned key;
        const char *why;
    } cases[] = {
        {FIDBUS_MSG_REGISTER, FIDBUS_K_SEQ, "REGISTER without seq"},
        {FIDBUS_MSG_REGISTER, FIDBUS_K_FUNCTION, "REGISTER without function"},
        {FIDBUS_MSG_REGISTER, FIDBUS_K_SIGNATURE, "REGISTER without signature"},
        {FIDBUS_MSG_UNREGISTER, FIDBUS_K_SEQ, "UNREGISTER without seq"},
        {FIDBUS_MSG_UNREGISTER, FIDBUS_K_FUNCTION, "UNREGISTER without function"},
        {FIDBUS_MSG_CALL, FIDBUS_K_SEQ, "CALL without seq"},
        {FIDBUS_MSG_CALL, FIDBUS_K_ID, "CALL without id"},
        {FIDBUS_MSG_CALL, FIDBUS_K_EVENT, "CALL without event"},
        {FIDBUS_MSG_CALL, FIDBUS_K_GENERATION, "CALL without generation"},
        {FIDBUS_MSG_CALL, FIDBUS_K_ATTEMPT, "CALL without attempt"},
        {FIDBUS_MSG_RESULT, FIDBUS_K_SEQ, "RESULT without seq or upto"},
        {FIDBUS_MSG_RESULT, FIDBUS_K_CODE, "RESULT without code"},
    };
    static const uint64_t types[] = {FIDBUS_MSG_REGISTER, FIDBUS_MSG_UNREGISTER,
                                     FIDBUS_MSG_CALL, FIDBUS_MSG_RESULT};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct fidbus_msg_out o = full(types[i]);
        ck_assert_msg(dec_out(&o) == 0, "type %llu complete: %s",
                      (unsigned long long)types[i], m.why);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fidbus_msg_out o = full(cases[i].type);
        o.present &= ~FIDBUS_BIT(cases[i].key);
        ck_assert_msg(dec_out(&o) == FIDBUS_MALFORMED, "%s: accepted", cases[i].why);
        ck_assert_str_eq(m.why, cases[i].why);
    }
    /* RESULT by upto needs no seq; with both it is refused. */
    struct fidbus_msg_out o = full(FIDBUS_MSG_RESULT);
    o.present = (o.present & ~FIDBUS_BIT(FIDBUS_K_SEQ)) | FIDBUS_BIT(FIDBUS_K_UPTO);
    ck_assert_int_eq(dec_out(&o), 0);
    o.present |= FIDBUS_BIT(FIDBUS_K_SEQ);
    ck_assert_int_eq(dec_out(&o), FIDBUS_MALFORMED);
    ck_assert_str_eq(m.why, "RESULT with both seq and upto");
    /* A bare type 16..19 is MALFORMED, not UNSUPPORTED: the types are known. */
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct fidbus_msg_out bare = {.present = FIDBUS_BIT(FIDBUS_K_TYPE),
                                      .type = types[i]};
        ck_assert_int_eq(dec_out(&bare), FIDBUS_MALFORMED);
    }
}
END_TEST

/* ---------------------------------------------------------- wrong types */

/* Body {0: type, 1: 5, key: <text "x" or uint 1>} as bytes. */
static int dec_wrong(uint64_t type, unsigned key, bool as_text)
{
    uint8_t b[16];
    size_t n = 0;
    b[n++] = 0xa3;
    b[n++] = 0x00;
    b[n++] = (uint8_t)type; /* 16..19: one-byte heads 0x10..0x13 */
    b[n++] = 0x01;
    b[n++] = 0x05;
    b[n++] = (uint8_t)key; /* keys below 24 are one byte */
    if (as_text) {
        b[n++] = 0x61;
        b[n++] = 'x';
    } else {
        b[n++] = 0x01;
    }
    return fidbus_msg_decode(b, n, 0, &m);
}

START_TEST(test_remote_codec_wrong_types)
{
    static const struct {
        unsigned key;
        bool text; /* the key wants text: send a uint */
        const char *why;
    } cases[] = {
        {FIDBUS_K_FUNCTION, true, "function is not a text string"},
        {FIDBUS_K_ID, false, "id is not an unsigned integer"},
        {FIDBUS_K_SIGNATURE, true, "signature is not a text string"},
        {FIDBUS_K_CREDIT, false, "credit is not an unsigned integer"},
        {FIDBUS_K_TIMEOUT_MS, false, "timeout_ms is not an unsigned integer"},
        {FIDBUS_K_GENERATION, false, "generation is not an unsigned integer"},
        {FIDBUS_K_ATTEMPT, false, "attempt is not an unsigned integer"},
        {FIDBUS_K_UPTO, false, "upto is not an unsigned integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(dec_wrong(FIDBUS_MSG_REGISTER, cases[i].key, !cases[i].text) ==
                          FIDBUS_MALFORMED,
                      "key %u of the wrong type accepted", cases[i].key);
        ck_assert_str_eq(m.why, cases[i].why);
        /* the seq read before it is kept for the ERROR */
        ck_assert(fidbus_msg_has(&m, FIDBUS_K_SEQ) && m.seq == 5);
    }
    /* A negative credit, a byte-string function, text that is not UTF-8. */
    uint8_t neg[] = {0xa3, 0x00, 0x10, 0x01, 0x05, 0x12, 0x20};
    ck_assert_int_eq(fidbus_msg_decode(neg, sizeof neg, 0, &m), FIDBUS_MALFORMED);
    uint8_t bstr[] = {0xa3, 0x00, 0x10, 0x01, 0x05, 0x0f, 0x41, 'x'};
    ck_assert_int_eq(fidbus_msg_decode(bstr, sizeof bstr, 0, &m), FIDBUS_MALFORMED);
    uint8_t utf[] = {0xa3, 0x00, 0x10, 0x01, 0x05, 0x11, 0x62, 0xc3, 0x28};
    ck_assert_int_eq(fidbus_msg_decode(utf, sizeof utf, 0, &m), FIDBUS_MALFORMED);
    /* Duplicate new key. */
    uint8_t dup[] = {0xa3, 0x00, 0x13, 0x16, 0x01, 0x16, 0x02};
    ck_assert_int_eq(fidbus_msg_decode(dup, sizeof dup, 0, &m), FIDBUS_MALFORMED);
    ck_assert_str_eq(m.why, "duplicate map key");
    /* Chunked function and signature are put together in the arena. */
    uint8_t chunked[] = {0xa4, 0x00, 0x10, 0x01, 0x05, 0x0f, 0x7f, 0x63, 'a',
                         '.',  'b',  0x66, '@',  '1',  '.',  '0',  '.',  '0',
                         0xff, 0x11, 0x7f, 0x61, 's',  0x61, 'g',  0xff};
    ck_assert_int_eq(fidbus_msg_decode(chunked, sizeof chunked, 0, &m), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), 0);
    ck_assert(slice_is(m.function, "a.b@1.0.0"));
    ck_assert(slice_is(m.signature, "sg"));
}
END_TEST

/* ------------------------------------------------------- out of range */

START_TEST(test_remote_codec_invalid_values)
{
    static const char *const bad_names[] = {
        "acme.audit",          /* no version: routes may omit it, REGISTER not */
        "acme.audit@1.0",      /* not MAJOR.MINOR.PATCH */
        "acme.audit@01.0.0",   /* leading zero */
        "acme@1.0.0",          /* no name */
        ".audit@1.0.0",        /* empty namespace */
        "acme.@1.0.0",         /* empty name */
        "ac me.audit@1.0.0",   /* space */
        "acme.au.dit@1.0.0",   /* '.' in the name */
        "acme.audit@1.0.0-rc", /* suffix */
        "acme.audit@@1.0.0",
        "",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b@1.0.0", /* 65
                                                                                      */
    };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        for (int t = 0; t < 2; t++) {
            struct fidbus_msg_out o =
                full(t ? FIDBUS_MSG_UNREGISTER : FIDBUS_MSG_REGISTER);
            o.function = bad_names[i];
            ck_assert_msg(dec_out(&o) == FIDBUS_INVALID, "'%s' accepted", bad_names[i]);
        }
    }
    ck_assert(fidbus_canonical_valid("a-b_c.D-e_F@0.0.0", 17));
    /* a 64-byte namespace is still fine */
    ck_assert(fidbus_canonical_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b@1.0.0", 72));
    /* an embedded NUL is never valid */
    ck_assert(!fidbus_canonical_valid("a.b@1.0.0\0", 10));
    ck_assert(!fidbus_canonical_valid(NULL, 0));

    struct fidbus_msg_out o = full(FIDBUS_MSG_REGISTER);
    o.present |= FIDBUS_BIT(FIDBUS_K_CREDIT);
    o.credit = 0;
    ck_assert_int_eq(dec_out(&o), FIDBUS_INVALID);
    ck_assert_str_eq(m.why, "credit must be at least 1");
    o.credit = 1;
    ck_assert_int_eq(dec_out(&o), 0);

    o = full(FIDBUS_MSG_REGISTER);
    o.present |= FIDBUS_BIT(FIDBUS_K_TIMEOUT_MS);
    o.timeout_ms = 0;
    ck_assert_int_eq(dec_out(&o), FIDBUS_INVALID);
    ck_assert_str_eq(m.why, "timeout_ms must be at least 1");
    o.timeout_ms = 1;
    ck_assert_int_eq(dec_out(&o), 0);

    /* signature: at most FIDBUS_SIGNATURE_MAX bytes */
    static char sig[FIDBUS_SIGNATURE_MAX + 2];
    memset(sig, 's', FIDBUS_SIGNATURE_MAX);
    sig[FIDBUS_SIGNATURE_MAX] = '\0';
    o = full(FIDBUS_MSG_REGISTER);
    o.signature = sig;
    ck_assert_int_eq(dec_out(&o), 0);
    sig[FIDBUS_SIGNATURE_MAX] = 's';
    ck_assert_int_eq(dec_out(&o), FIDBUS_INVALID);
    /* ...and without a NUL (hand-made: the encoder takes C strings) */
    uint8_t nul[] = {0xa4, 0x00, 0x10, 0x01, 0x05, 0x0f, 0x69, 'a', '.', 'b', '@',
                     '1',  '.',  '0',  '.',  '0',  0x11, 0x63, 'a', 0,   'b'};
    ck_assert_int_eq(fidbus_msg_decode(nul, sizeof nul, 0, &m), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), FIDBUS_INVALID);
    ck_assert_str_eq(m.why, "signature contains a NUL byte");

    o = full(FIDBUS_MSG_CALL);
    o.attempt = 0;
    ck_assert_int_eq(dec_out(&o), FIDBUS_INVALID);
    ck_assert_str_eq(m.why, "attempt must be at least 1");
    /* A CALL's event follows the PUBLISH rules. */
    o = full(FIDBUS_MSG_CALL);
    o.event = "bad id";
    ck_assert_int_eq(dec_out(&o), FIDBUS_INVALID);
}
END_TEST

/* The new fields are not reset per decode (a PUBLISH pays nothing for
 * them): what says whether one is there is `present`. */
START_TEST(test_remote_codec_present_bits)
{
    struct fidbus_msg_out o = full(FIDBUS_MSG_REGISTER);
    o.present |= FIDBUS_BIT(FIDBUS_K_CREDIT);
    ck_assert_int_eq(dec_out(&o), 0);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_CREDIT));
    uint8_t pub[] = {0xa2, 0x00, 0x03, 0x02, 0x61, 'e'};
    ck_assert_int_eq(fidbus_msg_decode(pub, sizeof pub, 0, &m), 0);
    for (unsigned k = FIDBUS_K_FUNCTION; k < FIDBUS_K__COUNT; k++)
        ck_assert_msg(!fidbus_msg_has(&m, (enum fidbus_key)k), "key %u still set", k);
    ck_assert_int_lt(FIDBUS_K__COUNT, 32);
}
END_TEST

START_TEST(test_remote_codec_codes)
{
    ck_assert_int_eq(FIDBUS_UNAVAILABLE, 13);
    ck_assert_int_eq(FIDBUS_RETRY, 14);
    ck_assert_int_eq(FIDBUS_MSG_REGISTER, 16);
    ck_assert_int_eq(FIDBUS_MSG_RESULT, 19);
    ck_assert_int_eq(FIDBUS_K_FUNCTION, 15);
    ck_assert_int_eq(FIDBUS_K_UPTO, 22);
    ck_assert_str_eq(fidbus_code_name(FIDBUS_UNAVAILABLE), "UNAVAILABLE");
    ck_assert_str_eq(fidbus_code_name(FIDBUS_RETRY), "RETRY");
    for (int code = FIDBUS_UNAVAILABLE; code <= FIDBUS_RETRY; code++) {
        const char *s = fidbus_strerror(FIDBUS_EPROTO_CODE(code));
        const char *name = fidbus_code_name(code);
        ck_assert_msg(strncmp(s, name, strlen(name)) == 0 && s[strlen(name)] == ':',
                      "%d: %s", code, s);
    }
    ck_assert_str_eq(fidbus_code_name(15), "UNKNOWN");
}
END_TEST

static Suite *remote_codec_suite(void)
{
    Suite *s = suite_create("remote_codec");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_remote_codec_register_round_trip);
    tcase_add_test(tc, test_remote_codec_unregister_round_trip);
    tcase_add_test(tc, test_remote_codec_call_round_trip);
    tcase_add_test(tc, test_remote_codec_result_round_trip);
    tcase_add_test(tc, test_remote_codec_result_outcome);
    tcase_add_test(tc, test_remote_codec_required_keys);
    tcase_add_test(tc, test_remote_codec_wrong_types);
    tcase_add_test(tc, test_remote_codec_invalid_values);
    tcase_add_test(tc, test_remote_codec_present_bits);
    tcase_add_test(tc, test_remote_codec_codes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(remote_codec_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
