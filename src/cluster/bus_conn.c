/*
 * bus_conn.c - the cluster's bus (design.md §5): one subscriber connection
 * per node on the channels sl:bus:{bus}:<id> and sl:bus:{bus}:all (one hash
 * tag: one slot, one store node, which Kvrocks needs, as it does not
 * forward PUBLISH between shards), PUBLISH through the store client to the
 * same slot owner.
 *
 * Records to one node are batched into one PUBLISH per loop iteration (or
 * at BATCH_MAX); with cluster_batch off every record goes out in a PUBLISH
 * of its own (for measuring what batching buys). The bus is up once the
 * store confirmed both subscriptions; a lost connection, a refused
 * SUBSCRIBE or a bus silent for BUS_SILENT_MS reconnects it, and what was
 * missed meanwhile is made good when it is back (bus_up()).
 */
#include "cluster_int.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/slots.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sending ----------------------------------------------------------- */

void cl_on_published(void *ctx, const redisReply *r, int status)
{
    cluster_t **pc = ctx;
    if (status != SL_OK || !r || r->type == REDIS_REPLY_ERROR)
        (*pc)->hooks.store_error((*pc)->hooks.ctx);
}

void cl_send_key(cluster_t *c, const char *verb, const char *key,
                 const void *arg, size_t alen, unsigned flags)
{
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, verb);
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    if (arg)
        rcmd_bytes(&cmd, arg, alen);
    rclient_send(c->cl, &cmd, flags, cl_on_published, &c, sizeof(c), NULL,
                 0);
}

typedef struct pubwait {
    cluster_t *c;
    waiters_t ws;
} pubwait_t;

static void on_published_wait(void *ctx, const redisReply *r, int status)
{
    pubwait_t *pw = ctx;
    int st = status;
    if (st == SL_OK && (!r || r->type == REDIS_REPLY_ERROR))
        st = SL_EIO;
    if (st != SL_OK)
        pw->c->hooks.store_error(pw->c->hooks.ctx);
    for (size_t i = 0; i < pw->ws.n; i++)
        pw->ws.w[i].fn(pw->ws.w[i].arg, st);
    free(pw->ws.w);
}

/* PUBLISH a batch (a frame: our id, then records) on `chan`; `ws` (may be
 * NULL) are called with the reply. The batch keeps its frame header. */
static void publish_frame(cluster_t *c, const char *chan, bus_buf_t *w,
                          waiters_t *ws)
{
    if (w->len <= c->frame_head)
        return;
    rcmd_t cmd;
    rcmd_init(&cmd, "");
    rcmd_str(&cmd, "PUBLISH");
    cmd.key = cmd.argc;
    rcmd_str(&cmd, chan);
    rcmd_bytes(&cmd, w->p, w->len);
    if (ws && ws->n) {
        pubwait_t pw = {c, *ws};
        *ws = (waiters_t){0};
        rclient_send(c->cl, &cmd, 0, on_published_wait, &pw, sizeof(pw), NULL,
                     0);
    } else {
        rclient_send(c->cl, &cmd, 0, cl_on_published, &c, sizeof(c), NULL, 0);
    }
    w->len = c->frame_head;
    c->sent++;
}

void cl_flush(cluster_t *c)
{
    char chan[300];
    for (size_t i = 0; i < c->n_peers; i++) {
        if (c->peers[i].batch.len <= c->frame_head)
            continue;
        snprintf(chan, sizeof(chan), "%sbus:{bus}:%s", c->url.prefix,
                 c->peers[i].id);
        publish_frame(c, chan, &c->peers[i].batch, NULL);
    }
    publish_frame(c, c->chan_all, &c->all, &c->all_wait);
    publish_frame(c, c->chan_self, &c->selfb, NULL);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    cl_flush(arg);
}

void cl_batched(cluster_t *c, bus_buf_t *w)
{
    if (w->len >= BATCH_MAX || !c->batch)
        cl_flush(c);
    else
        event_active(c->flush, EV_WRITE, 0);
}

/* ---- retained messages and barriers ------------------------------------ */

