/*
 * proxy.h - the PROXY protocol header (HAProxy's, versions 1 and 2) that a
 * load balancer puts in front of a client's bytes to say who the client
 * is. Sans-I/O: fed the first bytes of a connection, it answers "need
 * more", "this header, n bytes long" or "not a valid header".
 *
 *   v1: "PROXY TCP4|TCP6|UNKNOWN <src> <dst> <sport> <dport>\r\n", at most
 *       107 bytes, text;
 *   v2: a 12-byte signature, version/command, family/protocol, a 16-bit
 *       length, the addresses, then TLVs (skipped).
 *
 * A LOCAL (v2) or UNKNOWN (v1) header is valid and carries no address:
 * the connection's own peer stays the client (a health check by the load
 * balancer itself).
 */
#ifndef STARLING_NET_PROXY_H
#define STARLING_NET_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest header accepted: v1's 107 bytes, or v2's 16 + its length
 * (addresses and TLVs), bounded so a client cannot make us buffer more. */
#define PROXY_MAX_HEADER 1024

typedef struct proxy_info {
    int version;                 /* 1 or 2 */
    bool has_addr;               /* false: LOCAL / UNKNOWN */
    char src[46];                /* the client's address, text */
    uint16_t src_port;
    char dst[46];                /* the address the client connected to */
    uint16_t dst_port;
} proxy_info_t;

/*
 * Parse the header at the start of p[0..n). Returns SL_OK with *used set
 * to the header's length and *info filled, SL_AGAIN when the bytes so far
 * are a valid beginning but not a whole header, SL_EMALFORMED when they
 * cannot start a valid header (or it is longer than PROXY_MAX_HEADER).
 */
int proxy_parse(const uint8_t *p, size_t n, proxy_info_t *info, size_t *used);

/* "host:port" of the client (IPv6 in brackets), for logs and auth. */
void proxy_peer(const proxy_info_t *info, char *out, size_t len);

#endif
