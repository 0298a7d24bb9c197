/*
 * scenario.c - the shapes of load starling-bench knows, and their oracle.
 *
 * A scenario decides how many publishers and subscribers there are, which
 * topic each publisher uses and which filter each subscriber holds, and how
 * clients behave in each phase. Topics live under a per-run prefix
 * ("sb/<pid>" by default) so concurrent runs on one broker never see each
 * other's traffic.
 *
 *   pairs      publisher i -> <prefix>/pair/i -> subscriber i
 *   crossnode  the same, subscribers on --sub-host/--sub-port
 *   fanin      publisher i -> <prefix>/fanin/i; subscribers on
 *              <prefix>/fanin/+ (or all on <prefix>/fanin, --same-topic)
 *   fanout     publishers -> <prefix>/fanout -> every subscriber
 *   wildcard   publisher i -> <prefix>/w/r<i%4>/d<i>/t; subscriber j holds
 *              one of seven filters built from + and # (some match one
 *              publisher, some a region, some all, one none)
 *   persist    persistent subscribers (clean session 0) on <prefix>/persist
 *              subscribe and leave; publishers send; subscribers come back
 *   ppairs     pairs of persistent sessions (clean session 0 / clean start
 *              0 with a session expiry), subscribers online throughout:
 *              every delivery goes through the subscriber's store queue
 *   connstorm  connect, CONNACK, DISCONNECT, as fast as possible
 *   idle       connect and hold
 *
 * Which publisher reaches which subscriber is decided here, with a topic
 * matcher of our own (scenario_filter_match) rather than the broker's: the
 * bench is the oracle the broker is checked against, so it must not share
 * the broker's mistakes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "starling/err.h"

#include "bench.h"

#define REGIONS 4
#define WILDCARD_SHAPES 7

static const struct {
    const char *name;
    scenario_t sc;
} names[] = {
    {"pairs", SC_PAIRS},       {"fanin", SC_FANIN},
    {"fanout", SC_FANOUT},     {"wildcard", SC_WILDCARD},
    {"connstorm", SC_CONNSTORM}, {"idle", SC_IDLE},
    {"persist", SC_PERSIST},   {"crossnode", SC_CROSSNODE},
    {"ppairs", SC_PPAIRS},
};

int scenario_parse(const char *name, scenario_t *out)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].sc;
            return SL_OK;
        }
    }
    return SL_EINVAL;
}

/* ---- defaults ---------------------------------------------------------- */

static void set_if_unset(int *v, int def)
{
    if (*v < 0)
        *v = def;
}

static int counts_defaults(bench_opts_t *o)
{
    switch (o->scenario) {
    case SC_PAIRS:
    case SC_PPAIRS:
    case SC_CROSSNODE: {
        int n = o->pubs >= 0 ? o->pubs : o->subs >= 0 ? o->subs : 10;
        if ((o->pubs >= 0 && o->pubs != n) || (o->subs >= 0 && o->subs != n)) {
            fprintf(stderr, "%s: --pubs and --subs must be equal (--pairs)\n",
                    o->scenario_name);
            return SL_EINVAL;
        }
        o->pubs = o->subs = n;
        break;
    }
    case SC_FANIN:
        set_if_unset(&o->pubs, 10);
        set_if_unset(&o->subs, 1);
        break;
    case SC_FANOUT:
        set_if_unset(&o->pubs, 1);
        set_if_unset(&o->subs, 100);
        break;
    case SC_WILDCARD:
        set_if_unset(&o->pubs, 8);
        set_if_unset(&o->subs, 64);
        break;
    case SC_PERSIST:
        set_if_unset(&o->pubs, 100);
        set_if_unset(&o->subs, 1000);
        break;
    case SC_CONNSTORM:
    case SC_IDLE:
        set_if_unset(&o->clients, 10000);
        o->pubs = o->subs = 0;
        break;
    }
    return SL_OK;
}

static long default_msgs(scenario_t sc)
{
    switch (sc) {
    case SC_FANOUT:
        return 1000;
    case SC_WILDCARD:
        return 2000;
    case SC_PERSIST:
        return 1;
    default:
        return 10000;
    }
}

