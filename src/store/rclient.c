/*
 * rclient.c - asynchronous Redis-protocol client, standalone or cluster,
 * with deadlines, reconnection and redirections (see rclient.h): the
 * requests' queues, sending and routing, replies and retries, deadlines,
 * and the client's lifecycle. The queues a request goes through are
 * described in rclient_int.h.
 */
#include "rclient_int.h"

#include "starling/err.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100
#define MAX_TRIES 8

/* ---- queues ------------------------------------------------------------ */

void rq_push(rq_t *l, rreq_t *q)
{
    q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

rreq_t *rq_pop(rq_t *l)
{
    rreq_t *q = l->head;
    if (q) {
        l->head = q->next;
        if (!l->head)
            l->tail = NULL;
        l->n--;
        q->next = NULL;
    }
    return q;
}

/* Insert after `after` (NULL = at the head). */
void rq_insert(rq_t *l, rreq_t *after, rreq_t *q)
{
    if (!after) {
        q->next = l->head;
        l->head = q;
        if (!l->tail)
            l->tail = q;
    } else {
        q->next = after->next;
        after->next = q;
        if (l->tail == after)
            l->tail = q;
    }
    l->n++;
}

void rq_remove(rq_t *l, rreq_t *q)
{
    rreq_t *prev = NULL;
    for (rreq_t *p = l->head; p; prev = p, p = p->next) {
        if (p != q)
            continue;
        if (prev)
            prev->next = p->next;
        else
            l->head = p->next;
        if (l->tail == p)
            l->tail = prev;
        l->n--;
        p->next = NULL;
        return;
    }
}

/* ---- completion -------------------------------------------------------- */

void rreq_complete(rreq_t *q, const redisReply *r, int status)
{
    rclient_t *cl = q->cl;
    if (status != SL_OK || (r && r->type == REDIS_REPLY_ERROR))
        cl->stats.errors++;
    if (status == SL_ETIMEOUT)
        cl->stats.timeouts++;
    q->fn(q->ctx, r, status);
    free(q);
}

/* Complete later, from the loop (never inside the caller's call). */
static void complete_later(rreq_t *q)
{
    rclient_t *cl = q->cl;
    rq_push(&cl->done, q);
    event_active(cl->defer, EV_READ, 0);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    rclient_t *cl = arg;
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        if (n->broken) {
            n->broken = false;
            rnode_lost(n, SL_EIO, true);
        }
    }
    rq_t l = cl->done;
    memset(&cl->done, 0, sizeof(cl->done));
    rreq_t *q;
    while ((q = rq_pop(&l)))
        rreq_complete(q, NULL, SL_EIO);
}

/* ---- sending ----------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int node_write(rnode_t *n, rreq_t *q)
{
    if (q->asking && redisAsyncCommand(n->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return SL_EIO;
    if (redisAsyncFormattedCommand(n->ac, on_reply, q, q->cmd, q->cmdlen) !=
        REDIS_OK)
        return SL_EIO;
    q->asking = false;
    n->cl->stats.requests++;
    return SL_OK;
}

void rnode_submit(rnode_t *n, rreq_t *q)
{
    q->node = n;
    if (n->state == N_READY && !n->broken && node_write(n, q) == SL_OK) {
        rq_push(&n->sent, q);
        return;
    }
    if (n->state == N_READY && !n->broken) {
        /* hiredis refused the write: drop the connection from the loop */
        n->broken = true;
        event_active(n->cl->defer, EV_READ, 0);
    }
    rq_push(&n->wait, q);
}

static rnode_t *route(rclient_t *cl, const rreq_t *q)
{
    if (q->target)
        return q->target;
    if (!cl->cluster)
        return cl->nodes[0];
    if (!cl->have_map)
        return NULL;
    if (q->slot < 0) {
        for (size_t i = 0; i < cl->n_nodes; i++)
            if (cl->nodes[i]->in_map)
                return cl->nodes[i];
        return NULL;
    }
    uint16_t idx = cl->owner[q->slot];
    return idx == SLOTS_NONE ? NULL : cl->nodes[idx];
}

