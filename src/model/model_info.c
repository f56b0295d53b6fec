/*
 * model_info.c - read-only facts about a loaded model for front ends (the
 * accessors of model.h): configuration, what is stored and how, and the
 * weight bytes a decoded token reads. Front ends use these instead of the
 * struct's fields.
 */
#include "model.h"
#include "../io/gguf.h"
#include "../dist/dist.h"

#include <string.h>

const ds_config *ds_model_config(const ds_model *m) { return &m->cfg; }
int64_t ds_model_mtp_stored(const ds_model *m) { return m->n_mtp; }
int64_t ds_model_hidden_width(const ds_model *m) { return m->cfg.n_streams * m->cfg.hidden_size; }
float ds_model_attn_scale(const ds_model *m) { return m->attn_scale; }

static size_t tensor_bytes(const ds_tensor *t) { return t->data ? t->nbytes : 0; }
static size_t mlp_bytes(const ds_mlp_w *w) { return tensor_bytes(&w->gate) + tensor_bytes(&w->up) + tensor_bytes(&w->down); }

const char *const ds_decode_part_names[DS_DEC_PARTS] = { "output head", "embedding row", "attention", "dense FFN",
                                                          "shared experts", "routed experts", "router" };

/* Weight bytes read per decoded token: everything but unused experts and
 * all but one embedding row; by part and by weight type (those of a routed
 * expert: the average expert, times the experts used per token). */
static void add(ds_model_storage *s, int part, const ds_tensor *t, double share) {
    if (!t->data) return;
    double b = (double)t->nbytes * share;
    s->decode_part[part] += b;
    if (t->dtype >= 0 && t->dtype < DS_DTYPE_COUNT) s->decode_dtype[t->dtype] += b;
}
static void add_mlp(ds_model_storage *s, int part, const ds_mlp_w *w, double share) {
    add(s, part, &w->gate, share), add(s, part, &w->up, share), add(s, part, &w->down, share);
}

static void decode_bytes(const ds_model *m, ds_model_storage *s) {
    const ds_config *c = &m->cfg;
    add(s, DS_DEC_HEAD, &m->lm_head, 1.0);
    add(s, DS_DEC_EMBED, &m->embed, 1.0 / (double)c->vocab_size);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const ds_layer_w *w = &m->layers[l];
        const ds_tensor *at[] = { &w->q_proj, &w->q_a_proj, &w->q_b_proj, &w->kv_a_proj, &w->kv_b_proj, &w->wk_b, &w->wv_b, &w->o_proj };
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) add(s, DS_DEC_ATTN, at[i], 1.0);
        if (!w->is_moe) {
            add_mlp(s, DS_DEC_DENSE, &w->mlp, 1.0);
        } else {
            add(s, DS_DEC_ROUTER, &w->router, 1.0);
            add_mlp(s, DS_DEC_SHARED, &w->shared, 1.0);
            for (int64_t x = 0; x < c->n_routed_experts; x++)
                add_mlp(s, DS_DEC_ROUTED, &w->experts[x], (double)c->num_experts_per_tok / (double)c->n_routed_experts);
        }
    }
    s->decode_bytes = 0;
    for (int p = 0; p < DS_DEC_PARTS; p++) s->decode_bytes += s->decode_part[p];
}

/* Weight bytes this process holds: every tensor bound here (routed experts
 * of other ranks are not), norm vectors excluded. */
static double bound_bytes(const ds_model *m) {
    const ds_config *c = &m->cfg;
    double b = (double)(tensor_bytes(&m->lm_head) + tensor_bytes(&m->embed));
    for (int64_t l = 0; l < c->n_layer + m->n_mtp; l++) {
        const ds_layer_w *w = &m->layers[l];
        b += (double)(tensor_bytes(&w->q_proj) + tensor_bytes(&w->q_a_proj) + tensor_bytes(&w->q_b_proj) +
                      tensor_bytes(&w->kv_a_proj) + tensor_bytes(&w->kv_b_proj) + tensor_bytes(&w->wk_b) +
                      tensor_bytes(&w->wv_b) + tensor_bytes(&w->o_proj) + tensor_bytes(&w->eh_proj) +
                      tensor_bytes(&w->embed) + tensor_bytes(&w->head));
        b += (double)(mlp_bytes(&w->mlp) + tensor_bytes(&w->router) + mlp_bytes(&w->shared));
        if (w->experts)
            for (int64_t x = 0; x < c->n_routed_experts; x++) b += (double)mlp_bytes(&w->experts[x]);
    }
    return b;
}

uint64_t ds_model_fingerprint(const ds_model *m) {
    uint64_t h = ds_dist_hash(DS_DIST_HASH0, &m->cfg, sizeof m->cfg);
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        const ds_st_tensor *t = &m->st.tensors[i];
        h = ds_dist_hash(h, t->name, strlen(t->name) + 1);
        h = ds_dist_hash(h, t->dtype_name, sizeof t->dtype_name);
        h = ds_dist_hash(h, t->shape, sizeof t->shape);
        h = ds_dist_hash(h, &t->begin, sizeof t->begin);
        h = ds_dist_hash(h, &t->end, sizeof t->end);
    }
    for (int64_t i = 0; m->gguf && i < m->gguf->n_tensors; i++) {
        const ds_gguf_tensor *t = &m->gguf->tensors[i];
        h = ds_dist_hash(h, t->name, strlen(t->name) + 1);
        h = ds_dist_hash(h, &t->type, sizeof t->type);
        h = ds_dist_hash(h, t->ne, sizeof t->ne);
        h = ds_dist_hash(h, &t->offset, sizeof t->offset);
        h = ds_dist_hash(h, &t->nbytes, sizeof t->nbytes);
    }
    return h;
}

void ds_model_storage_info(const ds_model *m, ds_model_storage *s) {
    memset(s, 0, sizeof *s);
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        const ds_st_tensor *t = &m->st.tensors[i];
        bool fp4 = m->cfg.arch == DS_ARCH_V4 && (!strcmp(t->dtype_name, "I8") || !strcmp(t->dtype_name, "U8"));
        s->bytes_by_dtype[fp4 ? DS_DTYPE_F4_E2M1 : t->dtype] += (int64_t)(t->end - t->begin);  /* V4: packed e2m1 */
    }
    if (m->gguf) {  /* a .gguf file: its tensors by ggml type */
        s->gguf = true;
        s->gguf_version = m->gguf->version;
        s->n_files = 1;
        s->n_tensors = m->gguf->n_tensors;
        for (int64_t i = 0; i < m->gguf->n_tensors; i++) {
            const ds_ggml_type_info *ti = ds_ggml_type(m->gguf->tensors[i].type);
            s->bytes_by_dtype[ti ? ti->dtype : DS_DTYPE_COUNT] += (int64_t)m->gguf->tensors[i].nbytes;
        }
    } else {
        s->n_files = m->st.n_files;
        s->n_tensors = m->st.n_tensors;
    }
    s->mapped_bytes = m->file_bytes;
    s->repacked_bytes = (int64_t)(m->rp_bytes - m->rp_plain);   /* the x8 copies (the routers beside them are not counted) */
    s->repack_skipped_bytes = (int64_t)m->rp_skipped;
    s->repack_budget = m->rp_budget;
    decode_bytes(m, s);
    s->bound_bytes = bound_bytes(m);
    s->expert_lo = m->expert_lo, s->expert_hi = m->expert_hi;
}
