/*
 * bench.h - shared types of starling-bench, the MQTT load generator.
 *
 * The bench runs one event_base per worker thread. Every MQTT client
 * (client_t) belongs to exactly one worker and is touched only by that
 * worker's thread. The main thread drives the run through phases
 * (bench_t.phase): it publishes the phase with a release store, the workers
 * poll it from a short timer and act on it, and report progress through
 * per-worker counters that only their own thread writes.
 *
 *   SETUP    connect every client the scenario needs; subscribers subscribe
 *            (persistent subscribers of the persist scenario then leave)
 *   RUN      publishers publish; connstorm opens and closes connections
 *   REJOIN   persist only: the persistent subscribers come back and drain
 *   STOP     every client sends DISCONNECT and closes
 *   CLEANUP  persist and ppairs: the persistent clients connect once with a
 *            clean session so the broker forgets them
 *   EXIT     the workers leave their loops
 *
 * Payloads of at least BENCH_HDR_SIZE bytes start with the publisher number,
 * its sequence number and the send time, so subscribers count loss,
 * duplicates and reordering per publisher and measure end-to-end latency.
 */
#ifndef STARLING_BENCH_H
#define STARLING_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct event;
struct bufferevent;
struct evbuffer;
struct ssl_ctx_st;

#define BENCH_HDR_SIZE 16 /* u32 publisher, u32 sequence, u64 send time */
#define BENCH_MAX_SIZE (16u * 1024 * 1024)
#define BENCH_TOPIC_MAX 256

typedef enum {
    SC_PAIRS,
    SC_FANIN,
    SC_FANOUT,
    SC_WILDCARD,
    SC_CONNSTORM,
    SC_IDLE,
    SC_PERSIST,
    SC_CROSSNODE,
    SC_PPAIRS,
} scenario_t;

typedef enum {
    PH_SETUP = 1,
    PH_RUN,
    PH_REJOIN,
    PH_STOP,
    PH_CLEANUP,
    PH_EXIT,
} phase_t;

/* ---- latency histogram (hist.c) ---------------------------------------- */

/*
 * Log-linear buckets over nanoseconds: exact below 128 ns, then 64 buckets
 * per power of two (relative error under 1.6%) up to about 2^43 ns.
 */
#define HIST_SUB_BITS 6
#define HIST_BUCKETS (128 + 37 * 64)

typedef struct hist {
    uint64_t count;
    uint64_t max;
    double sum;
    uint64_t bucket[HIST_BUCKETS];
} hist_t;

void hist_add(hist_t *h, uint64_t v);
void hist_merge(hist_t *into, const hist_t *from);
/* Value at quantile q (0..1), in the histogram's unit; 0 when empty. */
uint64_t hist_quantile(const hist_t *h, double q);

/* ---- options ------------------------------------------------------------- */

typedef struct bench_opts {
    scenario_t scenario;
    const char *scenario_name;
    const char *host;
    int port;
    const char *sub_host;
    int sub_port;
    int version;       /* 4 or 5 */
    int qos;           /* 0..2 */
    int clients;       /* connstorm: total connections; idle: held */
    int pubs;
    int subs;
    long msgs;         /* per publisher; 0 = use duration */
    double duration;   /* s: publishing time, or idle hold time */
    double rate;       /* offered msgs/s per publisher; 0 = unpaced */
    int inflight;      /* QoS>0 publisher window */
    int backlog;       /* deliveries sent but not yet received, all
                          publishers together; 0 = no bound */
    int size;          /* payload bytes */
    int threads;
    int broker_pid;    /* 0 = not measured */
    bool json;
    double timeout;    /* s: hard bound of the whole run */
    int keepalive;     /* s */
    int concurrency;   /* outstanding connection attempts */
    int src_addrs;     /* 127.0.0.x source addresses to spread over */
    bool same_topic;   /* fanin: every publisher on one topic */
    bool strict;       /* any loss (even QoS 0) fails the run */
    bool tls;          /* MQTT over TLS (every client) */
    bool ws;           /* MQTT over WebSocket (with tls: secure WebSocket) */
    const char *ws_path; /* the upgrade's path ("/mqtt") */
    const char *cafile; /* verify the broker against these CAs; NULL =
                           no verification */
    double settle;     /* s between setup and run */
    double drain;      /* s without progress that ends the drain */
    char prefix[64];   /* topic prefix keeping concurrent runs apart */
} bench_opts_t;

