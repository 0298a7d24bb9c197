/*
 * session.h - one client connection and its MQTT session (session.c):
 * the session struct, its life cycle, and the helpers the packet handlers
 * (connect.c, publish.c, subscribe.c, delivery.c) share.
 */
#ifndef STARLING_BROKER_SESSION_H
#define STARLING_BROKER_SESSION_H

#include "internal.h"
#include "delivery.h"

#include "starling/auth.h"
#include "starling/mqtt.h"

/* Free lists keep this many objects of a kind (pool.h). */
#define POOL_KEEP 4096

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
    struct pubheld *held_pub;    /* a PUBLISH waiting for its decision */

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
    bool sweeping;               /* a sweep of its queue is under way */
    bool ack_debt;               /* a queue entry's removal failed: the
                                  * next sweep reads the whole queue */
};

sess_t *sess_new(struct broker *b, const char *peer);
void sess_ref(sess_t *s);
void sess_unref(sess_t **s);
/* Handle the complete packets at the start of buf; returns the bytes
 * consumed (stops at a partial packet, a pause or a close). */
size_t sess_feed(sess_t *s, const uint8_t *buf, size_t len);
/* The transport closed or failed. */
void sess_on_transport_closed(sess_t *s, const char *why);
/* Close the session: for a v5 client online, DISCONNECT with the reason
 * code of `status` when it is a refusal (< 0; 0 closes without one),
 * flush output, then drop the transport. `why` is logged. */
void sess_close(sess_t *s, int status, const char *why);
const char *sess_name(const sess_t *s);

/* The epoch that orders claims of one client id across the cluster: the
 * store's for stored sessions, the CONNECT time for clean ones (store
 * epochs are at least the claim time in ms too). */
static inline uint64_t sess_claim_epoch(const sess_t *s)
{
    return s->epoch ? s->epoch : s->connected_ms;
}


/* The session's transport from now on (a new connection). */
void sess_attach(sess_t *s, conn_t *c);

/* ---- shared by the packet handlers ------------------------------------ */

/* Write an encoded packet to the client. */
void sess_send_out(sess_t *s, const mqtt_out_t *o);

/* Encode with CALL (writing into `o_`) into a stack buffer, or a heap one
 * when it is larger, and send it. */
#define SEND_ENCODED(s, CALL)                                                  \
    do {                                                                       \
        uint8_t stackbuf_[256];                                                \
        mqtt_out_t o_;                                                         \
        mqtt_out_init(&o_, stackbuf_, sizeof(stackbuf_));                      \
        CALL;                                                                  \
        if (o_.len > o_.cap) {                                                 \
            uint8_t *heap_ = malloc(o_.len);                                   \
            if (!heap_)                                                        \
                break;                                                         \
            mqtt_out_init(&o_, heap_, o_.len);                                 \
            CALL;                                                              \
            sess_send_out((s), &o_);                                           \
            free(heap_);                                                       \
        } else {                                                               \
            sess_send_out((s), &o_);                                           \
        }                                                                      \
    } while (0)

/* PUBACK/PUBREC/PUBREL/PUBCOMP; status SL_OK, SL_NOMATCH or a refusal
 * (its v5 reason code; a v3 ack carries none). */
void sess_send_ack(sess_t *s, mqtt_type_t type, uint16_t pid, int status);
/* An acknowledgement sent only once a store write completed: the context
 * for sess_on_stored_ack (a store_done_fn), or NULL when out of memory
 * (then the caller acknowledges at once). */
typedef struct ackctx {
    sess_t *s;
    mqtt_type_t type;
    uint16_t pid;
    int status;                  /* may be changed before the completion */
} ackctx_t;
ackctx_t *sess_ack_after(sess_t *s, mqtt_type_t type, uint16_t pid,
                         int status);
void sess_on_stored_ack(void *arg, int status);
/* A CONNACK refusing for `status` (its v5 or v3 code, reason.c). */
void sess_send_connack_refusal(sess_t *s, int version, int status);

/* The session's subscriber record (made on first use for a clean one). */
subr_t *sess_subr(sess_t *s);
/* What the auth module is told about this client; host is a buffer for
 * the address without its port. */
void sess_auth_client(const sess_t *s, auth_client_t *c, char *host,
                      size_t hlen);
/* May this session act on topic t? 1 allowed, 0 denied, -1: the answer
 * comes later through fn(arg, allowed). */
int sess_authz(const sess_t *s, authz_action_t act, const char *t,
               size_t tlen, int qos, bool retain, auth_check_fn fn,
               void *arg);
/* Take up input again after a wait, unless paused for something else. */
void sess_resume_input(sess_t *s);

#endif
