/*
 * trainer.c - the training recipe, one optimizer step, evaluation,
 * checkpoints and exact resume (see trainer.h). Printing is the CLI's job
 * (src/cli/cmd_train.c); this file only writes files.
 */
#include "trainer.h"
#include "../core/scratch.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../dist/dist.h"
#include "../io/json.h"
#include "../io/safetensors.h"
#include "../tensor/ops.h"
#include "../tokenizer/tokenizer.h"
#include "tgemm.h"
#include "tops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- recipe */

void ds_recipe_default(ds_recipe *r) {
    memset(r, 0, sizeof *r);
    r->seq_len = 256; r->batch_size = 16; r->grad_accum = 1; r->unit_seqs = 1; r->steps = 1000; r->warmup_steps = 100;
    r->lr = 3e-3; r->min_lr = 3e-4; r->beta1 = 0.9; r->beta2 = 0.95; r->eps = 1e-8; r->weight_decay = 0.1;
    r->grad_clip = 1.0; r->init_std = 0.02; r->schedule = DS_SCHED_COSINE;
    r->bias_update_speed = 1e-3; r->bias_freeze_step = -1; r->balance_alpha = 1e-4; r->mtp_weight = 0.3;
    r->eval_every = 100; r->eval_tokens = 32768; r->ckpt_every = 500; r->keep_checkpoints = 2; r->log_every = 1;
    r->seed = 1234; r->threads = 0; r->time_limit_min = 0; r->max_nan_skips = 10; r->peak_gflops = 0;
}

typedef enum { K_STR, K_INT, K_NUM, K_SCHED, K_BOOL, K_PREC } key_kind;
typedef struct { const char *key; key_kind kind; size_t off; double lo, hi; } key_def;
#define KS(k) { #k, K_STR, offsetof(ds_recipe, k), 0, 0 }
#define KI(k, lo, hi) { #k, K_INT, offsetof(ds_recipe, k), lo, hi }
#define KN(k, lo, hi) { #k, K_NUM, offsetof(ds_recipe, k), lo, hi }
static const key_def k_keys[] = {
    KS(data), KS(out), KS(init_from),
    KI(seq_len, 2, 1 << 20), KI(batch_size, 1, 1 << 20), KI(grad_accum, 1, 1 << 20), KI(unit_seqs, 1, 1 << 20),
    KI(steps, 0, 1e12),
    KI(warmup_steps, 0, 1e12),
    KN(lr, 0, 10), KN(min_lr, 0, 10), KN(beta1, 0, 1), KN(beta2, 0, 1), KN(eps, 0, 1), KN(weight_decay, 0, 10),
    KN(grad_clip, 0, 1e9), KN(init_std, 0, 10), { "schedule", K_SCHED, offsetof(ds_recipe, schedule), 0, 0 },
    KN(bias_update_speed, 0, 10), KI(bias_freeze_step, -1, 1e12), KN(balance_alpha, 0, 1e6), KN(mtp_weight, 0, 1e6),
    KI(eval_every, 0, 1e12), KI(eval_tokens, 0, 1e12), KI(ckpt_every, 0, 1e12), KI(keep_checkpoints, 1, 1e6),
    KI(log_every, 1, 1e12), KI(seed, 0, 9e18), KI(threads, 0, 1024), KN(time_limit_min, 0, 1e9),
    KI(max_nan_skips, 0, 1e12), KN(peak_gflops, 0, 1e12),
    { "expert_parallel", K_BOOL, offsetof(ds_recipe, expert_parallel), 0, 0 },
    { "precision", K_PREC, offsetof(ds_recipe, precision), 0, 0 },
};

static int apply_key(ds_recipe *r, const char *key, json_t *v, const char *what, ds_err *e) {
    for (size_t i = 0; i < sizeof k_keys / sizeof k_keys[0]; i++) {
        const key_def *k = &k_keys[i];
        if (strcmp(k->key, key)) continue;
        void *p = (char *)r + k->off;
        switch (k->kind) {
        case K_STR:
            if (!json_is_string(v)) return ds_err_set(e, DS_EINVAL, "%s: '%s' must be a string", what, key);
            if (strlen(json_string_value(v)) >= 1024) return ds_err_set(e, DS_EINVAL, "%s: '%s' is too long", what, key);
            strcpy(p, json_string_value(v));
            return DS_OK;
        case K_INT: {
            if (!json_is_integer(v)) return ds_err_set(e, DS_EINVAL, "%s: '%s' must be an integer", what, key);
            json_int_t x = json_integer_value(v);
            if (x < k->lo || x > k->hi)
                return ds_err_set(e, DS_ERANGE, "%s: '%s' = %lld is out of range [%g, %g]", what, key, (long long)x, k->lo, k->hi);
            *(int64_t *)p = x;
            return DS_OK;
        }
        case K_NUM: {
            if (!json_is_number(v)) return ds_err_set(e, DS_EINVAL, "%s: '%s' must be a number", what, key);
            double x = json_number_value(v);
            if (!(x >= k->lo && x <= k->hi))
                return ds_err_set(e, DS_ERANGE, "%s: '%s' = %g is out of range [%g, %g]", what, key, x, k->lo, k->hi);
            *(double *)p = x;
            return DS_OK;
        }
        case K_SCHED: {
            const char *s = json_string_value(v);
            if (s && !strcmp(s, "cosine")) *(ds_schedule *)p = DS_SCHED_COSINE;
            else if (s && !strcmp(s, "constant")) *(ds_schedule *)p = DS_SCHED_CONSTANT;
            else return ds_err_set(e, DS_EINVAL, "%s: 'schedule' must be \"cosine\" or \"constant\"", what);
            return DS_OK;
        }
        case K_BOOL:
            if (!json_is_boolean(v)) return ds_err_set(e, DS_EINVAL, "%s: '%s' must be true or false", what, key);
            *(bool *)p = json_is_true(v);
            return DS_OK;
        case K_PREC: {
            const char *s = json_string_value(v);
            if (s && !strcmp(s, "fp32")) *(ds_precision *)p = DS_PREC_FP32;
            else if (s && !strcmp(s, "bf16")) *(ds_precision *)p = DS_PREC_BF16;
            else return ds_err_set(e, DS_EINVAL, "%s: 'precision' must be \"fp32\" or \"bf16\"", what);
            return DS_OK;
        }
        }
    }
    return ds_err_set(e, DS_EINVAL, "%s: unknown recipe key '%s'", what, key);
}

