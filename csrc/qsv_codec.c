/*
 * QSV lattice-point codec: message framing (flag bit, auto choice, exact length and padding rules), the sparse
 * variable-length code, and token-id packing. The enumerative payload lives in qsv_codec_enum.c.
 * Layout reference: docs/CODEC.md.
 */
#include <string.h>

#include "qsv_codec_internal.h"

#define GAP_K_BITS 5u
#define GAP_K_MAX 24u
#define CNT_FAMILY_BITS 2u
#define CNT_K_BITS 4u
#define CNT_K_MAX 15u
/* Code families. Counts also have FAMILY_EXCESS: the ell - nnz units above the mandatory 1 per entry, as
 * nondecreasing entry positions whose differences are Rice coded (cheap when most counts are 1). */
enum { FAMILY_RICE = 0, FAMILY_EXPGOLOMB = 1, FAMILY_EXCESS = 2 };

static int valid_dims(uint32_t vocab_size, uint32_t ell) {
    return vocab_size >= 1 && vocab_size <= QSV_CODEC_MAX_VOCAB && ell >= 1 && ell <= QSV_CODEC_MAX_ELL;
}

int qsv_codec_params_init(qsv_codec_params *params, uint32_t vocab_size, uint32_t ell, qsv_workspace ws) {
    if (params == NULL || !valid_dims(vocab_size, ell)) return QSV_ERR_ARG;
    qsv_codec_params p;
    memset(&p, 0, sizeof p);
    p.vocab_size = vocab_size;
    p.ell = ell;
    p.max_nnz = ell < vocab_size ? ell : vocab_size;
    p.token_bits = qsv_bitlen32(vocab_size - 1);
    p.nnz_bits = qsv_bitlen32(p.max_nnz - 1);
    p.workspace_bytes = qsv_codec_workspace_bytes(vocab_size, ell);
    int certain;
    qsv_enum_bound_float(vocab_size, ell, &p.bound_bits, &certain);
    if (!certain) {
        int rc = qsv_codec_bound_bits(vocab_size, ell, &p.bound_bits, ws);
        if (rc) return rc;
    }
    *params = p;
    return 0;
}

static int valid_params(const qsv_codec_params *p) { return p != NULL && valid_dims(p->vocab_size, p->ell); }

static int check_point(const qsv_codec_params *p, const uint32_t *indices, const uint32_t *counts, uint32_t nnz) {
    if (!valid_params(p)) return QSV_ERR_ARG;
    if (nnz == 0 || nnz > p->max_nnz || indices == NULL || counts == NULL) return QSV_ERR_POINT;
    uint64_t sum = 0;
    for (uint32_t j = 0; j < nnz; ++j) {
        if (indices[j] >= p->vocab_size || counts[j] == 0) return QSV_ERR_POINT;
        if (j > 0 && indices[j] <= indices[j - 1]) return QSV_ERR_POINT;
        sum += counts[j];
    }
    return sum == p->ell ? 0 : QSV_ERR_POINT;
}

int qsv_codec_check_point(const qsv_codec_params *p, const qsv_point *point) {
    if (point == NULL) return QSV_ERR_NULL;
    return check_point(p, point->indices, point->counts, point->nnz);
}

/* ------------------------------------------------------------------ sparse code ---------------------------- */

typedef struct sparse_plan {
    unsigned gap_family, gap_k, cnt_family, cnt_k;
    uint64_t bits; /* whole message, flag included */
} sparse_plan;

/* Parameter choice. Costs of Rice(k) and Exp-Golomb(k) for a stream of values, for QSV_WIN consecutive k at once
 * (one pass over the stream computes all 2 * QSV_WIN candidates):
 *   Rice(k): sum (x >> k) + n (k + 1);   Exp-Golomb(k): 2 sum bitlen(x + 2^k) - n (k + 1).
 * The window moves towards smaller cost while a family's best sits on its edge (costs are convex in k for Rice
 * and nearly so for Exp-Golomb), so the result is the best (family, k) in practice at one or two passes. */
