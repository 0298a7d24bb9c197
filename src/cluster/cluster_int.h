/*
 * cluster_int.h - the cluster's own structures, shared by the files of
 * src/cluster/ (not a public header; the broker sees starling/cluster.h).
 *
 *   cluster.c   start, stop, peers, liveness (heartbeat, the store's mark),
 *               dead and restarted nodes
 *   bus_conn.c  the bus: subscriber connection and its health, publishing
 *               and batching records, barriers, dispatch of what arrives
 *   routes.c    route tables (filter -> nodes), shared-group routes,
 *               forwarding a message to the nodes that want it
 *   sessions.c  session owners (claims), persistent-session records,
 *               notices of queued entries
 *   bus.c       the record encodings (pure; bus.h)
 */
#ifndef STARLING_CLUSTER_INT_H
#define STARLING_CLUSTER_INT_H

#include "bus.h"
#include "../store/rclient.h"
#include "../store/redis_url.h"

#include "starling/cluster.h"
#include "starling/map.h"
#include "starling/msg.h"
#include "starling/topic.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct redisAsyncContext;

#define HEARTBEAT_MS 1000
#define ALIVE_TTL_MS 5000
#define RELOAD_EVERY 5           /* heartbeats between full route reloads */
#define BATCH_MAX (256u * 1024)  /* flush a node's batch at this size */
#define MAX_NODES 256
/* After the store lost its data (restarted without persistence), no node
 * is declared dead for this long: every live node writes its heartbeat
 * again within its reconnect backoff (2 s) plus one heartbeat. */
#define STORE_LOSS_GRACE_MS 6000
#define BARRIER_MAX_MS 2000      /* a barrier not back by then is let go */
/* The bus is checked with a probe record to our own channel every
 * heartbeat: silent for this long while subscribed, it is reconnected
 * (a half-open connection, or the bus slot moved to another store node). */
#define BUS_SILENT_MS 4000
/* While the bus is down, notices of queued messages are lost: the owner
 * reads its sessions' queues this often instead. */
#define BUS_DOWN_SWEEP_MS 250

/* Called once the reply of the PUBLISH carrying a record arrived. */
typedef struct waiter {
    cluster_done_fn fn;
    void *arg;
} waiter_t;

typedef struct waiters {
    waiter_t *w;
    size_t n, cap;
} waiters_t;

/* A barrier: waits for its own record to come back on our bus channel. */
typedef struct barrier {
    struct barrier *next;
    uint64_t token;
    uint64_t at;               /* sl_mono_ms() when asked */
    cluster_done_fn fn;
    void *arg;
} barrier_t;

typedef struct peer {
    char *id;
    bus_buf_t batch;           /* frame of the records waiting for the flush */
    bool alive;
    bool dead_handled;
    bool seq_known;            /* rseq holds its last route event */
    uint32_t rseq;
} peer_t;

/* A shared group's route: the nodes with an online member of it. */
typedef struct groute {
    char *share;               /* "$share/<g>/<f>" */
    size_t slen;
    uint32_t n;                /* nodes in on[] */
    uint32_t rr;               /* round robin over the nodes */
    bool on[MAX_NODES];
} groute_t;

typedef struct owner {
    uint16_t node;             /* peer index, or SELF */
    uint64_t epoch;
    msg_t *will;               /* the session's will, for a dead owner */
    uint32_t will_delay;
    uint32_t expiry;
} owner_t;

#define SELF 0xFFFF

