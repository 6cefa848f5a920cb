/* tablealloc.c - bump allocator for decoded record tables.
 *
 * A record header announces how many entries follow and how large each is;
 * the decoder reserves header + count * size bytes from a fixed pool. Sizes
 * are 32-bit, as on the wire. */
#include "hp.h"

#define POOL_SIZE 4096u
#define TABLE_HDR 16u

static unsigned int pool_used;
static unsigned int last_count;
static unsigned int last_size;
static unsigned int tables;

/* Round v up to a multiple of a (a power of two). */
static HP_NOINLINE unsigned int align_up(unsigned int v, unsigned int a)
{
    return (v + a - 1u) & ~(a - 1u);
}

/* Reserve a table of count entries of elem_size bytes; returns the number of
 * bytes reserved, or -1. */
HP_EXPORT long long table_alloc(long long count, long long elem_size)
{
    unsigned int n = (unsigned int)count;
    unsigned int sz = (unsigned int)elem_size;
    unsigned int need;

    if (n == 0 || sz == 0)
        return -1;
    need = align_up(TABLE_HDR + n * sz, 8u);
    if (need > POOL_SIZE - pool_used)
        return -1;
    pool_used += need;
    last_count = n;
    last_size = sz;
    tables++;
    return need;
}

/* Bytes the decoder believes the last table spans (count * size, 64-bit). */
HP_EXPORT long long table_span(void)
{
    return (long long)last_count * last_size;
}

HP_EXPORT long long pool_free(void)
{
    return POOL_SIZE - pool_used;
}

HP_EXPORT long long pool_reset(void)
{
    long long n = tables;

    pool_used = 0;
    last_count = 0;
    last_size = 0;
    tables = 0;
    return n;
}
