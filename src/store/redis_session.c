/*
 * redis_session.c - sessions in the Redis-protocol store (redis.c): claim,
 * the session record, the global indexes and the expiry sweep (inbound
 * QoS 2 packet ids go with the queue's batches, redis_queue.c).
 *
 * The global indexes sl:psessions (every stored session) and sl:expiry
 * (offline sessions by expiry time) live in other slots than a session.
 * On a standalone server the scripts update them atomically with the
 * session (extra KEYS). On a cluster, this file updates them after the
 * session script replied, always in this order, so that they converge:
 *  - claim:   session script, then SADD psessions;
 *  - offline: session script, then SADD psessions, ZADD expiry at;
 *  - delete:  session script, then SREM psessions, ZREM expiry, then read
 *             the session again and put the entries back if it exists (a
 *             claim by another node in between must keep its entries).
 * An index entry that disagrees with its session is harmless in one
 * direction: the expiry sweep (store_session_expired) checks every due
 * entry against the session record and removes, moves or keeps it. The
 * zset is the source of truth for *when* to look, the session record for
 * *whether* it expired, so expiry is right when no node was up at that
 * moment, and a reclaimed session is never deleted: the sweep remembers the
 * epoch it saw, and store_session_del(epoch 0) of a swept session deletes
 * only that epoch, offline.
 */
#include "redis_int.h"

#include "blob.h"
#include "scripts.h"

#include "starling/err.h"
#include "starling/log.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_MAX 512

static const char *const K_S[] = {":s", NULL};
static const char *const K_ALL[] = {":s", ":subs", ":q", ":out", ":in", NULL};

static void rec_args(rcmd_t *c, const store_session_t *rec)
{
    rcmd_u64(c, rec->version);
    rcmd_u64(c, rec->expiry);
    rcmd_msg(c, rec->will);
    rcmd_u64(c, rec->will_delay);
}

/* ---- the record as the indexes see it ---------------------------------- */

/* The fields of a session record that its index entries depend on. */
typedef struct srec {
    uint64_t epoch;
    bool offline;
    bool never; /* no expiry */
    uint64_t at; /* expiry time, ms */
} srec_t;

/* HMGET of those fields. */
static void srec_cmd(rstore_t *rs, rcmd_t *c, const char *cid, size_t clen)
{
    rs_cmd_init(rs, c);
    rcmd_str(c, "HMGET");
    rcmd_ckey(c, cid, clen, ":s");
    rcmd_str(c, "epoch");
    rcmd_str(c, "on");
    rcmd_str(c, "at");
}

/* Its reply: SL_OK, SL_ENOTFOUND (no such session) or SL_EMALFORMED. */
static int srec_parse(const redisReply *r, srec_t *s)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return SL_EMALFORMED;
    const redisReply *const *e = (const redisReply *const *)r->element;
    if (!rs_is_str(e[0]))
        return SL_ENOTFOUND;
    s->epoch = rs_str_u64(e[0]);
    s->offline = rs_is_str(e[1]) && e[1]->len == 1 && e[1]->str[0] == '0';
    s->never = !rs_is_str(e[2]) || strcmp(e[2]->str, "never") == 0;
    s->at = s->never ? 0 : rs_str_u64(e[2]);
    return SL_OK;
}

/* ---- global index upkeep (cluster) ------------------------------------- */

/* Log a failed index update; true when it failed. */
static bool index_failed(const char *cid, const redisReply *r, int status)
{
    if (status == SL_OK && r->type != REDIS_REPLY_ERROR)
        return false;
    log_warning("store: index update for client '%s' failed: %s", cid,
                status != SL_OK ? sl_strerror(status) : r->str);
    return true;
}

static void on_index_done(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    if (!o->rs->closing)
        index_failed(o->cid, r, status);
}

static void index_cmd(rstore_t *rs, const char *verb, const char *key,
                      const char *score, const char *cid, size_t clen)
{
    rcmd_t c;
    rs_cmd_init(rs, &c);
    rcmd_str(&c, verb);
    rcmd_key(&c, key);
    if (score)
        rcmd_str(&c, score);
    rcmd_bytes(&c, cid, clen);
    rs_send_op(rs, &c, RCLIENT_REPLAY, on_index_done, NULL, NULL, cid, clen);
}

void rs_index_put(rstore_t *rs, const char *cid, size_t clen, int64_t at)
{
    index_cmd(rs, "SADD", "psessions", NULL, cid, clen);
    if (at >= 0) {
        char score[24];
        snprintf(score, sizeof(score), "%lld", (long long)at);
        index_cmd(rs, "ZADD", "expiry", score, cid, clen);
    } else if (at == -1) {
        index_cmd(rs, "ZREM", "expiry", NULL, cid, clen);
    }
}

