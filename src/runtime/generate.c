/*
 * generate.c - prefill + sample loop, plain and MTP-speculative.
 *
 * MTP speculative decoding (one draft token per step):
 *   prefill x_0..x_{n-1}             -> h_0..h_{n-1}, logits at n-1
 *   MTP rows (h_i, x_{i+1}), i < n-1 -> fill the MTP layer's cache
 *   t = sample(logits)
 *   loop:  draft d = argmax MTP(h_last, t)        (MTP row at the last position)
 *          main forward [t, d]                     -> logits L_t, L_d; hidden h_t, h_d
 *          t' = sample(L_t)
 *          if t' == d: accept, t'' = sample(L_d); MTP row (h_t, d); continue with t''
 *          else:       drop d from the cache; continue with t'
 * A rejected draft is dropped by truncating the cache one position (a
 * DeepSeek-V4 cache does it from its ring slack, DS_V4_SLACK rows).
 * MTP rows always pair a real hidden state with a real token, so the MTP
 * cache is never rolled back; only the main cache drops a rejected draft.
 */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

int ds_prefill(const ds_model *m, ds_ctx *x, ds_kvcache *cache, const int32_t *tok, int64_t n, int64_t chunk,
               float *logits, ds_err *e) {
    if (chunk <= 0) chunk = 512;
    /* several chunks: each layer's decompressed K/V stays across them (the
     * later chunks decompress only their own rows; same results) */
    bool store = x && n > chunk;
    int rc = store ? ds_ctx_prefill_begin(x, m, cache, cache->n_past + n, 0, e) : DS_OK;
    for (int64_t i = 0; i < n && !rc; i += chunk) {
        int64_t k = DS_MIN(chunk, n - i);
        ds_seq_chunk ch = { cache, tok + i, k, false };
        rc = ds_model_forward(m, x, &ch, 1, logits, NULL, e);
    }
    if (store) ds_ctx_prefill_end(x);
    return rc;
}

static bool is_stop(const ds_gen_opts *o, int32_t tok) {
    for (int k = 0; k < o->n_stop_ids; k++) if (tok == o->stop_ids[k]) return true;
    return false;
}

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* The generation step for a sampled token: the session records it, turns
 * it into text through the stop strings, and the callback gets both.
 * Returns 1 if generation must end (stop token or string, callback, budget). */
static int emit(ds_session *ss, const ds_gen_opts *o, ds_token_cb cb, void *ud, ds_gen_stats *st, int32_t tok) {
    ds_session_accept(ss, tok);
    st->n_gen++;
    const char *t = "", *show = "";
    size_t n = 0, n_show = 0;
    bool hit = false;
    if (ss->has_text && !is_stop(o, tok)) {
        ds_session_text(ss, tok, &t, &n);
        hit = ds_session_show(ss, t, n, false, &show, &n_show);
    }
    if (cb && cb(ud, tok, show, n_show)) { st->finish = 2; return 1; }
    if (hit) { st->finish = 3; return 1; }
    if (is_stop(o, tok)) { st->finish = 1; return 1; }
    if (st->n_gen >= o->max_tokens) return 1;
    return 0;
}

