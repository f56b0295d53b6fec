/*
 * test_ops.c - every fast kernel against its plain reference twin, dtype
 * conversions against their formulas, routing against hand-worked cases.
 */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/rng.h"
#include "core/thread.h"
#include "model/model_internal.h"
#include "model/rope.h"
#include "tensor/ops.h"

static float randn(ds_rng *r) { return ds_rng_normal(r); }

/* A random weight of dtype dt, [N, K], with FP8 block scales if needed. */
typedef struct { ds_tensor t; void *data; float *scale; } owned_tensor;

static owned_tensor make_weight(ds_dtype dt, int64_t N, int64_t K, ds_rng *r) {
    owned_tensor o;
    memset(&o, 0, sizeof o);
    o.t.name = "w";
    o.t.dtype = dt;
    o.t.ndim = 2;
    o.t.shape[0] = N;
    o.t.shape[1] = K;
    size_t n = (size_t)(N * K);
    o.data = malloc(n * ds_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = randn(r);
        switch (dt) {
        case DS_DTYPE_F32: ((float *)o.data)[i] = v; break;
        case DS_DTYPE_BF16: ((uint16_t *)o.data)[i] = ds_f32_to_bf16(v); break;
        case DS_DTYPE_F16: ((uint16_t *)o.data)[i] = ds_f32_to_f16(v); break;
        case DS_DTYPE_F8_E4M3: ((uint8_t *)o.data)[i] = ds_f32_to_fp8_e4m3(v * 100.0f); break;
        default: break;
        }
    }
    o.t.data = o.data;
    if (dt == DS_DTYPE_F8_E4M3) {
        int64_t sr = (N + 127) / 128, sc = (K + 127) / 128;
        o.scale = malloc((size_t)(sr * sc) * sizeof(float));
        for (int64_t i = 0; i < sr * sc; i++) o.scale[i] = 0.01f * (1.0f + 0.5f * (float)(i % 7));
        o.t.scale = o.scale;
        o.t.scale_rows = sr;
        o.t.scale_cols = sc;
        o.t.block_r = o.t.block_c = 128;
    }
    return o;
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double mx = 0, scale = 1e-6;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        mx = ds_max_err(mx, d);
    }
    return mx / scale;
}

TEST(ops_matmul_fast_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 1);
    ds_dtype dts[] = { DS_DTYPE_F32, DS_DTYPE_BF16, DS_DTYPE_F16, DS_DTYPE_F8_E4M3 };
    int64_t shapes[][2] = { { 37, 130 }, { 300, 257 }, { 129, 64 } };
    int64_t Ts[] = { 1, 3, 20 };
    for (int d = 0; d < 4; d++)
        for (int s = 0; s < 3; s++)
            for (int ti = 0; ti < 3; ti++) {
                int64_t N = shapes[s][0], K = shapes[s][1], T = Ts[ti];
                owned_tensor w = make_weight(dts[d], N, K, &r);
                float *x = malloc((size_t)(T * K) * sizeof(float));
                for (int64_t i = 0; i < T * K; i++) x[i] = randn(&r);
                int64_t r0 = N > 40 ? 5 : 0, n = N - r0;
                float *y = calloc((size_t)(T * n), sizeof(float)), *yr = calloc((size_t)(T * n), sizeof(float));
                ds_matmul(y, n, x, K, &w.t, r0, n, T);
                ds_matmul_ref(yr, n, x, K, &w.t, r0, n, T);
                double err = max_rel(y, yr, T * n);
                CHECK_MSG(err < 1e-5, "matmul %s N=%lld K=%lld T=%lld rel err %g", ds_dtype_name(dts[d]),
                          (long long)N, (long long)K, (long long)T, err);
                /* generic path too */
                ds_ops_force_generic(true);
                ds_matmul(y, n, x, K, &w.t, r0, n, T);
                ds_ops_force_generic(false);
                err = max_rel(y, yr, T * n);
                CHECK_MSG(err < 1e-5, "generic matmul %s rel err %g", ds_dtype_name(dts[d]), err);
                /* matmul_t: y[T, K] = x[T, n] · W[r0:r0+n] */
                float *xt = malloc((size_t)(T * n) * sizeof(float));
                for (int64_t i = 0; i < T * n; i++) xt[i] = randn(&r);
                float *z = calloc((size_t)(T * K), sizeof(float)), *zr = calloc((size_t)(T * K), sizeof(float));
                ds_matmul_t(z, K, xt, n, &w.t, r0, n, T);
                ds_matmul_t_ref(zr, K, xt, n, &w.t, r0, n, T);
                err = max_rel(z, zr, T * K);
                CHECK_MSG(err < 1e-5, "matmul_t %s rel err %g", ds_dtype_name(dts[d]), err);
                free(x); free(y); free(yr); free(xt); free(z); free(zr);
                free(w.data); free(w.scale);
            }
}

/* Batch invariance of the per-token paths (decode of many sequences at
 * once, GRPO's rollouts): F32 and BF16 rows dotted with up to 4 tokens per
 * pass (ds_dot_rows_*_avx2) give each token exactly the bits of the
 * one-token kernel (ds_dot_row), whatever the batch; ds_matmul_t's per-token
 * form (vector fmaf, ds_axpy_avx2) gives exactly the generic fmaf loop's bits. */
