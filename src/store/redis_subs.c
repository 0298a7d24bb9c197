/*
 * redis_subs.c - subscriptions in the Redis-protocol store (redis.c): one
 * hash per session (filter -> options blob), and the load of every stored
 * session's subscriptions at start.
 */
#include "redis_int.h"

#include "blob.h"
#include "scripts.h"

#include "starling/err.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

static const char *const K_SUBS[] = {":s", ":subs", NULL};

int rs_parse_subs(const redisReply *r, store_sub_t **out, size_t *n)
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
        if (!rs_is_str(f) || !rs_is_str(v) ||
            blob_sub_read(v->str, v->len, &s->opts, &s->sub_id) != SL_OK)
            continue;
        s->filter = f->str;
        s->flen = f->len;
        (*n)++;
    }
    *out = subs;
    return SL_OK;
}

void redis_sub_put(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const store_sub_t *sub, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    uint8_t v[BLOB_SUB_LEN];
    blob_sub_write(sub->opts, sub->sub_id, v);
    rcmd_t c;
    rs_cmd_fenced(rs, &c, SCRIPT_SUB_PUT, cid, clen, K_SUBS, epoch);
    rcmd_bytes(&c, sub->filter, sub->flen);
    rcmd_bytes(&c, v, sizeof(v));
    rs_send_done(rs, &c, RCLIENT_REPLAY, cb, arg);
}

void redis_sub_del(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const char *filter, size_t flen, store_done_fn cb, void *arg)
{
    rstore_t *rs = (rstore_t *)st;
    rcmd_t c;
    rs_cmd_fenced(rs, &c, SCRIPT_SUB_DEL, cid, clen, K_SUBS, epoch);
    rcmd_bytes(&c, filter, flen);
    rs_send_done(rs, &c, RCLIENT_REPLAY, cb, arg);
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
        rs_index_drop(sl->rs, sc->cid, sc->clen, false); /* stale entry */
    } else if (status != SL_OK || r->type != REDIS_REPLY_ARRAY) {
        if (sl->status == SL_OK)
            sl->status = status != SL_OK ? status : SL_EIO;
    } else if (rs_parse_subs(r, &subs, &n) == SL_OK && sl->cb) {
        sl->cb(sl->arg, SL_OK, sc->cid, subs, n);
    }
    free(subs);
    sload_next(sl);
}

/* Ask for the subscriptions of the session named by e. */
static void sload_subs(sload_t *sl, const redisReply *e)
{
    rcmd_t c;
    rs_cmd_script(sl->rs, &c, SCRIPT_SUB_LOAD, e->str, e->len, K_SUBS, false);
    sload_ctx_t x = {.sl = sl, .clen = e->len};
    sl->left++;
    rs_send(sl->rs, &c, RCLIENT_REPLAY, on_sload_subs, &x, sizeof(x), e->str,
            e->len);
}

static void on_sload_scan(void *ctx, const redisReply *r, int status)
{
    sload_t *sl = *(sload_t **)ctx;
    status = rs_scan_status(r, status);
    if (status == SL_OK && r->element[0]->len >= sizeof(sl->cursor))
        status = SL_EMALFORMED;
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
    for (size_t i = 0; i < m->elements; i++)
        if (rs_is_str(m->element[i]))
            sload_subs(sl, m->element[i]);
    sload_next(sl);
}

static void sload_scan(sload_t *sl)
{
    sl->more = false;
    rs_scan(sl->rs, "SSCAN", "psessions", sl->cursor, on_sload_scan, &sl,
            sizeof(sl));
}

void redis_sub_load(store_t *st, store_psub_fn cb, void *arg)
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
