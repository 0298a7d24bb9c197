/*
 * connect.c - CONNECT: checks, authentication, the store claim of the
 * session (takeover, resume of subscriptions and queue), CONNACK.
 */
#include "internal.h"
#include "session.h"
#include "delivery.h"
#include "connect.h"
#include "publish.h"
#include "subscribe.h"
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

static void go_online(sess_t *s, const store_claim_t *c, const char *assigned)
{
    broker_t *b = s->b;
    bool present = c && c->present;
    bool lazy = !s->persistent && !present &&
                !map_get(b->psessions, s->cid, s->clen);
    if (!lazy) {
        s->subr = subr_for_session(s, c);
        if (!s->subr) {
            sess_close(s, SL_ENOMEM, "out of memory");
            return;
        }
        s->subr->gone = false;
        subs_set_online(b, s->subr, s);
    }
    if (present)
        delivery_load_queue(s, c);
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
    delivery_resend(s);
    delivery_pump(s);
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
        sess_send_connack_refusal(s, s->version, SL_EUNAVAILABLE);
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
static void refuse(sess_t *s, int status, const char *why)
{
    sess_send_connack_refusal(s, s->version, status);
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
        refuse(s, SL_ETOPIC,
               "invalid will topic");
        return SL_ETOPIC;
    }
    if (c->will_qos > conf->max_qos) {
        refuse(s, SL_EQOS,
               "will QoS not supported");
        return SL_EPROTOCOL;
    }
    if (c->will_retain && !conf->retain_available) {
        refuse(s, SL_ERETAIN,
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
        refuse(s, SL_EAUTH,
               "not authorized");
    } else {
        s->authid = id;
        connect_continue(s);
        if (s->state == SESS_ONLINE && s->conn)
            conn_resume(s->conn);
    }
    sess_unref(&s);
}

/* Ask whether this session may act on topic t; 1 allowed, 0 denied, -1:
 * the answer comes later through fn(arg, allowed) (an HTTP ACL). */
void handle_connect(sess_t *s, mqtt_packet_t *p)
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
        refuse(s, SL_EAUTHMETHOD,
               "enhanced authentication method not supported");
        return;
    }
    if (conf->max_keepalive && (s->keepalive > conf->max_keepalive ||
                                (s->keepalive == 0 &&
                                 s->version == MQTT_V5 &&
                                 conf->max_keepalive < 65535))) {
        if (s->version != MQTT_V5) {
            refuse(s, SL_EKEEPALIVEMAX, "keepalive above max_keepalive");
            return;
        }
        s->keepalive = (uint16_t)conf->max_keepalive;
        s->keepalive_overridden = true;
    }
    if (c->client_id.len == 0) {
        if (!conf->allow_zero_length_clientid ||
            (s->version != MQTT_V5 && !c->clean) ||
            s->version == MQTT_V31) {
            refuse(s, SL_ECLIENTID,
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
        refuse(s, SL_EUNAVAILABLE,
               "out of memory");
        return;
    }
    s->clen = strlen(s->cid);
    if (s->clen != c->client_id.len && c->client_id.len) {
        refuse(s, SL_ECLIENTID,
               "client id contains NUL");
        return;
    }
    if (check_will(s, c) != SL_OK)
        return;
    if (c->will && !(s->will = make_will(s, c))) {
        refuse(s, SL_EUNAVAILABLE,
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
        sess_close(old, SL_ETAKENOVER, "session taken over");
        map_del(b->clients, s->cid, s->clen);
    }
    if (map_put(b->clients, s->cid, s->clen, s, NULL) != SL_OK) {
        refuse(s, SL_EUNAVAILABLE,
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

static msg_t *make_will(sess_t *s, const mqtt_connect_t *c)
{
    return publish_msg_from(&c->will_props, s->version, c->will_topic.p,
                    c->will_topic.len, c->will_payload, c->will_qos,
                    c->will_retain);
}
