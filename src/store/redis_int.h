/*
 * redis_int.h - what the files of the Redis-protocol store backend share
 * (private to them):
 *   redis.c          the backend: vtable, open/free, shared helpers
 *   redis_session.c  claim, session record, global indexes, expiry sweep
 *   redis_subs.c     subscriptions
 *   redis_queue.c    the queue and inbound QoS 2 ids: appends, marks,
 *                    acks, inbound put/del gathered in batches; since
 *   redis_retain.c   retained messages
 */
#ifndef STARLING_STORE_REDIS_INT_H
#define STARLING_STORE_REDIS_INT_H

#include "backend.h"
#include "rclient.h"
#include "redis_url.h"

#include "starling/map.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct redisReply;

/* The kinds of queue operations a batch carries (redis_queue.c). */
enum { QOP_APPEND, QOP_MARK, QOP_ACK, QOP_IN_PUT, QOP_IN_DEL };

/* One queue operation waiting in a batch. */
typedef struct qop {
    uint8_t kind;  /* QOP_* */
    uint32_t sess; /* index in batch.sess */
    uint32_t entry; /* QOP_APPEND: index in batch.ents */
    uint64_t epoch; /* all but QOP_APPEND */
    uint64_t id;    /* QOP_MARK, QOP_ACK: the entry; QOP_IN_*: packet id */
    uint64_t val;   /* QOP_MARK: pid | state << 16, 0 = not sent */
    void *cb; /* store_id_fn (QOP_APPEND) or store_done_fn */
    void *arg;
} qop_t;

/* A session a batch touches; its client id is in batch.cids. */
typedef struct bsess {
    size_t cid_off, clen;
} bsess_t;

typedef struct bentry {
    msg_t *msg; /* a reference */
    uint8_t qos;
} bentry_t;

/* The queue operations of this loop iteration on the keys of one slot (all
 * of them on a standalone server), not sent yet (see redis_queue.c). */
typedef struct batch {
    qop_t *ops;
    size_t n, cap;
    bsess_t *sess;
    size_t n_sess, cap_sess;
    bentry_t *ents;
    size_t n_ents, cap_ents;
    char *cids;
    size_t cids_len, cids_cap;
    size_t bytes;
    bool appends;       /* holds an append: lim is set */
    bool replay;        /* every operation may run twice (no append and
                           no ack) */
    store_limits_t lim; /* of its appends */
    int slot;           /* cluster: the slot of every key; -1 standalone */
} batch_t;

typedef struct rstore {
    store_t base;
    redis_url_t url;
    rclient_t *cl;
    bool cluster;
    bool closing; /* store_free() runs: quiet failures */
    map_t *swept; /* cid -> epoch (uint64_t *) of the last sweep */
    batch_t *batches;      /* [0, n_open) hold operations not sent yet */
    size_t n_open, n_batches;
    uint16_t *slot_batch;  /* cluster: slot -> index in batches + 1, 0 none */
    struct event *batch_ev; /* sends the batches at the end of the
                               iteration */
} rstore_t;

/* Context of a one-reply operation; the client id follows in cid[]. */
typedef struct op {
    rstore_t *rs;
    void *cb;
    void *arg;
    size_t clen;
    char cid[];
} op_t;

/* ---- redis.c: helpers -------------------------------------------------- */

/* An empty command with the store's key prefix. */
void rs_cmd_init(rstore_t *rs, rcmd_t *c);
/* EVALSHA script with the per-client keys named in sfx (NULL-ended) and
 * the global index keys when standalone and `index`. */
void rs_cmd_script(rstore_t *rs, rcmd_t *c, int script, const char *cid,
                   size_t clen, const char *const *sfx, bool index);
/* The script over the keys sfx of client cid, fenced by epoch (its first
 * argument); the other arguments follow. */
void rs_cmd_fenced(rstore_t *rs, rcmd_t *c, int script, const char *cid,
                   size_t clen, const char *const *sfx, uint64_t epoch);
/* Every command but the queue batches goes out here, after the queue
 * operations gathered before it (rclient_send() otherwise). */
void rs_send(rstore_t *rs, const rcmd_t *c, unsigned flags, rclient_fn fn,
             const void *ctx, size_t ctxlen, const void *tail,
             size_t taillen);
/* rs_send() with an op_t context; cid (may be NULL) follows it. */
void rs_send_op(rstore_t *rs, const rcmd_t *c, unsigned flags,
                rclient_fn fn, void *cb, void *arg, const char *cid,
                size_t clen);
