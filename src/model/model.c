/*
 * model.c - opening a model folder: config, safetensors, binding every
 * tensor of the table (tensors.h) by its Hugging Face name into its field
 * with shape/dtype/scale checks (only the owned routed experts), the RoPE
 * table, parameter counts. DeepSeek-V4 folders may instead use the
 * release's own names (detected, tensors.h: ds_tk_v4_official_name) and its
 * formats: FP8 with e8m0 `.scale` tensors, FP4 e2m1 experts (fp4.h), and
 * its MTP block mtp.<i>.* (as layer L + i). The forward pass lives in forward.c.
 */
#include "model.h"
#include "model_internal.h"
#include "../tensor/fp4.h"
#include "rope.h"
#include "tensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- binding */

typedef struct binder {
    ds_model *m;
    ds_err *e;
    int64_t n_params;
    int64_t bytes;
} binder;

static const char *file_of(binder *b, const ds_st_tensor *t) {
    return b->m->st.files[t->file].map.path;
}

/* The block scale beside weight `name`: transformers' "<name>_scale_inv",
 * or the V4 release's "<name without .weight>.scale"; NULL if neither. */
static ds_st_tensor *find_scale(binder *b, const char *name, char *sname, size_t n) {
    snprintf(sname, n, "%s_scale_inv", name);
    ds_st_tensor *s = ds_safetensors_find(&b->m->st, sname);
    size_t len = strlen(name);
    if (!s && len > 7 && !strcmp(name + len - 7, ".weight")) {
        snprintf(sname, n, "%.*s.scale", (int)(len - 7), name);
        s = ds_safetensors_find(&b->m->st, sname);
    }
    if (!s) snprintf(sname, n, "%s_scale_inv", name);
    return s;
}

/* Binds scale tensor s [sr, sc] as out's fp32 scale view: F32 borrowed from
 * the file, F8_E8M0 (powers of two) converted into an owned fp32 copy. */
static int bind_scale(binder *b, ds_st_tensor *s, const char *sname, int64_t sr, int64_t sc, int br, int bc,
                      ds_tensor *out) {
    bool e8 = !strcmp(s->dtype_name, "F8_E8M0");
    if (s->dtype != DS_DTYPE_F32 && !e8)
        return ds_err_set(b->e, DS_EFORMAT, "%s: scale '%s' has dtype %s, expected F32 or F8_E8M0", file_of(b, s), sname,
                          s->dtype_name);
    if (s->ndim != 2 || s->shape[0] != sr || s->shape[1] != sc)
        return ds_err_set(b->e, DS_EFORMAT, "%s: scale '%s' has the wrong shape, expected [%lld, %lld] for %dx%d blocks",
                          file_of(b, s), sname, (long long)sr, (long long)sc, br, bc);
    s->used = true;
    if (e8) {
        ds_model *m = b->m;
        float **grown = realloc(m->owned_scales, (size_t)(m->n_owned_scales + 1) * sizeof *grown);
        if (!grown) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
        m->owned_scales = grown;
        float *f = ds_alloc((size_t)(sr * sc) * sizeof(float));
        if (!f) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
        m->owned_scales[m->n_owned_scales++] = f;
        const uint8_t *p = (const uint8_t *)s->data;
        for (int64_t i = 0; i < sr * sc; i++) {
            if (p[i] == 0xff)
                return ds_err_set(b->e, DS_EFORMAT, "%s: scale '%s' [%lld, %lld] is NaN (e8m0 0xff)", file_of(b, s), sname,
                                  (long long)(i / sc), (long long)(i % sc));
            f[i] = ds_e8m0_to_f32(p[i]);
        }
        out->scale = f;
    } else {
        out->scale = (const float *)s->data;
    }
    out->scale_rows = sr;
    out->scale_cols = sc;
    out->block_r = br;
    out->block_c = bc;
    b->bytes += (int64_t)(s->end - s->begin);
    return DS_OK;
}

#define DS_FP4_BLOCK 32   /* e2m1 values per e8m0 scale in the V4 release's experts */

