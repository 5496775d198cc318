/* libFuzzer target: arbitrary logits / probabilities, ell, temperature, top-k, top-p and kernel into the quantizer.
 * Checks: only documented status codes; on success a valid lattice point (sum = ell, ids ascending and < V,
 * counts >= 1, dense = sparse); the probability path equals a full-sort implementation of the rule; the Q-S sampler
 * returns a token of the support for every u. */
#include "qsv_quant.h"
#include "../tests/ref_rule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_V 4096u

static void check_point(const uint32_t *idx, const uint32_t *cnt, uint32_t nnz, const uint32_t *dense, uint32_t v,
                        uint32_t ell) {
    uint64_t sum = 0;
    if (nnz == 0 || nnz > ell || nnz > v) abort();
    for (uint32_t j = 0; j < nnz; j++) {
        if (idx[j] >= v || cnt[j] == 0 || (j > 0 && idx[j] <= idx[j - 1]) || dense[idx[j]] != cnt[j]) abort();
        sum += cnt[j];
    }
    if (sum != ell) abort();
    uint32_t nz = 0;
    for (uint32_t i = 0; i < v; i++) nz += dense[i] != 0;
    if (nz != nnz) abort();
    for (uint32_t u = 0; u < ell; u += 1 + ell / 64) {
        const qsv_point pt = {(uint32_t *)idx, (uint32_t *)cnt, nnz, nnz};
        const int tok = qsv_sample(&pt, ell, u);
        if (tok < 0 || dense[tok] == 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 12) return 0;
    uint16_t ell16;
    memcpy(&ell16, data, 2);
    const uint32_t ell = ell16 ? ell16 : 1;
    const uint8_t tsel = data[2], ksel = data[3], psel = data[4], kernel = data[5] % 4, mode = data[6];
    const uint32_t top_k = ksel < 128 ? 0 : ksel - 127u;
    const double top_p = psel < 128 ? 1.0 : (psel - 127) / 129.0;
    const double temps[8] = {0.0, 1.0, 0.4, 2.0, 1e-6, 1e6, 0.05, 7.5};
    const double temperature = temps[tsel % 8];
    data += 8;
    size -= 8;
    uint32_t v = (uint32_t)(size / 4);
    if (v == 0) return 0;
    if (v > MAX_V) v = MAX_V;

    float *z = malloc(sizeof *z * v);
    memcpy(z, data, sizeof *z * v);
    const size_t wsz = qsv_quant_workspace_size(v);
    void *ws = malloc(wsz);
    uint32_t *idx = malloc(sizeof *idx * v), *cnt = malloc(sizeof *cnt * v), *dense = malloc(sizeof *dense * v);
    uint32_t nnz = 0;
    const uint32_t cap = ell < v ? ell : v;

    if (!(mode & 1)) {
        int finite = 1;
        for (uint32_t i = 0; i < v; i++) finite &= isfinite(z[i]) != 0;
        const qsv_quant_params params = {ell, temperature, top_k, top_p, kernel};
        qsv_point pt = {idx, cnt, cap, 0};
        const int rc = qsv_quantize_logits(z, v, &params, (qsv_workspace){ws, wsz}, &pt, dense);
        nnz = pt.nnz;
        if (rc == QSV_OK) {
            if (!finite) abort();
            check_point(idx, cnt, nnz, dense, v, ell);
        } else if (!(rc == QSV_ERR_NONFINITE && !finite) && rc != QSV_ERR_KERNEL) {
            abort();
        }
    } else {
        /* probabilities from the bytes: |z| made finite, normalized in double */
        double *q = malloc(sizeof *q * v), *x = malloc(sizeof *x * v), s = 0.0;
        for (uint32_t i = 0; i < v; i++) {
            const double a = fabs((double)z[i]);
            q[i] = isfinite(a) && a < 1e30 ? a : 0.0;
            s += q[i];
        }
        if (s > 0.0) {
            for (uint32_t i = 0; i < v; i++) q[i] /= s;
            qsv_point pt = {idx, cnt, cap, 0};
            const int rc = qsv_quantize_probs_f64(q, v, ell, (qsv_workspace){ws, wsz}, &pt, dense);
            nnz = pt.nnz;
            if (rc == QSV_OK) {
                check_point(idx, cnt, nnz, dense, v, ell);
                int64_t *b = malloc(sizeof *b * v);
                keyed_t *k = malloc(sizeof *k * v);
                for (uint32_t i = 0; i < v; i++) x[i] = (double)ell * q[i];
                if (ref_rule(x, v, ell, b, k) != 0) abort(); /* the C path accepted an input the rule cannot fix */
                for (uint32_t i = 0; i < v; i++)
                    if (b[i] != (int64_t)dense[i]) abort();
                free(b);
                free(k);
            } else if (rc != QSV_ERR_PROBS) {
                abort();
            }
        }
        free(q);
        free(x);
    }
    free(z);
    free(ws);
    free(idx);
    free(cnt);
    free(dense);
    return 0;
}
