/*
 * broker.c - the node: owns the store, the indexes and every connection.
 *
 * Start-up loads what the store knows (retained messages, the index of
 * persistent sessions and their subscriptions) before the listener opens.
 * A one-second tick expires offline sessions (in the store's data, so it
 * also works after a restart) and sends delayed wills (MQTT 5 will delay).
 * Shutdown closes the listener, disconnects every client (v5: 0x8B), waits
 * for their output to drain and leaves the loop. In a cluster, what the
 * cluster asks of the node comes through the hooks given to
 * cluster_start() (starling/cluster.h; the section "the cluster's hooks").
 */
#include "internal.h"
#include "session.h"
#include "router.h"
#include "sys.h"
#include "../net/net.h"

#include "starling/err.h"
#include "starling/log.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

typedef struct delayed_will {
    broker_t *b;
    char *cid;
    size_t clen;
    msg_t *msg;
    struct event *ev;
} delayed_will_t;

/* ---- wills ------------------------------------------------------------- */

static void will_publish_now(broker_t *b, msg_t *m, const char *cid,
                             size_t clen)
{
    b->stats.wills_published++;
    log_debug("publishing the will of client '%.*s' on '%s'", (int)clen, cid,
              m->topic);
    router_publish(b, NULL, m, NULL, NULL);
}

static void delayed_will_free(void *v)
{
    delayed_will_t *w = v;
    if (!w)
        return;
    event_free(w->ev);
    msg_unref(&w->msg);
    free(w->cid);
    free(w);
}

static void on_will_due(evutil_socket_t fd, short what, void *arg)
{
    delayed_will_t *w = arg;
    map_del(w->b->delayed_wills, w->cid, w->clen);
    will_publish_now(w->b, w->msg, w->cid, w->clen);
    delayed_will_free(w);
}

void broker_will_after(broker_t *b, const char *cid, size_t clen, msg_t *m,
                       uint32_t delay)
{
    if (!delay) {
        will_publish_now(b, m, cid, clen);
        return;
    }
    delayed_will_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->cid = strndup(cid, clen)) ||
        !(w->ev = evtimer_new(b->base, on_will_due, w))) {
        if (w)
            free(w->cid);
        free(w);
        will_publish_now(b, m, cid, clen); /* better early than never */
        return;
    }
    w->b = b;
    w->clen = clen;
    w->msg = msg_ref(m);
    struct timeval tv = {(time_t)delay, 0};
    evtimer_add(w->ev, &tv);
    void *old = NULL;
    map_put(b->delayed_wills, w->cid, w->clen, w, &old);
    delayed_will_free(old);
}

/* MQTT 5 §3.1.3.2.2: the will is sent after the will delay or when the
 * session ends, whichever is first; not at all if the client reconnects. */
void broker_publish_will(broker_t *b, sess_t *s)
{
    uint32_t delay = s->will_delay;
    if (s->persistent && s->expiry < delay)
        delay = s->expiry;
    if (s->version != MQTT_V5 || !s->persistent)
        delay = 0;
    broker_will_after(b, s->cid, s->clen, s->will, delay);
}

void broker_cancel_delayed_will(broker_t *b, const char *cid, size_t clen)
{
    delayed_will_free(map_del(b->delayed_wills, cid, clen));
}

/* ---- session expiry ---------------------------------------------------- */

static void end_stored_session(broker_t *b, const char *cid, size_t clen)
{
    delayed_will_t *w = map_del(b->delayed_wills, cid, clen);
    if (w) {
        will_publish_now(b, w->msg, w->cid, w->clen);
        delayed_will_free(w);
    }
    subr_t *r = map_del(b->psessions, cid, clen);
    cluster_ended(b->cluster, cid, clen);
    if (r) {
        subs_clear(b, r);
        r->gone = true;
        subr_unref(&r);
    }
    log_info("session of client '%.*s' expired", (int)clen, cid);
    /* epoch 0: the store deletes it only if it is still offline. (Last:
     * the memory store frees the string cid points to.) */
    store_session_del(b->store, cid, clen, 0, NULL, NULL);
}

