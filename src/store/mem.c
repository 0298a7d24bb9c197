/*
 * mem.c - the embedded in-memory store backend (store "memory").
 *
 * Nothing is persisted across a restart. State changes are applied when an
 * operation is issued; callbacks are deferred to the event loop through one
 * FIFO, so they never run inside the call and complete in issue order, as
 * with a networked backend. Results that describe state (claim, loads,
 * expired sessions) are built when the callback runs.
 */
#include "backend.h"

#include "starling/err.h"
#include "starling/map.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

typedef struct qent {
    struct qent *next, *prev;
    store_entry_t e;             /* e.msg holds a reference */
} qent_t;

typedef struct msub {
    uint8_t opts;
    uint32_t sub_id;
} msub_t;

typedef struct msess {
    uint64_t epoch;
    store_session_t rec;         /* rec.will holds a reference */
    bool online;
    uint64_t expire_at;          /* when offline; UINT64_MAX = never */
    map_t *subs;                 /* filter -> msub_t */
    qent_t *qhead, *qtail;
    size_t qlen;
    size_t n_unsent;             /* entries without a packet id yet */
    uint64_t next_id;
    uint16_t *inbound;
    size_t n_inbound, cap_inbound;
} msess_t;

enum { P_DONE, P_ID, P_CLAIM, P_CIDS, P_MSGS, P_PSUB, P_SINCE };

typedef struct pend {
    struct pend *next;
    int kind;
    void *cb;
    void *arg;
    int status;
    uint64_t id;
    char *cid;                   /* P_CLAIM: owned copy */
    size_t clen;
    bool present;
    store_session_t prev;        /* P_CLAIM: previous record (will ref'd) */
} pend_t;

typedef struct mem {
    store_t base;
    struct event *ev;
    pend_t *head, *tail;
    map_t *sessions;             /* cid -> msess_t */
    map_t *retained;             /* topic -> msg_t */
} mem_t;

/* ---- deferred completion ---------------------------------------------- */

static void run_pending(evutil_socket_t fd, short what, void *arg);

static pend_t *defer(mem_t *m, int kind, void *cb, void *arg, int status)
{
    pend_t *p = calloc(1, sizeof(*p));
    if (!p)
        abort(); /* a lost completion would wedge its caller forever */
    p->kind = kind;
    p->cb = cb;
    p->arg = arg;
    p->status = status;
    if (m->tail)
        m->tail->next = p;
    else
        m->head = p;
    m->tail = p;
    event_active(m->ev, EV_READ, 0);
    return p;
}

static void done(mem_t *m, store_done_fn cb, void *arg, int status)
{
    if (cb)
        defer(m, P_DONE, (void *)cb, arg, status);
}

static void msess_free(void *v)
{
    msess_t *s = v;
    if (!s)
        return;
    msg_unref(&s->rec.will);
    map_free(s->subs, free);
    qent_t *q = s->qhead;
    while (q) {
        qent_t *n = q->next;
        msg_unref(&q->e.msg);
        free(q);
        q = n;
    }
    free(s->inbound);
    free(s);
}

static void retained_free(void *v)
{
    msg_t *msg = v;
    msg_unref(&msg);
}

static void run_claim(mem_t *m, pend_t *p);
static void run_cids(mem_t *m, pend_t *p);
static void run_msgs(mem_t *m, pend_t *p);
static void run_psub(mem_t *m, pend_t *p);
static void run_since(mem_t *m, pend_t *p);

static void run_one(mem_t *m, pend_t *p)
{
    switch (p->kind) {
    case P_DONE:
        ((store_done_fn)p->cb)(p->arg, p->status);
        break;
    case P_ID:
        ((store_id_fn)p->cb)(p->arg, p->status, p->id);
        break;
    case P_CLAIM:
        run_claim(m, p);
        break;
    case P_CIDS:
        run_cids(m, p);
        break;
    case P_MSGS:
        run_msgs(m, p);
        break;
    case P_PSUB:
        run_psub(m, p);
        break;
    case P_SINCE:
        run_since(m, p);
        break;
    }
}

