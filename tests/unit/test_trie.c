/*
 * test_trie.c - the subscription trie (src/topic/trie.c): matching agrees
 * with topic_matches(), entries, pruning, wide nodes and deep topics.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/topic.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- helpers ------------------------------------------------------------ */

/* Records visits: per key a counter, plus the filters seen. */
struct rec {
    size_t visits;
    unsigned *hits; /* indexed by key, nkeys long */
    size_t nkeys;
    char filters[16][32];
    size_t nfilters;
    bool filter_value_ok; /* value == filter string's first char seen */
};

static void rec_visit(void *ctx, const char *filter, size_t flen,
                      uintptr_t key, void *value)
{
    struct rec *r = ctx;

    r->visits++;
    if (key < r->nkeys)
        r->hits[key]++;
    if (r->nfilters < 16 && flen < 32) {
        memcpy(r->filters[r->nfilters], filter, flen);
        r->filters[r->nfilters][flen] = '\0';
        r->nfilters++;
    }
    (void)value;
}

static void rec_init(struct rec *r, size_t nkeys)
{
    memset(r, 0, sizeof *r);
    r->nkeys = nkeys;
    r->hits = calloc(nkeys ? nkeys : 1, sizeof *r->hits);
    cr_assert_not_null(r->hits);
}

static void rec_fini(struct rec *r)
{
    free(r->hits);
}

static bool rec_has_filter(const struct rec *r, const char *f)
{
    for (size_t i = 0; i < r->nfilters; i++) {
        if (strcmp(r->filters[i], f) == 0)
            return true;
    }
    return false;
}

static void ins(trie_t *t, const char *f, uintptr_t key, void *value)
{
    void *old = (void *)1;

    cr_assert_eq(trie_insert(t, f, strlen(f), key, value, &old), SL_OK,
                 "insert '%s'", f);
    cr_assert_null(old, "insert '%s' is new", f);
}

static size_t match_count(const trie_t *t, const char *topic)
{
    struct rec r;
    size_t n;

    rec_init(&r, 0);
    trie_match(t, topic, strlen(topic), rec_visit, &r);
    n = r.visits;
    rec_fini(&r);
    return n;
}

/* ---- wildcard matrix ---------------------------------------------------- */

/* All level sequences of 1..maxdepth levels over an alphabet, joined. */
static size_t gen(const char *const *alpha, size_t nalpha, size_t maxdepth,
                  char (*out)[64], size_t cap)
{
    size_t n = 0, idx[8];

    for (size_t depth = 1; depth <= maxdepth; depth++) {
        memset(idx, 0, sizeof idx);
        for (;;) {
            char *s = out[n];
            s[0] = '\0';
            for (size_t l = 0; l < depth; l++) {
                if (l > 0)
                    strcat(s, "/");
                strcat(s, alpha[idx[l]]);
            }
            cr_assert_lt(n, cap);
            n++;
            size_t l = depth;
            while (l > 0 && ++idx[l - 1] == nalpha)
                idx[--l] = 0;
            if (l == 0)
                break;
        }
    }
    return n;
}

static const char *const filter_alpha[] = {"a", "b", "", "+", "#", "$SYS",
                                           "$"};
static const char *const topic_alpha[] = {"a", "b", "", "$SYS", "$", "ab"};

Test(trie, matrix_agrees_with_topic_matches)
{
    static char filters[4096][64], topics[4096][64];
    size_t nf = gen(filter_alpha, 7, 3, filters, 4096);
    size_t nt = gen(topic_alpha, 6, 4, topics, 4096);
    trie_t *t = trie_new();
    size_t nvalid = 0, total = 0;
    struct rec r;

    cr_assert_not_null(t);
    for (size_t i = 0; i < nf; i++) {
        if (topic_filter_check(filters[i], strlen(filters[i]), 0) != SL_OK)
            continue;
        ins(t, filters[i], i, filters[i]);
        nvalid++;
    }
    cr_assert_gt(nvalid, 200);
    cr_assert_eq(trie_filter_count(t), nvalid);
    cr_assert_eq(trie_count(t), nvalid);
    rec_init(&r, nf);
    for (size_t j = 0; j < nt; j++) {
        const char *tp = topics[j];
        if (topic_name_check(tp, strlen(tp), 0) != SL_OK)
            continue;
        memset(r.hits, 0, nf * sizeof *r.hits);
        r.visits = 0;
        trie_match(t, tp, strlen(tp), rec_visit, &r);
        for (size_t i = 0; i < nf; i++) {
            const char *f = filters[i];
            unsigned want = 0;
            if (topic_filter_check(f, strlen(f), 0) == SL_OK)
                want = topic_matches(f, strlen(f), tp, strlen(tp));
            cr_assert_eq(r.hits[i], want, "filter '%s' topic '%s': %u vs %u",
                         f, tp, r.hits[i], want);
        }
        total += r.visits;
    }
    cr_expect_gt(total, 1000);
    rec_fini(&r);
    trie_free(t, NULL);
}

