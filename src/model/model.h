/*
 * model.h - a loaded DeepSeek-V2/V3 model and its forward pass.
 *
 * Architecture (per layer, pre-norm residual; spec §2):
 *   h += MLA(RMSNorm(h))      multi-head latent attention, absorbed form,
 *                             cache = normalized latent c (Rkv) + roped key (Dr)
 *   h += FFN(RMSNorm(h))      dense SwiGLU for l < first_k_dense_replace,
 *                             else DeepSeekMoE (shared + routed experts)
 * then RMSNorm and the LM head. V3 checkpoints carry an MTP module as layer L.
 *
 * Weights stay in the memory-mapped safetensors files (FP8 stays FP8);
 * only the small norm vectors and router biases are converted to fp32.
 * Shape letters are defined in config.h.
 *
 * After ds_model_open the model is read-only: forward passes take a const
 * ds_model and keep their mutable state in a ds_ctx (below) and the KV
 * caches, so one model serves any number of threads and sessions
 * (runtime/session.h). Front ends read it through the accessors below.
 */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include "config.h"
#include "../io/safetensors.h"
#include "../tensor/tensor.h"

typedef struct ds_mlp_w {
    ds_tensor gate;     /* (F, D)  w1 */
    ds_tensor up;       /* (F, D)  w3 */
    ds_tensor down;     /* (D, F)  w2 */
} ds_mlp_w;

typedef struct ds_layer_w {
    float *attn_norm;   /* (D) */
    float *ffn_norm;    /* (D) */
    /* attention */
    ds_tensor q_proj;   /* (H*Dq, D)   only when Rq == 0 */
    ds_tensor q_a_proj; /* (Rq, D) */
    float *q_a_norm;    /* (Rq) */
    ds_tensor q_b_proj; /* (H*Dq, Rq) */
    ds_tensor kv_a_proj;/* (Rkv+Dr, D) */
    float *kv_a_norm;   /* (Rkv) */
    ds_tensor kv_b_proj;/* (H*(Dn+Dv), Rkv): per head Dn rows W_UK then Dv rows W_UV */
    ds_tensor wk_b;     /* (H, Rkv, Dn) W_UKᵀ per head: split form (GGUF attn_k_b); */
    ds_tensor wv_b;     /* (H, Dv, Rkv) W_UV per head (GGUF attn_v_b); used when present */
    ds_tensor o_proj;   /* (D, H*Dv) */
    /* lightning indexer (DSA layers, V3.2; dsa.c) */
    ds_tensor idx_q_b;  /* (Hi*Di, Rq) wq_b, reads the normed q LoRA latent */
    ds_tensor idx_k;    /* (Di, D) wk */
    float *idx_k_norm;  /* (Di) LayerNorm weight */
    float *idx_k_norm_b;/* (Di) LayerNorm bias */
    ds_tensor idx_w;    /* (Hi, D) weights_proj: per-head weights of the index score */
    /* DeepSeek-V4 (v4attn.c, hc.c; q_a_proj, q_a_norm, q_b_proj, o_proj (wo_b), idx_q_b, idx_w reused) */
    ds_tensor hc_attn_fn, hc_ffn_fn;     /* ((2+hc)·hc, hc·D) hyper-connection mixers */
    float *hc_attn_base, *hc_ffn_base;   /* ((2+hc)·hc) */
    float *hc_attn_scale, *hc_ffn_scale; /* (3): pre, post, comb */
    float *sinks;       /* (H) per-head attention sink logits */
    ds_tensor kv_proj;  /* (Dh, D) the shared K=V head */
    float *kv_norm;     /* (Dh) */
    ds_tensor o_a_proj; /* (G·Ro, H·Dh/G) grouped output projection, group g = rows [g·Ro, (g+1)·Ro) */
    ds_tensor cmp_kv, cmp_gate; /* (Cw, D) compressor; Cw = 2·Dh (CSA: series a | b) or Dh (HCA) */
    ds_tensor cmp_ape;  /* (rate, Cw) position bias added to the gate */
    float *cmp_norm;    /* (Dh) */
    ds_tensor icmp_kv, icmp_gate; /* (2·Di, D) the CSA indexer's compressor */
    ds_tensor icmp_ape; /* (rate, 2·Di) */
    float *icmp_norm;   /* (Di) */
    int32_t *tid2eid;   /* (V, K) hash-routed layers: the experts of each token id */
    /* feed-forward */
    bool is_moe;
    ds_mlp_w mlp;       /* dense, width I */
    ds_tensor router;   /* (E, D) */
    float *router_bias; /* (E) e_score_correction_bias, or NULL */
    ds_mlp_w *experts;  /* [E], width F */
    ds_mlp_w shared;    /* width Es*F; absent when Es == 0 */
    /* MTP module only */
    float *enorm, *hnorm, *head_norm;  /* (D) */
    ds_tensor eh_proj;  /* (D, 2D): input cat[enorm(emb), hnorm(h)] */
    ds_tensor embed;    /* (V, D) own copy, or absent (use the main one) */
    ds_tensor head;     /* (V, D) own copy, or absent (use the main one) */
    /* DeepSeek-V4's MTP block (forward.c; enorm, hnorm, head_norm = its norm reused) */
    ds_tensor e_proj, h_proj;  /* (D, D) the next token's normed embedding; each normed stream of h */
    ds_tensor hc_head_fn;      /* (hc, hc·D) its own stream collapse before the norm */
    float *hc_head_base;       /* (hc) */
    float *hc_head_scale;      /* (1) */
} ds_layer_w;

