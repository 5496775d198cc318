/* A/B timing of qsv_quantize_logits: another revision's build (its public symbols renamed with the prefix old_,
 * e.g. -Dqsv_quantize_logits=old_qsv_quantize_logits) against this one, interleaved call by call in one process, so
 * both see the same machine state. Driven by benchmarks/ab_quant.py.
 * Usage: ab_quant ROWS_FILE V ELL T CALLS   (ROWS_FILE: raw float32 rows of V logits; calls cycle through them, each
 * row copied, untimed, into the logits buffer first). Prints: old median, new median (thread CPU µs), the ratio of
 * the medians and the median of the per-call ratios (each call pair runs back to back, order alternating). */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qsv_quant.h"
#include "bench_util.h"

/* both builds have the C API of qsv_base.h (QSV_VERSION 1.x); older revisions need this file from their own tree */
int old_qsv_quantize_logits(const float *, uint32_t, const qsv_quant_params *, qsv_workspace, qsv_point *,
                            uint32_t *);
size_t old_qsv_quant_workspace_size(uint32_t);

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: ab_quant ROWS_FILE V ELL T CALLS\n");
        return 2;
    }
    const uint32_t v = (uint32_t)atol(argv[2]), ell = (uint32_t)atol(argv[3]);
    const double temp = atof(argv[4]);
    const int calls = atoi(argv[5]);
    FILE *f = fopen(argv[1], "rb");
    if (!f || v == 0 || ell == 0 || calls <= 0) {
        fprintf(stderr, "ab_quant: bad arguments or unreadable %s\n", argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    const long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const uint32_t nrows = (uint32_t)(bytes / ((long)sizeof(float) * (long)v));
    float *rows = malloc((size_t)nrows * v * sizeof(float) + 1);
    if (nrows == 0 || fread(rows, sizeof(float) * v, nrows, f) != nrows) {
        fprintf(stderr, "ab_quant: %s holds no whole rows of V = %u float32\n", argv[1], v);
        return 2;
    }
    fclose(f);
    float *z = malloc(sizeof *z * v);
    const size_t ws_old = old_qsv_quant_workspace_size(v), ws_new = qsv_quant_workspace_size(v);
    void *w_old = malloc(ws_old), *w_new = malloc(ws_new);
    uint32_t *idx = malloc(sizeof *idx * ell), *cnt = malloc(sizeof *cnt * ell);
    double *t[2] = {malloc(sizeof(double) * (size_t)calls), malloc(sizeof(double) * (size_t)calls)};
    double *ratio = malloc(sizeof(double) * (size_t)calls);
    for (int r = -4; r < calls; r++) { /* four warm-up pairs */
        for (int j = 0; j < 2; j++) {
            const int which = ((r & 1) + j) & 1; /* 0 = old, 1 = new; the order alternates */
            memcpy(z, rows + (size_t)((unsigned)(r + 4) % nrows) * v, sizeof *z * v);
            const double t0 = now_us();
            const qsv_quant_params params = {ell, temp, 0, 1.0, QSV_KERNEL_AUTO};
            qsv_point pt = {idx, cnt, ell, 0};
            const int rc = which == 0 ? old_qsv_quantize_logits(z, v, &params, (qsv_workspace){w_old, ws_old}, &pt, NULL)
                                      : qsv_quantize_logits(z, v, &params, (qsv_workspace){w_new, ws_new}, &pt, NULL);
            const double dt = now_us() - t0;
            if (rc != 0) {
                fprintf(stderr, "ab_quant: %s build returned %d\n", which ? "new" : "old", rc);
                return 1;
            }
            if (r >= 0) t[which][r] = dt;
        }
    }
    for (int r = 0; r < calls; r++) ratio[r] = t[1][r] / t[0][r];
    qsort(t[0], (size_t)calls, sizeof(double), cmp_double);
    qsort(t[1], (size_t)calls, sizeof(double), cmp_double);
    qsort(ratio, (size_t)calls, sizeof(double), cmp_double);
    printf("%.1f %.1f %.3f %.3f\n", t[0][calls / 2], t[1][calls / 2], t[1][calls / 2] / t[0][calls / 2],
           ratio[calls / 2]);
    free(rows);
    free(z);
    free(w_old);
    free(w_new);
    free(idx);
    free(cnt);
    free(t[0]);
    free(t[1]);
    free(ratio);
    return 0;
}
