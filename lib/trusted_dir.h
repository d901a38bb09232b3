/*
 * Trusted directories and files: what fidbusd and fidbusctl accept as a
 * place to keep sockets, state and plugin copies, or to look for a bus.
 *
 * A directory that another user can write lets that user plant what the
 * daemon then trusts (a state file naming their plugin, a socket a client
 * talks to), so a directory is only used when it is owned by the effective
 * uid or by root and neither group nor others can write it. Only the
 * directory itself is judged, not its ancestors: a sticky ancestor such as
 * /tmp lets others create names next to ours, not replace ours. Every
 * check is made on an opened descriptor (O_NOFOLLOW, then fstat), never on
 * a path that could change between the check and the use.
 */
#ifndef FB_TRUSTED_DIR_H
#define FB_TRUSTED_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

enum fb_trust {
    FB_TRUST_OK = 0,
    FB_TRUST_OWNER, /* owned by neither the effective uid nor root */
    FB_TRUST_MODE,  /* group or others may write it */
};

/*
 * Judges an fstat result: FB_TRUST_OWNER, FB_TRUST_MODE or FB_TRUST_OK.
 * With sticky_ok, a sticky directory that others may write is fine (the
 * sticky bit keeps them from renaming or removing what is not theirs).
 * why (may be NULL) gets the reason and the fix as one phrase, without
 * the path, e.g. "owned by uid 65534, not by uid 0 or root: remove it or
 * chown it".
 */
enum fb_trust fb_trust_stat(const struct stat *st, bool sticky_ok, char *why,
                            size_t whylen);

/*
 * Opens directory path (O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) and checks
 * the open descriptor with fb_trust_stat. With create_mode != 0, missing
 * components are made first (the last one with create_mode, the ones
 * before it 0755, as mkdir -p; the umask applies). Returns the descriptor
 * (the caller closes it), or -EPERM for a directory that is not trusted
 * and another negative errno when it cannot be made or opened; then why
 * holds one line that names the path, says why and how to fix it.
 */
int fb_trusted_dir_open(const char *path, mode_t create_mode, char *why, size_t whylen);

#endif
