/*
 * rclient.c - asynchronous Redis-protocol client, standalone or cluster,
 * with deadlines, reconnection and redirections (see rclient.h).
 *
 * Each request lives in exactly one queue until its completion runs:
 *   node->wait    not sent yet (connection not ready), in issue order
 *   node->sent    written to hiredis, in reply order
 *   cl->unrouted  cluster: its slot has no known owner yet
 *   cl->later     to be dispatched again at the next tick (TRYAGAIN ...)
 *   cl->done      failed at submission, completed from a deferred event
 * A sent request's hiredis callback runs once (with a NULL reply when the
 * connection goes away): that is where it leaves node->sent.
 *
 * Connections are never freed from inside a hiredis callback by us:
 * redisAsyncFree() there is deferred by hiredis itself until the callback
 * returns. The node (our side of a connection) lives until rclient_free().
 */
#include "rclient.h"

#include "blob.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/slots.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define REFRESH_MIN_MS 1000
#define REFRESH_EVERY_MS 30000
#define MAX_TRIES 8

enum { A_BYTES, A_NUM, A_GKEY, A_CKEY, A_MSG, A_ENTRY, A_SHA };
enum { N_DOWN, N_CONNECTING, N_HANDSHAKE, N_READY };

typedef struct rnode rnode_t;
typedef struct rreq rreq_t;

typedef struct rq {
    rreq_t *head, *tail;
    size_t n;
} rq_t;

struct rreq {
    rreq_t *next;
    rclient_t *cl;
    rnode_t *node;   /* where it waits or was sent */
    rnode_t *target; /* fixed destination (internal), or NULL */
    rclient_fn fn;
    void *ctx;
    uint64_t deadline; /* monotonic ms */
    int slot;          /* -1 = no key */
    int script;        /* -1 = no script */
    unsigned flags;
    uint8_t tries;
    bool asking;
    int argc;
    const char **argv;
    size_t *lens;
};

struct rnode {
    rclient_t *cl;
    char *host;
    int port;
    char name[SLOTS_HOST_MAX + 16];
    redisAsyncContext *ac;
    int state;
    int hs_left;    /* handshake replies still expected */
    uint64_t since; /* connect start, monotonic ms */
    int backoff_ms;
    bool outage; /* a loss was reported, recovery not yet */
    bool ever_ready;
    bool broken; /* to be dropped from the deferred event */
    bool in_map;
    int drop_status;   /* status of sent requests on a loss */
    rreq_t *replay_at; /* last request put back in wait */
    struct event *retry;
    rq_t sent, wait;
};

struct rclient {
    struct event_base *base;
    const redis_url_t *url;
    bool cluster;
    bool closing;
    rnode_t **nodes;
    size_t n_nodes;
    uint16_t *owner; /* cluster: slot -> node index */
    bool have_map, refreshing, refresh_wanted;
    uint64_t last_refresh;
    rq_t unrouted, later, done;
    struct event *tick, *defer;
    const char *const *scripts;
    size_t n_scripts;
    char (*sha)[41];
    store_stats_t stats;
};

static void node_connect(rnode_t *n);
static void node_lost(rnode_t *n, int status, bool free_ac);
static void dispatch(rreq_t *q);
static void want_refresh(rclient_t *cl);

/* ---- queues ------------------------------------------------------------ */

