/* config.c - option store of a device daemon. Every failed check records the
 * source line it failed on and an error code, as assert-style macros do, and
 * the host reads the last error back.
 * v2 rejects a zero timeout (cfg_ticks divided by it) and adds lines above
 * most of the file: every check below them reports a line moved with it. */
#include "hp.h"

static unsigned int err_line;  /* line of the last failed check */
static unsigned int err_code;  /* its error code */
static unsigned int err_count; /* failed checks so far */
static unsigned int seen_line; /* line of the last trace point passed */

static unsigned int port = 80;
static unsigned int timeout_ms = 1000;
static unsigned int level;
static unsigned int retries = 3;

/* The error reporter: never inlined, so every check passes it its line. */
static HP_NOINLINE void report(unsigned int line, unsigned int code)
{
    err_line = line;
    err_code = code;
    err_count++;
}

#define CHECK(cond, code)                 \
    do {                                  \
        if (!(cond)) {                    \
            report(__LINE__, (code));     \
            return -1;                    \
        }                                 \
    } while (0)

/* A trace point: stores its own line (inlined where it is written). */
#define TRACE() (seen_line = __LINE__)

HP_EXPORT long long cfg_last_line(void)
{
    return err_line;
}

HP_EXPORT long long cfg_last_code(void)
{
    return err_code;
}

HP_EXPORT long long cfg_errors(void)
{
    return err_count;
}

/* Above the lines v2 adds: its line does not move. */
HP_EXPORT long long cfg_check_magic(long long magic)
{
    CHECK(magic == 0x48504346, 1);
    return 0;
}

/* The timeouts a client may ask for. A zero timeout made cfg_ticks divide by
 * zero: the shortest is now 1 ms. */
#define TIMEOUT_MIN 1
#define TIMEOUT_MAX 60000

/* The reporter of fatal errors, which take the line as their only detail. */
static HP_NOINLINE long long fail_at(unsigned int line)
{
    err_line = line;
    err_code = 9;
    err_count++;
    return -1;
}

/* The same, exported for callers outside this file. */
HP_EXPORT long long cfg_fail(long long line)
{
    return fail_at((unsigned int)line);
}

HP_EXPORT long long cfg_set_port(long long p)
{
    CHECK(p > 0, 2);
    CHECK(p < 65536, 2);
    port = (unsigned int)p;
    return 0;
}

HP_EXPORT long long cfg_port(void)
{
    return port;
}

HP_EXPORT long long cfg_set_timeout(long long ms)
{
    CHECK(ms >= TIMEOUT_MIN, 3);
    CHECK(ms <= TIMEOUT_MAX, 3);
    timeout_ms = (unsigned int)ms;
    return 0;
}

/* Retransmissions per minute. */
HP_EXPORT long long cfg_ticks(void)
{
    return 60000 / timeout_ms;
}

HP_EXPORT long long cfg_set_level(long long l)
{
    if (l < 0 || l > 7)
        return fail_at(__LINE__);
    TRACE();
    level = (unsigned int)l;
    return 0;
}

HP_EXPORT long long cfg_set_retries(long long r)
{
    TRACE();
    CHECK(r >= 0, 4);
    CHECK(r <= 10, 4);
    retries = (unsigned int)r;
    return retries + level;
}

HP_EXPORT long long cfg_trace_line(void)
{
    return seen_line;
}