static void run_pending(evutil_socket_t fd, short what, void *arg)
{
    mem_t *m = arg;
    /* Run only what is queued now; callbacks may queue more. */
    pend_t *p = m->head;
    m->head = m->tail = NULL;
    while (p) {
        pend_t *n = p->next;
        run_one(m, p);
        msg_unref(&p->prev.will);
        free(p->cid);
        free(p);
        p = n;
    }
}

/* ---- sessions ---------------------------------------------------------- */

static msess_t *sess_get(mem_t *m, const char *cid, size_t clen)
{
    return map_get(m->sessions, cid, clen);
}

/* The session if `epoch` is current (0 = any), else NULL with *status. */
static msess_t *sess_fenced(mem_t *m, const char *cid, size_t clen,
                            uint64_t epoch, int *status)
{
    msess_t *s = sess_get(m, cid, clen);
    if (!s) {
        *status = SL_ENOTFOUND;
        return NULL;
    }
    if (epoch && s->epoch != epoch) {
        *status = SL_ESTALE;
        return NULL;
    }
    *status = SL_OK;
    return s;
}

static void rec_set(store_session_t *dst, const store_session_t *src)
{
    msg_unref(&dst->will);
    *dst = *src;
    if (dst->will)
        msg_ref(dst->will);
}

static void mem_claim(store_t *st, const char *cid, size_t clen, bool clean,
                      const store_session_t *rec, store_claim_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    msess_t *s = sess_get(m, cid, clen);
    bool present = s != NULL && !clean;
    uint64_t epoch = s ? s->epoch + 1 : 1;
    if (s && clean) {
        msess_free(map_del(m->sessions, cid, clen));
        s = NULL;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s || !(s->subs = map_new()) ||
            map_put(m->sessions, cid, clen, s, NULL) != SL_OK)
            abort();
        s->next_id = 1;
    }
    pend_t *p = defer(m, P_CLAIM, (void *)cb, arg, SL_OK);
    p->cid = malloc(clen + 1);
    if (!p->cid)
        abort();
    memcpy(p->cid, cid, clen);
    p->clen = clen;
    p->present = present;
    p->id = epoch;
    p->prev = s->rec; /* the reference moves to the pending completion */
    s->rec = *rec;
    if (s->rec.will)
        msg_ref(s->rec.will);
    s->epoch = epoch;
    s->online = true;
    s->expire_at = 0;
}

static void run_claim(mem_t *m, pend_t *p)
{
    store_claim_fn cb = (store_claim_fn)p->cb;
    msess_t *s = sess_get(m, p->cid, p->clen);
    if (!s || s->epoch != p->id) {
        cb(p->arg, s ? SL_ESTALE : SL_ENOTFOUND, NULL);
        return;
    }
    store_claim_t c = {.present = p->present, .epoch = p->id, .prev = p->prev};
    size_t nsubs = map_count(s->subs);
    store_sub_t *subs = calloc(nsubs + 1, sizeof(*subs));
    store_entry_t *ents = calloc(s->qlen + 1, sizeof(*ents));
    if (!subs || !ents)
        abort();
    size_t cur = 0, i = 0;
    const char *k;
    size_t klen;
    void *v;
    while (map_next(s->subs, &cur, &k, &klen, &v)) {
        msub_t *ms = v;
        subs[i++] = (store_sub_t){.filter = k, .flen = klen, .opts = ms->opts,
                                  .sub_id = ms->sub_id};
    }
    i = 0;
    for (qent_t *q = s->qhead; q; q = q->next)
        ents[i++] = q->e;
    if (c.present) {
        c.subs = subs;
        c.n_subs = nsubs;
        c.entries = ents;
        c.n_entries = s->qlen;
        c.inbound = s->inbound;
        c.n_inbound = s->n_inbound;
    }
    cb(p->arg, SL_OK, &c);
    free(subs);
    free(ents);
}

static void mem_session_put(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, const store_session_t *rec,
                            store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s)
        rec_set(&s->rec, rec);
    done(m, cb, arg, status);
}

