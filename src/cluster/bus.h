/*
 * bus.h - the records nodes send each other over the cluster's bus
 * (pure: no I/O, no event loop, no logging; unit-tested and fuzzed).
 *
 * A frame is the payload of one PUBLISH on a bus channel:
 *
 *   u16 sender id length, sender id
 *   records, back to back: u8 type, u32 body length, body
 *
 * Integers are big-endian. In a body, a string is u16 length + bytes and a
 * message is u32 length + its blob encoding (src/store/blob.h, the one the
 * store keeps too). The type bytes are single letters (enum bus_type).
 *
 * Every length is checked before it is used. A decoder reads the fields it
 * knows and ignores bytes after them (a newer node may append fields); a
 * record of a type this version does not know is skipped by its length.
 *
 * Encoders append one whole record or nothing (false: out of memory, or a
 * field too long for its length prefix). Decoded strings are views into
 * the body; a decoded message is a new reference, dropped by
 * bus_record_clear() (or msg_unref() on the field).
 */
#ifndef STARLING_CLUSTER_BUS_H
#define STARLING_CLUSTER_BUS_H

#include "starling/msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bus_type {
    BUS_RESET = 'Z',      /* broadcast: this node (re)started */
    BUS_MESSAGE = 'M',    /* to a node: a message for its subscribers */
    BUS_QUEUED = 'Q',     /* to a node: an entry queued for its session */
    BUS_ROUTE = 'R',      /* broadcast: a route added or removed */
    BUS_GROUP = 'G',      /* to a node: a message for one group member */
    BUS_PSUB = 'S',       /* broadcast: persistent subscription +/- */
    BUS_ENDED = 'E',      /* broadcast: a persistent session ended */
    BUS_CLAIM = 'O',      /* broadcast: a session claimed (owner, epoch) */
    BUS_OFFLINE = 'F',    /* broadcast: a session went offline */
    BUS_RETAIN = 'T',     /* broadcast: a retained message set or cleared */
    BUS_BARRIER = 'B',    /* to ourselves: everything published before is in */
} bus_type_t;

/* A growing byte buffer (a batch of records, or a frame). */
typedef struct bus_buf {
    uint8_t *p;
    size_t len, cap;
} bus_buf_t;

void bus_buf_free(bus_buf_t *b);

#define BUS_MAX_SUBIDS 4

/* 'Z': u64 start time (ms since the epoch). */
typedef struct bus_reset {
    uint64_t started_ms;
} bus_reset_t;

/* 'M': message. */
typedef struct bus_message {
    msg_t *msg;
} bus_message_t;

/* 'Q': str client id, u64 queue entry id, u8 QoS, u8 retain, u8 n, n x u32
 * subscription ids, message. Up to BUS_MAX_SUBIDS ids are kept. */
typedef struct bus_queued {
    const char *cid;
    size_t clen;
    uint64_t qid;
    uint8_t qos;
    bool retain;
    uint8_t n_subids;
    uint32_t subids[BUS_MAX_SUBIDS];
    msg_t *msg;
} bus_queued_t;

/* 'R': u32 sequence number, u8 add, str filter. */
typedef struct bus_route {
    uint32_t seq;
    bool add;
    const char *filter;
    size_t flen;
} bus_route_t;

/* 'G': str "$share/<g>/<f>", message. */
typedef struct bus_group {
    const char *share;
    size_t slen;
    msg_t *msg;
} bus_group_t;

/* 'S': u8 add, str client id, str filter, u8 options, u32 subscription id
 * (options: bits 0-1 QoS, 2 no local, 3 retain as published, 4-5 retain
 * handling). */
typedef struct bus_psub {
    bool add;
    const char *cid;
    size_t clen;
    const char *filter;
    size_t flen;
    uint8_t opts;
    uint32_t sub_id;
} bus_psub_t;

/* 'E': str client id. */
typedef struct bus_ended {
    const char *cid;
    size_t clen;
} bus_ended_t;

/* 'O': str client id, u64 epoch, u32 session expiry (0: clean session),
 * u32 will delay, u8 has will, [message]. */
typedef struct bus_claim {
    const char *cid;
    size_t clen;
    uint64_t epoch;
    uint32_t expiry;
    uint32_t will_delay;
    msg_t *will;          /* NULL: none */
} bus_claim_t;

/* 'F': str client id, u64 epoch. */
typedef struct bus_offline {
    const char *cid;
    size_t clen;
    uint64_t epoch;
} bus_offline_t;

