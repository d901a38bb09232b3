/*
 * Remote functions (proto/README.md "Remote functions"):
 * functions served by client processes over their bus connection.
 *
 * A remote function is a struct fb_func like a plugin's (FB_FN_REMOTE in
 * its flags, no handler, plugin NULL) with a struct fb_rfunc beside it.
 * Both are made the first time a route or a REGISTER names the funcID and
 * live until the daemon frees the directory, so a route table can point
 * at one before any member exists and keep pointing at it while members
 * come and go: membership never rebuilds a table.
 *
 * Members: each REGISTER that is accepted is a struct fb_member, owned by
 * its connection (bus/member.c) and listed in its function's member set.
 * The set is an immutable array published with a release store under
 * the function's lock and read by dispatch under the RCU read lock, so a
 * call takes no lock to pick a member. Credit is the member's atomic
 * in-flight count: the dispatching thread takes one (compare and swap
 * below credit), the member's worker gives it back when the call ends.
 *
 * Calls: a struct fb_call holds a copy of the event (the receive buffer it
 * came from is reused at once) and travels: publisher's worker -> member's
 * worker (CALL written, kept until its RESULT, deadline or the member's
 * loss) -> publisher's worker (the waiter counts it). The bus does the
 * moving through struct fb_remote_ops, in batches. Calls that find no
 * credit wait on their function's queue, in arrival order, and are placed
 * when a member gives credit back or joins. Call records come from a free
 * list of the thread that made them (the publisher's worker), which also
 * frees them, so steady state allocates nothing.
 *
 * Locks: fb_remote.lock (the directory: function lookup, plugin ids) and
 * fb_rfunc.lock (member set writers, wait queue) are never held across a
 * grace period or while taking the change lock; change_lock -> dir lock ->
 * function lock is the only nesting.
 */
#ifndef FB_REMOTE_H
#define FB_REMOTE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

#include <fidbus/plugin.h>
#include <fidbus/proto.h>

#include "routing/registry.h"

struct fb_config;
struct fb_daemon;
struct fb_route;
struct fb_route_table;
struct fb_waiter;

/* In struct fb_func.flags: a remote function (never a plugin flag). */
#define FB_FN_REMOTE 0x80000000u

#define FB_MEMBER_GROUPS 64u

struct fb_member {
    _Atomic uint32_t refs; /* its connection, the member set, each call */
    struct fb_func *fn;
    void *conn;                  /* bus connection; only its worker touches it */
    void *worker;                /* where its calls are handed (bus worker) */
    struct fb_member *conn_next; /* the connection's list (its worker only) */
    uint64_t key;                /* unique per member: rendezvous, exclusion */
    uint64_t conn_id;
    uint32_t credit, timeout_ms, attempts;
    bool idempotent;
    /* Unix peer (has_cred) or TCP peer address. */
    bool has_cred;
    uint32_t pid, uid;
    char peer[64];
    char name[64];
    uint64_t since_ns;
    _Atomic uint32_t inflight; /* credit taken: handed, held, not yet answered */
    _Atomic bool gone;         /* out of the member set: no new calls */
    bool closed;               /* its connection is gone (its worker only) */
    bool draining;             /* UNREGISTER waits for inflight 0 (its worker) */
    uint64_t drain_seq;
    _Atomic uint64_t calls, errors, timeouts;
    /* What its permission was checked against, for config.reload. */
    bool is_tcp, tcp_authed;
    _Atomic bool revoked; /* config.reload withdrew it: its connection goes */
    uint32_t gid, ngroups;
    uint32_t groups[FB_MEMBER_GROUPS];
};

struct fb_mset {
    struct rcu_head rcu;
    size_t n;
    struct fb_member *m[];
};

struct fb_call;

struct fb_rfunc {
    struct fb_func *fn;
    struct fb_mset *mset; /* RCU-published; NULL = no member */
    pthread_mutex_t lock; /* mset writers, the wait queue, sighash */
    struct fb_call *wq_head, *wq_tail;
    _Atomic uint64_t waiting;
    _Atomic uint32_t rr;
    bool has_sig; /* sighash is the members' (set while any member exists) */
    _Atomic uint64_t timeouts, redelivered, unavailable;
};

/* Where a call is on its way. */
struct fb_call {
    struct fb_call *next, *prev;
    struct fb_func *fn;
    struct fb_member *m; /* holds a reference; NULL while waiting */
    struct fb_waiter *waiter;
    void *home;       /* the publisher's worker; NULL: nobody waits */
    uint64_t exclude; /* member key not to pick again (0: none) */
    uint64_t call_id; /* on m's connection */
    uint64_t written_ns, deadline_ns;
    uint64_t khash; /* split_by value's hash, when sticky */
    uint32_t attempt;
    int outcome; /* 0, FIDBUS_HANDLER_FAILED or FIDBUS_UNAVAILABLE */
    bool sticky, written, heap;
    /* An attempt was written and then lost (member gone, deadline): the
     * call may have run. An UNAVAILABLE call without it never ran, and
     * the publisher hears of it even un-acked (proto/README.md). */
    bool ran_maybe;
    struct fidbus_event ev; /* points into buf */
    size_t cap;             /* bytes of buf */
    uint8_t *buf;           /* tags, id, strings, payload */
};

/* What the bus does with calls (set once at start, bus/member.c). */
struct fb_remote_ops {
    /* c->m is set and holds c's credit: hand c to c->m's worker. */
    void (*deliver)(struct fb_call *c);
    /* c has its outcome: hand it to c->home (never NULL here). */
    void (*finish)(struct fb_call *c);
    /* config.reload revoked members on this worker: close their
     * connections (their calls are then lost). Any thread. */
    void (*revoke)(void *worker);
};

