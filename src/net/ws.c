/*
 * ws.c - MQTT over WebSocket (RFC 6455): a third transport behind conn_t,
 * over TCP (ws_port) or TLS (wss_port). ws.h tells the life of such a
 * connection; ws_codec.c is the pure part (upgrade request, frames).
 *
 * Input. A read (the TLS layer's plaintext for wss) is decoded in the read
 * buffer itself: frame headers are dropped and data payloads unmasked in
 * place, so what is left is exactly the byte stream a TCP client would
 * have sent, and it goes to the owner through the same path (only the
 * tail of an MQTT packet the owner could not use yet is kept). MQTT
 * packets may span frames and fragments, and a frame may carry several.
 * Pings are answered with pongs; a client close or a protocol error waits
 * until the owner has taken the data before it (as TCP's EOF waits for a
 * paused owner), then the close frame goes out (echoing the client's code,
 * or 1002/1003/1007/1009 with the reason), the write side is shut and
 * the connection lingers like any other closing one.
 *
 * Output. The owner's writes collect in `pending` (payloads of shared
 * messages by reference, as for TCP); when the connection is written at
 * the end of the loop iteration, everything pending becomes one binary
 * frame: a header in front, the chains moved (not copied) behind the
 * frames already waiting in `out`. One frame and one write per client per
 * loop iteration, like TCP. Control frames (pong, close) are whole frames
 * appended to `out`; nothing follows a close frame.
 */
#include "conn_int.h"

#include "starling/log.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pongs are skipped while this much output already waits (a client
 * sending pings without reading cannot grow our buffers without bound). */
#define PONG_BACKLOG_MAX (64 * 1024)

/* ---- the net's connections in their upgrade --------------------------- */

static void unlist(conn_t *c)
{
    ws_t *w = ws_of(c);
    if (!w->listed)
        return;
    if (w->prev)
        ws_of(w->prev)->next = w->next;
    else
        c->net->upgrading = w->next;
    if (w->next)
        ws_of(w->next)->prev = w->prev;
    w->prev = w->next = NULL;
    w->listed = false;
}

/* Never called: ws_input() takes the bytes of the upgrade. */
static size_t upgrading_input(void *owner, const uint8_t *p, size_t n)
{
    return n;
}

static void upgrading_closed(void *owner, conn_end_t end, const char *why)
{
    conn_t *c = owner;
    if (why)
        log_debug("WebSocket connection from %s: %s", c->peer, why);
    conn_free(c);
}

static void upgrading_timeout(void *owner)
{
    conn_t *c = owner;
    log_info("WebSocket connection from %s: no upgrade request within "
             "connect_timeout, closing",
             c->peer);
    conn_free(c);
}

static const conn_ops_t upgrading_ops = {
    .input = upgrading_input,
    .closed = upgrading_closed,
    .timeout = upgrading_timeout,
};

void ws_begin(conn_t *c, const char *peer)
{
    ws_t *w = ws_of(c);
    net_t *n = c->net;
    snprintf(w->peer, sizeof(w->peer), "%s", peer);
    conn_attach(c, &upgrading_ops, c, w->peer);
    w->next = n->upgrading;
    if (n->upgrading)
        ws_of(n->upgrading)->prev = c;
    n->upgrading = c;
    w->listed = true;
    conn_start(c, (uint64_t)n->conf->connect_timeout * 1000u);
}

void ws_release(conn_t *c)
{
    ws_t *w = ws_of(c);
    if (w->pending) {
        evbuffer_free(w->pending);
        w->pending = NULL;
    }
    unlist(c);
}

/* ---- the upgrade ---------------------------------------------------------- */

/* Answer a refused upgrade and close (r NULL: not an HTTP request). */
static bool refuse(conn_t *c, const ws_request_t *r, int status)
{
    char resp[WS_RESPONSE_MAX];
    size_t len = ws_response(r, status, resp, sizeof(resp));
    const char *why = r ? r->why
                      : status == 431 ? "request head too large"
                                      : "not an HTTP request";
    log_info("WebSocket upgrade from %s refused: %d %s", c->peer,
             r ? r->status : status, why);
    if (c->in) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
    struct evbuffer *out = conn_wire(c);
    if (out)
        evbuffer_add(out, resp, len);
    conn_close(c);
    return false;
}

/* The client's address when the TCP peer is a trusted proxy that says
 * whom it forwards (X-Forwarded-For); the port stays the TCP peer's. */
