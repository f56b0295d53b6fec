/*
 * bench_mla_decode.c - CPU-time measurements for long-context decode (the
 * numbers in README "Long context"), meant for a shared, noisy machine:
 * process CPU time, AVX-512 and AVX2 flash-decode steps alternating in one
 * process. A manual measurement, not a test.
 *
 *   make lib && cc -O2 -Isrc tools/bench_mla_decode.c build/libdeepseek.a -fopenmp -ljansson \
 *      -lpcre2-8 -lopenblas -lm -lpthread -lmpi -o build/bench_mla_decode
 *   build/bench_mla_decode kernel [ROWS=4096]     ds_mla_attn_step alone: 16 heads x ROWS rows of 576,
 *                                                 splits of 256 in blocks of 64, best of 9 per step kind
 *   build/bench_mla_decode kernel-bf16 [ROWS=4096]  the bf16-row step (vdpbf16ps, AVX2) and its
 *                                                 scores alone against the fp32 step, best of 20
 *   build/bench_mla_decode kernel-i8 [ROWS=4096]  the i8-row step (vpdpbusd) and its parts (scores,
 *                                                 weight rounding, weighted sum) against the bf16
 *                                                 step, alternating, best of 20
 *   build/bench_mla_decode kl FILE DEPTH [N=32] [THREADS=2]
 *                                                 accuracy of the cache types at depth: DEPTH
 *                                                 pseudo-random tokens prefilled once (f32), the
 *                                                 rows copied into q8, fp8, bf16 and i8 caches,
 *                                                 then N decode steps on each: mean / max KL,
 *                                                 top-1 agreement, max |dlogit| against f32
 *   build/bench_mla_decode model-ab FILE DEPTH [N=16] [P=0] [THREADS=1]
 *                                                 f32 vs bf16 cache alternating in one process
 *                                                 (filled once): CPU ms per decoded token, and per
 *                                                 token of a P-token prefill at that depth
 *   build/bench_mla_decode model FILE DEPTH [N=16] [f32|q8|fp8|bf16|i8]
 *                                                 CPU ms per decoded token after DEPTH tokens
 *                                                 (1 thread), 3 alternating pairs
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/thread.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "runtime/compare.h"
#include "runtime/generate.h"
#include "tensor/ops.h"

static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int kernel(int64_t S) {
    int64_t H = 16, W = 576, R = 512, blk = 64;
    float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(H * W) * sizeof(float));
    float *u = malloc((size_t)(H * R) * sizeof(float)), *m = malloc((size_t)H * sizeof(float));
    float *l = malloc((size_t)H * sizeof(float)), *sc = malloc((size_t)DS_MLA_STEP_SCRATCH(H, blk, W) * sizeof(float));
    if (!kv || !q || !u || !m || !l || !sc) return 1;
    srand(1);
    for (int64_t i = 0; i < S * W; i++) kv[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < H * W; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int pass = 0; pass < 6; pass++) {
        bool avx2 = pass % 2 == 0;
        ds_ops_force_avx2(avx2);
        double best = 1e9;
        for (int r = 0; r < 9; r++) {
            double t = cpu_s();
            for (int64_t j0 = 0; j0 < S; j0 += 256) {
                for (int64_t h = 0; h < H; h++) { m[h] = -INFINITY; l[h] = 0; }
                memset(u, 0, (size_t)(H * R) * sizeof(float));
                for (int64_t j = j0; j < j0 + 256 && j < S; j += blk)
                    ds_mla_attn_step(u, m, l, q, W, H, kv + j * W, W, j + blk <= S ? blk : S - j, R, 0.07f, sc);
            }
            t = cpu_s() - t;
            if (t < best) best = t;
        }
        printf("%s step, 16 heads x %lld rows: %.3f ms, %.1f GFLOP/s\n", avx2 ? "avx2  " : (ds_ops_has_avx512() ? "avx512" : "avx2  "),
               (long long)S, best * 1e3, 2.0 * (double)(S * H * (W + R)) / best * 1e-9);
    }
    free(kv); free(q); free(u); free(m); free(l); free(sc);
    return 0;
}

/* the bf16 step (--kv-type bf16) against the fp32 step at the widest level,
 * and the bf16 step's parts (scores alone): vdpbf16ps vs AVX2, alternating */
