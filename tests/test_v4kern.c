/*
 * test_v4kern.c - DeepSeek-V4 attention kernels (tensor/v4kern.h): the AVX2
 * version against its plain C twin (rounding only), the twin
 * against the formula in double, and splitting the heads or the entries
 * over jobs changes no bit (what the threads and batch invariance rely on).
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "tensor/v4kern.h"
#include "tensor/v4kern_isa.h"

typedef void (*heads_fn)(float *, const float *, const float *const *, int64_t, int64_t, int64_t, int64_t, float,
                         const float *, float *);
typedef void (*score_fn)(float *, const float *, const float *, const float *, int64_t, int64_t, int64_t, int64_t,
                         int64_t, float);

static float *rnd(ds_rng *r, int64_t n, float s) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = s * ds_rng_normal(r);
    return x;
}

/* the vector versions this machine can run (name, heads, scores) */
static int vector_versions(const char **names, heads_fn *hf, score_fn *sf) {
    int n = 0;
    if (ds_isa_level() >= DS_ISA_AVX2)
        names[n] = "avx2", hf[n] = ds_v4_attn_heads_avx2, sf[n] = ds_v4_index_scores_avx2, n++;
    return n;
}

TEST(v4kern_attn_heads_vs_ref) {
    static const int64_t shapes[][3] = { { 4, 32, 11 }, { 64, 512, 640 }, { 6, 37, 1 }, { 9, 13, 130 } };   /* H, Dh, nk */
    const char *names[2];
    heads_fn hf[2];
    score_fn sf[2];
    int nv = vector_versions(names, hf, sf);
    ds_rng r;
    ds_rng_seed(&r, 7);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t H = shapes[si][0], Dh = shapes[si][1], nk = shapes[si][2];
        float *q = rnd(&r, H * Dh, 0.2f), *kv = rnd(&r, nk * Dh, 1.0f), *sinks = rnd(&r, H, 1.0f);
        const float **keys = malloc((size_t)nk * sizeof *keys);
        for (int64_t i = 0; i < nk; i++) keys[i] = kv + ((i * 5) % nk) * Dh;   /* any order, repeats */
        float *ref = calloc((size_t)(H * Dh), sizeof(float)), *got = calloc((size_t)(H * Dh), sizeof(float));
        float *split = calloc((size_t)(H * Dh), sizeof(float)), *lg = malloc((size_t)(H * nk) * sizeof(float));
        float scale = 1.0f / sqrtf((float)Dh);
        ds_v4_attn_heads_ref(ref, q, keys, nk, 0, H, Dh, scale, sinks, lg);
        /* the twin against the formula in double */
        double worst = 0;
        for (int64_t h = 0; h < H; h++) {
            double mx = sinks[h], se, *l = malloc((size_t)nk * sizeof(double));
            for (int64_t i = 0; i < nk; i++) {
                double d = 0;
                for (int64_t k = 0; k < Dh; k++) d += (double)q[h * Dh + k] * keys[i][k];
                l[i] = d * scale;
                if (l[i] > mx) mx = l[i];
            }
            se = exp(sinks[h] - mx);
            for (int64_t i = 0; i < nk; i++) se += exp(l[i] - mx);
            for (int64_t k = 0; k < Dh; k++) {
                double o = 0;
                for (int64_t i = 0; i < nk; i++) o += exp(l[i] - mx) / se * keys[i][k];
                worst = fmax(worst, fabs(o - ref[h * Dh + k]));
            }
            free(l);
        }
        CHECK_MSG(worst < 1e-5, "H %lld Dh %lld nk %lld: the twin is %g off the formula", (long long)H, (long long)Dh,
                  (long long)nk, worst);
        for (int v = 0; v < nv; v++) {
            hf[v](got, q, keys, nk, 0, H, Dh, scale, sinks, lg);
            double d = 0, amax = 0;
            for (int64_t i = 0; i < H * Dh; i++) d = fmax(d, fabs((double)got[i] - ref[i])), amax = fmax(amax, fabs(ref[i]));
            CHECK_MSG(d <= 2e-6 * fmax(amax, 1.0), "%s H %lld Dh %lld nk %lld: %g off the twin (max |o| %g)", names[v],
                      (long long)H, (long long)Dh, (long long)nk, d, amax);
            /* heads in two jobs (a multiple of 4 first): the same bits */
            int64_t cut = H > 4 ? 4 : H;
            hf[v](split, q, keys, nk, 0, cut, Dh, scale, sinks, lg);
            hf[v](split, q, keys, nk, cut, H, Dh, scale, sinks, lg);
            CHECK_MSG(memcmp(split, got, (size_t)(H * Dh) * sizeof(float)) == 0, "%s: heads split at %lld differ",
                      names[v], (long long)cut);
        }
        free(q); free(kv); free(sinks); free(keys); free(ref); free(got); free(split); free(lg);
    }
    if (!nv) SKIP("no AVX2 on this machine: only the twin was checked");
}

TEST(v4kern_index_scores_vs_ref) {
    static const int64_t shapes[][3] = { { 4, 16, 10 }, { 64, 128, 3000 }, { 6, 20, 257 } };   /* Hi, Di, nE */
    const char *names[2];
    heads_fn hf[2];
    score_fn sf[2];
    int nv = vector_versions(names, hf, sf);
    ds_rng r;
    ds_rng_seed(&r, 11);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t Hi = shapes[si][0], Di = shapes[si][1], nE = shapes[si][2], ld = Di + 5;
        float *q = rnd(&r, Hi * Di, 0.3f), *iw = rnd(&r, Hi, 0.5f), *kent = rnd(&r, nE * ld, 1.0f);
        float *ref = calloc((size_t)nE, sizeof(float)), *got = calloc((size_t)nE, sizeof(float));
        float *split = calloc((size_t)nE, sizeof(float)), is = 1.0f / sqrtf((float)Di);
        ds_v4_index_scores_ref(ref, q, iw, kent, ld, 0, nE, Hi, Di, is);
        double worst = 0;
        for (int64_t w = 0; w < nE; w++) {
            double s = 0;
            for (int64_t h = 0; h < Hi; h++) {
                double d = 0;
                for (int64_t i = 0; i < Di; i++) d += (double)q[h * Di + i] * kent[w * ld + i];
                s += (d > 0 ? d : 0) * is * iw[h];
            }
            worst = fmax(worst, fabs(s - ref[w]));
        }
        CHECK_MSG(worst < 1e-4, "Hi %lld Di %lld: the twin is %g off the formula", (long long)Hi, (long long)Di, worst);
        for (int v = 0; v < nv; v++) {
            sf[v](got, q, iw, kent, ld, 0, nE, Hi, Di, is);
            double d = 0, amax = 0;
            for (int64_t w = 0; w < nE; w++) d = fmax(d, fabs((double)got[w] - ref[w])), amax = fmax(amax, fabs(ref[w]));
            CHECK_MSG(d <= 2e-6 * fmax(amax, 1.0), "%s Hi %lld Di %lld: %g off the twin (max %g)", names[v], (long long)Hi,
                      (long long)Di, d, amax);
            sf[v](split, q, iw, kent, ld, 0, nE / 3, Hi, Di, is);
            sf[v](split, q, iw, kent, ld, nE / 3, nE, Hi, Di, is);
            CHECK_MSG(memcmp(split, got, (size_t)nE * sizeof(float)) == 0, "%s: entries split in two blocks differ", names[v]);
        }
        free(q); free(iw); free(kent); free(ref); free(got); free(split);
    }
    if (!nv) SKIP("no AVX2 on this machine: only the twin was checked");
}
