/* QSV core: one draft token in one call. See qsv_draft.h. */
#include "qsv_draft.h"

#include "qsv_quant.h"

int qsv_draft_token(const float *logits, uint32_t vocab_size, uint32_t ell, double temperature, uint32_t top_k,
                    double top_p, uint32_t u, void *quant_workspace, size_t quant_workspace_size,
                    uint32_t *indices, uint32_t *counts, uint32_t capacity, uint32_t *out_nnz, uint32_t *out_token,
                    const qsv_codec_params *codec, int mode, uint8_t *out, size_t out_capacity, uint64_t *bits_out,
                    void *codec_workspace, size_t codec_workspace_size) {
    if (!out_nnz || !out_token || !bits_out || !codec) return QSV_ERR_NULL;
    if (codec->vocab_size != vocab_size || codec->ell != ell) return QSV_CODEC_E_ARG;
    int rc = qsv_quantize_logits(logits, vocab_size, ell, temperature, top_k, top_p, quant_workspace,
                                 quant_workspace_size, indices, counts, capacity, out_nnz, NULL);
    if (rc != QSV_OK) return rc;
    rc = qsv_sample(indices, counts, *out_nnz, ell, u, out_token);
    if (rc != QSV_OK) return rc;
    return qsv_codec_encode(codec, mode, indices, counts, *out_nnz, out, out_capacity, bits_out, NULL,
                            codec_workspace, codec_workspace_size);
}