/* Drop a session's index entries, then read it again and restore them if
 * it exists (see the header comment). Each step waits for the previous. */
typedef struct idrop {
    rstore_t *rs;
    int step; /* 0: SREM, 1: ZREM, 2: HMGET */
    size_t clen;
    char cid[];
} idrop_t;

static void idrop_step(rstore_t *rs, int step, const char *cid, size_t clen);

static void on_idrop(void *ctx, const redisReply *r, int status)
{
    idrop_t *d = ctx;
    srec_t s;
    if (d->rs->closing || index_failed(d->cid, r, status))
        return;
    if (d->step < 2) {
        idrop_step(d->rs, d->step + 1, d->cid, d->clen);
        return;
    }
    if (srec_parse(r, &s) != SL_OK)
        return; /* gone: nothing to restore */
    rs_index_put(d->rs, d->cid, d->clen,
                 s.offline && !s.never ? (int64_t)s.at : -2);
}

static void idrop_step(rstore_t *rs, int step, const char *cid, size_t clen)
{
    rcmd_t c;
    if (step < 2) {
        rs_cmd_init(rs, &c);
        rcmd_str(&c, step == 0 ? "SREM" : "ZREM");
        rcmd_key(&c, step == 0 ? "psessions" : "expiry");
        rcmd_bytes(&c, cid, clen);
    } else {
        srec_cmd(rs, &c, cid, clen);
    }
    idrop_t d = {.rs = rs, .step = step, .clen = clen};
    rs_send(rs, &c, RCLIENT_REPLAY, on_idrop, &d, sizeof(d), cid, clen);
}

void rs_index_drop(rstore_t *rs, const char *cid, size_t clen,
                   bool keep_psession)
{
    idrop_step(rs, keep_psession ? 1 : 0, cid, clen);
}

/* ---- claim ------------------------------------------------------------- */

typedef struct claim_buf {
    store_claim_t c;
    store_sub_t *subs;
    store_entry_t *ents;
    uint16_t *inbound;
    msg_t *will;
} claim_buf_t;

static int parse_queue(const redisReply *q, const redisReply *out,
                       claim_buf_t *b)
{
    if (q->type != REDIS_REPLY_ARRAY || out->type != REDIS_REPLY_ARRAY)
        return SL_EMALFORMED;
    b->ents = calloc(q->elements + 1, sizeof(*b->ents));
    if (!b->ents)
        return SL_ENOMEM;
    for (size_t i = 0; i < q->elements; i++) {
        store_entry_t *se = &b->ents[b->c.n_entries];
        int rc = rs_parse_entry(q->element[i], out, se);
        if (rc == SL_ENOMEM)
            return rc;
        if (rc != SL_OK) {
            log_warning("store: skipping a malformed queue entry");
            continue;
        }
        b->c.n_entries++;
    }
    return SL_OK;
}

static int parse_inbound(const redisReply *in, claim_buf_t *b)
{
    if (in->type != REDIS_REPLY_ARRAY)
        return SL_EMALFORMED;
    b->inbound = calloc(in->elements + 1, sizeof(*b->inbound));
    if (!b->inbound)
        return SL_ENOMEM;
    for (size_t i = 0; i < in->elements; i++) {
        uint64_t pid = rs_str_u64(in->element[i]);
        if (pid && pid <= UINT16_MAX)
            b->inbound[b->c.n_inbound++] = (uint16_t)pid;
    }
    return SL_OK;
}

static int parse_claim(const redisReply *r, claim_buf_t *b)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 11)
        return SL_EMALFORMED;
    const redisReply *const *e = (const redisReply *const *)r->element;
    if (e[0]->type != REDIS_REPLY_INTEGER || e[1]->type != REDIS_REPLY_INTEGER)
        return SL_EMALFORMED;
    b->c.epoch = (uint64_t)e[0]->integer;
    b->c.present = e[1]->integer == 1;
    if (e[2]->type == REDIS_REPLY_INTEGER && e[2]->integer == 1) {
        b->c.prev.version = (uint8_t)rs_str_u64(e[3]);
        b->c.prev.expiry = (uint32_t)rs_str_u64(e[4]);
        if (rs_is_str(e[5]) && e[5]->len &&
            blob_msg_read(e[5]->str, e[5]->len, &b->will) != SL_OK)
            log_warning("store: skipping a malformed will");
        b->c.prev.will = b->will;
        b->c.prev.will_delay = (uint32_t)rs_str_u64(e[6]);
    }
    if (!b->c.present)
        return SL_OK;
    int rc = rs_parse_subs(e[7], &b->subs, &b->c.n_subs);
    if (rc == SL_OK)
        rc = parse_queue(e[8], e[9], b);
    if (rc == SL_OK)
        rc = parse_inbound(e[10], b);
    b->c.subs = b->subs;
    b->c.entries = b->ents;
    b->c.inbound = b->inbound;
    return rc;
}

