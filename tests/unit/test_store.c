/*
 * test_store.c - the store.h contract, run against every backend: the
 * memory backend always, a standalone Redis-protocol server when
 * STARLING_TEST_REDIS is set (redis://127.0.0.1:PORT) and a cluster when
 * STARLING_TEST_REDIS_CLUSTER is set (redis+cluster://h1:p1,...); see
 * run_store_redis.sh. Each contract test exists three times
 * (memory_x, redis_x, cluster_x); a backend without its server is skipped.
 *
 * Every test runs the event loop until its callbacks fired (bounded), and
 * every callback checks that it does not run inside the store call that
 * issued it. Each test uses its own key prefix, so tests never see each
 * other's data. Also here: the Redis backend's own behaviour (server down,
 * deadlines, reconnection, MOVED), its URL parser and its encodings.
 */
#include "starling/store.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/msg.h"
#include "starling/slots.h"

#include "../../src/store/blob.h"
#include "../../src/store/redis_url.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BK_MEM, BK_REDIS, BK_CLUSTER };

static struct event_base *base;
static struct event *heartbeat;
static store_t *st;
static int backend;
static bool in_call;
static char prefix[128];

/* ---- harness ----------------------------------------------------------- */

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
}

static const char *env_url(int bk)
{
    const char *v = getenv(bk == BK_REDIS ? "STARLING_TEST_REDIS"
                                          : "STARLING_TEST_REDIS_CLUSTER");
    return v && *v ? v : NULL;
}

static void pump_until(bool (*cond)(void *), void *arg, int ms)
{
    uint64_t end = sl_mono_ms() + (uint64_t)ms;
    while (!cond(arg) && sl_mono_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
}

static bool cond_ready(void *arg)
{
    return store_ready(st);
}

static void loop_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *lv = getenv("STARLING_TEST_LOG_LEVEL");
    sl_log_level = lv ? sl_log_level_parse(lv) : SL_LOG_ERROR;
    base = event_base_new();
    cr_assert_not_null(base);
    heartbeat = event_new(base, -1, EV_PERSIST, on_heartbeat, NULL);
    struct timeval tv = {0, 5000};
    event_add(heartbeat, &tv);
}

/* Open `url` + our own prefix and options. */
static int open_url(const char *u, const char *opts, char *err, size_t len)
{
    char full[1024];
    snprintf(prefix, sizeof(prefix), "slt:%d:%llu:", (int)getpid(),
             (unsigned long long)sl_mono_ms());
    snprintf(full, sizeof(full), "%s%sprefix=%s%s%s", u,
             strchr(u, '?') ? "&" : "?", prefix, opts ? "&" : "",
             opts ? opts : "");
    return store_open(&st, base, full, err, len);
}

static void open_backend(int bk)
{
    char err[256] = "";
    backend = bk;
    loop_init();
    if (bk == BK_MEM) {
        cr_assert_eq(store_open(&st, base, "memory", err, sizeof(err)), SL_OK);
        return;
    }
    const char *u = env_url(bk);
    if (!u)
        cr_skip_test("%s not set", bk == BK_REDIS
                                       ? "STARLING_TEST_REDIS"
                                       : "STARLING_TEST_REDIS_CLUSTER");
    cr_assert_eq(open_url(u, "timeout=3000", err, sizeof(err)), SL_OK, "%s",
                 err);
    pump_until(cond_ready, NULL, 5000);
    cr_assert(store_ready(st), "store %s not ready", u);
}

static void close_backend(void)
{
    store_free(st);
    st = NULL;
    event_free(heartbeat);
    event_base_free(base);
}

#define ISSUE(expr)                                                            \
    do {                                                                       \
        in_call = true;                                                        \
        expr;                                                                  \
        in_call = false;                                                       \
    } while (0)

