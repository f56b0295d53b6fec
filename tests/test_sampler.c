/*
 * test_sampler.c - sampling: greedy, seeds, top-k/top-p/min-p truncation,
 * penalties, and that draws follow the softmax distribution.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/sampler.h"
#include "tensor/vmath.h"
#include "core/rng.h"

static ds_sampler make(ds_sampler_params p, int64_t V) {
    ds_sampler s;
    ds_err e = { 0 };
    if (ds_sampler_init(&s, &p, V, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return s;
}

TEST(sampler_greedy_and_ties) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    ds_sampler s = make(p, 5);
    float l[5] = { 1, 3, 3, -1, 2 };
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 1);   /* lowest id wins a tie */
    ds_sampler_free(&s);
}

TEST(sampler_seed_reproducible_and_distinct) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f;
    int64_t V = 50;
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 99 : 7;
        ds_sampler s = make(p, V);
        for (int i = 0; i < 64; i++) {
            float l[50];
            for (int v = 0; v < V; v++) l[v] = (float)((v * 37) % 11) * 0.3f;
            int32_t t = ds_sampler_sample(&s, l);
            (run == 0 ? a : run == 1 ? b : c)[i] = t;
        }
        ds_sampler_free(&s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

TEST(sampler_follows_softmax) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 2.0f;
    p.seed = 1;
    ds_sampler s = make(p, 4);
    float base[4] = { 0.0f, 1.0f, 2.0f, -1.0f };
    int counts[4] = { 0 };
    int N = 40000;
    for (int i = 0; i < N; i++) {
        float l[4];
        memcpy(l, base, sizeof l);
        counts[ds_sampler_sample(&s, l)]++;
    }
    double z = 0, q[4];
    for (int v = 0; v < 4; v++) z += exp(base[v] / 2.0);
    double chi2 = 0;
    for (int v = 0; v < 4; v++) {
        q[v] = exp(base[v] / 2.0) / z;
        double ex = q[v] * N;
        chi2 += (counts[v] - ex) * (counts[v] - ex) / ex;
    }
    CHECK_MSG(chi2 < 16.3, "chi2 = %g (3 dof, p = 0.001)", chi2);   /* would fail for T=1 or no temperature */
    ds_sampler_free(&s);
}

TEST(sampler_truncation) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f;
    float base[6] = { 5, 4.9f, 1, 0, -1, -2 };
    /* top-k 2: only ids 0, 1 */
    p.top_k = 2;
    ds_sampler s = make(p, 6);
    for (int i = 0; i < 500; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        int32_t t = ds_sampler_sample(&s, l);
        CHECK(t == 0 || t == 1);
    }
    /* top-k at a tie keeps the lower ids, as the twin's sort does */
    float tie[6] = { 5, 3, 3, 3, 1, 3 };
    int32_t kept[6];
    CHECK_EQ_INT(ds_sampler_kept(&s, tie, kept), 2);
    CHECK(kept[0] == 0 && kept[1] == 1);
    ds_sampler_free(&s);
    /* top-p tiny: always the argmax */
    p.top_k = 0;
    p.top_p = 0.01f;
    s = make(p, 6);
    for (int i = 0; i < 200; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        CHECK_EQ_INT(ds_sampler_sample(&s, l), 0);
    }
    ds_sampler_free(&s);
    /* min-p 0.5: ids whose prob >= half the top: 0 and 1 only */
    p.top_p = 1.0f;
    p.min_p = 0.5f;
    s = make(p, 6);
    int seen1 = 0;
    for (int i = 0; i < 500; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        int32_t t = ds_sampler_sample(&s, l);
        CHECK(t == 0 || t == 1);
        seen1 |= t == 1;
    }
    CHECK(seen1);
    ds_sampler_free(&s);
}

