/*
 * repack_model.c - at load, every block-quantized matmul weight gets an x8
 * row-interleaved copy (tensor/repack.h) that the matmul kernels use: the
 * matrices of the tensor table (tensors.h) but the embeddings and the
 * router, of the owned routed experts only. The routers (F32 / BF16 / F16
 * as stored) are copied as they are into the same memory and read there:
 * from the file's 4 KiB pages a 512 KiB router streamed at 15 GB/s on one
 * core, from the huge pages at 26 (6-layer V2-Lite Q4_K_M, decode).
 *
 * Memory: the copy is anonymous memory of the same size as those weights
 * (huge pages advised). For a GGUF file the mapped pages of the original
 * weights are dropped from our mapping right after (MADV_DONTNEED), so the
 * resident set stays ~1x the model: the file's pages stay in the page
 * cache only as reclaimable cache, and the few paths that still read the
 * original layout (row lookups of the embedding, the naive attention check
 * path) fault them back in. DS_REPACK=0 in the environment turns it off
 * (weights are then used from the mapping; slower kernels).
 *
 * Models larger than memory: the copy is made only when it fits in 3/4 of
 * what this process may still use (memlimit.h: MemAvailable, capped by
 * the cgroup's limit). Otherwise the kernels read the file's own layout
 * through the mapping, so the resident set is bounded by the page cache,
 * not by the model: a model larger than RAM runs, disk-bound. No repacked
 * cache file is written instead: it would double the disk a 400 GB model
 * takes, and once reading is disk-bound the faster kernels do not matter.
 * DS_REPACK=1 makes the copy whatever the budget says.
 */
#include "model_internal.h"
#include "tensors.h"
#include "../core/memlimit.h"
#include "../core/thread.h"
#include "../tensor/repack.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    ds_tensor *t;
    size_t off;           /* into the copy */
    bool plain;           /* copied as stored (a router), not repacked: t->data moves to the copy */
} rp_item;

typedef struct {
    rp_item *it;
    int n, cap;
    size_t bytes;
} rp_list;

static bool repackable(const ds_tensor *t) {
    return ds_tensor_present(t) && (t->ndim == 2 || t->ndim == 3) && !t->rp &&
           ds_repack_supported(t->dtype, ds_tensor_cols(t)) && ds_tensor_rows(t) >= DS_RP_ROWS;
}

/* a router: a matrix of a plain type, copied as it is */
static bool plain_copy(const ds_tensor *t) {
    return ds_tensor_present(t) && t->ndim == 2 && !t->rp &&
           (t->dtype == DS_DTYPE_F32 || t->dtype == DS_DTYPE_BF16 || t->dtype == DS_DTYPE_F16);
}

static int add(rp_list *l, ds_tensor *t, bool plain) {
    if (plain ? !plain_copy(t) : !repackable(t)) return 0;
    for (int i = 0; i < l->n; i++)
        if (l->it[i].t->data == t->data && l->it[i].t->nbytes == t->nbytes) return 0;  /* same weight bound twice */
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        rp_item *p = realloc(l->it, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->it = p;
        l->cap = cap;
    }
    l->it[l->n++] = (rp_item){ t, l->bytes, plain };
    l->bytes += (t->nbytes + 63) & ~(size_t)63;
    return 0;
}

/* 2-D matrices of item i: 1, or shape[0] slices */
static int64_t n_mats(const ds_tensor *t) { return t->ndim == 3 ? t->shape[0] : 1; }
static int64_t mat_rows(const ds_tensor *t) { return t->ndim == 3 ? t->shape[1] : t->shape[0]; }

typedef struct {
    rp_list *l;
    uint8_t *buf;
    int64_t *start;       /* [n + 1] prefix sums of the row groups of the items */
    int64_t base;         /* first unit of this batch */
} rp_ctx;

static void repack_worker(void *vctx, int64_t u0, int64_t u1, int tid) {
    (void)tid;
    rp_ctx *c = vctx;
    u0 += c->base;
    u1 += c->base;
    int i = 0;
    while (c->start[i + 1] <= u0) i++;
    for (int64_t u = u0; u < u1; u++) {
        while (c->start[i + 1] <= u) i++;
        const ds_tensor *t = c->l->it[i].t;
        int64_t K = ds_tensor_cols(t), R = mat_rows(t), gpm = R / DS_RP_ROWS, k = u - c->start[i];
        int64_t mat = k / gpm, g = k % gpm;
        size_t rb = ds_dtype_row_bytes(t->dtype, K), off = rb * (size_t)(mat * R + g * DS_RP_ROWS);
        ds_repack_group(t->dtype, (const uint8_t *)t->data + off, K, c->buf + c->l->it[i].off + off);
    }
}

