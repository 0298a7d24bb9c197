/*
 * tls.h - OpenSSL for the TLS listener (private to src/net/).
 *
 * tls.c holds everything that speaks OpenSSL: the listener's SSL_CTX, built
 * once at start from the tls_* keys, and the non-blocking handshake, read
 * and write steps of one connection. conn.c decides when to call them and
 * what an outcome means for the session; it sees only the TLS_IO_* results.
 */
#ifndef STARLING_NET_TLS_H
#define STARLING_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "starling/conf.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
struct evbuffer;

typedef enum {
    TLS_IO_OK = 0,     /* done (handshake) or bytes moved (read, write) */
    TLS_IO_WANT_READ,  /* wait until the socket is readable, then retry */
    TLS_IO_WANT_WRITE, /* wait until the socket is writable, then retry */
    TLS_IO_EOF,        /* the peer closed the connection */
    TLS_IO_ERROR,      /* fatal; the reason is in the caller's err buffer */
} tls_io_t;

/*
 * The SSL_CTX of the TLS listener, from tls_cert_file, tls_key_file,
 * tls_ca_file, tls_require_client_cert, tls_min_version and tls_ciphers.
 * Every file is read here, so a missing or unreadable certificate or key,
 * a key that does not match the certificate or a bad cipher list stops the
 * start with a message naming the key and the file (SL_EINVAL).
 */
int tls_ctx_new(const sl_conf_t *c, SSL_CTX **out, char *err, size_t errlen);
void tls_ctx_free(SSL_CTX *ctx);

/* A server-side SSL on a connected non-blocking socket; NULL if out of
 * memory. */
SSL *tls_new(SSL_CTX *ctx, int fd);
/* Free; `notify` sends a close_notify first (never after a fatal error). */
void tls_free(SSL *ssl, bool notify);

/* One step of the server handshake. */
tls_io_t tls_handshake(SSL *ssl, char *err, size_t errlen);
/* Decrypt up to len bytes into buf; *n is set on TLS_IO_OK. */
tls_io_t tls_read(SSL *ssl, void *buf, size_t len, size_t *n, char *err,
                  size_t errlen);
/* Are decrypted or read-ahead bytes waiting inside OpenSSL? (The socket
 * will not signal them.) */
bool tls_pending(SSL *ssl);
/* Encrypt and send the front of `out` (one record of up to 16 KiB per
 * call), draining what was sent. TLS_IO_OK means some bytes left. */
tls_io_t tls_write(SSL *ssl, struct evbuffer *out, char *err, size_t errlen);
/* The TLS version and cipher agreed, for the log ("TLSv1.3
 * TLS_AES_256_GCM_SHA384"). */
void tls_describe(SSL *ssl, char *buf, size_t len);

#endif
