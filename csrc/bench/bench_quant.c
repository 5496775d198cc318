/* C-only timing of the quantizer (no Python): whole calls, the per-token pipeline quantize + sample + encode
 * (qsv_draft_token, auto codec mode) and the phases of the dense path.
 * Build and run: make -C csrc bench  (or: ./build/bench_quant [V] [ell] [T] [kind: gauss|zipf] [calls])
 * Times are per-thread CPU time (robust on a shared machine); min and median over the calls. Includes qsv_quant.c to
 * reach the internal phases. */
#define _POSIX_C_SOURCE 199309L
#include "../qsv_quant.c"
#include "../qsv_draft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../tests/rng.h"
#include "bench_util.h"

typedef struct {
    double *t;
    int n;
} series_t;

static void report(const char *name, series_t *s) {
    qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_double);
    printf("  %-34s min %8.1f us   median %8.1f us\n", name, s->t[0], s->t[s->n / 2]);
}

int main(int argc, char **argv) {
    const uint32_t v = argc > 1 ? (uint32_t)atoi(argv[1]) : 151936u;
    const uint32_t ell = argc > 2 ? (uint32_t)atoi(argv[2]) : 720u;
    const double temp = argc > 3 ? atof(argv[3]) : 1.0;
    const char *kind = argc > 4 ? argv[4] : "gauss";
    const int calls = argc > 5 ? atoi(argv[5]) : 300;
    if (v == 0 || v > QSV_MAX_VOCAB || ell == 0 || ell > QSV_MAX_ELL || calls <= 0 || temp <= 0.0) {
        fprintf(stderr, "usage: bench_quant [V] [ell] [T > 0] [gauss|zipf] [calls]\n");
        return 2;
    }
    /* kind "file:PATH": raw float32 rows of V logits (e.g. bench_core.py --save-qwen); calls cycle through the rows,
     * each copied (untimed) into the logits buffer first, as the SLM's output layer writes it before the call */
    uint32_t nrows = 1;
    float *rows = NULL;
    if (strncmp(kind, "file", 4) == 0) {
        const char *path = strchr(kind, ':');
        FILE *f = path ? fopen(path + 1, "rb") : NULL;
        if (!f) {
            fprintf(stderr, "cannot open %s\n", kind);
            return 2;
        }
        fseek(f, 0, SEEK_END);
        const long bytes = ftell(f);
        fseek(f, 0, SEEK_SET);
        nrows = (uint32_t)(bytes / ((long)sizeof(float) * (long)v));
        rows = malloc((size_t)nrows * v * sizeof(float));
        if (nrows == 0 || fread(rows, sizeof(float) * v, nrows, f) != nrows) {
            fprintf(stderr, "%s: no whole rows of V=%u float32\n", kind, v);
            return 2;
        }
        fclose(f);
    }
    float *z = malloc(sizeof *z * v);
    uint64_t s = 12345;
    for (uint32_t i = 0; i < v && rows == NULL; i++) {
        if (kind[0] == 'z') {
            z[i] = (float)(-2.0 * log(1.0 + (double)(rng_next(&s) % v)) + 0.5 * rng_gauss(&s) + 10.0);
        } else {
            z[i] = (float)(2.5 * rng_gauss(&s));
        }
    }
    if (rows != NULL) memcpy(z, rows, sizeof *z * v);
    if (kind[0] != 'z' && rows == NULL)
        for (int j = 0; j < 30; j++) z[rng_next(&s) % v] += (float)(6.0 + 8.0 * rng_unit(&s));
    const size_t wsz = qsv_quant_workspace_size(v);
    void *wsm = malloc(wsz);
    uint32_t *idx = malloc(sizeof *idx * ell), *cnt = malloc(sizeof *cnt * ell), nnz = 0;
    series_t whole = {malloc(sizeof(double) * (size_t)calls), calls};
    series_t with_s = {malloc(sizeof(double) * (size_t)calls), calls};
    series_t draft = {malloc(sizeof(double) * (size_t)calls), calls};
    qsv_codec_params params;
    const size_t cwsz = qsv_codec_workspace_bytes(v, ell);
    void *cws = malloc(cwsz ? cwsz : 1);
    if (qsv_codec_params_init(&params, v, ell, (qsv_workspace){cws, cwsz}) != QSV_OK) return 2;
    const size_t dwsz = qsv_draft_workspace_size(&params);
    void *dws = malloc(dwsz);
    const qsv_quant_params qp = {ell, temp, 0, 1.0, QSV_KERNEL_AUTO};
    const size_t msg_cap = (size_t)((params.bound_bits + 1 + 7) / 8);
    uint8_t *msg = malloc(msg_cap);
    uint64_t msg_bits = 0;
    series_t ph[3] = {{malloc(sizeof(double) * (size_t)calls), calls},
                      {malloc(sizeof(double) * (size_t)calls), calls},
                      {malloc(sizeof(double) * (size_t)calls), calls}};
    int rc = 0;
    for (int r = -3; r < calls; r++) { /* three warm-up calls */
        if (rows) memcpy(z, rows + (size_t)((unsigned)(r + 3) % nrows) * v, sizeof *z * v);
        const double t0 = now_us();
        qsv_point pt = {idx, cnt, ell, 0};
        rc |= qsv_quantize_logits(z, v, &qp, (qsv_workspace){wsm, wsz}, &pt, NULL);
        const double t1 = now_us();
        rc |= qsv_sample(&pt, ell, (uint32_t)(r < 0 ? 0 : r) % ell) < 0;
        const double t2 = now_us();
        qsv_message m = {msg, msg_cap, QSV_CODEC_MODE_AUTO, 0, 0};
        rc |= qsv_draft_token(z, &qp, &params, (uint32_t)(r < 0 ? 0 : r) % ell, (qsv_workspace){dws, dwsz}, &pt, &m) < 0;
        const double t3 = now_us();
        nnz = pt.nnz;
        msg_bits = m.bits;
        if (r >= 0) {
            whole.t[r] = t1 - t0;
            with_s.t[r] = t2 - t0;
            draft.t[r] = t3 - t2;
        }
    }
    /* phases of the dense path with the automatic kernel */
    kernels_t kern;
    ws_t w;
    pick_kernels(QSV_KERNEL_AUTO, &kern);
    ws_init(&w, wsm, wsz, v);
    const float inv_t = (float)(1.0 / temp), c2 = (float)(1.4426950408889634 / temp);
    for (int r = 0; r < calls; r++) {
        float m, zmin;
        const double t0 = now_us();
        rc |= !kern.kmax(z, v, (float *)w.bmax, &m, &zmin);
        const double t1 = now_us();
        const int clamp = exp_needs_clamp(zmin, m, c2);
        const double sum = kern.kexp(z, v, m, c2, clamp, w.e);
        const double t2 = now_us();
        prep_t p = {.mode = PREP_DENSE, .scale = (double)ell / sum, .m = m, .inv_t = inv_t, .c2 = c2, .clamp = clamp};
        uint32_t k;
        rc |= dense_fix(&kern, &w, &p, v, ell, &k) != QSV_OK;
        const double t3 = now_us();
        ph[0].t[r] = t1 - t0;
        ph[1].t[r] = t2 - t1;
        ph[2].t[r] = t3 - t2;
    }
    printf("bench_quant V=%u ell=%u T=%g logits=%s calls=%d nnz=%u message %llu bits (thread CPU time)\n", v, ell, temp,
           kind, calls, nnz, (unsigned long long)msg_bits);
    report("qsv_quantize_logits", &whole);
    report("qsv_quantize_logits + qsv_sample", &with_s);
    report("qsv_draft_token (+ encode, auto)", &draft);
    report("phase: max pass", &ph[0]);
    report("phase: exp pass", &ph[1]);
    report("phase: candidates + lattice fix", &ph[2]);
    free(rows);
    free(z);
    free(wsm);
    free(idx);
    free(cnt);
    free(whole.t);
    free(with_s.t);
    free(draft.t);
    free(cws);
    free(dws);
    free(msg);
    for (int j = 0; j < 3; j++) free(ph[j].t);
    return rc != 0;
}
