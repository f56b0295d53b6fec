/*
 * test_grpo.c - GRPO's objective (src/train/grpo.c): PyTorch-autograd parity
 * of the loss, kl and every stored tensor's gradient on the tiny V3, V2-Lite
 * and V2 fixtures (tests/fixtures/grad/<name>/grpo_*, made by
 * tools/gen_grpo_fixtures.py: clipped and unclipped tokens, ρ inside and
 * outside the clip range, negative advantages), with one thread, two
 * data-parallel threads and micro-batches; the DAPO and Dr. GRPO
 * normalisations against hand-computed losses and against per-sample sums;
 * the weighted cross-entropy hook against finite differences; and the batch
 * file's errors.
 *
 * Tolerances as test_train.c's `grad` parity: both sides fp32 from the same
 * weights, per tensor max |ours − torch| <= 5e-4 · max |torch| (observed
 * below 2e-5); loss and kl within 1e-4 relative (the loss is a difference of
 * terms ~10× larger than it, so its relative error is ~10× the terms').
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/thread.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "train/grpo.h"
#include "train/tmodel.h"
#include "train/tops.h"

static void grpo_parity(const char *name, int threads, int64_t micro_batch) {
    char path[512];
    ds_err e = { 0 };
    json_t *ref;
    snprintf(path, sizeof path, "tests/fixtures/grad/%s/grpo_ref.json", name);
    if (ds_json_load_file(path, 1 << 20, &ref, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_tmodel *m;
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    if (ds_tmodel_load(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); json_decref(ref); return; }
    ds_grpo_batch b;
    snprintf(path, sizeof path, "tests/fixtures/grad/%s/grpo_batch.json", name);
    if (ds_grpo_batch_load(&b, path, m->cfg.vocab_size, &e)) {
        ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
        ds_tmodel_free(m);
        json_decref(ref);
        return;
    }
    int saved = ds_threads_get();
    ds_threads_set(threads);
    ds_tmodel_zero_grad(m);
    ds_grpo_opts o = { b.epsilon, b.beta, DS_GRPO_NORM_SEQ, 0, micro_batch };
    ds_grpo_stats st;
    CHECK(ds_grpo_step(m, b.samples, b.n, &o, false, &st, NULL, &e) == 0);
    ds_threads_set(saved);
    double want_loss = json_number_value(json_object_get(ref, "loss"));
    double want_kl = json_number_value(json_object_get(ref, "kl"));
    CHECK_MSG(fabs(st.loss - want_loss) <= 1e-4 * fabs(want_loss), "%s loss: ours %.9g torch %.9g", name, st.loss, want_loss);
    CHECK_MSG(fabs(st.kl - want_kl) <= 1e-4 * fabs(want_kl), "%s kl: ours %.9g torch %.9g", name, st.kl, want_kl);
    /* the clipped tokens the generator counted */
    json_t *cs = json_object_get(ref, "cases");
    int64_t clipped = json_integer_value(json_object_get(cs, "clipped_pos")) + json_integer_value(json_object_get(cs, "clipped_neg"));
    CHECK(clipped > 0);
    CHECK_NEAR(st.clip_frac * (double)st.tokens, (double)clipped, 1e-9);
    ds_safetensors sf;
    memset(&sf, 0, sizeof sf);
    snprintf(path, sizeof path, "tests/fixtures/grad/%s/grpo_grads.safetensors", name);
    if (ds_safetensors_open_file(&sf, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); goto done; }
    CHECK_EQ_INT(sf.n_tensors, m->n_params);
    double worst = 0;
    const char *worst_name = "";
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        ds_st_tensor *t = ds_safetensors_find(&sf, p->name);
        if (!t || t->dtype != DS_DTYPE_F32 || (int64_t)(t->end - t->begin) != p->numel * 4) {
            ds_test_fail(__FILE__, __LINE__, "%s: reference for %s missing or mis-shaped", name, p->name);
            continue;
        }
        const float *rg = (const float *)t->data;
        double md = 0, mr = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            md = ds_max_err(md, fabs((double)m->g[p->off + j] - rg[j]));
            if (fabs(rg[j]) > mr) mr = fabs(rg[j]);
        }
        if (mr == 0) {   /* a tensor that takes no part (MTP layer, bias): exactly zero */
            CHECK_MSG(md == 0, "%s %s: gradient %.3g where torch has none", name, p->name, md);
            continue;
        }
        double rel = md / mr;
        if (rel > worst) { worst = rel; worst_name = p->name; }
        CHECK_MSG(rel <= 5e-4, "%s %s: max |ours - torch| = %.3g, max |torch| = %.3g", name, p->name, md, mr);
    }
    if (getenv("DS_TEST_VERBOSE"))
        fprintf(stderr, "    %s (%d threads, micro-batch %lld): worst relative gradient error %.3g (%s), loss %.9g vs %.9g\n",
                name, threads, (long long)micro_batch, worst, worst_name, st.loss, want_loss);
    ds_safetensors_close(&sf);
