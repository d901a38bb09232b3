/* Accepting at EMFILE/ENFILE (nofd.h). */
#include "bus/nofd.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "bus/conn_admit.h"

static void on_pause_end(uv_timer_t *t)
{
    struct fb_nofd *n = t->data;
    uv_poll_start(n->poll, UV_READABLE, n->on_accept);
}

int fb_nofd_init(struct fb_nofd *n, uv_loop_t *loop, struct fb_daemon *d, uv_poll_t *poll,
                 uv_poll_cb on_accept, const char *who)
{
    *n = (struct fb_nofd){.d = d, .poll = poll, .on_accept = on_accept, .who = who};
    int rc = uv_timer_init(loop, &n->pause);
    if (rc < 0)
        return rc;
    n->pause.data = n;
    n->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

bool fb_nofd_refuse(struct fb_nofd *n, int lfd, int err)
{
    if (!n->warned)
        fb_warn("%s: accept: %s: refusing new connections with ERROR BUSY until some "
                "close (raise the open-file limit, LimitNOFILE=, or lower "
                "max_connections)",
                n->who, strerror(err));
    n->warned = true;
    if (n->spare < 0)
        n->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (n->spare >= 0) {
        close(n->spare);
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            fb_conn_refuse(n->d, fd, FB_LIM_FDS,
                           "the daemon is out of file descriptors; closing");
        n->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
            return true;
    }
    uv_poll_stop(n->poll);
    uv_timer_start(&n->pause, on_pause_end, FB_NOFD_PAUSE_MS, 0);
    return false;
}

void fb_nofd_close(struct fb_nofd *n, uv_close_cb cb)
{
    if (n->spare >= 0)
        close(n->spare);
    n->spare = -1;
    uv_close((uv_handle_t *)&n->pause, cb);
}