int ds_recipe_apply(ds_recipe *r, json_t *j, json_t **model, const char *what, ds_err *e) {
    if (!json_is_object(j)) return ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", what);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (!strcmp(key, "model")) {
            if (!json_is_object(v)) return ds_err_set(e, DS_EFORMAT, "%s: 'model' must be an object (config.json keys)", what);
            if (model) *model = v;
            continue;
        }
        if (key[0] == '_' || !strcmp(key, "comment")) continue;   /* documentation keys */
        int rc = apply_key(r, key, v, what, e);
        if (rc) return rc;
    }
    return DS_OK;
}

int ds_recipe_set(ds_recipe *r, const char *kv, ds_err *e) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return ds_err_set(e, DS_EINVAL, "'%s' is not key=value", kv);
    char key[128];
    size_t kl = (size_t)(eq - kv);
    if (kl >= sizeof key) return ds_err_set(e, DS_EINVAL, "'%s': key too long", kv);
    memcpy(key, kv, kl);
    key[kl] = 0;
    json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
    if (!v) v = json_string(eq + 1);
    int rc = apply_key(r, key, v, "--set", e);
    json_decref(v);
    return rc;
}

json_t *ds_recipe_to_json(const ds_recipe *r) {
    json_t *j = json_object();
    for (size_t i = 0; i < sizeof k_keys / sizeof k_keys[0]; i++) {
        const key_def *k = &k_keys[i];
        const void *p = (const char *)r + k->off;
        json_t *v = NULL;
        switch (k->kind) {
        case K_STR: v = json_string(p); break;
        case K_INT: v = json_integer(*(const int64_t *)p); break;
        case K_NUM: v = json_real(*(const double *)p); break;
        case K_SCHED: v = json_string(*(const ds_schedule *)p == DS_SCHED_COSINE ? "cosine" : "constant"); break;
        case K_BOOL: v = json_boolean(*(const bool *)p); break;
        case K_PREC: v = json_string(*(const ds_precision *)p == DS_PREC_BF16 ? "bf16" : "fp32"); break;
        }
        json_object_set_new(j, k->key, v);
    }
    return j;
}

/* ---------------------------------------------------------------- helpers */

double ds_measure_peak_flops(void) {
    int64_t n = 1024;
    float *A = ds_alloc((size_t)(n * n) * sizeof(float)), *B = ds_alloc((size_t)(n * n) * sizeof(float));
    float *C = ds_alloc((size_t)(n * n) * sizeof(float));
    if (!A || !B || !C) { ds_free(A); ds_free(B); ds_free(C); return 0; }
    for (int64_t i = 0; i < n * n; i++) { A[i] = (float)(i % 13) * 0.01f; B[i] = (float)(i % 7) * 0.01f; }
    double best = 0;   /* the best of 16: on a shared machine slow runs are other processes' doing */
    for (int r = 0; r < 16; r++) {
        double t0 = ds_now();
        ds_sgemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = ds_now() - t0;
        if (r > 0 && dt > 0) best = DS_MAX(best, 2.0 * (double)(n * n * n) / dt);
    }
    ds_free(A); ds_free(B); ds_free(C);
    return best;
}

/* Removes a checkpoint folder (regular files only, then the folder). */
static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int fsync_dir(const char *dir, ds_err *e) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ds_err_set(e, DS_EIO, "%s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc ? ds_err_set(e, DS_EIO, "%s: fsync: %s", dir, strerror(errno)) : DS_OK;
}

static int write_json(const char *path, json_t *j, ds_err *e) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!s) return ds_err_set(e, DS_ENOMEM, "out of memory");
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    s[n] = '\n';
    int rc = ds_write_file_atomic(path, s, n + 1, e);
    free(s);
    return rc;
}

