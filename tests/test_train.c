/*
 * test_train.c - training: finite-difference checks of every backward
 * kernel, a whole-model finite-difference check, and PyTorch-autograd
 * parity of `deepseek grad` on the tiny V3 / V2-Lite / V2 fixtures.
 *
 * Finite differences: L = Σ r ⊙ f(x) for fixed random r, central
 * differences (L(x+ε) − L(x−ε))/2ε in fp32 with the loss summed in double.
 * ε = 1e-2 for smooth kernels (truncation error O(ε²) ≈ 1e-4 relative);
 * we require max |numeric − analytic| ≤ 1e-2 · max |analytic| per input.
 * fp32 rounding of L (~1e-6 relative) contributes < 1e-3 of that.
 *
 * Autograd parity (tests/fixtures/grad/<name>/, tools/gen_grad_fixtures.py): both
 * sides compute in fp32 from the same weights; only summation order differs.
 * Observed max |ours − torch| / max |torch| per tensor: <= 3.2e-5 (V2, whose
 * ×16 routing scale gives the largest values), <= 8e-6 (V3, V2-Lite). We
 * require <= 5e-4 per tensor (15× margin; a wrong term — e.g. dropping the
 * balance gradient, 6-16% of the router gradient at the fixture's α = 0.1 —
 * is >= 100× over) and the losses within 1e-5 relative.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "core/thread.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/model_internal.h"
#include "model/rope.h"
#include "train/data.h"
#include "train/tinternal.h"
#include "train/trainer.h"
#include "train/tmodel.h"
#include "train/tops.h"

static void fill(float *x, int64_t n, ds_rng *r, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * ds_rng_normal(r);
}

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* max |num - ana| / max |ana| */
static double rel_err(const float *num, const float *ana, int64_t n) {
    double md = 0, ma = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)num[i] - ana[i]);
        md = ds_max_err(md, d);
        if (fabs(ana[i]) > ma) ma = fabs(ana[i]);
    }
    return ma > 0 ? md / ma : md;
}

#define FD_EPS 1e-2f
#define FD_TOL 1e-2

/* ------------------------------------------------------------ kernels */