#define QSV_WIN 4u

typedef struct win_costs {
    uint64_t rice[QSV_WIN], eg[QSV_WIN];
} win_costs;

static inline void win_add(win_costs *w, uint32_t x, unsigned base) {
    for (unsigned i = 0; i < QSV_WIN; ++i) {
        w->rice[i] += x >> (base + i);
        w->eg[i] += qsv_bitlen32(x + (1u << (base + i)));
    }
}

static void win_finish(win_costs *w, uint32_t n, unsigned base) {
    for (unsigned i = 0; i < QSV_WIN; ++i) {
        uint64_t per = (uint64_t)n * (base + i + 1);
        w->rice[i] += per;
        w->eg[i] = 2 * w->eg[i] - per;
    }
}

/* Value j of a stream: gap before index j (gaps = 1) or count j - 1 (gaps = 0). */
static inline uint32_t stream_value(const uint32_t *v, uint32_t j, int gaps) {
    if (!gaps) return v[j] - 1u;
    return j ? v[j] - v[j - 1] - 1u : v[0];
}

/* Window costs over the values j = 0, stride, 2 stride, ... (stride 1: exact costs of the whole stream). */
static void win_eval(const uint32_t *v, uint32_t n, int gaps, uint32_t stride, unsigned base, win_costs *w) {
    memset(w, 0, sizeof *w);
    uint32_t used = 0;
    for (uint32_t j = 0; j < n; j += stride, ++used) win_add(w, stream_value(v, j, gaps), base);
    win_finish(w, used, base);
}

static uint64_t exact_cost(const uint32_t *v, uint32_t n, int gaps, unsigned family, unsigned k) {
    uint64_t s = 0;
    if (family == FAMILY_RICE) {
        for (uint32_t j = 0; j < n; ++j) s += stream_value(v, j, gaps) >> k;
        return s + (uint64_t)n * (k + 1);
    }
    for (uint32_t j = 0; j < n; ++j) s += qsv_bitlen32(stream_value(v, j, gaps) + (1u << k));
    return 2 * s - (uint64_t)n * (k + 1);
}

typedef struct code_choice {
    unsigned family, k;
    uint64_t cost;
} code_choice;

/* Streams longer than this choose their code on an evenly strided sample of about QSV_SAMPLE values. */
#define QSV_SAMPLE 128u

static void choose_code(const uint32_t *v, uint32_t n, int gaps, unsigned start, unsigned kmax, code_choice *best) {
    /* kmax + 1 >= QSV_WIN for both streams (24, 15) */
    const uint32_t stride = n > 2 * QSV_SAMPLE ? n / QSV_SAMPLE : 1;
    unsigned base = start > 1 ? start - 1 : 0;
    if (base + QSV_WIN - 1 > kmax) base = kmax + 1 - QSV_WIN;
    best->family = FAMILY_RICE;
    best->k = base;
    best->cost = UINT64_MAX;
    int moved_up = 0, moved_down = 0;
    for (;;) {
        win_costs w;
        win_eval(v, n, gaps, stride, base, &w);
        unsigned arg_r = 0, arg_e = 0;
        for (unsigned i = 1; i < QSV_WIN; ++i) {
            if (w.rice[i] < w.rice[arg_r]) arg_r = i;
            if (w.eg[i] < w.eg[arg_e]) arg_e = i;
        }
        int improved = 0;
        if (w.rice[arg_r] < best->cost) {
            *best = (code_choice){FAMILY_RICE, base + arg_r, w.rice[arg_r]};
            improved = 1;
        }
        if (w.eg[arg_e] < best->cost) {
            *best = (code_choice){FAMILY_EXPGOLOMB, base + arg_e, w.eg[arg_e]};
            improved = 1;
        }
        unsigned at = best->k - base;
        if (improved && at == QSV_WIN - 1 && base + QSV_WIN - 1 < kmax && !moved_down) {
            base = base + QSV_WIN - 1 + QSV_WIN - 1 <= kmax ? base + QSV_WIN - 1 : kmax + 1 - QSV_WIN;
            moved_up = 1;
        } else if (improved && at == 0 && base > 0 && !moved_up) {
            base = base >= QSV_WIN - 1 ? base - (QSV_WIN - 1) : 0;
            moved_down = 1;
        } else {
            break;
        }
    }
    if (stride > 1) best->cost = exact_cost(v, n, gaps, best->family, best->k);
}

