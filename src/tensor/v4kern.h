/*
 * v4kern.h - DeepSeek-V4 attention kernels (src/model/v4attn.c calls them):
 * the attention of H query heads over one shared K=V head given as a list of
 * rows (the sliding window plus the selected compressed entries), and the
 * CSA indexer's scores over the compressed entries. Each has a plain C
 * reference twin (*_ref: the loops v4attn.c had, kept bit for bit) and an
 * AVX2 version used from core/cpu.h's avx2 level up (DS_ISA=generic runs
 * the twin); it sums the dot products in lanes, so it differs from the twin
 * by rounding only (tests/test_v4kern.c). An AVX-512 variant measured no
 * faster (tools/bench_v4kern.c: both ~11x the twin on one EPYC core).
 * Every token's result depends on its own inputs only: batch invariant.
 */
#ifndef DS_V4KERN_H
#define DS_V4KERN_H

#include <stdint.h>

/* Heads [h0, h1) of V4 attention: per head h, over the nk keys (= values)
 * keys[i] (Dh floats each):
 *   l_i = scale · q_h·k_i,  m = max(sinks[h], l_i),  e_i = exp(l_i - m),
 *   o_h = Σ_i e_i k_i / (exp(sinks[h] - m) + Σ_i e_i)
 * (the sink takes its share of the softmax and contributes nothing).
 * q, o: (H, Dh) rows h of the token; lg: scratch of nk · (h1 - h0) floats. */
void ds_v4_attn_heads(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                      int64_t Dh, float scale, const float *sinks, float *lg);
void ds_v4_attn_heads_ref(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                          int64_t Dh, float scale, const float *sinks, float *lg);

/* Indexer scores of entries [w0, w1): sc[w] = Σ_h relu(q_h · k_w) · iscale · iw[h],
 * q (Hi, Di) the token's roped index queries, k_w = kent + w·ld (Di floats),
 * iw (Hi) the token's head weights. */
void ds_v4_index_scores(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                        int64_t w1, int64_t Hi, int64_t Di, float iscale);
void ds_v4_index_scores_ref(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                            int64_t w1, int64_t Hi, int64_t Di, float iscale);

/* The level the dispatching entry points use: "generic" or "avx2". */
const char *ds_v4kern_isa(void);

#endif
