/* disk.c - sector staging and a Fletcher-16 block checksum. */
#include "hp.h"

#define SECTOR_CAP 32u

static unsigned char sector[SECTOR_CAP];
static unsigned int sector_len;

/* Fletcher-16 over the first len bytes of sector. */
static HP_NOINLINE unsigned int checksum(unsigned int len)
{
    unsigned int s1 = 0, s2 = 0, i;

    for (i = 0; i < len; i++) {
        s1 = (s1 + sector[i]) & 0xffu;
        s2 = (s2 + s1) & 0xffu;
    }
    return (s2 << 8) | s1;
}

HP_EXPORT long long disk_put(long long byte)
{
    if (sector_len >= SECTOR_CAP)
        return -1;
    sector[sector_len++] = (unsigned char)byte;
    return sector_len;
}

HP_EXPORT long long disk_checksum(void)
{
    return checksum(sector_len);
}
