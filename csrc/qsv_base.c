/* QSV core: version and error descriptions. See qsv_base.h. */
#include "qsv_base.h"

int qsv_is_error(int code) { return code < 0; }

unsigned qsv_version_number(void) { return QSV_VERSION_NUMBER; }

const char *qsv_error_name(int code) {
    switch (code) {
    case QSV_OK: return "ok";
    case QSV_ERR_NULL: return "a required pointer is NULL";
    case QSV_ERR_ARG: return "invalid argument (vocab size, ell or mode; codec made for another vocab size / ell)";
    case QSV_ERR_VOCAB: return "vocabulary size must be in 1..2097152";
    case QSV_ERR_ELL: return "ell must be in 1..65535";
    case QSV_ERR_TEMPERATURE: return "temperature must be 0 (greedy) or in [1e-6, 1e6]";
    case QSV_ERR_TOP_P: return "top_p must be in (0, 1]";
    case QSV_ERR_KERNEL: return "kernel not available on this CPU / build";
    case QSV_ERR_WORKSPACE: return "workspace missing or too small";
    case QSV_ERR_CAPACITY: return "output array or buffer too small";
    case QSV_ERR_NONFINITE: return "logits / probabilities must be finite";
    case QSV_ERR_PROBS: return "probabilities must be >= 0 and sum to 1 within 1e-3";
    case QSV_ERR_SAMPLE: return "u must be in [0, ell) and the counts must sum to ell";
    case QSV_ERR_POINT: return "invalid lattice point (indices not strictly increasing and < V, zero count, or counts "
                               "not summing to ell)";
    case QSV_ERR_TRUNCATED: return "message truncated";
    case QSV_ERR_MALFORMED: return "malformed message (field out of range)";
    case QSV_ERR_RANGE: return "value out of range (enumerative index >= C(ell+V-1, V-1) or token id >= V)";
    case QSV_ERR_TRAILING: return "trailing bytes or nonzero padding bits after the message";
    case QSV_ERR_INTERNAL: return "internal error (please report)";
    default: return "unknown error code";
    }
}
