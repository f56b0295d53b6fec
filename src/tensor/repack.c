/*
 * repack.c - the x8 row-interleaved layouts of repack.h: repacking (used at
 * load time), the inverse and the reference kernel (tests). Plain C.
 */
#include "repack.h"
#include "quant.h"
#include "tensor.h"
#include "../core/base.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

bool ds_repack_supported(ds_dtype t, int64_t K) {
    switch (t) {
    case DS_DTYPE_Q8_0: case DS_DTYPE_Q4_0: case DS_DTYPE_Q5_0: case DS_DTYPE_Q4_K: case DS_DTYPE_Q6_K:
    case DS_DTYPE_Q2_K: case DS_DTYPE_Q3_K: case DS_DTYPE_IQ2_XXS: case DS_DTYPE_IQ4_NL:
        return ds_quant_row_ok(t, K);
    default: return false;
    }
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Low 4 / high 2 bits of Q6_K values k0..k0+3 (k0 % 4 == 0), one per byte. */
static uint32_t q6k_low4(const ds_block_q6_K *x, int k0) {
    int h = k0 / 128, g = (k0 % 128) / 32, l = k0 % 32;
    uint32_t w = rd32(x->ql + 64 * h + (g & 1 ? 32 : 0) + l);
    return (g < 2 ? w : w >> 4) & 0x0F0F0F0Fu;
}
static uint32_t q6k_high2(const ds_block_q6_K *x, int k0) {
    int h = k0 / 128, g = (k0 % 128) / 32, l = k0 % 32;
    return (rd32(x->qh + 32 * h + l) >> (2 * g)) & 0x03030303u;
}

static void set_q6k_q(ds_block_q6_K *x, int k, int v) {
    int h = k / 128, g = (k % 128) / 32, l = k % 32;
    uint8_t *lo = g & 1 ? &x->ql[64 * h + 32 + l] : &x->ql[64 * h + l];
    if (g < 2) *lo = (uint8_t)((*lo & 0xF0) | (v & 15));
    else *lo = (uint8_t)((*lo & 0x0F) | (v & 15) << 4);
    uint8_t *hi = &x->qh[32 * h + l];
    *hi = (uint8_t)((*hi & ~(3 << (2 * g))) | ((v >> 4) & 3) << (2 * g));
}

/* q5_spread[B]: byte i (0..3) = bit i of B | bit i+4 of B << 1 */
static uint32_t q5_spread[256];

static void init_q5_spread(void) {
    for (int B = 0; B < 256; B++) {
        uint32_t w = 0;
        for (int i = 0; i < 4; i++) w |= (uint32_t)(((B >> i) & 1) | ((B >> (i + 4)) & 1) << 1) << (8 * i);
        q5_spread[B] = w;
    }
}

void ds_repack_group(ds_dtype t, const void *rows, int64_t K, void *out) {
    DS_ASSERT(ds_repack_supported(t, K));
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_q5_spread);
    size_t rb = ds_dtype_row_bytes(t, K), bb = ds_dtype_block_bytes(t);
    int64_t nb = K / ds_dtype_block(t);
    const uint8_t *src = rows;
    uint8_t *o = out;
    for (int64_t b = 0; b < nb; b++, o += 8 * bb) {
        const uint8_t *blk[8];
        for (int r = 0; r < 8; r++) blk[r] = src + rb * (size_t)r + bb * (size_t)b;
        switch (t) {
        case DS_DTYPE_Q8_0:
            for (int r = 0; r < 8; r++) {
                const ds_block_q8_0 *x = (const ds_block_q8_0 *)blk[r];
                memcpy(o + 2 * r, &x->d, 2);
                for (int c = 0; c < 8; c++) memcpy(o + 16 + 32 * c + 4 * r, x->qs + 4 * c, 4);
            }
            break;
        case DS_DTYPE_Q4_0: case DS_DTYPE_IQ4_NL:   /* the same bytes: d, 16 x 2 nibbles */
            for (int r = 0; r < 8; r++) {
                const ds_block_q4_0 *x = (const ds_block_q4_0 *)blk[r];
                memcpy(o + 2 * r, &x->d, 2);
                for (int v = 0; v < 4; v++) memcpy(o + 16 + 32 * v + 4 * r, x->qs + 4 * v, 4);
            }
            break;
        case DS_DTYPE_Q5_0:
            for (int r = 0; r < 8; r++) {
                const ds_block_q5_0 *x = (const ds_block_q5_0 *)blk[r];
                memcpy(o + 2 * r, &x->d, 2);
                /* bit 4s+i of qh -> bit s of byte i: 2 bits per byte of qh (s = 2·byte, 2·byte+1) */
                uint32_t w = q5_spread[x->qh[0]] | q5_spread[x->qh[1]] << 2 | q5_spread[x->qh[2]] << 4 |
                             q5_spread[x->qh[3]] << 6;
                memcpy(o + 16 + 4 * r, &w, 4);
                for (int v = 0; v < 4; v++) memcpy(o + 48 + 32 * v + 4 * r, x->qs + 4 * v, 4);
            }
            break;
        case DS_DTYPE_Q4_K: {
            uint8_t sc[64], mn[64];  /* [8 j + r] */
            for (int r = 0; r < 8; r++) {
                const ds_block_q4_K *x = (const ds_block_q4_K *)blk[r];
                memcpy(o + 2 * r, &x->d, 2);
                memcpy(o + 16 + 2 * r, &x->dmin, 2);
                for (int j = 0; j < 8; j++) ds_q4k_scale_min(j, x->scales, &sc[8 * j + r], &mn[8 * j + r]);
                /* vector v: low nibbles = values 4v.., high = values 128 + 4v.. (same byte 64 further on) */
                for (int v = 0; v < 32; v++) {
                    int k0 = 4 * v, c = k0 / 64, l = k0 % 64;
                    uint32_t lo = rd32(x->qs + 32 * c + l % 32), hi = rd32(x->qs + 32 * c + l % 32 + 64), w;
                    if (l < 32) w = (lo & 0x0F0F0F0Fu) | (hi & 0x0F0F0F0Fu) << 4;
                    else w = ((lo >> 4) & 0x0F0F0F0Fu) | (hi & 0xF0F0F0F0u);
                    memcpy(o + 128 + 32 * v + 4 * r, &w, 4);
                }
            }
            for (int p = 0; p < 32; p++) {
                o[32 + p] = (uint8_t)((sc[p] & 15) | (sc[p + 32] & 15) << 4);
                o[64 + p] = (uint8_t)((mn[p] & 15) | (mn[p + 32] & 15) << 4);
                o[96 + p] = (uint8_t)((sc[p] >> 4) | (sc[p + 32] >> 4) << 2 | (mn[p] >> 4) << 4 | (mn[p + 32] >> 4) << 6);
            }
            break;
        }
        case DS_DTYPE_Q6_K:
            for (int r = 0; r < 8; r++) {
                const ds_block_q6_K *x = (const ds_block_q6_K *)blk[r];
                memcpy(o + 2 * r, &x->d, 2);
                for (int j = 0; j < 16; j++) o[16 + 8 * j + r] = (uint8_t)x->scales[j];
                for (int v = 0; v < 32; v++) {
                    uint32_t w = q6k_low4(x, 4 * v) | q6k_low4(x, 128 + 4 * v) << 4;
                    memcpy(o + 144 + 32 * v + 4 * r, &w, 4);
                }
                for (int h = 0; h < 16; h++) {
                    uint32_t w = q6k_high2(x, 8 * h) | q6k_high2(x, 8 * h + 4) << 2 | q6k_high2(x, 128 + 8 * h) << 4 |
                                 q6k_high2(x, 128 + 8 * h + 4) << 6;
                    memcpy(o + 1168 + 32 * h + 4 * r, &w, 4);
                }
            }
            break;
        case DS_DTYPE_Q2_K:
            /* ggml block: scales[16] (low 4 bits scale, high 4 min) | qs[64] | d | dmin;
             * value k = 128 n + 32 j + l is bits 2j.. of qs[32 n + l] */
            for (int r = 0; r < 8; r++) {
                const uint8_t *x = blk[r];
                memcpy(o + 2 * r, x + 80, 2);
                memcpy(o + 16 + 2 * r, x + 82, 2);
                for (int s = 0; s < 16; s++) o[32 + 8 * s + r] = x[s];
                for (int v = 0; v < 16; v++)
                    for (int i = 0; i < 4; i++) {
                        uint8_t byte = 0;
                        for (int f = 0; f < 4; f++) {
                            int k = 4 * (v + 16 * f) + i, n = k / 128, j = (k % 128) / 32, l = k % 32;
                            byte |= (uint8_t)(((x[16 + 32 * n + l] >> (2 * j)) & 3) << (2 * f));
                        }
                        o[160 + 32 * v + 4 * r + i] = byte;
                    }
            }
            break;
        case DS_DTYPE_Q3_K: {
            /* ggml block: hmask[32] | qs[64] | scales[12] (6-bit, packed) | d; value
             * k = 128 n + 32 j + l: lo = bits 2j.. of qs[32 n + l], high bit = bit
             * 4n + j of hmask[l]; q = lo + 4 high - 4 */
            uint8_t v6[128];   /* [8 s + r] */
            memset(o + 16, 0, 864);
            for (int r = 0; r < 8; r++) {
                const uint8_t *x = blk[r], *hm = x, *qs = x + 32, *sc = x + 96;
                memcpy(o + 2 * r, x + 108, 2);
                for (int i = 0; i < 16; i++) {
                    int lo = i < 8 ? sc[i] & 15 : sc[i - 8] >> 4, hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
                    v6[8 * i + r] = (uint8_t)(lo | hi << 4);
                }
                for (int k = 0; k < 256; k++) {
                    int n = k / 128, j = (k % 128) / 32, l = k % 32, c = k / 4, i = k % 4;
                    int lo = (qs[32 * n + l] >> (2 * j)) & 3, hb = (hm[l] >> (4 * n + j)) & 1;
                    o[368 + 32 * (c % 16) + 4 * r + i] |= (uint8_t)(lo << (2 * (c / 16)));
                    o[112 + 32 * (c % 8) + 4 * r + i] |= (uint8_t)(hb << (c / 8));
                }
            }
            for (int p = 0; p < 64; p++) o[16 + p] = (uint8_t)((v6[p] & 15) | (v6[p + 64] & 15) << 4);
            for (int p = 0; p < 32; p++)
                o[80 + p] = (uint8_t)((v6[p] >> 4) | (v6[p + 32] >> 4) << 2 | (v6[p + 64] >> 4) << 4 | (v6[p + 96] >> 4) << 6);
            break;
        }
        case DS_DTYPE_IQ2_XXS:
            for (int r = 0; r < 8; r++) {
                memcpy(o + 2 * r, blk[r], 2);
                for (int ib = 0; ib < 8; ib++) memcpy(o + 16 + 64 * ib + 8 * r, blk[r] + 2 + 8 * ib, 8);
            }
            break;
        default: DS_ASSERT(!"not repackable");
        }
    }
}

