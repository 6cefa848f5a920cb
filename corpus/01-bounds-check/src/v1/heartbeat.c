/* heartbeat.c - TLS-style heartbeat echo over a fixed record store.
 *
 * The record store is reused between messages: bytes past the logical
 * length of the current record still hold whatever an earlier message left
 * there (here: part of a private key from an earlier handshake record). */
#include "hp.h"

#define REC_CAP 64u
#define PAYLOAD_MAX 16u

static unsigned char rec_store[REC_CAP] =
    "HEARTBEAT-PAD..."                 /* 16 bytes: payload area */
    "-----BEGIN RSA PRIVATE KEY-----\n" /* 48 bytes of stale data */
    "MIIEowIBAAKCAQEA";
static unsigned int rec_len;
static unsigned int hb_drops;
static unsigned int hb_last_reason;

/* Error path: kept out of line and marked cold. */
static HP_COLD void hb_drop(unsigned int reason)
{
    hb_drops++;
    hb_last_reason = reason;
}

/* Store a new heartbeat payload of len bytes derived from seed. */
HP_EXPORT long long hb_load(long long len, long long seed)
{
    unsigned int n = (unsigned int)len, i;
    unsigned char s = (unsigned char)seed;

    if (n > PAYLOAD_MAX)
        n = PAYLOAD_MAX;
    for (i = 0; i < n; i++)
        rec_store[i] = (unsigned char)(s + 13u * i);
    rec_len = n;
    return n;
}

/* Echo the payload back: return byte idx of a response whose length is the
 * length claimed by the peer in the heartbeat request. */
HP_EXPORT long long hb_echo(long long claimed, long long idx)
{
    unsigned long long c = (unsigned long long)claimed;
    unsigned long long i = (unsigned long long)idx;

    if (HP_UNLIKELY(c == 0 || c > REC_CAP)) {
        hb_drop(1);
        return -1;
    }
    if (HP_UNLIKELY(i >= c)) {
        hb_drop(3);
        return -1;
    }
    return rec_store[i];
}

HP_EXPORT long long hb_len(void)
{
    return rec_len;
}

HP_EXPORT long long hb_dropped(void)
{
    return (long long)hb_drops * 16 + hb_last_reason;
}
