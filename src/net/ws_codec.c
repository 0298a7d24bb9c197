/*
 * ws_codec.c - the sans-I/O part of the WebSocket transport (ws_codec.h):
 * upgrade request checks and answers, the streaming frame decoder, server
 * frame headers, X-Forwarded-For.
 *
 * The decoder keeps no input: header bytes collect in the decoder (at most
 * 14), the payload of data frames is unmasked straight into the caller's
 * buffer (in place: headers are dropped, so the output never overtakes the
 * input), and only control frame payloads (at most 125 bytes) are kept.
 * A frame's size limit is checked from its header, before its payload.
 */
#include "ws_codec.h"

#include "starling/mqtt.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- small text helpers -------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t n;
} span_t;

static span_t trim(span_t s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

static bool span_eq(span_t s, const char *lit, bool nocase)
{
    size_t n = strlen(lit);
    return s.n == n &&
           (nocase ? strncasecmp(s.p, lit, n) : strncmp(s.p, lit, n)) == 0;
}

/* Take the next comma-separated item of *list (trimmed); false at the
 * end. */
static bool next_item(span_t *list, span_t *item)
{
    if (!list->p || list->n == 0)
        return false;
    const char *comma = memchr(list->p, ',', list->n);
    size_t n = comma ? (size_t)(comma - list->p) : list->n;
    *item = trim((span_t){list->p, n});
    if (comma) {
        list->p = comma + 1;
        list->n -= n + 1;
    } else {
        list->p += n;
        list->n = 0;
    }
    return true;
}

/* Does the comma list hold tok? */
static bool has_token(span_t list, const char *tok, bool nocase)
{
    span_t item;
    while (next_item(&list, &item))
        if (span_eq(item, tok, nocase))
            return true;
    return false;
}

static span_t cstr(const char *s)
{
    return (span_t){s, s ? strlen(s) : 0};
}

/* ---- the upgrade request ------------------------------------------------- */

size_t ws_request_end(const uint8_t *buf, size_t len, int *refuse)
{
    size_t lim = len < WS_REQUEST_MAX ? len : WS_REQUEST_MAX;
    *refuse = 0;
    for (size_t i = 0; i < lim; i++) {
        uint8_t ch = buf[i];
        if (ch == '\n') {
            if (i >= 1 && buf[i - 1] == '\n')
                return i + 1;
            if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n')
                return i + 1;
            continue;
        }
        if ((ch < 0x20 && ch != '\r' && ch != '\t') || ch == 0x7f) {
            *refuse = 400;
            return 0;
        }
    }
    if (len >= WS_REQUEST_MAX)
        *refuse = 431;
    return 0;
}

/* The next line of [*p, end) without its CR LF; false when no line end. */
static bool next_line(const char **p, const char *end, span_t *line)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl)
        return false;
    size_t n = (size_t)(nl - *p);
    if (n && (*p)[n - 1] == '\r')
        n--;
    *line = (span_t){*p, n};
    *p = nl + 1;
    return true;
}

static bool is_tchar(char ch)
{
    return ch && (isalnum((unsigned char)ch) ||
                  strchr("!#$%&'*+-.^_`|~", ch));
}

/* 24 base64 characters that decode to 16 bytes. */
static bool key_ok(span_t k)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (k.n != 24 || k.p[22] != '=' || k.p[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!memchr(b64, k.p[i], 64))
            return false;
    /* the last character carries 2 bits: its low 4 bits are zero */
    return ((strchr(b64, k.p[21]) - b64) & 0xf) == 0;
}

static bool origin_allowed(span_t origin, const char *allowed)
{
    span_t list = cstr(allowed), item;
    if (list.n == 0)
        return true;
    while (next_item(&list, &item))
        if (span_eq(item, "*", false) ||
            (item.n == origin.n && strncasecmp(item.p, origin.p, item.n) == 0))
            return true;
    return false;
}

static void refuse(ws_request_t *r, int status, const char *why)
{
    r->status = status;
    r->why = why;
}

/* What the headers said. */
typedef struct headers {
    span_t host, key, version, origin, forwarded;
    bool upgrade, connection, mqtt, mqtt31;
    int keys, versions;
} headers_t;

