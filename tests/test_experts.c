/*
 * test_experts.c - loading only the owned routed experts (ds_model_opts
 * expert range): the owned ones are bound exactly as in a full load, the
 * others are left empty, the counts still describe the whole model, and a
 * bad range is a clear error. Folders and GGUF files alike.
 */
#include "test.h"

#include <string.h>

#include "model/convert.h"
#include "model/model.h"

static ds_model *open_range(const char *path, int64_t lo, int64_t hi) {
    ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
    o.expert_lo = lo, o.expert_hi = hi;
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open_opts(&m, path, &o, &e)) ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg);
    return m;
}

/* Same type, shape, bytes, block scales and x8 copy. */
static bool same_tensor(const ds_tensor *a, const ds_tensor *b) {
    if (a->dtype != b->dtype || a->ndim != b->ndim || a->nbytes != b->nbytes || !a->rp != !b->rp || !a->scale != !b->scale)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    if (memcmp(a->data, b->data, a->nbytes) || (a->rp && memcmp(a->rp, b->rp, a->nbytes))) return false;
    return !a->scale || (a->scale_rows == b->scale_rows && a->scale_cols == b->scale_cols &&
                         !memcmp(a->scale, b->scale, (size_t)(a->scale_rows * a->scale_cols) * sizeof(float)));
}

static void partial_equals_full(const char *path) {
    ds_model *full = open_range(path, 0, -1), *part = open_range(path, 1, 3);
    if (!full || !part) { ds_model_close(full); ds_model_close(part); return; }
    const ds_config *c = &full->cfg;
    CHECK_EQ_INT(full->expert_lo, 0);
    CHECK_EQ_INT(full->expert_hi, c->n_routed_experts);
    CHECK_EQ_INT(part->expert_lo, 1);
    CHECK_EQ_INT(part->expert_hi, 3);
    CHECK_EQ_INT(part->n_mtp, full->n_mtp);
    /* the counts describe the whole model */
    CHECK_EQ_INT(part->n_params, full->n_params);
    CHECK_EQ_INT(part->file_bytes, full->file_bytes);
    ds_param_counts pf, pp;
    ds_model_param_counts(full, &pf);
    ds_model_param_counts(part, &pp);
    CHECK(!memcmp(&pf, &pp, sizeof pf));
    int moe_layers = 0;
    for (int64_t l = 0; l < c->n_layer + full->n_mtp; l++) {
        const ds_layer_w *f = &full->layers[l], *p = &part->layers[l];
        CHECK(f->is_moe == p->is_moe);
        if (!f->is_moe) continue;
        moe_layers++;
        CHECK(same_tensor(&f->router, &p->router));
        CHECK(same_tensor(&f->shared.down, &p->shared.down));
        for (int64_t x = 0; x < c->n_routed_experts; x++) {
            const ds_mlp_w *fe = &f->experts[x], *pe = &p->experts[x];
            if (x >= 1 && x < 3) {
                CHECK_MSG(same_tensor(&fe->gate, &pe->gate) && same_tensor(&fe->up, &pe->up) &&
                              same_tensor(&fe->down, &pe->down),
                          "%s: layer %lld expert %lld differs from the full load", path, (long long)l, (long long)x);
            } else {
                CHECK_MSG(!ds_tensor_present(&pe->gate) && !ds_tensor_present(&pe->up) && !ds_tensor_present(&pe->down),
                          "%s: layer %lld expert %lld is bound but not owned", path, (long long)l, (long long)x);
            }
        }
    }
    CHECK(moe_layers > 0);
    /* a GGUF needs every expert */
    ds_convert_opts o;
    ds_convert_opts_default(&o, DS_DTYPE_F16);
    ds_err e = { 0 };
    CHECK_EQ_INT(ds_model_write_gguf(part, "/nonexistent/x.gguf", &o, &e), DS_EINVAL);
    CHECK(strstr(e.msg, "holds routed experts [1, 3)") != NULL);
    ds_model_close(full);
    ds_model_close(part);
}