static void rq_push(rq_t *l, rreq_t *q)
{
    q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

static rreq_t *rq_pop(rq_t *l)
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
static void rq_insert(rq_t *l, rreq_t *after, rreq_t *q)
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

static void rq_remove(rq_t *l, rreq_t *q)
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

/* ---- commands ---------------------------------------------------------- */

void rcmd_init(rcmd_t *c, const char *prefix)
{
    c->prefix = prefix;
    c->argc = 0;
    c->cap = RCMD_MAX_ARGS;
    c->key = -1;
    c->script = -1;
    c->overflow = false;
    c->args = c->small;
}

void rcmd_init_n(rcmd_t *c, const char *prefix, int n)
{
    rcmd_init(c, prefix);
    if (n <= RCMD_MAX_ARGS)
        return;
    c->args = malloc((size_t)n * sizeof(*c->args));
    if (!c->args)
        abort(); /* a lost command would wedge its callers forever */
    c->cap = n;
}

void rcmd_fini(rcmd_t *c)
{
    if (c->args != c->small)
        free(c->args);
    c->args = c->small;
    c->cap = RCMD_MAX_ARGS;
}

static rarg_t *arg_add(rcmd_t *c, uint8_t kind)
{
    if (c->argc == c->cap) {
        c->overflow = true;
        return NULL;
    }
    rarg_t *a = &c->args[c->argc++];
    memset(a, 0, offsetof(rarg_t, num));
    a->kind = kind;
    return a;
}

void rcmd_bytes(rcmd_t *c, const void *p, size_t len)
{
    rarg_t *a = arg_add(c, A_BYTES);
    if (a) {
        a->p = p;
        a->len = len;
    }
}

void rcmd_str(rcmd_t *c, const char *s)
{
    rcmd_bytes(c, s, strlen(s));
}

void rcmd_u64(rcmd_t *c, uint64_t v)
{
    rarg_t *a = arg_add(c, A_NUM);
    if (a)
        a->len = (size_t)snprintf(a->num, sizeof(a->num), "%llu",
                                  (unsigned long long)v);
}

void rcmd_key(rcmd_t *c, const char *name)
{
    rarg_t *a = arg_add(c, A_GKEY);
    if (a) {
        a->p = name;
        a->len = strlen(c->prefix) + strlen(name);
        if (c->key < 0)
            c->key = c->argc - 1;
    }
}

void rcmd_ckey(rcmd_t *c, const char *cid, size_t clen, const char *sfx)
{
    rarg_t *a = arg_add(c, A_CKEY);
    if (a) {
        a->p = cid;
        a->sfx = sfx;
        a->clen = clen;
        a->len = strlen(c->prefix) + 3 + clen + 1 + strlen(sfx);
        if (c->key < 0)
            c->key = c->argc - 1;
    }
}

void rcmd_msg(rcmd_t *c, const msg_t *m)
{
    rarg_t *a = arg_add(c, A_MSG);
    if (a) {
        a->p = m;
        a->len = m ? blob_msg_size(m) : 0;
    }
}

void rcmd_entry(rcmd_t *c, uint8_t qos, const msg_t *m)
{
    rarg_t *a = arg_add(c, A_ENTRY);
    if (a) {
        a->p = m;
        a->qos = qos;
        a->len = 1 + blob_msg_size(m);
    }
}

void rcmd_evalsha(rcmd_t *c, int script, int numkeys)
{
    rcmd_str(c, "EVALSHA");
    rarg_t *a = arg_add(c, A_SHA);
    if (a)
        a->len = 40;
    c->script = script;
    rcmd_u64(c, (uint64_t)numkeys);
}

static char *arg_write(const rclient_t *cl, const rcmd_t *c, const rarg_t *a,
                       char *p)
{
    size_t plen = strlen(c->prefix);
    switch (a->kind) {
    case A_BYTES:
        if (a->len)
            memcpy(p, a->p, a->len);
        break;
    case A_NUM:
        memcpy(p, a->num, a->len);
        break;
    case A_GKEY:
        memcpy(p, c->prefix, plen);
        memcpy(p + plen, a->p, a->len - plen);
        break;
    case A_CKEY: {
        size_t clen = a->clen;
        size_t slen = strlen(a->sfx);
        memcpy(p, c->prefix, plen);
        memcpy(p + plen, "{c:", 3);
        if (clen)
            memcpy(p + plen + 3, a->p, clen);
        p[plen + 3 + clen] = '}';
        memcpy(p + plen + 4 + clen, a->sfx, slen);
        break;
    }
    case A_MSG:
        if (a->p)
            blob_msg_write(a->p, (uint8_t *)p);
        break;
    case A_ENTRY:
        p[0] = (char)a->qos;
        blob_msg_write(a->p, (uint8_t *)p + 1);
        break;
    case A_SHA:
        memcpy(p, cl->sha[c->script], 40);
        break;
    }
    return p + a->len;
}

/* One allocation: the request, argv, lengths, ctx copy, argument bytes. */
static rreq_t *req_new(rclient_t *cl, const rcmd_t *c, rclient_fn fn,
                       const void *ctx, size_t ctxlen, const void *tail,
                       size_t taillen)
{
    size_t head = sizeof(rreq_t) + (size_t)c->argc * sizeof(char *) +
                  (size_t)c->argc * sizeof(size_t);
    size_t cpad = (ctxlen + taillen + 1 + 15) & ~(size_t)15;
    size_t data = 0;
    head = (head + 15) & ~(size_t)15;
    for (int i = 0; i < c->argc; i++)
        data += c->args[i].len;
    rreq_t *q = calloc(1, head + cpad + data + 1);
    if (!q)
        abort(); /* a lost completion would wedge its caller forever */
    q->cl = cl;
    q->fn = fn;
    q->argc = c->argc;
    q->argv = (const char **)(q + 1);
    q->lens = (size_t *)(q->argv + c->argc);
    q->ctx = (char *)q + head;
    if (ctxlen)
        memcpy(q->ctx, ctx, ctxlen);
    if (taillen)
        memcpy((char *)q->ctx + ctxlen, tail, taillen);
    char *p = (char *)q + head + cpad;
    for (int i = 0; i < c->argc; i++) {
        q->argv[i] = p;
        q->lens[i] = c->args[i].len;
        p = arg_write(cl, c, &c->args[i], p);
    }
    q->script = c->script;
    q->slot = c->key >= 0 ? slots_key(q->argv[c->key], q->lens[c->key]) : -1;
    return q;
}

/* ---- completion -------------------------------------------------------- */

static void complete(rreq_t *q, const redisReply *r, int status)
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
            node_lost(n, SL_EIO, true);
        }
    }
    rq_t l = cl->done;
    memset(&cl->done, 0, sizeof(cl->done));
    rreq_t *q;
    while ((q = rq_pop(&l)))
        complete(q, NULL, SL_EIO);
}

