/* cmd.c - command dispatcher of a small management protocol. Handlers are
 * reached only through cmd_table. Registers 0..7 are user-visible; 8..15
 * hold the device's provisioning secrets. */
#include "hp.h"

#define USER_REGS 8u

typedef long long (*cmd_handler)(unsigned int a, unsigned int b);

static unsigned int regs[16] = {
    0, 0, 0, 0, 0, 0, 0, 0,
    0xa5a5a5a5u, 0x31415926u, 0x27182818u, 0x16180339u,
    0xdeadbeefu, 0x8badf00du, 0xfeedfaceu, 0x0ddba11u,
};
static unsigned int commands;

static long long cmd_nop(unsigned int a, unsigned int b)
{
    (void)a;
    (void)b;
    return 0;
}

static long long cmd_set(unsigned int a, unsigned int b)
{
    if (a >= USER_REGS)
        return -1;
    regs[a] = b;
    return b;
}

static long long cmd_get(unsigned int a, unsigned int b)
{
    (void)b;
    if (a >= USER_REGS)
        return -1;
    return regs[a];
}

static long long cmd_add(unsigned int a, unsigned int b)
{
    if (a >= USER_REGS)
        return -1;
    regs[a] += b;
    return regs[a];
}

static long long cmd_xor(unsigned int a, unsigned int b)
{
    if (a >= USER_REGS)
        return -1;
    regs[a] ^= b;
    return regs[a];
}

static long long cmd_sum(unsigned int a, unsigned int b)
{
    unsigned int i, s = 0;

    if (a > USER_REGS || b > USER_REGS || a > b)
        return -1;
    for (i = a; i < b; i++)
        s += regs[i];
    return s;
}

static long long cmd_clear(unsigned int a, unsigned int b)
{
    unsigned int i;

    (void)a;
    (void)b;
    for (i = 0; i < USER_REGS; i++)
        regs[i] = 0;
    return USER_REGS;
}

static long long cmd_version(unsigned int a, unsigned int b)
{
    (void)a;
    (void)b;
    return 0x0102;
}

static const cmd_handler cmd_table[8] = {
    cmd_nop, cmd_set, cmd_get, cmd_add, cmd_xor, cmd_sum, cmd_clear, cmd_version,
};

HP_EXPORT long long cmd_dispatch(long long op, long long a, long long b)
{
    unsigned long long o = (unsigned long long)op;

    if (o >= 8u)
        return -1;
    commands++;
    return cmd_table[o]((unsigned int)a, (unsigned int)b);
}

HP_EXPORT long long cmd_count(void)
{
    return commands;
}
