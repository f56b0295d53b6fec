/*
 * test_attn_i8.c - the int8 latent cache's kernels (--kv-type i8): the
 * query rounding (ds_mla_q_i8) against hand-worked codes and its layout,
 * the score and weighted-sum kernels (AVX2 vpmaddubsw / vpmaddwd, AVX512-VNNI
 * vpdpbusd) bit for bit
 * against their scalar twins over shape edges (heads not a multiple of 16,
 * rows not a multiple of 8 or 4, the extreme codes ±127 / 255), the twins
 * against double-precision sums of the same codes, the weight rounding's
 * bound (ds_mla_p_i8), and the whole flash-decode step against the
 * double-precision attention over the same (dequantized) rows and query
 * within the stated bound of the weights' rounding to u8.
 */
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/ops.h"

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float rdf(const uint8_t *p) { float f; memcpy(&f, p, 4); return f; }

/* n rows of the I8 layout, rb = DS_KV_I8_HEAD + W bytes apart: random codes
 * in [-127, 127] (every 9th row all ±127: the extremes), part scales d0
 * (over [0, R)), d1 (over [R, W)), the parts' code sums; kvf: the
 * dequantized rows (d · code), W floats each, or NULL */
static void rand_rows(uint8_t *kv, float *kvf, int64_t n, int64_t W, int64_t R, ds_rng *r) {
    int64_t rb = DS_KV_I8_HEAD + W;
    for (int64_t j = 0; j < n; j++) {
        uint8_t *row = kv + j * rb;
        memset(row, 0, DS_KV_I8_HEAD);
        float d[2] = { (float)(0.01 + 0.03 * ds_rng_uniform(r)), (float)(0.05 + 0.1 * ds_rng_uniform(r)) };
        int32_t s[2] = { 0, 0 };
        int8_t *k = (int8_t *)(row + DS_KV_I8_HEAD);
        for (int64_t i = 0; i < W; i++) {
            int v = j % 9 == 4 ? (i % 3 ? 127 : -127) : (int)(ds_rng_u64(r) % 255) - 127;
            k[i] = (int8_t)v;
            s[i >= R] += v;
            if (kvf) kvf[j * W + i] = d[i >= R] * (float)v;
        }
        memcpy(row, &d[0], 4); memcpy(row + 4, &d[1], 4);
        memcpy(row + 12, &s[0], 4); memcpy(row + 16, &s[1], 4);
    }
}

static int32_t qcode(const uint8_t *qi, int64_t H, int64_t h, int64_t i) {
    int64_t Hp = DS_MLA_I8_HP(H);
    return (int32_t)qi[8 * Hp + ((i / 4) * Hp + h) * 4 + i % 4] - 128;
}

/* hand-worked: q = [2, -1, 0.5, 0 | 4, 0, 0, -4] (R = 4, W = 8) -> dq0 = 2/127,
 * codes 127, -64 (-63.5 to even), 32 (31.75), 0; dq1 = 4/127, codes 127, 0, 0, -127;
 * a head of zeros: scale 0, codes 0; padding heads: code 0 (stored 128) */
TEST(attn_i8_query_rounding) {
    float q[2 * 8] = { 2, -1, 0.5f, 0, 4, 0, 0, -4, 0, 0, 0, 0, 0, 0, 0, 0 };
    uint8_t *qi = malloc(DS_MLA_Q_I8_BYTES(2, 8));
    ds_mla_q_i8(qi, q, 8, 2, 8, 4);
    const float *dq = (const float *)qi;
    CHECK(bits(dq[0]) == bits(2.0f / 127.0f) && bits(dq[16]) == bits(4.0f / 127.0f));
    CHECK(dq[1] == 0 && dq[17] == 0 && dq[15] == 0);
    int32_t want[8] = { 127, -63, 32, 0, 127, 0, 0, -127 };
    want[1] = (int32_t)nearbyintf(-1.0f * (1.0f / (2.0f / 127.0f)));   /* -63.5 (or just off it) as the product rounds */
    for (int i = 0; i < 8; i++) {
        CHECK_MSG(qcode(qi, 2, 0, i) == want[i], "q[%d]: code %d, want %d", i, qcode(qi, 2, 0, i), want[i]);
        CHECK(qcode(qi, 2, 1, i) == 0);
        for (int h = 2; h < 16; h++) CHECK(qcode(qi, 2, h, i) == 0);
    }
    CHECK(abs(want[1]) == 63 || abs(want[1]) == 64);
    free(qi);
}

