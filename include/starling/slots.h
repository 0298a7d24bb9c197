/*
 * slots.h - Redis Cluster key slots, slot maps and redirections.
 *
 * Pure functions, no I/O: the store's cluster client (src/store/rclient.c)
 * uses them to send each command to the master that owns its key.
 *
 * Key slot (Redis Cluster specification, "Keys distribution model"):
 * slot = CRC16-XMODEM(k) mod 16384, where k is the whole key unless the key
 * holds a hash tag: the bytes between the first '{' and the first '}' after
 * it, when there is at least one byte between them. Examples:
 *   "{user1000}.following"   hashes "user1000"
 *   "foo{}{bar}"             hashes the whole key (the first tag is empty)
 *   "foo{{bar}}zap"          hashes "{bar"
 *   "foo{bar}{zap}"          hashes "bar"
 * So every key of one client, "sl:{c:<cid>}:s", "sl:{c:<cid>}:q", ...,
 * lands in one slot and one Lua script can touch all of them.
 *
 * Redirections: "MOVED 3999 127.0.0.1:6381" (the slot moved for good:
 * update the map) and "ASK 3999 127.0.0.1:6381" (during a migration: send
 * ASKING then the command to that node, once).
 */
#ifndef STARLING_SLOTS_H
#define STARLING_SLOTS_H

#include <stddef.h>
#include <stdint.h>

struct redisReply;

#define SLOTS_N 16384
#define SLOTS_NONE 0xFFFF /* slot owner index: no node */
#define SLOTS_HOST_MAX 256

/* CRC16-XMODEM (polynomial 0x1021, initial value 0) of buf. */
uint16_t slots_crc16(const void *buf, size_t len);
/* The cluster slot (0..16383) of a key, honouring the hash tag rule. */
uint16_t slots_key(const void *key, size_t len);

enum { SLOTS_MOVED = 1, SLOTS_ASK = 2 };

typedef struct slots_redirect {
    int kind; /* SLOTS_MOVED / SLOTS_ASK */
    uint16_t slot;
    char host[SLOTS_HOST_MAX]; /* "" when the server did not know it */
    int port;
} slots_redirect_t;

/*
 * Parse an error reply text ("MOVED 3999 10.0.0.2:6381", "ASK ...").
 * The host may be an IPv6 address, bracketed or not: the port follows the
 * last ':'. SL_OK, or SL_EINVAL when the text is no redirection.
 */
int slots_redirect_parse(const char *text, size_t len, slots_redirect_t *out);

typedef struct slots_node {
    char host[SLOTS_HOST_MAX];
    int port;
} slots_node_t;

/* Which master owns each slot, from one CLUSTER SLOTS reply. */
typedef struct slots_map {
    uint16_t owner[SLOTS_N]; /* index into nodes, or SLOTS_NONE */
    slots_node_t *nodes;     /* masters, in order of first appearance */
    size_t n_nodes;
} slots_map_t;

/*
 * Build a slot map from a CLUSTER SLOTS reply: an array of
 * [start, end, [host, port, id, ...], replica...]. A master with an empty
 * or "?" host (the server does not know its own address) gets
 * `default_host`, the host the reply came from. SL_OK, SL_EMALFORMED for a
 * reply of another shape, SL_ENOMEM. Free with slots_map_fini().
 */
int slots_map_parse(const struct redisReply *r, const char *default_host,
                    slots_map_t *out);
void slots_map_fini(slots_map_t *m);

#endif
