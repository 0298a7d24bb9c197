/*
 * trie.c - the subscription trie: (filter, key) -> value, matched against
 * topic names.
 *
 * One node per filter level; the path from the root spells the filter:
 *
 *   root -+- "a" -+- "b"  entries of "a/b"
 *         |       +- "+"  entries of "a/+"
 *         |       +- "#"  entries of "a/#"
 *         +- "#"          entries of "#"
 *
 * A node's children are a hashed vector keyed by level string, its entries
 * a hashed vector keyed by subscriber key (hvec.h), so lookups by level or
 * by key are O(1) on average however wide a node is. A node with entries
 * also holds its whole filter, handed to the visit callbacks.
 *
 * Matching walks the topic level by level. At each node it visits the '#'
 * child's entries (they match whatever remains, including nothing), then
 * descends into the exact child, and later into the '+' child. The walk
 * is a depth-first search without recursion or a stack: the parent pointers
 * and the labels say where to resume (after an exact child comes its '+'
 * sibling; after a '+' child, the parent is done). So the cost is the
 * nodes on matching paths plus the matches, whatever the number of other
 * filters, and no topic depth can exhaust the C stack. Insertion, removal,
 * pruning, iteration and freeing are iterative too.
 *
 * $-rule (MQTT 5.0 §4.7.2): when the topic starts with '$', the root's '+'
 * and '#' children are skipped.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hvec.h"
#include "starling/err.h"
#include "starling/topic.h"

#define NO_POS UINT32_MAX

struct ent {
    uintptr_t key;
    void *value;
};

/* The filter a node spells, kept while the node has entries. */
struct fname {
    size_t len;
    char s[];
};

struct node {
    struct node *parent;  /* NULL for the root */
    hvec_t kids;          /* struct node * */
    hvec_t ents;          /* struct ent */
    struct fname *filter; /* non-NULL iff ents.n > 0 */
    uint32_t hash;        /* of the label, with the trie's seed */
    uint32_t len;
    char label[];
};

struct trie {
    struct node *root;
    size_t count;
    size_t filters;
    size_t nodes;
    uint32_t seed;
    uint32_t plus_hash;
    uint32_t hash_hash;
};

/* ---- hashing ------------------------------------------------------------ */

static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static uint32_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)x;
}

/* FNV-1a with a per-trie seed, so clients cannot precompute levels that
 * all collide in one node. */
static uint32_t label_hash(uint32_t seed, const char *s, size_t len)
{
    uint32_t h = 2166136261u ^ seed;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return mix32(h);
}

static uint32_t kid_hash_at(const void *elem)
{
    return (*(struct node *const *)elem)->hash;
}

static uint32_t ent_hash_at(const void *elem)
{
    return mix64(((const struct ent *)elem)->key);
}

/* ---- nodes -------------------------------------------------------------- */

static struct node **kids_of(const struct node *n)
{
    return hvec_base(&n->kids, sizeof(struct node *));
}

static struct ent *ents_of(const struct node *n)
{
    return hvec_base(&n->ents, sizeof(struct ent));
}

static bool label_is(const struct node *k, const char *s, size_t len,
                     uint32_t h)
{
    return k->hash == h && k->len == len && memcmp(k->label, s, len) == 0;
}

static bool is_plus(const struct node *n)
{
    return n->len == 1 && n->label[0] == '+';
}

static struct node *kid_find(const struct node *n, const char *s, size_t len,
                             uint32_t h)
{
    struct node **kids = kids_of(n);
    const uint32_t *slots = hvec_slots(&n->kids, sizeof *kids);
    uint32_t mask;

    if (!slots) {
        for (uint32_t i = 0; i < n->kids.n; i++) {
            if (label_is(kids[i], s, len, h))
                return kids[i];
        }
        return NULL;
    }
    mask = hvec_mask(&n->kids);
    for (uint32_t i = h & mask; slots[i]; i = (i + 1) & mask) {
        struct node *k = kids[slots[i] - 1];
        if (label_is(k, s, len, h))
            return k;
    }
    return NULL;
}

