/*
 * redis_url.c - parsing of redis:// and redis+cluster:// store URLs (see
 * redis_url.h).
 */
#include "redis_url.h"

#include "starling/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PORT 6379
#define DEFAULT_TIMEOUT_MS 5000

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

/* A NUL-terminated, percent-decoded copy of s[0..len), or NULL. */
static char *decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return out;
}

static int parse_int(const char *s, size_t len, long min, long max, long *out)
{
    long v = 0;
    if (len == 0 || len > 9)
        return SL_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return SL_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return SL_EINVAL;
    *out = v;
    return SL_OK;
}

/* "user:pass", ":pass" or "pass" before the '@'. */
static int parse_auth(redis_url_t *u, const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    if (!colon) {
        u->password = decode(s, len);
        return u->password ? SL_OK : SL_ENOMEM;
    }
    size_t ulen = (size_t)(colon - s);
    if (ulen) {
        u->user = decode(s, ulen);
        if (!u->user)
            return SL_ENOMEM;
    }
    u->password = decode(colon + 1, len - ulen - 1);
    return u->password ? SL_OK : SL_ENOMEM;
}

/* One "host[:port]" or "[v6][:port]". */
static int parse_host(redis_url_t *u, const char *s, size_t len, char *err,
                      size_t errlen)
{
    const char *h = s, *port = NULL;
    size_t hlen = len;
    if (len && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (!rb)
            goto bad;
        h = s + 1;
        hlen = (size_t)(rb - s) - 1;
        if ((size_t)(rb - s) + 1 < len) {
            if (rb[1] != ':')
                goto bad;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    long p = DEFAULT_PORT;
    if (hlen == 0 ||
        (port && parse_int(port, len - (size_t)(port - s), 1, 65535, &p)))
        goto bad;
    if (u->n_hosts == REDIS_URL_MAX_HOSTS) {
        snprintf(err, errlen, "store: too many hosts in the store URL");
        return SL_EINVAL;
    }
    redis_host_t *hosts = realloc(u->hosts, (u->n_hosts + 1) * sizeof(*hosts));
    if (!hosts)
        return SL_ENOMEM;
    u->hosts = hosts;
    hosts[u->n_hosts].host = strndup(h, hlen);
    if (!hosts[u->n_hosts].host)
        return SL_ENOMEM;
    hosts[u->n_hosts++].port = (int)p;
    return SL_OK;
bad:
    snprintf(err, errlen, "store: bad host '%.*s' in the store URL", (int)len,
             s);
    return SL_EINVAL;
}

static int parse_hosts(redis_url_t *u, const char *s, size_t len, char *err,
                       size_t errlen)
{
    while (len) {
        const char *comma = memchr(s, ',', len);
        size_t one = comma ? (size_t)(comma - s) : len;
        int rc = parse_host(u, s, one, err, errlen);
        if (rc != SL_OK)
            return rc;
        if (!comma)
            break;
        s = comma + 1;
        len -= one + 1;
    }
    if (u->n_hosts == 0) {
        snprintf(err, errlen, "store: no host in the store URL");
        return SL_EINVAL;
    }
    if (!u->cluster && u->n_hosts > 1) {
        snprintf(err, errlen, "store: several hosts need redis+cluster://");
        return SL_EINVAL;
    }
    return SL_OK;
}

static int parse_option(redis_url_t *u, const char *s, size_t len, char *err,
                        size_t errlen)
{
    const char *eq = memchr(s, '=', len);
    size_t klen = eq ? (size_t)(eq - s) : len;
    const char *v = eq ? eq + 1 : s + len;
    size_t vlen = eq ? len - klen - 1 : 0;
    long t;
    if (klen == 6 && memcmp(s, "prefix", 6) == 0) {
        free(u->prefix);
        u->prefix = decode(v, vlen);
        return u->prefix ? SL_OK : SL_ENOMEM;
    }
    if (klen == 7 && memcmp(s, "timeout", 7) == 0) {
        if (parse_int(v, vlen, 10, 600000, &t) == SL_OK) {
            u->timeout_ms = (int)t;
            return SL_OK;
        }
        snprintf(err, errlen, "store: bad timeout '%.*s' (ms, 10..600000)",
                 (int)vlen, v);
        return SL_EINVAL;
    }
    snprintf(err, errlen, "store: unknown store URL option '%.*s'", (int)klen,
             s);
    return SL_EINVAL;
}

static int parse_options(redis_url_t *u, const char *s, char *err,
                         size_t errlen)
{
    while (*s) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len) {
            int rc = parse_option(u, s, len, err, errlen);
            if (rc != SL_OK)
                return rc;
        }
        s += len + (amp ? 1 : 0);
    }
    return SL_OK;
}

