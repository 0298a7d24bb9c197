/*
 * test_router.c - where a published message goes (src/broker/router.c):
 * matching, one delivery per subscriber with its options (QoS, RETAIN,
 * subscription identifiers), no local, shared groups, persistent
 * subscribers' store queues, retained messages on subscribe. Sessions are
 * stub sinks that record what they receive; the store is the memory
 * backend (broker_fixture.h).
 */
#include "broker_fixture.h"

TestSuite(router, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

/* ---- matching ---------------------------------------------------------- */

Test(router, exact_match)
{
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", false, &k);
    fx_sub(r, "a/b", 1, 0, 0);

    pubres_t res = fx_publish("a/b", "x", 1, false, NULL);
    cr_assert_eq(res.status, SL_OK);
    cr_assert(res.matched);
    const got_t *g = fx_one(&k);
    cr_assert_str_eq(g->m->topic, "a/b");
    cr_assert_eq(g->o.qos, 1);
    cr_assert(!g->o.retain);
    cr_assert_eq(g->o.n_subids, 0);
    cr_assert_eq(g->o.qid, 0, "not through a store queue");
    cr_assert_null(g->o.group);

    fx_got_clear();
    res = fx_publish("a/c", "x", 1, false, NULL);
    cr_assert(!res.matched);
    res = fx_publish("a/b/c", "x", 1, false, NULL);
    cr_assert(!res.matched);
    res = fx_publish("a", "x", 1, false, NULL);
    cr_assert(!res.matched);
    cr_assert_eq(fx.n_got, 0);
}

Test(router, wildcard_matches)
{
    stub_sink_t plus = {"plus", true, 0}, hash = {"hash", true, 0},
                all = {"all", true, 0}, sys = {"sys", true, 0};
    fx_sub(fx_subr("plus", false, &plus), "+/b", 0, 0, 0);
    fx_sub(fx_subr("hash", false, &hash), "a/#", 0, 0, 0);
    fx_sub(fx_subr("all", false, &all), "#", 0, 0, 0);
    fx_sub(fx_subr("sys", false, &sys), "$SYS/#", 0, 0, 0);

    fx_publish("a/b", "x", 0, false, NULL);
    cr_assert_eq(fx_count(&plus), 1);
    cr_assert_eq(fx_count(&hash), 1);
    cr_assert_eq(fx_count(&all), 1);
    cr_assert_eq(fx_count(&sys), 0);
    fx_got_clear();

    fx_publish("a", "x", 0, false, NULL);
    cr_assert_eq(fx_count(&hash), 1, "a/# matches its parent level");
    cr_assert_eq(fx_count(&all), 1);
    cr_assert_eq(fx_count(&plus), 0);
    fx_got_clear();

    fx_publish("x/b", "x", 0, false, NULL);
    cr_assert_eq(fx_count(&plus), 1);
    cr_assert_eq(fx_count(&hash), 0);
    cr_assert_eq(fx_count(&all), 1);
    fx_got_clear();

    fx_publish("$SYS/b", "x", 0, false, NULL);
    cr_assert_eq(fx_count(&sys), 1);
    cr_assert_eq(fx_count(&plus), 0, "+ never matches a $ level first");
    cr_assert_eq(fx_count(&all), 0, "# never matches a $ topic");
    cr_assert_eq(fx.n_got, 1);
}

Test(router, overlapping_filters_one_delivery)
{
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", false, &k);
    fx_sub(r, "a/b", 0, 0, 1);
    fx_sub(r, "a/+", 2, 0, 2);
    fx_sub(r, "#", 1, 0, 0);       /* no identifier */
    fx_sub(r, "+/#", 1, 0, 3);

    fx_publish("a/b", "x", 2, false, NULL);
    const got_t *g = fx_one(&k);
    cr_assert_eq(g->o.qos, 2, "the highest QoS of the matching filters");
    cr_assert_eq(g->o.n_subids, 3, "every subscription identifier");
    cr_assert(fx_has_subid(&g->o, 1));
    cr_assert(fx_has_subid(&g->o, 2));
    cr_assert(fx_has_subid(&g->o, 3));
    fx_got_clear();

    /* Limited by the message's QoS. */
    fx_publish("a/b", "x", 1, false, NULL);
    cr_assert_eq(fx_one(&k)->o.qos, 1);
    fx_got_clear();

    /* Only the filters that match count. */
    fx_publish("z/b", "x", 2, false, NULL);
    g = fx_one(&k);
    cr_assert_eq(g->o.qos, 1);
    cr_assert_eq(g->o.n_subids, 1);
    cr_assert(fx_has_subid(&g->o, 3));
}

Test(router, at_most_four_subscription_ids)
{
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", false, &k);
    const char *f[] = {"a/b", "a/+", "+/b", "+/+", "a/#", "#"};
    for (uint32_t i = 0; i < 6; i++)
        fx_sub(r, f[i], 1, 0, 10 + i);
    fx_publish("a/b", "x", 1, false, NULL);
    const got_t *g = fx_one(&k);
    cr_assert_eq(g->o.n_subids, DELIVERY_MAX_SUBIDS);
    for (uint8_t i = 0; i < g->o.n_subids; i++)
        cr_assert(g->o.subids[i] >= 10 && g->o.subids[i] < 16);
}

Test(router, qos_downgrade)
{
    stub_sink_t k0 = {"k0", true, 0}, k1 = {"k1", true, 0},
                k2 = {"k2", true, 0};
    fx_sub(fx_subr("q0", false, &k0), "t", 0, 0, 0);
    fx_sub(fx_subr("q1", false, &k1), "t", 1, 0, 0);
    fx_sub(fx_subr("q2", false, &k2), "t", 2, 0, 0);
    for (uint8_t mq = 0; mq <= 2; mq++) {
        fx_publish("t", "x", mq, false, NULL);
        cr_assert_eq(fx_one(&k0)->o.qos, 0);
        cr_assert_eq(fx_one(&k1)->o.qos, mq < 1 ? mq : 1);
        cr_assert_eq(fx_one(&k2)->o.qos, mq);
        fx_got_clear();
    }
}

Test(router, no_local)
{
    stub_sink_t ka = {"a", true, 0}, kb = {"b", true, 0};
    subr_t *a = fx_subr("a", false, &ka);
    subr_t *b = fx_subr("b", false, &kb);
    fx_sub(a, "t/#", 1, FX_NL, 1);
    fx_sub(b, "t/#", 1, 0, 0);

    pubres_t res = fx_publish("t/1", "x", 1, false, a);
    cr_assert_eq(fx_count(&ka), 0, "not back to its publisher");
    cr_assert_eq(fx_count(&kb), 1);
    cr_assert(res.matched);
    fx_got_clear();

    fx_publish("t/1", "x", 1, false, b);
    cr_assert_eq(fx_count(&ka), 1);
    cr_assert_eq(fx_count(&kb), 1, "b has no no-local");
    fx_got_clear();

    fx_publish("t/1", "x", 1, false, NULL); /* a will, $SYS: no publisher */
    cr_assert_eq(fx_count(&ka), 1);
    fx_got_clear();

    /* Another of a's filters without no-local still matches: one delivery
     * with that filter's identifier only. */
    fx_sub(a, "+/1", 0, 0, 2);
    fx_publish("t/1", "x", 1, false, a);
    const got_t *g = fx_one(&ka);
    cr_assert_eq(g->o.qos, 0);
    cr_assert_eq(g->o.n_subids, 1);
    cr_assert_eq(g->o.subids[0], 2);
}

Test(router, retain_as_published)
{
    stub_sink_t kr = {"rap", true, 0}, kn = {"norap", true, 0};
    subr_t *rap = fx_subr("rap", false, &kr);
    fx_sub(rap, "t", 1, FX_RAP, 0);
    fx_sub(fx_subr("norap", false, &kn), "t", 1, 0, 0);

    fx_publish("t", "x", 1, true, NULL);
    cr_assert(fx_one(&kr)->o.retain, "RETAIN kept as published");
    cr_assert(!fx_one(&kn)->o.retain, "RETAIN cleared (MQTT 3.3.1.3)");
    fx_got_clear();

    fx_publish("t", "x", 1, false, NULL);
    cr_assert(!fx_one(&kr)->o.retain);
    cr_assert(!fx_one(&kn)->o.retain);
    fx_got_clear();

    /* Any matching filter with retain-as-published keeps it. */
    fx_sub(rap, "#", 0, 0, 0);
    fx_publish("t", "y", 1, true, NULL);
    cr_assert(fx_one(&kr)->o.retain);
}

Test(router, offline_clean_subscriber_gets_nothing)
{
    stub_sink_t off = {"off", false, 0};
    fx_sub(fx_subr("gone", false, NULL), "t", 1, 0, 0);
    fx_sub(fx_subr("off", false, &off), "t", 1, 0, 0);
    pubres_t res = fx_publish("t", "x", 1, false, NULL);
    cr_assert(res.matched, "matched, though nobody was online");
    cr_assert_eq(res.status, SL_OK);
    cr_assert_eq(fx.n_got, 0);
    cr_assert_eq(fx.refused, 1, "one call to the offline sink, refused");
}

Test(router, expired_message_dropped)
{
    stub_sink_t k = {"k", true, 0};
    fx_sub(fx_subr("c1", false, &k), "t", 1, 0, 0);
    msg_t *m = msg_new("t", 1, "x", 1, NULL, 0, 1, false, 1);
    cr_assert_not_null(m);
    fx_route(m, NULL);
    msg_unref(&m);
    cr_assert_eq(fx.n_got, 0);
    cr_assert_eq(fx.b->stats.dropped_expired, 1);
}

/* ---- persistent subscribers ------------------------------------------- */

Test(router, offline_persistent_subscriber_is_queued)
{
    subr_t *p = fx_subr("p", true, NULL);
    fx_claim("p");
    fx_sub(p, "t/#", 2, FX_RAP, 5);

    pubres_t res = fx_publish("t/1", "one", 1, false, NULL);
    cr_assert_eq(res.status, SL_OK);
    cr_assert(res.matched);
    fx_publish("t/2", "two", 2, true, NULL);
    fx_publish("t/3", "three", 0, false, NULL); /* QoS 0: not kept */
    cr_assert_eq(fx.n_got, 0, "no sink call");

    queueres_t q = fx_queue("p");
    cr_assert_eq(q.status, SL_OK);
    cr_assert_eq(q.n, 2);
    cr_assert_str_eq(q.e[0].topic, "t/1");
    cr_assert_eq(q.e[0].qos, 1);
    cr_assert_str_eq(q.e[1].topic, "t/2");
    cr_assert_eq(q.e[1].qos, 2 | STORE_QOS_RETAIN,
                 "the entry keeps RETAIN (retain as published)");
    cr_assert_lt(q.e[0].id, q.e[1].id);
}

Test(router, online_persistent_subscriber_after_the_store)
{
    stub_sink_t k = {"k", true, 0};
    subr_t *p = fx_subr("p", true, &k);
    fx_claim("p");
    fx_sub(p, "t", 1, 0, 7);

    msg_t *m = fx_msg("t", "x", 2, false);
    pubres_t res = {0};
    router_publish(fx.b, NULL, m, fx_on_routed, &res);
    cr_assert(!res.done, "the publish waits for the queue append");
    cr_assert_eq(fx.n_got, 0, "handed over only once stored");
    fx_pump_until(&res.done);
    msg_unref(&m);
    cr_assert_eq(res.status, SL_OK);

    queueres_t q = fx_queue("p");
    cr_assert_eq(q.n, 1);
    const got_t *g = fx_one(&k);
    cr_assert_eq(g->o.qid, q.e[0].id, "delivered with its queue entry");
    cr_assert_eq(g->o.qos, 1);
    cr_assert_eq(g->o.n_subids, 1);
    cr_assert_eq(g->o.subids[0], 7);
    cr_assert_null(g->o.group);

    /* QoS 0 to a persistent subscriber: straight to the sink. */
    fx_got_clear();
    fx_publish("t", "y", 0, false, NULL);
    cr_assert_eq(fx_one(&k)->o.qid, 0);
    cr_assert_eq(fx_queue("p").n, 1);
}

Test(router, persistent_session_gone)
{
    /* No stored session (it ended meanwhile): not a failed publish. */
    subr_t *p = fx_subr("p", true, NULL);
    fx_sub(p, "t", 1, 0, 0);
    pubres_t res = fx_publish("t", "x", 1, false, NULL);
    cr_assert_eq(res.status, SL_OK);
    cr_assert_eq(fx.b->stats.store_errors, 0);
}

Test(router, persistent_queue_full)
{
    fx.conf.max_queued_messages = 2;
    fx.conf.queue_drop = QUEUE_DROP_NEW;
    subr_t *p = fx_subr("p", true, NULL);
    fx_claim("p");
    fx_sub(p, "t", 1, 0, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fx_publish("t", "x", 1, false, NULL).status, SL_OK,
                     "a policy drop is not a failed publish");
    cr_assert_eq(fx_queue("p").n, 2);
    cr_assert_eq(fx.b->stats.dropped_queue_full, 1);
}

Test(router, remote_publish_skips_persistent_queues)
{
    stub_sink_t kc = {"clean", true, 0}, kp = {"pers", true, 0};
    fx_sub(fx_subr("clean", false, &kc), "t", 1, 0, 0);
    subr_t *p = fx_subr("pers", true, &kp);
    fx_claim("pers");
    fx_sub(p, "t", 1, 0, 0);
    msg_t *m = fx_msg("t", "x", 1, false);
    router_publish_remote(fx.b, m);
    msg_unref(&m);
    fx_pump();
    cr_assert_eq(fx_one(&kc)->o.qos, 1);
    cr_assert_eq(fx_count(&kp), 0, "queued by the publishing node");
    cr_assert_eq(fx_queue("pers").n, 0);

    /* QoS 0 reaches every online subscriber. */
    fx_got_clear();
    m = fx_msg("t", "y", 0, false);
    router_publish_remote(fx.b, m);
    msg_unref(&m);
    cr_assert_eq(fx_count(&kc), 1);
    cr_assert_eq(fx_count(&kp), 1);
}

/* ---- shared subscriptions ---------------------------------------------- */

Test(router, shared_round_robin_over_online_members)
{
    stub_sink_t k[3] = {{"a", true, 0}, {"b", true, 0}, {"c", true, 0}};
    const char *cid[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        fx_sub(fx_subr(cid[i], false, &k[i]), "$share/g/t/+", 1, 0,
               (uint32_t)i + 1);
    stub_sink_t plain = {"plain", true, 0};
    fx_sub(fx_subr("plain", false, &plain), "t/+", 0, 0, 0);
    group_t *grp = map_get(fx.b->groups, "$share/g/t/+", 12);
    cr_assert_not_null(grp);

    for (int i = 0; i < 6; i++)
        fx_publish("t/x", "x", 1, false, NULL);
    cr_assert_eq(fx_count(&plain), 6, "a plain subscriber gets every one");
    size_t n = 0;
    for (size_t i = 0; i < fx.n_got; i++) {
        const got_t *g = &fx.got[i];
        if (g->sink == &plain)
            continue;
        cr_assert_eq(g->sink, &k[n % 3], "turn %zu", n);
        cr_assert_eq(g->o.qos, 1);
        cr_assert_eq(g->o.group, grp,
                     "a QoS 1 delivery carries its group");
        cr_assert_eq(g->o.n_subids, 1);
        cr_assert_eq(g->o.subids[0], (uint32_t)(n % 3) + 1);
        n++;
    }
    cr_assert_eq(n, 6);
    fx_got_clear();

    /* An offline member is skipped. */
    k[1].online = false;
    for (int i = 0; i < 4; i++)
        fx_publish("t/x", "x", 0, false, NULL);
    cr_assert_eq(fx_count(&k[0]), 2);
    cr_assert_eq(fx_count(&k[1]), 0);
    cr_assert_eq(fx_count(&k[2]), 2);
    for (size_t i = 0; i < fx.n_got; i++)
        cr_assert_null(fx.got[i].o.group, "QoS 0: no group to return to");
    cr_assert_eq(fx.refused, 0, "offline members are not handed anything");
}

Test(router, shared_random_strategy_online_only)
{
    fx.conf.shared_subscription_strategy = SHARED_RANDOM;
    stub_sink_t k[3] = {{"a", true, 0}, {"b", false, 0}, {"c", true, 0}};
    const char *cid[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        fx_sub(fx_subr(cid[i], false, &k[i]), "$share/g/t", 0, 0, 0);
    for (int i = 0; i < 50; i++)
        fx_publish("t", "x", 0, false, NULL);
    cr_assert_eq(fx.n_got, 50, "one member each time");
    cr_assert_eq(fx_count(&k[1]), 0);
    cr_assert_gt(fx_count(&k[0]), 0);
    cr_assert_gt(fx_count(&k[2]), 0);
}

Test(router, shared_falls_back_to_persistent_member_queue)
{
    stub_sink_t off = {"off", false, 0};
    fx_sub(fx_subr("clean", false, &off), "$share/g/t", 1, 0, 0);
    subr_t *p = fx_subr("p", true, NULL);
    fx_claim("p");
    fx_sub(p, "$share/g/t", 1, 0, 4);

    fx_publish("t", "one", 1, false, NULL);
    cr_assert_eq(fx.n_got, 0);
    queueres_t q = fx_queue("p");
    cr_assert_eq(q.n, 1, "none online: the persistent member's queue");
    cr_assert_str_eq(q.e[0].topic, "t");

    /* QoS 0 is not queued. */
    fx_publish("t", "two", 0, false, NULL);
    cr_assert_eq(fx_queue("p").n, 1);

    /* Once a member is online, it gets the messages. */
    off.online = true;
    fx_publish("t", "three", 1, false, NULL);
    cr_assert_eq(fx_count(&off), 1);
    cr_assert_eq(fx_queue("p").n, 1);
}

Test(router, shared_online_persistent_member_through_queue)
{
    stub_sink_t k = {"p", true, 0};
    subr_t *p = fx_subr("p", true, &k);
    fx_claim("p");
    fx_sub(p, "$share/g/t", 2, 0, 0);
    fx_publish("t", "x", 2, false, NULL);
    queueres_t q = fx_queue("p");
    cr_assert_eq(q.n, 1);
    const got_t *g = fx_one(&k);
    cr_assert_eq(g->o.qid, q.e[0].id);
    cr_assert_eq(g->o.qos, 2);
    cr_assert_null(g->o.group, "its queue keeps it, not the group");
}

Test(router, shared_group_nobody_to_take_it)
{
    stub_sink_t off = {"off", false, 0};
    fx_sub(fx_subr("a", false, &off), "$share/g/t", 1, 0, 0);
    fx_sub(fx_subr("b", false, NULL), "$share/g/t", 1, 0, 0);
    pubres_t res = fx_publish("t", "x", 1, false, NULL);
    cr_assert(res.matched);
    cr_assert_eq(fx.n_got, 0);
}

Test(router, group_deliver_except_leaving_member)
{
    stub_sink_t ka = {"a", true, 0}, kb = {"b", true, 0};
    subr_t *a = fx_subr("a", false, &ka);
    fx_sub(a, "$share/g/t", 1, 0, 0);
    fx_sub(fx_subr("b", false, &kb), "$share/g/t", 1, 0, 0);
    group_t *g = map_get(fx.b->groups, "$share/g/t", 10);
    msg_t *m = fx_msg("t", "x", 1, false);
    for (int i = 0; i < 3; i++)
        router_group_deliver(fx.b, g, m, a);
    msg_unref(&m);
    fx_pump();
    cr_assert_eq(fx_count(&ka), 0);
    cr_assert_eq(fx_count(&kb), 3);
}

/* ---- retained messages on subscribe ------------------------------------ */

static void retain_fixture(void)
{
    fx_publish("a/b", "ab", 1, true, NULL);
    fx_publish("a/c", "ac", 2, true, NULL);
    fx_publish("a/b/c", "abc", 0, true, NULL);
    fx_publish("b/x", "bx", 1, true, NULL);
    fx_publish("$SYS/y", "sys", 0, true, NULL);
    fx_publish("a/d", "not retained", 1, false, NULL);
    cr_assert_eq(rtree_count(fx.b->retained), 5);
}

static size_t send_retained(subr_t *r, const char *filter)
{
    const sub_t *sub = map_get(r->subs, filter, strlen(filter));
    cr_assert_not_null(sub);
    size_t before = fx.n_got;
    router_send_retained(fx.b, r, filter, strlen(filter), sub);
    fx_pump();
    return fx.n_got - before;
}

static const got_t *got_topic(const char *topic)
{
    for (size_t i = 0; i < fx.n_got; i++)
        if (strcmp(fx.got[i].m->topic, topic) == 0)
            return &fx.got[i];
    return NULL;
}

Test(router, retained_on_subscribe_honour_the_filter)
{
    retain_fixture();
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", false, &k);

    fx_sub(r, "a/+", 1, 0, 5);
    cr_assert_eq(send_retained(r, "a/+"), 2);
    const got_t *ab = got_topic("a/b"), *ac = got_topic("a/c");
    cr_assert_not_null(ab);
    cr_assert_not_null(ac);
    cr_assert(ab->o.retain && ac->o.retain, "sent with RETAIN 1");
    cr_assert_eq(ab->o.qos, 1);
    cr_assert_eq(ac->o.qos, 1, "at most the subscription's QoS");
    cr_assert_eq(ab->o.n_subids, 1);
    cr_assert_eq(ab->o.subids[0], 5);
    cr_assert_eq(ab->o.qid, 0);
    fx_got_clear();

    fx_sub(r, "a/b", 2, 0, 0);
    cr_assert_eq(send_retained(r, "a/b"), 1);
    cr_assert_eq(fx.got[0].o.qos, 1, "at most the message's QoS");
    cr_assert_eq(fx.got[0].o.n_subids, 0);
    fx_got_clear();

    fx_sub(r, "#", 0, 0, 0);
    cr_assert_eq(send_retained(r, "#"), 4, "every retained but $SYS");
    cr_assert_null(got_topic("$SYS/y"));
    fx_got_clear();

    fx_sub(r, "$SYS/#", 0, 0, 0);
    cr_assert_eq(send_retained(r, "$SYS/#"), 1);
    fx_got_clear();

    fx_sub(r, "x/#", 0, 0, 0);
    cr_assert_eq(send_retained(r, "x/#"), 0);

    /* An empty retained message clears the topic. */
    fx_publish("a/b", "", 0, true, NULL);
    fx_got_clear();
    cr_assert_eq(send_retained(r, "a/+"), 1);
    cr_assert_str_eq(fx.got[0].m->topic, "a/c");
}

Test(router, retained_expired_not_sent)
{
    msg_t *m = msg_new("a/old", 5, "x", 1, NULL, 0, 0, true, 1);
    cr_assert_eq(router_retained_index(fx.b, m), SL_OK);
    msg_unref(&m);
    m = msg_new("a/new", 5, "x", 1, NULL, 0, 0, true, 0);
    cr_assert_eq(router_retained_index(fx.b, m), SL_OK);
    msg_unref(&m);
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", false, &k);
    fx_sub(r, "a/#", 0, 0, 0);
    cr_assert_eq(send_retained(r, "a/#"), 1);
    cr_assert_str_eq(fx.got[0].m->topic, "a/new");
}

Test(router, retained_for_persistent_subscriber_go_through_its_queue)
{
    retain_fixture();
    stub_sink_t k = {"k", true, 0};
    subr_t *p = fx_subr("p", true, &k);
    fx_claim("p");
    fx_sub(p, "a/#", 1, 0, 0);
    cr_assert_eq(send_retained(p, "a/#"), 3);
    queueres_t q = fx_queue("p");
    cr_assert_eq(q.n, 2, "QoS >= 1 ones are queued");
    for (size_t i = 0; i < q.n; i++)
        cr_assert_eq(q.e[i].qos, 1 | STORE_QOS_RETAIN);
    const got_t *abc = got_topic("a/b/c");
    cr_assert_not_null(abc);
    cr_assert_eq(abc->o.qid, 0, "QoS 0 straight to the sink");
    cr_assert(abc->o.retain);
    const got_t *ab = got_topic("a/b");
    cr_assert_not_null(ab);
    cr_assert_neq(ab->o.qid, 0);
    cr_assert(ab->o.retain);
}

Test(router, retained_not_sent_to_offline_sink)
{
    retain_fixture();
    stub_sink_t k = {"k", false, 0};
    subr_t *r = fx_subr("c1", false, &k);
    fx_sub(r, "a/+", 1, 0, 0);
    cr_assert_eq(send_retained(r, "a/+"), 0);
}
