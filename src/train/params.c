/*
 * params.c - the parameter table of a trainable model: the Hugging Face
 * kinds of the tensor table (model/tensors.h) -> offsets in one fp32 arena (and its gradient twin), binding
 * the ds_tlayer pointer fields, init, loading any stored dtype, saving,
 * parameter and FLOP counts. The forward/backward passes live in
 * fwd_bwd.c, mla_train.c and moe_train.c.
 */
#include "tmodel.h"
#include "tinternal.h"
#include "../io/safetensors.h"
#include "../model/rope.h"
#include "../model/tensors.h"
#include "ep.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- table */

typedef struct table_builder {
    ds_tmodel *m;
    int64_t cap;
    ds_err *e;
    int rc;
} table_builder;

static void add(table_builder *tb, float **pw, float **pg, bool decay, bool trainable, int ndim, int64_t d0,
                int64_t d1, const char *fmt, ...) __attribute__((format(printf, 9, 10)));

static void add(table_builder *tb, float **pw, float **pg, bool decay, bool trainable, int ndim, int64_t d0,
                int64_t d1, const char *fmt, ...) {
    if (tb->rc) return;
    ds_tmodel *m = tb->m;
    if (m->n_params == tb->cap) {
        int64_t cap = tb->cap ? 2 * tb->cap : 256;
        ds_tparam *p = realloc(m->params, (size_t)cap * sizeof *p);
        if (!p) { tb->rc = ds_err_set(tb->e, DS_ENOMEM, "out of memory"); return; }
        m->params = p;
        tb->cap = cap;
    }
    ds_tparam *p = &m->params[m->n_params++];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim == 2 ? d1 : 0;
    p->numel = ndim == 2 ? d0 * d1 : d0;
    p->off = p->coff = m->n_floats;
    p->layer = p->expert = -1;
    /* keep every tensor 64-byte aligned */
    m->n_floats += (p->numel + 15) & ~(int64_t)15;
    p->decay = decay;
    p->trainable = trainable;
    p->pw = pw;
    p->pg = pg;
}

/* The field kind k fills in W: in W itself, W->layers[l] or W->layers[l].experts[x]. */
static float **tfield(ds_tweights *W, const ds_tkind *k, int64_t l, int64_t x) {
    char *base = k->scope == DS_TS_MODEL    ? (char *)W
                 : k->scope == DS_TS_EXPERT ? (char *)&W->layers[l].experts[x]
                                            : (char *)&W->layers[l];
    return (float **)(base + k->t_off);
}

/* Whether m has optional kind id as its own parameter (else it shares the main one). */
static bool owns(const ds_tmodel *m, ds_tk id) {
    switch (id) {
    case DS_TK_LM_HEAD: return !m->tied_head;
    case DS_TK_MTP_EMBED: return m->mtp_own_embed;
    case DS_TK_MTP_HEAD: return m->mtp_own_head;
    default: return false;
    }
}

/* Adds kind k of layer l (expert x) when this model has it: Hugging Face
 * kinds the config requires, and the optional ones its flags say are its own.
 * A gate is followed by its up with no padding between them, so together
 * they are one (2F, D) matrix: the training FFN runs one GEMM over both. */
static void add_kind(table_builder *tb, ds_tk id, int64_t l, int64_t x) {
    ds_tmodel *m = tb->m;
    const ds_tkind *k = &ds_tkinds[id];
    ds_tneed need = ds_tk_need(k, &m->cfg, l, 0);
    if (!need || !k->hf) return;
    if (need == DS_TN_MAYBE && !owns(m, id)) return;
    char name[sizeof m->params[0].name];
    int64_t s[3];
    ds_tk_name(k, false, l, x, name, sizeof name);
    ds_tk_shape(k, &m->cfg, s);
    /* every matrix is decayed (the router too, though published recipes differ); norms and the bias not */
    add(tb, tfield(&m->W, k, l, x), tfield(&m->G, k, l, x), k->ndim == 2, !(k->flags & DS_TF_BIAS), k->ndim, s[0],
        s[1], "%s", name);
    if (!tb->rc) {
        tb->m->params[tb->m->n_params - 1].layer = (int32_t)l;
        tb->m->params[tb->m->n_params - 1].expert = k->scope == DS_TS_EXPERT ? (int32_t)x : -1;
    }
    if ((k->flags & DS_TF_GATE) && !tb->rc) tb->m->n_floats = tb->m->params[tb->m->n_params - 1].off + s[0] * s[1];
}

