/*
 * internal.h - the broker's own structures, shared by the files of
 * src/broker/ and src/net/ (not a public header).
 *
 *   broker_t   the node: config, store, online sessions, subscription trie,
 *              retained messages, persistent-session index, counters.
 *   sess_t     one client connection and its MQTT session state machine
 *              (session.c, one handler per packet type in handle_*.c style
 *              sections); the transport is a bufferevent (net/conn.c).
 *   subr_t     a subscriber as the trie sees it: a client id, its
 *              subscriptions, and the online session if any. A clean
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

struct bufferevent;
struct evconnlistener;
struct event;
struct ssl_ctx_st;

typedef struct sess sess_t;
typedef struct conn conn_t;

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
    sess_t *online;              /* the live session on this node, or NULL */
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

typedef struct dlv {
    struct dlv *next;
    msg_t *msg;
    group_t *group;              /* shared subscription it came through */
    uint64_t qid;                /* store queue entry id; 0 = not persisted */
    uint16_t pid;                /* 0 until sent */
    uint8_t qos;
    uint8_t state;               /* STORE_SENT / STORE_PUBREC */
    bool retain;                 /* RETAIN flag to send */
    uint8_t n_subids;
    uint32_t subids[4];          /* v5 subscription identifiers (first 4) */
} dlv_t;

typedef struct dlvq {
    dlv_t *head, *tail;
    uint32_t len;
} dlvq_t;

enum sess_state {
    SESS_NEW,                    /* accepted, waiting for CONNECT */
    SESS_CLAIMING,               /* CONNECT received, waiting for the store */
    SESS_ONLINE,                 /* CONNACK sent */
    SESS_CLOSING,                /* closing: flushing output, no more input */
    SESS_CLOSED,                 /* transport gone; freed at refs 0 */
};

struct sess {
    /* Ordered by size so an idle client costs as little as possible. */
    struct broker *b;
    struct conn *conn;           /* the transport; NULL once closed */
    struct sess *prev_all, *next_all;  /* broker->all list */
    char *peer;                  /* "address:port", for logs */
    char *cid;                   /* from CONNECT */
    char *username;
    msg_t *will;
    subr_t *subr;                /* NULL for a clean session until SUBSCRIBE */
    uint64_t epoch;              /* store epoch (persistent sessions) */
    uint64_t connected_ms;       /* CONNECT time: a clean session's epoch */
    uint64_t max_qid;            /* every queue id up to here was seen */

    /* outbound (broker -> client) */
    dlvq_t inflight;             /* sent, awaiting ack; in send order */
    dlvq_t pending;              /* waiting for the inflight window */
    map_t *alias_out;            /* topic -> alias number (v5) */
    map_t *qseen;                /* queue ids seen above max_qid */

    /* inbound (client -> broker) */
    uint16_t *in_qos2;           /* packet ids awaiting PUBREL */
    char **alias_in;             /* v5 alias -> topic, [max_topic_alias+1] */

    /* auth */
    auth_identity_t *authid;
    char *authz_topic;           /* decision that came back later */

    uint32_t refs;
    enum sess_state state;
    uint32_t clen;
    uint32_t expiry;             /* session expiry interval, s */
    uint32_t will_delay;
    uint32_t window;             /* min(max_inflight, client receive max) */
    uint32_t max_packet_out;     /* client's maximum packet size (v5) */
    uint32_t n_in_qos2, cap_in_qos2;
    uint32_t in_flight_in;       /* QoS 1 PUBLISH not yet acknowledged */
    uint32_t n_subs;
    uint32_t authz_tlen;
    int authz_act;
    int authz_result;
    uint16_t keepalive;
    uint16_t next_pid;
    uint16_t alias_max_out;      /* client's topic alias maximum (v5) */
    uint16_t alias_next;
    uint8_t version;
    bool clean;
    bool persistent;             /* session outlives the connection */
    bool disconnect_normal;      /* DISCONNECT received (no will) */
    bool expiry_capped;          /* expiry lowered to max_session_expiry */
    bool keepalive_overridden;   /* v5: server keep alive sent */
    bool paused;                 /* input waits for the store or auth */
    bool assigned_id;            /* v5: the broker chose the client id */
    bool taken_over;
    bool resumed_pids;           /* pending holds deliveries with a pid */
    bool request_problem_info;
    bool redo;                   /* the current packet is decoded again */
    bool sweeping;               /* a sweep of its queue is under way */
};

typedef struct broker_stats {
    uint64_t connects, disconnects, msgs_in, msgs_out, bytes_in, bytes_out;
    uint64_t dropped_queue_full, dropped_too_large, dropped_expired;
    uint64_t protocol_errors, store_errors, wills_published;
    uint64_t tls_handshake_errors;   /* TLS connections that never got up */
} broker_stats_t;