typedef struct ds_model {
    ds_config cfg;
    ds_safetensors st;
    char *dir;
    ds_tensor embed;      /* (V, D) */
    float *final_norm;    /* (D) */
    ds_tensor lm_head;    /* (V, D) */
    ds_layer_w *layers;   /* [L + n_mtp] */
    int64_t expert_lo, expert_hi; /* routed experts this process owns, [lo, hi): all of them
                                     ([0, E)) in one process; experts[x] is indexed by the
                                     global id x and is empty outside the range */
    int64_t n_ranks;      /* processes the routed experts are spread over; 0: this one only */
    const int64_t *rank_experts; /* [n_ranks + 1] ascending: rank q owns experts [rank_experts[q],
                                    rank_experts[q+1]) (moe_exchange.c); caller-owned */
    int64_t *own_bound;   /* rank_experts when the model split itself (ds_model_opts.n_ranks), owned */
    bool distributed;     /* the ranks are the processes of the MPI job (src/dist; n_ranks ==
                             ds_dist_size()); false: every rank is served in this process */
    bool expert_servers;  /* with distributed: rank 0 alone runs the forward and sends each
                             rank its routed rows; ranks > 0 run ds_model_serve_experts */
    bool experts_only;    /* an expert server (rank > 0): only its routed experts are ever
                             used, so only they are repacked (repack_model.c) */
    int64_t n_mtp;        /* MTP layers actually present (0 if not stored) */
    float *inv_freq;      /* (Dr/2) YaRN-adjusted rotary frequencies (V4: sliding layers, rope_theta) */
    float *inv_freq_cmp;  /* (Dr/2) V4 only: CSA/HCA layers, compress_rope_theta (YaRN if configured) */
    ds_tensor hc_head_fn; /* V4: (hc, hc·D) the final stream collapse */
    float *hc_head_base;  /* (hc) */
    float *hc_head_scale; /* (1) */
    float attn_scale;     /* softmax scale incl. mscale² */
    int64_t n_params;     /* stored parameters (scales excluded), all experts */
    int64_t file_bytes;   /* bytes of tensor data in the files, all experts */
    struct ds_gguf *gguf; /* the mapped file when opened from a .gguf (model_gguf.c), else NULL */
    void *rp_buf;         /* x8 copies of the quantized matmul weights and the routers as stored (repack_model.c), or NULL */
    size_t rp_bytes;
    size_t rp_plain;      /* of which routers copied as stored (not repacked) */
    size_t rp_skipped;    /* bytes not repacked: the copy would not fit in rp_budget (repack_model.c) */
    int64_t rp_budget;    /* memory this process could still use at load (memlimit.h) */
    float **owned_scales; /* block scales converted at load (V4's e8m0 -> fp32), [n_owned_scales] */
    int64_t n_owned_scales;
    bool v4_official;     /* V4 folder with the release's own tensor names (embed.weight, layers.N...) */
} ds_model;

