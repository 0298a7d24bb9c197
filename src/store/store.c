/*
 * store.c - picks a backend by URL and forwards the store.h calls to it.
 */
#include "backend.h"
#include "redis_url.h"

#include "starling/err.h"

#include <stdio.h>
#include <string.h>

int store_open(store_t **out, struct event_base *base, const char *url,
               char *err, size_t errlen)
{
    *out = NULL;
    if (!url || strcmp(url, "memory") == 0 || strcmp(url, "mem") == 0)
        return store_mem_open(out, base, err, errlen);
    if (redis_url_match(url))
        return store_redis_open(out, base, url, err, errlen);
    snprintf(err, errlen,
             "store: unsupported store URL '%s' (use 'memory', redis://... "
             "or redis+cluster://...)",
             url);
    return SL_EINVAL;
}

void store_free(store_t *st)
{
    if (st)
        st->ops->free(st);
}

bool store_ready(const store_t *st)
{
    return st->ops->ready(st);
}

const char *store_kind(const store_t *st)
{
    return st->ops->kind;
}

void store_stats(const store_t *st, store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (st->ops->stats)
        st->ops->stats(st, out);
}

void store_claim(store_t *st, const char *cid, size_t clen, bool clean,
                 const store_session_t *rec, store_claim_fn cb, void *arg)
{
    st->ops->claim(st, cid, clen, clean, rec, cb, arg);
}

void store_session_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, const store_session_t *rec,
                       store_done_fn cb, void *arg)
{
    st->ops->session_put(st, cid, clen, epoch, rec, cb, arg);
}

void store_session_offline(store_t *st, const char *cid, size_t clen,
                           uint64_t epoch, uint64_t now_ms, store_done_fn cb,
                           void *arg)
{
    st->ops->session_offline(st, cid, clen, epoch, now_ms, cb, arg);
}

void store_session_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, store_done_fn cb, void *arg)
{
    st->ops->session_del(st, cid, clen, epoch, cb, arg);
}

void store_session_expired(store_t *st, uint64_t now_ms, store_cids_fn cb,
                           void *arg)
{
    st->ops->session_expired(st, now_ms, cb, arg);
}

void store_sub_put(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const store_sub_t *sub, store_done_fn cb, void *arg)
{
    st->ops->sub_put(st, cid, clen, epoch, sub, cb, arg);
}

void store_sub_del(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                   const char *filter, size_t flen, store_done_fn cb,
                   void *arg)
{
    st->ops->sub_del(st, cid, clen, epoch, filter, flen, cb, arg);
}

void store_sub_load(store_t *st, store_psub_fn cb, void *arg)
{
    st->ops->sub_load(st, cb, arg);
}

void store_queue_append(store_t *st, const char *cid, size_t clen, msg_t *m,
                        uint8_t qos, const store_limits_t *lim, store_id_fn cb,
                        void *arg)
{
    st->ops->queue_append(st, cid, clen, m, qos, lim, cb, arg);
}

void store_queue_mark(store_t *st, const char *cid, size_t clen,
                      uint64_t epoch, uint64_t id, uint16_t pid, uint8_t state,
                      store_done_fn cb, void *arg)
{
    st->ops->queue_mark(st, cid, clen, epoch, id, pid, state, cb, arg);
}

void store_queue_ack(store_t *st, const char *cid, size_t clen,
                     uint64_t epoch, uint64_t id, store_done_fn cb, void *arg)
{
    st->ops->queue_ack(st, cid, clen, epoch, id, cb, arg);
}

void store_queue_since(store_t *st, const char *cid, size_t clen,
                       uint64_t after, uint32_t max, store_entries_fn cb,
                       void *arg)
{
    st->ops->queue_since(st, cid, clen, after, max, cb, arg);
}

void store_inbound_put(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg)
{
    st->ops->inbound_put(st, cid, clen, epoch, pid, cb, arg);
}

void store_inbound_del(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint16_t pid, store_done_fn cb,
                       void *arg)
{
    st->ops->inbound_del(st, cid, clen, epoch, pid, cb, arg);
}

void store_retain_put(store_t *st, msg_t *m, store_done_fn cb, void *arg)
{
    st->ops->retain_put(st, m, cb, arg);
}

void store_retain_del(store_t *st, const char *topic, size_t tlen,
                      store_done_fn cb, void *arg)
{
    st->ops->retain_del(st, topic, tlen, cb, arg);
}

void store_retain_load(store_t *st, store_msgs_fn cb, void *arg)
{
    st->ops->retain_load(st, cb, arg);
}
