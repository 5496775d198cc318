/*
 * QSV lattice-point codec: how a quantized draft distribution b (counts over V tokens summing to ell) and the
 * drafted token ids travel on the uplink. Bit layout: docs/CODEC.md.
 *
 * Two payloads behind a 1-bit flag (first bit of the message):
 *   0  enumerative index: exactly ceil(log2 C(ell+V-1, V-1)) bits, the paper's fixed-length bound;
 *   1  sparse code: nonzero count, index gaps and counts in Rice / Exp-Golomb codes with per-message parameters.
 * Auto mode sends the shorter one, so a message never exceeds bound + 1 bits (rounded up to whole bytes).
 *
 * Conventions (qsv_base.h): C11, no globals, no allocation; the caller owns every buffer. Functions that need bignum
 * scratch space take a qsv_workspace of at least qsv_codec_workspace_bytes(V, ell) bytes. Every function returns
 * QSV_OK (0) or a negative enum qsv_error. Decoders never read or write out of bounds and reject
 * malformed or truncated input and framing errors (wrong length, nonzero padding bits); a sparse message may use
 * any allowed code parameters. Thread-safe: no shared state.
 */
#ifndef QSV_CODEC_H
#define QSV_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI_BEGIN */
enum qsv_codec_mode {
    QSV_CODEC_MODE_AUTO = 0,    /* the shorter of ENUM and SPARSE (SPARSE on a tie) */
    QSV_CODEC_MODE_ENUM = 1,
    QSV_CODEC_MODE_SPARSE = 2
};

/* Per-(V, ell) constants, filled by qsv_codec_params_init; read-only afterwards (share freely across threads). */
typedef struct qsv_codec_params {
    uint32_t vocab_size;       /* V, 1 .. 2^24 */
    uint32_t ell;              /* 1 .. 65535 */
    uint32_t max_nnz;          /* min(V, ell): most nonzero entries a point can have */
    uint32_t token_bits;       /* ceil(log2 V): width of a packed token id */
    uint32_t nnz_bits;         /* ceil(log2 max_nnz): width of the sparse header's nnz-1 field */
    uint64_t bound_bits;       /* ceil(log2 C(ell+V-1, V-1)): width of the enumerative index */
    size_t workspace_bytes;    /* workspace the enumerative coder needs for these V, ell */
} qsv_codec_params;

/* Workspace bytes for qsv_codec_params_init / encode / decode at these V, ell (0 if V or ell is out of range). */
size_t qsv_codec_workspace_bytes(uint32_t vocab_size, uint32_t ell);

/* An encoded message: the caller sets data, capacity and mode; qsv_codec_encode sets bits and chosen_mode. */
typedef struct qsv_message {
    uint8_t *data;   /* capacity bytes; receives ceil(bits / 8) bytes, padding bits zero */
    size_t capacity; /* AUTO and ENUM never need more than (bound_bits + 1 + 7) / 8; SPARSE: qsv_codec_encoded_bits */
    int mode;        /* in: QSV_CODEC_MODE_AUTO, _ENUM or _SPARSE */
    int chosen_mode; /* out: QSV_CODEC_MODE_ENUM or QSV_CODEC_MODE_SPARSE */
    uint64_t bits;   /* out: message length in bits, flag included */
} qsv_message;

/* Fill *params. The bound is computed in floating point with a rigorous error bound and, only when that cannot
 * decide the ceiling (C within a relative 4(k+1)2^-53, k = min(ell, V-1), of a power of two), exactly with bignums
 * in the workspace. */
int qsv_codec_params_init(qsv_codec_params *params, uint32_t vocab_size, uint32_t ell, qsv_workspace ws);

/* Exact ceil(log2 C(ell+V-1, V-1)) without a params struct (needs the same workspace). */
int qsv_codec_bound_bits(uint32_t vocab_size, uint32_t ell, uint64_t *bits_out, qsv_workspace ws);

/* Validate a lattice point (point->nnz entries: strictly increasing indices < V, counts >= 1, sum ell). */
int qsv_codec_check_point(const qsv_codec_params *params, const qsv_point *point);

/* Exact message length in bits (flag bit included) that qsv_codec_encode would produce in this mode. No
 * workspace needed: the enumerative length is 1 + bound_bits. Validates the point. chosen_mode_out may be NULL. */
int qsv_codec_encoded_bits(const qsv_codec_params *params, const qsv_point *point, int mode, uint64_t *bits_out,
                           int *chosen_mode_out);

/* Encode the point into msg (see qsv_message). The workspace is only used when the enumerative payload is written
 * (it may be {NULL, 0} in SPARSE mode). */
int qsv_codec_encode(const qsv_codec_params *params, const qsv_point *point, qsv_message *msg, qsv_workspace ws);

/* Decode a whole message of in_len bytes into out (out->capacity = params->max_nnz always suffices; sets
 * out->nnz). mode_out may be NULL. Checks everything: field ranges, sum, order, index < C, exact length, zero
 * padding. */
int qsv_codec_decode(const qsv_codec_params *params, const uint8_t *in, size_t in_len, qsv_point *out,
                     int *mode_out, qsv_workspace ws);

/* Token ids at ceil(log2 V) bits each, MSB first, zero-padded to whole bytes. */
size_t qsv_codec_token_bytes(uint32_t vocab_size, size_t count);
int qsv_codec_pack_tokens(const uint32_t *ids, size_t count, uint32_t vocab_size, uint8_t *out,
                          size_t out_capacity);
int qsv_codec_unpack_tokens(const uint8_t *in, size_t in_len, size_t count, uint32_t vocab_size, uint32_t *ids);
/* CFFI_END */

#define QSV_CODEC_MAX_VOCAB (1u << 24)
#define QSV_CODEC_MAX_ELL 65535u

#ifdef __cplusplus
}
#endif

#endif /* QSV_CODEC_H */
