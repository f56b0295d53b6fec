/*
 * sampler.c - see sampler.h.
 */
#include "sampler.h"
#include "../tensor/vmath.h"

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
    s->hist = malloc((size_t)vocab * sizeof *s->hist);
    s->order = malloc((size_t)vocab * sizeof *s->order);
    s->probs = malloc((size_t)vocab * sizeof *s->probs);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->keys = malloc((size_t)vocab * 2 * sizeof *s->keys);
    s->bin = malloc((size_t)vocab * sizeof *s->bin);
    s->bsum = malloc((size_t)(vocab / DS_VBLOCK + 1) * sizeof *s->bsum);
    if (!s->seen || !s->out_count || !s->hist || !s->order || !s->probs || !s->cand || !s->keys || !s->bin || !s->bsum) {
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
    free(s->hist);
    free(s->order);
    free(s->probs);
    free(s->cand);
    free(s->keys);
    free(s->bin);
    free(s->bsum);
    memset(s, 0, sizeof *s);
}

void ds_sampler_reset(ds_sampler *s, bool reseed) {
    for (int64_t i = 0; i < s->n_hist; i++) s->seen[s->hist[i]] = s->out_count[s->hist[i]] = 0;
    s->n_hist = 0;
    if (reseed) ds_rng_seed(&s->rng, s->p.seed);
}

static void see(ds_sampler *s, int32_t id) {
    if (s->seen[id]++ == 0) s->hist[s->n_hist++] = id;
}

void ds_sampler_add_prompt(ds_sampler *s, const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->vocab) see(s, ids[i]);
}

void ds_sampler_accept(ds_sampler *s, int32_t id) {
    if (id < 0 || id >= s->vocab) return;
    see(s, id);
    s->out_count[id]++;
}

/* Sort key of a candidate: ascending key = higher logit first, the lower
 * id on a tie (the order of the sorting twin). Logits here are never NaN
 * (their probability would be 0); -0 sorts as +0. */
static inline uint64_t cand_key(float l, int32_t id) {
    union { float f; uint32_t u; } v = { l == 0.0f ? 0.0f : l };
    uint32_t ord = v.u >> 31 ? ~v.u : v.u | 0x80000000u;   /* monotone in l */
    return (uint64_t)~ord << 32 | (uint32_t)id;
}

/* ids[0, n) sorted into candidate order: insertion sort when short, else an
 * LSD radix sort of the keys by bytes, skipping bytes all keys share. */
static void sort_candidates(int32_t *ids, int64_t n, const float *l, uint64_t *k, uint64_t *tmp) {
    for (int64_t i = 0; i < n; i++) k[i] = cand_key(l[ids[i]], ids[i]);
    if (n <= 48) {
        for (int64_t i = 1; i < n; i++) {
            uint64_t v = k[i];
            int64_t j = i;
            for (; j > 0 && k[j - 1] > v; j--) k[j] = k[j - 1];
            k[j] = v;
        }
    } else {
        uint64_t *src = k, *dst = tmp;
        for (int sh = 0; sh < 64; sh += 8) {
            int64_t cnt[257] = { 0 };
            for (int64_t i = 0; i < n; i++) cnt[(src[i] >> sh & 255) + 1]++;
            if (cnt[(src[0] >> sh & 255) + 1] == n) continue;  /* one value: nothing to move */
            for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
            for (int64_t i = 0; i < n; i++) dst[cnt[src[i] >> sh & 255]++] = src[i];
            uint64_t *t = src; src = dst; dst = t;
        }
        k = src;
    }
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(uint32_t)k[i];
}

/* The k first ids in candidate order, into order[0, k), sorted: a min-heap
 * (root = the worst kept) over one pass, then a sort of the k. */