void ds_unpack_group_ref(ds_dtype t, const void *grp, int64_t K, void *rows) {
    DS_ASSERT(ds_repack_supported(t, K));
    size_t rb = ds_dtype_row_bytes(t, K), bb = ds_dtype_block_bytes(t);
    int64_t nb = K / ds_dtype_block(t);
    const uint8_t *g = grp;
    uint8_t *dst = rows;
    for (int64_t b = 0; b < nb; b++, g += 8 * bb) {
        for (int r = 0; r < 8; r++) {
            uint8_t *blk = dst + rb * (size_t)r + bb * (size_t)b;
            switch (t) {
            case DS_DTYPE_Q8_0: {
                ds_block_q8_0 *x = (ds_block_q8_0 *)blk;
                memcpy(&x->d, g + 2 * r, 2);
                for (int c = 0; c < 8; c++) memcpy(x->qs + 4 * c, g + 16 + 32 * c + 4 * r, 4);
                break;
            }
            case DS_DTYPE_Q4_0: case DS_DTYPE_IQ4_NL: {
                ds_block_q4_0 *x = (ds_block_q4_0 *)blk;
                memcpy(&x->d, g + 2 * r, 2);
                for (int v = 0; v < 4; v++) memcpy(x->qs + 4 * v, g + 16 + 32 * v + 4 * r, 4);
                break;
            }
            case DS_DTYPE_Q5_0: {
                ds_block_q5_0 *x = (ds_block_q5_0 *)blk;
                memcpy(&x->d, g + 2 * r, 2);
                uint32_t qh = 0;
                for (int s = 0; s < 8; s++)
                    for (int i = 0; i < 4; i++) qh |= (uint32_t)((g[16 + 4 * r + i] >> s) & 1) << (4 * s + i);
                memcpy(x->qh, &qh, 4);
                for (int v = 0; v < 4; v++) memcpy(x->qs + 4 * v, g + 48 + 32 * v + 4 * r, 4);
                break;
            }
            case DS_DTYPE_Q4_K: {
                ds_block_q4_K *x = (ds_block_q4_K *)blk;
                memcpy(&x->d, g + 2 * r, 2);
                memcpy(&x->dmin, g + 16 + 2 * r, 2);
                uint8_t ls[8], lm[8];
                for (int j = 0; j < 8; j++) {
                    int p = 8 * (j % 4) + r, hi = j >= 4;
                    uint8_t a = g[32 + p], bm = g[64 + p], c = g[96 + p];
                    ls[j] = (uint8_t)((hi ? a >> 4 : a & 15) | ((c >> (hi ? 2 : 0)) & 3) << 4);
                    lm[j] = (uint8_t)((hi ? bm >> 4 : bm & 15) | ((c >> (hi ? 6 : 4)) & 3) << 4);
                }
                for (int j = 0; j < 4; j++) {
                    x->scales[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
                    x->scales[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
                    x->scales[j + 8] = (uint8_t)((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
                }
                uint8_t q[256];
                for (int v = 0; v < 32; v++)
                    for (int i = 0; i < 4; i++) {
                        uint8_t byte = g[128 + 32 * v + 4 * r + i];
                        q[4 * v + i] = byte & 15;
                        q[128 + 4 * v + i] = byte >> 4;
                    }
                for (int c = 0; c < 4; c++)
                    for (int l = 0; l < 32; l++) x->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
                break;
            }
            case DS_DTYPE_Q6_K: {
                ds_block_q6_K *x = (ds_block_q6_K *)blk;
                memcpy(&x->d, g + 2 * r, 2);
                for (int j = 0; j < 16; j++) x->scales[j] = (int8_t)g[16 + 8 * j + r];
                int q[256];
                for (int v = 0; v < 32; v++)
                    for (int i = 0; i < 4; i++) {
                        uint8_t byte = g[144 + 32 * v + 4 * r + i];
                        q[4 * v + i] = byte & 15;
                        q[128 + 4 * v + i] = byte >> 4;
                    }
                for (int h = 0; h < 16; h++) {
                    const int ch[4] = { 2 * h, 2 * h + 1, 2 * h + 32, 2 * h + 33 };
                    for (int i = 0; i < 4; i++)
                        for (int f = 0; f < 4; f++) q[4 * ch[f] + i] |= ((g[1168 + 32 * h + 4 * r + i] >> (2 * f)) & 3) << 4;
                }
                for (int k = 0; k < 256; k++) set_q6k_q(x, k, q[k]);
                break;
            }
            case DS_DTYPE_Q2_K: {
                memcpy(blk + 80, g + 2 * r, 2);
                memcpy(blk + 82, g + 16 + 2 * r, 2);
                for (int s = 0; s < 16; s++) blk[s] = g[32 + 8 * s + r];
                memset(blk + 16, 0, 64);
                for (int v = 0; v < 16; v++)
                    for (int i = 0; i < 4; i++)
                        for (int f = 0; f < 4; f++) {
                            int k = 4 * (v + 16 * f) + i, n = k / 128, j = (k % 128) / 32, l = k % 32;
                            blk[16 + 32 * n + l] |= (uint8_t)(((g[160 + 32 * v + 4 * r + i] >> (2 * f)) & 3) << (2 * j));
                        }
                break;
            }
            case DS_DTYPE_Q3_K: {
                uint8_t *hm = blk, *qs = blk + 32, *sc = blk + 96;
                memcpy(blk + 108, g + 2 * r, 2);
                memset(blk, 0, 108);
                for (int i = 0; i < 16; i++) {
                    int p = 8 * i + r;
                    int v = ((g[16 + p % 64] >> (p < 64 ? 0 : 4)) & 15) | ((g[80 + p % 32] >> (2 * (p / 32))) & 3) << 4;
                    if (i < 8) sc[i] |= (uint8_t)(v & 15);
                    else sc[i - 8] |= (uint8_t)((v & 15) << 4);
                    sc[8 + i % 4] |= (uint8_t)((v >> 4) << (2 * (i / 4)));
                }
                for (int k = 0; k < 256; k++) {
                    int n = k / 128, j = (k % 128) / 32, l = k % 32, c = k / 4, i = k % 4;
                    int lo = (g[368 + 32 * (c % 16) + 4 * r + i] >> (2 * (c / 16))) & 3;
                    int hb = (g[112 + 32 * (c % 8) + 4 * r + i] >> (c / 8)) & 1;
                    qs[32 * n + l] |= (uint8_t)(lo << (2 * j));
                    hm[l] |= (uint8_t)(hb << (4 * n + j));
                }
                break;
            }
            case DS_DTYPE_IQ2_XXS:
                memcpy(blk, g + 2 * r, 2);
                for (int ib = 0; ib < 8; ib++) memcpy(blk + 2 + 8 * ib, g + 16 + 64 * ib + 8 * r, 8);
                break;
            default: DS_ASSERT(!"not repackable");
            }
        }
    }
}

void ds_gemm_x8_ref(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    size_t rb = ds_dtype_row_bytes(t, K);
    uint8_t *rows = malloc(8 * rb);
    DS_ASSERT(rows);
    ds_unpack_group_ref(t, grp, K, rows);
    for (int i = 0; i < T; i++)
        for (int r = 0; r < 8; r++) out[8 * i + r] = ds_vec_dot_ref(t, rows + rb * (size_t)r, act[i], K);
    free(rows);
}
