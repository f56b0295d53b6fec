/*
 * ops_isa.h - private: the ISA-specific kernel entry points that ops.c
 * dispatches to. Implemented in ops_avx2.c (compiled with -mavx2 -mfma
 * -mf16c); generic versions live in ops.c.
 */
#ifndef DS_OPS_ISA_H
#define DS_OPS_ISA_H

#include <stdint.h>

float ds_dot_f32_avx2(const float *w, const float *x, int64_t n);
float ds_dot_bf16_avx2(const uint16_t *w, const float *x, int64_t n);
float ds_dot_f16_avx2(const uint16_t *w, const float *x, int64_t n);
/* out[t] = ds_dot_{f32,bf16}_avx2(w, x[t], n) for t < m (1 <= m <= 4), bit for bit */
void ds_dot_rows_f32_avx2(const float *w, const float *const *x, int m, int64_t n, float *out);
void ds_dot_rows_bf16_avx2(const uint16_t *w, const float *const *x, int m, int64_t n, float *out);
/* y[i] = fmaf(a, x[i], y[i]) for i < n, bit for bit */
void ds_axpy_avx2(float *y, float a, const float *x, int64_t n);
/* Σ_i fp8(w[i])·x[i]·scale[i / block] for a row with per-block scales. */
float ds_dot_fp8_avx2(const uint8_t *w, const float *x, int64_t n, const float *scale, int block);
/* out[i] = dequant(w[i]) for a row segment */
void ds_cvt_bf16_avx2(float *out, const uint16_t *w, int64_t n);
void ds_cvt_f16_avx2(float *out, const uint16_t *w, int64_t n);
/* u[0 : R) = Σ_{j < n} p[j] · kv[j·W + 0 : R)   (R a multiple of 8) */
void ds_wsum_rows_avx2(float *u, const float *p, const float *kv, int64_t n, int64_t W, int64_t R);
/* h[i] = g[i] · sigmoid(g[i]) · u[i]; every element (the tail too, masked)
 * through the same vector code, so h[i] does not depend on i or n */
void ds_silu_mul_avx2(float *h, const float *g, const float *u, int64_t n);
/* softmax in place (exp of x − max below −87 is 0; an all −inf row gives
 * zeros), the sum in float lanes folded in double */
void ds_softmax_avx2(float *x, int64_t n);
/* ds_kv_dequant_row (ops.h) */
void ds_kv_dequant_row_avx2(float *y, const uint8_t *row, int64_t W, int block, int fp8);
/* ds_mla_attn_step (ops.h) with W % 8 == 0, R % 8 == 0 */
void ds_mla_attn_step_avx2(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv,
                           int64_t W, int64_t n, int64_t R, float scale, float *sc);
/* The step after the scores: sc holds the raw scores of H heads (stride
 * n + 8; then H floats for the rescale factors); online softmax, rescale of
 * (u, m, l), weighted sum of the rows' first R columns (row stride W).
 * The bf16 step (attn_bf16*.c) runs it on widened rows. */
void ds_mla_attn_softmax_avx2(float *m, float *l, int64_t H, int64_t n, float scale, float *sc);   /* its softmax part */
void ds_mla_attn_update_avx2(float *u, float *m, float *l, int64_t H, const float *kv, int64_t W, int64_t n,
                             int64_t R, float scale, float *sc);
void ds_mla_attn_update_avx512(float *u, float *m, float *l, int64_t H, const float *kv, int64_t W, int64_t n,
                               int64_t R, float scale, float *sc);   /* R % 16 == 0 */
/* ds_mla_scores_bf16 (ops.h): AVX2 (attn_bf16_avx2.c, widen + FMA, W % 8
 * == 0) and AVX512-BF16 (attn_bf16_avx512.c, vdpbf16ps, H even, W % 8 == 0) */
void ds_mla_scores_bf16_avx2(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                             int64_t W, int64_t n, float *scratch);
void ds_mla_scores_bf16_avx512(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                               int64_t W, int64_t n, float *scratch);
/* ds_mla_pv_bf16 (ops.h): AVX2 (R % 8 == 0) and AVX512-BF16 (R % 32 == 0) */
void ds_bf16_round_row_avx2(uint16_t *y, const float *x, int64_t n);   /* ds_bf16_round_row, bit-identical */
void ds_mla_pv_bf16_avx2(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                         const uint16_t *kv, int64_t W, int64_t n, void *scratch);
void ds_mla_pv_bf16_avx512(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                           const uint16_t *kv, int64_t W, int64_t n, void *scratch);
/* the expanded prefill's bf16 pieces (ops.h): AVX2 (attn_bf16_avx2.c; pv R % 8 == 0) and AVX512-BF16 (R % 32 == 0) */
void ds_mla_softmax_bf16_avx2(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale);
void ds_bf16_round_pairs_avx2(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R);
void ds_mla_pv_bf16_pk_avx2(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                            const uint16_t *vi, int64_t n);
void ds_mla_pv_bf16_pk_avx512(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                              const uint16_t *vi, int64_t n);
void ds_mla_softmax_bf16_avx512(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale);
/* ds_mla_scores_bf16_kt (ops.h): AVX2 (widen + FMA) and AVX512-BF16 (vdpbf16ps), the twin's bits */
void ds_mla_scores_bf16_kt_avx2(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                                int64_t W, int64_t n, int64_t vis0);
void ds_mla_scores_bf16_kt_avx512(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                                  int64_t W, int64_t n, int64_t vis0);
void ds_bf16_round_row_avx512(uint16_t *y, const float *x, int64_t n);   /* vcvtneps2bf16: ds_bf16_round_row_ref's bits */
/* the same with AVX-512F/DQ/VL (attn_avx512.c), bit-identical to it;
 * H even, W % 8 == 0, R % 16 == 0 */
void ds_mla_attn_step_avx512(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv,
                             int64_t W, int64_t n, int64_t R, float scale, float *sc);

/* the i8 kernels for AVX2 without VNNI (attn_i8_avx2.c; pv: R % 16 == 0) */
void ds_mla_scores_i8_avx2(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                           int64_t W, int64_t R, int64_t n);
void ds_mla_pv_i8_avx2(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                       const uint8_t *kv, int64_t rb, int64_t n, void *scratch);
/* the i8 kernels with AVX512-VNNI's vpdpbusd (attn_i8_avx512.c; ops.h):
 * bit-identical to ds_mla_scores_i8_ref / ds_mla_pv_i8_ref (R % 64 == 0 for pv) */
void ds_mla_scores_i8_avx512(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                             int64_t W, int64_t R, int64_t n);
void ds_mla_p_i8_avx512(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                        int64_t n);   /* n <= 256 */
void ds_mla_pv_i8_avx512(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                         const uint8_t *kv, int64_t rb, int64_t n, void *scratch);

#endif
