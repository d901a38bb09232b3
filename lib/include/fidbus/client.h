/*
 * <fidbus/client.h> -- a small blocking client for fidbusd.
 *
 *     struct fidbus_client *c;
 *     int rc = fidbus_client_connect(&c, "unix:/run/fidbus/bus.sock", NULL);
 *     if (rc < 0) { fprintf(stderr, "%s\n", fidbus_strerror(rc)); ... }
 *     fidbus_publish(c, "order.created", tags, 2, payload, len);   // buffered
 *     fidbus_flush(c);
 *     rc = fidbus_publish_ack(c, "order.created", NULL, 0, NULL, 0, &n);
 *     fidbus_client_close(c);
 *
 * A client is not thread-safe: use one per thread. Publishes are buffered
 * and sent when the buffer fills (64 KiB), on fidbus_flush, or by any call
 * that waits for an answer. Calls that wait read the connection until
 * their answer arrives; an ERROR for an earlier un-acked publish seen on
 * the way is recorded (fidbus_client_last_error) and counted
 * (fidbus_client_async_errors), not returned. Any ACK or ERROR carrying a
 * seq that such a call reads but does not wait for is also kept for
 * fidbus_client_recv (see there).
 *
 * Return values: 0 (or a count) on success; a negative value on failure:
 * either a negative errno (-ECONNREFUSED, -ETIMEDOUT, ...) or
 * -(FIDBUS_ERR_BASE + code) when the server answered with a protocol ERROR
 * carrying `code` (see fidbus_error_code). fidbus_strerror names both.
 * fidbus_client_last_error gives the server's message for the last
 * protocol error.
 */
#ifndef FIDBUS_CLIENT_H
#define FIDBUS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <fidbus/export.h>

#include <fidbus/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol error codes are returned as -(FIDBUS_ERR_BASE + code). */
#define FIDBUS_ERR_BASE 10000
#define FIDBUS_EPROTO_CODE(code) (-(FIDBUS_ERR_BASE + (int)(code)))

/* The protocol code inside a return value, or 0 if it is not one. */
static inline int fidbus_error_code(int rc)
{
    return rc <= -FIDBUS_ERR_BASE && rc > -FIDBUS_ERR_BASE - 256 ? -rc - FIDBUS_ERR_BASE
                                                                 : 0;
}

/* A static description of any return value ("NO_ROUTE: ...", strerror). */
FIDBUS_API const char *fidbus_strerror(int rc);

struct fidbus_client;

struct fidbus_client_opts {
    const char *name;   /* sent in AUTH; may be NULL */
    const uint8_t *key; /* shared key for TCP auth; NULL = none */
    size_t key_len;
    int timeout_ms;     /* for connect and each wait; 0 = 10000 */
    uint32_t max_frame; /* 0 = FIDBUS_MAX_FRAME_DEFAULT */
    /* Reconnection (see "Reconnecting" below); 0 = off, as before. */
    unsigned reconnect_max_ms; /* > 0: reconnect, backoff capped at this */
    size_t reconnect_buffer;   /* bytes kept for re-sending; 0 = 1 MiB */
};

/*
 * Connects to "unix:/path", a plain path, or "tcp:host:port". With opts
 * NULL, defaults apply. On success *out is the caller's until
 * fidbus_client_close. Waits for the server's HELLO (and authenticates
 * when it asks for it).
 */
FIDBUS_API int fidbus_client_connect(struct fidbus_client **out, const char *addr,
                                     const struct fidbus_client_opts *opts);

/* Flushes what is buffered (best effort), closes and frees. NULL-safe. */
FIDBUS_API void fidbus_client_close(struct fidbus_client *c);

/*
 * Buffers one PUBLISH without the ACK flag. payload is one encoded CBOR
 * item (or NULL/0 for none); it is copied. tags/ntags may be NULL/0.
 * Returns 0, -EINVAL for an invalid id or tags (checked here, before
 * anything is sent), or a send error.
 */
FIDBUS_API int fidbus_publish(struct fidbus_client *c, const char *event,
                              const struct fidbus_tag *tags, size_t ntags,
                              const uint8_t *payload, size_t payload_len);

