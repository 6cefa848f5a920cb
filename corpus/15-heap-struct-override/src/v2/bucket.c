/* bucket.c - per-client token buckets. Every bucket lives in its own
 * 32-byte slot of a zero-filled arena, whatever sizeof(struct bucket) is. */
#include "hp.h"

#define SLOT_BYTES 32u
#define MAX_BUCKETS 16u
#define BURST_MAX 500u

struct bucket {
    unsigned long long tokens;
    unsigned long long refill;   /* tokens added per tick */
    unsigned long long burst;    /* fix: most tokens one take may use; 0 = no cap */
};

_Static_assert(sizeof(struct bucket) <= SLOT_BYTES, "a bucket must fit its slot");

static unsigned char arena[SLOT_BYTES * MAX_BUCKETS] __attribute__((aligned(16)));
static unsigned int nbuckets;

static struct bucket *bucket_at(long long h)
{
    if (h < 0 || (unsigned long long)h >= nbuckets)
        return 0;
    return (struct bucket *)&arena[(unsigned long long)h * SLOT_BYTES];
}

/* A new bucket, full, that gains `refill` tokens per tick; its handle or -1. */
HP_EXPORT long long bucket_new(long long refill)
{
    struct bucket *b;

    if (refill <= 0 || nbuckets >= MAX_BUCKETS)
        return -1;
    b = (struct bucket *)&arena[nbuckets * SLOT_BYTES];
    b->tokens = (unsigned long long)refill;
    b->refill = (unsigned long long)refill;
    b->burst = BURST_MAX;
    return nbuckets++;
}

/* Take n tokens; returns the tokens left, or -1 when there are not enough
 * or n is over the bucket's burst cap. */
HP_EXPORT long long bucket_take(long long h, long long n)
{
    struct bucket *b = bucket_at(h);

    if (!b || n <= 0 || (unsigned long long)n > b->tokens)
        return -1;
    if (b->burst && (unsigned long long)n > b->burst)
        return -1;
    b->tokens -= (unsigned long long)n;
    return (long long)b->tokens;
}

/* One tick: add the refill; returns the tokens now held, or -1. */
HP_EXPORT long long bucket_tick(long long h)
{
    struct bucket *b = bucket_at(h);

    if (!b)
        return -1;
    b->tokens += b->refill;
    return (long long)b->tokens;
}
