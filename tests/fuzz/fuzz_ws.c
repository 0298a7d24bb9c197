/*
 * fuzz_ws.c - libFuzzer target for the WebSocket codec (src/net/ws_codec.c).
 *
 * Each input is read three ways:
 *   - as an upgrade request: ws_request_end() finds the head, which is
 *     copied into a buffer of exactly its size (so the sanitizers see any
 *     read past it) and checked against two configurations; the status
 *     must be one the parser may give, a 101 must carry a subprotocol and
 *     a 28-character accept key, the answer must fit and start with the
 *     status line, and an X-Forwarded-For value must lie inside the
 *     request and give either no address or one inet_pton() reads back;
 *   - as client frames: decoded in one go and again in chunks whose sizes
 *     come from the input, in place as the transport does; the data
 *     stream, the pings and pongs and the final close or error must be the
 *     same both ways, and no call may write more than it read;
 *   - as a payload: cut into a fragmented message of masked frames (the
 *     mask and the cuts from the input), with a ping in between, which
 *     must decode to the very same bytes.
 * The input is also checked against a slow reference UTF-8 validator.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzzing=true
 * Run:   ./build-fuzz/tests/fuzz/fuzz_ws tests/fuzz/corpus/ws
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/ws_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

/* Code point by code point, the obvious way (U+0000 allowed). */
static bool utf8_reference(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i];
        size_t len;
        uint32_t min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, c &= 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, c &= 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, c &= 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* ---- the upgrade request -------------------------------------------------- */

static void one_request(const char *req, size_t len,
                        const ws_upgrade_conf_t *conf)
{
    ws_request_t r;
    ws_parse_request(req, len, conf, &r);
    switch (r.status) {
    case 101:
        CHECK(r.protocol && (strcmp(r.protocol, "mqtt") == 0 ||
                             strcmp(r.protocol, "mqttv3.1") == 0));
        CHECK(strlen(r.accept) == 28);
        break;
    case 400:
    case 403:
    case 404:
    case 405:
    case 426:
        CHECK(r.why && r.why[0]);
        break;
    default:
        abort();
    }
    char out[WS_RESPONSE_MAX];
    size_t n = ws_response(&r, 0, out, sizeof(out));
    CHECK(n > 0 && n < sizeof(out) && n == strlen(out));
    CHECK(strncmp(out, "HTTP/1.1 ", 9) == 0);
    if (r.forwarded) {
        CHECK(r.forwarded >= req && r.forwarded + r.forwarded_len <= req + len);
        char addr[64];
        unsigned char bin[16];
        if (ws_forwarded_client(r.forwarded, r.forwarded_len,
                                "10.0.0.0/8, 127.0.0.1,fd00::/8", addr,
                                sizeof(addr)))
            CHECK(inet_pton(AF_INET, addr, bin) == 1 ||
                  inet_pton(AF_INET6, addr, bin) == 1);
    }
}

static void request(const uint8_t *data, size_t size)
{
    int refuse;
    size_t head = ws_request_end(data, size, &refuse);
    if (!head) {
        CHECK(refuse == 0 || refuse == 400 || refuse == 431);
        return;
    }
    CHECK(refuse == 0 && head <= size && head <= WS_REQUEST_MAX);
    char *copy = malloc(head);
    CHECK(copy);
    memcpy(copy, data, head);
    const ws_upgrade_conf_t open = {.path = "/mqtt"};
    const ws_upgrade_conf_t strict = {
        .path = "/", .allowed_origins = "https://a.example, http://b:1"};
    one_request(copy, head, &open);
    one_request(copy, head, &strict);
    free(copy);
}

/* ---- frames ----------------------------------------------------------------- */

typedef struct run {
    uint8_t *data;   /* the data stream */
    size_t len;
    int pings, pongs;
    ws_ev_t end;
    uint16_t code;
} run_t;

/* Decode buf (size n, changed in place) in chunks taken from `sizes`
 * (0: all at once). */
