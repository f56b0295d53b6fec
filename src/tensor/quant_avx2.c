/*
 * quant_avx2.c - AVX2 kernels for the block-quantized types (compiled with
 * -mavx2 -mfma -mf16c; ops.c calls them only when the CPU has AVX2+FMA).
 *
 *   ds_quantize_act_avx2   fp32 activations -> A8 / K8 rows (bit-exact with
 *                          ds_quantize_act_ref: same scale, RNE rounding)
 *   ds_vec_dot_avx2        one weight row · one quantized activation row
 *   ds_vec_dot4_avx2       four weight rows · one activation row (decode:
 *                          the activation blocks are loaded once per 4 rows)
 *   ds_dequant_row_avx2    weight row -> fp32 (prefill panels)
 *
 * Integer products use _mm256_maddubs_epi16(u8, s8): the weight side is
 * made unsigned (nibbles are 0..15, Q6_K values 0..63, Q5_0 0..31) and the
 * zero point is removed afterwards with the per-block activation sums.
 * Q8_0 weights are signed, so they use the sign trick |w|·sign(a, w).
 */
#include "quant.h"
#include "quant_isa.h"
#include "../core/base.h"

#include <immintrin.h>
#include "simd_hsum.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 32 x int8 products summed in pairs of 16 bits then 32 bits: Σ u·s -> 8 x i32 */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
/* signed x signed */
static inline __m256i dot_s8s8(__m256i w, __m256i a) {
    return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* 16 bytes of nibbles -> 32 bytes: [low nibbles (values 0..15) | high nibbles (16..31)] */
static inline __m256i nibbles_q4_0(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    return _mm256_set_m128i(hi, lo);
}

/* 32 bits -> 32 bytes, 0x10 where the bit is set */
static inline __m256i bits_to_0x10(const uint8_t *qh4) {
    uint32_t x;
    memcpy(&x, qh4, 4);
    __m256i v = _mm256_set1_epi32((int)x);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
    v = _mm256_shuffle_epi8(v, shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfeULL);
    v = _mm256_or_si256(v, bit);
    v = _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* ------------------------------------------------------------ activations */

void ds_quantize_act_avx2(ds_dtype t, const float *x, void *out, int64_t K) {
    int kind = ds_act_kind(t);
    int8_t *q = out;
    int64_t B = kind == 1 ? DS_QK : DS_QK_K;
    float *d = (float *)(q + K);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < K / B; b++) {
        const float *xb = x + b * B;
        __m256 m = _mm256_setzero_ps();
        for (int64_t i = 0; i < B; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        __m256 vid = _mm256_set1_ps(id);
        for (int64_t i = 0; i < B; i += 32) {
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i), vid));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), vid));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 16), vid));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 24), vid));
            __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
            __m256i p = _mm256_packs_epi16(p01, p23);
            /* undo the lane interleave of the packs */
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + b * B + i), p);
        }
    }
    const __m256i ones8 = _mm256_set1_epi8(1);
    if (kind == 1) {
        float *s = d + K / DS_QK;
        for (int64_t b = 0; b < K / DS_QK; b++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q + b * DS_QK));
            __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), _mm256_set1_epi16(1));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            s[b] = (float)_mm_cvtsi128_si32(s4);
        }
    } else {
        int16_t *bs = (int16_t *)(d + K / DS_QK_K);
        for (int64_t g = 0; g < K / 32; g++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q + g * 32));
            __m256i s16 = _mm256_maddubs_epi16(ones8, v);            /* 16 pair sums */
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); /* 8 quad sums */
            /* each 128-bit lane = 16 values: sum its 4 i32 */
            __m256i r = _mm256_add_epi32(s32, _mm256_shuffle_epi32(s32, 0x4e));
            r = _mm256_add_epi32(r, _mm256_shuffle_epi32(r, 0xb1));
            bs[2 * g] = (int16_t)_mm256_extract_epi32(r, 0);
            bs[2 * g + 1] = (int16_t)_mm256_extract_epi32(r, 4);
        }
        ds_act_k8_pairs(bs, K);   /* 4 integers per 256 values: scalar (quant.c) */
    }
}

