/*
 * sampler.c - see sampler.h.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ds_sampler_params_default(ds_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 0;
}

int ds_sampler_params_check(const ds_sampler_params *p, ds_err *e) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return ds_err_set(e, DS_ERANGE, "temperature %g is out of range [0, 100]", p->temperature);
    if (p->top_k < 0) return ds_err_set(e, DS_ERANGE, "top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return ds_err_set(e, DS_ERANGE, "top_p %g is out of range (0, 1]", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return ds_err_set(e, DS_ERANGE, "min_p %g is out of range [0, 1]", p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return ds_err_set(e, DS_ERANGE, "repetition_penalty %g is out of range (0, 100]", p->repetition_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return ds_err_set(e, DS_ERANGE, "frequency_penalty %g is out of range [-2, 2]", p->frequency_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return ds_err_set(e, DS_ERANGE, "presence_penalty %g is out of range [-2, 2]", p->presence_penalty);
    return DS_OK;
}

int ds_sampler_init(ds_sampler *s, const ds_sampler_params *p, int64_t vocab, ds_err *e) {
    memset(s, 0, sizeof *s);
    int rc = ds_sampler_params_check(p, e);
    if (rc) return rc;
    s->p = *p;
    s->vocab = vocab;
    s->seen = calloc((size_t)vocab, sizeof *s->seen);
    s->out_count = calloc((size_t)vocab, sizeof *s->out_count);
    s->order = malloc((size_t)vocab * sizeof *s->order);
    s->probs = malloc((size_t)vocab * sizeof *s->probs);
    if (!s->seen || !s->out_count || !s->order || !s->probs) {
        ds_sampler_free(s);
        return ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    ds_rng_seed(&s->rng, p->seed);
    return DS_OK;
}

void ds_sampler_free(ds_sampler *s) {
    if (!s) return;
    free(s->seen);
    free(s->out_count);
    free(s->order);
    free(s->probs);
    memset(s, 0, sizeof *s);
}

void ds_sampler_reset(ds_sampler *s, bool reseed) {
    memset(s->seen, 0, (size_t)s->vocab * sizeof *s->seen);
    memset(s->out_count, 0, (size_t)s->vocab * sizeof *s->out_count);
    if (reseed) ds_rng_seed(&s->rng, s->p.seed);
}

void ds_sampler_add_prompt(ds_sampler *s, const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->vocab) s->seen[ids[i]]++;
}

void ds_sampler_accept(ds_sampler *s, int32_t id) {
    if (id < 0 || id >= s->vocab) return;
    s->seen[id]++;
    s->out_count[id]++;
}

static int cmp_desc(const void *a, const void *b, void *keys) {
    const float *k = keys;
    float x = k[*(const int32_t *)a], y = k[*(const int32_t *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

int32_t ds_sampler_sample(ds_sampler *s, float *logits) {
    int64_t V = s->vocab;
    const ds_sampler_params *p = &s->p;
    if (p->repetition_penalty != 1.0f)
        for (int64_t i = 0; i < V; i++)
            if (s->seen[i]) logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty : logits[i] * p->repetition_penalty;
    if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f)
        for (int64_t i = 0; i < V; i++)
            if (s->out_count[i]) logits[i] -= (float)s->out_count[i] * p->frequency_penalty + p->presence_penalty;
    if (p->temperature <= 0.0f) {
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return (int32_t)best;
    }
    /* candidates sorted by logit (only as many as needed) */
    int64_t n = V;
    for (int64_t i = 0; i < V; i++) { s->order[i] = (int32_t)i; logits[i] /= p->temperature; }
    if (p->top_k > 0 && p->top_k < V) {
        /* partial selection: move the top_k to the front, then sort those */
        for (int64_t k = 0; k < p->top_k; k++) {
            int64_t best = k;
            for (int64_t i = k + 1; i < V; i++) {
                float a = logits[s->order[i]], b = logits[s->order[best]];
                if (a > b || (a == b && s->order[i] < s->order[best])) best = i;
            }
            int32_t t = s->order[k]; s->order[k] = s->order[best]; s->order[best] = t;
        }
        n = p->top_k;
    } else {
        qsort_r(s->order, (size_t)V, sizeof *s->order, cmp_desc, logits);
    }
    float mx = logits[s->order[0]];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) { s->probs[i] = expf(logits[s->order[i]] - mx); sum += s->probs[i]; }
    for (int64_t i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
    if (p->top_p < 1.0f) {
        double c = 0;
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            c += s->probs[i];
            if (c >= p->top_p) { keep = i + 1; break; }
        }
        n = keep;
    }
    if (p->min_p > 0.0f) {
        float thr = p->min_p * s->probs[0];
        int64_t keep = 1;
        while (keep < n && s->probs[keep] >= thr) keep++;
        n = keep;
    }
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += s->probs[i];
    double r = ds_rng_uniform(&s->rng) * total, c = 0;
    for (int64_t i = 0; i < n; i++) {
        c += s->probs[i];
        if (r < c) return s->order[i];
    }
    return s->order[n - 1];
}

void ds_log_softmax(float *out, const float *logits, int64_t V) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < V; i++) s += exp((double)(logits[i] - mx));
    float lse = mx + (float)log(s);
    for (int64_t i = 0; i < V; i++) out[i] = logits[i] - lse;
}
