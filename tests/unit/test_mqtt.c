/*
 * test_mqtt.c - unit tests of the MQTT codec: framing, every packet type in
 * every version (encode -> frame -> decode round trips and golden bytes),
 * split and back-to-back input, malformed input with the exact error each
 * case must produce, UTF-8 validation and the encoders' buffer handling.
 * Properties have their own file, test_mqtt_props.c.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/mqtt.h"

static uint8_t buf[1 << 16];

#define BS(s) ((mqtt_bytes_t){(const uint8_t *)(s), (uint32_t)strlen(s)})
#define ARR(...) ((const uint8_t[]){__VA_ARGS__})
#define ARRLEN(...) sizeof((const uint8_t[]){__VA_ARGS__})
/* decode the packet given as bytes; the decode status */
#define DEC(version, ...)                                                      \
    decode_rc(ARR(__VA_ARGS__), ARRLEN(__VA_ARGS__), version)

static const int versions[] = {MQTT_V31, MQTT_V311, MQTT_V5};

static mqtt_out_t out_new(void)
{
    mqtt_out_t o;
    mqtt_out_init(&o, buf, sizeof buf);
    return o;
}

static bool bytes_is(mqtt_bytes_t b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.p, s, b.len) == 0);
}

static int decode_rc(const uint8_t *b, size_t n, int version)
{
    mqtt_packet_t p;
    return mqtt_decode(b, n, version, &p);
}

/* Every proper prefix frames as SL_AGAIN, the whole as SL_OK. */
static void check_split(const uint8_t *b, size_t n)
{
    uint32_t total;
    mqtt_type_t type;

    for (size_t i = 0; i < n; i++)
        cr_assert_eq(mqtt_frame(b, i, 0, &total, &type), SL_AGAIN,
                     "prefix %zu of %zu", i, n);
    cr_assert_eq(mqtt_frame(b, n, 0, &total, &type), SL_OK);
    cr_assert_eq(total, n);
}

/* Frame and decode one whole packet, asserting success. */
static mqtt_packet_t decode_ok(const uint8_t *b, size_t n, int version)
{
    uint32_t total = 0;
    mqtt_type_t type = 0;
    mqtt_packet_t p;

    int rc = mqtt_frame(b, n, 0, &total, &type);
    cr_assert_eq(rc, SL_OK, "frame: %d", rc);
    cr_assert_eq(total, n);
    rc = mqtt_decode(b, n, version, &p);
    cr_assert_eq(rc, SL_OK, "decode: %s (%d)", sl_strerror(rc), rc);
    cr_assert_eq(p.type, type);
    cr_assert_eq(p.size, n);
    check_split(b, n);
    return p;
}

static void assert_bytes(const mqtt_out_t *o, const uint8_t *want, size_t n)
{
    cr_assert_eq(o->len, n, "encoded %zu bytes, want %zu", o->len, n);
    cr_assert_arr_eq(o->buf, want, n);
}

/* ---- framing ------------------------------------------------------------ */

Test(mqtt_frame, incomplete_and_complete)
{
    uint32_t total = 99;
    mqtt_type_t type;

    cr_assert_eq(mqtt_frame(ARR(0), 0, 0, &total, &type), SL_AGAIN);
    cr_assert_eq(total, 0);
    cr_assert_eq(mqtt_frame(ARR(0x30), 1, 0, &total, &type), SL_AGAIN);
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x82), 2, 0, &total, &type), SL_AGAIN);
    cr_assert_eq(total, 0);
    /* header complete, body missing: size is known */
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x82, 0x01), 3, 0, &total, &type),
                 SL_AGAIN);
    cr_assert_eq(total, 3 + 130);
    cr_assert_eq(mqtt_frame(ARR(0xc0, 0x00), 2, 0, &total, &type), SL_OK);
    cr_assert_eq(total, 2);
    cr_assert_eq(type, MQTT_PINGREQ);
    /* trailing bytes of the next packet do not matter */
    cr_assert_eq(mqtt_frame(ARR(0xd0, 0x00, 0x30), 3, 0, &total, &type), SL_OK);
    cr_assert_eq(total, 2);
    cr_assert_eq(type, MQTT_PINGRESP);
}

Test(mqtt_frame, type_zero_is_malformed)
{
    uint32_t total;
    mqtt_type_t type;

    cr_assert_eq(mqtt_frame(ARR(0x00), 1, 0, &total, &type), SL_EMALFORMED);
    cr_assert_eq(mqtt_frame(ARR(0x0f, 0x00), 2, 0, &total, &type),
                 SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V311, 0x00, 0x00), SL_EMALFORMED);
}

Test(mqtt_frame, remaining_length_limits)
{
    uint32_t total;
    mqtt_type_t type;

    /* largest: 4 bytes, 268435455 */
    cr_assert_eq(
        mqtt_frame(ARR(0x30, 0xff, 0xff, 0xff, 0x7f), 5, 0, &total, &type),
        SL_AGAIN);
    cr_assert_eq(total, 5 + MQTT_MAX_REMAINING);
    /* a fourth byte with its continuation bit: malformed at once */
    cr_assert_eq(
        mqtt_frame(ARR(0x30, 0xff, 0xff, 0xff, 0xff), 5, 0, &total, &type),
        SL_EMALFORMED);
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), 6, 0,
                            &total, &type),
                 SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V311, 0x30, 0x80, 0x80, 0x80, 0x80, 0x00),
                 SL_EMALFORMED);
    /* non-minimal encodings are accepted */
    cr_assert_eq(mqtt_frame(ARR(0xc0, 0x80, 0x00), 3, 0, &total, &type), SL_OK);
    cr_assert_eq(total, 3);
    cr_assert_eq(DEC(MQTT_V311, 0xc0, 0x80, 0x80, 0x00), SL_OK);
}

Test(mqtt_frame, too_large_before_the_body)
{
    uint32_t total;
    mqtt_type_t type;

    /* 200-byte body announced, limit 100, only the header has arrived */
    cr_assert_eq(mqtt_frame(ARR(0x30, 0xc8, 0x01), 3, 100, &total, &type),
                 SL_ETOOLARGE);
    /* huge announced length */
    cr_assert_eq(
        mqtt_frame(ARR(0x30, 0xff, 0xff, 0xff, 0x7f), 5, 1024, &total, &type),
        SL_ETOOLARGE);
    /* exactly at the limit (limit counts the whole packet) */
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x03, 0, 1, 'a'), 5, 5, &total, &type),
                 SL_OK);
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x03, 0, 1, 'a'), 5, 4, &total, &type),
                 SL_ETOOLARGE);
    cr_assert_eq(mqtt_frame(ARR(0x30, 0x03), 2, 4, &total, &type),
                 SL_ETOOLARGE);
}

Test(mqtt_frame, many_packets_back_to_back)
{
    static uint8_t big[200000];
    mqtt_out_t o;
    mqtt_out_init(&o, big, sizeof big);
    mqtt_publish_t pub = {.qos = 1, .topic = BS("a/b"), .payload = BS("xyz")};
    const int n = 3000;

    for (int i = 0; i < n; i++) {
        switch (i % 4) {
        case 0:
            pub.packet_id = (uint16_t)(i + 1);
            mqtt_enc_publish(&o, MQTT_V5, &pub, NULL);
            break;
        case 1:
            mqtt_enc_ack(&o, MQTT_V5, MQTT_PUBACK, (uint16_t)i, 0, NULL);
            break;
        case 2:
            mqtt_enc_pingreq(&o);
            break;
        case 3:
            mqtt_enc_ack(&o, MQTT_V5, MQTT_PUBREL, (uint16_t)i, 0x92, NULL);
            break;
        }
    }
    cr_assert_leq(o.len, o.cap);

    static const mqtt_type_t order[] = {MQTT_PUBLISH, MQTT_PUBACK, MQTT_PINGREQ,
                                        MQTT_PUBREL};
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        uint32_t total;
        mqtt_type_t type;
        mqtt_packet_t p;
        cr_assert_eq(mqtt_frame(big + off, o.len - off, 0, &total, &type),
                     SL_OK);
        cr_assert_eq(type, order[i % 4]);
        cr_assert_eq(mqtt_decode(big + off, total, MQTT_V5, &p), SL_OK);
        if (type == MQTT_PUBLISH) {
            cr_assert_eq(p.u.publish.packet_id, i + 1);
            cr_assert(bytes_is(p.u.publish.payload, "xyz"));
        } else if (type == MQTT_PUBREL) {
            cr_assert_eq(p.u.ack.code, 0x92);
        }
        off += total;
    }
    cr_assert_eq(off, o.len);
    uint32_t total;
    mqtt_type_t type;
    cr_assert_eq(mqtt_frame(big + off, 0, 0, &total, &type), SL_AGAIN);
}

