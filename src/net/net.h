/*
 * net.h - the transport: listeners that accept clients, and connections
 * that carry bytes to and from an owner (the MQTT session) through a small
 * ops table. This module knows nothing of MQTT or of sessions; its owner
 * knows nothing of sockets, TLS or buffers.
 *
 *   net_new()          what every connection of a node shares: the loop,
 *                      the flush list (one write per client per loop
 *                      iteration), the listeners and the TLS context
 *   net_listen()       bind the TCP, TLS, WebSocket and secure WebSocket
 *                      listeners (accepting starts with net_enable)
 *   accept callback    a new conn_t: the owner attaches to it with
 *                      conn_attach() and conn_start(), or frees it (a
 *                      WebSocket connection comes after its HTTP upgrade)
 *   conn_ops_t         bytes in, closed, timed out: the owner's callbacks
 *   conn_write*()      output, leaves at the end of the loop iteration
 *   conn_pause()       stop handing input (kept, bounded by the socket)
 *   conn_resume()      hand what was kept, then read again
 *   conn_close()       close once the output is written (then linger)
 *
 * TCP, TLS, WebSocket and WebSocket over TLS are implementations behind
 * the same conn_t: the owner reads and writes the MQTT byte stream.
 */
#ifndef STARLING_NET_H
#define STARLING_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "starling/conf.h"

struct event_base;

typedef struct net net_t;
typedef struct conn conn_t;

/* How a connection ended (the `closed` callback). */
typedef enum conn_end {
    CONN_END_EOF,          /* the peer closed */
    CONN_END_EOF_PARTIAL,  /* the peer closed in the middle of its input */
    CONN_END_ERROR,        /* socket or TLS error (why says which) */
    CONN_END_DONE,         /* conn_close(): output written, linger over */
    CONN_END_STALLED,      /* conn_close(): the peer never read its output */
    CONN_END_HANDSHAKE,    /* the TLS handshake failed (logged, counted) */
} conn_end_t;

typedef struct conn_ops {
    /* n bytes arrived: returns how many the owner used; the rest is kept
     * and handed again, with what follows, later. The owner calls
     * conn_pause() from here to get no more input until conn_resume(). */
    size_t (*input)(void *owner, const uint8_t *p, size_t n);
    /* The connection is over; why (may be NULL) tells more. The owner
     * calls conn_free() (here or later) and writes to it no more. */
    void (*closed)(void *owner, conn_end_t end, const char *why);
    /* The deadline of conn_set_timeout() passed without input. */
    void (*timeout)(void *owner);
} conn_ops_t;

typedef struct net_stats {
    uint64_t tls_handshake_errors;   /* TLS connections that never got up */
    uint64_t proxy_errors;           /* connections without a valid PROXY
                                      * header where one was expected */
} net_stats_t;

/* A new connection from a listener: attach (conn_attach + conn_start) or
 * refuse (conn_free). `peer` is "address:port", valid during the call.
 * A WebSocket connection is handed over once its upgrade is answered (101);
 * when its TCP peer is in ws_trusted_proxies, `peer` is then the client
 * address the proxy forwards (X-Forwarded-For) with the TCP peer's port. */
typedef void (*net_accept_fn)(void *arg, conn_t *c, const char *peer);

/* conf is read when used (close_linger is reloadable) and must outlive
 * the net. NULL when out of memory. */
net_t *net_new(struct event_base *base, const sl_conf_t *conf,
               net_accept_fn accept, void *arg);
/* Stop the listeners; connections are freed by their owners first. */
void net_free(net_t *n);
/* Bind `port` and, when set, `tls_port`, `ws_port` and `wss_port` on
 * `bind` (SL_EIO when a port is taken; SL_EINVAL for an unusable
 * certificate or key). */
int net_listen(net_t *n);
/* Accept clients from now on. */
void net_enable(net_t *n);
/* Close the listeners (accepted connections keep working; WebSocket
 * connections still in their upgrade are closed). */
void net_unlisten(net_t *n);
const net_stats_t *net_stats(const net_t *n);

/* Attach an owner to an accepted connection; `peer` (the owner's copy of
 * the address) is used in the connection's own log lines. */
void conn_attach(conn_t *c, const conn_ops_t *ops, void *owner,
                 const char *peer);
/* Start reading, with `first_timeout_ms` as the first deadline (the TLS
 * handshake and the first packet). */
void conn_start(conn_t *c, uint64_t first_timeout_ms);
/* "tcp", "tls", "ws" or "wss" (the auth endpoint's `listener`). */
const char *conn_kind(const conn_t *c);
/* Deadline for input in ms (keepalive); 0 = none. */
void conn_set_timeout(conn_t *c, uint64_t ms);
void conn_write(conn_t *c, const void *p, size_t n);
/* Add a shared buffer without copying; cleanup(p, n, arg) once written
 * (or at once, when it cannot be added). */
void conn_write_ref(conn_t *c, const void *p, size_t n,
                    void (*cleanup)(const void *, size_t, void *), void *arg);
size_t conn_out_len(const conn_t *c);
void conn_pause(conn_t *c);
void conn_resume(conn_t *c);
/* Close once the output is written (WebSocket: then a close frame, 1000):
 * the write side is shut and input is discarded for close_linger ms (the
 * peer reads why, not a reset), then `closed` with CONN_END_DONE. */
void conn_close(conn_t *c);
/* Close the socket and free (deferred while the connection is inside one
 * of its own calls). The owner drops its pointer. */
void conn_free(conn_t *c);

#endif
