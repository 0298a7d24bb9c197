/*
 * hooks.c - webhooks: client and message events POSTed as JSON to
 * webhook_url, fire and forget.
 *
 *   {"event": "message.publish", "clientid": "c1", "username": "u",
 *    "timestamp": 1767225600123, "node": "n1", "topic": "a/b", "qos": 1,
 *    "retain": false, "payload": "hello", "payload_encoding": "plain"}
 *
 * Events wait in a FIFO (webhook_queue_max entries, 64 MiB at most; more
 * are dropped and counted) and at most MAX_INFLIGHT are sent at once, so
 * webhooks never take every pooled connection from the auth requests when
 * both use the same server. A POST without an answer, or answered 408, 429
 * or 5xx, is tried again after 1, 2, 4 ... (at most 30) seconds, up to
 * webhook_retries times; any other status ends the event (2xx: sent).
 * Delivery order is the queue order, except for retried events.
 */
#include "auth_int.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/mqtt.h"
#include "starling/topic.h"

#include <event2/event.h>
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_INFLIGHT 4
#define MAX_QUEUED_BYTES (64u << 20)
#define MAX_RETRY_DELAY_S 30

static const char *const event_names[] = {
    "client.connected",     "client.disconnected", "session.subscribed",
    "session.unsubscribed", "message.publish",     NULL};

typedef struct hook_msg {
    struct hook_msg *next;             /* queue */
    struct hook_msg *bprev, *bnext;    /* busy list (sending, retrying) */
    hooks_t *h;
    char *body;
    size_t len;
    int tries;
    httpc_req_t *req;
    struct event *retry;
} hook_msg_t;

struct hooks {
    struct event_base *base;
    httpc_ep_t *ep;
    const char *path;
    char *node;
    unsigned events; /* bit i: event_names[i] wanted */
    char **topics;
    size_t ntopics;
    hook_msg_t *qhead, *qtail;
    hook_msg_t *busy;
    size_t count, bytes; /* messages alive, and their body bytes */
    size_t max_count;
    int retries;
    int timeout_ms;
    int inflight;
    auth_stats_t *stats;
};

/* --- the event body (pure) ------------------------------------------------ */

static int event_index(const char *event)
{
    for (int i = 0; event && event_names[i]; i++)
        if (strcmp(event_names[i], event) == 0)
            return i;
    return -1;
}

static bool add_payload(cJSON *o, const void *payload, size_t plen)
{
    if (mqtt_utf8_valid(payload, plen)) {
        char *s = malloc(plen + 1);
        if (!s)
            return false;
        memcpy(s, payload, plen);
        s[plen] = '\0';
        bool ok = cJSON_AddStringToObject(o, "payload", s) &&
                  cJSON_AddStringToObject(o, "payload_encoding", "plain");
        free(s);
        return ok;
    }
    if (plen > (size_t)1 << 30)
        return false;
    char *b = malloc(4 * ((plen + 2) / 3) + 1);
    if (!b)
        return false;
    EVP_EncodeBlock((unsigned char *)b, payload, (int)plen);
    bool ok = cJSON_AddStringToObject(o, "payload", b) &&
              cJSON_AddStringToObject(o, "payload_encoding", "base64");
    free(b);
    return ok;
}

static bool add_details(cJSON *o, int ev, const char *topic,
                        const void *payload, size_t plen, int qos, bool retain)
{
    if (ev < 2) /* client.connected, client.disconnected */
        return true;
    if (!cJSON_AddStringToObject(o, "topic", topic ? topic : ""))
        return false;
    if (ev == 3) /* session.unsubscribed */
        return true;
    if (!cJSON_AddNumberToObject(o, "qos", qos))
        return false;
    if (ev == 2) /* session.subscribed */
        return true;
    return cJSON_AddBoolToObject(o, "retain", retain) &&
           add_payload(o, payload ? payload : "", payload ? plen : 0);
}

