/*
 * store.h - the asynchronous state store (DESIGN.md §3).
 *
 * Everything that must outlive a connection goes through this interface:
 * persistent sessions (record, subscriptions, queue of QoS >= 1 messages,
 * outbound in-flight state, inbound QoS 2 packet ids) and retained messages.
 * Clean (non-persistent) sessions never touch the store.
 *
 * Every operation completes through its callback, on the node's event loop,
 * never re-entrantly from inside the call (the memory backend defers its
 * callbacks too, so the broker behaves the same on every backend). A NULL
 * callback means "fire and forget" (the status is still counted/logged by
 * the backend). Operations on one client id complete in the order they were
 * issued.
 *
 * Writes to a session carry the epoch returned by store_claim(); a write with
 * an older epoch than the session's current one fails with SL_ESTALE
 * (fencing: a node that lost a session can never overwrite the new owner's
 * state).
 *
 * Data handed to a callback (arrays, strings, message references) is valid
 * only during the callback; take a msg_ref() to keep a message.
 *
 * Backends: "memory" (mem.c: embedded, nothing persisted across restarts),
 * "redis://[[user]:pass@]host:port[/db]" and
 * "redis+cluster://[[user]:pass@]h1:p1,h2:p2,..." (redis.c: Redis, Valkey or
 * Apache Kvrocks, standalone or cluster), both with the options
 * "?prefix=sl:&timeout=5000" (key prefix; per-request deadline in ms, after
 * which an operation fails with SL_EIO or SL_ETIMEOUT).
 */
#ifndef STARLING_STORE_H
#define STARLING_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "starling/msg.h"

struct event_base;
typedef struct store store_t;

/* Subscription options, packed as the MQTT 5 subscription options byte:
 * bits 0-1 QoS, bit 2 no local, bit 3 retain as published, bits 4-5 retain
 * handling. */
typedef struct store_sub {
    const char *filter;
    size_t flen;
    uint8_t opts;
    uint32_t sub_id;             /* 0 = none */
} store_sub_t;

/* One message in a session's queue. */
typedef struct store_entry {
    uint64_t id;                 /* increasing within a session */
    msg_t *msg;                  /* borrowed */
    uint8_t qos;                 /* effective QoS of this delivery (1 or 2) */
    uint16_t pid;                /* packet id once sent, 0 = not sent yet */
    uint8_t state;               /* STORE_SENT / STORE_PUBREC */
} store_entry_t;

enum { STORE_SENT = 0, STORE_PUBREC = 1 };

/* An entry's qos byte: the QoS in its low bits, and STORE_QOS_RETAIN when
 * the delivery carries RETAIN 1 (a retained message sent for a new
 * subscription, or retain as published), so a resend keeps the flag. */
#define STORE_QOS_MASK 0x03
#define STORE_QOS_RETAIN 0x04

/* The durable session record. */
typedef struct store_session {
    uint8_t version;             /* protocol level */
    uint32_t expiry;             /* session expiry interval, s */
    msg_t *will;                 /* borrowed; NULL = no will */
    uint32_t will_delay;         /* s */
} store_session_t;

typedef struct store_claim {
    bool present;                /* a previous session existed and was kept */
    uint64_t epoch;              /* the new epoch; carry it on every write */
    store_session_t prev;        /* previous record (when present) */
    const store_sub_t *subs;
    size_t n_subs;
    const store_entry_t *entries;/* in queue order */
    size_t n_entries;
    const uint16_t *inbound;     /* QoS 2 packet ids awaiting PUBREL */
    size_t n_inbound;
} store_claim_t;

typedef void (*store_done_fn)(void *arg, int status);
typedef void (*store_claim_fn)(void *arg, int status, const store_claim_t *c);
typedef void (*store_id_fn)(void *arg, int status, uint64_t id);
typedef void (*store_msgs_fn)(void *arg, int status, msg_t *const *msgs,
                              size_t n);
typedef void (*store_cids_fn)(void *arg, int status, const char *const *cids,
                              size_t n);
/* Called once per persistent session (status SL_OK), then once with cid
 * NULL at the end (status = overall result). */
typedef void (*store_psub_fn)(void *arg, int status, const char *cid,
                              const store_sub_t *subs, size_t n);

typedef struct store_limits {
    uint32_t max_queued;         /* entries not yet sent (pid 0); 0 = no limit */
    bool drop_oldest;            /* else a full queue refuses the new one */
} store_limits_t;