#define CONTRACT(name)                                                         \
    static void name(void);                                                    \
    Test(store, memory_##name)                                                 \
    {                                                                          \
        open_backend(BK_MEM);                                                  \
        name();                                                                \
        close_backend();                                                       \
    }                                                                          \
    Test(store, redis_##name)                                                  \
    {                                                                          \
        open_backend(BK_REDIS);                                                \
        name();                                                                \
        close_backend();                                                       \
    }                                                                          \
    Test(store, cluster_##name)                                                \
    {                                                                          \
        open_backend(BK_CLUSTER);                                              \
        name();                                                                \
        close_backend();                                                       \
    }                                                                          \
    static void name(void)

/* The same, for the Redis backends only. */
#define REDIS_ONLY(name)                                                       \
    static void name(void);                                                    \
    Test(store, redis_##name)                                                  \
    {                                                                          \
        open_backend(BK_REDIS);                                                \
        name();                                                                \
        close_backend();                                                       \
    }                                                                          \
    Test(store, cluster_##name)                                                \
    {                                                                          \
        open_backend(BK_CLUSTER);                                              \
        name();                                                                \
        close_backend();                                                       \
    }                                                                          \
    static void name(void)

/* ---- one-shot results -------------------------------------------------- */

typedef struct res {
    int fired;
    int status;
    uint64_t id;
} res_t;

static bool cond_fired(void *arg)
{
    return ((res_t *)arg)->fired > 0;
}

static void on_done(void *arg, int status)
{
    res_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    r->fired++;
    r->status = status;
}

static void on_id(void *arg, int status, uint64_t id)
{
    res_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    r->fired++;
    r->status = status;
    r->id = id;
}

static int wait_res(res_t *r)
{
    cr_assert_eq(r->fired, 0, "callback ran inside the store call");
    pump_until(cond_fired, r, 10000);
    cr_assert_eq(r->fired, 1, "callback fired %d times", r->fired);
    return r->status;
}

/* ---- claim results ----------------------------------------------------- */

typedef struct csub {
    char filter[64];
    uint8_t opts;
    uint32_t sub_id;
} csub_t;

typedef struct centry {
    uint64_t id;
    uint8_t qos, state;
    uint16_t pid;
    msg_t *msg;
} centry_t;

typedef struct cres {
    int fired, status;
    bool present;
    uint64_t epoch;
    uint8_t version;
    uint32_t expiry, will_delay;
    msg_t *will;
    size_t n_subs, n_entries, n_inbound;
    csub_t subs[16];
    centry_t entries[64];
    uint16_t inbound[16];
} cres_t;

static void on_claim(void *arg, int status, const store_claim_t *c)
{
    cres_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    r->fired++;
    r->status = status;
    if (status != SL_OK)
        return;
    r->present = c->present;
    r->epoch = c->epoch;
    r->version = c->prev.version;
    r->expiry = c->prev.expiry;
    r->will_delay = c->prev.will_delay;
    r->will = c->prev.will ? msg_ref(c->prev.will) : NULL;
    cr_assert(c->n_subs <= 16 && c->n_entries <= 64 && c->n_inbound <= 16);
    r->n_subs = c->n_subs;
    for (size_t i = 0; i < c->n_subs; i++) {
        cr_assert(c->subs[i].flen < 64);
        memcpy(r->subs[i].filter, c->subs[i].filter, c->subs[i].flen);
        r->subs[i].opts = c->subs[i].opts;
        r->subs[i].sub_id = c->subs[i].sub_id;
    }
    r->n_entries = c->n_entries;
    for (size_t i = 0; i < c->n_entries; i++) {
        const store_entry_t *e = &c->entries[i];
        r->entries[i] =
            (centry_t){e->id, e->qos, e->state, e->pid, msg_ref(e->msg)};
    }
    r->n_inbound = c->n_inbound;
    if (c->n_inbound)
        memcpy(r->inbound, c->inbound, c->n_inbound * sizeof(uint16_t));
}

static void cres_fini(cres_t *r)
{
    msg_unref(&r->will);
    for (size_t i = 0; i < r->n_entries; i++)
        msg_unref(&r->entries[i].msg);
    memset(r, 0, sizeof(*r));
}

static bool cond_cfired(void *arg)
{
    return ((cres_t *)arg)->fired > 0;
}

/* Claim and wait; the result must be released with cres_fini(). */
static void claim_rec(const char *cid, bool clean, const store_session_t *rec,
                      cres_t *r)
{
    memset(r, 0, sizeof(*r));
    ISSUE(store_claim(st, cid, strlen(cid), clean, rec, on_claim, r));
    cr_assert_eq(r->fired, 0, "callback ran inside the store call");
    pump_until(cond_cfired, r, 10000);
    cr_assert_eq(r->fired, 1);
}

static uint64_t claim(const char *cid, bool clean, uint32_t expiry, cres_t *r)
{
    store_session_t rec = {.version = 5, .expiry = expiry};
    claim_rec(cid, clean, &rec, r);
    cr_assert_eq(r->status, SL_OK, "claim: %s", sl_strerror(r->status));
    return r->epoch;
}

static uint64_t claim0(const char *cid, uint32_t expiry)
{
    cres_t r;
    uint64_t e = claim(cid, false, expiry, &r);
    cres_fini(&r);
    return e;
}

static const csub_t *find_sub(const cres_t *r, const char *filter)
{
    for (size_t i = 0; i < r->n_subs; i++)
        if (strcmp(r->subs[i].filter, filter) == 0)
            return &r->subs[i];
    return NULL;
}

/* ---- synchronous wrappers ---------------------------------------------- */

static int sub_put(const char *cid, uint64_t epoch, const char *f, uint8_t opts,
                   uint32_t sub_id)
{
    res_t r = {0};
    store_sub_t s = {f, strlen(f), opts, sub_id};
    ISSUE(store_sub_put(st, cid, strlen(cid), epoch, &s, on_done, &r));
    return wait_res(&r);
}

static int sub_del(const char *cid, uint64_t epoch, const char *f)
{
    res_t r = {0};
    ISSUE(
        store_sub_del(st, cid, strlen(cid), epoch, f, strlen(f), on_done, &r));
    return wait_res(&r);
}

static msg_t *mk(const char *topic, const char *payload, uint8_t qos)
{
    msg_t *m = msg_new(topic, strlen(topic), payload, strlen(payload), NULL, 0,
                       qos, false, 0);
    cr_assert_not_null(m);
    return m;
}

static int append(const char *cid, const char *payload, uint32_t max,
                  bool drop_oldest, uint64_t *id)
{
    res_t r = {0};
    msg_t *m = mk("q/t", payload, 1);
    store_limits_t lim = {max, drop_oldest};
    ISSUE(store_queue_append(st, cid, strlen(cid), m, 1, &lim, on_id, &r));
    msg_unref(&m);
    int rc = wait_res(&r);
    if (id)
        *id = r.id;
    return rc;
}

static int mark(const char *cid, uint64_t epoch, uint64_t id, uint16_t pid,
                uint8_t state)
{
    res_t r = {0};
    ISSUE(store_queue_mark(st, cid, strlen(cid), epoch, id, pid, state, on_done,
                           &r));
    return wait_res(&r);
}

static int ack(const char *cid, uint64_t epoch, uint64_t id)
{
    res_t r = {0};
    ISSUE(store_queue_ack(st, cid, strlen(cid), epoch, id, on_done, &r));
    return wait_res(&r);
}

static int in_put(const char *cid, uint64_t epoch, uint16_t pid)
{
    res_t r = {0};
    ISSUE(store_inbound_put(st, cid, strlen(cid), epoch, pid, on_done, &r));
    return wait_res(&r);
}

static int in_del(const char *cid, uint64_t epoch, uint16_t pid)
{
    res_t r = {0};
    ISSUE(store_inbound_del(st, cid, strlen(cid), epoch, pid, on_done, &r));
    return wait_res(&r);
}

static int offline(const char *cid, uint64_t epoch, uint64_t now)
{
    res_t r = {0};
    ISSUE(store_session_offline(st, cid, strlen(cid), epoch, now, on_done, &r));
    return wait_res(&r);
}

static int sess_del(const char *cid, uint64_t epoch)
{
    res_t r = {0};
    ISSUE(store_session_del(st, cid, strlen(cid), epoch, on_done, &r));
    return wait_res(&r);
}

static int sess_put(const char *cid, uint64_t epoch, uint32_t expiry)
{
    res_t r = {0};
    store_session_t rec = {.version = 4, .expiry = expiry};
    ISSUE(store_session_put(st, cid, strlen(cid), epoch, &rec, on_done, &r));
    return wait_res(&r);
}

typedef struct cids_res {
    int fired, status;
    size_t n;
    char cids[32][32];
} cids_res_t;

static void on_cids(void *arg, int status, const char *const *cids, size_t n)
{
    cids_res_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    r->fired++;
    r->status = status;
    r->n = 0;
    for (size_t i = 0; i < n && r->n < 32; i++)
        snprintf(r->cids[r->n++], 32, "%s", cids[i]);
}

static bool cond_cids(void *arg)
{
    return ((cids_res_t *)arg)->fired > 0;
}

static void expired(uint64_t now, cids_res_t *r)
{
    memset(r, 0, sizeof(*r));
    ISSUE(store_session_expired(st, now, on_cids, r));
    cr_assert_eq(r->fired, 0);
    pump_until(cond_cids, r, 10000);
    cr_assert_eq(r->fired, 1);
    cr_assert_eq(r->status, SL_OK);
}

static bool has_cid(const cids_res_t *r, const char *cid)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->cids[i], cid) == 0)
            return true;
    return false;
}

/* ---- contract: sessions ------------------------------------------------ */

CONTRACT(claim_new_and_present)
{
    cres_t r;
    msg_t *will =
        msg_new("will/t", 6, "bye", 3, "\x01\x01", 2, 1, true, 1234567);
    store_session_t rec = {
        .version = 5, .expiry = 300, .will = will, .will_delay = 7};
    claim_rec("c1", false, &rec, &r);
    cr_assert_eq(r.status, SL_OK);
    cr_assert_not(r.present);
    cr_assert_gt(r.epoch, 0);
    uint64_t e1 = r.epoch;
    cres_fini(&r);

    store_session_t rec2 = {.version = 4, .expiry = 60};
    claim_rec("c1", false, &rec2, &r);
    cr_assert_eq(r.status, SL_OK);
    cr_assert(r.present);
    cr_assert_gt(r.epoch, e1);
    cr_assert_eq(r.version, 5);
    cr_assert_eq(r.expiry, 300);
    cr_assert_eq(r.will_delay, 7);
    cr_assert_not_null(r.will);
    cr_assert_str_eq(r.will->topic, "will/t");
    cr_assert_eq(r.will->payload_len, 3);
    cr_assert_eq(memcmp(r.will->payload, "bye", 3), 0);
    cr_assert_eq(r.will->props_len, 2);
    cr_assert_eq(r.will->qos, 1);
    cr_assert(r.will->retain);
    cr_assert_eq(r.will->expiry_at, 1234567);
    cres_fini(&r);

    /* the second record replaced the first, without a will */
    claim_rec("c1", false, &rec2, &r);
    cr_assert_eq(r.version, 4);
    cr_assert_eq(r.expiry, 60);
    cr_assert_null(r.will);
    cres_fini(&r);
    msg_unref(&will);
}

CONTRACT(claim_clean_discards)
{
    uint64_t e = claim0("c1", 300);
    cr_assert_eq(sub_put("c1", e, "a/b", 1, 0), SL_OK);
    cr_assert_eq(append("c1", "m1", 0, false, NULL), SL_OK);
    cr_assert_eq(in_put("c1", e, 9), SL_OK);

    cres_t r;
    uint64_t e2 = claim("c1", true, 300, &r);
    cr_assert_not(r.present);
    cr_assert_gt(e2, e);
    cr_assert_eq(r.n_subs, 0);
    cr_assert_eq(r.n_entries, 0);
    cres_fini(&r);

    claim("c1", false, 300, &r);
    cr_assert(r.present);
    cr_assert_eq(r.n_subs, 0);
    cr_assert_eq(r.n_entries, 0);
    cr_assert_eq(r.n_inbound, 0);
    cres_fini(&r);
}

CONTRACT(epoch_fencing)
{
    uint64_t e1 = claim0("c1", 300);
    uint64_t id;
    cr_assert_eq(append("c1", "m1", 0, false, &id), SL_OK);
    uint64_t e2 = claim0("c1", 300);
    cr_assert_gt(e2, e1);

    cr_assert_eq(sub_put("c1", e1, "x", 0, 0), SL_ESTALE);
    cr_assert_eq(sub_del("c1", e1, "x"), SL_ESTALE);
    cr_assert_eq(sess_put("c1", e1, 10), SL_ESTALE);
    cr_assert_eq(mark("c1", e1, id, 1, STORE_SENT), SL_ESTALE);
    cr_assert_eq(ack("c1", e1, id), SL_ESTALE);
    cr_assert_eq(in_put("c1", e1, 1), SL_ESTALE);
    cr_assert_eq(in_del("c1", e1, 1), SL_ESTALE);
    cr_assert_eq(offline("c1", e1, sl_now_ms()), SL_ESTALE);
    cr_assert_eq(sess_del("c1", e1), SL_ESTALE);

    /* nothing of the stale writes landed */
    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert(r.present);
    cr_assert_eq(r.n_subs, 0);
    cr_assert_eq(r.n_entries, 1);
    cr_assert_eq(r.entries[0].pid, 0);
    cr_assert_eq(r.n_inbound, 0);
    cr_assert_eq(r.expiry, 300);
    uint64_t e3 = r.epoch;
    cres_fini(&r);

    cr_assert_eq(sub_put("c1", e3, "x", 0, 0), SL_OK);
    cr_assert_eq(sess_put("c1", e3, 10), SL_OK);
    cr_assert_eq(sess_del("c1", e3), SL_OK);

    /* a session that does not exist */
    cr_assert_eq(sub_put("c1", e3, "x", 0, 0), SL_ENOTFOUND);
    cr_assert_eq(sess_put("nobody", 1, 10), SL_ENOTFOUND);
    cr_assert_eq(offline("nobody", 1, sl_now_ms()), SL_ENOTFOUND);
    cr_assert_eq(sess_del("nobody", 0), SL_ENOTFOUND);
}

CONTRACT(session_put_replaces_record)
{
    uint64_t e = claim0("c1", 300);
    cr_assert_eq(sess_put("c1", e, 77), SL_OK);
    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert(r.present);
    cr_assert_eq(r.version, 4);
    cr_assert_eq(r.expiry, 77);
    cres_fini(&r);
}

/* ---- contract: subscriptions ------------------------------------------- */

typedef struct load_res {
    int sessions, ends, status;
    int subs_c1, subs_c2, subs_other;
    uint8_t opts_ab;
    uint32_t id_ab;
} load_res_t;

static void on_psub(void *arg, int status, const char *cid,
                    const store_sub_t *subs, size_t n)
{
    load_res_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    if (!cid) {
        r->ends++;
        r->status = status;
        return;
    }
    r->sessions++;
    if (strcmp(cid, "c1") == 0) {
        r->subs_c1 = (int)n;
        for (size_t i = 0; i < n; i++) {
            if (subs[i].flen == 3 && memcmp(subs[i].filter, "a/b", 3) == 0) {
                r->opts_ab = subs[i].opts;
                r->id_ab = subs[i].sub_id;
            }
        }
    } else if (strcmp(cid, "c2") == 0) {
        r->subs_c2 = (int)n;
    } else {
        r->subs_other++;
    }
}

static bool cond_load(void *arg)
{
    return ((load_res_t *)arg)->ends > 0;
}

CONTRACT(subs_put_del_load)
{
    uint64_t e1 = claim0("c1", 300);
    uint64_t e2 = claim0("c2", 300);
    cr_assert_eq(sub_put("c1", e1, "a/b", 1, 0), SL_OK);
    cr_assert_eq(sub_put("c1", e1, "a/+", 2 | 4, 42), SL_OK);
    cr_assert_eq(sub_put("c1", e1, "#", 0, 0), SL_OK);
    cr_assert_eq(sub_put("c1", e1, "a/b", 2 | 8 | 0x20, 70000), SL_OK);
    cr_assert_eq(sub_del("c1", e1, "#"), SL_OK);
    cr_assert_eq(sub_del("c1", e1, "not/there"), SL_OK);
    cr_assert_eq(sub_put("c2", e2, "z", 1, 0), SL_OK);

    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert(r.present);
    cr_assert_eq(r.n_subs, 2);
    const csub_t *ab = find_sub(&r, "a/b");
    const csub_t *ap = find_sub(&r, "a/+");
    cr_assert_not_null(ab);
    cr_assert_not_null(ap);
    cr_assert_null(find_sub(&r, "#"));
    cr_assert_eq(ab->opts, 2 | 8 | 0x20);
    cr_assert_eq(ab->sub_id, 70000);
    cr_assert_eq(ap->opts, 2 | 4);
    cr_assert_eq(ap->sub_id, 42);
    cres_fini(&r);

    load_res_t lr = {0};
    ISSUE(store_sub_load(st, on_psub, &lr));
    cr_assert_eq(lr.sessions + lr.ends, 0);
    pump_until(cond_load, &lr, 10000);
    cr_assert_eq(lr.ends, 1);
    cr_assert_eq(lr.status, SL_OK);
    cr_assert_eq(lr.sessions, 2);
    cr_assert_eq(lr.subs_c1, 2);
    cr_assert_eq(lr.subs_c2, 1);
    cr_assert_eq(lr.subs_other, 0);
    cr_assert_eq(lr.opts_ab, 2 | 8 | 0x20);
    cr_assert_eq(lr.id_ab, 70000);

    /* a deleted session is no longer loaded */
    cr_assert_eq(sess_del("c2", e2), SL_OK);
    memset(&lr, 0, sizeof(lr));
    ISSUE(store_sub_load(st, on_psub, &lr));
    pump_until(cond_load, &lr, 10000);
    cr_assert_eq(lr.sessions, 1);
    cr_assert_eq(lr.subs_c2, 0);
}

/* ---- contract: queue --------------------------------------------------- */

CONTRACT(queue_order_and_drop_new)
{
    uint64_t e = claim0("c1", 300);
    uint64_t id1, id2, id3, id4;
    cr_assert_eq(append("c1", "m1", 3, false, &id1), SL_OK);
    cr_assert_eq(append("c1", "m2", 3, false, &id2), SL_OK);
    cr_assert_eq(append("c1", "m3", 3, false, &id3), SL_OK);
    cr_assert_lt(id1, id2);
    cr_assert_lt(id2, id3);
    cr_assert_eq(append("c1", "m4", 3, false, &id4), SL_ELIMIT);
    cr_assert_eq(append("nobody", "m", 3, false, NULL), SL_ENOTFOUND);

    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 3);
    const char *want[] = {"m1", "m2", "m3"};
    uint64_t ids[] = {id1, id2, id3};
    for (int i = 0; i < 3; i++) {
        centry_t *en = &r.entries[i];
        cr_assert_eq(en->id, ids[i]);
        cr_assert_eq(en->qos, 1);
        cr_assert_eq(en->pid, 0);
        cr_assert_str_eq(en->msg->topic, "q/t");
        cr_assert_eq(en->msg->payload_len, 2);
        cr_assert_eq(memcmp(en->msg->payload, want[i], 2), 0);
    }
    e = r.epoch;
    cres_fini(&r);
    /* an entry sent makes room for one more */
    cr_assert_eq(mark("c1", e, id1, 1, STORE_SENT), SL_OK);
    cr_assert_eq(append("c1", "m4", 3, false, &id4), SL_OK);
    cr_assert_gt(id4, id3);
    cr_assert_eq(append("c1", "m5", 3, false, NULL), SL_ELIMIT);
}

CONTRACT(queue_drop_oldest_keeps_sent)
{
    /* max_queued counts the entries not sent yet */
    uint64_t e = claim0("c1", 300);
    uint64_t id[8];
    cr_assert_eq(append("c1", "m1", 3, true, &id[1]), SL_OK);
    cr_assert_eq(append("c1", "m2", 3, true, &id[2]), SL_OK);
    cr_assert_eq(append("c1", "m3", 3, true, &id[3]), SL_OK);
    cr_assert_eq(append("c1", "m4", 3, true, &id[4]), SL_OK); /* drops m1 */
    cr_assert_eq(mark("c1", e, id[2], 10, STORE_SENT), SL_OK);
    cr_assert_eq(append("c1", "m5", 3, true, &id[5]), SL_OK); /* room */
    cr_assert_eq(append("c1", "m6", 3, true, &id[6]), SL_OK); /* drops m3 */
    cr_assert_gt(id[6], id[5]);

    cres_t r;
    e = claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 4);
    cr_assert_eq(r.entries[0].id, id[2]);
    cr_assert_eq(r.entries[0].pid, 10);
    cr_assert_eq(r.entries[1].id, id[4]);
    cr_assert_eq(r.entries[2].id, id[5]);
    cr_assert_eq(r.entries[3].id, id[6]);
    cres_fini(&r);

    /* every entry in flight: the queue takes new ones again */
    cr_assert_eq(mark("c1", e, id[4], 11, STORE_SENT), SL_OK);
    cr_assert_eq(mark("c1", e, id[5], 12, STORE_SENT), SL_OK);
    cr_assert_eq(mark("c1", e, id[6], 13, STORE_SENT), SL_OK);
    cr_assert_eq(append("c1", "m7", 3, true, &id[7]), SL_OK);
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 5);
    cr_assert_eq(r.entries[0].id, id[2]);
    cr_assert_eq(r.entries[4].id, id[7]);
    cres_fini(&r);
}