/* scores of the dispatched kernel == the twin, bit for bit; the twin ==
 * the formula with exact (double) integer sums */
static void scores_vs_twin(void) {
    ds_rng r;
    ds_rng_seed(&r, 51);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 4, 40, 32 }, { 20, 88, 72 }, { 1, 8, 4 }, { 33, 68, 64 }, { 128, 576, 512 } };
    int64_t lens[] = { 1, 7, 8, 9, 64, 67 };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], n = lens[li], ls = n + 8, rb = DS_KV_I8_HEAD + W;
            uint8_t *kv = malloc((size_t)(n * rb)), *qi = malloc((size_t)DS_MLA_Q_I8_BYTES(H, W));
            float *q = malloc((size_t)(H * W) * sizeof(float));
            float *s = malloc((size_t)(H * ls) * sizeof(float)), *s2 = malloc((size_t)(H * ls) * sizeof(float));
            rand_rows(kv, NULL, n, W, R, &r);
            for (int64_t i = 0; i < H * W; i++) q[i] = (float)ds_rng_normal(&r) * (i % 5 == 0 ? 6.0f : 1.0f);
            ds_mla_q_i8(qi, q, W, H, W, R);
            ds_mla_scores_i8(s, ls, qi, H, kv, rb, W, R, n);
            ds_mla_scores_i8_ref(s2, ls, qi, H, kv, rb, W, R, n);
            int bad = 0, bad2 = 0;
            const float *dq = (const float *)qi;
            int64_t Hp = DS_MLA_I8_HP(H);
            for (int64_t h = 0; h < H; h++)
                for (int64_t j = 0; j < n; j++) {
                    bad += bits(s[h * ls + j]) != bits(s2[h * ls + j]);
                    const uint8_t *row = kv + j * rb;
                    double ic = 0, ip = 0;
                    for (int64_t i = 0; i < W; i++) {
                        double p = (double)qcode(qi, H, h, i) * ((const int8_t *)(row + DS_KV_I8_HEAD))[i];
                        if (i < R) ic += p; else ip += p;
                    }
                    float want = (float)ic * (dq[h] * rdf(row)) + (float)ip * (dq[Hp + h] * rdf(row + 4));
                    bad2 += bits(want) != bits(s2[h * ls + j]);
                }
            CHECK_MSG(bad == 0, "%d of %lld i8 scores differ from the twin (H=%lld W=%lld R=%lld n=%lld)", bad,
                      (long long)(H * n), (long long)H, (long long)W, (long long)R, (long long)n);
            CHECK_MSG(bad2 == 0, "twin: %d scores differ from the exact sums (H=%lld W=%lld n=%lld)", bad2, (long long)H,
                      (long long)W, (long long)n);
            free(kv); free(qi); free(q); free(s); free(s2);
        }
}

TEST(attn_i8_scores_avx2_vs_twin) {
    if (!ds_ops_simd()) SKIP("no avx2");
    ds_ops_force_avx2(true);
    scores_vs_twin();
    ds_ops_force_avx2(false);
}

TEST(attn_i8_scores_vpdpbusd_vs_twin) {
    if (!ds_mla_i8_dp_in_use()) SKIP("no avx512vnni (or DS_ISA below it): the vpdpbusd kernel is not used");
    scores_vs_twin();
}

/* the weights' rounding: codes within half a step of w·255/max, dp = max/255,
 * zeros past n, the largest weight 255; all-zero weights give dp 0 */
