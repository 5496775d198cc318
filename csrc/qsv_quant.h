/* QSV core: lattice quantizer and quantize-then-sample (Q-S) sampler.
 *
 * The lattice quantizer with resolution ell (1..65535) maps a distribution q over V tokens to integer counts b with
 * sum(b) = ell (q_hat = b / ell):
 *   x_i = ell * q_i;  b_i = floor(x_i + 1/2);  d = ell - sum(b)
 *   d > 0: add 1 to the d entries with the largest residual r_i = x_i - b_i (all entries take part);
 *   d < 0: subtract 1 from the |d| entries with b_i >= 1 and the largest b_i - x_i (= the smallest r_i);
 *   ties between equal residuals go to the lower token index.
 * All arithmetic of the rule is IEEE double (x_i = (double)ell * q_i, floor(x_i + 0.5), x_i - b_i); the numpy
 * reference edge_runtime/reference.py performs the same operations, so the probability paths match it bit for bit.
 *
 * Fused logits path: logits (float32) -> temperature -> top-k -> top-p -> softmax -> lattice rule. The softmax runs in
 * float32 with a polynomial exp2 (e^t = 2^(t log2 e), log2 e folded into 1/T; relative error of 2^y at most
 * 1.9e-7 on [-125, 0], inputs below clamped) and a double-accumulated sum S. The lattice rule is then applied exactly to
 * x_i = e_i * (ell / S). Relative to a float64 softmax, |x_i - ell q_i| <= 1e-5 * ell q_i + 1e-9 * ell / V (tested;
 * observed relative error ~1e-6), so the fused output equals the exact rule applied to probabilities
 * within that tolerance of the float64 ones: results can differ from a float64 computation only for entries whose
 * rounding or selection decision lies within the tolerance of a boundary.
 *   temperature: 0 = greedy (all ell on the argmax, lowest index on ties); otherwise 1e-6 <= T <= 1e6.
 *   top_k: 0 or >= V disables; otherwise keeps the k largest logits, ties at the k-th value go to lower indices
 *          (exactly k tokens survive).
 *   top_p: 1.0 disables; otherwise in (0, 1): tokens ordered by probability descending (ties: lower index first);
 *          the shortest prefix whose cumulative probability reaches top_p survives (cumulated in double).
 *   Survivors are renormalized before quantization. Non-finite logits are rejected.
 *
 * Calling convention (qsv_base.h): no globals, no allocation; every buffer belongs to the caller. A workspace of
 * qsv_quant_workspace_size(V) bytes is scratch for one call at a time: threads need their own workspace, otherwise
 * all functions are reentrant. Sparse output: a qsv_point whose capacity is >= min(ell, V) (nnz never exceeds it);
 * out_dense (optional, NULL or V entries) receives the dense counts. Returns QSV_OK or a negative enum qsv_error
 * (outputs are then unspecified); qsv_sample returns the token instead of QSV_OK.
 */
#ifndef QSV_QUANT_H
#define QSV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI_BEGIN */
enum qsv_quant_limits {
    QSV_MAX_ELL = 65535,
    QSV_MAX_VOCAB = 2097152
};

enum qsv_kernel {
    QSV_KERNEL_AUTO = 0,     /* best available: AVX2 on x86-64 CPUs that have it, else VECTOR */
    QSV_KERNEL_SCALAR = 1,   /* portable C, no vector extensions */
    QSV_KERNEL_VECTOR = 2,   /* GCC/clang vector extensions at the baseline ISA (SSE2 on x86-64, NEON on aarch64) */
    QSV_KERNEL_AVX2 = 3      /* x86-64 only: the same vector code compiled for AVX2 + FMA */
};

/* Parameters of the logits path (the rules above). Set every field: an all-zero struct is invalid (ell 0, top_p 0),
 * and temperature 0 means greedy. */
typedef struct qsv_quant_params {
    uint32_t ell;       /* lattice resolution: counts sum to ell; 1..QSV_MAX_ELL */
    double temperature; /* 0 = greedy; otherwise 1e-6..1e6 */
    uint32_t top_k;     /* 0 (or >= V) disables; else keep the k largest logits */
    double top_p;       /* 1.0 disables; else in (0, 1): keep the shortest prefix reaching top_p */
    int kernel;         /* enum qsv_kernel; QSV_KERNEL_AUTO (0) = the best available. SCALAR and VECTOR give
                         * bit-identical results; AVX2 fuses multiply-adds (x may differ in the last bits, within the
                         * tolerance above) */
} qsv_quant_params;

size_t qsv_quant_workspace_size(uint32_t vocab_size);
int qsv_kernel_available(int kernel);

/* The fused path: the lattice point of the logits under params into out (out->capacity >= min(ell, V)). */
int qsv_quantize_logits(const float *logits, uint32_t vocab_size, const qsv_quant_params *params, qsv_workspace ws,
                        qsv_point *out, uint32_t *out_dense);

/* The x_i = ell * q_i (dense, V doubles) the fused path feeds into the lattice rule, bit for bit (the same sum S and
 * e); for tests of the float path. */
int qsv_logits_scaled(const float *logits, uint32_t vocab_size, const qsv_quant_params *params, qsv_workspace ws,
                      double *out_x);

/* Integer-steps path from probabilities (no softmax): finite, >= 0, sum within 1e-3 of 1 (not renormalized). */
int qsv_quantize_probs_f64(const double *probs, uint32_t vocab_size, uint32_t ell, qsv_workspace ws, qsv_point *out,
                           uint32_t *out_dense);
int qsv_quantize_probs_f32(const float *probs, uint32_t vocab_size, uint32_t ell, qsv_workspace ws, qsv_point *out,
                           uint32_t *out_dense);

/* Q-S sampling: the token t with cum(t-1) <= u < cum(t), cumulating point->counts in index order; u in [0, ell).
 * Returns the token (>= 0) or a negative error. */
int qsv_sample(const qsv_point *point, uint32_t ell, uint32_t u);

/* e^x through the exp2 polynomial of the fused path (x in [-inf, 0]; error <= 2e-7 + 1e-7 |x| relative above -86.5);
 * for accuracy tests. */
int qsv_fast_exp(const float *in, float *out, uint32_t n, int kernel);
/* CFFI_END */

#ifdef __cplusplus
}
#endif

#endif /* QSV_QUANT_H */
