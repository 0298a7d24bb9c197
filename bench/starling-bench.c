/*
 * starling-bench - an MQTT 3.1.1 / 5.0 load generator.
 *
 *   starling-bench --scenario pairs --port 1883 --qos 1 --pairs 10 \
 *                  --msgs 10000 --broker-pid $(pidof starling) [--json]
 *
 * Runs one scenario (scenario.c) against a broker with --threads event
 * loops (worker.c), then prints what was sent and delivered, loss,
 * duplicates, end-to-end latency quantiles (hist.c), the broker's CPU time
 * and memory (from /proc/<broker-pid>), and exits non-zero when the
 * delivery guarantees of the QoS were broken or the run hit --timeout.
 *
 * This file is the main thread: options, the phase sequence, the report.
 * It only sleeps, reads the workers' counters and publishes the next
 * phase; it never touches a client.
 *
 * Exit status: 0 ok; 1 guarantees broken (QoS 1/2 loss, QoS 2 duplicates,
 * deliveries to the wrong subscriber, nothing delivered at all, --strict
 * loss) or client errors;
 * 2 timed out; 64 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "starling/err.h"

#include "bench.h"

#define EXIT_VIOLATION 1
#define EXIT_TIMEOUT 2
#define EXIT_USAGE 64
#define POLL_NS 1000000ull      /* main loop poll interval */
#define STOP_GRACE_S 3.0

/* What the main thread measured, for the report. */
typedef struct result {
    uint64_t t_setup, t_run, t_pub_end, t_rejoin, t_end, t_last_rx;
    uint64_t sent, received, unique, expected, lost, dups, reordered;
    uint64_t unexpected, connects, errors;
    double broker_cpu, bench_cpu;
    long rss_before, rss_after;
    bool timed_out, setup_failed;
    uint8_t min_granted;
    hist_t lat, conn_lat;
    char error[160];      /* first client error, if any */
} result_t;

