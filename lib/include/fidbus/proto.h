/*
 * fidbus wire protocol v1: frames, messages, codes and limits.
 *
 * A connection carries frames: a 4-byte big-endian length, then one CBOR
 * data item of that length (see proto/README.md and proto/fidbus.cddl).
 * This header gives the pieces both ends need:
 *
 *   - struct fidbus_frame_reader turns a byte stream, split anywhere, into
 *     whole frames without copying them: bytes are read straight into the
 *     reader's buffer and frames are handed out as slices of it;
 *   - fidbus_msg_decode() decodes one message body with libcbor's streaming
 *     decoder (no item tree) into struct fidbus_msg, whose payload, result
 *     and args are slices of the body's exact original bytes;
 *   - fidbus_msg_encode() and the fidbus_enc_* helpers write messages.
 *
 * Error convention: functions return 0 on success, a positive FIDBUS_*
 * protocol code for an expected protocol outcome (MALFORMED, TOO_LARGE,
 * INVALID...), or a negative errno for a resource failure.
 */
#ifndef FIDBUS_PROTO_H
#define FIDBUS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/export.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FIDBUS_PROTO_VERSION 1

/* Limits fixed by the design (section 2). */
#define FIDBUS_MAX_FRAME_DEFAULT 1048576u
#define FIDBUS_MAX_DEPTH_DEFAULT 64u
#define FIDBUS_MAX_ID_LEN 255u
#define FIDBUS_MAX_TAGS 32u
#define FIDBUS_MAX_TAG_KEY_LEN 64u
#define FIDBUS_MAX_TAG_VALUE_LEN 255u
#define FIDBUS_FRAME_HEADER 4u
/* The largest control REPLY frame (body bytes) a control client must be
 * able to read, and the most fidbusd's [control] max_reply allows. A
 * REPLY is not bound by max_frame, which limits what a peer may send in:
 * a route.list of 15,000 routes is about 2 MB. proto/control.md. */
#define FIDBUS_CONTROL_REPLY_MAX 67108864u

/* Message types (key 0). */
enum fidbus_msg_type {
    FIDBUS_MSG_HELLO = 1,
    FIDBUS_MSG_AUTH = 2,
    FIDBUS_MSG_PUBLISH = 3,
    FIDBUS_MSG_ACK = 4,
    FIDBUS_MSG_ERROR = 5,
    FIDBUS_MSG_REQUEST = 6,
    FIDBUS_MSG_REPLY = 7,
    FIDBUS_MSG_PING = 8,
    /* Remote functions (proto/README.md "Remote functions"): a client
     * serves functions over its bus connection. */
    FIDBUS_MSG_REGISTER = 16,   /* client -> daemon */
    FIDBUS_MSG_UNREGISTER = 17, /* client -> daemon */
    FIDBUS_MSG_CALL = 18,       /* daemon -> client (a member) */
    FIDBUS_MSG_RESULT = 19,     /* client (a member) -> daemon */
    /* A tap's copy of an event (proto/control.md `tap.open`): control
     * socket -> client, after the tap.open REPLY. */
    FIDBUS_MSG_EVENT = 20,
};