Test(mqtt_frame, decode_needs_exact_length)
{
    /* PUBACK with one byte too few / too many for its own header */
    cr_assert_eq(decode_rc(ARR(0x40, 0x02, 0x00), 3, MQTT_V311), SL_EMALFORMED);
    cr_assert_eq(decode_rc(ARR(0x40, 0x02, 0x00, 0x01, 0x40), 5, MQTT_V311),
                 SL_EMALFORMED);
    cr_assert_eq(decode_rc(ARR(0x40), 1, MQTT_V311), SL_EMALFORMED);
    cr_assert_eq(decode_rc(ARR(0x40), 0, MQTT_V311), SL_EMALFORMED);
}

Test(mqtt_frame, bad_version_argument)
{
    cr_assert_eq(DEC(0, 0xc0, 0x00), SL_EINVAL);
    cr_assert_eq(DEC(6, 0xc0, 0x00), SL_EINVAL);
}

/* ---- golden bytes ------------------------------------------------------- */

Test(mqtt_golden, connect)
{
    mqtt_connect_t c = {.version = MQTT_V311, .clean = true, .keepalive = 60};
    mqtt_out_t o = out_new();
    mqtt_enc_connect(&o, &c, NULL);
    assert_bytes(
        &o, ARR(0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 0),
        14);

    c.version = MQTT_V31;
    o = out_new();
    mqtt_enc_connect(&o, &c, NULL);
    assert_bytes(&o,
                 ARR(0x10, 0x0e, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0,
                     60, 0, 0),
                 16);

    c.version = MQTT_V5;
    o = out_new();
    mqtt_enc_connect(&o, &c, NULL);
    assert_bytes(
        &o, ARR(0x10, 0x0d, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 0),
        15);
}

Test(mqtt_golden, small_packets)
{
    mqtt_out_t o = out_new();
    mqtt_enc_connack(&o, MQTT_V311, true, 0, NULL);
    assert_bytes(&o, ARR(0x20, 2, 1, 0), 4);
    o = out_new();
    mqtt_enc_connack(&o, MQTT_V5, false, 0x87, NULL);
    assert_bytes(&o, ARR(0x20, 3, 0, 0x87, 0), 5);

    mqtt_publish_t p = {
        .qos = 1, .packet_id = 10, .topic = BS("a/b"), .payload = BS("x")};
    o = out_new();
    mqtt_enc_publish(&o, MQTT_V311, &p, NULL);
    assert_bytes(&o, ARR(0x32, 8, 0, 3, 'a', '/', 'b', 0, 10, 'x'), 10);
    p.qos = 0;
    p.retain = true;
    o = out_new();
    mqtt_enc_publish(&o, MQTT_V5, &p, NULL);
    assert_bytes(&o, ARR(0x31, 7, 0, 3, 'a', '/', 'b', 0, 'x'), 9);

    o = out_new();
    mqtt_enc_ack(&o, MQTT_V5, MQTT_PUBACK, 1, 0, NULL);
    assert_bytes(&o, ARR(0x40, 2, 0, 1), 4);
    o = out_new();
    mqtt_enc_ack(&o, MQTT_V5, MQTT_PUBACK, 1, 0x10, NULL);
    assert_bytes(&o, ARR(0x40, 3, 0, 1, 0x10), 5);
    o = out_new();
    mqtt_enc_ack(&o, MQTT_V311, MQTT_PUBREL, 0x1234, 0x92, NULL);
    assert_bytes(&o, ARR(0x62, 2, 0x12, 0x34), 4);

    mqtt_sub_t s = {.filter = BS("a/b"), .qos = 1, .no_local = true};
    o = out_new();
    mqtt_enc_subscribe(&o, MQTT_V311, 1, &s, 1, NULL);
    assert_bytes(&o, ARR(0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 1), 10);
    o = out_new();
    mqtt_enc_subscribe(&o, MQTT_V5, 1, &s, 1, NULL);
    assert_bytes(&o, ARR(0x82, 9, 0, 1, 0, 0, 3, 'a', '/', 'b', 5), 11);

    uint8_t codes[] = {1, 0x80};
    o = out_new();
    mqtt_enc_suback(&o, MQTT_V311, MQTT_SUBACK, 1, codes, 2, NULL);
    assert_bytes(&o, ARR(0x90, 4, 0, 1, 1, 0x80), 6);
    o = out_new();
    mqtt_enc_suback(&o, MQTT_V311, MQTT_UNSUBACK, 1, codes, 2, NULL);
    assert_bytes(&o, ARR(0xb0, 2, 0, 1), 4);
    o = out_new();
    mqtt_enc_suback(&o, MQTT_V5, MQTT_UNSUBACK, 1, codes, 1, NULL);
    assert_bytes(&o, ARR(0xb0, 4, 0, 1, 0, 1), 6);

    mqtt_bytes_t f = BS("x");
    o = out_new();
    mqtt_enc_unsubscribe(&o, MQTT_V311, 7, &f, 1, NULL);
    assert_bytes(&o, ARR(0xa2, 5, 0, 7, 0, 1, 'x'), 7);

    o = out_new();
    mqtt_enc_pingreq(&o);
    mqtt_enc_pingresp(&o);
    assert_bytes(&o, ARR(0xc0, 0, 0xd0, 0), 4);

    o = out_new();
    mqtt_enc_reason(&o, MQTT_V311, MQTT_DISCONNECT, 0x8e, NULL);
    mqtt_enc_reason(&o, MQTT_V5, MQTT_DISCONNECT, 0, NULL);
    mqtt_enc_reason(&o, MQTT_V5, MQTT_DISCONNECT, 0x04, NULL);
    mqtt_enc_reason(&o, MQTT_V5, MQTT_AUTH, 0x18, NULL);
    mqtt_enc_reason(&o, MQTT_V311, MQTT_AUTH, 0x18, NULL); /* nothing */
    assert_bytes(&o, ARR(0xe0, 0, 0xe0, 0, 0xe0, 1, 4, 0xf0, 1, 0x18), 10);
}

