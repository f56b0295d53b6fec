/*
 * prefix_cache.c - in-memory and on-disk prefix cache of MLA latents (see
 * prefix_cache.h). Owns the entry list, the LRU budgets and the file
 * format; the choice of what to store and when is the scheduler's.
 *
 * File format (little-endian), one entry per file "<hash>.kvc":
 *   0   char[8]  "DSKVC\0\0\1"
 *   8   u32      version (1)      12  u32  header bytes (64)
 *   16  u64      model fingerprint
 *   24  u64      n tokens         32  u32  layers   36  u32  width
 *   40  u64      hash of the tokens
 *   48  u64      hash of the latents
 *   56  u64      reserved (0)
 *   64  i32[n]   token ids
 *   ..  f32[layers][n][width]  latents (the ds_kvcache rows)
 * The file size must be exactly 64 + 4n + 4*layers*n*width.
 */
#include "prefix_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PC_MAGIC "DSKVC\0\0\1"
#define PC_VERSION 1u
#define PC_HDR 64

struct pc_entry {
    int32_t *ids;
    int64_t n;
    float *data;        /* layers * n * width floats in memory, or NULL */
    char *path;         /* file on disk, or NULL */
    int64_t file_bytes;
    uint64_t used;      /* LRU clock */
};

struct pc_store {
    pc_opts o;
    char *dir;
    int64_t n_layer, width;
    uint64_t fingerprint;
    pc_entry **ent;
    int n_ent, cap_ent;
    uint64_t clock;
    int64_t ram_bytes, disk_bytes;
    int64_t disk_hits, disk_writes, disk_rejected;
    float **rows;       /* (n_layer) scratch pointers for the view caches */
};

/* ------------------------------------------------------------- hashing */

static uint64_t hash64(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h ^= w;
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 32;
    return h * 0x9e3779b97f4a7c15ull;
}
#define HASH_SEED 0xcbf29ce484222325ull

static uint64_t model_fingerprint(const ds_model *m) {
    uint64_t h = HASH_SEED;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", m->dir ? m->dir : ".");
    FILE *f = fopen(path, "rb");
    if (f) {
        char buf[8192];
        size_t r;
        while ((r = fread(buf, 1, sizeof buf, f)) > 0) h = hash64(h, buf, r);
        fclose(f);
    }
    const ds_tensor *ts[2] = { &m->embed, &m->lm_head };
    for (int i = 0; i < 2; i++) {
        if (!ts[i]->data) continue;
        size_t nb = ts[i]->nbytes, take = nb < (1u << 20) ? nb : (1u << 20);
        h = hash64(h, &nb, sizeof nb);
        h = hash64(h, ts[i]->data, take);
        h = hash64(h, (const char *)ts[i]->data + (nb - take), take);
    }
    int64_t dims[4] = { m->cfg.n_layer, m->cfg.kv_lora_rank, m->cfg.qk_rope_head_dim, m->cfg.vocab_size };
    return hash64(h, dims, sizeof dims);
}

/* ------------------------------------------------------------- entries */

static int64_t entry_ram_bytes(const pc_store *p, const pc_entry *en) {
    return en->n * p->n_layer * p->width * (int64_t)sizeof(float);
}

static void entry_free(pc_entry *en) {
    if (!en) return;
    free(en->ids);
    free(en->data);
    free(en->path);
    free(en);
}

static void drop_ram(pc_store *p, pc_entry *en) {
    if (!en->data) return;
    p->ram_bytes -= entry_ram_bytes(p, en);
    free(en->data);
    en->data = NULL;
}

static void drop_disk(pc_store *p, pc_entry *en) {
    if (!en->path) return;
    unlink(en->path);
    p->disk_bytes -= en->file_bytes;
    free(en->path);
    en->path = NULL;
}

/* Removes entry i from the list if it is neither in memory nor on disk. */
static void compact(pc_store *p) {
    int k = 0;
    for (int i = 0; i < p->n_ent; i++) {
        if (!p->ent[i]->data && !p->ent[i]->path) entry_free(p->ent[i]);
        else p->ent[k++] = p->ent[i];
    }
    p->n_ent = k;
}

