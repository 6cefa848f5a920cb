/* ipv4.c - IPv4 header field helpers.
 *
 * The first header byte carries the version (high nibble) and the header
 * length in 32-bit words (IHL, low nibble). */
#include "hp.h"

#define IPV4_MIN_HDR 20u

/* Header length in bytes from the version/IHL byte; 0 means invalid. */
static unsigned int ihl_bytes(unsigned int vihl)
{
    unsigned int ihl = vihl & 0x0fu;

    return ihl * 4u;
}

static unsigned int packets_seen;

HP_EXPORT long long ip_version(long long vihl)
{
    return ((unsigned long long)vihl >> 4) & 0x0fu;
}

/* Offset of the transport header inside the packet, or -1. */
HP_EXPORT long long ip_payload_offset(long long vihl)
{
    unsigned int v = (unsigned int)vihl & 0xffu;
    unsigned int hl;

    if ((v >> 4) != 4u)
        return -1;
    hl = ihl_bytes(v);
    if (hl == 0)
        return -1;
    packets_seen++;
    return hl;
}

/* Payload length for a packet of total_len bytes, or -1. */
HP_EXPORT long long ip_payload_length(long long vihl, long long total_len)
{
    unsigned int v = (unsigned int)vihl & 0xffu;
    unsigned int tl = (unsigned int)total_len & 0xffffu;
    unsigned int hl;

    if ((v >> 4) != 4u)
        return -1;
    hl = ihl_bytes(v);
    if (hl == 0 || tl < hl)
        return -1;
    return tl - hl;
}

HP_EXPORT long long ip_packets(void)
{
    return packets_seen;
}
