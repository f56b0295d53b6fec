/*
 * rope.h - rotary position embedding with YaRN frequency scaling, applied
 * to interleaved pairs (x[2i], x[2i+1]) exactly as the checkpoints expect
 * (spec §4: never rotate-half on raw checkpoint outputs).
 */
#ifndef DS_ROPE_H
#define DS_ROPE_H

#include "config.h"

/* inv_freq[Dr/2]: θ_i, blended between θ_i and θ_i/factor by the YaRN ramp. */
void ds_rope_inv_freq(const ds_config *c, float *inv_freq);

/* Rotates x[Dr] in place for absolute position pos: pair i by the fp32
 * angle pos·inv_freq[i] (ds_rope_apply_n with n = 1). */
void ds_rope_apply(float *x, int64_t Dr, const float *inv_freq, int64_t pos);
/* The same rotation of n vectors x + k·stride (k < n) at one position: each
 * angle's cos and sin computed once for all of them (the same bits as n
 * calls of ds_rope_apply). */
void ds_rope_apply_n(float *x, int64_t n, int64_t stride, int64_t Dr, const float *inv_freq, int64_t pos);

#endif
