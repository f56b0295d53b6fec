/*
 * tmodel.h - a trainable DeepSeek-V2/V3 model: every stored tensor as one
 * fp32 parameter in a flat arena (llm.c style), its gradient in a twin
 * arena, and the forward pass with saved activations plus the backward pass
 * in mirror order.
 *
 * Memory (one allocation per lifetime):
 *   w  (n_floats)  parameters, fp32, every tensor at table[i].off
 *   g  (n_floats)  gradients, same layout: zero_grad is one memset
 *   activations    a bump buffer sized by the first step of a (B, T) shape
 *
 * Each stored tensor is its own parameter under its Hugging Face name. When
 * the MTP module has no embed_tokens / shared_head.head copies of its own,
 * it uses (and accumulates gradient into) the main embedding and LM head,
 * as DeepSeek-V3 does in training (paper §2.2). A tied LM head aliases the
 * embedding the same way. e_score_correction_bias is a parameter that
 * gradients never touch: it moves only by the aux-loss-free sign rule.
 *
 * Losses of one step over B sequences of T tokens (rows n = b·T + t):
 *   ce      = mean over b, t < T-1 of -log p(tok[b,t+1] | tok[b,<=t])
 *   mtp     = mean over b, t < T-2 of -log p_mtp(tok[b,t+2])      (0 without MTP)
 *             MTP row t: x = eh_proj[enorm(Embed tok[b,t+1]) ; hnorm(h[b,t])],
 *             h = the main model's final-normed hidden state (gradient flows
 *             back into the main model through it)
 *   balance = mean over b of Σ_{main MoE layers} Σ_i f_i·P_i over the T
 *             tokens of sequence b: f_i = E/(K·T)·#{t : i selected at t},
 *             P_i = mean_t s_{i,t}/Σ_j s_{j,t}, s the unbiased gate scores
 *   loss    = ce + mtp_weight·mtp + balance_alpha·balance
 * Routing decisions (top-K, groups, the bias) are not differentiable;
 * gradients flow through the gathered gate weights (renormalization and
 * routed_scaling_factor included) and the balance term into the router.
 *
 * Shape letters as in src/model/config.h; N = B·T rows.
 */
#ifndef DS_TMODEL_H
#define DS_TMODEL_H

#include "../model/config.h"
#include "../core/rng.h"
#include "../tensor/dtype.h"

/* One parameter tensor in the arena. */
typedef struct ds_tparam {
    char name[112];        /* Hugging Face tensor name */
    int ndim;
    int64_t shape[2];
    int64_t off, numel;    /* floats, into w / g; off -1: not held here (another rank's expert) */
    int64_t coff;          /* the offset in the one-process (canonical) arena: off unless expert parallel */
    int32_t layer, expert; /* the layer (-1: none) and routed expert (-1: not an expert tensor) */
    bool decay;            /* AdamW weight decay applies (matrices; not norms, biases) */
    bool trainable;        /* false: e_score_correction_bias (sign-rule only) */
    float **pw, **pg;      /* the struct fields that point into w / g */
} ds_tparam;

typedef struct ds_tmlp {
    float *gate, *up;      /* (F, D) */
    float *down;           /* (D, F) */
} ds_tmlp;

typedef struct ds_tlayer {
    float *attn_norm, *ffn_norm;   /* (D) */
    float *q_proj;                 /* (H·Dq, D), only when Rq == 0 */
    float *q_a, *q_a_norm, *q_b;   /* (Rq, D), (Rq), (H·Dq, Rq) */
    float *kv_a, *kv_a_norm;       /* (Rkv+Dr, D), (Rkv) */
    float *kv_b;                   /* (H·(Dn+Dv), Rkv): per head Dn rows W_UK then Dv rows W_UV */
    float *o_proj;                 /* (D, H·Dv) */
    bool is_moe;
    ds_tmlp mlp;                   /* dense, width I */
    float *router;                 /* (E, D) */
    float *router_bias;            /* (E) e_score_correction_bias, or NULL */
    ds_tmlp *experts;              /* [E], width F */
    ds_tmlp shared;                /* width Es·F, gate NULL when Es == 0 */
    /* MTP module only */
    float *enorm, *hnorm, *head_norm;  /* (D) */
    float *eh_proj;                /* (D, 2D) */
    float *embed, *head;           /* (V, D) own copies, or the main ones */
} ds_tlayer;