static void forwarded_peer(conn_t *c, const ws_request_t *r)
{
    ws_t *w = ws_of(c);
    const char *trusted = c->net->conf->ws_trusted_proxies;
    char addr[48], via[64], port[8] = "";
    if (!r->forwarded || !trusted || !ws_addr_in_list(w->peer, trusted))
        return;
    if (!ws_forwarded_client(r->forwarded, r->forwarded_len, trusted, addr,
                             sizeof(addr))) {
        log_info("WebSocket client via proxy %s: no usable address in "
                 "X-Forwarded-For, the proxy's is used",
                 w->peer);
        return;
    }
    const char *colon = strrchr(w->peer, ':');
    if (colon)
        snprintf(port, sizeof(port), "%.7s", colon);
    snprintf(via, sizeof(via), "%s", w->peer);
    if (strchr(addr, ':'))
        snprintf(w->peer, sizeof(w->peer), "[%s]%s", addr, port);
    else
        snprintf(w->peer, sizeof(w->peer), "%s%s", addr, port);
    log_debug("WebSocket client %s via proxy %s", w->peer, via);
}

static bool frames(conn_t *c, uint8_t *buf, size_t n);

/* 101 sent: the connection goes to the net's accept callback, then the
 * bytes that followed the request are its first frames. */
static bool upgraded(conn_t *c, const ws_request_t *r, size_t head)
{
    ws_t *w = ws_of(c);
    net_t *n = c->net;
    const sl_conf_t *conf = n->conf;
    char resp[WS_RESPONSE_MAX];
    size_t len = ws_response(r, 0, resp, sizeof(resp));
    size_t rest = evbuffer_get_length(c->in) - head;
    struct evbuffer *out = conn_wire(c);
    uint8_t *early = NULL;

    if (!out || evbuffer_add(out, resp, len) != 0 ||
        (rest && !(early = malloc(rest)))) {
        conn_end(c, CONN_END_ERROR, "out of memory");
        return false;
    }
    forwarded_peer(c, r); /* r's views point into `in` */
    evbuffer_drain(c->in, head);
    if (rest)
        evbuffer_remove(c->in, early, rest);
    evbuffer_free(c->in);
    c->in = NULL;
    ws_dec_init(&w->dec, conf->ws_max_frame_size
                             ? conf->ws_max_frame_size
                             : (uint64_t)conf->max_packet_size + 65536);
    w->open = true;
    unlist(c);
    conn_mark_dirty(c);
    log_debug("WebSocket upgrade from %s (%s, subprotocol %s)", w->peer,
              c->tls ? "wss" : "ws", r->protocol);
    n->accept(n->accept_arg, c, w->peer);
    bool go = !c->ended && !c->freed;
    if (go && rest)
        go = frames(c, early, rest);
    free(early);
    return go && !c->paused && !c->closing;
}

static bool upgrade_input(conn_t *c, const uint8_t *buf, size_t n)
{
    const sl_conf_t *conf = c->net->conf;
    if (!c->in && !(c->in = evbuffer_new())) {
        conn_end(c, CONN_END_ERROR, "out of memory");
        return false;
    }
    if (evbuffer_add(c->in, buf, n) != 0) {
        conn_end(c, CONN_END_ERROR, "out of memory");
        return false;
    }
    size_t len = evbuffer_get_length(c->in);
    const uint8_t *p = evbuffer_pullup(c->in, -1);
    int status;
    size_t head = ws_request_end(p, len, &status);
    if (!head)
        return status ? refuse(c, NULL, status) : true;
    ws_upgrade_conf_t uc = {.path = conf->ws_path,
                            .allowed_origins = conf->ws_allowed_origins};
    ws_request_t r;
    ws_parse_request((const char *)p, head, &uc, &r);
    if (r.status != 101)
        return refuse(c, &r, r.status);
    return upgraded(c, &r, head);
}

/* ---- frames ---------------------------------------------------------------- */

/* A whole control frame, after the frames already waiting. */
static void control(conn_t *c, uint8_t op, const uint8_t *p, size_t n)
{
    ws_t *w = ws_of(c);
    uint8_t hdr[10];
    struct evbuffer *out;
    if (w->close_sent || !(out = conn_wire(c)))
        return;
    if (op == WS_OP_PONG && evbuffer_get_length(out) > PONG_BACKLOG_MAX)
        return;
    size_t h = ws_frame_header(hdr, op, n);
    if (evbuffer_add(out, hdr, h) == 0 && n)
        evbuffer_add(out, p, n);
    conn_mark_dirty(c);
}

/* Queue the close frame f (after the owner's output); no frame follows. */
static void send_close(conn_t *c, const uint8_t *f, size_t n)
{
    ws_t *w = ws_of(c);
    struct evbuffer *out;
    ws_seal(c);
    w->close_sent = true;
    if ((out = conn_wire(c)) && evbuffer_add(out, f, n) == 0)
        conn_mark_dirty(c);
}

/* The client closed, or broke the protocol: answer with a close frame and
 * close (the owner hears how when the linger is over). */
