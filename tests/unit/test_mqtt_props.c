/*
 * test_mqtt_props.c - unit tests of MQTT 5.0 properties: every identifier
 * in every packet that allows it (and rejected, malformed, in every packet
 * that does not), duplicates, value ranges, bad encodings, the recorded raw
 * block and the iterators, and the mqtt_prop_* builders.
 *
 * The allowed-packets table below is written out from the spec (§2.2.2.2)
 * on its own, not taken from props.c, so the two check each other.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "starling/err.h"
#include "starling/mqtt.h"

#define BS(s) ((mqtt_bytes_t){(const uint8_t *)(s), (uint32_t)strlen(s)})
#define WILL MQTT_WILL_PROPS
#define P(t) (1u << (t))

enum { T_BYTE = 1, T_U16, T_U32, T_VARINT, T_STR, T_BIN, T_PAIR };

static const struct {
    int id;
    int type;
    uint32_t packets;
} spec[] = {
    {MQTT_P_PAYLOAD_FORMAT, T_BYTE, P(MQTT_PUBLISH) | P(WILL)},
    {MQTT_P_MESSAGE_EXPIRY, T_U32, P(MQTT_PUBLISH) | P(WILL)},
    {MQTT_P_CONTENT_TYPE, T_STR, P(MQTT_PUBLISH) | P(WILL)},
    {MQTT_P_RESPONSE_TOPIC, T_STR, P(MQTT_PUBLISH) | P(WILL)},
    {MQTT_P_CORRELATION_DATA, T_BIN, P(MQTT_PUBLISH) | P(WILL)},
    {MQTT_P_SUBSCRIPTION_ID, T_VARINT, P(MQTT_PUBLISH) | P(MQTT_SUBSCRIBE)},
    {MQTT_P_SESSION_EXPIRY, T_U32,
     P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    {MQTT_P_ASSIGNED_CLIENT_ID, T_STR, P(MQTT_CONNACK)},
    {MQTT_P_SERVER_KEEP_ALIVE, T_U16, P(MQTT_CONNACK)},
    {MQTT_P_AUTH_METHOD, T_STR,
     P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    {MQTT_P_AUTH_DATA, T_BIN, P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_AUTH)},
    {MQTT_P_REQUEST_PROBLEM_INFO, T_BYTE, P(MQTT_CONNECT)},
    {MQTT_P_WILL_DELAY, T_U32, P(WILL)},
    {MQTT_P_REQUEST_RESPONSE_INFO, T_BYTE, P(MQTT_CONNECT)},
    {MQTT_P_RESPONSE_INFO, T_STR, P(MQTT_CONNACK)},
    {MQTT_P_SERVER_REFERENCE, T_STR, P(MQTT_CONNACK) | P(MQTT_DISCONNECT)},
    {MQTT_P_REASON_STRING, T_STR,
     P(MQTT_CONNACK) | P(MQTT_PUBACK) | P(MQTT_PUBREC) | P(MQTT_PUBREL) |
         P(MQTT_PUBCOMP) | P(MQTT_SUBACK) | P(MQTT_UNSUBACK) |
         P(MQTT_DISCONNECT) | P(MQTT_AUTH)},
    {MQTT_P_RECEIVE_MAXIMUM, T_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {MQTT_P_TOPIC_ALIAS_MAXIMUM, T_U16, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {MQTT_P_TOPIC_ALIAS, T_U16, P(MQTT_PUBLISH)},
    {MQTT_P_MAXIMUM_QOS, T_BYTE, P(MQTT_CONNACK)},
    {MQTT_P_RETAIN_AVAILABLE, T_BYTE, P(MQTT_CONNACK)},
    {MQTT_P_USER_PROPERTY, T_PAIR,
     P(MQTT_CONNECT) | P(MQTT_CONNACK) | P(MQTT_PUBLISH) | P(WILL) |
         P(MQTT_PUBACK) | P(MQTT_PUBREC) | P(MQTT_PUBREL) | P(MQTT_PUBCOMP) |
         P(MQTT_SUBSCRIBE) | P(MQTT_SUBACK) | P(MQTT_UNSUBSCRIBE) |
         P(MQTT_UNSUBACK) | P(MQTT_DISCONNECT) | P(MQTT_AUTH)},
    {MQTT_P_MAXIMUM_PACKET_SIZE, T_U32, P(MQTT_CONNECT) | P(MQTT_CONNACK)},
    {MQTT_P_WILDCARD_SUB_AVAILABLE, T_BYTE, P(MQTT_CONNACK)},
    {MQTT_P_SUB_ID_AVAILABLE, T_BYTE, P(MQTT_CONNACK)},
    {MQTT_P_SHARED_SUB_AVAILABLE, T_BYTE, P(MQTT_CONNACK)},
};
#define N_SPEC (sizeof spec / sizeof spec[0])

/* Every v5 packet type that has properties, and the will. */
static const int ptypes[] = {
    MQTT_CONNECT,     MQTT_CONNACK,   MQTT_PUBLISH,
    MQTT_PUBACK,      MQTT_PUBREC,    MQTT_PUBREL,
    MQTT_PUBCOMP,     MQTT_SUBSCRIBE, MQTT_SUBACK,
    MQTT_UNSUBSCRIBE, MQTT_UNSUBACK,  MQTT_DISCONNECT,
    MQTT_AUTH,        WILL,
};
#define N_PTYPES (sizeof ptypes / sizeof ptypes[0])

