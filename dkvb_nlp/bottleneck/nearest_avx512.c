/* Exact nearest-key search by squared L2 distance on AVX-512, bit for bit nearest_avx2.c's result:
 * (1) dkvb_nearest: the AVX2 kernel with 16-float registers; (2) dkvb_nearest_bf16: a bf16 screen
 * (AVX-512 BF16 dot products) that keeps every key that could still win, then the float32 values of
 * those few, computed exactly as (1) computes them.
 *
 * (1)
 *
 * Every key's value is computed with the same float32 operations in the same order as the AVX2
 * kernel: it starts at ||k||^2 and takes one fused multiply-add per dimension with the query times
 * -2, dimensions in order; only the number of lanes differs. Keys are visited in index order and
 * only a strictly smaller value replaces the running best, so ties go to the lowest index, and
 * ||x||^2 is added by the same scalar loop: distances and indices equal the AVX2 kernel's exactly.
 * What changes is throughput: a 12-query x 32-key tile lives in 24 of the 32 zmm registers, one
 * broadcast of a query value feeds two FMAs, and a tile's comparison with the running best is one
 * min and one mask compare per query. On CPUs with two 512-bit FMA units (Intel Xeon Scalable,
 * the AMX generations included) that is up to twice the AVX2 kernel's arithmetic per cycle; on
 * CPUs that split 512-bit operations in two (AMD Zen 4) it saves instructions, not arithmetic.
 *
 * Compiled at first use by dkvb_nlp/bottleneck/native.py (no special flags: the kernel functions
 * carry their own target attribute, and dkvb_avx512_supported() says whether the CPU runs them).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MQ 12 /* queries per register tile */
#define KT 32 /* keys per register tile: two vectors of 16 floats */
#define QB 96 /* queries per task, a multiple of MQ */
#define KB 8  /* key tiles per block: 256 keys, which stay in L1 while a task's queries pass */

int dkvb_avx512_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* The value the AVX2 kernel computes for query xs (times -2) and one key: ||k||^2, then one fused
 * multiply-add per dimension in order (fmaf rounds once, as each lane of _mm256_fmadd_ps does). */
static inline float exact_value(const float *xs, int64_t dk, const float *kt, float kn, int64_t j) {
    const float *col = kt + (j / KT) * KT * dk + (j % KT);
    float acc = kn;
    for (int64_t d = 0; d < dk; d++) acc = fmaf(xs[d], col[d * KT], acc);
    return acc;
}

/* ||x||^2 + best, clamped at 0: the AVX2 kernel's final step, in the same order. */
static inline float finish(const float *x, int64_t dk, float best) {
    float xx = 0.0f;
    for (int64_t d = 0; d < dk; d++) xx += x[d] * x[d];
    const float v = best + xx;
    return v > 0.0f ? v : 0.0f;
}

__attribute__((target("avx512f"), noinline)) static void
improve(float *best, int64_t *arg, __m512 v0, __m512 v1, int64_t kbase) {
    float s[KT];
    _mm512_storeu_ps(s, v0);
    _mm512_storeu_ps(s + 16, v1);
    for (int j = 0; j < KT; j++) /* in index order, strictly smaller only: ties keep the lowest index */
        if (s[j] < *best) { *best = s[j]; *arg = kbase + j; }
}

__attribute__((target("avx512f"))) static inline void
tile(const float *xs, int dk, const float *kt, const float *kn, int64_t kbase, float *best, int64_t *arg) {
    /* xs: MQ queries x dk, already times -2; kt: dk x KT keys; kn: KT squared key norms */
    __m512 acc[MQ][2];
    const __m512 n0 = _mm512_loadu_ps(kn), n1 = _mm512_loadu_ps(kn + 16);
    for (int q = 0; q < MQ; q++) { acc[q][0] = n0; acc[q][1] = n1; }
    for (int d = 0; d < dk; d++) {
        const __m512 k0 = _mm512_loadu_ps(kt + d * KT), k1 = _mm512_loadu_ps(kt + d * KT + 16);
        for (int q = 0; q < MQ; q++) {
            const __m512 b = _mm512_set1_ps(xs[q * dk + d]);
            acc[q][0] = _mm512_fmadd_ps(b, k0, acc[q][0]);
            acc[q][1] = _mm512_fmadd_ps(b, k1, acc[q][1]);
        }
    }
#pragma GCC unroll 12
    for (int q = 0; q < MQ; q++) { /* the common case in registers: no key of the tile beats the best */
        const __m512 low = _mm512_min_ps(acc[q][0], acc[q][1]);
        if (__builtin_expect(_mm512_cmp_ps_mask(low, _mm512_set1_ps(best[q]), _CMP_LT_OQ) != 0, 0))
            improve(best + q, arg + q, acc[q][0], acc[q][1], kbase);
    }
}