static pc_entry *entry_add(pc_store *p, const int32_t *ids, int64_t n) {
    if (p->n_ent == p->cap_ent) {
        int cap = p->cap_ent ? p->cap_ent * 2 : 16;
        pc_entry **ne = realloc(p->ent, (size_t)cap * sizeof *ne);
        if (!ne) return NULL;
        p->ent = ne;
        p->cap_ent = cap;
    }
    pc_entry *en = calloc(1, sizeof *en);
    if (!en) return NULL;
    en->ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *en->ids);
    if (!en->ids) { free(en); return NULL; }
    memcpy(en->ids, ids, (size_t)n * sizeof *ids);
    en->n = n;
    en->used = ++p->clock;
    p->ent[p->n_ent++] = en;
    return en;
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* A view ds_kvcache over n positions of latents stored as [layer][n][width]. */
static ds_kvcache view(pc_store *p, float *data, int64_t n) {
    for (int64_t l = 0; l < p->n_layer; l++) p->rows[l] = data + l * n * p->width;
    ds_kvcache c = { .n_layer = p->n_layer, .width = p->width, .cap = n, .max_ctx = n, .n_past = n, .kv = p->rows };
    return c;
}

static void evict_ram(pc_store *p, const pc_entry *keep) {
    while (p->ram_bytes > p->o.ram_bytes) {
        pc_entry *lru = NULL;
        for (int i = 0; i < p->n_ent; i++)
            if (p->ent[i]->data && p->ent[i] != keep && (!lru || p->ent[i]->used < lru->used)) lru = p->ent[i];
        if (!lru) break;
        drop_ram(p, lru);
    }
    compact(p);
}

static void evict_disk(pc_store *p, const pc_entry *keep) {
    while (p->disk_bytes > p->o.disk_bytes) {
        pc_entry *lru = NULL;
        for (int i = 0; i < p->n_ent; i++)
            if (p->ent[i]->path && p->ent[i] != keep && (!lru || p->ent[i]->used < lru->used)) lru = p->ent[i];
        if (!lru) break;
        drop_disk(p, lru);
    }
    compact(p);
}

/* ---------------------------------------------------------------- disk */

typedef struct pc_header {
    char magic[8];
    uint32_t version, hdr_bytes;
    uint64_t fingerprint, n;
    uint32_t n_layer, width;
    uint64_t ids_hash, data_hash, reserved;
} pc_header;
_Static_assert(sizeof(pc_header) == PC_HDR, "pc_header layout");

static int64_t file_size_for(const pc_store *p, int64_t n) {
    return PC_HDR + 4 * n + 4 * p->n_layer * n * p->width;
}

/* Reads and checks a file's header and tokens (not the latents). */
static int read_head(pc_store *p, const char *path, pc_header *h, int32_t **ids, bool *foreign, ds_err *e) {
    *ids = NULL;
    *foreign = false;
    FILE *f = fopen(path, "rb");
    if (!f) return ds_err_set(e, DS_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    int rc = DS_OK;
    if (fstat(fileno(f), &sb) != 0 || fread(h, sizeof *h, 1, f) != 1) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: truncated header", path);
        goto out;
    }
    if (memcmp(h->magic, PC_MAGIC, 8) || h->version != PC_VERSION || h->hdr_bytes != PC_HDR) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: not a prefix-cache file (bad magic or version)", path);
        goto out;
    }
    if (h->fingerprint != p->fingerprint || h->n_layer != p->n_layer || h->width != p->width) {
        *foreign = true;
        rc = ds_err_set(e, DS_EINVAL, "%s: made by another model", path);
        goto out;
    }
    if (h->n == 0 || h->n > (1ull << 32) || (int64_t)sb.st_size != file_size_for(p, (int64_t)h->n)) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: size %lld does not match %llu tokens", path, (long long)sb.st_size,
                        (unsigned long long)h->n);
        goto out;
    }
    *ids = malloc((size_t)h->n * sizeof **ids);
    if (!*ids) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto out; }
    if (fread(*ids, sizeof **ids, (size_t)h->n, f) != h->n || hash64(HASH_SEED, *ids, (size_t)h->n * 4) != h->ids_hash) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: token list corrupt", path);
        free(*ids);
        *ids = NULL;
    }
