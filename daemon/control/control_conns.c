/*
 * conn.list (proto/control.md): every bus connection, from the workers'
 * snapshot (bus/conn_list.h), and every control connection, sorted by id.
 *
 * The REPLY is bounded: an entry is at most CONN_ENTRY_MAX bytes of CBOR
 * (names and peers have fixed caps), so at most (max_reply - slack) /
 * CONN_ENTRY_MAX entries are listed -- the oldest connections first -- and
 * `truncated` says when some were left out (`total` counts them all).
 * With the default max_reply (64 MiB) that is well over 100,000.
 */
#include <errno.h>
#include <stdlib.h>

#include "base/clock.h"
#include "base/daemon_t.h"
#include "bus/conn_list.h"
#include "config/config.h"
#include "control/control.h"
#include "control/control_cmds.h"
#include "control/ctl_cbor.h"

/* The most one entry takes in CBOR: 14 keys (about 100 bytes), 11
 * integers of at most 9 bytes, `kind`, `peer` and `name` (each at most 64
 * bytes plus its head) and a bool. */
#define CONN_ENTRY_MAX 400u
/* Room for the map around the array and its other keys. */
#define CONN_SLACK 256u

static const char *const kind_names[] = {"unix", "tcp", "control"};

static int by_id(const void *a, const void *b)
{
    const struct fb_conn_info *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static cbor_item_t *conn_entry(struct cb *b, const struct fb_conn_info *i, uint64_t now)
{
    cbor_item_t *e = mk_map(b, 14);
    put(b, e, "id", u64(i->id));
    put(b, e, "kind", text(kind_names[i->kind]));
    put(b, e, "uid", i->uid >= 0 ? i64(i->uid) : cbor_new_null());
    put(b, e, "pid", i->pid >= 0 ? i64(i->pid) : cbor_new_null());
    put(b, e, "peer", text(i->peer[0] ? i->peer : NULL));
    put(b, e, "name", text(i->has_name ? i->name : NULL));
    put(b, e, "since_s", u64(now > i->since_ns ? (now - i->since_ns) / 1000000000u : 0));
    put(b, e, "frames_in", u64(i->frames_in));
    put(b, e, "frames_out", u64(i->frames_out));
    put(b, e, "bytes_in", u64(i->bytes_in));
    put(b, e, "bytes_out", u64(i->bytes_out));
    put(b, e, "inflight", u64(i->inflight));
    put(b, e, "paused", cbor_build_bool(i->paused));
    put(b, e, "worker", i->worker >= 0 ? i64(i->worker) : cbor_new_null());
    return e;
}

cbor_item_t *fb_ctl_conn_list(const struct fb_ctl_env *env, struct cb *b)
{
    struct fb_daemon *d = env->d;
    struct fb_conn_infos all = {0};
    unsigned missing = 0;
    if (fb_conn_snapshot(d, &all, &missing) < 0 ||
        fb_control_list_conns(env->ctl, &all) < 0) {
        fb_conn_infos_free(&all);
        b->oom = true;
        return NULL;
    }
    if (all.n)
        qsort(all.v, all.n, sizeof *all.v, by_id);

    uint32_t max_reply = d->cfg->control_max_reply;
    size_t fit = max_reply > CONN_SLACK ? (max_reply - CONN_SLACK) / CONN_ENTRY_MAX : 0;
    size_t n = all.n < fit ? all.n : fit;
    uint64_t now = fb_now_ns();
    cbor_item_t *conns = mk_array(b, n);
    for (size_t k = 0; k < n; k++)
        push(b, conns, conn_entry(b, &all.v[k], now));

    cbor_item_t *m = mk_map(b, 4);
    put(b, m, "connections", conns);
    put(b, m, "total", u64(all.n));
    put(b, m, "truncated", cbor_build_bool(n < all.n));
    /* Workers that did not answer within the wait (bus/conn_list.h):
     * their connections are not in the list. */
    put(b, m, "missing_workers", u64(missing));
    fb_conn_infos_free(&all);
    return m;
}
