/*
 * conn.c - the TCP transport of one client: a bufferevent whose callbacks
 * feed the session (broker/session.c) and report its end.
 *
 * Reading is paused only by the session's state; writing is libevent's:
 * everything a loop iteration queues for a client leaves in as few
 * syscalls as the kernel allows.
 */
#include "../broker/internal.h"

#include "starling/log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

static void on_read(struct bufferevent *bev, void *arg)
{
    sess_on_input(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    sess_t *s = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state == SESS_NEW)
            sess_close(s, 0, "no CONNECT within connect_timeout");
        else
            sess_close(s, MQTT_RC_KEEPALIVE_TIMEOUT, "keepalive timeout");
        return;
    }
    if (what & BEV_EVENT_EOF) {
        bool partial = evbuffer_get_length(bufferevent_get_input(bev)) > 0;
        const char *why = partial ? "connection closed by client in the "
                                    "middle of a packet"
                          : s->state == SESS_NEW
                              ? "connection closed by client before CONNECT"
                              : "connection closed by client";
        sess_on_transport_closed(s, why);
    } else if (what & BEV_EVENT_ERROR) {
        sess_on_transport_closed(s, "connection error");
    }
}

static void on_flushed(struct bufferevent *bev, void *arg)
{
    sess_on_transport_closed(arg, NULL);
}

void conn_close_after_flush(sess_t *s)
{
    struct bufferevent *bev = s->bev;
    bufferevent_disable(bev, EV_READ);
    bufferevent_set_timeouts(bev, NULL, NULL);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        sess_on_transport_closed(s, NULL);
        return;
    }
    /* The write callback runs when the output has drained; an error or
     * EOF on the way closes too. */
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, NULL, on_flushed, on_event, s);
    bufferevent_enable(bev, EV_WRITE);
}

int conn_attach(sess_t *s, int connect_timeout)
{
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    struct timeval tv = {connect_timeout, 0};
    bufferevent_set_timeouts(s->bev, &tv, NULL);
    return bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}