static void header(headers_t *h, span_t name, span_t value)
{
    if (span_eq(name, "Host", true)) {
        h->host = value;
    } else if (span_eq(name, "Upgrade", true)) {
        h->upgrade |= has_token(value, "websocket", true);
    } else if (span_eq(name, "Connection", true)) {
        h->connection |= has_token(value, "upgrade", true);
    } else if (span_eq(name, "Sec-WebSocket-Key", true)) {
        h->key = value;
        h->keys++;
    } else if (span_eq(name, "Sec-WebSocket-Version", true)) {
        h->version = value;
        h->versions++;
    } else if (span_eq(name, "Sec-WebSocket-Protocol", true)) {
        h->mqtt |= has_token(value, "mqtt", false);
        h->mqtt31 |= has_token(value, "mqttv3.1", false);
    } else if (span_eq(name, "Origin", true)) {
        h->origin = value;
    } else if (span_eq(name, "X-Forwarded-For", true)) {
        h->forwarded = value;
    }
}

/* The request line: GET, the path (404 unless conf->path), HTTP/1.1. */
static bool request_line(span_t line, const ws_upgrade_conf_t *conf,
                         ws_request_t *r)
{
    const char *sp1 = memchr(line.p, ' ', line.n);
    if (!sp1)
        goto bad;
    span_t method = {line.p, (size_t)(sp1 - line.p)};
    span_t rest = {sp1 + 1, line.n - method.n - 1};
    const char *sp2 = memchr(rest.p, ' ', rest.n);
    if (!sp2 || method.n == 0)
        goto bad;
    span_t target = {rest.p, (size_t)(sp2 - rest.p)};
    span_t version = {sp2 + 1, rest.n - target.n - 1};
    for (size_t i = 0; i < method.n; i++)
        if (!is_tchar(method.p[i]))
            goto bad;
    if (!span_eq(version, "HTTP/1.1", false)) {
        refuse(r, 400, "not an HTTP/1.1 request");
        return false;
    }
    if (!span_eq(method, "GET", false)) {
        refuse(r, 405, "a WebSocket upgrade is a GET request");
        return false;
    }
    const char *q = memchr(target.p, '?', target.n);
    span_t path = {target.p, q ? (size_t)(q - target.p) : target.n};
    if (!span_eq(path, conf->path ? conf->path : "/mqtt", false)) {
        refuse(r, 404, "no WebSocket endpoint at this path");
        return false;
    }
    return true;
bad:
    refuse(r, 400, "malformed request line");
    return false;
}

void ws_parse_request(const char *req, size_t len,
                      const ws_upgrade_conf_t *conf, ws_request_t *r)
{
    const char *p = req, *end = req + len;
    span_t line;
    headers_t h = {0};

    memset(r, 0, sizeof(*r));
    if (!next_line(&p, end, &line) || !request_line(line, conf, r)) {
        if (!r->status)
            refuse(r, 400, "malformed request line");
        return;
    }
    while (next_line(&p, end, &line) && line.n > 0) {
        const char *colon = memchr(line.p, ':', line.n);
        span_t name = {line.p, colon ? (size_t)(colon - line.p) : 0};
        if (!colon || name.n == 0) {
            refuse(r, 400, "malformed header line");
            return;
        }
        for (size_t i = 0; i < name.n; i++)
            if (!is_tchar(name.p[i])) {
                refuse(r, 400, "malformed header line");
                return;
            }
        header(&h, name, trim((span_t){colon + 1, line.n - name.n - 1}));
    }
    if (!h.upgrade || !h.connection)
        refuse(r, 400, "not a WebSocket upgrade (Upgrade: websocket and "
                       "Connection: Upgrade expected)");
    else if (h.host.n == 0)
        refuse(r, 400, "no Host header");
    else if (h.versions == 0)
        refuse(r, 400, "no Sec-WebSocket-Version header");
    else if (h.versions > 1 || !span_eq(h.version, "13", false))
        refuse(r, 426, "unsupported Sec-WebSocket-Version (13 is)");
    else if (h.keys != 1 || !key_ok(h.key))
        refuse(r, 400, "missing or malformed Sec-WebSocket-Key");
    else if (h.origin.p && !origin_allowed(h.origin, conf->allowed_origins))
        refuse(r, 403, "origin not allowed");
    else if (!h.mqtt && !h.mqtt31)
        refuse(r, 400, "no mqtt subprotocol offered (Sec-WebSocket-Protocol: "
                       "mqtt)");
    if (r->status)
        return;
    r->status = 101;
    r->protocol = h.mqtt ? "mqtt" : "mqttv3.1";
    ws_accept_key(h.key.p, h.key.n, r->accept);
    if (h.forwarded.p) {
        r->forwarded = h.forwarded.p;
        r->forwarded_len = h.forwarded.n;
    }
}

