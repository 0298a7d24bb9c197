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
 * The global indexes sl:psessions (every stored session) and sl:expiry
 * (offline sessions by expiry time) live in other slots than a session.
 * On a standalone server the scripts update them atomically with the
 * session (extra KEYS). On a cluster, redis.c updates them after the
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
 *
 * Queue appends are gathered while the loop iteration runs and leave as
 * one script call (a message fanned out to many persistent sessions is one
 * request carrying the message once, instead of one per session). Any
 * other command sends the gathered appends first, so the server sees every
 * operation in issue order. On a cluster the sessions of one call would
 * need to share a slot, so there each append is its own call.
 */
#include "backend.h"
#include "blob.h"
#include "rclient.h"
#include "redis_url.h"
#include "scripts.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/map.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_MAX 512
#define SCAN_COUNT "256"
#define NEVER UINT32_MAX
#define BATCH_MAX 256             /* appends per script call */
#define BATCH_BYTES (256 * 1024) /* message bytes per script call */
#define BATCH_SAME_MSG 8         /* entries searched for the same message */

/* One append waiting in the batch; its client id is in batch.cids. */
typedef struct bitem {
    size_t cid_off, clen;
    uint32_t entry; /* index in batch.ents */
    store_id_fn cb;
    void *arg;
} bitem_t;

typedef struct bentry {
    msg_t *msg; /* a reference */
    uint8_t qos;
} bentry_t;

/* The appends of this loop iteration, not sent yet (see the header). */
typedef struct batch {
    bitem_t *items;
    size_t n, cap;
    bentry_t *ents;
    size_t n_ents, cap_ents;
    char *cids;
    size_t cids_len, cids_cap;
    size_t bytes;
    store_limits_t lim;
    struct event *ev; /* sends the batch at the end of the iteration */
} batch_t;

typedef struct rstore {
    store_t base;
    redis_url_t url;
    rclient_t *cl;
    bool cluster;
    bool closing; /* store_free() runs: quiet failures */
    map_t *swept; /* cid -> epoch (uint64_t *) of the last sweep */
    batch_t batch;
} rstore_t;

/* Context of a one-reply operation; the client id follows in cid[]. */
typedef struct op {
    rstore_t *rs;
    void *cb;
    void *arg;
    size_t clen;
    char cid[];
} op_t;

/* ---- helpers ----------------------------------------------------------- */

static void cmd_init(rstore_t *rs, rcmd_t *c)
{
    rcmd_init(c, rs->url.prefix);
}

static void batch_flush(rstore_t *rs);

/* Every command but the batch goes out here, after the appends gathered
 * before it. */
static void rs_send(rstore_t *rs, const rcmd_t *c, unsigned flags,
                    rclient_fn fn, const void *ctx, size_t ctxlen,
                    const void *tail, size_t taillen)
{
    batch_flush(rs);
    rclient_send(rs->cl, c, flags, fn, ctx, ctxlen, tail, taillen);
}

static void send_op(rstore_t *rs, const rcmd_t *c, unsigned flags,
                    rclient_fn fn, void *cb, void *arg, const char *cid,
                    size_t clen)
{
    op_t o = {.rs = rs, .cb = cb, .arg = arg, .clen = clen};
    rs_send(rs, c, flags, fn, &o, sizeof(o), cid, cid ? clen : 0);
}

/* A script's status reply: 0 or one of the SL_* codes scripts return. */
static int reply_status(rstore_t *rs, const redisReply *r, int status)
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

