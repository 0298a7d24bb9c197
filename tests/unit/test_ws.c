/*
 * test_ws.c - the sans-I/O WebSocket part (src/net/ws_codec.c): the
 * upgrade request, its answers, X-Forwarded-For, the frame decoder and the
 * server frames.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/ws_codec.h"

/* ---- helpers -------------------------------------------------------------- */

static const ws_upgrade_conf_t conf = {.path = "/mqtt"};

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static const char *const good_headers =
    "Host: localhost:8083\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: " KEY "\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n";

static ws_request_t parse_with(const ws_upgrade_conf_t *c, const char *req)
{
    ws_request_t r;
    int refuse = -1;
    size_t n = ws_request_end((const uint8_t *)req, strlen(req), &refuse);
    cr_assert_eq(refuse, 0, "refused %d", refuse);
    cr_assert_eq(n, strlen(req), "head of %zu bytes, request %zu", n,
                 strlen(req));
    ws_parse_request(req, n, c, &r);
    return r;
}

static ws_request_t parse(const char *req)
{
    return parse_with(&conf, req);
}

/* A request: the request line, the good headers with `drop` (a header
 * name) left out, then `extra` lines. */
static char *request(const char *line, const char *drop, const char *extra)
{
    static char buf[4096];
    char *p = buf;
    p += sprintf(p, "%s\r\n", line);
    const char *h = good_headers;
    while (*h) {
        const char *eol = strstr(h, "\r\n") + 2;
        if (!drop || strncasecmp(h, drop, strlen(drop)) != 0)
            p += sprintf(p, "%.*s", (int)(eol - h), h);
        h = eol;
    }
    p += sprintf(p, "%s\r\n", extra ? extra : "");
    return buf;
}

