/*
 * What routing/remote.c (the directory, members, config.reload) and
 * routing/remote_call.c (member choice, credit, the life of a call)
 * share. Nothing else includes it.
 */
#ifndef FB_REMOTE_PRIVATE_H
#define FB_REMOTE_PRIVATE_H

#include "config/config.h"
#include "routing/remote.h"

struct fb_remote {
    struct fb_daemon *d;
    pthread_mutex_t lock;
    struct fb_func **fns; /* sorted by id */
    size_t n, cap;
    uint64_t *plugin_ids; /* sorted; with multiplicity */
    size_t nplugin, capplugin;
    struct fb_remote_ops ops;
    /* The [remote NS] sections in force (a copy: config.reload replaces
     * them without replacing d->cfg); read and replaced under lock. */
    struct fb_config sections;
    _Atomic uint64_t next_key;
    _Atomic uint64_t late;
};

/* One directory per process (the daemon's): calls and members reach it
 * without carrying a pointer. */
extern struct fb_remote *fb_remote_dir;

/* Frees a call record's memory (remote_call.c). */
void fb_remote_call_free_mem(struct fb_call *c);
/* Gives c its outcome, counts it and hands it home (or frees it). */
void fb_remote_finish(struct fb_call *c, int outcome);

#endif