int scenario_defaults(bench_opts_t *o)
{
    if (counts_defaults(o) < 0)
        return SL_EINVAL;
    if ((o->scenario == SC_PERSIST || o->scenario == SC_PPAIRS) &&
        o->qos == 0) {
        fprintf(stderr, "%s: needs --qos 1 or 2\n", o->scenario_name);
        return SL_EINVAL;
    }
    if (o->scenario == SC_PERSIST) {
        if (o->duration >= 0 && o->msgs < 0) {
            fprintf(stderr, "persist: counts messages (--msgs), no --duration\n");
            return SL_EINVAL;
        }
    }
    set_if_unset(&o->qos, o->scenario == SC_PERSIST ||
                                  o->scenario == SC_PPAIRS ? 1 : 0);
    if (o->scenario == SC_IDLE) {
        if (o->duration < 0)
            o->duration = 2;
        o->msgs = 0;
    } else if (o->msgs < 0) {
        o->msgs = o->duration >= 0 ? 0 : default_msgs(o->scenario);
    }
    if (o->duration < 0)
        o->duration = 0;
    if (o->timeout <= 0)
        o->timeout = 60 + o->duration;
    if (o->settle < 0)
        o->settle = o->scenario == SC_CROSSNODE ? 1.0 : 0.0;
    if (o->drain < 0)
        o->drain = o->qos == 0 ? 1.0 : 5.0;
    if (o->backlog < 0)
        o->backlog = o->rate > 0 || o->size < BENCH_HDR_SIZE ? 0 : 5000;
    if (o->concurrency <= 0)
        o->concurrency = 100;
    if (o->src_addrs <= 0) {
        o->src_addrs = 1;
        if (o->scenario == SC_IDLE || o->scenario == SC_CONNSTORM)
            o->src_addrs = o->clients / 20000 + 1;
    }
    if (!o->sub_host)
        o->sub_host = o->host;
    if (o->sub_port <= 0)
        o->sub_port = o->port;
    if (o->prefix[0] == '\0')
        snprintf(o->prefix, sizeof(o->prefix), "sb/%d", (int)getpid());
    return SL_OK;
}

/* ---- topic matching (the oracle) --------------------------------------- */

static size_t level_len(const char *s)
{
    const char *e = strchr(s, '/');
    return e ? (size_t)(e - s) : strlen(s);
}

/*
 * MQTT 3.1.1 §4.7 matching: '+' is exactly one level, '#' (last) is the
 * parent level and everything below it ("a/#" matches "a" and "a/b/c");
 * a filter starting with a wildcard does not match a topic starting with
 * '$'. Bounded by the lengths of both strings.
 */
bool scenario_filter_match(const char *f, const char *t)
{
    if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    for (;;) {
        size_t fl = level_len(f), tl = level_len(t);
        if (fl == 1 && f[0] == '#')
            return true;
        if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
            return false;
        bool f_end = f[fl] == '\0', t_end = t[tl] == '\0';
        if (f_end || t_end)
            return (f_end && t_end) || (t_end && strcmp(f + fl, "/#") == 0);
        f += fl + 1;
        t += tl + 1;
    }
}

/* ---- construction ------------------------------------------------------ */

static void pub_topic(const bench_opts_t *o, uint32_t i, char *out, size_t n)
{
    switch (o->scenario) {
    case SC_FANIN:
        if (o->same_topic)
            snprintf(out, n, "%s/fanin", o->prefix);
        else
            snprintf(out, n, "%s/fanin/%u", o->prefix, i);
        break;
    case SC_FANOUT:
        snprintf(out, n, "%s/fanout", o->prefix);
        break;
    case SC_WILDCARD:
        snprintf(out, n, "%s/w/r%u/d%u/t", o->prefix, i % REGIONS, i);
        break;
    case SC_PERSIST:
        snprintf(out, n, "%s/persist", o->prefix);
        break;
    default:
        snprintf(out, n, "%s/pair/%u", o->prefix, i);
        break;
    }
}

static void wildcard_filter(const bench_opts_t *o, uint32_t j, char *out,
                            size_t n)
{
    const char *p = o->prefix;
    unsigned r = j % REGIONS, d = j % (unsigned)o->pubs;
    switch (j % WILDCARD_SHAPES) {
    case 0:
        snprintf(out, n, "%s/w/r%u/+/t", p, r);
        break;
    case 1:
        snprintf(out, n, "%s/w/#", p);
        break;
    case 2:
        snprintf(out, n, "%s/w/+/d%u/t", p, d);
        break;
    case 3:
        snprintf(out, n, "%s/w/r%u/#", p, r);
        break;
    case 4:
        snprintf(out, n, "%s/w/+/+/+", p);
        break;
    case 5:
        snprintf(out, n, "%s/w/+/d%u/#", p, d);
        break;
    default:
        snprintf(out, n, "%s/w/r%u/d%u/x", p, r, d);
        break;
    }
}

