/*
 * test_attn_bf16.c - the bf16 latent cache's kernels (--kv-type bf16):
 * the row rounding against hand-worked cases, the score kernels (AVX2 and
 * AVX512-BF16 vdpbf16ps) bit for bit against their scalar twin
 * (ds_mla_scores_bf16_ref) and the twin against a double-precision dot
 * product, the weighted-sum kernels bit for bit against theirs
 * (ds_mla_pv_bf16_ref), and the whole flash-decode step over bf16 rows
 * against the double-precision attention twin (ds_mla_attn_ref) on the
 * same (widened) values within the stated bound of the weights' rounding,
 * bit-identical between the AVX2 and vdpbf16ps kernels; and the expanded
 * prefill's operands (key-transposed layout and its score kernel, fused
 * softmax, values in row pairs) each against its twin at every level.
 */
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "tensor/dtype.h"
#include "tensor/ops.h"
#include "tensor/ops_isa.h"

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

TEST(attn_bf16_round_row) {
    float x[] = { 1.0f, from_bits(0x3f808000u), from_bits(0x3f818000u), from_bits(0x3f808001u), -2.5f,
                  from_bits(0x00400000u), from_bits(0x80000001u), INFINITY, NAN, 3.0e38f, 0.0f, -0.0f };
    /* 1; 1 + 2^-8 (a tie: to even 1.0); 1 + 3·2^-8 (tie: up to 1 + 2^-6); just above the tie: up;
     * exact; subnormals to signed zero; inf; NaN stays NaN; large rounds within range; zeros */
    uint16_t want[] = { 0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x0000, 0x8000, 0x7f80, 0, 0x7f62, 0x0000, 0x8000 };
    uint16_t y[12];
    ds_bf16_round_row(y, x, 12);
    for (int i = 0; i < 12; i++) {
        if (i == 8) { CHECK_MSG((y[i] & 0x7f80) == 0x7f80 && (y[i] & 0x7f), "NaN -> %04x", y[i]); continue; }
        CHECK_MSG(y[i] == want[i], "x[%d] = %a (0x%08x): bf16 0x%04x, want 0x%04x", i, (double)x[i], bits(x[i]), y[i], want[i]);
    }
}

/* the dispatched rounding (AVX2 where the CPU has it) == its scalar twin, bit
 * for bit, on random bit patterns (every class: NaN, inf, subnormal, zero,
 * ties) and the named cases, at lengths with and without a scalar tail */
TEST(attn_bf16_round_row_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 7);
    enum { N = 4099 };
    float *x = malloc(N * sizeof(float));
    uint16_t *y = malloc((N + 1) * 2), *y2 = malloc((N + 1) * 2);
    static const uint32_t special[] = { 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x00400000u, 0x80000001u, 0x7f800000u,
                                        0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f7fffffu, 0xff7fffffu,
                                        0x00000000u, 0x80000000u, 0x007fffffu, 0x00800000u, 0x3f7fffffu, 0xbf808000u };
    for (int64_t i = 0; i < N; i++) {
        uint32_t u = (uint32_t)ds_rng_u64(&r);
        if (i % 5 == 0) u = (u & 0xffff0000u) | 0x8000u;   /* a tie */
        if (i < (int64_t)(sizeof special / sizeof special[0])) u = special[i];
        memcpy(&x[i], &u, 4);
    }
    int64_t lens[] = { N, 16, 15, 1, 33, 1000 };
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        memset(y, 0xaa, (N + 1) * 2);
        memset(y2, 0x55, (N + 1) * 2);
        ds_bf16_round_row(y, x, lens[li]);
        ds_bf16_round_row_ref(y2, x, lens[li]);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < lens[li]; i++)
            if (y[i] != y2[i]) { bad++; if (first < 0) first = i; }
        CHECK_MSG(bad == 0, "n %lld: %lld of them differ from the twin (first at %lld: x 0x%08x -> 0x%04x, twin 0x%04x)",
                  (long long)lens[li], (long long)bad, (long long)first, first >= 0 ? bits(x[first]) : 0,
                  first >= 0 ? y[first] : 0, first >= 0 ? y2[first] : 0);
        CHECK_MSG(y[lens[li]] == 0xaaaa, "n %lld: wrote past the end", (long long)lens[li]);
    }
    free(x); free(y); free(y2);
}

/* n random rows of W values rounded to bf16: normal values over a wide range */
static void rand_bf16(uint16_t *y, int64_t n, ds_rng *r, float scale) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = scale * ds_rng_normal(r) * (i % 11 == 0 ? 8.0f : 1.0f);
    ds_bf16_round_row(y, x, n);
    free(x);
}

