/*
 * state.cbor (state.h): the running set of plugins and routes, kept
 * durable so an acknowledged change survives a restart, kill -9 included.
 *
 * A save is one serialisation into one buffer and one write to
 * state.cbor.tmp, then fdatasync, rename over state.cbor and fsync of the
 * directory (held open between saves): rename is atomic, so after a crash
 * the file is the old state or the new one. A leftover tmp file from a
 * crash is simply removed by the next save.
 *
 * Loading trusts nothing: the whole file must be one CBOR map with nothing
 * after it, and every plugin and route in it goes through the same
 * decoders (spec_cbor.c) as a control-socket request, so a state file can
 * never hold what an operator could not have sent. A file that fails any
 * of this is FIDBUS_INVALID with a reason, for the caller to set aside and
 * log (state.cbor.corrupt-UNIXTIME) before it falls back to the config.
 */
#include "config/state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cbor.h>
#include <openssl/evp.h>

#include <fidbus/proto.h>

#include "base/err.h"
#include "base/log.h"
#include "config/cbor_util.h"
#include "config/spec_cbor.h"
#include "trusted_dir.h"

#define STATE_TMP FB_STATE_FILE ".tmp"
#define STATE_FORMAT 1
/* Far more than any real running set; a bigger file is not ours. */
#define STATE_MAX_BYTES (64u << 20)

struct fb_state_file {
    int dirfd;
    char *dir; /* for messages */
};

/* ------------------------------------------------------------- values */

void fb_runset_clear(struct fb_runset *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->nplugins; i++)
        fb_plugin_conf_clear(&rs->plugins[i]);
    free(rs->plugins);
    for (size_t i = 0; i < rs->nroutes; i++)
        fb_route_spec_clear(&rs->routes[i]);
    free(rs->routes);
    memset(rs, 0, sizeof *rs);
}

int fb_runset_dup(const struct fb_plugin_conf *plugins, size_t nplugins,
                  const struct fb_route_spec *routes, size_t nroutes,
                  struct fb_runset **out)
{
    struct fb_runset *rs = calloc(1, sizeof *rs);
    *out = NULL;
    if (!rs)
        return -ENOMEM;
    rs->plugins = calloc(nplugins ? nplugins : 1, sizeof *rs->plugins);
    rs->routes = calloc(nroutes ? nroutes : 1, sizeof *rs->routes);
    bool ok = rs->plugins && rs->routes;
    for (size_t i = 0; ok && i < nplugins; i++)
        if ((ok = fb_plugin_conf_copy(&rs->plugins[i], &plugins[i]) == 0))
            rs->nplugins++;
    for (size_t i = 0; ok && i < nroutes; i++)
        if ((ok = fb_route_spec_copy(&rs->routes[i], &routes[i]) == 0))
            rs->nroutes++;
    if (!ok) {
        fb_runset_free(rs);
        return -ENOMEM;
    }
    *out = rs;
    return 0;
}

void fb_runset_free(struct fb_runset *rs)
{
    fb_runset_clear(rs);
    free(rs);
}

void fb_state_clear(struct fb_state *st)
{
    if (!st)
        return;
    fb_runset_clear(&st->set);
    fb_runset_clear(&st->base);
    memset(st, 0, sizeof *st);
}

void fb_sha256_hex(const void *data, size_t len, char out[FB_HASH_HEX])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    /* EVP_Digest only fails when libcrypto cannot allocate its context;
     * an empty hash then compares unequal to any real one */
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        out[0] = '\0';
        return;
    }
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* ----------------------------------------------------------- encoding */

/* Bytes of a text item at most: the string and its longest header. */
static size_t text_bound(const char *s)
{
    return (s ? strlen(s) : 0) + 9;
}

/*
 * An upper bound of the encoded size, so the file is serialised once into
 * a buffer that holds it (libcbor 0.8 cannot say the size in advance, and
 * cbor_serialize_alloc serialises again each time its buffer doubles).
 * The constants cover each map's keys, headers and integers.
 */
