/*
 * tgemm.c - small-width fp32 GEMMs for training (see tgemm.h).
 *
 * Loop nest (per thread, over its rows of C):
 *   for kb in K by KC (256):        (nt: pack B[:, kb..] into 16-column panels)
 *     for ib in rows by MC (120):   this A block stays in L2 across the panels
 *       for j0 in N by 16:          one B panel (kc x 16) stays in L1
 *         for i0 in block by 6:     the 6x16 kernel: 12 ymm accumulators,
 *                                   2 panel loads + 6 broadcasts + 12 FMAs per k
 * Causal variants restrict k (or skip tiles) to the lower triangle of an
 * attention matrix: nn: k <= row; tn: k >= row; nt: column <= row.
 */
#include "tgemm.h"
#include "tops.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define KC 256
#define MR 6
#define NR 16

enum { MODE_NT, MODE_NN, MODE_TN };
enum { CAUSAL_NONE, CAUSAL_NN, CAUSAL_TN, CAUSAL_NT };

static bool g_force_blas;
void tr_gemm_force_blas(bool on) { g_force_blas = on; }

static bool avx2_ok(void) { return ds_cpu_avx2_fma() && !g_force_blas; }

#if defined(__x86_64__)

/* Masks for the first nr lanes of the two 8-float halves of a 16-column panel. */
#define NR_MASKS(nr)                                                                  \
    const __m256i lane_ = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                  \
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane_);              \
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((nr) - 8), lane_)

/* C row r (16 or nr columns) = alpha·(v0 | v1) (+ C if load) */
__attribute__((target("avx2,fma"), always_inline)) static inline void store_row(float *cp, __m256 v0, __m256 v1,
                                                                               __m256 al, bool load, int nr,
                                                                               __m256i m0, __m256i m1) {
    v0 = _mm256_mul_ps(v0, al);
    v1 = _mm256_mul_ps(v1, al);
    if (nr == NR) {
        if (load) { v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp)); v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp + 8)); }
        _mm256_storeu_ps(cp, v0);
        _mm256_storeu_ps(cp + 8, v1);
    } else {
        if (load) { v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cp, m0)); v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cp + 8, m1)); }
        _mm256_maskstore_ps(cp, m0, v0);
        _mm256_maskstore_ps(cp + 8, m1, v1);
    }
}

/* An R x 16 tile (R = 1..6): C (+)= alpha · Σ_{k<kc} a(r, k) · b(k, :)
 *   a(r, k) = a[r·ars + k·aks],  b(k, j) = b[k·bks + j]
 * 2·R named accumulators so they stay in ymm registers. bmask: only nr
 * columns of b are valid (masked loads). */
#define ROW_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0; const float *a##r = a + (r) * ars;
#define ROW_FMA(r) { __m256 x = _mm256_broadcast_ss(a##r); a##r += aks; \
                     c##r##0 = _mm256_fmadd_ps(x, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(x, b1, c##r##1); }
#define ROW_STORE(r) store_row(c + (r) * ldc, c##r##0, c##r##1, al, load, nr, m0, m1);
#define DEFINE_KERN(R, DECL, FMA, STORE)                                                                   \
    __attribute__((target("avx2,fma"))) static void kern##R(const float *a, int64_t ars, int64_t aks,     \
                                                            const float *b, int64_t bks, int64_t kc, float *c, \
                                                            int64_t ldc, int nr, float alpha, bool load,     \
                                                            bool bmask) {                                    \
        NR_MASKS(nr);                                                                                      \
        DECL                                                                                               \
        if (bmask) {                                                                                       \
            for (int64_t k = 0; k < kc; k++, b += bks) {                                                   \
                __m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1);                 \
                FMA                                                                                        \
            }                                                                                              \
        } else {                                                                                           \
            for (int64_t k = 0; k < kc; k++, b += bks) {                                                   \
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);                               \
                FMA                                                                                        \
            }                                                                                              \
        }                                                                                                  \
        __m256 al = _mm256_set1_ps(alpha);                                                                 \
        STORE                                                                                              \
    }