/* The same contract as dkvb_nearest in nearest_avx2.c, with kt: (C, kp / KT, dk, KT) keys,
 * transposed tile by tile, and kp a multiple of KT = 32 (+inf norms at the padding keys). */
__attribute__((target("avx512f"))) int
dkvb_nearest(const float *h, int64_t sn, int64_t sc, const float *kt, const float *kn, float *out_d,
             int64_t *out_i, int64_t n, int64_t c, int64_t kp, int64_t dk, int64_t t0, int64_t t1) {
    float *xs = (float *)malloc(sizeof(float) * QB * dk);
    if (xs == NULL) return -1;
    const int64_t per_codebook = (n + QB - 1) / QB, tiles = kp / KT;
    float best[QB];
    int64_t arg[QB];
    for (int64_t t = t0; t < t1; t++) {
        const int64_t cb = t / per_codebook, q0 = (t % per_codebook) * QB;
        const int64_t nq = n - q0 < QB ? n - q0 : QB, padded = (nq + MQ - 1) / MQ * MQ;
        for (int64_t i = 0; i < padded; i++)
            for (int64_t d = 0; d < dk; d++)
                xs[i * dk + d] = i < nq ? -2.0f * h[(q0 + i) * sn + cb * sc + d] : 0.0f;
        for (int64_t i = 0; i < QB; i++) { best[i] = INFINITY; arg[i] = 0; }
        const float *ktc = kt + cb * kp * dk, *knc = kn + cb * kp;
        for (int64_t b0 = 0; b0 < tiles; b0 += KB) {
            const int64_t b1 = b0 + KB < tiles ? b0 + KB : tiles;
            for (int64_t qg = 0; qg < padded; qg += MQ)
                for (int64_t b = b0; b < b1; b++)
                    tile(xs + qg * dk, (int)dk, ktc + b * KT * dk, knc + b * KT, b * KT, best + qg, arg + qg);
        }
        for (int64_t i = 0; i < nq; i++) {
            out_d[(q0 + i) * c + cb] = finish(h + (q0 + i) * sn + cb * sc, dk, best[i]);
            out_i[(q0 + i) * c + cb] = arg[i];
        }
    }
    free(xs);
    return 0;
}

/* (2) The bf16 screen.
 *
 * For query x (float32, xs = -2x exactly) and key k let w(k) = kn(k) + xs.k in exact arithmetic,
 * kn(k) the float32 squared norm both kernels start from. The AVX2 value V(k) (float32 FMA chain,
 * computed by exact_value) and the screen's value S(k) = kn(k) + x^.k^ (x^, k^: the inputs rounded
 * to bf16 as VDPBF16PS reads them, subnormals as zero; their products are exact in float32 and
 * summed in float32, results that fall below 2^-126 flushed to zero) both lie near w:
 *   |V - w| <= g(dk) (KN + ||xs|| M) + dk 2^-150                     (dk roundings)
 *   |S - w| <= |xs.(k - k^)| + |(xs - x^).k^| + g(dk + 2) (KN + sum |x^_d k^_d|) + (2 dk + 4) 2^-126
 *           <= ||xs|| Ek + ||ex|| (M + Ek) + g(dk + 2) (KN + (||xs|| + ||ex||)(M + Ek)) + (2 dk + 4) 2^-126
 * by Cauchy-Schwarz, with u = 2^-24, g(m) = m u / (1 - m u), M the codebook's largest key norm, KN
 * its largest kn, Ek the largest ||k - k^|| over its keys (exact residuals, from the caller, rounded
 * up) and ||ex|| = ||xs - x^|| (computed here in double, rounded up). E = the sum of both bounds,
 * inflated by 2^-20 (computed in double).
 * Let j1 minimise S. A key k with S(k) > S(j1) + 2E has V(k) >= S(k) - E > S(j1) + E >= V(j1):
 * it is strictly worse than j1 under the AVX2 kernel's own arithmetic, so neither that kernel's
 * minimum nor any key tied with it is outside C = {k : S(k) <= S(j1) + 2E}. The kernel collects
 * a superset of C (a running threshold that only falls, rounded up to float32), evaluates V on it
 * with exact_value in index order and keeps the first strict minimum: the AVX2 kernel's key and
 * value, bit for bit. A row whose collection overflows LC entries, or whose ||x|| is not finite
 * or beyond 2^60 (where the bound could overflow), is searched again by (1) in full.
 */
