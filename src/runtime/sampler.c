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

static struct nucleus *nucleus_new(void);

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
    s->keys = malloc((size_t)vocab * 2 * sizeof *s->keys);
    s->bin = malloc((size_t)vocab * sizeof *s->bin);
    s->binid = malloc((size_t)vocab * sizeof *s->binid);
    s->nu = nucleus_new();
    s->bsum = malloc((size_t)(vocab / DS_VBLOCK + 1) * sizeof *s->bsum);
    if (!s->seen || !s->out_count || !s->hist || !s->order || !s->probs || !s->keys || !s->bin || !s->binid || !s->nu || !s->bsum) {
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
    free(s->keys);
    free(s->bin);
    free(s->binid);
    free(s->nu);
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

/* The threshold on e[i] = exp(l[i] - max) (<= 1, the largest exactly 1)
 * below which top-p and min-p keep nothing. The kept set is a prefix of the
 * candidate order, so it lies among the ids with e above a threshold:
 * min-p's (e >= min_p) or, for top-p, one low enough that the ids above it
 * hold `need` of the mass. The exp pass measures the mass above 2^-4,
 * 2^-8, 2^-12 and 2^-16 (t, mass) and the highest holding enough (with 1e-3 to spare for
 * its float sums) is used; below 2^-16 the mass is summed exactly over the
 * ids above, going down by 2^-4. Thresholds are lowered by 2^-20 so that
 * exp's last-bit wobble cannot split neighbours in the order. */
static float nucleus_threshold(ds_sampler *s, const float *e, int64_t V, double need, float min_p, const float *t,
                               const double *mass) {
    const float margin = 1.0f - 0x1p-20f;
    if (min_p > 0.0f) return min_p * margin;
    for (int j = 0; j < 4; j++)
        if (mass[j] >= need * (1.0 + 1e-3)) return t[j];
    for (float thr = 0x1p-20f; thr >= 0x1p-100f; thr *= 0x1p-4f) {
        int64_t n = ds_vgather_ge(s->order, e, V, thr * margin);
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += e[s->order[i]];
        if (m >= need * (1.0 + 1e-6)) return thr * margin;
    }
    return 0x1p-149f;   /* every nonzero one */
}

/* What top-p and min-p keep, without sorting the vocabulary: the ids above
 * the threshold are binned by logit (binid[i], DS_VBIN_NONE for the rest)
 * into NBK bins of equal width from the max down to the lowest logit the
 * threshold admits, the last bin taking any rest (monotone: a higher logit
 * never lands in a later bin). Top-p's running mass reaches top_p·total in
 * bin `cut_bin`, whose ids alone are sorted (into s->bin) and walked to the
 * last kept one, bin[n_cut - 1]. An id is kept when its bin is before
 * cut_bin, or it is among bin[0, n_cut), and (min-p) its e >= min_e.
 * keptm[b]: the kept mass of bin b (Σ e); kept: all of it. */
#define NBK 1024
typedef struct nucleus {
    float min_e;
    int cut_bin;
    bool listed;        /* the ids above the threshold are order[0, n), else all V ids */
    int64_t n;
    int64_t n_cut;
    double kept, keptm[NBK];
} nucleus;

static struct nucleus *nucleus_new(void) { return malloc(sizeof(nucleus)); }

static inline int32_t cand_id(const ds_sampler *s, const nucleus *nu, int64_t j) {
    return nu->listed ? s->order[j] : (int32_t)j;
}

static void nucleus_find(ds_sampler *s, const float *l, float mx, nucleus *nu) {
    const ds_sampler_params *p = &s->p;
    const float *e = s->probs;
    const uint16_t *bin = s->binid;
    int64_t V = s->vocab;
    /* with top-p: the mass above 2^-4, 2^-8, 2^-12, 2^-16 measured in the exp pass */
    float t[4];
    double tmass[4] = { 0 };
    for (int j = 0; j < 4; j++) t[j] = ldexpf(1.0f - 0x1p-20f, -4 * (j + 1));
    double total = p->min_p > 0.0f ? ds_vexp_sum(s->probs, l, mx, V, NULL)
                                   : ds_vexp_sum_mass(s->probs, l, mx, V, t, 4, tmass);
    double need = p->top_p < 1.0f ? p->top_p * total : 0.0;
    float thr = nucleus_threshold(s, e, V, need, p->min_p, t, tmass);
    /* min-p keeps probabilities >= min_p · the top one, whose e is 1 */
    nu->min_e = p->min_p > 0.0f ? p->min_p : 0.0f, nu->cut_bin = NBK, nu->n_cut = 0, nu->kept = 0;
    _Static_assert(NBK < DS_VBIN_NONE, "bins fit binid");
    /* the lowest logit with e >= thr, with room for exp's error */
    int64_t above = ds_vbin16(s->binid, l, e, V, mx, (float)(NBK - 1) / (-logf(thr) + 1e-3f), thr, NBK);
    /* bin masses in 4 interleaved histograms (neighbouring ids often share a
     * bin: one chain of adds would serialize), added in a fixed order */
    double h[4][NBK], hk[4][NBK];
    memset(h, 0, sizeof h);
    bool minp = nu->min_e > 0.0f;
    if (minp) memset(hk, 0, sizeof hk);
    /* the ids above the threshold, ascending: listed when they are few (a
     * peaked row), else the loops walk the vocabulary and skip the rest */
    nu->listed = above <= V / 4;
    int64_t n = nu->n = nu->listed ? ds_vgather_ne16(s->order, bin, V, DS_VBIN_NONE) : V;
    for (int64_t j = 0; j < n; j++) {
        int32_t i = cand_id(s, nu, j);
        if (bin[i] == DS_VBIN_NONE) continue;
        h[j & 3][bin[i]] += e[i];
        if (minp && e[i] >= nu->min_e) hk[j & 3][bin[i]] += e[i];
    }
    double mass[NBK];
    for (int b = 0; b < NBK; b++) {
        mass[b] = (h[0][b] + h[1][b]) + (h[2][b] + h[3][b]);
        nu->keptm[b] = minp ? (hk[0][b] + hk[1][b]) + (hk[2][b] + hk[3][b]) : mass[b];
    }
    if (p->top_p >= 1.0f) {
        for (int b = 0; b < NBK; b++) nu->kept += nu->keptm[b];
        return;
    }
    double c = 0;
    int cut = 0;
    for (; cut < NBK - 1 && c + mass[cut] < need; cut++) c += mass[cut], nu->kept += nu->keptm[cut];
    int64_t nb = ds_vgather_eq16(s->bin, bin, V, (uint16_t)cut);
    sort_candidates(s->bin, nb, l, s->keys, s->keys + V);
    nu->cut_bin = cut;
    nu->keptm[cut] = 0;
    for (int64_t j = 0; j < nb; j++) {
        int32_t id = s->bin[j];
        c += e[id];
        if (e[id] >= nu->min_e) nu->keptm[cut] += e[id];
        nu->n_cut = j + 1;
        if (c >= need) break;
    }
    nu->kept += nu->keptm[cut];
}

/* Kept ids into ids (any order); returns how many. For ds_sampler_kept. */
static int64_t nucleus_list(ds_sampler *s, const nucleus *nu, int32_t *ids) {
    int64_t k = 0;
    for (int64_t j = 0; j < nu->n; j++) {
        int32_t i = cand_id(s, nu, j);
        if (s->binid[i] < nu->cut_bin && s->probs[i] >= nu->min_e) ids[k++] = i;
    }
    for (int64_t j = 0; j < nu->n_cut; j++)
        if (s->probs[s->bin[j]] >= nu->min_e) ids[k++] = s->bin[j];
    return k;
}

/* Draws among the kept: a bin by its kept mass, then an id within it (the
 * cut bin walks its sorted prefix; another bin its ids in id order). */
static int32_t nucleus_draw(ds_sampler *s, const nucleus *nu, const float *l) {
    const float *e = s->probs;
    double r = ds_rng_uniform(&s->rng) * nu->kept, c = 0;
    int b = 0;
    for (; b < nu->cut_bin && b < NBK - 1 && !(r < c + nu->keptm[b]); b++) c += nu->keptm[b];
    int32_t last = -1;
    if (b < nu->cut_bin) {
        for (int64_t j = 0; j < nu->n; j++) {
            int32_t i = cand_id(s, nu, j);
            if (s->binid[i] != b || e[i] < nu->min_e) continue;
            last = i;
            if (r < (c += e[i])) return i;
        }
        if (last >= 0) return last;      /* rounding at the bin's end */
    }
    for (int64_t j = 0; j < nu->n_cut; j++) {
        int32_t id = s->bin[j];
        if (e[id] < nu->min_e) continue;
        last = id;
        if (r < (c += e[id])) return id;
    }
    return last >= 0 ? last : (int32_t)ds_vargmax(l, s->vocab);
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
    nucleus_find(s, logits, mx, s->nu);
    return nucleus_draw(s, s->nu, logits);
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
    } else if (has_top_k(s)) {
        n = kept_top_k(s, logits, mx);
    } else {
        nucleus_find(s, logits, mx, s->nu);
        return nucleus_list(s, s->nu, ids);
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
