/* encode.c - varint encoding of key/value records. */
#include "codec.h"

unsigned char rec_buf[REC_CAP];
unsigned int rec_len;

static unsigned int put_varint(unsigned int pos, unsigned int v)
{
    while (v >= 0x80u && pos < REC_CAP) {
        rec_buf[pos++] = (unsigned char)(v | 0x80u);
        v >>= 7;
    }
    if (pos < REC_CAP)
        rec_buf[pos++] = (unsigned char)v;
    return pos;
}

unsigned int enc_pair(unsigned int key, unsigned int value)
{
    unsigned int pos = 0;

    pos = put_varint(pos, key);
    pos = put_varint(pos, value);
    rec_len = pos;
    return pos;
}
