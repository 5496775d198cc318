/*
 * Internals of the QSV codec shared by qsv_codec.c (framing, sparse code, tokens), qsv_codec_bignum.c and
 * qsv_codec_enum.c (enumerative index). Not part of the public API; nothing here is exported to Python.
 */
#ifndef QSV_CODEC_INTERNAL_H
#define QSV_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "qsv_codec.h"

/* CFFI_BEGIN */
/* CFFI_END */

/* ---- bit I/O: MSB-first (bit 0 of a message is the most significant bit of byte 0) ---- */

typedef struct qsv_bitwriter {
    uint8_t *buf;
    size_t cap;      /* bytes */
    size_t pos;      /* bytes written */
    uint64_t acc;    /* pending bits, right-aligned */
    unsigned nacc;   /* number of pending bits, < 8 between calls */
    int overflow;    /* set when a write would pass cap (nothing is written past cap) */
} qsv_bitwriter;

static inline void qsv_bw_init(qsv_bitwriter *w, uint8_t *buf, size_t cap) {
    w->buf = buf;
    w->cap = cap;
    w->pos = 0;
    w->acc = 0;
    w->nacc = 0;
    w->overflow = 0;
}

/* Append the low nbits (0..32) of value. */
static inline void qsv_bw_put(qsv_bitwriter *w, uint32_t value, unsigned nbits) {
    if (nbits == 0) return;
    w->acc = (w->acc << nbits) | (nbits == 32 ? value : (value & ((1u << nbits) - 1u)));
    w->nacc += nbits;
    while (w->nacc >= 8) {
        w->nacc -= 8;
        if (w->pos < w->cap) {
            w->buf[w->pos++] = (uint8_t)(w->acc >> w->nacc);
        } else {
            w->overflow = 1;
        }
    }
    w->acc &= (w->nacc ? ((1u << w->nacc) - 1u) : 0u);
}

/* Append n zero bits. */
static inline void qsv_bw_zeros(qsv_bitwriter *w, uint64_t n) {
    while (n >= 32) {
        qsv_bw_put(w, 0, 32);
        n -= 32;
    }
    qsv_bw_put(w, 0, (unsigned)n);
}

/* Flush the last partial byte (zero padding). Returns the number of bytes written, or 0 with overflow set. */
static inline size_t qsv_bw_finish(qsv_bitwriter *w) {
    if (w->nacc) {
        qsv_bw_put(w, 0, 8 - w->nacc);
    }
    return w->pos;
}

typedef struct qsv_bitreader {
    const uint8_t *buf;
    size_t len;       /* bytes */
    size_t bytepos;   /* next byte to load into the cache */
    uint64_t cache;   /* next bits, left-aligned */
    unsigned ncache;  /* valid bits in cache */
    uint64_t consumed; /* bits consumed so far */
} qsv_bitreader;

static inline void qsv_br_init(qsv_bitreader *r, const uint8_t *buf, size_t len) {
    r->buf = buf;
    r->len = len;
    r->bytepos = 0;
    r->cache = 0;
    r->ncache = 0;
    r->consumed = 0;
}

static inline void qsv_br_refill(qsv_bitreader *r) {
    while (r->ncache <= 56 && r->bytepos < r->len) {
        r->cache |= (uint64_t)r->buf[r->bytepos++] << (56 - r->ncache);
        r->ncache += 8;
    }
}

/* Read nbits (0..32) into *value. Returns 0, or QSV_ERR_TRUNCATED. */
static inline int qsv_br_get(qsv_bitreader *r, unsigned nbits, uint32_t *value) {
    if (nbits == 0) {
        *value = 0;
        return 0;
    }
    if (r->ncache < nbits) {
        qsv_br_refill(r);
        if (r->ncache < nbits) return QSV_ERR_TRUNCATED;
    }
    *value = (uint32_t)(r->cache >> (64 - nbits));
    r->cache <<= nbits;
    r->ncache -= nbits;
    r->consumed += nbits;
    return 0;
}

/* Count zero bits up to the next 1 bit (which is not consumed), giving up with QSV_ERR_MALFORMED when more
 * than max_zeros zeros come first, or QSV_ERR_TRUNCATED when the message ends. */
static inline int qsv_br_zeros(qsv_bitreader *r, uint64_t max_zeros, uint64_t *zeros) {
    uint64_t n = 0;
    for (;;) {
        if (r->ncache == 0) {
            qsv_br_refill(r);
            if (r->ncache == 0) return QSV_ERR_TRUNCATED;
        }
        if (r->cache == 0) { /* every cached bit is zero */
            n += r->ncache;
            r->consumed += r->ncache;
            r->ncache = 0;
            if (n > max_zeros) return QSV_ERR_MALFORMED;
            continue;
        }
        unsigned lead = 0;
        uint64_t c = r->cache;
        while (!(c & 0x8000000000000000ull)) { /* at most 63 iterations; a 1 bit is in the cache */
            c <<= 1;
            ++lead;
        }
        if (lead >= r->ncache) { /* the 1 bit lies beyond the valid part: cannot happen (cache is zero-filled) */
            return QSV_ERR_INTERNAL;
        }
        n += lead;
        r->cache = c;
        r->ncache -= lead;
        r->consumed += lead;
        if (n > max_zeros) return QSV_ERR_MALFORMED;
        *zeros = n;
        return 0;
    }
}

