/*
 * v4kern_isa.h - private: the AVX2 versions of v4kern.h's kernels
 * (v4kern_avx2.c); same contracts as the twins. (An AVX-512 variant ran no
 * faster on the EPYC we measured on: the loads bound it, not the FMAs.)
 */
#ifndef DS_V4KERN_ISA_H
#define DS_V4KERN_ISA_H

#include <stdint.h>

void ds_v4_attn_heads_avx2(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                           int64_t Dh, float scale, const float *sinks, float *lg);
void ds_v4_index_scores_avx2(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                             int64_t w1, int64_t Hi, int64_t Di, float iscale);
/* the softmax the vector version shares with the twin: lg (nk) logits of
 * one head in, their exp(l - m) out; returns 1 / (exp(sink - m) + Σ) */
float ds_v4_softmax_row(float *lg, int64_t nk, float sink);

#endif
