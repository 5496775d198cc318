/* Deterministic random numbers for the C tests and benchmarks: xorshift64* with caller-held state. */
#ifndef QSV_TESTS_RNG_H
#define QSV_TESTS_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static inline double rng_gauss(uint64_t *s) {
    const double u1 = rng_unit(s) + 1e-300, u2 = rng_unit(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
