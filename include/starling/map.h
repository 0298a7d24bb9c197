/*
 * map.h - a string-keyed hash map (open addressing, linear probing).
 *
 * Keys are byte strings (not necessarily NUL-terminated); the map copies
 * them. Values are opaque pointers the caller owns. Used for client id ->
 * session, topic -> retained message, and similar indexes.
 */
#ifndef STARLING_MAP_H
#define STARLING_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct map map_t;

map_t *map_new(void);
/* Free the map; free_value (may be NULL) is called for every value. */
void map_free(map_t *m, void (*free_value)(void *value));

/* Value for key, or NULL. */
void *map_get(const map_t *m, const void *key, size_t klen);
/* Insert or replace; *old gets the replaced value (or NULL). SL_OK/SL_ENOMEM. */
int map_put(map_t *m, const void *key, size_t klen, void *value, void **old);
/* Remove; returns the value or NULL when absent. */
void *map_del(map_t *m, const void *key, size_t klen);
size_t map_count(const map_t *m);

/* Iteration: *cursor starts at 0; returns 0 at the end. The map must not be
 * modified while iterating, except through map_iter_del-free patterns of
 * collecting keys first. */
int map_next(const map_t *m, size_t *cursor, const char **key, size_t *klen,
             void **value);

uint64_t map_hash(const void *key, size_t len);

#endif
