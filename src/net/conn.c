/*
 * conn.c - the TCP transport of one client, kept small for idle clients.
 *
 * A connection is a socket, one embedded libevent event and two evbuffers
 * that exist only while they hold bytes: an idle client costs the event and
 * this struct, not two buffers and a bufferevent.
 *
 * Reading: each read lands in a stack buffer and complete packets are fed to
 * the session straight from it (sess_feed); only the tail of a packet that
 * has not fully arrived is kept, in `in`. While the session is paused
 * (waiting for the store) reading stops, so a client cannot make the broker
 * buffer without bound.
 *
 * Writing: the session appends to `out` (payloads of shared messages by
 * reference) and the connection is put on the broker's flush list; one
 * event at the end of the loop iteration writes every dirty connection, so
 * everything a loop iteration produced for a client leaves in one syscall.
 * A connection whose socket is full waits for EV_WRITE.
 */
#include "../broker/internal.h"

#include "starling/log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes read per read(2); complete packets in it are handled in place. */
#define READ_CHUNK 16384

struct conn {
    broker_t *b;
    sess_t *s;
    evutil_socket_t fd;
    struct event ev;             /* EV_READ (+EV_WRITE while blocked) */
    struct evbuffer *in;         /* partial packet; NULL when empty */
    struct evbuffer *out;        /* pending output; NULL when empty */
    struct conn *next_dirty;
    struct timeval timeout;
    bool has_timeout;
    bool reading;
    bool want_write;
    bool dirty;
    bool closing;                /* close once `out` is written */
    bool added;
};

static void on_io(evutil_socket_t fd, short what, void *arg);

static void rearm(conn_t *c)
{
    short what = EV_PERSIST;
    if (c->reading)
        what |= EV_READ;
    if (c->want_write)
        what |= EV_WRITE;
    if (c->added) {
        event_del(&c->ev);
        c->added = false;
    }
    if (!(what & (EV_READ | EV_WRITE)) && !c->has_timeout)
        return;
    event_assign(&c->ev, c->b->base, c->fd, what, on_io, c);
    if (event_add(&c->ev, c->has_timeout ? &c->timeout : NULL) == 0)
        c->added = true;
}

conn_t *conn_new(broker_t *b, evutil_socket_t fd, sess_t *s)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->b = b;
    c->s = s;
    c->fd = fd;
    return c;
}

void conn_free(conn_t *c)
{
    if (!c)
        return;
    if (c->added)
        event_del(&c->ev);
    if (c->dirty) {
        /* Unlink from the broker's flush list. */
        for (conn_t **p = &c->b->dirty; *p; p = &(*p)->next_dirty) {
            if (*p == c) {
                *p = c->next_dirty;
                break;
            }
        }
    }
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    free(c);
}

int conn_start(conn_t *c, int connect_timeout)
{
    c->reading = true;
    conn_set_timeout(c, (uint64_t)connect_timeout * 1000u);
    return c->added ? 0 : -1;
}

void conn_set_timeout(conn_t *c, uint64_t ms)
{
    c->has_timeout = ms > 0;
    c->timeout.tv_sec = (time_t)(ms / 1000);
    c->timeout.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    rearm(c);
}

/* ---- output ------------------------------------------------------------ */

static void mark_dirty(conn_t *c)
{
    if (c->dirty || c->want_write)
        return;
    c->dirty = true;
    c->next_dirty = c->b->dirty;
    c->b->dirty = c;
    event_active(c->b->flush, EV_WRITE, 0);
}

static struct evbuffer *out_buf(conn_t *c)
{
    if (!c->out)
        c->out = evbuffer_new();
    return c->out;
}

void conn_write(conn_t *c, const void *p, size_t n)
{
    struct evbuffer *out = out_buf(c);
    if (!out || evbuffer_add(out, p, n) != 0)
        return;
    mark_dirty(c);
}

void conn_write_ref(conn_t *c, const void *p, size_t n,
                    void (*cleanup)(const void *, size_t, void *), void *arg)
{
    struct evbuffer *out = out_buf(c);
    if (!out || evbuffer_add_reference(out, p, n, cleanup, arg) != 0) {
        cleanup(p, n, arg);
        return;
    }
    mark_dirty(c);
}

