/*
 * quant.h - block-quantized weight types (ggml byte layouts) and the
 * activation formats they are multiplied with.
 *
 * Weight blocks (exactly ggml-common.h, so GGUF files from llama.cpp map
 * directly; d/dmin are IEEE fp16):
 *   Q8_0  32 values: d, int8 q[32]                      x = d·q
 *   Q4_0  32 values: d, 16 bytes; value j in the low nibble of byte j,
 *         value j+16 in the high nibble                 x = d·(q - 8)
 *   Q5_0  32 values: d, qh (bit j = 5th bit of value j), nibbles as Q4_0
 *                                                       x = d·(q - 16)
 *   Q4_K  256 values in 8 sub-blocks of 32: d, dmin, 12 bytes of packed
 *         6-bit (scale, min) pairs, 128 bytes of nibbles (per 64 values:
 *         low nibbles = first 32, high nibbles = next 32)
 *                                                       x = d·sc_j·q - dmin·m_j
 *   Q6_K  256 values in 16 sub-blocks of 16: ql[128] (low 4 bits), qh[64]
 *         (high 2 bits), int8 scales[16], d             x = d·sc_j·(q - 32)
 *
 * Activations are quantized on the fly, one row of K values at a time, into
 * an internal (never stored) layout chosen for the weight type:
 *   "A8" for Q8_0/Q4_0/Q5_0 weights: int8 q[K], then fp32 d[K/32], then
 *        fp32 s[K/32] = Σ q over the block (for the zero-point terms)
 *   "K8" for Q4_K/Q6_K weights:      int8 q[K], then fp32 d[K/256], then
 *        int16 bsum[K/16] = Σ q over each 16 values, then
 *        int32 pair[K/256][4]: pair j of a block = the i16 pair
 *        (low B_j, high B_j+4), B_j = Σ q over its sub-block j of 32 (the
 *        activation side of Q4_K's mins, as the VNNI kernels' vpdpwssd
 *        takes it: made once per row here instead of once per weight
 *        group and token in repack_avx512.c; |B_j| <= 32·127 fits)
 * with d = max|x|/127 per block and q = round-to-nearest-even(x·127/max|x|).
 *
 * Every fast kernel (quant_avx2.c) has a reference twin here and a test in
 * tests/test_quant.c.
 *
 * The other types of hub GGUFs (Q4_1, Q5_1, Q2_K, Q3_K, Q5_K and the
 * i-quants, quant_ext.h) go through the same entry points: activations A8
 * for the 32-value ones (Q4_1, Q5_1, IQ4_NL), K8 for the 256-value ones.
 */
#ifndef DS_QUANT_H
#define DS_QUANT_H

#include "dtype.h"

#define DS_QK 32      /* Q8_0 / Q4_0 / Q5_0 block */
#define DS_QK_K 256   /* K-quant super-block */

typedef struct { uint16_t d; int8_t qs[32]; } ds_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[16]; } ds_block_q4_0;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } ds_block_q5_0;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } ds_block_q4_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } ds_block_q6_K;

_Static_assert(sizeof(ds_block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(ds_block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(ds_block_q5_0) == 22, "block_q5_0 layout");
_Static_assert(sizeof(ds_block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(ds_block_q6_K) == 210, "block_q6_K layout");

/* True if rows of K values can be stored as t (K a multiple of the block). */
bool ds_quant_row_ok(ds_dtype t, int64_t K);

/* Reference quantizer: n values (a multiple of the block) -> blocks of t.
 * t may also be F32/F16/BF16 (plain conversion). */
void ds_quantize_row_ref(ds_dtype t, const float *x, void *out, int64_t n);
/* True if ds_quantize_row_ref can write t (the IQ1/IQ2/IQ3 types: read only). */
bool ds_quant_has_quantizer(ds_dtype t);
/* Sets the scale fields of one block of t (other bytes: quants, kept) so
 * that its values have RMS `rms` (random models for benchmarks). */
void ds_quant_set_block_rms(ds_dtype t, void *blk, float rms);
/* Reference dequantizer: blocks -> n floats. */
void ds_dequant_row_ref(ds_dtype t, const void *in, float *out, int64_t n);

/* ---- activations ---- */

/* Activation layout used with weight type t: 0 none (fp32), 1 A8, 2 K8. */
int ds_act_kind(ds_dtype t);
/* Bytes of one quantized activation row of K values for weight type t. */
size_t ds_act_row_bytes(ds_dtype t, int64_t K);
void ds_quantize_act_ref(ds_dtype t, const float *x, void *out, int64_t K);
/* A K8 row's pair[] from its bsum[] (bs: the row's bsum, K its length). */
void ds_act_k8_pairs(const int16_t *bs, int64_t K);
/* Σ_i w[i]·a[i] for one weight row (blocks of t) and one quantized
 * activation row, computed from the dequantized values in double. */
float ds_vec_dot_ref(ds_dtype t, const void *w, const void *act, int64_t K);

/* Sub-block (scale, min) of Q4_K super-block j (0..7), as ggml. */
static inline void ds_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
