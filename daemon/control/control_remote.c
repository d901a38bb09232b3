/*
 * Remote functions on the control socket (proto/control.md): func.list's
 * remote entries, func.members, and the per-function stats keys of
 * remote functions (timeouts, redelivered, unavailable, waiting). Kept
 * apart from control_cmds.c so the stats rendering there changes by a
 * call, not by these keys.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "control/control_cmds.h"
#include "control/ctl_cbor.h"
#include "routing/remote.h"

/* Number of members of remote fn (its lock keeps the set still). */
static size_t nmembers(struct fb_func *fn)
{
    struct fb_rfunc *rf = fn->remote;
    pthread_mutex_lock(&rf->lock);
    size_t n = rf->mset ? rf->mset->n : 0;
    pthread_mutex_unlock(&rf->lock);
    return n;
}

size_t fb_ctl_remote_count(const struct fb_daemon *d)
{
    fb_remote_lock(d->remote);
    size_t n = fb_remote_count(d->remote);
    fb_remote_unlock(d->remote);
    return n;
}

void fb_ctl_remote_func_list(const struct fb_daemon *d, struct cb *b, cbor_item_t *fns,
                             size_t max)
{
    fb_remote_lock(d->remote);
    size_t n = fb_remote_count(d->remote);
    for (size_t i = 0; i < n && i < max; i++) {
        struct fb_func *f = fb_remote_at(d->remote, i);
        uint8_t sh[FIDBUS_SIGHASH_LEN];
        bool known = fb_remote_sighash(f, sh);
        char sig[FIDBUS_SIGHASH_HEX];
        if (known)
            fidbus_sighash_hex(sh, sig);
        cbor_item_t *e = mk_map(b, 8);
        put(b, e, "id", funcid_text(f->id));
        put(b, e, "canonical", text(f->canonical));
        /* unknown until a member says it (proto/control.md func.list) */
        put(b, e, "sighash", known ? text(sig) : cbor_new_null());
        put(b, e, "plugin", cbor_new_null());
        put(b, e, "blocking", cbor_build_bool(false));
        put(b, e, "quarantined", cbor_build_bool(fb_func_quarantined(f)));
        put(b, e, "kind", text("remote"));
        put(b, e, "members", u64(nmembers(f)));
        push(b, fns, e);
    }
    fb_remote_unlock(d->remote);
}

void fb_ctl_remote_stats(const struct fb_daemon *d, struct cb *b, cbor_item_t *fns,
                         size_t max)
{
    fb_remote_lock(d->remote);
    size_t n = fb_remote_count(d->remote);
    for (size_t i = 0; i < n && i < max; i++) {
        struct fb_func *f = fb_remote_at(d->remote, i);
        struct fb_rfunc *rf = f->remote;
        char hex[FIDBUS_FUNCID_HEX];
        fidbus_funcid_hex(f->id, hex);
        /* late: blocking plugin calls only */
        cbor_item_t *e = fb_ctl_func_stats(b, f, NULL, 0, 6);
        put(b, e, "kind", text("remote"));
        put(b, e, "members", u64(nmembers(f)));
        put(b, e, "timeouts", u64(atomic_load(&rf->timeouts)));
        put(b, e, "redelivered", u64(atomic_load(&rf->redelivered)));
        put(b, e, "unavailable", u64(atomic_load(&rf->unavailable)));
        put(b, e, "waiting", u64(atomic_load(&rf->waiting)));
        put(b, fns, hex, e);
    }
    fb_remote_unlock(d->remote);
}

static cbor_item_t *member_item(struct cb *b, const struct fb_member *m, uint64_t now)
{
    cbor_item_t *e = mk_map(b, m->has_cred ? 13 : 12);
    put(b, e, "id", funcid_text(m->fn->id));
    put(b, e, "conn", u64(m->conn_id));
    if (m->has_cred) {
        put(b, e, "pid", u64(m->pid));
        put(b, e, "uid", u64(m->uid));
    } else {
        put(b, e, "peer", text(m->peer));
    }
    put(b, e, "idempotent", cbor_build_bool(m->idempotent));
    put(b, e, "name", text(m->name));
    put(b, e, "credit", u64(m->credit));
    put(b, e, "inflight", u64(atomic_load(&m->inflight)));
    put(b, e, "calls", u64(atomic_load(&m->calls)));
    put(b, e, "errors", u64(atomic_load(&m->errors)));
    put(b, e, "timeouts", u64(atomic_load(&m->timeouts)));
    put(b, e, "since_s", u64(now > m->since_ns ? (now - m->since_ns) / 1000000000u : 0));
    return e;
}

cbor_item_t *fb_ctl_func_members(const struct fb_ctl_env *env, const cbor_item_t *args,
                                 struct cb *b, struct fb_ctl_reply *out)
{
    struct fb_daemon *d = env->d;
    char *hex = NULL;
    uint64_t id = 0;
    int rc =
        args ? fb_ctl_arg_text(args, "id", false, &hex, out->message, sizeof out->message)
             : 0;
    if (rc) {
        out->code = rc < 0 ? FIDBUS_INTERNAL : rc;
        return NULL;
    }
    if (hex && (strlen(hex) != 16 || fidbus_funcid_parse(hex, &id) != 0)) {
        out->code = FIDBUS_INVALID;
        snprintf(out->message, sizeof out->message,
                 "id must be a funcID of 16 hex digits, not '%.64s'", hex);
        free(hex);
        return NULL;
    }
    uint64_t now = fb_now_ns();
    fb_remote_lock(d->remote);
    size_t n = fb_remote_count(d->remote), total = 0;
    bool found = !hex;
    for (size_t i = 0; i < n; i++) {
        struct fb_func *f = fb_remote_at(d->remote, i);
        if (hex && f->id != id)
            continue;
        found = true;
        total += nmembers(f);
    }
    if (!found) {
        fb_remote_unlock(d->remote);
        out->code = FIDBUS_NOT_FOUND;
        snprintf(out->message, sizeof out->message, "no remote function with funcID %s",
                 hex);
        free(hex);
        return NULL;
    }
    cbor_item_t *arr = mk_array(b, total);
    size_t put_n = 0;
    for (size_t i = 0; i < n; i++) {
        struct fb_func *f = fb_remote_at(d->remote, i);
        if (hex && f->id != id)
            continue;
        struct fb_rfunc *rf = f->remote;
        pthread_mutex_lock(&rf->lock);
        for (size_t k = 0; rf->mset && k < rf->mset->n && put_n < total; k++, put_n++)
            push(b, arr, member_item(b, rf->mset->m[k], now));
        pthread_mutex_unlock(&rf->lock);
    }
    fb_remote_unlock(d->remote);
    free(hex);
    cbor_item_t *m = mk_map(b, 2);
    put(b, m, "members", arr);
    /* RESULTs that answered no call held (unknown, answered, timed out) */
    put(b, m, "late_results", u64(fb_remote_late(d->remote)));
    return m;
}