static size_t runset_bound(const struct fb_runset *rs)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->nplugins; i++) {
        const struct fb_plugin_conf *pc = &rs->plugins[i];
        n += 64 + text_bound(pc->name) + text_bound(pc->path);
        for (size_t j = 0; j < pc->nkeys; j++)
            n += text_bound(pc->keys[j].key) + text_bound(pc->keys[j].value);
    }
    for (size_t i = 0; i < rs->nroutes; i++) {
        const struct fb_route_spec *r = &rs->routes[i];
        n += 128 + text_bound(r->name) + text_bound(r->event) + text_bound(r->split_by) +
             text_bound(r->signature);
        for (size_t j = 0; j < r->ntags; j++)
            n += text_bound(r->tags[j].key) + text_bound(r->tags[j].value);
        for (size_t j = 0; j < r->nto; j++)
            n += text_bound(r->to[j].ns) + text_bound(r->to[j].name) +
                 text_bound(r->to[j].version) + 16;
    }
    return n;
}

static size_t encoded_bound(const struct fb_state *st)
{
    /* 256: the top-level keys, hash, numbers, headers */
    return 256 + runset_bound(&st->set) + (st->has_base ? runset_bound(&st->base) : 0);
}

/* {"plugins": [...], "routes": [...]} of rs into map (the top level or
 * "base"). false on allocation failure. */
static bool put_runset(cbor_item_t *map, const struct fb_runset *rs)
{
    cbor_item_t *plugins = cbor_new_definite_array(rs->nplugins);
    cbor_item_t *routes = cbor_new_definite_array(rs->nroutes);
    bool ok = plugins && routes;
    for (size_t i = 0; ok && i < rs->nplugins; i++)
        ok = fb_cbor_push(plugins, fb_plugin_conf_to_cbor(&rs->plugins[i]));
    for (size_t i = 0; ok && i < rs->nroutes; i++)
        ok = fb_cbor_push(routes, fb_route_to_cbor(&rs->routes[i]));
    if (ok) {
        ok = fb_cbor_put(map, "plugins", plugins);
        plugins = NULL;
    }
    if (ok) {
        ok = fb_cbor_put(map, "routes", routes);
        routes = NULL;
    }
    if (plugins)
        cbor_decref(&plugins);
    if (routes)
        cbor_decref(&routes);
    return ok;
}

int fb_state_encode(const struct fb_state *st, uint8_t **out, size_t *outlen)
{
    cbor_item_t *root = cbor_new_definite_map(st->has_base ? 7 : 6);
    bool ok = root != NULL;

    *out = NULL;
    *outlen = 0;
    ok = ok && fb_cbor_put(root, "format", fb_cbor_uint(STATE_FORMAT));
    ok = ok && fb_cbor_put(root, "config_hash", cbor_build_string(st->config_hash));
    ok = ok && fb_cbor_put(root, "generation", fb_cbor_uint(st->generation));
    ok = ok && fb_cbor_put(root, "written_at", fb_cbor_int(st->written_at));
    ok = ok && put_runset(root, &st->set);
    if (ok && st->has_base) {
        cbor_item_t *base = cbor_new_definite_map(2);
        ok = base && put_runset(base, &st->base);
        if (ok)
            ok = fb_cbor_put(root, "base", base);
        else if (base)
            cbor_decref(&base);
    }
    if (!ok) {
        if (root)
            cbor_decref(&root);
        return -ENOMEM;
    }

    size_t cap = encoded_bound(st);
    unsigned char *buf = malloc(cap);
    size_t n = buf ? cbor_serialize(root, buf, cap) : 0;
    if (buf && n == 0) {
        /* the bound was wrong after all: let libcbor grow the buffer */
        free(buf);
        buf = NULL;
        n = cbor_serialize_alloc(root, &buf, &cap);
    }
    cbor_decref(&root);
    if (n == 0) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *outlen = n;
    return 0;
}

/* ----------------------------------------------------------- decoding */

enum state_key {
    SK_FORMAT,
    SK_HASH,
    SK_GENERATION,
    SK_WRITTEN_AT,
    SK_PLUGINS,
    SK_ROUTES,
    SK_BASE, /* optional: an older daemon's file has none */
    SK__COUNT
};

static const char *const state_keys[SK__COUNT] = {
    [SK_FORMAT] = "format",
    [SK_HASH] = "config_hash",
    [SK_GENERATION] = "generation",
    [SK_WRITTEN_AT] = "written_at",
    [SK_PLUGINS] = "plugins",
    [SK_ROUTES] = "routes",
    [SK_BASE] = "base",
};

