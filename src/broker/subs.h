/*
 * subs.h - the subscriber index (subs.c): who subscribed to what. A
 * subscriber as the trie sees it is a subr_t: a client id, its
 * subscriptions, and the sink of its online session if any (sink.h: the
 * router reaches sessions only through it). A clean session owns its
 * subr_t; a persistent session's subr_t lives in broker->psessions for as
 * long as the session exists, so messages for it are queued in the store
 * while it is offline. Shared groups ($share/<g>/<f>) are one trie entry
 * whose members take turns.
 */
#ifndef STARLING_BROKER_SUBS_H
#define STARLING_BROKER_SUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "starling/map.h"

struct broker;
typedef struct sess sess_t;

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
void group_unref(group_t **g);

#endif
