/*
 * deepseek.c - the public API (include/deepseek.h): a thin layer over
 * ds_model / ds_ctx / ds_session / the tokenizer and chat templates. It adds
 * no algorithm of its own; it owns only what a caller of the C API cannot
 * see: the opaque handles, the token history of a session (for
 * deepseek_session_tokens and truncate), and the bookkeeping that keeps the
 * MTP module's cache in step with the main cache for mtp_logits.
 */
#include "../../include/deepseek.h"
#include "../core/base.h"
#include "../model/model.h"
#include "../runtime/generate.h"
#include "../runtime/session.h"
#include "../tokenizer/chat.h"
#include "../tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the public enums mirror the internal ones value for value */
_Static_assert((int)DEEPSEEK_ERANGE == (int)DS_ERANGE && (int)DEEPSEEK_EINTERRUPTED == (int)DS_EINTERRUPTED,
               "status codes");
_Static_assert((int)DEEPSEEK_KV_Q8 == (int)DS_KV_Q8 && (int)DEEPSEEK_KV_FP8 == (int)DS_KV_FP8 &&
               (int)DEEPSEEK_KV_BF16 == (int)DS_KV_BF16 && (int)DEEPSEEK_KV_I8 == (int)DS_KV_I8, "kv types");
_Static_assert((int)DEEPSEEK_CHAT_V3 == (int)DS_CHAT_V3 && (int)DEEPSEEK_CHAT_R1 == (int)DS_CHAT_R1 &&
               (int)DEEPSEEK_CHAT_V31 == (int)DS_CHAT_V31 && (int)DEEPSEEK_CHAT_V2 == (int)DS_CHAT_V2 &&
               (int)DEEPSEEK_CHAT_V32 == (int)DS_CHAT_V32 && (int)DEEPSEEK_CHAT_V4 == (int)DS_CHAT_V4, "chat formats");
_Static_assert(sizeof(deepseek_sampler_params) == sizeof(ds_sampler_params), "sampler params");

struct deepseek_model {
    ds_model *m;
    ds_tokenizer *tok;          /* NULL: ids only */
    deepseek_model_options opts;
    ds_chat_format fmt;         /* detected chat format */
};

struct deepseek_session {
    const deepseek_model *dm;
    ds_session ss;
    bool mtp;                   /* keep the MTP cache in step (mtp_n_past == n_past - 1) */
    bool mtp_synced;            /* false after deepseek_generate (rebuilt on the next decode) */
    bool logits_ok;
    tok_ids hist;               /* the tokens in the cache */
    float *logits;              /* (V) the last position's */
    float *mtp_logits;          /* (V) */
    float *hbuf;                /* (hrows, ds_model_hidden_width): row 0 the last position's hidden state, then a batch's */
    int64_t hrows;
    /* pull-style generation (deepseek_generate_begin/next) */
    int pull;                   /* 0 idle, 1 a token to sample next, 2 ended (flush due), 3 flushed */
    float *scratch;             /* (V) logits the sampler may modify */
    int64_t pull_n_gen, pull_max;
    int32_t pull_eos;
    int pull_finish;
};

struct deepseek_sampler { ds_sampler s; };
struct deepseek_detok { tok_stream ts; };

/* copies an internal error out; returns rc */
static int out_err(deepseek_error *err, const ds_err *e, int rc) {
    if (err && rc) {
        err->code = rc;
        if (e && e->code) snprintf(err->message, sizeof err->message, "%s", e->msg);
        else snprintf(err->message, sizeof err->message, "%s", ds_status_str(rc));
    } else if (err) {
        err->code = 0;
        err->message[0] = 0;
    }
    return rc;
}

static int set_err(deepseek_error *err, int rc, const char *msg) {
    ds_err e = { 0 };
    ds_err_set(&e, rc, "%s", msg);
    return out_err(err, &e, rc);
}

const char *deepseek_status_string(int code) { return ds_status_str(code); }

#define STR2(x) #x
#define STR(x) STR2(x)
const char *deepseek_version(void) {
    return STR(DEEPSEEK_VERSION_MAJOR) "." STR(DEEPSEEK_VERSION_MINOR) "." STR(DEEPSEEK_VERSION_PATCH);
}

void deepseek_free(void *p) { free(p); }

/* ------------------------------------------------------------------ model */

void deepseek_model_options_default(deepseek_model_options *o) {
    memset(o, 0, sizeof *o);
    o->kv_type = DEEPSEEK_KV_F32;
}

