/*
 * cluster.c - nodes that share one Redis-protocol store (design.md §5).
 *
 * On when the store is redis:// or redis+cluster://. Every node is equal:
 *
 *  - identity and liveness: `node_id` (config or generated), registered in
 *    the hash sl:nodes, alive while sl:node:<id>:alive (PX 5000) is
 *    refreshed every second; a random sl:mark tells when the store lost
 *    its data (then no node is declared dead for a while);
 *  - the bus (bus_conn.c, records in bus.c), routes (routes.c) and
 *    sessions across nodes (sessions.c);
 *  - a dead node (heartbeat gone): every node drops its routes and forgets
 *    its clients; one survivor (SET NX PX lock) publishes the wills of its
 *    clean sessions, ends its stored sessions still online under the
 *    claim it made (sl:nodesess:<id>) and removes its registration;
 *  - a node that (re)starts under an id ends what its previous run left.
 *
 * What the cluster needs of the broker goes through the hooks given to
 * cluster_start() (starling/cluster.h).
 */
#include "cluster_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- peers ------------------------------------------------------------- */

int cl_peer_index(cluster_t *c, const char *id, size_t len, bool add)
{
    for (size_t i = 0; i < c->n_peers; i++)
        if (strlen(c->peers[i].id) == len && !memcmp(c->peers[i].id, id, len))
            return (int)i;
    if (!add || c->n_peers == MAX_NODES)
        return -1;
    peer_t *p = &c->peers[c->n_peers];
    memset(p, 0, sizeof(*p));
    p->id = strndup(id, len);
    if (!p->id || !bus_frame_begin(&p->batch, c->id, strlen(c->id))) {
        free(p->id);
        bus_buf_free(&p->batch);
        return -1;
    }
    p->alive = true;
    return (int)c->n_peers++;
}

/* ---- liveness ---------------------------------------------------------- */

static void handle_dead(cluster_t *c, int peer);

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
        cl_routes_load(c, a->peer);
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
        bool known = cl_peer_index(c, k->str, k->len, false) >= 0;
        int idx = cl_peer_index(c, k->str, k->len, true);
        if (idx < 0)
            continue;
        if (!known || c->beats % RELOAD_EVERY == 0)
            cl_routes_load(c, idx);
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
    rclient_send(c->cl, &cmd, 0, cl_on_published, &c, sizeof(c), NULL, 0);
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
    rclient_send(c->cl, &cmd, 0, cl_on_published, &c, sizeof(c), NULL, 0);

    rcmd_init(&cmd, c->url.prefix);
    rcmd_str(&cmd, "HSET");
    cmd.key = cmd.argc;
    rcmd_key(&cmd, "nodes");
    rcmd_str(&cmd, c->id);
    rcmd_u64(&cmd, sl_now_ms());
    rclient_send(c->cl, &cmd, 0, cl_on_published, &c, sizeof(c), NULL, 0);

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
    cl_barriers_release(c, 0, true, SL_EIO);
    heartbeat(c);
    cl_bus_check(c);
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
    const cluster_hooks_t *h = &c->hooks;
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
    if (h->connected(h->ctx, e->cid, e->clen))
        return; /* connected here again */
    msg_t *m = NULL;
    if (will->type == REDIS_REPLY_STRING && will->len &&
        bus_msg_decode(will->str, will->len, &m) == SL_OK) {
        /* A stored session: the will waits for its delay (v5; 0 for
         * older protocols) or the session's expiry, whichever is first. */
        uint32_t delay = wd->type == REDIS_REPLY_STRING
                             ? (uint32_t)strtoul(wd->str, NULL, 10)
                             : 0;
        uint32_t expiry = exp->type == REDIS_REPLY_STRING
                              ? (uint32_t)strtoul(exp->str, NULL, 10)
                              : 0;
        h->will_after(h->ctx, e->cid, e->clen, m,
                      expiry < delay ? expiry : delay);
        msg_unref(&m);
    }
    store_session_offline(c->store, e->cid, e->clen, epoch, sl_now_ms(),
                          NULL, NULL);
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
        cl_send_key(c, "DEL", key, NULL, 0, 0);
}

static void cleanup_dead(cluster_t *c, int peer, bool stored)
{
    if (stored)
        end_sessions_of(c, c->peers[peer].id, true);
    size_t wills = cl_owners_publish_wills(c, peer);
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
    cl_send_key(c, "DEL", key, NULL, 0, 0);
    cl_send_key(c, "HDEL", "nodes", c->peers[peer].id,
                strlen(c->peers[peer].id), 0);
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
    cl_owners_drop_node(d->c, d->peer);
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
    cl_routes_drop_peer(c, peer);
    char key[300];
    snprintf(key, sizeof(key), "lock:dead:%s", c->peers[peer].id);
    dead_cleanup(c, peer, key, true);
}

/* A node (re)started under this id: whatever we knew of its previous run
 * (routes, clean sessions) is gone. One node (lock per restart) publishes
 * the wills of that run's clean sessions; the node ends its stored
 * sessions itself. */
