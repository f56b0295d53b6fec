/*
 * bpe_train.h - training a byte-level BPE tokenizer on text and writing it
 * as a Hugging Face tokenizer.json (+ tokenizer_config.json) that both HF
 * `tokenizers` and our tokenizer.h load and encode identically.
 *
 * Pipeline: each document is pre-tokenized with the very pre-tokenizer that
 * is written into the file (DeepSeek-V3's Split regexes + ByteLevel, or
 * GPT-2's ByteLevel regex), run by our HF-exact pre-tokenizer (pretok.c);
 * the pieces are counted; then BPE merges are learned from the 256 byte
 * tokens up with incremental pair counts, a max-heap of pairs and per-pair
 * lists of the words they occur in.
 *
 * The merge procedure is Hugging Face's BpeTrainer (models/bpe/trainer.rs,
 * word.rs) step for step: special tokens take ids 0..S-1, the 256 ByteLevel
 * characters follow in code-point order, each step merges the pair with the
 * highest count, ties going to the smallest (left id, right id), occurrences
 * are merged left to right without overlap, and a repeated merge keeps its
 * last rank. Given the same pieces the result is identical to HF's trainer
 * (tested): per_line = true reproduces Tokenizer.train(files) (HF reads files
 * line by line), per_line = false Tokenizer.train_from_iterator([document]).
 *
 * Usage: bpe_trainer_new, bpe_trainer_feed per document, bpe_trainer_train,
 * then bpe_trainer_tokenizer_json / bpe_trainer_config_json, bpe_trainer_free.
 * Not thread-safe (one trainer per thread).
 */
#ifndef DS_BPE_TRAIN_H
#define DS_BPE_TRAIN_H

#include "../core/base.h"

typedef enum bpe_pretok {
    BPE_PRETOK_DEEPSEEK_V3 = 0, /* DeepSeek-V3's three Split regexes + ByteLevel(use_regex=false) */
    BPE_PRETOK_GPT2,            /* ByteLevel(use_regex=true): the GPT-2 regex */
} bpe_pretok;

/* An added token. Its id is its index in the list (ids 0..n-1, before the
 * byte tokens), and it is also an entry of model.vocab, as HF's trainer
 * writes them. special: skipped by decode(skip_special_tokens); normalized:
 * HF's flag (our normalizer is empty, so it only orders matching). */
typedef struct bpe_special {
    const char *content; /* UTF-8, non-empty */
    bool special;
    bool normalized;
} bpe_special;

/* DeepSeek's markers with DeepSeek's flags: <｜begin▁of▁sentence｜> (0) and
 * <｜end▁of▁sentence｜> (1) special, then <｜User｜>, <｜Assistant｜>, <think>,
 * </think> and the nine tool-call markers, not special, normalized (as in
 * DeepSeek-V3/R1's tokenizer.json). Static; *n receives the count. */
const bpe_special *bpe_default_specials(int *n);

enum { BPE_STAGE_COUNT = 1, BPE_STAGE_MERGE = 2 };
typedef struct bpe_train_progress {
    int stage;       /* BPE_STAGE_* */
    uint64_t done;   /* COUNT: bytes pre-tokenized so far; MERGE: merges done */
    uint64_t total;  /* COUNT: opts.total_bytes (0: unknown); MERGE: merges wanted at most */
    double elapsed;  /* seconds since the stage started */
} bpe_train_progress;
/* Called about every progress_interval seconds; return nonzero to stop
 * (the call in progress then fails with DS_EINTERRUPTED). */
typedef int (*bpe_progress_fn)(void *ud, const bpe_train_progress *p);

typedef struct bpe_train_opts {
    int64_t vocab_size;        /* total ids wanted: specials + 256 bytes + merges */
    bpe_pretok pretok;
    const bpe_special *specials; /* in id order; duplicates are ignored (HF) */
    int n_specials;
    uint64_t min_frequency;    /* stop when the best pair occurs fewer times (0/1: never) */
    bool per_line;             /* pre-tokenize every line (with its '\n') separately, as HF's
                                  Tokenizer.train(files); default: whole documents */
    /* tokenizer_config.json: bos/eos token contents (NULL: none) and add_bos_token */
    const char *bos_token, *eos_token;
    bool add_bos;
    bool chat_template;        /* write DeepSeek-V3's chat template */
    bpe_progress_fn progress;  /* optional */
    void *progress_ud;
    double progress_interval;  /* seconds; 0: 0.5 */
    uint64_t total_bytes;      /* optional hint for COUNT progress */
    size_t chunk_bytes;        /* documents are pre-tokenized in chunks of about this size
                                  (below 16, e.g. 0: 1 MiB); SIZE_MAX: never cut */
} bpe_train_opts;

typedef struct bpe_trainer bpe_trainer;

/* Validates opts (vocab_size >= distinct specials + 256; specials non-empty
 * valid UTF-8) and compiles the pre-tokenizer. opts' strings are copied. */
int bpe_trainer_new(bpe_trainer **out, const bpe_train_opts *opts, ds_err *e);
void bpe_trainer_free(bpe_trainer *tr);

/* Pre-tokenizes one document (any bytes; invalid UTF-8 is counted as bytes)
 * and counts its pieces. Documents never share a piece. Big documents are
 * processed in chunks cut only where the cut cannot change the pieces (a
 * '\n' between printable ASCII characters); a document without such a place
 * for 16 chunks (16 MiB) is cut at a line end there instead. */
int bpe_trainer_feed(bpe_trainer *tr, const char *text, size_t len, ds_err *e);

/* Learns the merges. DS_EINVAL if nothing was fed (empty corpus). Stops
 * early (no error) when no pair is left or min_frequency is not reached:
 * then the vocabulary is smaller than asked (see bpe_trainer_stats). */
int bpe_trainer_train(bpe_trainer *tr, ds_err *e);

typedef struct bpe_train_stats {
    uint64_t bytes;        /* fed */
    uint64_t pieces;       /* pre-tokenized pieces (with repeats) */
    uint64_t words;        /* distinct pieces */
    int64_t vocab_size;    /* ids in the trained model (specials included) */
    int64_t merges;        /* merges written to the file */
    double count_seconds, merge_seconds;
} bpe_train_stats;
void bpe_trainer_stats(const bpe_trainer *tr, bpe_train_stats *st);

/* The trained tokenizer.json / tokenizer_config.json as malloc'ed,
 * NUL-terminated UTF-8 (caller frees). Deterministic: the same options and
 * documents give byte-identical files. */
int bpe_trainer_tokenizer_json(const bpe_trainer *tr, char **out, size_t *len, ds_err *e);
int bpe_trainer_config_json(const bpe_trainer *tr, char **out, size_t *len, ds_err *e);

/* The pre_tokenizer object written for `kind`: malloc'ed JSON text
 * (caller frees), NULL if out of memory. */
char *bpe_pretok_json(bpe_pretok kind);
/* DeepSeek-V3's chat template (as in its tokenizer_config.json). */
const char *bpe_v3_chat_template(void);

#endif
