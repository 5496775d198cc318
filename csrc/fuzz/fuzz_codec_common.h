/* Shared helpers of the codec fuzz targets (not a qsv_*.h header: nothing here goes into the cffi module). */
#ifndef FUZZ_CODEC_COMMON_H
#define FUZZ_CODEC_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qsv_codec.h"

#include "tests/codec_calls.h"

#define FUZZ_REQUIRE(cond)                                                                                       \
    do {                                                                                                         \
        if (!(cond)) {                                                                                           \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                                           \
            abort();                                                                                             \
        }                                                                                                        \
    } while (0)

/* Enumerative re-encoding costs grow like nnz * bound_bits; above this bound only the sparse payload is re-encoded
 * (and no workspace is allocated) so that every input stays far below libFuzzer's timeout. */
#define FUZZ_MAX_ENUM_BITS 8192u

/* A decoding context for (V, ell) taken from the first 5 input bytes; V in 1..2^24, ell in 1..max_ell. */
typedef struct fuzz_ctx {
    qsv_codec_params p;
    unsigned char *ws;
    size_t ws_bytes;
    uint32_t *idx, *cnt, *idx2, *cnt2;
    unsigned char *out;
    size_t out_cap;
} fuzz_ctx;

static inline int fuzz_ctx_init(fuzz_ctx *c, const uint8_t *data, uint32_t max_ell) {
    uint32_t V = 1u + (((uint32_t)data[0] << 16 | (uint32_t)data[1] << 8 | data[2]) & 0xFFFFFFu);
    if (data[0] & 0x80) V = 1u + (V & 0x3FFu); /* half the inputs use small vocabularies */
    uint32_t ell = 1u + (((uint32_t)data[3] << 8 | data[4]) % max_ell);
    uint32_t n = ell < V ? ell : V;
    c->idx = malloc(n * sizeof(uint32_t));
    c->cnt = malloc(n * sizeof(uint32_t));
    c->idx2 = malloc(n * sizeof(uint32_t));
    c->cnt2 = malloc(n * sizeof(uint32_t));
    FUZZ_REQUIRE(c->idx && c->cnt && c->idx2 && c->cnt2);
    /* the workspace (up to ~10 MB) only where the enumerative coder runs: keeps the executions fast */
    c->ws = NULL;
    c->ws_bytes = 0;
    int rc = qsv_codec_params_init(&c->p, V, ell, (qsv_workspace){NULL, 0});
    if (rc == QSV_ERR_WORKSPACE || (rc == QSV_OK && c->p.bound_bits <= FUZZ_MAX_ENUM_BITS)) {
        c->ws_bytes = qsv_codec_workspace_bytes(V, ell);
        c->ws = malloc(c->ws_bytes);
        FUZZ_REQUIRE(c->ws);
        rc = qsv_codec_params_init(&c->p, V, ell, (qsv_workspace){c->ws, c->ws_bytes});
    }
    FUZZ_REQUIRE(rc == QSV_OK);
    c->out_cap = 16u + (size_t)n * 16u + (size_t)ell * 4u + (size_t)(c->p.bound_bits / 8);
    c->out = malloc(c->out_cap);
    FUZZ_REQUIRE(c->out);
    return 0;
}

static inline void fuzz_ctx_free(fuzz_ctx *c) {
    free(c->ws);
    free(c->idx);
    free(c->cnt);
    free(c->idx2);
    free(c->cnt2);
    free(c->out);
}

/* Decode msg; when it is accepted: the point is valid, re-encoding it in the decoded mode gives a message that
 * decodes to the same point (and, for the canonical enumerative payload, the same bytes). */
static inline void fuzz_check_message(fuzz_ctx *c, const uint8_t *msg, size_t len) {
    uint32_t nnz = 0;
    int mode = -1;
    int rc = t_decode(&c->p, msg, len, c->idx, c->cnt, c->p.max_nnz, &nnz, &mode, c->ws, c->ws_bytes);
    FUZZ_REQUIRE(rc <= 0 && rc != QSV_ERR_INTERNAL);
    if (rc != QSV_OK) return;
    FUZZ_REQUIRE(t_check_point(&c->p, c->idx, c->cnt, nnz) == QSV_OK);
    static const int modes[3] = {QSV_CODEC_MODE_AUTO, QSV_CODEC_MODE_ENUM, QSV_CODEC_MODE_SPARSE};
    for (int i = 0; i < 3; ++i) {
        if (modes[i] != QSV_CODEC_MODE_SPARSE && c->p.bound_bits > FUZZ_MAX_ENUM_BITS) continue;
        uint64_t bits = 0;
        int chosen = -1;
        rc = t_encode(&c->p, modes[i], c->idx, c->cnt, nnz, c->out, c->out_cap, &bits, &chosen, c->ws,
                              c->ws_bytes);
        FUZZ_REQUIRE(rc == QSV_OK);
        size_t bytes = (size_t)((bits + 7) / 8);
        if (modes[i] == QSV_CODEC_MODE_AUTO) FUZZ_REQUIRE(bits <= c->p.bound_bits + 1);
        if (modes[i] == QSV_CODEC_MODE_ENUM && mode == QSV_CODEC_MODE_ENUM)
            FUZZ_REQUIRE(bytes == len && memcmp(c->out, msg, len) == 0);
        uint32_t nnz2 = 0;
        int mode2 = -1;
        rc = t_decode(&c->p, c->out, bytes, c->idx2, c->cnt2, c->p.max_nnz, &nnz2, &mode2, c->ws,
                              c->ws_bytes);
        FUZZ_REQUIRE(rc == QSV_OK && mode2 == chosen && nnz2 == nnz);
        FUZZ_REQUIRE(memcmp(c->idx, c->idx2, nnz * sizeof(uint32_t)) == 0);
        FUZZ_REQUIRE(memcmp(c->cnt, c->cnt2, nnz * sizeof(uint32_t)) == 0);
    }
}

#endif /* FUZZ_CODEC_COMMON_H */
