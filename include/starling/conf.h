/*
 * conf.h - the node's configuration.
 *
 * One table in conf.c drives everything: defaults, the config file
 * (`key value` lines, '#' comments), STARLING_<KEY> environment variables,
 * `--key value` command-line flags, validation (types and bounds), `--help`
 * and the documented conf/starling.conf. Precedence: flag > env > file >
 * default. Unknown keys and bad values are errors that name their source
 * (file and line, env variable, or flag).
 *
 * Key names are spelled the same in the file, env (upper-cased, prefixed
 * STARLING_), flags, metrics and docs.
 *
 * Value syntax: booleans true/false, yes/no, on/off, 1/0; integers in
 * decimal; sizes (max_packet_size) may end in k, m or g (x1024); enums by
 * name. A string key with no default ("node_id", "subscribe_deny") is unset
 * by an empty value.
 *
 * Typical use in main():
 *     sl_conf_t c;
 *     conf_init(&c);
 *     rc = conf_from_args(&c, argc, argv, environ, &action, err, sizeof err);
 *     ...
 *     on SIGHUP: conf_reload_file(&c, c.config_file, err, sizeof err);
 *     conf_fini(&c);
 */
#ifndef STARLING_CONF_H
#define STARLING_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef STARLING_VERSION
#define STARLING_VERSION "0.1.0"
#endif

typedef enum {
    QUEUE_DROP_NEW = 0,   /* a full queue refuses the newest message */
    QUEUE_DROP_OLDEST = 1 /* a full queue drops its oldest message */
} queue_drop_t;

typedef enum {
    SHARED_ROUND_ROBIN = 0,
    SHARED_RANDOM = 1,
} shared_strategy_t;

typedef enum {
    AUTH_METHOD_POST = 0, /* JSON body */
    AUTH_METHOD_GET = 1,  /* the same fields as a query string */
} auth_method_t;

typedef enum {
    AUTH_POLICY_DENY = 0,   /* an unreachable endpoint refuses */
    AUTH_POLICY_ALLOW = 1,  /* ... accepts */
    AUTH_POLICY_IGNORE = 2, /* ... has no opinion (next in the chain) */
} auth_policy_t;

typedef enum {
    ANON_AUTO = 0,  /* true when no authenticator is configured, else false */
    ANON_TRUE = 1,
    ANON_FALSE = 2,
} anon_t;

typedef enum {
    ACL_DENY_DROP = 0,       /* acknowledge the PUBLISH, drop the message */
    ACL_DENY_DISCONNECT = 1, /* close the connection */
} acl_deny_action_t;

typedef enum {
    TLS_MIN_1_2 = 0, /* TLS 1.2 and 1.3 */
    TLS_MIN_1_3 = 1, /* TLS 1.3 only */
} tls_min_version_t;