static const char *ptype_name(int t)
{
    return t == WILL ? "will" : mqtt_type_name(t);
}

/* Append property id with the test value of its type. */
static void add_prop(mqtt_out_t *o, int id, int type)
{
    switch (type) {
    case T_BYTE:
        mqtt_prop_u8(o, id, 1);
        break;
    case T_U16:
        mqtt_prop_u16(o, id, 10);
        break;
    case T_U32:
        mqtt_prop_u32(o, id, 100000);
        break;
    case T_VARINT:
        mqtt_prop_varint(o, id, 300);
        break;
    case T_STR:
        mqtt_prop_str(o, id, "text", 4);
        break;
    case T_BIN:
        mqtt_prop_str(o, id, "\x00\x01", 2);
        break;
    case T_PAIR:
        mqtt_prop_pair(o, id, "k", 1, "v", 1);
        break;
    }
}

static bool bytes_is(mqtt_bytes_t b, const char *s, size_t n)
{
    return b.len == n && memcmp(b.p, s, n) == 0;
}

/* Does the decoded field of id hold the test value? */
static bool value_ok(const mqtt_props_t *p, int id)
{
    switch (id) {
    case MQTT_P_PAYLOAD_FORMAT:
        return p->payload_format == 1;
    case MQTT_P_MESSAGE_EXPIRY:
        return p->message_expiry == 100000;
    case MQTT_P_CONTENT_TYPE:
        return bytes_is(p->content_type, "text", 4);
    case MQTT_P_RESPONSE_TOPIC:
        return bytes_is(p->response_topic, "text", 4);
    case MQTT_P_CORRELATION_DATA:
        return bytes_is(p->correlation_data, "\x00\x01", 2);
    case MQTT_P_SUBSCRIPTION_ID:
        return p->subscription_id == 300 && p->n_subscription_ids == 1;
    case MQTT_P_SESSION_EXPIRY:
        return p->session_expiry == 100000;
    case MQTT_P_ASSIGNED_CLIENT_ID:
        return bytes_is(p->assigned_client_id, "text", 4);
    case MQTT_P_SERVER_KEEP_ALIVE:
        return p->server_keep_alive == 10;
    case MQTT_P_AUTH_METHOD:
        return bytes_is(p->auth_method, "text", 4);
    case MQTT_P_AUTH_DATA:
        return bytes_is(p->auth_data, "\x00\x01", 2);
    case MQTT_P_REQUEST_PROBLEM_INFO:
        return p->request_problem_info == 1;
    case MQTT_P_WILL_DELAY:
        return p->will_delay == 100000;
    case MQTT_P_REQUEST_RESPONSE_INFO:
        return p->request_response_info == 1;
    case MQTT_P_RESPONSE_INFO:
        return bytes_is(p->response_info, "text", 4);
    case MQTT_P_SERVER_REFERENCE:
        return bytes_is(p->server_reference, "text", 4);
    case MQTT_P_REASON_STRING:
        return bytes_is(p->reason_string, "text", 4);
    case MQTT_P_RECEIVE_MAXIMUM:
        return p->receive_maximum == 10;
    case MQTT_P_TOPIC_ALIAS_MAXIMUM:
        return p->topic_alias_maximum == 10;
    case MQTT_P_TOPIC_ALIAS:
        return p->topic_alias == 10;
    case MQTT_P_MAXIMUM_QOS:
        return p->maximum_qos == 1;
    case MQTT_P_RETAIN_AVAILABLE:
        return p->retain_available == 1;
    case MQTT_P_USER_PROPERTY:
        return p->n_user == 1;
    case MQTT_P_MAXIMUM_PACKET_SIZE:
        return p->maximum_packet_size == 100000;
    case MQTT_P_WILDCARD_SUB_AVAILABLE:
        return p->wildcard_sub_available == 1;
    case MQTT_P_SUB_ID_AVAILABLE:
        return p->sub_id_available == 1;
    case MQTT_P_SHARED_SUB_AVAILABLE:
        return p->shared_sub_available == 1;
    }
    return false;
}