void cl_rx_reset(cluster_t *c, int from, const bus_reset_t *r)
{
    cl_routes_drop_peer(c, from);
    char lock[300];
    snprintf(lock, sizeof(lock), "lock:restart:%s:%llu", c->peers[from].id,
             (unsigned long long)r->started_ms);
    dead_cleanup(c, from, lock, false);
}

/* ---- the cluster ------------------------------------------------------- */

const char *cluster_node_id(const cluster_t *c)
{
    return c ? c->id : NULL;
}

void cluster_stats(const cluster_t *c, cluster_stats_t *st)
{
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

int cluster_start(cluster_t **out, struct event_base *base,
                  const cluster_conf_t *conf, const cluster_hooks_t *hooks)
{
    *out = NULL;
    if (!redis_url_match(conf->store_url))
        return SL_OK;
    cluster_t *c = calloc(1, sizeof(*c));
    char err[256] = "out of memory";
    if (!c)
        return SL_ENOMEM;
    c->base = base;
    c->hooks = *hooks;
    c->store = conf->store;
    c->batch = conf->batch;
    if (redis_url_parse(conf->store_url, &c->url, err, sizeof(err)) !=
        SL_OK) {
        log_error("cluster: %s", err);
        redis_url_fini(&c->url);
        free(c);
        return SL_EINVAL;
    }
    char gen[128];
    if (!conf->node_id)
        gen_id(gen, sizeof(gen));
    c->id = strdup(conf->node_id ? conf->node_id : gen);
    if (c->id) {
        /* One hash tag for both channels: one slot, one store node. */
        snprintf(c->chan_self, sizeof(c->chan_self), "%sbus:{bus}:%s",
                 c->url.prefix, c->id);
        snprintf(c->chan_all, sizeof(c->chan_all), "%sbus:{bus}:all",
                 c->url.prefix);
        c->frame_head = bus_frame_head(strlen(c->id));
    }
    c->routes = trie_new();
    c->gtrie = trie_new();
    c->groutes = map_new();
    c->local = map_new();
    c->owners = map_new();
    c->beat = event_new(base, -1, EV_PERSIST, on_beat, c);
    if (!c->id || !c->routes || !c->gtrie || !c->groutes || !c->local ||
        !c->owners || !c->beat || cl_bus_events(c) != SL_OK ||
        !bus_frame_begin(&c->all, c->id, strlen(c->id)) ||
        !bus_frame_begin(&c->selfb, c->id, strlen(c->id)) ||
        rclient_new(&c->cl, base, &c->url, NULL, 0, err, sizeof(err)) !=
            SL_OK) {
        log_error("cluster: cannot start: %s", err);
        cluster_free(c);
        return SL_ENOMEM;
    }
    *out = c;
    /* What our previous run (same node_id) left: its routes go, its
     * stored sessions still online end now, and the others hear that we
     * started (they drop its routes and publish its clean sessions' wills). */
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    cl_send_key(c, "DEL", key, NULL, 0, 0);
    end_sessions_of(c, c->id, false);
    if (bus_encode_reset(&c->all, &(bus_reset_t){sl_now_ms()}))
        cl_batched(c, &c->all);
    heartbeat(c);
    cl_bus_connect(c);
    struct timeval tv = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    event_add(c->beat, &tv);
    log_info("cluster: node '%s' joining through %s", c->id,
             c->url.cluster ? "a store cluster" : "the store");
    return SL_OK;
}

void cluster_stop(cluster_t *c)
{
    if (!c || c->stopping)
        return;
    c->stopping = true;
    cl_barriers_release(c, UINT64_MAX, false, SL_EIO);
    event_del(c->beat);
    event_del(c->downsweep);
    char key[300];
    snprintf(key, sizeof(key), "routes:%s", c->id);
    cl_send_key(c, "DEL", key, NULL, 0, 0);
    snprintf(key, sizeof(key), "node:%s:alive", c->id);
    cl_send_key(c, "DEL", key, NULL, 0, 0);
    cl_send_key(c, "HDEL", "nodes", c->id, strlen(c->id), 0);
    cl_flush(c);
}

void cluster_free(cluster_t *c)
{
    if (!c)
        return;
    c->stopping = true;
    cl_bus_close(c);
    if (c->cl)
        rclient_free(c->cl);
    if (c->beat)
        event_free(c->beat);
    cl_bus_events_free(c);
    for (size_t i = 0; i < c->n_peers; i++) {
        free(c->peers[i].id);
        bus_buf_free(&c->peers[i].batch);
    }
    cl_barriers_release(c, UINT64_MAX, false, SL_EIO);
    for (size_t i = 0; i < c->all_wait.n; i++)
        c->all_wait.w[i].fn(c->all_wait.w[i].arg, SL_EIO);
    bus_buf_free(&c->all);
    bus_buf_free(&c->selfb);
    free(c->all_wait.w);
    trie_free(c->routes, NULL);
    trie_free(c->gtrie, NULL);
    map_free(c->groutes, cl_groute_free);
    free(c->gm);
    map_free(c->local, NULL);
    map_free(c->owners, cl_owner_free);
    free(c->id);
    redis_url_fini(&c->url);
    free(c);
}