out:
    fclose(f);
    return rc;
}

/* Reads the latents of a disk entry (checked against the stored hash). */
static int read_data(pc_store *p, pc_entry *en, float **out, ds_err *e) {
    pc_header h;
    int32_t *ids = NULL;
    bool foreign;
    int rc = read_head(p, en->path, &h, &ids, &foreign, e);
    if (rc) return rc;
    bool same = (int64_t)h.n == en->n && !memcmp(ids, en->ids, (size_t)en->n * 4);
    free(ids);
    if (!same) return ds_err_set(e, DS_EFORMAT, "%s: changed on disk", en->path);
    size_t nf = (size_t)(p->n_layer * en->n * p->width);
    float *d = malloc(nf * sizeof *d);
    if (!d) return ds_err_set(e, DS_ENOMEM, "out of memory reading %s", en->path);
    FILE *f = fopen(en->path, "rb");
    bool ok = f && fseek(f, PC_HDR + 4 * en->n, SEEK_SET) == 0 && fread(d, sizeof *d, nf, f) == nf;
    if (f) fclose(f);
    if (!ok || hash64(HASH_SEED, d, nf * sizeof *d) != h.data_hash) {
        free(d);
        return ds_err_set(e, DS_EFORMAT, "%s: latents corrupt (checksum mismatch)", en->path);
    }
    *out = d;
    return DS_OK;
}

static int write_file(pc_store *p, pc_entry *en, const float *data, ds_err *e) {
    size_t nf = (size_t)(p->n_layer * en->n * p->width);
    pc_header h = { .version = PC_VERSION, .hdr_bytes = PC_HDR, .fingerprint = p->fingerprint, .n = (uint64_t)en->n,
                    .n_layer = (uint32_t)p->n_layer, .width = (uint32_t)p->width };
    memcpy(h.magic, PC_MAGIC, 8);
    h.ids_hash = hash64(HASH_SEED, en->ids, (size_t)en->n * 4);
    h.data_hash = hash64(HASH_SEED, data, nf * sizeof *data);
    size_t dl = strlen(p->dir);
    char *path = malloc(dl + 40), *tmp = malloc(dl + 64);
    if (!path || !tmp) { free(path); free(tmp); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    snprintf(path, dl + 40, "%s/%016llx.kvc", p->dir, (unsigned long long)(h.ids_hash ^ (uint64_t)en->n));
    snprintf(tmp, dl + 64, "%s/.tmp.%ld.%016llx", p->dir, (long)getpid(), (unsigned long long)h.ids_hash);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    bool ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(en->ids, 4, (size_t)en->n, f) == (size_t)en->n &&
              fwrite(data, sizeof *data, nf, f) == nf && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f) ok = (fclose(f) == 0) && ok;
    else if (fd >= 0) close(fd);
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) {
        int err = errno;
        unlink(tmp);
        free(path);
        free(tmp);
        return ds_err_set(e, DS_EIO, "prefix cache: writing %s/: %s", p->dir, strerror(err));
    }
    int dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(tmp);
    en->path = path;
    en->file_bytes = file_size_for(p, en->n);
    p->disk_bytes += en->file_bytes;
    p->disk_writes++;
    return DS_OK;
}