/* The config.json of a new model: V3 defaults, then the recipe's keys.
 * max_position_embeddings is the context the model was trained on, so
 * generate/chat slide their window there instead of running past it. */
static json_t *complete_model_cfg(json_t *user, int64_t data_vocab, int32_t bos, int32_t eos, int64_t seq_len,
                                  double init_std) {
    json_t *c = json_pack("{s:[s], s:s, s:I, s:s, s:b, s:b, s:f, s:f, s:b, s:I, s:I, s:s, s:s, s:b, s:f,"
                          " s:I, s:I, s:I, s:I, s:f, s:s, s:s}",
                          "architectures", "DeepseekV3ForCausalLM", "model_type", "deepseek_v3",
                          "vocab_size", (json_int_t)data_vocab, "hidden_act", "silu", "attention_bias", 0,
                          "tie_word_embeddings", 0, "rms_norm_eps", 1e-6, "rope_theta", 10000.0, "rope_interleave", 1,
                          "max_position_embeddings", (json_int_t)seq_len, "moe_layer_freq", (json_int_t)1,
                          "topk_method", "noaux_tc", "scoring_func", "sigmoid", "norm_topk_prob", 1,
                          "routed_scaling_factor", 1.0, "n_group", (json_int_t)1, "topk_group", (json_int_t)1,
                          "first_k_dense_replace", (json_int_t)1, "num_nextn_predict_layers", (json_int_t)1,
                          "initializer_range", init_std, "dtype", "float32", "torch_dtype", "float32");
    if (bos >= 0) json_object_set_new(c, "bos_token_id", json_integer(bos));
    if (eos >= 0) json_object_set_new(c, "eos_token_id", json_integer(eos));
    if (user) json_object_update(c, user);
    if (!json_object_get(c, "num_key_value_heads") && json_object_get(c, "num_attention_heads"))
        json_object_set(c, "num_key_value_heads", json_object_get(c, "num_attention_heads"));
    json_object_set_new(c, "use_cache", json_true());
    return c;
}

static int read_tokenizer(ds_trainer *t, const char *dir, ds_err *e) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    free(t->tokenizer_json);
    t->tokenizer_json = NULL;
    return ds_read_file(path, 256u << 20, &t->tokenizer_json, &t->tokenizer_len, e);
}

static int common_setup(ds_trainer *t, ds_err *e) {
    const ds_recipe *r = &t->r;
    int64_t T = r->seq_len, B = r->batch_size;
    if (t->m->cfg.vocab_size < t->data.vocab_size)
        return ds_err_set(e, DS_EINVAL, "model vocab_size %lld is smaller than the data's %lld",
                          (long long)t->m->cfg.vocab_size, (long long)t->data.vocab_size);
    int rc = tr_gemm_set_bf16(r->precision == DS_PREC_BF16, e);   /* process-wide: the GEMMs' inputs */
    if (rc) return rc;
    if ((rc = ds_dp_init(&t->dp, t->m, e))) return rc;
    int64_t S = B * r->grad_accum, G = r->unit_seqs, N = t->dp.n;
    if (S % G)
        return ds_err_set(e, DS_EINVAL, "the global batch of %lld sequences (batch_size %lld x grad_accum %lld) is not a "
                          "multiple of unit_seqs %lld", (long long)S, (long long)B, (long long)r->grad_accum, (long long)G);
    if ((S / G) % N)
        return ds_err_set(e, DS_EINVAL, "the global batch of %lld sequences (batch_size %lld x grad_accum %lld, %lld units "
                          "of unit_seqs %lld) does not split evenly over %lld ranks (mpirun -np %lld): use a multiple "
                          "of %lld units", (long long)S, (long long)B, (long long)r->grad_accum, (long long)(S / G),
                          (long long)G, (long long)N, (long long)N, (long long)N);
    if ((rc = ds_adamw_init_range(&t->opt, t->m, t->dp.lo, t->dp.hi, (float)r->beta1, (float)r->beta2, (float)r->eps,
                                  (float)r->weight_decay, e)))
        return rc;
    if (t->m->ep_n > 1 && (rc = ds_adamw_init_range(&t->opt_ep, t->m, t->m->n_rep, t->m->n_floats, (float)r->beta1,
                                                     (float)r->beta2, (float)r->eps, (float)r->weight_decay, e)))
        return rc;
    t->batch = malloc((size_t)(S * T) * sizeof(int32_t));
    int64_t want = r->eval_tokens > 0 ? DS_MAX(1, r->eval_tokens / (T - 1)) : 0;
    t->val = malloc((size_t)(DS_MAX(want, 1) * T) * sizeof(int32_t));
    if (!t->batch || !t->val) return ds_err_set(e, DS_ENOMEM, "out of memory");
    t->n_val = want ? ds_data_val_windows(&t->data, T, want, t->val) : 0;
    if (t->dp.rank == 0) {   /* rank 0 alone writes the run folder */
        if ((rc = ds_mkdir_p(r->out, e))) return rc;
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.jsonl", r->out);
        t->metrics = fopen(path, "a");
        if (!t->metrics) return ds_err_set(e, DS_EIO, "%s: %s", path, strerror(errno));
    }
    /* the job's peak: every rank's (measured on rank 0). In bf16 mode the
     * GEMMs run on vdpbf16ps, which does two products per fp32 lane in the
     * time an FMA does one: the measured fp32 peak is doubled, or MFU would
     * read above 100 % (a given --peak-gflops is taken as it is). */
    double peak = r->peak_gflops > 0 ? r->peak_gflops * 1e9
                                     : ds_measure_peak_flops() * (r->precision == DS_PREC_BF16 ? 2.0 : 1.0);
    t->peak_flops = peak * (double)N;
    t->step_flops = ds_tmodel_step_flops(t->m, B, T) * (double)r->grad_accum;
    return DS_OK;
}

