/*
 * mxfp4.c - ggml MXFP4 blocks <-> packed e2m1 rows with e8m0 scales, and
 * the reference MXFP4 dequantizer, row and dot product (mxfp4.h).
 */
#include "mxfp4.h"
#include "fp4.h"

void ds_mxfp4_to_e2m1(const uint8_t *blocks, int64_t n_blocks, uint8_t *q, uint8_t *scales) {
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = blocks + b * DS_MXFP4_BLOCK_BYTES, *qs = blk + 1;
        uint8_t v[DS_MXFP4_BLOCK];   /* codes in column order */
        for (int j = 0; j < 16; j++) v[j] = qs[j] & 15, v[j + 16] = qs[j] >> 4;
        for (int k = 0; k < 16; k++) q[b * 16 + k] = (uint8_t)(v[2 * k] | v[2 * k + 1] << 4);
        scales[b] = blk[0];
    }
}

void ds_e2m1_to_mxfp4(const uint8_t *q, const uint8_t *scales, int64_t n_blocks, uint8_t *blocks) {
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = blocks + b * DS_MXFP4_BLOCK_BYTES;
        uint8_t v[DS_MXFP4_BLOCK];
        for (int k = 0; k < 16; k++) v[2 * k] = q[b * 16 + k] & 15, v[2 * k + 1] = q[b * 16 + k] >> 4;
        blk[0] = scales[b];
        for (int j = 0; j < 16; j++) blk[1 + j] = (uint8_t)(v[j] | v[j + 16] << 4);
    }
}

void ds_mxfp4_dequant_ref(const uint8_t *blocks, int64_t n_blocks, float *out) {
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = blocks + b * DS_MXFP4_BLOCK_BYTES;
        float d = ds_e8m0_to_f32(blk[0]);
        for (int j = 0; j < 16; j++) {
            out[b * 32 + j] = ds_fp4_e2m1_values[blk[1 + j] & 15] * d;
            out[b * 32 + j + 16] = ds_fp4_e2m1_values[blk[1 + j] >> 4] * d;
        }
    }
}

/* the value of column j of a row of blocks */
static inline float at(const uint8_t *row, int64_t j) {
    const uint8_t *blk = row + (j / DS_MXFP4_BLOCK) * DS_MXFP4_BLOCK_BYTES;
    int i = (int)(j % DS_MXFP4_BLOCK);
    uint8_t b = blk[1 + (i & 15)];
    return ds_fp4_e2m1_values[i < 16 ? b & 15 : b >> 4];
}

void ds_mxfp4_row_ref(const uint8_t *row, int64_t c0, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = at(row, c0 + i) * ds_e8m0_to_f32(row[(c0 + i) / DS_MXFP4_BLOCK * DS_MXFP4_BLOCK_BYTES]);
}

float ds_mxfp4_dot_ref(const uint8_t *row, const float *x, int64_t K) {
    float s = 0.0f;
    for (int64_t j = 0; j < K; j++)
        s += at(row, j) * ds_e8m0_to_f32(row[j / DS_MXFP4_BLOCK * DS_MXFP4_BLOCK_BYTES]) * x[j];
    return s;
}
