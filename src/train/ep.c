/*
 * ep.c - the expert exchange of expert-parallel training (see ep.h):
 * ownership bounds, the plan of one exchange from every rank's per-expert
 * counts, and the two all-to-alls (rows out, rows back) through src/dist.
 */
#include "ep.h"
#include "../dist/dist.h"

#include <stdlib.h>
#include <string.h>

void ds_ep_bounds(int64_t E, int n, int64_t *bound) {
    for (int q = 0; q <= n; q++) bound[q] = E * q / n;
}

int ds_ep_plan_init(ds_ep_plan *p, int64_t E, int n, int rank, ds_err *e) {
    memset(p, 0, sizeof *p);
    if (E < 1 || n < 1 || rank < 0 || rank >= n)
        return ds_err_set(e, DS_EINVAL, "expert exchange: %lld experts over rank %d of %d is not a valid split",
                          (long long)E, rank, n);
    p->n = n, p->rank = rank, p->E = E;
    p->bound = malloc((size_t)(n + 1) * sizeof *p->bound);
    p->soff = malloc((size_t)(n + 1) * sizeof *p->soff);
    p->roff = malloc((size_t)(n + 1) * sizeof *p->roff);
    p->cnt_all = calloc((size_t)n * (size_t)E, sizeof *p->cnt_all);
    if (p->bound) {
        ds_ep_bounds(E, n, p->bound);
        p->lo = p->bound[rank], p->hi = p->bound[rank + 1];
        p->rex = malloc((size_t)n * (size_t)(p->hi - p->lo + 1) * sizeof *p->rex);
    }
    if (!p->bound || !p->soff || !p->roff || !p->cnt_all || !p->rex) {
        ds_ep_plan_free(p);
        return ds_err_set(e, DS_ENOMEM, "out of memory for the expert exchange plan (%lld experts, %d ranks)",
                          (long long)E, n);
    }
    return DS_OK;
}

void ds_ep_plan_free(ds_ep_plan *p) {
    if (!p) return;
    free(p->bound); free(p->soff); free(p->roff); free(p->rex); free(p->cnt_all);
    memset(p, 0, sizeof *p);
}

int ds_ep_plan_build(ds_ep_plan *p, const int64_t *cnt_all, ds_err *e) {
    int64_t E = p->E, ne = p->hi - p->lo;
    for (int64_t i = 0; i < (int64_t)p->n * E; i++)
        if (cnt_all[i] < 0)
            return ds_err_set(e, DS_EINVAL, "expert exchange: rank %lld reports %lld rows for expert %lld",
                              (long long)(i / E), (long long)cnt_all[i], (long long)(i % E));
    /* send: this rank's packed slots, runs by owner */
    const int64_t *mine = cnt_all + (int64_t)p->rank * E;
    int64_t s = 0;
    for (int q = 0; q < p->n; q++) {
        p->soff[q] = s;
        for (int64_t x = p->bound[q]; x < p->bound[q + 1]; x++) s += mine[x];
    }
    p->soff[p->n] = s;
    /* receive: sources in rank order, each source's own-expert runs in expert order */
    int64_t r = 0;
    for (int src = 0; src < p->n; src++) {
        p->roff[src] = r;
        int64_t *rx = p->rex + (int64_t)src * (ne + 1);
        for (int64_t j = 0; j < ne; j++) {
            rx[j] = r;
            r += cnt_all[(int64_t)src * E + p->lo + j];
        }
        rx[ne] = r;
    }
    p->roff[p->n] = r;
    return DS_OK;
}

int ds_ep_plan_exchange(ds_ep_plan *p, const int64_t *cnt, ds_err *e) {
    int64_t *off = malloc((size_t)(p->n + 1) * sizeof *off);
    if (!off) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int q = 0; q <= p->n; q++) off[q] = q;
    memcpy(p->cnt_all + (int64_t)p->rank * p->E, cnt, (size_t)p->E * sizeof *cnt);
    int rc = ds_dist_allgather_rows(p->cnt_all, (size_t)p->E * sizeof *cnt, off, e);
    free(off);
    return rc ? rc : ds_ep_plan_build(p, p->cnt_all, e);
}

/* counts and displacements in floats: a[q] = rows of run q times D */
static int scale_runs(const int64_t *runs, int n, int64_t D, int64_t *cnt, int64_t *dsp) {
    for (int q = 0; q < n; q++) { cnt[q] = (runs[q + 1] - runs[q]) * D; dsp[q] = runs[q] * D; }
    return DS_OK;
}

static int move_rows(const ds_ep_plan *p, const int64_t *from, const float *src, const int64_t *to, float *dst,
                     int64_t D, ds_err *e) {
    int64_t *c = malloc((size_t)p->n * 4 * sizeof *c);
    if (!c) return ds_err_set(e, DS_ENOMEM, "out of memory");
    scale_runs(from, p->n, D, c, c + p->n);
    scale_runs(to, p->n, D, c + 2 * p->n, c + 3 * p->n);
    int rc = ds_dist_alltoallv_f32(src, c, c + p->n, dst, c + 2 * p->n, c + 3 * p->n, e);
    free(c);
    return rc;
}

int ds_ep_dispatch(const ds_ep_plan *p, const float *send, float *recv, int64_t D, ds_err *e) {
    return move_rows(p, p->soff, send, p->roff, recv, D, e);
}

int ds_ep_return(const ds_ep_plan *p, const float *rows, float *out, int64_t D, ds_err *e) {
    return move_rows(p, p->roff, rows, p->soff, out, D, e);
}