Test(mqtt_golden, writers_and_varints)
{
    static const struct {
        uint32_t v;
        uint8_t bytes[4];
        size_t n;
    } cases[] = {
        {0, {0x00}, 1},
        {127, {0x7f}, 1},
        {128, {0x80, 0x01}, 2},
        {16383, {0xff, 0x7f}, 2},
        {16384, {0x80, 0x80, 0x01}, 3},
        {2097151, {0xff, 0xff, 0x7f}, 3},
        {2097152, {0x80, 0x80, 0x80, 0x01}, 4},
        {268435455, {0xff, 0xff, 0xff, 0x7f}, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mqtt_out_t o = out_new();
        mqtt_put_varint(&o, cases[i].v);
        assert_bytes(&o, cases[i].bytes, cases[i].n);
        cr_assert_eq(mqtt_varint_size(cases[i].v), cases[i].n);
    }

    mqtt_out_t o = out_new();
    mqtt_put_u8(&o, 0xab);
    mqtt_put_u16(&o, 0x1234);
    mqtt_put_u32(&o, 0xdeadbeef);
    mqtt_put_str(&o, "hi", 2);
    mqtt_put_bytes(&o, "z", 1);
    mqtt_put_bytes(&o, NULL, 0);
    assert_bytes(
        &o, ARR(0xab, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 2, 'h', 'i', 'z'),
        12);
}

/* ---- round trips, per packet type --------------------------------------- */

static void connect_roundtrip(const mqtt_connect_t *c,
                              const mqtt_bytes_t *props)
{
    mqtt_out_t o = out_new();
    mqtt_enc_connect(&o, c, props);
    cr_assert_leq(o.len, o.cap);
    /* the version argument is ignored for CONNECT */
    mqtt_packet_t p = decode_ok(o.buf, o.len, MQTT_V311);
    const mqtt_connect_t *d = &p.u.connect;

    cr_assert_eq(p.type, MQTT_CONNECT);
    cr_assert_eq(p.flags, 0);
    cr_assert_eq(d->version, c->version);
    cr_assert_eq(d->clean, c->clean);
    cr_assert_eq(d->keepalive, c->keepalive);
    cr_assert(bytes_is(d->client_id, (const char *)c->client_id.p));
    cr_assert_eq(d->will, c->will);
    cr_assert_eq(d->will_qos, c->will_qos);
    cr_assert_eq(d->will_retain, c->will_retain);
    if (c->will) {
        cr_assert(bytes_is(d->will_topic, (const char *)c->will_topic.p));
        cr_assert(bytes_is(d->will_payload, (const char *)c->will_payload.p));
    }
    cr_assert_eq(d->has_username, c->has_username);
    cr_assert_eq(d->has_password, c->has_password);
    if (c->has_username)
        cr_assert(bytes_is(d->username, (const char *)c->username.p));
    if (c->has_password)
        cr_assert(bytes_is(d->password, (const char *)c->password.p));
    size_t plen = props && c->version == MQTT_V5 ? props->len : 0;
    cr_assert_eq(p.props.raw.len, plen);
    if (plen)
        cr_assert_arr_eq(p.props.raw.p, props->p, plen);
    size_t wlen = c->will && c->version == MQTT_V5 ? c->will_props.raw.len : 0;
    cr_assert_eq(d->will_props.raw.len, wlen);
    if (wlen)
        cr_assert_arr_eq(d->will_props.raw.p, c->will_props.raw.p, wlen);
}

Test(mqtt_connect, roundtrip_all_versions)
{
    uint8_t pbuf[64], wbuf[64];
    mqtt_out_t po, wo;
    mqtt_out_init(&po, pbuf, sizeof pbuf);
    mqtt_prop_u32(&po, MQTT_P_SESSION_EXPIRY, 3600);
    mqtt_prop_u16(&po, MQTT_P_RECEIVE_MAXIMUM, 20);
    mqtt_prop_pair(&po, MQTT_P_USER_PROPERTY, "k", 1, "v", 1);
    mqtt_bytes_t props = {pbuf, (uint32_t)po.len};
    mqtt_out_init(&wo, wbuf, sizeof wbuf);
    mqtt_prop_u32(&wo, MQTT_P_WILL_DELAY, 5);
    mqtt_prop_u8(&wo, MQTT_P_PAYLOAD_FORMAT, 1);

    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        mqtt_connect_t c = {.version = (uint8_t)v,
                            .keepalive = 30,
                            .client_id = BS("client-1")};
        connect_roundtrip(&c, NULL);
        c.clean = true;
        c.client_id = BS("");
        connect_roundtrip(&c, NULL);

        c.client_id = BS("dev\xc3\xa9");
        c.will = true;
        c.will_qos = 2;
        c.will_retain = true;
        c.will_topic = BS("status/dev");
        c.will_payload = BS("gone");
        c.has_username = true;
        c.username = BS("user");
        c.has_password = true;
        c.password = BS("secret");
        connect_roundtrip(&c, NULL);
        c.will_props.raw = (mqtt_bytes_t){wbuf, (uint32_t)wo.len};
        connect_roundtrip(&c, &props);

        c.will_qos = 1;
        c.will_retain = false;
        c.has_password = false;
        connect_roundtrip(&c, &props);
        c.will = false;
        c.will_qos = 0;
        connect_roundtrip(&c, &props);
    }
}

Test(mqtt_connect, v5_properties_decoded)
{
    uint8_t pbuf[64], wbuf[64];
    mqtt_out_t po, wo;
    mqtt_out_init(&po, pbuf, sizeof pbuf);
    mqtt_prop_u32(&po, MQTT_P_SESSION_EXPIRY, 3600);
    mqtt_prop_u32(&po, MQTT_P_MAXIMUM_PACKET_SIZE, 4096);
    mqtt_out_init(&wo, wbuf, sizeof wbuf);
    mqtt_prop_u32(&wo, MQTT_P_WILL_DELAY, 5);
    mqtt_prop_str(&wo, MQTT_P_CONTENT_TYPE, "text/plain", 10);
    mqtt_bytes_t props = {pbuf, (uint32_t)po.len};
    mqtt_connect_t c = {.version = MQTT_V5,
                        .client_id = BS("c"),
                        .will = true,
                        .will_topic = BS("w"),
                        .will_payload = BS(""),
                        .will_props.raw = {wbuf, (uint32_t)wo.len}};
    mqtt_out_t o = out_new();
    mqtt_enc_connect(&o, &c, &props);
    mqtt_packet_t p = decode_ok(o.buf, o.len, MQTT_V5);

    cr_assert_eq(p.props.session_expiry, 3600);
    cr_assert_eq(p.props.maximum_packet_size, 4096);
    cr_assert(mqtt_props_has(&p.props, MQTT_P_SESSION_EXPIRY));
    cr_assert_not(mqtt_props_has(&p.props, MQTT_P_WILL_DELAY));
    cr_assert_eq(p.u.connect.will_props.will_delay, 5);
    cr_assert(bytes_is(p.u.connect.will_props.content_type, "text/plain"));
    cr_assert_not(
        mqtt_props_has(&p.u.connect.will_props, MQTT_P_SESSION_EXPIRY));
}

Test(mqtt_connect, protocol_name_and_level)
{
    mqtt_packet_t p;

    /* "MQTT" level 3, "MQIsdp" level 4, level 6, unknown name */
    static const uint8_t cases[][14] = {
        {0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 3, 2, 0, 60, 0, 0},
        {0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 6, 2, 0, 60, 0, 0},
        {0x10, 12, 0, 4, 'M', 'Q', 'T', 'X', 4, 2, 0, 60, 0, 0},
        {0x10, 12, 0, 4, 'm', 'q', 't', 't', 5, 2, 0, 60, 0, 0},
    };
    static const uint8_t levels[] = {3, 6, 4, 5};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(mqtt_decode(cases[i], 14, MQTT_V5, &p), SL_EVERSION);
        cr_assert_eq(p.type, MQTT_CONNECT);
        cr_assert_eq(p.u.connect.version, levels[i]);
    }
    const uint8_t isdp4[] = {0x10, 14,  0, 6, 'M', 'Q', 'I', 's',
                             'd',  'p', 4, 2, 0,   60,  0,   0};
    cr_assert_eq(mqtt_decode(isdp4, sizeof isdp4, MQTT_V5, &p), SL_EVERSION);
    cr_assert_eq(p.u.connect.version, 4);
    const uint8_t isdp3[] = {0x10, 14,  0, 6, 'M', 'Q', 'I', 's',
                             'd',  'p', 3, 2, 0,   60,  0,   0};
    cr_assert_eq(mqtt_decode(isdp3, sizeof isdp3, MQTT_V5, &p), SL_OK);
    cr_assert_eq(p.u.connect.version, 3);
    /* name cut short, or no level byte: malformed */
    cr_assert_eq(DEC(MQTT_V5, 0x10, 4, 0, 4, 'M', 'Q'), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x10, 6, 0, 4, 'M', 'Q', 'T', 'T'),
                 SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x10, 0), SL_EMALFORMED);
}

/* A 3.1.1 CONNECT with the given connect flags and payload fields. */
static int connect_flags_rc(int version, uint8_t flags)
{
    /* client id "c", will topic "t", will payload "p", user "u", pass "w" */
    uint8_t b[64];
    size_t n = 0;
    b[n++] = 0x10;
    b[n++] = 0; /* length, set below */
    memcpy(b + n, "\0\4MQTT", 6);
    n += 6;
    b[n++] = (uint8_t)version;
    b[n++] = flags;
    b[n++] = 0;
    b[n++] = 10;
    if (version == MQTT_V5)
        b[n++] = 0;
    memcpy(b + n, "\0\1c", 3);
    n += 3;
    if (flags & 0x04) {
        if (version == MQTT_V5)
            b[n++] = 0;
        memcpy(b + n, "\0\1t\0\1p", 6);
        n += 6;
    }
    if (flags & 0x80) {
        memcpy(b + n, "\0\1u", 3);
        n += 3;
    }
    if (flags & 0x40) {
        memcpy(b + n, "\0\1w", 3);
        n += 3;
    }
    b[1] = (uint8_t)(n - 2);
    return decode_rc(b, n, version);
}

