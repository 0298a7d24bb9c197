/*
 * test_bus.c - the cluster's bus records (src/cluster/bus.h): the bytes of
 * every record type (the wire format nodes of different versions share),
 * round trips, frames, truncated and malformed input, unknown types.
 *
 * Inputs are copied into buffers of exactly their size, so a sanitized
 * build reports any read past the end.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cluster/bus.h"

#include "starling/err.h"
#include "starling/msg.h"

/* The blob of message "t" / "p", QoS 1, no RETAIN, no expiry, no props. */
#define BLOB_TP                                                                \
    0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 't', 0, 0, 0, 1, 'p', 0, \
        0, 0, 0
#define BLOB_TP_LEN 22

static msg_t *msg_tp(void)
{
    msg_t *m = msg_new("t", 1, "p", 1, NULL, 0, 1, false, 0);
    cr_assert_not_null(m);
    return m;
}

static msg_t *msg_full(void)
{
    static const uint8_t props[] = {0x03, 0x00, 0x04, 't', 'e', 'x', 't'};
    msg_t *m = msg_new("a/b/c", 5, "payload", 7, props, sizeof(props), 2,
                       true, 1234567890123ull);
    cr_assert_not_null(m);
    return m;
}

static void same_msg(const msg_t *a, const msg_t *b)
{
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_eq(a->qos, b->qos);
    cr_assert_eq(a->retain, b->retain);
    cr_assert_eq(a->expiry_at, b->expiry_at);
    cr_assert_eq(a->topic_len, b->topic_len);
    cr_assert_eq(memcmp(a->topic, b->topic, a->topic_len), 0);
    cr_assert_eq(a->payload_len, b->payload_len);
    cr_assert_eq(memcmp(a->payload, b->payload, a->payload_len), 0);
    cr_assert_eq(a->props_len, b->props_len);
    if (a->props_len)
        cr_assert_eq(memcmp(a->props, b->props, a->props_len), 0);
}

static void same_str(const char *a, size_t alen, const char *b, size_t blen)
{
    cr_assert_eq(alen, blen);
    if (alen)
        cr_assert_eq(memcmp(a, b, alen), 0);
}

