/*
 * map.c - string-keyed open-addressing hash map (see map.h).
 *
 * Deletion uses backward-shift so there are no tombstones; the table grows
 * at 70% load and never shrinks below its initial size.
 */
#include "starling/map.h"
#include "starling/err.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    char *key;       /* NULL = empty */
    size_t klen;
    uint64_t hash;
    void *value;
} slot_t;

struct map {
    slot_t *slots;
    size_t cap;      /* power of two */
    size_t count;
};

uint64_t map_hash(const void *key, size_t len)
{
    /* FNV-1a 64, then a final mix so low bits are well distributed. */
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The slots are allocated at the first insert: many maps (one per
 * subscriber) stay empty for their whole life. */
map_t *map_new(void)
{
    return calloc(1, sizeof(map_t));
}

void map_free(map_t *m, void (*free_value)(void *value))
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key) {
            if (free_value)
                free_value(m->slots[i].value);
            free(m->slots[i].key);
        }
    }
    free(m->slots);
    free(m);
}

static size_t find(const map_t *m, const void *key, size_t klen, uint64_t h,
                   bool *found)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    for (;;) {
        const slot_t *s = &m->slots[i];
        if (!s->key) {
            *found = false;
            return i;
        }
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

void *map_get(const map_t *m, const void *key, size_t klen)
{
    bool found;
    if (!m->count)
        return NULL;
    size_t i = find(m, key, klen, map_hash(key, klen), &found);
    return found ? m->slots[i].value : NULL;
}

static int grow(map_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 8;
    slot_t *ns = calloc(ncap, sizeof(slot_t));
    if (!ns)
        return SL_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        slot_t *s = &m->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return SL_OK;
}

int map_put(map_t *m, const void *key, size_t klen, void *value, void **old)
{
    uint64_t h = map_hash(key, klen);
    bool found;
    if (!m->cap && grow(m) != SL_OK)
        return SL_ENOMEM;
    size_t i = find(m, key, klen, h, &found);
    if (found) {
        if (old)
            *old = m->slots[i].value;
        m->slots[i].value = value;
        return SL_OK;
    }
    if (old)
        *old = NULL;
    if ((m->count + 1) * 10 > m->cap * 7) {
        /* (also the first insert: cap 0) */
        if (grow(m) != SL_OK)
            return SL_ENOMEM;
        i = find(m, key, klen, h, &found);
    }
    char *k = malloc(klen + 1);
    if (!k)
        return SL_ENOMEM;
    memcpy(k, key, klen);
    k[klen] = '\0';
    m->slots[i] = (slot_t){.key = k, .klen = klen, .hash = h, .value = value};
    m->count++;
    return SL_OK;
}

void *map_del(map_t *m, const void *key, size_t klen)
{
    bool found;
    if (!m->count)
        return NULL;
    size_t i = find(m, key, klen, map_hash(key, klen), &found);
    if (!found)
        return NULL;
    void *v = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->count--;
    /* Backward-shift the following cluster so lookups stay correct. */
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        slot_t *s = &m->slots[j];
        if (!s->key)
            break;
        size_t home = s->hash & mask;
        /* Move s into the hole at i if its home is not in (i, j]. */
        bool between = (i <= j) ? (home > i && home <= j)
                                : (home > i || home <= j);
        if (!between) {
            m->slots[i] = *s;
            s->key = NULL;
            i = j;
        }
    }
    return v;
}

size_t map_count(const map_t *m)
{
    return m->count;
}

int map_next(const map_t *m, size_t *cursor, const char **key, size_t *klen,
             void **value)
{
    while (*cursor < m->cap) {
        const slot_t *s = &m->slots[(*cursor)++];
        if (s->key) {
            if (key)
                *key = s->key;
            if (klen)
                *klen = s->klen;
            if (value)
                *value = s->value;
            return 1;
        }
    }
    return 0;
}
