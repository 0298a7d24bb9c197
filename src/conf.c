/*
 * conf.c - the node's configuration, driven by one table.
 *
 * Each row of `options` is one key: its name (the sl_conf_t field of the same
 * name), its type and bounds, its default as text, whether SIGHUP may change
 * it, and a one-line help. Everything else reads the table: conf_init sets
 * the defaults by parsing their text, the file, env and flag readers look keys
 * up in it, --help and conf_print_file print it (conf/starling.conf is that
 * output; a unit test keeps the two equal). Adding a key is adding a field to
 * sl_conf_t and a row here.
 *
 * Sources and their error prefixes:
 *   file   "port 1884"            /etc/starling.conf:12: port: ...
 *   env    STARLING_PORT=1884     STARLING_PORT: ...
 *   flag   --port 1884, --port=1884   --port: ...
 */
#include "starling/conf.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/topic.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum {
    T_STRING,   /* char *, heap-owned */
    T_INT,      /* int in [min, max] */
    T_UINT32,   /* uint32_t in [min, max] */
    T_SIZE,     /* uint32_t in [min, max]; may end in k, m or g (x1024) */
    T_BOOL,     /* bool */
    T_ENUM,     /* an enum stored as int; `names` indexed by value */
    T_LOGLEVEL, /* int, SL_LOG_* */
} opt_type_t;

/* Extra validation of a string value; writes the reason into msg. */
typedef int (*check_fn_t)(const char *value, char *msg, size_t len);

typedef struct {
    const char *name;
    opt_type_t type;
    size_t offset;
    long long min, max;
    const char *const *names;
    const char *def; /* default as text; NULL = unset (strings only) */
    bool reloadable;
    check_fn_t check;
    const char *help;
} option_t;

static const char *const queue_drop_names[] = {"drop_new", "drop_oldest",
                                               NULL};
static const char *const shared_names[] = {"round_robin", "random", NULL};
static const char *const method_names[] = {"post", "get", NULL};
static const char *const policy_names[] = {"deny", "allow", "ignore", NULL};
static const char *const anon_names[] = {"auto", "true", "false", NULL};
static const char *const deny_action_names[] = {"drop", "disconnect", NULL};
static const char *const tls_version_names[] = {"tls1.2", "tls1.3", NULL};
static const char *const webhook_event_names[] = {
    "client.connected",     "client.disconnected",  "session.subscribed",
    "session.unsubscribed", "message.publish",      NULL};

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

