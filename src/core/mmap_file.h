/*
 * mmap_file.h - read-only memory mapping of a whole file.
 */
#ifndef DS_MMAP_FILE_H
#define DS_MMAP_FILE_H

#include "base.h"

typedef struct ds_mmap {
    const uint8_t *data; /* borrowed until ds_mmap_close; NULL for empty files */
    size_t size;
    char *path;          /* owned copy of the path, for error messages */
} ds_mmap;

/* Maps path read-only (MAP_PRIVATE). Empty files map to data == NULL. */
int ds_mmap_open(ds_mmap *m, const char *path, ds_err *e);
void ds_mmap_close(ds_mmap *m);

/* Reads a whole (small) file into a NUL-terminated heap buffer that the
 * caller frees with free(). Fails if the file is larger than max_bytes. */
int ds_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, ds_err *e);

/* Atomic write: temp file in the same directory, fsync, rename. */
int ds_write_file_atomic(const char *path, const void *data, size_t n, ds_err *e);

/* Output folders: `mkdir -p DIR` (every missing folder on the way is made,
 * 0755). A part of the path that exists but is not a folder is an error
 * naming it ("data/x exists and is not a folder"). */
int ds_mkdir_p(const char *dir, ds_err *e);
/* The folder that will hold the file `path` (nothing for a bare name). */
int ds_mkdir_parent(const char *path, ds_err *e);

#endif
