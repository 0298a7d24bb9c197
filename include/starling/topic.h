/*
 * topic.h - topic names, topic filters and the subscription trie.
 *
 * Pure: no I/O, no libevent, no logging.
 *
 * Names vs filters (MQTT 3.1.1 §4.7, 5.0 §4.7):
 *   "a/b/c"  valid name and filter      "a/+/c"  filter only
 *   "a/#"    filter only                "#"      filter only (matches all
 *   "a/b#"   invalid ('#' not alone)              but $-topics)
 *   "a+/b"   invalid ('+' not alone)    ""       invalid (empty)
 *   "/"      valid (two empty levels)   "a//b"   valid (empty level)
 * A filter whose first character is a wildcard never matches a topic that
 * starts with '$' ("#" does not match "$SYS/x"; "$SYS/#" does).
 *
 * Shared subscriptions: "$share/<group>/<filter>" (group non-empty, no '+',
 * '#' or '/'; filter non-empty). topic_share_parse() splits one.
 */
#ifndef STARLING_TOPIC_H
#define STARLING_TOPIC_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* SL_OK or SL_ETOPIC. Checks emptiness, wildcards, UTF-8 (mqtt_utf8_valid)
 * and max_len (0 = 65535). */
int topic_name_check(const char *s, size_t len, size_t max_len);
int topic_filter_check(const char *s, size_t len, size_t max_len);

/* Number of levels ("a/b" = 2, "/" = 2). */
size_t topic_levels(const char *s, size_t len);

/* Does the (valid) filter match the (valid) topic name? With $-rules. */
bool topic_matches(const char *filter, size_t flen, const char *topic,
                   size_t tlen);

/*
 * If s is a shared subscription "$share/g/f": return 1 and point group and
 * filter into s. Return 0 if s does not start with "$share/". Return
 * SL_ETOPIC if it starts with "$share/" but is not a valid one.
 */
int topic_share_parse(const char *s, size_t len, const char **group,
                      size_t *glen, const char **filter, size_t *flen);

/*
 * The subscription trie: a set of (filter, key) entries, each with a value.
 * `key` identifies the subscriber (a pointer or an id cast to uintptr_t);
 * one key has at most one entry per filter. Matching a topic visits every
 * entry whose filter matches, in time proportional to the topic's depth
 * (plus the matches), not to the number of filters.
 *
 * The trie copies the filter; it does not own values (the caller frees them,
 * e.g. from trie_remove()'s out-parameter or with trie_free()'s callback).
 */
typedef struct trie trie_t;

typedef void (*trie_visit_fn)(void *ctx, const char *filter, size_t flen,
                              uintptr_t key, void *value);

trie_t *trie_new(void);
/* Free the trie; free_value (may be NULL) is called for every value. */
void trie_free(trie_t *t, void (*free_value)(void *value));

/*
 * Insert or replace. If (filter, key) exists its value is replaced and the
 * old one returned through *old (else *old = NULL; old may be NULL).
 * Returns SL_OK or SL_ENOMEM (then the trie is unchanged). The filter must
 * already be valid.
 */
int trie_insert(trie_t *t, const char *filter, size_t flen, uintptr_t key,
                void *value, void **old);

/* Remove (filter, key). SL_OK with *value set, or SL_ENOTFOUND (*value =
 * NULL). value may be NULL. Nodes left empty are freed. */
int trie_remove(trie_t *t, const char *filter, size_t flen, uintptr_t key,
                void **value);

/* Value of (filter, key) or NULL. */
void *trie_get(const trie_t *t, const char *filter, size_t flen,
               uintptr_t key);

/* Visit every entry whose filter matches the topic name. The callback must
 * not modify the trie. */
void trie_match(const trie_t *t, const char *topic, size_t tlen,
                trie_visit_fn fn, void *ctx);

/* Visit every entry. The callback must not modify the trie. */
void trie_foreach(const trie_t *t, trie_visit_fn fn, void *ctx);

/* Number of entries, and of distinct filters. */
size_t trie_count(const trie_t *t);
size_t trie_filter_count(const trie_t *t);

/* Number of entries of one filter (0 if absent): lets the caller see a
 * filter's first subscriber arrive and its last one leave. */
size_t trie_filter_size(const trie_t *t, const char *filter, size_t flen);

/* Number of trie nodes, the root included (memory use, for metrics). */
size_t trie_node_count(const trie_t *t);

/*
 * The retained-message tree: topic name -> value (at most one per name),
 * one node per level. rtree_match() visits the values whose names a filter
 * matches, walking only the branches the filter can reach: a filter with
 * no wildcard costs its depth, "a/+/c" the children of "a", "a/#" the
 * subtree under "a" (whatever else is stored). With the $-rules.
 * The tree does not own values unless rtree_free() is given a callback.
 */
typedef struct rtree rtree_t;

typedef void (*rtree_visit_fn)(void *ctx, void *value);

rtree_t *rtree_new(void);
void rtree_free(rtree_t *t, void (*free_value)(void *value));
/* Set the value of a (valid) name; *old gets the previous one or NULL.
 * SL_OK or SL_ENOMEM (then the tree is unchanged). */
int rtree_put(rtree_t *t, const char *name, size_t len, void *value,
              void **old);
/* Remove a name's value (returned; NULL when absent). */
void *rtree_del(rtree_t *t, const char *name, size_t len);
void *rtree_get(const rtree_t *t, const char *name, size_t len);
size_t rtree_count(const rtree_t *t);
/* Visit the value of every name the (valid) filter matches. The callback
 * must not modify the tree. SL_OK or SL_ENOMEM (then nothing was visited). */
int rtree_match(const rtree_t *t, const char *filter, size_t flen,
                rtree_visit_fn fn, void *ctx);

#endif