bool cluster_retain(cluster_t *c, const msg_t *m, cluster_done_fn fn,
                    void *arg)
{
    if (!c)
        return false;
    /* Broadcast even before this node knows its peers: every node serves
     * retained messages from its own index. The waiter goes in before
     * cl_batched(), which may publish at once. */
    if (!bus_encode_retain(&c->all, &(bus_retain_t){(msg_t *)m}))
        return false;
    bool waits = false;
    if (fn) {
        waiters_t *ws = &c->all_wait;
        if (ws->n == ws->cap) {
            size_t nc = ws->cap ? ws->cap * 2 : 8;
            waiter_t *nw = realloc(ws->w, nc * sizeof(*nw));
            if (nw) {
                ws->w = nw;
                ws->cap = nc;
            }
        }
        if (ws->n < ws->cap) {
            ws->w[ws->n++] = (waiter_t){fn, arg};
            waits = true;
        }
    }
    cl_batched(c, &c->all);
    return waits;
}

bool cluster_barrier(cluster_t *c, cluster_done_fn fn, void *arg)
{
    barrier_t *br;
    if (!c || c->stopping || !c->sub || !(br = calloc(1, sizeof(*br))))
        return false;
    *br = (barrier_t){.token = c->next_token + 1, .at = sl_mono_ms(),
                      .fn = fn, .arg = arg};
    if (!bus_encode_barrier(&c->selfb, &(bus_barrier_t){br->token})) {
        free(br);
        return false;
    }
    c->next_token++;
    if (c->barriers_tail)
        c->barriers_tail->next = br;
    else
        c->barriers = br;
    c->barriers_tail = br;
    cl_batched(c, &c->selfb);
    return true;
}

void cl_barriers_release(cluster_t *c, uint64_t token, bool stale,
                         int status)
{
    uint64_t now = sl_mono_ms();
    while (c->barriers) {
        barrier_t *br = c->barriers;
        if (stale ? now - br->at < BARRIER_MAX_MS : br->token > token)
            break;
        c->barriers = br->next;
        if (!c->barriers)
            c->barriers_tail = NULL;
        br->fn(br->arg, status);
        free(br);
    }
}

/* ---- receiving --------------------------------------------------------- */

/* Our own frame: only its barrier records mean something to us. */
static void rx_own_frame(cluster_t *c, bus_reader_t *rd)
{
    uint8_t type;
    const uint8_t *body;
    size_t n;
    while (bus_next(rd, &type, &body, &n) == 1) {
        bus_barrier_t br;
        if (type == BUS_BARRIER && bus_decode_barrier(body, n, &br) == SL_OK)
            cl_barriers_release(c, br.token, false, SL_OK);
    }
}

static void rx_record(cluster_t *c, int from, bus_record_t *rec)
{
    const cluster_hooks_t *h = &c->hooks;
    switch (rec->type) {
    case BUS_RESET:
        cl_rx_reset(c, from, &rec->u.reset);
        break;
    case BUS_MESSAGE:
        h->deliver_remote(h->ctx, rec->u.message.msg);
        break;
    case BUS_QUEUED:
        cl_rx_queued(c, &rec->u.queued);
        break;
    case BUS_ROUTE:
        cl_rx_route(c, from, &rec->u.route);
        break;
    case BUS_GROUP:
        h->group_remote(h->ctx, rec->u.group.share, rec->u.group.slen,
                        rec->u.group.msg);
        break;
    case BUS_PSUB:
        cl_rx_psub(c, &rec->u.psub);
        break;
    case BUS_ENDED:
        cl_rx_ended(c, &rec->u.ended);
        break;
    case BUS_CLAIM:
        cl_rx_claim(c, from, &rec->u.claim);
        break;
    case BUS_OFFLINE:
        cl_rx_offline(c, &rec->u.offline);
        break;
    case BUS_RETAIN:
        h->retained(h->ctx, rec->u.retain.msg);
        break;
    default:
        break; /* barriers: only in our own frames */
    }
}