CONTRACT(queue_mark_and_ack)
{
    uint64_t e = claim0("c1", 300);
    uint64_t id1, id2;
    cr_assert_eq(append("c1", "m1", 0, false, &id1), SL_OK);
    cr_assert_eq(append("c1", "m2", 0, false, &id2), SL_OK);
    cr_assert_eq(mark("c1", e, id1, 65535, STORE_SENT), SL_OK);
    cr_assert_eq(mark("c1", e, id2, 7, STORE_SENT), SL_OK);
    cr_assert_eq(mark("c1", e, id2, 7, STORE_PUBREC), SL_OK);
    cr_assert_eq(mark("c1", e, id2 + 100, 8, STORE_SENT), SL_ENOTFOUND);

    cres_t r;
    e = claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 2);
    cr_assert_eq(r.entries[0].pid, 65535);
    cr_assert_eq(r.entries[0].state, STORE_SENT);
    cr_assert_eq(r.entries[1].pid, 7);
    cr_assert_eq(r.entries[1].state, STORE_PUBREC);
    cres_fini(&r);

    cr_assert_eq(ack("c1", e, id1), SL_OK);
    cr_assert_eq(ack("c1", e, id1), SL_ENOTFOUND);
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 1);
    cr_assert_eq(r.entries[0].id, id2);
    cres_fini(&r);
}

