/*
 * test_gemv.c - the one-token AVX-512 VNNI kernels of gemv_avx512.c (Q4_K,
 * Q6_K, Q5_0, Q8_0 over x8 groups): bit for bit equal to the AVX2 x8 kernel with
 * T = 1 (and so to the VNNI x8 kernels and, through them, to every token of
 * a batch) on quantizer output and on random bytes (every scale, min and
 * high-bit pattern), for several groups per call and K up to the widest
 * rows of V2/V3 (down projections), and within the reference bound of
 * test_repack.c. Skipped, naming the level, on CPUs without VNNI.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"
#include "tensor/repack.h"

/* fp16 d (and dmin) of a block: offsets from the block start (Q4_K d, dmin
 * first; Q6_K d last; Q5_0 / Q8_0 d first) */
static bool is_scale_byte(ds_dtype t, size_t o) {
    switch (t) {
    case DS_DTYPE_Q4_K: return o < 4;
    case DS_DTYPE_Q6_K: return o >= 208;
    default: return o < 2;
    }
}

/* ng groups of 8 rows (original layout, consecutive rows): quantizer output,
 * or random bytes with finite fp16 scales of random size */
static uint8_t *make_rows(ds_dtype t, int64_t K, int64_t ng, bool random_bytes, ds_rng *r) {
    size_t rb = ds_dtype_row_bytes(t, K), bb = ds_dtype_block_bytes(t), n = rb * 8 * (size_t)ng;
    uint8_t *q = malloc(n);
    if (random_bytes) {
        for (size_t i = 0; i < n; i++) q[i] = (uint8_t)ds_rng_u64(r);
        for (size_t o = 0; o < n; o += bb)
            for (size_t k = 0; k < bb; k += 2)
                if (is_scale_byte(t, k)) {
                    uint16_t h = ds_f32_to_f16(0.01f * (0.25f + 4.0f * (float)ds_rng_uniform(r)) * (k == 2 ? 0.5f : 1.0f));
                    memcpy(q + o + k, &h, 2);
                }
    } else {
        float *f = malloc((size_t)K * sizeof(float));
        for (int64_t row = 0; row < 8 * ng; row++) {
            for (int64_t i = 0; i < K; i++) f[i] = ds_rng_normal(r) * ((i % 53) == 0 ? 6.0f : 1.0f) * (1.0f + (float)(row % 8));
            ds_quantize_row_ref(t, f, q + rb * (size_t)row, K);
        }
        free(f);
    }
    return q;
}

TEST(gemv_vnni_vs_avx2) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q6_K, DS_DTYPE_Q5_0, DS_DTYPE_Q8_0 };
    /* K-quants: 1, 2, 8, 11 (V2-Lite's 2816-wide shared down) and 72 blocks (V3's 18432);
     * Q5_0 / Q8_0: 1, 11, 44 (1408: V2-Lite's expert down) and 342 blocks (10944: its dense down) */
    static const int64_t Kk[] = { 256, 512, 2048, 2816, 18432 }, K5[] = { 32, 352, 1408, 10944, 2048 };
    ds_rng r;
    ds_rng_seed(&r, 90);
    int covered = 0;
    for (int ti = 0; ti < 4; ti++) {
        ds_dtype t = types[ti];
        for (int ki = 0; ki < 5; ki++) {
            int64_t K = ds_act_kind(t) == 1 ? K5[ki] : Kk[ki];
            CHECK(ds_gemv_x8_avx512_has(t, K));
            for (int rnd = 0; rnd < 2; rnd++) {
                const int64_t ng = K > 4096 ? 2 : 5;
                size_t rb = ds_dtype_row_bytes(t, K), gb = rb * 8, ab = ds_act_row_bytes(t, K);
                uint8_t *q = make_rows(t, K, ng, rnd == 1, &r), *g = malloc(gb * (size_t)ng);
                for (int64_t i = 0; i < ng; i++) ds_repack_group(t, q + gb * (size_t)i, K, g + gb * (size_t)i);
                /* activations: normal, tiny, huge, outliers, zero, constant, ±1 alternating (every q = ±127) */
                enum { NA = 7 };
                float *a = malloc((size_t)K * sizeof(float));
                uint8_t *qa = malloc(ab);
                float *one = malloc(sizeof(float) * 8 * (size_t)ng), *all = malloc(sizeof(float) * 8 * (size_t)ng);
                float o2[8], ref[8];
                for (int ai = 0; ai < NA; ai++) {
                    for (int64_t j = 0; j < K; j++) {
                        float v = ds_rng_normal(&r);
                        a[j] = ai == 0 ? v : ai == 1 ? v * 1e-3f : ai == 2 ? v * 1e3f : ai == 3 ? v * (j % 17 == 0 ? 30.0f : 1.0f)
                             : ai == 4 ? 0.0f : ai == 5 ? 1.5f : (j & 1 ? -1.0f : 1.0f);
                    }
                    ds_quantize_act_ref(t, a, qa, K);
                    CHECK(ds_gemv_x8_avx512(t, g, ng, qa, K, all));
                    for (int64_t i = 0; i < ng; i++) {
                        const void *p[1] = { qa };
                        const uint8_t *gi = g + gb * (size_t)i;
                        CHECK(ds_gemv_x8_avx512(t, gi, 1, qa, K, one + 8 * i));
                        ds_gemm_x8_avx2(t, gi, p, 1, K, o2);
                        CHECK_MSG(memcmp(one + 8 * i, o2, sizeof o2) == 0 && memcmp(all + 8 * i, o2, sizeof o2) == 0,
                                  "%s K=%lld %s act %d group %lld: gemv %.9g (in %lld groups %.9g) vs x8 avx2 %.9g",
                                  ds_dtype_name(t), (long long)K, rnd ? "random bytes" : "quantized", ai, (long long)i,
                                  one[8 * i], (long long)ng, all[8 * i], o2[0]);
                        if (i > 0 || K > 4096) continue;
                        /* the reference bound of test_repack.c (1e-6 of the row's Σ|w·a|) */
                        ds_gemm_x8_ref(t, gi, p, 1, K, ref);
                        const int8_t *aq = (const int8_t *)qa;
                        int64_t B = ds_act_kind(t) == 1 ? DS_QK : DS_QK_K;
                        const float *ad = (const float *)(aq + K);
                        float *wrow = malloc((size_t)K * sizeof(float));
                        for (int rr = 0; rr < 8; rr++) {
                            ds_dequant_row_ref(t, q + rb * (size_t)rr, wrow, K);
                            double mag = 0;
                            for (int64_t j = 0; j < K; j++) mag += fabs((double)wrow[j] * ad[j / B] * aq[j]);
                            CHECK_MSG(fabs(ref[rr] - one[rr]) <= 1e-6 * mag + 1e-30, "%s K=%lld act %d row %d: gemv %.9g vs ref %.9g",
                                      ds_dtype_name(t), (long long)K, ai, rr, one[rr], ref[rr]);
                        }
                        free(wrow);
                    }
                }
                free(a); free(qa); free(one); free(all); free(q); free(g);
            }
        }
        covered++;
    }
    CHECK_EQ_INT(covered, 4);
    /* types it has no kernel for are declined (ops.c then uses the x8 kernels) */
    float o[8];
    uint8_t z[8 * 272] = { 0 };
    CHECK(!ds_gemv_x8_avx512_has(DS_DTYPE_Q4_0, 256));
    CHECK(!ds_gemv_x8_avx512(DS_DTYPE_Q4_0, z, 1, z, 256, o));
    CHECK(!ds_gemv_x8_avx512_has(DS_DTYPE_Q4_K, 256 * 129));   /* past its per-call table */
}

