/*
 * quant_ext.c - the block types of quant_ext.h: each block is first
 * "expanded" to integers with per-16 scales and offsets (ds_expand_block:
 * x = sc·q + mn), which is both the reference dequantizer (the arithmetic
 * is the formula of quant_ext.h, term by term as ggml / gguf-py evaluate
 * it, so the floats match the gguf package's bit for bit) and the weight
 * side of the integer dot products (quant.c's reference, quant_avx2.c's
 * fast kernel). Quantizers are in quant_ext_q.c.
 */
#include "quant_ext.h"
#include "iq_tables.h"
#include "../core/base.h"

#include <math.h>
#include <string.h>

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ds_f16_to_f32(h);
}
static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* a 32-value block with one scale and offset: both halves of 16 alike */
static void set32(float *sc, float *mn, float s, float m) {
    sc[0] = sc[1] = s;
    mn[0] = mn[1] = m;
}

/* 8 grid magnitudes with the signs of byte `signs` (bit j set: negative) */
static void signed8(int8_t *q, const uint64_t *grid, int idx, uint8_t signs) {
    for (int j = 0; j < 8; j++) {
        int g = ds_grid8(grid, idx, j);
        q[j] = (int8_t)((signs >> j) & 1 ? -g : g);
    }
}
static void signed4(int8_t *q, const uint32_t *grid, int idx, uint8_t signs, int shift) {
    for (int j = 0; j < 4; j++) {
        int g = ds_grid4(grid, idx, j);
        q[j] = (int8_t)((signs >> (shift + j)) & 1 ? -g : g);
    }
}
/* IQ1 values ×8: g·8 ± 1 (delta ±1/8), so x = (dl/8)·q exactly */
static void iq1_8(int8_t *q, int idx, bool neg_delta) {
    for (int j = 0; j < 8; j++) q[j] = (int8_t)(8 * ds_grid1s(idx, j) + (neg_delta ? -1 : 1));
}

