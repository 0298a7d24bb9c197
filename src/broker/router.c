/*
 * router.c - where a published message goes (DESIGN.md §2, step 3).
 *
 * router_publish():
 *   1. retained update (store write; counted before the publisher's ack),
 *   2. one trie match; matches are grouped per subscriber (a subscriber
 *      matched by several filters gets one delivery at the highest QoS,
 *      carrying every subscription identifier),
 *   3. clean sessions and QoS 0 deliveries: straight to the online session;
 *      persistent sessions at QoS >= 1: appended to the session's store
 *      queue first, then handed to the session if it is online here.
 * The completion runs once every store write has been acknowledged, so the
 * publisher is acknowledged only for messages that are safe.
 *
 * Sessions are reached only through their sink (sink.h): subr_t.online and
 * broker->sink, one indirect call per delivery.
 */
#include "internal.h"
#include "router.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/pool.h"

#include <stdlib.h>
#include <string.h>

/* One subscriber matched by a publish. While matching, o.qos is the highest
 * QoS of its matching subscriptions and o.retain whether any of them is
 * retain-as-published; match_finish() turns them into the delivery's. */
struct match {
    subr_t *r;
    delivery_opts_t o;
};

typedef struct route {
    route_done_fn done;
    void *arg;
    uint32_t pending;
    int status;
    bool matched;
} route_t;

typedef struct append {
    route_t *rt;
    broker_t *b;
    subr_t *r;
    msg_t *m;
    delivery_opts_t o;           /* o.qid set once the store answered */
} append_t;

/* One route_t per publish, one append_t per queued delivery (pool.h). */
static pool_t route_pool = POOL_INIT(sizeof(route_t), 1024);
static pool_t append_pool = POOL_INIT(sizeof(append_t), 4096);

static route_t *route_new(void)
{
    return pool_zget(&route_pool);
}

static void route_step(route_t *rt)
{
    if (--rt->pending)
        return;
    if (rt->done)
        rt->done(rt->arg, rt->status, rt->matched);
    pool_put(&route_pool, rt);
}

static void on_store_done(void *arg, int status)
{
    route_t *rt = arg;
    if (status != SL_OK && rt->status == SL_OK)
        rt->status = status;
    route_step(rt);
}

static void on_match(void *ctx, const char *filter, size_t flen, uintptr_t key,
                     void *value)
{
    broker_t *b = ctx;
    if (key & GROUP_TAG) {
        group_t *g = value;
        if (g->match_gen == b->match_gen)
            return;
        g->match_gen = b->match_gen;
        if (b->n_gmatches == b->cap_gmatches) {
            uint32_t nc = b->cap_gmatches ? b->cap_gmatches * 2 : 16;
            group_t **ng = realloc(b->gmatches, nc * sizeof(*ng));
            if (!ng)
                return;
            b->gmatches = ng;
            b->cap_gmatches = nc;
        }
        b->gmatches[b->n_gmatches++] = g;
        return;
    }
    subr_t *r = (subr_t *)key;
    const sub_t *sub = value;
    struct match *mt;
    if (sub->no_local && b->match_from == r)
        return;
    if (r->match_gen != b->match_gen) {
        if (b->n_matches == b->cap_matches) {
            uint32_t nc = b->cap_matches ? b->cap_matches * 2 : 64;
            struct match *nm = realloc(b->matches, nc * sizeof(*nm));
            if (!nm)
                return; /* out of memory: this subscriber misses it */
            b->matches = nm;
            b->cap_matches = nc;
        }
        r->match_gen = b->match_gen;
        r->match_idx = b->n_matches++;
        mt = &b->matches[r->match_idx];
        memset(mt, 0, sizeof(*mt));
        mt->r = r;
    } else {
        mt = &b->matches[r->match_idx];
    }
    if (sub->qos > mt->o.qos)
        mt->o.qos = sub->qos;
    mt->o.retain |= sub->retain_as_published;
    delivery_add_subid(&mt->o, sub->sub_id);
}

/* The delivery of m to a matched subscriber: at most the message's QoS,
 * RETAIN kept only for retain-as-published. */