void ws_accept_key(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (len > sizeof(buf) - sizeof(guid))
        len = sizeof(buf) - sizeof(guid);
    memcpy(buf, key, len);
    memcpy(buf + len, guid, sizeof(guid) - 1);
    if (EVP_Digest(buf, len + sizeof(guid) - 1, md, &mdlen, EVP_sha1(),
                   NULL) != 1 ||
        mdlen != 20) {
        out[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, md, 20);
}

static const char *phrase(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Error";
    }
}

size_t ws_response(const ws_request_t *r, int status, char *out, size_t cap)
{
    int n;
    if (r)
        status = r->status;
    if (status == 101) {
        n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n"
                     "\r\n",
                     r->accept, r->protocol);
    } else {
        const char *body = r && r->why ? r->why : phrase(status);
        n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Connection: close\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "%s"
                     "\r\n"
                     "%s\n",
                     status, phrase(status), strlen(body) + 1,
                     status == 426   ? "Sec-WebSocket-Version: 13\r\n"
                     : status == 405 ? "Allow: GET\r\n"
                                     : "",
                     body);
    }
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

/* ---- addresses ------------------------------------------------------------ */

/* "1.2.3.4", "1.2.3.4:80", "::1", "[::1]", "[::1]:80" -> 16 bytes (IPv4
 * mapped into IPv6); *v4 says which it was. */
static bool parse_addr(span_t s, uint8_t out[16], bool *v4)
{
    char buf[INET6_ADDRSTRLEN + 1];
    s = trim(s);
    if (s.n && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.n);
        if (!close)
            return false;
        s = (span_t){s.p + 1, (size_t)(close - s.p - 1)};
    } else {
        const char *colon = memchr(s.p, ':', s.n);
        if (colon && !memchr(colon + 1, ':', s.n - (size_t)(colon - s.p) - 1))
            s.n = (size_t)(colon - s.p); /* a.b.c.d:port */
    }
    if (s.n == 0 || s.n >= sizeof(buf))
        return false;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    if (inet_pton(AF_INET, buf, out + 12) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, buf, out) == 1;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t m = (uint8_t)(0xff << (8 - rest));
    return (a[bytes] & m) == (b[bytes] & m);
}

static bool bin_in_list(const uint8_t a[16], const char *list)
{
    span_t l = cstr(list), item;
    while (next_item(&l, &item)) {
        const char *slash = memchr(item.p, '/', item.n);
        span_t host = {item.p, slash ? (size_t)(slash - item.p) : item.n};
        uint8_t b[16];
        bool v4;
        if (host.n == 0 || host.p[0] == '[' || !parse_addr(host, b, &v4))
            continue;
        unsigned bits = v4 ? 32 : 128;
        if (slash) {
            char num[8];
            size_t n = item.n - host.n - 1;
            if (n == 0 || n >= sizeof(num))
                continue;
            memcpy(num, slash + 1, n);
            num[n] = '\0';
            char *end;
            unsigned long v = strtoul(num, &end, 10);
            if (*end || v > bits || !isdigit((unsigned char)num[0]))
                continue;
            bits = (unsigned)v;
        }
        if (prefix_eq(a, b, v4 ? bits + 96 : bits))
            return true;
    }
    return false;
}

