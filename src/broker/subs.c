/*
 * subs.c - subscribers (subr_t), shared groups (group_t) and their entries
 * in the broker's trie.
 *
 * The trie maps a filter to (key, sub_t*) pairs. A plain subscription's key
 * is its subr_t*; a shared subscription "$share/g/f" is one trie entry for
 * filter f whose key is the group_t* tagged with GROUP_TAG, and the group
 * lists its members. Each subr_t keeps all its subscriptions (shared ones
 * under their full "$share/..." name) in its own map, which owns the sub_t;
 * both views change together, here only. Of a session it knows only the
 * opaque sink pointer (subr_t.online, sink.h).
 */
#include "internal.h"

#include "starling/err.h"

#include <stdlib.h>
#include <string.h>

subr_t *subr_new(const char *cid, size_t clen, bool persistent)
{
    subr_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->refs = 1;
    r->persistent = persistent;
    r->cid = malloc(clen + 1);
    r->subs = map_new();
    if (!r->cid || !r->subs) {
        free(r->cid);
        map_free(r->subs, NULL);
        free(r);
        return NULL;
    }
    memcpy(r->cid, cid, clen);
    r->cid[clen] = '\0';
    r->clen = clen;
    return r;
}

void subr_ref(subr_t *r)
{
    r->refs++;
}

void subr_unref(subr_t **pr)
{
    subr_t *r = *pr;
    *pr = NULL;
    if (!r || --r->refs)
        return;
    map_free(r->subs, free);
    free(r->cid);
    free(r);
}

/* ---- shared groups ----------------------------------------------------- */

void group_unref(group_t **pg)
{
    group_t *g = *pg;
    *pg = NULL;
    if (!g || --g->refs)
        return;
    free(g->members);
    free(g->share);
    free(g);
}

static group_t *group_get(broker_t *b, const char *share, size_t slen,
                          const char *filter, size_t flen)
{
    group_t *g = map_get(b->groups, share, slen);
    if (g)
        return g;
    g = calloc(1, sizeof(*g));
    if (!g || !(g->share = malloc(slen + 1))) {
        free(g);
        return NULL;
    }
    memcpy(g->share, share, slen);
    g->share[slen] = '\0';
    g->slen = slen;
    g->filter = g->share + (filter - share);
    g->flen = flen;
    g->refs = 1;
    if (trie_insert(b->subs, g->filter, g->flen, (uintptr_t)g | GROUP_TAG, g,
                    NULL) != SL_OK ||
        map_put(b->groups, share, slen, g, NULL) != SL_OK) {
        void *v;
        trie_remove(b->subs, g->filter, g->flen, (uintptr_t)g | GROUP_TAG, &v);
        group_unref(&g);
        return NULL;
    }
    return g;
}

static member_t *group_member(group_t *g, const subr_t *r)
{
    for (uint32_t i = 0; i < g->n; i++)
        if (g->members[i].r == r)
            return &g->members[i];
    return NULL;
}

static int group_join(group_t *g, subr_t *r, sub_t *sub)
{
    member_t *m = group_member(g, r);
    if (m) {
        m->sub = sub;
        return SL_OK;
    }
    if (g->n == g->cap) {
        uint32_t nc = g->cap ? g->cap * 2 : 4;
        member_t *nm = realloc(g->members, nc * sizeof(*nm));
        if (!nm)
            return SL_ENOMEM;
        g->members = nm;
        g->cap = nc;
    }
    g->members[g->n++] = (member_t){r, sub};
    return SL_OK;
}

/* Remove r from the group; the group goes away with its last member. */
static void group_leave(broker_t *b, group_t *g, const subr_t *r)
{
    member_t *m = group_member(g, r);
    if (m) {
        uint32_t i = (uint32_t)(m - g->members);
        memmove(m, m + 1, (g->n - i - 1) * sizeof(*m));
        g->n--;
        if (g->rr > i)
            g->rr--;
    }
    if (g->n)
        return;
    void *v;
    trie_remove(b->subs, g->filter, g->flen, (uintptr_t)g | GROUP_TAG, &v);
    map_del(b->groups, g->share, g->slen);
    group_unref(&g);
}

