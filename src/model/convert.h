/*
 * convert.h - writing a model as a GGUF file in llama.cpp's `deepseek2`
 * layout (V3.2: `deepseek32`, V4: `deepseek4` with FP4 experts as MXFP4;
 * the inverse of model_gguf.c), and random GGUF models of a given
 * shape for benchmarks.
 *
 * The source is any opened ds_model (a Hugging Face folder in BF16/F16/F32
 * or block-FP8, or another GGUF), so conversion and re-quantization are the
 * same operation. Each tensor is produced row by row as fp32 (FP8 scales
 * applied, kv_b_proj split and W_UK transposed per head like llama.cpp's
 * converter) and quantized with the reference quantizers of tensor/quant.h;
 * a tensor whose type already matches is copied byte for byte.
 */
#ifndef DS_CONVERT_H
#define DS_CONVERT_H

#include "model.h"

/* Called after each written piece; `tensor` names the tensor in progress. */
typedef void (*ds_convert_progress)(void *ud, int64_t done_bytes, int64_t total_bytes, const char *tensor);

typedef struct ds_convert_opts {
    /* Output types per tensor class (those with a quantizer:
     * ds_quant_has_quantizer; random models may use any type). A row length
     * that is not a multiple of the type's block falls back like llama.cpp:
     * Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, the other 256-value types ->
     * IQ4_NL, then F16.
     * Norms, the router and its bias are always F32. */
    ds_dtype attn;        /* q / kv_a / k_b / v_b / kv_b / o projections */
    ds_dtype ffn;         /* dense FFN, shared experts, MTP eh_proj */
    ds_dtype experts;     /* routed experts */
    ds_dtype embed;       /* token_embd (and an MTP embed copy) */
    ds_dtype head;        /* output (and an MTP head copy) */
    bool legacy_kv_b;     /* write attn_kv_b instead of attn_k_b + attn_v_b */
    bool drop_mtp;        /* leave the MTP layers out */
    bool fp4_as_mxfp4;    /* V4: FP4 e2m1 routed experts are written MXFP4 (lossless) whatever `experts` says;
                           * experts = DS_DTYPE_MXFP4 asks for that and fails on other sources */
    const char *name;     /* general.name, or NULL */
    const char *tokenizer_dir;  /* folder with tokenizer.json to embed, or NULL (tokenizer model "none") */
    const struct ds_gguf *tokenizer_gguf; /* else: a GGUF whose tokenizer.* keys are copied (re-quantizing) */
    uint64_t split_max_bytes;   /* > 0: split into PREFIX-00001-of-0000N.gguf parts of at most this many bytes
                                 * (llama.cpp gguf-split layout; a tensor larger than it gets a part of its own) */
    char *first_part;           /* optional out: the first file written (path, or PREFIX-00001-of-0000N.gguf) */
    size_t first_part_cap;
    ds_convert_progress progress;
    void *progress_ud;
} ds_convert_opts;

/* Fills o with defaults for a main type t: everything t, head Q6_K when t
 * is a block type under 6 bits, no MTP dropping. */
void ds_convert_opts_default(ds_convert_opts *o, ds_dtype t);

/* Parses a type name ("q4_k", "Q8_0", "f16", ...); DS_DTYPE_COUNT if unknown. */
ds_dtype ds_convert_type_from_name(const char *s);

/* Writes m to path atomically (each part when split; path then names the
 * first part, PREFIX-00001-of-0000N.gguf, or the PREFIX.gguf it is made from). */
int ds_model_write_gguf(const ds_model *m, const char *path, const ds_convert_opts *o, ds_err *e);

/* Writes a model of config c with random weights (no source): quantized
 * blocks are filled with random codes and small scales directly, so a
 * V2-Lite-shaped file is written at disk speed. Norms are 1, router F32. */
int ds_write_random_gguf(const ds_config *c, const char *path, const ds_convert_opts *o, uint64_t seed, ds_err *e);

#endif