Test(mqtt_connect, flags)
{
    for (int v = MQTT_V311; v <= MQTT_V5; v++) {
        cr_assert_eq(connect_flags_rc(v, 0x02), SL_OK);
        cr_assert_eq(connect_flags_rc(v, 0x00), SL_OK);
        cr_assert_eq(connect_flags_rc(v, 0x03), SL_EMALFORMED); /* reserved */
        cr_assert_eq(connect_flags_rc(v, 0x01), SL_EMALFORMED);
        cr_assert_eq(connect_flags_rc(v, 0x04 | 0x10), SL_OK); /* will 2 */
        cr_assert_eq(connect_flags_rc(v, 0x04 | 0x18), SL_EMALFORMED);
        cr_assert_eq(connect_flags_rc(v, 0x08), SL_EMALFORMED); /* no will */
        cr_assert_eq(connect_flags_rc(v, 0x10), SL_EMALFORMED);
        cr_assert_eq(connect_flags_rc(v, 0x20), SL_EMALFORMED);
        cr_assert_eq(connect_flags_rc(v, 0x24), SL_OK);
        cr_assert_eq(connect_flags_rc(v, 0xc0), SL_OK);
        cr_assert_eq(connect_flags_rc(v, 0x80), SL_OK);
    }
    /* password without user name: malformed in 3.1.1, allowed in 5.0 */
    cr_assert_eq(connect_flags_rc(MQTT_V311, 0x40), SL_EMALFORMED);
    cr_assert_eq(connect_flags_rc(MQTT_V5, 0x40), SL_OK);
    /* CONNECT fixed-header flags must be 0 */
    cr_assert_eq(
        DEC(MQTT_V311, 0x11, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0),
        SL_EMALFORMED);
}

Test(mqtt_connect, strings_and_leftovers)
{
    /* client id with U+0000 */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60,
                     0, 1, 0),
                 SL_EUTF8);
    /* client id with a surrogate */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60,
                     0, 3, 0xed, 0xa0, 0x80),
                 SL_EUTF8);
    /* client id length past the end */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60,
                     0, 2, 'a'),
                 SL_EMALFORMED);
    /* a byte after the last field */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60,
                     0, 0, 'x'),
                 SL_EMALFORMED);
    /* will topic with a wildcard, empty will topic, invalid user name */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 4, 6, 0, 60,
                     0, 0, 0, 2, 'a', '#', 0, 0),
                 SL_ETOPIC);
    cr_assert_eq(DEC(MQTT_V311, 0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 6, 0, 60,
                     0, 0, 0, 0, 0, 0),
                 SL_ETOPIC);
    cr_assert_eq(DEC(MQTT_V311, 0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x82, 0,
                     60, 0, 0, 0, 1, 0xff),
                 SL_EUTF8);
    /* password is binary: any bytes */
    cr_assert_eq(DEC(MQTT_V311, 0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0,
                     60, 0, 0, 0, 1, 'u', 0, 2, 0x00, 0xff),
                 SL_OK);
}

Test(mqtt_connect, every_truncation_is_malformed)
{
    uint8_t pb[32];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_u32(&po, MQTT_P_SESSION_EXPIRY, 10);
    mqtt_prop_pair(&po, MQTT_P_USER_PROPERTY, "a", 1, "b", 1);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};
    mqtt_connect_t c = {.version = MQTT_V5,
                        .client_id = BS("id"),
                        .will = true,
                        .will_topic = BS("t"),
                        .will_payload = BS("p"),
                        .will_props.raw = props,
                        .has_username = true,
                        .username = BS("u"),
                        .has_password = true,
                        .password = BS("pw")};
    uint8_t full[128];
    mqtt_out_t o;
    mqtt_out_init(&o, full, sizeof full);
    mqtt_enc_connect(&o, &c, &props);
    cr_assert_lt(o.len, 127);

    /* keep the header consistent, drop the body's tail */
    for (size_t k = 0; k < o.len - 2; k++) {
        uint8_t t[128];
        memcpy(t, full, 2 + k);
        t[1] = (uint8_t)k;
        cr_assert_eq(decode_rc(t, 2 + k, MQTT_V5), SL_EMALFORMED,
                     "body cut to %zu", k);
    }
}

static void connack_check(int v, bool sp, uint8_t code)
{
    uint8_t pb[32];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_u16(&po, MQTT_P_SERVER_KEEP_ALIVE, 120);
    mqtt_prop_str(&po, MQTT_P_ASSIGNED_CLIENT_ID, "auto-1", 6);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};

    mqtt_out_t o = out_new();
    mqtt_enc_connack(&o, v, sp, code, &props);
    mqtt_packet_t p = decode_ok(o.buf, o.len, v);
    cr_assert_eq(p.type, MQTT_CONNACK);
    cr_assert_eq(p.u.connack.session_present, v == MQTT_V31 ? false : sp);
    cr_assert_eq(p.u.connack.code, code);
    if (v == MQTT_V5) {
        cr_assert_eq(p.props.server_keep_alive, 120);
        cr_assert(bytes_is(p.props.assigned_client_id, "auto-1"));
    } else {
        cr_assert_eq(p.props.present, 0);
    }
}

Test(mqtt_connack, roundtrip_and_checks)
{
    for (size_t i = 0; i < 3; i++) {
        connack_check(versions[i], true, 0);
        connack_check(versions[i], false, 0);
    }
    connack_check(MQTT_V311, false, MQTT_V3_NOT_AUTHORIZED);
    connack_check(MQTT_V5, false, MQTT_RC_BAD_USER_OR_PASSWORD);

    cr_assert_eq(DEC(MQTT_V311, 0x20, 2, 0x02, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x20, 3, 0x80, 0, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V31, 0x20, 2, 0x02, 0), SL_OK); /* 3.1: unused */
    cr_assert_eq(DEC(MQTT_V311, 0x20, 2, 0, 6), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x20, 3, 0, 0x01, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x20, 3, 0, 0x8b, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0x20, 3, 0, 0, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V311, 0x20, 1, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x20, 2, 0, 0), SL_EMALFORMED); /* no props */
    cr_assert_eq(DEC(MQTT_V5, 0x20, 4, 0, 0, 0, 0), SL_EMALFORMED);
}

static void publish_check(int v, const mqtt_publish_t *in,
                          const mqtt_bytes_t *props)
{
    mqtt_out_t o = out_new();
    mqtt_enc_publish(&o, v, in, props);
    cr_assert_leq(o.len, o.cap);

    /* the header alone is exactly the bytes before the payload */
    uint8_t hb[256];
    mqtt_out_t ho;
    mqtt_out_init(&ho, hb, sizeof hb);
    mqtt_enc_publish_header(&ho, v, in, in->payload.len, props);
    cr_assert_eq(ho.len + in->payload.len, o.len);
    cr_assert_arr_eq(hb, o.buf, ho.len);

    mqtt_packet_t p = decode_ok(o.buf, o.len, v);
    const mqtt_publish_t *d = &p.u.publish;
    cr_assert_eq(p.type, MQTT_PUBLISH);
    cr_assert_eq(d->dup, in->dup);
    cr_assert_eq(d->qos, in->qos);
    cr_assert_eq(d->retain, in->retain);
    cr_assert_eq(d->packet_id, in->qos ? in->packet_id : 0);
    cr_assert_eq(d->topic.len, in->topic.len);
    cr_assert_arr_eq(d->topic.p, in->topic.p, in->topic.len);
    cr_assert_eq(d->payload.len, in->payload.len);
    if (in->payload.len)
        cr_assert_arr_eq(d->payload.p, in->payload.p, in->payload.len);
    cr_assert_eq(d->payload.p, o.buf + ho.len);
    size_t plen = props && v == MQTT_V5 ? props->len : 0;
    cr_assert_eq(p.props.raw.len, plen);
}

Test(mqtt_publish, roundtrip)
{
    uint8_t pb[32];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_u32(&po, MQTT_P_MESSAGE_EXPIRY, 60);
    mqtt_prop_u8(&po, MQTT_P_PAYLOAD_FORMAT, 1);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};

    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        for (uint8_t qos = 0; qos <= 2; qos++) {
            mqtt_publish_t in = {.qos = qos,
                                 .packet_id = 0xbeef,
                                 .topic = BS("sensors/t\xc3\xa9/1"),
                                 .payload = BS("21.5")};
            publish_check(v, &in, NULL);
            in.retain = true;
            in.dup = qos > 0;
            publish_check(v, &in, &props);
            in.payload = BS("");
            publish_check(v, &in, &props);
            in.topic = BS("$SYS/x");
            publish_check(v, &in, NULL);
        }
    }
    /* v5: empty topic with a topic alias */
    uint8_t ab[8];
    mqtt_out_init(&po, ab, sizeof ab);
    mqtt_prop_u16(&po, MQTT_P_TOPIC_ALIAS, 3);
    mqtt_bytes_t alias = {ab, (uint32_t)po.len};
    mqtt_publish_t in = {.topic = BS(""), .payload = BS("x")};
    publish_check(MQTT_V5, &in, &alias);
}

