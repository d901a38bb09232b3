/*
 * libFuzzer target for the wire codec: the fuzzer's input is treated as a
 * raw byte stream from a peer. It is fed through the frame reader in reads
 * whose sizes come from the input itself, and every whole frame goes
 * through fidbus_msg_decode and fidbus_msg_check, as the daemon does.
 * Whatever decodes is re-encoded and decoded again: the raw items and
 * strings must survive unchanged.
 *
 * Not part of the default build; see tests/fuzz/README.md.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <fidbus/proto.h>

static struct fidbus_msg msg, again;

static void check_round_trip(void)
{
    struct fidbus_msg_out o = {0};
    /* Keys 23-27 (a tap's EVENT, a CALL's uid/pid) are written only by
     * fidbus_enc_event and fidbus_enc_call: fidbus_msg_out has no fields
     * for them, so the generic encoder cannot carry them round. */
    o.present = msg.present & ~FIDBUS_BIT(FIDBUS_K_TAGS) & (FIDBUS_BIT(FIDBUS_K_ROUTE) - 1);
    o.type = msg.type;
    o.seq = msg.seq;
    o.flags = msg.flags;
    o.code = msg.code;
    o.version = msg.version;
    o.event = msg.event;
    o.payload = msg.payload;
    o.result = msg.result;
    o.args = msg.args;
    o.nonce = msg.nonce;
    o.mac = msg.mac;
    o.id = msg.id;
    o.credit = msg.credit;
    o.timeout_ms = msg.timeout_ms;
    o.generation = msg.generation;
    o.attempt = msg.attempt;
    o.upto = msg.upto;
    if (msg.ntags) {
        o.present |= FIDBUS_BIT(FIDBUS_K_TAGS);
        o.tags = msg.tags;
        o.ntags = msg.ntags;
    }
    /* message/command/name/function/signature are slices, not C strings:
     * leave them out unless they are free of NUL bytes. */
    char *texts[5] = {NULL, NULL, NULL, NULL, NULL};
    const struct fidbus_slice *src[5] = {&msg.message, &msg.command, &msg.name,
                                         &msg.function, &msg.signature};
    const enum fidbus_key keys[5] = {FIDBUS_K_MESSAGE, FIDBUS_K_COMMAND, FIDBUS_K_NAME,
                                     FIDBUS_K_FUNCTION, FIDBUS_K_SIGNATURE};
    for (int i = 0; i < 5; i++) {
        if (!(o.present & FIDBUS_BIT(keys[i])))
            continue;
        if (memchr(src[i]->ptr, 0, src[i]->len)) {
            o.present &= ~FIDBUS_BIT(keys[i]);
            continue;
        }
        texts[i] = strndup((const char *)src[i]->ptr, src[i]->len);
        if (!texts[i])
            abort();
    }
    o.message = texts[0];
    o.command = texts[1];
    o.name = texts[2];
    o.function = texts[3];
    o.signature = texts[4];

    struct fidbus_buf b = {0};
    if (fidbus_msg_encode(&b, &o) != 0)
        abort();
    if (fidbus_msg_decode(b.data + 4, b.len - 4, FIDBUS_MAX_DEPTH_DEFAULT, &again) != 0)
        abort();
    if (again.present != o.present || again.seq != msg.seq || again.type != msg.type)
        abort();
    if (again.payload.len != msg.payload.len ||
        (msg.payload.len && memcmp(again.payload.ptr, msg.payload.ptr, msg.payload.len)))
        abort();
    if (again.ntags != msg.ntags)
        abort();
    /* The remote-function numbers, each where its key is present. */
    const struct {
        enum fidbus_key k;
        uint64_t a, b;
    } nums[] = {
        {FIDBUS_K_ID, again.id, msg.id},
        {FIDBUS_K_CREDIT, again.credit, msg.credit},
        {FIDBUS_K_TIMEOUT_MS, again.timeout_ms, msg.timeout_ms},
        {FIDBUS_K_GENERATION, again.generation, msg.generation},
        {FIDBUS_K_ATTEMPT, again.attempt, msg.attempt},
        {FIDBUS_K_UPTO, again.upto, msg.upto},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if ((o.present & FIDBUS_BIT(nums[i].k)) && nums[i].a != nums[i].b)
            abort();
    if (texts[3] && (again.function.len != msg.function.len ||
                     memcmp(again.function.ptr, msg.function.ptr, msg.function.len)))
        abort();
    for (size_t i = 0; i < msg.ntags; i++) {
        if (strcmp(again.tags[i].key, msg.tags[i].key) ||
            strcmp(again.tags[i].value, msg.tags[i].value))
            abort();
    }
    fidbus_buf_free(&b);
    for (int i = 0; i < 5; i++)
        free(texts[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* First byte: read size (1..256) for feeding the frame reader. */
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;

    struct fidbus_frame_reader r;
    if (fidbus_frame_reader_init(&r, 65536, 16) != 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        uint8_t *p;
        size_t room;
        if (fidbus_frame_reader_space(&r, &p, &room) != 0)
            break;
        size_t n = size - off < step ? size - off : step;
        if (n > room)
            n = room;
        memcpy(p, data + off, n);
        fidbus_frame_reader_commit(&r, n);
        off += n;

        const uint8_t *body;
        size_t len;
        int rc;
        while ((rc = fidbus_frame_next(&r, &body, &len)) == 1) {
            if (fidbus_msg_decode(body, len, FIDBUS_MAX_DEPTH_DEFAULT, &msg) == 0) {
                (void)fidbus_msg_check(&msg);
                check_round_trip();
            }
        }
        if (rc != 0)
            goto out; /* fatal framing error: the daemon closes here */
    }
out:
    fidbus_frame_reader_destroy(&r);

    /* The whole input (minus the step byte) as one body, too. */
    if (fidbus_msg_decode(data, size, FIDBUS_MAX_DEPTH_DEFAULT, &msg) == 0)
        check_round_trip();
    return 0;
}
