/*
 * internal.h - the broker's own structures, shared by the files of
 * src/broker/ and src/net/ (not a public header).
 *
 *   broker_t   the node: config, store, online sessions, subscription trie,
 *              retained messages, persistent-session index, counters.
 *   sess_t     one client connection and its MQTT session state machine
 *              (session.c, one handler per packet type in handle_*.c style
 *              sections); the transport is a conn_t (src/net/net.h).
 *   subr_t     a subscriber as the trie sees it: a client id, its
 *              subscriptions, and the sink of its online session if any
 *              (sink.h: the router reaches sessions only through it). A clean
 *              session owns its subr_t; a persistent session's subr_t lives
 *              in broker->psessions for as long as the session exists, so
 *              messages for it are queued in the store while it is offline.
 *   dlv_t      one outbound QoS 1/2 delivery to a session (in flight or
 *              waiting for the window), referencing the shared message.
 *   pub_t      an inbound PUBLISH waiting for the store writes it needs
 *              before the publisher is acknowledged.
 */
#ifndef STARLING_BROKER_INTERNAL_H
#define STARLING_BROKER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "starling/broker.h"
#include "starling/cluster.h"
#include "starling/conf.h"
#include "starling/auth.h"
#include "starling/map.h"
#include "starling/mqtt.h"
#include "starling/msg.h"
#include "starling/store.h"
#include "starling/topic.h"

#include "sink.h"

struct event;

typedef struct sess sess_t;
typedef struct conn conn_t;
typedef struct net net_t;

/* One subscription of one subscriber. */
typedef struct sub {
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling;
    uint32_t sub_id;             /* 0 = none */
} sub_t;

/* The options byte the store and the cluster keep: bits 0-1 QoS, 2 no
 * local, 3 retain as published, 4-5 retain handling. */
static inline uint8_t sub_opts(const sub_t *sub)
{
    return (uint8_t)(sub->qos | sub->no_local << 2 |
                     sub->retain_as_published << 3 |
                     sub->retain_handling << 4);
}

static inline sub_t sub_from_opts(uint8_t opts, uint32_t sub_id)
{
    return (sub_t){.qos = opts & 3, .no_local = (opts >> 2) & 1,
                   .retain_as_published = (opts >> 3) & 1,
                   .retain_handling = (opts >> 4) & 3, .sub_id = sub_id};
}

typedef struct subr {
    uint32_t refs;
    bool persistent;
    bool gone;                   /* removed from the index */
    char *cid;
    size_t clen;
    map_t *subs;                 /* filter -> sub_t */
    void *online;                /* the sink of the live session on this
                                    node (broker->sink), or NULL */
    uint64_t match_gen;          /* router scratch: last publish that matched */
    uint32_t match_idx;
} subr_t;

/*
 * A shared subscription group "$share/<name>/<filter>": one trie entry
 * (key tagged with bit 0) whose members take turns receiving messages.
 */
typedef struct member {
    subr_t *r;
    sub_t *sub;                  /* owned by r->subs */
} member_t;

typedef struct group {
    uint32_t refs;
    char *share;                 /* "$share/<name>/<filter>" */
    size_t slen;
    const char *filter;          /* points into share */
    size_t flen;
    member_t *members;
    uint32_t n, cap;
    uint32_t rr;                 /* round-robin position */
    uint64_t match_gen;
} group_t;

#define GROUP_TAG ((uintptr_t)1)

typedef struct broker_stats {
    uint64_t connects, disconnects, msgs_in, msgs_out, bytes_in, bytes_out;
    uint64_t dropped_queue_full, dropped_too_large, dropped_expired;
    uint64_t protocol_errors, store_errors, wills_published;
} broker_stats_t;

struct broker {
    struct event_base *base;
    sl_conf_t *conf;
    store_t *store;
    auth_t *auth;
    cluster_t *cluster;          /* NULL on a single node */
    net_t *net;                  /* listeners and connections */
    struct event *tick;
    struct event *reload;        /* retries a failed start-up load */
    int loads_pending;           /* start-up (or resync) loads running */
    bool load_failed;            /* one of them failed: all run again */
    bool loaded;                 /* the start-up loads are done */
    const sink_ops_t *sink;      /* operations on subr_t.online (sink.h) */
    bool stopping;