TEST(train_fd_rmsnorm) {
    ds_rng r; ds_rng_seed(&r, 1);
    enum { N = 3, D = 7 };
    float x[N * D], w[D], rr[N * D], y[N * D], rstd[N], dx[N * D] = { 0 }, dw[D] = { 0 }, ndx[N * D], ndw[D];
    fill(x, N * D, &r, 1); fill(w, D, &r, 1); fill(rr, N * D, &r, 1);
    tr_rmsnorm_forward(y, D, rstd, x, D, w, N, D, 1e-6f);
    tr_rmsnorm_backward(dx, D, dw, rr, D, x, D, w, rstd, N, D);
    for (int i = 0; i < N * D; i++) {
        float s = x[i];
        x[i] = s + FD_EPS; tr_rmsnorm_forward(y, D, NULL, x, D, w, N, D, 1e-6f); double lp = dot(y, rr, N * D);
        x[i] = s - FD_EPS; tr_rmsnorm_forward(y, D, NULL, x, D, w, N, D, 1e-6f); double lm = dot(y, rr, N * D);
        x[i] = s; ndx[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    for (int i = 0; i < D; i++) {
        float s = w[i];
        w[i] = s + FD_EPS; tr_rmsnorm_forward(y, D, NULL, x, D, w, N, D, 1e-6f); double lp = dot(y, rr, N * D);
        w[i] = s - FD_EPS; tr_rmsnorm_forward(y, D, NULL, x, D, w, N, D, 1e-6f); double lm = dot(y, rr, N * D);
        w[i] = s; ndw[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    CHECK_MSG(rel_err(ndx, dx, N * D) < FD_TOL, "dx rel err %g", rel_err(ndx, dx, N * D));
    CHECK_MSG(rel_err(ndw, dw, D) < FD_TOL, "dw rel err %g", rel_err(ndw, dw, D));
}

TEST(train_fd_linear) {
    ds_rng r; ds_rng_seed(&r, 2);
    enum { N = 4, I = 5, O = 3 };
    float x[N * I], W[O * I], rr[N * O], y[N * O], dx[N * I] = { 0 }, dW[O * I] = { 0 }, n1[N * I], n2[O * I];
    fill(x, N * I, &r, 1); fill(W, O * I, &r, 1); fill(rr, N * O, &r, 1);
    tr_linear_backward(dx, dW, rr, x, W, N, I, O);
    for (int i = 0; i < N * I; i++) {
        float s = x[i];
        x[i] = s + FD_EPS; tr_linear_forward(y, x, W, N, I, O); double lp = dot(y, rr, N * O);
        x[i] = s - FD_EPS; tr_linear_forward(y, x, W, N, I, O); double lm = dot(y, rr, N * O);
        x[i] = s; n1[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    for (int i = 0; i < O * I; i++) {
        float s = W[i];
        W[i] = s + FD_EPS; tr_linear_forward(y, x, W, N, I, O); double lp = dot(y, rr, N * O);
        W[i] = s - FD_EPS; tr_linear_forward(y, x, W, N, I, O); double lm = dot(y, rr, N * O);
        W[i] = s; n2[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    CHECK(rel_err(n1, dx, N * I) < FD_TOL);
    CHECK(rel_err(n2, dW, O * I) < FD_TOL);
}

TEST(train_fd_swiglu) {
    ds_rng r; ds_rng_seed(&r, 3);
    enum { n = 16 };
    float g[n], u[n], rr[n], h[n], sig[n], dg[n] = { 0 }, du[n] = { 0 }, ng[n], nu[n];
    fill(g, n, &r, 2); fill(u, n, &r, 1); fill(rr, n, &r, 1);
    tr_swiglu_forward(h, sig, g, u, n);
    tr_swiglu_backward(dg, du, rr, g, u, sig, n);
    for (int i = 0; i < n; i++) {
        float s = g[i];
        g[i] = s + FD_EPS; tr_swiglu_forward(h, sig, g, u, n); double lp = dot(h, rr, n);
        g[i] = s - FD_EPS; tr_swiglu_forward(h, sig, g, u, n); double lm = dot(h, rr, n);
        g[i] = s; ng[i] = (float)((lp - lm) / (2 * FD_EPS));
        s = u[i];
        u[i] = s + FD_EPS; tr_swiglu_forward(h, sig, g, u, n); lp = dot(h, rr, n);
        u[i] = s - FD_EPS; tr_swiglu_forward(h, sig, g, u, n); lm = dot(h, rr, n);
        u[i] = s; nu[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    CHECK(rel_err(ng, dg, n) < FD_TOL);
    CHECK(rel_err(nu, du, n) < FD_TOL);
}

/* The vectorized SiLU (polynomial exp) against its expf twin: max relative
 * error 1e-6 over [-90, 90] (exp's own error is ~2e-7; the clamp at -87 only
 * changes sigmoid where it is < 1e-37). */
TEST(train_swiglu_fast_vs_ref) {
    enum { n = 4099 };
    static float g[n], u[n], h1[n], h2[n], s1[n], s2[n];
    for (int i = 0; i < n; i++) { g[i] = -90.0f + 180.0f * (float)i / (n - 1); u[i] = 1.0f + 0.001f * (float)i; }
    tr_swiglu_forward(h1, s1, g, u, n);
    tr_swiglu_forward_ref(h2, s2, g, u, n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double d1 = fabs((double)s1[i] - s2[i]) / fmax(fabs((double)s2[i]), 1e-30);
        double d2 = fabs((double)h1[i] - h2[i]) / fmax(fabs((double)h2[i]), 1e-30);
        if (s2[i] > 1e-30f) worst = ds_max_err(worst, ds_max_err(d1, d2));
    }
    CHECK_MSG(worst < 1e-6, "fast silu max relative error %g", worst);
}

/* The 16-lane twins of tops.c (SwiGLU forward and backward, the softmax's
 * exp-and-sum) give the AVX2 code's bits (tr_force_avx2): odd lengths reach
 * every tail (16-, 8-lane and scalar). */
TEST(train_avx512_twins_match_avx2) {
    if (ds_isa_level() < DS_ISA_AVX512) return;   /* nothing to compare */
    enum { n = 4099, T = 41, Dk = 12, Dv = 8 };
    static float g[n], u[n], dh[n], h[2][n], sg[2][n], dg[2][n], du[2][n];
    static float Q[T * Dk], K[T * Dk], V[T * Dv], O[2][T * Dv], att[2][T * T];
    ds_rng r; ds_rng_seed(&r, 31);
    for (int i = 0; i < n; i++) g[i] = -90.0f + 180.0f * (float)i / (n - 1);
    fill(u, n, &r, 2); fill(dh, n, &r, 1);
    fill(Q, T * Dk, &r, 3); fill(K, T * Dk, &r, 3); fill(V, T * Dv, &r, 1);
    for (int len = n; len >= n - 17; len--)   /* every tail: len mod 16 = 0..15 */
        for (int v = 0; v < 2; v++) {   /* v = 0: AVX2, 1: AVX-512 */
            tr_force_avx2(v == 0);
            tr_swiglu_forward(h[v], sg[v], g, u, len);
            tr_swiglu_backward(dg[v], du[v], dh, g, u, sg[v], len);
            tr_force_avx2(false);
            if (v == 1) {
                CHECK_MSG(!memcmp(h[0], h[1], sizeof h[0]) && !memcmp(sg[0], sg[1], sizeof sg[0]), "swiglu forward, n %d", len);
                CHECK_MSG(!memcmp(dg[0], dg[1], sizeof dg[0]) && !memcmp(du[0], du[1], sizeof du[0]), "swiglu backward, n %d", len);
            }
        }
    for (int v = 0; v < 2; v++) {
        tr_force_avx2(v == 0);
        memset(att[v], 0, sizeof att[v]);
        tr_attention_forward(O[v], Dv, att[v], Q, Dk, K, Dk, V, Dv, T, Dk, Dv, 0.3f);
        tr_force_avx2(false);
    }
    for (int i = 0; i < T; i++)   /* the softmax rows, lengths 1..T (above the diagonal: unspecified) */
        CHECK_MSG(!memcmp(att[0] + i * T, att[1] + i * T, (size_t)(i + 1) * sizeof(float)), "softmax row %d differs", i);
    CHECK_MSG(!memcmp(O[0], O[1], sizeof O[0]), "attention output differs");
}

/* The fused gate|up layout: tr_swiglu_{forward,backward}_gu on rows of
 * [g | u] give the same bits as the flat kernels on separate g, u; the AVX2
 * backward the same bits as its scalar twin. */
TEST(train_swiglu_gu_matches_flat) {
    enum { R = 7, F = 37 };
    static float gu[R * 2 * F], g[R * F], u[R * F], h1[R * F], h2[R * F], s1[R * F], s2[R * F], dh[R * F];
    static float dgu[R * 2 * F], dg[R * F], du[R * F], dg2[R * F], du2[R * F];
    ds_rng r; ds_rng_seed(&r, 41);
    fill(gu, R * 2 * F, &r, 3); fill(dh, R * F, &r, 1);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < F; j++) { g[i * F + j] = gu[i * 2 * F + j]; u[i * F + j] = gu[i * 2 * F + F + j]; }
    tr_swiglu_forward_gu(h1, s1, gu, R, F);
    for (int i = 0; i < R; i++)   /* row by row: the vector/scalar-tail split falls where the fused one's does */
        tr_swiglu_forward(h2 + i * F, s2 + i * F, g + i * F, u + i * F, F);
    CHECK(!memcmp(h1, h2, sizeof h1) && !memcmp(s1, s2, sizeof s1));
    tr_swiglu_backward_gu(dgu, dh, gu, s1, R, F);
    tr_swiglu_backward(dg, du, dh, g, u, s2, R * F);
    tr_swiglu_backward_ref(dg2, du2, dh, g, u, s2, R * F);
    CHECK(!memcmp(dg, dg2, sizeof dg) && !memcmp(du, du2, sizeof du));
    int bad = 0;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < F; j++)
            bad += dgu[i * 2 * F + j] != dg[i * F + j] || dgu[i * 2 * F + F + j] != du[i * F + j];
    CHECK_MSG(bad == 0, "%d fused-layout gradients differ", bad);
}

/* Vector helpers against their plain loops: add/axpy/scale bit-identical,
 * dot within 1e-6 of a double-precision sum. */
TEST(train_vec_helpers) {
    enum { n = 301 };
    static float x[n], y[n], y1[n], y2[n];
    ds_rng r; ds_rng_seed(&r, 42);
    fill(x, n, &r, 1); fill(y, n, &r, 1);
    for (int len = 0; len <= n; len += 43) {
        memcpy(y1, y, sizeof y); memcpy(y2, y, sizeof y);
        tr_vec_add(y1, x, len);
        for (int i = 0; i < len; i++) y2[i] += x[i];
        CHECK(!memcmp(y1, y2, sizeof y1));
        tr_vec_axpy(y1, 0.37f, x, len);
        for (int i = 0; i < len; i++) y2[i] += 0.37f * x[i];
        CHECK(!memcmp(y1, y2, sizeof y1));
        tr_vec_scale(y1, -1.3f, y1, len);
        for (int i = 0; i < len; i++) y2[i] = -1.3f * y2[i];
        CHECK(!memcmp(y1, y2, sizeof y1));
        double d = tr_vec_dot(x, y, len), ref = dot(x, y, len);
        CHECK_MSG(fabs(d - ref) <= 1e-6 * (1 + fabs(ref)), "dot %d: %.9g vs %.9g", len, d, ref);
    }
}

TEST(train_fd_rope) {
    /* RoPE is linear: its backward must be the exact transpose */
    ds_config c;
    memset(&c, 0, sizeof c);
    c.qk_rope_head_dim = 8; c.rope_theta = 10000; c.yarn = true; c.rope_factor = 40; c.rope_orig_max_pos = 4096;
    c.beta_fast = 32; c.beta_slow = 1;
    float inv[4];
    ds_rope_inv_freq(&c, inv);
    ds_rng r; ds_rng_seed(&r, 4);
    float x[8], rr[8], y[8], d[8], num[8];
    fill(x, 8, &r, 1); fill(rr, 8, &r, 1);
    memcpy(d, rr, sizeof d);
    tr_rope_backward(d, 8, inv, 37);
    for (int i = 0; i < 8; i++) {
        float s = x[i];
        x[i] = s + FD_EPS; memcpy(y, x, sizeof y); ds_rope_apply(y, 8, inv, 37); double lp = dot(y, rr, 8);
        x[i] = s - FD_EPS; memcpy(y, x, sizeof y); ds_rope_apply(y, 8, inv, 37); double lm = dot(y, rr, 8);
        x[i] = s; num[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    CHECK_MSG(rel_err(num, d, 8) < 1e-3, "rope rel err %g", rel_err(num, d, 8));
}

TEST(train_fd_crossentropy) {
    ds_rng r; ds_rng_seed(&r, 5);
    enum { N = 3, V = 9 };
    float lg[N * V], work[N * V], num[N * V];
    int32_t tgt[N] = { 4, -1, 0 };
    fill(lg, N * V, &r, 2);
    memcpy(work, lg, sizeof work);
    tr_crossentropy_forward_backward(work, tgt, N, V, 1.0f);  /* work = dlogits */
    for (int i = 0; i < N * V; i++) {
        float tmp[N * V];
        memcpy(tmp, lg, sizeof tmp); tmp[i] += FD_EPS;
        double lp = tr_crossentropy_forward_backward(tmp, tgt, N, V, 1.0f);
        memcpy(tmp, lg, sizeof tmp); tmp[i] -= FD_EPS;
        double lm = tr_crossentropy_forward_backward(tmp, tgt, N, V, 1.0f);
        num[i] = (float)((lp - lm) / (2 * FD_EPS));
    }
    CHECK_MSG(rel_err(num, work, N * V) < FD_TOL, "ce rel err %g", rel_err(num, work, N * V));
    for (int v = 0; v < V; v++) CHECK(work[V + v] == 0.0f);  /* no target: no gradient */
}

TEST(train_fd_attention) {
    ds_rng r; ds_rng_seed(&r, 6);
    enum { T = 5, Dk = 6, Dv = 4 };
    float Q[T * Dk], K[T * Dk], V[T * Dv], rr[T * Dv], O[T * Dv], att[T * T], scr[T * T];
    float dQ[T * Dk] = { 0 }, dK[T * Dk] = { 0 }, dV[T * Dv] = { 0 }, nQ[T * Dk], nK[T * Dk], nV[T * Dv];
    fill(Q, T * Dk, &r, 1); fill(K, T * Dk, &r, 1); fill(V, T * Dv, &r, 1); fill(rr, T * Dv, &r, 1);
    float sc = 0.4f;
    tr_attention_forward(O, Dv, att, Q, Dk, K, Dk, V, Dv, T, Dk, Dv, sc);
    tr_attention_backward(dQ, Dk, dK, Dk, dV, Dv, rr, Dv, att, Q, Dk, K, Dk, V, Dv, T, Dk, Dv, sc, scr);
    float *ps[3] = { Q, K, V }, *ns[3] = { nQ, nK, nV };
    int sz[3] = { T * Dk, T * Dk, T * Dv };
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < sz[p]; i++) {
            float s = ps[p][i];
            ps[p][i] = s + FD_EPS; tr_attention_forward(O, Dv, att, Q, Dk, K, Dk, V, Dv, T, Dk, Dv, sc); double lp = dot(O, rr, T * Dv);
            ps[p][i] = s - FD_EPS; tr_attention_forward(O, Dv, att, Q, Dk, K, Dk, V, Dv, T, Dk, Dv, sc); double lm = dot(O, rr, T * Dv);
            ps[p][i] = s; ns[p][i] = (float)((lp - lm) / (2 * FD_EPS));
        }
    CHECK_MSG(rel_err(nQ, dQ, T * Dk) < FD_TOL, "dQ %g", rel_err(nQ, dQ, T * Dk));
    CHECK_MSG(rel_err(nK, dK, T * Dk) < FD_TOL, "dK %g", rel_err(nK, dK, T * Dk));
    CHECK_MSG(rel_err(nV, dV, T * Dv) < FD_TOL, "dV %g", rel_err(nV, dV, T * Dv));
}

/* Router: L = Σ_k r_k w_k + Σ_i q_i s_i with the selection held fixed. */
static double route_loss(const ds_config *c, const float *lg, const float *bias, const float *rk, const float *q,
                         const int32_t *want_idx, bool *same) {
    int32_t idx[8];
    float wt[8], s[64], tmp[80];
    ds_moe_route(c, lg, bias, idx, wt, s, tmp);
    for (int k = 0; k < c->num_experts_per_tok; k++) if (idx[k] != want_idx[k]) *same = false;
    return dot(wt, rk, c->num_experts_per_tok) + dot(s, q, c->n_routed_experts);
}

static void check_route(ds_score_func sf, bool norm, double rsf, ds_topk_method tm, int64_t groups, uint64_t seed) {
    ds_config c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = 12; c.num_experts_per_tok = 3; c.n_group = groups; c.topk_group = groups > 1 ? 2 : 1;
    c.scoring_func = sf; c.norm_topk_prob = norm; c.routed_scaling_factor = rsf; c.topk_method = tm;
    ds_rng r; ds_rng_seed(&r, seed);
    float lg[12], bias[12], rk[3], q[12], s[12], wt[3], tmp[32], dl[12] = { 0 }, num[12];
    int32_t idx[3];
    fill(lg, 12, &r, 2); fill(bias, 12, &r, 0.3f); fill(rk, 3, &r, 1); fill(q, 12, &r, 1);
    ds_moe_route(&c, lg, bias, idx, wt, s, tmp);
    tr_route_backward(&c, dl, rk, q, s, idx);
    bool same = true;
    float eps = 1e-3f;  /* small: the selection must not flip */
    for (int i = 0; i < 12; i++) {
        float sv = lg[i];
        lg[i] = sv + eps; double lp = route_loss(&c, lg, bias, rk, q, idx, &same);
        lg[i] = sv - eps; double lm = route_loss(&c, lg, bias, rk, q, idx, &same);
        lg[i] = sv; num[i] = (float)((lp - lm) / (2 * eps));
    }
    CHECK(same);
    CHECK_MSG(rel_err(num, dl, 12) < FD_TOL, "route (sf %d norm %d) rel err %g", sf, norm, rel_err(num, dl, 12));
}

TEST(train_route_backward_many_experts) {
    /* 8192 experts (the training router once asserted E <= 4096):
     * sigmoid, no renormalization -> d logit_i = rsf · dw_k · s(1 − s) at the chosen experts only */
    int64_t E = 8192;
    ds_config c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = E; c.num_experts_per_tok = 2; c.n_group = 1; c.topk_group = 1;
    c.scoring_func = DS_SCORE_SIGMOID; c.routed_scaling_factor = 2.0; c.topk_method = DS_TOPK_GREEDY;
    float *s = calloc((size_t)E, sizeof(float)), *dl = calloc((size_t)E, sizeof(float));
    for (int64_t i = 0; i < E; i++) s[i] = 0.25f;
    s[5000] = 0.5f; s[7000] = 0.75f;
    int32_t idx[2] = { 7000, 5000 };
    float dwt[2] = { 1.0f, -2.0f };
    tr_route_backward(&c, dl, dwt, NULL, s, idx);
    CHECK_NEAR(dl[7000], 2.0 * 0.75 * 0.25, 1e-7);
    CHECK_NEAR(dl[5000], 2.0 * -2.0 * 0.25, 1e-7);
    CHECK(dl[0] == 0.0f && dl[E - 1] == 0.0f);
    free(s); free(dl);
}

TEST(train_fd_route) {
    check_route(DS_SCORE_SIGMOID, true, 2.5, DS_TOPK_NOAUX_TC, 4, 7);       /* V3 */
    check_route(DS_SCORE_SOFTMAX, false, 16.0, DS_TOPK_GROUP_LIMITED, 4, 8); /* V2 */
    check_route(DS_SCORE_SOFTMAX, false, 1.0, DS_TOPK_GREEDY, 1, 9);         /* V2-Lite */
    check_route(DS_SCORE_SOFTMAX, true, 1.5, DS_TOPK_GREEDY, 1, 10);         /* softmax + renormalized */
}

TEST(train_fd_balance) {
    enum { E = 6, T = 4 };
    ds_rng r; ds_rng_seed(&r, 11);
    float s[T * E], f[E], ds[T * E] = { 0 }, num[T * E];
    for (int i = 0; i < T * E; i++) s[i] = 0.1f + (float)ds_rng_uniform(&r);
    for (int i = 0; i < E; i++) f[i] = (float)ds_rng_uniform(&r) * 2;
    for (int t = 0; t < T; t++) tr_balance_backward(ds + t * E, s + t * E, f, E, T, 1.0f);
    for (int i = 0; i < T * E; i++) {
        double L[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float sv = s[i];
            s[i] = sv + (sgn ? -FD_EPS : FD_EPS);
            double bal = 0;
            for (int t = 0; t < T; t++) {
                double S = 0;
                for (int j = 0; j < E; j++) S += s[t * E + j];
                for (int j = 0; j < E; j++) bal += f[j] * (s[t * E + j] / S) / T;
            }
            L[sgn] = bal;
            s[i] = sv;
        }
        num[i] = (float)((L[0] - L[1]) / (2 * FD_EPS));
    }
    CHECK_MSG(rel_err(num, ds, T * E) < FD_TOL, "balance rel err %g", rel_err(num, ds, T * E));
}

/* ------------------------------------------------------------ whole model */

static void tiny_config(ds_config *c) {
    const char *js =
        "{\"model_type\":\"deepseek_v3\",\"vocab_size\":40,\"hidden_size\":16,\"intermediate_size\":24,"
        "\"moe_intermediate_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":12,"
        "\"kv_lora_rank\":8,\"qk_nope_head_dim\":4,\"qk_rope_head_dim\":4,\"v_head_dim\":4,"
        "\"first_k_dense_replace\":1,\"n_routed_experts\":4,\"n_shared_experts\":1,\"num_experts_per_tok\":2,"
        "\"n_group\":2,\"topk_group\":1,\"topk_method\":\"noaux_tc\",\"scoring_func\":\"sigmoid\","
        "\"norm_topk_prob\":true,\"routed_scaling_factor\":2.5,\"num_nextn_predict_layers\":1}";
    ds_err e = { 0 };
    int rc = ds_config_parse(c, js, strlen(js), "tiny", &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
}

/* FD on the largest-gradient entry of every tensor of a tiny V3 model
 * (dense + MoE + MTP, all three loss terms, B = 2 sequences). ε = 1e-3 keeps
 * the routing fixed; fp32 rounding of L (|L| ≈ 5, ~1e-6 relative) then gives
 * ~3e-3 absolute noise in the difference quotient, so we require
 * |numeric − analytic| ≤ 3% · |analytic| + 2e-4 and skip entries below 1e-4. */
TEST(train_fd_whole_model) {
    ds_config c;
    tiny_config(&c);
    ds_tmodel *m;
    ds_err e = { 0 };
    CHECK(ds_tmodel_init(&m, &c, true, &e) == 0);
    if (!m) return;
    ds_rng r; ds_rng_seed(&r, 12);
    ds_tmodel_init_weights(m, 0.3f, &r);
    for (int64_t i = 0; i < m->n_params; i++)   /* norms away from 1, a nonzero bias */
        if (m->params[i].ndim == 1)
            for (int64_t j = 0; j < m->params[i].numel; j++) m->w[m->params[i].off + j] += 0.2f * ds_rng_normal(&r);
    int32_t tok[2 * 7];
    for (int i = 0; i < 14; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % 40);
    ds_loss_opts o = { 0.3f, 0.5f, 1.0f, false };
    ds_losses ls;
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, 2, 7, &o, &ls, &e) == 0);
    CHECK(ls.mtp > 0 && ls.balance > 0);
    ds_loss_opts fo = o;
    fo.no_grad = true;
    int bad = 0, checked = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (!p->trainable) continue;
        int64_t best = 0;
        for (int64_t j = 1; j < p->numel; j++) if (fabsf(m->g[p->off + j]) > fabsf(m->g[p->off + best])) best = j;
        float ana = m->g[p->off + best];
        if (fabsf(ana) < 1e-4f) continue;   /* e.g. experts nobody routed to */
        float *w = &m->w[p->off + best], sv = *w, eps = 1e-3f;
        ds_losses lp, lm;
        *w = sv + eps; ds_tmodel_step(m, tok, 2, 7, &fo, &lp, &e);
        *w = sv - eps; ds_tmodel_step(m, tok, 2, 7, &fo, &lm, &e);
        *w = sv;
        double num = (lp.loss - lm.loss) / (2 * eps);
        checked++;
        if (fabs(num - ana) > 0.03 * fabs(ana) + 2e-4) {
            bad++;
            ds_test_fail(__FILE__, __LINE__, "%s[%lld]: numeric %.6g analytic %.6g", p->name, (long long)best, num, ana);
        }
    }
    CHECK(checked > 20);
    CHECK(bad == 0);
    ds_tmodel_free(m);
}

/* ------------------------------------------------------------ autograd parity */

static void parity(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/grad/%s/ref.json", name);
    ds_err e = { 0 };
    json_t *ref;
    if (ds_json_load_file(path, 1 << 20, &ref, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    json_t *jt = json_object_get(ref, "tokens");
    int64_t T = (int64_t)json_array_size(jt);
    int32_t tok[256];
    for (int64_t i = 0; i < T && i < 256; i++) tok[i] = (int32_t)json_integer_value(json_array_get(jt, (size_t)i));
    ds_loss_opts o = { (float)json_number_value(json_object_get(ref, "mtp_weight")),
                       (float)json_number_value(json_object_get(ref, "balance_alpha")), 1.0f, false };
    ds_tmodel *m;
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    if (ds_tmodel_load(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); json_decref(ref); return; }
    ds_tmodel_zero_grad(m);
    ds_losses ls;
    CHECK(ds_tmodel_step(m, tok, 1, T, &o, &ls, &e) == 0);
    const char *keys[4] = { "loss", "ce", "mtp", "balance" };
    double ours[4] = { ls.loss, ls.ce, ls.mtp, ls.balance };
    for (int i = 0; i < 4; i++) {
        double want = json_number_value(json_object_get(ref, keys[i]));
        CHECK_MSG(fabs(ours[i] - want) <= 1e-5 * fabs(want) + 1e-7, "%s %s: ours %.9g torch %.9g", name, keys[i], ours[i], want);
    }
    ds_safetensors st;
    memset(&st, 0, sizeof st);
    snprintf(path, sizeof path, "tests/fixtures/grad/%s/grads.safetensors", name);
    if (ds_safetensors_open_file(&st, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); goto done; }
    CHECK_EQ_INT(st.n_tensors, m->n_params);
    double worst = 0;
    const char *worst_name = "";
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        ds_st_tensor *t = ds_safetensors_find(&st, p->name);
        if (!t || t->dtype != DS_DTYPE_F32 || (int64_t)(t->end - t->begin) != p->numel * 4) {
            ds_test_fail(__FILE__, __LINE__, "%s: reference for %s missing or mis-shaped", name, p->name);
            continue;
        }
        const float *rg = (const float *)t->data;
        double md = 0, mr = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            double d = fabs((double)m->g[p->off + j] - rg[j]);
            md = ds_max_err(md, d);
            if (fabs(rg[j]) > mr) mr = fabs(rg[j]);
        }
        double rel = md / (mr > 1e-6 ? mr : 1e-6);
        if (rel > worst) { worst = rel; worst_name = p->name; }
        CHECK_MSG(rel <= 5e-4, "%s %s: max |ours - torch| = %.3g, max |torch| = %.3g", name, p->name, md, mr);
    }
    if (getenv("DS_TEST_VERBOSE")) fprintf(stderr, "    %s: worst relative gradient error %.3g (%s)\n", name, worst, worst_name);
    ds_safetensors_close(&st);
done:
    ds_tmodel_free(m);
    json_decref(ref);
}

TEST(train_grad_parity_v3) { parity("tiny-v3"); }
TEST(train_grad_parity_v2_lite) { parity("tiny-v2-lite"); }
TEST(train_grad_parity_v2) { parity("tiny-v2"); }

/* The training forward agrees with the inference forward: CE from the HF
 * reference logits of each fixture (FP8 included: dequantized loading). */
static void ce_matches_inference(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    ds_err e = { 0 };
    ds_model *im;
    ds_tmodel *m;
    if (ds_model_open(&im, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    if (ds_tmodel_load(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); ds_model_close(im); return; }
    int32_t tok[12] = { 0, 5, 17, 33, 2, 9, 11, 40, 7, 3, 100, 21 };
    int64_t T = 12, V = im->cfg.vocab_size;
    float *lg = malloc((size_t)(T * V) * sizeof(float));
    ds_kvcache cache;
    CHECK(ds_kvcache_init(&cache, im, T, &e) == 0);
    ds_seq_chunk ch = { &cache, tok, T, true };
    CHECK(ds_model_forward(im, NULL, &ch, 1, lg, NULL, &e) == 0);
    double ce = 0;
    for (int64_t t = 0; t + 1 < T; t++) {
        float *row = lg + t * V;
        double mx = row[0], s = 0;
        for (int64_t v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
        for (int64_t v = 0; v < V; v++) s += exp(row[v] - mx);
        ce += mx + log(s) - row[tok[t + 1]];
    }
    ce /= (double)(T - 1);
    ds_loss_opts o = { 0, 0, 1, true };
    ds_losses ls;
    CHECK(ds_tmodel_step(m, tok, 1, T, &o, &ls, &e) == 0);
    CHECK_MSG(fabs(ls.ce - ce) < 1e-5, "%s: training ce %.9g vs inference %.9g", name, ls.ce, ce);
    ds_kvcache_free(&cache);
    free(lg);
    ds_tmodel_free(m);
    ds_model_close(im);
}

TEST(train_forward_matches_inference) {
    ce_matches_inference("tiny-v3");
    ce_matches_inference("tiny-v3-fp8");
    ce_matches_inference("tiny-v2-lite");
    ce_matches_inference("tiny-v2");
}

/* ------------------------------------------------------------ trainer */


/* A data folder of random byte tokens, and a tiny recipe writing to out. */
static int make_run(char *root, ds_recipe *r, json_t **model) {
    strcpy(root, "/tmp/ds-train-test-XXXXXX");
    if (!mkdtemp(root)) return -1;
    char data[600], path[700];
    snprintf(data, sizeof data, "%s/data", root);
    mkdir(data, 0755);
    ds_rng rng; ds_rng_seed(&rng, 99);
    int32_t tok[3000];
    for (int i = 0; i < 3000; i++) tok[i] = 32 + (int32_t)(ds_rng_u64(&rng) % 64);
    ds_err e = { 0 };
    snprintf(path, sizeof path, "%s/train_000000.tok", data);
    if (ds_shard_write(path, tok, 2600, 258, &e)) return -1;
    snprintf(path, sizeof path, "%s/val_000000.tok", data);
    if (ds_shard_write(path, tok + 2600, 400, 258, &e)) return -1;
    const char *dj = "{\"vocab_size\":258,\"train\":[\"train_000000.tok\"],\"val\":[\"val_000000.tok\"]}";
    snprintf(path, sizeof path, "%s/data.json", data);
    if (ds_write_file_atomic(path, dj, strlen(dj), &e)) return -1;
    char *tj = ds_byte_tokenizer_json();
    snprintf(path, sizeof path, "%s/tokenizer.json", data);
    if (ds_write_file_atomic(path, tj, strlen(tj), &e)) return -1;
    free(tj);
    ds_recipe_default(r);
    snprintf(r->data, sizeof r->data, "%s", data);
    snprintf(r->out, sizeof r->out, "%s/out", root);
    r->seq_len = 16; r->batch_size = 3; r->grad_accum = 2; r->steps = 6; r->warmup_steps = 2;
    r->eval_every = 0; r->eval_tokens = 200; r->ckpt_every = 0; r->peak_gflops = 1; r->lr = 1e-2;
    *model = json_loads("{\"vocab_size\":258,\"hidden_size\":16,\"intermediate_size\":24,\"moe_intermediate_size\":8,"
                        "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":12,\"kv_lora_rank\":8,"
                        "\"qk_nope_head_dim\":4,\"qk_rope_head_dim\":4,\"v_head_dim\":4,\"n_routed_experts\":4,"
                        "\"n_shared_experts\":1,\"num_experts_per_tok\":2,\"n_group\":2,\"topk_group\":1,"
                        "\"routed_scaling_factor\":2.5}", 0, NULL);
    return 0;
}

static void rm_tree(const char *root) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (strncmp(root, "/tmp/ds-train-test-", 19) == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

/* A run interrupted by a checkpoint and resumed has a bit-identical loss
 * trajectory and final parameters (same thread count). */
TEST(train_resume_bit_identical) {
    char root[64];
    ds_recipe r;
    json_t *model;
    if (make_run(root, &r, &model)) { CHECK(!"fixture"); return; }
    ds_err e = { 0 };
    ds_trainer a, b;
    double la[6], lb[6];
    CHECK(ds_trainer_init(&a, &r, model, &e) == 0);
    for (int i = 0; i < 6 && !e.code; i++) { ds_step_info s; CHECK(ds_trainer_step(&a, &s, &e) == 0); la[i] = s.loss; }
    /* second run: 3 steps, checkpoint, free, resume, 3 steps */
    snprintf(r.out, sizeof r.out, "%s/out2", root);
    CHECK(ds_trainer_init(&b, &r, model, &e) == 0);
    for (int i = 0; i < 3; i++) { ds_step_info s; CHECK(ds_trainer_step(&b, &s, &e) == 0); lb[i] = s.loss; }
    CHECK(ds_trainer_save(&b, NULL, &e) == 0);
    ds_trainer_free(&b);
    CHECK_MSG(ds_trainer_resume(&b, r.out, NULL, 0, &e) == 0, "%s", e.msg);
    CHECK_EQ_INT(b.step, 3);
    for (int i = 3; i < 6; i++) { ds_step_info s; CHECK(ds_trainer_step(&b, &s, &e) == 0); lb[i] = s.loss; }
    for (int i = 0; i < 6; i++) CHECK_MSG(la[i] == lb[i], "step %d: loss %.9g uninterrupted vs %.9g resumed", i + 1, la[i], lb[i]);
    CHECK(la[5] < la[0]);
    CHECK(a.m->n_floats == b.m->n_floats && memcmp(a.m->w, b.m->w, (size_t)a.m->n_floats * 4) == 0);
    CHECK(memcmp(a.opt.m, b.opt.m, (size_t)a.m->n_floats * 4) == 0 && memcmp(a.opt.v, b.opt.v, (size_t)a.m->n_floats * 4) == 0);
    ds_trainer_free(&a);
    ds_trainer_free(&b);
    json_decref(model);
    rm_tree(root);
}

/* A non-finite gradient skips the update (parameters, moments, bias stay
 * as they were); non-finite parameters are never written to a checkpoint. */
TEST(train_nan_guard) {
    char root[64];
    ds_recipe r;
    json_t *model;
    if (make_run(root, &r, &model)) { CHECK(!"fixture"); return; }
    ds_err e = { 0 };
    ds_trainer t;
    CHECK(ds_trainer_init(&t, &r, model, &e) == 0);
    ds_step_info s;
    CHECK(ds_trainer_step(&t, &s, &e) == 0 && !s.skipped);
    t.debug_nan_step = 1;
    size_t bytes = (size_t)t.m->n_floats * 4;
    float *w0 = malloc(bytes), *m0 = malloc(bytes);
    memcpy(w0, t.m->w, bytes);
    memcpy(m0, t.opt.m, bytes);
    CHECK(ds_trainer_step(&t, &s, &e) == 0);
    CHECK(s.skipped);
    CHECK(memcmp(w0, t.m->w, bytes) == 0 && memcmp(m0, t.opt.m, bytes) == 0);
    CHECK(ds_trainer_step(&t, &s, &e) == 0 && !s.skipped && isfinite(s.loss));
    CHECK(ds_params_finite(t.m));
    CHECK(ds_trainer_save(&t, NULL, &e) == 0);
    /* poisoned parameters: refused, and nothing new on disk */
    t.m->w[t.m->params[1].off] = INFINITY;
    ds_err e2 = { 0 };
    t.step++;
    CHECK(ds_trainer_save(&t, NULL, &e2) == DS_ERANGE);
    char p[1200];
    snprintf(p, sizeof p, "%s/ckpt-%08lld", r.out, (long long)t.step);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/ckpt-%08lld/model.safetensors", r.out, (long long)t.step - 1);
    CHECK(access(p, F_OK) == 0);
    /* consecutive non-finite steps beyond max_nan_skips stop training */
    t.r.max_nan_skips = 2;
    int rc = 0;
    for (int i = 0; i < 4 && !rc; i++) rc = ds_trainer_step(&t, &s, &e2);
    CHECK(rc == DS_ERANGE);
    free(w0);
    free(m0);
    ds_trainer_free(&t);
    json_decref(model);
    rm_tree(root);
}

/* ------------------------------------------------------------ PNG */

#include "io/png.h"

/* Our encoder's output decoded by an independent inflate (Python's zlib)
 * gives back the exact pixels; chunk CRCs are checked here. Skipped (with a
 * note) when python3 is not installed. */
TEST(train_png_roundtrip) {
    enum { W = 37, H = 23 };
    static uint8_t px[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = px + (y * W + x) * 3;
            bool flat = y < 10 || x > 30;   /* runs for both match distances, noise elsewhere */
            p[0] = flat ? 255 : (uint8_t)(x * 7 + y * 13);
            p[1] = flat ? 255 : (uint8_t)(x * x + y);
            p[2] = flat ? 250 : (uint8_t)(x ^ y);
        }
    uint8_t *buf;
    size_t len;
    ds_err e = { 0 };
    CHECK(ds_png_encode(px, W, H, &buf, &len, &e) == 0);
    CHECK(len > 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0);
    size_t off = 8;
    int chunks = 0;
    while (off + 12 <= len) {
        uint32_t n = (uint32_t)buf[off] << 24 | (uint32_t)buf[off + 1] << 16 | (uint32_t)buf[off + 2] << 8 | buf[off + 3];
        uint32_t crc = (uint32_t)buf[off + 8 + n] << 24 | (uint32_t)buf[off + 9 + n] << 16 | (uint32_t)buf[off + 10 + n] << 8 |
                       buf[off + 11 + n];
        CHECK(ds_crc32(buf + off + 4, n + 4) == crc);
        off += 12 + n;
        chunks++;
    }
    CHECK(off == len && chunks == 3);
    char dir[] = "/tmp/ds-train-test-XXXXXX";
    if (!mkdtemp(dir)) { CHECK(!"mkdtemp"); free(buf); return; }
    char png[128], raw[128], cmd[1024];
    snprintf(png, sizeof png, "%s/a.png", dir);
    snprintf(raw, sizeof raw, "%s/a.rgb", dir);
    CHECK(ds_write_file_atomic(png, buf, len, &e) == 0);
    CHECK(ds_write_file_atomic(raw, px, sizeof px, &e) == 0);
    if (system("python3 -c 'import zlib' 2>/dev/null") != 0) {
        ds_test_skip("python3 not found: the zlib round trip of the PNG");
    } else {
        snprintf(cmd, sizeof cmd,
                 "python3 -c \"import zlib,struct,sys\nd=open('%s','rb').read();o=8;idat=b''\n"
                 "while o<len(d):\n n=struct.unpack('>I',d[o:o+4])[0];t=d[o+4:o+8]\n if t==b'IDAT': idat+=d[o+8:o+8+n]\n o+=12+n\n"
                 "z=zlib.decompress(idat);w,h=%d,%d;s=w*3+1\n"
                 "pix=b''.join(z[y*s+1:(y+1)*s] for y in range(h))\nassert all(z[y*s]==0 for y in range(h))\n"
                 "sys.exit(0 if pix==open('%s','rb').read() else 1)\"",
                 png, W, H, raw);
        CHECK_MSG(system(cmd) == 0, "python zlib did not decode our PNG to the same pixels");
    }
    free(buf);
    rm_tree(dir);
}

/* ------------------------------------------------------------ small GEMMs */

#include "tensor/ops.h"
#include "train/tgemm.h"

/* max |a - b| / max |b|; a NaN or inf anywhere gives inf (fmax would skip a NaN) */
static double max_rel(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!isfinite(d)) return INFINITY;
        md = fmax(md, d);
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / fmax(mb, 1e-30);
}

/* tr_gemm_{nt,nn,tn} against ds_sgemm_ref on edge shapes (rows % 6, cols
 * % 16, K across the 256 block), strided operands, alpha, accumulate; fp32
 * summation order differs: max |diff| / max |ref| <= 1e-5. */
TEST(train_gemm_vs_ref) {
    ds_rng r; ds_rng_seed(&r, 21);
    const int64_t shapes[][3] = { { 1, 1, 1 }, { 5, 7, 3 }, { 6, 16, 8 }, { 13, 33, 300 }, { 64, 80, 258 }, { 7, 258, 17 },
                                  { 130, 48, 513 }, { 36, 64, 1000 }, { 25, 130, 129 }, { 30, 40, 2100 } };
    int threads = ds_threads_get();
    ds_threads_set(2);   /* rows of C split across two threads (the larger shapes) */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], pad = 3;
        for (int mode = 0; mode < 3; mode++)
            for (int acc = 0; acc < 2; acc++) {
                bool ta = mode == 2, tb = mode == 0;
                int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
                int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
                float *A = malloc((size_t)na * 4), *B = malloc((size_t)nb * 4), *C1 = malloc((size_t)nc * 4), *C2 = malloc((size_t)nc * 4);
                fill(A, na, &r, 1); fill(B, nb, &r, 1); fill(C1, nc, &r, 1);
                memcpy(C2, C1, (size_t)nc * 4);
                float alpha = 0.7f;
                if (mode == 0) tr_gemm_nt(C1, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
                if (mode == 1) tr_gemm_nn(C1, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
                if (mode == 2) tr_gemm_tn(C1, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
                ds_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, acc ? 1.0f : 0.0f, C2, ldc);
                /* the M x N block matches; padding columns are untouched */
                double md = 0, mb = 0;
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        double d = fabs((double)C1[i * ldc + j] - C2[i * ldc + j]);
                        if (j >= N) CHECK_MSG(d == 0, "mode %d: wrote padding column %lld", mode, (long long)j);
                        md = ds_max_err(md, d);
                        mb = fmax(mb, fabs((double)C2[i * ldc + j]));
                    }
                CHECK_MSG(md / mb <= 1e-5, "mode %d acc %d M %lld N %lld K %lld: rel err %g", mode, acc, (long long)M,
                          (long long)N, (long long)K, md / mb);
                free(A); free(B); free(C1); free(C2);
            }
    }
    ds_threads_set(threads);
}

/* The assembly 6x16 kernel (full tiles) and the intrinsic edge kernels
 * (kern1..kern6) sum in the same order: rows 0..4 of a 12-row product
 * (two full tiles) equal, bit for bit, the same rows computed as a 5-row
 * product (one edge tile), for every mode and K (odd tails, K blocks). */
TEST(train_gemm_asm_matches_intrinsics) {
    ds_rng r; ds_rng_seed(&r, 23);
    const int64_t Ks[] = { 1, 3, 4, 5, 128, 383, 385, 700 };
    const int64_t M = 12, N = 32;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
        for (int mode = 0; mode < 3; mode++) {
            int64_t K = Ks[ki];
            float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(N * K) * 4);
            float *C12 = malloc((size_t)(M * N) * 4), *C5 = malloc((size_t)(M * N) * 4);
            fill(A, M * K, &r, 1); fill(B, N * K, &r, 1);
            for (int pass = 0; pass < 2; pass++) {
                int64_t m = pass ? 5 : M;
                float *C = pass ? C5 : C12;
                /* tn reads A as [K][M]: the 5-row product takes A's first 5 columns (lda = M) */
                if (mode == 0) tr_gemm_nt(C, N, A, K, B, K, m, N, K, 0.5f, false);
                if (mode == 1) tr_gemm_nn(C, N, A, K, B, N, m, N, K, 0.5f, false);
                if (mode == 2) tr_gemm_tn(C, N, A, M, B, N, m, N, K, 0.5f, false);
            }
            CHECK_MSG(memcmp(C12, C5, (size_t)(5 * N) * 4) == 0, "mode %d K %lld: full tile != edge tile", mode,
                      (long long)K);
            free(A); free(B); free(C12); free(C5);
        }
}

/* The causal variants agree with the dense reference on triangular inputs
 * and read nothing above the band tgemm.h allows: A[r][c] is 0 for
 * r < c <= b·floor(r/b) + b - 1 and NaN beyond (a read there would turn the
 * result into NaN, which max_rel reports as inf), b = tr_gemm_causal_band().
 * b = 0 (the dense fallback without AVX2) may read all of A: zeros there. */
TEST(train_gemm_causal) {
    ds_rng r; ds_rng_seed(&r, 22);
    const int64_t b = tr_gemm_causal_band();
    const int64_t Ts[] = { 1, 9, 17, 25, 33, 41, 100, 400 };
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        int64_t T = Ts[ti];
        int64_t N = 19, K = 11;
        float *P = malloc((size_t)(T * T) * 4), *Pz = malloc((size_t)(T * T) * 4), *V = malloc((size_t)(T * N) * 4);
        float *C1 = calloc((size_t)(T * N), 4), *C2 = calloc((size_t)(T * N), 4);
        float *Q = malloc((size_t)(T * K) * 4), *Kk = malloc((size_t)(T * K) * 4);
        float *S1 = malloc((size_t)(T * T) * 4), *S2 = malloc((size_t)(T * T) * 4);
        fill(V, T * N, &r, 1); fill(Q, T * K, &r, 1); fill(Kk, T * K, &r, 1);
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) {
                float v = ds_rng_normal(&r);
                P[i * T + j] = j <= i ? v : (b == 0 || j <= b * (i / b) + b - 1) ? 0.0f : NAN;
                Pz[i * T + j] = j <= i ? v : 0.0f;
            }
        tr_gemm_nn_causal(C1, N, P, T, V, N, T, N, 1.0f, false);
        ds_sgemm_ref(false, false, T, N, T, 1.0f, Pz, T, V, N, 0.0f, C2, N);
        CHECK_MSG(max_rel(C1, C2, T * N) <= 1e-5, "nn causal T %lld: %g", (long long)T, max_rel(C1, C2, T * N));
        tr_gemm_tn_causal(C1, N, P, T, V, N, T, N, 1.0f, false);
        ds_sgemm_ref(true, false, T, N, T, 1.0f, Pz, T, V, N, 0.0f, C2, N);
        CHECK_MSG(max_rel(C1, C2, T * N) <= 1e-5, "tn causal T %lld: %g", (long long)T, max_rel(C1, C2, T * N));
        tr_gemm_nt_causal(S1, T, Q, K, Kk, K, T, K, 0.5f);
        ds_sgemm_ref(false, true, T, T, K, 0.5f, Q, K, Kk, K, 0.0f, S2, T);
        double md = 0;
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j <= i; j++) {
                double d = fabs((double)S1[i * T + j] - S2[i * T + j]);
                md = ds_max_err(md, d);
            }
        CHECK_MSG(md <= 1e-5, "nt causal T %lld: %g", (long long)T, md);
        /* the AVX-512 rows (32-column panels, the diagonal one cut to the tile's rows)
         * against the AVX2 6x16 tiles: the same bits on and below the diagonal */
        tr_gemm_force_avx2(true);
        tr_gemm_nt_causal(S2, T, Q, K, Kk, K, T, K, 0.5f);
        tr_gemm_force_avx2(false);
        for (int64_t i = 0; i < T; i++)
            CHECK_MSG(!memcmp(S1 + i * T, S2 + i * T, (size_t)(i + 1) * 4), "nt causal T %lld row %lld: AVX-512 vs AVX2",
                      (long long)T, (long long)i);
        free(P); free(Pz); free(V); free(C1); free(C2); free(Q); free(Kk); free(S1); free(S2);
    }
}

/* A whole step with every vectorized kernel (AVX2 RMSNorm, SiLU, exp; our
 * GEMMs) against the scalar twins + OpenBLAS: same losses (1e-5 relative)
 * and gradients (max |diff| / max |ref| <= 1e-4 per tensor). */
TEST(train_fast_vs_scalar_step) {
    ds_config c;
    tiny_config(&c);
    ds_tmodel *m;
    ds_err e = { 0 };
    CHECK(ds_tmodel_init(&m, &c, true, &e) == 0);
    if (!m) return;
    ds_rng r; ds_rng_seed(&r, 31);
    ds_tmodel_init_weights(m, 0.3f, &r);
    int32_t tok[3 * 20];
    for (int i = 0; i < 60; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % 40);
    ds_loss_opts o = { 0.3f, 0.5f, 1.0f, false };
    ds_losses l1, l2;
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, 3, 20, &o, &l1, &e) == 0);
    float *g1 = malloc((size_t)m->n_floats * 4);
    memcpy(g1, m->g, (size_t)m->n_floats * 4);
    tr_force_scalar(true);
    tr_gemm_force_blas(true);
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, 3, 20, &o, &l2, &e) == 0);
    tr_force_scalar(false);
    tr_gemm_force_blas(false);
    CHECK_MSG(fabs(l1.loss - l2.loss) <= 1e-5 * fabs(l2.loss), "loss %.9g vs %.9g", l1.loss, l2.loss);
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        double md = 0, mr = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            md = ds_max_err(md, fabs((double)g1[p->off + j] - m->g[p->off + j]));
            mr = fmax(mr, fabs((double)m->g[p->off + j]));
        }
        CHECK_MSG(md <= 1e-4 * mr + 1e-9, "%s: fast vs scalar %.3g (max %.3g)", p->name, md, mr);
    }
    free(g1);
    ds_tmodel_free(m);
}

