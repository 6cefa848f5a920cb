/* crc.c - CRC-16/CCITT-FALSE, bitwise. */
#include "codec.h"

unsigned int crc16(const unsigned char *p, unsigned int n)
{
    unsigned int crc = 0xffffu, i, b;

    for (i = 0; i < n; i++) {
        crc ^= (unsigned int)p[i] << 8;
        for (b = 0; b < 8u; b++)
            crc = (crc & 0x8000u) ? ((crc << 1) ^ 0x1021u) & 0xffffu : (crc << 1) & 0xffffu;
    }
    return crc;
}
