/*
 * delivery.c - messages from the broker to one session: the outbound queue
 * (`pending`), the inflight window, PUBLISH encoding per subscriber (topic
 * alias, expiry remaining, subscription ids; large payloads referenced,
 * not copied), resend after a resume, the client's PUBACK / PUBREC /
 * PUBCOMP, and the store queue bookkeeping (marks, acks, seen ids).
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

/* Payloads at least this large are referenced, not copied, into output. */
#define PAYLOAD_REF_MIN 1024
/* QoS 0 messages are dropped for a client whose output backlog is larger. */
#define OUTPUT_BACKLOG_MAX (8u * 1024 * 1024)

#define POOL_KEEP 4096
static pool_t dlv_pool = POOL_INIT(sizeof(dlv_t), POOL_KEEP);

void dlvq_free(dlvq_t *q)
{
    dlv_t *d = q->head;
    while (d) {
        dlv_t *n = d->next;
        msg_unref(&d->msg);
        group_unref(&d->o.group);
        pool_put(&dlv_pool, d);
        d = n;
    }
    q->head = q->tail = NULL;
    q->len = 0;
}

static void redeliver_shared(sess_t *s, dlvq_t *q)
{
    for (dlv_t *d = q->head; d; d = d->next)
        if (d->o.group && d->msg && d->state == STORE_SENT &&
            d->o.group->n)
            router_group_deliver(s->b, d->o.group, d->msg, s->subr);
}

void delivery_end(sess_t *s)
{
    if (!s->persistent) {
        redeliver_shared(s, &s->inflight);
        redeliver_shared(s, &s->pending);
    }
    dlvq_free(&s->inflight);
    dlvq_free(&s->pending);
}

/*
 * Called once when a session that sent CONNECT leaves CLAIMING/ONLINE:
 * will, subscriber index, store state.
 */
/* ---- outbound deliveries ----------------------------------------------- */

static void dlvq_push(dlvq_t *q, dlv_t *d)
{
    d->next = NULL;
    if (q->tail)
        q->tail->next = d;
    else
        q->head = d;
    q->tail = d;
    q->len++;
}

static dlv_t *dlvq_pop(dlvq_t *q)
{
    dlv_t *d = q->head;
    if (!d)
        return NULL;
    q->head = d->next;
    if (!q->head)
        q->tail = NULL;
    q->len--;
    return d;
}

/* Remove and return the entry with packet id pid. */
static dlv_t *dlvq_take(dlvq_t *q, uint16_t pid)
{
    dlv_t *prev = NULL;
    for (dlv_t *d = q->head; d; prev = d, d = d->next) {
        if (d->pid != pid)
            continue;
        if (prev)
            prev->next = d->next;
        else
            q->head = d->next;
        if (q->tail == d)
            q->tail = prev;
        q->len--;
        return d;
    }
    return NULL;
}

static dlv_t *dlvq_find(dlvq_t *q, uint16_t pid)
{
    for (dlv_t *d = q->head; d; d = d->next)
        if (d->pid == pid)
            return d;
    return NULL;
}

static void payload_cleanup(const void *data, size_t len, void *arg)
{
    msg_t *m = arg;
    msg_unref(&m);
}

/* The v5 properties of one outgoing PUBLISH. */
static void publish_props(sess_t *s, const dlv_t *d, mqtt_out_t *o,
                          uint16_t alias)
{
    const msg_t *m = d->msg;
    if (m->expiry_at) {
        uint64_t now = sl_now_ms();
        uint64_t left = m->expiry_at > now ? (m->expiry_at - now + 999) / 1000
                                           : 0;
        mqtt_prop_u32(o, MQTT_P_MESSAGE_EXPIRY, (uint32_t)left);
    }
    if (alias)
        mqtt_prop_u16(o, MQTT_P_TOPIC_ALIAS, alias);
    for (uint8_t i = 0; i < d->o.n_subids; i++)
        mqtt_prop_varint(o, MQTT_P_SUBSCRIPTION_ID, d->o.subids[i]);
    if (m->props_len)
        mqtt_put_bytes(o, m->props, m->props_len);
}

/* Outbound topic alias (v5): returns the alias and whether the topic must
 * still be sent (first use of the alias). */
