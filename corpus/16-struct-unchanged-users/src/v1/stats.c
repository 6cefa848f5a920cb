/* stats.c - per-port packet counters in 32-byte arena slots, a small ring
 * of recent packet sizes guarded by a canary, and a packet header decoder. */
#include "hp.h"

#define SLOT_BYTES 32u
#define MAX_PORTS 8u
#define RING_CAP 8u
#define CANARY 0x5afe5afeull
/* Slots are sizeof(struct stats) rounded up to 32 bytes. */
#define SLOT_OF(t) ((sizeof(t) + SLOT_BYTES - 1u) & ~(unsigned long long)(SLOT_BYTES - 1u))

struct stats {
    unsigned long long pkts;
    unsigned long long bytes;
};

static unsigned char arena[SLOT_BYTES * MAX_PORTS] __attribute__((aligned(16)));
static unsigned long long arena_used;
static struct stats *ports[MAX_PORTS];
static unsigned int nports;
/* The slot after the ring holds a canary the host checks. */
static unsigned long long ring[RING_CAP + 1u] = { [RING_CAP] = CANARY };

/* Open a port's counters; returns its handle or -1. */
HP_EXPORT long long stats_open(void)
{
    struct stats *s;

    if (nports >= MAX_PORTS || arena_used + SLOT_OF(struct stats) > sizeof(arena))
        return -1;
    s = (struct stats *)&arena[arena_used];
    arena_used += SLOT_OF(struct stats);
    s->pkts = 0u;
    s->bytes = 0u;
    ports[nports] = s;
    return nports++;
}

static struct stats *port(long long h)
{
    if (h < 0 || (unsigned long long)h >= nports)
        return 0;
    return ports[h];
}

/* Count a packet of n bytes; returns the port's packet count or -1. */
HP_EXPORT long long stats_count(long long h, long long n)
{
    struct stats *s = port(h);

    if (!s || n < 0)
        return -1;
    s->pkts++;
    s->bytes += (unsigned long long)n;
    return (long long)s->pkts;
}

HP_EXPORT long long stats_bytes(long long h)
{
    const struct stats *s = port(h);

    return s ? (long long)s->bytes : -1;
}

/* Store a packet size in ring slot i; returns i or -1. */
HP_EXPORT long long ring_put(long long i, long long v)
{
    if (i < 0 || i > (long long)RING_CAP)
        return -1;
    ring[i] = (unsigned long long)v;
    return i;
}

HP_EXPORT long long ring_get(long long i)
{
    if (i < 0 || i >= (long long)RING_CAP)
        return -1;
    return (long long)ring[i];
}

HP_EXPORT long long ring_canary(void)
{
    return (long long)ring[RING_CAP];
}

/* An IPv4-like packet header as the NIC writes it (little-endian bit-fields). */
typedef struct {
    unsigned int version : 4;
    unsigned int ihl : 4;       /* header length in 32-bit words */
    unsigned int tos : 8;
    unsigned int len : 16;      /* total length in bytes */
    union {
        unsigned int word;
        unsigned char bytes[4];
    };
    struct {
        unsigned short id;
        unsigned short frag;
    } ident;
} pkt_hdr;

union hdr_bits {
    unsigned long long raw[2];
    pkt_hdr h;
};

/* Header bytes of a version-4 packet, or -1 when the header is malformed. */
static HP_NOINLINE long long hdr_bytes(const pkt_hdr *h)
{
    if (h->version != 4u || h->ihl < 5u || h->len < h->ihl * 4u)
        return -1;
    return (long long)(h->ihl * 4u);
}

HP_EXPORT long long hdr_len(long long w0, long long w1)
{
    union hdr_bits u;

    u.raw[0] = (unsigned long long)w0;
    u.raw[1] = (unsigned long long)w1;
    return hdr_bytes(&u.h);
}
