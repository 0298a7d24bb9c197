/*
 * conn_int.h - a connection's struct and its variants, and the calls of
 * conn.c that the WebSocket layer (ws.c) uses (private to src/net/).
 *
 * One conn_t per client; the variants extend it, so a plain TCP client
 * pays for none of them:
 *   struct conn   TCP
 *   tls_conn_t    TLS: + the SSL*              (tls_port)
 *   ws_conn_t     WebSocket: + ws_t            (ws_port)
 *   wss_conn_t    WebSocket over TLS: both     (wss_port)
 */
#ifndef STARLING_NET_CONN_INT_H
#define STARLING_NET_CONN_INT_H

#include "net_int.h"
#include "ws.h"

#include <event2/event_struct.h>

typedef struct ssl_st SSL;

struct conn {
    net_t *net;
    const conn_ops_t *ops;
    void *owner;
    const char *peer;            /* the owner's string, for logs */
    evutil_socket_t fd;
    struct event ev;             /* EV_READ (+EV_WRITE while blocked) */
    struct evbuffer *in;         /* input kept; NULL when empty */
    struct evbuffer *out;        /* pending output (for WebSocket: whole
                                  * frames); NULL when empty */
    struct conn *next_dirty;
    struct timeval timeout;
    uint16_t busy;               /* nesting of the connection's own calls */
    bool has_timeout;
    bool reading;
    bool paused;                 /* the owner wants no input for now */
    bool want_write;
    bool dirty;
    bool closing;                /* close once `out` is written */
    bool lingering;              /* `out` written: input discarded until
                                  * EOF or close_linger ms */
    bool ended;                  /* `closed` was called */
    bool freed;                  /* conn_free() while busy */
    bool added;
    bool tls;                    /* this is a tls_conn_t (or wss_conn_t) */
    bool ws;                     /* this is a ws_conn_t or wss_conn_t */
};

/* The TLS variant (allocated only for clients of the TLS listeners). */
typedef struct tls_conn {
    struct conn c;
    SSL *ssl;
    bool ready;                  /* handshake done */
    bool failed;                 /* fatal TLS error: no close_notify */
    bool read_wants_write;       /* SSL_read waits for EV_WRITE */
    bool write_wants_read;       /* SSL_write waits for EV_READ */
} tls_conn_t;

typedef struct ws_conn {
    struct conn c;
    ws_t ws;
} ws_conn_t;

typedef struct wss_conn {
    tls_conn_t t;
    ws_t ws;
} wss_conn_t;

static inline tls_conn_t *tls_of(conn_t *c)
{
    return c->tls ? (tls_conn_t *)c : NULL;
}

static inline ws_t *ws_of(conn_t *c)
{
    if (!c->ws)
        return NULL;
    return c->tls ? &((wss_conn_t *)c)->ws : &((ws_conn_t *)c)->ws;
}

/* Tell the owner, once, that the connection is over. */
void conn_end(conn_t *c, conn_end_t how, const char *why);
/* Put the connection on the flush list (its output leaves at the end of
 * the loop iteration). */
void conn_mark_dirty(conn_t *c);
/* `out`, made when missing (NULL when out of memory). */
struct evbuffer *conn_wire(conn_t *c);
/* Hand n bytes of the owner's stream to it, keeping what it did not use.
 * Returns false when the connection ended, closes or paused. */
bool conn_take_input(conn_t *c, const uint8_t *buf, size_t n);
/* EOF, or EOF_PARTIAL when the owner holds part of a packet. */
conn_end_t conn_eof_kind(const conn_t *c);

#endif
