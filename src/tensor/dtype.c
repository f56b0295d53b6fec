/*
 * dtype.c - dtype traits and the fp16 / fp8 conversions.
 */
#include "dtype.h"

#include <math.h>
#include <pthread.h>

size_t ds_dtype_size(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_F32: return 4;
    case DS_DTYPE_F16: return 2;
    case DS_DTYPE_BF16: return 2;
    case DS_DTYPE_F8_E4M3: return 1;
    case DS_DTYPE_I32: return 4;
    case DS_DTYPE_I64: return 8;
    default: return 0;
    }
}

const char *ds_dtype_name(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_F32: return "F32";
    case DS_DTYPE_F16: return "F16";
    case DS_DTYPE_BF16: return "BF16";
    case DS_DTYPE_F8_E4M3: return "F8_E4M3";
    case DS_DTYPE_I32: return "I32";
    case DS_DTYPE_I64: return "I64";
    case DS_DTYPE_Q8_0: return "Q8_0";
    case DS_DTYPE_Q4_0: return "Q4_0";
    case DS_DTYPE_Q4_K: return "Q4_K";
    case DS_DTYPE_Q6_K: return "Q6_K";
    case DS_DTYPE_Q5_0: return "Q5_0";
    case DS_DTYPE_Q4_1: return "Q4_1";
    case DS_DTYPE_Q5_1: return "Q5_1";
    case DS_DTYPE_Q2_K: return "Q2_K";
    case DS_DTYPE_Q3_K: return "Q3_K";
    case DS_DTYPE_Q5_K: return "Q5_K";
    case DS_DTYPE_IQ2_XXS: return "IQ2_XXS";
    case DS_DTYPE_IQ2_XS: return "IQ2_XS";
    case DS_DTYPE_IQ2_S: return "IQ2_S";
    case DS_DTYPE_IQ3_XXS: return "IQ3_XXS";
    case DS_DTYPE_IQ3_S: return "IQ3_S";
    case DS_DTYPE_IQ1_S: return "IQ1_S";
    case DS_DTYPE_IQ1_M: return "IQ1_M";
    case DS_DTYPE_IQ4_NL: return "IQ4_NL";
    case DS_DTYPE_IQ4_XS: return "IQ4_XS";
    case DS_DTYPE_F4_E2M1: return "F4_E2M1";
    case DS_DTYPE_MXFP4: return "MXFP4";
    default: return "?";
    }
}

int64_t ds_dtype_block(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_Q8_0: case DS_DTYPE_Q4_0: case DS_DTYPE_Q5_0:
    case DS_DTYPE_Q4_1: case DS_DTYPE_Q5_1: case DS_DTYPE_IQ4_NL: case DS_DTYPE_MXFP4: return 32;
    case DS_DTYPE_F4_E2M1: return 2;
    default: return ds_dtype_is_quant(t) ? 256 : 1;
    }
}

size_t ds_dtype_block_bytes(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_Q8_0: return 34;
    case DS_DTYPE_Q4_0: return 18;
    case DS_DTYPE_Q5_0: return 22;
    case DS_DTYPE_Q4_K: return 144;
    case DS_DTYPE_Q6_K: return 210;
    case DS_DTYPE_Q4_1: return 20;
    case DS_DTYPE_Q5_1: return 24;
    case DS_DTYPE_Q2_K: return 84;
    case DS_DTYPE_Q3_K: return 110;
    case DS_DTYPE_Q5_K: return 176;
    case DS_DTYPE_IQ2_XXS: return 66;
    case DS_DTYPE_IQ2_XS: return 74;
    case DS_DTYPE_IQ2_S: return 82;
    case DS_DTYPE_IQ3_XXS: return 98;
    case DS_DTYPE_IQ3_S: return 110;
    case DS_DTYPE_IQ1_S: return 50;
    case DS_DTYPE_IQ1_M: return 56;
    case DS_DTYPE_IQ4_NL: return 18;
    case DS_DTYPE_IQ4_XS: return 136;
    case DS_DTYPE_F4_E2M1: return 1;
    case DS_DTYPE_MXFP4: return 17;
    default: return ds_dtype_size(t);
    }
}

float ds_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = (float)man * 0x1p-24f;
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ds_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;
    if (a < 0x1p-14f) { /* subnormal or zero: round a / 2^-24 to nearest even */
        float q = a * 0x1p24f;
        uint16_t m = (uint16_t)nearbyintf(q);
        return sign | m;
    }
    uint32_t au = u & 0x7fffffffu;
    uint32_t exp = (au >> 23) - 112, man = au & 0x7fffff;
    uint32_t out = (exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (out & 1))) out++;
    return sign | (uint16_t)out;
}

float ds_fp8_e4m3_table[256];
static pthread_once_t g_dtype_once = PTHREAD_ONCE_INIT;

float ds_fp8_e4m3_to_f32_ref(uint8_t b) {
    int s = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    float v = e == 0 ? ldexpf((float)m / 8.0f, -6) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return s ? -v : v;
}

static void fill_tables(void) {
    for (int i = 0; i < 256; i++) ds_fp8_e4m3_table[i] = ds_fp8_e4m3_to_f32_ref((uint8_t)i);
}

/* the table is written once (any thread may come first), read-only after */
void ds_dtype_init(void) { pthread_once(&g_dtype_once, fill_tables); }

uint8_t ds_f32_to_fp8_e4m3(float f) {
    ds_dtype_init();
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e;
    /* brute force nearest over the 127 non-negative finite codes, ties to even code */
    int best = 0;
    float bd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        float d = fabsf(ds_fp8_e4m3_table[c] - a);
        if (d < bd || (d == bd && (c & 1) == 0)) { bd = d; best = c; }
    }
    return sign | (uint8_t)best;
}