static uint16_t alias_for(sess_t *s, const msg_t *m, bool *send_topic)
{
    *send_topic = true;
    if (!s->alias_max_out)
        return 0;
    if (!s->alias_out && !(s->alias_out = map_new()))
        return 0;
    void *v = map_get(s->alias_out, m->topic, m->topic_len);
    if (v) {
        *send_topic = false;
        return (uint16_t)(uintptr_t)v;
    }
    if (s->alias_next >= s->alias_max_out)
        return 0;
    uint16_t a = ++s->alias_next;
    if (map_put(s->alias_out, m->topic, m->topic_len, (void *)(uintptr_t)a,
                NULL) != SL_OK)
        return 0;
    return a;
}

/*
 * Write one PUBLISH. Returns false when the client's maximum packet size
 * forbids it (the message is then dropped as if delivered, MQTT 5 §3.1.2.25).
 */
static bool write_publish(sess_t *s, const dlv_t *d, bool dup)
{
    const msg_t *m = d->msg;
    uint8_t pbuf[512];
    mqtt_out_t props;
    mqtt_bytes_t pb = {NULL, 0};
    uint8_t *pheap = NULL;
    bool send_topic = true;
    uint16_t alias = 0;
    if (s->version == MQTT_V5) {
        alias = alias_for(s, m, &send_topic);
        mqtt_out_init(&props, pbuf, sizeof(pbuf));
        publish_props(s, d, &props, alias);
        if (props.len > props.cap) {
            pheap = malloc(props.len);
            if (!pheap)
                return false;
            mqtt_out_init(&props, pheap, props.len);
            publish_props(s, d, &props, alias);
        }
        pb.p = props.buf;
        pb.len = (uint32_t)props.len;
    }
    mqtt_publish_t p = {
        .dup = dup,
        .qos = d->o.qos,
        .retain = d->o.retain,
        .topic = {(const uint8_t *)m->topic, send_topic ? m->topic_len : 0},
        .packet_id = d->pid,
        .payload = {m->payload, m->payload_len},
    };
    uint8_t hbuf[512];
    mqtt_out_t h;
    mqtt_out_init(&h, hbuf, sizeof(hbuf));
    mqtt_enc_publish_header(&h, s->version, &p, m->payload_len,
                            pb.len ? &pb : NULL);
    bool ok = h.len + m->payload_len <= s->max_packet_out;
    if (!ok) {
        s->b->stats.dropped_too_large++;
        goto done;
    }
    if (h.len > h.cap) {
        uint8_t *hh = malloc(h.len);
        if (!hh) {
            ok = false;
            goto done;
        }
        mqtt_out_init(&h, hh, h.len);
        mqtt_enc_publish_header(&h, s->version, &p, m->payload_len,
                                pb.len ? &pb : NULL);
        sess_send_out(s, &h);
        free(hh);
    } else {
        sess_send_out(s, &h);
    }
    if (m->payload_len >= PAYLOAD_REF_MIN)
        conn_write_ref(s->conn, m->payload, m->payload_len, payload_cleanup,
                       msg_ref((msg_t *)m));
    else if (m->payload_len)
        conn_write(s->conn, m->payload, m->payload_len);
    s->b->stats.bytes_out += m->payload_len;
    s->b->stats.msgs_out++;
done:
    free(pheap);
    return ok;
}

static uint16_t next_pid(sess_t *s)
{
    /* Skip ids still in flight (only possible after a wrap-around). */
    for (;;) {
        uint16_t pid = s->next_pid++;
        if (s->next_pid == 0)
            s->next_pid = 1;
        if (!dlvq_find(&s->inflight, pid) &&
            (!s->resumed_pids || !dlvq_find(&s->pending, pid)))
            return pid;
    }
}

/* A queue entry's removal failed (the store was down past its timeout):
 * the entry stays in the store, counted as not sent, until the session's
 * next sweep finds and removes it (delivery_swept). */
static void on_acked(void *arg, int status)
{
    sess_t *s = arg;
    if (status != SL_OK && status != SL_ENOTFOUND && status != SL_ESTALE) {
        s->b->stats.store_errors++;
        s->ack_debt = true;
    }
    sess_unref(&s);
}

static void store_ack(sess_t *s, uint64_t qid)
{
    sess_ref(s);
    store_queue_ack(s->b->store, s->cid, s->clen, s->epoch, qid, on_acked, s);
}

static void dlv_done(sess_t *s, dlv_t *d)
{
    if (d->o.qid && s->persistent)
        store_ack(s, d->o.qid);
    msg_unref(&d->msg);
    group_unref(&d->o.group);
    pool_put(&dlv_pool, d);
}

typedef struct markctx {
    sess_t *s;
    uint64_t qid;
    uint16_t pid;
} markctx_t;