static bool is_str(const redisReply *r)
{
    return r &&
           (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static uint64_t str_u64(const redisReply *r)
{
    char buf[24];
    if (!is_str(r) || r->len == 0 || r->len >= sizeof(buf))
        return 0;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    return strtoull(buf, NULL, 10);
}

static void on_done(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    status = reply_status(o->rs, r, status);
    if (o->cb)
        ((store_done_fn)o->cb)(o->arg, status);
}

/* EVALSHA script with the per-client keys named in sfx (NULL-ended) and
 * the global index keys when standalone and `index`. */
static void cmd_script(rstore_t *rs, rcmd_t *c, int script, const char *cid,
                       size_t clen, const char *const *sfx, bool index)
{
    int n = 0;
    while (sfx[n])
        n++;
    bool extra = index && !rs->cluster;
    cmd_init(rs, c);
    rcmd_evalsha(c, script, n + (extra ? 2 : 0));
    for (int i = 0; i < n; i++)
        rcmd_ckey(c, cid, clen, sfx[i]);
    if (extra) {
        rcmd_key(c, "psessions");
        rcmd_key(c, "expiry");
    }
}

static const char *const K_S[] = {":s", NULL};
static const char *const K_SUBS[] = {":s", ":subs", NULL};
static const char *const K_Q[] = {":s", ":q", ":out", NULL};
static const char *const K_IN[] = {":s", ":in", NULL};
static const char *const K_ALL[] = {":s", ":subs", ":q", ":out", ":in", NULL};

static void rec_args(rcmd_t *c, const store_session_t *rec)
{
    rcmd_u64(c, rec->version);
    rcmd_u64(c, rec->expiry);
    rcmd_msg(c, rec->will);
    rcmd_u64(c, rec->will_delay);
}

/* ---- global index upkeep (cluster) -------------------------------------- */

static void on_index_done(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    if (o->rs->closing)
        return;
    if (status != SL_OK || r->type == REDIS_REPLY_ERROR)
        log_warning("store: index update for client '%s' failed: %s", o->cid,
                    status != SL_OK ? sl_strerror(status) : r->str);
}

static void index_cmd(rstore_t *rs, const char *verb, const char *key,
                      const char *score, const char *cid, size_t clen)
{
    rcmd_t c;
    cmd_init(rs, &c);
    rcmd_str(&c, verb);
    rcmd_key(&c, key);
    if (score)
        rcmd_str(&c, score);
    rcmd_bytes(&c, cid, clen);
    send_op(rs, &c, RCLIENT_REPLAY, on_index_done, NULL, NULL, cid, clen);
}

static void index_put(rstore_t *rs, const char *cid, size_t clen, int64_t at)
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
    if (d->rs->closing)
        return;
    if (status != SL_OK || r->type == REDIS_REPLY_ERROR) {
        log_warning("store: index update for client '%s' failed: %s", d->cid,
                    status != SL_OK ? sl_strerror(status) : r->str);
        return;
    }
    if (d->step < 2) {
        idrop_step(d->rs, d->step + 1, d->cid, d->clen);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        !is_str(r->element[0]))
        return; /* gone: nothing to restore */
    int64_t at = -2;
    if (is_str(r->element[1]) && r->element[1]->len == 1 &&
        r->element[1]->str[0] == '0' && is_str(r->element[2]) &&
        strcmp(r->element[2]->str, "never") != 0)
        at = (int64_t)str_u64(r->element[2]);
    index_put(d->rs, d->cid, d->clen, at);
}

static void idrop_step(rstore_t *rs, int step, const char *cid, size_t clen)
{
    rcmd_t c;
    cmd_init(rs, &c);
    if (step == 0) {
        rcmd_str(&c, "SREM");
        rcmd_key(&c, "psessions");
        rcmd_bytes(&c, cid, clen);
    } else if (step == 1) {
        rcmd_str(&c, "ZREM");
        rcmd_key(&c, "expiry");
        rcmd_bytes(&c, cid, clen);
    } else {
        rcmd_str(&c, "HMGET");
        rcmd_ckey(&c, cid, clen, ":s");
        rcmd_str(&c, "epoch");
        rcmd_str(&c, "on");
        rcmd_str(&c, "at");
    }
    idrop_t d = {.rs = rs, .step = step, .clen = clen};
    rs_send(rs, &c, RCLIENT_REPLAY, on_idrop, &d, sizeof(d), cid,
                 clen);
}

/* keep_psession: only the expiry entry goes (the session exists). */
static void index_drop(rstore_t *rs, const char *cid, size_t clen,
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

static int parse_subs(const redisReply *r, store_sub_t **out, size_t *n)
{
    *n = 0;
    *out = NULL;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2)
        return SL_EMALFORMED;
    store_sub_t *subs = calloc(r->elements / 2 + 1, sizeof(*subs));
    if (!subs)
        return SL_ENOMEM;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        store_sub_t *s = &subs[*n];
        if (!is_str(f) || !is_str(v) ||
            blob_sub_read(v->str, v->len, &s->opts, &s->sub_id) != SL_OK)
            continue;
        s->filter = f->str;
        s->flen = f->len;
        (*n)++;
    }
    *out = subs;
    return SL_OK;
}

