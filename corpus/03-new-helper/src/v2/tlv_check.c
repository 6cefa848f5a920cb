/* tlv_check.c - validation helpers for the option parser. */
#include "hp.h"

#define TLV_VALUE_MAX 16u

/* Does an option at off with a value of len bytes lie inside total bytes? */
unsigned int tlv_fits(unsigned int off, unsigned int len, unsigned int total)
{
    if (len > TLV_VALUE_MAX)
        return 0;
    if (off > total || total - off < 2u + len)
        return 0;
    return 1;
}