CONTRACT(queue_keeps_the_message)
{
    claim0("c1", 300);
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i; /* binary, with NUL bytes */
    msg_t *m = msg_new("a/b/c", 5, payload, sizeof(payload), "\x03\x00\x01x", 4,
                       2, true, 99999);
    res_t rr = {0};
    ISSUE(store_queue_append(st, "c1", 2, m, 2, NULL, on_id, &rr));
    cr_assert_eq(wait_res(&rr), SL_OK);
    msg_unref(&m);

    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 1);
    msg_t *g = r.entries[0].msg;
    cr_assert_eq(r.entries[0].qos, 2);
    cr_assert_str_eq(g->topic, "a/b/c");
    cr_assert_eq(g->payload_len, sizeof(payload));
    cr_assert_eq(memcmp(g->payload, payload, sizeof(payload)), 0);
    cr_assert_eq(g->props_len, 4);
    cr_assert_eq(memcmp(g->props, "\x03\x00\x01x", 4), 0);
    cr_assert_eq(g->qos, 2);
    cr_assert(g->retain);
    cr_assert_eq(g->expiry_at, 99999);
    cres_fini(&r);
}

/* Appends issued in one loop iteration, to several sessions, with two
 * messages and two limits: each gets its own result, in order for each
 * session (sessions on different cluster nodes complete in any order). */
typedef struct many_res {
    int fired;
    int status[8], seq[8];
    uint64_t id[8];
} many_res_t;

static many_res_t many;

static void on_many(void *arg, int status, uint64_t id)
{
    int i = (int)(intptr_t)arg;
    cr_assert(!in_call, "callback ran inside the store call");
    many.seq[i] = many.fired;
    many.status[i] = status;
    many.id[i] = id;
    many.fired++;
}

static bool cond_many(void *arg)
{
    return many.fired >= *(int *)arg;
}