static int check_store(const char *value, char *msg, size_t len);
static int check_node_id(const char *value, char *msg, size_t len);
static int check_http_url(const char *value, char *msg, size_t len);
static int check_headers(const char *value, char *msg, size_t len);
static int check_events(const char *value, char *msg, size_t len);
static int check_filters(const char *value, char *msg, size_t len);

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
static const option_t options[] = {
    /* listeners */
    STR(bind, "0.0.0.0", FIXED, NULL,
        "Address the MQTT TCP listener binds to."),
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

    /* logging */
    LOGLEVEL(log_level, "info", RELOAD,
        "Least severe level that is logged."),

    /* store and cluster */
    STR(store, "memory", FIXED, check_store,
        "Where sessions, retained and queued messages live: memory (this "
        "node only, nothing persisted), redis://HOST:PORT, or "
        "redis+cluster://HOST:PORT,HOST:PORT,... (Redis, Valkey or Kvrocks)."),
    STR(node_id, NULL, FIXED, check_node_id,
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
    STR(auth_http_url, NULL, FIXED, check_http_url,
        "http:// or https:// URL asked to authenticate each CONNECT (JSON "
        "in and out, EMQX 5 HTTP authenticator contract); unset = none."),
    ENUM(auth_http_method, method_names, "post", FIXED,
        "HTTP method of auth_http_url and acl_http_url requests: post sends "
        "a JSON body, get sends the same fields as a query string."),
    STR(auth_http_headers, NULL, FIXED, check_headers,
        "Extra headers of every auth and ACL request, as 'Name: value; "
        "Name2: value2'; unset = none."),
    INT(auth_http_timeout, 1, 600000, "5000", FIXED,
        "Milliseconds an auth or ACL request may take before "
        "auth_failure_policy applies."),
    STR(acl_http_url, NULL, FIXED, check_http_url,
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
    STR(webhook_url, NULL, FIXED, check_http_url,
        "http:// or https:// URL that receives client and message events "
        "as JSON POSTs; unset = none."),
    STR(webhook_events, "client.connected,client.disconnected,"
        "session.subscribed,session.unsubscribed,message.publish", FIXED,
        check_events,
        "Comma-separated events sent to webhook_url."),
    STR(webhook_topics, "#", FIXED, check_filters,
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

#define NOPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(NOPTIONS <= 64, "sl_conf_t.pinned has one bit per key");

static const char *const bool_true[] = {"true", "yes", "on", "1", NULL};
static const char *const bool_false[] = {"false", "no", "off", "0", NULL};

static int fail(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

static void *field(sl_conf_t *c, const option_t *o)
{
    return (char *)c + o->offset;
}

static const option_t *find_option(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

static int name_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcasecmp(names[i], s) == 0)
            return i;
    return -1;
}

/* --- value parsers --------------------------------------------------------
 * Each writes a reason without the key name into msg ("not a number: 'x'");
 * the caller says which key and where it came from. */

static int check_store(const char *value, char *msg, size_t len)
{
    static const char *const schemes[] = {"redis://", "redis+cluster://"};
    if (strcmp(value, "memory") == 0)
        return SL_OK;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(value, schemes[i], n) == 0 && value[n] != '\0')
            return SL_OK;
    }
    return fail(msg, len,
                "expected memory, redis://HOST:PORT or "
                "redis+cluster://HOST:PORT,..., got '%s'",
                value);
}

static int check_node_id(const char *value, char *msg, size_t len)
{
    size_t n = strlen(value);
    if (n > 64)
        return fail(msg, len, "longer than 64 characters");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return fail(msg, len, "character '%c' not allowed in '%s'", ch,
                        value);
    }
    return SL_OK;
}

static int check_http_url(const char *value, char *msg, size_t len)
{
    static const char *const schemes[] = {"http://", "https://"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncasecmp(value, schemes[i], n) == 0 && value[n] != '\0' &&
            value[n] != '/' && !strpbrk(value, " \t\r\n"))
            return SL_OK;
    }
    return fail(msg, len, "expected http://HOST[:PORT]/PATH or "
                "https://HOST[:PORT]/PATH, got '%s'", value);
}

/* "Name: value; Name2: value2": a name of token characters, then ':'. */
static int check_headers(const char *value, char *msg, size_t len)
{
    const char *p = value;
    while (*p) {
        size_t n = strcspn(p, ";");
        const char *colon = memchr(p, ':', n);
        const char *name = p;
        while (name < p + n && *name == ' ')
            name++;
        if (!colon || colon == name)
            return fail(msg, len, "expected 'Name: value' in '%.*s'", (int)n,
                        p);
        for (const char *c = name; c < colon; c++)
            if (!isalnum((unsigned char)*c) && !strchr("-_!#$%&'*+.^`|~", *c))
                return fail(msg, len, "bad header name '%.*s'",
                            (int)(colon - name), name);
        p += n;
        if (*p == ';')
            p++;
    }
    return SL_OK;
}

/* Walk a comma-separated list, calling ok() on each trimmed item. */
static int check_list(const char *value, char *msg, size_t len,
                      bool (*ok)(const char *item, size_t n), const char *what)
{
    const char *p = value;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *item = p;
        size_t m = n;
        while (m > 0 && *item == ' ')
            item++, m--;
        while (m > 0 && item[m - 1] == ' ')
            m--;
        if (!ok(item, m))
            return fail(msg, len, "not a %s: '%.*s'", what, (int)m, item);
        if (p[n] == '\0')
            return SL_OK;
        p += n + 1;
    }
}

static bool event_ok(const char *item, size_t n)
{
    for (size_t i = 0; webhook_event_names[i]; i++)
        if (strlen(webhook_event_names[i]) == n &&
            strncmp(webhook_event_names[i], item, n) == 0)
            return true;
    return false;
}

static bool filter_ok(const char *item, size_t n)
{
    return n > 0 && topic_filter_check(item, n, 0) == SL_OK;
}

static int check_events(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, event_ok, "webhook event");
}

static int check_filters(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, filter_ok, "topic filter");
}

