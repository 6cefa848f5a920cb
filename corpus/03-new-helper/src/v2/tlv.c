/* tlv.c - type/length/value option parser for a small packet buffer.
 *
 * Options are <type:1><len:1><value:len>; type 0 ends the list. The buffer
 * is reused between packets without being cleared. */
#include "hp.h"

#define PKT_CAP 32u

/* tlv_check.c */
unsigned int tlv_fits(unsigned int off, unsigned int len, unsigned int total);

static unsigned char pkt[PKT_CAP];
static unsigned int pkt_len;
static unsigned int packets;

HP_EXPORT long long pkt_reset(void)
{
    pkt_len = 0;
    packets++;
    return packets;
}

/* Append the first n (at most 3) of b0, b1, b2; returns the new length. */
HP_EXPORT long long pkt_push(long long n, long long b0, long long b1, long long b2)
{
    unsigned char b[3];
    unsigned int i, cnt = (unsigned int)n;

    b[0] = (unsigned char)b0;
    b[1] = (unsigned char)b1;
    b[2] = (unsigned char)b2;
    if (cnt > 3u)
        return -1;
    for (i = 0; i < cnt; i++) {
        if (pkt_len >= PKT_CAP)
            return -1;
        pkt[pkt_len++] = b[i];
    }
    return pkt_len;
}

/* Walk the options; returns the sum of value bytes weighted by their type,
 * or -1 for a malformed list. */
HP_EXPORT long long tlv_sum(void)
{
    unsigned int off = 0, sum = 0, i;

    while (off + 2u <= pkt_len) {
        unsigned int type = pkt[off];
        unsigned int len = pkt[off + 1u];

        if (type == 0)
            break;
        if (!tlv_fits(off, len, pkt_len))
            return -1;
        for (i = 0; i < len; i++)
            sum += pkt[(off + 2u + i) % PKT_CAP] * type;
        off += 2u + len;
    }
    return sum;
}

/* Number of options in the list (stops at the end marker). */
HP_EXPORT long long tlv_count(void)
{
    unsigned int off = 0, n = 0;

    while (off + 2u <= pkt_len && pkt[off] != 0) {
        n++;
        off += 2u + pkt[off + 1u];
    }
    return n;
}
