/*
 * fuzz_bus.c - libFuzzer target for the cluster's bus records (bus.h).
 *
 * Each input is read as a frame, as a node reads what arrives on its bus
 * channel, from a buffer of exactly its size (so the sanitizers see any
 * read past the end). Every record that decodes is encoded again; that
 * encoding must decode to the same fields and encode to the very same
 * bytes a second time, and the frame rebuilt from those records must read
 * back record for record. Every record body is also decoded as each known
 * type, and the whole input as a stored message. Any disagreement aborts;
 * a message not released is a leak (LeakSanitizer).
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzzing=true
 * Run:   ./build-fuzz/tests/fuzz/fuzz_bus tests/fuzz/corpus/bus
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/cluster/bus.h"

#include "starling/err.h"
#include "starling/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static const uint8_t types[] = {BUS_RESET,  BUS_MESSAGE, BUS_QUEUED,
                                BUS_ROUTE,  BUS_GROUP,   BUS_PSUB,
                                BUS_ENDED,  BUS_CLAIM,   BUS_OFFLINE,
                                BUS_RETAIN, BUS_BARRIER};

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static bool same_msg(const msg_t *a, const msg_t *b)
{
    if (!a || !b)
        return a == b;
    return a->qos == b->qos && a->retain == b->retain &&
           a->expiry_at == b->expiry_at &&
           same_bytes(a->topic, a->topic_len, b->topic, b->topic_len) &&
           same_bytes(a->payload, a->payload_len, b->payload,
                      b->payload_len) &&
           same_bytes(a->props, a->props_len, b->props, b->props_len);
}

static bool same_record(const bus_record_t *a, const bus_record_t *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case BUS_RESET:
        return a->u.reset.started_ms == b->u.reset.started_ms;
    case BUS_MESSAGE:
        return same_msg(a->u.message.msg, b->u.message.msg);
    case BUS_QUEUED: {
        const bus_queued_t *x = &a->u.queued, *y = &b->u.queued;
        return same_bytes(x->cid, x->clen, y->cid, y->clen) &&
               x->qid == y->qid && x->qos == y->qos &&
               x->retain == y->retain && x->n_subids == y->n_subids &&
               x->n_subids <= BUS_MAX_SUBIDS &&
               !memcmp(x->subids, y->subids,
                       x->n_subids * sizeof(x->subids[0])) &&
               same_msg(x->msg, y->msg);
    }
    case BUS_ROUTE:
        return a->u.route.seq == b->u.route.seq &&
               a->u.route.add == b->u.route.add &&
               same_bytes(a->u.route.filter, a->u.route.flen,
                          b->u.route.filter, b->u.route.flen);
    case BUS_GROUP:
        return same_bytes(a->u.group.share, a->u.group.slen, b->u.group.share,
                          b->u.group.slen) &&
               same_msg(a->u.group.msg, b->u.group.msg);
    case BUS_PSUB: {
        const bus_psub_t *x = &a->u.psub, *y = &b->u.psub;
        return x->add == y->add && x->opts == y->opts &&
               x->sub_id == y->sub_id &&
               same_bytes(x->cid, x->clen, y->cid, y->clen) &&
               same_bytes(x->filter, x->flen, y->filter, y->flen);
    }
    case BUS_ENDED:
        return same_bytes(a->u.ended.cid, a->u.ended.clen, b->u.ended.cid,
                          b->u.ended.clen);
    case BUS_CLAIM: {
        const bus_claim_t *x = &a->u.claim, *y = &b->u.claim;
        return same_bytes(x->cid, x->clen, y->cid, y->clen) &&
               x->epoch == y->epoch && x->expiry == y->expiry &&
               x->will_delay == y->will_delay && same_msg(x->will, y->will);
    }
    case BUS_OFFLINE:
        return a->u.offline.epoch == b->u.offline.epoch &&
               same_bytes(a->u.offline.cid, a->u.offline.clen,
                          b->u.offline.cid, b->u.offline.clen);
    case BUS_RETAIN:
        return same_msg(a->u.retain.msg, b->u.retain.msg);
    case BUS_BARRIER:
        return a->u.barrier.token == b->u.barrier.token;
    default:
        return false;
    }
}

/* The body of the one record in w (type, u32 length, body). */
static const uint8_t *only_body(const bus_buf_t *w, size_t from, size_t *n)
{
    CHECK(w->len >= from + 5);
    const uint8_t *p = w->p + from;
    *n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    CHECK(*n == w->len - from - 5);
    return p + 5;
}

