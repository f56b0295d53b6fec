/*
 * test_ep.c - the expert exchange plan of expert-parallel training
 * (src/train/ep.c). N ranks are simulated in one process: each packs random
 * routed rows by expert, every rank's plan is built from the same gathered
 * counts, the all-to-all is replayed from the plans (each source's run for
 * owner q copied to q's receive run from that source), each owner applies
 * "expert" x (y = (x + 1)·row + x) to the rows its plan says are x's, and
 * the rows come back the same way. The plain twin evaluates every slot on
 * its own expert directly; the two must agree exactly, for N dividing E,
 * not dividing it, and N > E (owners of nothing). The one-process transport
 * (ds_ep_dispatch / ds_ep_return, src/dist alone) is checked too.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "dist/dist.h"
#include "train/ep.h"

enum { D = 3, MAXN = 6 };

static float expert_fn(int64_t x, float v) { return (float)(x + 1) * v + (float)x; }

static void ep_case(int N, int64_t E, uint64_t seed) {
    ds_rng r; ds_rng_seed(&r, seed);
    ds_err e = { 0 };
    int64_t *cnt_all = calloc((size_t)(N * E), sizeof *cnt_all);
    float *send[MAXN], *out[MAXN], *recv[MAXN], *ref[MAXN];
    int64_t *ex[MAXN], S[MAXN];
    ds_ep_plan pl[MAXN];
    for (int p = 0; p < N; p++) {
        S[p] = (int64_t)(ds_rng_u64(&r) % 23);   /* 0 .. 22 slots, some ranks empty */
        ex[p] = malloc((size_t)(S[p] + 1) * sizeof *ex[p]);
        for (int64_t s = 0; s < S[p]; s++) cnt_all[p * E + ds_rng_u64(&r) % (uint64_t)E]++;
        int64_t s = 0;   /* packed: grouped by expert ascending */
        for (int64_t x = 0; x < E; x++)
            for (int64_t i = 0; i < cnt_all[p * E + x]; i++) ex[p][s++] = x;
        send[p] = malloc((size_t)(S[p] * D + 1) * sizeof(float));
        out[p] = calloc((size_t)(S[p] * D + 1), sizeof(float));
        ref[p] = malloc((size_t)(S[p] * D + 1) * sizeof(float));
        for (int64_t i = 0; i < S[p] * D; i++) send[p][i] = (float)(ds_rng_u64(&r) % 1000) / 8.0f;
        for (int64_t i = 0; i < S[p] * D; i++) ref[p][i] = expert_fn(ex[p][i / D], send[p][i]);   /* the plain twin */
    }
    for (int q = 0; q < N; q++) {
        CHECK(ds_ep_plan_init(&pl[q], E, N, q, &e) == 0);
        CHECK_MSG(ds_ep_plan_build(&pl[q], cnt_all, &e) == 0, "%s", e.msg);
        CHECK_EQ_INT(pl[q].lo, E * q / N);
        CHECK_EQ_INT(pl[q].hi, E * (q + 1) / N);
        CHECK_EQ_INT(pl[q].soff[N], S[q]);
        recv[q] = malloc((size_t)(pl[q].roff[N] * D + 1) * sizeof(float));
    }
    /* rows out: source p's run for owner q -> q's run from p */
    for (int p = 0; p < N; p++)
        for (int q = 0; q < N; q++) {
            int64_t n = pl[p].soff[q + 1] - pl[p].soff[q];
            CHECK_MSG(n == pl[q].roff[p + 1] - pl[q].roff[p], "N %d E %lld: %d -> %d sends %lld rows, %d expects %lld",
                      N, (long long)E, p, q, (long long)n, q, (long long)(pl[q].roff[p + 1] - pl[q].roff[p]));
            if (n != pl[q].roff[p + 1] - pl[q].roff[p]) continue;
            memcpy(recv[q] + pl[q].roff[p] * D, send[p] + pl[p].soff[q] * D, (size_t)(n * D) * sizeof(float));
        }
    /* owners: each source's rows of each own expert */
    for (int q = 0; q < N; q++) {
        int64_t ne = pl[q].hi - pl[q].lo;
        for (int p = 0; p < N; p++) {
            const int64_t *rx = pl[q].rex + p * (ne + 1);
            CHECK_EQ_INT(rx[0], pl[q].roff[p]);
            CHECK_EQ_INT(rx[ne], pl[q].roff[p + 1]);
            for (int64_t j = 0; j < ne; j++)
                for (int64_t i = rx[j] * D; i < rx[j + 1] * D; i++) recv[q][i] = expert_fn(pl[q].lo + j, recv[q][i]);
        }
    }
    /* rows back */
    for (int p = 0; p < N; p++)
        for (int q = 0; q < N; q++) {
            int64_t n = pl[p].soff[q + 1] - pl[p].soff[q];
            if (n != pl[q].roff[p + 1] - pl[q].roff[p]) continue;
            memcpy(out[p] + pl[p].soff[q] * D, recv[q] + pl[q].roff[p] * D, (size_t)(n * D) * sizeof(float));
        }
    for (int p = 0; p < N; p++)
        CHECK_MSG(!memcmp(out[p], ref[p], (size_t)(S[p] * D) * sizeof(float)),
                  "N %d E %lld: rank %d's rows came back different from the direct evaluation", N, (long long)E, p);
    for (int q = 0; q < N; q++) { ds_ep_plan_free(&pl[q]); free(recv[q]); }
    for (int p = 0; p < N; p++) { free(send[p]); free(out[p]); free(ref[p]); free(ex[p]); }
    free(cnt_all);
}