/* The trainer's order inside an MTP layer (its checkpoints are written in
 * it): these input-side kinds first, then the ordinary layer, then the rest
 * (the shared head). */
static const ds_tk mtp_first[] = { DS_TK_MTP_EMBED, DS_TK_ENORM, DS_TK_HNORM, DS_TK_EH_PROJ };

static bool is_mtp_first(int id) {
    for (size_t j = 0; j < sizeof mtp_first / sizeof mtp_first[0]; j++)
        if ((int)mtp_first[j] == id) return true;
    return false;
}

static void add_layer(table_builder *tb, int64_t l) {
    ds_tlayer *w = &tb->m->W.layers[l], *g = &tb->m->G.layers[l];
    w->is_moe = g->is_moe = ds_config_layer_is_moe(&tb->m->cfg, l);
    for (size_t i = 0; i < sizeof mtp_first / sizeof mtp_first[0]; i++) add_kind(tb, mtp_first[i], l, -1);
    for (int i = 0; i < DS_TK_COUNT; i++) {
        if (ds_tkinds[i].scope != DS_TS_EXPERT) {
            if (!is_mtp_first(i)) add_kind(tb, (ds_tk)i, l, -1);
        } else if (i == DS_TK_EXP_GATE) {  /* expert by expert: its gate, up, down */
            for (int64_t x = 0; x < tb->m->cfg.n_routed_experts; x++)
                for (int j = i; j < DS_TK_COUNT && ds_tkinds[j].scope == DS_TS_EXPERT; j++) add_kind(tb, (ds_tk)j, l, x);
        }
    }
}

/* Points every W / G field at w / g (table offsets), then the aliases:
 * a tied head, the MTP module's shared embedding and head. */
static void bind(ds_tmodel *m, float *w, float *g) {
    const ds_config *c = &m->cfg;
    for (int64_t i = 0; i < m->n_params; i++) {
        bool held = m->params[i].off >= 0;   /* not another rank's expert */
        *m->params[i].pw = held ? w + m->params[i].off : NULL;
        *m->params[i].pg = held ? g + m->params[i].off : NULL;
    }
    if (m->tied_head) { m->W.lm_head = m->W.embed; m->G.lm_head = m->G.embed; }
    for (int64_t l = c->n_layer; l < c->n_layer + m->n_mtp; l++) {
        ds_tlayer *lw = &m->W.layers[l], *lg = &m->G.layers[l];
        if (!m->mtp_own_embed) { lw->embed = m->W.embed; lg->embed = m->G.embed; }
        if (!m->mtp_own_head) { lw->head = m->W.lm_head; lg->head = m->G.lm_head; }
    }
}

/* Points every gradient tensor (and m->g) at the arena g (n_floats, the
 * layout of m->g): dp.c computes a unit's gradient straight into its
 * gradient-tree buffer this way instead of copying it there. */
void tr_bind_grad(ds_tmodel *m, float *g) {
    m->g = g;
    for (int64_t i = 0; i < m->n_params; i++)
        *m->params[i].pg = m->params[i].off >= 0 ? g + m->params[i].off : NULL;
    if (m->tied_head) m->G.lm_head = m->G.embed;
    for (int64_t l = m->cfg.n_layer; l < m->cfg.n_layer + m->n_mtp; l++) {
        ds_tlayer *lg = &m->G.layers[l];
        if (!m->mtp_own_embed) lg->embed = m->G.embed;
        if (!m->mtp_own_head) lg->head = m->G.lm_head;
    }
}

void tr_bind_grad_split(ds_tmodel *m, float *g, float *g2, const bool *to_g2) {
    tr_bind_grad(m, g);
    for (int64_t i = 0; i < m->n_params; i++)
        if (to_g2[i] && m->params[i].off >= 0) *m->params[i].pg = g2 + m->params[i].off;
}

static bool mlp_field(float **pg, ds_tmlp *f) { return pg == &f->gate || pg == &f->up || pg == &f->down; }

