/*
 * Message encoding (proto/README.md, <fidbus/proto.h>).
 *
 * fidbus_msg_encode() writes any message as one frame (4-byte big-endian
 * length, then a definite-length CBOR map with its keys in ascending order,
 * shortest-form heads). Raw items (payload, result, args) are copied
 * verbatim: the bus never re-encodes a payload. The fidbus_enc_* helpers
 * write the daemon's own frequent answers (ACK, ERROR, HELLO) into a
 * caller's fixed buffer with no allocation at all.
 *
 * CBOR heads are written with libcbor's encoding functions, which take the
 * room left and return 0 when it is too small; a writer remembers that and
 * the frame is given up as a whole.
 */
#include <errno.h>
#include <string.h>

#include <cbor.h>

#include <fidbus/proto.h>

/* fidbus_enc_error keeps its frames below this size (header included). */
#define FB_ERROR_FRAME_MAX 4096u
/* Longest CBOR head: initial byte + 8-byte argument. */
#define HEAD_MAX 9u

struct writer {
    uint8_t *p, *end;
    bool overflow;
};

static inline size_t room(const struct writer *w)
{
    return (size_t)(w->end - w->p);
}

static inline void put_n(struct writer *w, size_t n)
{
    if (n == 0)
        w->overflow = true;
    else
        w->p += n;
}

/*
 * A head whose argument is below 24 is one byte, the major type and the
 * value (RFC 8949 section 3): every key, type, small count and short
 * string. Those are written here; every other head goes through libcbor.
 * A call into libcbor per key was a fifth of encoding a CALL (callgrind),
 * the mirror of the decoder's inline case for the same heads
 * (lib/cbor_scan.h).
 */
static inline bool put_small_head(struct writer *w, uint8_t major, uint64_t v)
{
    if (v >= 24 || w->overflow)
        return false;
    if (w->p < w->end)
        *w->p++ = (uint8_t)(major << 5 | v);
    else
        w->overflow = true;
    return true;
}

static inline void put_uint(struct writer *w, uint64_t v)
{
    if (!put_small_head(w, 0, v) && !w->overflow)
        put_n(w, cbor_encode_uint(v, w->p, room(w)));
}

static inline void put_map(struct writer *w, size_t n)
{
    if (!put_small_head(w, 5, n) && !w->overflow)
        put_n(w, cbor_encode_map_start(n, w->p, room(w)));
}

static inline void put_null(struct writer *w)
{
    if (w->p < w->end)
        *w->p++ = 0xf6;
    else
        w->overflow = true;
}

static void put_bytes(struct writer *w, const void *s, size_t n)
{
    if (w->overflow || n > room(w)) {
        w->overflow = true;
        return;
    }
    if (n)
        memcpy(w->p, s, n);
    w->p += n;
}

static void put_tstr(struct writer *w, const char *s, size_t n)
{
    if (!put_small_head(w, 3, n) && !w->overflow)
        put_n(w, cbor_encode_string_start(n, w->p, room(w)));
    put_bytes(w, s, n);
}

