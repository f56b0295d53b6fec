/*
 * quant_ext_q.c - reference quantizers for the types of quant_ext.h that
 * `convert --type` writes: Q4_1, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS.
 * (The IQ1/IQ2/IQ3 types need an importance matrix to quantize well and are
 * read, not written.) Layouts are ggml's; the searches are ours:
 *   Q4_1/Q5_1  d = (max - min)/nmax, m = min, q = ⌊(x - min)/d + 0.5⌋ (as gguf-py)
 *   Q2_K       per 16: (scale, min) by ds_fit_asym (q 0..3), then 4-bit
 *              scales and mins relative to the super-block maxima
 *   Q3_K       per 16: symmetric scale by ds_fit_sym (q -4..3), then 6-bit
 *              signed scales relative to the largest-magnitude one (-32 ↔ it)
 *   Q5_K       as Q4_K with q 0..31
 *   IQ4_NL     per 32: the scale among 15 candidates (value of largest
 *              magnitude ↔ a level near -127) with the least squared error,
 *              refined by least squares on the chosen levels
 *   IQ4_XS     the same per 32, then 6-bit scales as Q3_K's
 * After the scales are rounded to what is stored, every value is
 * re-quantized against the stored scale (best reconstruction they allow).
 */
#include "quant_ext.h"
#include "iq_tables.h"
#include "../core/base.h"

#include <math.h>
#include <string.h>

static inline uint16_t f2h(float f) { return ds_f32_to_f16(f); }
static inline float h2f(uint16_t h) { return ds_f16_to_f32(h); }
static inline int iround(float x) { return (int)nearbyintf(x); }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ------------------------------------------------------------ Q4_1 / Q5_1 */

static void quant_q4_1_q5_1(const float *x, uint8_t *y, int64_t n, bool five) {
    int nmax = five ? 31 : 15;
    size_t bb = five ? 24 : 20;
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += bb) {
        float lo = x[0], hi = x[0];
        for (int i = 1; i < 32; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
        float d = (hi - lo) / (float)nmax, id = d ? 1.0f / d : 0.0f;
        put16(y, f2h(d));
        put16(y + 2, f2h(lo));
        uint8_t *qs = y + (five ? 8 : 4);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)((x[j] - lo) * id + 0.5f), 0, nmax), q1 = clampi((int)((x[j + 16] - lo) * id + 0.5f), 0, nmax);
            qs[j] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        if (five) memcpy(y + 4, &qh, 4);
    }
}

/* ------------------------------------------------------------------ Q2_K */

static void quant_q2_K(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K, y += 84) {
        float sc[16], mn[16], max_sc = 0, max_mn = 0;
        for (int j = 0; j < 16; j++) {
            ds_fit_asym(x + 16 * j, 16, 3, &sc[j], &mn[j]);
            max_sc = fmaxf(max_sc, sc[j]);
            max_mn = fmaxf(max_mn, mn[j]);
        }
        float isc = max_sc > 0 ? 15.0f / max_sc : 0, imn = max_mn > 0 ? 15.0f / max_mn : 0;
        for (int j = 0; j < 16; j++) y[j] = (uint8_t)(clampi(iround(isc * sc[j]), 0, 15) | clampi(iround(imn * mn[j]), 0, 15) << 4);
        put16(y + 80, f2h(max_sc / 15.0f));
        put16(y + 82, f2h(max_mn / 15.0f));
        float d = h2f(f2h(max_sc / 15.0f)), dmin = h2f(f2h(max_mn / 15.0f));
        uint8_t q[DS_QK_K];
        for (int j = 0; j < 16; j++) {
            float dd = d * (float)(y[j] & 15), dm = dmin * (float)(y[j] >> 4);
            for (int i = 0; i < 16; i++) q[16 * j + i] = (uint8_t)(dd > 0 ? clampi(iround((x[16 * j + i] + dm) / dd), 0, 3) : 0);
        }
        uint8_t *qs = y + 16;
        memset(qs, 0, 64);
        for (int k = 0; k < DS_QK_K; k++) {
            int nn = k / 128, j = (k % 128) / 32, l = k % 32;
            qs[32 * nn + l] |= (uint8_t)(q[k] << (2 * j));
        }
    }
}

