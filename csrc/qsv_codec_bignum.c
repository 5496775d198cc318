/*
 * Minimal unsigned bignums for the enumerative lattice-point index: 32-bit limbs, caller-owned storage, no
 * allocation. Only what the codec needs: small-factor multiply/divide, add/sub/compare, schoolbook multiply and
 * Knuth's algorithm D for division.
 */
#include <math.h>
#include <string.h>

#include "qsv_codec_internal.h"

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
    if (src->n > dst->cap) return QSV_CODEC_E_INTERNAL;
    if (src->n) memmove(dst->d, src->d, src->n * sizeof(uint32_t));
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

int qsv_bn_mul_small(qsv_bn *a, uint32_t f) {
    if (f == 0) {
        a->n = 0;
        return 0;
    }
    uint64_t carry = 0;
    uint32_t *d = a->d;
    for (size_t i = 0; i < a->n; ++i) {
        uint64_t p = (uint64_t)d[i] * f + carry;
        d[i] = (uint32_t)p;
        carry = p >> 32;
    }
    if (carry) {
        if (a->n >= a->cap) return QSV_CODEC_E_INTERNAL;
        d[a->n++] = (uint32_t)carry;
    }
    return 0;
}

/* Division by a 32-bit d with a precomputed reciprocal (Moeller & Granlund, "Improved division by invariant
 * integers", IEEE TC 2011, algorithm 4): two multiplications per limb instead of a hardware division. The dividend
 * is shifted on the fly so that the divisor is normalized (top bit set). */
uint32_t qsv_bn_div_small(qsv_bn *a, uint32_t dv) {
    size_t n = a->n;
    if (n == 0) return 0;
    uint32_t *x = a->d;
    const unsigned sh = 32u - qsv_bitlen32(dv);
    const uint32_t d = dv << sh;
    const uint32_t v = (uint32_t)(0xFFFFFFFFFFFFFFFFull / d - 0x100000000ull);
    uint32_t r = sh ? x[n - 1] >> (32u - sh) : 0u;
    for (size_t i = n; i-- > 0;) {
        uint32_t u0 = sh ? (x[i] << sh) | (i > 0 ? x[i - 1] >> (32u - sh) : 0u) : x[i];
        uint64_t q = (uint64_t)v * r + (((uint64_t)r << 32) | u0);
        uint32_t q1 = (uint32_t)(q >> 32) + 1u;
        uint32_t q0 = (uint32_t)q;
        uint32_t rr = u0 - q1 * d;
        if (rr > q0) {
            --q1;
            rr += d;
        }
        if (rr >= d) {
            ++q1;
            rr -= d;
        }
        x[i] = q1;
        r = rr;
    }
    bn_trim(a);
    return r >> sh;
}

int qsv_bn_add(qsv_bn *a, const qsv_bn *b) {
    size_t n = a->n > b->n ? a->n : b->n;
    if (n > a->cap) return QSV_CODEC_E_INTERNAL;
    for (size_t i = a->n; i < n; ++i) a->d[i] = 0;
    uint64_t carry = 0;
    size_t i = 0;
    for (; i < b->n; ++i) {
        uint64_t s = (uint64_t)a->d[i] + b->d[i] + carry;
        a->d[i] = (uint32_t)s;
        carry = s >> 32;
    }
    for (; carry && i < n; ++i) {
        uint64_t s = (uint64_t)a->d[i] + carry;
        a->d[i] = (uint32_t)s;
        carry = s >> 32;
    }
    a->n = n;
    if (carry) {
        if (a->n >= a->cap) return QSV_CODEC_E_INTERNAL;
        a->d[a->n++] = 1;
    }
    return 0;
}

