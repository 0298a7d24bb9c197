/*
 * session.c - one client connection and its MQTT session state machine.
 *
 *   NEW --CONNECT--> CLAIMING --store claim--> ONLINE --close--> CLOSING
 *                                                   \--transport gone--> CLOSED
 *
 * Input: sess_feed() frames and decodes every complete packet the
 * transport hands it and dispatches on its type (one handler per packet type
 * below). Packets that arrive while the session is CLAIMING stay buffered
 * until the CONNACK has been sent.
 *
 * Output: PUBLISH headers are encoded per delivery; payloads are shared
 * (large ones referenced, not copied, into the write buffer). QoS 1/2
 * deliveries beyond the inflight window wait in `pending`.
 *
 * Lifetime: the session is reference counted; store callbacks and the
 * transport hold references, and a session is freed only at zero, never
 * from inside a callback still using it.
 */
#include "internal.h"

#include "starling/err.h"
#include "starling/pool.h"
#include "starling/log.h"

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

static void handle_packet(sess_t *s, mqtt_packet_t *p);
static void sess_end(sess_t *s);
static void pump(sess_t *s);

/* ---- lifecycle --------------------------------------------------------- */

sess_t *sess_new(broker_t *b, const char *peer)
{
    sess_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->b = b;
    s->refs = 1; /* the transport's */
    s->state = SESS_NEW;
    s->next_pid = 1;
    s->max_packet_out = MQTT_MAX_REMAINING + 5;
    s->peer = strdup(peer);
    if (!s->peer) {
        free(s);
        return NULL;
    }
    return s;
}

void sess_ref(sess_t *s)
{
    s->refs++;
}

/* Objects made once per message or per acknowledgement (pool.h). */
#define POOL_KEEP 4096
static pool_t dlv_pool = POOL_INIT(sizeof(dlv_t), POOL_KEEP);

static void dlvq_free(dlvq_t *q)
{
    dlv_t *d = q->head;
    while (d) {
        dlv_t *n = d->next;
        msg_unref(&d->msg);
        group_unref(&d->group);
        pool_put(&dlv_pool, d);
        d = n;
    }
    q->head = q->tail = NULL;
    q->len = 0;
}

void sess_unref(sess_t **ps)
{
    sess_t *s = *ps;
    *ps = NULL;
    if (!s || --s->refs)
        return;
    dlvq_free(&s->inflight);
    dlvq_free(&s->pending);
    msg_unref(&s->will);
    subr_unref(&s->subr);
    map_free(s->alias_out, NULL);
    map_free(s->qseen, NULL);
    if (s->alias_in) {
        for (int i = 0; i <= s->b->conf->max_topic_alias; i++)
            free(s->alias_in[i]);
        free(s->alias_in);
    }
    free(s->in_qos2);
    auth_identity_free(s->authid);
    free(s->authz_topic);
    free(s->username);
    free(s->cid);
    free(s->peer);
    free(s);
}

const char *sess_name(const sess_t *s)
{
    return s->cid ? s->cid : "";
}

/* ---- output ------------------------------------------------------------ */

static void send_out(sess_t *s, const mqtt_out_t *o)
{
    if (!s->conn)
        return;
    conn_write(s->conn, o->buf, o->len);
    s->b->stats.bytes_out += o->len;
}

/* Encode with enc into a stack buffer, or a heap one when it is larger. */
#define SEND_ENCODED(s, CALL)                                                  \
    do {                                                                       \
        uint8_t stackbuf_[256];                                                \
        mqtt_out_t o_;                                                         \
        mqtt_out_init(&o_, stackbuf_, sizeof(stackbuf_));                      \
        CALL;                                                                  \
        if (o_.len > o_.cap) {                                                 \
            uint8_t *heap_ = malloc(o_.len);                                   \
            if (!heap_)                                                        \
                break;                                                         \
            mqtt_out_init(&o_, heap_, o_.len);                                 \
            CALL;                                                              \
            send_out((s), &o_);                                                \
            free(heap_);                                                       \
        } else {                                                               \
            send_out((s), &o_);                                                \
        }                                                                      \
    } while (0)

static void send_ack(sess_t *s, mqtt_type_t type, uint16_t pid, uint8_t code)
{
    SEND_ENCODED(s, mqtt_enc_ack(&o_, s->version, type, pid, code, NULL));
}

/*
 * An acknowledgement that may only leave once the store holds the state it
 * announces (PUBREL after PUBREC is stored, PUBCOMP after the inbound id is
 * released): the store write's completion sends it.
 */
typedef struct ackctx {
    sess_t *s;
    mqtt_type_t type;
    uint16_t pid;
    uint8_t code;
} ackctx_t;

static pool_t ack_pool = POOL_INIT(sizeof(ackctx_t), POOL_KEEP);

static void on_stored_ack(void *arg, int status)
{
    ackctx_t *a = arg;
    sess_t *s = a->s;
    if (status != SL_OK && status != SL_ENOTFOUND) {
        /* No ack: the client repeats its packet after reconnecting. */
        s->b->stats.store_errors++;
        log_warning("store: state of client '%s' not saved (%s), %s %u held "
                    "back",
                    sess_name(s), sl_strerror(status), mqtt_type_name(a->type),
                    a->pid);
    } else if (s->state == SESS_ONLINE) {
        send_ack(s, a->type, a->pid, a->code);
    }
    sess_unref(&a->s);
    pool_put(&ack_pool, a);
}

/* A context for on_stored_ack, or NULL (then ack at once: out of memory
 * is not a reason to stall the flow). */
static ackctx_t *ack_after(sess_t *s, mqtt_type_t type, uint16_t pid,
                           uint8_t code)
{
    ackctx_t *a = pool_get(&ack_pool);
    if (!a)
        return NULL;
    sess_ref(s);
    *a = (ackctx_t){s, type, pid, code};
    return a;
}

static void send_reason_string(mqtt_out_t *props, const sess_t *s,
                               const char *why)
{
    if (why && s->version == MQTT_V5 && s->request_problem_info)
        mqtt_prop_str(props, MQTT_P_REASON_STRING, why, strlen(why));
}

static void send_disconnect(sess_t *s, uint8_t reason, const char *why)
{
    uint8_t pbuf[256];
    mqtt_out_t props;
    mqtt_out_init(&props, pbuf, sizeof(pbuf));
    send_reason_string(&props, s, why);
    mqtt_bytes_t pb = {pbuf, props.len <= props.cap ? (uint32_t)props.len : 0};
    SEND_ENCODED(s, mqtt_enc_reason(&o_, MQTT_V5, MQTT_DISCONNECT, reason,
                                    pb.len ? &pb : NULL));
}

static void send_connack_refusal(sess_t *s, int version, uint8_t code)
{
    SEND_ENCODED(s, mqtt_enc_connack(&o_, version, false, code, NULL));
}

/* ---- closing ----------------------------------------------------------- */

void sess_close(sess_t *s, uint8_t reason, const char *why)
{
    if (s->state >= SESS_CLOSING)
        return;
    if (why)
        log_info("client '%s' %s: %s, disconnecting", sess_name(s), s->peer,
                 why);
    if (s->version == MQTT_V5 && reason >= 0x80 && s->state == SESS_ONLINE)
        send_disconnect(s, reason, why);
    sess_end(s);
    s->state = SESS_CLOSING;
    if (!s->conn)
        return;
    conn_close_after_flush(s);
}

/* ---- the end of a session on this connection -------------------------- */

/* Messages that came through a shared subscription and were not
 * acknowledged go to another member of the group (MQTT 5 §4.8.2). */
