/*
 * state.cbor: the daemon's running set (plugins and routes, as an operator
 * would write them) kept durable across restarts, kill -9 included
 * (proto/control.md, "state.cbor").
 *
 * Every change the control socket acknowledges is saved here before its
 * REPLY: written to state.cbor.tmp, fdatasync'd, renamed over state.cbor,
 * and the directory fsync'd, so after a crash the file is either the old
 * state or the new one, never a mix. The directory stays open between
 * saves, so a save costs one write, two syncs and a rename.
 *
 * The file is one CBOR map:
 *   {"format": 1, "config_hash": "<sha256 hex of the config file's bytes>",
 *    "generation": uint, "written_at": unix seconds,
 *    "plugins": [plugin maps], "routes": [route maps],
 *    "base": {"plugins": [...], "routes": [...]}}
 * with plugin and route maps as spec_cbor.h gives them (the control
 * socket's shapes). "base" is the config the daemon last applied (the
 * BASE of config/merge.h), so a start after an edit of the file can tell
 * what the edit changed; a file without it (an older daemon's) is still
 * valid, and then the config is applied whole. Unknown top-level keys are ignored (a
 * newer daemon may add some); a format other than 1, a missing key, or anything
 * spec_cbor.h refuses makes the whole file invalid.
 */
#ifndef FB_STATE_H
#define FB_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "config/route_spec.h"

#define FB_STATE_FILE "state.cbor"
#define FB_HASH_HEX 65 /* 64 hex digits and NUL */

/* What the daemon runs, in the shapes a config file gives it. */
struct fb_runset {
    struct fb_plugin_conf *plugins; /* load order */
    size_t nplugins;
    struct fb_route_spec *routes;
    size_t nroutes;
};

/* Frees what rs owns and zeroes it. */
void fb_runset_clear(struct fb_runset *rs);
/* A deep copy of the given items into *out (malloc'd); 0 or -ENOMEM.
 * And its release (NULL-safe). */
int fb_runset_dup(const struct fb_plugin_conf *plugins, size_t nplugins,
                  const struct fb_route_spec *routes, size_t nroutes,
                  struct fb_runset **out);
void fb_runset_free(struct fb_runset *rs);

struct fb_state {
    struct fb_runset set;
    struct fb_runset base; /* the config last applied (config/merge.h) */
    bool has_base;         /* false: a state without "base" */
    char config_hash[FB_HASH_HEX];
    uint64_t generation;
    int64_t written_at;
};

void fb_state_clear(struct fb_state *st);

/* SHA-256 of len bytes as 64 lowercase hex digits. */
void fb_sha256_hex(const void *data, size_t len, char out[FB_HASH_HEX]);

/* The encoded file; 0 with *out malloc'd, or -ENOMEM. */
int fb_state_encode(const struct fb_state *st, uint8_t **out, size_t *outlen);
/* Parses a whole file's bytes into *out (zeroed first). 0, or
 * FIDBUS_INVALID with a reason in err (truncated, not CBOR, bad shape,
 * a route or plugin the decoders refuse), or -ENOMEM. */
int fb_state_decode(const uint8_t *buf, size_t len, struct fb_state *out, char *err,
                    size_t errlen);

struct fb_state_file;

/* Opens (creating it 0750 if missing) the state dir. 0 or -errno with err;
 * -EPERM when the dir is not trusted (owned by another user than the
 * effective uid and root, or group/other-writable: trusted_dir.h). */
int fb_state_open(const char *state_dir, struct fb_state_file **out, char *err,
                  size_t errlen);
/* NULL-safe; returns NULL. */
struct fb_state_file *fb_state_close(struct fb_state_file *sf);

/*
 * Reads state.cbor. 0 with *out filled; -ENOENT when there is none;
 * FIDBUS_INVALID with err when it is corrupt or truncated, or not a
 * regular file (a FIFO, socket or symlink in its place; never followed or
 * waited on): the caller sets it aside; -EPERM with err when another user
 * than the effective uid and root owns it or group/others may write it
 * (never restored, nor set aside); another -errno with err on an I/O error.
 */
int fb_state_load(struct fb_state_file *sf, struct fb_state *out, char *err,
                  size_t errlen);

/*
 * Saves st atomically and durably (tmp file, write, fdatasync, rename,
 * fsync of the dir). On failure state.cbor is left as it was, the tmp file
 * removed, and -errno returned with err naming the step. A failed fsync of
 * the dir after the rename is only logged: state.cbor already holds st.
 */
int fb_state_save(struct fb_state_file *sf, const struct fb_state *st, char *err,
                  size_t errlen);

/*
 * Renames state.cbor to state.cbor.KIND-UNIXTIME ("corrupt" or "bak"),
 * adding -1, -2... if that name exists. Writes the new file name (not the
 * dir) to newname. 0, -ENOENT if there is no state file, or -errno.
 */
int fb_state_set_aside(struct fb_state_file *sf, const char *kind, char *newname,
                       size_t len);
/*
 * The same name as fb_state_set_aside, but a hard link: state.cbor stays in
 * place until a save replaces it, so a start that fails after this keeps
 * it as it was (fb_state_drop_aside removes the link again). 0, -ENOENT,
 * or -errno (-EPERM, -EOPNOTSUPP where the file system has no hard links:
 * the caller may rename instead).
 */
int fb_state_link_aside(struct fb_state_file *sf, const char *kind, char *newname,
                        size_t len);
/* Removes the name fb_state_link_aside made. */
void fb_state_drop_aside(struct fb_state_file *sf, const char *name);

#endif
