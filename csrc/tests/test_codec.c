/*
 * Tests of the QSV lattice-point codec (csrc/qsv_codec*.c). Plain C program: prints failures, exits nonzero.
 * Build: cc -std=c11 -Icsrc csrc/tests/test_codec.c csrc/qsv_codec*.c -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qsv_codec.h"
#include "qsv_codec_internal.h"

#include "tests/codec_calls.h"

static int failures = 0;

#define CHECK(cond, ...)                                                                                         \
    do {                                                                                                         \
        if (!(cond)) {                                                                                           \
            ++failures;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                                                                        \
            fputc('\n', stderr);                                                                                 \
        }                                                                                                        \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t rng_below(uint32_t n) { return (uint32_t)(rng_next() % n); }

typedef struct ctx {
    qsv_codec_params p;
    unsigned char *ws;
    size_t ws_bytes;
} ctx;

static int ctx_init(ctx *c, uint32_t V, uint32_t ell) {
    c->ws_bytes = qsv_codec_workspace_bytes(V, ell);
    c->ws = malloc(c->ws_bytes);
    if (c->ws == NULL) return -1;
    return qsv_codec_params_init(&c->p, V, ell, (qsv_workspace){c->ws, c->ws_bytes});
}

static void ctx_free(ctx *c) { free(c->ws); }

/* Random point: nnz distinct tokens, counts a random composition of ell. */
static uint32_t random_point(uint32_t V, uint32_t ell, uint32_t nnz, uint32_t *idx, uint32_t *cnt) {
    if (nnz > V) nnz = V;
    if (nnz > ell) nnz = ell;
    if (nnz == 0) nnz = 1;
    /* distinct sorted indices: Floyd's sampling into a bitmap-free sorted insertion */
    uint32_t n = 0;
    while (n < nnz) {
        uint32_t t = rng_below(V);
        uint32_t pos = 0;
        while (pos < n && idx[pos] < t) ++pos;
        if (pos < n && idx[pos] == t) continue;
        memmove(idx + pos + 1, idx + pos, (n - pos) * sizeof(uint32_t));
        idx[pos] = t;
        ++n;
    }
    for (uint32_t j = 0; j < nnz; ++j) cnt[j] = 1;
    for (uint32_t r = ell - nnz; r > 0; --r) cnt[rng_below(nnz)] += 1;
    return nnz;
}