/* ------------------------------------------------------------ optimizer */

#include "train/optim.h"

/* AdamW against a double-precision transcription of torch.optim.AdamW's
 * documented update (decoupled decay first, then the bias-corrected step),
 * 3 steps with fresh gradients; norms and e_score_correction_bias: no
 * decay / frozen. fp32 vs double: observed 1.05e-6 relative (floor 1e-3 for
 * weights near zero); we require 1e-5. */
TEST(train_adamw_matches_reference) {
    ds_config c;
    tiny_config(&c);
    ds_tmodel *m;
    ds_err e = { 0 };
    CHECK(ds_tmodel_init(&m, &c, false, &e) == 0);
    if (!m) return;
    ds_rng r; ds_rng_seed(&r, 41);
    ds_tmodel_init_weights(m, 0.5f, &r);
    for (int64_t i = 0; i < m->n_floats; i++) m->w[i] += 0.1f * ds_rng_normal(&r);
    ds_adamw o;
    CHECK(ds_adamw_init(&o, m, 0.9f, 0.95f, 1e-8f, 0.1f, &e) == 0);
    int64_t n = m->n_floats;
    double *w = malloc((size_t)n * 8), *mm = calloc((size_t)n, 8), *vv = calloc((size_t)n, 8);
    for (int64_t i = 0; i < n; i++) w[i] = m->w[i];
    float lrs[3] = { 1e-2f, 5e-3f, 2e-3f };
    for (int t = 1; t <= 3; t++) {
        for (int64_t i = 0; i < n; i++) m->g[i] = ds_rng_normal(&r);
        ds_adamw_step(&o, m, lrs[t - 1]);
        for (int64_t p = 0; p < m->n_params; p++) {
            const ds_tparam *pp = &m->params[p];
            if (!pp->trainable) continue;
            for (int64_t j = pp->off; j < pp->off + pp->numel; j++) {
                double g = m->g[j], lr = lrs[t - 1];
                if (pp->decay) w[j] *= 1.0 - lr * 0.1;
                mm[j] = 0.9 * mm[j] + 0.1 * g;
                vv[j] = 0.95 * vv[j] + 0.05 * g * g;
                double mh = mm[j] / (1 - pow(0.9, t)), vh = vv[j] / (1 - pow(0.95, t));
                w[j] -= lr * mh / (sqrt(vh) + 1e-8);
            }
        }
    }
    double worst = 0;
    for (int64_t p = 0; p < m->n_params; p++) {
        const ds_tparam *pp = &m->params[p];
        for (int64_t j = pp->off; j < pp->off + pp->numel; j++)
            worst = ds_max_err(worst, fabs(m->w[j] - w[j]) / fmax(fabs(w[j]), 1e-3));
        if (!pp->trainable)   /* the bias is untouched */
            for (int64_t j = pp->off; j < pp->off + pp->numel; j++) CHECK(m->w[j] == (float)w[j]);
    }
    CHECK_MSG(worst < 1e-5, "AdamW vs reference: max relative error %g", worst);
    /* clipping folded into the update: the same bits as scaling the gradients first */
    float *w0 = malloc((size_t)n * 4), *g0 = malloc((size_t)n * 4), *w1 = malloc((size_t)n * 4);
    float *m1 = malloc((size_t)n * 4), *v1 = malloc((size_t)n * 4);
    float *m0 = malloc((size_t)n * 4), *v0 = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) m->g[i] = 3 * ds_rng_normal(&r);
    memcpy(w0, m->w, (size_t)n * 4); memcpy(g0, m->g, (size_t)n * 4);
    memcpy(m0, o.m, (size_t)n * 4); memcpy(v0, o.v, (size_t)n * 4);
    ds_adamw_step_scaled(&o, m, 1e-2f, 0.3f);
    CHECK(!memcmp(g0, m->g, (size_t)n * 4));   /* gradients left unscaled */
    memcpy(w1, m->w, (size_t)n * 4); memcpy(m1, o.m, (size_t)n * 4); memcpy(v1, o.v, (size_t)n * 4);
    memcpy(m->w, w0, (size_t)n * 4); memcpy(o.m, m0, (size_t)n * 4); memcpy(o.v, v0, (size_t)n * 4);
    o.t--;
    ds_grad_scale(m, 0.3f);
    ds_adamw_step(&o, m, 1e-2f);
    CHECK(!memcmp(w1, m->w, (size_t)n * 4) && !memcmp(m1, o.m, (size_t)n * 4) && !memcmp(v1, o.v, (size_t)n * 4));
    free(w0); free(g0); free(w1); free(m1); free(v1); free(m0); free(v0);
    free(w); free(mm); free(vv);
    ds_adamw_free(&o);
    ds_tmodel_free(m);
}

