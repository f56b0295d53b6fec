/*
 * test_train_bf16.c - the training GEMMs' wide paths (src/train/tgemm_avx512.c):
 * the AVX-512 fp32 tiles give the AVX2 kernel's bits; bf16 mode equals its
 * plain-C twin (tgemm_ref.c) bit for bit, is thread- and batch-invariant,
 * reads nothing outside the causal band, and a whole training step in
 * bf16 stays close to fp32. Each test is skipped, naming the missing CPU
 * flag, where the CPU (or DS_ISA) lacks it.
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "core/thread.h"
#include "train/tgemm.h"
#include "train/tmodel.h"

static void fillr(float *x, int64_t n, ds_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r);
}

static const int64_t k_shapes[][3] = { { 1, 1, 1 },     { 5, 7, 3 },    { 6, 16, 8 },   { 13, 33, 300 },
                                       { 64, 80, 258 }, { 7, 258, 17 }, { 130, 48, 513 }, { 36, 64, 1000 },
                                       { 25, 130, 129 }, { 30, 40, 2100 }, { 12, 32, 385 } };

/* One tr_gemm_* call (op 't' nt, 'n' nn, 'T' tn) on strided operands. */
static void call(char op, float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M,
                 int64_t N, int64_t K, float alpha, bool acc) {
    if (op == 't') tr_gemm_nt(C, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
    else if (op == 'n') tr_gemm_nn(C, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
    else tr_gemm_tn(C, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
}

/* Runs every shape x op x acc: fn fills C1 (the path under test) and C2 (the
 * reference) from the same inputs; the M x N blocks must be identical and
 * the padding columns untouched. */
typedef void (*pair_fn)(char op, float *C1, float *C2, int64_t ldc, const float *A, int64_t lda, const float *B,
                        int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc);
static void all_shapes_identical(pair_fn fn, const char *what) {
    ds_rng r; ds_rng_seed(&r, 71);
    int threads = ds_threads_get();
    ds_threads_set(2);
    const char ops[] = { 't', 'n', 'T' };
    for (size_t s = 0; s < sizeof k_shapes / sizeof k_shapes[0]; s++)
        for (int o = 0; o < 3; o++)
            for (int acc = 0; acc < 2; acc++) {
                int64_t M = k_shapes[s][0], N = k_shapes[s][1], K = k_shapes[s][2], pad = 3;
                char op = ops[o];
                bool ta = op == 'T', tb = op == 't';
                int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
                int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
                float *A = malloc((size_t)na * 4), *B = malloc((size_t)nb * 4);
                float *C1 = malloc((size_t)nc * 4), *C2 = malloc((size_t)nc * 4), *C0 = malloc((size_t)nc * 4);
                fillr(A, na, &r); fillr(B, nb, &r); fillr(C0, nc, &r);
                memcpy(C1, C0, (size_t)nc * 4);
                memcpy(C2, C0, (size_t)nc * 4);
                fn(op, C1, C2, ldc, A, lda, B, ldb, M, N, K, acc);
                int64_t bad = 0, first = -1;
                double md = 0;
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        int64_t x = i * ldc + j;
                        if (j >= N) { CHECK_MSG(C1[x] == C0[x], "%s %c: wrote padding column %lld", what, op, (long long)j); continue; }
                        if (memcmp(&C1[x], &C2[x], 4)) { if (first < 0) first = x; bad++; }
                        md = fmax(md, fabs((double)C1[x] - C2[x]));
                    }
                CHECK_MSG(bad == 0, "%s %c acc %d M %lld N %lld K %lld: %lld of %lld differ (first at %lld: %.9g vs %.9g; max %g)",
                          what, op, acc, (long long)M, (long long)N, (long long)K, (long long)bad, (long long)(M * N),
                          (long long)first, first >= 0 ? C1[first] : 0, first >= 0 ? C2[first] : 0, md);
                free(A); free(B); free(C1); free(C2); free(C0);
            }
    ds_threads_set(threads);
}

static void avx512_vs_avx2(char op, float *C1, float *C2, int64_t ldc, const float *A, int64_t lda, const float *B,
                           int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc) {
    call(op, C1, ldc, A, lda, B, ldb, M, N, K, 0.7f, acc);
    tr_gemm_force_avx2(true);
    call(op, C2, ldc, A, lda, B, ldb, M, N, K, 0.7f, acc);
    tr_gemm_force_avx2(false);
}

/* The 6x32 AVX-512 tiles sum in the AVX2 kernel's order: the same bits. */
TEST(train_gemm_avx512_matches_avx2) {
    if (ds_isa_level() < DS_ISA_AVX512) SKIP("needs AVX-512 F/BW/VL/DQ (isa level %s)", ds_isa_name(ds_isa_level()));
    all_shapes_identical(avx512_vs_avx2, "avx512 vs avx2");
}

static void bf16_vs_twin(char op, float *C1, float *C2, int64_t ldc, const float *A, int64_t lda, const float *B,
                         int64_t ldb, int64_t M, int64_t N, int64_t K, bool acc) {
    ds_err e = { 0 };
    CHECK(tr_gemm_set_bf16(true, &e) == 0);
    call(op, C1, ldc, A, lda, B, ldb, M, N, K, 0.7f, acc);
    tr_gemm_set_bf16(false, &e);
    tr_gemm_bf16_ref(op, false, C2, ldc, A, lda, B, ldb, M, N, K, 0.7f, acc);
}

static bool bf16_skip(void) {
    ds_err e = { 0 };
    if (tr_gemm_set_bf16(true, &e) == 0) { tr_gemm_set_bf16(false, &e); return false; }
    ds_test_skip("needs avx512_bf16 at isa level avx512vnni+ (isa level %s%s)", ds_isa_name(ds_isa_level()),
                 ds_cpu_has(DS_CPU_AVX512_BF16) ? "" : ", flag absent");
    return true;
}

/* bf16 mode = the plain-C twin (bf16 rounding, vdpbf16ps's order), bit for bit. */
TEST(train_gemm_bf16_matches_twin) {
    if (bf16_skip()) return;
    all_shapes_identical(bf16_vs_twin, "bf16 vs twin");
}

/* The twin's rounding: ties to even, NaN kept, denormals to zero, and the
 * GEMM really rounds (a product that fp32 resolves and bf16 does not). */
TEST(train_bf16_round) {
    CHECK(tr_bf16_round(1.0f) == 1.0f);
    CHECK(tr_bf16_round(1.0f + 1.0f / 256) == 1.0f);                          /* tie -> even (down) */
    CHECK(tr_bf16_round(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256);             /* tie -> even (up) */
    CHECK(tr_bf16_round(1.0f + 1.0f / 256 + 1.0f / 65536) == 1.0f + 2.0f / 256);
    CHECK(tr_bf16_round(-3.0f) == -3.0f);
    CHECK(isnan(tr_bf16_round(NAN)));
    CHECK(tr_bf16_round(1e-40f) == 0.0f);
    CHECK(isinf(tr_bf16_round(INFINITY)));
    float a = 1.0f + 1.0f / 512, b = 1.0f, c = 0;
    tr_gemm_bf16_ref('n', false, &c, 1, &a, 1, &b, 1, 1, 1, 1, 1.0f, false);
    CHECK_MSG(c == 1.0f, "twin: %.9g", c);
    if (bf16_skip()) return;
    ds_err e = { 0 };
    tr_gemm_set_bf16(true, &e);
    tr_gemm_nn(&c, 1, &a, 1, &b, 1, 1, 1, 1, 1.0f, false);
    tr_gemm_set_bf16(false, &e);
    CHECK_MSG(c == 1.0f, "kernel: %.9g", c);
}

/* bf16: a row's result does not depend on the thread count or on the other
 * rows (rows 0..4 of a 13-row product = the 5-row product; full tiles vs
 * edge tiles), every op and the causal ones. */
TEST(train_gemm_bf16_invariant) {
    if (bf16_skip()) return;
    ds_err e = { 0 };
    ds_rng r; ds_rng_seed(&r, 73);
    const int64_t M = 130, N = 70, K = 777;
    float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(N * K) * 4);
    float *C1 = malloc((size_t)(M * N) * 4), *C2 = malloc((size_t)(M * N) * 4);
    fillr(A, M * K, &r); fillr(B, N * K, &r);
    int threads = ds_threads_get();
    tr_gemm_set_bf16(true, &e);
    const char ops[] = { 't', 'n', 'T' };
    for (int o = 0; o < 3; o++) {
        char op = ops[o];
        int64_t lda = op == 'T' ? M : K, ldb = op == 't' ? K : N;
        ds_threads_set(1);
        call(op, C1, N, A, lda, B, ldb, M, N, K, 1.0f, false);
        ds_threads_set(3);
        call(op, C2, N, A, lda, B, ldb, M, N, K, 1.0f, false);
        CHECK_MSG(memcmp(C1, C2, (size_t)(M * N) * 4) == 0, "%c: 1 vs 3 threads differ", op);
        /* a 5-row product (tn: A's first 5 columns, lda unchanged) */
        call(op, C2, N, A, lda, B, ldb, 5, N, K, 1.0f, false);
        CHECK_MSG(memcmp(C1, C2, (size_t)(5 * N) * 4) == 0, "%c: rows 0..4 depend on the batch", op);
    }
    tr_gemm_set_bf16(false, &e);
    ds_threads_set(threads);
    free(A); free(B); free(C1); free(C2);
}

/* The causal variants in bf16 = the twin (on the lower triangle for nt),
 * reading nothing above the band tgemm.h allows (NaN there would show). */
TEST(train_gemm_bf16_causal) {
    if (bf16_skip()) return;
    ds_err e = { 0 };
    ds_rng r; ds_rng_seed(&r, 74);
    const int64_t Ts[] = { 1, 9, 17, 25, 33, 41, 100, 400, 777 };
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        int64_t T = Ts[ti], N = 19, K = 11;
        float *P = malloc((size_t)(T * T) * 4), *V = malloc((size_t)(T * N) * 4);
        float *C1 = malloc((size_t)(T * N) * 4), *C2 = malloc((size_t)(T * N) * 4);
        float *Q = malloc((size_t)(T * K) * 4), *Kk = malloc((size_t)(T * K) * 4);
        float *S1 = malloc((size_t)(T * T) * 4), *S2 = malloc((size_t)(T * T) * 4);
        fillr(V, T * N, &r); fillr(Q, T * K, &r); fillr(Kk, T * K, &r);
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) {
                float v = ds_rng_normal(&r);
                P[i * T + j] = j <= i ? v : j <= 6 * (i / 6) + 5 ? 0.0f : NAN;
            }
        for (int acc = 0; acc < 2; acc++) {
            fillr(C1, T * N, &r);
            memcpy(C2, C1, (size_t)(T * N) * 4);
            tr_gemm_set_bf16(true, &e);
            tr_gemm_nn_causal(C1, N, P, T, V, N, T, N, 0.5f, acc);
            tr_gemm_set_bf16(false, &e);
            tr_gemm_bf16_ref('n', true, C2, N, P, T, V, N, T, N, T, 0.5f, acc);
            CHECK_MSG(memcmp(C1, C2, (size_t)(T * N) * 4) == 0, "nn causal T %lld acc %d differs", (long long)T, acc);
            fillr(C1, T * N, &r);
            memcpy(C2, C1, (size_t)(T * N) * 4);
            tr_gemm_set_bf16(true, &e);
            tr_gemm_tn_causal(C1, N, P, T, V, N, T, N, 0.5f, acc);
            tr_gemm_set_bf16(false, &e);
            tr_gemm_bf16_ref('T', true, C2, N, P, T, V, N, T, N, T, 0.5f, acc);
            CHECK_MSG(memcmp(C1, C2, (size_t)(T * N) * 4) == 0, "tn causal T %lld acc %d differs", (long long)T, acc);
        }
        tr_gemm_set_bf16(true, &e);
        tr_gemm_nt_causal(S1, T, Q, K, Kk, K, T, K, 0.5f);
        tr_gemm_set_bf16(false, &e);
        tr_gemm_bf16_ref('t', true, S2, T, Q, K, Kk, K, T, T, K, 0.5f, false);
        for (int64_t i = 0; i < T; i++)
            CHECK_MSG(memcmp(S1 + i * T, S2 + i * T, (size_t)(i + 1) * 4) == 0, "nt causal T %lld row %lld differs",
                      (long long)T, (long long)i);
        free(P); free(V); free(C1); free(C2); free(Q); free(Kk); free(S1); free(S2);
    }
}

