/*
 * tensor.h - a read-only view of a stored weight tensor.
 *
 * Tensors are never copied: `data` points into a memory-mapped file. A 2-D
 * weight W is stored row-major as [N (out), K (in)] and applied as
 * y = x · Wᵀ (PyTorch nn.Linear convention). FP8 weights carry a companion
 * block-scale view (`weight_scale_inv`, a multiplier despite its name):
 *   W[i][j] = fp8(Wq[i][j]) · scale[i / block_r][j / block_c]
 * F4_E2M1 weights (DeepSeek-V4's experts, fp4.h) are packed two per byte
 * (data holds rows of K/2 bytes) with the stored e8m0 bytes as their scales
 * (scale_e8m0, one per block_c columns of a row).
 */
#ifndef DS_TENSOR_H
#define DS_TENSOR_H

#include "../core/base.h"
#include "dtype.h"

#define DS_MAX_DIMS 4

typedef struct ds_tensor {
    const char *name;                /* borrowed, for messages */
    ds_dtype dtype;
    int ndim;
    int64_t shape[DS_MAX_DIMS];
    const void *data;                /* borrowed (mmap) or owned by the loader */
    size_t nbytes;
    /* x8 row-interleaved copy (repack.h) at the same byte offsets as data:
     * whole groups of 8 rows (of each 2-D slice) repacked, the rest copied;
     * NULL if none. Owned by the model; matmuls prefer it. */
    const void *rp;
    /* FP8 block scales, fp32 [scale_rows, scale_cols]; NULL if none */
    const float *scale;
    /* F4_E2M1 only: its e8m0 scales [rows, scale_cols] as stored (one byte,
     * 2^(b - 127), per block_c columns; borrowed from the file) */
    const uint8_t *scale_e8m0;
    int64_t scale_rows, scale_cols;
    int block_r, block_c;
} ds_tensor;

static inline int64_t ds_tensor_numel(const ds_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
static inline int64_t ds_tensor_rows(const ds_tensor *t) { return t->ndim >= 2 ? t->shape[0] : 1; }
static inline int64_t ds_tensor_cols(const ds_tensor *t) { return t->shape[t->ndim - 1]; }
static inline bool ds_tensor_present(const ds_tensor *t) { return t->data != NULL; }

/* Bytes of one row of `cols` elements (block-quantized types: whole blocks). */
size_t ds_dtype_row_bytes(ds_dtype t, int64_t cols);

/* The i-th 2-D slice [shape[1], shape[2]] of a 3-D tensor (stacked experts,
 * per-head matrices). FP8 block scales are not supported for 3-D tensors. */
ds_tensor ds_tensor_slice(const ds_tensor *t, int64_t i);

/* out[c] = W[r][c0 + c] as fp32 for c < n (dequantized, scale applied). */
void ds_tensor_row_f32(const ds_tensor *w, int64_t r, int64_t c0, int64_t n, float *out);

/* Reads a whole 1-D (or any) tensor into out[numel] as fp32. */
void ds_tensor_to_f32(const ds_tensor *w, float *out);

#endif