TEST(attn_i8_weight_rounding) {
    ds_rng r;
    ds_rng_seed(&r, 53);
    int64_t H = 3, n = 67, W = 40, R = 32, ls = n + 8, np = 68, rb = DS_KV_I8_HEAD + W;
    uint8_t *kv = malloc((size_t)(n * rb)), *pq = malloc((size_t)(H * np));
    float *p = malloc((size_t)(H * ls) * sizeof(float)), dp[3];
    rand_rows(kv, NULL, n, W, R, &r);
    for (int64_t i = 0; i < H * ls; i++) p[i] = (float)ds_rng_uniform(&r) * (float)ds_rng_uniform(&r);
    for (int64_t j = 0; j < n; j++) p[2 * ls + j] = 0;
    memset(pq, 0xee, (size_t)(H * np));
    ds_mla_p_i8(pq, dp, p, ls, H, kv, rb, n);
    /* the dispatched rounding == the twin's bits (n = 67, 64, 1, 16, 17) */
    for (int64_t nn = 1; nn <= n; nn = nn == 1 ? 16 : nn == 16 ? 17 : nn == 17 ? 64 : nn == 64 ? 67 : n + 1) {
        int64_t npp = (nn + 3) / 4 * 4;
        uint8_t *a = malloc((size_t)(H * npp)), *b = malloc((size_t)(H * npp));
        float da[3], db[3];
        ds_mla_p_i8(a, da, p, ls, H, kv, rb, nn);
        ds_mla_p_i8_ref(b, db, p, ls, H, kv, rb, nn);
        CHECK_MSG(!memcmp(a, b, (size_t)(H * npp)) && !memcmp(da, db, sizeof da), "n %lld: the weights' rounding "
                  "differs from the twin", (long long)nn);
        free(a); free(b);
    }
    for (int64_t h = 0; h < 2; h++) {
        double mx = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, (double)(p[h * ls + j] * rdf(kv + j * rb)));
        CHECK(bits(dp[h]) == bits((float)mx / 255.0f));
        int top = 0;
        for (int64_t j = 0; j < n; j++) {
            double w = (double)(p[h * ls + j] * rdf(kv + j * rb));
            CHECK_MSG(fabs(pq[h * np + j] * (mx / 255) - w) <= mx / 510 * (1 + 1e-5), "head %lld row %lld: code %d for %g",
                      (long long)h, (long long)j, pq[h * np + j], w / mx * 255);
            top += pq[h * np + j] == 255;
        }
        CHECK(top >= 1);
        CHECK(pq[h * np + 67] == 0);
    }
    CHECK(dp[2] == 0);
    for (int64_t j = 0; j < np; j++) CHECK(pq[2 * np + j] == 0);
    free(kv); free(pq); free(p);
}

/* the weighted sum of the dispatched kernel == its twin, bit for bit (n not a
 * multiple of 4, heads not a multiple of 4, alpha 0, the extreme codes) and
 * the twin == the exact integer sums in its epilogue */
static void pv_vs_twin(void) {
    ds_rng r;
    ds_rng_seed(&r, 57);
    /* H, W, R: R % 64 == 0 for vpdpbusd (else AVX2), R % 16 == 0 for AVX2 */
    int64_t shapes[][3] = { { 16, 576, 512 }, { 5, 64, 64 }, { 7, 136, 128 }, { 1, 576, 512 }, { 4, 40, 32 }, { 6, 56, 48 } };
    int64_t lens[] = { 1, 3, 4, 5, 63, 64, 67 };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], n = lens[li], np = (n + 3) / 4 * 4;
            int64_t rb = DS_KV_I8_HEAD + W;
            uint8_t *kv = malloc((size_t)(n * rb)), *pq = malloc((size_t)(H * np));
            void *scr = aligned_alloc(64, (size_t)((2 * (n + 3) * R + 63) / 64 * 64));
            float *u = malloc((size_t)(H * R) * sizeof(float)), *u2 = malloc((size_t)(H * R) * sizeof(float));
            float *u0 = malloc((size_t)(H * R) * sizeof(float)), *dp = malloc((size_t)H * sizeof(float));
            float *al = malloc((size_t)H * sizeof(float));
            rand_rows(kv, NULL, n, W, R, &r);
            for (int64_t i = 0; i < H * np; i++) pq[i] = i % np >= n ? 0 : i % 11 == 0 ? 255 : (uint8_t)(ds_rng_u64(&r) % 256);
            for (int64_t h = 0; h < H; h++) {
                al[h] = h == 0 ? 0.0f : (float)ds_rng_uniform(&r);
                dp[h] = (float)ds_rng_uniform(&r) / 255.0f;
            }
            for (int64_t i = 0; i < H * R; i++) u[i] = u2[i] = u0[i] = 3 * (float)ds_rng_normal(&r);
            ds_mla_pv_i8(u, R, pq, dp, al, H, kv, rb, n, scr);
            ds_mla_pv_i8_ref(u2, R, pq, dp, al, H, kv, rb, n);
            int bad = 0, bad2 = 0;
            for (int64_t h = 0; h < H; h++)
                for (int64_t c = 0; c < R; c++) {
                    bad += bits(u[h * R + c]) != bits(u2[h * R + c]);
                    double acc = 0;
                    for (int64_t j = 0; j < n; j++)
                        acc += (double)pq[h * np + j] * ((const int8_t *)(kv + j * rb + DS_KV_I8_HEAD))[c];
                    float want = al[h] * u0[h * R + c] + dp[h] * (float)acc;
                    bad2 += bits(want) != bits(u2[h * R + c]);
                }
            CHECK_MSG(bad == 0, "%d of %lld i8 weighted sums differ from the twin (H=%lld R=%lld n=%lld)", bad,
                      (long long)(H * R), (long long)H, (long long)R, (long long)n);
            CHECK_MSG(bad2 == 0, "twin: %d sums differ from the exact ones (H=%lld R=%lld n=%lld)", bad2, (long long)H,
                      (long long)R, (long long)n);
            free(kv); free(pq); free(scr); free(u); free(u2); free(u0); free(dp); free(al);
        }
}

