/*
 * rollout.c - batched completions sharing their prompt's cache (see
 * rollout.h): prefill once per prompt, copy the prefix, then one batched
 * forward per decode step over every live completion.
 */
#include "rollout.h"
#include "generate.h"
#include "../core/thread.h"

#include <stdlib.h>
#include <string.h>

void ds_rollout_free(ds_rollout *r) {
    if (!r) return;
    free(r->tok);
    free(r->len);
    free(r->stopped);
    memset(r, 0, sizeof *r);
}

typedef struct {
    ds_kvcache cache;
    ds_sampler smp;
    bool has_cache, has_smp, live;
    int32_t last;
} seq_state;

static void free_seqs(seq_state *s, int64_t n) {
    if (!s) return;
    for (int64_t i = 0; i < n; i++) {
        if (s[i].has_cache) ds_kvcache_free(&s[i].cache);
        if (s[i].has_smp) ds_sampler_free(&s[i].smp);
    }
    free(s);
}

/* Takes the sampled token of completion i; false when it is finished. */
static bool take(ds_rollout *r, seq_state *s, int64_t i, int32_t tok, const ds_rollout_opts *o) {
    r->tok[i * r->max_new + r->len[i]++] = tok;   /* (n_tokens is summed at the end: workers run concurrently) */
    ds_sampler_accept(&s->smp, tok);
    s->last = tok;
    if (tok == o->stop_id) { r->stopped[i] = true; return false; }
    return r->len[i] < r->max_new;
}

static int64_t nw_alloc(int64_t n) { return DS_MIN(DS_MIN((int64_t)ds_threads_get(), n), 64); }

/* Data-parallel decode: the live completions split into contiguous groups,
 * one per thread, each forwarded on its own single-threaded context (one
 * synchronization per token step instead of one per kernel: small models
 * are overhead-bound). Rows are computed alone (batch invariance), so the
 * split does not change a token. */
typedef struct {
    const ds_model *m;
    ds_ctx **wx;
    ds_seq_chunk *ch;
    const int64_t *idx;
    int64_t k, nw, V;
    float *logits;
    ds_rollout *r;
    seq_state *s;
    const ds_rollout_opts *o;
    int rc[64];
    ds_err err[64];
} dec_ctx;

static void dec_worker(void *vc, int64_t w0, int64_t w1, int tid) {
    (void)tid;
    dec_ctx *c = vc;
    for (int64_t w = w0; w < w1; w++) {
        int64_t a = c->k * w / c->nw, b = c->k * (w + 1) / c->nw;
        if (b <= a) continue;
        c->rc[w] = ds_model_forward(c->m, c->wx[w], c->ch + a, (int)(b - a), c->logits + a * c->V, NULL, &c->err[w]);
        if (c->rc[w]) continue;
        for (int64_t j = a; j < b; j++) {
            int64_t i = c->idx[j];
            c->s[i].live = take(c->r, &c->s[i], i, ds_sampler_sample(&c->s[i].smp, c->logits + j * c->V), c->o);
        }
    }
}