/* ranks the routed experts are split over: all of them with expert_parallel */
static int ep_ranks(const ds_recipe *r) { return r->expert_parallel ? ds_dist_size() : 1; }

static int check_recipe(const ds_recipe *r, ds_err *e) {
    if (!r->data[0]) return ds_err_set(e, DS_EINVAL, "no data folder (\"data\" / --data)");
    if (!r->out[0]) return ds_err_set(e, DS_EINVAL, "no output folder (\"out\" / --out)");
    if (r->seq_len < 3) return ds_err_set(e, DS_EINVAL, "seq_len must be >= 3");
    if (r->min_lr > r->lr) return ds_err_set(e, DS_EINVAL, "min_lr %g exceeds lr %g", r->min_lr, r->lr);
    return DS_OK;
}

/* ---------------------------------------------------------------- init / resume */

int ds_trainer_init(ds_trainer *t, const ds_recipe *r, json_t *model_cfg, ds_err *e) {
    memset(t, 0, sizeof *t);
    t->r = *r;
    t->last_val = NAN;
    t->debug_nan_step = -1;
    int rc;
    if ((rc = check_recipe(r, e))) return rc;
    if ((rc = ds_data_open(&t->data, r->data, e))) return rc;
    if ((rc = read_tokenizer(t, r->data, e))) return rc;
    if (r->init_from[0]) {
        if ((rc = ds_tmodel_load_ep(&t->m, r->init_from, ep_ranks(r), ds_dist_rank(), e))) return rc;
        char path[4096];
        snprintf(path, sizeof path, "%s/config.json", r->init_from);
        if ((rc = ds_json_load_file(path, 16u << 20, &t->model_cfg, e))) return rc;
    } else {
        ds_tokenizer *tok;
        if ((rc = tok_load_buf(&tok, "tokenizer.json", t->tokenizer_json, t->tokenizer_len, NULL, 0, e))) return rc;
        int32_t bos = tok_bos_id(tok), eos = tok_eos_id(tok);
        tok_free(tok);
        t->model_cfg = complete_model_cfg(model_cfg, t->data.vocab_size, bos, eos, r->seq_len, r->init_std);
        char *js = json_dumps(t->model_cfg, JSON_COMPACT);
        ds_config cfg;
        rc = ds_config_parse(&cfg, js, strlen(js), "model config", e);
        free(js);
        if (rc) return rc;
        if ((rc = ds_tmodel_init_ep(&t->m, &cfg, cfg.n_mtp >= 1, ep_ranks(r), ds_dist_rank(), e))) return rc;
        ds_rng rng;
        ds_rng_seed(&rng, (uint64_t)r->seed);
        ds_tmodel_init_weights(t->m, (float)r->init_std, &rng);
    }
    if ((rc = ds_data_start(&t->data, r->seq_len, (uint64_t)r->seed, 0, 0, e))) return rc;
    return common_setup(t, e);
}

/* OUT, OUT/latest or OUT/ckpt-N -> the checkpoint folder */
static void resolve_ckpt(const char *in, char *out, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/trainer_state.json", in);
    if (access(p, F_OK) == 0) { snprintf(out, n, "%s", in); return; }
    snprintf(out, n, "%s/latest", in);
}