/* A 2-D weight [d0, d1]: F32/BF16/F16; F8_E4M3 with block scales (fp32
 * `<name>_scale_inv` or V4's e8m0 `<stem>.scale`); or V4's FP4 experts, I8/U8
 * [d0, d1/2] of packed e2m1 pairs with e8m0 scales [d0, d1/32] (fp4.h). */
static int bind_matrix(binder *b, const char *name, int64_t d0, int64_t d1, ds_tensor *out) {
    ds_st_tensor *t = ds_safetensors_find(&b->m->st, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->m->dir, name);
    bool fp4 = !strcmp(t->dtype_name, "I8") || !strcmp(t->dtype_name, "U8");
    if (fp4 && b->m->cfg.arch != DS_ARCH_V4)
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (packed FP4 is DeepSeek-V4's)", file_of(b, t),
                          name, t->dtype_name);
    int64_t want1 = fp4 ? d1 / 2 : d1;
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != want1 || (fp4 && d1 % 2)) {
        char got[128] = "";
        for (int i = 0; i < t->ndim && i < 4; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' has shape [%s], expected [%lld, %lld]%s", file_of(b, t),
                          name, got, (long long)d0, (long long)want1, fp4 ? " (packed FP4: two values per byte)" : "");
    }
    t->used = true;
    ds_st_view(t, out);
    int rc;
    char sname[512];
    switch (t->dtype) {
    case DS_DTYPE_F32: case DS_DTYPE_BF16: case DS_DTYPE_F16: break;
    case DS_DTYPE_F8_E4M3: {
        ds_st_tensor *s = find_scale(b, name, sname, sizeof sname);
        if (!s)
            return ds_err_set(b->e, DS_ENOTFOUND, "%s: FP8 tensor '%s' has no block scale '%s'", file_of(b, t), name, sname);
        int64_t br = b->m->cfg.fp8 ? b->m->cfg.fp8_block_r : 128, bc = b->m->cfg.fp8 ? b->m->cfg.fp8_block_c : 128;
        if ((rc = bind_scale(b, s, sname, (d0 + br - 1) / br, (d1 + bc - 1) / bc, (int)br, (int)bc, out))) return rc;
        break;
    }
    default:
        if (fp4) {
            ds_st_tensor *s = find_scale(b, name, sname, sizeof sname);
            if (!s)
                return ds_err_set(b->e, DS_ENOTFOUND, "%s: FP4 tensor '%s' has no scale '%s'", file_of(b, t), name, sname);
            if (strcmp(s->dtype_name, "F8_E8M0") != 0)
                return ds_err_set(b->e, DS_EFORMAT, "%s: FP4 scale '%s' has dtype %s, expected F8_E8M0", file_of(b, s), sname,
                                  s->dtype_name);
            int64_t sc = (d1 + DS_FP4_BLOCK - 1) / DS_FP4_BLOCK;
            if (s->ndim != 2 || s->shape[0] != d0 || s->shape[1] != sc)
                return ds_err_set(b->e, DS_EFORMAT, "%s: FP4 scale '%s' has the wrong shape, expected [%lld, %lld] (one per "
                                  "%d values)", file_of(b, s), sname, (long long)d0, (long long)sc, DS_FP4_BLOCK);
            /* kept as stored (mmap), like the packed values: 1/64 of a byte per weight, not 1/8 as fp32 */
            s->used = true;
            out->dtype = DS_DTYPE_F4_E2M1;
            out->shape[1] = d1;
            out->scale_e8m0 = (const uint8_t *)s->data;
            out->scale_rows = d0, out->scale_cols = sc, out->block_r = 1, out->block_c = DS_FP4_BLOCK;
            b->bytes += (int64_t)(s->end - s->begin);
            break;
        }
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, BF16, F16, F8_E4M3%s",
                          file_of(b, t), name, t->dtype_name, b->m->cfg.arch == DS_ARCH_V4 ? " or packed FP4 (I8)" : "");
    }
    b->n_params += d0 * d1;
    b->bytes += (int64_t)(t->end - t->begin);
    return DS_OK;
}

