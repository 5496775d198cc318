/* The codec's calls with the lattice point and the buffers as separate arguments: the shape the codec tests and
 * fuzz targets are written in (shared by csrc/tests/test_codec.c and csrc/fuzz/fuzz_codec_common.h). */
#ifndef QSV_TESTS_CODEC_CALLS_H
#define QSV_TESTS_CODEC_CALLS_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_codec.h"

static inline int t_encoded_bits(const qsv_codec_params *p, const uint32_t *idx, const uint32_t *cnt, uint32_t nnz,
                                 int mode, uint64_t *bits, int *chosen) {
    const qsv_point pt = {(uint32_t *)idx, (uint32_t *)cnt, nnz, nnz};
    return qsv_codec_encoded_bits(p, &pt, mode, bits, chosen);
}
static inline int t_check_point(const qsv_codec_params *p, const uint32_t *idx, const uint32_t *cnt, uint32_t nnz) {
    const qsv_point pt = {(uint32_t *)idx, (uint32_t *)cnt, nnz, nnz};
    return qsv_codec_check_point(p, &pt);
}
static inline int t_encode(const qsv_codec_params *p, int mode, const uint32_t *idx, const uint32_t *cnt,
                           uint32_t nnz, uint8_t *out, size_t cap, uint64_t *bits, int *chosen, void *ws,
                           size_t ws_bytes) {
    const qsv_point pt = {(uint32_t *)idx, (uint32_t *)cnt, nnz, nnz};
    qsv_message msg = {out, cap, mode, -1, 0};
    const int rc = qsv_codec_encode(p, &pt, &msg, (qsv_workspace){ws, ws_bytes});
    if (rc == QSV_OK && bits) *bits = msg.bits;
    if (rc == QSV_OK && chosen) *chosen = msg.chosen_mode;
    return rc;
}
static inline int t_decode(const qsv_codec_params *p, const uint8_t *in, size_t len, uint32_t *idx, uint32_t *cnt,
                           uint32_t cap, uint32_t *nnz, int *mode, void *ws, size_t ws_bytes) {
    qsv_point pt = {idx, cnt, cap, 0};
    const int rc = qsv_codec_decode(p, in, len, &pt, mode, (qsv_workspace){ws, ws_bytes});
    if (rc == QSV_OK) *nnz = pt.nnz;
    return rc;
}

#endif