/* Position of child k in p's children. */
static uint32_t kid_pos(const struct node *p, const struct node *k)
{
    struct node **kids = kids_of(p);
    const uint32_t *slots = hvec_slots(&p->kids, sizeof *kids);
    uint32_t mask;

    if (!slots) {
        for (uint32_t i = 0; i < p->kids.n; i++) {
            if (kids[i] == k)
                return i;
        }
        return NO_POS;
    }
    mask = hvec_mask(&p->kids);
    for (uint32_t i = k->hash & mask; slots[i]; i = (i + 1) & mask) {
        if (kids[slots[i] - 1] == k)
            return slots[i] - 1;
    }
    return NO_POS;
}

static uint32_t ent_pos(const struct node *n, uintptr_t key)
{
    struct ent *ents = ents_of(n);
    const uint32_t *slots = hvec_slots(&n->ents, sizeof *ents);
    uint32_t mask;

    if (!slots) {
        for (uint32_t i = 0; i < n->ents.n; i++) {
            if (ents[i].key == key)
                return i;
        }
        return NO_POS;
    }
    mask = hvec_mask(&n->ents);
    for (uint32_t i = mix64(key) & mask; slots[i]; i = (i + 1) & mask) {
        if (ents[slots[i] - 1].key == key)
            return slots[i] - 1;
    }
    return NO_POS;
}

static struct node *node_new(struct node *parent, const char *s, size_t len,
                             uint32_t h)
{
    struct node *n = malloc(offsetof(struct node, label) + len + 1);

    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->parent = parent;
    n->hash = h;
    n->len = (uint32_t)len;
    memcpy(n->label, s, len);
    n->label[len] = '\0';
    return n;
}

static void node_free(struct node *n)
{
    hvec_fini(&n->kids, sizeof(struct node *));
    hvec_fini(&n->ents, sizeof(struct ent));
    free(n->filter);
    free(n);
}

static struct node *kid_add(trie_t *t, struct node *n, const char *s,
                            size_t len, uint32_t h)
{
    struct node *k = node_new(n, s, len, h);

    if (!k)
        return NULL;
    if (hvec_push(&n->kids, sizeof k, &k, kid_hash_at) != SL_OK) {
        node_free(k);
        return NULL;
    }
    t->nodes++;
    return k;
}

/* Free n and its ancestors while they hold neither entries nor children. */
static void prune(trie_t *t, struct node *n)
{
    while (n != t->root && n->kids.n == 0 && n->ents.n == 0) {
        struct node *p = n->parent;

        hvec_del(&p->kids, sizeof n, kid_pos(p, n), kid_hash_at);
        node_free(n);
        t->nodes--;
        n = p;
    }
}

/* ---- paths -------------------------------------------------------------- */

static size_t level_end(const char *s, size_t len, size_t pos)
{
    const char *slash = memchr(s + pos, '/', len - pos);

    return slash ? (size_t)(slash - s) : len;
}

/* Start of the level that ends at pos - 1 (pos: just past it). */
static size_t level_start(const char *s, size_t pos)
{
    size_t i = pos - 1;

    while (i > 0 && s[i - 1] != '/')
        i--;
    return i;
}

static struct node *path_find(const trie_t *t, const char *f, size_t flen)
{
    struct node *n = t->root;
    size_t s = 0;

    for (;;) {
        size_t e = level_end(f, flen, s);

        n = kid_find(n, f + s, e - s, label_hash(t->seed, f + s, e - s));
        if (!n || e == flen)
            return n;
        s = e + 1;
    }
}

/* Find or create the node of filter f. On failure nothing is left behind. */
static int path_make(trie_t *t, const char *f, size_t flen, struct node **out)
{
    struct node *n = t->root;
    size_t s = 0;

    for (;;) {
        size_t e = level_end(f, flen, s);
        uint32_t h = label_hash(t->seed, f + s, e - s);
        struct node *k = kid_find(n, f + s, e - s, h);

        if (!k)
            k = kid_add(t, n, f + s, e - s, h);
        if (!k) {
            prune(t, n);
            return SL_ENOMEM;
        }
        n = k;
        if (e == flen)
            break;
        s = e + 1;
    }
    *out = n;
    return SL_OK;
}