int ds_trainer_resume(ds_trainer *t, const char *ckpt_in, char **overrides, int n_overrides, ds_err *e) {
    memset(t, 0, sizeof *t);
    t->last_val = NAN;
    t->debug_nan_step = -1;
    char ckpt[4096], path[4200];
    resolve_ckpt(ckpt_in, ckpt, sizeof ckpt);
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    json_t *st;
    int rc = ds_json_load_file(path, 16u << 20, &st, e);
    if (rc) return rc;
    ds_recipe_default(&t->r);
    if ((rc = ds_recipe_apply(&t->r, json_object_get(st, "recipe"), NULL, path, e))) goto done;
    for (int i = 0; i < n_overrides; i++)
        if ((rc = ds_recipe_set(&t->r, overrides[i], e))) goto done;
    if ((rc = check_recipe(&t->r, e))) goto done;
    int64_t epoch = 0, pos = 0, adam_t = 0;
    if ((rc = ds_json_get_int(st, path, "step", true, 0, INT64_MAX, &t->step, e))) goto done;
    if ((rc = ds_json_get_int(st, path, "tokens", true, 0, INT64_MAX, &t->tokens, e))) goto done;
    if ((rc = ds_json_get_int(st, path, "adam_t", true, 0, INT64_MAX, &adam_t, e))) goto done;
    if ((rc = ds_json_get_int(st, path, "data_epoch", true, 0, INT64_MAX, &epoch, e))) goto done;
    if ((rc = ds_json_get_int(st, path, "data_pos", true, 0, INT64_MAX, &pos, e))) goto done;
    if ((rc = ds_json_get_int(st, path, "nan_skips", false, 0, INT64_MAX, &t->nan_skips, e))) goto done;
    if ((rc = ds_json_get_num(st, path, "elapsed_s", false, 0, 1e12, &t->elapsed, e))) goto done;
    double lv = NAN;
    if ((rc = ds_json_get_num(st, path, "last_val_loss", false, 0, 1e9, &lv, e))) goto done;
    t->last_val = lv;
    if ((rc = ds_data_open(&t->data, t->r.data, e))) goto done;
    if ((rc = read_tokenizer(t, ckpt, e))) goto done;
    if ((rc = ds_tmodel_load_ep(&t->m, ckpt, ep_ranks(&t->r), ds_dist_rank(), e))) goto done;
    snprintf(path, sizeof path, "%s/config.json", ckpt);
    if ((rc = ds_json_load_file(path, 16u << 20, &t->model_cfg, e))) goto done;
    if ((rc = ds_data_start(&t->data, t->r.seq_len, (uint64_t)t->r.seed, epoch, pos, e))) goto done;
    if ((rc = common_setup(t, e))) goto done;
    t->opt.t = t->opt_ep.t = adam_t;
    /* optimizer moments */
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    ds_safetensors os;
    memset(&os, 0, sizeof os);
    if ((rc = ds_safetensors_open_file(&os, path, e))) goto done;
    for (int64_t i = 0; i < t->m->n_params && !rc; i++) {
        const ds_tparam *p = &t->m->params[i];
        if (!p->trainable) continue;
        for (int k = 0; k < 2 && !rc; k++) {
            char name[160];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            ds_st_tensor *x = ds_safetensors_find(&os, name);
            /* this rank's shard [lo, hi) of the arena takes its part of each
             * tensor; its own experts whole (expert parallel); others' none */
            const ds_adamw *o = p->off >= t->m->n_rep ? &t->opt_ep : &t->opt;
            int64_t a = DS_MAX(p->off, o->lo), b = DS_MIN(p->off + p->numel, o->hi);
            if (!x || x->dtype != DS_DTYPE_F32 || (int64_t)(x->end - x->begin) != p->numel * 4)
                rc = ds_err_set(e, DS_EFORMAT, "%s: missing or mis-shaped '%s'", path, name);
            else if (p->off >= 0 && a < b)
                memcpy((k ? o->v : o->m) + (a - o->lo), (const float *)x->data + (a - p->off),
                       (size_t)(b - a) * sizeof(float));
        }
    }
    ds_safetensors_close(&os);
done:
    json_decref(st);
    return rc;
}

