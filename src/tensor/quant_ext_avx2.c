/*
 * quant_ext_avx2.c - AVX2 dot products for the types of quant_ext.h
 * (compiled with -mavx2 -mfma -mf16c; reached through quant_avx2.c's
 * dispatch only on CPUs with AVX2+FMA).
 *
 * One kernel for all of them: a weight block is expanded once to int8
 * values with per-16 float scales and offsets (the form of ds_expand_block,
 * which is also the reference dequantizer), then dotted with each token's
 * quantized activations (A8 for the 32-value types, K8 for the 256-value
 * ones) in integer arithmetic, 32 products per instruction:
 *
 *   Σ x·a = Σ_blocks d_a · ( Σ_16-groups sc_g · Σ q·a_q  +  Σ_g mn_g · Σ a_q )
 *
 * The integers come from ds_expand_ints_avx2 (the i-quants' grid rows of 4
 * groups of 8 values gathered with one vector set and signed with one mask;
 * bit planes with shifts; IQ4 levels with pshufb), bit-exact with the
 * reference expansion; the scales from ds_expand_block. One expansion serves
 * the up to 4 tokens of a call, and every token's result is computed by the
 * same instructions in the same order whatever the number of tokens, so the
 * multi-token kernel gives each token exactly its 1-token result (batch
 * invariance; tests/test_quant_ext.c and model_batch_invariant_ext_types).
 * Reference twin: ds_vec_dot_ref (quant.c).
 */
#include "quant_ext.h"
#include "quant_isa.h"
#include "iq_tables.h"
#include "../core/base.h"

#include <immintrin.h>
#include "simd_hsum.h"
#include <string.h>

/* 32 signed x signed int8 products, summed in groups of 4: 8 x i32 (lanes
 * 0-3: values 0-15, lanes 4-7: values 16-31). |w| <= 127, |a| <= 127. */
static inline __m256i dot32(__m256i w, __m256i a) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* ------------------------------------------------------ block expansion */

static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* 0xFF in byte i where bit i%8 of byte i/8 of s4 is set */
static inline __m256i sign_mask(uint32_t s4) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)s4), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}
/* g negated where m is 0xFF */
static inline __m256i with_sign(__m256i g, uint32_t s4) {
    __m256i m = sign_mask(s4);
    return _mm256_sub_epi8(_mm256_xor_si256(g, m), m);
}
static inline uint32_t ksigns4(uint32_t a) {
    return (uint32_t)ds_iq_ksigns[a & 127] | (uint32_t)ds_iq_ksigns[(a >> 7) & 127] << 8 |
           (uint32_t)ds_iq_ksigns[(a >> 14) & 127] << 16 | (uint32_t)ds_iq_ksigns[(a >> 21) & 127] << 24;
}
static inline __m256i grid8x4(const uint64_t *g, int i0, int i1, int i2, int i3) {
    return _mm256_set_epi64x((long long)g[i3], (long long)g[i2], (long long)g[i1], (long long)g[i0]);
}
static inline __m256i grid4x8(const uint32_t *g, const int *i) {
    return _mm256_set_epi32((int)g[i[7]], (int)g[i[6]], (int)g[i[5]], (int)g[i[4]], (int)g[i[3]], (int)g[i[2]], (int)g[i[1]],
                            (int)g[i[0]]);
}
/* IQ1: 8·g + delta (g in -1..1 per byte) */
static inline __m256i iq1_times8(__m256i g, __m256i delta) {
    __m256i g2 = _mm256_add_epi8(g, g), g4 = _mm256_add_epi8(g2, g2);
    return _mm256_add_epi8(_mm256_add_epi8(g4, g4), delta);
}
/* 16 bytes -> [low nibbles | high nibbles] */
static inline __m256i nibbles16(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    return _mm256_set_m128i(hi, lo);
}
/* 32 bits -> 32 bytes, 0x10 where set */
static inline __m256i bits_0x10(uint32_t x) { return _mm256_and_si256(sign_mask(x), _mm256_set1_epi8(0x10)); }

