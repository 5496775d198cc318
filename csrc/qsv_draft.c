/* QSV core: one draft token in one call. See qsv_draft.h. */
#include "qsv_draft.h"

size_t qsv_draft_workspace_size(const qsv_codec_params *codec) {
    if (!codec) return 0;
    const size_t q = qsv_quant_workspace_size(codec->vocab_size);
    return q > codec->workspace_bytes ? q : codec->workspace_bytes;
}

int qsv_draft_token(const float *logits, const qsv_quant_params *params, const qsv_codec_params *codec, uint32_t u,
                    qsv_workspace ws, qsv_point *point, qsv_message *msg) {
    if (!params || !codec || !point || !msg) return QSV_ERR_NULL;
    if (codec->ell != params->ell) return QSV_ERR_ARG;
    int rc = qsv_quantize_logits(logits, codec->vocab_size, params, ws, point, NULL);
    if (rc != QSV_OK) return rc;
    const int token = qsv_sample(point, params->ell, u);
    if (qsv_is_error(token)) return token;
    rc = qsv_codec_encode(codec, point, msg, ws);
    return rc != QSV_OK ? rc : token;
}
