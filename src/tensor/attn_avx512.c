/*
 * attn_avx512.c - the flash-decode step (ds_mla_attn_step, ops.h) with
 * AVX-512F: the same arithmetic as ds_mla_attn_step_avx2 (ops_avx2.c) in
 * twice the registers, so the results are bit-identical to it (tested) and
 * a machine's bits do not depend on which of the two it runs.
 *
 * Scores: a zmm register holds two heads side by side, head 2p in the low
 * 8 lanes and head 2p+1 in the high 8 (q packed so once per step); a cache
 * row's 8 floats are broadcast into both halves. Each half therefore
 * accumulates exactly like the AVX2 kernel's one accumulator per dot
 * product (lane i sums k = i, i+8, ... in order, fused multiply-adds), and
 * each half is reduced with the same ds_hsum256. Tiles: 4 head pairs × 6
 * cache rows (24 accumulators; the AVX2 kernel fits 4 heads × 3 rows).
 * Online softmax: calls ds_mla_attn_softmax_avx2 (H exps per row: not the
 * cost).
 * Weighted sum u[h] = α·u[h] + Σ_j p[h][j]·kv_j: every element is the same
 * chain (α·u, then one fused multiply-add per row in row order) at any
 * vector width; tiles of 4 heads × 64 columns (16 accumulators).
 * Built with the AVX-512 flags (Makefile: *_avx512.c); ops.c calls it only
 * at ISA level avx512 or above (core/cpu.h: DS_ISA=avx2 runs the AVX2 step)
 * and for H even, W % 8 == 0, R % 16 == 0.
 */
#include "ops_isa.h"
#include "simd_hsum.h"

#include <immintrin.h>

#define T512_INLINE __attribute__((always_inline)) static inline

/* scores of np head pairs (packed q: pair p at qp + p·2W, chunk k at 2k)
 * against nr cache rows; s: score of head 2p, row r at s[2p·ls + r] */
T512_INLINE void qk_tile(int np, int nr, const float *qp, int64_t W, const float *kv, float *s, int64_t ls) {
    __m512 acc[4][6];
#pragma GCC unroll 4
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) acc[p][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < W; k += 8) {
        __m512 x[6];
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) x[r] = _mm512_broadcast_f32x8(_mm256_loadu_ps(kv + r * W + k));
#pragma GCC unroll 4
        for (int p = 0; p < np; p++) {
            __m512 y = _mm512_loadu_ps(qp + p * 2 * W + 2 * k);
#pragma GCC unroll 6
            for (int r = 0; r < nr; r++) acc[p][r] = _mm512_fmadd_ps(y, x[r], acc[p][r]);
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) {
            s[2 * p * ls + r] = ds_hsum256(_mm512_castps512_ps256(acc[p][r]));
            s[(2 * p + 1) * ls + r] = ds_hsum256(_mm512_extractf32x8_ps(acc[p][r], 1));
        }
}

/* u[h..h+nh) columns [c, c + 16·nc) = α·u + Σ_j p[h][j]·kv_j */
T512_INLINE void pv_tile(int nh, int nc, float *u, int64_t R, const float *p, int64_t ls, const float *alpha,
                         const float *kv, int64_t W, int64_t n, int64_t c) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++) {
        __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < nc; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_loadu_ps(u + i * R + c + 16 * v));
    }
    for (int64_t j = 0; j < n; j++) {
        const float *r = kv + j * W + c;
        __m512 x[4];
#pragma GCC unroll 4
        for (int v = 0; v < nc; v++) x[v] = _mm512_loadu_ps(r + 16 * v);
#pragma GCC unroll 4
        for (int i = 0; i < nh; i++) {
            __m512 w = _mm512_set1_ps(p[i * ls + j]);
#pragma GCC unroll 4
            for (int v = 0; v < nc; v++) acc[i][v] = _mm512_fmadd_ps(w, x[v], acc[i][v]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nc; v++) _mm512_storeu_ps(u + i * R + c + 16 * v, acc[i][v]);
}

void ds_mla_attn_step_avx512(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv,
                                  int64_t W, int64_t n, int64_t R, float scale, float *sc) {
    int64_t ls = n + 8;   /* score row stride */
    float *qp = sc + H * ls + H;   /* after the scores and H rescale factors: the packed queries (H·W) */

    /* q pairs: [q[2p][k : k+8) | q[2p+1][k : k+8)] at qp + p·2W + 2k */
    for (int64_t p = 0; p < H / 2; p++)
        for (int64_t k = 0; k < W; k += 8) {
            _mm256_storeu_ps(qp + p * 2 * W + 2 * k, _mm256_loadu_ps(q + 2 * p * ldq + k));
            _mm256_storeu_ps(qp + p * 2 * W + 2 * k + 8, _mm256_loadu_ps(q + (2 * p + 1) * ldq + k));
        }
    int64_t p = 0, P = H / 2;
    for (; p + 4 <= P; p += 4) {
        int64_t j = 0;
        for (; j + 6 <= n; j += 6) qk_tile(4, 6, qp + p * 2 * W, W, kv + j * W, sc + 2 * p * ls + j, ls);
        for (; j < n; j++) qk_tile(4, 1, qp + p * 2 * W, W, kv + j * W, sc + 2 * p * ls + j, ls);
    }
    for (; p < P; p++) {
        int64_t j = 0;
        for (; j + 6 <= n; j += 6) qk_tile(1, 6, qp + p * 2 * W, W, kv + j * W, sc + 2 * p * ls + j, ls);
        for (; j < n; j++) qk_tile(1, 1, qp + p * 2 * W, W, kv + j * W, sc + 2 * p * ls + j, ls);
    }
    ds_mla_attn_update_avx512(u, m, l, H, kv, W, n, R, scale, sc);
}

/* the step after the scores (ops_isa.h): online softmax, rescale, weighted sum */
void ds_mla_attn_update_avx512(float *u, float *m, float *l, int64_t H, const float *kv, int64_t W, int64_t n,
                               int64_t R, float scale, float *sc) {
    int64_t ls = n + 8;   /* score row stride */
    float *alpha = sc + H * ls;
    /* online softmax: p = exp(scale·s − m_new) and the rescale factors α,
     * the AVX2 code itself (ops_avx2.c) so both ISAs give the same bits */
    ds_mla_attn_softmax_avx2(m, l, H, n, scale, sc);

    int64_t h = 0;
    for (; h + 4 <= H; h += 4) {
        int64_t c = 0;
        for (; c + 64 <= R; c += 64) pv_tile(4, 4, u + h * R, R, sc + h * ls, ls, alpha + h, kv, W, n, c);
        for (; c < R; c += 16) pv_tile(4, 1, u + h * R, R, sc + h * ls, ls, alpha + h, kv, W, n, c);
    }
    for (; h < H; h++) {
        int64_t c = 0;
        for (; c + 64 <= R; c += 64) pv_tile(1, 4, u + h * R, R, sc + h * ls, ls, alpha + h, kv, W, n, c);
        for (; c < R; c += 16) pv_tile(1, 1, u + h * R, R, sc + h * ls, ls, alpha + h, kv, W, n, c);
    }
}
