/* codec.h - interfaces shared by the record codec's translation units. */
#ifndef CODEC_H
#define CODEC_H

#define REC_CAP 16u

extern unsigned char rec_buf[REC_CAP];
extern unsigned int rec_len;

unsigned int enc_pair(unsigned int key, unsigned int value);
unsigned int crc16(const unsigned char *p, unsigned int n);

#endif
