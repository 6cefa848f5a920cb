/* suites.c - cipher-suite negotiation policy.
 *
 * Each of the 16 suite ids the peer may offer has a strength class:
 * 0 = forbidden, 1 = legacy, 2 = acceptable, 3 = strong. */
#include "hp.h"

#define NSUITES 16u

static const unsigned char suite_strength[NSUITES] = {
    /*  0 NULL-NULL       */ 0,
    /*  1 RSA-RC4-MD5     */ 0, /* RC4 is broken */
    /*  2 RSA-AES128-SHA  */ 2,
    /*  3 ECDHE-AES128-GCM*/ 3,
    /*  4 RSA-AES256-SHA  */ 2,
    /*  5 RSA-3DES-SHA    */ 0, /* Sweet32 */
    /*  6 EXPORT-DES40    */ 0,
    /*  7 ECDHE-CHACHA20  */ 3,
    /*  8 DHE-AES128-SHA  */ 2,
    /*  9 DHE-AES256-SHA  */ 2,
    /* 10 RSA-RC4-SHA     */ 0, /* RC4 is broken */
    /* 11 ECDHE-AES256-GCM*/ 3,
    /* 12 ANON-DH-AES128  */ 0,
    /* 13 ECDHE-AES128-SHA*/ 2,
    /* 14 TLS13-AES128-GCM*/ 3,
    /* 15 RSA-IDEA-SHA    */ 1,
};

static unsigned int negotiations;

/* Is suite id acceptable at the given minimum class? 1/0, -1 if unknown. */
HP_EXPORT long long suite_allowed(long long id, long long min_class)
{
    unsigned long long i = (unsigned long long)id;

    if (i >= NSUITES)
        return -1;
    if (suite_strength[i] == 0)
        return 0;
    return suite_strength[i] >= min_class;
}

/* Pick the strongest offered suite (bit i of offered = suite i offered);
 * ties go to the lowest id. Returns the id or -1 if none is acceptable. */
HP_EXPORT long long suite_pick(long long offered, long long min_class)
{
    unsigned long long mask = (unsigned long long)offered;
    long long best = -1;
    unsigned int i, best_class = 0;

    negotiations++;
    for (i = 0; i < NSUITES; i++) {
        unsigned int c = suite_strength[i];

        if (!((mask >> i) & 1u) || c == 0 || c < min_class)
            continue;
        if (c > best_class) {
            best_class = c;
            best = i;
        }
    }
    return best;
}

HP_EXPORT long long suite_negotiations(void)
{
    return negotiations;
}