void ds_expand_block(ds_dtype t, const void *blk, int8_t *q, float *sc, float *mn) {
    const uint8_t *b = blk;
    switch (t) {
    case DS_DTYPE_Q4_1:
        if (q)
            for (int j = 0; j < 16; j++) { q[j] = (int8_t)(b[4 + j] & 15); q[j + 16] = (int8_t)(b[4 + j] >> 4); }
        set32(sc, mn, h2f(b), h2f(b + 2));
        break;
    case DS_DTYPE_Q5_1: {
        uint32_t qh = rd32(b + 4);
        for (int j = 0; j < 16 && q; j++) {
            q[j] = (int8_t)((b[8 + j] & 15) | ((qh >> j) & 1) << 4);
            q[j + 16] = (int8_t)((b[8 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
        }
        set32(sc, mn, h2f(b), h2f(b + 2));
        break;
    }
    case DS_DTYPE_IQ4_NL:
        if (q)
            for (int j = 0; j < 16; j++) { q[j] = ds_iq4nl_values[b[2 + j] & 15]; q[j + 16] = ds_iq4nl_values[b[2 + j] >> 4]; }
        set32(sc, mn, h2f(b), 0.0f);
        break;
    case DS_DTYPE_Q2_K: {
        const uint8_t *s = b, *qs = b + 16;
        float d = h2f(b + 80), dmin = h2f(b + 82);
        for (int n = 0; n < 2 && q; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) q[128 * n + 32 * j + l] = (int8_t)((qs[32 * n + l] >> (2 * j)) & 3);
        for (int i = 0; i < 16; i++) {
            sc[i] = d * (float)(s[i] & 15);
            mn[i] = -(dmin * (float)(s[i] >> 4));
        }
        break;
    }
    case DS_DTYPE_Q3_K: {
        const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
        float d = h2f(b + 108);
        for (int n = 0; n < 2 && q; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int lo = (qs[32 * n + l] >> (2 * j)) & 3, hb = (hm[l] >> (4 * n + j)) & 1;
                    q[128 * n + 32 * j + l] = (int8_t)(lo - (hb ? 0 : 4));
                }
        for (int i = 0; i < 16; i++) {
            int lo = i < 8 ? s[i] & 15 : s[i - 8] >> 4, hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
            sc[i] = d * (float)((lo | hi << 4) - 32);
            mn[i] = 0.0f;
        }
        break;
    }
    case DS_DTYPE_Q5_K: {
        float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *s = b + 4, *qh = b + 16, *qs = b + 48;
        for (int c = 0; c < 4 && q; c++)
            for (int l = 0; l < 32; l++) {
                int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
                q[64 * c + l] = (int8_t)(lo | ((qh[l] >> (2 * c)) & 1) << 4);
                q[64 * c + 32 + l] = (int8_t)(hi | ((qh[l] >> (2 * c + 1)) & 1) << 4);
            }
        for (int j = 0; j < 8; j++) {
            uint8_t a, m;
            ds_q4k_scale_min(j, s, &a, &m);
            sc[2 * j] = sc[2 * j + 1] = d * (float)a;
            mn[2 * j] = mn[2 * j + 1] = -(dmin * (float)m);
        }
        break;
    }
    case DS_DTYPE_IQ2_XXS: {
        float d = h2f(b);
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *p = b + 2 + 8 * ib;
            uint32_t a1 = rd32(p + 4);
            float db = d * (0.5f + (float)(a1 >> 28)) * 0.25f;
            for (int l = 0; l < 4 && q; l++) signed8(q + 32 * ib + 8 * l, ds_iq2xxs_grid, p[l], ds_iq_ksigns[(a1 >> (7 * l)) & 127]);
            set32(sc + 2 * ib, mn + 2 * ib, db, 0.0f);
        }
        break;
    }
    case DS_DTYPE_IQ2_XS: {
        float d = h2f(b);
        const uint8_t *s = b + 66;
        for (int i = 0; i < 32 && q; i++) {
            uint16_t v = rd16(b + 2 + 2 * i);
            signed8(q + 8 * i, ds_iq2xs_grid, v & 511, ds_iq_ksigns[v >> 9]);
        }
        for (int k = 0; k < 16; k++) {
            sc[k] = d * (0.5f + (float)((s[k / 2] >> (4 * (k % 2))) & 15)) * 0.25f;
            mn[k] = 0.0f;
        }
        break;
    }
    case DS_DTYPE_IQ2_S: {
        float d = h2f(b);
        const uint8_t *qs = b + 2, *sg = b + 34, *qh = b + 66, *s = b + 74;
        for (int i = 0; i < 32 && q; i++) signed8(q + 8 * i, ds_iq2s_grid, qs[i] | ((qh[i / 4] >> (2 * (i % 4))) & 3) << 8, sg[i]);
        for (int k = 0; k < 16; k++) {
            sc[k] = d * (0.5f + (float)((s[k / 2] >> (4 * (k % 2))) & 15)) * 0.25f;
            mn[k] = 0.0f;
        }
        break;
    }
    case DS_DTYPE_IQ3_XXS: {
        float d = h2f(b);
        const uint8_t *qs = b + 2;
        for (int ib = 0; ib < 8; ib++) {
            uint32_t a = rd32(b + 66 + 4 * ib);
            float db = d * (0.5f + (float)(a >> 28)) * 0.5f;
            for (int l = 0; l < 4 && q; l++) {
                uint8_t sgn = ds_iq_ksigns[(a >> (7 * l)) & 127];
                signed4(q + 32 * ib + 8 * l, ds_iq3xxs_grid, qs[8 * ib + 2 * l], sgn, 0);
                signed4(q + 32 * ib + 8 * l + 4, ds_iq3xxs_grid, qs[8 * ib + 2 * l + 1], sgn, 4);
            }
            set32(sc + 2 * ib, mn + 2 * ib, db, 0.0f);
        }
        break;
    }
    case DS_DTYPE_IQ3_S: {
        float d = h2f(b);
        const uint8_t *qs = b + 2, *qh = b + 66, *sg = b + 74, *s = b + 106;
        for (int i = 0; i < 64 && q; i++)
            signed4(q + 4 * i, ds_iq3s_grid, qs[i] | ((qh[i / 8] >> (i % 8)) & 1) << 8, sg[i / 2], 4 * (i % 2));
        for (int k = 0; k < 8; k++) {
            float db = d * (float)(1 + 2 * ((s[k / 2] >> (4 * (k % 2))) & 15));
            set32(sc + 2 * k, mn + 2 * k, db, 0.0f);
        }
        break;
    }
    case DS_DTYPE_IQ1_S: {
        float d = h2f(b);
        const uint8_t *qs = b + 2;
        for (int ib = 0; ib < 8; ib++) {
            uint16_t h = rd16(b + 34 + 2 * ib);
            float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
            for (int l = 0; l < 4 && q; l++) iq1_8(q + 32 * ib + 8 * l, qs[4 * ib + l] | ((h >> (3 * l)) & 7) << 8, h & 0x8000);
            set32(sc + 2 * ib, mn + 2 * ib, dl * 0.125f, 0.0f);
        }
        break;
    }
    case DS_DTYPE_IQ1_M: {
        const uint8_t *qs = b, *qh = b + 32;
        uint16_t s[4];
        for (int i = 0; i < 4; i++) s[i] = rd16(b + 48 + 2 * i);
        uint16_t dh = (uint16_t)((s[0] >> 12) | ((s[1] >> 8) & 0x00F0) | ((s[2] >> 4) & 0x0F00) | (s[3] & 0xF000));
        float d = ds_f16_to_f32(dh);
        for (int g = 0; g < 32 && q; g++) {
            int nib = (qh[g / 2] >> (4 * (g % 2))) & 15;
            iq1_8(q + 8 * g, qs[g] | (nib & 7) << 8, nib & 8);
        }
        for (int k = 0; k < 16; k++) {
            float dl = d * (float)(2 * ((s[k / 4] >> (3 * (k % 4))) & 7) + 1);
            sc[k] = dl * 0.125f;
            mn[k] = 0.0f;
        }
        break;
    }
    case DS_DTYPE_IQ4_XS: {
        float d = h2f(b);
        uint16_t sh = rd16(b + 2);
        const uint8_t *sl = b + 4, *qs = b + 8;
        for (int ib = 0; ib < 8; ib++) {
            int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 15) | ((sh >> (2 * ib)) & 3) << 4;
            for (int j = 0; j < 16 && q; j++) {
                q[32 * ib + j] = ds_iq4nl_values[qs[16 * ib + j] & 15];
                q[32 * ib + 16 + j] = ds_iq4nl_values[qs[16 * ib + j] >> 4];
            }
            set32(sc + 2 * ib, mn + 2 * ib, d * (float)(ls - 32), 0.0f);
        }
        break;
    }
    default: DS_ASSERT(!"ds_expand_block: not an extended type");
    }
}

static bool is_ext(ds_dtype t) { return t >= DS_DTYPE_Q4_1 && t <= DS_DTYPE_IQ4_XS; }

bool ds_dequant_ext(ds_dtype t, const void *in, float *y, int64_t n) {
    if (!is_ext(t)) return false;
    int64_t B = ds_dtype_block(t);
    size_t bb = ds_dtype_block_bytes(t);
    int8_t q[DS_QK_K];
    float sc[16], mn[16];
    for (int64_t b = 0; b < n / B; b++, y += B) {
        ds_expand_block(t, (const uint8_t *)in + bb * (size_t)b, q, sc, mn);
        /* dl·q - ml for the K-quants with mins, dl·q otherwise (as gguf-py) */
        for (int64_t i = 0; i < B; i++) y[i] = mn[i / 16] != 0.0f ? sc[i / 16] * (float)q[i] + mn[i / 16] : sc[i / 16] * (float)q[i];
    }
    return true;
}

/* byte offsets of the fp16 scale fields (d first; second: dmin / m) */
static int scale_fields(ds_dtype t, int *at) {
    switch (t) {
    case DS_DTYPE_Q4_1: case DS_DTYPE_Q5_1: case DS_DTYPE_Q5_K: at[0] = 0; at[1] = 2; return 2;
    case DS_DTYPE_Q2_K: at[0] = 80; at[1] = 82; return 2;
    case DS_DTYPE_Q3_K: at[0] = 108; return 1;
    case DS_DTYPE_IQ1_M: return 0;   /* d spread over the scale words */
    default: at[0] = 0; return 1;
    }
}

static void set_iq1m_d(uint8_t *b, uint16_t d) {
    for (int k = 0; k < 4; k++) {
        uint16_t w = rd16(b + 48 + 2 * k);
        w = (uint16_t)((w & 0x0FFF) | ((d >> (4 * k)) & 0xF) << 12);
        memcpy(b + 48 + 2 * k, &w, 2);
    }
}

void ds_quant_set_block_rms(ds_dtype t, void *blk, float rms) {
    DS_ASSERT(is_ext(t));
    uint8_t *b = blk;
    int at[2], nf = scale_fields(t, at);
    uint16_t one = ds_f32_to_f16(1.0f), zero = 0;
    if (nf == 0) set_iq1m_d(b, one);
    else memcpy(b + at[0], &one, 2);
    if (nf == 2) memcpy(b + at[1], &zero, 2);
    float y[DS_QK_K];
    int64_t B = ds_dtype_block(t);
    ds_dequant_ext(t, b, y, B);
    double s = 0;
    for (int64_t i = 0; i < B; i++) s += (double)y[i] * y[i];
    float r = (float)sqrt(s / (double)B);
    uint16_t d = ds_f32_to_f16(r > 0 ? rms / r : 0.0f);
    if (nf == 0) set_iq1m_d(b, d);
    else memcpy(b + at[0], &d, 2);
}