/* Explicit expectations, independent of topic_matches(). */
Test(trie, known_matches)
{
    trie_t *t = trie_new();

    ins(t, "#", 1, NULL);
    ins(t, "a/#", 2, NULL);
    ins(t, "+", 3, NULL);
    ins(t, "+/+", 4, NULL);
    ins(t, "$SYS/#", 5, NULL);
    ins(t, "a/b", 6, NULL);
    ins(t, "/", 7, NULL);
    cr_expect_eq(match_count(t, "a"), 3);      /* # a/# + */
    cr_expect_eq(match_count(t, "a/b"), 4);    /* # a/# +/+ a/b */
    cr_expect_eq(match_count(t, "a/b/c"), 2);  /* # a/# */
    cr_expect_eq(match_count(t, "/"), 3);      /* # +/+ / */
    cr_expect_eq(match_count(t, "$SYS"), 1);   /* $SYS/# */
    cr_expect_eq(match_count(t, "$SYS/x"), 1); /* $SYS/# */
    cr_expect_eq(match_count(t, "$other"), 0);
    cr_expect_eq(match_count(t, "b/"), 2); /* # +/+ */
    trie_free(t, NULL);
}

/* ---- entries ------------------------------------------------------------ */

Test(trie, one_key_many_filters_visited_once_each)
{
    trie_t *t = trie_new();
    const char *fs[] = {"a/b", "a/+", "#", "a/#", "+/b", "+/+", "+/#", "a/b/#"};
    struct rec r;

    for (size_t i = 0; i < 8; i++)
        ins(t, fs[i], 7, (void *)fs[i]);
    ins(t, "a/c", 7, NULL);
    ins(t, "a/b", 8, NULL);
    rec_init(&r, 10);
    trie_match(t, S("a/b"), rec_visit, &r);
    cr_expect_eq(r.hits[7], 8);
    cr_expect_eq(r.hits[8], 1);
    cr_expect_eq(r.visits, 9);
    for (size_t i = 0; i < 8; i++)
        cr_expect(rec_has_filter(&r, fs[i]), "filter %s reported", fs[i]);
    cr_expect_not(rec_has_filter(&r, "a/c"));
    rec_fini(&r);
    trie_free(t, NULL);
}

Test(trie, insert_replace_returns_old)
{
    trie_t *t = trie_new();
    int v1, v2;
    void *old = (void *)1;

    cr_assert_eq(trie_insert(t, S("a/b"), 1, &v1, &old), SL_OK);
    cr_expect_null(old);
    cr_assert_eq(trie_insert(t, S("a/b"), 1, &v2, &old), SL_OK);
    cr_expect_eq(old, &v1);
    cr_expect_eq(trie_get(t, S("a/b"), 1), &v2);
    cr_expect_eq(trie_count(t), 1);
    cr_expect_eq(trie_filter_count(t), 1);
    cr_assert_eq(trie_insert(t, S("a/b"), 2, &v1, NULL), SL_OK);
    cr_expect_eq(trie_count(t), 2);
    cr_expect_eq(trie_filter_count(t), 1);
    cr_expect_eq(trie_filter_size(t, S("a/b")), 2);
    trie_free(t, NULL);
}

