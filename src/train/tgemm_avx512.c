/*
 * tgemm_avx512.c - the training GEMMs' AVX-512 row workers (tgemm_impl.h):
 *
 *   fp32: 6x32 register tiles, 12 zmm sums, B packed into 32-column panels
 *         [kc][32]; per element the same FMA sequence as the AVX2 6x16
 *         kernel (k ascending from zero, then · alpha, + C), so the same
 *         bits at either level (tested). A is never packed: nt/nn read
 *         a tile's rows in place, tn the six adjacent floats of each k row
 *         (a packed copy cost more than the strided reads it saved).
 *   bf16: 6x32 tiles of vdpbf16ps (one instruction multiplies a k pair:
 *         twice the fp32 FMA's work), fp32 sums. A and B are rounded to
 *         bf16 (nearest even) as they are packed: B into panels of k pairs
 *         [kc/2][32] (uint32 = bf16 of k even | k odd << 16), A per 6-row
 *         tile into [6][kc/2 + 16] (nt/nn) or [kc/2][8] (tn); an odd k
 *         tail pairs with zeros.
 *
 * Loop nest as in tgemm.c: per K block of TG_DKC pack B (every thread its
 * own copy), per 6-row tile of this thread's rows (A tile in L1), per
 * panel (B from L2). Causal variants restrict k or skip panels exactly as
 * tgemm.c does, reading A only inside the band tgemm.h allows (the bf16
 * tile packers never read past the tile's own k range).
 *
 * Also here: the frozen-weight panel cache (tgemm.h, tr_gemm_freeze_*):
 * nt/nn products (fp32 or bf16) whose B is a frozen weight read B's
 * panels, packed once per freeze for all K blocks in the layout above,
 * instead of packing them per call.
 */
#include "tgemm_impl.h"
#include "tops.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MR TG_MR
#define NB 32

static inline __mmask16 lanes16(int64_t n) { return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }
static inline __mmask8 lanes8(int64_t n) { return n <= 0 ? 0 : n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << n) - 1); }

/* C row (its first nr <= 32 columns) = alpha · (v0 | v1) (+ C if load) */
static inline void store_row(float *c, __m512 v0, __m512 v1, __m512 al, bool load, __mmask16 m0, __mmask16 m1) {
    v0 = _mm512_mul_ps(v0, al);
    v1 = _mm512_mul_ps(v1, al);
    if (load) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
}

#define T_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0;
#define T_STORE(r) store_row(c + (r) * ldc, c##r##0, c##r##1, al, load, m0, m1);
/* 16-wide tiles (a panel's last nr <= 16 columns: half the work of a 32-wide one) */
#define U_DECL(r) __m512 c##r##0 = _mm512_setzero_ps();
#define U_STORE(r) { __m512 v = _mm512_mul_ps(c##r##0, al);                                         \
                     if (load) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m0, c + (r) * ldc));      \
                     _mm512_mask_storeu_ps(c + (r) * ldc, m0, v); }
#define T_EPI                                                                                     \
    __m512 al = _mm512_set1_ps(alpha);                                                            \
    __mmask16 m0 = lanes16(nr), m1 = lanes16(nr - 16);

/* Software prefetch of the next row tile's A rows (a_lines lines per row,
 * from a_next, stride lda; 0 for tn) and C rows (c_lines lines per row),
 * spread evenly over the n_pan panels of the current tile (as tgemm.c does:
 * without it wide C rows miss). Call with p = 0..n_pan-1. */
typedef struct { int64_t total, done, r, l, a_lines, c_lines; } prefetcher;
static inline void pf_init(prefetcher *f, int64_t nx, int64_t a_lines, int64_t c_lines) {
    f->total = nx * (a_lines + c_lines); f->done = f->r = f->l = 0; f->a_lines = a_lines; f->c_lines = c_lines;
}
static inline void pf_step(prefetcher *f, int64_t p, int64_t n_pan, const float *a_next, int64_t lda,
                           const float *c_next, int64_t ldc) {
    for (int64_t end = f->total * (p + 1) / n_pan; f->done < end; f->done++) {
        if (f->l < f->a_lines) __builtin_prefetch(a_next + f->r * lda + f->l * 16, 0, 3);
        else __builtin_prefetch(c_next + f->r * ldc + (f->l - f->a_lines) * 16, 1, 3);
        if (++f->l == f->a_lines + f->c_lines) { f->l = 0; f->r++; }
    }
}