#define LC 16 /* candidates kept per query before it goes to the full float32 search */

static inline float round_up_float(double v) {
    float f = (float)v;
    return (double)f < v ? nextafterf(f, INFINITY) : f;
}

typedef struct {
    float best, thr; /* S(j1) so far; the collection threshold (rounded up), -inf when given up */
    double two_e;    /* 2E */
    int count;       /* collected entries; LC + 1 marks an overflow */
    float val[LC];
    int64_t idx[LC];
} screen_t;

static inline void collect(screen_t *r, float v, int64_t j) {
    if (!(v <= r->thr)) return;
    if (v < r->best) {
        r->best = v;
        r->thr = round_up_float((double)v + r->two_e);
    }
    if (r->count == LC) { /* drop what the lower threshold excludes, then give up if still full */
        int m = 0;
        for (int i = 0; i < LC; i++)
            if (r->val[i] <= r->thr) { r->val[m] = r->val[i]; r->idx[m] = r->idx[i]; m++; }
        r->count = m;
        if (m == LC) { r->count = LC + 1; r->thr = -INFINITY; return; }
    }
    r->val[r->count] = v;
    r->idx[r->count] = j;
    r->count++;
}

__attribute__((target("avx512f"), noinline, unused)) static void
collect_tile(screen_t *r, __m512 v0, __m512 v1, int64_t kbase) {
    float s[KT];
    _mm512_storeu_ps(s, v0);
    _mm512_storeu_ps(s + 16, v1);
    if (r->count == 0 && r->best == INFINITY) { /* the row's first tile: start from its minimum, not key 0 */
        const float low = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1));
        if (low < INFINITY) {
            r->best = low;
            r->thr = round_up_float((double)low + r->two_e);
        }
    }
    const uint32_t m = (uint32_t)_mm512_cmp_ps_mask(v0, _mm512_set1_ps(r->thr), _CMP_LE_OQ) |
                       ((uint32_t)_mm512_cmp_ps_mask(v1, _mm512_set1_ps(r->thr), _CMP_LE_OQ) << 16);
    for (uint32_t bits = m; bits; bits &= bits - 1) {
        const int j = __builtin_ctz(bits);
        collect(r, s[j], kbase + j);
    }
}

/* The rest of a task once its rows are screened: each settled row's candidates get their AVX2 values
 * (exact_value, index order, first strict minimum); rows that overflowed go to (1) in full, MQ at
 * a time. Returns the number of rows searched again, or -1 when a buffer cannot be allocated. */
