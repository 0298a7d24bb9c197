/*
 * props.c - MQTT 5.0 properties (§2.2.2): decoding and validation of a
 * property block, iterators over its multi-valued properties, and the
 * mqtt_prop_* helpers that append one property to a block being built.
 *
 * Which identifier may appear in which packet is the table of §2.2.2.2
 * (prop_info below). Errors, chosen per the spec's wording:
 *   - an unknown identifier, or one not valid for the packet type, or a
 *     value cut short: Malformed Packet -> SL_EMALFORMED (0x81);
 *   - a single-valued property given twice, or a value out of range
 *     ("It is a Protocol Error to include ... more than once, or to have a
 *     value other than 0 or 1"): SL_EPROPERTY (0x82 Protocol Error);
 *   - a string that is not valid UTF-8: SL_EUTF8 (0x81).
 * Only the user property, and the subscription identifier in PUBLISH, may
 * repeat. Rules that depend on the direction or on the session (a client's
 * PUBLISH must not carry a subscription identifier; topic alias above the
 * negotiated maximum) are the broker's to check.
 */
#include "codec.h"

enum {
    T_BYTE = 1,
    T_U16,
    T_U32,
    T_VARINT,
    T_STR,
    T_BIN,
    T_PAIR,
};

#define PK(t) (1u << (t))
#define PK_PUBACKS                                                             \
    (PK(MQTT_PUBACK) | PK(MQTT_PUBREC) | PK(MQTT_PUBREL) | PK(MQTT_PUBCOMP))
#define PK_MESSAGE (PK(MQTT_PUBLISH) | PK(MQTT_WILL_PROPS))
/* every packet type that has properties, and the will */
#define PK_ANY                                                                 \
    (((PK(MQTT_AUTH + 1) - PK(MQTT_CONNECT)) | PK(MQTT_WILL_PROPS)) &          \
     ~(PK(MQTT_PINGREQ) | PK(MQTT_PINGRESP)))

typedef struct prop_info {
    uint8_t type;
    uint32_t allowed; /* bit per packet type (MQTT_WILL_PROPS = 16) */
} prop_info_t;

static const prop_info_t prop_info[64] = {
    [MQTT_P_PAYLOAD_FORMAT] = {T_BYTE, PK_MESSAGE},
    [MQTT_P_MESSAGE_EXPIRY] = {T_U32, PK_MESSAGE},
    [MQTT_P_CONTENT_TYPE] = {T_STR, PK_MESSAGE},
    [MQTT_P_RESPONSE_TOPIC] = {T_STR, PK_MESSAGE},
    [MQTT_P_CORRELATION_DATA] = {T_BIN, PK_MESSAGE},
    [MQTT_P_SUBSCRIPTION_ID] = {T_VARINT,
                                PK(MQTT_PUBLISH) | PK(MQTT_SUBSCRIBE)},
    [MQTT_P_SESSION_EXPIRY] = {T_U32, PK(MQTT_CONNECT) | PK(MQTT_CONNACK) |
                                          PK(MQTT_DISCONNECT)},
    [MQTT_P_ASSIGNED_CLIENT_ID] = {T_STR, PK(MQTT_CONNACK)},
    [MQTT_P_SERVER_KEEP_ALIVE] = {T_U16, PK(MQTT_CONNACK)},
    [MQTT_P_AUTH_METHOD] = {T_STR, PK(MQTT_CONNECT) | PK(MQTT_CONNACK) |
                                       PK(MQTT_AUTH)},
    [MQTT_P_AUTH_DATA] = {T_BIN,
                          PK(MQTT_CONNECT) | PK(MQTT_CONNACK) | PK(MQTT_AUTH)},
    [MQTT_P_REQUEST_PROBLEM_INFO] = {T_BYTE, PK(MQTT_CONNECT)},
    [MQTT_P_WILL_DELAY] = {T_U32, PK(MQTT_WILL_PROPS)},
    [MQTT_P_REQUEST_RESPONSE_INFO] = {T_BYTE, PK(MQTT_CONNECT)},
    [MQTT_P_RESPONSE_INFO] = {T_STR, PK(MQTT_CONNACK)},
    [MQTT_P_SERVER_REFERENCE] = {T_STR, PK(MQTT_CONNACK) | PK(MQTT_DISCONNECT)},
    [MQTT_P_REASON_STRING] = {T_STR, PK(MQTT_CONNACK) | PK_PUBACKS |
                                         PK(MQTT_SUBACK) | PK(MQTT_UNSUBACK) |
                                         PK(MQTT_DISCONNECT) | PK(MQTT_AUTH)},
    [MQTT_P_RECEIVE_MAXIMUM] = {T_U16, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_P_TOPIC_ALIAS_MAXIMUM] = {T_U16, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_P_TOPIC_ALIAS] = {T_U16, PK(MQTT_PUBLISH)},
    [MQTT_P_MAXIMUM_QOS] = {T_BYTE, PK(MQTT_CONNACK)},
    [MQTT_P_RETAIN_AVAILABLE] = {T_BYTE, PK(MQTT_CONNACK)},
    [MQTT_P_USER_PROPERTY] = {T_PAIR, PK_ANY},
    [MQTT_P_MAXIMUM_PACKET_SIZE] = {T_U32, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_P_WILDCARD_SUB_AVAILABLE] = {T_BYTE, PK(MQTT_CONNACK)},
    [MQTT_P_SUB_ID_AVAILABLE] = {T_BYTE, PK(MQTT_CONNACK)},
    [MQTT_P_SHARED_SUB_AVAILABLE] = {T_BYTE, PK(MQTT_CONNACK)},
};

