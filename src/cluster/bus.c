/*
 * bus.c - encoding and decoding of the cluster's bus records (see bus.h).
 */
#include "bus.h"

#include "../store/blob.h"

#include "starling/err.h"

#include <stdlib.h>
#include <string.h>

#define REC_HEAD 5u   /* u8 type, u32 body length */

void bus_buf_free(bus_buf_t *b)
{
    free(b->p);
    *b = (bus_buf_t){0};
}

static bool reserve(bus_buf_t *w, size_t n)
{
    if (n > SIZE_MAX - w->len)
        return false;
    if (w->len + n <= w->cap)
        return true;
    size_t nc = w->cap ? w->cap : 1024;
    while (nc < w->len + n) {
        if (nc > SIZE_MAX / 2)
            return false;
        nc *= 2;
    }
    uint8_t *np = realloc(w->p, nc);
    if (!np)
        return false;
    w->p = np;
    w->cap = nc;
    return true;
}

/* ---- writing (room reserved first) --------------------------------------- */

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    p = put_u32(p, (uint32_t)(v >> 32));
    return put_u32(p, (uint32_t)v);
}

static uint8_t *put_str(uint8_t *p, const void *s, size_t n)
{
    p = put_u16(p, (uint16_t)n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_msg(uint8_t *p, const msg_t *m, size_t n)
{
    p = put_u32(p, (uint32_t)n);
    blob_msg_write(m, p);
    return p + n;
}

/* Size of a string field; 0 when it does not fit its u16 length. */
static size_t str_size(const void *s, size_t n)
{
    return (n > UINT16_MAX || (n && !s)) ? 0 : 2 + n;
}

/* Encoded size of a message (without the u32 prefix); 0 when it does not
 * fit. */
static size_t msg_size(const msg_t *m)
{
    if (!m)
        return 0;
    size_t n = blob_msg_size(m);
    return n > UINT32_MAX - 64 ? 0 : n;
}

/* Room for a record of `body` bytes: the pointer to its body, or NULL. */
static uint8_t *rec_begin(bus_buf_t *w, uint8_t type, size_t body)
{
    if (body > UINT32_MAX || !reserve(w, REC_HEAD + body))
        return NULL;
    uint8_t *p = w->p + w->len;
    p = put_u8(p, type);
    return put_u32(p, (uint32_t)body);
}

/* The record written up to `end` (which matches the announced length). */
static bool rec_end(bus_buf_t *w, const uint8_t *end)
{
    w->len = (size_t)(end - w->p);
    return true;
}

bool bus_encode_reset(bus_buf_t *w, const bus_reset_t *r)
{
    uint8_t *p = rec_begin(w, BUS_RESET, 8);
    if (!p)
        return false;
    return rec_end(w, put_u64(p, r->started_ms));
}

static bool encode_msg_only(bus_buf_t *w, uint8_t type, const msg_t *m)
{
    size_t mn = msg_size(m);
    uint8_t *p = mn ? rec_begin(w, type, 4 + mn) : NULL;
    if (!p)
        return false;
    return rec_end(w, put_msg(p, m, mn));
}

bool bus_encode_message(bus_buf_t *w, const bus_message_t *r)
{
    return encode_msg_only(w, BUS_MESSAGE, r->msg);
}

bool bus_encode_retain(bus_buf_t *w, const bus_retain_t *r)
{
    return encode_msg_only(w, BUS_RETAIN, r->msg);
}

bool bus_encode_queued(bus_buf_t *w, const bus_queued_t *r)
{
    size_t cn = str_size(r->cid, r->clen), mn = msg_size(r->msg);
    uint8_t n = r->n_subids > BUS_MAX_SUBIDS ? BUS_MAX_SUBIDS : r->n_subids;
    if (!cn || !mn)
        return false;
    uint8_t *p = rec_begin(w, BUS_QUEUED, cn + 8 + 3 + 4u * n + 4 + mn);
    if (!p)
        return false;
    p = put_str(p, r->cid, r->clen);
    p = put_u64(p, r->qid);
    p = put_u8(p, r->qos);
    p = put_u8(p, r->retain);
    p = put_u8(p, n);
    for (uint8_t i = 0; i < n; i++)
        p = put_u32(p, r->subids[i]);
    return rec_end(w, put_msg(p, r->msg, mn));
}

bool bus_encode_route(bus_buf_t *w, const bus_route_t *r)
{
    size_t fn = str_size(r->filter, r->flen);
    uint8_t *p = fn ? rec_begin(w, BUS_ROUTE, 4 + 1 + fn) : NULL;
    if (!p)
        return false;
    p = put_u32(p, r->seq);
    p = put_u8(p, r->add);
    return rec_end(w, put_str(p, r->filter, r->flen));
}

bool bus_encode_group(bus_buf_t *w, const bus_group_t *r)
{
    size_t sn = str_size(r->share, r->slen), mn = msg_size(r->msg);
    uint8_t *p = sn && mn ? rec_begin(w, BUS_GROUP, sn + 4 + mn) : NULL;
    if (!p)
        return false;
    p = put_str(p, r->share, r->slen);
    return rec_end(w, put_msg(p, r->msg, mn));
}

bool bus_encode_psub(bus_buf_t *w, const bus_psub_t *r)
{
    size_t cn = str_size(r->cid, r->clen), fn = str_size(r->filter, r->flen);
    uint8_t *p = cn && fn ? rec_begin(w, BUS_PSUB, 1 + cn + fn + 1 + 4) : NULL;
    if (!p)
        return false;
    p = put_u8(p, r->add);
    p = put_str(p, r->cid, r->clen);
    p = put_str(p, r->filter, r->flen);
    p = put_u8(p, r->opts);
    return rec_end(w, put_u32(p, r->sub_id));
}

bool bus_encode_ended(bus_buf_t *w, const bus_ended_t *r)
{
    size_t cn = str_size(r->cid, r->clen);
    uint8_t *p = cn ? rec_begin(w, BUS_ENDED, cn) : NULL;
    if (!p)
        return false;
    return rec_end(w, put_str(p, r->cid, r->clen));
}

bool bus_encode_claim(bus_buf_t *w, const bus_claim_t *r)
{
    size_t cn = str_size(r->cid, r->clen);
    size_t mn = r->will ? msg_size(r->will) : 0;
    if (!cn || (r->will && !mn))
        return false;
    uint8_t *p = rec_begin(w, BUS_CLAIM,
                           cn + 8 + 4 + 4 + 1 + (r->will ? 4 + mn : 0));
    if (!p)
        return false;
    p = put_str(p, r->cid, r->clen);
    p = put_u64(p, r->epoch);
    p = put_u32(p, r->expiry);
    p = put_u32(p, r->will_delay);
    p = put_u8(p, r->will != NULL);
    if (r->will)
        p = put_msg(p, r->will, mn);
    return rec_end(w, p);
}

bool bus_encode_offline(bus_buf_t *w, const bus_offline_t *r)
{
    size_t cn = str_size(r->cid, r->clen);
    uint8_t *p = cn ? rec_begin(w, BUS_OFFLINE, cn + 8) : NULL;
    if (!p)
        return false;
    p = put_str(p, r->cid, r->clen);
    return rec_end(w, put_u64(p, r->epoch));
}

bool bus_encode_barrier(bus_buf_t *w, const bus_barrier_t *r)
{
    uint8_t *p = rec_begin(w, BUS_BARRIER, 8);
    if (!p)
        return false;
    return rec_end(w, put_u64(p, r->token));
}

bool bus_encode(bus_buf_t *w, const bus_record_t *rec)
{
    switch (rec->type) {
    case BUS_RESET:
        return bus_encode_reset(w, &rec->u.reset);
    case BUS_MESSAGE:
        return bus_encode_message(w, &rec->u.message);
    case BUS_QUEUED:
        return bus_encode_queued(w, &rec->u.queued);
    case BUS_ROUTE:
        return bus_encode_route(w, &rec->u.route);
    case BUS_GROUP:
        return bus_encode_group(w, &rec->u.group);
    case BUS_PSUB:
        return bus_encode_psub(w, &rec->u.psub);
    case BUS_ENDED:
        return bus_encode_ended(w, &rec->u.ended);
    case BUS_CLAIM:
        return bus_encode_claim(w, &rec->u.claim);
    case BUS_OFFLINE:
        return bus_encode_offline(w, &rec->u.offline);
    case BUS_RETAIN:
        return bus_encode_retain(w, &rec->u.retain);
    case BUS_BARRIER:
        return bus_encode_barrier(w, &rec->u.barrier);
    default:
        return false;
    }
}

size_t bus_frame_head(size_t slen)
{
    return 2 + slen;
}

bool bus_frame_begin(bus_buf_t *w, const char *sender, size_t slen)
{
    size_t sn = str_size(sender, slen);
    w->len = 0;
    if (!sn || !reserve(w, sn))
        return false;
    w->len = (size_t)(put_str(w->p, sender, slen) - w->p);
    return true;
}

/* ---- reading: every take checks the remaining length first -------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len;
    bool bad;
} rd_t;

static const uint8_t *take(rd_t *r, size_t n)
{
    if (r->bad || r->len < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->len -= n;
    return p;
}

static uint8_t get_u8(rd_t *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t get_u16(rd_t *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static uint32_t get_u32(rd_t *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                   (uint32_t)p[2] << 8 | p[3]
             : 0;
}

static uint64_t get_u64(rd_t *r)
{
    uint64_t hi = get_u32(r);
    return hi << 32 | get_u32(r);
}

static const char *get_str(rd_t *r, size_t *n)
{
    *n = get_u16(r);
    const char *s = (const char *)take(r, *n);
    if (!s)
        *n = 0;
    return s;
}

/* A message: SL_OK, SL_EMALFORMED or SL_ENOMEM; r is bad after a failure. */
static int get_msg(rd_t *r, msg_t **out)
{
    *out = NULL;
    size_t n = get_u32(r);
    const uint8_t *p = take(r, n);
    if (!p)
        return SL_EMALFORMED;
    int rc = blob_msg_read(p, n, out);
    if (rc != SL_OK) {
        r->bad = true;
        return rc == SL_ENOMEM ? SL_ENOMEM : SL_EMALFORMED;
    }
    return SL_OK;
}

int bus_msg_decode(const void *p, size_t len, msg_t **out)
{
    return blob_msg_read(p, len, out);
}

int bus_frame_open(const void *frame, size_t len, const char **sender,
                   size_t *slen, bus_reader_t *rd)
{
    rd_t r = {frame, len, false};
    *sender = get_str(&r, slen);
    *rd = (bus_reader_t){r.p, r.len};
    if (!*sender) {
        *rd = (bus_reader_t){0};
        return SL_EMALFORMED;
    }
    return SL_OK;
}

int bus_next(bus_reader_t *rd, uint8_t *type, const uint8_t **body,
             size_t *blen)
{
    if (!rd->len)
        return 0;
    rd_t r = {rd->p, rd->len, false};
    *type = get_u8(&r);
    size_t n = get_u32(&r);
    *body = take(&r, n);
    if (!*body) {
        *rd = (bus_reader_t){0};
        *blen = 0;
        return SL_EMALFORMED;
    }
    *blen = n;
    *rd = (bus_reader_t){r.p, r.len};
    return 1;
}

/* The status of a decode that read only fixed fields and strings. */
static int result(const rd_t *r)
{
    return r->bad ? SL_EMALFORMED : SL_OK;
}

int bus_decode_reset(const uint8_t *body, size_t len, bus_reset_t *out)
{
    rd_t r = {body, len, false};
    out->started_ms = get_u64(&r);
    return result(&r);
}

int bus_decode_message(const uint8_t *body, size_t len, bus_message_t *out)
{
    rd_t r = {body, len, false};
    return get_msg(&r, &out->msg);
}

int bus_decode_retain(const uint8_t *body, size_t len, bus_retain_t *out)
{
    rd_t r = {body, len, false};
    return get_msg(&r, &out->msg);
}

int bus_decode_queued(const uint8_t *body, size_t len, bus_queued_t *out)
{
    rd_t r = {body, len, false};
    memset(out, 0, sizeof(*out));
    out->cid = get_str(&r, &out->clen);
    out->qid = get_u64(&r);
    out->qos = get_u8(&r);
    out->retain = get_u8(&r) != 0;
    uint8_t n = get_u8(&r);
    for (uint8_t i = 0; i < n && !r.bad; i++) {
        uint32_t id = get_u32(&r);
        if (i < BUS_MAX_SUBIDS)
            out->subids[out->n_subids++] = id;
    }
    if (r.bad)
        return SL_EMALFORMED;
    return get_msg(&r, &out->msg);
}

int bus_decode_route(const uint8_t *body, size_t len, bus_route_t *out)
{
    rd_t r = {body, len, false};
    out->seq = get_u32(&r);
    out->add = get_u8(&r) != 0;
    out->filter = get_str(&r, &out->flen);
    return result(&r);
}

int bus_decode_group(const uint8_t *body, size_t len, bus_group_t *out)
{
    rd_t r = {body, len, false};
    out->msg = NULL;
    out->share = get_str(&r, &out->slen);
    if (r.bad)
        return SL_EMALFORMED;
    return get_msg(&r, &out->msg);
}

int bus_decode_psub(const uint8_t *body, size_t len, bus_psub_t *out)
{
    rd_t r = {body, len, false};
    out->add = get_u8(&r) != 0;
    out->cid = get_str(&r, &out->clen);
    out->filter = get_str(&r, &out->flen);
    out->opts = get_u8(&r);
    out->sub_id = get_u32(&r);
    return result(&r);
}

int bus_decode_ended(const uint8_t *body, size_t len, bus_ended_t *out)
{
    rd_t r = {body, len, false};
    out->cid = get_str(&r, &out->clen);
    return result(&r);
}

int bus_decode_claim(const uint8_t *body, size_t len, bus_claim_t *out)
{
    rd_t r = {body, len, false};
    out->will = NULL;
    out->cid = get_str(&r, &out->clen);
    out->epoch = get_u64(&r);
    out->expiry = get_u32(&r);
    out->will_delay = get_u32(&r);
    bool has_will = get_u8(&r) != 0;
    if (r.bad)
        return SL_EMALFORMED;
    return has_will ? get_msg(&r, &out->will) : SL_OK;
}

int bus_decode_offline(const uint8_t *body, size_t len, bus_offline_t *out)
{
    rd_t r = {body, len, false};
    out->cid = get_str(&r, &out->clen);
    out->epoch = get_u64(&r);
    return result(&r);
}

int bus_decode_barrier(const uint8_t *body, size_t len, bus_barrier_t *out)
{
    rd_t r = {body, len, false};
    out->token = get_u64(&r);
    return result(&r);
}

int bus_decode(uint8_t type, const uint8_t *body, size_t len,
               bus_record_t *out)
{
    memset(out, 0, sizeof(*out));
    out->type = type;
    switch (type) {
    case BUS_RESET:
        return bus_decode_reset(body, len, &out->u.reset);
    case BUS_MESSAGE:
        return bus_decode_message(body, len, &out->u.message);
    case BUS_QUEUED:
        return bus_decode_queued(body, len, &out->u.queued);
    case BUS_ROUTE:
        return bus_decode_route(body, len, &out->u.route);
    case BUS_GROUP:
        return bus_decode_group(body, len, &out->u.group);
    case BUS_PSUB:
        return bus_decode_psub(body, len, &out->u.psub);
    case BUS_ENDED:
        return bus_decode_ended(body, len, &out->u.ended);
    case BUS_CLAIM:
        return bus_decode_claim(body, len, &out->u.claim);
    case BUS_OFFLINE:
        return bus_decode_offline(body, len, &out->u.offline);
    case BUS_RETAIN:
        return bus_decode_retain(body, len, &out->u.retain);
    case BUS_BARRIER:
        return bus_decode_barrier(body, len, &out->u.barrier);
    default:
        return SL_ENOTFOUND;
    }
}

void bus_record_clear(bus_record_t *rec)
{
    switch (rec->type) {
    case BUS_MESSAGE:
        msg_unref(&rec->u.message.msg);
        break;
    case BUS_QUEUED:
        msg_unref(&rec->u.queued.msg);
        break;
    case BUS_GROUP:
        msg_unref(&rec->u.group.msg);
        break;
    case BUS_CLAIM:
        msg_unref(&rec->u.claim.will);
        break;
    case BUS_RETAIN:
        msg_unref(&rec->u.retain.msg);
        break;
    default:
        break;
    }
}
