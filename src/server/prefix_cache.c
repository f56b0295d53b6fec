/*
 * prefix_cache.c - in-memory and on-disk prefix cache of MLA latents (see
 * prefix_cache.h). Owns the entry list, the block index, the LRU budgets
 * and the file format; what to store and when is the scheduler's choice.
 *
 * Disk block file "<hash>.kvb" (little-endian), B = block tokens:
 *   0   char[8]  "DSKVB\0\0\1"
 *   8   u32      version (1)      12  u32  header bytes (80)
 *   16  u64      model fingerprint
 *   24  u64      block index k    32  u32  B   36  u32 layers   40  u32 width   44 u32 0
 *   48  u64      chain hash through block k-1 (the seed for k = 0)
 *   56  u64      chain hash through block k (= the file name)
 *   64  u64      hash of the latents          72  u64  reserved (0)
 *   80  i32[B]   the block's token ids
 *   ..  f32[layers][B][width]  its latents (ds_kvcache rows kB .. kB+B-1)
 * The file size must be exactly 80 + 4B + 4*layers*B*width.
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

#define PC_VERSION 1u

struct pc_entry {
    int32_t *ids;
    int64_t n;
    float *data;        /* layers * n * width floats; NULL only for the disk pseudo-entry */
    uint64_t used;      /* LRU clock */
};

typedef struct pc_block {
    uint64_t hash;      /* chain hash through this block = file name */
    uint64_t used;      /* LRU clock */
} pc_block;

struct pc_store {
    pc_opts o;
    char *dir;
    int64_t n_layer, width;
    uint64_t fingerprint;
    pc_entry **ent;
    int n_ent, cap_ent;
    uint64_t clock;
    int64_t ram_bytes;
    /* disk blocks */
    int64_t block;      /* tokens per block */
    int64_t block_bytes;
    pc_block *blk;
    int64_t n_blk, cap_blk;
    int64_t *tab;       /* open addressing on hash: index into blk + 1, 0 = empty */
    int64_t tab_cap;
    int64_t disk_hits, disk_writes, disk_rejected;
    pc_entry disk_hit;  /* pseudo-entry returned by pc_lookup for a disk hit */
    float **rows;       /* (n_layer) scratch pointers for the view caches */
    int64_t *widths;    /* (n_layer) all `width`: the view caches' per-layer row widths */
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
    free(en);
}

static void drop_ram(pc_store *p, pc_entry *en) {
    if (!en->data) return;
    p->ram_bytes -= entry_ram_bytes(p, en);
    free(en->data);
    en->data = NULL;
}

