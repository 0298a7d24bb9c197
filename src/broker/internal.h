/*
 * internal.h - the node (broker_t) as the files of src/broker/ share it:
 * config, store, auth, cluster, transport, online sessions, subscription
 * trie, retained messages, persistent-session index, counters; and the
 * functions of broker.c the other files call. Not a public header.
 *
 * The other parts have a header each: session.h (sess_t, one client
 * connection), delivery.h (dlv_t, outbound), connect.h, publish.h,
 * subscribe.h (one per packet concern), subs.h (subr_t and the subscriber
 * index), router.h (publish -> subscribers), sink.h (how the router
 * reaches a session), sys.h ($SYS).
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
#include "subs.h"

struct event;

typedef struct conn conn_t;
typedef struct net net_t;

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

#endif