/* ---------------------------------------------------------------- fp32 */

/* An R x 32 tile: C (+)= alpha · Σ_{k<kc} a(r, k) · b(k, :), a(r, k) = a[r·ars + k·aks],
 * b(k, j) = b[k·32 + j] (packed, zero-padded: all 32 read, nr stored) */
#define F_FMA(r) { __m512 x = _mm512_set1_ps(a[(r) * ars]);                                        \
                   c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(x, b1, c##r##1); }
#define DEF_F32(R, DECL, FMA, STORE)                                                              \
    static void f32_kern##R(const float *a, int64_t ars, int64_t aks, const float *b, int64_t kc, float *c, \
                            int64_t ldc, int nr, float alpha, bool load) {                        \
        DECL                                                                                      \
        for (int64_t k = 0; k < kc; k++, a += aks, b += NB) {                                     \
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);                         \
            FMA                                                                                   \
        }                                                                                         \
        T_EPI STORE                                                                               \
    }
DEF_F32(6, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3) T_DECL(4) T_DECL(5),
        F_FMA(0) F_FMA(1) F_FMA(2) F_FMA(3) F_FMA(4) F_FMA(5),
        T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3) T_STORE(4) T_STORE(5))
DEF_F32(5, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3) T_DECL(4), F_FMA(0) F_FMA(1) F_FMA(2) F_FMA(3) F_FMA(4),
        T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3) T_STORE(4))
DEF_F32(4, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3), F_FMA(0) F_FMA(1) F_FMA(2) F_FMA(3),
        T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3))
DEF_F32(3, T_DECL(0) T_DECL(1) T_DECL(2), F_FMA(0) F_FMA(1) F_FMA(2), T_STORE(0) T_STORE(1) T_STORE(2))
DEF_F32(2, T_DECL(0) T_DECL(1), F_FMA(0) F_FMA(1), T_STORE(0) T_STORE(1))
DEF_F32(1, T_DECL(0), F_FMA(0), T_STORE(0))

#define G_FMA(r) { c##r##0 = _mm512_fmadd_ps(_mm512_set1_ps(a[(r) * ars]), b0, c##r##0); }
#define DEF_F32H(R, DECL, FMA, STORE)                                                             \
    static void f32_half##R(const float *a, int64_t ars, int64_t aks, const float *b, int64_t kc, float *c, \
                            int64_t ldc, int nr, float alpha, bool load) {                        \
        DECL                                                                                      \
        for (int64_t k = 0; k < kc; k++, a += aks, b += NB) {                                     \
            __m512 b0 = _mm512_loadu_ps(b);                                                       \
            FMA                                                                                   \
        }                                                                                         \
        T_EPI (void)m1; STORE                                                                     \
    }
DEF_F32H(6, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3) U_DECL(4) U_DECL(5),
         G_FMA(0) G_FMA(1) G_FMA(2) G_FMA(3) G_FMA(4) G_FMA(5),
         U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3) U_STORE(4) U_STORE(5))
DEF_F32H(5, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3) U_DECL(4), G_FMA(0) G_FMA(1) G_FMA(2) G_FMA(3) G_FMA(4),
         U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3) U_STORE(4))
DEF_F32H(4, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3), G_FMA(0) G_FMA(1) G_FMA(2) G_FMA(3),
         U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3))
DEF_F32H(3, U_DECL(0) U_DECL(1) U_DECL(2), G_FMA(0) G_FMA(1) G_FMA(2), U_STORE(0) U_STORE(1) U_STORE(2))
DEF_F32H(2, U_DECL(0) U_DECL(1), G_FMA(0) G_FMA(1), U_STORE(0) U_STORE(1))
DEF_F32H(1, U_DECL(0), G_FMA(0), U_STORE(0))

