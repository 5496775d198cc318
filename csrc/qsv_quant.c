/* QSV core: lattice quantizer (fused softmax and probability paths) and Q-S sampler. See qsv_quant.h.
 *
 * Cost is O(V) with small constants: one pass for the maximum (with per-block maxima) and the minimum (which tells
 * whether the exp kernels need their clamp), one vectorized pass for the polynomial exp (stored to the workspace) and
 * its sum, then a candidate pass that skips every block whose maximum cannot reach the threshold. The lattice rule runs
 * on the candidates only: with V >> ell, everything with x_i < 0.5 rounds to 0, so the rounding and the d < 0 fix only
 * touch candidates, and the d > 0 fix needs the top-d residuals, taken by quickselect among candidates once the d-th
 * one provably beats every non-candidate (otherwise the threshold drops and the pass repeats). The first threshold,
 * x >= 1/16, sits below the d-th residual of typical distributions (measured on synthetic and real Qwen logits), so
 * one candidate pass is the rule; starting at 0.495 failed whenever d > 0, about half the time. The result is exactly
 * the rule applied to all V entries.
 * Kernels: SCALAR (the reference), VECTOR (GCC/clang vector extensions: SSE2, NEON) and AVX2 (x86-64, the fastest
 * there). Timed side by side with make -C csrc bench-kernels (BENCHMARKS.md, C core).
 */
#include "qsv_quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define QB 64u /* block length of the kernels */
#define QL 8u  /* float lanes */
#define QG 4u  /* blocks per float group sum of the exp pass (then summed in double): a horizontal sum per block cost
                * a fifth of the pass; float chains stay short (32 adds per lane + 7) for the 1e-5 tolerance */

/* Polynomial exp2f: 2^y = 2^n * (1 + f Q(f)), n = round(y), f = y - n (exact), Q quartic fitted for relative error
 * (max 1.9e-7 over [-125, 0] in float32 arithmetic); y < -125 is clamped. e^t is computed as 2^(t log2 e), with
 * log2 e folded into the temperature scale. */
#define QSV_EXP2_LO (-125.0f)
#define QSV_LOG2EF 1.44269504088896341f
#define QSV_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define QSV_Q0 1.3264727e-03f
#define QSV_Q1 9.671513e-03f
#define QSV_Q2 5.5507336e-02f
#define QSV_Q3 2.4022242e-01f
#define QSV_Q4 6.93147e-01f

#define THRESH_X 0.0625      /* first candidate threshold on x = ell q: the d > 0 fix rarely needs lower */
#define LOWER_FACTOR 0.0625  /* threshold drop when the d > 0 fix needs entries below it */
#define SKIP_MARGIN 1e-4     /* log-domain safety margin of the block skip (>> error of fexp2_s) */
#define PROB_SUM_TOL 1e-3

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The split of the exp2 polynomials: clamp, n = round(y) as exponent bits, f = y - n (exact). */
static inline float fexp2_split(float y, uint32_t *pw) {
    y = y > QSV_EXP2_LO ? y : QSV_EXP2_LO;
    float fy = y + QSV_MAGIC;
    *pw = f2u(fy) << 23;
    fy = fy - QSV_MAGIC;
    return y - fy;
}

/* Scalar twin of the vector exp2: same operations in the same order (the AVX2 kernel fuses the multiply-adds and
 * rounds with an instruction, which gives the same n). p(f) = 1 + Q4 f + Q3 f^2 + Q2 f^3 + Q1 f^4 + Q0 f^5 in Estrin
 * form: (1 + Q4 f) + f^2 ((Q3 + Q2 f) + f^2 (Q1 + Q0 f)).
 * y must not be NaN; y < -125 is clamped to -125 (2^-125 ~ 2.4e-38 instead of a smaller value). */
static inline float fexp2_s(float y) {
    uint32_t pw;
    const float f = fexp2_split(y, &pw);
    float a = QSV_Q4 * f;
    a = a + 1.0f;
    float b = QSV_Q2 * f;
    b = b + QSV_Q3;
    float c = QSV_Q0 * f;
    c = c + QSV_Q1;
    const float f2 = f * f;
    float p = c * f2;
    p = p + b;
    p = p * f2;
    p = p + a;
    return u2f(f2u(p) + pw);
}

/* t of a block's largest logit, computed like the elements' t (a monotone function of z). */
static inline float block_t(float zmax, float m, float inv_t) {
    float t = zmax - m;
    return t * inv_t;
}

/* Tail (n % QB values) of k_max; shared by all kernels. Returns 0 when a value is not finite. */
static int tail_max(const float *z, uint32_t n, uint32_t nb, float *bmax, float *m, float *zmin) {
    const uint32_t start = nb * QB;
    if (start == n) return 1;
    float mx = z[start];
    float mn = *zmin;
    float bad = 0.0f;
    for (uint32_t i = start; i < n; i++) {
        bad = bad + (z[i] - z[i]);
        mx = z[i] > mx ? z[i] : mx;
        mn = z[i] < mn ? z[i] : mn;
    }
    bmax[nb] = mx;
    *m = mx > *m ? mx : *m;
    *zmin = mn;
    return bad == 0.0f;
}

static double tail_exp(const float *z, uint32_t n, uint32_t nb, float m, float c2, float *e) {
    double s = 0.0;
    for (uint32_t i = nb * QB; i < n; i++) {
        float y = z[i] - m;
        y = y * c2;
        e[i] = fexp2_s(y);
        s += (double)e[i];
    }
    return s;
}

