/*
 * Minimal unsigned bignums for the enumerative lattice-point index: 64-bit limbs (32-bit where the compiler has no
 * 128-bit integers), caller-owned storage, no allocation. Only what the codec needs: multiply/divide by one limb,
 * add/sub/compare, schoolbook multiply and Knuth's algorithm D for division.
 */
#include <string.h>

#include "qsv_codec_internal.h"

#define LB QSV_LIMB_BITS

static void bn_trim(qsv_bn *a) {
    while (a->n > 0 && a->d[a->n - 1] == 0) --a->n;
}

void qsv_bn_set_u32(qsv_bn *a, uint32_t v) {
    a->n = 0;
    if (v) {
        a->d[0] = v;
        a->n = 1;
    }
}

int qsv_bn_copy(qsv_bn *dst, const qsv_bn *src) {
    if (src->n > dst->cap) return QSV_ERR_INTERNAL;
    if (src->n) memmove(dst->d, src->d, src->n * sizeof(qsv_limb));
    dst->n = src->n;
    return 0;
}

int qsv_bn_cmp(const qsv_bn *a, const qsv_bn *b) {
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    for (size_t i = a->n; i-- > 0;) {
        if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
    }
    return 0;
}

int qsv_bn_mul_small(qsv_bn *a, qsv_limb f) {
    if (f == 0) {
        a->n = 0;
        return 0;
    }
    qsv_limb carry = 0;
    qsv_limb *d = a->d;
    for (size_t i = 0; i < a->n; ++i) {
        qsv_dlimb p = (qsv_dlimb)d[i] * f + carry;
        d[i] = (qsv_limb)p;
        carry = (qsv_limb)(p >> LB);
    }
    if (carry) {
        if (a->n >= a->cap) return QSV_ERR_INTERNAL;
        d[a->n++] = carry;
    }
    return 0;
}

/* Division of a double limb by a normalized limb with a precomputed reciprocal (Moeller & Granlund, "Improved
 * division by invariant integers", IEEE TC 2011, algorithm 4): two multiplications instead of a hardware (or, for
 * 128-bit, library) division. Requires u1 < d, d normalized (top bit set), v = reciprocal(d). */
static inline qsv_limb reciprocal(qsv_limb d) {
    /* floor((B^2 - 1) / d) - B = floor(((B - 1 - d) B + (B - 1)) / d), and B - 1 - d = ~d < d */
    return (qsv_limb)((((qsv_dlimb)(qsv_limb)~d) << LB | QSV_LIMB_MAX) / d);
}

static inline qsv_limb div2by1(qsv_limb u1, qsv_limb u0, qsv_limb d, qsv_limb v, qsv_limb *rem) {
    qsv_dlimb q = (qsv_dlimb)v * u1 + (((qsv_dlimb)u1 << LB) | u0);
    qsv_limb q1 = (qsv_limb)(q >> LB) + 1u;
    qsv_limb q0 = (qsv_limb)q;
    qsv_limb r = (qsv_limb)(u0 - q1 * d);
    if (r > q0) {
        --q1;
        r += d;
    }
    if (r >= d) {
        ++q1;
        r -= d;
    }
    *rem = r;
    return q1;
}

/* Division by one limb: the dividend is shifted on the fly so that the divisor is normalized. */
qsv_limb qsv_bn_div_small(qsv_bn *a, qsv_limb dv) {
    size_t n = a->n;
    if (n == 0) return 0;
    qsv_limb *x = a->d;
    const unsigned sh = LB - qsv_bitlen_limb(dv);
    const qsv_limb d = dv << sh;
    const qsv_limb v = reciprocal(d);
    qsv_limb r = sh ? x[n - 1] >> (LB - sh) : 0u;
    for (size_t i = n; i-- > 0;) {
        qsv_limb u0 = sh ? (qsv_limb)(x[i] << sh) | (i > 0 ? x[i - 1] >> (LB - sh) : 0u) : x[i];
        x[i] = div2by1(r, u0, d, v, &r);
    }
    bn_trim(a);
    return r >> sh;
}