/* Decimal integer, optionally with a k/m/g suffix (allow_suffix). */
static int parse_number(const char *s, bool allow_suffix, long long *out,
                        char *msg, size_t len)
{
    if (!isdigit((unsigned char)s[0]) &&
        !((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1])))
        return fail(msg, len, "not a number: '%s'", s);
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    long long mult = 1;
    if (allow_suffix && end[0] != '\0' && end[1] == '\0') {
        const char *units = "kmg";
        const char *u = strchr(units, tolower((unsigned char)end[0]));
        if (u) {
            mult = 1LL << (10 * (u - units + 1));
            end++;
        }
    }
    if (*end != '\0')
        return fail(msg, len, "not a number: '%s'", s);
    if (errno == ERANGE || v > LLONG_MAX / mult || v < LLONG_MIN / mult)
        return fail(msg, len, "'%s' is out of range", s);
    *out = v * mult;
    return SL_OK;
}

static int set_number(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    long long v = 0;
    int rc = parse_number(value, o->type == T_SIZE, &v, msg, len);
    if (rc != SL_OK)
        return rc;
    if (v < o->min || v > o->max)
        return fail(msg, len, "'%s' is out of range %lld..%lld", value,
                    o->min, o->max);
    if (o->type == T_INT)
        *(int *)field(c, o) = (int)v;
    else
        *(uint32_t *)field(c, o) = (uint32_t)v;
    return SL_OK;
}

static int set_bool(sl_conf_t *c, const option_t *o, const char *value,
                    char *msg, size_t len)
{
    if (name_index(bool_true, value) >= 0)
        *(bool *)field(c, o) = true;
    else if (name_index(bool_false, value) >= 0)
        *(bool *)field(c, o) = false;
    else
        return fail(msg, len,
                    "expected true/false, yes/no, on/off or 1/0, got '%s'",
                    value);
    return SL_OK;
}

/* "a|b|c" from a NULL-terminated list of names. */
static void join_names(const char *const *names, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? "|" : "",
                              names[i]);
}

static void level_names(const char **names, size_t count)
{
    size_t i = 0;
    for (; i + 1 < count && i <= SL_LOG_NONE; i++)
        names[i] = sl_log_level_name((int)i);
    names[i] = NULL;
}

static int set_enum(sl_conf_t *c, const option_t *o, const char *value,
                    char *msg, size_t len)
{
    const char *levels[SL_LOG_NONE + 2];
    const char *const *names = o->names;
    int v;
    if (o->type == T_LOGLEVEL) {
        level_names(levels, sizeof(levels) / sizeof(levels[0]));
        names = levels;
        v = sl_log_level_parse(value);
    } else {
        v = name_index(names, value);
    }
    if (v < 0) {
        char expected[128];
        join_names(names, expected, sizeof(expected));
        return fail(msg, len, "expected %s, got '%s'", expected, value);
    }
    *(int *)field(c, o) = v;
    return SL_OK;
}

/* An empty value unsets a key without default and is refused otherwise. */
static int set_string(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    char **slot = field(c, o);
    char *copy = NULL;
    if (value[0] == '\0' && o->def != NULL)
        return fail(msg, len, "empty value");
    if (value[0] != '\0') {
        if (o->check) {
            int rc = o->check(value, msg, len);
            if (rc != SL_OK)
                return rc;
        }
        copy = strdup(value);
        if (!copy) {
            snprintf(msg, len, "out of memory");
            return SL_ENOMEM;
        }
    }
    free(*slot);
    *slot = copy;
    return SL_OK;
}

static int set_option(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    switch (o->type) {
    case T_STRING:
        return set_string(c, o, value, msg, len);
    case T_INT:
    case T_UINT32:
    case T_SIZE:
        return set_number(c, o, value, msg, len);
    case T_BOOL:
        return set_bool(c, o, value, msg, len);
    case T_ENUM:
    case T_LOGLEVEL:
        return set_enum(c, o, value, msg, len);
    }
    return fail(msg, len, "bad key type");
}

static size_t type_size(opt_type_t type)
{
    switch (type) {
    case T_STRING:
        return sizeof(char *);
    case T_UINT32:
    case T_SIZE:
        return sizeof(uint32_t);
    case T_BOOL:
        return sizeof(bool);
    case T_INT:
    case T_ENUM:
    case T_LOGLEVEL:
        break;
    }
    return sizeof(int);
}