/* scores of the dispatched kernel at the current level == the twin, bit for bit */
static void scores_vs_twin(const char *what) {
    ds_rng r;
    ds_rng_seed(&r, 41);
    /* H, W; 64 x 192: the expanded prefill's block (query rows in place of heads) */
    int64_t shapes[][2] = { { 16, 576 }, { 2, 40 }, { 6, 88 }, { 10, 96 }, { 7, 576 }, { 8, 8 }, { 64, 192 } };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], W = shapes[si][1], n = 67, ls = n + 8;
        uint16_t *q = malloc((size_t)(H * W) * 2), *kv = malloc((size_t)(n * W) * 2);
        float *s = malloc((size_t)(H * ls) * sizeof(float)), *s2 = malloc((size_t)(H * ls) * sizeof(float));
        float *scr = malloc((size_t)(H * (W + 16)) * sizeof(float));
        rand_bf16(q, H * W, &r, 2.0f);
        rand_bf16(kv, n * W, &r, 1.0f);
        ds_mla_scores_bf16(s, ls, q, W, H, kv, W, n, scr);
        ds_mla_scores_bf16_ref(s2, ls, q, W, H, kv, W, n);
        int bad = 0;
        double worst = 0;
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < n; j++) {
                bad += bits(s[h * ls + j]) != bits(s2[h * ls + j]);
                /* and the twin is the dot product: fp32 sums of exact products */
                double d = 0, a = 0;
                for (int64_t k = 0; k < W; k++) {
                    double p = (double)ds_bf16_to_f32(q[h * W + k]) * ds_bf16_to_f32(kv[j * W + k]);
                    d += p;
                    a += fabs(p);
                }
                worst = ds_max_err(worst, fabs(s2[h * ls + j] - d) / a);
            }
        CHECK_MSG(bad == 0, "%s: %d of %lld bf16 scores differ from the twin (H=%lld W=%lld)", what, bad,
                  (long long)(H * n), (long long)H, (long long)W);
        CHECK_MSG(worst < 1e-6, "twin vs double dot: relative error %g (H=%lld W=%lld)", worst, (long long)H, (long long)W);
        free(q); free(kv); free(s); free(s2); free(scr);
    }
}

TEST(attn_bf16_scores_avx2_vs_twin) {
    if (!ds_ops_simd()) SKIP("no avx2");
    ds_ops_force_avx2(true);
    scores_vs_twin("AVX2");
    ds_ops_force_avx2(false);
}

TEST(attn_bf16_scores_vdpbf16ps_vs_twin) {
    if (!ds_mla_bf16_dp_in_use()) SKIP("no avx512_bf16 (or DS_ISA below avx512vnni): the vdpbf16ps kernel is not used");
    scores_vs_twin("vdpbf16ps");
}

/* the weighted sum of the dispatched kernel == its twin, bit for bit
 * (random weights in [0, 1], odd and even row counts, column tails) */
static void pv_vs_twin(const char *what) {
    ds_rng r;
    ds_rng_seed(&r, 47);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 4, 40, 32 }, { 6, 88, 72 }, { 7, 104, 96 }, { 5, 64, 64 } };   /* H, W, R */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int64_t n = 63; n <= 64; n++) {
            int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], ls = n + 8;
            uint16_t *kv = malloc((size_t)(n * W) * 2);
            float *p = malloc((size_t)(H * ls) * sizeof(float)), *al = malloc((size_t)H * sizeof(float));
            float *u = malloc((size_t)(H * R) * sizeof(float)), *u2 = malloc((size_t)(H * R) * sizeof(float));
            float *scr = malloc((size_t)(H * (n + 1)) * sizeof(float));
            rand_bf16(kv, n * W, &r, 1.0f);
            for (int64_t i = 0; i < H * ls; i++) p[i] = (float)ds_rng_uniform(&r);
            for (int64_t h = 0; h < H; h++) al[h] = h == 0 ? 0.0f : (float)ds_rng_uniform(&r);
            for (int64_t i = 0; i < H * R; i++) u[i] = u2[i] = 3 * ds_rng_normal(&r);
            ds_mla_pv_bf16(u, R, p, ls, al, H, kv, W, n, scr);
            ds_mla_pv_bf16_ref(u2, R, p, ls, al, H, kv, W, n);
            int bad = 0;
            for (int64_t i = 0; i < H * R; i++) bad += bits(u[i]) != bits(u2[i]);
            CHECK_MSG(bad == 0, "%s: %d of %lld bf16 weighted sums differ from the twin (H=%lld R=%lld n=%lld)", what, bad,
                      (long long)(H * R), (long long)H, (long long)R, (long long)n);
            free(kv); free(p); free(al); free(u); free(u2); free(scr);
        }
}

TEST(attn_bf16_pv_avx2_vs_twin) {
    if (!ds_ops_simd()) SKIP("no avx2");
    ds_ops_force_avx2(true);
    pv_vs_twin("AVX2");
    ds_ops_force_avx2(false);
}

TEST(attn_bf16_pv_vdpbf16ps_vs_twin) {
    if (!ds_mla_bf16_dp_in_use()) SKIP("no avx512_bf16 (or DS_ISA below avx512vnni): the vdpbf16ps kernel is not used");
    pv_vs_twin("vdpbf16ps");
}

