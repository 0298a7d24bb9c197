/*
 * delivery.h - messages from the broker to one session (delivery.c): the
 * outbound queue and inflight window, PUBLISH encoding, resend, and the
 * client's acknowledgements of what it received.
 */
#ifndef STARLING_BROKER_DELIVERY_H
#define STARLING_BROKER_DELIVERY_H

#include "internal.h"

typedef struct dlv {
    struct dlv *next;
    msg_t *msg;
    delivery_opts_t o;           /* QoS, RETAIN, subscription ids, queue
                                    entry, shared group (a reference) */
    uint16_t pid;                /* 0 until sent */
    uint8_t state;               /* STORE_SENT / STORE_PUBREC */
} dlv_t;

typedef struct dlvq {
    dlv_t *head, *tail;
    uint32_t len;
} dlvq_t;

/* Deliver a message to an online session. o->qid != 0 for messages already
 * in the session's store queue; o->group (QoS >= 1) is kept referenced
 * until the client acknowledged. */
void sess_deliver(sess_t *s, msg_t *m, const delivery_opts_t *o);
/* The session as a sink (sink.h): the sink pointer is the sess_t. */
extern const sink_ops_t sess_sink_ops;
/* Queue-entry bookkeeping of a connection (dedup of notices and sweeps). */
bool sess_qid_new(sess_t *s, uint64_t qid);
bool sess_qid_seen(const sess_t *s, uint64_t qid);
/* An entry the session's sweep read from its store queue: delivered when
 * not seen yet; removed from the store again when the client acknowledged
 * it but the store's removal was lost. */
void delivery_swept(sess_t *s, const store_entry_t *e);
void sess_qid_swept(sess_t *s, const store_entry_t *e, size_t n);

/* Send what the inflight window has room for. */
void delivery_pump(sess_t *s);
/* After a resume: resend what was in flight (DUP; PUBREL after PUBREC). */
void delivery_resend(sess_t *s);
/* A claimed session's stored queue into `pending`/`inflight`. */
void delivery_load_queue(sess_t *s, const store_claim_t *c);
/* The connection ends: unacknowledged shared-group messages of a clean
 * session go to another member; the queues are freed. */
void delivery_end(sess_t *s);
void dlvq_free(dlvq_t *q);

void handle_puback(sess_t *s, const mqtt_packet_t *p);
void handle_pubrec(sess_t *s, const mqtt_packet_t *p);
void handle_pubcomp(sess_t *s, const mqtt_packet_t *p);

#endif