/* Move one key's value from src to dst (strings change owner). */
static void move_option(sl_conf_t *dst, sl_conf_t *src, const option_t *o)
{
    if (o->type == T_STRING) {
        char **d = field(dst, o), **s = field(src, o);
        free(*d);
        *d = *s;
        *s = NULL;
        return;
    }
    memcpy(field(dst, o), field(src, o), type_size(o->type));
}

static void pin(sl_conf_t *c, const option_t *o)
{
    c->pinned |= UINT64_C(1) << (o - options);
}

/* --- public: set, init, fini ---------------------------------------------- */

int conf_set(sl_conf_t *c, const char *key, const char *value, char *err,
             size_t errlen)
{
    const option_t *o = find_option(key);
    char msg[256];
    if (!o) {
        snprintf(err, errlen, "unknown key '%s'", key);
        return SL_ENOTFOUND;
    }
    int rc = set_option(c, o, value, msg, sizeof(msg));
    if (rc != SL_OK)
        snprintf(err, errlen, "%s: %s", key, msg);
    return rc;
}

void conf_init(sl_conf_t *c)
{
    char msg[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_t *o = &options[i];
        if (o->def && set_option(c, o, o->def, msg, sizeof(msg)) != SL_OK)
            abort(); /* a bad default in the table, or out of memory */
    }
}

void conf_fini(sl_conf_t *c)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (options[i].type == T_STRING) {
            char **slot = field(c, &options[i]);
            free(*slot);
            *slot = NULL;
        }
    }
    free(c->config_file);
    c->config_file = NULL;
}

bool conf_key_reloadable(const char *key)
{
    const option_t *o = find_option(key);
    return o && o->reloadable;
}

/* --- config file ---------------------------------------------------------- */

