/*
 * conn.c - the transport of one client (TCP, TLS over TCP, WebSocket over
 * either), kept small for idle clients.
 *
 * A connection is a socket, one embedded libevent event and two evbuffers
 * that exist only while they hold bytes: an idle client costs the event and
 * this struct, not two buffers and a bufferevent.
 *
 * Reading: each read lands in a stack buffer and complete packets are fed to
 * the owner straight from it (ops->input); only what the owner did not use
 * (the tail of a packet that has not fully arrived) is kept, in `in`.
 * While the owner has paused the connection (waiting for the store or an
 * authorization answer) reading stops, so a client cannot make the broker
 * buffer without bound.
 *
 * Writing: the owner appends to `out` (payloads of shared messages by
 * reference) and the connection is put on the net's flush list; one
 * event at the end of the loop iteration writes every dirty connection, so
 * everything a loop iteration produced for a client leaves in one syscall.
 * A connection whose socket is full waits for EV_WRITE.
 *
 * TLS is a variant of the same connection (tls_conn_t: the struct below
 * plus an SSL*), so a plain TCP client pays nothing for it. The SSL object
 * sits directly on the non-blocking socket rather than on memory BIOs:
 * with memory BIOs every byte would be copied once more between our
 * buffers and OpenSSL's, and each connection would keep two BIO buffers
 * that do not shrink by themselves, while on the socket OpenSSL releases
 * its record buffers whenever they are empty (SSL_MODE_RELEASE_BUFFERS),
 * so an idle TLS client costs its SSL object (about 16 KB, as under
 * Mosquitto; twice that with the buffers kept). The batching is kept:
 * output still collects in `out` during the loop iteration and leaves at
 * the flush, one TLS record (one write) per 16 KiB. SSL_ERROR_WANT_READ /
 * WANT_WRITE re-arm the one event for the direction OpenSSL needs. The
 * handshake runs first, under the connect_timeout deadline that also
 * covers CONNECT; a failure closes the connection (CONN_END_HANDSHAKE), is
 * logged and counted (net_stats, $SYS/broker/tls/handshake_errors).
 *
 * WebSocket (ws_port, and wss_port over TLS) is a third variant: ws.c
 * decodes frames in the read buffer before the owner sees the bytes and
 * frames the owner's output when it is written (see ws.h).
 *
 * Lifetime: the owner frees the connection (conn_free), usually from its
 * `closed` callback, which may run inside one of the connection's own
 * calls; the struct is then freed when the outermost of them returns
 * (`busy`), and every call checks `ended` after a callback.
 */
#include "conn_int.h"

#include "starling/log.h"
#include "tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes read per read(2); complete packets in it are handled in place. */
#define READ_CHUNK 16384
/* A connection closing waits this long for its peer to read the output. */
#define CLOSE_FLUSH_SECONDS 10

static void on_io(evutil_socket_t fd, short what, void *arg);

static void rearm(conn_t *c)
{
    short what = EV_PERSIST;
    tls_conn_t *t = tls_of(c);
    if (c->freed)
        return;
    if (c->reading || (t && t->write_wants_read))
        what |= EV_READ;
    if (c->want_write)
        what |= EV_WRITE;
    if (c->added) {
        event_del(&c->ev);
        c->added = false;
    }
    if (!(what & (EV_READ | EV_WRITE)) && !c->has_timeout)
        return;
    event_assign(&c->ev, c->net->base, c->fd, what, on_io, c);
    if (event_add(&c->ev, c->has_timeout ? &c->timeout : NULL) == 0)
        c->added = true;
}

/* ---- life cycle -------------------------------------------------------- */

static void enter(conn_t *c)
{
    c->busy++;
}

/* Leave one of the connection's own calls; false when it is over (and
 * freed, when this was the outermost call). */
static bool leave(conn_t *c)
{
    bool alive = !c->ended && !c->freed;
    if (--c->busy == 0 && c->freed)
        free(c);
    return alive;
}

void conn_end(conn_t *c, conn_end_t how, const char *why)
{
    if (c->ended)
        return;
    c->ended = true;
    c->reading = false;
    c->want_write = false;
    c->ops->closed(c->owner, how, why);
}

conn_t *conn_new_plain(net_t *n, evutil_socket_t fd)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->net = n;
    c->fd = fd;
    return c;
}