/* pid | state << 16 of entry `id` in the flat :out reply, 0 when absent. */
static uint32_t out_lookup(const redisReply *out, uint64_t id)
{
    for (size_t i = 0; i + 1 < out->elements; i += 2)
        if (str_u64(out->element[i]) == id)
            return (uint32_t)str_u64(out->element[i + 1]);
    return 0;
}

static int parse_entry(const redisReply *e, const redisReply *out,
                       store_entry_t *se)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        !is_str(e->element[0]) || e->element[1]->type != REDIS_REPLY_ARRAY)
        return SL_EMALFORMED;
    const redisReply *f = e->element[1];
    const redisReply *m = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (is_str(f->element[i]) && f->element[i]->len == 1 &&
            f->element[i]->str[0] == 'm')
            m = f->element[i + 1];
    if (!is_str(m) || m->len < 2)
        return SL_EMALFORMED;
    se->id = strtoull(e->element[0]->str, NULL, 10);
    se->qos = (uint8_t)m->str[0];
    int rc = blob_msg_read(m->str + 1, m->len - 1, &se->msg);
    if (rc != SL_OK)
        return rc;
    uint32_t v = out_lookup(out, se->id);
    se->pid = (uint16_t)(v & 0xFFFF);
    se->state = (uint8_t)(v >> 16);
    return SL_OK;
}

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
        int rc = parse_entry(q->element[i], out, se);
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
        uint64_t pid = str_u64(in->element[i]);
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
        b->c.prev.version = (uint8_t)str_u64(e[3]);
        b->c.prev.expiry = (uint32_t)str_u64(e[4]);
        if (is_str(e[5]) && e[5]->len &&
            blob_msg_read(e[5]->str, e[5]->len, &b->will) != SL_OK)
            log_warning("store: skipping a malformed will");
        b->c.prev.will = b->will;
        b->c.prev.will_delay = (uint32_t)str_u64(e[6]);
    }
    if (!b->c.present)
        return SL_OK;
    int rc = parse_subs(e[7], &b->subs, &b->c.n_subs);
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
    if (status == SL_OK && r->type == REDIS_REPLY_INTEGER)
        status = reply_status(o->rs, r, status);
    else if (status == SL_OK && r->type == REDIS_REPLY_ERROR)
        status = reply_status(o->rs, r, status);
    else if (status == SL_OK)
        status = parse_claim(r, &b);
    if (status == SL_EMALFORMED)
        rclient_count_error(o->rs->cl);
    if (status == SL_OK && o->rs->cluster)
        index_put(o->rs, o->cid, o->clen, -2);
    if (cb)
        cb(o->arg, status, status == SL_OK ? &b.c : NULL);
    claim_buf_fini(&b);
}

static void redis_claim(store_t *st, const char *cid, size_t clen, bool clean,
                        const store_session_t *rec, store_claim_fn cb,
                        void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_CLAIM, cid, clen, K_ALL, true);
    rcmd_bytes(&c, cid, clen);
    rcmd_str(&c, clean ? "1" : "0");
    rcmd_u64(&c, sl_now_ms());
    rec_args(&c, rec);
    send_op(rs, &c, 0, on_claim, (void *)cb, arg, cid, clen);
}

/* ---- session record ---------------------------------------------------- */

static void redis_session_put(store_t *st, const char *cid, size_t clen,
                              uint64_t epoch, const store_session_t *rec,
                              store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_SESSION_PUT, cid, clen, K_S, false);
    rcmd_u64(&c, epoch);
    rec_args(&c, rec);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

static void on_offline(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    if (status == SL_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        if (o->rs->cluster)
            index_put(o->rs, o->cid, o->clen,
                      r->element[1]->integer < 0 ? -1 : r->element[1]->integer);
    } else {
        status = reply_status(o->rs, r, status);
        if (status == SL_OK)
            status = SL_EMALFORMED;
    }
    if (o->cb)
        ((store_done_fn)o->cb)(o->arg, status);
}

static void redis_session_offline(store_t *st, const char *cid, size_t clen,
                                  uint64_t epoch, uint64_t now_ms,
                                  store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_OFFLINE, cid, clen, K_S, true);
    rcmd_u64(&c, epoch);
    rcmd_u64(&c, now_ms);
    rcmd_bytes(&c, cid, clen);
    send_op(rs, &c, RCLIENT_REPLAY, on_offline, (void *)cb, arg, cid, clen);
}