/* Map keys. */
enum fidbus_key {
    FIDBUS_K_TYPE = 0,
    FIDBUS_K_SEQ = 1,
    FIDBUS_K_EVENT = 2,
    FIDBUS_K_TAGS = 3,
    FIDBUS_K_PAYLOAD = 4,
    FIDBUS_K_FLAGS = 5,
    FIDBUS_K_CODE = 6,
    FIDBUS_K_MESSAGE = 7,
    FIDBUS_K_RESULT = 8,
    FIDBUS_K_COMMAND = 9,
    FIDBUS_K_ARGS = 10,
    FIDBUS_K_VERSION = 11,
    FIDBUS_K_NAME = 12,
    FIDBUS_K_NONCE = 13,
    FIDBUS_K_MAC = 14,
    FIDBUS_K_FUNCTION = 15,   /* tstr, canonical "ns.name@MAJOR.MINOR.PATCH" */
    FIDBUS_K_ID = 16,         /* uint, a funcID */
    FIDBUS_K_SIGNATURE = 17,  /* tstr, a function's signature text */
    FIDBUS_K_CREDIT = 18,     /* uint, unanswered calls a member may hold */
    FIDBUS_K_TIMEOUT_MS = 19, /* uint, a call's deadline */
    FIDBUS_K_GENERATION = 20, /* uint, of the route table that routed an event */
    FIDBUS_K_ATTEMPT = 21,    /* uint, 1 for a call's first delivery */
    FIDBUS_K_UPTO = 22,       /* uint, answers every held call id <= it */
    FIDBUS_K_ROUTE = 23,      /* tstr or null: EVENT's route (null: unrouted) */
    FIDBUS_K_CONN = 24,       /* uint: EVENT's publisher connection (conn.list id) */
    FIDBUS_K_DROPPED = 25,    /* uint: EVENT, copies lost since the last EVENT */
    FIDBUS_K_UID = 26,        /* uint: CALL, the publisher's uid (Unix peers) */
    FIDBUS_K_PID = 27,        /* uint: CALL, the publisher's pid (Unix peers) */
    FIDBUS_K__COUNT = 28,     /* `present` is 32 bits: keys stay below 32 */
};

/* flags (key 5). Bit 0 is PUBLISH's; bit 1 is REGISTER's, so one flags
 * word never means two things in the same message. */
#define FIDBUS_FLAG_ACK 0x1u
#define FIDBUS_FLAG_IDEMPOTENT 0x2u /* REGISTER: a call may run again */

/* Status / error codes (key 6). */
enum fidbus_code {
    FIDBUS_OK = 0,
    FIDBUS_MALFORMED = 1,
    FIDBUS_UNSUPPORTED = 2,
    FIDBUS_TOO_LARGE = 3,
    FIDBUS_UNAUTHORIZED = 4,
    FIDBUS_NO_ROUTE = 5,
    FIDBUS_HANDLER_FAILED = 6,
    FIDBUS_BUSY = 7,
    FIDBUS_NOT_FOUND = 8,
    FIDBUS_CONFLICT = 9,
    FIDBUS_INVALID = 10,
    FIDBUS_SIGNATURE_MISMATCH = 11,
    FIDBUS_INTERNAL = 12,
    /* A remote function had no member to run a call, or lost it in flight
     * (member gone, deadline passed): whether it ran is then unknown. */
    FIDBUS_UNAVAILABLE = 13,
    /* In a RESULT only: this member could not run the call now; the daemon
     * gives it to another member while attempts remain. */
    FIDBUS_RETRY = 14,
};

/*
 * Limits of the remote-function keys on the wire. A REGISTER's credit and
 * timeout_ms above the config's [remote] values are cut to them by the
 * daemon; these are only what the codec accepts at all (0 is INVALID).
 */
#define FIDBUS_CREDIT_MAX 1024u        /* [remote] credit's upper bound */
#define FIDBUS_TIMEOUT_MS_MAX 3600000u /* [remote] timeout_ms's upper bound */
#define FIDBUS_ATTEMPTS_MAX 10u        /* [remote] attempts' upper bound */
#define FIDBUS_SIGNATURE_MAX 4096u     /* bytes of a REGISTER's signature */

/*
 * What a RESULT's code means to the daemon: 0 ok, FIDBUS_RETRY, and every
 * other code counts as FIDBUS_HANDLER_FAILED (proto/README.md), so a member
 * that sends a code of its own still fails the call rather than the frame.
 */
static inline uint64_t fidbus_result_outcome(uint64_t code)
{
    return code == FIDBUS_OK || code == FIDBUS_RETRY ? code : FIDBUS_HANDLER_FAILED;
}

/* Upper-case name of a protocol code ("NO_ROUTE"), "UNKNOWN" otherwise. */
FIDBUS_API const char *fidbus_code_name(int code);

/* ---------------------------------------------------------------- frames */

/*
 * Reassembles frames from a byte stream. The reader owns one buffer; the
 * caller asks for free space (fidbus_frame_reader_space), reads into it,
 * and reports how much arrived (fidbus_frame_reader_commit). Then
 * fidbus_frame_next hands out whole frame bodies as slices of the buffer.
 * Those slices stay valid until the next call to
 * fidbus_frame_reader_space, which may move the unconsumed tail to the
 * front of the buffer or grow it (never beyond max_frame + 4 bytes).
 */
