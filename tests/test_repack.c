/*
 * test_repack.c - the x8 row-interleaved layouts (tensor/repack.h):
 * repack/unpack round trips, the AVX2 and AVX-512 VNNI kernels against the
 * reference (VNNI also bit for bit against AVX2: repack_avx512.c's core types
 * and repack_ext_avx512.c's quant_ext.h types; skipped, naming the level, on
 * CPUs without VNNI), and batch invariance of the kernels (a token's result
 * is bit-identical whatever the other tokens of the call).
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "core/thread.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"
#include "tensor/repack.h"

static const ds_dtype k_types[] = { DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q5_0, DS_DTYPE_Q4_K, DS_DTYPE_Q6_K,
                                    DS_DTYPE_Q2_K, DS_DTYPE_Q3_K, DS_DTYPE_IQ2_XXS, DS_DTYPE_IQ4_NL };
#define NT (int)(sizeof k_types / sizeof k_types[0])

/* 8 random rows of K values quantized to t (rows consecutive). */
static uint8_t *rand_rows(ds_dtype t, int64_t K, ds_rng *r, float **f_out) {
    size_t rb = ds_dtype_row_bytes(t, K);
    uint8_t *q = malloc(8 * rb);
    float *f = malloc((size_t)(8 * K) * sizeof(float));
    for (int64_t i = 0; i < 8 * K; i++) f[i] = ds_rng_normal(r) * ((i % 53) == 0 ? 6.0f : 1.0f) * (1.0f + (float)(i / K));
    if (t == DS_DTYPE_IQ2_XXS) {
        /* no quantizer (read-only type): random grid indices, signs and
         * scales, fp16 d of random size per block */
        for (size_t i = 0; i < 8 * rb; i++) q[i] = (uint8_t)ds_rng_u64(r);
        for (size_t o = 0; o < 8 * rb; o += 66) {
            uint16_t h = ds_f32_to_f16(0.01f * (1.0f + 4.0f * (float)ds_rng_uniform(r)));
            memcpy(q + o, &h, 2);
        }
    } else
        for (int i = 0; i < 8; i++) ds_quantize_row_ref(t, f + i * K, q + rb * (size_t)i, K);
    if (f_out) *f_out = f;
    else free(f);
    return q;
}

TEST(repack_roundtrip) {
    ds_rng r;
    ds_rng_seed(&r, 21);
    static const int64_t Ks[] = { 256, 512, 1536 };
    for (int k = 0; k < NT; k++) {
        ds_dtype t = k_types[k];
        for (int ki = 0; ki < 3; ki++) {
            int64_t K = Ks[ki];
            CHECK(ds_repack_supported(t, K));
            size_t bytes = 8 * ds_dtype_row_bytes(t, K);
            uint8_t *q = rand_rows(t, K, &r, NULL), *g = malloc(bytes), *back = malloc(bytes);
            /* random bytes too: every bit pattern must survive (scales of Q4_K, high bits of Q5_0/Q6_K) */
            if (ki == 2)
                for (size_t i = 0; i < bytes; i++) q[i] = (uint8_t)ds_rng_u64(&r);
            ds_repack_group(t, q, K, g);
            ds_unpack_group_ref(t, g, K, back);
            CHECK_MSG(memcmp(q, back, bytes) == 0, "%s K=%lld: repack round trip differs", ds_dtype_name(t), (long long)K);
            free(q); free(g); free(back);
        }
    }
    CHECK(!ds_repack_supported(DS_DTYPE_Q4_K, 1408));
    CHECK(!ds_repack_supported(DS_DTYPE_BF16, 256));
}

/* An x8 kernel of one ISA level: false when it has no kernel for the type. */
typedef bool (*x8_kernel)(ds_dtype, const void *, const void *const *, int, int64_t, float *);

static bool avx2_kernel(ds_dtype t, const void *g, const void *const *a, int T, int64_t K, float *out) {
    ds_gemm_x8_avx2(t, g, a, T, K, out);
    return true;
}

/* The kernel against the reference (bound: the row's Σ|w·a|), batch
 * invariance bit for bit, and, when same_as is given, bit-identity with
 * that kernel (the VNNI kernels compute the AVX2 kernels' exact integer
 * sums and the same fp32 epilogue). Returns how many types it covered. */
