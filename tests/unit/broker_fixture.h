/*
 * broker_fixture.h - a broker_t for the router and subscriber-index tests
 * (test_router.c, test_subs.c): built by broker_new() with the default
 * configuration and the memory store, never started (no listener, no
 * cluster, no auth). Sessions are stub sinks (sink.h) that record what the
 * router hands them, so a test sees every delivery with its options.
 *
 *   fx_setup / fx_teardown   the suite's .init / .fini
 *   fx_subr()                a subscriber, optionally online on a stub sink
 *   fx_sub()                 subscribe (subs_add) with options
 *   fx_publish()             router_publish, then run the loop until the
 *                            publish completed (every store write done)
 *   fx_claim(), fx_queue()   a stored session; read its store queue
 *   fx_check_index()         the trie, the groups and every subscriber's map
 *                            agree
 */
#ifndef STARLING_TESTS_BROKER_FIXTURE_H
#define STARLING_TESTS_BROKER_FIXTURE_H

#include <criterion/criterion.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/broker/internal.h"
#include "../../src/broker/router.h"

#include "starling/err.h"
#include "starling/log.h"

#define FX_MAX_GOT 256
#define FX_MAX_SUBRS 64
#define FX_MAX_ENTRIES 64

/* A stand-in for a session: takes deliveries while `online`. */
typedef struct stub_sink {
    const char *name;
    bool online;
    unsigned online_calls;       /* sink_ops.online() asked about it */
} stub_sink_t;

/* One delivery a stub sink received, in order across all sinks. */
typedef struct got {
    stub_sink_t *sink;
    msg_t *m;                    /* a reference */
    delivery_opts_t o;
} got_t;

typedef struct fx {
    struct event_base *base;
    sl_conf_t conf;
    broker_t *b;
    got_t got[FX_MAX_GOT];
    size_t n_got;
    unsigned refused;            /* deliver() on a sink that is offline */
    subr_t *subrs[FX_MAX_SUBRS]; /* released by fx_teardown */
    size_t n_subrs;
} fx_t;

static fx_t fx;

static bool stub_online(void *sink)
{
    stub_sink_t *k = sink;
    k->online_calls++;
    return k->online;
}

static bool stub_deliver(void *sink, msg_t *m, const delivery_opts_t *o)
{
    stub_sink_t *k = sink;
    if (!k->online) {
        fx.refused++;
        return false;
    }
    cr_assert_lt(fx.n_got, FX_MAX_GOT);
    fx.got[fx.n_got++] = (got_t){k, msg_ref(m), *o};
    return true;
}

static const sink_ops_t stub_sink_ops = {stub_online, stub_deliver};

static inline void fx_setup(void)
{
    const char *lv = getenv("STARLING_TEST_LOG_LEVEL");
    sl_log_level = lv ? sl_log_level_parse(lv) : SL_LOG_ERROR;
    memset(&fx, 0, sizeof(fx));
    fx.base = event_base_new();
    cr_assert_not_null(fx.base);
    conf_init(&fx.conf);
    cr_assert_eq(broker_new(&fx.b, fx.base, &fx.conf), SL_OK);
    char err[256];
    cr_assert_eq(store_open(&fx.b->store, fx.base, "memory", err,
                            sizeof(err)),
                 SL_OK, "%s", err);
    fx.b->sink = &stub_sink_ops;
}

/* Run the loop until *flag is true (or a bounded number of turns). */
static inline void fx_pump_until(const bool *flag)
{
    for (int i = 0; i < 1000 && !(flag && *flag); i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
}

/* Run what is ready (deferred store callbacks). */
static inline void fx_pump(void)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
}

static inline void fx_got_clear(void)
{
    for (size_t i = 0; i < fx.n_got; i++)
        msg_unref(&fx.got[i].m);
    fx.n_got = 0;
    fx.refused = 0;
}

static inline void fx_teardown(void)
{
    fx_pump();
    for (size_t i = 0; i < fx.n_subrs; i++) {
        subr_t *r = fx.subrs[i];
        subs_set_online(fx.b, r, NULL);
        subs_clear(fx.b, r);
        r->gone = true;
        subr_unref(&r);
    }
    fx_pump();
    fx_got_clear();
    broker_free(fx.b);
    conf_fini(&fx.conf);
    event_base_free(fx.base);
}