TEST(ops_matmul_per_token_bits_equal_one_token) {
    ds_rng r;
    ds_rng_seed(&r, 21);
    ds_dtype dts[] = { DS_DTYPE_F32, DS_DTYPE_BF16 };
    int64_t Ks[] = { 5, 8, 37, 64, 130, 257 };
    for (int d = 0; d < 2; d++)
        for (int ki = 0; ki < 6; ki++) {
            int64_t N = 19, K = Ks[ki], Tmax = 13;
            owned_tensor w = make_weight(dts[d], N, K, &r);
            float *x = malloc((size_t)(Tmax * K) * sizeof(float));
            for (int64_t i = 0; i < Tmax * K; i++) x[i] = randn(&r);
            float *one = malloc((size_t)(Tmax * N) * sizeof(float)), *y = malloc((size_t)(Tmax * N) * sizeof(float));
            for (int64_t t = 0; t < Tmax; t++)
                for (int64_t n = 0; n < N; n++) one[t * N + n] = ds_dot_row(&w.t, n, x + t * K, K);
            int bad = 0;
            for (int64_t T = 1; T < DS_TOKEN_BLOCK_MIN; T++) {   /* the per-token path of ds_matmul */
                ds_matmul(y, N, x, K, &w.t, 0, N, T);
                bad += memcmp(y, one, (size_t)(T * N) * sizeof(float)) != 0;
            }
            ds_mm_job jb = { y, N, x, K, &w.t, 0, N, Tmax, true };   /* forced per-token, T >= 8 */
            ds_matmul_multi(&jb, 1);
            bad += memcmp(y, one, (size_t)(Tmax * N) * sizeof(float)) != 0;
            CHECK_MSG(bad == 0, "per-token matmul %s K=%lld: %d batch sizes differ from one token at a time",
                      ds_dtype_name(dts[d]), (long long)K, bad);
            /* matmul_t per token: y[T, K] = x[T, N] · W */
            float *xt = malloc((size_t)(Tmax * N) * sizeof(float));
            for (int64_t i = 0; i < Tmax * N; i++) xt[i] = randn(&r);
            float *z = malloc((size_t)(Tmax * K) * sizeof(float)), *zg = malloc((size_t)(Tmax * K) * sizeof(float));
            ds_matmul_t_ex(z, K, xt, N, &w.t, 0, N, Tmax, true);
            ds_ops_force_generic(true);
            ds_matmul_t_ex(zg, K, xt, N, &w.t, 0, N, Tmax, true);
            ds_ops_force_generic(false);
            CHECK_MSG(memcmp(z, zg, (size_t)(Tmax * K) * sizeof(float)) == 0, "per-token matmul_t %s K=%lld: avx2 != fmaf loop",
                      ds_dtype_name(dts[d]), (long long)K);
            free(x); free(one); free(y); free(xt); free(z); free(zg);
            free(w.data); free(w.scale);
        }
}

TEST(ops_sgemm_fast_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 2);
    int64_t M = 33, N = 47, K = 29;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *A = malloc((size_t)(M * K) * sizeof(float)), *B = malloc((size_t)(K * N) * sizeof(float));
            float *C = malloc((size_t)(M * N) * sizeof(float)), *Cr = malloc((size_t)(M * N) * sizeof(float));
            for (int64_t i = 0; i < M * K; i++) A[i] = randn(&r);
            for (int64_t i = 0; i < K * N; i++) B[i] = randn(&r);
            for (int64_t i = 0; i < M * N; i++) C[i] = Cr[i] = randn(&r);
            int64_t lda = ta ? M : K, ldb = tb ? K : N;
            ds_sgemm(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.3f, C, N);
            ds_sgemm_ref(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.3f, Cr, N);
            CHECK_MSG(max_rel(C, Cr, M * N) < 1e-5, "sgemm ta=%d tb=%d", ta, tb);
            free(A); free(B); free(C); free(Cr);
        }
}

/* ds_attn_rows (decode attention) vs its double-precision twin; rows
 * independent of how many are computed together. */
TEST(ops_attn_rows_fast_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 9);
    int64_t W = 72, R = 64, S = 41, nq = 5, vis0 = S - nq;
    float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(nq * W) * sizeof(float));
    float *u = malloc((size_t)(nq * R) * sizeof(float)), *ur = malloc((size_t)(nq * R) * sizeof(float));
    float *u1 = malloc((size_t)R * sizeof(float)), *sc = malloc((size_t)S * sizeof(float));
    for (int64_t i = 0; i < S * W; i++) kv[i] = randn(&r);
    for (int64_t i = 0; i < nq * W; i++) q[i] = randn(&r);
    ds_attn_rows(u, R, q, W, nq, kv, W, R, vis0, 0.2f, sc);
    ds_attn_rows_ref(ur, R, q, W, nq, kv, W, R, vis0, 0.2f);
    double mx = 0;
    for (int64_t i = 0; i < nq * R; i++) mx = ds_max_err(mx, fabs((double)u[i] - ur[i]));
    CHECK_MSG(mx < 1e-5, "attn_rows max diff %g", mx);
    for (int64_t i = 0; i < nq; i++) {
        ds_attn_rows(u1, R, q + i * W, W, 1, kv, W, R, vis0 + i, 0.2f, sc);
        CHECK_MSG(memcmp(u1, u + i * R, (size_t)R * sizeof(float)) == 0, "attn_rows row %lld differs alone", (long long)i);
    }
    free(kv); free(q); free(u); free(ur); free(u1); free(sc);
}