Test(trie, remove_get_counts)
{
    trie_t *t = trie_new();
    int v[4];
    void *out = (void *)1;

    ins(t, "a/b", 1, &v[0]);
    ins(t, "a/b", 2, &v[1]);
    ins(t, "a", 1, &v[2]);
    ins(t, "a/b/c", 1, &v[3]);
    cr_expect_eq(trie_count(t), 4);
    cr_expect_eq(trie_filter_count(t), 3);
    cr_expect_eq(trie_get(t, S("a"), 1), &v[2]);
    cr_expect_null(trie_get(t, S("a"), 2));
    cr_expect_null(trie_get(t, S("a/b/c/d"), 1));
    cr_expect_null(trie_get(t, S("x"), 1));
    cr_expect_eq(trie_filter_size(t, S("a/b")), 2);
    cr_expect_eq(trie_filter_size(t, S("x")), 0);

    cr_expect_eq(trie_remove(t, S("a"), 2, &out), SL_ENOTFOUND);
    cr_expect_null(out);
    cr_expect_eq(trie_remove(t, S("zz"), 1, &out), SL_ENOTFOUND);
    cr_expect_eq(trie_remove(t, S("a/b/c/d"), 1, &out), SL_ENOTFOUND);

    cr_expect_eq(trie_remove(t, S("a"), 1, &out), SL_OK);
    cr_expect_eq(out, &v[2]);
    cr_expect_eq(trie_count(t), 3);
    cr_expect_eq(trie_filter_count(t), 2);
    cr_expect_null(trie_get(t, S("a"), 1));
    /* the node "a" stays: it leads to "a/b" */
    cr_expect_eq(trie_get(t, S("a/b"), 2), &v[1]);
    cr_expect_eq(trie_remove(t, S("a"), 1, &out), SL_ENOTFOUND);

    cr_expect_eq(trie_remove(t, S("a/b"), 1, &out), SL_OK);
    cr_expect_eq(out, &v[0]);
    cr_expect_eq(trie_filter_count(t), 2);
    cr_expect_eq(match_count(t, "a/b"), 1);
    trie_free(t, NULL);
}

Test(trie, key_zero_and_max)
{
    trie_t *t = trie_new();
    int a, b;

    ins(t, "x", 0, &a);
    ins(t, "x", UINTPTR_MAX, &b);
    cr_expect_eq(trie_get(t, S("x"), 0), &a);
    cr_expect_eq(trie_get(t, S("x"), UINTPTR_MAX), &b);
    cr_expect_eq(trie_count(t), 2);
    trie_free(t, NULL);
}

static void count_visit(void *ctx, const char *filter, size_t flen,
                        uintptr_t key, void *value)
{
    (*(size_t *)ctx)++;
}

Test(trie, prune_to_empty)
{
    trie_t *t = trie_new();
    const char *fs[] = {"a/b/c", "a/b", "a/+/c", "#", "a/#", "/", "//x",
                        "$SYS/#", "a/b/c/d/e/f"};
    size_t n = sizeof fs / sizeof fs[0], visited = 0;
    void *out;

    for (size_t i = 0; i < n; i++)
        for (uintptr_t k = 0; k < 20; k++)
            ins(t, fs[i], k, NULL);
    cr_assert_eq(trie_count(t), n * 20);
    cr_assert_gt(trie_node_count(t), 10);
    trie_foreach(t, count_visit, &visited);
    cr_expect_eq(visited, n * 20);
    for (size_t i = 0; i < n; i++)
        for (uintptr_t k = 0; k < 20; k++)
            cr_assert_eq(trie_remove(t, fs[i], strlen(fs[i]), k, &out),
                         SL_OK);
    cr_expect_eq(trie_count(t), 0);
    cr_expect_eq(trie_filter_count(t), 0);
    cr_expect_eq(trie_node_count(t), 1, "only the root is left");
    visited = 0;
    trie_foreach(t, count_visit, &visited);
    cr_expect_eq(visited, 0);
    cr_expect_eq(match_count(t, "a/b/c"), 0);
    /* usable again */
    ins(t, "a/b", 1, NULL);
    cr_expect_eq(match_count(t, "a/b"), 1);
    cr_expect_eq(trie_node_count(t), 3);
    trie_free(t, NULL);
}

Test(trie, prune_keeps_shared_prefix)
{
    trie_t *t = trie_new();
    void *out;

    ins(t, "a/b/c", 1, NULL);
    ins(t, "a/x", 1, NULL);
    cr_expect_eq(trie_node_count(t), 5); /* root a b c x */
    cr_assert_eq(trie_remove(t, S("a/b/c"), 1, &out), SL_OK);
    cr_expect_eq(trie_node_count(t), 3); /* root a x */
    cr_expect_eq(match_count(t, "a/x"), 1);
    trie_free(t, NULL);
}

/* ---- foreach and free --------------------------------------------------- */

static void collect_visit(void *ctx, const char *filter, size_t flen,
                          uintptr_t key, void *value)
{
    struct rec *r = ctx;

    /* each value is the filter it was inserted under */
    if (flen == strlen(value) && memcmp(filter, value, flen) == 0)
        r->hits[key]++;
    r->visits++;
}

