/*
 * httpc.h - a small asynchronous HTTP/1.1 client with keep-alive pools.
 *
 * Used by auth.c (auth and ACL endpoints) and hooks.c (webhooks). Built on
 * libevent's evhttp client; https:// goes through bufferevent_openssl.
 *
 * Each endpoint (scheme, host, port) has a pool of at most max_conns
 * connections, each carrying one request at a time and kept open between
 * requests. Requests beyond that wait in the endpoint's FIFO, so many
 * concurrent requests never block the loop and never open more sockets.
 * A connection that failed, timed out or was closed by the server is
 * discarded and a fresh one is opened for the next request (a TLS session
 * is never reused after a close). A request that fails on a reused
 * connection before any answer (the server closed it while idle) is tried
 * once more on a fresh one.
 *
 * Each request has a deadline that includes its time in the queue. Its
 * callback runs exactly once, from the loop, unless httpc_cancel() or
 * httpc_free() was called first.
 */
#ifndef STARLING_HTTPC_H
#define STARLING_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct httpc httpc_t;
typedef struct httpc_ep httpc_ep_t;
typedef struct httpc_req httpc_req_t;

typedef struct httpc_opts {
    bool tls_verify;    /* check the server certificate and host name */
    const char *cafile; /* PEM CA bundle; NULL = the system's */
    int max_conns;      /* per endpoint; 0 = 16 */
} httpc_opts_t;

/* A parsed http:// or https:// URL (heap strings). */
typedef struct httpc_url {
    bool tls;
    char *host; /* without brackets for IPv6 */
    int port;   /* 80 / 443 when absent */
    char *path; /* path and query, at least "/" */
} httpc_url_t;

/* Extra request headers ("Name: value; Name2: value2" parsed). */
typedef struct httpc_headers {
    char **names;
    char **values;
    size_t n;
} httpc_headers_t;

typedef struct httpc_resp {
    int err;          /* SL_OK (status and body valid), SL_ETIMEOUT, SL_EIO */
    int status;       /* HTTP status; 0 when err != SL_OK */
    const char *body; /* valid during the callback only; not NUL-terminated */
    size_t len;
} httpc_resp_t;

typedef void (*httpc_done_fn)(void *arg, const httpc_resp_t *r);

typedef enum {
    HTTPC_GET = 0,
    HTTPC_POST = 1,
} httpc_method_t;

/* SL_OK, or SL_EINVAL / SL_ENOMEM / SL_EIO (cafile unreadable) with a
 * message in err. */
int httpc_new(httpc_t **out, struct event_base *base, const httpc_opts_t *o,
              char *err, size_t errlen);
/* Close every connection; pending requests are dropped without callback. */
void httpc_free(httpc_t *h);

/* Pure: SL_OK or SL_EINVAL. */
int httpc_url_parse(httpc_url_t *u, const char *url);
void httpc_url_fini(httpc_url_t *u);

/* Pure: parse "Name: value; Name2: value2" (NULL or "" = none). SL_OK,
 * SL_EINVAL or SL_ENOMEM. */
int httpc_headers_parse(httpc_headers_t *h, const char *spec);
void httpc_headers_fini(httpc_headers_t *h);

/* The endpoint of url (created on first use, owned by h); *path gets the
 * URL's path and query (owned by the endpoint, one per URL). NULL with a
 * message in err for a bad URL or no memory. */
httpc_ep_t *httpc_endpoint(httpc_t *h, const char *url, const char **path,
                           char *err, size_t errlen);

/*
 * Send a request: path (with query), extra headers (may be NULL), a body
 * of len bytes with Content-Type ctype (body may be NULL). The body is
 * copied. Returns the request (for httpc_cancel), or NULL when out of
 * memory (done is then not called).
 */
httpc_req_t *httpc_request(httpc_ep_t *ep, httpc_method_t m, const char *path,
                           const httpc_headers_t *hdrs, const char *ctype,
                           const void *body, size_t len, int timeout_ms,
                           httpc_done_fn done, void *arg);

/* Drop a pending request; its callback will not run. Not from inside that
 * callback. */
void httpc_cancel(httpc_req_t *r);

#endif
