/*
 * funcID and sighash: how a function is named by number.
 *
 *   canonical = namespace "." name "@" MAJOR.MINOR.PATCH
 *   funcID    = first 8 bytes of SHA-256(canonical), big-endian uint64
 *   sighash   = SHA-256(signature)
 *
 * The ID is deterministic so the same function has the same ID in every
 * process, on every host and across restarts. SHA-256 comes from OpenSSL's
 * libcrypto.
 */
#ifndef FIDBUS_FUNCID_H
#define FIDBUS_FUNCID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fidbus/export.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FIDBUS_NAME_MAX 64    /* namespace and name: 1-64 bytes */
#define FIDBUS_VERSION_MAX 64 /* text of a semantic version */
/* "ns" "." "name" "@" version, plus NUL */
#define FIDBUS_CANONICAL_MAX (FIDBUS_NAME_MAX * 2 + FIDBUS_VERSION_MAX + 3)
#define FIDBUS_SIGHASH_LEN 32
#define FIDBUS_FUNCID_HEX 17  /* 16 hex digits + NUL */
#define FIDBUS_SIGHASH_HEX 65 /* 64 hex digits + NUL */

/* A parsed MAJOR.MINOR.PATCH (no pre-release or build suffix). */
struct fidbus_semver {
    uint32_t major, minor, patch;
};

/* 1-64 bytes of [A-Za-z0-9_-]. */
FIDBUS_API bool fidbus_name_valid(const char *s);
/* Strict MAJOR.MINOR.PATCH, decimal, no leading zeros. Returns 0 or -EINVAL. */
FIDBUS_API int fidbus_semver_parse(const char *s, struct fidbus_semver *out);
/* <0, 0, >0 like strcmp. */
FIDBUS_API int fidbus_semver_cmp(const struct fidbus_semver *a,
                                 const struct fidbus_semver *b);

/*
 * Validates ns, name and version, writes the canonical name into
 * canonical[FIDBUS_CANONICAL_MAX] and the funcID into *id.
 * Returns 0 or -EINVAL.
 */
FIDBUS_API int fidbus_funcid_make(const char *ns, const char *name, const char *version,
                                  char *canonical, uint64_t *id);
/*
 * Is s[0..len) a canonical name, "ns.name@MAJOR.MINOR.PATCH", with ns and
 * name each fidbus_name_valid and a strict version? (No NUL needed.)
 */
FIDBUS_API bool fidbus_canonical_valid(const char *s, size_t len);
/* funcID of an already-canonical name (no validation). */
FIDBUS_API uint64_t fidbus_funcid(const char *canonical);
/* 16 lowercase hex digits + NUL into out[FIDBUS_FUNCID_HEX]. */
FIDBUS_API void fidbus_funcid_hex(uint64_t id, char *out);
/* Parses 16 hex digits. Returns 0 or -EINVAL. */
FIDBUS_API int fidbus_funcid_parse(const char *hex, uint64_t *id);

/* SHA-256 of the signature text. */
FIDBUS_API void fidbus_sighash(const char *signature, uint8_t out[FIDBUS_SIGHASH_LEN]);
/* 64 lowercase hex digits + NUL into out[FIDBUS_SIGHASH_HEX]. */
FIDBUS_API void fidbus_sighash_hex(const uint8_t hash[FIDBUS_SIGHASH_LEN], char *out);
/* Parses 64 hex digits (either case). Returns 0 or -EINVAL. */
FIDBUS_API int fidbus_sighash_parse(const char *hex, uint8_t out[FIDBUS_SIGHASH_LEN]);

#ifdef __cplusplus
}
#endif
#endif
