/*
 * subs.c - subscribers (subr_t) and their entries in the broker's trie.
 *
 * The trie maps a filter to (subr_t*, sub_t*) pairs; each subr_t keeps the
 * same subscriptions in its own map so they can be listed and removed when
 * the session ends. Both views change together, here only.
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

int subs_add(broker_t *b, subr_t *r, const char *filter, size_t flen,
             const sub_t *sub, bool *existed)
{
    sub_t *copy = malloc(sizeof(*copy));
    void *old = NULL;
    if (!copy)
        return SL_ENOMEM;
    *copy = *sub;
    if (trie_insert(b->subs, filter, flen, (uintptr_t)r, copy, &old) !=
        SL_OK) {
        free(copy);
        return SL_ENOMEM;
    }
    *existed = old != NULL;
    /* The subr's map holds the same sub_t; the trie's value is the owner
     * of nothing: both point to one allocation, freed from the map. */
    void *old2 = NULL;
    if (map_put(r->subs, filter, flen, copy, &old2) != SL_OK) {
        trie_remove(b->subs, filter, flen, (uintptr_t)r, &old);
        free(copy);
        return SL_ENOMEM;
    }
    free(old2);
    return SL_OK;
}

int subs_remove(broker_t *b, subr_t *r, const char *filter, size_t flen)
{
    void *v = NULL;
    if (trie_remove(b->subs, filter, flen, (uintptr_t)r, &v) != SL_OK)
        return SL_ENOTFOUND;
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
        void *tv;
        trie_remove(b->subs, f, flen, (uintptr_t)r, &tv);
    }
    map_free(r->subs, free);
    r->subs = map_new();
    if (!r->subs)
        abort();
}
