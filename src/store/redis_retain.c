/*
 * redis_retain.c - retained messages in the Redis-protocol store (redis.c):
 * one global hash, topic -> message.
 */
#include "redis_int.h"

#include "blob.h"

#include "starling/err.h"
#include "starling/log.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/* HSET (with m) or HDEL of a topic in the hash. */
static void retained_cmd(rstore_t *rs, const char *verb, const char *topic,
                         size_t tlen, const msg_t *m, store_done_fn cb,
                         void *arg)
{
    rcmd_t c;
    rs_cmd_init(rs, &c);
    rcmd_str(&c, verb);
    rcmd_key(&c, "retained");
    rcmd_bytes(&c, topic, tlen);
    if (m)
        rcmd_msg(&c, m);
    rs_send_done(rs, &c, RCLIENT_REPLAY, cb, arg);
}

void redis_retain_put(store_t *st, msg_t *m, store_done_fn cb, void *arg)
{
    retained_cmd((rstore_t *)st, "HSET", m->topic, m->topic_len, m, cb, arg);
}

void redis_retain_del(store_t *st, const char *topic, size_t tlen,
                      store_done_fn cb, void *arg)
{
    retained_cmd((rstore_t *)st, "HDEL", topic, tlen, NULL, cb, arg);
}

/* store_retain_load: HSCAN the hash in pages, one callback at the end. */
typedef struct rload {
    rstore_t *rs;
    store_msgs_fn cb;
    void *arg;
    msg_t **msgs;
    size_t n, cap;
} rload_t;

static void rload_scan(rload_t *rl, const char *cursor);

static void rload_finish(rload_t *rl, int status)
{
    if (rl->cb)
        rl->cb(rl->arg, status, status == SL_OK ? rl->msgs : NULL,
               status == SL_OK ? rl->n : 0);
    for (size_t i = 0; i < rl->n; i++)
        msg_unref(&rl->msgs[i]);
    free(rl->msgs);
    free(rl);
}

static void rload_add(rload_t *rl, const redisReply *v)
{
    msg_t *m;
    if (!rs_is_str(v) || blob_msg_read(v->str, v->len, &m) != SL_OK) {
        log_warning("store: skipping a malformed retained message");
        return;
    }
    if (rl->n == rl->cap) {
        size_t cap = rl->cap ? rl->cap * 2 : 64;
        msg_t **nm = realloc(rl->msgs, cap * sizeof(*nm));
        if (!nm)
            abort();
        rl->msgs = nm;
        rl->cap = cap;
    }
    rl->msgs[rl->n++] = m;
}

static void on_rload(void *ctx, const redisReply *r, int status)
{
    rload_t *rl = *(rload_t **)ctx;
    status = rs_scan_status(r, status);
    if (status != SL_OK) {
        rload_finish(rl, status);
        return;
    }
    const redisReply *kv = r->element[1];
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        rload_add(rl, kv->element[i + 1]);
    if (strcmp(r->element[0]->str, "0") == 0)
        rload_finish(rl, SL_OK);
    else
        rload_scan(rl, r->element[0]->str);
}

static void rload_scan(rload_t *rl, const char *cursor)
{
    rs_scan(rl->rs, "HSCAN", "retained", cursor, on_rload, &rl, sizeof(rl));
}

void redis_retain_load(store_t *st, store_msgs_fn cb, void *arg)
{
    rload_t *rl = calloc(1, sizeof(*rl));
    if (!rl)
        abort();
    rl->rs = (rstore_t *)st;
    rl->cb = cb;
    rl->arg = arg;
    rload_scan(rl, "0");
}