Test(mqtt_publish, remaining_length_boundaries)
{
    /* topic "t" (3 bytes), QoS 0, v3.1.1: remaining length = 3 + payload */
    static const uint32_t rls[] = {127, 128, 16383, 16384, 2097151, 2097152};
    uint8_t *payload = calloc(1, 2097152);
    uint8_t *out = malloc(2097152 + 16);
    cr_assert(payload && out);
    for (size_t i = 0; i < sizeof rls / sizeof rls[0]; i++) {
        mqtt_publish_t in = {.topic = BS("t"),
                             .payload = {payload, rls[i] - 3}};
        mqtt_out_t o;
        mqtt_out_init(&o, out, 2097152 + 16);
        mqtt_enc_publish(&o, MQTT_V311, &in, NULL);
        size_t hl = 1 + mqtt_varint_size(rls[i]);
        cr_assert_eq(o.len, hl + rls[i]);
        uint32_t total;
        mqtt_type_t type;
        cr_assert_eq(mqtt_frame(out, o.len, 0, &total, &type), SL_OK);
        cr_assert_eq(total, o.len);
        cr_assert_eq(mqtt_frame(out, hl, 0, &total, &type), SL_AGAIN);
        cr_assert_eq(total, o.len);
        mqtt_packet_t p;
        cr_assert_eq(mqtt_decode(out, o.len, MQTT_V311, &p), SL_OK);
        cr_assert_eq(p.u.publish.payload.len, rls[i] - 3);

        uint8_t hb[16];
        mqtt_out_t ho;
        mqtt_out_init(&ho, hb, sizeof hb);
        mqtt_enc_publish_header(&ho, MQTT_V311, &in, in.payload.len, NULL);
        cr_assert_eq(ho.len, hl + 3);
        cr_assert_arr_eq(hb, out, ho.len);
    }
    free(payload);
    free(out);
}

Test(mqtt_publish, flags)
{
    /* QoS 3 */
    cr_assert_eq(DEC(MQTT_V311, 0x36, 5, 0, 1, 'a', 0, 1), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x3e, 6, 0, 1, 'a', 0, 1, 0), SL_EMALFORMED);
    /* DUP with QoS 0 */
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(DEC(versions[i], 0x38, 4, 0, 1, 'a', 'x'), SL_EMALFORMED);
    /* DUP with QoS 1 and retain: fine */
    cr_assert_eq(DEC(MQTT_V311, 0x3b, 5, 0, 1, 'a', 0, 1), SL_OK);
}

Test(mqtt_publish, topic_checks)
{
    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        if (v == MQTT_V5) {
            cr_assert_eq(DEC(v, 0x30, 6, 0, 3, 'a', '/', '+', 0), SL_ETOPIC);
            cr_assert_eq(DEC(v, 0x30, 4, 0, 1, '#', 0), SL_ETOPIC);
            cr_assert_eq(DEC(v, 0x30, 5, 0, 2, 'a', 0, 0), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 5, 0, 2, 0xc0, 0x80, 0), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 6, 0, 3, 0xed, 0xbf, 0xbf, 0), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 3, 0, 0, 0), SL_EPROTOCOL);
            cr_assert_eq(DEC(v, 0x30, 6, 0, 0, 3, 0x23, 0, 1), SL_OK);
            cr_assert_eq(DEC(v, 0x30, 3, 0, 4, 'a'), SL_EMALFORMED);
        } else {
            cr_assert_eq(DEC(v, 0x30, 5, 0, 3, 'a', '/', '+'), SL_ETOPIC);
            cr_assert_eq(DEC(v, 0x30, 3, 0, 1, '#'), SL_ETOPIC);
            cr_assert_eq(DEC(v, 0x30, 4, 0, 2, 'a', 0), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 4, 0, 2, 0xc0, 0x80), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 5, 0, 3, 0xed, 0xa0, 0x80), SL_EUTF8);
            cr_assert_eq(DEC(v, 0x30, 2, 0, 0), SL_ETOPIC);
            cr_assert_eq(DEC(v, 0x30, 3, 0, 4, 'a'), SL_EMALFORMED);
            cr_assert_eq(DEC(v, 0x30, 1, 0), SL_EMALFORMED);
            /* '+' and '#' inside the payload are just bytes */
            cr_assert_eq(DEC(v, 0x30, 5, 0, 1, 'a', '+', '#'), SL_OK);
        }
    }
}

Test(mqtt_publish, packet_id_zero)
{
    cr_assert_eq(DEC(MQTT_V311, 0x32, 5, 0, 1, 'a', 0, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x34, 6, 0, 1, 'a', 0, 0, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0x32, 4, 0, 1, 'a', 0), SL_EMALFORMED);
}

Test(mqtt_ack, roundtrip)
{
    static const mqtt_type_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL,
                                        MQTT_PUBCOMP};
    static const uint8_t codes[] = {0x10, 0x80, 0x92, 0x92};
    uint8_t pb[32];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_str(&po, MQTT_P_REASON_STRING, "why", 3);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};

    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        for (size_t t = 0; t < 4; t++) {
            for (int form = 0; form < 3; form++) {
                uint8_t code = form ? codes[t] : 0;
                const mqtt_bytes_t *pr = form == 2 ? &props : NULL;
                mqtt_out_t o = out_new();
                mqtt_enc_ack(&o, v, types[t], 0x4242, code, pr);
                size_t want = v != MQTT_V5 ? 4
                              : form == 0  ? 4
                              : form == 1  ? 5
                                           : 5 + 1 + po.len;
                cr_assert_eq(o.len, want);
                mqtt_packet_t p = decode_ok(o.buf, o.len, v);
                cr_assert_eq(p.type, types[t]);
                cr_assert_eq(p.flags, types[t] == MQTT_PUBREL ? 2 : 0);
                cr_assert_eq(p.u.ack.packet_id, 0x4242);
                cr_assert_eq(p.u.ack.code, v == MQTT_V5 ? code : 0);
                if (v == MQTT_V5 && form == 2)
                    cr_assert(bytes_is(p.props.reason_string, "why"));
            }
        }
    }
    /* v5: reason code 0 with properties keeps the code byte */
    mqtt_out_t o = out_new();
    mqtt_enc_ack(&o, MQTT_V5, MQTT_PUBACK, 1, 0, &props);
    cr_assert_eq(o.len, 5 + 1 + po.len);
    cr_assert_eq(decode_ok(o.buf, o.len, MQTT_V5).props.reason_string.len, 3);
}

Test(mqtt_ack, malformed)
{
    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        cr_assert_eq(DEC(v, 0x40, 2, 0, 0), SL_EPROTOCOL);
        cr_assert_eq(DEC(v, 0x50, 2, 0, 0), SL_EPROTOCOL);
        cr_assert_eq(DEC(v, 0x62, 2, 0, 0), SL_EPROTOCOL);
        cr_assert_eq(DEC(v, 0x70, 2, 0, 0), SL_EPROTOCOL);
        cr_assert_eq(DEC(v, 0x40, 1, 0), SL_EMALFORMED);
        cr_assert_eq(DEC(v, 0x40, 0), SL_EMALFORMED);
    }
    /* 3.1.1: exactly two bytes */
    cr_assert_eq(DEC(MQTT_V311, 0x40, 3, 0, 1, 0), SL_EMALFORMED);
    /* 5.0: code only, code + empty props; bad code; props past the end */
    cr_assert_eq(DEC(MQTT_V5, 0x40, 3, 0, 1, 0x97), SL_OK);
    cr_assert_eq(DEC(MQTT_V5, 0x40, 4, 0, 1, 0x00, 0), SL_OK);
    cr_assert_eq(DEC(MQTT_V5, 0x40, 3, 0, 1, 0x92), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x62, 3, 0, 1, 0x10), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x70, 3, 0, 1, 0x92), SL_OK);
    cr_assert_eq(DEC(MQTT_V5, 0x40, 4, 0, 1, 0x00, 5), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0x40, 5, 0, 1, 0x00, 0, 0), SL_EMALFORMED);
}

