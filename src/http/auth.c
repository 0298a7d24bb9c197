/*
 * auth.c - the authentication chain, the authorization order and the
 * per-client decision cache (the contract is in auth.h).
 *
 * Every asynchronous operation is a job on the auth_t's list: a CONNECT
 * being authenticated (started from an event of its own so its callback
 * never runs inside auth_connect) or an ACL request to acl_http_url. A job
 * ends exactly once, through connect_finish() or check_finish(), which
 * unlink it before running the caller's callback; auth_free() ends the
 * jobs left with a refusal.
 *
 * An identity is reference counted: the session holds one reference and
 * each pending ACL job another, so a session may free its identity while
 * a request for it is in flight (the answer is then cached in an identity
 * nobody will read, and dropped with it).
 */
#include "auth_int.h"

#include "starling/err.h"
#include "starling/log.h"
#include "starling/map.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_KEY_HEAD 3 /* action, qos, retain */

typedef struct cache_entry {
    struct cache_entry *prev, *next; /* insertion order, oldest first */
    char *key;
    size_t klen;
    bool allowed;
    uint64_t expires_ms;
} cache_entry_t;

struct auth_identity {
    int refs;
    bool superuser;
    int64_t expire_at;
    acl_rules_t rules;
    map_t *cache; /* key -> cache_entry_t, created on first use */
    cache_entry_t *oldest, *newest;
};

typedef enum { JOB_CONNECT, JOB_CHECK } job_kind_t;

typedef struct job {
    struct job *prev, *next;
    auth_t *a;
    job_kind_t kind;
    httpc_req_t *req;
    /* connect */
    struct event *start;
    auth_client_t client; /* strings and password owned by the job */
    bool oom;             /* client could not be copied: refuse */
    auth_connect_fn connect_cb;
    /* check */
    auth_identity_t *id;
    char *key; /* cache key */
    size_t klen;
    char *clientid;
    auth_check_fn check_cb;
    void *arg;
} job_t;

struct auth {
    struct event_base *base;
    passwd_t *pw;
    acl_file_t *aclf;
    httpc_t *http;
    httpc_ep_t *auth_ep, *acl_ep;
    const char *auth_path, *acl_path;
    httpc_headers_t headers;
    hooks_t *hooks;
    auth_method_t method;
    auth_policy_t policy;
    int timeout_ms;
    int cache_ttl, cache_size;
    bool anonymous;
    job_t *jobs;
    auth_stats_t stats;
};

static const char *const policy_names[] = {"deny", "allow", "ignore"};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *or_none(const char *s)
{
    return s ? s : "";
}

/* --- identities and their cache ------------------------------------------- */

static auth_identity_t *identity_new(void)
{
    auth_identity_t *id = calloc(1, sizeof(*id));
    if (id)
        id->refs = 1;
    return id;
}

static void cache_unlink(auth_identity_t *id, cache_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        id->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        id->newest = e->prev;
    map_del(id->cache, e->key, e->klen);
    free(e->key);
    free(e);
}

void auth_identity_free(auth_identity_t *id)
{
    if (!id || --id->refs > 0)
        return;
    while (id->oldest)
        cache_unlink(id, id->oldest);
    if (id->cache)
        map_free(id->cache, NULL);
    acl_rules_fini(&id->rules);
    free(id);
}

bool auth_identity_superuser(const auth_identity_t *id)
{
    return id && id->superuser;
}

int64_t auth_identity_expire_at(const auth_identity_t *id)
{
    return id ? id->expire_at : 0;
}

/* 1 or 0 for a live entry, -1 for none. */
static int cache_get(auth_identity_t *id, const char *key, size_t klen)
{
    if (!id || !id->cache)
        return -1;
    cache_entry_t *e = map_get(id->cache, key, klen);
    if (!e)
        return -1;
    if (now_ms() >= e->expires_ms) {
        cache_unlink(id, e);
        return -1;
    }
    return e->allowed;
}

