/*
 * auth.h - who may connect, publish and subscribe; webhooks.
 *
 * The broker asks this module three things:
 *   - at CONNECT, auth_connect(): may this client in? The answer comes back
 *     through a callback with an identity (superuser flag, ACL rules sent by
 *     the auth endpoint, a per-client decision cache) that the session keeps;
 *   - at PUBLISH and SUBSCRIBE, auth_check(): may this identity do this? The
 *     answer is immediate when it is known (superuser, rules, acl_file,
 *     cache) and comes back through a callback when an HTTP request was
 *     needed;
 *   - on client and message events, hook_event(): tell the webhook.
 *
 * Authentication is a chain (DESIGN.md §5):
 *   1. password_file (mosquitto_passwd format): a known user with the right
 *      password is allowed, with a wrong or no password denied; a client
 *      whose user name is not in the file passes on (ignore);
 *   2. auth_http_url: a POST (or GET) of {"clientid", "username",
 *      "password", "peerhost", "peerport", "proto_ver", "listener",
 *      "cert_subject", "cert_common_name"} answered per the EMQX 5 HTTP
 *      authenticator contract: 200 with {"result": "allow"|"deny"|"ignore",
 *      "is_superuser": bool, "acl": [...], "expire_at": unix seconds}, or 204
 *      (allow). A 4xx/5xx status means ignore. A timeout, a connection
 *      failure or an unparsable answer applies auth_failure_policy (deny,
 *      allow or ignore), is counted in auth_stats_t and logged at warning
 *      level (never with the password);
 *   3. when every authenticator ignored the client, allow_anonymous decides:
 *      a client that no authenticator knows is treated as anonymous,
 *      whether or not it sent a user name. allow_anonymous "auto" (the
 *      default) is true when neither password_file nor auth_http_url is
 *      configured, false otherwise.
 *
 * Authorization (publish = write, subscribe = read), first decision wins:
 *   1. a superuser may do everything;
 *   2. the "acl" rules of the CONNECT answer (EMQX 5.8 format: permission,
 *      action publish|subscribe|all, topic or topics with ${clientid} and
 *      ${username} placeholders and an "eq " prefix for a literal filter,
 *      optional qos list and retain flag), in order;
 *   3. acl_file (Mosquitto format: the client's `user` section, then the
 *      `pattern` lines with %c and %u; deny lines first in each);
 *   4. acl_http_url: {"action": "publish"|"subscribe", "topic", "qos",
 *      "retain", "clientid", "username", "peerhost"}, answered like the auth
 *      endpoint (no "acl"); failures apply auth_failure_policy;
 *   5. nothing decided: denied when acl_file or acl_http_url is configured,
 *      allowed otherwise.
 * A SUBSCRIBE filter is allowed by a rule only when the rule's topic covers
 * every topic the filter can match ("a/#" allows "a/+/b"; "a/+" does not
 * allow "a/#"), and denied by a deny rule when the two can match a common
 * topic (deny "a/secret" refuses a subscription to "a/#"), so a granted
 * subscription never delivers a denied topic.
 *
 * With acl_http_url configured, decisions of steps 2 to 5 are cached per
 * identity for auth_cache_ttl seconds, at most auth_cache_size of them (the
 * oldest is dropped first); failed requests are not cached. Without it
 * every rule is in memory and nothing is cached; with no rule at all a
 * check costs nothing.
 *
 * Everything runs on the broker's event loop; nothing blocks it (HTTP
 * requests go through a bounded keep-alive connection pool per endpoint).
 * Callbacks run exactly once, from the loop, never inside the call that
 * started them; auth_free() runs every pending callback with a refusal.
 */
#ifndef STARLING_AUTH_H
#define STARLING_AUTH_H

#include "starling/conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct auth auth_t;

typedef enum {
    AUTH_ALLOW = 0,
    AUTH_DENY = 1,
    AUTH_IGNORE = 2, /* no opinion: the next authenticator decides */
} auth_result_t;

/* What the broker knows about a client at CONNECT. Strings are
 * NUL-terminated; the module copies what it keeps. */
typedef struct auth_client {
    const char *clientid;
    const char *username;      /* NULL: no user name */
    const uint8_t *password;   /* binary, password_len bytes */
    size_t password_len;
    bool has_password;
    const char *peer_host;     /* "10.0.0.3" */
    int peer_port;
    int proto_version;         /* 3, 4 or 5 (the CONNECT protocol level) */
    const char *listener;      /* "tcp", "tls", "ws", ... (may be NULL) */
    const char *cert_subject;  /* NULL when no client certificate */
    const char *cert_cn;
} auth_client_t;

/*
 * What authentication established for one connection: superuser flag, the
 * ACL rules of the auth answer and the decision cache. Owned by the session
 * (auth_identity_free); pending auth_check() requests keep it alive on their
 * own, so it may be freed at any time.
 */
typedef struct auth_identity auth_identity_t;