/* A script's status reply: 0 or one of the SL_* codes scripts return. */
int rs_reply_status(rstore_t *rs, const struct redisReply *r, int status);
/* The end of an op_t whose cb is a store_done_fn. */
void rs_op_done(const op_t *o, int status);
/* rs_send() of a command whose script status goes to cb. */
void rs_send_done(rstore_t *rs, const rcmd_t *c, unsigned flags,
                  store_done_fn cb, void *arg);
bool rs_is_str(const struct redisReply *r);
/* A string reply's decimal value; 0 when it is none. */
uint64_t rs_str_u64(const struct redisReply *r);
/* One page of "verb key cursor COUNT n" (SSCAN, HSCAN) of a global key. */
void rs_scan(rstore_t *rs, const char *verb, const char *key,
             const char *cursor, rclient_fn fn, const void *ctx,
             size_t ctxlen);
/* The status of a scan page reply, {cursor, [items]} when SL_OK. */
int rs_scan_status(const struct redisReply *r, int status);

/* ---- redis_session.c --------------------------------------------------- */

/* The global index entries of a session (cluster): in psessions, and in
 * expiry at `at` (>= 0), out of it (-1) or unchanged (-2). */
void rs_index_put(rstore_t *rs, const char *cid, size_t clen, int64_t at);
/* Drop them, then restore them if the session still exists;
 * keep_psession: only the expiry entry goes. */
void rs_index_drop(rstore_t *rs, const char *cid, size_t clen,
                   bool keep_psession);

void redis_claim(store_t *st, const char *cid, size_t clen, bool clean,
                 const store_session_t *rec, store_claim_fn cb, void *arg);
void redis_session_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, const store_session_t *rec,
                       store_done_fn cb, void *arg);
void redis_session_offline(store_t *st, const char *cid, size_t clen,
                           uint64_t epoch, uint64_t now_ms, store_done_fn cb,
                           void *arg);
void redis_session_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, store_done_fn cb, void *arg);
void redis_session_expired(store_t *st, uint64_t now_ms, store_cids_fn cb,
                           void *arg);

/* ---- redis_subs.c ------------------------------------------------------ */

/* A flat HGETALL-style reply {filter, blob, ...} as subscriptions pointing
 * into it; *out is freed by the caller. */
int rs_parse_subs(const struct redisReply *r, store_sub_t **out, size_t *n);

void redis_sub_put(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const store_sub_t *sub, store_done_fn cb, void *arg);
void redis_sub_del(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const char *filter, size_t flen, store_done_fn cb,
                   void *arg);
void redis_sub_load(store_t *st, store_psub_fn cb, void *arg);

/* ---- redis_queue.c ----------------------------------------------------- */

/* One stream entry {id, {m, qos+blob}}; pid and state from the flat :out
 * reply {id, pid | state << 16, ...}. se->msg is a new reference. */
int rs_parse_entry(const struct redisReply *e, const struct redisReply *out,
                   store_entry_t *se);
/* The batches' event and slot index; SL_ENOMEM when they cannot be made. */
int rs_batch_init(rstore_t *rs);
/* Send the gathered queue operations, one request per batch. Safe to call
 * at any time. */
void rs_batch_flush(rstore_t *rs);
void rs_batch_fini(rstore_t *rs);

void redis_queue_append(store_t *st, const char *cid, size_t clen, msg_t *m,
                        uint8_t qos, const store_limits_t *lim,
                        store_id_fn cb, void *arg);
void redis_queue_mark(store_t *st, const char *cid, size_t clen,
                      uint64_t epoch, uint64_t id, uint16_t pid,
                      uint8_t state, store_done_fn cb, void *arg);
void redis_queue_ack(store_t *st, const char *cid, size_t clen,
                     uint64_t epoch, uint64_t id, store_done_fn cb,
                     void *arg);
void redis_queue_since(store_t *st, const char *cid, size_t clen,
                       uint64_t after, uint32_t max, store_entries_fn cb,
                       void *arg);
/* Inbound QoS 2 ids go through the batches too (same session keys). */
void redis_inbound_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg);
void redis_inbound_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg);

/* ---- redis_retain.c ---------------------------------------------------- */

void redis_retain_put(store_t *st, msg_t *m, store_done_fn cb, void *arg);
void redis_retain_del(store_t *st, const char *topic, size_t tlen,
                      store_done_fn cb, void *arg);
void redis_retain_load(store_t *st, store_msgs_fn cb, void *arg);

#endif
