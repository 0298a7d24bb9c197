/*
 * test_subs.c - the subscriber index (src/broker/subs.c): subs_add,
 * subs_remove and subs_clear keep the trie, the shared groups and each
 * subscriber's own map in step; a subscription again replaces its options;
 * the online sink is an opaque pointer. After every change the whole index
 * is checked (broker_fixture.h, fx_check_index).
 */
#include "broker_fixture.h"

TestSuite(subs, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static const sub_t *sub_of(subr_t *r, const char *filter)
{
    return map_get(r->subs, filter, strlen(filter));
}

static group_t *group_of(const char *share)
{
    return map_get(fx.b->groups, share, strlen(share));
}

Test(subs, add_and_remove)
{
    subr_t *r = fx_subr("c1", false, NULL);
    bool existed = true;
    cr_assert_eq(fx_sub_ex(r, "a/b", 1, 0, 0, &existed), SL_OK);
    cr_assert(!existed);
    cr_assert_eq(fx_sub_ex(r, "a/+", 0, 0, 0, &existed), SL_OK);
    cr_assert(!existed);
    fx_sub(r, "#", 2, 0, 7);
    fx_check_index();
    cr_assert_eq(map_count(r->subs), 3);
    cr_assert_eq(trie_count(fx.b->subs), 3);
    cr_assert_eq(sub_of(r, "#")->sub_id, 7);
    cr_assert_eq(sub_of(r, "#")->qos, 2);

    cr_assert_eq(subs_remove(fx.b, r, "a/+", 3), SL_OK);
    fx_check_index();
    cr_assert_null(sub_of(r, "a/+"));
    cr_assert_null(trie_get(fx.b->subs, "a/+", 3, (uintptr_t)r));
    cr_assert_eq(trie_count(fx.b->subs), 2);

    cr_assert_eq(subs_remove(fx.b, r, "a/+", 3), SL_ENOTFOUND);
    cr_assert_eq(subs_remove(fx.b, r, "x", 1), SL_ENOTFOUND);
    fx_check_index();

    cr_assert_eq(subs_remove(fx.b, r, "a/b", 3), SL_OK);
    cr_assert_eq(subs_remove(fx.b, r, "#", 1), SL_OK);
    fx_check_index();
    cr_assert_eq(map_count(r->subs), 0);
    cr_assert_eq(trie_count(fx.b->subs), 0);
    cr_assert_eq(trie_node_count(fx.b->subs), 1, "empty nodes pruned");
}

Test(subs, two_subscribers_one_filter)
{
    subr_t *a = fx_subr("a", false, NULL);
    subr_t *b = fx_subr("b", true, NULL);
    fx_sub(a, "t/+", 1, 0, 0);
    fx_sub(b, "t/+", 2, FX_NL, 0);
    fx_check_index();
    cr_assert_eq(trie_filter_size(fx.b->subs, "t/+", 3), 2);
    cr_assert_eq(((const sub_t *)trie_get(fx.b->subs, "t/+", 3,
                                          (uintptr_t)a))->qos, 1);
    cr_assert_eq(((const sub_t *)trie_get(fx.b->subs, "t/+", 3,
                                          (uintptr_t)b))->qos, 2);
    cr_assert_eq(subs_remove(fx.b, a, "t/+", 3), SL_OK);
    fx_check_index();
    cr_assert_eq(trie_filter_size(fx.b->subs, "t/+", 3), 1);
    cr_assert_not_null(trie_get(fx.b->subs, "t/+", 3, (uintptr_t)b));
}

Test(subs, resubscribe_replaces_options)
{
    subr_t *r = fx_subr("c1", false, NULL);
    fx_sub(r, "a/#", 0, 0, 1);
    bool existed = false;
    cr_assert_eq(fx_sub_ex(r, "a/#", 2, FX_NL | FX_RAP, 9, &existed), SL_OK);
    cr_assert(existed, "the second SUBSCRIBE replaces the first");
    fx_check_index();
    cr_assert_eq(map_count(r->subs), 1);
    cr_assert_eq(trie_count(fx.b->subs), 1);
    const sub_t *s = trie_get(fx.b->subs, "a/#", 3, (uintptr_t)r);
    cr_assert_not_null(s);
    cr_assert_eq(s, sub_of(r, "a/#"));
    cr_assert_eq(s->qos, 2);
    cr_assert(s->no_local);
    cr_assert(s->retain_as_published);
    cr_assert_eq(s->sub_id, 9);

    /* Back to fewer options: nothing of the old ones stays. */
    cr_assert_eq(fx_sub_ex(r, "a/#", 1, 0, 0, &existed), SL_OK);
    cr_assert(existed);
    s = sub_of(r, "a/#");
    cr_assert_eq(s->qos, 1);
    cr_assert(!s->no_local);
    cr_assert(!s->retain_as_published);
    cr_assert_eq(s->sub_id, 0);
    fx_check_index();
}

Test(subs, shared_group_lifecycle)
{
    subr_t *a = fx_subr("a", false, NULL);
    subr_t *b = fx_subr("b", true, NULL);
    fx_sub(a, "$share/g/t/#", 1, 0, 3);
    group_t *g = group_of("$share/g/t/#");
    cr_assert_not_null(g);
    cr_assert_eq(g->n, 1);
    cr_assert_eq(g->flen, 3);
    cr_assert(memcmp(g->filter, "t/#", 3) == 0);
    cr_assert_eq(trie_get(fx.b->subs, "t/#", 3, (uintptr_t)g | GROUP_TAG),
                 g, "one trie entry for the group, under its inner filter");
    cr_assert_null(trie_get(fx.b->subs, "t/#", 3, (uintptr_t)a),
                   "not one for the member");

    fx_sub(b, "$share/g/t/#", 2, 0, 0);
    fx_check_index();
    cr_assert_eq(group_of("$share/g/t/#"), g, "same group");
    cr_assert_eq(g->n, 2);
    cr_assert_eq(trie_count(fx.b->subs), 1);

    /* Another group on the same filter, and a plain subscription to it. */
    fx_sub(a, "$share/h/t/#", 0, 0, 0);
    fx_sub(a, "t/#", 0, 0, 0);
    fx_check_index();
    cr_assert_eq(map_count(fx.b->groups), 2);
    cr_assert_eq(trie_filter_size(fx.b->subs, "t/#", 3), 3);

    /* Re-subscribing replaces the member's options, stays one member. */
    bool existed = false;
    cr_assert_eq(fx_sub_ex(a, "$share/g/t/#", 2, 0, 4, &existed), SL_OK);
    cr_assert(existed);
    cr_assert_eq(g->n, 2);
    cr_assert_eq(g->members[0].r, a);
    cr_assert_eq(g->members[0].sub->qos, 2);
    cr_assert_eq(g->members[0].sub->sub_id, 4);
    fx_check_index();

    cr_assert_eq(subs_remove(fx.b, a, "$share/g/t/#", 12), SL_OK);
    fx_check_index();
    cr_assert_eq(g->n, 1);
    cr_assert_eq(g->members[0].r, b);

    /* The last member leaves: the group and its trie entry go. */
    cr_assert_eq(subs_remove(fx.b, b, "$share/g/t/#", 12), SL_OK);
    fx_check_index();
    cr_assert_null(group_of("$share/g/t/#"));
    cr_assert_eq(map_count(fx.b->groups), 1);
    cr_assert_eq(trie_filter_size(fx.b->subs, "t/#", 3), 2);
}

Test(subs, shared_round_robin_position_follows_leaves)
{
    subr_t *r[3] = {fx_subr("a", false, NULL), fx_subr("b", false, NULL),
                    fx_subr("c", false, NULL)};
    for (int i = 0; i < 3; i++)
        fx_sub(r[i], "$share/g/x", 0, 0, 0);
    group_t *g = group_of("$share/g/x");
    g->rr = 2; /* "c" is next */
    cr_assert_eq(subs_remove(fx.b, r[0], "$share/g/x", 10), SL_OK);
    cr_assert_eq(g->n, 2);
    cr_assert_eq(g->members[g->rr % g->n].r, r[2], "still c's turn");
    fx_check_index();
}

Test(subs, invalid_shared_filter)
{
    subr_t *r = fx_subr("c1", false, NULL);
    bool existed;
    cr_assert_eq(fx_sub_ex(r, "$share/g", 1, 0, 0, &existed), SL_ETOPIC);
    cr_assert_eq(fx_sub_ex(r, "$share//t", 1, 0, 0, &existed), SL_ETOPIC);
    cr_assert_eq(fx_sub_ex(r, "$share/g+/t", 1, 0, 0, &existed), SL_ETOPIC);
    cr_assert_eq(map_count(r->subs), 0);
    cr_assert_eq(map_count(fx.b->groups), 0);
    cr_assert_eq(trie_count(fx.b->subs), 0);
    fx_check_index();
}

Test(subs, clear_removes_everything_of_one_subscriber)
{
    subr_t *a = fx_subr("a", false, NULL);
    subr_t *b = fx_subr("b", false, NULL);
    fx_sub(a, "x/y", 1, 0, 0);
    fx_sub(a, "x/#", 1, 0, 0);
    fx_sub(a, "$share/g/x/y", 1, 0, 0);
    fx_sub(a, "$share/solo/z", 1, 0, 0);
    fx_sub(b, "x/y", 0, 0, 0);
    fx_sub(b, "$share/g/x/y", 0, 0, 0);
    fx_check_index();
    cr_assert_eq(trie_count(fx.b->subs), 5);

    subs_clear(fx.b, a);
    fx_check_index();
    cr_assert_eq(map_count(a->subs), 0);
    cr_assert_null(group_of("$share/solo/z"), "a was its only member");
    group_t *g = group_of("$share/g/x/y");
    cr_assert_not_null(g);
    cr_assert_eq(g->n, 1);
    cr_assert_eq(g->members[0].r, b);
    cr_assert_eq(trie_count(fx.b->subs), 2);
    cr_assert_null(trie_get(fx.b->subs, "x/#", 3, (uintptr_t)a));

    /* The subscriber can subscribe again afterwards. */
    fx_sub(a, "x/#", 2, 0, 0);
    fx_check_index();
    cr_assert_eq(trie_count(fx.b->subs), 3);
}

Test(subs, online_sink_is_opaque)
{
    stub_sink_t k = {"k", true, 0};
    subr_t *r = fx_subr("c1", true, NULL);
    cr_assert_null(r->online);
    subs_set_online(fx.b, r, &k);
    cr_assert_eq(r->online, &k);
    cr_assert_eq(k.online_calls, 0, "the index never asks the sink");
    fx_sub(r, "a", 1, 0, 0);
    subs_set_online(fx.b, r, NULL);
    cr_assert_null(r->online);
    cr_assert_eq(map_count(r->subs), 1, "subscriptions outlive the sink");
    fx_check_index();
}

Test(subs, subr_references)
{
    subr_t *r = subr_new("c9", 2, false);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->cid, "c9");
    cr_assert_eq(r->clen, 2);
    cr_assert_eq(r->refs, 1);
    subr_ref(r);
    subr_t *p = r;
    subr_unref(&p);
    cr_assert_null(p);
    cr_assert_eq(r->refs, 1);
    subr_unref(&r);
    cr_assert_null(r);
}