/* Sends everything buffered. 0 or a negative errno. */
FIDBUS_API int fidbus_flush(struct fidbus_client *c);

/*
 * Publishes with the ACK flag and waits for its answer. On ACK returns 0
 * and stores the number of handler invocations that succeeded in *result
 * (may be NULL). On ERROR returns FIDBUS_EPROTO_CODE(code) (for
 * HANDLER_FAILED *result still gets the success count).
 */
FIDBUS_API int fidbus_publish_ack(struct fidbus_client *c, const char *event,
                                  const struct fidbus_tag *tags, size_t ntags,
                                  const uint8_t *payload, size_t payload_len,
                                  uint64_t *result);

/*
 * Sends PING and waits for its ACK: when it returns 0, every message sent
 * before it has been fully handled by the daemon.
 */
FIDBUS_API int fidbus_ping(struct fidbus_client *c);

/*
 * Pipelining helpers for load generators: fidbus_publish_seq buffers a
 * PUBLISH with the given seq and flags (FIDBUS_FLAG_ACK to ask for an
 * answer); fidbus_client_recv waits up to timeout_ms (-1 = the client's
 * timeout) for the next ACK or ERROR and reports its type, seq and code.
 * The library's own requests use seqs 1, 2, 3, ... (never the top bit):
 * on a client that mixes both, pick yours with the top bit set.
 *
 * Nothing is lost to other calls: an ACK or ERROR carrying a seq that
 * fidbus_flush, fidbus_ping, fidbus_publish_ack or the automatic flush of
 * fidbus_publish_seq (64 KiB buffered) reads but does not wait for is
 * kept, in arrival order, with its seq, code and result; an ERROR's
 * message is kept too and becomes fidbus_client_last_error when
 * fidbus_client_recv returns it. fidbus_client_recv returns kept answers
 * first, without waiting, then reads the connection (writing what is
 * buffered). Bound: the daemon answers a frame at most once, so at most
 * one answer is kept per seq-carrying frame sent and not yet received --
 * what the caller has in flight (plus late answers to library calls that
 * timed out); each takes about 40 bytes, plus an ERROR's message. A
 * caller that never calls fidbus_client_recv should publish without a
 * seq (fidbus_publish), or what is kept grows with every answer.
 * A seq-less ERROR (to fidbus_publish) is not kept, only counted and
 * recorded; it is returned by fidbus_client_recv only when that call
 * reads it itself. Kept answers survive a reconnection and are freed by
 * fidbus_client_close.
 */
FIDBUS_API int fidbus_publish_seq(struct fidbus_client *c, uint64_t seq, uint32_t flags,
                                  const char *event, const struct fidbus_tag *tags,
                                  size_t ntags, const uint8_t *payload,
                                  size_t payload_len);
struct fidbus_answer {
    uint64_t type; /* FIDBUS_MSG_ACK or FIDBUS_MSG_ERROR */
    uint64_t seq;
    uint64_t code;   /* 0 for ACK */
    uint64_t result; /* ACK result, or the ERROR's result if any */
};
FIDBUS_API int fidbus_client_recv(struct fidbus_client *c, struct fidbus_answer *ans,
                                  int timeout_ms);

/*
 * Control socket request: sends REQUEST {command, args} (args: one encoded
 * CBOR map, or NULL) and waits for the REPLY. Returns 0 and, when
 * reply_result is non-NULL, a malloc'd copy of the raw CBOR result (the
 * caller frees it) -- or FIDBUS_EPROTO_CODE(code) with the message
 * available from fidbus_client_last_error. The REPLY may be longer than
 * opts->max_frame: it is read up to FIDBUS_CONTROL_REPLY_MAX (64 MiB),
 * the most fidbusd sends (a bigger result is REPLY INTERNAL).
 */
FIDBUS_API int fidbus_request(struct fidbus_client *c, const char *command,
                              const uint8_t *args, size_t args_len,
                              uint8_t **reply_result, size_t *reply_result_len);

/* After fidbus_client_connect failed because the server refused the
 * connection with a protocol ERROR (BUSY, UNAUTHORIZED, ...), the server's
 * message, e.g. "too many connections (max_connections = 1024); closing";
 * "" otherwise. Per thread; valid until this thread's next connect. */
