/*
 * Unit tests for the message codec (lib/msg.c, lib/msg_encode.c).
 *
 * The payload contract is "any one CBOR data item, kept byte-exact": every
 * example of RFC 8949 Appendix A is carried as a payload (and as a result,
 * an args value and an unknown key's value) and must come back as the very
 * same bytes. Appendix F's not-well-formed examples must all be MALFORMED.
 * The rest checks each error code of the decoder and the encoders' output.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

/* The struct is ~15 KiB: one static instance, as the daemon keeps one. */
static struct fidbus_msg m;

/* Parses hex (spaces allowed) into out; returns the byte count. */
static size_t unhex(uint8_t *out, size_t cap, const char *hex)
{
    size_t n = 0;
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned v;
        ck_assert_msg(sscanf(p, "%2x", &v) == 1, "bad hex at '%s'", p);
        ck_assert_uint_lt(n, cap);
        out[n++] = (uint8_t)v;
        p += 2;
    }
    return n;
}

/* Decodes a body given as hex. */
static int dec_hex(const char *hex, unsigned max_depth)
{
    static uint8_t buf[1 << 16];
    size_t n = unhex(buf, sizeof(buf), hex);
    return fidbus_msg_decode(buf, n, max_depth, &m);
}

static int dec(const uint8_t *b, size_t n)
{
    return fidbus_msg_decode(b, n, FIDBUS_MAX_DEPTH_DEFAULT, &m);
}

/* RFC 8949 Appendix A: every example, diagnostic notation and encoding. */
static const struct {
    const char *diag, *hex;
} rfc8949_a[] = {
    {"0", "00"},
    {"1", "01"},
    {"10", "0a"},
    {"23", "17"},
    {"24", "1818"},
    {"25", "1819"},
    {"100", "1864"},
    {"1000", "1903e8"},
    {"1000000", "1a000f4240"},
    {"1000000000000", "1b000000e8d4a51000"},
    {"18446744073709551615", "1bffffffffffffffff"},
    {"18446744073709551616", "c249010000000000000000"},
    {"-18446744073709551616", "3bffffffffffffffff"},
    {"-18446744073709551617", "c349010000000000000000"},
    {"-1", "20"},
    {"-10", "29"},
    {"-100", "3863"},
    {"-1000", "3903e7"},
    {"0.0", "f90000"},
    {"-0.0", "f98000"},
    {"1.0", "f93c00"},
    {"1.1", "fb3ff199999999999a"},
    {"1.5", "f93e00"},
    {"65504.0", "f97bff"},
    {"100000.0", "fa47c35000"},
    {"3.4028234663852886e+38", "fa7f7fffff"},
    {"1.0e+300", "fb7e37e43c8800759c"},
    {"5.960464477539063e-8", "f90001"},
    {"0.00006103515625", "f90400"},
    {"-4.0", "f9c400"},
    {"-4.1", "fbc010666666666666"},
    {"Infinity (half)", "f97c00"},
    {"NaN (half)", "f97e00"},
    {"-Infinity (half)", "f9fc00"},
    {"Infinity (single)", "fa7f800000"},
    {"NaN (single)", "fa7fc00000"},
    {"-Infinity (single)", "faff800000"},
    {"Infinity (double)", "fb7ff0000000000000"},
    {"NaN (double)", "fb7ff8000000000000"},
    {"-Infinity (double)", "fbfff0000000000000"},
    {"false", "f4"},
    {"true", "f5"},
    {"null", "f6"},
    {"undefined", "f7"},
    {"simple(16)", "f0"},
    {"simple(255)", "f8ff"},
    {"0(\"2013-03-21T20:04:00Z\")", "c074323031332d30332d32315432303a30343a30305a"},
    {"1(1363896240)", "c11a514b67b0"},
    {"1(1363896240.5)", "c1fb41d452d9ec200000"},
    {"23(h'01020304')", "d74401020304"},
    {"24(h'6449455446')", "d818456449455446"},
    {"32(\"http://www.example.com\")",
     "d82076687474703a2f2f7777772e6578616d706c652e636f6d"},
    {"h''", "40"},
    {"h'01020304'", "4401020304"},
    {"\"\"", "60"},
    {"\"a\"", "6161"},
    {"\"IETF\"", "6449455446"},
    {"\"\\\"\\\\\"", "62225c"},
    {"\"\\u00fc\"", "62c3bc"},
    {"\"\\u6c34\"", "63e6b0b4"},
    {"\"\\ud800\\udd51\"", "64f0908591"},
    {"[]", "80"},
    {"[1, 2, 3]", "83010203"},
    {"[1, [2, 3], [4, 5]]", "8301820203820405"},
    {"[1, 2, 3, ..., 25]", "98190102030405060708090a0b0c0d0e0f101112131415161718181819"},
    {"{}", "a0"},
    {"{1: 2, 3: 4}", "a201020304"},
    {"{\"a\": 1, \"b\": [2, 3]}", "a26161016162820203"},
    {"[\"a\", {\"b\": \"c\"}]", "826161a161626163"},
    {"{\"a\": \"A\", ... \"e\": \"E\"}", "a56161614161626142616361436164614461656145"},
    {"(_ h'0102', h'030405')", "5f42010243030405ff"},
    {"(_ \"strea\", \"ming\")", "7f657374726561646d696e67ff"},
    {"[_ ]", "9fff"},
    {"[_ 1, [2, 3], [_ 4, 5]]", "9f018202039f0405ffff"},
    {"[_ 1, [2, 3], [4, 5]]", "9f01820203820405ff"},
    {"[1, [2, 3], [_ 4, 5]]", "83018202039f0405ff"},
    {"[1, [_ 2, 3], [4, 5]]", "83019f0203ff820405"},
    {"[_ 1, 2, 3, ..., 25]",
     "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff"},
    {"{_ \"a\": 1, \"b\": [_ 2, 3]}", "bf61610161629f0203ffff"},
    {"[\"a\", {_ \"b\": \"c\"}]", "826161bf61626163ff"},
    {"{_ \"Fun\": true, \"Amt\": -2}", "bf6346756ef563416d7421ff"},
};
#define N_RFC (sizeof(rfc8949_a) / sizeof(rfc8949_a[0]))

/* Checks that `got` is exactly `item` and lies inside `body` (zero copy). */
static void assert_raw(struct fidbus_slice got, const uint8_t *body, size_t body_len,
                       const uint8_t *item, size_t item_len, const char *what)
{
    ck_assert_msg(got.len == item_len && memcmp(got.ptr, item, item_len) == 0,
                  "%s: not byte-exact (%zu vs %zu bytes)", what, got.len, item_len);
    ck_assert_msg(got.ptr >= body && got.ptr + got.len <= body + body_len,
                  "%s: not a slice of the body", what);
}

