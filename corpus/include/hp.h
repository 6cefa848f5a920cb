/* Shared by every corpus scenario. Freestanding: needs nothing from libc. */
#ifndef HP_H
#define HP_H

/* Marks an entry point: exported from the DLL (PE) or given default
 * visibility in a shared object built with -fvisibility=hidden (ELF). */
#if defined(_WIN32)
#define HP_EXPORT __declspec(dllexport)
#else
#define HP_EXPORT __attribute__((visibility("default")))
#endif

#define HP_NOINLINE __attribute__((noinline))
#define HP_COLD __attribute__((cold, noinline))
#define HP_LIKELY(x) __builtin_expect(!!(x), 1)
#define HP_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
