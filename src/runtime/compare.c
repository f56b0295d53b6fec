/*
 * compare.c - KL divergence, top-1 agreement and logit differences between
 * two models on one token sequence (see compare.h).
 */
#include "compare.h"

#include <math.h>
#include <stdlib.h>

void ds_logit_stats_compute(const float *ref, const float *test, int64_t n, int64_t V, ds_logit_stats *s) {
    s->n = n;
    s->kl_mean = s->kl_max = s->max_abs = s->rms = 0;
    s->top1 = 0;
    double se = 0;
    for (int64_t t = 0; t < n; t++) {
        const float *a = ref + t * V, *b = test + t * V;
        double ma = -INFINITY, mb = -INFINITY;
        int64_t ia = 0, ib = 0;
        for (int64_t i = 0; i < V; i++) {
            if (a[i] > ma) { ma = a[i]; ia = i; }
            if (b[i] > mb) { mb = b[i]; ib = i; }
            double d = (double)a[i] - b[i];
            se += d * d;
            if (fabs(d) > s->max_abs) s->max_abs = fabs(d);
        }
        double za = 0, zb = 0;
        for (int64_t i = 0; i < V; i++) { za += exp(a[i] - ma); zb += exp(b[i] - mb); }
        double lza = log(za), lzb = log(zb), kl = 0;
        for (int64_t i = 0; i < V; i++) {
            double la = a[i] - ma - lza, lb = b[i] - mb - lzb;
            kl += exp(la) * (la - lb);
        }
        if (kl < 0) kl = 0;  /* rounding */
        s->kl_mean += kl;
        if (kl > s->kl_max) s->kl_max = kl;
        s->top1 += ia == ib;
    }
    if (n > 0) {
        s->kl_mean /= (double)n;
        s->top1 /= (double)n;
        s->rms = sqrt(se / ((double)n * (double)V));
    }
}

static int run(const ds_model *m, const int32_t *tokens, int64_t T, ds_kv_type kv, bool incremental, float *logits,
               ds_err *e) {
    ds_kvcache cache;
    ds_ctx *x = NULL;
    int rc = ds_ctx_new(&x, e);
    if (rc) return rc;
    rc = ds_kvcache_init(&cache, m, T, e);
    if (!rc) rc = ds_kvcache_set_type(&cache, kv, e);
    int64_t V = m->cfg.vocab_size;
    if (!rc && incremental) {
        for (int64_t t = 0; t < T && !rc; t++) {
            ds_seq_chunk ch = { &cache, tokens + t, 1, true };
            rc = ds_model_forward(m, x, &ch, 1, logits + t * V, NULL, e);
        }
    } else if (!rc) {
        ds_seq_chunk ch = { &cache, tokens, T, true };
        rc = ds_model_forward(m, x, &ch, 1, logits, NULL, e);
    }
    ds_kvcache_free(&cache);
    ds_ctx_free(x);
    return rc;
}

int ds_compare_models(ds_model *ref, ds_model *test, const int32_t *tokens, int64_t T, const ds_compare_opts *o,
                      ds_logit_stats *s, ds_err *e) {
    ds_compare_opts def = { DS_KV_F32, DS_KV_F32, false };
    if (!o) o = &def;
    int64_t V = ref->cfg.vocab_size;
    if (test->cfg.vocab_size != V)
        return ds_err_set(e, DS_EINVAL, "vocabulary sizes differ: %lld vs %lld", (long long)V, (long long)test->cfg.vocab_size);
    float *a = malloc((size_t)(T * V) * sizeof(float)), *b = malloc((size_t)(T * V) * sizeof(float));
    int rc = (!a || !b) ? ds_err_set(e, DS_ENOMEM, "out of memory for %lld x %lld logits", (long long)T, (long long)V) : DS_OK;
    if (!rc) rc = run(ref, tokens, T, o->kv_ref, o->incremental, a, e);
    if (!rc) rc = run(test, tokens, T, o->kv_test, o->incremental, b, e);
    if (!rc) ds_logit_stats_compute(a, b, T, V, s);
    free(a);
    free(b);
    return rc;
}