TEST(sampler_penalties) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.frequency_penalty = 1.0f;
    ds_sampler s = make(p, 3);
    float l[3] = { 2.0f, 1.5f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 0);
    ds_sampler_accept(&s, 0);
    float l2[3] = { 2.0f, 1.5f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l2), 1);   /* 2 - 1 < 1.5 */
    CHECK_NEAR(l2[0], 1.0, 1e-6);
    ds_sampler_free(&s);
    /* repetition penalty applies to prompt tokens too: positive logits divided */
    ds_sampler_params_default(&p);
    p.repetition_penalty = 2.0f;
    s = make(p, 3);
    int32_t prompt[1] = { 0 };
    ds_sampler_add_prompt(&s, prompt, 1);
    float l3[3] = { 2.0f, 1.5f, -1.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l3), 1);
    CHECK_NEAR(l3[0], 1.0, 1e-6);
    ds_sampler_free(&s);
    /* presence penalty: flat once */
    ds_sampler_params_default(&p);
    p.presence_penalty = 0.4f;
    s = make(p, 2);
    ds_sampler_accept(&s, 0);
    ds_sampler_accept(&s, 0);
    float l4[2] = { 1.0f, 0.7f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l4), 1);
    CHECK_NEAR(l4[0], 0.6, 1e-6);
    ds_sampler_free(&s);
}

/* ---- the fast sampler against its sorting twin (sampler_ref.c) ---- */

static void fill_logits(float *l, int64_t V, uint64_t seed, float scale, bool peaks) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < V; i++) {   /* roughly normal, plus a few peaks and repeated values */
        double u = ds_rng_uniform(&r) + ds_rng_uniform(&r) + ds_rng_uniform(&r) - 1.5;
        l[i] = (float)(u * scale);
        if (peaks && i % 97 == 5) l[i] += 3.0f * scale;
        if (i % 211 == 7 && i > 0) l[i] = l[i - 1];
    }
}

