/*
 * attn_i8.c - the int8 latent cache's attention arithmetic (--kv-type i8):
 * the query rows rounded to int8 once per token (ds_mla_q_i8), and the
 * scalar twins of the kernels (ds_mla_scores_i8_ref, ds_mla_p_i8_ref: the
 * softmax weights rounded to u8, ds_mla_pv_i8_ref), which define their bits.
 *
 * Rows (kvcache.c's I8 layout, rb bytes apart): fp32 scales d0 (the latent
 * part [0, R)) and d1 (the rope part [R, W)) at bytes 0 and 4, the int32
 * sums of those parts' codes at bytes 12 and 16, the W int8 codes from byte
 * DS_KV_I8_HEAD. A query row (W fp32 per head) is rounded the same way: per
 * head and part an fp32 scale max|q|/127 and codes in [-127, 127].
 *
 * Scores: two exact integer dot products per (head, row), ic over [0, R) and
 * ip over [R, W), then in this order (each product one rounding):
 *   s = (float)ic · (dq0[h] · d0[j]) + (float)ip · (dq1[h] · d1[j]).
 * Integer sums do not depend on the order of the products, so every kernel
 * that computes them exactly (vpdpbusd: one side unsigned, so the queries
 * are stored +128 and 128·Σk taken back with the row's stored code sum) and
 * then this epilogue gives the twin's bits.
 * Weighted sum: the weights p_j · d0[j] (the softmax weight times the row's
 * latent scale) rounded to u8 per head with one scale dp = max/255 per step
 * (ds_mla_p_i8; |error| <= dp/2 per weight), then per column the exact
 * integer Σ_j code_j · v_j[c] and u = alpha·u + dp·(float)sum (two
 * products, one sum: three roundings in that order).
 */
#include "ops.h"

#include <math.h>
#include <string.h>

static float rd_f32(const uint8_t *p) { float f; memcpy(&f, p, 4); return f; }

void ds_mla_q_i8(uint8_t *qi, const float *q, int64_t ldq, int64_t H, int64_t W, int64_t R) {
    int64_t Hp = DS_MLA_I8_HP(H);
    float *dq = (float *)qi;   /* dq0[Hp], dq1[Hp] */
    uint8_t *qt = qi + 8 * Hp;
    memset(qt, 128, (size_t)(Hp * W));   /* padding heads: code 0 */
    for (int64_t h = 0; h < Hp; h++) {
        if (h >= H) { dq[h] = dq[Hp + h] = 0.0f; continue; }
        const float *qh = q + h * ldq;
        for (int p = 0; p < 2; p++) {
            int64_t i0 = p ? R : 0, i1 = p ? W : R;
            float amax = 0;
            for (int64_t i = i0; i < i1; i++) amax = fmaxf(amax, fabsf(qh[i]));
            float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0;
            dq[p * Hp + h] = d;
            for (int64_t i = i0; i < i1; i++) {
                float v = nearbyintf(qh[i] * id);
                v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
                qt[((i / 4) * Hp + h) * 4 + i % 4] = (uint8_t)((int)v + 128);
            }
        }
    }
}

void ds_mla_scores_i8_ref(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                          int64_t W, int64_t R, int64_t n) {
    int64_t Hp = DS_MLA_I8_HP(H);
    const float *dq = (const float *)qi;
    const uint8_t *qt = qi + 8 * Hp;
    for (int64_t h = 0; h < H; h++)
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *row = kv + j * rb;
            const int8_t *k = (const int8_t *)(row + DS_KV_I8_HEAD);
            int32_t ic = 0, ip = 0;
            for (int64_t i = 0; i < W; i++) {
                int32_t qv = (int32_t)qt[((i / 4) * Hp + h) * 4 + i % 4] - 128;
                if (i < R) ic += qv * k[i];
                else ip += qv * k[i];
            }
            s[h * ls + j] = (float)ic * (dq[h] * rd_f32(row)) + (float)ip * (dq[Hp + h] * rd_f32(row + 4));
        }
}

void ds_mla_p_i8_ref(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                     int64_t n) {
    int64_t np = (n + 3) / 4 * 4;
    for (int64_t h = 0; h < H; h++) {
        const float *ph = p + h * ls;
        uint8_t *qh = pq + h * np;
        float pm = 0;
        for (int64_t j = 0; j < n; j++) pm = fmaxf(pm, ph[j] * rd_f32(kv + j * rb));
        float inv = pm > 0 ? 255.0f / pm : 0.0f;
        dp[h] = pm / 255.0f;
        for (int64_t j = 0; j < n; j++) {
            float v = nearbyintf((ph[j] * rd_f32(kv + j * rb)) * inv);
            qh[j] = (uint8_t)(v > 255.0f ? 255.0f : v < 0.0f ? 0.0f : v);
        }
        for (int64_t j = n; j < np; j++) qh[j] = 0;
    }
}

void ds_mla_pv_i8_ref(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                      const uint8_t *kv, int64_t rb, int64_t n) {
    int64_t np = (n + 3) / 4 * 4;
    for (int64_t h = 0; h < H; h++)
        for (int64_t c = 0; c < R; c++) {
            int32_t acc = 0;
            for (int64_t j = 0; j < n; j++) acc += (int32_t)pq[h * np + j] * ((const int8_t *)(kv + j * rb + DS_KV_I8_HEAD))[c];
            u[h * R + c] = alpha[h] * u[h * R + c] + dp[h] * (float)acc;
        }
}