CONTRACT(queue_appends_in_one_iteration)
{
    claim0("c1", 300);
    claim0("c2", 300);
    msg_t *a = mk("q/a", "A", 1), *b = mk("q/b", "BB", 1);
    store_limits_t keep = {2, false}, drop = {2, true};
    struct {
        const char *cid;
        msg_t *m;
        const store_limits_t *lim;
        int want;
    } ops[] = {
        {"c1", a, &keep, SL_OK},   {"c2", a, &drop, SL_OK},
        {"nobody", a, &keep, SL_ENOTFOUND},
        {"c1", b, &keep, SL_OK},   {"c1", a, &keep, SL_ELIMIT},
        {"c2", b, &drop, SL_OK},   {"c2", a, &drop, SL_OK}, /* drops 1st */
    };
    int n = (int)(sizeof(ops) / sizeof(ops[0]));
    memset(&many, 0, sizeof(many));
    in_call = true;
    for (int i = 0; i < n; i++)
        store_queue_append(st, ops[i].cid, strlen(ops[i].cid), ops[i].m, 1,
                           ops[i].lim, on_many, (void *)(intptr_t)i);
    in_call = false;
    msg_unref(&a);
    msg_unref(&b);
    pump_until(cond_many, &n, 10000);
    cr_assert_eq(many.fired, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(many.status[i], ops[i].want, "append %d: %s", i,
                     sl_strerror(many.status[i]));
        for (int j = 0; j < i; j++)
            if (strcmp(ops[j].cid, ops[i].cid) == 0)
                cr_assert_lt(many.seq[j], many.seq[i]);
    }
    cr_assert_lt(many.id[0], many.id[3]);
    cr_assert_lt(many.id[5], many.id[6]);

    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_entries, 2);
    cr_assert_eq(r.entries[0].id, many.id[0]);
    cr_assert_str_eq(r.entries[0].msg->topic, "q/a");
    cr_assert_eq(r.entries[1].id, many.id[3]);
    cr_assert_str_eq(r.entries[1].msg->topic, "q/b");
    cr_assert_eq(r.entries[1].msg->payload_len, 2);
    cres_fini(&r);
    claim("c2", false, 300, &r);
    cr_assert_eq(r.n_entries, 2);
    cr_assert_eq(r.entries[0].id, many.id[5]);
    cr_assert_str_eq(r.entries[0].msg->topic, "q/b");
    cr_assert_eq(r.entries[1].id, many.id[6]);
    cr_assert_str_eq(r.entries[1].msg->topic, "q/a");
    cres_fini(&r);
    /* an append to a missing session leaves nothing behind */
    claim("nobody", false, 300, &r);
    cr_assert_not(r.present);
    cres_fini(&r);
}

typedef struct order_res {
    int next, bad;
} order_res_t;

static order_res_t order;

static void on_ordered(void *arg, int status)
{
    cr_assert(!in_call, "callback ran inside the store call");
    if ((int)(intptr_t)arg != order.next || status != SL_OK)
        order.bad++;
    order.next++;
}

static void on_ordered_id(void *arg, int status, uint64_t id)
{
    on_ordered(arg, status);
}

static bool cond_order(void *arg)
{
    return order.next >= *(int *)arg;
}

CONTRACT(ops_on_one_client_complete_in_order)
{
    uint64_t e = claim0("c1", 300);
    msg_t *m = mk("t", "p", 1);
    int n = 0;
    memset(&order, 0, sizeof(order));
    in_call = true;
    for (int i = 0; i < 40; i++) {
        store_queue_append(st, "c1", 2, m, 1, NULL, on_ordered_id,
                           (void *)(intptr_t)n++);
        store_sub_put(st, "c1", 2, e,
                      &(store_sub_t){"f", 1, (uint8_t)(i & 3), 0}, on_ordered,
                      (void *)(intptr_t)n++);
        store_inbound_put(st, "c1", 2, e, (uint16_t)(i + 1), on_ordered,
                          (void *)(intptr_t)n++);
    }
    in_call = false;
    msg_unref(&m);
    cr_assert_eq(order.next, 0);
    pump_until(cond_order, &n, 10000);
    cr_assert_eq(order.next, n);
    cr_assert_eq(order.bad, 0);
}

/* ---- contract: inbound QoS 2 ------------------------------------------- */

CONTRACT(inbound_put_del)
{
    uint64_t e = claim0("c1", 300);
    cr_assert_eq(in_put("c1", e, 5), SL_OK);
    cr_assert_eq(in_put("c1", e, 7), SL_OK);
    cr_assert_eq(in_put("c1", e, 7), SL_OK);
    cr_assert_eq(in_put("c1", e, 65535), SL_OK);
    cr_assert_eq(in_del("c1", e, 5), SL_OK);
    cr_assert_eq(in_del("c1", e, 1000), SL_OK);

    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_inbound, 2);
    bool has7 = false, hasmax = false;
    for (size_t i = 0; i < r.n_inbound; i++) {
        has7 |= r.inbound[i] == 7;
        hasmax |= r.inbound[i] == 65535;
    }
    cr_assert(has7 && hasmax);
    cres_fini(&r);
}

/* ---- contract: offline and expiry -------------------------------------- */

CONTRACT(offline_and_expired)
{
    uint64_t t = sl_now_ms();
    uint64_t e1 = claim0("c1", 1);
    uint64_t e2 = claim0("c2", UINT32_MAX);
    claim0("c3", 1);
    uint64_t e4 = claim0("c4", 10);
    cr_assert_eq(offline("c1", e1, t), SL_OK);
    cr_assert_eq(offline("c2", e2, t), SL_OK);
    cr_assert_eq(offline("c4", e4, t), SL_OK);

    cids_res_t r;
    expired(t + 999, &r);
    cr_assert_not(has_cid(&r, "c1"));
    expired(t + 1000, &r);
    cr_assert(has_cid(&r, "c1"));
    cr_assert_not(has_cid(&r, "c2")); /* never expires */
    cr_assert_not(has_cid(&r, "c3")); /* online */
    cr_assert_not(has_cid(&r, "c4"));
    expired(t + 3600 * 1000, &r);
    cr_assert(has_cid(&r, "c1"));
    cr_assert(has_cid(&r, "c4"));
    cr_assert_not(has_cid(&r, "c2"));
    cr_assert_not(has_cid(&r, "c3"));

    cr_assert_eq(sess_del("c1", 0), SL_OK);
    expired(t + 3600 * 1000, &r);
    cr_assert_not(has_cid(&r, "c1"));
    cr_assert(has_cid(&r, "c4"));

    cres_t cr;
    claim("c1", false, 300, &cr);
    cr_assert_not(cr.present);
    cres_fini(&cr);

    /* a session claimed again is online: not expired any more */
    claim("c4", false, 10, &cr);
    cr_assert(cr.present);
    cres_fini(&cr);
    expired(t + 3600 * 1000, &r);
    cr_assert_not(has_cid(&r, "c4"));
}

CONTRACT(del_epoch0_refuses_online)
{
    uint64_t e = claim0("c1", 300);
    cr_assert_eq(sess_del("c1", 0), SL_ESTALE);
    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert(r.present);
    e = r.epoch;
    cres_fini(&r);
    cr_assert_eq(offline("c1", e, sl_now_ms() - 3600 * 1000), SL_OK);
    cr_assert_eq(sess_del("c1", 0), SL_OK);
    cr_assert_eq(sess_del("c1", 0), SL_ENOTFOUND);
}

/* ---- contract: retained ------------------------------------------------ */

typedef struct msgs_res {
    int fired, status;
    size_t n;
    char topics[8][32];
    char payloads[8][32];
} msgs_res_t;

static void on_msgs(void *arg, int status, msg_t *const *msgs, size_t n)
{
    msgs_res_t *r = arg;
    cr_assert(!in_call, "callback ran inside the store call");
    r->fired++;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(r->topics[i], 32, "%s", msgs[i]->topic);
        snprintf(r->payloads[i], 32, "%.*s", (int)msgs[i]->payload_len,
                 (const char *)msgs[i]->payload);
    }
}

static bool cond_msgs(void *arg)
{
    return ((msgs_res_t *)arg)->fired > 0;
}

static int retain_put(const char *topic, const char *payload)
{
    res_t r = {0};
    msg_t *m = msg_new(topic, strlen(topic), payload, strlen(payload), NULL, 0,
                       1, true, 0);
    ISSUE(store_retain_put(st, m, on_done, &r));
    msg_unref(&m);
    return wait_res(&r);
}

static void retain_load(msgs_res_t *r)
{
    memset(r, 0, sizeof(*r));
    ISSUE(store_retain_load(st, on_msgs, r));
    cr_assert_eq(r->fired, 0);
    pump_until(cond_msgs, r, 10000);
    cr_assert_eq(r->fired, 1);
    cr_assert_eq(r->status, SL_OK);
}

