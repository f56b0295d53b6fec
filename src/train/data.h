/*
 * data.h - token shards for training (written by `deepseek prepare-data`)
 * and the batch loader.
 *
 * A data folder holds
 *   data.json              what was tokenized: tokenizer, vocab size, shards, token counts
 *   tokenizer.json         the tokenizer used (copied into every checkpoint)
 *   train_NNNNNN.tok       training shards
 *   val_NNNNNN.tok         held-out validation shards
 * A shard is a 64-byte header — magic "DSTOKENS", u32 version (1), u32 bytes
 * per token (2 or 4), u64 token count, u64 vocab size, zero padding — then the
 * tokens, little-endian.
 *
 * Batches: an epoch cuts every training shard into windows of T tokens with
 * stride T-1 (consecutive windows share one token, so every token is a
 * prediction target once per epoch), starting at a per-epoch random shift,
 * and visits them in a per-epoch random order. Both come from (seed, epoch),
 * so the loader state is just (epoch, position) — saved in checkpoints for an
 * exact resume.
 */
#ifndef DS_DATA_H
#define DS_DATA_H

#include "../core/base.h"
#include "../core/mmap_file.h"

#define DS_SHARD_MAGIC "DSTOKENS"
#define DS_SHARD_HEADER 64

typedef struct ds_shard {
    ds_mmap map;
    int64_t n;             /* tokens */
    int bytes;             /* 2 or 4 */
    const uint8_t *tok;    /* borrowed (mapping) */
} ds_shard;

typedef struct ds_data {
    char *dir;
    int64_t vocab_size;
    ds_shard *train, *val;
    int n_train, n_val;
    int64_t train_tokens, val_tokens;
    /* loader */
    int64_t T;             /* window length */
    uint64_t seed;
    int64_t epoch, pos;    /* position in the epoch's window order */
    int64_t n_windows;     /* this epoch */
    int64_t shift;         /* this epoch's offset of the first window in every shard */
    int64_t *order;        /* (n_windows) window ids, shuffled */
    int64_t *win_start;    /* (n_train + 1) first window id of each shard */
} ds_data;

/* Opens a data folder (data.json + shards). */
int ds_data_open(ds_data *d, const char *dir, ds_err *e);
void ds_data_close(ds_data *d);

/* Prepares the loader for windows of T tokens; positions it at (epoch, pos). */
int ds_data_start(ds_data *d, int64_t T, uint64_t seed, int64_t epoch, int64_t pos, ds_err *e);
/* Fills out[B·T] with the next B windows (advancing epochs as needed). */
int ds_data_next(ds_data *d, int32_t *out, int64_t B, ds_err *e);

/* Validation windows: the first n_seq windows of T tokens (stride T-1) of
 * the validation shards, in order; returns how many fit (<= n_seq). */
int64_t ds_data_val_windows(const ds_data *d, int64_t T, int64_t n_seq, int32_t *out);

/* Writes one shard atomically. */
int ds_shard_write(const char *path, const int32_t *tok, int64_t n, int64_t vocab_size, ds_err *e);

/* A byte-level tokenizer.json (HF format): ids 0..255 are the bytes
 * (GPT-2 byte-to-unicode alphabet, no merges), 256 = BOS, 257 = EOS.
 * malloc'ed, caller frees. */
char *ds_byte_tokenizer_json(void);
#define DS_BYTE_TOKENIZER_VOCAB 258

#endif
