/*
 * grpo.c - GRPO's objective (see grpo.h for the formulas): packs samples
 * into padded (B, T) batches of prompt ++ completion, runs the training
 * forward, and through the ds_token_loss hook turns the policy's
 * log-probabilities of the completion tokens into the per-token weights of
 * the backward. Totals are kept per sample (the hook runs concurrently in
 * the data-parallel workers) and summed in sample order.
 */
#include "grpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ds_grpo_check(const ds_tmodel *m, const ds_grpo_sample *s, int64_t S, ds_err *e) {
    int64_t V = m->cfg.vocab_size;
    if (S < 1) return ds_err_set(e, DS_EINVAL, "samples: empty (need at least one sample)");
    for (int64_t i = 0; i < S; i++) {
        const ds_grpo_sample *x = &s[i];
        if (x->n_prompt < 1) return ds_err_set(e, DS_EINVAL, "samples[%lld].prompt: empty", (long long)i);
        if (x->n_completion < 1) return ds_err_set(e, DS_EINVAL, "samples[%lld].completion: empty", (long long)i);
        for (int k = 0; k < 2; k++) {
            const int32_t *ids = k ? x->completion : x->prompt;
            int64_t n = k ? x->n_completion : x->n_prompt;
            for (int64_t j = 0; j < n; j++)
                if (ids[j] < 0 || ids[j] >= V)
                    return ds_err_set(e, DS_ERANGE, "samples[%lld].%s[%lld] = %d is out of range (vocab_size %lld)",
                                      (long long)i, k ? "completion" : "prompt", (long long)j, ids[j], (long long)V);
        }
        if (!isfinite(x->advantage))
            return ds_err_set(e, DS_EINVAL, "samples[%lld].advantage: not a finite number", (long long)i);
        for (int k = 0; k < 2; k++) {
            const float *v = k ? x->ref_lp : x->old_lp;
            if (!v) continue;
            for (int64_t j = 0; j < x->n_completion; j++)
                if (!isfinite(v[j]))
                    return ds_err_set(e, DS_EINVAL, "samples[%lld].%s[%lld]: not a finite number", (long long)i,
                                      k ? "ref_logprobs" : "old_logprobs", (long long)j);
        }
    }
    return DS_OK;
}

/* The hook's state: one chunk of samples [base, base + B) of the whole S. */
typedef struct {
    const ds_grpo_sample *s;
    int64_t base, S, n_tokens;
    const ds_grpo_opts *o;
    double *loss, *kl, *ratio;   /* [S] per-sample totals */
    int64_t *clipped;            /* [S] */
    float *lp_out;               /* NULL or Σ|o| */
    int64_t *lp_off;             /* [S] offsets into lp_out */
} grpo_hook;

static double sample_coef(const grpo_hook *h, const ds_grpo_sample *x) {
    switch (h->o->norm) {
    case DS_GRPO_NORM_TOKEN: return 1.0 / (double)h->n_tokens;
    case DS_GRPO_NORM_CONST: return 1.0 / ((double)h->S * (double)DS_MAX(h->o->norm_len, 1));
    default: return 1.0 / ((double)h->S * (double)x->n_completion);
    }
}

static void grpo_weights(void *ud, int64_t seq0, int64_t B, int64_t T, const float *lp, float *w) {
    grpo_hook *h = ud;
    double eps = h->o->epsilon, beta = h->o->beta;
    for (int64_t b = 0; b < B; b++) {
        int64_t si = h->base + seq0 + b;
        const ds_grpo_sample *x = &h->s[si];
        double c = sample_coef(h, x), loss = 0, kl = 0, ratio = 0;
        int64_t clipped = 0;
        for (int64_t t = 0; t < x->n_completion; t++) {
            int64_t n = b * T + x->n_prompt - 1 + t;   /* the row that predicts completion[t] */
            double l = lp[n];
            if (h->lp_out) h->lp_out[h->lp_off[si] + t] = (float)l;
            double rho = x->old_lp ? exp(l - (double)x->old_lp[t]) : 1.0;
            double r = x->ref_lp ? (double)x->ref_lp[t] - l : 0.0;
            double A = x->advantage;
            double rc = rho < 1.0 - eps ? 1.0 - eps : rho > 1.0 + eps ? 1.0 + eps : rho;
            double un = rho * A, cl = rc * A;
            bool is_clipped = cl < un;          /* the min takes the constant: no gradient through ρ */
            double k3 = exp(r) - r - 1.0;
            loss -= c * ((is_clipped ? cl : un) - beta * k3);
            kl += k3;
            ratio += rho;
            clipped += is_clipped;
            w[n] = (float)(c * ((is_clipped ? 0.0 : un) + beta * (exp(r) - 1.0)));
        }
        h->loss[si] = loss;
        h->kl[si] = kl / (double)x->n_completion;
        h->ratio[si] = ratio;
        h->clipped[si] = clipped;
    }
}

