/*
 * listener.c - the plain TCP MQTT listener (bind, port): accepts clients,
 * enforces max_connections, and hands each socket to a new session.
 */
#include "../broker/internal.h"

#include "starling/err.h"
#include "starling/log.h"

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

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    broker_t *b = arg;
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
    conn_t *c = s ? conn_new(b, fd, s) : NULL;
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
    log_debug("connection from %s", peer);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    log_warning("accept failed: %s", evutil_socket_error_to_string(err));
}

int listener_start(broker_t *b)
{
    const sl_conf_t *c = b->conf;
    if (c->port == 0)
        return SL_OK;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    if (strchr(c->bind, ':'))
        snprintf(spec, sizeof(spec), "[%s]:%d", c->bind, c->port);
    else
        snprintf(spec, sizeof(spec), "%s:%d", c->bind, c->port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        log_error("bad listener address '%s'", spec);
        return SL_EINVAL;
    }
    b->listener = evconnlistener_new_bind(
        b->base, on_accept, b,
        LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&ss, sslen);
    if (!b->listener) {
        log_error("cannot listen on %s: %s", spec,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return SL_EIO;
    }
    evconnlistener_set_error_cb(b->listener, on_accept_error);
    evconnlistener_disable(b->listener);
    log_info("listening for MQTT on %s", spec);
    return SL_OK;
}

void listener_enable(broker_t *b)
{
    if (b->listener && !b->stopping)
        evconnlistener_enable(b->listener);
}

void listener_stop(broker_t *b)
{
    if (b->listener) {
        evconnlistener_free(b->listener);
        b->listener = NULL;
    }
}