static void put_bstr(struct writer *w, const uint8_t *s, size_t n)
{
    if (!w->overflow)
        put_n(w, cbor_encode_bytestring_start(n, w->p, room(w)));
    put_bytes(w, s, n);
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Closes a frame begun at `frame`: writes its length, returns its size. */
static size_t finish(const struct writer *w, uint8_t *frame)
{
    if (w->overflow)
        return 0;
    size_t body = (size_t)(w->p - frame) - FIDBUS_FRAME_HEADER;
    put_be32(frame, (uint32_t)body);
    return body + FIDBUS_FRAME_HEADER;
}

static size_t strlen_or0(const char *s)
{
    return s ? strlen(s) : 0;
}

/* An upper bound of the frame size, or SIZE_MAX if an input is unusable. */
static size_t encoded_bound(const struct fidbus_msg_out *m)
{
    uint32_t pr = m->present;
    size_t n = FIDBUS_FRAME_HEADER + HEAD_MAX + FIDBUS_K__COUNT * 2 * HEAD_MAX;

    if (pr & FIDBUS_BIT(FIDBUS_K_EVENT)) {
        if (!m->event)
            return SIZE_MAX;
        n += strlen(m->event);
    }
    if (pr & FIDBUS_BIT(FIDBUS_K_TAGS)) {
        if (m->ntags && !m->tags)
            return SIZE_MAX;
        for (size_t i = 0; i < m->ntags; i++) {
            if (!m->tags[i].key || !m->tags[i].value)
                return SIZE_MAX;
            n += 2 * HEAD_MAX + strlen(m->tags[i].key) + strlen(m->tags[i].value);
        }
    }
    /* A raw item cannot be empty: a present key needs one whole item. */
    const struct {
        unsigned key;
        const struct fidbus_slice *s;
    } raw[] = {
        {FIDBUS_K_PAYLOAD, &m->payload}, {FIDBUS_K_RESULT, &m->result},
        {FIDBUS_K_ARGS, &m->args},       {FIDBUS_K_NONCE, &m->nonce},
        {FIDBUS_K_MAC, &m->mac},
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        if (!(pr & FIDBUS_BIT(raw[i].key)))
            continue;
        bool is_item = raw[i].key != FIDBUS_K_NONCE && raw[i].key != FIDBUS_K_MAC;
        if ((raw[i].s->len && !raw[i].s->ptr) || (is_item && raw[i].s->len == 0))
            return SIZE_MAX;
        n += raw[i].s->len;
    }
    if (pr & FIDBUS_BIT(FIDBUS_K_MESSAGE))
        n += strlen_or0(m->message);
    if (pr & FIDBUS_BIT(FIDBUS_K_COMMAND))
        n += strlen_or0(m->command);
    if (pr & FIDBUS_BIT(FIDBUS_K_NAME))
        n += strlen_or0(m->name);
    if (pr & FIDBUS_BIT(FIDBUS_K_FUNCTION))
        n += strlen_or0(m->function);
    if (pr & FIDBUS_BIT(FIDBUS_K_SIGNATURE))
        n += strlen_or0(m->signature);
    return n;
}

/*
 * Returns 0, -ENOMEM, -EMSGSIZE (the body would not fit the 32-bit length)
 * or -EINVAL (a present key without its data: a NULL event or tag string,
 * an empty raw item).
 */
int fidbus_msg_encode(struct fidbus_buf *b, const struct fidbus_msg_out *m)
{
    size_t bound = encoded_bound(m);
    if (bound == SIZE_MAX)
        return -EINVAL;
    int rc = fidbus_buf_reserve(b, bound);
    if (rc)
        return rc;

    uint8_t *frame = b->data + b->len;
    struct writer w = {frame + FIDBUS_FRAME_HEADER, frame + bound, false};
    /* Keys 23-27 are written only by fidbus_enc_event and fidbus_enc_call
     * (fidbus_msg_out has no fields for them). */
    uint32_t pr = m->present & (FIDBUS_BIT(FIDBUS_K_ROUTE) - 1);

    put_map(&w, (size_t)__builtin_popcount(pr));
    for (unsigned k = 0; k < FIDBUS_K__COUNT; k++) {
        if (!(pr & FIDBUS_BIT(k)))
            continue;
        put_uint(&w, k);
        switch ((enum fidbus_key)k) {
        case FIDBUS_K_TYPE:
            put_uint(&w, m->type);
            break;
        case FIDBUS_K_SEQ:
            put_uint(&w, m->seq);
            break;
        case FIDBUS_K_EVENT:
            put_tstr(&w, m->event, strlen(m->event));
            break;
        case FIDBUS_K_TAGS:
            put_map(&w, m->ntags);
            for (size_t i = 0; i < m->ntags; i++) {
                put_tstr(&w, m->tags[i].key, strlen(m->tags[i].key));
                put_tstr(&w, m->tags[i].value, strlen(m->tags[i].value));
            }
            break;
        case FIDBUS_K_PAYLOAD:
            put_bytes(&w, m->payload.ptr, m->payload.len);
            break;
        case FIDBUS_K_FLAGS:
            put_uint(&w, m->flags);
            break;
        case FIDBUS_K_CODE:
            put_uint(&w, m->code);
            break;
        case FIDBUS_K_MESSAGE:
            put_tstr(&w, m->message ? m->message : "", strlen_or0(m->message));
            break;
        case FIDBUS_K_RESULT:
            put_bytes(&w, m->result.ptr, m->result.len);
            break;
        case FIDBUS_K_COMMAND:
            put_tstr(&w, m->command ? m->command : "", strlen_or0(m->command));
            break;
        case FIDBUS_K_ARGS:
            put_bytes(&w, m->args.ptr, m->args.len);
            break;
        case FIDBUS_K_VERSION:
            put_uint(&w, m->version);
            break;
        case FIDBUS_K_NAME:
            put_tstr(&w, m->name ? m->name : "", strlen_or0(m->name));
            break;
        case FIDBUS_K_NONCE:
            put_bstr(&w, m->nonce.ptr, m->nonce.len);
            break;
        case FIDBUS_K_MAC:
            put_bstr(&w, m->mac.ptr, m->mac.len);
            break;
        case FIDBUS_K_FUNCTION:
            put_tstr(&w, m->function ? m->function : "", strlen_or0(m->function));
            break;
        case FIDBUS_K_ID:
            put_uint(&w, m->id);
            break;
        case FIDBUS_K_SIGNATURE:
            put_tstr(&w, m->signature ? m->signature : "", strlen_or0(m->signature));
            break;
        case FIDBUS_K_CREDIT:
            put_uint(&w, m->credit);
            break;
        case FIDBUS_K_TIMEOUT_MS:
            put_uint(&w, m->timeout_ms);
            break;
        case FIDBUS_K_GENERATION:
            put_uint(&w, m->generation);
            break;
        case FIDBUS_K_ATTEMPT:
            put_uint(&w, m->attempt);
            break;
        case FIDBUS_K_UPTO:
            put_uint(&w, m->upto);
            break;
        case FIDBUS_K_ROUTE: /* masked out above */
        case FIDBUS_K_CONN:
        case FIDBUS_K_DROPPED:
        case FIDBUS_K_UID:
        case FIDBUS_K_PID:
            break;
        case FIDBUS_K__COUNT:
            break;
        }
    }
    if (w.overflow)
        return -EINVAL; /* cannot happen: the bound covers every head */
    size_t body = (size_t)(w.p - frame) - FIDBUS_FRAME_HEADER;
    if (body > UINT32_MAX)
        return -EMSGSIZE;
    put_be32(frame, (uint32_t)body);
    b->len += body + FIDBUS_FRAME_HEADER;
    return 0;
}

size_t fidbus_enc_ack(uint8_t *out, size_t cap, uint64_t seq, uint64_t result)
{
    if (cap < FIDBUS_FRAME_HEADER)
        return 0;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 3);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_ACK);
    put_uint(&w, FIDBUS_K_SEQ);
    put_uint(&w, seq);
    put_uint(&w, FIDBUS_K_RESULT);
    put_uint(&w, result);
    return finish(&w, out);
}

