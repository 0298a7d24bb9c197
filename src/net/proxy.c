/*
 * proxy.c - the PROXY protocol header, versions 1 and 2 (see proxy.h).
 */
#include "proxy.h"

#include "starling/err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#define V1_MAX 107               /* the longest v1 line, CRLF included */
#define V2_HEAD 16

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* The first n bytes of p agree with the first n of `want`. */
static bool prefix_of(const uint8_t *p, size_t n, const void *want,
                      size_t wlen)
{
    return memcmp(p, want, n < wlen ? n : wlen) == 0;
}

/* A decimal port, 0..65535, no sign, no leading zero but "0" itself. */
static bool parse_port(const char *s, size_t len, uint16_t *out)
{
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* One address of a v1 line, checked by inet_pton and kept as text. */
static bool parse_addr(int af, const char *s, size_t len, char *out,
                       size_t outlen)
{
    unsigned char bin[16];
    if (len == 0 || len >= outlen)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return inet_pton(af, out, bin) == 1;
}

/* Split the line (without CRLF) at single spaces: up to `max` fields. */
static size_t split(const char *line, size_t len, const char **f,
                    size_t *flen, size_t max)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (n == max)
            return max + 1; /* too many */
        f[n] = line + start;
        flen[n] = i - start;
        n++;
        start = i + 1;
    }
    return n;
}

static int parse_v1(const uint8_t *p, size_t n, proxy_info_t *info,
                    size_t *used)
{
    static const char magic[] = "PROXY ";
    if (!prefix_of(p, n, magic, 6))
        return SL_EMALFORMED;
    size_t end = 0;
    for (size_t i = 1; i < n && i < V1_MAX; i++)
        if (p[i - 1] == '\r' && p[i] == '\n') {
            end = i + 1;
            break;
        }
    if (!end)
        return n >= V1_MAX ? SL_EMALFORMED : SL_AGAIN;
    if (end < 8)
        return SL_EMALFORMED;
    const char *line = (const char *)p + 6;
    size_t len = end - 2 - 6;
    const char *f[6];
    size_t fl[6];
    size_t nf = split(line, len, f, fl, 5);
    memset(info, 0, sizeof(*info));
    info->version = 1;
    if (nf >= 1 && fl[0] == 7 && !memcmp(f[0], "UNKNOWN", 7)) {
        *used = end; /* the rest of the line is ignored */
        return SL_OK;
    }
    if (nf != 5 || fl[0] != 4)
        return SL_EMALFORMED;
    int af;
    if (!memcmp(f[0], "TCP4", 4))
        af = AF_INET;
    else if (!memcmp(f[0], "TCP6", 4))
        af = AF_INET6;
    else
        return SL_EMALFORMED;
    if (!parse_addr(af, f[1], fl[1], info->src, sizeof(info->src)) ||
        !parse_addr(af, f[2], fl[2], info->dst, sizeof(info->dst)) ||
        !parse_port(f[3], fl[3], &info->src_port) ||
        !parse_port(f[4], fl[4], &info->dst_port))
        return SL_EMALFORMED;
    info->has_addr = true;
    *used = end;
    return SL_OK;
}

static int parse_v2(const uint8_t *p, size_t n, proxy_info_t *info,
                    size_t *used)
{
    if (!prefix_of(p, n, v2_sig, sizeof(v2_sig)))
        return SL_EMALFORMED;
    if (n > 12 && (p[12] >> 4) != 2)
        return SL_EMALFORMED; /* version 2 only */
    if (n > 12 && (p[12] & 0x0F) > 1)
        return SL_EMALFORMED; /* LOCAL or PROXY */
    if (n < V2_HEAD)
        return SL_AGAIN;
    size_t len = (size_t)p[14] << 8 | p[15];
    if (V2_HEAD + len > PROXY_MAX_HEADER)
        return SL_EMALFORMED;
    if (n < V2_HEAD + len)
        return SL_AGAIN;
    memset(info, 0, sizeof(*info));
    info->version = 2;
    *used = V2_HEAD + len;
    if ((p[12] & 0x0F) == 0)
        return SL_OK; /* LOCAL: the balancer's own connection */
    const uint8_t *a = p + V2_HEAD;
    uint8_t family = p[13] >> 4;
    if (family == 1) {
        if (len < 12)
            return SL_EMALFORMED;
        inet_ntop(AF_INET, a, info->src, sizeof(info->src));
        inet_ntop(AF_INET, a + 4, info->dst, sizeof(info->dst));
        info->src_port = (uint16_t)(a[8] << 8 | a[9]);
        info->dst_port = (uint16_t)(a[10] << 8 | a[11]);
        info->has_addr = true;
    } else if (family == 2) {
        if (len < 36)
            return SL_EMALFORMED;
        inet_ntop(AF_INET6, a, info->src, sizeof(info->src));
        inet_ntop(AF_INET6, a + 16, info->dst, sizeof(info->dst));
        info->src_port = (uint16_t)(a[32] << 8 | a[33]);
        info->dst_port = (uint16_t)(a[34] << 8 | a[35]);
        info->has_addr = true;
    } else if (family > 3) {
        return SL_EMALFORMED;
    }
    /* UNSPEC and UNIX carry no address we can use: the peer stays. */
    return SL_OK;
}

int proxy_parse(const uint8_t *p, size_t n, proxy_info_t *info, size_t *used)
{
    if (n == 0)
        return SL_AGAIN;
    if (p[0] == 'P')
        return parse_v1(p, n, info, used);
    if (p[0] == 0x0D)
        return parse_v2(p, n, info, used);
    return SL_EMALFORMED;
}

void proxy_peer(const proxy_info_t *info, char *out, size_t len)
{
    if (strchr(info->src, ':'))
        snprintf(out, len, "[%s]:%u", info->src, info->src_port);
    else
        snprintf(out, len, "%s:%u", info->src, info->src_port);
}