int deepseek_model_load(deepseek_model **out, const char *path, const deepseek_model_options *o,
                        deepseek_error *err) {
    *out = NULL;
    if (!path) return set_err(err, DS_EINVAL, "deepseek_model_load: path is NULL");
    deepseek_model_options def;
    deepseek_model_options_default(&def);
    if (!o) o = &def;
    if (o->kv_type < DEEPSEEK_KV_F32 || o->kv_type > DEEPSEEK_KV_I8 || o->threads < 0 || o->n_ctx < 0)
        return set_err(err, DS_EINVAL, "deepseek_model_load: bad option (kv_type, threads or n_ctx)");
    deepseek_model *dm = calloc(1, sizeof *dm);
    if (!dm) return set_err(err, DS_ENOMEM, "out of memory");
    dm->opts = *o;
    ds_err e = { 0 };
    int rc = ds_model_open_opts(&dm->m, path, NULL, &e);
    if (rc) { free(dm); return out_err(err, &e, rc); }
    /* the tokenizer is optional: a GGUF file or a folder without
     * tokenizer.json still gives an ids-only model */
    ds_err te = { 0 };
    if (tok_load(&dm->tok, path, &te)) dm->tok = NULL;
    if (dm->tok && tok_vocab_size(dm->tok) > dm->m->cfg.vocab_size) {
        ds_err_set(&e, DS_EFORMAT, "%s: the tokenizer has %lld ids but the model only %lld", path,
                   (long long)tok_vocab_size(dm->tok), (long long)dm->m->cfg.vocab_size);
        tok_free(dm->tok);
        ds_model_close(dm->m);
        free(dm);
        return out_err(err, &e, DS_EFORMAT);
    }
    dm->fmt = chat_format_resolve(path, dm->tok ? tok_chat_template(dm->tok) : NULL);
    if (dm->opts.n_ctx == 0 || dm->opts.n_ctx > dm->m->cfg.max_position_embeddings)
        dm->opts.n_ctx = dm->m->cfg.max_position_embeddings;
    *out = dm;
    return out_err(err, NULL, DS_OK);
}

void deepseek_model_free(deepseek_model *dm) {
    if (!dm) return;
    tok_free(dm->tok);
    ds_model_close(dm->m);
    free(dm);
}

void deepseek_model_get_info(const deepseek_model *dm, deepseek_model_info *info) {
    const ds_config *c = ds_model_config(dm->m);
    memset(info, 0, sizeof *info);
    info->architecture = c->model_type;
    info->arch_version = (int)c->arch;
    info->vocab_size = c->vocab_size;
    info->n_ctx_train = c->max_position_embeddings;
    info->n_ctx = dm->opts.n_ctx;
    info->n_layer = c->n_layer;
    info->hidden_size = c->hidden_size;
    info->n_head = c->n_head;
    info->n_routed_experts = c->n_routed_experts;
    info->n_experts_per_tok = c->num_experts_per_tok;
    info->n_mtp = ds_model_mtp_stored(dm->m);
    info->n_params = dm->m->n_params;
    info->has_tokenizer = dm->tok != NULL;
    info->tokenizer_vocab = dm->tok ? tok_vocab_size(dm->tok) : 0;
    info->bos_id = dm->tok && tok_bos_id(dm->tok) >= 0 ? tok_bos_id(dm->tok) : (int32_t)c->bos_token_id;
    info->eos_id = dm->tok && tok_eos_id(dm->tok) >= 0 ? tok_eos_id(dm->tok) : (int32_t)c->eos_token_id;
    info->add_bos = dm->tok ? tok_add_bos(dm->tok) : 0;
    info->chat_format = (int)dm->fmt;
    info->has_chat_template = dm->tok && tok_chat_template(dm->tok) != NULL;
}

/* -------------------------------------------------------------- tokenizer */

static int need_tok(const deepseek_model *dm, deepseek_error *err) {
    if (dm->tok) return DS_OK;
    return set_err(err, DS_ENOTFOUND, "the model has no tokenizer (tokenizer.json); use token ids");
}

int deepseek_tokenize(const deepseek_model *dm, const char *text, size_t len, unsigned flags, int32_t **ids,
                      int64_t *n, deepseek_error *err) {
    *ids = NULL;
    *n = 0;
    int rc = need_tok(dm, err);
    if (rc) return rc;
    if (!text && len) return set_err(err, DS_EINVAL, "deepseek_tokenize: text is NULL");
    ds_err e = { 0 };
    tok_ids v = { 0 };
    if ((flags & DEEPSEEK_TOKENIZE_ADD_BOS) && tok_add_bos(dm->tok) && tok_bos_id(dm->tok) >= 0)
        rc = tok_ids_push(&v, tok_bos_id(dm->tok), &e);
    if (!rc && len)
        rc = tok_encode_append(dm->tok, text, len, (flags & DEEPSEEK_TOKENIZE_SPECIAL) ? TOK_PARSE_SPECIAL : 0, &v, &e);
    if (!rc && !v.v && !(v.v = malloc(sizeof(int32_t)))) rc = ds_err_set(&e, DS_ENOMEM, "out of memory");
    if (rc) { tok_ids_free(&v); return out_err(err, &e, rc); }
    *ids = v.v;
    *n = v.n;
    return out_err(err, NULL, DS_OK);
}

