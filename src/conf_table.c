/*
 * conf_table.c - every configuration key, one row each.
 *
 * Each row of `conf_options` is one key: its name (the sl_conf_t field of the
 * same name), its type and bounds, its default as text, whether SIGHUP may
 * change it, and a one-line help. Everything else reads the table (conf.c):
 * conf_init sets the defaults by parsing their text, the file, env and flag
 * readers look keys up in it, --help and conf_print_file print it
 * (conf/starling.conf is that output; a unit test keeps the two equal).
 * Adding a key is adding a field to sl_conf_t and a row here.
 */
#include "conf_int.h"

#include <limits.h>
#include <stdint.h>

static const char *const queue_drop_names[] = {"drop_new", "drop_oldest",
                                               NULL};
static const char *const shared_names[] = {"round_robin", "random", NULL};
static const char *const method_names[] = {"post", "get", NULL};
static const char *const policy_names[] = {"deny", "allow", "ignore", NULL};
static const char *const anon_names[] = {"auto", "true", "false", NULL};
static const char *const deny_action_names[] = {"drop", "disconnect", NULL};
static const char *const tls_version_names[] = {"tls1.2", "tls1.3", NULL};

_Static_assert(QUEUE_DROP_NEW == 0 && QUEUE_DROP_OLDEST == 1,
               "queue_drop_names follows queue_drop_t");
_Static_assert(SHARED_ROUND_ROBIN == 0 && SHARED_RANDOM == 1,
               "shared_names follows shared_strategy_t");
_Static_assert(AUTH_METHOD_POST == 0 && AUTH_METHOD_GET == 1,
               "method_names follows auth_method_t");
_Static_assert(AUTH_POLICY_DENY == 0 && AUTH_POLICY_ALLOW == 1 &&
                   AUTH_POLICY_IGNORE == 2,
               "policy_names follows auth_policy_t");
_Static_assert(ANON_AUTO == 0 && ANON_TRUE == 1 && ANON_FALSE == 2,
               "anon_names follows anon_t");
_Static_assert(ACL_DENY_DROP == 0 && ACL_DENY_DISCONNECT == 1,
               "deny_action_names follows acl_deny_action_t");
_Static_assert(TLS_MIN_1_2 == 0 && TLS_MIN_1_3 == 1,
               "tls_version_names follows tls_min_version_t");
_Static_assert(sizeof(queue_drop_t) == sizeof(int) &&
                   sizeof(shared_strategy_t) == sizeof(int) &&
                   sizeof(auth_method_t) == sizeof(int) &&
                   sizeof(auth_policy_t) == sizeof(int) &&
                   sizeof(anon_t) == sizeof(int) &&
                   sizeof(acl_deny_action_t) == sizeof(int) &&
                   sizeof(tls_min_version_t) == sizeof(int),
               "enum keys are stored as int");

#define RELOAD true
#define FIXED false
#define ROW(key, type, min, max, names, def, rl, check, help)                  \
    {#key, type, offsetof(sl_conf_t, key), min, max, names, def, rl, check,   \
     help}
#define STR(key, def, rl, check, help)                                         \
    ROW(key, T_STRING, 0, 0, NULL, def, rl, check, help)
#define INT(key, min, max, def, rl, help)                                      \
    ROW(key, T_INT, min, max, NULL, def, rl, NULL, help)
#define UINT32(key, min, max, def, rl, help)                                   \
    ROW(key, T_UINT32, min, max, NULL, def, rl, NULL, help)
#define SIZE(key, min, max, def, rl, help)                                     \
    ROW(key, T_SIZE, min, max, NULL, def, rl, NULL, help)
#define BOOL(key, def, rl, help)                                               \
    ROW(key, T_BOOL, 0, 1, NULL, def, rl, NULL, help)
#define ENUM(key, names, def, rl, help)                                        \
    ROW(key, T_ENUM, 0, 0, names, def, rl, NULL, help)
#define LOGLEVEL(key, def, rl, help)                                           \
    ROW(key, T_LOGLEVEL, 0, 0, NULL, def, rl, NULL, help)

