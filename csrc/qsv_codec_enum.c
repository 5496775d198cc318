/*
 * Enumerative (fixed-length) index of a lattice point: a bijection between the points {b in N^V : sum b = ell}
 * and the integers 0 .. C(ell+V-1, V-1) - 1, written in exactly ceil(log2 C(ell+V-1, V-1)) bits.
 *
 * Ranking (docs/CODEC.md): group points by their number of nonzero entries m (Vandermonde:
 * sum_m C(V, m) C(ell-1, m-1) = C(ell+V-1, ell)). Within a group, a point is its support S (an m-subset of the
 * V tokens) and a composition of ell into m positive parts (an (m-1)-subset of {1..ell-1}, the partial sums):
 *
 *   index = sum_{m' < m} C(V, m') C(ell-1, m'-1)  +  rank(S) * C(ell-1, m-1)  +  rank(composition)
 *
 * with both subset ranks in the combinatorial number system, rank{x_1 < ... < x_n} = sum_k C(x_k, k). Bignum work
 * is proportional to the number of nonzeros (not to V): each binomial is reached from the previous one or from
 * scratch, whichever takes fewer factor steps; unranking locates each x_k with a floating-point estimate that is
 * then corrected exactly.
 */
#include <math.h>
#include <string.h>

#include "qsv_codec_internal.h"

/* Slack limbs on top of the index width: ratio chunks (16 factors of <= 25 bits), term updates (40 bits). */
#define QSV_ENUM_SLACK_LIMBS 24u
#define QSV_ENUM_NUM_BN 8u

/* ---------------------------------------------------------------- the bound ---------------------------------- */

void qsv_enum_bound_float(uint32_t vocab_size, uint32_t ell, uint64_t *bits, int *certain) {
    if (vocab_size <= 1) { /* C = 1: zero bits */
        *bits = 0;
        *certain = 1;
        return;
    }
    uint32_t k = ell < vocab_size - 1 ? ell : vocab_size - 1;
    uint64_t n = (uint64_t)vocab_size + ell - 1;
    /* C(n, k) = prod_{t=1..k} (n-k+t)/t as mant * 2^expo; every factor >= 1, so mant only grows. Each factor and
     * product is one IEEE rounding (relative error <= 2^-53); frexp is exact. */
    double mant = 1.0;
    long long expo = 0;
    for (uint32_t t = 1; t <= k; ++t) {
        mant *= (double)(n - k + t) / (double)t;
        if (mant > 0x1p600) {
            int ex;
            mant = frexp(mant, &ex);
            expo += ex;
        }
    }
    int ex;
    mant = frexp(mant, &ex); /* C ~ mant * 2^(expo + ex), mant in [0.5, 1) */
    expo += ex;
    double eps = 4.0 * ((double)k + 1.0) * 0x1p-53; /* twice the worst-case accumulated relative error */
    if (mant * (1.0 + eps) < 1.0 && mant * (1.0 - eps) > 0.5) {
        *bits = (uint64_t)expo; /* 2^(expo-1) < C < 2^expo */
        *certain = 1;
    } else {
        *bits = (uint64_t)expo + 1; /* an upper bound; the exact value needs bignums */
        *certain = 0;
    }
}

static size_t limbs_for_bits(uint64_t bits) { return (size_t)((bits + 31) / 32) + QSV_ENUM_SLACK_LIMBS; }

static size_t bytes_for(uint64_t bits, uint32_t max_nnz) {
    size_t limbs = limbs_for_bits(bits);
    /* QSV_ENUM_NUM_BN bignums + scratch (den, quo, rem, vn: limbs each; un: limbs + 1) + xs (max_nnz + 1) */
    return ((QSV_ENUM_NUM_BN + 5u) * limbs + 1u + (size_t)max_nnz + 1u) * sizeof(uint32_t) + 16u;
}