/* ---- clients (client.c) -------------------------------------------------- */

typedef enum {
    CS_IDLE = 0,    /* no connection */
    CS_CONNECTING,  /* TCP connect under way */
    CS_CONNACK,     /* CONNECT sent */
    CS_SUBACK,      /* SUBSCRIBE sent */
    CS_READY,
    CS_CLOSING,     /* DISCONNECT sent, waiting for the broker to close */
} client_state_t;

typedef struct pub {
    uint32_t id;          /* publisher number, carried in the payload */
    char topic[BENCH_TOPIC_MAX];
    uint16_t topic_len;
    uint64_t target;      /* messages to send; 0 = until the deadline */
    uint64_t sent;
    uint64_t acked;
    uint64_t t_start;     /* ns: publishing began (pacing reference) */
    uint32_t inflight;
    uint32_t window;      /* QoS>0 packet id window (server receive max) */
    uint32_t fan;         /* subscribers whose filter matches the topic */
    uint64_t backlog;     /* deliveries it may be ahead; 0 = no bound */
    _Atomic uint64_t delivered; /* unique deliveries, by subscriber threads */
    uint64_t seen;        /* delivered, at the last look */
    uint64_t t_progress;  /* ns: delivered last moved */
    int64_t written_off;  /* deliveries given up on (broker dropped them) */
    uint8_t *await;       /* QoS>0: ids awaiting PUBACK / PUBREC (bitmap) */
    uint8_t *await_comp;  /* QoS 2: ids awaiting PUBCOMP (bitmap) */
    bool stopped;         /* sends nothing more */
    bool done;            /* stopped and every flow completed */
} pub_t;

/* Sequence numbers seen from one publisher by one subscriber. */
typedef struct track {
    uint32_t pub_id;
    uint32_t cap;         /* bits */
    uint32_t next;        /* highest sequence seen + 1 */
    uint8_t *bits;
} track_t;

typedef struct sub {
    char filter[BENCH_TOPIC_MAX];
    uint16_t filter_len;
    track_t *tracks;      /* one per matching publisher, by pub_id */
    uint32_t ntracks;
    uint8_t *q2;          /* QoS 2 ids received, PUBREL pending (bitmap) */
    uint8_t granted;      /* QoS granted in SUBACK */
    uint64_t received;    /* PUBLISH packets counted as deliveries */
    uint64_t unique;
    uint64_t dups;
    uint64_t reordered;
    uint64_t unexpected;  /* from a publisher whose topic does not match */
} sub_t;

typedef struct client {
    struct worker *w;
    uint32_t index;
    char id[48];
    struct bufferevent *bev;
    client_state_t state;
    bool to_sub_addr;     /* connect to --sub-host/--sub-port */
    bool clean;
    bool subscribe;       /* SUBSCRIBE after CONNACK */
    bool once;            /* DISCONNECT as soon as set up */
    bool need_session;    /* CONNACK must report a session present */
    bool failed;
    bool stepped;         /* counted in the current phase step */
    bool ws_upgrading;    /* --ws: the 101 is awaited */
    uint16_t next_pid;
    uint64_t t_state;     /* ns: entered the current state */
    uint64_t t_connect;   /* ns: connection attempt began */
    uint64_t last_tx;
    uint64_t ping_sent;   /* ns; 0 = none outstanding */
    pub_t *pub;
    sub_t *sub;
} client_t;

/* ---- workers ------------------------------------------------------------- */

