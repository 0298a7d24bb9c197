/*
 * sink.h - how the router hands a message to one subscriber.
 *
 *   delivery_opts_t  how one message goes to one subscriber: its QoS, the
 *                    RETAIN flag to send, the subscription identifiers,
 *                    the store queue entry (persistent sessions) and the
 *                    shared group it came through. Built by the router (or
 *                    from a queue entry) and copied by the receiving
 *                    session into its delivery record (dlv_t).
 *   sink_ops_t       what the router may do with a subscriber's online
 *                    session. A subscriber record (subr_t) holds an opaque
 *                    sink pointer while its session is online on this node
 *                    (NULL otherwise) and the broker holds the operations
 *                    (broker->sink; the session implementation is
 *                    sess_sink_ops in delivery.c). The router and the
 *                    subscriber index see nothing else of a session.
 */
#ifndef STARLING_BROKER_SINK_H
#define STARLING_BROKER_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "starling/msg.h"

struct group;

/* Subscription identifiers a delivery carries (the first ones matched). */
#define DELIVERY_MAX_SUBIDS 4

typedef struct delivery_opts {
    uint64_t qid;                /* store queue entry id; 0 = not persisted */
    struct group *group;         /* shared group it came through, or NULL */
    uint32_t subids[DELIVERY_MAX_SUBIDS]; /* v5 subscription identifiers */
    uint8_t n_subids;
    uint8_t qos;                 /* QoS of this delivery */
    bool retain;                 /* RETAIN flag to send */
} delivery_opts_t;

/* Add a subscription identifier (0 = none; beyond the first four: none). */
static inline void delivery_add_subid(delivery_opts_t *o, uint32_t id)
{
    if (id && o->n_subids < DELIVERY_MAX_SUBIDS)
        o->subids[o->n_subids++] = id;
}

typedef struct sink_ops {
    /* Whether the sink takes deliveries now (its session is online). */
    bool (*online)(void *sink);
    /* Hand m to the sink if it takes deliveries now (one call, no online()
     * first). The sink takes its own reference to m if it keeps it; *o is
     * only read during the call. False when the sink is not online (nothing
     * was done); true when it took the message, or dropped it by its own
     * policy (a full queue, a too large packet). */
    bool (*deliver)(void *sink, msg_t *m, const delivery_opts_t *o);
} sink_ops_t;

#endif