/* Cost of the excess-units code with Rice parameter k over all m counts. */
static uint64_t excess_cost(const uint32_t *cnt, uint32_t m, unsigned k) {
    uint64_t s = 0, units = 0;
    uint32_t prev = 0;
    for (uint32_t j = 0; j < m; ++j) {
        if (cnt[j] > 1) {
            s += (j - prev) >> k;
            prev = j;
            units += cnt[j] - 1u;
        }
    }
    return s + units * (k + 1);
}

static void choose_excess(const uint32_t *cnt, uint32_t m, unsigned start, code_choice *best) {
    unsigned k = start > CNT_K_MAX ? CNT_K_MAX : start;
    uint64_t c = excess_cost(cnt, m, k);
    while (k < CNT_K_MAX) {
        uint64_t cn = excess_cost(cnt, m, k + 1);
        if (cn >= c) break;
        c = cn;
        ++k;
    }
    while (k > 0) {
        uint64_t cn = excess_cost(cnt, m, k - 1);
        if (cn >= c) break;
        c = cn;
        --k;
    }
    *best = (code_choice){FAMILY_EXCESS, k, c};
}

static unsigned log2_mean(uint64_t total, uint32_t n) {
    uint64_t mean = n ? total / n : 0;
    unsigned b = qsv_bitlen32(mean > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)mean);
    return b > 0 ? b - 1 : 0;
}

static void sparse_plan_make(const qsv_codec_params *p, const uint32_t *idx, const uint32_t *cnt, uint32_t m,
                             sparse_plan *plan) {
    uint64_t bits = 1u + p->nnz_bits + 1u + GAP_K_BITS;
    code_choice gap;
    choose_code(idx, m, 1, log2_mean((uint64_t)idx[m - 1] + 1u - m, m), GAP_K_MAX, &gap);
    plan->gap_family = gap.family;
    plan->gap_k = gap.k;
    bits += gap.cost;
    plan->cnt_family = FAMILY_RICE;
    plan->cnt_k = 0;
    if (m >= 2) {
        const uint32_t excess = p->ell - m;
        code_choice c, e;
        choose_code(cnt, m - 1, 0, log2_mean(excess - (cnt[m - 1] - 1u), m - 1), CNT_K_MAX, &c);
        /* excess units: the mean step between them is about m / (ell - m) */
        choose_excess(cnt, m, excess ? log2_mean(m, excess) : 0, &e);
        if (e.cost < c.cost) c = e;
        plan->cnt_family = c.family;
        plan->cnt_k = c.k;
        bits += CNT_FAMILY_BITS + CNT_K_BITS + c.cost;
    }
    plan->bits = bits;
}

/* Leading zero bits are implicit in a put of more bits than the value's length, so a code word of <= 32 bits is
 * one put. */
static void put_value(qsv_bitwriter *w, uint32_t x, unsigned family, unsigned k) {
    if (family == FAMILY_RICE) {
        uint32_t q = x >> k;
        if (q + 1u + k <= 32u) {
            qsv_bw_put(w, (1u << k) | (k ? x & ((1u << k) - 1u) : 0u), q + 1u + k);
        } else {
            qsv_bw_zeros(w, q);
            qsv_bw_put(w, 1, 1);
            qsv_bw_put(w, x, k);
        }
    } else {
        uint32_t y = x + (1u << k);
        unsigned nb = qsv_bitlen32(y), len = 2u * nb - k - 1u;
        if (len <= 32u) {
            qsv_bw_put(w, y, len);
        } else {
            qsv_bw_zeros(w, nb - k - 1u);
            qsv_bw_put(w, y, nb);
        }
    }
}