static void match_finish(delivery_opts_t *o, const msg_t *m)
{
    if (o->qos > m->qos)
        o->qos = m->qos;
    o->retain = o->retain && m->retain;
}

/* The delivery of m through one subscription. */
static delivery_opts_t sub_delivery(const sub_t *sub, const msg_t *m)
{
    delivery_opts_t o = {.qos = sub->qos < m->qos ? sub->qos : m->qos,
                         .retain = sub->retain_as_published && m->retain};
    delivery_add_subid(&o, sub->sub_id);
    return o;
}

static void on_appended(void *arg, int status, uint64_t id)
{
    append_t *a = arg;
    if (status == SL_OK) {
        void *sink = a->r->online;
        a->o.qid = id;
        if (!a->r->gone && !(sink && a->b->sink->deliver(sink, a->m, &a->o)))
            cluster_notify_queued(a->b->cluster, a->r->cid, a->r->clen, a->m,
                                  a->o.qos, a->o.retain, a->o.subids,
                                  a->o.n_subids, id);
    } else if (status == SL_ELIMIT) {
        a->b->stats.dropped_queue_full++;
        log_debug("queue of client '%s' full, message on '%s' dropped",
                  a->r->cid, a->m->topic);
        status = SL_OK; /* a policy drop, not a failure of the publish */
    } else if (status == SL_ENOTFOUND) {
        status = SL_OK; /* the session ended meanwhile */
    } else {
        a->b->stats.store_errors++;
        log_warning("store: queueing for client '%s' failed: %s", a->r->cid,
                    sl_strerror(status));
    }
    route_t *rt = a->rt;
    msg_unref(&a->m);
    subr_unref(&a->r);
    pool_put(&append_pool, a);
    on_store_done(rt, status);
}

/* Append m to persistent subscriber r's store queue; on success it is
 * handed to r's sink (or the node holding r's session) with o. */
static void queue_for(broker_t *b, route_t *rt, subr_t *r, msg_t *m,
                      const delivery_opts_t *o)
{
    append_t *a = pool_get(&append_pool);
    if (!a) {
        rt->status = SL_ENOMEM;
        return;
    }
    *a = (append_t){.rt = rt, .b = b, .r = r, .m = msg_ref(m), .o = *o};
    a->o.qid = 0;
    a->o.group = NULL;
    subr_ref(r);
    store_limits_t lim = {.max_queued = (uint32_t)b->conf->max_queued_messages,
                          .drop_oldest = b->conf->queue_drop ==
                                         QUEUE_DROP_OLDEST};
    rt->pending++;
    store_queue_append(b->store, r->cid, r->clen, m,
                       (uint8_t)(o->qos | (o->retain ? STORE_QOS_RETAIN : 0)),
                       &lim, on_appended, a);
}

int router_retained_index(broker_t *b, msg_t *m)
{
    void *old = NULL;
    if (m->payload_len == 0) {
        old = rtree_del(b->retained, m->topic, m->topic_len);
    } else if (rtree_put(b->retained, m->topic, m->topic_len, msg_ref(m),
                         &old) != SL_OK) {
        msg_unref(&m);
        return SL_ENOMEM;
    }
    msg_t *om = old;
    msg_unref(&om);
    return SL_OK;
}

static void retain_update(broker_t *b, route_t *rt, msg_t *m)
{
    if (router_retained_index(b, m) != SL_OK) {
        rt->status = SL_ENOMEM;
        return;
    }
    rt->pending++;
    if (m->payload_len == 0)
        store_retain_del(b->store, m->topic, m->topic_len, on_store_done, rt);
    else
        store_retain_put(b->store, m, on_store_done, rt);
    /* In a cluster the publisher's ack also waits until the store took
     * the broadcast, so a SUBSCRIBE on any node after that ack finds it
     * (that node's barrier comes back after the broadcast). */
    rt->pending++;
    if (!cluster_retain(b->cluster, m, on_store_done, rt))
        rt->pending--;
}