static void subscribe_check(int v)
{
    const mqtt_sub_t subs[] = {
        {.filter = BS("a/+/c"), .qos = 0},
        {.filter = BS("#"), .qos = 1, .no_local = true},
        {.filter = BS("$share/g/x"),
         .qos = 2,
         .retain_as_published = true,
         .retain_handling = 2},
        {.filter = BS(""), .qos = 1, .retain_handling = 1},
    };
    uint8_t pb[16];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_varint(&po, MQTT_P_SUBSCRIPTION_ID, 200000);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};

    mqtt_out_t o = out_new();
    mqtt_enc_subscribe(&o, v, 77, subs, 4, &props);
    mqtt_packet_t p = decode_ok(o.buf, o.len, v);
    cr_assert_eq(p.type, MQTT_SUBSCRIBE);
    cr_assert_eq(p.flags, 2);
    cr_assert_eq(p.u.sub.packet_id, 77);
    cr_assert_eq(p.u.sub.count, 4);
    if (v == MQTT_V5)
        cr_assert_eq(p.props.subscription_id, 200000);

    size_t cur = 0;
    mqtt_sub_t s;
    for (size_t i = 0; i < 4; i++) {
        cr_assert(mqtt_sub_next(&p, v, &cur, &s));
        cr_assert_eq(s.filter.len, subs[i].filter.len);
        cr_assert_arr_eq(s.filter.p, subs[i].filter.p, s.filter.len);
        cr_assert_eq(s.qos, subs[i].qos);
        bool v5 = v == MQTT_V5;
        cr_assert_eq(s.no_local, v5 && subs[i].no_local);
        cr_assert_eq(s.retain_as_published, v5 && subs[i].retain_as_published);
        cr_assert_eq(s.retain_handling, v5 ? subs[i].retain_handling : 0);
    }
    cr_assert_not(mqtt_sub_next(&p, v, &cur, &s));
    cr_assert_not(mqtt_sub_next(&p, v, &cur, &s));
}

static void unsubscribe_check(int v)
{
    const mqtt_bytes_t filters[] = {BS("a/b"), BS("#"), BS("x/+")};
    mqtt_out_t o = out_new();
    mqtt_enc_unsubscribe(&o, v, 9, filters, 3, NULL);
    mqtt_packet_t p = decode_ok(o.buf, o.len, v);
    cr_assert_eq(p.type, MQTT_UNSUBSCRIBE);
    cr_assert_eq(p.flags, 2);
    cr_assert_eq(p.u.sub.packet_id, 9);
    cr_assert_eq(p.u.sub.count, 3);
    size_t cur = 0;
    mqtt_sub_t s;
    for (size_t i = 0; i < 3; i++) {
        cr_assert(mqtt_sub_next(&p, v, &cur, &s));
        cr_assert_eq(s.filter.len, filters[i].len);
        cr_assert_arr_eq(s.filter.p, filters[i].p, s.filter.len);
        cr_assert_eq(s.qos, 0);
    }
    cr_assert_not(mqtt_sub_next(&p, v, &cur, &s));
}

Test(mqtt_subscribe, roundtrip)
{
    for (size_t i = 0; i < 3; i++) {
        subscribe_check(versions[i]);
        unsubscribe_check(versions[i]);
    }
}

Test(mqtt_subscribe, malformed)
{
    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        bool v5 = v == MQTT_V5;
        /* empty */
        cr_assert_eq(v5 ? DEC(v, 0x82, 3, 0, 1, 0) : DEC(v, 0x82, 2, 0, 1),
                     SL_EPROTOCOL);
        cr_assert_eq(v5 ? DEC(v, 0xa2, 3, 0, 1, 0) : DEC(v, 0xa2, 2, 0, 1),
                     SL_EPROTOCOL);
        /* packet id 0 */
        cr_assert_eq(v5 ? DEC(v, 0x82, 7, 0, 0, 0, 0, 1, 'a', 0)
                        : DEC(v, 0x82, 6, 0, 0, 0, 1, 'a', 0),
                     SL_EPROTOCOL);
        cr_assert_eq(v5 ? DEC(v, 0xa2, 6, 0, 0, 0, 0, 1, 'a')
                        : DEC(v, 0xa2, 5, 0, 0, 0, 1, 'a'),
                     SL_EPROTOCOL);
        /* options byte missing; filter length past the end; bad UTF-8 */
        cr_assert_eq(v5 ? DEC(v, 0x82, 6, 0, 1, 0, 0, 1, 'a')
                        : DEC(v, 0x82, 5, 0, 1, 0, 1, 'a'),
                     SL_EMALFORMED);
        cr_assert_eq(v5 ? DEC(v, 0x82, 7, 0, 1, 0, 0, 5, 'a', 0)
                        : DEC(v, 0x82, 6, 0, 1, 0, 5, 'a', 0),
                     SL_EMALFORMED);
        cr_assert_eq(v5 ? DEC(v, 0xa2, 6, 0, 1, 0, 0, 1, 0)
                        : DEC(v, 0xa2, 5, 0, 1, 0, 1, 0),
                     SL_EUTF8);
        cr_assert_eq(v5 ? DEC(v, 0x82, 7, 0, 1, 0, 0, 1, 0x80, 0)
                        : DEC(v, 0x82, 6, 0, 1, 0, 1, 0x80, 0),
                     SL_EUTF8);
        /* one trailing byte after a filter of UNSUBSCRIBE */
        cr_assert_eq(v5 ? DEC(v, 0xa2, 7, 0, 1, 0, 0, 1, 'a', 0)
                        : DEC(v, 0xa2, 6, 0, 1, 0, 1, 'a', 0),
                     SL_EMALFORMED);
    }
}

static int sub_opt_rc(int v, uint8_t opt)
{
    if (v == MQTT_V5)
        return DEC(v, 0x82, 7, 0, 1, 0, 0, 1, 'a', opt);
    return DEC(v, 0x82, 6, 0, 1, 0, 1, 'a', opt);
}

Test(mqtt_subscribe, options)
{
    for (int v = MQTT_V31; v <= MQTT_V311; v++) {
        cr_assert_eq(sub_opt_rc(v, 2), SL_OK);
        cr_assert_eq(sub_opt_rc(v, 3), SL_EMALFORMED);
        for (int bit = 2; bit < 8; bit++)
            cr_assert_eq(sub_opt_rc(v, (uint8_t)(1u << bit)), SL_EMALFORMED);
    }
    cr_assert_eq(sub_opt_rc(MQTT_V5, 0x2e), SL_OK); /* rh 2, rap, nl, qos 2 */
    cr_assert_eq(sub_opt_rc(MQTT_V5, 0x03), SL_EPROTOCOL); /* QoS 3 */
    cr_assert_eq(sub_opt_rc(MQTT_V5, 0x30), SL_EPROTOCOL); /* rh 3 */
    cr_assert_eq(sub_opt_rc(MQTT_V5, 0x40), SL_EMALFORMED);
    cr_assert_eq(sub_opt_rc(MQTT_V5, 0x80), SL_EMALFORMED);
    /* no_local on a shared subscription is the broker's business */
    cr_assert_eq(DEC(MQTT_V5, 0x82, 13, 0, 1, 0, 0, 7, '$', 's', 'h', 'a', 'r',
                     'e', '/', 0x04),
                 SL_OK);
}

Test(mqtt_suback, roundtrip)
{
    const uint8_t v3codes[] = {0, 1, 2, 0x80};
    const uint8_t v5codes[] = {0, 2, 0x87, 0x9e, 0xa2};
    const uint8_t v5ucodes[] = {0, 0x11, 0x8f};
    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        bool v5 = v == MQTT_V5;
        const uint8_t *codes = v5 ? v5codes : v3codes;
        size_t n = v5 ? 5 : 4;
        mqtt_out_t o = out_new();
        mqtt_enc_suback(&o, v, MQTT_SUBACK, 300, codes, n, NULL);
        mqtt_packet_t p = decode_ok(o.buf, o.len, v);
        cr_assert_eq(p.u.suback.packet_id, 300);
        cr_assert_eq(p.u.suback.codes.len, n);
        cr_assert_arr_eq(p.u.suback.codes.p, codes, n);

        o = out_new();
        mqtt_enc_suback(&o, v, MQTT_UNSUBACK, 301, v5ucodes, 3, NULL);
        p = decode_ok(o.buf, o.len, v);
        cr_assert_eq(p.type, MQTT_UNSUBACK);
        cr_assert_eq(p.u.suback.packet_id, 301);
        cr_assert_eq(p.u.suback.codes.len, v5 ? 3 : 0);
        if (v5)
            cr_assert_arr_eq(p.u.suback.codes.p, v5ucodes, 3);
    }
}

Test(mqtt_suback, malformed)
{
    cr_assert_eq(DEC(MQTT_V311, 0x90, 2, 0, 1), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x90, 3, 0, 1, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0xb0, 3, 0, 1, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0x90, 3, 0, 0, 0), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0x90, 3, 0, 1, 3), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0x90, 3, 0, 1, 0x87), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0x90, 4, 0, 1, 0, 0x11), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0xb0, 4, 0, 1, 0, 0x01), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V311, 0xb0, 3, 0, 1, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V311, 0xb0, 2, 0, 0), SL_EPROTOCOL);
}