/* -------------------------------------------------------------- dot: A8 */

/* fp16 scales of 8 consecutive blocks of `stride` bytes (d first) -> fp32 */
static inline __m256 block_d8(const uint8_t *p, size_t stride) {
    uint16_t h[8];
    for (int k = 0; k < 8; k++) memcpy(&h[k], p + stride * (size_t)k, 2);
    /* built in registers: a 16-byte load of just-stored halves would stall store forwarding */
    return _mm256_cvtph_ps(_mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3], (short)h[4], (short)h[5],
                                          (short)h[6], (short)h[7]));
}

static inline __m256 lane(__m256 v, int k) { return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(k)); }

/* Blocks are processed 8 at a time: the 8 scale products dw·da are formed
 * in one vector (zero-point terms too), then each block's integer dot is
 * scaled by its lane. */
static float dot_q8_0(const ds_block_q8_0 *w, const int8_t *q, const float *d, int64_t nb) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256 sc = _mm256_mul_ps(block_d8((const uint8_t *)&w[b], sizeof *w), _mm256_loadu_ps(d + b));
        const int8_t *qb = q + 32 * b;
#define STEP(k, acc) acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8s8(_mm256_loadu_si256((const __m256i *)w[b + k].qs), \
                                 _mm256_loadu_si256((const __m256i *)(qb + 32 * k)))), lane(sc, k), acc)
        STEP(0, acc0); STEP(1, acc1); STEP(2, acc2); STEP(3, acc3);
        STEP(4, acc0); STEP(5, acc1); STEP(6, acc2); STEP(7, acc3);
#undef STEP
    }
    for (; b < nb; b++) {
        __m256i p0 = dot_s8s8(_mm256_loadu_si256((const __m256i *)w[b].qs), _mm256_loadu_si256((const __m256i *)(q + 32 * b)));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(h2f(w[b].d) * d[b]), acc0);
    }
    return ds_hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

static float dot_q4_0(const ds_block_q4_0 *w, const int8_t *q, const float *d, const float *s, int64_t nb) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    __m256 zacc = _mm256_setzero_ps();
    float zp = 0;
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256 sc = _mm256_mul_ps(block_d8((const uint8_t *)&w[b], sizeof *w), _mm256_loadu_ps(d + b));
        zacc = _mm256_fmadd_ps(sc, _mm256_loadu_ps(s + b), zacc);
        const int8_t *qb = q + 32 * b;
#define STEP(k, acc) acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(nibbles_q4_0(w[b + k].qs), \
                                 _mm256_loadu_si256((const __m256i *)(qb + 32 * k)))), lane(sc, k), acc)
        STEP(0, acc0); STEP(1, acc1); STEP(2, acc2); STEP(3, acc3);
        STEP(4, acc0); STEP(5, acc1); STEP(6, acc2); STEP(7, acc3);
#undef STEP
    }
    for (; b < nb; b++) {
        __m256i p0 = dot_u8s8(nibbles_q4_0(w[b].qs), _mm256_loadu_si256((const __m256i *)(q + 32 * b)));
        float s0 = h2f(w[b].d) * d[b];
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(s0), acc0);
        zp += s0 * s[b];
    }
    return ds_hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))) - 8.0f * (zp + ds_hsum256(zacc));
}

static float dot_q5_0(const ds_block_q5_0 *w, const int8_t *q, const float *d, const float *s, int64_t nb) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    __m256 zacc = _mm256_setzero_ps();
    float zp = 0;
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256 sc = _mm256_mul_ps(block_d8((const uint8_t *)&w[b], sizeof *w), _mm256_loadu_ps(d + b));
        zacc = _mm256_fmadd_ps(sc, _mm256_loadu_ps(s + b), zacc);
        const int8_t *qb = q + 32 * b;