static bool member_online(const broker_t *b, const member_t *mb)
{
    return mb->r->online && b->sink->online(mb->r->online);
}

/*
 * Pick the member of a shared group that gets this message: the next
 * online member (round robin or random, shared_subscription_strategy);
 * when none is online, a persistent member, whose queue keeps it.
 */
static member_t *group_pick(broker_t *b, group_t *g, const subr_t *except)
{
    if (!g->n)
        return NULL;
    uint32_t start = b->conf->shared_subscription_strategy == SHARED_RANDOM
                         ? (uint32_t)rand() % g->n
                         : g->rr % g->n;
    for (uint32_t k = 0; k < g->n; k++) {
        uint32_t i = (start + k) % g->n;
        member_t *mb = &g->members[i];
        if (mb->r != except && member_online(b, mb)) {
            g->rr = i + 1;
            return mb;
        }
    }
    for (uint32_t k = 0; k < g->n; k++) {
        member_t *mb = &g->members[(start + k) % g->n];
        if (mb->r != except && mb->r->persistent)
            return mb;
    }
    return NULL;
}

static void group_deliver(broker_t *b, route_t *rt, group_t *g, msg_t *m,
                          const subr_t *except)
{
    member_t *mb = group_pick(b, g, except);
    if (!mb)
        return;
    delivery_opts_t o = sub_delivery(mb->sub, m);
    if (mb->r->persistent && o.qos > 0) {
        queue_for(b, rt, mb->r, m, &o);
        return;
    }
    /* The group travels with a QoS 1/2 delivery of a clean session, so
     * what it leaves unacknowledged goes to another member. */
    o.group = o.qos ? g : NULL;
    if (mb->r->online)
        b->sink->deliver(mb->r->online, m, &o);
}

static bool group_online(const broker_t *b, const group_t *g,
                         const subr_t *except)
{
    for (uint32_t i = 0; i < g->n; i++)
        if (g->members[i].r != except && member_online(b, &g->members[i]))
            return true;
    return false;
}

/*
 * A shared group in a cluster: one node among those with a member online
 * gets the message (cluster_group_pick). When it is another node, a
 * persistent member whose session is online there is queued here, like any
 * persistent subscription (so before the publisher's ack); otherwise that
 * node hands it to one of its members.
 */
static void group_route(broker_t *b, route_t *rt, group_t *g, msg_t *m)
{
    int node = b->cluster ? cluster_group_pick(b->cluster, g->share, g->slen,
                                               group_online(b, g, NULL))
                          : CLUSTER_NONE;
    if (node < 0) {
        group_deliver(b, rt, g, m, NULL);
        return;
    }
    for (uint32_t k = 0; k < g->n; k++) {
        uint32_t i = (g->rr + k) % g->n;
        member_t *mb = &g->members[i];
        delivery_opts_t o = sub_delivery(mb->sub, m);
        if (!mb->r->persistent || !o.qos ||
            cluster_owner(b->cluster, mb->r->cid, mb->r->clen) != node)
            continue;
        g->rr = i + 1;
        queue_for(b, rt, mb->r, m, &o);
        return;
    }
    cluster_send_group(b->cluster, node, g->share, g->slen, m);
}

void router_publish(broker_t *b, const subr_t *from, msg_t *m,
                    route_done_fn done, void *arg)
{
    route_t *rt = route_new();
    if (!rt) {
        if (done)
            done(arg, SL_ENOMEM, false);
        return;
    }
    rt->done = done;
    rt->arg = arg;
    rt->pending = 1; /* released at the end of this function */

    if (m->retain)
        retain_update(b, rt, m);

    b->match_gen++;
    b->n_matches = 0;
    b->n_gmatches = 0;
    b->match_from = from;
    trie_match(b->subs, m->topic, m->topic_len, on_match, b);

    bool expired = m->expiry_at && m->expiry_at <= sl_now_ms();
    rt->matched = b->n_matches > 0;
    for (uint32_t i = 0; i < b->n_matches && !expired; i++) {
        struct match *mt = &b->matches[i];
        match_finish(&mt->o, m);
        if (mt->r->persistent && mt->o.qos > 0)
            queue_for(b, rt, mt->r, m, &mt->o);
        else if (mt->r->online)
            b->sink->deliver(mt->r->online, m, &mt->o);
    }
    for (uint32_t i = 0; i < b->n_gmatches && !expired; i++)
        group_route(b, rt, b->gmatches[i], m);
    rt->matched |= b->n_gmatches > 0;
    if (expired)
        b->stats.dropped_expired++;
    else
        cluster_forward(b->cluster, m);
    route_step(rt);
}