static void redeliver_shared(sess_t *s, dlvq_t *q)
{
    for (dlv_t *d = q->head; d; d = d->next)
        if (d->group && d->msg && d->state == STORE_SENT && d->group->n)
            router_group_deliver(s->b, d->group, d->msg, s->subr);
}

static void end_outbound(sess_t *s)
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
static void sess_end(sess_t *s)
{
    broker_t *b = s->b;
    if (s->state != SESS_CLAIMING && s->state != SESS_ONLINE)
        return;
    bool was_online = s->state == SESS_ONLINE;
    if (s->cid && map_get(b->clients, s->cid, s->clen) == s)
        map_del(b->clients, s->cid, s->clen);
    b->stats.disconnects++;
    if (!was_online)
        return; /* the claim callback finishes the store side */

    if (s->will && !s->disconnect_normal)
        broker_publish_will(b, s);
    msg_unref(&s->will);

    subr_t *r = s->subr;
    cluster_offline(b->cluster, s->cid, s->clen, s->epoch != 0,
                    sess_claim_epoch(s));
    if (r) {
        subs_set_online(b, r, NULL);
        if (!r->persistent) {
            subs_clear(b, r);
            r->gone = true;
        }
    }
    if (s->persistent) {
        store_session_offline(b->store, s->cid, s->clen, s->epoch,
                              sl_now_ms(), NULL, NULL);
    } else if (s->epoch) {
        /* A stored session resumed for this connection only (v5 clean
         * start 0, expiry 0) ends now. */
        store_session_del(b->store, s->cid, s->clen, s->epoch, NULL, NULL);
        cluster_ended(b->cluster, s->cid, s->clen);
    }
    end_outbound(s);
    hook_event(b->auth, "client.disconnected", s->cid, s->username, NULL, NULL,
               0, 0, false);
    log_info("client '%s' %s disconnected", sess_name(s), s->peer);
}

void sess_on_transport_closed(sess_t *s, const char *why)
{
    if (s->state == SESS_CLOSED)
        return;
    if (why && s->state < SESS_CLOSING)
        log_info("client '%s' %s: %s", sess_name(s), s->peer, why);
    sess_end(s);
    s->state = SESS_CLOSED;
    if (s->conn) {
        conn_free(s->conn);
        s->conn = NULL;
    }
    broker_conn_gone(s->b, s);
}

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
    for (uint8_t i = 0; i < d->n_subids; i++)
        mqtt_prop_varint(o, MQTT_P_SUBSCRIPTION_ID, d->subids[i]);
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
        .qos = d->qos,
        .retain = d->retain,
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
        send_out(s, &h);
        free(hh);
    } else {
        send_out(s, &h);
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

static void dlv_done(sess_t *s, dlv_t *d)
{
    if (d->qid && s->persistent)
        store_queue_ack(s->b->store, s->cid, s->clen, s->epoch, d->qid, NULL,
                        NULL);
    msg_unref(&d->msg);
    group_unref(&d->group);
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
    if (d && d->qid == mc->qid && d->state == STORE_SENT) {
        if (status != SL_OK) {
            s->b->stats.store_errors++;
            log_warning("store: packet id of a message to client '%s' not "
                        "saved: %s", sess_name(s), sl_strerror(status));
        }
        if (!write_publish(s, d, false)) {
            dlvq_take(&s->inflight, d->pid);
            dlv_done(s, d);
            pump(s);
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
        send_ack(s, MQTT_PUBREL, d->pid, 0);
        return;
    }
    bool resend = d->pid != 0;
    if (!resend)
        d->pid = next_pid(s);
    d->state = STORE_SENT;
    if (d->qid && s->persistent && !resend) {
        /* The packet id is stored before the PUBLISH leaves, so a node
         * that takes the session over resends it with DUP and this id. */
        markctx_t *mc = pool_get(&mark_pool);
        if (mc) {
            sess_ref(s);
            *mc = (markctx_t){s, d->qid, d->pid};
            dlvq_push(&s->inflight, d);
            store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->qid,
                             d->pid, STORE_SENT, on_marked, mc);
            return;
        }
    }
    if (!write_publish(s, d, resend)) {
        dlv_done(s, d);
        return;
    }
    dlvq_push(&s->inflight, d);
    if (d->qid && s->persistent)
        store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->qid,
                         d->pid, STORE_SENT, NULL, NULL);
}

static bool expired(const msg_t *m)
{
    return m->expiry_at && m->expiry_at <= sl_now_ms();
}

static void pump(sess_t *s)
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

bool sess_qid_new(sess_t *s, uint64_t qid)
{
    if (qid <= s->max_qid || qid_has(s, qid))
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

void sess_deliver(sess_t *s, msg_t *m, uint8_t qos, bool retain,
                  const uint32_t *subids, uint8_t n_subids, uint64_t qid,
                  group_t *group)
{
    uint32_t maxq = (uint32_t)s->b->conf->max_queued_messages;
    bool full = qos && s->inflight.len >= s->window && maxq &&
                s->pending.len >= maxq;
    /* A stored entry is not dropped here: the store bounds the queue, and
     * an entry left unseen is read again by the next sweep. */
    if (qid && (full || !sess_qid_new(s, qid)))
        return; /* no room yet, or already delivered on this connection */
    dlv_t tmp = {.msg = m, .qos = qos, .retain = retain,
                 .n_subids = n_subids > 4 ? 4 : n_subids, .qid = qid};
    if (n_subids)
        memcpy(tmp.subids, subids, tmp.n_subids * sizeof(uint32_t));
    if (qos == 0) {
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
    if (group) {
        d->group = group;
        group->refs++;
    }
    if (s->inflight.len < s->window && !s->pending.head)
        send_dlv(s, d);
    else
        dlvq_push(&s->pending, d);
}

/*
 * After a session resumed: resend what was in flight (DUP set; PUBREL where
 * PUBREC was seen), but never more than the window of the new connection
 * (its Receive Maximum, MQTT 5 §4.9). The rest waits at the head of
 * `pending`, keeping its packet id, and goes out with DUP when room opens.
 */
static void resend_inflight(sess_t *s)
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
            send_ack(s, MQTT_PUBREL, d->pid, 0);
        else
            write_publish(s, d, true);
    }
}

/* ---- CONNECT ----------------------------------------------------------- */

typedef struct claim_ctx {
    sess_t *s;
} claim_ctx_t;

static void send_connack(sess_t *s, bool present, const char *assigned)
{
    broker_t *b = s->b;
    const sl_conf_t *c = b->conf;
    uint8_t pbuf[512];
    mqtt_out_t props;
    mqtt_out_init(&props, pbuf, sizeof(pbuf));
    if (s->version == MQTT_V5) {
        if (s->expiry_capped)
            mqtt_prop_u32(&props, MQTT_P_SESSION_EXPIRY, s->expiry);
        if (c->receive_maximum < 65535)
            mqtt_prop_u16(&props, MQTT_P_RECEIVE_MAXIMUM,
                          (uint16_t)c->receive_maximum);
        if (c->max_qos < 2)
            mqtt_prop_u8(&props, MQTT_P_MAXIMUM_QOS, (uint8_t)c->max_qos);
        if (!c->retain_available)
            mqtt_prop_u8(&props, MQTT_P_RETAIN_AVAILABLE, 0);
        mqtt_prop_u32(&props, MQTT_P_MAXIMUM_PACKET_SIZE, c->max_packet_size);
        if (assigned)
            mqtt_prop_str(&props, MQTT_P_ASSIGNED_CLIENT_ID, assigned,
                          strlen(assigned));
        mqtt_prop_u16(&props, MQTT_P_TOPIC_ALIAS_MAXIMUM,
                      (uint16_t)c->max_topic_alias);
        mqtt_prop_u8(&props, MQTT_P_SUB_ID_AVAILABLE, 1);
        if (s->keepalive_overridden)
            mqtt_prop_u16(&props, MQTT_P_SERVER_KEEP_ALIVE, s->keepalive);
    }
    mqtt_bytes_t pb = {pbuf, (uint32_t)props.len};
    SEND_ENCODED(s, mqtt_enc_connack(&o_, s->version, present, 0,
                                     pb.len ? &pb : NULL));
}

