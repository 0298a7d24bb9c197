/*
 * redis_queue.c - the queue of a session in the Redis-protocol store
 * (redis.c): a stream of entries (:q) and the delivery state of the sent
 * ones (:out); append, mark, ack and the read of entries after an id; and
 * the session's inbound QoS 2 packet ids (:in), which travel the same way.
 *
 * Appends, marks, acks and inbound puts/dels are gathered while the loop
 * iteration runs and leave as one call of the queue script (scripts.c) at
 * its end: a message fanned out to many persistent sessions is one request
 * carrying the message once, and the marks and acks of a busy session cost
 * a share of one request instead of one each. The script runs them in
 * issue order and answers one result per operation; each operation's
 * callback gets its own. Any other command sends the gathered operations
 * first, so the server sees every operation in issue order.
 *
 * On a cluster the keys of one script call must share a slot: there is one
 * batch per slot (sessions whose hash tags land in one slot share it), and
 * the batches of one iteration leave together, in the order they were
 * opened. A batch whose operations may all run twice (marks, inbound ids)
 * is replayed after a lost connection; one holding an append or an ack
 * fails with the connection, as those did alone.
 */
#include "redis_int.h"

#include "blob.h"
#include "scripts.h"

#include "starling/err.h"
#include "starling/slots.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 256            /* operations per script call */
#define BATCH_BYTES (256 * 1024) /* bytes per script call (about) */
#define BATCH_SAME 8             /* entries searched for the same message,
                                    sessions for the same client id */
#define BATCH_KEEP 64            /* batches (slots) kept between iterations */

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

/* ---- batched queue operations ------------------------------------------ */

/* The completions of one sent batch: rclient keeps a copy of this. */
typedef struct bsent {
    rstore_t *rs;
    size_t n;
    struct {
        uint8_t kind;
        void *cb;
        void *arg;
    } it[];
} bsent_t;

static void on_batch_reply(void *ctx, const redisReply *r, int status)
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
        if (st == SL_OK)
            st = rs_reply_status(b->rs, r->element[i], SL_OK);
        if (!b->it[i].cb)
            continue;
        if (b->it[i].kind == QOP_APPEND)
            ((store_id_fn)b->it[i].cb)(b->it[i].arg, st,
                                       st == SL_OK
                                           ? (uint64_t)r->element[i]->integer
                                           : 0);
        else
            ((store_done_fn)b->it[i].cb)(b->it[i].arg, st);
    }
}

/* The arguments of one operation after its code. */
static int qop_args(const qop_t *op)
{
    return op->kind == QOP_APPEND ? 1 : op->kind == QOP_MARK ? 3 : 2;
}

/* EVALSHA queue, KEYS s q out in per session, ARGV as scripts.c
 * describes. */
static void batch_cmd(rstore_t *rs, const batch_t *b, rcmd_t *c)
{
    int argc = 6 + 4 * (int)b->n_sess + (int)b->n_ents;
    for (size_t i = 0; i < b->n; i++)
        argc += 1 + qop_args(&b->ops[i]);
    rcmd_init_n(c, rs->url.prefix, argc);
    rcmd_evalsha(c, SCRIPT_QUEUE, 4 * (int)b->n_sess);
    for (size_t i = 0; i < b->n_sess; i++) {
        const char *cid = b->cids + b->sess[i].cid_off;
        size_t clen = b->sess[i].clen;
        rcmd_ckey(c, cid, clen, ":s");
        rcmd_ckey(c, cid, clen, ":q");
        rcmd_ckey(c, cid, clen, ":out");
        rcmd_ckey(c, cid, clen, ":in");
    }
    rcmd_u64(c, b->appends ? b->lim.max_queued : 0);
    rcmd_str(c, b->appends && b->lim.drop_oldest ? "1" : "0");
    rcmd_u64(c, b->n_ents);
    for (size_t i = 0; i < b->n_ents; i++)
        rcmd_entry(c, b->ents[i].qos, b->ents[i].msg);
    for (size_t i = 0; i < b->n; i++) {
        const qop_t *op = &b->ops[i];
        rcmd_u64(c, ((uint64_t)op->sess + 1) * 8 + op->kind);
        switch (op->kind) {
        case QOP_APPEND:
            rcmd_u64(c, (uint64_t)op->entry + 1);
            break;
        case QOP_MARK:
            rcmd_u64(c, op->epoch);
            rcmd_u64(c, op->id);
            rcmd_u64(c, op->val);
            break;
        default:
            rcmd_u64(c, op->epoch);
            rcmd_u64(c, op->id);
            break;
        }
    }
}