static uint8_t pkt_buf[4096];

/* Encode a v5 packet of type ptype (WILL: a CONNECT whose will carries the
 * block) with the given property block. */
static size_t build(int ptype, const uint8_t *pb, size_t pn)
{
    mqtt_bytes_t props = {pb, (uint32_t)pn};
    mqtt_out_t o;
    mqtt_out_init(&o, pkt_buf, sizeof pkt_buf);
    mqtt_connect_t c = {.version = MQTT_V5, .client_id = BS("c")};
    mqtt_publish_t pub = {
        .qos = 1, .packet_id = 1, .topic = BS("t"), .payload = BS("x")};
    mqtt_sub_t sub = {.filter = BS("a"), .qos = 1};
    mqtt_bytes_t filter = BS("a");
    uint8_t code = 0;

    switch (ptype) {
    case MQTT_CONNECT:
        mqtt_enc_connect(&o, &c, &props);
        break;
    case WILL:
        c.will = true;
        c.will_topic = BS("w");
        c.will_props.raw = props;
        mqtt_enc_connect(&o, &c, NULL);
        break;
    case MQTT_CONNACK:
        mqtt_enc_connack(&o, MQTT_V5, false, 0, &props);
        break;
    case MQTT_PUBLISH:
        mqtt_enc_publish(&o, MQTT_V5, &pub, &props);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        mqtt_enc_ack(&o, MQTT_V5, (mqtt_type_t)ptype, 1, 0, &props);
        break;
    case MQTT_SUBSCRIBE:
        mqtt_enc_subscribe(&o, MQTT_V5, 1, &sub, 1, &props);
        break;
    case MQTT_UNSUBSCRIBE:
        mqtt_enc_unsubscribe(&o, MQTT_V5, 1, &filter, 1, &props);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        mqtt_enc_suback(&o, MQTT_V5, (mqtt_type_t)ptype, 1, &code, 1, &props);
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        mqtt_enc_reason(&o, MQTT_V5, (mqtt_type_t)ptype, 0, &props);
        break;
    }
    cr_assert_leq(o.len, o.cap);
    return o.len;
}

/* Decode the packet built with this block; its status, and its props. */
static int decode_with(int ptype, const uint8_t *pb, size_t pn,
                       mqtt_packet_t *pkt, const mqtt_props_t **props)
{
    size_t n = build(ptype, pb, pn);
    uint32_t total;
    mqtt_type_t type;
    cr_assert_eq(mqtt_frame(pkt_buf, n, 0, &total, &type), SL_OK);
    cr_assert_eq(total, n);
    int rc = mqtt_decode(pkt_buf, n, MQTT_V5, pkt);
    *props = ptype == WILL ? &pkt->u.connect.will_props : &pkt->props;
    return rc;
}