static void set_keepalive_timeout(sess_t *s)
{
    /* MQTT §3.1.2.10: one and a half times the keep alive period. */
    if (s->conn)
        conn_set_timeout(s->conn, (uint64_t)s->keepalive * 1500u);
}

static subr_t *subr_for_session(sess_t *s, const store_claim_t *c)
{
    broker_t *b = s->b;
    subr_t *r = map_get(b->psessions, s->cid, s->clen);
    if (r && (!s->persistent || !c || !c->present)) {
        /* The stored session is discarded or no longer persistent. */
        cluster_ended(b->cluster, s->cid, s->clen);
        map_del(b->psessions, s->cid, s->clen);
        subs_clear(b, r);
        r->gone = true;
        subr_unref(&r);
    }
    if (!r) {
        r = subr_new(s->cid, s->clen, s->persistent);
        if (!r)
            return NULL;
        if (s->persistent &&
            map_put(b->psessions, s->cid, s->clen, r, NULL) != SL_OK) {
            subr_unref(&r);
            return NULL;
        }
        if (s->persistent)
            subr_ref(r); /* one for the index, one for the session */
    } else {
        subr_ref(r);
    }
    /* Subscriptions the store has and the index lacks (after a restart). */
    for (size_t i = 0; c && c->present && i < c->n_subs; i++) {
        const store_sub_t *ss = &c->subs[i];
        if (map_get(r->subs, ss->filter, ss->flen))
            continue;
        sub_t sub = {.qos = ss->opts & 3, .no_local = (ss->opts >> 2) & 1,
                     .retain_as_published = (ss->opts >> 3) & 1,
                     .retain_handling = (ss->opts >> 4) & 3,
                     .sub_id = ss->sub_id};
        bool existed;
        subs_add(b, r, ss->filter, ss->flen, &sub, &existed);
    }
    s->n_subs = (uint32_t)map_count(r->subs);
    return r;
}

