/*
 * gguf.h - GGUF v2/v3 files (llama.cpp / ggml's model format): a hardened
 * memory-mapped reader and an atomic streaming writer.
 *
 * Layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv    x  { string key, u32 type, value }   (type 9 = array: u32 elem type, u64 n, n values)
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to `general.alignment` (default 32), then the data region;
 *   tensor offsets are relative to it and multiples of the alignment.
 *   string = u64 length + bytes (no NUL).
 * ggml shapes are innermost-first: ne[0] is the contiguous row length, so a
 * ggml {K, N} matrix is our row-major [N, K] (ds_gguf_view reverses them).
 *
 * The reader checks everything before use: magic/version, counts against
 * the bytes left, string and array lengths (limits below), nested arrays,
 * duplicate keys and tensor names, name lengths (< 64, like ggml), dims
 * (1..4, each >= 1, element count and byte size overflow-checked), known
 * ggml types, row length a multiple of the block size, alignment a power
 * of two, offsets aligned, inside the file and not overlapping.
 * Nothing here prints; errors name the file, key or tensor.
 */
#ifndef DS_GGUF_H
#define DS_GGUF_H

#include "../core/base.h"
#include "../core/mmap_file.h"
#include "../tensor/tensor.h"

#define DS_GGUF_MAGIC 0x46554747u          /* "GGUF" */
#define DS_GGUF_VERSION 3
#define DS_GGUF_DEFAULT_ALIGNMENT 32
#define DS_GGUF_MAX_NAME 64                /* tensor names are < 64 bytes (GGML_MAX_NAME) */
#define DS_GGUF_MAX_KEY 65535
#define DS_GGUF_MAX_STRING (64u << 20)     /* one string value */
#define DS_GGUF_MAX_ARRAY (1u << 30)       /* elements of one array */
#define DS_GGUF_MAX_DIMS 4

typedef enum ds_gguf_type {
    DS_GGUF_UINT8 = 0, DS_GGUF_INT8 = 1, DS_GGUF_UINT16 = 2, DS_GGUF_INT16 = 3,
    DS_GGUF_UINT32 = 4, DS_GGUF_INT32 = 5, DS_GGUF_FLOAT32 = 6, DS_GGUF_BOOL = 7,
    DS_GGUF_STRING = 8, DS_GGUF_ARRAY = 9, DS_GGUF_UINT64 = 10, DS_GGUF_INT64 = 11,
    DS_GGUF_FLOAT64 = 12, DS_GGUF_TYPE_COUNT
} ds_gguf_type;

/* ggml tensor type ids as stored in files (never renumbered). */
enum {
    DS_GGML_F32 = 0, DS_GGML_F16 = 1, DS_GGML_Q4_0 = 2, DS_GGML_Q4_1 = 3, DS_GGML_Q5_0 = 6,
    DS_GGML_Q5_1 = 7, DS_GGML_Q8_0 = 8, DS_GGML_Q8_1 = 9, DS_GGML_Q2_K = 10, DS_GGML_Q3_K = 11,
    DS_GGML_Q4_K = 12, DS_GGML_Q5_K = 13, DS_GGML_Q6_K = 14, DS_GGML_Q8_K = 15,
    DS_GGML_I8 = 24, DS_GGML_I16 = 25, DS_GGML_I32 = 26, DS_GGML_I64 = 27, DS_GGML_F64 = 28,
    DS_GGML_BF16 = 30, DS_GGML_MXFP4 = 39, DS_GGML_TYPE_COUNT = 43
};

typedef struct ds_ggml_type_info {
    const char *name;   /* "q4_K"; NULL for ids that are not in use */
    int64_t blck;       /* elements per block */
    size_t size;        /* bytes per block */
    ds_dtype dtype;     /* our dtype, DS_DTYPE_COUNT if we do not compute with it */
} ds_ggml_type_info;

/* NULL for unknown or retired ids. */
const ds_ggml_type_info *ds_ggml_type(uint32_t t);
/* ggml id for one of our dtypes, or -1. */
int ds_ggml_type_of(ds_dtype d);