static void on_expired(void *arg, int status, const char *const *cids,
                       size_t n)
{
    broker_t *b = arg;
    if (status != SL_OK) {
        b->stats.store_errors++;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t clen = strlen(cids[i]);
        if (map_get(b->clients, cids[i], clen))
            continue; /* reconnected meanwhile */
        end_stored_session(b, cids[i], clen);
    }
}

/*
 * The cluster's sweep (every SWEEP_TICKS seconds, and often while the bus
 * is down): another node appends to the queue of a session online here and
 * notifies us; if that notice was lost (its node died, the bus was down),
 * the entry is found here. A session's read starts at the floor of the ids
 * it has seen and pages on while pages come back full, until it caught up
 * or its pending list holds SWEEP_PENDING_MAX deliveries (the rest waits
 * for the next sweep).
 *
 * A session whose queue entry removal failed (the store down past its
 * timeout: the client's PUBACK came, the XDEL did not land) reads its
 * whole queue instead and removes what the client had acknowledged, so
 * such entries neither wait for a reconnect nor count against
 * max_queued_messages; on a single node only such sessions are swept.
 */
#define SWEEP_TICKS 2
#define SWEEP_MAX 256
#define SWEEP_PENDING_MAX 1024

static void loads_start(broker_t *b);

typedef struct sweepctx {
    sess_t *s;
    uint64_t after;              /* the read started after this id */
} sweepctx_t;

static void sweep_read(broker_t *b, sess_t *s, uint64_t after);

static void on_swept(void *arg, int status, const store_entry_t *e, size_t n)
{
    sweepctx_t *x = arg;
    sess_t *s = x->s;
    bool online = status == SL_OK && s->state == SESS_ONLINE;
    s->sweeping = false;
    if (online && x->after == s->max_qid)
        sess_qid_swept(s, e, n); /* read from the floor: ids below settle */
    if (online && x->after == 0 && n < SWEEP_MAX)
        s->ack_debt = false; /* the whole queue was read: debts paid below */
    for (size_t i = 0; online && i < n; i++)
        if (s->state == SESS_ONLINE)
            delivery_swept(s, &e[i]);
    if (status != SL_OK)
        s->b->stats.store_errors++;
    if (online && n == SWEEP_MAX && s->state == SESS_ONLINE &&
        s->pending.len < SWEEP_PENDING_MAX)
        sweep_read(s->b, s, e[n - 1].id);
    sess_unref(&x->s);
    free(x);
}

static void sweep_read(broker_t *b, sess_t *s, uint64_t after)
{
    sweepctx_t *x = malloc(sizeof(*x));
    if (!x)
        return; /* the next sweep tries again */
    s->sweeping = true;
    sess_ref(s);
    *x = (sweepctx_t){s, after};
    store_queue_since(b->store, s->cid, s->clen, after, SWEEP_MAX, on_swept,
                      x);
}

/* Sweep every online stored session, or (debts_only, on a single node,
 * where no other node appends) only those whose store removals failed. */
static void sweep(broker_t *b, bool debts_only)
{
    size_t cur = 0;
    void *v;
    while (map_next(b->clients, &cur, NULL, NULL, &v)) {
        sess_t *s = v;
        if (s->state == SESS_ONLINE && s->persistent && !s->sweeping &&
            (s->ack_debt || !debts_only))
            sweep_read(b, s, s->ack_debt ? 0 : s->max_qid);
    }
}

void broker_sweep(broker_t *b)
{
    sweep(b, false);
}

void broker_resync(broker_t *b)
{
    if (b->loads_pending == 0)
        loads_start(b);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    broker_t *b = arg;
    if (b->stopping)
        return;
    store_session_expired(b->store, sl_now_ms(), on_expired, b);
    if ((b->ticks + 1) % SWEEP_TICKS == 0)
        sweep(b, !b->cluster);
    int every = b->conf->sys_interval;
    if (every && ++b->ticks % (unsigned)every == 0)
        sys_publish(b);
}

/* ---- connections ------------------------------------------------------- */

/* Every client is gone: leave the loop shortly, so the store and the bus
 * can still send what the disconnects wrote (sessions marked offline). */
static void finish_stop(broker_t *b)
{
    struct timeval tv = {0, b->store && strcmp(store_kind(b->store),
                                               "memory") != 0
                                ? 300000
                                : 0};
    event_base_loopexit(b->base, &tv);
}

