/* conn.c - connection records allocated from a bump arena. conn_open
 * allocates a struct conn of sizeof(struct conn) bytes; the other entry
 * points read and update the records through their handles. */
#include "hp.h"

#define MAX_CONNS 8u
#define ARENA_BYTES 1024u
#define DEFAULT_LIMIT 4096u

struct conn {
    unsigned int id;
    unsigned int state;
    unsigned long long limit;   /* fix: a connection may receive at most this many bytes */
    unsigned long long bytes;   /* bytes received so far */
};

static unsigned char arena[ARENA_BYTES] __attribute__((aligned(16)));
static unsigned long long arena_used;
static struct conn *conns[MAX_CONNS];
static unsigned int nconns;

/* Bump allocation of n bytes, 16-byte aligned; 0 when the arena is full. */
static HP_NOINLINE void *arena_alloc(unsigned long long n)
{
    unsigned long long at = (arena_used + 15u) & ~15ull;

    if (at + n > ARENA_BYTES)
        return 0;
    arena_used = at + n;
    return &arena[at];
}

/* A new, open connection record, or 0. */
static HP_NOINLINE struct conn *conn_open(unsigned int id)
{
    struct conn *c = arena_alloc(sizeof(struct conn));

    if (!c)
        return 0;
    c->id = id;
    c->state = 1u;
    c->limit = DEFAULT_LIMIT;
    c->bytes = 0u;
    return c;
}

static struct conn *conn_get(long long h)
{
    if (h < 0 || (unsigned long long)h >= nconns)
        return 0;
    return conns[h];
}

/* Accept a connection; returns its handle or -1. */
HP_EXPORT long long conn_accept(long long id)
{
    struct conn *c;

    if (nconns >= MAX_CONNS)
        return -1;
    c = conn_open((unsigned int)id);
    if (!c)
        return -1;
    conns[nconns] = c;
    return nconns++;
}

/* Account n received bytes; returns the connection's total or -1. */
HP_EXPORT long long conn_recv(long long h, long long n)
{
    struct conn *c = conn_get(h);

    if (!c || n < 0)
        return -1;
    if (c->bytes + (unsigned long long)n > c->limit)
        return -1;
    c->bytes += (unsigned long long)n;
    return (long long)c->bytes;
}

HP_EXPORT long long conn_bytes(long long h)
{
    const struct conn *c = conn_get(h);

    return c ? (long long)c->bytes : -1;
}
