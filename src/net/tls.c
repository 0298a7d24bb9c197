/*
 * tls.c - OpenSSL for the TLS listener: its SSL_CTX and the non-blocking
 * steps of one connection (see tls.h).
 *
 * One SSL_CTX per listener, built at start. Choices made there:
 *   - SSL_MODE_RELEASE_BUFFERS: OpenSSL frees a connection's record buffers
 *     while it has nothing buffered, so an idle TLS client costs its SSL
 *     object, not two 16 KiB buffers.
 *   - read ahead: one read(2) takes in as many records as the buffer holds
 *     (the caller drains tls_pending(), which the socket will not signal).
 *   - partial writes and a moving write buffer: the output evbuffer is
 *     pulled up again for a retry after WANT_WRITE, maybe at a new address
 *     and longer (same first bytes), which OpenSSL allows in this mode.
 *   - SSL_OP_IGNORE_UNEXPECTED_EOF: a client that closes its socket without
 *     a close_notify is an ordinary end (MQTT packets carry their length,
 *     so a cut-off packet is still noticed by the session), not an error.
 *   - no server-side session cache (a storm of short connections would
 *     fill it); TLS session tickets stay on, so clients can still resume.
 */
#include "tls.h"

#include "starling/err.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* Largest TLS record payload: one SSL_write per record. */
#define RECORD_MAX 16384

/* The reason of the oldest error queued by OpenSSL ("wrong version
 * number"), or `fallback`. Empties the queue. */
static void ssl_reason(char *err, size_t errlen, const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(err, errlen, "%s", r);
    else if (e)
        ERR_error_string_n(e, err, errlen);
    else
        snprintf(err, errlen, "%s", fallback);
    ERR_clear_error();
}

/* Can the file be opened for reading? Gives a message naming the key. */
static int check_file(const sl_conf_t *c, const char *key, const char *path,
                      char *err, size_t errlen)
{
    if (!path) {
        snprintf(err, errlen, "%s is set but %s is not",
                 c->tls_port ? "tls_port" : "wss_port", key);
        return SL_EINVAL;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s '%s': cannot open: %s", key, path,
                 strerror(errno));
        return SL_EINVAL;
    }
    fclose(f);
    return SL_OK;
}

static int load_files(SSL_CTX *ctx, const sl_conf_t *c, char *err,
                      size_t errlen)
{
    char why[160];
    if (check_file(c, "tls_cert_file", c->tls_cert_file, err, errlen) ||
        check_file(c, "tls_key_file", c->tls_key_file, err, errlen))
        return SL_EINVAL;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert_file) != 1) {
        ssl_reason(why, sizeof(why), "unknown error");
        snprintf(err, errlen, "tls_cert_file '%s': no usable PEM "
                 "certificate: %s", c->tls_cert_file, why);
        return SL_EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key_file,
                                    SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) ==
                        X509_R_KEY_VALUES_MISMATCH;
        ssl_reason(why, sizeof(why), "unknown error");
        if (mismatch)
            snprintf(err, errlen, "tls_key_file '%s' does not match "
                     "tls_cert_file '%s'", c->tls_key_file, c->tls_cert_file);
        else
            snprintf(err, errlen, "tls_key_file '%s': no usable PEM private "
                     "key: %s", c->tls_key_file, why);
        return SL_EINVAL;
    }
    return SL_OK;
}

/* Client certificates: asked for when tls_ca_file is set, required with
 * tls_require_client_cert. */