static void on_del(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    status = reply_status(o->rs, r, status);
    if (o->rs->cluster && (status == SL_OK || status == SL_ENOTFOUND))
        index_drop(o->rs, o->cid, o->clen, false);
    if (o->cb)
        ((store_done_fn)o->cb)(o->arg, status);
}

static void redis_session_del(store_t *st, const char *cid, size_t clen,
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
    cmd_script(rs, &c, SCRIPT_SESSION_DEL, cid, clen, K_ALL, true);
    rcmd_u64(&c, epoch);
    rcmd_str(&c, offline_only ? "1" : "0");
    rcmd_bytes(&c, cid, clen);
    send_op(rs, &c, 0, on_del, (void *)cb, arg, cid, clen);
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

static void sweep_finish(sweep_t *sw)
{
    rstore_t *rs = sw->rs;
    const char **out = calloc(sw->n + 1, sizeof(*out));
    size_t n = 0;
    if (!out && sw->status == SL_OK)
        sw->status = SL_ENOMEM;
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

/* One candidate's record {epoch, on, at}: expired, or fix the index. */
static void on_sweep_check(void *ctx, const redisReply *r, int status)
{
    sweep_ctx_t *sc = ctx;
    sweep_t *sw = sc->sw;
    const char *cid = sw->cids[sc->i];
    size_t clen = strlen(cid);
    if (status != SL_OK || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (sw->status == SL_OK)
            sw->status = status != SL_OK ? status : SL_EIO;
    } else if (!is_str(r->element[0])) {
        index_drop(sw->rs, cid, clen, false);
    } else {
        bool offline = is_str(r->element[1]) && r->element[1]->len == 1 &&
                       r->element[1]->str[0] == '0';
        bool never =
            !is_str(r->element[2]) || strcmp(r->element[2]->str, "never") == 0;
        uint64_t at = never ? 0 : str_u64(r->element[2]);
        if (!offline || never)
            index_drop(sw->rs, cid, clen, true);
        else if (at > sw->now)
            index_put(sw->rs, cid, clen, (int64_t)at);
        else
            sw->epochs[sc->i] = str_u64(r->element[0]);
    }
    if (--sw->left == 0)
        sweep_finish(sw);
}

static void on_sweep_range(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    sweep_t *sw = calloc(1, sizeof(*sw));
    if (!sw)
        abort();
    sw->rs = o->rs;
    sw->cb = (store_cids_fn)o->cb;
    sw->arg = o->arg;
    sw->now = strtoull(o->cid, NULL, 10);
    sw->status = status;
    if (status == SL_OK && r->type != REDIS_REPLY_ARRAY)
        sw->status =
            reply_status(o->rs, r, SL_OK) == SL_OK ? SL_EMALFORMED : SL_EIO;
    if (sw->status != SL_OK || r->elements == 0) {
        sweep_finish(sw);
        return;
    }
    size_t n = r->elements / 2; /* member, score, ... */
    sw->cids = calloc(n + 1, sizeof(*sw->cids));
    sw->epochs = calloc(n + 1, sizeof(*sw->epochs));
    if (!sw->cids || !sw->epochs)
        abort();
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = r->element[2 * i];
        if (is_str(m) && (sw->cids[sw->n] = strndup(m->str, m->len)))
            sw->n++;
    }
    sw->left = sw->n;
    if (sw->n == 0) {
        sweep_finish(sw);
        return;
    }
    for (size_t i = 0; i < sw->n; i++) {
        rcmd_t c;
        cmd_init(o->rs, &c);
        rcmd_str(&c, "HMGET");
        rcmd_ckey(&c, sw->cids[i], strlen(sw->cids[i]), ":s");
        rcmd_str(&c, "epoch");
        rcmd_str(&c, "on");
        rcmd_str(&c, "at");
        sweep_ctx_t sc = {sw, i};
        rs_send(o->rs, &c, RCLIENT_REPLAY, on_sweep_check, &sc,
                     sizeof(sc), NULL, 0);
    }
}

static void redis_session_expired(store_t *st, uint64_t now_ms,
                                  store_cids_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    char now[24];
    int len = snprintf(now, sizeof(now), "%llu", (unsigned long long)now_ms);
    rcmd_t c;
    cmd_init(rs, &c);
    rcmd_str(&c, "ZRANGEBYSCORE");
    rcmd_key(&c, "expiry");
    rcmd_str(&c, "-inf");
    rcmd_str(&c, now);
    rcmd_str(&c, "WITHSCORES");
    rcmd_str(&c, "LIMIT");
    rcmd_str(&c, "0");
    rcmd_u64(&c, SWEEP_MAX);
    /* the time travels as the context's tail */
    send_op(rs, &c, RCLIENT_REPLAY, on_sweep_range, (void *)cb, arg, now,
            (size_t)len);
}

/* ---- subscriptions ----------------------------------------------------- */

static void redis_sub_put(store_t *st, const char *cid, size_t clen,
                          uint64_t epoch, const store_sub_t *sub,
                          store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    uint8_t v[BLOB_SUB_LEN];
    blob_sub_write(sub->opts, sub->sub_id, v);
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_SUB_PUT, cid, clen, K_SUBS, false);
    rcmd_u64(&c, epoch);
    rcmd_bytes(&c, sub->filter, sub->flen);
    rcmd_bytes(&c, v, sizeof(v));
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

static void redis_sub_del(store_t *st, const char *cid, size_t clen,
                          uint64_t epoch, const char *filter, size_t flen,
                          store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_SUB_DEL, cid, clen, K_SUBS, false);
    rcmd_u64(&c, epoch);
    rcmd_bytes(&c, filter, flen);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

/* store_sub_load: SSCAN psessions, then each session's subscriptions. */
typedef struct sload {
    rstore_t *rs;
    store_psub_fn cb;
    void *arg;
    int status;
    size_t left; /* replies of this batch still expected */
    bool more;   /* the scan has not ended */
    char cursor[24];
} sload_t;

typedef struct sload_ctx {
    sload_t *sl;
    size_t clen;
    char cid[];
} sload_ctx_t;

static void sload_scan(sload_t *sl);

static void sload_next(sload_t *sl)
{
    if (sl->left)
        return;
    if (sl->more && sl->status == SL_OK) {
        sload_scan(sl);
        return;
    }
    if (sl->cb)
        sl->cb(sl->arg, sl->status, NULL, NULL, 0);
    free(sl);
}

static void on_sload_subs(void *ctx, const redisReply *r, int status)
{
    sload_ctx_t *sc = ctx;
    sload_t *sl = sc->sl;
    store_sub_t *subs = NULL;
    size_t n = 0;
    sl->left--;
    if (status == SL_OK && r->type == REDIS_REPLY_NIL) {
        index_drop(sl->rs, sc->cid, sc->clen, false); /* stale entry */
    } else if (status != SL_OK || r->type != REDIS_REPLY_ARRAY) {
        if (sl->status == SL_OK)
            sl->status = status != SL_OK ? status : SL_EIO;
    } else if (parse_subs(r, &subs, &n) == SL_OK && sl->cb) {
        sl->cb(sl->arg, SL_OK, sc->cid, subs, n);
    }
    free(subs);
    sload_next(sl);
}

static void on_sload_scan(void *ctx, const redisReply *r, int status)
{
    sload_t *sl = *(sload_t **)ctx;
    if (status == SL_OK &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         !is_str(r->element[0]) || r->element[1]->type != REDIS_REPLY_ARRAY ||
         r->element[0]->len >= sizeof(sl->cursor)))
        status = r->type == REDIS_REPLY_ERROR ? SL_EIO : SL_EMALFORMED;
    if (status != SL_OK) {
        sl->status = status;
        sl->more = false;
        sload_next(sl);
        return;
    }
    memcpy(sl->cursor, r->element[0]->str, r->element[0]->len);
    sl->cursor[r->element[0]->len] = '\0';
    sl->more = strcmp(sl->cursor, "0") != 0;
    const redisReply *m = r->element[1];
    for (size_t i = 0; i < m->elements; i++) {
        const redisReply *e = m->element[i];
        if (!is_str(e))
            continue;
        rcmd_t c;
        cmd_script(sl->rs, &c, SCRIPT_SUB_LOAD, e->str, e->len, K_SUBS, false);
        sload_ctx_t x = {.sl = sl, .clen = e->len};
        sl->left++;
        rs_send(sl->rs, &c, RCLIENT_REPLAY, on_sload_subs, &x,
                     sizeof(x), e->str, e->len);
    }
    sload_next(sl);
}