#define STEP(k, acc) acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(_mm256_or_si256(nibbles_q4_0(w[b + k].qs), \
                                 bits_to_0x10(w[b + k].qh)), _mm256_loadu_si256((const __m256i *)(qb + 32 * k)))), lane(sc, k), acc)
        STEP(0, acc0); STEP(1, acc1); STEP(2, acc2); STEP(3, acc3);
        STEP(4, acc0); STEP(5, acc1); STEP(6, acc2); STEP(7, acc3);
#undef STEP
    }
    for (; b < nb; b++) {
        __m256i u = _mm256_or_si256(nibbles_q4_0(w[b].qs), bits_to_0x10(w[b].qh));
        __m256i p = dot_u8s8(u, _mm256_loadu_si256((const __m256i *)(q + 32 * b)));
        float s0 = h2f(w[b].d) * d[b];
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s0), acc0);
        zp += s0 * s[b];
    }
    return ds_hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))) - 16.0f * (zp + ds_hsum256(zacc));
}

/* -------------------------------------------------------------- dot: K8 */

static inline void q4k_unpack(const uint8_t *sc12, uint8_t *sc, uint8_t *m) {
    for (int j = 0; j < 8; j++) ds_q4k_scale_min(j, sc12, &sc[j], &m[j]);
}

/* The 12 packed bytes -> 16 x i16 [sc0..sc7 | m0..m7] (see ds_q4k_scale_min). */
static inline __m256i q4k_scales_mins(const uint8_t *q) {
    uint32_t u[3];
    memcpy(u, q, 12);
    uint32_t o0 = u[0] & 0x3f3f3f3fu;
    uint32_t o1 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    uint32_t o2 = u[1] & 0x3f3f3f3fu;
    uint32_t o3 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int)o0, (int)o1, (int)o2, (int)o3));
}

/* pshufb controls: broadcast i16 element j of each 128-bit lane (k4: same j in
 * both lanes; k6: element 2g in the low lane, 2g+1 in the high lane) */
#define SHUF16(j) (char)(2 * (j)), (char)(2 * (j) + 1)
#define SHUF16x8(j) SHUF16(j), SHUF16(j), SHUF16(j), SHUF16(j), SHUF16(j), SHUF16(j), SHUF16(j), SHUF16(j)
static const char k_shuf_k4[8][32] __attribute__((aligned(32))) = {
    { SHUF16x8(0), SHUF16x8(0) }, { SHUF16x8(1), SHUF16x8(1) }, { SHUF16x8(2), SHUF16x8(2) }, { SHUF16x8(3), SHUF16x8(3) },
    { SHUF16x8(4), SHUF16x8(4) }, { SHUF16x8(5), SHUF16x8(5) }, { SHUF16x8(6), SHUF16x8(6) }, { SHUF16x8(7), SHUF16x8(7) },
};
static const char k_shuf_k6[4][32] __attribute__((aligned(32))) = {
    { SHUF16x8(0), SHUF16x8(1) }, { SHUF16x8(2), SHUF16x8(3) }, { SHUF16x8(4), SHUF16x8(5) }, { SHUF16x8(6), SHUF16x8(7) },
};

static float dot_q4_K(const ds_block_q4_K *w, const int8_t *q, const float *d, const int16_t *bs, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    /* shuffle controls broadcasting i16 scale j of a 128-bit lane to all 8 i16 of that lane */
    for (int64_t b = 0; b < nb; b++) {
        __m256i sm = q4k_scales_mins(w[b].scales);
        float dd = h2f(w[b].d) * d[b], dm = h2f(w[b].dmin) * d[b];
        /* mins: Σ_j m_j · (bsum[2j] + bsum[2j+1]) */
        __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + 16 * b));
        __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1));
        __m128i mprod = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), pairs);
        accm = _mm_fmadd_ps(_mm_set1_ps(dm), _mm_cvtepi32_ps(mprod), accm);
        __m128i sc128 = _mm256_castsi256_si128(sm);
        __m256i scv = _mm256_set_m128i(sc128, sc128);
        const int8_t *qb = q + 256 * b;
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i bytes = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * c));
            __m256i lo = _mm256_and_si256(bytes, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), m4);
            __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(qb + 64 * c)));
            __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(qb + 64 * c + 32)));
            /* i16 scale 2c to every lane, and 2c+1 */
            __m256i s_lo = _mm256_shuffle_epi8(scv, _mm256_load_si256((const __m256i *)k_shuf_k4[2 * c]));
            __m256i s_hi = _mm256_shuffle_epi8(scv, _mm256_load_si256((const __m256i *)k_shuf_k4[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(plo, s_lo), _mm256_madd_epi16(phi, s_hi)));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(dd), acc);
    }
    __m128 m2 = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    m2 = _mm_add_ss(m2, _mm_movehdup_ps(m2));
    return ds_hsum256(acc) - _mm_cvtss_f32(m2);
}