size_t qsv_codec_workspace_bytes(uint32_t vocab_size, uint32_t ell) {
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || ell < 1 || ell > QSV_CODEC_MAX_ELL) return 0;
    uint64_t bits;
    int certain;
    qsv_enum_bound_float(vocab_size, ell, &bits, &certain);
    if (!certain) ++bits;
    return bytes_for(bits, ell < vocab_size ? ell : vocab_size);
}

typedef struct enum_ws {
    qsv_bn bn[QSV_ENUM_NUM_BN];
    qsv_bn_scratch s;
    uint32_t *xs;
} enum_ws;

static int ws_layout(uint64_t bits, uint32_t max_nnz, void *workspace, size_t workspace_bytes, enum_ws *e) {
    if (workspace == NULL || workspace_bytes < bytes_for(bits, max_nnz)) return QSV_CODEC_E_SPACE;
    uintptr_t base = (uintptr_t)workspace;
    uintptr_t aligned = (base + 7u) & ~(uintptr_t)7u;
    uint32_t *p = (uint32_t *)(void *)((unsigned char *)workspace + (aligned - base));
    size_t limbs = limbs_for_bits(bits);
    for (unsigned i = 0; i < QSV_ENUM_NUM_BN; ++i) {
        e->bn[i].d = p;
        e->bn[i].n = 0;
        e->bn[i].cap = limbs;
        p += limbs;
    }
    qsv_bn *sc[3] = {&e->s.den, &e->s.quo, &e->s.rem};
    for (unsigned i = 0; i < 3; ++i) {
        sc[i]->d = p;
        sc[i]->n = 0;
        sc[i]->cap = limbs;
        p += limbs;
    }
    e->s.vn = p;
    p += limbs;
    e->s.un = p;
    p += limbs + 1;
    e->s.cap = limbs;
    e->xs = p;
    return 0;
}

int qsv_enum_bound_exact(uint32_t vocab_size, uint32_t ell, uint64_t *bits, qsv_bn *c, qsv_bn_scratch *s) {
    if (vocab_size <= 1) {
        *bits = 0;
        return 0;
    }
    uint32_t k = ell < vocab_size - 1 ? ell : vocab_size - 1;
    uint32_t n = vocab_size + ell - 1; /* < 2^25 */
    qsv_bn_set_u32(c, 1);
    int rc = qsv_bn_ratio(c, n - k + 1, 1, k, s); /* C(n, k) */
    if (rc) return rc;
    uint32_t one_limb = 1;
    qsv_bn one = {&one_limb, 1, 1};
    qsv_bn_sub(c, &one);
    *bits = qsv_bn_bitlen(c); /* ceil(log2 C) = bit length of C - 1 */
    return 0;
}

int qsv_codec_bound_bits(uint32_t vocab_size, uint32_t ell, uint64_t *bits_out, void *workspace,
                         size_t workspace_bytes) {
    if (bits_out == NULL || vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || ell < 1 ||
        ell > QSV_CODEC_MAX_ELL)
        return QSV_CODEC_E_ARG;
    uint64_t bits;
    int certain;
    qsv_enum_bound_float(vocab_size, ell, &bits, &certain);
    if (!certain) {
        enum_ws e;
        uint32_t max_nnz = ell < vocab_size ? ell : vocab_size;
        int rc = ws_layout(bits + 1, max_nnz, workspace, workspace_bytes, &e);
        if (rc) return rc;
        rc = qsv_enum_bound_exact(vocab_size, ell, &bits, &e.bn[0], &e.s);
        if (rc) return rc;
    }
    *bits_out = bits;
    return 0;
}

/* ------------------------------------------------------------- binomial helpers ---------------------------- */