/* Whether a CBOR text key (definite or chunked) is exactly s. */
static bool key_eq(const cbor_item_t *key, const char *s)
{
    if (!cbor_isa_string(key))
        return false;
    size_t want = strlen(s), at = 0;
    cbor_item_t *self = (cbor_item_t *)key;
    cbor_item_t *const *chunks = &self;
    size_t nchunks = 1;
    if (!cbor_string_is_definite(key)) {
        chunks = cbor_string_chunks_handle(key);
        nchunks = cbor_string_chunk_count(key);
    }
    for (size_t i = 0; i < nchunks; i++) {
        size_t n = cbor_string_length(chunks[i]);
        if (n > want - at || (n && memcmp(cbor_string_handle(chunks[i]), s + at, n) != 0))
            return false;
        at += n;
    }
    return at == want;
}

static int decode_plugins(const cbor_item_t *arr, struct fb_runset *rs, char *err,
                          size_t errlen)
{
    if (!cbor_isa_array(arr)) {
        fb_set_err(err, errlen, "'plugins' is not an array");
        return FIDBUS_INVALID;
    }
    size_t n = cbor_array_size(arr);
    cbor_item_t **items = cbor_array_handle(arr);
    if (n == 0)
        return 0;
    rs->plugins = calloc(n, sizeof *rs->plugins);
    if (!rs->plugins) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct fb_plugin_conf *pc = &rs->plugins[rs->nplugins];
        int rc = fb_plugin_conf_from_cbor(items[i], pc, err, errlen);
        if (rc)
            return rc;
        rs->nplugins++;
        /* a running instance always has a name: the daemon picked one */
        if (!pc->name) {
            fb_set_err(err, errlen, "plugin %zu (path %.200s) has no name", i + 1,
                       pc->path);
            return FIDBUS_INVALID;
        }
        for (size_t j = 0; j + 1 < rs->nplugins; j++) {
            if (strcmp(rs->plugins[j].name, pc->name) == 0) {
                fb_set_err(err, errlen, "plugin '%s' appears twice", pc->name);
                return FIDBUS_INVALID;
            }
        }
    }
    return 0;
}

static int decode_routes(const cbor_item_t *arr, struct fb_runset *rs, char *err,
                         size_t errlen)
{
    if (!cbor_isa_array(arr)) {
        fb_set_err(err, errlen, "'routes' is not an array");
        return FIDBUS_INVALID;
    }
    size_t n = cbor_array_size(arr);
    cbor_item_t **items = cbor_array_handle(arr);
    if (n == 0)
        return 0;
    rs->routes = calloc(n, sizeof *rs->routes);
    if (!rs->routes) {
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct fb_route_spec *r = &rs->routes[rs->nroutes];
        int rc = fb_route_from_cbor(items[i], r, err, errlen);
        if (rc)
            return rc;
        rs->nroutes++;
        for (size_t j = 0; j + 1 < rs->nroutes; j++) {
            if (strcmp(rs->routes[j].name, r->name) == 0) {
                fb_set_err(err, errlen, "route '%s' appears twice", r->name);
                return FIDBUS_INVALID;
            }
        }
    }
    return 0;
}

