/*
 * tok_internal.h - the ds_tokenizer struct and the interfaces between the
 * tokenizer's files: bpe.c (model + cache), pretok.c (pre-tokenizer),
 * tokenizer.c (loading, added tokens, encode/decode), stream.c, chat.c,
 * bpe_train.c (training, which reuses the pre-tokenizer via tok_ctx.on_piece).
 * Not a public header.
 */
#ifndef DS_TOK_INTERNAL_H
#define DS_TOK_INTERNAL_H

#include "tokenizer.h"
#include "regex.h"

#include <jansson.h>
#include <pthread.h>

/* ------------------------------------------------------------- strings */

/* Append-only byte pool addressed by offsets (so growth may move it). */
typedef struct tok_pool {
    char *p;
    size_t n, cap;
} tok_pool;
/* Appends and returns the offset, or -1 on OOM / over 4 GiB. */
int64_t tok_pool_add(tok_pool *pool, const void *s, size_t n);

uint64_t tok_hash(const void *s, size_t n);

/* -------------------------------------------------------- added tokens */

typedef struct added_tok {
    uint32_t off, len; /* content in t->strs */
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} added_tok;

/* Byte trie of added-token contents for leftmost-longest matching. */
typedef struct trie_node {
    int32_t child, sibling; /* first child, next sibling (-1 none) */
    int32_t tok;            /* index into t->added ending here, or -1 */
    uint8_t byte;
} trie_node;
typedef struct tok_trie {
    trie_node *nodes;
    int32_t n, cap;
    int32_t root[256]; /* child of the root per first byte, -1 none */
} tok_trie;

/* ----------------------------------------------------- pre-tokenizer */

enum { PT_SPLIT = 1, PT_BYTELEVEL = 2 };
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
#define PT_MAX_STEPS 16

typedef struct pretok_step {
    int kind;
    tok_regex *re;       /* Split pattern, or the GPT-2 regex for ByteLevel(use_regex) */
    int behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
} pretok_step;

/* ------------------------------------------------------------- model */

typedef struct merge_ent {
    uint64_t key; /* (a << 32) | b; UINT64_MAX empty */
    uint32_t rank;
    int32_t new_id;
} merge_ent;

/* Pre-token cache: bytes -> ids. */
typedef struct tok_cache {
    pthread_mutex_t mu;
    uint32_t *slots;  /* entry index + 1, 0 empty */
    uint32_t mask;
    struct cache_ent { uint64_t h; uint32_t key_off, key_len, val_off, val_n; } *ents;
    uint32_t n, max;
    tok_pool data;
} tok_cache;

#define TOK_ID_ADDED 1u
#define TOK_ID_SPECIAL 2u
#define TOK_ID_USED 4u

struct ds_tokenizer {
    char what[256];           /* source, for messages */
    tok_pool strs;            /* token strings and decoded bytes */
    int64_t n_ids;            /* max id + 1 */
    uint32_t *tok_off, *tok_len; /* per id: string as in tokenizer.json (added wins) */
    uint32_t *model_off, *model_len; /* per id: model.vocab string (for vhash) */
    uint32_t *dec_off, *dec_len; /* per id: decoded bytes */
    uint8_t *flags;           /* per id: TOK_ID_* */

    /* BPE model */
    int64_t n_model;          /* entries in model.vocab */
    int32_t *vhash;           /* model vocab: string -> id, open addressing */
    uint32_t vmask;
    merge_ent *mhash;
    uint32_t mmask;
    int32_t byte_id[256];     /* id of each byte's ByteLevel char, -1 if absent */
    int32_t byte_fb[256][2];  /* byte_fallback ids for that char's UTF-8 bytes */
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;           /* -1: none */

    /* added tokens */
    added_tok *added;
    int32_t n_added;
    tok_trie trie_raw, trie_norm; /* normalized=false / normalized=true tokens */
    bool any_single_word;
    tok_regex *re_word;       /* one Oniguruma \w character, for single_word */

    /* pre-tokenizer */
    pretok_step steps[PT_MAX_STEPS];
    int n_steps;

    /* post-processor (single sequence): prefix ids + A + suffix ids */
    int32_t *pp_ids;
    int n_pp_prefix, n_pp_suffix;

    int32_t bos_id, eos_id;
    bool add_bos, add_eos;
    char *chat_template;

    tok_cache cache;
};

/* Per-call encoding state (scratch buffers reused across pieces). */
typedef struct bpe_sym { int32_t id, prev, next; } bpe_sym;
typedef struct bpe_heap_ent { uint32_t rank, pos; int32_t new_id; } bpe_heap_ent;

typedef struct tok_span_vec { size_t *v; size_t n, cap; } tok_span_vec;

typedef struct tok_ctx {
    const ds_tokenizer *t;
    regex_scratch rx;
    tok_span_vec lvl[PT_MAX_STEPS + 1]; /* piece bounds per depth (+ one scratch) */
    char *tmp;                /* ByteLevel prefix-space copies */
    size_t tmp_cap;
    bpe_sym *syms;
    size_t syms_cap;
    bpe_heap_ent *heap;
    size_t heap_cap;
    char *cbuf;               /* char-space copy of a piece */
    size_t cbuf_cap;
    tok_ids *out;
    ds_err *e;
    /* If set, pretok_encode hands each final piece (raw bytes) to this
     * instead of BPE-encoding it into out (bpe_train.c counts pieces). */
    int (*on_piece)(void *ud, const char *s, size_t n);
    void *piece_ud;
} tok_ctx;
void tok_ctx_free(tok_ctx *cx);

/* tokenizer.c: a fresh tokenizer named `what` (NULL on OOM); builds it from a
 * tokenizer.json document (everything but tokenizer_config.json); BOS/EOS
 * from the well-known added tokens when still -1. */
ds_tokenizer *tok_alloc(const char *what);
int tok_build(ds_tokenizer *t, const json_t *root, ds_err *e);
void tok_default_bos_eos(ds_tokenizer *t);
/* tok_gguf.c: the tokenizer.ggml.pre name whose regexes a tokenizer.json
 * pre_tokenizer has (deepseek-v3, deepseek-llm, deepseek-coder), or NULL. */
const char *tok_gguf_pre_name(const json_t *pre);

/* bpe.c */
int bpe_load(ds_tokenizer *t, const json_t *model, ds_err *e);
int32_t bpe_vocab_get(const ds_tokenizer *t, const char *s, size_t n);
/* Encodes one pre-token (raw bytes; ByteLevel-mapped internally). */
int bpe_encode_piece(tok_ctx *cx, const char *s, size_t n);
void tok_cache_init(tok_cache *c);
void tok_cache_free(tok_cache *c);

/* pretok.c */
int pretok_load(ds_tokenizer *t, const json_t *pre, ds_err *e);
/* Pre-tokenizes s[0..n) and BPE-encodes each piece into cx->out. */
int pretok_encode(tok_ctx *cx, const char *s, size_t n);
void pretok_free(ds_tokenizer *t);

/* ByteLevel byte <-> char tables (GPT-2 bytes_to_unicode). */
uint32_t bytelevel_char(uint8_t b);
/* Byte for a ByteLevel char, or -1. */
int bytelevel_byte(uint32_t cp);
/* Appends the UTF-8 of bytelevel_char(b) to dst, returns bytes written (1-2). */
static inline int bytelevel_put(char *dst, uint8_t b) {
    uint32_t c = bytelevel_char(b);
    if (c < 0x80) { dst[0] = (char)c; return 1; }
    dst[0] = (char)(0xC0 | (c >> 6));
    dst[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

#endif
