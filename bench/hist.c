/*
 * hist.c - a log-linear latency histogram for starling-bench.
 *
 * Values below 2^(HIST_SUB_BITS+1) are counted exactly; above, each power of
 * two is split into 2^HIST_SUB_BITS equal buckets, so a reported quantile is
 * within 1/64 of the true value. Adding is O(1) and the memory is fixed
 * (about 20 KiB), whatever the number of samples: a run of a hundred million
 * messages costs the same as a run of ten.
 */
#include "bench.h"

#define EXACT (1u << (HIST_SUB_BITS + 1)) /* 128 */

static unsigned bucket_of(uint64_t v)
{
    if (v < EXACT)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    unsigned idx = EXACT + (shift - 1) * (1u << HIST_SUB_BITS) +
                   (unsigned)((v >> shift) - (1u << HIST_SUB_BITS));
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of a bucket's range of values. */
static uint64_t value_of(unsigned idx)
{
    if (idx < EXACT)
        return idx;
    unsigned rel = idx - EXACT;
    unsigned shift = rel / (1u << HIST_SUB_BITS) + 1;
    uint64_t mant = (1u << HIST_SUB_BITS) + rel % (1u << HIST_SUB_BITS);
    uint64_t lo = mant << shift;
    return lo + ((1ull << shift) >> 1);
}

void hist_add(hist_t *h, uint64_t v)
{
    h->bucket[bucket_of(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->bucket[i] += from->bucket[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = value_of(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}
