/*
 * subscribe.c - SUBSCRIBE and UNSUBSCRIBE: every filter checked, then all
 * authorized at once, added to the index (and the store for a persistent
 * session), SUBACK, then the retained messages.
 */
#include "internal.h"
#include "session.h"
#include "delivery.h"
#include "connect.h"
#include "publish.h"
#include "subscribe.h"
#include "router.h"
#include "../net/net.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/pool.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------- */

static bool denied(const broker_t *b, const char *f, size_t flen)
{
    for (size_t i = 0; i < b->n_deny; i++) {
        size_t dl = strlen(b->deny[i]);
        if ((dl == flen && memcmp(b->deny[i], f, flen) == 0) ||
            (!memchr(f, '+', flen) && !memchr(f, '#', flen) &&
             topic_matches(b->deny[i], dl, f, flen)))
            return true;
    }
    return false;
}

static uint8_t refuse_code(const sess_t *s, int status)
{
    return mqtt_suback_code(status, s->version);
}

#define SUB_UNDECIDED 0xFF  /* a filter that passed the checks so far */

/* The checks of one filter before it is authorized: SUB_UNDECIDED, or the
 * SUBACK code refusing it. *why is set (and the connection must close) on
 * a protocol violation. */
static uint8_t subscribe_check(sess_t *s, const char *f, size_t flen,
                               const sub_t *sub, const char **why)
{
    const sl_conf_t *conf = s->b->conf;
    if (flen == 0 && s->version != MQTT_V5) {
        /* [MQTT-4.7.3-1]; 3.1.1 §4.8: the connection is closed. */
        *why = "empty topic filter";
        return refuse_code(s, SL_EPROTOCOL);
    }
    if (topic_filter_check(f, flen, (size_t)conf->max_topic_length) != SL_OK ||
        topic_levels(f, flen) > (size_t)conf->max_topic_levels)
        return refuse_code(s, SL_EFILTER);
    const char *g, *inner;
    size_t glen, ilen;
    int shared = topic_share_parse(f, flen, &g, &glen, &inner, &ilen);
    if (shared < 0)
        return refuse_code(s, SL_EFILTER);
    if (shared && sub->no_local) {
        /* MQTT 5 §3.8.3.1: a Protocol Error. */
        *why = "no local on a shared subscription";
        return refuse_code(s, SL_EPROTOCOL);
    }
    if (denied(s->b, f, flen))
        return refuse_code(s, SL_EAUTH);
    return SUB_UNDECIDED;
}

/* One authorized filter: add it; returns the SUBACK code. *send_retained
 * tells whether retained messages are to be sent for it. */
static uint8_t subscribe_apply(sess_t *s, const char *f, size_t flen,
                               sub_t *sub, bool *send_retained)
{
    broker_t *b = s->b;
    const sl_conf_t *conf = b->conf;
    *send_retained = false;
    hook_event(b->auth, "session.subscribed", s->cid, s->username, f, NULL, 0,
               sub->qos, false);
    subr_t *r = sess_subr(s);
    if (!r)
        return refuse_code(s, SL_ENOMEM);
    bool existing = map_get(r->subs, f, flen) != NULL;
    if (!existing && conf->max_subscriptions &&
        s->n_subs >= (uint32_t)conf->max_subscriptions)
        return refuse_code(s, SL_ELIMIT);
    if (sub->qos > conf->max_qos)
        sub->qos = (uint8_t)conf->max_qos;
    bool existed;
    if (subs_add(b, r, f, flen, sub, &existed) != SL_OK)
        return refuse_code(s, SL_ENOMEM);
    if (!existed)
        s->n_subs++;
    if (s->persistent)
        cluster_psub(b->cluster, s->cid, s->clen, f, flen, sub_opts(sub),
                     sub->sub_id, true);
    /* No retained messages for shared subscriptions (MQTT 5 §4.8.2). */
    *send_retained = strncmp(f, "$share/", 7) != 0 &&
                     (sub->retain_handling == 0 ||
                      (sub->retain_handling == 1 && !existed));
    return sub->qos;
}

/*
 * A SUBSCRIBE in progress. For a persistent session the SUBACK waits until
 * the store holds every new subscription (a filter the store refused gets
 * 0x80 and is dropped again); input is paused meanwhile so acknowledgements
 * stay in order.
 */
typedef struct subctx subctx_t;

/* One filter's authorization answer, for the HTTP ACL's callback. */
typedef struct subslot {
    subctx_t *c;
    uint32_t i;
    bool allowed;
} subslot_t;

struct subctx {
    sess_t *s;
    uint16_t pid;
    uint32_t n;
    uint32_t asking;             /* authorization answers still to come */
    uint32_t pending;            /* store writes still to come */
    uint8_t *codes;
    bool *retained;
    sub_t *subs;
    char **filters;
    subslot_t *slots;
};

