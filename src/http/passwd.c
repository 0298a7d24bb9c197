/*
 * passwd.c - password files in the format of mosquitto_passwd.
 *
 * One `user:hash` line per user; the user name ends at the first ':'.
 * Two hash forms, with base64 (RFC 4648, padded) fields:
 *
 *   alice:$7$101$p+2B9sUT/T72DBgO$DC2OFF...Ljg==
 *          |  |   |                 '- 64 bytes: PBKDF2-HMAC-SHA512(password,
 *          |  |   '- salt (raw bytes once decoded)           salt, iterations)
 *          |  '- iterations
 *          '- sha512-pbkdf2 (mosquitto_passwd's default since 2.0)
 *
 *   carol:$6$R6LiuS8LlsJ/Me/Q$mrybZR...JQg==
 *          '- sha512: the hash is SHA512(password || salt)
 *
 * Plain-text passwords are refused at load. Hashes are compared in
 * constant time. The file is read once (auth_new); the user index is a map.
 */
#include "auth_int.h"

#include "starling/err.h"
#include "starling/map.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH_LEN 64
#define SALT_MAX 64
#define MAX_ITERATIONS 10000000L

typedef struct pw_entry {
    int type; /* 6 or 7 */
    long iterations;
    uint8_t salt[SALT_MAX];
    size_t salt_len;
    uint8_t hash[HASH_LEN];
} pw_entry_t;

struct passwd {
    map_t *users; /* user name -> pw_entry_t */
};

/* --- parsing a hash field ------------------------------------------------- */

/* Decode base64 text of n characters into out (cap bytes); the decoded
 * length, or -1 when the text is not base64 or does not fit. */
static long b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap + 2)
        return -1;
    uint8_t buf[SALT_MAX + HASH_LEN + 4];
    if (n / 4 * 3 > sizeof(buf))
        return -1;
    int len = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n);
    if (len < 0)
        return -1;
    size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    if ((size_t)len < pad || (size_t)len - pad > cap)
        return -1;
    memcpy(out, buf, (size_t)len - pad);
    return (long)((size_t)len - pad);
}

/* Split "$T$a$b[$c]" after the type: the fields between '$'. */
static int split_fields(const char *s, const char **f, size_t *flen, int want)
{
    int k = 0;
    while (k < want) {
        const char *end = strchr(s, '$');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        f[k] = s;
        flen[k++] = n;
        if (!end)
            break;
        s = end + 1;
    }
    return k == want && !strchr(f[want - 1], '$') ? SL_OK : SL_EINVAL;
}

static int parse_iterations(const char *s, size_t n, long *out)
{
    char buf[16];
    if (n == 0 || n >= sizeof(buf))
        return SL_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end || errno || v < 1 || v > MAX_ITERATIONS)
        return SL_EINVAL;
    *out = v;
    return SL_OK;
}

static int parse_field(const char *field, pw_entry_t *e)
{
    const char *f[3];
    size_t n[3];
    int rc;
    long salt_len, hash_len;
    memset(e, 0, sizeof(*e));
    if (strncmp(field, "$7$", 3) == 0) {
        e->type = 7;
        rc = split_fields(field + 3, f, n, 3);
        if (rc == SL_OK)
            rc = parse_iterations(f[0], n[0], &e->iterations);
        if (rc != SL_OK)
            return rc;
        salt_len = b64_decode(f[1], n[1], e->salt, SALT_MAX);
        hash_len = b64_decode(f[2], n[2], e->hash, HASH_LEN);
    } else if (strncmp(field, "$6$", 3) == 0) {
        e->type = 6;
        rc = split_fields(field + 3, f, n, 2);
        if (rc != SL_OK)
            return rc;
        salt_len = b64_decode(f[0], n[0], e->salt, SALT_MAX);
        hash_len = b64_decode(f[1], n[1], e->hash, HASH_LEN);
    } else {
        return SL_EINVAL;
    }
    if (salt_len < 1 || hash_len != HASH_LEN)
        return SL_EINVAL;
    e->salt_len = (size_t)salt_len;
    return SL_OK;
}

