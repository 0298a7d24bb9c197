/*
 * test_util.c - the block pools (pool.h) and pooled messages (msg.h).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "starling/msg.h"
#include "starling/pool.h"

Test(pool, reuses_freed_blocks_up_to_its_limit, .disabled = !POOL_REUSES)
{
    pool_t p = POOL_INIT(64, 2);
    void *a = pool_get(&p), *b = pool_get(&p), *c = pool_get(&p);
    cr_assert(a && b && c);
    cr_assert_eq(p.allocated, 3);
    pool_put(&p, a);
    pool_put(&p, b);
    pool_put(&p, c); /* over the limit: freed, not kept */
    cr_assert_eq(p.n_free, 2);
    void *x = pool_get(&p), *y = pool_get(&p);
    cr_assert_eq(x, b, "last freed comes back first");
    cr_assert_eq(y, a);
    cr_assert_eq(p.reused, 2);
    cr_assert_eq(p.n_free, 0);
    void *z = pool_get(&p);
    cr_assert_eq(p.allocated, 4, "an empty pool allocates");
    pool_put(&p, x);
    pool_put(&p, y);
    pool_put(&p, z);
    pool_put(&p, NULL);
    pool_drain(&p);
    cr_assert_eq(p.n_free, 0);
    cr_assert_null(p.free);
}

Test(pool, zget_clears_a_reused_block, .disabled = !POOL_REUSES)
{
    pool_t p = POOL_INIT(32, 4);
    unsigned char *a = pool_get(&p);
    memset(a, 0xAB, 32);
    pool_put(&p, a);
    unsigned char *b = pool_zget(&p);
    cr_assert_eq(b, a);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(b[i], 0);
    pool_put(&p, b);
    pool_drain(&p);
}

Test(pool, tiny_blocks_hold_the_link, .disabled = !POOL_REUSES)
{
    pool_t p = POOL_INIT(1, 4);
    cr_assert_geq(p.size, sizeof(void *));
    void *a = pool_get(&p);
    pool_put(&p, a);
    cr_assert_eq(pool_get(&p), a);
    pool_put(&p, a);
    pool_drain(&p);
}

Test(msg, small_messages_reuse_their_block_and_keep_content,
     .disabled = !POOL_REUSES)
{
    msg_t *m = msg_new("a/b", 3, "hello", 5, NULL, 0, 1, true, 0);
    cr_assert_not_null(m);
    msg_t *keep = m;
    msg_unref(&m);
    cr_assert_null(m);
    /* same size class: the freed block comes back */
    msg_t *n = msg_new("c/d", 3, "world!", 6, "\x01\x02", 2, 2, false, 7);
    cr_assert_eq(n, keep);
    cr_assert_str_eq(n->topic, "c/d");
    cr_assert_eq(n->payload_len, 6);
    cr_assert_eq(memcmp(n->payload, "world!", 6), 0);
    cr_assert_eq(n->props_len, 2);
    cr_assert_eq(memcmp(n->props, "\x01\x02", 2), 0);
    cr_assert_eq(n->qos, 2);
    cr_assert_eq(n->expiry_at, 7);
    cr_assert_eq(n->refs, 1);
    msg_unref(&n);
}

Test(msg, references_keep_a_message_alive)
{
    char big[4000];
    memset(big, 'x', sizeof(big));
    msg_t *m = msg_new("t", 1, big, sizeof(big), NULL, 0, 0, false, 0);
    msg_t *r = msg_ref(m);
    msg_unref(&m);
    cr_assert_eq(r->refs, 1);
    cr_assert_eq(memcmp(r->payload, big, sizeof(big)), 0);
    msg_unref(&r);
}

Test(pool, sanitized_builds_keep_nothing, .disabled = POOL_REUSES)
{
    pool_t p = POOL_INIT(16, 8);
    void *a = pool_get(&p);
    pool_put(&p, a);
    cr_assert_eq(p.n_free, 0, "an ASan build frees every block at once");
}