static void sload_scan(sload_t *sl)
{
    rcmd_t c;
    cmd_init(sl->rs, &c);
    rcmd_str(&c, "SSCAN");
    rcmd_key(&c, "psessions");
    rcmd_str(&c, sl->cursor);
    rcmd_str(&c, "COUNT");
    rcmd_str(&c, SCAN_COUNT);
    sl->more = false;
    rs_send(sl->rs, &c, RCLIENT_REPLAY, on_sload_scan, &sl, sizeof(sl),
                 NULL, 0);
}

static void redis_sub_load(store_t *st, store_psub_fn cb, void *arg)
{
    sload_t *sl = calloc(1, sizeof(*sl));
    if (!sl)
        abort();
    sl->rs = (rstore_t *)st;
    sl->cb = cb;
    sl->arg = arg;
    strcpy(sl->cursor, "0");
    sload_scan(sl);
}

/* ---- queue ------------------------------------------------------------- */

/* The completions of one sent batch: rclient keeps a copy of this. */
typedef struct bsent {
    rstore_t *rs;
    size_t n;
    struct {
        store_id_fn cb;
        void *arg;
    } it[];
} bsent_t;

static void on_append(void *ctx, const redisReply *r, int status)
{
    bsent_t *b = ctx;
    if (status == SL_OK && r->type == REDIS_REPLY_ERROR) {
        status = reply_status(b->rs, r, status);
    } else if (status == SL_OK &&
               (r->type != REDIS_REPLY_ARRAY || r->elements != b->n)) {
        rclient_count_error(b->rs->cl);
        status = SL_EMALFORMED;
    }
    for (size_t i = 0; i < b->n; i++) {
        int st = status;
        uint64_t id = 0;
        if (st == SL_OK)
            st = reply_status(b->rs, r->element[i], SL_OK);
        if (st == SL_OK)
            id = (uint64_t)r->element[i]->integer;
        if (b->it[i].cb)
            b->it[i].cb(b->it[i].arg, st, id);
    }
}

