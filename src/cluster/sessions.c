/*
 * sessions.c - sessions across nodes (design.md §5, Persistent sessions
 * and Takeover).
 *
 * Every node knows which node holds each client online (the owners map,
 * from the claim broadcasts 'O' and 'F'): a newer claim elsewhere closes
 * an older connection here, a queued entry's notice ('Q') goes to the
 * owner, and a dead owner's clean-session wills are known. Persistent
 * subscriptions ('S') and session ends ('E') are broadcast, so every node
 * holds the cluster-wide index of persistent sessions (kept by the broker
 * through the psub and session_ended hooks).
 */
#include "cluster_int.h"

#include "starling/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- owners ------------------------------------------------------------ */

/* Takes `will`'s reference. */
static void owner_set(cluster_t *c, const char *cid, size_t clen, int node,
                      uint64_t epoch, msg_t *will, uint32_t delay,
                      uint32_t expiry)
{
    owner_t *o = map_get(c->owners, cid, clen);
    if (!o) {
        o = calloc(1, sizeof(*o));
        if (!o || map_put(c->owners, cid, clen, o, NULL) != SL_OK) {
            free(o);
            msg_unref(&will);
            return;
        }
    } else if (o->epoch > epoch) {
        msg_unref(&will);
        return; /* an older claim arriving late */
    }
    msg_unref(&o->will);
    o->node = (uint16_t)node;
    o->epoch = epoch;
    o->will = will;
    o->will_delay = delay;
    o->expiry = expiry;
}

static void owner_del(cluster_t *c, const char *cid, size_t clen,
                      uint64_t epoch)
{
    owner_t *o = map_get(c->owners, cid, clen);
    if (!o || (epoch && o->epoch > epoch))
        return;
    map_del(c->owners, cid, clen);
    msg_unref(&o->will);
    free(o);
}

void cl_owner_free(void *v)
{
    owner_t *o = v;
    msg_unref(&o->will);
    free(o);
}

int cluster_owner(const cluster_t *c, const char *cid, size_t clen)
{
    owner_t *o = c ? map_get(c->owners, cid, clen) : NULL;
    if (!o)
        return CLUSTER_NONE;
    return o->node == SELF ? CLUSTER_SELF : (int)o->node;
}

size_t cl_owners_publish_wills(cluster_t *c, int peer)
{
    size_t cur = 0;
    const char *cid;
    size_t clen;
    void *v;
    size_t wills = 0;
    while (map_next(c->owners, &cur, &cid, &clen, &v)) {
        owner_t *o = v;
        if (o->node != peer || o->expiry)
            continue; /* stored sessions: ended from the store */
        if (o->will) {
            /* A clean session's will, known from its claim broadcast. */
            c->hooks.will_after(c->hooks.ctx, cid, clen, o->will, 0);
            wills++;
        }
    }
    return wills;
}

void cl_owners_drop_node(cluster_t *c, int peer)
{
    size_t cur = 0;
    const char *cid;
    size_t clen;
    void *v;
    char **gone = NULL;
    size_t n = 0;
    while (map_next(c->owners, &cur, &cid, &clen, &v)) {
        owner_t *o = v;
        if (o->node != peer)
            continue;
        char **ng = realloc(gone, (n + 1) * sizeof(char *));
        if (!ng)
            break;
        gone = ng;
        gone[n++] = strndup(cid, clen);
    }
    for (size_t i = 0; i < n; i++) {
        if (gone[i]) {
            owner_t *o = map_del(c->owners, gone[i], strlen(gone[i]));
            if (o)
                cl_owner_free(o);
        }
        free(gone[i]);
    }
    free(gone);
}

/* ---- what arrives ------------------------------------------------------ */

void cl_rx_claim(cluster_t *c, int from, bus_claim_t *r)
{
    const cluster_hooks_t *h = &c->hooks;
    /* The client is back (elsewhere): a will it left here waits no more
     * (MQTT 5 §3.1.3.2.2: not sent if it reconnects within the delay). */
    h->cancel_will(h->ctx, r->cid, r->clen);
    /* Takeover: a newer claim elsewhere closes our connection. */
    h->claimed_elsewhere(h->ctx, r->cid, r->clen, r->epoch);
    msg_t *will = r->will;
    r->will = NULL;
    owner_set(c, r->cid, r->clen, from, r->epoch, will, r->will_delay,
              r->expiry);
}

