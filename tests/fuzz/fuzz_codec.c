/*
 * fuzz_codec.c - libFuzzer target for the MQTT codec.
 *
 * Each input is read as a stream of packets, once per protocol version
 * (3.1, 3.1.1, 5.0): mqtt_frame() splits it, every packet is copied into a
 * buffer of exactly its size (so the sanitizers see any read past the end)
 * and decoded. A packet that decodes is walked with the iterators, encoded
 * again, and that encoding must frame and decode to the same fields, and
 * encode to the very same bytes a second time. Any disagreement aborts.
 * The input is also checked against a slow reference UTF-8 validator.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzzing=true
 * Run:   ./build-fuzz/tests/fuzz/fuzz_codec tests/fuzz/corpus/codec
 */
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static bool same(mqtt_bytes_t a, mqtt_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Code point by code point, the obvious way. */
static bool utf8_reference(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint32_t c = s[i];
        size_t len;
        uint32_t min;
        if (c < 0x80) {
            if (c == 0)
                return false;
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

static void encode_subscribe(mqtt_out_t *o, const mqtt_packet_t *p, int v)
{
    size_t n = p->u.sub.count, cur = 0, i = 0;
    mqtt_sub_t *subs = malloc(n * sizeof *subs);
    mqtt_bytes_t *filters = malloc(n * sizeof *filters);
    CHECK(subs && filters);
    while (mqtt_sub_next(p, v, &cur, &subs[i])) {
        CHECK(i < n);
        filters[i] = subs[i].filter;
        i++;
    }
    CHECK(i == n);
    if (p->type == MQTT_SUBSCRIBE)
        mqtt_enc_subscribe(o, v, p->u.sub.packet_id, subs, n, &p->props.raw);
    else
        mqtt_enc_unsubscribe(o, v, p->u.sub.packet_id, filters, n,
                             &p->props.raw);
    free(subs);
    free(filters);
}

static void encode(mqtt_out_t *o, const mqtt_packet_t *p, int v)
{
    const mqtt_bytes_t *props = &p->props.raw;

    switch (p->type) {
    case MQTT_CONNECT:
        mqtt_enc_connect(o, &p->u.connect, props);
        break;
    case MQTT_CONNACK:
        mqtt_enc_connack(o, v, p->u.connack.session_present, p->u.connack.code,
                         props);
        break;
    case MQTT_PUBLISH:
        mqtt_enc_publish(o, v, &p->u.publish, props);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        mqtt_enc_ack(o, v, p->type, p->u.ack.packet_id, p->u.ack.code, props);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        encode_subscribe(o, p, v);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        mqtt_enc_suback(o, v, p->type, p->u.suback.packet_id,
                        p->u.suback.codes.p, p->u.suback.codes.len, props);
        break;
    case MQTT_PINGREQ:
        mqtt_enc_pingreq(o);
        break;
    case MQTT_PINGRESP:
        mqtt_enc_pingresp(o);
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        mqtt_enc_reason(o, v, p->type, p->u.reason.code, props);
        break;
    }
}

/* Encode p into a fresh buffer of exactly the needed size. */
static uint8_t *encode_alloc(const mqtt_packet_t *p, int v, size_t *len)
{
    mqtt_out_t o;
    mqtt_out_init(&o, NULL, 0);
    encode(&o, p, v);
    CHECK(!mqtt_out_failed(&o) && o.len >= 2);
    uint8_t *b = malloc(o.len);
    CHECK(b);
    size_t need = o.len;
    mqtt_out_init(&o, b, need);
    encode(&o, p, v);
    CHECK(o.len == need);
    *len = need;
    return b;
}

static void same_props(const mqtt_props_t *a, const mqtt_props_t *b)
{
    CHECK(same(a->raw, b->raw));
    CHECK(a->present == b->present);
    CHECK(a->n_user == b->n_user);
    CHECK(a->n_subscription_ids == b->n_subscription_ids);
    CHECK(a->subscription_id == b->subscription_id);
}

static void same_packet(const mqtt_packet_t *a, const mqtt_packet_t *b)
{
    CHECK(a->type == b->type);
    same_props(&a->props, &b->props);
    switch (a->type) {
    case MQTT_CONNECT: {
        const mqtt_connect_t *x = &a->u.connect, *y = &b->u.connect;
        CHECK(x->version == y->version && x->clean == y->clean &&
              x->keepalive == y->keepalive && same(x->client_id, y->client_id));
        CHECK(x->will == y->will && x->will_qos == y->will_qos &&
              x->will_retain == y->will_retain);
        same_props(&x->will_props, &y->will_props);
        CHECK(same(x->will_topic, y->will_topic) &&
              same(x->will_payload, y->will_payload));
        CHECK(x->has_username == y->has_username &&
              same(x->username, y->username));
        CHECK(x->has_password == y->has_password &&
              same(x->password, y->password));
        break;
    }
    case MQTT_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present &&
              a->u.connack.code == b->u.connack.code);
        break;
    case MQTT_PUBLISH:
        CHECK(a->flags == b->flags);
        CHECK(a->u.publish.dup == b->u.publish.dup &&
              a->u.publish.qos == b->u.publish.qos &&
              a->u.publish.retain == b->u.publish.retain &&
              a->u.publish.packet_id == b->u.publish.packet_id);
        CHECK(same(a->u.publish.topic, b->u.publish.topic) &&
              same(a->u.publish.payload, b->u.publish.payload));
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        CHECK(a->u.ack.packet_id == b->u.ack.packet_id &&
              a->u.ack.code == b->u.ack.code);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        CHECK(a->u.sub.packet_id == b->u.sub.packet_id &&
              a->u.sub.count == b->u.sub.count &&
              same(a->u.sub.list, b->u.sub.list));
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        CHECK(a->u.suback.packet_id == b->u.suback.packet_id &&
              same(a->u.suback.codes, b->u.suback.codes));
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        CHECK(a->u.reason.code == b->u.reason.code);
        break;
    default:
        break;
    }
}

static void walk(const mqtt_packet_t *p, int v)
{
    const mqtt_props_t *blocks[2] = {&p->props, NULL};
    if (p->type == MQTT_CONNECT)
        blocks[1] = &p->u.connect.will_props;
    for (int i = 0; i < 2 && blocks[i]; i++) {
        size_t cur = 0, n = 0;
        mqtt_bytes_t k, val;
        uint32_t id;
        while (mqtt_props_user_next(blocks[i], &cur, &k, &val))
            n++;
        CHECK(n == blocks[i]->n_user || blocks[i]->n_user == UINT16_MAX);
        cur = n = 0;
        while (mqtt_props_subid_next(blocks[i], &cur, &id)) {
            CHECK(id != 0 && id <= MQTT_MAX_REMAINING);
            n++;
        }
        CHECK(n == blocks[i]->n_subscription_ids);
    }
}

static void roundtrip(const mqtt_packet_t *p, int v)
{
    size_t len1, len2;
    uint8_t *b1 = encode_alloc(p, v, &len1);
    uint32_t total;
    mqtt_type_t type;
    CHECK(mqtt_frame(b1, len1, 0, &total, &type) == SL_OK);
    CHECK(total == len1 && type == p->type);

    mqtt_packet_t q;
    CHECK(mqtt_decode(b1, len1, v, &q) == SL_OK);
    same_packet(p, &q);

    uint8_t *b2 = encode_alloc(&q, v, &len2);
    CHECK(len1 == len2 && memcmp(b1, b2, len1) == 0);

    if (p->type == MQTT_PUBLISH) {
        /* the header alone: exactly the bytes before the payload */
        size_t plen = p->u.publish.payload.len;
        uint8_t *hdr = malloc(len1 - plen);
        mqtt_out_t o;
        CHECK(hdr);
        mqtt_out_init(&o, hdr, len1 - plen);
        mqtt_enc_publish_header(&o, v, &p->u.publish, plen, &p->props.raw);
        CHECK(o.len == len1 - plen && memcmp(hdr, b1, o.len) == 0);
        free(hdr);
    }
    free(b1);
    free(b2);
}

static void one_packet(const uint8_t *data, uint32_t total, int v)
{
    uint8_t *copy = malloc(total);
    CHECK(copy);
    memcpy(copy, data, total);

    mqtt_packet_t p;
    int rc = mqtt_decode(copy, total, v, &p);
    CHECK(rc <= 0);
    if (rc == SL_OK) {
        CHECK(p.size == total);
        walk(&p, v);
        roundtrip(&p, v);
    } else {
        CHECK(mqtt_err_reason(rc) >= 0x80);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int versions[] = {MQTT_V31, MQTT_V311, MQTT_V5};

    CHECK(utf8_reference(data, size) == mqtt_utf8_valid(data, size));

    for (int i = 0; i < 3; i++) {
        size_t off = 0;
        while (off < size) {
            uint32_t total;
            mqtt_type_t type;
            int rc = mqtt_frame(data + off, size - off, 0, &total, &type);
            if (rc != SL_OK)
                break;
            CHECK(total >= 2 && total <= size - off);
            /* the same packet against a limit of exactly its size, and one
             * byte less */
            CHECK(mqtt_frame(data + off, size - off, total, &total, &type) ==
                  SL_OK);
            uint32_t t2;
            CHECK(mqtt_frame(data + off, size - off, total - 1, &t2, &type) ==
                  SL_ETOOLARGE);
            one_packet(data + off, total, versions[i]);
            off += total;
        }
    }
    return 0;
}