static int check_x8_kernel(const char *level, x8_kernel kern, x8_kernel same_as, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    static const int64_t Ks[] = { 256, 512, 1408, 2048 };
    int covered = 0;
    for (int k = 0; k < NT; k++) {
        ds_dtype t = k_types[k];
        bool any = false;
        for (int ki = 0; ki < 4; ki++) {
            int64_t K = Ks[ki];
            if (!ds_repack_supported(t, K)) continue;
            size_t bytes = 8 * ds_dtype_row_bytes(t, K), ab = ds_act_row_bytes(t, K);
            float *f;
            uint8_t *q = rand_rows(t, K, &r, &f), *g = malloc(bytes);
            /* Q8_0: the extreme code -128 too (valid in a file, never made by our quantizer) */
            if (t == DS_DTYPE_Q8_0) q[2 + 34 * 3] = 0x80;
            ds_repack_group(t, q, K, g);
            /* 6 activation rows: normal, small, large, with outliers, zero, constant */
            enum { NA = 6 };
            uint8_t *qa[NA];
            float *a = malloc((size_t)K * sizeof(float));
            for (int i = 0; i < NA; i++) {
                for (int64_t j = 0; j < K; j++) {
                    float v = ds_rng_normal(&r);
                    a[j] = i == 0 ? v : i == 1 ? v * 1e-3f : i == 2 ? v * 1e3f : i == 3 ? v * (j % 17 == 0 ? 30.0f : 1.0f)
                         : i == 4 ? 0.0f : 1.5f;
                }
                qa[i] = malloc(ab);
                ds_quantize_act_ref(t, a, qa[i], K);
            }
            float ref[8 * NA], one[8 * NA], o[8 * 4];
            for (int i = 0; i < NA; i++) {
                const void *p[1] = { qa[i] };
                ds_gemm_x8_ref(t, g, p, 1, K, ref + 8 * i);
                if (!kern(t, g, p, 1, K, one + 8 * i)) break;
                any = true;
                if (same_as && same_as(t, g, p, 1, K, o))
                    CHECK_MSG(memcmp(o, one + 8 * i, 8 * sizeof(float)) == 0, "%s K=%lld act %d: x8 %s differs from the kernel it must equal",
                              ds_dtype_name(t), (long long)K, i, level);
                for (int rr = 0; rr < 8; rr++) {
                    /* bound: the row's Σ|w·a| (from the reference dequantized row and act) */
                    float wrow[2048], arow[2048];
                    ds_dequant_row_ref(t, q + ds_dtype_row_bytes(t, K) * (size_t)rr, wrow, K);
                    const int8_t *aq = (const int8_t *)qa[i];
                    int64_t B = ds_act_kind(t) == 1 ? DS_QK : DS_QK_K;
                    const float *ad = (const float *)(aq + K);
                    double mag = 0;
                    for (int64_t j = 0; j < K; j++) {
                        arow[j] = ad[j / B] * aq[j];
                        mag += fabs((double)wrow[j] * arow[j]);
                    }
                    /* not bit-exact (double reference, float kernel in
                     * another order); measured <= 2.3e-7 Σ|w·a| (Q4_K) */
                    CHECK_MSG(fabs(ref[8 * i + rr] - one[8 * i + rr]) <= 1e-6 * mag + 1e-30,
                              "%s K=%lld act %d row %d: x8 %s %.9g vs ref %.9g", ds_dtype_name(t), (long long)K, i, rr,
                              level, one[8 * i + rr], ref[8 * i + rr]);
                }
            }
            /* batch invariance: every T and every placement gives the T=1 bits */
            for (int T = 2; any && T <= 4; T++)
                for (int s = 0; s + T <= NA; s++) {
                    const void *p[4];
                    for (int i = 0; i < T; i++) p[i] = qa[(s + i * 2) % NA];
                    kern(t, g, p, T, K, o);
                    for (int i = 0; i < T; i++)
                        CHECK_MSG(memcmp(o + 8 * i, one + 8 * ((s + i * 2) % NA), 8 * sizeof(float)) == 0,
                                  "%s K=%lld T=%d: x8 %s token %d differs from its T=1 result", ds_dtype_name(t), (long long)K, T,
                                  level, i);
                }
            for (int i = 0; i < NA; i++) free(qa[i]);
            free(a); free(f); free(q); free(g);
        }
        covered += any;
    }
    return covered;
}

TEST(repack_kernels_vs_ref) {
    if (!ds_ops_simd()) SKIP("needs avx2");
    CHECK_EQ_INT(check_x8_kernel("avx2", avx2_kernel, NULL, 22), NT);
}

/* repack_avx512.c: Q8_0, Q4_0, Q5_0, Q4_K, Q6_K (the other types belong to
 * repack_ext_avx512.c). Runs whenever the CPU has VNNI, even under
 * DS_ISA=avx2 (the kernels are called directly). */
TEST(repack_kernels_avx512vnni) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    CHECK_EQ_INT(check_x8_kernel("avx512vnni", ds_gemm_x8_avx512, avx2_kernel, 24), 5);
}

/* Bytes [lo, hi) of a block of type t are its fp16 scales (d, dmin): kept
 * when the rest of the block is overwritten with random bytes. */
static void d_bytes(ds_dtype t, size_t bb, size_t *lo, size_t *hi) {
    switch (t) {
    case DS_DTYPE_Q4_K: *lo = 0; *hi = 4; break;
    case DS_DTYPE_Q2_K: *lo = bb - 4; *hi = bb; break;
    case DS_DTYPE_Q3_K: case DS_DTYPE_Q6_K: *lo = bb - 2; *hi = bb; break;
    default: *lo = 0; *hi = 2; break;   /* Q8_0, Q4_0, Q5_0, IQ4_NL (IQ2_XXS: rand_rows's own) */
    }
}

/* Random bytes over a group's blocks (every scale, sign, high-bit and grid
 * index pattern) except each block's fp16 d (d_bytes), kept finite. */
static void randomize_keep_d(ds_dtype t, uint8_t *q, size_t bytes, ds_rng *r) {
    size_t bb = ds_dtype_block_bytes(t), lo, hi;
    d_bytes(t, bb, &lo, &hi);
    for (size_t i = 0; i < bytes; i++)
        if (i % bb < lo || i % bb >= hi) q[i] = (uint8_t)ds_rng_u64(r);
}

/* Activation row i of a pool: normal, tiny, huge, with outliers, zero or
 * constant by i % 6. */
static void act_row_by6(float *a, int64_t K, int i, ds_rng *r) {
    for (int64_t j = 0; j < K; j++) {
        float v = ds_rng_normal(r);
        a[j] = i % 6 == 0 ? v : i % 6 == 1 ? v * 1e-3f : i % 6 == 2 ? v * 1e3f : i % 6 == 3 ? v * (j % 17 == 0 ? 30.0f : 1.0f)
             : i % 6 == 4 ? 0.0f : 1.5f - (float)i;
    }
}