TEST(vmath_twins_bit_exact) {
    /* every length 0..70 and a 129,280-wide row, with -inf, NaN and ties:
     * the dispatched passes equal the scalar twins bit for bit */
    static float x[129280], a[129280], b[129280], ya[129280], yb[129280];
    int64_t lens[72];
    for (int i = 0; i < 71; i++) lens[i] = i;
    lens[71] = 129280;
    for (int li = 0; li < 72; li++) {
        int64_t n = lens[li];
        fill_logits(x, n, 100 + (uint64_t)n, 4.0f, true);
        if (n > 3) x[n / 2] = -INFINITY, x[n / 3] = NAN, x[n - 1] = x[0];
        CHECK_MSG(memcmp(&(float){ ds_vmax(x, n) }, &(float){ ds_vmax_ref(x, n) }, 4) == 0, "vmax n=%lld", (long long)n);
        memcpy(a, x, (size_t)n * 4), memcpy(b, x, (size_t)n * 4);
        float ma = ds_vdiv_max(a, n, 0.7f), mb = ds_vdiv_max_ref(b, n, 0.7f);
        CHECK_MSG(memcmp(&ma, &mb, 4) == 0 && memcmp(a, b, (size_t)n * 4) == 0, "vdiv_max n=%lld", (long long)n);
        double ba[520], bb[520];
        double sa = ds_vexp_sum(ya, a, ma, n, ba), sb = ds_vexp_sum_ref(yb, b, mb, n, bb);
        CHECK_MSG(memcmp(ba, bb, (size_t)((n + DS_VBLOCK - 1) / DS_VBLOCK) * sizeof *ba) == 0, "block sums n=%lld", (long long)n);
        CHECK_MSG(sa == sb && memcmp(ya, yb, (size_t)n * 4) == 0, "vexp_sum n=%lld: %.17g vs %.17g", (long long)n, sa, sb);
        for (int64_t i = 0; i < n; i++)
            if (x[i] != x[i] || x[i] == -INFINITY) CHECK_MSG(ya[i] == 0.0f, "exp of NaN/-inf at %lld", (long long)i);
        float th[8] = { 1.0f, 0.5f, 0.25f, 1e-2f, 1e-3f, 1e-4f, 1e-6f, 0.0f };
        double mha[8], mhb[8];
        ds_vmass_above(ya, n, th, 8, mha);
        ds_vmass_above_ref(yb, n, th, 8, mhb);
        CHECK_MSG(memcmp(mha, mhb, sizeof mha) == 0, "mass_above n=%lld", (long long)n);
        {   /* the fused pass: the same y, sum and masses as the two passes */
            static float yf[129280], yg[129280];
            double mf[8], mg[8];
            double sf = ds_vexp_sum_mass(yf, a, ma, n, th, 8, mf), sg = ds_vexp_sum_mass_ref(yg, b, mb, n, th, 8, mg);
            CHECK_MSG(sf == sg && sf == sa && memcmp(yf, ya, (size_t)n * 4) == 0 && memcmp(yg, yb, (size_t)n * 4) == 0 &&
                      memcmp(mf, mha, sizeof mf) == 0 && memcmp(mg, mhb, sizeof mg) == 0, "vexp_sum_mass n=%lld", (long long)n);
        }
        static uint16_t ba16[129280], bb16[129280];
        for (float sc = 1.0f; sc <= 1000.0f; sc *= 31.0f) {
            float mxv = ds_vmax_ref(a, n);
            int64_t ca = ds_vbin16(ba16, a, ya, n, mxv, sc, 1e-3f, 1024);
            int64_t cr = ds_vbin16_ref(bb16, b, yb, n, mxv, sc, 1e-3f, 1024);
            CHECK_MSG(ca == cr, "vbin16 count n=%lld: %lld vs %lld", (long long)n, (long long)ca, (long long)cr);
            CHECK_MSG(memcmp(ba16, bb16, (size_t)n * 2) == 0, "vbin16 n=%lld scale %g", (long long)n, sc);
            static int32_t ea[129280], eb[129280];
            for (int v = 0; v < 1024; v += 97) {
                int64_t na = ds_vgather_eq16(ea, ba16, n, (uint16_t)v), nb2 = ds_vgather_eq16_ref(eb, bb16, n, (uint16_t)v);
                CHECK_MSG(na == nb2 && memcmp(ea, eb, (size_t)na * 4) == 0, "gather_eq16 n=%lld v=%d", (long long)n, v);
                na = ds_vgather_ne16(ea, ba16, n, (uint16_t)v), nb2 = ds_vgather_ne16_ref(eb, bb16, n, (uint16_t)v);
                CHECK_MSG(na == nb2 && memcmp(ea, eb, (size_t)na * 4) == 0, "gather_ne16 n=%lld v=%d", (long long)n, v);
            }
        }
        static int32_t ga[129280], gb[129280];
        for (float thr = 1e-4f; thr <= 1.0f; thr *= 10.0f) {
            int64_t na = ds_vgather_ge(ga, ya, n, thr), nb = ds_vgather_ge_ref(gb, yb, n, thr);
            CHECK_MSG(na == nb && memcmp(ga, gb, (size_t)na * 4) == 0, "gather n=%lld thr=%g", (long long)n, thr);
        }
    }
    /* the polynomial against libm's expf over [-87, 0] */
    double worst = 0;
    for (float v = -87.0f; v <= 0.0f; v += 0.00731f) {
        double rel = fabs((double)ds_exp_poly(v) - exp((double)v)) / exp((double)v);
        worst = ds_max_err(worst, rel);
    }
    CHECK_MSG(worst < 3e-7, "exp polynomial relative error %g", worst);
    CHECK(ds_exp_poly(0.0f) == 1.0f);
    float t[6] = { 1, NAN, 3, 3, -INFINITY, 2 };
    CHECK_EQ_INT(ds_vargmax(t, 6), 2);
    float allnan[3] = { NAN, NAN, NAN };
    CHECK_EQ_INT(ds_vargmax(allnan, 3), 0);
}

/* Chi-square critical value at p = 0.001 (Wilson-Hilferty). */
static double chi2_crit(int dof) {
    double k = dof, z = 3.0902;
    double c = 1.0 - 2.0 / (9.0 * k) + z * sqrt(2.0 / (9.0 * k));
    return k * c * c * c;
}

typedef struct { float t; int32_t k; float top_p, min_p, rep, freq, pres; } smp_case;

static const smp_case smp_cases[] = {
    { 1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f },      /* temperature alone */
    { 0.6f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f },
    { 0.8f, 0, 0.9f, 0.0f, 1.0f, 0.0f, 0.0f },      /* top-p */
    { 1.3f, 0, 0.5f, 0.0f, 1.0f, 0.0f, 0.0f },
    { 1.0f, 0, 1.0f, 0.05f, 1.0f, 0.0f, 0.0f },     /* min-p */
    { 0.9f, 0, 0.95f, 0.02f, 1.0f, 0.0f, 0.0f },    /* both */
    { 1.0f, 5, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f },      /* top-k */
    { 1.0f, 12, 0.8f, 0.01f, 1.0f, 0.0f, 0.0f },
    { 0.7f, 0, 0.9f, 0.0f, 1.3f, 0.4f, 0.3f },      /* with penalties */
};

