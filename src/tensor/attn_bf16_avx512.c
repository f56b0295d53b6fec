/*
 * attn_bf16_avx512.c - the bf16 score kernel (ds_mla_scores_bf16, ops.h)
 * with AVX512-BF16's vdpbf16ps: per 32-bit lane acc += q_o·k_o, then
 * += q_e·k_e (exact products, round to nearest even), which is the twin's
 * arithmetic (attn_bf16.c) and the AVX2 kernel's. A zmm register holds two
 * heads side by side: head 2p's 16-value chunk in the low 256 bits, head
 * 2p+1's in the high (the queries packed so once per call); a row's chunk
 * is broadcast into both halves, so each half accumulates exactly like the
 * AVX2 kernel's one accumulator and is reduced with the same ds_hsum256.
 * Tiles: 4 head pairs × 6 rows (24 accumulators); each vdpbf16ps does 32
 * multiply-adds (twice an fp32 FMA's 16). A full tile's 48 half-sums are
 * reduced 16 at a time (hsum8x2: ds_hsum256's additions, in its order, over
 * whole registers) and written with masked stores: with the expanded
 * prefill's 192-value rows the separate reductions had cost a third of the
 * kernel (64 × 192 × 2048 keys, 1 thread: 0.32 → 0.26 ms; README).
 * Weighted sum (ds_mla_pv_bf16): two rows' 32-column pieces interleaved
 * word by word (vpermt2w) so lane c holds (v_2t[c], v_2t+1[c]); the weights
 * p_2t, p_2t+1 rounded to bf16 and packed in one 32-bit word per head and
 * pair; vdpbf16ps then adds p_2t+1·v_2t+1, then p_2t·v_2t per column — the
 * twin's order. Tiles: 4 heads × 64 columns (16 accumulators).
 * The expanded prefill's scores with the keys as the lanes
 * (ds_mla_scores_bf16_kt: keys stored transposed, 6 query rows × 64 keys,
 * no reductions), its weighted sum on prepared operands (ds_mla_pv_bf16_pk:
 * values already in row pairs, weights already bf16 pairs; 6 query rows ×
 * 64 columns) and its softmax (ds_mla_softmax_bf16 on 16 lanes, rounding
 * with vcvtneps2bf16) follow; attn_bf16.c dispatches them.
 * Built with the AVX-512 flags; ops.c calls it only at ISA level
 * avx512vnni or above on a CPU with AVX512-BF16, for H even, W % 8 == 0
 * (a last chunk of 8 values zero-padded to 16, as the twin pads).
 */
#include "ops_isa.h"
#include "simd_exp.h"
#include "simd_hsum.h"
#include "dtype.h"
#include "ops.h"

#include <immintrin.h>

#define T512_INLINE __attribute__((always_inline)) static inline

/* 16 bf16 from p, or the last 8 of a row zero-padded */
T512_INLINE __m256i load16(const uint16_t *p, int64_t k, int64_t W) {
    return k + 16 <= W ? _mm256_loadu_si256((const __m256i *)(p + k))
                       : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(p + k)));
}

/* ds_hsum256 of both 256-bit halves of 8 accumulators at once, with the same
 * additions in the same order per half h = (v0..v7): l_i = v_i + v_i+4, then
 * (l0 + l1) + (l2 + l3) — three shuffle/add rounds over whole registers
 * instead of 16 separate reductions (which cost as much as a tile's
 * vdpbf16ps when W is a head's 192 values). Lane 4k + m of the result is
 * half (k & 1) of accumulator 2m + (k >> 1). */
