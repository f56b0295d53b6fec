/*
 * dtype.h - element types and scalar conversions to/from fp32.
 *
 * On-disk enum values are never renumbered. The block-quantized types have
 * exactly ggml's byte layouts (see tensor/quant.h) so GGUF files from
 * llama.cpp map directly; a row of such a type is a whole number of blocks.
 */
#ifndef DS_DTYPE_H
#define DS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum ds_dtype {
    DS_DTYPE_F32 = 0,
    DS_DTYPE_F16 = 1,
    DS_DTYPE_BF16 = 2,
    DS_DTYPE_F8_E4M3 = 3,
    DS_DTYPE_I32 = 4,
    DS_DTYPE_I64 = 5,
    DS_DTYPE_Q8_0 = 6,    /* blocks of 32: fp16 d, 32 x int8          (34 bytes) */
    DS_DTYPE_Q4_0 = 7,    /* blocks of 32: fp16 d, 16 bytes of nibbles (18 bytes) */
    DS_DTYPE_Q4_K = 8,    /* super-blocks of 256: d, dmin, 6-bit scales/mins, nibbles (144) */
    DS_DTYPE_Q6_K = 9,    /* super-blocks of 256: 6-bit quants, int8 scales, d (210) */
    DS_DTYPE_Q5_0 = 10,   /* blocks of 32: fp16 d, 4 bytes high bits, nibbles (22) */
    DS_DTYPE_Q4_1 = 11,   /* blocks of 32: fp16 d, m, nibbles (20) */
    DS_DTYPE_Q5_1 = 12,   /* blocks of 32: fp16 d, m, 4 bytes high bits, nibbles (24) */
    DS_DTYPE_Q2_K = 13,   /* super-blocks of 256: 4-bit scales/mins, 2-bit quants, d, dmin (84) */
    DS_DTYPE_Q3_K = 14,   /* super-blocks of 256: high-bit mask, 2-bit quants, 6-bit scales, d (110) */
    DS_DTYPE_Q5_K = 15,   /* super-blocks of 256: as Q4_K plus a high-bit plane (176) */
    DS_DTYPE_IQ2_XXS = 16, /* i-quants (grids of iq_tables.h), super-blocks of 256 (66) */
    DS_DTYPE_IQ2_XS = 17,  /* (74) */
    DS_DTYPE_IQ2_S = 18,   /* (82) */
    DS_DTYPE_IQ3_XXS = 19, /* (98) */
    DS_DTYPE_IQ3_S = 20,   /* (110) */
    DS_DTYPE_IQ1_S = 21,   /* (50) */
    DS_DTYPE_IQ1_M = 22,   /* (56) */
    DS_DTYPE_IQ4_NL = 23,  /* blocks of 32: fp16 d, nibbles indexing 16 non-linear levels (18) */
    DS_DTYPE_IQ4_XS = 24,  /* super-blocks of 256: d, 6-bit scales, IQ4_NL nibbles (136) */
    DS_DTYPE_F4_E2M1 = 25, /* two e2m1 per byte, low nibble first, with an fp32 scale view (fp4.h) */
    DS_DTYPE_MXFP4 = 26,   /* ggml MXFP4 blocks of 32: e8m0 scale + 16 bytes of e2m1 pairs (17; mxfp4.h). V4's FP4
                            * experts in GGUF: viewed in the mapping, read in place by the kernels of mxfp4.h */
    DS_DTYPE_COUNT
} ds_dtype;

/* Bytes per element; 0 for unknown and for block-quantized types. */
size_t ds_dtype_size(ds_dtype t);
/* Elements per block (1 for plain types, 32 or 256 for quantized ones)
 * and bytes per block; 0 bytes for unknown. */
int64_t ds_dtype_block(ds_dtype t);
size_t ds_dtype_block_bytes(ds_dtype t);
static inline bool ds_dtype_is_quant(ds_dtype t) { return t >= 6 && t <= DS_DTYPE_IQ4_XS; }
const char *ds_dtype_name(ds_dtype t);

static inline float ds_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round-to-nearest-even; NaN stays NaN. */
static inline uint16_t ds_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ds_f16_to_f32(uint16_t h);
uint16_t ds_f32_to_f16(float f);

/* float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa, no inf, S.1111.111 = NaN. */
extern float ds_fp8_e4m3_table[256];
void ds_dtype_init(void);  /* fills tables; idempotent, called by model loaders */
static inline float ds_fp8_e4m3_to_f32(uint8_t b) { return ds_fp8_e4m3_table[b]; }
float ds_fp8_e4m3_to_f32_ref(uint8_t b);   /* the formula, for tests */
uint8_t ds_f32_to_fp8_e4m3(float f);       /* RNE, saturating to +-448 */

#endif