conn_t *conn_new_tls(net_t *n, evutil_socket_t fd, SSL_CTX *ctx)
{
    tls_conn_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ssl = tls_new(ctx, fd);
    if (!t->ssl) {
        free(t);
        return NULL;
    }
    t->c.net = n;
    t->c.fd = fd;
    t->c.tls = true;
    return &t->c;
}

/* A WebSocket connection, over TLS when ctx is set. */
conn_t *conn_new_ws(net_t *n, evutil_socket_t fd, SSL_CTX *ctx)
{
    conn_t *c;
    if (ctx) {
        wss_conn_t *w = calloc(1, sizeof(*w));
        if (!w)
            return NULL;
        w->t.ssl = tls_new(ctx, fd);
        if (!w->t.ssl) {
            free(w);
            return NULL;
        }
        c = &w->t.c;
        c->tls = true;
    } else {
        ws_conn_t *w = calloc(1, sizeof(*w));
        if (!w)
            return NULL;
        c = &w->c;
    }
    c->net = n;
    c->fd = fd;
    c->ws = true;
    return c;
}

void conn_attach(conn_t *c, const conn_ops_t *ops, void *owner,
                 const char *peer)
{
    c->ops = ops;
    c->owner = owner;
    c->peer = peer;
}

const char *conn_kind(const conn_t *c)
{
    if (c->ws)
        return c->tls ? "wss" : "ws";
    return c->tls ? "tls" : "tcp";
}

static void unlink_dirty(conn_t *c)
{
    if (!c->dirty)
        return;
    for (conn_t **p = &c->net->dirty; *p; p = &(*p)->next_dirty) {
        if (*p == c) {
            *p = c->next_dirty;
            break;
        }
    }
    c->dirty = false;
}

void conn_free(conn_t *c)
{
    if (!c || c->freed)
        return;
    if (c->added)
        event_del(&c->ev);
    c->added = false;
    unlink_dirty(c);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->in = c->out = NULL;
    if (c->ws)
        ws_release(c);
    tls_conn_t *t = tls_of(c);
    if (t)
        tls_free(t->ssl, t->ready && !t->failed);
    evutil_closesocket(c->fd);
    c->ended = true;
    c->freed = true;
    if (c->busy == 0)
        free(c);
}

void conn_start(conn_t *c, uint64_t first_timeout_ms)
{
    c->reading = true;
    conn_set_timeout(c, first_timeout_ms);
}

void conn_set_timeout(conn_t *c, uint64_t ms)
{
    if (c->lingering || c->closing)
        return; /* their own deadline holds */
    c->has_timeout = ms > 0;
    c->timeout.tv_sec = (time_t)(ms / 1000);
    c->timeout.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    rearm(c);
}

/* ---- output ------------------------------------------------------------ */

void conn_mark_dirty(conn_t *c)
{
    if (c->dirty || c->want_write)
        return;
    c->dirty = true;
    c->next_dirty = c->net->dirty;
    c->net->dirty = c;
    net_flush_soon(c->net);
}

struct evbuffer *conn_wire(conn_t *c)
{
    if (!c->out)
        c->out = evbuffer_new();
    return c->out;
}

/* Where the owner's output goes: `out`, or for WebSocket the output that
 * is framed when written. */
static struct evbuffer *out_buf(conn_t *c)
{
    return c->ws ? ws_out_buf(c) : conn_wire(c);
}

void conn_write(conn_t *c, const void *p, size_t n)
{
    if (c->ended)
        return;
    struct evbuffer *out = out_buf(c);
    if (!out || evbuffer_add(out, p, n) != 0)
        return;
    conn_mark_dirty(c);
}

void conn_write_ref(conn_t *c, const void *p, size_t n,
                    void (*cleanup)(const void *, size_t, void *), void *arg)
{
    struct evbuffer *out = c->ended ? NULL : out_buf(c);
    if (!out || evbuffer_add_reference(out, p, n, cleanup, arg) != 0) {
        cleanup(p, n, arg);
        return;
    }
    conn_mark_dirty(c);
}

size_t conn_out_len(const conn_t *c)
{
    return (c->out ? evbuffer_get_length(c->out) : 0) +
           (c->ws ? ws_pending_len(c) : 0);
}