START_TEST(test_msg_rfc8949_examples_as_payload)
{
    for (size_t i = 0; i < N_RFC; i++) {
        uint8_t item[128], body[256];
        size_t il = unhex(item, sizeof(item), rfc8949_a[i].hex);
        /* {0: 3, 2: "x", 4: item, 1: 7} -- seq after the payload, so the
         * decoder must find the payload's end exactly. */
        size_t n = unhex(body, sizeof(body), "a4 00 03 02 61 78 04");
        memcpy(body + n, item, il);
        n += il;
        n += unhex(body + n, sizeof(body) - n, "01 07");
        int rc = dec(body, n);
        ck_assert_msg(rc == 0, "%s: rc %d (%s)", rfc8949_a[i].diag, rc, m.why);
        ck_assert(fidbus_msg_has(&m, FIDBUS_K_PAYLOAD));
        ck_assert_uint_eq(m.seq, 7);
        assert_raw(m.payload, body, n, item, il, rfc8949_a[i].diag);
        ck_assert_int_eq(fidbus_msg_check(&m), 0);
    }
}
END_TEST

START_TEST(test_msg_rfc8949_examples_as_result_args_and_unknown)
{
    for (size_t i = 0; i < N_RFC; i++) {
        uint8_t item[128], body[256];
        size_t il = unhex(item, sizeof(item), rfc8949_a[i].hex);

        /* REPLY {0: 7, 6: 0, 8: item} */
        size_t n = unhex(body, sizeof(body), "a3 00 07 06 00 08");
        memcpy(body + n, item, il);
        n += il;
        ck_assert_msg(dec(body, n) == 0, "result %s: %s", rfc8949_a[i].diag, m.why);
        assert_raw(m.result, body, n, item, il, rfc8949_a[i].diag);

        /* REQUEST {0: 6, 9: "c", 10: {"k": item}}: args is the whole map. */
        n = unhex(body, sizeof(body), "a3 00 06 09 61 63 0a a1 61 6b");
        memcpy(body + n, item, il);
        n += il;
        ck_assert_msg(dec(body, n) == 0, "args %s: %s", rfc8949_a[i].diag, m.why);
        ck_assert_uint_eq(m.args.len, 3 + il);
        ck_assert(m.args.ptr == body + n - il - 3);

        /* An unknown key (99) carrying it is skipped; the seq after it is read. */
        n = unhex(body, sizeof(body), "a3 00 08 18 63");
        memcpy(body + n, item, il);
        n += il;
        n += unhex(body + n, sizeof(body) - n, "01 19 0102");
        ck_assert_msg(dec(body, n) == 0, "unknown %s: %s", rfc8949_a[i].diag, m.why);
        ck_assert_uint_eq(m.seq, 0x102);
    }
}
END_TEST

/* The initial bytes libcbor 0.8 refuses though RFC 8949 calls them
 * well-formed (see next_tok in lib/msg.c), and the ones that really are not. */
START_TEST(test_msg_libcbor_gaps)
{
    static const char *const ok[] = {
        "c6 00", "c7 00", "d0 00", "d4 f6",       "d5 40",          "e0",       "e7",
        "f3",    "f8 20", "f8 ff", "c6 c6 c6 00", "9f e0 f8 20 ff", "a1 f0 f1",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char hex[128];
        snprintf(hex, sizeof(hex), "a3 00 03 02 61 78 04 %s", ok[i]);
        ck_assert_msg(dec_hex(hex, 64) == 0, "%s: %s", ok[i], m.why);
        ck_assert_uint_eq(m.payload.len, (strlen(ok[i]) + 1) / 3);
    }
}
END_TEST

/* RFC 8949 Appendix F: not-well-formed items, each as the last thing in
 * the body (so a missing byte is a truncation, not borrowed from a later
 * key). */
START_TEST(test_msg_rfc8949_not_well_formed)
{
    static const char *const bad[] = {
        /* end of input in a head */
        "18",
        "19",
        "1a",
        "1b",
        "1901",
        "1a0102",
        "1b01020304050607",
        "38",
        "58",
        "78",
        "98",
        "9a01ff00",
        "b8",
        "d8",
        "f8",
        "f900",
        "fa0000",
        "fb000000",
        /* definite-length strings with short data */
        "41",
        "61",
        "5affffffff00",
        "5bffffffffffffffff010203",
        "7affffffff00",
        "7b7fffffffffffffff010203",
        /* definite-length maps and arrays not closed with enough items */
        "81",
        "818181818181818181",
        "8200",
        "a1",
        "a20102",
        "a100",
        "a2000000",
        /* tag number not followed by tag content */
        "c0",
        /* indefinite-length strings not closed by a break */
        "5f4100",
        "7f6100",
        /* indefinite-length maps and arrays not closed by a break */
        "9f",
        "9f0102",
        "bf",
        "bf01020102",
        "819f",
        "9f8000",
        "9f9f9f9f9fffffffff",
        "9f819f819f9fffffff",
        /* reserved additional information values */
        "1c",
        "1d",
        "1e",
        "3c",
        "3d",
        "3e",
        "5c",
        "5d",
        "5e",
        "7c",
        "7d",
        "7e",
        "9c",
        "9d",
        "9e",
        "bc",
        "bd",
        "be",
        "dc",
        "dd",
        "de",
        "fc",
        "fd",
        "fe",
        /* reserved two-byte encodings of simple values */
        "f800",
        "f801",
        "f818",
        "f81f",
        /* indefinite-length string chunks not of the correct type */
        "5f00ff",
        "5f21ff",
        "5f6100ff",
        "5f80ff",
        "5fa0ff",
        "5fc000ff",
        "5fe0ff",
        "7f4100ff",
        /* indefinite-length string chunks not definite length */
        "5f5f4100ffff",
        "7f7f6100ffff",
        /* break on its own outside an indefinite-length item */
        "ff",
        /* break in a definite-length array or map or a tag */
        "81ff",
        "8200ff",
        "a1ff",
        "a1ff00",
        "a100ff",
        "a20000ff",
        "9f81ff",
        "9f829f819f9fffffffff",
        "c1ff",
        /* break in a value position of an indefinite-length map */
        "bf00ff",
        "bf000000ff",
        /* major types 0, 1, 6 with additional information 31 */
        "1f",
        "3f",
        "df",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char hex[128];
        snprintf(hex, sizeof(hex), "a3 00 03 02 61 78 04 %s", bad[i]);
        ck_assert_msg(dec_hex(hex, 64) == FIDBUS_MALFORMED, "payload %s accepted",
                      bad[i]);
        ck_assert_ptr_nonnull(m.why);
        /* And in an unknown key's value. */
        snprintf(hex, sizeof(hex), "a2 00 03 18 63 %s", bad[i]);
        ck_assert_msg(dec_hex(hex, 64) == FIDBUS_MALFORMED, "unknown %s accepted",
                      bad[i]);
    }
}
END_TEST

