/*
 * cluster.c - nodes that share one Redis-protocol store (DESIGN.md §4).
 *
 * On when the store is redis:// or redis+cluster://. Every node is equal:
 *
 *  - identity and liveness: `node_id` (config or generated), registered in
 *    the hash sl:nodes, alive while sl:node:<id>:alive (PX 5000) is
 *    refreshed every second;
 *  - bus: each node SUBSCRIBEs to sl:bus:<id> and sl:bus:all on the store
 *    node that owns the channel name's hash slot (Kvrocks does not forward
 *    PUBLISH between shards), and PUBLISHes through the store client, which
 *    routes by the same slot. Records to one node are batched into one
 *    PUBLISH per loop iteration;
 *  - routes: each node keeps the filters with an online subscriber in
 *    sl:routes:<id> and broadcasts additions and removals, each with the
 *    node's next route sequence number; every node holds the whole table
 *    (filter -> nodes) in a trie and sends a message once to each node with
 *    a matching route. A gap in a node's sequence, a bus reconnect or a
 *    node's death reloads that table from the store, and a full reload runs
 *    every 5 s as well, so nothing lost stays lost;
 *  - shared subscriptions: a member online here adds the route
 *    "$share/<g>/<f>"; the publishing node picks one node among those with
 *    members (itself included, round robin) and sends the message to that
 *    node only ('G' record), which hands it to one of its members. A
 *    persistent member at QoS >= 1 is queued by the publishing node itself,
 *    as for plain subscriptions, so exactly one member gets each message;
 *  - persistent sessions: subscriptions, claims and ends are broadcast, so
 *    every node has the cluster-wide index and queues QoS >= 1 messages for
 *    any persistent session itself, then tells the owner node ('Q');
 *  - takeover: a claim is broadcast with its epoch; the node holding an
 *    older connection of that client closes it (v5: 0x8E);
 *  - a dead node (heartbeat gone): every node drops its routes; one
 *    survivor (SET NX PX lock) publishes the wills of its clients, marks
 *    their sessions offline and removes its registration.
 *
 * Bus frame: u16 sender id length, sender id, then records
 * (u8 type, u32 length, body). Integers are big-endian. With
 * cluster_batch off, every record goes out in a PUBLISH of its own (for
 * measuring what batching buys).
 *
 */
#include "../broker/internal.h"
#include "../broker/session.h"
#include "../store/blob.h"
#include "../store/rclient.h"
#include "../store/redis_url.h"

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
#include <unistd.h>

#define HEARTBEAT_MS 1000
#define ALIVE_TTL_MS 5000
#define RELOAD_EVERY 5           /* heartbeats between full route reloads */
#define BATCH_MAX (256u * 1024)  /* flush a node's batch at this size */
#define MAX_NODES 256
/* After the store lost its data (restarted without persistence), no node
 * is declared dead for this long: every live node writes its heartbeat
 * again within its reconnect backoff (2 s) plus one heartbeat. */
#define STORE_LOSS_GRACE_MS 6000

enum {
    REC_MSG = 'M',        /* to a node: a message for its subscribers */
    REC_QUEUED = 'Q',     /* to a node: entry queued for its session */
    REC_ROUTE = 'R',      /* broadcast: route added/removed */
    REC_PSUB = 'S',       /* broadcast: persistent subscription +/- */
    REC_ENDED = 'E',      /* broadcast: persistent session ended */
    REC_CLAIM = 'O',      /* broadcast: session claimed (owner, epoch) */
    REC_OFFLINE = 'F',    /* broadcast: session went offline */
    REC_RETAIN = 'T',     /* broadcast: retained message set/cleared */
    REC_RESET = 'Z',      /* broadcast: this node (re)started */
    REC_GROUP = 'G',      /* to a node: a message for one member of a group */
    REC_BARRIER = 'B',    /* to ourselves: everything published before is in */
};

#define BARRIER_MAX_MS 2000   /* a barrier not back by then is let go */
/* The bus is checked with a probe record to our own channel every
 * heartbeat: silent for this long while subscribed, it is reconnected
 * (a half-open connection, or the bus slot moved to another store node). */
#define BUS_SILENT_MS 4000
/* While the bus is down, notices of queued messages are lost: the owner
 * reads its sessions' queues this often instead. */
#define BUS_DOWN_SWEEP_MS 250

/* Called once the reply of the PUBLISH carrying a record arrived. */
typedef struct waiter {
    cluster_done_fn fn;
    void *arg;
} waiter_t;

typedef struct waiters {
    waiter_t *w;
    size_t n, cap;
} waiters_t;

/* A barrier: waits for its own record to come back on our bus channel. */
typedef struct barrier {
    struct barrier *next;
    uint64_t token;
    uint64_t at;               /* sl_mono_ms() when asked */
    cluster_done_fn fn;
    void *arg;
} barrier_t;

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf_t;

typedef struct peer {
    char *id;
    wbuf_t batch;              /* records waiting for the flush */
    bool alive;
    bool dead_handled;
    bool seq_known;            /* rseq holds its last route event */
    uint32_t rseq;
} peer_t;

/* A shared group's route: the nodes with an online member of it. */
typedef struct groute {
    char *share;               /* "$share/<g>/<f>" */
    size_t slen;
    uint32_t n;                /* nodes in on[] */
    uint32_t rr;               /* round robin over the nodes */
    bool on[MAX_NODES];
} groute_t;

typedef struct owner {
    uint16_t node;             /* peer index, or SELF */
    uint64_t epoch;
    msg_t *will;               /* the session's will, for a dead owner */
    uint32_t will_delay;
    uint32_t expiry;
} owner_t;

#define SELF 0xFFFF

struct cluster {
    broker_t *b;
    redis_url_t url;
    rclient_t *cl;
    char *id;
    char chan_self[300];
    char chan_all[300];
    peer_t peers[MAX_NODES];
    size_t n_peers;
    wbuf_t all;                /* broadcast batch */
    waiters_t all_wait;        /* to call when `all` is published */
    wbuf_t selfb;              /* barrier records, to our own channel */
    barrier_t *barriers, *barriers_tail;
    uint64_t next_token;
    trie_t *routes;            /* filter -> (peer index + 1) */
    trie_t *gtrie;             /* inner filter -> groute_t (key = pointer) */
    map_t *groutes;            /* "$share/g/f" -> groute_t */
    groute_t **gm;             /* scratch: the groups a topic matches */
    uint32_t n_gm, cap_gm;
    uint32_t rseq;             /* our last route event's number */
    map_t *local;              /* filter -> count of online subscribers here */
    map_t *owners;             /* cid -> owner_t */
    redisAsyncContext *sub;    /* the bus subscriber connection */
    struct event *beat;
    struct event *flush;
    struct event *resub;
    struct event *downsweep;   /* sweeps while the bus is down */
    bool bus_up;               /* both channels subscribed */
    uint64_t bus_down_at;      /* sl_mono_ms() the bus was lost; 0 = up */
    uint64_t bus_conn_at;      /* sl_mono_ms() of the current connection */
    uint64_t bus_heard_at;     /* sl_mono_ms() of the last frame received */
    uint64_t bus_losses, bus_resubs;
    unsigned beats;
    bool stopping;
    uint64_t sent, received;
    uint64_t resyncs;          /* route tables reloaded after a gap */
    char mark[96];             /* the store's sl:mark when we first saw it */
    uint64_t grace_until;      /* sl_mono_ms(): no death declared before */
};

