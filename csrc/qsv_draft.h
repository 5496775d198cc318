/* QSV core: one draft token in one call (quantize -> Q-S sample -> encode), the edge's per-token hot path.
 *
 * The three steps are the public functions of qsv_quant.h and qsv_codec.h, run back to back on caller-owned buffers;
 * the only point of this function is to save the caller (Python through cffi) three round trips per token.
 */
#ifndef QSV_DRAFT_H
#define QSV_DRAFT_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_base.h"
#include "qsv_codec.h"
#include "qsv_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI_BEGIN */
/* Workspace bytes for qsv_draft_token with this codec: the larger of the quantizer's (V) and the codec's needs (the
 * steps run one after the other on the same workspace). 0 if codec is NULL. */
size_t qsv_draft_workspace_size(const qsv_codec_params *codec);

/* Quantizes logits (qsv_quantize_logits with params; V = codec->vocab_size, params->ell must equal codec->ell) into
 * point (capacity >= min(ell, V)), draws the token with the uniform integer u in [0, ell) (qsv_sample) and encodes
 * the point into msg (qsv_codec_encode: msg->mode AUTO or ENUM need at most (bound_bits + 1 + 7) / 8 bytes; SPARSE
 * can be longer, see qsv_codec_encoded_bits). Returns the token (>= 0) or a negative enum qsv_error from any step
 * (QSV_ERR_ARG: codec made for another ell). */
int qsv_draft_token(const float *logits, const qsv_quant_params *params, const qsv_codec_params *codec, uint32_t u,
                    qsv_workspace ws, qsv_point *point, qsv_message *msg);
/* CFFI_END */

#ifdef __cplusplus
}
#endif

#endif
