/*
 * client.c - one MQTT client connection of starling-bench.
 *
 * A client is a bufferevent plus a small state machine:
 *
 *   IDLE -> CONNECTING -> CONNACK -> [SUBACK] -> READY -> CLOSING -> IDLE
 *
 * It speaks MQTT 3.1.1 or 5.0 through the project's codec (mqtt.h) and runs
 * the full client side of every flow it meets: PUBACK for QoS 1,
 * PUBREC/PUBREL/PUBCOMP for QoS 2 in both directions, PINGREQ for keepalive.
 * Publishers keep an inflight window of packet ids; subscribers record, per
 * publisher, which sequence numbers arrived (a growable bitmap), so loss,
 * duplicates and reordering are exact, and feed delivery latency into the
 * worker's histogram.
 *
 * A client struct lives for the whole run; only its bufferevent comes and
 * goes, so callbacks never see a freed client.
 *
 * With --ws (and --wss, over TLS) the connection first carries the HTTP
 * upgrade, and once the broker answers 101 the WebSocket framing of ws.c
 * (a filter bufferevent) is put on top: the CONNECT time of a client then
 * includes its upgrade.
 *
 * With --tls the bufferevent is libevent's OpenSSL one on a non-blocking
 * socket the client connects itself: the TCP connect, then the handshake,
 * and BEV_EVENT_CONNECTED only when the handshake is done, so the CONNECT
 * time of a client includes its TLS handshake (a full one each time: no
 * session is resumed).
 */
#include <errno.h>
#include <stdio.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "starling/err.h"
#include "starling/mqtt.h"

#include "bench.h"

#define OUT_HIGH (64 * 1024)   /* stop producing above this much queued */
#define OUT_LOW (16 * 1024)    /* write callback fires below this */
#define PUMP_BATCH 1024        /* messages per pump call */
#define STATE_TIMEOUT_NS (10ull * 1000000000ull)
#define CLOSE_GRACE_NS (2ull * 1000000000ull)
#define SESSION_EXPIRY 600     /* s, v5 persistent sessions */
#define BACKLOG_STALL_NS (200ull * 1000000ull)

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static inline bool bit_get(const uint8_t *m, uint32_t i)
{
    return (m[i >> 3] >> (i & 7)) & 1;
}

