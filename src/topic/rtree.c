/*
 * rtree.c - the retained-message tree (see topic.h).
 *
 * A node per topic level; its children are a string-keyed map (created
 * with the first child) from level to node. A node without a value and
 * without children is removed at once, so the tree holds only the paths of
 * stored names. Matching and freeing use explicit stacks: a filter or a
 * name of 32,000 levels cannot exhaust the C stack.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/map.h"
#include "starling/topic.h"

typedef struct rnode {
    struct rnode *parent;
    map_t *kids;                 /* level -> struct rnode *; NULL if none */
    void *value;
    uint32_t len;
    char label[];
} rnode_t;

struct rtree {
    size_t count;
    rnode_t root;                /* label "" (never read; last: its label[]
                                    is a flexible array) */
};

rtree_t *rtree_new(void)
{
    return calloc(1, sizeof(rtree_t));
}

/* The next level of s at *pos: its start and length; *pos moves past the
 * separator. Call while *pos <= len (a trailing '/' yields an empty level). */
static const char *next_level(const char *s, size_t len, size_t *pos,
                              size_t *llen)
{
    const char *p = s + *pos;
    const char *slash = memchr(p, '/', len - *pos);
    *llen = slash ? (size_t)(slash - p) : len - *pos;
    *pos += *llen + 1;
    return p;
}

static rnode_t *find(const rtree_t *t, const char *name, size_t len)
{
    const rnode_t *n = &t->root;
    size_t pos = 0, llen;
    while (n && pos <= len) {
        const char *l = next_level(name, len, &pos, &llen);
        n = n->kids ? map_get(n->kids, l, llen) : NULL;
    }
    return (rnode_t *)n;
}

void *rtree_get(const rtree_t *t, const char *name, size_t len)
{
    rnode_t *n = find(t, name, len);
    return n ? n->value : NULL;
}

size_t rtree_count(const rtree_t *t)
{
    return t->count;
}

/* Remove n and its empty ancestors (not the root). */
static void prune(rnode_t *n)
{
    while (n->parent && !n->value && !(n->kids && map_count(n->kids))) {
        rnode_t *p = n->parent;
        map_del(p->kids, n->label, n->len);
        map_free(n->kids, NULL);
        free(n);
        n = p;
    }
}

int rtree_put(rtree_t *t, const char *name, size_t len, void *value,
              void **old)
{
    rnode_t *n = &t->root;
    size_t pos = 0, llen;
    *old = NULL;
    while (pos <= len) {
        const char *l = next_level(name, len, &pos, &llen);
        rnode_t *k = n->kids ? map_get(n->kids, l, llen) : NULL;
        if (!k) {
            if ((!n->kids && !(n->kids = map_new())) ||
                !(k = calloc(1, sizeof(*k) + llen + 1))) {
                prune(n);
                return SL_ENOMEM;
            }
            k->parent = n;
            k->len = (uint32_t)llen;
            memcpy(k->label, l, llen);
            if (map_put(n->kids, l, llen, k, NULL) != SL_OK) {
                free(k);
                prune(n);
                return SL_ENOMEM;
            }
        }
        n = k;
    }
    *old = n->value;
    if (!n->value)
        t->count++;
    n->value = value;
    return SL_OK;
}

void *rtree_del(rtree_t *t, const char *name, size_t len)
{
    rnode_t *n = find(t, name, len);
    if (!n || !n->value)
        return NULL;
    void *v = n->value;
    n->value = NULL;
    t->count--;
    prune(n);
    return v;
}

/* ---- stacks ------------------------------------------------------------- */

typedef struct frame {
    const rnode_t *n;
    size_t pos;                  /* offset of the next filter level */
} frame_t;

typedef struct stack {
    frame_t *f;
    size_t n, cap;
} stack_t;

static bool push(stack_t *s, const rnode_t *n, size_t pos)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 32;
        frame_t *nf = realloc(s->f, nc * sizeof(*nf));
        if (!nf)
            return false;
        s->f = nf;
        s->cap = nc;
    }
    s->f[s->n++] = (frame_t){n, pos};
    return true;
}

/* Push every child of n, except the '$' ones under the root. */
static bool push_kids(stack_t *s, const rnode_t *n, size_t pos, bool root)
{
    size_t cur = 0;
    void *v;
    if (!n->kids)
        return true;
    while (map_next(n->kids, &cur, NULL, NULL, &v)) {
        const rnode_t *k = v;
        if (root && k->len && k->label[0] == '$')
            continue;
        if (!push(s, k, pos))
            return false;
    }
    return true;
}

/* Every value at or under n ('#'). */
static bool visit_subtree(const rnode_t *n, bool root, rtree_visit_fn fn,
                          void *ctx, stack_t *s)
{
    size_t base = s->n;
    if (!push_kids(s, n, 0, root))
        return false;
    if (!root && n->value)
        fn(ctx, n->value);
    while (s->n > base) {
        const rnode_t *k = s->f[--s->n].n;
        if (k->value)
            fn(ctx, k->value);
        if (!push_kids(s, k, 0, false))
            return false;
    }
    return true;
}

int rtree_match(const rtree_t *t, const char *filter, size_t flen,
                rtree_visit_fn fn, void *ctx)
{
    stack_t s = {0}, sub = {0};
    bool ok = push(&s, &t->root, 0);
    while (ok && s.n) {
        frame_t f = s.f[--s.n];
        if (f.pos > flen) {
            if (f.n->value)
                fn(ctx, f.n->value);
            continue;
        }
        bool root = f.n == &t->root;
        size_t pos = f.pos, llen;
        const char *l = next_level(filter, flen, &pos, &llen);
        if (llen == 1 && l[0] == '#')
            ok = visit_subtree(f.n, root, fn, ctx, &sub);
        else if (llen == 1 && l[0] == '+')
            ok = push_kids(&s, f.n, pos, root);
        else if (f.n->kids) {
            const rnode_t *k = map_get(f.n->kids, l, llen);
            if (k)
                ok = push(&s, k, pos);
        }
    }
    free(s.f);
    free(sub.f);
    return ok ? SL_OK : SL_ENOMEM;
}

void rtree_free(rtree_t *t, void (*free_value)(void *value))
{
    if (!t)
        return;
    /* Every node once, through an explicit stack (children are pushed
     * before their parent's map goes). */
    stack_t s = {0};
    push_kids(&s, &t->root, 0, false);
    map_free(t->root.kids, NULL);
    while (s.n) {
        rnode_t *k = (rnode_t *)s.f[--s.n].n;
        push_kids(&s, k, 0, false);
        if (k->value && free_value)
            free_value(k->value);
        map_free(k->kids, NULL);
        free(k);
    }
    free(s.f);
    free(t);
}