static int decode_block(int ptype, const uint8_t *pb, size_t pn)
{
    mqtt_packet_t pkt;
    const mqtt_props_t *props;
    return decode_with(ptype, pb, pn, &pkt, &props);
}

/* The test block of one property (CONNECT authentication data comes with
 * a method, as §3.1.2.11.10 requires). */
static size_t one_prop(int i, int ptype, uint8_t *pb, size_t cap)
{
    mqtt_out_t o;
    mqtt_out_init(&o, pb, cap);
    if (spec[i].id == MQTT_P_AUTH_DATA && ptype == MQTT_CONNECT)
        mqtt_prop_str(&o, MQTT_P_AUTH_METHOD, "m", 1);
    add_prop(&o, spec[i].id, spec[i].type);
    return o.len;
}

Test(mqtt_props, allowed_where_the_spec_says)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        for (size_t t = 0; t < N_PTYPES; t++) {
            int pt = ptypes[t];
            if (!(spec[i].packets & P(pt)))
                continue;
            uint8_t pb[64];
            size_t pn = one_prop((int)i, pt, pb, sizeof pb);
            mqtt_packet_t pkt;
            const mqtt_props_t *props;
            int rc = decode_with(pt, pb, pn, &pkt, &props);
            cr_assert_eq(rc, SL_OK, "id 0x%02x in %s: %s", spec[i].id,
                         ptype_name(pt), sl_strerror(rc));
            cr_assert(mqtt_props_has(props, spec[i].id));
            cr_assert(value_ok(props, spec[i].id), "id 0x%02x in %s",
                      spec[i].id, ptype_name(pt));
            cr_assert_eq(props->raw.len, pn);
            cr_assert_arr_eq(props->raw.p, pb, pn);
            uint64_t others = props->present & ~(1ull << spec[i].id) &
                              ~(1ull << MQTT_P_AUTH_METHOD);
            cr_assert_eq(others, 0);
        }
    }
}

Test(mqtt_props, rejected_elsewhere_as_malformed)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        for (size_t t = 0; t < N_PTYPES; t++) {
            int pt = ptypes[t];
            if (spec[i].packets & P(pt))
                continue;
            uint8_t pb[64];
            mqtt_out_t o;
            mqtt_out_init(&o, pb, sizeof pb);
            add_prop(&o, spec[i].id, spec[i].type);
            int rc = decode_block(pt, pb, o.len);
            cr_assert_eq(rc, SL_EMALFORMED, "id 0x%02x in %s: %s", spec[i].id,
                         ptype_name(pt), sl_strerror(rc));
        }
    }
}

Test(mqtt_props, unknown_identifiers)
{
    static const uint8_t ids[] = {0x00, 0x04, 0x05, 0x0a, 0x10,
                                  0x14, 0x1b, 0x1d, 0x20, 0x2b,
                                  0x3f, 0x40, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < sizeof ids; i++) {
        uint8_t pb[2] = {ids[i], 0};
        for (size_t t = 0; t < N_PTYPES; t++)
            cr_assert_eq(decode_block(ptypes[t], pb, 2), SL_EMALFORMED,
                         "id 0x%02x in %s", ids[i], ptype_name(ptypes[t]));
    }
    /* a valid id written as a two-byte (non-minimal) varint */
    uint8_t pb[] = {0x81, 0x00, 0x01};
    cr_assert_eq(decode_block(MQTT_PUBLISH, pb, sizeof pb), SL_EMALFORMED);
}