uint64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull),
                          (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* ---- the broker, through /proc ------------------------------------------ */

static double proc_cpu(int pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    /* After "pid (comm)": state is field 3, utime 14, stime 15. */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = 0;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    for (int i = 0; i < 64 && fgets(line, sizeof(line), f); i++) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    }
    fclose(f);
    return kb;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- options ------------------------------------------------------------- */

static void usage(FILE *out)
{
    fputs(
        "usage: starling-bench --scenario NAME [options]\n"
        "scenarios: pairs fanin fanout wildcard connstorm idle persist "
        "ppairs crossnode\n"
        "  --host H --port P          broker (127.0.0.1:1883)\n"
        "  --sub-host H --sub-port P  crossnode: broker of the subscribers\n"
        "  --version 4|5              MQTT 3.1.1 or 5.0 (4)\n"
        "  --qos 0|1|2                (0; persist, ppairs: 1)\n"
        "  --pairs N                  pairs/ppairs/crossnode: publisher+subscriber "
        "pairs\n"
        "  --pubs N --subs N          publishers, subscribers\n"
        "  --clients N                connstorm: connections to make; idle: "
        "to hold\n"
        "  --msgs N                   messages per publisher\n"
        "  --duration S               publish for S seconds (idle: hold time)\n"
        "  --rate R                   msgs/s per publisher (0 = unpaced)\n"
        "  --inflight N               QoS>0 publisher window (10)\n"
        "  --backlog N                deliveries the publishers may be ahead\n"
        "                             of the subscribers (5000 unpaced; 0 = "
        "off)\n"
        "  --size B                   payload bytes (64; >= 16 carries "
        "latency)\n"
        "  --threads N                event loops (2)\n"
        "  --broker-pid PID           read broker CPU and RSS from /proc\n"
        "  --timeout S                hard bound of the run (60 + duration)\n"
        "  --keepalive S              (30)\n"
        "  --concurrency N            connection attempts at once; connstorm "
        "slots (100)\n"
        "  --src-addrs N              spread over 127.0.0.1..N (auto)\n"
        "  --same-topic               fanin: all publishers on one topic\n"
        "  --settle S                 pause between setup and run\n"
        "  --drain S                  end the drain after S s without "
        "progress\n"
        "  --prefix P                 topic prefix (sb/<pid>)\n"
        "  --strict                   any loss fails the run, even at QoS 0\n"
        "  --tls                      MQTT over TLS (every client; a full\n"
        "                             handshake per connection)\n"
        "  --cafile FILE              --tls, verifying the broker's\n"
        "                             certificate against FILE (no\n"
        "                             verification without it)\n"
        "  --ws                       MQTT over WebSocket (every client; the\n"
        "                             upgrade counts in the CONNECT time;\n"
        "                             with --tls: secure WebSocket)\n"
        "  --wss                      MQTT over secure WebSocket (--ws --tls)\n"
        "  --ws-path P                the upgrade's path (/mqtt)\n"
        "  --json                     print one JSON line\n",
        out);
}

enum {
    O_SCENARIO = 256, O_HOST, O_PORT, O_SUBHOST, O_SUBPORT, O_VERSION, O_QOS,
    O_PAIRS, O_PUBS, O_SUBS, O_CLIENTS, O_MSGS, O_DURATION, O_RATE,
    O_INFLIGHT, O_SIZE, O_THREADS, O_PID, O_TIMEOUT, O_KEEPALIVE, O_CONC,
    O_SRC, O_SAME, O_SETTLE, O_DRAIN, O_PREFIX, O_STRICT, O_JSON, O_HELP,
    O_BACKLOG, O_TLS, O_CAFILE, O_WS, O_WSS, O_WSPATH,
};

static const struct option long_opts[] = {
    {"scenario", 1, 0, O_SCENARIO}, {"host", 1, 0, O_HOST},
    {"port", 1, 0, O_PORT},         {"sub-host", 1, 0, O_SUBHOST},
    {"sub-port", 1, 0, O_SUBPORT},  {"version", 1, 0, O_VERSION},
    {"qos", 1, 0, O_QOS},           {"pairs", 1, 0, O_PAIRS},
    {"pubs", 1, 0, O_PUBS},         {"subs", 1, 0, O_SUBS},
    {"clients", 1, 0, O_CLIENTS},   {"msgs", 1, 0, O_MSGS},
    {"duration", 1, 0, O_DURATION}, {"rate", 1, 0, O_RATE},
    {"inflight", 1, 0, O_INFLIGHT}, {"size", 1, 0, O_SIZE},
    {"threads", 1, 0, O_THREADS},   {"broker-pid", 1, 0, O_PID},
    {"timeout", 1, 0, O_TIMEOUT},   {"keepalive", 1, 0, O_KEEPALIVE},
    {"concurrency", 1, 0, O_CONC},  {"src-addrs", 1, 0, O_SRC},
    {"same-topic", 0, 0, O_SAME},   {"settle", 1, 0, O_SETTLE},
    {"drain", 1, 0, O_DRAIN},       {"prefix", 1, 0, O_PREFIX},
    {"strict", 0, 0, O_STRICT},     {"json", 0, 0, O_JSON},
    {"help", 0, 0, O_HELP},         {"backlog", 1, 0, O_BACKLOG},
    {"tls", 0, 0, O_TLS},           {"cafile", 1, 0, O_CAFILE},
    {"ws", 0, 0, O_WS},             {"wss", 0, 0, O_WSS},
    {"ws-path", 1, 0, O_WSPATH},    {0, 0, 0, 0},
};

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return SL_EINVAL;
    *out = v;
    return SL_OK;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi))
        return SL_EINVAL;
    *out = v;
    return SL_OK;
}

static void opts_init(bench_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 1883;
    o->version = 4;
    o->qos = o->pubs = o->subs = o->clients = -1;
    o->msgs = -1;
    o->duration = -1;
    o->inflight = 10;
    o->backlog = -1;
    o->size = 64;
    o->threads = 2;
    o->keepalive = 30;
    o->settle = o->drain = -1;
    o->ws_path = "/mqtt";
}