int deepseek_detokenize(const deepseek_model *dm, const int32_t *ids, int64_t n, unsigned flags, char **text,
                        size_t *len, deepseek_error *err) {
    *text = NULL;
    if (len) *len = 0;
    int rc = need_tok(dm, err);
    if (rc) return rc;
    if (n < 0 || (!ids && n)) return set_err(err, DS_EINVAL, "deepseek_detokenize: bad ids");
    ds_err e = { 0 };
    char *raw = NULL;
    size_t rl = 0;
    rc = tok_decode(dm->tok, ids, n, (flags & DEEPSEEK_DETOK_SKIP_SPECIAL) != 0, &raw, &rl, &e);
    if (rc) return out_err(err, &e, rc);
    if (!(flags & DEEPSEEK_DETOK_RAW)) {
        char *s = NULL;
        size_t sl = 0;
        rc = tok_utf8_sanitize(raw, rl, &s, &sl, &e);
        free(raw);
        if (rc) return out_err(err, &e, rc);
        raw = s;
        rl = sl;
    }
    *text = raw;
    if (len) *len = rl;
    return out_err(err, NULL, DS_OK);
}

const char *deepseek_token_piece(const deepseek_model *dm, int32_t id, size_t *len) {
    size_t l = 0;
    const char *p = dm->tok ? tok_id_to_piece(dm->tok, id, &l) : NULL;
    if (len) *len = p ? l : 0;
    return p;
}

int32_t deepseek_token_special_id(const deepseek_model *dm, const char *text) {
    return dm->tok && text ? tok_added_token_id(dm->tok, text, strlen(text)) : -1;
}

int deepseek_detok_new(deepseek_detok **out, const deepseek_model *dm, int skip_special, deepseek_error *err) {
    *out = NULL;
    int rc = need_tok(dm, err);
    if (rc) return rc;
    deepseek_detok *d = calloc(1, sizeof *d);
    if (!d) return set_err(err, DS_ENOMEM, "out of memory");
    tok_stream_init(&d->ts, dm->tok, skip_special != 0);
    *out = d;
    return out_err(err, NULL, DS_OK);
}

int deepseek_detok_push(deepseek_detok *d, int32_t id, const char **text, size_t *len, deepseek_error *err) {
    ds_err e = { 0 };
    int rc = tok_stream_push(&d->ts, id, text, len, &e);
    if (rc) { *text = ""; *len = 0; }
    return out_err(err, &e, rc);
}

int deepseek_detok_flush(deepseek_detok *d, const char **text, size_t *len, deepseek_error *err) {
    ds_err e = { 0 };
    int rc = tok_stream_flush(&d->ts, text, len, &e);
    if (rc) { *text = ""; *len = 0; }
    return out_err(err, &e, rc);
}

void deepseek_detok_free(deepseek_detok *d) {
    if (!d) return;
    tok_stream_free(&d->ts);
    free(d);
}

/* ------------------------------------------------------------ chat format */

int deepseek_chat_apply_opts(const deepseek_model *dm, int format, const deepseek_chat_message *msgs, int n_msgs,
                             const deepseek_chat_options *opts, int32_t **ids, int64_t *n, char **text,
                             deepseek_error *err) {
    *ids = NULL;
    *n = 0;
    if (text) *text = NULL;
    int rc = need_tok(dm, err);
    if (rc) return rc;
    if (!opts) return set_err(err, DS_EINVAL, "deepseek_chat_apply_opts: no options");
    if (format < DEEPSEEK_CHAT_AUTO || format > DEEPSEEK_CHAT_V4) return set_err(err, DS_EINVAL, "unknown chat format");
    if (n_msgs < 0 || (!msgs && n_msgs)) return set_err(err, DS_EINVAL, "deepseek_chat_apply: bad messages");
    int eff = chat_effort_from_name(opts->reasoning_effort);
    if (eff < 0) {
        ds_err e0 = { 0 };
        return out_err(err, &e0, ds_err_set(&e0, DS_EINVAL, "unknown reasoning_effort '%.40s' (max, high, low)", opts->reasoning_effort));
    }
    ds_chat_msg *cm = calloc((size_t)(n_msgs ? n_msgs : 1), sizeof *cm);
    if (!cm) return set_err(err, DS_ENOMEM, "out of memory");
    ds_err e = { 0 };
    for (int i = 0; i < n_msgs && !rc; i++) {
        int role = msgs[i].role ? chat_role_from_name(msgs[i].role) : -1;
        if (role < 0)
            rc = ds_err_set(&e, DS_EINVAL, "message %d: unknown role '%s' (system, user, assistant, tool)", i,
                            msgs[i].role ? msgs[i].role : "(null)");
        cm[i] = (ds_chat_msg){ .role = (ds_chat_role)role, .content = msgs[i].content ? msgs[i].content : "" };
    }
    tok_ids v = { 0 };
    char *t = NULL;
    ds_chat_format f = format == DEEPSEEK_CHAT_AUTO ? dm->fmt : (ds_chat_format)format;
    ds_chat_opts o = { .add_generation_prompt = opts->add_generation_prompt != 0, .thinking = opts->thinking != 0,
                       .effort = (ds_reasoning_effort)eff, .tools_json = opts->tools_json };
    if (!rc) rc = chat_render_opts(dm->tok, f, cm, n_msgs, &o, &v, text ? &t : NULL, &e);
    free(cm);
    if (!rc && !v.v && !(v.v = malloc(sizeof(int32_t)))) rc = ds_err_set(&e, DS_ENOMEM, "out of memory");
    if (rc) { tok_ids_free(&v); free(t); return out_err(err, &e, rc); }
    *ids = v.v;
    *n = v.n;
    if (text) *text = t;
    return out_err(err, NULL, DS_OK);
}