static void roundtrip(ctx *c, const uint32_t *idx, const uint32_t *cnt, uint32_t nnz, const char *what) {
    static const int modes[3] = {QSV_CODEC_MODE_AUTO, QSV_CODEC_MODE_ENUM, QSV_CODEC_MODE_SPARSE};
    uint32_t cap = c->p.max_nnz;
    uint32_t *di = malloc(cap * sizeof(uint32_t)), *dc = malloc(cap * sizeof(uint32_t));
    for (int mi = 0; mi < 3; ++mi) {
        uint64_t bits = 0, bits2 = 0;
        int chosen = -1;
        int rc = t_encoded_bits(&c->p, idx, cnt, nnz, modes[mi], &bits, &chosen);
        CHECK(rc == 0, "%s: encoded_bits mode %d rc %d", what, modes[mi], rc);
        size_t cap_bytes = (size_t)((bits + 7) / 8);
        unsigned char *buf = malloc(cap_bytes + 1);
        rc = t_encode(&c->p, modes[mi], idx, cnt, nnz, buf, cap_bytes, &bits2, &chosen, c->ws, c->ws_bytes);
        CHECK(rc == 0, "%s: encode mode %d rc %d (%s)", what, modes[mi], rc, qsv_error_name(rc));
        if (rc) {
            free(buf);
            continue;
        }
        CHECK(bits == bits2, "%s: bits %llu vs %llu", what, (unsigned long long)bits, (unsigned long long)bits2);
        if (modes[mi] == QSV_CODEC_MODE_AUTO) {
            CHECK(bits <= c->p.bound_bits + 1, "%s: auto %llu > bound+1", what, (unsigned long long)bits);
        }
        if (modes[mi] == QSV_CODEC_MODE_ENUM) {
            CHECK(bits == c->p.bound_bits + 1, "%s: enum bits", what);
        }
        uint32_t dn = 0;
        int dmode = -1;
        rc = t_decode(&c->p, buf, cap_bytes, di, dc, cap, &dn, &dmode, c->ws, c->ws_bytes);
        CHECK(rc == 0, "%s: decode mode %d rc %d (%s)", what, modes[mi], rc, qsv_error_name(rc));
        CHECK(dmode == chosen, "%s: mode %d vs %d", what, dmode, chosen);
        CHECK(dn == nnz && memcmp(di, idx, nnz * 4) == 0 && memcmp(dc, cnt, nnz * 4) == 0,
              "%s: mode %d point differs (nnz %u vs %u)", what, modes[mi], dn, nnz);
        /* truncation and trailing bytes */
        if (cap_bytes > 0) {
            rc = t_decode(&c->p, buf, cap_bytes - 1, di, dc, cap, &dn, &dmode, c->ws, c->ws_bytes);
            CHECK(rc == QSV_ERR_TRUNCATED, "%s: truncated gives %d", what, rc);
        }
        buf[cap_bytes] = 0;
        rc = t_decode(&c->p, buf, cap_bytes + 1, di, dc, cap, &dn, &dmode, c->ws, c->ws_bytes);
        CHECK(rc == QSV_ERR_TRAILING, "%s: trailing byte gives %d", what, rc);
        unsigned pad = (unsigned)(cap_bytes * 8 - bits);
        if (pad) {
            buf[cap_bytes - 1] ^= 1;
            rc = t_decode(&c->p, buf, cap_bytes, di, dc, cap, &dn, &dmode, c->ws, c->ws_bytes);
            CHECK(rc == QSV_ERR_TRAILING, "%s: padding bit gives %d", what, rc);
            buf[cap_bytes - 1] ^= 1;
        }
        /* output arrays too small */
        if (nnz > 1) {
            rc = t_decode(&c->p, buf, cap_bytes, di, dc, nnz - 1, &dn, &dmode, c->ws, c->ws_bytes);
            CHECK(rc == QSV_ERR_CAPACITY, "%s: small capacity gives %d", what, rc);
        }
        free(buf);
    }
    free(di);
    free(dc);
}

static void test_bounds(void) {
    static const struct {
        uint32_t V, ell;
        uint64_t bits;
    } cases[] = {/* the paper's per-token uplink figures are these + a 16-bit token id: 222, 2209, 5467, 2591, 6611 */
                 {50272, 16, 222 - 16}, {50272, 240, 2209 - 16}, {50272, 720, 5467 - 16}, {151936, 240, 2591 - 16},
                 {151936, 720, 6611 - 16}, {1, 1, 0}, {1, 65535, 0}, {2, 1, 1}, {2, 3, 2}, {2, 65535, 16},
                 {4, 1, 2}, {5, 1, 3}, {1u << 24, 1, 24}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        ctx c;
        int rc = ctx_init(&c, cases[i].V, cases[i].ell);
        CHECK(rc == 0, "params V=%u ell=%u rc %d", cases[i].V, cases[i].ell, rc);
        CHECK(c.p.bound_bits == cases[i].bits, "bound V=%u ell=%u: %llu, want %llu", cases[i].V, cases[i].ell,
              (unsigned long long)c.p.bound_bits, (unsigned long long)cases[i].bits);
        ctx_free(&c);
    }
    /* float fast path against exact bignums on a grid, including powers of two (V=2: C = ell+1) */
    for (uint32_t V = 1; V <= 40; ++V) {
        for (uint32_t ell = 1; ell <= 300; ell += (ell < 70 ? 1 : 37)) {
            ctx c;
            int rc = ctx_init(&c, V, ell);
            CHECK(rc == 0, "params rc %d", rc);
            qsv_bn_scratch s;
            size_t L = (size_t)(c.p.bound_bits / QSV_LIMB_BITS) + QSV_RATIO_CHUNK_LIMBS + 8;
            qsv_limb *mem = calloc(8 * L + 2, sizeof(qsv_limb));
            qsv_bn bn = {mem, 0, L};
            s.num = (qsv_bn){mem + L, 0, L};
            s.den = (qsv_bn){mem + 2 * L, 0, L};
            s.prod = (qsv_bn){mem + 3 * L, 0, L};
            s.quo = (qsv_bn){mem + 4 * L, 0, L};
            s.rem = (qsv_bn){mem + 5 * L, 0, L};
            s.vn = mem + 6 * L;
            s.un = mem + 7 * L;
            s.cap = L;
            uint64_t exact = 0;
            rc = qsv_enum_bound_exact(V, ell, &exact, &bn, &s);
            CHECK(rc == 0 && exact == c.p.bound_bits, "V=%u ell=%u: exact %llu vs %llu", V, ell,
                  (unsigned long long)exact, (unsigned long long)c.p.bound_bits);
            free(mem);
            ctx_free(&c);
        }
    }
    uint64_t bits;
    CHECK(qsv_codec_bound_bits(0, 5, &bits, (qsv_workspace){NULL, 0}) == QSV_ERR_ARG, "V=0 accepted");
    CHECK(qsv_codec_bound_bits(5, 0, &bits, (qsv_workspace){NULL, 0}) == QSV_ERR_ARG, "ell=0 accepted");
    CHECK(qsv_codec_bound_bits(5, 65536, &bits, (qsv_workspace){NULL, 0}) == QSV_ERR_ARG, "ell=65536 accepted");
    CHECK(qsv_codec_bound_bits((1u << 24) + 1, 5, &bits, (qsv_workspace){NULL, 0}) == QSV_ERR_ARG,
          "V>2^24 accepted");
}