/* The integers of ds_expand_block (same values; tests/test_quant_ext.c
 * compares them), with AVX2: the grid rows of 4 groups of 8 (or 8 groups of 4)
 * values are gathered with one set and signed with one mask. */
static inline void expand_ints(ds_dtype t, const void *blk, int8_t *q) {
    const uint8_t *b = blk;
    __m256i *o = (__m256i *)q;   /* 32-byte aligned */
    const __m256i k3 = _mm256_set1_epi8(3), k1 = _mm256_set1_epi8(1), k15 = _mm256_set1_epi8(15);
    switch (t) {
    case DS_DTYPE_Q4_1: o[0] = nibbles16(b + 4); break;
    case DS_DTYPE_Q5_1: o[0] = _mm256_or_si256(nibbles16(b + 8), bits_0x10(rd32(b + 4))); break;
    case DS_DTYPE_IQ4_NL: {
        __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
        o[0] = _mm256_shuffle_epi8(tab, nibbles16(b + 2));
        break;
    }
    case DS_DTYPE_IQ4_XS: {
        __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
        for (int ib = 0; ib < 8; ib++) o[ib] = _mm256_shuffle_epi8(tab, nibbles16(b + 8 + 16 * ib));
        break;
    }
    case DS_DTYPE_Q2_K:
        for (int n = 0; n < 2; n++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * n));
            for (int j = 0; j < 4; j++) o[4 * n + j] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), k3);
        }
        break;
    case DS_DTYPE_Q3_K: {
        __m256i hm = _mm256_loadu_si256((const __m256i *)b);
        for (int n = 0; n < 2; n++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * n));
            for (int j = 0; j < 4; j++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), k3);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + j), k1);
                o[4 * n + j] = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hb, 2)), _mm256_set1_epi8(4));
            }
        }
        break;
    }
    case DS_DTYPE_Q5_K: {
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 16));
        for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b + 48 + 32 * c));
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), k1), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), k1), 4);
            o[2 * c] = _mm256_or_si256(_mm256_and_si256(v, k15), h0);
            o[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), k15), h1);
        }
        break;
    }
    case DS_DTYPE_IQ2_XXS:
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *p = b + 2 + 8 * ib;
            o[ib] = with_sign(grid8x4(ds_iq2xxs_grid, p[0], p[1], p[2], p[3]), ksigns4(rd32(p + 4)));
        }
        break;
    case DS_DTYPE_IQ2_XS:
        for (int ib = 0; ib < 8; ib++) {
            uint16_t v[4];
            for (int l = 0; l < 4; l++) v[l] = rd16(b + 2 + 8 * ib + 2 * l);
            uint32_t s4 = (uint32_t)ds_iq_ksigns[v[0] >> 9] | (uint32_t)ds_iq_ksigns[v[1] >> 9] << 8 |
                          (uint32_t)ds_iq_ksigns[v[2] >> 9] << 16 | (uint32_t)ds_iq_ksigns[v[3] >> 9] << 24;
            o[ib] = with_sign(grid8x4(ds_iq2xs_grid, v[0] & 511, v[1] & 511, v[2] & 511, v[3] & 511), s4);
        }
        break;
    case DS_DTYPE_IQ2_S:
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *qs = b + 2 + 4 * ib;
            int h = b[66 + ib];
            o[ib] = with_sign(grid8x4(ds_iq2s_grid, qs[0] | (h & 3) << 8, qs[1] | (h >> 2 & 3) << 8, qs[2] | (h >> 4 & 3) << 8,
                                      qs[3] | (h >> 6 & 3) << 8),
                              rd32(b + 34 + 4 * ib));
        }
        break;
    case DS_DTYPE_IQ3_XXS:
        for (int ib = 0; ib < 8; ib++) {
            int idx[8];
            for (int i = 0; i < 8; i++) idx[i] = b[2 + 8 * ib + i];
            o[ib] = with_sign(grid4x8(ds_iq3xxs_grid, idx), ksigns4(rd32(b + 66 + 4 * ib)));
        }
        break;
    case DS_DTYPE_IQ3_S:
        for (int ib = 0; ib < 8; ib++) {
            int idx[8], h = b[66 + ib];
            for (int i = 0; i < 8; i++) idx[i] = b[2 + 8 * ib + i] | (h >> i & 1) << 8;
            o[ib] = with_sign(grid4x8(ds_iq3s_grid, idx), rd32(b + 74 + 4 * ib));
        }
        break;
    case DS_DTYPE_IQ1_S:
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *qs = b + 2 + 4 * ib;
            uint16_t h = rd16(b + 34 + 2 * ib);
            __m256i g = grid8x4(ds_iq1s_grid, qs[0] | (h & 7) << 8, qs[1] | (h >> 3 & 7) << 8, qs[2] | (h >> 6 & 7) << 8,
                                qs[3] | (h >> 9 & 7) << 8);
            o[ib] = iq1_times8(g, _mm256_set1_epi8(h & 0x8000 ? -1 : 1));
        }
        break;
    case DS_DTYPE_IQ1_M:
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *qs = b + 4 * ib;
            int n0 = b[32 + 2 * ib] & 15, n1 = b[32 + 2 * ib] >> 4, n2 = b[33 + 2 * ib] & 15, n3 = b[33 + 2 * ib] >> 4;
            __m256i g = grid8x4(ds_iq1s_grid, qs[0] | (n0 & 7) << 8, qs[1] | (n1 & 7) << 8, qs[2] | (n2 & 7) << 8,
                                qs[3] | (n3 & 7) << 8);
            __m256i d = _mm256_set_epi64x(n3 & 8 ? -1 : 0x0101010101010101, n2 & 8 ? -1 : 0x0101010101010101,
                                          n1 & 8 ? -1 : 0x0101010101010101, n0 & 8 ? -1 : 0x0101010101010101);
            o[ib] = iq1_times8(g, d);
        }
        break;
    default: DS_ASSERT(!"ds_expand_ints_avx2: not a quant_ext.h type");
    }
}

