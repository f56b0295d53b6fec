/*
 * tops.h - forward/backward kernel pairs for training (fp32).
 *
 * Conventions (llm.c): outputs first, then inputs, then weights, then
 * dims. Backward functions take the gradients they write first, then the
 * incoming gradient, then the saved activations, and ACCUMULATE (+=) into
 * every gradient they write, parameters and activations alike — except
 * where a comment says "written (=)": those are the first writes into a
 * fresh activation-gradient buffer, so it needs no zeroing. Linear layers
 * use ds_sgemm (OpenBLAS); attention uses the causal kernels of tgemm.h.
 * `ld*` are row strides in floats. Every kernel here has a finite-difference
 * test in tests/test_train.c.
 */
#ifndef DS_TOPS_H
#define DS_TOPS_H

#include "../core/base.h"

/* y[N, O] = x[N, I] · Wᵀ            (W: [O, I], nn.Linear) */
void tr_linear_forward(float *y, const float *x, const float *W, int64_t N, int64_t I, int64_t O);
/* dx[N, I] += dy[N, O] · W ;  dW[O, I] += dyᵀ · x     (dx, dW may be NULL) */
void tr_linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int64_t N, int64_t I,
                        int64_t O);
/* The same, but dx is written (=) rather than accumulated: for a fresh buffer. */
void tr_linear_backward_set(float *dx, float *dW, const float *dy, const float *x, const float *W, int64_t N, int64_t I,
                            int64_t O);
/* Whether the dW += dyᵀ·x of the two above, over at most n_max rows, adds
 * into dW with one rounding per element (tr_gemm_acc_once; not with
 * DS_TRAIN_LINEAR=blas). */
bool tr_linear_dw_once(int64_t n_max);
/* Per thread: tr_linear_backward* ask hook(ctx, dW, O·I) before dW += dyᵀ·x;
 * when it returns true they write dW = dyᵀ·x instead (the floats there are
 * stale: dp.c, for a tree node's first contribution). NULL: no hook. */
typedef bool (*tr_dw_hook)(void *ctx, const float *dW, int64_t n);
void tr_set_dw_hook(tr_dw_hook hook, void *ctx);

/* out[n, :D] = x[n, :D] · rstd[n] ⊙ w, rstd[n] = 1/sqrt(mean(x²) + eps).
 * out may alias x (same ld). rstd may be NULL. */
void tr_rmsnorm_forward(float *out, int64_t ldo, float *rstd, const float *x, int64_t ldx, const float *w, int64_t N,
                        int64_t D, float eps);
/* dx += ∂/∂x, dw += ∂/∂w (dw may be NULL). Uses the saved input x and rstd. */
void tr_rmsnorm_backward(float *dx, int64_t lddx, float *dw, const float *dout, int64_t lddo, const float *x,
                         int64_t ldx, const float *w, const float *rstd, int64_t N, int64_t D);

/* sig = sigmoid(g), h = silu(g) ⊙ u = g·sig·u  (sig saved for the backward).
 * AVX2+FMA path with a polynomial exp (max relative error ~2e-7 vs expf);
 * the _ref twin is plain expf. */
void tr_swiglu_forward(float *h, float *sig, const float *g, const float *u, int64_t n);
void tr_swiglu_forward_ref(float *h, float *sig, const float *g, const float *u, int64_t n);
/* dg = dh ⊙ u ⊙ sig·(1 + g·(1 − sig)), du = dh ⊙ g·sig   (written, not accumulated) */
void tr_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, const float *sig,
                        int64_t n);
/* The same on rows of a fused gate|up buffer gu (rows, 2F): g = gu[r, :F],
 * u = gu[r, F:]; h, sig are (rows, F); dgu (rows, 2F) is written. */
void tr_swiglu_forward_gu(float *h, float *sig, const float *gu, int64_t rows, int64_t F);
void tr_swiglu_backward_gu(float *dgu, const float *dh, const float *gu, const float *sig, int64_t rows, int64_t F);
/* Scalar twin of tr_swiglu_backward (the fast path is AVX2). */
void tr_swiglu_backward_ref(float *dg, float *du, const float *dh, const float *g, const float *u, const float *sig,
                            int64_t n);