struct fb_remote;

int fb_remote_new(struct fb_daemon *d, struct fb_remote **out);
/* Every function, member set and waiting call goes. No thread may use
 * the directory any more. NULL-safe. */
struct fb_remote *fb_remote_free(struct fb_remote *r);
void fb_remote_set_ops(struct fb_remote *r, const struct fb_remote_ops *ops);

/* The remote function of canonical (made if missing, create = true);
 * NULL if missing or on ENOMEM. */
struct fb_func *fb_remote_get(struct fb_remote *r, const char *canonical, bool create);
/* The remote function with funcID id, or NULL. */
struct fb_func *fb_remote_lookup(struct fb_remote *r, uint64_t id);
/* May namespace ns be served remotely at all ([remote NS] or [remote *])? */
bool fb_remote_ns_allowed(struct fb_remote *r, const char *ns);
/* The remote functions, in funcID order (listings; call under the lock
 * taken by fb_remote_lock). */
void fb_remote_lock(struct fb_remote *r);
void fb_remote_unlock(struct fb_remote *r);
size_t fb_remote_count(const struct fb_remote *r);
struct fb_func *fb_remote_at(const struct fb_remote *r, size_t i);
/* Plugin functions come and go (registry.c): a funcID a plugin provides
 * cannot be registered by a member, and one a member serves cannot be
 * loaded (CONFLICT, err says which). */
int fb_remote_plugin_check(struct fb_remote *r, const struct fb_func *fns, size_t n,
                           char *err, size_t errlen);
void fb_remote_plugin_mark(struct fb_remote *r, const struct fb_func *fns, size_t n,
                           bool provided);

/* A REGISTER, as the bus read it. */
struct fb_reg_req {
    const char *function;        /* canonical, NUL-terminated */
    const char *signature;       /* NUL-terminated */
    uint64_t credit, timeout_ms; /* 0: the section's */
    bool idempotent;
    bool is_tcp, tcp_authed;
    bool has_cred;
    uint32_t uid, gid, pid;
    const uint32_t *groups; /* supplementary */
    size_t ngroups;
    uint64_t conn_id;
    const char *peer, *name;
};

/*
 * Checks and adds a member (the caller's connection must not serve the
 * function already: CONFLICT is the caller's). t is the published table
 * (caller holds the read lock) for the signature check. Returns 0 with
 * *out (one reference: the connection's), or UNAUTHORIZED, CONFLICT,
 * SIGNATURE_MISMATCH, INVALID, -ENOMEM with a reason in err.
 */
int fb_remote_register(struct fb_remote *r, const struct fb_route_table *t,
                       const struct fb_reg_req *q, void *conn, void *worker,
                       struct fb_member **out, char *err, size_t errlen);
/* Takes m out of its member set (UNREGISTER, connection lost): no new
 * call picks it. Its held calls are the caller's to end. */
void fb_remote_member_remove(struct fb_member *m);
void fb_remote_member_put(struct fb_member *m);

/* The members' sighash of remote fn into out[FIDBUS_SIGHASH_LEN]; false
 * while no member serves it (the signature is not known then). */
bool fb_remote_sighash(struct fb_func *fn, uint8_t *out);
/* Does fn have a member right now (a hint: under the read lock)? */
bool fb_remote_has_members(const struct fb_func *fn);

/*
 * Starts a call of remote fn for ev, routed by r (split_by), for waiter
 * (NULL: nobody waits). Caller holds the read lock. Returns 0 (the call
 * is on its way or waiting for credit), FIDBUS_UNAVAILABLE (no member;
 * counted) or -ENOMEM.
 */
int fb_remote_call(struct fb_remote *rd, struct fb_func *fn, const struct fb_route *r,
                   const struct fidbus_event *ev, struct fb_waiter *waiter);

/* On the member's worker, once per call: the RESULT code (0, 6, 14; any
 * other counts as 6). */
void fb_remote_result(struct fb_call *c, uint64_t code, uint64_t now_ns);
/* The member lost it (connection gone, or never delivered to a gone one). */
void fb_remote_lost(struct fb_call *c);
/* Its deadline passed. */
void fb_remote_timeout(struct fb_call *c);
/* Credit came back to fn: place waiting calls. */
void fb_remote_kick(struct fb_func *fn);
/* The publisher's worker is done with c (its outcome counted). */
void fb_remote_call_release(struct fb_call *c);
/* This thread's free list goes (a worker's end). */
void fb_remote_thread_end(void);
/* The thread dispatching now is a worker, w (the home of its calls). */
void fb_remote_set_thread_home(void *w);

/*
 * config.reload (control thread): swap puts cfg's [remote] sections in
 * force (REGISTERs and route builds see them at once) and keeps the old
 * ones in *old; restore undoes it after a failed reload; commit, after a
 * successful one, frees the old sections and drops every member the new
 * ones no longer allow (out of the choice at once, its connection closed
 * by its worker, its calls handled as lost). Returns members dropped.
 */
int fb_remote_sections_swap(struct fb_remote *r, const struct fb_config *cfg,
                            struct fb_config *old);
void fb_remote_sections_restore(struct fb_remote *r, struct fb_config *old);
size_t fb_remote_sections_commit(struct fb_remote *r, struct fb_config *old);

/* RESULTs for calls not held (unknown, answered, timed out). */
void fb_remote_count_late(struct fb_remote *r, uint64_t n);
uint64_t fb_remote_late(const struct fb_remote *r);

/* Rendezvous weight of key for a member key (unit.remote_pick). */
uint64_t fb_remote_rendezvous(uint64_t khash, uint64_t member_key);
/* FNV-1a 64 of a split_by value. */
uint64_t fb_remote_key_hash(const char *value);

#endif