size_t conn_out_len(const conn_t *c)
{
    return c->out ? evbuffer_get_length(c->out) : 0;
}

/* Write what can be written now. Returns false when the connection failed
 * (the session has then been told). */
static bool write_out(conn_t *c)
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
            return true;
        }
        sess_on_transport_closed(c->s, "connection error while writing");
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
        sess_on_transport_closed(c->s, NULL);
        return false;
    }
    return true;
}

/* The broker's flush event: write every connection that got output during
 * this loop iteration. */
void conn_flush_all(broker_t *b)
{
    conn_t *list = b->dirty;
    b->dirty = NULL;
    while (list) {
        conn_t *c = list;
        list = c->next_dirty;
        c->next_dirty = NULL;
        c->dirty = false;
        sess_t *s = c->s;
        sess_ref(s);
        write_out(c);
        sess_unref(&s);
    }
}

void conn_close_after_flush(sess_t *s)
{
    conn_t *c = s->conn;
    c->reading = false;
    c->has_timeout = false;
    c->closing = true;
    if (!conn_out_len(c)) {
        sess_on_transport_closed(s, NULL);
        return;
    }
    /* Bound the wait for a client that never reads. */
    c->has_timeout = true;
    c->timeout.tv_sec = 10;
    c->timeout.tv_usec = 0;
    rearm(c);
    mark_dirty(c);
}

/* ---- input ------------------------------------------------------------- */

/* Feed buffered input (after a pause, or leftovers of earlier reads). */
void conn_resume(conn_t *c)
{
    sess_t *s = c->s;
    if (c->closing)
        return;
    if (c->in && evbuffer_get_length(c->in)) {
        size_t len = evbuffer_get_length(c->in);
        const uint8_t *p = evbuffer_pullup(c->in, -1);
        size_t used = sess_feed(s, p, len);
        if (s->conn != c || s->state >= SESS_CLOSING)
            return;
        evbuffer_drain(c->in, used);
    }
    if (c->in && !evbuffer_get_length(c->in)) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
    bool want = !s->paused && s->state != SESS_CLAIMING;
    if (want != c->reading) {
        c->reading = want;
        rearm(c);
    }
}

static void on_readable(conn_t *c)
{
    sess_t *s = c->s;
    uint8_t buf[READ_CHUNK];
    ssize_t n = read(c->fd, buf, sizeof(buf));
    if (n == 0) {
        const char *why = c->in ? "connection closed by client in the "
                                  "middle of a packet"
                          : s->state == SESS_NEW
                              ? "connection closed by client before CONNECT"
                              : "connection closed by client";
        sess_on_transport_closed(s, why);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            sess_on_transport_closed(s, "connection error");
        return;
    }
    if (c->in) {
        if (evbuffer_add(c->in, buf, (size_t)n) != 0) {
            sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
            return;
        }
        conn_resume(c);
        return;
    }
    size_t used = sess_feed(s, buf, (size_t)n);
    if (s->conn != c || s->state >= SESS_CLOSING)
        return;
    if (used < (size_t)n) {
        c->in = evbuffer_new();
        if (!c->in || evbuffer_add(c->in, buf + used, (size_t)n - used)) {
            sess_close(s, MQTT_RC_UNSPECIFIED, "out of memory");
            return;
        }
    }
    if (s->paused || s->state == SESS_CLAIMING) {
        c->reading = false;
        rearm(c);
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    sess_t *s = c->s;
    sess_ref(s);
    if (what & EV_TIMEOUT) {
        if (c->closing)
            sess_on_transport_closed(s, "client did not read its output");
        else if (s->state == SESS_NEW)
            sess_close(s, 0, "no CONNECT within connect_timeout");
        else
            sess_close(s, MQTT_RC_KEEPALIVE_TIMEOUT, "keepalive timeout");
    } else {
        if ((what & EV_WRITE) && s->conn == c)
            write_out(c);
        if ((what & EV_READ) && s->conn == c && c->reading)
            on_readable(c);
    }
    sess_unref(&s);
}