/* ---- subscriptions ----------------------------------------------------- */

/* The cluster route of a subscription: its filter ("$share/g/f" whole for
 * a shared one). Counted only while the subscriber is online here. */
static void route_ref(broker_t *b, const subr_t *r, const char *f,
                      size_t flen, int delta)
{
    if (b->cluster && r->online)
        cluster_route_ref(b->cluster, f, flen, delta);
}

void subs_set_online(broker_t *b, subr_t *r, void *sink)
{
    size_t cur = 0;
    const char *f;
    size_t flen;
    void *v;
    if (r->online && !sink) {
        while (map_next(r->subs, &cur, &f, &flen, &v))
            route_ref(b, r, f, flen, -1);
    }
    bool was = r->online != NULL;
    r->online = sink;
    if (!was && sink) {
        cur = 0;
        while (map_next(r->subs, &cur, &f, &flen, &v))
            route_ref(b, r, f, flen, +1);
    }
}

int subs_add(broker_t *b, subr_t *r, const char *filter, size_t flen,
             const sub_t *sub, bool *existed)
{
    const char *gname, *inner;
    size_t glen, ilen;
    sub_t *copy = malloc(sizeof(*copy));
    void *old = NULL;
    if (!copy)
        return SL_ENOMEM;
    *copy = *sub;
    int shared = topic_share_parse(filter, flen, &gname, &glen, &inner, &ilen);
    if (shared < 0) {
        free(copy);
        return SL_ETOPIC;
    }
    if (shared) {
        group_t *g = group_get(b, filter, flen, inner, ilen);
        if (!g || group_join(g, r, copy) != SL_OK) {
            if (g && !g->n)
                group_leave(b, g, r);
            free(copy);
            return SL_ENOMEM;
        }
    } else if (trie_insert(b->subs, filter, flen, (uintptr_t)r, copy, &old) !=
               SL_OK) {
        free(copy);
        return SL_ENOMEM;
    }
    void *prev = NULL;
    if (map_put(r->subs, filter, flen, copy, &prev) != SL_OK) {
        /* Undo: the index must not point at a sub_t nobody owns. */
        if (shared) {
            group_t *g = map_get(b->groups, filter, flen);
            if (g)
                group_leave(b, g, r);
        } else {
            trie_remove(b->subs, filter, flen, (uintptr_t)r, &old);
        }
        free(copy);
        return SL_ENOMEM;
    }
    *existed = prev != NULL;
    free(prev);
    if (!*existed)
        route_ref(b, r, filter, flen, +1);
    return SL_OK;
}

static void unindex(broker_t *b, subr_t *r, const char *filter, size_t flen)
{
    group_t *g = map_get(b->groups, filter, flen);
    if (g && memcmp(filter, "$share/", 7) == 0) {
        group_leave(b, g, r);
        return;
    }
    void *v;
    trie_remove(b->subs, filter, flen, (uintptr_t)r, &v);
}

int subs_remove(broker_t *b, subr_t *r, const char *filter, size_t flen)
{
    sub_t *sub = map_get(r->subs, filter, flen);
    if (!sub)
        return SL_ENOTFOUND;
    unindex(b, r, filter, flen);
    route_ref(b, r, filter, flen, -1);
    free(map_del(r->subs, filter, flen));
    return SL_OK;
}

void subs_clear(broker_t *b, subr_t *r)
{
    size_t cur = 0;
    const char *f;
    size_t flen;
    void *v;
    while (map_next(r->subs, &cur, &f, &flen, &v)) {
        unindex(b, r, f, flen);
        route_ref(b, r, f, flen, -1);
    }
    map_free(r->subs, free);
    r->subs = map_new();
    if (!r->subs)
        abort();
}
