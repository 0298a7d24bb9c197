/*
 * msg.c - reference-counted immutable messages (see msg.h).
 */
#include "starling/msg.h"
#include "starling/pool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Small messages come from size-class pools (one per power of two from 128
 * to 1024 bytes, whole block); larger ones from malloc. The class follows
 * from the lengths, so nothing extra is stored. */
#define MSG_CLASSES 4
#define MSG_POOL_KEEP 1024
static pool_t msg_pools[MSG_CLASSES] = {
    POOL_INIT(128, MSG_POOL_KEEP), POOL_INIT(256, MSG_POOL_KEEP),
    POOL_INIT(512, MSG_POOL_KEEP), POOL_INIT(1024, MSG_POOL_KEEP)};

static pool_t *msg_pool(size_t total)
{
    for (int i = 0; i < MSG_CLASSES; i++)
        if (total <= msg_pools[i].size)
            return &msg_pools[i];
    return NULL;
}

static size_t msg_total(size_t topic_len, size_t payload_len,
                        size_t props_len)
{
    return sizeof(msg_t) + topic_len + 1 + payload_len + props_len;
}

msg_t *msg_new(const char *topic, size_t topic_len, const void *payload,
               size_t payload_len, const void *props, size_t props_len,
               uint8_t qos, bool retain, uint64_t expiry_at)
{
    if (topic_len > UINT16_MAX || payload_len > UINT32_MAX ||
        props_len > UINT32_MAX)
        return NULL;
    size_t total = msg_total(topic_len, payload_len, props_len);
    pool_t *p = msg_pool(total);
    msg_t *m = p ? pool_get(p) : malloc(total);
    if (!m)
        return NULL;
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->topic_len = (uint16_t)topic_len;
    m->payload_len = (uint32_t)payload_len;
    m->props_len = (uint32_t)props_len;
    m->expiry_at = expiry_at;
    m->topic = (char *)(m + 1);
    memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->payload = (uint8_t *)m->topic + topic_len + 1;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    m->props = m->payload + payload_len;
    if (props_len)
        memcpy(m->props, props, props_len);
    return m;
}

void msg_unref(msg_t **pm)
{
    msg_t *m = *pm;
    *pm = NULL;
    if (!m || --m->refs)
        return;
    pool_t *p = msg_pool(msg_total(m->topic_len, m->payload_len, m->props_len));
    if (p)
        pool_put(p, m);
    else
        free(m);
}

uint64_t sl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
