/*
 * ws.c - the client side of MQTT over WebSocket for starling-bench (--ws,
 * --wss).
 *
 * The TCP (or TLS) bufferevent first carries the HTTP upgrade: the
 * request goes out when the connection is up, and the client waits for
 * the 101 before anything else, as RFC 6455 asks (no frame is pipelined
 * behind the request). Then a libevent filter bufferevent is put on top
 * of it, and the client reads and writes MQTT bytes as over TCP:
 *   out   every write becomes one masked binary frame (one MQTT packet per
 *         frame, as browser and paho clients send them); the mask comes
 *         from a cheap per-connection generator
 *   in    server frames (unmasked) are taken apart as they stream in: data
 *         payloads are moved to the client's input without waiting for
 *         the end of a frame; pings and pongs are dropped, a close is
 *         answered with a close (the broker then closes the connection)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/rand.h>

#include "bench.h"

typedef struct wsf {
    struct bufferevent *under;  /* the TCP or TLS bufferevent */
    uint64_t left;     /* payload bytes of the current data frame */
    uint64_t rng;      /* xorshift state for masks */
    bool closed;       /* a close frame came: ignore the rest */
} wsf_t;

void ws_client_request(struct bufferevent *bev, const char *host, int port,
                       const char *path)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[16];
    char key[25];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        memset(raw, 0x5a, sizeof(raw));
    /* 16 bytes = 5 groups of 3 + 1: 22 characters and "==" */
    int k = 0;
    for (int i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | raw[i + 1] << 8 | raw[i + 2];
        for (int s = 18; s >= 0; s -= 6)
            key[k++] = b64[(v >> s) & 63];
    }
    key[k++] = b64[raw[15] >> 2];
    key[k++] = b64[(raw[15] & 3) << 4];
    key[k++] = '=';
    key[k++] = '=';
    key[k] = '\0';
    evbuffer_add_printf(bufferevent_get_output(bev),
                        "GET %s HTTP/1.1\r\n"
                        "Host: %s:%d\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: mqtt\r\n"
                        "\r\n",
                        path, host, port, key);
}

int ws_client_reply(struct evbuffer *in, char *why, size_t len)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > 8192) {
            snprintf(why, len, "WebSocket upgrade: answer too long");
            return -1;
        }
        return 0;
    }
    char line[64] = "";
    evbuffer_copyout(in, line, sizeof(line) - 1);
    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "HTTP/1.1 101 ", 13) != 0) {
        snprintf(why, len, "WebSocket upgrade refused: %s", line);
        return -1;
    }
    evbuffer_drain(in, (size_t)end.pos + 4);
    return 1;
}

static uint32_t next_mask(wsf_t *f)
{
    uint64_t x = f->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->rng = x;
    return (uint32_t)(x >> 16);
}

/* MQTT bytes -> one masked binary frame. */
static enum bufferevent_filter_result ws_out(struct evbuffer *src,
                                             struct evbuffer *dst,
                                             ev_ssize_t limit,
                                             enum bufferevent_flush_mode mode,
                                             void *ctx)
{
    wsf_t *f = ctx;
    size_t n = evbuffer_get_length(src);
    if (n == 0)
        return BEV_NEED_MORE;
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = 0x82;
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            hdr[h++] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    uint32_t m = next_mask(f);
    uint8_t mask[4];
    memcpy(mask, &m, 4);
    memcpy(hdr + h, mask, 4);
    h += 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(dst, (ev_ssize_t)(h + n), &v, 1) < 1)
        return BEV_ERROR;
    uint8_t *o = v.iov_base;
    memcpy(o, hdr, h);
    evbuffer_remove(src, o + h, n);
    uint8_t *p = o + h;
    size_t k = 0;
    uint64_t m8;
    uint8_t mm[8] = {mask[0], mask[1], mask[2], mask[3],
                     mask[0], mask[1], mask[2], mask[3]};
    memcpy(&m8, mm, 8);
    for (; k + 8 <= n; k += 8) {
        uint64_t x;
        memcpy(&x, p + k, 8);
        x ^= m8;
        memcpy(p + k, &x, 8);
    }
    for (; k < n; k++)
        p[k] ^= mask[k & 3];
    v.iov_len = h + n;
    return evbuffer_commit_space(dst, &v, 1) == 0 ? BEV_OK : BEV_ERROR;
}