/* flash decode over bf16 rows: splits of `split` rows folded in blocks of blk, merged in order */
static void flash_decode_bf16(float *out, const uint16_t *q, int64_t H, const uint16_t *kv, int64_t W, int64_t S,
                              int64_t R, int64_t split, int64_t blk, float scale) {
    int64_t ns = (S + split - 1) / split;
    float *pu = calloc((size_t)(ns * H * R), sizeof(float)), *pm = malloc((size_t)(ns * H) * sizeof(float));
    float *pl = malloc((size_t)(ns * H) * sizeof(float));
    float *sc = malloc((size_t)DS_MLA_STEP_BF16_SCRATCH(H, blk, W) * sizeof(float));
    for (int64_t k = 0; k < ns; k++) {
        for (int64_t h = 0; h < H; h++) { pm[k * H + h] = -INFINITY; pl[k * H + h] = 0; }
        for (int64_t j = k * split; j < DS_MIN(S, (k + 1) * split); j += blk)
            ds_mla_attn_step_bf16(pu + k * H * R, pm + k * H, pl + k * H, q, W, H, kv + j * W, W,
                                  DS_MIN(blk, DS_MIN(S, (k + 1) * split) - j), R, scale, sc);
    }
    for (int64_t k = 1; k < ns; k++) ds_mla_attn_merge(pu, pm, pl, pu + k * H * R, pm + k * H, pl + k * H, H, R);
    ds_mla_attn_finish(out, R, pu, pl, H, R);
    free(pu); free(pm); free(pl); free(sc);
}

/* The step vs the double-precision attention over the same values (the
 * bf16 rows and query widened: the only error is the step's fp32
 * arithmetic), at each level (generic twin, AVX2, vdpbf16ps where present);
 * one head alone gives the same bits as among H; AVX2 and vdpbf16ps agree bit for bit. */
TEST(attn_bf16_flash_decode) {
    ds_rng r;
    ds_rng_seed(&r, 43);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 4, 40, 32 }, { 6, 88, 72 }, { 7, 96, 64 } };   /* H, W, R */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], S = 301;
        uint16_t *q = malloc((size_t)(H * W) * 2), *kv = malloc((size_t)(S * W) * 2);
        float *qf = malloc((size_t)(H * W) * sizeof(float)), *kvf = malloc((size_t)(S * W) * sizeof(float));
        float *o = malloc((size_t)(H * R) * sizeof(float)), *orf = malloc((size_t)(H * R) * sizeof(float));
        float *o2 = malloc((size_t)(H * R) * sizeof(float)), *o1 = malloc((size_t)R * sizeof(float));
        rand_bf16(q, H * W, &r, 0.3f);
        rand_bf16(kv, S * W, &r, 1.0f);
        for (int64_t i = 0; i < H * W; i++) qf[i] = ds_bf16_to_f32(q[i]);
        for (int64_t i = 0; i < S * W; i++) kvf[i] = ds_bf16_to_f32(kv[i]);
        int64_t lens[] = { 1, 64, 65, 301 };
        for (int li = 0; li < 4; li++) {
            int64_t n = lens[li];
            CHECK(ds_mla_attn_ref(orf, R, qf, W, H, kvf, W, n, R, 0.07f) == 0);
            for (int lev = 0; lev < 3; lev++) {
                ds_ops_force_generic(lev == 0);
                ds_ops_force_avx2(lev == 1);
                flash_decode_bf16(o, q, H, kv, W, n, R, 100, 64, 0.07f);
                /* |Δ| <= 2^-8 Σ_j p_j |v_j| / l (the weights rounded to bf16, 8 significant bits) + fp32 rounding: per
                 * output the bound from the exact weights, with 1e-6 of the largest output */
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
                        for (int64_t j = 0; j < n; j++) b += pw[j] * fabs(kvf[j * W + c]);
                        b = b / l * 0x1p-8 + 1e-6 * amax;
                        worst = fmax(worst, fabs((double)o[h * R + c] - orf[h * R + c]) / b);
                    }
                    free(pw);
                }
                CHECK_MSG(worst <= 1.0, "bf16 flash decode (level %d, H=%lld W=%lld S=%lld): error %.3g x its bound vs "
                          "double", lev, (long long)H, (long long)W, (long long)n, worst);
                if (lev == 1) memcpy(o2, o, (size_t)(H * R) * sizeof(float));
                if (lev == 2 && ds_ops_simd())
                    CHECK_MSG(memcmp(o, o2, (size_t)(H * R) * sizeof(float)) == 0,
                              "bf16 flash decode: widest kernel differs from AVX2 (H=%lld W=%lld S=%lld)", (long long)H,
                              (long long)W, (long long)n);
                for (int64_t h = 0; h < H; h += 3) {
                    flash_decode_bf16(o1, q + h * W, 1, kv, W, n, R, 100, 64, 0.07f);
                    CHECK_MSG(memcmp(o1, o + h * R, (size_t)R * sizeof(float)) == 0,
                              "head %lld differs alone (level %d)", (long long)h, lev);
                }
            }
            ds_ops_force_generic(false);
            ds_ops_force_avx2(false);
        }
        free(q); free(kv); free(qf); free(kvf); free(o); free(orf); free(o2); free(o1);
    }
}

