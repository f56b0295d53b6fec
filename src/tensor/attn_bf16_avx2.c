/*
 * attn_bf16_avx2.c - the bf16 score kernel (ds_mla_scores_bf16, ops.h) with
 * AVX2 + FMA, bit-identical to its twin (attn_bf16.c) and so to the
 * AVX512-BF16 kernel: 16 bf16 values (one 256-bit load) widen exactly to
 * two fp32 vectors — the odd elements by masking the low halves of the
 * 32-bit lanes, the even ones by shifting them up 16 bits — and lane i
 * takes fma(q_o, k_o, acc) then fma(q_e, k_e, acc) (exact products: one
 * rounding each, as the twin). The queries are widened once per call into
 * scratch ([odd 8 | even 8] per chunk). Tiles: 4 heads × 3 rows (12
 * accumulators, the odd half of a chunk for all 3 rows, then the even half).
 * W % 8 == 0: a last chunk of 8 values is loaded zero-padded to 16 (the
 * twin's padding: + 0·0 leaves a lane as it is).
 * The weighted sum (ds_mla_pv_bf16): p rounded to bf16 once (into
 * scratch), rows widened 8 columns at a time; per row pair the odd row's
 * fma then the even row's (the twin's order); tiles of 2 heads × 32 columns.
 * The rounding to bf16 (ds_bf16_round_row): the twin's integer steps on 8
 * lanes (round to nearest even by adding 0x7fff + the kept low bit; zero
 * and subnormal exponents to the signed zero; NaN kept quiet), 16 values
 * packed per store, the tail by the twin.
 * The expanded prefill's pieces (ops.h): ds_mla_softmax_bf16 (ds_softmax_avx2's
 * arithmetic writing bf16 weights), ds_bf16_round_pairs (two rows' rounded
 * values merged into 32-bit words), ds_mla_pv_bf16_pk (one load = 8
 * columns of a row pair: odd8 / even8 split it, no re-packing) and
 * ds_mla_scores_bf16_kt (one load = one value pair of 8 keys, the keys
 * stored transposed: a lane per key, no reductions).
 */
#include "ops_isa.h"
#include "simd_hsum.h"
#include "dtype.h"
#include "ops.h"
#include "simd_exp.h"

#include <immintrin.h>
#include <string.h>

static inline __m256 odd8(__m256i x) { return _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xffff0000u))); }
static inline __m256 even8(__m256i x) { return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)); }
/* 16 bf16 from p, or the last 8 of a row zero-padded */
static inline __m256i load16(const uint16_t *p, int64_t k, int64_t W) {
    return k + 16 <= W ? _mm256_loadu_si256((const __m256i *)(p + k))
                       : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(p + k)));
}

/* scores of nh heads (widened q at qw + h·Wp) against nr rows */
__attribute__((always_inline)) static inline void tile(int nh, int nr, const float *qw, int64_t Wp, int64_t W,
                                                       const uint16_t *kv, float *s, int64_t ls) {
    __m256 acc[4][3];
    for (int h = 0; h < nh; h++)
        for (int r = 0; r < nr; r++) acc[h][r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < W; k += 16) {
        __m256i x[3];
        for (int r = 0; r < nr; r++) x[r] = load16(kv + r * W, k, W);
        __m256 xo[3], xe[3];
        for (int r = 0; r < nr; r++) xo[r] = odd8(x[r]);
        for (int h = 0; h < nh; h++) {
            __m256 y = _mm256_loadu_ps(qw + h * Wp + k);
            for (int r = 0; r < nr; r++) acc[h][r] = _mm256_fmadd_ps(y, xo[r], acc[h][r]);
        }
        for (int r = 0; r < nr; r++) xe[r] = even8(x[r]);
        for (int h = 0; h < nh; h++) {
            __m256 y = _mm256_loadu_ps(qw + h * Wp + k + 8);
            for (int r = 0; r < nr; r++) acc[h][r] = _mm256_fmadd_ps(y, xe[r], acc[h][r]);
        }
    }
    for (int h = 0; h < nh; h++)
        for (int r = 0; r < nr; r++) s[h * ls + r] = ds_hsum256(acc[h][r]);
}