/* Counters, monotonic except hooks_queued. */
typedef struct auth_stats {
    uint64_t connect_allowed;
    uint64_t connect_denied;
    uint64_t acl_allowed;
    uint64_t acl_denied;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t http_requests;  /* auth and ACL requests sent */
    uint64_t http_failures;  /* ...that timed out, failed or got garbage */
    uint64_t http_timeouts;  /* ...of which timeouts */
    uint64_t hooks_sent;     /* webhook events delivered (2xx) */
    uint64_t hooks_retried;  /* webhook POSTs tried again */
    uint64_t hooks_failed;   /* events given up after webhook_retries */
    uint64_t hooks_dropped;  /* events refused: queue full */
    uint64_t hooks_queued;   /* events waiting or in flight now */
} auth_stats_t;

/*
 * Read the auth, ACL and webhook keys of conf (password_file and acl_file
 * are loaded now). conf need not outlive the call. SL_OK, or an error that
 * is logged (unreadable or invalid file, bad URL, TLS setup): SL_EIO,
 * SL_EINVAL, SL_ENOMEM.
 */
int auth_new(auth_t **out, struct event_base *base, const sl_conf_t *conf);

/*
 * Free everything. Pending auth_connect() callbacks run now with AUTH_DENY
 * and a NULL identity, pending auth_check() callbacks with false; queued
 * webhook events are dropped. Must not be called from one of this module's
 * callbacks. NULL is ignored.
 */
void auth_free(auth_t *a);

/* True when any authenticator (password_file, auth_http_url) or authorizer
 * (acl_file, acl_http_url) is configured. */
bool auth_enabled(const auth_t *a);

/*
 * Callback of auth_connect(). r is AUTH_ALLOW (id is a new identity the
 * callee owns: free it with auth_identity_free) or AUTH_DENY (id is NULL;
 * answer CONNACK 5 "not authorized" to MQTT 3, 0x86 "bad user name or
 * password" or 0x87 "not authorized" to MQTT 5).
 */
typedef void (*auth_connect_fn)(void *arg, auth_result_t r,
                                auth_identity_t *id);

/*
 * Authenticate a CONNECT. Always completes asynchronously: cb runs exactly
 * once, from the event loop, after this call returned (on allocation
 * failure too, then with AUTH_DENY). The single exception: when not even
 * that answer can be scheduled (out of memory), cb runs with AUTH_DENY
 * before this call returns.
 */
void auth_connect(auth_t *a, const auth_client_t *c, auth_connect_fn cb,
                  void *arg);

typedef enum {
    AUTHZ_PUBLISH = 0,
    AUTHZ_SUBSCRIBE = 1,
} authz_action_t;

typedef void (*auth_check_fn)(void *arg, bool allowed);

/*
 * May identity id (of client c) publish to topic name / subscribe to topic
 * filter `topic` (tlen bytes, need not be NUL-terminated) with this QoS and
 * retain flag? Returns 1 (allowed) or 0 (denied) when the answer is known
 * now; cb is then not called. Returns -1 when an acl_http_url request was
 * started: cb runs later, exactly once. id may be NULL (no rules, no
 * cache). For a shared subscription pass the filter without "$share/G/".
 */
int auth_check(auth_t *a, auth_identity_t *id, const auth_client_t *c,
               authz_action_t act, const char *topic, size_t tlen, int qos,
               bool retain, auth_check_fn cb, void *arg);

/* Superuser flag of the CONNECT answer. */
bool auth_identity_superuser(const auth_identity_t *id);

/* The "expire_at" of the CONNECT answer (unix seconds; 0 = none): the
 * session should disconnect the client then. An answer whose expire_at has
 * already passed is a refusal. */
int64_t auth_identity_expire_at(const auth_identity_t *id);

/* Release the session's reference. NULL is ignored. */
void auth_identity_free(auth_identity_t *id);

/* The counters (valid until auth_free). */
const auth_stats_t *auth_stats(const auth_t *a);

/*
 * Webhooks: fire-and-forget POSTs of {"event", "clientid", "username",
 * "timestamp" (ms), ...} to webhook_url. event is one of client.connected,
 * client.disconnected, session.subscribed, session.unsubscribed (with
 * "topic" and, when subscribing, "qos") and message.publish (with "topic",
 * "qos", "retain", "payload" and "payload_encoding": "plain" for UTF-8
 * text, else "base64"; only for topics matching webhook_topics). Events
 * not in webhook_events are ignored. Events wait in a queue of at most
 * webhook_queue_max entries (and 64 MiB); a failed POST (no answer or 5xx)
 * is tried again webhook_retries times with a growing delay. Strings are
 * NUL-terminated; unused arguments may be NULL / 0.
 */
void hook_event(auth_t *a, const char *event, const char *clientid,
                const char *username, const char *topic, const void *payload,
                size_t plen, int qos, bool retain);

/* Would hook_event(a, event, ...) send anything? Lets the caller skip
 * building its arguments. */
bool hook_wanted(const auth_t *a, const char *event);

#endif