static void f32_kern(int mr, const float *a, int64_t ars, int64_t aks, const float *b, int64_t kc, float *c,
                     int64_t ldc, int nr, float alpha, bool load) {
    if (nr <= 16) {
        switch (mr) {
        case 6: f32_half6(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        case 5: f32_half5(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        case 4: f32_half4(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        case 3: f32_half3(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        case 2: f32_half2(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        default: f32_half1(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
        }
        return;
    }
    switch (mr) {
    case 6: f32_kern6(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    case 5: f32_kern5(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    case 4: f32_kern4(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    case 3: f32_kern3(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    case 2: f32_kern2(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    default: f32_kern1(a, ars, aks, b, kc, c, ldc, nr, alpha, load); break;
    }
}

/* 16x16 transpose: out row j (stride ldo) = column j of the 16 rows at in (stride ldi).
 * Pure data movement in three shuffle stages (no gathers: a 16-lane gather
 * costs Zen 4 about as much as 16 loads):
 *   1. unpack lo/hi of row pairs:   per 128-bit lane  a0 b0 a1 b1 | a2 b2 a3 b3
 *   2. shuffle_ps of pair pairs:    u[4i+c] lane L = column 4L+c of rows 4i..4i+3
 *   3. 4x4 transpose of 128-bit lanes across the four row groups i:
 *      out row 4L+c = [u[c].L, u[4+c].L, u[8+c].L, u[12+c].L] */
static void transpose16(float *out, int64_t ldo, const float *in, int64_t ldi) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        __m512 a = _mm512_loadu_ps(in + (2 * i) * ldi), b = _mm512_loadu_ps(in + (2 * i + 1) * ldi);
        t[2 * i] = _mm512_unpacklo_ps(a, b);
        t[2 * i + 1] = _mm512_unpackhi_ps(a, b);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        __m512 w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), w1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), w3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        _mm512_storeu_ps(out + (0 + c) * ldo, _mm512_shuffle_f32x4(w0, w2, 0x88));
        _mm512_storeu_ps(out + (4 + c) * ldo, _mm512_shuffle_f32x4(w0, w2, 0xDD));
        _mm512_storeu_ps(out + (8 + c) * ldo, _mm512_shuffle_f32x4(w1, w3, 0x88));
        _mm512_storeu_ps(out + (12 + c) * ldo, _mm512_shuffle_f32x4(w1, w3, 0xDD));
    }
}

/* B block k in [kb, kb+kc), all N columns -> panels [n_pan][kc][32], zero-padded.
 * trans: b(k, j) = B[j·ldb + k] (nt), else B[k·ldb + j]. */
static void pack_b_f32(float *bp, const float *B, int64_t ldb, bool trans, int64_t N, int64_t kb, int64_t kc) {
    int64_t n_pan = (N + NB - 1) / NB;
    if (!trans) {
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (kb + k) * ldb;
            for (int64_t p = 0; p < n_pan; p++) {
                int64_t j0 = p * NB;
                float *dst = bp + (p * kc + k) * NB;
                _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(lanes16(N - j0), src + j0));
                _mm512_storeu_ps(dst + 16, _mm512_maskz_loadu_ps(lanes16(N - j0 - 16), src + j0 + 16));
            }
        }
        return;
    }
    for (int64_t p = 0; p < n_pan; p++) {
        float *dst = bp + p * kc * NB;
        for (int h = 0; h < 2; h++) {
            int64_t j0 = p * NB + h * 16, nr = DS_MIN(16, N - j0);
            const float *src = B + j0 * ldb + kb;
            int64_t k = 0;
            if (nr == 16)
                for (; k + 16 <= kc; k += 16) {
                    if (k + 32 <= kc)   /* the next block's 16 lines: the rows are 16 streams */
                        for (int i = 0; i < 16; i++) _mm_prefetch((const char *)(src + i * ldb + k + 16), _MM_HINT_T0);
                    transpose16(dst + k * NB + h * 16, NB, src + k, ldb);
                }
            for (; k < kc; k++)
                for (int64_t jj = 0; jj < 16; jj++) dst[k * NB + h * 16 + jj] = jj < nr ? src[jj * ldb + k] : 0.0f;
        }
    }
}

void tg_rows_f32_avx512(const gemm_job *g, int64_t m0, int64_t m1, int tid) {
    int64_t n_pan = (g->N + NB - 1) / NB;
    int64_t kcap = DS_MIN(TG_DKC, g->K);
    float *bp = g->bpack ? NULL : tr_scratch(tid, 2, (size_t)(n_pan * NB * kcap));
    bool tn = g->mode == MODE_TN;
    if (!bp && !g->bpack) return;
    for (int64_t kb = 0; kb < g->K; kb += TG_DKC) {
        int64_t kc = DS_MIN(TG_DKC, g->K - kb);
        bool load = g->acc || kb > 0;
        if (g->bpack) bp = (float *)g->bpack + kb * n_pan * NB;   /* read only */
        else pack_b_f32(bp, g->B, g->ldb, g->mode == MODE_NT, g->N, kb, kc);
        for (int64_t i0 = m0; i0 < m1; i0 += MR) {
            int mr = (int)DS_MIN(MR, m1 - i0);
            int64_t k0 = 0, k1 = kc;
            if (g->causal == CAUSAL_NN) k1 = DS_MAX(0, DS_MIN(kc, i0 + mr - kb));   /* A[i][k] = 0 for k > i */
            else if (g->causal == CAUSAL_TN) k0 = DS_MAX(0, DS_MIN(kc, i0 - kb));   /* A[k][i] = 0 for k < i */
            const float *a;
            int64_t ars, aks;
            if (tn) {   /* a(r, k) = A[(kb + k)·lda + i0 + r]: six adjacent floats of row k, read in place */
                a = g->A + kb * g->lda + i0; ars = 1; aks = g->lda;
            } else {
                a = g->A + i0 * g->lda + kb; ars = g->lda; aks = 1;
            }
            prefetcher f;
            int64_t nx = i0 + MR < m1 ? DS_MIN(MR, m1 - i0 - MR) : 0;
            pf_init(&f, nx, tn || n_pan < 2 ? 0 : (kc * 4 + 63) / 64, (g->N * 4 + 63) / 64);
            for (int64_t p = 0; p < n_pan; p++) {
                int64_t j0 = p * NB;
                pf_step(&f, p, n_pan, g->A + (i0 + MR) * g->lda + kb, g->lda, g->C + (i0 + MR) * g->ldc, g->ldc);
                if (g->causal == CAUSAL_NT && j0 > i0 + mr - 1) break;   /* panels entirely above the diagonal */
                int nr = (int)DS_MIN(NB, g->N - j0);
                /* the diagonal panel: only its columns <= the tile's last row (those past it are
                 * unspecified): with 16 or fewer, the 16-wide kernel does half the work */
                if (g->causal == CAUSAL_NT) nr = (int)DS_MIN(nr, i0 + mr - j0);
                float *c = g->C + i0 * g->ldc + j0;
                if (k1 <= k0) {
                    if (!load)
                        for (int r = 0; r < mr; r++) memset(c + r * g->ldc, 0, (size_t)nr * sizeof(float));
                    continue;
                }
                f32_kern(mr, a + k0 * aks, ars, aks, bp + (p * kc + k0) * NB, k1 - k0, c, g->ldc, nr, g->alpha, load);
            }
        }
    }
}

/* ---------------------------------------------------------------- bf16 */

/* An R x 32 tile over np k pairs: a(r, p) = a[r·ars + p·aks] (a bf16 pair as
 * uint32), b(p, :) = b[p·32 .. p·32 + 32) */
#define H_DP(r) { __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[(r) * ars]);                     \
                  c##r##0 = _mm512_dpbf16_ps(c##r##0, x, b0); c##r##1 = _mm512_dpbf16_ps(c##r##1, x, b1); }
#define DEF_BF16(R, DECL, DP, STORE)                                                              \
    static void bf16_kern##R(const uint32_t *a, int64_t ars, int64_t aks, const uint32_t *b, int64_t np, \
                             float *c, int64_t ldc, int nr, float alpha, bool load) {             \
        DECL                                                                                      \
        for (int64_t p = 0; p < np; p++, a += aks, b += NB) {                                     \
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16); \
            DP                                                                                    \
        }                                                                                         \
        T_EPI STORE                                                                               \
    }
DEF_BF16(6, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3) T_DECL(4) T_DECL(5),
         H_DP(0) H_DP(1) H_DP(2) H_DP(3) H_DP(4) H_DP(5),
         T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3) T_STORE(4) T_STORE(5))
DEF_BF16(5, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3) T_DECL(4), H_DP(0) H_DP(1) H_DP(2) H_DP(3) H_DP(4),
         T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3) T_STORE(4))