Test(trie, foreach_reports_filters)
{
    trie_t *t = trie_new();
    const char *fs[] = {"a", "a/b", "+/b", "#", "/", "a/b/c/#", "x/y"};
    struct rec r;

    for (size_t i = 0; i < 7; i++)
        ins(t, fs[i], i, (void *)fs[i]);
    rec_init(&r, 7);
    trie_foreach(t, collect_visit, &r);
    cr_expect_eq(r.visits, 7);
    for (size_t i = 0; i < 7; i++)
        cr_expect_eq(r.hits[i], 1, "filter %s once", fs[i]);
    rec_fini(&r);
    trie_free(t, NULL);
}

static size_t freed;

static void free_counted(void *value)
{
    freed++;
    free(value);
}

Test(trie, free_calls_free_value)
{
    trie_t *t = trie_new();

    freed = 0;
    for (uintptr_t k = 0; k < 50; k++) {
        ins(t, "a/b", k, malloc(8));
        ins(t, "a/+/c", k, malloc(8));
        ins(t, "#", k, malloc(8));
    }
    trie_free(t, free_counted);
    cr_expect_eq(freed, 150);
    trie_free(NULL, NULL);
}

/* ---- scale -------------------------------------------------------------- */

#define MANY 100000

Test(trie, many_keys_one_filter)
{
    trie_t *t = trie_new();
    struct rec r;
    void *out;

    for (uintptr_t k = 0; k < MANY; k++)
        cr_assert_eq(trie_insert(t, S("big/+"), k, (void *)(k + 1), NULL),
                     SL_OK);
    cr_assert_eq(trie_count(t), MANY);
    cr_assert_eq(trie_filter_count(t), 1);
    cr_assert_eq(trie_filter_size(t, S("big/+")), MANY);
    for (uintptr_t k = 0; k < MANY; k++)
        cr_assert_eq(trie_get(t, S("big/+"), k), (void *)(k + 1));
    cr_assert_null(trie_get(t, S("big/+"), MANY));

    rec_init(&r, MANY);
    trie_match(t, S("big/x"), rec_visit, &r);
    cr_assert_eq(r.visits, MANY);
    for (uintptr_t k = 0; k < MANY; k++)
        cr_assert_eq(r.hits[k], 1);
    rec_fini(&r);

    /* remove the even keys, check the odd ones are intact */
    for (uintptr_t k = 0; k < MANY; k += 2) {
        cr_assert_eq(trie_remove(t, S("big/+"), k, &out), SL_OK);
        cr_assert_eq(out, (void *)(k + 1));
    }
    cr_assert_eq(trie_count(t), MANY / 2);
    for (uintptr_t k = 0; k < MANY; k++)
        cr_assert_eq(trie_get(t, S("big/+"), k),
                     k % 2 ? (void *)(k + 1) : NULL);
    for (uintptr_t k = 1; k < MANY; k += 2)
        cr_assert_eq(trie_remove(t, S("big/+"), k, &out), SL_OK);
    cr_assert_eq(trie_count(t), 0);
    cr_assert_eq(trie_filter_count(t), 0);
    cr_assert_eq(trie_node_count(t), 1);
    trie_free(t, NULL);
}

/* Many unrelated filters: a match touches only its own path, and each
 * child lookup finds the right one among 100,000 siblings. */
Test(trie, many_filters_one_node)
{
    trie_t *t = trie_new();
    char f[64];
    void *out;

    for (size_t i = 0; i < MANY; i++) {
        int n = snprintf(f, sizeof f, "dev/%zu/temp", i);
        cr_assert_eq(trie_insert(t, f, (size_t)n, i, NULL, NULL), SL_OK);
    }
    cr_assert_eq(trie_filter_count(t), MANY);
    cr_assert_eq(trie_node_count(t), 2 + 2 * MANY);
    for (size_t i = 0; i < MANY; i += 997) {
        snprintf(f, sizeof f, "dev/%zu/temp", i);
        cr_assert_eq(match_count(t, f), 1, "%s", f);
    }
    cr_assert_eq(match_count(t, "dev/x/temp"), 0);
    for (size_t i = 0; i < MANY; i++) {
        int n = snprintf(f, sizeof f, "dev/%zu/temp", i);
        cr_assert_eq(trie_remove(t, f, (size_t)n, i, &out), SL_OK, "%s", f);
    }
    cr_assert_eq(trie_node_count(t), 1);
    trie_free(t, NULL);
}