char *hooks_event_json(const char *event, const char *node,
                       const char *clientid, const char *username,
                       const char *topic, const void *payload, size_t plen,
                       int qos, bool retain, int64_t ts_ms)
{
    int ev = event_index(event);
    cJSON *o = ev >= 0 ? cJSON_CreateObject() : NULL;
    bool ok = o && cJSON_AddStringToObject(o, "event", event) &&
              cJSON_AddStringToObject(o, "clientid", clientid ? clientid : "");
    ok = ok && (username ? cJSON_AddStringToObject(o, "username", username)
                         : cJSON_AddNullToObject(o, "username"));
    ok = ok && cJSON_AddNumberToObject(o, "timestamp", (double)ts_ms);
    ok = ok && (!node || cJSON_AddStringToObject(o, "node", node));
    ok = ok && add_details(o, ev, topic, payload, plen, qos, retain);
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* --- set-up --------------------------------------------------------------- */

static char *trimmed_copy(const char *s, size_t n)
{
    while (n > 0 && *s == ' ')
        s++, n--;
    while (n > 0 && s[n - 1] == ' ')
        n--;
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* Call add(item) for each item of a comma-separated list. */
static int each_item(hooks_t *h, const char *list,
                     int (*add)(hooks_t *h, char *item))
{
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, ",");
        char *item = trimmed_copy(p, n);
        int rc = item ? add(h, item) : SL_ENOMEM;
        if (rc != SL_OK)
            return rc;
        p += n + (p[n] == ',');
    }
    return SL_OK;
}

static int add_event(hooks_t *h, char *item)
{
    int i = event_index(item);
    free(item);
    if (i < 0)
        return SL_EINVAL;
    h->events |= 1u << i;
    return SL_OK;
}

static int add_topic(hooks_t *h, char *item)
{
    char **t = realloc(h->topics, (h->ntopics + 1) * sizeof(char *));
    if (!t || topic_filter_check(item, strlen(item), 0) != SL_OK) {
        free(item);
        if (t)
            h->topics = t;
        return t ? SL_EINVAL : SL_ENOMEM;
    }
    h->topics = t;
    h->topics[h->ntopics++] = item;
    return SL_OK;
}

int hooks_new(hooks_t **out, struct event_base *base, httpc_t *http,
              const sl_conf_t *conf, auth_stats_t *stats, char *err,
              size_t errlen)
{
    *out = NULL;
    if (!conf->webhook_url)
        return SL_OK;
    hooks_t *h = calloc(1, sizeof(*h));
    if (!h)
        return SL_ENOMEM;
    h->base = base;
    h->stats = stats;
    h->max_count = (size_t)conf->webhook_queue_max;
    h->retries = conf->webhook_retries;
    h->timeout_ms = conf->auth_http_timeout;
    int rc = SL_EINVAL;
    h->ep = httpc_endpoint(http, conf->webhook_url, &h->path, err, errlen);
    if (h->ep && (rc = each_item(h, conf->webhook_events, add_event)) != SL_OK)
        snprintf(err, errlen, "webhook_events: bad list");
    if (rc == SL_OK && (rc = each_item(h, conf->webhook_topics, add_topic)))
        snprintf(err, errlen, "webhook_topics: bad list");
    if (rc == SL_OK && conf->node_id && !(h->node = strdup(conf->node_id)))
        rc = SL_ENOMEM;
    if (rc != SL_OK) {
        hooks_free(h);
        return rc;
    }
    log_info("auth: webhook_url %s", conf->webhook_url);
    *out = h;
    return SL_OK;
}

/* --- the queue ------------------------------------------------------------ */

static void msg_free(hook_msg_t *m)
{
    hooks_t *h = m->h;
    if (m->req)
        httpc_cancel(m->req);
    if (m->retry)
        event_free(m->retry);
    h->count--;
    h->bytes -= m->len;
    h->stats->hooks_queued = h->count;
    free(m->body);
    free(m);
}

static void busy_add(hooks_t *h, hook_msg_t *m)
{
    m->bprev = NULL;
    m->bnext = h->busy;
    if (h->busy)
        h->busy->bprev = m;
    h->busy = m;
}

static void busy_remove(hooks_t *h, hook_msg_t *m)
{
    if (m->bprev)
        m->bprev->bnext = m->bnext;
    else
        h->busy = m->bnext;
    if (m->bnext)
        m->bnext->bprev = m->bprev;
    m->bprev = m->bnext = NULL;
}

static void queue_push(hooks_t *h, hook_msg_t *m, bool front)
{
    m->next = NULL;
    if (!h->qhead) {
        h->qhead = h->qtail = m;
    } else if (front) {
        m->next = h->qhead;
        h->qhead = m;
    } else {
        h->qtail->next = m;
        h->qtail = m;
    }
}

static hook_msg_t *queue_pop(hooks_t *h)
{
    hook_msg_t *m = h->qhead;
    if (m) {
        h->qhead = m->next;
        if (!h->qhead)
            h->qtail = NULL;
        m->next = NULL;
    }
    return m;
}

