/*
 * hvec.c - hashed vector (see hvec.h): growth, shrinking and index upkeep.
 */
#include "hvec.h"

#include <stdlib.h>
#include <string.h>

#include "starling/err.h"

/* Largest capacity: 2 * cap index slots must fit a uint32_t. */
#define HVEC_MAX_CAP (1u << 30)

static void index_add(uint32_t *slots, uint32_t mask, uint32_t h,
                      uint32_t pos)
{
    uint32_t i = h & mask;

    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = pos + 1;
}

/* Empty slot i and shift back the elements of its probe run that may move
 * (their home lies cyclically at or before i), so no tombstones remain. */
static void index_remove(const hvec_t *v, size_t esize, uint32_t i,
                         hvec_hash_fn hash)
{
    uint32_t *slots = hvec_slots(v, esize);
    uint32_t mask = hvec_mask(v);
    uint32_t j = i;

    for (;;) {
        j = (j + 1) & mask;
        if (!slots[j])
            break;
        uint32_t home = hash(hvec_at(v, esize, slots[j] - 1)) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i] = 0;
}

static void index_build(const hvec_t *v, size_t esize, hvec_hash_fn hash)
{
    uint32_t *slots = hvec_slots(v, esize);

    if (!slots)
        return;
    memset(slots, 0, (size_t)2 * v->cap * sizeof *slots);
    for (uint32_t i = 0; i < v->n; i++)
        index_add(slots, hvec_mask(v), hash(hvec_at(v, esize, i)), i);
}

/* Move to capacity cap, keeping elements [0, n) (n <= cap) and
 * rebuilding the index. On failure v is untouched. */
static int resize(hvec_t *v, size_t esize, uint32_t cap, hvec_hash_fn hash)
{
    size_t bytes = (size_t)cap * esize;
    bool was_inline = hvec_is_inline(v, esize);
    void *block;

    if (bytes <= HVEC_INLINE) {
        if (!was_inline) {
            block = v->u.block;
            memcpy(v->u.buf, block, (size_t)v->n * esize);
            free(block);
        }
        v->cap = cap;
        return SL_OK;
    }
    if (cap > HVEC_SMALL)
        bytes += (size_t)2 * cap * sizeof(uint32_t);
    block = was_inline ? malloc(bytes) : realloc(v->u.block, bytes);
    if (!block)
        return SL_ENOMEM;
    if (was_inline)
        memcpy(block, v->u.buf, (size_t)v->n * esize);
    v->u.block = block;
    v->cap = cap;
    index_build(v, esize, hash);
    return SL_OK;
}

/* Capacity of a vector that has just become non-empty. */
static uint32_t first_cap(size_t esize)
{
    return esize <= HVEC_INLINE ? (uint32_t)(HVEC_INLINE / esize) : 1;
}

int hvec_push(hvec_t *v, size_t esize, const void *elem, hvec_hash_fn hash)
{
    uint32_t *slots;

    if (v->n == v->cap) {
        if (v->cap >= HVEC_MAX_CAP)
            return SL_ENOMEM;
        if (resize(v, esize, v->cap ? 2 * v->cap : first_cap(esize),
                   hash) != SL_OK)
            return SL_ENOMEM;
    }
    memcpy(hvec_at(v, esize, v->n), elem, esize);
    slots = hvec_slots(v, esize);
    if (slots)
        index_add(slots, hvec_mask(v), hash(elem), v->n);
    v->n++;
    return SL_OK;
}

uint32_t hvec_slot_of(const hvec_t *v, size_t esize, uint32_t h,
                      uint32_t pos)
{
    const uint32_t *slots = hvec_slots(v, esize);
    uint32_t mask = hvec_mask(v);
    uint32_t i = h & mask;

    while (slots[i] != pos + 1)
        i = (i + 1) & mask;
    return i;
}

void hvec_del(hvec_t *v, size_t esize, uint32_t pos, hvec_hash_fn hash)
{
    uint32_t last = v->n - 1;
    uint32_t *slots = hvec_slots(v, esize);

    if (slots) {
        uint32_t h = hash(hvec_at(v, esize, pos));

        index_remove(v, esize, hvec_slot_of(v, esize, h, pos), hash);
        if (pos != last) {
            h = hash(hvec_at(v, esize, last));
            slots[hvec_slot_of(v, esize, h, last)] = pos + 1;
        }
    }
    if (pos != last)
        memcpy(hvec_at(v, esize, pos), hvec_at(v, esize, last), esize);
    v->n--;
    if (v->n == 0)
        hvec_fini(v, esize);
    else if (v->n <= v->cap / 4 && v->cap / 2 >= first_cap(esize))
        (void)resize(v, esize, v->cap / 2, hash); /* failure: keep it big */
}

void hvec_fini(hvec_t *v, size_t esize)
{
    if (!hvec_is_inline(v, esize))
        free(v->u.block);
    v->u.block = NULL;
    v->n = 0;
    v->cap = 0;
}