/* ------------------------------------------------------ round trips */

static uint8_t frame_buf[1 << 16];

/* Encodes o, checks the frame header, decodes the body into m. */
static void round_trip(const struct fidbus_msg_out *o)
{
    struct fidbus_buf b = {0};
    ck_assert_int_eq(fidbus_msg_encode(&b, o), 0);
    ck_assert_uint_ge(b.len, 5);
    uint32_t len = (uint32_t)b.data[0] << 24 | (uint32_t)b.data[1] << 16 |
                   (uint32_t)b.data[2] << 8 | b.data[3];
    ck_assert_uint_eq(len, b.len - 4);
    ck_assert_uint_le(b.len, sizeof(frame_buf));
    memcpy(frame_buf, b.data, b.len);
    fidbus_buf_free(&b);
    int rc = fidbus_msg_decode(frame_buf + 4, len, 64, &m);
    ck_assert_msg(rc == 0, "decode: %d %s", rc, m.why);
    ck_assert_uint_eq(m.present, o->present);
    ck_assert_int_eq(fidbus_msg_check(&m), 0);
}

static bool slice_is(struct fidbus_slice s, const char *text)
{
    return s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

START_TEST(test_msg_round_trip_every_type)
{
    static const uint8_t payload[] = {0xa1, 0x61, 0x6e, 0x18, 0x2a}; /* {"n": 42} */
    static const uint8_t args[] = {0xa1, 0x64, 0x6e, 0x61, 0x6d,
                                   0x65, 0x63, 0x6c, 0x6f, 0x67};
    static const uint8_t result[] = {0x82, 0x01, 0xf5};
    static const uint8_t nonce[] = {1, 2,  3,  4,  5,  6,  7,  8,
                                    9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t mac[32] = {0xaa, 0xbb, [31] = 0xcc};
    static const struct fidbus_tag tags[] = {
        {"version", "v2"}, {"region", "cn-east"}, {"empty", ""}};
#define B FIDBUS_BIT
    struct fidbus_msg_out o;

    /* HELLO */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_VERSION) |
                                           B(FIDBUS_K_NAME) | B(FIDBUS_K_NONCE),
                                .type = FIDBUS_MSG_HELLO,
                                .version = 1,
                                .name = "fidbusd",
                                .nonce = {nonce, sizeof(nonce)}};
    round_trip(&o);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_HELLO);
    ck_assert_uint_eq(m.version, 1);
    ck_assert(slice_is(m.name, "fidbusd"));
    ck_assert_uint_eq(m.nonce.len, 16);
    ck_assert_mem_eq(m.nonce.ptr, nonce, 16);

    /* AUTH */
    o = (struct fidbus_msg_out){.present =
                                    B(FIDBUS_K_TYPE) | B(FIDBUS_K_MAC) | B(FIDBUS_K_NAME),
                                .type = FIDBUS_MSG_AUTH,
                                .name = "client-1",
                                .mac = {mac, sizeof(mac)}};
    round_trip(&o);
    ck_assert_uint_eq(m.mac.len, 32);
    ck_assert_mem_eq(m.mac.ptr, mac, 32);

    /* PUBLISH with everything */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ) |
                                           B(FIDBUS_K_EVENT) | B(FIDBUS_K_TAGS) |
                                           B(FIDBUS_K_PAYLOAD) | B(FIDBUS_K_FLAGS),
                                .type = FIDBUS_MSG_PUBLISH,
                                .seq = UINT64_MAX,
                                .event = "order.created",
                                .tags = tags,
                                .ntags = 3,
                                .payload = {payload, sizeof(payload)},
                                .flags = FIDBUS_FLAG_ACK};
    round_trip(&o);
    ck_assert_uint_eq(m.seq, UINT64_MAX);
    ck_assert_str_eq(m.event, "order.created");
    ck_assert_uint_eq(m.event_len, 13);
    ck_assert_uint_eq(m.ntags, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_str_eq(m.tags[i].key, tags[i].key);
        ck_assert_str_eq(m.tags[i].value, tags[i].value);
    }
    ck_assert_uint_eq(m.payload.len, sizeof(payload));
    ck_assert_mem_eq(m.payload.ptr, payload, sizeof(payload));
    ck_assert_uint_eq(m.flags, FIDBUS_FLAG_ACK);

    /* ACK */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ) |
                                           B(FIDBUS_K_RESULT),
                                .type = FIDBUS_MSG_ACK,
                                .seq = 9,
                                .result = {result, sizeof(result)}};
    round_trip(&o);
    ck_assert_mem_eq(m.result.ptr, result, sizeof(result));

    /* ERROR */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ) |
                                           B(FIDBUS_K_CODE) | B(FIDBUS_K_MESSAGE),
                                .type = FIDBUS_MSG_ERROR,
                                .seq = 3,
                                .code = FIDBUS_NO_ROUTE,
                                .message = "no route for «x»"};
    round_trip(&o);
    ck_assert_uint_eq(m.code, FIDBUS_NO_ROUTE);
    ck_assert(slice_is(m.message, "no route for «x»"));

    /* REQUEST */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ) |
                                           B(FIDBUS_K_COMMAND) | B(FIDBUS_K_ARGS),
                                .type = FIDBUS_MSG_REQUEST,
                                .seq = 1,
                                .command = "plugin.unload",
                                .args = {args, sizeof(args)}};
    round_trip(&o);
    ck_assert(slice_is(m.command, "plugin.unload"));
    ck_assert_mem_eq(m.args.ptr, args, sizeof(args));

    /* REPLY */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ) |
                                           B(FIDBUS_K_CODE) | B(FIDBUS_K_MESSAGE) |
                                           B(FIDBUS_K_RESULT),
                                .type = FIDBUS_MSG_REPLY,
                                .seq = 1,
                                .code = 0,
                                .message = "",
                                .result = {result, sizeof(result)}};
    round_trip(&o);
    ck_assert_uint_eq(m.message.len, 0);

    /* PING */
    o = (struct fidbus_msg_out){.present = B(FIDBUS_K_TYPE) | B(FIDBUS_K_SEQ),
                                .type = FIDBUS_MSG_PING,
                                .seq = 77};
    round_trip(&o);
    ck_assert_uint_eq(m.seq, 77);
#undef B
}
END_TEST

START_TEST(test_msg_encode_rejects_incomplete_input)
{
    struct fidbus_buf b = {0};
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT), .type = 3};
    ck_assert_int_lt(fidbus_msg_encode(&b, &o), 0); /* event NULL */
    o.present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_PAYLOAD);
    ck_assert_int_lt(fidbus_msg_encode(&b, &o), 0); /* empty raw item */
    ck_assert_uint_eq(b.len, 0);
    fidbus_buf_free(&b);
}
END_TEST