/* A VNNI kernel file against ds_gemm_x8_avx2: the same integer sums and
 * fp32 epilogue, so every token's result is bit-identical to the AVX2
 * kernel's (and so within the bound above of the reference, checked again
 * here), for T = 1..17 (runs of 8 tokens per weight unpack, then the tail:
 * 8+8+1, 8+5, ...) and tokens placed in several rotations. */
static void check_vnni_vs_avx2(const ds_dtype *types, int ntypes, x8_kernel kern, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    static const int64_t Ks[] = { 256, 512, 1408, 2048 };
    for (int k = 0; k < ntypes; k++) {
        ds_dtype t = types[k];
        for (int ki = 0; ki < 4; ki++) {
            int64_t K = Ks[ki];
            if (!ds_repack_supported(t, K)) continue;
            size_t bytes = 8 * ds_dtype_row_bytes(t, K), ab = ds_act_row_bytes(t, K);
            float *f;
            uint8_t *q = rand_rows(t, K, &r, &f), *g = malloc(bytes);
            /* random bytes too (every scale, sign, high-bit and grid index pattern), but keep the fp16 d finite */
            if (ki == 3 && t != DS_DTYPE_IQ2_XXS) {
                randomize_keep_d(t, q, bytes, &r);
            }
            ds_repack_group(t, q, K, g);
            enum { NA = 17 };
            uint8_t *qa[NA];
            float *a = malloc((size_t)K * sizeof(float));
            for (int i = 0; i < NA; i++) {
                act_row_by6(a, K, i, &r);
                qa[i] = malloc(ab);
                ds_quantize_act_ref(t, a, qa[i], K);
            }
            float one[8 * NA], ref[8], o2[8], o[8 * NA], wrow[2048];
            for (int i = 0; i < NA; i++) {
                const void *p[1] = { qa[i] };
                CHECK(kern(t, g, p, 1, K, one + 8 * i));
                ds_gemm_x8_avx2(t, g, p, 1, K, o2);
                ds_gemm_x8_ref(t, g, p, 1, K, ref);
                for (int rr = 0; rr < 8; rr++) {
                    CHECK_MSG(memcmp(&one[8 * i + rr], &o2[rr], sizeof(float)) == 0, "%s K=%lld act %d row %d: vnni %.9g vs avx2 %.9g",
                              ds_dtype_name(t), (long long)K, i, rr, one[8 * i + rr], o2[rr]);
                    /* the bound of repack_kernels_vs_ref: 1e-6 of the row's Σ|w·a| */
                    const int8_t *aq = (const int8_t *)qa[i];
                    int64_t B = ds_act_kind(t) == 1 ? DS_QK : DS_QK_K;
                    const float *ad = (const float *)(aq + K);
                    ds_dequant_row_ref(t, q + ds_dtype_row_bytes(t, K) * (size_t)rr, wrow, K);
                    double mag = 0;
                    for (int64_t j = 0; j < K; j++) mag += fabs((double)wrow[j] * ad[j / B] * aq[j]);
                    CHECK_MSG(fabs(ref[rr] - one[8 * i + rr]) <= 1e-6 * mag + 1e-30, "%s K=%lld act %d row %d: vnni %.9g vs ref %.9g",
                              ds_dtype_name(t), (long long)K, i, rr, one[8 * i + rr], ref[rr]);
                }
            }
            /* batch invariance: T = 2..17, tokens in every third rotation (stride 5: all distinct) */
            for (int T = 2; T <= NA; T++)
                for (int s = 0; s < NA; s += 3) {
                    const void *p[NA];
                    for (int i = 0; i < T; i++) p[i] = qa[(s + i * 5) % NA];
                    CHECK(kern(t, g, p, T, K, o));
                    for (int i = 0; i < T; i++)
                        CHECK_MSG(memcmp(o + 8 * i, one + 8 * ((s + i * 5) % NA), 8 * sizeof(float)) == 0,
                                  "%s K=%lld T=%d: vnni token %d differs from its T=1 result", ds_dtype_name(t), (long long)K, T, i);
                }
            for (int i = 0; i < NA; i++) free(qa[i]);
            free(a); free(f); free(q); free(g);
        }
    }
}

/* repack_avx512.c (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K; 1-4 tokens per unpack, 5-8
 * in its 8-token kernels) bit for bit against AVX2 for 1..17 tokens. */
TEST(repack_core_vnni_vs_avx2) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q5_0, DS_DTYPE_Q4_K, DS_DTYPE_Q6_K };
    check_vnni_vs_avx2(types, 5, ds_gemm_x8_avx512, 25);
    /* types it has no kernel for are declined (ops.c then asks repack_ext_avx512.c / AVX2) */
    float o[8];
    uint8_t z[8 * 256] = { 0 };
    const void *p[1] = { z };
    CHECK(!ds_gemm_x8_avx512(DS_DTYPE_IQ4_NL, z, p, 1, 256, o));
}

/* repack_ext_avx512.c (Q2_K, Q3_K, IQ2_XXS, IQ4_NL; 8 tokens per unpack).
 * Runs whenever the CPU has VNNI, even under DS_ISA=avx2 (called directly). */