/* ---- lifecycle ---------------------------------------------------------- */

trie_t *trie_new(void)
{
    trie_t *t = calloc(1, sizeof *t);

    if (!t)
        return NULL;
    t->root = node_new(NULL, "", 0, 0);
    if (!t->root) {
        free(t);
        return NULL;
    }
    t->nodes = 1;
    t->seed = mix64((uint64_t)(uintptr_t)t ^ ((uint64_t)(uintptr_t)&t << 17));
    t->plus_hash = label_hash(t->seed, "+", 1);
    t->hash_hash = label_hash(t->seed, "#", 1);
    return t;
}

/* Post-order without a stack: always free the last child first. */
void trie_free(trie_t *t, void (*free_value)(void *value))
{
    struct node *n;

    if (!t)
        return;
    n = t->root;
    while (n) {
        struct node *p = n->parent;

        if (n->kids.n > 0) {
            n = kids_of(n)[n->kids.n - 1];
            continue;
        }
        for (uint32_t i = 0; free_value && i < n->ents.n; i++)
            free_value(ents_of(n)[i].value);
        node_free(n);
        if (p)
            p->kids.n--; /* dropped last child; p's index dies with p */
        n = p;
    }
    free(t);
}

/* ---- entries ------------------------------------------------------------ */

static int ent_add(trie_t *t, struct node *n, const char *f, size_t flen,
                   uintptr_t key, void *value)
{
    struct ent e = {key, value};

    if (n->ents.n == 0) {
        n->filter = malloc(sizeof *n->filter + flen + 1);
        if (!n->filter)
            return SL_ENOMEM;
        n->filter->len = flen;
        memcpy(n->filter->s, f, flen);
        n->filter->s[flen] = '\0';
    }
    if (hvec_push(&n->ents, sizeof e, &e, ent_hash_at) != SL_OK) {
        if (n->ents.n == 0) {
            free(n->filter);
            n->filter = NULL;
        }
        return SL_ENOMEM;
    }
    if (n->ents.n == 1)
        t->filters++;
    t->count++;
    return SL_OK;
}

/* old may be NULL. Levels are limited to 4 GiB (SL_EINVAL beyond). */
int trie_insert(trie_t *t, const char *filter, size_t flen, uintptr_t key,
                void *value, void **old)
{
    struct node *n;
    uint32_t pos;
    int rc;

    if (old)
        *old = NULL;
    if (flen > UINT32_MAX)
        return SL_EINVAL;
    rc = path_make(t, filter, flen, &n);
    if (rc != SL_OK)
        return rc;
    pos = ent_pos(n, key);
    if (pos != NO_POS) {
        if (old)
            *old = ents_of(n)[pos].value;
        ents_of(n)[pos].value = value;
        return SL_OK;
    }
    rc = ent_add(t, n, filter, flen, key, value);
    if (rc != SL_OK)
        prune(t, n);
    return rc;
}

/* value may be NULL; it is set to NULL when nothing is found. */
int trie_remove(trie_t *t, const char *filter, size_t flen, uintptr_t key,
                void **value)
{
    struct node *n = path_find(t, filter, flen);
    uint32_t pos = n ? ent_pos(n, key) : NO_POS;

    if (value)
        *value = NULL;
    if (pos == NO_POS)
        return SL_ENOTFOUND;
    if (value)
        *value = ents_of(n)[pos].value;
    hvec_del(&n->ents, sizeof(struct ent), pos, ent_hash_at);
    t->count--;
    if (n->ents.n == 0) {
        free(n->filter);
        n->filter = NULL;
        t->filters--;
        prune(t, n);
    }
    return SL_OK;
}

void *trie_get(const trie_t *t, const char *filter, size_t flen,
               uintptr_t key)
{
    struct node *n = path_find(t, filter, flen);
    uint32_t pos = n ? ent_pos(n, key) : NO_POS;

    return pos == NO_POS ? NULL : ents_of(n)[pos].value;
}

