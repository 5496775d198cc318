/* Tests of qsv_draft_token (csrc/qsv_draft.c): the same token, point and bytes as the three separate calls, a
 * round trip through the decoder, and the error routing of each stage. Plain C program: exit status 0 on success. */
#include "qsv_draft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsv_quant.h"
#include "check.h"
#include "rng.h"

typedef struct {
    uint32_t v, ell;
    void *qws, *cws;
    size_t qwsz, cwsz;
    uint32_t *idx, *cnt, *idx2, *cnt2;
    uint8_t *msg, *msg2;
    size_t msg_cap;
    qsv_codec_params params;
} ctx_t;

static int ctx_init(ctx_t *c, uint32_t v, uint32_t ell) {
    memset(c, 0, sizeof *c);
    c->v = v;
    c->ell = ell;
    c->cwsz = qsv_codec_workspace_bytes(v, ell);
    c->cws = malloc(c->cwsz ? c->cwsz : 1);
    const uint32_t cap = ell < v ? ell : v;
    c->idx = malloc(sizeof(uint32_t) * cap);
    c->cnt = malloc(sizeof(uint32_t) * cap);
    c->idx2 = malloc(sizeof(uint32_t) * cap);
    c->cnt2 = malloc(sizeof(uint32_t) * cap);
    if (qsv_codec_params_init(&c->params, v, ell, (qsv_workspace){c->cws, c->cwsz}) != QSV_OK) return 0;
    c->qwsz = qsv_draft_workspace_size(&c->params); /* one workspace for the three steps */
    c->qws = malloc(c->qwsz);
    /* AUTO and ENUM need (bound_bits + 1 + 7) / 8 bytes; SPARSE can be longer on small V (room for 64 bits/entry) */
    c->msg_cap = (size_t)((c->params.bound_bits + 1 + 7) / 8) + 8u * cap + 16u;
    c->msg = malloc(c->msg_cap);
    c->msg2 = malloc(c->msg_cap);
    return 1;
}

static void ctx_free(ctx_t *c) {
    free(c->qws);
    free(c->cws);
    free(c->idx);
    free(c->cnt);
    free(c->idx2);
    free(c->cnt2);
    free(c->msg);
    free(c->msg2);
}