TEST(repack_ext_vnni_vs_avx2) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q2_K, DS_DTYPE_Q3_K, DS_DTYPE_IQ2_XXS, DS_DTYPE_IQ4_NL };
    check_vnni_vs_avx2(types, 4, ds_gemm_x8_ext_avx512, 24);
    /* IQ2_XXS has two kernels (AVX512-VBMI/BITALG where the CPU has them,
     * and without): each against AVX2, bit for bit, more seeds */
    static const ds_dtype iq2[] = { DS_DTYPE_IQ2_XXS };
    int saved = ds_iq2xxs_vbmi;
    for (int v = 0; v <= 1; v++) {
        if (v && !ds_iq2xxs_vbmi_available()) { fprintf(stderr, "    (no avx512vbmi/bitalg: that IQ2_XXS kernel not run)\n"); break; }
        ds_iq2xxs_vbmi = v;
        for (uint64_t seed = 40; seed < 43; seed++) check_vnni_vs_avx2(iq2, 1, ds_gemm_x8_ext_avx512, seed);
    }
    ds_iq2xxs_vbmi = saved;
    /* types it has no kernel for are declined (the caller falls back to AVX2) */
    float o[8];
    uint8_t z[8 * 256] = { 0 };
    const void *p[1] = { z };
    CHECK(!ds_gemm_x8_ext_avx512(DS_DTYPE_Q4_K, z, p, 1, 256, o));
}

/* ds_matmul / ds_matmul_multi on a repacked weight (rows not a multiple of
 * 8, row ranges not aligned to groups): close to the reference, every
 * token bit-identical to computing it alone, and (on a VNNI CPU) the same
 * bits as the AVX2 kernels. */
TEST(repack_matmul_dispatch) {
    if (!ds_ops_simd()) SKIP("needs avx2");
    ds_rng r;
    ds_rng_seed(&r, 23);
    for (int k = 0; k < NT; k++) {
        ds_dtype t = k_types[k];
        int64_t N = 45, K = 512;  /* 5 whole groups + 5 rows */
        size_t rb = ds_dtype_row_bytes(t, K);
        float *f = malloc((size_t)(N * K) * sizeof(float));
        uint8_t *q = malloc(rb * (size_t)N), *rp = malloc(rb * (size_t)N);
        for (int64_t i = 0; i < N * K; i++) f[i] = ds_rng_normal(&r) * 0.05f;
        if (t == DS_DTYPE_IQ2_XXS)
            for (int64_t n = 0; n < N; n += 8) {   /* no quantizer: random rows (rand_rows) */
                uint8_t *rq = rand_rows(t, K, &r, NULL);
                memcpy(q + rb * (size_t)n, rq, rb * (size_t)DS_MIN(8, N - n));
                free(rq);
            }
        else
            for (int64_t n = 0; n < N; n++) ds_quantize_row_ref(t, f + n * K, q + rb * (size_t)n, K);
        for (int64_t g = 0; g < N / 8; g++) ds_repack_group(t, q + rb * 8 * (size_t)g, K, rp + rb * 8 * (size_t)g);
        memcpy(rp + rb * 40, q + rb * 40, rb * 5);
        ds_tensor w = { .name = "w", .dtype = t, .ndim = 2, .shape = { N, K }, .data = q, .nbytes = rb * (size_t)N };
        ds_tensor wr = w;
        wr.rp = rp;
        enum { T = 17 };   /* 8 + 8 + 1 tokens per unpack at VNNI, 4 x 4 + 1 at AVX2 */
        float *x = malloc((size_t)(T * K) * sizeof(float));
        float *y0 = calloc((size_t)(T * N), sizeof(float)), *y1 = calloc((size_t)(T * N), sizeof(float));
        float *y2 = calloc((size_t)(T * N), sizeof(float)), *y3 = calloc((size_t)N, sizeof(float));
        for (int64_t i = 0; i < T * K; i++) x[i] = ds_rng_normal(&r);
        ds_matmul_ref(y0, N, x, K, &w, 0, N, T);
        ds_matmul(y1, N, x, K, &wr, 0, N, T);
        /* rows [3, 45) in two jobs split at 21: groups cut in the middle */
        ds_mm_job jobs[2] = { { y2 + 3, N, x, K, &wr, 3, 18, T, false }, { y2 + 21, N, x, K, &wr, 21, N - 21, T, true } };
        ds_matmul_multi(jobs, 2);
        double mx = 0, scale = 0;
        for (int64_t i = 0; i < T * N; i++) {
            scale = fmax(scale, fabs(y0[i]));
            mx = ds_max_err(mx, fabs(y0[i] - y1[i]));
        }
        CHECK_MSG(mx <= 0.02 * scale, "%s: x8 matmul max diff %g (scale %g)", ds_dtype_name(t), mx, scale);
        if (ds_ops_has_avx512() && ds_isa_level() >= DS_ISA_AVX512_VNNI) {
            /* the VNNI kernels (8 tokens per unpack) give the AVX2 kernels' bits (4 per unpack) */
            float *y4 = calloc((size_t)(T * N), sizeof(float));
            ds_ops_force_avx2(true);
            ds_matmul(y4, N, x, K, &wr, 0, N, T);
            ds_ops_force_avx2(false);
            CHECK_MSG(memcmp(y4, y1, (size_t)(T * N) * sizeof(float)) == 0, "%s: x8 matmul at avx512vnni differs from avx2",
                      ds_dtype_name(t));
            free(y4);
        }
        for (int64_t tt = 0; tt < T; tt++) {
            ds_matmul(y3, N, x + tt * K, K, &wr, 0, N, 1);
            CHECK_MSG(memcmp(y3, y1 + tt * N, (size_t)N * sizeof(float)) == 0, "%s: token %lld differs alone vs in 17",
                      ds_dtype_name(t), (long long)tt);
            CHECK_MSG(memcmp(y3 + 3, y2 + tt * N + 3, (size_t)(N - 3) * sizeof(float)) == 0,
                      "%s: token %lld differs in the split jobs", ds_dtype_name(t), (long long)tt);
        }
        free(f); free(q); free(rp); free(x); free(y0); free(y1); free(y2); free(y3);
    }
}