static void sub_filter(const bench_opts_t *o, uint32_t j, char *out, size_t n)
{
    switch (o->scenario) {
    case SC_FANIN:
        if (o->same_topic)
            snprintf(out, n, "%s/fanin", o->prefix);
        else
            snprintf(out, n, "%s/fanin/+", o->prefix);
        break;
    case SC_FANOUT:
        snprintf(out, n, "%s/fanout", o->prefix);
        break;
    case SC_WILDCARD:
        wildcard_filter(o, j, out, n);
        break;
    case SC_PERSIST:
        snprintf(out, n, "%s/persist", o->prefix);
        break;
    default:
        snprintf(out, n, "%s/pair/%u", o->prefix, j);
        break;
    }
}

static int build_pubs(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    for (uint32_t i = 0; i < b->npubs; i++) {
        pub_t *p = &b->pubs[i];
        p->id = i;
        pub_topic(o, i, p->topic, sizeof(p->topic));
        p->topic_len = (uint16_t)strlen(p->topic);
        p->target = (uint64_t)o->msgs;
        p->window = (uint32_t)o->inflight;
        if (o->qos > 0 && !(p->await = calloc(1, 65536 / 8)))
            return SL_ENOMEM;
        if (o->qos == 2 && !(p->await_comp = calloc(1, 65536 / 8)))
            return SL_ENOMEM;
    }
    return SL_OK;
}

/* One track per publisher whose topic the subscriber's filter matches,
 * in publisher order (binary-searched on delivery). */
static int build_tracks(bench_t *b, sub_t *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->npubs; i++)
        n += scenario_filter_match(s->filter, b->pubs[i].topic);
    if (n == 0)
        return SL_OK;
    s->tracks = calloc(n, sizeof(track_t));
    if (!s->tracks)
        return SL_ENOMEM;
    for (uint32_t i = 0; i < b->npubs; i++) {
        if (scenario_filter_match(s->filter, b->pubs[i].topic)) {
            s->tracks[s->ntracks++].pub_id = i;
            b->pubs[i].fan++;
        }
    }
    return SL_OK;
}

static int build_subs(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    for (uint32_t j = 0; j < b->nsubs; j++) {
        sub_t *s = &b->subs[j];
        sub_filter(o, j, s->filter, sizeof(s->filter));
        s->filter_len = (uint16_t)strlen(s->filter);
        if (build_tracks(b, s) < 0)
            return SL_ENOMEM;
        if (o->qos == 2 && !(s->q2 = calloc(1, 65536 / 8)))
            return SL_ENOMEM;
    }
    return SL_OK;
}

/* Subscribers first, then publishers; clients spread over the workers
 * round-robin so each worker gets a share of every role. */
static void build_clients(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    int pid = (int)getpid();
    for (uint32_t k = 0; k < b->nclients; k++) {
        client_t *c = &b->clients[k];
        c->index = k;
        c->w = &b->workers[k % (uint32_t)o->threads];
        c->next_pid = 1;
        if (k < b->nsubs) {
            c->sub = &b->subs[k];
            snprintf(c->id, sizeof(c->id), "sb%d-s%u", pid, k);
        } else if (k < b->nsubs + b->npubs) {
            c->pub = &b->pubs[k - b->nsubs];
            snprintf(c->id, sizeof(c->id), "sb%d-p%u", pid, k - b->nsubs);
        } else {
            snprintf(c->id, sizeof(c->id), "sb%d-c%u", pid, k);
        }
    }
}

static int assign_workers(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    uint32_t nt = (uint32_t)o->threads;
    for (uint32_t t = 0; t < nt; t++) {
        worker_t *w = &b->workers[t];
        uint32_t share = b->nclients / nt + 1;
        w->clients = calloc(share, sizeof(client_t *));
        w->pubs = calloc(b->npubs / nt + 1, sizeof(client_t *));
        if (!w->clients || !w->pubs)
            return SL_ENOMEM;
        if (o->scenario == SC_CONNSTORM)
            w->storm_quota = (uint32_t)o->clients / nt +
                             (t < (uint32_t)o->clients % nt ? 1u : 0u);
    }
    for (uint32_t k = 0; k < b->nclients; k++) {
        client_t *c = &b->clients[k];
        worker_t *w = c->w;
        w->clients[w->nclients++] = c;
        if (c->pub)
            w->pubs[w->npubs++] = c;
    }
    return SL_OK;
}

