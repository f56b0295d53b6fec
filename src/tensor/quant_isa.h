/*
 * quant_isa.h - private: the ISA-specific entry points of the quantized
 * kernels (*_avx2.c, *_avx512.c); ops.c dispatches to them at run time.
 */
#ifndef DS_QUANT_ISA_H
#define DS_QUANT_ISA_H

#include "dtype.h"

void ds_quantize_act_avx2(ds_dtype t, const float *x, void *out, int64_t K);
float ds_vec_dot_avx2(ds_dtype t, const void *w, const void *act, int64_t K);
/* out[i] = w · act[i] for 4 activation rows (pass duplicates for fewer) */
void ds_vec_dot4_avx2(ds_dtype t, const void *w, const void *const *act, int64_t K, float *out);
/* the types of quant_ext.h: out[j] = w · act[j] for T = 1..4 tokens, each
 * token's result independent of T (quant_ext_avx2.c) */
void ds_dot_ext_avx2(ds_dtype t, const void *w, const int8_t *const *act, int T, int64_t K, float *out);
static inline bool ds_dot_ext_token_exact(ds_dtype t) { return t >= DS_DTYPE_Q4_1 && ds_dtype_is_quant(t); }
/* the integers of ds_expand_block (quant_ext.h), q 32-byte aligned */
void ds_expand_ints_avx2(ds_dtype t, const void *blk, int8_t *q);
void ds_dequant_ext_avx2(ds_dtype t, const void *in, float *out, int64_t n);
void ds_dequant_row_avx2(ds_dtype t, const void *in, float *out, int64_t n);
/* repack.h x8 groups: out[t·8 + r] = row r · act[t], t < T <= 4 (repack_avx2.c) */
void ds_gemm_x8_avx2(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out);
/* AVX-512 VNNI x8 kernels, same contract as ds_gemm_x8_avx2; false when the
 * type has none (repack_avx512.c: Q8_0/Q4_0/Q5_0/Q4_K/Q6_K; repack_ext_avx512.c:
 * the quant_ext.h types). Called only when core/cpu.h's level >= avx512vnni. */
bool ds_gemm_x8_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out);
/* The same (repack_avx512.c's types) with token t's 8 results at out + t·ldo
 * (ldo >= 8): ops.c passes a row of y, so the results go straight to their
 * place instead of through a buffer; the bits of ds_gemm_x8_avx512 */
bool ds_gemm_x8_avx512_ld(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out,
                          int64_t ldo);
/* True for the types ds_gemm_x8_avx512 has a kernel for (any T: runs of 8;
 * 1-4 tokens per unpack by its 4-token kernels, 5-8 by its 8-token ones;
 * ops.c gives it a whole token tile, up to 64, per call) */
bool ds_gemm_x8_avx512_has(ds_dtype t);
bool ds_gemm_x8_ext_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out);
/* True for the types ds_gemm_x8_ext_avx512 has a kernel for (it takes any T;
 * ops.c gives it a whole token tile, up to 64, per call: IQ2_XXS and IQ4_NL
 * then unpack a weight block once for more than 8 tokens) */
bool ds_gemm_x8_ext_avx512_has(ds_dtype t);
/* repack_ext_avx512.c's IQ2_XXS kernel: -1 (default) the AVX512-VBMI/BITALG
 * one where the CPU has both, 0 the AVX-512BW one, 1 the VBMI one if the CPU
 * has it (both bit-identical; tests run each) */
extern int ds_iq2xxs_vbmi;
bool ds_iq2xxs_vbmi_available(void);
/* one token (decode) over ng consecutive x8 groups: out[8·i + r] = row r of
 * group i · act, bit-identical to ds_gemm_x8_avx2 with T = 1 (gemv_avx512.c;
 * Q4_K, Q6_K, Q5_0, Q8_0; level >= avx512vnni). _has: a kernel for (t, K). */
bool ds_gemv_x8_avx512_has(ds_dtype t, int64_t K);
bool ds_gemv_x8_avx512(ds_dtype t, const void *grp, int64_t ng, const void *act, int64_t K, float *out);
/* fp8 e4m3 row segment -> fp32, times scale[(c0 + i) / block] (scale may be NULL) */
void ds_cvt_fp8_avx2(float *out, const uint8_t *w, int64_t n, const float *scale, int64_t c0, int block);

#endif