static void claim_buf_fini(claim_buf_t *b)
{
    for (size_t i = 0; i < b->c.n_entries; i++)
        msg_unref(&b->ents[i].msg);
    msg_unref(&b->will);
    free(b->subs);
    free(b->ents);
    free(b->inbound);
}

static void on_claim(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    store_claim_fn cb = (store_claim_fn)o->cb;
    claim_buf_t b = {0};
    if (status == SL_OK && (r->type == REDIS_REPLY_INTEGER ||
                            r->type == REDIS_REPLY_ERROR))
        status = rs_reply_status(o->rs, r, status);
    else if (status == SL_OK)
        status = parse_claim(r, &b);
    if (status == SL_EMALFORMED)
        rclient_count_error(o->rs->cl);
    if (status == SL_OK && o->rs->cluster)
        rs_index_put(o->rs, o->cid, o->clen, -2);
    if (cb)
        cb(o->arg, status, status == SL_OK ? &b.c : NULL);
    claim_buf_fini(&b);
}

void redis_claim(store_t *st, const char *cid, size_t clen, bool clean,
                 const store_session_t *rec, store_claim_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_script(rs, &c, SCRIPT_CLAIM, cid, clen, K_ALL, true);
    rcmd_bytes(&c, cid, clen);
    rcmd_str(&c, clean ? "1" : "0");
    rcmd_u64(&c, sl_now_ms());
    rec_args(&c, rec);
    rs_send_op(rs, &c, 0, on_claim, (void *)cb, arg, cid, clen);
}

/* ---- session record ---------------------------------------------------- */

void redis_session_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, const store_session_t *rec,
                       store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_fenced(rs, &c, SCRIPT_SESSION_PUT, cid, clen, K_S, epoch);
    rec_args(&c, rec);
    rs_send_done(rs, &c, RCLIENT_REPLAY, cb, arg);
}

static void on_offline(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    if (status == SL_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long at = r->element[1]->integer; /* < 0: no expiry */
        if (o->rs->cluster)
            rs_index_put(o->rs, o->cid, o->clen, at < 0 ? -1 : at);
    } else {
        status = rs_reply_status(o->rs, r, status);
        if (status == SL_OK)
            status = SL_EMALFORMED;
    }
    rs_op_done(o, status);
}

void redis_session_offline(store_t *st, const char *cid, size_t clen,
                           uint64_t epoch, uint64_t now_ms, store_done_fn cb,
                           void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_script(rs, &c, SCRIPT_OFFLINE, cid, clen, K_S, true);
    rcmd_u64(&c, epoch);
    rcmd_u64(&c, now_ms);
    rcmd_bytes(&c, cid, clen);
    rs_send_op(rs, &c, RCLIENT_REPLAY, on_offline, (void *)cb, arg, cid, clen);
}

static void on_del(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    status = rs_reply_status(o->rs, r, status);
    if (o->rs->cluster && (status == SL_OK || status == SL_ENOTFOUND))
        rs_index_drop(o->rs, o->cid, o->clen, false);
    rs_op_done(o, status);
}

void redis_session_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    bool offline_only = false;
    if (epoch == 0) {
        /* only offline; and only the epoch the sweep saw expire */
        uint64_t *seen = map_del(rs->swept, cid, clen);
        offline_only = true;
        if (seen)
            epoch = *seen;
        free(seen);
    }
    rcmd_t c;
    rs_cmd_script(rs, &c, SCRIPT_SESSION_DEL, cid, clen, K_ALL, true);
    rcmd_u64(&c, epoch);
    rcmd_str(&c, offline_only ? "1" : "0");
    rcmd_bytes(&c, cid, clen);
    rs_send_op(rs, &c, 0, on_del, (void *)cb, arg, cid, clen);
}

/* ---- expiry sweep ------------------------------------------------------ */

typedef struct sweep {
    rstore_t *rs;
    store_cids_fn cb;
    void *arg;
    uint64_t now;
    int status;
    size_t n, left;
    char **cids;
    uint64_t *epochs; /* 0 = not expired */
} sweep_t;

typedef struct sweep_ctx {
    sweep_t *sw;
    size_t i;
} sweep_ctx_t;

/* Remember the epoch of every expired candidate in rs->swept (for
 * store_session_del(epoch 0)) and list them in out; returns how many. */
