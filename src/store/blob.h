/*
 * blob.h - the byte encodings the Redis backend stores (internal).
 *
 * A message (queue entries, wills, retained messages) is one binary string,
 * big-endian, so a message is rebuilt with msg_new() from one value:
 *
 *   u8  format (1)
 *   u8  flags: bits 0-1 QoS as published, bit 2 RETAIN
 *   u64 expiry_at (ms since the epoch, 0 = never)
 *   u16 topic length, topic
 *   u32 payload length, payload
 *   u32 properties length, properties (MQTT 5, already encoded)
 *
 * A queue entry is one byte (the effective QoS of the delivery) followed by
 * the message. A subscription value is 5 bytes: the options byte, then the
 * subscription identifier as u32. Decoders check every length first.
 */
#ifndef STARLING_STORE_BLOB_H
#define STARLING_STORE_BLOB_H

#include "starling/msg.h"

#include <stddef.h>
#include <stdint.h>

#define BLOB_SUB_LEN 5

size_t blob_msg_size(const msg_t *m);
/* Write the encoding of m into out (blob_msg_size(m) bytes). */
void blob_msg_write(const msg_t *m, uint8_t *out);
/* A new message (one reference) from buf. SL_OK, SL_EMALFORMED, SL_ENOMEM. */
int blob_msg_read(const void *buf, size_t len, msg_t **out);

void blob_sub_write(uint8_t opts, uint32_t sub_id, uint8_t out[BLOB_SUB_LEN]);
int blob_sub_read(const void *buf, size_t len, uint8_t *opts, uint32_t *sub_id);

#endif