static int scan_dir(pc_store *p, ds_err *e) {
    if (mkdir(p->dir, 0755) != 0 && errno != EEXIST)
        return ds_err_set(e, DS_EIO, "prefix cache folder %s: %s", p->dir, strerror(errno));
    DIR *d = opendir(p->dir);
    if (!d) return ds_err_set(e, DS_EIO, "prefix cache folder %s: %s", p->dir, strerror(errno));
    struct dirent *de;
    size_t dl = strlen(p->dir);
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        char *path = malloc(dl + nl + 2);
        if (!path) break;
        sprintf(path, "%s/%s", p->dir, de->d_name);
        if (!strncmp(de->d_name, ".tmp.", 5)) { unlink(path); free(path); continue; } /* interrupted write */
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".kvc")) { free(path); continue; }
        pc_header h;
        int32_t *ids;
        bool foreign;
        ds_err le = { 0 };
        if (read_head(p, path, &h, &ids, &foreign, &le)) {
            if (!foreign) { unlink(path); p->disk_rejected++; }
            free(path);
            continue;
        }
        pc_entry *en = entry_add(p, ids, (int64_t)h.n);
        free(ids);
        if (!en) { free(path); break; }
        en->path = path;
        en->file_bytes = file_size_for(p, en->n);
        p->disk_bytes += en->file_bytes;
    }
    closedir(d);
    evict_disk(p, NULL);
    return DS_OK;
}

/* ----------------------------------------------------------------- API */