/* Options that take an integer: where it goes and its bounds. */
static int set_int_opt(bench_opts_t *o, int id, const char *arg)
{
    long v;
    struct {
        int id;
        long lo, hi;
        int *dst;
    } t[] = {
        {O_PORT, 1, 65535, &o->port},       {O_SUBPORT, 1, 65535, &o->sub_port},
        {O_VERSION, 4, 5, &o->version},     {O_QOS, 0, 2, &o->qos},
        {O_PUBS, 1, 1000000, &o->pubs},     {O_SUBS, 1, 1000000, &o->subs},
        {O_CLIENTS, 1, 10000000, &o->clients},
        {O_INFLIGHT, 1, 65535, &o->inflight},
        {O_BACKLOG, 0, 100000000, &o->backlog},
        {O_SIZE, 0, BENCH_MAX_SIZE, &o->size},
        {O_THREADS, 1, 64, &o->threads},    {O_PID, 1, 1 << 30, &o->broker_pid},
        {O_KEEPALIVE, 0, 65535, &o->keepalive},
        {O_CONC, 1, 1000000, &o->concurrency},
        {O_SRC, 1, 250, &o->src_addrs},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (t[i].id != id)
            continue;
        if (parse_int(arg, t[i].lo, t[i].hi, &v) < 0)
            return SL_EINVAL;
        *t[i].dst = (int)v;
        return SL_OK;
    }
    return SL_ENOTFOUND;
}

static int set_opt(bench_opts_t *o, int id, const char *arg)
{
    long v;
    int rc = set_int_opt(o, id, arg);
    if (rc != SL_ENOTFOUND)
        return rc;
    switch (id) {
    case O_SCENARIO:
        o->scenario_name = arg;
        return scenario_parse(arg, &o->scenario);
    case O_HOST:
        o->host = arg;
        return SL_OK;
    case O_SUBHOST:
        o->sub_host = arg;
        return SL_OK;
    case O_PAIRS:
        rc = parse_int(arg, 1, 1000000, &v);
        o->pubs = o->subs = (int)v;
        return rc;
    case O_MSGS:
        rc = parse_int(arg, 1, 2000000000L, &v);
        o->msgs = v;
        return rc;
    case O_DURATION:
        return parse_num(arg, 0.001, 86400, &o->duration);
    case O_RATE:
        return parse_num(arg, 0, 1e9, &o->rate);
    case O_TIMEOUT:
        return parse_num(arg, 0.1, 86400, &o->timeout);
    case O_SETTLE:
        return parse_num(arg, 0, 3600, &o->settle);
    case O_DRAIN:
        return parse_num(arg, 0.01, 3600, &o->drain);
    case O_PREFIX:
        if (strlen(arg) >= sizeof(o->prefix) || strpbrk(arg, "+#"))
            return SL_EINVAL;
        strcpy(o->prefix, arg);
        return SL_OK;
    case O_SAME:
        o->same_topic = true;
        return SL_OK;
    case O_STRICT:
        o->strict = true;
        return SL_OK;
    case O_JSON:
        o->json = true;
        return SL_OK;
    case O_TLS:
        o->tls = true;
        return SL_OK;
    case O_CAFILE:
        o->cafile = arg;
        o->tls = true;
        return SL_OK;
    case O_WS:
        o->ws = true;
        return SL_OK;
    case O_WSS:
        o->ws = o->tls = true;
        return SL_OK;
    case O_WSPATH:
        if (arg[0] != '/' || strpbrk(arg, " \r\n"))
            return SL_EINVAL;
        o->ws_path = arg;
        return SL_OK;
    default:
        return SL_EINVAL;
    }
}

static int opts_parse(bench_opts_t *o, int argc, char **argv)
{
    int id;
    opts_init(o);
    while ((id = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        if (id == 'h' || id == O_HELP) {
            usage(stdout);
            exit(0);
        }
        if (id == '?' || set_opt(o, id, optarg) < 0) {
            if (id != '?')
                fprintf(stderr, "starling-bench: bad value for %s: '%s'\n",
                        argv[optind - 1 - (optarg == argv[optind - 1])],
                        optarg ? optarg : "");
            return SL_EINVAL;
        }
    }
    if (optind < argc || !o->scenario_name) {
        fprintf(stderr, "starling-bench: --scenario is required\n");
        return SL_EINVAL;
    }
    return scenario_defaults(o);
}

static int resolve(const char *host, int port, struct sockaddr_in *out)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return SL_EINVAL;
    memcpy(out, res->ai_addr, sizeof(*out));
    out->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return SL_OK;
}