/* ---- byte buffers ------------------------------------------------------ */

static bool wb_reserve(wbuf_t *w, size_t n)
{
    if (w->len + n <= w->cap)
        return true;
    size_t nc = w->cap ? w->cap * 2 : 1024;
    while (nc < w->len + n)
        nc *= 2;
    uint8_t *np = realloc(w->p, nc);
    if (!np)
        return false;
    w->p = np;
    w->cap = nc;
    return true;
}

static void wb_put(wbuf_t *w, const void *p, size_t n)
{
    if (wb_reserve(w, n)) {
        memcpy(w->p + w->len, p, n);
        w->len += n;
    }
}

static void wb_u8(wbuf_t *w, uint8_t v)
{
    wb_put(w, &v, 1);
}

static void wb_u16(wbuf_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    wb_put(w, b, 2);
}

static void wb_u32(wbuf_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    wb_put(w, b, 4);
}

static void wb_u64(wbuf_t *w, uint64_t v)
{
    wb_u32(w, (uint32_t)(v >> 32));
    wb_u32(w, (uint32_t)v);
}

static void wb_str(wbuf_t *w, const void *p, size_t n)
{
    wb_u16(w, (uint16_t)n);
    wb_put(w, p, n);
}

static void wb_msg(wbuf_t *w, const msg_t *m)
{
    size_t n = blob_msg_size(m);
    wb_u32(w, (uint32_t)n);
    if (wb_reserve(w, n)) {
        blob_msg_write(m, w->p + w->len);
        w->len += n;
    }
}

/* Reader: every take checks the remaining length first. */
typedef struct rbuf {
    const uint8_t *p;
    size_t len;
    bool bad;
} rbuf_t;