T512_INLINE __m512 hsum8x2(const __m512 *a) {
    __m512 l[4], m[2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)   /* quarters (h0: q0 + q1, h1: q2 + q3) of a[2i], a[2i+1] */
        l[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)   /* per quarter: l0 + l1, l2 + l3 of l[2i], then of l[2i+1] */
        m[i] = _mm512_add_ps(_mm512_shuffle_ps(l[2 * i], l[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(l[2 * i], l[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_ps(m[0], m[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(m[0], m[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* np head pairs (packed q: pair p at qp + p·2Wp, chunk k at 2k) against nr rows */
T512_INLINE void tile(int np, int nr, const uint16_t *qp, int64_t Wp, int64_t W, const uint16_t *kv, float *s,
                      int64_t ls) {
    __m512 acc[4][6];
#pragma GCC unroll 4
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) acc[p][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < W; k += 16) {
        __m512i x[6];
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) x[r] = _mm512_broadcast_i64x4(load16(kv + r * W, k, W));
#pragma GCC unroll 4
        for (int p = 0; p < np; p++) {
            __m512i y = _mm512_loadu_si512(qp + p * 2 * Wp + 2 * k);
#pragma GCC unroll 6
            for (int r = 0; r < nr; r++) acc[p][r] = _mm512_dpbf16_ps(acc[p][r], (__m512bh)y, (__m512bh)x[r]);
        }
    }
    if (np == 4 && nr == 6) {   /* full tiles: the 24 accumulators (acc[p][r] = a[6p + r]) 8 at a time */
        const __m512 *a = &acc[0][0];
        /* lanes j, 8 + j <- halves 0, 1 of accumulator j (hsum8x2's lane order undone) */
        const __m512i perm = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
#pragma GCC unroll 3
        for (int g = 0; g < 24; g += 8) {
            __m512 v = _mm512_permutexvar_ps(perm, hsum8x2(a + g));
            __m256 h0 = _mm512_castps512_ps256(v), h1 = _mm512_extractf32x8_ps(v, 1);
#pragma GCC unroll 2
            for (int p = g / 6; p <= (g + 7) / 6; p++) {   /* head pair p's rows among accumulators g..g+7 */
                int f0 = g > 6 * p ? g : 6 * p, f1 = g + 8 < 6 * p + 6 ? g + 8 : 6 * p + 6;
                __mmask8 mk = (__mmask8)(((1u << (f1 - g)) - 1) & ~((1u << (f0 - g)) - 1));
                /* lane f - g is row f - 6p: the lane-0 address lies inside s (ls >= 6) */
                _mm256_mask_storeu_ps(s + 2 * p * ls + g - 6 * p, mk, h0);
                _mm256_mask_storeu_ps(s + (2 * p + 1) * ls + g - 6 * p, mk, h1);
            }
        }
        return;
    }
#pragma GCC unroll 4
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) {
            s[2 * p * ls + r] = ds_hsum256(_mm512_castps512_ps256(acc[p][r]));
            s[(2 * p + 1) * ls + r] = ds_hsum256(_mm512_extractf32x8_ps(acc[p][r], 1));
        }
}

void ds_mla_scores_bf16_avx512(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                               int64_t W, int64_t n, float *scratch) {
    int64_t Wp = (W + 15) / 16 * 16;
    uint16_t *qp = (uint16_t *)scratch;   /* H·Wp bf16 (half the scratch) */
    for (int64_t p = 0; p < H / 2; p++)
        for (int64_t k = 0; k < W; k += 16) {
            _mm256_storeu_si256((__m256i *)(qp + p * 2 * Wp + 2 * k), load16(q + 2 * p * ldq, k, W));
            _mm256_storeu_si256((__m256i *)(qp + p * 2 * Wp + 2 * k + 16), load16(q + (2 * p + 1) * ldq, k, W));
        }
    int64_t p = 0, P = H / 2;
    for (; p + 4 <= P; p += 4) {
        int64_t j = 0;
        for (; j + 6 <= n; j += 6) tile(4, 6, qp + p * 2 * Wp, Wp, W, kv + j * W, s + 2 * p * ls + j, ls);
        for (; j < n; j++) tile(4, 1, qp + p * 2 * Wp, Wp, W, kv + j * W, s + 2 * p * ls + j, ls);
    }
    for (; p < P; p++) {
        int64_t j = 0;
        for (; j + 6 <= n; j += 6) tile(1, 6, qp + p * 2 * Wp, Wp, W, kv + j * W, s + 2 * p * ls + j, ls);
        for (; j < n; j++) tile(1, 1, qp + p * 2 * Wp, Wp, W, kv + j * W, s + 2 * p * ls + j, ls);
    }
}

/* acc[r][v] += x[v] · (the bf16 pair at p + r·stride, broadcast) for r < nr,
 * v < nv: the step of the two kernels below whose operand of each row is one
 * 32-bit word (a query row's value pair; a weight row's pair of weights) */
T512_INLINE void dp_rows(__m512 acc[6][4], int nr, int nv, const __m512i *x, const uint16_t *p, int64_t stride) {
#pragma GCC unroll 6
    for (int r = 0; r < nr; r++) {
        uint32_t word;
        __builtin_memcpy(&word, p + r * stride, 4);
        __m512i y = _mm512_set1_epi32((int)word);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)x[v], (__m512bh)y);
    }
}

/* ds_mla_scores_bf16_kt (ops.h): the keys are the lanes. One 512-bit load
 * is one pair of values of 16 keys (the key-transposed layout), a query
 * row's pair is one broadcast word, and each lane sums its own score over
 * the pairs in order: the twin's arithmetic with no horizontal sums (the
 * row-major kernel above spends a fifth of its instructions on them).
 * Tiles: nr query rows (up to 6) × 64 keys, 24 accumulators. */
T512_INLINE void kt_tile(int nr, float *s, int64_t ls, const uint16_t *q, int64_t ldq, const uint16_t *kt, int64_t W,
                         int64_t nk) {
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) acc[r][g] = _mm512_setzero_ps();
    for (int64_t d = 0; d < W; d += 2) {
        __m512i x[4];
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) x[g] = _mm512_loadu_si512(kt + g * 16 * W + 16 * d);
        dp_rows(acc, nr, 4, x, q + d, ldq);
    }
#pragma GCC unroll 6
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            int64_t left = nk - 16 * g;
            if (left >= 16) _mm512_storeu_ps(s + r * ls + 16 * g, acc[r][g]);
            else if (left > 0) _mm512_mask_storeu_ps(s + r * ls + 16 * g, (__mmask16)((1u << left) - 1), acc[r][g]);
        }
}

void ds_mla_scores_bf16_kt_avx512(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                                  int64_t W, int64_t n, int64_t vis0) {
    /* a tile of 64 keys (24 KB at W = 192) stays in L1 while the query rows pass over it */
    for (int64_t j = 0; j < n; j += 64) {
        int64_t nk = n - j < 64 ? n - j : 64;
        const uint16_t *kj = kt + j * W;   /* group j / 16 */
        for (int64_t i = 0; i < nq; i += 6) {
            int nr = nq - i < 6 ? (int)(nq - i) : 6;
            if (vis0 + i + nr - 1 <= j) continue;   /* none of these rows sees key j */
            float *si = s + i * ls + j;
            const uint16_t *qi = q + i * ldq;
            switch (nr) {
            case 6: kt_tile(6, si, ls, qi, ldq, kj, W, nk); break;
            case 5: kt_tile(5, si, ls, qi, ldq, kj, W, nk); break;
            case 4: kt_tile(4, si, ls, qi, ldq, kj, W, nk); break;
            case 3: kt_tile(3, si, ls, qi, ldq, kj, W, nk); break;
            case 2: kt_tile(2, si, ls, qi, ldq, kj, W, nk); break;
            default: kt_tile(1, si, ls, qi, ldq, kj, W, nk); break;
            }
        }
    }
}

/* nh heads x 32·nu columns (nu 1 or 2) over n rows; pp: packed weight pairs, stride lp */
T512_INLINE void pv_tile(int nh, int nu, float *u, int64_t R, const uint32_t *pp, int64_t lp, const float *alpha,
                         const uint16_t *kv, int64_t W, int64_t n, int64_t c, __m512i ilo, __m512i ihi) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++) {
        __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_loadu_ps(u + i * R + c + 16 * v));
    }
    for (int64_t j = 0, t = 0; j < n; j += 2, t++) {
        __m512i x[4];
#pragma GCC unroll 2
        for (int k = 0; k < nu; k++) {
            __m512i ve = _mm512_loadu_si512(kv + j * W + c + 32 * k);
            __m512i vo = j + 1 < n ? _mm512_loadu_si512(kv + (j + 1) * W + c + 32 * k) : _mm512_setzero_si512();
            x[2 * k] = _mm512_permutex2var_epi16(ve, ilo, vo);
            x[2 * k + 1] = _mm512_permutex2var_epi16(ve, ihi, vo);
        }
#pragma GCC unroll 4
        for (int i = 0; i < nh; i++) {
            __m512i w = _mm512_set1_epi32((int)pp[i * lp + t]);
#pragma GCC unroll 4
            for (int v = 0; v < 2 * nu; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)x[v], (__m512bh)w);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) _mm512_storeu_ps(u + i * R + c + 16 * v, acc[i][v]);
}

