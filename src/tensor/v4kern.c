/*
 * v4kern.c - the reference twins of v4kern.h's kernels (plain C, the loops
 * v4attn.c ran before they moved here: bit for bit the same) and the
 * dispatch on core/cpu.h's level.
 */
#include "v4kern.h"
#include "v4kern_isa.h"
#include "../core/cpu.h"

#include <math.h>
#include <string.h>

float ds_v4_softmax_row(float *lg, int64_t nk, float sink) {
    float mx = sink;
    for (int64_t i = 0; i < nk; i++)
        if (lg[i] > mx) mx = lg[i];
    double se = exp((double)(sink - mx));
    for (int64_t i = 0; i < nk; i++) { lg[i] = expf(lg[i] - mx); se += lg[i]; }
    return (float)(1.0 / se);
}

void ds_v4_attn_heads_ref(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                          int64_t Dh, float scale, const float *sinks, float *lg) {
    for (int64_t h = h0; h < h1; h++) {
        const float *qh = q + h * Dh;
        float *oh = o + h * Dh;
        for (int64_t i = 0; i < nk; i++) {
            const float *row = keys[i];
            float d = 0;
            for (int64_t k = 0; k < Dh; k++) d += qh[k] * row[k];
            lg[i] = d * scale;
        }
        float inv = ds_v4_softmax_row(lg, nk, sinks[h]);
        memset(oh, 0, (size_t)Dh * sizeof(float));
        for (int64_t i = 0; i < nk; i++) {
            const float *row = keys[i];
            float pi = lg[i] * inv;
            for (int64_t k = 0; k < Dh; k++) oh[k] += pi * row[k];
        }
    }
}

void ds_v4_index_scores_ref(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                            int64_t w1, int64_t Hi, int64_t Di, float iscale) {
    for (int64_t w = w0; w < w1; w++) {
        const float *k = kent + w * ld;
        float s = 0;
        for (int64_t h = 0; h < Hi; h++) {
            float d = 0;
            for (int64_t i = 0; i < Di; i++) d += q[h * Di + i] * k[i];
            s += (d > 0 ? d : 0) * iscale * iw[h];
        }
        sc[w] = s;
    }
}

static ds_isa level(void) {
    ds_isa l = ds_isa_level();
    return l >= DS_ISA_AVX2 ? DS_ISA_AVX2 : DS_ISA_GENERIC;
}

const char *ds_v4kern_isa(void) { return ds_isa_name(level()); }

void ds_v4_attn_heads(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                      int64_t Dh, float scale, const float *sinks, float *lg) {
    switch (level()) {
    case DS_ISA_AVX2: ds_v4_attn_heads_avx2(o, q, keys, nk, h0, h1, Dh, scale, sinks, lg); break;
    default: ds_v4_attn_heads_ref(o, q, keys, nk, h0, h1, Dh, scale, sinks, lg);
    }
}

void ds_v4_index_scores(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                        int64_t w1, int64_t Hi, int64_t Di, float iscale) {
    switch (level()) {
    case DS_ISA_AVX2: ds_v4_index_scores_avx2(sc, q, iw, kent, ld, w0, w1, Hi, Di, iscale); break;
    default: ds_v4_index_scores_ref(sc, q, iw, kent, ld, w0, w1, Hi, Di, iscale);
    }
}