DEF_BF16(4, T_DECL(0) T_DECL(1) T_DECL(2) T_DECL(3), H_DP(0) H_DP(1) H_DP(2) H_DP(3),
         T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3))
DEF_BF16(3, T_DECL(0) T_DECL(1) T_DECL(2), H_DP(0) H_DP(1) H_DP(2), T_STORE(0) T_STORE(1) T_STORE(2))
DEF_BF16(2, T_DECL(0) T_DECL(1), H_DP(0) H_DP(1), T_STORE(0) T_STORE(1))
DEF_BF16(1, T_DECL(0), H_DP(0), T_STORE(0))

#define H_DPH(r) { c##r##0 = _mm512_dpbf16_ps(c##r##0, (__m512bh)_mm512_set1_epi32((int)a[(r) * ars]), b0); }
#define DEF_BF16H(R, DECL, DP, STORE)                                                             \
    static void bf16_half##R(const uint32_t *a, int64_t ars, int64_t aks, const uint32_t *b, int64_t np, \
                             float *c, int64_t ldc, int nr, float alpha, bool load) {             \
        DECL                                                                                      \
        for (int64_t p = 0; p < np; p++, a += aks, b += NB) {                                     \
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);                                        \
            DP                                                                                    \
        }                                                                                         \
        T_EPI (void)m1; STORE                                                                     \
    }