/* Outcome of pushing `out` into the socket. */
enum push { PUSH_DONE, PUSH_BLOCKED, PUSH_FAILED };

static enum push push_plain(conn_t *c, char *why, size_t len)
{
    while (c->out && evbuffer_get_length(c->out)) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                      errno == EINTR)) {
            if (!c->want_write) {
                c->want_write = true;
                rearm(c);
            }
            return PUSH_BLOCKED;
        }
        snprintf(why, len, "connection error while writing");
        return PUSH_FAILED;
    }
    return PUSH_DONE;
}

/* SSL_write may need the socket readable first (WANT_READ): then the event
 * waits for EV_READ, even while the owner has paused input. */
static enum push push_tls(conn_t *c, char *why, size_t len)
{
    tls_conn_t *t = tls_of(c);
    char err[160];
    while (c->out && evbuffer_get_length(c->out)) {
        switch (tls_write(t->ssl, c->out, err, sizeof(err))) {
        case TLS_IO_OK:
            continue;
        case TLS_IO_WANT_WRITE:
            if (!c->want_write) {
                c->want_write = true;
                rearm(c);
            }
            return PUSH_BLOCKED;
        case TLS_IO_WANT_READ:
            t->write_wants_read = true;
            c->want_write = false;
            rearm(c);
            return PUSH_BLOCKED;
        case TLS_IO_EOF:
            snprintf(why, len, "connection closed while writing");
            return PUSH_FAILED;
        case TLS_IO_ERROR:
            t->failed = true;
            snprintf(why, len, "TLS error while writing: %s", err);
            return PUSH_FAILED;
        }
    }
    return PUSH_DONE;
}

/*
 * The output of a closing connection is written. Closing now, with the
 * client still sending (a PUBREL for a PUBREC it is reading, say), would
 * make the kernel answer with a reset that may destroy the reason before
 * the client reads it. So the write side is shut (the client reads EOF
 * after the reason; TLS keeps its close_notify for the end) and input is
 * read and discarded until the client closes or close_linger ms pass.
 */
static bool linger(conn_t *c)
{
    int ms = c->net->conf->close_linger;
    if (ms <= 0 || c->lingering || (c->ws && !ws_wants_linger(c)))
        return false;
    if (!c->tls)
        shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->reading = true;
    c->want_write = false;
    c->has_timeout = true;
    c->timeout.tv_sec = ms / 1000;
    c->timeout.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    rearm(c);
    return true;
}

/* The close is complete (`how`: DONE or STALLED). When the WebSocket layer
 * started it (a client close, a protocol error), the owner learns that
 * instead. */
static void end_closed(conn_t *c, conn_end_t how)
{
    char why[200];
    if (c->ws && ws_closed_here(c, &how, why, sizeof(why)))
        conn_end(c, how, why[0] ? why : NULL);
    else
        conn_end(c, how, NULL);
}

/* One read of a lingering connection: > 0 bytes, 0 at EOF or an error,
 * -1 when nothing more is there now. A WebSocket connection over TLS reads
 * through OpenSSL, to see the client's close frame. */