/* The enumerative index is a bijection onto [0, C): enumerate every point of small (V, ell) and check that the
 * decoded indices are all distinct and below C. */
static int next_composition(uint32_t *b, uint32_t V) { /* lexicographic successor of a weak composition */
    /* find the rightmost nonzero entry before the last, move one unit right and gather the rest */
    uint32_t last = b[V - 1];
    b[V - 1] = 0;
    int i = (int)V - 2;
    while (i >= 0 && b[i] == 0) --i;
    if (i < 0) return 0;
    b[i] -= 1;
    b[i + 1] = last + 1;
    return 1;
}

static void test_bijection(void) {
    static const uint32_t dims[][2] = {{1, 5}, {2, 7}, {3, 4}, {4, 6}, {5, 5}, {7, 3}, {6, 8}};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; ++di) {
        uint32_t V = dims[di][0], ell = dims[di][1];
        ctx c;
        CHECK(ctx_init(&c, V, ell) == 0, "params");
        uint64_t C = 1; /* C(ell+V-1, V-1), small here */
        for (uint32_t t = 1; t <= V - 1; ++t) C = C * (ell + t) / t;
        unsigned char *seen = calloc((size_t)C, 1);
        uint32_t b[16] = {0}, idx[16], cnt[16];
        b[0] = ell;
        uint64_t npoints = 0;
        do {
            uint32_t n = 0;
            for (uint32_t i = 0; i < V; ++i) {
                if (b[i]) {
                    idx[n] = i;
                    cnt[n++] = b[i];
                }
            }
            unsigned char buf[16];
            uint64_t bits = 0;
            int rc = t_encode(&c.p, QSV_CODEC_MODE_ENUM, idx, cnt, n, buf, sizeof buf, &bits, NULL, c.ws,
                                      c.ws_bytes);
            CHECK(rc == 0, "encode rc %d", rc);
            uint64_t value = 0; /* the index: bits 1..bound of the message */
            for (uint64_t k = 1; k < bits; ++k) value = (value << 1) | ((buf[k / 8] >> (7 - k % 8)) & 1u);
            CHECK(value < C, "V=%u ell=%u: index %llu >= C %llu", V, ell, (unsigned long long)value,
                  (unsigned long long)C);
            if (value < C) {
                CHECK(!seen[value], "V=%u ell=%u: index %llu twice", V, ell, (unsigned long long)value);
                seen[value] = 1;
            }
            roundtrip(&c, idx, cnt, n, "exhaustive");
            ++npoints;
        } while (next_composition(b, V));
        CHECK(npoints == C, "V=%u ell=%u: %llu points, C=%llu", V, ell, (unsigned long long)npoints,
              (unsigned long long)C);
        free(seen);
        ctx_free(&c);
    }
}