/* The 128 six-bit values of half h of a Q6_K block as 4 vectors of 32 bytes
 * (0..63, zero point not removed): v[g] = values 32g .. 32g+31 of the half. */
static inline void q6k_unpack_half(const ds_block_q6_K *blk, int h, __m256i v[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256i qh = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
    __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
    v[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
    v[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
    v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
}

static float dot_q6_K(const ds_block_q6_K *w, const int8_t *q, const float *d, const int16_t *bs, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].scales));
        /* zero point: 32 · Σ_j sc_j · bsum_j */
        __m256i zp = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(bs + 16 * b)));
        const int8_t *qb = q + 256 * b;
        __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(zp, 5));
        for (int h = 0; h < 2; h++) {
            __m128i sh = h ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16);
            __m256i scv = _mm256_set_m128i(sh, sh);
            __m256i v[4];
            q6k_unpack_half(&w[b], h, v);
            for (int g = 0; g < 4; g++) {
                __m256i p = _mm256_maddubs_epi16(v[g], _mm256_loadu_si256((const __m256i *)(qb + 128 * h + 32 * g)));
                /* low 128 lanes use scale 2g, high lanes 2g+1 */
                __m256i ctl = _mm256_load_si256((const __m256i *)k_shuf_k6[g]);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scv, ctl)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(w[b].d) * d[b]), acc);
    }
    return ds_hsum256(acc);
}

float ds_vec_dot_avx2(ds_dtype t, const void *w, const void *act, int64_t K) {
    const int8_t *q = act;
    switch (t) {
    case DS_DTYPE_Q8_0: return dot_q8_0(w, q, (const float *)(q + K), K / DS_QK);
    case DS_DTYPE_Q4_0: return dot_q4_0(w, q, (const float *)(q + K), (const float *)(q + K) + K / DS_QK, K / DS_QK);
    case DS_DTYPE_Q5_0: return dot_q5_0(w, q, (const float *)(q + K), (const float *)(q + K) + K / DS_QK, K / DS_QK);
    case DS_DTYPE_Q4_K:
        return dot_q4_K(w, q, (const float *)(q + K), (const int16_t *)((const float *)(q + K) + K / DS_QK_K), K / DS_QK_K);
    case DS_DTYPE_Q6_K:
        return dot_q6_K(w, q, (const float *)(q + K), (const int16_t *)((const float *)(q + K) + K / DS_QK_K), K / DS_QK_K);
    default: {
        float r = 0.0f;
        if (ds_dtype_is_quant(t)) ds_dot_ext_avx2(t, w, &q, 1, K, &r);
        return r;
    }
    }
}

/* ------------------------------------------------ multi-token dots (x4) */

/* One weight row against 4 activation rows (prefill / batched decode): the
 * weight unpacking (nibbles, scale shuffles, fp16 scales) is done once per
 * block and reused for the 4 tokens. Fewer tokens: pass duplicates. */

static inline __m256 zext128(__m128 x) { return _mm256_insertf128_ps(_mm256_setzero_ps(), x, 0); }