struct fidbus_frame_reader {
    uint8_t *buf;
    size_t cap;   /* allocated bytes */
    size_t start; /* first unconsumed byte */
    size_t end;   /* one past the last received byte */
    uint32_t max_frame;
};

/* initial_cap 0 picks a default (64 KiB). Returns 0 or -ENOMEM. */
FIDBUS_API int fidbus_frame_reader_init(struct fidbus_frame_reader *r, uint32_t max_frame,
                                        size_t initial_cap);
FIDBUS_API void fidbus_frame_reader_destroy(struct fidbus_frame_reader *r);

/*
 * Free space to read into: at least enough for the frame being assembled
 * when its header is known, otherwise whatever is free (compacting first if
 * little is left). Returns 0 or -ENOMEM.
 */
FIDBUS_API int fidbus_frame_reader_space(struct fidbus_frame_reader *r, uint8_t **ptr,
                                         size_t *len);
/* n bytes were written at the pointer the last _space call returned. */
FIDBUS_API void fidbus_frame_reader_commit(struct fidbus_frame_reader *r, size_t n);

/*
 * Next whole frame. Returns 1 and sets *body and *len (a slice of the buffer)
 * when one is complete, 0 when more bytes are needed, FIDBUS_TOO_LARGE for a
 * length above max_frame, -EBADMSG for a zero length (answer it with
 * FIDBUS_MALFORMED; that code cannot be returned here since it equals 1).
 * After an error the stream cannot be resynchronised: close the connection.
 */
FIDBUS_API int fidbus_frame_next(struct fidbus_frame_reader *r, const uint8_t **body,
                                 size_t *len);

/* Bytes received but not yet handed out as frames. */
static inline size_t fidbus_frame_reader_pending(const struct fidbus_frame_reader *r)
{
    return r->end - r->start;
}

/* -------------------------------------------------------------- messages */

/* A byte range. For text the bytes are valid UTF-8 and not NUL-terminated. */
struct fidbus_slice {
    const uint8_t *ptr;
    size_t len;
};

#ifndef FIDBUS_TAG_DEFINED
#define FIDBUS_TAG_DEFINED
/* One tag; both strings NUL-terminated. Shared with <fidbus/plugin.h>. */
struct fidbus_tag {
    const char *key;
    const char *value;
};
#endif

/*
 * Arena for decoded text: event id and tags are always copied here so they
 * can be NUL-terminated (the plugin API wants C strings); other strings are
 * copied only when they arrive as indefinite-length chunks.
 */
#define FIDBUS_MSG_ARENA                                                                 \
    (FIDBUS_MAX_ID_LEN + 1 +                                                             \
     FIDBUS_MAX_TAGS * (FIDBUS_MAX_TAG_KEY_LEN + FIDBUS_MAX_TAG_VALUE_LEN + 2) + 4096)

/*
 * A decoded message. Everything points either into the body given to
 * fidbus_msg_decode (payload, result, args, and definite-length strings) or
 * into this struct's arena: it is valid while both live and until the next
 * decode into the same struct. `present` has bit (1u << key) set for each
 * known key found.
 *
 * The struct is large (about 15 KiB): keep one per connection or thread
 * and reuse it; decoding allocates nothing.
 */
