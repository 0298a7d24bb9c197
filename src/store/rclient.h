/*
 * rclient.h - an asynchronous Redis-protocol client on the node's event
 * loop, for one server or a cluster (internal to src/store/).
 *
 * Built on hiredis's async API and its libevent adapter. What it adds:
 *  - requests are pipelined: each is written as soon as its connection is
 *    up, without waiting for earlier replies;
 *  - every request has a deadline on our own timer (hiredis 0.14 has no
 *    async timeouts). A request still unanswered at its deadline makes the
 *    connection count as lost: it is closed, its requests fail with
 *    SL_ETIMEOUT/SL_EIO, and it reconnects. A request that cannot be sent
 *    (server down) waits until its deadline, then fails with SL_EIO;
 *  - reconnection with exponential backoff (100 ms .. 2 s); on connect:
 *    AUTH [user] password, SELECT db, SCRIPT LOAD of every script;
 *  - cluster: slot map from CLUSTER SLOTS, one connection per master, each
 *    request sent to the owner of its key's slot; MOVED updates the map and
 *    retries on the new owner, ASK retries once after ASKING; the map is
 *    refreshed on MOVED, on a lost connection and every 30 s;
 *  - EVALSHA with the scripts' SHA1 computed locally; NOSCRIPT loads the
 *    script and retries; TRYAGAIN/LOADING/CLUSTERDOWN retry 100 ms later
 *    until the deadline (a multi-key script on a slot being migrated gets
 *    ASK from the old owner and TRYAGAIN from the new one until the
 *    migration ends).
 *
 * A request that was sent and lost with its connection is failed, unless it
 * was flagged RCLIENT_REPLAY (safe to execute twice): then it is sent again
 * once the connection is back, in its original order.
 */
#ifndef STARLING_STORE_RCLIENT_H
#define STARLING_STORE_RCLIENT_H

#include "redis_url.h"

#include "starling/msg.h"
#include "starling/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
typedef struct rclient rclient_t;

/*
 * The completion of one request: called exactly once, on the event loop and
 * never from inside rclient_send(). status SL_OK with the reply (which may
 * be an error reply), or SL_EIO / SL_ETIMEOUT with r NULL. `ctx` points to
 * the client's copy of the bytes given to rclient_send().
 */
typedef void (*rclient_fn)(void *ctx, const struct redisReply *r, int status);

#define RCMD_MAX_ARGS 24

typedef struct rarg {
    uint8_t kind;
    uint8_t qos;
    const void *p;
    size_t len;
    const char *sfx;
    size_t clen;
    char num[24];
} rarg_t;

/*
 * A command being built on the stack; rclient_send() copies it. Up to
 * RCMD_MAX_ARGS arguments live in the struct; rcmd_init_n() makes room for
 * more on the heap, released by rcmd_fini().
 */
typedef struct rcmd {
    const char *prefix; /* key prefix */
    int argc;
    int cap;
    int key;    /* the arg whose slot routes it, -1 none */
    int script; /* SCRIPT_* of an EVALSHA, -1 none */
    bool overflow;
    rarg_t *args; /* small, or a heap array of cap */
    rarg_t small[RCMD_MAX_ARGS];
} rcmd_t;

void rcmd_init(rcmd_t *c, const char *prefix);
/* Room for `n` arguments; needs rcmd_fini() once sent. */
void rcmd_init_n(rcmd_t *c, const char *prefix, int n);
void rcmd_fini(rcmd_t *c);
void rcmd_str(rcmd_t *c, const char *s);
void rcmd_bytes(rcmd_t *c, const void *p, size_t len);
void rcmd_u64(rcmd_t *c, uint64_t v);
/* A global key: prefix + name ("sl:retained"). */
void rcmd_key(rcmd_t *c, const char *name);
/* A per-client key: prefix + "{c:" + cid + "}" + sfx ("sl:{c:x}:q"). */
void rcmd_ckey(rcmd_t *c, const char *cid, size_t clen, const char *sfx);
/* A message (blob.h); NULL gives an empty string. */
void rcmd_msg(rcmd_t *c, const msg_t *m);
/* A queue entry: the delivery QoS byte, then the message. */
void rcmd_entry(rcmd_t *c, uint8_t qos, const msg_t *m);
/* "EVALSHA <sha> <numkeys>": the keys and arguments follow. */
void rcmd_evalsha(rcmd_t *c, int script, int numkeys);

enum { RCLIENT_REPLAY = 1 };

/* Connect in the background. `url` must outlive the client. */
int rclient_new(rclient_t **out, struct event_base *base,
                const redis_url_t *url, const char *const *scripts,
                size_t n_scripts, char *err, size_t errlen);
/* Fail everything pending with SL_EIO (callbacks run now), then free. */
void rclient_free(rclient_t *cl);
bool rclient_ready(const rclient_t *cl);
bool rclient_cluster(const rclient_t *cl);
void rclient_stats(const rclient_t *cl, store_stats_t *out);
/* Count a failure the caller found in a reply (e.g. a malformed one). */
void rclient_count_error(rclient_t *cl);

/*
 * Send a command; fn runs later with a pointer to the client's copy of
 * ctx[0..ctxlen) immediately followed by tail[0..taillen) and a NUL (so a
 * context struct may end in a flexible array holding e.g. a client id).
 */
void rclient_send(rclient_t *cl, const rcmd_t *cmd, unsigned flags,
                  rclient_fn fn, const void *ctx, size_t ctxlen,
                  const void *tail, size_t taillen);

#endif
