/*
 * rope.c - YaRN frequencies and the interleaved rotation.
 *
 * θ_i = base^(-2i/d), i < d/2.  With YaRN (factor s, original length L0):
 *   corr(r) = d·ln(L0 / (2π r)) / (2 ln base)
 *   low = max(floor(corr(beta_fast)), 0), high = min(ceil(corr(beta_slow)), d-1)
 *   ramp_i = clamp((i - low) / (high - low), 0, 1)
 *   θ'_i = θ_i/s · ramp_i + θ_i · (1 - ramp_i)
 * Angles are fp32 pos·θ'_i, as in the references. No magnitude factor is
 * applied to cos/sin (DeepSeek's official code has none; for every released
 * config mscale == mscale_all_dim, where HF's factor is 1 too).
 */
#include "rope.h"

#include <math.h>

void ds_rope_inv_freq(const ds_config *c, float *inv_freq) {
    int64_t d = c->qk_rope_head_dim, half = d / 2;
    double base = c->rope_theta;
    double low = 0, high = 0;
    if (c->yarn && c->rope_factor > 1.0) {
        double corr_fast = (double)d * log(c->rope_orig_max_pos / (c->beta_fast * 2 * M_PI)) / (2 * log(base));
        double corr_slow = (double)d * log(c->rope_orig_max_pos / (c->beta_slow * 2 * M_PI)) / (2 * log(base));
        low = floor(corr_fast);
        high = ceil(corr_slow);
        if (low < 0) low = 0;
        if (high > (double)(d - 1)) high = (double)(d - 1);
        if (low == high) high += 0.001;
    }
    for (int64_t i = 0; i < half; i++) {
        /* fp32 like the references: pos_freqs = base ** (float(2i)/d) */
        float pos_freq = powf((float)base, (float)(2 * i) / (float)d);
        float extra = 1.0f / pos_freq;
        if (c->yarn && c->rope_factor > 1.0) {
            float inter = 1.0f / ((float)c->rope_factor * pos_freq);
            float ramp = (float)(((double)i - low) / (high - low));
            if (ramp < 0) ramp = 0;
            if (ramp > 1) ramp = 1;
            float extra_factor = 1.0f - ramp;
            inv_freq[i] = inter * (1.0f - extra_factor) + extra * extra_factor;
        } else {
            inv_freq[i] = extra;
        }
    }
}

void ds_rope_apply_n(float *x, int64_t n, int64_t stride, int64_t Dr, const float *inv_freq, int64_t pos) {
    enum { CH = 32 };   /* angles per round: cos and sin of CH pairs on the stack */
    float cs[CH], sn[CH];
    for (int64_t i0 = 0; i0 < Dr / 2; i0 += CH) {
        int64_t m = DS_MIN(CH, Dr / 2 - i0);
        for (int64_t i = 0; i < m; i++) {
            float ang = (float)pos * inv_freq[i0 + i];
            cs[i] = cosf(ang), sn[i] = sinf(ang);
        }
        for (int64_t k = 0; k < n; k++) {
            float *xp = x + k * stride + 2 * i0;
            for (int64_t i = 0; i < m; i++) {
                float a = xp[2 * i], b = xp[2 * i + 1];
                xp[2 * i] = a * cs[i] - b * sn[i];
                xp[2 * i + 1] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void ds_rope_apply(float *x, int64_t Dr, const float *inv_freq, int64_t pos) { ds_rope_apply_n(x, 1, Dr, Dr, inv_freq, pos); }
