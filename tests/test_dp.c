/*
 * test_dp.c - the data-parallel step's canonical gradient sum (src/train/dp.c)
 * in one process: the tree over units written out by hand from per-unit
 * gradients must match ds_dp_step bit for bit for every thread count, and
 * agree with one batched step (the plain twin) to float rounding. The
 * multi-rank cases (N = 2, 3) are in tests/cli_mpi_train_tests.sh.
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/thread.h"
#include "train/dp.h"
#include "train/optim.h"
#include "train/tmodel.h"

static void dp_tiny_config(ds_config *c) {
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

static void vadd(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] += b[i];
}

/* The tree over [a, a + size) clipped at U, from per-unit gradients g[u] (nf
 * floats each), written recursively: left + right. Returns NULL when empty. */
static float *tree(float **g, int64_t a, int64_t size, int64_t U, int64_t nf) {
    if (a >= U) return NULL;
    if (size == 1) {
        float *r = malloc((size_t)nf * 4);
        memcpy(r, g[a], (size_t)nf * 4);
        return r;
    }
    float *l = tree(g, a, size / 2, U, nf), *r = tree(g, a + size / 2, size / 2, U, nf);
    if (r) { vadd(l, r, nf); free(r); }
    return l;
}

TEST(train_dp_canonical_tree) {
    ds_config c;
    dp_tiny_config(&c);
    ds_tmodel *m;
    ds_err e = { 0 };
    CHECK(ds_tmodel_init(&m, &c, true, &e) == 0);
    if (!m) return;
    ds_rng r; ds_rng_seed(&r, 77);
    ds_tmodel_init_weights(m, 0.3f, &r);
    enum { U = 7, T = 12 };
    int32_t tok[U * T];
    for (int i = 0; i < U * T; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % 40);
    int64_t nf = m->n_floats;
    ds_loss_opts o = { 0.3f, 0.5f, 1.0f, false };
    int saved = ds_threads_get();

    /* per-unit gradients of loss_u / U, one thread, then the tree by hand */
    ds_threads_set(1);
    float *g[U];
    double ce_sum = 0;
    ds_loss_opts ou = o;
    ou.grad_scale = (float)(1.0 / U);
    for (int u = 0; u < U; u++) {
        ds_losses lu;
        ds_tmodel_zero_grad(m);
        CHECK(ds_tmodel_step(m, tok + u * T, 1, T, &ou, &lu, &e) == 0);
        ce_sum += lu.ce;
        g[u] = malloc((size_t)nf * 4);
        memcpy(g[u], m->g, (size_t)nf * 4);
    }
    float *ref = tree(g, 0, 8, U, nf);

    /* the plain twin: one batched step of all U sequences */
    ds_losses lb;
    ds_tmodel_zero_grad(m);
    CHECK(ds_tmodel_step(m, tok, U, T, &o, &lb, &e) == 0);
    float *gb = malloc((size_t)nf * 4);
    memcpy(gb, m->g, (size_t)nf * 4);

    for (int th = 1; th <= 3; th++) {
        ds_threads_set(th);
        ds_dp dp;
        CHECK(ds_dp_init(&dp, m, &e) == 0);
        ds_losses ld;
        for (int rep = 0; rep < 2; rep++) {   /* the second step finds the tree's buffers holding the first's sums */
            memset(m->g, 0x7f, (size_t)nf * 4);   /* stale garbage must not leak in */
            CHECK_MSG(ds_dp_step(&dp, m, tok, U, 1, T, &o, &ld, &e) == 0, "%s", e.msg);
            CHECK_MSG(!memcmp(m->g, ref, (size_t)nf * 4), "%d threads, step %d: gradient differs from the hand-written tree",
                      th, rep);
        }
        CHECK_MSG(ld.ce == ce_sum / U, "%d threads: ce %.17g vs %.17g", th, ld.ce, ce_sum / U);
        CHECK_MSG(fabs(ld.loss - lb.loss) <= 1e-6 * fabs(lb.loss), "loss %.9g vs batched %.9g", ld.loss, lb.loss);
        for (int64_t i = 0; i < m->n_params; i++) {
            const ds_tparam *p = &m->params[i];
            double md = 0, mr = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                md = fmax(md, fabs((double)m->g[p->off + j] - gb[p->off + j]));
                mr = fmax(mr, fabs((double)gb[p->off + j]));
            }
            CHECK_MSG(md <= 1e-5 * mr + 1e-9, "%s: tree vs batched step %.3g (max %.3g)", p->name, md, mr);
        }
        /* the per-tensor norm against a double sum over trainable tensors */
        ds_adamw ad;
        CHECK(ds_adamw_init(&ad, m, 0.9f, 0.95f, 1e-8f, 0.1f, &e) == 0);
        double nrm = 0, s = 0;
        CHECK(ds_dp_grad_norm(&dp, m, &ad, &nrm, &e) == 0);
        for (int64_t i = 0; i < m->n_params; i++)
            if (m->params[i].trainable)
                for (int64_t j = 0; j < m->params[i].numel; j++) s += (double)m->g[m->params[i].off + j] * m->g[m->params[i].off + j];
        CHECK_MSG(fabs(nrm - sqrt(s)) <= 1e-12 * sqrt(s), "norm %.17g vs %.17g", nrm, sqrt(s));
        ds_adamw_free(&ad);
        ds_dp_free(&dp);
    }
    ds_threads_set(saved);
    for (int u = 0; u < U; u++) free(g[u]);
    free(ref);
    free(gb);
    ds_tmodel_free(m);
}