void ds_trainer_free(ds_trainer *t) {
    if (!t) return;
    ds_tmodel_free(t->m);
    ds_adamw_free(&t->opt);
    ds_adamw_free(&t->opt_ep);
    ds_dp_free(&t->dp);
    ds_data_close(&t->data);
    json_decref(t->model_cfg);
    free(t->tokenizer_json);
    free(t->batch);
    free(t->val);
    if (t->metrics) fclose(t->metrics);
    ds_par_env_release(&t->env);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- step / eval */

static int trainer_step(ds_trainer *t, ds_step_info *info, ds_err *e) {
    const ds_recipe *r = &t->r;
    ds_tmodel *m = t->m;
    memset(info, 0, sizeof *info);
    double t0 = ds_now();
    tr_prof_enable(true);
    tr_prof_reset();
    int64_t B = r->batch_size, T = r->seq_len, G = r->unit_seqs, S = B * r->grad_accum;
    /* the global batch, the same on every rank; each computes its units (dp.h) */
    for (int64_t a = 0; a < r->grad_accum; a++) {
        int rc = ds_data_next(&t->data, t->batch + a * B * T, B, e);
        if (rc) return rc;
    }
    ds_loss_opts o = { (float)r->mtp_weight, (float)r->balance_alpha, 1.0f, false };
    ds_losses ls;
    ds_scratch_clear_failed();
    int rc = ds_dp_step(&t->dp, m, t->batch, S / G, G, T, &o, &ls, e);
    if (rc) return rc;
    if (ds_scratch_failed()) return ds_err_set(e, DS_ENOMEM, "step %lld: out of memory for kernel scratch", (long long)t->step);
    info->loss = ls.loss;
    info->ce = ls.ce;
    info->mtp = ls.mtp;
    info->balance = ls.balance;
    if (t->debug_nan_step == t->step)
        for (int64_t i = 0; i < m->n_params; i++)
            if (m->params[i].trainable) {
                if (m->params[i].off >= t->dp.lo && m->params[i].off < t->dp.hi) m->g[m->params[i].off] = NAN;
                break;
            }
    if ((rc = ds_dp_grad_norm(&t->dp, m, &t->opt, &info->grad_norm, e))) return rc;
    info->lr = ds_lr_at(t->step, r->warmup_steps, r->steps, (float)r->lr, (float)r->min_lr, r->schedule);
    if (!isfinite(info->loss) || !isfinite(info->grad_norm)) {
        /* the guard: never apply a non-finite update */
        info->skipped = true;
        t->nan_skips++;
        if (++t->nan_consecutive > r->max_nan_skips)
            return ds_err_set(e, DS_ERANGE, "step %lld: loss or gradient not finite for %lld consecutive steps; stopping",
                              (long long)t->step, (long long)t->nan_consecutive);
        info->maxvio = ds_load_maxvio(m);
    } else {
        t->nan_consecutive = 0;
        float gs = 1.0f;   /* clipping, applied inside the update */
        if (r->grad_clip > 0 && info->grad_norm > r->grad_clip) gs = (float)(r->grad_clip / (info->grad_norm + 1e-6));
        ds_adamw_step_scaled(&t->opt, m, (float)info->lr, gs);   /* this rank's shard */
        if (m->ep_n > 1) ds_adamw_step_scaled(&t->opt_ep, m, (float)info->lr, gs);   /* its experts */
        if ((rc = ds_dp_allgather_params(&t->dp, m, e))) return rc;
        bool frozen = r->bias_freeze_step >= 0 && t->step >= r->bias_freeze_step;
        info->maxvio = ds_bias_update(m, frozen ? 0.0f : (float)r->bias_update_speed);   /* global loads: same on every rank */
    }
    t->step++;
    info->step = t->step;
    info->tokens = S * T;
    t->tokens += info->tokens;
    info->seconds = ds_now() - t0;
    /* rank 0's clock for every rank: time limits and checkpoints agree */
    if ((rc = ds_dist_bcast(&info->seconds, sizeof info->seconds, e))) return rc;
    info->flops = t->step_flops;
    double mf, ms;
    tr_prof_read(&mf, &info->mm_rate, &ms);
    tr_prof_enable(false);
    info->mm_frac = info->seconds > 0 ? ms / info->seconds : 0;
    t->elapsed += info->seconds;
    return DS_OK;
}

/* Steps and evaluations run with the trainer's env bound (its kernel scratch
 * and matmul profile), restored after. */
int ds_trainer_step(ds_trainer *t, ds_step_info *info, ds_err *e) {
    ds_par_env *prev = ds_par_env_bind(&t->env);
    int rc = trainer_step(t, info, e);
    ds_par_env_bind(prev);
    if (!rc && t->debug_step_delay_ms > 0) {
        struct timespec d = { t->debug_step_delay_ms / 1000, (long)(t->debug_step_delay_ms % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    return rc;
}

static int trainer_eval(ds_trainer *t, double *val_loss, ds_err *e) {
    *val_loss = NAN;
    if (t->n_val == 0) return DS_OK;
    /* every window one unit (dp.h): its ce, summed in window order */
    ds_loss_opts o = { 0, 0, 1, true };
    ds_losses ls;
    int rc = ds_dp_step(&t->dp, t->m, t->val, t->n_val, 1, t->r.seq_len, &o, &ls, e);
    if (rc) return rc;
    *val_loss = t->last_val = ls.ce;
    return DS_OK;
}

int ds_trainer_eval(ds_trainer *t, double *val_loss, ds_err *e) {
    ds_par_env *prev = ds_par_env_bind(&t->env);
    int rc = trainer_eval(t, val_loss, e);
    ds_par_env_bind(prev);
    return rc;
}

void ds_trainer_log(ds_trainer *t, json_t *line) {
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    json_decref(line);
    if (!s || !t->metrics) { free(s); return; }
    fprintf(t->metrics, "%s\n", s);
    fflush(t->metrics);
    free(s);
}

/* ---------------------------------------------------------------- checkpoints */

/* m1, m2: every moment in the one-process layout (params[i].coff) */
static int write_optimizer(const ds_trainer *t, const float *m1, const float *m2, const char *path, ds_err *e) {
    const ds_tmodel *m = t->m;
    ds_st_write_item *items = calloc((size_t)(2 * m->n_params), sizeof *items);
    char (*names)[160] = calloc((size_t)(2 * m->n_params), sizeof *names);
    if (!items || !names) { free(items); free(names); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    int64_t n = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (!p->trainable) continue;
        for (int k = 0; k < 2; k++) {
            snprintf(names[n], sizeof names[n], "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            items[n] = (ds_st_write_item){ names[n], DS_DTYPE_F32, p->ndim, { p->shape[0], p->shape[1] },
                                           (k ? m2 : m1) + p->coff };
            n++;
        }
    }
    int rc = ds_safetensors_write(path, items, n, "{\"format\":\"deepseek.c AdamW moments\"}", e);
    free(items);
    free(names);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void prune(const char *out, int64_t keep) {
    DIR *d = opendir(out);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096)
        if (!strncmp(de->d_name, "ckpt-", 5)) names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    for (int i = 0; i < n; i++) {
        if (i < n - keep) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", out, names[i]);
            rm_dir(p);
        }
        free(names[i]);
    }
}

/* Rank 0: the checkpoint folder's files, written into a temporary folder
 * and renamed into place. w (NULL: the model's own arena), m1, m2: every
 * parameter and AdamW moment in the one-process layout (n_canon each). */
static int save_files(ds_trainer *t, const char *final, const float *w, const float *m1, const float *m2, ds_err *e) {
    const ds_recipe *r = &t->r;
    char tmp[4096], path[4200];
    snprintf(tmp, sizeof tmp, "%s/.tmp-ckpt-%08lld-%ld", r->out, (long long)t->step, (long)getpid());
    rm_dir(tmp);
    if (mkdir(tmp, 0755) != 0) return ds_err_set(e, DS_EIO, "%s: %s", tmp, strerror(errno));
    int rc;
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if ((rc = write_json(path, t->model_cfg, e))) goto fail;
    char meta[128];
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"step\":\"%lld\"}", (long long)t->step);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if ((rc = w ? ds_tmodel_save_arena(t->m, w, path, meta, e) : ds_tmodel_save(t->m, path, false, meta, e))) goto fail;
    snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
    if ((rc = ds_write_file_atomic(path, t->tokenizer_json, t->tokenizer_len, e))) goto fail;
    json_t *gen = json_object();
    json_t *bos = json_object_get(t->model_cfg, "bos_token_id"), *eos = json_object_get(t->model_cfg, "eos_token_id");
    if (bos) json_object_set(gen, "bos_token_id", bos);
    if (eos) json_object_set(gen, "eos_token_id", eos);
    snprintf(path, sizeof path, "%s/generation_config.json", tmp);
    rc = write_json(path, gen, e);
    json_decref(gen);
    if (rc) goto fail;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    if ((rc = write_optimizer(t, m1, m2, path, e))) goto fail;
    json_t *st = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:o}", "format", "deepseek.c trainer state v1",
                           "step", (json_int_t)t->step, "tokens", (json_int_t)t->tokens, "adam_t", (json_int_t)t->opt.t,
                           "data_epoch", (json_int_t)t->data.epoch, "data_pos", (json_int_t)t->data.pos,
                           "nan_skips", (json_int_t)t->nan_skips, "elapsed_s", t->elapsed,
                           "threads", (json_int_t)ds_threads_get(), "ranks", (json_int_t)t->dp.n,
                           "recipe", ds_recipe_to_json(r));
    if (isfinite(t->last_val)) json_object_set_new(st, "last_val_loss", json_real(t->last_val));
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    rc = write_json(path, st, e);
    json_decref(st);
    if (rc) goto fail;
    if ((rc = fsync_dir(tmp, e))) goto fail;
    rm_dir(final);   /* a re-save of the same step */
    if (rename(tmp, final) != 0) { rc = ds_err_set(e, DS_EIO, "rename %s -> %s: %s", tmp, final, strerror(errno)); goto fail; }
    char link_tmp[4200], link[4200], target[64];
    snprintf(target, sizeof target, "ckpt-%08lld", (long long)t->step);
    snprintf(link_tmp, sizeof link_tmp, "%s/.latest-%ld", r->out, (long)getpid());
    snprintf(link, sizeof link, "%s/latest", r->out);
    unlink(link_tmp);
    if (symlink(target, link_tmp) != 0 || rename(link_tmp, link) != 0)
        return ds_err_set(e, DS_EIO, "%s: %s", link, strerror(errno));
    if ((rc = fsync_dir(r->out, e))) return rc;
    prune(r->out, r->keep_checkpoints);
    return DS_OK;
fail:
    rm_dir(tmp);
    return rc;
}