void ds_mla_scores_bf16_avx2(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                             int64_t W, int64_t n, float *qw) {
    int64_t Wp = (W + 15) / 16 * 16;   /* scratch: H·Wp floats */
    for (int64_t h = 0; h < H; h++)
        for (int64_t k = 0; k < W; k += 16) {
            __m256i x = load16(q + h * ldq, k, W);
            _mm256_storeu_ps(qw + h * Wp + k, odd8(x));
            _mm256_storeu_ps(qw + h * Wp + k + 8, even8(x));
        }
    int64_t h = 0;
    for (; h + 4 <= H; h += 4) {
        int64_t j = 0;
        for (; j + 3 <= n; j += 3) tile(4, 3, qw + h * Wp, Wp, W, kv + j * W, s + h * ls + j, ls);
        for (; j < n; j++) tile(4, 1, qw + h * Wp, Wp, W, kv + j * W, s + h * ls + j, ls);
    }
    for (; h < H; h++) {
        int64_t j = 0;
        for (; j + 3 <= n; j += 3) tile(1, 3, qw + h * Wp, Wp, W, kv + j * W, s + h * ls + j, ls);
        for (; j < n; j++) tile(1, 1, qw + h * Wp, Wp, W, kv + j * W, s + h * ls + j, ls);
    }
}

/* 8 bf16 widened to fp32 */
static inline __m256 widen8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* nh heads (1 or 2) x 8·nv columns (nv 1 or 4): acc = α·u, then per row pair
 * fma(p_odd, v_odd), fma(p_even, v_even) (the twin's order, attn_bf16.c) */
__attribute__((always_inline)) static inline void pv_tile(int nh, int nv, float *u, int64_t R, const float *pr,
                                                          int64_t lp, const float *alpha, const uint16_t *kv,
                                                          int64_t W, int64_t n, int64_t c) {
    __m256 acc[2][4];
    for (int i = 0; i < nh; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm256_mul_ps(_mm256_set1_ps(alpha[i]), _mm256_loadu_ps(u + i * R + c + 8 * v));
    for (int64_t j = 0; j < n; j += 2) {
        __m256 x[4];
        if (j + 1 < n) {
            for (int v = 0; v < nv; v++) x[v] = widen8(kv + (j + 1) * W + c + 8 * v);
        } else {
            for (int v = 0; v < nv; v++) x[v] = _mm256_setzero_ps();
        }
        for (int i = 0; i < nh; i++) {
            __m256 w = _mm256_broadcast_ss(pr + i * lp + j + 1);
            for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(w, x[v], acc[i][v]);
        }
        for (int v = 0; v < nv; v++) x[v] = widen8(kv + j * W + c + 8 * v);
        for (int i = 0; i < nh; i++) {
            __m256 w = _mm256_broadcast_ss(pr + i * lp + j);
            for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(w, x[v], acc[i][v]);
        }
    }
    for (int i = 0; i < nh; i++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(u + i * R + c + 8 * v, acc[i][v]);
}

void ds_mla_pv_bf16_avx2(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                         const uint16_t *kv, int64_t W, int64_t n, void *scratch) {
    float *pr = scratch;   /* H·(n + 1): p rounded to bf16 (as fp32), a 0 after an odd n */
    int64_t lp = n + 1;
    for (int64_t h = 0; h < H; h++) {
        uint16_t b[64];
        for (int64_t j0 = 0; j0 < n; j0 += 64) {
            int64_t nb = n - j0 < 64 ? n - j0 : 64;
            ds_bf16_round_row(b, p + h * ls + j0, nb);
            for (int64_t j = 0; j < nb; j++) pr[h * lp + j0 + j] = ds_bf16_to_f32(b[j]);
        }
        pr[h * lp + n] = 0.0f;
    }
    int64_t h = 0;
    for (; h + 2 <= H; h += 2) {
        int64_t c = 0;
        for (; c + 32 <= R; c += 32) pv_tile(2, 4, u + h * R, R, pr + h * lp, lp, alpha + h, kv, W, n, c);
        for (; c < R; c += 8) pv_tile(2, 1, u + h * R, R, pr + h * lp, lp, alpha + h, kv, W, n, c);
    }
    for (; h < H; h++) {
        int64_t c = 0;
        for (; c + 32 <= R; c += 32) pv_tile(1, 4, u + h * R, R, pr + h * lp, lp, alpha + h, kv, W, n, c);
        for (; c < R; c += 8) pv_tile(1, 1, u + h * R, R, pr + h * lp, lp, alpha + h, kv, W, n, c);
    }
}

/* 8 floats (as bits) to bf16, one per 32-bit lane (< 0x10000): the twin's
 * integer steps (round to nearest even by adding 0x7fff + the kept low bit;
 * zero and subnormal exponents to the signed zero; NaN kept quiet) */
static inline __m256i round8(__m256i u) {
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), expm = _mm256_set1_epi32(0x7f800000);
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff), zero = _mm256_setzero_si256();
    const __m256i sign16 = _mm256_set1_epi32(0x8000), quiet = _mm256_set1_epi32(0x40);
    __m256i hi = _mm256_srli_epi32(u, 16);
    __m256i rnd = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(hi, one))), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), expm);      /* |u| > inf: NaN */
    __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, expm), zero);     /* zero / subnormal */
    rnd = _mm256_blendv_epi8(rnd, _mm256_or_si256(hi, quiet), nan);
    return _mm256_blendv_epi8(rnd, _mm256_and_si256(hi, sign16), sub);
}