static pool_t mark_pool = POOL_INIT(sizeof(markctx_t), POOL_KEEP);

static void on_marked(void *arg, int status)
{
    markctx_t *mc = arg;
    sess_t *s = mc->s;
    dlv_t *d = s->state == SESS_ONLINE ? dlvq_find(&s->inflight, mc->pid)
                                        : NULL;
    if (d && d->o.qid == mc->qid && d->state == STORE_SENT) {
        if (status != SL_OK) {
            s->b->stats.store_errors++;
            log_warning("store: packet id of a message to client '%s' not "
                        "saved: %s", sess_name(s), sl_strerror(status));
        }
        if (!write_publish(s, d, false)) {
            dlvq_take(&s->inflight, d->pid);
            dlv_done(s, d);
            delivery_pump(s);
        }
    }
    sess_unref(&mc->s);
    pool_put(&mark_pool, mc);
}

/* Send a QoS 1/2 delivery now: assign a packet id (unless it has one from
 * an earlier connection: then it is a resend), record it in flight. */
static void send_dlv(sess_t *s, dlv_t *d)
{
    if (d->pid && d->state == STORE_PUBREC) {
        dlvq_push(&s->inflight, d);
        sess_send_ack(s, MQTT_PUBREL, d->pid, SL_OK);
        return;
    }
    bool resend = d->pid != 0;
    if (!resend)
        d->pid = next_pid(s);
    d->state = STORE_SENT;
    if (d->o.qid && s->persistent && !resend) {
        /* The packet id is stored before the PUBLISH leaves, so a node
         * that takes the session over resends it with DUP and this id. */
        markctx_t *mc = pool_get(&mark_pool);
        if (mc) {
            sess_ref(s);
            *mc = (markctx_t){s, d->o.qid, d->pid};
            dlvq_push(&s->inflight, d);
            store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->o.qid,
                             d->pid, STORE_SENT, on_marked, mc);
            return;
        }
    }
    if (!write_publish(s, d, resend)) {
        dlv_done(s, d);
        return;
    }
    dlvq_push(&s->inflight, d);
    if (d->o.qid && s->persistent)
        store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->o.qid,
                         d->pid, STORE_SENT, NULL, NULL);
}

static bool expired(const msg_t *m)
{
    return m->expiry_at && m->expiry_at <= sl_now_ms();
}

void delivery_pump(sess_t *s)
{
    while (s->state == SESS_ONLINE && s->inflight.len < s->window) {
        dlv_t *d = dlvq_pop(&s->pending);
        if (!d)
            break;
        if (d->msg && d->state != STORE_PUBREC && expired(d->msg)) {
            s->b->stats.dropped_expired++;
            dlv_done(s, d);
            continue;
        }
        send_dlv(s, d);
    }
}

/*
 * Queue entries seen by this connection. Several nodes append to one
 * session's queue, so their notices can arrive out of id order: every id at
 * or below `max_qid` (the floor) has been seen, and `qseen` holds the ids
 * seen above it. Returns true (and records it) for an id not seen yet.
 */
static bool qid_has(const sess_t *s, uint64_t qid)
{
    return s->qseen && map_get(s->qseen, &qid, sizeof(qid));
}

static void qid_compact(sess_t *s)
{
    uint64_t next = s->max_qid + 1;
    while (s->qseen && map_del(s->qseen, &next, sizeof(next)))
        s->max_qid = next++;
}

bool sess_qid_seen(const sess_t *s, uint64_t qid)
{
    return qid <= s->max_qid || qid_has(s, qid);
}

bool sess_qid_new(sess_t *s, uint64_t qid)
{
    if (sess_qid_seen(s, qid))
        return false;
    if (qid == s->max_qid + 1) {
        s->max_qid = qid;
    } else if ((s->qseen || (s->qseen = map_new())) &&
               map_put(s->qseen, &qid, sizeof(qid), (void *)1, NULL) !=
                   SL_OK) {
        return true; /* out of memory: deliver; a duplicate is allowed */
    }
    qid_compact(s);
    return true;
}

/* The sweep read the queue from the floor on: ids between the floor and the
 * first entry it found are gone from the store (acknowledged or dropped),
 * and with nothing found every id up to the highest seen is settled. */