/* Expert parallel: every parameter and moment in the one-process layout on
 * rank 0 (*w, *m1, *m2: n_canon floats each, the caller frees them): the replicated
 * region as it is there (moments: the ZeRO-1 shards gathered), each rank's
 * expert region gathered and placed by that rank's layout. Collective. */
static int gather_experts(ds_trainer *t, float **w, float **m1, float **m2, ds_err *e) {
    const ds_tmodel *m = t->m;
    int N = t->dp.n, me = t->dp.rank;
    float *W = NULL, *M1 = NULL, *M2 = NULL;
    *w = *m1 = *m2 = NULL;
    int64_t nx = m->n_floats - m->n_rep, *xo = calloc((size_t)(N + 1), sizeof *xo);
    int64_t *qoff = me == 0 ? malloc((size_t)m->n_params * sizeof *qoff) : NULL;
    float *rep[2] = { NULL, NULL }, *ex[3] = { NULL, NULL, NULL };
    int rc = !xo || (me == 0 && !qoff) ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
    if (!rc) rc = ds_dist_allgather_i64(nx, xo + 1, e);
    for (int q = 0; q < N && !rc; q++) xo[q + 1] += xo[q];   /* rank q's region: [xo[q], xo[q+1]) */
    if (!rc && me == 0) {
        size_t cb = (size_t)m->n_canon * sizeof(float);
        *w = W = ds_alloc_huge(cb), *m1 = M1 = ds_alloc_huge(cb), *m2 = M2 = ds_alloc_huge(cb);
        for (int k = 0; k < 2; k++) rep[k] = ds_alloc_huge((size_t)DS_MAX(m->n_rep, 1) * sizeof(float));
        for (int k = 0; k < 3; k++) ex[k] = ds_alloc_huge((size_t)DS_MAX(xo[N], 1) * sizeof(float));
        if (!W || !M1 || !M2 || !rep[0] || !rep[1] || !ex[0] || !ex[1] || !ex[2])
            rc = ds_err_set(e, DS_ENOMEM, "out of memory gathering the experts for a checkpoint (%.1f MB)",
                            (3.0 * (double)m->n_canon + 2.0 * (double)m->n_rep + 3.0 * (double)xo[N]) * 4e-6);
    }
    /* rank 0 short of memory: every rank stops here, not in a gather */
    int64_t bad = rc != 0;
    if (xo && ds_dist_allreduce_sum_i64(&bad, 1, e) == 0 && bad && !rc)
        rc = ds_err_set(e, DS_ENOMEM, "rank 0 is out of memory gathering the experts for a checkpoint");
    if (rc) goto out;
    if ((rc = ds_dp_gather_shards(&t->dp, t->opt.m, rep[0], e)) || (rc = ds_dp_gather_shards(&t->dp, t->opt.v, rep[1], e)))
        goto out;
    const float *mine[3] = { m->w + m->n_rep, t->opt_ep.m, t->opt_ep.v };
    for (int k = 0; k < 3 && !rc; k++) rc = ds_dist_gatherv_f32(mine[k], ex[k], xo, e);
    if (rc || me > 0) goto out;
    memset(M1, 0, (size_t)m->n_canon * sizeof(float));
    memset(M2, 0, (size_t)m->n_canon * sizeof(float));
    for (int q = 0; q < N; q++) {
        int64_t qrep, qn;
        ds_tmodel_ep_layout(m, N, q, qoff, &qrep, &qn);
        for (int64_t i = 0; i < m->n_params; i++) {
            const ds_tparam *p = &m->params[i];
            size_t nb = (size_t)p->numel * sizeof(float);
            if (qoff[i] < 0) continue;
            if (qoff[i] < qrep) {   /* replicated: from rank 0's own arena, once */
                if (q > 0) continue;
                memcpy(W + p->coff, m->w + p->off, nb);
                memcpy(M1 + p->coff, rep[0] + p->off, nb);
                memcpy(M2 + p->coff, rep[1] + p->off, nb);
            } else {
                int64_t at = xo[q] + (qoff[i] - qrep);
                memcpy(W + p->coff, ex[0] + at, nb);
                memcpy(M1 + p->coff, ex[1] + at, nb);
                memcpy(M2 + p->coff, ex[2] + at, nb);
            }
        }
    }
out:
    free(xo); free(qoff);
    for (int k = 0; k < 2; k++) ds_free(rep[k]);
    for (int k = 0; k < 3; k++) ds_free(ex[k]);
    return rc;
}

