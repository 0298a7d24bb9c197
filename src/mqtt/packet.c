/*
 * packet.c - framing and decoding of MQTT packets (3.1, 3.1.1, 5.0).
 *
 * mqtt_frame() finds the end of the first packet in a byte stream from its
 * fixed header alone; mqtt_decode() then parses that one packet, checking
 * everything the specs make a decoding concern, and leaves views into the
 * caller's buffer in an mqtt_packet_t. One decoder per packet type, one
 * dispatcher that switches on the type. Which check yields which error is
 * summarised in mqtt.h above mqtt_decode().
 *
 * Every read goes through mqtt_rd_t (codec.h), which checks the bytes left
 * first; each decoder ends by requiring that nothing is left over.
 */
#include <stddef.h>

#include "codec.h"

/* ---- fixed header ------------------------------------------------------- */

/*
 * The remaining length at buf[1..]: SL_OK with *rl and *hlen (fixed header
 * size), SL_AGAIN if cut short, SL_EMALFORMED if a fourth byte still has its
 * continuation bit. Non-minimal encodings are accepted.
 */
static inline int read_length(const uint8_t *buf, size_t len, uint32_t *rl,
                              size_t *hlen)
{
    uint32_t val = 0;

    for (size_t i = 1; i <= 4; i++) {
        if (i >= len)
            return SL_AGAIN;
        uint8_t b = buf[i];
        val |= (uint32_t)(b & 0x7f) << (7 * (i - 1));
        if (!(b & 0x80)) {
            *rl = val;
            *hlen = i + 1;
            return SL_OK;
        }
    }
    return SL_EMALFORMED;
}

int mqtt_frame(const uint8_t *buf, size_t len, uint32_t max_size,
               uint32_t *total, mqtt_type_t *type)
{
    uint32_t rl;
    size_t hlen;

    *total = 0;
    if (len == 0)
        return SL_AGAIN;
    if ((buf[0] >> 4) == 0)
        return SL_EMALFORMED;
    int rc = read_length(buf, len, &rl, &hlen);
    if (rc != SL_OK)
        return rc;

    uint32_t size = (uint32_t)hlen + rl; /* <= 5 + MQTT_MAX_REMAINING */
    if (max_size != 0 && size > max_size)
        return SL_ETOOLARGE;
    *total = size;
    *type = (mqtt_type_t)(buf[0] >> 4);
    return len >= size ? SL_OK : SL_AGAIN;
}

/*
 * §2.1.3: PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0x2, every other type but
 * PUBLISH 0x0. 3.1 sends the first three with DUP set when it retries them.
 * PUBLISH: QoS 3 is malformed, and so (here) is DUP on a QoS 0 message.
 */
static int check_flags(mqtt_type_t type, uint8_t flags, int version)
{
    if (type == MQTT_PUBLISH) {
        uint8_t qos = (flags >> 1) & 3;
        if (qos == 3 || ((flags & 0x8) && qos == 0))
            return SL_EMALFORMED;
        return SL_OK;
    }
    uint8_t want = 0;
    if (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE ||
        type == MQTT_UNSUBSCRIBE) {
        want = 0x2;
        if (version == MQTT_V31)
            flags &= 0x7;
    }
    return flags == want ? SL_OK : SL_EMALFORMED;
}

static inline int finish(const mqtt_rd_t *r)
{
    return r->p == r->end ? SL_OK : SL_EMALFORMED;
}

/* Packet identifiers must be non-zero (§2.3.1 / §2.2.1). */
static inline int read_packet_id(mqtt_rd_t *r, uint16_t *id)
{
    int rc = mqtt_rd_u16(r, id);
    if (rc == SL_OK && *id == 0)
        return SL_EPROTOCOL;
    return rc;
}

static inline mqtt_bytes_t rest(mqtt_rd_t *r)
{
    mqtt_bytes_t b = {r->p, (uint32_t)mqtt_rd_left(r)};
    r->p = r->end;
    return b;
}

/* A topic name (PUBLISH, will): UTF-8 without wildcard characters
 * (§4.7.1); its emptiness is for the caller to judge. */
static inline int read_topic_name(mqtt_rd_t *r, mqtt_bytes_t *t)
{
    int rc = mqtt_rd_bin(r, t);
    if (rc != SL_OK)
        return rc;
    return mqtt_topic_name_scan(t->p, t->len);
}

/* ---- reason codes ------------------------------------------------------- */