/* Opens a Hugging Face model folder: config.json + safetensors (sharded or
 * not). Every tensor is checked (presence, shape, dtype, FP8 scale grid);
 * unexpected tensors are an error. The tensors are those of the table in
 * tensors.h. */
int ds_model_open(ds_model **out, const char *dir, ds_err *e);
void ds_model_close(ds_model *m);

typedef struct ds_model_opts {
    /* Routed experts this process owns, [expert_lo, expert_hi); expert_hi < 0:
     * through the last. Only those are bound (as views; nothing is copied); the others are
     * still checked for presence and shape, and counted in n_params. */
    int64_t expert_lo, expert_hi;
    /* n_ranks > 1 (then expert_lo/hi are ignored): the routed experts are split
     * over the n_ranks processes of the MPI job in contiguous ranges as even as
     * they go (rank q owns [E*q/n, E*(q+1)/n)); this is rank `rank`, and the
     * model exchanges expert rows over the job (ds_model.distributed). */
    int n_ranks, rank;
    /* With n_ranks > 1: "workers are expert servers" (serve) instead of every
     * rank running the same forward: rank 0 alone runs attention, dense
     * layers, shared experts, router and caches, and per MoE layer sends
     * each rank the routed rows for its experts (ds_model_serve_experts). */
    bool expert_servers;
} ds_model_opts;
#define DS_MODEL_OPTS_DEFAULT ((ds_model_opts){ 0, -1, 0, 0, false })

/* Expert servers (ds_model_opts.expert_servers), moe_exchange.c. On ranks
 * > 0: answers rank 0's expert requests (routed rows of one MoE layer in,
 * this rank's expert outputs back) until rank 0 sends the stop; DS_OK then.
 * A request this rank cannot run is answered with its error (rank 0's
 * forward fails with it) and the loop goes on. On rank 0, once no more
 * forwards will run: tells every server to stop. */
int ds_model_serve_experts(const ds_model *m, ds_err *e);
int ds_model_stop_expert_servers(ds_err *e);

/* ds_model_open with options (NULL: DS_MODEL_OPTS_DEFAULT), for a folder or a .gguf. */
int ds_model_open_opts(ds_model **out, const char *path, const ds_model_opts *o, ds_err *e);

/* Opens a GGUF file in llama.cpp's `deepseek2` layout (model_gguf.c): the
 * same structs, tensors as views into the mapping (quantized types stay
 * quantized). ds_model_open_opts dispatches here when ds_path_is_gguf(path). */
int ds_model_open_gguf(ds_model **out, const char *path, const ds_model_opts *o, ds_err *e);
bool ds_path_is_gguf(const char *path);     /* a non-directory path ending in .gguf */
void ds_model_gguf_release(ds_model *m);    /* ds_model_close calls it; no-op for folders */

/* Accessors for front ends (model_info.c): what a model is, without its fields. */
const ds_config *ds_model_config(const ds_model *m);
int64_t ds_model_mtp_stored(const ds_model *m);   /* MTP layers present (0 if not stored) */
int64_t ds_model_hidden_width(const ds_model *m);  /* floats per hidden row (ds_model_forward): D, V4 hc·D */
float ds_model_attn_scale(const ds_model *m);     /* softmax scale incl. mscale² */

/* Parts of the weight bytes a decoded token reads (ds_model_storage). */
enum { DS_DEC_HEAD, DS_DEC_EMBED, DS_DEC_ATTN, DS_DEC_DENSE, DS_DEC_SHARED, DS_DEC_ROUTED, DS_DEC_ROUTER, DS_DEC_PARTS };
extern const char *const ds_decode_part_names[DS_DEC_PARTS];

