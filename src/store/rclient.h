/*
 * rclient.h - an asynchronous Redis-protocol client on the node's event
 * loop, for one server or a cluster. Used by the Redis store backend
 * (redis*.c) and the cluster bus (cluster/cluster.c).
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
 *
 * The deadline of every request is the URL's timeout (redis_url.h).
 *
 * Implementation: rclient.c (requests, replies, deadlines, lifecycle),
 * rclient_cmd.c (commands), rclient_conn.c (connections, reconnection),
 * rclient_cluster.c (slot map, MOVED/ASK); rclient_int.h is theirs.
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

/* ---- commands ----------------------------------------------------------
 *
 * A command is built on the stack with rcmd_init() and the rcmd_* argument
 * functions, then given to rclient_send(), which copies it: the arguments
 * point into the caller's memory (strings, client ids, messages) only until
 * then. The key prefix (the URL's, e.g. "sl:") is added to the keys.
 *
 *     rcmd_t c;
 *     rcmd_init(&c, url->prefix);
 *     rcmd_str(&c, "HGET");
 *     rcmd_key(&c, "retained");                   -> "sl:retained"
 *     rcmd_bytes(&c, topic, tlen);
 *     rclient_send(cl, &c, RCLIENT_REPLAY, on_reply, &ctx, sizeof(ctx),
 *                  NULL, 0);
 *
 * In a cluster a command goes to the owner of the slot of its first key
 * (rcmd_key or rcmd_ckey), or to any master when it has none.
 */

/* Arguments a command holds without rcmd_init_n(). */
#define RCMD_MAX_ARGS 24

/* One argument, as the rcmd_* functions record it (the client's own). */
typedef struct rarg {
    uint8_t kind;
    uint8_t qos;
    const void *p;
    size_t len;
    const char *sfx;
    size_t clen;
    char num[24];
} rarg_t;

/* A command being built. Its fields are the client's: use the functions. */
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

/* An empty command of up to RCMD_MAX_ARGS arguments. prefix, like every
 * argument, must stay valid until rclient_send(). More arguments than room
 * is a programming error: rclient_send() aborts. */
void rcmd_init(rcmd_t *c, const char *prefix);
/* An empty command with room for `n` arguments; needs rcmd_fini() once
 * sent. */
void rcmd_init_n(rcmd_t *c, const char *prefix, int n);
/* Release what rcmd_init_n() took (nothing after rcmd_init()). */
void rcmd_fini(rcmd_t *c);
/* A NUL-terminated string. */
void rcmd_str(rcmd_t *c, const char *s);
/* len bytes at p. */
void rcmd_bytes(rcmd_t *c, const void *p, size_t len);
/* A number in decimal. */
void rcmd_u64(rcmd_t *c, uint64_t v);
/* A global key: prefix + name ("sl:retained"). */
void rcmd_key(rcmd_t *c, const char *name);
/* A per-client key: prefix + "{c:" + cid + "}" + sfx ("sl:{c:x}:q"). */
void rcmd_ckey(rcmd_t *c, const char *cid, size_t clen, const char *sfx);
/* A message (blob.h); NULL gives an empty string. */
void rcmd_msg(rcmd_t *c, const msg_t *m);
/* A queue entry: the delivery QoS byte, then the message. */
void rcmd_entry(rcmd_t *c, uint8_t qos, const msg_t *m);
/* "EVALSHA <sha> <numkeys>" of scripts[script] given to rclient_new():
 * the keys and arguments follow. */
void rcmd_evalsha(rcmd_t *c, int script, int numkeys);

/* ---- the client -------------------------------------------------------- */

/*
 * The completion of one request: called exactly once, on the event loop and
 * never from inside rclient_send(). status SL_OK with the reply (which may
 * be an error reply), or SL_EIO / SL_ETIMEOUT with r NULL. `ctx` points to
 * the client's copy of the bytes given to rclient_send().
 */
typedef void (*rclient_fn)(void *ctx, const struct redisReply *r, int status);

/* rclient_send() flag: the command may run twice, so a request lost with
 * its connection is sent again instead of failing. */
enum { RCLIENT_REPLAY = 1 };

/* Connect in the background to url's hosts (the seeds of a cluster).
 * `url` and the NUL-terminated Lua bodies scripts[0..n_scripts) must
 * outlive the client. SL_OK, or SL_ENOMEM with the reason in err. */
int rclient_new(rclient_t **out, struct event_base *base,
                const redis_url_t *url, const char *const *scripts,
                size_t n_scripts, char *err, size_t errlen);
/* Fail everything pending with SL_EIO (callbacks run now), then free.
 * NULL is allowed. */
void rclient_free(rclient_t *cl);
/* Connected and set up: the server, or in a cluster the slot map and every
 * master in it. Requests may be sent before: they wait. */
bool rclient_ready(const rclient_t *cl);
/* The counters of store_stats_t and the requests pending now. */
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