/* ---- the expanded prefill's bf16 operands (ds_mla_softmax_bf16,
 * ds_bf16_round_pairs, ds_mla_pv_bf16_pk): each kernel bit for bit against
 * its twin at every level, the twins against the composition they replace
 * (scale, mask, ds_softmax, ds_bf16_round_row; ds_mla_pv_bf16_ref on plain
 * rows), and a whole causal block the way mla.c runs it (keys in chunks,
 * weights from the fused softmax, values in pairs, u carried with α = 1)
 * against the path it replaced (one score call, the softmax, ds_mla_pv_bf16). */

static const char *level_name(int lev) { return lev == 0 ? "generic" : lev == 1 ? "AVX2" : "widest"; }
static void set_level(int lev) { ds_ops_force_generic(lev == 0); ds_ops_force_avx2(lev == 1); }

/* raw scores with a wide spread (some weights underflow exp's -87 cut-off) */
static void rand_scores(float *s, int64_t n, ds_rng *r) {
    for (int64_t j = 0; j < n; j++) s[j] = 40.0f * (float)ds_rng_normal(r) * (j % 7 == 0 ? 3.0f : 1.0f);
}

TEST(attn_bf16_softmax_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 53);
    int64_t cases[][2] = { { 1, 1 }, { 1, 64 }, { 7, 8 }, { 8, 8 }, { 15, 16 }, { 16, 17 }, { 33, 64 }, { 300, 301 },
                           { 301, 301 }, { 511, 576 }, { 4000, 4096 } };   /* vis, n */
    float *s = malloc(4200 * sizeof(float)), *s1 = malloc(4200 * sizeof(float)), *s2 = malloc(4200 * sizeof(float));
    uint16_t *p1 = malloc(4200 * 2), *p2 = malloc(4200 * 2), *p3 = malloc(4200 * 2);
    for (int lev = 0; lev < 3; lev++) {
        set_level(lev);
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            int64_t vis = cases[ci][0], n = cases[ci][1], n2 = n + n % 2;
            float scale = 0.0721f;
            rand_scores(s, n, &r);
            memcpy(s1, s, (size_t)n * sizeof(float));
            memcpy(s2, s, (size_t)n * sizeof(float));
            memset(p1, 0xee, 4200 * 2);
            memset(p2, 0x77, 4200 * 2);
            ds_mla_softmax_bf16(p1, s1, vis, n, scale);
            ds_mla_softmax_bf16_ref(p2, s2, vis, n, scale);
            /* the twin is the composition it stands for */
            for (int64_t j = 0; j < n; j++) s[j] = j < vis ? s[j] * scale : -INFINITY;
            ds_softmax(s, n);
            ds_bf16_round_row(p3, s, n);
            if (n % 2) p3[n] = 0;
            int64_t bad = 0, bad3 = 0, first = -1;
            for (int64_t j = 0; j < n2; j++) {
                if (p1[j] != p2[j]) { bad++; if (first < 0) first = j; }
                bad3 += p2[j] != p3[j];
            }
            CHECK_MSG(bad == 0, "%s: vis %lld n %lld: %lld bf16 weights differ from the twin (first %lld: %04x vs %04x)",
                      level_name(lev), (long long)vis, (long long)n, (long long)bad, (long long)first,
                      first >= 0 ? p1[first] : 0, first >= 0 ? p2[first] : 0);
            CHECK_MSG(bad3 == 0, "%s: vis %lld n %lld: the twin differs from softmax + rounding in %lld weights",
                      level_name(lev), (long long)vis, (long long)n, (long long)bad3);
            CHECK_MSG(p1[n2] == 0xeeee, "%s: vis %lld n %lld: wrote past n rounded up to even", level_name(lev),
                      (long long)vis, (long long)n);
        }
    }
    /* many long rows: the weights are bf16, so a sum in another order (an ulp off in 1/Σ) shows only
     * where a weight sits at a rounding boundary — rare per value, certain over 256K values */
    for (int lev = 1; lev < 3; lev++) {
        set_level(lev);
        int64_t bad = 0;
        for (int row = 0; row < 64; row++) {
            int64_t vis = 4096 - row, n = 4096;
            for (int64_t j = 0; j < n; j++) s[j] = 2.0f * (float)ds_rng_normal(&r);
            memcpy(s2, s, (size_t)n * sizeof(float));
            ds_mla_softmax_bf16(p1, s, vis, n, 0.5f);
            ds_mla_softmax_bf16_ref(p2, s2, vis, n, 0.5f);
            for (int64_t j = 0; j < n; j++) bad += p1[j] != p2[j];
        }
        CHECK_MSG(bad == 0, "%s: %lld of 64 x 4096 bf16 weights differ from the twin", level_name(lev), (long long)bad);
    }
    set_level(2);
    ds_ops_force_avx2(false);
    free(s); free(s1); free(s2); free(p1); free(p2); free(p3);
}

