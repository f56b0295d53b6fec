/*
 * attn_i8_avx2.c - the int8 latent cache's kernels (ds_mla_scores_i8,
 * ds_mla_pv_i8; ops.h) for AVX2 CPUs without VNNI: the same exact integer
 * sums by other instructions, then the twin's fp32 epilogue in the twin's
 * order (attn_i8.c), so AVX2, AVX512-VNNI and the twin give the same bits.
 * Scores: a ymm holds 8 heads (lanes) of one row's dot product, the query's
 * groups of 4 values as ds_mla_q_i8 stores them. vpmaddubsw multiplies u8 by
 * s8 and adds pairs into a saturating i16, so it gets |q| (<= 127) and the
 * row's codes with q's sign (vpsignb): each pair sum is <= 2·127·127 = 32258,
 * no saturation; vpmaddwd with ones then adds the pairs into int32.
 * Weighted sum: the weights (<= 255) times codes would saturate vpmaddubsw
 * (2·255·127), so both are widened to i16 and vpmaddwd adds the products of
 * 2 rows per 32-bit lane exactly: the rows are regrouped in pairs (row 2t's
 * and 2t+1's column c side by side), the weights of the pair broadcast.
 * Built with the AVX2 flags; ops.c calls it at ISA level avx2 (and above
 * where VNNI is off).
 */
#include "ops_isa.h"
#include "ops.h"

#include <immintrin.h>
#include <string.h>

#define T256_INLINE __attribute__((always_inline)) static inline

static inline int32_t rd_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline float rd_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* nr rows (<= 4) against the 8 heads [hb, hb + 8) (nh of them real) */
T256_INLINE void sc_tile(int nr, float *s, int64_t ls, const uint8_t *qt, int64_t Hp, int64_t hb, int64_t nh,
                         const float *dq, const uint8_t *kv, int64_t rb, int64_t G0, int64_t G1) {
    __m256i a0[4], a1[4];
    const __m256i ones = _mm256_set1_epi16(1), x80 = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) a0[r] = a1[r] = _mm256_setzero_si256();
    const uint8_t *k = kv + DS_KV_I8_HEAD;
    for (int64_t g = 0; g < G1; g++) {
        __m256i qs = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qt + (g * Hp + hb) * 4)), x80);   /* code */
        __m256i qa = _mm256_abs_epi8(qs);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m256i kb = _mm256_sign_epi8(_mm256_set1_epi32(rd_i32(k + r * rb + 4 * g)), qs);
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, kb), ones);
            if (g < G0) a0[r] = _mm256_add_epi32(a0[r], p);
            else a1[r] = _mm256_add_epi32(a1[r], p);
        }
    }
    __m256 d0 = _mm256_loadu_ps(dq + hb), d1 = _mm256_loadu_ps(dq + Hp + hb);
    float t[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = kv + r * rb;
        __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(a0[r]), _mm256_mul_ps(d0, _mm256_set1_ps(rd_f32(row))));
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(a1[r]), _mm256_mul_ps(d1, _mm256_set1_ps(rd_f32(row + 4))));
        _mm256_storeu_ps(t[r], _mm256_add_ps(x, y));
    }
    for (int64_t h = 0; h < nh; h++)
        for (int r = 0; r < nr; r++) s[(hb + h) * ls + r] = t[r][h];
}

void ds_mla_scores_i8_avx2(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                           int64_t W, int64_t R, int64_t n) {
    int64_t Hp = DS_MLA_I8_HP(H), G0 = R / 4, G1 = W / 4;
    const float *dq = (const float *)qi;
    const uint8_t *qt = qi + 8 * Hp;
    for (int64_t hb = 0; hb < H; hb += 8) {
        int64_t nh = H - hb < 8 ? H - hb : 8, j = 0;
        for (; j + 4 <= n; j += 4) sc_tile(4, s + j, ls, qt, Hp, hb, nh, dq, kv + j * rb, rb, G0, G1);
        for (; j < n; j++) sc_tile(1, s + j, ls, qt, Hp, hb, nh, dq, kv + j * rb, rb, G0, G1);
    }
}

/* nh (<= 4) heads over one 16-column chunk: vt (np/2 pairs × 2 vectors, pair stride cs bytes) */
T256_INLINE void pv_tile(int nh, float *u, int64_t R, const uint8_t *pq, int64_t np, const float *dp,
                         const float *alpha, const uint8_t *vt, int64_t cs, int64_t npair) {
    __m256i acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int64_t t = 0; t < npair; t++) {
        __m256i v0 = _mm256_load_si256((const __m256i *)(vt + t * cs)), v1 = _mm256_load_si256((const __m256i *)(vt + t * cs + 32));
#pragma GCC unroll 4
        for (int i = 0; i < nh; i++) {
            uint32_t w = (uint32_t)pq[i * np + 2 * t] | (uint32_t)pq[i * np + 2 * t + 1] << 16;
            __m256i wb = _mm256_set1_epi32((int)w);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(v0, wb));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(v1, wb));
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++) {
        /* v0 holds columns 0-3 | 8-11, v1 4-7 | 12-15 (128-bit lanes): put them in order */
        __m256i o[2] = { _mm256_permute2x128_si256(acc[i][0], acc[i][1], 0x20),
                         _mm256_permute2x128_si256(acc[i][0], acc[i][1], 0x31) };
        __m256 a = _mm256_set1_ps(alpha[i]), d = _mm256_set1_ps(dp[i]);
        for (int k = 0; k < 2; k++) {
            float *uk = u + i * R + 8 * k;
            __m256 x = _mm256_mul_ps(a, _mm256_loadu_ps(uk)), y = _mm256_mul_ps(d, _mm256_cvtepi32_ps(o[k]));
            _mm256_storeu_ps(uk, _mm256_add_ps(x, y));
        }
    }
}

void ds_mla_pv_i8_avx2(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                       const uint8_t *kv, int64_t rb, int64_t n, void *scratch) {
    int64_t np = (n + 3) / 4 * 4, npair = (n + 1) / 2, C = R / 16, cs = C * 64;
    uint8_t *vt = scratch;   /* (npair, C, 2 vectors of 32 bytes), 32-byte aligned */
    for (int64_t t = 0; t < npair; t++) {
        const uint8_t *r0 = kv + 2 * t * rb + DS_KV_I8_HEAD, *r1 = 2 * t + 1 < n ? r0 + rb : NULL;
        for (int64_t k = 0; k < C; k++) {
            __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r0 + 16 * k)));
            __m256i x1 = r1 ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r1 + 16 * k))) : _mm256_setzero_si256();
            _mm256_store_si256((__m256i *)(vt + t * cs + k * 64), _mm256_unpacklo_epi16(x0, x1));
            _mm256_store_si256((__m256i *)(vt + t * cs + k * 64 + 32), _mm256_unpackhi_epi16(x0, x1));
        }
    }
    int64_t h = 0;
    for (; h + 4 <= H; h += 4)
        for (int64_t k = 0; k < C; k++)
            pv_tile(4, u + h * R + 16 * k, R, pq + h * np, np, dp + h, alpha + h, vt + k * 64, cs, npair);
    for (; h < H; h++)
        for (int64_t k = 0; k < C; k++)
            pv_tile(1, u + h * R + 16 * k, R, pq + h * np, np, dp + h, alpha + h, vt + k * 64, cs, npair);
}
