/*
 * quant.c - reference quantizers, dequantizers and dot products for the
 * block types in quant.h. Plain C, written for clarity: the converter uses
 * the quantizers, the tests compare every fast kernel against these.
 *
 * Quantizers (layouts are ggml's; the search is ours):
 *   Q8_0  d = max|x|/127, q = round(x/d) (halves away from zero, as ggml and gguf-py)
 *   Q4_0  d = m/-8 with m the value of largest magnitude, q = min(15, ⌊x/d + 8.5⌋)
 *   Q5_0  same with -16 / 31 / 16.5
 *   Q4_K  per 32: (scale, min) by a least-squares search over 21 candidate
 *         grids, then 6-bit scales/mins relative to the super-block maxima
 *   Q6_K  per 16: symmetric scale by the same kind of search, then int8
 *         scales relative to the super-block maximum
 * After the scales are rounded to what is stored, every value is
 * re-quantized against the stored scale, so dequant(quant(x)) is the best
 * reconstruction the stored scales allow.
 */
#include "quant.h"
#include "quant_ext.h"
#include "../core/base.h"

#include <math.h>
#include <string.h>

bool ds_quant_row_ok(ds_dtype t, int64_t K) { return K > 0 && K % ds_dtype_block(t) == 0; }

static inline float h2f(uint16_t h) { return ds_f16_to_f32(h); }
static inline uint16_t f2h(float f) { return ds_f32_to_f16(f); }
static inline int iround(float x) { return (int)nearbyintf(x); }

/* ------------------------------------------------------------- Q8_0/4_0/5_0 */

static void quant_q8_0(const float *x, ds_block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK; b++, x += DS_QK) {
        float amax = 0;
        for (int i = 0; i < DS_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = f2h(d);
        for (int i = 0; i < DS_QK; i++) y[b].qs[i] = (int8_t)roundf(x[i] * id);
    }
}

/* value with the largest magnitude, keeping its sign */
static float signed_max(const float *x, int n) {
    float amax = 0, m = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); m = x[i]; }
    return m;
}

