/* Exact nearest-key search by squared L2 distance, with the distances kept in registers.
 *
 * For each query x (a head of one codebook) and the K keys k of that codebook it finds
 * argmin_k ||k||^2 - 2 x.k (then adds ||x||^2 for the distance). A 6-query x 16-key tile of
 * those values lives in 12 AVX2 registers while the dk dimensions stream through FMAs; each
 * finished tile is compared with the running best of its 6 queries, and only a tile that
 * holds a new best is stored and scanned. Keys are visited in index order and only a strictly
 * smaller value replaces the best, so ties go to the lowest index, as torch.argmin does, and a
 * query's result does not depend on how the work is split between threads.
 *
 * Compiled at first use by dkvb_nlp/bottleneck/native.py (no special flags: the kernel functions
 * carry their own target attribute, and dkvb_avx2_supported() says whether the CPU runs them).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MQ 6  /* queries per register tile */
#define KT 16 /* keys per register tile: two vectors of 8 floats */
#define QB 96 /* queries per task, a multiple of MQ */
#define KB 16 /* key tiles per block: 256 keys, which stay in L1 while a task's queries pass */

int dkvb_avx2_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma"))) static inline void
tile(const float *xs, int dk, const float *kt, const float *kn, int64_t kbase, float *best, int64_t *arg) {
    /* xs: MQ queries x dk, already times -2; kt: dk x KT keys; kn: KT squared key norms */
    __m256 a00 = _mm256_loadu_ps(kn), a01 = _mm256_loadu_ps(kn + 8);
    __m256 a10 = a00, a11 = a01, a20 = a00, a21 = a01, a30 = a00, a31 = a01, a40 = a00, a41 = a01,
           a50 = a00, a51 = a01;
    for (int d = 0; d < dk; d++) {
        __m256 k0 = _mm256_loadu_ps(kt + d * KT), k1 = _mm256_loadu_ps(kt + d * KT + 8), b;
        b = _mm256_broadcast_ss(xs + 0 * dk + d); a00 = _mm256_fmadd_ps(b, k0, a00); a01 = _mm256_fmadd_ps(b, k1, a01);
        b = _mm256_broadcast_ss(xs + 1 * dk + d); a10 = _mm256_fmadd_ps(b, k0, a10); a11 = _mm256_fmadd_ps(b, k1, a11);
        b = _mm256_broadcast_ss(xs + 2 * dk + d); a20 = _mm256_fmadd_ps(b, k0, a20); a21 = _mm256_fmadd_ps(b, k1, a21);
        b = _mm256_broadcast_ss(xs + 3 * dk + d); a30 = _mm256_fmadd_ps(b, k0, a30); a31 = _mm256_fmadd_ps(b, k1, a31);
        b = _mm256_broadcast_ss(xs + 4 * dk + d); a40 = _mm256_fmadd_ps(b, k0, a40); a41 = _mm256_fmadd_ps(b, k1, a41);
        b = _mm256_broadcast_ss(xs + 5 * dk + d); a50 = _mm256_fmadd_ps(b, k0, a50); a51 = _mm256_fmadd_ps(b, k1, a51);
    }
#define DKVB_UPDATE(q, v0, v1)                                                                        \
    {                                                                                                 \
        __m256 t = _mm256_broadcast_ss(best + (q));                                                   \
        int m = _mm256_movemask_ps(_mm256_cmp_ps(v0, t, _CMP_LT_OQ)) |                                \
                (_mm256_movemask_ps(_mm256_cmp_ps(v1, t, _CMP_LT_OQ)) << 8);                          \
        if (__builtin_expect(m != 0, 0)) {                                                            \
            float s[KT];                                                                              \
            _mm256_storeu_ps(s, v0);                                                                  \
            _mm256_storeu_ps(s + 8, v1);                                                              \
            for (int j = 0; j < KT; j++)                                                              \
                if (s[j] < best[q]) { best[q] = s[j]; arg[q] = kbase + j; }                           \
        }                                                                                             \
    }
    DKVB_UPDATE(0, a00, a01) DKVB_UPDATE(1, a10, a11) DKVB_UPDATE(2, a20, a21)
    DKVB_UPDATE(3, a30, a31) DKVB_UPDATE(4, a40, a41) DKVB_UPDATE(5, a50, a51)
#undef DKVB_UPDATE
}

/* h: queries, element (query i, codebook c, dim d) at h[i * sn + c * sc + d];
 * kt: (C, kp / KT, dk, KT) keys, transposed tile by tile; kn: (C, kp) squared key norms, +inf
 *     at the padding keys (kp is K rounded up to a multiple of KT);
 * out_d, out_i: (n, C) squared distance and index of the nearest key.
 * Runs tasks t0 .. t1 - 1 of C * ceil(n / QB) (task t: codebook t / tasks_per_codebook).
 * Returns 0, or -1 when the query buffer cannot be allocated. */
__attribute__((target("avx2,fma"))) int
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
            const float *x = h + (q0 + i) * sn + cb * sc;
            float xx = 0.0f;
            for (int64_t d = 0; d < dk; d++) xx += x[d] * x[d];
            const float v = best[i] + xx;
            out_d[(q0 + i) * c + cb] = v > 0.0f ? v : 0.0f;
            out_i[(q0 + i) * c + cb] = arg[i];
        }
    }
    free(xs);
    return 0;
}