static int decode_value(enum state_key k, const cbor_item_t *v, struct fb_state *out,
                        char *err, size_t errlen)
{
    switch (k) {
    case SK_FORMAT:
        if (!cbor_isa_uint(v)) {
            fb_set_err(err, errlen, "'format' is not an unsigned integer");
            return FIDBUS_INVALID;
        }
        if (cbor_get_int(v) != STATE_FORMAT) {
            fb_set_err(err, errlen,
                       "format %" PRIu64 " is not supported (this daemon reads %d)",
                       cbor_get_int(v), STATE_FORMAT);
            return FIDBUS_INVALID;
        }
        return 0;
    case SK_HASH:
        if (!cbor_isa_string(v) || !cbor_string_is_definite(v) ||
            cbor_string_length(v) != FB_HASH_HEX - 1) {
            fb_set_err(err, errlen, "'config_hash' is not 64 hex digits");
            return FIDBUS_INVALID;
        }
        memcpy(out->config_hash, cbor_string_handle(v), FB_HASH_HEX - 1);
        out->config_hash[FB_HASH_HEX - 1] = '\0';
        if (!fb_sighash_valid(out->config_hash)) {
            fb_set_err(err, errlen, "'config_hash' is not 64 hex digits");
            return FIDBUS_INVALID;
        }
        return 0;
    case SK_GENERATION:
        if (!cbor_isa_uint(v)) {
            fb_set_err(err, errlen, "'generation' is not an unsigned integer");
            return FIDBUS_INVALID;
        }
        out->generation = cbor_get_int(v);
        return 0;
    case SK_WRITTEN_AT:
        if (!fb_cbor_get_int64(v, &out->written_at)) {
            fb_set_err(err, errlen, "'written_at' is not a 64-bit integer");
            return FIDBUS_INVALID;
        }
        return 0;
    case SK_PLUGINS:
        return decode_plugins(v, &out->set, err, errlen);
    case SK_ROUTES:
        return decode_routes(v, &out->set, err, errlen);
    case SK_BASE: {
        if (!cbor_isa_map(v)) {
            fb_set_err(err, errlen, "'base' is not a map");
            return FIDBUS_INVALID;
        }
        const cbor_item_t *bp = NULL, *br = NULL;
        struct cbor_pair *kv = cbor_map_handle(v);
        for (size_t i = 0; i < cbor_map_size(v); i++) {
            if (key_eq(kv[i].key, "plugins") && !bp)
                bp = kv[i].value;
            else if (key_eq(kv[i].key, "routes") && !br)
                br = kv[i].value;
            else {
                fb_set_err(err, errlen, "'base' holds a key other than plugins, routes");
                return FIDBUS_INVALID;
            }
        }
        if (!bp || !br) {
            fb_set_err(err, errlen, "'base' lacks plugins or routes");
            return FIDBUS_INVALID;
        }
        char why[400];
        int rc = decode_plugins(bp, &out->base, why, sizeof why);
        if (rc == 0)
            rc = decode_routes(br, &out->base, why, sizeof why);
        if (rc)
            fb_set_err(err, errlen, "'base': %s", why);
        out->has_base = rc == 0;
        return rc;
    }
    default:
        return 0;
    }
}

int fb_state_decode(const uint8_t *buf, size_t len, struct fb_state *out, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        fb_set_err(err, errlen, "empty file");
        return FIDBUS_INVALID;
    }

    struct cbor_load_result res;
    cbor_item_t *root = fb_cbor_load(buf, len, FB_CBOR_LOAD_DEPTH, &res);
    if (!root) {
        switch (res.error.code) {
        case CBOR_ERR_NOTENOUGHDATA:
            fb_set_err(err, errlen, "truncated at byte %zu", len);
            return FIDBUS_INVALID;
        case CBOR_ERR_MEMERROR:
            /* a real shortage (sizes no bytes back were refused as
             * malformed above): do not have a good file set aside */
            fb_set_err(err, errlen, "out of memory decoding %zu bytes", len);
            return -ENOMEM;
        default:
            fb_set_err(err, errlen, "not CBOR (malformed at byte %zu)",
                       res.error.position);
            return FIDBUS_INVALID;
        }
    }

    int rc = 0;
    if (res.read != len) {
        fb_set_err(err, errlen, "not CBOR: trailing data after byte %zu of %zu", res.read,
                   len);
        rc = FIDBUS_INVALID;
        goto out;
    }
    if (!cbor_isa_map(root)) {
        fb_set_err(err, errlen, "not a state file: the top level is not a map");
        rc = FIDBUS_INVALID;
        goto out;
    }

    /* Collected first, then read in state_keys order, format first: a
     * newer daemon's file is refused for its version, not for whatever
     * else that version changed. */
    size_t n = cbor_map_size(root);
    struct cbor_pair *pairs = cbor_map_handle(root);
    const cbor_item_t *vals[SK__COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < SK__COUNT; k++) {
            if (!key_eq(pairs[i].key, state_keys[k]))
                continue;
            if (vals[k]) {
                fb_set_err(err, errlen, "key '%s' appears twice", state_keys[k]);
                rc = FIDBUS_INVALID;
                goto out;
            }
            vals[k] = pairs[i].value;
        }
    }
    for (int k = 0; k < SK__COUNT; k++) {
        if (!vals[k] && k == SK_BASE)
            continue;
        if (!vals[k]) {
            fb_set_err(err, errlen, "missing '%s'", state_keys[k]);
            rc = FIDBUS_INVALID;
            goto out;
        }
        rc = decode_value((enum state_key)k, vals[k], out, err, errlen);
        if (rc)
            goto out;
    }

out:
    cbor_decref(&root);
    if (rc)
        fb_state_clear(out);
    return rc;
}

/* --------------------------------------------------------------- file */