/* Length of a UTF-8 prefix of s[0..n) no longer than max that does not end
 * inside a character, so a truncated message stays valid text. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
        cut--;
    return cut;
}

size_t fidbus_enc_error(uint8_t *out, size_t cap, bool has_seq, uint64_t seq,
                        uint64_t code, const char *message, bool with_result,
                        uint64_t result)
{
    if (cap > FB_ERROR_FRAME_MAX)
        cap = FB_ERROR_FRAME_MAX;
    if (cap < FIDBUS_FRAME_HEADER)
        return 0;
    if (!message)
        message = fidbus_code_name(code > INT32_MAX ? -1 : (int)code);

    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 3u + has_seq + with_result);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_ERROR);
    if (has_seq) {
        put_uint(&w, FIDBUS_K_SEQ);
        put_uint(&w, seq);
    }
    put_uint(&w, FIDBUS_K_CODE);
    put_uint(&w, code);
    put_uint(&w, FIDBUS_K_MESSAGE);
    if (w.overflow)
        return 0;

    /* Room for the message text: what is left after its own head and, when
     * asked for, the result entry (key 1 byte + uint up to 9). */
    size_t left = room(&w), tail = with_result ? 1 + HEAD_MAX : 0;
    if (left < 1 + tail)
        return 0;
    left -= tail;
    size_t mlen = strlen(message);
    size_t head = mlen < 24 ? 1 : mlen < 256 ? 2 : mlen < 65536 ? 3 : 5;
    /* The head sized for the whole text also covers any shorter cut. */
    size_t max = left > head ? left - head : 0;
    size_t len = utf8_cut(message, mlen, max);
    put_tstr(&w, message, len);
    if (with_result) {
        put_uint(&w, FIDBUS_K_RESULT);
        put_uint(&w, result);
    }
    return finish(&w, out);
}