/* ds_matmul / ds_matmul_multi with one token on a repacked weight at level
 * avx512vnni (the gemv path: runs of whole groups, groups cut by the row
 * range, the unrepacked tail rows) equal the same calls with the AVX2
 * kernels (ds_ops_force_avx2) bit for bit, and every token of a 13-token
 * call equals its one-token result. */
TEST(gemv_matmul_dispatch) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_level() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: the isa level is %s", ds_isa_name(ds_isa_level()));
    static const ds_dtype types[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q6_K, DS_DTYPE_Q5_0, DS_DTYPE_Q8_0 };
    ds_rng r;
    ds_rng_seed(&r, 91);
    for (int ti = 0; ti < 4; ti++) {
        ds_dtype t = types[ti];
        int64_t N = 45, K = 512;   /* 5 whole groups + 5 rows (not repacked) */
        size_t rb = ds_dtype_row_bytes(t, K);
        uint8_t *q = make_rows(t, K, 6, false, &r), *rp = malloc(rb * (size_t)N);
        for (int64_t g = 0; g < N / 8; g++) ds_repack_group(t, q + rb * 8 * (size_t)g, K, rp + rb * 8 * (size_t)g);
        memcpy(rp + rb * 40, q + rb * 40, rb * 5);
        ds_tensor w = { .name = "w", .dtype = t, .ndim = 2, .shape = { N, K }, .data = q, .nbytes = rb * (size_t)N, .rp = rp };
        enum { T = 13 };
        float *x = malloc((size_t)(T * K) * sizeof(float));
        for (int64_t i = 0; i < T * K; i++) x[i] = ds_rng_normal(&r);
        float *y13 = calloc((size_t)(T * N), sizeof(float));
        ds_matmul(y13, N, x, K, &w, 0, N, T);
        for (int64_t tt = 0; tt < T; tt++) {
            float ya[45], yv[45], yc[45], ym[45];
            const float *xt = x + tt * K;
            ds_ops_force_avx2(true);
            ds_matmul(ya, N, xt, K, &w, 0, N, 1);
            ds_ops_force_avx2(false);
            ds_matmul(yv, N, xt, K, &w, 0, N, 1);
            /* rows [3, 43): the first and last groups cut */
            ds_matmul(yc + 3, N, xt, K, &w, 3, 40, 1);
            /* two jobs split inside a group: rows [0, 21) and [21, 45) */
            ds_mm_job jobs[2] = { { ym, N, xt, K, &w, 0, 21, 1, false }, { ym + 21, N, xt, K, &w, 21, N - 21, 1, false } };
            ds_matmul_multi(jobs, 2);
            CHECK_MSG(memcmp(ya, yv, sizeof ya) == 0, "%s token %lld: vnni gemv differs from avx2", ds_dtype_name(t), (long long)tt);
            CHECK_MSG(memcmp(ya + 3, yc + 3, 40 * sizeof(float)) == 0, "%s token %lld: rows [3, 43) differ", ds_dtype_name(t),
                      (long long)tt);
            CHECK_MSG(memcmp(ya, ym, sizeof ya) == 0, "%s token %lld: split jobs differ", ds_dtype_name(t), (long long)tt);
            CHECK_MSG(memcmp(ya, y13 + tt * N, sizeof ya) == 0, "%s token %lld: alone vs in 13 tokens", ds_dtype_name(t),
                      (long long)tt);
        }
        free(q); free(rp); free(x); free(y13);
    }
}
