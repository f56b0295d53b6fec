/*
 * prefix_cache.h - stored MLA latent caches keyed by their token prefix,
 * as the DeepSeek API's context cache: a request whose prompt starts with a
 * stored prefix copies those positions instead of recomputing them.
 *
 * In memory: whole prefixes (LRU within a byte budget). On disk (optional):
 * fixed-size blocks of `block` tokens, content-addressed like vLLM's prefix
 * blocks: block k's file is named by a hash chained over the model
 * fingerprint and every token up to the end of block k, so a prompt finds
 * its cached blocks by walking the chain until the first miss, and a
 * growing conversation writes only its new blocks (cost proportional to the
 * tokens just computed, never a rewrite). Files are written atomically
 * (temp file, fsync, rename), checked when the folder is scanned (header,
 * size, fingerprint) and again before use (chain hash, tokens, checksum of
 * the latents); a bad file is removed and never used, a file made by
 * another model is left alone. The fingerprint covers config.json and
 * samples of the embedding and LM-head weights.
 *
 * Worker-thread only (not thread-safe); the scheduler owns the store.
 */
#ifndef DS_PREFIX_CACHE_H
#define DS_PREFIX_CACHE_H

#include "../model/model.h"

typedef struct pc_store pc_store;
typedef struct pc_entry pc_entry;

typedef struct pc_opts {
    int64_t ram_bytes;    /* in-memory budget; 0 keeps nothing in memory */
    int64_t min_tokens;   /* shorter prefixes are not stored; also the disk block size */
    const char *dir;      /* disk cache folder (created if missing), or NULL */
    int64_t disk_bytes;   /* disk budget; least recently used blocks are removed beyond it */
} pc_opts;

typedef struct pc_stats {
    int64_t entries, ram_bytes;                 /* memory */
    int64_t disk_entries, disk_bytes;           /* disk blocks */
    int64_t disk_hits, disk_writes, disk_rejected;  /* blocks read, written, found bad */
} pc_stats;

int pc_open(pc_store **out, const ds_model *m, const pc_opts *o, ds_err *e);
void pc_close(pc_store *p);

/* Longest stored prefix of ids[0..n) (in tokens), from memory or from disk
 * blocks, and a handle for pc_restore (valid until the next store call). */
int64_t pc_lookup(pc_store *p, const int32_t *ids, int64_t n, pc_entry **hit);
/* Makes dst hold the first len positions of the hit (ids: the same prompt
 * given to pc_lookup). Disk blocks are read and verified; on a bad block
 * the file is removed and an error returned (the caller then computes). */
int pc_restore(pc_store *p, pc_entry *hit, const int32_t *ids, ds_kvcache *dst, int64_t len, ds_err *e);
/* Stores src's first n positions (tokens ids) in memory, unless a stored
 * entry already covers them; entries that are prefixes of it are dropped. */
int pc_save(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e);
/* Writes the full blocks of src's first n positions that the disk folder
 * does not hold yet (no-op without a folder). */
int pc_save_disk(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e);
void pc_get_stats(const pc_store *p, pc_stats *st);

#endif