void ds_mla_pv_bf16_avx512(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                           const uint16_t *kv, int64_t W, int64_t n, void *scratch) {
    uint32_t *pp = scratch;   /* H·(n + 1)/2 words: (bf16 p_2t | bf16 p_2t+1 << 16) */
    int64_t lp = (n + 1) / 2;
    for (int64_t h = 0; h < H; h++) {
        uint16_t b[64];
        for (int64_t j0 = 0; j0 < n; j0 += 64) {
            int64_t nb = n - j0 < 64 ? n - j0 : 64;
            ds_bf16_round_row(b, p + h * ls + j0, nb);
            if (nb % 2) b[nb] = 0;
            for (int64_t j = 0; j < nb; j += 2) pp[h * lp + (j0 + j) / 2] = (uint32_t)b[j] | (uint32_t)b[j + 1] << 16;
        }
    }
    /* word 2k <- row 2t's column k, word 2k+1 <- row 2t+1's (index 32 + k: the second source) */
    uint16_t lo[32], hi[32];
    for (int k = 0; k < 16; k++) {
        lo[2 * k] = (uint16_t)k; lo[2 * k + 1] = (uint16_t)(32 + k);
        hi[2 * k] = (uint16_t)(16 + k); hi[2 * k + 1] = (uint16_t)(48 + k);
    }
    __m512i ilo = _mm512_loadu_si512(lo), ihi = _mm512_loadu_si512(hi);
    int64_t h = 0;
    for (; h + 4 <= H; h += 4) {
        int64_t c = 0;
        for (; c + 64 <= R; c += 64) pv_tile(4, 2, u + h * R, R, pp + h * lp, lp, alpha + h, kv, W, n, c, ilo, ihi);
        for (; c < R; c += 32) pv_tile(4, 1, u + h * R, R, pp + h * lp, lp, alpha + h, kv, W, n, c, ilo, ihi);
    }
    for (; h < H; h++) {
        int64_t c = 0;
        for (; c + 64 <= R; c += 64) pv_tile(1, 2, u + h * R, R, pp + h * lp, lp, alpha + h, kv, W, n, c, ilo, ihi);
        for (; c < R; c += 32) pv_tile(1, 1, u + h * R, R, pp + h * lp, lp, alpha + h, kv, W, n, c, ilo, ihi);
    }
}

