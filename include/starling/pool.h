/*
 * pool.h - free lists for objects allocated and freed once per message.
 *
 * The node is one thread, so a pool is a plain singly linked list of freed
 * blocks of one size: pool_get() pops one (or mallocs when the list is
 * empty), pool_put() pushes it back (or frees it once `max_free` blocks are
 * cached). In steady state a message costs no malloc/free for the objects
 * drawn from pools; after a burst, at most `max_free` blocks per pool stay
 * cached.
 *
 * Built with AddressSanitizer, pools keep nothing (every put frees), so a
 * use after free of a pooled object is still caught; POOL_REUSES says which.
 */
#ifndef STARLING_POOL_H
#define STARLING_POOL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_REUSES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_REUSES 0
#endif
#endif
#ifndef POOL_REUSES
#define POOL_REUSES 1
#endif

typedef struct pool {
    size_t size;                 /* block size (>= sizeof(void *)) */
    uint32_t max_free;           /* blocks kept for reuse at most */
    uint32_t n_free;
    void *free;                  /* freed blocks, linked through their start */
    uint64_t reused, allocated;  /* counters for tests and metrics */
} pool_t;

#define POOL_INIT(sz, max)                                                    \
    {.size = (sz) < sizeof(void *) ? sizeof(void *) : (sz), .max_free = (max)}

/* A block of p->size bytes (uninitialised), NULL when out of memory. */
void *pool_get(pool_t *p);
/* A zeroed block. */
void *pool_zget(pool_t *p);
/* Give a block from pool_get() back; NULL is ignored. */
void pool_put(pool_t *p, void *block);
/* Free every cached block. */
void pool_drain(pool_t *p);

#endif
