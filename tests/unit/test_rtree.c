/*
 * test_rtree.c - the retained-message tree: put/get/del, matching with
 * wildcards and the $-rules, against topic_matches() over random names
 * and filters, and depth.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/topic.h"

static void count_visit(void *ctx, void *value)
{
    (*(size_t *)ctx)++;
    (void)value;
}

static size_t matches(rtree_t *t, const char *filter)
{
    size_t n = 0;
    cr_assert_eq(rtree_match(t, filter, strlen(filter), count_visit, &n),
                 SL_OK);
    return n;
}

static void put(rtree_t *t, const char *name, void *v)
{
    void *old;
    cr_assert_eq(rtree_put(t, name, strlen(name), v, &old), SL_OK);
}

Test(rtree, put_get_replace_delete)
{
    rtree_t *t = rtree_new();
    void *old = (void *)1;
    cr_assert_eq(rtree_put(t, "a/b", 3, (void *)10, &old), SL_OK);
    cr_assert_null(old);
    cr_assert_eq(rtree_get(t, "a/b", 3), (void *)10);
    cr_assert_null(rtree_get(t, "a", 1), "an inner level holds no value");
    cr_assert_eq(rtree_put(t, "a/b", 3, (void *)11, &old), SL_OK);
    cr_assert_eq(old, (void *)10);
    cr_assert_eq(rtree_count(t), 1);
    put(t, "a", (void *)12);
    cr_assert_eq(rtree_count(t), 2);
    cr_assert_eq(rtree_del(t, "a/b", 3), (void *)11);
    cr_assert_null(rtree_del(t, "a/b", 3));
    cr_assert_eq(rtree_get(t, "a", 1), (void *)12, "the parent stays");
    cr_assert_eq(rtree_del(t, "a", 1), (void *)12);
    cr_assert_eq(rtree_count(t), 0);
    cr_assert_eq(matches(t, "#"), 0);
    rtree_free(t, NULL);
}

Test(rtree, wildcards_and_dollar_rules)
{
    rtree_t *t = rtree_new();
    const char *names[] = {"a", "a/b", "a/b/c", "a/c", "/", "a//b",
                           "$SYS/x", "$SYS", "b/$x"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        put(t, names[i], (void *)(i + 1));
    cr_assert_eq(matches(t, "#"), 7, "all but the two $ names");
    cr_assert_eq(matches(t, "a/#"), 5, "a itself and everything under");
    cr_assert_eq(matches(t, "a/+"), 2);
    cr_assert_eq(matches(t, "a/+/c"), 1);
    cr_assert_eq(matches(t, "+"), 1, "only a; not $SYS");
    cr_assert_eq(matches(t, "+/+"), 4, "a/b a/c / b/$x");
    cr_assert_eq(matches(t, "a/+/b"), 1, "the empty level");
    cr_assert_eq(matches(t, "$SYS/#"), 2);
    cr_assert_eq(matches(t, "+/x"), 0);
    cr_assert_eq(matches(t, "b/+"), 1, "$ only matters at the first level");
    cr_assert_eq(matches(t, "a/b"), 1);
    cr_assert_eq(matches(t, "a/b/c/d"), 0);
    rtree_free(t, NULL);
}

/* Random names and filters over a small alphabet: the tree visits exactly
 * the names topic_matches() accepts. */
Test(rtree, random_against_topic_matches)
{
    enum { NAMES = 400, FILTERS = 400 };
    const char *lv[] = {"a", "b", "", "$s", "c"};
    static char names[NAMES][32];
    unsigned seed = 20261125;
    rtree_t *t = rtree_new();
    size_t stored = 0;
    for (int i = 0; i < NAMES; i++) {
        char *p = names[i];
        seed = seed * 1103515245u + 12345u;
        int depth = 1 + (int)((seed >> 16) % 4);
        for (int d = 0; d < depth; d++) {
            seed = seed * 1103515245u + 12345u;
            p += sprintf(p, "%s%s", d ? "/" : "", lv[(seed >> 16) % 5]);
        }
        if (topic_name_check(names[i], strlen(names[i]), 0) != SL_OK) {
            names[i][0] = '\0';
            continue;
        }
        void *old;
        cr_assert_eq(rtree_put(t, names[i], strlen(names[i]), names[i], &old),
                     SL_OK);
        stored += old == NULL;
    }
    cr_assert_eq(rtree_count(t), stored);
    const char *fl[] = {"a", "b", "", "+", "#", "$s"};
    for (int i = 0; i < FILTERS; i++) {
        char f[40], *p = f;
        seed = seed * 1103515245u + 12345u;
        int depth = 1 + (int)((seed >> 16) % 4);
        for (int d = 0; d < depth; d++) {
            seed = seed * 1103515245u + 12345u;
            const char *l = fl[(seed >> 16) % 6];
            p += sprintf(p, "%s%s", d ? "/" : "", l);
            if (l[0] == '#')
                break;
        }
        if (topic_filter_check(f, strlen(f), 0) != SL_OK)
            continue;
        size_t want = 0;
        for (int k = 0; k < NAMES; k++) {
            bool dup = false;
            for (int j = 0; j < k && !dup; j++)
                dup = !strcmp(names[j], names[k]);
            if (names[k][0] && !dup &&
                topic_matches(f, strlen(f), names[k], strlen(names[k])))
                want++;
        }
        cr_assert_eq(matches(t, f), want, "filter '%s'", f);
    }
    for (int i = 0; i < NAMES; i++)
        if (names[i][0])
            rtree_del(t, names[i], strlen(names[i]));
    cr_assert_eq(rtree_count(t), 0);
    cr_assert_eq(matches(t, "#"), 0);
    rtree_free(t, NULL);
}

static void free_counted(void *v)
{
    (*(int *)v)++;
}

Test(rtree, deep_names_and_free)
{
    enum { DEPTH = 20000 };
    size_t len = 2 * DEPTH - 1;
    char *s = malloc(len + 1);
    for (size_t i = 0; i < DEPTH; i++) {
        s[2 * i] = 'x';
        if (i + 1 < DEPTH)
            s[2 * i + 1] = '/';
    }
    s[len] = '\0';
    rtree_t *t = rtree_new();
    int freed = 0;
    void *old;
    cr_assert_eq(rtree_put(t, s, len, &freed, &old), SL_OK);
    cr_assert_eq(rtree_put(t, "x", 1, &freed, &old), SL_OK);
    size_t n = 0;
    cr_assert_eq(rtree_match(t, "#", 1, count_visit, &n), SL_OK);
    cr_assert_eq(n, 2);
    n = 0;
    cr_assert_eq(rtree_match(t, s, len, count_visit, &n), SL_OK);
    cr_assert_eq(n, 1);
    rtree_free(t, free_counted);
    cr_assert_eq(freed, 2, "free_value once per stored name");
    free(s);
}