CONTRACT(retained_put_del_load)
{
    msgs_res_t r;
    retain_load(&r);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(retain_put("r/1", "one"), SL_OK);
    cr_assert_eq(retain_put("r/2", "two"), SL_OK);
    cr_assert_eq(retain_put("r/1", "uno"), SL_OK);
    res_t d = {0};
    ISSUE(store_retain_del(st, "r/2", 3, on_done, &d));
    cr_assert_eq(wait_res(&d), SL_OK);
    d = (res_t){0};
    ISSUE(store_retain_del(st, "r/none", 6, on_done, &d));
    cr_assert_eq(wait_res(&d), SL_OK);
    retain_load(&r);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.topics[0], "r/1");
    cr_assert_str_eq(r.payloads[0], "uno");
}

CONTRACT(fire_and_forget)
{
    /* NULL callbacks: the operations still happen */
    uint64_t e = claim0("c1", 300);
    store_sub_t s = {"ff", 2, 1, 0};
    store_sub_put(st, "c1", 2, e, &s, NULL, NULL);
    msg_t *m = mk("t", "p", 1);
    store_queue_append(st, "c1", 2, m, 1, NULL, NULL, NULL);
    msg_unref(&m);
    cr_assert_eq(in_put("c1", e, 3), SL_OK); /* after the others */
    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_eq(r.n_subs, 1);
    cr_assert_eq(r.n_entries, 1);
    cres_fini(&r);
}

/* ---- Redis backend only ------------------------------------------------ */

REDIS_ONLY(claim_discards_an_expired_session)
{
    /* expired while no node swept: claiming finds it gone */
    uint64_t e = claim0("c1", 1);
    cr_assert_eq(sub_put("c1", e, "a", 1, 0), SL_OK);
    cr_assert_eq(offline("c1", e, sl_now_ms() - 5000), SL_OK);
    cres_t r;
    claim("c1", false, 300, &r);
    cr_assert_not(r.present);
    cr_assert_eq(r.n_subs, 0);
    cres_fini(&r);
}

REDIS_ONLY(swept_then_reclaimed_is_not_deleted)
{
    uint64_t t = sl_now_ms() - 10000;
    uint64_t e = claim0("c1", 1);
    cr_assert_eq(offline("c1", e, t), SL_OK);
    cids_res_t r;
    expired(t + 2000, &r);
    cr_assert(has_cid(&r, "c1"));
    /* the client comes back and leaves again before the deletion */
    cres_t cr;
    store_session_t rec = {.version = 5, .expiry = 3600};
    claim_rec("c1", false, &rec, &cr);
    cr_assert_eq(cr.status, SL_OK);
    e = cr.epoch;
    cres_fini(&cr);
    cr_assert_eq(offline("c1", e, sl_now_ms()), SL_OK);
    cr_assert_eq(sess_del("c1", 0), SL_ESTALE);
    claim_rec("c1", false, &rec, &cr);
    cr_assert(cr.present);
    cres_fini(&cr);
}

static bool cond_idle(void *arg)
{
    store_stats_t s;
    store_stats(st, &s);
    return s.pending == 0;
}

REDIS_ONLY(stats_count_requests)
{
    store_stats_t s;
    claim0("c1", 300);
    pump_until(cond_idle, NULL, 5000); /* cluster: index updates follow */
    store_stats(st, &s);
    cr_assert_gt(s.requests, 0);
    cr_assert_eq(s.pending, 0);
    cr_assert_eq(s.errors, 0);
    cr_assert_str_eq(store_kind(st), "redis");
}

/* Queue appends per second, pipelined (printed, not asserted). */
typedef struct tput {
    int done, failed;
} tput_t;

static void on_tput(void *arg, int status, uint64_t id)
{
    tput_t *t = arg;
    t->done++;
    t->failed += status != SL_OK;
}

static bool cond_tput(void *arg)
{
    return ((tput_t *)arg)->done >= 20000;
}

REDIS_ONLY(append_throughput)
{
    char cid[16];
    for (int i = 0; i < 100; i++) {
        snprintf(cid, sizeof(cid), "tp%d", i);
        claim0(cid, 300);
    }
    uint8_t payload[100] = {0};
    msg_t *m = msg_new("bench/topic", 11, payload, sizeof(payload), NULL, 0, 1,
                       false, 0);
    tput_t t = {0};
    uint64_t t0 = sl_mono_ms();
    for (int i = 0; i < 20000; i++) {
        snprintf(cid, sizeof(cid), "tp%d", i % 100);
        store_queue_append(st, cid, strlen(cid), m, 1, NULL, on_tput, &t);
        if (i % 500 == 499)
            event_base_loop(base, EVLOOP_NONBLOCK);
    }
    pump_until(cond_tput, &t, 30000);
    uint64_t ms = sl_mono_ms() - t0;
    msg_unref(&m);
    cr_assert_eq(t.done, 20000);
    cr_assert_eq(t.failed, 0);
    fprintf(stderr,
            "store %s: 20000 queue appends (100-byte payload) in "
            "%llu ms: %.0f/s\n",
            backend == BK_REDIS ? "redis" : "cluster", (unsigned long long)ms,
            20000.0 * 1000 / (double)(ms ? ms : 1));
}

/* A plain synchronous connection to the standalone test server. */
static redisContext *admin(void)
{
    redis_url_t u;
    char err[128];
    const char *url = env_url(BK_REDIS);
    cr_assert_eq(redis_url_parse(url, &u, err, sizeof(err)), SL_OK);
    redisContext *c = redisConnect(u.hosts[0].host, u.hosts[0].port);
    cr_assert(c && !c->err);
    if (u.password) {
        redisReply *r = u.user
                            ? redisCommand(c, "AUTH %s %s", u.user, u.password)
                            : redisCommand(c, "AUTH %s", u.password);
        freeReplyObject(r);
    }
    redis_url_fini(&u);
    return c;
}

Test(store, redis_reconnects_after_kill)
{
    open_backend(BK_REDIS);
    uint64_t e = claim0("c1", 300);
    redisContext *c = admin();
    redisReply *r = redisCommand(c, "CLIENT KILL TYPE normal SKIPME yes");
    cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1);
    freeReplyObject(r);
    redisFree(c);
    /* the first operation may see the loss; the backend comes back alone */
    int rc = sub_put("c1", e, "a", 0, 0);
    cr_assert(rc == SL_OK || rc == SL_EIO, "status %d", rc);
    pump_until(cond_ready, NULL, 5000);
    cr_assert(store_ready(st));
    cr_assert_eq(sub_put("c1", e, "b", 0, 0), SL_OK);
    store_stats_t s;
    store_stats(st, &s);
    cr_assert_geq(s.disconnects, 1);
    cr_assert_geq(s.reconnects, 1);
    close_backend();
}

Test(store, redis_deadline_then_recovery)
{
    loop_init();
    const char *u = env_url(BK_REDIS);
    if (!u)
        cr_skip_test("STARLING_TEST_REDIS not set");
    char err[256];
    cr_assert_eq(open_url(u, "timeout=300", err, sizeof(err)), SL_OK);
    pump_until(cond_ready, NULL, 5000);
    uint64_t e = claim0("c1", 300);
    redisContext *c = admin();
    redisReply *r = redisCommand(c, "CLIENT PAUSE 1200 ALL");
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "CLIENT PAUSE failed");
    freeReplyObject(r);
    redisFree(c);
    uint64_t t0 = sl_mono_ms();
    int rc = sub_put("c1", e, "a", 0, 0);
    cr_assert(rc == SL_ETIMEOUT || rc == SL_EIO, "status %d", rc);
    cr_assert_lt(sl_mono_ms() - t0, 1000, "the deadline was not kept");
    /* after the pause the backend reconnects by itself */
    pump_until(cond_ready, NULL, 8000);
    cr_assert(store_ready(st));
    cr_assert_eq(sub_put("c1", e, "b", 0, 0), SL_OK);
    store_stats_t s;
    store_stats(st, &s);
    cr_assert_geq(s.timeouts, 1);
    close_backend();
}