DEFINE_KERN(6, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3) ROW_DECL(4) ROW_DECL(5),
            ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5))
DEFINE_KERN(5, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3) ROW_DECL(4),
            ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4))
DEFINE_KERN(4, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3), ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3))
DEFINE_KERN(3, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2), ROW_FMA(0) ROW_FMA(1) ROW_FMA(2),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2))
DEFINE_KERN(2, ROW_DECL(0) ROW_DECL(1), ROW_FMA(0) ROW_FMA(1), ROW_STORE(0) ROW_STORE(1))
DEFINE_KERN(1, ROW_DECL(0), ROW_FMA(0), ROW_STORE(0))

static void kern_dispatch(const float *a, int64_t ars, int64_t aks, const float *b, int64_t bks, int64_t kc, float *c,
                          int64_t ldc, int mr, int nr, float alpha, bool load, bool bmask) {
    switch (mr) {
    case 6: kern6(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    case 5: kern5(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    case 4: kern4(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    case 3: kern3(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    case 2: kern2(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    default: kern1(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load, bmask); break;
    }
}

typedef struct {
    int mode, causal;
    float *C; int64_t ldc;
    const float *A; int64_t lda;
    const float *B; int64_t ldb;
    int64_t M, N, K;
    float alpha;
    bool acc;
} gemm_job;

#define MC 120   /* rows of A per block: MC x KC floats (120 KB) stay in L2 across the panels */

__attribute__((target("avx2,fma"))) static void gemm_rows(const gemm_job *g, int64_t m0, int64_t m1, int tid) {
    int64_t n_pan = (g->N + NR - 1) / NR;
    float *packed = g->mode == MODE_NT ? tr_scratch(tid, 2, (size_t)(n_pan * NR * KC)) : NULL;
    for (int64_t kb = 0; kb < g->K; kb += KC) {
        int64_t kc = DS_MIN(KC, g->K - kb);
        if (packed)   /* B[:, kb..kb+kc] as panels [n_pan][kc][16], zero-padded */
            for (int64_t p = 0; p < n_pan; p++)
                for (int64_t k = 0; k < kc; k++)
                    for (int jj = 0; jj < NR; jj++) {
                        int64_t j = p * NR + jj;
                        packed[(p * kc + k) * NR + jj] = j < g->N ? g->B[j * g->ldb + kb + k] : 0.0f;
                    }
        for (int64_t ib = m0; ib < m1; ib += MC) {
            int64_t ie = DS_MIN(m1, ib + MC);
            for (int64_t j0 = 0; j0 < g->N; j0 += NR) {
                int nr = (int)DS_MIN(NR, g->N - j0);
                const float *b;
                int64_t bks;
                bool bmask = false;
                if (packed) { b = packed + (j0 / NR) * kc * NR; bks = NR; }
                else { b = g->B + kb * g->ldb + j0; bks = g->ldb; bmask = nr < NR; }
                for (int64_t i0 = ib; i0 < ie; i0 += MR) {
                    int mr = (int)DS_MIN(MR, ie - i0);
                    const float *a;
                    int64_t ars, aks, k0 = 0, k1 = kc;
                    if (g->mode == MODE_TN) { a = g->A + kb * g->lda + i0; ars = 1; aks = g->lda; }
                    else { a = g->A + i0 * g->lda + kb; ars = g->lda; aks = 1; }
                    bool load = g->acc || kb > 0;
                    if (g->causal == CAUSAL_NT) {
                        if (j0 > i0 + mr - 1) continue;   /* tile entirely above the diagonal */
                    } else if (g->causal == CAUSAL_NN) {
                        k1 = DS_MAX(0, DS_MIN(kc, i0 + mr - kb));   /* A[i][k] = 0 for k > i */
                    } else if (g->causal == CAUSAL_TN) {
                        k0 = DS_MAX(0, DS_MIN(kc, i0 - kb));   /* A[k][i] = 0 for k < i */
                    }
                    float *c = g->C + i0 * g->ldc + j0;
                    if (k1 <= k0) {
                        if (!load)   /* nothing to add: C = 0 */
                            for (int r = 0; r < mr; r++) memset(c + r * g->ldc, 0, (size_t)nr * sizeof(float));
                        continue;
                    }
                    kern_dispatch(a + k0 * aks, ars, aks, b + k0 * bks, bks, k1 - k0, c, g->ldc, mr, nr, g->alpha, load,
                                  bmask);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- dense (linear layers)
 *
 * B is packed into 16-column panels [kc][16] (zero-padded) for every mode;
 * nt packs with an 8x8 AVX2 transpose. nt/nn: A rows are read in place
 * (a 6-row tile, 6·kc floats, stays in L1 while it meets every panel);
 * tn: A's columns are packed into 6-row micro-panels [kc][6]. K is blocked
 * by DKC so the packed B block stays in L2. */

#define DKC 384

/* the full 6x16 tile: C (+)= Σ_k a(r, k) · b(k, :), a(r, k) = a[r·ars + k·aks],
 * b packed [kc][16]; alpha applied at the store */
__attribute__((target("avx2,fma"), always_inline)) static inline void ukr6x16(const float *a, int64_t ars, int64_t aks,
                                                                             const float *b, int64_t kc, float *c,
                                                                             int64_t ldc, float alpha, bool load) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + ars, *a2 = a + 2 * ars, *a3 = a + 3 * ars, *a4 = a + 4 * ars, *a5 = a + 5 * ars;
#define UKR_STEP(k)                                                                                            \
    {                                                                                                          \
        __m256 b0 = _mm256_loadu_ps(b + (k) * 16), b1 = _mm256_loadu_ps(b + (k) * 16 + 8), x;                  \
        x = _mm256_broadcast_ss(a0 + (k) * aks); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01); \
        x = _mm256_broadcast_ss(a1 + (k) * aks); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11); \
        x = _mm256_broadcast_ss(a2 + (k) * aks); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21); \
        x = _mm256_broadcast_ss(a3 + (k) * aks); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31); \
        x = _mm256_broadcast_ss(a4 + (k) * aks); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41); \
        x = _mm256_broadcast_ss(a5 + (k) * aks); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51); \
    }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        UKR_STEP(0) UKR_STEP(1) UKR_STEP(2) UKR_STEP(3)
        a0 += 4 * aks; a1 += 4 * aks; a2 += 4 * aks; a3 += 4 * aks; a4 += 4 * aks; a5 += 4 * aks;
        b += 64;
    }
    for (; k < kc; k++) {
        UKR_STEP(0)
        a0 += aks; a1 += aks; a2 += aks; a3 += aks; a4 += aks; a5 += aks;
        b += 16;
    }
#undef UKR_STEP
    __m256 al = _mm256_set1_ps(alpha);
    const __m256i mz = _mm256_setzero_si256();
    store_row(c, c00, c01, al, load, NR, mz, mz);
    store_row(c + ldc, c10, c11, al, load, NR, mz, mz);
    store_row(c + 2 * ldc, c20, c21, al, load, NR, mz, mz);
    store_row(c + 3 * ldc, c30, c31, al, load, NR, mz, mz);
    store_row(c + 4 * ldc, c40, c41, al, load, NR, mz, mz);
    store_row(c + 5 * ldc, c50, c51, al, load, NR, mz, mz);
}

__attribute__((target("avx2,fma"))) static void ukr_direct(const float *a, int64_t lda, const float *b, int64_t kc,
                                                         float *c, int64_t ldc, float alpha, bool load) {
    ukr6x16(a, lda, 1, b, kc, c, ldc, alpha, load);
}

__attribute__((target("avx2,fma"))) static void ukr_cols(const float *a, int64_t lda, const float *b, int64_t kc,
                                                       float *c, int64_t ldc, float alpha, bool load) {
    ukr6x16(a, 1, lda, b, kc, c, ldc, alpha, load);
}

__attribute__((target("avx2,fma"))) static void ukr_packed(const float *a, const float *b, int64_t kc, float *c,
                                                         int64_t ldc, float alpha, bool load) {
    ukr6x16(a, 1, MR, b, kc, c, ldc, alpha, load);
}

/* 8x8 transpose: out row j (stride ldo) = column j of the 8 rows at in (stride ldi) */
__attribute__((target("avx2,fma"))) static void transpose8x8(float *out, int64_t ldo, const float *in, int64_t ldi) {
    __m256 r0 = _mm256_loadu_ps(in), r1 = _mm256_loadu_ps(in + ldi), r2 = _mm256_loadu_ps(in + 2 * ldi);
    __m256 r3 = _mm256_loadu_ps(in + 3 * ldi), r4 = _mm256_loadu_ps(in + 4 * ldi), r5 = _mm256_loadu_ps(in + 5 * ldi);
    __m256 r6 = _mm256_loadu_ps(in + 6 * ldi), r7 = _mm256_loadu_ps(in + 7 * ldi);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3);
    __m256 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + ldo, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * ldo, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * ldo, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * ldo, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * ldo, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * ldo, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * ldo, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* B block k in [kb, kb+kc), all N columns -> panels [n_pan][kc][16], zero-padded.
 * trans: b(k, j) = B[j·ldb + k] (nt), else B[k·ldb + j]. */
__attribute__((target("avx2,fma"))) static void pack_b(float *bp, const float *B, int64_t ldb, bool trans, int64_t N,
                                                     int64_t kb, int64_t kc) {
    int64_t n_pan = (N + NR - 1) / NR;
    for (int64_t p = 0; p < n_pan; p++) {
        float *dst = bp + p * kc * NR;
        int64_t j0 = p * NR, nr = DS_MIN(NR, N - j0);
        if (!trans) {   /* done below, row by row */
            if (nr < NR)
                for (int64_t k = 0; k < kc; k++)
                    for (int64_t jj = 0; jj < NR; jj++) dst[k * NR + jj] = jj < nr ? B[(kb + k) * ldb + j0 + jj] : 0.0f;
            continue;
        }
        const float *src = B + j0 * ldb + kb;   /* row jj of the panel = B row j0 + jj, from column kb */
        int64_t k = 0;
        if (nr == NR)
            for (; k + 8 <= kc; k += 8) {
                transpose8x8(dst + k * NR, NR, src + k, ldb);
                transpose8x8(dst + k * NR + 8, NR, src + 8 * ldb + k, ldb);
            }
        for (; k < kc; k++)
            for (int64_t jj = 0; jj < NR; jj++) dst[k * NR + jj] = jj < nr ? src[jj * ldb + k] : 0.0f;
    }
    if (!trans)   /* full panels: read each row of B once, in order (streams well from memory) */
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (kb + k) * ldb;
            for (int64_t p = 0; p < N / NR; p++) {
                _mm256_storeu_ps(bp + (p * kc + k) * NR, _mm256_loadu_ps(src + p * NR));
                _mm256_storeu_ps(bp + (p * kc + k) * NR + 8, _mm256_loadu_ps(src + p * NR + 8));
            }
        }
}

/* tn: A block rows k in [kb, kb+kc), columns i in [m0, m1) -> one micro-panel
 * [kc][6] per 6-column tile, tile t at ap + t·(6·kc + 2), zero-padded columns;
 * causal: rows k < k0(tile) are skipped (never read). Row by row, so A
 * streams from memory in order; each k stores 8 lanes, the next k (or the
 * tile's 2 floats of slack) taking the extra 2; lanes past the tile are
 * masked off the load, so nothing outside A's columns is read. */
__attribute__((target("avx2,fma"))) static void pack_a_tn(float *ap, const float *A, int64_t lda, int64_t m0, int64_t m1,
                                                        int64_t kb, int64_t kc, bool causal) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i full = _mm256_cmpgt_epi32(_mm256_set1_epi32(MR), lane);
    int64_t nt = (m1 - m0 + MR - 1) / MR, stride = MR * kc + 2;
    int last = (int)(m1 - m0 - (nt - 1) * MR);
    const __m256i lmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last), lane);
    for (int64_t k = 0; k < kc; k++) {
        const float *src = A + (kb + k) * lda + m0;
        int64_t t_end = nt;
        if (causal) t_end = DS_MIN(nt, (kb + k - m0) / MR + 1);   /* tiles with i0 <= kb + k */
        for (int64_t t = 0; t < t_end; t++)
            _mm256_storeu_ps(ap + t * stride + k * MR, _mm256_maskload_ps(src + t * MR, t == nt - 1 ? lmask : full));
    }
}

