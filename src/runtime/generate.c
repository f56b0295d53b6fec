/*
 * generate.c - prefill + sample loop (see generate.h).
 */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

int ds_prefill(ds_model *m, ds_kvcache *cache, const int32_t *tok, int64_t n, int64_t chunk, float *logits,
               ds_err *e) {
    if (chunk <= 0) chunk = 512;
    for (int64_t i = 0; i < n; i += chunk) {
        int64_t k = DS_MIN(chunk, n - i);
        ds_seq_chunk ch = { cache, tok + i, k, false };
        int rc = ds_model_forward(m, &ch, 1, logits, NULL, e);
        if (rc) return rc;
    }
    return DS_OK;
}

int ds_generate(ds_model *m, ds_kvcache *cache, ds_sampler *s, const int32_t *prompt, int64_t n,
                const ds_gen_opts *o, ds_token_cb cb, void *ud, ds_gen_stats *st, ds_err *e) {
    int64_t V = m->cfg.vocab_size;
    memset(st, 0, sizeof *st);
    if (n <= 0) return ds_err_set(e, DS_EINVAL, "empty prompt");
    float *logits = malloc((size_t)V * sizeof(float));
    if (!logits) return ds_err_set(e, DS_ENOMEM, "out of memory");
    double t0 = ds_now();
    int rc = ds_prefill(m, cache, prompt, n, o->prefill_chunk, logits, e);
    st->n_prompt = n;
    st->t_prefill = ds_now() - t0;
    if (rc) { free(logits); return rc; }
    t0 = ds_now();
    for (int64_t i = 0; i < o->max_tokens; i++) {
        int32_t tok = ds_sampler_sample(s, logits);
        ds_sampler_accept(s, tok);
        st->n_gen++;
        bool stop = false;
        for (int k = 0; k < o->n_stop_ids; k++) if (tok == o->stop_ids[k]) stop = true;
        if (cb && cb(ud, tok)) { st->finish = 2; break; }
        if (stop) { st->finish = 1; break; }
        if (i + 1 == o->max_tokens) break;
        ds_seq_chunk ch = { cache, &tok, 1, false };
        if ((rc = ds_model_forward(m, &ch, 1, logits, NULL, e))) break;
    }
    st->t_decode = ds_now() - t0;
    free(logits);
    return rc;
}