static void test_random_roundtrips(void) {
    static const uint32_t dims[][2] = {{1, 1},      {1, 65535}, {2, 1},        {2, 65535},    {3, 2},
                                       {10, 10},    {100, 16},  {1000, 240},   {32000, 16},   {50272, 240},
                                       {151936, 720}, {262144, 240}, {1u << 24, 720}, {300, 65535}, {65535, 65535}};
    uint32_t *idx = malloc(70000 * sizeof(uint32_t)), *cnt = malloc(70000 * sizeof(uint32_t));
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; ++di) {
        uint32_t V = dims[di][0], ell = dims[di][1];
        ctx c;
        CHECK(ctx_init(&c, V, ell) == 0, "params V=%u ell=%u", V, ell);
        uint32_t maxn = c.p.max_nnz;
        uint32_t sizes[6] = {1, 2, 5, 30, maxn / 2 + 1, maxn};
        for (int si = 0; si < 6; ++si) {
            uint32_t want = sizes[si];
            if (want > 400 && (uint64_t)V * ell > 20000000ull) want = 400; /* keep the big cases quick */
            for (int rep = 0; rep < 3; ++rep) {
                uint32_t n = random_point(V, ell, want, idx, cnt);
                char what[96];
                snprintf(what, sizeof what, "V=%u ell=%u nnz=%u", V, ell, n);
                roundtrip(&c, idx, cnt, n, what);
            }
        }
        /* all mass on the last token; uniform over the first ell tokens; maximal gaps */
        idx[0] = V - 1;
        cnt[0] = ell;
        roundtrip(&c, idx, cnt, 1, "last token");
        idx[0] = 0;
        roundtrip(&c, idx, cnt, 1, "first token");
        if (V >= 2 && ell >= 2) {
            idx[0] = 0;
            idx[1] = V - 1;
            cnt[0] = 1;
            cnt[1] = ell - 1;
            roundtrip(&c, idx, cnt, 2, "ends");
        }
        if (maxn <= 70000) {
            for (uint32_t j = 0; j < maxn; ++j) {
                idx[j] = V - maxn + j;
                cnt[j] = 1;
            }
            cnt[maxn - 1] += ell - maxn;
            if ((uint64_t)V * ell <= 20000000ull || maxn <= 400) roundtrip(&c, idx, cnt, maxn, "dense tail");
        }
        ctx_free(&c);
    }
    free(idx);
    free(cnt);
}

static void test_invalid_points(void) {
    ctx c;
    CHECK(ctx_init(&c, 100, 10) == 0, "params");
    unsigned char buf[64];
    uint32_t idx[3] = {5, 5, 7}, cnt[3] = {3, 3, 4};
    int rc = t_encode(&c.p, 0, idx, cnt, 3, buf, sizeof buf, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_POINT, "repeated index: %d", rc);
    uint32_t idx2[3] = {5, 6, 100};
    rc = t_encode(&c.p, 0, idx2, cnt, 3, buf, sizeof buf, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_POINT, "index >= V: %d", rc);
    uint32_t idx3[3] = {5, 6, 7}, cnt3[3] = {3, 3, 3};
    rc = t_encode(&c.p, 0, idx3, cnt3, 3, buf, sizeof buf, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_POINT, "sum != ell: %d", rc);
    uint32_t cnt4[3] = {0, 6, 4};
    rc = t_encode(&c.p, 0, idx3, cnt4, 3, buf, sizeof buf, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_POINT, "zero count: %d", rc);
    uint32_t cnt5[3] = {3, 3, 4};
    rc = t_encode(&c.p, 7, idx3, cnt5, 3, buf, sizeof buf, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_ARG, "bad mode: %d", rc);
    rc = t_encode(&c.p, QSV_CODEC_MODE_ENUM, idx3, cnt5, 3, buf, 1, NULL, NULL, c.ws, c.ws_bytes);
    CHECK(rc == QSV_ERR_CAPACITY, "small buffer: %d", rc);
    rc = t_encode(&c.p, QSV_CODEC_MODE_ENUM, idx3, cnt5, 3, buf, sizeof buf, NULL, NULL, c.ws, 10);
    CHECK(rc == QSV_ERR_WORKSPACE, "small workspace: %d", rc);
    ctx_free(&c);
}

