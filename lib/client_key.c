/*
 * lib/client_key.c -- reading the shared key for TCP authentication.
 *
 * fidbusd and its clients read the key with this one function, so both
 * ends apply the same rules to the file (see fidbus_key_load in
 * <fidbus/client.h>): a secret that other users could read, or that a
 * third user could rewrite, is refused rather than used, because a key
 * that leaked is worse than no TCP at all -- the admin gets a clear error
 * instead of a false sense of safety.
 *
 * The key is the file's bytes, minus one trailing "\n" (what `echo` or an
 * editor adds), so a key written either way works on both ends. Nothing
 * else is trimmed: a key is bytes, not text.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fidbus/client.h>

/* fidbus_key_strerror spells the limits out. */
_Static_assert(FIDBUS_KEY_MIN == 16 && FIDBUS_KEY_MAX == 4096, "update the messages");

int fidbus_key_load(const char *path, uint8_t **key, size_t *len)
{
    if (!path || !key || !len)
        return -EINVAL;
    *key = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO in place of the file must not hang the caller;
     * it is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    /* Checked on the open file, not the path: no window for a swap. */
    uid_t me = geteuid();
    if ((st.st_mode & 077) || (me != 0 && st.st_uid != me && st.st_uid != 0)) {
        rc = -EPERM;
        goto out;
    }
    if (st.st_size > FIDBUS_KEY_MAX + 1) {
        rc = -EFBIG;
        goto out;
    }
    /* One byte more than the limit allows for the newline; one more
     * again to notice a file that grew since fstat. */
    buf = malloc(FIDBUS_KEY_MAX + 2);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    while (n < FIDBUS_KEY_MAX + 2) {
        ssize_t r = read(fd, buf + n, FIDBUS_KEY_MAX + 2 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n && buf[n - 1] == '\n')
        n--;
    if (n > FIDBUS_KEY_MAX)
        rc = -EFBIG;
    else if (n < FIDBUS_KEY_MIN)
        rc = -ENODATA;
out:
    close(fd);
    if (rc < 0) {
        if (buf)
            explicit_bzero(buf, FIDBUS_KEY_MAX + 2);
        free(buf);
        return rc;
    }
    *key = buf;
    *len = n;
    return 0;
}

void fidbus_key_free(uint8_t *key, size_t len)
{
    if (!key)
        return;
    explicit_bzero(key, len);
    free(key);
}

const char *fidbus_key_strerror(int rc)
{
    switch (rc) {
    case -EPERM:
        return "group or other users may access it, or another user owns it (it must "
               "be mode 0600 or 0400, owned by the user reading it or root)";
    case -EINVAL:
        return "not a regular file";
    case -EFBIG:
        return "longer than 4096 bytes";
    case -ENODATA:
        return "shorter than 16 bytes (not counting one trailing newline)";
    default:
        return fidbus_strerror(rc);
    }
}