TEST(attn_i8_pv_avx2_vs_twin) {
    if (!ds_ops_simd()) SKIP("no avx2");
    ds_ops_force_avx2(true);
    pv_vs_twin();
    ds_ops_force_avx2(false);
}

TEST(attn_i8_pv_vpdpbusd_vs_twin) {
    if (!ds_mla_i8_dp_in_use()) SKIP("no avx512vnni (or DS_ISA below it): the vpdpbusd kernel is not used");
    pv_vs_twin();
}

/* flash decode over i8 rows: splits of `split` rows folded in blocks of blk, merged in order */
static void flash_decode_i8(float *out, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t W, int64_t S,
                            int64_t R, int64_t split, int64_t blk, float scale) {
    int64_t ns = (S + split - 1) / split, rb = DS_KV_I8_HEAD + W;
    float *pu = calloc((size_t)(ns * H * R), sizeof(float)), *pm = malloc((size_t)(ns * H) * sizeof(float));
    float *pl = malloc((size_t)(ns * H) * sizeof(float));
    float *sc = malloc((size_t)DS_MLA_STEP_I8_SCRATCH(H, blk, R) * sizeof(float));
    for (int64_t k = 0; k < ns; k++) {
        for (int64_t h = 0; h < H; h++) { pm[k * H + h] = -INFINITY; pl[k * H + h] = 0; }
        for (int64_t j = k * split; j < DS_MIN(S, (k + 1) * split); j += blk)
            ds_mla_attn_step_i8(pu + k * H * R, pm + k * H, pl + k * H, qi, H, kv + j * rb, rb, W,
                                DS_MIN(blk, DS_MIN(S, (k + 1) * split) - j), R, scale, sc);
    }
    for (int64_t k = 1; k < ns; k++) ds_mla_attn_merge(pu, pm, pl, pu + k * H * R, pm + k * H, pl + k * H, H, R);
    ds_mla_attn_finish(out, R, pu, pl, H, R);
    free(pu); free(pm); free(pl); free(sc);
}

/* The step vs the double-precision attention over the same values (the
 * dequantized rows and query: what remains is the weights' rounding to u8
 * and fp32 arithmetic). Bound per output: Σ over blocks of (the block's
 * largest weight p_j·d0_j)/510 · Σ_j∈block |code_j[c]|, over l (half a step
 * per weight), plus 1e-5 of the largest output. The AVX2 kernels and
 * vpdpbusd (where present) give the same bits (the generic level's twins
 * do too, but its softmax uses expf, not the AVX2 exp: within the bound
 * only); one head alone == among H at every level. */