size_t trie_filter_size(const trie_t *t, const char *filter, size_t flen)
{
    struct node *n = path_find(t, filter, flen);

    return n ? n->ents.n : 0;
}

size_t trie_count(const trie_t *t)
{
    return t->count;
}

size_t trie_filter_count(const trie_t *t)
{
    return t->filters;
}

size_t trie_node_count(const trie_t *t)
{
    return t->nodes;
}

/* ---- matching and iteration --------------------------------------------- */

static void visit(const struct node *n, trie_visit_fn fn, void *ctx)
{
    const struct ent *ents = ents_of(n);

    for (uint32_t i = 0; i < n->ents.n; i++)
        fn(ctx, n->filter->s, n->filter->len, ents[i].key, ents[i].value);
}

/* A topic level that is itself a wildcard (not in a valid name) is only
 * matched by '+', so no filter is visited twice. */
static bool is_wild(const char *s, size_t len)
{
    return len == 1 && (s[0] == '+' || s[0] == '#');
}

/* State of one trie_match() walk. pos: start of the next topic level to
 * consume; past tlen once all are consumed. */
struct walk {
    const trie_t *t;
    const char *topic;
    size_t tlen;
    size_t pos;
    bool dollar; /* topic starts with '$' */
    trie_visit_fn fn;
    void *ctx;
};

/* The $-rule: no wildcard for the first level of a $-topic. */
static bool wild_ok(const struct walk *w, const struct node *n)
{
    return !(w->dollar && n == w->t->root);
}

/*
 * Arrived at n. Visit what matches here and return the first child to
 * descend into (the exact one, else '+'), advancing w->pos; NULL when n
 * is a dead end.
 */
static const struct node *arrive(struct walk *w, const struct node *n)
{
    const struct node *k = NULL;
    const char *level;
    size_t end;

    if (wild_ok(w, n) && (k = kid_find(n, "#", 1, w->t->hash_hash)))
        visit(k, w->fn, w->ctx);
    if (w->pos > w->tlen) {
        visit(n, w->fn, w->ctx);
        return NULL;
    }
    level = w->topic + w->pos;
    end = level_end(w->topic, w->tlen, w->pos);
    k = NULL;
    if (!is_wild(level, end - w->pos))
        k = kid_find(n, level, end - w->pos,
                     label_hash(w->t->seed, level, end - w->pos));
    if (!k && wild_ok(w, n))
        k = kid_find(n, "+", 1, w->t->plus_hash);
    if (k)
        w->pos = end + 1;
    return k;
}

/* Done with the subtree of n: climb to the next '+' sibling still to try,
 * restoring w->pos on the way. NULL when the search is over. */
static const struct node *backtrack(struct walk *w, const struct node *n)
{
    while (n != w->t->root) {
        const struct node *p = n->parent;

        if (!is_plus(n) && wild_ok(w, p)) {
            const struct node *k = kid_find(p, "+", 1, w->t->plus_hash);
            if (k)
                return k; /* consumes the same level: pos unchanged */
        }
        w->pos = level_start(w->topic, w->pos);
        n = p;
    }
    return NULL;
}

void trie_match(const trie_t *t, const char *topic, size_t tlen,
                trie_visit_fn fn, void *ctx)
{
    struct walk w = {t, topic, tlen, 0, tlen > 0 && topic[0] == '$', fn, ctx};
    const struct node *n = t->root;

    while (n) {
        const struct node *k = arrive(&w, n);

        n = k ? k : backtrack(&w, n);
    }
}

/* Pre-order successor: the first child, else the next sibling of the
 * nearest ancestor (or n itself) that has one. */
static const struct node *next_node(const trie_t *t, const struct node *n)
{
    if (n->kids.n > 0)
        return kids_of(n)[0];
    while (n != t->root) {
        const struct node *p = n->parent;
        uint32_t i = kid_pos(p, n) + 1;

        if (i < p->kids.n)
            return kids_of(p)[i];
        n = p;
    }
    return NULL;
}

void trie_foreach(const trie_t *t, trie_visit_fn fn, void *ctx)
{
    for (const struct node *n = t->root; n; n = next_node(t, n))
        visit(n, fn, ctx);
}