Test(store, redis_bad_password_is_not_ready)
{
    loop_init();
    const char *u = env_url(BK_REDIS);
    if (!u)
        cr_skip_test("STARLING_TEST_REDIS not set");
    redis_url_t pu;
    char err[256], url[300];
    cr_assert_eq(redis_url_parse(u, &pu, err, sizeof(err)), SL_OK);
    snprintf(url, sizeof(url), "redis://nobody:wrong@%s:%d", pu.hosts[0].host,
             pu.hosts[0].port);
    redis_url_fini(&pu);
    cr_assert_eq(open_url(url, "timeout=300", err, sizeof(err)), SL_OK);
    res_t d = {0};
    ISSUE(store_retain_del(st, "t", 1, on_done, &d));
    cr_assert_eq(wait_res(&d), SL_EIO);
    cr_assert_not(store_ready(st));
    close_backend();
}

Test(store, redis_server_down_fails_in_time)
{
    /* nothing listens on port 1: every operation fails after its deadline */
    loop_init();
    char err[256];
    cr_assert_eq(
        open_url("redis://127.0.0.1:1", "timeout=200", err, sizeof(err)), SL_OK,
        "%s", err);
    cr_assert_not(store_ready(st));
    uint64_t t0 = sl_mono_ms();
    cres_t r;
    store_session_t rec = {.version = 5, .expiry = 10};
    claim_rec("c1", false, &rec, &r);
    cr_assert_eq(r.status, SL_EIO);
    cr_assert_lt(sl_mono_ms() - t0, 2000);
    res_t d = {0};
    ISSUE(store_retain_del(st, "t", 1, on_done, &d));
    cr_assert_eq(wait_res(&d), SL_EIO);
    cids_res_t cr = {0};
    ISSUE(store_session_expired(st, 1, on_cids, &cr));
    pump_until(cond_cids, &cr, 5000);
    cr_assert_eq(cr.status, SL_EIO);
    store_stats_t s;
    store_stats(st, &s);
    cr_assert_geq(s.errors, 3);
    close_backend();
}

Test(store, redis_free_fails_pending)
{
    loop_init();
    char err[256];
    cr_assert_eq(
        open_url("redis://127.0.0.1:1", "timeout=5000", err, sizeof(err)),
        SL_OK);
    res_t a = {0}, b = {0};
    ISSUE(store_retain_del(st, "t", 1, on_done, &a));
    msg_t *m = mk("t", "p", 1);
    ISSUE(store_queue_append(st, "c", 1, m, 1, NULL, on_id, &b));
    msg_unref(&m);
    store_free(st);
    st = NULL;
    cr_assert_eq(a.fired, 1);
    cr_assert_eq(a.status, SL_EIO);
    cr_assert_eq(b.fired, 1);
    cr_assert_eq(b.status, SL_EIO);
    event_free(heartbeat);
    event_base_free(base);
}

/* A cluster node, addressed as a standalone server, redirects us (MOVED)
 * for every slot it does not own: plain commands still work. */
Test(store, cluster_moved_followed_in_standalone_mode)
{
    loop_init();
    const char *cu = env_url(BK_CLUSTER);
    if (!cu)
        cr_skip_test("STARLING_TEST_REDIS_CLUSTER not set");
    redis_url_t u;
    char err[256], url[300];
    cr_assert_eq(redis_url_parse(cu, &u, err, sizeof(err)), SL_OK);
    snprintf(url, sizeof(url), "redis://%s%s%s%s:%d", u.password ? ":" : "",
             u.password ? u.password : "", u.password ? "@" : "",
             u.hosts[0].host, u.hosts[0].port);
    redis_url_fini(&u);
    cr_assert_eq(open_url(url, NULL, err, sizeof(err)), SL_OK);
    pump_until(cond_ready, NULL, 5000);
    char topic[16];
    for (int i = 0; i < 8; i++) {
        snprintf(topic, sizeof(topic), "t/%d", i);
        cr_assert_eq(retain_put(topic, "x"), SL_OK);
    }
    msgs_res_t r;
    retain_load(&r);
    cr_assert_eq(r.n, 8);
    close_backend();
}

/* A sync connection to host:port of the test cluster. */
static redisContext *node_admin(const char *host, int port)
{
    redisContext *c = redisConnect(host, port);
    cr_assert(c && !c->err, "cannot connect to %s:%d", host, port);
    redis_url_t u;
    char err[128];
    cr_assert_eq(redis_url_parse(env_url(BK_CLUSTER), &u, err, sizeof(err)),
                 SL_OK);
    if (u.password) {
        redisReply *r = u.user
                            ? redisCommand(c, "AUTH %s %s", u.user, u.password)
                            : redisCommand(c, "AUTH %s", u.password);
        cr_assert(r && r->type == REDIS_REPLY_STATUS, "AUTH failed");
        freeReplyObject(r);
    }
    redis_url_fini(&u);
    return c;
}

static void node_id(const char *host, int port, char id[64])
{
    redisContext *c = node_admin(host, port);
    redisReply *r = redisCommand(c, "CLUSTER MYID");
    cr_assert(r && r->type == REDIS_REPLY_STRING && r->len < 64);
    memcpy(id, r->str, r->len + 1);
    freeReplyObject(r);
    redisFree(c);
}

static void node_cmd(const slots_node_t *n, const char *fmt, ...)
{
    redisContext *c = node_admin(n->host, n->port);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "%s:%d: %s", n->host, n->port,
              r ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
}

/*
 * A slot migrating between masters while we use it (the keys are not moved:
 * the slot holds none of ours when the migration starts). While it is
 * MIGRATING, a one-key command gets ASK and runs on the importing node
 * after ASKING; a session script (several keys, missing on both sides)
 * gets ASK then TRYAGAIN and waits. Once the slot belongs to the new node,
 * the waiting script goes through (MOVED from the old owner) and the map
 * follows.
 */