static inline bool before(const float *l, int32_t a, int32_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

static void select_top_k(ds_sampler *s, const float *l, int64_t V, int64_t k) {
    int32_t *order = s->order;
    for (int64_t i = 0; i < k; i++) {          /* the first k, sifted up */
        int64_t c = i;
        order[c] = (int32_t)i;
        while (c > 0 && before(l, order[(c - 1) / 2], order[c])) {
            int32_t t = order[c]; order[c] = order[(c - 1) / 2]; order[(c - 1) / 2] = t;
            c = (c - 1) / 2;
        }
    }
    for (int64_t i = k; i < V; i++) {
        if (!(l[i] > l[order[0]])) continue;   /* a tie loses to the lower id already kept */
        order[0] = (int32_t)i;
        int64_t c = 0;
        for (;;) {                             /* sift down: the worse child moves up */
            int64_t a = 2 * c + 1, b = a + 1, w = c;
            if (a < k && before(l, order[w], order[a])) w = a;
            if (b < k && before(l, order[w], order[b])) w = b;
            if (w == c) break;
            int32_t t = order[c]; order[c] = order[w]; order[w] = t;
            c = w;
        }
    }
    sort_candidates(order, k, l, s->keys, s->keys + V);
}

/* Ids that top-p and min-p may keep, ascending, into s->order; returns how
 * many. e[i] = exp(l[i] - max) <= 1 (the largest is exactly 1). The kept
 * set is a prefix of the candidate order, so it lies among the ids with e
 * above a threshold: min-p's (e >= min_p) or, for top-p, one low enough
 * that the ids above it hold `need` of the mass. One vector pass measures
 * the mass above 2^-2, 2^-4, ..., 2^-16; the highest that holds enough
 * (checked exactly on the ids gathered; halved further if ever short).
 * Thresholds are lowered by 2^-20 so that exp's last-bit wobble cannot
 * split neighbours in the order. */
static int64_t gather_candidates(ds_sampler *s, const float *e, int64_t V, double need, float min_p) {
    const float margin = 1.0f - 0x1p-20f;
    float thr = min_p;
    if (!(min_p > 0.0f)) {
        float t[8];
        double mass[8];
        for (int j = 0; j < 8; j++) t[j] = ldexpf(margin, -2 * (j + 1));
        ds_vmass_above(e, V, t, 8, mass);
        int j = 0;
        while (j < 7 && mass[j] < need * (1.0 + 1e-3)) j++;
        thr = ldexpf(1.0f, -2 * (j + 1));
    }
    for (;;) {
        int64_t n = ds_vgather_ge(s->order, e, V, thr * margin);
        if (min_p > 0.0f && min_p >= thr) return n;
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += e[s->order[i]];
        if (m >= need * (1.0 + 1e-6)) return n;
        if (thr < 0x1p-100f) return ds_vgather_ge(s->order, e, V, 0x1p-149f);  /* every nonzero one */
        thr *= 0x1p-4f;
        if (min_p > thr) thr = min_p;
    }
}

/* Top-p's cut among the candidates ids[0, n) (q[i] = e / total): the key
 * (cand_key) of the last id kept, or UINT64_MAX to keep them all. The
 * candidates are binned by logit into NBK bins (monotone: a higher logit
 * never lands in a later bin); only the bin where the running mass reaches
 * top_p is sorted and walked. */
#define NBK 1024
static uint64_t top_p_cut(ds_sampler *s, const float *l, float mx, int64_t n, double total) {
    const int32_t *ids = s->order;
    const float *q = s->cand;
    float lmin = mx;
    for (int64_t i = 0; i < n; i++) lmin = l[ids[i]] < lmin ? l[ids[i]] : lmin;
    float scale = mx > lmin ? (float)(NBK - 1) / (mx - lmin) : 0.0f;
    double mass[NBK] = { 0 };
    for (int64_t i = 0; i < n; i++) mass[(int)((mx - l[ids[i]]) * scale)] += q[i];
    double c = 0;
    int cut = 0;
    for (; cut < NBK - 1 && c + mass[cut] < s->p.top_p; cut++) c += mass[cut];
    int64_t nb = 0;
    for (int64_t i = 0; i < n; i++)
        if ((int)((mx - l[ids[i]]) * scale) == cut) s->bin[nb++] = ids[i];
    sort_candidates(s->bin, nb, l, s->keys, s->keys + s->vocab);
    for (int64_t j = 0; j < nb; j++) {
        c += (float)(s->probs[s->bin[j]] / total);
        if (c >= s->p.top_p) return cand_key(l[s->bin[j]], s->bin[j]);
    }
    return UINT64_MAX;
}

/* Top-p and/or min-p without top-k: the kept ids, found without sorting
 * them (see above), ascending into order[0, k) with their probabilities in
 * cand[0, k); returns k. */
static int64_t kept_nucleus(ds_sampler *s, const float *l, float mx) {
    const ds_sampler_params *p = &s->p;
    int64_t V = s->vocab;
    double total = ds_vexp_sum(s->probs, l, mx, V, NULL);
    int64_t n = gather_candidates(s, s->probs, V, p->top_p < 1.0f ? p->top_p * total : 0.0, p->min_p);
    for (int64_t i = 0; i < n; i++) s->cand[i] = (float)(s->probs[s->order[i]] / total);
    uint64_t cut = p->top_p < 1.0f ? top_p_cut(s, l, mx, n, total) : UINT64_MAX;
    float min_q = p->min_p * (float)(1.0 / total);   /* min_p · the top probability (its e is 1) */
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if ((cut == UINT64_MAX || cand_key(l[s->order[i]], s->order[i]) <= cut) && s->cand[i] >= min_q)
            s->order[k] = s->order[i], s->cand[k++] = s->cand[i];
    return k;
}

/* top-k: the k best in candidate order into order[0, n), probabilities in
 * probs[0, n), then top-p and min-p over them; returns n. */
static int64_t kept_top_k(ds_sampler *s, const float *l, float mx) {
    const ds_sampler_params *p = &s->p;
    int64_t n = p->top_k;
    select_top_k(s, l, s->vocab, n);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) { s->probs[i] = expf(l[s->order[i]] - mx); sum += s->probs[i]; }
    for (int64_t i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
    if (p->top_p < 1.0f) {
        double c = 0;
        for (int64_t i = 0; i < n; i++)
            if ((c += s->probs[i]) >= p->top_p) { n = i + 1; break; }
    }
    if (p->min_p > 0.0f) {
        float thr = p->min_p * s->probs[0];
        int64_t keep = 1;
        while (keep < n && s->probs[keep] >= thr) keep++;
        n = keep;
    }
    return n;
}

static int32_t draw(ds_sampler *s, const int32_t *ids, const float *q, int64_t n) {
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += q[i];
    double r = ds_rng_uniform(&s->rng) * total, c = 0;
    for (int64_t i = 0; i < n; i++)
        if (r < (c += q[i])) return ids[i];
    return ids[n - 1];
}

/* Penalties (only the tokens seen), then the temperature: returns the
 * largest scaled logit, or NaN for greedy (temperature 0 or nothing finite). */
static float prepare(ds_sampler *s, float *logits) {
    const ds_sampler_params *p = &s->p;
    if (p->repetition_penalty != 1.0f)
        for (int64_t j = 0; j < s->n_hist; j++) {
            int32_t i = s->hist[j];
            logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty : logits[i] * p->repetition_penalty;
        }
    if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f)
        for (int64_t j = 0; j < s->n_hist; j++) {
            int32_t i = s->hist[j];
            if (s->out_count[i]) logits[i] -= (float)s->out_count[i] * p->frequency_penalty + p->presence_penalty;
        }
    if (p->temperature <= 0.0f) return NAN;
    float mx = ds_vdiv_max(logits, s->vocab, p->temperature);
    return mx > -INFINITY ? mx : NAN;
}