__attribute__((target("avx512f"), unused)) static int64_t
settle(const float *h, int64_t sn, int64_t sc, const float *xs, screen_t *rs, const float *ktc, const float *knc,
       float *out_d, int64_t *out_i, int64_t c, int64_t cb, int64_t q0, int64_t nq, int64_t tiles, int64_t dk) {
    float best[MQ];
    int64_t arg[MQ], redo[QB], nredo = 0;
    for (int64_t i = 0; i < nq; i++) {
        screen_t *r = rs + i;
        if (r->count > LC) { redo[nredo++] = i; continue; }
        const double limit = (double)r->best + r->two_e;
        float v_best = INFINITY;
        int64_t j_best = 0;
        for (int e = 0; e < r->count; e++) { /* collected in index order */
            if ((double)r->val[e] > limit) continue;
            const float v = exact_value(xs + i * dk, dk, ktc, knc[r->idx[e]], r->idx[e]);
            if (v < v_best) { v_best = v; j_best = r->idx[e]; }
        }
        out_d[(q0 + i) * c + cb] = finish(h + (q0 + i) * sn + cb * sc, dk, v_best);
        out_i[(q0 + i) * c + cb] = j_best;
    }
    if (nredo == 0) return 0;
    float *xq = (float *)malloc(sizeof(float) * MQ * dk);
    if (xq == NULL) return -1;
    for (int64_t g0 = 0; g0 < nredo; g0 += MQ) {
        const int64_t g1 = g0 + MQ < nredo ? g0 + MQ : nredo;
        for (int64_t a = 0; a < MQ; a++) {
            for (int64_t d = 0; d < dk; d++) xq[a * dk + d] = g0 + a < g1 ? xs[redo[g0 + a] * dk + d] : 0.0f;
            best[a] = INFINITY;
            arg[a] = 0;
        }
        for (int64_t bb = 0; bb < tiles; bb++) tile(xq, (int)dk, ktc + bb * KT * dk, knc + bb * KT, bb * KT, best, arg);
        for (int64_t a = 0; a + g0 < g1; a++) {
            const int64_t i = redo[g0 + a];
            out_d[(q0 + i) * c + cb] = finish(h + (q0 + i) * sn + cb * sc, dk, best[a]);
            out_i[(q0 + i) * c + cb] = arg[a];
        }
    }
    free(xq);
    return nredo;
}

/* A row's start: xs = -2x (float32, exact), its norm ||xs|| in double, and an empty collection;
 * a row outside the bounds' range (||xs|| not finite or |x| + M beyond 2^60) is marked to go to (1). */
static inline double start_row(const float *x, int real, int64_t dk, double m, float *xs, screen_t *r) {
    double norm2 = 0.0;
    for (int64_t d = 0; d < dk; d++) {
        const float v = real ? -2.0f * x[d] : 0.0f;
        xs[d] = v;
        norm2 += (double)v * v;
    }
    const double x2 = sqrt(norm2);
    r->best = INFINITY;
    r->count = 0;
    r->thr = INFINITY;
    r->two_e = INFINITY;
    if (!(isfinite(x2) && x2 / 2 + m <= 0x1p60)) {
        r->thr = -INFINITY;
        r->count = LC + 1;
    }
    return x2;
}

#if defined(__clang__) ? (__clang_major__ >= 9) : (defined(__GNUC__) && __GNUC__ >= 10)
#define DKVB_HAVE_BF16 1
#endif

int dkvb_bf16_supported(void) {
#ifdef DKVB_HAVE_BF16
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#ifdef DKVB_HAVE_BF16
static inline uint32_t bf16_bits(float f) { /* round to nearest even (finite inputs) */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

static inline double bf16_value(uint32_t bits) { /* as VDPBF16PS reads it: subnormals are zero */
    if ((bits & 0x7F80u) == 0) return 0.0;
    const uint32_t u = bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) static inline void
tile_bf16(const uint32_t *xp, int np, const uint32_t *kt, const float *kn, int64_t kbase, screen_t *rs) {
    /* xp: MQ queries x np bf16 pairs; kt: np x KT pairs of bf16 (key j's dims 2p, 2p+1 in lane j) */
    __m512 acc[MQ][2];
    const __m512 n0 = _mm512_loadu_ps(kn), n1 = _mm512_loadu_ps(kn + 16);
    for (int q = 0; q < MQ; q++) { acc[q][0] = n0; acc[q][1] = n1; }
    for (int p = 0; p < np; p++) {
        const __m512bh k0 = (__m512bh)_mm512_loadu_si512(kt + p * KT);
        const __m512bh k1 = (__m512bh)_mm512_loadu_si512(kt + p * KT + 16);
        for (int q = 0; q < MQ; q++) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)xp[q * np + p]);
            acc[q][0] = _mm512_dpbf16_ps(acc[q][0], k0, b);
            acc[q][1] = _mm512_dpbf16_ps(acc[q][1], k1, b);
        }
    }
#pragma GCC unroll 12
    for (int q = 0; q < MQ; q++) { /* the common case in registers: no key of the tile under thr */
        const __m512 low = _mm512_min_ps(acc[q][0], acc[q][1]);
        if (__builtin_expect(_mm512_cmp_ps_mask(low, _mm512_set1_ps(rs[q].thr), _CMP_LE_OQ) != 0, 0))
            collect_tile(rs + q, acc[q][0], acc[q][1], kbase);
    }
}