/* Enough descriptors for every client plus some. */
static void raise_nofile(const bench_opts_t *o, uint32_t nclients)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)nclients + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want && !o->json)
        fprintf(stderr, "starling-bench: only %lu descriptors for %u clients\n",
                (unsigned long)rl.rlim_cur, nclients);
}

/* ---- the phase sequence ------------------------------------------------- */

static uint64_t sum(const bench_t *b, size_t offset)
{
    uint64_t s = 0;
    for (int i = 0; i < b->o.threads; i++) {
        _Atomic uint64_t *c =
            (_Atomic uint64_t *)((char *)&b->workers[i] + offset);
        s += bench_count_get(c);
    }
    return s;
}

#define SUM(b, field) sum((b), offsetof(worker_t, field))

static void set_phase(bench_t *b, phase_t ph)
{
    atomic_store_explicit(&b->phase, ph, memory_order_release);
}

static bool past(uint64_t deadline)
{
    return bench_now() >= deadline;
}

/* Wait until `target` clients finished the step; false on timeout or when
 * a client failed. */
static bool wait_step(bench_t *b, uint64_t base, uint32_t target,
                      uint64_t deadline, result_t *r)
{
    while (SUM(b, step_done) - base < target) {
        if (past(deadline)) {
            r->timed_out = true;
            return false;
        }
        if (SUM(b, errors) > 0)
            return false;
        sleep_ns(POLL_NS);
    }
    return SUM(b, errors) == 0;
}

static bool run_step(bench_t *b, phase_t ph, uint64_t deadline, result_t *r)
{
    uint64_t base = SUM(b, step_done);
    uint32_t n = scenario_step_count(b, ph);
    set_phase(b, ph);
    return wait_step(b, base, n, deadline, r);
}

/* Messages each subscriber should get, now that every publisher is done. */
static uint64_t expected_total(const bench_t *b)
{
    uint64_t n = 0;
    for (uint32_t j = 0; j < b->nsubs; j++) {
        const sub_t *s = &b->subs[j];
        for (uint32_t k = 0; k < s->ntracks; k++)
            n += b->pubs[s->tracks[k].pub_id].sent;
    }
    return n;
}

/* Wait for publishers to finish (every flow acknowledged). */
static void wait_pubs(bench_t *b, uint64_t deadline, result_t *r)
{
    while (SUM(b, pubs_done) < b->npubs && !past(deadline))
        sleep_ns(POLL_NS);
    if (SUM(b, pubs_done) < b->npubs)
        r->timed_out = true;
    r->t_pub_end = bench_now();
}

/* Wait for every expected delivery, or `drain` seconds without progress. */
static void wait_drain(bench_t *b, uint64_t expected, uint64_t deadline,
                       result_t *r)
{
    uint64_t last = SUM(b, unique), t_last = bench_now();
    uint64_t idle = (uint64_t)(b->o.drain * 1e9);
    while (last < expected && !past(deadline)) {
        sleep_ns(POLL_NS);
        uint64_t now_u = SUM(b, unique);
        if (now_u != last) {
            last = now_u;
            t_last = bench_now();
        } else if (bench_now() - t_last > idle) {
            return;
        }
    }
    if (last < expected && past(deadline))
        r->timed_out = true;
}

static void wait_closed(bench_t *b, double grace)
{
    uint64_t until = bench_now() + (uint64_t)(grace * 1e9);
    while (SUM(b, open) > 0 && !past(until))
        sleep_ns(POLL_NS);
}

static void measure_start(bench_t *b, result_t *r)
{
    r->broker_cpu = proc_cpu(b->o.broker_pid);
    r->bench_cpu = self_cpu();
    if (r->rss_before == 0)
        r->rss_before = proc_rss_kb(b->o.broker_pid);
    r->t_run = bench_now();
}

static void measure_end(bench_t *b, result_t *r)
{
    r->t_end = bench_now();
    r->broker_cpu = proc_cpu(b->o.broker_pid) - r->broker_cpu;
    r->bench_cpu = self_cpu() - r->bench_cpu;
    r->rss_after = proc_rss_kb(b->o.broker_pid);
}