done:
    ds_grpo_batch_free(&b);
    ds_tmodel_free(m);
    json_decref(ref);
}

TEST(grpo_grad_parity_v3) { grpo_parity("tiny-v3", 1, 0); grpo_parity("tiny-v3", 2, 0); }
TEST(grpo_grad_parity_v2_lite) { grpo_parity("tiny-v2-lite", 1, 0); grpo_parity("tiny-v2-lite", 2, 4); }
TEST(grpo_grad_parity_v2) { grpo_parity("tiny-v2", 2, 0); grpo_parity("tiny-v2", 1, 2); }

/* The per-sample normalisations (grpo.h): DAPO's token-level mean
 * c_s = 1/Σ|o| and Dr. GRPO's constant c_s = 1/(S·norm_len) against GRPO's
 * c_s = 1/(S·|o_s|). (1) Hand-computed: with no old/ref log-probabilities
 * (ρ = 1, r = 0) every token's term is A_s, so L = −Σ_s c_s·|o_s|·A_s.
 * (2) On the PyTorch-checked fixture batch (clipped tokens, KL): the loss and
 * every gradient of a normalisation equal Σ_s c_s·|o_s| times sample s's
 * own GRPO loss and gradient (one sample alone: c = 1/|o_s|). */
static ds_tmodel *norm_model(ds_grpo_batch *b) {
    ds_err e = { 0 };
    ds_tmodel *m = NULL;
    if (ds_tmodel_load(&m, "tests/fixtures/tiny-v3", &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return NULL; }
    if (ds_grpo_batch_load(b, "tests/fixtures/grad/tiny-v3/grpo_batch.json", m->cfg.vocab_size, &e)) {
        ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
        ds_tmodel_free(m);
        return NULL;
    }
    return m;
}

TEST(grpo_norm_hand_computed) {
    ds_grpo_batch b;
    ds_tmodel *m = norm_model(&b);
    if (!m) return;
    /* two samples: |o| = 2, A = 1 and |o| = 3, A = -0.5 (the fixture's tokens, no old/ref) */
    ds_grpo_sample s[2] = { b.samples[0], b.samples[1] };
    s[0].n_completion = 2; s[0].advantage = 1.0;
    s[1].n_completion = 3; s[1].advantage = -0.5;
    for (int i = 0; i < 2; i++) s[i].old_lp = s[i].ref_lp = NULL;
    CHECK(b.samples[0].n_completion >= 2 && b.samples[1].n_completion >= 3);
    /* seq: -(1/2)(2·1/2 + 3·(-0.5)/3) = -0.25; token: -(2 - 1.5)/5 = -0.1; const, 4: -(2 - 1.5)/(2·4) = -0.0625 */
    const ds_grpo_norm norms[3] = { DS_GRPO_NORM_SEQ, DS_GRPO_NORM_TOKEN, DS_GRPO_NORM_CONST };
    const double want[3] = { -0.25, -0.1, -0.0625 };
    ds_err e = { 0 };
    for (int k = 0; k < 3; k++) {
        ds_grpo_opts o = { 0.2, 0.1, norms[k], 4, 0 };
        ds_grpo_stats st;
        CHECK(ds_grpo_step(m, s, 2, &o, true, &st, NULL, &e) == 0);
        CHECK_MSG(fabs(st.loss - want[k]) <= 1e-12, "norm %d: loss %.17g, by hand %.17g", k, st.loss, want[k]);
        CHECK_NEAR(st.kl, 0.0, 1e-12);
    }
    ds_grpo_batch_free(&b);
    ds_tmodel_free(m);
}

TEST(grpo_norm_dapo_dr_grpo_match_per_sample_sums) {
    ds_grpo_batch b;
    ds_tmodel *m = norm_model(&b);
    if (!m) return;
    int64_t S = b.n, NF = m->n_floats, ntok = 0, norm_len = 11;
    for (int64_t i = 0; i < S; i++) ntok += b.samples[i].n_completion;
    double *gs = calloc((size_t)(S * NF), sizeof(double)), *ls = calloc((size_t)S, sizeof(double));
    double *want = malloc((size_t)NF * sizeof(double));
    ds_err e = { 0 };
    ds_grpo_stats st;
    for (int64_t i = 0; i < S; i++) {   /* sample i alone, GRPO's normalisation: c = 1/|o_i| */
        ds_grpo_opts o = { b.epsilon, b.beta, DS_GRPO_NORM_SEQ, 0, 0 };
        ds_tmodel_zero_grad(m);
        CHECK(ds_grpo_step(m, &b.samples[i], 1, &o, false, &st, NULL, &e) == 0);
        ls[i] = st.loss;
        for (int64_t j = 0; j < NF; j++) gs[i * NF + j] = m->g[j];
    }
    const ds_grpo_norm norms[3] = { DS_GRPO_NORM_SEQ, DS_GRPO_NORM_TOKEN, DS_GRPO_NORM_CONST };
    const char *names[3] = { "seq (GRPO)", "token (DAPO)", "const (Dr. GRPO)" };
    for (int k = 0; k < 3; k++) {
        ds_grpo_opts o = { b.epsilon, b.beta, norms[k], norm_len, 0 };
        ds_tmodel_zero_grad(m);
        CHECK(ds_grpo_step(m, b.samples, S, &o, false, &st, NULL, &e) == 0);
        double wl = 0, gmax = 0, worst = 0;
        for (int64_t j = 0; j < NF; j++) want[j] = 0;
        for (int64_t i = 0; i < S; i++) {
            double len = (double)b.samples[i].n_completion;
            double c = norms[k] == DS_GRPO_NORM_SEQ ? 1.0 / ((double)S * len)
                     : norms[k] == DS_GRPO_NORM_TOKEN ? 1.0 / (double)ntok : 1.0 / ((double)S * (double)norm_len);
            wl += c * len * ls[i];
            for (int64_t j = 0; j < NF; j++) want[j] += c * len * gs[i * NF + j];
        }
        for (int64_t j = 0; j < NF; j++) {
            gmax = fmax(gmax, fabs(want[j]));
            worst = ds_max_err(worst, fabs((double)m->g[j] - want[j]));
        }
        CHECK_MSG(fabs(st.loss - wl) <= 1e-5 * fabs(wl), "%s: loss %.9g, from the samples %.9g", names[k], st.loss, wl);
        CHECK_MSG(gmax > 0 && worst <= 1e-4 * gmax, "%s: gradient off by %.3g (max %.3g)", names[k], worst, gmax);
    }
    free(gs); free(ls); free(want);
    ds_grpo_batch_free(&b);
    ds_tmodel_free(m);
}

/* The weighted cross-entropy pair against finite differences of
 * L = Σ_n w[n]·(−log p(target[n])), in double on the row's logits. */
TEST(grpo_weighted_ce_fd) {
    enum { N = 5, V = 37 };
    float lg[N * V], work[N * V], lp[N], w[N] = { 0.7f, -1.3f, 0.0f, 2.1f, 0.4f };
    int32_t tgt[N] = { 3, 36, 5, -1, 0 };
    for (int i = 0; i < N * V; i++) lg[i] = (float)sin(0.37 * i) * 3.0f;
    memcpy(work, lg, sizeof lg);
    tr_token_logprobs(work, tgt, N, V, lp);
    tr_token_weighted_backward(work, tgt, N, V, w);
    double worst = 0;
    for (int n = 0; n < N; n++) {
        double mx = -1e30, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, lg[n * V + v]);
        for (int v = 0; v < V; v++) s += exp(lg[n * V + v] - mx);
        double want_lp = tgt[n] >= 0 ? lg[n * V + tgt[n]] - mx - log(s) : 0.0;
        CHECK_NEAR(lp[n], want_lp, 1e-5);
        for (int v = 0; v < V; v++) {
            double h = 1e-3, f[2];
            for (int k = 0; k < 2; k++) {
                double x = lg[n * V + v] + (k ? -h : h), m2 = -1e30, s2 = 0;
                for (int u = 0; u < V; u++) m2 = fmax(m2, u == v ? x : lg[n * V + u]);
                for (int u = 0; u < V; u++) s2 += exp((u == v ? x : lg[n * V + u]) - m2);
                double xt = tgt[n] < 0 ? 0 : (tgt[n] == v ? x : lg[n * V + tgt[n]]);
                f[k] = tgt[n] < 0 ? 0.0 : -(double)w[n] * (xt - m2 - log(s2));
            }
            worst = ds_max_err(worst, fabs((f[0] - f[1]) / (2 * h) - work[n * V + v]));
        }
    }
    CHECK_MSG(worst <= 1e-5, "weighted CE gradient vs finite differences: %.3g", worst);
}