FIDBUS_API const char *fidbus_connect_error(void);

/* The server's message for the last protocol error ("" if none). Valid
 * until the next call on c. */
FIDBUS_API const char *fidbus_client_last_error(const struct fidbus_client *c);
/* The code (FIDBUS_NO_ROUTE, ...) of that error, 0 if none: lets a caller
 * that only pings name the code of an ERROR counted as asynchronous. */
FIDBUS_API int fidbus_client_last_error_code(const struct fidbus_client *c);
/* ERRORs received for un-acked publishes so far. */
FIDBUS_API uint64_t fidbus_client_async_errors(const struct fidbus_client *c);
/* The server name from HELLO ("" before it arrives). */
FIDBUS_API const char *fidbus_client_server_name(const struct fidbus_client *c);
/* The socket, for poll(); -1 while a reconnecting client is disconnected. */
FIDBUS_API int fidbus_client_fd(const struct fidbus_client *c);

/*
 * Reconnecting. With opts->reconnect_max_ms > 0 a client that loses its
 * connection (a write error, end of stream, a reset, a stream it cannot
 * parse; a timeout is not a loss) connects again by itself, with the
 * HELLO/AUTH handshake of fidbus_client_connect. Attempts back off: the
 * first right away, then after 50 ms, doubling up to reconnect_max_ms,
 * each delay drawn from the upper half of its step (jitter). One attempt
 * may take up to the client's timeout. fidbus_client_connect itself does
 * not retry: a client starts connected or not at all. The key and name
 * in opts are copied for later handshakes.
 *
 * What is re-sent: every acked-mode PUBLISH (fidbus_publish_ack, or
 * fidbus_publish_seq with FIDBUS_FLAG_ACK) is kept, byte for byte and
 * with its seq, until its ACK or ERROR arrives, and is sent again on each
 * new connection until then. Acked events are so delivered AT LEAST
 * ONCE: a handler may see one twice when the daemon handled it but went
 * away before its ACK reached the client. Un-acked publishes that were
 * still wholly in the client's write buffer are sent on the new
 * connection; those already written to the old socket may be lost (the
 * kernel accepted them; the daemon may not have read them).
 *
 * While disconnected: fidbus_publish and fidbus_publish_seq buffer (and
 * try one reconnection when the backoff allows) and return 0; a publish
 * that would make the kept bytes -- acked frames without an answer, plus
 * everything buffered while disconnected -- exceed reconnect_buffer
 * (default 1 MiB, never less than one max_frame) fails with -ENOBUFS and
 * is not queued. That bound also holds while connected, for a pipelining
 * caller with many acked publishes in flight: fidbus_client_recv frees
 * room. Calls that wait (fidbus_flush, fidbus_publish_ack, fidbus_ping,
 * fidbus_client_recv, fidbus_request) keep reconnecting within their own
 * timeout and return -ETIMEDOUT if it runs out first; the acked publish
 * stays queued and is still sent when the connection is back (its later
 * answer is dropped, as after any timeout). fidbus_request is never
 * re-sent: a REQUEST written before the connection was lost returns
 * -ECONNRESET, since the daemon may or may not have applied it.
 * fidbus_client_close does not wait for a reconnection: what is still
 * queued then is dropped.
 */
/* Successful reconnections so far (0 without reconnect_max_ms). */
FIDBUS_API uint64_t fidbus_client_reconnects(const struct fidbus_client *c);
/* Acked-mode publishes sent or queued and not yet answered (0 without
 * reconnect_max_ms): what a reconnection would re-send. */
FIDBUS_API size_t fidbus_client_unanswered(const struct fidbus_client *c);

