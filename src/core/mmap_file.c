/*
 * mmap_file.c - file mapping, small-file reads and atomic writes.
 */
#include "mmap_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int ds_mmap_open(ds_mmap *m, const char *path, ds_err *e) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ds_err_set(e, errno == ENOENT ? DS_ENOTFOUND : DS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ds_err_set(e, DS_EIO, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ds_err_set(e, DS_EIO, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            close(fd);
            return ds_err_set(e, DS_EIO, "%s: mmap: %s", path, strerror(err));
        }
        m->data = p;
    }
    close(fd);
    m->path = strdup(path);
    if (!m->path) {
        ds_mmap_close(m);
        return ds_err_set(e, DS_ENOMEM, "%s: out of memory", path);
    }
    return DS_OK;
}

void ds_mmap_close(ds_mmap *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

int ds_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, ds_err *e) {
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ds_err_set(e, errno == ENOENT ? DS_ENOTFOUND : DS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ds_err_set(e, DS_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return ds_err_set(e, DS_ERANGE, "%s: file is %lld bytes, limit is %zu", path,
                          (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return ds_err_set(e, DS_ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return ds_err_set(e, DS_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    if (out_len) *out_len = n;
    return DS_OK;
}

int ds_write_file_atomic(const char *path, const void *data, size_t n, ds_err *e) {
    size_t len = strlen(path);
    char *tmp = malloc(len + 32);
    if (!tmp) return ds_err_set(e, DS_ENOMEM, "out of memory");
    snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = ds_err_set(e, DS_EIO, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    const uint8_t *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int rc = ds_err_set(e, DS_EIO, "%s: write: %s", tmp, strerror(errno));
            close(fd); unlink(tmp); free(tmp);
            return rc;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int rc = ds_err_set(e, DS_EIO, "%s: fsync/close: %s", tmp, strerror(errno));
        unlink(tmp); free(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int rc = ds_err_set(e, DS_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
        unlink(tmp); free(tmp);
        return rc;
    }
    free(tmp);
    return DS_OK;
}

int ds_mkdir_p(const char *dir, ds_err *e) {
    size_t len = strlen(dir);
    if (len == 0) return ds_err_set(e, DS_EINVAL, "empty folder name");
    char *buf = malloc(len + 1);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "out of memory");
    memcpy(buf, dir, len + 1);
    int rc = DS_OK;
    /* each prefix that ends at a '/' (and the whole path), shortest first */
    for (size_t i = 1; i <= len && rc == DS_OK; i++) {
        if (i < len && buf[i] != '/') continue;
        if (i < len && buf[i - 1] == '/') continue;          /* "a//b" */
        char keep = buf[i];
        buf[i] = 0;
        struct stat st;
        if (stat(buf, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                rc = ds_err_set(e, DS_EIO, "cannot make folder %s: %s exists and is not a folder", dir, buf);
        } else if (errno != ENOENT) {
            rc = ds_err_set(e, DS_EIO, "cannot make folder %s: %s: %s", dir, buf, strerror(errno));
        } else if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            rc = ds_err_set(e, DS_EIO, "cannot make folder %s: %s: %s", dir, buf, strerror(errno));
        }
        buf[i] = keep;
    }
    free(buf);
    return rc;
}

int ds_mkdir_parent(const char *path, ds_err *e) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return DS_OK;               /* "f.png", "/f.png" */
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir) return ds_err_set(e, DS_ENOMEM, "out of memory");
    memcpy(dir, path, n);
    dir[n] = 0;
    int rc = ds_mkdir_p(dir, e);
    free(dir);
    return rc;
}
