/*
 * sys.c - the $SYS/broker/... topics, as Mosquitto users know them.
 *
 * Every `sys_interval` seconds the node publishes its figures as retained
 * messages (so a new subscriber sees them at once). In a cluster each node
 * publishes under $SYS/broker/nodes/<id>/...: the figures are the node's. Filters starting with a wildcard never match
 * these topics ($-rule), so `#` subscribers do not see them.
 */
#include "internal.h"
#include "sys.h"
#include "router.h"
#include "session.h"
#include "../net/net.h"

#include "starling/log.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define SYS_VERSION "starling 0.1.0"

static void sys_put(broker_t *b, const char *name, const char *value)
{
    char topic[256];
    const char *node = cluster_node_id(b->cluster);
    if (node)
        snprintf(topic, sizeof(topic), "$SYS/broker/nodes/%s/%s", node, name);
    else
        snprintf(topic, sizeof(topic), "$SYS/broker/%s", name);
    msg_t *m = msg_new(topic, strlen(topic), value, strlen(value), NULL, 0, 0,
                       true, 0);
    if (!m)
        return;
    router_publish(b, NULL, m, NULL, NULL);
    msg_unref(&m);
}

static void sys_u64(broker_t *b, const char *name, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    sys_put(b, name, buf);
}

void sys_publish(broker_t *b)
{
    const broker_stats_t *st = &b->stats;
    sys_put(b, "version", SYS_VERSION);
    sys_u64(b, "uptime", (sl_mono_ms() - b->started_ms) / 1000);
    sys_u64(b, "clients/connected", map_count(b->clients));
    sys_u64(b, "clients/persistent", map_count(b->psessions));
    sys_u64(b, "connections", b->n_conns);
    sys_u64(b, "messages/received", st->msgs_in);
    sys_u64(b, "messages/sent", st->msgs_out);
    sys_u64(b, "bytes/received", st->bytes_in);
    sys_u64(b, "bytes/sent", st->bytes_out);
    sys_u64(b, "messages/dropped", st->dropped_queue_full +
                                       st->dropped_too_large +
                                       st->dropped_expired);
    sys_u64(b, "retained messages/count", rtree_count(b->retained));
    sys_u64(b, "store/errors", st->store_errors);
    sys_u64(b, "store/ready", store_ready(b->store));
    sys_u64(b, "protocol/errors", st->protocol_errors);
    if (b->conf->tls_port || b->conf->wss_port)
        sys_u64(b, "tls/handshake_errors",
                net_stats(b->net)->tls_handshake_errors);
    if (b->conf->proxy_protocol)
        sys_u64(b, "proxy/errors", net_stats(b->net)->proxy_errors);
    if (b->cluster) {
        cluster_stats_t cs;
        cluster_stats(b->cluster, &cs);
        sys_u64(b, "cluster/nodes", cs.nodes);
        sys_u64(b, "cluster/routes", cs.routes);
        sys_u64(b, "cluster/routes/resyncs", cs.resyncs);
        sys_u64(b, "cluster/bus/sent", cs.sent);
        sys_u64(b, "cluster/bus/received", cs.received);
        sys_u64(b, "cluster/bus/up", cs.bus_up);
        sys_u64(b, "cluster/bus/losses", cs.bus_losses);
        sys_u64(b, "cluster/bus/resubscriptions", cs.bus_resubs);
    }
}