static uint32_t tail_collect(const float *e, uint32_t n, uint32_t nb, const float *bmax, float m, float inv_t,
                             float t_skip, float thr, double scale, uint32_t *cidx, double *cx, uint32_t k) {
    if (nb * QB == n || block_t(bmax[nb], m, inv_t) < t_skip) return k;
    for (uint32_t i = nb * QB; i < n; i++) {
        if (e[i] >= thr) {
            cidx[k] = i;
            cx[k] = (double)e[i] * scale;
            k++;
        }
    }
    return k;
}

/* bit j set when lane j of an integer mask vector is set (the portable twin of movemask) */
static inline unsigned vbits_(const void *mask) {
    int32_t l[QL];
    memcpy(l, mask, sizeof l);
    unsigned bits = 0;
    for (unsigned j = 0; j < QL; j++) bits |= (unsigned)(l[j] != 0) << j;
    return bits;
}

#if !(defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) /* VHMAX falls back to this (quant_kernels.h) */
static inline float vhmax_(const void *x) {
    float l[QL];
    memcpy(l, x, sizeof l);
    float h = l[0];
    for (unsigned j = 1; j < QL; j++) h = l[j] > h ? l[j] : h;
    return h;
}
#endif

/* ---- scalar kernels (portable C; the reference for the vector ones) ---- */

/* Lanes of a group's float sums added in order, then reset; the result goes into a double (all kernels use it). */
static inline double group_sum(float acc[QL]) {
    float gs = acc[0];
    for (unsigned j = 1; j < QL; j++) gs += acc[j];
    for (unsigned j = 0; j < QL; j++) acc[j] = 0.0f;
    return (double)gs;
}

static int s_k_max(const float *z, uint32_t n, float *bmax, float *out_m, float *out_min) {
    const uint32_t nb = n / QB;
    float m = -FLT_MAX;
    float zmin = FLT_MAX;
    float bad[QL] = {0};
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        float mx[QL];
        for (unsigned j = 0; j < QL; j++) {
            mx[j] = zb[j];
            bad[j] = bad[j] + (zb[j] - zb[j]);
        }
        for (unsigned v = 1; v < QB / QL; v++) {
            for (unsigned j = 0; j < QL; j++) {
                const float w = zb[v * QL + j];
                bad[j] = bad[j] + (w - w);
                mx[j] = w > mx[j] ? w : mx[j];
            }
        }
        for (unsigned i = 0; i < QB; i++) zmin = zb[i] < zmin ? zb[i] : zmin;
        float h = mx[0];
        for (unsigned j = 1; j < QL; j++) h = mx[j] > h ? mx[j] : h;
        bmax[b] = h;
        m = h > m ? h : m;
    }
    int finite = 1;
    for (unsigned j = 0; j < QL; j++) finite &= (bad[j] == 0.0f);
    finite &= tail_max(z, n, nb, bmax, &m, &zmin);
    *out_m = m;
    *out_min = zmin;
    return finite;
}

static double s_k_exp(const float *z, uint32_t n, float m, float c2, int clamp, float *e) {
    (void)clamp; /* fexp2_s always clamps; the result is the same where clamp = 0 is allowed */
    const uint32_t nb = n / QB;
    double s = 0.0;
    float acc[QL] = {0};
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        float *eb = e + (size_t)b * QB;
        for (unsigned v = 0; v < QB / QL; v++) {
            for (unsigned j = 0; j < QL; j++) {
                float y = zb[v * QL + j] - m;
                y = y * c2;
                const float ev = fexp2_s(y);
                eb[v * QL + j] = ev;
                acc[j] = acc[j] + ev;
            }
        }
        if ((b + 1) % QG == 0 || b + 1 == nb) s += group_sum(acc);
    }
    return s + tail_exp(z, n, nb, m, c2, e);
}

static uint32_t s_k_collect(const float *e, uint32_t n, const float *bmax, float m, float inv_t, float t_skip, float thr,
                            double scale, uint32_t *cidx, double *cx) {
    const uint32_t nb = n / QB;
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (block_t(bmax[b], m, inv_t) < t_skip) continue;
        for (uint32_t i = b * QB; i < (b + 1) * QB; i++) {
            if (e[i] >= thr) {
                cidx[k] = i;
                cx[k] = (double)e[i] * scale;
                k++;
            }
        }
    }
    return tail_collect(e, n, nb, bmax, m, inv_t, t_skip, thr, scale, cidx, cx, k);
}

static void s_k_fexp(const float *in, float *out, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) out[i] = fexp2_s(in[i] * QSV_LOG2EF);
}

/* ---- vector kernels ---- */

#if defined(__GNUC__) || defined(__clang__)
#define QSV_HAVE_VECTOR 1
typedef float qv_f __attribute__((vector_size(32)));
typedef int32_t qv_i __attribute__((vector_size(32)));
typedef uint32_t qv_u __attribute__((vector_size(32)));

#define KSUFFIX _vec
#define KATTR
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VMAXK(a, b) VMAX(a, b)
#define VBITSK(m) vbits_(&(m))
#define VSCALE(t, vm, vc, vmc, fold) (((t) - (vm)) * (vc)) /* as the scalar kernel */
/* n = round(x) by the 1.5 * 2^23 trick, as the scalar kernel: the low bits of x + MAGIC hold n */
#define VSPLITK(x, f, pw)                                                                                            \
    do {                                                                                                             \
        qv_f fy_ = (x) + VSPLAT(QSV_MAGIC);                                                                          \
        (pw) = (qv_u)fy_ << 23;                                                                                      \
        fy_ = fy_ - VSPLAT(QSV_MAGIC);                                                                               \
        (f) = (x) - fy_;                                                                                             \
    } while (0)
#include "quant_kernels.h"
#undef KSUFFIX
#undef KATTR
#undef VFMA
#undef VMAXK
#undef VBITSK
#undef VSCALE
#undef VSPLITK