START_TEST(test_msg_enc_ack_error_hello)
{
    uint8_t out[4096 + 64];
    size_t n = fidbus_enc_ack(out, sizeof(out), 12345, 2);
    ck_assert_uint_gt(n, 4);
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_ACK);
    ck_assert_uint_eq(m.seq, 12345);
    ck_assert_uint_eq(m.result.len, 1);
    ck_assert_uint_eq(m.result.ptr[0], 2);
    ck_assert_uint_eq(fidbus_enc_ack(out, n - 1, 12345, 2), 0); /* does not fit */
    ck_assert_uint_eq(fidbus_enc_ack(out, n, 12345, 2), n);

    n = fidbus_enc_error(out, sizeof(out), true, 7, FIDBUS_HANDLER_FAILED,
                         "handler failed", true, 1);
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_ERROR);
    ck_assert_uint_eq(m.seq, 7);
    ck_assert_uint_eq(m.code, FIDBUS_HANDLER_FAILED);
    ck_assert(slice_is(m.message, "handler failed"));
    ck_assert_uint_eq(m.result.ptr[0], 1);

    n = fidbus_enc_error(out, sizeof(out), false, 0, FIDBUS_MALFORMED, NULL, false, 0);
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_SEQ));
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_RESULT));
    ck_assert(slice_is(m.message, "MALFORMED"));

    /* A long message is cut to fit 4 KiB, on a character boundary. */
    static char longmsg[10001];
    for (size_t i = 0; i + 2 <= 10000; i += 2)
        memcpy(longmsg + i, "\xc3\xbc", 2); /* ü */
    for (size_t cap = 40; cap <= sizeof(out); cap += 331) {
        n = fidbus_enc_error(out, cap, true, UINT64_MAX, FIDBUS_INVALID, longmsg, true,
                             UINT64_MAX);
        ck_assert_uint_gt(n, 0);
        ck_assert_uint_le(n, cap < 4096 ? cap : 4096);
        ck_assert_msg(dec(out + 4, n - 4) == 0, "cap %zu: %s", cap, m.why);
        ck_assert_uint_eq(m.message.len % 2, 0);
        ck_assert_mem_eq(m.message.ptr, longmsg, m.message.len);
        ck_assert_uint_eq(m.seq, UINT64_MAX);
    }
    n = fidbus_enc_error(out, sizeof(out), true, 1, FIDBUS_INVALID, longmsg, false, 0);
    ck_assert_uint_le(n, 4096);
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert_uint_ge(m.message.len, 4096 - 20); /* it used the room */

    static const uint8_t nonce[32] = {1, 2, 3};
    n = fidbus_enc_hello(out, sizeof(out), "fidbusd", nonce, sizeof(nonce));
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert_uint_eq(m.type, FIDBUS_MSG_HELLO);
    ck_assert_uint_eq(m.version, FIDBUS_PROTO_VERSION);
    ck_assert(slice_is(m.name, "fidbusd"));
    ck_assert_mem_eq(m.nonce.ptr, nonce, 32);
    n = fidbus_enc_hello(out, sizeof(out), "fidbusd", NULL, 0);
    ck_assert_int_eq(dec(out + 4, n - 4), 0);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_NONCE));
    ck_assert_int_eq(fidbus_msg_check(&m), 0);
}
END_TEST

/* ------------------------------------------------------ malformed */

START_TEST(test_msg_truncated_at_every_length)
{
    static const char *hex =
        "a6 00 03 01 19 3039 02 68 6f726465722e6372 03 a1 62 6b31 62 7631"
        " 04 9f 01 82 02 03 ff 05 01";
    uint8_t body[128];
    size_t n = unhex(body, sizeof(body), hex);
    ck_assert_int_eq(dec(body, n), 0);
    for (size_t k = 0; k < n; k++) {
        int rc = dec(body, k);
        ck_assert_msg(rc == FIDBUS_MALFORMED, "prefix %zu: rc %d", k, rc);
    }
}
END_TEST