static void mem_session_offline(store_t *st, const char *cid, size_t clen,
                                uint64_t epoch, uint64_t now_ms,
                                store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s) {
        s->online = false;
        s->expire_at = s->rec.expiry == UINT32_MAX
                           ? UINT64_MAX
                           : now_ms + (uint64_t)s->rec.expiry * 1000u;
    }
    done(m, cb, arg, status);
}

static void mem_session_del(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s && epoch == 0 && s->online) {
        /* epoch 0 (the expiry sweep) never deletes a reclaimed session. */
        status = SL_ESTALE;
        s = NULL;
    }
    if (s)
        msess_free(map_del(m->sessions, cid, clen));
    done(m, cb, arg, status);
}

static void mem_session_expired(store_t *st, uint64_t now_ms, store_cids_fn cb,
                                void *arg)
{
    mem_t *m = (mem_t *)st;
    pend_t *p = defer(m, P_CIDS, (void *)cb, arg, SL_OK);
    p->id = now_ms;
}

static void run_cids(mem_t *m, pend_t *p)
{
    size_t n = 0, cap = 0, cur = 0;
    const char **cids = NULL;
    const char *k;
    void *v;
    while (map_next(m->sessions, &cur, &k, NULL, &v)) {
        msess_t *s = v;
        if (s->online || s->expire_at > p->id)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            const char **nc = realloc(cids, cap * sizeof(*cids));
            if (!nc)
                abort();
            cids = nc;
        }
        cids[n++] = k;
    }
    ((store_cids_fn)p->cb)(p->arg, SL_OK, cids, n);
    free(cids);
}

/* ---- subscriptions ----------------------------------------------------- */

static void mem_sub_put(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, const store_sub_t *sub,
                        store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s) {
        msub_t *ms = malloc(sizeof(*ms));
        void *old = NULL;
        if (!ms)
            abort();
        ms->opts = sub->opts;
        ms->sub_id = sub->sub_id;
        if (map_put(s->subs, sub->filter, sub->flen, ms, &old) != SL_OK)
            abort();
        free(old);
    }
    done(m, cb, arg, status);
}

static void mem_sub_del(store_t *st, const char *cid, size_t clen,
                        uint64_t epoch, const char *filter, size_t flen,
                        store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s)
        free(map_del(s->subs, filter, flen));
    done(m, cb, arg, status);
}

static void mem_sub_load(store_t *st, store_psub_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    defer(m, P_PSUB, (void *)cb, arg, SL_OK);
}

static void run_psub(mem_t *m, pend_t *p)
{
    store_psub_fn cb = (store_psub_fn)p->cb;
    size_t cur = 0;
    const char *k;
    void *v;
    while (map_next(m->sessions, &cur, &k, NULL, &v)) {
        msess_t *s = v;
        size_t n = map_count(s->subs), i = 0, c2 = 0;
        store_sub_t *subs = calloc(n + 1, sizeof(*subs));
        const char *f;
        size_t flen;
        void *sv;
        if (!subs)
            abort();
        while (map_next(s->subs, &c2, &f, &flen, &sv)) {
            msub_t *ms = sv;
            subs[i++] = (store_sub_t){f, flen, ms->opts, ms->sub_id};
        }
        cb(p->arg, SL_OK, k, subs, n);
        free(subs);
    }
    cb(p->arg, SL_OK, NULL, NULL, 0);
}

/* ---- queue ------------------------------------------------------------- */

static void queue_drop_head(msess_t *s)
{
    qent_t *q = s->qhead;
    /* Only entries never sent may be dropped; in-flight ones stay. */
    while (q && q->e.pid)
        q = q->next;
    if (!q)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        s->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        s->qtail = q->prev;
    s->qlen--;
    s->n_unsent--;
    msg_unref(&q->e.msg);
    free(q);
}

