/*
 * httpc.c - asynchronous HTTP client with a keep-alive pool per endpoint
 * (see httpc.h).
 *
 * A request goes through three states: queued (in its endpoint's FIFO),
 * active (sent on one pooled connection, which carries nothing else) and
 * finished (callback run, request freed). Its timer runs from submission;
 * when it fires first, the request is taken out of the queue or cancelled
 * on its connection (evhttp_cancel_request, which resets that connection).
 *
 * Connections are discarded rather than reconnected: one that failed, was
 * cancelled or was closed by the server is marked dead and freed by the
 * reaper, an event of its own, so no evhttp_connection is ever freed from
 * inside one of libevent's callbacks for it.
 *
 * evhttp may run a request's callback inside evhttp_make_request (a connect
 * that fails at once): dispatch() notices through req->in_dispatch and lets
 * the request's timer, activated at once, report the failure from the loop.
 */
#include "httpc.h"

#include "starling/conf.h"
#include "starling/err.h"
#include "starling/log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_CONNS 16
#define MAX_RESPONSE_BODY (1 << 20)
#define MAX_RESPONSE_HEADERS (64 << 10)
#define EVCON_TIMEOUT_S 900 /* a backstop: request deadlines are shorter */

typedef struct conn {
    struct conn *next;
    httpc_ep_t *ep;
    struct evhttp_connection *evcon;
    httpc_req_t *active;
    unsigned served; /* requests answered on it */
    bool dead;
} conn_t;

struct httpc_req {
    httpc_req_t *next; /* endpoint queue */
    httpc_ep_t *ep;
    conn_t *conn; /* when active */
    struct evhttp_request *evreq;
    struct event *timer;
    httpc_method_t method;
    char *path;
    char *ctype;
    void *body;
    size_t len;
    const httpc_headers_t *hdrs;
    int attempts;
    bool in_dispatch, sync_failed;
    httpc_done_fn done;
    void *arg;
};

struct httpc_ep {
    httpc_ep_t *next;
    httpc_t *h;
    bool tls;
    char *host;
    int port;
    char *host_header;
    conn_t *conns;
    int nconns;
    httpc_req_t *qhead, *qtail;
    char **paths;
    size_t npaths;
};

struct httpc {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl;
    bool verify;
    int max_conns;
    httpc_ep_t *eps;
    struct event *reaper;
    bool closing;
};

/* --- URLs and headers (pure) ---------------------------------------------- */

static char *strndup_or_null(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Host, without the brackets of an IPv6 literal. */
static char *host_copy(const char *host)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        return strndup_or_null(host + 1, n - 2);
    return strdup(host);
}

static char *path_copy(const struct evhttp_uri *uri)
{
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    if (!path || !*path)
        path = "/";
    size_t n = strlen(path) + (query ? strlen(query) + 1 : 0) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", path, query ? "?" : "", query ? query : "");
    return p;
}

int httpc_url_parse(httpc_url_t *u, const char *url)
{
    memset(u, 0, sizeof(*u));
    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(url, 0);
    if (!uri)
        return SL_EINVAL;
    const char *scheme = evhttp_uri_get_scheme(uri);
    const char *host = evhttp_uri_get_host(uri);
    int rc = SL_EINVAL;
    if (!scheme || !host || !*host || evhttp_uri_get_userinfo(uri))
        goto done;
    if (strcasecmp(scheme, "https") == 0)
        u->tls = true;
    else if (strcasecmp(scheme, "http") != 0)
        goto done;
    u->port = evhttp_uri_get_port(uri);
    if (u->port < 0)
        u->port = u->tls ? 443 : 80;
    if (u->port == 0 || u->port > 65535)
        goto done;
    rc = SL_ENOMEM;
    u->host = host_copy(host);
    u->path = path_copy(uri);
    if (u->host && u->path && *u->host)
        rc = SL_OK;
done:
    evhttp_uri_free(uri);
    if (rc != SL_OK)
        httpc_url_fini(u);
    return rc;
}

void httpc_url_fini(httpc_url_t *u)
{
    free(u->host);
    free(u->path);
    u->host = u->path = NULL;
}

static const char *trim(const char *s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)*s))
        s++, (*n)--;
    while (*n > 0 && isspace((unsigned char)s[*n - 1]))
        (*n)--;
    return s;
}