START_TEST(test_msg_trailing_bytes)
{
    ck_assert_int_eq(dec_hex("a1 00 08 00", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("a1 00 08 a0", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("bf 00 08 ff ff", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("a1 00 08", 64), 0);
}
END_TEST

START_TEST(test_msg_not_a_map)
{
    static const char *const bad[] = {"80", "8100",        "00", "6161",
                                      "f6", "c1 a1 00 08", "ff", "9f ff"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(dec_hex(bad[i], 64) == FIDBUS_MALFORMED, "%s accepted", bad[i]);
    ck_assert_int_eq(fidbus_msg_decode(NULL, 0, 64, &m), FIDBUS_MALFORMED);
}
END_TEST

START_TEST(test_msg_wrong_key_types)
{
    static const char *const bad[] = {
        "a2 00 08 20 00",      /* negative key */
        "a2 00 08 61 61 00",   /* text key */
        "a2 00 08 41 01 00",   /* byte-string key */
        "a2 00 08 c1 01 00",   /* tagged key */
        "a2 00 08 80 00",      /* array key */
        "a2 00 08 f4 00",      /* false as key */
        "a2 00 08 f9 0000 00", /* float key */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(dec_hex(bad[i], 64) == FIDBUS_MALFORMED, "%s accepted", bad[i]);
}
END_TEST

START_TEST(test_msg_wrong_value_types)
{
    static const char *const bad[] = {
        "a1 00 20",                         /* type negative */
        "a1 00 61 33",                      /* type text */
        "a2 00 03 01 20",                   /* seq negative */
        "a2 00 03 01 f9 3c00",              /* seq float */
        "a2 00 03 01 c1 01",                /* seq tagged */
        "a2 00 03 02 41 61",                /* event bytes */
        "a2 00 03 02 01",                   /* event uint */
        "a2 00 03 02 d8 20 61 61",          /* event tagged */
        "a3 00 03 02 61 61 03 80",          /* tags array */
        "a3 00 03 02 61 61 03 a1 01 61 61", /* tag key uint */
        "a3 00 03 02 61 61 03 a1 61 61 01", /* tag value uint */
        "a3 00 03 02 61 61 03 a1 61 61 f6", /* tag value null */
        "a2 00 03 05 f5",                   /* flags bool */
        "a2 00 05 06 20",                   /* code negative */
        "a2 00 05 07 41 61",                /* message bytes */
        "a2 00 06 09 01",                   /* command uint */
        "a2 00 06 0a 80",                   /* args array */
        "a2 00 06 0a a1 01 02",             /* args key uint */
        "a2 00 01 0b 61 31",                /* version text */
        "a2 00 01 0c 41 61",                /* name bytes */
        "a2 00 01 0d 61 61",                /* nonce text */
        "a2 00 02 0e 80",                   /* mac array */
        "a2 00 02 0e 5f 61 61 ff",          /* mac chunk of the wrong type */
        "a2 00 03 02 7f 41 61 ff",          /* event chunk of the wrong type */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(dec_hex(bad[i], 64) == FIDBUS_MALFORMED, "%s accepted", bad[i]);
}
END_TEST

START_TEST(test_msg_duplicate_key)
{
    ck_assert_int_eq(dec_hex("a2 00 03 00 03", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("a3 00 08 01 01 01 02", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("a3 00 03 04 00 04 00", 64), FIDBUS_MALFORMED);
    /* Same key once shortest and once not is still a duplicate. */
    ck_assert_int_eq(dec_hex("a3 00 08 01 01 1b 0000000000000001 02", 64),
                     FIDBUS_MALFORMED);
    /* Unknown keys may repeat: they are skipped. */
    ck_assert_int_eq(dec_hex("a3 00 08 18 63 00 18 63 01", 64), 0);
}
END_TEST

START_TEST(test_msg_missing_type)
{
    ck_assert_int_eq(dec_hex("a0", 64), FIDBUS_MALFORMED);
    ck_assert_int_eq(dec_hex("a1 01 05", 64), FIDBUS_MALFORMED);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_SEQ));
    ck_assert_uint_eq(m.seq, 5);
}
END_TEST

START_TEST(test_msg_bad_utf8)
{
    static const char *const bad[] = {
        "a2 00 03 02 62 c3 28",                      /* event: bad continuation */
        "a2 00 03 02 7f 61 61 61 ff ff",             /* event chunk: lone 0xff */
        "a2 00 03 02 7f 61 c3 61 bc ff",             /* event: char split across chunks */
        "a3 00 03 02 61 61 03 a1 62 c0 80 61 61",    /* tag key: overlong */
        "a3 00 03 02 61 61 03 a1 61 6b 63 ed a0 80", /* tag value: surrogate */
        "a3 00 03 02 61 61 03 a1 61 6b 64 f4 90 80 80", /* tag value: > U+10FFFF */
        "a2 00 05 07 61 80",                            /* message */
        "a2 00 06 09 61 fe",                            /* command */
        "a2 00 01 0c 62 e2 82",                         /* name: truncated sequence */
        "a2 00 06 0a a1 61 ff 00",                      /* args key */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(dec_hex(bad[i], 64) == FIDBUS_MALFORMED, "%s accepted", bad[i]);
    /* Text inside a payload is not the bus's business. */
    ck_assert_int_eq(dec_hex("a3 00 03 02 61 61 04 61 ff", 64), 0);
}
END_TEST

/* What a client or plugin may publish: the wire rules, checked on C strings. */
START_TEST(test_msg_event_valid)
{
    struct fidbus_tag ok[] = {{"user", "u1"}, {"region", ""}};
    ck_assert(fidbus_event_valid("order.created", ok, 2));
    ck_assert(fidbus_event_valid("order.created", NULL, 0));
    ck_assert(!fidbus_event_valid(NULL, NULL, 0));
    ck_assert(!fidbus_event_valid("bad id", NULL, 0));
    ck_assert(!fidbus_event_valid("x", NULL, 1));
    struct fidbus_tag dup[] = {{"user", "a"}, {"user", "b"}};
    ck_assert(!fidbus_event_valid("x", dup, 2));
    struct fidbus_tag badkey[] = {{"a b", "v"}};
    ck_assert(!fidbus_event_valid("x", badkey, 1));
    struct fidbus_tag nullv[] = {{"k", NULL}};
    ck_assert(!fidbus_event_valid("x", nullv, 1));
    char longv[FIDBUS_MAX_TAG_VALUE_LEN + 2];
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    struct fidbus_tag toolong[] = {{"k", longv}};
    ck_assert(!fidbus_event_valid("x", toolong, 1));
    longv[FIDBUS_MAX_TAG_VALUE_LEN] = '\0'; /* exactly the limit */
    ck_assert(fidbus_event_valid("x", toolong, 1));
    struct fidbus_tag many[FIDBUS_MAX_TAGS + 1];
    char keys[FIDBUS_MAX_TAGS + 1][8];
    for (size_t i = 0; i <= FIDBUS_MAX_TAGS; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        many[i] = (struct fidbus_tag){keys[i], "v"};
    }
    ck_assert(fidbus_event_valid("x", many, FIDBUS_MAX_TAGS));
    ck_assert(!fidbus_event_valid("x", many, FIDBUS_MAX_TAGS + 1));
}
END_TEST

START_TEST(test_msg_utf8_validator)
{
    static const struct {
        const char *s;
        bool ok;
    } v[] = {
        {"", true},
        {"plain ascii text, longer than eight bytes", true},
        {"\xc2\x80", true},
        {"\xdf\xbf", true},
        {"\xe0\xa0\x80", true},
        {"\xed\x9f\xbf", true},     /* U+D7FF */
        {"\xee\x80\x80", true},     /* U+E000 */
        {"\xef\xbf\xbf", true},     /* U+FFFF */
        {"\xf0\x90\x80\x80", true}, /* U+10000 */
        {"\xf4\x8f\xbf\xbf", true}, /* U+10FFFF */
        {"abcdefgh\xe6\xb0\xb4xyz", true},
        {"\x80", false},
        {"\xbf", false},
        {"\xc0\x80", false},         /* overlong NUL */
        {"\xc1\xbf", false},         /* overlong */
        {"\xe0\x80\x80", false},     /* overlong */
        {"\xe0\x9f\xbf", false},     /* overlong */
        {"\xf0\x80\x80\x80", false}, /* overlong */
        {"\xf0\x8f\xbf\xbf", false}, /* overlong */
        {"\xed\xa0\x80", false},     /* U+D800 */
        {"\xed\xbf\xbf", false},     /* U+DFFF */
        {"\xf4\x90\x80\x80", false}, /* U+110000 */
        {"\xf5\x80\x80\x80", false},
        {"\xff", false},
        {"\xc3", false}, /* truncated */
        {"\xe6\xb0", false},
        {"\xf0\x90\x80", false},
        {"\xc3\x28", false},
        {"\xe6\x28\xb4", false},
        {"\xf0\x90\x28\x80", false},
        {"abcdefgh\x80", false},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        ck_assert_msg(fidbus_utf8_valid((const uint8_t *)v[i].s, strlen(v[i].s)) ==
                          v[i].ok,
                      "case %zu", i);
    /* NUL is valid UTF-8, but not in a tag value. */
    ck_assert(fidbus_utf8_valid((const uint8_t *)"a\0b", 3));
    ck_assert(!fidbus_tag_value_valid("a\0b", 3));
    ck_assert(!fidbus_tag_value_valid("abcdefgh\0", 9));
    ck_assert(fidbus_tag_value_valid("", 0));
    ck_assert(fidbus_tag_value_valid("cn-east ü", strlen("cn-east ü")));
}
END_TEST

/* ------------------------------------------------------ id and tag limits */

/* Builds {0: 3, 2: id} (plus tags hex) into buf; returns the length. */
static size_t publish_with(uint8_t *buf, size_t cap, const char *id, size_t idlen,
                           const char *tags_hex)
{
    size_t n = 0;
    buf[n++] = tags_hex ? 0xa3 : 0xa2;
    buf[n++] = 0x00;
    buf[n++] = 0x03;
    buf[n++] = 0x02;
    buf[n++] = 0x79; /* text, 2-byte length */
    buf[n++] = (uint8_t)(idlen >> 8);
    buf[n++] = (uint8_t)idlen;
    memcpy(buf + n, id, idlen);
    n += idlen;
    if (tags_hex) {
        buf[n++] = 0x03;
        n += unhex(buf + n, cap - n, tags_hex);
    }
    return n;
}

START_TEST(test_msg_event_id_limits)
{
    static uint8_t buf[2048];
    char id[300];
    memset(id, 'a', sizeof(id));
    size_t n = publish_with(buf, sizeof(buf), id, 255, NULL);
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_uint_eq(m.event_len, 255);
    ck_assert_uint_eq(strlen(m.event), 255);

    n = publish_with(buf, sizeof(buf), id, 256, NULL);
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_EVENT));

    n = publish_with(buf, sizeof(buf), "", 0, NULL);
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);

    static const char *const ok[] = {"a", "order.created", "A-Z_0.9:x", "::", "-"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        n = publish_with(buf, sizeof(buf), ok[i], strlen(ok[i]), NULL);
        ck_assert_msg(dec(buf, n) == 0, "%s refused", ok[i]);
        ck_assert_str_eq(m.event, ok[i]);
        ck_assert(fidbus_event_id_valid(ok[i], strlen(ok[i])));
    }
    static const char *const bad[] = {"a b", "a/b", "ü", "a*", "a\tb", "a@b", "{}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = publish_with(buf, sizeof(buf), bad[i], strlen(bad[i]), NULL);
        ck_assert_msg(dec(buf, n) == FIDBUS_INVALID, "%s accepted", bad[i]);
        ck_assert(!fidbus_event_id_valid(bad[i], strlen(bad[i])));
    }
    n = publish_with(buf, sizeof(buf), "a\0b", 3, NULL);
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
}
END_TEST

START_TEST(test_msg_chunked_event_id)
{
    /* 256 bytes in chunks is too long, 255 is fine. */
    static char hex[4096];
    size_t off = (size_t)sprintf(hex, "a2 00 03 02 7f");
    for (int c = 0; c < 9; c++)
        off += (size_t)sprintf(hex + off, " 6f 616161616161616161616161616161"
                                          " 6f 626262626262626262626262626262");
    /* 18 chunks of 15 = 270 > 255 */
    sprintf(hex + off, " ff");
    ck_assert_int_eq(dec_hex(hex, 64), FIDBUS_INVALID);

    off = (size_t)sprintf(hex, "a2 00 03 02 7f");
    for (int c = 0; c < 17; c++)
        off += (size_t)sprintf(hex + off, " 6f 616161616161616161616161616161");
    sprintf(hex + off, " 60 ff"); /* 17 * 15 = 255 bytes and an empty chunk */
    ck_assert_int_eq(dec_hex(hex, 64), 0);
    ck_assert_uint_eq(m.event_len, 255);
    ck_assert_uint_eq(strlen(m.event), 255);
}
END_TEST

START_TEST(test_msg_tag_limits)
{
    static uint8_t buf[8192];
    static char tags[8192];
    size_t n, off;

    /* 32 tags fine, 33 INVALID. */
    for (int count = 32; count <= 33; count++) {
        off = (size_t)sprintf(tags, "b8 %02x", count);
        for (int i = 0; i < count; i++)
            off += (size_t)sprintf(tags + off, " 62 6b%02x 61 76",
                                   "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]);
        n = publish_with(buf, sizeof(buf), "e", 1, tags);
        int rc = dec(buf, n);
        ck_assert_msg(rc == (count == 32 ? 0 : FIDBUS_INVALID), "%d tags: %d %s", count,
                      rc, m.why);
        if (rc == 0) {
            ck_assert_uint_eq(m.ntags, 32);
            ck_assert_str_eq(m.tags[31].key, "kV");
            ck_assert_str_eq(m.tags[31].value, "v");
        }
    }
    /* Key of 64 fine, 65 INVALID; empty key INVALID. */
    off = (size_t)sprintf(tags, "a1 78 40");
    for (int i = 0; i < 64; i++)
        off += (size_t)sprintf(tags + off, "6b");
    sprintf(tags + off, " 61 76");
    n = publish_with(buf, sizeof(buf), "e", 1, tags);
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_uint_eq(strlen(m.tags[0].key), 64);
    off = (size_t)sprintf(tags, "a1 78 41");
    for (int i = 0; i < 65; i++)
        off += (size_t)sprintf(tags + off, "6b");
    sprintf(tags + off, " 61 76");
    n = publish_with(buf, sizeof(buf), "e", 1, tags);
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    n = publish_with(buf, sizeof(buf), "e", 1, "a1 60 61 76");
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    n = publish_with(buf, sizeof(buf), "e", 1, "a1 61 3a 61 76"); /* ':' not in keys */
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);

    /* Value of 255 fine, 256 INVALID; empty fine; NUL INVALID; UTF-8 fine. */
    off = (size_t)sprintf(tags, "a1 61 6b 78 ff");
    for (int i = 0; i < 255; i++)
        off += (size_t)sprintf(tags + off, "76");
    n = publish_with(buf, sizeof(buf), "e", 1, tags);
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_uint_eq(strlen(m.tags[0].value), 255);
    off = (size_t)sprintf(tags, "a1 61 6b 79 0100");
    for (int i = 0; i < 256; i++)
        off += (size_t)sprintf(tags + off, "76");
    n = publish_with(buf, sizeof(buf), "e", 1, tags);
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    n = publish_with(buf, sizeof(buf), "e", 1, "a1 61 6b 60");
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_str_eq(m.tags[0].value, "");
    n = publish_with(buf, sizeof(buf), "e", 1, "a1 61 6b 63 61 00 62");
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    n = publish_with(buf, sizeof(buf), "e", 1, "a1 61 6b 62 c3 bc");
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_str_eq(m.tags[0].value, "ü");

    /* A duplicate tag key is ambiguous for routing: INVALID. */
    n = publish_with(buf, sizeof(buf), "e", 1, "a2 61 6b 61 31 61 6b 61 32");
    ck_assert_int_eq(dec(buf, n), FIDBUS_INVALID);
    /* Empty tags map, and chunked tag text. */
    n = publish_with(buf, sizeof(buf), "e", 1, "a0");
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_uint_eq(m.ntags, 0);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_TAGS));
    n = publish_with(buf, sizeof(buf), "e", 1, "bf 7f 61 6b 61 65 ff 7f 60 61 76 ff ff");
    ck_assert_int_eq(dec(buf, n), 0);
    ck_assert_str_eq(m.tags[0].key, "ke");
    ck_assert_str_eq(m.tags[0].value, "v");

    /* A malformed tag after an INVALID one: MALFORMED wins. */
    n = publish_with(buf, sizeof(buf), "e", 1, "a2 60 61 76 61 6b 01");
    ck_assert_int_eq(dec(buf, n), FIDBUS_MALFORMED);

    ck_assert(fidbus_tag_key_valid("version", 7));
    ck_assert(!fidbus_tag_key_valid("a:b", 3));
    ck_assert(!fidbus_tag_key_valid("", 0));
}
END_TEST

/* Builds a PUBLISH whose payload is `open` repeated depth times, then
 * `leaf`, then `close` repeated depth times. */
static size_t nested(uint8_t *buf, size_t cap, const char *open, const char *leaf,
                     const char *close, unsigned depth)
{
    size_t n = unhex(buf, cap, "a3 00 03 02 61 78 04");
    for (unsigned i = 0; i < depth; i++)
        n += unhex(buf + n, cap - n, open);
    n += unhex(buf + n, cap - n, leaf);
    for (unsigned i = 0; i < depth; i++)
        n += unhex(buf + n, cap - n, close);
    return n;
}

START_TEST(test_msg_depth_limit)
{
    static uint8_t buf[1 << 16];
    static const struct {
        const char *open, *leaf, *close;
        unsigned leaf_depth; /* a leaf that is itself a container adds one */
    } shapes[] = {
        {"81", "00", "", 0},      /* [[[0]]] */
        {"a1 00", "00", "", 0},   /* {0: {0: 0}} */
        {"c1", "00", "", 0},      /* 1(1(0)) tag chain */
        {"9f", "", "ff", 0},      /* [_ [_ ]] */
        {"bf 00", "00", "ff", 0}, /* {_ 0: {_ 0: 0}} */
        {"81", "80", "", 1},      /* innermost [] counts */
        {"d9 d9f7", "a0", "", 1}, /* self-described, then {} */
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        unsigned d = 64 - shapes[i].leaf_depth;
        size_t n =
            nested(buf, sizeof(buf), shapes[i].open, shapes[i].leaf, shapes[i].close, d);
        ck_assert_msg(dec(buf, n) == 0, "shape %zu at 64: %s", i, m.why);
        n = nested(buf, sizeof(buf), shapes[i].open, shapes[i].leaf, shapes[i].close,
                   d + 1);
        ck_assert_msg(dec(buf, n) == FIDBUS_TOO_LARGE, "shape %zu at 65", i);
    }
    /* A custom limit, and a scalar payload at limit 1. */
    size_t n = nested(buf, sizeof(buf), "81", "00", "", 3);
    ck_assert_int_eq(fidbus_msg_decode(buf, n, 3, &m), 0);
    ck_assert_int_eq(fidbus_msg_decode(buf, n, 2, &m), FIDBUS_TOO_LARGE);
    n = nested(buf, sizeof(buf), "81", "00", "", 0);
    ck_assert_int_eq(fidbus_msg_decode(buf, n, 1, &m), 0);
    /* args counts its own map: {"k": [[0]]} is depth 3. */
    ck_assert_int_eq(dec_hex("a3 00 06 09 61 63 0a a1 61 6b 81 81 00", 3), 0);
    ck_assert_int_eq(dec_hex("a3 00 06 09 61 63 0a a1 61 6b 81 81 00", 2),
                     FIDBUS_TOO_LARGE);
    /* Limits above the hard cap (1024) are clamped; deep input never
     * recurses: 30000 levels is just TOO_LARGE. */
    n = nested(buf, sizeof(buf), "81", "00", "", 1024);
    ck_assert_int_eq(fidbus_msg_decode(buf, n, 100000, &m), 0);
    n = nested(buf, sizeof(buf), "81", "00", "", 1025);
    ck_assert_int_eq(fidbus_msg_decode(buf, n, 100000, &m), FIDBUS_TOO_LARGE);
    n = nested(buf, sizeof(buf), "9f", "", "", 30000);
    ck_assert_int_eq(dec(buf, n), FIDBUS_TOO_LARGE);
    /* Too deep in an unknown key too. */
    n = unhex(buf, sizeof(buf), "a2 00 08 18 63");
    for (int i = 0; i < 70; i++)
        buf[n++] = 0x81;
    buf[n++] = 0x00;
    ck_assert_int_eq(dec(buf, n), FIDBUS_TOO_LARGE);
}
END_TEST

/* ------------------------------------------------------ accepted forms */

START_TEST(test_msg_indefinite_envelope_and_chunked_strings)
{
    /* {_ 0: 3, 2: (_ "ord", "er.x"), 3: {_ "k": (_ "v", "w")}, 7: (_ "a", "b"),
     *    13: (_ h'01', h'0203') } */
    int rc = dec_hex("bf 00 03 02 7f 63 6f7264 64 65722e78 ff"
                     " 03 bf 61 6b 7f 61 76 61 77 ff ff"
                     " 07 7f 61 61 61 62 ff 0d 5f 41 01 42 0203 ff ff",
                     64);
    ck_assert_msg(rc == 0, "%s", m.why);
    ck_assert_str_eq(m.event, "order.x");
    ck_assert_uint_eq(m.ntags, 1);
    ck_assert_str_eq(m.tags[0].key, "k");
    ck_assert_str_eq(m.tags[0].value, "vw");
    ck_assert(slice_is(m.message, "ab"));
    ck_assert_uint_eq(m.nonce.len, 3);
    ck_assert_mem_eq(m.nonce.ptr, "\x01\x02\x03", 3);
    /* Chunked plain strings share a 4 KiB budget in the arena. */
    static char hex[40000];
    size_t off = (size_t)sprintf(hex, "a2 00 05 07 7f");
    for (int i = 0; i < 5; i++) {
        off += (size_t)sprintf(hex + off, " 79 0400 ");
        for (int j = 0; j < 1024; j++)
            off += (size_t)sprintf(hex + off, "61");
    }
    sprintf(hex + off, " ff");
    ck_assert_int_eq(dec_hex(hex, 64), FIDBUS_TOO_LARGE);
    /* ... while a long definite message is just a slice. */
    off = (size_t)sprintf(hex, "a2 00 05 07 79 2710 ");
    for (int j = 0; j < 10000; j++)
        off += (size_t)sprintf(hex + off, "61");
    ck_assert_int_eq(dec_hex(hex, 64), 0);
    ck_assert_uint_eq(m.message.len, 10000);
}
END_TEST

START_TEST(test_msg_non_shortest_ints)
{
    /* type 3 as 1b 00..03, seq 5 as 19 0005, key 2 as 18 02, the tags map
     * count as b9 0001, the event length as 78 01. */
    int rc = dec_hex("a4 18 00 1b 0000000000000003 19 0001 1a 00000005 18 02 78 01 65"
                     " 1a 00000003 b9 0001 79 0001 6b 61 76",
                     64);
    ck_assert_msg(rc == 0, "%s", m.why);
    ck_assert_uint_eq(m.type, 3);
    ck_assert_uint_eq(m.seq, 5);
    ck_assert_str_eq(m.event, "e");
    ck_assert_str_eq(m.tags[0].key, "k");
}
END_TEST

START_TEST(test_msg_unknown_keys_ignored)
{
    int rc = dec_hex("a5 00 03 02 61 65 18 63 a1 61 61 9f 01 c1 02 ff 19 ffff f6"
                     " 1b ffffffffffffffff 5f 41 00 ff",
                     64);
    ck_assert_msg(rc == 0, "%s", m.why);
    ck_assert_uint_eq(m.present, FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_EVENT));
    ck_assert_int_eq(fidbus_msg_check(&m), 0);
}
END_TEST

START_TEST(test_msg_seq_recovered_on_error)
{
    /* seq first, then a duplicate */
    ck_assert_int_eq(dec_hex("a3 01 18 2a 00 03 00 03", 64), FIDBUS_MALFORMED);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_SEQ));
    ck_assert_uint_eq(m.seq, 42);
    /* seq then a bad payload */
    ck_assert_int_eq(dec_hex("a3 00 03 01 07 04 5f 61 61 ff", 64), FIDBUS_MALFORMED);
    ck_assert_uint_eq(m.seq, 7);
    /* seq after an INVALID event id: still read */
    ck_assert_int_eq(dec_hex("a3 00 03 02 61 20 01 09", 64), FIDBUS_INVALID);
    ck_assert(fidbus_msg_has(&m, FIDBUS_K_SEQ));
    ck_assert_uint_eq(m.seq, 9);
    /* seq before a too deep payload */
    uint8_t buf[256];
    size_t n = unhex(buf, sizeof(buf), "a3 00 03 01 0b 04");
    for (int i = 0; i < 65; i++)
        buf[n++] = 0x81;
    buf[n++] = 0x00;
    ck_assert_int_eq(dec(buf, n), FIDBUS_TOO_LARGE);
    ck_assert_uint_eq(m.seq, 11);
    /* no seq: the bit is clear even if a previous decode had one */
    ck_assert_int_eq(dec_hex("a1 00 20", 64), FIDBUS_MALFORMED);
    ck_assert(!fidbus_msg_has(&m, FIDBUS_K_SEQ));
}
END_TEST

