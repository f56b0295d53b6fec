/*
 * mxfp4.h - ggml's MXFP4 blocks (GGUF type 39, llama.cpp's form of
 * DeepSeek-V4's FP4 experts) and their 1:1 mapping to our packed e2m1 rows
 * with e8m0 scales (fp4.h). A block of 32 values is 17 bytes:
 *   byte 0       e8m0 scale e (the value is 2^(e-127), as fp4.h's scales)
 *   bytes 1..16  qs[j]: value j in the low nibble, value j+16 in the high one
 * A value is the e2m1 code of fp4.h (ggml indexes a doubled table with half
 * the scale: the same number). fp4.h's layout holds columns 2k / 2k+1 in one
 * byte with one e8m0 per 32 columns, so both directions only move bits and
 * are lossless (convert writes FP4 experts as MXFP4 that way).
 *
 * The GGUF loader keeps MXFP4 experts where they are, views into the file
 * mapping (dtype DS_DTYPE_MXFP4, no resident copy), and the kernels below
 * read the blocks in place. Their sums run in the order of the FP4 kernels
 * on the repacked row (fp4.c / fp4_avx2.c: column order in the reference;
 * per block 4 FMA steps of 8 lanes, a horizontal sum, times the scale in
 * the AVX2 twin), so the native and the repacked paths give the same bits.
 * A scale byte 0xff is NaN, as fp4.h and the OCP MX spec (ggml reads it as
 * 2^128; no converter writes it). ds_mxfp4_dequant_ref is the reference
 * dequantizer, checked against the PyPI gguf package's NumPy one
 * (tests/test_gguf_v4.c, tests/fixtures/quant/mxfp4.bin); the kernels are
 * compared with it and with the FP4 path in tests/test_mxfp4.c.
 */
#ifndef DS_MXFP4_H
#define DS_MXFP4_H

#include <stdint.h>

#define DS_MXFP4_BLOCK 32        /* values per block */
#define DS_MXFP4_BLOCK_BYTES 17  /* 1 scale + 16 code bytes */

/* n_blocks blocks -> q [n_blocks · 16] packed e2m1 pairs (fp4.h) and
 * scales [n_blocks] e8m0; consecutive blocks are consecutive columns. */
void ds_mxfp4_to_e2m1(const uint8_t *blocks, int64_t n_blocks, uint8_t *q, uint8_t *scales);
/* The inverse: q [n_blocks · 16] and scales [n_blocks] -> blocks [n_blocks · 17]. */
void ds_e2m1_to_mxfp4(const uint8_t *q, const uint8_t *scales, int64_t n_blocks, uint8_t *blocks);
/* out [n_blocks · 32] = the blocks' values, block by block (reference). */
void ds_mxfp4_dequant_ref(const uint8_t *blocks, int64_t n_blocks, float *out);

/* One row of K values (K a multiple of 32) is K/32 consecutive blocks. */
/* out[i] = W[c0 + i] for i < n of the row (reference). */
void ds_mxfp4_row_ref(const uint8_t *row, int64_t c0, int64_t n, float *out);
/* Σ_j W[j]·x[j] over the row, in column order (the bits of ds_fp4_dot_ref
 * on the repacked row). */
float ds_mxfp4_dot_ref(const uint8_t *row, const float *x, int64_t K);

/* AVX2 + FMA twins (mxfp4_avx2.c; only when the CPU has them): the bits of
 * ds_fp4_dot_avx2 / ds_fp4_row_avx2 on the repacked row. */
float ds_mxfp4_dot_avx2(const uint8_t *row, const float *x, int64_t K);
void ds_mxfp4_row_avx2(const uint8_t *row, int64_t K, float *out);
/* AVX-512 F/BW/VL/DQ twin of the dot (mxfp4_avx512.c; core/cpu.h level
 * avx512 and above): two blocks per step, the bits of ds_mxfp4_dot_avx2. */
float ds_mxfp4_dot_avx512(const uint8_t *row, const float *x, int64_t K);

#endif