/* One decoded value, whatever its type. */
typedef struct prop_val {
    uint32_t n;
    mqtt_bytes_t s;
    mqtt_bytes_t s2;
} prop_val_t;

static int read_value(mqtt_rd_t *r, int type, prop_val_t *v)
{
    uint8_t b = 0;
    uint16_t h = 0;
    int rc;

    switch (type) {
    case T_BYTE:
        rc = mqtt_rd_u8(r, &b);
        v->n = b;
        return rc;
    case T_U16:
        rc = mqtt_rd_u16(r, &h);
        v->n = h;
        return rc;
    case T_U32:
        return mqtt_rd_u32(r, &v->n);
    case T_VARINT:
        return mqtt_rd_varint(r, &v->n);
    case T_STR:
        return mqtt_rd_str(r, &v->s);
    case T_BIN:
        return mqtt_rd_bin(r, &v->s);
    case T_PAIR:
        rc = mqtt_rd_str(r, &v->s);
        return rc != SL_OK ? rc : mqtt_rd_str(r, &v->s2);
    }
    return SL_EMALFORMED;
}

/* Values that must be 0 or 1. */
static int flag_value(uint8_t *field, uint32_t n)
{
    if (n > 1)
        return SL_EPROPERTY;
    *field = (uint8_t)n;
    return SL_OK;
}

/* Values for which 0 is a protocol error. */
static int nonzero_u16(uint16_t *field, uint32_t n)
{
    if (n == 0)
        return SL_EPROPERTY;
    *field = (uint16_t)n;
    return SL_OK;
}

static int store_value(mqtt_props_t *p, int id, const prop_val_t *v)
{
    switch (id) {
    case MQTT_P_PAYLOAD_FORMAT:
        return flag_value(&p->payload_format, v->n);
    case MQTT_P_MESSAGE_EXPIRY:
        p->message_expiry = v->n;
        break;
    case MQTT_P_CONTENT_TYPE:
        p->content_type = v->s;
        break;
    case MQTT_P_RESPONSE_TOPIC:
        p->response_topic = v->s;
        break;
    case MQTT_P_CORRELATION_DATA:
        p->correlation_data = v->s;
        break;
    case MQTT_P_SUBSCRIPTION_ID:
        if (v->n == 0)
            return SL_EPROPERTY;
        if (p->n_subscription_ids++ == 0)
            p->subscription_id = v->n;
        break;
    case MQTT_P_SESSION_EXPIRY:
        p->session_expiry = v->n;
        break;
    case MQTT_P_ASSIGNED_CLIENT_ID:
        p->assigned_client_id = v->s;
        break;
    case MQTT_P_SERVER_KEEP_ALIVE:
        p->server_keep_alive = (uint16_t)v->n;
        break;
    case MQTT_P_AUTH_METHOD:
        p->auth_method = v->s;
        break;
    case MQTT_P_AUTH_DATA:
        p->auth_data = v->s;
        break;
    case MQTT_P_REQUEST_PROBLEM_INFO:
        return flag_value(&p->request_problem_info, v->n);
    case MQTT_P_WILL_DELAY:
        p->will_delay = v->n;
        break;
    case MQTT_P_REQUEST_RESPONSE_INFO:
        return flag_value(&p->request_response_info, v->n);
    case MQTT_P_RESPONSE_INFO:
        p->response_info = v->s;
        break;
    case MQTT_P_SERVER_REFERENCE:
        p->server_reference = v->s;
        break;
    case MQTT_P_REASON_STRING:
        p->reason_string = v->s;
        break;
    case MQTT_P_RECEIVE_MAXIMUM:
        return nonzero_u16(&p->receive_maximum, v->n);
    case MQTT_P_TOPIC_ALIAS_MAXIMUM:
        p->topic_alias_maximum = (uint16_t)v->n;
        break;
    case MQTT_P_TOPIC_ALIAS:
        /* 0 is invalid too, but that is the receiver's Topic Alias
         * invalid (0x94) decision, with the range check (§3.3.2.3.4). */
        p->topic_alias = (uint16_t)v->n;
        break;
    case MQTT_P_MAXIMUM_QOS:
        return flag_value(&p->maximum_qos, v->n);
    case MQTT_P_RETAIN_AVAILABLE:
        return flag_value(&p->retain_available, v->n);
    case MQTT_P_USER_PROPERTY:
        if (p->n_user < UINT16_MAX) /* saturates; iterate raw for all */
            p->n_user++;
        break;
    case MQTT_P_MAXIMUM_PACKET_SIZE:
        if (v->n == 0)
            return SL_EPROPERTY;
        p->maximum_packet_size = v->n;
        break;
    case MQTT_P_WILDCARD_SUB_AVAILABLE:
        return flag_value(&p->wildcard_sub_available, v->n);
    case MQTT_P_SUB_ID_AVAILABLE:
        return flag_value(&p->sub_id_available, v->n);
    case MQTT_P_SHARED_SUB_AVAILABLE:
        return flag_value(&p->shared_sub_available, v->n);
    }
    return SL_OK;
}