static void dot4_q4_K(const ds_block_q4_K *w, const int8_t *const *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK_K;
    const float *d[4];
    const int16_t *bs[4];
    for (int t = 0; t < 4; t++) { d[t] = (const float *)(q[t] + K); bs[t] = (const int16_t *)(d[t] + nb); }
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t b = 0; b < nb; b++) {
        __m256i sm = q4k_scales_mins(w[b].scales);
        float dw = h2f(w[b].d), dmw = h2f(w[b].dmin);
        __m128i mins = _mm256_extracti128_si256(sm, 1);
        for (int t = 0; t < 4; t++) {
            __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs[t] + 16 * b));
            __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1));
            __m256 mf = zext128(_mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs)));
            acc[t] = _mm256_fmadd_ps(mf, _mm256_set1_ps(-dmw * d[t][b]), acc[t]);
        }
        __m128i sc128 = _mm256_castsi256_si128(sm);
        __m256i scv = _mm256_set_m128i(sc128, sc128);
        __m256i sumi[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256() };
        for (int c = 0; c < 4; c++) {
            __m256i bytes = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * c));
            __m256i lo = _mm256_and_si256(bytes, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), m4);
            __m256i s_lo = _mm256_shuffle_epi8(scv, _mm256_load_si256((const __m256i *)k_shuf_k4[2 * c]));
            __m256i s_hi = _mm256_shuffle_epi8(scv, _mm256_load_si256((const __m256i *)k_shuf_k4[2 * c + 1]));
            for (int t = 0; t < 4; t++) {
                const int8_t *qb = q[t] + 256 * b + 64 * c;
                __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)qb)), s_lo);
                __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(qb + 32))), s_hi);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(plo, phi));
            }
        }
        for (int t = 0; t < 4; t++) acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(dw * d[t][b]), acc[t]);
    }
    for (int t = 0; t < 4; t++) out[t] = ds_hsum256(acc[t]);
}

static void dot4_q6_K(const ds_block_q6_K *w, const int8_t *const *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK_K;
    const float *d[4];
    const int16_t *bs[4];
    for (int t = 0; t < 4; t++) { d[t] = (const float *)(q[t] + K); bs[t] = (const int16_t *)(d[t] + nb); }
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int64_t b = 0; b < nb; b++) {
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].scales));
        __m256i sumi[4];
        for (int t = 0; t < 4; t++) {
            __m256i zp = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(bs[t] + 16 * b)));
            sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(zp, 5));
        }
        for (int h = 0; h < 2; h++) {
            __m128i sh = h ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16);
            __m256i scv = _mm256_set_m128i(sh, sh);
            __m256i v[4];
            q6k_unpack_half(&w[b], h, v);
            for (int g = 0; g < 4; g++) {
                __m256i scg = _mm256_shuffle_epi8(scv, _mm256_load_si256((const __m256i *)k_shuf_k6[g]));
                for (int t = 0; t < 4; t++) {
                    __m256i p = _mm256_maddubs_epi16(v[g], _mm256_loadu_si256((const __m256i *)(q[t] + 256 * b + 128 * h + 32 * g)));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scg));
                }
            }
        }
        float dw = h2f(w[b].d);
        for (int t = 0; t < 4; t++) acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(dw * d[t][b]), acc[t]);
    }
    for (int t = 0; t < 4; t++) out[t] = ds_hsum256(acc[t]);
}