/* For each setting on a 64-token vocabulary: every draw is a token the
 * twin can draw, the counts follow the twin's probabilities (chi-square,
 * p = 0.001), and on the top-k path the tokens are identical draw by draw. */
TEST(sampler_matches_sorting_twin) {
    enum { V = 64, N = 20000 };
    float base[V], l[V], lr[V], rp[V];
    int32_t rid[V];
    fill_logits(base, V, 42, 6.0f, false);
    for (size_t ci = 0; ci < sizeof smp_cases / sizeof *smp_cases; ci++) {
        const smp_case *c = &smp_cases[ci];
        ds_sampler_params p;
        ds_sampler_params_default(&p);
        p.temperature = c->t, p.top_k = c->k, p.top_p = c->top_p, p.min_p = c->min_p;
        p.repetition_penalty = c->rep, p.frequency_penalty = c->freq, p.presence_penalty = c->pres;
        p.seed = 1000 + ci;
        ds_sampler s = make(p, V), r = make(p, V);
        int32_t hist[5] = { 3, 17, 17, 40, 5 };
        for (int i = 0; i < 5; i++) ds_sampler_accept(&s, hist[i]), ds_sampler_accept(&r, hist[i]);
        memcpy(lr, base, sizeof lr);
        int64_t n = ds_sampler_candidates_ref(&r, lr, rid, rp);
        double z = 0, q[V] = { 0 };
        for (int64_t i = 0; i < n; i++) z += rp[i];
        for (int64_t i = 0; i < n; i++) q[rid[i]] = rp[i] / z;
        int counts[V] = { 0 }, same = 1;
        for (int d = 0; d < N; d++) {
            memcpy(l, base, sizeof l);
            int32_t t = ds_sampler_sample(&s, l);
            if (c->k > 0) {
                memcpy(lr, base, sizeof lr);
                same &= t == ds_sampler_sample_ref(&r, lr);
            }
            if (t < 0 || t >= V || q[t] == 0) { CHECK_MSG(0, "case %zu: drew %d, which the twin never draws", ci, t); break; }
            counts[t]++;
        }
        double chi2 = 0;
        int dof = -1;
        for (int v = 0; v < V; v++)
            if (q[v] > 0) { double ex = q[v] * N; chi2 += (counts[v] - ex) * (counts[v] - ex) / ex; dof++; }
        if (dof > 0) CHECK_MSG(chi2 < chi2_crit(dof), "case %zu: chi2 %.1f > %.1f (%d dof)", ci, chi2, chi2_crit(dof), dof);
        if (c->k > 0) CHECK_MSG(same, "case %zu: top-k draws differ from the twin's", ci);
        ds_sampler_free(&s);
        ds_sampler_free(&r);
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* At DeepSeek's vocabulary, for every setting that truncates: the set the
 * sampler can draw from is exactly the twin's (top-p / min-p cut at the same
 * token), rows with peaks, without, and nearly flat (a nucleus of most of
 * the vocabulary), and draws stay inside it; greedy is
 * the twin's argmax with a tie. */
TEST(sampler_large_vocab_truncation) {
    enum { V = 129280 };
    static float base[V], l[V], lr[V], rp[V];
    static int32_t rid[V], kid[V];
    static unsigned char in_set[V];
    int compared = 0;
    for (size_t ci = 0; ci < sizeof smp_cases / sizeof *smp_cases; ci++) {
        const smp_case *c = &smp_cases[ci];
        for (int peaks = 0; peaks < 3; peaks++) {   /* 2: nearly flat, as random weights give */
            fill_logits(base, V, 7 + ci, peaks == 2 ? 0.05f : 2.5f, peaks == 1);
            ds_sampler_params p;
            ds_sampler_params_default(&p);
            p.temperature = c->t, p.top_k = c->k, p.top_p = c->top_p, p.min_p = c->min_p;
            p.repetition_penalty = c->rep, p.frequency_penalty = c->freq, p.presence_penalty = c->pres;
            p.seed = 5 + ci;
            ds_sampler s = make(p, V), r = make(p, V);
            for (int i = 0; i < 300; i++) ds_sampler_accept(&s, i * 431 % V), ds_sampler_accept(&r, i * 431 % V);
            memcpy(lr, base, sizeof lr);
            int64_t n = ds_sampler_candidates_ref(&r, lr, rid, rp);
            memset(in_set, 0, sizeof in_set);
            for (int64_t i = 0; i < n; i++) in_set[rid[i]] = 1;
            if (c->k > 0 || c->top_p < 1.0f || c->min_p > 0.0f) {
                memcpy(l, base, sizeof l);
                int64_t k = ds_sampler_kept(&s, l, kid);
                qsort(rid, (size_t)n, sizeof *rid, cmp_i32);
                qsort(kid, (size_t)k, sizeof *kid, cmp_i32);
                CHECK_MSG(k == n && memcmp(kid, rid, (size_t)n * sizeof *rid) == 0,
                          "case %zu peaks %d: keeps %lld tokens, the twin %lld", ci, peaks, (long long)k, (long long)n);
                compared++;
            }
            for (int d = 0; d < 100; d++) {
                memcpy(l, base, sizeof l);
                int32_t t = ds_sampler_sample(&s, l);
                if (t < 0 || t >= V || !in_set[t]) { CHECK_MSG(0, "case %zu: drew %d outside the twin's %lld", ci, t, (long long)n); break; }
            }
            ds_sampler_free(&s);
            ds_sampler_free(&r);
        }
    }
    CHECK(compared >= 18);
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    ds_sampler s = make(p, V);
    fill_logits(base, V, 99, 2.0f, true);
    base[70000] = base[90000] = 50.0f;
    memcpy(l, base, sizeof l);
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 70000);
    ds_sampler_free(&s);
}

