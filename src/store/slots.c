/*
 * slots.c - Redis Cluster key slots, CLUSTER SLOTS parsing and MOVED/ASK
 * redirections (see slots.h). Pure: no I/O, no logging.
 */
#include "starling/slots.h"

#include "starling/err.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

uint16_t slots_crc16(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                 : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t slots_key(const void *key, size_t len)
{
    const char *k = key;
    const char *open = memchr(k, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - k) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return slots_crc16(open + 1, (size_t)(close - open - 1)) &
                   (SLOTS_N - 1);
    }
    return slots_crc16(k, len) & (SLOTS_N - 1);
}

/* ---- redirections ------------------------------------------------------ */

static int parse_uint(const char *s, size_t len, unsigned long max,
                      unsigned long *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 10)
        return SL_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return SL_EINVAL;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return SL_EINVAL;
    *out = v;
    return SL_OK;
}

/* "host:port", "[v6]:port" or "v6:port" (port after the last ':'). */
static int parse_endpoint(const char *s, size_t len, char *host, size_t hostlen,
                          int *port)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }
    if (!colon)
        return SL_EINVAL;
    unsigned long p;
    size_t plen = len - (size_t)(colon - s) - 1;
    if (parse_uint(colon + 1, plen, 65535, &p) != SL_OK || p == 0)
        return SL_EINVAL;
    size_t hlen = (size_t)(colon - s);
    const char *h = s;
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= hostlen)
        return SL_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return SL_OK;
}

int slots_redirect_parse(const char *text, size_t len, slots_redirect_t *out)
{
    size_t wlen;
    if (len > 6 && memcmp(text, "MOVED ", 6) == 0) {
        out->kind = SLOTS_MOVED;
        wlen = 6;
    } else if (len > 4 && memcmp(text, "ASK ", 4) == 0) {
        out->kind = SLOTS_ASK;
        wlen = 4;
    } else {
        return SL_EINVAL;
    }
    const char *p = text + wlen;
    size_t rest = len - wlen;
    const char *sp = memchr(p, ' ', rest);
    if (!sp)
        return SL_EINVAL;
    unsigned long slot;
    if (parse_uint(p, (size_t)(sp - p), SLOTS_N - 1, &slot) != SL_OK)
        return SL_EINVAL;
    out->slot = (uint16_t)slot;
    rest -= (size_t)(sp - p) + 1;
    return parse_endpoint(sp + 1, rest, out->host, sizeof(out->host),
                          &out->port);
}

/* ---- CLUSTER SLOTS ----------------------------------------------------- */

static int node_index(slots_map_t *m, const char *host, size_t hlen, int port,
                      uint16_t *idx)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].port == port && strlen(m->nodes[i].host) == hlen &&
            memcmp(m->nodes[i].host, host, hlen) == 0) {
            *idx = (uint16_t)i;
            return SL_OK;
        }
    }
    if (m->n_nodes >= SLOTS_NONE)
        return SL_EMALFORMED;
    slots_node_t *nn = realloc(m->nodes, (m->n_nodes + 1) * sizeof(*nn));
    if (!nn)
        return SL_ENOMEM;
    m->nodes = nn;
    memcpy(nn[m->n_nodes].host, host, hlen);
    nn[m->n_nodes].host[hlen] = '\0';
    nn[m->n_nodes].port = port;
    *idx = (uint16_t)m->n_nodes++;
    return SL_OK;
}

/* One [start, end, [host, port, ...], ...] range. */
static int parse_range(const redisReply *e, const char *default_host,
                       slots_map_t *m)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
        return SL_EMALFORMED;
    const redisReply *lo = e->element[0], *hi = e->element[1];
    const redisReply *ma = e->element[2];
    if (lo->type != REDIS_REPLY_INTEGER || hi->type != REDIS_REPLY_INTEGER ||
        lo->integer < 0 || hi->integer >= SLOTS_N || lo->integer > hi->integer)
        return SL_EMALFORMED;
    if (ma->type != REDIS_REPLY_ARRAY || ma->elements < 2 ||
        ma->element[0]->type != REDIS_REPLY_STRING ||
        ma->element[1]->type != REDIS_REPLY_INTEGER ||
        ma->element[1]->integer <= 0 || ma->element[1]->integer > 65535)
        return SL_EMALFORMED;
    const char *host = ma->element[0]->str;
    size_t hlen = ma->element[0]->len;
    if (hlen == 0 || (hlen == 1 && host[0] == '?')) {
        host = default_host ? default_host : "";
        hlen = strlen(host);
    }
    if (hlen == 0 || hlen >= SLOTS_HOST_MAX)
        return SL_EMALFORMED;
    uint16_t idx;
    int rc = node_index(m, host, hlen, (int)ma->element[1]->integer, &idx);
    if (rc != SL_OK)
        return rc;
    for (long long s = lo->integer; s <= hi->integer; s++)
        m->owner[s] = idx;
    return SL_OK;
}

int slots_map_parse(const redisReply *r, const char *default_host,
                    slots_map_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < SLOTS_N; i++)
        out->owner[i] = SLOTS_NONE;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return SL_EMALFORMED;
    for (size_t i = 0; i < r->elements; i++) {
        int rc = parse_range(r->element[i], default_host, out);
        if (rc != SL_OK) {
            slots_map_fini(out);
            return rc;
        }
    }
    return SL_OK;
}

void slots_map_fini(slots_map_t *m)
{
    free(m->nodes);
    m->nodes = NULL;
    m->n_nodes = 0;
}