void cl_rx_psub(cluster_t *c, const bus_psub_t *r)
{
    c->hooks.psub(c->hooks.ctx, r->cid, r->clen, r->filter, r->flen, r->opts,
                  r->sub_id, r->add);
}

void cl_rx_ended(cluster_t *c, const bus_ended_t *r)
{
    c->hooks.session_ended(c->hooks.ctx, r->cid, r->clen);
    owner_del(c, r->cid, r->clen, 0);
}

void cl_rx_queued(cluster_t *c, const bus_queued_t *r)
{
    c->hooks.queued_notice(c->hooks.ctx, r->cid, r->clen, r->msg, r->qos,
                           r->retain, r->subids, r->n_subids, r->qid);
}

void cl_rx_offline(cluster_t *c, const bus_offline_t *r)
{
    owner_del(c, r->cid, r->clen, r->epoch);
}

/* ---- what the broker tells ---------------------------------------------- */

bool cluster_notify_queued(cluster_t *c, const char *cid, size_t clen,
                           const msg_t *m, uint8_t qos, bool retain,
                           const uint32_t *subids, uint8_t n, uint64_t qid)
{
    if (!c)
        return false;
    owner_t *o = map_get(c->owners, cid, clen);
    if (o && o->node == SELF)
        return false;
    /* Owner unknown (this node started after the claim): tell every node;
     * only the one holding the session online delivers it. */
    bus_buf_t *w = o && o->node < c->n_peers ? &c->peers[o->node].batch
                                             : &c->all;
    bus_queued_t r = {.cid = cid, .clen = clen, .qid = qid, .qos = qos,
                      .retain = retain, .msg = (msg_t *)m};
    for (uint8_t i = 0; i < n && i < BUS_MAX_SUBIDS; i++)
        r.subids[r.n_subids++] = subids[i];
    if (bus_encode_queued(w, &r))
        cl_batched(c, w);
    return true;
}

/* sl:nodesess:<id>: hash of the stored sessions online at a node, with the
 * epoch of their claim, so that the survivor cleaning up after it (or its
 * own next run) ends exactly those claims and not a newer one elsewhere. */
static void node_sessions(cluster_t *c, const char *cid, size_t clen,
                          uint64_t epoch, bool add)
{
    char key[300];
    snprintf(key, sizeof(key), "nodesess:%s", c->id);
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, add ? "HSET" : "HDEL");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    rcmd_bytes(&cmd, cid, clen);
    if (add)
        rcmd_u64(&cmd, epoch);
    rclient_send(c->cl, &cmd, RCLIENT_REPLAY, cl_on_published, &c, sizeof(c),
                 NULL, 0);
}

void cluster_claimed(cluster_t *c, const char *cid, size_t clen, bool stored,
                     uint64_t epoch, uint32_t expiry, uint32_t will_delay,
                     const msg_t *will)
{
    if (!c)
        return;
    if (stored) /* a clean session has nothing stored to end */
        node_sessions(c, cid, clen, epoch, true);
    bus_claim_t r = {.cid = cid, .clen = clen, .epoch = epoch,
                     .expiry = expiry, .will_delay = will_delay,
                     .will = (msg_t *)will};
    if (bus_encode_claim(&c->all, &r))
        cl_batched(c, &c->all);
    owner_set(c, cid, clen, SELF, epoch, NULL, 0, 0);
}

void cluster_offline(cluster_t *c, const char *cid, size_t clen, bool stored,
                     uint64_t epoch)
{
    if (!c)
        return;
    if (stored)
        node_sessions(c, cid, clen, epoch, false);
    bus_offline_t r = {.cid = cid, .clen = clen, .epoch = epoch};
    if (bus_encode_offline(&c->all, &r))
        cl_batched(c, &c->all);
    owner_del(c, cid, clen, epoch);
}

void cluster_psub(cluster_t *c, const char *cid, size_t clen, const char *f,
                  size_t flen, uint8_t opts, uint32_t sub_id, bool add)
{
    if (!c)
        return;
    bus_psub_t r = {.add = add, .cid = cid, .clen = clen, .filter = f,
                    .flen = flen, .opts = opts, .sub_id = sub_id};
    if (bus_encode_psub(&c->all, &r))
        cl_batched(c, &c->all);
}

void cluster_ended(cluster_t *c, const char *cid, size_t clen)
{
    if (!c)
        return;
    if (bus_encode_ended(&c->all, &(bus_ended_t){cid, clen}))
        cl_batched(c, &c->all);
}
