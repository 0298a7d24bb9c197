/*
 * rclient_cluster.c - the slot map of the Redis client in a cluster
 * (rclient.h): CLUSTER SLOTS, routing again what waits after a change, and
 * MOVED/ASK redirections.
 */
#include "rclient_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#define REFRESH_MIN_MS 1000
#define REFRESH_EVERY_MS 30000

/* ---- the map ----------------------------------------------------------- */

typedef struct slots_ctx {
    rclient_t *cl;
    rnode_t *from;
} slots_ctx_t;

/* The index of n in cl->nodes. */
static uint16_t node_index(const rclient_t *cl, const rnode_t *n)
{
    size_t i = 0;
    while (i < cl->n_nodes && cl->nodes[i] != n)
        i++;
    return (uint16_t)i;
}

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
        rreq_dispatch(q);
}

static int apply_map(rclient_t *cl, const slots_map_t *m)
{
    uint16_t *idx = calloc(m->n_nodes + 1, sizeof(*idx));
    if (!idx)
        return SL_ENOMEM;
    for (size_t i = 0; i < m->n_nodes; i++) {
        rnode_t *n = rnode_get(cl, m->nodes[i].host, m->nodes[i].port);
        if (!n) {
            free(idx);
            return SL_ENOMEM;
        }
        idx[i] = node_index(cl, n);
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
            rnode_get(cl, cl->url->hosts[i].host, cl->url->hosts[i].port);
        return;
    }
    rcmd_t c;
    rcmd_init(&c, "");
    rcmd_str(&c, "CLUSTER");
    rcmd_str(&c, "SLOTS");
    slots_ctx_t sc = {cl, from};
    cl->refreshing = true;
    cl->refresh_wanted = false;
    cl->last_refresh = sl_mono_ms();
    rnode_send(from, &c, on_slots, &sc, sizeof(sc));
}

void rslots_want_refresh(rclient_t *cl)
{
    if (!cl->cluster || cl->closing)
        return;
    cl->refresh_wanted = true;
    if (cl->refreshing ||
        (cl->have_map && sl_mono_ms() - cl->last_refresh < REFRESH_MIN_MS))
        return; /* the tick does it */
    refresh_now(cl);
}

void rslots_tick(rclient_t *cl, uint64_t now)
{
    if (cl->cluster && !cl->refreshing &&
        (cl->refresh_wanted || now - cl->last_refresh >= REFRESH_EVERY_MS) &&
        (!cl->have_map || now - cl->last_refresh >= REFRESH_MIN_MS))
        refresh_now(cl);
}

/* ---- redirections ------------------------------------------------------ */

bool rslots_redirect(rnode_t *n, rreq_t *q, const redisReply *r)
{
    rclient_t *cl = n->cl;
    slots_redirect_t rd;
    if (slots_redirect_parse(r->str, r->len, &rd) != SL_OK)
        return false;
    cl->stats.redirects++;
    rnode_t *to = rnode_get(cl, rd.host[0] ? rd.host : n->host, rd.port);
    if (!to)
        return false;
    if (rd.kind == SLOTS_MOVED) {
        if (cl->cluster && cl->have_map) {
            cl->owner[rd.slot] = node_index(cl, to);
            to->in_map = true;
        }
        rslots_want_refresh(cl);
        if (q->target)
            q->target = to;
        if (!cl->cluster || q->target || !cl->have_map)
            rnode_submit(to, q);
        else
            rreq_dispatch(q);
        return true;
    }
    q->asking = true;
    rnode_submit(to, q);
    return true;
}