void qsv_bn_sub(qsv_bn *a, const qsv_bn *b) {
    uint32_t borrow = 0;
    size_t i = 0;
    for (; i < b->n; ++i) {
        uint64_t sub = (uint64_t)b->d[i] + borrow;
        uint32_t ai = a->d[i];
        a->d[i] = (uint32_t)(ai - sub);
        borrow = (uint64_t)ai < sub;
    }
    for (; borrow && i < a->n; ++i) {
        uint32_t ai = a->d[i];
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
    if (n > c->cap) return QSV_CODEC_E_INTERNAL;
    memset(c->d, 0, n * sizeof(uint32_t));
    for (size_t i = 0; i < a->n; ++i) {
        uint64_t carry = 0;
        uint64_t ai = a->d[i];
        uint32_t *row = c->d + i;
        for (size_t j = 0; j < b->n; ++j) {
            uint64_t p = ai * b->d[j] + row[j] + carry;
            row[j] = (uint32_t)p;
            carry = p >> 32;
        }
        row[b->n] = (uint32_t)carry;
    }
    c->n = n;
    bn_trim(c);
    return 0;
}

int qsv_bn_divmod(qsv_bn *q, qsv_bn *r, const qsv_bn *u, const qsv_bn *v, qsv_bn_scratch *s) {
    size_t n = v->n, m = u->n;
    if (n == 0) return QSV_CODEC_E_INTERNAL;
    if (m < n) {
        q->n = 0;
        return qsv_bn_copy(r, u);
    }
    if (n == 1) {
        int rc = qsv_bn_copy(q, u);
        if (rc) return rc;
        qsv_bn_set_u32(r, qsv_bn_div_small(q, v->d[0]));
        return 0;
    }
    if (m - n + 1 > q->cap || n > r->cap || m > s->cap || n > s->cap) return QSV_CODEC_E_INTERNAL;
    uint32_t *un = s->un, *vn = s->vn;
    unsigned sh = 32u - qsv_bitlen32(v->d[n - 1]); /* 0..31 */
    if (sh) {
        for (size_t i = n - 1; i > 0; --i) vn[i] = (v->d[i] << sh) | (v->d[i - 1] >> (32 - sh));
        vn[0] = v->d[0] << sh;
        un[m] = u->d[m - 1] >> (32 - sh);
        for (size_t i = m - 1; i > 0; --i) un[i] = (u->d[i] << sh) | (u->d[i - 1] >> (32 - sh));
        un[0] = u->d[0] << sh;
    } else {
        memcpy(vn, v->d, n * sizeof(uint32_t));
        memcpy(un, u->d, m * sizeof(uint32_t));
        un[m] = 0;
    }
    const uint64_t base = 1ull << 32;
    const uint64_t vtop = vn[n - 1], vnext = vn[n - 2];
    for (size_t j = m - n + 1; j-- > 0;) {
        uint64_t num = ((uint64_t)un[j + n] << 32) | un[j + n - 1];
        uint64_t qhat = num / vtop, rhat = num % vtop;
        while (qhat >= base || qhat * vnext > ((rhat << 32) | un[j + n - 2])) {
            --qhat;
            rhat += vtop;
            if (rhat >= base) break;
        }
        uint64_t carry = 0, borrow = 0;
        for (size_t i = 0; i < n; ++i) {
            uint64_t p = qhat * vn[i] + carry;
            carry = p >> 32;
            uint64_t sub = (uint64_t)(uint32_t)p + borrow;
            uint32_t ui = un[i + j];
            un[i + j] = (uint32_t)(ui - sub);
            borrow = (uint64_t)ui < sub;
        }
        uint64_t sub = carry + borrow;
        uint32_t top = un[j + n];
        un[j + n] = (uint32_t)(top - sub);
        if ((uint64_t)top < sub) { /* qhat was one too large: add the divisor back */
            --qhat;
            uint64_t c = 0;
            for (size_t i = 0; i < n; ++i) {
                uint64_t t = (uint64_t)un[i + j] + vn[i] + c;
                un[i + j] = (uint32_t)t;
                c = t >> 32;
            }
            un[j + n] = (uint32_t)(un[j + n] + c);
        }
        q->d[j] = (uint32_t)qhat;
    }
    q->n = m - n + 1;
    bn_trim(q);
    if (sh) {
        for (size_t i = 0; i < n - 1; ++i) r->d[i] = (un[i] >> sh) | (un[i + 1] << (32 - sh));
        r->d[n - 1] = un[n - 1] >> sh;
    } else {
        memcpy(r->d, un, n * sizeof(uint32_t));
    }
    r->n = n;
    bn_trim(r);
    return 0;
}

uint64_t qsv_bn_bitlen(const qsv_bn *a) {
    if (a->n == 0) return 0;
    return (uint64_t)(a->n - 1) * 32u + qsv_bitlen32(a->d[a->n - 1]);
}

double qsv_bn_ln(const qsv_bn *a) {
    if (a->n == 0) return -HUGE_VAL;
    double top = 0.0;
    size_t take = a->n < 3 ? a->n : 3;
    for (size_t i = 0; i < take; ++i) top = top * 4294967296.0 + (double)a->d[a->n - 1 - i];
    return log(top) + (double)(a->n - take) * 32.0 * 0.69314718055994530942;
}

/* Multiply a by the product of `count` consecutive factors starting at `first`, combining factors while the
 * product fits in 32 bits. */
static int bn_mul_run(qsv_bn *a, uint32_t first, uint32_t count) {
    uint64_t acc = 1;
    for (uint32_t t = 0; t < count; ++t) {
        uint64_t f = (uint64_t)first + t;
        if (acc * f > 0xFFFFFFFFull) {
            int rc = qsv_bn_mul_small(a, (uint32_t)acc);
            if (rc) return rc;
            acc = 1;
        }
        acc *= f;
    }
    return acc == 1 ? 0 : qsv_bn_mul_small(a, (uint32_t)acc);
}

int qsv_bn_ratio(qsv_bn *a, uint32_t num, uint32_t den, uint32_t c, qsv_bn_scratch *s) {
    while (c > 0 && a->n > 0) {
        uint32_t k = c < QSV_RATIO_CHUNK ? c : QSV_RATIO_CHUNK;
        int rc;
        qsv_bn_set_u32(&s->num, 1);
        qsv_bn_set_u32(&s->den, 1);
        if ((rc = bn_mul_run(&s->num, num, k)) != 0 || (rc = bn_mul_run(&s->den, den, k)) != 0) return rc;
        if (s->den.n == 0) return QSV_CODEC_E_INTERNAL; /* a zero denominator */
        if (s->num.n <= 1) {
            rc = qsv_bn_mul_small(a, s->num.n ? s->num.d[0] : 0u);
        } else {
            rc = qsv_bn_mul(&s->prod, a, &s->num);
            if (!rc) rc = qsv_bn_copy(a, &s->prod); /* copies, never swaps: callers keep their storage */
        }
        if (rc) return rc;
        if (s->den.n == 1) {
            if (qsv_bn_div_small(a, s->den.d[0]) != 0) return QSV_CODEC_E_INTERNAL;
        } else {
            rc = qsv_bn_divmod(&s->quo, &s->rem, a, &s->den, s);
            if (rc) return rc;
            if (s->rem.n != 0) return QSV_CODEC_E_INTERNAL;
            rc = qsv_bn_copy(a, &s->quo);
            if (rc) return rc;
        }
        num += k;
        den += k;
        c -= k;
    }
    return 0;
}