typedef struct ds_model_storage {
    bool gguf;                  /* one .gguf file (else a safetensors folder) */
    uint32_t gguf_version;
    int n_files;
    int64_t n_tensors;
    int64_t bytes_by_dtype[DS_DTYPE_COUNT + 1];  /* stored bytes per dtype; [DS_DTYPE_COUNT]: other GGUF types */
    int64_t mapped_bytes;       /* tensor data memory-mapped */
    int64_t repacked_bytes;     /* x8 copies of quantized weights made at load (0: none) */
    int64_t repack_skipped_bytes; /* copies not made: they would not fit in repack_budget */
    int64_t repack_budget;      /* memory the process could still use at load (bytes) */
    double decode_bytes;        /* weight bytes read per decoded token (unused experts and
                                   all but one embedding row excluded) */
    double decode_part[DS_DEC_PARTS];            /* decode_bytes by part: output head, embedding row,
                                                    attention, dense FFN, shared experts, routed
                                                    experts (the average K of E), router */
    double decode_dtype[DS_DTYPE_COUNT];         /* decode_bytes by weight type */
    double bound_bytes;         /* weight bytes this process holds (other ranks' experts excluded) */
    int64_t expert_lo, expert_hi; /* the routed experts it owns */
} ds_model_storage;
void ds_model_storage_info(const ds_model *m, ds_model_storage *s);

/* A hash of the configuration and the tensor index (names, types, shapes,
 * offsets): the ranks of an MPI job compare it to know they opened the same
 * model. */
uint64_t ds_model_fingerprint(const ds_model *m);

/* Parameter counts: total stored (main model + MTP), active per token. */
typedef struct ds_param_counts {
    int64_t total, main, mtp;
    int64_t active;             /* per token, main model, incl. embed + head */
    int64_t active_no_embed;    /* excl. embedding and head */
} ds_param_counts;
void ds_model_param_counts(const ds_model *m, ds_param_counts *pc);

/* -------------------------------------------------------------- KV cache */

/* One sequence's cache: per layer, per position, the normalized latent c
 * (Rkv floats) followed by the roped key k_pe (Dr floats). Nothing else:
 * no per-head K or V. Layers [0, L) are the main model; the MTP layers use
 * their own position counter.
 * Storage is fp32 by default; ds_kvcache_set_type selects a quantized row
 * format (kvcache.c), dequantized one layer at a time for attention:
 *   Q8:  per 32 values an fp32 scale (max|x|/127) + 32 int8     (1.125 B/value)
 *   FP8: per 64 values an fp32 scale (max|x|/448) + 64 e4m3     (1.0625 B/value)
 *   BF16: each value rounded to bf16 (nearest even, subnormals to 0) (2 B/value);
 *         flash decode reads these rows directly (ds_mla_attn_step_bf16)
 *   I8:  one fp32 scale (max|x|/127) per row part — c, k_pe, a DSA row's index
 *        key — then the parts' int8 code sums (int32), then W int8 codes
 *        (DS_KV_I8_HEAD + W bytes: 1.04 B/value); flash decode reads them
 *        directly, int8 x int8 (ds_mla_attn_step_i8) */
typedef enum ds_kv_type { DS_KV_F32 = 0, DS_KV_Q8 = 1, DS_KV_FP8 = 2, DS_KV_BF16 = 3, DS_KV_I8 = 4 } ds_kv_type;
/* I8 rows: DS_KV_I8_HEAD (tensor/ops.h) bytes of 3 fp32 scales and 3 int32
 * code sums (parts [0, Rkv), [Rkv, Rkv + Dr), [Rkv + Dr, width); an empty
 * part: scale 0), then the codes */