void sess_qid_swept(sess_t *s, const store_entry_t *e, size_t n)
{
    uint64_t upto = 0;
    size_t cur = 0;
    const char *k;
    if (n && e[0].id > s->max_qid + 1)
        upto = e[0].id - 1;
    while (!n && s->qseen && map_next(s->qseen, &cur, &k, NULL, NULL)) {
        uint64_t id;
        memcpy(&id, k, sizeof(id));
        if (id > upto)
            upto = id;
    }
    if (upto <= s->max_qid)
        return;
    s->max_qid = upto;
    /* Forget the ids now at or below the floor; keep those above it. */
    map_t *keep = NULL;
    cur = 0;
    while (s->qseen && map_next(s->qseen, &cur, &k, NULL, NULL)) {
        uint64_t id;
        memcpy(&id, k, sizeof(id));
        if (id > upto && (keep || (keep = map_new())))
            map_put(keep, &id, sizeof(id), (void *)1, NULL);
    }
    map_free(s->qseen, NULL);
    s->qseen = keep;
    qid_compact(s);
}

static bool dlvq_has_qid(const dlvq_t *q, uint64_t qid)
{
    for (const dlv_t *d = q->head; d; d = d->next)
        if (d->o.qid == qid)
            return true;
    return false;
}

void delivery_swept(sess_t *s, const store_entry_t *e)
{
    if (!e->msg)
        return;
    if (sess_qid_seen(s, e->id)) {
        /* Delivered on this connection. Still in flight or waiting: its
         * removal comes with the client's ack. Neither: the client
         * acknowledged it and only the store's removal was lost. */
        if (!dlvq_has_qid(&s->inflight, e->id) &&
            !dlvq_has_qid(&s->pending, e->id))
            store_ack(s, e->id);
        return;
    }
    delivery_opts_t o = {.qid = e->id, .qos = e->qos & STORE_QOS_MASK,
                         .retain = (e->qos & STORE_QOS_RETAIN) != 0};
    sess_deliver(s, e->msg, &o);
}

void sess_deliver(sess_t *s, msg_t *m, const delivery_opts_t *o)
{
    uint32_t maxq = (uint32_t)s->b->conf->max_queued_messages;
    bool full = o->qos && s->inflight.len >= s->window && maxq &&
                s->pending.len >= maxq;
    /* A stored entry is not dropped here: the store bounds the queue, and
     * an entry left unseen is read again by the next sweep. */
    if (o->qid && (full || !sess_qid_new(s, o->qid)))
        return; /* no room yet, or already delivered on this connection */
    dlv_t tmp = {.msg = m, .o = *o};
    if (tmp.o.n_subids > DELIVERY_MAX_SUBIDS)
        tmp.o.n_subids = DELIVERY_MAX_SUBIDS;
    if (o->qos == 0) {
        if (!s->conn || conn_out_len(s->conn) > OUTPUT_BACKLOG_MAX) {
            s->b->stats.dropped_queue_full++;
            return;
        }
        write_publish(s, &tmp, false);
        return;
    }
    if (full) {
        if (s->b->conf->queue_drop == QUEUE_DROP_NEW || !s->pending.head) {
            s->b->stats.dropped_queue_full++;
            return;
        }
        dlv_t *old = dlvq_pop(&s->pending);
        s->b->stats.dropped_queue_full++;
        dlv_done(s, old);
    }
    dlv_t *d = pool_get(&dlv_pool);
    if (!d)
        return;
    *d = tmp;
    msg_ref(m);
    if (d->o.group)
        d->o.group->refs++;
    if (s->inflight.len < s->window && !s->pending.head)
        send_dlv(s, d);
    else
        dlvq_push(&s->pending, d);
}

/* ---- the session as the router's sink (sink.h) ------------------------- */

static bool sink_online(void *sink)
{
    const sess_t *s = sink;
    return s->state == SESS_ONLINE;
}

static bool sink_deliver(void *sink, msg_t *m, const delivery_opts_t *o)
{
    sess_t *s = sink;
    if (s->state != SESS_ONLINE)
        return false;
    sess_deliver(s, m, o);
    return true;
}

const sink_ops_t sess_sink_ops = {sink_online, sink_deliver};

/*
 * After a session resumed: resend what was in flight (DUP set; PUBREL where
 * PUBREC was seen), but never more than the window of the new connection
 * (its Receive Maximum, MQTT 5 §4.9). The rest waits at the head of
 * `pending`, keeping its packet id, and goes out with DUP when room opens.
 */
