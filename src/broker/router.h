/*
 * router.h - a published message to its subscribers (router.c): the
 * retained index, one trie match, one delivery per subscriber through its
 * sink, appends to persistent sessions' store queues, shared groups, and
 * the cluster's forward.
 */
#ifndef STARLING_BROKER_ROUTER_H
#define STARLING_BROKER_ROUTER_H

#include "internal.h"

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

#endif