/* Drops our mapping's pages that lie entirely inside [p, p + n). */
static void drop_pages(const void *p, size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(uintptr_t)(pg - 1), b = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

int ds_model_repack(ds_model *m, ds_err *e) {
    const char *env = getenv("DS_REPACK");
    if ((env && !strcmp(env, "0")) || !ds_ops_simd()) return DS_OK;
    const ds_config *c = &m->cfg;
    rp_list l = { 0 };
    int bad = 0;
    /* every matmul weight of the table that m holds (layer -1: the model's own), owned experts
     * only; an expert server (m->experts_only) uses nothing else: the rest stays mapped, untouched */
    for (int64_t li = -1; li < c->n_layer + m->n_mtp; li++)
        for (int i = 0; i < DS_TK_COUNT; i++) {
            const ds_tkind *k = &ds_tkinds[i];
            if (i == DS_TK_ROUTER && li >= 0 && !m->experts_only) { bad |= add(&l, ds_tk_field(k, m, li, -1), true); continue; }
            if (k->ndim == 1 || (k->flags & DS_TF_NO_REPACK) || (k->scope == DS_TS_MODEL) != (li < 0)) continue;
            if (k->scope != DS_TS_EXPERT) {
                if (!m->experts_only) bad |= add(&l, ds_tk_field(k, m, li, -1), false);
            }
            else if (m->layers[li].experts)
                for (int64_t x = m->expert_lo; x < m->expert_hi; x++) bad |= add(&l, ds_tk_field(k, m, li, x), false);
        }
    if (bad) { free(l.it); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    if (l.n == 0) return DS_OK;
    int64_t budget = ds_mem_budget();
    if (!(env && !strcmp(env, "1")) && budget >= 0 && l.bytes > (size_t)budget / 4 * 3) {
        m->rp_skipped = l.bytes;   /* would not fit: the mapping's own layout serves */
        m->rp_budget = budget;
        free(l.it);
        return DS_OK;
    }
    int64_t *start = malloc((size_t)(l.n + 1) * sizeof *start);
    if (!start) { free(l.it); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    void *buf = mmap(NULL, l.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        free(l.it); free(start);
        return ds_err_set(e, DS_ENOMEM, "out of memory for the repacked weights (%.2f GiB; DS_REPACK=0 skips them)",
                          (double)l.bytes / (1 << 30));
    }
    madvise(buf, l.bytes, MADV_HUGEPAGE);
    start[0] = 0;
    for (int i = 0; i < l.n; i++) {
        const ds_tensor *t = l.it[i].t;
        if (l.it[i].plain) {   /* no row groups: copied whole below */
            start[i + 1] = start[i];
            memcpy((uint8_t *)buf + l.it[i].off, t->data, t->nbytes);
            continue;
        }
        int64_t K = ds_tensor_cols(t), R = mat_rows(t), full = R / DS_RP_ROWS * DS_RP_ROWS;
        size_t rb = ds_dtype_row_bytes(t->dtype, K);
        start[i + 1] = start[i] + n_mats(t) * (R / DS_RP_ROWS);
        /* rows past the last whole group: copied as they are */
        if (full < R)
            for (int64_t s = 0; s < n_mats(t); s++)
                memcpy((uint8_t *)buf + l.it[i].off + rb * (size_t)(s * R + full),
                       (const uint8_t *)t->data + rb * (size_t)(s * R + full), rb * (size_t)(R - full));
    }
    /* in batches of ~256 MiB, dropping the source pages after each batch */
    for (int i0 = 0; i0 < l.n;) {
        int i1 = i0 + 1;
        while (i1 < l.n && l.it[i1].off - l.it[i0].off < ((size_t)256 << 20)) i1++;
        rp_ctx rc = { &l, buf, start, start[i0] };
        ds_par_for(start[i1] - start[i0], 64, repack_worker, &rc);
        for (int i = i0; i < i1; i++) {
            ds_tensor *t = l.it[i].t;
            if (m->gguf) drop_pages(t->data, t->nbytes);
            if (l.it[i].plain) t->data = (uint8_t *)buf + l.it[i].off;
            else t->rp = (const uint8_t *)buf + l.it[i].off;
        }
        i0 = i1;
    }
    /* the same weight bound under a second name (tied MTP head, ...) */
    for (int64_t i = 0; i < c->n_layer + m->n_mtp; i++) {
        ds_layer_w *w = &m->layers[i];
        if (ds_tensor_present(&w->head) && !w->head.rp && w->head.data == m->lm_head.data) w->head.rp = m->lm_head.rp;
    }
    m->rp_buf = buf;
    m->rp_bytes = l.bytes;
    m->rp_plain = 0;
    for (int i = 0; i < l.n; i++)
        if (l.it[i].plain) m->rp_plain += (l.it[i].t->nbytes + 63) & ~(size_t)63;
    free(l.it);
    free(start);
    return DS_OK;
}

void ds_model_repack_free(ds_model *m) {
    if (m->rp_buf) munmap(m->rp_buf, m->rp_bytes);
    m->rp_buf = NULL;
    m->rp_bytes = 0;
    m->rp_plain = 0;
}