int deepseek_chat_apply(const deepseek_model *dm, int format, const deepseek_chat_message *msgs, int n_msgs,
                        int add_generation_prompt, int thinking, int32_t **ids, int64_t *n, deepseek_error *err) {
    deepseek_chat_options o = { .add_generation_prompt = add_generation_prompt, .thinking = thinking };
    return deepseek_chat_apply_opts(dm, format, msgs, n_msgs, &o, ids, n, NULL, err);
}

int deepseek_chat_format_from_name(const char *name) { return name ? chat_format_from_name(name) : -1; }

const char *deepseek_chat_format_name(int format) {
    if (format == DEEPSEEK_CHAT_AUTO) return "auto";
    if (format < DEEPSEEK_CHAT_AUTO || format > DEEPSEEK_CHAT_V4) return "unknown";
    return chat_format_name((ds_chat_format)format);
}

void deepseek_chat_split_reasoning(const char *text, size_t len, int starts_in_reasoning, deepseek_reply_split *out) {
    ds_reply_split s;
    chat_split_reasoning(text ? text : "", text ? len : 0, starts_in_reasoning != 0, &s);
    out->reasoning = s.reasoning;
    out->reasoning_len = s.reasoning_len;
    out->content = s.content;
    out->content_len = s.content_len;
    out->has_reasoning = s.has_reasoning;
    out->reasoning_done = s.reasoning_done;
}

int deepseek_chat_thinks(int format, int thinking) {
    if (format <= DEEPSEEK_CHAT_AUTO || format > DEEPSEEK_CHAT_V4) return 0;
    return chat_reply_starts_in_reasoning((ds_chat_format)format, thinking != 0);
}

/* ---------------------------------------------------------------- sampler */

void deepseek_sampler_params_default(deepseek_sampler_params *p) {
    ds_sampler_params_default((ds_sampler_params *)p);
}

int deepseek_sampler_new(deepseek_sampler **out, const deepseek_sampler_params *p, int64_t n_vocab,
                         deepseek_error *err) {
    *out = NULL;
    deepseek_sampler_params def;
    deepseek_sampler_params_default(&def);
    if (!p) p = &def;
    if (n_vocab <= 0) return set_err(err, DS_EINVAL, "deepseek_sampler_new: n_vocab must be > 0");
    deepseek_sampler *s = calloc(1, sizeof *s);
    if (!s) return set_err(err, DS_ENOMEM, "out of memory");
    ds_err e = { 0 };
    int rc = ds_sampler_params_check((const ds_sampler_params *)p, &e);
    if (!rc) rc = ds_sampler_init(&s->s, (const ds_sampler_params *)p, n_vocab, &e);
    if (rc) { free(s); return out_err(err, &e, rc); }
    *out = s;
    return out_err(err, NULL, DS_OK);
}

void deepseek_sampler_free(deepseek_sampler *s) {
    if (!s) return;
    ds_sampler_free(&s->s);
    free(s);
}

void deepseek_sampler_add_prompt(deepseek_sampler *s, const int32_t *ids, int64_t n) { ds_sampler_add_prompt(&s->s, ids, n); }
int32_t deepseek_sampler_sample(deepseek_sampler *s, float *logits) { return ds_sampler_sample(&s->s, logits); }
void deepseek_sampler_accept(deepseek_sampler *s, int32_t id) { ds_sampler_accept(&s->s, id); }
void deepseek_sampler_reset(deepseek_sampler *s, int reseed) { ds_sampler_reset(&s->s, reseed != 0); }

/* ---------------------------------------------------------------- session */

void deepseek_session_options_default(deepseek_session_options *o) {
    memset(o, 0, sizeof *o);
    o->kv_type = -1;
    deepseek_sampler_params_default(&o->sampling);
}

int deepseek_session_new(deepseek_session **out, const deepseek_model *dm, const deepseek_session_options *o,
                         deepseek_error *err) {
    *out = NULL;
    deepseek_session_options def;
    deepseek_session_options_default(&def);
    if (!o) o = &def;
    if (o->n_ctx < 0 || o->threads < 0 || o->kv_type < -1 || o->kv_type > DEEPSEEK_KV_I8)
        return set_err(err, DS_EINVAL, "deepseek_session_new: bad option (n_ctx, threads or kv_type)");
    if (o->mtp && ds_model_mtp_stored(dm->m) == 0)
        return set_err(err, DS_EUNSUPPORTED, "deepseek_session_new: mtp: the model stores no MTP layer");
    deepseek_session *s = calloc(1, sizeof *s);
    if (!s) return set_err(err, DS_ENOMEM, "out of memory");
    s->dm = dm;
    int64_t ctx = o->n_ctx ? o->n_ctx : dm->opts.n_ctx;
    int kvt = o->kv_type >= 0 ? o->kv_type : dm->opts.kv_type;
    int threads = o->threads ? o->threads : dm->opts.threads;
    int64_t V = dm->m->cfg.vocab_size;
    ds_err e = { 0 };
    int rc = ds_sampler_params_check((const ds_sampler_params *)&o->sampling, &e);
    if (!rc) rc = ds_session_init(&s->ss, dm->m, dm->tok, ctx, (const ds_sampler_params *)&o->sampling, &e);
    if (rc) { free(s); return out_err(err, &e, rc); }
    rc = ds_kvcache_set_type(s->ss.cache, (ds_kv_type)kvt, &e);
    if (!rc && threads) ds_ctx_set_threads(s->ss.ctx, threads);
    if (!rc && (!(s->logits = malloc((size_t)V * sizeof(float))) || !(s->mtp_logits = malloc((size_t)V * sizeof(float)))))
        rc = ds_err_set(&e, DS_ENOMEM, "out of memory");
    if (rc) { deepseek_session_free(s); return out_err(err, &e, rc); }
    s->mtp = o->mtp != 0;
    s->mtp_synced = true;
    *out = s;
    return out_err(err, NULL, DS_OK);
}