int qsv_bn_add(qsv_bn *a, const qsv_bn *b) {
    size_t n = a->n > b->n ? a->n : b->n;
    if (n > a->cap) return QSV_ERR_INTERNAL;
    for (size_t i = a->n; i < n; ++i) a->d[i] = 0;
    qsv_limb carry = 0;
    size_t i = 0;
    for (; i < b->n; ++i) {
        qsv_limb ai = a->d[i], s = ai + b->d[i];
        qsv_limb c1 = s < ai;
        qsv_limb t = s + carry;
        carry = c1 | (t < s);
        a->d[i] = t;
    }
    for (; carry && i < n; ++i) {
        a->d[i] += 1u;
        carry = a->d[i] == 0;
    }
    a->n = n;
    if (carry) {
        if (a->n >= a->cap) return QSV_ERR_INTERNAL;
        a->d[a->n++] = 1;
    }
    return 0;
}

void qsv_bn_sub(qsv_bn *a, const qsv_bn *b) {
    qsv_limb borrow = 0;
    size_t i = 0;
    for (; i < b->n; ++i) {
        qsv_limb ai = a->d[i], bi = b->d[i];
        qsv_limb t = ai - bi;
        qsv_limb b1 = ai < bi;
        a->d[i] = t - borrow;
        borrow = b1 | (t < borrow);
    }
    for (; borrow && i < a->n; ++i) {
        qsv_limb ai = a->d[i];
        a->d[i] = ai - 1u;
        borrow = ai == 0;
    }
    bn_trim(a);
}

int qsv_bn_mul(qsv_bn *c, const qsv_bn *a, const qsv_bn *b) {
    if (a->n == 0 || b->n == 0) {
        c->n = 0;
        return 0;
    }
    size_t n = a->n + b->n;
    if (n > c->cap) return QSV_ERR_INTERNAL;
    memset(c->d, 0, n * sizeof(qsv_limb));
    for (size_t i = 0; i < a->n; ++i) {
        qsv_limb carry = 0;
        qsv_limb ai = a->d[i];
        qsv_limb *row = c->d + i;
        for (size_t j = 0; j < b->n; ++j) {
            qsv_dlimb p = (qsv_dlimb)ai * b->d[j] + row[j] + carry;
            row[j] = (qsv_limb)p;
            carry = (qsv_limb)(p >> LB);
        }
        row[b->n] = carry;
    }
    c->n = n;
    bn_trim(c);
    return 0;
}

int qsv_bn_divmod(qsv_bn *q, qsv_bn *r, const qsv_bn *u, const qsv_bn *v, qsv_bn_scratch *s) {
    size_t n = v->n, m = u->n;
    if (n == 0) return QSV_ERR_INTERNAL;
    if (m < n) {
        q->n = 0;
        return qsv_bn_copy(r, u);
    }
    if (n == 1) {
        int rc = qsv_bn_copy(q, u);
        if (rc) return rc;
        qsv_limb rem = qsv_bn_div_small(q, v->d[0]);
        r->n = 0;
        if (rem) {
            r->d[0] = rem;
            r->n = 1;
        }
        return 0;
    }
    if (m - n + 1 > q->cap || n > r->cap || m > s->cap || n > s->cap) return QSV_ERR_INTERNAL;
    qsv_limb *un = s->un, *vn = s->vn;
    unsigned sh = LB - qsv_bitlen_limb(v->d[n - 1]); /* 0 .. LB-1 */
    if (sh) {
        for (size_t i = n - 1; i > 0; --i) vn[i] = (qsv_limb)(v->d[i] << sh) | (v->d[i - 1] >> (LB - sh));
        vn[0] = (qsv_limb)(v->d[0] << sh);
        un[m] = u->d[m - 1] >> (LB - sh);
        for (size_t i = m - 1; i > 0; --i) un[i] = (qsv_limb)(u->d[i] << sh) | (u->d[i - 1] >> (LB - sh));
        un[0] = (qsv_limb)(u->d[0] << sh);
    } else {
        memcpy(vn, v->d, n * sizeof(qsv_limb));
        memcpy(un, u->d, m * sizeof(qsv_limb));
        un[m] = 0;
    }
    const qsv_dlimb base = (qsv_dlimb)1 << LB;
    const qsv_limb vtop = vn[n - 1], vnext = vn[n - 2];
    const qsv_limb vinv = reciprocal(vtop);
    for (size_t j = m - n + 1; j-- > 0;) {
        /* estimate qhat = (un[j+n] un[j+n-1]) / vtop; un[j+n] <= vtop always holds */
        qsv_dlimb qhat, rhat;
        if (un[j + n] >= vtop) {
            qhat = base - 1u;
            rhat = (qsv_dlimb)un[j + n - 1] + vtop; /* = num - (B-1) vtop, as un[j+n] == vtop */
        } else {
            qsv_limb r0;
            qhat = div2by1(un[j + n], un[j + n - 1], vtop, vinv, &r0);
            rhat = r0;
        }
        while (rhat < base && qhat * vnext > ((rhat << LB) | un[j + n - 2])) {
            --qhat;
            rhat += vtop;
        }
        qsv_limb carry = 0, borrow = 0;
        for (size_t i = 0; i < n; ++i) {
            qsv_dlimb p = qhat * vn[i] + carry;
            carry = (qsv_limb)(p >> LB);
            qsv_limb lo = (qsv_limb)p;
            qsv_limb ui = un[i + j];
            qsv_limb t = ui - lo;
            qsv_limb b1 = ui < lo;
            un[i + j] = t - borrow;
            borrow = b1 | (t < borrow);
        }
        qsv_limb top = un[j + n];
        qsv_limb t = top - carry;
        qsv_limb negative = (top < carry) | (t < borrow);
        un[j + n] = t - borrow;
        if (negative) { /* qhat was one too large: add the divisor back */
            --qhat;
            qsv_limb c = 0;
            for (size_t i = 0; i < n; ++i) {
                qsv_limb ui = un[i + j], s1 = ui + vn[i];
                qsv_limb c1 = s1 < ui;
                qsv_limb s2 = s1 + c;
                c = c1 | (s2 < s1);
                un[i + j] = s2;
            }
            un[j + n] += c;
        }
        q->d[j] = (qsv_limb)qhat;
    }
    q->n = m - n + 1;
    bn_trim(q);
    if (sh) {
        for (size_t i = 0; i < n - 1; ++i) r->d[i] = (un[i] >> sh) | (qsv_limb)(un[i + 1] << (LB - sh));
        r->d[n - 1] = un[n - 1] >> sh;
    } else {
        memcpy(r->d, un, n * sizeof(qsv_limb));
    }
    r->n = n;
    bn_trim(r);
    return 0;
}