bool redis_url_match(const char *url)
{
    return url && (strncmp(url, "redis://", 8) == 0 ||
                   strncmp(url, "redis+cluster://", 16) == 0 ||
                   strncmp(url, "rediss://", 9) == 0);
}

static int parse_scheme(redis_url_t *u, const char **s, char *err,
                        size_t errlen)
{
    if (strncmp(*s, "redis://", 8) == 0) {
        *s += 8;
    } else if (strncmp(*s, "redis+cluster://", 16) == 0) {
        u->cluster = true;
        *s += 16;
    } else if (strncmp(*s, "rediss://", 9) == 0) {
        snprintf(err, errlen, "store: rediss:// (TLS) is not supported");
        return SL_EINVAL;
    } else {
        snprintf(err, errlen,
                 "store: the URL must start with redis:// or "
                 "redis+cluster://");
        return SL_EINVAL;
    }
    return SL_OK;
}

/* The part after the hosts: "[/db][?options]". */
static int parse_tail(redis_url_t *u, const char *s, char *err, size_t errlen)
{
    if (*s == '/') {
        const char *q = strchr(s, '?');
        size_t len = q ? (size_t)(q - s - 1) : strlen(s + 1);
        long db = 0;
        if (len && parse_int(s + 1, len, 0, 100000, &db) != SL_OK) {
            snprintf(err, errlen, "store: bad database '%.*s' in the URL",
                     (int)len, s + 1);
            return SL_EINVAL;
        }
        if (db && u->cluster) {
            snprintf(err, errlen, "store: a cluster has no database %ld", db);
            return SL_EINVAL;
        }
        u->db = (int)db;
        s += 1 + len;
    }
    if (*s == '?')
        return parse_options(u, s + 1, err, errlen);
    if (*s) {
        snprintf(err, errlen, "store: unexpected '%s' in the store URL", s);
        return SL_EINVAL;
    }
    return SL_OK;
}

int redis_url_parse(const char *url, redis_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->timeout_ms = DEFAULT_TIMEOUT_MS;
    out->prefix = strdup("sl:");
    if (!out->prefix)
        return SL_ENOMEM;
    const char *s = url;
    int rc = parse_scheme(out, &s, err, errlen);
    if (rc != SL_OK)
        return rc;
    size_t alen = strcspn(s, "/?");
    const char *at = NULL;
    for (size_t i = alen; i > 0; i--) {
        if (s[i - 1] == '@') {
            at = s + i - 1;
            break;
        }
    }
    if (at) {
        rc = parse_auth(out, s, (size_t)(at - s));
        if (rc != SL_OK)
            return rc;
        alen -= (size_t)(at - s) + 1;
        s = at + 1;
    }
    rc = parse_hosts(out, s, alen, err, errlen);
    if (rc != SL_OK)
        return rc;
    return parse_tail(out, s + alen, err, errlen);
}

void redis_url_fini(redis_url_t *u)
{
    for (size_t i = 0; i < u->n_hosts; i++)
        free(u->hosts[i].host);
    free(u->hosts);
    free(u->user);
    free(u->password);
    free(u->prefix);
    memset(u, 0, sizeof(*u));
}
