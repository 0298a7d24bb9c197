/*
 * rclient_conn.c - the connections of the Redis client (rclient.h): connect,
 * the set-up (AUTH, SELECT, SCRIPT LOAD), loss and reconnection with
 * backoff, and the connections' own deadlines.
 *
 * Connections are never freed from inside a hiredis callback by us:
 * redisAsyncFree() there is deferred by hiredis itself until the callback
 * returns. The node (our side of a connection) lives until rclient_free().
 */
#include "rclient_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

/* True when a failure starts an outage: it is logged once, not on every
 * retry, until the connection is up again. */
static bool outage_starts(rnode_t *n)
{
    bool first = !n->outage;
    n->outage = true;
    return first;
}

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
        rnode_submit(n, q);
    if (cl->cluster && (!cl->have_map || cl->refresh_wanted))
        rslots_want_refresh(cl);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    rnode_t *n = priv;
    redisReply *r = reply;
    if (!r || n->ac != ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (outage_starts(n)) /* not again on every retry */
            log_error("store: %s refused the connection set-up: %.*s", n->name,
                      (int)r->len, r->str);
        rnode_lost(n, SL_EIO, true);
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
        if (outage_starts(n))
            log_warning("store: cannot connect to %s: %s; retrying", n->name,
                        ac->errstr);
        rnode_lost(n, SL_EIO, false); /* hiredis frees it */
        return;
    }
    n->state = N_HANDSHAKE;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rnode_t *n = ac->data;
    if (n->ac == ac)
        rnode_lost(n, SL_EIO, false);
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
    rnode_connect(arg);
}

void rnode_connect(rnode_t *n)
{
    rclient_t *cl = n->cl;
    if (cl->closing || n->ac)
        return;
    n->since = sl_mono_ms();
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac || ac->err) {
        if (outage_starts(n))
            log_warning("store: cannot connect to %s: %s; retrying", n->name,
                        ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        rnode_lost(n, SL_EIO, false);
        return;
    }
    ac->data = n;
    n->ac = ac;
    n->state = N_CONNECTING;
    if (redisLibeventAttach(ac, cl->base) != REDIS_OK) {
        rnode_lost(n, SL_EIO, true);
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
void rnode_lost(rnode_t *n, int status, bool free_ac)
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
            rslots_want_refresh(cl);
    }
    if (free_ac && ac)
        redisAsyncFree(ac);
}

rnode_t *rnode_new(rclient_t *cl, const char *host, int port)
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

void rnode_free(rnode_t *n)
{
    event_free(n->retry);
    free(n->host);
    free(n);
}

/* The node for host:port, created (and connecting) when new. */
rnode_t *rnode_get(rclient_t *cl, const char *host, int port)
{
    for (size_t i = 0; i < cl->n_nodes; i++) {
        rnode_t *n = cl->nodes[i];
        if (n->port == port && strcmp(n->host, host) == 0)
            return n;
    }
    if (cl->n_nodes >= SLOTS_NONE)
        return NULL;
    rnode_t *n = rnode_new(cl, host, port);
    if (n)
        rnode_connect(n);
    return n;
}

void rnode_check(rnode_t *n, uint64_t now)
{
    rclient_t *cl = n->cl;
    uint64_t limit = (uint64_t)cl->url->timeout_ms;
    if (n->sent.head && n->sent.head->deadline <= now) {
        log_warning("store: no reply from %s within %d ms", n->name,
                    cl->url->timeout_ms);
        rnode_lost(n, SL_ETIMEOUT, true);
    } else if ((n->state == N_CONNECTING || n->state == N_HANDSHAKE) &&
               now - n->since >= limit) {
        if (outage_starts(n))
            log_warning("store: connecting to %s timed out; retrying", n->name);
        rnode_lost(n, SL_ETIMEOUT, true);
    }
}