static void test_same_as_separate_calls(void) {
    const uint32_t vocabs[] = {7, 1000, 50272};
    const uint32_t ells[] = {1, 16, 720};
    const int modes[] = {QSV_CODEC_MODE_AUTO, QSV_CODEC_MODE_SPARSE, QSV_CODEC_MODE_ENUM};
    uint64_t s = 42;
    for (unsigned a = 0; a < 3; a++) {
        for (unsigned b = 0; b < 3; b++) {
            ctx_t c;
            CHECK(ctx_init(&c, vocabs[a], ells[b]), "context V=%u ell=%u", vocabs[a], ells[b]);
            float *z = malloc(sizeof(float) * c.v);
            for (int trial = 0; trial < 4; trial++) {
                for (uint32_t i = 0; i < c.v; i++) z[i] = (float)(2.0 * rng_gauss(&s));
                const double temp = trial == 3 ? 0.0 : 0.4 + 0.3 * trial;
                const uint32_t top_k = trial == 1 ? 5u : 0u;
                const uint32_t u = (uint32_t)(rng_next(&s) % c.ell);
                const int mode = modes[trial % 3];
                const uint32_t cap = c.ell < c.v ? c.ell : c.v;
                const qsv_quant_params qp = {c.ell, temp, top_k, 1.0, QSV_KERNEL_AUTO};
                const qsv_workspace ws = {c.qws, c.qwsz}, cws = {c.cws, c.cwsz};
                qsv_point pt = {c.idx, c.cnt, cap, 0}, pt2 = {c.idx2, c.cnt2, cap, 0};
                qsv_message msg = {c.msg, c.msg_cap, mode, -1, 0}, msg2 = {c.msg2, c.msg_cap, mode, -1, 0};
                const int tok = qsv_draft_token(z, &qp, &c.params, u, ws, &pt, &msg);
                CHECK(tok >= 0, "draft_token rc %d (V=%u ell=%u trial %d)", tok, c.v, c.ell, trial);
                CHECK(qsv_quantize_logits(z, c.v, &qp, ws, &pt2, NULL) == QSV_OK, "quantize");
                const int tok2 = qsv_sample(&pt2, c.ell, u);
                CHECK(tok2 >= 0, "sample");
                CHECK(qsv_codec_encode(&c.params, &pt2, &msg2, cws) == QSV_OK, "encode");
                const uint32_t nnz = pt.nnz, nnz2 = pt2.nnz;
                const uint64_t bits = msg.bits, bits2 = msg2.bits;
                CHECK(nnz == nnz2 && memcmp(c.idx, c.idx2, nnz * 4) == 0 && memcmp(c.cnt, c.cnt2, nnz * 4) == 0,
                      "point differs from qsv_quantize_logits (V=%u ell=%u trial %d)", c.v, c.ell, trial);
                CHECK(tok == tok2 && msg.chosen_mode == msg2.chosen_mode, "token %d vs qsv_sample %d", tok, tok2);
                CHECK(bits == bits2 && memcmp(c.msg, c.msg2, (size_t)((bits + 7) / 8)) == 0,
                      "message differs from qsv_codec_encode");
                pt2.nnz = 0;
                CHECK(qsv_codec_decode(&c.params, c.msg, (size_t)((bits + 7) / 8), &pt2, NULL, cws) == QSV_OK &&
                          pt2.nnz == nnz && memcmp(c.idx, c.idx2, nnz * 4) == 0 && memcmp(c.cnt, c.cnt2, nnz * 4) == 0,
                      "decode does not give the point back");
            }
            free(z);
            ctx_free(&c);
        }
    }
}

static void test_errors(void) {
    ctx_t c, other;
    CHECK(ctx_init(&c, 100, 16) && ctx_init(&other, 100, 32), "contexts");
    float z[100];
    for (int i = 0; i < 100; i++) z[i] = (float)i * 0.01f;
#define DRAFT(logits, ell, temp, u, params, cap)                                                                     \
    qsv_draft_token((logits), &(qsv_quant_params){(ell), (temp), 0, 1.0, 0}, (params), (u),                          \
                    (qsv_workspace){c.qws, c.qwsz}, &(qsv_point){c.idx, c.cnt, 16, 0},                               \
                    &(qsv_message){c.msg, (cap), QSV_CODEC_MODE_AUTO, 0, 0})
    CHECK(DRAFT(z, 16, 1.0, 0, &c.params, c.msg_cap) >= 0, "valid call");
    CHECK(DRAFT(z, 16, 1.0, 16, &c.params, c.msg_cap) == QSV_ERR_SAMPLE, "u = ell rejected by the sampler");
    CHECK(DRAFT(z, 16, -1.0, 0, &c.params, c.msg_cap) == QSV_ERR_TEMPERATURE, "bad temperature");
    CHECK(DRAFT(z, 16, 1.0, 0, &other.params, c.msg_cap) == QSV_ERR_ARG, "codec made for another ell");
    CHECK(DRAFT(z, 16, 1.0, 0, NULL, c.msg_cap) == QSV_ERR_NULL, "no codec");
    CHECK(DRAFT(z, 16, 1.0, 0, &c.params, 0) == QSV_ERR_CAPACITY, "message buffer too small");
    z[3] = (float)NAN;
    CHECK(DRAFT(z, 16, 1.0, 0, &c.params, c.msg_cap) == QSV_ERR_NONFINITE, "NaN logit");
#undef DRAFT
    ctx_free(&c);
    ctx_free(&other);
}

int main(void) {
    test_same_as_separate_calls();
    test_errors();
    if (failures) {
        fprintf(stderr, "test_draft: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_draft: all checks passed\n");
    return 0;
}
