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

/* Slack limbs on top of the index width: a ratio chunk's numerators, term updates (2 limbs), margin. */
#define QSV_ENUM_SLACK_LIMBS (QSV_RATIO_CHUNK_LIMBS + 6u)
#define QSV_ENUM_NUM_BN 6u
#define QSV_ENUM_ARENA_PER_LEVEL 4u

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

static size_t limbs_for_bits(uint64_t bits) {
    return (size_t)((bits + QSV_LIMB_BITS - 1) / QSV_LIMB_BITS) + QSV_ENUM_SLACK_LIMBS;
}

/* Recursion depth of subset_rank over a universe of n: n halves per level, base case at n <= 1. */
static size_t arena_count(uint32_t vocab_size, uint32_t ell) {
    uint32_t n = vocab_size > ell ? vocab_size : ell;
    return ((size_t)qsv_bitlen32(n) + 2u) * QSV_ENUM_ARENA_PER_LEVEL;
}

static size_t bytes_for(uint64_t bits, uint32_t vocab_size, uint32_t ell) {
    size_t limbs = limbs_for_bits(bits);
    uint32_t max_nnz = ell < vocab_size ? ell : vocab_size;
    /* QSV_ENUM_NUM_BN bignums, scratch (num, den, prod, quo, rem, vn: limbs each; un: limbs + 1), the subset-rank
     * arena, xs (max_nnz + 1), alignment */
    size_t nbn = QSV_ENUM_NUM_BN + 7u + arena_count(vocab_size, ell);
    return (nbn * limbs + 1u) * sizeof(qsv_limb) + ((size_t)max_nnz + 1u) * sizeof(uint32_t) + 16u;
}

size_t qsv_codec_workspace_bytes(uint32_t vocab_size, uint32_t ell) {
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || ell < 1 || ell > QSV_CODEC_MAX_ELL) return 0;
    uint64_t bits;
    int certain;
    qsv_enum_bound_float(vocab_size, ell, &bits, &certain);
    if (!certain) ++bits;
    return bytes_for(bits, vocab_size, ell);
}

/* Arena of equally sized bignums handed out in stack order (QSV_ENUM_ARENA_PER_LEVEL per recursion level). */
typedef struct bn_arena {
    qsv_limb *base;
    size_t limbs; /* per bignum */
    size_t used, count;
} bn_arena;

typedef struct enum_ws {
    qsv_bn bn[QSV_ENUM_NUM_BN];
    qsv_bn_scratch s;
    bn_arena arena;
    uint32_t *xs;
} enum_ws;