/* Idle: hold the connections, measuring the broker's memory once settled. */
static void run_idle(bench_t *b, uint64_t deadline, result_t *r)
{
    sleep_ns((uint64_t)(1e9 * (b->o.settle > 0 ? b->o.settle : 1.0)));
    r->rss_after = proc_rss_kb(b->o.broker_pid);
    uint64_t until = bench_now() + (uint64_t)(b->o.duration * 1e9);
    while (!past(until) && !past(deadline) && SUM(b, errors) == 0)
        sleep_ns(10 * POLL_NS);
    long rss = r->rss_after;
    measure_end(b, r);
    r->rss_after = rss;
}

static void run_messages(bench_t *b, uint64_t deadline, result_t *r)
{
    if (b->o.duration > 0 && b->o.msgs == 0)
        atomic_store_explicit(&b->t_deadline,
                              bench_now() + (uint64_t)(b->o.duration * 1e9),
                              memory_order_release);
    set_phase(b, PH_RUN);
    wait_pubs(b, deadline, r);
    r->expected = expected_total(b);
    if (b->o.scenario == SC_PERSIST) {
        r->t_rejoin = bench_now();
        if (!run_step(b, PH_REJOIN, deadline, r)) {
            r->setup_failed = true;
            return;
        }
    }
    wait_drain(b, r->expected, deadline, r);
    measure_end(b, r);
}

static void run(bench_t *b, result_t *r)
{
    uint64_t deadline = bench_now() + (uint64_t)(b->o.timeout * 1e9);

    r->rss_before = proc_rss_kb(b->o.broker_pid);
    if (b->o.scenario == SC_CONNSTORM) {
        measure_start(b, r);
        if (!run_step(b, PH_RUN, deadline, r) && !r->timed_out)
            r->setup_failed = true;
        measure_end(b, r);
        goto stop;
    }
    r->t_setup = bench_now();
    if (!run_step(b, PH_SETUP, deadline, r)) {
        r->setup_failed = true;
        goto stop;
    }
    if (b->o.settle > 0 && b->o.scenario != SC_IDLE)
        sleep_ns((uint64_t)(b->o.settle * 1e9));
    measure_start(b, r);
    if (b->o.scenario == SC_IDLE)
        run_idle(b, deadline, r);
    else
        run_messages(b, deadline, r);
stop:
    set_phase(b, PH_STOP);
    wait_closed(b, STOP_GRACE_S);
    if (b->o.scenario == SC_PERSIST || b->o.scenario == SC_PPAIRS) {
        /* Best effort: the broker forgets the persistent sessions. */
        result_t ignore;
        memset(&ignore, 0, sizeof(ignore));
        run_step(b, PH_CLEANUP, bench_now() + 10000000000ull, &ignore);
        wait_closed(b, STOP_GRACE_S);
    }
    set_phase(b, PH_EXIT);
}

/* ---- results ------------------------------------------------------------- */

static void collect(bench_t *b, result_t *r)
{
    r->min_granted = 2;
    for (uint32_t j = 0; j < b->nsubs; j++) {
        const sub_t *s = &b->subs[j];
        uint64_t exp = 0;
        for (uint32_t k = 0; k < s->ntracks; k++)
            exp += b->pubs[s->tracks[k].pub_id].sent;
        r->received += s->received;
        r->unique += s->unique;
        r->dups += s->dups;
        r->reordered += s->reordered;
        r->unexpected += s->unexpected;
        if (exp > s->unique)
            r->lost += exp - s->unique;
        if (s->granted < r->min_granted)
            r->min_granted = s->granted;
    }
    r->expected = expected_total(b);
    for (int i = 0; i < b->o.threads; i++) {
        worker_t *w = &b->workers[i];
        hist_merge(&r->lat, w->lat);
        hist_merge(&r->conn_lat, w->conn_lat);
        if (w->last_rx > r->t_last_rx)
            r->t_last_rx = w->last_rx;
        r->sent += bench_count_get(&w->sent);
        r->connects += bench_count_get(&w->connects);
        r->errors += bench_count_get(&w->errors);
        if (r->error[0] == '\0' && w->first_error[0] != '\0')
            memcpy(r->error, w->first_error, sizeof(r->error));
    }
}