static void cache_put(const auth_t *a, auth_identity_t *id, const char *key,
                      size_t klen, bool allowed)
{
    if (!id || a->cache_ttl == 0 || a->cache_size == 0)
        return;
    if (!id->cache && !(id->cache = map_new()))
        return;
    cache_entry_t *old = map_get(id->cache, key, klen);
    if (old)
        cache_unlink(id, old);
    while (map_count(id->cache) >= (size_t)a->cache_size && id->oldest)
        cache_unlink(id, id->oldest);
    cache_entry_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = malloc(klen))) {
        free(e);
        return;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->allowed = allowed;
    e->expires_ms = now_ms() + (uint64_t)a->cache_ttl * 1000;
    if (map_put(id->cache, key, klen, e, NULL) != SL_OK) {
        free(e->key);
        free(e);
        return;
    }
    e->prev = id->newest;
    if (id->newest)
        id->newest->next = e;
    else
        id->oldest = e;
    id->newest = e;
}

/* --- jobs ----------------------------------------------------------------- */

static void job_link(auth_t *a, job_t *j)
{
    j->a = a;
    j->next = a->jobs;
    if (a->jobs)
        a->jobs->prev = j;
    a->jobs = j;
}

static void job_unlink(job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        j->a->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

static void client_fini(auth_client_t *c)
{
    free((char *)c->clientid);
    free((char *)c->username);
    free((char *)c->peer_host);
    free((char *)c->listener);
    free((char *)c->cert_subject);
    free((char *)c->cert_cn);
    if (c->password)
        memset((uint8_t *)c->password, 0, c->password_len);
    free((uint8_t *)c->password);
}

static void job_free(job_t *j)
{
    if (j->start)
        event_free(j->start);
    client_fini(&j->client);
    auth_identity_free(j->id);
    free(j->key);
    free(j->clientid);
    free(j);
}

static bool dup_str(const char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

static int client_copy(auth_client_t *d, const auth_client_t *s)
{
    *d = (auth_client_t){.password_len = s->password_len,
                         .has_password = s->has_password,
                         .peer_port = s->peer_port,
                         .proto_version = s->proto_version};
    bool ok = dup_str(&d->clientid, s->clientid) &&
              dup_str(&d->username, s->username) &&
              dup_str(&d->peer_host, s->peer_host) &&
              dup_str(&d->listener, s->listener) &&
              dup_str(&d->cert_subject, s->cert_subject) &&
              dup_str(&d->cert_cn, s->cert_cn);
    if (ok && s->has_password) {
        uint8_t *pw = malloc(s->password_len ? s->password_len : 1);
        if (pw && s->password_len)
            memcpy(pw, s->password, s->password_len);
        d->password = pw;
        ok = pw != NULL;
    }
    return ok ? SL_OK : SL_ENOMEM;
}

/* Send the JSON object o to ep (POST body or GET query string). The object
 * may hold a password: every copy is wiped. */
static httpc_req_t *send_json(auth_t *a, httpc_ep_t *ep, const char *path,
                              cJSON *o, httpc_done_fn done, void *arg)
{
    httpc_req_t *r = NULL;
    char *text = a->method == AUTH_METHOD_GET ? auth_query_string(path, o)
                                              : cJSON_PrintUnformatted(o);
    cJSON *pw = o ? cJSON_GetObjectItemCaseSensitive(o, "password") : NULL;
    if (cJSON_IsString(pw))
        memset(pw->valuestring, 0, strlen(pw->valuestring));
    cJSON_Delete(o);
    if (!text)
        return NULL;
    if (a->method == AUTH_METHOD_GET)
        r = httpc_request(ep, HTTPC_GET, text, &a->headers, NULL, NULL, 0,
                          a->timeout_ms, done, arg);
    else
        r = httpc_request(ep, HTTPC_POST, path, &a->headers,
                          "application/json", text, strlen(text),
                          a->timeout_ms, done, arg);
    memset(text, 0, strlen(text));
    free(text);
    if (r)
        a->stats.http_requests++;
    return r;
}

/* Why a request failed, for the log. */
static const char *failure_text(const httpc_resp_t *r, char *buf, size_t len)
{
    if (r->err == SL_ETIMEOUT)
        return "timed out";
    if (r->err != SL_OK)
        return "failed (no connection or no answer)";
    snprintf(buf, len, "got an unusable answer (status %d)", r->status);
    return buf;
}

/* --- authentication ------------------------------------------------------- */

static void connect_finish(job_t *j, auth_result_t r, auth_identity_t *id)
{
    auth_t *a = j->a;
    job_unlink(j);
    if (r == AUTH_ALLOW && !id && !(id = identity_new()))
        r = AUTH_DENY;
    if (r == AUTH_ALLOW) {
        a->stats.connect_allowed++;
    } else {
        a->stats.connect_denied++;
        auth_identity_free(id);
        id = NULL;
    }
    auth_connect_fn cb = j->connect_cb;
    void *arg = j->arg;
    job_free(j);
    cb(arg, r, id);
}

static void refuse(job_t *j, const char *by)
{
    const auth_client_t *c = &j->client;
    log_info("auth: client '%s'%s%s%s %s:%d refused by %s",
             or_none(c->clientid), c->username ? " (user '" : "",
             or_none(c->username), c->username ? "')" : "",
             or_none(c->peer_host), c->peer_port, by);
    connect_finish(j, AUTH_DENY, NULL);
}

static void connect_anonymous(job_t *j)
{
    if (j->a->anonymous)
        connect_finish(j, AUTH_ALLOW, NULL);
    else
        refuse(j, "allow_anonymous false (no authenticator allowed it)");
}

static void connect_failed(job_t *j, const httpc_resp_t *resp)
{
    auth_t *a = j->a;
    char buf[64];
    a->stats.http_failures++;
    if (resp->err == SL_ETIMEOUT)
        a->stats.http_timeouts++;
    log_warning("auth: auth_http_url request for client '%s' (user '%s') "
                "%s; auth_failure_policy %s applies",
                or_none(j->client.clientid), or_none(j->client.username),
                failure_text(resp, buf, sizeof(buf)), policy_names[a->policy]);
    if (a->policy == AUTH_POLICY_ALLOW)
        connect_finish(j, AUTH_ALLOW, NULL);
    else if (a->policy == AUTH_POLICY_IGNORE)
        connect_anonymous(j);
    else
        refuse(j, "auth_failure_policy deny");
}

/* An "allow" answer: the identity it describes. */
static void connect_allowed(job_t *j, auth_reply_t *rep)
{
    if (rep->expire_at && rep->expire_at <= (int64_t)time(NULL)) {
        auth_reply_fini(rep);
        refuse(j, "auth_http_url (expire_at has passed)");
        return;
    }
    auth_identity_t *id = identity_new();
    if (id) {
        id->superuser = rep->superuser;
        id->expire_at = rep->expire_at;
        id->rules = rep->acl;
        rep->acl = (acl_rules_t){0};
    }
    auth_reply_fini(rep);
    log_debug("auth: client '%s' allowed by auth_http_url%s (%zu ACL rules)",
              or_none(j->client.clientid),
              id && id->superuser ? " as superuser" : "", id ? id->rules.n : 0);
    connect_finish(j, id ? AUTH_ALLOW : AUTH_DENY, id);
}

static void connect_http_done(void *arg, const httpc_resp_t *resp)
{
    job_t *j = arg;
    j->req = NULL;
    auth_reply_t rep;
    if (resp->err != SL_OK ||
        auth_reply_parse(&rep, resp->status, resp->body, resp->len, true) !=
            SL_OK) {
        connect_failed(j, resp);
        return;
    }
    if (rep.result == AUTH_ALLOW)
        connect_allowed(j, &rep);
    else if (rep.result == AUTH_DENY)
        refuse(j, "auth_http_url");
    else
        connect_anonymous(j);
}

static void connect_http(job_t *j)
{
    auth_t *a = j->a;
    if (!a->auth_ep) {
        connect_anonymous(j);
        return;
    }
    cJSON *o = auth_request_connect(&j->client);
    j->req = send_json(a, a->auth_ep, a->auth_path, o, connect_http_done, j);
    if (!j->req)
        connect_failed(j, &(httpc_resp_t){.err = SL_ENOMEM});
}

static void connect_start_cb(evutil_socket_t fd, short what, void *arg)
{
    job_t *j = arg;
    const auth_client_t *c = &j->client;
    if (j->oom) {
        log_error("auth: out of memory authenticating a client");
        connect_finish(j, AUTH_DENY, NULL);
        return;
    }
    if (j->a->pw) {
        switch (passwd_check(j->a->pw, c->username, c->password,
                             c->password_len, c->has_password)) {
        case AUTH_ALLOW:
            log_debug("auth: client '%s' allowed by password_file",
                      or_none(c->clientid));
            connect_finish(j, AUTH_ALLOW, NULL);
            return;
        case AUTH_DENY:
            refuse(j, "password_file (wrong or missing password)");
            return;
        case AUTH_IGNORE:
            break;
        }
    }
    connect_http(j);
}

void auth_connect(auth_t *a, const auth_client_t *c, auth_connect_fn cb,
                  void *arg)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j && !(j->start = event_new(a->base, -1, 0, connect_start_cb, j))) {
        free(j);
        j = NULL;
    }
    if (!j) { /* cannot even schedule an answer */
        log_error("auth: out of memory authenticating client '%s'",
                  or_none(c->clientid));
        cb(arg, AUTH_DENY, NULL);
        return;
    }
    j->kind = JOB_CONNECT;
    j->connect_cb = cb;
    j->arg = arg;
    job_link(a, j);
    if (client_copy(&j->client, c) != SL_OK) {
        client_fini(&j->client); /* refused from the loop */
        memset(&j->client, 0, sizeof(j->client));
        j->oom = true;
    }
    event_active(j->start, EV_TIMEOUT, 0);
}