__attribute__((target("avx2,fma"))) static void dense_rows(const gemm_job *g, int64_t m0, int64_t m1, int tid) {
    int64_t n_pan = (g->N + NR - 1) / NR;
    int64_t kcap = DS_MIN(DKC, g->K);
    float *bp = tr_scratch(tid, 2, (size_t)(n_pan * NR * kcap));
    static int tn_direct = -1;
    if (tn_direct < 0) tn_direct = getenv("DS_TN_DIRECT") ? atoi(getenv("DS_TN_DIRECT")) : 0;
    bool pack_a = g->mode == MODE_TN && n_pan > tn_direct;
    float *ap = pack_a ? tr_scratch(tid, 3, (size_t)(((m1 - m0 + MR - 1) / MR) * (MR * kcap + 2))) : NULL;
    for (int64_t kb = 0; kb < g->K; kb += DKC) {
        int64_t kc = DS_MIN(DKC, g->K - kb);
        bool load = g->acc || kb > 0;
        pack_b(bp, g->B, g->ldb, g->mode == MODE_NT, g->N, kb, kc);
        if (ap) pack_a_tn(ap, g->A, g->lda, m0, m1, kb, kc, g->causal == CAUSAL_TN);
        for (int64_t i0 = m0; i0 < m1; i0 += MR) {
            int mr = (int)DS_MIN(MR, m1 - i0);
            const float *a;
            int64_t ars, aks, k0 = 0, k1 = kc;
            if (ap) { a = ap + ((i0 - m0) / MR) * (MR * kc + 2); ars = 1; aks = MR; }
            else if (g->mode == MODE_TN) { a = g->A + kb * g->lda + i0; ars = 1; aks = g->lda; }
            else { a = g->A + i0 * g->lda + kb; ars = g->lda; aks = 1; }
            if (g->causal == CAUSAL_NN) k1 = DS_MAX(0, DS_MIN(kc, i0 + mr - kb));   /* A[i][k] = 0 for k > i */
            else if (g->causal == CAUSAL_TN) k0 = DS_MAX(0, DS_MIN(kc, i0 - kb));   /* A[k][i] = 0 for k < i */
            /* software prefetch, spread over this tile's panels: the next tile's A rows (nt/nn) and C rows */
            int64_t nx = i0 + MR < m1 ? DS_MIN(MR, m1 - i0 - MR) : 0;
            int64_t a_lines = g->mode == MODE_TN ? 0 : (kc * 4 + 63) / 64, c_lines = (g->N * 4 + 63) / 64;
            int64_t pf_total = nx * (a_lines + c_lines), pf_done = 0;
            for (int64_t p = 0; p < n_pan; p++) {
                int64_t j0 = p * NR;
                for (int64_t pf_end = pf_total * (p + 1) / n_pan; pf_done < pf_end; pf_done++) {
                    int64_t r = pf_done / (a_lines + c_lines), l = pf_done % (a_lines + c_lines);
                    if (l < a_lines) __builtin_prefetch(g->A + (i0 + MR + r) * g->lda + kb + l * 16, 0, 3);
                    else __builtin_prefetch(g->C + (i0 + MR + r) * g->ldc + (l - a_lines) * 16, 1, 3);
                }
                if (g->causal == CAUSAL_NT && j0 > i0 + mr - 1) break;   /* tiles entirely above the diagonal */
                int nr = (int)DS_MIN(NR, g->N - j0);
                const float *b = bp + p * kc * NR;
                float *c = g->C + i0 * g->ldc + j0;
                if (k1 <= k0) {
                    if (!load)   /* nothing to add: C = 0 */
                        for (int r = 0; r < mr; r++) memset(c + r * g->ldc, 0, (size_t)nr * sizeof(float));
                    continue;
                }
                if (mr == MR && nr == NR) {
                    if (ap) ukr_packed(a + k0 * MR, b + k0 * NR, k1 - k0, c, g->ldc, g->alpha, load);
                    else if (g->mode == MODE_TN) ukr_cols(a + k0 * aks, aks, b + k0 * NR, k1 - k0, c, g->ldc, g->alpha, load);
                    else ukr_direct(a + k0, ars, b + k0 * NR, k1 - k0, c, g->ldc, g->alpha, load);
                } else {
                    kern_dispatch(a + k0 * aks, ars, aks, b + k0 * NR, NR, k1 - k0, c, g->ldc, mr, nr, g->alpha, load,
                                  false);
                }
            }
        }
    }
}