static const uint8_t *rb_take(rbuf_t *r, size_t n)
{
    if (r->bad || r->len < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->len -= n;
    return p;
}

static uint8_t rb_u8(rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t rb_u16(rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static uint32_t rb_u32(rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                   (uint32_t)p[2] << 8 | p[3]
             : 0;
}

static uint64_t rb_u64(rbuf_t *r)
{
    uint64_t hi = rb_u32(r);
    return hi << 32 | rb_u32(r);
}

static const char *rb_str(rbuf_t *r, size_t *n)
{
    *n = rb_u16(r);
    return (const char *)rb_take(r, *n);
}

static msg_t *rb_msg(rbuf_t *r)
{
    size_t n = rb_u32(r);
    const uint8_t *p = rb_take(r, n);
    msg_t *m = NULL;
    if (!p || blob_msg_read(p, n, &m) != SL_OK) {
        r->bad = true;
        return NULL;
    }
    return m;
}

/* ---- peers ------------------------------------------------------------- */

static int peer_index(cluster_t *c, const char *id, size_t len, bool add)
{
    for (size_t i = 0; i < c->n_peers; i++)
        if (strlen(c->peers[i].id) == len && !memcmp(c->peers[i].id, id, len))
            return (int)i;
    if (!add || c->n_peers == MAX_NODES)
        return -1;
    peer_t *p = &c->peers[c->n_peers];
    memset(p, 0, sizeof(*p));
    p->id = strndup(id, len);
    if (!p->id)
        return -1;
    p->alive = true;
    return (int)c->n_peers++;
}

/* ---- sending ----------------------------------------------------------- */

static void on_published(void *ctx, const redisReply *r, int status)
{
    cluster_t **pc = ctx;
    if (status != SL_OK || !r || r->type == REDIS_REPLY_ERROR)
        (*pc)->b->stats.store_errors++;
}

/* VERB <prefix><key> [arg]: a write whose reply only counts as an error. */
static void send_key(cluster_t *c, const char *verb, const char *key,
                     const void *arg, size_t alen, unsigned flags)
{
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, verb);
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    if (arg)
        rcmd_bytes(&cmd, arg, alen);
    rclient_send(c->cl, &cmd, flags, on_published, &c, sizeof(c), NULL, 0);
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
        pw->c->b->stats.store_errors++;
    for (size_t i = 0; i < pw->ws.n; i++)
        pw->ws.w[i].fn(pw->ws.w[i].arg, st);
    free(pw->ws.w);
}

/* PUBLISH a batch on `chan`; `ws` (may be NULL) are called with the reply. */
static void publish_frame(cluster_t *c, const char *chan, wbuf_t *w,
                          waiters_t *ws)
{
    if (!w->len)
        return;
    wbuf_t f = {0};
    wb_str(&f, c->id, strlen(c->id));
    wb_put(&f, w->p, w->len);
    rcmd_t cmd;
    rcmd_init(&cmd, "");
    rcmd_str(&cmd, "PUBLISH");
    cmd.key = cmd.argc;
    rcmd_str(&cmd, chan);
    rcmd_bytes(&cmd, f.p, f.len);
    if (ws && ws->n) {
        pubwait_t pw = {c, *ws};
        *ws = (waiters_t){0};
        rclient_send(c->cl, &cmd, 0, on_published_wait, &pw, sizeof(pw), NULL,
                     0);
    } else {
        rclient_send(c->cl, &cmd, 0, on_published, &c, sizeof(c), NULL, 0);
    }
    free(f.p);
    w->len = 0;
    c->sent++;
}

static void flush_all(cluster_t *c)
{
    char chan[300];
    for (size_t i = 0; i < c->n_peers; i++) {
        if (!c->peers[i].batch.len)
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
    flush_all(arg);
}

/* Start a record in w; returns the offset of its length field. */
static size_t rec_begin(cluster_t *c, wbuf_t *w, uint8_t type)
{
    wb_u8(w, type);
    size_t at = w->len;
    wb_u32(w, 0);
    return at;
}

static void rec_end(cluster_t *c, wbuf_t *w, size_t at)
{
    if (!w->p || at + 4 > w->len)
        return;
    uint32_t n = (uint32_t)(w->len - at - 4);
    w->p[at] = (uint8_t)(n >> 24);
    w->p[at + 1] = (uint8_t)(n >> 16);
    w->p[at + 2] = (uint8_t)(n >> 8);
    w->p[at + 3] = (uint8_t)n;
    if (w->len >= BATCH_MAX || !c->b->conf->cluster_batch)
        flush_all(c);
    else
        event_active(c->flush, EV_WRITE, 0);
}

/* ---- retained messages and barriers ------------------------------------ */

bool cluster_retain(broker_t *b, const msg_t *m, cluster_done_fn fn,
                    void *arg)
{
    cluster_t *c = b->cluster;
    if (!c)
        return false;
    /* Broadcast even before this node knows its peers: every node serves
     * retained messages from its own index. The waiter goes in before
     * rec_end(), which may publish at once. */
    size_t at = rec_begin(c, &c->all, REC_RETAIN);
    wb_msg(&c->all, m);
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
    rec_end(c, &c->all, at);
    return waits;
}

bool cluster_barrier(broker_t *b, cluster_done_fn fn, void *arg)
{
    cluster_t *c = b->cluster;
    barrier_t *br;
    if (!c || c->stopping || !c->sub || !(br = calloc(1, sizeof(*br))))
        return false;
    *br = (barrier_t){.token = ++c->next_token, .at = sl_mono_ms(),
                      .fn = fn, .arg = arg};
    if (c->barriers_tail)
        c->barriers_tail->next = br;
    else
        c->barriers = br;
    c->barriers_tail = br;
    size_t at = rec_begin(c, &c->selfb, REC_BARRIER);
    wb_u64(&c->selfb, br->token);
    rec_end(c, &c->selfb, at);
    return true;
}

/* Let go of the barriers up to `token` (all: UINT64_MAX), or of those
 * older than BARRIER_MAX_MS when `stale`. */
static void barriers_release(cluster_t *c, uint64_t token, bool stale,
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

/* Our own frame: only its barrier records mean something to us. */
static void rx_own_frame(cluster_t *c, rbuf_t *r)
{
    while (r->len && !r->bad) {
        uint8_t type = rb_u8(r);
        uint32_t n = rb_u32(r);
        const uint8_t *body = rb_take(r, n);
        if (!body)
            break;
        rbuf_t rec = {body, n, false};
        if (type == REC_BARRIER) {
            uint64_t token = rb_u64(&rec);
            if (!rec.bad)
                barriers_release(c, token, false, SL_OK);
        }
    }
}

/* ---- routes ------------------------------------------------------------ */

static void route_event(cluster_t *c, const char *f, size_t flen, bool add)
{
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    send_key(c, add ? "SADD" : "SREM", key, f, flen, RCLIENT_REPLAY);
    size_t at = rec_begin(c, &c->all, REC_ROUTE);
    wb_u32(&c->all, ++c->rseq);
    wb_u8(&c->all, add);
    wb_str(&c->all, f, flen);
    rec_end(c, &c->all, at);
}

void cluster_route_ref(broker_t *b, const char *f, size_t flen, int delta)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    uintptr_t n = (uintptr_t)map_get(c->local, f, flen);
    uintptr_t nn = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (nn)
        map_put(c->local, f, flen, (void *)nn, NULL);
    else
        map_del(c->local, f, flen);
    if ((n == 0) != (nn == 0))
        route_event(c, f, flen, nn != 0);
}

static void groute_free(void *v)
{
    groute_t *g = v;
    if (g)
        free(g->share);
    free(g);
}

/* Peer `peer` has (add) or no longer has an online member of the shared
 * group `share` ("$share/g/f" with inner filter f). */
static void groute_set(cluster_t *c, int peer, const char *share,
                       size_t slen, const char *f, size_t flen, bool add)
{
    groute_t *g = map_get(c->groutes, share, slen);
    void *old;
    if (!g) {
        if (!add)
            return;
        g = calloc(1, sizeof(*g));
        if (!g || !(g->share = strndup(share, slen)) ||
            map_put(c->groutes, share, slen, g, NULL) != SL_OK) {
            groute_free(g);
            return;
        }
        g->slen = slen;
        if (trie_insert(c->gtrie, f, flen, (uintptr_t)g, g, &old) != SL_OK) {
            map_del(c->groutes, share, slen);
            groute_free(g);
            return;
        }
    }
    if (g->on[peer] != add) {
        g->on[peer] = add;
        g->n += add ? 1 : (uint32_t)-1;
    }
    if (!g->n) {
        trie_remove(c->gtrie, f, flen, (uintptr_t)g, &old);
        map_del(c->groutes, share, slen);
        groute_free(g);
    }
}

static void route_set(cluster_t *c, int peer, const char *f, size_t flen,
                      bool add)
{
    void *old;
    const char *gname, *inner;
    size_t glen, ilen;
    int shared = topic_share_parse(f, flen, &gname, &glen, &inner, &ilen);
    if (shared == 1)
        groute_set(c, peer, f, flen, inner, ilen, add);
    else if (shared < 0)
        return;
    else if (add)
        trie_insert(c->routes, f, flen, (uintptr_t)peer + 1, (void *)1, &old);
    else
        trie_remove(c->routes, f, flen, (uintptr_t)peer + 1, &old);
}

typedef struct drop_ctx {
    uintptr_t key;
    char **filters;
    size_t n, cap;
} drop_ctx_t;

/* Room for one more filter in d. */
static bool drop_reserve(drop_ctx_t *d)
{
    if (d->n < d->cap)
        return true;
    size_t nc = d->cap ? d->cap * 2 : 16;
    char **nf = realloc(d->filters, nc * sizeof(char *));
    if (!nf)
        return false;
    d->filters = nf;
    d->cap = nc;
    return true;
}

static void collect_peer(void *ctx, const char *f, size_t flen, uintptr_t key,
                         void *value)
{
    drop_ctx_t *d = ctx;
    if (key != d->key || !drop_reserve(d))
        return;
    d->filters[d->n] = strndup(f, flen);
    if (d->filters[d->n])
        d->n++;
}

/* Forget every route of a peer. */
static void routes_drop_peer(cluster_t *c, int peer)
{
    drop_ctx_t d = {.key = (uintptr_t)peer + 1};
    trie_foreach(c->routes, collect_peer, &d);
    size_t cur = 0;
    void *v;
    while (map_next(c->groutes, &cur, NULL, NULL, &v)) {
        groute_t *g = v;
        if (!g->on[peer] || !drop_reserve(&d))
            continue;
        d.filters[d.n] = strndup(g->share, g->slen);
        if (d.filters[d.n])
            d.n++;
    }
    for (size_t i = 0; i < d.n; i++) {
        route_set(c, peer, d.filters[i], strlen(d.filters[i]), false);
        free(d.filters[i]);
    }
    free(d.filters);
    c->peers[peer].seq_known = false;
}

typedef struct load_ctx {
    cluster_t *c;
    int peer;
} load_ctx_t;

static void on_routes_loaded(void *ctx, const redisReply *r, int status)
{
    load_ctx_t *l = ctx;
    cluster_t *c = l->c;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_ARRAY)
        return;
    routes_drop_peer(c, l->peer);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING)
            route_set(c, l->peer, e->str, e->len, true);
    }
}

static void load_routes_of(cluster_t *c, int peer)
{
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->peers[peer].id);
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "SMEMBERS");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    load_ctx_t l = {c, peer};
    rclient_send(c->cl, &cmd, RCLIENT_REPLAY, on_routes_loaded, &l, sizeof(l),
                 NULL, 0);
}