struct fidbus_msg {
    uint32_t present;
    uint64_t type;
    uint64_t seq;
    uint64_t flags;
    uint64_t code;
    uint64_t version;
    const char *event; /* NUL-terminated, in the arena */
    size_t event_len;
    struct fidbus_tag tags[FIDBUS_MAX_TAGS];
    size_t ntags;
    struct fidbus_slice payload; /* raw CBOR of the item, byte-exact */
    struct fidbus_slice result;  /* raw CBOR */
    struct fidbus_slice args;    /* raw CBOR (a map) */
    struct fidbus_slice message; /* text */
    struct fidbus_slice command; /* text */
    struct fidbus_slice name;    /* text */
    struct fidbus_slice nonce;   /* bytes */
    struct fidbus_slice mac;     /* bytes */
    /* Remote-function keys (15-22). Unlike the fields above, these are not
     * cleared by each decode, so a PUBLISH pays nothing for them: read one
     * only when fidbus_msg_has() says its key was present. */
    struct fidbus_slice function;  /* text */
    struct fidbus_slice signature; /* text */
    uint64_t id, credit, timeout_ms, generation, attempt, upto;
    /* Tap and identity keys (23-27), likewise not cleared by a decode. A
     * null route (unrouted) is present with route.ptr NULL. */
    struct fidbus_slice route; /* text */
    uint64_t conn, dropped, uid, pid;
    const char *why; /* static reason text after a failed decode */
    size_t arena_used;
    char arena[FIDBUS_MSG_ARENA];
};

static inline bool fidbus_msg_has(const struct fidbus_msg *m, enum fidbus_key k)
{
    return (m->present >> k) & 1u;
}

/*
 * Decodes one frame body. Returns 0, or a protocol code with m->why set:
 *   FIDBUS_MALFORMED  not well-formed CBOR, trailing bytes, not a map, a key
 *                     that is not an unsigned int, a duplicate key, a known
 *                     key with the wrong type, invalid UTF-8, missing type;
 *   FIDBUS_TOO_LARGE  an item nested deeper than max_depth;
 *   FIDBUS_INVALID    event id or tags outside the limits of section 2
 *                     (length, characters, more than 32 tags).
 * Even on failure m->seq is valid when fidbus_msg_has(m, FIDBUS_K_SEQ).
 * Unknown unsigned keys are skipped. Which keys a given type requires is
 * the caller's business (fidbus_msg_check).
 */
FIDBUS_API int fidbus_msg_decode(const uint8_t *body, size_t len, unsigned max_depth,
                                 struct fidbus_msg *m);

/*
 * Type-specific checks after a successful decode: PUBLISH needs `event`,
 * REQUEST needs `command`, and so on. Returns 0, FIDBUS_MALFORMED (a
 * required key is missing; a RESULT with both or neither of seq and upto),
 * FIDBUS_INVALID (a value out of range: REGISTER's function not canonical
 * with a version, a signature longer than FIDBUS_SIGNATURE_MAX or holding
 * a NUL, credit or timeout_ms 0; CALL's attempt 0) or FIDBUS_UNSUPPORTED
 * (unknown type), with m->why set. A RESULT's code is not checked here:
 * see fidbus_result_outcome().
 */
FIDBUS_API int fidbus_msg_check(struct fidbus_msg *m);

/* Is this a valid event id / tag key / tag value (section 2)? */
FIDBUS_API bool fidbus_event_id_valid(const char *id, size_t len);
FIDBUS_API bool fidbus_tag_key_valid(const char *key, size_t len);
FIDBUS_API bool fidbus_tag_value_valid(const char *value, size_t len);
FIDBUS_API bool fidbus_utf8_valid(const uint8_t *s, size_t len);
/*
 * An event a client or plugin is about to publish, as C strings: the id,
 * at most FIDBUS_MAX_TAGS tags each with a valid key and value, and no key
 * twice (the decoder refuses duplicate tag keys as INVALID too).
 */
FIDBUS_API bool fidbus_event_valid(const char *id, const struct fidbus_tag *tags,
                                   size_t ntags);

/* ------------------------------------------------------------- encoding */

/* A growable output buffer. Zero-initialise, then append. */
struct fidbus_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

FIDBUS_API int fidbus_buf_reserve(struct fidbus_buf *b, size_t extra); /* 0 / -ENOMEM */
FIDBUS_API int fidbus_buf_append(struct fidbus_buf *b, const void *p, size_t n);
FIDBUS_API void fidbus_buf_free(struct fidbus_buf *b);

/*
 * A message to encode. Set the keys you want in `present` (bit per key);
 * the encoder writes them in key order. payload, result and args are raw,
 * already-encoded CBOR items copied verbatim.
 */