Test(mqtt_props, duplicates)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        for (size_t t = 0; t < N_PTYPES; t++) {
            int pt = ptypes[t];
            if (!(spec[i].packets & P(pt)))
                continue;
            uint8_t pb[128];
            mqtt_out_t o;
            mqtt_out_init(&o, pb, sizeof pb);
            if (pt == MQTT_CONNECT)
                mqtt_prop_str(&o, MQTT_P_AUTH_METHOD, "m", 1);
            if (spec[i].id != MQTT_P_AUTH_METHOD || pt != MQTT_CONNECT)
                add_prop(&o, spec[i].id, spec[i].type);
            add_prop(&o, spec[i].id, spec[i].type);

            mqtt_packet_t pkt;
            const mqtt_props_t *props;
            int rc = decode_with(pt, pb, o.len, &pkt, &props);
            int id = spec[i].id;
            if (id == MQTT_P_USER_PROPERTY) {
                cr_assert_eq(rc, SL_OK);
                cr_assert_eq(props->n_user, 2);
            } else if (id == MQTT_P_SUBSCRIPTION_ID && pt == MQTT_PUBLISH) {
                cr_assert_eq(rc, SL_OK);
                cr_assert_eq(props->n_subscription_ids, 2);
                cr_assert_eq(props->subscription_id, 300);
            } else {
                cr_assert_eq(rc, SL_EPROPERTY, "id 0x%02x twice in %s: %s", id,
                             ptype_name(pt), sl_strerror(rc));
            }
        }
    }
}

/* A block of raw bytes in a packet type: the decode status. */
#define BLOCK(pt, ...)                                                         \
    decode_block(pt, (const uint8_t[]){__VA_ARGS__},                           \
                 sizeof((const uint8_t[]){__VA_ARGS__}))

Test(mqtt_props, value_ranges)
{
    /* 0/1 flags */
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x01, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x01, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(WILL, 0x01, 0xff), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x17, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x17, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x19, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x24, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x24, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x25, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x28, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x29, 2), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x2a, 2), SL_EPROPERTY);
    /* zero where zero is a protocol error */
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x21, 0, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x21, 0, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x21, 0xff, 0xff), SL_OK);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x27, 0, 0, 0, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x27, 0, 0, 0, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x27, 0, 0, 0, 1), SL_OK);
    /* Topic alias 0 decodes; the receiver answers Topic Alias invalid. */
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x23, 0, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x0b, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_SUBSCRIBE, 0x0b, 0), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x22, 0, 0), SL_OK); /* may be 0 */
    cr_assert_eq(BLOCK(MQTT_CONNACK, 0x13, 0, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x11, 0, 0, 0, 0), SL_OK);
    /* subscription identifier: up to 268435455 in four bytes */
    cr_assert_eq(BLOCK(MQTT_SUBSCRIBE, 0x0b, 0xff, 0xff, 0xff, 0x7f), SL_OK);
    cr_assert_eq(BLOCK(MQTT_SUBSCRIBE, 0x0b, 0xff, 0xff, 0xff, 0xff, 0x01),
                 SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x0b, 0x80, 0x80, 0x80, 0x80, 0x00),
                 SL_EMALFORMED);
}

Test(mqtt_props, bad_encodings)
{
    /* values cut short by the end of the block */
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x01), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x02, 0, 0, 0), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x23, 0), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x03, 0, 5, 'a'), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x03, 0), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x26, 0, 1, 'k'), SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x26, 0, 1, 'k', 0, 2, 'v'),
                 SL_EMALFORMED);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x0b, 0x80), SL_EMALFORMED);
    /* strings must be UTF-8, binary data need not */
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x03, 0, 1, 0xff), SL_EUTF8);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x08, 0, 1, 0x00), SL_EUTF8);
    cr_assert_eq(BLOCK(MQTT_PUBACK, 0x1f, 0, 3, 0xed, 0xa0, 0x80), SL_EUTF8);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x26, 0, 1, 'k', 0, 1, 0xc0), SL_EUTF8);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x26, 0, 1, 0xc1, 0, 1, 'v'), SL_EUTF8);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x09, 0, 2, 0x00, 0xff), SL_OK);
    cr_assert_eq(BLOCK(MQTT_AUTH, 0x16, 0, 1, 0xff), SL_OK);
    /* empty strings are fine */
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x03, 0, 0), SL_OK);
    cr_assert_eq(BLOCK(MQTT_PUBLISH, 0x26, 0, 0, 0, 0), SL_OK);
}