/* A new client from a listener: a session for it, unless the node stops
 * or holds max_connections already. */
static void on_accept(void *arg, conn_t *c, const char *peer)
{
    broker_t *b = arg;
    int max = b->conf->max_connections;
    if (b->stopping || (max && b->n_conns >= (uint32_t)max)) {
        if (!b->stopping)
            log_warning("connection from %s refused: max_connections (%d) "
                        "reached",
                        peer, max);
        conn_free(c);
        return;
    }
    sess_t *s = sess_new(b, peer);
    if (!s) {
        conn_free(c);
        return;
    }
    sess_attach(s, c);
    s->next_all = b->all;
    if (b->all)
        b->all->prev_all = s;
    b->all = s;
    b->n_conns++;
    conn_start(c, (uint64_t)b->conf->connect_timeout * 1000u);
}

void broker_conn_gone(broker_t *b, sess_t *s)
{
    if (s->prev_all)
        s->prev_all->next_all = s->next_all;
    else if (b->all == s)
        b->all = s->next_all;
    if (s->next_all)
        s->next_all->prev_all = s->prev_all;
    s->prev_all = s->next_all = NULL;
    b->n_conns--;
    sess_unref(&s);
    if (b->stopping && b->n_conns == 0)
        finish_stop(b);
}

/* ---- start-up ---------------------------------------------------------- */

/*
 * Start-up loads: the listener is bound at start (so a busy port is an
 * error at once) but accepts only once the retained messages and the
 * persistent-session index are loaded; a failed load is retried every
 * second (the store may still be starting).
 */
static void load_done(broker_t *b, int status, const char *what)
{
    if (status != SL_OK) {
        b->stats.store_errors++;
        b->load_failed = true;
        log_warning("store: loading %s failed (%s), retrying", what,
                    sl_strerror(status));
    }
    if (--b->loads_pending > 0)
        return;
    if (b->load_failed) {
        struct timeval tv = {1, 0};
        evtimer_add(b->reload, &tv);
    } else if (!b->loaded) {
        b->loaded = true;
        if (!b->stopping)
            net_enable(b->net);
        log_info("starling ready (store: %s)", store_kind(b->store));
    } else {
        log_info("store: persistent-session index and retained messages "
                 "read again");
    }
}

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
    loads_start(arg);
}

static void on_retained_loaded(void *arg, int status, msg_t *const *msgs,
                               size_t n)
{
    broker_t *b = arg;
    if (status != SL_OK) {
        load_done(b, status, "retained messages");
        return;
    }
    for (size_t i = 0; i < n; i++)
        router_retained_index(b, msgs[i]);
    if (n)
        log_info("loaded %zu retained messages", n);
    load_done(b, SL_OK, "retained messages");
}

static void on_psub_loaded(void *arg, int status, const char *cid,
                           const store_sub_t *subs, size_t n)
{
    broker_t *b = arg;
    if (!cid) {
        load_done(b, status, "the persistent-session index");
        return;
    }
    size_t clen = strlen(cid);
    subr_t *r = map_get(b->psessions, cid, clen);
    if (r && r->online)
        return; /* online here (a resync): our own index is current */
    if (!r) {
        r = subr_new(cid, clen, true);
        if (!r || map_put(b->psessions, cid, clen, r, NULL) != SL_OK) {
            subr_unref(&r);
            return;
        }
    }
    for (size_t i = 0; i < n; i++) {
        sub_t sub = {.qos = subs[i].opts & 3,
                     .no_local = (subs[i].opts >> 2) & 1,
                     .retain_as_published = (subs[i].opts >> 3) & 1,
                     .retain_handling = (subs[i].opts >> 4) & 3,
                     .sub_id = subs[i].sub_id};
        bool existed;
        subs_add(b, r, subs[i].filter, subs[i].flen, &sub, &existed);
    }
}

static int parse_deny(broker_t *b)
{
    const char *list = b->conf->subscribe_deny;
    if (!list || !*list)
        return SL_OK;
    char *copy = strdup(list);
    if (!copy)
        return SL_ENOMEM;
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t len = strlen(t);
        while (len && t[len - 1] == ' ')
            t[--len] = '\0';
        if (!len)
            continue;
        char **nd = realloc(b->deny, (b->n_deny + 1) * sizeof(char *));
        if (!nd) {
            free(copy);
            return SL_ENOMEM;
        }
        b->deny = nd;
        if (!(b->deny[b->n_deny] = strdup(t))) {
            free(copy);
            return SL_ENOMEM;
        }
        b->n_deny++;
    }
    free(copy);
    return SL_OK;
}

