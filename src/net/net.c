/*
 * net.c - what the connections of one node share: the listeners (plain
 * TCP on bind:port, TLS on bind:tls_port, WebSocket on bind:ws_port and
 * WebSocket over TLS on bind:wss_port, each handing every accepted socket
 * to the accept callback as a conn_t; a TLS client's connection is the
 * TLS variant, on the SSL_CTX built once at start for tls_port and
 * wss_port: a missing or unreadable certificate or key stops the start; a
 * WebSocket client's is the WebSocket variant, which the net keeps until
 * its HTTP upgrade is done), and the flush list written once at the end of
 * each loop iteration.
 */
#include "conn_int.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/msg.h"
#include "proxy.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void peer_name(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%d", host, port);
    } else {
        snprintf(out, len, "unknown");
    }
}

/* A new client on any listener; ctx is the TLS context (tls_port,
 * wss_port) or NULL; ws for the WebSocket listeners, whose connections
 * reach the accept callback after their upgrade (ws.c). */
/* A client socket ready for its transport (after its PROXY header, when
 * the listener expects one): the TCP, TLS or WebSocket variant. */
static void attach_client(net_t *n, evutil_socket_t fd, const char *peer,
                          SSL_CTX *ctx, bool ws)
{
    static const char *const kinds[2][2] = {{"TCP", "TLS"},
                                            {"WebSocket",
                                             "secure WebSocket"}};
    conn_t *c = ws    ? conn_new_ws(n, fd, ctx)
                : ctx ? conn_new_tls(n, fd, ctx)
                      : conn_new_plain(n, fd);
    if (!c) {
        log_warning("connection from %s refused: out of memory", peer);
        evutil_closesocket(fd);
        return;
    }
    log_debug("%s connection from %s", kinds[ws][ctx != NULL], peer);
    if (ws)
        ws_begin(c, peer);
    else
        n->accept(n->accept_arg, c, peer);
}

/* ---- the PROXY protocol header ----------------------------------------- */

/* A socket whose PROXY header has not fully arrived. The header is read
 * with MSG_PEEK and only its own bytes are taken, so what follows (MQTT,
 * a TLS ClientHello, an HTTP upgrade) stays in the socket for the
 * transport. A load balancer sends the header in its first write, so an
 * incomplete one is looked at again every few milliseconds rather than on
 * every readable event (the peeked bytes keep the socket readable). */
typedef struct proxy_wait {
    struct proxy_wait *prev, *next;
    net_t *n;
    evutil_socket_t fd;
    SSL_CTX *ctx;
    bool ws;
    uint64_t deadline;           /* sl_mono_ms(): connect_timeout */
    struct event *ev;
    char peer[64];
} proxy_wait_t;

#define PROXY_RETRY_MS 5

static void proxy_wait_free(proxy_wait_t *w, bool close_fd)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->n->proxy_waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    event_free(w->ev);
    if (close_fd)
        evutil_closesocket(w->fd);
    free(w);
}

static void proxy_refuse(proxy_wait_t *w, const char *why)
{
    w->n->stats.proxy_errors++;
    log_info("connection from %s: %s, closing", w->peer, why);
    proxy_wait_free(w, true);
}

static void on_proxy(evutil_socket_t fd, short what, void *arg)
{
    proxy_wait_t *w = arg;
    uint8_t buf[PROXY_MAX_HEADER];
    ssize_t k = recv(w->fd, buf, sizeof(buf), MSG_PEEK);
    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != EINTR)) {
        proxy_refuse(w, "closed before its PROXY header");
        return;
    }
    proxy_info_t info;
    size_t used = 0;
    int rc = k > 0 ? proxy_parse(buf, (size_t)k, &info, &used) : SL_AGAIN;
    if (rc == SL_EMALFORMED) {
        proxy_refuse(w, "invalid PROXY header");
        return;
    }
    if (rc == SL_AGAIN) {
        if (sl_mono_ms() >= w->deadline) {
            proxy_refuse(w, "no PROXY header within connect_timeout");
            return;
        }
        struct timeval tv = {0, PROXY_RETRY_MS * 1000};
        event_del(w->ev);
        event_assign(w->ev, w->n->base, w->fd, k > 0 ? 0 : EV_READ, on_proxy,
                     w);
        event_add(w->ev, &tv);
        return;
    }
    /* Take exactly the header; it is in the socket, so this cannot block. */
    if (recv(w->fd, buf, used, 0) != (ssize_t)used) {
        proxy_refuse(w, "PROXY header could not be read");
        return;
    }
    char peer[64];
    if (info.has_addr) {
        proxy_peer(&info, peer, sizeof(peer));
        log_debug("connection from %s: PROXY v%d header, client %s", w->peer,
                  info.version, peer);
    } else {
        snprintf(peer, sizeof(peer), "%s", w->peer);
    }
    net_t *n = w->n;
    SSL_CTX *ctx = w->ctx;
    bool ws = w->ws;
    proxy_wait_free(w, false);
    attach_client(n, fd, peer, ctx, ws);
}

/* Does the listener of this kind ("tcp", "tls", "ws", "wss") expect a
 * PROXY header (the proxy_protocol key)? */
static bool expects_proxy(const net_t *n, const char *kind)
{
    const char *list = n->conf->proxy_protocol;
    size_t klen = strlen(kind);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len == klen && !memcmp(p, kind, klen))
            return true;
        p = end ? end + 1 : p + len;
    }
    return false;
}

/* A new client on any listener; ctx is the TLS context (tls_port,
 * wss_port) or NULL; ws for the WebSocket listeners, whose connections
 * reach the accept callback after their upgrade (ws.c). */
