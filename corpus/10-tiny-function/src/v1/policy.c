/* policy.c - record-layer policy switches queried by the host. */
#include "hp.h"

#define MAX_RECORD 16384

/* Reject records with non-zero padding and legacy versions? */
HP_EXPORT long long strict_mode(void)
{
    return 0;
}

HP_EXPORT long long max_record_size(void)
{
    return MAX_RECORD;
}

/* Is a record of len bytes, protocol minor version minor, acceptable when
 * the host runs with the given strictness? 1/0. */
HP_EXPORT long long record_ok(long long len, long long minor, long long strict)
{
    if (len < 0 || len > MAX_RECORD)
        return 0;
    if (strict && minor < 3)
        return 0;
    return 1;
}