#if defined(__x86_64__)
#define QSV_HAVE_AVX2 1
#define KSUFFIX _avx2
#define KATTR __attribute__((target("avx2,fma")))
#define VFMA(a, b, c) __builtin_ia32_vfmaddps256((a), (b), (c))
#define VMAXK(a, b) __builtin_ia32_maxps256((a), (b))
#define VMINK(a, b) __builtin_ia32_minps256((a), (b))
#define VBITSK(m) ((unsigned)__builtin_ia32_movmskps256((qv_f)(m)))
#define VUNORDK(a, b) ((qv_i)__builtin_ia32_cmpps256((a), (b), 3)) /* _CMP_UNORD_Q */
/* z c2 - m c2 in one rounding when |m c2| < 2^8: the rounding of m c2 (<= 2^-17) shifts every y alike, a common
 * factor of all e (within 6e-6 of 1) that cancels in x and stays far inside SKIP_MARGIN; larger |m c2| would shift
 * more (by more than 1 beyond 2^24), so those calls subtract first. */
#define VSCALE(t, vm, vc, vmc, fold) ((fold) ? VFMA((t), (vc), (vmc)) : ((t) - (vm)) * (vc))
/* n = round(x) (to nearest even, like the MAGIC trick) in one instruction and n << 23 from its integer conversion:
 * one rounding step fewer on the dependency chain than MAGIC's add, subtract. Same n, same bits. */
#define VSPLITK(x, f, pw)                                                                                            \
    do {                                                                                                             \
        const qv_f n_ = __builtin_ia32_roundps256((x), 0x08);                                                        \
        (pw) = (qv_u)__builtin_ia32_cvtps2dq256(n_) << 23;                                                           \
        (f) = (x) - n_;                                                                                              \
    } while (0)
#include "quant_kernels.h"
#undef KSUFFIX
#undef KATTR
#undef VFMA
#undef VMAXK
#undef VMINK
#undef VBITSK
#undef VUNORDK
#undef VSCALE
#undef VSPLITK
#endif
#endif

typedef int (*max_fn)(const float *, uint32_t, float *, float *, float *);
typedef double (*exp_fn)(const float *, uint32_t, float, float, int, float *);
typedef void (*fexp_fn)(const float *, float *, uint32_t);
typedef uint32_t (*collect_fn)(const float *, uint32_t, const float *, float, float, float, float, double, uint32_t *,
                               double *);

typedef struct {
    max_fn kmax;
    exp_fn kexp;
    fexp_fn kfexp;
    collect_fn kcollect;
} kernels_t;

int qsv_kernel_available(int kernel) {
    switch (kernel) {
    case QSV_KERNEL_AUTO:
    case QSV_KERNEL_SCALAR:
        return 1;
    case QSV_KERNEL_VECTOR:
#ifdef QSV_HAVE_VECTOR
        return 1;
#else
        return 0;
#endif
    case QSV_KERNEL_AVX2:
#ifdef QSV_HAVE_AVX2
        return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
        return 0;
#endif
    default:
        return 0;
    }
}

static int pick_kernels(int kernel, kernels_t *k) {
    if (kernel == QSV_KERNEL_AUTO) {
        kernel = qsv_kernel_available(QSV_KERNEL_AVX2)     ? QSV_KERNEL_AVX2
                 : qsv_kernel_available(QSV_KERNEL_VECTOR) ? QSV_KERNEL_VECTOR
                                                           : QSV_KERNEL_SCALAR;
    }
    if (!qsv_kernel_available(kernel)) return QSV_ERR_KERNEL;
    k->kmax = s_k_max;
    k->kexp = s_k_exp;
    k->kfexp = s_k_fexp;
    k->kcollect = s_k_collect;
#ifdef QSV_HAVE_VECTOR
    if (kernel == QSV_KERNEL_VECTOR) {
        k->kexp = k_exp_vec;
        k->kfexp = k_fexp_vec;
        k->kcollect = k_collect_vec;
    }
#endif
#ifdef QSV_HAVE_AVX2
    if (kernel == QSV_KERNEL_AVX2) {
        k->kmax = k_max_avx2;
        k->kexp = k_exp_avx2;
        k->kfexp = k_fexp_avx2;
        k->kcollect = k_collect_avx2;
    }
#endif
    return QSV_OK;
}

int qsv_fast_exp(const float *in, float *out, uint32_t n, int kernel) {
    if (!in || !out) return QSV_ERR_NULL;
    kernels_t k;
    const int rc = pick_kernels(kernel, &k);
    if (rc != QSV_OK) return rc;
    for (uint32_t i = 0; i < n; i++)
        if (isnan(in[i]) || in[i] > 0.0f) return QSV_ERR_NONFINITE; /* domain: [-inf, 0] */
    k.kfexp(in, out, n);
    return QSV_OK;
}

/* ---- workspace ---- */

typedef struct {
    void *bmax;      /* per-block maxima: nb floats or doubles */
    float *e;        /* V exp values */
    uint32_t *cidx;  /* candidate token ids, ascending */
    int32_t *cb;     /* candidate counts */
    double *cx;      /* candidate values (x = ell q, or e / z on the way) */
    double *tmp;     /* selection scratch */
} ws_t;

static size_t al64(size_t s) { return (s + 63u) & ~(size_t)63u; }

size_t qsv_quant_workspace_size(uint32_t vocab_size) {
    if (vocab_size == 0 || vocab_size > QSV_MAX_VOCAB) return 0;
    const size_t v = vocab_size;
    const size_t nb = (v + QB - 1) / QB;
    return 64 + al64(nb * sizeof(double)) + 3 * al64(v * 4) + 2 * al64(v * sizeof(double));
}