/* A copy of p[0..n) in a buffer of exactly n bytes (never NULL). */
static uint8_t *exact(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    cr_assert_not_null(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* Encode rec into a fresh buffer and check the bytes against want. */
static void check_bytes(const bus_record_t *rec, const uint8_t *want,
                        size_t wlen)
{
    bus_buf_t w = {0};
    cr_assert(bus_encode(&w, rec));
    cr_assert_eq(w.len, wlen, "type '%c': %zu bytes, want %zu", rec->type,
                 w.len, wlen);
    cr_assert_eq(memcmp(w.p, want, wlen), 0, "type '%c': bytes differ",
                 rec->type);
    bus_buf_free(&w);
}

/* ---- the wire format --------------------------------------------------- */

Test(bus, wire_format_of_every_record_type)
{
    msg_t *m = msg_tp();
    {
        bus_record_t r = {.type = BUS_RESET, .u.reset = {1}};
        const uint8_t want[] = {'Z', 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_MESSAGE, .u.message = {m}};
        const uint8_t want[] = {'M', 0, 0, 0, 4 + BLOB_TP_LEN,
                                0,   0, 0, BLOB_TP_LEN, BLOB_TP};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_QUEUED,
                          .u.queued = {.cid = "c", .clen = 1, .qid = 1,
                                       .qos = 1, .retain = true,
                                       .n_subids = 1, .subids = {5},
                                       .msg = m}};
        const uint8_t want[] = {'Q', 0, 0, 0, 3 + 8 + 3 + 4 + 4 + BLOB_TP_LEN,
                                0, 1, 'c', 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
                                0, 0, 0, 5, 0, 0, 0, BLOB_TP_LEN, BLOB_TP};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_ROUTE,
                          .u.route = {.seq = 7, .add = true, .filter = "a/#",
                                      .flen = 3}};
        const uint8_t want[] = {'R', 0, 0, 0, 10, 0, 0, 0, 7, 1,
                                0,   3, 'a', '/', '#'};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_GROUP,
                          .u.group = {.share = "$share/g/t", .slen = 10,
                                      .msg = m}};
        const uint8_t want[] = {'G', 0, 0, 0, 12 + 4 + BLOB_TP_LEN, 0, 10,
                                '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/',
                                't', 0, 0, 0, BLOB_TP_LEN, BLOB_TP};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_PSUB,
                          .u.psub = {.add = true, .cid = "c", .clen = 1,
                                     .filter = "t", .flen = 1, .opts = 0x1D,
                                     .sub_id = 9}};
        const uint8_t want[] = {'S', 0, 0, 0, 12, 1, 0, 1, 'c', 0,
                                1,   't', 0x1D, 0, 0, 0, 9};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_ENDED, .u.ended = {"cid", 3}};
        const uint8_t want[] = {'E', 0, 0, 0, 5, 0, 3, 'c', 'i', 'd'};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_CLAIM,
                          .u.claim = {.cid = "c", .clen = 1, .epoch = 2,
                                      .expiry = 3, .will_delay = 4}};
        const uint8_t want[] = {'O', 0, 0, 0, 20, 0, 1, 'c', 0, 0, 0, 0, 0,
                                0,   0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0};
        check_bytes(&r, want, sizeof(want));
        r.u.claim.will = m;
        const uint8_t with_will[] = {
            'O', 0, 0, 0, 20 + 4 + BLOB_TP_LEN, 0, 1, 'c', 0, 0, 0, 0, 0, 0,
            0,   2, 0, 0, 0, 3, 0, 0, 0, 4, 1, 0, 0, 0, BLOB_TP_LEN, BLOB_TP};
        check_bytes(&r, with_will, sizeof(with_will));
    }
    {
        bus_record_t r = {.type = BUS_OFFLINE, .u.offline = {"c", 1, 5}};
        const uint8_t want[] = {'F', 0, 0, 0, 11, 0, 1, 'c', 0,
                                0,   0, 0, 0, 0, 0, 5};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_RETAIN, .u.retain = {m}};
        const uint8_t want[] = {'T', 0, 0, 0, 4 + BLOB_TP_LEN,
                                0,   0, 0, BLOB_TP_LEN, BLOB_TP};
        check_bytes(&r, want, sizeof(want));
    }
    {
        bus_record_t r = {.type = BUS_BARRIER,
                          .u.barrier = {0x0102030405060708ull}};
        const uint8_t want[] = {'B', 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};
        check_bytes(&r, want, sizeof(want));
    }
    msg_unref(&m);
}

Test(bus, frame_header_is_the_sender_id)
{
    bus_buf_t w = {0};
    cr_assert(bus_frame_begin(&w, "n1", 2));
    cr_assert_eq(w.len, bus_frame_head(2));
    cr_assert(bus_encode_barrier(&w, &(bus_barrier_t){1}));
    const uint8_t want[] = {0, 2, 'n', '1', 'B', 0, 0, 0, 8,
                            0, 0, 0,   0,   0,   0, 0, 1};
    cr_assert_eq(w.len, sizeof(want));
    cr_assert_eq(memcmp(w.p, want, sizeof(want)), 0);
    /* Beginning again replaces the content. */
    cr_assert(bus_frame_begin(&w, "x", 1));
    cr_assert_eq(w.len, 3);
    bus_buf_free(&w);
}

/* ---- round trips ------------------------------------------------------- */