/* ds_mla_pv_bf16_pk (ops.h): the weighted sum on prepared operands — the
 * values already interleaved in row pairs (ds_bf16_round_pairs: one 512-bit
 * load is 16 columns of both rows, the words vpermt2w built above) and the
 * weights already bf16 pairs (ds_mla_softmax_bf16: one 32-bit word per head
 * and pair, broadcast). Per accumulator the same vdpbf16ps sequence as
 * ds_mla_pv_bf16_avx512, so the same bits; the last pair of an odd n is
 * masked to its even row (the zero row the other kernel pairs it with).
 * Tiles: nh heads (up to 6) × 32·nu columns, nu 1 or 2 (up to 24 accumulators). */
T512_INLINE void pv_pk_tile(int nh, int nu, float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha,
                            const uint16_t *vi, int64_t n, int64_t c) {
    const __m512i lowm = _mm512_set1_epi32(0xffff);
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < nh; i++) {
        __m512 a = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) acc[i][v] = _mm512_mul_ps(a, _mm512_loadu_ps(u + i * R + c + 16 * v));
    }
    int64_t ne = n & ~(int64_t)1;   /* whole pairs */
    for (int64_t j = 0; j < ne; j += 2) {
        const uint16_t *vp = vi + j * R + 2 * c;   /* pair j / 2 */
        __m512i x[4];
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) x[v] = _mm512_loadu_si512(vp + 32 * v);
        dp_rows(acc, nh, 2 * nu, x, pb + j, lp);
    }
    if (ne < n) {   /* the last row alone: its odd partner and weight masked to zero */
        const uint16_t *vp = vi + ne * R + 2 * c;
        __m512i x[4];
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) x[v] = _mm512_and_si512(_mm512_loadu_si512(vp + 32 * v), lowm);
#pragma GCC unroll 6
        for (int i = 0; i < nh; i++) {
            __m512i w = _mm512_set1_epi32((int)pb[i * lp + ne]);
#pragma GCC unroll 4
            for (int v = 0; v < 2 * nu; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)x[v], (__m512bh)w);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < nh; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 2 * nu; v++) _mm512_storeu_ps(u + i * R + c + 16 * v, acc[i][v]);
}

