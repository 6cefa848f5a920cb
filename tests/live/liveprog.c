/* liveprog.c - the live process the hotpatch live tests patch.
 *
 *   liveprog LIB.so [--threads N] [--every MS] [--sum] [--park SYMBOL]
 *                   [--push CODE:SIZE]... CALL[:ARG[:ARG]]...
 *
 * dlopens LIB.so, calls log_push-style setup calls (--push, through the
 * library's log_push), then starts N worker threads (default 4). Each worker
 * keeps calling every CALL (an exported `long long f(long long, long long)`)
 * in a tight loop, and every MS milliseconds (default 20) prints one line
 *
 *   T<i> <n> CALL(ARGS)=RESULT ...
 *
 * with the results of its latest round (with --sum: "T<i> <n> sum=S", the
 * sum of the results, for many calls). With --park SYMBOL, one more thread
 * calls SYMBOL(0), which is expected never to return (a busy loop the tests
 * use to block a patch). Threads are named worker-<i> and parked (see
 * /proc/PID/task/TID/comm). The first line is "ready <pid>" once every thread
 * runs. The process allows any process of its user to ptrace it
 * (PR_SET_PTRACER_ANY), for kernels with Yama. It runs until killed.
 *
 * Built at test time with gcc (x86-64) or aarch64-linux-gnu-gcc (the ARM64
 * VM): cc -O2 -pthread liveprog.c -o liveprog -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
#ifndef PR_SET_PTRACER_ANY
#define PR_SET_PTRACER_ANY ((unsigned long)-1)
#endif

typedef long long (*entry_fn)(long long, long long);

struct call {
    const char *name;
    entry_fn fn;
    long long args[2];
    int nargs;
};

static struct call calls[512];
static int sum_only;
static int ncalls;
static int every_ms = 20;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int started;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "liveprog: %s: %s\n", what, detail ? detail : "");
    exit(2);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    static __thread long long results[512];
    unsigned long long rounds = 0;
    double last = 0;

    char name[16];

    snprintf(name, sizeof name, "worker-%d", id);
    pthread_setname_np(pthread_self(), name);
    __sync_fetch_and_add(&started, 1);
    for (;;) {
        int i;

        for (i = 0; i < ncalls; i++)
            results[i] = calls[i].fn(calls[i].args[0], calls[i].args[1]);
        rounds++;
        if ((rounds & 63) == 0 || last == 0) {
            double t = now_ms();

            if (t - last >= every_ms) {
                char line[1024];
                int n = snprintf(line, sizeof line, "T%d %llu", id, rounds);
                long long sum = 0;

                if (sum_only) {
                    for (i = 0; i < ncalls; i++)
                        sum += results[i];
                    snprintf(line + n, sizeof line - n, " sum=%lld", sum);
                }
                for (i = 0; !sum_only && i < ncalls && n < (int)sizeof line - 64; i++) {
                    n += snprintf(line + n, sizeof line - n, " %s(", calls[i].name);
                    if (calls[i].nargs > 0)
                        n += snprintf(line + n, sizeof line - n, "%lld", calls[i].args[0]);
                    if (calls[i].nargs > 1)
                        n += snprintf(line + n, sizeof line - n, ",%lld", calls[i].args[1]);
                    n += snprintf(line + n, sizeof line - n, ")=%lld", results[i]);
                }
                pthread_mutex_lock(&out_lock);
                puts(line);
                fflush(stdout);
                pthread_mutex_unlock(&out_lock);
                last = t;
            }
        }
    }
    return NULL;
}

static void *parker(void *arg)
{
    entry_fn fn = (entry_fn)arg;

    pthread_setname_np(pthread_self(), "parked");
    __sync_fetch_and_add(&started, 1);
    fn(0, 0);
    pthread_mutex_lock(&out_lock);
    puts("parked call returned");
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    void *lib;
    int threads = 4, i, want;
    const char *park = NULL;
    entry_fn push = NULL;
    pthread_t t;

    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    if (argc < 3)
        die("usage", "liveprog LIB.so [--threads N] [--every MS] [--park SYM] [--push C:S]... CALL[:A[:B]]...");
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        die("dlopen", dlerror());
    for (i = 2; i < argc; i++) {
        char *a = argv[i];

        if (!strcmp(a, "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--every") && i + 1 < argc) {
            every_ms = atoi(argv[++i]);
        } else if (!strcmp(a, "--sum")) {
            sum_only = 1;
        } else if (!strcmp(a, "--park") && i + 1 < argc) {
            park = argv[++i];
        } else if (!strcmp(a, "--push") && i + 1 < argc) {
            long long c, s;

            if (sscanf(argv[++i], "%lld:%lld", &c, &s) != 2)
                die("bad --push", argv[i]);
            if (!push && !(push = (entry_fn)dlsym(lib, "log_push")))
                die("dlsym", "log_push");
            push(c, s);
        } else {
            struct call *c;
            char *colon;

            if (ncalls == (int)(sizeof calls / sizeof calls[0]))
                die("too many calls", a);
            c = &calls[ncalls++];
            colon = strchr(a, ':');
            if (colon)
                *colon = 0;
            c->name = a;
            c->fn = (entry_fn)dlsym(lib, a);
            if (!c->fn)
                die("dlsym", a);
            while (colon && c->nargs < 2) {
                char *next = strchr(colon + 1, ':');

                if (next)
                    *next = 0;
                c->args[c->nargs++] = strtoll(colon + 1, NULL, 0);
                colon = next;
            }
        }
    }
    if (ncalls == 0 && !park)
        die("usage", "no CALL given");
    want = threads;
    for (i = 0; i < threads; i++)
        if (pthread_create(&t, NULL, worker, (void *)(long)i))
            die("pthread_create", "worker");
    if (park) {
        entry_fn fn = (entry_fn)dlsym(lib, park);

        if (!fn)
            die("dlsym", park);
        want++;
        if (pthread_create(&t, NULL, parker, (void *)fn))
            die("pthread_create", "parker");
    }
    while (started < want)
        usleep(1000);
    pthread_mutex_lock(&out_lock);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    for (;;)
        pause();
}
