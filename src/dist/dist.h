/*
 * dist.h - the process group deepseek.c runs on (src/dist/dist.c): the one
 * layer that talks to MPI (OpenMPI). Model and CLI call these named
 * operations; no MPI_* appears anywhere else.
 *
 * Launched by mpirun (OMPI_COMM_WORLD_SIZE set), ds_dist_init joins the
 * job; otherwise MPI is not initialized at all (a singleton MPI_Init would
 * start an OpenMPI daemon: slow, and refused as root) and the group is this
 * process alone: rank 0 of 1, every collective a no-op or a copy.
 * Errors inside a collective (a rank lost) are OpenMPI's: its default
 * handler ends the whole job with a message naming the rank.
 */
#ifndef DS_DIST_H
#define DS_DIST_H

#include "../core/base.h"

int ds_dist_init(ds_err *e);          /* joins the mpirun job, if launched by one */
void ds_dist_finalize(void);          /* leaves it (no-op alone) */
int ds_dist_rank(void);               /* 0 alone */
int ds_dist_size(void);               /* 1 alone */
void ds_dist_abort(int code);         /* ends every rank of the job (exit alone) */

/* buf[bytes] from rank 0 to every rank. */
int ds_dist_bcast(void *buf, size_t bytes, ds_err *e);

/* Every rank contributes v; out[size] receives all of them (rank order). */
int ds_dist_allgather_i64(int64_t v, int64_t *out, ds_err *e);

/* Compares v with rank 0's: *first_diff is the lowest rank whose v differs
 * from rank 0's, -1 when all agree (same answer on every rank). */
int ds_dist_agree(uint64_t v, int *first_diff, ds_err *e);

/* Rows of `row_bytes` bytes, in place: rank q holds rows [off[q], off[q+1])
 * of buf (off[size+1], ascending, the same on every rank); afterwards every
 * rank holds all rows [off[0], off[size]). The expert exchange's "outputs
 * back" when every rank holds the same packed rows. */
int ds_dist_allgather_rows(void *buf, size_t row_bytes, const int64_t *off, ds_err *e);

/* FNV-1a over bytes, chained from h (start: DS_DIST_HASH0). */
#define DS_DIST_HASH0 1469598103934665603ull
uint64_t ds_dist_hash(uint64_t h, const void *p, size_t n);


/* ------------------------------------------------------------------------
 * Training collectives (data parallel, ZeRO-1: src/train/dp.c). Counts and
 * offsets are in elements; each rank's part must stay below 2^31 elements
 * per call (a clear DS_ERANGE otherwise). Alone every one is a copy/no-op.
 */

/* buf[n] summed over ranks, in place, on every rank (integers: exact). */
int ds_dist_allreduce_sum_i64(int64_t *buf, int64_t n, ds_err *e);

/* buf[n] summed over ranks, in place, on every rank. Exact (the same bits
 * whatever the reduction order) only where at most one rank holds a
 * nonzero per element: the gradient norm's per-piece sums. */
int ds_dist_allreduce_sum_f64(double *buf, int64_t n, ds_err *e);

/* floats: rank q holds [off[q], off[q+1]) of buf (off[size+1]); afterwards
 * every rank holds all of [off[0], off[size]) (the ZeRO-1 parameter gather). */
int ds_dist_allgatherv_f32(float *buf, const int64_t *off, ds_err *e);

/* floats: rank q sends mine[off[q+1] - off[q]]; rank 0 receives them all
 * into all[off[0] .. off[size]) (all is ignored elsewhere; on rank 0 mine may
 * be all + off[0], in place). */
int ds_dist_gatherv_f32(const float *mine, float *all, const int64_t *off, ds_err *e);

/* floats, all-to-all: to rank q send[sdsp[q] .. + scnt[q]), from rank q into
 * recv[rdsp[q] .. + rcnt[q]) (the ordered reduce-scatter's transport). */
int ds_dist_alltoallv_f32(const float *send, const int64_t *scnt, const int64_t *sdsp, float *recv,
                          const int64_t *rcnt, const int64_t *rdsp, ds_err *e);

/* ------------------------------------------------------------------ */
/* Point to point (serve: ranks > 0 as expert servers of rank 0) and the
 * communication counters (bench). Block added by the mpiserve branch.   */

/* 1 when MPI may be called from several threads one at a time (serve). */
int ds_dist_threads_ok(void);

/* Bytes and time inside the operations of this file on this rank, since
 * the start or the last reset: sent = this rank's data leaving it (a
 * broadcast or all-gather counts it once per receiving rank), recv = data
 * arriving; seconds = wall time inside the calls (waiting included;
 * ds_dist_probe, waiting for work, excluded). */
typedef struct ds_dist_stats {
    uint64_t bytes_sent, bytes_recv, calls;
    double seconds;
} ds_dist_stats;
void ds_dist_stats_get(ds_dist_stats *s);
void ds_dist_stats_reset(void);

/* A send in flight (ds_dist_isend); buf must stay valid until ds_dist_wait. */
typedef struct ds_dist_req { _Alignas(8) unsigned char opaque[16]; } ds_dist_req;
int ds_dist_isend(int dest, int tag, const void *buf, size_t bytes, ds_dist_req *req, ds_err *e);
int ds_dist_wait(ds_dist_req *req, ds_err *e);
/* Waits (polling, sleeping up to 1 ms between polls: an idle rank does
 * not burn its core) until a message from rank src arrives: its tag and size. */
int ds_dist_probe(int src, int *tag, size_t *bytes, ds_err *e);
/* Receives one message from src with tag into buf[bytes] (waiting as
 * above); *got: its size (may be NULL). A longer message is an error. */
int ds_dist_recv(int src, int tag, void *buf, size_t bytes, size_t *got, ds_err *e);

#endif