/* Send one batch and empty it (its buffers stay for the next one). */
static void batch_send(rstore_t *rs, batch_t *b)
{
    if (b->n == 0)
        return;
    size_t size = sizeof(bsent_t) + b->n * sizeof(((bsent_t *)0)->it[0]);
    bsent_t *sent = malloc(size);
    if (!sent)
        abort(); /* a lost completion would wedge its caller forever */
    sent->rs = rs;
    sent->n = b->n;
    for (size_t i = 0; i < b->n; i++) {
        sent->it[i].kind = b->ops[i].kind;
        sent->it[i].cb = b->ops[i].cb;
        sent->it[i].arg = b->ops[i].arg;
    }
    rcmd_t c;
    batch_cmd(rs, b, &c);
    rclient_send(rs->cl, &c, b->replay ? RCLIENT_REPLAY : 0, on_batch_reply,
                 sent, size, NULL, 0);
    rcmd_fini(&c);
    free(sent);
    for (size_t i = 0; i < b->n_ents; i++)
        msg_unref(&b->ents[i].msg);
    b->n = b->n_sess = b->n_ents = b->cids_len = b->bytes = 0;
    b->appends = false;
    b->replay = true;
}

/* Free what a batch holds (it holds no operation). */
static void batch_free(batch_t *b)
{
    for (size_t j = 0; j < b->n_ents; j++)
        msg_unref(&b->ents[j].msg);
    free(b->ops);
    free(b->sess);
    free(b->ents);
    free(b->cids);
}

void rs_batch_flush(rstore_t *rs)
{
    /* In the order the batches were opened; on a cluster they go to
     * different slots, whose order does not matter. */
    for (size_t i = 0; i < rs->n_open; i++) {
        batch_t *b = &rs->batches[i];
        batch_send(rs, b);
        if (rs->slot_batch && b->slot >= 0)
            rs->slot_batch[b->slot] = 0;
    }
    rs->n_open = 0;
    /* A fan-out over many slots opened many batches: keep a few for the
     * next iterations, not all of them. */
    if (rs->n_batches > BATCH_KEEP) {
        for (size_t i = BATCH_KEEP; i < rs->n_batches; i++)
            batch_free(&rs->batches[i]);
        batch_t *nb = realloc(rs->batches, BATCH_KEEP * sizeof(*nb));
        if (nb)
            rs->batches = nb;
        rs->n_batches = BATCH_KEEP;
    }
}

static void on_batch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rs_batch_flush(arg);
}

int rs_batch_init(rstore_t *rs)
{
    rs->batch_ev = event_new(rs->base.base, -1, 0, on_batch, rs);
    if (!rs->batch_ev)
        return SL_ENOMEM;
    if (rs->cluster &&
        !(rs->slot_batch = calloc(SLOTS_N, sizeof(*rs->slot_batch))))
        return SL_ENOMEM;
    return SL_OK;
}