/* ds_matmul_multi with many jobs of very different token counts (routed
 * experts with few tokens, a "shared" job with many: the chunks are cut by
 * rows x tokens): 2 threads give the bits of 1 thread and of each job alone. */
TEST(repack_matmul_multi_uneven_jobs) {
    if (!ds_ops_simd()) SKIP("needs avx2");
    ds_rng r;
    ds_rng_seed(&r, 77);
    ds_dtype t = DS_DTYPE_Q4_K;
    int64_t N = 45, K = 256;
    size_t rb = ds_dtype_row_bytes(t, K);
    float *f = malloc((size_t)(N * K) * sizeof(float));
    uint8_t *q = malloc(rb * (size_t)N), *rp = malloc(rb * (size_t)N);
    for (int64_t i = 0; i < N * K; i++) f[i] = ds_rng_normal(&r) * 0.05f;
    for (int64_t n = 0; n < N; n++) ds_quantize_row_ref(t, f + n * K, q + rb * (size_t)n, K);
    for (int64_t g = 0; g < N / 8; g++) ds_repack_group(t, q + rb * 8 * (size_t)g, K, rp + rb * 8 * (size_t)g);
    memcpy(rp + rb * 40, q + rb * 40, rb * 5);
    ds_tensor w = { .name = "w", .dtype = t, .ndim = 2, .shape = { N, K }, .data = q, .nbytes = rb * (size_t)N };
    w.rp = rp;
    enum { NJ = 14 };
    static const int64_t Ts[NJ] = { 1, 3, 2, 9, 1, 5, 17, 2, 1, 4, 6, 1, 2, 64 };
    int64_t off[NJ + 1] = { 0 };
    for (int j = 0; j < NJ; j++) off[j + 1] = off[j] + Ts[j];
    float *x = malloc((size_t)(off[NJ] * K) * sizeof(float));
    for (int64_t i = 0; i < off[NJ] * K; i++) x[i] = ds_rng_normal(&r);
    float *y1 = calloc((size_t)(off[NJ] * N), sizeof(float)), *y2 = calloc((size_t)(off[NJ] * N), sizeof(float));
    float *y3 = calloc((size_t)(off[NJ] * N), sizeof(float));
    ds_mm_job jobs[NJ];
    int saved = ds_threads_get();
    for (int pass = 0; pass < 2; pass++) {
        float *y = pass ? y2 : y1;
        for (int j = 0; j < NJ; j++)
            jobs[j] = (ds_mm_job){ y + off[j] * N, N, x + off[j] * K, K, &w, 0, N, Ts[j], false };
        ds_threads_set(pass ? 2 : 1);
        ds_matmul_multi(jobs, NJ);
    }
    ds_threads_set(saved);
    for (int j = 0; j < NJ; j++) ds_matmul(y3 + off[j] * N, N, x + off[j] * K, K, &w, 0, N, Ts[j]);
    CHECK_MSG(memcmp(y1, y2, (size_t)(off[NJ] * N) * sizeof(float)) == 0, "matmul_multi: 2 threads differ from 1");
    CHECK_MSG(memcmp(y1, y3, (size_t)(off[NJ] * N) * sizeof(float)) == 0, "matmul_multi: differs from the jobs alone");
    free(f); free(q); free(rp); free(x); free(y1); free(y2); free(y3);
}

/* ---- q4ktile (issue 14 item 3): whole token tiles per VNNI call ---------
 * ops.c hands repack_avx512.c the whole token tile (up to QTILE = 64) in one
 * call. For T = 9, 16, 33 and 64 tokens, placed at several offsets of a pool
 * of 64 distinct activation rows (normal, tiny, huge, outliers, zero,
 * constant; so each run of 8 mixes them), every token's 8 results must be
 * the bits of the AVX2 kernel on that token alone (the VNNI kernels keep
 * AVX2's exact integer sums and fp32 epilogue; a token's bits depend neither
 * on T nor on its place in the tile). Weights from the quantizer and random
 * bytes (every scale / min / high-bit pattern), K of 1 to 17 super-blocks. */
TEST(repack_q4ktile_whole_tiles) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q5_0, DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q6_K };
    static const int64_t Ks[] = { 256, 1408, 2048, 4352 };   /* 4352: 17 super-blocks (Q4_K's mins pass is 16) */
    static const int Ts[] = { 9, 16, 33, 64 };
    enum { NA = 64 };
    ds_rng r;
    ds_rng_seed(&r, 114);
    for (int k = 0; k < 5; k++) {
        ds_dtype t = types[k];
        for (int ki = 0; ki < 4; ki++) {
            int64_t K = Ks[ki];
            if (!ds_repack_supported(t, K)) continue;
            size_t bytes = 8 * ds_dtype_row_bytes(t, K), ab = ds_act_row_bytes(t, K);
            uint8_t *q = rand_rows(t, K, &r, NULL), *g = malloc(bytes);
            if (ki >= 2) {
                randomize_keep_d(t, q, bytes, &r);
            }
            ds_repack_group(t, q, K, g);
            uint8_t *qa[NA];
            float *a = malloc((size_t)K * sizeof(float));
            float *one = malloc(8 * NA * sizeof(float)), *o = malloc(8 * NA * sizeof(float));
            for (int i = 0; i < NA; i++) {
                act_row_by6(a, K, i, &r);
                qa[i] = malloc(ab);
                ds_quantize_act_ref(t, a, qa[i], K);
                const void *p[1] = { qa[i] };
                ds_gemm_x8_avx2(t, g, p, 1, K, one + 8 * i);
            }
            for (int ti = 0; ti < 4; ti++) {
                int T = Ts[ti];
                for (int s = 0; s < NA; s += 21) {
                    const void *p[NA];
                    for (int i = 0; i < T; i++) p[i] = qa[(s + i * 7) % NA];   /* stride 7: all distinct */
                    CHECK(ds_gemm_x8_avx512(t, g, p, T, K, o));
                    for (int i = 0; i < T; i++)
                        CHECK_MSG(memcmp(o + 8 * i, one + 8 * ((s + i * 7) % NA), 8 * sizeof(float)) == 0,
                                  "%s K=%lld T=%d offset %d: vnni token %d differs from avx2 on it alone", ds_dtype_name(t),
                                  (long long)K, T, s, i);
                }
            }
            for (int i = 0; i < NA; i++) free(qa[i]);
            free(a); free(one); free(o); free(q); free(g);
        }
    }
}