Test(mqtt_misc, ping_disconnect_auth)
{
    for (size_t i = 0; i < 3; i++) {
        int v = versions[i];
        mqtt_out_t o = out_new();
        mqtt_enc_pingreq(&o);
        cr_assert_eq(decode_ok(o.buf, o.len, v).type, MQTT_PINGREQ);
        o = out_new();
        mqtt_enc_pingresp(&o);
        cr_assert_eq(decode_ok(o.buf, o.len, v).type, MQTT_PINGRESP);
        o = out_new();
        mqtt_enc_reason(&o, v, MQTT_DISCONNECT, 0, NULL);
        cr_assert_eq(decode_ok(o.buf, o.len, v).u.reason.code, 0);

        cr_assert_eq(DEC(v, 0xc0, 1, 0), SL_EMALFORMED);
        cr_assert_eq(DEC(v, 0xd0, 1, 0), SL_EMALFORMED);
        cr_assert_eq(DEC(v, 0xc0, 0x80, 0x01, [130] = 0), SL_EMALFORMED);
    }
    cr_assert_eq(DEC(MQTT_V311, 0xe0, 1, 0), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V311, 0xf0, 0), SL_EMALFORMED); /* no AUTH */
    cr_assert_eq(DEC(MQTT_V31, 0xf0, 0), SL_EMALFORMED);

    uint8_t pb[32];
    mqtt_out_t po;
    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_str(&po, MQTT_P_REASON_STRING, "bye", 3);
    mqtt_prop_u32(&po, MQTT_P_SESSION_EXPIRY, 0);
    mqtt_bytes_t props = {pb, (uint32_t)po.len};
    mqtt_out_t o = out_new();
    mqtt_enc_reason(&o, MQTT_V5, MQTT_DISCONNECT, 0x8b, &props);
    mqtt_packet_t p = decode_ok(o.buf, o.len, MQTT_V5);
    cr_assert_eq(p.u.reason.code, 0x8b);
    cr_assert(bytes_is(p.props.reason_string, "bye"));
    cr_assert(mqtt_props_has(&p.props, MQTT_P_SESSION_EXPIRY));

    mqtt_out_init(&po, pb, sizeof pb);
    mqtt_prop_str(&po, MQTT_P_AUTH_METHOD, "SCRAM", 5);
    mqtt_prop_str(&po, MQTT_P_AUTH_DATA, "\x01\x02", 2);
    props.len = (uint32_t)po.len;
    for (int form = 0; form < 3; form++) {
        uint8_t code = form ? MQTT_RC_CONTINUE_AUTH : 0;
        o = out_new();
        mqtt_enc_reason(&o, MQTT_V5, MQTT_AUTH, code,
                        form == 2 ? &props : NULL);
        cr_assert_eq(o.len, form == 0 ? 2u : form == 1 ? 3u : 4u + po.len);
        p = decode_ok(o.buf, o.len, MQTT_V5);
        cr_assert_eq(p.type, MQTT_AUTH);
        cr_assert_eq(p.u.reason.code, code);
        if (form == 2) {
            cr_assert(bytes_is(p.props.auth_method, "SCRAM"));
            cr_assert_eq(p.props.auth_data.len, 2);
        }
    }
    cr_assert_eq(DEC(MQTT_V5, 0xe0, 1, 0x8e), SL_OK);
    cr_assert_eq(DEC(MQTT_V5, 0xe0, 2, 0x8e, 0), SL_OK);
    cr_assert_eq(DEC(MQTT_V5, 0xe0, 1, 0x01), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0xf0, 1, 0x04), SL_EPROTOCOL);
    cr_assert_eq(DEC(MQTT_V5, 0xe0, 2, 0x00, 1), SL_EMALFORMED);
    cr_assert_eq(DEC(MQTT_V5, 0xe0, 3, 0x00, 0, 0), SL_EMALFORMED);
}

/* A minimal valid body for each type in 3.1.1, to test fixed-header flags. */
static size_t minimal_packet(mqtt_type_t t, int v, uint8_t *b)
{
    static const uint8_t connect[] = {0, 4, 'M', 'Q', 'T', 'T',
                                      4, 2, 0,   60,  0,   0};
    static const uint8_t sub[] = {0, 1, 0, 1, 'a', 0};
    static const uint8_t unsub[] = {0, 1, 0, 1, 'a'};
    static const uint8_t id[] = {0, 1};
    static const uint8_t suback[] = {0, 1, 0};
    static const uint8_t connack[] = {0, 0};
    const uint8_t *body = NULL;
    size_t n = 0;

    (void)v;
    switch (t) {
    case MQTT_CONNECT:
        body = connect;
        n = sizeof connect;
        break;
    case MQTT_CONNACK:
        body = connack;
        n = sizeof connack;
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK:
        body = id;
        n = sizeof id;
        break;
    case MQTT_SUBSCRIBE:
        body = sub;
        n = sizeof sub;
        break;
    case MQTT_UNSUBSCRIBE:
        body = unsub;
        n = sizeof unsub;
        break;
    case MQTT_SUBACK:
        body = suback;
        n = sizeof suback;
        break;
    default:
        break;
    }
    b[0] = (uint8_t)(t << 4);
    b[1] = (uint8_t)n;
    if (n)
        memcpy(b + 2, body, n);
    return 2 + n;
}

Test(mqtt_misc, reserved_fixed_header_flags)
{
    for (int v = MQTT_V31; v <= MQTT_V311; v++) {
        for (int t = MQTT_CONNECT; t <= MQTT_DISCONNECT; t++) {
            if (t == MQTT_PUBLISH)
                continue;
            uint8_t b[32];
            size_t n = minimal_packet((mqtt_type_t)t, v, b);
            bool two = t == MQTT_PUBREL || t == MQTT_SUBSCRIBE ||
                       t == MQTT_UNSUBSCRIBE;
            for (uint8_t f = 0; f < 16; f++) {
                b[0] = (uint8_t)(t << 4 | f);
                bool ok =
                    f == (two ? 2 : 0) || (two && v == MQTT_V31 && f == 0xa);
                cr_assert_eq(decode_rc(b, n, v), ok ? SL_OK : SL_EMALFORMED,
                             "v%d %s flags %x", v, mqtt_type_name(t), f);
            }
        }
    }
    for (uint8_t f = 1; f < 16; f++) {
        cr_assert_eq(decode_rc(ARR((uint8_t)(0xf0 | f), 0), 2, MQTT_V5),
                     SL_EMALFORMED);
        cr_assert_eq(decode_rc(ARR((uint8_t)(0xe0 | f), 0), 2, MQTT_V5),
                     SL_EMALFORMED);
    }
    cr_assert_eq(DEC(MQTT_V5, 0xf0, 0), SL_OK);
}

/* ---- UTF-8 -------------------------------------------------------------- */

