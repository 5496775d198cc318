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
/* any lane of an integer mask set */
#define VANY(mask) vany_(&(mask), sizeof(mask))
#define VMAX(a, b) ((qv_f)(((qv_i)(a) & ((a) > (b))) | ((qv_i)(b) & ~((a) > (b)))))
/* x = fexp2_s(x) lane-wise (same operations in the same order; VFMA is a fused multiply-add only on AVX2) */
#define VEXP2(x)                                                                                                     \
    do {                                                                                                             \
        (x) = VMAXK((x), VSPLAT(QSV_EXP2_LO));                                                                       \
        qv_f fy_ = (x) + VSPLAT(QSV_MAGIC);                                                                          \
        const qv_u pw_ = (qv_u)fy_ << 23;                                                                            \
        fy_ = fy_ - VSPLAT(QSV_MAGIC);                                                                               \
        const qv_f f_ = (x) - fy_;                                                                                   \
        qv_f p_ = VFMA(VSPLAT(QSV_Q0), f_, VSPLAT(QSV_Q1));                                                          \
        p_ = VFMA(p_, f_, VSPLAT(QSV_Q2));                                                                           \
        p_ = VFMA(p_, f_, VSPLAT(QSV_Q3));                                                                           \
        p_ = VFMA(p_, f_, VSPLAT(QSV_Q4));                                                                           \
        p_ = VFMA(p_, f_, VSPLAT(1.0f));                                                                             \
        (x) = (qv_f)((qv_u)p_ + pw_);                                                                                \
    } while (0)

/* Maximum of z, per-block maxima (blocks of QB) into bmax; returns 0 when some value is not finite. */
static KATTR int KN(k_max)(const float *z, uint32_t n, float *bmax, float *out_m) {
    const uint32_t nb = n / QB;
    float m = -FLT_MAX;
    qv_f bad = VSPLAT(0.0f);
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        qv_f mx;
        VLD(mx, zb);
        bad = bad + (mx - mx);
        for (unsigned v = 1; v < QB / QL; v++) {
            qv_f w;
            VLD(w, zb + v * QL);
            bad = bad + (w - w);
            mx = VMAXK(w, mx);
        }
        float l[QL];
        memcpy(l, &mx, sizeof l);
        float h = l[0];
        for (unsigned j = 1; j < QL; j++) h = l[j] > h ? l[j] : h;
        bmax[b] = h;
        m = h > m ? h : m;
    }
    float lb[QL];
    memcpy(lb, &bad, sizeof lb);
    int finite = 1;
    for (unsigned j = 0; j < QL; j++) finite &= (lb[j] == 0.0f);
    finite &= tail_max(z, n, nb, bmax, &m);
    *out_m = m;
    return finite;
}

/* e_i = fexp((z_i - m) * inv_t) into e; returns the sum (8 float lanes per block, block sums in double). */
static KATTR double KN(k_exp)(const float *z, uint32_t n, float m, float inv_t, float c2, const float *bmax,
                                float t_skip, float *e) {
    const uint32_t nb = n / QB;
    const qv_f vm = VSPLAT(m);
    const qv_f vc = VSPLAT(c2);
    double s = 0.0;
    for (uint32_t b = 0; b < nb; b++) {
        const float *zb = z + (size_t)b * QB;
        float *eb = e + (size_t)b * QB;
        if (block_t(bmax[b], m, inv_t) < t_skip) {
            memset(eb, 0, QB * sizeof *eb);
            continue;
        }
        qv_f acc = VSPLAT(0.0f);
        for (unsigned v = 0; v < QB / QL; v++) {
            qv_f t;
            VLD(t, zb + v * QL);
            t = t - vm;
            t = t * vc;
            VEXP2(t);
            VST(eb + v * QL, t);
            acc = acc + t;
        }
        float l[QL];
        memcpy(l, &acc, sizeof l);
        float bs = l[0];
        for (unsigned j = 1; j < QL; j++) bs += l[j];
        s += (double)bs;
    }
    return s + tail_exp(z, n, nb, m, inv_t, c2, bmax, t_skip, e);
}

/* Tokens with e >= thr (e > 0 when thr = 0 is not required: thr = 0 takes all) into cidx, e * scale into cx;
 * blocks whose largest logit maps below t_skip are skipped. Returns the count. */
static KATTR uint32_t KN(k_collect)(const float *e, uint32_t n, const float *bmax, float m, float inv_t, float t_skip,
                                    float thr, double scale, uint32_t *cidx, double *cx) {
    const uint32_t nb = n / QB;
    const qv_f vt = VSPLAT(thr);
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (block_t(bmax[b], m, inv_t) < t_skip) continue;
        const float *eb = e + (size_t)b * QB;
        for (unsigned v = 0; v < QB / QL; v++) {
            qv_f x;
            VLD(x, eb + v * QL);
            const qv_i hit = x >= vt;
            if (!VANY(hit)) continue;
            for (unsigned j = 0; j < QL; j++) {
                if (eb[v * QL + j] >= thr) {
                    cidx[k] = b * QB + v * QL + j;
                    cx[k] = (double)eb[v * QL + j] * scale;
                    k++;
                }
            }
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
        VEXP2(x);
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
#undef VEXP2
