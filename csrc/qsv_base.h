/* QSV core: what every part of the library shares: the version, the one error space, the caller-owned buffer types.
 *
 * Errors: every function that can fail returns an int; QSV_OK (0) or a value >= 0 that the function documents (a
 * token id) means success, a negative qsv_error failure (qsv_is_error). qsv_error_name gives a static description.
 * Outputs are unspecified after a failure.
 * Buffers: no globals, no allocation; the caller owns every buffer. Scratch memory travels as a qsv_workspace (any
 * alignment; one call at a time per workspace), lattice points as a qsv_point.
 */
#ifndef QSV_BASE_H
#define QSV_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library version: the Python binding refuses a library whose qsv_version_number() differs from the one it was
 * written for (edge_runtime/_native.py). Bump MINOR for additions, MAJOR for changes of a public signature or of a
 * code's value. */
#define QSV_VERSION_MAJOR 1
#define QSV_VERSION_MINOR 0
#define QSV_VERSION_PATCH 0
#define QSV_VERSION_NUMBER (QSV_VERSION_MAJOR * 10000 + QSV_VERSION_MINOR * 100 + QSV_VERSION_PATCH)
#define QSV_STR2_(x) #x
#define QSV_STR_(x) QSV_STR2_(x)
#define QSV_VERSION_STRING QSV_STR_(QSV_VERSION_MAJOR) "." QSV_STR_(QSV_VERSION_MINOR) "." QSV_STR_(QSV_VERSION_PATCH)

/* CFFI_BEGIN */
enum qsv_error {
    QSV_OK = 0,
    /* arguments */
    QSV_ERR_NULL = -1,        /* a required pointer is NULL */
    QSV_ERR_ARG = -2,         /* an argument without a code of its own is out of range (codec: V, ell or mode; a
                               * codec made for another V / ell than the quantizer parameters) */
    QSV_ERR_VOCAB = -3,       /* quantizer: vocab size is 0 or above QSV_MAX_VOCAB */
    QSV_ERR_ELL = -4,         /* quantizer / sampler: ell outside 1..QSV_MAX_ELL */
    QSV_ERR_TEMPERATURE = -5, /* temperature not 0 and not in [1e-6, 1e6] (or not finite) */
    QSV_ERR_TOP_P = -6,       /* top_p not in (0, 1] */
    QSV_ERR_KERNEL = -7,      /* the requested kernel is not available on this CPU / build */
    /* memory */
    QSV_ERR_WORKSPACE = -8,   /* workspace NULL or smaller than the function's *_workspace_size */
    QSV_ERR_CAPACITY = -9,    /* an output array or buffer is too small */
    /* data */
    QSV_ERR_NONFINITE = -10,  /* NaN or infinite logit / probability */
    QSV_ERR_PROBS = -11,      /* negative probability, or the sum is not within 1e-3 of 1 */
    QSV_ERR_SAMPLE = -12,     /* u >= ell, counts that do not sum to ell, or an empty point */
    QSV_ERR_POINT = -13,      /* the lattice point breaks its invariants (order, range, zero count, sum) */
    /* messages (decoders) */
    QSV_ERR_TRUNCATED = -14,  /* the message ends before the decoder is done */
    QSV_ERR_MALFORMED = -15,  /* a field holds a value the format does not allow */
    QSV_ERR_RANGE = -16,      /* enumerative index >= C(ell+V-1, V-1), or a token id >= V */
    QSV_ERR_TRAILING = -17,   /* bytes beyond the message, or nonzero padding bits */
    QSV_ERR_INTERNAL = -18    /* an internal consistency check failed (a bug: please report) */
};

/* Caller-owned scratch memory (any alignment): size bytes at ptr. */
typedef struct qsv_workspace {
    void *ptr;
    size_t size;
} qsv_workspace;

/* A lattice point (counts over V tokens summing to ell), sparse: nnz entries with strictly increasing token ids.
 * As an output, the caller sets indices, counts and capacity; the function sets nnz. */
typedef struct qsv_point {
    uint32_t *indices;  /* token ids, ascending, < V */
    uint32_t *counts;   /* counts >= 1, summing to ell */
    uint32_t capacity;  /* entries indices / counts can hold (outputs: at least min(ell, V) always suffices) */
    uint32_t nnz;       /* entries in use */
} qsv_point;

/* 1 when code is an error (negative), else 0. */
int qsv_is_error(int code);
/* Static description of a code; unknown codes give "unknown error code". */
const char *qsv_error_name(int code);
/* QSV_VERSION_NUMBER of the library as built. */
unsigned qsv_version_number(void);
/* CFFI_END */

#ifdef __cplusplus
}
#endif

#endif /* QSV_BASE_H */