/* rows [0, S) of v (W values each) written by wr as [0, a) then [a, S) into
 * dst, and by its twin in one call into ref (both first filled with 0x5a):
 * true when the two buffers' nbytes agree (a row's slots must not depend on
 * the chunk it came in) */
typedef void (*row_writer)(uint16_t *, const float *, int64_t, int64_t, int64_t);
static bool split_write_matches_twin(row_writer wr, row_writer twin, uint16_t *dst, uint16_t *ref, const float *v,
                                     int64_t S, int64_t a, int64_t W, size_t nbytes) {
    memset(dst, 0x5a, nbytes);
    memset(ref, 0x5a, nbytes);
    wr(dst, v, 0, a, W);
    wr(dst, v + a * W, a, S - a, W);
    twin(ref, v, 0, S, W);
    return memcmp(dst, ref, nbytes) == 0;
}

/* slot of row j's value d in the key-transposed layout (ops.h), Wp = W rounded up to even */
static int64_t kt_slot(int64_t j, int64_t d, int64_t Wp) { return (j / 16) * 16 * Wp + (d / 2) * 32 + (j % 16) * 2 + d % 2; }

TEST(attn_bf16_round_pairs_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 59);
    int64_t Rs[] = { 128, 20, 8, 3 };
    for (int lev = 0; lev < 3; lev++) {
        set_level(lev);
        for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++) {
            int64_t R = Rs[ri], S = 37;   /* rows [0, S): written as [0, a) then [a, S), a odd or even */
            float *v = malloc((size_t)(S * R) * sizeof(float));
            uint16_t *vi = malloc((size_t)((S + 1) * R) * 2), *vr = malloc((size_t)((S + 1) * R) * 2);
            uint16_t *row = malloc((size_t)R * 2);
            for (int64_t i = 0; i < S * R; i++) v[i] = (float)ds_rng_normal(&r) * (i % 13 == 0 ? 1e-39f : 1.0f);
            for (int64_t a = 0; a <= 4; a++) {
                CHECK_MSG(split_write_matches_twin(ds_bf16_round_pairs, ds_bf16_round_pairs_ref, vi, vr, v, S, a, R,
                                                   (size_t)((S + 1) * R) * 2),
                          "%s: R %lld, split at %lld: pairs differ", level_name(lev), (long long)R, (long long)a);
                /* the layout: row j's column c at (j / 2)·2R + 2c + j % 2, each value ds_bf16_round_row's */
                int bad = 0;
                for (int64_t j = 0; j < S; j++) {
                    ds_bf16_round_row_ref(row, v + j * R, R);
                    for (int64_t c = 0; c < R; c++) bad += vr[(j / 2) * 2 * R + 2 * c + j % 2] != row[c];
                }
                CHECK_MSG(bad == 0, "R %lld: %d values not where the layout puts them", (long long)R, bad);
            }
            free(v); free(vi); free(vr); free(row);
        }
    }
    set_level(2);
    ds_ops_force_avx2(false);
}

/* ds_bf16_round_keys_t == its twin at every level (rows written in two
 * chunks, split anywhere), and the twin puts each ds_bf16_round_row value
 * where the layout says (ops.h); slots it does not own stay untouched */
TEST(attn_bf16_round_keys_t_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 71);
    int64_t Ws[] = { 192, 20, 2, 5 };
    for (int lev = 0; lev < 3; lev++) {
        set_level(lev);
        for (size_t wi = 0; wi < sizeof Ws / sizeof Ws[0]; wi++) {
            int64_t W = Ws[wi], Wp = W + W % 2, S = 83, cap = DS_KT_ROWS(S), nb = cap * Wp * 2;
            float *k = malloc((size_t)(S * W) * sizeof(float));
            uint16_t *kt = malloc((size_t)nb), *kr = malloc((size_t)nb), *row = malloc((size_t)W * 2);
            for (int64_t i = 0; i < S * W; i++) k[i] = (float)ds_rng_normal(&r) * (i % 13 == 0 ? 1e-39f : 1.0f);
            int64_t splits[] = { 0, 1, 16, 17, 64, 82 };
            for (size_t ai = 0; ai < sizeof splits / sizeof splits[0]; ai++) {
                int64_t a = splits[ai];
                CHECK_MSG(split_write_matches_twin(ds_bf16_round_keys_t, ds_bf16_round_keys_t_ref, kt, kr, k, S, a, W,
                                                   (size_t)nb),
                          "%s: W %lld, split at %lld: key layouts differ", level_name(lev), (long long)W, (long long)a);
            }
            int bad = 0, touched = 0;
            for (int64_t j = 0; j < S; j++) {
                ds_bf16_round_row_ref(row, k + j * W, W);
                for (int64_t d = 0; d < Wp; d++) {
                    uint16_t want = d < W ? row[d] : 0;
                    bad += kr[kt_slot(j, d, Wp)] != want;
                }
            }
            for (int64_t j = S; j < cap; j++)   /* rows past S: never written */
                for (int64_t d = 0; d < Wp; d++) touched += kr[kt_slot(j, d, Wp)] != 0x5a5a;
            CHECK_MSG(bad == 0, "W %lld: %d values not where the layout puts them", (long long)W, bad);
            CHECK_MSG(touched == 0, "W %lld: %d slots of rows past the end written", (long long)W, touched);
            free(k); free(kt); free(kr); free(row);
        }
    }
    set_level(2);
    ds_ops_force_avx2(false);
}