struct cluster {
    struct event_base *base;
    cluster_hooks_t hooks;
    store_t *store;
    bool batch;                /* cluster_batch */
    redis_url_t url;
    rclient_t *cl;
    char *id;
    size_t frame_head;         /* a frame's header: our id */
    char chan_self[300];
    char chan_all[300];
    peer_t peers[MAX_NODES];
    size_t n_peers;
    bus_buf_t all;             /* broadcast batch (each batch is a frame) */
    waiters_t all_wait;        /* to call when `all` is published */
    bus_buf_t selfb;           /* barrier records, to our own channel */
    barrier_t *barriers, *barriers_tail;
    uint64_t next_token;
    trie_t *routes;            /* filter -> (peer index + 1) */
    trie_t *gtrie;             /* inner filter -> groute_t (key = pointer) */
    map_t *groutes;            /* "$share/g/f" -> groute_t */
    groute_t **gm;             /* scratch: the groups a topic matches */
    uint32_t n_gm, cap_gm;
    uint32_t rseq;             /* our last route event's number */
    map_t *local;              /* filter -> count of online subscribers here */
    map_t *owners;             /* cid -> owner_t */
    struct redisAsyncContext *sub;  /* the bus subscriber connection */
    struct event *beat;
    struct event *flush;
    struct event *resub;
    struct event *downsweep;   /* sweeps while the bus is down */
    bool bus_up;               /* both channels subscribed */
    uint64_t bus_down_at;      /* sl_mono_ms() the bus was lost; 0 = up */
    uint64_t bus_conn_at;      /* sl_mono_ms() of the current connection */
    uint64_t bus_heard_at;     /* sl_mono_ms() of the last frame received */
    uint64_t bus_losses, bus_resubs;
    unsigned beats;
    bool stopping;
    uint64_t sent, received;
    uint64_t resyncs;          /* route tables reloaded after a gap */
    char mark[96];             /* the store's sl:mark when we first saw it */
    uint64_t grace_until;      /* sl_mono_ms(): no death declared before */
};

/* ---- cluster.c --------------------------------------------------------- */
/* The index of peer `id`, added when `add` and unknown; -1 when absent (or
 * no room). */
int cl_peer_index(cluster_t *c, const char *id, size_t len, bool add);
/* 'Z': peer `from` (re)started. */
void cl_rx_reset(cluster_t *c, int from, const bus_reset_t *r);

/* ---- bus_conn.c -------------------------------------------------------- */
/* A write whose reply only counts as an error: ctx is a cluster_t **. */
void cl_on_published(void *ctx, const struct redisReply *r, int status);
/* VERB <prefix><key> [arg]. */
void cl_send_key(cluster_t *c, const char *verb, const char *key,
                 const void *arg, size_t alen, unsigned flags);
/* A record was added to batch w: published at the end of this loop
 * iteration, or now when the batch is full or batching is off. */
void cl_batched(cluster_t *c, bus_buf_t *w);
/* Publish every batch now. */
void cl_flush(cluster_t *c);
/* Let go of the barriers up to `token` (all: UINT64_MAX), or of those
 * older than BARRIER_MAX_MS when `stale`. */
void cl_barriers_release(cluster_t *c, uint64_t token, bool stale,
                         int status);
/* Connect the bus (when not connected), through CLUSTER SLOTS on a store
 * cluster. */
void cl_bus_connect(cluster_t *c);
/* Every heartbeat: probe the bus, reconnect it when silent. */
void cl_bus_check(cluster_t *c);
/* Create the bus's events (SL_OK or SL_ENOMEM); free them. */
int cl_bus_events(cluster_t *c);
void cl_bus_events_free(cluster_t *c);
/* Drop the subscriber connection at once (no callbacks). */
void cl_bus_close(cluster_t *c);

/* ---- routes.c ---------------------------------------------------------- */
/* Add or remove our route f (store and broadcast). */
void cl_route_event(cluster_t *c, const char *f, size_t flen, bool add);
/* Write (and broadcast) every route of ours again. */
void cl_routes_announce(cluster_t *c);
/* Forget every route of a peer. */
void cl_routes_drop_peer(cluster_t *c, int peer);
/* Read a peer's route table from the store (replaces what we hold). */
void cl_routes_load(cluster_t *c, int peer);
/* 'R' from peer `from`. */
void cl_rx_route(cluster_t *c, int from, const bus_route_t *r);
void cl_groute_free(void *v);

/* ---- sessions.c -------------------------------------------------------- */
void cl_rx_claim(cluster_t *c, int from, bus_claim_t *r);
void cl_rx_psub(cluster_t *c, const bus_psub_t *r);
void cl_rx_ended(cluster_t *c, const bus_ended_t *r);
void cl_rx_queued(cluster_t *c, const bus_queued_t *r);
void cl_rx_offline(cluster_t *c, const bus_offline_t *r);
/* Publish the wills of peer `peer`'s clean sessions (known from their
 * claims); returns how many. */
size_t cl_owners_publish_wills(cluster_t *c, int peer);
/* Forget every session owned by peer `peer`. */
void cl_owners_drop_node(cluster_t *c, int peer);
void cl_owner_free(void *v);

#endif