void rreq_dispatch(rreq_t *q)
{
    rclient_t *cl = q->cl;
    rnode_t *n = route(cl, q);
    if (n) {
        rnode_submit(n, q);
        return;
    }
    q->node = NULL;
    rq_push(&cl->unrouted, q);
    rslots_want_refresh(cl);
}

void rclient_send(rclient_t *cl, const rcmd_t *cmd, unsigned flags,
                  rclient_fn fn, const void *ctx, size_t ctxlen,
                  const void *tail, size_t taillen)
{
    if (cmd->overflow)
        abort(); /* a programming error: more arguments than room */
    rreq_t *q = rreq_new(cl, cmd, fn, ctx, ctxlen, tail, taillen);
    q->flags = flags;
    q->deadline = sl_mono_ms() + (uint64_t)cl->url->timeout_ms;
    if (cl->closing) {
        complete_later(q);
        return;
    }
    rreq_dispatch(q);
}

void rnode_send(rnode_t *n, const rcmd_t *cmd, rclient_fn fn,
                const void *ctx, size_t ctxlen)
{
    rreq_t *q = rreq_new(n->cl, cmd, fn, ctx, ctxlen, NULL, 0);
    q->target = n;
    q->deadline = sl_mono_ms() + (uint64_t)n->cl->url->timeout_ms;
    rnode_submit(n, q);
}

/* ---- replies ----------------------------------------------------------- */

static bool err_is(const redisReply *r, const char *word)
{
    size_t len = strlen(word);
    return r->len >= len && memcmp(r->str, word, len) == 0 &&
           (r->len == len || r->str[len] == ' ');
}

/* An error of a state that passes (migration, failover, loading). */
static bool err_passes(const redisReply *r)
{
    return err_is(r, "TRYAGAIN") || err_is(r, "LOADING") ||
           err_is(r, "CLUSTERDOWN") || err_is(r, "MASTERDOWN") ||
           err_is(r, "READONLY");
}

/* A retryable error reply: true when the request was queued again. */
static bool handle_error(rnode_t *n, rreq_t *q, const redisReply *r)
{
    rclient_t *cl = n->cl;
    if (q->tries >= MAX_TRIES)
        return false;
    q->tries++;
    if (err_is(r, "MOVED") || err_is(r, "ASK"))
        return rslots_redirect(n, q, r);
    if (err_is(r, "NOSCRIPT") && q->script >= 0 && n->ac) {
        const char *body = cl->scripts[q->script];
        redisAsyncCommand(n->ac, NULL, NULL, "SCRIPT LOAD %b", body,
                          strlen(body));
        rnode_submit(n, q);
        return true;
    }
    if (err_passes(r)) {
        /* retry every tick until the deadline, not counted as a try */
        q->tries = 0;
        if (cl->cluster)
            rslots_want_refresh(cl);
        rq_push(&cl->later, q);
        return true;
    }
    q->tries--;
    return false;
}

/* The request was sent and its connection went away. */
static void req_lost(rnode_t *n, rreq_t *q)
{
    rclient_t *cl = n->cl;
    if (!cl->closing && (q->flags & RCLIENT_REPLAY) &&
        q->deadline > sl_mono_ms()) {
        rq_insert(&n->wait, n->replay_at, q);
        n->replay_at = q;
        return;
    }
    rreq_complete(q, NULL, n->drop_status ? n->drop_status : SL_EIO);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rreq_t *q = priv;
    rnode_t *n = q->node;
    redisReply *r = reply;
    rq_remove(&n->sent, q);
    if (!r) {
        if (n->ac == ac)
            rnode_lost(n, SL_EIO, false); /* hiredis is freeing it */
        req_lost(n, q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && !n->cl->closing &&
        handle_error(n, q, r))
        return;
    rreq_complete(q, r, SL_OK);
}

/* ---- deadlines --------------------------------------------------------- */

static void expire_waiting(rq_t *l, uint64_t now)
{
    while (l->head && l->head->deadline <= now) {
        rreq_t *q = rq_pop(l);
        if (q->node && q->node->replay_at == q)
            q->node->replay_at = NULL;
        rreq_complete(q, NULL, SL_EIO);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    rclient_t *cl = arg;
    uint64_t now = sl_mono_ms();
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_check(cl->nodes[i], now);
        expire_waiting(&cl->nodes[i]->wait, now);
    }
    expire_waiting(&cl->unrouted, now);
    rq_t l = cl->later;
    memset(&cl->later, 0, sizeof(cl->later));
    rreq_t *q;
    while ((q = rq_pop(&l))) {
        if (q->deadline <= now)
            rreq_complete(q, NULL, SL_EIO);
        else
            rreq_dispatch(q);
    }
    rslots_tick(cl, now);
}

/* ---- lifecycle --------------------------------------------------------- */

static int sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL) || len != 20)
        return SL_EINVAL;
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return SL_OK;
}