/* A ZeRO-1 shard of AdamW (moments for [lo, hi) only) updates exactly the
 * floats of an unsharded optimizer, whatever the thread count. */
TEST(train_dp_adamw_shard) {
    ds_config c;
    dp_tiny_config(&c);
    const char *big = "{\"model_type\":\"deepseek_v3\",\"vocab_size\":300,\"hidden_size\":64,\"intermediate_size\":96,"
                      "\"moe_intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":12,"
                      "\"kv_lora_rank\":8,\"qk_nope_head_dim\":4,\"qk_rope_head_dim\":4,\"v_head_dim\":4,"
                      "\"first_k_dense_replace\":1,\"n_routed_experts\":4,\"n_shared_experts\":1,"
                      "\"num_experts_per_tok\":2,\"num_nextn_predict_layers\":0}";
    ds_err e = { 0 };
    CHECK(ds_config_parse(&c, big, strlen(big), "big", &e) == 0);
    ds_tmodel *m;
    CHECK(ds_tmodel_init(&m, &c, false, &e) == 0);
    if (!m) return;
    int64_t nf = m->n_floats, lo = DS_ADAM_CHUNK, hi = DS_MIN(nf, 3 * DS_ADAM_CHUNK);
    CHECK_MSG(nf > 2 * DS_ADAM_CHUNK, "model too small for two chunks: %lld floats", (long long)nf);
    ds_rng r; ds_rng_seed(&r, 5);
    ds_tmodel_init_weights(m, 0.3f, &r);
    for (int64_t i = 0; i < nf; i++) m->g[i] = ds_rng_normal(&r);
    float *w0 = malloc((size_t)nf * 4);
    memcpy(w0, m->w, (size_t)nf * 4);
    int saved = ds_threads_get();
    ds_threads_set(1);
    ds_adamw full, sh;
    CHECK(ds_adamw_init(&full, m, 0.9f, 0.95f, 1e-8f, 0.1f, &e) == 0);
    for (int k = 0; k < 2; k++) ds_adamw_step_scaled(&full, m, 1e-2f, 0.7f);
    float *wf = malloc((size_t)nf * 4);
    memcpy(wf, m->w, (size_t)nf * 4);
    memcpy(m->w, w0, (size_t)nf * 4);
    ds_threads_set(3);
    CHECK(ds_adamw_init_range(&sh, m, lo, hi, 0.9f, 0.95f, 1e-8f, 0.1f, &e) == 0);
    for (int k = 0; k < 2; k++) ds_adamw_step_scaled(&sh, m, 1e-2f, 0.7f);
    CHECK(!memcmp(m->w + lo, wf + lo, (size_t)(hi - lo) * 4));
    CHECK(!memcmp(sh.m, full.m + lo, (size_t)(hi - lo) * 4) && !memcmp(sh.v, full.v + lo, (size_t)(hi - lo) * 4));
    CHECK(!memcmp(m->w, w0, (size_t)lo * 4) && !memcmp(m->w + hi, w0 + hi, (size_t)(nf - hi) * 4));   /* outside: untouched */
    ds_threads_set(saved);
    ds_adamw_free(&full);
    ds_adamw_free(&sh);
    free(w0);
    free(wf);
    ds_tmodel_free(m);
}