struct fidbus_msg_out {
    uint32_t present;
    uint64_t type, seq, flags, code, version;
    const char *event; /* NUL-terminated */
    const struct fidbus_tag *tags;
    size_t ntags;
    struct fidbus_slice payload, result, args;
    const char *message, *command, *name; /* NUL-terminated */
    struct fidbus_slice nonce, mac;
    const char *function, *signature; /* NUL-terminated */
    uint64_t id, credit, timeout_ms, generation, attempt, upto;
};

#define FIDBUS_BIT(k) (1u << (k))

/* Appends one whole frame (header + body) to b. 0 / -ENOMEM / -EMSGSIZE. */
FIDBUS_API int fidbus_msg_encode(struct fidbus_buf *b, const struct fidbus_msg_out *m);

/*
 * Fixed-buffer encoders for the daemon's hot path: each writes one whole
 * frame into out[0..cap) and returns its length, or 0 if it does not fit.
 * fidbus_enc_error truncates `message` to fit a 4 KiB frame. A result is
 * included in ERROR when with_result is true (HANDLER_FAILED carries one).
 */
FIDBUS_API size_t fidbus_enc_ack(uint8_t *out, size_t cap, uint64_t seq, uint64_t result);
FIDBUS_API size_t fidbus_enc_error(uint8_t *out, size_t cap, bool has_seq, uint64_t seq,
                                   uint64_t code, const char *message, bool with_result,
                                   uint64_t result);
FIDBUS_API size_t fidbus_enc_hello(uint8_t *out, size_t cap, const char *server_name,
                                   const uint8_t *nonce, size_t nonce_len);

/*
 * Remote functions (proto/README.md "Remote functions"), same convention:
 * one whole frame into out[0..cap), its length, or 0 if it does not fit
 * (or a required string is NULL). Strings are NUL-terminated; payload is
 * raw CBOR copied verbatim (ptr NULL: no payload key).
 *
 * REGISTER: credit and timeout_ms 0 leave the key out (the daemon then
 * uses the [remote] section's value); flags takes FIDBUS_FLAG_IDEMPOTENT.
 */
FIDBUS_API size_t fidbus_enc_register(uint8_t *out, size_t cap, uint64_t seq,
                                      const char *function, const char *signature,
                                      uint64_t credit, uint64_t timeout_ms,
                                      uint64_t flags);
FIDBUS_API size_t fidbus_enc_unregister(uint8_t *out, size_t cap, uint64_t seq,
                                        const char *function);

/* A CALL as the daemon writes it to a member: one delivery of one event. */
struct fidbus_call_out {
    uint64_t call_id; /* seq: unique among the calls of one connection */
    uint64_t funcid;
    const char *event;
    const struct fidbus_tag *tags;
    size_t ntags;
    struct fidbus_slice payload; /* ptr NULL: the event has no payload */
    uint64_t generation;
    uint64_t attempt; /* 1 for the first delivery */
    /* The publisher's identity (keys 26, 27): sent only when has_peer (a
     * Unix peer), so a zeroed struct never claims uid 0. */
    bool has_peer;
    uint32_t uid, pid;
};
FIDBUS_API size_t fidbus_enc_call(uint8_t *out, size_t cap,
                                  const struct fidbus_call_out *c);

/*
 * EVENT: a tap's copy of one event (proto/control.md `tap.open`). route
 * NULL writes null (unrouted); payload ptr NULL: no payload key.
 */
struct fidbus_event_out {
    const char *event;
    const struct fidbus_tag *tags;
    size_t ntags;
    struct fidbus_slice payload;
    uint64_t generation;
    const char *route;
    uint64_t conn;
    uint64_t dropped;
};
FIDBUS_API size_t fidbus_enc_event(uint8_t *out, size_t cap,
                                   const struct fidbus_event_out *e);

/*
 * RESULT for one call (upto false: seq = id) or for every call held with an
 * id <= id (upto true). message may be NULL (no key); it is cut, at a
 * character boundary, to fit a 4 KiB frame like fidbus_enc_error's.
 */
FIDBUS_API size_t fidbus_enc_result(uint8_t *out, size_t cap, bool upto, uint64_t id,
                                    uint64_t code, const char *message);

#ifdef __cplusplus
}
#endif
#endif