typedef struct ds_tweights {
    float *embed;          /* (V, D) */
    float *final_norm;     /* (D) */
    float *lm_head;        /* (V, D); == embed when tied */
    ds_tlayer *layers;     /* [L + n_mtp] */
} ds_tweights;

typedef struct ds_tacts ds_tacts;

typedef struct ds_tmodel {
    ds_config cfg;
    int64_t n_mtp;         /* MTP layers in the parameter set: 0 or 1 */
    bool mtp_own_embed, mtp_own_head, tied_head;
    ds_tparam *params;     /* table, in arena order */
    int64_t n_params;      /* table entries */
    int64_t n_floats;      /* arena size */
    float *w, *g;          /* arenas (64-byte aligned) */
    ds_tweights W, G;      /* pointers into w and g */
    float *inv_freq;       /* (Dr/2) YaRN-adjusted */
    float *rope_cs;        /* (rope_cap, Dr/2, 2) cos, sin of pos·θ_i (fp32, as ds_rope_apply) */
    int64_t rope_cap;
    float attn_scale;
    ds_tacts *acts;        /* activations, grown on demand */
    /* expert-load statistics, accumulated by every training forward (not
     * no_grad evaluation) until reset:
     * load[l·E + i] = tokens routed to expert i in layer l (l < L + n_mtp) */
    int64_t *load;
    /* data-parallel workers 1.. (worker 0 is this model): clones sharing w */
    struct ds_tmodel **workers;
    int n_workers;
    /* Expert parallel (ds_tmodel_init_ep / ds_tmodel_load_ep with n > 1):
     * this process is rank ep_rank of ep_n and holds only the routed experts
     * it owns (ds_ep_bounds). The arena is then [0, n_rep) every tensor that
     * is not a routed expert, in table order (the same layout on every
     * rank), then [n_rep, n_floats) its own experts, layer by layer; other
     * ranks' expert tensors have off = -1 and NULL pointers. Every tensor
     * keeps its canonical offset modulo 16 (coff), so vector loops meet
     * the same alignment as in one process. Without: ep_n = 1, n_rep =
     * n_floats, off = coff. */
    int ep_n, ep_rank;
    int64_t n_rep;         /* floats of the replicated region */
    int64_t n_canon;       /* floats of the one-process arena */
    struct tr_ep *ep;      /* the expert exchange's state (dp.c), NULL unless ep_n > 1 */
} ds_tmodel;

/* ------------------------------------------------------------ lifecycle */

/* A model with every parameter zero, for `cfg` (validated). with_mtp:
 * include the MTP module (cfg->n_mtp must be >= 1); it shares the main
 * embedding and head. */
int ds_tmodel_init(ds_tmodel **out, const ds_config *cfg, bool with_mtp, ds_err *e);
/* Loads a Hugging Face folder: config.json + safetensors in any stored
 * dtype (F32/BF16/F16, FP8 E4M3 dequantized with its block scales). Every
 * stored tensor becomes a parameter; unknown tensors are an error. */
int ds_tmodel_load(ds_tmodel **out, const char *dir, ds_err *e);
/* The same holding only the routed experts of rank `rank` of n (see
 * ep_n above; n = 1: the plain model). The load reads only those experts'
 * tensors (mapped: other experts' bytes are not touched). Refused when a
 * tensor would not start at a multiple of 8 floats in the one-process
 * arena (the update's vector loops would then meet other alignments). */
int ds_tmodel_init_ep(ds_tmodel **out, const ds_config *cfg, bool with_mtp, int n, int rank, ds_err *e);
int ds_tmodel_load_ep(ds_tmodel **out, const char *dir, int n, int rank, ds_err *e);
/* The arena offsets rank q of n would give each table entry (off[n_params],
 * -1: not held) and its region sizes: what ds_tmodel_init_ep lays out. */
void ds_tmodel_ep_layout(const ds_tmodel *m, int n, int q, int64_t *off, int64_t *n_rep, int64_t *n_floats);
void ds_tmodel_free(ds_tmodel *m);

/* DeepSeek's init: matrices N(0, std²) (V3 §4.2 uses 0.006), norms 1,
 * e_score_correction_bias 0. */