size_t fidbus_enc_hello(uint8_t *out, size_t cap, const char *server_name,
                        const uint8_t *nonce, size_t nonce_len)
{
    if (cap < FIDBUS_FRAME_HEADER)
        return 0;
    bool with_nonce = nonce && nonce_len;
    bool with_name = server_name != NULL;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 2u + with_name + with_nonce);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_HELLO);
    put_uint(&w, FIDBUS_K_VERSION);
    put_uint(&w, FIDBUS_PROTO_VERSION);
    if (with_name) {
        put_uint(&w, FIDBUS_K_NAME);
        put_tstr(&w, server_name, strlen(server_name));
    }
    if (with_nonce) {
        put_uint(&w, FIDBUS_K_NONCE);
        put_bstr(&w, nonce, nonce_len);
    }
    return finish(&w, out);
}

/* ------------------------------------------------- remote functions */

size_t fidbus_enc_register(uint8_t *out, size_t cap, uint64_t seq, const char *function,
                           const char *signature, uint64_t credit, uint64_t timeout_ms,
                           uint64_t flags)
{
    if (cap < FIDBUS_FRAME_HEADER || !function || !signature)
        return 0;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 4u + (credit != 0) + (timeout_ms != 0) + (flags != 0));
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_REGISTER);
    put_uint(&w, FIDBUS_K_SEQ);
    put_uint(&w, seq);
    if (flags) {
        put_uint(&w, FIDBUS_K_FLAGS);
        put_uint(&w, flags);
    }
    put_uint(&w, FIDBUS_K_FUNCTION);
    put_tstr(&w, function, strlen(function));
    put_uint(&w, FIDBUS_K_SIGNATURE);
    put_tstr(&w, signature, strlen(signature));
    if (credit) {
        put_uint(&w, FIDBUS_K_CREDIT);
        put_uint(&w, credit);
    }
    if (timeout_ms) {
        put_uint(&w, FIDBUS_K_TIMEOUT_MS);
        put_uint(&w, timeout_ms);
    }
    return finish(&w, out);
}

size_t fidbus_enc_unregister(uint8_t *out, size_t cap, uint64_t seq, const char *function)
{
    if (cap < FIDBUS_FRAME_HEADER || !function)
        return 0;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 3);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_UNREGISTER);
    put_uint(&w, FIDBUS_K_SEQ);
    put_uint(&w, seq);
    put_uint(&w, FIDBUS_K_FUNCTION);
    put_tstr(&w, function, strlen(function));
    return finish(&w, out);
}

/* The daemon writes this straight into a member's output buffer, once per
 * call: no allocation, the payload copied once, byte-exact. */