/* --- authorization -------------------------------------------------------- */

static void count_decision(auth_t *a, bool allowed)
{
    if (allowed)
        a->stats.acl_allowed++;
    else
        a->stats.acl_denied++;
}

/* The decision when no rule applied. */
static bool default_decision(const auth_t *a)
{
    return !a->aclf && !a->acl_ep;
}

static void check_finish(job_t *j, bool allowed)
{
    auth_t *a = j->a;
    job_unlink(j);
    count_decision(a, allowed);
    auth_check_fn cb = j->check_cb;
    void *arg = j->arg;
    job_free(j);
    cb(arg, allowed);
}

static bool check_failed(job_t *j, const httpc_resp_t *resp)
{
    auth_t *a = j->a;
    char buf[64];
    a->stats.http_failures++;
    if (resp->err == SL_ETIMEOUT)
        a->stats.http_timeouts++;
    log_warning("auth: acl_http_url request for client '%s' %s; "
                "auth_failure_policy %s applies",
                j->clientid, failure_text(resp, buf, sizeof(buf)),
                policy_names[a->policy]);
    if (a->policy == AUTH_POLICY_ALLOW)
        return true;
    return a->policy == AUTH_POLICY_IGNORE && default_decision(a);
}

static void check_http_done(void *arg, const httpc_resp_t *resp)
{
    job_t *j = arg;
    j->req = NULL;
    auth_reply_t rep;
    if (resp->err != SL_OK ||
        auth_reply_parse(&rep, resp->status, resp->body, resp->len, false) !=
            SL_OK) {
        check_finish(j, check_failed(j, resp));
        return;
    }
    bool allowed = rep.result == AUTH_ALLOW ||
                   (rep.result == AUTH_IGNORE && default_decision(j->a));
    auth_reply_fini(&rep);
    cache_put(j->a, j->id, j->key, j->klen, allowed);
    check_finish(j, allowed);
}

