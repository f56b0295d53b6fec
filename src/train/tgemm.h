/*
 * tgemm.h - fp32 matrix products for training's shapes: one big dimension
 * (tokens, up to thousands) and two small ones (model widths, 16..1024).
 * Training uses them for every linear layer and the causal variants for
 * attention (half the work of a dense T x T product).
 *
 *   tr_gemm_nt: C[M,N] (+)= alpha · A[M,K] · B[N,K]ᵀ     (forward: x·Wᵀ, q·kᵀ)
 *   tr_gemm_nn: C[M,N] (+)= alpha · A[M,K] · B[K,N]      (backward dx = dy·W, p·v)
 *   tr_gemm_tn: C[M,N] (+)= alpha · A[K,M]ᵀ · B[K,N]     (backward dW = dyᵀ·x)
 * acc = false overwrites C (nothing is read), true accumulates.
 * Row-major with leading dimensions lda/ldb/ldc.
 *
 * An AVX2+FMA 6x16 register tile (inline assembly for full tiles), B
 * packed into 16-column panels, K blocked so a packed block stays in L2
 * (details in tgemm.c). Rows of C are split across threads (results do not
 * depend on the split); nested calls run serially.
 * At ISA level avx512 and above the same loops run 6x32 AVX-512 tiles
 * (tgemm_avx512.c) with the same per-element FMA order, so the same bits.
 * Without AVX2 the calls fall through to ds_sgemm (OpenBLAS); ds_sgemm_ref
 * is the reference twin in tests.
 *
 * bf16 mode (tr_gemm_set_bf16, process-wide: train --precision bf16):
 * every call (outside TR_FP32 brackets) rounds A and B to bf16 (nearest even) as it packs them and
 * sums the products in fp32 with AVX512-BF16's vdpbf16ps (a k pair per
 * step) - the CPU analogue of mixed-precision training; callers keep fp32
 * everywhere else. Results are deterministic and independent of threads
 * and of the other rows, as in fp32; tr_gemm_bf16_ref is the twin.
 */
#ifndef DS_TGEMM_H
#define DS_TGEMM_H

#include "../core/base.h"

void tr_gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc);
void tr_gemm_nn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc);
void tr_gemm_tn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc);

/* Causal q·kᵀ for attention: C[T,T] = alpha · Q[T,K] · Kᵀ where column
 * <= row; 6x16 tiles entirely above the diagonal are skipped, so entries
 * above it are unspecified (the softmax ignores them). */
void tr_gemm_nt_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t K, float alpha);

/* Attention with a lower-triangular (causal) matrix A of side T:
 *   nn_causal: C[T,N] (+)= alpha · A[T,T] · B[T,N], A[i][k] = 0 for k > i (att·V, dS·K)
 *   tn_causal: C[T,N] (+)= alpha · A[T,T]ᵀ · B[T,N], A[k][i] = 0 for k < i (attᵀ·dO, dSᵀ·Q)
 * Above the diagonal, A[r][c] is read only in the band r < c <= 6·floor(r/6) + 5
 * (the rest of r's 6-row tile), which must hold zeros; beyond it A is never
 * read, except by the OpenBLAS fallback (no AVX2, or tr_gemm_force_blas),
 * which reads all of A (tr_gemm_causal_band says which). */
void tr_gemm_nn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc);
void tr_gemm_tn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc);

/* The causal GEMMs' band above: b (6) when they read A[r][c] only for
 * c <= b·floor(r/b) + b - 1, 0 when they may read all of A (OpenBLAS path). */
int tr_gemm_causal_band(void);

/* Whether, in the current mode, every tr_gemm_nn/nt/tn with acc = true and
 * K <= k_max adds its product into C with one rounding per element
 * (C = alpha·s + C, s summed from +0: one K block of the packed kernels;
 * not the OpenBLAS path). Then accumulating into a buffer holding b gives
 * the bits of b + (the same product accumulated into zeros): dp.c's
 * gradient tree adds a unit's weight gradients straight into its sibling's. */
bool tr_gemm_acc_once(int64_t k_max);

/* Frozen weights: between tr_gemm_freeze_begin(lo, n) and tr_gemm_freeze_end()
 * the caller promises that floats [lo, lo + n) do not change (the trainer:
 * its weight arena, while a step's units run). Dense nt (x·Wᵀ) and nn
 * (dy·W) products whose B lies inside, on the AVX-512 paths (fp32 at level
 * avx512+, bf16 mode), then pack B into their panels once per freeze and
 * reuse them (same bits: the same panels); calls may come from any
 * thread. Not nestable. The packed copies take about the weights' size
 * once more per direction and precision (capped at 1 GiB in all;
 * past it, products pack per call); tr_gemm_freeze_release frees them (a
 * later freeze packs again). */
void tr_gemm_freeze_begin(const float *lo, int64_t n);
void tr_gemm_freeze_end(void);
void tr_gemm_freeze_release(void);

/* Force the OpenBLAS path (dense, fp32 even in bf16 mode; tests compare both). */
void tr_gemm_force_blas(bool on);

/* Run the AVX2 kernels even at level avx512 (tests compare the two). */
void tr_gemm_force_avx2(bool on);

/* bf16 products on (true) or fp32 (false, the default). Turning it on needs
 * AVX512-BF16 usable at the current ISA level (see core/cpu.h, DS_ISA); else
 * DS_EUNSUPPORTED naming the missing flag and nothing changes. */
int tr_gemm_set_bf16(bool on, ds_err *e);
bool tr_gemm_bf16(void);

/* Per thread, nestable: between tr_gemm_keep_fp32(true) and (false) this
 * thread's GEMMs stay fp32 in bf16 mode. The trainer brackets what
 * DeepSeek-V3 keeps at its higher precision: the output heads, the MoE
 * router and the attention core (TR_FP32 wraps one statement). */
void tr_gemm_keep_fp32(bool on);
#define TR_FP32(stmt) do { tr_gemm_keep_fp32(true); stmt; tr_gemm_keep_fp32(false); } while (0)

/* The bf16 mode's reference twin, plain C (tgemm_ref.c): the same product
 * as the tr_gemm_* call named by op ('t': nt, 'n': nn, 'T': tn) and causal
 * (false; true: the *_causal variant, K = T for nn/tn, N = M = T for nt),
 * in the kernels' rounding and summation order. */
void tr_gemm_bf16_ref(char op, bool causal, float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int64_t M, int64_t N, int64_t K, float alpha, bool acc);
/* fp32 -> the nearest bf16 (ties to even), as fp32; NaN stays NaN, denormals -> 0 */
float tr_bf16_round(float x);

#endif
