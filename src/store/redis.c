/*
 * redis.c - the Redis-protocol store backend: Apache Kvrocks, Redis or
 * Valkey, standalone ("redis://") or cluster ("redis+cluster://").
 *
 * Each store.h operation is one command to one slot: a Lua script
 * (scripts.c) for everything that touches a session, so fencing and limits
 * are checked atomically where the data is, or a plain command for the
 * global keys (DESIGN.md §3). rclient.c carries the commands: pipelining,
 * deadlines, reconnection, cluster routing.
 *
 * This file is the backend itself (vtable, open, free) and the helpers the
 * operations share; the operations are in redis_session.c (sessions and
 * their global indexes, expiry, inbound QoS 2), redis_subs.c, redis_queue.c
 * (with the batching of appends) and redis_retain.c.
 */
#include "redis_int.h"

#include "scripts.h"

#include "starling/err.h"
#include "starling/log.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_COUNT "256"

/* ---- helpers ----------------------------------------------------------- */

void rs_cmd_init(rstore_t *rs, rcmd_t *c)
{
    rcmd_init(c, rs->url.prefix);
}

void rs_send(rstore_t *rs, const rcmd_t *c, unsigned flags, rclient_fn fn,
             const void *ctx, size_t ctxlen, const void *tail, size_t taillen)
{
    rs_batch_flush(rs);
    rclient_send(rs->cl, c, flags, fn, ctx, ctxlen, tail, taillen);
}

void rs_send_op(rstore_t *rs, const rcmd_t *c, unsigned flags, rclient_fn fn,
                void *cb, void *arg, const char *cid, size_t clen)
{
    op_t o = {.rs = rs, .cb = cb, .arg = arg, .clen = clen};
    rs_send(rs, c, flags, fn, &o, sizeof(o), cid, cid ? clen : 0);
}

int rs_reply_status(rstore_t *rs, const redisReply *r, int status)
{
    if (status != SL_OK)
        return status;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warning("store: error reply: %.*s", (int)r->len, r->str);
        return SL_EIO;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        long long v = r->integer;
        if (v >= 0)
            return SL_OK;
        if (v == SL_ENOTFOUND || v == SL_ESTALE || v == SL_ELIMIT)
            return (int)v;
    }
    rclient_count_error(rs->cl);
    return SL_EMALFORMED;
}

bool rs_is_str(const redisReply *r)
{
    return r &&
           (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

uint64_t rs_str_u64(const redisReply *r)
{
    char buf[24];
    if (!rs_is_str(r) || r->len == 0 || r->len >= sizeof(buf))
        return 0;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    return strtoull(buf, NULL, 10);
}

void rs_op_done(const op_t *o, int status)
{
    if (o->cb)
        ((store_done_fn)o->cb)(o->arg, status);
}

static void on_done(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    rs_op_done(o, rs_reply_status(o->rs, r, status));
}

void rs_send_done(rstore_t *rs, const rcmd_t *c, unsigned flags,
                  store_done_fn cb, void *arg)
{
    rs_send_op(rs, c, flags, on_done, (void *)cb, arg, NULL, 0);
}

void rs_cmd_script(rstore_t *rs, rcmd_t *c, int script, const char *cid,
                   size_t clen, const char *const *sfx, bool index)
{
    int n = 0;
    while (sfx[n])
        n++;
    bool extra = index && !rs->cluster;
    rs_cmd_init(rs, c);
    rcmd_evalsha(c, script, n + (extra ? 2 : 0));
    for (int i = 0; i < n; i++)
        rcmd_ckey(c, cid, clen, sfx[i]);
    if (extra) {
        rcmd_key(c, "psessions");
        rcmd_key(c, "expiry");
    }
}

void rs_cmd_fenced(rstore_t *rs, rcmd_t *c, int script, const char *cid,
                   size_t clen, const char *const *sfx, uint64_t epoch)
{
    rs_cmd_script(rs, c, script, cid, clen, sfx, false);
    rcmd_u64(c, epoch);
}

void rs_scan(rstore_t *rs, const char *verb, const char *key,
             const char *cursor, rclient_fn fn, const void *ctx, size_t ctxlen)
{
    rcmd_t c;
    rs_cmd_init(rs, &c);
    rcmd_str(&c, verb);
    rcmd_key(&c, key);
    rcmd_str(&c, cursor);
    rcmd_str(&c, "COUNT");
    rcmd_str(&c, SCAN_COUNT);
    rs_send(rs, &c, RCLIENT_REPLAY, fn, ctx, ctxlen, NULL, 0);
}

int rs_scan_status(const redisReply *r, int status)
{
    if (status == SL_OK &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         !rs_is_str(r->element[0]) || r->element[1]->type != REDIS_REPLY_ARRAY))
        status = r->type == REDIS_REPLY_ERROR ? SL_EIO : SL_EMALFORMED;
    return status;
}

/* ---- the backend ------------------------------------------------------- */

static bool redis_ready(const store_t *st)
{
    return rclient_ready(((const rstore_t *)st)->cl);
}

static void redis_stats(const store_t *st, store_stats_t *out)
{
    rclient_stats(((const rstore_t *)st)->cl, out);
}

static void redis_free(store_t *st)
{
    rstore_t *rs = (rstore_t *)st;
    rs->closing = true;
    rs_batch_flush(rs); /* failed with the rest by rclient_free() */
    rclient_free(rs->cl);
    rs_batch_fini(rs);
    map_free(rs->swept, free);
    redis_url_fini(&rs->url);
    free(rs);
}

static const store_ops_t redis_ops = {
    .kind = "redis",
    .free = redis_free,
    .ready = redis_ready,
    .claim = redis_claim,
    .session_put = redis_session_put,
    .session_offline = redis_session_offline,
    .session_del = redis_session_del,
    .session_expired = redis_session_expired,
    .sub_put = redis_sub_put,
    .sub_del = redis_sub_del,
    .sub_load = redis_sub_load,
    .queue_append = redis_queue_append,
    .queue_mark = redis_queue_mark,
    .queue_ack = redis_queue_ack,
    .queue_since = redis_queue_since,
    .inbound_put = redis_inbound_put,
    .inbound_del = redis_inbound_del,
    .retain_put = redis_retain_put,
    .retain_del = redis_retain_del,
    .retain_load = redis_retain_load,
    .stats = redis_stats,
};

int store_redis_open(store_t **out, struct event_base *base, const char *url,
                     char *err, size_t errlen)
{
    *out = NULL;
    rstore_t *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return SL_ENOMEM;
    rs->base.ops = &redis_ops;
    rs->base.base = base;
    int rc = redis_url_parse(url, &rs->url, err, errlen);
    if (rc != SL_OK)
        goto fail;
    rs->cluster = rs->url.cluster;
    rs->swept = map_new();
    if (!rs->swept || rs_batch_init(rs) != SL_OK) {
        rc = SL_ENOMEM;
        goto fail;
    }
    rc = rclient_new(&rs->cl, base, &rs->url, store_script_body, SCRIPT_N, err,
                     errlen);
    if (rc != SL_OK)
        goto fail;
    *out = &rs->base;
    return SL_OK;
fail:
    if (rc == SL_ENOMEM)
        snprintf(err, errlen, "store: out of memory");
    map_free(rs->swept, free);
    rs_batch_fini(rs);
    redis_url_fini(&rs->url);
    free(rs);
    return rc == SL_ENOMEM ? rc : SL_EINVAL;
}