/* ---- iq2tile: repack_ext_avx512.c with whole token tiles (T > 8) ----
 * ops.c passes up to 64 tokens per call; IQ2_XXS then unpacks a chunk of
 * blocks once into a buffer and runs the tokens over it in runs of up to 8
 * (K = 2560: two chunks, the second short), the other types split the tile
 * into runs of 8. Every token of T = 9, 16, 33, 64 (tokens drawn in two
 * rotations, so each appears at several places and in several runs) must
 * give the AVX2 kernel's bits for that token alone; IQ2_XXS with and
 * without its VBMI/BITALG unpack. */
static void check_ext_tile(ds_dtype t, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    static const int64_t Ks[] = { 256, 1408, 2048, 2560 };
    enum { NA = 67 };
    for (int ki = 0; ki < 4; ki++) {
        int64_t K = Ks[ki];
        if (!ds_repack_supported(t, K)) continue;
        size_t bytes = 8 * ds_dtype_row_bytes(t, K), ab = ds_act_row_bytes(t, K);
        uint8_t *q = rand_rows(t, K, &r, NULL), *g = malloc(bytes);
        if (t != DS_DTYPE_IQ2_XXS) {   /* random bytes (every scale / index pattern), fp16 d kept finite */
            randomize_keep_d(t, q, bytes, &r);
        }
        ds_repack_group(t, q, K, g);
        uint8_t *qa[NA];
        float *a = malloc((size_t)K * sizeof(float)), *one = malloc(8 * NA * sizeof(float)), *o = malloc(8 * 64 * sizeof(float));
        for (int i = 0; i < NA; i++) {
            for (int64_t j = 0; j < K; j++) {
                float v = ds_rng_normal(&r);
                /* mostly normal rows; some with outliers, tiny, huge, zero and constant ones */
                a[j] = i % 11 == 3 ? v * (j % 17 == 0 ? 30.0f : 1.0f) : i % 11 == 5 ? v * 1e-3f : i % 11 == 7 ? v * 1e3f
                     : i % 11 == 9 ? 0.0f : i % 11 == 10 ? 1.5f - (float)i : v;
            }
            qa[i] = malloc(ab);
            ds_quantize_act_ref(t, a, qa[i], K);
            const void *p[1] = { qa[i] };
            ds_gemm_x8_avx2(t, g, p, 1, K, one + 8 * i);
        }
        static const int Ts[] = { 9, 16, 33, 64 };
        for (int ti = 0; ti < 4; ti++)
            for (int s = 0; s < 2; s++) {
                int T = Ts[ti];
                const void *p[64];
                for (int i = 0; i < T; i++) p[i] = qa[(s * 31 + i * 5) % NA];
                memset(o, 0xFF, 8 * 64 * sizeof(float));   /* NaN: a result never written fails */
                CHECK(ds_gemm_x8_ext_avx512(t, g, p, T, K, o));
                for (int i = 0; i < T; i++)
                    CHECK_MSG(memcmp(o + 8 * i, one + 8 * ((s * 31 + i * 5) % NA), 8 * sizeof(float)) == 0,
                              "%s K=%lld T=%d rotation %d: vnni token %d differs from the avx2 kernel's bits for it alone",
                              ds_dtype_name(t), (long long)K, T, s, i);
            }
        for (int i = 0; i < NA; i++) free(qa[i]);
        free(a); free(one); free(o); free(q); free(g);
    }
}

TEST(repack_ext_vnni_tile_iq2tile) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q2_K, DS_DTYPE_Q3_K, DS_DTYPE_IQ4_NL };
    for (int k = 0; k < 3; k++) check_ext_tile(types[k], 90 + (uint64_t)k);
    int saved = ds_iq2xxs_vbmi;
    for (int v = 0; v <= 1; v++) {
        if (v && !ds_iq2xxs_vbmi_available()) { fprintf(stderr, "    (no avx512vbmi/bitalg: that IQ2_XXS kernel not run)\n"); break; }
        ds_iq2xxs_vbmi = v;
        for (uint64_t seed = 95; seed < 97; seed++) check_ext_tile(DS_DTYPE_IQ2_XXS, seed);
    }
    ds_iq2xxs_vbmi = saved;
}

/* ---- q4kpp (issue 14 item 3): what prefill does around the x8 kernels ----
 * ds_gemm_x8_avx512_ld stores token t's 8 results at out + t·ldo (ops.c
 * passes rows of y, no buffer and copy): for T = 1..8, 13, 64 and ldo = 8,
 * 21, 1408, each token's results are the packed call's bits and nothing
 * between them is written. Then ds_matmul on repacked Q4_K / Q5_0 / Q6_K
 * weights with T = 150 (tiles of 64 + 64 + 22), y wider than the rows
 * (ldy > N) and a row range cut inside groups: every token gives its bits
 * alone, at 1 and 2 threads, and (at avx512vnni) the AVX2 kernels' bits. */
