/*
 * quant_ext.h - private to src/tensor: the block types added after the
 * first five (Q4_1, Q5_1, Q2_K, Q3_K, Q5_K and the i-quants), reached
 * through quant.c's dispatch.
 *
 * Byte layouts (ggml's; fp16 d/dmin/m; "sub-block s" = values 16s..16s+15
 * or 32s..32s+31 as stated):
 *   Q4_1  d, m, qs[16]                 x = d·q + m  (q as Q4_0)
 *   Q5_1  d, m, qh[4], qs[16]          x = d·q + m  (q as Q5_0, no offset)
 *   Q2_K  scales[16], qs[64], d, dmin  value 128n+32j+l: q = qs[32n+l]>>2j & 3,
 *         sub-block of 16 s: x = d·(sc_s & 15)·q - dmin·(sc_s >> 4)
 *   Q3_K  hmask[32], qs[64], scales[12], d: q = (qs[32n+l]>>2j & 3) - 4·!(hmask[l]>>(4n+j) & 1),
 *         6-bit scales packed as 4+2 bits, x = d·(s - 32)·q per 16
 *   Q5_K  d, dmin, scales[12] (as Q4_K), qh[32], qs[128]: value 32b+l has
 *         nibble as Q4_K and bit b of qh[l] as bit 4
 *   IQ2_XXS d, 8 x (4 grid bytes, u32: 4 x 7 sign bits | 4-bit scale << 28)  x = d·(0.5+s)/4·g·sign
 *   IQ2_XS  d, u16 qs[32] (9-bit grid | 7-bit signs), 4-bit scales[16] per 16
 *   IQ2_S   d, qs[32] (grid low 8 bits), signs[32], qh[8] (2 grid bits each), scales[8]
 *   IQ3_XXS d, qs[64] (grid of 4), 8 x u32 (4 x 7 sign bits | scale << 28)  x = d·(0.5+s)/2·g·sign
 *   IQ3_S   d, qs[64], qh[8] (9th grid bit), signs[32], scales[4]  x = d·(1+2s)·g·sign per 32
 *   IQ1_S   d, qs[32], u16 qh[8] (3 grid bits x 4 | 3-bit scale << 12 | delta sign << 15)
 *                                      x = d·(2s+1)·(g ± 1/8) per 32
 *   IQ1_M   qs[32], qh[16] (nibble per 8 values: 3 grid bits | delta sign), u16 sc[4]:
 *           3-bit scales per 16, fp16 d in the top nibbles  x = d·(2s+1)·(g ± 1/8)
 *   IQ4_NL  d, qs[16] (as Q4_0)         x = d·kvalues[q]
 *   IQ4_XS  d, u16 scales_h, scales_l[4], qs[128]: 6-bit scale per 32  x = d·(s - 32)·kvalues[q]
 */
#ifndef DS_QUANT_EXT_H
#define DS_QUANT_EXT_H

#include "quant.h"

/* n values (whole blocks); false if t is not one of the types above */
bool ds_dequant_ext(ds_dtype t, const void *in, float *y, int64_t n);
bool ds_quantize_ext(ds_dtype t, const float *x, void *out, int64_t n);

/* One activation block of a type (32 values for Q4_1/Q5_1/IQ4_NL, else 256)
 * as integers: x[i] = sc[i/16]·q[i] + mn[i/16]; the fast kernels' form.
 * q may be NULL: scales and offsets only (the AVX2 kernels expand the
 * integers themselves, quant_ext_avx2.c). */
void ds_expand_block(ds_dtype t, const void *blk, int8_t *q, float *sc, float *mn);

/* quant.c's scale searches: x[n] ≈ s·q - m, q in [0, nmax] (n <= 256), and
 * x[n] ≈ s·q, q in [-nmax, nmax-1] (n <= 64). */
void ds_fit_asym(const float *x, int n, int nmax, float *s_out, float *m_out);
float ds_fit_sym(const float *x, int n, int nmax);

#endif