    map_t *clients;              /* cid -> sess_t (with a CONNECT) */
    map_t *psessions;            /* cid -> subr_t (persistent sessions) */
    map_t *delayed_wills;        /* cid -> will_t (v5 will delay) */
    trie_t *subs;                /* filter -> (subr_t*) -> sub_t* */
    rtree_t *retained;           /* topic -> msg_t (a reference each) */
    map_t *groups;               /* "$share/g/f" -> group_t */
    char **deny;                 /* subscribe_deny filters */
    size_t n_deny;
    sess_t *all;                 /* every connection */
    uint32_t n_conns;
    uint64_t id_seq;             /* generated client ids */
    uint64_t started_ms;         /* monotonic */
    unsigned ticks;

    /* router scratch (one publish at a time) */
    uint64_t match_gen;
    const subr_t *match_from;
    struct match *matches;
    uint32_t n_matches, cap_matches;
    group_t **gmatches;
    uint32_t n_gmatches, cap_gmatches;

    broker_stats_t stats;
};

/* ---- router.c ---------------------------------------------------------- */
/* Completion of a publish: called once when every store write is done. */
typedef void (*route_done_fn)(void *arg, int status, bool matched);
/* Route a message: retained update, local deliveries, persistent queues.
 * `from` (may be NULL) is the publisher's subscriber record, for no-local. */
void router_publish(struct broker *b, const subr_t *from, msg_t *m,
                    route_done_fn done, void *arg);
/* Set (or, with an empty payload, clear) the retained message of m's topic
 * in this node's index. SL_OK or SL_ENOMEM. */
int router_retained_index(struct broker *b, msg_t *m);
/* Send retained messages matching `filter` to subscriber r (after SUBACK):
 * to its online sink, or through its store queue for a persistent
 * subscriber at QoS >= 1. */
void router_send_retained(struct broker *b, subr_t *r, const char *filter,
                          size_t flen, const sub_t *sub);
void router_fini(struct broker *b);
/* A message another node forwarded: local subscribers only (persistent
 * sessions at QoS >= 1 were queued by the publishing node). */
void router_publish_remote(struct broker *b, msg_t *m);
/* Another node picked this node for a message to shared group `share`. */
void router_group_remote(struct broker *b, const char *share, size_t slen,
                         msg_t *m);
/* Deliver m to one member of a shared group other than `except` (used when
 * a member leaves with messages it did not acknowledge). */
void router_group_deliver(struct broker *b, group_t *g, msg_t *m,
                          const subr_t *except);
void group_unref(group_t **g);

/* ---- subs.c (subscriber index) ----------------------------------------- */
subr_t *subr_new(const char *cid, size_t clen, bool persistent);
void subr_ref(subr_t *r);
void subr_unref(subr_t **r);
/* Add/replace a subscription in r and the trie. *existed tells whether the
 * filter was already subscribed. */
int subs_add(struct broker *b, subr_t *r, const char *filter, size_t flen,
             const sub_t *sub, bool *existed);
int subs_remove(struct broker *b, subr_t *r, const char *filter, size_t flen);
/* Remove every subscription of r from the trie (and r's map). */
void subs_clear(struct broker *b, subr_t *r);
/* Attach (the sink of the online session, broker->sink) or detach (NULL);
 * keeps the cluster's routes (filters with an online subscriber here)
 * current. */
void subs_set_online(struct broker *b, subr_t *r, void *sink);

/* ---- broker.c ---------------------------------------------------------- */
void broker_conn_gone(struct broker *b, sess_t *s);
void broker_publish_will(struct broker *b, sess_t *s);
/* Publish a will now (delay 0) or after `delay` s unless client `cid`
 * connects again first (anywhere in the cluster). */
void broker_will_after(struct broker *b, const char *cid, size_t clen,
                       msg_t *m, uint32_t delay);
/* A client with this id connected: a delayed will (v5) is not sent. */
void broker_cancel_delayed_will(struct broker *b, const char *cid,
                                size_t clen);
/* Read the queues of every online stored session for entries whose notice
 * never came (the cluster's bus was down); each session's read pages on
 * until it caught up. One read per session at a time. */
void broker_sweep(struct broker *b);
/* Read the persistent-session index and the retained messages from the
 * store again (what the bus carried while it was down was missed). */
void broker_resync(struct broker *b);

/* ---- sys.c ------------------------------------------------------------- */
/* Publish the $SYS/broker/... figures (retained). */
void sys_publish(struct broker *b);

#endif