static int generate_mtp(ds_session *ss, const int32_t *prompt, int64_t n, const ds_gen_opts *o, ds_token_cb cb,
                        void *ud, ds_gen_stats *st, ds_err *e) {
    const ds_model *m = ss->m;
    ds_kvcache *cache = ss->cache;
    int64_t V = m->cfg.vocab_size, D = ds_model_hidden_width(m);   /* floats per hidden row (V4: hc·D) */
    if (m->n_mtp < 1) return ds_err_set(e, DS_ENOTFOUND, "%s: --mtp needs a model with an MTP module", m->dir);
    if (cache->n_past != 0 || cache->mtp_n_past != 0)
        return ds_err_set(e, DS_EINVAL, "MTP speculative decoding needs an empty cache");
    int64_t chunk = o->prefill_chunk > 0 ? o->prefill_chunk : 512;
    float *logits = ss->logits, *mtp_logits = ss->mtp_logits, *hid = ss->hid, *h_last = ss->h_last;
    ds_ctx *x = ss->ctx;
    int rc = DS_OK;
    double t0 = ds_now();
    /* prefill in chunks; MTP rows (h_i, x_{i+1}) for every prompt position but the last */
    for (int64_t i = 0; i < n && !rc; i += chunk) {
        int64_t k = DS_MIN(chunk, n - i);
        ds_seq_chunk ch = { cache, prompt + i, k, false };
        if ((rc = ds_model_forward(m, x, &ch, 1, logits, hid, e))) break;
        int64_t rows = (i + k < n) ? k : k - 1;  /* the last prompt row waits for the sampled token */
        if (rows > 0 && (rc = ds_model_forward_mtp(m, x, cache, hid, prompt + i + 1, rows, NULL, e))) break;
        memcpy(h_last, hid + (k - 1) * D, (size_t)D * sizeof(float));
    }
    st->t_prefill = ds_now() - t0;
    t0 = ds_now();
    if (!rc && o->max_tokens > 0) {
        int32_t t = ds_session_sample(ss, logits);
        int done = emit(ss, o, cb, ud, st, t);
        while (!done) {
            /* draft from (h_last, t) */
            if ((rc = ds_model_forward_mtp(m, x, cache, h_last, &t, 1, mtp_logits, e))) break;
            int32_t d = (int32_t)argmax(mtp_logits, V);
            if (o->draft_override) d = o->draft_override(o->draft_ud, cache->n_past + 1, d);
            int32_t pair[2] = { t, d };
            ds_seq_chunk ch = { cache, pair, 2, true };
            if ((rc = ds_model_forward(m, x, &ch, 1, logits, hid, e))) break;
            st->n_main_forwards++;
            st->n_draft++;
            int32_t t1 = ds_session_sample(ss, logits);
            if (t1 == d) {
                st->n_accepted++;
                if ((done = emit(ss, o, cb, ud, st, t1))) break;
                /* MTP row (h_t, d) is real now */
                if ((rc = ds_model_forward_mtp(m, x, cache, hid, &d, 1, NULL, e))) break;
                int32_t t2 = ds_session_sample(ss, logits + V);
                memcpy(h_last, hid + D, (size_t)D * sizeof(float));
                t = t2;
                done = emit(ss, o, cb, ud, st, t2);
            } else {
                /* drop the rejected draft; a V4 cache needs a ring slack of >= 1 row for it */
                int64_t want = cache->n_past - 1;
                if (ds_kvcache_truncate(cache, want) != want) {
                    rc = ds_err_set(e, DS_EINVAL, "MTP speculative decoding: the KV cache cannot drop a rejected "
                                    "draft (a DeepSeek-V4 cache with a ring slack of %lld rows; it needs >= 1)",
                                    (long long)cache->v4_slack);
                    break;
                }
                memcpy(h_last, hid, (size_t)D * sizeof(float));
                t = t1;
                done = emit(ss, o, cb, ud, st, t1);
            }
        }
    }
    st->t_decode = ds_now() - t0;
    return rc;
}

int ds_generate(ds_session *ss, const int32_t *prompt, int64_t n, const ds_gen_opts *o, ds_token_cb cb, void *ud,
                ds_gen_stats *st, ds_err *e) {
    memset(st, 0, sizeof *st);
    if (n <= 0) return ds_err_set(e, DS_EINVAL, "empty prompt");
    st->n_prompt = n;
    ds_kvcache *cache = ss->cache;
    bool slide = o->window > 0 && cache->n_past == 0 && o->window <= cache->max_ctx;
    if (slide && n > o->window)
        return ds_err_set(e, DS_ERANGE, "prompt of %lld tokens is longer than the %lld-token window", (long long)n,
                          (long long)o->window);
    int rc = ds_session_reserve(ss, o->prefill_chunk, slide ? o->window : 0, e);
    if (rc) return rc;
    if (o->mtp) return generate_mtp(ss, prompt, n, o, cb, ud, st, e);
    const ds_model *m = ss->m;
    float *logits = ss->logits;
    double t0 = ds_now();
    rc = ds_prefill(m, ss->ctx, cache, prompt, n, o->prefill_chunk, logits, e);
    st->t_prefill = ds_now() - t0;
    if (rc) return rc;
    t0 = ds_now();
    /* the tokens in the cache, kept only when the window may slide */
    int32_t *hist = ss->hist;
    int64_t n_hist = 0;
    if (slide) {
        memcpy(hist, prompt, (size_t)n * sizeof *hist);
        n_hist = n;
    }
    if (o->max_tokens > 0) {
        for (;;) {
            int32_t tok = ds_session_sample(ss, logits);
            if (emit(ss, o, cb, ud, st, tok)) break;
            if (slide && cache->n_past + 1 > o->window) {
                /* keep the first token and the newest half; recompute them */
                int64_t keep = o->window / 2, first = 1;
                memmove(hist + first, hist + n_hist - keep, (size_t)keep * sizeof *hist);
                n_hist = first + keep;
                ds_kvcache_clear(cache);
                if ((rc = ds_prefill(m, ss->ctx, cache, hist, n_hist, o->prefill_chunk, logits, e))) break;
                st->n_shifts++;
            }
            if (slide) hist[n_hist++] = tok;
            ds_seq_chunk ch = { cache, &tok, 1, false };
            if ((rc = ds_model_forward(m, ss->ctx, &ch, 1, logits, NULL, e))) break;
            st->n_main_forwards++;
        }
    }
    st->t_decode = ds_now() - t0;
    return rc;
}
