/* session.c - per-connection receive accounting. */
#include "hp.h"

enum { ST_IDLE, ST_OPEN, ST_THROTTLED, ST_CLOSED };

struct session_state {
    unsigned int state;
    unsigned int retries;
    unsigned long long bytes_in;
    unsigned long long frames_in;
};

struct session_state session = { ST_OPEN, 0u, 0u, 0u };

/* Account a received frame of n bytes; returns the running byte count or -1. */
HP_EXPORT long long sess_recv(long long n)
{
    if (session.state != ST_OPEN || n < 0 || n > 65535)
        return -1;
    session.bytes_in += (unsigned long long)n;
    session.frames_in++;
    return (long long)session.bytes_in;
}

HP_EXPORT long long sess_retry(void)
{
    session.retries++;
    if (session.retries > 3u)
        session.state = ST_CLOSED;
    return session.state;
}

HP_EXPORT long long sess_frames(void)
{
    return (long long)session.frames_in;
}