/* A8 types: kind 0 = Q8_0 (signed), 4 = Q4_0, 5 = Q5_0 */
static inline __m256i a8_weights(const uint8_t *blk, int kind) {
    if (kind == 0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    if (kind == 4) return nibbles_q4_0(blk + 2);
    return _mm256_or_si256(nibbles_q4_0(blk + 6), bits_to_0x10(blk + 2));
}

static void dot4_a8(const uint8_t *w, size_t bsz, int kind, const int8_t *const *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK;
    const float *d[4], *s[4];
    for (int t = 0; t < 4; t++) { d[t] = (const float *)(q[t] + K); s[t] = d[t] + nb; }
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    __m256 zacc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    float ztail[4] = { 0, 0, 0, 0 };
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256 dw = block_d8(w + bsz * (size_t)b, bsz);
        __m256 sc[4];
        for (int t = 0; t < 4; t++) {
            sc[t] = _mm256_mul_ps(dw, _mm256_loadu_ps(d[t] + b));
            if (kind) zacc[t] = _mm256_fmadd_ps(sc[t], _mm256_loadu_ps(s[t] + b), zacc[t]);
        }
        for (int k = 0; k < 8; k++) {
            __m256i u = a8_weights(w + bsz * (size_t)(b + k), kind);
            __m256i au = kind == 0 ? _mm256_sign_epi8(u, u) : u;
            for (int t = 0; t < 4; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(q[t] + 32 * (b + k)));
                __m256i p = dot_u8s8(au, kind == 0 ? _mm256_sign_epi8(a, u) : a);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), lane(sc[t], k), acc[t]);
            }
        }
    }
    for (; b < nb; b++) {
        uint16_t dh;
        memcpy(&dh, w + bsz * (size_t)b, 2);
        __m256i u = a8_weights(w + bsz * (size_t)b, kind);
        __m256i au = kind == 0 ? _mm256_sign_epi8(u, u) : u;
        for (int t = 0; t < 4; t++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(q[t] + 32 * b));
            __m256i p = dot_u8s8(au, kind == 0 ? _mm256_sign_epi8(a, u) : a);
            float sc = h2f(dh) * d[t][b];
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(sc), acc[t]);
            ztail[t] += sc * s[t][b];
        }
    }
    float zk = kind == 4 ? 8.0f : kind == 5 ? 16.0f : 0.0f;
    for (int t = 0; t < 4; t++) out[t] = ds_hsum256(acc[t]) - zk * (ds_hsum256(zacc[t]) + ztail[t]);
}

void ds_vec_dot4_avx2(ds_dtype t, const void *w, const void *const *act, int64_t K, float *out) {
    const int8_t *const *q = (const int8_t *const *)act;
    switch (t) {
    case DS_DTYPE_Q8_0: dot4_a8(w, sizeof(ds_block_q8_0), 0, q, K, out); break;
    case DS_DTYPE_Q4_0: dot4_a8(w, sizeof(ds_block_q4_0), 4, q, K, out); break;
    case DS_DTYPE_Q5_0: dot4_a8(w, sizeof(ds_block_q5_0), 5, q, K, out); break;
    case DS_DTYPE_Q4_K: dot4_q4_K(w, q, K, out); break;
    case DS_DTYPE_Q6_K: dot4_q6_K(w, q, K, out); break;
    default: if (ds_dtype_is_quant(t)) ds_dot_ext_avx2(t, w, q, 4, K, out); break;
    }
}

/* ---------------------------------------------------------- dequant rows */

