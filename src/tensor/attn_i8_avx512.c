/*
 * attn_i8_avx512.c - the int8 latent cache's kernels (ds_mla_scores_i8,
 * ds_mla_pv_i8; ops.h) with AVX512-VNNI's vpdpbusd (per 32-bit lane the sum
 * of 4 u8 × s8 products added exactly to an int32: 64 multiply-adds per
 * instruction, 4× an fp32 FMA's 16). Integer sums are exact, and the fp32
 * epilogues are the twin's expressions in the twin's order (attn_i8.c), so
 * both give the twin's bits.
 * Scores: a zmm holds 16 heads (lanes) of one row's dot product. The query
 * (u8: code + 128) is stored in groups of 4 values with the heads side by
 * side (ds_mla_q_i8), so one load gives the group for 16 heads, and the row's
 * 4 codes (s8) are one embedded broadcast: 8 rows × (part 0, part 1) = 16
 * accumulators; Σ(c + 128)·k = Σ c·k + 128·Σk is taken back with the row's
 * stored code sum. Each cache row is read once for all heads (W/4 broadcasts).
 * Weighted sum: the weights (u8, 4 rows per 32-bit word) are the broadcast
 * side; the rows' codes are regrouped once per step so that a 32-bit lane
 * holds one column's codes of 4 consecutive rows (vpunpck{l,h}bw then
 * {l,h}wd: vector x of a 64-column chunk holds, in 128-bit lane L, columns
 * 16L + 4x .. 16L + 4x + 3); 4 heads × one chunk = 16 accumulators, put back
 * in column order (a 4×4 transpose of 128-bit lanes) before the epilogue.
 * Built with the AVX-512 flags; ops.c calls it at ISA level avx512vnni or above.
 */
#include "ops_isa.h"
#include "ops.h"

#include <immintrin.h>
#include <string.h>

#define T512_INLINE __attribute__((always_inline)) static inline

static inline int32_t rd_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline float rd_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* nr rows (<= 8) against the 16 heads [hb, hb + 16) (nh of them real) */
T512_INLINE void sc_tile(int nr, float *s, int64_t ls, const uint8_t *qt, int64_t Hp, int64_t hb, int64_t nh,
                         const float *dq, const uint8_t *kv, int64_t rb, int64_t G0, int64_t G1) {
    __m512i a0[8], a1[8];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) a0[r] = a1[r] = _mm512_setzero_si512();
    const uint8_t *k = kv + DS_KV_I8_HEAD;
    for (int64_t g = 0; g < G0; g++) {
        __m512i qv = _mm512_loadu_si512(qt + (g * Hp + hb) * 4);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) a0[r] = _mm512_dpbusd_epi32(a0[r], qv, _mm512_set1_epi32(rd_i32(k + r * rb + 4 * g)));
    }
    for (int64_t g = G0; g < G1; g++) {
        __m512i qv = _mm512_loadu_si512(qt + (g * Hp + hb) * 4);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) a1[r] = _mm512_dpbusd_epi32(a1[r], qv, _mm512_set1_epi32(rd_i32(k + r * rb + 4 * g)));
    }
    __m512 d0 = _mm512_loadu_ps(dq + hb), d1 = _mm512_loadu_ps(dq + Hp + hb);
    float t[8][16];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = kv + r * rb;
        __m512i ic = _mm512_sub_epi32(a0[r], _mm512_set1_epi32(128 * rd_i32(row + 12)));
        __m512i ip = _mm512_sub_epi32(a1[r], _mm512_set1_epi32(128 * rd_i32(row + 16)));
        __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(ic), _mm512_mul_ps(d0, _mm512_set1_ps(rd_f32(row))));
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(ip), _mm512_mul_ps(d1, _mm512_set1_ps(rd_f32(row + 4))));
        _mm512_storeu_ps(t[r], _mm512_add_ps(x, y));
    }
    for (int64_t h = 0; h < nh; h++)
        for (int r = 0; r < nr; r++) s[(hb + h) * ls + r] = t[r][h];
}

void ds_mla_scores_i8_avx512(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                             int64_t W, int64_t R, int64_t n) {
    int64_t Hp = DS_MLA_I8_HP(H), G0 = R / 4, G1 = W / 4;
    const float *dq = (const float *)qi;
    const uint8_t *qt = qi + 8 * Hp;
    for (int64_t hb = 0; hb < Hp; hb += 16) {
        int64_t nh = H - hb < 16 ? H - hb : 16, j = 0;
        for (; j + 8 <= n; j += 8) sc_tile(8, s + j, ls, qt, Hp, hb, nh, dq, kv + j * rb, rb, G0, G1);
        for (; j < n; j++) sc_tile(1, s + j, ls, qt, Hp, hb, nh, dq, kv + j * rb, rb, G0, G1);
    }
}

/* the weights' rounding (ds_mla_p_i8_ref's arithmetic, 16 rows a vector:
 * the same products, max, cvtps_epi32 rounds to nearest even as
 * nearbyintf does, and the clamp) */