static void sparse_write(const qsv_codec_params *p, const uint32_t *idx, const uint32_t *cnt, uint32_t m,
                         const sparse_plan *plan, qsv_bitwriter *w) {
    qsv_bw_put(w, m - 1, p->nnz_bits);
    qsv_bw_put(w, plan->gap_family, 1);
    qsv_bw_put(w, plan->gap_k, GAP_K_BITS);
    if (m >= 2) {
        qsv_bw_put(w, plan->cnt_family, CNT_FAMILY_BITS);
        qsv_bw_put(w, plan->cnt_k, CNT_K_BITS);
    }
    uint32_t prev1 = 0;
    for (uint32_t j = 0; j < m; ++j) {
        put_value(w, idx[j] - prev1, plan->gap_family, plan->gap_k);
        prev1 = idx[j] + 1;
    }
    if (plan->cnt_family == FAMILY_EXCESS) {
        uint32_t prev = 0;
        for (uint32_t j = 0; j < m; ++j) {
            for (uint32_t t = 1; t < cnt[j]; ++t) {
                put_value(w, j - prev, FAMILY_RICE, plan->cnt_k);
                prev = j;
            }
        }
    } else {
        for (uint32_t j = 0; j + 1 < m; ++j) put_value(w, cnt[j] - 1u, plan->cnt_family, plan->cnt_k);
    }
}

/* Read one value in [0, max] (max < 2^25). */
static int get_value(qsv_bitreader *r, uint32_t max, unsigned family, unsigned k, uint32_t *x) {
    int rc;
    uint64_t zeros;
    uint32_t bits;
    if (family == FAMILY_RICE) {
        rc = qsv_br_zeros(r, (uint64_t)(max >> k), &zeros);
        if (rc) return rc;
        rc = qsv_br_get(r, 1, &bits); /* the terminating 1 */
        if (rc) return rc;
        rc = qsv_br_get(r, k, &bits);
        if (rc) return rc;
        uint64_t v = (zeros << k) | bits;
        if (v > max) return QSV_ERR_MALFORMED;
        *x = (uint32_t)v;
        return 0;
    }
    unsigned maxlen = qsv_bitlen32(max + (1u << k)); /* longest y = x + 2^k */
    rc = qsv_br_zeros(r, (uint64_t)(maxlen - k - 1), &zeros);
    if (rc) return rc;
    rc = qsv_br_get(r, (unsigned)zeros + k + 1, &bits); /* <= 26 bits, starts with the 1 */
    if (rc) return rc;
    uint32_t v = bits - (1u << k);
    if (v > max) return QSV_ERR_MALFORMED;
    *x = v;
    return 0;
}