/* Start an acl_http_url request; -1, or the decision when none could be
 * started. key (the cache key) is copied. */
static int check_http(auth_t *a, auth_identity_t *id, const auth_client_t *c,
                      authz_action_t act, const char *topic, size_t tlen,
                      int qos, bool retain, const char *key, size_t klen,
                      auth_check_fn cb, void *arg)
{
    job_t *j = calloc(1, sizeof(*j));
    if (!j || !(j->clientid = strdup(or_none(c->clientid))) ||
        !(j->key = malloc(klen))) {
        if (j)
            free(j->clientid);
        free(j);
        return 0;
    }
    memcpy(j->key, key, klen);
    j->kind = JOB_CHECK;
    j->klen = klen;
    j->check_cb = cb;
    j->arg = arg;
    if ((j->id = id))
        id->refs++;
    job_link(a, j);
    cJSON *o = auth_request_acl(c, act, topic, tlen, qos, retain);
    j->req = send_json(a, a->acl_ep, a->acl_path, o, check_http_done, j);
    if (j->req)
        return -1;
    bool allowed = check_failed(j, &(httpc_resp_t){.err = SL_ENOMEM});
    job_unlink(j);
    job_free(j);
    return allowed;
}

/* The rules known without asking anyone: ACL_ALLOW, ACL_DENY, ACL_NOMATCH. */
static int check_rules(const auth_t *a, const auth_identity_t *id,
                       const auth_client_t *c, authz_action_t act,
                       const char *topic, size_t tlen, int qos, bool retain)
{
    int d = ACL_NOMATCH;
    if (id)
        d = acl_rules_check(&id->rules, c->clientid, c->username, act, topic,
                            tlen, qos, retain);
    if (d == ACL_NOMATCH && a->aclf)
        d = acl_file_check(a->aclf, c->clientid, c->username, act, topic,
                           tlen);
    return d;
}