static char *skip_space(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* One `key value` line; blank lines and '#' comments do nothing. */
static int apply_line(sl_conf_t *c, char *line, const char *path,
                      unsigned lineno, char *err, size_t errlen)
{
    char msg[256];
    char *key = skip_space(line);
    trim_end(key);
    if (*key == '\0' || *key == '#')
        return SL_OK;
    char *value = key + strcspn(key, " \t");
    if (*value != '\0')
        *value++ = '\0';
    value = skip_space(value);
    const option_t *o = find_option(key);
    if (!o) {
        snprintf(err, errlen, "%s:%u: unknown key '%s'", path, lineno, key);
        return SL_ENOTFOUND;
    }
    int rc = set_option(c, o, value, msg, sizeof(msg));
    if (rc != SL_OK)
        snprintf(err, errlen, "%s:%u: %s: %s", path, lineno, key, msg);
    return rc;
}

int conf_load_file(sl_conf_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SL_EIO;
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = SL_OK;
    while (rc == SL_OK && getline(&line, &cap, f) >= 0)
        rc = apply_line(c, line, path, ++lineno, err, errlen);
    if (rc == SL_OK && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = SL_EIO;
    }
    free(line);
    fclose(f);
    return rc;
}

int conf_reload_file(sl_conf_t *c, const char *path, char *err, size_t errlen)
{
    sl_conf_t fresh;
    if (!path) {
        snprintf(err, errlen, "no config file to reload (start with -c)");
        return SL_EINVAL;
    }
    conf_init(&fresh);
    int rc = conf_load_file(&fresh, path, err, errlen);
    if (rc == SL_OK) {
        for (size_t i = 0; i < NOPTIONS; i++) {
            bool pinned = c->pinned & (UINT64_C(1) << i);
            if (options[i].reloadable && !pinned)
                move_option(c, &fresh, &options[i]);
        }
    }
    conf_fini(&fresh);
    return rc;
}

/* --- environment ---------------------------------------------------------- */

#define ENV_PREFIX "STARLING_"

/* One "STARLING_KEY=value" entry; entries without '=' are skipped. */
static int apply_env(sl_conf_t *c, const char *entry, char *err, size_t errlen)
{
    const char *name = entry + strlen(ENV_PREFIX);
    const char *eq = strchr(name, '=');
    if (!eq)
        return SL_OK;
    size_t n = (size_t)(eq - name);
    int var_len = (int)(eq - entry);
    char key[64], msg[256];
    size_t k = 0;
    for (; k < n && k + 1 < sizeof(key); k++)
        key[k] = (char)tolower((unsigned char)name[k]);
    key[k] = '\0';
    const option_t *o = k == n ? find_option(key) : NULL;
    if (!o) {
        snprintf(err, errlen, "%.*s: unknown key '%s'", var_len, entry, key);
        return SL_ENOTFOUND;
    }
    int rc = set_option(c, o, eq + 1, msg, sizeof(msg));
    if (rc != SL_OK) {
        snprintf(err, errlen, "%.*s: %s", var_len, entry, msg);
        return rc;
    }
    pin(c, o);
    return SL_OK;
}

int conf_load_env(sl_conf_t *c, char **envp, char *err, size_t errlen)
{
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        int rc = apply_env(c, *e, err, errlen);
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

/* --- command line --------------------------------------------------------- */

typedef struct {
    const char *config; /* -c FILE */
    bool help, version, check;
} args_t;

/* The value of argv[*i] (after '=' in `--name=value`) or the next argument,
 * advancing *i; NULL if there is none. */
static const char *arg_value(int argc, char **argv, int *i)
{
    const char *eq = strchr(argv[*i], '=');
    if (eq && strncmp(argv[*i], "--", 2) == 0)
        return eq + 1;
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
        return NULL;
    return argv[++*i];
}

/* `--key value` / `--key=value`: checked, and applied to c unless NULL. */
static int key_flag(sl_conf_t *c, int argc, char **argv, int *i, char *err,
                    size_t errlen)
{
    const char *arg = argv[*i];
    size_t n = strcspn(arg + 2, "=");
    char key[64], msg[256];
    const option_t *o = NULL;
    if (n < sizeof(key)) {
        memcpy(key, arg + 2, n);
        key[n] = '\0';
        o = find_option(key);
    }
    if (!o) {
        snprintf(err, errlen, "unknown option '--%.*s'", (int)n, arg + 2);
        return SL_ENOTFOUND;
    }
    const char *value = arg_value(argc, argv, i);
    if (!value) {
        snprintf(err, errlen, "--%s: missing value", key);
        return SL_EINVAL;
    }
    if (!c)
        return SL_OK;
    int rc = set_option(c, o, value, msg, sizeof(msg));
    if (rc != SL_OK) {
        snprintf(err, errlen, "--%s: %s", key, msg);
        return rc;
    }
    pin(c, o);
    return SL_OK;
}

static bool is_config_flag(const char *arg)
{
    return strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0 ||
           strncmp(arg, "--config=", 9) == 0;
}

/*
 * Walk the command line. With c NULL only check it and fill *a; with c set,
 * apply the key flags to c (the second pass, after file and env, so flags
 * win whatever their position).
 */
static int scan_args(sl_conf_t *c, int argc, char **argv, args_t *a,
                     char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = SL_OK;
        if (is_config_flag(arg)) {
            a->config = arg_value(argc, argv, &i);
            if (!a->config) {
                snprintf(err, errlen, "%s: missing file name", arg);
                rc = SL_EINVAL;
            }
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = true;
        } else if (strcmp(arg, "--version") == 0) {
            a->version = true;
        } else if (strcmp(arg, "--check-config") == 0) {
            a->check = true;
        } else if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
            rc = key_flag(c, argc, argv, &i, err, errlen);
        } else {
            snprintf(err, errlen, "unexpected argument '%s'", arg);
            rc = SL_EINVAL;
        }
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

static int set_config_file(sl_conf_t *c, const char *path, char *err,
                           size_t errlen)
{
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    free(c->config_file);
    c->config_file = copy;
    return SL_OK;
}

int conf_from_args(sl_conf_t *c, int argc, char **argv, char **envp,
                   conf_action_t *action, char *err, size_t errlen)
{
    args_t a = {0};
    *action = CONF_RUN;
    int rc = scan_args(NULL, argc, argv, &a, err, errlen);
    if (rc != SL_OK)
        return rc;
    if (a.help) {
        conf_print_help(stdout);
        *action = CONF_HELP;
        return SL_OK;
    }
    if (a.version) {
        printf("starling %s\n", STARLING_VERSION);
        *action = CONF_VERSION;
        return SL_OK;
    }
    if (a.config) {
        rc = set_config_file(c, a.config, err, errlen);
        if (rc == SL_OK)
            rc = conf_load_file(c, a.config, err, errlen);
    }
    if (rc == SL_OK)
        rc = conf_load_env(c, envp, err, errlen);
    if (rc == SL_OK)
        rc = scan_args(c, argc, argv, &a, err, errlen);
    if (rc == SL_OK && a.check)
        *action = CONF_CHECK;
    return rc;
}

/* --- help and the documented config file ---------------------------------- */

/* What values a key takes: "0..65535", "debug|info|...", "string". */
static void type_text(const option_t *o, char *buf, size_t len)
{
    const char *levels[SL_LOG_NONE + 2];
    switch (o->type) {
    case T_STRING:
        snprintf(buf, len, "string");
        break;
    case T_INT:
    case T_UINT32:
        snprintf(buf, len, "%lld..%lld", o->min, o->max);
        break;
    case T_SIZE:
        snprintf(buf, len, "%lld..%lld (bytes, or k/m/g)", o->min, o->max);
        break;
    case T_BOOL:
        snprintf(buf, len, "true|false");
        break;
    case T_ENUM:
        join_names(o->names, buf, len);
        break;
    case T_LOGLEVEL:
        level_names(levels, sizeof(levels) / sizeof(levels[0]));
        join_names(levels, buf, len);
        break;
    }
}

/* Word-wrap text at width columns, each line starting with prefix. */
static void print_wrapped(FILE *out, const char *prefix, const char *text,
                          size_t width)
{
    size_t col = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (col > 0 && col + 1 + n > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0) {
            fputs(prefix, out);
            col = strlen(prefix);
        } else {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, n, out);
        col += n;
        p += n;
        while (*p == ' ')
            p++;
    }
    if (col > 0)
        fputc('\n', out);
}

static const char *const help_head =
    "usage: starling [-c FILE] [--KEY VALUE | --KEY=VALUE]...\n"
    "                [--check-config] [--help] [--version]\n"
    "\n"
    "  -c, --config FILE   read `key value` lines from FILE\n"
    "  --check-config      check the configuration, then exit\n"
    "  -h, --help          print this help, then exit\n"
    "  --version           print the version, then exit\n"
    "\n"
    "Keys. Each is also a `key value` line of the config file and a\n"
    "STARLING_<KEY> environment variable (upper case); precedence:\n"
    "flag > env > file > default. Reloadable keys change on SIGHUP.\n";

void conf_print_help(FILE *out)
{
    char type[128];
    fputs(help_head, out);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_t *o = &options[i];
        type_text(o, type, sizeof(type));
        fprintf(out, "\n  --%s %s\n      default: %s%s\n", o->name, type,
                o->def ? o->def : "unset",
                o->reloadable ? "; reloadable" : "");
        print_wrapped(out, "      ", o->help, 79);
    }
}

static const char *const file_head =
    "# starling.conf - configuration of a Starling MQTT broker node.\n"
    "#\n"
    "# One `key value` per line; the value is the rest of the line, trimmed.\n"
    "# '#' starts a comment only at the start of a line. When a key appears\n"
    "# twice, the last one wins; an unknown key is an error.\n"
    "#\n"
    "# Every key can also be set as a STARLING_<KEY> environment variable\n"
    "# (upper case) or a --key VALUE command-line flag. Precedence:\n"
    "# flag > env > file > default. Booleans: true/false, yes/no, on/off,\n"
    "# 1/0. Reloadable keys change on SIGHUP; the others need a restart.\n"
    "#\n"
    "# Each key below is commented out at its default value.\n";

void conf_print_file(FILE *out)
{
    char type[128];
    fputs(file_head, out);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_t *o = &options[i];
        type_text(o, type, sizeof(type));
        fputc('\n', out);
        print_wrapped(out, "# ", o->help, 78);
        fprintf(out, "# %s; %s\n", type,
                o->reloadable ? "reloadable" : "restart to change");
        if (o->def)
            fprintf(out, "#%s %s\n", o->name, o->def);
        else
            fprintf(out, "#%s\n", o->name);
    }
}