static int load_client_ca(SSL_CTX *ctx, const sl_conf_t *c, char *err,
                          size_t errlen)
{
    char why[160];
    if (!c->tls_ca_file) {
        if (c->tls_require_client_cert) {
            snprintf(err, errlen, "tls_require_client_cert needs "
                     "tls_ca_file (the CAs client certificates are checked "
                     "against)");
            return SL_EINVAL;
        }
        return SL_OK;
    }
    if (check_file(c, "tls_ca_file", c->tls_ca_file, err, errlen))
        return SL_EINVAL;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls_ca_file);
    if (SSL_CTX_load_verify_locations(ctx, c->tls_ca_file, NULL) != 1 ||
        !names) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        ssl_reason(why, sizeof(why), "no certificate in the file");
        snprintf(err, errlen, "tls_ca_file '%s': no usable PEM CA "
                 "certificate: %s", c->tls_ca_file, why);
        return SL_EINVAL;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER |
                           (c->tls_require_client_cert
                                ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                : 0),
                       NULL);
    return SL_OK;
}

int tls_ctx_new(const sl_conf_t *c, SSL_CTX **out, char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "starling";
    char why[160];
    int rc = SL_EINVAL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_reason(why, sizeof(why), "out of memory");
        snprintf(err, errlen, "TLS: cannot create a context: %s", why);
        return SL_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, c->tls_min_version == TLS_MIN_1_3
                                           ? TLS1_3_VERSION
                                           : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                              SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (c->tls_ciphers && SSL_CTX_set_cipher_list(ctx, c->tls_ciphers) != 1) {
        ssl_reason(why, sizeof(why), "no cipher matches");
        snprintf(err, errlen, "tls_ciphers '%s': %s", c->tls_ciphers, why);
        goto fail;
    }
    if (load_files(ctx, c, err, errlen) != SL_OK ||
        load_client_ca(ctx, c, err, errlen) != SL_OK)
        goto fail;
    *out = ctx;
    return SL_OK;
fail:
    SSL_CTX_free(ctx);
    return rc;
}

void tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

SSL *tls_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

void tls_free(SSL *ssl, bool notify)
{
    if (!ssl)
        return;
    if (notify) {
        /* One non-blocking attempt; the socket is closed right after. */
        ERR_clear_error();
        SSL_shutdown(ssl);
        ERR_clear_error();
    }
    SSL_free(ssl);
}

/* What a failed SSL_* call (result r) means. The error queue is per thread
 * and shared with the HTTPS client: every call here clears it first. */
static tls_io_t outcome(SSL *ssl, int r, char *err, size_t errlen)
{
    int saved = errno;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        snprintf(err, errlen, "connection closed");
        return TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error()) {
            ssl_reason(err, errlen, "TLS error");
            return TLS_IO_ERROR;
        }
        if (r == 0 || saved == 0) {
            snprintf(err, errlen, "connection closed");
            return TLS_IO_EOF;
        }
        snprintf(err, errlen, "%s", strerror(saved));
        return TLS_IO_ERROR;
    case SSL_ERROR_SSL:
        ssl_reason(err, errlen, "TLS error");
        return TLS_IO_ERROR;
    default:
        ssl_reason(err, errlen, "unexpected TLS state");
        return TLS_IO_ERROR;
    }
}

tls_io_t tls_handshake(SSL *ssl, char *err, size_t errlen)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return TLS_IO_OK;
    return outcome(ssl, r, err, errlen);
}

tls_io_t tls_read(SSL *ssl, void *buf, size_t len, size_t *n, char *err,
                  size_t errlen)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (r > 0) {
        *n = (size_t)r;
        return TLS_IO_OK;
    }
    return outcome(ssl, r, err, errlen);
}

bool tls_pending(SSL *ssl)
{
    return SSL_has_pending(ssl) == 1;
}

tls_io_t tls_write(SSL *ssl, struct evbuffer *out, char *err, size_t errlen)
{
    size_t len = evbuffer_get_length(out);
    if (len > RECORD_MAX)
        len = RECORD_MAX;
    unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)len);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return TLS_IO_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(ssl, p, (int)len);
    if (r > 0) {
        evbuffer_drain(out, (size_t)r);
        return TLS_IO_OK;
    }
    return outcome(ssl, r, err, errlen);
}

void tls_describe(SSL *ssl, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
}