/* Flash decode (ds_mla_attn_step / merge / finish) vs its double-precision
 * twin, for the AVX2 and generic kernels: all heads together, rows folded in
 * blocks (ragged last block), partials over splits merged in order. A
 * score's bits do not depend on the block it falls in, so the same splits
 * give the same bits for any H tiling (1 head alone == that head among 7). */
static void flash_decode(float *out, const float *q, int64_t H, const float *kv, int64_t W, int64_t S, int64_t R,
                         int64_t split, int64_t blk, float scale) {
    int64_t ns = (S + split - 1) / split;
    float *pu = calloc((size_t)(ns * H * R), sizeof(float)), *pm = malloc((size_t)(ns * H) * sizeof(float));
    float *pl = malloc((size_t)(ns * H) * sizeof(float)), *sc = malloc((size_t)DS_MLA_STEP_SCRATCH(H, blk, W) * sizeof(float));
    for (int64_t k = 0; k < ns; k++) {
        for (int64_t h = 0; h < H; h++) { pm[k * H + h] = -INFINITY; pl[k * H + h] = 0; }
        for (int64_t j = k * split; j < DS_MIN(S, (k + 1) * split); j += blk)
            ds_mla_attn_step(pu + k * H * R, pm + k * H, pl + k * H, q, W, H, kv + j * W, W,
                             DS_MIN(blk, DS_MIN(S, (k + 1) * split) - j), R, scale, sc);
    }
    for (int64_t k = 1; k < ns; k++) ds_mla_attn_merge(pu, pm, pl, pu + k * H * R, pm + k * H, pl + k * H, H, R);
    ds_mla_attn_finish(out, R, pu, pl, H, R);
    free(pu); free(pm); free(pl); free(sc);
}

TEST(ops_mla_flash_decode_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 13);
    int64_t W = 72, R = 64, Hmax = 10, S = 301;
    float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(Hmax * W) * sizeof(float));
    float *o = malloc((size_t)(Hmax * R) * sizeof(float)), *orf = malloc((size_t)(Hmax * R) * sizeof(float));
    float *o1 = malloc((size_t)R * sizeof(float));
    for (int64_t i = 0; i < S * W; i++) kv[i] = randn(&r);
    for (int64_t i = 0; i < Hmax * W; i++) q[i] = 2 * randn(&r);
    /* H = 7: the AVX2 kernel; H = 10: the AVX-512 one where the CPU has it */
    for (int64_t H = 7; H <= Hmax; H += 3)
    for (int generic = 0; generic < 2; generic++) {
        ds_ops_force_generic(generic);
        int64_t lens[] = { 1, 5, 64, 65, 300, 301 };
        for (int li = 0; li < 6; li++) {
            int64_t n = lens[li];
            CHECK(ds_mla_attn_ref(orf, R, q, W, H, kv, W, n, R, 0.15f) == 0);
            int64_t splits[][2] = { { 256, 64 }, { 64, 64 }, { 100, 7 }, { 1000, 1000 } };
            for (int si = 0; si < 4; si++) {
                flash_decode(o, q, H, kv, W, n, R, splits[si][0], splits[si][1], 0.15f);
                double mx = 0;
                for (int64_t i = 0; i < H * R; i++) mx = ds_max_err(mx, fabs((double)o[i] - orf[i]));
                CHECK_MSG(mx < 2e-5, "flash decode (H=%lld, generic=%d, S=%lld, split %lld/%lld) max diff %g",
                          (long long)H, generic, (long long)n, (long long)splits[si][0], (long long)splits[si][1], mx);
            }
            /* one head alone: the same bits as among H */
            flash_decode(o, q, H, kv, W, n, R, 256, 64, 0.15f);
            for (int64_t h = 0; h < H; h++) {
                flash_decode(o1, q + h * W, 1, kv, W, n, R, 256, 64, 0.15f);
                CHECK_MSG(memcmp(o1, o + h * R, (size_t)R * sizeof(float)) == 0, "head %lld differs alone", (long long)h);
            }
        }
    }
    ds_ops_force_generic(false);
    free(kv); free(q); free(o); free(orf); free(o1);
}

/* The AVX-512 flash-decode step (attn_avx512.c) is bit-identical to the
 * AVX2 one: even head counts around its tiles (4 head pairs, 6 rows, 64
 * columns), ragged blocks, several steps into one running partial. On a
 * CPU without AVX-512 (or with DS_ISA=avx2) it checks the AVX2 kernel against itself. */
TEST(ops_mla_flash_decode_avx512_bits) {
    if (!ds_ops_has_avx512()) printf("    (AVX-512 step not in use: no AVX-512 or DS_ISA below avx512; AVX2 vs itself)\n");
    ds_rng r;
    ds_rng_seed(&r, 29);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 2, 72, 16 }, { 6, 56, 48 }, { 10, 104, 80 }, { 8, 16, 16 }, { 8, 72, 64 } };   /* H, W, R (R <= W) */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], S = 157;
        float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(H * W) * sizeof(float));
        float *o = malloc((size_t)(H * R) * sizeof(float)), *o2 = malloc((size_t)(H * R) * sizeof(float));
        for (int64_t i = 0; i < S * W; i++) kv[i] = randn(&r);
        for (int64_t i = 0; i < H * W; i++) q[i] = 2 * randn(&r);
        int64_t blks[] = { 64, 7, 1 };
        for (int bi = 0; bi < 3; bi++) {
            ds_ops_force_avx2(false);
            flash_decode(o, q, H, kv, W, S, R, 100, blks[bi], 0.1f);
            ds_ops_force_avx2(true);
            flash_decode(o2, q, H, kv, W, S, R, 100, blks[bi], 0.1f);
            CHECK_MSG(memcmp(o, o2, (size_t)(H * R) * sizeof(float)) == 0,
                      "AVX-512 flash decode differs from AVX2 (H=%lld W=%lld R=%lld block %lld)", (long long)H,
                      (long long)W, (long long)R, (long long)blks[bi]);
        }
        ds_ops_force_avx2(false);
        free(kv); free(q); free(o); free(o2);
    }
}