bool ws_addr_in_list(const char *addr, const char *list)
{
    uint8_t a[16];
    bool v4;
    return addr && parse_addr(cstr(addr), a, &v4) && bin_in_list(a, list);
}

bool ws_forwarded_client(const char *xff, size_t len, const char *trusted,
                         char *out, size_t cap)
{
    /* The entries, right to left. */
    span_t pick;
    size_t end = len;
    for (;;) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        pick = trim((span_t){xff + start, end - start});
        uint8_t a[16];
        bool v4;
        if (!parse_addr(pick, a, &v4) || !bin_in_list(a, trusted))
            break; /* not a trusted proxy: the client */
        if (start == 0)
            break; /* all trusted: the left-most */
        end = start - 1;
    }
    uint8_t a[16];
    bool v4;
    if (!parse_addr(pick, a, &v4))
        return false;
    if (v4)
        return inet_ntop(AF_INET, a + 12, out, (socklen_t)cap) != NULL;
    return inet_ntop(AF_INET6, a, out, (socklen_t)cap) != NULL;
}

/* ---- frames --------------------------------------------------------------- */

void ws_dec_init(ws_dec_t *d, uint64_t max_frame)
{
    memset(d, 0, sizeof(*d));
    d->max_frame = max_frame;
}

static ws_ev_t fail(ws_dec_t *d, uint16_t code, const char *why)
{
    d->over = true;
    d->code = code;
    d->why = why;
    return WS_EV_ERROR;
}

/* The header's full length, from its first two bytes. */
static size_t header_len(const uint8_t *h)
{
    size_t n = 2;
    uint8_t l = h[1] & 0x7f;
    if (l == 126)
        n += 2;
    else if (l == 127)
        n += 8;
    if (h[1] & 0x80)
        n += 4;
    return n;
}

static bool is_control(uint8_t op)
{
    return op & 0x8;
}

/* A whole header arrived: check it and start its frame. */
static ws_ev_t start_frame(ws_dec_t *d)
{
    const uint8_t *h = d->hdr;
    bool fin = h[0] & 0x80;
    uint8_t op = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    size_t at = 2;

    d->hlen = 0;
    if (h[0] & 0x70)
        return fail(d, WS_CLOSE_PROTOCOL, "reserved bits set (no extension "
                    "was agreed)");
    if (!(h[1] & 0x80))
        return fail(d, WS_CLOSE_PROTOCOL, "unmasked client frame");
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        at = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        at = 10;
        if (len >> 63)
            return fail(d, WS_CLOSE_PROTOCOL, "frame length out of range");
    }
    memcpy(d->mask, h + at, 4);
    switch (op) {
    case WS_OP_CONT:
        if (!d->in_msg)
            return fail(d, WS_CLOSE_PROTOCOL, "continuation frame outside "
                        "a fragmented message");
        break;
    case WS_OP_BINARY:
        if (d->in_msg)
            return fail(d, WS_CLOSE_PROTOCOL, "new message inside a "
                        "fragmented one");
        break;
    case WS_OP_TEXT:
        return fail(d, WS_CLOSE_UNSUPPORTED, "text frame (MQTT is binary)");
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!fin)
            return fail(d, WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (len > WS_CONTROL_MAX)
            return fail(d, WS_CLOSE_PROTOCOL, "control frame longer than "
                        "125 bytes");
        break;
    default:
        return fail(d, WS_CLOSE_PROTOCOL, "reserved opcode");
    }
    if (!is_control(op)) {
        if (len > d->max_frame)
            return fail(d, WS_CLOSE_TOO_BIG, "frame larger than "
                        "ws_max_frame_size");
        d->in_msg = !fin;
    }
    d->op = op;
    d->fin = fin;
    d->left = len;
    d->mpos = 0;
    d->ctl_len = 0;
    d->in_frame = true;
    return WS_EV_NONE;
}