bool tr_param_one_product(const ds_tmodel *m, int64_t i) {
    const ds_tparam *p = &m->params[i];
    if (p->layer < 0 || p->layer >= m->cfg.n_layer + m->n_mtp) return false;
    ds_tlayer *g = &((ds_tmodel *)m)->G.layers[p->layer];
    float **pg = p->pg;
    if (p->expert >= 0) return g->experts && mlp_field(pg, &g->experts[p->expert]);
    return pg == &g->q_proj || pg == &g->q_a || pg == &g->q_b || pg == &g->kv_a || pg == &g->kv_b ||
           pg == &g->o_proj || pg == &g->router || pg == &g->eh_proj || mlp_field(pg, &g->mlp) ||
           mlp_field(pg, &g->shared);
}

void ds_tmodel_ep_layout(const ds_tmodel *m, int n, int q, int64_t *off, int64_t *n_rep, int64_t *n_floats) {
    int64_t E = m->cfg.n_routed_experts, lo = 0, hi = 0;
    if (n > 1 && E > 0) {
        int64_t *bound = malloc((size_t)(n + 1) * sizeof *bound);
        if (bound) { ds_ep_bounds(E, n, bound); lo = bound[q]; hi = bound[q + 1]; }
        free(bound);
    }
    int64_t cur = 0;
    /* pass 0: every tensor that is not a routed expert; pass 1: own experts.
     * A tensor keeps its canonical offset mod 16 and its canonical distance
     * to the next one (a gate's up follows it directly). */
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < m->n_params; i++) {
            const ds_tparam *p = &m->params[i];
            int64_t next = i + 1 < m->n_params ? m->params[i + 1].coff : m->n_canon;
            bool expert = n > 1 && p->expert >= 0;
            if (expert != (pass == 1)) continue;
            if (n <= 1) { off[i] = p->coff; continue; }
            if (expert && (p->expert < lo || p->expert >= hi)) { off[i] = -1; continue; }
            cur += ((p->coff - cur) % 16 + 16) % 16;
            off[i] = cur;
            cur += next - p->coff;
        }
        if (pass == 0) *n_rep = n <= 1 ? m->n_canon : cur;
    }
    *n_floats = n <= 1 ? m->n_canon : cur;
}

/* Builds the table for m->cfg, n_mtp and the sharing flags; allocates the
 * gradient arena, and the weight arena too unless shared_w is given. */
static int build(ds_tmodel *m, float *shared_w, ds_err *e) {
    const ds_config *c = &m->cfg;
    int64_t nl = c->n_layer + m->n_mtp;
    m->W.layers = calloc((size_t)nl, sizeof(ds_tlayer));
    m->G.layers = calloc((size_t)nl, sizeof(ds_tlayer));
    if (!m->W.layers || !m->G.layers) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t l = 0; l < nl; l++) {
        if (!ds_config_layer_is_moe(c, l)) continue;
        m->W.layers[l].experts = calloc((size_t)c->n_routed_experts, sizeof(ds_tmlp));
        m->G.layers[l].experts = calloc((size_t)c->n_routed_experts, sizeof(ds_tmlp));
        if (!m->W.layers[l].experts || !m->G.layers[l].experts) return ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    /* the trainer's order: embedding, main layers, final norm and head, MTP layers */
    table_builder tbs = { m, 0, e, 0 }, *tb = &tbs;
    add_kind(tb, DS_TK_EMBED, -1, -1);
    for (int64_t l = 0; l < c->n_layer; l++) add_layer(tb, l);
    add_kind(tb, DS_TK_FINAL_NORM, -1, -1);
    add_kind(tb, DS_TK_LM_HEAD, -1, -1);
    for (int64_t l = c->n_layer; l < nl; l++) add_layer(tb, l);
    if (tb->rc) return tb->rc;
    m->n_canon = m->n_rep = m->n_floats;
    if (m->ep_n > 1) {   /* expert parallel: the replicated tensors, then this rank's experts */
        int64_t *off = malloc((size_t)m->n_params * sizeof *off);
        if (!off) return ds_err_set(e, DS_ENOMEM, "out of memory");
        for (int64_t i = 0; i < m->n_params; i++)
            if (m->params[i].coff % 8) {
                free(off);
                return ds_err_set(e, DS_EUNSUPPORTED, "expert-parallel training: tensor '%s' would start at float %lld, "
                                  "not a multiple of 8 (use dimensions that are multiples of 8)", m->params[i].name,
                                  (long long)m->params[i].coff);
            }
        ds_tmodel_ep_layout(m, m->ep_n, m->ep_rank, off, &m->n_rep, &m->n_floats);
        for (int64_t i = 0; i < m->n_params; i++) m->params[i].off = off[i];
        free(off);
    }
    size_t bytes;
    if (!ds_size_mul((size_t)m->n_floats, sizeof(float), &bytes))
        return ds_err_set(e, DS_ENOMEM, "parameter arena size overflows");
    m->w = shared_w ? NULL : ds_alloc_huge(bytes);
    m->g = ds_alloc_huge(bytes);
    if ((!shared_w && !m->w) || !m->g)
        return ds_err_set(e, DS_ENOMEM, "out of memory for %lld parameters (%.1f MB each for weights and gradients)",
                          (long long)m->n_floats, (double)bytes / 1e6);
    bind(m, shared_w ? shared_w : m->w, m->g);
    m->inv_freq = ds_alloc((size_t)(c->qk_rope_head_dim / 2) * sizeof(float));
    if (!m->inv_freq) return ds_err_set(e, DS_ENOMEM, "out of memory");
    ds_rope_inv_freq(c, m->inv_freq);
    m->attn_scale = (float)ds_config_softmax_scale(c);
    m->load = calloc((size_t)(nl * DS_MAX(c->n_routed_experts, 1)), sizeof(int64_t));
    if (!m->load) return ds_err_set(e, DS_ENOMEM, "out of memory");
    return DS_OK;
}