/* ---- liveness ---------------------------------------------------------- */

static void handle_dead(cluster_t *c, int peer);
static void bus_check(cluster_t *c);

typedef struct alive_ctx {
    cluster_t *c;
    int peer;
} alive_ctx_t;

static void on_alive(void *ctx, const redisReply *r, int status)
{
    alive_ctx_t *a = ctx;
    cluster_t *c = a->c;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_INTEGER)
        return;
    peer_t *p = &c->peers[a->peer];
    bool alive = r->integer == 1;
    if (!alive && sl_mono_ms() < c->grace_until)
        return; /* the store forgot every heartbeat: wait for them */
    if (alive && !p->alive) {
        log_info("cluster: node '%s' is back", p->id);
        p->dead_handled = false;
        load_routes_of(c, a->peer);
    }
    p->alive = alive;
    if (!alive && !p->dead_handled) {
        p->dead_handled = true;
        log_warning("cluster: node '%s' stopped heartbeating", p->id);
        handle_dead(c, a->peer);
    }
}

static void on_nodes(void *ctx, const redisReply *r, int status)
{
    cluster_t *c = *(cluster_t **)ctx;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_ARRAY)
        return;
    /* A peer no longer registered was cleaned up by another survivor
     * (or left): it is dead for us too. */
    for (size_t p = 0; p < c->n_peers; p++) {
        bool listed = false;
        for (size_t i = 0; i + 1 < r->elements && !listed; i += 2) {
            const redisReply *k = r->element[i];
            listed = k->type == REDIS_REPLY_STRING &&
                     !strcmp(k->str, c->peers[p].id);
        }
        if (!listed && c->peers[p].alive &&
            sl_mono_ms() >= c->grace_until) {
            c->peers[p].alive = false;
            if (!c->peers[p].dead_handled) {
                c->peers[p].dead_handled = true;
                log_warning("cluster: node '%s' stopped heartbeating (no "
                            "longer registered)",
                            c->peers[p].id);
                handle_dead(c, (int)p);
            }
        }
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i];
        if (k->type != REDIS_REPLY_STRING || !strcmp(k->str, c->id))
            continue;
        bool known = peer_index(c, k->str, k->len, false) >= 0;
        int idx = peer_index(c, k->str, k->len, true);
        if (idx < 0)
            continue;
        if (!known || c->beats % RELOAD_EVERY == 0)
            load_routes_of(c, idx);
        char key[300];
        snprintf(key, sizeof(key), "node:%s:alive", c->peers[idx].id);
        rcmd_t cmd;
        rcmd_init(&cmd, c->url.prefix);
        rcmd_str(&cmd, "EXISTS");
        cmd.key = cmd.argc;
        rcmd_key(&cmd, key);
        alive_ctx_t a = {c, idx};
        rclient_send(c->cl, &cmd, 0, on_alive, &a, sizeof(a), NULL, 0);
    }
}

/* sl:mark holds a random value written once: when it is gone or another
 * one, the store lost its data, and with it every heartbeat and route. */
static void on_mark(void *ctx, const redisReply *r, int status)
{
    cluster_t *c = *(cluster_t **)ctx;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_STRING)
        return;
    if (!c->mark[0]) {
        snprintf(c->mark, sizeof(c->mark), "%.*s", (int)r->len, r->str);
        return;
    }
    if (strlen(c->mark) == r->len && !memcmp(c->mark, r->str, r->len))
        return;
    snprintf(c->mark, sizeof(c->mark), "%.*s", (int)r->len, r->str);
    c->grace_until = sl_mono_ms() + STORE_LOSS_GRACE_MS;
    log_warning("cluster: the store lost its data (restarted without "
                "persistence?); no node is declared dead for %d s while "
                "they write their state again",
                STORE_LOSS_GRACE_MS / 1000);
}

static void heartbeat(cluster_t *c)
{
    char key[300];
    rcmd_t cmd;
    char mark[40];
    snprintf(mark, sizeof(mark), "%llx-%08x", (unsigned long long)sl_now_ms(),
             (unsigned)rand());
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "SET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, "mark");
    rcmd_str(&cmd, mark);
    rcmd_str(&cmd, "NX");
    rclient_send(c->cl, &cmd, 0, on_published, &c, sizeof(c), NULL, 0);
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "GET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, "mark");
    rclient_send(c->cl, &cmd, 0, on_mark, &c, sizeof(c), NULL, 0);

    snprintf(key, sizeof(key), "node:%s:alive", c->id);
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "SET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    rcmd_str(&cmd, "1");
    rcmd_str(&cmd, "PX");
    rcmd_u64(&cmd, ALIVE_TTL_MS);
    rclient_send(c->cl, &cmd, 0, on_published, &c, sizeof(c), NULL, 0);

    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "HSET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, "nodes");
    rcmd_str(&cmd, c->id);
    rcmd_u64(&cmd, sl_now_ms());
    rclient_send(c->cl, &cmd, 0, on_published, &c, sizeof(c), NULL, 0);

    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "HGETALL");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, "nodes");
    rclient_send(c->cl, &cmd, 0, on_nodes, &c, sizeof(c), NULL, 0);
}

static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    cluster_t *c = arg;
    c->beats++;
    barriers_release(c, 0, true, SL_EIO);
    heartbeat(c);
    bus_check(c);
}

/* ---- a dead node ------------------------------------------------------- */

typedef struct dead_ctx {
    cluster_t *c;
    int peer;
    bool stored;                 /* also end its stored sessions */
} dead_ctx_t;

/*
 * Ending the stored sessions a node held when it died, from the store
 * (sl:nodesess:<id>), so it works whoever knew about them: each session
 * still online under the very claim (epoch) the node made gets its will
 * published and is marked offline, which starts its expiry. A session
 * claimed again since is left alone (and the write is fenced anyway).
 */
typedef struct endctx {
    cluster_t *c;
    uint64_t epoch;              /* the claim the dead node made */
    size_t clen;
    char cid[];
} endctx_t;

static void on_session_read(void *ctx, const redisReply *r, int status)
{
    endctx_t *e = ctx;
    cluster_t *c = e->c;
    broker_t *b = c->b;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_ARRAY ||
        r->elements != 5)
        return;
    const redisReply *ep = r->element[0], *on = r->element[1],
                     *will = r->element[2], *wd = r->element[3],
                     *exp = r->element[4];
    if (ep->type != REDIS_REPLY_STRING || on->type != REDIS_REPLY_STRING ||
        strcmp(on->str, "1") != 0)
        return;
    uint64_t epoch = strtoull(ep->str, NULL, 10);
    if (!epoch || epoch != e->epoch)
        return; /* claimed again since (by another node or this one) */
    if (map_get(b->clients, e->cid, e->clen))
        return; /* connected here again */
    msg_t *m = NULL;
    if (will->type == REDIS_REPLY_STRING && will->len &&
        blob_msg_read(will->str, will->len, &m) == SL_OK) {
        /* A stored session: the will waits for its delay (v5; 0 for
         * older protocols) or the session's expiry, whichever is first. */
        uint32_t delay = wd->type == REDIS_REPLY_STRING
                             ? (uint32_t)strtoul(wd->str, NULL, 10)
                             : 0;
        uint32_t expiry = exp->type == REDIS_REPLY_STRING
                              ? (uint32_t)strtoul(exp->str, NULL, 10)
                              : 0;
        broker_will_after(b, e->cid, e->clen, m,
                          expiry < delay ? expiry : delay);
        msg_unref(&m);
    }
    store_session_offline(b->store, e->cid, e->clen, epoch, sl_now_ms(), NULL,
                          NULL);
    log_info("cluster: session of client '%s' ended with its node",
             e->cid);
}