/* b = C(x, j) from scratch: min(j, x - j) factor steps. */
static int binom_scratch(qsv_bn *b, uint32_t x, uint32_t j, qsv_bn_scratch *s) {
    if (j > x) {
        b->n = 0;
        return 0;
    }
    uint32_t jj = j < x - j ? j : x - j;
    qsv_bn_set_u32(b, 1);
    return qsv_bn_ratio(b, x - jj + 1, 1, jj, s);
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* C(x, j) -> C(x_to, j) for x_to < x (requires C(x, j) > 0 i.e. x >= j, and x_to >= j). Chunks run from the top
 * so that each intermediate is a binomial coefficient (exact division). */
static int binom_down_x(qsv_bn *b, uint32_t x, uint32_t j, uint32_t x_to, qsv_bn_scratch *s) {
    uint32_t top = x;
    while (top > x_to) {
        uint32_t c = min_u32(16u, top - x_to);
        uint32_t low = top - c + 1; /* steps s = top .. low: C(s-1, j) = C(s, j) (s-j) / s */
        int rc = qsv_bn_ratio(b, low - j, low, c, s);
        if (rc) return rc;
        top -= c;
    }
    return 0;
}

/* Natural log of Gamma(x) for x >= 1 (Stirling series after shifting x to >= 16). */
static double ln_gamma(double x) {
    double shift = 0.0;
    while (x < 16.0) {
        shift -= log(x);
        x += 1.0;
    }
    double inv = 1.0 / x, inv2 = inv * inv;
    double series = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0))));
    return shift + (x - 0.5) * log(x) - x + 0.91893853320467274178 + series;
}

/* Real x >= k with C(x, k) ~ exp(ln_target), clamped to [lo, hi]. */
static uint32_t estimate_x(double ln_target, uint32_t k, uint32_t lo, uint32_t hi) {
    double lk = ln_gamma((double)k + 1.0);
    double x = 0.5 * ((double)k - 1.0) + exp((ln_target + lk) / (double)k);
    double dlo = (double)lo, dhi = (double)hi;
    if (!(x >= dlo)) x = dlo;
    if (!(x <= dhi)) x = dhi;
    for (int it = 0; it < 4; ++it) {
        double f = ln_gamma(x + 1.0) - lk - ln_gamma(x - (double)k + 1.0) - ln_target;
        double slope = log((x + 1.0) / (x + 1.0 - (double)k)); /* ln C(x+1,k) - ln C(x,k) */
        if (!(slope > 0.0)) break;
        double xn = x - f / slope;
        if (!(xn >= dlo)) xn = dlo;
        if (!(xn <= dhi)) xn = dhi;
        double delta = xn - x;
        x = xn;
        if (delta < 0.25 && delta > -0.25) break;
    }
    uint32_t xi = (uint32_t)x;
    if (xi < lo) xi = lo;
    if (xi > hi) xi = hi;
    return xi;
}

/* ------------------------------------------------------------- ranking ------------------------------------- */

/* r = sum_{k=1..n} C(xs[k-1], k) for strictly increasing xs. b is scratch. */
static int comb_rank(const uint32_t *xs, uint32_t n, qsv_bn *r, qsv_bn *b, qsv_bn_scratch *s) {
    r->n = 0;
    int have = 0; /* b holds C(bx, k-1) > 0 */
    uint32_t bx = 0;
    for (uint32_t k = 1; k <= n; ++k) {
        uint32_t x = xs[k - 1];
        if (x < k) { /* C(x, k) = 0 */
            have = 0;
            continue;
        }
        int rc;
        if (k == 1) {
            qsv_bn_set_u32(b, x);
        } else {
            uint32_t scratch_cost = min_u32(k, x - k);
            if (have && x - bx + 1 < scratch_cost) {
                /* C(bx, k-1) -> C(x, k-1) -> C(x, k) */
                rc = qsv_bn_ratio(b, bx + 1, bx + 1 - (k - 1), x - bx, s);
                if (!rc) rc = qsv_bn_ratio(b, x - k + 1, k, 1, s);
            } else {
                rc = binom_scratch(b, x, k, s);
            }
            if (rc) return rc;
        }
        rc = qsv_bn_add(r, b);
        if (rc) return rc;
        have = 1;
        bx = x;
    }
    return 0;
}

