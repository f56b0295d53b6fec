/*
 * dist.c - the MPI layer (dist.h): job start and end, rank and size, and
 * the few collectives the model and the CLI use (broadcast, agreement,
 * the all-gather of expert outputs). Every MPI_* call of deepseek.c is here.
 */
#include "dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>

static int g_on;            /* MPI initialized by us */
static int g_rank, g_size = 1;
static int g_threads_ok = 1;   /* MPI calls from several threads (one at a time) allowed */

/* communication counters (ds_dist_stats, at the end of this file) */
static ds_dist_stats g_st;
static void count(double t0, size_t sent, size_t recv) {
    g_st.seconds += MPI_Wtime() - t0;
    g_st.bytes_sent += sent;
    g_st.bytes_recv += recv;
    g_st.calls++;
}

static int mpi_err(ds_err *e, int rc, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    return ds_err_set(e, DS_EIO, "rank %d of %d: %s failed: %s", g_rank, g_size, what, s);
}

int ds_dist_init(ds_err *e) {
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
    if (g_on || !ws || !*ws) return DS_OK;
    /* serialized: `serve` calls MPI from its loader, scheduler and main
     * threads, one at a time */
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) return ds_err_set(e, DS_EIO, "MPI_Init failed (launched by mpirun, OMPI_COMM_WORLD_SIZE=%s)", ws);
    g_on = 1;
    g_threads_ok = provided >= MPI_THREAD_SERIALIZED;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return DS_OK;
}

void ds_dist_finalize(void) {
    if (g_on) MPI_Finalize();
    g_on = 0;
}

int ds_dist_rank(void) { return g_rank; }
int ds_dist_size(void) { return g_size; }

void ds_dist_abort(int code) {
    if (g_on) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int ds_dist_bcast(void *buf, size_t bytes, ds_err *e) {
    if (g_size == 1) return DS_OK;
    double t0 = MPI_Wtime();
    for (size_t o = 0; o < bytes;) {   /* counts are int: chunks of 1 GiB */
        int n = (int)DS_MIN(bytes - o, (size_t)1 << 30);
        int rc = MPI_Bcast((char *)buf + o, n, MPI_BYTE, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_err(e, rc, "broadcast");
        o += (size_t)n;
    }
    count(t0, g_rank == 0 ? bytes * (size_t)(g_size - 1) : 0, g_rank == 0 ? 0 : bytes);
    return DS_OK;
}

int ds_dist_allgather_i64(int64_t v, int64_t *out, ds_err *e) {
    if (g_size == 1) { out[0] = v; return DS_OK; }
    double t0 = MPI_Wtime();
    int rc = MPI_Allgather(&v, 1, MPI_INT64_T, out, 1, MPI_INT64_T, MPI_COMM_WORLD);
    count(t0, 8 * (size_t)(g_size - 1), 8 * (size_t)(g_size - 1));
    return rc == MPI_SUCCESS ? DS_OK : mpi_err(e, rc, "all-gather");
}

int ds_dist_agree(uint64_t v, int *first_diff, ds_err *e) {
    *first_diff = -1;
    if (g_size == 1) return DS_OK;
    int64_t *all = malloc((size_t)g_size * sizeof *all);
    if (!all) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc = ds_dist_allgather_i64((int64_t)v, all, e);
    for (int q = 1; !rc && q < g_size; q++)
        if (all[q] != all[0]) { *first_diff = q; break; }
    free(all);
    return rc;
}

int ds_dist_allgather_rows(void *buf, size_t row_bytes, const int64_t *off, ds_err *e) {
    if (g_size == 1) return DS_OK;
    int *cnt = malloc((size_t)g_size * sizeof *cnt), *dsp = malloc((size_t)g_size * sizeof *dsp);
    if (!cnt || !dsp) { free(cnt); free(dsp); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    for (int q = 0; q < g_size; q++) { cnt[q] = (int)(off[q + 1] - off[q]); dsp[q] = (int)(off[q] - off[0]); }
    /* one row is one element, so the counts stay ints for any batch */
    double t0 = MPI_Wtime();
    MPI_Datatype row;
    int rc = MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row);
    if (rc == MPI_SUCCESS && (rc = MPI_Type_commit(&row)) == MPI_SUCCESS) {
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, row, (char *)buf + (size_t)off[0] * row_bytes, cnt, dsp, row, MPI_COMM_WORLD);
        MPI_Type_free(&row);
    }
    /* this rank's rows go to the size - 1 others; the others' rows arrive */
    size_t own = (size_t)(off[g_rank + 1] - off[g_rank]) * row_bytes, all = (size_t)(off[g_size] - off[0]) * row_bytes;
    count(t0, own * (size_t)(g_size - 1), all - own);
    free(cnt);
    free(dsp);
    return rc == MPI_SUCCESS ? DS_OK : mpi_err(e, rc, "expert exchange (all-gather of expert outputs)");
}

uint64_t ds_dist_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ------------------------------------------------------------------------
 * Training collectives (data parallel, ZeRO-1; dist.h, src/train/dp.c).
 */

/* int counts for MPI, or an error naming what did not fit */
static int to_int_counts(const int64_t *n64, int *out, const char *what, ds_err *e) {
    for (int q = 0; q < g_size; q++) {
        if (n64[q] < 0 || n64[q] > INT32_MAX)
            return ds_err_set(e, DS_ERANGE, "rank %d of %d: %s: %lld elements for rank %d exceed one MPI call's 2^31",
                              g_rank, g_size, what, (long long)n64[q], q);
        out[q] = (int)n64[q];
    }
    return DS_OK;
}

int ds_dist_allreduce_sum_i64(int64_t *buf, int64_t n, ds_err *e) {
    if (g_size == 1 || n == 0) return DS_OK;
    if (n > INT32_MAX) return ds_err_set(e, DS_ERANGE, "all-reduce of %lld integers: too many for one call", (long long)n);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? DS_OK : mpi_err(e, rc, "all-reduce (sum)");
}

int ds_dist_allgatherv_f32(float *buf, const int64_t *off, ds_err *e) {
    if (g_size == 1) return DS_OK;
    int64_t *n64 = malloc((size_t)g_size * 2 * sizeof *n64);
    int *cnt = malloc((size_t)g_size * 2 * sizeof *cnt);
    int rc = !n64 || !cnt ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
    if (!rc) {
        for (int q = 0; q < g_size; q++) { n64[q] = off[q + 1] - off[q]; n64[g_size + q] = off[q] - off[0]; }
        rc = to_int_counts(n64, cnt, "parameter all-gather", e);
        if (!rc) rc = to_int_counts(n64 + g_size, cnt + g_size, "parameter all-gather (offsets)", e);
    }
    if (!rc) {
        int m = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, buf + off[0], cnt, cnt + g_size, MPI_FLOAT, MPI_COMM_WORLD);
        if (m != MPI_SUCCESS) rc = mpi_err(e, m, "parameter all-gather");
    }
    free(n64);
    free(cnt);
    return rc;
}

