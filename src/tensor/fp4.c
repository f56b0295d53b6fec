/*
 * fp4.c - FP4 e2m1 values, the e8m0 scale conversion and the reference
 * dequantize / dot of a packed row (fp4.h).
 */
#include "fp4.h"


const float ds_fp4_e2m1_values[16] = {
    0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

static inline float at(const uint8_t *q, int64_t j) {
    uint8_t b = q[j >> 1];
    return ds_fp4_e2m1_values[(j & 1) ? b >> 4 : b & 15];
}

void ds_fp4_row_ref(const uint8_t *q, const uint8_t *srow, int block, int64_t c0, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = at(q, c0 + i) * ds_e8m0_to_f32(srow[(c0 + i) / block]);
}

float ds_fp4_dot_ref(const uint8_t *q, const uint8_t *srow, int block, const float *x, int64_t K) {
    float s = 0.0f;
    for (int64_t j = 0; j < K; j++) s += at(q, j) * ds_e8m0_to_f32(srow[j / block]) * x[j];
    return s;
}