void hooks_free(hooks_t *h)
{
    if (!h)
        return;
    hook_msg_t *m;
    while ((m = queue_pop(h)))
        msg_free(m);
    while ((m = h->busy)) {
        busy_remove(h, m);
        msg_free(m);
    }
    for (size_t i = 0; i < h->ntopics; i++)
        free(h->topics[i]);
    free(h->topics);
    free(h->node);
    free(h);
}

static void pump(hooks_t *h);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    hook_msg_t *m = arg;
    hooks_t *h = m->h;
    busy_remove(h, m);
    queue_push(h, m, true);
    pump(h);
}

/* Try again later, or give up. */
static void retry_or_drop(hook_msg_t *m, const char *why)
{
    hooks_t *h = m->h;
    if (m->tries > h->retries) {
        h->stats->hooks_failed++;
        log_warning("auth: webhook event dropped after %d tries: %s",
                    m->tries, why);
        busy_remove(h, m);
        msg_free(m);
        return;
    }
    int shift = m->tries - 1 < 5 ? m->tries - 1 : 5;
    int delay = 1 << shift;
    struct timeval tv = {.tv_sec = delay < MAX_RETRY_DELAY_S
                                       ? delay
                                       : MAX_RETRY_DELAY_S};
    if (!m->retry)
        m->retry = evtimer_new(h->base, retry_cb, m);
    if (!m->retry || evtimer_add(m->retry, &tv) != 0) {
        busy_remove(h, m);
        msg_free(m);
        return;
    }
    h->stats->hooks_retried++;
}

static bool retryable(const httpc_resp_t *r)
{
    return r->err != SL_OK || r->status == 408 || r->status == 429 ||
           r->status >= 500;
}

static void sent_cb(void *arg, const httpc_resp_t *r)
{
    hook_msg_t *m = arg;
    hooks_t *h = m->h;
    m->req = NULL;
    h->inflight--;
    char why[64];
    if (r->err == SL_OK && r->status >= 200 && r->status <= 299) {
        h->stats->hooks_sent++;
        busy_remove(h, m);
        msg_free(m);
    } else if (retryable(r)) {
        snprintf(why, sizeof(why), "%s",
                 r->err == SL_ETIMEOUT ? "timeout"
                 : r->err != SL_OK     ? "no connection or no answer"
                                       : "server error");
        retry_or_drop(m, why);
    } else {
        h->stats->hooks_failed++;
        log_warning("auth: webhook_url refused an event (status %d)",
                    r->status);
        busy_remove(h, m);
        msg_free(m);
    }
    pump(h);
}

static void pump(hooks_t *h)
{
    while (h->inflight < MAX_INFLIGHT && h->qhead) {
        hook_msg_t *m = queue_pop(h);
        busy_add(h, m);
        m->tries++;
        m->req = httpc_request(h->ep, HTTPC_POST, h->path, NULL,
                               "application/json", m->body, m->len,
                               h->timeout_ms, sent_cb, m);
        if (m->req)
            h->inflight++;
        else
            retry_or_drop(m, "out of memory");
    }
}

bool hooks_wanted(const hooks_t *h, const char *event)
{
    int i = event_index(event);
    return i >= 0 && (h->events & (1u << i));
}

static bool topic_wanted(const hooks_t *h, const char *topic)
{
    if (!topic)
        return false;
    for (size_t i = 0; i < h->ntopics; i++)
        if (topic_matches(h->topics[i], strlen(h->topics[i]), topic,
                          strlen(topic)))
            return true;
    return false;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void enqueue(hooks_t *h, char *body)
{
    size_t len = strlen(body);
    hook_msg_t *m = NULL;
    if (h->count < h->max_count && h->bytes + len <= MAX_QUEUED_BYTES)
        m = calloc(1, sizeof(*m));
    if (!m) {
        if (h->stats->hooks_dropped++ % 1000 == 0)
            log_warning("auth: webhook queue full (%zu events): events "
                        "dropped",
                        h->count);
        free(body);
        return;
    }
    m->h = h;
    m->body = body;
    m->len = len;
    h->count++;
    h->bytes += len;
    h->stats->hooks_queued = h->count;
    queue_push(h, m, false);
    pump(h);
}

void hooks_event(hooks_t *h, const char *event, const char *clientid,
                 const char *username, const char *topic,
                 const void *payload, size_t plen, int qos, bool retain)
{
    if (!hooks_wanted(h, event))
        return;
    if (strcmp(event, "message.publish") == 0 && !topic_wanted(h, topic))
        return;
    char *body = hooks_event_json(event, h->node, clientid, username, topic,
                                  payload, plen, qos, retain, wall_ms());
    if (!body) {
        h->stats->hooks_dropped++;
        return;
    }
    enqueue(h, body);
}