static int sparse_read(const qsv_codec_params *p, qsv_bitreader *r, uint32_t *idx, uint32_t *cnt,
                       uint32_t capacity, uint32_t *nnz_out) {
    uint32_t field;
    int rc = qsv_br_get(r, p->nnz_bits, &field);
    if (rc) return rc;
    if (field >= p->max_nnz) return QSV_ERR_MALFORMED;
    const uint32_t m = field + 1;
    if (m > capacity) return QSV_ERR_CAPACITY;
    uint32_t gap_family, gap_k, cnt_family = FAMILY_RICE, cnt_k = 0;
    rc = qsv_br_get(r, 1, &gap_family);
    if (!rc) rc = qsv_br_get(r, GAP_K_BITS, &gap_k);
    if (!rc && m >= 2) rc = qsv_br_get(r, CNT_FAMILY_BITS, &cnt_family);
    if (!rc && m >= 2) rc = qsv_br_get(r, CNT_K_BITS, &cnt_k);
    if (rc) return rc;
    if (gap_k > GAP_K_MAX || cnt_family > FAMILY_EXCESS) return QSV_ERR_MALFORMED;
    const uint32_t V = p->vocab_size, ell = p->ell;
    uint32_t next = 0; /* smallest allowed index */
    for (uint32_t j = 0; j < m; ++j) {
        uint32_t room = V - (m - j) - next; /* m <= V: the remaining m-j entries need m-j-1 slots after this */
        uint32_t gap;
        rc = get_value(r, room, gap_family, gap_k, &gap);
        if (rc) return rc;
        idx[j] = next + gap;
        next = idx[j] + 1;
    }
    if (cnt_family == FAMILY_EXCESS) {
        for (uint32_t j = 0; j < m; ++j) cnt[j] = 1;
        uint32_t u = 0; /* entry of the previous unit */
        for (uint32_t i = ell - m; i > 0; --i) {
            uint32_t g;
            rc = get_value(r, m - 1 - u, FAMILY_RICE, cnt_k, &g);
            if (rc) return rc;
            u += g;
            cnt[u] += 1;
        }
    } else {
        uint32_t sum = 0;
        for (uint32_t j = 0; j + 1 < m; ++j) {
            uint32_t room = ell - (m - j) - sum; /* count - 1 may use what the remaining entries leave */
            uint32_t c;
            rc = get_value(r, room, cnt_family, cnt_k, &c);
            if (rc) return rc;
            cnt[j] = c + 1;
            sum += c + 1;
        }
        cnt[m - 1] = ell - sum;
    }
    *nnz_out = m;
    return 0;
}

/* ------------------------------------------------------------------ framing -------------------------------- */

static int plan_message(const qsv_codec_params *p, const uint32_t *idx, const uint32_t *cnt, uint32_t nnz,
                        int mode, sparse_plan *plan, uint64_t *bits, int *chosen) {
    if (mode != QSV_CODEC_MODE_AUTO && mode != QSV_CODEC_MODE_ENUM && mode != QSV_CODEC_MODE_SPARSE)
        return QSV_ERR_ARG;
    int rc = check_point(p, idx, cnt, nnz);
    if (rc) return rc;
    const uint64_t enum_bits = 1u + p->bound_bits;
    if (mode == QSV_CODEC_MODE_ENUM) {
        *bits = enum_bits;
        *chosen = QSV_CODEC_MODE_ENUM;
        return 0;
    }
    sparse_plan_make(p, idx, cnt, nnz, plan);
    if (mode == QSV_CODEC_MODE_SPARSE || plan->bits <= enum_bits) {
        *bits = plan->bits;
        *chosen = QSV_CODEC_MODE_SPARSE;
    } else {
        *bits = enum_bits;
        *chosen = QSV_CODEC_MODE_ENUM;
    }
    return 0;
}

int qsv_codec_encoded_bits(const qsv_codec_params *p, const qsv_point *point, int mode, uint64_t *bits_out,
                           int *chosen_mode_out) {
    if (bits_out == NULL || point == NULL) return QSV_ERR_NULL;
    sparse_plan plan;
    int chosen;
    int rc = plan_message(p, point->indices, point->counts, point->nnz, mode, &plan, bits_out, &chosen);
    if (rc) return rc;
    if (chosen_mode_out) *chosen_mode_out = chosen;
    return 0;
}

int qsv_codec_encode(const qsv_codec_params *p, const qsv_point *point, qsv_message *msg, qsv_workspace ws) {
    if (point == NULL || msg == NULL) return QSV_ERR_NULL;
    const uint32_t *indices = point->indices, *counts = point->counts, nnz = point->nnz;
    sparse_plan plan;
    uint64_t bits;
    int chosen;
    int rc = plan_message(p, indices, counts, nnz, msg->mode, &plan, &bits, &chosen);
    if (rc) return rc;
    uint64_t bytes = (bits + 7) / 8;
    if (msg->data == NULL || (uint64_t)msg->capacity < bytes) return QSV_ERR_CAPACITY;
    qsv_bitwriter w;
    qsv_bw_init(&w, msg->data, (size_t)bytes);
    if (chosen == QSV_CODEC_MODE_SPARSE) {
        qsv_bw_put(&w, 1, 1);
        sparse_write(p, indices, counts, nnz, &plan, &w);
    } else {
        qsv_bw_put(&w, 0, 1);
        rc = qsv_enum_write(p, indices, counts, nnz, &w, ws.ptr, ws.size);
        if (rc) return rc;
    }
    size_t written = qsv_bw_finish(&w);
    if (w.overflow || written != bytes) return QSV_ERR_INTERNAL;
    msg->bits = bits;
    msg->chosen_mode = chosen;
    return 0;
}

