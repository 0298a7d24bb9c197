/*
 * test_slots.c - unit tests of slots.c: CRC16 key slots with the hash tag
 * rule (values checked against CLUSTER KEYSLOT of a Redis 7 server),
 * MOVED/ASK parsing, and CLUSTER SLOTS replies (fed as RESP bytes through
 * the hiredis reader) parsed into slot maps.
 */
#include "starling/slots.h"

#include "starling/err.h"

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <string.h>

static uint16_t slot(const char *k)
{
    return slots_key(k, strlen(k));
}

Test(slots, crc16_reference_vector)
{
    /* Redis Cluster spec: CRC16("123456789") = 0x31C3 */
    cr_assert_eq(slots_crc16("123456789", 9), 0x31C3);
    cr_assert_eq(slot("123456789"), 12739);
}

Test(slots, plain_keys)
{
    cr_assert_eq(slot("foo"), 12182);
    cr_assert_eq(slot("bar"), 5061);
    cr_assert_eq(slot("hello"), 866);
    cr_assert_eq(slot(""), 0);
}

Test(slots, hash_tags)
{
    cr_assert_eq(slot("{user1000}.following"), 3443);
    cr_assert_eq(slot("{user1000}.following"), slot("user1000"));
    /* an empty first tag: the whole key is hashed */
    cr_assert_eq(slot("foo{}{bar}"), 8363);
    cr_assert_eq(slot("{}"), 15257);
    /* the tag ends at the first '}' after the first '{' */
    cr_assert_eq(slot("foo{{bar}}zap"), 4015);
    cr_assert_eq(slot("foo{{bar}}zap"), slot("{bar"));
    cr_assert_eq(slot("foo{bar}{zap}"), 5061);
    cr_assert_eq(slot("foo{bar}{zap}"), slot("bar"));
    /* no closing brace: the whole key */
    cr_assert_eq(slot("{"), 4092);
    cr_assert_eq(slot("}{x}"), slot("x"));
}

Test(slots, client_keys_share_a_slot)
{
    cr_assert_eq(slot("sl:{c:abc}:s"), 11930);
    cr_assert_eq(slot("sl:{c:abc}:s"), slot("sl:{c:abc}:q"));
    cr_assert_eq(slot("sl:{c:abc}:subs"), slot("other:{c:abc}:in"));
    /* binary keys with NUL bytes */
    cr_assert_eq(slots_key("a{\0b}c", 6), slots_key("\0b", 2));
}

Test(slots, moved)
{
    slots_redirect_t rd;
    const char *e = "MOVED 3999 127.0.0.1:6381";
    cr_assert_eq(slots_redirect_parse(e, strlen(e), &rd), SL_OK);
    cr_assert_eq(rd.kind, SLOTS_MOVED);
    cr_assert_eq(rd.slot, 3999);
    cr_assert_str_eq(rd.host, "127.0.0.1");
    cr_assert_eq(rd.port, 6381);
}

Test(slots, ask)
{
    slots_redirect_t rd;
    const char *e = "ASK 16383 redis-2.example:7000";
    cr_assert_eq(slots_redirect_parse(e, strlen(e), &rd), SL_OK);
    cr_assert_eq(rd.kind, SLOTS_ASK);
    cr_assert_eq(rd.slot, 16383);
    cr_assert_str_eq(rd.host, "redis-2.example");
    cr_assert_eq(rd.port, 7000);
}

Test(slots, redirect_ipv6_and_unknown_host)
{
    slots_redirect_t rd;
    const char *e = "MOVED 1 ::1:7001";
    cr_assert_eq(slots_redirect_parse(e, strlen(e), &rd), SL_OK);
    cr_assert_str_eq(rd.host, "::1");
    cr_assert_eq(rd.port, 7001);
    e = "MOVED 2 [fe80::1]:7002";
    cr_assert_eq(slots_redirect_parse(e, strlen(e), &rd), SL_OK);
    cr_assert_str_eq(rd.host, "fe80::1");
    cr_assert_eq(rd.port, 7002);
    e = "ASK 3 :7003";
    cr_assert_eq(slots_redirect_parse(e, strlen(e), &rd), SL_OK);
    cr_assert_str_eq(rd.host, "");
    cr_assert_eq(rd.port, 7003);
}