size_t fidbus_enc_call(uint8_t *out, size_t cap, const struct fidbus_call_out *c)
{
    if (cap < FIDBUS_FRAME_HEADER || !c->event || (c->ntags && !c->tags))
        return 0;
    bool with_payload = c->payload.ptr && c->payload.len;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 6u + (c->ntags != 0) + with_payload + 2u * c->has_peer);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_CALL);
    put_uint(&w, FIDBUS_K_SEQ);
    put_uint(&w, c->call_id);
    put_uint(&w, FIDBUS_K_EVENT);
    put_tstr(&w, c->event, strlen(c->event));
    if (c->ntags) {
        put_uint(&w, FIDBUS_K_TAGS);
        put_map(&w, c->ntags);
        for (size_t i = 0; i < c->ntags; i++) {
            put_tstr(&w, c->tags[i].key, strlen(c->tags[i].key));
            put_tstr(&w, c->tags[i].value, strlen(c->tags[i].value));
        }
    }
    if (with_payload) {
        put_uint(&w, FIDBUS_K_PAYLOAD);
        put_bytes(&w, c->payload.ptr, c->payload.len);
    }
    put_uint(&w, FIDBUS_K_ID);
    put_uint(&w, c->funcid);
    put_uint(&w, FIDBUS_K_GENERATION);
    put_uint(&w, c->generation);
    put_uint(&w, FIDBUS_K_ATTEMPT);
    put_uint(&w, c->attempt);
    if (c->has_peer) {
        put_uint(&w, FIDBUS_K_UID);
        put_uint(&w, c->uid);
        put_uint(&w, FIDBUS_K_PID);
        put_uint(&w, c->pid);
    }
    return finish(&w, out);
}

/* Written by the control thread into a tap's output buffer (daemon/control/
 * tap.c): the payload copied once more, byte-exact. */
size_t fidbus_enc_event(uint8_t *out, size_t cap, const struct fidbus_event_out *e)
{
    if (cap < FIDBUS_FRAME_HEADER || !e->event || (e->ntags && !e->tags))
        return 0;
    bool with_payload = e->payload.ptr && e->payload.len;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 6u + (e->ntags != 0) + with_payload);
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_EVENT);
    put_uint(&w, FIDBUS_K_EVENT);
    put_tstr(&w, e->event, strlen(e->event));
    if (e->ntags) {
        put_uint(&w, FIDBUS_K_TAGS);
        put_map(&w, e->ntags);
        for (size_t i = 0; i < e->ntags; i++) {
            put_tstr(&w, e->tags[i].key, strlen(e->tags[i].key));
            put_tstr(&w, e->tags[i].value, strlen(e->tags[i].value));
        }
    }
    if (with_payload) {
        put_uint(&w, FIDBUS_K_PAYLOAD);
        put_bytes(&w, e->payload.ptr, e->payload.len);
    }
    put_uint(&w, FIDBUS_K_GENERATION);
    put_uint(&w, e->generation);
    put_uint(&w, FIDBUS_K_ROUTE);
    if (e->route)
        put_tstr(&w, e->route, strlen(e->route));
    else
        put_null(&w);
    put_uint(&w, FIDBUS_K_CONN);
    put_uint(&w, e->conn);
    put_uint(&w, FIDBUS_K_DROPPED);
    put_uint(&w, e->dropped);
    return finish(&w, out);
}

size_t fidbus_enc_result(uint8_t *out, size_t cap, bool upto, uint64_t id, uint64_t code,
                         const char *message)
{
    if (cap > FB_ERROR_FRAME_MAX && message)
        cap = FB_ERROR_FRAME_MAX;
    if (cap < FIDBUS_FRAME_HEADER)
        return 0;
    struct writer w = {out + FIDBUS_FRAME_HEADER, out + cap, false};
    put_map(&w, 3u + (message != NULL));
    put_uint(&w, FIDBUS_K_TYPE);
    put_uint(&w, FIDBUS_MSG_RESULT);
    if (!upto) {
        put_uint(&w, FIDBUS_K_SEQ);
        put_uint(&w, id);
    }
    put_uint(&w, FIDBUS_K_CODE);
    put_uint(&w, code);
    if (message) {
        put_uint(&w, FIDBUS_K_MESSAGE);
        if (w.overflow || room(&w) < 1 + (upto ? 2 + HEAD_MAX : 0))
            return 0;
        /* Room for the text: what is left after its head and the upto
         * entry that follows it in key order. */
        size_t left = room(&w) - (upto ? 1 + HEAD_MAX : 0);
        size_t mlen = strlen(message);
        size_t head = mlen < 24 ? 1 : mlen < 256 ? 2 : mlen < 65536 ? 3 : 5;
        size_t max = left > head ? left - head : 0;
        put_tstr(&w, message, utf8_cut(message, mlen, max));
    }
    if (upto) {
        put_uint(&w, FIDBUS_K_UPTO);
        put_uint(&w, id);
    }
    return finish(&w, out);
}
