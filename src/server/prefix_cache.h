/*
 * prefix_cache.h - stored MLA latent caches keyed by their token prefix,
 * as the DeepSeek API's context cache: a request whose prompt starts with a
 * stored prefix copies those positions instead of recomputing them.
 *
 * Entries live in memory (LRU within a byte budget) and optionally on disk
 * (one file per entry in a cache folder, written atomically: temp file,
 * fsync, rename). Files are validated when the folder is scanned (header,
 * size, model fingerprint) and again, with a checksum over the tokens and
 * the latents, before their data is used; a bad file is removed and never
 * used. The fingerprint covers config.json and samples of the embedding and
 * LM-head weights, so a cache made by another model is ignored.
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
    int64_t min_tokens;   /* shorter prefixes are not stored */
    const char *dir;      /* disk cache folder (created if missing), or NULL */
    int64_t disk_bytes;   /* disk budget; oldest entries are removed beyond it */
} pc_opts;

typedef struct pc_stats {
    int64_t entries, ram_bytes, disk_entries, disk_bytes, disk_hits, disk_writes, disk_rejected;
} pc_stats;

int pc_open(pc_store **out, const ds_model *m, const pc_opts *o, ds_err *e);
void pc_close(pc_store *p);

/* Longest stored prefix of ids[0..n) (in tokens), and its entry. */
int64_t pc_lookup(pc_store *p, const int32_t *ids, int64_t n, pc_entry **hit);
/* Makes dst hold the entry's first len positions (reading and validating
 * the file for a disk-only entry). On a bad file the entry is dropped and
 * an error returned; the caller then just computes the prefix. */
int pc_restore(pc_store *p, pc_entry *hit, ds_kvcache *dst, int64_t len, ds_err *e);
/* Stores src's first n positions (tokens ids) in memory, unless a stored
 * entry already covers them; entries that are prefixes of it are dropped. */
int pc_save(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e);
/* Writes them to the disk folder too (no-op without one or when covered). */
int pc_save_disk(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e);
void pc_get_stats(const pc_store *p, pc_stats *st);

#endif
