/* filter.c - a small BPF-like packet filter interpreter, one instruction per
 * call. Scratch memory M[0..7] belongs to the filter; M[8..15] hold the
 * host's per-socket state and must not be reachable from filter code. */
#include "hp.h"

enum {
    OP_LD_IMM, OP_ADD, OP_SUB, OP_MUL, OP_AND, OP_OR, OP_XOR, OP_LSH,
    OP_RSH, OP_TAX, OP_TXA, OP_LD_MEM, OP_ST_MEM, OP_NEG
};

#define SCRATCH_WORDS 8u

static unsigned long long acc, xreg;
static unsigned long long mem[16] = {
    0, 0, 0, 0, 0, 0, 0, 0,
    0x5eed0001u, 0x5eed0002u, 0xc0ffee00u, 0x0badf00du,
    0x13371337u, 0x42424242u, 0x00decadeu, 0x7fffffffu,
};
static unsigned int steps, faults;

/* Execute one instruction; returns the low 32 bits of the accumulator or -1
 * when the instruction faults. */
HP_EXPORT long long vm_exec(long long op, long long arg)
{
    unsigned long long k = (unsigned long long)arg;

    steps++;
    switch (op) {
    case OP_LD_IMM: acc = k; break;
    case OP_ADD: acc += k; break;
    case OP_SUB: acc -= k; break;
    case OP_MUL: acc *= k; break;
    case OP_AND: acc &= k; break;
    case OP_OR: acc |= k; break;
    case OP_XOR: acc ^= k; break;
    case OP_LSH: acc <<= (k & 63u); break;
    case OP_RSH: acc >>= (k & 63u); break;
    case OP_TAX: xreg = acc; break;
    case OP_TXA: acc = xreg + k; break;
    case OP_LD_MEM:
        if (k >= SCRATCH_WORDS) {
            faults++;
            return -1;
        }
        acc = mem[k];
        break;
    case OP_ST_MEM:
        if (k >= SCRATCH_WORDS) {
            faults++;
            return -1;
        }
        mem[k] = acc;
        break;
    case OP_NEG: acc = 0u - acc; break;
    default:
        faults++;
        return -1;
    }
    return (long long)(acc & 0xffffffffu);
}

HP_EXPORT long long vm_reset(void)
{
    long long n = steps;

    acc = 0;
    xreg = 0;
    steps = 0;
    return n;
}

HP_EXPORT long long vm_faults(void)
{
    return faults;
}