/* A data-parallel worker: the same table, the master's weights, its own
 * gradients, activations and load counts. */
int tr_worker_clone(const ds_tmodel *master, ds_tmodel **out, ds_err *e) {
    ds_tmodel *w = calloc(1, sizeof *w);
    if (!w) return ds_err_set(e, DS_ENOMEM, "out of memory");
    w->cfg = master->cfg;
    w->n_mtp = master->n_mtp;
    w->mtp_own_embed = master->mtp_own_embed;
    w->mtp_own_head = master->mtp_own_head;
    w->tied_head = master->tied_head;
    w->ep_n = master->ep_n;
    w->ep_rank = master->ep_rank;
    int rc = build(w, master->w, e);
    if (rc) { ds_tmodel_free(w); return rc; }
    *out = w;
    return DS_OK;
}

int tr_workers_reserve(ds_tmodel *m, int64_t n, ds_err *e) {
    while (m->n_workers < n) {
        ds_tmodel **ws = realloc(m->workers, (size_t)(m->n_workers + 1) * sizeof *ws);
        if (!ws) return ds_err_set(e, DS_ENOMEM, "out of memory");
        m->workers = ws;
        int rc = tr_worker_clone(m, &m->workers[m->n_workers], e);
        if (rc) return rc;
        m->n_workers++;
    }
    return DS_OK;
}

static int check_cfg(const ds_config *c, const char *what, ds_err *e) {
    int rc = ds_config_validate(c, what, e);
    if (rc) return rc;
    if (c->arch == DS_ARCH_V4)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: training DeepSeek-V4 (hyper-connections, compressed attention) is not "
                          "supported; inference is", what);
    if (c->n_mtp > 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: training supports MTP depth 1 (num_nextn_predict_layers = %lld)",
                          what, (long long)c->n_mtp);
    return DS_OK;
}

int ds_tmodel_init(ds_tmodel **out, const ds_config *cfg, bool with_mtp, ds_err *e) {
    return ds_tmodel_init_ep(out, cfg, with_mtp, 1, 0, e);
}

int ds_tmodel_init_ep(ds_tmodel **out, const ds_config *cfg, bool with_mtp, int nr, int rank, ds_err *e) {
    *out = NULL;
    int rc = check_cfg(cfg, "model config", e);
    if (rc) return rc;
    if (with_mtp && cfg->n_mtp < 1)
        return ds_err_set(e, DS_EINVAL, "model config: MTP requested but num_nextn_predict_layers is 0");
    ds_tmodel *m = calloc(1, sizeof *m);
    if (!m) return ds_err_set(e, DS_ENOMEM, "out of memory");
    m->cfg = *cfg;
    m->n_mtp = with_mtp ? 1 : 0;
    m->tied_head = cfg->tie_word_embeddings;
    m->ep_n = DS_MAX(nr, 1);
    m->ep_rank = rank;
    if ((rc = build(m, NULL, e))) { ds_tmodel_free(m); return rc; }
    *out = m;
    return DS_OK;
}