/* Without acl_http_url every rule is in memory: no cache needed. */
static int check_static(const auth_t *a, const auth_identity_t *id,
                        const auth_client_t *c, authz_action_t act,
                        const char *topic, size_t tlen, int qos, bool retain)
{
    if (!a->aclf && (!id || id->rules.n == 0))
        return 1; /* nothing to check: the fast path */
    int d = check_rules(a, id, c, act, topic, tlen, qos, retain);
    return d == ACL_NOMATCH ? default_decision(a) : d == ACL_ALLOW;
}

/* The cache key: action, QoS, retain flag, topic. NULL when it does not
 * fit in buf and cannot be allocated. */
static char *cache_key(char *buf, size_t cap, authz_action_t act,
                       const char *topic, size_t tlen, int qos, bool retain,
                       size_t *klen)
{
    *klen = CACHE_KEY_HEAD + tlen;
    char *key = *klen <= cap ? buf : malloc(*klen);
    if (!key)
        return NULL;
    key[0] = (char)act;
    key[1] = (char)qos;
    key[2] = (char)(act == AUTHZ_PUBLISH && retain);
    memcpy(key + CACHE_KEY_HEAD, topic, tlen);
    return key;
}

static int check_cached(auth_t *a, auth_identity_t *id,
                        const auth_client_t *c, authz_action_t act,
                        const char *topic, size_t tlen, int qos, bool retain,
                        auth_check_fn cb, void *arg)
{
    char buf[256];
    size_t klen;
    char *key = cache_key(buf, sizeof(buf), act, topic, tlen, qos, retain,
                          &klen);
    if (!key)
        return 0;
    int r = cache_get(id, key, klen);
    if (r >= 0) {
        a->stats.cache_hits++;
    } else {
        a->stats.cache_misses++;
        int d = check_rules(a, id, c, act, topic, tlen, qos, retain);
        if (d == ACL_NOMATCH) {
            r = check_http(a, id, c, act, topic, tlen, qos, retain, key, klen,
                           cb, arg);
        } else {
            r = d == ACL_ALLOW;
            cache_put(a, id, key, klen, r);
        }
    }
    if (key != buf)
        free(key);
    return r;
}

int auth_check(auth_t *a, auth_identity_t *id, const auth_client_t *c,
               authz_action_t act, const char *topic, size_t tlen, int qos,
               bool retain, auth_check_fn cb, void *arg)
{
    int r;
    if (id && id->superuser)
        r = 1;
    else if (!a->acl_ep)
        r = check_static(a, id, c, act, topic, tlen, qos, retain);
    else
        r = check_cached(a, id, c, act, topic, tlen, qos, retain, cb, arg);
    if (r >= 0)
        count_decision(a, r == 1);
    if (r == 0)
        log_debug("auth: client '%s' may not %s '%.*s'", or_none(c->clientid),
                  act == AUTHZ_PUBLISH ? "publish to" : "subscribe to",
                  (int)tlen, topic);
    return r;
}

/* --- life cycle ----------------------------------------------------------- */

static int load_files(auth_t *a, const sl_conf_t *conf, char *err,
                      size_t errlen)
{
    int rc = SL_OK;
    if (conf->password_file) {
        rc = passwd_load(&a->pw, conf->password_file, err, errlen);
        if (rc == SL_OK)
            log_info("auth: password_file %s: %zu users", conf->password_file,
                     passwd_count(a->pw));
    }
    if (rc == SL_OK && conf->acl_file) {
        rc = acl_file_load(&a->aclf, conf->acl_file, err, errlen);
        if (rc == SL_OK)
            log_info("auth: acl_file %s loaded", conf->acl_file);
    }
    return rc;
}