static bool repeatable(int id, int ptype)
{
    return id == MQTT_P_USER_PROPERTY ||
           (id == MQTT_P_SUBSCRIPTION_ID && ptype == MQTT_PUBLISH);
}

static int decode_one(mqtt_rd_t *r, int ptype, mqtt_props_t *p)
{
    prop_val_t v = {0};
    /* the caller's loop guarantees a byte is left; every identifier of 5.0
     * is a one-byte variable byte integer */
    uint8_t id = *r->p++;

    if (id >= 64 || !(prop_info[id].allowed & PK(ptype)))
        return SL_EMALFORMED;
    if (mqtt_props_has(p, id) && !repeatable(id, ptype))
        return SL_EPROPERTY;
    int rc = read_value(r, prop_info[id].type, &v);
    if (rc != SL_OK)
        return rc;
    p->present |= 1ull << id;
    return store_value(p, id, &v);
}

int mqtt_props_decode(mqtt_rd_t *r, int ptype, mqtt_props_t *props)
{
    uint32_t len;
    int rc = mqtt_rd_varint(r, &len);

    if (rc != SL_OK)
        return rc;
    if (len > mqtt_rd_left(r))
        return SL_EMALFORMED;
    props->raw.p = r->p;
    props->raw.len = len;

    mqtt_rd_t block = {r->p, r->p + len};
    r->p += len;
    while (block.p < block.end) {
        rc = decode_one(&block, ptype, props);
        if (rc != SL_OK)
            return rc;
    }
    /* §3.1.2.11.10: authentication data without a method */
    if (ptype == MQTT_CONNECT && mqtt_props_has(props, MQTT_P_AUTH_DATA) &&
        !mqtt_props_has(props, MQTT_P_AUTH_METHOD))
        return SL_EPROPERTY;
    return SL_OK;
}

/* ---- iterators over a validated block ---------------------------------- */

/* Step over the next property; its id and value. False at the end or on
 * bytes that do not parse (never on a block mqtt_decode() accepted). */
static bool next_prop(const mqtt_props_t *props, size_t *cursor, uint8_t *id,
                      prop_val_t *v)
{
    if (*cursor >= props->raw.len)
        return false;
    mqtt_rd_t r = {props->raw.p + *cursor, props->raw.p + props->raw.len};
    *id = *r.p++;
    if (*id >= 64 || prop_info[*id].type == 0)
        return false;
    /* the value was validated at decode time: read it without re-checking
     * UTF-8 (binary reads have the same layout) */
    int type = prop_info[*id].type;
    int rc;
    if (type == T_STR)
        rc = mqtt_rd_bin(&r, &v->s);
    else if (type == T_PAIR)
        rc = mqtt_rd_bin(&r, &v->s) != SL_OK ? SL_EMALFORMED
                                             : mqtt_rd_bin(&r, &v->s2);
    else
        rc = read_value(&r, type, v);
    if (rc != SL_OK)
        return false;
    *cursor = (size_t)(r.p - props->raw.p);
    return true;
}

bool mqtt_props_user_next(const mqtt_props_t *props, size_t *cursor,
                          mqtt_bytes_t *key, mqtt_bytes_t *value)
{
    uint8_t id;
    prop_val_t v = {0};

    while (next_prop(props, cursor, &id, &v)) {
        if (id == MQTT_P_USER_PROPERTY) {
            *key = v.s;
            *value = v.s2;
            return true;
        }
    }
    return false;
}

bool mqtt_props_subid_next(const mqtt_props_t *props, size_t *cursor,
                           uint32_t *sub_id)
{
    uint8_t id;
    prop_val_t v = {0};

    while (next_prop(props, cursor, &id, &v)) {
        if (id == MQTT_P_SUBSCRIPTION_ID) {
            *sub_id = v.n;
            return true;
        }
    }
    return false;
}

/* ---- building a block -------------------------------------------------- */

void mqtt_prop_u8(mqtt_out_t *o, int id, uint8_t v)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_u8(o, v);
}

void mqtt_prop_u16(mqtt_out_t *o, int id, uint16_t v)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_u16(o, v);
}

void mqtt_prop_u32(mqtt_out_t *o, int id, uint32_t v)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_u32(o, v);
}

void mqtt_prop_varint(mqtt_out_t *o, int id, uint32_t v)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_varint(o, v);
}

void mqtt_prop_str(mqtt_out_t *o, int id, const void *p, size_t len)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_str(o, p, len);
}

void mqtt_prop_pair(mqtt_out_t *o, int id, const void *k, size_t klen,
                    const void *v, size_t vlen)
{
    mqtt_put_u8(o, (uint8_t)id);
    mqtt_put_str(o, k, klen);
    mqtt_put_str(o, v, vlen);
}
