/* Timing helpers shared by the C benchmarks (bench_quant.c, ab_quant.c). Needs _POSIX_C_SOURCE >= 199309L. */
#ifndef QSV_BENCH_UTIL_H
#define QSV_BENCH_UTIL_H

#include <time.h>

/* Thread CPU time in µs (robust on a shared machine). */
static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

/* qsort comparator of doubles, ascending. */
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