/* 16 rounded values (two round8 results) stored as 16 bf16 */
static inline void store16(uint16_t *y, __m256i r0, __m256i r1) {
    /* 32-bit lanes (each < 0x10000) to 16 bits: packus works per 128-bit half */
    _mm256_storeu_si256((__m256i *)y, _mm256_permute4x64_epi64(_mm256_packus_epi32(r0, r1), 0xd8));
}

void ds_bf16_round_row_avx2(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, round8(_mm256_loadu_si256((const __m256i *)(x + i))),
                round8(_mm256_loadu_si256((const __m256i *)(x + i + 8))));
    if (i < n) ds_bf16_round_row_ref(y + i, x + i, n - i);
}

/* ds_mla_softmax_bf16: ds_softmax_avx2's arithmetic (ops_avx2.c) on the
 * row's first vis values, scaled on the fly: the same max; the same 8 lane
 * sums (element j in lane j % 8, in j order: the masked values it would add
 * are +0 and change no sum); then p = e·inv rounded to bf16 as it is made,
 * and the masked tail written as zeros — the bits of scale + mask + ds_softmax
 * + ds_bf16_round_row in one pass fewer over the row and no fp32 p. */
void ds_mla_softmax_bf16_avx2(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff()), sc = _mm256_set1_ps(scale);
    int64_t i = 0, n2 = n + (n & 1);
    __m256 mv = ninf;
    for (; i + 8 <= vis; i += 8) mv = _mm256_max_ps(mv, _mm256_mul_ps(_mm256_loadu_ps(s + i), sc));
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(vis - i)), lane);
    if (i < vis)
        mv = _mm256_max_ps(mv, _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_maskload_ps(s + i, tail), sc),
                                                _mm256_castsi256_ps(tail)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float m = _mm_cvtss_f32(m4);
    if (m == -__builtin_inff()) {   /* everything masked: zeros (ds_softmax's convention) */
        memset(pb, 0, (size_t)n2 * sizeof(uint16_t));
        return;
    }
    const __m256 mb = _mm256_set1_ps(m), lo = _mm256_set1_ps(-87.0f);
    __m256 sv = _mm256_setzero_ps();
    for (i = 0; i + 8 <= vis; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(s + i), sc), mb);
        __m256 e = _mm256_and_ps(ds_exp256(d), _mm256_cmp_ps(d, lo, _CMP_GE_OQ));
        _mm256_storeu_ps(s + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    if (i < vis) {
        __m256 d = _mm256_sub_ps(_mm256_mul_ps(_mm256_maskload_ps(s + i, tail), sc), mb);
        __m256 e = _mm256_and_ps(ds_exp256(d), _mm256_and_ps(_mm256_cmp_ps(d, lo, _CMP_GE_OQ), _mm256_castsi256_ps(tail)));
        _mm256_maskstore_ps(s + i, tail, e);
        sv = _mm256_add_ps(sv, e);
    }
    float sl[8];
    _mm256_storeu_ps(sl, sv);
    double sum = 0.0;
    for (int k = 0; k < 8; k++) sum += sl[k];
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 16 <= vis; i += 16)
        store16(pb + i, round8(_mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(s + i), inv))),
                round8(_mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(s + i + 8), inv))));
    for (; i < vis; i++) {
        float p = s[i] * _mm256_cvtss_f32(inv);
        ds_bf16_round_row_ref(pb + i, &p, 1);
    }
    for (; i < n2; i++) pb[i] = 0;   /* the masked weights: bf16(+0) */
}