TEST(attn_i8_flash_decode) {
    ds_rng r;
    ds_rng_seed(&r, 59);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 4, 40, 32 }, { 5, 136, 128 } };   /* H, W, R */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], S = 301, rb = DS_KV_I8_HEAD + W;
        uint8_t *kv = malloc((size_t)(S * rb)), *qi = malloc((size_t)DS_MLA_Q_I8_BYTES(H, W));
        uint8_t *q1 = malloc((size_t)DS_MLA_Q_I8_BYTES(1, W));
        float *q = malloc((size_t)(H * W) * sizeof(float)), *qf = malloc((size_t)(H * W) * sizeof(float));
        float *kvf = malloc((size_t)(S * W) * sizeof(float));
        float *o = malloc((size_t)(H * R) * sizeof(float)), *orf = malloc((size_t)(H * R) * sizeof(float));
        float *o2 = malloc((size_t)(H * R) * sizeof(float)), *o1 = malloc((size_t)R * sizeof(float));
        rand_rows(kv, kvf, S, W, R, &r);
        for (int64_t i = 0; i < H * W; i++) q[i] = 0.6f * (float)ds_rng_normal(&r);
        ds_mla_q_i8(qi, q, W, H, W, R);
        const float *dq = (const float *)qi;
        int64_t Hp = DS_MLA_I8_HP(H);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < W; i++) qf[h * W + i] = dq[(i >= R) * Hp + h] * (float)qcode(qi, H, h, i);
        int64_t lens[] = { 1, 64, 65, 301 };
        for (int li = 0; li < 4; li++) {
            int64_t n = lens[li];
            CHECK(ds_mla_attn_ref(orf, R, qf, W, H, kvf, W, n, R, 0.07f) == 0);
            for (int lev = 0; lev < 3; lev++) {   /* generic (the twins), AVX2, the widest */
                ds_ops_force_generic(lev == 0);
                ds_ops_force_avx2(lev == 1);
                flash_decode_i8(o, qi, H, kv, W, n, R, 100, 64, 0.07f);
                double worst = 0, amax = 0;
                for (int64_t i = 0; i < H * R; i++) amax = fmax(amax, fabs(orf[i]));
                for (int64_t h = 0; h < H; h++) {
                    double *pw = malloc((size_t)n * sizeof(double)), mxs = -INFINITY, l = 0;
                    for (int64_t j = 0; j < n; j++) {
                        double d = 0;
                        for (int64_t k = 0; k < W; k++) d += (double)qf[h * W + k] * kvf[j * W + k];
                        pw[j] = 0.07 * d;
                        mxs = fmax(mxs, pw[j]);
                    }
                    for (int64_t j = 0; j < n; j++) { pw[j] = exp(pw[j] - mxs); l += pw[j]; }
                    for (int64_t c = 0; c < R; c++) {
                        double b = 0;
                        for (int64_t j0 = 0; j0 < n; j0 = j0 + 64 > (j0 / 100 + 1) * 100 ? (j0 / 100 + 1) * 100 : j0 + 64) {
                            int64_t j1 = DS_MIN(n, DS_MIN(j0 + 64, (j0 / 100 + 1) * 100));
                            double wm = 0, sa = 0;
                            for (int64_t j = j0; j < j1; j++) {
                                wm = fmax(wm, pw[j] * rdf(kv + j * rb));
                                sa += abs(((const int8_t *)(kv + j * rb + DS_KV_I8_HEAD))[c]);
                            }
                            b += wm / 510 * sa;
                        }
                        b = b / l + 1e-5 * amax;
                        worst = ds_max_err(worst, fabs((double)o[h * R + c] - orf[h * R + c]) / b);
                    }
                    free(pw);
                }
                CHECK_MSG(worst <= 1.0, "i8 flash decode (level %d, H=%lld W=%lld S=%lld): error %.3g x its bound vs "
                          "double", lev, (long long)H, (long long)W, (long long)n, worst);
                if (lev == 1) memcpy(o2, o, (size_t)(H * R) * sizeof(float));
                if (lev == 2 && ds_ops_simd()) CHECK_MSG(memcmp(o, o2, (size_t)(H * R) * sizeof(float)) == 0,
                               "i8 flash decode: the dispatched kernels differ from the twins (H=%lld W=%lld S=%lld)",
                               (long long)H, (long long)W, (long long)n);
                for (int64_t h = 0; h < H; h += 3) {
                    ds_mla_q_i8(q1, q + h * W, W, 1, W, R);
                    flash_decode_i8(o1, q1, 1, kv, W, n, R, 100, 64, 0.07f);
                    CHECK_MSG(memcmp(o1, o + h * R, (size_t)R * sizeof(float)) == 0,
                              "head %lld differs alone (level %d)", (long long)h, lev);
                }
            }
            ds_ops_force_generic(false);
            ds_ops_force_avx2(false);
        }
        free(kv); free(qi); free(q1); free(q); free(qf); free(kvf); free(o); free(orf); free(o2); free(o1);
    }
}
