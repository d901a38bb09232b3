/*
 * funcID and sighash (<fidbus/funcid.h>).
 *
 * funcID = the first 8 bytes of SHA-256("ns.name@MAJOR.MINOR.PATCH") read
 * big-endian. It is a pure function of the canonical name so that every
 * process, host and restart agrees on it; the loader, the route tables,
 * the control socket and persisted state all name functions by it.
 * Hashing uses OpenSSL's one-shot SHA256(), which is not deprecated in 3.x.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include <fidbus/funcid.h>

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

bool fidbus_name_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        if (n >= FIDBUS_NAME_MAX || !name_char((unsigned char)s[n]))
            return false;
    }
    return n > 0;
}

/* One decimal component: "0" or a non-zero digit followed by digits, fitting
 * uint32 (leading zeros are refused so that one version has one spelling,
 * hence one canonical name and one funcID). */
static const char *parse_component(const char *s, uint32_t *out)
{
    if (*s < '0' || *s > '9')
        return NULL;
    if (*s == '0' && s[1] >= '0' && s[1] <= '9')
        return NULL;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return NULL;
        s++;
    }
    *out = (uint32_t)v;
    return s;
}

int fidbus_semver_parse(const char *s, struct fidbus_semver *out)
{
    struct fidbus_semver v;
    if (!s || strnlen(s, FIDBUS_VERSION_MAX + 1) > FIDBUS_VERSION_MAX)
        return -EINVAL;
    if (!(s = parse_component(s, &v.major)) || *s++ != '.')
        return -EINVAL;
    if (!(s = parse_component(s, &v.minor)) || *s++ != '.')
        return -EINVAL;
    if (!(s = parse_component(s, &v.patch)) || *s != '\0')
        return -EINVAL;
    if (out)
        *out = v;
    return 0;
}

int fidbus_semver_cmp(const struct fidbus_semver *a, const struct fidbus_semver *b)
{
    if (a->major != b->major)
        return a->major < b->major ? -1 : 1;
    if (a->minor != b->minor)
        return a->minor < b->minor ? -1 : 1;
    if (a->patch != b->patch)
        return a->patch < b->patch ? -1 : 1;
    return 0;
}

/* Copies s[0..len) into buf[cap] as a C string when it fits and has no NUL. */
static bool part(const char *s, size_t len, char *buf, size_t cap)
{
    if (len >= cap || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return true;
}

bool fidbus_canonical_valid(const char *s, size_t len)
{
    /* A name holds no '.' or '@', so the first of each splits the three
     * parts; each part is then checked by the rule that made it. */
    char ns[FIDBUS_NAME_MAX + 1], name[FIDBUS_NAME_MAX + 1], ver[FIDBUS_VERSION_MAX + 1];
    if (!s)
        return false;
    const char *dot = memchr(s, '.', len);
    if (!dot)
        return false;
    const char *at = memchr(dot, '@', len - (size_t)(dot - s));
    if (!at)
        return false;
    return part(s, (size_t)(dot - s), ns, sizeof ns) && fidbus_name_valid(ns) &&
           part(dot + 1, (size_t)(at - dot - 1), name, sizeof name) &&
           fidbus_name_valid(name) &&
           part(at + 1, len - (size_t)(at + 1 - s), ver, sizeof ver) &&
           fidbus_semver_parse(ver, NULL) == 0;
}

uint64_t fidbus_funcid(const char *canonical)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)canonical, strlen(canonical), md);
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = (id << 8) | md[i];
    return id;
}

int fidbus_funcid_make(const char *ns, const char *name, const char *version,
                       char *canonical, uint64_t *id)
{
    if (!fidbus_name_valid(ns) || !fidbus_name_valid(name) ||
        fidbus_semver_parse(version, NULL) != 0)
        return -EINVAL;
    /* The limits above guarantee the fit: 64 + 1 + 64 + 1 + 64 + NUL. */
    int n = snprintf(canonical, FIDBUS_CANONICAL_MAX, "%s.%s@%s", ns, name, version);
    if (n < 0 || n >= FIDBUS_CANONICAL_MAX)
        return -EINVAL;
    if (id)
        *id = fidbus_funcid(canonical);
    return 0;
}

static const char hexdig[] = "0123456789abcdef";

void fidbus_funcid_hex(uint64_t id, char *out)
{
    for (int i = 15; i >= 0; i--) {
        out[i] = hexdig[id & 0xf];
        id >>= 4;
    }
    out[16] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int fidbus_funcid_parse(const char *hex, uint64_t *id)
{
    if (!hex)
        return -EINVAL;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int d = hexval(hex[i]);
        if (d < 0)
            return -EINVAL;
        v = (v << 4) | (uint64_t)d;
    }
    if (hex[16] != '\0')
        return -EINVAL;
    if (id)
        *id = v;
    return 0;
}

void fidbus_sighash(const char *signature, uint8_t out[FIDBUS_SIGHASH_LEN])
{
    const char *s = signature ? signature : "";
    SHA256((const unsigned char *)s, strlen(s), out);
}

void fidbus_sighash_hex(const uint8_t hash[FIDBUS_SIGHASH_LEN], char *out)
{
    for (int i = 0; i < FIDBUS_SIGHASH_LEN; i++) {
        out[2 * i] = hexdig[hash[i] >> 4];
        out[2 * i + 1] = hexdig[hash[i] & 0xf];
    }
    out[2 * FIDBUS_SIGHASH_LEN] = '\0';
}

int fidbus_sighash_parse(const char *hex, uint8_t out[FIDBUS_SIGHASH_LEN])
{
    if (!hex)
        return -EINVAL;
    uint8_t tmp[FIDBUS_SIGHASH_LEN];
    for (int i = 0; i < FIDBUS_SIGHASH_LEN; i++) {
        int hi = hexval(hex[2 * i]);
        if (hi < 0)
            return -EINVAL;
        int lo = hexval(hex[2 * i + 1]);
        if (lo < 0)
            return -EINVAL;
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[2 * FIDBUS_SIGHASH_LEN] != '\0')
        return -EINVAL;
    memcpy(out, tmp, sizeof(tmp));
    return 0;
}
