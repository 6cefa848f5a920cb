/* park.c v3 - a library whose `spin` never returns: the live tests park
 * a thread in it to prove that a patch is refused while a thread runs inside
 * the bytes it would overwrite. v1 -> v2 changes `value` only; v1 -> v3
 * changes `spin` too. x86-64 only. */
#include "hp.h"

/* A busy loop that never leaves the first 5 bytes (where the patch writes
 * its jump): a 2-byte xor, then a 2-byte pause and a 2-byte jump back to
 * it, so the thread's PC is always 2 or 4 bytes past the entry. */
HP_EXPORT long long spin(long long x, long long y)
{
    __asm__ volatile("xor %%eax, %%eax\n1:\tpause\n\tjmp 1b" ::: "eax", "memory");
    return x + y + 3;
}

HP_EXPORT long long value(long long x, long long y)
{
    (void)y;
    return x + 2;
}