static int header_add(httpc_headers_t *h, const char *item, size_t n)
{
    const char *colon = memchr(item, ':', n);
    if (!colon)
        return SL_EINVAL;
    size_t nlen = (size_t)(colon - item), vlen = n - nlen - 1;
    const char *name = trim(item, &nlen);
    const char *value = trim(colon + 1, &vlen);
    if (nlen == 0)
        return SL_EINVAL;
    char **names = realloc(h->names, (h->n + 1) * sizeof(char *));
    if (names)
        h->names = names;
    char **values = realloc(h->values, (h->n + 1) * sizeof(char *));
    if (values)
        h->values = values;
    if (!names || !values)
        return SL_ENOMEM;
    h->names[h->n] = strndup_or_null(name, nlen);
    h->values[h->n] = strndup_or_null(value, vlen);
    h->n++;
    return h->names[h->n - 1] && h->values[h->n - 1] ? SL_OK : SL_ENOMEM;
}

int httpc_headers_parse(httpc_headers_t *h, const char *spec)
{
    memset(h, 0, sizeof(*h));
    for (const char *p = spec; p && *p;) {
        size_t n = strcspn(p, ";");
        size_t m = n;
        trim(p, &m);
        if (m > 0) {
            int rc = header_add(h, p, n);
            if (rc != SL_OK) {
                httpc_headers_fini(h);
                return rc;
            }
        }
        p += n + (p[n] == ';');
    }
    return SL_OK;
}

void httpc_headers_fini(httpc_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->names[i]);
        free(h->values[i]);
    }
    free(h->names);
    free(h->values);
    memset(h, 0, sizeof(*h));
}

/* --- client --------------------------------------------------------------- */

static void reap_cb(evutil_socket_t fd, short what, void *arg);

static int tls_setup(httpc_t *h, const httpc_opts_t *o, char *err,
                     size_t errlen)
{
    h->ssl = SSL_CTX_new(TLS_client_method());
    if (!h->ssl) {
        snprintf(err, errlen, "TLS client context: out of memory");
        return SL_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(h->ssl, TLS1_2_VERSION);
    h->verify = o->tls_verify;
    SSL_CTX_set_verify(h->ssl, h->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       NULL);
    int ok = o->cafile ? SSL_CTX_load_verify_locations(h->ssl, o->cafile, NULL)
                       : SSL_CTX_set_default_verify_paths(h->ssl);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load CA certificates%s%s",
                 o->cafile ? " from " : "", o->cafile ? o->cafile : "");
        ERR_clear_error();
        return o->cafile ? SL_EIO : SL_OK; /* no system CAs: keep going */
    }
    return SL_OK;
}

int httpc_new(httpc_t **out, struct event_base *base, const httpc_opts_t *o,
              char *err, size_t errlen)
{
    httpc_t *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    h->base = base;
    h->max_conns = o->max_conns > 0 ? o->max_conns : DEFAULT_MAX_CONNS;
    h->reaper = event_new(base, -1, 0, reap_cb, h);
    int rc = h->reaper ? tls_setup(h, o, err, errlen) : SL_ENOMEM;
    if (rc != SL_OK) {
        if (rc == SL_ENOMEM)
            snprintf(err, errlen, "out of memory");
        httpc_free(h);
        return rc;
    }
    *out = h;
    return SL_OK;
}

static void req_free(httpc_req_t *r)
{
    if (r->timer)
        event_free(r->timer);
    free(r->path);
    free(r->ctype);
    free(r->body);
    free(r);
}

static void conn_free(conn_t *c)
{
    if (c->evcon)
        evhttp_connection_free(c->evcon); /* drops its requests silently */
    free(c);
}

static void ep_free(httpc_ep_t *ep)
{
    while (ep->qhead) {
        httpc_req_t *r = ep->qhead;
        ep->qhead = r->next;
        req_free(r);
    }
    while (ep->conns) {
        conn_t *c = ep->conns;
        ep->conns = c->next;
        httpc_req_t *r = c->active;
        conn_free(c);
        if (r)
            req_free(r);
    }
    for (size_t i = 0; i < ep->npaths; i++)
        free(ep->paths[i]);
    free(ep->paths);
    free(ep->host);
    free(ep->host_header);
    free(ep);
}