void ds_expand_ints_avx2(ds_dtype t, const void *blk, int8_t *q) { expand_ints(t, blk, q); }

/* The 32-value types (Q4_1, Q5_1, IQ4_NL): one scale d and offset m per
 * block, read here with F16C (the same values as ds_expand_block's) and the
 * 32 integers kept in a register; otherwise the arithmetic of
 * ds_dot_ext_avx2's general loop, so the same bits. */
static void dot_ext32(ds_dtype t, const uint8_t *w, const int8_t *const *act, int T, int64_t K, float *out) {
    int64_t nb = K / 32;
    size_t bb = ds_dtype_block_bytes(t);
    bool offs = t != DS_DTYPE_IQ4_NL;
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
    __m256 acc[4];
    float tail[4];
    for (int j = 0; j < T; j++) { acc[j] = _mm256_setzero_ps(); tail[j] = 0.0f; }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + bb * (size_t)b;
        float d = _cvtsh_ss(rd16(blk)), m = offs ? _cvtsh_ss(rd16(blk + 2)) : 0.0f;
        __m256i wq = t == DS_DTYPE_Q4_1 ? nibbles16(blk + 4)
                   : t == DS_DTYPE_Q5_1 ? _mm256_or_si256(nibbles16(blk + 8), bits_0x10(rd32(blk + 4)))
                   : _mm256_shuffle_epi8(tab, nibbles16(blk + 2));
        __m256 dv = _mm256_set1_ps(d);
        for (int j = 0; j < T; j++) {
            const float *dq = (const float *)(act[j] + K);
            __m256 sv = _mm256_mul_ps(_mm256_cvtepi32_ps(dot32(wq, _mm256_loadu_si256((const __m256i *)(act[j] + 32 * b)))), dv);
            acc[j] = _mm256_fmadd_ps(sv, _mm256_set1_ps(dq[b]), acc[j]);
            if (offs) tail[j] += m * dq[nb + b] * dq[b];
        }
    }
    for (int j = 0; j < T; j++) out[j] = ds_hsum256(acc[j]) + tail[j];
}

static bool has_offsets(ds_dtype t) {
    return t == DS_DTYPE_Q4_1 || t == DS_DTYPE_Q5_1 || t == DS_DTYPE_Q2_K || t == DS_DTYPE_Q5_K;
}