void deepseek_session_free(deepseek_session *s) {
    if (!s) return;
    ds_session_free(&s->ss);
    tok_ids_free(&s->hist);
    free(s->logits);
    free(s->mtp_logits);
    free(s->hbuf);
    free(s->scratch);
    free(s);
}

int64_t deepseek_session_n_past(const deepseek_session *s) { return s->ss.cache->n_past; }
int64_t deepseek_session_n_ctx(const deepseek_session *s) { return s->ss.cache->max_ctx; }

const int32_t *deepseek_session_tokens(const deepseek_session *s, int64_t *n) {
    *n = s->hist.n;
    return s->hist.v;
}

/* Appends ids through the main model (chunks of 512), then, with mtp, the
 * MTP rows they complete: (h[p-1], ids[0]) for the previous last position
 * p-1 (unless !pair_prev: that row is already in the MTP cache) and
 * (h[i], ids[i+1]) inside the batch. */
static int decode_impl(deepseek_session *s, const int32_t *ids, int64_t n, float *all, bool pair_prev, ds_err *e) {
    const ds_model *m = s->dm->m;
    int64_t V = m->cfg.vocab_size, D = ds_model_hidden_width(m);   /* floats per hidden row (V4: hc·D) */
    ds_kvcache *c = s->ss.cache;
    const int64_t chunk = 512;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t k = DS_MIN(chunk, n - i0);
        int64_t p0 = c->n_past;
        if (s->mtp && s->hrows < k + 1) {
            float *h = realloc(s->hbuf, (size_t)((k + 1) * D) * sizeof(float));
            if (!h) return ds_err_set(e, DS_ENOMEM, "out of memory");
            s->hbuf = h;
            s->hrows = k + 1;
        }
        ds_seq_chunk ch = { c, ids + i0, k, all != NULL };
        int rc = ds_model_forward(m, s->ss.ctx, &ch, 1, all ? all + i0 * V : s->logits,
                                  s->mtp ? s->hbuf + D : NULL, e);
        if (rc) return rc;
        for (int64_t j = 0; j < k; j++)
            if ((rc = tok_ids_push(&s->hist, ids[i0 + j], e))) return rc;
        if (all) memcpy(s->logits, all + (i0 + k - 1) * V, (size_t)V * sizeof(float));
        if (s->mtp) {
            /* rows [first, k) of hbuf pair with ids[i0 .. i0+k-1] shifted by one */
            bool prev = p0 > 0 && (pair_prev || i0 > 0);
            const float *h = prev ? s->hbuf : s->hbuf + D;
            const int32_t *t = prev ? ids + i0 : ids + i0 + 1;
            int64_t nr = prev ? k : k - 1;
            if (nr > 0 && (rc = ds_model_forward_mtp(m, s->ss.ctx, c, h, t, nr, NULL, e))) return rc;
            memmove(s->hbuf, s->hbuf + k * D, (size_t)D * sizeof(float)); /* the last hidden state -> row 0 */
        }
    }
    s->logits_ok = true;
    return DS_OK;
}

static int check_ids(const deepseek_session *s, const int32_t *ids, int64_t n, ds_err *e) {
    int64_t V = s->dm->m->cfg.vocab_size;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ds_err_set(e, DS_ERANGE, "token id %d at position %lld is outside the vocabulary [0, %lld)", ids[i],
                              (long long)i, (long long)V);
    return DS_OK;
}

/* Recomputes the cache from the token history (MTP cache out of step). */
static int resync(deepseek_session *s, ds_err *e) {
    tok_ids h = s->hist;
    s->hist = (tok_ids){ 0 };
    ds_kvcache_clear(s->ss.cache);
    s->mtp_synced = true;
    int rc = h.n ? decode_impl(s, h.v, h.n, NULL, true, e) : DS_OK;
    tok_ids_free(&h);
    return rc;
}

/* Cuts the cache and the history to n positions. A DeepSeek-V4 cache whose
 * rings no longer reach back to n comes back empty: it is refilled from the
 * history (no logits). On failure the history follows the cache. */