void ds_tmodel_free(ds_tmodel *m) {
    if (!m) return;
    int64_t nl = m->cfg.n_layer + m->n_mtp;
    for (int64_t l = 0; l < nl; l++) {
        if (m->W.layers) free(m->W.layers[l].experts);
        if (m->G.layers) free(m->G.layers[l].experts);
    }
    free(m->W.layers);
    free(m->G.layers);
    free(m->params);
    ds_free(m->w);
    ds_free(m->g);
    ds_free(m->inv_freq);
    ds_free(m->rope_cs);
    free(m->load);
    ds_tacts_free(m->acts);
    tr_ep_free(m->ep, m->cfg.n_layer + m->n_mtp);
    for (int i = 0; i < m->n_workers; i++) ds_tmodel_free(m->workers[i]);
    free(m->workers);
    free(m);
}

const ds_tparam *ds_tmodel_find(const ds_tmodel *m, const char *name) {
    for (int64_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

void ds_tmodel_init_weights(ds_tmodel *m, float std, ds_rng *rng) {
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (p->off < 0) {   /* another rank's expert: its draws, so the rest get the one-process values */
            if (p->trainable && p->ndim == 2)
                for (int64_t j = 0; j < p->numel; j++) (void)ds_rng_normal(rng);
            continue;
        }
        float *w = m->w + p->off;
        if (!p->trainable) memset(w, 0, (size_t)p->numel * sizeof(float));
        else if (p->ndim == 1) for (int64_t j = 0; j < p->numel; j++) w[j] = 1.0f;
        else for (int64_t j = 0; j < p->numel; j++) w[j] = std * ds_rng_normal(rng);
    }
}

void ds_tmodel_zero_grad(ds_tmodel *m) { memset(m->g, 0, (size_t)m->n_floats * sizeof(float)); }

void ds_tmodel_reset_load(ds_tmodel *m) {
    int64_t nl = m->cfg.n_layer + m->n_mtp;
    memset(m->load, 0, (size_t)(nl * DS_MAX(m->cfg.n_routed_experts, 1)) * sizeof(int64_t));
}

int64_t ds_tmodel_moe_layers(const ds_tmodel *m, int64_t *idx) {
    int64_t n = 0;
    for (int64_t l = 0; l < m->cfg.n_layer + m->n_mtp; l++)
        if (m->W.layers[l].is_moe) { if (idx) idx[n] = l; n++; }
    return n;
}

/* ---------------------------------------------------------------- loading */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int load_tensor(const ds_tmodel *m, const ds_safetensors *st, const char *dir, const ds_tparam *p,
                       ds_err *e) {
    ds_st_tensor *t = ds_safetensors_find(st, p->name);
    if (!t) return ds_err_set(e, DS_ENOTFOUND, "%s: missing tensor '%s'", dir, p->name);
    if (t->ndim != p->ndim || t->shape[0] != p->shape[0] || (p->ndim == 2 && t->shape[1] != p->shape[1]))
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s' has the wrong shape (expected [%lld%s%lld])", dir, p->name,
                          (long long)p->shape[0], p->ndim == 2 ? ", " : "", p->ndim == 2 ? (long long)p->shape[1] : 0LL);
    t->used = true;
    ds_tensor v;
    ds_st_view(t, &v);
    switch (t->dtype) {
    case DS_DTYPE_F32: case DS_DTYPE_BF16: case DS_DTYPE_F16: break;
    case DS_DTYPE_F8_E4M3: {
        char sname[160];
        snprintf(sname, sizeof sname, "%s_scale_inv", p->name);
        ds_st_tensor *s = ds_safetensors_find(st, sname);
        if (!s) return ds_err_set(e, DS_ENOTFOUND, "%s: FP8 tensor '%s' has no block scale '%s'", dir, p->name, sname);
        int64_t br = m->cfg.fp8 ? m->cfg.fp8_block_r : 128, bc = m->cfg.fp8 ? m->cfg.fp8_block_c : 128;
        int64_t sr = (p->shape[0] + br - 1) / br, sc = (p->shape[1] + bc - 1) / bc;
        if (p->ndim != 2 || s->dtype != DS_DTYPE_F32 || s->ndim != 2 || s->shape[0] != sr || s->shape[1] != sc)
            return ds_err_set(e, DS_EFORMAT, "%s: scale '%s' should be F32 [%lld, %lld]", dir, sname, (long long)sr,
                              (long long)sc);
        s->used = true;
        v.scale = (const float *)s->data;
        v.scale_rows = sr;
        v.scale_cols = sc;
        v.block_r = (int)br;
        v.block_c = (int)bc;
        break;
    }
    default:
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (expected F32, BF16, F16 or F8_E4M3)", dir,
                          p->name, t->dtype_name);
    }
    if (p->off >= 0) ds_tensor_to_f32(&v, m->w + p->off);   /* another rank's expert: not read */
    return DS_OK;
}