/* ds_silu_mul (vector exp, parallel) vs its expf twin; an element's value
 * does not depend on where it sits in the array or on the length (the
 * MoE runs it over batches of any size: batch invariance). */
TEST(ops_silu_mul_fast_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 10);
    enum { n = 70001 };
    float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
    float *h = malloc(n * sizeof(float)), *hr = malloc(n * sizeof(float)), *h1 = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) { g[i] = 6 * randn(&r); u[i] = randn(&r); }
    g[0] = -100; g[1] = 100; g[2] = 0; g[3] = -87.5f;   /* clamped ends of exp */
    ds_silu_mul(h, g, u, n);
    ds_silu_mul_ref(hr, g, u, n);
    double mx = 0;
    int worst = 0;
    for (int i = 0; i < n; i++) {
        /* + 1e-20: silu(-100) is ~1e-42 exactly and ~1e-36 with exp clamped at 88 */
        double d = fabs((double)h[i] - hr[i]) / (fabs((double)hr[i]) + 1e-20);
        if (d > mx) { mx = d; worst = i; }
    }
    if (mx > 1e-6) printf("    silu_mul: max relative diff %.3g at g = %g\n", mx, g[worst]);
    CHECK_MSG(mx < 1e-6, "silu_mul max relative diff %g", mx);   /* exp polynomial ~2e-7 */
    const int64_t offs[][2] = { { 0, 1 }, { 3, 5 }, { 7, 9 }, { 11, 31 }, { 1000, 17 }, { 5, 40000 } };
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        int64_t o = offs[k][0], len = offs[k][1];
        ds_silu_mul(h1, g + o, u + o, len);
        CHECK_MSG(memcmp(h1, h + o, (size_t)len * sizeof(float)) == 0, "silu_mul at offset %lld length %lld differs",
                  (long long)o, (long long)len);
    }
    free(g); free(u); free(h); free(hr); free(h1);
}

/* ds_softmax (vector exp) vs its expf twin on rows of every tail length,
 * with -inf (masked) entries, large spreads, and an all-masked row. */
TEST(ops_softmax_fast_vs_ref) {
    ds_rng r;
    ds_rng_seed(&r, 11);
    float x[300], y[300];
    double mx = 0;
    for (int n = 1; n <= 300; n += (n < 20 ? 1 : 37)) {
        for (int i = 0; i < n; i++) x[i] = 8 * randn(&r);
        if (n > 3) { x[n - 1] = -INFINITY; x[1] = x[0] - 95; }   /* masked; exp underflow */
        memcpy(y, x, sizeof x);
        ds_softmax(x, n);
        ds_softmax_ref(y, n);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            mx = ds_max_err(mx, fabs((double)x[i] - y[i]));
            sum += x[i];
        }
        CHECK_MSG(fabs(sum - 1) < 1e-5, "softmax n=%d sums to %.9g", n, sum);
        /* masked: exactly 0; e^-95 or less: 0 from the vector exp, a denormal from expf (generic) */
        if (n > 3) CHECK(x[n - 1] == 0.0f && x[1] >= 0.0f && x[1] < 1e-37f);
    }
    CHECK_MSG(mx < 1e-6, "softmax max abs diff %g", mx);
    for (int i = 0; i < 11; i++) x[i] = -INFINITY;
    ds_softmax(x, 11);
    for (int i = 0; i < 11; i++) CHECK(x[i] == 0.0f);
}

TEST(ops_fp8_table_matches_formula) {
    ds_dtype_init();
    for (int b = 0; b < 256; b++) {
        float a = ds_fp8_e4m3_table[b], f = ds_fp8_e4m3_to_f32_ref((uint8_t)b);
        if (isnan(f)) CHECK(isnan(a));
        else CHECK_MSG(a == f, "code %d: %g vs %g", b, a, f);
    }
    CHECK(ds_fp8_e4m3_to_f32_ref(0x7e) == 448.0f);      /* max finite */
    CHECK(ds_fp8_e4m3_to_f32_ref(0x01) == 0x1p-9f);     /* smallest subnormal */
    CHECK(isnan(ds_fp8_e4m3_to_f32_ref(0x7f)));
    CHECK(ds_fp8_e4m3_to_f32_ref(0xb8) == -1.0f);
    /* round trip of every finite code */
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        float f = ds_fp8_e4m3_to_f32_ref((uint8_t)b);
        uint8_t back = ds_f32_to_fp8_e4m3(f);
        if (f == 0.0f) CHECK(ds_fp8_e4m3_to_f32_ref(back) == 0.0f);
        else CHECK_MSG(back == b, "fp8 round trip %d -> %g -> %d", b, f, back);
    }
    CHECK(ds_f32_to_fp8_e4m3(1e9f) == 0x7e);            /* saturates */
}

