/*
 * safetensors.h - memory-mapped safetensors files and sharded folders.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {...}}
 * then the data region; offsets are relative to its start.
 *
 * Everything about the header is checked before use: the 100 MB header
 * limit, offsets within the data region, sizes matching dtype × shape
 * (overflow-checked), no overlapping tensors, no duplicate names (also
 * across shards), shard names that stay inside the folder.
 */
#ifndef DS_SAFETENSORS_H
#define DS_SAFETENSORS_H

#include "../core/base.h"
#include "../core/mmap_file.h"
#include "../tensor/tensor.h"

#define DS_ST_MAX_HEADER (100u * 1000u * 1000u)
#define DS_ST_MAX_DIMS 8

typedef struct ds_st_tensor {
    char *name;             /* owned */
    char dtype_name[16];    /* as written in the header */
    ds_dtype dtype;         /* DS_DTYPE_COUNT when not one we compute with */
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    uint64_t begin, end;    /* byte offsets in the data region */
    const uint8_t *data;    /* into the mapping, or `owned` if realigned */
    void *owned;
    int file;               /* index into ds_safetensors.files */
    bool used;              /* set by the binder; leftovers are "unexpected" */
} ds_st_tensor;

typedef struct ds_st_file {
    ds_mmap map;
    uint64_t header_len;
} ds_st_file;

typedef struct ds_safetensors {
    ds_st_file *files;
    int n_files;
    ds_st_tensor *tensors;  /* sorted by name */
    int64_t n_tensors;
} ds_safetensors;

/* Opens DIR/model.safetensors, or the shards listed in
 * DIR/model.safetensors.index.json when present. */
int ds_safetensors_open_dir(ds_safetensors *st, const char *dir, ds_err *e);
/* Opens a single file (also used by tools and the fuzzer). */
int ds_safetensors_open_file(ds_safetensors *st, const char *path, ds_err *e);
void ds_safetensors_close(ds_safetensors *st);

/* Parses and validates a header held in memory (`buf` is the whole file).
 * Appends tensors to st (file index `file`). Exposed for the fuzzer. */
int ds_safetensors_parse(ds_safetensors *st, const uint8_t *buf, size_t size, int file,
                         const char *what, ds_err *e);

/* Borrowed; NULL when absent. */
ds_st_tensor *ds_safetensors_find(const ds_safetensors *st, const char *name);

/* Fills a tensor view (no copy). */
void ds_st_view(const ds_st_tensor *t, ds_tensor *out);

/* Writer: tensors given as views with F32/BF16/F16/F8 data. Atomic. */
typedef struct ds_st_write_item {
    const char *name;
    ds_dtype dtype;
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    const void *data;
} ds_st_write_item;
int ds_safetensors_write(const char *path, const ds_st_write_item *items, int64_t n,
                         const char *metadata_json, ds_err *e);

#endif