void ds_tmodel_init_weights(ds_tmodel *m, float std, ds_rng *rng);

/* Table entry by name, or NULL. */
const ds_tparam *ds_tmodel_find(const ds_tmodel *m, const char *name);

/* Writes every parameter (or gradient: grads = true) as F32 safetensors
 * under its name. Atomic. Not for an expert-parallel model (it lacks other
 * ranks' experts: the trainer gathers them, ds_tmodel_save_arena). */
int ds_tmodel_save(const ds_tmodel *m, const char *path, bool grads, const char *metadata_json, ds_err *e);
/* The same from a one-process-layout arena (n_canon floats, tensor i at
 * params[i].coff). */
int ds_tmodel_save_arena(const ds_tmodel *m, const float *canon, const char *path, const char *metadata_json, ds_err *e);
/* Writes the parameters in dtype (F32, BF16 round-to-nearest-even, or F16);
 * e_score_correction_bias stays F32 as in DeepSeek's checkpoints. Atomic. */
int ds_tmodel_save_as(const ds_tmodel *m, const char *path, ds_dtype dtype, const char *metadata_json, ds_err *e);
/* Reads parameter values back from a safetensors file written by
 * ds_tmodel_save (same names and shapes, F32). */
int ds_tmodel_read_params(ds_tmodel *m, const char *path, ds_err *e);

/* Parameter counts: total in the table; active per token (main model,
 * embedding and head included); flops of one training step. */
int64_t ds_tmodel_active_params(const ds_tmodel *m);
/* Matmul FLOPs of forward + backward for B sequences of T tokens,
 * attention scores included, MTP included when present. */
double ds_tmodel_step_flops(const ds_tmodel *m, int64_t B, int64_t T);

/* ------------------------------------------------------------ training */

/* A per-token loss in place of the cross-entropy (the policy-gradient hook
 * GRPO uses, src/train/grpo.c). After the forward, weights() gets
 * lp[n] = log p(tok[b, t+1] | tok[b, <=t]) at row n = b·T + t (row T-1 of each
 * sequence: 0) for the sequences seq0 .. seq0+B-1 of the whole batch and writes
 * w[n] (N = B·T floats); the step then accumulates Σ_n w[n]·∂(−lp[n])/∂θ.
 * With the hook (ds_tmodel_step_weighted) grad_scale does not apply, the MTP module is skipped and
 * loss/ce/mtp stay 0 (the hook keeps its own totals, per sequence: the
 * data-parallel workers call it concurrently, each for its own sequences). */
typedef struct ds_token_loss {
    void (*weights)(void *ud, int64_t seq0, int64_t B, int64_t T, const float *lp, float *w);
    void *ud;
} ds_token_loss;

typedef struct ds_loss_opts {
    float mtp_weight;      /* λ */
    float balance_alpha;   /* α */
    float grad_scale;      /* gradient of (scale · loss) is accumulated; 1/accum */
    bool no_grad;          /* forward only (evaluation) */
} ds_loss_opts;

typedef struct ds_losses {
    double loss, ce, mtp, balance;
} ds_losses;

/* One forward + backward over B sequences of T tokens (tokens[B·T]);
 * accumulates gradient into m->g (+=) and routing counts into m->load.
 * Token ids are range-checked. With several threads and B >= 2 the batch is
 * split into contiguous groups of sequences, one per thread, each run
 * single-threaded on its own gradient buffer; the buffers are then summed
 * in a fixed order (one synchronization per call, deterministic for a given
 * thread count). Otherwise every kernel is parallel inside. */
int ds_tmodel_step(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o,
                   ds_losses *out, ds_err *e);
/* The same with the per-token hook tl in place of the cross-entropy and MTP
 * (o: no_grad and balance_alpha apply). */
int ds_tmodel_step_weighted(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o,
                            const ds_token_loss *tl, ds_losses *out, ds_err *e);

void ds_tmodel_zero_grad(ds_tmodel *m);
void ds_tmodel_reset_load(ds_tmodel *m);

/* Number of MoE layers (main + MTP) and their layer indices. */
int64_t ds_tmodel_moe_layers(const ds_tmodel *m, int64_t *idx /* may be NULL */);

#endif