static void decode(uint8_t *buf, size_t n, const uint8_t *sizes,
                   size_t nsizes, run_t *r)
{
    ws_dec_t d;
    ws_dec_init(&d, 1 << 18);
    memset(r, 0, sizeof(*r));
    r->data = malloc(n + 1);
    CHECK(r->data);
    size_t off = 0, k = 0;
    while (off < n && r->end == WS_EV_NONE) {
        size_t chunk = nsizes ? (size_t)sizes[k++ % nsizes] + 1 : n;
        if (chunk > n - off)
            chunk = n - off;
        size_t done = 0;
        while (done < chunk) {
            size_t used, out, avail = chunk - done;
            uint8_t *p = buf + off + done;
            ws_ev_t ev = ws_decode(&d, p, avail, p, &used, &out);
            CHECK(used <= avail && out <= used);
            memcpy(r->data + r->len, p, out);
            r->len += out;
            done += used;
            p += used;
            if (ev == WS_EV_PING) {
                CHECK(d.ctl_len <= WS_CONTROL_MAX);
                r->pings++;
            } else if (ev == WS_EV_PONG) {
                r->pongs++;
            } else if (ev != WS_EV_NONE) {
                r->end = ev;
                r->code = d.code;
                CHECK(ev == WS_EV_CLOSE || (d.why && d.why[0]));
                size_t u2, o2;
                CHECK(ws_decode(&d, p, chunk - done, p, &u2, &o2) == ev);
                CHECK(u2 == 0 && o2 == 0);
                break;
            } else {
                CHECK(used == avail);
            }
        }
        off += chunk;
    }
}

static void frames(const uint8_t *data, size_t size)
{
    uint8_t *a = malloc(size + 1), *b = malloc(size + 1);
    CHECK(a && b);
    memcpy(a, data, size);
    memcpy(b, data, size);
    run_t whole, parts;
    decode(a, size, NULL, 0, &whole);
    decode(b, size, data, size < 16 ? size : 16, &parts);
    CHECK(whole.len == parts.len);
    CHECK(whole.len == 0 || memcmp(whole.data, parts.data, whole.len) == 0);
    CHECK(whole.pings == parts.pings && whole.pongs == parts.pongs);
    CHECK(whole.end == parts.end && whole.code == parts.code);
    free(whole.data);
    free(parts.data);
    free(a);
    free(b);
}

/* Append one masked client frame. */
static size_t put_frame(uint8_t *out, bool fin, uint8_t op,
                        const uint8_t *payload, size_t n,
                        const uint8_t mask[4])
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
        out[at + i] = payload[i] ^ mask[i % 4];
    return at + n;
}

static void roundtrip(const uint8_t *data, size_t size)
{
    uint8_t mask[4] = {0};
    memcpy(mask, data, size < 4 ? size : 4);
    size_t cut1 = size ? data[0] % (size + 1) : 0;
    size_t cut2 = cut1 + (size > 1 ? data[1] % (size - cut1 + 1) : 0);
    uint8_t *wire = malloc(size + 3 * 14 + 2 + 8 + 2);
    CHECK(wire);
    size_t n = 0;
    n += put_frame(wire + n, false, WS_OP_BINARY, data, cut1, mask);
    n += put_frame(wire + n, true, WS_OP_PING, data, size < 2 ? size : 2,
                   mask);
    n += put_frame(wire + n, false, WS_OP_CONT, data + cut1, cut2 - cut1,
                   mask);
    n += put_frame(wire + n, true, WS_OP_CONT, data + cut2, size - cut2,
                   mask);
    run_t r;
    decode(wire, n, data, size < 8 ? size : 8, &r);
    CHECK(r.end == WS_EV_NONE && r.pings == 1);
    CHECK(r.len == size && (size == 0 || memcmp(r.data, data, size) == 0));
    free(r.data);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    CHECK(utf8_reference(data, size) == ws_utf8_valid(data, size));
    if (size <= (1 << 18)) {
        request(data, size);
        frames(data, size);
        roundtrip(data, size);
    }
    return 0;
}