static size_t sweep_remember(sweep_t *sw, const char **out)
{
    rstore_t *rs = sw->rs;
    size_t n = 0;
    map_free(rs->swept, free);
    rs->swept = map_new();
    for (size_t i = 0; out && i < sw->n; i++) {
        if (!sw->epochs[i])
            continue;
        uint64_t *e = malloc(sizeof(*e));
        if (e && rs->swept &&
            map_put(rs->swept, sw->cids[i], strlen(sw->cids[i]), e, NULL) ==
                SL_OK) {
            *e = sw->epochs[i];
            out[n++] = sw->cids[i];
        } else {
            free(e);
        }
    }
    if (!rs->swept && sw->status == SL_OK)
        sw->status = SL_ENOMEM;
    return n;
}

static void sweep_finish(sweep_t *sw)
{
    const char **out = calloc(sw->n + 1, sizeof(*out));
    if (!out && sw->status == SL_OK)
        sw->status = SL_ENOMEM;
    size_t n = sweep_remember(sw, out);
    if (sw->cb)
        sw->cb(sw->arg, sw->status, sw->status == SL_OK ? out : NULL,
               sw->status == SL_OK ? n : 0);
    free(out);
    for (size_t i = 0; i < sw->n; i++)
        free(sw->cids[i]);
    free(sw->cids);
    free(sw->epochs);
    free(sw);
}

/* One candidate's record: expired, or fix the index. */
static void on_sweep_check(void *ctx, const redisReply *r, int status)
{
    sweep_ctx_t *sc = ctx;
    sweep_t *sw = sc->sw;
    const char *cid = sw->cids[sc->i];
    size_t clen = strlen(cid);
    srec_t s;
    int rc = status == SL_OK ? srec_parse(r, &s) : status;
    if (rc == SL_ENOTFOUND) {
        rs_index_drop(sw->rs, cid, clen, false);
    } else if (rc != SL_OK) {
        if (sw->status == SL_OK)
            sw->status = status != SL_OK ? status : SL_EIO;
    } else if (!s.offline || s.never) {
        rs_index_drop(sw->rs, cid, clen, true);
    } else if (s.at > sw->now) {
        rs_index_put(sw->rs, cid, clen, (int64_t)s.at);
    } else {
        sw->epochs[sc->i] = s.epoch;
    }
    if (--sw->left == 0)
        sweep_finish(sw);
}

/* A sweep for the ZRANGEBYSCORE reply to o (whose tail is the time). */
static sweep_t *sweep_new(const op_t *o, int status)
{
    sweep_t *sw = calloc(1, sizeof(*sw));
    if (!sw)
        abort();
    sw->rs = o->rs;
    sw->cb = (store_cids_fn)o->cb;
    sw->arg = o->arg;
    sw->now = strtoull(o->cid, NULL, 10);
    sw->status = status;
    return sw;
}

/* The candidates of the reply {member, score, ...}; false when none. */
static bool sweep_collect(sweep_t *sw, const redisReply *r)
{
    size_t n = r->elements / 2;
    sw->cids = calloc(n + 1, sizeof(*sw->cids));
    sw->epochs = calloc(n + 1, sizeof(*sw->epochs));
    if (!sw->cids || !sw->epochs)
        abort();
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = r->element[2 * i];
        if (rs_is_str(m) && (sw->cids[sw->n] = strndup(m->str, m->len)))
            sw->n++;
    }
    sw->left = sw->n;
    return sw->n > 0;
}

static void on_sweep_range(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    sweep_t *sw = sweep_new(o, status);
    if (status == SL_OK && r->type != REDIS_REPLY_ARRAY)
        sw->status =
            rs_reply_status(o->rs, r, SL_OK) == SL_OK ? SL_EMALFORMED : SL_EIO;
    if (sw->status != SL_OK || !sweep_collect(sw, r)) {
        sweep_finish(sw);
        return;
    }
    for (size_t i = 0; i < sw->n; i++) {
        rcmd_t c;
        srec_cmd(o->rs, &c, sw->cids[i], strlen(sw->cids[i]));
        sweep_ctx_t sc = {sw, i};
        rs_send(o->rs, &c, RCLIENT_REPLAY, on_sweep_check, &sc, sizeof(sc),
                NULL, 0);
    }
}

void redis_session_expired(store_t *st, uint64_t now_ms, store_cids_fn cb,
                           void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    char now[24];
    int len = snprintf(now, sizeof(now), "%llu", (unsigned long long)now_ms);
    rcmd_t c;
    rs_cmd_init(rs, &c);
    rcmd_str(&c, "ZRANGEBYSCORE");
    rcmd_key(&c, "expiry");
    rcmd_str(&c, "-inf");
    rcmd_str(&c, now);
    rcmd_str(&c, "WITHSCORES");
    rcmd_str(&c, "LIMIT");
    rcmd_str(&c, "0");
    rcmd_u64(&c, SWEEP_MAX);
    /* the time travels as the context's tail */
    rs_send_op(rs, &c, RCLIENT_REPLAY, on_sweep_range, (void *)cb, arg, now,
               (size_t)len);
}