TEST(experts_owned_range_bf16) { partial_equals_full("tests/fixtures/tiny-v3"); }
TEST(experts_owned_range_fp8) { partial_equals_full("tests/fixtures/tiny-v3-fp8"); }
TEST(experts_owned_range_gguf_q8_0) { partial_equals_full("tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf"); }
TEST(experts_owned_range_gguf_f16) { partial_equals_full("tests/fixtures/gguf/tiny-v2-lite.llama-f16.gguf"); }

TEST(experts_bad_range) {
    static const char *paths[] = { "tests/fixtures/tiny-v3", "tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf" };
    static const int64_t ranges[][2] = { { 3, 1 }, { 2, 2 }, { -1, 2 }, { 0, 17 }, { 16, -1 } };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        for (size_t j = 0; j < sizeof ranges / sizeof ranges[0]; j++) {
            ds_model_opts o = { ranges[j][0], ranges[j][1], 0, 0, false };
            ds_err e = { 0 };
            ds_model *m = NULL;
            int rc = ds_model_open_opts(&m, paths[i], &o, &e);
            char want[64];
            snprintf(want, sizeof want, "expert range [%lld, %lld)", (long long)ranges[j][0],
                     (long long)(ranges[j][1] < 0 ? 16 : ranges[j][1]));
            CHECK_MSG(rc == DS_EINVAL && !m && strstr(e.msg, want) && strstr(e.msg, "16 routed experts"),
                      "%s [%lld, %lld): rc %d, '%s'", paths[i], (long long)ranges[j][0], (long long)ranges[j][1], rc,
                      e.msg);
            ds_model_close(m);
        }
}

/* ds_model_opts.n_ranks: the model splits its routed experts over the
 * ranks of an MPI job (as mpirun -np N sets it up), as even as they go. */
TEST(experts_rank_split) {
    static const char *paths[] = { "tests/fixtures/tiny-v3", "tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf" };
    uint64_t fp[2] = { 0, 0 };
    for (size_t i = 0; i < 2; i++)
        for (int n = 2; n <= 3; n++)
            for (int q = 0; q < n; q++) {
                ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
                o.n_ranks = n, o.rank = q;
                ds_err e = { 0 };
                ds_model *m = NULL;
                CHECK_MSG(ds_model_open_opts(&m, paths[i], &o, &e) == DS_OK, "%s rank %d of %d: %s", paths[i], q, n, e.msg);
                if (!m) continue;
                CHECK_MSG(m->distributed && m->n_ranks == n && m->expert_lo == 16 * q / n &&
                          m->expert_hi == 16 * (q + 1) / n && m->rank_experts[0] == 0 && m->rank_experts[n] == 16,
                          "%s rank %d of %d: owns [%lld, %lld)", paths[i], q, n, (long long)m->expert_lo,
                          (long long)m->expert_hi);
                /* every rank of every split agrees on the model's fingerprint */
                uint64_t f = ds_model_fingerprint(m);
                if (!fp[i]) fp[i] = f;
                CHECK_MSG(f == fp[i], "%s rank %d of %d: fingerprint differs", paths[i], q, n);
                ds_model_close(m);
            }
    CHECK(fp[0] != fp[1]);  /* a different model, a different fingerprint */
    static const int bad[][2] = { { 17, 0 }, { 3, 3 }, { 2, -1 } };
    static const char *want[] = { "17 processes for 16 routed experts", "rank 3 is not one of 3", "rank -1 is not one of 2" };
    for (size_t j = 0; j < 3; j++) {
        ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
        o.n_ranks = bad[j][0], o.rank = bad[j][1];
        ds_err e = { 0 };
        ds_model *m = NULL;
        int rc = ds_model_open_opts(&m, paths[0], &o, &e);
        CHECK_MSG(rc == DS_EINVAL && !m && strstr(e.msg, want[j]), "n_ranks %d rank %d: rc %d, '%s'", bad[j][0],
                  bad[j][1], rc, e.msg);
        ds_model_close(m);
    }
}
