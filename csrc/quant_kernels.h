/* Vector kernels of the fused softmax, instantiated once per target by qsv_quant.c (not a public header).
 *
 * Before including: KSUFFIX (name suffix) and KATTR (function attributes, e.g. a target ISA). The code uses
 * GCC/clang vector extensions with 8 float lanes: one source for SSE2, AVX2 and NEON. Every operation, its order
 * and the lane structure of the sums match the scalar kernels in qsv_quant.c exactly (no FMA contraction), so all
 * kernels produce bit-identical results.
 */

#define KCAT2(a, b) a##b
#define KCAT(a, b) KCAT2(a, b)
#define KN(name) KCAT(name, KSUFFIX)

/* Helpers are macros, not functions: no vector travels through a call, so no ABI depends on the target. */
#define VLD(v, p) memcpy(&(v), (p), sizeof(v))
#define VST(p, v) memcpy((p), &(v), sizeof(v))
#define VSPLAT(c) ((qv_f){(c), (c), (c), (c), (c), (c), (c), (c)})
/* a > b ? a : b per lane */
#define VMAX(a, b) ((qv_f)(((qv_i)(a) & ((a) > (b))) | ((qv_i)(b) & ~((a) > (b)))))
/* largest lane of a vector without NaN (exact: any order gives the same value) */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define VHMAX(x)                                                                                                     \
    __extension__({                                                                                                  \
        qv_f h1_ = VMAXK((x), __builtin_shufflevector((x), (x), 4, 5, 6, 7, 0, 1, 2, 3));                            \
        qv_f h2_ = VMAXK(h1_, __builtin_shufflevector(h1_, h1_, 2, 3, 0, 1, 6, 7, 4, 5));                            \
        qv_f h3_ = VMAXK(h2_, __builtin_shufflevector(h2_, h2_, 1, 0, 3, 2, 5, 4, 7, 6));                            \
        h3_[0];                                                                                                      \
    })
#else
#define VHMAX(x) vhmax_(&(x))
#endif
/* clamp (when asked), then n = round(x) as exponent bits pw_ and f_ = x - n: the split of every exp2 below */
#define VEXP2_SPLIT(x, clamp, f_, pw_)                                                                               \
    do {                                                                                                             \
        if (clamp) (x) = VMAXK((x), VSPLAT(QSV_EXP2_LO));                                                            \
        VSPLITK((x), f_, pw_);                                                                                       \
    } while (0)
/* x = fexp2_s(x) lane-wise (same operations in the same order; VFMA is a fused multiply-add only on AVX2), for
 * x >= -125 when `clamp` is 0 (the caller knows the row's minimum), any x otherwise. VSPLITK
 * gives n = round(x) as the exponent bits n << 23 and f = x - n (exact); the polynomial is evaluated in Estrin form
 * (a shorter dependency chain per vector than Horner's: ~3 % off the exp pass, interleaved A/B on AVX2). */
#define VEXP2(x, clamp)                                                                                              \
    do {                                                                                                             \
        qv_u pw_;                                                                                                    \
        qv_f f_;                                                                                                     \
        VEXP2_SPLIT(x, clamp, f_, pw_);                                                                              \
        const qv_f a_ = VFMA(VSPLAT(QSV_Q4), f_, VSPLAT(1.0f));                                                      \
        const qv_f b_ = VFMA(VSPLAT(QSV_Q2), f_, VSPLAT(QSV_Q3));                                                    \
        const qv_f c_ = VFMA(VSPLAT(QSV_Q0), f_, VSPLAT(QSV_Q1));                                                    \
        const qv_f f2_ = f_ * f_;                                                                                    \
        const qv_f p_ = VFMA(VFMA(c_, f2_, b_), f2_, a_);                                                            \
        (x) = (qv_f)((qv_u)p_ + pw_);                                                                                \
    } while (0)

/* Only where the target has native max / min / unordered compares (VUNORDK defined: AVX2). The portable vector
 * build takes the scalar k_max: its compare-and-select lanes compile to per-lane scalar code on 128-bit SSE2 and NEON
 * (2.1x slower than the scalar loop on x86-64 SSE2; BENCHMARKS.md). */
#ifdef VUNORDK
/* Maximum and minimum of z, per-block maxima (blocks of QB) into bmax; returns 0 when some value is not finite. The
 * block's eight vectors are reduced as trees (max, min and the NaN detector: unordered compares of vector pairs), so
 * no long dependency chain runs through the pass; +inf and -inf show in the maximum and the minimum. Maxima and
 * minima are exact, so the reduction order does not change any result. */