TEST(ops_half_conversions) {
    /* bf16: round to nearest even */
    CHECK(ds_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(ds_bf16_to_f32(0x3f80) == 1.0f);
    float halfway = ds_bf16_to_f32(0x3f80) + 0x1p-8f;   /* exactly between 0x3f80 and 0x3f81 */
    CHECK(ds_f32_to_bf16(halfway) == 0x3f80);
    CHECK(ds_f32_to_bf16(nextafterf(halfway, 2.0f)) == 0x3f81);
    /* f16 */
    CHECK(ds_f16_to_f32(0x3c00) == 1.0f);
    CHECK(ds_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(ds_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(ds_f16_to_f32(0x7c00)));
    for (int h = 0; h < 0x7c00; h += 7) CHECK_MSG(ds_f32_to_f16(ds_f16_to_f32((uint16_t)h)) == h, "f16 %x", h);
}

TEST(ops_rmsnorm_softmax) {
    float x[4] = { 1, 2, 3, 4 }, w[4] = { 1, 1, 2, 0.5f }, y[4];
    ds_rmsnorm(y, x, w, 1, 4, 0.0f);
    double rms = sqrt((1 + 4 + 9 + 16) / 4.0);
    CHECK_NEAR(y[0], 1 / rms, 1e-6);
    CHECK_NEAR(y[2], 6 / rms, 1e-6);
    CHECK_NEAR(y[3], 2 / rms, 1e-6);
    float s[4] = { 0, -INFINITY, 1, -INFINITY };
    ds_softmax(s, 4);
    CHECK_NEAR(s[0], 1 / (1 + exp(1.0)), 1e-6);
    CHECK(s[1] == 0.0f && s[3] == 0.0f);
    CHECK_NEAR(s[0] + s[2], 1.0, 1e-6);
    float big[2] = { 1000, 999 };
    ds_softmax(big, 2);
    CHECK(!isnan(big[0]) && big[0] > big[1]);
}

static ds_config route_cfg(ds_topk_method tm, ds_score_func sf, int64_t E, int64_t K, int64_t G, int64_t keep) {
    ds_config c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = E; c.num_experts_per_tok = K; c.n_group = G; c.topk_group = keep;
    c.topk_method = tm; c.scoring_func = sf; c.routed_scaling_factor = 1.0;
    return c;
}

TEST(ops_route_noaux_tc_masks_dropped_groups_with_minus_inf) {
    /* 4 groups of 2. Biased scores are negative in kept groups; a 0.0 mask
     * (the old HF bug) would let dropped-group experts win. */
    ds_config c = route_cfg(DS_TOPK_NOAUX_TC, DS_SCORE_SIGMOID, 8, 2, 4, 2);
    c.norm_topk_prob = true;
    c.routed_scaling_factor = 2.5;
    float logits[8] = { 2, 1, -1, -2, 0.5f, 0.4f, -3, -3 };
    float bias[8] = { -1.5f, -1.5f, -1.5f, -1.5f, -1.0f, -1.0f, -1.5f, -1.5f };
    int32_t idx[2];
    float wt[2], sc[8], tmp[16];
    ds_moe_route(&c, logits, bias, idx, wt, sc, tmp);
    /* biased choice c = s + b: c0 -0.62, c1 -0.77, c2 -1.23, c3 -1.38, c4 -0.38, c5 -0.40, c6 = c7 -1.45;
     * group top-2 sums: g0 -1.39, g1 -2.61, g2 -0.78, g3 -2.91 -> keep g2, g0 -> experts 4, 5.
     * With a 0.0 mask the dropped experts (0.0 > -0.38) would win instead. */
    CHECK_MSG(idx[0] == 4 && idx[1] == 5, "picked %d %d", idx[0], idx[1]);
    /* weights from unbiased sigmoid scores, normalized, x2.5 */
    float s4 = 1 / (1 + expf(-0.5f)), s5 = 1 / (1 + expf(-0.4f));
    CHECK_NEAR(wt[0], 2.5 * s4 / (s4 + s5), 1e-6);
    CHECK_NEAR(wt[0] + wt[1], 2.5, 1e-5);
}

TEST(ops_route_group_limited_uses_group_max) {
    /* V2: group score = max softmax score; keep 1 of 2 groups */
    ds_config c = route_cfg(DS_TOPK_GROUP_LIMITED, DS_SCORE_SOFTMAX, 4, 2, 2, 1);
    c.routed_scaling_factor = 16.0;
    float logits[4] = { 3.0f, -5.0f, 2.9f, 2.8f };  /* g0 = {3, -5}: max wins; g1 sum would be larger */
    int32_t idx[2];
    float wt[2], sc[4], tmp[8];
    ds_moe_route(&c, logits, NULL, idx, wt, sc, tmp);
    CHECK(idx[0] == 0 && idx[1] == 1);
    float z = expf(3.0f) + expf(-5.0f) + expf(2.9f) + expf(2.8f);
    CHECK_NEAR(wt[0], 16.0 * expf(3.0f) / z, 1e-5);
}

TEST(ops_route_greedy_softmax_no_renorm) {
    ds_config c = route_cfg(DS_TOPK_GREEDY, DS_SCORE_SOFTMAX, 5, 2, 1, 1);
    float logits[5] = { 0.1f, 2.0f, -1.0f, 1.5f, 0.0f };
    int32_t idx[2];
    float wt[2], sc[5], tmp[8];
    ds_moe_route(&c, logits, NULL, idx, wt, sc, tmp);
    CHECK(idx[0] == 1 && idx[1] == 3);
    CHECK(wt[0] + wt[1] < 1.0f);   /* V2-Lite: not renormalized */
    CHECK_NEAR(wt[0], sc[1], 1e-7);
}

TEST(ops_route_keeps_more_than_1024_groups) {
    /* noaux_tc, 2048 groups of 2, all kept: the result must equal greedy
     * top-K (routing once capped the kept groups at 1024, silently). The top
     * expert sits in the group ranked last (its partner's score is ~0). */
    int64_t E = 4096, G = 2048, K = 4;
    ds_config c = route_cfg(DS_TOPK_NOAUX_TC, DS_SCORE_SIGMOID, E, K, G, G);
    ds_config g = route_cfg(DS_TOPK_GREEDY, DS_SCORE_SIGMOID, E, K, 1, 1);
    float *logits = malloc((size_t)E * sizeof(float)), *sc = malloc((size_t)E * sizeof(float));
    float *tmp = malloc((size_t)(E + G) * sizeof(float));
    for (int64_t i = 0; i < E; i++) logits[i] = 1.0f;
    logits[E - 2] = 5.0f;
    logits[E - 1] = -20.0f;
    int32_t idx[4], gidx[4];
    float wt[4], gwt[4];
    ds_moe_route(&c, logits, NULL, idx, wt, sc, tmp);
    ds_moe_route(&g, logits, NULL, gidx, gwt, sc, tmp);
    CHECK(gidx[0] == E - 2);
    for (int k = 0; k < K; k++) CHECK_MSG(idx[k] == gidx[k] && wt[k] == gwt[k], "slot %d: %d vs %d", k, idx[k], gidx[k]);
    /* keeping 1500 of 2048 groups drops the last one */
    c.topk_group = 1500;
    ds_moe_route(&c, logits, NULL, idx, wt, sc, tmp);
    for (int k = 0; k < K; k++) CHECK(idx[k] < E - 2);
    free(logits); free(sc); free(tmp);
}

TEST(ops_par_for_covers_range_once) {
    static int hits[1000];
    memset(hits, 0, sizeof hits);
    struct ctx { int *h; } cx = { hits };
    void fn(void *c, int64_t a, int64_t b, int tid);
    ds_par_for(1000, 1, fn, &cx);
    for (int i = 0; i < 1000; i++) CHECK_EQ_INT(hits[i], 1);
    /* the dynamic variant: automatic chunks, explicit ones, n not a multiple of the chunk */
    const int64_t cases[][3] = { { 1000, 1, 0 }, { 999, 7, 0 }, { 1000, 1, 1 }, { 997, 3, 64 }, { 5, 100, 0 } };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memset(hits, 0, sizeof hits);
        ds_par_for_dynamic(cases[k][0], cases[k][1], cases[k][2], fn, &cx);
        int bad = 0;
        for (int i = 0; i < 1000; i++) bad += hits[i] != (i < cases[k][0]);
        CHECK_MSG(bad == 0, "par_for_dynamic(n=%lld, min=%lld, chunk=%lld): %d items not covered exactly once",
                  (long long)cases[k][0], (long long)cases[k][1], (long long)cases[k][2], bad);
    }
}
void fn(void *c, int64_t a, int64_t b, int tid) {
    (void)tid;
    int *h = *(int **)c;
    for (int64_t i = a; i < b; i++) h[i]++;
}

TEST(ops_matmul_multi_equals_separate) {
    ds_rng r;
    ds_rng_seed(&r, 9);
    owned_tensor w1 = make_weight(DS_DTYPE_BF16, 70, 96, &r), w2 = make_weight(DS_DTYPE_F8_E4M3, 150, 130, &r);
    int64_t Ts[2] = { 1, 12 };
    for (int ti = 0; ti < 2; ti++) {
        int64_t T = Ts[ti];
        float *x1 = malloc((size_t)(T * 96) * sizeof(float)), *x2 = malloc((size_t)(T * 130) * sizeof(float));
        for (int64_t i = 0; i < T * 96; i++) x1[i] = randn(&r);
        for (int64_t i = 0; i < T * 130; i++) x2[i] = randn(&r);
        float *a1 = calloc((size_t)(T * 70), 4), *a2 = calloc((size_t)(T * 150), 4);
        float *b1 = calloc((size_t)(T * 70), 4), *b2 = calloc((size_t)(T * 150), 4);
        ds_mm_job jobs[3] = { { a1, 70, x1, 96, &w1.t, 0, 70, T, false }, { a2, 150, x2, 130, &w2.t, 0, 150, T, true },
                              { a2, 150, x2, 130, &w2.t, 0, 0, T, false } /* empty job */ };
        ds_matmul_multi(jobs, 3);
        ds_matmul_ref(b1, 70, x1, 96, &w1.t, 0, 70, T);
        ds_matmul_ref(b2, 150, x2, 130, &w2.t, 0, 150, T);
        CHECK(max_rel(a1, b1, T * 70) < 1e-5);
        CHECK(max_rel(a2, b2, T * 150) < 1e-5);
        free(x1); free(x2); free(a1); free(a2); free(b1); free(b2);
    }
    free(w1.data); free(w2.data); free(w2.scale);
}

/* Core allocators: ds_alloc_huge gives zeroed, 2 MB-aligned memory for large
 * sizes (small ones fall back to ds_alloc), and an arena that uses it keeps
 * doing so after consolidating its blocks (ds_arena_reset) and ds_arena_free. */
TEST(core_alloc_huge_and_arena) {
    size_t n = ((size_t)5 << 20) + 123;
    unsigned char *p = ds_alloc_huge(n);
    CHECK(p != NULL);
    if (!p) return;
    CHECK(((uintptr_t)p & (((uintptr_t)2 << 20) - 1)) == 0);
    bool zero = true;
    for (size_t i = 0; i < n; i += 4093) zero &= p[i] == 0;
    CHECK(zero && p[n - 1] == 0);
    memset(p, 7, n);   /* all of it is writable */
    ds_free(p);
    float *s = ds_alloc_huge(100 * sizeof(float));
    CHECK(s != NULL && ((uintptr_t)s & 63) == 0 && s[99] == 0.0f);
    ds_free(s);
    ds_arena a;
    ds_arena_init(&a);
    a.huge = true;
    for (int round = 0; round < 3; round++) {
        float *x = ds_arena_alloc(&a, (size_t)3 << 20), *y = ds_arena_alloc(&a, (size_t)3 << 20);
        CHECK(x && y && x[0] == 0.0f && y[(3 << 18) - 1] == 0.0f);
        if (x && y) { x[0] = 1.0f; y[0] = 2.0f; }
        ds_arena_reset(&a);   /* round 0 needed two blocks: one block of the high water from round 1 */
        CHECK(a.huge);
    }
    ds_arena_free(&a);
    CHECK(a.huge && a.head == NULL);
}

/* KV-cache row dequantization: the AVX2 form gives the scalar twin's bits
 * (every code, q8 and fp8, a ragged last block, tiny and large scales). */
TEST(ops_kv_dequant_row_fast_vs_ref) {
    enum { W = 600 };
    uint8_t row[4 * 19 + W];
    float y[W], yr[W];
    for (int fp8 = 0; fp8 < 2; fp8++) {
        int block = fp8 ? 64 : 32, nb = (W + block - 1) / block;
        float sc[3] = { 1e-30f, 0.0123f, 3e7f };
        for (int k = 0; k < 3; k++) {
            for (int b = 0; b < nb; b++) { float d = sc[k] * (1 + b); memcpy(row + 4 * b, &d, 4); }
            for (int i = 0; i < W; i++) {
                uint8_t c = (uint8_t)(i * 37 + k);
                if (fp8 && (c & 0x7f) == 0x7f) c ^= 1;   /* no NaN codes: the cache never stores them */
                row[4 * nb + i] = c;
            }
            ds_kv_dequant_row(y, row, W, block, fp8);
            ds_kv_dequant_row_ref(yr, row, W, block, fp8);
            CHECK_MSG(memcmp(y, yr, sizeof y) == 0, "kv dequant fp8=%d scale %g differs from its twin", fp8, sc[k]);
        }
    }
}

/* ds_rope_apply_n (one cos/sin per angle for all of a token's heads, in
 * rounds of 32 angles) and ds_rope_apply (n = 1) against the plain rotation
 * per vector and pair (its own cosf / sinf of the fp32 angle): the same bits,
 * for Dr = 64 (V2/V3), 8 and 72 (a round and a tail), positions 0..5000
 * spread wide (large angles). Mutation: cs[i] taken from the next angle fails. */
TEST(rope_apply_n_bits_of_rope_apply) {
    ds_rng r;
    ds_rng_seed(&r, 77);
    static const int64_t Drs[] = { 8, 64, 72 };
    for (int di = 0; di < 3; di++) {
        int64_t Dr = Drs[di], n = 5, stride = Dr + 7;
        float inv[36], a[5 * 79], b[5 * 79];
        for (int64_t i = 0; i < Dr / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / (float)Dr) * (i % 3 ? 1.0f : 0.025f);
        for (int64_t pos = 0; pos < 5000; pos += 997) {
            float c1[5 * 79];
            for (int64_t i = 0; i < n * stride; i++) a[i] = b[i] = c1[i] = randn(&r);
            for (int64_t k = 0; k < n; k++)
                for (int64_t i = 0; i < Dr / 2; i++) {
                    float ang = (float)pos * inv[i], cs = cosf(ang), sn = sinf(ang), *p = a + k * stride + 2 * i;
                    float x0 = p[0], x1 = p[1];
                    p[0] = x0 * cs - x1 * sn;
                    p[1] = x1 * cs + x0 * sn;
                }
            ds_rope_apply_n(b, n, stride, Dr, inv, pos);
            for (int64_t k = 0; k < n; k++) ds_rope_apply(c1 + k * stride, Dr, inv, pos);
            CHECK_MSG(memcmp(a, b, (size_t)(n * stride) * sizeof(float)) == 0 && memcmp(a, c1, (size_t)(n * stride) * sizeof(float)) == 0,
                      "rope Dr=%lld pos=%lld differs", (long long)Dr, (long long)pos);
        }
    }
}

/* ds_add_rows (rows split across threads) against the plain loop, at 1 and
 * 2 threads, 1 row (the caller alone) and 40 rows of 2048 (split). */
TEST(add_rows_vs_loop) {
    ds_rng r;
    ds_rng_seed(&r, 78);
    int saved = ds_threads_get();
    static const int64_t Ts[] = { 1, 40 };
    for (int ti = 0; ti < 2; ti++)
        for (int nt = 1; nt <= 2; nt++) {
            int64_t T = Ts[ti], D = 2048, n = T * D;
            float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
            float *ref = malloc((size_t)n * sizeof(float));
            for (int64_t i = 0; i < n; i++) x[i] = randn(&r), y[i] = randn(&r), ref[i] = x[i] + y[i];
            ds_threads_set(nt);
            ds_add_rows(x, y, T, D);
            CHECK_MSG(memcmp(x, ref, (size_t)n * sizeof(float)) == 0, "add_rows T=%lld threads %d", (long long)T, nt);
            free(x); free(y); free(ref);
        }
    ds_threads_set(saved);
}

/* Flash decode's head groups (mla.c: a short decode row's heads split over
 * the threads in groups of a multiple of 8): a step over heads [h0, h1)
 * alone gives those heads' bits of the step over all H, at V3/V2-Lite
 * shapes and at each level (generic, AVX2, AVX-512 where present), over
 * several steps into one running partial. */
TEST(ops_mla_flash_decode_head_groups_bits) {
    ds_rng r;
    ds_rng_seed(&r, 31);
    int64_t shapes[][3] = { { 16, 576, 512 }, { 32, 576, 512 }, { 24, 72, 64 } };   /* H, W, R */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], W = shapes[si][1], R = shapes[si][2], S = 150, blk = 64;
        float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(H * W) * sizeof(float));
        float *u = malloc((size_t)(2 * H * R) * sizeof(float)), *ml = malloc((size_t)(4 * H) * sizeof(float));
        float *sc = malloc((size_t)DS_MLA_STEP_SCRATCH(H, blk, W) * sizeof(float));
        for (int64_t i = 0; i < S * W; i++) kv[i] = randn(&r);
        for (int64_t i = 0; i < H * W; i++) q[i] = 2 * randn(&r);
        for (int lev = 0; lev < 3; lev++) {
            ds_ops_force_generic(lev == 0);
            ds_ops_force_avx2(lev == 1);
            for (int64_t n = 1; n <= S; n += 37) {
                /* [0, H): all heads; [H, 2H): groups of 8 */
                for (int64_t h = 0; h < 2 * H; h++) { ml[h] = -INFINITY; ml[2 * H + h] = 0; }
                memset(u, 0, (size_t)(2 * H * R) * sizeof(float));
                for (int64_t j = 0; j < n; j += blk) {
                    int64_t nb = DS_MIN(blk, n - j);
                    ds_mla_attn_step(u, ml, ml + 2 * H, q, W, H, kv + j * W, W, nb, R, 0.1f, sc);
                    for (int64_t h0 = 0; h0 < H; h0 += 8)
                        ds_mla_attn_step(u + (H + h0) * R, ml + H + h0, ml + 3 * H + h0, q + h0 * W, W, 8, kv + j * W, W,
                                         nb, R, 0.1f, sc);
                }
                CHECK_MSG(memcmp(u, u + H * R, (size_t)(H * R) * sizeof(float)) == 0 &&
                          memcmp(ml, ml + H, (size_t)H * sizeof(float)) == 0 &&
                          memcmp(ml + 2 * H, ml + 3 * H, (size_t)H * sizeof(float)) == 0,
                          "H=%lld W=%lld level %d n=%lld: heads in groups of 8 differ from all heads at once",
                          (long long)H, (long long)W, lev, (long long)n);
            }
        }
        ds_ops_force_generic(false);
        ds_ops_force_avx2(false);
        free(kv); free(q); free(u); free(ml); free(sc);
    }
}

