/* net.c - frame staging and the RFC 1071 Internet checksum. */
#include "hp.h"

#define FRAME_CAP 32u

static unsigned char frame[FRAME_CAP];
static unsigned int frame_len;

/* One's-complement sum of the first len bytes of frame (big-endian words). */
static HP_NOINLINE unsigned int checksum(unsigned int len)
{
    unsigned int sum = 0, i;

    for (i = 0; i + 1u < len; i += 2u)
        sum += ((unsigned int)frame[i] << 8) | frame[i + 1u];
    if (len & 1u)
        sum += (unsigned int)frame[len - 1u] << 8;
    while (sum >> 16)
        sum = (sum & 0xffffu) + (sum >> 16);
    return ~sum & 0xffffu;
}

HP_EXPORT long long net_put(long long byte)
{
    if (frame_len >= FRAME_CAP)
        return -1;
    frame[frame_len++] = (unsigned char)byte;
    return frame_len;
}

HP_EXPORT long long net_checksum(void)
{
    return checksum(frame_len);
}
