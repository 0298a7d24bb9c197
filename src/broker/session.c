/*
 * session.c - one client connection and its MQTT session: life cycle,
 * output helpers, closing, authorization asks, and the input loop that
 * frames, decodes and dispatches every packet to its handler
 * (connect.c, publish.c, subscribe.c, delivery.c).
 *
 *   NEW --CONNECT--> CLAIMING --store claim--> ONLINE --close--> CLOSING
 *                                                   \--transport gone--> CLOSED
 *
 * Input: sess_feed() frames and decodes every complete packet the
 * transport hands it and dispatches on its type. Packets that arrive while
 * the session is CLAIMING, or while a packet waits for an authorization
 * answer or a store write, stay buffered (input paused) so order holds.
 *
 * Lifetime: the session is reference counted; store callbacks and the
 * transport hold references, and a session is freed only at zero, never
 * from inside a callback still using it.
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

static void handle_packet(sess_t *s, mqtt_packet_t *p);
static void sess_end(sess_t *s);

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
    publish_held_free(s);
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

void sess_send_out(sess_t *s, const mqtt_out_t *o)
{
    if (!s->conn)
        return;
    conn_write(s->conn, o->buf, o->len);
    s->b->stats.bytes_out += o->len;
}

void sess_send_ack(sess_t *s, mqtt_type_t type, uint16_t pid, int status)
{
    uint8_t code = mqtt_ack_code(status, type);
    SEND_ENCODED(s, mqtt_enc_ack(&o_, s->version, type, pid, code, NULL));
}

/*
 * An acknowledgement that may only leave once the store holds the state it
 * announces (PUBREL after PUBREC is stored, PUBCOMP after the inbound id is
 * released): the store write's completion sends it.
 */

static pool_t ack_pool = POOL_INIT(sizeof(ackctx_t), POOL_KEEP);

void sess_on_stored_ack(void *arg, int status)
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
        sess_send_ack(s, a->type, a->pid, a->status);
    }
    sess_unref(&a->s);
    pool_put(&ack_pool, a);
}

/* A context for sess_on_stored_ack, or NULL (then ack at once: out of memory
 * is not a reason to stall the flow). */
ackctx_t *sess_ack_after(sess_t *s, mqtt_type_t type, uint16_t pid,
                         int status)
{
    ackctx_t *a = pool_get(&ack_pool);
    if (!a)
        return NULL;
    sess_ref(s);
    *a = (ackctx_t){s, type, pid, status};
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

void sess_send_connack_refusal(sess_t *s, int version, int status)
{
    uint8_t code = mqtt_connack_code(status, version);
    SEND_ENCODED(s, mqtt_enc_connack(&o_, version, false, code, NULL));
}

/* ---- closing ----------------------------------------------------------- */

void sess_close(sess_t *s, int status, const char *why)
{
    if (s->state >= SESS_CLOSING)
        return;
    if (why)
        log_info("client '%s' %s: %s, disconnecting", sess_name(s), s->peer,
                 why);
    if (s->version == MQTT_V5 && status < 0 && s->state == SESS_ONLINE)
        send_disconnect(s, mqtt_err_reason(status), why);
    sess_end(s);
    s->state = SESS_CLOSING;
    if (!s->conn)
        return;
    conn_close(s->conn);
}

/* ---- the end of a session on this connection -------------------------- */

/* Messages that came through a shared subscription and were not
 * acknowledged go to another member of the group (MQTT 5 §4.8.2). */
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
    delivery_end(s);
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

/* ---- the transport's callbacks ----------------------------------------- */

static size_t on_conn_input(void *owner, const uint8_t *p, size_t n)
{
    sess_t *s = owner;
    sess_ref(s); /* a packet may end the session while it is fed */
    size_t used = sess_feed(s, p, n);
    if (s->conn && (s->paused || s->state == SESS_CLAIMING))
        conn_pause(s->conn);
    sess_unref(&s);
    return used;
}

static void on_conn_closed(void *owner, conn_end_t end, const char *why)
{
    sess_t *s = owner;
    switch (end) {
    case CONN_END_EOF:
        why = s->state == SESS_NEW ? "connection closed by client before "
                                     "CONNECT"
                                   : "connection closed by client";
        break;
    case CONN_END_EOF_PARTIAL:
        why = "connection closed by client in the middle of a packet";
        break;
    case CONN_END_STALLED:
        why = "client did not read its output";
        break;
    case CONN_END_DONE:
    case CONN_END_HANDSHAKE:
        why = NULL; /* said already */
        break;
    case CONN_END_ERROR:
        break;
    }
    sess_ref(s);
    sess_on_transport_closed(s, why);
    sess_unref(&s);
}

static void on_conn_timeout(void *owner)
{
    sess_t *s = owner;
    sess_ref(s);
    if (s->state == SESS_NEW)
        sess_close(s, 0, "no CONNECT within connect_timeout");
    else
        sess_close(s, SL_EKEEPALIVE, "keepalive timeout");
    sess_unref(&s);
}

static const conn_ops_t conn_ops = {
    .input = on_conn_input,
    .closed = on_conn_closed,
    .timeout = on_conn_timeout,
};

void sess_attach(sess_t *s, conn_t *c)
{
    s->conn = c;
    conn_attach(c, &conn_ops, s, s->peer);
}

subr_t *sess_subr(sess_t *s)
{
    if (!s->subr && (s->subr = subr_new(s->cid, s->clen, false)))
        subs_set_online(s->b, s->subr, s);
    return s->subr;
}

void sess_auth_client(const sess_t *s, auth_client_t *c, char *host,
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
                         .proto_version = s->version,
                         .listener = s->conn ? conn_kind(s->conn) : NULL};
}

int sess_authz(const sess_t *s, authz_action_t act, const char *t,
                      size_t tlen, int qos, bool retain, auth_check_fn fn,
                      void *arg)
{
    char host[64];
    auth_client_t c;
    sess_auth_client(s, &c, host, sizeof(host));
    return auth_check(s->b->auth, s->authid, &c, act, t, tlen, qos, retain,
                      fn, arg);
}

/* Input waited for a decision: take it up again, unless the session is
 * paused for something else meanwhile. */
void sess_resume_input(sess_t *s)
{
    if (!s->paused && s->state == SESS_ONLINE && s->conn)
        conn_resume(s->conn);
}

/* ---- DISCONNECT, PINGREQ, AUTH ----------------------------------------- */

static void handle_disconnect(sess_t *s, const mqtt_packet_t *p)
{
    if (s->version == MQTT_V5) {
        if (mqtt_props_has(&p->props, MQTT_P_SESSION_EXPIRY)) {
            uint32_t e = p->props.session_expiry;
            if (s->expiry == 0 && e > 0) {
                sess_close(s, SL_EPROTOCOL,
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
        sess_close(s, SL_EPROTOCOL, "second CONNECT");
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
        sess_close(s, SL_EPROTOCOL, "AUTH without an auth method");
        break;
    default:
        sess_close(s, SL_EPROTOCOL, "unexpected packet type");
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
        sess_send_connack_refusal(s, v, SL_EVERSION);
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
        sess_send_connack_refusal(s, MQTT_V5, rc);
    }
    sess_close(s, rc, why);
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
    }
    sess_unref(&s);
    return off;
}
