/*
 * repack.h - row-interleaved ("x8") layouts of the block-quantized weight
 * types, made once at load time, and the multi-token integer kernels that
 * use them (decode and prefill matmuls).
 *
 * A weight [N, K] is cut into groups of 8 consecutive rows. A group keeps
 * exactly the bytes of its 8 rows (8 · row_bytes), so byte offsets of row
 * groups and of 2-D slices are the same as in the original tensor; inside a
 * group, block b of all 8 rows is stored together and the quants are laid
 * out in "chunk vectors" of 32 bytes = 8 rows x 4 consecutive k:
 *
 *     byte 4·r + i of a chunk vector  <->  row r, k = k0 + i
 *
 * so one 32-byte load feeds an integer product whose lane r is row r, and
 * the activation side is one broadcast 4-byte load (no horizontal sums).
 * Per block of the 8 rows (d, dmin: the rows' fp16 scales in row order):
 *
 *   Q8_0  (272 B)  d[8] | 8 chunk vectors (k = 4c..4c+3, c = 0..7)
 *   Q4_0  (144 B)  d[8] | 4 nibble vectors v: low nibble = chunk v, high = chunk v+4
 *   IQ4_NL (144 B) as Q4_0 (the nibbles index the 16 IQ4 levels)
 *   Q5_0  (176 B)  d[8] | hbits (32 B: bit s of byte 4r+i = 5th bit of chunk s) | 4 nibble vectors as Q4_0
 *   Q4_K (1152 B)  d[8] | dmin[8] | scales (96 B) | 32 nibble vectors v: low = chunk v, high = chunk v+32
 *                  scales: index p = 8·j + r (sub-block j of 32, row r), byte p of
 *                  A (32 B) = sc[p] & 15 | (sc[p+32] & 15) << 4, B the same for the mins,
 *                  C = sc[p] >> 4 | (sc[p+32] >> 4) << 2 | (m[p] >> 4) << 4 | (m[p+32] >> 4) << 6
 *   Q6_K (1680 B)  d[8] | int8 scales[16][8] (sub-block j of 16, row r) | 32 nibble vectors v:
 *                  low = chunk v, high = chunk v+32 (low 4 bits) | 16 high-bit vectors h:
 *                  bits 2f..2f+1 of byte 4r+i = high 2 bits of chunk {2h, 2h+1, 2h+32, 2h+33}[f]
 *   Q2_K  (672 B)  d[8] | dmin[8] | the rows' scale bytes [16][8] (sub-block s of 16, row r;
 *                  low 4 bits scale, high 4 min) | 16 crumb vectors v: bits 2f..2f+1 of
 *                  byte 4r+i = value of chunk v + 16f (k = 4(v + 16f) + i)
 *   Q3_K  (880 B)  d[8] | scales: the rows' 6-bit values v (scale = v - 32) at index p = 8s + r:
 *                  64 B low nibbles (byte p%64, high nibble for p >= 64), 32 B top 2 bits
 *                  (bits 2(p/32).. of byte p%32) | 8 high-bit vectors h: bit f of byte
 *                  4r+i = high bit of chunk h + 8f | 16 crumb vectors as Q2_K (q = lo + 4 high - 4)
 *   IQ2_XXS (528 B) d[8] | [8 sub-blocks of 32][8 rows] x 8 bytes (the row's own 4 grid
 *                  indices + sign/scale word): grid values cannot be stored as chunk
 *                  vectors in the same bytes, so the AVX2 kernel expands each row's 32
 *                  values and sums the 8 rows' products into row lanes once per block
 *                  (the VNNI one expands a sub-block of all 8 rows in 512-bit registers)
 *
 * Kernels compute out[t][r] = row r · activation t for up to 4 tokens per
 * call (8 for the AVX-512 VNNI ones: DS_RP_CORE_T in repack_avx512.c,
 * DS_RP_EXT_T in repack_ext_avx512.c), against the quantized activations of quant.h (A8 / K8). Every
 * token's result is computed by the same instructions in the same order
 * whatever the number of tokens in the call, so a token's result never
 * depends on the others (batch invariance; tests/test_repack.c checks it
 * bit for bit). Rows past the last whole group of 8 are not repacked.
 */
#ifndef DS_REPACK_H
#define DS_REPACK_H

#include "dtype.h"

#define DS_RP_ROWS 8     /* rows per group */
#define DS_RP_MAX_T 4    /* tokens per kernel call */
#define DS_RP_EXT_T 8    /* tokens per call of the AVX-512 VNNI kernels of the quant_ext.h types */
#define DS_RP_CORE_T 8   /* tokens per weight unpack of the AVX-512 VNNI kernels of Q8_0/Q4_0/Q5_0/Q4_K/Q6_K */

/* True if rows of K values of type t can be repacked. */
bool ds_repack_supported(ds_dtype t, int64_t K);

/* Group of 8 rows (original layout, consecutive rows) -> x8 layout (same size). */
void ds_repack_group(ds_dtype t, const void *rows, int64_t K, void *out);
/* The inverse (for tests): x8 group -> 8 rows in the original layout. */
void ds_unpack_group_ref(ds_dtype t, const void *grp, int64_t K, void *rows);

/* out[t·8 + r] = row r of the group · act[t] for t < T (T = 1..4), act rows
 * quantized for type t (quant.h). Reference: unpacks and uses ds_vec_dot_ref. */
void ds_gemm_x8_ref(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out);

#endif