static void mem_queue_append(store_t *st, const char *cid, size_t clen,
                             msg_t *msg, uint8_t qos, const store_limits_t *lim,
                             store_id_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    msess_t *s = sess_get(m, cid, clen);
    int status = SL_OK;
    uint64_t id = 0;
    if (!s) {
        status = SL_ENOTFOUND;
    } else if (lim && lim->max_queued && s->n_unsent >= lim->max_queued &&
               !lim->drop_oldest) {
        status = SL_ELIMIT;
    } else {
        if (lim && lim->max_queued && s->n_unsent >= lim->max_queued)
            queue_drop_head(s);
        qent_t *q = calloc(1, sizeof(*q));
        if (!q)
            abort();
        q->e = (store_entry_t){.id = s->next_id++, .msg = msg_ref(msg),
                               .qos = qos};
        q->prev = s->qtail;
        if (s->qtail)
            s->qtail->next = q;
        else
            s->qhead = q;
        s->qtail = q;
        s->qlen++;
        s->n_unsent++;
        id = q->e.id;
    }
    if (cb) {
        pend_t *p = defer(m, P_ID, (void *)cb, arg, status);
        p->id = id;
    }
}

static qent_t *queue_find(msess_t *s, uint64_t id)
{
    for (qent_t *q = s->qhead; q; q = q->next)
        if (q->e.id == id)
            return q;
    return NULL;
}

static void mem_queue_mark(store_t *st, const char *cid, size_t clen,
                           uint64_t epoch, uint64_t id, uint16_t pid,
                           uint8_t state, store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    qent_t *q = s ? queue_find(s, id) : NULL;
    if (q) {
        if (!q->e.pid && pid)
            s->n_unsent--;
        q->e.pid = pid;
        q->e.state = state;
    } else if (s) {
        status = SL_ENOTFOUND;
    }
    done(m, cb, arg, status);
}

static void mem_queue_ack(store_t *st, const char *cid, size_t clen,
                          uint64_t epoch, uint64_t id, store_done_fn cb,
                          void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    qent_t *q = s ? queue_find(s, id) : NULL;
    if (q) {
        if (q->prev)
            q->prev->next = q->next;
        else
            s->qhead = q->next;
        if (q->next)
            q->next->prev = q->prev;
        else
            s->qtail = q->prev;
        s->qlen--;
        if (!q->e.pid)
            s->n_unsent--;
        msg_unref(&q->e.msg);
        free(q);
    } else if (s) {
        status = SL_ENOTFOUND;
    }
    done(m, cb, arg, status);
}

static void mem_queue_since(store_t *st, const char *cid, size_t clen,
                            uint64_t after, uint32_t max, store_entries_fn cb,
                            void *arg)
{
    mem_t *m = (mem_t *)st;
    pend_t *p = defer(m, P_SINCE, (void *)cb, arg, SL_OK);
    p->cid = malloc(clen + 1);
    if (!p->cid)
        abort();
    memcpy(p->cid, cid, clen);
    p->clen = clen;
    p->id = after;
    p->prev.expiry = max; /* the count rides in an unused field */
}

static void run_since(mem_t *m, pend_t *p)
{
    store_entries_fn cb = (store_entries_fn)p->cb;
    msess_t *s = sess_get(m, p->cid, p->clen);
    uint32_t max = p->prev.expiry;
    store_entry_t *ents = calloc((size_t)max + 1, sizeof(*ents));
    size_t n = 0;
    if (!ents)
        abort();
    for (qent_t *q = s ? s->qhead : NULL; q && n < max; q = q->next)
        if (q->e.id > p->id)
            ents[n++] = q->e;
    cb(p->arg, s ? SL_OK : SL_ENOTFOUND, ents, n);
    free(ents);
}

/* ---- inbound QoS 2 ----------------------------------------------------- */

static void mem_inbound_put(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, uint16_t pid, store_done_fn cb,
                            void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s) {
        for (size_t i = 0; i < s->n_inbound; i++)
            if (s->inbound[i] == pid)
                goto out;
        if (s->n_inbound == s->cap_inbound) {
            size_t nc = s->cap_inbound ? s->cap_inbound * 2 : 8;
            uint16_t *ni = realloc(s->inbound, nc * sizeof(*ni));
            if (!ni)
                abort();
            s->inbound = ni;
            s->cap_inbound = nc;
        }
        s->inbound[s->n_inbound++] = pid;
    }
