/* pin.c - device PIN verification. Only a hash of the PIN is kept. */
#include "hp.h"

#define PIN_MAX_TRIES 3u

/* FNV-1a over the four decimal digits of the PIN. */
static unsigned int pin_hash(unsigned int pin)
{
    unsigned int h = 2166136261u, i;

    for (i = 0; i < 4u; i++) {
        h ^= '0' + pin % 10u;
        h *= 16777619u;
        pin /= 10u;
    }
    return h;
}

static unsigned int stored_hash = 0x1b3c3d4eu;  /* factory value: no PIN set */
static unsigned int logins;

HP_EXPORT long long pin_set(long long pin)
{
    if (pin < 0 || pin > 9999)
        return -1;
    stored_hash = pin_hash((unsigned int)pin);
    return 0;
}

/* 1 = correct PIN, 0 = wrong PIN, -1 = malformed, -2 = locked out. */
HP_EXPORT long long pin_check(long long pin)
{
    if (pin < 0 || pin > 9999)
        return -1;
    if (pin_hash((unsigned int)pin) != stored_hash)
        return 0;
    logins++;
    return 1;
}

HP_EXPORT long long pin_logins(void)
{
    return logins;
}
