/*
 * blob.c - message and subscription encodings of the Redis backend (see
 * blob.h).
 */
#include "blob.h"

#include "starling/err.h"

#include <string.h>

#define BLOB_FORMAT 1
#define BLOB_HEAD (1 + 1 + 8 + 2 + 4 + 4)

static uint8_t *put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

size_t blob_msg_size(const msg_t *m)
{
    return BLOB_HEAD + m->topic_len + (size_t)m->payload_len + m->props_len;
}

void blob_msg_write(const msg_t *m, uint8_t *p)
{
    *p++ = BLOB_FORMAT;
    *p++ = (uint8_t)((m->qos & 3) | (m->retain ? 4 : 0));
    p = put_be(p, m->expiry_at, 8);
    p = put_be(p, m->topic_len, 2);
    memcpy(p, m->topic, m->topic_len);
    p += m->topic_len;
    p = put_be(p, m->payload_len, 4);
    if (m->payload_len)
        memcpy(p, m->payload, m->payload_len);
    p += m->payload_len;
    p = put_be(p, m->props_len, 4);
    if (m->props_len)
        memcpy(p, m->props, m->props_len);
}

int blob_msg_read(const void *buf, size_t len, msg_t **out)
{
    const uint8_t *p = buf;
    *out = NULL;
    if (len < BLOB_HEAD || p[0] != BLOB_FORMAT || (p[1] & ~7) ||
        (p[1] & 3) == 3)
        return SL_EMALFORMED;
    uint8_t flags = p[1];
    uint64_t expiry_at = get_be(p + 2, 8);
    size_t rest = len - 10;
    p += 10;
    size_t tlen = (size_t)get_be(p, 2);
    if (rest < 2 + tlen + 4)
        return SL_EMALFORMED;
    const uint8_t *topic = p + 2;
    p += 2 + tlen;
    rest -= 2 + tlen;
    size_t plen = (size_t)get_be(p, 4);
    if (rest < 4 + plen + 4)
        return SL_EMALFORMED;
    const uint8_t *payload = p + 4;
    p += 4 + plen;
    rest -= 4 + plen;
    size_t xlen = (size_t)get_be(p, 4);
    if (rest != 4 + xlen)
        return SL_EMALFORMED;
    *out = msg_new((const char *)topic, tlen, payload, plen, p + 4, xlen,
                   flags & 3, (flags & 4) != 0, expiry_at);
    return *out ? SL_OK : SL_ENOMEM;
}

void blob_sub_write(uint8_t opts, uint32_t sub_id, uint8_t out[BLOB_SUB_LEN])
{
    out[0] = opts;
    put_be(out + 1, sub_id, 4);
}

int blob_sub_read(const void *buf, size_t len, uint8_t *opts, uint32_t *sub_id)
{
    const uint8_t *p = buf;
    if (len != BLOB_SUB_LEN)
        return SL_EMALFORMED;
    *opts = p[0];
    *sub_id = (uint32_t)get_be(p + 1, 4);
    return SL_OK;
}
