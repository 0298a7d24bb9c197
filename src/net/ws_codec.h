/*
 * ws_codec.h - the sans-I/O part of the WebSocket transport (RFC 6455):
 * the HTTP/1.1 upgrade request and its answer, the frame decoder, server
 * frame headers, X-Forwarded-For. No sockets, no libevent, no logging
 * (unit-tested in tests/unit/test_ws.c and fuzzed by tests/fuzz/fuzz_ws.c);
 * ws.c drives it for a connection.
 */
#ifndef STARLING_NET_WS_CODEC_H
#define STARLING_NET_WS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest upgrade request head (request line and headers) accepted. */
#define WS_REQUEST_MAX 8192
/* Room for any answer ws_response() writes. */
#define WS_RESPONSE_MAX 512
/* Longest frame header: 2 + 8 (length) + 4 (mask). */
#define WS_HEADER_MAX 14
/* Largest control frame payload. */
#define WS_CONTROL_MAX 125

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes this side sends. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_PROTOCOL = 1002,     /* unmasked frame, bad opcode or flags */
    WS_CLOSE_UNSUPPORTED = 1003,  /* a text frame */
    WS_CLOSE_NO_STATUS = 1005,    /* (received only: a close without code) */
    WS_CLOSE_BAD_DATA = 1007,     /* a close reason that is not UTF-8 */
    WS_CLOSE_TOO_BIG = 1009,      /* a frame over the size limit */
};

/* ---- the upgrade request ---------------------------------------------- */

/*
 * Where the request head ends in the bytes received so far: its length
 * (through the blank line) once complete, 0 while more is needed. When the
 * bytes cannot be the start of an HTTP request (a control byte: plain MQTT
 * or TLS on the WebSocket port) or the head passes WS_REQUEST_MAX without
 * ending, 0 is returned and *refuse is the HTTP status to answer (400, 431).
 */
size_t ws_request_end(const uint8_t *buf, size_t len, int *refuse);

typedef struct ws_upgrade_conf {
    const char *path;             /* ws_path: "/mqtt" */
    const char *allowed_origins;  /* comma list; NULL or "" = any */
} ws_upgrade_conf_t;

typedef struct ws_request {
    int status;                   /* 101, or the refusal's HTTP status */
    const char *why;              /* the refusal, for the log and body */
    const char *protocol;         /* "mqtt" or "mqttv3.1" (static) */
    char accept[29];              /* Sec-WebSocket-Accept */
    const char *forwarded;        /* the last X-Forwarded-For value (a view
                                   * into the request) or NULL */
    size_t forwarded_len;
} ws_request_t;

/*
 * Check a complete request head (ws_request_end's length) against conf:
 * GET on conf->path (404 for another path; the query is ignored) over
 * HTTP/1.1, Upgrade: websocket and Connection: upgrade (400 without), a
 * Host, a Sec-WebSocket-Key of 16 base64 bytes, Sec-WebSocket-Version 13
 * (426 for another, 400 without), an Origin in allowed_origins when the
 * request has one (403), and mqtt or mqttv3.1 among the offered
 * subprotocols (400 for neither). r->status is 101 when all hold.
 */
void ws_parse_request(const char *req, size_t len,
                      const ws_upgrade_conf_t *conf, ws_request_t *r);

/* The answer to r: 101 Switching Protocols with Sec-WebSocket-Accept and
 * the subprotocol, or the refusal (Connection: close, the reason as a
 * text/plain body). `status` alone (r NULL) answers a request that could
 * not be parsed. Returns its length (out holds WS_RESPONSE_MAX). */
size_t ws_response(const ws_request_t *r, int status, char *out,
                   size_t cap);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + the RFC's GUID)). */
void ws_accept_key(const char *key, size_t len, char out[29]);

/* ---- addresses ---------------------------------------------------------- */

/* Is `addr` (an IPv4 or IPv6 address, maybe "[v6]") in `list` (comma
 * separated addresses and CIDR ranges; an IPv4 entry also matches the
 * IPv4-mapped IPv6 form)? */
bool ws_addr_in_list(const char *addr, const char *list);

/*
 * The client address of an X-Forwarded-For value received from a trusted
 * proxy: the right-most entry that is not itself in `trusted` (or the
 * left-most when all are), without port or brackets, written in canonical
 * form to out. False when that entry is not an IP address.
 */
bool ws_forwarded_client(const char *xff, size_t len, const char *trusted,
                         char *out, size_t cap);

/* ---- frames ------------------------------------------------------------- */

typedef enum ws_ev {
    WS_EV_NONE = 0,   /* every byte used: data only (maybe none) */
    WS_EV_PING,       /* a ping: its payload is d->ctl (answer a pong) */
    WS_EV_PONG,       /* a pong (ignored) */
    WS_EV_CLOSE,      /* the client's close: d->code (1005 = none given) */
    WS_EV_ERROR,      /* a protocol error: d->code is the close code to
                       * send, d->why says what */
} ws_ev_t;

typedef struct ws_dec {
    uint64_t left;               /* payload bytes still to come */
    uint64_t max_frame;          /* largest payload accepted */
    const char *why;             /* WS_EV_ERROR: what was wrong */
    uint16_t code;               /* WS_EV_CLOSE / WS_EV_ERROR */
    uint8_t hdr[WS_HEADER_MAX];  /* the header being collected */
    uint8_t hlen;                /* header bytes collected */
    uint8_t op;                  /* the current frame's opcode */
    uint8_t mpos;                /* payload bytes unmasked, mod 4 */
    uint8_t ctl_len;             /* control payload collected */
    bool in_frame;               /* header done, payload follows */
    bool fin;                    /* the current frame ends its message */
    bool in_msg;                 /* a fragmented binary message is open */
    bool over;                   /* a close or an error was returned */
    uint8_t mask[4];
    uint8_t ctl[WS_CONTROL_MAX]; /* the control frame's payload */
} ws_dec_t;

void ws_dec_init(ws_dec_t *d, uint64_t max_frame);

/*
 * Decode n bytes of client frames from src. The unmasked payload of binary
 * and continuation frames is written to dst, in order (dst may be src, or
 * lie before it: the decoder writes no further than it has read), and
 * *out says how much. Returns WS_EV_NONE when all n bytes are used, or
 * the event that stopped it after *used bytes (a ping or pong: call again
 * with the rest; a close or an error ends the stream: every later call
 * returns the same event and uses nothing).
 */
ws_ev_t ws_decode(ws_dec_t *d, const uint8_t *src, size_t n, uint8_t *dst,
                  size_t *used, size_t *out);

/* The header of an unmasked server frame with FIN set and n payload
 * bytes; returns its length (2, 4 or 10). */
size_t ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t n);

/* A whole close frame: code (0 = none, then no reason) and a reason (may
 * be NULL; cut to fit a control frame). Returns its length. */
size_t ws_close_frame(uint8_t out[2 + WS_CONTROL_MAX], uint16_t code,
                      const char *reason);

/* UTF-8 as RFC 3629 defines it (U+0000 allowed). */
bool ws_utf8_valid(const uint8_t *p, size_t n);

#endif