void ds_dot_ext_avx2(ds_dtype t, const void *w, const int8_t *const *act, int T, int64_t K, float *out) {
    DS_ASSERT(T >= 1 && T <= 4);
    int kind = ds_act_kind(t);
    if (kind == 1) {
        dot_ext32(t, w, act, T, K, out);
        return;
    }
    bool offs = has_offsets(t);
    int64_t B = kind == 1 ? 32 : 256, nb = K / B;
    size_t bb = ds_dtype_block_bytes(t);
    _Alignas(32) int8_t q[256];
    float sc[16], mn[16];
    __m256 acc[4];
    float tail[4];
    for (int j = 0; j < T; j++) { acc[j] = _mm256_setzero_ps(); tail[j] = 0.0f; }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = (const uint8_t *)w + bb * (size_t)b;
        ds_expand_block(t, blk, NULL, sc, mn);
        expand_ints(t, blk, q);
        /* per 32-value group c: the scales of its two halves of 16 */
        _Alignas(32) float sv[8][8];
        int nv = (int)(B / 32);
        for (int c = 0; c < nv; c++)
            _mm256_store_ps(sv[c], _mm256_setr_m128(_mm_set1_ps(sc[2 * c]), _mm_set1_ps(sc[2 * c + 1])));
        for (int j = 0; j < T; j++) {
            const int8_t *a = act[j] + b * B;
            const float *dq = (const float *)(act[j] + K);
#define GROUP(c) _mm256_mul_ps(_mm256_cvtepi32_ps(dot32(_mm256_load_si256((const __m256i *)(q + 32 * (c))), \
                                                           _mm256_loadu_si256((const __m256i *)(a + 32 * (c))))), \
                               _mm256_load_ps(sv[c]))
            /* products of independent 32-value groups, summed as a tree (no
             * dependency chain through the 8 groups of a super-block) */
            __m256 s = nv == 1 ? GROUP(0)
                               : _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(GROUP(0), GROUP(1)), _mm256_add_ps(GROUP(2), GROUP(3))),
                                               _mm256_add_ps(_mm256_add_ps(GROUP(4), GROUP(5)), _mm256_add_ps(GROUP(6), GROUP(7))));
#undef GROUP
            float m = 0.0f;
            if (!offs) {
                /* no offsets (mn = 0): the term is 0 */
            } else if (kind == 1) {
                m = mn[0] * dq[nb + b];   /* Σ a_q of the block */
            } else {
                const int16_t *bs = (const int16_t *)(dq + nb) + 16 * b;
                for (int g = 0; g < 16; g++) m += mn[g] * (float)bs[g];
            }
            acc[j] = _mm256_fmadd_ps(s, _mm256_set1_ps(dq[b]), acc[j]);
            tail[j] += m * dq[b];
        }
    }
    for (int j = 0; j < T; j++) out[j] = ds_hsum256(acc[j]) + tail[j];
}

/* n values (whole blocks) -> fp32, as ds_dequant_ext (same products and
 * sums, so the same bits): the prefill panels' dequantization. */
void ds_dequant_ext_avx2(ds_dtype t, const void *in, float *y, int64_t n) {
    int64_t B = ds_dtype_block(t);
    size_t bb = ds_dtype_block_bytes(t);
    _Alignas(32) int8_t q[256];
    float sc[16], mn[16];
    for (int64_t b = 0; b < n / B; b++, y += B) {
        const uint8_t *blk = (const uint8_t *)in + bb * (size_t)b;
        ds_expand_block(t, blk, NULL, sc, mn);
        expand_ints(t, blk, q);
        for (int g = 0; g < B / 16; g++)
            for (int h = 0; h < 16; h += 8) {
                __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 16 * g + h))));
                v = _mm256_mul_ps(_mm256_set1_ps(sc[g]), v);
                if (mn[g] != 0.0f) v = _mm256_add_ps(v, _mm256_set1_ps(mn[g]));
                _mm256_storeu_ps(y + 16 * g + h, v);
            }
    }
}
