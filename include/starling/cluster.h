/*
 * cluster.h - nodes sharing one Redis-protocol store (design.md §5).
 *
 * The broker starts the cluster with a few configuration values and a
 * table of hooks: everything the cluster asks of the node it runs in
 * (deliver a message another node sent, close a connection a newer claim
 * replaced, ...) goes through those hooks, and everything the node tells
 * the cluster goes through the functions below. On a single node (a store
 * that is not redis:// or redis+cluster://) cluster_start() gives NULL and
 * every function here accepts NULL and does nothing.
 *
 * The hooks run from the event loop, not from inside a cluster_* call,
 * with two exceptions: group_known is asked during cluster_forward(), and
 * cluster_free() fails the store commands still pending, which counts
 * them through store_error. Strings come with their length and are not
 * NUL-terminated; a message passed to a hook stays the caller's (take a
 * reference to keep it).
 */
#ifndef STARLING_CLUSTER_H
#define STARLING_CLUSTER_H

#include "starling/msg.h"
#include "starling/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct cluster cluster_t;

/* What the cluster needs from the node. Every hook is required. */
typedef struct cluster_hooks {
    void *ctx;                   /* passed to every hook */
    /* A message another node forwarded: for the subscribers here, except
     * persistent sessions at QoS >= 1 (the publishing node queued it). */
    void (*deliver_remote)(void *ctx, msg_t *m);
    /* Another node picked this one for a message to the shared group
     * `share` ("$share/<g>/<f>"): hand it to one member here. */
    void (*group_remote)(void *ctx, const char *share, size_t slen,
                         msg_t *m);
    /* Whether the shared group `share` has a member known here (online or
     * persistent); such groups are routed by the node itself. */
    bool (*group_known)(void *ctx, const char *share, size_t slen);
    /* A retained message set (or, with an empty payload, cleared) on
     * another node: update this node's index. */
    void (*retained)(void *ctx, msg_t *m);
    /* Another node queued entry `qid` for client `cid`: deliver it if the
     * session is online here. */
    void (*queued_notice)(void *ctx, const char *cid, size_t clen, msg_t *m,
                          uint8_t qos, bool retain, const uint32_t *subids,
                          uint8_t n_subids, uint64_t qid);
    /* Client `cid` was claimed elsewhere with `epoch`: a connection here
     * with an older claim is closed (taken over). */
    void (*claimed_elsewhere)(void *ctx, const char *cid, size_t clen,
                              uint64_t epoch);
    /* A persistent subscription added (add) or removed on another node.
     * opts: bits 0-1 QoS, 2 no local, 3 retain as published, 4-5 retain
     * handling. */
    void (*psub)(void *ctx, const char *cid, size_t clen, const char *f,
                 size_t flen, uint8_t opts, uint32_t sub_id, bool add);
    /* A persistent session ended on another node. */
    void (*session_ended)(void *ctx, const char *cid, size_t clen);
    /* Whether client `cid` is connected here. */
    bool (*connected)(void *ctx, const char *cid, size_t clen);
    /* Publish a will of client `cid` now (delay 0) or after `delay`
     * seconds unless the client connects again first. */
    void (*will_after)(void *ctx, const char *cid, size_t clen, msg_t *will,
                       uint32_t delay);
    /* Client `cid` connected somewhere: a delayed will is not sent. */
    void (*cancel_will)(void *ctx, const char *cid, size_t clen);
    /* Read the queues of the stored sessions online here for entries
     * whose notice was lost. */
    void (*sweep)(void *ctx);
    /* Read the persistent-session index and the retained messages from
     * the store again (bus records were missed). */
    void (*resync)(void *ctx);
    /* A store or bus command failed (counted). */
    void (*store_error)(void *ctx);
} cluster_hooks_t;

typedef struct cluster_conf {
    const char *store_url;       /* the store URL (conf `store`) */
    const char *node_id;         /* conf `node_id`; NULL: generated */
    bool batch;                  /* conf `cluster_batch` */
    store_t *store;              /* the node's store: a dead node's
                                    sessions are marked offline through it */
} cluster_conf_t;

/* Join the cluster when conf->store_url is a Redis-protocol URL (*out is
 * NULL otherwise: a single node). The hooks are copied. SL_OK, SL_EINVAL
 * (bad URL) or SL_ENOMEM; logged. */
