/*
 * encode.c - MQTT packet encoders (3.1, 3.1.1, 5.0) and the mqtt_put_*
 * writers, into a caller-owned mqtt_out_t.
 *
 * Each packet encoder computes the remaining length first, reserves the
 * whole packet in one step, then fills it with unchecked writes: one bounds
 * check per packet, not per field. When the packet does not fit, nothing is
 * written and out.len still grows by the packet's size, so the caller knows
 * how much room to retry with. A packet that cannot exist (a field over
 * 65535 bytes, a remaining length over 268435455) sets out.len to
 * MQTT_OUT_OVERFLOW.
 */
#include "codec.h"

/* Larger than any remaining length: makes the final check fail. */
#define TOO_BIG ((size_t)MQTT_MAX_REMAINING + 1)

static void poison(mqtt_out_t *o)
{
    o->len = MQTT_OUT_OVERFLOW;
}

/* Room for n bytes at the end of o, or NULL (then only the length grows). */
static inline uint8_t *reserve(mqtt_out_t *o, size_t n)
{
    if (o->len <= o->cap && n <= o->cap - o->len) {
        uint8_t *w = o->buf + o->len;
        o->len += n;
        return w;
    }
    o->len = o->len > MQTT_OUT_OVERFLOW - n ? MQTT_OUT_OVERFLOW : o->len + n;
    return NULL;
}

size_t mqtt_varint_size(uint32_t v)
{
    if (v < 128u)
        return 1;
    if (v < 16384u)
        return 2;
    if (v < 2097152u)
        return 3;
    return 4;
}

/* ---- low level writers -------------------------------------------------- */

void mqtt_put_u8(mqtt_out_t *o, uint8_t v)
{
    uint8_t *w = reserve(o, 1);
    if (w)
        mqtt_w_u8(w, v);
}

void mqtt_put_u16(mqtt_out_t *o, uint16_t v)
{
    uint8_t *w = reserve(o, 2);
    if (w)
        mqtt_w_u16(w, v);
}

void mqtt_put_u32(mqtt_out_t *o, uint32_t v)
{
    uint8_t *w = reserve(o, 4);
    if (w)
        mqtt_w_u32(w, v);
}

void mqtt_put_varint(mqtt_out_t *o, uint32_t v)
{
    if (v > MQTT_MAX_REMAINING) {
        poison(o);
        return;
    }
    uint8_t *w = reserve(o, mqtt_varint_size(v));
    if (w)
        mqtt_w_varint(w, v);
}

void mqtt_put_bytes(mqtt_out_t *o, const void *p, size_t len)
{
    if (len == 0)
        return;
    uint8_t *w = reserve(o, len);
    if (w)
        mqtt_w_bytes(w, p, len);
}

void mqtt_put_str(mqtt_out_t *o, const void *p, size_t len)
{
    if (len > UINT16_MAX) {
        poison(o);
        return;
    }
    uint8_t *w = reserve(o, 2 + len);
    if (w)
        mqtt_w_str(w, p, len);
}

/* ---- packet helpers ----------------------------------------------------- */

/* Wire size of a length-prefixed string or binary field. */
static inline size_t str_size(size_t len)
{
    return len <= UINT16_MAX ? 2 + len : TOO_BIG;
}

static inline uint32_t props_len(const mqtt_bytes_t *props)
{
    return props ? props->len : 0;
}

/* Wire size of a v5 property block with its length prefix. */
static inline size_t props_size(const mqtt_bytes_t *props)
{
    uint32_t n = props_len(props);
    return n <= MQTT_MAX_REMAINING ? mqtt_varint_size(n) + n : TOO_BIG;
}

static inline uint8_t *w_props(uint8_t *w, const mqtt_bytes_t *props)
{
    uint32_t n = props_len(props);
    w = mqtt_w_varint(w, n);
    return n ? mqtt_w_bytes(w, props->p, n) : w;
}

/*
 * Reserve a packet of remaining length rl (minus the last `omit` bytes,
 * which the caller sends separately) and write its fixed header. NULL when
 * it does not fit or cannot be encoded.
 */
static uint8_t *start(mqtt_out_t *o, uint8_t hdr, size_t rl, size_t omit)
{
    if (rl > MQTT_MAX_REMAINING) {
        poison(o);
        return NULL;
    }
    size_t total = 1 + mqtt_varint_size((uint32_t)rl) + rl;
    uint8_t *w = reserve(o, total - omit);
    if (!w)
        return NULL;
    *w++ = hdr;
    return mqtt_w_varint(w, (uint32_t)rl);
}

/* ---- CONNECT / CONNACK -------------------------------------------------- */