TEST(repack_q4kpp_strided_out) {
    if (!ds_cpu_has(DS_CPU_AVX512_VNNI) || ds_isa_detected() < DS_ISA_AVX512_VNNI)
        SKIP("needs avx512vnni: this CPU's level is %s", ds_isa_name(ds_isa_detected()));
    static const ds_dtype types[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q5_0, DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q6_K };
    static const int Ts[] = { 1, 2, 3, 4, 5, 6, 7, 8, 13, 64 };
    static const int64_t ldos[] = { 8, 21, 1408 };
    enum { NA = 64 };
    ds_rng r;
    ds_rng_seed(&r, 140);
    for (int k = 0; k < 5; k++) {
        ds_dtype t = types[k];
        int64_t K = 512;
        size_t bytes = 8 * ds_dtype_row_bytes(t, K), ab = ds_act_row_bytes(t, K);
        uint8_t *q = rand_rows(t, K, &r, NULL), *g = malloc(bytes);
        ds_repack_group(t, q, K, g);
        const void *p[NA];
        uint8_t *qa[NA];
        float *a = malloc((size_t)K * sizeof(float)), *packed = malloc(8 * NA * sizeof(float));
        float *o = malloc((size_t)(1408 * NA) * sizeof(float));
        for (int i = 0; i < NA; i++) {
            for (int64_t j = 0; j < K; j++) a[j] = ds_rng_normal(&r) * (i % 3 == 1 ? 1e-2f : 1.0f);
            qa[i] = malloc(ab);
            ds_quantize_act_ref(t, a, qa[i], K);
            p[i] = qa[i];
        }
        for (int ti = 0; ti < 10; ti++) {
            int T = Ts[ti];
            CHECK(ds_gemm_x8_avx512(t, g, p, T, K, packed));
            for (int li = 0; li < 3; li++) {
                int64_t ldo = ldos[li];
                memset(o, 0xFF, (size_t)(1408 * NA) * sizeof(float));
                CHECK(ds_gemm_x8_avx512_ld(t, g, p, T, K, o, ldo));
                int bad = 0, spill = 0;
                for (int i = 0; i < T; i++) bad += memcmp(o + ldo * i, packed + 8 * i, 8 * sizeof(float)) != 0;
                for (int64_t i = 0; i < ldo * NA; i++) {
                    uint32_t v;
                    memcpy(&v, o + i, 4);
                    bool ours = i / ldo < T && i % ldo < 8;
                    spill += !ours && v != 0xFFFFFFFFu;
                }
                CHECK_MSG(!bad && !spill, "%s T=%d ldo=%lld: %d tokens differ from the packed call, %d floats written "
                          "outside the results", ds_dtype_name(t), T, (long long)ldo, bad, spill);
            }
        }
        for (int i = 0; i < NA; i++) free(qa[i]);
        free(a); free(packed); free(o); free(q); free(g);
    }
    /* through ds_matmul: T = 150, ldy = N + 11, rows [5, 61) of 61 (7 groups + 5 tail rows) */
    static const ds_dtype mtypes[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q5_0, DS_DTYPE_Q6_K };
    for (int k = 0; k < 3; k++) {
        ds_dtype t = mtypes[k];
        int64_t N = 61, K = 512, ldy = N + 11, r0 = 5, n = N - r0;
        enum { T = 150 };
        size_t rb = ds_dtype_row_bytes(t, K);
        float *f = malloc((size_t)(N * K) * sizeof(float)), *x = malloc((size_t)(T * K) * sizeof(float));
        uint8_t *qw = malloc(rb * (size_t)N), *rp = malloc(rb * (size_t)N);
        for (int64_t i = 0; i < N * K; i++) f[i] = ds_rng_normal(&r) * 0.05f;
        for (int64_t i = 0; i < T * K; i++) x[i] = ds_rng_normal(&r);
        for (int64_t i = 0; i < N; i++) ds_quantize_row_ref(t, f + i * K, qw + rb * (size_t)i, K);
        for (int64_t gi = 0; gi < N / 8; gi++) ds_repack_group(t, qw + rb * 8 * (size_t)gi, K, rp + rb * 8 * (size_t)gi);
        memcpy(rp + rb * 56, qw + rb * 56, rb * 5);
        ds_tensor w = { .name = "w", .dtype = t, .ndim = 2, .shape = { N, K }, .data = qw, .nbytes = rb * (size_t)N };
        w.rp = rp;
        float *y[3], *one = malloc((size_t)ldy * sizeof(float));
        int saved = ds_threads_get();
        for (int v = 0; v < 3; v++) {
            y[v] = malloc((size_t)(T * ldy) * sizeof(float));
            memset(y[v], 0xFF, (size_t)(T * ldy) * sizeof(float));
            ds_threads_set(v == 1 ? 2 : 1);
            ds_ops_force_avx2(v == 2);
            ds_matmul(y[v], ldy, x, K, &w, r0, n, T);
        }
        ds_ops_force_avx2(false);
        ds_threads_set(1);   /* the tokens alone: no fork per call */
        int bad_alone = 0, bad_thr = 0, bad_avx2 = 0, spill = 0;
        for (int64_t tt = 0; tt < T; tt++) {
            ds_matmul(one, ldy, x + tt * K, K, &w, r0, n, 1);
            bad_alone += memcmp(one, y[0] + tt * ldy, (size_t)n * sizeof(float)) != 0;
            bad_thr += memcmp(y[1] + tt * ldy, y[0] + tt * ldy, (size_t)n * sizeof(float)) != 0;
            bad_avx2 += memcmp(y[2] + tt * ldy, y[0] + tt * ldy, (size_t)n * sizeof(float)) != 0;
            for (int64_t c = n; c < ldy; c++) {
                uint32_t v;
                memcpy(&v, y[0] + tt * ldy + c, 4);
                spill += v != 0xFFFFFFFFu;
            }
        }
        CHECK_MSG(!bad_alone && !bad_thr && !bad_avx2 && !spill,
                  "%s T=150: tokens differing alone %d, at 2 threads %d, from avx2 %d; %d floats written past the rows",
                  ds_dtype_name(t), bad_alone, bad_thr, bad_avx2, spill);
        ds_threads_set(saved);
        for (int v = 0; v < 3; v++) free(y[v]);
        free(one); free(f); free(x); free(qw); free(rp);
    }
}