void ds_dequant_row_avx2(ds_dtype t, const void *in, float *y, int64_t n) {
    switch (t) {
    case DS_DTYPE_Q8_0: {
        const ds_block_q8_0 *x = in;
        for (int64_t b = 0; b < n / DS_QK; b++) {
            __m256 d = _mm256_set1_ps(h2f(x[b].d));
            for (int i = 0; i < 32; i += 8) {
                __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x[b].qs + i)));
                _mm256_storeu_ps(y + 32 * b + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
            }
        }
        break;
    }
    case DS_DTYPE_Q4_0: case DS_DTYPE_Q5_0: {
        int64_t bsz = t == DS_DTYPE_Q4_0 ? 18 : 22;
        for (int64_t b = 0; b < n / DS_QK; b++) {
            const uint8_t *blk = (const uint8_t *)in + bsz * b;
            uint16_t dh;
            memcpy(&dh, blk, 2);
            __m256i u;
            if (t == DS_DTYPE_Q4_0) u = _mm256_sub_epi8(nibbles_q4_0(blk + 2), _mm256_set1_epi8(8));
            else u = _mm256_sub_epi8(_mm256_or_si256(nibbles_q4_0(blk + 6), bits_to_0x10(blk + 2)), _mm256_set1_epi8(16));
            __m256 d = _mm256_set1_ps(h2f(dh));
            __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
            _mm256_storeu_ps(y + 32 * b, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
            _mm256_storeu_ps(y + 32 * b + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
            _mm256_storeu_ps(y + 32 * b + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
            _mm256_storeu_ps(y + 32 * b + 24, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
        }
        break;
    }
    case DS_DTYPE_Q4_K: {
        const ds_block_q4_K *x = in;
        for (int64_t b = 0; b < n / DS_QK_K; b++) {
            uint8_t sc[8], mn[8];
            q4k_unpack(x[b].scales, sc, mn);
            float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
            for (int c = 0; c < 4; c++) {
                const uint8_t *qs = x[b].qs + 32 * c;
                for (int half = 0; half < 2; half++) {
                    __m256 dd = _mm256_set1_ps(d * sc[2 * c + half]), mm = _mm256_set1_ps(dmin * mn[2 * c + half]);
                    float *o = y + 256 * b + 64 * c + 32 * half;
                    for (int i = 0; i < 32; i += 8) {
                        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + i)));
                        v = half ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, _mm256_set1_epi32(15));
                        _mm256_storeu_ps(o + i, _mm256_fmsub_ps(dd, _mm256_cvtepi32_ps(v), mm));
                    }
                }
            }
        }
        break;
    }
    case DS_DTYPE_Q6_K: {
        const ds_block_q6_K *x = in;
        const __m256i k32 = _mm256_set1_epi8(32);
        for (int64_t b = 0; b < n / DS_QK_K; b++) {
            float d = h2f(x[b].d);
            for (int h = 0; h < 2; h++) {
                __m256i v[4];
                q6k_unpack_half(&x[b], h, v);
                for (int g = 0; g < 4; g++) {
                    __m256i sv = _mm256_sub_epi8(v[g], k32);
                    float *o = y + 256 * b + 128 * h + 32 * g;
                    __m128i lo = _mm256_castsi256_si128(sv), hi = _mm256_extracti128_si256(sv, 1);
                    __m256 s0 = _mm256_set1_ps(d * x[b].scales[8 * h + 2 * g]), s1 = _mm256_set1_ps(d * x[b].scales[8 * h + 2 * g + 1]);
                    _mm256_storeu_ps(o, _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
                    _mm256_storeu_ps(o + 8, _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
                    _mm256_storeu_ps(o + 16, _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
                    _mm256_storeu_ps(o + 24, _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
                }
            }
        }
        break;
    }
    default:
        if (t >= DS_DTYPE_Q4_1 && ds_dtype_is_quant(t)) ds_dequant_ext_avx2(t, in, y, n);
        else ds_dequant_row_ref(t, in, y, n);
    }
}

/* ------------------------------------------------------------------ FP8 */

/* The 7 magnitude bits of an e4m3 byte placed at f16 bits [13:7] give an
 * f16 equal to fp8 · 2^-8 (normals and subnormals alike); F16C converts it. */
static inline __m256 fp8x8_scaled_down(const uint8_t *p) {
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
    __m128i mag = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), 7);
    return _mm256_cvtph_ps(_mm_or_si128(sign, mag));
}

void ds_cvt_fp8_avx2(float *out, const uint8_t *w, int64_t n, const float *scale, int64_t c0, int block) {
    int64_t i = 0;
    while (i < n) {
        int64_t c = c0 + i;
        int64_t end = scale ? DS_MIN(n, (c / block + 1) * block - c0) : n;
        float s = (scale ? scale[c / block] : 1.0f) * 256.0f;
        __m256 vs = _mm256_set1_ps(s);
        for (; i + 8 <= end; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(fp8x8_scaled_down(w + i), vs));
        for (; i < end; i++) {
            uint16_t h = (uint16_t)(((w[i] & 0x80) << 8) | ((w[i] & 0x7f) << 7));
            out[i] = _cvtsh_ss(h) * s;
        }
    }
}
