/*
 * lib/strerror.c -- fidbus_strerror: one static string for any value the
 * library returns, negative errno or -(FIDBUS_ERR_BASE + protocol code).
 *
 * The strings are static so the function is thread-safe and callers never
 * free anything; protocol codes read "NAME: what it means", NAME being
 * fidbus_code_name's spelling (the unit tests hold the two in step).
 */
#include <string.h>

#include <fidbus/client.h>

static const char *const code_text[] = {
    [FIDBUS_OK] = "OK: success",
    [FIDBUS_MALFORMED] = "MALFORMED: the message was not well-formed",
    [FIDBUS_UNSUPPORTED] = "UNSUPPORTED: unsupported message type, version or command",
    [FIDBUS_TOO_LARGE] = "TOO_LARGE: a frame or another limit was exceeded",
    [FIDBUS_UNAUTHORIZED] = "UNAUTHORIZED: authentication missing or refused",
    [FIDBUS_NO_ROUTE] = "NO_ROUTE: no route matched the event",
    [FIDBUS_HANDLER_FAILED] = "HANDLER_FAILED: a handler returned an error",
    [FIDBUS_BUSY] = "BUSY: the daemon is shedding load",
    [FIDBUS_NOT_FOUND] = "NOT_FOUND: no such plugin, route or function",
    [FIDBUS_CONFLICT] = "CONFLICT: a name or funcID is already in use",
    [FIDBUS_INVALID] = "INVALID: bad id, tag or argument value",
    [FIDBUS_SIGNATURE_MISMATCH] = "SIGNATURE_MISMATCH: the function's signature differs",
    [FIDBUS_INTERNAL] = "INTERNAL: internal error in the daemon",
    [FIDBUS_UNAVAILABLE] =
        "UNAVAILABLE: no member could run the remote function, or it was lost",
    [FIDBUS_RETRY] = "RETRY: the member could not run the call now",
};

const char *fidbus_strerror(int rc)
{
    if (rc >= 0)
        return "success";
    int code = fidbus_error_code(rc);
    if (code || rc == FIDBUS_EPROTO_CODE(0)) {
        if ((size_t)code < sizeof(code_text) / sizeof(code_text[0]) && code_text[code])
            return code_text[code];
        return "UNKNOWN: unknown protocol error code";
    }
    if (rc <= -FIDBUS_ERR_BASE)
        return "unknown error";
    /* strerrordesc_np (glibc 2.32) is static and thread-safe, unlike strerror. */
    const char *s = strerrordesc_np(-rc);
    return s ? s : "unknown error";
}
