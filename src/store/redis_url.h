/*
 * redis_url.h - the store URL of the Redis-protocol backend.
 *
 *   redis://[[user]:password@]host[:port][/db][?options]
 *   redis+cluster://[[user]:password@]host1[:port1],host2[:port2],...[?options]
 *
 * The port defaults to 6379 and the database to 0 (a cluster has no
 * databases: a /db part is refused there). "user:password" sends
 * AUTH user password (an ACL user), ":password" or "password" alone sends
 * AUTH password. Percent escapes (%40 for '@') are decoded in the user and
 * the password. IPv6 hosts are bracketed: redis://[::1]:6379.
 * Options (query string, '&'-separated):
 *   prefix=sl:       the key prefix (DESIGN.md §3), default "sl:"
 *   timeout=5000     per-request and connect deadline in ms (10..600000)
 * rediss:// (TLS) is refused: the client library has no TLS.
 */
#ifndef STARLING_STORE_REDIS_URL_H
#define STARLING_STORE_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_MAX_HOSTS 64

typedef struct redis_host {
    char *host;
    int port;
} redis_host_t;

typedef struct redis_url {
    bool cluster;
    char *user;     /* NULL = none */
    char *password; /* NULL = no AUTH */
    int db;
    char *prefix;
    int timeout_ms;
    redis_host_t *hosts;
    size_t n_hosts;
} redis_url_t;

/* Parse `url`. SL_OK, or SL_EINVAL with a message in err. Free with
 * redis_url_fini() (also after a failure). */
int redis_url_parse(const char *url, redis_url_t *out, char *err,
                    size_t errlen);
void redis_url_fini(redis_url_t *u);
/* Whether `url` names this backend (redis://, redis+cluster://, rediss://). */
bool redis_url_match(const char *url);

#endif