/* ds_mla_scores_bf16_kt == its twin, bit for bit, at every level, on every
 * visible entry (query rows in tiles and tails, key tails, causal blocks
 * starting anywhere); nothing written past n (the row's sentinels); the
 * unwritten rows past n in the last group hold NaN and must not leak; and
 * the twin is the dot product (fp32 sums of exact products) */
TEST(attn_bf16_scores_kt_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 73);
    int64_t Ws[] = { 192, 64, 2, 10, 5 };
    int64_t nqs[] = { 1, 5, 6, 7, 64 }, ns[] = { 1, 16, 63, 64, 65, 300 };
    for (int lev = 0; lev < 3; lev++) {
        set_level(lev);
        for (size_t wi = 0; wi < sizeof Ws / sizeof Ws[0]; wi++)
            for (size_t qi = 0; qi < sizeof nqs / sizeof nqs[0]; qi++)
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                    int64_t W = Ws[wi], Wp = W + W % 2, nq = nqs[qi], n = ns[ni], ls = n + 5;
                    int64_t vis0s[] = { 1, n - nq + 1, n, n + 100 };
                    float *kf = malloc((size_t)(n * W) * sizeof(float));
                    uint16_t *q = malloc((size_t)(nq * W) * 2), *kt = malloc((size_t)(DS_KT_ROWS(n) * Wp) * 2);
                    float *s = malloc((size_t)(nq * ls) * sizeof(float)), *s2 = malloc((size_t)(nq * ls) * sizeof(float));
                    for (int64_t i = 0; i < n * W; i++) kf[i] = (float)ds_rng_normal(&r) * (i % 11 == 0 ? 8.0f : 1.0f);
                    rand_bf16(q, nq * W, &r, 2.0f);
                    memset(kt, 0xff, (size_t)(DS_KT_ROWS(n) * Wp) * 2);   /* NaN in the rows past n */
                    ds_bf16_round_keys_t(kt, kf, 0, n, W);
                    for (size_t vi = 0; vi < sizeof vis0s / sizeof vis0s[0]; vi++) {
                        int64_t vis0 = vis0s[vi] < 1 ? 1 : vis0s[vi];
                        for (int64_t i = 0; i < nq * ls; i++) s[i] = s2[i] = -7.0f;
                        ds_mla_scores_bf16_kt(s, ls, q, W, nq, kt, W, n, vis0);
                        ds_mla_scores_bf16_kt_ref(s2, ls, q, W, nq, kt, W, n, vis0);
                        int bad = 0, past = 0;
                        double worst = 0;
                        for (int64_t i = 0; i < nq; i++) {
                            for (int64_t j = 0; j < n && j < vis0 + i; j++) {
                                bad += bits(s[i * ls + j]) != bits(s2[i * ls + j]);
                                double d = 0, a = 0;
                                for (int64_t c = 0; c < W; c++) {
                                    double p = (double)ds_bf16_to_f32(q[i * W + c]) * ds_bf16_to_f32(kt[kt_slot(j, c, Wp)]);
                                    d += p;
                                    a += fabs(p);
                                }
                                worst = ds_max_err(worst, fabs(s2[i * ls + j] - d) / a);
                            }
                            for (int64_t j = n; j < ls; j++) past += s[i * ls + j] != -7.0f;
                        }
                        CHECK_MSG(bad == 0, "%s: %d scores differ from the twin (W=%lld nq=%lld n=%lld vis0=%lld)",
                                  level_name(lev), bad, (long long)W, (long long)nq, (long long)n, (long long)vis0);
                        CHECK_MSG(past == 0, "%s: %d entries written past n (W=%lld nq=%lld n=%lld)", level_name(lev), past,
                                  (long long)W, (long long)nq, (long long)n);
                        CHECK_MSG(worst < 1e-5, "twin vs double dot: relative error %g (W=%lld)", worst, (long long)W);
                    }
                    free(kf); free(q); free(kt); free(s); free(s2);
                }
    }
    set_level(2);
    ds_ops_force_avx2(false);
}