typedef struct setctx {
    cluster_t *c;
} setctx_t;

static void on_node_sessions(void *ctx, const redisReply *r, int status)
{
    setctx_t *sc = ctx;
    cluster_t *c = sc->c;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *e = r->element[i], *ev = r->element[i + 1];
        if (e->type != REDIS_REPLY_STRING || ev->type != REDIS_REPLY_STRING)
            continue;
        rcmd_t cmd;
        rcmd_init(&cmd, c->url.prefix);
        rcmd_str(&cmd, "HMGET");
        rcmd_ckey(&cmd, e->str, e->len, ":s");
        rcmd_str(&cmd, "epoch");
        rcmd_str(&cmd, "on");
        rcmd_str(&cmd, "will");
        rcmd_str(&cmd, "wd");
        rcmd_str(&cmd, "exp");
        endctx_t ec = {c, strtoull(ev->str, NULL, 10), e->len};
        rclient_send(c->cl, &cmd, 0, on_session_read, &ec, sizeof(ec), e->str,
                     e->len);
    }
}

static void end_sessions_of(cluster_t *c, const char *node, bool forget)
{
    char key[300];
    snprintf(key, sizeof(key), "nodesess:%s", node);
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "HGETALL");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    setctx_t sc = {c};
    rclient_send(c->cl, &cmd, 0, on_node_sessions, &sc, sizeof(sc), NULL, 0);
    if (forget)
        send_key(c, "DEL", key, NULL, 0, 0);
}

static void cleanup_dead(cluster_t *c, int peer, bool stored)
{
    if (stored)
        end_sessions_of(c, c->peers[peer].id, true);
    broker_t *b = c->b;
    size_t cur = 0;
    const char *cid;
    size_t clen;
    void *v;
    size_t wills = 0;
    while (map_next(c->owners, &cur, &cid, &clen, &v)) {
        owner_t *o = v;
        if (o->node != peer || o->expiry)
            continue; /* stored sessions: end_sessions_of() */
        if (o->will) {
            /* A clean session's will, known from its claim broadcast. */
            router_publish(b, NULL, o->will, NULL, NULL);
            b->stats.wills_published++;
            wills++;
        }
    }
    if (!stored) {
        /* A first start and a restart look alike here; only a restart
         * can leave wills behind. */
        if (wills)
            log_info("cluster: node '%s' restarted (%zu clean-session wills "
                     "of its previous run published)",
                     c->peers[peer].id, wills);
        else
            log_info("cluster: node '%s' joined", c->peers[peer].id);
        return; /* it is alive: its registration stays */
    }
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->peers[peer].id);
    send_key(c, "DEL", key, NULL, 0, 0);
    send_key(c, "HDEL", "nodes", c->peers[peer].id, strlen(c->peers[peer].id),
             0);
    log_warning("cluster: cleaned up dead node '%s' (%zu clean-session "
                "wills published; stored sessions follow)",
                c->peers[peer].id, wills);
}

static void on_dead_lock(void *ctx, const redisReply *r, int status)
{
    dead_ctx_t *d = ctx;
    if (status == SL_OK && r && r->type == REDIS_REPLY_STATUS)
        cleanup_dead(d->c, d->peer, d->stored); /* we hold the lock */
    /* Every node forgets the dead node's clients. */
    cluster_t *c = d->c;
    size_t cur = 0;
    const char *cid;
    size_t clen;
    void *v;
    char **gone = NULL;
    size_t n = 0;
    while (map_next(c->owners, &cur, &cid, &clen, &v)) {
        owner_t *o = v;
        if (o->node != d->peer)
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
                msg_unref(&o->will);
            free(o);
        }
        free(gone[i]);
    }
    free(gone);
}

static void dead_cleanup(cluster_t *c, int peer, const char *lock,
                         bool stored)
{
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "SET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, lock);
    rcmd_str(&cmd, c->id);
    rcmd_str(&cmd, "NX");
    rcmd_str(&cmd, "PX");
    rcmd_u64(&cmd, 30000);
    dead_ctx_t d = {c, peer, stored};
    rclient_send(c->cl, &cmd, 0, on_dead_lock, &d, sizeof(d), NULL, 0);
}

static void handle_dead(cluster_t *c, int peer)
{
    routes_drop_peer(c, peer);
    char key[300];
    snprintf(key, sizeof(key), "lock:dead:%s", c->peers[peer].id);
    dead_cleanup(c, peer, key, true);
}

/* ---- receiving --------------------------------------------------------- */

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

static void rx_claim(cluster_t *c, int from, rbuf_t *r)
{
    size_t clen;
    const char *cid = rb_str(r, &clen);
    uint64_t epoch = rb_u64(r);
    uint32_t expiry = rb_u32(r);
    uint32_t delay = rb_u32(r);
    bool has_will = rb_u8(r);
    msg_t *will = has_will ? rb_msg(r) : NULL;
    if (r->bad || !cid) {
        msg_unref(&will);
        return;
    }
    /* The client is back (elsewhere): a will it left here waits no more
     * (MQTT 5 §3.1.3.2.2: not sent if it reconnects within the delay). */
    broker_cancel_delayed_will(c->b, cid, clen);
    /* Takeover: a newer claim elsewhere closes our connection. */
    sess_t *s = map_get(c->b->clients, cid, clen);
    if (s && sess_claim_epoch(s) < epoch) {
        s->taken_over = true;
        sess_close(s, SL_ETAKENOVER,
                   "session taken over by another node");
    }
    owner_set(c, cid, clen, from, epoch, will, delay, expiry);
}

static void rx_psub(cluster_t *c, rbuf_t *r)
{
    broker_t *b = c->b;
    bool add = rb_u8(r);
    size_t clen, flen;
    const char *cid = rb_str(r, &clen);
    const char *f = rb_str(r, &flen);
    uint8_t opts = rb_u8(r);
    uint32_t subid = rb_u32(r);
    if (r->bad || !cid || !f)
        return;
    subr_t *sr = map_get(b->psessions, cid, clen);
    if (!add) {
        if (sr && !sr->online)
            subs_remove(b, sr, f, flen);
        return;
    }
    if (!sr) {
        sr = subr_new(cid, clen, true);
        if (!sr || map_put(b->psessions, cid, clen, sr, NULL) != SL_OK) {
            subr_unref(&sr);
            return;
        }
    }
    if (sr->online)
        return; /* ours: our own index is current */
    sub_t sub = {.qos = opts & 3, .no_local = (opts >> 2) & 1,
                 .retain_as_published = (opts >> 3) & 1,
                 .retain_handling = (opts >> 4) & 3, .sub_id = subid};
    bool existed;
    subs_add(b, sr, f, flen, &sub, &existed);
}