void ds_mla_p_i8_avx512(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                        int64_t n) {
    int64_t np = (n + 3) / 4 * 4, nv = (n + 15) / 16;
    float d0[256];
    for (int64_t j = 0; j < n; j++) d0[j] = rd_f32(kv + j * rb);
    for (int64_t h = 0; h < H; h++) {
        const float *ph = p + h * ls;
        uint8_t *qh = pq + h * np;
        __m512 mx = _mm512_setzero_ps();
        for (int64_t v = 0; v < nv; v++) {
            __mmask16 k = n - 16 * v >= 16 ? 0xffff : (__mmask16)((1u << (n - 16 * v)) - 1);
            __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, ph + 16 * v), _mm512_maskz_loadu_ps(k, d0 + 16 * v));
            mx = _mm512_max_ps(mx, w);
        }
        float pm = _mm512_reduce_max_ps(mx);
        float inv = pm > 0 ? 255.0f / pm : 0.0f;
        dp[h] = pm / 255.0f;
        __m512 vi = _mm512_set1_ps(inv);
        for (int64_t v = 0; v < nv; v++) {
            __mmask16 k = n - 16 * v >= 16 ? 0xffff : (__mmask16)((1u << (n - 16 * v)) - 1);
            __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, ph + 16 * v), _mm512_maskz_loadu_ps(k, d0 + 16 * v));
            __m512i c = _mm512_cvtps_epi32(_mm512_mul_ps(w, vi));
            c = _mm512_min_epi32(_mm512_max_epi32(c, _mm512_setzero_si512()), _mm512_set1_epi32(255));
            _mm_mask_storeu_epi8(qh + 16 * v, k, _mm512_cvtepi32_epi8(c));
        }
        for (int64_t j = n; j < np; j++) qh[j] = 0;
    }
}

/* nh (<= 4) heads over one 64-column chunk: vt (nq quads × 4 vectors, chunk stride cs bytes) */
T512_INLINE void pv_tile(int nh, float *u, int64_t R, const uint8_t *pq, int64_t np, const float *dp,
                         const float *alpha, const uint8_t *vt, int64_t cs, int64_t nq) {
    __m512i acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++)
#pragma GCC unroll 4
        for (int x = 0; x < 4; x++) acc[i][x] = _mm512_setzero_si512();
    for (int64_t t = 0; t < nq; t++) {
        __m512i v[4];
#pragma GCC unroll 4
        for (int x = 0; x < 4; x++) v[x] = _mm512_load_si512(vt + t * cs + 64 * x);
#pragma GCC unroll 4
        for (int i = 0; i < nh; i++) {
            __m512i w = _mm512_set1_epi32(rd_i32(pq + i * np + 4 * t));
#pragma GCC unroll 4
            for (int x = 0; x < 4; x++) acc[i][x] = _mm512_dpbusd_epi32(acc[i][x], w, v[x]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < nh; i++) {
        /* vector x, lane L = columns 16L + 4x..: transpose the 4×4 128-bit lanes -> out k = columns 16k.. */
        __m512i t0 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], 0x44), t1 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], 0xee);
        __m512i t2 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], 0x44), t3 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], 0xee);
        __m512i o[4] = { _mm512_shuffle_i32x4(t0, t2, 0x88), _mm512_shuffle_i32x4(t0, t2, 0xdd),
                         _mm512_shuffle_i32x4(t1, t3, 0x88), _mm512_shuffle_i32x4(t1, t3, 0xdd) };
        __m512 a = _mm512_set1_ps(alpha[i]), d = _mm512_set1_ps(dp[i]);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            float *uk = u + i * R + 16 * k;
            __m512 x = _mm512_mul_ps(a, _mm512_loadu_ps(uk)), y = _mm512_mul_ps(d, _mm512_cvtepi32_ps(o[k]));
            _mm512_storeu_ps(uk, _mm512_add_ps(x, y));
        }
    }
}

void ds_mla_pv_i8_avx512(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                         const uint8_t *kv, int64_t rb, int64_t n, void *scratch) {
    int64_t nq = (n + 3) / 4, np = 4 * nq, C = R / 64, cs = C * 256;
    uint8_t *vt = scratch;   /* (nq, C, 4 vectors of 64 bytes), 64-byte aligned */
    for (int64_t t = 0; t < nq; t++) {
        const uint8_t *r[4];
        for (int b = 0; b < 4; b++) r[b] = 4 * t + b < n ? kv + (4 * t + b) * rb + DS_KV_I8_HEAD : NULL;
        for (int64_t k = 0; k < C; k++) {
            __m512i x[4];
            for (int b = 0; b < 4; b++) x[b] = r[b] ? _mm512_loadu_si512(r[b] + 64 * k) : _mm512_setzero_si512();
            __m512i lo01 = _mm512_unpacklo_epi8(x[0], x[1]), hi01 = _mm512_unpackhi_epi8(x[0], x[1]);
            __m512i lo23 = _mm512_unpacklo_epi8(x[2], x[3]), hi23 = _mm512_unpackhi_epi8(x[2], x[3]);
            uint8_t *o = vt + t * cs + k * 256;
            _mm512_store_si512(o, _mm512_unpacklo_epi16(lo01, lo23));
            _mm512_store_si512(o + 64, _mm512_unpackhi_epi16(lo01, lo23));
            _mm512_store_si512(o + 128, _mm512_unpacklo_epi16(hi01, hi23));
            _mm512_store_si512(o + 192, _mm512_unpackhi_epi16(hi01, hi23));
        }
    }
    int64_t h = 0;
    for (; h + 4 <= H; h += 4)
        for (int64_t k = 0; k < C; k++)
            pv_tile(4, u + h * R + 64 * k, R, pq + h * np, np, dp + h, alpha + h, vt + k * 256, cs, nq);
    for (; h < H; h++)
        for (int64_t k = 0; k < C; k++)
            pv_tile(1, u + h * R + 64 * k, R, pq + h * np, np, dp + h, alpha + h, vt + k * 256, cs, nq);
}