static ssize_t linger_chunk(conn_t *c, uint8_t *buf, size_t len)
{
    tls_conn_t *t = tls_of(c);
    if (c->ws && t && t->ready && !t->failed) {
        char err[160];
        size_t n = 0;
        switch (tls_read(t->ssl, buf, len, &n, err, sizeof(err))) {
        case TLS_IO_OK:
            return (ssize_t)n;
        case TLS_IO_WANT_READ:
        case TLS_IO_WANT_WRITE: /* rare: the linger deadline ends it */
            return -1;
        case TLS_IO_ERROR:
            t->failed = true;
            return 0;
        case TLS_IO_EOF:
            return 0;
        }
    }
    ssize_t n = read(c->fd, buf, len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return -1;
    return n < 0 ? 0 : n;
}

/* Input of a lingering connection is discarded until EOF; a WebSocket
 * client's close frame (the close handshake done) ends it at once. */
static void linger_read(conn_t *c)
{
    uint8_t buf[4096];
    for (int i = 0; i < 64; i++) {
        ssize_t n = linger_chunk(c, buf, sizeof(buf));
        if (n < 0)
            return;
        if (n == 0 || (c->ws && ws_linger_input(c, buf, (size_t)n)))
            break; /* the client is gone, or said goodbye */
    }
    end_closed(c, CONN_END_DONE);
}

/* Write what can be written now. Returns false when the connection ended
 * (the owner has then been told) or lingers. */
static bool write_out(conn_t *c)
{
    char why[200];
    if (c->ws)
        ws_seal(c);
    enum push r = c->tls ? push_tls(c, why, sizeof(why))
                         : push_plain(c, why, sizeof(why));
    if (r == PUSH_BLOCKED)
        return true;
    if (r == PUSH_FAILED) {
        conn_end(c, CONN_END_ERROR, why);
        return false;
    }
    if (c->out) {
        evbuffer_free(c->out);
        c->out = NULL;
    }
    if (c->want_write) {
        c->want_write = false;
        rearm(c);
    }
    if (c->closing) {
        if (!linger(c))
            end_closed(c, CONN_END_DONE);
        return false;
    }
    return true;
}

/* The net's flush event: write every connection that got output during
 * this loop iteration. */
void conn_flush_list(net_t *n)
{
    conn_t *list = n->dirty;
    n->dirty = NULL;
    while (list) {
        conn_t *c = list;
        list = c->next_dirty;
        c->next_dirty = NULL;
        c->dirty = false;
        enter(c);
        write_out(c);
        leave(c);
    }
}

void conn_close(conn_t *c)
{
    if (c->ended || c->closing)
        return;
    c->reading = false;
    c->has_timeout = false;
    if (c->ws)
        ws_closing(c);
    c->closing = true;
    if (!conn_out_len(c)) {
        conn_end(c, CONN_END_DONE, NULL);
        return;
    }
    /* Bound the wait for a client that never reads. */
    c->has_timeout = true;
    c->timeout.tv_sec = CLOSE_FLUSH_SECONDS;
    c->timeout.tv_usec = 0;
    rearm(c);
    conn_mark_dirty(c);
}

/* ---- input ------------------------------------------------------------- */

void conn_pause(conn_t *c)
{
    if (c->paused)
        return;
    c->paused = true;
    if (c->reading && !c->closing && !c->lingering) {
        c->reading = false;
        rearm(c);
    }
}

/* Hand the kept input to the owner; false when the connection ended. */
static bool feed_kept(conn_t *c)
{
    if (c->in && evbuffer_get_length(c->in)) {
        size_t len = evbuffer_get_length(c->in);
        const uint8_t *p = evbuffer_pullup(c->in, -1);
        size_t used = c->ops->input(c->owner, p, len);
        if (c->ended || c->freed || c->closing)
            return false;
        evbuffer_drain(c->in, used);
    }
    if (c->in && !evbuffer_get_length(c->in)) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
    return true;
}

void conn_resume(conn_t *c)
{
    if (c->ended || c->closing || c->lingering)
        return;
    enter(c);
    c->paused = false;
    if (feed_kept(c) && !c->paused && !c->reading) {
        c->reading = true;
        rearm(c);
    }
    if (c->ws && !c->ended && !c->paused)
        ws_resumed(c);
    /* Records OpenSSL already read are not signalled by the socket. */
    tls_conn_t *t = tls_of(c);
    if (!c->ended && c->reading && t && t->ready && tls_pending(t->ssl))
        event_active(&c->ev, EV_READ, 1);
    leave(c);
}

bool conn_take_input(conn_t *c, const uint8_t *buf, size_t n)
{
    if (c->in) {
        if (evbuffer_add(c->in, buf, n) != 0) {
            conn_end(c, CONN_END_ERROR, "out of memory");
            return false;
        }
        return feed_kept(c) && !c->paused;
    }
    size_t used = c->ops->input(c->owner, buf, n);
    if (c->ended || c->freed || c->closing)
        return false;
    if (used < n) {
        c->in = evbuffer_new();
        if (!c->in || evbuffer_add(c->in, buf + used, n - used)) {
            conn_end(c, CONN_END_ERROR, "out of memory");
            return false;
        }
    }
    return !c->paused;
}

conn_end_t conn_eof_kind(const conn_t *c)
{
    return c->in ? CONN_END_EOF_PARTIAL : CONN_END_EOF;
}

static void on_readable(conn_t *c)
{
    uint8_t buf[READ_CHUNK];
    ssize_t n = read(c->fd, buf, sizeof(buf));
    if (n == 0) {
        conn_end(c, conn_eof_kind(c), NULL);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_end(c, CONN_END_ERROR, "connection error");
        return;
    }
    if (c->ws)
        ws_input(c, buf, (size_t)n);
    else
        conn_take_input(c, buf, (size_t)n);
}

/* Decrypt and feed until OpenSSL has nothing more already read (the socket
 * does not signal what read-ahead took in) or the owner pauses. */
static void on_readable_tls(conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    uint8_t buf[READ_CHUNK];
    char err[160], why[200];
    do {
        size_t n = 0;
        switch (tls_read(t->ssl, buf, sizeof(buf), &n, err, sizeof(err))) {
        case TLS_IO_OK:
            if (!(c->ws ? ws_input(c, buf, n) : conn_take_input(c, buf, n)))
                return;
            break;
        case TLS_IO_WANT_READ:
            return;
        case TLS_IO_WANT_WRITE:
            t->read_wants_write = true;
            c->want_write = true;
            rearm(c);
            return;
        case TLS_IO_EOF:
            conn_end(c, conn_eof_kind(c), NULL);
            return;
        case TLS_IO_ERROR:
            t->failed = true;
            snprintf(why, sizeof(why), "TLS error: %s", err);
            conn_end(c, CONN_END_ERROR, why);
            return;
        }
    } while (c->reading && tls_pending(t->ssl));
}

/* The TLS connection never got up: close it, log, count. */
static void handshake_failed(conn_t *c, tls_io_t r, const char *err)
{
    tls_conn_t *t = tls_of(c);
    t->failed = true;
    c->net->stats.tls_handshake_errors++;
    if (r == TLS_IO_EOF)
        log_debug("TLS handshake with %s: closed by the client", c->peer);
    else
        log_info("TLS handshake with %s failed: %s, closing", c->peer, err);
    conn_end(c, CONN_END_HANDSHAKE, NULL);
}

static void handshake_step(conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    char err[160];
    tls_io_t r = tls_handshake(t->ssl, err, sizeof(err));
    if (r == TLS_IO_EOF || r == TLS_IO_ERROR) {
        handshake_failed(c, r, err);
        return;
    }
    bool ww = r == TLS_IO_WANT_WRITE;
    if (ww != c->want_write) {
        c->want_write = ww;
        rearm(c);
    }
    if (r != TLS_IO_OK)
        return;
    t->ready = true;
    if (sl_log_level <= SL_LOG_DEBUG) {
        char desc[96];
        tls_describe(t->ssl, desc, sizeof(desc));
        log_debug("TLS handshake with %s done: %s", c->peer, desc);
    }
    /* The client's first records may have come with its Finished. */
    if (c->reading && tls_pending(t->ssl))
        on_readable_tls(c);
}

static void on_timeout(conn_t *c)
{
    tls_conn_t *t = tls_of(c);
    if (c->lingering)
        end_closed(c, CONN_END_DONE);
    else if (t && !t->ready)
        handshake_failed(c, TLS_IO_ERROR,
                         "no handshake within connect_timeout");
    else if (c->closing)
        end_closed(c, CONN_END_STALLED);
    else
        c->ops->timeout(c->owner);
}

static void on_io_tls(conn_t *c, short what)
{
    tls_conn_t *t = tls_of(c);
    if (!t->ready) {
        handshake_step(c);
        return;
    }
    bool read_now = (what & EV_READ) && c->reading;
    if ((what & EV_READ) && t->write_wants_read) {
        t->write_wants_read = false;
        rearm(c);
        if (!write_out(c))
            return;
    }
    if (what & EV_WRITE) {
        if (t->read_wants_write) {
            t->read_wants_write = false;
            read_now = c->reading;
        }
        if (!write_out(c))
            return;
    }
    if (read_now && c->reading && !c->ended)
        on_readable_tls(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    enter(c);
    if (what & EV_TIMEOUT) {
        on_timeout(c);
    } else if (c->lingering) {
        if (what & EV_READ)
            linger_read(c);
    } else if (c->tls) {
        on_io_tls(c, what);
    } else {
        if (what & EV_WRITE)
            write_out(c);
        if ((what & EV_READ) && c->reading && !c->ended)
            on_readable(c);
    }
    leave(c);
}