static int truncate_to(deepseek_session *s, int64_t n, ds_err *e) {
    ds_kvcache *c = s->ss.cache;
    int64_t kept = ds_kvcache_truncate(c, n);
    if (s->hist.n > n) s->hist.n = n;
    if (kept >= s->hist.n) return DS_OK;
    tok_ids h = s->hist;
    s->hist = (tok_ids){ 0 };
    int rc = decode_impl(s, h.v, h.n, NULL, true, e);
    tok_ids_free(&h);
    if (rc && s->hist.n > c->n_past) s->hist.n = c->n_past;
    return rc;
}

int deepseek_session_decode(deepseek_session *s, const int32_t *ids, int64_t n, float *all_logits,
                            deepseek_error *err) {
    if (n <= 0 || !ids) return set_err(err, DS_EINVAL, "deepseek_session_decode: no tokens");
    ds_err e = { 0 };
    ds_kvcache *c = s->ss.cache;
    if (c->n_past + n > c->max_ctx)
        return out_err(err, &e, ds_err_set(&e, DS_ERANGE, "context full: %lld + %lld tokens exceed the context of %lld",
                                           (long long)c->n_past, (long long)n, (long long)c->max_ctx));
    int rc = check_ids(s, ids, n, &e);
    if (!rc && s->mtp && !s->mtp_synced) rc = resync(s, &e);
    if (!rc) rc = decode_impl(s, ids, n, all_logits, true, &e);
    if (rc) {
        /* a failed batch leaves no partial state behind */
        s->logits_ok = false;
        ds_err e2 = { 0 };
        truncate_to(s, DS_MIN(s->hist.n, c->n_past), &e2);   /* the first error is the one reported */
    }
    return out_err(err, &e, rc);
}

const float *deepseek_session_logits(const deepseek_session *s, int64_t *n_vocab) {
    if (n_vocab) *n_vocab = s->dm->m->cfg.vocab_size;
    return s->logits_ok ? s->logits : NULL;
}

int deepseek_session_mtp_logits(deepseek_session *s, int32_t next_token, const float **logits, deepseek_error *err) {
    *logits = NULL;
    if (!s->mtp) return set_err(err, DS_EINVAL, "mtp_logits: the session was made without the mtp option");
    ds_err e = { 0 };
    int rc = check_ids(s, &next_token, 1, &e);
    if (!rc && !s->mtp_synced) rc = resync(s, &e);
    if (!rc && s->ss.cache->n_past == 0) rc = ds_err_set(&e, DS_EINVAL, "mtp_logits: the session is empty");
    if (rc) return out_err(err, &e, rc);
    ds_kvcache *c = s->ss.cache;
    rc = ds_model_forward_mtp(s->dm->m, s->ss.ctx, c, s->hbuf, &next_token, 1, s->mtp_logits, &e);
    if (rc) return out_err(err, &e, rc);
    c->mtp_n_past--;   /* the row is written again when next_token is decoded (it may differ) */
    *logits = s->mtp_logits;
    return out_err(err, NULL, DS_OK);
}

int deepseek_session_truncate(deepseek_session *s, int64_t n, deepseek_error *err) {
    ds_kvcache *c = s->ss.cache;
    if (n < 0 || n > c->n_past) return set_err(err, DS_ERANGE, "truncate: n is outside [0, n_past]");
    ds_err e = { 0 };
    s->logits_ok = false;
    if (n == 0) {
        ds_kvcache_clear(c);
        s->hist.n = 0;
        s->mtp_synced = true;
        return out_err(err, NULL, DS_OK);
    }
    /* drop down to n - 1 and decode token n - 1 again: its logits (and the
     * MTP module's hidden state) become the session's last; the MTP cache
     * keeps its rows for positions [0, n-1) (the new token's pair with the
     * previous hidden state is among them) */
    int rc = DS_OK;
    s->hist.n = n;
    if (s->mtp && !s->mtp_synced) rc = resync(s, &e);
    if (rc) return out_err(err, &e, rc);
    int32_t last = s->hist.v[n - 1];
    if ((rc = truncate_to(s, n - 1, &e))) return out_err(err, &e, rc);
    if (s->mtp && c->mtp_n_past > n - 1) c->mtp_n_past = n - 1;
    rc = decode_impl(s, &last, 1, NULL, false, &e);
    return out_err(err, &e, rc);
}

int deepseek_session_set_sampling(deepseek_session *s, const deepseek_sampler_params *p, deepseek_error *err) {
    ds_err e = { 0 };
    int rc = ds_sampler_params_check((const ds_sampler_params *)p, &e);
    if (rc) return out_err(err, &e, rc);
    ds_sampler fresh;
    rc = ds_sampler_init(&fresh, (const ds_sampler_params *)p, s->dm->m->cfg.vocab_size, &e);
    if (rc) return out_err(err, &e, rc);
    ds_sampler_free(&s->ss.smp);
    s->ss.smp = fresh;
    return out_err(err, NULL, DS_OK);
}

int deepseek_session_add_stop(deepseek_session *s, const char *stop, deepseek_error *err) {
    if (!stop || !*stop) return set_err(err, DS_EINVAL, "add_stop: empty stop string");
    if (!s->dm->tok) return need_tok(s->dm, err);
    ds_err e = { 0 };
    return out_err(err, &e, ds_session_add_stop(&s->ss, stop, &e));
}