/* A whole training step (forward + backward, the linear layers' GEMMs in
 * bf16; heads, router and attention core fp32) against fp32 on a small V3
 * model (dense + MoE + MTP, widths 40..96, odd tails): the loss within 1e-3
 * relative (observed 3.4e-4), every tensor's gradient in the same
 * direction, cosine >= 0.97 (observed >= 0.983: the low ones are routed
 * experts whose tokens changed as bf16 noise moved the router's top-2;
 * with every GEMM in bf16 it was 0.984) and the whole gradient's >= 0.999 (0.9996), and not
 * identical (the bf16 path ran). Entry-wise bounds do not fit: a few
 * tokens switching experts move single entries by up to 25 % of the max. */
TEST(train_bf16_step_close_to_fp32) {
    if (bf16_skip()) return;
    const char *js =
        "{\"model_type\":\"deepseek_v3\",\"vocab_size\":61,\"hidden_size\":64,\"intermediate_size\":96,"
        "\"moe_intermediate_size\":40,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":48,"
        "\"kv_lora_rank\":32,\"qk_nope_head_dim\":16,\"qk_rope_head_dim\":8,\"v_head_dim\":16,"
        "\"first_k_dense_replace\":1,\"n_routed_experts\":4,\"n_shared_experts\":1,\"num_experts_per_tok\":2,"
        "\"n_group\":1,\"topk_group\":1,\"topk_method\":\"noaux_tc\",\"scoring_func\":\"sigmoid\","
        "\"norm_topk_prob\":true,\"routed_scaling_factor\":1.0,\"num_nextn_predict_layers\":1}";
    ds_config c;
    ds_err e = { 0 };
    CHECK_MSG(ds_config_parse(&c, js, strlen(js), "small", &e) == 0, "%s", e.msg);
    ds_tmodel *m;
    CHECK(ds_tmodel_init(&m, &c, true, &e) == 0);
    if (!m) return;
    ds_rng r; ds_rng_seed(&r, 75);
    ds_tmodel_init_weights(m, 0.1f, &r);
    enum { B = 3, T = 45 };
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % 61);
    ds_loss_opts o = { 0.3f, 0.01f, 1.0f, false };
    ds_losses l1, l2;
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, B, T, &o, &l1, &e) == 0);
    float *g1 = malloc((size_t)m->n_floats * 4);
    memcpy(g1, m->g, (size_t)m->n_floats * 4);
    CHECK(tr_gemm_set_bf16(true, &e) == 0);
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, B, T, &o, &l2, &e) == 0);
    tr_gemm_set_bf16(false, &e);
    CHECK_MSG(fabs(l1.loss - l2.loss) <= 1e-3 * fabs(l1.loss), "loss fp32 %.9g bf16 %.9g", l1.loss, l2.loss);
    double worst = 1, any = 0, dot_all = 0, n1_all = 0, n2_all = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        double md = 0, mr = 0, dot = 0, n1 = 0, n2 = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            double x = m->g[p->off + j], y = g1[p->off + j];
            md = fmax(md, fabs(x - y));
            mr = fmax(mr, fabs(y));
            dot += x * y; n1 += x * x; n2 += y * y;
        }
        if (mr == 0) continue;
        double cs = dot / sqrt(n1 * n2);
        if (getenv("DS_TEST_VERBOSE")) printf("    %-50s cos %.6f maxrel %.3g\n", p->name, cs, md / mr);
        CHECK_MSG(cs >= 0.97, "%s: bf16 vs fp32 gradient cosine %.6f (max diff %.3g of %.3g)", p->name, cs, md, mr);
        worst = fmin(worst, cs);
        any = fmax(any, md);
        dot_all += dot; n1_all += n1; n2_all += n2;
    }
    double cs_all = dot_all / sqrt(n1_all * n2_all);
    CHECK_MSG(cs_all >= 0.999, "whole gradient: cosine %.6f", cs_all);
    CHECK_MSG(any > 0, "bf16 gradients equal fp32's: the bf16 path did not run");
    if (getenv("DS_TEST_VERBOSE"))
        printf("    loss %.6f vs %.6f, lowest tensor cosine %.6f, whole %.6f\n", l1.loss, l2.loss, worst, cs_all);
    free(g1);
    ds_tmodel_free(m);
}

