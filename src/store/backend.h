/*
 * backend.h - what a store backend implements (internal to src/store/).
 *
 * store.c dispatches the public store_* calls of store.h to a backend's
 * vtable. Each backend embeds `store_t` as the first member of its own
 * struct.
 */
#ifndef STARLING_STORE_BACKEND_H
#define STARLING_STORE_BACKEND_H

#include "starling/store.h"

typedef struct store_ops {
    const char *kind;
    void (*free)(store_t *st);
    bool (*ready)(const store_t *st);
    void (*claim)(store_t *st, const char *cid, size_t clen, bool clean,
                  const store_session_t *rec, store_claim_fn cb, void *arg);
    void (*session_put)(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, const store_session_t *rec,
                        store_done_fn cb, void *arg);
    void (*session_offline)(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, uint64_t now_ms, store_done_fn cb,
                            void *arg);
    void (*session_del)(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, store_done_fn cb, void *arg);
    void (*session_expired)(store_t *st, uint64_t now_ms, store_cids_fn cb,
                            void *arg);
    void (*sub_put)(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                    const store_sub_t *sub, store_done_fn cb, void *arg);
    void (*sub_del)(store_t *st, const char *cid, size_t clen, uint64_t epoch,
                    const char *filter, size_t flen, store_done_fn cb,
                    void *arg);
    void (*sub_load)(store_t *st, store_psub_fn cb, void *arg);
    void (*queue_append)(store_t *st, const char *cid, size_t clen, msg_t *m,
                         uint8_t qos, const store_limits_t *lim,
                         store_id_fn cb, void *arg);
    void (*queue_mark)(store_t *st, const char *cid, size_t clen,
                       uint64_t epoch, uint64_t id, uint16_t pid,
                       uint8_t state, store_done_fn cb, void *arg);
    void (*queue_ack)(store_t *st, const char *cid, size_t clen,
                      uint64_t epoch, uint64_t id, store_done_fn cb,
                      void *arg);
    void (*queue_since)(store_t *st, const char *cid, size_t clen,
                        uint64_t after, uint32_t max, store_entries_fn cb,
                        void *arg);
    void (*inbound_put)(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, uint16_t pid, store_done_fn cb,
                        void *arg);
    void (*inbound_del)(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, uint16_t pid, store_done_fn cb,
                        void *arg);
    void (*retain_put)(store_t *st, msg_t *m, store_done_fn cb, void *arg);
    void (*retain_del)(store_t *st, const char *topic, size_t tlen,
                       store_done_fn cb, void *arg);
    void (*retain_load)(store_t *st, store_msgs_fn cb, void *arg);
    /* Optional (NULL: all counters zero). */
    void (*stats)(const store_t *st, store_stats_t *out);
} store_ops_t;

struct store {
    const store_ops_t *ops;
    struct event_base *base;
};

int store_mem_open(store_t **out, struct event_base *base, char *err,
                   size_t errlen);
/* redis.c: "redis://..." and "redis+cluster://..." (see redis_url.h). */
int store_redis_open(store_t **out, struct event_base *base, const char *url,
                     char *err, size_t errlen);

#endif