static void quant_q4_0(const float *x, ds_block_q4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK; b++, x += DS_QK) {
        float d = signed_max(x, DS_QK) / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = f2h(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 < 0 ? 0 : q0 > 15 ? 15 : q0;
            q1 = q1 < 0 ? 0 : q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q5_0(const float *x, ds_block_q5_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK; b++, x += DS_QK) {
        float d = signed_max(x, DS_QK) / -16.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 16.5f), q1 = (int)(x[j + 16] * id + 16.5f);
            q0 = q0 < 0 ? 0 : q0 > 31 ? 31 : q0;
            q1 = q1 < 0 ? 0 : q1 > 31 ? 31 : q1;
            y[b].qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

/* ------------------------------------------------------------------- Q4_K */

/* Fits x[n] ≈ s·q + b with q in [0, nmax], b <= 0; returns s and -b. */
void ds_fit_asym(const float *x, int n, int nmax, float *s_out, float *m_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    if (lo > 0) lo = 0;
    if (hi <= lo) { *s_out = 0; *m_out = -lo; return; }
    float best_err = INFINITY, best_s = (hi - lo) / (float)nmax, best_b = lo;
    for (int k = -10; k <= 10; k++) {
        float iscale = ((float)nmax + 0.1f * (float)k) / (hi - lo);
        double sq = 0, sq2 = 0, sx = 0, sqx = 0;
        int q[256];
        for (int i = 0; i < n; i++) {
            int v = iround((x[i] - lo) * iscale);
            q[i] = v < 0 ? 0 : v > nmax ? nmax : v;
            sq += q[i]; sq2 += (double)q[i] * q[i]; sx += x[i]; sqx += (double)q[i] * x[i];
        }
        /* least squares for s, b */
        double det = (double)n * sq2 - sq * sq;
        double s, b;
        if (det > 0) {
            s = ((double)n * sqx - sq * sx) / det;
            b = (sx - s * sq) / (double)n;
        } else {
            s = 0; b = sx / n;
        }
        if (b > 0) { b = 0; s = sq2 > 0 ? sqx / sq2 : 0; }
        if (s < 0) continue;
        double err = 0;
        for (int i = 0; i < n; i++) {
            double r = s * q[i] + b - x[i];
            err += r * r;
        }
        if (err < best_err) { best_err = (float)err; best_s = (float)s; best_b = (float)b; }
    }
    *s_out = best_s;
    *m_out = -best_b;
}

static void quant_q4_K(const float *x, ds_block_q4_K *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K) {
        float sc[8], mn[8], max_sc = 0, max_mn = 0;
        for (int j = 0; j < 8; j++) {
            ds_fit_asym(x + 32 * j, 32, 15, &sc[j], &mn[j]);
            max_sc = fmaxf(max_sc, sc[j]);
            max_mn = fmaxf(max_mn, mn[j]);
        }
        float isc = max_sc > 0 ? 63.0f / max_sc : 0, imn = max_mn > 0 ? 63.0f / max_mn : 0;
        uint8_t ls[8], lm[8];
        for (int j = 0; j < 8; j++) {
            int a = iround(isc * sc[j]), c = iround(imn * mn[j]);
            ls[j] = (uint8_t)(a < 0 ? 0 : a > 63 ? 63 : a);
            lm[j] = (uint8_t)(c < 0 ? 0 : c > 63 ? 63 : c);
        }
        for (int j = 0; j < 4; j++) {
            y[b].scales[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
            y[b].scales[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
            y[b].scales[j + 8] = (uint8_t)((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
        }
        y[b].d = f2h(max_sc / 63.0f);
        y[b].dmin = f2h(max_mn / 63.0f);
        float d = h2f(y[b].d), dmin = h2f(y[b].dmin);
        uint8_t q[DS_QK_K];
        for (int j = 0; j < 8; j++) {
            uint8_t s, m;
            ds_q4k_scale_min(j, y[b].scales, &s, &m);
            float dd = d * s, dm = dmin * m;
            for (int i = 0; i < 32; i++) {
                int v = dd > 0 ? iround((x[32 * j + i] + dm) / dd) : 0;
                q[32 * j + i] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
            }
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

static void dequant_q4_K(const ds_block_q4_K *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int c = 0; c < 4; c++, q += 32) {
            uint8_t s0, m0, s1, m1;
            ds_q4k_scale_min(2 * c, x[b].scales, &s0, &m0);
            ds_q4k_scale_min(2 * c + 1, x[b].scales, &s1, &m1);
            float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
            for (int l = 0; l < 32; l++) *y++ = d0 * (float)(q[l] & 15) - n0;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] >> 4) - n1;
        }
    }
}

/* ------------------------------------------------------------------- Q6_K */

/* Best symmetric scale for x[n] with q in [-nmax, nmax-1] (plain MSE). */
float ds_fit_sym(const float *x, int n, int nmax) {
    float m = signed_max(x, n);
    if (m == 0) return 0;
    float best_err = INFINITY, best_s = m / -(float)nmax;
    for (int k = -9; k <= 9; k++) {
        float iscale = -((float)nmax + 0.1f * (float)k) / m;
        double sqx = 0, sq2 = 0;
        int q[64];
        for (int i = 0; i < n; i++) {
            int v = iround(x[i] * iscale);
            q[i] = v < -nmax ? -nmax : v > nmax - 1 ? nmax - 1 : v;
            sqx += (double)q[i] * x[i];
            sq2 += (double)q[i] * q[i];
        }
        if (sq2 == 0) continue;
        double s = sqx / sq2, err = 0;
        for (int i = 0; i < n; i++) {
            double r = s * q[i] - x[i];
            err += r * r;
        }
        if (err < best_err) { best_err = (float)err; best_s = (float)s; }
    }
    return best_s;
}

static void quant_q6_K(const float *x, ds_block_q6_K *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K) {
        float sc[16], amax = 0;
        for (int j = 0; j < 16; j++) {
            sc[j] = ds_fit_sym(x + 16 * j, 16, 32);
            amax = fmaxf(amax, fabsf(sc[j]));
        }
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0;
        y[b].d = f2h(d);
        d = h2f(y[b].d);
        uint8_t q[DS_QK_K];
        for (int j = 0; j < 16; j++) {
            int s = iround(sc[j] * id);
            s = s < -127 ? -127 : s > 127 ? 127 : s;
            y[b].scales[j] = (int8_t)s;
            float dd = d * (float)s;
            for (int i = 0; i < 16; i++) {
                int v = dd != 0 ? iround(x[16 * j + i] / dd) : 0;
                v = v < -32 ? -32 : v > 31 ? 31 : v;
                q[16 * j + i] = (uint8_t)(v + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                uint8_t q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
                ql[l] = (uint8_t)((q1 & 15) | ((q3 & 15) << 4));
                ql[l + 32] = (uint8_t)((q2 & 15) | ((q4 & 15) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

static void dequant_q6_K(const ds_block_q6_K *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++) {
        float d = h2f(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
        }
    }
}

/* -------------------------------------------------------------- dispatch */

void ds_quantize_row_ref(ds_dtype t, const float *x, void *out, int64_t n) {
    DS_ASSERT(ds_quant_row_ok(t, n) || n == 0);
    switch (t) {
    case DS_DTYPE_F32: memcpy(out, x, (size_t)n * 4); break;
    case DS_DTYPE_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)out)[i] = f2h(x[i]); break;
    case DS_DTYPE_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)out)[i] = ds_f32_to_bf16(x[i]); break;
    case DS_DTYPE_Q8_0: quant_q8_0(x, out, n); break;
    case DS_DTYPE_Q4_0: quant_q4_0(x, out, n); break;
    case DS_DTYPE_Q5_0: quant_q5_0(x, out, n); break;
    case DS_DTYPE_Q4_K: quant_q4_K(x, out, n); break;
    case DS_DTYPE_Q6_K: quant_q6_K(x, out, n); break;
    default: if (!ds_quantize_ext(t, x, out, n)) DS_ASSERT(!"no quantizer for this dtype");
    }
}

void ds_dequant_row_ref(ds_dtype t, const void *in, float *y, int64_t n) {
    DS_ASSERT(ds_quant_row_ok(t, n) || n == 0);
    switch (t) {
    case DS_DTYPE_F32: memcpy(y, in, (size_t)n * 4); break;
    case DS_DTYPE_F16: for (int64_t i = 0; i < n; i++) y[i] = h2f(((const uint16_t *)in)[i]); break;
    case DS_DTYPE_BF16: for (int64_t i = 0; i < n; i++) y[i] = ds_bf16_to_f32(((const uint16_t *)in)[i]); break;
    case DS_DTYPE_Q8_0: {
        const ds_block_q8_0 *x = in;
        for (int64_t b = 0; b < n / DS_QK; b++) {
            float d = h2f(x[b].d);
            for (int i = 0; i < DS_QK; i++) y[b * DS_QK + i] = d * (float)x[b].qs[i];
        }
        break;
    }
    case DS_DTYPE_Q4_0: {
        const ds_block_q4_0 *x = in;
        for (int64_t b = 0; b < n / DS_QK; b++) {
            float d = h2f(x[b].d);
            for (int j = 0; j < 16; j++) {
                y[b * DS_QK + j] = d * (float)((x[b].qs[j] & 15) - 8);
                y[b * DS_QK + j + 16] = d * (float)((x[b].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case DS_DTYPE_Q5_0: {
        const ds_block_q5_0 *x = in;
        for (int64_t b = 0; b < n / DS_QK; b++) {
            float d = h2f(x[b].d);
            uint32_t qh;
            memcpy(&qh, x[b].qh, 4);
            for (int j = 0; j < 16; j++) {
                int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
                y[b * DS_QK + j] = d * (float)(((x[b].qs[j] & 15) | (h0 << 4)) - 16);
                y[b * DS_QK + j + 16] = d * (float)(((x[b].qs[j] >> 4) | (h1 << 4)) - 16);
            }
        }
        break;
    }
    case DS_DTYPE_Q4_K: dequant_q4_K(in, y, n); break;
    case DS_DTYPE_Q6_K: dequant_q6_K(in, y, n); break;
    default: if (!ds_dequant_ext(t, in, y, n)) DS_ASSERT(!"no dequantizer for this dtype");
    }
}

/* ------------------------------------------------------------ activations */

int ds_act_kind(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_Q8_0: case DS_DTYPE_Q4_0: case DS_DTYPE_Q5_0:
    case DS_DTYPE_Q4_1: case DS_DTYPE_Q5_1: case DS_DTYPE_IQ4_NL: return 1;
    default: return ds_dtype_is_quant(t) ? 2 : 0;   /* the 256-value super-block types */
    }
}

size_t ds_act_row_bytes(ds_dtype t, int64_t K) {
    switch (ds_act_kind(t)) {
    case 1: return (size_t)K + (size_t)(K / DS_QK) * 8;
    case 2: return (size_t)K + (size_t)(K / DS_QK_K) * (4 + 16) + (size_t)(K / 16) * 2;
    default: return (size_t)K * 4;
    }
}

void ds_quantize_act_ref(ds_dtype t, const float *x, void *out, int64_t K) {
    int kind = ds_act_kind(t);
    DS_ASSERT(kind != 0 && ds_quant_row_ok(t, K));
    int8_t *q = out;
    int64_t B = kind == 1 ? DS_QK : DS_QK_K;
    float *d = (float *)(q + K);
    for (int64_t b = 0; b < K / B; b++) {
        float amax = 0;
        for (int64_t i = 0; i < B; i++) amax = fmaxf(amax, fabsf(x[b * B + i]));
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        for (int64_t i = 0; i < B; i++) q[b * B + i] = (int8_t)iround(x[b * B + i] * id);
    }
    if (kind == 1) {
        float *s = d + K / DS_QK;
        for (int64_t b = 0; b < K / DS_QK; b++) {
            int sum = 0;
            for (int i = 0; i < DS_QK; i++) sum += q[b * DS_QK + i];
            s[b] = (float)sum;
        }
    } else {
        int16_t *bs = (int16_t *)(d + K / DS_QK_K);
        for (int64_t g = 0; g < K / 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += q[g * 16 + i];
            bs[g] = (int16_t)sum;
        }
        ds_act_k8_pairs(bs, K);
    }
}

void ds_act_k8_pairs(const int16_t *bs, int64_t K) {
    int32_t *pr = (int32_t *)(bs + K / 16);
    for (int64_t b = 0; b < K / DS_QK_K; b++)
        for (int j = 0; j < 4; j++) {
            const int16_t *s = bs + 16 * b;
            uint16_t lo = (uint16_t)(int16_t)(s[2 * j] + s[2 * j + 1]), hi = (uint16_t)(int16_t)(s[2 * j + 8] + s[2 * j + 9]);
            pr[4 * b + j] = (int32_t)((uint32_t)lo | (uint32_t)hi << 16);
        }
}

float ds_vec_dot_ref(ds_dtype t, const void *w, const void *act, int64_t K) {
    int kind = ds_act_kind(t);
    DS_ASSERT(kind != 0);
    const int8_t *q = act;
    int64_t B = kind == 1 ? DS_QK : DS_QK_K;
    const float *d = (const float *)(q + K);
    float wd[DS_QK_K];
    size_t bb = ds_dtype_block_bytes(t);
    double sum = 0;
    for (int64_t b = 0; b < K / B; b++) {
        ds_dequant_row_ref(t, (const uint8_t *)w + (size_t)b * bb * (size_t)(B / ds_dtype_block(t)), wd, B);
        double s = 0;
        for (int64_t i = 0; i < B; i++) s += (double)wd[i] * q[b * B + i];
        sum += s * d[b];
    }
    return (float)sum;
}