/*
 * The shared key for TCP authentication (fidbus_client_opts.key), read
 * from a file with the rules fidbusd applies to its own tcp_key_file:
 * the file must be a regular file that neither group nor others may
 * access (mode 0600 or 0400) and that is owned by the calling user or
 * root (a root caller accepts any owner); the key is its bytes with one
 * trailing "\n" removed, FIDBUS_KEY_MIN to FIDBUS_KEY_MAX bytes of them.
 * A key is generated with, for instance:
 *
 *     (umask 077; head -c 32 /dev/urandom | base64 > tcp.key)
 *
 * Returns 0 with a malloc'd *key of *len bytes, which the caller releases
 * with fidbus_key_free; or a negative errno: what open(2) fails with
 * (-ENOENT, -EACCES, ...), -EINVAL (not a regular file), -EPERM (mode or
 * owner), -EFBIG (too long), -ENODATA (empty or too short), -ENOMEM.
 * fidbus_key_strerror words these in the rules' terms.
 */
#define FIDBUS_KEY_MIN 16
#define FIDBUS_KEY_MAX 4096
FIDBUS_API int fidbus_key_load(const char *path, uint8_t **key, size_t *len);
/* Wipes and frees a key from fidbus_key_load. NULL-safe. */
FIDBUS_API void fidbus_key_free(uint8_t *key, size_t len);
/* A static description of fidbus_key_load's return value. */
FIDBUS_API const char *fidbus_key_strerror(int rc);

/*
 * Serving functions (proto/README.md "Remote functions"). A client may
 * serve functions over its bus connection: fidbus_register names a
 * function ("ns.name@1.0.0", the namespace allowed by a [remote NS]
 * section of the daemon's config) and a callback; fidbus_serve then reads
 * the CALLs the daemon writes for it, runs the callback for each, and
 * writes the RESULTs back. Everything runs on the thread that calls
 * fidbus_serve, except fidbus_call_done and fidbus_serve_stop, which may
 * be called from any thread (fidbus_serve_stop from a signal handler too).
 *
 *     static int audit(struct fidbus_client *c, const struct fidbus_call *call,
 *                      void *arg)
 *     {
 *         fwrite(call->payload, 1, call->payload_len, arg);
 *         return 0;                                 // or FIDBUS_HANDLER_FAILED
 *     }
 *     ...
 *     rc = fidbus_register(c, "acme.audit@1.0.0", "event:any", NULL, audit, f, NULL);
 *     while ((rc = fidbus_serve(c, -1)) == 0)
 *         ;                                         // until fidbus_serve_stop
 *     fidbus_unregister(c, NULL);                   // drain, then leave
 *
 * The callback's return value is the call's outcome: 0 ok,
 * FIDBUS_HANDLER_FAILED (failed; not run again), FIDBUS_RETRY (not run:
 * the daemon gives it to another member while attempts remain), or
 * FIDBUS_CALL_PENDING: the call stays open and is answered later with
 * fidbus_call_done(c, call->token, code), from the callback's thread or
 * any other. A member holds at most `credit` open calls of a function at
 * once (the daemon sends no more); a pending call past its timeout_ms is
 * given up by the daemon (UNAVAILABLE, or redelivered when idempotent),
 * and a late answer is ignored. Any other return value counts as
 * FIDBUS_HANDLER_FAILED.
 *
 * Everything in *call (event, tags, payload: zero copy, straight from the
 * read buffer) is valid only until the callback returns; copy what a
 * pending call still needs. A callback may publish on c (fidbus_publish,
 * fidbus_publish_ack, fidbus_ping): CALLs read meanwhile are kept and run
 * after it returns, in order. fidbus_serve, fidbus_register and
 * fidbus_unregister return -EDEADLK there; it must not close c either,
 * and an acked publish that needs a call of this very member to finish
 * waits for its own timeout when the member has no credit left.
 *
 * RESULTs are written once per batch of CALLs read (and after completions
 * from other threads): answered calls at the front, in call-id order and
 * with one code, go as a single RESULT with `upto`; others one by one.
 * Steady serving allocates nothing per call.
 *
 * With reconnection (fidbus_client_opts.reconnect_max_ms), a lost
 * connection loses the calls it held (the daemon redelivers the
 * idempotent ones or fails them UNAVAILABLE; a later fidbus_call_done for
 * one is ignored), and every registered function is registered again on
 * the new connection. A re-registration the daemon refuses ends
 * fidbus_serve with its error (fidbus_client_last_error names it).
 */
