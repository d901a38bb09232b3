/*
 * I/O worker threads. Each owns a uv loop; the main thread hands it
 * accepted sockets, the pool hands it finished blocking jobs, and the
 * daemon asks it to stop, all through one uv_async and a small
 * mutex-protected inbox (the mutex is taken once per wake-up, never per
 * event).
 */
#include "bus/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include "base/daemon_t.h"
#include "base/log.h"
#include "bus/conn.h"
#include "bus/member.h"
#include "config/config.h"
#include "routing/dispatch.h"
#include "routing/pool.h"
#include "routing/routes.h"

/* How long a stopping worker waits for clients to take their answers. */
#define FB_STOP_TIMEOUT_MS 5000

void fb_worker_maybe_finish(struct fb_worker *w)
{
    if (!w->stopping || atomic_load_explicit(&w->nconns, memory_order_relaxed) ||
        w->nwaiters)
        return;
    if (!w->rclosed)
        fb_member_worker_close(w);
    if (!uv_is_closing((uv_handle_t *)&w->async))
        uv_close((uv_handle_t *)&w->async, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->stop_timer))
        uv_close((uv_handle_t *)&w->stop_timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->yield_idle))
        uv_close((uv_handle_t *)&w->yield_idle, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->sweep_timer))
        uv_close((uv_handle_t *)&w->sweep_timer, NULL);
}

static void on_stop_timeout(uv_timer_t *t)
{
    struct fb_worker *w = t->data;
    unsigned n = atomic_load_explicit(&w->nconns, memory_order_relaxed);
    if (n)
        fb_warn("worker %u: %u client(s) did not take their answers in time; closing",
                w->index, n);
    for (struct fb_conn *c = w->conns; c; c = fb_conn_next(c))
        fb_conn_abort(c);
}

static void on_check(uv_check_t *h)
{
    fb_worker_maybe_finish(h->data);
}

static void on_async(uv_async_t *a)
{
    struct fb_worker *w = a->data;
    pthread_mutex_lock(&w->lock);
    struct fb_new_fd *fds = w->new_fds;
    size_t nfds = w->nnew;
    w->new_fds = NULL;
    w->nnew = w->capnew = 0;
    struct fb_job *done = w->done_head;
    w->done_head = NULL;
    bool stop = w->stop_requested;
    struct fb_call *rin = w->rin_head, *rback = w->rback_head;
    w->rin_head = w->rin_tail = w->rback_head = w->rback_tail = NULL;
    bool revoke = w->rrevoke;
    w->rrevoke = false;
    pthread_mutex_unlock(&w->lock);

    for (size_t i = 0; i < nfds; i++) {
        if (w->stopping) {
            close(fds[i].fd);
            fb_conn_admit_release(w->d, &fds[i].admit);
        } else {
            fb_conn_new(w, fds[i].fd, fds[i].is_tcp, &fds[i].admit);
        }
    }
    free(fds);

    /* LIFO from the inbox; order among completions does not matter (each
     * waiter counts its own), PING barriers are tracked per connection. */
    while (done) {
        struct fb_job *next = done->next;
        fb_conn_job_done(done);
        done = next;
    }
    if (revoke)
        fb_member_revoked(w);
    if (rin || rback) {
        /* Remote calls handed over (bus/member.c), under the read lock:
         * redelivery picks members. */
        urcu_memb_read_lock();
        fb_member_inbox(w, rin, rback);
        FB_ROUTES_READ_DONE();
        urcu_memb_read_unlock();
    }

    if (stop && !w->stopping) {
        w->stopping = true;
        for (struct fb_conn *c = w->conns; c; c = fb_conn_next(c))
            fb_conn_begin_stop(c);
        uv_timer_start(&w->stop_timer, on_stop_timeout, FB_STOP_TIMEOUT_MS, 0);
    }
    fb_worker_maybe_finish(w);
}

static void on_sweep_timer(uv_timer_t *t)
{
    fb_conn_sweep(t->data);
}