static int ws_init(ws_t *w, void *ws, size_t size, uint32_t v) {
    if (!ws || size < qsv_quant_workspace_size(v)) return QSV_ERR_WORKSPACE;
    const size_t nb = ((size_t)v + QB - 1) / QB;
    unsigned char *p = (unsigned char *)ws;
    p += (64u - ((uintptr_t)p & 63u)) & 63u;
    w->bmax = p;
    p += al64(nb * sizeof(double));
    w->e = (float *)(void *)p;
    p += al64((size_t)v * 4);
    w->cidx = (uint32_t *)(void *)p;
    p += al64((size_t)v * 4);
    w->cb = (int32_t *)(void *)p;
    p += al64((size_t)v * 4);
    w->cx = (double *)(void *)p;
    p += al64((size_t)v * sizeof(double));
    w->tmp = (double *)(void *)p;
    return QSV_OK;
}

/* ---- selection ---- */

static inline void dswap(double *a, size_t i, size_t j) {
    const double t = a[i];
    a[i] = a[j];
    a[j] = t;
}

static void heap_sort(double *a, size_t n) {
    if (n < 2) return;
    for (size_t start = n / 2; start-- > 0;) {
        size_t root = start;
        for (;;) {
            size_t child = 2 * root + 1;
            if (child >= n) break;
            if (child + 1 < n && a[child] < a[child + 1]) child++;
            if (!(a[root] < a[child])) break;
            dswap(a, root, child);
            root = child;
        }
    }
    for (size_t end = n - 1; end > 0; end--) {
        dswap(a, 0, end);
        size_t root = 0;
        for (;;) {
            size_t child = 2 * root + 1;
            if (child >= end) break;
            if (child + 1 < end && a[child] < a[child + 1]) child++;
            if (!(a[root] < a[child])) break;
            dswap(a, root, child);
            root = child;
        }
    }
}

static double median3(double a, double b, double c) {
    if (a < b) {
        if (b < c) return b;
        return a < c ? c : a;
    }
    if (a < c) return a;
    return b < c ? c : b;
}

static unsigned depth_budget(size_t n) {
    unsigned d = 16;
    while (n > 1) {
        n >>= 1;
        d += 2;
    }
    return d;
}

/* Branchless Lomuto partition of a[lo, hi): elements with less(x, p) first; returns the split point. */
#define PARTITION_BODY(COND)                                                                                         \
    do {                                                                                                             \
        for (size_t i_ = lo_; i_ < hi_; i_++) {                                                                      \
            const double x_ = a[i_];                                                                                 \
            const size_t take_ = (size_t)(COND);                                                                     \
            a[i_] = a[mid_];                                                                                         \
            a[mid_] = x_;                                                                                            \
            mid_ += take_;                                                                                           \
        }                                                                                                            \
    } while (0)

static size_t partition_less(double *a, size_t lo_, size_t hi_, double p) {
    size_t mid_ = lo_;
    PARTITION_BODY(x_ < p);
    return mid_;
}

static size_t partition_not_greater(double *a, size_t lo_, size_t hi_, double p) {
    size_t mid_ = lo_;
    PARTITION_BODY(x_ <= p);
    return mid_;
}

/* The k-th smallest (0-based) of a[0..n), reordering a. Quickselect with branchless partitions ([< p | == p | > p]),
 * heap sort past a depth budget (guaranteed O(n log n) worst case). */
static double kth_smallest(double *a, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    unsigned budget = depth_budget(n);
    while (hi - lo > 16) {
        if (budget-- == 0) {
            heap_sort(a + lo, hi - lo);
            return a[k];
        }
        const double p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        const size_t lt = partition_less(a, lo, hi, p);
        if (k < lt) {
            hi = lt;
            continue;
        }
        const size_t gt = partition_not_greater(a, lt, hi, p);
        if (k >= gt)
            lo = gt;
        else
            return p;
    }
    heap_sort(a + lo, hi - lo);
    return a[k];
}

/* Weighted selection over non-negative a[0..n): finds v with sum(a > v) < target <= sum(a >= v). Returns 0 and v,
 * or 1 when the whole sum stays below target. Reorders a. */
static int wselect_desc(double *a, size_t n, double target, double *v_out) {
    size_t lo = 0, hi = n;
    double acc = 0.0;
    unsigned budget = depth_budget(n);
    while (hi > lo) {
        if (budget-- == 0 || hi - lo <= 16) {
            heap_sort(a + lo, hi - lo); /* ascending: walk from the top */
            size_t i = hi;
            while (i > lo) {
                const double val = a[i - 1];
                double s_eq = 0.0;
                while (i > lo && a[i - 1] == val) s_eq += a[--i];
                if (acc + s_eq >= target) {
                    *v_out = val;
                    return 0;
                }
                acc += s_eq;
            }
            return 1;
        }
        const double p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        size_t lt = lo, i = lo, gt = hi; /* [lo,lt) > p, [lt,gt) == p, [gt,hi) < p */
        while (i < gt) {
            if (a[i] > p)
                dswap(a, lt++, i++);
            else if (a[i] < p)
                dswap(a, i, --gt);
            else
                i++;
        }
        double s_g = 0.0, s_e = 0.0;
        for (size_t j = lo; j < lt; j++) s_g += a[j];
        for (size_t j = lt; j < gt; j++) s_e += a[j];
        if (acc + s_g >= target) {
            hi = lt;
        } else if (acc + s_g + s_e >= target) {
            *v_out = p;
            return 0;
        } else {
            acc += s_g + s_e;
            lo = gt;
        }
    }
    return 1;
}

/* ---- the lattice rule on a candidate set ---- */

enum { FIX_MORE = 1 }; /* positive: outside the error space */

/* Applies the rule to candidates (cidx ascending, x in cx). When `outside` is set, the tokens not listed all have
 * x <= bound (< 0.5, so b = 0 there); FIX_MORE asks for more candidates when the d > 0 fix could reach them.
 * Counts go to cb. */
