/*
 * redis_queue.c - the queue of a session in the Redis-protocol store
 * (redis.c): a stream of entries (:q) and the delivery state of the sent
 * ones (:out); append, mark, ack and the read of entries after an id.
 *
 * Queue appends are gathered while the loop iteration runs and leave as
 * one script call (a message fanned out to many persistent sessions is one
 * request carrying the message once, instead of one per session). Any
 * other command sends the gathered appends first, so the server sees every
 * operation in issue order. On a cluster the sessions of one call would
 * need to share a slot, so there each append is its own call.
 */
#include "redis_int.h"

#include "blob.h"
#include "scripts.h"

#include "starling/err.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 256             /* appends per script call */
#define BATCH_BYTES (256 * 1024) /* message bytes per script call */
#define BATCH_SAME_MSG 8         /* entries searched for the same message */

static const char *const K_Q[] = {":s", ":q", ":out", NULL};

/* ---- entries ----------------------------------------------------------- */

/* pid | state << 16 of entry `id` in the flat :out reply, 0 when absent. */
static uint32_t out_lookup(const redisReply *out, uint64_t id)
{
    for (size_t i = 0; i + 1 < out->elements; i += 2)
        if (rs_str_u64(out->element[i]) == id)
            return (uint32_t)rs_str_u64(out->element[i + 1]);
    return 0;
}

int rs_parse_entry(const redisReply *e, const redisReply *out,
                   store_entry_t *se)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        !rs_is_str(e->element[0]) || e->element[1]->type != REDIS_REPLY_ARRAY)
        return SL_EMALFORMED;
    const redisReply *f = e->element[1];
    const redisReply *m = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (rs_is_str(f->element[i]) && f->element[i]->len == 1 &&
            f->element[i]->str[0] == 'm')
            m = f->element[i + 1];
    if (!rs_is_str(m) || m->len < 2)
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

/* ---- batched appends --------------------------------------------------- */

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
        status = rs_reply_status(b->rs, r, status);
    } else if (status == SL_OK &&
               (r->type != REDIS_REPLY_ARRAY || r->elements != b->n)) {
        rclient_count_error(b->rs->cl);
        status = SL_EMALFORMED;
    }
    for (size_t i = 0; i < b->n; i++) {
        int st = status;
        uint64_t id = 0;
        if (st == SL_OK)
            st = rs_reply_status(b->rs, r->element[i], SL_OK);
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

void rs_batch_flush(rstore_t *rs)
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
    rs_batch_flush(arg);
}

int rs_batch_init(rstore_t *rs)
{
    rs->batch.ev = event_new(rs->base.base, -1, 0, on_batch, rs);
    return rs->batch.ev ? SL_OK : SL_ENOMEM;
}

void rs_batch_fini(batch_t *b)
{
    if (b->ev)
        event_free(b->ev);
    free(b->items);
    free(b->ents);
    free(b->cids);
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

void redis_queue_append(store_t *st, const char *cid, size_t clen, msg_t *m,
                        uint8_t qos, const store_limits_t *lim, store_id_fn cb,
                        void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    batch_t *b = &rs->batch;
    store_limits_t l = lim ? *lim : (store_limits_t){0};
    if (b->n && (l.max_queued != b->lim.max_queued ||
                 l.drop_oldest != b->lim.drop_oldest))
        rs_batch_flush(rs);
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
        rs_batch_flush(rs);
    else if (b->n == 1)
        event_active(b->ev, EV_READ, 0);
}

/* ---- mark, ack, since -------------------------------------------------- */

void redis_queue_mark(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                      uint64_t id, uint16_t pid, uint8_t state,
                      store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_fenced(rs, &c, SCRIPT_MARK, cid, clen, K_Q, epoch);
    rcmd_u64(&c, id);
    rcmd_u64(&c, pid ? (uint64_t)pid | (uint64_t)state << 16 : 0);
    rs_send_done(rs, &c, RCLIENT_REPLAY, cb, arg);
}

void redis_queue_ack(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                     uint64_t id, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_fenced(rs, &c, SCRIPT_ACK, cid, clen, K_Q, epoch);
    rcmd_u64(&c, id);
    rs_send_done(rs, &c, 0, cb, arg);
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
        if (rs_parse_entry(r->element[i], &none, &ents[n]) == SL_OK)
            n++;
    cb(o->arg, SL_OK, ents, n);
    for (size_t i = 0; i < n; i++)
        msg_unref(&ents[i].msg);
    free(ents);
}

void redis_queue_since(store_t *st, const char *cid, size_t clen,
                       uint64_t after, uint32_t max, store_entries_fn cb,
                       void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    char start[32];
    rs_cmd_init(rs, &c);
    rcmd_str(&c, "XRANGE");
    rcmd_ckey(&c, cid, clen, ":q");
    snprintf(start, sizeof(start), "%llu-0", (unsigned long long)after + 1);
    rcmd_str(&c, start);
    rcmd_str(&c, "+");
    rcmd_str(&c, "COUNT");
    rcmd_u64(&c, max);
    rs_send_op(rs, &c, RCLIENT_REPLAY, on_since, (void *)cb, arg, NULL, 0);
}