Test(store, cluster_ask_and_moved_during_migration)
{
    open_backend(BK_CLUSTER);
    char key[160], cid[32], tag[40];
    snprintf(key, sizeof(key), "%sretained", prefix);
    uint16_t slot = slots_key(key, strlen(key));
    for (int i = 0;; i++) { /* a client id in the same slot */
        snprintf(cid, sizeof(cid), "mig%d", i);
        snprintf(tag, sizeof(tag), "c:%s", cid);
        if (slots_key(tag, strlen(tag)) == slot)
            break;
    }

    redis_url_t u;
    char err[256];
    cr_assert_eq(redis_url_parse(env_url(BK_CLUSTER), &u, err, sizeof(err)),
                 SL_OK);
    redisContext *c = node_admin(u.hosts[0].host, u.hosts[0].port);
    redis_url_fini(&u);
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    slots_map_t *m = calloc(1, sizeof(*m));
    cr_assert_eq(slots_map_parse(r, "127.0.0.1", m), SL_OK);
    freeReplyObject(r);
    redisFree(c);
    cr_assert_geq(m->n_nodes, 2);
    const slots_node_t *from = &m->nodes[m->owner[slot]];
    const slots_node_t *to = &m->nodes[(m->owner[slot] + 1) % m->n_nodes];
    char from_id[64], to_id[64];
    node_id(from->host, from->port, from_id);
    node_id(to->host, to->port, to_id);

    node_cmd(to, "CLUSTER SETSLOT %d IMPORTING %s", slot, from_id);
    node_cmd(from, "CLUSTER SETSLOT %d MIGRATING %s", slot, to_id);
    cr_assert_eq(retain_put("mig/t", "x"), SL_OK);
    store_stats_t s;
    store_stats(st, &s);
    cr_assert_geq(s.redirects, 1, "no ASK seen");

    cres_t cr = {0};
    store_session_t rec = {.version = 5, .expiry = 300};
    ISSUE(store_claim(st, cid, strlen(cid), false, &rec, on_claim, &cr));
    uint64_t t0 = sl_mono_ms();
    while (sl_mono_ms() - t0 < 300)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_eq(cr.fired, 0, "the claim did not wait for the migration");

    for (size_t i = 0; i < m->n_nodes; i++)
        node_cmd(&m->nodes[i], "CLUSTER SETSLOT %d NODE %s", slot, to_id);
    pump_until(cond_cfired, &cr, 5000);
    cr_assert_eq(cr.fired, 1);
    cr_assert_eq(cr.status, SL_OK, "claim: %s", sl_strerror(cr.status));
    uint64_t e = cr.epoch;
    cres_fini(&cr);
    cr_assert_eq(sub_put(cid, e, "a/b", 1, 0), SL_OK);
    msgs_res_t lr;
    retain_load(&lr);
    cr_assert_eq(lr.n, 1);
    claim(cid, false, 300, &cr);
    cr_assert(cr.present);
    cr_assert_eq(cr.n_subs, 1);
    cres_fini(&cr);
    store_stats(st, &s);
    cr_assert_eq(s.errors, 0);
    slots_map_fini(m);
    free(m);
    close_backend();
}

/* ---- URL parsing ------------------------------------------------------- */

Test(store, url_standalone)
{
    redis_url_t u;
    char err[256];
    cr_assert_eq(
        redis_url_parse("redis://127.0.0.1:6380/3", &u, err, sizeof(err)),
        SL_OK);
    cr_assert_not(u.cluster);
    cr_assert_eq(u.n_hosts, 1);
    cr_assert_str_eq(u.hosts[0].host, "127.0.0.1");
    cr_assert_eq(u.hosts[0].port, 6380);
    cr_assert_eq(u.db, 3);
    cr_assert_null(u.user);
    cr_assert_null(u.password);
    cr_assert_str_eq(u.prefix, "sl:");
    cr_assert_eq(u.timeout_ms, 5000);
    redis_url_fini(&u);

    cr_assert_eq(redis_url_parse("redis://localhost", &u, err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(u.hosts[0].port, 6379);
    cr_assert_eq(u.db, 0);
    redis_url_fini(&u);
}

Test(store, url_auth_and_options)
{
    redis_url_t u;
    char err[256];
    cr_assert_eq(redis_url_parse("redis://alice:p%40ss:w@[::1]:7000/0?"
                                 "prefix=x%3A&timeout=250",
                                 &u, err, sizeof(err)),
                 SL_OK, "%s", err);
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "p@ss:w");
    cr_assert_str_eq(u.hosts[0].host, "::1");
    cr_assert_eq(u.hosts[0].port, 7000);
    cr_assert_str_eq(u.prefix, "x:");
    cr_assert_eq(u.timeout_ms, 250);
    redis_url_fini(&u);

    cr_assert_eq(redis_url_parse("redis://:secret@h", &u, err, sizeof(err)),
                 SL_OK);
    cr_assert_null(u.user);
    cr_assert_str_eq(u.password, "secret");
    redis_url_fini(&u);
    cr_assert_eq(redis_url_parse("redis://secret@h", &u, err, sizeof(err)),
                 SL_OK);
    cr_assert_null(u.user);
    cr_assert_str_eq(u.password, "secret");
    redis_url_fini(&u);
}

Test(store, url_cluster)
{
    redis_url_t u;
    char err[256];
    cr_assert_eq(redis_url_parse("redis+cluster://u:p@a:7000,b:7001,c", &u, err,
                                 sizeof(err)),
                 SL_OK, "%s", err);
    cr_assert(u.cluster);
    cr_assert_eq(u.n_hosts, 3);
    cr_assert_str_eq(u.hosts[1].host, "b");
    cr_assert_eq(u.hosts[1].port, 7001);
    cr_assert_eq(u.hosts[2].port, 6379);
    cr_assert_str_eq(u.user, "u");
    redis_url_fini(&u);
}

Test(store, url_invalid)
{
    const char *bad[] = {"rediss://h:1",
                         "http://h",
                         "redis://",
                         "redis://h:0",
                         "redis://h:65536",
                         "redis://h:12x",
                         "redis://a:1,b:2",
                         "redis+cluster://a:1/2",
                         "redis://h/x",
                         "redis://h?nope=1",
                         "redis://h?timeout=1",
                         "redis://[::1",
                         "redis+cluster://a,,b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redis_url_t u;
        char err[256] = "";
        cr_assert_eq(redis_url_parse(bad[i], &u, err, sizeof(err)), SL_EINVAL,
                     "accepted '%s'", bad[i]);
        cr_assert(err[0], "no message for '%s'", bad[i]);
        redis_url_fini(&u);
    }
    store_t *s = NULL;
    char err[256];
    struct event_base *b = event_base_new();
    cr_assert_eq(store_open(&s, b, "redis://h:0", err, sizeof(err)), SL_EINVAL);
    cr_assert_null(s);
    event_base_free(b);
}

/* ---- encodings --------------------------------------------------------- */

Test(store, blob_round_trip)
{
    msg_t *m = msg_new("a/b", 3, "\0\1\2", 3, "\x26\0\1k\0\1v", 7, 2, true,
                       UINT64_MAX - 1);
    size_t n = blob_msg_size(m);
    uint8_t *buf = malloc(n);
    blob_msg_write(m, buf);
    msg_t *g;
    cr_assert_eq(blob_msg_read(buf, n, &g), SL_OK);
    cr_assert_str_eq(g->topic, "a/b");
    cr_assert_eq(g->payload_len, 3);
    cr_assert_eq(memcmp(g->payload, "\0\1\2", 3), 0);
    cr_assert_eq(g->props_len, 7);
    cr_assert_eq(g->qos, 2);
    cr_assert(g->retain);
    cr_assert_eq(g->expiry_at, UINT64_MAX - 1);
    msg_unref(&g);
    /* every truncation and one extra byte are refused */
    for (size_t len = 0; len < n; len++)
        cr_assert_eq(blob_msg_read(buf, len, &g), SL_EMALFORMED);
    uint8_t *big = malloc(n + 1);
    memcpy(big, buf, n);
    big[n] = 0;
    cr_assert_eq(blob_msg_read(big, n + 1, &g), SL_EMALFORMED);
    buf[1] = 3; /* QoS 3 */
    cr_assert_eq(blob_msg_read(buf, n, &g), SL_EMALFORMED);
    free(big);
    free(buf);
    msg_unref(&m);

    uint8_t s[BLOB_SUB_LEN], opts;
    uint32_t id;
    blob_sub_write(0x2d, 268435455, s);
    cr_assert_eq(blob_sub_read(s, sizeof(s), &opts, &id), SL_OK);
    cr_assert_eq(opts, 0x2d);
    cr_assert_eq(id, 268435455);
    cr_assert_eq(blob_sub_read(s, 4, &opts, &id), SL_EMALFORMED);
}