TEST(train_schedule_and_bias_rule) {
    /* warmup: lr·(s+1)/W; cosine from lr to min_lr over [W, total]; constant */
    CHECK_NEAR(ds_lr_at(0, 10, 110, 1.0f, 0.1f, DS_SCHED_COSINE), 0.1, 1e-7);
    CHECK_NEAR(ds_lr_at(9, 10, 110, 1.0f, 0.1f, DS_SCHED_COSINE), 1.0, 1e-7);
    CHECK_NEAR(ds_lr_at(10, 10, 110, 1.0f, 0.1f, DS_SCHED_COSINE), 1.0, 1e-7);
    CHECK_NEAR(ds_lr_at(60, 10, 110, 1.0f, 0.1f, DS_SCHED_COSINE), 0.55, 1e-6);
    CHECK_NEAR(ds_lr_at(110, 10, 110, 1.0f, 0.1f, DS_SCHED_COSINE), 0.1, 1e-7);
    CHECK_NEAR(ds_lr_at(500, 10, 110, 1.0f, 0.1f, DS_SCHED_CONSTANT), 1.0, 1e-7);
    /* b_i += γ·sign(mean − load_i) in every MoE layer */
    ds_config c;
    tiny_config(&c);
    ds_tmodel *m;
    ds_err e = { 0 };
    CHECK(ds_tmodel_init(&m, &c, true, &e) == 0);
    if (!m) return;
    int64_t E = c.n_routed_experts;
    for (int64_t l = 0; l < c.n_layer + m->n_mtp; l++) {
        if (!m->W.layers[l].router_bias) continue;
        int64_t load[4] = { 6, 2, 4, 4 };   /* mean 4: over, under, equal, equal */
        for (int64_t i = 0; i < E; i++) m->load[l * E + i] = load[i];
    }
    double mv = ds_bias_update(m, 0.01f);
    CHECK_NEAR(mv, 0.5, 1e-12);   /* max/mean − 1 */
    for (int64_t l = 0; l < c.n_layer + m->n_mtp; l++) {
        const float *b = m->W.layers[l].router_bias;
        if (!b) continue;
        CHECK(b[0] == -0.01f && b[1] == 0.01f && b[2] == 0.0f && b[3] == 0.0f);
    }
    ds_tmodel_free(m);
}