out:
    done(m, cb, arg, status);
}

static void mem_inbound_del(store_t *st, const char *cid, size_t clen,
                            uint64_t epoch, uint16_t pid, store_done_fn cb,
                            void *arg)
{
    mem_t *m = (mem_t *)st;
    int status;
    msess_t *s = sess_fenced(m, cid, clen, epoch, &status);
    if (s) {
        for (size_t i = 0; i < s->n_inbound; i++) {
            if (s->inbound[i] == pid) {
                s->inbound[i] = s->inbound[--s->n_inbound];
                break;
            }
        }
    }
    done(m, cb, arg, status);
}

/* ---- retained ---------------------------------------------------------- */

static void mem_retain_put(store_t *st, msg_t *msg, store_done_fn cb,
                           void *arg)
{
    mem_t *m = (mem_t *)st;
    void *old = NULL;
    if (map_put(m->retained, msg->topic, msg->topic_len, msg_ref(msg), &old) !=
        SL_OK)
        abort();
    retained_free(old);
    done(m, cb, arg, SL_OK);
}

static void mem_retain_del(store_t *st, const char *topic, size_t tlen,
                           store_done_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    retained_free(map_del(m->retained, topic, tlen));
    done(m, cb, arg, SL_OK);
}

static void mem_retain_load(store_t *st, store_msgs_fn cb, void *arg)
{
    mem_t *m = (mem_t *)st;
    defer(m, P_MSGS, (void *)cb, arg, SL_OK);
}

static void run_msgs(mem_t *m, pend_t *p)
{
    size_t n = map_count(m->retained), i = 0, cur = 0;
    msg_t **msgs = calloc(n + 1, sizeof(*msgs));
    void *v;
    if (!msgs)
        abort();
    while (map_next(m->retained, &cur, NULL, NULL, &v))
        msgs[i++] = v;
    ((store_msgs_fn)p->cb)(p->arg, SL_OK, msgs, n);
    free(msgs);
}

/* ---- lifecycle --------------------------------------------------------- */

static bool mem_ready(const store_t *st)
{
    return true;
}

static void mem_free(store_t *st)
{
    mem_t *m = (mem_t *)st;
    /* Complete what is pending, then drop everything. */
    while (m->head)
        run_pending(-1, 0, m);
    event_free(m->ev);
    map_free(m->sessions, msess_free);
    map_free(m->retained, retained_free);
    free(m);
}

static const store_ops_t mem_ops = {
    .kind = "memory",
    .free = mem_free,
    .ready = mem_ready,
    .claim = mem_claim,
    .session_put = mem_session_put,
    .session_offline = mem_session_offline,
    .session_del = mem_session_del,
    .session_expired = mem_session_expired,
    .sub_put = mem_sub_put,
    .sub_del = mem_sub_del,
    .sub_load = mem_sub_load,
    .queue_append = mem_queue_append,
    .queue_mark = mem_queue_mark,
    .queue_ack = mem_queue_ack,
    .queue_since = mem_queue_since,
    .inbound_put = mem_inbound_put,
    .inbound_del = mem_inbound_del,
    .retain_put = mem_retain_put,
    .retain_del = mem_retain_del,
    .retain_load = mem_retain_load,
};

int store_mem_open(store_t **out, struct event_base *base, char *err,
                   size_t errlen)
{
    mem_t *m = calloc(1, sizeof(*m));
    if (!m)
        return SL_ENOMEM;
    m->base.ops = &mem_ops;
    m->base.base = base;
    m->sessions = map_new();
    m->retained = map_new();
    m->ev = event_new(base, -1, 0, run_pending, m);
    if (!m->sessions || !m->retained || !m->ev) {
        map_free(m->sessions, NULL);
        map_free(m->retained, NULL);
        if (m->ev)
            event_free(m->ev);
        free(m);
        return SL_ENOMEM;
    }
    *out = &m->base;
    return SL_OK;
}