static int ws_layout(uint64_t bits, uint32_t vocab_size, uint32_t ell, void *workspace, size_t workspace_bytes,
                     enum_ws *e) {
    if (workspace == NULL || workspace_bytes < bytes_for(bits, vocab_size, ell)) return QSV_ERR_WORKSPACE;
    uintptr_t base = (uintptr_t)workspace;
    uintptr_t aligned = (base + 7u) & ~(uintptr_t)7u;
    qsv_limb *p = (qsv_limb *)(void *)((unsigned char *)workspace + (aligned - base));
    size_t limbs = limbs_for_bits(bits);
    for (unsigned i = 0; i < QSV_ENUM_NUM_BN; ++i) {
        e->bn[i].d = p;
        e->bn[i].n = 0;
        e->bn[i].cap = limbs;
        p += limbs;
    }
    qsv_bn *sc[5] = {&e->s.num, &e->s.den, &e->s.prod, &e->s.quo, &e->s.rem};
    for (unsigned i = 0; i < 5; ++i) {
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
    e->arena.base = p;
    e->arena.limbs = limbs;
    e->arena.used = 0;
    e->arena.count = arena_count(vocab_size, ell);
    p += e->arena.count * limbs;
    e->xs = (uint32_t *)(void *)p;
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
    qsv_limb one_limb = 1;
    qsv_bn one = {&one_limb, 1, 1};
    qsv_bn_sub(c, &one);
    *bits = qsv_bn_bitlen(c); /* ceil(log2 C) = bit length of C - 1 */
    return 0;
}

int qsv_codec_bound_bits(uint32_t vocab_size, uint32_t ell, uint64_t *bits_out, qsv_workspace ws) {
    if (bits_out == NULL) return QSV_ERR_NULL;
    if (vocab_size < 1 || vocab_size > QSV_CODEC_MAX_VOCAB || ell < 1 ||
        ell > QSV_CODEC_MAX_ELL)
        return QSV_ERR_ARG;
    uint64_t bits;
    int certain;
    qsv_enum_bound_float(vocab_size, ell, &bits, &certain);
    if (!certain) {
        enum_ws e;
        int rc = ws_layout(bits + 1, vocab_size, ell, ws.ptr, ws.size, &e);
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


/* ------------------------------------------------------------- subset ranking ------------------------------ */
/*
 * rank of an m-subset of [lo, lo+n), by halving the universe: with h = floor(n/2), nr = n - h and a elements in
 * the lower half,
 *     rank = sum_{a' < a} C(h, a') C(nr, m-a')  +  rank_lower * C(nr, m-a)  +  rank_upper
 * (a' from max(0, m-nr)). Base cases: m == 0 or m == n (one subset, rank 0), m == 1 (rank = x - lo).
 * Work per node is O(m) small-factor steps on numbers of the node's size; the tree has depth <= log2(n) + 1.
 */


static int arena_take(bn_arena *ar, qsv_bn *out, unsigned k) {
    if (ar->used + k > ar->count) return QSV_ERR_INTERNAL;
    for (unsigned i = 0; i < k; ++i) {
        out[i].d = ar->base + (ar->used + i) * ar->limbs;
        out[i].n = 0;
        out[i].cap = ar->limbs;
    }
    ar->used += k;
    return 0;
}

static void arena_give(bn_arena *ar, unsigned k) { ar->used -= k; }

/* term = C(h, amin) C(nr, m - amin) at the first feasible a'. */
static int first_term(qsv_bn *term, uint32_t h, uint32_t nr, uint32_t m, uint32_t amin, qsv_bn_scratch *s) {
    return amin == 0 ? binom_scratch(term, nr, m, s) : binom_scratch(term, h, amin, s);
}

/* b <- b * n1 * n2 / (d1 * d2), where b * n1 / d1 is an integer; one pass per product that fits 32 bits. */
static int ratio2(qsv_bn *b, uint32_t n1, uint32_t n2, uint32_t d1, uint32_t d2) {
    int rc;
    uint64_t np = (uint64_t)n1 * n2, dp = (uint64_t)d1 * d2;
    if (np <= QSV_LIMB_MAX) {
        rc = qsv_bn_mul_small(b, (qsv_limb)np);
    } else {
        rc = qsv_bn_mul_small(b, n1);
        if (!rc) rc = qsv_bn_mul_small(b, n2);
    }
    if (rc) return rc;
    if (dp <= QSV_LIMB_MAX) return qsv_bn_div_small(b, (qsv_limb)dp) ? QSV_ERR_INTERNAL : 0;
    if (qsv_bn_div_small(b, d1) != 0) return QSV_ERR_INTERNAL;
    return qsv_bn_div_small(b, d2) ? QSV_ERR_INTERNAL : 0;
}

/* term(a') -> term(a'+1): * (h-a')/(a'+1) * (m-a')/(nr-m+a'+1); each partial result is an integer. */
static int step_term(qsv_bn *term, uint32_t h, uint32_t nr, uint32_t m, uint32_t ap) {
    return ratio2(term, h - ap, m - ap, ap + 1, nr - m + ap + 1);
}

static int subset_rank(const uint32_t *xs, uint32_t m, uint32_t lo, uint32_t n, qsv_bn *out, bn_arena *ar,
                       qsv_bn_scratch *s) {
    if (m == 0 || m == n) {
        out->n = 0;
        return 0;
    }
    if (m == 1) {
        qsv_bn_set_u32(out, xs[0] - lo);
        return 0;
    }
    const uint32_t h = n / 2, nr = n - h, mid = lo + h;
    uint32_t a = 0, hi_a = m; /* a = number of xs below mid (binary search) */
    while (a < hi_a) {
        uint32_t c = a + (hi_a - a) / 2;
        if (xs[c] < mid) a = c + 1;
        else hi_a = c;
    }
    const uint32_t amin = m > nr ? m - nr : 0;
    qsv_bn buf[3]; /* term / product, C(nr, m-a), sub-rank */
    int rc = arena_take(ar, buf, 3);
    if (rc) return rc;
    out->n = 0;
    if (a > amin) {
        rc = first_term(&buf[0], h, nr, m, amin, s);
        for (uint32_t ap = amin; !rc && ap < a; ++ap) {
            rc = qsv_bn_add(out, &buf[0]);
            if (!rc && ap + 1 < a) rc = step_term(&buf[0], h, nr, m, ap);
        }
    }
    if (!rc) rc = binom_scratch(&buf[1], nr, m - a, s);
    if (!rc) rc = subset_rank(xs, a, lo, h, &buf[2], ar, s);
    if (!rc) rc = qsv_bn_mul(&buf[0], &buf[2], &buf[1]);
    if (!rc) rc = qsv_bn_add(out, &buf[0]);
    if (!rc) rc = subset_rank(xs + a, m - a, mid, nr, &buf[2], ar, s);
    if (!rc) rc = qsv_bn_add(out, &buf[2]);
    arena_give(ar, 3);
    return rc;
}

/* Inverse of subset_rank; r < C(n, m) is consumed. */
static int subset_unrank(qsv_bn *r, uint32_t m, uint32_t lo, uint32_t n, uint32_t *xs, bn_arena *ar,
                         qsv_bn_scratch *s) {
    if (m == 0) return r->n == 0 ? 0 : QSV_ERR_INTERNAL;
    if (m == n) {
        for (uint32_t i = 0; i < n; ++i) xs[i] = lo + i;
        return r->n == 0 ? 0 : QSV_ERR_INTERNAL;
    }
    if (m == 1) {
        if (r->n > 1 || (r->n == 1 && r->d[0] >= n)) return QSV_ERR_INTERNAL;
        xs[0] = lo + (r->n ? r->d[0] : 0u);
        return 0;
    }
    const uint32_t h = n / 2, nr = n - h, mid = lo + h;
    const uint32_t amin = m > nr ? m - nr : 0, amax = m < h ? m : h;
    qsv_bn buf[4]; /* term, C(nr, m-a), lower rank, upper rank */
    int rc = arena_take(ar, buf, 4);
    if (rc) return rc;
    uint32_t a = amin;
    rc = first_term(&buf[0], h, nr, m, amin, s);
    while (!rc && qsv_bn_cmp(r, &buf[0]) >= 0) {
        if (a >= amax) {
            rc = QSV_ERR_INTERNAL; /* r >= C(n, m) */
            break;
        }
        qsv_bn_sub(r, &buf[0]);
        rc = step_term(&buf[0], h, nr, m, a);
        ++a;
    }
    if (!rc) rc = binom_scratch(&buf[1], nr, m - a, s);
    if (!rc) rc = qsv_bn_divmod(&buf[2], &buf[3], r, &buf[1], s);
    if (!rc) rc = subset_unrank(&buf[2], a, lo, h, xs, ar, s);
    if (!rc) rc = subset_unrank(&buf[3], m - a, mid, nr, xs + a, ar, s);
    arena_give(ar, 4);
    return rc;
}

/* term = C(V, m) C(ell-1, m-1) -> the same for m + 1: * (V-m)/(m+1) * (ell-m)/m. */
static int next_term(qsv_bn *term, uint32_t vocab_size, uint32_t ell, uint32_t m) {
    return ratio2(term, vocab_size - m, ell - m, m + 1, m);
}

int qsv_enum_write(const qsv_codec_params *p, const uint32_t *indices, const uint32_t *counts, uint32_t nnz,
                   qsv_bitwriter *w, void *workspace, size_t workspace_bytes) {
    enum_ws e;
    int rc = ws_layout(p->bound_bits, p->vocab_size, p->ell, workspace, workspace_bytes, &e);
    if (rc) return rc;
    qsv_bn *idx = &e.bn[0], *term = &e.bn[1], *prod = &e.bn[2], *rank_s = &e.bn[3], *cl = &e.bn[4],
           *rank_c = &e.bn[5];
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
    if (!rc) rc = subset_rank(indices, m, 0, V, rank_s, &e.arena, &e.s);
    if (rc) return rc;
    uint32_t partial = 0;
    for (uint32_t k = 0; k + 1 < m; ++k) {
        partial += counts[k];
        e.xs[k] = partial - 1;
    }
    rc = subset_rank(e.xs, m - 1, 0, ell - 1, rank_c, &e.arena, &e.s);
    if (!rc) rc = qsv_bn_mul(prod, rank_s, cl);
    if (!rc) rc = qsv_bn_add(idx, prod);
    if (!rc) rc = qsv_bn_add(idx, rank_c);
    if (rc) return rc;
    const uint64_t bits = p->bound_bits;
    if (qsv_bn_bitlen(idx) > bits) return QSV_ERR_INTERNAL;
    /* MSB first: bit (bits-1) of the index down to bit 0, 32 bits per put */
    for (uint64_t pos = bits; pos > 0;) {
        unsigned take = pos % 32 ? (unsigned)(pos % 32) : 32u;
        pos -= take;
        size_t li = (size_t)(pos / QSV_LIMB_BITS);
        unsigned sh = (unsigned)(pos % QSV_LIMB_BITS); /* a multiple of 32 */
        uint32_t chunk = li < idx->n ? (uint32_t)(idx->d[li] >> sh) : 0u;
        qsv_bw_put(w, chunk, take);
    }
    return 0;
}

int qsv_enum_read(const qsv_codec_params *p, qsv_bitreader *rd, uint32_t *indices, uint32_t *counts,
                  uint32_t capacity, uint32_t *nnz_out, void *workspace, size_t workspace_bytes) {
    enum_ws e;
    int rc = ws_layout(p->bound_bits, p->vocab_size, p->ell, workspace, workspace_bytes, &e);
    if (rc) return rc;
    qsv_bn *r = &e.bn[0], *term = &e.bn[1], *rank_s = &e.bn[3], *cl = &e.bn[4], *rank_c = &e.bn[5];
    const uint32_t V = p->vocab_size, ell = p->ell;
    const uint64_t bits = p->bound_bits;
    size_t total = (size_t)((bits + QSV_LIMB_BITS - 1) / QSV_LIMB_BITS);
    if (total > r->cap) return QSV_ERR_INTERNAL;
    for (size_t i = 0; i < total; ++i) r->d[i] = 0;
    for (uint64_t pos = bits; pos > 0;) {
        unsigned take = pos % 32 ? (unsigned)(pos % 32) : 32u;
        pos -= take;
        uint32_t chunk;
        rc = qsv_br_get(rd, take, &chunk);
        if (rc) return rc;
        r->d[pos / QSV_LIMB_BITS] |= (qsv_limb)chunk << (pos % QSV_LIMB_BITS);
    }
    r->n = total;
    while (r->n > 0 && r->d[r->n - 1] == 0) --r->n;
    /* find the m-group */
    uint32_t m = 1;
    qsv_bn_set_u32(term, V);
    while (qsv_bn_cmp(r, term) >= 0) {
        if (m == p->max_nnz) return QSV_ERR_RANGE; /* index >= C(ell+V-1, V-1) */
        qsv_bn_sub(r, term);
        rc = next_term(term, V, ell, m);
        if (rc) return rc;
        ++m;
    }
    if (m > capacity) return QSV_ERR_CAPACITY;
    rc = binom_scratch(cl, ell - 1, m - 1, &e.s);
    if (!rc) rc = qsv_bn_divmod(rank_s, rank_c, r, cl, &e.s);
    if (!rc) rc = subset_unrank(rank_s, m, 0, V, indices, &e.arena, &e.s);
    if (!rc) rc = subset_unrank(rank_c, m - 1, 0, ell - 1, e.xs, &e.arena, &e.s);
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