typedef struct ds_kvcache {
    int64_t n_layer;      /* L + n_mtp */
    int64_t *width;       /* [n_layer] floats per row, by the layer's attention kind
                             (ds_config_kv_width; MLA: Rkv + Dr) */
    int64_t cap;          /* allocated positions per layer */
    int64_t max_ctx;      /* hard limit */
    int64_t n_past;       /* main-model positions filled */
    int64_t mtp_n_past;   /* MTP positions filled */
    float **kv;           /* [n_layer] -> (cap, width[l]), fp32 storage only */
    ds_kv_type type;      /* DS_KV_F32 unless set */
    uint8_t **kvq;        /* [n_layer] -> (cap, row_bytes[l]), quantized storage only */
    size_t *row_bytes;    /* [n_layer] bytes per stored row; NULL in hand-built fp32 views */
    int64_t i8_part[2];   /* I8 rows: where parts 1 and 2 start (Rkv, Rkv + Dr; set by init) */
    struct ds_v4state *v4; /* [n_layer] DeepSeek-V4's compact state (kvcache_v4.c: the window as a
                              ring, compressed entries, the open windows' raw rows); NULL for MLA.
                              Its layers have no per-position rows (kv/kvq stay NULL). */
    int64_t v4_slack;     /* V4: ring rows kept beyond what the math reads, so truncating back up
                             to this many positions stays exact (DS_V4_SLACK unless set) */
} ds_kvcache;

/* Default ring slack of a V4 cache (positions one can truncate back). */
#define DS_V4_SLACK 64

int ds_kvcache_init(ds_kvcache *c, const ds_model *m, int64_t max_ctx, ds_err *e);
void ds_kvcache_free(ds_kvcache *c);
void ds_kvcache_clear(ds_kvcache *c);
/* Drops positions >= n (keeps a prefix) and returns the positions kept:
 * n, or 0 for a V4 cache whose rings no longer hold what position n needs
 * (n further back than v4_slack plus the window): the caller refills. */
int64_t ds_kvcache_truncate(ds_kvcache *c, int64_t n);
/* True when truncating to n would keep n positions (always for MLA caches). */
bool ds_kvcache_can_truncate(const ds_kvcache *c, int64_t n);
/* V4: sets the ring slack of an empty cache (before its first use). */
int ds_kvcache_set_v4_slack(ds_kvcache *c, int64_t slack, ds_err *e);
/* For benchmarks: makes an empty cache hold n positions of random rows
 * (uniform in [-0.5, 0.5)) without running the model: decode's cost
 * depends on the cache's size, not its values (bench --synthetic-depth). */
int ds_kvcache_fill_synthetic(ds_kvcache *c, int64_t n, uint64_t seed, ds_err *e);
/* Bytes the cache holds now (allocated storage, all layers). */
int64_t ds_kvcache_bytes(const ds_kvcache *c);
/* DeepSeek-V4: bytes layer l's compact cache holds after n positions with
 * ring slack `slack` (rings + n / rate entries; kvcache_v4.c; for `info`). */
int64_t ds_v4cache_layer_bytes(const ds_config *cfg, int64_t l, int64_t n, int64_t slack);
/* Makes dst hold src's first n positions (main layers; MTP rows are
 * dropped). For prefix caching: dst must belong to the same model.
 * V4: only an n that ds_kvcache_can_truncate(src, n) allows (else DS_ERANGE). */
int ds_kvcache_copy_prefix(ds_kvcache *dst, const ds_kvcache *src, int64_t n, ds_err *e);
/* Bytes per token of cache (all main layers), as stored (fp32). */
int64_t ds_kvcache_bytes_per_token(const ds_model *m);
/* Bytes of one position over layers [0, n_layers), in the cache's storage type. */
int64_t ds_kvcache_bytes_per_pos(const ds_kvcache *c, int64_t n_layers);
/* The row width shared by all layers, or -1 if the layers differ. */
int64_t ds_kvcache_uniform_width(const ds_kvcache *c);

