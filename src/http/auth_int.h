/*
 * auth_int.h - the parts of the auth module behind auth.h, shared by its
 * files and by the unit tests:
 *   passwd.c  password files made by mosquitto_passwd;
 *   acl.c     ACL rules (Mosquitto acl_file, EMQX rule lists) and matching;
 *   reply.c   parsing the auth/ACL endpoints' answers, building requests;
 *   hooks.c   the webhook queue.
 * Everything here but hooks.c is pure: no event loop, no I/O but reading
 * the files at load.
 */
#ifndef STARLING_AUTH_INT_H
#define STARLING_AUTH_INT_H

#include "starling/auth.h"
#include "httpc.h"

#include <cjson/cJSON.h>

/* --- password file -------------------------------------------------------- */

typedef struct passwd passwd_t;

/* Load a mosquitto_passwd file: `user:$7$ITER$SALT$HASH` (PBKDF2-HMAC-
 * SHA512, 64-byte hash) or `user:$6$SALT$HASH` (SHA512(password + salt)),
 * base64 fields; blank lines and '#' comments skipped. Errors name the file
 * and line (never the hash). SL_OK, SL_EIO, SL_EINVAL or SL_ENOMEM. */
int passwd_load(passwd_t **out, const char *path, char *err, size_t errlen);
void passwd_free(passwd_t *p);
size_t passwd_count(const passwd_t *p);

/* AUTH_ALLOW: user known, password right. AUTH_DENY: user known, password
 * wrong or missing. AUTH_IGNORE: no user name, or a user not in the file. */
auth_result_t passwd_check(const passwd_t *p, const char *user,
                           const uint8_t *pw, size_t len, bool has_pw);

/* Check one hash field ("$7$..."): 1 match, 0 mismatch, SL_EINVAL when the
 * field is not a supported hash. */
int passwd_verify(const char *field, const uint8_t *pw, size_t len);

/* --- ACL rules ------------------------------------------------------------ */

enum {
    ACL_NOMATCH = -1,
    ACL_DENY = 0,
    ACL_ALLOW = 1,
};

/* Action bits of a rule. */
#define ACL_PUB 1u
#define ACL_SUB 2u

/* One EMQX-style rule, as sent in the "acl" list of an auth answer. */
typedef struct acl_rule {
    char *topic;       /* filter, may hold ${clientid} / ${username} */
    bool allow;        /* permission */
    bool eq;           /* "eq " prefix: the filter itself, literally */
    bool subst;        /* topic holds placeholders */
    uint8_t actions;   /* ACL_PUB | ACL_SUB */
    uint8_t qos_mask;  /* bit q set: applies to QoS q */
    int8_t retain;     /* -1 any, 0 or 1: applies to that retain flag */
} acl_rule_t;

typedef struct acl_rules {
    acl_rule_t *v;
    size_t n;
} acl_rules_t;

/* Parse a JSON list of rules (EMQX 5.8 "acl": permission, action,
 * topic|topics, qos, retain). SL_OK, SL_EMALFORMED (a bad rule: the whole
 * list is refused) or SL_ENOMEM. */
int acl_rules_parse(acl_rules_t *out, const cJSON *list);
void acl_rules_fini(acl_rules_t *r);

/* First rule that applies decides: ACL_ALLOW, ACL_DENY or ACL_NOMATCH. */
int acl_rules_check(const acl_rules_t *r, const char *clientid,
                    const char *username, authz_action_t act,
                    const char *topic, size_t tlen, int qos, bool retain);

typedef struct acl_file acl_file_t;

/* Load a Mosquitto acl_file: `user NAME`, `topic [read|write|readwrite|
 * deny] TOPIC`, `pattern [read|write|readwrite|deny] TOPIC` (%c, %u), '#'
 * comments. Topic lines before any user line apply to clients without a
 * user name. Errors name the file and line. */
int acl_file_load(acl_file_t **out, const char *path, char *err,
                  size_t errlen);
void acl_file_free(acl_file_t *f);

/* The client's section (deny lines first), then the patterns (deny lines
 * first): ACL_ALLOW, ACL_DENY or ACL_NOMATCH. */
int acl_file_check(const acl_file_t *f, const char *clientid,
                   const char *username, authz_action_t act,
                   const char *topic, size_t tlen);

/* Topic filter relations (valid filters). Does every topic that f matches
 * match p? Can some topic match both? */
bool acl_filter_covers(const char *p, size_t plen, const char *f, size_t flen);
bool acl_filters_intersect(const char *a, size_t alen, const char *b,
                           size_t blen);

/* --- endpoint answers and requests ---------------------------------------- */

typedef struct auth_reply {
    auth_result_t result;
    bool superuser;
    int64_t expire_at;  /* 0 = none */
    acl_rules_t acl;
} auth_reply_t;

/*
 * An auth or ACL endpoint's answer: 204 = allow; another 2xx with a JSON
 * object whose "result" is allow, deny or ignore; 4xx/5xx = ignore. SL_OK
 * with *out set (free with auth_reply_fini), or SL_EMALFORMED (other
 * statuses, no or bad JSON, bad "acl") / SL_ENOMEM. with_acl: read "acl"
 * (auth answers only).
 */
int auth_reply_parse(auth_reply_t *out, int status, const char *body,
                     size_t len, bool with_acl);
void auth_reply_fini(auth_reply_t *r);

/* The JSON object of an auth request (password as a string). */
cJSON *auth_request_connect(const auth_client_t *c);
/* The JSON object of an ACL request. */
cJSON *auth_request_acl(const auth_client_t *c, authz_action_t act,
                        const char *topic, size_t tlen, int qos, bool retain);
/* An object's string, number and bool members as a URL query string
 * ("a=1&b=x%20y"), appended to path: "/auth?k=v" or "/auth?x=1&k=v". */
char *auth_query_string(const char *path, const cJSON *obj);

/* --- webhooks ------------------------------------------------------------- */

typedef struct hooks hooks_t;

/* NULL *out (and SL_OK) when conf has no webhook_url. */
int hooks_new(hooks_t **out, struct event_base *base, httpc_t *http,
              const sl_conf_t *conf, auth_stats_t *stats, char *err,
              size_t errlen);
/* Drop everything queued and in flight. Before httpc_free. */
void hooks_free(hooks_t *h);
bool hooks_wanted(const hooks_t *h, const char *event);
void hooks_event(hooks_t *h, const char *event, const char *clientid,
                 const char *username, const char *topic,
                 const void *payload, size_t plen, int qos, bool retain);

/* The JSON body of one event (pure; for tests too). NULL on no memory. */
char *hooks_event_json(const char *event, const char *node,
                       const char *clientid, const char *username,
                       const char *topic, const void *payload, size_t plen,
                       int qos, bool retain, int64_t ts_ms);

#endif
