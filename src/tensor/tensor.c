/*
 * tensor.c - element access for tensor views (the plain reference path).
 */
#include "tensor.h"
#include "fp4.h"
#include "mxfp4.h"
#include "quant.h"

size_t ds_dtype_row_bytes(ds_dtype t, int64_t cols) {
    return ds_dtype_block_bytes(t) * (size_t)(cols / ds_dtype_block(t));
}

ds_tensor ds_tensor_slice(const ds_tensor *t, int64_t i) {
    DS_ASSERT(t->ndim == 3 && i >= 0 && i < t->shape[0] && !t->scale);
    ds_tensor s = *t;
    s.ndim = 2;
    s.shape[0] = t->shape[1];
    s.shape[1] = t->shape[2];
    s.shape[2] = 0;
    size_t bytes = ds_dtype_row_bytes(t->dtype, t->shape[2]) * (size_t)t->shape[1];
    s.data = (const uint8_t *)t->data + bytes * (size_t)i;
    if (t->rp) s.rp = (const uint8_t *)t->rp + bytes * (size_t)i;
    s.nbytes = bytes;
    return s;
}

void ds_tensor_row_f32(const ds_tensor *w, int64_t r, int64_t c0, int64_t n, float *out) {
    int64_t K = ds_tensor_cols(w);
    DS_ASSERT(c0 >= 0 && n >= 0 && c0 + n <= K);
    size_t base = (size_t)r * (size_t)K + (size_t)c0;
    switch (w->dtype) {
    case DS_DTYPE_F32: {
        const float *p = (const float *)w->data + base;
        for (int64_t i = 0; i < n; i++) out[i] = p[i];
        break;
    }
    case DS_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + base;
        for (int64_t i = 0; i < n; i++) out[i] = ds_bf16_to_f32(p[i]);
        break;
    }
    case DS_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)w->data + base;
        for (int64_t i = 0; i < n; i++) out[i] = ds_f16_to_f32(p[i]);
        break;
    }
    case DS_DTYPE_F8_E4M3: {
        const uint8_t *p = (const uint8_t *)w->data + base;
        if (w->scale) {
            const float *srow = w->scale + (size_t)(r / w->block_r) * (size_t)w->scale_cols;
            for (int64_t i = 0; i < n; i++)
                out[i] = ds_fp8_e4m3_to_f32(p[i]) * srow[(c0 + i) / w->block_c];
        } else {
            for (int64_t i = 0; i < n; i++) out[i] = ds_fp8_e4m3_to_f32(p[i]);
        }
        break;
    }
    case DS_DTYPE_F4_E2M1: {
        DS_ASSERT(w->scale_e8m0 && w->block_r == 1);
        const uint8_t *q = (const uint8_t *)w->data + (size_t)r * (size_t)(K / 2);
        ds_fp4_row_ref(q, w->scale_e8m0 + (size_t)r * (size_t)w->scale_cols, w->block_c, c0, n, out);
        break;
    }
    case DS_DTYPE_MXFP4:   /* ggml blocks read in place (mxfp4.h) */
        ds_mxfp4_row_ref((const uint8_t *)w->data + ds_dtype_row_bytes(w->dtype, K) * (size_t)r, c0, n, out);
        break;
    default: {
        DS_ASSERT(ds_dtype_is_quant(w->dtype) && "tensor dtype has no fp32 view");
        /* block-quantized: whole blocks covering [c0, c0+n) of row r */
        int64_t B = ds_dtype_block(w->dtype);
        const uint8_t *row = (const uint8_t *)w->data + ds_dtype_row_bytes(w->dtype, K) * (size_t)r;
        float tmp[256];
        for (int64_t b = c0 / B; b * B < c0 + n; b++) {
            ds_dequant_row_ref(w->dtype, row + ds_dtype_block_bytes(w->dtype) * (size_t)b, tmp, B);
            int64_t lo = DS_MAX(b * B, c0), hi = DS_MIN((b + 1) * B, c0 + n);
            for (int64_t c = lo; c < hi; c++) out[c - c0] = tmp[c - b * B];
        }
        break;
    }
    }
}

void ds_tensor_to_f32(const ds_tensor *w, float *out) {
    int64_t rows = w->ndim >= 2 ? ds_tensor_numel(w) / ds_tensor_cols(w) : 1;
    int64_t K = ds_tensor_cols(w);
    for (int64_t r = 0; r < rows; r++) ds_tensor_row_f32(w, r, 0, K, out + r * K);
}