Test(mqtt_utf8, valid)
{
    static const char *ok[] = {
        "",
        "a",
        "hello/world/with/a/long/ascii/topic/name",
        "\x01\x1f\x7f",
        "\xc3\xa9",                     /* U+00E9 */
        "\xc2\x80",                     /* U+0080 */
        "\xdf\xbf",                     /* U+07FF */
        "\xe0\xa0\x80",                 /* U+0800 */
        "\xe2\x82\xac",                 /* U+20AC */
        "\xed\x9f\xbf",                 /* U+D7FF */
        "\xee\x80\x80",                 /* U+E000 */
        "\xef\xbf\xbf",                 /* U+FFFF */
        "\xf0\x90\x80\x80",             /* U+10000 */
        "\xf4\x8f\xbf\xbf",             /* U+10FFFF */
        "abcdefgh\xc3\xa9stuvwxyz0123", /* ASCII run then multibyte */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert(mqtt_utf8_valid((const uint8_t *)ok[i], strlen(ok[i])),
                  "case %zu", i);
}

Test(mqtt_utf8, invalid)
{
    static const struct {
        const char *s;
        size_t n;
    } bad[] = {
        {"\0", 1},
        {"abcdefgh\0jklmnop", 16}, /* NUL in the 8-byte path */
        {"abcdefghijklmno\0", 16},
        {"abc\0", 4},
        {"\xc0\x80", 2},         /* overlong U+0000 */
        {"\xc1\xbf", 2},         /* overlong */
        {"\xe0\x80\x80", 3},     /* overlong */
        {"\xe0\x9f\xbf", 3},     /* overlong U+07FF */
        {"\xed\xa0\x80", 3},     /* U+D800 */
        {"\xed\xbf\xbf", 3},     /* U+DFFF */
        {"\xf0\x80\x80\x80", 4}, /* overlong */
        {"\xf0\x8f\xbf\xbf", 4}, /* overlong U+FFFF */
        {"\xf4\x90\x80\x80", 4}, /* U+110000 */
        {"\xf5\x80\x80\x80", 4},
        {"\xff", 1},
        {"\xfe", 1},
        {"\x80", 1}, /* stray continuation */
        {"a\xbf", 2},
        {"\xc3", 1}, /* cut short */
        {"\xe2\x82", 2},
        {"\xf0\x9f\x98", 3},
        {"\xe2\x28\xa1", 3}, /* bad continuation */
        {"\xf0\x9f\x28\x80", 4},
        {"\xc3\xa9\xc3", 3},
        {"abcdefgh\xc3", 9},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(mqtt_utf8_valid((const uint8_t *)bad[i].s, bad[i].n),
                      "case %zu", i);
}

/* ---- encoder buffer handling -------------------------------------------- */

Test(mqtt_encode, short_buffer_counts_and_never_overflows)
{
    uint8_t small[32];
    memset(small, 0xaa, sizeof small);
    mqtt_out_t o;
    mqtt_out_init(&o, small, 8);
    mqtt_publish_t p = {.qos = 1,
                        .packet_id = 5,
                        .topic = BS("a/long/topic"),
                        .payload = BS("payload-bytes")};
    mqtt_enc_publish(&o, MQTT_V5, &p, NULL);
    cr_assert_gt(o.len, 8);
    for (size_t i = 0; i < sizeof small; i++)
        cr_assert_eq(small[i], 0xaa);
    size_t need = o.len;

    mqtt_out_t o2 = out_new();
    mqtt_enc_publish(&o2, MQTT_V5, &p, NULL);
    cr_assert_eq(o2.len, need);

    /* low-level writers also count past the capacity */
    mqtt_out_init(&o, small, 2);
    mqtt_put_u16(&o, 1);
    mqtt_put_u32(&o, 2);
    mqtt_put_str(&o, "abc", 3);
    cr_assert_eq(o.len, 11);
    cr_assert_eq(small[2], 0xaa);
    cr_assert_not(mqtt_out_failed(&o));

    /* measuring with no buffer at all */
    mqtt_out_init(&o, NULL, 0);
    mqtt_enc_publish(&o, MQTT_V5, &p, NULL);
    cr_assert_eq(o.len, need);
}

Test(mqtt_encode, impossible_packets)
{
    static uint8_t big[70000];
    mqtt_out_t o = out_new();
    mqtt_put_str(&o, big, 65536);
    cr_assert(mqtt_out_failed(&o));
    mqtt_put_u8(&o, 1);
    cr_assert_eq(o.len, MQTT_OUT_OVERFLOW);

    o = out_new();
    mqtt_put_varint(&o, MQTT_MAX_REMAINING + 1);
    cr_assert(mqtt_out_failed(&o));

    o = out_new();
    mqtt_publish_t p = {.topic = {big, 65536}, .payload = BS("x")};
    mqtt_enc_publish(&o, MQTT_V311, &p, NULL);
    cr_assert(mqtt_out_failed(&o));

    o = out_new();
    p.topic = BS("t");
    mqtt_enc_publish_header(&o, MQTT_V311, &p, MQTT_MAX_REMAINING, NULL);
    cr_assert(mqtt_out_failed(&o));
    o = out_new();
    mqtt_enc_publish_header(&o, MQTT_V311, &p, MQTT_MAX_REMAINING - 3, NULL);
    cr_assert_eq(o.len, 5 + 3);
}

/* ---- helpers ------------------------------------------------------------ */

Test(mqtt_misc, err_reason_and_names)
{
    cr_assert_eq(mqtt_err_reason(SL_EMALFORMED), 0x81);
    cr_assert_eq(mqtt_err_reason(SL_EUTF8), 0x81);
    cr_assert_eq(mqtt_err_reason(SL_EPROTOCOL), 0x82);
    cr_assert_eq(mqtt_err_reason(SL_EPROPERTY), 0x82);
    cr_assert_eq(mqtt_err_reason(SL_ETOPIC), 0x90);
    cr_assert_eq(mqtt_err_reason(SL_ETOOLARGE), 0x95);
    cr_assert_eq(mqtt_err_reason(SL_EVERSION), 0x84);
    cr_assert_eq(mqtt_err_reason(SL_ENOMEM), 0x80);
    cr_assert_eq(mqtt_err_reason(SL_OK), 0x00);
    cr_assert_str_eq(mqtt_type_name(MQTT_PUBLISH), "PUBLISH");
    cr_assert_str_eq(mqtt_type_name(MQTT_AUTH), "AUTH");
    cr_assert_str_eq(mqtt_type_name(0), "UNKNOWN");
    cr_assert_str_eq(mqtt_type_name(16), "UNKNOWN");
}

/* The one table: the broker's refusal statuses, per protocol version and
 * per acknowledgement. */
Test(mqtt_misc, reason_table)
{
    /* CONNACK: v5 reason codes and MQTT 3 return codes. */
    cr_assert_eq(mqtt_connack_code(SL_EAUTH, MQTT_V5), 0x87);
    cr_assert_eq(mqtt_connack_code(SL_EAUTH, MQTT_V311), 5);
    cr_assert_eq(mqtt_connack_code(SL_ECLIENTID, MQTT_V5), 0x85);
    cr_assert_eq(mqtt_connack_code(SL_ECLIENTID, MQTT_V31), 2);
    cr_assert_eq(mqtt_connack_code(SL_EUNAVAILABLE, MQTT_V5), 0x88);
    cr_assert_eq(mqtt_connack_code(SL_EUNAVAILABLE, MQTT_V311), 3);
    cr_assert_eq(mqtt_connack_code(SL_EVERSION, MQTT_V311), 1);
    cr_assert_eq(mqtt_connack_code(SL_EKEEPALIVEMAX, MQTT_V311), 2);
    cr_assert_eq(mqtt_connack_code(SL_EQOS, MQTT_V311), 5, "a will's QoS");
    cr_assert_eq(mqtt_connack_code(SL_EIO, MQTT_V311), 3, "not listed");
    /* DISCONNECT reasons of the broker's own closes. */
    cr_assert_eq(mqtt_err_reason(SL_EKEEPALIVE), 0x8D);
    cr_assert_eq(mqtt_err_reason(SL_ETAKENOVER), 0x8E);
    cr_assert_eq(mqtt_err_reason(SL_ESHUTDOWN), 0x8B);
    cr_assert_eq(mqtt_err_reason(SL_ERECEIVEMAX), 0x93);
    cr_assert_eq(mqtt_err_reason(SL_EALIAS), 0x94);
    cr_assert_eq(mqtt_err_reason(SL_ERETAIN), 0x9A);
    cr_assert_eq(mqtt_err_reason(SL_EQOS), 0x9B);
    /* Acknowledgements carry only the codes the spec allows there. */
    cr_assert_eq(mqtt_ack_code(SL_OK, MQTT_PUBACK), 0x00);
    cr_assert_eq(mqtt_ack_code(SL_NOMATCH, MQTT_PUBACK), 0x10);
    cr_assert_eq(mqtt_ack_code(SL_EAUTH, MQTT_PUBREC), 0x87);
    cr_assert_eq(mqtt_ack_code(SL_ESTALE, MQTT_PUBACK), 0x80,
                 "0x8E is not a PUBACK code");
    cr_assert_eq(mqtt_ack_code(SL_EPACKETID, MQTT_PUBCOMP), 0x92);
    cr_assert_eq(mqtt_ack_code(SL_NOSUB, MQTT_UNSUBACK), 0x11);
    cr_assert_eq(mqtt_suback_code(SL_EFILTER, MQTT_V5), 0x8F);
    cr_assert_eq(mqtt_suback_code(SL_ELIMIT, MQTT_V5), 0x97);
    cr_assert_eq(mqtt_suback_code(SL_EPROTOCOL, MQTT_V5), 0x80,
                 "0x82 is not a SUBACK code");
    cr_assert_eq(mqtt_suback_code(SL_EAUTH, MQTT_V311), 0x80);
    /* Every status has a text. */
    for (int st = SL_EKEEPALIVEMAX; st <= SL_NOSUB; st++)
        cr_assert_str_neq(sl_strerror(st), "unknown error", "status %d", st);
}