static void accept_client(net_t *n, evutil_socket_t fd, struct sockaddr *sa,
                          SSL_CTX *ctx, bool ws)
{
    static const char *const names[2][2] = {{"tcp", "tls"}, {"ws", "wss"}};
    char peer[64];
    peer_name(sa, peer, sizeof(peer));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!expects_proxy(n, names[ws][ctx != NULL])) {
        attach_client(n, fd, peer, ctx, ws);
        return;
    }
    proxy_wait_t *w = calloc(1, sizeof(*w));
    if (w)
        w->ev = event_new(n->base, fd, EV_READ, on_proxy, w);
    if (!w || !w->ev) {
        free(w);
        log_warning("connection from %s refused: out of memory", peer);
        evutil_closesocket(fd);
        return;
    }
    w->n = n;
    w->fd = fd;
    w->ctx = ctx;
    w->ws = ws;
    w->deadline = sl_mono_ms() + (uint64_t)n->conf->connect_timeout * 1000u;
    snprintf(w->peer, sizeof(w->peer), "%s", peer);
    w->next = n->proxy_waits;
    if (w->next)
        w->next->prev = w;
    n->proxy_waits = w;
    struct timeval tv = {n->conf->connect_timeout, 0};
    event_add(w->ev, &tv);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    accept_client(arg, fd, sa, NULL, false);
}

static void on_accept_tls(struct evconnlistener *l, evutil_socket_t fd,
                          struct sockaddr *sa, int salen, void *arg)
{
    net_t *n = arg;
    accept_client(n, fd, sa, n->tls_ctx, false);
}

static void on_accept_ws(struct evconnlistener *l, evutil_socket_t fd,
                         struct sockaddr *sa, int salen, void *arg)
{
    accept_client(arg, fd, sa, NULL, true);
}

static void on_accept_wss(struct evconnlistener *l, evutil_socket_t fd,
                          struct sockaddr *sa, int salen, void *arg)
{
    net_t *n = arg;
    accept_client(n, fd, sa, n->tls_ctx, true);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    log_warning("accept failed: %s", evutil_socket_error_to_string(err));
}

/* Bind bind:port (accepting starts with net_enable). */
static int bind_one(net_t *n, int port, evconnlistener_cb cb,
                    const char *what, struct evconnlistener **out)
{
    const sl_conf_t *c = n->conf;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    if (strchr(c->bind, ':'))
        snprintf(spec, sizeof(spec), "[%s]:%d", c->bind, port);
    else
        snprintf(spec, sizeof(spec), "%s:%d", c->bind, port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        log_error("bad listener address '%s'", spec);
        return SL_EINVAL;
    }
    *out = evconnlistener_new_bind(
        n->base, cb, n,
        LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&ss, sslen);
    if (!*out) {
        log_error("cannot listen on %s: %s", spec,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return SL_EIO;
    }
    evconnlistener_set_error_cb(*out, on_accept_error);
    evconnlistener_disable(*out);
    log_info("listening for %s on %s", what, spec);
    return SL_OK;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_flush_list(arg);
}

void net_flush_soon(net_t *n)
{
    event_active(n->flush, EV_WRITE, 0);
}

net_t *net_new(struct event_base *base, const sl_conf_t *conf,
               net_accept_fn accept, void *arg)
{
    net_t *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    *n = (net_t){.base = base, .conf = conf, .accept = accept,
                 .accept_arg = arg};
    n->flush = event_new(base, -1, 0, on_flush, n);
    if (!n->flush) {
        free(n);
        return NULL;
    }
    return n;
}

int net_listen(net_t *n)
{
    const sl_conf_t *c = n->conf;
    int rc;
    if (c->tls_port || c->wss_port) {
        char err[512];
        rc = tls_ctx_new(c, &n->tls_ctx, err, sizeof(err));
        if (rc != SL_OK) {
            log_error("%s", err);
            return rc;
        }
    }
    if (c->port) {
        rc = bind_one(n, c->port, on_accept, "MQTT", &n->tcp);
        if (rc != SL_OK)
            return rc;
    }
    if (c->tls_port) {
        rc = bind_one(n, c->tls_port, on_accept_tls, "MQTT over TLS",
                      &n->tls);
        if (rc != SL_OK)
            return rc;
    }
    if (c->ws_port) {
        rc = bind_one(n, c->ws_port, on_accept_ws, "MQTT over WebSocket",
                      &n->ws);
        if (rc != SL_OK)
            return rc;
    }
    if (c->wss_port)
        return bind_one(n, c->wss_port, on_accept_wss,
                        "MQTT over secure WebSocket", &n->wss);
    return SL_OK;
}

void net_enable(net_t *n)
{
    struct evconnlistener *all[] = {n->tcp, n->tls, n->ws, n->wss};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i])
            evconnlistener_enable(all[i]);
}

/* Connections already accepted keep their reference to the SSL_CTX; those
 * still in their WebSocket upgrade are closed. */
void net_unlisten(net_t *n)
{
    struct evconnlistener **all[] = {&n->tcp, &n->tls, &n->ws, &n->wss};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (*all[i]) {
            evconnlistener_free(*all[i]);
            *all[i] = NULL;
        }
    }
    while (n->upgrading)
        conn_free(n->upgrading);
    if (n->tls_ctx) {
        tls_ctx_free(n->tls_ctx);
        n->tls_ctx = NULL;
    }
}

const net_stats_t *net_stats(const net_t *n)
{
    return &n->stats;
}

void net_free(net_t *n)
{
    if (!n)
        return;
    net_unlisten(n);
    while (n->proxy_waits)
        proxy_wait_free(n->proxy_waits, true);
    /* Connections were freed by their owners: nothing is dirty now. */
    event_free(n->flush);
    free(n);
}