/* A masked client frame. */
static size_t frame(uint8_t *out, bool fin, uint8_t op, const void *payload,
                    size_t n, const uint8_t mask[4])
{
    size_t at = 0;
    out[at++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        out[at++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        out[at++] = 0x80 | 126;
        out[at++] = (uint8_t)(n >> 8);
        out[at++] = (uint8_t)n;
    } else {
        out[at++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[at++] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    memcpy(out + at, mask, 4);
    at += 4;
    for (size_t i = 0; i < n; i++)
        out[at + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    return at + n;
}

static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Decode all of buf in one go (in place), stopping at close or error;
 * pings and pongs are counted. */
typedef struct result {
    uint8_t data[300000];
    size_t len;
    int pings, pongs;
    ws_ev_t end;     /* WS_EV_NONE, WS_EV_CLOSE or WS_EV_ERROR */
    uint16_t code;
} result_t;

static void decode_chunks(ws_dec_t *d, uint8_t *buf, size_t n, size_t chunk,
                          result_t *r)
{
    memset(r, 0, sizeof(*r));
    size_t off = 0;
    while (off < n) {
        size_t len = n - off < chunk ? n - off : chunk;
        uint8_t *p = buf + off;
        size_t done = 0;
        while (done < len) {
            size_t used, out;
            ws_ev_t ev = ws_decode(d, p + done, len - done, p + done, &used,
                                   &out);
            cr_assert_leq(out, used);
            memcpy(r->data + r->len, p + done, out);
            r->len += out;
            done += used;
            if (ev == WS_EV_PING)
                r->pings++;
            else if (ev == WS_EV_PONG)
                r->pongs++;
            else if (ev != WS_EV_NONE) {
                r->end = ev;
                r->code = d->code;
                return;
            }
        }
        off += len;
    }
}

static void decode(uint8_t *buf, size_t n, result_t *r)
{
    ws_dec_t d;
    ws_dec_init(&d, 1 << 20);
    decode_chunks(&d, buf, n, n, r);
}

static result_t res;
static uint8_t wire[300100], copy[300100];

/* ---- the request head ---------------------------------------------------- */

Test(ws, request_end)
{
    int refuse;
    const char *req = "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\nextra";
    cr_assert_eq(ws_request_end((const uint8_t *)req, 10, &refuse), 0);
    cr_assert_eq(refuse, 0);
    cr_assert_eq(ws_request_end((const uint8_t *)req, strlen(req), &refuse),
                 strlen(req) - 5);
    req = "GET / HTTP/1.1\nHost: x\n\n";
    cr_assert_eq(ws_request_end((const uint8_t *)req, strlen(req), &refuse),
                 strlen(req), "bare LF line ends");
    /* plain MQTT on the WebSocket port */
    const uint8_t connect[] = {0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'};
    cr_assert_eq(ws_request_end(connect, sizeof(connect), &refuse), 0);
    cr_assert_eq(refuse, 400);
    /* a head that never ends */
    static uint8_t big[WS_REQUEST_MAX + 10];
    memset(big, 'a', sizeof(big));
    cr_assert_eq(ws_request_end(big, WS_REQUEST_MAX - 1, &refuse), 0);
    cr_assert_eq(refuse, 0);
    cr_assert_eq(ws_request_end(big, sizeof(big), &refuse), 0);
    cr_assert_eq(refuse, 431);
}

Test(ws, accept_key_rfc_example)
{
    char acc[29];
    ws_accept_key(KEY, strlen(KEY), acc);
    cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

Test(ws, upgrade_accepted)
{
    ws_request_t r = parse(request("GET /mqtt HTTP/1.1", NULL, NULL));
    cr_assert_eq(r.status, 101, "%d %s", r.status, r.why);
    cr_assert_str_eq(r.protocol, "mqtt");
    cr_assert_str_eq(r.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    cr_assert_null(r.forwarded);
    char out[WS_RESPONSE_MAX];
    size_t n = ws_response(&r, 0, out, sizeof(out));
    cr_assert_eq(n, strlen(out));
    cr_assert_str_eq(out, "HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: "
                          "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                          "Sec-WebSocket-Protocol: mqtt\r\n\r\n");
}

Test(ws, upgrade_header_forms)
{
    /* names in any case, token lists, a query string, extra headers */
    const char *req = "GET /mqtt?token=1 HTTP/1.1\r\n"
                      "host: a\r\n"
                      "upgrade: WebSocket\r\n"
                      "connection: keep-alive, Upgrade\r\n"
                      "sec-websocket-key:   " KEY "  \r\n"
                      "SEC-WEBSOCKET-VERSION: 13\r\n"
                      "Sec-WebSocket-Protocol: chat, mqttv3.1\r\n"
                      "Sec-WebSocket-Protocol: mqtt\r\n"
                      "Cookie: a=b\r\n"
                      "X-Forwarded-For: 1.1.1.1\r\n"
                      "X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n"
                      "\r\n";
    ws_request_t r = parse(req);
    cr_assert_eq(r.status, 101, "%d %s", r.status, r.why);
    cr_assert_str_eq(r.protocol, "mqtt", "mqtt preferred over mqttv3.1");
    cr_assert_eq(r.forwarded_len, strlen("2.2.2.2, 3.3.3.3"));
    cr_assert(memcmp(r.forwarded, "2.2.2.2, 3.3.3.3", r.forwarded_len) == 0,
              "the last X-Forwarded-For");

    r = parse(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Protocol",
                      "Sec-WebSocket-Protocol: mqttv3.1\r\n"));
    cr_assert_eq(r.status, 101);
    cr_assert_str_eq(r.protocol, "mqttv3.1");
}

static void assert_refused(const char *req, int status, const char *why_part)
{
    ws_request_t r = parse(req);
    cr_assert_eq(r.status, status, "%d (%s), expected %d for:\n%s", r.status,
                 r.why, status, req);
    cr_assert_not_null(strstr(r.why, why_part), "why: %s", r.why);
    char out[WS_RESPONSE_MAX];
    ws_response(&r, 0, out, sizeof(out));
    char head[64];
    snprintf(head, sizeof(head), "HTTP/1.1 %d ", status);
    cr_assert_eq(strncmp(out, head, strlen(head)), 0, "%s", out);
    cr_assert_not_null(strstr(out, "Connection: close\r\n"));
    cr_assert_not_null(strstr(out, why_part));
}

Test(ws, upgrade_refusals)
{
    assert_refused(request("GET /other HTTP/1.1", NULL, NULL), 404,
                   "no WebSocket endpoint");
    assert_refused(request("GET /mqtt/x HTTP/1.1", NULL, NULL), 404,
                   "no WebSocket endpoint");
    assert_refused(request("POST /mqtt HTTP/1.1", NULL, NULL), 405, "GET");
    assert_refused(request("GET /mqtt HTTP/1.0", NULL, NULL), 400, "HTTP/1.1");
    assert_refused(request("GET /mqtt", NULL, NULL), 400, "malformed");
    assert_refused("GET /mqtt HTTP/1.1\r\nHost: a\r\n\r\n", 400,
                   "not a WebSocket upgrade");
    assert_refused(request("GET /mqtt HTTP/1.1", "Upgrade", NULL), 400,
                   "not a WebSocket upgrade");
    assert_refused(request("GET /mqtt HTTP/1.1", "Connection",
                           "Connection: keep-alive\r\n"),
                   400, "not a WebSocket upgrade");
    assert_refused(request("GET /mqtt HTTP/1.1", "Host", NULL), 400, "Host");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Version",
                           NULL),
                   400, "Sec-WebSocket-Version");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Key", NULL),
                   400, "Sec-WebSocket-Key");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Key",
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n"),
                   400, "Sec-WebSocket-Key");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Key",
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n"),
                   400, "Sec-WebSocket-Key");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Protocol",
                           NULL),
                   400, "subprotocol");
    assert_refused(request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Protocol",
                           "Sec-WebSocket-Protocol: MQTT, chat\r\n"),
                   400, "subprotocol");
    assert_refused(request("GET /mqtt HTTP/1.1", NULL, "Bad Header: x\r\n"),
                   400, "malformed header");
    assert_refused(request("GET /mqtt HTTP/1.1", NULL, "NoColon\r\n"), 400,
                   "malformed header");
}