void rs_batch_fini(rstore_t *rs)
{
    if (rs->batch_ev)
        event_free(rs->batch_ev);
    for (size_t i = 0; i < rs->n_batches; i++)
        batch_free(&rs->batches[i]);
    free(rs->batches);
    free(rs->slot_batch);
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

/* The slot of a client's keys, as rclient routes them. */
static int cid_slot(const rstore_t *rs, const char *cid, size_t clen)
{
    char small[256];
    size_t plen = strlen(rs->url.prefix);
    size_t len = plen + 3 + clen + 1 + 2;
    char *k = len <= sizeof(small) ? small : malloc(len);
    if (!k)
        abort();
    memcpy(k, rs->url.prefix, plen);
    memcpy(k + plen, "{c:", 3);
    if (clen)
        memcpy(k + plen + 3, cid, clen);
    memcpy(k + plen + 3 + clen, "}:s", 3);
    int slot = slots_key(k, len);
    if (k != small)
        free(k);
    return slot;
}

/* The open batch for client cid's keys, opened when there is none. */
static batch_t *batch_for(rstore_t *rs, const char *cid, size_t clen)
{
    int slot = -1;
    if (rs->cluster) {
        slot = cid_slot(rs, cid, clen);
        if (rs->slot_batch[slot])
            return &rs->batches[rs->slot_batch[slot] - 1];
    } else if (rs->n_open) {
        return &rs->batches[0];
    }
    if (rs->n_open == rs->n_batches) {
        size_t cap = rs->n_batches;
        grow((void **)&rs->batches, &cap, rs->n_batches + 1,
             sizeof(*rs->batches));
        memset(rs->batches + rs->n_batches, 0,
               (cap - rs->n_batches) * sizeof(*rs->batches));
        rs->n_batches = cap;
    }
    batch_t *b = &rs->batches[rs->n_open++];
    b->slot = slot;
    b->replay = true;
    if (slot >= 0)
        rs->slot_batch[slot] = (uint16_t)rs->n_open;
    if (rs->n_open == 1)
        event_active(rs->batch_ev, EV_READ, 0);
    return b;
}

/* The index of cid among the batch's sessions, added if new. */
static uint32_t batch_sess(batch_t *b, const char *cid, size_t clen)
{
    size_t stop = b->n_sess > BATCH_SAME ? b->n_sess - BATCH_SAME : 0;
    for (size_t i = b->n_sess; i > stop; i--) {
        const bsess_t *s = &b->sess[i - 1];
        if (s->clen == clen &&
            (clen == 0 || memcmp(b->cids + s->cid_off, cid, clen) == 0))
            return (uint32_t)(i - 1);
    }
    grow((void **)&b->sess, &b->cap_sess, b->n_sess + 1, sizeof(*b->sess));
    grow((void **)&b->cids, &b->cids_cap, b->cids_len + clen + 1, 1);
    b->sess[b->n_sess].cid_off = b->cids_len;
    b->sess[b->n_sess].clen = clen;
    if (clen)
        memcpy(b->cids + b->cids_len, cid, clen);
    b->cids_len += clen;
    b->bytes += 4 * clen;
    return (uint32_t)b->n_sess++;
}

/* The index of (m, qos) among the batch's entries, added if new. */
static uint32_t batch_entry(batch_t *b, msg_t *m, uint8_t qos)
{
    size_t stop = b->n_ents > BATCH_SAME ? b->n_ents - BATCH_SAME : 0;
    for (size_t i = b->n_ents; i > stop; i--)
        if (b->ents[i - 1].msg == m && b->ents[i - 1].qos == qos)
            return (uint32_t)(i - 1);
    grow((void **)&b->ents, &b->cap_ents, b->n_ents + 1, sizeof(*b->ents));
    b->ents[b->n_ents].msg = msg_ref(m);
    b->ents[b->n_ents].qos = qos;
    b->bytes += 1 + blob_msg_size(m);
    return (uint32_t)b->n_ents++;
}

/* A new operation on cid's queue in its batch; the caller fills in what
 * its kind needs. */
static qop_t *batch_op(batch_t *b, uint8_t kind, const char *cid, size_t clen,
                       void *cb, void *arg)
{
    grow((void **)&b->ops, &b->cap, b->n + 1, sizeof(*b->ops));
    qop_t *op = &b->ops[b->n];
    *op = (qop_t){.kind = kind, .cb = cb, .arg = arg};
    op->sess = batch_sess(b, cid, clen);
    b->n++;
    b->bytes += 32;
    if (kind == QOP_APPEND || kind == QOP_ACK)
        b->replay = false;
    return op;
}

/* After an operation was added: a full batch leaves at once. */
static void batch_check(rstore_t *rs, batch_t *b)
{
    if (b->n < BATCH_MAX && b->bytes < BATCH_BYTES)
        return;
    batch_send(rs, b);
}

void redis_queue_append(store_t *st, const char *cid, size_t clen, msg_t *m,
                        uint8_t qos, const store_limits_t *lim, store_id_fn cb,
                        void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    batch_t *b = batch_for(rs, cid, clen);
    store_limits_t l = lim ? *lim : (store_limits_t){0};
    if (b->appends && (l.max_queued != b->lim.max_queued ||
                       l.drop_oldest != b->lim.drop_oldest))
        batch_send(rs, b);
    b->appends = true;
    b->lim = l;
    qop_t *op = batch_op(b, QOP_APPEND, cid, clen, (void *)cb, arg);
    op->entry = batch_entry(b, m, qos);
    batch_check(rs, b);
}

/* ---- mark, ack, since -------------------------------------------------- */

void redis_queue_mark(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                      uint64_t id, uint16_t pid, uint8_t state,
                      store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    batch_t *b = batch_for(rs, cid, clen);
    qop_t *op = batch_op(b, QOP_MARK, cid, clen, (void *)cb, arg);
    op->epoch = epoch;
    op->id = id;
    op->val = pid ? (uint64_t)pid | (uint64_t)state << 16 : 0;
    batch_check(rs, b);
}

/* A fenced operation on entry or packet id `id`. */
static void fenced_op(store_t *st, uint8_t kind, const char *cid, size_t clen,
                      uint64_t epoch, uint64_t id, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    batch_t *b = batch_for(rs, cid, clen);
    qop_t *op = batch_op(b, kind, cid, clen, (void *)cb, arg);
    op->epoch = epoch;
    op->id = id;
    batch_check(rs, b);
}

void redis_queue_ack(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                     uint64_t id, store_done_fn cb, void *arg)
{
    fenced_op(st, QOP_ACK, cid, clen, epoch, id, cb, arg);
}

void redis_inbound_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg)
{
    fenced_op(st, QOP_IN_PUT, cid, clen, epoch, pid, cb, arg);
}

void redis_inbound_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg)
{
    fenced_op(st, QOP_IN_DEL, cid, clen, epoch, pid, cb, arg);
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