static uint8_t connect_flags(const mqtt_connect_t *c)
{
    uint8_t f = (uint8_t)(c->clean << 1);

    if (c->will)
        f |= (uint8_t)(0x04 | (c->will_qos & 3) << 3 | c->will_retain << 5);
    if (c->has_password)
        f |= 0x40;
    if (c->has_username)
        f |= 0x80;
    return f;
}

static size_t connect_size(const mqtt_connect_t *c, const mqtt_bytes_t *props,
                           size_t name_len)
{
    bool v5 = c->version == MQTT_V5;
    size_t rl = str_size(name_len) + 1 + 1 + 2 + str_size(c->client_id.len);

    if (v5)
        rl += props_size(props);
    if (c->will) {
        rl += str_size(c->will_topic.len) + str_size(c->will_payload.len);
        if (v5)
            rl += props_size(&c->will_props.raw);
    }
    if (c->has_username)
        rl += str_size(c->username.len);
    if (c->has_password)
        rl += str_size(c->password.len);
    return rl;
}

void mqtt_enc_connect(mqtt_out_t *o, const mqtt_connect_t *c,
                      const mqtt_bytes_t *props)
{
    const char *name = c->version == MQTT_V31 ? "MQIsdp" : "MQTT";
    size_t name_len = c->version == MQTT_V31 ? 6 : 4;
    bool v5 = c->version == MQTT_V5;
    uint8_t *w =
        start(o, MQTT_CONNECT << 4, connect_size(c, props, name_len), 0);
    if (!w)
        return;

    w = mqtt_w_str(w, name, name_len);
    w = mqtt_w_u8(w, c->version);
    w = mqtt_w_u8(w, connect_flags(c));
    w = mqtt_w_u16(w, c->keepalive);
    if (v5)
        w = w_props(w, props);
    w = mqtt_w_str(w, c->client_id.p, c->client_id.len);
    if (c->will) {
        if (v5)
            w = w_props(w, &c->will_props.raw);
        w = mqtt_w_str(w, c->will_topic.p, c->will_topic.len);
        w = mqtt_w_str(w, c->will_payload.p, c->will_payload.len);
    }
    if (c->has_username)
        w = mqtt_w_str(w, c->username.p, c->username.len);
    if (c->has_password)
        mqtt_w_str(w, c->password.p, c->password.len);
}

void mqtt_enc_connack(mqtt_out_t *o, int version, bool session_present,
                      uint8_t code, const mqtt_bytes_t *props)
{
    bool v5 = version == MQTT_V5;
    uint8_t *w =
        start(o, MQTT_CONNACK << 4, 2 + (v5 ? props_size(props) : 0), 0);
    if (!w)
        return;
    w = mqtt_w_u8(w, session_present ? 1 : 0);
    w = mqtt_w_u8(w, code);
    if (v5)
        w_props(w, props);
}

/* ---- PUBLISH ------------------------------------------------------------ */

static size_t publish_rl(int version, const mqtt_publish_t *p,
                         size_t payload_len, const mqtt_bytes_t *props)
{
    size_t rl = str_size(p->topic.len) + (p->qos ? 2 : 0);

    if (version == MQTT_V5)
        rl += props_size(props);
    return payload_len <= MQTT_MAX_REMAINING ? rl + payload_len : TOO_BIG;
}

static uint8_t *publish_header(mqtt_out_t *o, int version,
                               const mqtt_publish_t *p, size_t payload_len,
                               const mqtt_bytes_t *props, size_t omit)
{
    uint8_t hdr = (uint8_t)(MQTT_PUBLISH << 4 | p->dup << 3 |
                            (p->qos & 3) << 1 | p->retain);
    uint8_t *w =
        start(o, hdr, publish_rl(version, p, payload_len, props), omit);
    if (!w)
        return NULL;
    w = mqtt_w_str(w, p->topic.p, p->topic.len);
    if (p->qos)
        w = mqtt_w_u16(w, p->packet_id);
    if (version == MQTT_V5)
        w = w_props(w, props);
    return w;
}

void mqtt_enc_publish(mqtt_out_t *o, int version, const mqtt_publish_t *p,
                      const mqtt_bytes_t *props)
{
    uint8_t *w = publish_header(o, version, p, p->payload.len, props, 0);
    if (w && p->payload.len)
        mqtt_w_bytes(w, p->payload.p, p->payload.len);
}

void mqtt_enc_publish_header(mqtt_out_t *o, int version,
                             const mqtt_publish_t *p, size_t payload_len,
                             const mqtt_bytes_t *props)
{
    publish_header(o, version, p, payload_len, props, payload_len);
}

/* ---- acknowledgements ------------------------------------------------- */