/* ds_mla_pv_bf16_pk on prepared operands == ds_mla_pv_bf16_ref on plain ones, at every level */
TEST(attn_bf16_pv_pk_vs_twin) {
    ds_rng r;
    ds_rng_seed(&r, 61);
    int64_t shapes[][2] = { { 64, 128 }, { 7, 96 }, { 13, 64 }, { 5, 40 }, { 2, 8 }, { 3, 12 } };   /* H, R */
    int64_t ns[] = { 1, 2, 63, 64, 257 };
    for (int lev = 0; lev < 3; lev++) {
        set_level(lev);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int64_t H = shapes[si][0], R = shapes[si][1], n = ns[ni], n2 = n + n % 2, lp = n2 + 4;
                float *vf = malloc((size_t)(n * R) * sizeof(float)), *p = malloc((size_t)(H * n) * sizeof(float));
                uint16_t *kv = malloc((size_t)(n * R) * 2), *vi = malloc((size_t)(n2 * R) * 2);
                uint16_t *pb = malloc((size_t)(H * lp) * 2);
                float *al = malloc((size_t)H * sizeof(float)), *u = malloc((size_t)(H * R) * sizeof(float));
                float *u2 = malloc((size_t)(H * R) * sizeof(float)), *u3 = malloc((size_t)(H * R) * sizeof(float));
                for (int64_t i = 0; i < n * R; i++) vf[i] = (float)ds_rng_normal(&r);
                for (int64_t i = 0; i < H * n; i++) p[i] = (float)ds_rng_uniform(&r) * (i % 5 == 0 ? 0.0f : 1.0f);
                ds_bf16_round_row(kv, vf, n * R);
                memset(vi, 0xff, (size_t)(n2 * R) * 2);   /* NaN in a missing last partner: must be ignored */
                ds_bf16_round_pairs(vi, vf, 0, n, R);
                memset(pb, 0xff, (size_t)(H * lp) * 2);
                for (int64_t h = 0; h < H; h++) ds_bf16_round_row(pb + h * lp, p + h * n, n);
                for (int64_t h = 0; h < H; h++) al[h] = h % 3 == 0 ? 0.0f : (float)ds_rng_uniform(&r);
                for (int64_t i = 0; i < H * R; i++) u[i] = u2[i] = u3[i] = 3 * (float)ds_rng_normal(&r);
                ds_mla_pv_bf16_pk(u, R, pb, lp, al, H, vi, n);
                ds_mla_pv_bf16_pk_ref(u3, R, pb, lp, al, H, vi, n);
                ds_mla_pv_bf16_ref(u2, R, p, n, al, H, kv, R, n);
                int bad = 0, bad3 = 0;
                for (int64_t i = 0; i < H * R; i++) bad += bits(u[i]) != bits(u2[i]), bad3 += bits(u3[i]) != bits(u2[i]);
                CHECK_MSG(bad == 0, "%s: %d of %lld weighted sums differ from ds_mla_pv_bf16_ref (H=%lld R=%lld n=%lld)",
                          level_name(lev), bad, (long long)(H * R), (long long)H, (long long)R, (long long)n);
                CHECK_MSG(bad3 == 0, "the twin: %d of %lld differ (H=%lld R=%lld n=%lld)", bad3, (long long)(H * R),
                          (long long)H, (long long)R, (long long)n);
                free(vf); free(p); free(kv); free(vi); free(pb); free(al); free(u); free(u2); free(u3);
            }
    }
    set_level(2);
    ds_ops_force_avx2(false);
}

/* One block of the expanded bf16 prefill: nb query rows, row i seeing the
 * first vis0 + i of Sv keys; new = mla.c's expanded_bf16_block (keys
 * transposed, the fused softmax, values in pairs in chunks of 256 rows),
 * old = the plain composition (the score twin, scale + mask + ds_softmax,
 * ds_mla_pv_bf16 in one call); same bits at every level */