static int kernel_bf16(int64_t S) {
    int64_t H = 16, W = 576, R = 512, blk = 64;
    float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(H * W) * sizeof(float));
    uint16_t *kvb = malloc((size_t)(S * W) * 2), *qb = malloc((size_t)(H * W) * 2);
    float *u = malloc((size_t)(H * R) * sizeof(float)), *m = malloc((size_t)H * sizeof(float));
    float *l = malloc((size_t)H * sizeof(float)), *sc = malloc((size_t)DS_MLA_STEP_BF16_SCRATCH(H, blk, W) * sizeof(float));
    if (!kv || !q || !kvb || !qb || !u || !m || !l || !sc) return 1;
    srand(1);
    for (int64_t i = 0; i < S * W; i++) kv[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < H * W; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    ds_bf16_round_row(kvb, kv, S * W);
    ds_bf16_round_row(qb, q, H * W);
    static const char *names[] = { "f32 step (widest)     ", "bf16 step, vdpbf16ps  ", "bf16 step, avx2       ",
                                   "bf16 scores, vdpbf16ps", "bf16 scores, avx2     " };
    double best[5] = { 1e9, 1e9, 1e9, 1e9, 1e9 };
    for (int pass = 0; pass < 4; pass++)
        for (int kind = 0; kind < 5; kind++) {
            ds_ops_force_avx2(kind == 2 || kind == 4);
            for (int r = 0; r < 5; r++) {
                double t = cpu_s();
                for (int64_t j0 = 0; j0 < S; j0 += 256) {
                    for (int64_t h = 0; h < H; h++) { m[h] = -INFINITY; l[h] = 0; }
                    memset(u, 0, (size_t)(H * R) * sizeof(float));
                    for (int64_t j = j0; j < j0 + 256 && j < S; j += blk) {
                        int64_t nb = j + blk <= S ? blk : S - j;
                        if (kind == 0) ds_mla_attn_step(u, m, l, q, W, H, kv + j * W, W, nb, R, 0.07f, sc);
                        else if (kind <= 2) ds_mla_attn_step_bf16(u, m, l, qb, W, H, kvb + j * W, W, nb, R, 0.07f, sc);
                        else ds_mla_scores_bf16(sc, nb + 8, qb, W, H, kvb + j * W, W, nb, sc + H * (nb + 9));
                    }
                }
                t = cpu_s() - t;
                if (t < best[kind]) best[kind] = t;
            }
        }
    ds_ops_force_avx2(false);
    for (int kind = 0; kind < 5; kind++)
        printf("%s 16 heads x %lld rows: %.3f ms\n", names[kind], (long long)S, best[kind] * 1e3);
    printf("(vdpbf16ps in use: %s)\n", ds_mla_bf16_dp_in_use() ? "yes" : "no");
    free(kv); free(q); free(kvb); free(qb); free(u); free(m); free(l); free(sc);
    return 0;
}

/* the i8 step (--kv-type i8) against the bf16 step at the widest level, and
 * the i8 step's parts, alternating */