/* After the last field: the message must be exactly ceil(consumed / 8) bytes with zero padding bits. */
static inline int qsv_br_finish(const qsv_bitreader *r) {
    uint64_t need = (r->consumed + 7) / 8;
    if ((uint64_t)r->len != need) return r->len < need ? QSV_ERR_TRUNCATED : QSV_ERR_TRAILING;
    unsigned pad = (unsigned)(need * 8 - r->consumed);
    if (pad == 0) return 0;
    uint8_t last = r->buf[r->len - 1];
    return (last & ((1u << pad) - 1u)) ? QSV_ERR_TRAILING : 0;
}

static inline unsigned qsv_bitlen32(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return x ? 32u - (unsigned)__builtin_clz(x) : 0u;
#else
    unsigned n = 0;
    while (x) {
        ++n;
        x >>= 1;
    }
    return n;
#endif
}

/* ---- bignums: little-endian limbs, normalized (no leading zero limb; zero has n == 0) ----
 * 64-bit limbs with 128-bit intermediates where the compiler has them (x86-64, aarch64), else 32-bit limbs.
 * -DQSV_BN_FORCE_LIMB32 selects the 32-bit path anywhere (to test it). */
#if defined(__SIZEOF_INT128__) && !defined(QSV_BN_FORCE_LIMB32)
typedef uint64_t qsv_limb;
__extension__ typedef unsigned __int128 qsv_dlimb;
#define QSV_LIMB_BITS 64u
#else
typedef uint32_t qsv_limb;
typedef uint64_t qsv_dlimb;
#define QSV_LIMB_BITS 32u
#endif
#define QSV_LIMB_MAX ((qsv_limb)~(qsv_limb)0)

static inline unsigned qsv_bitlen_limb(qsv_limb x) {
#if QSV_LIMB_BITS == 64u && (defined(__GNUC__) || defined(__clang__))
    return x ? 64u - (unsigned)__builtin_clzll((unsigned long long)x) : 0u;
#else
    unsigned n = 0;
    while (x >> 16) {
        x >>= 16;
        n += 16;
    }
    return n + qsv_bitlen32((uint32_t)x);
#endif
}

typedef struct qsv_bn {
    qsv_limb *d;
    size_t n;
    size_t cap;
} qsv_bn;

/* Scratch for bignum division and binomial updates. */
typedef struct qsv_bn_scratch {
    qsv_bn num;   /* product of numerators (QSV_RATIO_CHUNK_LIMBS) */
    qsv_bn den;   /* product of denominators (QSV_RATIO_CHUNK_LIMBS) */
    qsv_bn prod;  /* a * num */
    qsv_bn quo;   /* quotient */
    qsv_bn rem;   /* remainder */
    qsv_limb *un; /* normalized dividend, cap + 1 limbs */
    qsv_limb *vn; /* normalized divisor, cap limbs */
    size_t cap;
} qsv_bn_scratch;

void qsv_bn_set_u32(qsv_bn *a, uint32_t v);
int qsv_bn_copy(qsv_bn *dst, const qsv_bn *src);
int qsv_bn_cmp(const qsv_bn *a, const qsv_bn *b);
int qsv_bn_mul_small(qsv_bn *a, qsv_limb f);
qsv_limb qsv_bn_div_small(qsv_bn *a, qsv_limb d); /* d > 0; returns the remainder */
int qsv_bn_add(qsv_bn *a, const qsv_bn *b);
void qsv_bn_sub(qsv_bn *a, const qsv_bn *b); /* requires a >= b */
int qsv_bn_mul(qsv_bn *c, const qsv_bn *a, const qsv_bn *b); /* c distinct from a, b */
/* q = u / v, r = u % v (v != 0; q, r distinct from u, v and each other). */
int qsv_bn_divmod(qsv_bn *q, qsv_bn *r, const qsv_bn *u, const qsv_bn *v, qsv_bn_scratch *s);
uint64_t qsv_bn_bitlen(const qsv_bn *a);
/* a <- a * prod_{t<c}(num + t) / prod_{t<c}(den + t) (factors < 2^25), in chunks of QSV_RATIO_CHUNK factors: the
 * caller guarantees that every chunk boundary gives an integer. a needs QSV_RATIO_CHUNK_LIMBS limbs of headroom. */
#define QSV_RATIO_CHUNK 64u
#define QSV_RATIO_CHUNK_LIMBS (QSV_RATIO_CHUNK * 25u / QSV_LIMB_BITS + 2u)
int qsv_bn_ratio(qsv_bn *a, uint32_t num, uint32_t den, uint32_t c, qsv_bn_scratch *s);

/* Exact ceil(log2 C(n, k)) with bignums (bn must hold the value; tmp is scratch of the same size). */
int qsv_enum_bound_exact(uint32_t vocab_size, uint32_t ell, uint64_t *bits, qsv_bn *bn, qsv_bn_scratch *s);
/* Floating-point bound: *bits is ceil(log2 C) when *certain is 1; otherwise C is within a relative 4(k+1)2^-53 of a
 * power of two and *bits is an upper bound (ceil(log2 C) plus 0, 1 or 2). */
void qsv_enum_bound_float(uint32_t vocab_size, uint32_t ell, uint64_t *bits, int *certain);

/* Enumerative payload (bound_bits bits) of a validated point / decoding of one (reader positioned after flag). */
int qsv_enum_write(const qsv_codec_params *p, const uint32_t *indices, const uint32_t *counts, uint32_t nnz,
                   qsv_bitwriter *w, void *workspace, size_t workspace_bytes);
int qsv_enum_read(const qsv_codec_params *p, qsv_bitreader *r, uint32_t *indices, uint32_t *counts,
                  uint32_t capacity, uint32_t *nnz_out, void *workspace, size_t workspace_bytes);

#endif /* QSV_CODEC_INTERNAL_H */