static void rx_ended(cluster_t *c, rbuf_t *r)
{
    broker_t *b = c->b;
    size_t clen;
    const char *cid = rb_str(r, &clen);
    if (r->bad || !cid)
        return;
    subr_t *sr = map_get(b->psessions, cid, clen);
    if (sr && !sr->online) {
        map_del(b->psessions, cid, clen);
        subs_clear(b, sr);
        sr->gone = true;
        subr_unref(&sr);
    }
    owner_del(c, cid, clen, 0);
}

static void rx_queued(cluster_t *c, rbuf_t *r)
{
    size_t clen;
    const char *cid = rb_str(r, &clen);
    delivery_opts_t o = {0};
    o.qid = rb_u64(r);
    o.qos = rb_u8(r);
    o.retain = rb_u8(r);
    uint8_t n = rb_u8(r);
    for (uint8_t i = 0; i < n && i < DELIVERY_MAX_SUBIDS; i++)
        o.subids[o.n_subids++] = rb_u32(r);
    msg_t *m = rb_msg(r);
    if (r->bad || !cid || !m) {
        msg_unref(&m);
        return;
    }
    sess_t *s = map_get(c->b->clients, cid, clen);
    if (s && s->state == SESS_ONLINE && s->persistent)
        sess_deliver(s, m, &o);
    msg_unref(&m);
}

static void rx_retain(cluster_t *c, rbuf_t *r)
{
    msg_t *m = rb_msg(r);
    if (r->bad || !m)
        return;
    router_retained_index(c->b, m);
    msg_unref(&m);
}

static void dead_cleanup(cluster_t *c, int peer, const char *lock,
                         bool stored);

/* A node (re)started under this id: whatever we knew of its previous run
 * (routes, clean sessions) is gone. One node (lock per restart) publishes
 * the wills of that run's clean sessions; the node ends its stored
 * sessions itself. */
static void rx_reset(cluster_t *c, int from, rbuf_t *r)
{
    uint64_t started = rb_u64(r);
    if (r->bad)
        return;
    routes_drop_peer(c, from);
    char lock[300];
    snprintf(lock, sizeof(lock), "lock:restart:%s:%llu", c->peers[from].id,
             (unsigned long long)started);
    dead_cleanup(c, from, lock, false);
}

/* A route event. Events of one node arrive in order on the bus; a gap in
 * its sequence means some were lost (a bus hiccup): reload its table. */
static void rx_route(cluster_t *c, int from, rbuf_t *r)
{
    uint32_t seq = rb_u32(r);
    bool add = rb_u8(r);
    size_t flen;
    const char *f = rb_str(r, &flen);
    if (r->bad || !f)
        return;
    peer_t *p = &c->peers[from];
    bool gap = p->seq_known && seq != p->rseq + 1;
    p->rseq = seq;
    p->seq_known = true;
    if (gap) {
        log_info("cluster: route events of node '%s' were lost, reloading "
                 "its routes",
                 p->id);
        c->resyncs++;
        load_routes_of(c, from);
        return;
    }
    route_set(c, from, f, flen, add);
}

static void rx_record(cluster_t *c, int from, uint8_t type, rbuf_t *r)
{
    switch (type) {
    case REC_RESET:
        rx_reset(c, from, r);
        break;
    case REC_MSG: {
        msg_t *m = rb_msg(r);
        if (m) {
            router_publish_remote(c->b, m);
            msg_unref(&m);
        }
        break;
    }
    case REC_QUEUED:
        rx_queued(c, r);
        break;
    case REC_ROUTE:
        rx_route(c, from, r);
        break;
    case REC_GROUP: {
        size_t slen;
        const char *share = rb_str(r, &slen);
        msg_t *m = rb_msg(r);
        if (!r->bad && share && m)
            router_group_remote(c->b, share, slen, m);
        msg_unref(&m);
        break;
    }
    case REC_PSUB:
        rx_psub(c, r);
        break;
    case REC_ENDED:
        rx_ended(c, r);
        break;
    case REC_CLAIM:
        rx_claim(c, from, r);
        break;
    case REC_OFFLINE: {
        size_t clen;
        const char *cid = rb_str(r, &clen);
        uint64_t epoch = rb_u64(r);
        if (!r->bad && cid)
            owner_del(c, cid, clen, epoch);
        break;
    }
    case REC_RETAIN:
        rx_retain(c, r);
        break;
    default:
        break; /* a newer node's record: skip */
    }
}

static void rx_frame(cluster_t *c, const uint8_t *p, size_t len)
{
    rbuf_t r = {p, len, false};
    size_t idlen;
    c->bus_heard_at = sl_mono_ms();
    const char *id = rb_str(&r, &idlen);
    if (!id)
        return;
    if (idlen == strlen(c->id) && !memcmp(id, c->id, idlen)) {
        rx_own_frame(c, &r); /* our broadcast, or a barrier */
        return;
    }
    int from = peer_index(c, id, idlen, true);
    if (from < 0)
        return;
    c->received++;
    while (r.len && !r.bad) {
        uint8_t type = rb_u8(&r);
        uint32_t n = rb_u32(&r);
        const uint8_t *body = rb_take(&r, n);
        if (!body)
            break;
        rbuf_t rec = {body, n, false};
        rx_record(c, from, type, &rec);
    }
    if (r.bad)
        log_warning("cluster: malformed bus frame from node '%.*s'",
                    (int)idlen, id);
}

/* ---- the subscriber connection ---------------------------------------- */

static void bus_connect(cluster_t *c);

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
        broker_resync(c->b);
        broker_sweep(c->b);
    }
    for (size_t i = 0; i < c->n_peers; i++)
        load_routes_of(c, (int)i);
    size_t cur = 0;
    const char *f;
    size_t flen;
    while (map_next(c->local, &cur, &f, &flen, NULL))
        route_event(c, f, flen, true);
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
        broker_sweep(c->b);
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
    bus_connect(arg);
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
    barriers_release(c, UINT64_MAX, false, SL_EIO);
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

/* Every heartbeat: a probe to our own channel; a bus that stayed silent
 * (not even our probes came back) is connected again. */
static void bus_check(cluster_t *c)
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
    if (c->bus_up) {
        size_t at = rec_begin(c, &c->selfb, REC_BARRIER);
        wb_u64(&c->selfb, 0); /* token 0: releases no barrier */
        rec_end(c, &c->selfb, at);
    }
}