#define PK_ROWS(NH)                                                                                      \
    for (; h + NH <= H; h += NH) {                                                                       \
        int64_t c = 0;                                                                                   \
        for (; c + 64 <= R; c += 64) pv_pk_tile(NH, 2, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c); \
        for (; c < R; c += 32) pv_pk_tile(NH, 1, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c);      \
    }

void ds_mla_pv_bf16_pk_avx512(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                              const uint16_t *vi, int64_t n) {
    int64_t h = 0;
    PK_ROWS(6)
    PK_ROWS(4)
    PK_ROWS(2)
    PK_ROWS(1)
}

/* y[i] = bf16(x[i]) with vcvtneps2bf16, which rounds exactly as
 * ds_bf16_round_row_ref (zero / subnormal to the signed zero, NaN kept with
 * the quiet bit set, else round to nearest even; Intel's definition):
 * tested against the twin on all classes of inputs */
void ds_bf16_round_row_avx512(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, k, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* ds_mla_softmax_bf16 (ops.h) on 16 lanes: ds_mla_softmax_bf16_avx2's bits.
 * The max is exact in any order; the sum keeps the 8 lanes of the AVX2 code
 * (element j in lane j % 8, in j order: each 16-value chunk adds its low
 * then its high half; a masked tail adds +0, which changes no sum); the
 * weights are rounded by vcvtneps2bf16 (ds_bf16_round_row_avx512). */
void ds_mla_softmax_bf16_avx512(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale) {
    const __m512 sc = _mm512_set1_ps(scale), lo = _mm512_set1_ps(-87.0f);
    int64_t i = 0, n2 = n + (n & 1), rem = vis % 16, full = vis - rem;
    __mmask16 tk = (__mmask16)((1u << rem) - 1);
    __m512 mv = _mm512_set1_ps(-__builtin_inff());
    for (; i < full; i += 16) mv = _mm512_max_ps(mv, _mm512_mul_ps(_mm512_loadu_ps(s + i), sc));
    if (rem) mv = _mm512_mask_max_ps(mv, tk, mv, _mm512_mul_ps(_mm512_maskz_loadu_ps(tk, s + i), sc));
    float m = _mm512_reduce_max_ps(mv);
    if (m == -__builtin_inff()) {   /* everything masked: zeros (ds_softmax's convention) */
        memset(pb, 0, (size_t)n2 * sizeof(uint16_t));
        return;
    }
    const __m512 mb = _mm512_set1_ps(m);
    __m256 sv = _mm256_setzero_ps();
    for (i = 0; i < full; i += 16) {
        __m512 d = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s + i), sc), mb);
        __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, lo, _CMP_GE_OQ), ds_exp512(d));
        _mm512_storeu_ps(s + i, e);
        sv = _mm256_add_ps(sv, _mm512_castps512_ps256(e));
        sv = _mm256_add_ps(sv, _mm512_extractf32x8_ps(e, 1));
    }
    if (rem) {
        __m512 d = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(tk, s + i), sc), mb);
        __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, lo, _CMP_GE_OQ) & tk, ds_exp512(d));
        _mm512_mask_storeu_ps(s + i, tk, e);
        sv = _mm256_add_ps(sv, _mm512_castps512_ps256(e));
        sv = _mm256_add_ps(sv, _mm512_extractf32x8_ps(e, 1));
    }
    float sl[8];
    _mm256_storeu_ps(sl, sv);
    double sum = 0.0;
    for (int k = 0; k < 8; k++) sum += sl[k];
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (i = 0; i < full; i += 16)
        _mm256_storeu_si256((__m256i *)(pb + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(s + i), inv)));
    if (rem)
        _mm256_mask_storeu_epi16(pb + i, tk, (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(tk, s + i), inv)));
    for (i = vis; i < n2; i++) pb[i] = 0;   /* the masked weights: bf16(+0) */
}