/* Temperature alone draws by walking block sums (256 ids each) then one
 * block: over 4096 ids the draws, binned by 64 ids, follow the softmax; and
 * top-p / min-p draws follow the sorting twin's distribution. */
TEST(sampler_block_walk_follows_softmax) {
    enum { V = 4096, N = 40000, BIN = 64 };
    static float base[V], l[V];
    fill_logits(base, V, 3, 2.0f, false);
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 11;
    ds_sampler s = make(p, V);
    double q[V / BIN] = { 0 }, z = 0;
    for (int v = 0; v < V; v++) z += exp((double)base[v]);
    for (int v = 0; v < V; v++) q[v / BIN] += exp((double)base[v]) / z;
    int counts[V / BIN] = { 0 };
    for (int d = 0; d < N; d++) {
        memcpy(l, base, sizeof l);
        counts[ds_sampler_sample(&s, l) / BIN]++;
    }
    double chi2 = 0;
    for (int b = 0; b < V / BIN; b++) chi2 += (counts[b] - q[b] * N) * (counts[b] - q[b] * N) / (q[b] * N);
    CHECK_MSG(chi2 < chi2_crit(V / BIN - 1), "chi2 %.1f > %.1f", chi2, chi2_crit(V / BIN - 1));
    ds_sampler_free(&s);
    /* the nucleus path (bins of many ids each, drawn bin first, then in id
     * order within the bin) against the twin's probabilities, min-p too */
    static float lr[V], rp[V];
    static int32_t rid[V];
    const float tp[3] = { 0.95f, 0.8f, 1.0f }, mp[3] = { 0.0f, 0.02f, 0.05f };
    for (int ci = 0; ci < 3; ci++) {
        p.top_p = tp[ci], p.min_p = mp[ci], p.seed = 20 + (uint64_t)ci;
        ds_sampler a = make(p, V), r = make(p, V);
        memcpy(lr, base, sizeof lr);
        int64_t n = ds_sampler_candidates_ref(&r, lr, rid, rp);
        double qb[V / BIN] = { 0 }, zr = 0;
        for (int64_t i = 0; i < n; i++) zr += rp[i];
        for (int64_t i = 0; i < n; i++) qb[rid[i] / BIN] += rp[i] / zr;
        enum { NN = 12000 };
        int cb[V / BIN] = { 0 };
        for (int d = 0; d < NN; d++) {
            memcpy(l, base, sizeof l);
            cb[ds_sampler_sample(&a, l) / BIN]++;
        }
        double x2 = 0;
        int dof = -1;
        for (int b = 0; b < V / BIN; b++)
            if (qb[b] > 0) { x2 += (cb[b] - qb[b] * NN) * (cb[b] - qb[b] * NN) / (qb[b] * NN); dof++; }
            else CHECK_MSG(cb[b] == 0, "case %d: %d draws in bin %d, which the twin never draws", ci, cb[b], b);
        CHECK_MSG(x2 < chi2_crit(dof), "case %d: chi2 %.1f > %.1f", ci, x2, chi2_crit(dof));
        ds_sampler_free(&a);
        ds_sampler_free(&r);
    }
}