/* Removes entries that no longer hold data. */
static void compact(pc_store *p) {
    int k = 0;
    for (int i = 0; i < p->n_ent; i++) {
        if (!p->ent[i]->data) entry_free(p->ent[i]);
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
    ds_kvcache c = { .n_layer = p->n_layer, .width = p->widths, .cap = n, .max_ctx = n, .n_past = n, .kv = p->rows };
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


/* ------------------------------------------------------- block index */

static int64_t tab_slot(const pc_store *p, uint64_t h) { return (int64_t)(h & (uint64_t)(p->tab_cap - 1)); }

static int64_t blk_find(const pc_store *p, uint64_t h) {
    if (!p->tab_cap) return -1;
    for (int64_t i = tab_slot(p, h);; i = (i + 1) & (p->tab_cap - 1)) {
        if (!p->tab[i]) return -1;
        if (p->blk[p->tab[i] - 1].hash == h) return p->tab[i] - 1;
    }
}

static void tab_put(pc_store *p, int64_t idx) {
    int64_t i = tab_slot(p, p->blk[idx].hash);
    while (p->tab[i]) i = (i + 1) & (p->tab_cap - 1);
    p->tab[i] = idx + 1;
}

static int tab_grow(pc_store *p) {
    int64_t cap = p->tab_cap ? p->tab_cap * 2 : 1024;
    int64_t *t = calloc((size_t)cap, sizeof *t);
    if (!t) return DS_ENOMEM;
    free(p->tab);
    p->tab = t;
    p->tab_cap = cap;
    for (int64_t i = 0; i < p->n_blk; i++) tab_put(p, i);
    return DS_OK;
}

/* Deletes the table slot of hash h (backward-shift deletion). */
static void tab_del(pc_store *p, uint64_t h) {
    int64_t i = tab_slot(p, h);
    while (p->tab[i] && p->blk[p->tab[i] - 1].hash != h) i = (i + 1) & (p->tab_cap - 1);
    if (!p->tab[i]) return;
    p->tab[i] = 0;
    for (int64_t j = (i + 1) & (p->tab_cap - 1); p->tab[j]; j = (j + 1) & (p->tab_cap - 1)) {
        int64_t home = tab_slot(p, p->blk[p->tab[j] - 1].hash);
        /* move j back to the hole if its home is not in (i, j] (cyclically) */
        bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            p->tab[i] = p->tab[j];
            p->tab[j] = 0;
            i = j;
        }
    }
}

static int blk_add(pc_store *p, uint64_t h) {
    if ((p->n_blk + 1) * 2 > p->tab_cap && tab_grow(p)) return DS_ENOMEM;
    if (p->n_blk == p->cap_blk) {
        int64_t cap = p->cap_blk ? p->cap_blk * 2 : 256;
        pc_block *nb = realloc(p->blk, (size_t)cap * sizeof *nb);
        if (!nb) return DS_ENOMEM;
        p->blk = nb;
        p->cap_blk = cap;
    }
    p->blk[p->n_blk] = (pc_block){ h, ++p->clock };
    tab_put(p, p->n_blk);
    p->n_blk++;
    return DS_OK;
}

static void blk_path(const pc_store *p, uint64_t h, char *out, size_t cap) {
    snprintf(out, cap, "%s/%016llx.kvb", p->dir, (unsigned long long)h);
}

/* Forgets block idx and deletes its file. */
static void blk_remove(pc_store *p, int64_t idx) {
    char path[4200];
    blk_path(p, p->blk[idx].hash, path, sizeof path);
    unlink(path);
    tab_del(p, p->blk[idx].hash);
    int64_t last = p->n_blk - 1;
    if (idx != last) { /* move the last block into the hole */
        tab_del(p, p->blk[last].hash);
        p->blk[idx] = p->blk[last];
        tab_put(p, idx);
    }
    p->n_blk--;
}

static int64_t disk_bytes(const pc_store *p) { return p->n_blk * p->block_bytes; }

static void evict_disk(pc_store *p) {
    while (p->n_blk > 0 && disk_bytes(p) > p->o.disk_bytes) {
        int64_t lru = 0;
        for (int64_t i = 1; i < p->n_blk; i++)
            if (p->blk[i].used < p->blk[lru].used) lru = i;
        blk_remove(p, lru);
    }
}

/* ---------------------------------------------------------------- disk */

#define PC_BLK_MAGIC "DSKVB\0\0\1"
#define PC_BLK_HDR 80

typedef struct pc_bheader {
    char magic[8];
    uint32_t version, hdr_bytes;
    uint64_t fingerprint, k;
    uint32_t B, n_layer, width, zero;
    uint64_t prev, hash, data_hash, reserved;
} pc_bheader;
_Static_assert(sizeof(pc_bheader) == PC_BLK_HDR, "pc_bheader layout");

static uint64_t chain(uint64_t prev, const int32_t *ids, int64_t B) { return hash64(prev ^ 0x5bd1e995ull, ids, (size_t)B * 4) | 1; }
static uint64_t chain_seed(const pc_store *p) { return hash64(p->fingerprint, &p->block, sizeof p->block); }

/* Reads block k of the prompt ids into rows [kB, kB+B) of a [layers][len][width] buffer;
 * verifies the header, the chain, the tokens and the checksum. */
static int read_block(pc_store *p, uint64_t prev, uint64_t h, int64_t k, const int32_t *ids, float *buf, int64_t len,
                      ds_err *e) {
    char path[4200];
    blk_path(p, h, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) return ds_err_set(e, DS_EIO, "%s: %s", path, strerror(errno));
    int64_t B = p->block, W = p->width;
    size_t nf = (size_t)(p->n_layer * B * W);
    pc_bheader hd;
    int32_t *tok = malloc((size_t)B * sizeof *tok);
    float *d = malloc(nf * sizeof *d);
    int rc = DS_OK;
    if (!tok || !d) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto out; }
    if (fread(&hd, sizeof hd, 1, f) != 1 || memcmp(hd.magic, PC_BLK_MAGIC, 8) || hd.version != PC_VERSION ||
        hd.hdr_bytes != PC_BLK_HDR || hd.fingerprint != p->fingerprint || hd.k != (uint64_t)k || hd.B != B ||
        hd.n_layer != p->n_layer || hd.width != W || hd.prev != prev || hd.hash != h) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: header does not match block %lld of this prompt", path, (long long)k);
        goto out;
    }
    if (fread(tok, sizeof *tok, (size_t)B, f) != (size_t)B || memcmp(tok, ids + k * B, (size_t)B * 4)) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: tokens differ from the prompt (hash collision or corruption)", path);
        goto out;
    }
    if (fread(d, sizeof *d, nf, f) != nf || hash64(HASH_SEED, d, nf * sizeof *d) != hd.data_hash) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: latents corrupt (checksum mismatch)", path);
        goto out;
    }
    for (int64_t l = 0; l < p->n_layer; l++)
        memcpy(buf + (l * len + k * B) * W, d + l * B * W, (size_t)(B * W) * sizeof *d);