static bool close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* A control frame is complete. */
static ws_ev_t end_control(ws_dec_t *d)
{
    if (d->op == WS_OP_PING)
        return WS_EV_PING;
    if (d->op == WS_OP_PONG)
        return WS_EV_PONG;
    if (d->ctl_len == 1)
        return fail(d, WS_CLOSE_PROTOCOL, "close frame of one byte");
    if (d->ctl_len >= 2) {
        unsigned code = (unsigned)d->ctl[0] << 8 | d->ctl[1];
        if (!close_code_ok(code))
            return fail(d, WS_CLOSE_PROTOCOL, "invalid close code");
        if (!ws_utf8_valid(d->ctl + 2, d->ctl_len - 2u))
            return fail(d, WS_CLOSE_BAD_DATA, "close reason not UTF-8");
        d->code = (uint16_t)code;
    } else {
        d->code = WS_CLOSE_NO_STATUS;
    }
    d->over = true;
    d->why = NULL;
    return WS_EV_CLOSE;
}

/* XOR n bytes with the mask, from *mpos on; dst <= src or disjoint. */
static void unmask(uint8_t *dst, const uint8_t *src, size_t n,
                   const uint8_t mask[4], uint8_t *mpos)
{
    size_t k = 0;
    unsigned m = *mpos;
    for (; k < n && m != 0; k++, m = (m + 1) & 3)
        dst[k] = src[k] ^ mask[m];
    if (n - k >= 8) {
        uint8_t m8[8] = {mask[0], mask[1], mask[2], mask[3],
                         mask[0], mask[1], mask[2], mask[3]};
        uint64_t mm;
        memcpy(&mm, m8, 8);
        for (; n - k >= 8; k += 8) {
            uint64_t v;
            memcpy(&v, src + k, 8);
            v ^= mm;
            memcpy(dst + k, &v, 8);
        }
    }
    for (; k < n; k++, m = (m + 1) & 3)
        dst[k] = src[k] ^ mask[m];
    *mpos = (uint8_t)m;
}

ws_ev_t ws_decode(ws_dec_t *d, const uint8_t *src, size_t n, uint8_t *dst,
                  size_t *used, size_t *out)
{
    size_t i = 0, o = 0;
    ws_ev_t ev = WS_EV_NONE;

    if (d->over) {
        *used = *out = 0;
        return d->why ? WS_EV_ERROR : WS_EV_CLOSE;
    }
    while (i < n) {
        if (!d->in_frame) {
            d->hdr[d->hlen++] = src[i++];
            if (d->hlen < 2)
                continue;
            size_t need = header_len(d->hdr);
            while (d->hlen < need && i < n)
                d->hdr[d->hlen++] = src[i++];
            if (d->hlen < need)
                break;
            if ((ev = start_frame(d)) != WS_EV_NONE)
                break;
        } else {
            size_t take = n - i;
            if (take > d->left)
                take = (size_t)d->left;
            if (is_control(d->op)) {
                unmask(d->ctl + d->ctl_len, src + i, take, d->mask, &d->mpos);
                d->ctl_len = (uint8_t)(d->ctl_len + take);
            } else {
                unmask(dst + o, src + i, take, d->mask, &d->mpos);
                o += take;
            }
            i += take;
            d->left -= take;
        }
        if (d->in_frame && d->left == 0) {
            d->in_frame = false;
            if (is_control(d->op) && (ev = end_control(d)) != WS_EV_NONE)
                break;
        }
    }
    *used = i;
    *out = o;
    return ev;
}

size_t ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t n)
{
    out[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        out[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(n >> 8);
        out[3] = (uint8_t)n;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    return 10;
}

size_t ws_close_frame(uint8_t out[2 + WS_CONTROL_MAX], uint16_t code,
                      const char *reason)
{
    out[0] = 0x80 | WS_OP_CLOSE;
    if (code == 0) {
        out[1] = 0;
        return 2;
    }
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > WS_CONTROL_MAX - 2) {
        rlen = WS_CONTROL_MAX - 2;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xc0) == 0x80)
            rlen--; /* not inside a UTF-8 sequence */
    }
    out[1] = (uint8_t)(2 + rlen);
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)code;
    if (rlen)
        memcpy(out + 4, reason, rlen);
    return 4 + rlen;
}

bool ws_utf8_valid(const uint8_t *s, size_t n)
{
    return sl_utf8_valid(s, n);
}
