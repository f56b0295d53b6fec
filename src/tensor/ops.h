/*
 * ops.h - the numeric kernels the model is built from.
 *
 * Every fast kernel has a plain `_ref` twin (ops_ref.c) and a test that
 * compares the two (tests/test_ops.c). Shapes use row-major [rows, cols];
 * `ld*` are row strides in elements. Activations are always fp32; weights
 * may be F32, BF16, F16 or F8_E4M3 (+ block scales) and are dequantized
 * inside the kernels.
 */
#ifndef DS_OPS_H
#define DS_OPS_H

#include "tensor.h"
#include "../core/scratch.h"

/* y[T, N] = x[T, K] · W[r0 : r0+N, :]ᵀ          (W: [rows, K])
 * The fast path parallelizes over N with ds_par_for.
 *
 * Batch invariance: with T < 8 (or a per_token job) every token is computed
 * on its own by the same kernel, so its result does not depend on which
 * other tokens share the call. With T >= 8 the tokens go through a GEMM
 * (OpenBLAS, or multi-token integer kernels for quantized weights) whose
 * rounding depends on T; callers that need batch-independent results run
 * each sequence's block of >= 8 tokens as its own job (see model/plan). */
void ds_matmul(float *y, int64_t ldy, const float *x, int64_t ldx,
               const ds_tensor *w, int64_t r0, int64_t N, int64_t T);
/* The _ref twins allocate their row buffers: DS_OK or DS_ENOMEM. */
int ds_matmul_ref(float *y, int64_t ldy, const float *x, int64_t ldx,
                  const ds_tensor *w, int64_t r0, int64_t N, int64_t T);

/* Independent matmul jobs run in one parallel pass (one fork/join). */
/* Token blocks of at least this many tokens go through GEMM kernels. */
#define DS_TOKEN_BLOCK_MIN 8

typedef struct ds_mm_job {
    float *y; int64_t ldy;
    const float *x; int64_t ldx;
    const ds_tensor *w; int64_t r0, N, T;
    bool per_token;   /* force the per-token path even for T >= 8 (see below) */
} ds_mm_job;
void ds_matmul_multi(const ds_mm_job *jobs, int n);

/* Decode pass profile (`bench --passes`): while on, every one-token matmul
 * pass (ds_matmul, ds_matmul_multi with every job at T = 1; the time includes
 * quantizing its activations) is counted by the type of its (first) weight
 * and its size in bytes: < 1 MB, 1-4, 4-16,
 * 16-64, >= 64 MB. A pass called inside another pass's unit (MLA's per-head
 * slices) is timed on the thread that runs it, so its rate is per thread.
 * Counted per calling thread id (ds_thread_id < DS_PASS_PROFILE_THREADS;
 * others are not counted) and summed by _stop: no locks on the way. */
typedef struct ds_pass_stat { int64_t passes; double bytes, seconds; } ds_pass_stat;
#define DS_PASS_SIZES 5
#define DS_PASS_PROFILE_THREADS 64
void ds_pass_profile_start(void);                                          /* zeroes the sums and starts */
void ds_pass_profile_stop(ds_pass_stat out[DS_DTYPE_COUNT][DS_PASS_SIZES]); /* stops; out: the sums */

/* y[T, K] = x[T, N] · W[r0 : r0+N, :]            (no transpose)
 * Per token (T < 8 or per_token): y_t = Σ_r x_t[r]·W[r] accumulated row by
 * row, independent of the other tokens; else an sgemm over all T. */
void ds_matmul_t(float *y, int64_t ldy, const float *x, int64_t ldx,
                 const ds_tensor *w, int64_t r0, int64_t N, int64_t T);
void ds_matmul_t_ex(float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N, int64_t T, bool per_token);
int ds_matmul_t_ref(float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N, int64_t T);

/* C[M, N] = alpha · op(A) · op(B) + beta · C, row-major.
 * op(A) is [M, K]: A itself ([M, K], lda) or Aᵀ (A stored [K, M]).
 * op(B) is [K, N]: B itself ([K, N], ldb) or Bᵀ (B stored [N, K]). */
void ds_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);
void ds_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc);