static const uint8_t rc_connack[] = {
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {0x00, 0x10, 0x80, 0x83, 0x87,
                                    0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92};
static const uint8_t rc_suback[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                    0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect[] = {
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
    0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
    0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};
static const uint8_t rc_v3_suback[] = {0x00, 0x01, 0x02, 0x80};

#define IN(list, c) (memchr((list), (c), sizeof(list)) != NULL)

/* Is c a reason code the packet type may carry (§2.4 and each packet's
 * table)? v3 CONNACK: 0..5; v3 SUBACK: 0, 1, 2, 0x80. */
static bool code_valid(mqtt_type_t type, int version, uint8_t c)
{
    bool v5 = version == MQTT_V5;

    switch (type) {
    case MQTT_CONNACK:
        return v5 ? IN(rc_connack, c) : c <= 5;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        return IN(rc_puback, c);
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return IN(rc_pubrel, c);
    case MQTT_SUBACK:
        return v5 ? IN(rc_suback, c) : IN(rc_v3_suback, c);
    case MQTT_UNSUBACK:
        return IN(rc_unsuback, c);
    case MQTT_DISCONNECT:
        return IN(rc_disconnect, c);
    case MQTT_AUTH:
        return IN(rc_auth, c);
    default:
        return false;
    }
}

/* ---- CONNECT ------------------------------------------------------------ */

static bool known_protocol(const mqtt_bytes_t *name, uint8_t level)
{
    if (level == MQTT_V31)
        return name->len == 6 && memcmp(name->p, "MQIsdp", 6) == 0;
    if (level == MQTT_V311 || level == MQTT_V5)
        return name->len == 4 && memcmp(name->p, "MQTT", 4) == 0;
    return false;
}

/* §3.1.2.3: connect flags. */
static int connect_flags(mqtt_connect_t *c, uint8_t f)
{
    c->clean = f & 0x02;
    c->will = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40;
    c->has_username = f & 0x80;

    if (f & 0x01)
        return SL_EMALFORMED;
    if (c->will_qos == 3 || (!c->will && (c->will_qos || c->will_retain)))
        return SL_EMALFORMED;
    if (c->has_password && !c->has_username && c->version != MQTT_V5)
        return SL_EMALFORMED;
    return SL_OK;
}

static int connect_will(mqtt_rd_t *r, mqtt_connect_t *c)
{
    int rc;

    if (c->version == MQTT_V5) {
        rc = mqtt_props_decode(r, MQTT_WILL_PROPS, &c->will_props);
        if (rc != SL_OK)
            return rc;
    }
    rc = read_topic_name(r, &c->will_topic);
    if (rc != SL_OK)
        return rc;
    if (c->will_topic.len == 0)
        return SL_ETOPIC;
    return mqtt_rd_bin(r, &c->will_payload);
}

static int decode_connect(mqtt_rd_t *r, uint8_t flags, mqtt_packet_t *out)
{
    mqtt_connect_t *c = &out->u.connect;
    mqtt_bytes_t name;
    uint8_t cflags;
    int rc;

    if (flags != 0)
        return SL_EMALFORMED;
    if ((rc = mqtt_rd_bin(r, &name)) != SL_OK ||
        (rc = mqtt_rd_u8(r, &c->version)) != SL_OK)
        return rc;
    if (!known_protocol(&name, c->version))
        return SL_EVERSION;
    if ((rc = mqtt_rd_u8(r, &cflags)) != SL_OK ||
        (rc = connect_flags(c, cflags)) != SL_OK ||
        (rc = mqtt_rd_u16(r, &c->keepalive)) != SL_OK)
        return rc;
    if (c->version == MQTT_V5 &&
        (rc = mqtt_props_decode(r, MQTT_CONNECT, &out->props)) != SL_OK)
        return rc;
    if ((rc = mqtt_rd_str(r, &c->client_id)) != SL_OK)
        return rc;
    if (c->will && (rc = connect_will(r, c)) != SL_OK)
        return rc;
    if (c->has_username && (rc = mqtt_rd_str(r, &c->username)) != SL_OK)
        return rc;
    if (c->has_password && (rc = mqtt_rd_bin(r, &c->password)) != SL_OK)
        return rc;
    return finish(r);
}

/* ---- CONNACK ------------------------------------------------------------ */

static int decode_connack(mqtt_rd_t *r, int version, mqtt_packet_t *out)
{
    uint8_t ack_flags;
    int rc;

    if ((rc = mqtt_rd_u8(r, &ack_flags)) != SL_OK ||
        (rc = mqtt_rd_u8(r, &out->u.connack.code)) != SL_OK)
        return rc;
    if (version != MQTT_V31) { /* 3.1: the first byte is unused */
        if (ack_flags & 0xfe)
            return SL_EMALFORMED;
        out->u.connack.session_present = ack_flags & 1;
    }
    if (version == MQTT_V5 &&
        (rc = mqtt_props_decode(r, MQTT_CONNACK, &out->props)) != SL_OK)
        return rc;
    if ((rc = finish(r)) != SL_OK)
        return rc;
    return code_valid(MQTT_CONNACK, version, out->u.connack.code)
               ? SL_OK
               : SL_EPROTOCOL;
}

/* ---- PUBLISH ------------------------------------------------------------ */

static int decode_publish(mqtt_rd_t *r, int version, uint8_t flags,
                          mqtt_packet_t *out)
{
    mqtt_publish_t *p = &out->u.publish;
    int rc;

    p->dup = flags & 0x8;
    p->qos = (flags >> 1) & 3;
    p->retain = flags & 0x1;
    if ((rc = read_topic_name(r, &p->topic)) != SL_OK)
        return rc;
    if (p->qos && (rc = read_packet_id(r, &p->packet_id)) != SL_OK)
        return rc;
    if (version == MQTT_V5 &&
        (rc = mqtt_props_decode(r, MQTT_PUBLISH, &out->props)) != SL_OK)
        return rc;
    if (p->topic.len == 0) {
        /* §3.3.2.3.4: empty topic only with a topic alias, only in 5.0 */
        if (version != MQTT_V5)
            return SL_ETOPIC;
        if (!mqtt_props_has(&out->props, MQTT_P_TOPIC_ALIAS))
            return SL_EPROTOCOL;
    }
    p->payload = rest(r);
    return SL_OK;
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------ */

/*
 * 5.0 §3.4.2.1: the reason code may be omitted when 0 with no properties
 * (remaining length 2), the property length when there are none (3).
 */
static int decode_ack(mqtt_rd_t *r, int version, mqtt_packet_t *out)
{
    int rc = read_packet_id(r, &out->u.ack.packet_id);

    if (rc != SL_OK)
        return rc;
    if (version == MQTT_V5 && r->p != r->end) {
        mqtt_rd_u8(r, &out->u.ack.code); /* a byte is left: cannot fail */
        if (r->p != r->end &&
            (rc = mqtt_props_decode(r, out->type, &out->props)) != SL_OK)
            return rc;
    }
    if ((rc = finish(r)) != SL_OK)
        return rc;
    return code_valid(out->type, version, out->u.ack.code) ? SL_OK
                                                           : SL_EPROTOCOL;
}

/* ---- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------- */

/* 3.1.1 §3.8.3.1: bits 7-2 reserved, QoS 3 malformed. 5.0 §3.8.3.1: bits
 * 7-6 reserved (malformed), QoS 3 or retain handling 3 a protocol error. */
static int check_options(int version, uint8_t opt)
{
    if (version != MQTT_V5)
        return (opt & 0xfc) || (opt & 3) == 3 ? SL_EMALFORMED : SL_OK;
    if (opt & 0xc0)
        return SL_EMALFORMED;
    if ((opt & 3) == 3 || ((opt >> 4) & 3) == 3)
        return SL_EPROTOCOL;
    return SL_OK;
}

static int decode_subscribe(mqtt_rd_t *r, int version, mqtt_packet_t *out)
{
    mqtt_bytes_t filter;
    uint8_t opt;
    int rc = read_packet_id(r, &out->u.sub.packet_id);

    if (rc != SL_OK)
        return rc;
    if (version == MQTT_V5 &&
        (rc = mqtt_props_decode(r, out->type, &out->props)) != SL_OK)
        return rc;
    out->u.sub.list.p = r->p;
    out->u.sub.list.len = (uint32_t)mqtt_rd_left(r);
    while (r->p != r->end) {
        if ((rc = mqtt_rd_str(r, &filter)) != SL_OK)
            return rc;
        if (out->type == MQTT_SUBSCRIBE &&
            ((rc = mqtt_rd_u8(r, &opt)) != SL_OK ||
             (rc = check_options(version, opt)) != SL_OK))
            return rc;
        out->u.sub.count++;
    }
    /* 3.1.1 §3.8.3 / §3.10.3, 5.0 §3.8.3 / §3.10.3: at least one filter */
    return out->u.sub.count ? SL_OK : SL_EPROTOCOL;
}

/* ---- SUBACK / UNSUBACK -------------------------------------------------- */

static int decode_suback(mqtt_rd_t *r, int version, mqtt_packet_t *out)
{
    int rc = read_packet_id(r, &out->u.suback.packet_id);

    if (rc != SL_OK)
        return rc;
    if (version != MQTT_V5 && out->type == MQTT_UNSUBACK)
        return finish(r);
    if (version == MQTT_V5 &&
        (rc = mqtt_props_decode(r, out->type, &out->props)) != SL_OK)
        return rc;
    out->u.suback.codes = rest(r);
    if (out->u.suback.codes.len == 0)
        return SL_EPROTOCOL;
    for (uint32_t i = 0; i < out->u.suback.codes.len; i++)
        if (!code_valid(out->type, version, out->u.suback.codes.p[i]))
            return SL_EPROTOCOL;
    return SL_OK;
}

/* ---- DISCONNECT / AUTH (5.0) -------------------------------------------- */

/* §3.14.2.1 / §3.15.2.1: remaining length 0 means code 0 and no
 * properties, 1 a code and no properties. */
static int decode_reason(mqtt_rd_t *r, int version, mqtt_packet_t *out)
{
    int rc;

    if (version != MQTT_V5)
        return finish(r); /* 3.1/3.1.1 DISCONNECT: empty */
    if (r->p != r->end) {
        mqtt_rd_u8(r, &out->u.reason.code); /* a byte is left */
        if (r->p != r->end &&
            (rc = mqtt_props_decode(r, out->type, &out->props)) != SL_OK)
            return rc;
    }
    if ((rc = finish(r)) != SL_OK)
        return rc;
    return code_valid(out->type, version, out->u.reason.code) ? SL_OK
                                                              : SL_EPROTOCOL;
}

/* ---- dispatcher --------------------------------------------------------- */

/* memset in 64-byte steps, for constant n: compilers turn each step into
 * a few vector stores, where one large memset can become a slow `rep stos`
 * (a third of the time of decoding a small PUBLISH). */
static inline void zero(void *p, size_t n)
{
    uint8_t *b = p;

#pragma GCC unroll 8
    for (size_t i = 0; i < n; i += 64)
        memset(b + i, 0, n - i < 64 ? n - i : 64);
}

/* Zero what the decoders may leave unset: the common part and the union
 * member of the type (CONNECT has the largest one). */
static inline void packet_reset(mqtt_packet_t *out, mqtt_type_t type)
{
    _Static_assert(sizeof out->u.publish >= sizeof out->u.sub &&
                       sizeof out->u.publish >= sizeof out->u.suback &&
                       sizeof out->u.publish >= sizeof out->u.ack &&
                       sizeof out->u.publish >= sizeof out->u.connack,
                   "u.publish is the largest member after u.connect");
    zero(out, offsetof(mqtt_packet_t, u) + sizeof out->u.publish);
    if (type == MQTT_CONNECT)
        zero(&out->u, sizeof out->u);
}

int mqtt_decode(const uint8_t *buf, size_t len, int version, mqtt_packet_t *out)
{
    uint32_t rl;
    size_t hlen;

    if (len == 0)
        return SL_EMALFORMED;
    int rc = read_length(buf, len, &rl, &hlen);
    if (rc == SL_AGAIN || (rc == SL_OK && hlen + rl != len))
        return SL_EMALFORMED;
    if (rc != SL_OK)
        return rc;

    mqtt_type_t type = (mqtt_type_t)(buf[0] >> 4);
    uint8_t flags = buf[0] & 0x0f;
    packet_reset(out, type);
    out->type = type;
    out->flags = flags;
    out->size = (uint32_t)len;
    mqtt_rd_t r = {buf + hlen, buf + len};

    if (type == MQTT_CONNECT)
        return decode_connect(&r, flags, out);
    if (version < MQTT_V31 || version > MQTT_V5)
        return SL_EINVAL;
    if ((rc = check_flags(type, flags, version)) != SL_OK)
        return rc;

    switch (type) {
    case MQTT_CONNACK:
        return decode_connack(&r, version, out);
    case MQTT_PUBLISH:
        return decode_publish(&r, version, flags, out);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return decode_ack(&r, version, out);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return decode_subscribe(&r, version, out);
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return decode_suback(&r, version, out);
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        return finish(&r);
    case MQTT_DISCONNECT:
        return decode_reason(&r, version, out);
    case MQTT_AUTH:
        if (version != MQTT_V5) /* reserved type before 5.0 */
            return SL_EMALFORMED;
        return decode_reason(&r, version, out);
    default:
        return SL_EMALFORMED; /* type 0 */
    }
}

/* ---- iteration ---------------------------------------------------------- */

bool mqtt_sub_next(const mqtt_packet_t *pkt, int version, size_t *cursor,
                   mqtt_sub_t *sub)
{
    const mqtt_bytes_t *list = &pkt->u.sub.list;
    uint8_t opt = 0;

    if (*cursor >= list->len)
        return false;
    mqtt_rd_t r = {list->p + *cursor, list->p + list->len};
    memset(sub, 0, sizeof *sub);
    if (mqtt_rd_bin(&r, &sub->filter) != SL_OK)
        return false;
    if (pkt->type == MQTT_SUBSCRIBE && mqtt_rd_u8(&r, &opt) != SL_OK)
        return false;
    sub->qos = opt & 3;
    if (version == MQTT_V5) {
        sub->no_local = (opt >> 2) & 1;
        sub->retain_as_published = (opt >> 3) & 1;
        sub->retain_handling = (opt >> 4) & 3;
    }
    *cursor = (size_t)(r.p - list->p);
    return true;
}