START_TEST(test_msg_check_per_type)
{
    ck_assert_int_eq(dec_hex("a1 00 03", 64), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), FIDBUS_MALFORMED); /* PUBLISH w/o event */
    ck_assert_ptr_nonnull(m.why);
    ck_assert_int_eq(dec_hex("a1 00 06", 64), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), FIDBUS_MALFORMED); /* REQUEST w/o command */
    ck_assert_int_eq(dec_hex("a1 00 02", 64), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), FIDBUS_MALFORMED); /* AUTH w/o mac */
    ck_assert_int_eq(dec_hex("a1 00 08", 64), 0);
    ck_assert_int_eq(fidbus_msg_check(&m), 0); /* PING */
    static const char *const unsupported[] = {"a1 00 00", "a1 00 09", "a1 00 15",
                                              "a1 00 18 3f", "a1 00 1b ffffffffffffffff"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        ck_assert_int_eq(dec_hex(unsupported[i], 64), 0);
        ck_assert_int_eq(fidbus_msg_check(&m), FIDBUS_UNSUPPORTED);
    }
}
END_TEST

START_TEST(test_msg_code_names)
{
    ck_assert_str_eq(fidbus_code_name(FIDBUS_OK), "OK");
    ck_assert_str_eq(fidbus_code_name(FIDBUS_MALFORMED), "MALFORMED");
    ck_assert_str_eq(fidbus_code_name(FIDBUS_NO_ROUTE), "NO_ROUTE");
    ck_assert_str_eq(fidbus_code_name(FIDBUS_SIGNATURE_MISMATCH), "SIGNATURE_MISMATCH");
    ck_assert_str_eq(fidbus_code_name(FIDBUS_INTERNAL), "INTERNAL");
    ck_assert_str_eq(fidbus_code_name(15), "UNKNOWN");
    ck_assert_str_eq(fidbus_code_name(-1), "UNKNOWN");
}
END_TEST