int cluster_start(cluster_t **out, struct event_base *base,
                  const cluster_conf_t *conf, const cluster_hooks_t *hooks);
/* Leave: routes and registration go, the heartbeat stops. */
void cluster_stop(cluster_t *c);
void cluster_free(cluster_t *c);

/* This node's id; NULL on a single node. */
const char *cluster_node_id(const cluster_t *c);

typedef struct cluster_stats {
    uint64_t nodes, routes;      /* live nodes (this one too); routes held */
    uint64_t sent, received;     /* bus frames */
    uint64_t resyncs;            /* route tables reloaded after a gap */
    uint64_t bus_losses;         /* bus connection lost (or never made) */
    uint64_t bus_resubs;         /* bus subscribed again after a loss */
    bool bus_up;                 /* both bus channels subscribed now */
} cluster_stats_t;
void cluster_stats(const cluster_t *c, cluster_stats_t *st);

/* ---- routes and messages ----------------------------------------------- */

/* One more (delta > 0) or one less online subscriber here with filter f
 * ("$share/<g>/<f>" whole for a shared subscription). */
void cluster_route_ref(cluster_t *c, const char *f, size_t flen, int delta);
/* Send a locally published message to every node with a matching route
 * (and, for a shared group with members on other nodes only, to one of
 * those nodes). */
void cluster_forward(cluster_t *c, const msg_t *m);

typedef void (*cluster_done_fn)(void *arg, int status);
/* Broadcast a retained message (set or cleared) to every node's index;
 * true when fn(arg, status) will be called once the store took the
 * broadcast (the publisher's ack waits for it), false on a single node. */
bool cluster_retain(cluster_t *c, const msg_t *m, cluster_done_fn fn,
                    void *arg);
/* Call fn(arg, status) once every bus record published before this call
 * has been received here (a record to ourselves comes back after them);
 * SL_EIO when the bus failed or 2 s passed. False (and no call) on a
 * single node or while the bus is down. */
bool cluster_barrier(cluster_t *c, cluster_done_fn fn, void *arg);

#define CLUSTER_SELF (-1)
#define CLUSTER_NONE (-2)
/* Which node's member of shared group `share` gets the next message: this
 * node (CLUSTER_SELF; only offered when `self`, i.e. a member is online
 * here), a peer index, or CLUSTER_NONE when no node has a member online. */
int cluster_group_pick(cluster_t *c, const char *share, size_t slen,
                       bool self);
/* Send m to peer `node` for one member of its part of a shared group. */
void cluster_send_group(cluster_t *c, int node, const char *share,
                        size_t slen, const msg_t *m);

/* ---- sessions ---------------------------------------------------------- */

/* The node holding client `cid`'s session online: CLUSTER_SELF, a peer
 * index, or CLUSTER_NONE (offline or unknown). */
int cluster_owner(const cluster_t *c, const char *cid, size_t clen);
/* Tell the owner node of a persistent session about queue entry `qid`;
 * false when no other node owns it. */
bool cluster_notify_queued(cluster_t *c, const char *cid, size_t clen,
                           const msg_t *m, uint8_t qos, bool retain,
                           const uint32_t *subids, uint8_t n, uint64_t qid);
/* Client `cid` is online here under claim `epoch` (the store's epoch for a
 * stored session, `stored`; else the CONNECT time). `expiry` is the
 * session expiry (0: a clean session); `will` may be NULL. */
void cluster_claimed(cluster_t *c, const char *cid, size_t clen, bool stored,
                     uint64_t epoch, uint32_t expiry, uint32_t will_delay,
                     const msg_t *will);
/* The connection of claim `epoch` went offline. */
void cluster_offline(cluster_t *c, const char *cid, size_t clen, bool stored,
                     uint64_t epoch);
/* A persistent subscription added (add) or removed here; opts as in
 * cluster_hooks_t.psub. */
void cluster_psub(cluster_t *c, const char *cid, size_t clen, const char *f,
                  size_t flen, uint8_t opts, uint32_t sub_id, bool add);
/* A persistent session ended here. */
void cluster_ended(cluster_t *c, const char *cid, size_t clen);

#endif