typedef struct sl_conf {
    /* listeners */
    char *bind;                      /* "0.0.0.0" */
    int port;                        /* 1883; 0 = no plain TCP listener */
    int tls_port;                    /* 0 = no TLS listener (8883 usual) */
    char *tls_cert_file;             /* PEM chain, server certificate first */
    char *tls_key_file;              /* PEM private key */
    char *tls_ca_file;               /* NULL = no client certificates */
    bool tls_require_client_cert;    /* false (needs tls_ca_file) */
    tls_min_version_t tls_min_version; /* tls1.2 */
    char *tls_ciphers;               /* TLS <= 1.2 list; NULL = OpenSSL's */
    int ws_port;                     /* 0 = no WebSocket listener (8083) */
    int wss_port;                    /* 0 = no secure WebSocket (8084) */
    char *ws_path;                   /* "/mqtt": the upgrade's request path */
    char *ws_allowed_origins;        /* comma list; NULL = any Origin */
    char *proxy_protocol;            /* comma list of listeners expecting
                                      * a PROXY header; NULL = none */
    char *ws_trusted_proxies;        /* comma list of addresses/CIDRs whose
                                        X-Forwarded-For is used; NULL = none */
    uint32_t ws_max_frame_size;      /* 0 = max_packet_size + 64 KiB */

    /* logging */
    int log_level;                   /* SL_LOG_* (log.h); "info" */

    /* store and cluster */
    char *store;                     /* "memory" */
    char *node_id;                   /* NULL = generated */
    bool cluster_batch;              /* true */

    /* protocol and limits */
    uint32_t max_packet_size;        /* 1048576 */
    int max_inflight_messages;       /* 20 (outbound QoS 1/2 window) */
    int max_queued_messages;         /* 1000 per session; 0 = unlimited */
    queue_drop_t queue_drop;         /* drop_new */
    int max_connections;             /* 100000; 0 = unlimited */
    bool allow_zero_length_clientid; /* true */
    bool retain_available;           /* true */
    int max_keepalive;               /* 65535 */
    int connect_timeout;             /* 10 s between TCP accept and CONNECT */
    int close_linger;                /* ms input is discarded after a close */
    int max_topic_length;            /* 65535 */
    int max_topic_levels;            /* 128 */
    int max_subscriptions;           /* 0 per client; 0 = unlimited */
    int receive_maximum;             /* 100: v5 server receive maximum */
    int max_topic_alias;             /* 10: v5 topic alias maximum (inbound) */
    int max_qos;                     /* 2 */
    int sys_interval;                /* 10 s; 0 = no $SYS topics */
    uint32_t persistent_client_expiration; /* s; 0 = never (v3 sessions) */
    uint32_t max_session_expiry;     /* s cap for v5; 0xFFFFFFFF = none */
    shared_strategy_t shared_subscription_strategy; /* round_robin */
    char *subscribe_deny;            /* comma-separated filters refused */

    /* authentication and authorization (auth.h) */
    char *auth_http_url;             /* NULL = no HTTP authenticator */
    auth_method_t auth_http_method;  /* post */
    char *auth_http_headers;         /* "K: V; K2: V2" or NULL */
    int auth_http_timeout;           /* 5000 ms */
    char *acl_http_url;              /* NULL = no HTTP authorizer */
    auth_policy_t auth_failure_policy; /* deny */
    int auth_cache_ttl;              /* 60 s; 0 = no cache */
    int auth_cache_size;             /* 1000 decisions per client */
    anon_t allow_anonymous;          /* auto */
    char *password_file;             /* mosquitto_passwd format, or NULL */
    char *acl_file;                  /* Mosquitto acl_file format, or NULL */
    acl_deny_action_t acl_deny_action_v3; /* drop */
    bool auth_tls_verify;            /* true */
    char *auth_tls_cafile;           /* NULL = system CAs */

    /* webhooks (auth.h: hook_event) */
    char *webhook_url;               /* NULL = no webhooks */
    char *webhook_events;            /* comma list of event names */
    char *webhook_topics;            /* comma list of filters ("#") */
    int webhook_queue_max;           /* 10000 events waiting */
    int webhook_retries;             /* 3 */

    /* not keys */
    char *config_file;               /* the -c FILE path, NULL if none */
    uint64_t pinned;                 /* keys set by env or flag (bit = table
                                        row): a reload leaves them alone */
} sl_conf_t;

typedef enum {
    CONF_RUN = 0,          /* start the broker */
    CONF_HELP,             /* --help printed: exit 0 */
    CONF_VERSION,          /* --version printed: exit 0 */
    CONF_CHECK,            /* --check-config: config valid, exit 0 */
} conf_action_t;

/* Fill with defaults. Every other function expects a conf_init'ed struct. */
void conf_init(sl_conf_t *c);
/* Free owned strings (keys and config_file). */
void conf_fini(sl_conf_t *c);

/* Set one key from its text form. SL_OK, or SL_EINVAL / SL_ENOTFOUND with a
 * message in err ("max_packet_size: not a number: 'abc'"). A string value is
 * copied; the previous one is freed. */
int conf_set(sl_conf_t *c, const char *key, const char *value, char *err,
             size_t errlen);

/* Apply a config file. Errors name the file and line. */
int conf_load_file(sl_conf_t *c, const char *path, char *err, size_t errlen);

/* Apply STARLING_* variables from envp (NULL-terminated "K=V" strings; NULL
 * = none). An unknown STARLING_ variable is an error. The keys set are pinned
 * (a reload leaves them alone). */
int conf_load_env(sl_conf_t *c, char **envp, char *err, size_t errlen);

/*
 * The whole command line: `starling [-c FILE] [--key value ...] [--help]
 * [--version] [--check-config]`, applying file, env and flags in precedence
 * order. On SL_OK, *action says what main() should do. `--key=value` works as
 * well as `--key value`. --help and --version print to stdout and load
 * nothing. The -c path is stored in c->config_file; env and flag keys are
 * pinned. On error c may be partly set: conf_fini it.
 */
int conf_from_args(sl_conf_t *c, int argc, char **argv, char **envp,
                   conf_action_t *action, char *err, size_t errlen);

/* True if the key may change while running (applied by conf_reload_file on
 * SIGHUP); false for other keys and unknown names. */
bool conf_key_reloadable(const char *key);

/*
 * SIGHUP: read the file again (fully validated; on error c is unchanged) and
 * apply its reloadable keys; a reloadable key absent from the file returns to
 * its default. Keys pinned by env or flags keep their values, so precedence
 * holds after a reload. Other keys are validated but ignored. A NULL path
 * (no -c at start) is an error.
 */
int conf_reload_file(sl_conf_t *c, const char *path, char *err, size_t errlen);

/* Print every key with its default and help (for --help). */
void conf_print_help(FILE *out);
/* Print a commented config file with every key at its default. */
void conf_print_file(FILE *out);

#endif