static double rate(double n, uint64_t from, uint64_t to)
{
    return to > from ? n / secs(to - from) : 0;
}

/* Why the run failed, or NULL. */
static const char *verdict(const bench_t *b, const result_t *r)
{
    int qos = b->o.qos < r->min_granted ? b->o.qos : r->min_granted;
    if (r->timed_out)
        return "timed out";
    if (r->setup_failed || r->errors > 0)
        return "client errors";
    if (r->unexpected > 0)
        return "deliveries to a subscriber whose filter does not match";
    if (b->o.scenario == SC_CONNSTORM || b->o.scenario == SC_IDLE)
        return r->connects < (uint64_t)b->o.clients ? "connections missing"
                                                     : NULL;
    if (r->expected > 0 && r->unique == 0)
        return "nothing delivered";
    if (r->lost > 0 && (qos > 0 || b->o.strict))
        return "messages lost";
    if (r->dups > 0 && qos == 2)
        return "duplicates at QoS 2";
    return NULL;
}

typedef struct figures {
    double sent_rate, delivered_rate, connect_rate, persisted_rate;
    double drain_rate, rss_per_conn, elapsed;
} figures_t;

static void figures(const bench_t *b, const result_t *r, figures_t *f)
{
    memset(f, 0, sizeof(*f));
    uint64_t from = b->o.scenario == SC_PERSIST ? r->t_rejoin : r->t_run;
    f->elapsed = secs(r->t_end - r->t_run);
    f->sent_rate = rate((double)r->sent, r->t_run, r->t_pub_end);
    f->delivered_rate = rate((double)r->received, from, r->t_last_rx);
    if (b->o.scenario == SC_CONNSTORM)
        f->connect_rate = rate((double)r->connects, r->t_run, r->t_end);
    if (b->o.scenario == SC_IDLE)
        f->connect_rate = rate((double)r->connects, r->t_setup, r->t_run);
    if (b->o.scenario == SC_PERSIST) {
        f->persisted_rate = rate((double)r->expected, r->t_run, r->t_pub_end);
        f->drain_rate = f->delivered_rate;
    }
    if (b->o.scenario == SC_IDLE && r->connects > 0 && r->rss_before > 0)
        f->rss_per_conn = (double)(r->rss_after - r->rss_before) * 1024.0 /
                          (double)r->connects;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void print_json(const bench_t *b, const result_t *r, const figures_t *f,
                       const char *why)
{
    const bench_opts_t *o = &b->o;
    printf("{\"scenario\":\"%s\",\"version\":%d,\"qos\":%d,\"pubs\":%u,"
           "\"subs\":%u,\"clients\":%d,\"msgs\":%ld,\"duration\":%g,"
           "\"size\":%d,\"rate\":%g,\"inflight\":%d,\"backlog\":%d,"
           "\"threads\":%d,\"tls\":%s,\"ws\":%s,",
           o->scenario_name, o->version, o->qos, b->npubs, b->nsubs,
           o->clients, o->msgs, o->duration, o->size, o->rate, o->inflight,
           o->backlog, o->threads, o->tls ? "true" : "false",
           o->ws ? "true" : "false");
    printf("\"sent\":%llu,\"expected\":%llu,\"received\":%llu,\"unique\":%llu,"
           "\"lost\":%llu,\"dups\":%llu,\"reordered\":%llu,\"unexpected\":%llu,",
           (unsigned long long)r->sent, (unsigned long long)r->expected,
           (unsigned long long)r->received, (unsigned long long)r->unique,
           (unsigned long long)r->lost, (unsigned long long)r->dups,
           (unsigned long long)r->reordered,
           (unsigned long long)r->unexpected);
    printf("\"sent_per_s\":%.1f,\"delivered_per_s\":%.1f,\"lat_p50_us\":%.1f,"
           "\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,"
           "\"lat_mean_us\":%.1f,",
           f->sent_rate, f->delivered_rate, us(hist_quantile(&r->lat, 0.5)),
           us(hist_quantile(&r->lat, 0.99)), us(hist_quantile(&r->lat, 0.999)),
           us(r->lat.max), r->lat.count ? r->lat.sum / r->lat.count / 1e3 : 0.0);
    printf("\"connects\":%llu,\"connects_per_s\":%.1f,\"connack_p50_us\":%.1f,"
           "\"connack_p99_us\":%.1f,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
           "\"rss_per_conn_bytes\":%.1f,\"persisted_per_s\":%.1f,"
           "\"drain_per_s\":%.1f,",
           (unsigned long long)r->connects, f->connect_rate,
           us(hist_quantile(&r->conn_lat, 0.5)),
           us(hist_quantile(&r->conn_lat, 0.99)), r->rss_before, r->rss_after,
           f->rss_per_conn, f->persisted_rate, f->drain_rate);
    printf("\"broker_cpu_s\":%.3f,\"bench_cpu_s\":%.3f,\"elapsed_s\":%.3f,"
           "\"errors\":%llu,\"error\":\"%s\",\"timed_out\":%s,\"ok\":%s,"
           "\"verdict\":\"%s\"}\n",
           r->broker_cpu, r->bench_cpu, f->elapsed,
           (unsigned long long)r->errors, r->error,
           r->timed_out ? "true" : "false", why ? "false" : "true",
           why ? why : "ok");
}

static void print_text(const bench_t *b, const result_t *r, const figures_t *f,
                       const char *why)
{
    const bench_opts_t *o = &b->o;
    printf("scenario   %s  MQTT %s%s  QoS %d  pubs %u  subs %u  size %d  "
           "threads %d\n",
           o->scenario_name, o->version == 5 ? "5.0" : "3.1.1",
           o->ws    ? (o->tls ? " over secure WebSocket" : " over WebSocket")
           : o->tls ? " over TLS"
                    : "",
           o->qos, b->npubs, b->nsubs, o->size,
           o->threads);
    if (o->scenario == SC_CONNSTORM || o->scenario == SC_IDLE) {
        printf("connects   %llu in %.3f s = %.0f/s  (CONNACK p50 %.3f ms, "
               "p99 %.3f ms)\n",
               (unsigned long long)r->connects,
               o->scenario == SC_IDLE ? secs(r->t_run - r->t_setup)
                                      : f->elapsed,
               f->connect_rate,
               us(hist_quantile(&r->conn_lat, 0.5)) / 1e3,
               us(hist_quantile(&r->conn_lat, 0.99)) / 1e3);
    } else {
        printf("sent       %llu msgs = %.0f msgs/s\n",
               (unsigned long long)r->sent, f->sent_rate);
        printf("delivered  %llu of %llu expected = %.0f msgs/s  (unique "
               "%llu, lost %llu, dups %llu, reordered %llu)\n",
               (unsigned long long)r->received,
               (unsigned long long)r->expected, f->delivered_rate,
               (unsigned long long)r->unique, (unsigned long long)r->lost,
               (unsigned long long)r->dups, (unsigned long long)r->reordered);
        printf("latency    p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max "
               "%.3f ms\n",
               us(hist_quantile(&r->lat, 0.5)) / 1e3,
               us(hist_quantile(&r->lat, 0.99)) / 1e3,
               us(hist_quantile(&r->lat, 0.999)) / 1e3, us(r->lat.max) / 1e3);
    }
    if (o->scenario == SC_PERSIST)
        printf("persisted  %.0f deliveries/s stored, %.0f/s drained\n",
               f->persisted_rate, f->drain_rate);
    if (o->broker_pid)
        printf("broker     cpu %.3f s  rss %ld -> %ld kB\n", r->broker_cpu,
               r->rss_before, r->rss_after);
    if (o->scenario == SC_IDLE && o->broker_pid)
        printf("memory     %.0f bytes per connection\n", f->rss_per_conn);
    printf("bench      cpu %.3f s  errors %llu%s%s\n", r->bench_cpu,
           (unsigned long long)r->errors, r->error[0] ? "  first: " : "",
           r->error);
    printf("result     %s\n", why ? why : "OK");
}

/* ---- self test (meson test bench_selftest) -------------------------------- */

static int check(bool ok, const char *what, int *failed)
{
    if (!ok) {
        fprintf(stderr, "self-test: FAIL %s\n", what);
        (*failed)++;
    }
    return ok;
}

static bool near(uint64_t got, uint64_t want)
{
    double d = (double)got - (double)want;
    return d < 0 ? -d <= want / 50.0 : d <= want / 50.0;
}

static int self_test(void)
{
    static const struct {
        const char *f, *t;
        bool m;
    } cases[] = {
        {"a/b", "a/b", true},      {"a/+", "a/b", true},
        {"a/+", "a/b/c", false},   {"a/#", "a", true},
        {"a/#", "a/b/c", true},    {"#", "a/b", true},
        {"+/+", "a/b", true},      {"+", "a/b", false},
        {"a/+/c", "a//c", true},   {"#", "$SYS/x", false},
        {"+/x", "$SYS/x", false},  {"$SYS/#", "$SYS/x", true},
        {"a/b", "a/bc", false},    {"a/b/#", "a/b", true},
        {"a/+/#", "a/b", true},    {"a/b/c", "a/b", false},
    };
    static hist_t h;
    int failed = 0, n = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++, n++)
        check(scenario_filter_match(cases[i].f, cases[i].t) == cases[i].m,
              cases[i].f, &failed);
    for (uint64_t v = 1; v <= 1000000; v++)
        hist_add(&h, v * 1000);
    n += 4;
    check(near(hist_quantile(&h, 0.5), 500000000ull), "p50", &failed);
    check(near(hist_quantile(&h, 0.99), 990000000ull), "p99", &failed);
    check(near(hist_quantile(&h, 0.999), 999000000ull), "p99.9", &failed);
    check(hist_quantile(&h, 1.0) == 1000000000ull, "max", &failed);
    printf("self-test: %d passed, %d failed\n", n - failed, failed);
    return failed ? 1 : 0;
}