/* --- verification --------------------------------------------------------- */

static int digest(const pw_entry_t *e, const uint8_t *pw, size_t len,
                  uint8_t out[HASH_LEN])
{
    if (len > INT_MAX)
        return SL_EINVAL;
    if (e->type == 7)
        return PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, e->salt,
                                 (int)e->salt_len, (int)e->iterations,
                                 EVP_sha512(), HASH_LEN, out) == 1
                   ? SL_OK
                   : SL_ENOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, pw, len) == 1 &&
             EVP_DigestUpdate(ctx, e->salt, e->salt_len) == 1 &&
             EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == HASH_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? SL_OK : SL_ENOMEM;
}

static int entry_verify(const pw_entry_t *e, const uint8_t *pw, size_t len)
{
    uint8_t h[HASH_LEN];
    int rc = digest(e, pw, len, h);
    if (rc != SL_OK)
        return 0;
    rc = CRYPTO_memcmp(h, e->hash, HASH_LEN) == 0;
    OPENSSL_cleanse(h, sizeof(h));
    return rc;
}

int passwd_verify(const char *field, const uint8_t *pw, size_t len)
{
    pw_entry_t e;
    if (parse_field(field, &e) != SL_OK)
        return SL_EINVAL;
    return entry_verify(&e, pw, len);
}

/* --- the file ------------------------------------------------------------- */

static void strip_eol(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static int add_line(passwd_t *p, char *line, const char *path,
                    unsigned lineno, char *err, size_t errlen)
{
    strip_eol(line);
    if (line[0] == '\0' || line[0] == '#')
        return SL_OK;
    char *colon = strchr(line, ':');
    if (!colon || colon == line) {
        snprintf(err, errlen, "%s:%u: expected user:hash", path, lineno);
        return SL_EINVAL;
    }
    *colon = '\0';
    pw_entry_t *e = malloc(sizeof(*e));
    if (!e)
        return SL_ENOMEM;
    if (parse_field(colon + 1, e) != SL_OK) {
        free(e);
        snprintf(err, errlen,
                 "%s:%u: user '%s': not a $6$ or $7$ password hash "
                 "(make the file with mosquitto_passwd)",
                 path, lineno, line);
        return SL_EINVAL;
    }
    void *old = NULL;
    if (map_put(p->users, line, strlen(line), e, &old) != SL_OK) {
        free(e);
        return SL_ENOMEM;
    }
    free(old); /* a repeated user: the last line wins */
    return SL_OK;
}

int passwd_load(passwd_t **out, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SL_EIO;
    }
    passwd_t *p = calloc(1, sizeof(*p));
    int rc = p && (p->users = map_new()) ? SL_OK : SL_ENOMEM;
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    while (rc == SL_OK && getline(&line, &cap, f) >= 0)
        rc = add_line(p, line, path, ++lineno, err, errlen);
    if (rc == SL_ENOMEM)
        snprintf(err, errlen, "%s: out of memory", path);
    else if (rc == SL_OK && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = SL_EIO;
    }
    if (line)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    if (rc != SL_OK) {
        passwd_free(p);
        return rc;
    }
    *out = p;
    return SL_OK;
}

void passwd_free(passwd_t *p)
{
    if (!p)
        return;
    if (p->users)
        map_free(p->users, free);
    free(p);
}

size_t passwd_count(const passwd_t *p)
{
    return map_count(p->users);
}

auth_result_t passwd_check(const passwd_t *p, const char *user,
                           const uint8_t *pw, size_t len, bool has_pw)
{
    if (!user)
        return AUTH_IGNORE;
    const pw_entry_t *e = map_get(p->users, user, strlen(user));
    if (!e)
        return AUTH_IGNORE;
    if (!has_pw)
        return AUTH_DENY;
    return entry_verify(e, pw, len) == 1 ? AUTH_ALLOW : AUTH_DENY;
}
