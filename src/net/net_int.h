/*
 * net_int.h - what the files of src/net/ share (not a public header).
 */
#ifndef STARLING_NET_INT_H
#define STARLING_NET_INT_H

#include "net.h"

#include <event2/util.h>

struct event;
struct evconnlistener;
typedef struct ssl_ctx_st SSL_CTX;

struct net {
    struct event_base *base;
    const sl_conf_t *conf;
    net_accept_fn accept;
    void *accept_arg;
    struct evconnlistener *tcp;      /* port */
    struct evconnlistener *tls;      /* tls_port */
    struct evconnlistener *ws;       /* ws_port */
    struct evconnlistener *wss;      /* wss_port */
    SSL_CTX *tls_ctx;                /* the TLS and WSS listeners' */
    conn_t *upgrading;               /* WebSocket connections before their
                                      * upgrade (owned by the net) */
    conn_t *dirty;                   /* connections with new output */
    struct event *flush;             /* writes them at the end of the
                                      * loop iteration */
    struct proxy_wait *proxy_waits;  /* sockets reading a PROXY header */
    net_stats_t stats;
};

/* conn.c */
conn_t *conn_new_plain(net_t *n, evutil_socket_t fd);
/* NULL when out of memory (the fd is then not closed). */
conn_t *conn_new_tls(net_t *n, evutil_socket_t fd, SSL_CTX *ctx);
/* A WebSocket connection, over TLS when ctx is set; NULL as above. */
conn_t *conn_new_ws(net_t *n, evutil_socket_t fd, SSL_CTX *ctx);
/* Write every connection on the flush list. */
void conn_flush_list(net_t *n);

/* net.c */
/* Make sure the flush event runs at the end of this loop iteration. */
void net_flush_soon(net_t *n);

#endif