int pc_open(pc_store **out, const ds_model *m, const pc_opts *o, ds_err *e) {
    *out = NULL;
    pc_store *p = calloc(1, sizeof *p);
    if (!p) return ds_err_set(e, DS_ENOMEM, "out of memory");
    p->o = *o;
    p->n_layer = m->cfg.n_layer + m->n_mtp;
    p->width = m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim;
    p->rows = calloc((size_t)p->n_layer, sizeof *p->rows);
    if (!p->rows) { pc_close(p); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    if (p->o.min_tokens < 1) p->o.min_tokens = 1;
    if (o->dir) {
        p->fingerprint = model_fingerprint(m);
        p->dir = strdup(o->dir);
        int rc = p->dir ? scan_dir(p, e) : ds_err_set(e, DS_ENOMEM, "out of memory");
        if (rc) { pc_close(p); return rc; }
    }
    *out = p;
    return DS_OK;
}

void pc_close(pc_store *p) {
    if (!p) return;
    for (int i = 0; i < p->n_ent; i++) entry_free(p->ent[i]);
    free(p->ent);
    free(p->rows);
    free(p->dir);
    free(p);
}

int64_t pc_lookup(pc_store *p, const int32_t *ids, int64_t n, pc_entry **hit) {
    int64_t best = 0;
    *hit = NULL;
    for (int i = 0; i < p->n_ent; i++) {
        int64_t l = common_prefix(p->ent[i]->ids, p->ent[i]->n, ids, n);
        /* prefer memory over disk at equal length */
        if (l > best || (l == best && l > 0 && *hit && !(*hit)->data && p->ent[i]->data)) {
            best = l;
            *hit = p->ent[i];
        }
    }
    return best;
}

int pc_restore(pc_store *p, pc_entry *en, ds_kvcache *dst, int64_t len, ds_err *e) {
    if (len > en->n) len = en->n;
    float *d = en->data;
    if (!d) {
        int rc = read_data(p, en, &d, e);
        if (rc) {
            drop_disk(p, en);
            p->disk_rejected++;
            compact(p);
            return rc;
        }
        p->disk_hits++;
    }
    en->used = ++p->clock;
    ds_kvcache src = view(p, d, en->n);
    int rc = ds_kvcache_copy_prefix(dst, &src, len, e);
    if (!en->data) {
        /* keep it in memory if it fits the budget */
        if (p->o.ram_bytes >= entry_ram_bytes(p, en)) {
            en->data = d;
            p->ram_bytes += entry_ram_bytes(p, en);
            evict_ram(p, en);
        } else {
            free(d);
        }
    }
    return rc;
}

/* An entry that already holds ids[0..n) as a prefix (in memory, or on disk when disk). */
static pc_entry *covering(pc_store *p, const int32_t *ids, int64_t n, bool disk) {
    for (int i = 0; i < p->n_ent; i++) {
        pc_entry *en = p->ent[i];
        if ((disk ? en->path != NULL : en->data != NULL) && en->n >= n && common_prefix(en->ids, en->n, ids, n) == n)
            return en;
    }
    return NULL;
}

static int snapshot(pc_store *p, const ds_kvcache *src, int64_t n, float **out, ds_err *e) {
    size_t nf = (size_t)(p->n_layer * n * p->width);
    float *d = malloc(nf * sizeof *d);
    if (!d) return ds_err_set(e, DS_ENOMEM, "out of memory for a %lld-token prefix-cache entry", (long long)n);
    ds_kvcache dst = view(p, d, n);
    dst.n_past = 0;
    int rc = ds_kvcache_copy_prefix(&dst, src, n, e);
    if (rc) { free(d); return rc; }
    *out = d;
    return DS_OK;
}

int pc_save(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e) {
    if (n < p->o.min_tokens || p->o.ram_bytes <= 0) return DS_OK;
    if (src->width != p->width || src->n_layer != p->n_layer) return ds_err_set(e, DS_EINVAL, "prefix cache: foreign KV cache");
    pc_entry *c = covering(p, ids, n, false);
    if (c) { c->used = ++p->clock; return DS_OK; }
    int64_t bytes = n * p->n_layer * p->width * (int64_t)sizeof(float);
    if (bytes > p->o.ram_bytes) return DS_OK;
    /* memory entries that are prefixes of this one become redundant */
    for (int i = 0; i < p->n_ent; i++) {
        pc_entry *en = p->ent[i];
        if (en->data && en->n <= n && common_prefix(en->ids, en->n, ids, n) == en->n) drop_ram(p, en);
    }
    compact(p);
    float *d;
    int rc = snapshot(p, src, n, &d, e);
    if (rc) return rc;
    pc_entry *en = entry_add(p, ids, n);
    if (!en) { free(d); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    en->data = d;
    p->ram_bytes += bytes;
    evict_ram(p, en);
    return DS_OK;
}

int pc_save_disk(pc_store *p, const ds_kvcache *src, const int32_t *ids, int64_t n, ds_err *e) {
    if (!p->dir || n < p->o.min_tokens || file_size_for(p, n) > p->o.disk_bytes) return DS_OK;
    if (src->width != p->width || src->n_layer != p->n_layer) return ds_err_set(e, DS_EINVAL, "prefix cache: foreign KV cache");
    pc_entry *c = covering(p, ids, n, true);
    if (c) { c->used = ++p->clock; return DS_OK; }
    /* reuse a memory entry of exactly these tokens, else snapshot */
    pc_entry *en = NULL;
    for (int i = 0; i < p->n_ent && !en; i++)
        if (p->ent[i]->n == n && !p->ent[i]->path && p->ent[i]->data && !memcmp(p->ent[i]->ids, ids, (size_t)n * 4))
            en = p->ent[i];
    float *d = en ? en->data : NULL;
    int rc = DS_OK;
    if (!d && (rc = snapshot(p, src, n, &d, e))) return rc;
    bool fresh = !en;
    if (fresh && !(en = entry_add(p, ids, n))) { free(d); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    rc = write_file(p, en, d, e);
    if (fresh) free(d);
    /* disk entries that are prefixes of this one become redundant */
    for (int i = 0; i < p->n_ent; i++) {
        pc_entry *o = p->ent[i];
        if (o != en && o->path && o->n <= n && common_prefix(o->ids, o->n, ids, n) == o->n) drop_disk(p, o);
    }
    compact(p);
    evict_disk(p, en);
    return rc;
}

void pc_get_stats(const pc_store *p, pc_stats *st) {
    memset(st, 0, sizeof *st);
    st->entries = p->n_ent;
    st->ram_bytes = p->ram_bytes;
    for (int i = 0; i < p->n_ent; i++) st->disk_entries += p->ent[i]->path != NULL;
    st->disk_bytes = p->disk_bytes;
    st->disk_hits = p->disk_hits;
    st->disk_writes = p->disk_writes;
    st->disk_rejected = p->disk_rejected;
}