/* --------------------------------------------------------------- generate */

void deepseek_generate_options_default(deepseek_generate_options *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 32;
}

typedef struct gen_state {
    deepseek_session *s;
    deepseek_token_callback cb;
    void *user;
    tok_ids out;          /* generated ids */
    char *text;           /* collected text (generate_text), or NULL when not wanted */
    size_t len, cap;
    bool want_text, oom;
} gen_state;

static bool text_append(gen_state *g, const char *t, size_t n) {
    if (!g->want_text || g->oom) return !g->oom;
    if (g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 256;
        while (cap < g->len + n + 1) cap *= 2;
        char *p = realloc(g->text, cap);
        if (!p) { g->oom = true; return false; }
        g->text = p;
        g->cap = cap;
    }
    memcpy(g->text + g->len, t, n);
    g->len += n;
    g->text[g->len] = 0;
    return true;
}

static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    gen_state *g = ud;
    ds_err e = { 0 };
    if (tok_ids_push(&g->out, tok, &e) || !text_append(g, text, len)) { g->oom = true; return 1; }
    return g->cb ? g->cb(g->user, tok, text, len) : 0;
}

/* Checks a generation request; *max_tokens: what the context leaves room
 * for; *eos: the model config's end-of-sequence id, else the tokenizer's. */
static int gen_check(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                     int64_t *max_tokens_out, int32_t *eos_out, ds_err *e) {
    if (n <= 0 || !prompt) return ds_err_set(e, DS_EINVAL, "generate: the prompt is empty");
    if (o->max_tokens < 0) return ds_err_set(e, DS_EINVAL, "generate: max_tokens < 0");
    int rc = check_ids(s, prompt, n, e);
    if (rc) return rc;
    ds_kvcache *c = s->ss.cache;
    if (o->mtp && (ds_model_mtp_stored(s->dm->m) == 0 || c->n_past))
        return ds_err_set(e, DS_EINVAL, "generate: mtp needs a model with an MTP layer and an empty session");
    /* at most what the context holds: the last token is not cached (MTP's
     * verify pass needs one position more) */
    int64_t room = c->max_ctx - c->n_past - n + (o->mtp ? 0 : 1);
    if (c->n_past + n > c->max_ctx || (o->max_tokens > 0 && room < 1))
        return ds_err_set(e, DS_ERANGE, "generate: %lld cached + %lld prompt tokens leave no room in the context of %lld",
                          (long long)c->n_past, (long long)n, (long long)c->max_ctx);
    *max_tokens_out = DS_MIN(o->max_tokens, room);
    const ds_config *cfg = ds_model_config(s->dm->m);
    *eos_out = cfg->eos_token_id >= 0 ? (int32_t)cfg->eos_token_id : s->dm->tok ? tok_eos_id(s->dm->tok) : -1;
    s->pull = 0;
    return DS_OK;
}

static int generate(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                    gen_state *g, deepseek_generate_result *r, ds_err *e) {
    deepseek_generate_options def;
    deepseek_generate_options_default(&def);
    if (!o) o = &def;
    if (r) memset(r, 0, sizeof *r), r->last_token = -1;
    int64_t max_tokens;
    int32_t eos;
    int rc = gen_check(s, prompt, n, o, &max_tokens, &eos, e);
    if (rc) return rc;
    ds_kvcache *c = s->ss.cache;
    if ((rc = ds_session_begin(&s->ss, NULL, prompt, n, e))) return rc;
    if (max_tokens == 0) {   /* prefill only: the logits stay available */
        if (r) r->n_prompt = n;
        return decode_impl(s, prompt, n, NULL, true, e);
    }
    ds_gen_opts go = { .max_tokens = max_tokens, .stop_ids = &eos, .n_stop_ids = (!o->ignore_eos && eos >= 0) ? 1 : 0,
                       .mtp = o->mtp != 0 };
    ds_gen_stats st = { 0 };
    s->logits_ok = false;
    rc = ds_generate(&s->ss, prompt, n, &go, on_token, g, &st, e);
    if (!rc && g->oom) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
    if (!rc && s->dm->tok) {
        const char *em;
        size_t el;
        ds_session_finish(&s->ss, &em, &el);
        if (el && !text_append(g, em, el)) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
        if (!rc && el && g->cb) g->cb(g->user, -1, em, el);
    }
    /* the history follows the cache: prompt + generated ids, as far as cached */
    for (int64_t i = 0; i < n && s->hist.n < c->n_past; i++)
        if (tok_ids_push(&s->hist, prompt[i], e)) rc = rc ? rc : DS_ENOMEM;
    for (int64_t i = 0; i < g->out.n && s->hist.n < c->n_past; i++)
        if (tok_ids_push(&s->hist, g->out.v[i], e)) rc = rc ? rc : DS_ENOMEM;
    if (s->hist.n < c->n_past) {   /* only after a failed push */
        ds_err e2 = { 0 };
        truncate_to(s, s->hist.n, &e2);
    }
    if (s->mtp) s->mtp_synced = false;   /* ds_generate left the MTP cache behind */
    if (r) {
        r->n_prompt = st.n_prompt;
        r->n_gen = st.n_gen;
        r->finish = st.finish;
        r->last_token = g->out.n ? g->out.v[g->out.n - 1] : -1;
        r->t_prefill = st.t_prefill;
        r->t_decode = st.t_decode;
    }
    return rc;
}