/* Selects the storage of an empty cache (right after init). */
int ds_kvcache_set_type(ds_kvcache *c, ds_kv_type t, ds_err *e);
/* "f32", "q8", "fp8", "bf16", "i8" -> type; -1 if unknown. */
int ds_kv_type_from_name(const char *s);
const char *ds_kv_type_name(ds_kv_type t);
/* Bytes of one stored row of `width` values. */
size_t ds_kv_row_bytes(ds_kv_type t, int64_t width);
/* Stores row (width[l] floats) at position pos of layer l (quantizing if needed). */
void ds_kvcache_write_row(ds_kvcache *c, int64_t l, int64_t pos, const float *row);
/* Rows [0, n) of layer l as fp32: the storage itself (F32) or dequantized
 * into scratch (n x width[l] floats, caller-owned). */
const float *ds_kvcache_rows_f32(const ds_kvcache *c, int64_t l, int64_t n, float *scratch);

/* -------------------------------------------------------------- forward */

/* A forward context: the mutable state of forward passes (activation
 * arena, per-thread kernel scratch, thread count), grown on first use and
 * kept, so a steady decode loop allocates nothing. The model itself is
 * read-only: one ds_model may serve any number of contexts on as many
 * threads at once; one context serves one thread at a time (llama.cpp's
 * model / context split). Every forward function takes one; NULL makes a
 * context for that call only (one-shot tools; allocates every call). */
typedef struct ds_ctx ds_ctx;
int ds_ctx_new(ds_ctx **out, ds_err *e);
void ds_ctx_free(ds_ctx *x);
/* Threads of this context's forward passes; 0 (the default): the process
 * default (ds_threads_set). */
void ds_ctx_set_threads(ds_ctx *x, int n);
/* A prefill of `cache` in several forward calls (chunks) up to `rows` cache
 * rows: until _end, this context keeps each MLA layer's decompressed keys and
 * values of the expanded form (long chunks, mla.c) so a chunk decompresses
 * only its own rows, not all visible ones again (the same results; at most
 * `budget` bytes, 0 = 2 GiB; layers past it decompress as before). The
 * cache's rows below its n_past must not change in between (no truncation).
 * _end frees the store (ds_ctx_free does too). */
int ds_ctx_prefill_begin(ds_ctx *x, const ds_model *m, ds_kvcache *cache, int64_t rows, size_t budget, ds_err *e);
void ds_ctx_prefill_end(ds_ctx *x);

/* A run of new tokens of one sequence, appended at cache->n_past. */
typedef struct ds_seq_chunk {
    ds_kvcache *cache;
    const int32_t *tokens;
    int64_t n;
    bool all_logits;      /* logits for every token (else only the last) */
} ds_seq_chunk;

/* Runs the main model over all chunks together (one batch). Writes logits
 * for each chunk in order: n rows if all_logits, else 1 row, each V floats.
 * If `hidden` is non-NULL it receives every token's row of the MTP module's
 * input, ds_model_hidden_width(m) floats each: the final-normed hidden state
 * (D) for V2/V3, the residual streams before the collapse (hc·D) for V4.
 * Token ids are range-checked. */
int ds_model_forward(const ds_model *m, ds_ctx *x, ds_seq_chunk *chunks, int n_chunks, float *logits,
                     float *hidden, ds_err *e);

/* MTP module (layer L): row i uses the main model's hidden row h[i]
 * (ds_model_hidden_width floats, as ds_model_forward writes them) and the
 * embedding of next_tokens[i] (the token after the
 * one that produced h[i]); rows are appended at cache->mtp_n_past. Writes
 * logits (n × V) predicting the token after next_tokens[i]; logits may be
 * NULL to only extend the MTP cache (skips the head). */
int ds_model_forward_mtp(const ds_model *m, ds_ctx *x, ds_kvcache *cache, const float *h,
                         const int32_t *next_tokens, int64_t n, float *logits, ds_err *e);

/* Debug/check path: the same forward with naive (decompressed K/V)
 * attention and no cache, over one sequence. logits: T × V. */
int ds_model_forward_naive(const ds_model *m, ds_ctx *x, const int32_t *tokens, int64_t T, float *logits,
                           ds_err *e);

#endif