static int lattice_fix(const double *cx, uint32_t k, uint32_t ell, int outside, double bound, int32_t *cb,
                       double *tmp) {
    int64_t sum = 0;
    for (uint32_t j = 0; j < k; j++) {
        const double y = cx[j] + 0.5;
        cb[j] = (int32_t)y; /* y >= 0.5: truncation is floor */
        sum += cb[j];
    }
    const int64_t d = (int64_t)ell - sum;
    if (d == 0) return QSV_OK;
    if (d > 0) {
        const uint32_t need = (uint32_t)d;
        if (need > k) return outside ? FIX_MORE : QSV_ERR_PROBS;
        for (uint32_t j = 0; j < k; j++) tmp[j] = cx[j] - (double)cb[j];
        const double v = kth_smallest(tmp, k, k - need);
        if (outside && !(v > bound)) return FIX_MORE;
        uint32_t greater = 0;
        for (uint32_t j = 0; j < k; j++) greater += (cx[j] - (double)cb[j]) > v;
        uint32_t ties = need - greater;
        for (uint32_t j = 0; j < k; j++) {
            const double r = cx[j] - (double)cb[j];
            const uint32_t tie = (r == v) & (ties > 0);
            cb[j] += (int32_t)((r > v) | tie);
            ties -= tie;
        }
        return QSV_OK;
    }
    const uint32_t need = (uint32_t)(-d);
    uint32_t pos = 0;
    for (uint32_t j = 0; j < k; j++)
        if (cb[j] >= 1) tmp[pos++] = cx[j] - (double)cb[j];
    if (pos < need) return QSV_ERR_PROBS;
    const double v = kth_smallest(tmp, pos, need - 1);
    uint32_t smaller = 0;
    for (uint32_t j = 0; j < k; j++) smaller += cb[j] >= 1 && (cx[j] - (double)cb[j]) < v;
    uint32_t ties = need - smaller;
    for (uint32_t j = 0; j < k; j++) {
        const uint32_t pos_b = cb[j] >= 1;
        const double r = cx[j] - (double)cb[j];
        const uint32_t tie = pos_b & (r == v) & (ties > 0);
        cb[j] -= (int32_t)((pos_b & (r < v)) | tie);
        ties -= tie;
    }
    return QSV_OK;
}

static int emit(const uint32_t *cidx, const int32_t *cb, uint32_t k, uint32_t vocab, qsv_point *out,
                uint32_t *out_dense) {
    uint32_t *out_indices = out->indices, *out_counts = out->counts;
    const uint32_t capacity = out->capacity;
    uint32_t nnz = 0;
    if (out_dense) memset(out_dense, 0, (size_t)vocab * sizeof *out_dense);
    for (uint32_t j = 0; j < k; j++) {
        if (cb[j] <= 0) continue;
        if (nnz >= capacity) return QSV_ERR_CAPACITY; /* unreachable: nnz <= min(ell, V) */
        out_indices[nnz] = cidx[j];
        out_counts[nnz] = (uint32_t)cb[j];
        if (out_dense) out_dense[cidx[j]] = (uint32_t)cb[j];
        nnz++;
    }
    out->nnz = nnz;
    return QSV_OK;
}

/* ---- the fused logits path ---- */

enum { PREP_GREEDY = 0, PREP_DENSE = 1, PREP_SPARSE = 2 };

typedef struct {
    int mode;
    uint32_t argmax; /* greedy */
    uint32_t nk;     /* sparse: kept entries in cidx / cx (cx = x) */
    double scale;    /* dense: x_i = e_i * scale */
    float m, inv_t, c2; /* c2 = log2(e) / T: the scale of the exp2 kernels */
    int clamp;          /* 0 when every (z - m) c2 >= -124: the exp kernels may skip their clamp */
} prep_t;

static uint32_t first_argmax(const float *z, uint32_t v, const float *bmax, float m) {
    const uint32_t nb = (v + QB - 1) / QB;
    for (uint32_t b = 0; b < nb; b++) {
        if (bmax[b] != m) continue;
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        for (uint32_t i = b * QB; i < end; i++)
            if (z[i] == m) return i;
    }
    return 0; /* unreachable: m is one of the values */
}

/* Tokens with z >= thr (block skip on the z maxima) into cidx, z into cx. */
static uint32_t collect_z(const float *z, uint32_t v, const float *bmax, float thr, uint32_t *cidx, double *cx) {
    const uint32_t nb = (v + QB - 1) / QB;
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (bmax[b] < thr) continue;
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        for (uint32_t i = b * QB; i < end; i++) {
            if (z[i] >= thr) {
                cidx[k] = i;
                cx[k] = (double)z[i];
                k++;
            }
        }
    }
    return k;
}

/* The block bound of a candidate threshold on e: a block whose largest logit maps below it (t = (z - m) / T) has no
 * e >= thr (SKIP_MARGIN in the log domain covers the error of fexp2_s). Monotone in thr. */
static float coll_t(float thr) { return thr > 0.0f ? (float)(log((double)thr) - SKIP_MARGIN) : -INFINITY; }

/* Tokens with e >= thr into cidx, x = e * scale into cx; blocks below coll_t(thr) are skipped. */
static uint32_t collect_e(const kernels_t *kern, const float *e, uint32_t v, const float *bmax, float m, float inv_t,
                          float thr, double scale, uint32_t *cidx, double *cx) {
    return kern->kcollect(e, v, bmax, m, inv_t, coll_t(thr), thr, scale, cidx, cx);
}

/* Second candidate threshold of the dense path, when the d > 0 fix needs tokens below THRESH_X: aims at `want`
 * candidates (those found plus about 2 d), estimated from a strided sample of e. The caller checks sufficiency again
 * and keeps lowering the threshold while it falls short. */