/* Expert-parallel layout (ds_tmodel_init_ep): for N = 1..5 ranks over 4
 * experts (N > E included) rank q holds the replicated tensors at the same
 * offsets as every other rank, then exactly its experts [E·q/N, E·(q+1)/N),
 * nothing overlapping, every tensor at its one-process offset mod 16 (a
 * gate's up right after it), and the same initial values as the
 * one-process model (other experts' random draws skipped, not reordered).
 * ds_tmodel_ep_layout, as rank 0 uses it to place others' experts, agrees. */
static void ep_layout_case(const ds_config *cp) {
    ds_config c = *cp;
    ds_err e = { 0 };
    ds_tmodel *ref;
    CHECK(ds_tmodel_init(&ref, &c, true, &e) == 0);
    if (!ref) return;
    ds_rng r; ds_rng_seed(&r, 3);
    ds_tmodel_init_weights(ref, 0.5f, &r);
    int64_t E = c.n_routed_experts, F = c.moe_intermediate_size, D = c.hidden_size;
    CHECK(ref->n_rep == ref->n_floats && ref->n_canon == ref->n_floats);
    for (int N = 1; N <= 5; N++) {
        int64_t rep0 = -1;
        for (int q = 0; q < N; q++) {
            ds_tmodel *m;
            CHECK_MSG(ds_tmodel_init_ep(&m, &c, true, N, q, &e) == 0, "%s", e.msg);
            if (!m) continue;
            ds_rng_seed(&r, 3);
            ds_tmodel_init_weights(m, 0.5f, &r);
            int64_t lo = E * q / N, hi = E * (q + 1) / N, held = 0;
            int64_t *lay = malloc((size_t)m->n_params * sizeof *lay), lrep, lnf;
            ds_tmodel_ep_layout(ref, N, q, lay, &lrep, &lnf);
            CHECK(lrep == m->n_rep && lnf == m->n_floats);
            if (rep0 < 0) rep0 = m->n_rep;
            CHECK_MSG(m->n_rep == rep0, "N %d rank %d: replicated region %lld vs %lld", N, q, (long long)m->n_rep,
                      (long long)rep0);
            uint8_t *used = calloc((size_t)m->n_floats + 1, 1);
            for (int64_t i = 0; i < m->n_params; i++) {
                const ds_tparam *p = &m->params[i], *p1 = &ref->params[i];
                CHECK(lay[i] == p->off && p->coff == p1->off);
                bool mine = p->expert < 0 || N == 1 || (p->expert >= lo && p->expert < hi);
                CHECK_MSG(mine == (p->off >= 0), "N %d rank %d: '%s' held %d", N, q, p->name, p->off >= 0);
                if (p->off < 0) continue;
                CHECK_MSG(p->off % 16 == p->coff % 16, "'%s': offset %lld vs one-process %lld", p->name,
                          (long long)p->off, (long long)p->coff);
                CHECK(N == 1 || (p->expert >= 0) == (p->off >= m->n_rep));
                CHECK(p->off + p->numel <= m->n_floats);
                for (int64_t j = 0; j < p->numel; j++) {
                    if (used[p->off + j]) { CHECK_MSG(0, "'%s' overlaps", p->name); break; }
                    used[p->off + j] = 1;
                }
                CHECK_MSG(!memcmp(m->w + p->off, ref->w + p1->off, (size_t)p->numel * 4), "N %d rank %d: '%s' init differs",
                          N, q, p->name);
                if (p->expert >= 0) held += p->numel;
            }
            for (int64_t l = 0; l < c.n_layer + m->n_mtp; l++) {
                if (!m->W.layers[l].is_moe) continue;
                for (int64_t x = 0; x < E; x++) {
                    bool mine = N == 1 || (x >= lo && x < hi);
                    CHECK(mine == (m->W.layers[l].experts[x].gate != NULL) && mine == (m->G.layers[l].experts[x].up != NULL));
                    if (mine) CHECK(m->W.layers[l].experts[x].up == m->W.layers[l].experts[x].gate + F * D);
                }
            }
            int64_t moe = ds_tmodel_moe_layers(m, NULL);
            CHECK_MSG(N == 1 || held == (hi - lo) * moe * 3 * F * D, "N %d rank %d: %lld expert floats held", N, q,
                      (long long)held);
            CHECK(N == 1 || m->n_floats - m->n_rep < held + 16 * 3 * (hi - lo) * moe + 16);
            free(used);
            free(lay);
            ds_tmodel_free(m);
        }
    }
    ds_tmodel_free(ref);
}