Test(slots, redirect_invalid)
{
    slots_redirect_t rd;
    const char *bad[] = {"",
                         "MOVED",
                         "MOVED ",
                         "MOVED 3999",
                         "MOVED 3999 127.0.0.1",
                         "MOVED 16384 127.0.0.1:6379",
                         "MOVED -1 127.0.0.1:6379",
                         "MOVED x 127.0.0.1:6379",
                         "MOVED 1 127.0.0.1:0",
                         "MOVED 1 127.0.0.1:65536",
                         "MOVED 1 127.0.0.1:12ab",
                         "ERR unknown command",
                         "NOSCRIPT No matching script",
                         "moved 1 h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(slots_redirect_parse(bad[i], strlen(bad[i]), &rd),
                     SL_EINVAL, "accepted '%s'", bad[i]);
    /* the length is honoured: no read past it */
    const char *e = "MOVED 12 h:6379";
    cr_assert_eq(slots_redirect_parse(e, 9, &rd), SL_EINVAL);
}

static redisReply *resp(const char *s)
{
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;
    cr_assert_eq(redisReaderFeed(rd, s, strlen(s)), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
    cr_assert_not_null(reply);
    redisReaderFree(rd);
    return reply;
}

/* Three masters, one with a replica, one with an unknown ("") host. */
static const char three_masters[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$4\r\nid-a\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$4\r\nid-d\r\n"
    "*3\r\n:5461\r\n:10922\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$4\r\nid-b\r\n"
    "*3\r\n:10923\r\n:16383\r\n"
    "*4\r\n$0\r\n\r\n:7002\r\n$4\r\nid-c\r\n*0\r\n";

Test(slots, cluster_slots_three_masters)
{
    redisReply *r = resp(three_masters);
    slots_map_t *m = calloc(1, sizeof(*m));
    cr_assert_eq(slots_map_parse(r, "10.1.1.1", m), SL_OK);
    cr_assert_eq(m->n_nodes, 3);
    cr_assert_str_eq(m->nodes[0].host, "127.0.0.1");
    cr_assert_eq(m->nodes[0].port, 7000);
    cr_assert_eq(m->nodes[1].port, 7001);
    cr_assert_str_eq(m->nodes[2].host, "10.1.1.1");
    cr_assert_eq(m->nodes[2].port, 7002);
    cr_assert_eq(m->owner[0], 0);
    cr_assert_eq(m->owner[5460], 0);
    cr_assert_eq(m->owner[5461], 1);
    cr_assert_eq(m->owner[10922], 1);
    cr_assert_eq(m->owner[10923], 2);
    cr_assert_eq(m->owner[16383], 2);
    cr_assert_eq(m->owner[slot("foo")], 2);
    slots_map_fini(m);
    free(m);
    freeReplyObject(r);
}

Test(slots, cluster_slots_gaps_and_split_ranges)
{
    /* one master owning two ranges, slots 100..199 unassigned */
    const char *s = "*2\r\n"
                    "*3\r\n:0\r\n:99\r\n*2\r\n$1\r\nh\r\n:1\r\n"
                    "*3\r\n:200\r\n:16383\r\n*2\r\n$1\r\nh\r\n:1\r\n";
    redisReply *r = resp(s);
    slots_map_t *m = calloc(1, sizeof(*m));
    cr_assert_eq(slots_map_parse(r, NULL, m), SL_OK);
    cr_assert_eq(m->n_nodes, 1);
    cr_assert_eq(m->owner[99], 0);
    cr_assert_eq(m->owner[100], SLOTS_NONE);
    cr_assert_eq(m->owner[199], SLOTS_NONE);
    cr_assert_eq(m->owner[200], 0);
    slots_map_fini(m);
    free(m);
    freeReplyObject(r);
}

Test(slots, cluster_slots_malformed)
{
    const char *bad[] = {
        "+OK\r\n",
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",                            /* short */
        "*1\r\n*3\r\n:5\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n",     /* lo>hi */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", /* range */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",     /* port */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",          /* host */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",           /* node */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$0\r\n\r\n:1\r\n",      /* no host */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redisReply *r = resp(bad[i]);
        slots_map_t *m = calloc(1, sizeof(*m));
        cr_assert_eq(slots_map_parse(r, NULL, m), SL_EMALFORMED,
                     "case %zu accepted", i);
        cr_assert_eq(m->n_nodes, 0);
        slots_map_fini(m);
        free(m);
        freeReplyObject(r);
    }
    slots_map_t *m = calloc(1, sizeof(*m));
    cr_assert_eq(slots_map_parse(NULL, NULL, m), SL_EMALFORMED);
    free(m);
}