/* A 1-D vector [d0] in any float dtype, converted to an owned fp32 array. */
static int bind_vector(binder *b, const char *name, int64_t d0, float **out) {
    ds_st_tensor *t = ds_safetensors_find(&b->m->st, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->m->dir, name);
    if (t->ndim != 1 || t->shape[0] != d0)
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' should be a vector of %lld values", file_of(b, t), name,
                          (long long)d0);
    if (t->dtype != DS_DTYPE_F32 && t->dtype != DS_DTYPE_BF16 && t->dtype != DS_DTYPE_F16)
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; expected F32, BF16 or F16", file_of(b, t),
                          name, t->dtype_name);
    t->used = true;
    ds_tensor v;
    ds_st_view(t, &v);
    *out = ds_alloc((size_t)d0 * sizeof(float));
    if (!*out) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    ds_tensor_to_f32(&v, *out);
    b->n_params += d0;
    b->bytes += (int64_t)(t->end - t->begin);
    return DS_OK;
}

/* An integer table [d0, d1] (I32/I64) with values in [0, hi), into an owned int32 array. */
static int bind_index(binder *b, const char *name, int64_t d0, int64_t d1, int64_t hi, int32_t **out) {
    ds_st_tensor *t = ds_safetensors_find(&b->m->st, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->m->dir, name);
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' should have shape [%lld, %lld]", file_of(b, t), name,
                          (long long)d0, (long long)d1);
    if (t->dtype != DS_DTYPE_I32 && t->dtype != DS_DTYPE_I64)
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; expected I32 or I64", file_of(b, t), name,
                          t->dtype_name);
    t->used = true;
    *out = ds_alloc((size_t)(d0 * d1) * sizeof(int32_t));
    if (!*out) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < d0 * d1; i++) {
        int64_t v;
        if (t->dtype == DS_DTYPE_I64) memcpy(&v, t->data + i * 8, 8);
        else { int32_t v32; memcpy(&v32, t->data + i * 4, 4); v = v32; }
        if (v < 0 || v >= hi)
            return ds_err_set(b->e, DS_ERANGE, "%s: tensor '%s' [%lld, %lld] = %lld is not an expert id in [0, %lld)",
                              file_of(b, t), name, (long long)(i / d1), (long long)(i % d1), (long long)v, (long long)hi);
        (*out)[i] = (int32_t)v;
    }
    b->n_params += d0 * d1;
    b->bytes += (int64_t)(t->end - t->begin);
    return DS_OK;
}

static bool has(binder *b, const char *name) { return ds_safetensors_find(&b->m->st, name) != NULL; }

/* Binds kind k of layer l (expert x) into dst, a ds_tensor or float * field;
 * an optional kind (need MAYBE) only when stored. */
static int bind_kind(binder *b, const ds_tkind *k, int64_t l, int64_t x, ds_tneed need, void *dst) {
    char name[256];
    int64_t s[3];
    ds_tk_name(k, false, l, x, name, sizeof name);
    if (b->m->v4_official) {
        char hf[256];
        snprintf(hf, sizeof hf, "%s", name);
        ds_tk_v4_official_name(hf, b->m->cfg.n_layer, name, sizeof name);
    }
    if (need == DS_TN_MAYBE && !has(b, name)) return DS_OK;
    ds_tk_shape(k, &b->m->cfg, s);
    if (k->flags & DS_TF_INDEX) return bind_index(b, name, s[0], s[1], b->m->cfg.n_routed_experts, dst);
    return k->ndim == 1 ? bind_vector(b, name, s[0], dst) : bind_matrix(b, name, s[0], s[1], dst);
}

/* Binds every tensor of layer l (-1: the model's own) by the table. Routed
 * experts outside [expert_lo, expert_hi) are checked and counted, not bound. */