int broker_new(broker_t **out, struct event_base *base, sl_conf_t *conf)
{
    broker_t *b = calloc(1, sizeof(*b));
    if (!b)
        return SL_ENOMEM;
    b->base = base;
    b->conf = conf;
    b->sink = &sess_sink_ops;
    b->clients = map_new();
    b->psessions = map_new();
    b->delayed_wills = map_new();
    b->retained = rtree_new();
    b->groups = map_new();
    b->subs = trie_new();
    b->tick = event_new(base, -1, EV_PERSIST, on_tick, b);
    b->net = net_new(base, conf, on_accept, b);
    b->reload = evtimer_new(base, on_reload, b);
    if (!b->clients || !b->psessions || !b->delayed_wills || !b->retained ||
        !b->groups || !b->subs || !b->tick || !b->net || !b->reload ||
        parse_deny(b) != SL_OK) {
        broker_free(b);
        return SL_ENOMEM;
    }
    *out = b;
    return SL_OK;
}

/* ---- the cluster's hooks (starling/cluster.h) ------------------------- */

static void hk_deliver_remote(void *ctx, msg_t *m)
{
    router_publish_remote(ctx, m);
}

static void hk_group_remote(void *ctx, const char *share, size_t slen,
                            msg_t *m)
{
    router_group_remote(ctx, share, slen, m);
}

static bool hk_group_known(void *ctx, const char *share, size_t slen)
{
    broker_t *b = ctx;
    return map_get(b->groups, share, slen) != NULL;
}

static void hk_retained(void *ctx, msg_t *m)
{
    router_retained_index(ctx, m);
}

static void hk_queued_notice(void *ctx, const char *cid, size_t clen,
                             msg_t *m, uint8_t qos, bool retain,
                             const uint32_t *subids, uint8_t n_subids,
                             uint64_t qid)
{
    broker_t *b = ctx;
    sess_t *s = map_get(b->clients, cid, clen);
    if (!s || s->state != SESS_ONLINE || !s->persistent)
        return;
    delivery_opts_t o = {.qid = qid, .qos = qos, .retain = retain};
    for (uint8_t i = 0; i < n_subids && i < DELIVERY_MAX_SUBIDS; i++)
        delivery_add_subid(&o, subids[i]);
    sess_deliver(s, m, &o);
}

static void hk_claimed_elsewhere(void *ctx, const char *cid, size_t clen,
                                 uint64_t epoch)
{
    broker_t *b = ctx;
    sess_t *s = map_get(b->clients, cid, clen);
    if (s && sess_claim_epoch(s) < epoch) {
        s->taken_over = true;
        sess_close(s, SL_ETAKENOVER,
                   "session taken over by another node");
    }
}

/* A persistent subscription seen on another node: the cluster-wide index
 * of persistent sessions follows it (a session online here keeps its own
 * index current). */
static void hk_psub(void *ctx, const char *cid, size_t clen, const char *f,
                    size_t flen, uint8_t opts, uint32_t sub_id, bool add)
{
    broker_t *b = ctx;
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
    sub_t sub = sub_from_opts(opts, sub_id);
    bool existed;
    subs_add(b, sr, f, flen, &sub, &existed);
}

static void hk_session_ended(void *ctx, const char *cid, size_t clen)
{
    broker_t *b = ctx;
    subr_t *sr = map_get(b->psessions, cid, clen);
    if (sr && !sr->online) {
        map_del(b->psessions, cid, clen);
        subs_clear(b, sr);
        sr->gone = true;
        subr_unref(&sr);
    }
}

static bool hk_connected(void *ctx, const char *cid, size_t clen)
{
    broker_t *b = ctx;
    return map_get(b->clients, cid, clen) != NULL;
}

static void hk_will_after(void *ctx, const char *cid, size_t clen,
                          msg_t *will, uint32_t delay)
{
    broker_will_after(ctx, cid, clen, will, delay);
}

