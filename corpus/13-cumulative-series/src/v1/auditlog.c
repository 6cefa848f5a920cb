/* auditlog.c - audit event ring of the last 8 events, with per-event sizes
 * and a rolling digest that the host compares against its own copy. */
#include "hp.h"

#define RING_CAP 8u

struct event {
    unsigned int code;
    unsigned int size;
};

static struct event ring[RING_CAP];
static unsigned int pushed;        /* events pushed since start */
static unsigned int dropped;

/* Bytes an event occupies in the export stream: 8-byte header + payload
 * rounded up to 4. */
static HP_NOINLINE unsigned int event_bytes(const struct event *e)
{
    return 8u + ((e->size + 3u) & ~3u);
}

static unsigned int cache_n, cache_at, cache_val;

/* Digest over the newest n events. Hosts ask for the same digest repeatedly,
 * so the last answer is cached until the next push. */
static unsigned int digest(unsigned int n)
{
    unsigned int h = 0x811c9dc5u, i;

    if (HP_LIKELY(n == cache_n && pushed == cache_at))
        return cache_val;
    for (i = 0; i < n; i++) {
        const struct event *e = &ring[(pushed - 1u - i) % RING_CAP];

        h = (h ^ e->code) * 16777619u;
        h ^= h >> 15;
        h = (h ^ e->size) * 16777619u;
        h ^= h >> 13;
        h += (h << 3) ^ i;
    }
    cache_n = n;
    cache_at = pushed;
    cache_val = h;
    return h;
}

/* Record an event; returns the number of events pushed so far. */
HP_EXPORT long long log_push(long long code, long long size)
{
    struct event *e;

    if (code <= 0 || code > 0xffff) {
        dropped++;
        return -1;
    }
    e = &ring[pushed % RING_CAP];
    e->code = (unsigned int)code;
    e->size = (unsigned int)size;
    pushed++;
    return pushed;
}

/* Code of the event pushed age events ago (0 = newest), or -1. */
HP_EXPORT long long log_code(long long age)
{
    unsigned long long a = (unsigned long long)age;

    if (a >= RING_CAP)
        return -1;
    return ring[(pushed - 1u - (unsigned int)a) % RING_CAP].code;
}

/* Export-stream bytes of the newest n events, or -1. */
HP_EXPORT long long log_bytes(long long n)
{
    unsigned int total = 0, i, cnt;

    if (n < 0)
        return -1;
    cnt = n > RING_CAP ? RING_CAP : (unsigned int)n;
    if (cnt > pushed)
        cnt = pushed;
    for (i = 0; i < cnt; i++)
        total += event_bytes(&ring[(pushed - 1u - i) % RING_CAP]);
    return total;
}

/* Digest over the newest n (at most 8) events; 0 when there are none. */
HP_EXPORT long long log_digest(long long n)
{
    unsigned int cnt;

    if (n <= 0)
        return 0;
    cnt = n > RING_CAP ? RING_CAP : (unsigned int)n;
    if (cnt > pushed)
        cnt = pushed;
    return digest(cnt);
}

/* 1 if the host's digest over the newest n events matches ours. */
HP_EXPORT long long log_verify(long long n, long long expect)
{
    if (n <= 0 || n > RING_CAP || (unsigned long long)n > pushed)
        return -1;
    return digest((unsigned int)n) == (unsigned long long)expect;
}

HP_EXPORT long long log_dropped(void)
{
    return dropped;
}