typedef struct ds_gguf_kv {
    char *key;                  /* owned, NUL-terminated */
    ds_gguf_type type;          /* DS_GGUF_ARRAY for arrays */
    ds_gguf_type arr_type;      /* element type of an array */
    uint64_t n;                 /* elements (1 for scalars) */
    union { uint64_t u; int64_t i; double f; } v;  /* numeric/bool scalar, widened */
    const char *str;            /* STRING: bytes in the mapping, not NUL-terminated */
    uint64_t str_len;
    const uint8_t *arr;         /* numeric ARRAY: raw little-endian elements in the mapping */
    uint64_t *str_pos;          /* string ARRAY: owned, file offset of each element's length */
    uint64_t val_off, val_len;  /* the value's bytes in the file (after the type id) */
} ds_gguf_kv;

typedef struct ds_gguf_tensor {
    char *name;                 /* owned */
    uint32_t n_dims;
    int64_t ne[DS_GGUF_MAX_DIMS];  /* ggml order; unused dims are 1 */
    uint32_t type;              /* ggml type id */
    uint64_t offset;            /* relative to the data region */
    uint64_t nbytes;
    const uint8_t *data;        /* into the mapping */
} ds_gguf_tensor;

typedef struct ds_gguf {
    ds_mmap map;                /* owned when opened from a file */
    const uint8_t *buf;         /* the whole file */
    size_t size;
    char *what;                 /* owned: path for messages */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;       /* start of the data region in the file */
    int64_t n_kv, n_tensors;
    ds_gguf_kv *kv;             /* file order */
    ds_gguf_tensor *tensors;    /* file order */
    int64_t *by_name;           /* tensor indices sorted by name */
    struct ds_gguf *parts;      /* split files: the opened parts (owned); kv, buf, size are part 0's */
    int n_parts;                /* 0 for a single file */
} ds_gguf;

/* Maps and validates a file. On failure g is left closed. */
int ds_gguf_open(ds_gguf *g, const char *path, ds_err *e);
/* Validates a file image held in memory (buf must outlive g); for the
 * fuzzer and tests. `what` names it in messages. */
int ds_gguf_parse(ds_gguf *g, const uint8_t *buf, size_t size, const char *what, ds_err *e);
void ds_gguf_close(ds_gguf *g);

/* Split files, as llama.cpp's gguf-split writes them: PREFIX-00001-of-00004.gguf
 * .. PREFIX-00004-of-00004.gguf, each a valid GGUF holding some of the
 * tensors and the keys split.no (u16, 0-based), split.count (u16) and
 * split.tensors.count (i32, all parts' tensors); the first part also holds
 * the model's metadata. ds_gguf_open_model opens a single file, or the
 * first or any part of a split one: then every part, checked (each present,
 * its split.no and split.count, the tensor total, no name twice), and g
 * looks like one file (the metadata of part 0, the tensors of all). */
#define DS_GGUF_MAX_SPLITS 9999
int ds_gguf_open_model(ds_gguf *g, const char *path, ds_err *e);
/* The name of part `no` (0-based) of `count`: PREFIX-%05d-of-%05d.gguf. */
void ds_gguf_split_name(char *buf, size_t cap, const char *prefix, int no, int count);
/* The first part's name for any part named PREFIX-NNNNN-of-MMMMM.gguf;
 * other names are copied as they are. DS_ERANGE if cap is too small. */
int ds_gguf_split_first(const char *path, char *buf, size_t cap, ds_err *e);

/* Borrowed; NULL when absent. */
const ds_gguf_kv *ds_gguf_find_kv(const ds_gguf *g, const char *key);
const ds_gguf_tensor *ds_gguf_find_tensor(const ds_gguf *g, const char *name);

/* Typed getters. A missing optional key leaves *out unchanged and returns
 * DS_OK; a missing required key is DS_ENOTFOUND; a wrong type DS_EFORMAT;
 * a value outside [lo, hi] DS_ERANGE. Integers accept any integer type,
 * numbers any integer or float type. */
