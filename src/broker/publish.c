/*
 * publish.c - PUBLISH from a client: topic and alias, checks, the
 * authorization decision (held while asked), routing, and the publisher's
 * PUBACK / PUBREC once every store write it needed is done; PUBREL and the
 * inbound QoS 2 packet ids.
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

/* A PUBLISH held while its authorization is asked (input paused). */
typedef struct pubheld {
    msg_t *m;
    uint16_t pid;
} pubheld_t;

void publish_held_free(sess_t *s)
{
    if (s->held_pub) {
        msg_unref(&s->held_pub->m);
        free(s->held_pub);
        s->held_pub = NULL;
    }
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

msg_t *publish_msg_from(const mqtt_props_t *pr, int version, const void *topic,
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
            sess_send_ack(s, pc->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pc->pid,
                          matched ? SL_OK : SL_NOMATCH);
        } else {
            /* Not safe: no positive ack, so the client publishes again. */
            log_warning("publish from client '%s' not stored: %s",
                        sess_name(s), sl_strerror(status));
            if (pc->qos == 2)
                in_qos2_del(s, pc->pid, NULL, NULL);
            if (s->version == MQTT_V5)
                sess_send_ack(s, pc->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
                              pc->pid, status);
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

static void publish_decided(sess_t *s, msg_t *m, uint16_t pid, bool allowed);
static void on_publish_authz(void *arg, bool allowed);
static void publish_route(sess_t *s, msg_t *m, uint16_t pid);

void handle_publish(sess_t *s, mqtt_packet_t *p)
{
    broker_t *b = s->b;
    const sl_conf_t *conf = b->conf;
    const mqtt_publish_t *pub = &p->u.publish;
    const char *topic;
    size_t tlen;

    if (p->props.n_subscription_ids) {
        /* MQTT 5 §3.3.4: only the server sends subscription identifiers. */
        sess_close(s, SL_EPROTOCOL,
                   "subscription identifier in PUBLISH from a client");
        return;
    }
    int rc = publish_topic(s, p, &topic, &tlen);
    if (rc == SL_EINVAL) {
        sess_close(s, SL_EALIAS, "invalid topic alias");
        return;
    }
    if (rc != SL_OK) {
        sess_close(s, SL_EPROTOCOL, "unknown topic alias");
        return;
    }
    if (topic_name_check(topic, tlen, (size_t)conf->max_topic_length) !=
            SL_OK ||
        topic_levels(topic, tlen) > (size_t)conf->max_topic_levels) {
        sess_close(s, SL_ETOPIC, "invalid topic in PUBLISH");
        return;
    }
    if (pub->qos > conf->max_qos) {
        sess_close(s, SL_EQOS, "QoS not supported");
        return;
    }
    if (pub->retain && !conf->retain_available) {
        sess_close(s, SL_ERETAIN, "retain not supported");
        return;
    }
    b->stats.msgs_in++;
    if (pub->qos == 2 && in_qos2_has(s, pub->packet_id)) {
        sess_send_ack(s, MQTT_PUBREC, pub->packet_id, SL_OK); /* duplicate */
        return;
    }
    if (pub->qos > 0 && s->version == MQTT_V5 &&
        s->in_flight_in + s->n_in_qos2 >= (uint32_t)conf->receive_maximum) {
        /* QoS 1 counts until PUBACK, QoS 2 until PUBREL (§4.9). */
        sess_close(s, SL_ERECEIVEMAX, "receive maximum exceeded");
        return;
    }
    if (mqtt_props_has(&p->props, MQTT_P_RESPONSE_TOPIC) &&
        topic_name_check((const char *)p->props.response_topic.p,
                         p->props.response_topic.len, 0) != SL_OK) {
        /* [MQTT-3.3.2-14]: a topic name, no wildcards. */
        sess_close(s, SL_EPROTOCOL, "invalid Response Topic");
        return;
    }
    if (tlen >= 4 && memcmp(topic, "$SYS", 4) == 0) {
        /* Clients do not publish into the broker's own tree: drop. */
        if (pub->qos)
            sess_send_ack(s, pub->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
                          pub->packet_id, SL_OK);
        return;
    }
    msg_t *m = publish_msg_from(&p->props, s->version, topic, tlen, pub->payload,
                        pub->qos, pub->retain);
    if (!m) {
        sess_close(s, SL_ENOMEM, "out of memory");
        return;
    }
    /* Decided once: an answer that comes later resumes this message, held
     * here with input paused, never the packet decoded again. */
    sess_ref(s);
    int ok = sess_authz(s, AUTHZ_PUBLISH, m->topic, m->topic_len, pub->qos,
                        pub->retain, on_publish_authz, s);
    if (ok >= 0) {
        s->refs--;
        publish_decided(s, m, pub->packet_id, ok);
        msg_unref(&m);
        return;
    }
    s->held_pub = malloc(sizeof(*s->held_pub));
    if (!s->held_pub) {
        msg_unref(&m); /* the answer finds nothing held: ignored */
        sess_close(s, SL_ENOMEM, "out of memory");
        return;
    }
    *s->held_pub = (pubheld_t){m, pub->packet_id};
    s->paused = true;
}

/* The publisher may publish m (allowed) or not: acknowledge, or route. */
static void publish_decided(sess_t *s, msg_t *m, uint16_t pid, bool allowed)
{
    broker_t *b = s->b;
    if (!allowed) {
        if (s->version != MQTT_V5 &&
            b->conf->acl_deny_action_v3 == ACL_DENY_DISCONNECT) {
            sess_close(s, 0, "PUBLISH not authorized");
            return;
        }
        if (m->qos)
            sess_send_ack(s, m->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pid,
                          SL_EAUTH);
        return;
    }
    if (hook_wanted(b->auth, "message.publish"))
        hook_event(b->auth, "message.publish", s->cid, s->username, m->topic,
                   m->payload, m->payload_len, m->qos, m->retain);
    publish_route(s, m, pid);
}

static void on_publish_authz(void *arg, bool allowed)
{
    sess_t *s = arg;
    pubheld_t *h = s->held_pub;
    s->held_pub = NULL;
    s->paused = false;
    if (h) {
        if (s->state == SESS_ONLINE)
            publish_decided(s, h->m, h->pid, allowed);
        msg_unref(&h->m);
        free(h);
    }
    sess_resume_input(s);
    sess_unref(&s);
}

/* Route an accepted PUBLISH; QoS 1/2 are acknowledged once it is safe. */
static void publish_route(sess_t *s, msg_t *m, uint16_t pid)
{
    broker_t *b = s->b;
    if (m->qos == 0) {
        router_publish(b, s->subr, m, NULL, NULL);
        return;
    }
    pubctx_t *pc = pool_get(&pub_pool);
    if (!pc) {
        sess_close(s, SL_ENOMEM, "out of memory");
        return;
    }
    sess_ref(s);
    *pc = (pubctx_t){.s = s, .pid = pid, .qos = m->qos, .pending = 1};
    if (m->qos == 2) {
        if (s->persistent)
            pc->pending++;
        if (in_qos2_add(s, pid, on_inbound_stored, pc) != SL_OK) {
            sess_unref(&pc->s);
            pool_put(&pub_pool, pc);
            sess_close(s, SL_ENOMEM, "out of memory");
            return;
        }
    }
    if (m->qos == 1)
        s->in_flight_in++;
    router_publish(b, s->subr, m, on_routed, pc);
}

void handle_pubrel(sess_t *s, const mqtt_packet_t *p)
{
    uint16_t pid = p->u.ack.packet_id;
    /* PUBCOMP only once the id is released in the store: released late,
     * the next QoS 2 message with this id would be taken for a repeat. */
    ackctx_t *a = s->persistent ? sess_ack_after(s, MQTT_PUBCOMP, pid, SL_OK) : NULL;
    bool known = in_qos2_del(s, pid, a ? sess_on_stored_ack : NULL, a);
    if (!known && s->version == MQTT_V5) {
        if (a) {
            a->status = SL_EPACKETID;
            sess_on_stored_ack(a, SL_OK);
        } else {
            sess_send_ack(s, MQTT_PUBCOMP, pid, SL_EPACKETID);
        }
        return;
    }
    if (!known && a) {
        sess_on_stored_ack(a, SL_OK);
        return;
    }
    if (!a)
        sess_send_ack(s, MQTT_PUBCOMP, pid, SL_OK);
}