/* The store node that owns the bus channels' slot (cluster) or the server. */
typedef struct bus_target {
    cluster_t *c;
} bus_target_t;

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
    redisLibeventAttach(ac, c->b->base);
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

static void bus_connect(cluster_t *c)
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

/* ---- shared groups across nodes ---------------------------------------- */

static void on_group_match(void *ctx, const char *f, size_t flen,
                           uintptr_t key, void *value)
{
    cluster_t *c = ctx;
    if (c->n_gm == c->cap_gm) {
        uint32_t nc = c->cap_gm ? c->cap_gm * 2 : 8;
        groute_t **ng = realloc(c->gm, nc * sizeof(*ng));
        if (!ng)
            return;
        c->gm = ng;
        c->cap_gm = nc;
    }
    c->gm[c->n_gm++] = value;
}

/* Round robin over the nodes with members: this one (when `self`) and the
 * live peers with the group's route. */
static int groute_pick(cluster_t *c, groute_t *g, bool self)
{
    uint32_t n = self ? 1 : 0;
    for (size_t i = 0; i < c->n_peers; i++)
        n += g->on[i] && c->peers[i].alive;
    if (!n)
        return CLUSTER_NONE;
    uint32_t k = g->rr++ % n;
    if (self && k-- == 0)
        return CLUSTER_SELF;
    for (size_t i = 0; i < c->n_peers; i++)
        if (g->on[i] && c->peers[i].alive && k-- == 0)
            return (int)i;
    return CLUSTER_NONE;
}

int cluster_group_pick(broker_t *b, const char *share, size_t slen,
                       bool self)
{
    cluster_t *c = b->cluster;
    groute_t *g = c ? map_get(c->groutes, share, slen) : NULL;
    if (!g)
        return self ? CLUSTER_SELF : CLUSTER_NONE;
    return groute_pick(c, g, self);
}

static void send_group(cluster_t *c, int node, const char *share,
                       size_t slen, const msg_t *m)
{
    wbuf_t *w = &c->peers[node].batch;
    size_t at = rec_begin(c, w, REC_GROUP);
    wb_str(w, share, slen);
    wb_msg(w, m);
    rec_end(c, w, at);
}

void cluster_send_group(broker_t *b, int node, const char *share,
                        size_t slen, const msg_t *m)
{
    cluster_t *c = b->cluster;
    if (c && node >= 0 && (size_t)node < c->n_peers)
        send_group(c, node, share, slen, m);
}

/* Groups with members on other nodes only (a group with a member or a
 * persistent session known here went through cluster_group_pick()). */
static void forward_groups(cluster_t *c, const msg_t *m)
{
    c->n_gm = 0;
    trie_match(c->gtrie, m->topic, m->topic_len, on_group_match, c);
    for (uint32_t i = 0; i < c->n_gm; i++) {
        groute_t *g = c->gm[i];
        if (map_get(c->b->groups, g->share, g->slen))
            continue;
        int node = groute_pick(c, g, false);
        if (node >= 0)
            send_group(c, node, g->share, g->slen, m);
    }
}

int cluster_owner(broker_t *b, const subr_t *r)
{
    cluster_t *c = b->cluster;
    owner_t *o = c ? map_get(c->owners, r->cid, r->clen) : NULL;
    if (!o)
        return CLUSTER_NONE;
    return o->node == SELF ? CLUSTER_SELF : (int)o->node;
}

/* ---- what the broker calls --------------------------------------------- */

typedef struct fwd_ctx {
    cluster_t *c;
    bool want[MAX_NODES];
    bool any;
} fwd_ctx_t;

static void on_route_match(void *ctx, const char *f, size_t flen,
                           uintptr_t key, void *value)
{
    fwd_ctx_t *x = ctx;
    size_t i = key - 1;
    if (i < x->c->n_peers && x->c->peers[i].alive) {
        x->want[i] = true;
        x->any = true;
    }
}

void cluster_forward(broker_t *b, const msg_t *m)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    if (!c->n_peers)
        return;
    if (map_count(c->groutes))
        forward_groups(c, m);
    fwd_ctx_t x = {.c = c};
    trie_match(c->routes, m->topic, m->topic_len, on_route_match, &x);
    if (!x.any)
        return;
    for (size_t i = 0; i < c->n_peers; i++) {
        if (!x.want[i])
            continue;
        wbuf_t *w = &c->peers[i].batch;
        size_t at = rec_begin(c, w, REC_MSG);
        wb_msg(w, m);
        rec_end(c, w, at);
    }
}

bool cluster_notify_queued(broker_t *b, const subr_t *r, const msg_t *m,
                           uint8_t qos, bool retain, const uint32_t *subids,
                           uint8_t n, uint64_t qid)
{
    cluster_t *c = b->cluster;
    if (!c)
        return false;
    owner_t *o = map_get(c->owners, r->cid, r->clen);
    if (o && o->node == SELF)
        return false;
    /* Owner unknown (this node started after the claim): tell every node;
     * only the one holding the session online delivers it. */
    wbuf_t *w = o && o->node < c->n_peers ? &c->peers[o->node].batch
                                          : &c->all;
    size_t at = rec_begin(c, w, REC_QUEUED);
    wb_str(w, r->cid, r->clen);
    wb_u64(w, qid);
    wb_u8(w, qos);
    wb_u8(w, retain);
    wb_u8(w, n);
    for (uint8_t i = 0; i < n; i++)
        wb_u32(w, subids[i]);
    wb_msg(w, m);
    rec_end(c, w, at);
    return true;
}

/* sl:nodesess:<id>: hash of the stored sessions online at a node, with the
 * epoch of their claim, so that the survivor cleaning up after it (or its
 * own next run) ends exactly those claims and not a newer one elsewhere. */
static void node_sessions(cluster_t *c, const sess_t *s, bool add)
{
    if (!s->epoch)
        return; /* a clean session: nothing stored to end */
    char key[300];
    snprintf(key, sizeof(key), "nodesess:%s", c->id);
    rcmd_t cmd;
    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, add ? "HSET" : "HDEL");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, key);
    rcmd_bytes(&cmd, s->cid, s->clen);
    if (add)
        rcmd_u64(&cmd, s->epoch);
    rclient_send(c->cl, &cmd, RCLIENT_REPLAY, on_published, &c, sizeof(c),
                 NULL, 0);
}

void cluster_claimed(broker_t *b, const sess_t *s)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    node_sessions(c, s, true);
    size_t at = rec_begin(c, &c->all, REC_CLAIM);
    wb_str(&c->all, s->cid, s->clen);
    wb_u64(&c->all, sess_claim_epoch(s));
    wb_u32(&c->all, s->persistent ? s->expiry : 0);
    wb_u32(&c->all, s->will_delay);
    wb_u8(&c->all, s->will != NULL);
    if (s->will)
        wb_msg(&c->all, s->will);
    rec_end(c, &c->all, at);
    owner_set(c, s->cid, s->clen, SELF, sess_claim_epoch(s), NULL, 0, 0);
}

