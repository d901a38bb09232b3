/*
 * Connections that serve remote functions (proto/README.md): REGISTER,
 * UNREGISTER, the CALLs written to them, their RESULTs, deadlines, and
 * the hand-over of calls between I/O workers (routing/remote.h has the
 * functions, members and calls themselves).
 */
#ifndef FB_MEMBER_H
#define FB_MEMBER_H

#include <stdbool.h>
#include <stdint.h>

#include <fidbus/proto.h>

struct fb_conn;
struct fb_worker;
struct fb_route_table;
struct fb_daemon;
struct fb_call;

/* Per destination worker: calls staged on the worker that made them. */
struct fb_rstage {
    struct fb_call *in_head, *in_tail;     /* for members over there */
    struct fb_call *back_head, *back_tail; /* home over there */
    bool dirty;
};

/* What a serving connection keeps (struct fb_conn.rc). */
struct fb_rconn {
    struct fb_member *members;             /* its registrations */
    struct fb_call *held_head, *held_tail; /* CALLs written, by call id */
    uint64_t next_call_id;
    uint64_t id;                   /* connection id (func.members) */
    struct fb_conn *wnext, *wprev; /* the worker's serving list */
    bool gone;
    bool touched; /* output to flush after this batch */
    struct fb_conn *tnext;
};

/* The bus's side of routing/remote.h, installed at start. */
void fb_member_install(struct fb_daemon *d);

void fb_member_register(struct fb_conn *c, const struct fb_route_table *t,
                        struct fidbus_msg *m);
void fb_member_unregister(struct fb_conn *c, struct fidbus_msg *m);
void fb_member_result(struct fb_conn *c, struct fidbus_msg *m, uint64_t now);
/* c's connection is closing: its members leave, their calls are lost. */
void fb_member_conn_gone(struct fb_conn *c);

/* Worker side: its thread starts / ends; the inbox handed over. */
int fb_member_worker_init(struct fb_worker *w);
void fb_member_worker_end(struct fb_worker *w);
void fb_member_thread_start(struct fb_worker *w);
void fb_member_inbox(struct fb_worker *w, struct fb_call *in, struct fb_call *back);
/* config.reload revoked members on w: their connections are closed. */
void fb_member_revoked(struct fb_worker *w);
/* The loop is ending: calls handed here from now on are the sender's. */
void fb_member_worker_close(struct fb_worker *w);

#endif
