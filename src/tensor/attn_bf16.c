/*
 * attn_bf16.c - the bf16 latent cache's arithmetic (--kv-type bf16): the
 * rounding of rows to bf16 (ds_bf16_round_row_ref, the twin of the AVX2
 * rounding that ops.c dispatches to) and the scalar twin of the bf16 score
 * kernels (ds_mla_scores_bf16_ref), which defines their exact bits.
 *
 * A score q·k of two bf16 vectors (W values) is summed in 8 fp32 lanes:
 * lane i takes, for each 16-value chunk c in order, the pair (16c + 2i + 1)
 * then (16c + 2i): acc_i = (acc_i + q_o·k_o) + q_e·k_e. The product of two
 * bf16 values (8-bit significands) is exact in fp32, so each step is one
 * rounding — the same as one fused multiply-add, and as AVX512-BF16's
 * vdpbf16ps does per 32-bit lane (odd element first, round to nearest
 * even). The lanes are then summed as ds_hsum256 does: ((0+4)+(1+5)) +
 * ((2+6)+(3+7)). vdpbf16ps also treats subnormal inputs as zero and flushes
 * subnormal results: ds_bf16_round_row flushes subnormal inputs itself (so
 * the twin and the kernels see the same zeros); a subnormal partial sum
 * (|acc| < 1.2e-38, not met by attention scores) is the one place the
 * vdpbf16ps kernel may differ from the twin and the AVX2 kernel.
 * A W that is not a multiple of 16 is padded with zeros (the twin only;
 * the vector kernels pad a last chunk of 8 the same way and need W % 8 == 0).
 *
 * The weighted sum u = α·u + Σ_j p_j v_j (ds_mla_pv_bf16_ref) pairs the rows
 * instead: per column, (acc + p_2t+1·v_2t+1) + p_2t·v_2t for t = 0, 1, ...
 * with p rounded to bf16 (exact products again) — vdpbf16ps' arithmetic on
 * rows interleaved in pairs (attn_bf16_avx512.c).
 *
 * The expanded prefill (mla.c expanded_bf16) gives the weighted sum its
 * operands ready: the softmax writes each query row's weights as bf16
 * directly (ds_mla_softmax_bf16: the bits of scale, mask, ds_softmax and
 * ds_bf16_round_row, which its twin here runs literally), and the values
 * are kept interleaved in row pairs (ds_bf16_round_pairs) in the layout
 * vdpbf16ps reads, so ds_mla_pv_bf16_pk neither rounds nor re-packs (the
 * same arithmetic as ds_mla_pv_bf16_ref, in its twin below). The dispatch of
 * these three is here, on ops.c's level (ds_ops_simd, ds_mla_bf16_dp_in_use).
 */
#include "dtype.h"
#include "ops.h"
#include "ops_isa.h"

#include <math.h>
#include <string.h>

void ds_bf16_round_row_ref(uint16_t *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0) y[i] = (uint16_t)((u >> 16) & 0x8000u);   /* zero, subnormal: signed zero */
        else y[i] = ds_f32_to_bf16(x[i]);
    }
}