/* Inverse of comb_rank: xs[0..n-1] strictly increasing, all < upper, from r < C(upper, n). r is consumed. */
static int comb_unrank(qsv_bn *r, uint32_t n, uint32_t upper, uint32_t *xs, qsv_bn *b, qsv_bn *t,
                       qsv_bn_scratch *s) {
    int have = 0; /* b holds C(bx, k+1) > 0 */
    uint32_t bx = 0;
    for (uint32_t k = n; k >= 1; --k) {
        if (upper < k) return QSV_CODEC_E_INTERNAL;
        uint32_t hi = upper - 1;
        if (r->n == 0) { /* the rest is 0, 1, ..., k-1 */
            for (uint32_t j = 1; j <= k; ++j) xs[j - 1] = j - 1;
            return 0;
        }
        if (k == 1) {
            if (r->n > 1 || r->d[0] > hi) return QSV_CODEC_E_INTERNAL;
            xs[0] = r->d[0];
            r->n = 0;
            return 0;
        }
        if (hi < k) return QSV_CODEC_E_INTERNAL; /* r >= 1 needs C(hi, k) >= 1 */
        uint32_t x = estimate_x(qsv_bn_ln(r), k, k, hi);
        int rc;
        uint32_t scratch_cost = min_u32(k, x - k);
        if (have && bx - x + 1 < scratch_cost) {
            /* C(bx, k+1) -> C(bx, k) -> C(x, k) */
            rc = qsv_bn_ratio(b, k + 1, bx - k, 1, s);
            if (!rc && bx > x) rc = binom_down_x(b, bx, k, x, s);
        } else {
            rc = binom_scratch(b, x, k, s);
        }
        if (rc) return rc;
        /* exact correction: largest x in [k-1, hi] with C(x, k) <= r */
        while (qsv_bn_cmp(b, r) > 0) {
            rc = qsv_bn_ratio(b, x - k, x, 1, s); /* C(x-1, k); zero once x-1 < k */
            if (rc) return rc;
            --x;
        }
        while (x < hi) {
            if (b->n == 0) {
                qsv_bn_set_u32(t, 1); /* C(k, k) */
            } else {
                rc = qsv_bn_copy(t, b);
                if (!rc) rc = qsv_bn_ratio(t, x + 1, x + 1 - k, 1, s);
                if (rc) return rc;
            }
            if (qsv_bn_cmp(t, r) > 0) break;
            qsv_bn tmp = *b;
            *b = *t;
            *t = tmp;
            ++x;
        }
        xs[k - 1] = x;
        qsv_bn_sub(r, b);
        upper = x;
        have = b->n != 0;
        bx = x;
    }
    return 0;
}

/* term = C(V, m) C(ell-1, m-1) -> the same for m + 1. */
static int next_term(qsv_bn *term, uint32_t vocab_size, uint32_t ell, uint32_t m) {
    int rc = qsv_bn_mul_small(term, vocab_size - m);
    if (!rc) rc = qsv_bn_mul_small(term, ell - m);
    if (rc) return rc;
    if (qsv_bn_div_small(term, m * (m + 1)) != 0) return QSV_CODEC_E_INTERNAL;
    return 0;
}