static void load_queue(sess_t *s, const store_claim_t *c)
{
    uint16_t maxpid = 0;
    for (size_t i = 0; i < c->n_entries; i++) {
        const store_entry_t *e = &c->entries[i];
        dlv_t *d = pool_zget(&dlv_pool);
        if (!d)
            break;
        d->msg = msg_ref(e->msg);
        d->qid = e->id;
        d->qos = e->qos & STORE_QOS_MASK;
        d->retain = (e->qos & STORE_QOS_RETAIN) != 0;
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
static subr_t *sess_subr(sess_t *s)
{
    if (!s->subr && (s->subr = subr_new(s->cid, s->clen, false)))
        subs_set_online(s->b, s->subr, s);
    return s->subr;
}

static void go_online(sess_t *s, const store_claim_t *c, const char *assigned)
{
    broker_t *b = s->b;
    bool present = c && c->present;
    bool lazy = !s->persistent && !present &&
                !map_get(b->psessions, s->cid, s->clen);
    if (!lazy) {
        s->subr = subr_for_session(s, c);
        if (!s->subr) {
            sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
            return;
        }
        s->subr->gone = false;
        subs_set_online(b, s->subr, s);
    }
    if (present)
        load_queue(s, c);
    send_connack(s, present, assigned);
    s->state = SESS_ONLINE;
    cluster_claimed(b->cluster, s->cid, s->clen, s->epoch != 0,
                    sess_claim_epoch(s), s->persistent ? s->expiry : 0,
                    s->will_delay, s->will);
    set_keepalive_timeout(s);
    b->stats.connects++;
    hook_event(b->auth, "client.connected", s->cid, s->username, NULL, NULL, 0,
               0, false);
    log_info("client '%s' %s connected (v%s, %s, keepalive %u%s)",
             sess_name(s), s->peer,
             s->version == MQTT_V5 ? "5" : s->version == MQTT_V311 ? "3.1.1"
                                                                 : "3.1",
             s->clean ? "clean" : "resume", s->keepalive,
             present ? ", session present" : "");
    resend_inflight(s);
    pump(s);
}

static void on_claimed(void *arg, int status, const store_claim_t *c)
{
    sess_t *s = arg;
    broker_t *b = s->b;
    if (status == SL_OK)
        s->epoch = c->epoch;
    if (s->state != SESS_CLAIMING) {
        /* The connection went away while the store worked. */
        if (status == SL_OK) {
            if (s->persistent)
                store_session_offline(b->store, s->cid, s->clen, c->epoch,
                                      sl_now_ms(), NULL, NULL);
            else
                store_session_del(b->store, s->cid, s->clen, c->epoch, NULL,
                                  NULL);
        }
        sess_unref(&s);
        return;
    }
    if (status != SL_OK) {
        b->stats.store_errors++;
        log_warning("store: claiming the session of client '%s' failed: %s",
                    sess_name(s), sl_strerror(status));
        send_connack_refusal(s, s->version,
                             s->version == MQTT_V5
                                 ? MQTT_RC_SERVER_UNAVAILABLE
                                 : MQTT_V3_SERVER_UNAVAILABLE);
        if (map_get(b->clients, s->cid, s->clen) == s)
            map_del(b->clients, s->cid, s->clen);
        s->state = SESS_NEW; /* nothing else to end */
        sess_close(s, 0, "session store unavailable");
        sess_unref(&s);
        return;
    }
    go_online(s, c, s->assigned_id ? s->cid : NULL);
    if (s->state == SESS_ONLINE && s->conn)
        conn_resume(s->conn); /* packets that arrived while claiming */
    sess_unref(&s);
}

static char *gen_client_id(broker_t *b)
{
    char *id = malloc(40);
    if (id)
        snprintf(id, 40, "auto-%08x%08" PRIx64, (unsigned)rand(),
                 ++b->id_seq);
    return id;
}

/* Refuse a CONNECT: CONNACK with the version's code, then close. */
static void refuse(sess_t *s, uint8_t v3code, uint8_t v5code, const char *why)
{
    send_connack_refusal(s, s->version,
                         s->version == MQTT_V5 ? v5code : v3code);
    sess_close(s, 0, why);
}

static msg_t *make_will(sess_t *s, const mqtt_connect_t *c);

static int check_will(sess_t *s, const mqtt_connect_t *c)
{
    const sl_conf_t *conf = s->b->conf;
    if (!c->will)
        return SL_OK;
    if (topic_name_check((const char *)c->will_topic.p, c->will_topic.len,
                         (size_t)conf->max_topic_length) != SL_OK) {
        refuse(s, MQTT_V3_NOT_AUTHORIZED, MQTT_RC_TOPIC_NAME_INVALID,
               "invalid will topic");
        return SL_ETOPIC;
    }
    if (c->will_qos > conf->max_qos) {
        refuse(s, MQTT_V3_NOT_AUTHORIZED, MQTT_RC_QOS_NOT_SUPPORTED,
               "will QoS not supported");
        return SL_EPROTOCOL;
    }
    if (c->will_retain && !conf->retain_available) {
        refuse(s, MQTT_V3_NOT_AUTHORIZED, MQTT_RC_RETAIN_NOT_SUPPORTED,
               "will retain not supported");
        return SL_EPROTOCOL;
    }
    return SL_OK;
}

static void connect_props(sess_t *s, const mqtt_packet_t *p)
{
    const mqtt_props_t *pr = &p->props;
    const sl_conf_t *conf = s->b->conf;
    s->window = (uint32_t)conf->max_inflight_messages;
    if (s->version != MQTT_V5)
        return;
    if (mqtt_props_has(pr, MQTT_P_SESSION_EXPIRY)) {
        s->expiry = pr->session_expiry;
        if (s->expiry > conf->max_session_expiry) {
            s->expiry = conf->max_session_expiry;
            s->expiry_capped = true;
        }
    }
    if (mqtt_props_has(pr, MQTT_P_RECEIVE_MAXIMUM) &&
        pr->receive_maximum < s->window)
        s->window = pr->receive_maximum;
    if (mqtt_props_has(pr, MQTT_P_MAXIMUM_PACKET_SIZE))
        s->max_packet_out = pr->maximum_packet_size;
    if (mqtt_props_has(pr, MQTT_P_TOPIC_ALIAS_MAXIMUM))
        s->alias_max_out = pr->topic_alias_maximum;
    s->request_problem_info = !mqtt_props_has(pr, MQTT_P_REQUEST_PROBLEM_INFO) ||
                              pr->request_problem_info;
}

/* What auth.h needs to know about this client ("host:port" split). */
static void sess_auth_client(const sess_t *s, auth_client_t *c, char *host,
                             size_t hlen)
{
    snprintf(host, hlen, "%s", s->peer);
    char *colon = strrchr(host, ':');
    int port = 0;
    if (colon) {
        *colon = '\0';
        port = atoi(colon + 1);
    }
    *c = (auth_client_t){.clientid = s->cid, .username = s->username,
                         .peer_host = host, .peer_port = port,
                         .proto_version = s->version, .listener = "tcp"};
}

static void connect_continue(sess_t *s);

static void on_authenticated(void *arg, auth_result_t r, auth_identity_t *id)
{
    sess_t *s = arg;
    s->paused = false;
    if (s->state != SESS_NEW || !s->conn) {
        auth_identity_free(id);
    } else if (r != AUTH_ALLOW) {
        /* As Mosquitto and EMQX: "not authorized" (v3 5, v5 0x87),
         * whether or not a password was sent. */
        refuse(s, MQTT_V3_NOT_AUTHORIZED, MQTT_RC_NOT_AUTHORIZED,
               "not authorized");
    } else {
        s->authid = id;
        connect_continue(s);
        if (s->state == SESS_ONLINE && s->conn)
            conn_resume(s->conn);
    }
    sess_unref(&s);
}

static void on_authz(void *arg, bool allowed)
{
    sess_t *s = arg;
    s->authz_result = allowed;
    s->paused = false;
    s->redo = false;
    if (s->state == SESS_ONLINE && s->conn)
        conn_resume(s->conn);
    sess_unref(&s);
}

/* 1 allowed, 0 denied, -1 asked: the packet is decoded again later. */
static int sess_authz(sess_t *s, authz_action_t act, const char *t,
                      size_t tlen, int qos, bool retain)
{
    if (s->authz_topic && s->authz_act == (int)act && s->authz_tlen == tlen &&
        memcmp(s->authz_topic, t, tlen) == 0 && s->authz_result >= 0) {
        int r = s->authz_result;
        free(s->authz_topic);
        s->authz_topic = NULL;
        return r;
    }
    char host[64];
    auth_client_t c;
    sess_auth_client(s, &c, host, sizeof(host));
    sess_ref(s);
    int r = auth_check(s->b->auth, s->authid, &c, act, t, tlen, qos, retain,
                       on_authz, s);
    if (r >= 0) {
        s->refs--;
        return r;
    }
    free(s->authz_topic);
    s->authz_topic = strndup(t, tlen);
    s->authz_tlen = tlen;
    s->authz_act = (int)act;
    s->authz_result = -1;
    s->paused = true;
    s->redo = true;
    return -1;
}

static void handle_connect(sess_t *s, mqtt_packet_t *p)
{
    broker_t *b = s->b;
    const sl_conf_t *conf = b->conf;
    const mqtt_connect_t *c = &p->u.connect;

    s->version = c->version;
    s->clean = c->clean;
    s->connected_ms = sl_now_ms();
    s->keepalive = c->keepalive;
    connect_props(s, p);
    if (s->version != MQTT_V5)
        s->expiry = c->clean ? 0
                    : conf->persistent_client_expiration
                        ? conf->persistent_client_expiration
                        : UINT32_MAX;
    s->persistent = s->expiry > 0;

    if (s->version == MQTT_V5 &&
        mqtt_props_has(&p->props, MQTT_P_AUTH_METHOD)) {
        refuse(s, 0, MQTT_RC_BAD_AUTH_METHOD,
               "enhanced authentication method not supported");
        return;
    }
    if (conf->max_keepalive && (s->keepalive > conf->max_keepalive ||
                                (s->keepalive == 0 &&
                                 s->version == MQTT_V5 &&
                                 conf->max_keepalive < 65535))) {
        if (s->version != MQTT_V5) {
            refuse(s, MQTT_V3_ID_REJECTED, 0, "keepalive above max_keepalive");
            return;
        }
        s->keepalive = (uint16_t)conf->max_keepalive;
        s->keepalive_overridden = true;
    }
    if (c->client_id.len == 0) {
        if (!conf->allow_zero_length_clientid ||
            (s->version != MQTT_V5 && !c->clean) ||
            s->version == MQTT_V31) {
            refuse(s, MQTT_V3_ID_REJECTED, MQTT_RC_CLIENTID_NOT_VALID,
                   "zero-length client id refused");
            return;
        }
        s->cid = gen_client_id(b);
        if (s->version == MQTT_V5)
            s->assigned_id = true;
    } else {
        s->cid = malloc(c->client_id.len + 1);
        if (s->cid) {
            memcpy(s->cid, c->client_id.p, c->client_id.len);
            s->cid[c->client_id.len] = '\0';
        }
    }
    if (!s->cid) {
        refuse(s, MQTT_V3_SERVER_UNAVAILABLE, MQTT_RC_SERVER_UNAVAILABLE,
               "out of memory");
        return;
    }
    s->clen = strlen(s->cid);
    if (s->clen != c->client_id.len && c->client_id.len) {
        refuse(s, MQTT_V3_ID_REJECTED, MQTT_RC_CLIENTID_NOT_VALID,
               "client id contains NUL");
        return;
    }
    if (check_will(s, c) != SL_OK)
        return;
    if (c->will && !(s->will = make_will(s, c))) {
        refuse(s, MQTT_V3_SERVER_UNAVAILABLE, MQTT_RC_SERVER_UNAVAILABLE,
               "out of memory");
        return;
    }
    if (s->will && s->version == MQTT_V5)
        s->will_delay = c->will_props.will_delay;
    if (c->has_username) {
        s->username = strndup((const char *)c->username.p, c->username.len);
    }
    if (!auth_enabled(b->auth) && conf->allow_anonymous != ANON_FALSE) {
        connect_continue(s);
        return;
    }
    /* Other packets wait in the input buffer until the decision. */
    char host[64];
    auth_client_t ac;
    sess_auth_client(s, &ac, host, sizeof(host));
    ac.password = c->password.p;
    ac.password_len = c->password.len;
    ac.has_password = c->has_password;
    s->paused = true;
    sess_ref(s);
    auth_connect(b->auth, &ac, on_authenticated, s);
}

static void connect_continue(sess_t *s)
{
    broker_t *b = s->b;
    char *assigned = s->assigned_id ? s->cid : NULL;

    /* Takeover: the existing connection of this client id is closed. */
    sess_t *old = map_get(b->clients, s->cid, s->clen);
    if (old) {
        old->taken_over = true;
        sess_close(old, MQTT_RC_SESSION_TAKEN_OVER, "session taken over");
        map_del(b->clients, s->cid, s->clen);
    }
    if (map_put(b->clients, s->cid, s->clen, s, NULL) != SL_OK) {
        refuse(s, MQTT_V3_SERVER_UNAVAILABLE, MQTT_RC_SERVER_UNAVAILABLE,
               "out of memory");
        return;
    }
    broker_cancel_delayed_will(b, s->cid, s->clen);
    s->state = SESS_CLAIMING;

    bool stored = map_get(b->psessions, s->cid, s->clen) != NULL;
    if (!s->persistent && s->clean && !stored) {
        go_online(s, NULL, assigned);
        return;
    }
    store_session_t rec = {.version = s->version, .expiry = s->expiry,
                           .will = s->will, .will_delay = s->will_delay};
    sess_ref(s);
    store_claim(b->store, s->cid, s->clen, s->clean, &rec, on_claimed, s);
}

/* ---- PUBLISH (client -> broker) ---------------------------------------- */

/* The v5 properties that travel with the message, re-encoded. */
static void forward_props(const mqtt_props_t *pr, mqtt_out_t *o)
{
    if (mqtt_props_has(pr, MQTT_P_PAYLOAD_FORMAT))
        mqtt_prop_u8(o, MQTT_P_PAYLOAD_FORMAT, pr->payload_format);
    if (mqtt_props_has(pr, MQTT_P_CONTENT_TYPE))
        mqtt_prop_str(o, MQTT_P_CONTENT_TYPE, pr->content_type.p,
                      pr->content_type.len);
    if (mqtt_props_has(pr, MQTT_P_RESPONSE_TOPIC))
        mqtt_prop_str(o, MQTT_P_RESPONSE_TOPIC, pr->response_topic.p,
                      pr->response_topic.len);
    if (mqtt_props_has(pr, MQTT_P_CORRELATION_DATA))
        mqtt_prop_str(o, MQTT_P_CORRELATION_DATA, pr->correlation_data.p,
                      pr->correlation_data.len);
    size_t cur = 0;
    mqtt_bytes_t k, v;
    while (mqtt_props_user_next(pr, &cur, &k, &v))
        mqtt_prop_pair(o, MQTT_P_USER_PROPERTY, k.p, k.len, v.p, v.len);
}

static msg_t *msg_from(const mqtt_props_t *pr, int version, const void *topic,
                       size_t tlen, mqtt_bytes_t payload, uint8_t qos,
                       bool retain)
{
    uint8_t buf[512];
    uint8_t *heap = NULL;
    mqtt_out_t o;
    mqtt_out_init(&o, buf, sizeof(buf));
    uint64_t expiry_at = 0;
    if (version == MQTT_V5) {
        forward_props(pr, &o);
        if (o.len > o.cap) {
            heap = malloc(o.len);
            if (!heap)
                return NULL;
            mqtt_out_init(&o, heap, o.len);
            forward_props(pr, &o);
        }
        if (mqtt_props_has(pr, MQTT_P_MESSAGE_EXPIRY))
            expiry_at = sl_now_ms() + (uint64_t)pr->message_expiry * 1000u;
    }
    msg_t *m = msg_new(topic, tlen, payload.p, payload.len, o.buf, o.len, qos,
                       retain, expiry_at);
    free(heap);
    return m;
}

static msg_t *make_will(sess_t *s, const mqtt_connect_t *c)
{
    return msg_from(&c->will_props, s->version, c->will_topic.p,
                    c->will_topic.len, c->will_payload, c->will_qos,
                    c->will_retain);
}

typedef struct pubctx {
    sess_t *s;
    uint16_t pid;
    uint8_t qos;
    uint8_t pending;             /* routing + the inbound id's store write */
    int status;
    bool matched;
} pubctx_t;

static pool_t pub_pool = POOL_INIT(sizeof(pubctx_t), POOL_KEEP);

static bool in_qos2_has(const sess_t *s, uint16_t pid)
{
    for (uint32_t i = 0; i < s->n_in_qos2; i++)
        if (s->in_qos2[i] == pid)
            return true;
    return false;
}

static int in_qos2_add(sess_t *s, uint16_t pid, store_done_fn cb, void *arg)
{
    if (s->n_in_qos2 == s->cap_in_qos2) {
        uint32_t nc = s->cap_in_qos2 ? s->cap_in_qos2 * 2 : 8;
        uint16_t *n = realloc(s->in_qos2, nc * sizeof(*n));
        if (!n)
            return SL_ENOMEM;
        s->in_qos2 = n;
        s->cap_in_qos2 = nc;
    }
    s->in_qos2[s->n_in_qos2++] = pid;
    if (s->persistent)
        store_inbound_put(s->b->store, s->cid, s->clen, s->epoch, pid, cb,
                          arg);
    return SL_OK;
}

/* Forget an inbound QoS 2 id; cb (may be NULL) runs when the store did.
 * Returns false (and does not call cb) when the id was unknown. */
static bool in_qos2_del(sess_t *s, uint16_t pid, store_done_fn cb, void *arg)
{
    for (uint32_t i = 0; i < s->n_in_qos2; i++) {
        if (s->in_qos2[i] != pid)
            continue;
        s->in_qos2[i] = s->in_qos2[--s->n_in_qos2];
        if (s->persistent)
            store_inbound_del(s->b->store, s->cid, s->clen, s->epoch, pid, cb,
                              arg);
        else if (cb)
            cb(arg, SL_OK);
        return true;
    }
    return false;
}

static void pub_step(pubctx_t *pc);

static void on_routed(void *arg, int status, bool matched)
{
    pubctx_t *pc = arg;
    if (status != SL_OK && pc->status == SL_OK)
        pc->status = status;
    pc->matched = matched;
    pub_step(pc);
}

static void on_inbound_stored(void *arg, int status)
{
    pubctx_t *pc = arg;
    if (status != SL_OK && pc->status == SL_OK)
        pc->status = status;
    pub_step(pc);
}

/* The publisher's PUBACK/PUBREC, once routing and (QoS 2 of a stored
 * session) the inbound packet id are safe in the store. */
static void pub_step(pubctx_t *pc)
{
    if (--pc->pending)
        return;
    int status = pc->status;
    bool matched = pc->matched;
    sess_t *s = pc->s;
    if (pc->qos == 1 && s->in_flight_in)
        s->in_flight_in--;
    if (s->state == SESS_ONLINE) {
        if (status == SL_OK) {
            uint8_t code = matched || s->version != MQTT_V5
                               ? MQTT_RC_SUCCESS
                               : MQTT_RC_NO_MATCHING_SUBSCRIBERS;
            send_ack(s, pc->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pc->pid,
                     code);
        } else {
            /* Not safe: no positive ack, so the client publishes again. */
            log_warning("publish from client '%s' not stored: %s",
                        sess_name(s), sl_strerror(status));
            if (pc->qos == 2)
                in_qos2_del(s, pc->pid, NULL, NULL);
            if (s->version == MQTT_V5)
                send_ack(s, pc->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pc->pid,
                         MQTT_RC_UNSPECIFIED);
        }
    }
    sess_unref(&pc->s);
    pool_put(&pub_pool, pc);
}

/* Resolve the topic of an inbound PUBLISH, applying a v5 topic alias. */
static int publish_topic(sess_t *s, const mqtt_packet_t *p, const char **topic,
                         size_t *tlen)
{
    const mqtt_publish_t *pub = &p->u.publish;
    *topic = (const char *)pub->topic.p;
    *tlen = pub->topic.len;
    if (s->version != MQTT_V5 ||
        !mqtt_props_has(&p->props, MQTT_P_TOPIC_ALIAS))
        return pub->topic.len ? SL_OK : SL_EPROTOCOL;
    uint16_t a = p->props.topic_alias;
    int max = s->b->conf->max_topic_alias;
    if (a == 0 || a > max)
        return SL_EINVAL;
    if (!s->alias_in && !(s->alias_in = calloc((size_t)max + 1, sizeof(char *))))
        return SL_ENOMEM;
    if (pub->topic.len == 0) {
        if (!s->alias_in[a])
            return SL_EPROTOCOL;
        *topic = s->alias_in[a];
        *tlen = strlen(s->alias_in[a]);
        return SL_OK;
    }
    free(s->alias_in[a]);
    s->alias_in[a] = strndup(*topic, *tlen);
    return s->alias_in[a] ? SL_OK : SL_ENOMEM;
}

static void handle_publish(sess_t *s, mqtt_packet_t *p)
{
    broker_t *b = s->b;
    const sl_conf_t *conf = b->conf;
    const mqtt_publish_t *pub = &p->u.publish;
    const char *topic;
    size_t tlen;

    if (p->props.n_subscription_ids) {
        /* MQTT 5 §3.3.4: only the server sends subscription identifiers. */
        sess_close(s, MQTT_RC_PROTOCOL_ERROR,
                   "subscription identifier in PUBLISH from a client");
        return;
    }
    int rc = publish_topic(s, p, &topic, &tlen);
    if (rc == SL_EINVAL) {
        sess_close(s, MQTT_RC_TOPIC_ALIAS_INVALID, "invalid topic alias");
        return;
    }
    if (rc != SL_OK) {
        sess_close(s, MQTT_RC_PROTOCOL_ERROR, "unknown topic alias");
        return;
    }
    if (topic_name_check(topic, tlen, (size_t)conf->max_topic_length) !=
            SL_OK ||
        topic_levels(topic, tlen) > (size_t)conf->max_topic_levels) {
        sess_close(s, MQTT_RC_TOPIC_NAME_INVALID, "invalid topic in PUBLISH");
        return;
    }
    if (pub->qos > conf->max_qos) {
        sess_close(s, MQTT_RC_QOS_NOT_SUPPORTED, "QoS not supported");
        return;
    }
    if (pub->retain && !conf->retain_available) {
        sess_close(s, MQTT_RC_RETAIN_NOT_SUPPORTED, "retain not supported");
        return;
    }
    b->stats.msgs_in++;
    if (pub->qos == 2 && in_qos2_has(s, pub->packet_id)) {
        send_ack(s, MQTT_PUBREC, pub->packet_id, 0); /* duplicate */
        return;
    }
    if (pub->qos > 0 && s->version == MQTT_V5 &&
        s->in_flight_in + s->n_in_qos2 >= (uint32_t)conf->receive_maximum) {
        /* QoS 1 counts until PUBACK, QoS 2 until PUBREL (§4.9). */
        sess_close(s, MQTT_RC_RECEIVE_MAX_EXCEEDED, "receive maximum exceeded");
        return;
    }
    if (tlen >= 4 && memcmp(topic, "$SYS", 4) == 0) {
        /* Clients do not publish into the broker's own tree: drop. */
        if (pub->qos)
            send_ack(s, pub->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
                     pub->packet_id, 0);
        return;
    }
    int ok = sess_authz(s, AUTHZ_PUBLISH, topic, tlen, pub->qos, pub->retain);
    if (ok < 0)
        return;
    if (!ok) {
        if (s->version != MQTT_V5 &&
            conf->acl_deny_action_v3 == ACL_DENY_DISCONNECT) {
            sess_close(s, 0, "PUBLISH not authorized");
            return;
        }
        if (pub->qos)
            send_ack(s, pub->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
                     pub->packet_id,
                     s->version == MQTT_V5 ? MQTT_RC_NOT_AUTHORIZED : 0);
        return;
    }
    if (hook_wanted(b->auth, "message.publish")) {
        char *t = strndup(topic, tlen);
        hook_event(b->auth, "message.publish", s->cid, s->username, t,
                   pub->payload.p, pub->payload.len, pub->qos, pub->retain);
        free(t);
    }
    msg_t *m = msg_from(&p->props, s->version, topic, tlen, pub->payload,
                        pub->qos, pub->retain);
    if (!m) {
        sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
        return;
    }
    if (pub->qos == 0) {
        router_publish(b, s, m, NULL, NULL);
        msg_unref(&m);
        return;
    }
    pubctx_t *pc = pool_get(&pub_pool);
    if (!pc) {
        msg_unref(&m);
        sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
        return;
    }
    sess_ref(s);
    *pc = (pubctx_t){.s = s, .pid = pub->packet_id, .qos = pub->qos,
                     .pending = 1};
    if (pub->qos == 2) {
        if (s->persistent)
            pc->pending++;
        if (in_qos2_add(s, pub->packet_id, on_inbound_stored, pc) != SL_OK) {
            sess_unref(&pc->s);
            pool_put(&pub_pool, pc);
            msg_unref(&m);
            sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
            return;
        }
    }
    if (pub->qos == 1)
        s->in_flight_in++;
    router_publish(b, s, m, on_routed, pc);
    msg_unref(&m);
}

/* ---- acknowledgements (client -> broker) ------------------------------- */

static void handle_puback(sess_t *s, const mqtt_packet_t *p)
{
    dlv_t *d = dlvq_find(&s->inflight, p->u.ack.packet_id);
    if (!d || d->qos != 1)
        return; /* unknown id: nothing to do (MQTT 5 §4.3.2) */
    dlvq_take(&s->inflight, d->pid);
    dlv_done(s, d);
    pump(s);
}

static void handle_pubrec(sess_t *s, const mqtt_packet_t *p)
{
    uint16_t pid = p->u.ack.packet_id;
    dlv_t *d = dlvq_find(&s->inflight, pid);
    if (!d || d->qos != 2) {
        if (s->version == MQTT_V5)
            send_ack(s, MQTT_PUBREL, pid, MQTT_RC_PACKET_ID_NOT_FOUND);
        return;
    }
    if (p->u.ack.code >= 0x80) {
        /* v5: the receiver refused the message; the flow ends here. */
        dlvq_take(&s->inflight, pid);
        dlv_done(s, d);
        pump(s);
        return;
    }
    ackctx_t *a = NULL;
    if (d->state != STORE_PUBREC) {
        d->state = STORE_PUBREC;
        if (d->qid && s->persistent && (a = ack_after(s, MQTT_PUBREL, pid, 0)))
            store_queue_mark(s->b->store, s->cid, s->clen, s->epoch, d->qid,
                             pid, STORE_PUBREC, on_stored_ack, a);
        msg_unref(&d->msg); /* the payload is no longer needed */
        d->msg = NULL;
    }
    /* Once PUBREL is sent the message must never be sent again (§4.3.3):
     * for a stored session, only after the store knows. */
    if (!a)
        send_ack(s, MQTT_PUBREL, pid, 0);
}

static void handle_pubcomp(sess_t *s, const mqtt_packet_t *p)
{
    dlv_t *d = dlvq_find(&s->inflight, p->u.ack.packet_id);
    if (!d || d->qos != 2 || d->state != STORE_PUBREC)
        return;
    dlvq_take(&s->inflight, d->pid);
    dlv_done(s, d);
    pump(s);
}

static void handle_pubrel(sess_t *s, const mqtt_packet_t *p)
{
    uint16_t pid = p->u.ack.packet_id;
    /* PUBCOMP only once the id is released in the store: released late,
     * the next QoS 2 message with this id would be taken for a repeat. */
    ackctx_t *a = s->persistent ? ack_after(s, MQTT_PUBCOMP, pid, 0) : NULL;
    bool known = in_qos2_del(s, pid, a ? on_stored_ack : NULL, a);
    if (!known && s->version == MQTT_V5) {
        if (a) {
            a->code = MQTT_RC_PACKET_ID_NOT_FOUND;
            on_stored_ack(a, SL_OK);
        } else {
            send_ack(s, MQTT_PUBCOMP, pid, MQTT_RC_PACKET_ID_NOT_FOUND);
        }
        return;
    }
    if (!known && a) {
        on_stored_ack(a, SL_OK);
        return;
    }
    if (!a)
        send_ack(s, MQTT_PUBCOMP, pid, 0);
}

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

static uint8_t refuse_code(const sess_t *s, uint8_t v5code)
{
    return s->version == MQTT_V5 ? v5code : 0x80;
}

/* One filter of a SUBSCRIBE: returns the SUBACK code. *send_retained tells
 * whether retained messages are to be sent for it. */
static uint8_t subscribe_one(sess_t *s, const mqtt_sub_t *ms, uint32_t sub_id,
                             bool *send_retained, sub_t *out,
                             bool *protocol_error)
{
    broker_t *b = s->b;
    const sl_conf_t *conf = b->conf;
    const char *f = (const char *)ms->filter.p;
    size_t flen = ms->filter.len;
    *send_retained = false;
    if (topic_filter_check(f, flen, (size_t)conf->max_topic_length) != SL_OK ||
        topic_levels(f, flen) > (size_t)conf->max_topic_levels)
        return refuse_code(s, MQTT_RC_TOPIC_FILTER_INVALID);
    const char *g, *inner;
    size_t glen, ilen;
    int shared = topic_share_parse(f, flen, &g, &glen, &inner, &ilen);
    if (shared < 0)
        return refuse_code(s, MQTT_RC_TOPIC_FILTER_INVALID);
    if (shared && ms->no_local) {
        /* MQTT 5 §3.8.3.1: a Protocol Error. */
        *protocol_error = true;
        return MQTT_RC_PROTOCOL_ERROR;
    }
    if (denied(b, f, flen))
        return refuse_code(s, MQTT_RC_NOT_AUTHORIZED);
    {
        const char *af = shared ? inner : f;
        size_t al = shared ? ilen : flen;
        if (sess_authz(s, AUTHZ_SUBSCRIBE, af, al, ms->qos, false) != 1)
            return refuse_code(s, MQTT_RC_NOT_AUTHORIZED);
    }
    hook_event(b->auth, "session.subscribed", s->cid, s->username, f ? f : "",
               NULL, 0, ms->qos, false);
    subr_t *r = sess_subr(s);
    if (!r)
        return refuse_code(s, MQTT_RC_UNSPECIFIED);
    bool existing = map_get(r->subs, f, flen) != NULL;
    if (!existing && conf->max_subscriptions &&
        s->n_subs >= (uint32_t)conf->max_subscriptions)
        return refuse_code(s, MQTT_RC_QUOTA_EXCEEDED);
    sub_t sub = {.qos = ms->qos > conf->max_qos ? (uint8_t)conf->max_qos
                                                : ms->qos,
                 .no_local = ms->no_local,
                 .retain_as_published = ms->retain_as_published,
                 .retain_handling = ms->retain_handling,
                 .sub_id = sub_id};
    bool existed;
    if (subs_add(b, r, f, flen, &sub, &existed) != SL_OK)
        return refuse_code(s, MQTT_RC_UNSPECIFIED);
    if (!existed)
        s->n_subs++;
    if (s->persistent)
        cluster_psub(b->cluster, s->cid, s->clen, f, flen, sub_opts(&sub),
                     sub.sub_id, true);
    /* No retained messages for shared subscriptions (MQTT 5 §4.8.2). */
    *send_retained = !shared && (sub.retain_handling == 0 ||
                                 (sub.retain_handling == 1 && !existed));
    *out = sub;
    return sub.qos;
}

/*
 * A SUBSCRIBE in progress. For a persistent session the SUBACK waits until
 * the store holds every new subscription (a filter the store refused gets
 * 0x80 and is dropped again); input is paused meanwhile so acknowledgements
 * stay in order.
 */
typedef struct subctx {
    sess_t *s;
    uint16_t pid;
    uint32_t n;
    uint32_t pending;
    uint8_t *codes;
    bool *retained;
    sub_t *subs;
    char **filters;
} subctx_t;

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
    free(c);
}

static void send_retained(subctx_t *c)
{
    sess_t *s = c->s;
    if (s->state != SESS_ONLINE)
        return;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->retained[i] && c->codes[i] < 0x80)
            router_send_retained(s->b, s, c->filters[i],
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
            retained = c->retained[i] && c->codes[i] < 0x80;
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
        c->codes[w->i] = 0x80;
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
        c->codes[i] = 0x80;
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

static void handle_subscribe(sess_t *s, mqtt_packet_t *p)
{
    uint32_t n = p->u.sub.count;
    {
        size_t cur0 = 0;
        mqtt_sub_t ms0;
        for (uint32_t i = 0; i < n && mqtt_sub_next(p, s->version, &cur0, &ms0);
             i++) {
            const char *f = (const char *)ms0.filter.p, *g, *inner;
            size_t flen = ms0.filter.len, glen, ilen;
            if (topic_share_parse(f, flen, &g, &glen, &inner, &ilen) == 1) {
                f = inner;
                flen = ilen;
            }
            if (topic_filter_check(f, flen, 0) != SL_OK)
                continue;
            if (sess_authz(s, AUTHZ_SUBSCRIBE, f, flen, ms0.qos, false) < 0)
                return;
        }
    }
    subctx_t *c = calloc(1, sizeof(*c));
    if (c) {
        c->n = n;
        c->codes = calloc(n, 1);
        c->retained = calloc(n, sizeof(bool));
        c->subs = calloc(n, sizeof(sub_t));
        c->filters = calloc(n, sizeof(char *));
    }
    if (!c || !c->codes || !c->retained || !c->subs || !c->filters) {
        if (c)
            subctx_free(c);
        sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
        return;
    }
    sess_ref(s);
    c->s = s;
    c->pid = p->u.sub.packet_id;
    c->pending = 1; /* released below */
    uint32_t sub_id = mqtt_props_has(&p->props, MQTT_P_SUBSCRIPTION_ID)
                          ? p->props.subscription_id
                          : 0;
    size_t cur = 0;
    mqtt_sub_t ms;
    bool protocol_error = false;
    for (uint32_t i = 0; i < n && mqtt_sub_next(p, s->version, &cur, &ms);
         i++) {
        c->filters[i] = strndup((const char *)ms.filter.p, ms.filter.len);
        if (!c->filters[i]) {
            c->codes[i] = 0x80;
            continue;
        }
        c->codes[i] = subscribe_one(s, &ms, sub_id, &c->retained[i],
                                    &c->subs[i], &protocol_error);
        if (c->codes[i] < 0x80 && s->persistent)
            persist_sub(s, c, i);
    }
    if (protocol_error)
        sess_close(s, MQTT_RC_PROTOCOL_ERROR,
                   "no local on a shared subscription");
    if (c->pending > 1)
        s->paused = true;
    if (--c->pending == 0)
        subctx_finish(c);
}

static void handle_unsubscribe(sess_t *s, mqtt_packet_t *p)
{
    uint32_t n = p->u.sub.count;
    uint8_t codes_stack[64];
    uint8_t *codes = n <= sizeof(codes_stack) ? codes_stack : malloc(n);
    if (!codes) {
        sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
        return;
    }
    size_t cur = 0;
    mqtt_sub_t ms;
    for (uint32_t i = 0; i < n && mqtt_sub_next(p, s->version, &cur, &ms);
         i++) {
        const char *f = (const char *)ms.filter.p;
        if (s->subr &&
            subs_remove(s->b, s->subr, f, ms.filter.len) == SL_OK) {
            codes[i] = MQTT_RC_SUCCESS;
            if (s->n_subs)
                s->n_subs--;
            if (s->persistent) {
                store_sub_del(s->b->store, s->cid, s->clen, s->epoch, f,
                              ms.filter.len, NULL, NULL);
                cluster_psub(s->b->cluster, s->cid, s->clen, f,
                             ms.filter.len, 0, 0, false);
            }
        } else {
            codes[i] = MQTT_RC_NO_SUBSCRIPTION_EXISTED;
        }
    }
    SEND_ENCODED(s, mqtt_enc_suback(&o_, s->version, MQTT_UNSUBACK,
                                    p->u.sub.packet_id, codes, n, NULL));
    if (codes != codes_stack)
        free(codes);
}

/* ---- DISCONNECT, PINGREQ, AUTH ----------------------------------------- */

static void handle_disconnect(sess_t *s, const mqtt_packet_t *p)
{
    if (s->version == MQTT_V5) {
        if (mqtt_props_has(&p->props, MQTT_P_SESSION_EXPIRY)) {
            uint32_t e = p->props.session_expiry;
            if (s->expiry == 0 && e > 0) {
                sess_close(s, MQTT_RC_PROTOCOL_ERROR,
                           "session expiry changed from 0 in DISCONNECT");
                return;
            }
            if (e > s->b->conf->max_session_expiry)
                e = s->b->conf->max_session_expiry;
            if (e != s->expiry && s->persistent) {
                s->expiry = e;
                if (e == 0) {
                    s->persistent = false;
                    if (s->subr)
                        s->subr->persistent = false;
                    map_t *ps = s->b->psessions;
                    subr_t *r = map_del(ps, s->cid, s->clen);
                    subr_unref(&r);
                } else {
                    store_session_t rec = {.version = s->version,
                                           .expiry = e, .will = s->will,
                                           .will_delay = s->will_delay};
                    store_session_put(s->b->store, s->cid, s->clen, s->epoch,
                                      &rec, NULL, NULL);
                }
            }
        }
        s->disconnect_normal = p->u.reason.code != MQTT_RC_DISCONNECT_WITH_WILL;
    } else {
        s->disconnect_normal = true;
    }
    sess_close(s, 0, NULL);
}

/* ---- input ------------------------------------------------------------- */

static void handle_packet(sess_t *s, mqtt_packet_t *p)
{
    if (s->state == SESS_NEW) {
        if (p->type != MQTT_CONNECT) {
            sess_close(s, 0, "first packet is not CONNECT");
            return;
        }
        handle_connect(s, p);
        return;
    }
    switch (p->type) {
    case MQTT_CONNECT:
        sess_close(s, MQTT_RC_PROTOCOL_ERROR, "second CONNECT");
        break;
    case MQTT_PUBLISH:
        handle_publish(s, p);
        break;
    case MQTT_PUBACK:
        handle_puback(s, p);
        break;
    case MQTT_PUBREC:
        handle_pubrec(s, p);
        break;
    case MQTT_PUBREL:
        handle_pubrel(s, p);
        break;
    case MQTT_PUBCOMP:
        handle_pubcomp(s, p);
        break;
    case MQTT_SUBSCRIBE:
        handle_subscribe(s, p);
        break;
    case MQTT_UNSUBSCRIBE:
        handle_unsubscribe(s, p);
        break;
    case MQTT_PINGREQ:
        SEND_ENCODED(s, mqtt_enc_pingresp(&o_));
        break;
    case MQTT_DISCONNECT:
        handle_disconnect(s, p);
        break;
    case MQTT_AUTH:
        sess_close(s, MQTT_RC_PROTOCOL_ERROR, "AUTH without an auth method");
        break;
    default:
        sess_close(s, MQTT_RC_PROTOCOL_ERROR, "unexpected packet type");
        break;
    }
}

static void decode_error(sess_t *s, int rc, const mqtt_packet_t *p)
{
    char why[96];
    s->b->stats.protocol_errors++;
    if (rc == SL_EVERSION && s->state == SESS_NEW) {
        /* MQTT 3.1.1 §3.1.2.2: CONNACK 0x01 then close. */
        int v = p->u.connect.version == MQTT_V5 ? MQTT_V5 : MQTT_V311;
        send_connack_refusal(s, v, v == MQTT_V5 ? MQTT_RC_UNSUPPORTED_VERSION
                                                : MQTT_V3_BAD_VERSION);
        snprintf(why, sizeof(why),
                 "unsupported protocol name or level (level %u)",
                 p->u.connect.version);
        sess_close(s, 0, why);
        return;
    }
    snprintf(why, sizeof(why), "%s in %s", sl_strerror(rc),
             mqtt_type_name(p->type));
    if (s->state == SESS_NEW && s->version == 0 && p->type == MQTT_CONNECT &&
        p->u.connect.version == MQTT_V5) {
        s->version = MQTT_V5;
        send_connack_refusal(s, MQTT_V5, mqtt_err_reason(rc));
    }
    sess_close(s, mqtt_err_reason(rc), why);
}

size_t sess_feed(sess_t *s, const uint8_t *buf, size_t len)
{
    broker_t *b = s->b;
    size_t off = 0;
    sess_ref(s);
    while ((s->state == SESS_NEW || s->state == SESS_ONLINE) && !s->paused &&
           off < len) {
        const uint8_t *p = buf + off;
        size_t avail = len - off;
        if (s->state == SESS_NEW && p[0] != 0x10) {
            /* Not MQTT at all (or not CONNECT): no need to wait for the
             * rest of a "packet" that will never make sense. */
            b->stats.protocol_errors++;
            sess_close(s, 0, "first packet is not CONNECT");
            break;
        }
        uint32_t total = 0;
        mqtt_type_t type = 0;
        int rc = mqtt_frame(p, avail, b->conf->max_packet_size, &total, &type);
        if (rc == SL_AGAIN)
            break;
        if (rc < 0) {
            mqtt_packet_t none = {.type = (mqtt_type_t)(p[0] >> 4)};
            decode_error(s, rc, &none);
            break;
        }
        mqtt_packet_t pkt;
        rc = mqtt_decode(p, total, s->version, &pkt);
        b->stats.bytes_in += total;
        off += total;
        if (rc < 0) {
            pkt.type = type;
            decode_error(s, rc, &pkt);
            break;
        }
        handle_packet(s, &pkt);
        if (s->redo) {
            off -= total; /* decoded again once the answer is in */
            break;
        }
    }
    sess_unref(&s);
    return off;
}