struct broker {
    struct event_base *base;
    sl_conf_t *conf;
    store_t *store;
    auth_t *auth;
    cluster_t *cluster;          /* NULL on a single node */
    struct evconnlistener *listener;
    struct evconnlistener *tls_listener;  /* tls_port (net/listener.c) */
    struct ssl_ctx_st *tls_ctx;  /* the TLS listener's SSL_CTX */
    struct event *tick;
    struct event *flush;         /* writes dirty connections */
    struct event *reload;        /* retries a failed start-up load */
    int loads_pending;           /* start-up (or resync) loads running */
    bool load_failed;            /* one of them failed: all run again */
    bool loaded;                 /* the start-up loads are done */
    conn_t *dirty;               /* connections with new output */
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
    subr_t *match_from;
    struct match *matches;
    uint32_t n_matches, cap_matches;
    group_t **gmatches;
    uint32_t n_gmatches, cap_gmatches;

    broker_stats_t stats;
};

/* ---- session.c --------------------------------------------------------- */
sess_t *sess_new(struct broker *b, const char *peer);
void sess_ref(sess_t *s);
void sess_unref(sess_t **s);
/* Handle the complete packets at the start of buf; returns the bytes
 * consumed (stops at a partial packet, a pause or a close). */
size_t sess_feed(sess_t *s, const uint8_t *buf, size_t len);
/* The transport closed or failed. */
void sess_on_transport_closed(sess_t *s, const char *why);
/* Close the session: v5 DISCONNECT with `reason` when >= 0x80 and allowed,
 * flush output, then drop the transport. `why` is logged. */
void sess_close(sess_t *s, uint8_t reason, const char *why);
/* Deliver a message to an online session (router). qid != 0 for messages
 * already in the session's store queue. */
void sess_deliver(sess_t *s, msg_t *m, uint8_t qos, bool retain,
                  const uint32_t *subids, uint8_t n_subids, uint64_t qid,
                  group_t *group);
const char *sess_name(const sess_t *s);
/* Queue-entry bookkeeping of a connection (dedup of notices and sweeps). */
bool sess_qid_new(sess_t *s, uint64_t qid);
void sess_qid_swept(sess_t *s, const store_entry_t *e, size_t n);

/* The epoch that orders claims of one client id across the cluster: the
 * store's for stored sessions, the CONNECT time for clean ones (store
 * epochs are at least the claim time in ms too). */
static inline uint64_t sess_claim_epoch(const sess_t *s)
{
    return s->epoch ? s->epoch : s->connected_ms;
}

/* ---- router.c ---------------------------------------------------------- */
/* Completion of a publish: called once when every store write is done. */
typedef void (*route_done_fn)(void *arg, int status, bool matched);
/* Route a message: retained update, local deliveries, persistent queues.
 * `from` (may be NULL) is the publishing session, for no-local. */
void router_publish(struct broker *b, sess_t *from, msg_t *m,
                    route_done_fn done, void *arg);
/* Set (or, with an empty payload, clear) the retained message of m's topic
 * in this node's index. SL_OK or SL_ENOMEM. */
int router_retained_index(struct broker *b, msg_t *m);
/* Send retained messages matching `filter` to a session (after SUBACK). */
void router_send_retained(struct broker *b, sess_t *s, const char *filter,
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
/* Attach or detach the online session; keeps the cluster's routes (filters
 * with an online subscriber here) current. */
void subs_set_online(struct broker *b, subr_t *r, sess_t *s);

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

/* ---- net/conn.c -------------------------------------------------------- */
conn_t *conn_new(struct broker *b, int fd, sess_t *s);
/* The TLS variant: a TLS server handshake runs before the session sees a
 * byte; NULL when out of memory (the fd is then not closed). */
conn_t *conn_new_tls(struct broker *b, int fd, sess_t *s,
                     struct ssl_ctx_st *ctx);
/* Close the socket and free; the session must drop its pointer. */
void conn_free(conn_t *c);
/* Start reading, with the CONNECT deadline as the first timeout. */
int conn_start(conn_t *c, int connect_timeout);
/* Read timeout in ms (keepalive); 0 = none. */
void conn_set_timeout(conn_t *c, uint64_t ms);
void conn_write(conn_t *c, const void *p, size_t n);
/* Add a shared buffer without copying; cleanup(p, n, arg) when written. */
void conn_write_ref(conn_t *c, const void *p, size_t n,
                    void (*cleanup)(const void *, size_t, void *), void *arg);
size_t conn_out_len(const conn_t *c);
/* Feed input kept while the session was paused; resume reading. */
void conn_resume(conn_t *c);
/* Close the transport once its output has been written. */
void conn_close_after_flush(sess_t *s);
/* Write every connection with pending output (end of a loop iteration). */
void conn_flush_all(struct broker *b);

/* ---- sys.c ------------------------------------------------------------- */
/* Publish the $SYS/broker/... figures (retained). */
void sys_publish(struct broker *b);

/* ---- net/listener.c ---------------------------------------------------- */
/* Bind the plain and TLS listeners (SL_EIO when a port is taken; SL_EINVAL
 * for an unusable certificate or key); accepting starts with
 * listener_enable(), once the node is ready to serve. */
int listener_start(struct broker *b);
void listener_enable(struct broker *b);
void listener_stop(struct broker *b);

#endif