int ds_trainer_save(ds_trainer *t, const char **path_out, ds_err *e) {
    char *final = t->ckpt_path;
    const ds_recipe *r = &t->r;
    if (!ds_params_finite(t->m))
        return ds_err_set(e, DS_ERANGE, "step %lld: parameters are not finite; refusing to write a checkpoint",
                          (long long)t->step);
    snprintf(final, sizeof t->ckpt_path, "%s/ckpt-%08lld", r->out, (long long)t->step);
    if (t->m->ep_n > 1) {
        float *w, *m1, *m2;
        int rc = gather_experts(t, &w, &m1, &m2, e);
        if (!rc && t->dp.rank == 0) rc = save_files(t, final, w, m1, m2, e);
        ds_free(w); ds_free(m1); ds_free(m2);
        if (!rc && path_out) *path_out = final;
        return rc;
    }
    /* the moments of every shard, gathered on rank 0: one layout whatever N */
    float *m1 = t->opt.m, *m2 = t->opt.v;
    int rc;
    if (t->dp.n > 1) {
        m1 = m2 = NULL;
        if (t->dp.rank == 0) {
            m1 = ds_alloc_huge((size_t)t->m->n_floats * sizeof(float));
            m2 = ds_alloc_huge((size_t)t->m->n_floats * sizeof(float));
            if (!m1 || !m2) { ds_free(m1); ds_free(m2); return ds_err_set(e, DS_ENOMEM, "out of memory gathering the AdamW moments"); }
        }
        if ((rc = ds_dp_gather_shards(&t->dp, t->opt.m, m1, e)) || (rc = ds_dp_gather_shards(&t->dp, t->opt.v, m2, e))) {
            ds_free(m1); ds_free(m2);
            return rc;
        }
        if (t->dp.rank > 0) {   /* rank 0 writes */
            if (path_out) *path_out = final;
            return DS_OK;
        }
    }
    rc = save_files(t, final, NULL, m1, m2, e);
    if (t->dp.n > 1) { ds_free(m1); ds_free(m2); }
    if (!rc && path_out) *path_out = final;
    return rc;
}