int ds_grpo_step(ds_tmodel *m, const ds_grpo_sample *s, int64_t S, const ds_grpo_opts *o, bool no_grad,
                 ds_grpo_stats *st, float *lp_out, ds_err *e) {
    memset(st, 0, sizeof *st);
    int rc = ds_grpo_check(m, s, S, e);
    if (rc) return rc;
    if (!(o->epsilon > 0) || !(o->beta >= 0) || !isfinite(o->beta))
        return ds_err_set(e, DS_EINVAL, "GRPO: epsilon must be > 0 and beta finite and >= 0 (got %g, %g)", o->epsilon,
                          o->beta);
    grpo_hook h = { s, 0, S, 0, o, NULL, NULL, NULL, NULL, lp_out, NULL };
    h.loss = calloc((size_t)S, sizeof(double));
    h.kl = calloc((size_t)S, sizeof(double));
    h.ratio = calloc((size_t)S, sizeof(double));
    h.clipped = calloc((size_t)S, sizeof(int64_t));
    h.lp_off = calloc((size_t)S, sizeof(int64_t));
    int32_t *tok = NULL;
    if (!h.loss || !h.kl || !h.ratio || !h.clipped || !h.lp_off) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    for (int64_t i = 0; i < S; i++) { h.lp_off[i] = h.n_tokens; h.n_tokens += s[i].n_completion; }
    int64_t mb = o->micro_batch > 0 ? o->micro_batch : S;
    ds_token_loss tl = { grpo_weights, &h };
    ds_loss_opts lo = { 0.0f, 0.0f, 1.0f, no_grad };
    for (int64_t c0 = 0; c0 < S; c0 += mb) {
        int64_t B = DS_MIN(mb, S - c0), T = 2;
        for (int64_t b = 0; b < B; b++) T = DS_MAX(T, s[c0 + b].n_prompt + s[c0 + b].n_completion);
        int32_t *nt = realloc(tok, (size_t)(B * T) * sizeof *tok);
        if (!nt) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
        tok = nt;
        /* row b: prompt ++ completion, padded with the last completion token (its rows get weight 0;
         * causal attention keeps the padding from reaching the real rows) */
        for (int64_t b = 0; b < B; b++) {
            const ds_grpo_sample *x = &s[c0 + b];
            int32_t *row = tok + b * T;
            memcpy(row, x->prompt, (size_t)x->n_prompt * sizeof *row);
            memcpy(row + x->n_prompt, x->completion, (size_t)x->n_completion * sizeof *row);
            for (int64_t t = x->n_prompt + x->n_completion; t < T; t++) row[t] = x->completion[x->n_completion - 1];
        }
        h.base = c0;
        ds_losses ls;
        if ((rc = ds_tmodel_step_weighted(m, tok, B, T, &lo, &tl, &ls, e))) goto done;
    }
    int64_t clipped = 0;
    double ratio = 0;
    for (int64_t i = 0; i < S; i++) {
        st->loss += h.loss[i];
        st->kl += h.kl[i];
        ratio += h.ratio[i];
        clipped += h.clipped[i];
    }
    st->kl /= (double)S;
    st->tokens = h.n_tokens;
    st->clip_frac = (double)clipped / (double)h.n_tokens;
    st->ratio_mean = ratio / (double)h.n_tokens;
done:
    free(h.loss); free(h.kl); free(h.ratio); free(h.clipped); free(h.lp_off); free(tok);
    return rc;
}
