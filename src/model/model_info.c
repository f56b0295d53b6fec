/*
 * model_info.c - read-only facts about a loaded model for front ends (the
 * accessors of model.h): configuration, what is stored and how, and the
 * weight bytes a decoded token reads. Front ends use these instead of the
 * struct's fields.
 */
#include "model.h"
#include "../io/gguf.h"

#include <string.h>

const ds_config *ds_model_config(const ds_model *m) { return &m->cfg; }
int64_t ds_model_mtp_stored(const ds_model *m) { return m->n_mtp; }
float ds_model_attn_scale(const ds_model *m) { return m->attn_scale; }

static size_t tensor_bytes(const ds_tensor *t) { return t->data ? t->nbytes : 0; }
static size_t mlp_bytes(const ds_mlp_w *w) { return tensor_bytes(&w->gate) + tensor_bytes(&w->up) + tensor_bytes(&w->down); }

/* Weight bytes read per decoded token: everything but unused experts and
 * all but one embedding row. */
static double decode_bytes(const ds_model *m) {
    const ds_config *c = &m->cfg;
    double b = (double)tensor_bytes(&m->lm_head) + (double)tensor_bytes(&m->embed) / (double)c->vocab_size;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const ds_layer_w *w = &m->layers[l];
        b += (double)(tensor_bytes(&w->q_proj) + tensor_bytes(&w->q_a_proj) + tensor_bytes(&w->q_b_proj) +
                      tensor_bytes(&w->kv_a_proj) + tensor_bytes(&w->kv_b_proj) + tensor_bytes(&w->wk_b) +
                      tensor_bytes(&w->wv_b) + tensor_bytes(&w->o_proj));
        if (!w->is_moe) {
            b += (double)mlp_bytes(&w->mlp);
        } else {
            b += (double)tensor_bytes(&w->router) + (double)mlp_bytes(&w->shared);
            double ex = 0;
            for (int64_t x = 0; x < c->n_routed_experts; x++) ex += (double)mlp_bytes(&w->experts[x]);
            b += ex / (double)c->n_routed_experts * (double)c->num_experts_per_tok;
        }
    }
    return b;
}

void ds_model_storage_info(const ds_model *m, ds_model_storage *s) {
    memset(s, 0, sizeof *s);
    for (int64_t i = 0; i < m->st.n_tensors; i++)
        s->bytes_by_dtype[m->st.tensors[i].dtype] += (int64_t)(m->st.tensors[i].end - m->st.tensors[i].begin);
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
    s->repacked_bytes = (int64_t)m->rp_bytes;
    s->decode_bytes = decode_bytes(m);
}