/* Random inserts and removes against a plain array model. */
Test(trie, random_against_model)
{
    enum { NK = 3000, NF = 4, OPS = 200000 };
    static void *model[NF][NK];
    const char *fs[NF] = {"r/a", "r/+", "#", "r/a/b"};
    trie_t *t = trie_new();
    size_t count = 0;
    unsigned seed = 12345;

    memset(model, 0, sizeof model);
    for (size_t op = 0; op < OPS; op++) {
        seed = seed * 1103515245u + 12345u;
        unsigned f = (seed >> 8) % NF, k = (seed >> 12) % NK;
        bool add = ((seed >> 28) & 3) != 0 || count < 100;
        void *out = NULL;
        if (op > OPS / 2)
            add = ((seed >> 28) & 3) == 0; /* drain */
        if (add) {
            void *v = (void *)(uintptr_t)(op + 1);
            cr_assert_eq(trie_insert(t, fs[f], strlen(fs[f]), k, v, &out),
                         SL_OK);
            cr_assert_eq(out, model[f][k]);
            count += model[f][k] == NULL;
            model[f][k] = v;
        } else {
            int rc = trie_remove(t, fs[f], strlen(fs[f]), k, &out);
            cr_assert_eq(rc, model[f][k] ? SL_OK : SL_ENOTFOUND);
            cr_assert_eq(out, model[f][k]);
            count -= model[f][k] != NULL;
            model[f][k] = NULL;
        }
        cr_assert_eq(trie_count(t), count);
    }
    for (unsigned f = 0; f < NF; f++)
        for (unsigned k = 0; k < NK; k++)
            cr_assert_eq(trie_get(t, fs[f], strlen(fs[f]), k), model[f][k]);
    trie_free(t, NULL);
}

/* ---- depth -------------------------------------------------------------- */

#define DEEP 10000

/* "x/x/.../x" with n levels. */
static char *deep_topic(size_t n, size_t *len)
{
    char *s = malloc(2 * n);

    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = 'x';
        s[2 * i + 1] = '/';
    }
    *len = 2 * n - 1;
    s[*len] = '\0';
    return s;
}

Test(trie, deep_topic_does_not_crash)
{
    trie_t *t = trie_new();
    size_t len;
    char *topic = deep_topic(DEEP, &len);
    struct rec r;

    ins(t, "#", 1, NULL);
    ins(t, "x/#", 2, NULL);
    ins(t, "+/+", 3, NULL);
    ins(t, "x/x/x", 4, NULL);
    ins(t, "+/x/+/#", 5, NULL);
    rec_init(&r, 10);
    trie_match(t, topic, len, rec_visit, &r);
    cr_expect_eq(r.visits, 3); /* #, x/#, +/x/+/# */
    cr_expect_eq(r.hits[1] + r.hits[2] + r.hits[5], 3);
    rec_fini(&r);
    free(topic);
    trie_free(t, NULL);
}

Test(trie, deep_filter_insert_match_remove)
{
    trie_t *t = trie_new();
    size_t len;
    char *deep = deep_topic(DEEP, &len);
    char *plus = malloc(len + 1);
    size_t visited = 0;
    void *out;

    cr_assert_not_null(plus);
    memcpy(plus, deep, len + 1);
    for (size_t i = 0; i < len; i += 2)
        if ((i / 2) % 3 == 0)
            plus[i] = '+';
    cr_assert_eq(trie_insert(t, deep, len, 1, NULL, NULL), SL_OK);
    cr_assert_eq(trie_insert(t, plus, len, 2, NULL, NULL), SL_OK);
    cr_expect_eq(topic_matches(plus, len, deep, len), true);
    cr_expect_eq(match_count(t, deep), 2);
    trie_foreach(t, count_visit, &visited);
    cr_expect_eq(visited, 2);
    cr_assert_eq(trie_remove(t, deep, len, 1, &out), SL_OK);
    cr_expect_eq(match_count(t, deep), 1);
    cr_assert_eq(trie_remove(t, plus, len, 2, &out), SL_OK);
    cr_expect_eq(trie_node_count(t), 1);
    /* and freeing a deep trie */
    cr_assert_eq(trie_insert(t, deep, len, 1, NULL, NULL), SL_OK);
    free(deep);
    free(plus);
    trie_free(t, NULL);
}