static void rx_frame(cluster_t *c, const uint8_t *p, size_t len)
{
    const char *id;
    size_t idlen;
    bus_reader_t rd;
    c->bus_heard_at = sl_mono_ms();
    if (bus_frame_open(p, len, &id, &idlen, &rd) != SL_OK)
        return;
    if (idlen == strlen(c->id) && !memcmp(id, c->id, idlen)) {
        rx_own_frame(c, &rd); /* our broadcast, or a barrier */
        return;
    }
    int from = cl_peer_index(c, id, idlen, true);
    if (from < 0)
        return;
    c->received++;
    uint8_t type;
    const uint8_t *body;
    size_t n;
    int rc;
    while ((rc = bus_next(&rd, &type, &body, &n)) == 1) {
        bus_record_t rec;
        /* A record that does not decode is skipped, as is one of a type
         * a newer node sends. */
        if (bus_decode(type, body, n, &rec) != SL_OK)
            continue;
        rx_record(c, from, &rec);
        bus_record_clear(&rec);
    }
    if (rc < 0)
        log_warning("cluster: malformed bus frame from node '%.*s'",
                    (int)idlen, id);
}

/* ---- the subscriber connection ---------------------------------------- */

/* Both channels are subscribed: from now on nothing sent to us is missed.
 * What was sent while the bus was down is made good: the route tables are
 * read again and ours written again (a store restarted without its data
 * lost them), the persistent-session index and the retained messages are
 * read again, and the queues of our online sessions are swept at once
 * (their notices were lost). */
static void bus_up(cluster_t *c)
{
    uint64_t now = sl_mono_ms();
    c->bus_up = true;
    c->bus_heard_at = now;
    if (c->bus_down_at) {
        log_warning("cluster: bus restored after %llu ms, catching up",
                    (unsigned long long)(now - c->bus_down_at));
        c->bus_resubs++;
        c->bus_down_at = 0;
        event_del(c->downsweep);
        c->hooks.resync(c->hooks.ctx);
        c->hooks.sweep(c->hooks.ctx);
    }
    for (size_t i = 0; i < c->n_peers; i++)
        cl_routes_load(c, (int)i);
    cl_routes_announce(c);
}

/* The bus is gone (connection lost, refused, or silent): sweep often
 * until it is back. */
static void bus_down(cluster_t *c)
{
    if (c->bus_up || !c->bus_down_at) {
        c->bus_losses++;
        c->bus_down_at = sl_mono_ms();
        struct timeval tv = {0, BUS_DOWN_SWEEP_MS * 1000};
        event_add(c->downsweep, &tv);
    }
    c->bus_up = false;
}

static void on_downsweep(evutil_socket_t fd, short what, void *arg)
{
    cluster_t *c = arg;
    if (!c->stopping)
        c->hooks.sweep(c->hooks.ctx);
}

static void on_bus(redisAsyncContext *ac, void *reply, void *priv)
{
    cluster_t *c = priv;
    redisReply *r = reply;
    if (!r)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        /* A store node still loading its data, or not the owner of the
         * bus slot: try again from the start. */
        log_warning("cluster: bus subscription refused: %.*s; reconnecting",
                    (int)r->len, r->str);
        redisAsyncDisconnect(ac);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    const redisReply *kind = r->element[0];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (!strcmp(kind->str, "message") &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        rx_frame(c, (const uint8_t *)r->element[2]->str, r->element[2]->len);
    } else if (!strcmp(kind->str, "subscribe")) {
        log_debug("cluster: subscribed to %s", r->element[1]->str);
        if (r->element[2]->type == REDIS_REPLY_INTEGER &&
            r->element[2]->integer == 2 && !c->bus_up)
            bus_up(c);
    }
}

static void on_resub(evutil_socket_t fd, short what, void *arg)
{
    cl_bus_connect(arg);
}

static void resub_later(cluster_t *c)
{
    struct timeval tv = {1, 0};
    evtimer_add(c->resub, &tv);
}

static void on_bus_disconnect(const redisAsyncContext *ac, int status)
{
    cluster_t *c = ac->data;
    c->sub = NULL;
    cl_barriers_release(c, UINT64_MAX, false, SL_EIO);
    if (c->stopping)
        return;
    if (c->bus_up)
        log_warning("cluster: bus connection lost, reconnecting");
    bus_down(c);
    resub_later(c);
}

