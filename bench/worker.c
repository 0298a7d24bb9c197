/*
 * worker.c - one thread of starling-bench: an event_base and its clients.
 *
 * The worker never waits on the main thread. A short timer (the tick) reads
 * the phase the main thread published and does that phase's work for its
 * own clients: start connections (at most `conc` attempts at a time), pace
 * publishers, open and close connections in a connection storm, close
 * everything, leave the loop. A one-second sweep runs keepalive and the
 * per-state timeouts. Progress goes back through the worker's counters.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "starling/err.h"

#include "bench.h"

#define TICK_US 1000

static bool is_storm(const worker_t *w)
{
    return w->b->o.scenario == SC_CONNSTORM;
}

static int phase_now(const worker_t *w)
{
    return atomic_load_explicit(&w->b->phase, memory_order_acquire);
}

/* SETUP, REJOIN, CLEANUP: walk the client list once, keeping at most
 * `conc` attempts under way. */
static void connect_pump(worker_t *w, int ph)
{
    while (w->pending < w->conc && w->cursor < w->nclients) {
        client_t *c = w->clients[w->cursor++];
        if (!scenario_in_step(w->b, c, (phase_t)ph))
            continue;
        scenario_prepare(w->b, c, (phase_t)ph);
        c->stepped = false;
        if (client_start(c) < 0 && !c->bev && !c->stepped) {
            bench_count_add(&w->errors, 1);
            worker_step_done(w, c);
        }
    }
}

/* RUN of connstorm: every idle slot starts its next connection. */
static void storm_pump(worker_t *w)
{
    for (uint32_t i = 0; i < w->nclients; i++) {
        client_t *c = w->clients[i];
        if (c->bev || w->storm_started >= w->storm_quota)
            continue;
        scenario_prepare(w->b, c, PH_RUN);
        c->stepped = false;
        w->storm_started++;
        if (client_start(c) < 0 && !c->bev && !c->stepped) {
            bench_count_add(&w->errors, 1);
            worker_step_done(w, c);
        }
    }
}

static void pubs_pump(worker_t *w)
{
    uint64_t now = bench_now();
    for (uint32_t i = 0; i < w->npubs; i++)
        client_pub_pump(w->pubs[i], now);
}

static void stop_all(worker_t *w)
{
    for (uint32_t i = 0; i < w->nclients; i++)
        client_stop(w->clients[i]);
}

static void enter_phase(worker_t *w, int ph)
{
    w->cursor = 0;
    if (ph == PH_STOP)
        stop_all(w);
}

static void work(worker_t *w)
{
    int ph = phase_now(w);
    if (ph != w->phase_seen) {
        w->phase_seen = ph;
        enter_phase(w, ph);
    }
    switch (ph) {
    case PH_SETUP:
    case PH_REJOIN:
    case PH_CLEANUP:
        connect_pump(w, ph);
        break;
    case PH_RUN:
        if (is_storm(w))
            storm_pump(w);
        else
            pubs_pump(w);
        break;
    case PH_EXIT:
        event_base_loopbreak(w->base);
        break;
    default:
        break;
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    work(arg);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    uint64_t now = bench_now();
    (void)fd;
    (void)what;
    for (uint32_t i = 0; i < w->nclients; i++)
        client_sweep(w->clients[i], now);
}

void worker_step_done(worker_t *w, client_t *c)
{
    if (c->stepped)
        return;
    c->stepped = true;
    bench_count_add(&w->step_done, 1);
    if (is_storm(w))
        event_active(w->pump, 0, 0);
}

void worker_pending_done(worker_t *w, client_t *c)
{
    (void)c;
    if (w->pending > 0)
        w->pending--;
    event_active(w->pump, 0, 0);
}

/* A base for this thread alone (no locking); epoll's changelist folds the
 * add/remove of write interest that every flushed buffer causes. */
static struct event_base *new_base(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

int worker_init(worker_t *w, bench_t *b, int index)
{
    const bench_opts_t *o = &b->o;
    struct timeval tick = {0, TICK_US};
    struct timeval sec = {1, 0};

    w->b = b;
    w->index = index;
    w->conc = (uint32_t)(o->concurrency / o->threads);
    if (w->conc < 1)
        w->conc = 1;
    w->lat = calloc(1, sizeof(hist_t));
    w->conn_lat = calloc(1, sizeof(hist_t));
    w->base = new_base();
    if (!w->lat || !w->conn_lat || !w->base)
        return SL_ENOMEM;
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->sweep = event_new(w->base, -1, EV_PERSIST, sweep_cb, w);
    w->pump = event_new(w->base, -1, 0, tick_cb, w);
    if (!w->tick || !w->sweep || !w->pump)
        return SL_ENOMEM;
    event_add(w->tick, &tick);
    event_add(w->sweep, &sec);
    return SL_OK;
}

void worker_fini(worker_t *w)
{
    for (uint32_t i = 0; i < w->nclients; i++)
        client_drop(w->clients[i]);
    if (w->tick)
        event_free(w->tick);
    if (w->sweep)
        event_free(w->sweep);
    if (w->pump)
        event_free(w->pump);
    if (w->base)
        event_base_free(w->base);
    free(w->lat);
    free(w->conn_lat);
    free(w->clients);
    free(w->pubs);
    free(w->scratch);
    memset(w, 0, sizeof(*w));
}

void *worker_main(void *arg)
{
    worker_t *w = arg;
    event_base_dispatch(w->base);
    for (uint32_t i = 0; i < w->nclients; i++)
        client_drop(w->clients[i]);
    return NULL;
}
