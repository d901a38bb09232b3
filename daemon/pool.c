/*
 * The blocking pool. A plain mutex + condition variable queue: blocking
 * handlers are by definition slow (disk, network), so the queue is never
 * the bottleneck, and a lock-free design would buy nothing here.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "dispatch.h"
#include "log.h"
#include "plugin_loader.h"
#include "worker.h"

struct fb_pool {
    struct fb_daemon *d;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct fb_job *head, *tail;
    size_t queued, max_queued;
    bool stop;
    unsigned nthreads;
    pthread_t threads[];
};

struct fb_job *fb_job_new(struct fb_daemon *d, struct fb_func *fn,
                          const struct fidbus_event *ev, unsigned hop)
{
    size_t idlen = strlen(ev->id) + 1;
    size_t strs = idlen;
    for (size_t i = 0; i < ev->ntags; i++)
        strs += strlen(ev->tags[i].key) + strlen(ev->tags[i].value) + 2;
    size_t tagsz = ev->ntags * sizeof(struct fidbus_tag);
    struct fb_job *j = malloc(sizeof *j + tagsz + strs + ev->payload_len);
    if (!j)
        return NULL;
    char *p = (char *)j->tags + tagsz;
    j->next = NULL;
    j->d = d;
    j->fn = fn;
    j->waiter = NULL;
    j->hop = hop;
    j->rc = 0;
    j->ev = *ev;
    memcpy(p, ev->id, idlen);
    j->ev.id = p;
    p += idlen;
    for (size_t i = 0; i < ev->ntags; i++) {
        size_t kl = strlen(ev->tags[i].key) + 1, vl = strlen(ev->tags[i].value) + 1;
        memcpy(p, ev->tags[i].key, kl);
        j->tags[i].key = p;
        p += kl;
        memcpy(p, ev->tags[i].value, vl);
        j->tags[i].value = p;
        p += vl;
    }
    j->ev.tags = ev->ntags ? j->tags : NULL;
    if (ev->payload_len) {
        memcpy(p, ev->payload, ev->payload_len);
        j->ev.payload = (const uint8_t *)p;
    } else {
        j->ev.payload = NULL;
    }
    return j;
}

static void *pool_main(void *arg)
{
    struct fb_pool *p = arg;
    urcu_memb_register_thread();
    fb_dispatch_mark_rcu_thread();
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        struct fb_job *j = p->head;
        if (!j)
            break; /* stop requested and the queue is drained */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);

        j->rc = fb_dispatch_call_blocking(j);
        /* The plugin may be unloaded once inflight drops to zero: the job
         * must not touch fn after this. */
        atomic_fetch_sub_explicit(&j->fn->plugin->inflight, 1, memory_order_release);
        j->fn = NULL;
        if (j->waiter)
            fb_worker_post_done(fb_waiter_worker(j->waiter), j);
        else
            free(j);

        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    urcu_memb_unregister_thread();
    return NULL;
}

int fb_pool_new(struct fb_daemon *d, unsigned nthreads, struct fb_pool **out)
{
    struct fb_pool *p = calloc(1, sizeof *p + nthreads * sizeof(pthread_t));
    if (!p)
        return -ENOMEM;
    p->d = d;
    p->max_queued = (size_t)FB_POOL_QUEUE_PER_THREAD * nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, pool_main, p);
        if (rc) {
            p->nthreads = i;
            fb_pool_free(p);
            return -rc;
        }
        p->nthreads = i + 1;
    }
    *out = p;
    return 0;
}

int fb_pool_submit(struct fb_pool *p, struct fb_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->queued >= p->max_queued) {
        pthread_mutex_unlock(&p->lock);
        return -EBUSY;
    }
    p->queued++;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

struct fb_pool *fb_pool_free(struct fb_pool *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}
