/*
 * listener.c - the MQTT listeners: plain TCP (bind, port) and TLS (bind,
 * tls_port). Each accepts clients, enforces max_connections (one count for
 * both) and hands each socket to a new session; a TLS client's connection
 * is the TLS variant of conn_t, on the listener's SSL_CTX (built once at
 * start: a missing or unreadable certificate or key stops the start).
 */
#include "../broker/internal.h"
#include "../broker/session.h"

#include "starling/err.h"
#include "starling/log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
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

/* A new client on either listener; ctx is the TLS listener's or NULL. */
static void accept_client(broker_t *b, evutil_socket_t fd,
                          struct sockaddr *sa, SSL_CTX *ctx)
{
    char peer[64];
    peer_name(sa, peer, sizeof(peer));
    if (b->stopping ||
        (b->conf->max_connections && b->n_conns >= (uint32_t)b->conf->max_connections)) {
        log_warning("connection from %s refused: max_connections (%d) reached",
                    peer, b->conf->max_connections);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sess_t *s = sess_new(b, peer);
    conn_t *c = !s ? NULL : ctx ? conn_new_tls(b, fd, s, ctx)
                                : conn_new(b, fd, s);
    if (!c) {
        sess_unref(&s);
        evutil_closesocket(fd);
        return;
    }
    s->conn = c;
    s->next_all = b->all;
    if (b->all)
        b->all->prev_all = s;
    b->all = s;
    b->n_conns++;
    conn_start(c, b->conf->connect_timeout);
    log_debug("%s connection from %s", ctx ? "TLS" : "TCP", peer);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    accept_client(arg, fd, sa, NULL);
}

static void on_accept_tls(struct evconnlistener *l, evutil_socket_t fd,
                          struct sockaddr *sa, int salen, void *arg)
{
    broker_t *b = arg;
    accept_client(b, fd, sa, b->tls_ctx);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    log_warning("accept failed: %s", evutil_socket_error_to_string(err));
}

/* Bind bind:port (accepting starts with listener_enable). */
static int bind_one(broker_t *b, int port, evconnlistener_cb cb,
                    const char *what, struct evconnlistener **out)
{
    const sl_conf_t *c = b->conf;
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
        b->base, cb, b,
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

int listener_start(broker_t *b)
{
    const sl_conf_t *c = b->conf;
    int rc;
    if (c->tls_port) {
        char err[512];
        rc = tls_ctx_new(c, &b->tls_ctx, err, sizeof(err));
        if (rc != SL_OK) {
            log_error("%s", err);
            return rc;
        }
    }
    if (c->port) {
        rc = bind_one(b, c->port, on_accept, "MQTT", &b->listener);
        if (rc != SL_OK)
            return rc;
    }
    if (c->tls_port)
        return bind_one(b, c->tls_port, on_accept_tls, "MQTT over TLS",
                        &b->tls_listener);
    return SL_OK;
}

void listener_enable(broker_t *b)
{
    if (b->stopping)
        return;
    if (b->listener)
        evconnlistener_enable(b->listener);
    if (b->tls_listener)
        evconnlistener_enable(b->tls_listener);
}

/* Connections already accepted keep their reference to the SSL_CTX. */
void listener_stop(broker_t *b)
{
    if (b->listener) {
        evconnlistener_free(b->listener);
        b->listener = NULL;
    }
    if (b->tls_listener) {
        evconnlistener_free(b->tls_listener);
        b->tls_listener = NULL;
    }
    if (b->tls_ctx) {
        tls_ctx_free(b->tls_ctx);
        b->tls_ctx = NULL;
    }
}