DEF_BF16H(6, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3) U_DECL(4) U_DECL(5),
          H_DPH(0) H_DPH(1) H_DPH(2) H_DPH(3) H_DPH(4) H_DPH(5),
          U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3) U_STORE(4) U_STORE(5))
DEF_BF16H(5, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3) U_DECL(4), H_DPH(0) H_DPH(1) H_DPH(2) H_DPH(3) H_DPH(4),
          U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3) U_STORE(4))
DEF_BF16H(4, U_DECL(0) U_DECL(1) U_DECL(2) U_DECL(3), H_DPH(0) H_DPH(1) H_DPH(2) H_DPH(3),
          U_STORE(0) U_STORE(1) U_STORE(2) U_STORE(3))
DEF_BF16H(3, U_DECL(0) U_DECL(1) U_DECL(2), H_DPH(0) H_DPH(1) H_DPH(2), U_STORE(0) U_STORE(1) U_STORE(2))
DEF_BF16H(2, U_DECL(0) U_DECL(1), H_DPH(0) H_DPH(1), U_STORE(0) U_STORE(1))
DEF_BF16H(1, U_DECL(0), H_DPH(0), U_STORE(0))

static void bf16_kern(int mr, const uint32_t *a, int64_t ars, int64_t aks, const uint32_t *b, int64_t np, float *c,
                      int64_t ldc, int nr, float alpha, bool load) {
    if (nr <= 16) {
        switch (mr) {
        case 6: bf16_half6(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        case 5: bf16_half5(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        case 4: bf16_half4(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        case 3: bf16_half3(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        case 2: bf16_half2(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        default: bf16_half1(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
        }
        return;
    }
    switch (mr) {
    case 6: bf16_kern6(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    case 5: bf16_kern5(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    case 4: bf16_kern4(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    case 3: bf16_kern3(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    case 2: bf16_kern2(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    default: bf16_kern1(a, ars, aks, b, np, c, ldc, nr, alpha, load); break;
    }
}

/* 16 fp32 of row k and 16 of row k+1 -> 16 pairs (bf16 of k | bf16 of k+1 << 16) */
static inline void pairs16(uint32_t *dst, __m512 x0, __m512 x1) {
    __m256i h0 = (__m256i)_mm512_cvtneps_pbh(x0), h1 = (__m256i)_mm512_cvtneps_pbh(x1);
    __m256i lo = _mm256_unpacklo_epi16(h0, h1), hi = _mm256_unpackhi_epi16(h0, h1);
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(dst + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* B block k in [kb, kb+kc) -> panels [n_pan][kc2][32] of pairs, kc2 = ceil(kc/2), zero-padded
 * (columns past N, the k past an odd kc). trans: b(k, j) = B[j·ldb + k] (nt), else B[k·ldb + j]. */
static void pack_b_bf16(uint32_t *bp, const float *B, int64_t ldb, bool trans, int64_t N, int64_t kb, int64_t kc) {
    int64_t n_pan = (N + NB - 1) / NB, kc2 = (kc + 1) / 2;
    if (!trans) {
        for (int64_t p = 0; p < kc2; p++) {
            const float *r0 = B + (kb + 2 * p) * ldb, *r1 = r0 + ldb;
            bool odd = 2 * p + 1 < kc;
            for (int64_t q = 0; q < n_pan; q++)
                for (int h = 0; h < 2; h++) {
                    int64_t j0 = q * NB + h * 16;
                    __mmask16 m = lanes16(N - j0);
                    __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + j0);
                    __m512 x1 = odd ? _mm512_maskz_loadu_ps(m, r1 + j0) : _mm512_setzero_ps();
                    pairs16(bp + (q * kc2 + p) * NB + h * 16, x0, x1);
                }
        }
        return;
    }
    for (int64_t q = 0; q < n_pan; q++) {
        uint32_t *dst = bp + q * kc2 * NB;
        for (int64_t jj = 0; jj < NB; jj++) {
            int64_t j = q * NB + jj;
            if (j >= N) {
                for (int64_t p = 0; p < kc2; p++) dst[p * NB + jj] = 0;
                continue;
            }
            const float *src = B + j * ldb + kb;
            for (int64_t k = 0; k < kc; k += 32) {   /* 16 pairs of column j */
                uint32_t t[16];
                __m512 x0 = _mm512_maskz_loadu_ps(lanes16(kc - k), src + k);
                __m512 x1 = _mm512_maskz_loadu_ps(lanes16(kc - k - 16), src + k + 16);
                _mm512_storeu_si512(t, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
                int64_t p0 = k / 2, n = DS_MIN(16, kc2 - p0);
                for (int64_t i = 0; i < n; i++) dst[(p0 + i) * NB + jj] = t[i];
            }
        }
    }
}

/* nt/nn tile: a(r, k) = A[r·lda + k], r < mr, k in [k0, k1) (k0 even) -> ap[r·ld + k/2] pairs;
 * k in [k1, roundup2(k1)) is zero; writes up to 16 pairs past k1/2 (ld >= kc2 + 16) */
static void pack_a_rows_bf16(uint32_t *ap, int64_t ld, const float *A, int64_t lda, int mr, int64_t k0, int64_t k1) {
    for (int r = 0; r < mr; r++) {
        const float *src = A + r * lda;
        for (int64_t k = k0; k < k1; k += 32) {
            __m512 x0 = _mm512_maskz_loadu_ps(lanes16(k1 - k), src + k);
            __m512 x1 = _mm512_maskz_loadu_ps(lanes16(k1 - k - 16), src + k + 16);
            _mm512_storeu_si512(ap + r * ld + k / 2, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        }
    }
}

/* tn tile: a(r, k) = A[k·lda + r], r < mr, k in [k0, k1) (k0 even) -> ap[(k/2)·8 + r] pairs, zeros past mr */
static void pack_a_cols_bf16(uint32_t *ap, const float *A, int64_t lda, int mr, int64_t k0, int64_t k1) {
    __mmask8 m = lanes8(mr);
    for (int64_t k = k0; k < k1; k += 2) {
        __m256 x0 = _mm256_maskz_loadu_ps(m, A + k * lda);
        __m256 x1 = k + 1 < k1 ? _mm256_maskz_loadu_ps(m, A + (k + 1) * lda) : _mm256_setzero_ps();
        __m128i h0 = (__m128i)_mm256_cvtneps_pbh(x0), h1 = (__m128i)_mm256_cvtneps_pbh(x1);
        _mm256_storeu_si256((__m256i *)(ap + (k / 2) * 8),
                            _mm256_set_m128i(_mm_unpackhi_epi16(h0, h1), _mm_unpacklo_epi16(h0, h1)));
    }
}

void tg_rows_bf16_avx512(const gemm_job *g, int64_t m0, int64_t m1, int tid) {
    int64_t n_pan = (g->N + NB - 1) / NB;
    int64_t kc2cap = (DS_MIN(TG_DKC, g->K) + 1) / 2, ald = kc2cap + 16;
    uint32_t *bp = g->bpack ? NULL : (uint32_t *)tr_scratch(tid, 2, (size_t)(n_pan * NB * kc2cap));
    uint32_t *ap = (uint32_t *)tr_scratch(tid, 3, (size_t)DS_MAX(MR * ald, 8 * (kc2cap + 1)));
    bool tn = g->mode == MODE_TN;
    if ((!bp && !g->bpack) || !ap) return;
    for (int64_t kb = 0; kb < g->K; kb += TG_DKC) {
        int64_t kc = DS_MIN(TG_DKC, g->K - kb), kc2 = (kc + 1) / 2;
        bool load = g->acc || kb > 0;
        if (g->bpack) bp = (uint32_t *)g->bpack + kb / 2 * n_pan * NB;   /* frozen B: packed once (read only) */
        else pack_b_bf16(bp, g->B, g->ldb, g->mode == MODE_NT, g->N, kb, kc);
        for (int64_t i0 = m0; i0 < m1; i0 += MR) {
            int mr = (int)DS_MIN(MR, m1 - i0);
            int64_t k0 = 0, k1 = kc;   /* k0 stays even: i0 and kb are */
            if (g->causal == CAUSAL_NN) k1 = DS_MAX(0, DS_MIN(kc, i0 + mr - kb));
            else if (g->causal == CAUSAL_TN) k0 = DS_MAX(0, DS_MIN(kc, i0 - kb));
            int64_t ars, aks;
            if (k1 > k0) {
                if (tn) { pack_a_cols_bf16(ap, g->A + kb * g->lda + i0, g->lda, mr, k0, k1); ars = 1; aks = 8; }
                else { pack_a_rows_bf16(ap, ald, g->A + i0 * g->lda + kb, g->lda, mr, k0, k1); ars = ald; aks = 1; }
            } else {
                ars = aks = 0;
            }
            int64_t p0 = k0 / 2, np = (k1 + 1) / 2 - p0;
            prefetcher f;
            int64_t nx = i0 + MR < m1 ? DS_MIN(MR, m1 - i0 - MR) : 0;
            pf_init(&f, nx, tn ? 0 : (kc * 4 + 63) / 64, (g->N * 4 + 63) / 64);
            for (int64_t q = 0; q < n_pan; q++) {
                int64_t j0 = q * NB;
                pf_step(&f, q, n_pan, g->A + (i0 + MR) * g->lda + kb, g->lda, g->C + (i0 + MR) * g->ldc, g->ldc);
                if (g->causal == CAUSAL_NT && j0 > i0 + mr - 1) break;
                int nr = (int)DS_MIN(NB, g->N - j0);
                float *c = g->C + i0 * g->ldc + j0;
                if (k1 <= k0) {
                    if (!load)
                        for (int r = 0; r < mr; r++) memset(c + r * g->ldc, 0, (size_t)nr * sizeof(float));
                    continue;
                }
                bf16_kern(mr, ap + p0 * aks, ars, aks, bp + (q * kc2 + p0) * NB, np, c, g->ldc, nr, g->alpha, load);
            }
        }
    }
}

/* ---------------------------------------------------------------- the frozen-weight panel cache
 *
 * One entry per (B, ldb, N, K): B's panels for all K blocks, the layout
 * tg_rows_f32_avx512 packs per call (block kb at kb·32·n_pan), repacked
 * when its epoch is older than the caller's. Open addressing on B; the
 * mutex covers lookups and packing (a weight is packed once per freeze, so
 * a thread waits at most for one pack). */
typedef struct { const float *B; int64_t ldb, N, K; bool trans, bf16; uint64_t epoch; float *pack; } pc_entry;
static pc_entry *g_pc;
static int64_t g_pc_cap, g_pc_n, g_pc_floats;
/* at most this many floats cached (1 GiB); past it, calls pack per call as before */
#define PC_MAX_FLOATS ((int64_t)1 << 28)
static pthread_mutex_t g_pc_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t pc_slot(const pc_entry *t, int64_t cap, const float *B, int64_t ldb, int64_t N, int64_t K, bool trans,
                       bool bf16) {
    uint64_t h = ((uint64_t)(uintptr_t)B >> 6) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(N * 31 + K * 4 + trans * 2 + bf16);
    for (int64_t i = (int64_t)(h % (uint64_t)cap);; i = (i + 1) % cap)
        if (!t[i].B || (t[i].B == B && t[i].ldb == ldb && t[i].N == N && t[i].K == K && t[i].trans == trans &&
                        t[i].bf16 == bf16))
            return i;
}

/* floats (fp32) or uint32 pairs (bf16) of a whole cached B: every K block's panels */
static int64_t pc_size(int64_t N, int64_t K, bool bf16) {
    int64_t n_pan = (N + NB - 1) / NB, last = K - (K - 1) / TG_DKC * TG_DKC;   /* the last block's kc */
    return n_pan * NB * (bf16 ? (K - last) / 2 + (last + 1) / 2 : K);
}

const float *tg_pack_cache_get(const float *B, int64_t ldb, bool trans, bool bf16, int64_t N, int64_t K, uint64_t epoch) {
    const float *r = NULL;
    pthread_mutex_lock(&g_pc_mu);
    if (2 * (g_pc_n + 1) > g_pc_cap) {   /* grow: load factor <= 1/2 */
        int64_t cap = g_pc_cap ? 2 * g_pc_cap : 256;
        pc_entry *t = calloc((size_t)cap, sizeof *t);
        if (!t) goto out;
        for (int64_t i = 0; i < g_pc_cap; i++)
            if (g_pc[i].B) t[pc_slot(t, cap, g_pc[i].B, g_pc[i].ldb, g_pc[i].N, g_pc[i].K, g_pc[i].trans, g_pc[i].bf16)] = g_pc[i];
        free(g_pc);
        g_pc = t;
        g_pc_cap = cap;
    }
    pc_entry *e = &g_pc[pc_slot(g_pc, g_pc_cap, B, ldb, N, K, trans, bf16)];
    if (!e->B) {
        int64_t nf = pc_size(N, K, bf16);
        float *p = g_pc_floats + nf <= PC_MAX_FLOATS ? ds_alloc((size_t)nf * sizeof(float)) : NULL;
        if (!p) goto out;
        *e = (pc_entry){ B, ldb, N, K, trans, bf16, 0, p };
        g_pc_n++;
        g_pc_floats += nf;
    }
    if (e->epoch != epoch) {
        int64_t n_pan = (N + NB - 1) / NB;
        for (int64_t kb = 0; kb < K; kb += TG_DKC) {
            if (bf16) pack_b_bf16((uint32_t *)e->pack + kb / 2 * n_pan * NB, B, ldb, trans, N, kb, DS_MIN(TG_DKC, K - kb));
            else pack_b_f32(e->pack + kb * n_pan * NB, B, ldb, trans, N, kb, DS_MIN(TG_DKC, K - kb));
        }
        e->epoch = epoch;
    }
    r = e->pack;
out:
    pthread_mutex_unlock(&g_pc_mu);
    return r;
}

void tg_pack_cache_free(void) {
    pthread_mutex_lock(&g_pc_mu);
    for (int64_t i = 0; i < g_pc_cap; i++) ds_free(g_pc[i].pack);
    free(g_pc);
    g_pc = NULL;
    g_pc_cap = g_pc_n = g_pc_floats = 0;
    pthread_mutex_unlock(&g_pc_mu);
}