int qsv_codec_decode(const qsv_codec_params *p, const uint8_t *in, size_t in_len, qsv_point *out, int *mode_out,
                     qsv_workspace ws) {
    if (out == NULL || out->indices == NULL || out->counts == NULL || (in == NULL && in_len > 0)) return QSV_ERR_NULL;
    if (!valid_params(p)) return QSV_ERR_ARG;
    qsv_bitreader r;
    qsv_br_init(&r, in, in_len);
    uint32_t flag;
    int rc = qsv_br_get(&r, 1, &flag);
    if (rc) return rc;
    uint32_t nnz = 0;
    if (flag) {
        rc = sparse_read(p, &r, out->indices, out->counts, out->capacity, &nnz);
    } else {
        rc = qsv_enum_read(p, &r, out->indices, out->counts, out->capacity, &nnz, ws.ptr, ws.size);
    }
    if (rc) return rc;
    rc = qsv_br_finish(&r);
    if (rc) return rc;
    out->nnz = nnz;
    if (mode_out) *mode_out = flag ? QSV_CODEC_MODE_SPARSE : QSV_CODEC_MODE_ENUM;
    return 0;
}

/* ------------------------------------------------------------------ token ids ------------------------------ */

size_t qsv_codec_token_bytes(uint32_t vocab_size, size_t count) {
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB) return 0;
    size_t w = qsv_bitlen32(vocab_size - 1);
    return (count / 8) * w + ((count % 8) * w + 7) / 8;
}

int qsv_codec_pack_tokens(const uint32_t *ids, size_t count, uint32_t vocab_size, uint8_t *out,
                          size_t out_capacity) {
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || (ids == NULL && count > 0)) return QSV_ERR_ARG;
    size_t bytes = qsv_codec_token_bytes(vocab_size, count);
    if (out_capacity < bytes || (out == NULL && bytes > 0)) return QSV_ERR_CAPACITY;
    unsigned w = qsv_bitlen32(vocab_size - 1);
    for (size_t i = 0; i < count; ++i) {
        if (ids[i] >= vocab_size) return QSV_ERR_RANGE;
    }
    qsv_bitwriter bw;
    qsv_bw_init(&bw, out, bytes);
    for (size_t i = 0; i < count; ++i) qsv_bw_put(&bw, ids[i], w);
    if (qsv_bw_finish(&bw) != bytes || bw.overflow) return QSV_ERR_INTERNAL;
    return 0;
}

int qsv_codec_unpack_tokens(const uint8_t *in, size_t in_len, size_t count, uint32_t vocab_size, uint32_t *ids) {
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || (in == NULL && in_len > 0) ||
        (ids == NULL && count > 0))
        return QSV_ERR_ARG;
    size_t bytes = qsv_codec_token_bytes(vocab_size, count);
    if (in_len < bytes) return QSV_ERR_TRUNCATED;
    if (in_len > bytes) return QSV_ERR_TRAILING;
    unsigned w = qsv_bitlen32(vocab_size - 1);
    qsv_bitreader r;
    qsv_br_init(&r, in, in_len);
    for (size_t i = 0; i < count; ++i) {
        uint32_t v;
        int rc = qsv_br_get(&r, w, &v);
        if (rc) return rc;
        if (v >= vocab_size) return QSV_ERR_RANGE;
        ids[i] = v;
    }
    return qsv_br_finish(&r);
}