typedef struct subwrite {
    subctx_t *ctx;
    uint32_t i;
} subwrite_t;

static void subctx_free(subctx_t *c)
{
    for (uint32_t i = 0; c->filters && i < c->n; i++)
        free(c->filters[i]);
    free(c->filters);
    free(c->codes);
    free(c->retained);
    free(c->subs);
    free(c->slots);
    free(c);
}

static void send_retained(subctx_t *c)
{
    sess_t *s = c->s;
    if (s->state != SESS_ONLINE)
        return;
    for (uint32_t i = 0; s->subr && i < c->n; i++)
        if (c->retained[i] && !mqtt_rc_failed(c->codes[i]))
            router_send_retained(s->b, s->subr, c->filters[i],
                                 strlen(c->filters[i]), &c->subs[i]);
}

/* The cluster barrier is back: every retained message whose publisher was
 * acknowledged before this SUBSCRIBE is in this node's index now. */
static void on_retained_barrier(void *arg, int status)
{
    subctx_t *c = arg;
    send_retained(c);
    sess_unref(&c->s);
    subctx_free(c);
}

static void subctx_finish(subctx_t *c)
{
    sess_t *s = c->s;
    bool retained = false;
    if (s->state == SESS_ONLINE) {
        SEND_ENCODED(s, mqtt_enc_suback(&o_, s->version, MQTT_SUBACK, c->pid,
                                        c->codes, c->n, NULL));
        for (uint32_t i = 0; i < c->n && !retained; i++)
            retained = c->retained[i] && !mqtt_rc_failed(c->codes[i]);
    }
    if (s->paused) {
        s->paused = false;
        if (s->state == SESS_ONLINE && s->conn)
            conn_resume(s->conn);
    }
    if (retained && cluster_barrier(s->b->cluster, on_retained_barrier, c))
        return;
    send_retained(c);
    sess_unref(&c->s);
    subctx_free(c);
}

static void on_sub_stored(void *arg, int status)
{
    subwrite_t *w = arg;
    subctx_t *c = w->ctx;
    if (status != SL_OK) {
        sess_t *s = c->s;
        s->b->stats.store_errors++;
        log_warning("store: subscription '%s' of client '%s' not saved: %s",
                    c->filters[w->i], sess_name(s), sl_strerror(status));
        c->codes[w->i] = refuse_code(s, status);
        if (s->subr &&
            subs_remove(s->b, s->subr, c->filters[w->i],
                        strlen(c->filters[w->i])) == SL_OK &&
            s->n_subs)
            s->n_subs--;
    }
    free(w);
    if (--c->pending == 0)
        subctx_finish(c);
}

static void persist_sub(sess_t *s, subctx_t *c, uint32_t i)
{
    const sub_t *sub = &c->subs[i];
    subwrite_t *w = malloc(sizeof(*w));
    if (!w) {
        c->codes[i] = refuse_code(s, SL_ENOMEM);
        return;
    }
    *w = (subwrite_t){c, i};
    store_sub_t ss = {.filter = c->filters[i], .flen = strlen(c->filters[i]),
                      .opts = (uint8_t)(sub->qos | sub->no_local << 2 |
                                        sub->retain_as_published << 3 |
                                        sub->retain_handling << 4),
                      .sub_id = sub->sub_id};
    c->pending++;
    store_sub_put(s->b->store, s->cid, s->clen, s->epoch, &ss, on_sub_stored,
                  w);
}

/* Every filter is decided: add the allowed ones, then SUBACK (after the
 * store writes of a persistent session). */
static void subscribe_decided(subctx_t *c)
{
    sess_t *s = c->s;
    c->pending = 1; /* released below */
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->codes[i] != SUB_UNDECIDED)
            continue;
        if (s->state != SESS_ONLINE || !c->slots[i].allowed) {
            c->codes[i] = refuse_code(s, SL_EAUTH);
            continue;
        }
        c->codes[i] = subscribe_apply(s, c->filters[i], strlen(c->filters[i]),
                                      &c->subs[i], &c->retained[i]);
        if (!mqtt_rc_failed(c->codes[i]) && s->persistent)
            persist_sub(s, c, i);
    }
    if (c->pending > 1)
        s->paused = true;
    if (--c->pending == 0)
        subctx_finish(c);
}

static void on_subscribe_authz(void *arg, bool allowed)
{
    subslot_t *slot = arg;
    subctx_t *c = slot->c;
    slot->allowed = allowed;
    if (--c->asking)
        return;
    sess_t *s = c->s;
    sess_ref(s);
    s->paused = false;
    subscribe_decided(c);
    sess_resume_input(s);
    sess_unref(&s);
}