/* Share the run's backlog among publishers by how many deliveries each
 * message of theirs makes; a publisher may always be one message ahead. */
static void share_backlog(bench_t *b)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < b->npubs; i++)
        total += b->pubs[i].fan;
    if (b->o.backlog <= 0 || total == 0)
        return;
    for (uint32_t i = 0; i < b->npubs; i++) {
        pub_t *p = &b->pubs[i];
        p->backlog = (uint64_t)b->o.backlog * p->fan / total;
        if (p->fan > 0 && p->backlog < p->fan)
            p->backlog = p->fan;
    }
}

int scenario_build(bench_t *b)
{
    const bench_opts_t *o = &b->o;

    b->npubs = (uint32_t)o->pubs;
    b->nsubs = (uint32_t)o->subs;
    b->nclients = b->npubs + b->nsubs;
    if (o->scenario == SC_IDLE)
        b->nclients = (uint32_t)o->clients;
    if (o->scenario == SC_CONNSTORM)
        b->nclients = (uint32_t)(o->concurrency < o->clients ? o->concurrency
                                                             : o->clients);
    b->pubs = calloc(b->npubs + 1, sizeof(pub_t));
    b->subs = calloc(b->nsubs + 1, sizeof(sub_t));
    b->clients = calloc(b->nclients + 1, sizeof(client_t));
    b->payload_fill = malloc((size_t)o->size + 1);
    if (!b->pubs || !b->subs || !b->clients || !b->payload_fill)
        return SL_ENOMEM;
    memset(b->payload_fill, 'x', (size_t)o->size);
    if (build_pubs(b) < 0 || build_subs(b) < 0)
        return SL_ENOMEM;
    share_backlog(b);
    build_clients(b);
    return assign_workers(b);
}

void scenario_free(bench_t *b)
{
    for (uint32_t i = 0; i < b->npubs; i++) {
        free(b->pubs[i].await);
        free(b->pubs[i].await_comp);
    }
    for (uint32_t j = 0; j < b->nsubs; j++) {
        sub_t *s = &b->subs[j];
        for (uint32_t k = 0; k < s->ntracks; k++)
            free(s->tracks[k].bits);
        free(s->tracks);
        free(s->q2);
    }
    free(b->pubs);
    free(b->subs);
    free(b->clients);
    free(b->payload_fill);
}

/* ---- phases -------------------------------------------------------------- */

bool scenario_in_step(const bench_t *b, const client_t *c, phase_t ph)
{
    switch (ph) {
    case PH_SETUP:
        return b->o.scenario != SC_CONNSTORM;
    case PH_REJOIN:
        return b->o.scenario == SC_PERSIST && c->sub != NULL;
    case PH_CLEANUP:
        return (b->o.scenario == SC_PERSIST && c->sub != NULL) ||
               b->o.scenario == SC_PPAIRS;
    case PH_RUN:
        return b->o.scenario == SC_CONNSTORM;
    default:
        return false;
    }
}

uint32_t scenario_step_count(const bench_t *b, phase_t ph)
{
    if (ph == PH_RUN && b->o.scenario == SC_CONNSTORM)
        return (uint32_t)b->o.clients;
    uint32_t n = 0;
    for (uint32_t k = 0; k < b->nclients; k++)
        n += scenario_in_step(b, &b->clients[k], ph);
    return n;
}

void scenario_prepare(const bench_t *b, client_t *c, phase_t ph)
{
    bool persistent = (b->o.scenario == SC_PERSIST && c->sub != NULL) ||
                      b->o.scenario == SC_PPAIRS;

    c->to_sub_addr = b->o.scenario == SC_CROSSNODE && c->sub != NULL;
    c->need_session = false;
    switch (ph) {
    case PH_SETUP:
        c->clean = !persistent;
        c->subscribe = c->sub != NULL;
        c->once = persistent && b->o.scenario == SC_PERSIST;
        break;
    case PH_REJOIN:
        c->clean = false;
        c->subscribe = false;
        c->once = false;
        c->need_session = true;
        break;
    default: /* connstorm RUN, persist and ppairs CLEANUP */
        c->clean = true;
        c->subscribe = false;
        c->once = true;
        break;
    }
}
