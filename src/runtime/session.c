/*
 * session.c - a session's lifetime and the generation step (see session.h).
 */
#include "session.h"

#include <stdlib.h>
#include <string.h>

int ds_session_init_step(ds_session *s, const ds_model *m, const ds_tokenizer *tok, const ds_sampler_params *sp,
                         ds_err *e) {
    memset(s, 0, sizeof *s);
    s->m = m;
    ds_stop_init(&s->stop);
    int rc = ds_sampler_init(&s->smp, sp, m->cfg.vocab_size, e);
    if (rc) return rc;
    if (tok) {
        tok_stream_init(&s->ts, tok, true);
        s->has_text = true;
    }
    return DS_OK;
}

int ds_session_init(ds_session *s, const ds_model *m, const ds_tokenizer *tok, int64_t max_ctx,
                    const ds_sampler_params *sp, ds_err *e) {
    int rc = ds_session_init_step(s, m, tok, sp, e);
    if (!rc) rc = ds_ctx_new(&s->ctx, e);
    if (!rc && !(rc = ds_kvcache_init(&s->own_cache, m, max_ctx, e))) s->cache = &s->own_cache;
    if (rc) ds_session_free(s);
    return rc;
}

void ds_session_free(ds_session *s) {
    if (!s->m) return;
    ds_ctx_free(s->ctx);
    if (s->cache == &s->own_cache) ds_kvcache_free(&s->own_cache);
    ds_sampler_free(&s->smp);
    if (s->has_text) tok_stream_free(&s->ts);
    ds_stop_free(&s->stop);
    free(s->logits);
    free(s->mtp_logits);
    free(s->hid);
    free(s->h_last);
    free(s->hist);
    memset(s, 0, sizeof *s);
}

int ds_session_add_stop(ds_session *s, const char *str, ds_err *e) { return ds_stop_add(&s->stop, str, e); }

int ds_session_begin(ds_session *s, const ds_sampler_params *sp, const int32_t *prompt, int64_t n, ds_err *e) {
    if (sp) {
        ds_sampler fresh;
        int rc = ds_sampler_init(&fresh, sp, s->m->cfg.vocab_size, e);
        if (rc) return rc;
        ds_sampler_free(&s->smp);
        s->smp = fresh;
    }
    ds_sampler_add_prompt(&s->smp, prompt, n);
    if (s->has_text) {
        const ds_tokenizer *tok = s->ts.tok;
        tok_stream_free(&s->ts);
        tok_stream_init(&s->ts, tok, true);
    }
    ds_stop_reset(&s->stop);
    s->n_gen = 0;
    return DS_OK;
}

int ds_session_reserve(ds_session *s, int64_t prefill_chunk, int64_t window, ds_err *e) {
    int64_t V = s->m->cfg.vocab_size, D = ds_model_hidden_width(s->m);   /* hidden rows (V4: hc·D) */
    int64_t rows = DS_MAX(prefill_chunk > 0 ? prefill_chunk : 512, 2);
    if (!s->logits && !(s->logits = malloc((size_t)(2 * V) * sizeof(float)))) goto oom;
    if (!s->mtp_logits && !(s->mtp_logits = malloc((size_t)V * sizeof(float)))) goto oom;
    if (!s->h_last && !(s->h_last = malloc((size_t)D * sizeof(float)))) goto oom;
    if (s->hid_rows < rows) {
        float *h = realloc(s->hid, (size_t)(rows * D) * sizeof(float));
        if (!h) goto oom;
        s->hid = h;
        s->hid_rows = rows;
    }
    if (s->hist_cap < window) {
        int32_t *h = realloc(s->hist, (size_t)window * sizeof *h);
        if (!h) goto oom;
        s->hist = h;
        s->hist_cap = window;
    }
    return DS_OK;
oom:
    return ds_err_set(e, DS_ENOMEM, "out of memory for the decode buffers");
}

/* ------------------------------------------------------------------ step */

int32_t ds_session_sample(ds_session *s, float *logits) { return ds_sampler_sample(&s->smp, logits); }

void ds_session_accept(ds_session *s, int32_t tok) {
    ds_sampler_accept(&s->smp, tok);
    s->n_gen++;
}

void ds_session_text(ds_session *s, int32_t tok, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    ds_err e = { 0 };
    if (s->has_text && tok_stream_push(&s->ts, tok, text, len, &e) != 0) { *text = ""; *len = 0; }
}

bool ds_session_show(ds_session *s, const char *text, size_t len, bool final, const char **emit, size_t *emit_len) {
    return ds_stop_feed_ex(&s->stop, text, len, final, emit, emit_len);
}

void ds_session_finish(ds_session *s, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->stop.matched) return;
    const char *t = "";
    size_t n = 0;
    ds_err e = { 0 };
    if (s->has_text && tok_stream_flush(&s->ts, &t, &n, &e) != 0) { t = ""; n = 0; }
    ds_session_show(s, t, n, true, emit, emit_len);
}
