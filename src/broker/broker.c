/*
 * broker.c - the node: owns the store, the indexes and every connection.
 *
 * Start-up loads what the store knows (retained messages, the index of
 * persistent sessions and their subscriptions) before the listener opens.
 * A one-second tick expires offline sessions (in the store's data, so it
 * also works after a restart) and sends delayed wills (MQTT 5 will delay).
 * Shutdown closes the listener, disconnects every client (v5: 0x8B), waits
 * for their output to drain and leaves the loop.
 */
#include "internal.h"
#include "session.h"

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

static void will_publish_now(broker_t *b, msg_t *m, const char *cid)
{
    b->stats.wills_published++;
    log_debug("publishing the will of client '%s' on '%s'", cid, m->topic);
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
    will_publish_now(w->b, w->msg, w->cid);
    delayed_will_free(w);
}

void broker_will_after(broker_t *b, const char *cid, size_t clen, msg_t *m,
                       uint32_t delay)
{
    if (!delay) {
        will_publish_now(b, m, cid);
        return;
    }
    delayed_will_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->cid = strndup(cid, clen)) ||
        !(w->ev = evtimer_new(b->base, on_will_due, w))) {
        if (w)
            free(w->cid);
        free(w);
        will_publish_now(b, m, cid); /* better early than never */
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
        will_publish_now(b, w->msg, w->cid);
        delayed_will_free(w);
    }
    subr_t *r = map_del(b->psessions, cid, clen);
    cluster_ended(b, cid, clen);
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
    for (size_t i = 0; online && i < n; i++) {
        if (s->state != SESS_ONLINE || !e[i].msg)
            continue;
        delivery_opts_t o = {.qid = e[i].id,
                             .qos = e[i].qos & STORE_QOS_MASK,
                             .retain = (e[i].qos & STORE_QOS_RETAIN) != 0};
        sess_deliver(s, e[i].msg, &o);
    }
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

void broker_sweep(broker_t *b)
{
    size_t cur = 0;
    void *v;
    while (map_next(b->clients, &cur, NULL, NULL, &v)) {
        sess_t *s = v;
        if (s->state == SESS_ONLINE && s->persistent && !s->sweeping)
            sweep_read(b, s, s->max_qid);
    }
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
    if (b->cluster && (b->ticks + 1) % SWEEP_TICKS == 0)
        broker_sweep(b);
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

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_flush_all(arg);
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
        listener_enable(b);
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
    b->flush = event_new(base, -1, 0, on_flush, b);
    b->reload = evtimer_new(base, on_reload, b);
    if (!b->clients || !b->psessions || !b->delayed_wills || !b->retained ||
        !b->groups || !b->subs || !b->tick || !b->flush || !b->reload ||
        parse_deny(b) != SL_OK) {
        broker_free(b);
        return SL_ENOMEM;
    }
    *out = b;
    return SL_OK;
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
    rc = cluster_start(b);
    if (rc != SL_OK)
        return rc;
    rc = listener_start(b);
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
    listener_stop(b);
    event_del(b->tick);
    cluster_stop(b);
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
    listener_stop(b);
    /* Connections still open (loop left early): drop them now. */
    while (b->all)
        sess_on_transport_closed(b->all, NULL);
    if (b->tick)
        event_free(b->tick);
    if (b->flush)
        event_free(b->flush);
    if (b->reload)
        event_free(b->reload);
    map_free(b->delayed_wills, delayed_will_free);
    cluster_free(b);
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