int ds_dist_gatherv_f32(const float *mine, float *all, const int64_t *off, ds_err *e) {
    if (g_size == 1) {
        if (all + off[0] != mine) memmove(all + off[0], mine, (size_t)(off[1] - off[0]) * sizeof(float));
        return DS_OK;
    }
    int64_t *n64 = malloc((size_t)g_size * 2 * sizeof *n64);
    int *cnt = malloc((size_t)g_size * 2 * sizeof *cnt);
    int rc = !n64 || !cnt ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
    if (!rc) {
        for (int q = 0; q < g_size; q++) { n64[q] = off[q + 1] - off[q]; n64[g_size + q] = off[q] - off[0]; }
        rc = to_int_counts(n64, cnt, "gather to rank 0", e);
        if (!rc) rc = to_int_counts(n64 + g_size, cnt + g_size, "gather to rank 0 (offsets)", e);
    }
    if (!rc) {
        const void *sb = g_rank == 0 && mine == all + off[0] ? MPI_IN_PLACE : (const void *)mine;
        int m = MPI_Gatherv(sb, cnt[g_rank], MPI_FLOAT, g_rank == 0 ? all + off[0] : NULL, cnt, cnt + g_size,
                            MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (m != MPI_SUCCESS) rc = mpi_err(e, m, "gather to rank 0");
    }
    free(n64);
    free(cnt);
    return rc;
}

int ds_dist_alltoallv_f32(const float *send, const int64_t *scnt, const int64_t *sdsp, float *recv,
                          const int64_t *rcnt, const int64_t *rdsp, ds_err *e) {
    if (g_size == 1) {
        memmove(recv + rdsp[0], send + sdsp[0], (size_t)scnt[0] * sizeof(float));
        return DS_OK;
    }
    int *c = malloc((size_t)g_size * 4 * sizeof *c);
    if (!c) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc = to_int_counts(scnt, c, "gradient exchange", e);
    if (!rc) rc = to_int_counts(sdsp, c + g_size, "gradient exchange (offsets)", e);
    if (!rc) rc = to_int_counts(rcnt, c + 2 * g_size, "gradient exchange", e);
    if (!rc) rc = to_int_counts(rdsp, c + 3 * g_size, "gradient exchange (offsets)", e);
    if (!rc) {
        int m = MPI_Alltoallv(send, c, c + g_size, MPI_FLOAT, recv, c + 2 * g_size, c + 3 * g_size, MPI_FLOAT,
                              MPI_COMM_WORLD);
        if (m != MPI_SUCCESS) rc = mpi_err(e, m, "gradient exchange (all-to-all)");
    }
    free(c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Point to point (serve: ranks > 0 as expert servers of rank 0) and the
 * communication counters (bench). Block added by the mpiserve branch.   */

int ds_dist_threads_ok(void) { return g_threads_ok; }

void ds_dist_stats_get(ds_dist_stats *s) { *s = g_st; }
void ds_dist_stats_reset(void) { memset(&g_st, 0, sizeof g_st); }

_Static_assert(sizeof(MPI_Request) <= sizeof(((ds_dist_req *)0)->opaque), "ds_dist_req too small for MPI_Request");

/* Waiting without burning a core: rank 0 and its expert servers share the
 * machine's cores with each other (and rank 0 with its HTTP threads). A
 * wait first polls for 2 ms, yielding the core between polls (a forward's
 * gaps between two MoE layers are shorter than that, so a busy exchange
 * never sleeps), then sleeps 10 us doubling up to 1 ms between polls (an
 * idle server wakes 1000 times a second). */
typedef struct poll_wait { double t0; long sleep_ns; } poll_wait;
static void poll_pause(poll_wait *w) {
    if (MPI_Wtime() - w->t0 < 2e-3) {
        sched_yield();
        return;
    }
    struct timespec ts = { 0, w->sleep_ns };
    nanosleep(&ts, NULL);
    if (w->sleep_ns < 1000000) w->sleep_ns *= 2;
}
static int wait_request(MPI_Request *r, MPI_Status *st, const char *what, ds_err *e) {
    poll_wait w = { MPI_Wtime(), 10000 };
    for (;;) {
        int done = 0, rc = MPI_Test(r, &done, st);
        if (rc != MPI_SUCCESS) return mpi_err(e, rc, what);
        if (done) return DS_OK;
        poll_pause(&w);
    }
}

int ds_dist_isend(int dest, int tag, const void *buf, size_t bytes, ds_dist_req *req, ds_err *e) {
    if (bytes > (size_t)INT32_MAX) return ds_err_set(e, DS_EINVAL, "rank %d: a message of %zu bytes to rank %d is over 2 GiB", g_rank, bytes, dest);
    double t0 = MPI_Wtime();
    int rc = MPI_Isend(buf, (int)bytes, MPI_BYTE, dest, tag, MPI_COMM_WORLD, (MPI_Request *)req->opaque);
    count(t0, bytes, 0);
    return rc == MPI_SUCCESS ? DS_OK : mpi_err(e, rc, "send");
}

int ds_dist_wait(ds_dist_req *req, ds_err *e) {
    double t0 = MPI_Wtime();
    int rc = wait_request((MPI_Request *)req->opaque, MPI_STATUS_IGNORE, "send", e);
    count(t0, 0, 0);
    return rc;
}

int ds_dist_probe(int src, int *tag, size_t *bytes, ds_err *e) {
    double t0 = MPI_Wtime();
    poll_wait w = { t0, 10000 };
    MPI_Status st;
    for (;;) {
        int got = 0, rc = MPI_Iprobe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &got, &st);
        if (rc != MPI_SUCCESS) return mpi_err(e, rc, "probe");
        if (got) break;
        poll_pause(&w);
    }
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    *tag = st.MPI_TAG;
    *bytes = (size_t)n;
    return DS_OK;   /* waiting for work is not communication: not counted */
}

int ds_dist_recv(int src, int tag, void *buf, size_t bytes, size_t *got, ds_err *e) {
    if (bytes > (size_t)INT32_MAX) bytes = (size_t)INT32_MAX;
    double t0 = MPI_Wtime();
    MPI_Request r;
    MPI_Status st;
    int rc = MPI_Irecv(buf, (int)bytes, MPI_BYTE, src, tag, MPI_COMM_WORLD, &r);
    if (rc != MPI_SUCCESS) return mpi_err(e, rc, "receive");
    if ((rc = wait_request(&r, &st, "receive", e))) return rc;
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    if (got) *got = (size_t)n;
    count(t0, 0, (size_t)n);
    return DS_OK;
}