static void hk_cancel_will(void *ctx, const char *cid, size_t clen)
{
    broker_cancel_delayed_will(ctx, cid, clen);
}

static void hk_sweep(void *ctx)
{
    broker_sweep(ctx);
}

static void hk_resync(void *ctx)
{
    broker_resync(ctx);
}

static void hk_store_error(void *ctx)
{
    broker_t *b = ctx;
    b->stats.store_errors++;
}

/* Join the cluster when the store is a Redis-protocol one. */
static int cluster_start_hooked(broker_t *b)
{
    cluster_conf_t conf = {.store_url = b->conf->store,
                           .node_id = b->conf->node_id,
                           .batch = b->conf->cluster_batch,
                           .store = b->store};
    cluster_hooks_t hooks = {
        .ctx = b,
        .deliver_remote = hk_deliver_remote,
        .group_remote = hk_group_remote,
        .group_known = hk_group_known,
        .retained = hk_retained,
        .queued_notice = hk_queued_notice,
        .claimed_elsewhere = hk_claimed_elsewhere,
        .psub = hk_psub,
        .session_ended = hk_session_ended,
        .connected = hk_connected,
        .will_after = hk_will_after,
        .cancel_will = hk_cancel_will,
        .sweep = hk_sweep,
        .resync = hk_resync,
        .store_error = hk_store_error,
    };
    return cluster_start(&b->cluster, b->base, &conf, &hooks);
}

int broker_start(broker_t *b)
{
    char err[256];
    int rc = store_open(&b->store, b->base, b->conf->store, err, sizeof(err));
    if (rc != SL_OK) {
        log_error("%s", err);
        return rc;
    }
    rc = auth_new(&b->auth, b->base, b->conf);
    if (rc != SL_OK)
        return rc;
    rc = cluster_start_hooked(b);
    if (rc != SL_OK)
        return rc;
    rc = net_listen(b->net);
    if (rc != SL_OK)
        return rc;
    loads_start(b);
    struct timeval one = {1, 0};
    event_add(b->tick, &one);
    b->started_ms = sl_mono_ms();
    return SL_OK;
}

static void loads_start(broker_t *b)
{
    b->loads_pending = 2;
    b->load_failed = false;
    store_retain_load(b->store, on_retained_loaded, b);
    store_sub_load(b->store, on_psub_loaded, b);
}

void broker_stop(broker_t *b)
{
    if (b->stopping)
        return;
    b->stopping = true;
    log_info("shutting down: closing %u connections", b->n_conns);
    net_unlisten(b->net);
    event_del(b->tick);
    cluster_stop(b->cluster);
    for (sess_t *s = b->all, *next; s; s = next) {
        next = s->next_all;
        s->disconnect_normal = true; /* the session survives: no will */
        sess_close(s, SL_ESHUTDOWN, NULL);
    }
    if (b->n_conns == 0)
        finish_stop(b);
}

static void psession_free(void *v)
{
    subr_t *r = v;
    subr_unref(&r);
}

static void retained_free(void *v)
{
    msg_t *m = v;
    msg_unref(&m);
}

void broker_free(broker_t *b)
{
    if (!b)
        return;
    if (b->net)
        net_unlisten(b->net);
    /* Connections still open (loop left early): drop them now. */
    while (b->all)
        sess_on_transport_closed(b->all, NULL);
    net_free(b->net);
    if (b->tick)
        event_free(b->tick);
    if (b->reload)
        event_free(b->reload);
    map_free(b->delayed_wills, delayed_will_free);
    cluster_free(b->cluster);
    b->cluster = NULL;
    auth_free(b->auth);
    store_free(b->store);
    if (b->psessions) {
        size_t cur = 0;
        void *v;
        while (map_next(b->psessions, &cur, NULL, NULL, &v))
            subs_clear(b, v);
    }
    map_free(b->psessions, psession_free);
    map_free(b->clients, NULL);
    rtree_free(b->retained, retained_free);
    map_free(b->groups, NULL); /* empty: groups end with their members */
    trie_free(b->subs, NULL);
    for (size_t i = 0; i < b->n_deny; i++)
        free(b->deny[i]);
    free(b->deny);
    router_fini(b);
    free(b);
}