/* Every record type, with its fields set to something other than 0. */
static size_t sample_records(bus_record_t *out, msg_t *m, msg_t *will)
{
    size_t n = 0;
    out[n++] = (bus_record_t){.type = BUS_RESET,
                              .u.reset = {0xFEDCBA9876543210ull}};
    out[n++] = (bus_record_t){.type = BUS_MESSAGE, .u.message = {m}};
    out[n++] = (bus_record_t){
        .type = BUS_QUEUED,
        .u.queued = {.cid = "client-1", .clen = 8, .qid = 1700000000000123ull,
                     .qos = 2, .retain = true, .n_subids = 4,
                     .subids = {1, 268435455, 3, 4}, .msg = m}};
    out[n++] = (bus_record_t){
        .type = BUS_ROUTE,
        .u.route = {.seq = 0xFFFFFFFFu, .add = false, .filter = "+/x/#",
                    .flen = 5}};
    out[n++] = (bus_record_t){
        .type = BUS_GROUP,
        .u.group = {.share = "$share/grp/a/+", .slen = 14, .msg = m}};
    out[n++] = (bus_record_t){
        .type = BUS_PSUB,
        .u.psub = {.add = true, .cid = "client-2", .clen = 8,
                   .filter = "s/#", .flen = 3, .opts = 0x2E,
                   .sub_id = 77}};
    out[n++] = (bus_record_t){.type = BUS_ENDED, .u.ended = {"client-3", 8}};
    out[n++] = (bus_record_t){
        .type = BUS_CLAIM,
        .u.claim = {.cid = "client-4", .clen = 8, .epoch = 99, .expiry = 3600,
                    .will_delay = 30, .will = will}};
    out[n++] = (bus_record_t){
        .type = BUS_CLAIM,
        .u.claim = {.cid = "client-5", .clen = 8, .epoch = 100}};
    out[n++] = (bus_record_t){.type = BUS_OFFLINE,
                              .u.offline = {"client-6", 8, 12345}};
    out[n++] = (bus_record_t){.type = BUS_RETAIN, .u.retain = {m}};
    out[n++] = (bus_record_t){.type = BUS_BARRIER, .u.barrier = {42}};
    return n;
}

static void same_record(const bus_record_t *a, const bus_record_t *b)
{
    cr_assert_eq(a->type, b->type);
    switch (a->type) {
    case BUS_RESET:
        cr_assert_eq(a->u.reset.started_ms, b->u.reset.started_ms);
        break;
    case BUS_MESSAGE:
        same_msg(a->u.message.msg, b->u.message.msg);
        break;
    case BUS_QUEUED: {
        const bus_queued_t *x = &a->u.queued, *y = &b->u.queued;
        same_str(x->cid, x->clen, y->cid, y->clen);
        cr_assert_eq(x->qid, y->qid);
        cr_assert_eq(x->qos, y->qos);
        cr_assert_eq(x->retain, y->retain);
        cr_assert_eq(x->n_subids, y->n_subids);
        for (int i = 0; i < x->n_subids; i++)
            cr_assert_eq(x->subids[i], y->subids[i]);
        same_msg(x->msg, y->msg);
        break;
    }
    case BUS_ROUTE:
        cr_assert_eq(a->u.route.seq, b->u.route.seq);
        cr_assert_eq(a->u.route.add, b->u.route.add);
        same_str(a->u.route.filter, a->u.route.flen, b->u.route.filter,
                 b->u.route.flen);
        break;
    case BUS_GROUP:
        same_str(a->u.group.share, a->u.group.slen, b->u.group.share,
                 b->u.group.slen);
        same_msg(a->u.group.msg, b->u.group.msg);
        break;
    case BUS_PSUB: {
        const bus_psub_t *x = &a->u.psub, *y = &b->u.psub;
        cr_assert_eq(x->add, y->add);
        same_str(x->cid, x->clen, y->cid, y->clen);
        same_str(x->filter, x->flen, y->filter, y->flen);
        cr_assert_eq(x->opts, y->opts);
        cr_assert_eq(x->sub_id, y->sub_id);
        break;
    }
    case BUS_ENDED:
        same_str(a->u.ended.cid, a->u.ended.clen, b->u.ended.cid,
                 b->u.ended.clen);
        break;
    case BUS_CLAIM: {
        const bus_claim_t *x = &a->u.claim, *y = &b->u.claim;
        same_str(x->cid, x->clen, y->cid, y->clen);
        cr_assert_eq(x->epoch, y->epoch);
        cr_assert_eq(x->expiry, y->expiry);
        cr_assert_eq(x->will_delay, y->will_delay);
        cr_assert_eq(x->will == NULL, y->will == NULL);
        if (x->will)
            same_msg(x->will, y->will);
        break;
    }
    case BUS_OFFLINE:
        same_str(a->u.offline.cid, a->u.offline.clen, b->u.offline.cid,
                 b->u.offline.clen);
        cr_assert_eq(a->u.offline.epoch, b->u.offline.epoch);
        break;
    case BUS_RETAIN:
        same_msg(a->u.retain.msg, b->u.retain.msg);
        break;
    case BUS_BARRIER:
        cr_assert_eq(a->u.barrier.token, b->u.barrier.token);
        break;
    default:
        cr_assert_fail("unexpected type %d", a->type);
    }
}