static KATTR int KN(k_max)(const float *z, uint32_t n, float *bmax, float *out_m, float *out_min) {
    const uint32_t nb = n / QB;
    float m = -FLT_MAX;
    qv_i bad = {0};
    qv_f lo = VSPLAT(FLT_MAX);
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        qv_f w0, w1, w2, w3, w4, w5, w6, w7; /* named, not an array: an array goes through the stack */
        VLD(w0, zb);
        VLD(w1, zb + QL);
        VLD(w2, zb + 2 * QL);
        VLD(w3, zb + 3 * QL);
        VLD(w4, zb + 4 * QL);
        VLD(w5, zb + 5 * QL);
        VLD(w6, zb + 6 * QL);
        VLD(w7, zb + 7 * QL);
        const qv_f mx = VMAXK(VMAXK(VMAXK(w0, w1), VMAXK(w2, w3)), VMAXK(VMAXK(w4, w5), VMAXK(w6, w7)));
        const qv_f mn = VMINK(VMINK(VMINK(w0, w1), VMINK(w2, w3)), VMINK(VMINK(w4, w5), VMINK(w6, w7)));
        bad = bad | ((VUNORDK(w0, w1) | VUNORDK(w2, w3)) | (VUNORDK(w4, w5) | VUNORDK(w6, w7)));
        lo = VMINK(lo, mn);
        const float h = VHMAX(mx);
        bmax[b] = h;
        m = h > m ? h : m;
    }
    int32_t lb[QL];
    float ll[QL];
    memcpy(lb, &bad, sizeof lb);
    memcpy(ll, &lo, sizeof ll);
    int finite = 1;
    float zmin = FLT_MAX;
    for (unsigned j = 0; j < QL; j++) {
        finite &= (lb[j] == 0);
        zmin = ll[j] < zmin ? ll[j] : zmin;
    }
    finite &= tail_max(z, n, nb, bmax, &m, &zmin);
    finite &= m < INFINITY && zmin > -INFINITY;
    *out_m = m;
    *out_min = zmin;
    return finite;
}
#endif

/* The blocks of k_exp; `fold` and `clamp` are constants at each call, so each caller gets its own loop. */
static KATTR inline __attribute__((always_inline)) double KN(exp_blocks)(const float *z, uint32_t nb, float m, float c2,
                                                                          float *e, const int fold, const int clamp) {
    const qv_f vm = VSPLAT(m);
    const qv_f vc = VSPLAT(c2);
    const qv_f vmc = VSPLAT(-(m * c2)); /* used by VSCALE on FMA targets only */
    (void)vm;
    (void)vmc;
    (void)fold;
    double s = 0.0;
    qv_f acc = VSPLAT(0.0f); /* lane sums over a group of QG blocks, then added to s in double */
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        float *eb = e + (size_t)b * QB;
        for (unsigned v = 0; v < QB / QL; v++) {
            qv_f t;
            VLD(t, zb + v * QL);
            t = VSCALE(t, vm, vc, vmc, fold);
            VEXP2(t, clamp);
            VST(eb + v * QL, t);
            acc = acc + t;
        }
        if ((b + 1) % QG == 0 || b + 1 == nb) {
            float l[QL];
            memcpy(l, &acc, sizeof l);
            s += group_sum(l);
            acc = VSPLAT(0.0f);
        }
    }
    return s;
}

/* e_i = fexp((z_i - m) c2) into e; returns the sum (8 float lanes over QG blocks, group sums in double). clamp = 0
 * promises (z - m) c2 >= -124 for every z (no clamp needed). */
static KATTR double KN(k_exp)(const float *z, uint32_t n, float m, float c2, int clamp, float *e) {
    const uint32_t nb = n / QB;
    const int fold = fabsf(m * c2) < 256.0f;
    double s;
    if (fold)
        s = clamp ? KN(exp_blocks)(z, nb, m, c2, e, 1, 1) : KN(exp_blocks)(z, nb, m, c2, e, 1, 0);
    else
        s = clamp ? KN(exp_blocks)(z, nb, m, c2, e, 0, 1) : KN(exp_blocks)(z, nb, m, c2, e, 0, 0);
    return s + tail_exp(z, n, nb, m, c2, e);
}

/* Tokens with e >= thr (thr = 0 takes all) into cidx, e * scale into cx; blocks whose largest logit maps below t_skip
 * are skipped. A block's hits become a 64-bit mask (one compare per 8 lanes), then one step per hit. Returns the
 * count. */
static KATTR uint32_t KN(k_collect)(const float *e, uint32_t n, const float *bmax, float m, float inv_t, float t_skip,
                                    float thr, double scale, uint32_t *cidx, double *cx) {
    const uint32_t nb = n / QB;
    const qv_f vt = VSPLAT(thr);
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (block_t(bmax[b], m, inv_t) < t_skip) continue;
        const float *eb = e + (size_t)b * QB;
        uint64_t bits = 0;
        for (unsigned v = 0; v < QB / QL; v++) {
            qv_f x;
            VLD(x, eb + v * QL);
            const qv_i hit = x >= vt;
            bits |= (uint64_t)VBITSK(hit) << (v * QL);
        }
        while (bits) {
            const unsigned j = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            cidx[k] = b * QB + j;
            cx[k] = (double)eb[j] * scale;
            k++;
        }
    }
    return tail_collect(e, n, nb, bmax, m, inv_t, t_skip, thr, scale, cidx, cx, k);
}

static KATTR void KN(k_fexp)(const float *in, float *out, uint32_t n) {
    uint32_t i = 0;
    for (; i + QL <= n; i += QL) {
        qv_f x;
        VLD(x, in + i);
        x = x * VSPLAT(QSV_LOG2EF);
        VEXP2(x, 1);
        VST(out + i, x);
    }
    for (; i < n; i++) out[i] = fexp2_s(in[i] * QSV_LOG2EF);
}

#undef KN
#undef KCAT
#undef KCAT2
#undef VLD
#undef VST
#undef VSPLAT
#undef VMAX
#undef VHMAX
#undef VEXP2
#undef VEXP2_SPLIT
