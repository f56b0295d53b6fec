/*
 * sampler_ref.c - the plain twin of ds_sampler_sample (sampler.c): the
 * same order of operations done the obvious way, every step over the whole
 * vocabulary and a full sort of it. For tests (same distribution, the same
 * tokens on the top-k path) and for `bench --sampler` (the ratio).
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

static int cmp_desc_ref(const void *a, const void *b, void *keys) {
    const float *k = keys;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (k[x] > k[y]) return -1;
    if (k[x] < k[y]) return 1;
    return x < y ? -1 : x > y;
}

int64_t ds_sampler_candidates_ref(ds_sampler *s, float *logits, int32_t *ids, float *probs) {
    int64_t V = s->vocab;
    const ds_sampler_params *p = &s->p;
    for (int64_t i = 0; i < V; i++) {
        if (s->seen[i] && p->repetition_penalty != 1.0f)
            logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty : logits[i] * p->repetition_penalty;
        if (s->out_count[i]) logits[i] -= (float)s->out_count[i] * p->frequency_penalty + p->presence_penalty;
    }
    if (p->temperature <= 0.0f) {
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        ids[0] = (int32_t)best, probs[0] = 1.0f;
        return 1;
    }
    for (int64_t i = 0; i < V; i++) { ids[i] = (int32_t)i; logits[i] /= p->temperature; }
    qsort_r(ids, (size_t)V, sizeof *ids, cmp_desc_ref, logits);
    int64_t n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    float mx = logits[ids[0]];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) { probs[i] = expf(logits[ids[i]] - mx); sum += probs[i]; }
    for (int64_t i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
    if (p->top_p < 1.0f) {
        double c = 0;
        for (int64_t i = 0; i < n; i++)
            if ((c += probs[i]) >= p->top_p) { n = i + 1; break; }
    }
    if (p->min_p > 0.0f) {
        float thr = p->min_p * probs[0];
        int64_t keep = 1;
        while (keep < n && probs[keep] >= thr) keep++;
        n = keep;
    }
    return n;
}

int32_t ds_sampler_sample_ref(ds_sampler *s, float *logits) {
    int64_t n = ds_sampler_candidates_ref(s, logits, s->order, s->probs);
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += s->probs[i];
    double r = ds_rng_uniform(&s->rng) * total, c = 0;
    for (int64_t i = 0; i < n; i++)
        if (r < (c += s->probs[i])) return s->order[i];
    return s->order[n - 1];
}