TEST(attn_bf16_prefill_block_same_bits) {
    ds_rng r;
    ds_rng_seed(&r, 67);
    enum { CH = 256 };
    int64_t cases[][3] = { { 64, 600, 537 }, { 64, 64, 1 }, { 13, 301, 289 }, { 64, 257, 194 } };   /* nb, Sv, vis0 */
    int64_t Dq = 192, Dv = 128;
    float scale = 0.0721f;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t nb = cases[ci][0], Sv = cases[ci][1], vis0 = cases[ci][2], Sv2 = Sv + Sv % 2;
        uint16_t *q = malloc((size_t)(nb * Dq) * 2), *v = malloc((size_t)(Sv * Dv) * 2);
        uint16_t *kt = malloc((size_t)(DS_KT_ROWS(Sv) * Dq) * 2);
        float *kf = malloc((size_t)(Sv * Dq) * sizeof(float));
        uint16_t *vi = malloc((size_t)(Sv2 * Dv) * 2), *pb = malloc((size_t)(nb * Sv2) * 2);
        float *vf = malloc((size_t)(Sv * Dv) * sizeof(float)), *sc = malloc((size_t)(nb * Sv) * sizeof(float));
        float *ker = malloc((size_t)(nb * (Dq + Sv + 17)) * sizeof(float)), *zero = calloc((size_t)nb, sizeof(float));
        float *one = malloc((size_t)nb * sizeof(float)), *uo = calloc((size_t)(nb * Dv), sizeof(float));
        float *un = calloc((size_t)(nb * Dv), sizeof(float));
        for (int64_t i = 0; i < nb; i++) one[i] = 1.0f;
        rand_bf16(q, nb * Dq, &r, 1.0f);
        for (int64_t i = 0; i < Sv * Dq; i++) kf[i] = (float)ds_rng_normal(&r);
        ds_bf16_round_keys_t(kt, kf, 0, Sv, Dq);
        for (int64_t i = 0; i < Sv * Dv; i++) vf[i] = (float)ds_rng_normal(&r);
        ds_bf16_round_row(v, vf, Sv * Dv);
        for (int lev = 0; lev < 3; lev++) {
            set_level(lev);
            /* old: the score twin, scale + mask + ds_softmax, ds_mla_pv_bf16 on fp32 weights */
            ds_mla_scores_bf16_kt_ref(sc, Sv, q, Dq, nb, kt, Dq, Sv, vis0);
            for (int64_t i = 0; i < nb; i++) {
                float *row = sc + i * Sv;
                for (int64_t j = 0; j < vis0 + i; j++) row[j] *= scale;
                for (int64_t j = vis0 + i; j < Sv; j++) row[j] = -INFINITY;
                ds_softmax(row, Sv);
            }
            memset(uo, 0, (size_t)(nb * Dv) * sizeof(float));
            ds_mla_pv_bf16(uo, Dv, sc, Sv, zero, nb, v, Dv, Sv, ker);
            /* new */
            ds_bf16_round_pairs(vi, vf, 0, Sv, Dv);
            ds_mla_scores_bf16_kt(sc, Sv, q, Dq, nb, kt, Dq, Sv, vis0);
            for (int64_t i = 0; i < nb; i++) ds_mla_softmax_bf16(pb + i * Sv2, sc + i * Sv, vis0 + i, Sv, scale);
            memset(un, 0, (size_t)(nb * Dv) * sizeof(float));
            for (int64_t j0 = 0; j0 < Sv; j0 += CH)
                ds_mla_pv_bf16_pk(un, Dv, pb + j0, Sv2, j0 ? one : zero, nb, vi + j0 * Dv, DS_MIN(CH, Sv - j0));
            int bad = 0;
            for (int64_t i = 0; i < nb * Dv; i++) bad += bits(un[i]) != bits(uo[i]);
            CHECK_MSG(bad == 0, "%s: nb %lld Sv %lld: %d of %lld outputs differ from the one-call path", level_name(lev),
                      (long long)nb, (long long)Sv, bad, (long long)(nb * Dv));
        }
        set_level(2);
        ds_ops_force_avx2(false);
        free(q); free(kt); free(kf); free(v); free(vi); free(pb); free(vf); free(sc); free(ker); free(zero); free(one); free(uo); free(un);
    }
}

/* vcvtneps2bf16 (the AVX512-BF16 softmax's rounding) == the twin on every
 * class of input: random bit patterns, ties, NaN, inf, subnormals, zeros */
TEST(attn_bf16_round_row_vcvtneps2bf16_vs_twin) {
    if (!ds_mla_bf16_dp_in_use()) SKIP("no avx512_bf16 (or DS_ISA below avx512vnni): vcvtneps2bf16 is not used");
    ds_rng r;
    ds_rng_seed(&r, 71);
    enum { N = 4099 };
    float *x = malloc(N * sizeof(float));
    uint16_t *y = malloc((N + 1) * 2), *y2 = malloc((N + 1) * 2);
    static const uint32_t special[] = { 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x00400000u, 0x80000001u, 0x7f800000u,
                                        0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f7fffffu, 0xff7fffffu,
                                        0x00000000u, 0x80000000u, 0x007fffffu, 0x00800000u, 0x3f7fffffu, 0xbf808000u,
                                        0x807fffffu, 0x7fbfffffu };
    for (int64_t i = 0; i < N; i++) {
        uint32_t u = (uint32_t)ds_rng_u64(&r);
        if (i % 5 == 0) u = (u & 0xffff0000u) | 0x8000u;           /* a tie */
        if (i % 7 == 0) u &= 0x807fffffu;                           /* subnormal or zero */
        if (i % 11 == 0) u |= 0x7f800000u;                          /* inf or NaN */
        if (i < (int64_t)(sizeof special / sizeof special[0])) u = special[i];
        memcpy(&x[i], &u, 4);
    }
    int64_t lens[] = { N, 16, 15, 1, 33 };
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        memset(y, 0xaa, (N + 1) * 2);
        ds_bf16_round_row_avx512(y, x, lens[li]);
        ds_bf16_round_row_ref(y2, x, lens[li]);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < lens[li]; i++)
            if (y[i] != y2[i]) { bad++; if (first < 0) first = i; }
        CHECK_MSG(bad == 0, "n %lld: %lld differ from the twin (first at %lld: x 0x%08x -> 0x%04x, twin 0x%04x)",
                  (long long)lens[li], (long long)bad, (long long)first, first >= 0 ? bits(x[first]) : 0,
                  first >= 0 ? y[first] : 0, first >= 0 ? y2[first] : 0);
        CHECK_MSG(y[lens[li]] == 0xaaaa, "n %lld: wrote past the end", (long long)lens[li]);
    }
    free(x); free(y); free(y2);
}