/* ---- sending ----------------------------------------------------------- */

static uint64_t now_ms(void)
{
    return sl_mono_ms();
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int node_write(rnode_t *n, rreq_t *q)
{
    if (q->asking && redisAsyncCommand(n->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return SL_EIO;
    if (redisAsyncCommandArgv(n->ac, on_reply, q, q->argc, q->argv, q->lens) !=
        REDIS_OK)
        return SL_EIO;
    q->asking = false;
    n->cl->stats.requests++;
    return SL_OK;
}

static void node_submit(rnode_t *n, rreq_t *q)
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

static void dispatch(rreq_t *q)
{
    rclient_t *cl = q->cl;
    rnode_t *n = route(cl, q);
    if (n) {
        node_submit(n, q);
        return;
    }
    q->node = NULL;
    rq_push(&cl->unrouted, q);
    want_refresh(cl);
}

void rclient_send(rclient_t *cl, const rcmd_t *cmd, unsigned flags,
                  rclient_fn fn, const void *ctx, size_t ctxlen,
                  const void *tail, size_t taillen)
{
    if (cmd->overflow)
        abort(); /* a programming error: more arguments than room */
    rreq_t *q = req_new(cl, cmd, fn, ctx, ctxlen, tail, taillen);
    q->flags = flags;
    q->deadline = now_ms() + (uint64_t)cl->url->timeout_ms;
    if (cl->closing) {
        complete_later(q);
        return;
    }
    dispatch(q);
}

/* Send an internal command to one node. */
static void send_to(rnode_t *n, const rcmd_t *cmd, rclient_fn fn,
                    const void *ctx, size_t ctxlen)
{
    rreq_t *q = req_new(n->cl, cmd, fn, ctx, ctxlen, NULL, 0);
    q->target = n;
    q->deadline = now_ms() + (uint64_t)n->cl->url->timeout_ms;
    node_submit(n, q);
}

/* ---- replies ----------------------------------------------------------- */

static bool err_is(const redisReply *r, const char *word)
{
    size_t len = strlen(word);
    return r->len >= len && memcmp(r->str, word, len) == 0 &&
           (r->len == len || r->str[len] == ' ');
}

static rnode_t *node_get(rclient_t *cl, const char *host, int port);

static bool handle_redirect(rnode_t *n, rreq_t *q, const redisReply *r)
{
    rclient_t *cl = n->cl;
    slots_redirect_t rd;
    if (slots_redirect_parse(r->str, r->len, &rd) != SL_OK)
        return false;
    cl->stats.redirects++;
    rnode_t *to = node_get(cl, rd.host[0] ? rd.host : n->host, rd.port);
    if (!to)
        return false;
    if (rd.kind == SLOTS_MOVED) {
        if (cl->cluster && cl->have_map) {
            for (size_t i = 0; i < cl->n_nodes; i++)
                if (cl->nodes[i] == to)
                    cl->owner[rd.slot] = (uint16_t)i;
            to->in_map = true;
        }
        want_refresh(cl);
        if (q->target)
            q->target = to;
        if (!cl->cluster || q->target || !cl->have_map)
            node_submit(to, q);
        else
            dispatch(q);
        return true;
    }
    q->asking = true;
    node_submit(to, q);
    return true;
}

/* A retryable error reply: true when the request was queued again. */
static bool handle_error(rnode_t *n, rreq_t *q, const redisReply *r)
{
    rclient_t *cl = n->cl;
    if (q->tries >= MAX_TRIES)
        return false;
    q->tries++;
    if (err_is(r, "MOVED") || err_is(r, "ASK"))
        return handle_redirect(n, q, r);
    if (err_is(r, "NOSCRIPT") && q->script >= 0 && n->ac) {
        const char *body = cl->scripts[q->script];
        redisAsyncCommand(n->ac, NULL, NULL, "SCRIPT LOAD %b", body,
                          strlen(body));
        node_submit(n, q);
        return true;
    }
    if (err_is(r, "TRYAGAIN") || err_is(r, "LOADING") ||
        err_is(r, "CLUSTERDOWN") || err_is(r, "MASTERDOWN") ||
        err_is(r, "READONLY")) {
        /* a state that passes (migration, failover, loading): retry every
         * tick until the deadline, not counted as a try */
        q->tries = 0;
        if (cl->cluster)
            want_refresh(cl);
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
    if (!cl->closing && (q->flags & RCLIENT_REPLAY) && q->deadline > now_ms()) {
        rq_insert(&n->wait, n->replay_at, q);
        n->replay_at = q;
        return;
    }
    complete(q, NULL, n->drop_status ? n->drop_status : SL_EIO);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rreq_t *q = priv;
    rnode_t *n = q->node;
    redisReply *r = reply;
    rq_remove(&n->sent, q);
    if (!r) {
        if (n->ac == ac)
            node_lost(n, SL_EIO, false); /* hiredis is freeing it */
        req_lost(n, q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && !n->cl->closing &&
        handle_error(n, q, r))
        return;
    complete(q, r, SL_OK);
}

/* ---- connections ------------------------------------------------------- */

static void node_ready(rnode_t *n)
{
    rclient_t *cl = n->cl;
    n->state = N_READY;
    n->backoff_ms = 0;
    if (n->outage) {
        log_warning("store: connection to %s restored", n->name);
        cl->stats.reconnects++;
    } else if (n->ever_ready) {
        cl->stats.reconnects++;
    }
    n->outage = false;
    n->ever_ready = true;
    rq_t l = n->wait;
    memset(&n->wait, 0, sizeof(n->wait));
    n->replay_at = NULL;
    rreq_t *q;
    while ((q = rq_pop(&l)))
        node_submit(n, q);
    if (cl->cluster && (!cl->have_map || cl->refresh_wanted))
        want_refresh(cl);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    rnode_t *n = priv;
    redisReply *r = reply;
    if (!r || n->ac != ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!n->outage) /* once per outage: it repeats on every retry */
            log_error("store: %s refused the connection set-up: %.*s", n->name,
                      (int)r->len, r->str);
        n->outage = true;
        node_lost(n, SL_EIO, true);
        return;
    }
    if (--n->hs_left == 0)
        node_ready(n);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rnode_t *n = ac->data;
    if (n->ac != ac)
        return;
    if (status != REDIS_OK) {
        if (!n->outage)
            log_warning("store: cannot connect to %s: %s; retrying", n->name,
                        ac->errstr);
        n->outage = true;
        node_lost(n, SL_EIO, false); /* hiredis frees it */
        return;
    }
    n->state = N_HANDSHAKE;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rnode_t *n = ac->data;
    if (n->ac == ac)
        node_lost(n, SL_EIO, false);
}

static void handshake(rnode_t *n)
{
    const redis_url_t *u = n->cl->url;
    rclient_t *cl = n->cl;
    n->hs_left = 0;
    if (u->password) {
        if (u->user)
            redisAsyncCommand(n->ac, on_handshake, n, "AUTH %s %s", u->user,
                              u->password);
        else
            redisAsyncCommand(n->ac, on_handshake, n, "AUTH %s", u->password);
        n->hs_left++;
    }
    if (u->db && !cl->cluster) {
        redisAsyncCommand(n->ac, on_handshake, n, "SELECT %d", u->db);
        n->hs_left++;
    }
    for (size_t i = 0; i < cl->n_scripts; i++) {
        redisAsyncCommand(n->ac, on_handshake, n, "SCRIPT LOAD %b",
                          cl->scripts[i], strlen(cl->scripts[i]));
        n->hs_left++;
    }
    if (n->hs_left == 0) {
        redisAsyncCommand(n->ac, on_handshake, n, "PING");
        n->hs_left++;
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    node_connect(arg);
}

static void node_connect(rnode_t *n)
{
    rclient_t *cl = n->cl;
    if (cl->closing || n->ac)
        return;
    n->since = now_ms();
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac || ac->err) {
        if (!n->outage)
            log_warning("store: cannot connect to %s: %s; retrying", n->name,
                        ac ? ac->errstr : "out of memory");
        n->outage = true;
        if (ac)
            redisAsyncFree(ac);
        node_lost(n, SL_EIO, false);
        return;
    }
    ac->data = n;
    n->ac = ac;
    n->state = N_CONNECTING;
    if (redisLibeventAttach(ac, cl->base) != REDIS_OK) {
        node_lost(n, SL_EIO, true);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    handshake(n);
}

/*
 * The connection is gone (or must go): mark the node down, schedule a
 * reconnection, and with free_ac close the hiredis context, which runs the
 * sent requests' callbacks with a NULL reply (now, or when the current
 * hiredis callback returns).
 */
static void node_lost(rnode_t *n, int status, bool free_ac)
{
    rclient_t *cl = n->cl;
    redisAsyncContext *ac = n->ac;
    int prev = n->state;
    n->ac = NULL;
    n->state = N_DOWN;
    n->drop_status = status;
    n->replay_at = NULL;
    if (prev == N_READY) {
        cl->stats.disconnects++;
        if (!cl->closing)
            log_warning("store: connection to %s lost (%s); reconnecting",
                        n->name,
                        status == SL_ETIMEOUT ? "no reply in time"
                                              : "connection closed");
        n->outage = true;
    }
    if (!cl->closing) {
        int ms = n->backoff_ms ? n->backoff_ms : BACKOFF_MIN_MS;
        n->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        event_add(n->retry, &tv);
        if (cl->cluster)
            want_refresh(cl);
    }
    if (free_ac && ac)
        redisAsyncFree(ac);
}

static rnode_t *node_new(rclient_t *cl, const char *host, int port)
{
    rnode_t **nodes = realloc(cl->nodes, (cl->n_nodes + 1) * sizeof(*nodes));
    if (!nodes)
        return NULL;
    cl->nodes = nodes;
    rnode_t *n = calloc(1, sizeof(*n));
    if (!n || !(n->host = strdup(host)) ||
        !(n->retry = event_new(cl->base, -1, 0, on_retry, n))) {
        if (n)
            free(n->host);
        free(n);
        return NULL;
    }
    n->cl = cl;
    n->port = port;
    snprintf(n->name, sizeof(n->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d",
             host, port);
    cl->nodes[cl->n_nodes++] = n;
    return n;
}

/* The node for host:port, created (and connecting) when new. */
static rnode_t *node_get(rclient_t *cl, const char *host, int port)
{
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        if (n->port == port && strcmp(n->host, host) == 0)
            return n;
    }
    if (cl->n_nodes >= SLOTS_NONE)
        return NULL;
    rnode_t *n = node_new(cl, host, port);
    if (n)
        node_connect(n);
    return n;
}

/* ---- cluster slot map -------------------------------------------------- */

typedef struct slots_ctx {
    rclient_t *cl;
    rnode_t *from;
} slots_ctx_t;

/* Move every waiting request through routing again (after a map change). */
static void reroute(rclient_t *cl)
{
    rq_t all = cl->unrouted;
    memset(&cl->unrouted, 0, sizeof(cl->unrouted));
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        rq_t keep = {0};
        rreq_t *q;
        while ((q = rq_pop(&n->wait))) {
            if (q->target)
                rq_push(&keep, q);
            else
                rq_push(&all, q);
        }
        n->wait = keep;
        n->replay_at = NULL;
    }
    rreq_t *q;
    while ((q = rq_pop(&all)))
        dispatch(q);
}

static int apply_map(rclient_t *cl, const slots_map_t *m)
{
    uint16_t *idx = calloc(m->n_nodes + 1, sizeof(*idx));
    if (!idx)
        return SL_ENOMEM;
    for (size_t i = 0; i < m->n_nodes; i++) {
        rnode_t *n = node_get(cl, m->nodes[i].host, m->nodes[i].port);
        if (!n) {
            free(idx);
            return SL_ENOMEM;
        }
        for (size_t j = 0; j < cl->n_nodes; j++)
            if (cl->nodes[j] == n)
                idx[i] = (uint16_t)j;
    }
    for (size_t j = 0; j < cl->n_nodes; j++)
        cl->nodes[j]->in_map = false;
    for (size_t s = 0; s < SLOTS_N; s++) {
        uint16_t o = m->owner[s];
        cl->owner[s] = o == SLOTS_NONE ? SLOTS_NONE : idx[o];
        if (o != SLOTS_NONE)
            cl->nodes[idx[o]]->in_map = true;
    }
    free(idx);
    if (!cl->have_map)
        log_info("store: cluster of %zu masters", m->n_nodes);
    cl->have_map = true;
    return SL_OK;
}

static void on_slots(void *ctx, const redisReply *r, int status)
{
    slots_ctx_t *sc = ctx;
    rclient_t *cl = sc->cl;
    cl->refreshing = false;
    if (cl->closing)
        return;
    slots_map_t *m = calloc(1, sizeof(*m));
    int rc = status;
    if (rc == SL_OK && !m)
        rc = SL_ENOMEM;
    if (rc == SL_OK)
        rc = slots_map_parse(r, sc->from->host, m);
    if (rc == SL_OK && m->n_nodes == 0)
        rc = SL_ENOTFOUND;
    if (rc == SL_OK)
        rc = apply_map(cl, m);
    if (rc != SL_OK) {
        log_warning("store: CLUSTER SLOTS from %s failed: %s", sc->from->name,
                    r && r->type == REDIS_REPLY_ERROR ? r->str
                                                      : sl_strerror(rc));
        cl->refresh_wanted = true;
    } else {
        reroute(cl);
    }
    if (m)
        slots_map_fini(m);
    free(m);
}

static void refresh_now(rclient_t *cl)
{
    rnode_t *from = NULL;
    for (size_t i = 0; i < cl->n_nodes && !from; i++)
        if (cl->nodes[i]->state == N_READY && cl->nodes[i]->in_map)
            from = cl->nodes[i];
    for (size_t i = 0; i < cl->n_nodes && !from; i++)
        if (cl->nodes[i]->state == N_READY)
            from = cl->nodes[i];
    if (!from) {
        /* no connection up: make sure the seeds are being tried */
        for (size_t i = 0; i < cl->url->n_hosts; i++)
            node_get(cl, cl->url->hosts[i].host, cl->url->hosts[i].port);
        return;
    }
    rcmd_t c;
    rcmd_init(&c, "");
    rcmd_str(&c, "CLUSTER");
    rcmd_str(&c, "SLOTS");
    slots_ctx_t sc = {cl, from};
    cl->refreshing = true;
    cl->refresh_wanted = false;
    cl->last_refresh = now_ms();
    send_to(from, &c, on_slots, &sc, sizeof(sc));
}

static void want_refresh(rclient_t *cl)
{
    if (!cl->cluster || cl->closing)
        return;
    cl->refresh_wanted = true;
    if (cl->refreshing ||
        (cl->have_map && now_ms() - cl->last_refresh < REFRESH_MIN_MS))
        return; /* the tick does it */
    refresh_now(cl);
}

/* ---- deadlines --------------------------------------------------------- */

static void expire_waiting(rq_t *l, uint64_t now)
{
    while (l->head && l->head->deadline <= now) {
        rreq_t *q = rq_pop(l);
        if (q->node && q->node->replay_at == q)
            q->node->replay_at = NULL;
        complete(q, NULL, SL_EIO);
    }
}

static void check_node(rnode_t *n, uint64_t now)
{
    rclient_t *cl = n->cl;
    uint64_t limit = (uint64_t)cl->url->timeout_ms;
    if (n->sent.head && n->sent.head->deadline <= now) {
        log_warning("store: no reply from %s within %d ms", n->name,
                    cl->url->timeout_ms);
        node_lost(n, SL_ETIMEOUT, true);
    } else if ((n->state == N_CONNECTING || n->state == N_HANDSHAKE) &&
               now - n->since >= limit) {
        if (!n->outage)
            log_warning("store: connecting to %s timed out; retrying", n->name);
        n->outage = true;
        node_lost(n, SL_ETIMEOUT, true);
    }
    expire_waiting(&n->wait, now);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    rclient_t *cl = arg;
    uint64_t now = now_ms();
    for (size_t i = 0; i < cl->n_nodes; i++)
        check_node(cl->nodes[i], now);
    expire_waiting(&cl->unrouted, now);
    rq_t l = cl->later;
    memset(&cl->later, 0, sizeof(cl->later));
    rreq_t *q;
    while ((q = rq_pop(&l))) {
        if (q->deadline <= now)
            complete(q, NULL, SL_EIO);
        else
            dispatch(q);
    }
    if (cl->cluster && !cl->refreshing &&
        (cl->refresh_wanted || now - cl->last_refresh >= REFRESH_EVERY_MS) &&
        (!cl->have_map || now - cl->last_refresh >= REFRESH_MIN_MS))
        refresh_now(cl);
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
        if (!node_new(cl, url->hosts[i].host, url->hosts[i].port))
            goto fail;
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(cl->tick, &tv);
    for (size_t i = 0; i < cl->n_nodes; i++)
        node_connect(cl->nodes[i]);
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
        complete(q, NULL, SL_EIO);
}

void rclient_free(rclient_t *cl)
{
    if (!cl)
        return;
    cl->closing = true;
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        if (n->ac)
            node_lost(n, SL_EIO, true);
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
    for (size_t i = 0; i < cl->n_nodes; i++) {
        event_free(cl->nodes[i]->retry);
        free(cl->nodes[i]->host);
        free(cl->nodes[i]);
    }
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

bool rclient_cluster(const rclient_t *cl)
{
    return cl->cluster;
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