int ds_rollout_run(const ds_model *m, ds_ctx *x, const int32_t *const *prompts, const int64_t *plen, int64_t P, int64_t G,
                   const ds_rollout_opts *o, ds_rollout *r, ds_err *e) {
    memset(r, 0, sizeof *r);
    if (P < 1 || G < 1 || o->max_new < 1) return ds_err_set(e, DS_EINVAL, "rollout: need prompts, samples and max_new >= 1");
    for (int64_t p = 0; p < P; p++)
        if (plen[p] < 1) return ds_err_set(e, DS_EINVAL, "rollout: prompt %lld is empty", (long long)p);
    int64_t n = P * G, V = ds_model_config(m)->vocab_size;
    r->n = n;
    r->max_new = o->max_new;
    r->tok = calloc((size_t)(n * o->max_new), sizeof *r->tok);
    r->len = calloc((size_t)n, sizeof *r->len);
    r->stopped = calloc((size_t)n, sizeof *r->stopped);
    seq_state *s = calloc((size_t)n, sizeof *s);
    float *logits = malloc((size_t)(n * V) * sizeof(float));
    ds_seq_chunk *ch = malloc((size_t)n * sizeof *ch);
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    ds_ctx **wx = NULL;
    int rc = DS_OK;
    if (!r->tok || !r->len || !r->stopped || !s || !logits || !ch || !idx) { rc = ds_err_set(e, DS_ENOMEM, "rollout: out of memory"); goto done; }
    for (int64_t i = 0; i < n; i++) {
        ds_sampler_params sp = o->sp;
        sp.seed = o->sp.seed + (uint64_t)i;
        if ((rc = ds_sampler_init(&s[i].smp, &sp, V, e))) goto done;
        s[i].has_smp = true;
        int64_t p = i / G;
        ds_sampler_add_prompt(&s[i].smp, prompts[p], plen[p]);
    }
    if (o->sequential) {   /* the baseline: each completion alone, its prompt prefilled for it */
        for (int64_t i = 0; i < n; i++) {
            int64_t p = i / G;
            if ((rc = ds_kvcache_init(&s[i].cache, m, plen[p] + o->max_new, e))) goto done;
            s[i].has_cache = true;
            double t0 = ds_now();
            if ((rc = ds_prefill(m, x, &s[i].cache, prompts[p], plen[p], 0, logits, e))) goto done;
            r->t_prefill += ds_now() - t0;
            t0 = ds_now();
            bool go = take(r, &s[i], i, ds_sampler_sample(&s[i].smp, logits), o);
            while (go) {
                ds_seq_chunk c = { &s[i].cache, &s[i].last, 1, false };
                if ((rc = ds_model_forward(m, x, &c, 1, logits, NULL, e))) goto done;
                go = take(r, &s[i], i, ds_sampler_sample(&s[i].smp, logits), o);
            }
            r->t_decode += ds_now() - t0;
            ds_kvcache_free(&s[i].cache);
            s[i].has_cache = false;
        }
        goto done;
    }
    /* batched: prefill each prompt once, share it, then decode everything together */
    double t0 = ds_now();
    for (int64_t p = 0; p < P; p++) {
        for (int64_t g = 0; g < G; g++) {
            if ((rc = ds_kvcache_init(&s[p * G + g].cache, m, plen[p] + o->max_new, e))) goto done;
            s[p * G + g].has_cache = true;
        }
        float *lp = logits + p * G * V;
        if ((rc = ds_prefill(m, x, &s[p * G].cache, prompts[p], plen[p], 0, lp, e))) goto done;
        for (int64_t g = 1; g < G; g++) {
            if ((rc = ds_kvcache_copy_prefix(&s[p * G + g].cache, &s[p * G].cache, plen[p], e))) goto done;
            memcpy(lp + g * V, lp, (size_t)V * sizeof(float));
        }
    }
    r->t_prefill = ds_now() - t0;
    t0 = ds_now();
    for (int64_t i = 0; i < n; i++) s[i].live = take(r, &s[i], i, ds_sampler_sample(&s[i].smp, logits + i * V), o);
    int64_t nw = nw_alloc(n);
    if (nw > 1) {
        wx = calloc((size_t)nw, sizeof *wx);
        if (!wx) { rc = ds_err_set(e, DS_ENOMEM, "rollout: out of memory"); goto done; }
        for (int64_t w = 0; w < nw; w++) {
            if ((rc = ds_ctx_new(&wx[w], e))) goto done;
            ds_ctx_set_threads(wx[w], 1);
        }
    }
    for (;;) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (s[i].live) { ch[k] = (ds_seq_chunk){ &s[i].cache, &s[i].last, 1, false }; idx[k++] = i; }
        if (k == 0) break;
        if (nw > 1 && k > 1) {
            dec_ctx *dc = calloc(1, sizeof *dc);
            if (!dc) { rc = ds_err_set(e, DS_ENOMEM, "rollout: out of memory"); goto done; }
            *dc = (dec_ctx){ .m = m, .wx = wx, .ch = ch, .idx = idx, .k = k, .nw = DS_MIN(nw, k), .V = V, .logits = logits,
                             .r = r, .s = s, .o = o };
            ds_par_for(dc->nw, 1, dec_worker, dc);
            for (int64_t w = 0; w < dc->nw && !rc; w++)
                if (dc->rc[w]) rc = ds_err_set(e, dc->rc[w], "%s", dc->err[w].msg);
            free(dc);
            if (rc) goto done;
            continue;
        }
        if ((rc = ds_model_forward(m, x, ch, (int)k, logits, NULL, e))) goto done;
        for (int64_t j = 0; j < k; j++) {
            int64_t i = idx[j];
            s[i].live = take(r, &s[i], i, ds_sampler_sample(&s[i].smp, logits + j * V), o);
        }
    }
    r->t_decode = ds_now() - t0;
done:
    for (int64_t i = 0; i < n && r->len; i++) r->n_tokens += r->len[i];
    if (wx) for (int64_t w = 0; w < nw_alloc(n); w++) if (wx[w]) ds_ctx_free(wx[w]);
    free(wx);
    free_seqs(s, n);
    free(logits);
    free(ch);
    free(idx);
    if (rc) ds_rollout_free(r);
    return rc;
}