int qsv_enum_write(const qsv_codec_params *p, const uint32_t *indices, const uint32_t *counts, uint32_t nnz,
                   qsv_bitwriter *w, void *workspace, size_t workspace_bytes) {
    enum_ws e;
    int rc = ws_layout(p->bound_bits, p->max_nnz, workspace, workspace_bytes, &e);
    if (rc) return rc;
    qsv_bn *idx = &e.bn[0], *term = &e.bn[1], *b = &e.bn[2], *rank_s = &e.bn[3], *cl = &e.bn[4],
           *rank_c = &e.bn[5], *prod = &e.bn[6];
    const uint32_t m = nnz, V = p->vocab_size, ell = p->ell;
    /* offset of the m-group */
    idx->n = 0;
    qsv_bn_set_u32(term, V);
    for (uint32_t mm = 1; mm < m; ++mm) {
        rc = qsv_bn_add(idx, term);
        if (!rc) rc = next_term(term, V, ell, mm);
        if (rc) return rc;
    }
    rc = binom_scratch(cl, ell - 1, m - 1, &e.s);
    if (!rc) rc = comb_rank(indices, m, rank_s, b, &e.s);
    if (rc) return rc;
    uint32_t partial = 0;
    for (uint32_t k = 0; k + 1 < m; ++k) {
        partial += counts[k];
        e.xs[k] = partial - 1;
    }
    rc = comb_rank(e.xs, m - 1, rank_c, b, &e.s);
    if (!rc) rc = qsv_bn_mul(prod, rank_s, cl);
    if (!rc) rc = qsv_bn_add(idx, prod);
    if (!rc) rc = qsv_bn_add(idx, rank_c);
    if (rc) return rc;
    const uint64_t bits = p->bound_bits;
    if (qsv_bn_bitlen(idx) > bits) return QSV_CODEC_E_INTERNAL;
    /* MSB first: the top (bits % 32) bits, then whole limbs downwards */
    size_t limbs = (size_t)(bits / 32);
    unsigned top = (unsigned)(bits % 32);
    if (top) qsv_bw_put(w, limbs < idx->n ? idx->d[limbs] : 0u, top);
    for (size_t i = limbs; i-- > 0;) qsv_bw_put(w, i < idx->n ? idx->d[i] : 0u, 32);
    return 0;
}

int qsv_enum_read(const qsv_codec_params *p, qsv_bitreader *rd, uint32_t *indices, uint32_t *counts,
                  uint32_t capacity, uint32_t *nnz_out, void *workspace, size_t workspace_bytes) {
    enum_ws e;
    int rc = ws_layout(p->bound_bits, p->max_nnz, workspace, workspace_bytes, &e);
    if (rc) return rc;
    qsv_bn *r = &e.bn[0], *term = &e.bn[1], *b = &e.bn[2], *rank_s = &e.bn[3], *cl = &e.bn[4],
           *rank_c = &e.bn[5], *t = &e.bn[6];
    const uint32_t V = p->vocab_size, ell = p->ell;
    const uint64_t bits = p->bound_bits;
    size_t limbs = (size_t)(bits / 32);
    unsigned top = (unsigned)(bits % 32);
    size_t total = limbs + (top ? 1u : 0u);
    if (total > r->cap) return QSV_CODEC_E_INTERNAL;
    if (top) {
        rc = qsv_br_get(rd, top, &r->d[limbs]);
        if (rc) return rc;
    }
    for (size_t i = limbs; i-- > 0;) {
        rc = qsv_br_get(rd, 32, &r->d[i]);
        if (rc) return rc;
    }
    r->n = total;
    while (r->n > 0 && r->d[r->n - 1] == 0) --r->n;
    /* find the m-group */
    uint32_t m = 1;
    qsv_bn_set_u32(term, V);
    while (qsv_bn_cmp(r, term) >= 0) {
        if (m == p->max_nnz) return QSV_CODEC_E_RANGE; /* index >= C(ell+V-1, V-1) */
        qsv_bn_sub(r, term);
        rc = next_term(term, V, ell, m);
        if (rc) return rc;
        ++m;
    }
    if (m > capacity) return QSV_CODEC_E_SPACE;
    rc = binom_scratch(cl, ell - 1, m - 1, &e.s);
    if (!rc) rc = qsv_bn_divmod(rank_s, rank_c, r, cl, &e.s);
    if (!rc) rc = comb_unrank(rank_s, m, V, indices, b, t, &e.s);
    if (!rc) rc = comb_unrank(rank_c, m - 1, ell - 1, e.xs, b, t, &e.s);
    if (rc) return rc;
    uint32_t prev = 0;
    for (uint32_t k = 0; k + 1 < m; ++k) {
        uint32_t partial = e.xs[k] + 1;
        counts[k] = partial - prev;
        prev = partial;
    }
    counts[m - 1] = ell - prev;
    *nnz_out = m;
    return 0;
}