/* What bf16 mode keeps fp32 (V3's split): a TR_FP32 bracket (heads, router)
 * and the attention core give fp32's bits; outside, bf16 is on again. */
#include "train/tops.h"
TEST(train_bf16_keep_fp32) {
    if (bf16_skip()) return;
    ds_err e = { 0 };
    ds_rng r; ds_rng_seed(&r, 76);
    const int64_t M = 40, N = 50, K = 70, T = 30, Dk = 12, Dv = 8;
    float *A = malloc(M * K * 4), *B = malloc(N * K * 4), *C1 = malloc(M * N * 4), *C2 = malloc(M * N * 4);
    float *Q = malloc(T * Dk * 4), *Kk = malloc(T * Dk * 4), *V = malloc(T * Dv * 4);
    float *O1 = malloc(T * Dv * 4), *O2 = malloc(T * Dv * 4), *att = malloc(T * T * 4);
    fillr(A, M * K, &r); fillr(B, N * K, &r); fillr(Q, T * Dk, &r); fillr(Kk, T * Dk, &r); fillr(V, T * Dv, &r);
    tr_gemm_nt(C1, N, A, K, B, K, M, N, K, 1.0f, false);
    tr_attention_forward(O1, Dv, att, Q, Dk, Kk, Dk, V, Dv, T, Dk, Dv, 0.3f);
    tr_gemm_set_bf16(true, &e);
    TR_FP32(tr_gemm_nt(C2, N, A, K, B, K, M, N, K, 1.0f, false));
    CHECK_MSG(memcmp(C1, C2, (size_t)(M * N) * 4) == 0, "TR_FP32 bracket: not fp32's bits");
    tr_attention_forward(O2, Dv, att, Q, Dk, Kk, Dk, V, Dv, T, Dk, Dv, 0.3f);
    CHECK_MSG(memcmp(O1, O2, (size_t)(T * Dv) * 4) == 0, "attention in bf16 mode: not fp32's bits");
    tr_gemm_nt(C2, N, A, K, B, K, M, N, K, 1.0f, false);
    CHECK_MSG(memcmp(C1, C2, (size_t)(M * N) * 4) != 0, "after the bracket: still fp32");
    tr_gemm_set_bf16(false, &e);
    free(A); free(B); free(C1); free(C2); free(Q); free(Kk); free(V); free(O1); free(O2); free(att);
}