static bool has_top_k(const ds_sampler *s) { return s->p.top_k > 0 && s->p.top_k < s->vocab; }
static bool truncates(const ds_sampler *s) { return has_top_k(s) || s->p.top_p < 1.0f || s->p.min_p > 0.0f; }

/* The temperature-only draw: walks the ids in order, a block at a time. */
static int32_t draw_in_id_order(ds_sampler *s, int64_t V, double total) {
    double r = ds_rng_uniform(&s->rng) * total, c = 0;
    int64_t nb = (V + DS_VBLOCK - 1) / DS_VBLOCK, b = 0;
    for (; b < nb - 1 && c + s->bsum[b] <= r; b++) c += s->bsum[b];
    int64_t i0 = b * DS_VBLOCK, i1 = i0 + DS_VBLOCK < V ? i0 + DS_VBLOCK : V, last = -1;
    for (int64_t i = i0; i < i1; i++) {
        if (s->probs[i] == 0.0f) continue;
        c += s->probs[i];
        last = i;
        if (r < c) return (int32_t)i;
    }
    if (last >= 0) return (int32_t)last;       /* rounding at the block's end */
    for (int64_t i = V - 1; i > 0; i--) if (s->probs[i] > 0.0f) return (int32_t)i;
    return 0;
}

int32_t ds_sampler_sample(ds_sampler *s, float *logits) {
    int64_t V = s->vocab;
    float mx = prepare(s, logits);
    if (mx != mx) return (int32_t)ds_vargmax(logits, V);
    if (!truncates(s)) return draw_in_id_order(s, V, ds_vexp_sum(s->probs, logits, mx, V, s->bsum));
    if (has_top_k(s)) {
        int64_t n = kept_top_k(s, logits, mx);
        return draw(s, s->order, s->probs, n);
    }
    int64_t k = kept_nucleus(s, logits, mx);
    return k ? draw(s, s->order, s->cand, k) : (int32_t)ds_vargmax(logits, V);
}

int64_t ds_sampler_kept(ds_sampler *s, float *logits, int32_t *ids) {
    int64_t V = s->vocab, n;
    float mx = prepare(s, logits);
    if (mx != mx) {
        ids[0] = (int32_t)ds_vargmax(logits, V);
        return 1;
    }
    if (!truncates(s)) {
        ds_vexp_sum(s->probs, logits, mx, V, NULL);
        n = ds_vgather_ge(s->order, s->probs, V, 0x1p-149f);
    } else {
        n = has_top_k(s) ? kept_top_k(s, logits, mx) : kept_nucleus(s, logits, mx);
    }
    memcpy(ids, s->order, (size_t)n * sizeof *ids);
    return n;
}

void ds_log_softmax(float *out, const float *logits, int64_t V) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < V; i++) s += exp((double)(logits[i] - mx));
    float lse = mx + (float)log(s);
    for (int64_t i = 0; i < V; i++) out[i] = logits[i] - lse;
}