static float sampled_threshold(const float *e, uint32_t v, uint64_t want, float current, double *tmp) {
    const float fallback = current * (float)LOWER_FACTOR;
    if (want * 4 > v) return fallback;
    const uint32_t n_s = v < 2048 ? v : 2048;
    const uint32_t stride = v / n_s;
    for (uint32_t j = 0; j < n_s; j++) tmp[j] = (double)e[(size_t)j * stride];
    uint64_t rank = (want + stride - 1) / stride; /* rank-th largest of the sample */
    rank += rank / 2 + 2;                         /* margin for the sampling error */
    if (rank >= n_s) return fallback;
    float est = (float)kth_smallest(tmp, n_s, n_s - rank);
    if (!(est > 0.0f)) est = FLT_MIN; /* e underflowed to 0: take every nonzero */
    return est < current ? est : fallback;
}

/* Keeps the shortest prefix (by e descending, index ascending) of the k entries in cidx/cx (cx = e) whose sum
 * reaches target; compacts in place, returns the new count. */
static uint32_t top_p_filter(uint32_t *cidx, double *cx, uint32_t k, double target, double *tmp) {
    memcpy(tmp, cx, (size_t)k * sizeof *tmp);
    double v;
    if (wselect_desc(tmp, k, target, &v) != 0) return k;
    double acc = 0.0;
    for (uint32_t j = 0; j < k; j++)
        if (cx[j] > v) acc += cx[j];
    uint32_t out = 0;
    for (uint32_t j = 0; j < k; j++) {
        int keep = cx[j] > v;
        if (!keep && cx[j] == v && acc < target) {
            keep = 1;
            acc += cx[j];
        }
        if (keep) {
            cidx[out] = cidx[j];
            cx[out] = cx[j];
            out++;
        }
    }
    return out;
}

/* Whether some t = (z - m) c2 of the row may fall below the exp kernels' range without their clamp (-125; one unit
 * of margin for the rounding of t). At T = 1 a row's logits span ~30, so the clamp is rarely needed. */
static int exp_needs_clamp(float zmin, float m, float c2) {
    return !(((double)zmin - (double)m) * (double)c2 >= -124.0);
}

static int check_logit_args(const float *logits, uint32_t v, const qsv_quant_params *params) {
    if (!logits || !params) return QSV_ERR_NULL;
    const uint32_t ell = params->ell;
    const double temperature = params->temperature, top_p = params->top_p;
    if (v == 0 || v > QSV_MAX_VOCAB) return QSV_ERR_VOCAB;
    if (ell == 0 || ell > QSV_MAX_ELL) return QSV_ERR_ELL;
    if (!(temperature == 0.0 || (temperature >= 1e-6 && temperature <= 1e6))) return QSV_ERR_TEMPERATURE;
    if (!(top_p > 0.0 && top_p <= 1.0)) return QSV_ERR_TOP_P;
    return QSV_OK;
}

static int prep_logits(const float *z, uint32_t v, const qsv_quant_params *params, const kernels_t *kern, ws_t *w,
                       prep_t *p) {
    const uint32_t ell = params->ell, top_k = params->top_k;
    const double temperature = params->temperature, top_p = params->top_p;
    float *bmax = (float *)w->bmax;
    float m, zmin;
    if (!kern->kmax(z, v, bmax, &m, &zmin)) return QSV_ERR_NONFINITE;
    p->m = m;
    if (temperature == 0.0 || v == 1) {
        p->mode = PREP_GREEDY;
        p->argmax = first_argmax(z, v, bmax, m);
        return QSV_OK;
    }
    const float inv_t = (float)(1.0 / temperature);
    const float c2 = (float)(1.4426950408889634 / temperature);
    p->inv_t = inv_t;
    p->c2 = c2;
    p->clamp = exp_needs_clamp(zmin, m, c2);
    const int use_k = top_k > 0 && top_k < v;
    const int use_p = top_p < 1.0;
    if (!use_k && !use_p) {
        const double s = kern->kexp(z, v, m, c2, p->clamp, w->e);
        p->mode = PREP_DENSE;
        p->scale = (double)ell / s;
        return QSV_OK;
    }
    uint32_t k;
    double total = 0.0; /* the mass top-p refers to: all V tokens, or the top-k survivors */
    if (use_k) {
        /* the top_k largest logits: collect z >= m - delta until there are enough, then select */
        float delta = 1.0f;
        for (;;) {
            float thr = m - delta;
            if (!(thr > -FLT_MAX) || delta > FLT_MAX / 16) thr = -FLT_MAX;
            k = collect_z(z, v, bmax, thr, w->cidx, w->cx);
            if (k >= top_k || thr == -FLT_MAX) break;
            delta *= 16.0f;
        }
        memcpy(w->tmp, w->cx, (size_t)k * sizeof *w->tmp);
        const double zk = kth_smallest(w->tmp, k, k - top_k);
        uint32_t greater = 0;
        for (uint32_t j = 0; j < k; j++) greater += w->cx[j] > zk;
        uint32_t ties = top_k - greater;
        uint32_t out = 0;
        for (uint32_t j = 0; j < k; j++) {
            int keep = w->cx[j] > zk;
            if (!keep && w->cx[j] == zk && ties > 0) {
                keep = 1;
                ties--;
            }
            if (keep) {
                float y = (float)w->cx[j] - m;
                y = y * c2;
                w->cidx[out] = w->cidx[j];
                w->cx[out] = (double)fexp2_s(y);
                out++;
            }
        }
        k = out;
        for (uint32_t j = 0; j < k; j++) total += w->cx[j];
    } else {
        /* top-p over all: candidates e >= thr until they hold at least top_p of the mass */
        const double s = kern->kexp(z, v, m, c2, p->clamp, w->e);
        total = s;
        const double target = top_p * s;
        float thr = 1.0f / 64.0f;
        for (;;) {
            k = collect_e(kern, w->e, v, bmax, m, inv_t, thr, 1.0, w->cidx, w->cx);
            double mass = 0.0;
            for (uint32_t j = 0; j < k; j++) mass += w->cx[j];
            if (mass >= target || thr == 0.0f) break;
            thr *= (float)LOWER_FACTOR;
            if (thr < FLT_MIN) thr = 0.0f;
        }
    }
    if (use_p) k = top_p_filter(w->cidx, w->cx, k, top_p * total, w->tmp);
    double s = 0.0;
    for (uint32_t j = 0; j < k; j++) s += w->cx[j];
    const double scale = (double)ell / s;
    for (uint32_t j = 0; j < k; j++) w->cx[j] = w->cx[j] * scale;
    p->mode = PREP_SPARSE;
    p->nk = k;
    return QSV_OK;
}