int deepseek_generate(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                      deepseek_token_callback cb, void *user, deepseek_generate_result *r, deepseek_error *err) {
    gen_state g = { .s = s, .cb = cb, .user = user };
    ds_err e = { 0 };
    int rc = generate(s, prompt, n, o, &g, r, &e);
    tok_ids_free(&g.out);
    return out_err(err, &e, rc);
}

int deepseek_generate_text(deepseek_session *s, const char *prompt, const deepseek_generate_options *o,
                           deepseek_token_callback cb, void *user, char **text, deepseek_generate_result *r,
                           deepseek_error *err) {
    if (text) *text = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (!prompt) return set_err(err, DS_EINVAL, "generate_text: prompt is NULL");
    int rc = deepseek_tokenize(s->dm, prompt, strlen(prompt), DEEPSEEK_TOKENIZE_SPECIAL | DEEPSEEK_TOKENIZE_ADD_BOS,
                               &ids, &n, err);
    if (rc) return rc;
    gen_state g = { .s = s, .cb = cb, .user = user, .want_text = text != NULL };
    ds_err e = { 0 };
    rc = generate(s, ids, n, o, &g, r, &e);
    free(ids);
    tok_ids_free(&g.out);
    if (!rc && text && !g.text && !(g.text = calloc(1, 1))) rc = ds_err_set(&e, DS_ENOMEM, "out of memory");
    if (rc) { free(g.text); return out_err(err, &e, rc); }
    if (text) *text = g.text;
    return out_err(err, NULL, DS_OK);
}

/* ------------------------------------------------- pull-style generation */

int deepseek_generate_begin(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                            deepseek_error *err) {
    deepseek_generate_options def;
    deepseek_generate_options_default(&def);
    if (!o) o = &def;
    ds_err e = { 0 };
    if (o->mtp) return set_err(err, DS_EUNSUPPORTED, "generate_begin: mtp only with deepseek_generate");
    int64_t max_tokens;
    int32_t eos;
    int rc = gen_check(s, prompt, n, o, &max_tokens, &eos, &e);
    if (!rc && !s->scratch && !(s->scratch = malloc((size_t)s->dm->m->cfg.vocab_size * sizeof(float))))
        rc = ds_err_set(&e, DS_ENOMEM, "out of memory");
    if (!rc) rc = ds_session_begin(&s->ss, NULL, prompt, n, &e);
    if (rc) return out_err(err, &e, rc);
    /* the prefill: the same chunks as ds_generate's (512) */
    deepseek_error de = { 0 };
    rc = deepseek_session_decode(s, prompt, n, NULL, &de);
    if (rc) { if (err) *err = de; return rc; }
    s->pull_n_gen = 0;
    s->pull_max = max_tokens;
    s->pull_eos = o->ignore_eos ? -1 : eos;
    s->pull_finish = DEEPSEEK_FINISH_LENGTH;
    s->pull = max_tokens > 0 ? 1 : 2;
    return out_err(err, NULL, DS_OK);
}

/* ds_generate's loop, one token per call (generate.c: emit) */
int deepseek_generate_next(deepseek_session *s, int32_t *token, const char **text, size_t *len, int *finish,
                           deepseek_error *err) {
    *token = -1;
    *text = "";
    *len = 0;
    if (finish) *finish = s->pull_finish;
    if (s->pull == 0) return set_err(err, DS_EINVAL, "generate_next: no generation begun");
    if (s->pull == 3) return out_err(err, NULL, 0);
    if (s->pull == 2) {
        if (s->dm->tok) ds_session_finish(&s->ss, text, len);
        s->pull = 3;
        return out_err(err, NULL, 0);
    }
    int64_t V = s->dm->m->cfg.vocab_size;
    memcpy(s->scratch, s->logits, (size_t)V * sizeof(float));
    int32_t tok = ds_session_sample(&s->ss, s->scratch);
    ds_session_accept(&s->ss, tok);
    s->pull_n_gen++;
    bool is_eos = tok == s->pull_eos, hit = false;
    if (s->ss.has_text && !is_eos) {
        const char *t;
        size_t n;
        ds_session_text(&s->ss, tok, &t, &n);
        hit = ds_session_show(&s->ss, t, n, false, text, len);
    }
    *token = tok;
    if (hit) s->pull_finish = DEEPSEEK_FINISH_STOP;
    else if (is_eos) s->pull_finish = DEEPSEEK_FINISH_EOS;
    if (hit || is_eos || s->pull_n_gen >= s->pull_max) {
        s->pull = 2;
        s->logits_ok = false;
        return out_err(err, NULL, 1);
    }
    ds_err e = { 0 };
    int rc = decode_impl(s, &tok, 1, NULL, true, &e);
    if (rc) { s->pull = 0; s->logits_ok = false; return out_err(err, &e, rc); }
    return out_err(err, NULL, 1);
}
