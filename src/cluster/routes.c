/*
 * routes.c - which node wants which message (design.md §5, Routes and
 * Shared subscriptions).
 *
 * A route is a filter with an online subscriber on a node. Each node keeps
 * its own in sl:routes:<id> and broadcasts additions and removals ('R'),
 * each with the node's next route sequence number; every node holds the
 * whole table (filter -> nodes) in a trie and sends a message once to each
 * node with a matching route ('M'). A gap in a node's sequence, a bus
 * reconnect or a node's death reloads that table from the store, and a
 * full reload runs every RELOAD_EVERY heartbeats as well.
 *
 * A shared group's route is "$share/<g>/<f>" (a trie of inner filters ->
 * groups): the publishing node picks one node among those with an online
 * member (itself included, round robin) and sends the message to that
 * node only ('G').
 */
#include "cluster_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- our routes -------------------------------------------------------- */

void cl_route_event(cluster_t *c, const char *f, size_t flen, bool add)
{
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    cl_send_key(c, add ? "SADD" : "SREM", key, f, flen, RCLIENT_REPLAY);
    bus_route_t r = {.seq = ++c->rseq, .add = add, .filter = f, .flen = flen};
    if (bus_encode_route(&c->all, &r))
        cl_batched(c, &c->all);
}

void cl_routes_announce(cluster_t *c)
{
    size_t cur = 0;
    const char *f;
    size_t flen;
    while (map_next(c->local, &cur, &f, &flen, NULL))
        cl_route_event(c, f, flen, true);
}

void cluster_route_ref(cluster_t *c, const char *f, size_t flen, int delta)
{
    if (!c)
        return;
    uintptr_t n = (uintptr_t)map_get(c->local, f, flen);
    uintptr_t nn = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (nn)
        map_put(c->local, f, flen, (void *)nn, NULL);
    else
        map_del(c->local, f, flen);
    if ((n == 0) != (nn == 0))
        cl_route_event(c, f, flen, nn != 0);
}

/* ---- the table --------------------------------------------------------- */

void cl_groute_free(void *v)
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
            cl_groute_free(g);
            return;
        }
        g->slen = slen;
        if (trie_insert(c->gtrie, f, flen, (uintptr_t)g, g, &old) != SL_OK) {
            map_del(c->groutes, share, slen);
            cl_groute_free(g);
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
        cl_groute_free(g);
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

void cl_routes_drop_peer(cluster_t *c, int peer)
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
    cl_routes_drop_peer(c, l->peer);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING)
            route_set(c, l->peer, e->str, e->len, true);
    }
}

void cl_routes_load(cluster_t *c, int peer)
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

/* A route event. Events of one node arrive in order on the bus; a gap in
 * its sequence means some were lost (a bus hiccup): reload its table. */
void cl_rx_route(cluster_t *c, int from, const bus_route_t *r)
{
    peer_t *p = &c->peers[from];
    bool gap = p->seq_known && r->seq != p->rseq + 1;
    p->rseq = r->seq;
    p->seq_known = true;
    if (gap) {
        log_info("cluster: route events of node '%s' were lost, reloading "
                 "its routes",
                 p->id);
        c->resyncs++;
        cl_routes_load(c, from);
        return;
    }
    route_set(c, from, r->filter, r->flen, r->add);
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

int cluster_group_pick(cluster_t *c, const char *share, size_t slen,
                       bool self)
{
    groute_t *g = c ? map_get(c->groutes, share, slen) : NULL;
    if (!g)
        return self ? CLUSTER_SELF : CLUSTER_NONE;
    return groute_pick(c, g, self);
}

static void send_group(cluster_t *c, int node, const char *share,
                       size_t slen, const msg_t *m)
{
    bus_buf_t *w = &c->peers[node].batch;
    bus_group_t r = {.share = share, .slen = slen, .msg = (msg_t *)m};
    if (bus_encode_group(w, &r))
        cl_batched(c, w);
}

void cluster_send_group(cluster_t *c, int node, const char *share,
                        size_t slen, const msg_t *m)
{
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
        if (c->hooks.group_known(c->hooks.ctx, g->share, g->slen))
            continue;
        int node = groute_pick(c, g, false);
        if (node >= 0)
            send_group(c, node, g->share, g->slen, m);
    }
}

/* ---- forwarding -------------------------------------------------------- */

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

void cluster_forward(cluster_t *c, const msg_t *m)
{
    if (!c || !c->n_peers)
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
        bus_buf_t *w = &c->peers[i].batch;
        if (bus_encode_message(w, &(bus_message_t){(msg_t *)m}))
            cl_batched(c, w);
    }
}