TEST(train_ep_layout) {
    ds_config c;
    dp_tiny_config(&c);
    ep_layout_case(&c);
    /* experts of 3·5·24 floats (gate unpadded, then up and down each padded to 16): 376 per expert, 8 mod 16, so
     * leaving one out moves the next by 8 floats unless the layout pads */
    const char *x8 = "{\"model_type\":\"deepseek_v3\",\"vocab_size\":40,\"hidden_size\":24,\"intermediate_size\":24,"
                     "\"moe_intermediate_size\":5,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":12,"
                     "\"kv_lora_rank\":8,\"qk_nope_head_dim\":4,\"qk_rope_head_dim\":4,\"v_head_dim\":4,"
                     "\"first_k_dense_replace\":1,\"n_routed_experts\":4,\"n_shared_experts\":1,"
                     "\"num_experts_per_tok\":2,\"num_nextn_predict_layers\":1}";
    ds_err e = { 0 };
    CHECK(ds_config_parse(&c, x8, strlen(x8), "x8", &e) == 0);
    ep_layout_case(&c);
    /* a tensor off a multiple of 8 floats: refused with its name */
    const char *odd = "{\"model_type\":\"deepseek_v3\",\"vocab_size\":40,\"hidden_size\":12,\"intermediate_size\":24,"
                      "\"moe_intermediate_size\":5,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"q_lora_rank\":12,"
                      "\"kv_lora_rank\":8,\"qk_nope_head_dim\":4,\"qk_rope_head_dim\":4,\"v_head_dim\":4,"
                      "\"first_k_dense_replace\":1,\"n_routed_experts\":4,\"n_shared_experts\":1,"
                      "\"num_experts_per_tok\":2,\"num_nextn_predict_layers\":0}";
    ds_config c2;
    CHECK(ds_config_parse(&c2, odd, strlen(odd), "odd", &e) == 0);
    ds_tmodel *m2 = NULL;
    ds_err e2 = { 0 };
    CHECK(ds_tmodel_init_ep(&m2, &c2, false, 2, 0, &e2) != 0 && m2 == NULL);
    CHECK_MSG(strstr(e2.msg, "not a multiple of 8") != NULL, "%s", e2.msg);
}
