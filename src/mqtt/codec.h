/*
 * codec.h - internals shared by the files of src/mqtt/ (not installed).
 *
 * mqtt_rd_t is a bounds-checked cursor over the bytes of one packet: every
 * read checks what is left first and fails with SL_EMALFORMED when a field
 * would run past the end. The mqtt_w_* writers are the opposite: unchecked,
 * for encoders that have already reserved the exact room they fill.
 */
#ifndef STARLING_MQTT_CODEC_H
#define STARLING_MQTT_CODEC_H

#include <string.h>

#include "starling/err.h"
#include "starling/mqtt.h"

typedef struct mqtt_rd {
    const uint8_t *p;
    const uint8_t *end;
} mqtt_rd_t;

static inline size_t mqtt_rd_left(const mqtt_rd_t *r)
{
    return (size_t)(r->end - r->p);
}

static inline int mqtt_rd_u8(mqtt_rd_t *r, uint8_t *v)
{
    if (r->p == r->end)
        return SL_EMALFORMED;
    *v = *r->p++;
    return SL_OK;
}

static inline int mqtt_rd_u16(mqtt_rd_t *r, uint16_t *v)
{
    if (mqtt_rd_left(r) < 2)
        return SL_EMALFORMED;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return SL_OK;
}

static inline int mqtt_rd_u32(mqtt_rd_t *r, uint32_t *v)
{
    if (mqtt_rd_left(r) < 4)
        return SL_EMALFORMED;
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 |
         (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    return SL_OK;
}

/* Variable byte integer (§1.5.5): at most 4 bytes. */
static inline int mqtt_rd_varint(mqtt_rd_t *r, uint32_t *v)
{
    uint32_t val = 0;

    for (int i = 0; i < 4; i++) {
        if (r->p == r->end)
            return SL_EMALFORMED;
        uint8_t b = *r->p++;
        val |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = val;
            return SL_OK;
        }
    }
    return SL_EMALFORMED;
}

/* Binary data: a 2-byte length, then that many bytes. */
static inline int mqtt_rd_bin(mqtt_rd_t *r, mqtt_bytes_t *b)
{
    if (mqtt_rd_left(r) < 2)
        return SL_EMALFORMED;
    uint32_t n = (uint32_t)(r->p[0] << 8 | r->p[1]);
    if (mqtt_rd_left(r) - 2 < n)
        return SL_EMALFORMED;
    b->p = r->p + 2;
    b->len = n;
    r->p += 2 + n;
    return SL_OK;
}

/* UTF-8 encoded string: binary data that must pass mqtt_utf8_valid(). */
static inline int mqtt_rd_str(mqtt_rd_t *r, mqtt_bytes_t *b)
{
    int rc = mqtt_rd_bin(r, b);
    if (rc != SL_OK)
        return rc;
    return mqtt_utf8_valid(b->p, b->len) ? SL_OK : SL_EUTF8;
}

static inline uint8_t *mqtt_w_u8(uint8_t *w, uint8_t v)
{
    *w = v;
    return w + 1;
}

static inline uint8_t *mqtt_w_u16(uint8_t *w, uint16_t v)
{
    w[0] = (uint8_t)(v >> 8);
    w[1] = (uint8_t)v;
    return w + 2;
}

static inline uint8_t *mqtt_w_u32(uint8_t *w, uint32_t v)
{
    w[0] = (uint8_t)(v >> 24);
    w[1] = (uint8_t)(v >> 16);
    w[2] = (uint8_t)(v >> 8);
    w[3] = (uint8_t)v;
    return w + 4;
}

/* v must be <= MQTT_MAX_REMAINING (callers check). */
static inline uint8_t *mqtt_w_varint(uint8_t *w, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        *w++ = v ? (uint8_t)(b | 0x80) : b;
    } while (v);
    return w;
}

static inline uint8_t *mqtt_w_bytes(uint8_t *w, const void *p, size_t n)
{
    if (n)
        memcpy(w, p, n);
    return w + n;
}

/* len must be <= 65535 (callers check). */
static inline uint8_t *mqtt_w_str(uint8_t *w, const void *p, size_t n)
{
    return mqtt_w_bytes(mqtt_w_u16(w, (uint16_t)n), p, n);
}

/* A topic name (PUBLISH, will) in one pass: SL_EUTF8 if not valid UTF-8,
 * else SL_ETOPIC if it holds '+' or '#', else SL_OK. */
int mqtt_topic_name_scan(const uint8_t *s, size_t len);

/*
 * Decode a v5 property block (length prefix included) at r for packet type
 * ptype (or MQTT_WILL_PROPS) into *props, which the caller has zeroed.
 * SL_EMALFORMED: truncated, unknown identifier or one not allowed for ptype.
 * SL_EPROPERTY: duplicated single-valued property or value out of range.
 * SL_EUTF8: a string property is not valid UTF-8.
 */
int mqtt_props_decode(mqtt_rd_t *r, int ptype, mqtt_props_t *props);

#endif