Test(mqtt_props, length_field)
{
    /* property length past the end of the packet: PUBLISH "t" QoS 0 */
    mqtt_packet_t p;
    const uint8_t past[] = {0x30, 5, 0, 1, 't', 9, 0x01};
    cr_assert_eq(mqtt_decode(past, sizeof past, MQTT_V5, &p), SL_EMALFORMED);
    /* property length missing entirely in an ack with code */
    const uint8_t cut[] = {0x40, 4, 0, 1, 0, 0x85};
    cr_assert_eq(mqtt_decode(cut, sizeof cut, MQTT_V5, &p), SL_EMALFORMED);
    /* a five-byte property length */
    const uint8_t five[] = {0x30, 8, 0, 1, 't', 0x80, 0x80, 0x80, 0x80, 0};
    cr_assert_eq(mqtt_decode(five, sizeof five, MQTT_V5, &p), SL_EMALFORMED);
    /* a non-minimal length is accepted */
    const uint8_t nonmin[] = {0x30, 5, 0, 1, 't', 0x80, 0x00};
    cr_assert_eq(mqtt_decode(nonmin, sizeof nonmin, MQTT_V5, &p), SL_OK);
    cr_assert_eq(p.props.raw.len, 0);

    /* a block of 200 bytes (two-byte length) round trips */
    static char big[190];
    memset(big, 'v', sizeof big);
    uint8_t pb[256];
    mqtt_out_t o;
    mqtt_out_init(&o, pb, sizeof pb);
    mqtt_prop_pair(&o, MQTT_P_USER_PROPERTY, "key", 3, big, sizeof big);
    cr_assert_gt(o.len, 127);
    for (size_t t = 0; t < N_PTYPES; t++) {
        const mqtt_props_t *props;
        int rc = decode_with(ptypes[t], pb, o.len, &p, &props);
        cr_assert_eq(rc, SL_OK, "%s", ptype_name(ptypes[t]));
        cr_assert_eq(props->raw.len, o.len);
        cr_assert_eq(props->n_user, 1);
    }
}

Test(mqtt_props, auth_data_needs_a_method_in_connect)
{
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x16, 0, 1, 'd'), SL_EPROPERTY);
    cr_assert_eq(BLOCK(MQTT_CONNECT, 0x16, 0, 1, 'd', 0x15, 0, 1, 'm'), SL_OK);
}

Test(mqtt_props, user_property_iteration)
{
    uint8_t pb[128];
    mqtt_out_t o;
    mqtt_out_init(&o, pb, sizeof pb);
    mqtt_prop_pair(&o, MQTT_P_USER_PROPERTY, "a", 1, "1", 1);
    mqtt_prop_u32(&o, MQTT_P_MESSAGE_EXPIRY, 5);
    mqtt_prop_pair(&o, MQTT_P_USER_PROPERTY, "b", 1, "", 0);
    mqtt_prop_varint(&o, MQTT_P_SUBSCRIPTION_ID, 268435455);
    mqtt_prop_pair(&o, MQTT_P_USER_PROPERTY, "a", 1, "3", 1);
    mqtt_prop_varint(&o, MQTT_P_SUBSCRIPTION_ID, 1);
    mqtt_prop_str(&o, MQTT_P_CONTENT_TYPE, "c/t", 3);
    mqtt_prop_varint(&o, MQTT_P_SUBSCRIPTION_ID, 16384);

    mqtt_packet_t pkt;
    const mqtt_props_t *props;
    cr_assert_eq(decode_with(MQTT_PUBLISH, pb, o.len, &pkt, &props), SL_OK);
    cr_assert_eq(props->n_user, 3);
    cr_assert_eq(props->n_subscription_ids, 3);
    cr_assert_eq(props->subscription_id, 268435455);
    cr_assert_eq(props->message_expiry, 5);

    static const char *keys[] = {"a", "b", "a"};
    static const char *vals[] = {"1", "", "3"};
    size_t cur = 0;
    mqtt_bytes_t k, v;
    for (int i = 0; i < 3; i++) {
        cr_assert(mqtt_props_user_next(props, &cur, &k, &v));
        cr_assert(bytes_is(k, keys[i], strlen(keys[i])));
        cr_assert(bytes_is(v, vals[i], strlen(vals[i])));
    }
    cr_assert_not(mqtt_props_user_next(props, &cur, &k, &v));

    static const uint32_t ids[] = {268435455, 1, 16384};
    cur = 0;
    uint32_t id;
    for (int i = 0; i < 3; i++) {
        cr_assert(mqtt_props_subid_next(props, &cur, &id));
        cr_assert_eq(id, ids[i]);
    }
    cr_assert_not(mqtt_props_subid_next(props, &cur, &id));

    /* an empty block */
    mqtt_props_t none = {0};
    cur = 0;
    cr_assert_not(mqtt_props_user_next(&none, &cur, &k, &v));
    cr_assert_not(mqtt_props_subid_next(&none, &cur, &id));
}