/* 'T': message (an empty payload clears the topic). */
typedef struct bus_retain {
    msg_t *msg;
} bus_retain_t;

/* 'B': u64 token (0: a probe, releases no barrier). */
typedef struct bus_barrier {
    uint64_t token;
} bus_barrier_t;

/* Any record. */
typedef struct bus_record {
    uint8_t type;         /* bus_type_t */
    union {
        bus_reset_t reset;
        bus_message_t message;
        bus_queued_t queued;
        bus_route_t route;
        bus_group_t group;
        bus_psub_t psub;
        bus_ended_t ended;
        bus_claim_t claim;
        bus_offline_t offline;
        bus_retain_t retain;
        bus_barrier_t barrier;
    } u;
} bus_record_t;

/* ---- encoding: append one record to w (messages are only read) --------- */
bool bus_encode_reset(bus_buf_t *w, const bus_reset_t *r);
bool bus_encode_message(bus_buf_t *w, const bus_message_t *r);
bool bus_encode_queued(bus_buf_t *w, const bus_queued_t *r);
bool bus_encode_route(bus_buf_t *w, const bus_route_t *r);
bool bus_encode_group(bus_buf_t *w, const bus_group_t *r);
bool bus_encode_psub(bus_buf_t *w, const bus_psub_t *r);
bool bus_encode_ended(bus_buf_t *w, const bus_ended_t *r);
bool bus_encode_claim(bus_buf_t *w, const bus_claim_t *r);
bool bus_encode_offline(bus_buf_t *w, const bus_offline_t *r);
bool bus_encode_retain(bus_buf_t *w, const bus_retain_t *r);
bool bus_encode_barrier(bus_buf_t *w, const bus_barrier_t *r);
/* By rec->type; false for a type this version does not know. */
bool bus_encode(bus_buf_t *w, const bus_record_t *rec);

/* Start a frame in w (its content is replaced): the sender id. Records
 * follow through the encoders; the first starts at bus_frame_head(slen). */
bool bus_frame_begin(bus_buf_t *w, const char *sender, size_t slen);
size_t bus_frame_head(size_t slen);

/* ---- decoding ------------------------------------------------------------ */

/* The records of a frame, read one by one. */
typedef struct bus_reader {
    const uint8_t *p;
    size_t len;
} bus_reader_t;

/* The sender of a frame and a reader at its first record. SL_OK or
 * SL_EMALFORMED. */
int bus_frame_open(const void *frame, size_t len, const char **sender,
                   size_t *slen, bus_reader_t *rd);
/* The next record: 1 with its type and body (a view), 0 at the end of the
 * frame, SL_EMALFORMED when the rest is truncated (nothing more is read). */
int bus_next(bus_reader_t *rd, uint8_t *type, const uint8_t **body,
             size_t *blen);

/* Decode one body: SL_OK, SL_EMALFORMED (out holds no message then) or
 * SL_ENOMEM. */
int bus_decode_reset(const uint8_t *body, size_t len, bus_reset_t *out);
int bus_decode_message(const uint8_t *body, size_t len, bus_message_t *out);
int bus_decode_queued(const uint8_t *body, size_t len, bus_queued_t *out);
int bus_decode_route(const uint8_t *body, size_t len, bus_route_t *out);
int bus_decode_group(const uint8_t *body, size_t len, bus_group_t *out);
int bus_decode_psub(const uint8_t *body, size_t len, bus_psub_t *out);
int bus_decode_ended(const uint8_t *body, size_t len, bus_ended_t *out);
int bus_decode_claim(const uint8_t *body, size_t len, bus_claim_t *out);
int bus_decode_offline(const uint8_t *body, size_t len, bus_offline_t *out);
int bus_decode_retain(const uint8_t *body, size_t len, bus_retain_t *out);
int bus_decode_barrier(const uint8_t *body, size_t len, bus_barrier_t *out);
/* By type, into out (out->type = type); SL_ENOTFOUND for a type this
 * version does not know (skip the record). */
int bus_decode(uint8_t type, const uint8_t *body, size_t len,
               bus_record_t *out);
/* Drop the message a decoded record holds (if any). */
void bus_record_clear(bus_record_t *rec);

/* A message in the blob encoding records carry, without the length prefix
 * (the store keeps wills this way). SL_OK, SL_EMALFORMED or SL_ENOMEM. */
int bus_msg_decode(const void *p, size_t len, msg_t **out);

#endif