/* ------------------------------------------------------------------ Q3_K */

/* 6-bit signed scales s[nsub] -> (d, l[nsub] in -32..31): the scale of
 * largest magnitude maps to -32 (as ggml), the rest round to nearest */
static float six_bit_scales(const float *s, int nsub, int *l) {
    float m = 0, am = 0;
    for (int j = 0; j < nsub; j++)
        if (fabsf(s[j]) > am) { am = fabsf(s[j]); m = s[j]; }
    float d = m / -32.0f, id = d != 0 ? 1.0f / d : 0;
    for (int j = 0; j < nsub; j++) l[j] = clampi(iround(s[j] * id), -32, 31);
    return d;
}

static void quant_q3_K(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K, y += 110) {
        float sc[16];
        int l[16];
        for (int j = 0; j < 16; j++) sc[j] = ds_fit_sym(x + 16 * j, 16, 4);
        float d0 = six_bit_scales(sc, 16, l);
        uint16_t dh = f2h(d0);
        float d = h2f(dh);
        uint8_t *hm = y, *qs = y + 32, *s = y + 96;
        memset(y, 0, 110);
        for (int j = 0; j < 16; j++) {
            int v = l[j] + 32;
            if (j < 8) s[j] |= (uint8_t)(v & 15);
            else s[j - 8] |= (uint8_t)((v & 15) << 4);
            s[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
        }
        put16(y + 108, dh);
        for (int k = 0; k < DS_QK_K; k++) {
            float dd = d * (float)l[k / 16];
            int q = dd != 0 ? clampi(iround(x[k] / dd), -4, 3) + 4 : 4;
            int nn = k / 128, j = (k % 128) / 32, ll = k % 32;
            qs[32 * nn + ll] |= (uint8_t)((q & 3) << (2 * j));
            if (q >> 2) hm[ll] |= (uint8_t)(1 << (4 * nn + j));
        }
    }
}

/* ------------------------------------------------------------------ Q5_K */

static void quant_q5_K(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K, y += 176) {
        float sc[8], mn[8], max_sc = 0, max_mn = 0;
        for (int j = 0; j < 8; j++) {
            ds_fit_asym(x + 32 * j, 32, 31, &sc[j], &mn[j]);
            max_sc = fmaxf(max_sc, sc[j]);
            max_mn = fmaxf(max_mn, mn[j]);
        }
        float isc = max_sc > 0 ? 63.0f / max_sc : 0, imn = max_mn > 0 ? 63.0f / max_mn : 0;
        uint8_t ls[8], lm[8], *s = y + 4;
        for (int j = 0; j < 8; j++) {
            ls[j] = (uint8_t)clampi(iround(isc * sc[j]), 0, 63);
            lm[j] = (uint8_t)clampi(iround(imn * mn[j]), 0, 63);
        }
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
            s[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
            s[j + 8] = (uint8_t)((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
        }
        put16(y, f2h(max_sc / 63.0f));
        put16(y + 2, f2h(max_mn / 63.0f));
        float d = h2f(f2h(max_sc / 63.0f)), dmin = h2f(f2h(max_mn / 63.0f));
        uint8_t *qh = y + 16, *qs = y + 48;
        memset(qh, 0, 32);
        for (int j = 0; j < 8; j++) {
            uint8_t a, m;
            ds_q4k_scale_min(j, s, &a, &m);
            float dd = d * a, dm = dmin * m;
            for (int i = 0; i < 32; i++) {
                int q = dd > 0 ? clampi(iround((x[32 * j + i] + dm) / dd), 0, 31) : 0;
                int c = j / 2;
                if (j % 2 == 0) qs[32 * c + i] = (uint8_t)(q & 15);
                else qs[32 * c + i] |= (uint8_t)((q & 15) << 4);
                if (q >> 4) qh[i] |= (uint8_t)(1 << j);
            }
        }
    }
}

/* ------------------------------------------------------- IQ4_NL / IQ4_XS */

static int nearest_level(float v) {
    const int8_t *k = ds_iq4nl_values;
    if (v <= k[0]) return 0;
    if (v >= k[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < k[mid]) hi = mid; else lo = mid;
    }
    return v - k[lo] < k[hi] - v ? lo : hi;
}

/* best scale for x[32] on the IQ4 levels */
static float fit_iq4(const float *x) {
    float amax = 0, m = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); m = x[i]; }
    if (amax == 0) return 0;
    float best = m / (float)ds_iq4nl_values[0], best_err = INFINITY;
    for (int k = -7; k <= 7; k++) {
        float id = ((float)k + (float)ds_iq4nl_values[0]) / m;
        double sqx = 0, sq2 = 0;
        int8_t lv[32];
        for (int i = 0; i < 32; i++) {
            lv[i] = ds_iq4nl_values[nearest_level(x[i] * id)];
            sqx += (double)lv[i] * x[i];
            sq2 += (double)lv[i] * lv[i];
        }
        if (sq2 == 0) continue;
        double s = sqx / sq2, err = 0;
        for (int i = 0; i < 32; i++) {
            double r = s * lv[i] - x[i];
            err += r * r;
        }
        if (err < best_err) { best_err = (float)err; best = (float)s; }
    }
    return best;
}