/* Every index in [C, 2^bound) is rejected; every message of the right length decodes or fails cleanly. */
static void test_enum_range(void) {
    ctx c;
    CHECK(ctx_init(&c, 3, 4) == 0, "params"); /* C(6, 2) = 15 -> 4 bits; indices 15 is out of range */
    CHECK(c.p.bound_bits == 4, "bound %llu", (unsigned long long)c.p.bound_bits);
    uint32_t di[4], dc[4], dn;
    int ok = 0, bad = 0;
    for (unsigned v = 0; v < 16; ++v) {
        unsigned char msg[1] = {(unsigned char)(v << 3)}; /* flag 0, 4 index bits, 3 padding bits */
        int rc = t_decode(&c.p, msg, 1, di, dc, 4, &dn, NULL, c.ws, c.ws_bytes);
        if (v < 15) {
            CHECK(rc == 0, "index %u rejected: %d", v, rc);
            ok += rc == 0;
        } else {
            CHECK(rc == QSV_ERR_RANGE, "index %u: %d", v, rc);
            bad += rc == QSV_ERR_RANGE;
        }
    }
    CHECK(ok == 15 && bad == 1, "ok %d bad %d", ok, bad);
    ctx_free(&c);
    /* random garbage of every length never crashes and, when accepted, re-encodes to a valid point */
    CHECK(ctx_init(&c, 1000, 240) == 0, "params");
    uint32_t *ix = malloc(240 * 4), *cx = malloc(240 * 4);
    unsigned char msg[400];
    for (int rep = 0; rep < 20000; ++rep) {
        size_t len = rng_below(sizeof msg);
        for (size_t i = 0; i < len; ++i) msg[i] = (unsigned char)rng_next();
        if (rep % 3 == 0 && len) msg[0] |= 0x80; /* bias towards the sparse branch */
        int rc = t_decode(&c.p, msg, len, ix, cx, 240, &dn, NULL, c.ws, c.ws_bytes);
        if (rc == 0) CHECK(t_check_point(&c.p, ix, cx, dn) == 0, "accepted garbage is not a point");
        else CHECK(rc < 0 && rc != QSV_ERR_INTERNAL, "rc %d", rc);
    }
    free(ix);
    free(cx);
    ctx_free(&c);
}

static void test_tokens(void) {
    static const uint32_t vocabs[] = {1, 2, 3, 255, 256, 257, 50272, 151936, 1u << 24};
    uint32_t ids[37], back[37];
    unsigned char buf[200];
    for (size_t vi = 0; vi < sizeof vocabs / sizeof vocabs[0]; ++vi) {
        uint32_t V = vocabs[vi];
        for (size_t count = 0; count <= 37; count += 6) {
            for (size_t i = 0; i < count; ++i) ids[i] = i % 2 ? V - 1 : rng_below(V);
            size_t bytes = qsv_codec_token_bytes(V, count);
            size_t w = V == 1 ? 0 : (size_t)qsv_bitlen32(V - 1);
            CHECK(bytes == (count * w + 7) / 8, "token bytes");
            int rc = qsv_codec_pack_tokens(ids, count, V, buf, sizeof buf);
            CHECK(rc == 0, "pack rc %d", rc);
            rc = qsv_codec_unpack_tokens(buf, bytes, count, V, back);
            CHECK(rc == 0 && memcmp(ids, back, count * 4) == 0, "unpack V=%u count=%zu rc %d", V, count, rc);
            if (bytes) {
                rc = qsv_codec_unpack_tokens(buf, bytes - 1, count, V, back);
                CHECK(rc == QSV_ERR_TRUNCATED, "short token buffer: %d", rc);
            }
            rc = qsv_codec_unpack_tokens(buf, bytes + 1, count, V, back);
            CHECK(rc == QSV_ERR_TRAILING, "long token buffer: %d", rc);
            if (count) {
                ids[0] = V;
                rc = qsv_codec_pack_tokens(ids, count, V, buf, sizeof buf);
                CHECK(rc == QSV_ERR_RANGE, "id >= V packed: %d", rc);
            }
        }
    }
    /* an out-of-range id on the wire: V = 5 -> 3 bits, value 7 */
    unsigned char bad[1] = {0xE0};
    CHECK(qsv_codec_unpack_tokens(bad, 1, 1, 5, back) == QSV_ERR_RANGE, "id 7 for V=5 accepted");
}