static void finish(conn_t *c)
{
    ws_t *w = ws_of(c);
    uint8_t f[2 + WS_CONTROL_MAX];
    size_t n;
    if (w->stop == WS_EV_CLOSE) {
        n = ws_close_frame(f, w->dec.code == WS_CLOSE_NO_STATUS
                                  ? 0 : w->dec.code, NULL);
        w->end_kind = conn_eof_kind(c);
    } else {
        n = ws_close_frame(f, w->dec.code, w->dec.why);
        w->end_kind = CONN_END_ERROR;
    }
    w->stop = 0;
    w->net_closed = true;
    send_close(c, f, n);
    conn_close(c);
}

static bool frames(conn_t *c, uint8_t *buf, size_t n)
{
    ws_t *w = ws_of(c);
    size_t in = 0, out = 0;
    while (in < n && !w->stop) {
        size_t used, got;
        ws_ev_t ev = ws_decode(&w->dec, buf + in, n - in, buf + out, &used,
                               &got);
        in += used;
        out += got;
        if (ev == WS_EV_PING)
            control(c, WS_OP_PONG, w->dec.ctl, w->dec.ctl_len);
        else if (ev == WS_EV_CLOSE || ev == WS_EV_ERROR)
            w->stop = (uint8_t)ev;
    }
    if (out)
        conn_take_input(c, buf, out);
    if (c->ended || c->freed || c->closing)
        return false;
    if (w->stop && !c->paused) {
        finish(c);
        return false;
    }
    return !c->paused;
}

bool ws_input(conn_t *c, uint8_t *buf, size_t n)
{
    ws_t *w = ws_of(c);
    if (w->open)
        return frames(c, buf, n);
    return upgrade_input(c, buf, n);
}

void ws_resumed(conn_t *c)
{
    ws_t *w = ws_of(c);
    if (w->stop && !c->closing && !c->ended)
        finish(c);
}

/* ---- output ---------------------------------------------------------------- */

struct evbuffer *ws_out_buf(conn_t *c)
{
    ws_t *w = ws_of(c);
    if (!w->open)
        return conn_wire(c);
    if (w->close_sent)
        return NULL;
    if (!w->pending)
        w->pending = evbuffer_new();
    return w->pending;
}

size_t ws_pending_len(const conn_t *c)
{
    const ws_t *w = ws_of((conn_t *)c);
    return w->pending ? evbuffer_get_length(w->pending) : 0;
}

void ws_seal(conn_t *c)
{
    ws_t *w = ws_of(c);
    size_t n = w->pending ? evbuffer_get_length(w->pending) : 0;
    uint8_t hdr[10];
    if (!n) {
        if (w->pending) {
            evbuffer_free(w->pending);
            w->pending = NULL;
        }
        return;
    }
    size_t h = ws_frame_header(hdr, WS_OP_BINARY, n);
    if (!c->out || !evbuffer_get_length(c->out)) {
        /* the usual case: the pending output becomes `out` */
        if (evbuffer_prepend(w->pending, hdr, h) != 0)
            return;
        if (c->out)
            evbuffer_free(c->out);
        c->out = w->pending;
    } else {
        if (evbuffer_add(c->out, hdr, h) != 0 ||
            evbuffer_add_buffer(c->out, w->pending) != 0)
            return;
        evbuffer_free(w->pending);
    }
    w->pending = NULL;
}

void ws_closing(conn_t *c)
{
    ws_t *w = ws_of(c);
    uint8_t f[2 + WS_CONTROL_MAX];
    if (!w->open || w->close_sent)
        return;
    send_close(c, f, ws_close_frame(f, WS_CLOSE_NORMAL, NULL));
}

bool ws_wants_linger(conn_t *c)
{
    ws_t *w = ws_of(c);
    return !(w->net_closed && w->end_kind != CONN_END_ERROR);
}

bool ws_linger_input(conn_t *c, uint8_t *buf, size_t n)
{
    ws_t *w = ws_of(c);
    size_t off = 0;
    if (!w->open || w->dec.over)
        return false; /* a refused upgrade, or after an error: discard */
    while (off < n) {
        size_t used, got;
        ws_ev_t ev = ws_decode(&w->dec, buf + off, n - off, buf, &used,
                               &got);
        off += used;
        if (ev == WS_EV_CLOSE || ev == WS_EV_ERROR)
            return true;
    }
    return false;
}

bool ws_closed_here(conn_t *c, conn_end_t *how, char *why, size_t len)
{
    ws_t *w = ws_of(c);
    if (!w->net_closed)
        return false;
    *how = w->end_kind;
    if (w->end_kind == CONN_END_ERROR)
        snprintf(why, len, "WebSocket: %s (close %u)", w->dec.why,
                 w->dec.code);
    else
        why[0] = '\0';
    return true;
}