/* rec decoded from the input: encode, decode, encode again. Appends the
 * first encoding to `frame`. */
static void roundtrip(const bus_record_t *rec, bus_buf_t *frame)
{
    size_t at = frame->len;
    CHECK(bus_encode(frame, rec));
    size_t n;
    const uint8_t *body = only_body(frame, at, &n);
    uint8_t *copy = malloc(n ? n : 1);
    CHECK(copy);
    if (n)
        memcpy(copy, body, n);
    bus_record_t again;
    CHECK(bus_decode(rec->type, copy, n, &again) == SL_OK);
    CHECK(same_record(rec, &again));
    bus_buf_t w2 = {0};
    CHECK(bus_encode(&w2, &again));
    CHECK(same_bytes(w2.p, w2.len, frame->p + at, frame->len - at));
    bus_buf_free(&w2);
    bus_record_clear(&again);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = malloc(size ? size : 1);
    CHECK(in);
    if (size)
        memcpy(in, data, size);

    msg_t *m = NULL;
    if (bus_msg_decode(in, size, &m) == SL_OK)
        CHECK(m);
    msg_unref(&m);

    const char *sender;
    size_t slen;
    bus_reader_t rd;
    if (bus_frame_open(in, size, &sender, &slen, &rd) != SL_OK) {
        free(in);
        return 0;
    }
    CHECK(sender >= (const char *)in && slen <= size - 2);

    bus_buf_t frame = {0};
    CHECK(bus_frame_begin(&frame, sender, slen));
    size_t decoded = 0;
    uint8_t type;
    const uint8_t *body;
    size_t blen;
    int rc;
    while ((rc = bus_next(&rd, &type, &body, &blen)) == 1) {
        CHECK(body >= in && blen <= size && body + blen <= in + size);
        for (size_t i = 0; i < sizeof(types); i++) {
            bus_record_t any;
            int st = bus_decode(types[i], body, blen, &any);
            CHECK(st == SL_OK || st == SL_EMALFORMED || st == SL_ENOMEM);
            bus_record_clear(&any);
        }
        bus_record_t rec;
        rc = bus_decode(type, body, blen, &rec);
        if (rc == SL_ENOTFOUND) {
            bool known = false;
            for (size_t i = 0; i < sizeof(types); i++)
                known |= types[i] == type;
            CHECK(!known);
            continue;
        }
        if (rc != SL_OK)
            continue;
        roundtrip(&rec, &frame);
        bus_record_clear(&rec);
        decoded++;
    }
    CHECK(rc == 0 || rc == SL_EMALFORMED);

    /* The rebuilt frame reads back: same sender, as many records. */
    const char *s2;
    size_t s2len, again = 0;
    bus_reader_t rd2;
    CHECK(bus_frame_open(frame.p, frame.len, &s2, &s2len, &rd2) == SL_OK);
    CHECK(same_bytes(s2, s2len, sender, slen));
    while ((rc = bus_next(&rd2, &type, &body, &blen)) == 1) {
        bus_record_t rec;
        CHECK(bus_decode(type, body, blen, &rec) == SL_OK);
        bus_record_clear(&rec);
        again++;
    }
    CHECK(rc == 0 && again == decoded);

    bus_buf_free(&frame);
    free(in);
    return 0;
}