static unsigned min_on(unsigned a, unsigned b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* A quarter of the shortest of the idle timeouts and input_soft_ms: a
 * connection is closed within 1.25 times its idle timeout, 1.5 times
 * input_soft_ms (its clock starts at the first sweep that sees the frame);
 * 0 when all are off. */
static uint64_t sweep_ms(const struct fb_limits *l)
{
    unsigned m =
        min_on(min_on(l->idle_timeout_unix_ms, l->idle_timeout_tcp_ms), l->input_soft_ms);
    if (!m)
        return 0;
    return m / 4 ? m / 4 : 1;
}

static void worker_main(void *arg)
{
    struct fb_worker *w = arg;
    urcu_memb_register_thread();
    fb_dispatch_mark_rcu_thread();
    fb_dispatch_mark_tree_thread();
    fb_member_thread_start(w);
    w->counters = fb_counters_self(w->d);

    uv_check_t check;
    uv_check_init(&w->loop, &check);
    check.data = w;
    uv_check_start(&check, on_check);
    uv_unref((uv_handle_t *)&check);
    uint64_t sweep = sweep_ms(&w->d->cfg->limits);
    if (sweep)
        uv_timer_start(&w->sweep_timer, on_sweep_timer, sweep, sweep);

    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&check, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    urcu_memb_unregister_thread();
}

int fb_worker_start(struct fb_daemon *d, unsigned index, struct fb_worker **out)
{
    struct fb_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->d = d;
    w->index = index;
    w->msg = malloc(sizeof *w->msg);
    if (!w->msg) {
        free(w);
        return -ENOMEM;
    }
    int rc = uv_loop_init(&w->loop);
    if (rc < 0) {
        free(w->msg);
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->lock, NULL);
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->stop_timer);
    w->stop_timer.data = w;
    uv_unref((uv_handle_t *)&w->stop_timer);
    uv_idle_init(&w->loop, &w->yield_idle);
    w->yield_idle.data = w;
    uv_timer_init(&w->loop, &w->sweep_timer);
    w->sweep_timer.data = w;
    uv_unref((uv_handle_t *)&w->sweep_timer);
    rc = fb_member_worker_init(w);
    if (rc == 0)
        rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc < 0) {
        if (w->stage) {
            uv_close((uv_handle_t *)&w->rtimer, NULL);
            fb_member_worker_end(w);
        }
        uv_close((uv_handle_t *)&w->async, NULL);
        uv_close((uv_handle_t *)&w->stop_timer, NULL);
        uv_close((uv_handle_t *)&w->yield_idle, NULL);
        uv_close((uv_handle_t *)&w->sweep_timer, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        pthread_mutex_destroy(&w->lock);
        free(w->msg);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void fb_worker_add_conn(struct fb_worker *w, int fd, bool is_tcp,
                        const struct fb_admit *a)
{
    pthread_mutex_lock(&w->lock);
    if (w->nnew == w->capnew) {
        size_t cap = w->capnew ? w->capnew * 2 : 16;
        struct fb_new_fd *n = realloc(w->new_fds, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&w->lock);
            fb_error("out of memory accepting a client");
            close(fd);
            fb_conn_admit_release(w->d, a);
            return;
        }
        w->new_fds = n;
        w->capnew = cap;
    }
    w->new_fds[w->nnew++] = (struct fb_new_fd){.fd = fd, .is_tcp = is_tcp, .admit = *a};
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void fb_worker_post_done(struct fb_worker *w, struct fb_job *j)
{
    pthread_mutex_lock(&w->lock);
    j->next = w->done_head;
    w->done_head = j;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void fb_worker_stop(struct fb_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->stop_requested = true;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

struct fb_worker *fb_worker_join(struct fb_worker *w)
{
    if (!w)
        return NULL;
    uv_thread_join(&w->thread);
    int rc = uv_loop_close(&w->loop);
    if (rc < 0)
        fb_warn("worker %u: loop closed with handles left: %s", w->index,
                uv_strerror(rc));
    for (size_t i = 0; i < w->nnew; i++)
        close(w->new_fds[i].fd);
    free(w->new_fds);
    while (w->wfree) {
        struct fb_waiter *wt = w->wfree;
        w->wfree = wt->next;
        free(wt);
    }
    fb_member_worker_end(w);
    pthread_mutex_destroy(&w->lock);
    free(w->msg);
    free(w);
    return NULL;
}