void mqtt_enc_ack(mqtt_out_t *o, int version, mqtt_type_t type,
                  uint16_t packet_id, uint8_t code, const mqtt_bytes_t *props)
{
    uint8_t hdr = (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0));
    bool v5 = version == MQTT_V5;
    bool with_props = v5 && props_len(props) > 0;
    bool with_code = v5 && (code != 0 || with_props);
    size_t rl = 2 + (with_code ? 1 : 0) + (with_props ? props_size(props) : 0);

    uint8_t *w = start(o, hdr, rl, 0);
    if (!w)
        return;
    w = mqtt_w_u16(w, packet_id);
    if (with_code)
        w = mqtt_w_u8(w, code);
    if (with_props)
        w_props(w, props);
}

/* ---- SUBSCRIBE / UNSUBSCRIBE / SUBACK / UNSUBACK ------------------------ */

static uint8_t sub_options(int version, const mqtt_sub_t *s)
{
    uint8_t opt = s->qos & 3;

    if (version == MQTT_V5)
        opt |= (uint8_t)(s->no_local << 2 | s->retain_as_published << 3 |
                         (s->retain_handling & 3) << 4);
    return opt;
}

void mqtt_enc_subscribe(mqtt_out_t *o, int version, uint16_t packet_id,
                        const mqtt_sub_t *subs, size_t n,
                        const mqtt_bytes_t *props)
{
    size_t rl = 2 + (version == MQTT_V5 ? props_size(props) : 0);

    for (size_t i = 0; i < n && rl <= MQTT_MAX_REMAINING; i++)
        rl += str_size(subs[i].filter.len) + 1;
    uint8_t *w = start(o, MQTT_SUBSCRIBE << 4 | 2, rl, 0);
    if (!w)
        return;
    w = mqtt_w_u16(w, packet_id);
    if (version == MQTT_V5)
        w = w_props(w, props);
    for (size_t i = 0; i < n; i++) {
        w = mqtt_w_str(w, subs[i].filter.p, subs[i].filter.len);
        w = mqtt_w_u8(w, sub_options(version, &subs[i]));
    }
}

void mqtt_enc_unsubscribe(mqtt_out_t *o, int version, uint16_t packet_id,
                          const mqtt_bytes_t *filters, size_t n,
                          const mqtt_bytes_t *props)
{
    size_t rl = 2 + (version == MQTT_V5 ? props_size(props) : 0);

    for (size_t i = 0; i < n && rl <= MQTT_MAX_REMAINING; i++)
        rl += str_size(filters[i].len);
    uint8_t *w = start(o, MQTT_UNSUBSCRIBE << 4 | 2, rl, 0);
    if (!w)
        return;
    w = mqtt_w_u16(w, packet_id);
    if (version == MQTT_V5)
        w = w_props(w, props);
    for (size_t i = 0; i < n; i++)
        w = mqtt_w_str(w, filters[i].p, filters[i].len);
}

void mqtt_enc_suback(mqtt_out_t *o, int version, mqtt_type_t type,
                     uint16_t packet_id, const uint8_t *codes, size_t n,
                     const mqtt_bytes_t *props)
{
    bool v5 = version == MQTT_V5;

    if (!v5 && type == MQTT_UNSUBACK)
        n = 0; /* 3.1/3.1.1 UNSUBACK: the packet identifier only */
    size_t rl = 2 + (v5 ? props_size(props) : 0) +
                (n <= MQTT_MAX_REMAINING ? n : TOO_BIG);
    uint8_t *w = start(o, (uint8_t)(type << 4), rl, 0);
    if (!w)
        return;
    w = mqtt_w_u16(w, packet_id);
    if (v5)
        w = w_props(w, props);
    if (n)
        mqtt_w_bytes(w, codes, n);
}

/* ---- PINGREQ / PINGRESP / DISCONNECT / AUTH ----------------------------- */

void mqtt_enc_pingreq(mqtt_out_t *o)
{
    start(o, MQTT_PINGREQ << 4, 0, 0);
}

void mqtt_enc_pingresp(mqtt_out_t *o)
{
    start(o, MQTT_PINGRESP << 4, 0, 0);
}

void mqtt_enc_reason(mqtt_out_t *o, int version, mqtt_type_t type, uint8_t code,
                     const mqtt_bytes_t *props)
{
    if (version != MQTT_V5) {
        if (type == MQTT_DISCONNECT) /* AUTH does not exist before 5.0 */
            start(o, MQTT_DISCONNECT << 4, 0, 0);
        return;
    }
    bool with_props = props_len(props) > 0;
    bool with_code = code != 0 || with_props;
    size_t rl = (with_code ? 1 : 0) + (with_props ? props_size(props) : 0);

    uint8_t *w = start(o, (uint8_t)(type << 4), rl, 0);
    if (!w)
        return;
    if (with_code)
        w = mqtt_w_u8(w, code);
    if (with_props)
        w_props(w, props);
}
