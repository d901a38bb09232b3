/*
 * Trusted directories (trusted_dir.h): mkdir -p, then open and judge the
 * descriptor. The judging is separate from the opening so the state file
 * and the plugin loader can apply it to files they opened themselves.
 */
#include "trusted_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum fb_trust fb_trust_stat(const struct stat *st, bool sticky_ok, char *why,
                            size_t whylen)
{
    uid_t me = geteuid();
    if (st->st_uid != me && st->st_uid != 0) {
        if (why && whylen)
            snprintf(why, whylen,
                     "owned by uid %u, not by this process's user (uid %u) or root: "
                     "another user may have planted it; remove it, or chown it",
                     (unsigned)st->st_uid, (unsigned)me);
        return FB_TRUST_OWNER;
    }
    bool sticky = sticky_ok && S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX);
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !sticky) {
        if (why && whylen)
            snprintf(why, whylen,
                     "group or other users may write it (mode %04o): another user may "
                     "have planted what is in it; remove it, or chmod go-w it",
                     (unsigned)(st->st_mode & 07777));
        return FB_TRUST_MODE;
    }
    return FB_TRUST_OK;
}

/* mkdir -p: every missing component, the last one with mode. */
static int make_path(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int fb_trusted_dir_open(const char *path, mode_t create_mode, char *why, size_t whylen)
{
    if (create_mode) {
        int rc = make_path(path, create_mode);
        if (rc < 0) {
            snprintf(why, whylen, "%s: cannot create: %s", path, strerror(-rc));
            return rc;
        }
    }
    /* O_NOFOLLOW: a symlink planted in place of the directory is refused
     * (ELOOP, or ENOTDIR with O_DIRECTORY), never followed. */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat lst;
        if ((e == ELOOP || e == ENOTDIR) && lstat(path, &lst) == 0 &&
            S_ISLNK(lst.st_mode))
            snprintf(why, whylen,
                     "%s: is a symbolic link, which is not followed: remove it, or "
                     "give the real directory",
                     path);
        else
            snprintf(why, whylen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        snprintf(why, whylen, "%s: cannot stat: %s", path, strerror(e));
        return -e;
    }
    char reason[300];
    if (fb_trust_stat(&st, false, reason, sizeof reason) != FB_TRUST_OK) {
        close(fd);
        snprintf(why, whylen, "%s: refusing to use it: %s", path, reason);
        return -EPERM;
    }
    return fd;
}