/* A subscriber (released at teardown); online on `sink` unless NULL. */
static inline subr_t *fx_subr(const char *cid, bool persistent,
                              stub_sink_t *sink)
{
    cr_assert_lt(fx.n_subrs, FX_MAX_SUBRS);
    subr_t *r = subr_new(cid, strlen(cid), persistent);
    cr_assert_not_null(r);
    fx.subrs[fx.n_subrs++] = r;
    if (sink)
        subs_set_online(fx.b, r, sink);
    return r;
}

/* Subscription options as in SUBSCRIBE: QoS, then flags. */
enum { FX_NL = 1, FX_RAP = 2 };

static inline int fx_sub_ex(subr_t *r, const char *filter, uint8_t qos,
                            int flags, uint32_t subid, bool *existed)
{
    sub_t sub = {.qos = qos, .no_local = (flags & FX_NL) != 0,
                 .retain_as_published = (flags & FX_RAP) != 0,
                 .sub_id = subid};
    bool e = false;
    int rc = subs_add(fx.b, r, filter, strlen(filter), &sub, &e);
    if (existed)
        *existed = e;
    return rc;
}

static inline void fx_sub(subr_t *r, const char *filter, uint8_t qos,
                          int flags, uint32_t subid)
{
    cr_assert_eq(fx_sub_ex(r, filter, qos, flags, subid, NULL), SL_OK,
                 "subscribe %s to %s", r->cid, filter);
}

static inline msg_t *fx_msg(const char *topic, const char *payload,
                            uint8_t qos, bool retain)
{
    msg_t *m = msg_new(topic, strlen(topic), payload, strlen(payload), NULL,
                       0, qos, retain, 0);
    cr_assert_not_null(m);
    return m;
}

typedef struct pubres {
    bool done;
    int status;
    bool matched;
} pubres_t;

static void fx_on_routed(void *arg, int status, bool matched)
{
    pubres_t *r = arg;
    cr_assert(!r->done, "a publish completes once");
    *r = (pubres_t){true, status, matched};
}

/* Route m from `from` (may be NULL) and wait for its completion. */
static inline pubres_t fx_route(msg_t *m, const subr_t *from)
{
    pubres_t res = {0};
    router_publish(fx.b, from, m, fx_on_routed, &res);
    fx_pump_until(&res.done);
    cr_assert(res.done, "publish on %s completed", m->topic);
    return res;
}

static inline pubres_t fx_publish(const char *topic, const char *payload,
                                  uint8_t qos, bool retain,
                                  const subr_t *from)
{
    msg_t *m = fx_msg(topic, payload, qos, retain);
    pubres_t res = fx_route(m, from);
    msg_unref(&m);
    return res;
}

/* ---- deliveries ------------------------------------------------------- */

static inline size_t fx_count(const stub_sink_t *k)
{
    size_t n = 0;
    for (size_t i = 0; i < fx.n_got; i++)
        n += fx.got[i].sink == k;
    return n;
}

/* The only delivery sink k got (asserts there is exactly one). */
static inline const got_t *fx_one(const stub_sink_t *k)
{
    const got_t *g = NULL;
    for (size_t i = 0; i < fx.n_got; i++) {
        if (fx.got[i].sink != k)
            continue;
        cr_assert_null(g, "%s got more than one delivery", k->name);
        g = &fx.got[i];
    }
    cr_assert_not_null(g, "%s got no delivery", k->name);
    return g;
}

static inline bool fx_has_subid(const delivery_opts_t *o, uint32_t id)
{
    for (uint8_t i = 0; i < o->n_subids; i++)
        if (o->subids[i] == id)
            return true;
    return false;
}

/* ---- the store -------------------------------------------------------- */

typedef struct claimres {
    bool done;
    int status;
} claimres_t;

static void fx_on_claimed(void *arg, int status, const store_claim_t *c)
{
    claimres_t *r = arg;
    r->done = true;
    r->status = status;
}

/* Create the stored session of `cid` (so that queue appends find it). */
static inline void fx_claim(const char *cid)
{
    claimres_t res = {0};
    store_session_t rec = {.version = 5, .expiry = 3600};
    store_claim(fx.b->store, cid, strlen(cid), true, &rec, fx_on_claimed,
                &res);
    fx_pump_until(&res.done);
    cr_assert(res.done);
    cr_assert_eq(res.status, SL_OK);
}

typedef struct fx_entry {
    uint64_t id;
    uint8_t qos;                 /* with STORE_QOS_RETAIN */
    char topic[64];
} fx_entry_t;

typedef struct queueres {
    bool done;
    int status;
    fx_entry_t e[FX_MAX_ENTRIES];
    size_t n;
} queueres_t;