/* EVALSHA append, KEYS s q out per append, ARGV as scripts.c describes. */
static void batch_cmd(rstore_t *rs, const batch_t *b, rcmd_t *c)
{
    rcmd_init_n(c, rs->url.prefix, 6 + 4 * (int)b->n + (int)b->n_ents);
    rcmd_evalsha(c, SCRIPT_APPEND, 3 * (int)b->n);
    for (size_t i = 0; i < b->n; i++) {
        const char *cid = b->cids + b->items[i].cid_off;
        size_t clen = b->items[i].clen;
        rcmd_ckey(c, cid, clen, ":s");
        rcmd_ckey(c, cid, clen, ":q");
        rcmd_ckey(c, cid, clen, ":out");
    }
    rcmd_u64(c, b->lim.max_queued);
    rcmd_str(c, b->lim.drop_oldest ? "1" : "0");
    rcmd_u64(c, b->n_ents);
    for (size_t i = 0; i < b->n_ents; i++)
        rcmd_entry(c, b->ents[i].qos, b->ents[i].msg);
    for (size_t i = 0; i < b->n; i++)
        rcmd_u64(c, (uint64_t)b->items[i].entry + 1);
}

/* Send the gathered appends as one request. Safe to call at any time. */
static void batch_flush(rstore_t *rs)
{
    batch_t *b = &rs->batch;
    if (b->n == 0)
        return;
    size_t size = sizeof(bsent_t) + b->n * sizeof(((bsent_t *)0)->it[0]);
    bsent_t *sent = malloc(size);
    if (!sent)
        abort(); /* a lost completion would wedge its caller forever */
    sent->rs = rs;
    sent->n = b->n;
    for (size_t i = 0; i < b->n; i++) {
        sent->it[i].cb = b->items[i].cb;
        sent->it[i].arg = b->items[i].arg;
    }
    rcmd_t c;
    batch_cmd(rs, b, &c);
    rclient_send(rs->cl, &c, 0, on_append, sent, size, NULL, 0);
    rcmd_fini(&c);
    free(sent);
    for (size_t i = 0; i < b->n_ents; i++)
        msg_unref(&b->ents[i].msg);
    b->n = b->n_ents = b->cids_len = b->bytes = 0;
}