static subctx_t *subctx_new(uint32_t n)
{
    subctx_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->n = n;
    c->codes = calloc(n, 1);
    c->retained = calloc(n, sizeof(bool));
    c->subs = calloc(n, sizeof(sub_t));
    c->filters = calloc(n, sizeof(char *));
    c->slots = calloc(n, sizeof(subslot_t));
    if (!c->codes || !c->retained || !c->subs || !c->filters || !c->slots) {
        subctx_free(c);
        return NULL;
    }
    return c;
}

/*
 * SUBSCRIBE: every filter is checked, then every filter that passed is
 * authorized at once. When some answers come later (an HTTP ACL), the
 * parsed packet waits here with input paused and goes on with all its
 * decisions; it is never decoded again.
 */
void handle_subscribe(sess_t *s, mqtt_packet_t *p)
{
    uint32_t n = p->u.sub.count;
    subctx_t *c = subctx_new(n);
    if (!c) {
        sess_close(s, SL_ENOMEM, "out of memory");
        return;
    }
    sess_ref(s);
    c->s = s;
    c->pid = p->u.sub.packet_id;
    uint32_t sub_id = mqtt_props_has(&p->props, MQTT_P_SUBSCRIPTION_ID)
                          ? p->props.subscription_id
                          : 0;
    size_t cur = 0;
    mqtt_sub_t ms;
    const char *why = NULL;
    for (uint32_t i = 0; i < n && mqtt_sub_next(p, s->version, &cur, &ms);
         i++) {
        c->subs[i] = (sub_t){.qos = ms.qos, .no_local = ms.no_local,
                             .retain_as_published = ms.retain_as_published,
                             .retain_handling = ms.retain_handling,
                             .sub_id = sub_id};
        c->filters[i] = strndup((const char *)ms.filter.p, ms.filter.len);
        c->codes[i] = c->filters[i] ? subscribe_check(s, c->filters[i],
                                                      ms.filter.len,
                                                      &c->subs[i], &why)
                                    : refuse_code(s, SL_ENOMEM);
        if (why)
            break;
    }
    if (why) {
        sess_close(s, SL_EPROTOCOL, why);
        sess_unref(&c->s);
        subctx_free(c);
        return;
    }
    c->asking = 1; /* released below */
    for (uint32_t i = 0; i < n; i++) {
        if (c->codes[i] != SUB_UNDECIDED)
            continue;
        const char *f = c->filters[i], *g, *inner;
        size_t flen = strlen(f), glen, ilen;
        if (topic_share_parse(f, flen, &g, &glen, &inner, &ilen) == 1) {
            f = inner;  /* the ACL sees the filter inside $share/<g>/ */
            flen = ilen;
        }
        c->slots[i] = (subslot_t){c, i, false};
        int r = sess_authz(s, AUTHZ_SUBSCRIBE, f, flen, c->subs[i].qos, false,
                           on_subscribe_authz, &c->slots[i]);
        if (r < 0)
            c->asking++;
        else
            c->slots[i].allowed = r == 1;
    }
    if (--c->asking == 0) {
        subscribe_decided(c);
        return;
    }
    s->paused = true;
}

void handle_unsubscribe(sess_t *s, mqtt_packet_t *p)
{
    uint32_t n = p->u.sub.count;
    uint8_t codes_stack[64];
    uint8_t *codes = n <= sizeof(codes_stack) ? codes_stack : malloc(n);
    if (!codes) {
        sess_close(s, SL_ENOMEM, "out of memory");
        return;
    }
    size_t cur = 0;
    mqtt_sub_t ms;
    for (uint32_t i = 0; i < n && mqtt_sub_next(p, s->version, &cur, &ms);
         i++) {
        const char *f = (const char *)ms.filter.p;
        if (s->subr &&
            subs_remove(s->b, s->subr, f, ms.filter.len) == SL_OK) {
            codes[i] = mqtt_ack_code(SL_OK, MQTT_UNSUBACK);
            if (s->n_subs)
                s->n_subs--;
            if (s->persistent) {
                store_sub_del(s->b->store, s->cid, s->clen, s->epoch, f,
                              ms.filter.len, NULL, NULL);
                cluster_psub(s->b->cluster, s->cid, s->clen, f,
                             ms.filter.len, 0, 0, false);
            }
        } else {
            codes[i] = mqtt_ack_code(SL_NOSUB, MQTT_UNSUBACK);
        }
    }
    SEND_ENCODED(s, mqtt_enc_suback(&o_, s->version, MQTT_UNSUBACK,
                                    p->u.sub.packet_id, codes, n, NULL));
    if (codes != codes_stack)
        free(codes);
}