/* Top-p whose nucleus reaches far down: 10 ids hold 10 units of mass and
 * 129,270 ids at e = 2^-14 hold 7.9, so top-p 0.9 must keep ~100K of the
 * small ones (the twin's set): about 38 % of the draws land outside the 10. */
TEST(sampler_top_p_deep_nucleus) {
    enum { V = 129280, N = 300 };
    static float base[V], l[V], rp[V];
    static int32_t rid[V];
    for (int v = 0; v < V; v++) base[v] = v < 10 ? 0.0f : -14.0f * 0.69314718f;
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f, p.top_p = 0.9f, p.seed = 4;
    ds_sampler s = make(p, V), r = make(p, V);
    memcpy(l, base, sizeof l);
    int64_t n = ds_sampler_candidates_ref(&r, l, rid, rp);
    CHECK_MSG(n > 90000 && n < V, "twin keeps %lld", (long long)n);
    int outside = 0;
    for (int d = 0; d < N; d++) {
        memcpy(l, base, sizeof l);
        int32_t t = ds_sampler_sample(&s, l);
        outside += t >= 10;
        if (t >= n + 10) { CHECK_MSG(0, "drew %d beyond the nucleus", t); break; }
    }
    CHECK_MSG(outside > N / 4 && outside < N / 2, "%d of %d draws outside the top 10 (expected ~38 %%)", outside, N);
    ds_sampler_free(&s);
    ds_sampler_free(&r);
}

/* Penalties touch only the tokens seen, and a reset forgets them. */
TEST(sampler_history_reset) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.presence_penalty = 2.0f;
    ds_sampler s = make(p, 4);
    ds_sampler_accept(&s, 0);
    float l[4] = { 1.0f, 0.5f, 0.0f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 1);
    CHECK(l[1] == 0.5f && l[2] == 0.0f);
    ds_sampler_reset(&s, false);
    float l2[4] = { 1.0f, 0.5f, 0.0f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l2), 0);
    CHECK(s.n_hist == 0);
    ds_sampler_free(&s);
}

TEST(sampler_rejects_bad_params) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    ds_err e = { 0 };
    p.top_p = 0.0f;
    CHECK(ds_sampler_params_check(&p, &e) == DS_ERANGE && strstr(e.msg, "top_p"));
    ds_sampler_params_default(&p);
    p.temperature = -1;
    ds_err_clear(&e);
    CHECK(ds_sampler_params_check(&p, &e) == DS_ERANGE && strstr(e.msg, "temperature"));
}

#include "runtime/stop.h"

static void feed_all(ds_stop *s, const char **chunks, int n, char *out, bool *matched) {
    out[0] = 0;
    *matched = false;
    for (int i = 0; i < n; i++) {
        const char *em;
        size_t el;
        if (ds_stop_feed(s, chunks[i], strlen(chunks[i]), &em, &el)) *matched = true;
        strncat(out, em, el);
    }
    if (!*matched) {
        const char *em;
        size_t el;
        ds_stop_flush(s, &em, &el);
        strncat(out, em, el);
    }
}

TEST(stop_strings_across_chunks) {
    ds_stop s;
    ds_stop_init(&s);
    ds_err e = { 0 };
    CHECK(ds_stop_add(&s, "END", &e) == 0);
    CHECK(ds_stop_add(&s, "\n\n", &e) == 0);
    char out[256];
    bool m;
    const char *a[] = { "hello E", "N", "D world" };         /* split across three chunks */
    feed_all(&s, a, 3, out, &m);
    CHECK(m && strcmp(out, "hello ") == 0);
    ds_stop_reset(&s);
    const char *b[] = { "an E", "Nd is not", " a stop\n", "x" }; /* partial prefix released */
    feed_all(&s, b, 4, out, &m);
    CHECK(!m && strcmp(out, "an ENd is not a stop\nx") == 0);
    ds_stop_reset(&s);
    const char *c[] = { "line\n", "\nmore" };
    feed_all(&s, c, 2, out, &m);
    CHECK(m && strcmp(out, "line") == 0);
    ds_stop_free(&s);
}