/*
 * Random subscribes, re-subscribes, unsubscribes and clears by a few
 * subscribers over a small set of filters (plain and shared), checked
 * against a model of who holds what after every step.
 */
Test(subs, random_changes_keep_index_consistent)
{
    static const char *filters[] = {
        "a",          "a/b",          "a/+",           "a/#",
        "#",          "+/b",          "$share/g/a/#",  "$share/g/a/b",
        "$share/h/#", "$share/h/a/+", "$SYS/#",        "+/+/+",
    };
    enum { NF = sizeof(filters) / sizeof(filters[0]), NR = 6 };
    subr_t *r[NR];
    bool held[NR][NF] = {{false}};
    uint8_t qos[NR][NF] = {{0}};
    for (int i = 0; i < NR; i++) {
        char cid[8];
        snprintf(cid, sizeof(cid), "r%d", i);
        r[i] = fx_subr(cid, i % 2, NULL);
    }
    srand(12345);
    for (int step = 0; step < 2000; step++) {
        int i = rand() % NR, f = rand() % NF, op = rand() % 10;
        const char *flt = filters[f];
        size_t flen = strlen(flt);
        if (op < 6) {
            bool existed = false;
            uint8_t q = (uint8_t)(rand() % 3);
            cr_assert_eq(fx_sub_ex(r[i], flt, q, 0, (uint32_t)step, &existed),
                         SL_OK);
            cr_assert_eq(existed, held[i][f], "step %d", step);
            held[i][f] = true;
            qos[i][f] = q;
        } else if (op < 9) {
            int rc = subs_remove(fx.b, r[i], flt, flen);
            cr_assert_eq(rc, held[i][f] ? SL_OK : SL_ENOTFOUND, "step %d",
                         step);
            held[i][f] = false;
        } else {
            subs_clear(fx.b, r[i]);
            memset(held[i], 0, sizeof(held[i]));
        }
        if (step % 16 == 0 || op == 9)
            fx_check_index();
    }
    fx_check_index();
    size_t plain = 0;
    for (int i = 0; i < NR; i++) {
        size_t n = 0;
        for (int f = 0; f < NF; f++)
            n += held[i][f];
        cr_assert_eq(map_count(r[i]->subs), n);
        for (int f = 0; f < NF; f++) {
            const sub_t *s = sub_of(r[i], filters[f]);
            cr_assert_eq(s != NULL, held[i][f]);
            if (s)
                cr_assert_eq(s->qos, qos[i][f]);
            if (held[i][f] && strncmp(filters[f], "$share/", 7) != 0)
                plain++;
        }
    }
    cr_assert_eq(trie_count(fx.b->subs), plain + map_count(fx.b->groups));
}
