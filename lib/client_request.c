/*
 * lib/client_request.c -- the calls that wait for one answer of their
 * own: the connection handshake (HELLO, AUTH, and the PING that proves
 * the key was taken), fidbus_ping, fidbus_request (REQUEST -> REPLY, how
 * fidbusctl speaks to the control socket; REPLYs up to
 * FIDBUS_CONTROL_REPLY_MAX) and fidbus_client_recv.
 *
 * They share struct fidbus_client and the pump with lib/client.c (see
 * client_private.h); a reconnecting client re-runs the handshake from
 * client_reconnect.c on every new connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fidbus/client.h>

#include "client_private.h"

static int send_ping(struct fidbus_client *c, int64_t deadline)
{
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ),
        .type = FIDBUS_MSG_PING,
        .seq = fb_client_next_seq(c),
    };
    int rc = fb_client_enqueue(c, &o);
    if (rc < 0)
        return rc;
    struct fb_wait w = {
        .kind = FB_WAIT_SEQ, .seq = o.seq, .want_type = FIDBUS_MSG_ACK, .is_ping = true};
    rc = fb_client_pump(c, &w, deadline);
    if (rc < 0)
        return rc;
    return w.ans.type == FIDBUS_MSG_ACK ? 0 : fb_client_proto_rc(w.ans.code);
}

/*
 * HELLO, then AUTH when the server sent a nonce. The protocol has no
 * answer to AUTH, so a PING follows it: its ACK proves the key was
 * accepted, and a refusal surfaces here instead of on the first publish.
 */
int fb_client_handshake(struct fidbus_client *c, const char *name, const uint8_t *key,
                        size_t key_len, int64_t deadline)
{
    struct fb_wait w = {.kind = FB_WAIT_HELLO};
    int rc = fb_client_pump(c, &w, deadline);
    if (rc < 0)
        return rc;
    if (w.ans.type == FIDBUS_MSG_ERROR)
        return fb_client_proto_rc(w.ans.code);
    if (c->version != FIDBUS_PROTO_VERSION)
        return -EPROTONOSUPPORT;
    if (c->nonce_len == 0)
        return 0;
    if (!key) {
        snprintf(c->last_error, sizeof(c->last_error),
                 "the server requires a key and none was given");
        return FIDBUS_EPROTO_CODE(FIDBUS_UNAUTHORIZED);
    }

    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, c->nonce, c->nonce_len, mac, &mac_len))
        return -ENOMEM;
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_MAC),
        .type = FIDBUS_MSG_AUTH,
        .mac = {mac, mac_len},
    };
    if (name) {
        o.present |= FIDBUS_BIT(FIDBUS_K_NAME);
        o.name = name;
    }
    rc = fb_client_enqueue(c, &o);
    if (rc < 0)
        return rc;
    return send_ping(c, deadline);
}

int fidbus_ping(struct fidbus_client *c)
{
    if (!c)
        return -EINVAL;
    if (c->dead)
        return c->dead;
    int64_t deadline = deadline_in(c->timeout_ms);
    if (c->reconnect) {
        fb_client_probe(c);
        int rc = fb_client_wait_connected(c, deadline);
        if (rc < 0)
            return rc;
    }
    return send_ping(c, deadline);
}

int fidbus_client_recv(struct fidbus_client *c, struct fidbus_answer *ans, int timeout_ms)
{
    if (!c || !ans)
        return -EINVAL;
    /* Answers other calls read first, oldest first: they came earlier. */
    char *message = NULL;
    if (fb_answers_pop(&c->kept, ans, &message)) {
        if (message) {
            snprintf(c->last_error, sizeof(c->last_error), "%s", message);
            c->last_code = ans->code;
            free(message);
        }
        return 0;
    }
    struct fb_wait w = {.kind = FB_WAIT_ANY};
    int rc =
        fb_client_pump(c, &w, deadline_in(timeout_ms == -1 ? c->timeout_ms : timeout_ms));
    if (rc < 0)
        return rc;
    *ans = w.ans;
    if (!w.has_result)
        ans->result = 0;
    return 0;
}

int fidbus_request(struct fidbus_client *c, const char *command, const uint8_t *args,
                   size_t args_len, uint8_t **reply_result, size_t *reply_result_len)
{
    if (reply_result)
        *reply_result = NULL;
    if (reply_result_len)
        *reply_result_len = 0;
    if (!c || !command || !*command || (args_len && !args))
        return -EINVAL;
    if (c->dead)
        return c->dead;
    if (c->reconnect) {
        fb_client_probe(c);
        int rc = fb_client_wait_connected(c, deadline_in(c->timeout_ms));
        if (rc < 0)
            return rc;
    }
    struct fidbus_msg_out o = {
        .present = FIDBUS_BIT(FIDBUS_K_TYPE) | FIDBUS_BIT(FIDBUS_K_SEQ) |
                   FIDBUS_BIT(FIDBUS_K_COMMAND),
        .type = FIDBUS_MSG_REQUEST,
        .seq = fb_client_next_seq(c),
        .command = command,
    };
    if (args_len) {
        o.present |= FIDBUS_BIT(FIDBUS_K_ARGS);
        o.args.ptr = args;
        o.args.len = args_len;
    }
    int rc = fb_client_enqueue(c, &o);
    if (rc < 0)
        return rc;
    struct fb_wait w = {.copy_result = reply_result != NULL};
    /* A REPLY may be longer than max_frame (route.list of many routes):
     * the daemon bounds it by FIDBUS_CONTROL_REPLY_MAX instead. Only while
     * this request waits, so other frames keep the caller's limit. */
    uint32_t limit = c->max_frame;
    if (c->rd.max_frame < FIDBUS_CONTROL_REPLY_MAX)
        c->rd.max_frame = FIDBUS_CONTROL_REPLY_MAX;
    rc = fb_client_wait_seq(c, &w, o.seq, FIDBUS_MSG_REPLY);
    if (c->rd.max_frame > limit)
        c->rd.max_frame = limit;
    if (rc < 0 || w.ans.type != FIDBUS_MSG_REPLY || w.ans.code != 0) {
        free(w.result);
        if (rc < 0)
            return rc;
        return fb_client_proto_rc(w.ans.code); /* never 0 here: see handle_frame */
    }
    if (reply_result) {
        *reply_result = w.result;
        if (reply_result_len)
            *reply_result_len = w.result_len;
    }
    return 0;
}