static void iq4_nibbles(const float *x, float dd, uint8_t *qs) {
    float id = dd != 0 ? 1.0f / dd : 0;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(nearest_level(x[j] * id) | nearest_level(x[j + 16] * id) << 4);
}

static void quant_iq4_nl(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 18) {
        uint16_t dh = f2h(fit_iq4(x));
        put16(y, dh);
        iq4_nibbles(x, h2f(dh), y + 2);
    }
}

static void quant_iq4_xs(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / DS_QK_K; b++, x += DS_QK_K, y += 136) {
        float sc[8];
        int l[8];
        for (int j = 0; j < 8; j++) sc[j] = fit_iq4(x + 32 * j);
        uint16_t dh = f2h(six_bit_scales(sc, 8, l));
        float d = h2f(dh);
        put16(y, dh);
        uint16_t sh = 0;
        memset(y + 4, 0, 4);
        for (int j = 0; j < 8; j++) {
            int v = l[j] + 32;
            y[4 + j / 2] |= (uint8_t)((v & 15) << (4 * (j % 2)));
            sh |= (uint16_t)((v >> 4) << (2 * j));
            iq4_nibbles(x + 32 * j, d * (float)l[j], y + 8 + 16 * j);
        }
        put16(y + 2, sh);
    }
}

bool ds_quantize_ext(ds_dtype t, const float *x, void *out, int64_t n) {
    switch (t) {
    case DS_DTYPE_Q4_1: quant_q4_1_q5_1(x, out, n, false); return true;
    case DS_DTYPE_Q5_1: quant_q4_1_q5_1(x, out, n, true); return true;
    case DS_DTYPE_Q2_K: quant_q2_K(x, out, n); return true;
    case DS_DTYPE_Q3_K: quant_q3_K(x, out, n); return true;
    case DS_DTYPE_Q5_K: quant_q5_K(x, out, n); return true;
    case DS_DTYPE_IQ4_NL: quant_iq4_nl(x, out, n); return true;
    case DS_DTYPE_IQ4_XS: quant_iq4_xs(x, out, n); return true;
    default: return false;
    }
}

bool ds_quant_has_quantizer(ds_dtype t) {
    return t == DS_DTYPE_F32 || t == DS_DTYPE_F16 || t == DS_DTYPE_BF16 || (ds_dtype_is_quant(t) && t < DS_DTYPE_IQ2_XXS) ||
           t == DS_DTYPE_IQ4_NL || t == DS_DTYPE_IQ4_XS;
}