out:
    fclose(f);
    free(tok);
    free(d);
    return rc;
}

static int write_block(pc_store *p, const ds_kvcache *src, uint64_t prev, uint64_t h, int64_t k, const int32_t *ids,
                       float *scratch, ds_err *e) {
    int64_t B = p->block, W = p->width;
    size_t nf = (size_t)(p->n_layer * B * W);
    for (int64_t l = 0; l < p->n_layer; l++)
        memcpy(scratch + l * B * W, src->kv[l] + k * B * W, (size_t)(B * W) * sizeof *scratch);
    pc_bheader hd = { .version = PC_VERSION, .hdr_bytes = PC_BLK_HDR, .fingerprint = p->fingerprint, .k = (uint64_t)k,
                      .B = (uint32_t)B, .n_layer = (uint32_t)p->n_layer, .width = (uint32_t)W, .prev = prev, .hash = h,
                      .data_hash = hash64(HASH_SEED, scratch, nf * sizeof *scratch) };
    memcpy(hd.magic, PC_BLK_MAGIC, 8);
    char path[4200], tmp[4300];
    blk_path(p, h, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%016llx", p->dir, (long)getpid(), (unsigned long long)h);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    bool ok = f && fwrite(&hd, sizeof hd, 1, f) == 1 && fwrite(ids + k * B, 4, (size_t)B, f) == (size_t)B &&
              fwrite(scratch, sizeof *scratch, nf, f) == nf && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f) ok = (fclose(f) == 0) && ok;
    else if (fd >= 0) close(fd);
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) {
        int err = errno;
        unlink(tmp);
        return ds_err_set(e, DS_EIO, "prefix cache: writing %s: %s", path, strerror(err));
    }
    p->disk_writes++;
    return blk_add(p, h) ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
}