/* The dense path after the exp pass: candidates with x >= THRESH_X, then the lattice rule; while the d > 0 fix could
 * reach non-candidates, the threshold drops (sampled estimate, then 16x steps). The candidate count goes to *k_out. */
static int dense_fix(const kernels_t *kern, ws_t *w, prep_t *p, uint32_t v, uint32_t ell, uint32_t *k_out) {
    float thr = (float)(THRESH_X / p->scale);
    uint32_t k;
    int rc;
    for (int round = 0;; round++) {
        k = collect_e(kern, w->e, v, (const float *)w->bmax, p->m, p->inv_t, thr, p->scale, w->cidx, w->cx);
        rc = lattice_fix(w->cx, k, ell, thr > 0.0f, (double)thr * p->scale, w->cb, w->tmp);
        if (rc != FIX_MORE) break;
        if (round == 0) {
            int64_t sum = 0; /* cb holds the rounded counts: d = ell - sum */
            for (uint32_t j = 0; j < k; j++) sum += w->cb[j];
            thr = sampled_threshold(w->e, v, (uint64_t)k + 2u * (uint64_t)(ell - sum) + 32u, thr, w->tmp);
        } else {
            thr *= (float)LOWER_FACTOR;
        }
        if (thr < FLT_MIN) thr = 0.0f;
    }
    *k_out = k;
    return rc;
}

int qsv_quantize_logits(const float *logits, uint32_t vocab_size, const qsv_quant_params *params, qsv_workspace ws,
                        qsv_point *out, uint32_t *out_dense) {
    int rc = check_logit_args(logits, vocab_size, params);
    if (rc != QSV_OK) return rc;
    const uint32_t ell = params->ell;
    if (!out || !out->indices || !out->counts) return QSV_ERR_NULL;
    if (out->capacity < (ell < vocab_size ? ell : vocab_size)) return QSV_ERR_CAPACITY;
    kernels_t kern;
    if ((rc = pick_kernels(params->kernel, &kern)) != QSV_OK) return rc;
    ws_t w;
    if ((rc = ws_init(&w, ws.ptr, ws.size, vocab_size)) != QSV_OK) return rc;
    prep_t p;
    if ((rc = prep_logits(logits, vocab_size, params, &kern, &w, &p)) != QSV_OK) return rc;
    uint32_t k;
    if (p.mode == PREP_GREEDY) {
        w.cidx[0] = p.argmax;
        w.cb[0] = (int32_t)ell;
        k = 1;
    } else if (p.mode == PREP_SPARSE) {
        k = p.nk;
        rc = lattice_fix(w.cx, k, ell, 0, 0.0, w.cb, w.tmp);
        if (rc != QSV_OK) return QSV_ERR_PROBS; /* unreachable: a renormalized set always admits the fix */
    } else if ((rc = dense_fix(&kern, &w, &p, vocab_size, ell, &k)) != QSV_OK) {
        return rc;
    }
    return emit(w.cidx, w.cb, k, vocab_size, out, out_dense);
}

int qsv_logits_scaled(const float *logits, uint32_t vocab_size, const qsv_quant_params *params, qsv_workspace ws,
                      double *out_x) {
    int rc = check_logit_args(logits, vocab_size, params);
    if (rc != QSV_OK) return rc;
    const uint32_t ell = params->ell;
    if (!out_x) return QSV_ERR_NULL;
    kernels_t kern;
    if ((rc = pick_kernels(params->kernel, &kern)) != QSV_OK) return rc;
    ws_t w;
    if ((rc = ws_init(&w, ws.ptr, ws.size, vocab_size)) != QSV_OK) return rc;
    prep_t p;
    if ((rc = prep_logits(logits, vocab_size, params, &kern, &w, &p)) != QSV_OK) return rc;
    if (p.mode == PREP_DENSE) {
        /* the quantizer's x exactly: e of every token and its sum S (p.scale = ell / S) */
        for (uint32_t i = 0; i < vocab_size; i++) out_x[i] = (double)w.e[i] * p.scale;
        return QSV_OK;
    }
    for (uint32_t i = 0; i < vocab_size; i++) out_x[i] = 0.0;
    if (p.mode == PREP_GREEDY) {
        out_x[p.argmax] = (double)ell;
    } else {
        for (uint32_t j = 0; j < p.nk; j++) out_x[w.cidx[j]] = w.cx[j];
    }
    return QSV_OK;
}

/* ---- the probability paths ---- */

