/*
 * tgemm_impl.h - what tgemm.c shares with its ISA files (tgemm_avx512.c)
 * and its reference twin (tgemm_ref.c): one GEMM call as a job, the row
 * tile and K block that fix the summation order, and the per-level row
 * workers. Not for callers outside tgemm*.c (they use tgemm.h).
 *
 * Summation order, every path: C[i][j] = alpha · s + C (acc or a later K
 * block), s summed from zero over k ascending within each block of TG_DKC
 * k's. fp32: one FMA per k (AVX2 and AVX-512 give the same bits). bf16:
 * A and B rounded to bf16 (round to nearest even) and summed a k pair at
 * a time by vdpbf16ps (tgemm_ref.c says in which order).
 */
#ifndef DS_TGEMM_IMPL_H
#define DS_TGEMM_IMPL_H

#include "../core/base.h"

#define TG_MR 6      /* rows of a register tile: also the causal band of tgemm.h */
#define TG_DKC 384   /* K block (even: bf16 pairs never straddle blocks) */

enum { MODE_NT, MODE_NN, MODE_TN };
enum { CAUSAL_NONE, CAUSAL_NN, CAUSAL_TN, CAUSAL_NT };

typedef struct {
    int mode, causal;
    float *C; int64_t ldc;
    const float *A; int64_t lda;
    const float *B; int64_t ldb;
    int64_t M, N, K;
    float alpha;
    bool acc;
    bool bf16;   /* set by run(): bf16 mode and not inside TR_FP32 */
    const float *bpack;   /* set by run(): B's panels for every K block (bf16: pairs), packed once
                           * (tg_pack_cache_get), or NULL: each worker packs its own */
} gemm_job;

/* tgemm_avx512.c: rows [m0, m1) of C (m0 a multiple of TG_MR) with 6x32
 * tiles; fp32 needs DS_ISA_AVX512, bf16 needs AVX512-BF16 usable. */
void tg_rows_f32_avx512(const gemm_job *g, int64_t m0, int64_t m1, int tid);
void tg_rows_bf16_avx512(const gemm_job *g, int64_t m0, int64_t m1, int tid);

/* tgemm_avx512.c: B of an nt (trans) or nn job packed into the 32-column
 * panels of every K block, laid out as tg_rows_f32_avx512 (block kb at
 * float kb·32·ceil(N/32)) or, bf16, tg_rows_bf16_avx512 packs it (block kb
 * at pair (kb/2)·32·ceil(N/32)), cached per (B, ldb, trans, bf16, N, K)
 * and repacked at
 * most once per freeze epoch (tgemm.h); NULL when out of memory or past the
 * cache's 1 GiB (the caller then packs per call). Thread-safe. */
const float *tg_pack_cache_get(const float *B, int64_t ldb, bool trans, bool bf16, int64_t N, int64_t K, uint64_t epoch);
void tg_pack_cache_free(void);

/* tgemm_ref.c: the whole job in plain C, bf16 inputs, the kernels' order. */
void tg_bf16_ref(const gemm_job *g);

#endif