static int setup_http(auth_t *a, const sl_conf_t *conf, char *err,
                      size_t errlen)
{
    if (!conf->auth_http_url && !conf->acl_http_url && !conf->webhook_url)
        return SL_OK;
    httpc_opts_t o = {.tls_verify = conf->auth_tls_verify,
                      .cafile = conf->auth_tls_cafile};
    int rc = httpc_new(&a->http, a->base, &o, err, errlen);
    if (rc != SL_OK)
        return rc;
    if (httpc_headers_parse(&a->headers, conf->auth_http_headers) != SL_OK) {
        snprintf(err, errlen, "auth_http_headers: expected 'Name: value; ...'");
        return SL_EINVAL;
    }
    if (conf->auth_http_url &&
        !(a->auth_ep = httpc_endpoint(a->http, conf->auth_http_url,
                                      &a->auth_path, err, errlen)))
        return SL_EINVAL;
    if (conf->acl_http_url &&
        !(a->acl_ep = httpc_endpoint(a->http, conf->acl_http_url,
                                     &a->acl_path, err, errlen)))
        return SL_EINVAL;
    return hooks_new(&a->hooks, a->base, a->http, conf, &a->stats, err,
                     errlen);
}

static bool resolve_anonymous(const auth_t *a, anon_t v)
{
    if (v == ANON_AUTO)
        return !a->pw && !a->auth_ep;
    return v == ANON_TRUE;
}

int auth_new(auth_t **out, struct event_base *base, const sl_conf_t *conf)
{
    char err[512] = "";
    auth_t *a = calloc(1, sizeof(*a));
    if (!a) {
        log_error("auth: out of memory");
        return SL_ENOMEM;
    }
    a->base = base;
    a->method = conf->auth_http_method;
    a->policy = conf->auth_failure_policy;
    a->timeout_ms = conf->auth_http_timeout;
    a->cache_ttl = conf->auth_cache_ttl;
    a->cache_size = conf->auth_cache_size;
    int rc = load_files(a, conf, err, sizeof(err));
    if (rc == SL_OK)
        rc = setup_http(a, conf, err, sizeof(err));
    if (rc != SL_OK) {
        log_error("auth: %s", err[0] ? err : sl_strerror(rc));
        auth_free(a);
        return rc;
    }
    a->anonymous = resolve_anonymous(a, conf->allow_anonymous);
    if (auth_enabled(a) || !a->anonymous)
        log_info("auth: auth_http_url %s, acl_http_url %s, allow_anonymous "
                 "%s, auth_failure_policy %s",
                 conf->auth_http_url ? conf->auth_http_url : "unset",
                 conf->acl_http_url ? conf->acl_http_url : "unset",
                 a->anonymous ? "true" : "false", policy_names[a->policy]);
    *out = a;
    return SL_OK;
}

void auth_free(auth_t *a)
{
    if (!a)
        return;
    while (a->jobs) {
        job_t *j = a->jobs;
        if (j->req)
            httpc_cancel(j->req);
        j->req = NULL;
        if (j->kind == JOB_CONNECT)
            connect_finish(j, AUTH_DENY, NULL);
        else
            check_finish(j, false);
    }
    hooks_free(a->hooks);
    httpc_free(a->http);
    httpc_headers_fini(&a->headers);
    passwd_free(a->pw);
    acl_file_free(a->aclf);
    free(a);
}

bool auth_enabled(const auth_t *a)
{
    return a->pw || a->aclf || a->auth_ep || a->acl_ep;
}

const auth_stats_t *auth_stats(const auth_t *a)
{
    return &a->stats;
}

/* --- webhooks ------------------------------------------------------------- */

bool hook_wanted(const auth_t *a, const char *event)
{
    return a->hooks && hooks_wanted(a->hooks, event);
}

void hook_event(auth_t *a, const char *event, const char *clientid,
                const char *username, const char *topic, const void *payload,
                size_t plen, int qos, bool retain)
{
    if (a->hooks)
        hooks_event(a->hooks, event, clientid, username, topic, payload, plen,
                    qos, retain);
}