int ds_tmodel_load(ds_tmodel **out, const char *dir, ds_err *e) { return ds_tmodel_load_ep(out, dir, 1, 0, e); }

int ds_tmodel_load_ep(ds_tmodel **out, const char *dir, int nr, int rank, ds_err *e) {
    *out = NULL;
    ds_dtype_init();
    ds_config cfg;
    int rc = ds_config_load(&cfg, dir, e);
    if (rc) return rc;
    if ((rc = check_cfg(&cfg, dir, e))) return rc;
    ds_safetensors st;
    memset(&st, 0, sizeof st);
    if ((rc = ds_safetensors_open_dir(&st, dir, e))) return rc;
    ds_tmodel *m = calloc(1, sizeof *m);
    if (!m) { ds_safetensors_close(&st); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    m->cfg = cfg;
    m->ep_n = DS_MAX(nr, 1);
    m->ep_rank = rank;
    m->tied_head = cfg.tie_word_embeddings && !ds_safetensors_find(&st, "lm_head.weight");
    int64_t L = cfg.n_layer;
    m->n_mtp = (cfg.n_mtp >= 1 && ds_tk_hf_layer_stored(&st, L)) ? 1 : 0;
    if (m->n_mtp) {
        char n[128];
        ds_tk_name(&ds_tkinds[DS_TK_MTP_EMBED], false, L, -1, n, sizeof n);
        m->mtp_own_embed = ds_safetensors_find(&st, n) != NULL;
        ds_tk_name(&ds_tkinds[DS_TK_MTP_HEAD], false, L, -1, n, sizeof n);
        m->mtp_own_head = ds_safetensors_find(&st, n) != NULL;
    }
    if ((rc = build(m, NULL, e))) goto fail;
    for (int64_t i = 0; i < m->n_params; i++)
        if ((rc = load_tensor(m, &st, dir, &m->params[i], e))) goto fail;
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const ds_st_tensor *t = &st.tensors[i];
        if (!t->used && !ends_with(t->name, "rotary_emb.inv_freq")) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: unexpected tensor '%s' (not part of a %s model with this config)", dir,
                            t->name, cfg.model_type);
            goto fail;
        }
    }
    ds_safetensors_close(&st);
    *out = m;
    return DS_OK;
fail:
    ds_safetensors_close(&st);
    ds_tmodel_free(m);
    return rc;
}

/* ---------------------------------------------------------------- saving */

static int whole(const ds_tmodel *m, ds_err *e) {
    if (m->ep_n <= 1) return DS_OK;
    return ds_err_set(e, DS_EINVAL, "an expert-parallel model (rank %d of %d) holds only its own experts", m->ep_rank,
                      m->ep_n);
}

int ds_tmodel_save_arena(const ds_tmodel *m, const float *canon, const char *path, const char *metadata_json, ds_err *e) {
    ds_st_write_item *items = calloc((size_t)m->n_params, sizeof *items);
    if (!items) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        items[i] = (ds_st_write_item){ p->name, DS_DTYPE_F32, p->ndim, { p->shape[0], p->shape[1] }, canon + p->coff };
    }
    int rc = ds_safetensors_write(path, items, m->n_params, metadata_json, e);
    free(items);
    return rc;
}

int ds_tmodel_save(const ds_tmodel *m, const char *path, bool grads, const char *metadata_json, ds_err *e) {
    int wrc = whole(m, e);
    if (wrc) return wrc;
    ds_st_write_item *items = calloc((size_t)m->n_params, sizeof *items);
    if (!items) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        items[i].name = p->name;
        items[i].dtype = DS_DTYPE_F32;
        items[i].ndim = p->ndim;
        items[i].shape[0] = p->shape[0];
        items[i].shape[1] = p->shape[1];
        items[i].data = (grads ? m->g : m->w) + p->off;
    }
    int rc = ds_safetensors_write(path, items, m->n_params, metadata_json, e);
    free(items);
    return rc;
}

