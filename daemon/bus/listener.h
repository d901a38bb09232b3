/*
 * Listening sockets. They live on the main loop: a uv_poll on our own
 * non-blocking listening socket, accept4() until EAGAIN, and each new
 * socket goes to an I/O worker (round robin). Creating the sockets
 * ourselves, rather than through uv_pipe_bind/uv_listen, lets the accepted
 * descriptor move to another thread's loop, and lets us check for a live
 * daemon before replacing a stale socket file.
 */
#ifndef FB_LISTENER_H
#define FB_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct fb_daemon;

struct fb_listener;

/*
 * Binds a Unix stream socket at path with mode (refusing if another
 * process is accepting on it; removing a stale file) or a TCP socket at
 * host:port. Does not start accepting. Returns 0 or -errno with err set.
 */
int fb_listener_unix(struct fb_daemon *d, const char *path, unsigned mode,
                     struct fb_listener **out, char *err, size_t errlen);
int fb_listener_tcp(struct fb_daemon *d, const char *host, uint16_t port,
                    struct fb_listener **out, char *err, size_t errlen);
/*
 * The same for a listening socket passed by the service manager
 * (activation.h), already checked and non-blocking. On success the
 * listener owns fd; closing it leaves the socket file alone. On failure
 * the caller still owns fd.
 */
int fb_listener_unix_fd(struct fb_daemon *d, int fd, struct fb_listener **out, char *err,
                        size_t errlen);
int fb_listener_tcp_fd(struct fb_daemon *d, int fd, struct fb_listener **out, char *err,
                       size_t errlen);
/*
 * The Unix-socket half of fb_listener_unix, shared with the control
 * socket: refuses a path another process accepts on, replaces a stale
 * socket file, binds under a strict umask, sets the group (unless group is
 * (gid_t)-1) and then mode, and listens. On success *fd_out is a
 * non-blocking listening socket the caller owns and *st_out identifies the
 * file it created (for fb_unix_unlink_own). Returns 0 or -errno, err set.
 */
int fb_unix_listen(const char *path, unsigned mode, gid_t group, int *fd_out,
                   struct stat *st_out, char *err, size_t errlen);
/* Removes path only if it is still the socket file we created: a daemon
 * that lost its file to a newer one must not delete the newer one's. */
void fb_unix_unlink_own(const char *path, dev_t dev, ino_t ino);
/* Starts accepting on the main loop. */
int fb_listener_start(struct fb_listener *l);
/* Stops accepting, closes the socket, removes the socket file we made.
 * Run the main loop afterwards to finish the close; then it frees itself. */
void fb_listener_close(struct fb_listener *l);
/* "unix:/path" or "tcp:host:port". */
const char *fb_listener_name(const struct fb_listener *l);

#endif