static void on_bus_connect(const redisAsyncContext *ac, int status)
{
    cluster_t *c = ac->data;
    if (status != REDIS_OK) {
        c->sub = NULL;
        if (c->bus_down_at)
            log_debug("cluster: bus connection failed, retrying");
        bus_down(c);
        resub_later(c);
    }
}

void cl_bus_check(cluster_t *c)
{
    uint64_t now = sl_mono_ms();
    if (!c->sub)
        return;
    uint64_t since = c->bus_up ? c->bus_heard_at : c->bus_conn_at;
    if (now - since >= BUS_SILENT_MS) {
        log_warning("cluster: bus silent for %llu ms, reconnecting",
                    (unsigned long long)(now - since));
        redisAsyncContext *ac = c->sub;
        redisAsyncDisconnect(ac);
        return;
    }
    /* A probe to our own channel (token 0: releases no barrier). */
    if (c->bus_up && bus_encode_barrier(&c->selfb, &(bus_barrier_t){0}))
        cl_batched(c, &c->selfb);
}

static void bus_open(cluster_t *c, const char *host, int port)
{
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        bus_down(c);
        resub_later(c);
        return;
    }
    c->bus_conn_at = sl_mono_ms();
    ac->data = c;
    redisLibeventAttach(ac, c->base);
    redisAsyncSetConnectCallback(ac, on_bus_connect);
    redisAsyncSetDisconnectCallback(ac, on_bus_disconnect);
    if (c->url.password) {
        if (c->url.user)
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", c->url.user,
                              c->url.password);
        else
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s", c->url.password);
    }
    redisAsyncCommand(ac, on_bus, c, "SUBSCRIBE %s %s", c->chan_self,
                      c->chan_all);
    c->sub = ac;
}

/* The store node that owns the bus channels' slot. */
static void on_slots(void *ctx, const redisReply *r, int status)
{
    cluster_t *c = *(cluster_t **)ctx;
    slots_map_t map;
    if (status != SL_OK || !r ||
        slots_map_parse(r, c->url.hosts[0].host, &map) != SL_OK) {
        resub_later(c);
        return;
    }
    /* Both channels share a hash tag, so one slot and one node. */
    uint16_t slot = slots_key(c->chan_self, strlen(c->chan_self));
    uint16_t owner = map.owner[slot];
    if (owner == SLOTS_NONE)
        owner = 0;
    bus_open(c, map.nodes[owner].host, map.nodes[owner].port);
    slots_map_fini(&map);
}

void cl_bus_connect(cluster_t *c)
{
    if (c->stopping || c->sub)
        return;
    if (!c->url.cluster) {
        bus_open(c, c->url.hosts[0].host, c->url.hosts[0].port);
        return;
    }
    rcmd_t cmd;
    rcmd_init(&cmd, "");
    rcmd_str(&cmd, "CLUSTER");
    rcmd_str(&cmd, "SLOTS");
    rclient_send(c->cl, &cmd, 0, on_slots, &c, sizeof(c), NULL, 0);
}

/* The bus's events: created at start, freed with the cluster. */
int cl_bus_events(cluster_t *c)
{
    c->flush = event_new(c->base, -1, 0, on_flush, c);
    c->resub = evtimer_new(c->base, on_resub, c);
    c->downsweep = event_new(c->base, -1, EV_PERSIST, on_downsweep, c);
    return c->flush && c->resub && c->downsweep ? SL_OK : SL_ENOMEM;
}

void cl_bus_close(cluster_t *c)
{
    if (c->sub) {
        redisAsyncContext *ac = c->sub;
        c->sub = NULL;
        redisAsyncFree(ac);
    }
}

void cl_bus_events_free(cluster_t *c)
{
    if (c->flush)
        event_free(c->flush);
    if (c->resub)
        event_free(c->resub);
    if (c->downsweep)
        event_free(c->downsweep);
    c->flush = c->resub = c->downsweep = NULL;
}