static void fx_on_entries(void *arg, int status, const store_entry_t *e,
                          size_t n)
{
    queueres_t *q = arg;
    q->done = true;
    q->status = status;
    for (size_t i = 0; i < n && q->n < FX_MAX_ENTRIES; i++) {
        fx_entry_t *x = &q->e[q->n++];
        x->id = e[i].id;
        x->qos = e[i].qos;
        snprintf(x->topic, sizeof(x->topic), "%s", e[i].msg->topic);
    }
}

/* The store queue of `cid`. */
static inline queueres_t fx_queue(const char *cid)
{
    queueres_t q;
    memset(&q, 0, sizeof(q));
    store_queue_since(fx.b->store, cid, strlen(cid), 0, FX_MAX_ENTRIES,
                      fx_on_entries, &q);
    fx_pump_until(&q.done);
    cr_assert(q.done);
    return q;
}

/* ---- index consistency ------------------------------------------------ */

typedef struct idxcheck {
    size_t entries;
} idxcheck_t;

static inline bool fx_known_subr(const subr_t *r)
{
    for (size_t i = 0; i < fx.n_subrs; i++)
        if (fx.subrs[i] == r)
            return true;
    return false;
}

/* Every trie entry is a subscription some subscriber's map holds (the same
 * sub_t), or a group listed in broker->groups under its own filter. */
static void fx_visit_entry(void *ctx, const char *filter, size_t flen,
                           uintptr_t key, void *value)
{
    idxcheck_t *x = ctx;
    x->entries++;
    if (key & GROUP_TAG) {
        group_t *g = (group_t *)(key & ~GROUP_TAG);
        cr_assert_eq(value, g, "a group entry's value is the group");
        cr_assert_eq(map_get(fx.b->groups, g->share, g->slen), g,
                     "group %s listed", g->share);
        cr_assert(flen == g->flen && memcmp(filter, g->filter, flen) == 0,
                  "group %s under its filter", g->share);
        cr_assert_gt(g->n, 0, "group %s has members", g->share);
        return;
    }
    subr_t *r = (subr_t *)key;
    cr_assert(fx_known_subr(r), "trie entry %.*s of an unknown subscriber",
              (int)flen, filter);
    cr_assert_eq(map_get(r->subs, filter, flen), value,
                 "trie entry %.*s of %s is in its map", (int)flen, filter,
                 r->cid);
}

/* The trie, the groups and the subscribers' maps describe the same set of
 * subscriptions. */
static inline void fx_check_index(void)
{
    size_t plain = 0, groups = 0;
    for (size_t i = 0; i < fx.n_subrs; i++) {
        subr_t *r = fx.subrs[i];
        size_t cur = 0;
        const char *f;
        size_t flen;
        void *v;
        while (map_next(r->subs, &cur, &f, &flen, &v)) {
            const char *gname, *inner;
            size_t glen, ilen;
            int shared = topic_share_parse(f, flen, &gname, &glen, &inner,
                                           &ilen);
            cr_assert_geq(shared, 0);
            if (!shared) {
                plain++;
                cr_assert_eq(trie_get(fx.b->subs, f, flen, (uintptr_t)r), v,
                             "%s's %.*s is in the trie", r->cid, (int)flen,
                             f);
                continue;
            }
            group_t *g = map_get(fx.b->groups, f, flen);
            cr_assert_not_null(g, "group of %.*s exists", (int)flen, f);
            bool member = false;
            for (uint32_t k = 0; k < g->n; k++)
                if (g->members[k].r == r) {
                    cr_assert(!member, "%s is a member once", r->cid);
                    cr_assert_eq(g->members[k].sub, v,
                                 "member's sub_t is the map's");
                    member = true;
                }
            cr_assert(member, "%s is a member of %.*s", r->cid, (int)flen,
                      f);
        }
    }
    size_t cur = 0;
    void *v;
    while (map_next(fx.b->groups, &cur, NULL, NULL, &v)) {
        group_t *g = v;
        groups++;
        for (uint32_t k = 0; k < g->n; k++)
            cr_assert_eq(map_get(g->members[k].r->subs, g->share, g->slen),
                         g->members[k].sub,
                         "member %s of %s has it in its map",
                         g->members[k].r->cid, g->share);
    }
    idxcheck_t x = {0};
    trie_foreach(fx.b->subs, fx_visit_entry, &x);
    cr_assert_eq(x.entries, plain + groups,
                 "trie entries: %zu plain subscriptions + %zu groups",
                 plain, groups);
    cr_assert_eq(trie_count(fx.b->subs), plain + groups);
}

#endif