/* Open a backend by URL ("memory", "redis://..."). SL_OK or SL_EINVAL with
 * err set. A networked backend connects in the background: operations
 * issued before it is ready wait (up to their deadline) and then proceed. */
int store_open(store_t **out, struct event_base *base, const char *url,
               char *err, size_t errlen);
/* Close and free; pending callbacks are called with SL_EIO first. Not to be
 * called from inside a store callback. */
void store_free(store_t *st);
/* Whether the backend currently reaches its server (memory: always). */
bool store_ready(const store_t *st);
const char *store_kind(const store_t *st);

/* Counters of a backend (all zero for "memory"). */
typedef struct store_stats {
    uint64_t requests;           /* commands sent to the server(s) */
    uint64_t errors;             /* I/O failures, timeouts, error replies */
    uint64_t timeouts;           /* requests that missed their deadline */
    uint64_t disconnects;        /* established connections lost */
    uint64_t reconnects;         /* connections established again */
    uint64_t redirects;          /* cluster MOVED / ASK replies */
    uint64_t pending;            /* requests waiting or in flight now */
} store_stats_t;

void store_stats(const store_t *st, store_stats_t *out);

/*
 * Claim the session of `cid` for this node: bumps the epoch. With `clean`
 * the previous state is discarded first (present = false). The record `rec`
 * is saved as the new session record.
 */
void store_claim(store_t *st, const char *cid, size_t clen, bool clean,
                 const store_session_t *rec, store_claim_fn cb, void *arg);
/* Replace the session record (e.g. expiry changed by DISCONNECT). */
void store_session_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, const store_session_t *rec,
                       store_done_fn cb, void *arg);
/* The session went offline at `now_ms`; it expires at now + expiry. */
void store_session_offline(store_t *st, const char *cid, size_t clen,
                           uint64_t epoch, uint64_t now_ms, store_done_fn cb,
                           void *arg);
/* Delete the session. epoch 0 (the expiry sweep): whatever the epoch, but
 * only while the session is offline (SL_ESTALE when it is online). */
void store_session_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, store_done_fn cb, void *arg);
/* Offline sessions whose expiry is at or before now_ms. */
void store_session_expired(store_t *st, uint64_t now_ms, store_cids_fn cb,
                           void *arg);

void store_sub_put(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const store_sub_t *sub, store_done_fn cb, void *arg);
void store_sub_del(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const char *filter, size_t flen, store_done_fn cb,
                   void *arg);
/* Every persistent session's subscriptions (to build the index at start). */
void store_sub_load(store_t *st, store_psub_fn cb, void *arg);

/*
 * Append a message to a session's queue (no epoch: any node may append).
 * SL_ELIMIT when the queue is full and the policy refuses the message.
 * SL_ENOTFOUND when the session no longer exists.
 */
void store_queue_append(store_t *st, const char *cid, size_t clen, msg_t *m,
                        uint8_t qos, const store_limits_t *lim, store_id_fn cb,
                        void *arg);
/* Record that entry `id` was sent with packet id `pid` / got PUBREC. */
void store_queue_mark(store_t *st, const char *cid, size_t clen,
                      uint64_t epoch, uint64_t id, uint16_t pid, uint8_t state,
                      store_done_fn cb, void *arg);
/* Remove entry `id` (PUBACK / PUBCOMP received). */
void store_queue_ack(store_t *st, const char *cid, size_t clen,
                     uint64_t epoch, uint64_t id, store_done_fn cb, void *arg);

/*
 * Up to `max` entries of a session's queue with an id above `after`, in
 * order (the cluster's sweep: entries whose notification to the owner node
 * was lost). Entries handed to the callback are borrowed.
 */
typedef void (*store_entries_fn)(void *arg, int status,
                                 const store_entry_t *entries, size_t n);
void store_queue_since(store_t *st, const char *cid, size_t clen,
                       uint64_t after, uint32_t max, store_entries_fn cb,
                       void *arg);

/* Inbound QoS 2 packet ids awaiting PUBREL. */
void store_inbound_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg);
void store_inbound_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg);

/* Retained messages: set (replaces), delete, load all. */
void store_retain_put(store_t *st, msg_t *m, store_done_fn cb, void *arg);
void store_retain_del(store_t *st, const char *topic, size_t tlen,
                      store_done_fn cb, void *arg);
void store_retain_load(store_t *st, store_msgs_fn cb, void *arg);

#endif