/* The decode pass profile (bench --passes): one-token passes of ds_matmul and
 * ds_matmul_multi are counted with their weight bytes, by type and size;
 * passes of two tokens and passes outside start/stop are not. */
TEST(ops_pass_profile_counts) {
    enum { N = 64, K = 256 };
    float *wd = calloc(N * K, sizeof(float)), *x = calloc(2 * K, sizeof(float)), *y = calloc(4 * N, sizeof(float));
    ds_tensor w = { .name = "w", .dtype = DS_DTYPE_F32, .ndim = 2, .shape = { N, K }, .data = wd, .nbytes = N * K * 4 };
    ds_pass_stat st[DS_DTYPE_COUNT][DS_PASS_SIZES];
    ds_matmul(y, N, x, K, &w, 0, N, 1);                      /* before start */
    ds_pass_profile_start();
    for (int i = 0; i < 3; i++) ds_matmul(y, N, x, K, &w, 0, N, 1);
    ds_matmul(y, N, x, K, &w, 0, N, 2);                      /* two tokens */
    ds_mm_job jobs[2] = { { y, N, x, K, &w, 0, N, 1, false }, { y + N, N, x, K, &w, 0, 32, 1, false } };
    ds_matmul_multi(jobs, 2);
    ds_mm_job two[1] = { { y, N, x, K, &w, 0, N, 2, false } };
    ds_matmul_multi(two, 1);                                 /* two tokens */
    ds_pass_profile_stop(st);
    ds_matmul(y, N, x, K, &w, 0, N, 1);                      /* after stop */
    int64_t passes = 0;
    for (int d = 0; d < DS_DTYPE_COUNT; d++)
        for (int k = 0; k < DS_PASS_SIZES; k++) passes += st[d][k].passes;
    CHECK_EQ_INT(passes, 4);
    CHECK_EQ_INT(st[DS_DTYPE_F32][0].passes, 4);
    CHECK(st[DS_DTYPE_F32][0].bytes == 3.0 * N * K * 4 + (double)N * K * 4 + 32.0 * K * 4);
    CHECK(st[DS_DTYPE_F32][0].seconds > 0);
    ds_pass_profile_start();                                 /* zeroes */
    ds_pass_profile_stop(st);
    CHECK_EQ_INT(st[DS_DTYPE_F32][0].passes, 0);
    free(wd); free(x); free(y);
}