static void on_batch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    batch_flush(arg);
}

/* Grow *p (of *cap elements of `size`) to hold `need`; aborts on failure
 * like every allocation a completion depends on. */
static void grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *np = realloc(*p, n * size);
    if (!np)
        abort();
    *p = np;
    *cap = n;
}

/* The index of (m, qos) among the batch's entries, added if new. */
static uint32_t batch_entry(batch_t *b, msg_t *m, uint8_t qos)
{
    size_t stop = b->n_ents > BATCH_SAME_MSG ? b->n_ents - BATCH_SAME_MSG : 0;
    for (size_t i = b->n_ents; i > stop; i--)
        if (b->ents[i - 1].msg == m && b->ents[i - 1].qos == qos)
            return (uint32_t)(i - 1);
    grow((void **)&b->ents, &b->cap_ents, b->n_ents + 1, sizeof(*b->ents));
    b->ents[b->n_ents].msg = msg_ref(m);
    b->ents[b->n_ents].qos = qos;
    b->bytes += 1 + blob_msg_size(m);
    return (uint32_t)b->n_ents++;
}

static void redis_queue_append(store_t *st, const char *cid, size_t clen,
                               msg_t *m, uint8_t qos, const store_limits_t *lim,
                               store_id_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    batch_t *b = &rs->batch;
    store_limits_t l = lim ? *lim : (store_limits_t){0};
    if (b->n && (l.max_queued != b->lim.max_queued ||
                 l.drop_oldest != b->lim.drop_oldest))
        batch_flush(rs);
    b->lim = l;
    grow((void **)&b->items, &b->cap, b->n + 1, sizeof(*b->items));
    grow((void **)&b->cids, &b->cids_cap, b->cids_len + clen + 1, 1);
    bitem_t *it = &b->items[b->n++];
    it->cid_off = b->cids_len;
    it->clen = clen;
    it->entry = batch_entry(b, m, qos);
    it->cb = cb;
    it->arg = arg;
    if (clen)
        memcpy(b->cids + b->cids_len, cid, clen);
    b->cids_len += clen;
    b->bytes += clen;
    if (rs->cluster || b->n == BATCH_MAX || b->bytes >= BATCH_BYTES)
        batch_flush(rs);
    else if (b->n == 1)
        event_active(b->ev, EV_READ, 0);
}

static void redis_queue_mark(store_t *st, const char *cid, size_t clen,
                             uint64_t epoch, uint64_t id, uint16_t pid,
                             uint8_t state, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_MARK, cid, clen, K_Q, false);
    rcmd_u64(&c, epoch);
    rcmd_u64(&c, id);
    rcmd_u64(&c, pid ? (uint64_t)pid | (uint64_t)state << 16 : 0);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

static void redis_queue_ack(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, uint64_t id, store_done_fn cb,
                            void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, SCRIPT_ACK, cid, clen, K_Q, false);
    rcmd_u64(&c, epoch);
    rcmd_u64(&c, id);
    send_op(rs, &c, 0, on_done, (void *)cb, arg, NULL, 0);
}

static void on_since(void *ctx, const redisReply *r, int status)
{
    op_t *o = ctx;
    store_entries_fn cb = (store_entries_fn)o->cb;
    if (status != SL_OK || !r || r->type != REDIS_REPLY_ARRAY) {
        cb(o->arg, status != SL_OK ? status : SL_EMALFORMED, NULL, 0);
        return;
    }
    store_entry_t *ents = calloc(r->elements + 1, sizeof(*ents));
    redisReply none = {.type = REDIS_REPLY_ARRAY};
    size_t n = 0;
    if (!ents) {
        cb(o->arg, SL_ENOMEM, NULL, 0);
        return;
    }
    /* pid/state are not read: the sweep only wants entries the session
     * has not seen, which were never sent. */
    for (size_t i = 0; i < r->elements; i++)
        if (parse_entry(r->element[i], &none, &ents[n]) == SL_OK)
            n++;
    cb(o->arg, SL_OK, ents, n);
    for (size_t i = 0; i < n; i++)
        msg_unref(&ents[i].msg);
    free(ents);
}