/* dkvb_nearest's contract, plus kb: (C, kp / KT, np, KT) bf16 pairs of the keys (np = ceil(dk / 2),
 * zero in the odd dimension's pad), and cbinfo: per codebook {M (largest key norm), KN (largest
 * finite kn), Ek (largest ||k - k^||, rounded up)} in double. Returns the number of rows searched again in full, or -1 when a buffer
 * cannot be allocated. */
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) int64_t
dkvb_nearest_bf16(const float *h, int64_t sn, int64_t sc, const float *kt, const uint32_t *kb, const float *kn,
                  const double *cbinfo, float *out_d, int64_t *out_i, int64_t n, int64_t c, int64_t kp, int64_t dk,
                  int64_t t0, int64_t t1) {
    const int64_t np = (dk + 1) / 2;
    float *xs = (float *)malloc(sizeof(float) * QB * dk);
    uint32_t *xp = (uint32_t *)malloc(sizeof(uint32_t) * QB * np);
    screen_t *rs = (screen_t *)malloc(sizeof(screen_t) * QB);
    if (xs == NULL || xp == NULL || rs == NULL) { free(xs); free(xp); free(rs); return -1; }
    const int64_t per_codebook = (n + QB - 1) / QB, tiles = kp / KT;
    const double u = ldexp(1.0, -24), tiny = ldexp(1.0, -126);
    const double g_v = dk * u / (1 - dk * u), g_s = (dk + 2) * u / (1 - (dk + 2) * u);
    int64_t again = 0;
    for (int64_t t = t0; t < t1 && again >= 0; t++) {
        const int64_t cb = t / per_codebook, q0 = (t % per_codebook) * QB;
        const int64_t nq = n - q0 < QB ? n - q0 : QB, padded = (nq + MQ - 1) / MQ * MQ;
        const double m = cbinfo[3 * cb], kn_max = cbinfo[3 * cb + 1], ek = cbinfo[3 * cb + 2];
        for (int64_t i = 0; i < padded; i++) {
            screen_t *r = rs + i;
            const double x2 = start_row(h + (q0 + i) * sn + cb * sc, i < nq, dk, m, xs + i * dk, r); /* 2 ||x|| */
            double ex2 = 0.0; /* ||xs - x^||^2, x^ as VDPBF16PS reads it */
            for (int64_t p = 0; p < np; p++) {
                uint32_t half[2] = {0u, 0u};
                for (int e = 0; e < 2 && 2 * p + e < dk; e++) {
                    const float v = xs[i * dk + 2 * p + e];
                    half[e] = bf16_bits(v);
                    const double res = (double)v - bf16_value(half[e]);
                    ex2 += res * res;
                }
                xp[i * np + p] = half[0] | (half[1] << 16);
            }
            if (r->count > LC) continue;
            const double nex = sqrt(ex2) * (1 + ldexp(1.0, -40));
            const double e = (x2 * ek + nex * (m + ek) + g_s * (kn_max + (x2 + nex) * (m + ek)) +
                              (2 * dk + 4) * tiny + g_v * (kn_max + x2 * m) + dk * ldexp(1.0, -150)) *
                             (1 + ldexp(1.0, -20));
            r->two_e = 2 * e;
        }
        const float *ktc = kt + cb * kp * dk, *knc = kn + cb * kp;
        const uint32_t *kbc = kb + cb * kp * np;
        for (int64_t b0 = 0; b0 < tiles; b0 += KB) {
            const int64_t b1 = b0 + KB < tiles ? b0 + KB : tiles;
            for (int64_t qg = 0; qg < padded; qg += MQ)
                for (int64_t bb = b0; bb < b1; bb++)
                    tile_bf16(xp + qg * np, (int)np, kbc + bb * KT * np, knc + bb * KT, bb * KT, rs + qg);
        }
        const int64_t r = settle(h, sn, sc, xs, rs, ktc, knc, out_d, out_i, c, cb, q0, nq, tiles, dk);
        again = r < 0 ? -1 : again + r;
    }
    free(xs);
    free(xp);
    free(rs);
    return again;
}
#endif