void router_publish_remote(broker_t *b, msg_t *m)
{
    if (m->expiry_at && m->expiry_at <= sl_now_ms()) {
        b->stats.dropped_expired++;
        return;
    }
    b->match_gen++;
    b->n_matches = 0;
    b->n_gmatches = 0;
    b->match_from = NULL;
    trie_match(b->subs, m->topic, m->topic_len, on_match, b);
    for (uint32_t i = 0; i < b->n_matches; i++) {
        struct match *mt = &b->matches[i];
        match_finish(&mt->o, m);
        if (mt->r->persistent && mt->o.qos > 0)
            continue; /* queued by the publishing node */
        if (mt->r->online)
            b->sink->deliver(mt->r->online, m, &mt->o);
    }
    /* Shared groups: only when the publishing node picks this one ('G'). */
}

void router_group_remote(broker_t *b, const char *share, size_t slen,
                         msg_t *m)
{
    group_t *g = map_get(b->groups, share, slen);
    if (m->expiry_at && m->expiry_at <= sl_now_ms()) {
        b->stats.dropped_expired++;
        return;
    }
    if (!g) {
        log_debug("shared group '%.*s' has no member here any more, message "
                  "on '%s' dropped",
                  (int)slen, share, m->topic);
        return;
    }
    router_group_deliver(b, g, m, NULL);
}

void router_group_deliver(broker_t *b, group_t *g, msg_t *m,
                          const subr_t *except)
{
    route_t *rt = route_new();
    if (!rt)
        return;
    rt->pending = 1;
    int node = CLUSTER_NONE;
    if (except && !group_online(b, g, except))
        node = cluster_group_pick(b->cluster, g->share, g->slen, false);
    if (node >= 0)
        cluster_send_group(b->cluster, node, g->share, g->slen, m);
    else
        group_deliver(b, rt, g, m, except);
    route_step(rt);
}

typedef struct rsend {
    broker_t *b;
    subr_t *r;
    const sub_t *sub;
    route_t *rt;                 /* for queue appends (persistent session) */
    uint64_t now;
} rsend_t;

static void on_retained_match(void *ctx, void *value)
{
    rsend_t *x = ctx;
    msg_t *m = value;
    if (m->expiry_at && m->expiry_at <= x->now)
        return;
    delivery_opts_t o = {.qos = x->sub->qos < m->qos ? x->sub->qos : m->qos,
                         .retain = true};
    delivery_add_subid(&o, x->sub->sub_id);
    if (o.qos && x->rt) {
        /* Like any QoS >= 1 message for a stored session: through its
         * queue, so it is sent again after a reconnect (to any node)
         * until acknowledged. */
        queue_for(x->b, x->rt, x->r, m, &o);
        return;
    }
    if (x->r->online)
        x->b->sink->deliver(x->r->online, m, &o);
}

void router_send_retained(broker_t *b, subr_t *r, const char *filter,
                          size_t flen, const sub_t *sub)
{
    rsend_t x = {b, r, sub, NULL, sl_now_ms()};
    if (r->persistent && sub->qos)
        x.rt = route_new();
    if (x.rt)
        x.rt->pending = 1;
    if (rtree_match(b->retained, filter, flen, on_retained_match, &x) !=
        SL_OK)
        log_warning("out of memory: retained messages for '%.*s' not sent",
                    (int)flen, filter);
    if (x.rt)
        route_step(x.rt);
}

void router_fini(broker_t *b)
{
    free(b->matches);
    b->matches = NULL;
    free(b->gmatches);
    b->gmatches = NULL;
}