int ds_gguf_get_int(const ds_gguf *g, const char *key, bool required, int64_t lo, int64_t hi, int64_t *out, ds_err *e);
int ds_gguf_get_num(const ds_gguf *g, const char *key, bool required, double lo, double hi, double *out, ds_err *e);
int ds_gguf_get_bool(const ds_gguf *g, const char *key, bool required, bool *out, ds_err *e);
/* Copies a string value into buf (NUL-terminated); too long is DS_ERANGE. */
int ds_gguf_get_str(const ds_gguf *g, const char *key, bool required, char *buf, size_t cap, ds_err *e);
/* Element i of a string array (borrowed bytes, not NUL-terminated). */
void ds_gguf_arr_str(const ds_gguf *g, const ds_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len);
/* Element i of a numeric array, widened. */
double ds_gguf_arr_num(const ds_gguf_kv *kv, uint64_t i);

/* A tensor view in our convention: shape reversed to row-major
 * [ne[n-1], ..., ne[0]], dtype mapped; DS_EUNSUPPORTED for ggml types we do
 * not compute with. The view borrows the mapping. */
int ds_gguf_view(const ds_gguf *g, const ds_gguf_tensor *t, ds_tensor *out, ds_err *e);

/* ------------------------------------------------------------------ writer */

/* Builds the header in memory, then streams tensor data in declaration
 * order to PATH.tmp.<pid>; ds_gguf_writer_finish fsyncs and renames it
 * over PATH (atomic). Freeing an unfinished writer removes the temp file.
 * Key/value adders record the first failure (OOM, bad key) and report it
 * from ds_gguf_writer_begin. */
typedef struct ds_gguf_writer ds_gguf_writer;

ds_gguf_writer *ds_gguf_writer_new(void);   /* NULL on OOM */
void ds_gguf_writer_free(ds_gguf_writer *w);

void ds_gguf_w_u16(ds_gguf_writer *w, const char *key, uint16_t v);
void ds_gguf_w_u32(ds_gguf_writer *w, const char *key, uint32_t v);
void ds_gguf_w_i32(ds_gguf_writer *w, const char *key, int32_t v);
void ds_gguf_w_u64(ds_gguf_writer *w, const char *key, uint64_t v);
void ds_gguf_w_f32(ds_gguf_writer *w, const char *key, float v);
void ds_gguf_w_bool(ds_gguf_writer *w, const char *key, bool v);
void ds_gguf_w_str(ds_gguf_writer *w, const char *key, const char *v);
/* Arrays: elem_type a numeric type and `data` n raw elements, or
 * DS_GGUF_STRING and `data` an array of n NUL-terminated strings. */
void ds_gguf_w_arr(ds_gguf_writer *w, const char *key, ds_gguf_type elem_type, const void *data, uint64_t n);
/* Copies key/value kv of the opened file g as it is. */
void ds_gguf_w_copy(ds_gguf_writer *w, const ds_gguf *g, const ds_gguf_kv *kv);

/* Declares the next tensor: ggml type, row-major shape [d0, .., dn-1]
 * (reversed into ggml ne on disk). Returns its index or a negative code. */
int64_t ds_gguf_w_tensor(ds_gguf_writer *w, const char *name, uint32_t ggml_type, int ndim, const int64_t *shape,
                         ds_err *e);
/* Bytes of tensor i's data. */
uint64_t ds_gguf_w_tensor_bytes(const ds_gguf_writer *w, int64_t i);
/* Writes the header to the temp file. After this no keys/tensors may be added. */
int ds_gguf_writer_begin(ds_gguf_writer *w, const char *path, ds_err *e);
/* Appends data for the next tensor, in declaration order; may be called
 * several times per tensor with consecutive pieces. */
int ds_gguf_writer_write(ds_gguf_writer *w, const void *data, size_t n, ds_err *e);
/* Checks every tensor was fully written, fsyncs and renames into place. */
int ds_gguf_writer_finish(ds_gguf_writer *w, ds_err *e);
/* Bytes of the header ds_gguf_writer_begin will write (tensor data follows). */
uint64_t ds_gguf_w_header_bytes(const ds_gguf_writer *w);

#endif