Test(ws, upgrade_version)
{
    const char *req = request("GET /mqtt HTTP/1.1", "Sec-WebSocket-Version",
                              "Sec-WebSocket-Version: 8\r\n");
    assert_refused(req, 426, "Sec-WebSocket-Version");
    ws_request_t r = parse(req);
    char out[WS_RESPONSE_MAX];
    ws_response(&r, 0, out, sizeof(out));
    cr_assert_not_null(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n"));
}

Test(ws, upgrade_origin)
{
    ws_upgrade_conf_t c = {.path = "/mqtt",
                           .allowed_origins = "https://a.example, "
                                              "http://localhost:8080"};
    const char *ok = request("GET /mqtt HTTP/1.1", NULL,
                             "Origin: HTTPS://A.example\r\n");
    cr_assert_eq(parse_with(&c, ok).status, 101);
    const char *bad = request("GET /mqtt HTTP/1.1", NULL,
                              "Origin: https://evil.example\r\n");
    ws_request_t r = parse_with(&c, bad);
    cr_assert_eq(r.status, 403);
    cr_assert_str_eq(r.why, "origin not allowed");
    /* no Origin: not a browser, accepted */
    cr_assert_eq(parse_with(&c, request("GET /mqtt HTTP/1.1", NULL, NULL))
                     .status,
                 101);
    /* any origin without a list, or with "*" */
    cr_assert_eq(parse(bad).status, 101);
    c.allowed_origins = "*";
    cr_assert_eq(parse_with(&c, bad).status, 101);
}

Test(ws, response_without_request)
{
    char out[WS_RESPONSE_MAX];
    size_t n = ws_response(NULL, 431, out, sizeof(out));
    cr_assert_eq(n, strlen(out));
    cr_assert_eq(strncmp(out, "HTTP/1.1 431 Request Header Fields Too Large"
                              "\r\n",
                         46),
                 0, "%s", out);
    char tiny[20];
    n = ws_response(NULL, 400, tiny, sizeof(tiny));
    cr_assert_eq(n, sizeof(tiny) - 1, "cut to the buffer");
}

/* ---- addresses ------------------------------------------------------------ */

Test(ws, addr_in_list)
{
    cr_assert(ws_addr_in_list("127.0.0.1", "10.0.0.1, 127.0.0.1"));
    cr_assert_not(ws_addr_in_list("127.0.0.2", "10.0.0.1, 127.0.0.1"));
    cr_assert(ws_addr_in_list("10.1.2.3", "10.0.0.0/8"));
    cr_assert_not(ws_addr_in_list("11.1.2.3", "10.0.0.0/8"));
    cr_assert(ws_addr_in_list("192.168.1.77", "192.168.1.64/27"));
    cr_assert_not(ws_addr_in_list("192.168.1.96", "192.168.1.64/27"));
    cr_assert(ws_addr_in_list("::ffff:127.0.0.1", "127.0.0.1"),
              "IPv4-mapped IPv6");
    cr_assert(ws_addr_in_list("[::1]", "::1"));
    cr_assert(ws_addr_in_list("fd00::5", "fd00::/8"));
    cr_assert_not(ws_addr_in_list("fe80::5", "fd00::/8"));
    cr_assert(ws_addr_in_list("1.2.3.4", "0.0.0.0/0"));
    cr_assert_not(ws_addr_in_list("1.2.3.4", NULL));
    cr_assert_not(ws_addr_in_list("1.2.3.4", ""));
    cr_assert_not(ws_addr_in_list("nonsense", "0.0.0.0/0"));
}

static char *fwd(const char *xff, const char *trusted)
{
    static char out[64];
    if (!ws_forwarded_client(xff, strlen(xff), trusted, out, sizeof(out)))
        return NULL;
    return out;
}

Test(ws, forwarded_for)
{
    cr_assert_str_eq(fwd("203.0.113.7", NULL), "203.0.113.7");
    cr_assert_str_eq(fwd("198.51.100.1, 203.0.113.7", "10.0.0.0/8"),
                     "203.0.113.7", "the right-most: added by our proxy");
    cr_assert_str_eq(fwd("198.51.100.1, 203.0.113.7, 10.0.0.2",
                         "10.0.0.0/8"),
                     "203.0.113.7", "trusted proxies skipped");
    cr_assert_str_eq(fwd("10.0.0.3,10.0.0.2", "10.0.0.0/8"), "10.0.0.3",
                     "all trusted: the left-most");
    cr_assert_str_eq(fwd("203.0.113.7:4711", NULL), "203.0.113.7");
    cr_assert_str_eq(fwd("[2001:DB8::1]:4711", NULL), "2001:db8::1");
    cr_assert_str_eq(fwd(" 2001:db8::1 ", NULL), "2001:db8::1");
    cr_assert_null(fwd("unknown", NULL));
    cr_assert_null(fwd("1.2.3.4, junk", NULL), "the client entry is junk");
    cr_assert_null(fwd("", NULL));
    cr_assert_null(fwd("1.2.3.4,", NULL));
}

/* ---- frames --------------------------------------------------------------- */

Test(ws, binary_frames_in_one_buffer)
{
    size_t n = 0;
    n += frame(wire + n, true, WS_OP_BINARY, "hello", 5, mask);
    n += frame(wire + n, true, WS_OP_BINARY, "", 0, mask);
    n += frame(wire + n, true, WS_OP_BINARY, " world", 6, mask);
    decode(wire, n, &res);
    cr_assert_eq(res.end, WS_EV_NONE);
    cr_assert_eq(res.len, 11);
    cr_assert(memcmp(res.data, "hello world", 11) == 0);
}

Test(ws, lengths_16_and_64_bit)
{
    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    size_t n = frame(wire, true, WS_OP_BINARY, payload, 300, mask);
    cr_assert_eq(wire[1], 0x80 | 126);
    n += frame(wire + n, true, WS_OP_BINARY, payload, sizeof(payload), mask);
    decode(wire, n, &res);
    cr_assert_eq(res.len, 300 + sizeof(payload));
    cr_assert(memcmp(res.data, payload, 300) == 0);
    cr_assert(memcmp(res.data + 300, payload, sizeof(payload)) == 0);
}

Test(ws, any_split_gives_the_same_stream)
{
    size_t n = 0;
    uint8_t big[1000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    n += frame(wire + n, false, WS_OP_BINARY, big, 3, mask);
    n += frame(wire + n, true, WS_OP_PING, "hi", 2, mask);
    n += frame(wire + n, false, WS_OP_CONT, big + 3, 200, mask);
    n += frame(wire + n, true, WS_OP_PONG, "", 0, mask);
    n += frame(wire + n, true, WS_OP_CONT, big + 203, 797, mask);
    n += frame(wire + n, true, WS_OP_BINARY, big, 1, mask);
    n += frame(wire + n, true, WS_OP_CLOSE, "\x03\xe8" "bye", 5, mask);
    n += frame(wire + n, true, WS_OP_BINARY, "after close", 11, mask);
    size_t chunks[] = {1, 2, 3, 7, 13, 64, 1000, n};
    for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
        ws_dec_t d;
        ws_dec_init(&d, 1 << 20);
        memcpy(copy, wire, n);
        decode_chunks(&d, copy, n, chunks[k], &res);
        cr_assert_eq(res.len, 1001, "chunk %zu: %zu bytes", chunks[k],
                     res.len);
        cr_assert(memcmp(res.data, big, 1000) == 0);
        cr_assert_eq(res.data[1000], 0);
        cr_assert_eq(res.pings, 1);
        cr_assert_eq(res.pongs, 1);
        cr_assert_eq(res.end, WS_EV_CLOSE);
        cr_assert_eq(res.code, 1000);
        /* over: nothing more is used */
        size_t used, out;
        cr_assert_eq(ws_decode(&d, wire, 4, copy, &used, &out), WS_EV_CLOSE);
        cr_assert_eq(used + out, 0);
    }
}

Test(ws, ping_payload)
{
    size_t n = frame(wire, true, WS_OP_PING, "are you there", 13, mask);
    ws_dec_t d;
    ws_dec_init(&d, 100);
    size_t used, out;
    cr_assert_eq(ws_decode(&d, wire, n, wire, &used, &out), WS_EV_PING);
    cr_assert_eq(used, n);
    cr_assert_eq(out, 0);
    cr_assert_eq(d.ctl_len, 13);
    cr_assert(memcmp(d.ctl, "are you there", 13) == 0);
}

static void assert_error(const uint8_t *buf, size_t n, uint16_t code,
                         const char *why_part)
{
    ws_dec_t d;
    ws_dec_init(&d, 1000);
    memcpy(copy, buf, n);
    decode_chunks(&d, copy, n, n, &res);
    cr_assert_eq(res.end, WS_EV_ERROR, "end %d", res.end);
    cr_assert_eq(res.code, code, "code %u, expected %u", res.code, code);
    cr_assert_not_null(strstr(d.why, why_part), "why: %s", d.why);
    size_t used, out;
    cr_assert_eq(ws_decode(&d, buf, n, copy, &used, &out), WS_EV_ERROR);
}

Test(ws, protocol_errors)
{
    uint8_t b[200];
    size_t n;
    /* unmasked */
    const uint8_t unmasked[] = {0x82, 0x02, 'h', 'i'};
    assert_error(unmasked, sizeof(unmasked), 1002, "unmasked");
    /* text */
    n = frame(b, true, WS_OP_TEXT, "hi", 2, mask);
    assert_error(b, n, 1003, "text");
    /* too large: refused from the header alone */
    n = frame(b, true, WS_OP_BINARY, b, 0, mask);
    b[1] = 0x80 | 126;
    b[2] = 0x03;
    b[3] = 0xe9; /* 1001 > 1000 */
    memcpy(b + 4, mask, 4);
    assert_error(b, 8, 1009, "ws_max_frame_size");
    /* reserved bits, opcodes */
    n = frame(b, true, WS_OP_BINARY, "x", 1, mask);
    b[0] |= 0x40;
    assert_error(b, n, 1002, "reserved bits");
    n = frame(b, true, 0x3, "x", 1, mask);
    assert_error(b, n, 1002, "reserved opcode");
    n = frame(b, true, 0xB, "x", 1, mask);
    assert_error(b, n, 1002, "reserved opcode");
    /* fragmentation */
    n = frame(b, true, WS_OP_CONT, "x", 1, mask);
    assert_error(b, n, 1002, "continuation");
    n = frame(b, false, WS_OP_BINARY, "x", 1, mask);
    n += frame(b + n, true, WS_OP_BINARY, "y", 1, mask);
    assert_error(b, n, 1002, "inside a fragmented");
    n = frame(b, false, WS_OP_PING, "x", 1, mask);
    assert_error(b, n, 1002, "fragmented control");
    uint8_t long_ping[126] = {0};
    n = frame(b, true, WS_OP_PING, long_ping, 126, mask);
    assert_error(b, n, 1002, "125");
    /* 64-bit length with the top bit */
    const uint8_t huge[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    assert_error(huge, sizeof(huge), 1002, "out of range");
}

Test(ws, close_frames)
{
    uint8_t b[200];
    size_t n = frame(b, true, WS_OP_CLOSE, "", 0, mask);
    decode(b, n, &res);
    cr_assert_eq(res.end, WS_EV_CLOSE);
    cr_assert_eq(res.code, 1005, "no status");
    n = frame(b, true, WS_OP_CLOSE, "\x0f\xa0", 2, mask); /* 4000 */
    decode(b, n, &res);
    cr_assert_eq(res.end, WS_EV_CLOSE);
    cr_assert_eq(res.code, 4000);
    n = frame(b, true, WS_OP_CLOSE, "\x03", 1, mask);
    assert_error(b, n, 1002, "one byte");
    n = frame(b, true, WS_OP_CLOSE, "\x03\xed", 2, mask); /* 1005 */
    assert_error(b, n, 1002, "close code");
    n = frame(b, true, WS_OP_CLOSE, "\x03\xe7", 2, mask); /* 999 */
    assert_error(b, n, 1002, "close code");
    n = frame(b, true, WS_OP_CLOSE, "\x03\xe8\xc3\x28", 4, mask);
    assert_error(b, n, 1007, "UTF-8");
    n = frame(b, true, WS_OP_CLOSE, "\x03\xe8\xed\xa0\x80", 5, mask);
    assert_error(b, n, 1007, "UTF-8"); /* a surrogate */
}

Test(ws, data_before_an_error_is_delivered)
{
    uint8_t b[200];
    size_t n = frame(b, true, WS_OP_BINARY, "abc", 3, mask);
    n += frame(b + n, true, WS_OP_TEXT, "x", 1, mask);
    decode(b, n, &res);
    cr_assert_eq(res.end, WS_EV_ERROR);
    cr_assert_eq(res.len, 3);
    cr_assert(memcmp(res.data, "abc", 3) == 0);
}

/* ---- server frames -------------------------------------------------------- */

Test(ws, server_frame_headers)
{
    uint8_t h[10];
    cr_assert_eq(ws_frame_header(h, WS_OP_BINARY, 0), 2);
    cr_assert_eq(h[0], 0x82);
    cr_assert_eq(h[1], 0);
    cr_assert_eq(ws_frame_header(h, WS_OP_BINARY, 125), 2);
    cr_assert_eq(h[1], 125);
    cr_assert_eq(ws_frame_header(h, WS_OP_BINARY, 126), 4);
    cr_assert_eq(h[1], 126);
    cr_assert_eq(h[2] << 8 | h[3], 126);
    cr_assert_eq(ws_frame_header(h, WS_OP_PONG, 65535), 4);
    cr_assert_eq(h[0], 0x8a);
    cr_assert_eq(ws_frame_header(h, WS_OP_BINARY, 65536), 10);
    cr_assert_eq(h[1], 127);
    const uint8_t want[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    cr_assert(memcmp(h + 2, want, 8) == 0);
}

Test(ws, close_frame)
{
    uint8_t f[2 + WS_CONTROL_MAX];
    cr_assert_eq(ws_close_frame(f, 0, "ignored"), 2);
    cr_assert_eq(f[0], 0x88);
    cr_assert_eq(f[1], 0);
    size_t n = ws_close_frame(f, 1009, "too big");
    cr_assert_eq(n, 11);
    cr_assert_eq(f[1], 9);
    cr_assert_eq(f[2] << 8 | f[3], 1009);
    cr_assert(memcmp(f + 4, "too big", 7) == 0);
    /* a long reason is cut, never inside a UTF-8 sequence */
    char reason[300];
    memset(reason, 'a', 122);
    strcpy(reason + 122, "\xc3\xa9tc");
    n = ws_close_frame(f, 1000, reason);
    cr_assert_eq(n, 2 + 2 + 122);
    cr_assert(ws_utf8_valid(f + 4, n - 4));
}

Test(ws, utf8)
{
    cr_assert(ws_utf8_valid((const uint8_t *)"", 0));
    cr_assert(ws_utf8_valid((const uint8_t *)"a\0b", 3), "U+0000 is fine");
    cr_assert(ws_utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4));
    cr_assert_not(ws_utf8_valid((const uint8_t *)"\xc0\xaf", 2), "overlong");
    cr_assert_not(ws_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));
    cr_assert_not(ws_utf8_valid((const uint8_t *)"\xe2\x82", 2), "cut");
    cr_assert_not(ws_utf8_valid((const uint8_t *)"\x80", 1));
}