static int bind_layer(binder *b, int64_t l) {
    ds_model *m = b->m;
    const ds_config *c = &m->cfg;
    int64_t E = c->n_routed_experts;
    int rc;
    if (l >= 0 && (m->layers[l].is_moe = ds_config_layer_is_moe(c, l)))
        if (!(m->layers[l].experts = calloc((size_t)E, sizeof(ds_mlp_w)))) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    for (int i = 0; i < DS_TK_COUNT; i++) {
        const ds_tkind *k = &ds_tkinds[i];
        ds_tneed need = ds_tk_need(k, c, l, 0);
        if (!need) continue;
        if (k->scope != DS_TS_EXPERT) {
            if ((rc = bind_kind(b, k, l, -1, need, ds_tk_field(k, m, l, -1)))) return rc;
            continue;
        }
        for (int64_t x = 0; x < E; x++) {
            ds_tensor unowned;
            bool own = x >= m->expert_lo && x < m->expert_hi;
            if ((rc = bind_kind(b, k, l, x, need, own ? ds_tk_field(k, m, l, x) : &unowned))) return rc;
        }
    }
    if (l >= 0 && m->layers[l].is_moe && c->topk_method != DS_TOPK_NOAUX_TC) {
        char n[256];
        ds_tk_name(&ds_tkinds[DS_TK_ROUTER_BIAS], false, l, -1, n, sizeof n);
        if (has(b, n)) return ds_err_set(b->e, DS_EFORMAT, "%s: unexpected tensor '%s' (topk_method is not noaux_tc)", m->dir, n);
    }
    return DS_OK;
}

static bool ignorable(const char *name) {
    size_t n = strlen(name);
    const char *suffix = "rotary_emb.inv_freq";
    size_t sl = strlen(suffix);
    return n >= sl && strcmp(name + n - sl, suffix) == 0;
}

/* Which names a V4 folder uses: transformers' (model.embed_tokens.weight,
 * model.layers.N...; an MTP layer would be model.layers.<L+i>.) or the
 * release's (embed.weight, layers.N..., mtp.N...). A folder must use one;
 * a tensor of the other naming is an error that names it. */
static bool official_only(const char *n) {
    return !strncmp(n, "layers.", 7) || !strncmp(n, "mtp.", 4) || !strcmp(n, "embed.weight") ||
           !strcmp(n, "norm.weight") || !strncmp(n, "hc_head_", 8);
}

/* Tensors of the release we do not use: MTP layers beyond the config's
 * num_nextn_predict_layers (mtp.N.*, N >= n_mtp), and a router bias on a
 * hash-routed layer (it routes by tid2eid; llama.cpp's deepseek4 converter
 * drops these biases too). */
static bool v4_release_unused(const ds_model *m, const char *name) {
    if (!m->v4_official) return false;
    long long l;
    int n = 0;
    if (sscanf(name, "mtp.%lld.%n", &l, &n) == 1 && n > 0) return l >= m->cfg.n_mtp;
    n = 0;
    if (sscanf(name, "layers.%lld.ffn.gate.bias%n", &l, &n) == 1 && name[n] == '\0' && l >= 0 && l < m->cfg.n_layer)
        return m->cfg.ffn_kind[l] == DS_FFN_HASH_MOE;
    return false;
}

/* Whether the release's folder stores MTP layer i (mtp.<i>.*) */
static bool v4_mtp_stored(const ds_safetensors *st, int64_t i) {
    char prefix[64];
    int len = snprintf(prefix, sizeof prefix, "mtp.%lld.", (long long)i);
    for (int64_t k = 0; k < st->n_tensors; k++)
        if (strncmp(st->tensors[k].name, prefix, (size_t)len) == 0) return true;
    return false;
}

static int v4_naming(ds_model *m, ds_err *e) {
    const ds_st_tensor *off = NULL, *hf = NULL;
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        const ds_st_tensor *t = &m->st.tensors[i];
        if (official_only(t->name)) { if (!off) off = t; }
        else if (!strncmp(t->name, "model.", 6)) { if (!hf) hf = t; }
    }
    if (off && hf)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s' (%s) uses DeepSeek-V4's release names but '%s' (%s) uses "
                          "transformers' (model. prefix); a folder must use one naming", m->dir, off->name,
                          m->st.files[off->file].map.path, hf->name, m->st.files[hf->file].map.path);
    m->v4_official = off != NULL;
    return DS_OK;
}