int rclient_new(rclient_t **out, struct event_base *base,
                const redis_url_t *url, const char *const *scripts,
                size_t n_scripts, char *err, size_t errlen)
{
    rclient_t *cl = calloc(1, sizeof(*cl));
    *out = NULL;
    if (!cl)
        return SL_ENOMEM;
    cl->base = base;
    cl->url = url;
    cl->cluster = url->cluster;
    cl->scripts = scripts;
    cl->n_scripts = n_scripts;
    cl->sha = calloc(n_scripts + 1, sizeof(*cl->sha));
    cl->tick = event_new(base, -1, EV_PERSIST, on_tick, cl);
    cl->defer = event_new(base, -1, 0, on_defer, cl);
    if (cl->cluster)
        cl->owner = malloc(SLOTS_N * sizeof(*cl->owner));
    if (!cl->sha || !cl->tick || !cl->defer || (cl->cluster && !cl->owner))
        goto fail;
    for (size_t i = 0; i < SLOTS_N && cl->owner; i++)
        cl->owner[i] = SLOTS_NONE;
    for (size_t i = 0; i < n_scripts; i++)
        if (sha1_hex(scripts[i], cl->sha[i]) != SL_OK)
            goto fail;
    for (size_t i = 0; i < url->n_hosts; i++)
        if (!rnode_new(cl, url->hosts[i].host, url->hosts[i].port))
            goto fail;
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(cl->tick, &tv);
    for (size_t i = 0; i < cl->n_nodes; i++)
        rnode_connect(cl->nodes[i]);
    *out = cl;
    return SL_OK;
fail:
    snprintf(err, errlen, "store: out of memory");
    rclient_free(cl);
    return SL_ENOMEM;
}

static void fail_queue(rq_t *l)
{
    rreq_t *q;
    while ((q = rq_pop(l)))
        rreq_complete(q, NULL, SL_EIO);
}

void rclient_free(rclient_t *cl)
{
    if (!cl)
        return;
    cl->closing = true;
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        if (n->ac)
            rnode_lost(n, SL_EIO, true);
    }
    /* completions may issue more requests: they land in done */
    for (int pass = 0; pass < 100; pass++) {
        for (size_t i = 0; i < cl->n_nodes; i++)
            fail_queue(&cl->nodes[i]->wait);
        fail_queue(&cl->unrouted);
        fail_queue(&cl->later);
        fail_queue(&cl->done);
        if (!cl->done.head)
            break;
    }
    for (size_t i = 0; i < cl->n_nodes; i++)
        rnode_free(cl->nodes[i]);
    free(cl->nodes);
    if (cl->tick)
        event_free(cl->tick);
    if (cl->defer)
        event_free(cl->defer);
    free(cl->owner);
    free(cl->sha);
    free(cl);
}

bool rclient_ready(const rclient_t *cl)
{
    if (!cl->cluster)
        return cl->nodes[0]->state == N_READY;
    if (!cl->have_map)
        return false;
    for (size_t i = 0; i < cl->n_nodes; i++)
        if (cl->nodes[i]->in_map && cl->nodes[i]->state != N_READY)
            return false;
    return true;
}

void rclient_stats(const rclient_t *cl, store_stats_t *out)
{
    *out = cl->stats;
    out->pending = cl->unrouted.n + cl->later.n + cl->done.n;
    for (size_t i = 0; i < cl->n_nodes; i++)
        out->pending += cl->nodes[i]->wait.n + cl->nodes[i]->sent.n;
}

void rclient_count_error(rclient_t *cl)
{
    cl->stats.errors++;
}