TEST(train_ep_plan_simulated_ranks) {
    ep_case(1, 4, 1);
    ep_case(2, 4, 2);
    ep_case(3, 4, 3);   /* N does not divide E */
    ep_case(3, 5, 4);
    ep_case(4, 7, 5);
    ep_case(6, 4, 6);   /* N > E: ranks owning no expert */
    ep_case(5, 64, 7);
}

/* one process (no mpirun): the transport through src/dist is a copy */
TEST(train_ep_one_process_transport) {
    ds_err e = { 0 };
    ds_ep_plan p;
    CHECK(ds_ep_plan_init(&p, 3, 1, 0, &e) == 0);
    int64_t cnt[3] = { 2, 0, 1 };
    CHECK_MSG(ds_ep_plan_exchange(&p, cnt, &e) == 0, "%s", e.msg);
    CHECK_EQ_INT(p.roff[1], 3);
    CHECK_EQ_INT(p.rex[1], 2);
    CHECK_EQ_INT(p.rex[2], 2);
    float x[3 * D], y[3 * D], z[3 * D];
    for (int i = 0; i < 3 * D; i++) x[i] = (float)i + 0.5f;
    CHECK(ds_ep_dispatch(&p, x, y, D, &e) == 0);
    CHECK(!memcmp(x, y, sizeof x));
    CHECK(ds_ep_return(&p, y, z, D, &e) == 0);
    CHECK(!memcmp(x, z, sizeof x));
    int64_t bad[3] = { 1, -1, 0 };
    memcpy(p.cnt_all, bad, sizeof bad);
    CHECK(ds_ep_plan_build(&p, p.cnt_all, &e) != 0);
    CHECK_MSG(strstr(e.msg, "expert 1") != NULL, "error should name the expert: %s", e.msg);
    ds_ep_plan_free(&p);
    CHECK(ds_ep_plan_init(&p, 0, 2, 0, &e) != 0);
}

/* The real transport. Run alone it is the one-process path; the MPI cases
 * run it as `mpirun -np N build/tests/run_tests train_ep_mpi_transport`
 * (tests/cli_mpi_train_tests.sh): every rank derives every rank's packed
 * rows from one seed, exchanges only its own counts and rows through
 * src/dist, and checks what comes back against the direct evaluation. */
TEST(train_ep_mpi_transport) {
    ds_err e = { 0 };
    CHECK_MSG(ds_dist_init(&e) == 0, "%s", e.msg);
    int N = ds_dist_size(), me = ds_dist_rank();
    for (int64_t E = 2; E <= 7; E += 5) {   /* E = 2 (< N = 3: an owner of nothing) and 7 */
        ds_rng r; ds_rng_seed(&r, 91 + (uint64_t)E);
        int64_t *cnt = calloc((size_t)(N * E), sizeof *cnt), S = 0;
        for (int p = 0; p < N; p++) {
            int64_t n = (int64_t)(ds_rng_u64(&r) % 17);
            for (int64_t s = 0; s < n; s++) cnt[p * E + ds_rng_u64(&r) % (uint64_t)E]++;
            if (p == me) S = n;
        }
        float *x = malloc((size_t)(S * D + 1) * sizeof(float)), *y = malloc((size_t)(S * D + 1) * sizeof(float));
        float *ref = malloc((size_t)(S * D + 1) * sizeof(float));
        for (int64_t i = 0, s = 0; s < S; s++) {
            int64_t xe = 0;
            for (int64_t c = cnt[me * E]; s >= c; c += cnt[me * E + ++xe]) {}
            for (int j = 0; j < D; j++, i++) {
                x[i] = (float)(me * 100 + s) + 0.25f * (float)j;
                ref[i] = expert_fn(xe, x[i]);
            }
        }
        ds_ep_plan p;
        CHECK(ds_ep_plan_init(&p, E, N, me, &e) == 0);
        CHECK_MSG(ds_ep_plan_exchange(&p, cnt + me * E, &e) == 0, "%s", e.msg);
        CHECK_MSG(!memcmp(p.cnt_all, cnt, (size_t)(N * E) * sizeof *cnt), "rank %d: gathered counts differ", me);
        float *rv = malloc((size_t)(p.roff[N] * D + 1) * sizeof(float));
        CHECK_MSG(ds_ep_dispatch(&p, x, rv, D, &e) == 0, "%s", e.msg);
        int64_t ne = p.hi - p.lo;
        for (int src = 0; src < N; src++)
            for (int64_t j = 0; j < ne; j++)
                for (int64_t i = p.rex[src * (ne + 1) + j] * D; i < p.rex[src * (ne + 1) + j + 1] * D; i++)
                    rv[i] = expert_fn(p.lo + j, rv[i]);
        CHECK_MSG(ds_ep_return(&p, rv, y, D, &e) == 0, "%s", e.msg);
        CHECK_MSG(!memcmp(y, ref, (size_t)(S * D) * sizeof(float)), "rank %d of %d, E %lld: rows came back different",
                  me, N, (long long)E);
        ds_ep_plan_free(&p);
        free(cnt); free(x); free(y); free(ref); free(rv);
    }
    ds_dist_finalize();
}