static inline void bit_set(uint8_t *m, uint32_t i)
{
    m[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline void bit_clear(uint8_t *m, uint32_t i)
{
    m[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static inline uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Output not yet written (for --ws: also the frames under the filter). */
static size_t out_len(client_t *c)
{
    size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));
    struct bufferevent *under = bufferevent_get_underlying(c->bev);
    if (under)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

static void set_state(client_t *c, client_state_t s)
{
    c->state = s;
    c->t_state = bench_now();
}

/* ---- sending ------------------------------------------------------------- */

/* Make sure the worker's scratch buffer holds at least n bytes. */
static int scratch_reserve(worker_t *w, size_t n)
{
    if (n <= w->scratch_cap)
        return SL_OK;
    uint8_t *p = realloc(w->scratch, n);
    if (!p)
        return SL_ENOMEM;
    w->scratch = p;
    w->scratch_cap = n;
    return SL_OK;
}

static void send_out(client_t *c, const mqtt_out_t *o)
{
    if (!c->bev || o->len > o->cap)
        return;
    evbuffer_add(bufferevent_get_output(c->bev), o->buf, o->len);
    c->last_tx = bench_now();
}

static void send_ack(client_t *c, mqtt_type_t type, uint16_t pid)
{
    uint8_t buf[8];
    mqtt_out_t o;
    mqtt_out_init(&o, buf, sizeof(buf));
    mqtt_enc_ack(&o, c->w->b->o.version, type, pid, 0, NULL);
    send_out(c, &o);
}

static void send_disconnect(client_t *c)
{
    uint8_t buf[8];
    mqtt_out_t o;
    mqtt_out_init(&o, buf, sizeof(buf));
    mqtt_enc_reason(&o, c->w->b->o.version, MQTT_DISCONNECT, 0, NULL);
    send_out(c, &o);
}

static void send_connect(client_t *c)
{
    const bench_opts_t *op = &c->w->b->o;
    uint8_t buf[256], pbuf[16];
    mqtt_out_t o, props;
    mqtt_connect_t cn;

    memset(&cn, 0, sizeof(cn));
    cn.version = (uint8_t)op->version;
    cn.clean = c->clean;
    cn.keepalive = (uint16_t)op->keepalive;
    cn.client_id.p = (const uint8_t *)c->id;
    cn.client_id.len = (uint32_t)strlen(c->id);
    mqtt_out_init(&props, pbuf, sizeof(pbuf));
    if (op->version == MQTT_V5 && !c->clean)
        mqtt_prop_u32(&props, MQTT_P_SESSION_EXPIRY, SESSION_EXPIRY);
    mqtt_bytes_t pb = {pbuf, (uint32_t)props.len};
    mqtt_out_init(&o, buf, sizeof(buf));
    mqtt_enc_connect(&o, &cn, props.len ? &pb : NULL);
    send_out(c, &o);
}

static void send_subscribe(client_t *c)
{
    const bench_opts_t *op = &c->w->b->o;
    uint8_t buf[BENCH_TOPIC_MAX + 32];
    mqtt_out_t o;
    mqtt_sub_t s;

    memset(&s, 0, sizeof(s));
    s.filter.p = (const uint8_t *)c->sub->filter;
    s.filter.len = c->sub->filter_len;
    s.qos = (uint8_t)op->qos;
    mqtt_out_init(&o, buf, sizeof(buf));
    mqtt_enc_subscribe(&o, op->version, 1, &s, 1, NULL);
    send_out(c, &o);
}

/* ---- connection lifecycle ---------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* Free the bufferevent; the client struct stays. */
static void release(client_t *c)
{
    if (!c->bev)
        return;
    if (c->state == CS_CONNECTING || c->state == CS_CONNACK ||
        c->state == CS_SUBACK)
        worker_pending_done(c->w, c);
    bufferevent_free(c->bev);
    c->bev = NULL;
    c->ws_upgrading = false;
    c->ping_sent = 0;
    set_state(c, CS_IDLE);
    bench_count_sub(&c->w->open, 1);
}

/* The connection failed: count it once, remember the first reason. */
static void fail(client_t *c, const char *why)
{
    worker_t *w = c->w;
    if (!c->failed) {
        bench_count_add(&w->errors, 1);
        if (w->first_error[0] == '\0')
            snprintf(w->first_error, sizeof(w->first_error), "%s: %s", c->id,
                     why);
    }
    c->failed = true;
    release(c);
    worker_step_done(w, c);
    if (c->pub && !c->pub->done) {
        /* A publisher that is gone sends nothing more: the run goes on and
         * reports what it lost. */
        c->pub->stopped = true;
        c->pub->done = true;
        bench_count_add(&w->pubs_done, 1);
    }
}

/* A socket bound to one of the 127.0.0.x source addresses, port chosen at
 * connect time (so the 4-tuple, not the source port alone, must be free). */
static int bound_socket(const bench_opts_t *op, uint32_t index)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    struct sockaddr_in src;
    memset(&src, 0, sizeof(src));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr =
        htonl(0x7f000001u + (uint32_t)(index % (uint32_t)op->src_addrs));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        evutil_make_socket_nonblocking(fd) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

struct ssl_ctx_st *client_tls_ctx(const bench_opts_t *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (o->cafile) {
        if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1) {
            char buf[160];
            ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
            fprintf(stderr, "starling-bench: --cafile %s: %s\n", o->cafile,
                    buf);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

/* An SSL for one connection to `host`: SNI for a name, and with --cafile
 * the certificate must match the name or address. */
static SSL *tls_for(const bench_t *b, bool sub)
{
    const char *host = sub && b->o.sub_host ? b->o.sub_host : b->o.host;
    SSL *ssl = SSL_new(b->ssl_ctx);
    if (!ssl)
        return NULL;
    struct in_addr a;
    bool ip = inet_pton(AF_INET, host, &a) == 1;
    if (!ip)
        SSL_set_tlsext_host_name(ssl, host);
    if (b->o.cafile) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(param, host);
        else
            SSL_set1_host(ssl, host);
    }
    return ssl;
}

/* --tls: a socket connecting to a, wrapped in an OpenSSL bufferevent that
 * starts the handshake once the TCP connect is done. */
static struct bufferevent *tls_connect(client_t *c, int fd,
                                       const struct sockaddr_in *a)
{
    bench_t *b = c->w->b;
    if (fd < 0) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || evutil_make_socket_nonblocking(fd) < 0) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *ssl = NULL;
    if ((connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0 &&
         errno != EINPROGRESS) ||
        !(ssl = tls_for(b, c->to_sub_addr))) {
        close(fd);
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        c->w->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int client_start(client_t *c)
{
    worker_t *w = c->w;
    const bench_t *b = w->b;
    int fd = -1;

    if (c->bev)
        return SL_EINVAL;
    if (b->o.src_addrs > 1) {
        fd = bound_socket(&b->o, c->index);
        if (fd < 0)
            return SL_EIO;
    }
    const struct sockaddr_in *a = c->to_sub_addr ? &b->sub_addr : &b->addr;
    if (b->ssl_ctx)
        c->bev = tls_connect(c, fd, a);
    else
        c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        if (fd >= 0 && !b->ssl_ctx)
            close(fd);
        return b->ssl_ctx ? SL_EIO : SL_ENOMEM;
    }
    bench_count_add(&w->open, 1);
    c->failed = false;
    c->t_connect = bench_now();
    set_state(c, CS_CONNECTING);
    w->pending++;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    if (!b->ssl_ctx &&
        bufferevent_socket_connect(c->bev, (const struct sockaddr *)a,
                                   sizeof(*a)) < 0) {
        fail(c, strerror(errno));
        return SL_EIO;
    }
    return SL_OK;
}

void client_stop(client_t *c)
{
    if (!c->bev)
        return;
    if (c->state != CS_READY) {
        release(c);
        return;
    }
    send_disconnect(c);
    set_state(c, CS_CLOSING);
}

void client_drop(client_t *c)
{
    release(c);
}

static void on_connected(client_t *c)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (c->w->b->o.ws) {
        const bench_opts_t *o = &c->w->b->o;
        c->ws_upgrading = true;
        ws_client_request(c->bev, c->to_sub_addr ? o->sub_host : o->host,
                          c->to_sub_addr ? o->sub_port : o->port, o->ws_path);
        return;
    }
    set_state(c, CS_CONNACK);
    send_connect(c);
}

/* --ws: the broker's answer to the upgrade; on 101 the framing goes on
 * top and CONNECT follows. */
static void upgrade_reply(client_t *c)
{
    char why[96];
    int r = ws_client_reply(bufferevent_get_input(c->bev), why, sizeof(why));
    if (r == 0)
        return;
    if (r < 0) {
        fail(c, why);
        return;
    }
    struct bufferevent *f = ws_client_wrap(c->bev);
    if (!f) {
        fail(c, "out of memory");
        return;
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    c->bev = f;
    c->ws_upgrading = false;
    bufferevent_setcb(f, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(f, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(f, EV_READ | EV_WRITE);
    set_state(c, CS_CONNACK);
    send_connect(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    client_t *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        on_connected(c);
        return;
    }
    if (c->state == CS_CLOSING) {
        /* The broker closed after our DISCONNECT: done. */
        release(c);
        worker_step_done(c->w, c);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    unsigned long tls_err = c->w->b->ssl_ctx
                                ? bufferevent_get_openssl_error(bev)
                                : 0;
    if (tls_err) {
        char why[160];
        snprintf(why, sizeof(why), "TLS: ");
        ERR_error_string_n(tls_err, why + 5, sizeof(why) - 5);
        fail(c, why);
    } else if (what & BEV_EVENT_EOF)
        fail(c, "connection closed by the broker");
    else
        fail(c, err ? evutil_socket_error_to_string(err) : "socket error");
}

/* ---- setup steps ----------------------------------------------------------- */

/* The client reached the end of its setup: ready, or leaving at once. */
static void setup_finished(client_t *c)
{
    if (c->once) {
        send_disconnect(c);
        set_state(c, CS_CLOSING);
        worker_pending_done(c->w, c);
        return;
    }
    worker_pending_done(c->w, c);
    set_state(c, CS_READY);
    worker_step_done(c->w, c);
    if (c->pub)
        client_pub_pump(c, bench_now());
}

static void handle_connack(client_t *c, const mqtt_packet_t *p)
{
    worker_t *w = c->w;
    if (c->state != CS_CONNACK) {
        fail(c, "unexpected CONNACK");
        return;
    }
    if (p->u.connack.code != 0) {
        char why[48];
        snprintf(why, sizeof(why), "CONNACK refused, code 0x%02x",
                 p->u.connack.code);
        fail(c, why);
        return;
    }
    if (c->need_session && !p->u.connack.session_present) {
        fail(c, "CONNACK without the persistent session");
        return;
    }
    hist_add(w->conn_lat, bench_now() - c->t_connect);
    bench_count_add(&w->connects, 1);
    if (c->pub && w->b->o.version == MQTT_V5 &&
        mqtt_props_has(&p->props, MQTT_P_RECEIVE_MAXIMUM) &&
        p->props.receive_maximum < c->pub->window)
        c->pub->window = p->props.receive_maximum;
    if (c->subscribe) {
        set_state(c, CS_SUBACK);
        send_subscribe(c);
        return;
    }
    setup_finished(c);
}

static void handle_suback(client_t *c, const mqtt_packet_t *p)
{
    if (c->state != CS_SUBACK || p->u.suback.codes.len != 1) {
        fail(c, "unexpected SUBACK");
        return;
    }
    if (p->u.suback.codes.p[0] >= 0x80) {
        fail(c, "subscription refused");
        return;
    }
    c->sub->granted = p->u.suback.codes.p[0];
    setup_finished(c);
}

/* ---- publisher ------------------------------------------------------------- */

static uint16_t take_pid(pub_t *p, client_t *c)
{
    for (int i = 0; i < 65536; i++) {
        uint16_t id = c->next_pid++;
        if (c->next_pid == 0)
            c->next_pid = 1;
        if (id != 0 && !bit_get(p->await, id) &&
            !(p->await_comp && bit_get(p->await_comp, id)))
            return id;
    }
    return 0;
}

static int send_publish(client_t *c, uint64_t now)
{
    worker_t *w = c->w;
    const bench_opts_t *op = &w->b->o;
    pub_t *p = c->pub;
    mqtt_publish_t m;
    mqtt_out_t o;
    size_t need = (size_t)op->size * 2 + p->topic_len + 32;

    if (scratch_reserve(w, need) < 0)
        return SL_ENOMEM;
    memset(&m, 0, sizeof(m));
    m.qos = (uint8_t)op->qos;
    m.topic.p = (const uint8_t *)p->topic;
    m.topic.len = p->topic_len;
    if (m.qos > 0) {
        m.packet_id = take_pid(p, c);
        if (m.packet_id == 0)
            return SL_ELIMIT;
    }
    uint8_t *payload = w->scratch + need - (size_t)op->size;
    memcpy(payload, w->b->payload_fill, (size_t)op->size);
    if (op->size >= BENCH_HDR_SIZE) {
        put_u32(payload, p->id);
        put_u32(payload + 4, (uint32_t)p->sent);
        memcpy(payload + 8, &now, 8);
    }
    m.payload.p = payload;
    m.payload.len = (uint32_t)op->size;
    mqtt_out_init(&o, w->scratch, need - (size_t)op->size);
    mqtt_enc_publish(&o, op->version, &m, NULL);
    if (o.len > o.cap)
        return SL_ENOMEM;
    send_out(c, &o);
    if (m.qos > 0) {
        bit_set(p->await, m.packet_id);
        p->inflight++;
    }
    p->sent++;
    bench_count_add(&w->sent, 1);
    return SL_OK;
}

static void pub_check_done(client_t *c)
{
    pub_t *p = c->pub;
    if (p->done || !p->stopped || p->inflight > 0)
        return;
    p->done = true;
    bench_count_add(&c->w->pubs_done, 1);
}

/*
 * Closed loop: is the publisher too far ahead of its subscribers? Without
 * this bound an unpaced publisher is held back only by TCP, whose loopback
 * buffers hold seconds of traffic, and every figure measures queueing. When
 * deliveries stop moving for BACKLOG_STALL_NS (the broker dropped them, as
 * it may at QoS 0 or with a full queue), the missing ones are written off
 * and counted as lost at the end.
 */
static bool backlog_full(pub_t *p, uint64_t now)
{
    uint64_t d = atomic_load_explicit(&p->delivered, memory_order_relaxed);
    if (d != p->seen || p->t_progress == 0) {
        p->seen = d;
        p->t_progress = now;
    }
    int64_t ahead = (int64_t)(p->sent * p->fan) - (int64_t)d - p->written_off;
    if (ahead < (int64_t)p->backlog)
        return false;
    if (now - p->t_progress < BACKLOG_STALL_NS)
        return true;
    p->written_off += ahead;
    p->t_progress = now;
    return false;
}

/* May the publisher send one more message now? */
static bool may_send(client_t *c, uint64_t now)
{
    bench_t *b = c->w->b;
    pub_t *p = c->pub;
    uint64_t deadline = atomic_load_explicit(&b->t_deadline,
                                             memory_order_acquire);

    if ((p->target && p->sent >= p->target) || (deadline && now >= deadline)) {
        p->stopped = true;
        return false;
    }
    if (b->o.rate > 0) {
        double due = b->o.rate * (double)(now - p->t_start) / 1e9 + 1.0;
        if ((double)p->sent >= due)
            return false;
    }
    if (b->o.qos > 0 && p->inflight >= p->window)
        return false;
    if (p->backlog > 0 && backlog_full(p, now))
        return false;
    return out_len(c) < OUT_HIGH;
}

void client_pub_pump(client_t *c, uint64_t now)
{
    pub_t *p = c->pub;
    if (!p || !c->bev || c->state != CS_READY || p->stopped ||
        atomic_load_explicit(&c->w->b->phase, memory_order_acquire) !=
            PH_RUN)
        goto check;
    if (p->t_start == 0)
        p->t_start = now;
    for (int i = 0; i < PUMP_BATCH && may_send(c, now); i++) {
        if (send_publish(c, now) < 0) {
            fail(c, "cannot encode PUBLISH");
            return;
        }
        if ((i & 63) == 63)
            now = bench_now();
    }
check:
    if (p)
        pub_check_done(c);
}

static void handle_pub_ack(client_t *c, const mqtt_packet_t *p)
{
    pub_t *pb = c->pub;
    uint16_t id = p->u.ack.packet_id;

    if (!pb) {
        fail(c, "acknowledgement to a client that does not publish");
        return;
    }
    if (p->type == MQTT_PUBREC) {
        if (c->w->b->o.qos != 2 || !bit_get(pb->await, id) ||
            p->u.ack.code >= 0x80) {
            fail(c, "unexpected or negative PUBREC");
            return;
        }
        bit_clear(pb->await, id);
        bit_set(pb->await_comp, id);
        send_ack(c, MQTT_PUBREL, id);
        return;
    }
    bool qos1 = c->w->b->o.qos == 1;
    uint8_t *map = p->type == MQTT_PUBACK ? pb->await : pb->await_comp;
    if ((p->type == MQTT_PUBACK) != qos1 || !map || !bit_get(map, id) ||
        p->u.ack.code >= 0x80) {
        fail(c, p->type == MQTT_PUBACK ? "unexpected or negative PUBACK"
                                       : "unexpected or negative PUBCOMP");
        return;
    }
    bit_clear(map, id);
    pb->inflight--;
    pb->acked++;
    client_pub_pump(c, bench_now());
}

/* ---- subscriber ------------------------------------------------------------ */

static track_t *find_track(sub_t *s, uint32_t pub_id)
{
    uint32_t lo = 0, hi = s->ntracks;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->tracks[mid].pub_id == pub_id)
            return &s->tracks[mid];
        if (s->tracks[mid].pub_id < pub_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int track_grow(track_t *t, uint32_t seq)
{
    uint64_t cap = t->cap ? t->cap : 1024;
    while (cap <= seq)
        cap *= 2;
    if (cap > (1ull << 31))
        return SL_ELIMIT;
    uint8_t *bits = realloc(t->bits, (size_t)(cap / 8));
    if (!bits)
        return SL_ENOMEM;
    memset(bits + t->cap / 8, 0, (size_t)(cap / 8 - t->cap / 8));
    t->bits = bits;
    t->cap = (uint32_t)cap;
    return SL_OK;
}

/* Count one delivery; returns false when the payload is not ours. */
static bool record(client_t *c, const mqtt_bytes_t *pl, uint64_t now)
{
    worker_t *w = c->w;
    sub_t *s = c->sub;

    s->received++;
    bench_count_add(&w->received, 1);
    w->last_rx = now;
    if (pl->len < BENCH_HDR_SIZE) {
        /* Too small to carry a header: counted, not told apart. */
        if (w->b->o.size >= BENCH_HDR_SIZE)
            return false;
        s->unique++;
        bench_count_add(&w->unique, 1);
        return true;
    }
    uint32_t pub_id = get_u32(pl->p), seq = get_u32(pl->p + 4);
    uint64_t sent_at = get_u64(pl->p + 8);
    track_t *t = find_track(s, pub_id);
    if (!t) {
        s->unexpected++;
        return false;
    }
    if (now >= sent_at)
        hist_add(w->lat, now - sent_at);
    if (seq >= t->cap && track_grow(t, seq) < 0)
        return false;
    if (bit_get(t->bits, seq)) {
        s->dups++;
        return true;
    }
    bit_set(t->bits, seq);
    s->unique++;
    bench_count_add(&w->unique, 1);
    atomic_fetch_add_explicit(&w->b->pubs[pub_id].delivered, 1,
                              memory_order_relaxed);
    if (seq + 1 < t->next)
        s->reordered++;
    else
        t->next = seq + 1;
    return true;
}

static void handle_publish(client_t *c, const mqtt_packet_t *p)
{
    const mqtt_publish_t *m = &p->u.publish;
    uint64_t now = bench_now();

    if (!c->sub) {
        fail(c, "PUBLISH to a client that did not subscribe");
        return;
    }
    /* Before the SUBACK (§3.8.4 lets it come first) the request bounds it. */
    int max_qos = c->state == CS_SUBACK ? c->w->b->o.qos : c->sub->granted;
    if (m->qos > max_qos || (m->qos == 2 && !c->sub->q2)) {
        fail(c, "PUBLISH above the QoS granted in SUBACK");
        return;
    }
    if (m->qos == 2 && bit_get(c->sub->q2, m->packet_id)) {
        /* Re-sent before our PUBREC arrived: already counted. */
        send_ack(c, MQTT_PUBREC, m->packet_id);
        return;
    }
    if (!record(c, &m->payload, now))
        bench_count_add(&c->w->errors, 1);
    if (m->qos == 1) {
        send_ack(c, MQTT_PUBACK, m->packet_id);
    } else if (m->qos == 2) {
        bit_set(c->sub->q2, m->packet_id);
        send_ack(c, MQTT_PUBREC, m->packet_id);
    }
}

static void handle_pubrel(client_t *c, const mqtt_packet_t *p)
{
    if (!c->sub || !c->sub->q2) {
        fail(c, "unexpected PUBREL");
        return;
    }
    bit_clear(c->sub->q2, p->u.ack.packet_id);
    send_ack(c, MQTT_PUBCOMP, p->u.ack.packet_id);
}

/* ---- reading --------------------------------------------------------------- */

static void dispatch(client_t *c, const mqtt_packet_t *p)
{
    switch (p->type) {
    case MQTT_CONNACK:
        handle_connack(c, p);
        break;
    case MQTT_SUBACK:
        handle_suback(c, p);
        break;
    case MQTT_PUBLISH:
        handle_publish(c, p);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        handle_pub_ack(c, p);
        break;
    case MQTT_PUBREL:
        handle_pubrel(c, p);
        break;
    case MQTT_PINGRESP:
        c->ping_sent = 0;
        break;
    case MQTT_DISCONNECT:
        /* v5 server DISCONNECT: the broker ends the session. */
        if (c->state == CS_CLOSING) {
            release(c);
            worker_step_done(c->w, c);
        } else {
            fail(c, "DISCONNECT from the broker");
        }
        break;
    default:
        fail(c, "unexpected packet type");
        break;
    }
}

/*
 * Decode every complete packet in the input buffer, made contiguous once per
 * callback. Bounded by the buffer (libevent reads at most a few tens of KiB
 * per callback); stops as soon as a handler closed the connection, which
 * also frees the buffer. When a packet is cut short and its size is known,
 * the read low watermark makes libevent wait until all of it is there.
 */
static void read_cb(struct bufferevent *bev, void *arg)
{
    client_t *c = arg;
    if (c->ws_upgrading) {
        upgrade_reply(c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    const int version = c->w->b->o.version;
    size_t len = evbuffer_get_length(in), off = 0;
    const uint8_t *buf = evbuffer_pullup(in, -1);

    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    while (buf && off < len) {
        uint32_t total = 0;
        mqtt_type_t type;
        mqtt_packet_t pkt;
        int rc = mqtt_frame(buf + off, len - off, 0, &total, &type);
        if (rc == SL_AGAIN) {
            if (total > len - off)
                bufferevent_setwatermark(bev, EV_READ, total, 0);
            break;
        }
        if (rc == SL_OK)
            rc = mqtt_decode(buf + off, total, version, &pkt);
        if (rc != SL_OK) {
            char why[64];
            snprintf(why, sizeof(why), "undecodable packet from the broker: %s",
                     sl_strerror(rc));
            fail(c, why);
            return;
        }
        dispatch(c, &pkt);
        if (!c->bev)
            return;
        off += total;
    }
    evbuffer_drain(in, off);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    client_t *c = arg;
    (void)bev;
    if (c->pub && c->state == CS_READY)
        client_pub_pump(c, bench_now());
}

/* ---- timers ---------------------------------------------------------------- */

void client_sweep(client_t *c, uint64_t now)
{
    const uint64_t ka = (uint64_t)c->w->b->o.keepalive * 1000000000ull;

    if (!c->bev)
        return;
    switch (c->state) {
    case CS_CONNECTING:
    case CS_CONNACK:
    case CS_SUBACK:
        if (now - c->t_state > STATE_TIMEOUT_NS)
            fail(c, c->state == CS_CONNECTING
                        ? "TCP connect (or TLS handshake, WebSocket "
                          "upgrade) timed out"
                    : c->state == CS_CONNACK  ? "no CONNACK within 10 s"
                                              : "no SUBACK within 10 s");
        break;
    case CS_CLOSING:
        if (now - c->t_state > CLOSE_GRACE_NS) {
            release(c);
            worker_step_done(c->w, c);
        }
        break;
    case CS_READY:
        if (ka == 0)
            break;
        if (c->ping_sent && now - c->ping_sent > ka) {
            fail(c, "no PINGRESP within the keepalive");
        } else if (!c->ping_sent && now - c->last_tx >= ka / 2) {
            uint8_t buf[4];
            mqtt_out_t o;
            mqtt_out_init(&o, buf, sizeof(buf));
            mqtt_enc_pingreq(&o);
            send_out(c, &o);
            c->ping_sent = now;
        }
        break;
    default:
        break;
    }
}