static int kernel_i8(int64_t S) {
    int64_t H = 16, W = 576, R = 512, blk = 64, rb = DS_KV_I8_HEAD + W;
    float *kv = malloc((size_t)(S * W) * sizeof(float)), *q = malloc((size_t)(H * W) * sizeof(float));
    uint16_t *kvb = malloc((size_t)(S * W) * 2), *qb = malloc((size_t)(H * W) * 2);
    uint8_t *kvi = malloc((size_t)(S * rb)), *qi = malloc((size_t)DS_MLA_Q_I8_BYTES(H, W));
    int64_t nsc = DS_MAX(DS_MLA_STEP_BF16_SCRATCH(H, blk, W), DS_MLA_STEP_I8_SCRATCH(H, blk, R));
    float *u = malloc((size_t)(H * R) * sizeof(float)), *m = malloc((size_t)H * sizeof(float));
    float *l = malloc((size_t)H * sizeof(float)), *sc = malloc((size_t)nsc * sizeof(float));
    uint8_t *pq = malloc((size_t)(H * blk)), *vt = aligned_alloc(64, (size_t)(2 * (blk + 3) * R + 64) / 64 * 64);
    float *dp = malloc((size_t)H * sizeof(float)), *al = calloc((size_t)H, sizeof(float));
    if (!kv || !q || !kvb || !qb || !kvi || !qi || !u || !m || !l || !sc || !pq || !vt || !dp || !al) return 1;
    srand(1);
    for (int64_t i = 0; i < S * W; i++) kv[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < H * W; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    ds_bf16_round_row(kvb, kv, S * W);
    ds_bf16_round_row(qb, q, H * W);
    /* the I8 rows as kvcache.c writes them: scales per part, code sums, codes */
    for (int64_t j = 0; j < S; j++) {
        uint8_t *row = kvi + j * rb;
        memset(row, 0, DS_KV_I8_HEAD);
        for (int p = 0; p < 2; p++) {
            int64_t i0 = p ? R : 0, i1 = p ? W : R;
            float amax = 0, d, id;
            int32_t sum = 0;
            for (int64_t i = i0; i < i1; i++) amax = fmaxf(amax, fabsf(kv[j * W + i]));
            d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0;
            for (int64_t i = i0; i < i1; i++) {
                int8_t c = (int8_t)nearbyintf(kv[j * W + i] * id);
                row[DS_KV_I8_HEAD + i] = (uint8_t)c;
                sum += c;
            }
            memcpy(row + 4 * p, &d, 4);
            memcpy(row + 12 + 4 * p, &sum, 4);
        }
    }
    ds_mla_q_i8(qi, q, W, H, W, R);
    static const char *names[] = { "bf16 step (widest)    ", "i8 step (widest)      ", "i8 scores             ",
                                   "i8 weight rounding    ", "i8 weighted sum       " };
    double best[5] = { 1e9, 1e9, 1e9, 1e9, 1e9 };
    for (int pass = 0; pass < 4; pass++)
        for (int kind = 0; kind < 5; kind++)
            for (int r = 0; r < 5; r++) {
                double t = cpu_s();
                for (int64_t j0 = 0; j0 < S; j0 += 256) {
                    for (int64_t h = 0; h < H; h++) { m[h] = -INFINITY; l[h] = 0; }
                    memset(u, 0, (size_t)(H * R) * sizeof(float));
                    for (int64_t j = j0; j < j0 + 256 && j < S; j += blk) {
                        int64_t nb = j + blk <= S ? blk : S - j;
                        if (kind == 0) ds_mla_attn_step_bf16(u, m, l, qb, W, H, kvb + j * W, W, nb, R, 0.07f, sc);
                        else if (kind == 1) ds_mla_attn_step_i8(u, m, l, qi, H, kvi + j * rb, rb, W, nb, R, 0.07f, sc);
                        else if (kind == 2) ds_mla_scores_i8(sc, nb + 8, qi, H, kvi + j * rb, rb, W, R, nb);
                        else if (kind == 3) ds_mla_p_i8(pq, dp, sc, nb + 8, H, kvi + j * rb, rb, nb);
                        else ds_mla_pv_i8(u, R, pq, dp, al, H, kvi + j * rb, rb, nb, vt);
                    }
                }
                t = cpu_s() - t;
                if (t < best[kind]) best[kind] = t;
            }
    for (int kind = 0; kind < 5; kind++)
        printf("%s 16 heads x %lld rows: %.3f ms\n", names[kind], (long long)S, best[kind] * 1e3);
    printf("(vpdpbusd in use: %s)\n", ds_mla_i8_dp_in_use() ? "yes" : "no");
    free(kv); free(q); free(kvb); free(qb); free(kvi); free(qi); free(u); free(m); free(l); free(sc);
    free(pq); free(vt); free(dp); free(al);
    return 0;
}

static int model(const char *path, int64_t depth, int64_t n, const char *kvt) {
    ds_err e = { 0 };
    ds_model *m;
    ds_ctx *x;
    ds_kvcache c;
    ds_threads_set(1);
    if (ds_model_open_opts(&m, path, NULL, &e) || ds_ctx_new(&x, &e) || ds_kvcache_init(&c, m, depth + n + 8, &e) ||
        ds_kvcache_set_type(&c, ds_kv_type_from_name(kvt), &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int64_t V = ds_model_config(m)->vocab_size;
    float *lg = malloc((size_t)V * sizeof(float));
    int32_t *tok = malloc((size_t)(depth + n + 8) * sizeof(int32_t));
    if (!lg || !tok) return 1;
    for (int64_t i = 0; i < depth + n + 8; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    if (depth > 0 && ds_prefill(m, x, &c, tok, depth, 512, lg, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    for (int pass = 0; pass < 6; pass++) {
        bool avx2 = pass % 2 == 1;
        ds_ops_force_avx2(avx2);
        ds_kvcache_truncate(&c, depth);
        double t = cpu_s();
        for (int64_t i = 0; i < n; i++) {
            ds_seq_chunk ch = { &c, tok + depth + i, 1, false };
            if (ds_model_forward(m, x, &ch, 1, lg, NULL, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
        }
        printf("%s step, depth %lld, %s cache: %.2f CPU ms/token\n", avx2 || !ds_ops_has_avx512() ? "avx2  " : "avx512",
               (long long)depth, kvt, (cpu_s() - t) / (double)n * 1e3);
        fflush(stdout);
    }
    free(lg); free(tok);
    ds_kvcache_free(&c);
    ds_ctx_free(x);
    ds_model_close(m);
    return 0;
}

static int kl(const char *path, int64_t depth, int64_t n, int threads) {
    static const ds_kv_type kts[5] = { DS_KV_F32, DS_KV_Q8, DS_KV_FP8, DS_KV_BF16, DS_KV_I8 };
    ds_err e = { 0 };
    ds_model *m;
    ds_ctx *x;
    ds_kvcache c[5];
    ds_threads_set(threads);
    int64_t cap = depth + n + 8;
    if (ds_model_open_opts(&m, path, NULL, &e) || ds_ctx_new(&x, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    for (int k = 0; k < 5; k++)
        if (ds_kvcache_init(&c[k], m, cap, &e) || ds_kvcache_set_type(&c[k], kts[k], &e) ||
            ds_kvcache_reserve(&c[k], cap, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    int64_t V = ds_model_config(m)->vocab_size;
    float *lg = malloc((size_t)(5 * n * V) * sizeof(float));
    int32_t *tok = malloc((size_t)cap * sizeof(int32_t));
    if (!lg || !tok) return 1;
    for (int64_t i = 0; i < cap; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    double t = cpu_s();
    if (depth > 0 && ds_prefill(m, x, &c[0], tok, depth, 512, lg, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    printf("prefill of %lld: %.1f CPU s\n", (long long)depth, cpu_s() - t);
    for (int k = 1; k < 5; k++) {
        for (int64_t l = 0; l < c[0].n_layer; l++)
            for (int64_t j = 0; j < depth; j++)
                ds_kvcache_write_row(&c[k], l, j, ds_kvcache_rows_f32(&c[0], l, j + 1, NULL) + j * c[0].width[l]);
        c[k].n_past = depth;
    }
    for (int k = 0; k < 5; k++) {
        t = cpu_s();
        for (int64_t i = 0; i < n; i++) {
            ds_seq_chunk ch = { &c[k], tok + depth + i, 1, false };
            if (ds_model_forward(m, x, &ch, 1, lg + (k * n + i) * V, NULL, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
        }
        double ms = (cpu_s() - t) / (double)n * 1e3;
        if (k == 0) { printf("depth %lld, f32 cache: decode %.1f CPU ms/token\n", (long long)depth, ms); continue; }
        ds_logit_stats st;
        ds_logit_stats_compute(lg, lg + k * n * V, n, V, &st);
        printf("depth %lld, %-4s cache vs f32, %lld decode steps: mean KL %.3g, max KL %.3g, top-1 %.1f %%, max |dlogit| "
               "%.3g, rms %.3g (decode %.1f CPU ms/token)\n", (long long)depth, ds_kv_type_name(kts[k]), (long long)n,
               st.kl_mean, st.kl_max, 100 * st.top1, st.max_abs, st.rms, ms);
        fflush(stdout);
    }
    free(lg); free(tok);
    for (int k = 0; k < 5; k++) ds_kvcache_free(&c[k]);
    ds_ctx_free(x);
    ds_model_close(m);
    return 0;
}

/* f32 vs bf16 cache in one process: the context filled once (f32), copied
 * into a bf16 cache (rows rounded), then N decode steps on each, alternating,
 * CPU time per token at `threads` threads; and the prefill of P tokens at that
 * depth the same way (P = 0: skipped) */
static int model_ab(const char *path, int64_t depth, int64_t n, int64_t P, int threads) {
    ds_err e = { 0 };
    ds_model *m;
    ds_ctx *x;
    ds_kvcache c[2];
    ds_threads_set(threads);
    int64_t cap = depth + n + P + 8;
    if (ds_model_open_opts(&m, path, NULL, &e) || ds_ctx_new(&x, &e) || ds_kvcache_init(&c[0], m, cap, &e) ||
        ds_kvcache_init(&c[1], m, cap, &e) || ds_kvcache_set_type(&c[1], DS_KV_BF16, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int64_t V = ds_model_config(m)->vocab_size;
    float *lg = malloc((size_t)V * sizeof(float)), *row = malloc(4096 * sizeof(float));
    int32_t *tok = malloc((size_t)cap * sizeof(int32_t));
    if (!lg || !tok || !row) return 1;
    for (int64_t i = 0; i < cap; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    if (depth > 0 && ds_prefill(m, x, &c[0], tok, depth, 512, lg, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    if (ds_kvcache_reserve(&c[1], cap, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    for (int64_t l = 0; l < c[0].n_layer; l++)
        for (int64_t j = 0; j < depth; j++) {
            const float *r = ds_kvcache_rows_f32(&c[0], l, j + 1, NULL) + j * c[0].width[l];
            ds_kvcache_write_row(&c[1], l, j, r);
        }
    c[1].n_past = depth;
    double tg[2][3], pp[2][3];
    for (int pass = 0; pass < 6; pass++) {
        int k = pass % 2;
        ds_kvcache_truncate(&c[k], depth);
        double t = cpu_s();
        for (int64_t i = 0; i < n; i++) {
            ds_seq_chunk ch = { &c[k], tok + depth + i, 1, false };
            if (ds_model_forward(m, x, &ch, 1, lg, NULL, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
        }
        tg[k][pass / 2] = (cpu_s() - t) / (double)n * 1e3;
        ds_kvcache_truncate(&c[k], depth);
        pp[k][pass / 2] = 0;
        if (P > 0) {
            t = cpu_s();
            if (ds_prefill(m, x, &c[k], tok + depth, P, 512, lg, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
            pp[k][pass / 2] = (cpu_s() - t) / (double)P * 1e3;
        }
        printf("depth %lld, %s cache, %d thread(s): decode %.2f CPU ms/token, prefill %.2f CPU ms/token\n",
               (long long)depth, k ? "bf16" : "f32 ", threads, tg[k][pass / 2], pp[k][pass / 2]);
        fflush(stdout);
    }
    free(lg); free(tok); free(row);
    ds_kvcache_free(&c[0]);
    ds_kvcache_free(&c[1]);
    ds_ctx_free(x);
    ds_model_close(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "kernel")) return kernel(argc > 2 ? atoll(argv[2]) : 4096);
    if (argc >= 2 && !strcmp(argv[1], "kernel-i8")) return kernel_i8(argc > 2 ? atoll(argv[2]) : 4096);
    if (argc >= 2 && !strcmp(argv[1], "kernel-bf16")) return kernel_bf16(argc > 2 ? atoll(argv[2]) : 4096);
    if (argc >= 4 && !strcmp(argv[1], "kl"))
        return kl(argv[2], atoll(argv[3]), argc > 4 ? atoll(argv[4]) : 32, argc > 5 ? atoi(argv[5]) : 2);
    if (argc >= 4 && !strcmp(argv[1], "model-ab"))
        return model_ab(argv[2], atoll(argv[3]), argc > 4 ? atoll(argv[4]) : 16, argc > 5 ? atoll(argv[5]) : 0,
                        argc > 6 ? atoi(argv[6]) : 1);
    if (argc >= 4 && !strcmp(argv[1], "model"))
        return model(argv[2], atoll(argv[3]), argc > 4 ? atoll(argv[4]) : 16, argc > 5 ? argv[5] : "f32");
    fprintf(stderr, "usage: bench_mla_decode kernel [ROWS] | kernel-bf16 [ROWS] | kernel-i8 [ROWS] | kl FILE DEPTH [N] [THREADS] | model-ab FILE DEPTH [N] [P] [THREADS] | model FILE DEPTH [N] [f32|q8|fp8|bf16|i8]\n");
    return 2;
}