Test(bus, every_record_type_round_trips_alone)
{
    msg_t *m = msg_full(), *will = msg_tp();
    bus_record_t recs[16];
    size_t n = sample_records(recs, m, will);
    for (size_t i = 0; i < n; i++) {
        bus_buf_t w = {0};
        cr_assert(bus_encode(&w, &recs[i]));
        cr_assert_geq(w.len, 5);
        cr_assert_eq(w.p[0], recs[i].type);
        size_t blen = (size_t)w.p[1] << 24 | (size_t)w.p[2] << 16 |
                      (size_t)w.p[3] << 8 | w.p[4];
        cr_assert_eq(blen, w.len - 5);
        uint8_t *body = exact(w.p + 5, blen);
        bus_record_t got;
        cr_assert_eq(bus_decode(recs[i].type, body, blen, &got), SL_OK,
                     "type '%c'", recs[i].type);
        same_record(&recs[i], &got);
        /* Encoding what was decoded gives the same bytes. */
        bus_buf_t w2 = {0};
        cr_assert(bus_encode(&w2, &got));
        cr_assert_eq(w2.len, w.len);
        cr_assert_eq(memcmp(w2.p, w.p, w.len), 0);
        bus_record_clear(&got);
        bus_buf_free(&w2);
        free(body);
        bus_buf_free(&w);
    }
    msg_unref(&m);
    msg_unref(&will);
}