static void dense_worker(void *vc, int64_t t0, int64_t t1, int tid) {
    const gemm_job *g = vc;
    dense_rows(g, t0 * MR, DS_MIN(g->M, t1 * MR), tid);
}

static void gemm_worker(void *vc, int64_t t0, int64_t t1, int tid) {
    const gemm_job *g = vc;
    gemm_rows(g, t0 * MR, DS_MIN(g->M, t1 * MR), tid);
}

#endif

static void run(gemm_job *g) {
    if (g->M <= 0 || g->N <= 0) return;
#if defined(__x86_64__)
    if (avx2_ok() && g->K > 0) {
        int64_t tiles = (g->M + MR - 1) / MR;
        int64_t work = 2 * MR * g->N * g->K;   /* flops per row tile */
        static int old_attn = -1;
        if (old_attn < 0) old_attn = getenv("DS_OLD_ATTN") != NULL;
        ds_par_for(tiles, DS_MAX(1, (1 << 20) / DS_MAX(work, 1)), g->causal == CAUSAL_NONE || !old_attn ? dense_worker : gemm_worker, g);
        return;
    }
#endif
    /* fallback: OpenBLAS through ds_sgemm (dense; causal entries computed in full) */
    bool ta = g->mode == MODE_TN, tb = g->mode == MODE_NT;
    ds_sgemm(ta, tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->acc ? 1.0f : 0.0f, g->C, g->ldc);
}

void tr_gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_NT, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc };
    run(&g);
}

void tr_gemm_nn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_NN, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc };
    run(&g);
}

void tr_gemm_tn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_TN, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc };
    run(&g);
}

void tr_gemm_nt_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t K, float alpha) {
    gemm_job g = { MODE_NT, CAUSAL_NT, C, ldc, A, lda, B, ldb, T, T, K, alpha, false };
    run(&g);
}

void tr_gemm_nn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc) {
    gemm_job g = { MODE_NN, CAUSAL_NN, C, ldc, A, lda, B, ldb, T, N, T, alpha, acc };
    run(&g);
}

void tr_gemm_tn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc) {
    gemm_job g = { MODE_TN, CAUSAL_TN, C, ldc, A, lda, B, ldb, T, N, T, alpha, acc };
    run(&g);
}
