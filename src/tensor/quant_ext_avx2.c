/*
 * quant_ext_avx2.c - AVX2 dot products for the types of quant_ext.h
 * (compiled with -mavx2 -mfma -mf16c; reached through quant_avx2.c's
 * dispatch only on CPUs with AVX2+FMA).
 *
 * One kernel for all of them: a weight block is expanded once to int8
 * values with per-16 float scales and offsets (ds_expand_block, the same
 * code as the reference dequantizer), then dotted with each token's
 * quantized activations (A8 for the 32-value types, K8 for the 256-value
 * ones) in integer arithmetic, 32 products per instruction:
 *
 *   Σ x·a = Σ_blocks d_a · ( Σ_16-groups sc_g · Σ q·a_q  +  Σ_g mn_g · Σ a_q )
 *
 * The table lookups of the i-quants stay scalar (in the expansion); the
 * expansion is shared by the up to 4 tokens of a call, and every token's
 * result is computed by the same instructions in the same order whatever
 * the number of tokens, so the 4-token kernel gives each token exactly the
 * 1-token result (batch invariance; tests/test_quant_ext.c checks it).
 * Reference twin: ds_vec_dot_ref (quant.c).
 */
#include "quant_ext.h"
#include "quant_isa.h"
#include "../core/base.h"

#include <immintrin.h>

static inline float hsum_ps(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* 32 signed x signed int8 products, summed in groups of 4: 8 x i32 (lanes
 * 0-3: values 0-15, lanes 4-7: values 16-31). |w| <= 127, |a| <= 127. */
static inline __m256i dot32(__m256i w, __m256i a) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

void ds_dot_ext_avx2(ds_dtype t, const void *w, const int8_t *const *act, int T, int64_t K, float *out) {
    DS_ASSERT(T >= 1 && T <= 4);
    int kind = ds_act_kind(t);
    int64_t B = kind == 1 ? 32 : 256, nb = K / B;
    size_t bb = ds_dtype_block_bytes(t);
    _Alignas(32) int8_t q[256];
    float sc[16], mn[16];
    __m256 acc[4];
    float tail[4];
    for (int j = 0; j < T; j++) { acc[j] = _mm256_setzero_ps(); tail[j] = 0.0f; }
    for (int64_t b = 0; b < nb; b++) {
        ds_expand_block(t, (const uint8_t *)w + bb * (size_t)b, q, sc, mn);
        __m256i wv[8];
        __m256 sv[8];
        int nv = (int)(B / 32);
        for (int c = 0; c < nv; c++) {
            wv[c] = _mm256_load_si256((const __m256i *)(q + 32 * c));
            sv[c] = _mm256_setr_m128(_mm_set1_ps(sc[2 * c]), _mm_set1_ps(sc[2 * c + 1]));
        }
        for (int j = 0; j < T; j++) {
            const int8_t *a = act[j] + b * B;
            const float *dq = (const float *)(act[j] + K);
            __m256 s = _mm256_setzero_ps();
            for (int c = 0; c < nv; c++)
                s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(wv[c], _mm256_loadu_si256((const __m256i *)(a + 32 * c)))), sv[c], s);
            float m = 0.0f;
            if (kind == 1) {
                m = mn[0] * dq[nb + b];   /* Σ a_q of the block */
            } else {
                const int16_t *bs = (const int16_t *)(dq + nb) + 16 * b;
                for (int g = 0; g < 16; g++) m += mn[g] * (float)bs[g];
            }
            acc[j] = _mm256_fmadd_ps(s, _mm256_set1_ps(dq[b]), acc[j]);
            tail[j] += m * dq[b];
        }
    }
    for (int j = 0; j < T; j++) out[j] = hsum_ps(acc[j]) + tail[j];
}