/* Attention rows against cached keys/values sharing one matrix (absorbed MLA):
 *   s_i[j] = scale · q_i · kv_j (W values)   for j < vis0 + i + 1 (causal)
 *   u_i    = Σ_j softmax(s_i)[j] · kv_j[0 : R)
 * for the nq query rows q_i (stride ldq) against kv rows of W floats; u_i
 * has stride ldu. Each row is computed on its own in a fixed order (no
 * dependence on nq). sc: scratch of vis0 + nq floats. For short query
 * blocks (decode), where a GEMM library's packing costs more than the work. */
void ds_attn_rows(float *u, int64_t ldu, const float *q, int64_t ldq, int64_t nq, const float *kv, int64_t W,
                  int64_t R, int64_t vis0, float scale, float *sc);
int ds_attn_rows_ref(float *u, int64_t ldu, const float *q, int64_t ldq, int64_t nq, const float *kv, int64_t W,
                     int64_t R, int64_t vis0, float scale);

/* One quantized KV-cache row (kvcache.c's layout: the fp32 scales of its
 * blocks, then W one-byte codes; int8 (fp8 = false) or FP8 E4M3 codes,
 * `block` codes per scale) to fp32: y[i] = d · code. The AVX2 form gives the
 * same bits as the scalar one (one rounding of the same product). */
void ds_kv_dequant_row(float *y, const uint8_t *row, int64_t W, int block, bool fp8);
void ds_kv_dequant_row_ref(float *y, const uint8_t *row, int64_t W, int block, bool fp8);

/* Flash decode over a latent cache (absorbed MLA), all H heads of one query
 * together so each cache row is read once for every head. A running partial
 * per head h: m[h] (max score so far), l[h] (Σ exp(s − m)), u[h] (R floats,
 * Σ exp(s − m) · kv_j[0 : R), unnormalized). Start with m = −inf, l = 0,
 * u = 0; each step folds n more rows kv_j (W floats, W % 8 == 0 for the AVX2
 * path) with s[h][j] = scale · q[h] · kv_j (q rows: stride ldq) into it.
 * A score's bits do not depend on n or on where its row sits in the block
 * (one accumulator per dot product, in k order), so for fixed block
 * boundaries the result does not depend on the batch or the thread count.
 * sc: scratch of DS_MLA_STEP_SCRATCH(H, n, W) floats. */
#define DS_MLA_STEP_SCRATCH(H, n, W) ((H) * ((n) + 9) + (H) * (W))
void ds_mla_attn_step(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv, int64_t W,
                      int64_t n, int64_t R, float scale, float *sc);
/* The same step over bf16 rows (--kv-type bf16): q (H rows of W bf16,
 * stride ldq) and kv (n rows of W bf16) as rounded by ds_bf16_round_row.
 * Scores: ds_mla_scores_bf16; the online softmax as the fp32 step's (fp32
 * p, l); the weighted sum: ds_mla_pv_bf16 (p rounded to bf16). The
 * AVX512-BF16 (vdpbf16ps) and AVX2 (widen + FMA) kernels give the same bits.
 * sc: DS_MLA_STEP_BF16_SCRATCH(H, n, W) floats. */
#define DS_MLA_STEP_BF16_SCRATCH(H, n, W) ((H) * ((n) + 9) + (H) * ((W) + (n) + 17))
void ds_mla_attn_step_bf16(float *u, float *m, float *l, const uint16_t *q, int64_t ldq, int64_t H,
                           const uint16_t *kv, int64_t W, int64_t n, int64_t R, float scale, float *sc);
/* Raw scores s[h·ls + j] = q[h] · kv_j of bf16 vectors, defined by
 * ds_mla_scores_bf16_ref (attn_bf16.c): 8 fp32 lanes, lane i takes the pairs
 * (16c + 2i, 16c + 2i + 1) of each 16-value chunk c in chunk order, the odd
 * element's product first (exact products: each add is one rounding, as
 * vdpbf16ps does), then the lanes summed ((0+4)+(1+5)) + ((2+6)+(3+7)).
 * scratch: H·(W + 16) floats. Dispatched (AVX512-BF16, AVX2: W % 8 == 0; the twin). */
