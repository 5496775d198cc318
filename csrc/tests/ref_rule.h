/* Independent reference of the lattice rule by full sort, shared by the C tests and the quantizer fuzz target. */
#ifndef QSV_TESTS_REF_RULE_H
#define QSV_TESTS_REF_RULE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    double key;
    uint32_t idx;
} keyed_t;

static inline int by_key_desc(const void *a, const void *b) {
    const keyed_t *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* b from x = ell * q (dense, length v), with k a caller-owned scratch of v entries; returns 0 on success, -1 when
 * the sum cannot be fixed (more units to remove than entries with b >= 1). Ties by lower index. */
static inline int ref_rule(const double *x, uint32_t v, uint32_t ell, int64_t *b, keyed_t *k) {
    int64_t sum = 0;
    for (uint32_t i = 0; i < v; i++) sum += (b[i] = (int64_t)floor(x[i] + 0.5));
    const int64_t d = (int64_t)ell - sum;
    if (d == 0) return 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < v; i++) {
        const double r = x[i] - (double)b[i];
        if (d > 0 || b[i] >= 1) {
            k[n].key = d > 0 ? r : -r; /* largest b - x when d < 0; -(x - b) == b - x exactly in IEEE */
            k[n++].idx = i;
        }
    }
    qsort(k, n, sizeof *k, by_key_desc);
    const uint64_t need = (uint64_t)(d > 0 ? d : -d);
    if (need > n) return -1;
    for (uint64_t j = 0; j < need; j++) b[k[j].idx] += d > 0 ? 1 : -1;
    return 0;
}

#endif