/* ds_bf16_round_pairs: two rows rounded 8 columns at a time and their bf16
 * values merged into 32-bit words (even row low, odd row high); a row
 * without its partner in [j0, j0 + n) goes through the twin */
void ds_bf16_round_pairs_avx2(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R) {
    int64_t r = 0;
    if (j0 % 2 && n > 0) ds_bf16_round_pairs_ref(vi, v, j0, 1, R), r = 1;
    for (; r + 2 <= n; r += 2) {
        uint16_t *d = vi + ((j0 + r) / 2) * 2 * R;
        const float *a = v + r * R, *b = a + R;
        int64_t c = 0;
        for (; c + 8 <= R; c += 8) {
            __m256i w = _mm256_or_si256(round8(_mm256_loadu_si256((const __m256i *)(a + c))),
                                        _mm256_slli_epi32(round8(_mm256_loadu_si256((const __m256i *)(b + c))), 16));
            _mm256_storeu_si256((__m256i *)(d + 2 * c), w);
        }
        for (; c < R; c++) {
            ds_bf16_round_row_ref(d + 2 * c, a + c, 1);
            ds_bf16_round_row_ref(d + 2 * c + 1, b + c, 1);
        }
    }
    if (r < n) ds_bf16_round_pairs_ref(vi, v + r * R, j0 + r, 1, R);
}

/* ds_mla_pv_bf16_pk: nh heads (1 or 2) x 8·nv columns (nv 1 or 4); per row
 * pair one 256-bit load holds 8 columns of both rows (odd8: the odd row's
 * values, even8: the even row's) and one 32-bit word both weights; the odd
 * row's fma, then the even row's (the twin's order); the last pair of an
 * odd n masked to its even row */
