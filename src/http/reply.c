/*
 * reply.c - the JSON spoken with the auth and ACL endpoints (EMQX 5 HTTP
 * authenticator / authorizer contract).
 *
 * Requests (POST body, or the same fields as a query string for GET):
 *   auth {"clientid": "c1", "username": "u", "password": "p",
 *         "peerhost": "10.0.0.3", "peerport": 51234, "proto_ver": 5,
 *         "listener": "tcp", "cert_subject": "", "cert_common_name": ""}
 *   acl  {"action": "publish", "topic": "a/b", "qos": 1, "retain": false,
 *         "clientid": "c1", "username": "u", "peerhost": "10.0.0.3"}
 * Missing strings are sent as "" (as EMQX fills its placeholders).
 *
 * Answers:
 *   204, any body                       allow
 *   200 {"result": "allow", "is_superuser": true, "acl": [...],
 *        "expire_at": 1767225600}       allow (deny, ignore likewise)
 *   4xx, 5xx                            ignore
 *   anything else, or a 200 without a JSON object holding a valid
 *   "result", or with an invalid "acl"  malformed (auth_failure_policy)
 */
#include "auth_int.h"

#include "starling/err.h"

#include <event2/http.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- answers -------------------------------------------------------------- */

static int parse_result(const cJSON *r, auth_result_t *out)
{
    const char *s = cJSON_GetStringValue(r);
    if (!s)
        return SL_EMALFORMED;
    if (strcasecmp(s, "allow") == 0)
        *out = AUTH_ALLOW;
    else if (strcasecmp(s, "deny") == 0)
        *out = AUTH_DENY;
    else if (strcasecmp(s, "ignore") == 0)
        *out = AUTH_IGNORE;
    else
        return SL_EMALFORMED;
    return SL_OK;
}

/* true, "true" or 1 (some services send strings or numbers). */
static bool parse_flag(const cJSON *f)
{
    if (cJSON_IsBool(f))
        return cJSON_IsTrue(f);
    if (cJSON_IsString(f))
        return strcasecmp(f->valuestring, "true") == 0;
    return cJSON_IsNumber(f) && f->valuedouble == 1;
}

static int parse_object(auth_reply_t *out, const cJSON *o, bool with_acl)
{
    if (!cJSON_IsObject(o))
        return SL_EMALFORMED;
    int rc = parse_result(cJSON_GetObjectItemCaseSensitive(o, "result"),
                         &out->result);
    if (rc != SL_OK || out->result != AUTH_ALLOW)
        return rc;
    out->superuser =
        parse_flag(cJSON_GetObjectItemCaseSensitive(o, "is_superuser"));
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(o, "expire_at");
    if (exp && (!cJSON_IsNumber(exp) || exp->valuedouble < 0))
        return SL_EMALFORMED;
    if (exp)
        out->expire_at = (int64_t)exp->valuedouble;
    const cJSON *acl = cJSON_GetObjectItemCaseSensitive(o, "acl");
    if (with_acl && acl)
        return acl_rules_parse(&out->acl, acl);
    return SL_OK;
}

int auth_reply_parse(auth_reply_t *out, int status, const char *body,
                     size_t len, bool with_acl)
{
    memset(out, 0, sizeof(*out));
    out->result = AUTH_IGNORE;
    if (status >= 400 && status <= 599)
        return SL_OK;
    if (status == 204) {
        out->result = AUTH_ALLOW;
        return SL_OK;
    }
    if (status < 200 || status > 299 || !body || len == 0)
        return SL_EMALFORMED;
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!o)
        return SL_EMALFORMED;
    int rc = parse_object(out, o, with_acl);
    cJSON_Delete(o);
    if (rc != SL_OK)
        auth_reply_fini(out);
    return rc;
}

void auth_reply_fini(auth_reply_t *r)
{
    acl_rules_fini(&r->acl);
}

/* --- requests ------------------------------------------------------------- */

static bool add_str(cJSON *o, const char *k, const char *v)
{
    return cJSON_AddStringToObject(o, k, v ? v : "") != NULL;
}

static bool add_password(cJSON *o, const auth_client_t *c)
{
    size_t n = c->has_password ? c->password_len : 0;
    char *s = malloc(n + 1);
    if (!s)
        return false;
    if (n)
        memcpy(s, c->password, n);
    s[n] = '\0';
    bool ok = add_str(o, "password", s);
    memset(s, 0, n);
    free(s);
    return ok;
}

cJSON *auth_request_connect(const auth_client_t *c)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_str(o, "clientid", c->clientid) &&
              add_str(o, "username", c->username) && add_password(o, c) &&
              add_str(o, "peerhost", c->peer_host) &&
              cJSON_AddNumberToObject(o, "peerport", c->peer_port) &&
              cJSON_AddNumberToObject(o, "proto_ver", c->proto_version) &&
              add_str(o, "listener", c->listener) &&
              add_str(o, "cert_subject", c->cert_subject) &&
              add_str(o, "cert_common_name", c->cert_cn);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *auth_request_acl(const auth_client_t *c, authz_action_t act,
                        const char *topic, size_t tlen, int qos, bool retain)
{
    char *t = malloc(tlen + 1);
    cJSON *o = t ? cJSON_CreateObject() : NULL;
    if (t) {
        memcpy(t, topic, tlen);
        t[tlen] = '\0';
    }
    bool ok = o &&
              add_str(o, "action",
                      act == AUTHZ_PUBLISH ? "publish" : "subscribe") &&
              add_str(o, "topic", t) &&
              cJSON_AddNumberToObject(o, "qos", qos) &&
              cJSON_AddBoolToObject(o, "retain", retain) &&
              add_str(o, "clientid", c->clientid) &&
              add_str(o, "username", c->username) &&
              add_str(o, "peerhost", c->peer_host);
    free(t);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool query_add(FILE *f, const cJSON *e, bool first)
{
    char num[32];
    const char *v = "";
    if (cJSON_IsString(e))
        v = e->valuestring;
    else if (cJSON_IsBool(e))
        v = cJSON_IsTrue(e) ? "true" : "false";
    else if (cJSON_IsNumber(e) && snprintf(num, sizeof(num), "%.0f",
                                           e->valuedouble) > 0)
        v = num;
    char *k = evhttp_uriencode(e->string, -1, 0);
    char *x = evhttp_uriencode(v, -1, 0);
    if (k && x)
        fprintf(f, "%s%s=%s", first ? "" : "&", k, x);
    free(k);
    free(x);
    return k && x;
}

char *auth_query_string(const char *path, const cJSON *obj)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    bool has_query = strchr(path, '?') != NULL;
    fprintf(f, "%s%s", path, has_query ? "&" : "?");
    bool ok = true, first = true;
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        ok = ok && query_add(f, e, first);
        first = false;
    }
    if (fclose(f) != 0 || !ok) {
        free(buf);
        return NULL;
    }
    return buf;
}
