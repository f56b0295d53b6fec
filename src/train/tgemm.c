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

static bool avx2_ok(void) {
#if defined(__x86_64__)
    static int ok = -1;
    if (ok < 0) { __builtin_cpu_init(); ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
    return ok == 1 && !g_force_blas;
#else
    return false;
#endif
}

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
        ds_par_for(tiles, DS_MAX(1, (1 << 20) / DS_MAX(work, 1)), gemm_worker, g);
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