#define FIDBUS_CALL_PENDING 0x10000 /* callback: answered by fidbus_call_done */
#define FIDBUS_SERVE_STOPPED 1      /* fidbus_serve: fidbus_serve_stop was called */

/* One call, as the callback sees it (valid until it returns). */
struct fidbus_call {
    uint64_t call_id; /* the CALL's seq: unique among the connection's calls */
    uint64_t token;   /* for fidbus_call_done: this delivery and no other */
    uint64_t funcid;
    const char *function; /* the canonical name given to fidbus_register */
    const char *event;    /* NUL-terminated */
    const struct fidbus_tag *tags;
    size_t ntags;
    const uint8_t *payload; /* the payload's raw CBOR bytes; NULL, 0: none */
    size_t payload_len;
    uint64_t generation; /* of the route table that routed the event */
    uint64_t attempt;    /* 1 for the first delivery, 2... when redelivered */
    /* The publisher's uid and pid (CALL keys 26, 27) when it is a Unix
     * peer of the daemon; -1 otherwise (TCP, or an event a plugin
     * published). Appended: the library fills this struct. */
    int64_t uid, pid;
};

typedef int (*fidbus_call_fn)(struct fidbus_client *c, const struct fidbus_call *call,
                              void *arg);

/* Options of one registration; NULL = all defaults. `size` must be
 * sizeof(struct fidbus_serve_opts): later versions append fields. */
struct fidbus_serve_opts {
    size_t size;
    uint32_t credit;     /* open calls at once; 0 = the daemon's [remote] credit */
    uint32_t timeout_ms; /* a call's deadline; 0 = the section's timeout_ms */
    uint32_t flags;      /* FIDBUS_FLAG_IDEMPOTENT: a call may run again */
};

/*
 * Registers `function` with its signature text (may be "") and waits for
 * the daemon's answer, serving already registered functions meanwhile.
 * Returns 0 and the funcID in *funcid (may be NULL), or
 * FIDBUS_EPROTO_CODE(code): UNAUTHORIZED, CONFLICT, SIGNATURE_MISMATCH,
 * INVALID, UNSUPPORTED (a daemon without remote functions); -EINVAL for a
 * name that is not canonical, -EEXIST when c already serves it.
 */
FIDBUS_API int fidbus_register(struct fidbus_client *c, const char *function,
                               const char *signature,
                               const struct fidbus_serve_opts *opts, fidbus_call_fn cb,
                               void *arg, uint64_t *funcid);

/*
 * Stops serving `function` (NULL: every function c serves): the daemon
 * sends no new calls at once, and answers once every call c still holds
 * for it was answered -- so this call goes on serving (running callbacks
 * for calls already on their way, taking fidbus_call_done completions)
 * until then: the drain. Waits up to the function's timeout_ms (30 s when
 * it was left to the daemon) plus the client's timeout. 0, -ENOENT (not
 * served), -ETIMEDOUT, or an error.
 */
FIDBUS_API int fidbus_unregister(struct fidbus_client *c, const char *function);

/*
 * Serves until timeout_ms passes (-1: no limit) -> 0, fidbus_serve_stop
 * -> FIDBUS_SERVE_STOPPED, or an error (a lost connection without
 * reconnection, a refused re-registration) -> negative.
 */
FIDBUS_API int fidbus_serve(struct fidbus_client *c, int timeout_ms);

/*
 * Makes the running (or next) fidbus_serve return FIDBUS_SERVE_STOPPED.
 * Async-signal-safe and callable from any thread once fidbus_register
 * has returned on c.
 */
FIDBUS_API void fidbus_serve_stop(struct fidbus_client *c);

/*
 * Answers a call whose callback returned FIDBUS_CALL_PENDING, with code
 * 0, FIDBUS_HANDLER_FAILED or FIDBUS_RETRY. Any thread; the RESULT is
 * written by the serving thread (it is woken). A token whose call is gone
 * (answered, lost with its connection) is ignored. 0 or -EINVAL.
 */
FIDBUS_API int fidbus_call_done(struct fidbus_client *c, uint64_t token, int code);

#ifdef __cplusplus
}
#endif
#endif