uint64_t qsv_bn_bitlen(const qsv_bn *a) {
    if (a->n == 0) return 0;
    return (uint64_t)(a->n - 1) * LB + qsv_bitlen_limb(a->d[a->n - 1]);
}

/* Multiply a by the product of `count` consecutive factors (< 2^25) starting at `first`, combining factors while
 * the product fits in one limb. */
static int bn_mul_run(qsv_bn *a, uint32_t first, uint32_t count) {
    qsv_limb acc = 1;
    for (uint32_t t = 0; t < count; ++t) {
        qsv_limb f = (qsv_limb)first + t;
        if ((qsv_dlimb)acc * f > QSV_LIMB_MAX) {
            int rc = qsv_bn_mul_small(a, acc);
            if (rc) return rc;
            acc = 1;
        }
        acc *= f;
    }
    return acc == 1 ? 0 : qsv_bn_mul_small(a, acc);
}

int qsv_bn_ratio(qsv_bn *a, uint32_t num, uint32_t den, uint32_t c, qsv_bn_scratch *s) {
    while (c > 0 && a->n > 0) {
        uint32_t k = c < QSV_RATIO_CHUNK ? c : QSV_RATIO_CHUNK;
        int rc;
        qsv_bn_set_u32(&s->num, 1);
        qsv_bn_set_u32(&s->den, 1);
        if ((rc = bn_mul_run(&s->num, num, k)) != 0 || (rc = bn_mul_run(&s->den, den, k)) != 0) return rc;
        if (s->den.n == 0) return QSV_ERR_INTERNAL; /* a zero denominator */
        if (s->num.n <= 1) {
            rc = qsv_bn_mul_small(a, s->num.n ? s->num.d[0] : 0u);
        } else {
            rc = qsv_bn_mul(&s->prod, a, &s->num);
            if (!rc) rc = qsv_bn_copy(a, &s->prod); /* copies, never swaps: callers keep their storage */
        }
        if (rc) return rc;
        if (s->den.n == 1) {
            if (qsv_bn_div_small(a, s->den.d[0]) != 0) return QSV_ERR_INTERNAL;
        } else {
            rc = qsv_bn_divmod(&s->quo, &s->rem, a, &s->den, s);
            if (rc) return rc;
            if (s->rem.n != 0) return QSV_ERR_INTERNAL;
            rc = qsv_bn_copy(a, &s->quo);
            if (rc) return rc;
        }
        num += k;
        den += k;
        c -= k;
    }
    return 0;
}