void ds_mla_scores_bf16(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                        int64_t W, int64_t n, float *scratch);
void ds_mla_scores_bf16_ref(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                            int64_t W, int64_t n);
/* u[h][0:R) = alpha[h]·u[h] + Σ_j bf16(p[h·ls + j])·kv_j[0:R) over n bf16 rows
 * (stride W), defined by ds_mla_pv_bf16_ref (attn_bf16.c): per column, acc =
 * alpha·u (one rounding), then for each pair of rows (2t, 2t+1) in order
 * acc += p_2t+1·v_2t+1, then += p_2t·v_2t (exact products, one rounding
 * each; a missing last odd row adds 0) — vdpbf16ps' arithmetic with the
 * rows interleaved in pairs. p is rounded with ds_bf16_round_row (relative
 * error <= 2^-8 per weight, so |Δu| <= 2^-8 Σ_j p_j |v_j|).
 * scratch: H·(n + 1) floats. Dispatched (AVX512-BF16: R % 32 == 0; AVX2:
 * R % 8 == 0; the twin). */
void ds_mla_pv_bf16(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                    const uint16_t *kv, int64_t W, int64_t n, float *scratch);
void ds_mla_pv_bf16_ref(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                        const uint16_t *kv, int64_t W, int64_t n);
/* True when ds_mla_scores_bf16 / ds_mla_pv_bf16 run the vdpbf16ps kernels (else AVX2 / twin). */
bool ds_mla_bf16_dp_in_use(void);
/* y[i] = bf16(x[i]): round to nearest even, subnormals to (signed) zero (so
 * vdpbf16ps' denormals-are-zero never applies), NaN stays NaN. */
void ds_bf16_round_row(uint16_t *y, const float *x, int64_t n);
/* its scalar twin (attn_bf16.c): the bits the AVX2 rounding gives */
void ds_bf16_round_row_ref(uint16_t *y, const float *x, int64_t n);
/* The expanded prefill's bf16 operands (mla.c expanded_bf16; twins in
 * attn_bf16.c, which dispatches: AVX512-BF16 where ds_mla_bf16_dp_in_use,
 * AVX2, the twins; every kernel gives its twin's bits).
 * ds_mla_softmax_bf16: one query row's raw scores s[0, vis) -> pb[j] =
 * bf16(softmax(scale·s)[j]) for j < vis, 0 for vis <= j < n rounded up to
 * even; exactly the bits of scaling s, setting s[vis, n) to -inf,
 * ds_softmax(s, n) and ds_bf16_round_row (the twin does just that); s is
 * clobbered. pb in pairs is the word layout ds_mla_pv_bf16_pk reads. */
void ds_mla_softmax_bf16(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale);
void ds_mla_softmax_bf16_ref(uint16_t *pb, float *s, int64_t vis, int64_t n, float scale);
/* ds_bf16_round_pairs: rows [j0, j0 + n) of v (row j at v + (j - j0)·R)
 * rounded as ds_bf16_round_row into the pair-interleaved layout vi: row j's
 * column c at vi[(j / 2)·2R + 2c + j % 2] (rows 2t, 2t+1 side by side per
 * column, the operand layout of vdpbf16ps; a row's slots do not depend on
 * the others, so rows can be added one chunk at a time). */
void ds_bf16_round_pairs(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R);
void ds_bf16_round_pairs_ref(uint16_t *vi, const float *v, int64_t j0, int64_t n, int64_t R);
/* The expanded prefill's scores with the keys as the vector lanes
 * (ds_mla_scores_bf16_kt): kt holds key rows in the key-transposed layout
 * ds_bf16_round_keys_t writes — groups of 16 rows, and within a group, per
 * pair of values p, the 16 rows' words (k_2p | k_2p+1 << 16) side by side:
 * row j's value d at kt[(j / 16)·16·W' + (d / 2)·32 + (j % 16)·2 + d % 2],
 * W' = W rounded up to even. Rows are rounded as ds_bf16_round_row (an odd
 * W's last pair padded with +0; the vector writer and kernels need W even,
 * else the twins run); a row's slots do not depend on the others, so rows
 * can be added one chunk at a time. Allocate whole groups of 64 rows
 * (DS_KT_ROWS(n)·W' values): the kernels read a last group whole. */
