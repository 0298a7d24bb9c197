/*
 * test_proxy.c - the PROXY protocol header parser (src/net/proxy.c):
 * versions 1 and 2, whole and in pieces, and what must be refused.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "../../src/net/proxy.h"
#include "starling/err.h"

static int parse_str(const char *s, proxy_info_t *info, size_t *used)
{
    return proxy_parse((const uint8_t *)s, strlen(s), info, used);
}

Test(proxy, v1_tcp4_then_payload)
{
    const char *s = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n\x10";
    proxy_info_t in;
    size_t used = 0;
    cr_assert_eq(parse_str(s, &in, &used), SL_OK);
    cr_assert_eq(used, strlen(s) - 1, "the MQTT byte after it is not eaten");
    cr_assert_eq(in.version, 1);
    cr_assert(in.has_addr);
    cr_assert_str_eq(in.src, "192.0.2.7");
    cr_assert_eq(in.src_port, 56324);
    cr_assert_str_eq(in.dst, "198.51.100.1");
    cr_assert_eq(in.dst_port, 1883);
    char peer[64];
    proxy_peer(&in, peer, sizeof(peer));
    cr_assert_str_eq(peer, "192.0.2.7:56324");
}

Test(proxy, v1_tcp6_and_unknown)
{
    proxy_info_t in;
    size_t used;
    cr_assert_eq(parse_str("PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n",
                           &in, &used),
                 SL_OK);
    char peer[64];
    proxy_peer(&in, peer, sizeof(peer));
    cr_assert_str_eq(peer, "[2001:db8::1]:4000");
    cr_assert_eq(parse_str("PROXY UNKNOWN\r\n", &in, &used), SL_OK);
    cr_assert_not(in.has_addr);
    cr_assert_eq(parse_str("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", &in,
                           &used),
                 SL_OK);
    cr_assert_not(in.has_addr);
}

Test(proxy, v1_every_prefix_needs_more)
{
    const char *s = "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n";
    proxy_info_t in;
    size_t used;
    for (size_t n = 0; n < strlen(s); n++)
        cr_assert_eq(proxy_parse((const uint8_t *)s, n, &in, &used), SL_AGAIN,
                     "prefix of %zu bytes", n);
    cr_assert_eq(parse_str(s, &in, &used), SL_OK);
}

Test(proxy, v1_refused)
{
    static const char *const bad[] = {
        "\x10\x0c\x00\x04MQTT",                       /* plain MQTT */
        "GET / HTTP/1.1\r\n",                          /* HTTP */
        "PROXY TCP5 10.0.0.1 10.0.0.2 1 2\r\n",        /* protocol */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n",          /* a field missing */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2 3\r\n",      /* one too many */
        "PROXY TCP4 10.0.0.256 10.0.0.2 1 2\r\n",      /* address */
        "PROXY TCP4 2001:db8::1 10.0.0.2 1 2\r\n",     /* family mismatch */
        "PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n",    /* port range */
        "PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n",       /* leading zero */
        "PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n",       /* double space */
        "PROXY \r\n",                                  /* empty */
    };
    proxy_info_t in;
    size_t used;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(parse_str(bad[i], &in, &used), SL_EMALFORMED,
                     "%zu: %s", i, bad[i]);
    /* No CRLF within 107 bytes. */
    char longline[200];
    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    cr_assert_eq(proxy_parse((const uint8_t *)longline, sizeof(longline), &in,
                             &used),
                 SL_EMALFORMED);
}

static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *addr,
                 size_t alen, size_t tlv)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    size_t len = alen + tlv;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    memcpy(out + 16, addr, alen);
    memset(out + 16 + alen, 0xAB, tlv);
    return 16 + len;
}

Test(proxy, v2_inet_with_tlvs_in_pieces)
{
    uint8_t buf[128];
    const uint8_t a[12] = {192, 0, 2, 9, 10, 0, 0, 1, 0x1F, 0x90, 0x07, 0x5B};
    size_t n = v2(buf, 1, 0x11, a, sizeof(a), 7);
    proxy_info_t in;
    size_t used;
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(proxy_parse(buf, k, &in, &used), SL_AGAIN, "%zu", k);
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_OK);
    cr_assert_eq(used, n);
    cr_assert(in.has_addr);
    cr_assert_eq(in.version, 2);
    cr_assert_str_eq(in.src, "192.0.2.9");
    cr_assert_eq(in.src_port, 8080);
    cr_assert_str_eq(in.dst, "10.0.0.1");
    cr_assert_eq(in.dst_port, 1883);
}

Test(proxy, v2_inet6_local_unspec)
{
    uint8_t buf[128], a[36] = {0};
    a[0] = 0x20;
    a[1] = 0x01;
    a[15] = 1;
    a[32] = 0x12;
    a[33] = 0x34;
    proxy_info_t in;
    size_t used;
    size_t n = v2(buf, 1, 0x21, a, sizeof(a), 0);
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_OK);
    cr_assert_str_eq(in.src, "2001::1");
    cr_assert_eq(in.src_port, 0x1234);
    n = v2(buf, 0, 0x11, a, 12, 0); /* LOCAL: addresses ignored */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_OK);
    cr_assert_not(in.has_addr);
    n = v2(buf, 1, 0x00, a, 0, 0); /* UNSPEC */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_OK);
    cr_assert_not(in.has_addr);
}

Test(proxy, v2_refused)
{
    uint8_t buf[2048] = {0};
    const uint8_t a[12] = {0};
    proxy_info_t in;
    size_t used;
    size_t n = v2(buf, 1, 0x11, a, sizeof(a), 0);
    buf[11] = 0x0B; /* signature */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_EMALFORMED);
    n = v2(buf, 1, 0x11, a, sizeof(a), 0);
    buf[12] = 0x11; /* version 1 in a v2 header */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_EMALFORMED);
    n = v2(buf, 2, 0x11, a, sizeof(a), 0); /* command 2 */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_EMALFORMED);
    n = v2(buf, 1, 0x11, a, 8, 0); /* INET shorter than its addresses */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_EMALFORMED);
    n = v2(buf, 1, 0x51, a, sizeof(a), 0); /* family 5 */
    cr_assert_eq(proxy_parse(buf, n, &in, &used), SL_EMALFORMED);
    n = v2(buf, 1, 0x11, a, sizeof(a), PROXY_MAX_HEADER); /* too long */
    cr_assert_eq(proxy_parse(buf, 16, &in, &used), SL_EMALFORMED);
}
