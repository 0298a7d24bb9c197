/*
 * hvec.h - hashed vector: a dense array of fixed-size elements with an
 * optional open-addressing index, internal to the topic module.
 *
 * The subscription trie keeps two of these per node: its children (keyed
 * by level string) and its entries (keyed by subscriber key). Most nodes
 * hold one or two elements, some hold 100,000; so:
 *
 *   - elements are stored contiguously (iteration touches only live
 *     elements, no per-element allocation);
 *   - as many elements as fit in HVEC_INLINE bytes live inside the hvec_t
 *     itself (one entry, two child pointers): no allocation at all for the
 *     many nodes with a single child or a single subscriber;
 *   - up to HVEC_SMALL elements of capacity there is no index, lookups
 *     scan the array linearly;
 *   - above it, an index of 2 * cap uint32_t slots (position + 1, 0 =
 *     empty; linear probing, deletion by backward shift, no tombstones)
 *     lives in the same allocation, right after the elements.
 *
 * The vector does not know how to compare elements: callers probe the
 * index themselves (hvec_slots(), hvec_mask()) and give a hash function
 * for the maintenance done here. Capacity doubles when full and halves
 * when a quarter full, so push and delete are O(1) amortized.
 */
#ifndef STARLING_TOPIC_HVEC_H
#define STARLING_TOPIC_HVEC_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#define HVEC_SMALL 8
#define HVEC_INLINE 16

typedef struct hvec {
    union {
        void *block; /* cap elements, then the index when cap > HVEC_SMALL */
        unsigned char buf[HVEC_INLINE]; /* while cap * esize fits */
    } u;
    uint32_t n;
    uint32_t cap;
} hvec_t;

/* Hash of one element, the same value its lookups probe with. */
typedef uint32_t (*hvec_hash_fn)(const void *elem);

static inline bool hvec_is_inline(const hvec_t *v, size_t esize)
{
    return (size_t)v->cap * esize <= HVEC_INLINE;
}

/* The elements: v->n of them, contiguous. */
static inline void *hvec_base(const hvec_t *v, size_t esize)
{
    return hvec_is_inline(v, esize) ? (void *)v->u.buf : v->u.block;
}

static inline void *hvec_at(const hvec_t *v, size_t esize, uint32_t i)
{
    return (char *)hvec_base(v, esize) + (size_t)i * esize;
}

/* The index, or NULL while the vector is small (then scan linearly). */
static inline uint32_t *hvec_slots(const hvec_t *v, size_t esize)
{
    if (v->cap <= HVEC_SMALL)
        return NULL;
    return (uint32_t *)((char *)v->u.block + (size_t)v->cap * esize);
}

static inline uint32_t hvec_mask(const hvec_t *v)
{
    return 2 * v->cap - 1;
}

/* Append a copy of elem. SL_OK or SL_ENOMEM (then v is unchanged). */
int hvec_push(hvec_t *v, size_t esize, const void *elem, hvec_hash_fn hash);

/* Remove the element at pos; the last element takes its place. */
void hvec_del(hvec_t *v, size_t esize, uint32_t pos, hvec_hash_fn hash);

/* Index slot that holds pos (h is the element's hash). Indexed only. */
uint32_t hvec_slot_of(const hvec_t *v, size_t esize, uint32_t h,
                      uint32_t pos);

/* Free the storage (the elements themselves are the caller's). */
void hvec_fini(hvec_t *v, size_t esize);

#endif