void cluster_offline(broker_t *b, const sess_t *s)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    node_sessions(c, s, false);
    size_t at = rec_begin(c, &c->all, REC_OFFLINE);
    wb_str(&c->all, s->cid, s->clen);
    wb_u64(&c->all, sess_claim_epoch(s));
    rec_end(c, &c->all, at);
    owner_del(c, s->cid, s->clen, sess_claim_epoch(s));
}

void cluster_psub(broker_t *b, const char *cid, size_t clen, const char *f,
                  size_t flen, const sub_t *sub, bool add)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    size_t at = rec_begin(c, &c->all, REC_PSUB);
    wb_u8(&c->all, add);
    wb_str(&c->all, cid, clen);
    wb_str(&c->all, f, flen);
    wb_u8(&c->all, sub ? (uint8_t)(sub->qos | sub->no_local << 2 |
                                   sub->retain_as_published << 3 |
                                   sub->retain_handling << 4)
                       : 0);
    wb_u32(&c->all, sub ? sub->sub_id : 0);
    rec_end(c, &c->all, at);
}

void cluster_ended(broker_t *b, const char *cid, size_t clen)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    size_t at = rec_begin(c, &c->all, REC_ENDED);
    wb_str(&c->all, cid, clen);
    rec_end(c, &c->all, at);
}

const char *cluster_node_id(const broker_t *b)
{
    return b->cluster ? b->cluster->id : NULL;
}

void cluster_stats(broker_t *b, cluster_stats_t *st)
{
    cluster_t *c = b->cluster;
    memset(st, 0, sizeof(*st));
    if (!c)
        return;
    st->nodes = 1;
    for (size_t i = 0; i < c->n_peers; i++)
        st->nodes += c->peers[i].alive;
    st->routes = trie_count(c->routes) + map_count(c->groutes);
    st->sent = c->sent;
    st->received = c->received;
    st->resyncs = c->resyncs;
    st->bus_up = c->bus_up;
    st->bus_losses = c->bus_losses;
    st->bus_resubs = c->bus_resubs;
}

static void gen_id(char *out, size_t len)
{
    char host[64] = "node";
    gethostname(host, sizeof(host) - 1);
    snprintf(out, len, "%s-%d-%04x", host, (int)getpid(), rand() & 0xffff);
}

int cluster_start(broker_t *b)
{
    if (!redis_url_match(b->conf->store))
        return SL_OK;
    cluster_t *c = calloc(1, sizeof(*c));
    char err[256];
    if (!c)
        return SL_ENOMEM;
    c->b = b;
    if (redis_url_parse(b->conf->store, &c->url, err, sizeof(err)) != SL_OK) {
        log_error("cluster: %s", err);
        redis_url_fini(&c->url);
        free(c);
        return SL_EINVAL;
    }
    char gen[128];
    if (!b->conf->node_id)
        gen_id(gen, sizeof(gen));
    c->id = strdup(b->conf->node_id ? b->conf->node_id : gen);
    /* One hash tag for both channels: one slot, one store node. */
    snprintf(c->chan_self, sizeof(c->chan_self), "%sbus:{bus}:%s",
             c->url.prefix, c->id);
    snprintf(c->chan_all, sizeof(c->chan_all), "%sbus:{bus}:all",
             c->url.prefix);
    c->routes = trie_new();
    c->gtrie = trie_new();
    c->groutes = map_new();
    c->local = map_new();
    c->owners = map_new();
    c->beat = event_new(b->base, -1, EV_PERSIST, on_beat, c);
    c->flush = event_new(b->base, -1, 0, on_flush, c);
    c->resub = evtimer_new(b->base, on_resub, c);
    c->downsweep = event_new(b->base, -1, EV_PERSIST, on_downsweep, c);
    if (!c->id || !c->routes || !c->gtrie || !c->groutes || !c->local || !c->owners || !c->beat ||
        !c->flush || !c->resub || !c->downsweep ||
        rclient_new(&c->cl, b->base, &c->url, NULL, 0, err, sizeof(err)) !=
            SL_OK) {
        log_error("cluster: cannot start: %s", err);
        b->cluster = c;
        cluster_free(b);
        return SL_ENOMEM;
    }
    b->cluster = c;
    /* What our previous run (same node_id) left: its routes go, its
     * stored sessions still online end now, and the others hear that we
     * started (they drop its routes and publish its clean sessions' wills). */
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    send_key(c, "DEL", key, NULL, 0, 0);
    end_sessions_of(c, c->id, false);
    size_t at = rec_begin(c, &c->all, REC_RESET);
    wb_u64(&c->all, sl_now_ms());
    rec_end(c, &c->all, at);
    heartbeat(c);
    bus_connect(c);
    struct timeval tv = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    event_add(c->beat, &tv);
    log_info("cluster: node '%s' joining through %s", c->id,
             c->url.cluster ? "a store cluster" : "the store");
    return SL_OK;
}

/* Leave the cluster: routes and registration go, the heartbeat stops. */
void cluster_stop(broker_t *b)
{
    cluster_t *c = b->cluster;
    if (!c || c->stopping)
        return;
    c->stopping = true;
    barriers_release(c, UINT64_MAX, false, SL_EIO);
    event_del(c->beat);
    event_del(c->downsweep);
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    send_key(c, "DEL", key, NULL, 0, 0);
    snprintf(key, sizeof(key), "node:%s:alive", c->id);
    send_key(c, "DEL", key, NULL, 0, 0);
    send_key(c, "HDEL", "nodes", c->id, strlen(c->id), 0);
    flush_all(c);
}

static void owner_free(void *v)
{
    owner_t *o = v;
    msg_unref(&o->will);
    free(o);
}

void cluster_free(broker_t *b)
{
    cluster_t *c = b->cluster;
    if (!c)
        return;
    c->stopping = true;
    if (c->sub) {
        redisAsyncContext *ac = c->sub;
        c->sub = NULL;
        redisAsyncFree(ac);
    }
    if (c->cl)
        rclient_free(c->cl);
    if (c->beat)
        event_free(c->beat);
    if (c->flush)
        event_free(c->flush);
    if (c->resub)
        event_free(c->resub);
    if (c->downsweep)
        event_free(c->downsweep);
    for (size_t i = 0; i < c->n_peers; i++) {
        free(c->peers[i].id);
        free(c->peers[i].batch.p);
    }
    barriers_release(c, UINT64_MAX, false, SL_EIO);
    for (size_t i = 0; i < c->all_wait.n; i++)
        c->all_wait.w[i].fn(c->all_wait.w[i].arg, SL_EIO);
    free(c->all.p);
    free(c->selfb.p);
    free(c->all_wait.w);
    trie_free(c->routes, NULL);
    trie_free(c->gtrie, NULL);
    map_free(c->groutes, groute_free);
    free(c->gm);
    map_free(c->local, NULL);
    map_free(c->owners, owner_free);
    free(c->id);
    redis_url_fini(&c->url);
    free(c);
    b->cluster = NULL;
}