static void redis_queue_since(store_t *st, const char *cid, size_t clen,
                              uint64_t after, uint32_t max,
                              store_entries_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    char start[32];
    cmd_init(rs, &c);
    rcmd_str(&c, "XRANGE");
    rcmd_ckey(&c, cid, clen, ":q");
    snprintf(start, sizeof(start), "%llu-0", (unsigned long long)after + 1);
    rcmd_str(&c, start);
    rcmd_str(&c, "+");
    rcmd_str(&c, "COUNT");
    rcmd_u64(&c, max);
    send_op(rs, &c, RCLIENT_REPLAY, on_since, (void *)cb, arg, NULL, 0);
}

/* ---- inbound QoS 2 ----------------------------------------------------- */

static void inbound(store_t *st, int script, const char *cid, size_t clen,
                    uint64_t epoch, uint16_t pid, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_script(rs, &c, script, cid, clen, K_IN, false);
    rcmd_u64(&c, epoch);
    rcmd_u64(&c, pid);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

static void redis_inbound_put(store_t *st, const char *cid, size_t clen,
                              uint64_t epoch, uint16_t pid, store_done_fn cb,
                              void *arg)
{
    inbound(st, SCRIPT_INBOUND_PUT, cid, clen, epoch, pid, cb, arg);
}

static void redis_inbound_del(store_t *st, const char *cid, size_t clen,
                              uint64_t epoch, uint16_t pid, store_done_fn cb,
                              void *arg)
{
    inbound(st, SCRIPT_INBOUND_DEL, cid, clen, epoch, pid, cb, arg);
}

/* ---- retained ---------------------------------------------------------- */

static void redis_retain_put(store_t *st, msg_t *m, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_init(rs, &c);
    rcmd_str(&c, "HSET");
    rcmd_key(&c, "retained");
    rcmd_bytes(&c, m->topic, m->topic_len);
    rcmd_msg(&c, m);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
}

static void redis_retain_del(store_t *st, const char *topic, size_t tlen,
                             store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    cmd_init(rs, &c);
    rcmd_str(&c, "HDEL");
    rcmd_key(&c, "retained");
    rcmd_bytes(&c, topic, tlen);
    send_op(rs, &c, RCLIENT_REPLAY, on_done, (void *)cb, arg, NULL, 0);
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
    if (!is_str(v) || blob_msg_read(v->str, v->len, &m) != SL_OK) {
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
    if (status == SL_OK &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         !is_str(r->element[0]) || r->element[1]->type != REDIS_REPLY_ARRAY))
        status = r->type == REDIS_REPLY_ERROR ? SL_EIO : SL_EMALFORMED;
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
    rcmd_t c;
    cmd_init(rl->rs, &c);
    rcmd_str(&c, "HSCAN");
    rcmd_key(&c, "retained");
    rcmd_str(&c, cursor);
    rcmd_str(&c, "COUNT");
    rcmd_str(&c, SCAN_COUNT);
    rs_send(rl->rs, &c, RCLIENT_REPLAY, on_rload, &rl, sizeof(rl),
                 NULL, 0);
}

static void redis_retain_load(store_t *st, store_msgs_fn cb, void *arg)
{
    rload_t *rl = calloc(1, sizeof(*rl));
    if (!rl)
        abort();
    rl->rs = (rstore_t *)st;
    rl->cb = cb;
    rl->arg = arg;
    rload_scan(rl, "0");
}

/* ---- lifecycle --------------------------------------------------------- */

static bool redis_ready(const store_t *st)
{
    return rclient_ready(((const rstore_t *)st)->cl);
}

static void redis_stats(const store_t *st, store_stats_t *out)
{
    rclient_stats(((const rstore_t *)st)->cl, out);
}

static void batch_fini(batch_t *b)
{
    if (b->ev)
        event_free(b->ev);
    free(b->items);
    free(b->ents);
    free(b->cids);
}

static void redis_free(store_t *st)
{
    rstore_t *rs = (rstore_t *)st;
    rs->closing = true;
    batch_flush(rs); /* failed with the rest by rclient_free() */
    rclient_free(rs->cl);
    batch_fini(&rs->batch);
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
    rs->batch.ev = event_new(base, -1, 0, on_batch, rs);
    if (!rs->swept || !rs->batch.ev) {
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
    batch_fini(&rs->batch);
    redis_url_fini(&rs->url);
    free(rs);
    return rc == SL_ENOMEM ? rc : SL_EINVAL;
}