int ds_model_expert_range(ds_model *m, const ds_model_opts *o, ds_err *e) {
    int64_t E = m->cfg.n_routed_experts, lo = o ? o->expert_lo : 0, hi = o && o->expert_hi >= 0 ? o->expert_hi : E;
    if (o && o->n_ranks > 1) {
        if (o->rank < 0 || o->rank >= o->n_ranks)
            return ds_err_set(e, DS_EINVAL, "%s: rank %d is not one of %d", m->dir, o->rank, o->n_ranks);
        if (E > 0 && o->n_ranks > E)
            return ds_err_set(e, DS_EINVAL, "%s: %d processes for %lld routed experts: every process must own at "
                              "least one (run at most %lld)", m->dir, o->n_ranks, (long long)E, (long long)E);
        m->own_bound = calloc((size_t)o->n_ranks + 1, sizeof *m->own_bound);
        if (!m->own_bound) return ds_err_set(e, DS_ENOMEM, "out of memory");
        for (int q = 0; q <= o->n_ranks; q++) m->own_bound[q] = E * q / o->n_ranks;
        m->n_ranks = o->n_ranks, m->rank_experts = m->own_bound, m->distributed = true;
        m->expert_servers = o->expert_servers;
        m->experts_only = o->expert_servers && o->rank > 0;
        lo = m->own_bound[o->rank], hi = m->own_bound[o->rank + 1];
    }
    if (lo < 0 || hi > E || (E > 0 && lo >= hi) || (E == 0 && lo != 0))
        return ds_err_set(e, DS_EINVAL, "%s: expert range [%lld, %lld) is not a non-empty part of the model's %lld routed experts",
                          m->dir, (long long)lo, (long long)hi, (long long)E);
    m->expert_lo = lo, m->expert_hi = hi;
    return DS_OK;
}

int ds_model_rope_init(ds_model *m, ds_err *e) {
    const ds_config *c = &m->cfg;
    m->inv_freq = ds_alloc((size_t)(c->qk_rope_head_dim / 2) * sizeof(float));
    if (!m->inv_freq) return ds_err_set(e, DS_ENOMEM, "out of memory");
    if (c->arch == DS_ARCH_V4) {   /* main: plain rope_theta; compress: compress_rope_theta (+ YaRN) */
        ds_config rc_main = *c, rc_cmp = *c;
        rc_main.yarn = false;
        rc_cmp.rope_theta = c->compress_rope_theta;
        m->inv_freq_cmp = ds_alloc((size_t)(c->qk_rope_head_dim / 2) * sizeof(float));
        if (!m->inv_freq_cmp) return ds_err_set(e, DS_ENOMEM, "out of memory");
        ds_rope_inv_freq(&rc_main, m->inv_freq);
        ds_rope_inv_freq(&rc_cmp, m->inv_freq_cmp);
        m->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
    } else {
        ds_rope_inv_freq(c, m->inv_freq);
        m->attn_scale = (float)ds_config_softmax_scale(c);
    }
    return DS_OK;
}

int ds_model_open(ds_model **out, const char *dir, ds_err *e) { return ds_model_open_opts(out, dir, NULL, e); }

