/*
 * v4kern_isa.h - private: the AVX2 and AVX-512 versions of v4kern.h's
 * kernels (v4kern_avx2.c, v4kern_avx512.c); same contracts as the twins.
 */
#ifndef DS_V4KERN_ISA_H
#define DS_V4KERN_ISA_H

#include <stdint.h>

void ds_v4_attn_heads_avx2(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                           int64_t Dh, float scale, const float *sinks, float *lg);
void ds_v4_index_scores_avx2(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                             int64_t w1, int64_t Hi, int64_t Di, float iscale);
void ds_v4_attn_heads_avx512(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                             int64_t Dh, float scale, const float *sinks, float *lg);
void ds_v4_index_scores_avx512(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                               int64_t w1, int64_t Hi, int64_t Di, float iscale);
/* the softmax both vector versions share with the twin: lg (nk) logits of
 * one head in, their exp(l - m) out; returns 1 / (exp(sink - m) + Σ) */
float ds_v4_softmax_row(float *lg, int64_t nk, float sink);

#endif