/* ---- main ---------------------------------------------------------------- */

static int start(bench_t *b)
{
    b->workers = calloc((size_t)b->o.threads, sizeof(worker_t));
    if (!b->workers || scenario_build(b) < 0)
        return SL_ENOMEM;
    raise_nofile(&b->o, b->nclients);
    for (int i = 0; i < b->o.threads; i++) {
        if (worker_init(&b->workers[i], b, i) < 0)
            return SL_ENOMEM;
    }
    for (int i = 0; i < b->o.threads; i++) {
        if (pthread_create(&b->workers[i].thread, NULL, worker_main,
                           &b->workers[i]) != 0)
            return SL_ENOMEM;
    }
    return SL_OK;
}

int main(int argc, char **argv)
{
    static bench_t b;
    static result_t r;
    figures_t f;

    signal(SIGPIPE, SIG_IGN);
    if (argc == 2 && strcmp(argv[1], "--self-test") == 0)
        return self_test();
    if (opts_parse(&b.o, argc, argv) < 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (resolve(b.o.host, b.o.port, &b.addr) < 0 ||
        resolve(b.o.sub_host, b.o.sub_port, &b.sub_addr) < 0) {
        fprintf(stderr, "starling-bench: cannot resolve the broker address\n");
        return EXIT_USAGE;
    }
    if (b.o.tls && !(b.ssl_ctx = client_tls_ctx(&b.o))) {
        fprintf(stderr, "starling-bench: cannot set up TLS\n");
        return EXIT_USAGE;
    }
    if (start(&b) < 0) {
        fprintf(stderr, "starling-bench: out of memory\n");
        return EXIT_VIOLATION;
    }
    run(&b, &r);
    for (int i = 0; i < b.o.threads; i++)
        pthread_join(b.workers[i].thread, NULL);
    collect(&b, &r);
    figures(&b, &r, &f);
    const char *why = verdict(&b, &r);
    if (b.o.json)
        print_json(&b, &r, &f, why);
    else
        print_text(&b, &r, &f, why);
    fflush(stdout);
    for (int i = 0; i < b.o.threads; i++)
        worker_fini(&b.workers[i]);
    free(b.workers);
    scenario_free(&b);
    SSL_CTX_free(b.ssl_ctx);
    if (!why)
        return 0;
    return r.timed_out ? EXIT_TIMEOUT : EXIT_VIOLATION;
}