void delivery_resend(sess_t *s)
{
    dlvq_t keep = {0}, later = {0};
    dlv_t *d;
    while ((d = dlvq_pop(&s->inflight))) {
        if (keep.len < s->window)
            dlvq_push(&keep, d);
        else
            dlvq_push(&later, d);
    }
    s->inflight = keep;
    if (later.head) {
        later.tail->next = s->pending.head;
        if (!s->pending.head)
            s->pending.tail = later.tail;
        s->pending.head = later.head;
        s->pending.len += later.len;
    }
    s->resumed_pids = later.len > 0;
    for (d = s->inflight.head; d; d = d->next) {
        if (d->state == STORE_PUBREC)
            sess_send_ack(s, MQTT_PUBREL, d->pid, SL_OK);
        else
            write_publish(s, d, true);
    }
}

void delivery_load_queue(sess_t *s, const store_claim_t *c)
{
    uint16_t maxpid = 0;
    for (size_t i = 0; i < c->n_entries; i++) {
        const store_entry_t *e = &c->entries[i];
        dlv_t *d = pool_zget(&dlv_pool);
        if (!d)
            break;
        d->msg = msg_ref(e->msg);
        d->o.qid = e->id;
        d->o.qos = e->qos & STORE_QOS_MASK;
        d->o.retain = (e->qos & STORE_QOS_RETAIN) != 0;
        d->pid = e->pid;
        d->state = e->state;
        if (e->id > s->max_qid)
            s->max_qid = e->id;
        if (e->pid) {
            dlvq_push(&s->inflight, d);
            if (e->pid > maxpid)
                maxpid = e->pid;
        } else {
            dlvq_push(&s->pending, d);
        }
    }
    s->next_pid = (uint16_t)(maxpid + 1) ? (uint16_t)(maxpid + 1) : 1;
    for (size_t i = 0; i < c->n_inbound; i++) {
        if (s->n_in_qos2 == s->cap_in_qos2) {
            uint32_t nc = s->cap_in_qos2 ? s->cap_in_qos2 * 2 : 8;
            uint16_t *n = realloc(s->in_qos2, nc * sizeof(*n));
            if (!n)
                break;
            s->in_qos2 = n;
            s->cap_in_qos2 = nc;
        }
        s->in_qos2[s->n_in_qos2++] = c->inbound[i];
    }
}

/* A clean session's subscriber entry, made at its first SUBSCRIBE (a
 * client that only publishes never needs one). NULL when out of memory. */
/* ---- acknowledgements (client -> broker) ------------------------------- */

void handle_puback(sess_t *s, const mqtt_packet_t *p)
{
    dlv_t *d = dlvq_find(&s->inflight, p->u.ack.packet_id);
    if (!d || d->o.qos != 1)
        return; /* unknown id: nothing to do (MQTT 5 §4.3.2) */
    dlvq_take(&s->inflight, d->pid);
    dlv_done(s, d);
    delivery_pump(s);
}

void handle_pubrec(sess_t *s, const mqtt_packet_t *p)
{
    uint16_t pid = p->u.ack.packet_id;
    dlv_t *d = dlvq_find(&s->inflight, pid);
    if (!d || d->o.qos != 2) {
        if (s->version == MQTT_V5)
            sess_send_ack(s, MQTT_PUBREL, pid, SL_EPACKETID);
        return;
    }
    if (mqtt_rc_failed(p->u.ack.code)) {
        /* v5: the receiver refused the message; the flow ends here. */
        dlvq_take(&s->inflight, pid);
        dlv_done(s, d);
        delivery_pump(s);
        return;
    }
    ackctx_t *a = NULL;
    if (d->state != STORE_PUBREC) {
        d->state = STORE_PUBREC;
        if (d->o.qid && s->persistent && (a = sess_ack_after(s, MQTT_PUBREL, pid, SL_OK)))
            store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->o.qid,
                             pid, STORE_PUBREC, sess_on_stored_ack, a);
        msg_unref(&d->msg); /* the payload is no longer needed */
        d->msg = NULL;
    }
    /* Once PUBREL is sent the message must never be sent again (§4.3.3):
     * for a stored session, only after the store knows. */
    if (!a)
        sess_send_ack(s, MQTT_PUBREL, pid, SL_OK);
}

void handle_pubcomp(sess_t *s, const mqtt_packet_t *p)
{
    dlv_t *d = dlvq_find(&s->inflight, p->u.ack.packet_id);
    if (!d || d->o.qos != 2 || d->state != STORE_PUBREC)
        return;
    dlvq_take(&s->inflight, d->pid);
    dlv_done(s, d);
    delivery_pump(s);
}