Test(mqtt_props, will_props_separate_from_connect_props)
{
    uint8_t pb[32], wb[32];
    mqtt_out_t po, wo;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_pair(&po, MQTT_P_USER_PROPERTY, "c", 1, "1", 1);
    mqtt_out_init(&wo, wb, sizeof wb);
    mqtt_prop_pair(&wo, MQTT_P_USER_PROPERTY, "w", 1, "2", 1);
    mqtt_prop_pair(&wo, MQTT_P_USER_PROPERTY, "w", 1, "3", 1);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};
    mqtt_connect_t c = {.version = MQTT_V5,
                        .client_id = BS("id"),
                        .will = true,
                        .will_topic = BS("t"),
                        .will_payload = BS("p"),
                        .will_props.raw = {wb, (uint32_t)wo.len}};
    mqtt_out_t o;
    mqtt_out_init(&o, pkt_buf, sizeof pkt_buf);
    mqtt_enc_connect(&o, &c, &props);
    mqtt_packet_t p;
    cr_assert_eq(mqtt_decode(pkt_buf, o.len, MQTT_V5, &p), SL_OK);
    cr_assert_eq(p.props.n_user, 1);
    cr_assert_eq(p.u.connect.will_props.n_user, 2);
    size_t cur = 0;
    mqtt_bytes_t k, v;
    cr_assert(mqtt_props_user_next(&p.u.connect.will_props, &cur, &k, &v));
    cr_assert(bytes_is(v, "2", 1));
}

Test(mqtt_props, v3_packets_have_no_props)
{
    /* the same bytes mean a payload in 3.1.1 and a property block in 5.0 */
    const uint8_t b[] = {0x30, 6, 0, 1, 't', 2, 0x01, 1};
    mqtt_packet_t p;
    cr_assert_eq(mqtt_decode(b, sizeof b, MQTT_V311, &p), SL_OK);
    cr_assert_eq(p.props.present, 0);
    cr_assert_eq(p.props.raw.len, 0);
    cr_assert_eq(p.u.publish.payload.len, 3);
    cr_assert_eq(mqtt_decode(b, sizeof b, MQTT_V5, &p), SL_OK);
    cr_assert_eq(p.props.payload_format, 1);
    cr_assert_eq(p.u.publish.payload.len, 0);
}

Test(mqtt_props, builders)
{
    uint8_t pb[64];
    mqtt_out_t o;
    mqtt_out_init(&o, pb, sizeof pb);
    mqtt_prop_u8(&o, MQTT_P_PAYLOAD_FORMAT, 1);
    mqtt_prop_u16(&o, MQTT_P_TOPIC_ALIAS, 0x0102);
    mqtt_prop_u32(&o, MQTT_P_MESSAGE_EXPIRY, 0x01020304);
    mqtt_prop_varint(&o, MQTT_P_SUBSCRIPTION_ID, 128);
    mqtt_prop_str(&o, MQTT_P_CONTENT_TYPE, "ab", 2);
    mqtt_prop_pair(&o, MQTT_P_USER_PROPERTY, "k", 1, "v", 1);
    const uint8_t want[] = {0x01, 1,    0x23, 1,   2,    0x02, 1,  2,   3,
                            4,    0x0b, 0x80, 1,   0x03, 0,    2,  'a', 'b',
                            0x26, 0,    1,    'k', 0,    1,    'v'};
    cr_assert_eq(o.len, sizeof want);
    cr_assert_arr_eq(pb, want, sizeof want);
}