Test(bus, a_frame_of_every_type_reads_back_in_order)
{
    msg_t *m = msg_full(), *will = msg_tp();
    bus_record_t recs[16];
    size_t n = sample_records(recs, m, will);
    bus_buf_t w = {0};
    cr_assert(bus_frame_begin(&w, "node-a", 6));
    for (size_t i = 0; i < n; i++)
        cr_assert(bus_encode(&w, &recs[i]));
    uint8_t *frame = exact(w.p, w.len);

    const char *sender;
    size_t slen;
    bus_reader_t rd;
    cr_assert_eq(bus_frame_open(frame, w.len, &sender, &slen, &rd), SL_OK);
    same_str(sender, slen, "node-a", 6);
    uint8_t type;
    const uint8_t *body;
    size_t blen, i = 0;
    int rc;
    while ((rc = bus_next(&rd, &type, &body, &blen)) == 1) {
        cr_assert_lt(i, n);
        bus_record_t got;
        cr_assert_eq(bus_decode(type, body, blen, &got), SL_OK);
        same_record(&recs[i], &got);
        bus_record_clear(&got);
        i++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(i, n);
    cr_assert_eq(bus_next(&rd, &type, &body, &blen), 0, "the end stays");
    free(frame);
    bus_buf_free(&w);
    msg_unref(&m);
    msg_unref(&will);
}

Test(bus, empty_strings_and_an_empty_frame)
{
    bus_buf_t w = {0};
    cr_assert(bus_frame_begin(&w, "", 0));
    const char *sender;
    size_t slen;
    bus_reader_t rd;
    uint8_t type;
    const uint8_t *body;
    size_t blen;
    cr_assert_eq(bus_frame_open(w.p, w.len, &sender, &slen, &rd), SL_OK);
    cr_assert_eq(slen, 0);
    cr_assert_eq(bus_next(&rd, &type, &body, &blen), 0);

    cr_assert(bus_encode_ended(&w, &(bus_ended_t){"", 0}));
    cr_assert_eq(bus_frame_open(w.p, w.len, &sender, &slen, &rd), SL_OK);
    cr_assert_eq(bus_next(&rd, &type, &body, &blen), 1);
    bus_ended_t e;
    cr_assert_eq(bus_decode_ended(body, blen, &e), SL_OK);
    cr_assert_eq(e.clen, 0);
    bus_buf_free(&w);
}

/* ---- what is refused --------------------------------------------------- */

Test(bus, every_truncated_body_is_refused)
{
    msg_t *m = msg_full(), *will = msg_tp();
    bus_record_t recs[16];
    size_t n = sample_records(recs, m, will);
    for (size_t i = 0; i < n; i++) {
        bus_buf_t w = {0};
        cr_assert(bus_encode(&w, &recs[i]));
        size_t blen = w.len - 5;
        for (size_t cut = 0; cut < blen; cut++) {
            uint8_t *body = exact(w.p + 5, cut);
            bus_record_t got;
            int rc = bus_decode(recs[i].type, body, cut, &got);
            cr_assert_eq(rc, SL_EMALFORMED, "type '%c' cut at %zu of %zu: %d",
                         recs[i].type, cut, blen, rc);
            bus_record_clear(&got); /* holds nothing */
            free(body);
        }
        bus_buf_free(&w);
    }
    msg_unref(&m);
    msg_unref(&will);
}

Test(bus, every_truncated_frame_stops_without_reading_past_it)
{
    msg_t *m = msg_full();
    bus_buf_t w = {0};
    size_t ends[4]; /* where the header and each record end */
    cr_assert(bus_frame_begin(&w, "node-b", 6));
    ends[0] = w.len;
    cr_assert(bus_encode_route(&w, &(bus_route_t){1, true, "x/y", 3}));
    ends[1] = w.len;
    cr_assert(bus_encode_message(&w, &(bus_message_t){m}));
    ends[2] = w.len;
    cr_assert(bus_encode_barrier(&w, &(bus_barrier_t){3}));
    ends[3] = w.len;
    cr_assert_eq(ends[0], 8);
    cr_assert_eq(ends[1], 8 + 15);
    for (size_t cut = 0; cut <= w.len; cut++) {
        uint8_t *frame = exact(w.p, cut);
        const char *sender;
        size_t slen;
        bus_reader_t rd;
        int rc = bus_frame_open(frame, cut, &sender, &slen, &rd);
        if (cut < 8) {
            cr_assert_eq(rc, SL_EMALFORMED, "cut %zu", cut);
            free(frame);
            continue;
        }
        cr_assert_eq(rc, SL_OK);
        uint8_t type;
        const uint8_t *body;
        size_t blen, whole = 0;
        while ((rc = bus_next(&rd, &type, &body, &blen)) == 1) {
            cr_assert_geq(body, frame);
            cr_assert_leq(body + blen, frame + cut);
            whole++;
        }
        bool at_end = false;
        for (size_t k = 0; k < 4; k++)
            at_end |= cut == ends[k];
        cr_assert_eq(rc, at_end ? 0 : SL_EMALFORMED, "cut %zu: %d", cut, rc);
        cr_assert_eq(bus_next(&rd, &type, &body, &blen), 0,
                     "nothing after a failure");
        free(frame);
    }
    bus_buf_free(&w);
    msg_unref(&m);
}

Test(bus, malformed_messages_and_lengths_are_refused)
{
    msg_t *m = msg_tp();
    bus_buf_t w = {0};
    cr_assert(bus_encode_message(&w, &(bus_message_t){m}));
    bus_message_t got;

    /* an unknown blob format */
    uint8_t *body = exact(w.p + 5, w.len - 5);
    body[4] = 2;
    cr_assert_eq(bus_decode_message(body, w.len - 5, &got), SL_EMALFORMED);
    cr_assert_null(got.msg);
    /* QoS 3 */
    body[4] = 1;
    body[5] = 3;
    cr_assert_eq(bus_decode_message(body, w.len - 5, &got), SL_EMALFORMED);
    body[5] = 1;
    /* a message length past the body */
    body[3] = BLOB_TP_LEN + 1;
    cr_assert_eq(bus_decode_message(body, w.len - 5, &got), SL_EMALFORMED);
    /* a message length shorter than the blob (the blob must fill it) */
    body[3] = BLOB_TP_LEN - 1;
    cr_assert_eq(bus_decode_message(body, w.len - 5, &got), SL_EMALFORMED);
    body[3] = BLOB_TP_LEN;
    cr_assert_eq(bus_decode_message(body, w.len - 5, &got), SL_OK);
    msg_unref(&got.msg);
    free(body);

    /* a string length past the body */
    const uint8_t ended[] = {0, 9, 'a', 'b'};
    body = exact(ended, sizeof(ended));
    bus_ended_t e;
    cr_assert_eq(bus_decode_ended(body, sizeof(ended), &e), SL_EMALFORMED);
    free(body);

    /* a claim announcing a will it does not carry */
    const uint8_t claim[] = {0, 1, 'c', 0, 0, 0, 0, 0, 0, 0, 1,
                             0, 0, 0,   0, 0, 0, 0, 0, 1};
    body = exact(claim, sizeof(claim));
    bus_claim_t c;
    cr_assert_eq(bus_decode_claim(body, sizeof(claim), &c), SL_EMALFORMED);
    cr_assert_null(c.will);
    free(body);

    /* a frame whose sender id runs past it, a record length past it */
    const uint8_t f1[] = {0, 5, 'a', 'b'};
    const uint8_t f2[] = {0, 1, 'a', 'B', 0xFF, 0xFF, 0xFF, 0xFF, 0};
    const char *sender;
    size_t slen;
    bus_reader_t rd;
    uint8_t type;
    const uint8_t *rb;
    size_t blen;
    body = exact(f1, sizeof(f1));
    cr_assert_eq(bus_frame_open(body, sizeof(f1), &sender, &slen, &rd),
                 SL_EMALFORMED);
    free(body);
    body = exact(f2, sizeof(f2));
    cr_assert_eq(bus_frame_open(body, sizeof(f2), &sender, &slen, &rd), SL_OK);
    cr_assert_eq(bus_next(&rd, &type, &rb, &blen), SL_EMALFORMED);
    free(body);
    bus_buf_free(&w);
    msg_unref(&m);
}

Test(bus, unknown_record_types_are_skipped)
{
    bus_buf_t w = {0};
    cr_assert(bus_frame_begin(&w, "n", 1));
    cr_assert(bus_encode_ended(&w, &(bus_ended_t){"a", 1}));
    /* a record of a type some newer node sends */
    const uint8_t x[] = {'X', 0, 0, 0, 3, 1, 2, 3};
    size_t at = w.len;
    w.p = realloc(w.p, w.len + sizeof(x) + 64);
    w.cap = w.len + sizeof(x) + 64;
    memcpy(w.p + at, x, sizeof(x));
    w.len += sizeof(x);
    cr_assert(bus_encode_ended(&w, &(bus_ended_t){"b", 1}));
    uint8_t *frame = exact(w.p, w.len);

    const char *sender;
    size_t slen, blen;
    bus_reader_t rd;
    uint8_t type;
    const uint8_t *body;
    cr_assert_eq(bus_frame_open(frame, w.len, &sender, &slen, &rd), SL_OK);
    const char *seen[2];
    size_t n = 0, unknown = 0;
    while (bus_next(&rd, &type, &body, &blen) == 1) {
        bus_record_t rec;
        int rc = bus_decode(type, body, blen, &rec);
        if (rc == SL_ENOTFOUND) {
            cr_assert_eq(type, 'X');
            cr_assert_eq(blen, 3);
            unknown++;
            continue;
        }
        cr_assert_eq(rc, SL_OK);
        cr_assert_lt(n, 2);
        seen[n++] = rec.u.ended.cid;
        bus_record_clear(&rec);
    }
    cr_assert_eq(unknown, 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(seen[0][0], 'a');
    cr_assert_eq(seen[1][0], 'b');
    bus_record_t rec = {.type = 'X'};
    bus_buf_t w2 = {0};
    cr_assert_not(bus_encode(&w2, &rec), "nothing to encode an unknown type");
    cr_assert_eq(w2.len, 0);
    free(frame);
    bus_buf_free(&w);
}

Test(bus, fields_appended_by_a_newer_node_are_ignored)
{
    const uint8_t route[] = {0, 0, 0, 7, 1, 0, 1, 'a', 0xAA, 0xBB};
    uint8_t *body = exact(route, sizeof(route));
    bus_route_t r;
    cr_assert_eq(bus_decode_route(body, sizeof(route), &r), SL_OK);
    cr_assert_eq(r.seq, 7);
    cr_assert(r.add);
    same_str(r.filter, r.flen, "a", 1);
    free(body);
}

Test(bus, queued_keeps_the_first_four_subscription_ids)
{
    msg_t *m = msg_tp();
    /* 6 ids on the wire: the message after them still reads. */
    const uint8_t q[] = {0, 1, 'c', 0, 0, 0, 0, 0, 0, 0, 9, 1, 0, 6,
                         0, 0, 0,   1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0,
                         0, 4, 0,   0, 0, 5, 0, 0, 0, 6, 0, 0, 0, BLOB_TP_LEN,
                         BLOB_TP};
    uint8_t *body = exact(q, sizeof(q));
    bus_queued_t got;
    cr_assert_eq(bus_decode_queued(body, sizeof(q), &got), SL_OK);
    cr_assert_eq(got.qid, 9);
    cr_assert_eq(got.n_subids, 4);
    for (uint32_t i = 0; i < 4; i++)
        cr_assert_eq(got.subids[i], i + 1);
    same_msg(got.msg, m);
    msg_unref(&got.msg);
    free(body);
    msg_unref(&m);
}

Test(bus, encoders_refuse_what_does_not_fit_and_leave_the_buffer)
{
    size_t big = 70000;
    char *s = malloc(big);
    cr_assert_not_null(s);
    memset(s, 'x', big);
    bus_buf_t w = {0};
    cr_assert(bus_frame_begin(&w, "n", 1));
    size_t len = w.len;
    cr_assert_not(bus_encode_ended(&w, &(bus_ended_t){s, big}));
    cr_assert_not(bus_encode_route(&w, &(bus_route_t){1, true, s, big}));
    cr_assert_not(bus_encode_message(&w, &(bus_message_t){NULL}));
    cr_assert_eq(w.len, len);
    cr_assert_not(bus_frame_begin(&w, s, big));
    free(s);
    bus_buf_free(&w);
}

Test(bus, a_will_in_the_stored_encoding_decodes)
{
    const uint8_t blob[] = {BLOB_TP};
    uint8_t *p = exact(blob, sizeof(blob));
    msg_t *m = NULL, *want = msg_tp();
    cr_assert_eq(bus_msg_decode(p, sizeof(blob), &m), SL_OK);
    same_msg(m, want);
    msg_unref(&m);
    cr_assert_eq(bus_msg_decode(p, sizeof(blob) - 1, &m), SL_EMALFORMED);
    cr_assert_null(m);
    free(p);
    msg_unref(&want);
}