#define DS_KT_ROWS(n) (((n) + 63) / 64 * 64)
void ds_bf16_round_keys_t(uint16_t *kt, const float *k, int64_t j0, int64_t n, int64_t W);
void ds_bf16_round_keys_t_ref(uint16_t *kt, const float *k, int64_t j0, int64_t n, int64_t W);
/* s[i·ls + j] = q_i · k_j for query rows i < nq (bf16, stride ldq) and keys
 * j < min(n, vis0 + i) (a causal block's visible part; entries beyond it
 * may be written too, never past n), defined by ds_mla_scores_bf16_kt_ref:
 * one fp32 sum per score, from 0 over the pairs p in order, (acc +
 * q_2p+1·k_2p+1) + q_2p·k_2p (exact products, one rounding each: a
 * vdpbf16ps lane's arithmetic, so no horizontal sums). Not the bits of
 * ds_mla_scores_bf16 (8 lanes then summed). AVX512-BF16 and AVX2 kernels
 * (W even) give the twin's bits, dispatched on ops.c's level. */
void ds_mla_scores_bf16_kt(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                           int64_t W, int64_t n, int64_t vis0);
void ds_mla_scores_bf16_kt_ref(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t nq, const uint16_t *kt,
                               int64_t W, int64_t n, int64_t vis0);
/* ds_mla_pv_bf16_pk: ds_mla_pv_bf16's arithmetic (the same bits) on
 * prepared operands: pb the H rows (stride lp) of bf16 weights as
 * ds_mla_softmax_bf16 writes them (n rounded up to even values, read as
 * (p_2t | p_2t+1 << 16) words), vi the n rows in pairs (ds_bf16_round_pairs,
 * row 0 at the start of a pair; with n odd the last pair's odd slot is
 * ignored). R % 8 == 0 (AVX2), R % 32 == 0 (AVX512-BF16), else the twin. */
void ds_mla_pv_bf16_pk(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                       const uint16_t *vi, int64_t n);
void ds_mla_pv_bf16_pk_ref(float *u, int64_t R, const uint16_t *pb, int64_t lp, const float *alpha, int64_t H,
                           const uint16_t *vi, int64_t n);
/* The same step over int8 rows (--kv-type i8; attn_i8.c defines the bits).
 * kv: n rows rb bytes apart in kvcache.c's I8 layout (DS_KV_I8_HEAD bytes:
 * fp32 scales of the parts [0, R), [R, W) at bytes 0, 4; their int32 code
 * sums at 12, 16; then W int8 codes); qi: the query rows as ds_mla_q_i8
 * rounded them (R % 4 == 0, W % 4 == 0). Scores: ds_mla_scores_i8; the
 * online softmax as the fp32 step's; weights rounded to u8 (ds_mla_p_i8)
 * and the weighted sum ds_mla_pv_i8. AVX512-VNNI (vpdpbusd), AVX2
 * (vpmaddubsw / vpmaddwd) kernels and the scalar twins give the same bits. sc: DS_MLA_STEP_I8_SCRATCH(H, n, R) floats. */
#define DS_KV_I8_HEAD 24
#define DS_MLA_I8_HP(H) (((H) + 15) / 16 * 16)
#define DS_MLA_Q_I8_BYTES(H, W) (DS_MLA_I8_HP(H) * (8 + (W)))
#define DS_MLA_STEP_I8_SCRATCH(H, n, R) ((H) * ((n) + 10) + ((H) + 2 * (R)) * (((n) + 3) / 4) + 32)
void ds_mla_attn_step_i8(float *u, float *m, float *l, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                         int64_t W, int64_t n, int64_t R, float scale, float *sc);
/* qi (DS_MLA_Q_I8_BYTES(H, W)) <- H query rows q (stride ldq, W floats):
 * per head fp32 scales dq0[h] = max|q[0, R)|/127, dq1[h] = max|q[R, W)|/127
 * (dq0 for Hp = DS_MLA_I8_HP(H) heads, then dq1), then codes c =
 * nearbyint(q/d) stored as c + 128 in groups of 4 values along W, the heads
 * of a group side by side: byte 8·Hp + ((i/4)·Hp + h)·4 + i%4 (padding heads: 128). */
void ds_mla_q_i8(uint8_t *qi, const float *q, int64_t ldq, int64_t H, int64_t W, int64_t R);
/* s[h·ls + j] = (float)ic · (dq0[h]·d0[j]) + (float)ip · (dq1[h]·d1[j]) with
 * ic, ip the exact integer dot products of the codes over [0, R), [R, W). */