Suite *msg_suite(void)
{
    Suite *s = suite_create("msg");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_msg_rfc8949_examples_as_payload);
    tcase_add_test(tc, test_msg_rfc8949_examples_as_result_args_and_unknown);
    tcase_add_test(tc, test_msg_libcbor_gaps);
    tcase_add_test(tc, test_msg_rfc8949_not_well_formed);
    tcase_add_test(tc, test_msg_round_trip_every_type);
    tcase_add_test(tc, test_msg_encode_rejects_incomplete_input);
    tcase_add_test(tc, test_msg_enc_ack_error_hello);
    tcase_add_test(tc, test_msg_truncated_at_every_length);
    tcase_add_test(tc, test_msg_trailing_bytes);
    tcase_add_test(tc, test_msg_not_a_map);
    tcase_add_test(tc, test_msg_wrong_key_types);
    tcase_add_test(tc, test_msg_wrong_value_types);
    tcase_add_test(tc, test_msg_duplicate_key);
    tcase_add_test(tc, test_msg_missing_type);
    tcase_add_test(tc, test_msg_bad_utf8);
    tcase_add_test(tc, test_msg_utf8_validator);
    tcase_add_test(tc, test_msg_event_id_limits);
    tcase_add_test(tc, test_msg_chunked_event_id);
    tcase_add_test(tc, test_msg_tag_limits);
    tcase_add_test(tc, test_msg_depth_limit);
    tcase_add_test(tc, test_msg_indefinite_envelope_and_chunked_strings);
    tcase_add_test(tc, test_msg_non_shortest_ints);
    tcase_add_test(tc, test_msg_unknown_keys_ignored);
    tcase_add_test(tc, test_msg_seq_recovered_on_error);
    tcase_add_test(tc, test_msg_check_per_type);
    tcase_add_test(tc, test_msg_code_names);
    tcase_add_test(tc, test_msg_event_valid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(msg_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