/* clang-format off */
const option_t conf_options[] = {
    /* listeners */
    STR(bind, "0.0.0.0", FIXED, NULL,
        "Address every listener binds to: port (MQTT over TCP), tls_port "
        "(MQTT over TLS), ws_port (MQTT over WebSocket), wss_port (MQTT "
        "over secure WebSocket)."),
    INT(port, 0, 65535, "1883", FIXED,
        "TCP port of the MQTT listener; 0 = no plain TCP listener."),
    INT(tls_port, 0, 65535, "0", FIXED,
        "Port of the MQTT over TLS listener (8883 is usual), on the bind "
        "address; 0 = no TLS listener. Needs tls_cert_file and "
        "tls_key_file."),
    STR(tls_cert_file, NULL, FIXED, NULL,
        "PEM file of the TLS listener's certificate chain, the server "
        "certificate first; read at start (unreadable = no start)."),
    STR(tls_key_file, NULL, FIXED, NULL,
        "PEM file of the private key of tls_cert_file (unencrypted)."),
    STR(tls_ca_file, NULL, FIXED, NULL,
        "PEM file of the CA certificates client certificates are verified "
        "against; unset = clients are not asked for a certificate."),
    BOOL(tls_require_client_cert, "false", FIXED,
        "Mutual TLS: refuse a TLS client without a certificate signed by "
        "tls_ca_file (which it needs); false = a certificate a client "
        "offers is verified, none is fine."),
    ENUM(tls_min_version, tls_version_names, "tls1.2", FIXED,
        "Oldest TLS version the TLS listener accepts."),
    STR(tls_ciphers, NULL, FIXED, NULL,
        "OpenSSL cipher list for TLS 1.2 connections (e.g. "
        "ECDHE+AESGCM:ECDHE+CHACHA20); unset = OpenSSL's default. TLS 1.3 "
        "uses OpenSSL's default suites."),
    INT(ws_port, 0, 65535, "0", FIXED,
        "Port of the MQTT over WebSocket listener (8083 is usual), on the "
        "bind address; 0 = no WebSocket listener."),
    INT(wss_port, 0, 65535, "0", FIXED,
        "Port of the MQTT over secure WebSocket listener (8084 is usual), "
        "on the bind address; 0 = none. Uses the TLS listener's "
        "certificate, key and CA keys (tls_cert_file, tls_key_file, "
        "tls_ca_file...)."),
    STR(ws_path, "/mqtt", FIXED, conf_check_ws_path,
        "Request path of the WebSocket upgrade (ws_port, wss_port); any "
        "other path is answered 404. A query string is ignored."),
    STR(ws_allowed_origins, NULL, RELOAD, conf_check_origins,
        "Comma-separated Origin values (e.g. https://app.example.com) a "
        "WebSocket upgrade may carry; another origin is refused (403). A "
        "request without Origin (not a browser) is accepted; unset = any "
        "origin."),
    STR(proxy_protocol, NULL, FIXED, conf_check_listeners,
        "Comma-separated listeners (tcp, tls, ws, wss) behind a load "
        "balancer that sends the PROXY protocol header (v1 or v2): the "
        "address it carries is the client's everywhere (logs, auth "
        "requests, webhooks); a connection on such a listener without a "
        "valid header within connect_timeout is closed. Unset = none."),
    STR(ws_trusted_proxies, NULL, RELOAD, conf_check_addrs,
        "Comma-separated addresses or CIDR ranges of reverse proxies in "
        "front of the WebSocket listeners: for a connection from one of "
        "them, the client address (logs, auth requests) is taken from "
        "X-Forwarded-For (the right-most address that is not itself a "
        "trusted proxy); unset = X-Forwarded-For is ignored."),
    SIZE(ws_max_frame_size, 0, 2147483647, "0", FIXED,
        "Largest WebSocket frame a client may send, in bytes (k, m, g "
        "suffixes); a larger one closes the connection (1009). MQTT "
        "packets may span frames and a frame may carry several. 0 = "
        "max_packet_size + 64k."),

    /* logging */
    LOGLEVEL(log_level, "info", RELOAD,
        "Least severe level that is logged."),

    /* store and cluster */
    STR(store, "memory", FIXED, conf_check_store,
        "Where sessions, retained and queued messages live: memory (this "
        "node only, nothing persisted), redis://HOST:PORT, or "
        "redis+cluster://HOST:PORT,HOST:PORT,... (Redis, Valkey or Kvrocks)."),
    STR(node_id, NULL, FIXED, conf_check_node_id,
        "Name of this node, unique in the cluster: 1 to 64 letters, digits, "
        "'-', '_' or '.'; unset = generated at start."),
    BOOL(cluster_batch, "true", FIXED,
         "Batch the messages one node sends another into one store PUBLISH "
         "per event-loop pass (off: one PUBLISH per message)."),

    /* protocol and limits */
    SIZE(max_packet_size, 16, 268435455, "1048576", FIXED,
        "Largest MQTT packet accepted, in bytes; a k, m or g suffix "
        "multiplies by 1024, 1024^2, 1024^3."),
    INT(max_inflight_messages, 1, 65535, "20", FIXED,
        "Outgoing QoS 1 and 2 messages per client sent but not yet "
        "acknowledged."),
    INT(max_queued_messages, 0, INT_MAX, "1000", RELOAD,
        "Messages queued per session while it is offline or its in-flight "
        "window is full; 0 = unlimited."),
    ENUM(queue_drop, queue_drop_names, "drop_new", RELOAD,
        "When a session's queue is full: drop_new refuses the new message, "
        "drop_oldest discards the oldest queued one."),
    INT(max_connections, 0, INT_MAX, "100000", RELOAD,
        "Client connections this node accepts at once; 0 = unlimited."),
    BOOL(allow_zero_length_clientid, "true", RELOAD,
        "Accept a CONNECT with an empty client id and assign one."),
    BOOL(retain_available, "true", FIXED,
        "Support retained messages (MQTT 5 Retain Available)."),
    INT(max_keepalive, 0, 65535, "65535", RELOAD,
        "Largest keep alive in seconds a client may use; an MQTT 5 client "
        "asking for more is told this value (Server Keep Alive); "
        "0 = no limit."),
    INT(connect_timeout, 1, 3600, "10", RELOAD,
        "Seconds a new TCP connection has to send CONNECT before it is "
        "closed."),
    INT(close_linger, 0, 10000, "300", RELOAD,
        "Milliseconds a connection the broker closes after telling the "
        "client why (DISCONNECT, a refusing CONNACK) keeps discarding the "
        "client's input before the socket is closed, so the client reads "
        "the reason instead of a reset; 0 = close at once."),
    INT(max_topic_length, 1, 65535, "65535", RELOAD,
        "Longest topic name or filter, in bytes."),
    INT(max_topic_levels, 1, 65535, "128", RELOAD,
        "Most '/'-separated levels in a topic name or filter."),
    INT(max_subscriptions, 0, INT_MAX, "0", RELOAD,
        "Subscriptions one client may hold; 0 = unlimited."),
    INT(receive_maximum, 1, 65535, "100", FIXED,
        "MQTT 5 Receive Maximum: incoming QoS 1 and 2 messages a client may "
        "have unacknowledged."),
    INT(max_topic_alias, 0, 65535, "10", FIXED,
        "MQTT 5 Topic Alias Maximum for incoming PUBLISH; 0 = no aliases."),
    INT(sys_interval, 0, 86400, "10", FIXED,
        "Seconds between updates of the $SYS/broker/... topics (retained); "
        "0 = no $SYS topics."),
    INT(max_qos, 0, 2, "2", FIXED,
        "Highest QoS the broker supports (MQTT 5 Maximum QoS)."),
    UINT32(persistent_client_expiration, 0, UINT32_MAX, "0", RELOAD,
        "Seconds a disconnected MQTT 3 persistent session is kept; "
        "0 = forever."),
    UINT32(max_session_expiry, 0, UINT32_MAX, "4294967295", RELOAD,
        "Cap in seconds on the MQTT 5 Session Expiry Interval a client asks "
        "for; 4294967295 = no cap."),
    ENUM(shared_subscription_strategy, shared_names, "round_robin", RELOAD,
        "How a shared subscription ($share/GROUP/FILTER) picks the member "
        "that receives a message."),
    STR(subscribe_deny, NULL, RELOAD, NULL,
        "Comma-separated topic filters clients may not subscribe to; "
        "unset = none."),

    /* authentication and authorization */
    STR(auth_http_url, NULL, FIXED, conf_check_http_url,
        "http:// or https:// URL asked to authenticate each CONNECT (JSON "
        "in and out, EMQX 5 HTTP authenticator contract); unset = none."),
    ENUM(auth_http_method, method_names, "post", FIXED,
        "HTTP method of auth_http_url and acl_http_url requests: post sends "
        "a JSON body, get sends the same fields as a query string."),
    STR(auth_http_headers, NULL, FIXED, conf_check_headers,
        "Extra headers of every auth and ACL request, as 'Name: value; "
        "Name2: value2'; unset = none."),
    INT(auth_http_timeout, 1, 600000, "5000", FIXED,
        "Milliseconds an auth or ACL request may take before "
        "auth_failure_policy applies."),
    STR(acl_http_url, NULL, FIXED, conf_check_http_url,
        "http:// or https:// URL asked to authorize PUBLISH and SUBSCRIBE "
        "when no earlier rule decided; unset = none."),
    ENUM(auth_failure_policy, policy_names, "deny", FIXED,
        "Decision when the auth or ACL endpoint times out, cannot be "
        "reached or answers something unparsable; ignore passes to the "
        "next authenticator or rule."),
    INT(auth_cache_ttl, 0, 86400, "60", FIXED,
        "Seconds a client's publish/subscribe authorization decision is "
        "cached; 0 = no cache."),
    INT(auth_cache_size, 0, 1000000, "1000", FIXED,
        "Cached authorization decisions per client (oldest dropped first); "
        "0 = no cache."),
    ENUM(allow_anonymous, anon_names, "auto", FIXED,
        "Accept a client that no authenticator (password_file, "
        "auth_http_url) allowed or denied; auto = true when neither is "
        "configured, false otherwise."),
    STR(password_file, NULL, FIXED, NULL,
        "Password file made by mosquitto_passwd (user:$7$... or "
        "user:$6$... lines), checked before auth_http_url; unset = none."),
    STR(acl_file, NULL, FIXED, NULL,
        "Mosquitto-style ACL file (user, topic and pattern lines, %c and "
        "%u in patterns), checked before acl_http_url; unset = none."),
    ENUM(acl_deny_action_v3, deny_action_names, "drop", FIXED,
        "What a PUBLISH an MQTT 3 client may not send gets: drop "
        "acknowledges and discards it, disconnect closes the connection."),
    BOOL(auth_tls_verify, "true", FIXED,
        "Verify the certificate and host name of https:// auth, ACL and "
        "webhook endpoints."),
    STR(auth_tls_cafile, NULL, FIXED, NULL,
        "PEM file of CA certificates for https:// auth, ACL and webhook "
        "endpoints; unset = the system's CAs."),

    /* webhooks */
    STR(webhook_url, NULL, FIXED, conf_check_http_url,
        "http:// or https:// URL that receives client and message events "
        "as JSON POSTs; unset = none."),
    STR(webhook_events, "client.connected,client.disconnected,"
        "session.subscribed,session.unsubscribed,message.publish", FIXED,
        conf_check_events,
        "Comma-separated events sent to webhook_url."),
    STR(webhook_topics, "#", FIXED, conf_check_filters,
        "Comma-separated topic filters: a message.publish event is sent "
        "only for topics they match."),
    INT(webhook_queue_max, 1, 10000000, "10000", FIXED,
        "Webhook events waiting to be sent; more are dropped (and "
        "counted)."),
    INT(webhook_retries, 0, 100, "3", FIXED,
        "Times a webhook POST that failed (no answer or a 5xx status) is "
        "tried again before the event is dropped."),
};
/* clang-format on */

#define NOPTIONS (sizeof(conf_options) / sizeof(conf_options[0]))
_Static_assert(NOPTIONS <= 64, "sl_conf_t.pinned has one bit per key");

const size_t conf_n_options = NOPTIONS;