static void test_divmod(void) {
    enum { L = 64 };
    qsv_limb mem[14 * L + 2];
    qsv_bn u = {mem, 0, L}, v = {mem + L, 0, L}, q = {mem + 2 * L, 0, L}, r = {mem + 3 * L, 0, L},
           t = {mem + 4 * L, 0, 2 * L};
    qsv_bn_scratch s = {.num = {mem + 6 * L, 0, L},
                        .den = {mem + 7 * L, 0, L},
                        .prod = {mem + 8 * L, 0, L},
                        .quo = {mem + 9 * L, 0, L},
                        .rem = {mem + 10 * L, 0, L},
                        .un = mem + 12 * L,
                        .vn = mem + 11 * L,
                        .cap = L};
    for (int rep = 0; rep < 3000; ++rep) {
        size_t nu = 1 + rng_below(40), nv = 1 + rng_below(20);
        for (size_t i = 0; i < nu; ++i) u.d[i] = (qsv_limb)rng_next();
        for (size_t i = 0; i < nv; ++i) v.d[i] = rep % 4 == 0 ? QSV_LIMB_MAX : (qsv_limb)rng_next();
        if (rep % 5 == 0) v.d[nv - 1] = 1;
        u.n = nu;
        v.n = nv;
        while (u.n && !u.d[u.n - 1]) --u.n;
        while (v.n && !v.d[v.n - 1]) --v.n;
        if (v.n == 0) continue;
        int rc = qsv_bn_divmod(&q, &r, &u, &v, &s);
        CHECK(rc == 0, "divmod rc %d", rc);
        CHECK(qsv_bn_cmp(&r, &v) < 0, "remainder >= divisor");
        rc = qsv_bn_mul(&t, &q, &v);
        CHECK(rc == 0, "mul rc");
        rc = qsv_bn_add(&t, &r);
        CHECK(rc == 0 && qsv_bn_cmp(&t, &u) == 0, "q*v + r != u (rep %d)", rep);
    }
}

/* Division by one limb (reciprocal method) against long division with double-limb arithmetic. */
static void test_div_small(void) {
    qsv_limb a[40], ref[40];
    for (int rep = 0; rep < 20000; ++rep) {
        size_t n = 1 + rng_below(40);
        for (size_t i = 0; i < n; ++i) a[i] = (qsv_limb)rng_next();
        if (rep % 7 == 0) a[n - 1] = QSV_LIMB_MAX;
        qsv_limb dv = (qsv_limb)rng_next() >> rng_below(QSV_LIMB_BITS);
        if (dv == 0) dv = 1 + (qsv_limb)rep;
        if (rep % 11 == 0) dv = (qsv_limb)1 << rng_below(QSV_LIMB_BITS);
        if (rep % 13 == 0) dv = 1 + rng_below(1u << 24);
        qsv_dlimb rem = 0;
        for (size_t i = n; i-- > 0;) {
            qsv_dlimb cur = (rem << QSV_LIMB_BITS) | a[i];
            ref[i] = (qsv_limb)(cur / dv);
            rem = cur % dv;
        }
        size_t rn = n;
        while (rn && !ref[rn - 1]) --rn;
        qsv_bn x = {a, n, 40};
        while (x.n && !x.d[x.n - 1]) --x.n;
        qsv_limb r = qsv_bn_div_small(&x, dv);
        CHECK(r == (qsv_limb)rem && x.n == rn && memcmp(a, ref, rn * sizeof(qsv_limb)) == 0, "div_small rep %d", rep);
    }
}

int main(void) {
    test_div_small();
    test_bounds();
    test_divmod();
    test_bijection();
    test_random_roundtrips();
    test_invalid_points();
    test_enum_range();
    test_tokens();
    if (failures) {
        fprintf(stderr, "test_codec: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_codec: all passed\n");
    return 0;
}