typedef struct worker {
    struct bench *b;
    int index;
    pthread_t thread;
    struct event_base *base;
    struct event *tick;
    struct event *sweep;
    struct event *pump;   /* deferred: start more connections */
    client_t **clients;
    uint32_t nclients;
    client_t **pubs;
    uint32_t npubs;
    int phase_seen;
    uint32_t cursor;      /* next client the connect pump looks at */
    uint32_t pending;     /* connection attempts under way */
    uint32_t conc;        /* bound on pending */
    uint32_t storm_quota; /* connstorm: connections this worker makes */
    uint32_t storm_started;
    uint8_t *scratch;
    size_t scratch_cap;
    hist_t *lat;          /* delivery latency, ns */
    hist_t *conn_lat;     /* CONNECT -> CONNACK, ns */
    uint64_t last_rx;     /* ns of the last delivery */
    char first_error[160];

    /* Written by this worker only; read by the main thread. */
    _Atomic uint64_t step_done;  /* clients that finished the phase step */
    _Atomic uint64_t pubs_done;
    _Atomic uint64_t sent;
    _Atomic uint64_t received;
    _Atomic uint64_t unique;
    _Atomic uint64_t connects;   /* CONNACKs accepted */
    _Atomic uint64_t errors;
    _Atomic uint64_t open;       /* connections currently open */
} worker_t;

typedef struct bench {
    bench_opts_t o;
    struct sockaddr_in addr;
    struct sockaddr_in sub_addr;
    client_t *clients;
    uint32_t nclients;
    pub_t *pubs;
    uint32_t npubs;
    sub_t *subs;
    uint32_t nsubs;
    worker_t *workers;
    _Atomic int phase;
    _Atomic uint64_t t_deadline; /* ns: publishers stop (duration mode) */
    uint8_t *payload_fill;
    struct ssl_ctx_st *ssl_ctx;  /* --tls: shared by every worker (SSL_new
                                    is thread-safe on one SSL_CTX) */
} bench_t;

uint64_t bench_now(void);

/* Worker counters have a single writer (the worker's thread): a load and a
 * release store, no read-modify-write. The main thread loads with acquire. */
static inline void bench_count_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_release);
}

static inline void bench_count_sub(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_release);
}

static inline uint64_t bench_count_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_acquire);
}

/* The client side of --tls (client.c): an SSL_CTX verifying against
 * o->cafile, or not verifying without one. NULL with a message on stderr. */
struct ssl_ctx_st *client_tls_ctx(const bench_opts_t *o);
/* The client side of --ws (ws.c): write the upgrade request on bev; check
 * the answer in `in` (0: more needed, 1: upgraded, the head drained, -1:
 * refused, why says so); put the WebSocket framing on top of bev (freed
 * with it). */
void ws_client_request(struct bufferevent *bev, const char *host, int port,
                       const char *path);
int ws_client_reply(struct evbuffer *in, char *why, size_t len);
struct bufferevent *ws_client_wrap(struct bufferevent *under);
/* Start a connection attempt for c with its current flags. */
int client_start(client_t *c);
/* Begin a graceful close (DISCONNECT, then wait for the broker to close). */
void client_stop(client_t *c);
/* Drop the connection at once. */
void client_drop(client_t *c);
/* Send what the publisher may send now (pacing, window, buffer space). */
void client_pub_pump(client_t *c, uint64_t now);
/* Keepalive and state timeouts; called about once a second. */
void client_sweep(client_t *c, uint64_t now);

/* Worker side of the phases (worker.c). */
void *worker_main(void *arg);
int worker_init(worker_t *w, bench_t *b, int index);
void worker_fini(worker_t *w);
/* Called by a client when it finished its step of the current phase. */
void worker_step_done(worker_t *w, client_t *c);
/* Called when a connection attempt is no longer pending. */
void worker_pending_done(worker_t *w, client_t *c);

/* Scenario construction and result checks (scenario.c). */
int scenario_parse(const char *name, scenario_t *out);
/* Fill the options left unset (negative) with the scenario's defaults;
 * SL_EINVAL with a message on stderr for a combination that cannot run. */
int scenario_defaults(bench_opts_t *o);
int scenario_build(bench_t *b);
void scenario_free(bench_t *b);
/* Does a topic filter match a topic name (independent of the broker's)? */
bool scenario_filter_match(const char *filter, const char *topic);
/* Number of clients the given phase step waits for. */
uint32_t scenario_step_count(const bench_t *b, phase_t ph);
/* Should this client take part in the given phase step? */
bool scenario_in_step(const bench_t *b, const client_t *c, phase_t ph);
/* Set the client's flags for a phase step. */
void scenario_prepare(const bench_t *b, client_t *c, phase_t ph);

#endif