/* The K8 activation row's pair[] (quant.h), read by repack_avx512.c's Q4_K
 * kernel for its mins: for each block b and j < 4, the low i16 is the sum
 * of q over sub-block j (32 values), the high one over sub-block j + 4,
 * recomputed here from q itself; the reference and AVX2 quantizers write
 * the same bytes (rows of normal, huge, tiny and constant values). */
TEST(repack_q4kpp_k8_pairs) {
    ds_rng r;
    ds_rng_seed(&r, 141);
    static const int64_t Ks[] = { 256, 2048, 4352 };
    for (int ki = 0; ki < 3; ki++) {
        int64_t K = Ks[ki], nb = K / 256;
        size_t ab = ds_act_row_bytes(DS_DTYPE_Q4_K, K);
        CHECK_EQ_INT((long long)ab, (long long)(K + nb * 4 + K / 16 * 2 + nb * 16));
        float *x = malloc((size_t)K * sizeof(float));
        uint8_t *a = malloc(ab), *b2 = malloc(ab);
        for (int row = 0; row < 4; row++) {
            for (int64_t i = 0; i < K; i++)
                x[i] = row == 3 ? -2.0f : ds_rng_normal(&r) * (row == 1 ? 1e4f : row == 2 ? 1e-4f : 1.0f);
            ds_quantize_act_ref(DS_DTYPE_Q4_K, x, a, K);
            const int8_t *q = (const int8_t *)a;
            const int32_t *pr = (const int32_t *)(a + K + nb * 4 + K / 16 * 2);
            int bad = 0;
            for (int64_t blk = 0; blk < nb; blk++)
                for (int j = 0; j < 4; j++) {
                    int lo = 0, hi = 0;
                    for (int i = 0; i < 32; i++) {
                        lo += q[256 * blk + 32 * j + i];
                        hi += q[256 * blk + 32 * (j + 4) + i];
                    }
                    int32_t v = pr[4 * blk + j];
                    bad += (int16_t)(v & 0xFFFF) != lo || (int16_t)((uint32_t)v >> 16) != hi;
                }
            CHECK_MSG(!bad, "K=%lld row %d: %d pair entries differ from the sub-block sums", (long long)K, row, bad);
            if (ds_ops_simd()) {
                ds_quantize_act_avx2(DS_DTYPE_Q4_K, x, b2, K);
                CHECK_MSG(memcmp(a, b2, ab) == 0, "K=%lld row %d: avx2 K8 row differs from the reference", (long long)K, row);
            }
        }
        free(x); free(a); free(b2);
    }
}

/* ds_rmsnorm runs four rows' sums side by side and scales 4 lanes at a
 * time: every row must keep the bits of ds_rmsnorm_ref (one row, scalar),
 * for T = 1..11 and 40 rows (whole fours and tails), D not a multiple of 4 too,
 * in place and not, at 1 and 2 threads (rows split between them). */
TEST(repack_q4kpp_rmsnorm_rows) {
    ds_rng r;
    ds_rng_seed(&r, 142);
    static const int64_t Ds[] = { 7, 514, 2048 };
    int saved = ds_threads_get();
    for (int di = 0; di < 3; di++) {
        int64_t D = Ds[di];
        for (int64_t ti = 1; ti <= 12; ti++) {
            int64_t T = ti <= 11 ? ti : 40;   /* 40 rows of 2048: split between 2 threads */
            size_t n = (size_t)(T * D);
            float *x = malloc(n * sizeof(float)), *w = malloc((size_t)D * sizeof(float));
            float *ref = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *yi = malloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++) x[i] = ds_rng_normal(&r) * (i % 13 == 0 ? 50.0f : 1.0f) * (float)(1 + i / (size_t)D);
            for (int64_t i = 0; i < D; i++) w[i] = 0.5f + (float)ds_rng_uniform(&r);
            ds_rmsnorm_ref(ref, x, w, T, D, 1e-6f);
            for (int nt = 1; nt <= 2; nt++) {
                ds_threads_set(nt);
                ds_rmsnorm(y, x, w, T, D, 1e-6f);
                memcpy(yi, x, n * sizeof(float));
                ds_rmsnorm(yi, yi, w, T, D, 1e-6f);
                CHECK_MSG(memcmp(y, ref, n * sizeof(float)) == 0 && memcmp(yi, ref, n * sizeof(float)) == 0,
                          "rmsnorm D=%lld T=%lld threads %d: differs from ds_rmsnorm_ref", (long long)D, (long long)T, nt);
            }
            free(x); free(w); free(ref); free(y); free(yi);
        }
    }
    ds_threads_set(saved);
}
