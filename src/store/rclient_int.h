/*
 * rclient_int.h - what the files of the Redis client share (private to
 * rclient*.c; its users see rclient.h only).
 *
 * Each request lives in exactly one queue until its completion runs:
 *   node->wait    not sent yet (connection not ready), in issue order
 *   node->sent    written to hiredis, in reply order
 *   cl->unrouted  cluster: its slot has no known owner yet
 *   cl->later     to be dispatched again at the next tick (TRYAGAIN ...)
 *   cl->done      failed at submission, completed from a deferred event
 * A sent request's hiredis callback runs once (with a NULL reply when the
 * connection goes away): that is where it leaves node->sent.
 */
#ifndef STARLING_STORE_RCLIENT_INT_H
#define STARLING_STORE_RCLIENT_INT_H

#include "rclient.h"

#include "starling/slots.h"

#include <hiredis/async.h>

enum { N_DOWN, N_CONNECTING, N_HANDSHAKE, N_READY };

typedef struct rnode rnode_t;
typedef struct rreq rreq_t;

typedef struct rq {
    rreq_t *head, *tail;
    size_t n;
} rq_t;

struct rreq {
    rreq_t *next;
    rclient_t *cl;
    rnode_t *node;   /* where it waits or was sent */
    rnode_t *target; /* fixed destination (internal), or NULL */
    rclient_fn fn;
    void *ctx;
    uint64_t deadline; /* monotonic ms */
    int slot;          /* -1 = no key */
    int script;        /* -1 = no script */
    unsigned flags;
    uint8_t tries;
    bool asking;
    const char *cmd; /* the command in the protocol (RESP), as sent */
    size_t cmdlen;
};

/* Our side of one connection; lives until rclient_free(). */
struct rnode {
    rclient_t *cl;
    char *host;
    int port;
    char name[SLOTS_HOST_MAX + 16];
    redisAsyncContext *ac;
    int state;
    int hs_left;    /* handshake replies still expected */
    uint64_t since; /* connect start, monotonic ms */
    int backoff_ms;
    bool outage; /* a loss was reported, recovery not yet */
    bool ever_ready;
    bool broken; /* to be dropped from the deferred event */
    bool in_map;
    int drop_status;   /* status of sent requests on a loss */
    rreq_t *replay_at; /* last request put back in wait */
    struct event *retry;
    rq_t sent, wait;
};

struct rclient {
    struct event_base *base;
    const redis_url_t *url;
    bool cluster;
    bool closing;
    rnode_t **nodes;
    size_t n_nodes;
    uint16_t *owner; /* cluster: slot -> node index */
    bool have_map, refreshing, refresh_wanted;
    uint64_t last_refresh;
    rq_t unrouted, later, done;
    struct event *tick, *defer;
    const char *const *scripts;
    size_t n_scripts;
    char (*sha)[41];
    store_stats_t stats;
};

/* rclient.c: queues */
void rq_push(rq_t *l, rreq_t *q);
rreq_t *rq_pop(rq_t *l);
/* Insert after `after` (NULL = at the head). */
void rq_insert(rq_t *l, rreq_t *after, rreq_t *q);
void rq_remove(rq_t *l, rreq_t *q);

/* rclient.c: requests */
/* Run the completion and free the request. */
void rreq_complete(rreq_t *q, const struct redisReply *r, int status);
/* Send to the node routing picks, or wait in cl->unrouted for the map. */
void rreq_dispatch(rreq_t *q);
/* Write to n now if it is ready, else wait in n->wait. */
void rnode_submit(rnode_t *n, rreq_t *q);
/* Send an internal command to one node. */
void rnode_send(rnode_t *n, const rcmd_t *cmd, rclient_fn fn,
                const void *ctx, size_t ctxlen);

/* rclient_cmd.c: a request for c, its arguments written out, with copies
 * of the caller's ctx and tail (see rclient_send()). */
rreq_t *rreq_new(rclient_t *cl, const rcmd_t *c, rclient_fn fn,
                 const void *ctx, size_t ctxlen, const void *tail,
                 size_t taillen);

/* rclient_conn.c: connections */
/* A node for host:port added to cl->nodes, not connecting yet; NULL when
 * out of memory. */
rnode_t *rnode_new(rclient_t *cl, const char *host, int port);
/* Free a node whose connection is gone (rclient_free()). */
void rnode_free(rnode_t *n);
/* The node for host:port, created (and connecting) when new; NULL when out
 * of memory or nodes. */
rnode_t *rnode_get(rclient_t *cl, const char *host, int port);
/* Start connecting, unless connected or closing. */
void rnode_connect(rnode_t *n);
/* The connection is gone or must go (see rclient_conn.c): sent requests
 * fail with status, or wait again when RCLIENT_REPLAY. */
void rnode_lost(rnode_t *n, int status, bool free_ac);
/* Drop a connection whose oldest reply or whose set-up is overdue. */
void rnode_check(rnode_t *n, uint64_t now);

/* rclient_cluster.c: the slot map */
/* The map may be stale: refresh it now or at a coming tick. */
void rslots_want_refresh(rclient_t *cl);
/* From the tick: a refresh that is due. */
void rslots_tick(rclient_t *cl, uint64_t now);
/* A MOVED or ASK reply to q from n: true when q was sent again. */
bool rslots_redirect(rnode_t *n, rreq_t *q, const struct redisReply *r);

#endif
