/*
 * dtype.h - element types and scalar conversions to/from fp32.
 *
 * On-disk enum values are never renumbered. Block-quantized GGUF types
 * (Q8_0, Q4_K, ...) are added by the quantization module.
 */
#ifndef DS_DTYPE_H
#define DS_DTYPE_H

#include <stdint.h>
#include <string.h>

typedef enum ds_dtype {
    DS_DTYPE_F32 = 0,
    DS_DTYPE_F16 = 1,
    DS_DTYPE_BF16 = 2,
    DS_DTYPE_F8_E4M3 = 3,
    DS_DTYPE_I32 = 4,
    DS_DTYPE_I64 = 5,
    DS_DTYPE_COUNT
} ds_dtype;

/* Bytes per element; 0 for unknown. */
size_t ds_dtype_size(ds_dtype t);
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
