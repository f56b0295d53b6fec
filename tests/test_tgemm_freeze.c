/*
 * test_tgemm_freeze.c - the frozen-weight panel cache of the training GEMMs
 * (tr_gemm_freeze_begin/_end, tgemm.h; the cache in tgemm_avx512.c): inside
 * a freeze, x·Wᵀ and dy·W with W in the frozen range give the bits of the
 * per-call packing, fp32 and bf16, on every K block and edge shape, on one
 * or two threads; the panels really come from the cache (a change made
 * inside a freeze, against the contract, is not seen); the next freeze sees
 * the new weights; operands outside the range and the AVX2 path bypass it.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "core/thread.h"
#include "train/tgemm.h"

static void fillf(float *x, int64_t n, ds_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r);
}

/* op 't': C[M,N] = A[M,K]·Bᵀ (B: N rows of K); 'n': C = A·B (B: K rows of N); ldb = row length + 5 */
static void prod(char op, float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K, bool acc) {
    if (op == 't') tr_gemm_nt(C, N + 2, A, K + 1, B, K + 5, M, N, K, 0.7f, acc);
    else tr_gemm_nn(C, N + 2, A, K + 1, B, N + 5, M, N, K, 0.7f, acc);
}

static bool same(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

TEST(train_gemm_freeze_cache) {
    if (ds_isa_level() < DS_ISA_AVX512) SKIP("needs AVX-512 F/BW/VL/DQ (isa level %s)", ds_isa_name(ds_isa_level()));
    ds_rng r; ds_rng_seed(&r, 91);
    /* M, N, K: edge rows and columns, K across the 384 block, the model's shapes */
    const int64_t shapes[][3] = { { 1, 1, 1 }, { 7, 33, 5 }, { 13, 80, 128 }, { 256, 258, 128 }, { 32, 256, 385 },
                                  { 30, 40, 800 }, { 25, 130, 64 } };
    int threads = ds_threads_get();
    for (int th = 1; th <= 4; th++) {   /* 1, 2 threads fp32; 3, 4: the same in bf16 mode */
        ds_err e = { 0 };
        if (th > 2 && tr_gemm_set_bf16(true, &e) != 0) break;   /* no AVX512-BF16 here */
        ds_threads_set(2 - th % 2);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int o = 0; o < 2; o++) {
                char op = o ? 'n' : 't';
                int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                int64_t nb = op == 't' ? N * (K + 5) : K * (N + 5), nc = M * (N + 2), off = 11;
                float *arena = malloc((size_t)(nb + 2 * off) * sizeof(float)), *B = arena + off;
                float *A = malloc((size_t)(M * (K + 1)) * sizeof(float)), *C0 = malloc((size_t)nc * sizeof(float));
                float *Cr = malloc((size_t)nc * sizeof(float)), *C1 = malloc((size_t)nc * sizeof(float));
                float *B2 = malloc((size_t)nb * sizeof(float));
                fillf(arena, nb + 2 * off, &r); fillf(A, M * (K + 1), &r); fillf(C0, nc, &r);
                for (int acc = 0; acc < 2; acc++) {
                    /* the per-call packing: the reference */
                    memcpy(Cr, C0, (size_t)nc * sizeof(float));
                    prod(op, Cr, A, B, M, N, K, acc);
                    tr_gemm_freeze_begin(arena, nb + 2 * off);
                    for (int rep = 0; rep < 2; rep++) {   /* packs, then reuses */
                        memcpy(C1, C0, (size_t)nc * sizeof(float));
                        prod(op, C1, A, B, M, N, K, acc);
                        CHECK_MSG(same(C1, Cr, nc), "%c pass %d M %lld N %lld K %lld acc %d rep %d: frozen != per call", op, th,
                                  (long long)M, (long long)N, (long long)K, acc, rep);
                    }
                    /* breaking the promise inside the freeze: the cached panels still give the old product */
                    memcpy(B2, B, (size_t)nb * sizeof(float));
                    for (int64_t i = 0; i < nb; i++) B[i] += 1.0f;
                    memcpy(C1, C0, (size_t)nc * sizeof(float));
                    prod(op, C1, A, B, M, N, K, acc);
                    CHECK_MSG(same(C1, Cr, nc), "%c M %lld N %lld K %lld: not read from the cache", op, (long long)M,
                              (long long)N, (long long)K);
                    tr_gemm_freeze_end();
                    /* outside a freeze, and in the next one, the new weights */
                    float *Cn = malloc((size_t)nc * sizeof(float));
                    memcpy(Cn, C0, (size_t)nc * sizeof(float));
                    prod(op, Cn, A, B, M, N, K, acc);
                    CHECK_MSG(!same(Cn, Cr, nc), "%c: the changed weights give the old product", op);
                    tr_gemm_freeze_begin(arena, nb + 2 * off);
                    memcpy(C1, C0, (size_t)nc * sizeof(float));
                    prod(op, C1, A, B, M, N, K, acc);
                    tr_gemm_freeze_end();
                    CHECK_MSG(same(C1, Cn, nc), "%c M %lld N %lld K %lld: the next freeze kept stale panels", op,
                              (long long)M, (long long)N, (long long)K);
                    memcpy(B, B2, (size_t)nb * sizeof(float));
                    free(Cn);
                }
                free(arena); free(A); free(C0); free(Cr); free(C1); free(B2);
            }
        if (th > 2) tr_gemm_set_bf16(false, &e);
    }
    ds_threads_set(threads);
    tr_gemm_freeze_release();
}

/* Outside the frozen range and on the AVX2 path the cache is never used:
 * a change inside the freeze is seen at once. */
TEST(train_gemm_freeze_bypass) {
    ds_rng r; ds_rng_seed(&r, 92);
    int64_t M = 20, N = 70, K = 400, nb = N * (K + 5), nc = M * (N + 2);
    float *W = malloc((size_t)nb * sizeof(float)), *other = malloc(64 * sizeof(float));
    float *A = malloc((size_t)(M * (K + 1)) * sizeof(float)), *C1 = calloc((size_t)nc, sizeof(float));
    float *C2 = calloc((size_t)nc, sizeof(float));
    fillf(W, nb, &r); fillf(A, M * (K + 1), &r);
    for (int mode = 0; mode < 2; mode++) {   /* 0: B outside the range, 1: AVX2 kernels */
        if (mode == 1) tr_gemm_force_avx2(true);
        tr_gemm_freeze_begin(mode == 0 ? other : W, mode == 0 ? 64 : nb);
        prod('t', C1, A, W, M, N, K, false);
        for (int64_t i = 0; i < nb; i++) W[i] *= 0.5f;
        prod('t', C2, A, W, M, N, K, false);
        tr_gemm_freeze_end();
        CHECK_MSG(!same(C1, C2, nc), "mode %d: a change of B inside the freeze was not seen", mode);
        if (mode == 1) tr_gemm_force_avx2(false);
    }
    free(W); free(other); free(A); free(C1); free(C2);
    tr_gemm_freeze_release();
}