/* Validates probabilities (finite, >= 0, sum within PROB_SUM_TOL of 1) and writes per-block maxima. */
static int scan_probs_f64(const double *q, uint32_t v, double *bmax) {
    const uint32_t nb = (v + QB - 1) / QB;
    double sum = 0.0;
    int ok = 1;
    for (uint32_t b = 0; b < nb; b++) {
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        double mx = 0.0, bs = 0.0;
        for (uint32_t i = b * QB; i < end; i++) {
            const double x = q[i];
            ok &= (x >= 0.0) & (x <= DBL_MAX);
            mx = x > mx ? x : mx;
            bs += x;
        }
        bmax[b] = mx;
        sum += bs;
    }
    if (!ok) return isfinite(sum) ? QSV_ERR_PROBS : QSV_ERR_NONFINITE;
    return fabs(sum - 1.0) <= PROB_SUM_TOL ? QSV_OK : QSV_ERR_PROBS;
}

static int scan_probs_f32(const float *q, uint32_t v, float *bmax) {
    const uint32_t nb = (v + QB - 1) / QB;
    double sum = 0.0;
    int ok = 1;
    for (uint32_t b = 0; b < nb; b++) {
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        float mx = 0.0f;
        double bs = 0.0;
        for (uint32_t i = b * QB; i < end; i++) {
            const float x = q[i];
            ok &= (x >= 0.0f) & (x <= FLT_MAX);
            mx = x > mx ? x : mx;
            bs += (double)x;
        }
        bmax[b] = mx;
        sum += bs;
    }
    if (!ok) return isfinite(sum) ? QSV_ERR_PROBS : QSV_ERR_NONFINITE;
    return fabs(sum - 1.0) <= PROB_SUM_TOL ? QSV_OK : QSV_ERR_PROBS;
}

static uint32_t collect_q64(const double *q, uint32_t v, const double *bmax, double thr, double ell, uint32_t *cidx,
                            double *cx) {
    const uint32_t nb = (v + QB - 1) / QB;
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (bmax[b] < thr) continue;
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        for (uint32_t i = b * QB; i < end; i++) {
            if (q[i] >= thr) {
                cidx[k] = i;
                cx[k] = ell * q[i];
                k++;
            }
        }
    }
    return k;
}

static uint32_t collect_q32(const float *q, uint32_t v, const float *bmax, double thr, double ell, uint32_t *cidx,
                            double *cx) {
    const uint32_t nb = (v + QB - 1) / QB;
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if ((double)bmax[b] < thr) continue;
        const uint32_t end = (b + 1) * QB < v ? (b + 1) * QB : v;
        for (uint32_t i = b * QB; i < end; i++) {
            if ((double)q[i] >= thr) {
                cidx[k] = i;
                cx[k] = ell * (double)q[i];
                k++;
            }
        }
    }
    return k;
}

static int quantize_probs(const double *q64, const float *q32, uint32_t v, uint32_t ell, qsv_workspace ws,
                          qsv_point *out, uint32_t *out_dense) {
    if (!out || !out->indices || !out->counts) return QSV_ERR_NULL;
    if (v == 0 || v > QSV_MAX_VOCAB) return QSV_ERR_VOCAB;
    if (ell == 0 || ell > QSV_MAX_ELL) return QSV_ERR_ELL;
    if (out->capacity < (ell < v ? ell : v)) return QSV_ERR_CAPACITY;
    ws_t w;
    int rc = ws_init(&w, ws.ptr, ws.size, v);
    if (rc != QSV_OK) return rc;
    rc = q64 ? scan_probs_f64(q64, v, (double *)w.bmax) : scan_probs_f32(q32, v, (float *)w.bmax);
    if (rc != QSV_OK) return rc;
    const double l = (double)ell;
    double thr = THRESH_X / l;
    uint32_t k;
    for (;;) {
        k = q64 ? collect_q64(q64, v, (const double *)w.bmax, thr, l, w.cidx, w.cx)
                : collect_q32(q32, v, (const float *)w.bmax, thr, l, w.cidx, w.cx);
        rc = lattice_fix(w.cx, k, ell, thr > 0.0, l * thr, w.cb, w.tmp);
        if (rc != FIX_MORE) break;
        thr *= LOWER_FACTOR;
        if (thr < 1e-300) thr = 0.0;
    }
    if (rc != QSV_OK) return rc;
    return emit(w.cidx, w.cb, k, v, out, out_dense);
}

int qsv_quantize_probs_f64(const double *probs, uint32_t vocab_size, uint32_t ell, qsv_workspace ws, qsv_point *out,
                           uint32_t *out_dense) {
    if (!probs) return QSV_ERR_NULL;
    return quantize_probs(probs, NULL, vocab_size, ell, ws, out, out_dense);
}

int qsv_quantize_probs_f32(const float *probs, uint32_t vocab_size, uint32_t ell, qsv_workspace ws, qsv_point *out,
                           uint32_t *out_dense) {
    if (!probs) return QSV_ERR_NULL;
    return quantize_probs(NULL, probs, vocab_size, ell, ws, out, out_dense);
}

/* ---- sampling ---- */

int qsv_sample(const qsv_point *point, uint32_t ell, uint32_t u) {
    if (!point || !point->indices || !point->counts) return QSV_ERR_NULL;
    const uint32_t *indices = point->indices, *counts = point->counts, nnz = point->nnz;
    if (ell == 0 || ell > QSV_MAX_ELL) return QSV_ERR_ELL;
    if (nnz == 0 || u >= ell) return QSV_ERR_SAMPLE;
    uint64_t cum = 0;
    uint32_t token = 0;
    int found = 0;
    for (uint32_t j = 0; j < nnz; j++) {
        cum += counts[j];
        if (!found && u < cum) {
            token = indices[j];
            found = 1;
        }
    }
    if (!found || cum != ell) return QSV_ERR_SAMPLE;
    return (int)token; /* < QSV_MAX_VOCAB <= INT_MAX */
}
