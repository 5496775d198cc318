/* QSV core: one draft token in one call (quantize -> Q-S sample -> encode), the edge's per-token hot path.
 *
 * The three steps are the public functions of qsv_quant.h and qsv_codec.h, run back to back on caller-owned buffers;
 * the only point of this function is to save the caller (Python through cffi) three round trips per token.
 */
#ifndef QSV_DRAFT_H
#define QSV_DRAFT_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI_BEGIN */
/* Quantizes logits (qsv_quantize_logits: ell, temperature, top_k, top_p, quant workspace, sparse output of capacity
 * >= min(ell, V)), draws the token with the uniform integer u in [0, ell) (qsv_sample) and encodes the lattice point
 * (qsv_codec_encode with `codec` made for the same V and ell, mode, out of out_capacity bytes: (bound_bits + 1 + 7) / 8
 * suffice in AUTO and ENUM mode; SPARSE can be longer, see qsv_codec_encoded_bits). Outputs: *out_nnz, *out_token,
 * *bits_out (message bits; bytes = (bits + 7) / 8).
 * Returns QSV_OK, a qsv_status (> 0) from quantization or sampling, or a qsv_codec_status (< 0) from encoding. */
int qsv_draft_token(const float *logits, uint32_t vocab_size, uint32_t ell, double temperature, uint32_t top_k,
                    double top_p, uint32_t u, void *quant_workspace, size_t quant_workspace_size,
                    uint32_t *indices, uint32_t *counts, uint32_t capacity, uint32_t *out_nnz, uint32_t *out_token,
                    const qsv_codec_params *codec, int mode, uint8_t *out, size_t out_capacity, uint64_t *bits_out,
                    void *codec_workspace, size_t codec_workspace_size);
/* CFFI_END */

#ifdef __cplusplus
}
#endif

#endif
