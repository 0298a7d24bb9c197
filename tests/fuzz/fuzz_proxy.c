/*
 * fuzz_proxy.c - libFuzzer target for the PROXY protocol header parser:
 * any bytes, whole and cut at every length the input's first byte picks,
 * must give SL_OK with a length inside the input, SL_AGAIN or
 * SL_EMALFORMED, never a read past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/proxy.h"
#include "starling/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so ASan sees any overread. */
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);
    proxy_info_t info;
    size_t used = 0;
    int rc = proxy_parse(p, size, &info, &used);
    if (rc == SL_OK && (used == 0 || used > size))
        abort();
    if (rc != SL_OK && rc != SL_AGAIN && rc != SL_EMALFORMED)
        abort();
    if (rc == SL_OK) {
        char peer[80];
        proxy_peer(&info, peer, sizeof(peer));
        /* The same header cut short is never complete. */
        if (proxy_parse(p, used - 1, &info, &used) == SL_OK)
            abort();
    }
    free(p);
    return 0;
}