/* Bad batch files: a clear error naming the field. */
static void bad_batch(const char *json, const char *want) {
    char path[] = "/tmp/ds_test_grpo_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { ds_test_fail(__FILE__, __LINE__, "mkstemp"); return; }
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    ds_grpo_batch b;
    ds_err e = { 0 };
    int rc = ds_grpo_batch_load(&b, path, 320, &e);
    CHECK_MSG(rc != 0 && strstr(e.msg, want), "batch %s: rc %d, message '%s' (want '%s')", json, rc, e.msg, want);
    if (rc == 0) ds_grpo_batch_free(&b);
    remove(path);
}

#define SMP(extra) "{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[1,2],\"completion\":[3,4]," extra "}]}"
TEST(grpo_batch_errors) {
    bad_batch(SMP("\"advantage\":1,\"old_logprobs\":[-1],\"ref_logprobs\":[-1,-2]"),
              "samples[0].old_logprobs: 1 values for 2 completion tokens");
    bad_batch(SMP("\"advantage\":1,\"old_logprobs\":[-1,-2],\"ref_logprobs\":[-1,-2,-3]"),
              "samples[0].ref_logprobs: 3 values for 2 completion tokens");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[1,999],\"completion\":[3],\"advantage\":1,"
              "\"old_logprobs\":[-1],\"ref_logprobs\":[-1]}]}", "samples[0].prompt[1] = 999 is out of range");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[1],\"completion\":[-3],\"advantage\":1,"
              "\"old_logprobs\":[-1],\"ref_logprobs\":[-1]}]}", "samples[0].completion[0] = -3 is out of range");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[1],\"completion\":[],\"advantage\":1,"
              "\"old_logprobs\":[],\"ref_logprobs\":[]}]}", "samples[0].completion: empty");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[],\"completion\":[2],\"advantage\":1,"
              "\"old_logprobs\":[0],\"ref_logprobs\":[0]}]}", "samples[0].prompt: empty");
    bad_batch(SMP("\"advantage\":1e999,\"old_logprobs\":[-1,-2],\"ref_logprobs\":[-1,-2]"), "real number overflow");
    bad_batch(SMP("\"advantage\":1,\"old_logprobs\":[-1,1e300],\"ref_logprobs\":[-1,-2]"),
              "samples[0].old_logprobs[1]: not a finite number");
    bad_batch(SMP("\"advantage\":1,\"old_logprobs\":[-1,\"x\"],\"ref_logprobs\":[-1,-2]"),
              "samples[0].old_logprobs[1]: not a number");
    bad_batch(SMP("\"old_logprobs\":[-1,-2],\"ref_logprobs\":[-1,-2]"), "samples[0].advantage: missing");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[]}", "samples: empty");
    bad_batch("{\"beta\":0.1,\"samples\":[]}", "epsilon: missing");
    bad_batch("{\"epsilon\":0.2,\"beta\":-1,\"samples\":[]}", "beta = -1 is out of range");
    bad_batch("{\"epsilon\":0.2,\"beta\":0.1,\"samples\":[{\"prompt\":[1],", "");   /* bad JSON: the parser's message */
    bad_batch("[1,2]", "not a JSON object");
}