static int scan_dir(pc_store *p, ds_err *e) {
    if (mkdir(p->dir, 0755) != 0 && errno != EEXIST)
        return ds_err_set(e, DS_EIO, "prefix cache folder %s: %s", p->dir, strerror(errno));
    DIR *d = opendir(p->dir);
    if (!d) return ds_err_set(e, DS_EIO, "prefix cache folder %s: %s", p->dir, strerror(errno));
    struct dirent *de;
    int64_t want = PC_BLK_HDR + 4 * p->block + 4 * p->n_layer * p->block * p->width;
    while ((de = readdir(d))) {
        char path[4200];
        size_t nl = strlen(de->d_name);
        snprintf(path, sizeof path, "%s/%s", p->dir, de->d_name);
        if (!strncmp(de->d_name, ".tmp.", 5)) { unlink(path); continue; } /* an interrupted write */
        if (nl != 20 || strcmp(de->d_name + 16, ".kvb")) continue;
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        pc_bheader hd;
        struct stat sb;
        bool got = fstat(fileno(f), &sb) == 0 && fread(&hd, sizeof hd, 1, f) == 1;
        fclose(f);
        char name[32];
        bool bad = !got || memcmp(hd.magic, PC_BLK_MAGIC, 8) || hd.version != PC_VERSION || hd.hdr_bytes != PC_BLK_HDR;
        if (!bad && (hd.fingerprint != p->fingerprint || hd.B != p->block || hd.n_layer != p->n_layer || hd.width != p->width))
            continue; /* another model's (or another block size's) cache: not ours to judge */
        if (!bad) {
            snprintf(name, sizeof name, "%016llx.kvb", (unsigned long long)hd.hash);
            bad = (int64_t)sb.st_size != want || strcmp(name, de->d_name) || blk_find(p, hd.hash) >= 0;
        }
        if (bad) {
            unlink(path);
            p->disk_rejected++;
            continue;
        }
        if (blk_add(p, hd.hash)) { closedir(d); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
        p->blk[p->n_blk - 1].used = (uint64_t)sb.st_mtime; /* older files are evicted first */
    }
    closedir(d);
    /* the clock continues after the newest file */
    for (int64_t i = 0; i < p->n_blk; i++) p->clock = DS_MAX(p->clock, p->blk[i].used);
    evict_disk(p);
    return DS_OK;
}

/* ----------------------------------------------------------------- API */

int pc_open(pc_store **out, const ds_model *m, const pc_opts *o, ds_err *e) {
    *out = NULL;
    pc_store *p = calloc(1, sizeof *p);
    if (!p) return ds_err_set(e, DS_ENOMEM, "out of memory");
    p->o = *o;
    p->n_layer = m->cfg.n_layer + m->n_mtp;
    /* stored as [layer][position][width]: one row width for all layers */
    p->width = ds_config_kv_width(&m->cfg, 0);
    bool uniform = true;
    for (int64_t l = 1; l < p->n_layer; l++) uniform &= ds_config_kv_width(&m->cfg, l) == p->width;
    if (!uniform) {   /* DeepSeek-V4 (rows per layer type): no prefix cache yet, every prompt is prefilled */
        if (o->dir) {
            pc_close(p);
            return ds_err_set(e, DS_EUNSUPPORTED, "prefix cache on disk: not available for a model whose layers have "
                              "different KV row widths (DeepSeek-V4)");
        }
        p->o.ram_bytes = 0;
    }
    p->rows = calloc((size_t)p->n_layer, sizeof *p->rows);
    p->widths = calloc((size_t)p->n_layer, sizeof *p->widths);
    if (!p->rows || !p->widths) { pc_close(p); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    for (int64_t l = 0; l < p->n_layer; l++) p->widths[l] = p->width;
    if (p->o.min_tokens < 1) p->o.min_tokens = 1;
    p->block = p->o.min_tokens;
    p->block_bytes = PC_BLK_HDR + 4 * p->block + 4 * p->n_layer * p->block * p->width;
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
    free(p->blk);
    free(p->tab);
    free(p->rows);
    free(p->widths);
    free(p->dir);
    free(p);
}

int64_t pc_lookup(pc_store *p, const int32_t *ids, int64_t n, pc_entry **hit) {
    int64_t best = 0;
    *hit = NULL;
    for (int i = 0; i < p->n_ent; i++) {
        int64_t l = common_prefix(p->ent[i]->ids, p->ent[i]->n, ids, n);
        if (l > best) { best = l; *hit = p->ent[i]; }
    }
    if (p->dir && p->n_blk > 0) { /* walk the block chain until the first block not on disk */
        int64_t k = 0;
        for (uint64_t h = chain_seed(p); (k + 1) * p->block <= n; k++) {
            h = chain(h, ids + k * p->block, p->block);
            if (blk_find(p, h) < 0) break;
        }
        if (k * p->block > best) {
            best = k * p->block;
            p->disk_hit = (pc_entry){ .n = best };
            *hit = &p->disk_hit;
        }
    }
    return best;
}

/* Reads the disk blocks covering ids[0..len) into a new memory buffer; *got
 * is how many positions were read (stops at the first bad block, which is
 * removed). */
static int read_blocks(pc_store *p, const int32_t *ids, int64_t len, float **out, int64_t *got, ds_err *e) {
    int64_t B = p->block, nb = (len + B - 1) / B;
    *got = 0;
    float *buf = malloc((size_t)(p->n_layer * nb * B * p->width) * sizeof *buf);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "out of memory reading %lld cached tokens", (long long)(nb * B));
    uint64_t prev = chain_seed(p);
    int rc = DS_OK;
    for (int64_t k = 0; k < nb; k++) {
        uint64_t h = chain(prev, ids + k * B, B);
        int64_t idx = blk_find(p, h);
        if (idx < 0) { rc = ds_err_set(e, DS_ENOTFOUND, "prefix cache: block %lld is gone", (long long)k); break; }
        if ((rc = read_block(p, prev, h, k, ids, buf, nb * B, e))) {
            blk_remove(p, idx);
            p->disk_rejected++;
            break;
        }
        p->blk[idx].used = ++p->clock;
        p->disk_hits++;
        *got = (k + 1) * B;
        prev = h;
    }
    if (*got == 0) { free(buf); return rc ? rc : ds_err_set(e, DS_ENOTFOUND, "nothing cached"); }
    if (*got < nb * B) { /* compact the rows to the shorter length */
        for (int64_t l = 1; l < p->n_layer; l++)
            memmove(buf + l * *got * p->width, buf + l * nb * B * p->width, (size_t)(*got * p->width) * sizeof *buf);
    }
    *out = buf;
    return DS_OK;
}

int pc_restore(pc_store *p, pc_entry *en, const int32_t *ids, ds_kvcache *dst, int64_t len, ds_err *e) {
    if (len > en->n) len = en->n;
    if (en != &p->disk_hit) {
        en->used = ++p->clock;
        ds_kvcache src = view(p, en->data, en->n);
        return ds_kvcache_copy_prefix(dst, &src, len, e);
    }
    float *buf = NULL;
    int64_t got;
    int rc = read_blocks(p, ids, len, &buf, &got, e);
    if (rc) return rc;
    ds_kvcache src = view(p, buf, got);
    rc = ds_kvcache_copy_prefix(dst, &src, DS_MIN(len, got), e);
    /* keep what was read in memory, as any other entry */
    int64_t bytes = got * p->n_layer * p->width * (int64_t)sizeof(float);
    pc_entry *ne = bytes <= p->o.ram_bytes ? entry_add(p, ids, got) : NULL;
    if (ne) {
        ne->data = buf;
        p->ram_bytes += bytes;
        evict_ram(p, ne);
    } else {
        free(buf);
    }
    return rc;
}

/* A memory entry that already holds ids[0..n) as a prefix. */
static pc_entry *covering(pc_store *p, const int32_t *ids, int64_t n) {
    for (int i = 0; i < p->n_ent; i++) {
        pc_entry *en = p->ent[i];
        if (en->n >= n && common_prefix(en->ids, en->n, ids, n) == n) return en;
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
    if (src->n_layer != p->n_layer || ds_kvcache_uniform_width(src) != p->width)
        return ds_err_set(e, DS_EINVAL, "prefix cache: foreign KV cache");
    pc_entry *c = covering(p, ids, n);
    if (c) { c->used = ++p->clock; return DS_OK; }
    int64_t bytes = n * p->n_layer * p->width * (int64_t)sizeof(float);
    if (bytes > p->o.ram_bytes) return DS_OK;
    /* memory entries that are prefixes of this one become redundant */
    for (int i = 0; i < p->n_ent; i++) {
        pc_entry *en = p->ent[i];
        if (en->data && en->n <= n && common_prefix(en->ids, en->n, ids, n) == en->n) drop_ram(p, en);
    }
    compact(p);
    float *d = NULL;
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
    int64_t B = p->block, nb = n / B;
    if (!p->dir || nb == 0 || p->block_bytes > p->o.disk_bytes) return DS_OK;
    if (src->n_layer != p->n_layer || ds_kvcache_uniform_width(src) != p->width || src->n_past < n)
        return ds_err_set(e, DS_EINVAL, "prefix cache: foreign or short KV cache");
    float *scratch = NULL;
    int rc = DS_OK;
    int64_t written = 0;
    uint64_t prev = chain_seed(p);
    for (int64_t k = 0; k < nb && !rc; k++) {
        uint64_t h = chain(prev, ids + k * B, B);
        int64_t idx = blk_find(p, h);
        if (idx >= 0) {
            p->blk[idx].used = ++p->clock;
        } else {
            if (!scratch && !(scratch = malloc((size_t)(p->n_layer * B * p->width) * sizeof *scratch)))
                rc = ds_err_set(e, DS_ENOMEM, "out of memory");
            else if (!(rc = write_block(p, src, prev, h, k, ids, scratch, e)))
                written++;
        }
        prev = h;
    }
    free(scratch);
    if (written) {
        int dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
        evict_disk(p);
    }
    return rc;
}

void pc_get_stats(const pc_store *p, pc_stats *st) {
    memset(st, 0, sizeof *st);
    st->entries = p->n_ent;
    st->ram_bytes = p->ram_bytes;
    st->disk_entries = p->n_blk;
    st->disk_bytes = disk_bytes(p);
    st->disk_hits = p->disk_hits;
    st->disk_writes = p->disk_writes;
    st->disk_rejected = p->disk_rejected;
}
