/*
 * pool.c - free lists of fixed-size blocks (see pool.h).
 */
#include "starling/pool.h"

#include <stdlib.h>
#include <string.h>

void *pool_get(pool_t *p)
{
    void *b = p->free;
    if (b) {
        memcpy(&p->free, b, sizeof(void *));
        p->n_free--;
        p->reused++;
        return b;
    }
    p->allocated++;
    return malloc(p->size);
}

void *pool_zget(pool_t *p)
{
    void *b = pool_get(p);
    if (b)
        memset(b, 0, p->size);
    return b;
}

void pool_put(pool_t *p, void *b)
{
    if (!b)
        return;
    if (!POOL_REUSES || p->n_free >= p->max_free) {
        free(b);
        return;
    }
    memcpy(b, &p->free, sizeof(void *));
    p->free = b;
    p->n_free++;
}

void pool_drain(pool_t *p)
{
    while (p->free) {
        void *b = p->free;
        memcpy(&p->free, b, sizeof(void *));
        free(b);
    }
    p->n_free = 0;
}