int ds_model_open_opts(ds_model **out, const char *dir, const ds_model_opts *o, ds_err *e) {
    *out = NULL;
    if (ds_path_is_gguf(dir)) return ds_model_open_gguf(out, dir, o, e);
    ds_dtype_init();
    ds_model *m = calloc(1, sizeof *m);
    if (!m) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc;
    m->dir = strdup(dir);
    if (!m->dir) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    if ((rc = ds_config_load(&m->cfg, dir, e))) goto fail;
    if ((rc = ds_model_expert_range(m, o, e))) goto fail;
    if ((rc = ds_safetensors_open_dir(&m->st, dir, e))) goto fail;
    if (m->cfg.arch == DS_ARCH_V4 && (rc = v4_naming(m, e))) goto fail;
    const ds_config *c = &m->cfg;
    binder b = { m, e, 0, 0 };
    m->layers = calloc((size_t)(c->n_layer + c->n_mtp), sizeof *m->layers);
    if (!m->layers) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    if ((rc = bind_layer(&b, -1))) goto fail;
    if (!ds_tensor_present(&m->lm_head)) m->lm_head = m->embed;  /* tied */
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((rc = bind_layer(&b, l))) goto fail;
    m->n_mtp = 0;
    for (int64_t l = c->n_layer; l < c->n_layer + c->n_mtp; l++) {
        if (!(m->v4_official ? v4_mtp_stored(&m->st, l - c->n_layer) : ds_tk_hf_layer_stored(&m->st, l))) break;
        if ((rc = bind_layer(&b, l))) goto fail;
        m->n_mtp++;
    }
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        ds_st_tensor *t = &m->st.tensors[i];
        if (!t->used && !ignorable(t->name) && !v4_release_unused(m, t->name)) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: unexpected tensor '%s' (not part of a %s model with this config)",
                            m->st.files[t->file].map.path, t->name, c->model_type);
            goto fail;
        }
    }
    m->n_params = b.n_params;
    m->file_bytes = b.bytes;
    if ((rc = ds_model_rope_init(m, e))) goto fail;
    if ((rc = ds_model_repack(m, e))) goto fail;
    *out = m;
    return DS_OK;
fail:
    ds_model_close(m);
    return rc;
}

/* The owned fp32 vectors of layer l (-1: the model's own): the table's 1-D kinds. */
static void free_vectors(ds_model *m, int64_t l) {
    for (int i = 0; i < DS_TK_COUNT; i++) {
        const ds_tkind *k = &ds_tkinds[i];
        if ((k->ndim == 1 || (k->flags & DS_TF_INDEX)) && (k->scope == DS_TS_MODEL) == (l < 0)) {
            void **p = ds_tk_field(k, m, l, -1);
            ds_free(*p);
            *p = NULL;   /* rows sharing a field (V4's CSA / HCA compressor) free it once */
        }
    }
}

void ds_model_close(ds_model *m) {
    if (!m) return;
    if (m->layers)
        for (int64_t l = 0; l < m->cfg.n_layer + m->cfg.n_mtp; l++) {
            free_vectors(m, l);
            free(m->layers[l].experts);
        }
    free(m->layers);
    free(m->own_bound);
    free_vectors(m, -1);
    ds_free(m->inv_freq);
    ds_free(m->inv_freq_cmp);
    ds_model_repack_free(m);
    for (int64_t i = 0; i < m->n_owned_scales; i++) ds_free(m->owned_scales[i]);
    free(m->owned_scales);
    ds_model_gguf_release(m);
    ds_safetensors_close(&m->st);
    free(m->dir);
    free(m);
}

/* --------------------------------------------------------------- counts */

void ds_model_param_counts(const ds_model *m, ds_param_counts *pc) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t embed = V * D, head = (m->lm_head.data == m->embed.data) ? 0 : V * D;
    int64_t main_total = embed + head + D, active = embed + head + D;
    if (c->arch == DS_ARCH_V4) {   /* the hyper-connection head: hc_fn, hc_base, hc_scale */
        int64_t hc = c->n_streams;
        main_total += hc * hc * D + hc + 1;
        active += hc * hc * D + hc + 1;
    }
    for (int64_t l = 0; l < c->n_layer; l++) {
        main_total += ds_tk_layer_params(c, l, c->n_routed_experts, false);
        active += ds_tk_layer_params(c, l, c->num_experts_per_tok, false);
    }
    pc->main = main_total;
    pc->total = m->n_params;
    pc->mtp = m->n_params - main_total;
    pc->active = active;
    pc->active_no_embed = active - embed - head;
}