int fb_state_open(const char *state_dir, struct fb_state_file **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    if (mkdir(state_dir, 0750) != 0 && errno != EEXIST) {
        int e = errno;
        fb_set_err(err, errlen, "%s: cannot create: %s", state_dir, strerror(e));
        return -e;
    }
    /* A state dir another user can write could hold their state.cbor,
     * naming their plugin: trusted_dir.h refuses it. */
    int fd = fb_trusted_dir_open(state_dir, 0, err, errlen);
    if (fd < 0)
        return fd;
    struct fb_state_file *sf = calloc(1, sizeof *sf);
    if (!sf || !(sf->dir = strdup(state_dir))) {
        free(sf);
        close(fd);
        fb_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    sf->dirfd = fd;
    *out = sf;
    return 0;
}

struct fb_state_file *fb_state_close(struct fb_state_file *sf)
{
    if (!sf)
        return NULL;
    close(sf->dirfd);
    free(sf->dir);
    free(sf);
    return NULL;
}

/*
 * The whole of fd into *buf (malloc'd). Reads to EOF rather than trusting
 * the size fstat gave, in case the file changed meanwhile. 0, 1 when it
 * is over max bytes, or -errno.
 */
static int read_all(int fd, size_t hint, size_t max, uint8_t **buf, size_t *len)
{
    size_t cap = hint + 1, n = 0; /* +1: EOF is seen without a realloc */
    uint8_t *b = malloc(cap);
    if (!b)
        return -ENOMEM;
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                free(b);
                return 1;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            uint8_t *nb = realloc(b, ncap);
            if (!nb) {
                free(b);
                return -ENOMEM;
            }
            b = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(b);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        free(b);
        return 1;
    }
    *buf = b;
    *len = n;
    return 0;
}

int fb_state_load(struct fb_state_file *sf, struct fb_state *out, char *err,
                  size_t errlen)
{
    memset(out, 0, sizeof *out);
    /* O_NONBLOCK: a FIFO in its place must not hang the start (it is not
     * a regular file, so corrupt, below); O_NOFOLLOW: nor is a symlink
     * followed to whatever it names. A socket fails with ENXIO. */
    int fd = openat(sf->dirfd, FB_STATE_FILE,
                    O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP || e == ENXIO) {
            fb_set_err(err, errlen, "%s/%s: not a regular file", sf->dir, FB_STATE_FILE);
            return FIDBUS_INVALID;
        }
        fb_set_err(err, errlen, "%s/%s: cannot open: %s", sf->dir, FB_STATE_FILE,
                   strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        fb_set_err(err, errlen, "%s/%s: cannot stat: %s", sf->dir, FB_STATE_FILE,
                   strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        fb_set_err(err, errlen, "%s/%s: not a regular file", sf->dir, FB_STATE_FILE);
        return FIDBUS_INVALID;
    }
    /* A state file names plugins to load: one another user could have
     * written is refused, not restored (nor set aside: it is not ours). */
    char reason[300];
    if (fb_trust_stat(&st, false, reason, sizeof reason) != FB_TRUST_OK) {
        close(fd);
        fb_set_err(err, errlen, "%s/%s: refusing to restore it: %s", sf->dir,
                   FB_STATE_FILE, reason);
        return -EPERM;
    }
    if ((uint64_t)st.st_size > STATE_MAX_BYTES) {
        close(fd);
        fb_set_err(err, errlen,
                   "%s/%s: %lld bytes, more than the %u MiB a state file may be", sf->dir,
                   FB_STATE_FILE, (long long)st.st_size, STATE_MAX_BYTES >> 20);
        return FIDBUS_INVALID;
    }

    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = read_all(fd, (size_t)st.st_size, STATE_MAX_BYTES, &buf, &len);
    close(fd);
    if (rc == 1) {
        fb_set_err(err, errlen, "%s/%s: more than the %u MiB a state file may be",
                   sf->dir, FB_STATE_FILE, STATE_MAX_BYTES >> 20);
        return FIDBUS_INVALID;
    }
    if (rc < 0) {
        fb_set_err(err, errlen, "%s/%s: cannot read: %s", sf->dir, FB_STATE_FILE,
                   strerror(-rc));
        return rc;
    }

    char why[512];
    rc = fb_state_decode(buf, len, out, why, sizeof why);
    free(buf);
    if (rc)
        fb_set_err(err, errlen, "%s/%s: %s", sf->dir, FB_STATE_FILE, why);
    return rc;
}

static int save_failed(struct fb_state_file *sf, int fd, const char *step, int e,
                       char *err, size_t errlen)
{
    if (fd >= 0)
        close(fd);
    unlinkat(sf->dirfd, STATE_TMP, 0);
    fb_set_err(err, errlen, "%s/%s: %s: %s", sf->dir, STATE_TMP, step, strerror(e));
    return -e;
}

int fb_state_save(struct fb_state_file *sf, const struct fb_state *st, char *err,
                  size_t errlen)
{
    uint8_t *buf;
    size_t len;
    int rc = fb_state_encode(st, &buf, &len);
    if (rc) {
        fb_set_err(err, errlen, "%s/%s: encoding: %s", sf->dir, FB_STATE_FILE,
                   strerror(-rc));
        return rc;
    }

    /* A fresh file every time (O_EXCL after the unlink): a leftover tmp
     * file, or anything planted at the tmp name, is neither written
     * through nor renamed into place with its owner and mode. */
    unlinkat(sf->dirfd, STATE_TMP, 0);
    int fd = openat(sf->dirfd, STATE_TMP,
                    O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        int e = errno;
        free(buf);
        return save_failed(sf, -1, "create", e, err, errlen);
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            free(buf);
            return save_failed(sf, fd, "write", e, err, errlen);
        }
        off += (size_t)w;
    }
    free(buf);
    if (fdatasync(fd) != 0)
        return save_failed(sf, fd, "fdatasync", errno, err, errlen);
    /* Linux closes the fd even when close reports EINTR */
    if (close(fd) != 0 && errno != EINTR)
        return save_failed(sf, -1, "close", errno, err, errlen);
    if (renameat(sf->dirfd, STATE_TMP, sf->dirfd, FB_STATE_FILE) != 0)
        return save_failed(sf, -1, "rename to " FB_STATE_FILE, errno, err, errlen);
    /* The new state is in place and a restart reads it, so the change
     * stands (failing it now would leave state.cbor saying otherwise);
     * only its survival across a power cut is in doubt: say so. */
    if (fsync(sf->dirfd) != 0)
        fb_warn("%s: fsync of the state dir failed (%s): the last change may not "
                "survive a power cut",
                sf->dir, strerror(errno));
    return 0;
}