static float dot_bf16_ref(const uint16_t *q, const uint16_t *k, int64_t W) {
    float acc[8] = { 0 };
    for (int64_t c = 0; c < W; c += 16)
        for (int i = 0; i < 8; i++) {
            int64_t e = c + 2 * i, o = e + 1;
            float po = o < W ? ds_bf16_to_f32(q[o]) * ds_bf16_to_f32(k[o]) : 0.0f;   /* exact */
            float pe = e < W ? ds_bf16_to_f32(q[e]) * ds_bf16_to_f32(k[e]) : 0.0f;
            acc[i] = acc[i] + po;
            acc[i] = acc[i] + pe;
        }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void ds_mla_scores_bf16_ref(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                            int64_t W, int64_t n) {
    for (int64_t h = 0; h < H; h++)
        for (int64_t j = 0; j < n; j++) s[h * ls + j] = dot_bf16_ref(q + h * ldq, kv + j * W, W);
}

void ds_mla_pv_bf16_ref(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                        const uint16_t *kv, int64_t W, int64_t n) {
    for (int64_t h = 0; h < H; h++) {
        float *uh = u + h * R;
        for (int64_t c = 0; c < R; c++) {
            float acc = alpha[h] * uh[c];
            for (int64_t j = 0; j < n; j += 2) {
                uint16_t pe, po = 0;
                ds_bf16_round_row_ref(&pe, p + h * ls + j, 1);
                if (j + 1 < n) ds_bf16_round_row_ref(&po, p + h * ls + j + 1, 1);
                float vo = j + 1 < n ? ds_bf16_to_f32(kv[(j + 1) * W + c]) : 0.0f;
                acc = acc + ds_bf16_to_f32(po) * vo;   /* exact products */
                acc = acc + ds_bf16_to_f32(pe) * ds_bf16_to_f32(kv[j * W + c]);
            }
            uh[c] = acc;
        }
    }
}

/* ---------------------------------------------- the expanded prefill's operands */

void ds_mla_softmax_bf16_ref(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale) {
    for (int64_t j = 0; j < vis; j++) s[j] *= scale;
    for (int64_t j = vis; j < n; j++) s[j] = -INFINITY;
    ds_softmax(s, n);
    ds_bf16_round_row_ref(pb, s, n);
    if (n % 2) pb[n] = 0;
}

void ds_bf16_round_pairs_ref(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R) {
    for (int64_t r = 0; r < n; r++) {
        int64_t j = j0 + r;
        uint16_t *d = vi + (j / 2) * 2 * R + j % 2;
        for (int64_t c = 0; c < R; c++) ds_bf16_round_row_ref(d + 2 * c, v + r * R + c, 1);
    }
}

void ds_mla_pv_bf16_pk_ref(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                           const uint16_t *vi, int64_t n) {
    for (int64_t h = 0; h < H; h++) {
        float *uh = u + h * R;
        const uint16_t *ph = pb + h * lp;
        for (int64_t c = 0; c < R; c++) {
            float acc = alpha[h] * uh[c];
            for (int64_t j = 0; j < n; j += 2) {
                const uint16_t *vp = vi + (j / 2) * 2 * R + 2 * c;
                float po = j + 1 < n ? ds_bf16_to_f32(ph[j + 1]) : 0.0f, vo = j + 1 < n ? ds_bf16_to_f32(vp[1]) : 0.0f;
                acc = acc + po * vo;   /* exact products */
                acc = acc + ds_bf16_to_f32(ph[j]) * ds_bf16_to_f32(vp[0]);
            }
            uh[c] = acc;
        }
    }
}

/* slot of row j's value d in the key-transposed layout (ops.h) */
static inline int64_t kt_at(int64_t j, int64_t d, int64_t W) {
    return (j / 16) * 16 * (W + W % 2) + (d / 2) * 32 + (j % 16) * 2 + d % 2;
}

void ds_bf16_round_keys_t_ref(uint16_t *kt, const float *k, int64_t j0, int64_t n, int64_t W) {
    for (int64_t j = j0; j < j0 + n; j++) {
        for (int64_t d = 0; d < W; d++) ds_bf16_round_row_ref(kt + kt_at(j, d, W), k + (j - j0) * W + d, 1);
        if (W % 2) kt[kt_at(j, W, W)] = 0;   /* an odd W's last pair: its missing half is +0 */
    }
}

void ds_mla_scores_bf16_kt_ref(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                               int64_t W, int64_t n, int64_t vis0) {
    for (int64_t i = 0; i < nq; i++)
        for (int64_t j = 0; j < n && j < vis0 + i; j++) {
            float acc = 0.0f;
            for (int64_t d = 0; d < W; d += 2) {
                float qo = d + 1 < W ? ds_bf16_to_f32(q[i * ldq + d + 1]) : 0.0f;
                acc = acc + qo * ds_bf16_to_f32(kt[kt_at(j, d + 1, W)]);   /* exact products */
                acc = acc + ds_bf16_to_f32(q[i * ldq + d]) * ds_bf16_to_f32(kt[kt_at(j, d, W)]);
            }
            s[i * ls + j] = acc;
        }
}

/* each row rounded by the dispatched ds_bf16_round_row (the twin's bits),
 * then its W / 2 words written to their slots, 64 bytes apart */
void ds_bf16_round_keys_t(uint16_t *kt, const float *k, int64_t j0, int64_t n, int64_t W) {
    uint16_t row[1024];
    if (W > 1024 || W % 2) { ds_bf16_round_keys_t_ref(kt, k, j0, n, W); return; }
    for (int64_t j = j0; j < j0 + n; j++) {
        ds_bf16_round_row(row, k + (j - j0) * W, W);
        uint16_t *dst = kt + kt_at(j, 0, W);
        for (int64_t p = 0; p < W / 2; p++) memcpy(dst + 32 * p, row + 2 * p, 4);
    }
}

void ds_mla_scores_bf16_kt(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                           int64_t W, int64_t n, int64_t vis0) {
    if (ds_mla_bf16_dp_in_use() && W % 2 == 0) ds_mla_scores_bf16_kt_avx512(s, ls, q, ldq, nq, kt, W, n, vis0);
    else if (ds_ops_simd() && W % 2 == 0) ds_mla_scores_bf16_kt_avx2(s, ls, q, ldq, nq, kt, W, n, vis0);
    else ds_mla_scores_bf16_kt_ref(s, ls, q, ldq, nq, kt, W, n, vis0);
}

void ds_mla_softmax_bf16(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale) {
    if (ds_mla_bf16_dp_in_use()) ds_mla_softmax_bf16_avx512(pb, s, vis, n, scale);
    else if (ds_ops_simd()) ds_mla_softmax_bf16_avx2(pb, s, vis, n, scale);
    else ds_mla_softmax_bf16_ref(pb, s, vis, n, scale);
}

void ds_bf16_round_pairs(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R) {
    if (ds_ops_simd()) ds_bf16_round_pairs_avx2(vi, v, j0, n, R);
    else ds_bf16_round_pairs_ref(vi, v, j0, n, R);
}

void ds_mla_pv_bf16_pk(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                       const uint16_t *vi, int64_t n) {
    if (ds_mla_bf16_dp_in_use() && R % 32 == 0) ds_mla_pv_bf16_pk_avx512(u, R, pb, lp, alpha, H, vi, n);
    else if (ds_ops_simd() && R % 8 == 0) ds_mla_pv_bf16_pk_avx2(u, R, pb, lp, alpha, H, vi, n);
    else ds_mla_pv_bf16_pk_ref(u, R, pb, lp, alpha, H, vi, n);
}
