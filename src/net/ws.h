/*
 * ws.h - the WebSocket transport (private to src/net/): what a WebSocket
 * connection adds to a conn_t, and the calls conn.c and net.c make into
 * ws.c. The pure part (upgrade request, frame codec) is ws_codec.h.
 *
 * Life of a WebSocket connection:
 *   accept      net.c makes a conn_new_ws() (over TLS for wss_port) and
 *               ws_begin() owns it: the net's `upgrading` list, the
 *               connect_timeout deadline (TLS handshake and upgrade)
 *   upgrade     the request head collects in `in`; a refusal is answered
 *               (400, 403, 404, 426...) and the connection closes; a good
 *               one is answered 101, the peer becomes the forwarded client
 *               when the TCP peer is a trusted proxy, and only then does
 *               the net's accept callback see the connection
 *   open        frames in: data payloads are unmasked in place and handed
 *               to the owner as one byte stream (exactly as TCP); pings
 *               answered. Bytes out: the owner's output collects in
 *               `pending` and leaves as one binary frame per write
 *   close       a client close or a protocol error is acted on once the
 *               owner has taken the data before it (as TCP's EOF): a close
 *               frame, then `closed` (EOF or ERROR) once it is written
 *               (after a protocol error: once the linger is over too).
 *               conn_close() sends a close frame (1000) after the output;
 *               the linger ends early with the client's close frame.
 */
#ifndef STARLING_NET_WS_H
#define STARLING_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "ws_codec.h"

struct evbuffer;

typedef struct ws {
    ws_dec_t dec;                /* frames in */
    struct evbuffer *pending;    /* the owner's output, not yet framed;
                                  * NULL when empty */
    conn_t *prev, *next;         /* the net's `upgrading` list */
    conn_end_t end_kind;         /* how a close started here ends */
    uint8_t stop;                /* WS_EV_CLOSE / WS_EV_ERROR met, acted on
                                  * when the owner took the data before */
    bool open;                   /* upgraded */
    bool listed;                 /* on the `upgrading` list */
    bool close_sent;             /* no frame may follow */
    bool net_closed;             /* the close was started here (a client
                                  * close or a protocol error) */
    char peer[64];               /* "address:port" (forwarded when the TCP
                                  * peer is a trusted proxy) */
} ws_t;

/* net.c: a new WebSocket connection from `peer`, owned by the net until
 * its upgrade is done. */
void ws_begin(conn_t *c, const char *peer);

/* conn.c: n bytes read (the TLS layer's plaintext for wss). Returns false
 * when the connection ended, closes or paused (as conn_take_input). buf is
 * reused: data payloads are unmasked into it. */
bool ws_input(conn_t *c, uint8_t *buf, size_t n);
/* conn_resume() fed the kept input: act on a close seen meanwhile. */
void ws_resumed(conn_t *c);
/* Where the owner's output goes (NULL once the close frame is queued). */
struct evbuffer *ws_out_buf(conn_t *c);
size_t ws_pending_len(const conn_t *c);
/* Frame the owner's pending output (one binary frame), before a write. */
void ws_seal(conn_t *c);
/* conn_close(): the close frame after the output. */
void ws_closing(conn_t *c);
/* The close was started by the transport: how it ends, for `closed`. */
bool ws_closed_here(conn_t *c, conn_end_t *how, char *why, size_t len);
/* Does a closing connection linger? Not after the client's own close
 * (it sends nothing more and waits for the server to close). */
bool ws_wants_linger(conn_t *c);
/* Bytes read while lingering after our close frame: true when they hold
 * the client's close frame (or anything that breaks the protocol). */
bool ws_linger_input(conn_t *c, uint8_t *buf, size_t n);
/* conn_free(): drop the pending output, leave the upgrading list. */
void ws_release(conn_t *c);

#endif
