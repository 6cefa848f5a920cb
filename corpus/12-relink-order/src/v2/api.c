/* api.c - exported entry points of a small key/value record codec. */
#include "hp.h"
#include "codec.h"

static unsigned int last_crc;

/* Encode the pair (key, value) into the staging record; returns its length. */
HP_EXPORT long long rec_encode(long long key, long long value)
{
    unsigned int n = enc_pair((unsigned int)key, (unsigned int)value);

    last_crc = crc16(rec_buf, n);
    return n;
}

/* CRC-16 of the last encoded record. */
HP_EXPORT long long rec_crc(void)
{
    return last_crc;
}

/* Byte i of the staging record, or -1 past its end. */
HP_EXPORT long long rec_byte(long long i)
{
    if (i < 0 || (unsigned long long)i >= rec_len)
        return -1;
    return rec_buf[i];
}
