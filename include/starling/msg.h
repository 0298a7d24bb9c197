/*
 * msg.h - an application message: immutable and reference counted.
 *
 * One allocation holds the struct, the topic (NUL-terminated), the payload
 * and the forwardable MQTT 5 properties. A message published to 10,000
 * subscribers exists once; every queue and write buffer holds a reference.
 *
 * `props` holds the PUBLISH properties that travel unchanged from publisher
 * to subscribers (payload format, content type, response topic, correlation
 * data, user properties), already encoded. Message expiry, topic alias and
 * subscription identifiers are per delivery and encoded when sending.
 */
#ifndef STARLING_MSG_H
#define STARLING_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct msg {
    uint32_t refs;
    uint8_t qos;               /* QoS as published */
    bool retain;               /* RETAIN flag as published */
    uint16_t topic_len;
    uint32_t payload_len;
    uint32_t props_len;
    uint64_t expiry_at;        /* ms since the epoch; 0 = never expires */
    char *topic;
    uint8_t *payload;
    uint8_t *props;
} msg_t;

/* A new message with one reference. NULL when out of memory. */
msg_t *msg_new(const char *topic, size_t topic_len, const void *payload,
               size_t payload_len, const void *props, size_t props_len,
               uint8_t qos, bool retain, uint64_t expiry_at);

static inline msg_t *msg_ref(msg_t *m)
{
    m->refs++;
    return m;
}

/* Drop a reference and NULL the caller's pointer; frees at zero. */
void msg_unref(msg_t **m);

/* Wall-clock milliseconds (CLOCK_REALTIME) and monotonic milliseconds. */
uint64_t sl_now_ms(void);
uint64_t sl_mono_ms(void);

#endif