void httpc_free(httpc_t *h)
{
    if (!h)
        return;
    h->closing = true;
    while (h->eps) {
        httpc_ep_t *ep = h->eps;
        h->eps = ep->next;
        ep_free(ep);
    }
    if (h->reaper)
        event_free(h->reaper);
    if (h->dns)
        evdns_base_free(h->dns, 0);
    if (h->ssl)
        SSL_CTX_free(h->ssl);
    free(h);
}

/* --- endpoints ------------------------------------------------------------ */

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return evutil_inet_pton(AF_INET, host, buf) == 1 ||
           evutil_inet_pton(AF_INET6, host, buf) == 1;
}

static char *make_host_header(const httpc_url_t *u)
{
    bool v6 = strchr(u->host, ':') != NULL;
    bool dflt = u->port == (u->tls ? 443 : 80);
    size_t n = strlen(u->host) + 16;
    char *s = malloc(n);
    if (!s)
        return NULL;
    int k = snprintf(s, n, v6 ? "[%s]" : "%s", u->host);
    if (!dflt)
        snprintf(s + k, n - (size_t)k, ":%d", u->port);
    return s;
}

static httpc_ep_t *ep_find(httpc_t *h, const httpc_url_t *u)
{
    for (httpc_ep_t *ep = h->eps; ep; ep = ep->next)
        if (ep->tls == u->tls && ep->port == u->port &&
            strcasecmp(ep->host, u->host) == 0)
            return ep;
    return NULL;
}

static httpc_ep_t *ep_new(httpc_t *h, httpc_url_t *u)
{
    if (!is_ip_literal(u->host) && !h->dns) {
        h->dns = evdns_base_new(h->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!h->dns) /* no resolv.conf: libevent resolves (blocking) */
            log_warning("auth: no DNS resolver configuration; resolving "
                        "'%s' may block",
                        u->host);
    }
    httpc_ep_t *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->h = h;
    ep->tls = u->tls;
    ep->port = u->port;
    ep->host = u->host;
    u->host = NULL;
    ep->host_header = make_host_header(&(httpc_url_t){
        .tls = ep->tls, .host = ep->host, .port = ep->port});
    if (!ep->host_header) {
        ep_free(ep);
        return NULL;
    }
    ep->next = h->eps;
    h->eps = ep;
    return ep;
}

static const char *ep_keep_path(httpc_ep_t *ep, char *path)
{
    char **paths = realloc(ep->paths, (ep->npaths + 1) * sizeof(char *));
    if (!paths) {
        free(path);
        return NULL;
    }
    ep->paths = paths;
    ep->paths[ep->npaths++] = path;
    return path;
}