void ds_mla_scores_i8(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb, int64_t W,
                      int64_t R, int64_t n);
void ds_mla_scores_i8_ref(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                          int64_t W, int64_t R, int64_t n);
/* pq[h·np + j] (np = n rounded up to 4; zeros past n), dp[h]: the weights
 * w_j = p[h·ls + j] · d0[j] rounded to u8 codes nearbyint(w_j · 255/max_j w)
 * with dp[h] = max_j w / 255 (all 0 when the max is 0). Dispatched
 * (AVX-512 for n <= 256, the same bits; the twin). */
void ds_mla_p_i8(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                 int64_t n);
void ds_mla_p_i8_ref(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                     int64_t n);
/* u[h][c] = alpha[h]·u[h][c] + dp[h]·(float)Σ_j pq[h·np + j]·code_j[c] for
 * c < R (the sum exact in int32). scratch: 2·(n + 3)·R bytes, 64-byte aligned.
 * Dispatched (vpdpbusd: R % 64 == 0; AVX2: R % 16 == 0; the twin). */
void ds_mla_pv_i8(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                  const uint8_t *kv, int64_t rb, int64_t n, void *scratch);
void ds_mla_pv_i8_ref(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                      const uint8_t *kv, int64_t rb, int64_t n);
/* True when the i8 kernels run vpdpbusd (ISA level avx512vnni or above; else AVX2 or the twins). */
bool ds_mla_i8_dp_in_use(void);
/* Folds partial (u2, m2, l2) into (u, m, l): the deterministic combine of
 * partials over disjoint cache ranges (merged in range order). */
void ds_mla_attn_merge(float *u, float *m, float *l, const float *u2, const float *m2, const float *l2, int64_t H,
                       int64_t R);
/* out[h] (stride ldo) = u[h] / l[h] */
void ds_mla_attn_finish(float *out, int64_t ldo, const float *u, const float *l, int64_t H, int64_t R);
/* Twin (double precision, one pass): out[h] = Σ_j softmax_j(scale q[h]·kv_j) kv_j[0 : R) over S rows. */
int ds_mla_attn_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H, const float *kv, int64_t W,
                    int64_t S, int64_t R, float scale);

/* out[T, D] = x / sqrt(mean(x²) + eps) · w, per row (w: fp32 [D]). out may alias x. */
void ds_rmsnorm(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps);
/* its twin: one row at a time, scalar (ds_rmsnorm gives these bits) */
void ds_rmsnorm_ref(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps);

/* x[T, D] += y[T, D] (the residual stream), rows split across threads */
void ds_add_rows(float *x, const float *y, int64_t T, int64_t D);

/* Numerically stable in-place softmax of x[n]. */
void ds_softmax(float *x, int64_t n);
void ds_softmax_ref(float *x, int64_t n);   /* scalar expf twin */

/* h[i] = silu(g[i]) · u[i] */
void ds_silu_mul(float *h, const float *g, const float *u, int64_t n);
void ds_silu_mul_ref(float *h, const float *g, const float *u, int64_t n);   /* scalar expf twin */

/* Dot products of one weight row against fp32 x (fast, ISA-dispatched). */
float ds_dot_row(const ds_tensor *w, int64_t r, const float *x, int64_t K);

/* Per-thread scratch (core/scratch.h): slot 0 belongs to the kernels in
 * this file; callers above use slots 1..3. When a scratch allocation fails,
 * the kernels skip their work and ds_scratch_failed() says so; the owner of
 * the env (a forward context) turns that into DS_ENOMEM.
 * ds_ops_cleanup frees the calling thread's default env. */
void ds_ops_cleanup(void);

/* Which kernel level is active: "generic", "avx2", or "avx512vnni" (the
 * x8 quantized matmuls use the VNNI kernels, the rest the AVX2 ones). */
const char *ds_ops_isa(void);
/* True when the SIMD kernels (AVX2 or above) are active, i.e. not generic. */
bool ds_ops_simd(void);
void ds_ops_force_generic(bool on);   /* for tests */
bool ds_ops_has_avx512(void);          /* the AVX-512 flash-decode step is used (tests, bench) */
void ds_ops_force_avx2(bool on);       /* for tests: AVX2 kernels even on an AVX-512 CPU */

#endif