/* RoPE on interleaved pairs (ds_rope_apply) and its transpose: maps the
 * gradient w.r.t. the rotated vector to the gradient w.r.t. the input,
 * in place (rotation by -pos·θ). */
void tr_rope_backward(float *dx, int64_t Dr, const float *inv_freq, int64_t pos);

/* Cross-entropy over rows of logits[N, V] (in place: logits -> dlogits).
 * Rows with target < 0 contribute nothing (their dlogits are 0). Returns
 * Σ -log p(target) over rows with a target; dlogits = (softmax - onehot)·dscale. */
double tr_crossentropy_forward_backward(float *logits, const int32_t *targets, int64_t N, int64_t V, float dscale);

/* Per-token weighted cross-entropy in two passes (GRPO's hook, fwd_bwd.c):
 * tr_token_logprobs turns logits[N, V] into softmax rows in place and writes
 * logp[n] = log p(target[n]) (0 where target < 0); tr_token_weighted_backward
 * then turns those rows into dlogits = w[n]·(softmax − onehot(target)), the
 * gradient of Σ_n w[n]·(−log p(target[n])) (rows with target < 0 or w = 0: 0). */
void tr_token_logprobs(float *logits, const int32_t *targets, int64_t N, int64_t V, float *logp);
void tr_token_weighted_backward(float *probs, const int32_t *targets, int64_t N, int64_t V, const float *w);

/* Causal softmax attention of one (sequence, head), scores = scale·Q·Kᵀ:
 *   att[T, T] = softmax(scale · Q Kᵀ + causal mask);  O[T, Dv] = att · V
 * Q: [T, Dk] (ldq), K: [T, Dk] (ldk), V: [T, Dv] (ldv), O (ldo). */
void tr_attention_forward(float *O, int64_t ldo, float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                          const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale);
/* dQ, dK, dV are written (=), not accumulated (strided like the inputs);
 * scratch >= T·T floats. */
void tr_attention_backward(float *dQ, int64_t lddq, float *dK, int64_t lddk, float *dV, int64_t lddv, const float *dO,
                           int64_t lddo, const float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                           const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale, float *scratch);

/* Matmul profile: time and flops spent in tr_linear_* per thread, while
 * enabled; kept in the calling env (the trainer's), not process-wide. rate = Σ_threads flops_t / seconds_t (the threads run their
 * matmuls concurrently), seconds = mean over threads. */
void tr_prof_enable(bool on);
void tr_prof_reset(void);
void tr_prof_read(double *flops, double *rate, double *seconds);

/* Vector helpers (AVX2 with plain-C twins; add/axpy/scale give the same
 * bits on both paths: multiply then add, never fused):
 *   x += y;  y += a·x;  y = a·x (y may be x);  Σ a·b (float lanes folded in double) */
void tr_vec_add(float *x, const float *y, int64_t n);
void tr_vec_axpy(float *y, float a, const float *x, int64_t n);
void tr_vec_scale(float *y, float a, const float *x, int64_t n);
double tr_vec_dot(const float *a, const float *b, int64_t n);

/* Use the scalar paths of every kernel here (tests compare both). */
void tr_force_scalar(bool on);
/* Keep the AVX2 code even at ISA level avx512 (tests compare the 16-lane twins with it). */
void tr_force_avx2(bool on);

/* Per-thread scratch for the training kernels: slots TR_SLOT0.. of the
 * calling env's pool (core/scratch.h), apart from the inference slots; at
 * least n floats, valid until the next call with the same tid, slot. NULL
 * when out of memory (the kernel skips its work; the step returns DS_ENOMEM). */
#define TR_SCRATCH_SLOTS 4
#define TR_SLOT0 4
#define TR_SLOT_PROF 8
float *tr_scratch(int tid, int slot, size_t n);

#endif