httpc_ep_t *httpc_endpoint(httpc_t *h, const char *url, const char **path,
                           char *err, size_t errlen)
{
    httpc_url_t u;
    int rc = httpc_url_parse(&u, url);
    if (rc != SL_OK) {
        snprintf(err, errlen, "%s: %s", url,
                 rc == SL_EINVAL ? "not an http:// or https:// URL"
                                 : "out of memory");
        return NULL;
    }
    httpc_ep_t *ep = ep_find(h, &u);
    if (!ep)
        ep = ep_new(h, &u);
    char *p = u.path;
    u.path = NULL;
    httpc_url_fini(&u);
    if (!ep || !(*path = ep_keep_path(ep, p))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return ep;
}

/* --- connections ---------------------------------------------------------- */

static void reap_soon(httpc_t *h)
{
    if (!h->closing)
        event_active(h->reaper, EV_TIMEOUT, 0);
}

static void close_cb(struct evhttp_connection *evcon, void *arg)
{
    conn_t *c = arg;
    c->dead = true;
    reap_soon(c->ep->h);
}

static struct bufferevent *tls_bufferevent(httpc_t *h, httpc_ep_t *ep)
{
    SSL *ssl = SSL_new(h->ssl);
    if (!ssl)
        return NULL;
    bool ip = is_ip_literal(ep->host);
    if (!ip)
        SSL_set_tlsext_host_name(ssl, ep->host);
    if (h->verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(param, ep->host);
        else
            SSL_set1_host(ssl, ep->host);
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        h->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static conn_t *conn_new(httpc_ep_t *ep)
{
    httpc_t *h = ep->h;
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    struct bufferevent *bev = NULL;
    if (ep->tls && !(bev = tls_bufferevent(h, ep))) {
        free(c);
        return NULL;
    }
    c->ep = ep;
    c->evcon = evhttp_connection_base_bufferevent_new(h->base, h->dns, bev,
                                                      ep->host,
                                                      (unsigned short)ep->port);
    if (!c->evcon) {
        if (bev)
            bufferevent_free(bev);
        free(c);
        return NULL;
    }
    evhttp_connection_set_retries(c->evcon, 0);
    evhttp_connection_set_timeout(c->evcon, EVCON_TIMEOUT_S);
    evhttp_connection_set_max_body_size(c->evcon, MAX_RESPONSE_BODY);
    evhttp_connection_set_max_headers_size(c->evcon, MAX_RESPONSE_HEADERS);
    evhttp_connection_set_closecb(c->evcon, close_cb, c);
    c->next = ep->conns;
    ep->conns = c;
    ep->nconns++;
    return c;
}

/* An idle live connection, or a new one while the pool has room. */
static conn_t *conn_pick(httpc_ep_t *ep)
{
    for (conn_t *c = ep->conns; c; c = c->next)
        if (!c->active && !c->dead)
            return c;
    if (ep->nconns >= ep->h->max_conns)
        return NULL;
    return conn_new(ep);
}

static void ep_reap(httpc_ep_t *ep)
{
    conn_t **pp = &ep->conns;
    while (*pp) {
        conn_t *c = *pp;
        if (c->dead && !c->active) {
            *pp = c->next;
            ep->nconns--;
            conn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void pump(httpc_ep_t *ep);

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    httpc_t *h = arg;
    for (httpc_ep_t *ep = h->eps; ep; ep = ep->next)
        ep_reap(ep);
    for (httpc_ep_t *ep = h->eps; ep; ep = ep->next)
        pump(ep);
}

/* --- requests ------------------------------------------------------------- */

static void queue_push(httpc_ep_t *ep, httpc_req_t *r, bool front)
{
    r->next = NULL;
    if (!ep->qhead) {
        ep->qhead = ep->qtail = r;
    } else if (front) {
        r->next = ep->qhead;
        ep->qhead = r;
    } else {
        ep->qtail->next = r;
        ep->qtail = r;
    }
}

static void queue_remove(httpc_ep_t *ep, httpc_req_t *r)
{
    httpc_req_t *prev = NULL;
    for (httpc_req_t *q = ep->qhead; q; prev = q, q = q->next) {
        if (q != r)
            continue;
        if (prev)
            prev->next = r->next;
        else
            ep->qhead = r->next;
        if (ep->qtail == r)
            ep->qtail = prev;
        r->next = NULL;
        return;
    }
}

/* Run the callback and free the request. */
static void finish(httpc_req_t *r, int err, int status, const char *body,
                   size_t len)
{
    httpc_resp_t resp = {.err = err, .status = status, .body = body,
                         .len = len};
    httpc_done_fn done = r->done;
    void *arg = r->arg;
    req_free(r);
    done(arg, &resp);
}

static void req_done_cb(struct evhttp_request *evreq, void *arg);

static int add_headers(httpc_req_t *r, struct evkeyvalq *out)
{
    const httpc_ep_t *ep = r->ep;
    int rc = evhttp_add_header(out, "Host", ep->host_header);
    rc |= evhttp_add_header(out, "User-Agent", "starling/" STARLING_VERSION);
    rc |= evhttp_add_header(out, "Accept", "application/json");
    rc |= evhttp_add_header(out, "Connection", "keep-alive");
    if (r->ctype)
        rc |= evhttp_add_header(out, "Content-Type", r->ctype);
    for (size_t i = 0; r->hdrs && i < r->hdrs->n; i++)
        rc |= evhttp_add_header(out, r->hdrs->names[i], r->hdrs->values[i]);
    return rc;
}

static struct evhttp_request *make_evreq(httpc_req_t *r)
{
    struct evhttp_request *e = evhttp_request_new(req_done_cb, r);
    if (!e)
        return NULL;
    if (add_headers(r, evhttp_request_get_output_headers(e)) != 0 ||
        (r->len && evbuffer_add(evhttp_request_get_output_buffer(e), r->body,
                                r->len) != 0)) {
        evhttp_request_free(e);
        return NULL;
    }
    return e;
}

/* Send r on c. A failure is reported from the loop through r's timer. */
static void dispatch(conn_t *c, httpc_req_t *r)
{
    r->attempts++;
    r->conn = c;
    c->active = r;
    r->evreq = make_evreq(r);
    int rc = -1;
    if (r->evreq) {
        r->in_dispatch = true;
        rc = evhttp_make_request(c->evcon, r->evreq,
                                 r->method == HTTPC_POST ? EVHTTP_REQ_POST
                                                         : EVHTTP_REQ_GET,
                                 r->path);
        r->in_dispatch = false;
    }
    if (rc != 0 || r->sync_failed) {
        c->active = NULL;
        c->dead = true;
        reap_soon(c->ep->h);
        r->conn = NULL;
        r->evreq = NULL;
        r->sync_failed = true;
        event_active(r->timer, EV_TIMEOUT, 0);
    }
}

static void pump(httpc_ep_t *ep)
{
    while (ep->qhead) {
        conn_t *c = conn_pick(ep);
        if (!c)
            return;
        httpc_req_t *r = ep->qhead;
        queue_remove(ep, r);
        dispatch(c, r);
    }
}

static void req_done_cb(struct evhttp_request *evreq, void *arg)
{
    httpc_req_t *r = arg;
    if (r->in_dispatch) { /* inside evhttp_make_request: see dispatch() */
        r->sync_failed = true;
        return;
    }
    conn_t *c = r->conn;
    httpc_ep_t *ep = r->ep;
    c->active = NULL;
    r->conn = NULL;
    r->evreq = NULL;
    int status = evreq ? evhttp_request_get_response_code(evreq) : 0;
    if (status == 0) {
        c->dead = true;
        reap_soon(ep->h);
        if (c->served > 0 && r->attempts < 2) { /* stale keep-alive */
            queue_push(ep, r, true);
            pump(ep);
            return;
        }
        finish(r, SL_EIO, 0, NULL, 0);
    } else {
        c->served++;
        struct evbuffer *in = evhttp_request_get_input_buffer(evreq);
        size_t len = evbuffer_get_length(in);
        const char *body = (const char *)evbuffer_pullup(in, -1);
        finish(r, SL_OK, status, body, len);
    }
    pump(ep);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    httpc_req_t *r = arg;
    httpc_ep_t *ep = r->ep;
    if (r->sync_failed) {
        finish(r, SL_EIO, 0, NULL, 0);
        pump(ep);
        return;
    }
    if (r->conn) {
        conn_t *c = r->conn;
        c->active = NULL;
        c->dead = true;
        r->conn = NULL;
        evhttp_cancel_request(r->evreq); /* resets c; no callback */
        r->evreq = NULL;
        reap_soon(ep->h);
    } else {
        queue_remove(ep, r);
    }
    finish(r, SL_ETIMEOUT, 0, NULL, 0);
    pump(ep);
}

static int req_copy(httpc_req_t *r, const char *path, const char *ctype,
                    const void *body, size_t len)
{
    r->path = strdup(path);
    r->ctype = ctype ? strdup(ctype) : NULL;
    r->len = len;
    r->body = len ? malloc(len) : NULL;
    if (!r->path || (ctype && !r->ctype) || (len && !r->body))
        return SL_ENOMEM;
    if (len)
        memcpy(r->body, body, len);
    return SL_OK;
}

httpc_req_t *httpc_request(httpc_ep_t *ep, httpc_method_t m, const char *path,
                           const httpc_headers_t *hdrs, const char *ctype,
                           const void *body, size_t len, int timeout_ms,
                           httpc_done_fn done, void *arg)
{
    httpc_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ep = ep;
    r->method = m;
    r->hdrs = hdrs;
    r->done = done;
    r->arg = arg;
    r->timer = evtimer_new(ep->h->base, timeout_cb, r);
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (timeout_ms % 1000) * 1000};
    if (!r->timer || req_copy(r, path, ctype, body, len) != SL_OK ||
        evtimer_add(r->timer, &tv) != 0) {
        req_free(r);
        return NULL;
    }
    queue_push(ep, r, false);
    pump(ep);
    return r;
}

void httpc_cancel(httpc_req_t *r)
{
    httpc_ep_t *ep = r->ep;
    if (r->conn) {
        conn_t *c = r->conn;
        c->active = NULL;
        c->dead = true;
        if (r->evreq)
            evhttp_cancel_request(r->evreq);
        reap_soon(ep->h);
    } else {
        queue_remove(ep, r);
    }
    req_free(r);
}