/* The answer to the broker's close frame: the same code, masked. */
static void close_reply(wsf_t *f, const uint8_t code[2], bool has_code)
{
    uint32_t m = next_mask(f);
    uint8_t fr[8] = {0x88, (uint8_t)(0x80 | (has_code ? 2 : 0))};
    memcpy(fr + 2, &m, 4);
    fr[6] = code[0] ^ fr[2];
    fr[7] = code[1] ^ fr[3];
    bufferevent_write(f->under, fr, has_code ? 8 : 6);
}

/* Server frames -> MQTT bytes. BEV_NEED_MORE when nothing could be taken
 * (libevent calls again while BEV_OK and bytes remain). */
static enum bufferevent_filter_result ws_in(struct evbuffer *src,
                                            struct evbuffer *dst,
                                            ev_ssize_t limit,
                                            enum bufferevent_flush_mode mode,
                                            void *ctx)
{
    wsf_t *f = ctx;
    bool took = false;
    for (;;) {
        size_t avail = evbuffer_get_length(src);
        if (f->closed) {
            evbuffer_drain(src, avail);
            return took || avail ? BEV_OK : BEV_NEED_MORE;
        }
        if (f->left) {
            if (!avail)
                break;
            size_t take = avail < f->left ? avail : (size_t)f->left;
            if (evbuffer_remove_buffer(src, dst, take) != (int)take)
                return BEV_ERROR;
            f->left -= take;
            took = true;
            continue;
        }
        uint8_t h[10];
        if (avail < 2)
            break;
        evbuffer_copyout(src, h, avail < 10 ? avail : 10);
        if (h[1] & 0x80)
            return BEV_ERROR; /* server frames are never masked */
        size_t hl = 2;
        uint64_t n = h[1] & 0x7f;
        if (n == 126)
            hl = 4;
        else if (n == 127)
            hl = 10;
        if (avail < hl)
            break;
        if (n == 126) {
            n = (uint64_t)h[2] << 8 | h[3];
        } else if (n == 127) {
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | h[2 + i];
        }
        uint8_t op = h[0] & 0x0f;
        if (op == 0x0 || op == 0x2) {
            evbuffer_drain(src, hl);
            f->left = n;
            took = true;
            continue;
        }
        if (avail < hl + n)
            break; /* a whole control frame is taken at once */
        uint8_t code[2] = {0, 0};
        if (op == 0x8 && n >= 2) {
            struct evbuffer_ptr at;
            evbuffer_ptr_set(src, &at, hl, EVBUFFER_PTR_SET);
            evbuffer_copyout_from(src, &at, code, 2);
        }
        evbuffer_drain(src, hl + n);
        took = true;
        if (op == 0x8) {
            f->closed = true;
            close_reply(f, code, n >= 2);
        } else if (op != 0x9 && op != 0xA) {
            return BEV_ERROR; /* text or reserved */
        }
    }
    return took ? BEV_OK : BEV_NEED_MORE;
}

struct bufferevent *ws_client_wrap(struct bufferevent *under)
{
    wsf_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->under = under;
    if (RAND_bytes((unsigned char *)&f->rng, sizeof(f->rng)) != 1 ||
        f->rng == 0)
        f->rng = 0x9e3779b97f4a7c15ull;
    /* Deferred callbacks: a write would otherwise run the client's write
     * callback (and its publisher pump) from inside the write. */
    struct bufferevent *bev = bufferevent_filter_new(
        under, ws_in, ws_out, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
        free, f);
    if (!bev)
        free(f);
    return bev;
}
