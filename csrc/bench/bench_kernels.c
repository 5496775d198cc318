/* Side-by-side timing of the quantizer's variants on one grid of realistic settings, interleaved call by call (a
 * round robin over the variants per call, so all see the same machine state); medians of thread CPU time.
 * Grid: V in {151936 (Qwen), 49152 (SmolLM)}, ell in {8, 64, 256}, T in {0.7, 1.0}, top_k in {0, 50},
 * top_p in {1.0, 0.9}; logits: Gaussian bulk (std 2.5) with 30 strong tokens, as benchmarks/bench_core.py "gauss".
 * Variants: the kernels, whole qsv_quantize_logits calls (this file includes qsv_quant.c to swap kernels in). The
 * exp-pass tiers this harness also timed (block skip, quartic / cubic exp2) were removed after its run at commit
 * 'bench: bench_kernels' (BENCHMARKS.md, C core).
 * Build and run: make -C csrc bench-kernels  (or: ./build/bench_kernels [calls])
 */
#define _POSIX_C_SOURCE 199309L
#include "../qsv_quant.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../tests/rng.h"
#include "bench_util.h"

typedef struct {
    const char *name;
    int kernel;
} variant_t;

static const variant_t VARIANTS[] = {
    {"scalar", QSV_KERNEL_SCALAR},
    {"vector", QSV_KERNEL_VECTOR},
#ifdef QSV_HAVE_AVX2
    {"avx2", QSV_KERNEL_AVX2},
#endif
};
enum { NV = sizeof VARIANTS / sizeof VARIANTS[0], BASE = 1 /* ratios against "vector" */ };

/* qsv_quantize_logits with the variant's kernels */
static int run(const variant_t *var, const float *z, uint32_t v, uint32_t ell, double temp, uint32_t top_k,
               double top_p, void *ws, size_t wsz, uint32_t *idx, uint32_t *cnt, uint32_t *nnz) {
    kernels_t kern;
    int rc = pick_kernels(var->kernel, &kern);
    if (rc != QSV_OK) return rc;
    ws_t w;
    if ((rc = ws_init(&w, ws, wsz, v)) != QSV_OK) return rc;
    prep_t p;
    const qsv_quant_params params = {ell, temp, top_k, top_p, var->kernel};
    if ((rc = prep_logits(z, v, &params, &kern, &w, &p)) != QSV_OK) return rc;
    uint32_t k;
    if (p.mode == PREP_SPARSE) {
        k = p.nk;
        if ((rc = lattice_fix(w.cx, k, ell, 0, 0.0, w.cb, w.tmp)) != QSV_OK) return rc;
    } else if (p.mode == PREP_DENSE) {
        if ((rc = dense_fix(&kern, &w, &p, v, ell, &k)) != QSV_OK) return rc;
    } else {
        return -100;
    }
    qsv_point out = {idx, cnt, ell, 0};
    rc = emit(w.cidx, w.cb, k, v, &out, NULL);
    *nnz = out.nnz;
    return rc;
}

static void gauss_row(float *z, uint32_t v, uint64_t *s) {
    for (uint32_t i = 0; i < v; i++) z[i] = (float)(2.5 * rng_gauss(s));
    for (int j = 0; j < 30; j++) z[rng_next(s) % v] += (float)(6.0 + 8.0 * rng_unit(s));
}

int main(int argc, char **argv) {
    const int calls = argc > 1 ? atoi(argv[1]) : 101;
    static const uint32_t vocabs[] = {151936, 49152}, ells[] = {8, 64, 256}, topks[] = {0, 50};
    static const double temps[] = {0.7, 1.0}, topps[] = {1.0, 0.9};
    enum { ROWS = 8 };
    float *rows = malloc(sizeof(float) * ROWS * 151936), *z = malloc(sizeof(float) * 151936);
    void *ws = malloc(qsv_quant_workspace_size(151936));
    uint32_t idx[256], cnt[256], nnz = 0;
    double *t = malloc(sizeof(double) * NV * (size_t)calls), med[NV], logsum[NV] = {0}, lo[NV], hi[NV];
    for (int j = 0; j < NV; j++) lo[j] = 1e9, hi[j] = 0;
    int configs = 0;
    printf("%-26s", "V ell T top_k top_p");
    for (int j = 0; j < NV; j++) printf(" %11s", VARIANTS[j].name);
    printf("   (median us; then ratio to %s)\n", VARIANTS[BASE].name);
    for (unsigned a = 0; a < 2; a++) {
        const uint32_t v = vocabs[a];
        uint64_t s = 12345 + v;
        for (int r = 0; r < ROWS; r++) gauss_row(rows + (size_t)r * v, v, &s);
        for (unsigned b = 0; b < 3; b++)
            for (unsigned c = 0; c < 2; c++)
                for (unsigned d = 0; d < 2; d++)
                    for (unsigned e = 0; e < 2; e++) {
                        const uint32_t ell = ells[b], top_k = topks[d];
                        const double temp = temps[c], top_p = topps[e];
                        for (int call = -2; call < calls; call++) {
                            memcpy(z, rows + (size_t)((unsigned)(call + 2) % ROWS) * v, sizeof(float) * v);
                            for (int jj = 0; jj < NV; jj++) {
                                const int j = (jj + call + 2) % NV; /* rotate the order */
                                const double t0 = now_us();
                                const int rc = run(&VARIANTS[j], z, v, ell, temp, top_k, top_p, ws,
                                                   qsv_quant_workspace_size(v), idx, cnt, &nnz);
                                const double dt = now_us() - t0;
                                if (rc != QSV_OK) {
                                    fprintf(stderr, "%s: rc %d\n", VARIANTS[j].name, rc);
                                    return 1;
                                }
                                if (call >= 0) t[(size_t)j * (size_t)calls + (size_t)call] = dt;
                            }
                        }
                        printf("%6u %3u %.1f %2u %.1f       ", v, ell, temp, top_k, top_p);
                        for (int j = 0; j < NV; j++) {
                            qsort(t + (size_t)j * calls, (size_t)calls, sizeof(double), cmp_double);
                            med[j] = t[(size_t)j * calls + calls / 2];
                            printf(" %11.1f", med[j]);
                        }
                        printf("\n%26s", "");
                        for (int j = 0; j < NV; j++) {
                            const double q = med[j] / med[BASE];
                            logsum[j] += log(q);
                            lo[j] = q < lo[j] ? q : lo[j];
                            hi[j] = q > hi[j] ? q : hi[j];
                            printf(" %10.2fx", q);
                        }
                        printf("\n");
                        configs++;
                    }
    }
    printf("\n%-26s", "geomean ratio");
    for (int j = 0; j < NV; j++) printf(" %10.2fx", exp(logsum[j] / configs));
    printf("\n%-26s", "min ratio");
    for (int j = 0; j < NV; j++) printf(" %10.2fx", lo[j]);
    printf("\n%-26s", "max ratio");
    for (int j = 0; j < NV; j++) printf(" %10.2fx", hi[j]);
    printf("\n%d settings, %d calls each per variant\n", configs, calls);
    free(rows);
    free(z);
    free(ws);
    free(t);
    return 0;
}