__attribute__((always_inline)) static inline void pv_pk_tile(int nh, int nv, float *u, int64_t R, const uint16_t *pb,
                                                             int64_t lp, const float *alpha, const uint16_t *vi,
                                                             int64_t n, int64_t c) {
    const __m256i lowm = _mm256_set1_epi32(0xffff);
    __m256 acc[2][4];
    for (int i = 0; i < nh; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm256_mul_ps(_mm256_set1_ps(alpha[i]), _mm256_loadu_ps(u + i * R + c + 8 * v));
    for (int64_t j = 0; j < n; j += 2) {
        const uint16_t *vp = vi + (j / 2) * 2 * R + 2 * c;
        __m256i x[4], w[2];
        for (int v = 0; v < nv; v++) x[v] = _mm256_loadu_si256((const __m256i *)(vp + 16 * v));
        if (j + 1 < n) {
            for (int i = 0; i < nh; i++) {
                uint32_t word;
                memcpy(&word, pb + i * lp + j, 4);
                w[i] = _mm256_set1_epi32((int)word);
            }
        } else {   /* the last row alone */
            for (int v = 0; v < nv; v++) x[v] = _mm256_and_si256(x[v], lowm);
            for (int i = 0; i < nh; i++) w[i] = _mm256_set1_epi32((int)pb[i * lp + j]);
        }
        for (int i = 0; i < nh; i++) {
            __m256 po = odd8(w[i]);
            for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(po, odd8(x[v]), acc[i][v]);
        }
        for (int i = 0; i < nh; i++) {
            __m256 pe = even8(w[i]);
            for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(pe, even8(x[v]), acc[i][v]);
        }
    }
    for (int i = 0; i < nh; i++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(u + i * R + c + 8 * v, acc[i][v]);
}

void ds_mla_pv_bf16_pk_avx2(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                            const uint16_t *vi, int64_t n) {
    int64_t h = 0;
    for (; h + 2 <= H; h += 2) {
        int64_t c = 0;
        for (; c + 32 <= R; c += 32) pv_pk_tile(2, 4, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c);
        for (; c < R; c += 8) pv_pk_tile(2, 1, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c);
    }
    for (; h < H; h++) {
        int64_t c = 0;
        for (; c + 32 <= R; c += 32) pv_pk_tile(1, 4, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c);
        for (; c < R; c += 8) pv_pk_tile(1, 1, u + h * R, R, pb + h * lp, lp, alpha + h, vi, n, c);
    }
}

/* ds_mla_scores_bf16_kt (ops.h) with AVX2 + FMA: one 256-bit load is one
 * pair of values of 8 keys (half a group of the key-transposed layout),
 * widened to the odd and even fp32 vectors; per pair fma(q_o, k_o, acc)
 * then fma(q_e, k_e, acc) (the twin's order). Tiles: nr query rows (up to
 * 4) × the 16 keys of one group, 8 accumulators. */
static inline void kt_tile2(int nr, float *s, int64_t ls, const uint16_t *q, int64_t ldq, const uint16_t *kt, int64_t W,
                            int64_t nk) {
    __m256 acc[4][2];
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t d = 0; d < W; d += 2) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(kt + 16 * d)), x1 = _mm256_loadu_si256((const __m256i *)(kt + 16 * d + 16));
        __m256 ko0 = odd8(x0), ke0 = even8(x0), ko1 = odd8(x1), ke1 = even8(x1);
        for (int r = 0; r < nr; r++) {
            uint32_t word;
            memcpy(&word, q + r * ldq + d, 4);
            __m256i y = _mm256_set1_epi32((int)word);
            __m256 qo = odd8(y), qe = even8(y);
            acc[r][0] = _mm256_fmadd_ps(qe, ke0, _mm256_fmadd_ps(qo, ko0, acc[r][0]));
            acc[r][1] = _mm256_fmadd_ps(qe, ke1, _mm256_fmadd_ps(qo, ko1, acc[r][1]));
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int r = 0; r < nr; r++)
        for (int h = 0; h < 2; h++) {
            int64_t left = nk - 8 * h;
            if (left >= 8) _mm256_storeu_ps(s + r * ls + 8 * h, acc[r][h]);
            else if (left > 0)
                _mm256_maskstore_ps(s + r * ls + 8 * h, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lane), acc[r][h]);
        }
}

void ds_mla_scores_bf16_kt_avx2(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                                int64_t W, int64_t n, int64_t vis0) {
    for (int64_t j0 = 0; j0 < n; j0 += 64)   /* 64 keys in L1 while the query rows pass */
        for (int64_t i = 0; i < nq; i += 4) {
            int nr = nq - i < 4 ? (int)(nq - i) : 4;
            for (int64_t j = j0; j < n && j < j0 + 64; j += 16) {
                if (vis0 + i + nr - 1 <= j) break;   /* none of these rows sees key j */
                int64_t nk = n - j < 16 ? n - j : 16;
                if (nr == 4) kt_tile2(4, s + i * ls + j, ls, q + i * ldq, ldq, kt + j * W, W, nk);
                else kt_tile2(nr, s + i * ls + j, ls, q + i * ldq, ldq, kt + j * W, W, nk);
            }
        }
}