int ds_tmodel_save_as(const ds_tmodel *m, const char *path, ds_dtype dtype, const char *metadata_json, ds_err *e) {
    if (dtype == DS_DTYPE_F32) return ds_tmodel_save(m, path, false, metadata_json, e);
    int wrc = whole(m, e);
    if (wrc) return wrc;
    if (dtype != DS_DTYPE_BF16 && dtype != DS_DTYPE_F16)
        return ds_err_set(e, DS_EUNSUPPORTED, "can only save F32, BF16 or F16 (not %s)", ds_dtype_name(dtype));
    ds_st_write_item *items = calloc((size_t)m->n_params, sizeof *items);
    uint16_t *half = malloc((size_t)m->n_floats * sizeof(uint16_t));
    if (!items || !half) { free(items); free(half); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        bool keep32 = !p->trainable;
        items[i].name = p->name;
        items[i].dtype = keep32 ? DS_DTYPE_F32 : dtype;
        items[i].ndim = p->ndim;
        items[i].shape[0] = p->shape[0];
        items[i].shape[1] = p->shape[1];
        if (keep32) { items[i].data = m->w + p->off; continue; }
        for (int64_t j = 0; j < p->numel; j++) {
            float v = m->w[p->off + j];
            half[p->off + j] = dtype == DS_DTYPE_BF16 ? ds_f32_to_bf16(v) : ds_f32_to_f16(v);
        }
        items[i].data = half + p->off;
    }
    int rc = ds_safetensors_write(path, items, m->n_params, metadata_json, e);
    free(items);
    free(half);
    return rc;
}

int ds_tmodel_read_params(ds_tmodel *m, const char *path, ds_err *e) {
    int wrc = whole(m, e);
    if (wrc) return wrc;
    ds_safetensors st;
    memset(&st, 0, sizeof st);
    int rc = ds_safetensors_open_file(&st, path, e);
    if (rc) return rc;
    for (int64_t i = 0; i < m->n_params && !rc; i++) {
        const ds_tparam *p = &m->params[i];
        ds_st_tensor *t = ds_safetensors_find(&st, p->name);
        if (!t) { rc = ds_err_set(e, DS_ENOTFOUND, "%s: missing tensor '%s'", path, p->name); break; }
        if (t->dtype != DS_DTYPE_F32 || (uint64_t)(t->end - t->begin) != (uint64_t)p->numel * 4) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: tensor '%s' should be F32 with %lld values", path, p->name,
                            (long long)p->numel);
            break;
        }
        memcpy(m->w + p->off, t->data, (size_t)p->numel * sizeof(float));
    }
    ds_safetensors_close(&st);
    return rc;
}

/* ---------------------------------------------------------------- counts */

/* Matmul weights of layer l a token passes through (K routed experts). */
static int64_t matmul_active(const ds_config *c, int64_t l) {
    return ds_tk_layer_params(c, l, c->num_experts_per_tok, true);
}

int64_t ds_tmodel_active_params(const ds_tmodel *m) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t n = V * D + (m->tied_head ? 0 : V * D) + D;
    for (int64_t l = 0; l < c->n_layer; l++) n += matmul_active(c, l) + 2 * D;  /* + attn and ffn norms */
    return n;
}

double ds_tmodel_step_flops(const ds_tmodel *m, int64_t B, int64_t T) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size, H = c->n_head;
    int64_t Dq = c->qk_nope_head_dim + c->qk_rope_head_dim, Dv = c->v_head_dim;
    /* per token: 2 flops per matmul weight forward, 4 backward */
    double per_tok = 0;
    for (int64_t l = 0; l < c->n_layer; l++) per_tok += (double)matmul_active(c, l);
    per_tok += (double)(V * D);  /* LM head */
    /* causal attention, as computed (full T x T score blocks): QKᵀ and PV */
    double attn = (double)H * (double)T * (double)(Dq + Dv);
    double f = 6.0 * per_tok * (double)(B * T) + 6.0 * attn * (double)(B * T) * (double)c->n_layer;
    if (m->n_mtp && T > 2) {
        int64_t L = c->n_layer;
        double mtp_tok = (double)(matmul_active(c, L) + V * D);  /* the layer, eh_proj, the head */
        f += 6.0 * mtp_tok * (double)(B * (T - 2)) + 6.0 * (double)H * (double)(T - 2) * (double)(Dq + Dv) * (double)(B * (T - 2));
    }
    return f;
}