/* Renames (or, with keep, hard-links) state.cbor to a fresh KIND name. */
static int aside(struct fb_state_file *sf, const char *kind, bool keep, char *newname,
                 size_t len)
{
    if (!kind || !*kind || strlen(kind) > 32)
        return -EINVAL;
    for (const char *s = kind; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return -EINVAL;

    long long now = (long long)time(NULL);
    char name[96];
    for (int i = 0; i < 10000; i++) {
        if (i == 0)
            snprintf(name, sizeof name, "%s.%s-%lld", FB_STATE_FILE, kind, now);
        else
            snprintf(name, sizeof name, "%s.%s-%lld-%d", FB_STATE_FILE, kind, now, i);
        int r;
        if (keep) {
            /* linkat never replaces an existing name either */
            r = linkat(sf->dirfd, FB_STATE_FILE, sf->dirfd, name, 0);
        } else {
            /* NOREPLACE: never overwrite an earlier backup, even in a race */
            r = renameat2(sf->dirfd, FB_STATE_FILE, sf->dirfd, name, RENAME_NOREPLACE);
            if (r != 0 && (errno == EINVAL || errno == ENOSYS)) {
                /* a file system without RENAME_NOREPLACE: check, then rename */
                struct stat st;
                if (fstatat(sf->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                    continue;
                r = renameat(sf->dirfd, FB_STATE_FILE, sf->dirfd, name);
            }
        }
        if (r == 0) {
            fsync(sf->dirfd); /* best effort: the rename is what matters */
            if (newname && len)
                snprintf(newname, len, "%s", name);
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

int fb_state_set_aside(struct fb_state_file *sf, const char *kind, char *newname,
                       size_t len)
{
    return aside(sf, kind, false, newname, len);
}

int fb_state_link_aside(struct fb_state_file *sf, const char *kind, char *newname,
                        size_t len)
{
    return aside(sf, kind, true, newname, len);
}

void fb_state_drop_aside(struct fb_state_file *sf, const char *name)
{
    if (name && *name)
        unlinkat(sf->dirfd, name, 0);
}
