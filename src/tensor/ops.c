/*
 * ops.c - fast paths and dispatch for the kernels in ops.h.
 *
 * Matmul strategy:
 *   - few tokens (decode, T < DS_GEMM_MIN_T) or per-token jobs: one dot
 *     product per weight row and token, rows split across threads; bandwidth
 *     bound, weights read once. F32/BF16 rows are dotted with up to 4 tokens
 *     per pass, each token's bits those of the one-token kernel.
 *   - many tokens (prefill): W is walked in panels of DS_PANEL rows; each
 *     panel is dequantized to fp32 in per-thread scratch and multiplied with
 *     an OpenBLAS sgemm (single-threaded inside our parallel region).
 *   - block-quantized weights (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K and the types of
 *     quant_ext.h) in decode: the T activation rows are quantized once per
 *     call (A8 / K8, quant.h) and each weight row is dotted in integer
 *     arithmetic (quant_avx2.c, quant_ext_avx2.c).
 *   - block-quantized weights repacked at load (w->rp, repack.h): every
 *     token count goes through the x8 kernels (8 rows x up to 4 tokens per
 *     call, repack_avx2.c; 8 for the VNNI kernels of repack_avx512.c and
 *     repack_ext_avx512.c),
 *     decode and prefill alike; a token's result does not depend on the
 *     other tokens of the call. At core/cpu.h level avx512vnni the
 *     Q8_0/Q4_0/Q5_0/Q4_K/Q6_K groups use repack_avx512.c (vpdpbusd;
 *     bit-identical to the AVX2 kernels) and the quant_ext.h types
 *     repack_ext_avx512.c where it has a kernel (also bit-identical).
 *     repack_avx512.c's kernels store a whole group's results straight
 *     into the rows of y (ds_gemm_x8_avx512_ld); the others go through a
 *     buffer copied into y (the copy's store stalls were ~4 % of a
 *     Q4_K_M pp512 at 1 thread).
 *   - FP4 weights (F4_E2M1 rows, and MXFP4 blocks read in place from a
 *     GGUF mapping: fp4.h, mxfp4.h) take the float paths above: a dot per
 *     row and token in decode, dequantized panels in prefill; the two
 *     layouts give the same bits (MXFP4's dot at level avx512 is
 *     mxfp4_avx512.c, bit-identical to its AVX2 twin).
 */
#include "dtype.h"
#include "fp4.h"
#include "mxfp4.h"
#include "ops.h"
#include "ops_isa.h"
#include "quant.h"
#include "quant_isa.h"
#include "repack.h"
#include "../core/cpu.h"
#include "../core/scratch.h"
#include "../core/thread.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DS_GEMM_MIN_T DS_TOKEN_BLOCK_MIN
#define DS_PANEL 64
#define DS_MAX_THREADS 256
#define QTILE 64   /* tokens per tile of the quantized kernels */

extern void openblas_set_num_threads(int);

/* ---------------------------------------------------------------- dispatch */

/* Set once (pthread_once), read-only after: core/cpu.h's level the kernels
 * run at and the DS_QGEMM_MAX_T override. Every dispatch below asks level(),
 * which the test switches lower: g_force_generic to generic, g_force_avx2 to
 * avx2 (the *_avx512.c kernels off). */
static ds_isa g_level;
static int64_t g_qgemm_env;
static bool g_force_generic, g_force_avx2;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void) {
    g_level = ds_isa_level();
    const char *s = getenv("DS_QGEMM_MAX_T");
    g_qgemm_env = s ? atoll(s) : -1;
    openblas_set_num_threads(1);
    ds_dtype_init();
}

static ds_isa level(void) {
    pthread_once(&g_once, init_once);
    if (g_force_generic) return DS_ISA_GENERIC;
    return g_force_avx2 && g_level > DS_ISA_AVX2 ? DS_ISA_AVX2 : g_level;
}

/* 0 generic, 1 the AVX2 kernels (or wider ones where level() allows) */
static int isa(void) { return level() >= DS_ISA_AVX2 ? 1 : 0; }

const char *ds_ops_isa(void) {
    ds_isa l = level();
    return l == DS_ISA_GENERIC ? "generic" : l >= DS_ISA_AVX512_VNNI ? "avx512vnni" : "avx2";
}
bool ds_ops_simd(void) { return isa() == 1; }
void ds_ops_force_generic(bool on) { level(); g_force_generic = on; }
bool ds_ops_has_avx512(void) { level(); return g_level >= DS_ISA_AVX512; }
void ds_ops_force_avx2(bool on) { level(); g_force_avx2 = on; }

/* ----------------------------------------------------------------- scratch */

/* Quantized activation rows live in their own slot (DS_SLOT_ACT), apart
 * from the float slots, so a nested call cannot clobber a caller's scratch. */
static uint8_t *act_buf(int tid, size_t n) { return ds_scratch_bytes(tid, DS_SLOT_ACT, n); }

void ds_ops_cleanup(void) { ds_par_env_thread_free(); }

/* ------------------------------------------------------------ dot products */

static float dot_generic(const ds_tensor *w, int64_t r, const float *x, int64_t K, int tid) {
    float *row = ds_scratch(tid, 0, (size_t)K);
    if (!row) return 0.0f;   /* out of memory: the env records it */
    ds_tensor_row_f32(w, r, 0, K, row);
    float s = 0.0f;
    for (int64_t i = 0; i < K; i++) s += row[i] * x[i];
    return s;
}

static inline const uint8_t *row_ptr(const ds_tensor *w, int64_t r, int64_t K);

static float dot_row_tid(const ds_tensor *w, int64_t r, const float *x, int64_t K, int tid) {
    if (isa() == 1) {
        size_t off = (size_t)r * (size_t)K;
        switch (w->dtype) {
        case DS_DTYPE_F32: return ds_dot_f32_avx2((const float *)w->data + off, x, K);
        case DS_DTYPE_BF16: return ds_dot_bf16_avx2((const uint16_t *)w->data + off, x, K);
        case DS_DTYPE_F16: return ds_dot_f16_avx2((const uint16_t *)w->data + off, x, K);
        case DS_DTYPE_F8_E4M3: {
            const float *srow = w->scale ? w->scale + (size_t)(r / w->block_r) * (size_t)w->scale_cols : NULL;
            return ds_dot_fp8_avx2((const uint8_t *)w->data + off, x, K, srow, w->scale ? w->block_c : (int)K);
        }
        case DS_DTYPE_F4_E2M1:
            return ds_fp4_dot_avx2((const uint8_t *)w->data + off / 2, w->scale_e8m0 + (size_t)r * (size_t)w->scale_cols,
                                   w->block_c, x, K);
        case DS_DTYPE_MXFP4:   /* the AVX-512 twin: the same bits, ~1.3x (tools/bench_mxfp4.c) */
            return level() >= DS_ISA_AVX512 ? ds_mxfp4_dot_avx512(row_ptr(w, r, K), x, K)
                                            : ds_mxfp4_dot_avx2(row_ptr(w, r, K), x, K);
        default: break;
        }
    }
    return dot_generic(w, r, x, K, tid);
}

static inline const uint8_t *row_ptr(const ds_tensor *w, int64_t r, int64_t K) {
    return (const uint8_t *)w->data + ds_dtype_row_bytes(w->dtype, K) * (size_t)r;
}

float ds_dot_row(const ds_tensor *w, int64_t r, const float *x, int64_t K) {
    int tid = ds_thread_id();
    if (isa() == 1 && ds_act_kind(w->dtype)) {
        uint8_t *qa = act_buf(tid, ds_act_row_bytes(w->dtype, K));
        if (!qa) return 0.0f;
        ds_quantize_act_avx2(w->dtype, x, qa, K);
        return ds_vec_dot_avx2(w->dtype, row_ptr(w, r, K), qa, K);
    }
    return dot_row_tid(w, r, x, K, tid);
}

/* Dequantizes rows [r0, r0+n) of w into out[n, K]. */
static void dequant_rows(const ds_tensor *w, int64_t r0, int64_t n, float *out) {
    int64_t K = ds_tensor_cols(w);
    for (int64_t i = 0; i < n; i++) {
        size_t off = (size_t)(r0 + i) * (size_t)K;
        float *o = out + (size_t)i * (size_t)K;
        if (isa() == 1 && w->dtype == DS_DTYPE_BF16) ds_cvt_bf16_avx2(o, (const uint16_t *)w->data + off, K);
        else if (isa() == 1 && w->dtype == DS_DTYPE_F16) ds_cvt_f16_avx2(o, (const uint16_t *)w->data + off, K);
        else if (isa() == 1 && ds_dtype_is_quant(w->dtype)) ds_dequant_row_avx2(w->dtype, row_ptr(w, r0 + i, K), o, K);
        else if (isa() == 1 && w->dtype == DS_DTYPE_F4_E2M1)
            ds_fp4_row_avx2((const uint8_t *)w->data + off / 2, w->scale_e8m0 + (size_t)(r0 + i) * (size_t)w->scale_cols,
                            w->block_c, K, o);
        else if (isa() == 1 && w->dtype == DS_DTYPE_MXFP4) ds_mxfp4_row_avx2(row_ptr(w, r0 + i, K), K, o);
        else if (isa() == 1 && w->dtype == DS_DTYPE_F8_E4M3) {
            const float *srow = w->scale ? w->scale + (size_t)((r0 + i) / w->block_r) * (size_t)w->scale_cols : NULL;
            ds_cvt_fp8_avx2(o, (const uint8_t *)w->data + off, K, srow, 0, w->scale ? w->block_c : 1);
        } else ds_tensor_row_f32(w, r0 + i, 0, K, o);
    }
}

/* ------------------------------------------------------------------ matmul */

typedef struct {
    float *y; int64_t ldy;
    const float *x; int64_t ldx;
    const ds_tensor *w; int64_t r0, N, T, K;
    const uint8_t *qa; size_t ab;   /* quantized activations: T rows of ab bytes */
    bool per_token;                 /* T < DS_GEMM_MIN_T or forced: tokens computed independently */
} matmul_ctx;

/* ------------------------------------------------ repacked (x8) weights */

/* Work units of rows [r0, r0+N) of a repacked weight: the row groups of 8
 * that overlap them (groups [g0, g0+ng); rows of a group outside the range
 * are computed and dropped), then the rows past the last whole group of
 * the tensor (not repacked: [t0, t0+nt), one unit each). Which kernel a
 * row gets depends only on the row, never on the call. */
typedef struct { int64_t g0, ng, t0, nt; } x8_units;

_Static_assert(DS_RP_MAX_T <= QTILE && DS_RP_CORE_T <= QTILE && DS_RP_EXT_T <= QTILE, "x8 token step");

static x8_units x8_split(const ds_tensor *w, int64_t r0, int64_t N) {
    int64_t full = ds_tensor_rows(w) / DS_RP_ROWS * DS_RP_ROWS, b = DS_MIN(r0 + N, full);
    x8_units u = { r0 / DS_RP_ROWS, 0, DS_MAX(r0, full), 0 };
    if (b > r0) u.ng = (b + DS_RP_ROWS - 1) / DS_RP_ROWS - u.g0;
    if (r0 + N > u.t0) u.nt = r0 + N - u.t0;
    return u;
}

static inline bool use_x8(const ds_tensor *w) { return isa() == 1 && w->rp != NULL && ds_repack_supported(w->dtype, ds_tensor_cols(w)); }

/* Units [i0, i1) of x8_split. Tokens are tiled by QTILE so a tile's
 * activations stay in L2 while the thread's groups stream through. */
static void matmul_x8_worker(const matmul_ctx *c, int64_t i0, int64_t i1) {
    x8_units u = x8_split(c->w, c->r0, c->N);
    ds_dtype dt = c->w->dtype;
    size_t gb = ds_dtype_row_bytes(dt, c->K) * DS_RP_ROWS;
    int64_t e0 = DS_MIN(i1, u.ng);
    /* the AVX2 kernels take 4 tokens per call; the VNNI ones (repack_avx512.c,
     * repack_ext_avx512.c) take the whole token tile and split it into runs
     * themselves (runs of 8 from the tile's first token, so a token's run
     * position, and its bits, are the same as with calls of 8) */
    const bool vnni = level() >= DS_ISA_AVX512_VNNI;
    const int step = vnni && (ds_gemm_x8_avx512_has(dt) || ds_gemm_x8_ext_avx512_has(dt)) ? QTILE : DS_RP_MAX_T;
    if (c->T == 1 && vnni && ds_gemv_x8_avx512_has(dt, c->K)) {
        /* one token (decode): gemv_avx512.c over runs of whole groups, straight
         * into y; a group cut by the row range through out[] (same bits) */
        for (int64_t i = i0; i < e0;) {
            int64_t row0 = (u.g0 + i) * DS_RP_ROWS, ra = DS_MAX(row0, c->r0), rb = DS_MIN(row0 + DS_RP_ROWS, c->r0 + c->N);
            const uint8_t *wg = (const uint8_t *)c->w->rp + gb * (size_t)(u.g0 + i);
            if (rb - ra == DS_RP_ROWS) {
                int64_t j = i + 1;
                while (j < e0 && (u.g0 + j + 1) * DS_RP_ROWS <= c->r0 + c->N) j++;
                ds_gemv_x8_avx512(dt, wg, j - i, c->qa, c->K, c->y + row0 - c->r0);
                i = j;
            } else {
                float out[DS_RP_ROWS];
                ds_gemv_x8_avx512(dt, wg, 1, c->qa, c->K, out);
                for (int64_t r = ra; r < rb; r++) c->y[r - c->r0] = out[r - row0];
                i++;
            }
        }
        e0 = i0;   /* the groups are done; the tail rows below */
    }
    /* repack_avx512.c's kernels store a whole group's results straight into y
     * (token t at row t of y); the others, and a group cut by the row range,
     * through out[] (the same bits: the copy moves finished floats) */
    const bool direct = vnni && ds_gemm_x8_avx512_has(dt);
    for (int64_t t0 = 0; t0 < c->T; t0 += QTILE) {
        int64_t t1 = DS_MIN(c->T, t0 + QTILE);
        const void *a[QTILE];   /* the tile's activation rows */
        for (int64_t k = t0; k < t1; k++) a[k - t0] = c->qa + (size_t)k * c->ab;
        for (int64_t i = i0; i < e0; i++) {
            int64_t g = u.g0 + i, row0 = g * DS_RP_ROWS;
            int64_t ra = DS_MAX(row0, c->r0), rb = DS_MIN(row0 + DS_RP_ROWS, c->r0 + c->N);
            const uint8_t *wg = (const uint8_t *)c->w->rp + gb * (size_t)g;
            if (direct && rb - ra == DS_RP_ROWS) {
                ds_gemm_x8_avx512_ld(dt, wg, a, (int)(t1 - t0), c->K, c->y + t0 * c->ldy + (row0 - c->r0), c->ldy);
                continue;
            }
            for (int64_t t = t0; t < t1; t += step) {
                int m = (int)DS_MIN(step, t1 - t);
                const void *const *at = a + (t - t0);
                float out[DS_RP_ROWS * QTILE];
                if (!(vnni && (ds_gemm_x8_avx512(dt, wg, at, m, c->K, out) || ds_gemm_x8_ext_avx512(dt, wg, at, m, c->K, out))))
                    ds_gemm_x8_avx2(dt, wg, at, m, c->K, out);
                for (int k = 0; k < m; k++) {
                    float *yr = c->y + (t + k) * c->ldy - c->r0;
                    if (rb - ra == DS_RP_ROWS) memcpy(yr + row0, out + DS_RP_ROWS * k, DS_RP_ROWS * sizeof(float));
                    else for (int64_t r = ra; r < rb; r++) yr[r] = out[DS_RP_ROWS * k + (r - row0)];
                }
            }
        }
    }
    for (int64_t i = DS_MAX(i0, u.ng); i < i1; i++) {
        int64_t r = u.t0 + (i - u.ng);
        const uint8_t *wr = (const uint8_t *)c->w->rp + ds_dtype_row_bytes(dt, c->K) * (size_t)r;
        for (int64_t t = 0; t < c->T; t++)
            c->y[t * c->ldy + (r - c->r0)] = ds_vec_dot_avx2(dt, wr, c->qa + (size_t)t * c->ab, c->K);
    }
}

/* Block-quantized weights on AVX2: the activation rows are quantized once
 * per call (A8 / K8) and every weight row is dotted in integer arithmetic,
 * 4 tokens per kernel call (the weight block is unpacked once for all 4).
 * Tokens are tiled by QTILE so the tile's activations stay in L2 while the
 * thread's rows stream through. Used up to a token count per type; above
 * it, panels are dequantized for OpenBLAS, which measured faster (1 core,
 * K=2048: K-quants break even around T = 16-32, the per-32-block-scaled
 * Q8_0/Q4_0/Q5_0 around T = 8). DS_QGEMM_MAX_T overrides (benchmarks). */
static int64_t qgemm_max_t(ds_dtype t) {
    isa();
    if (g_qgemm_env >= 0) return g_qgemm_env;
    return ds_act_kind(t) == 2 ? 16 : DS_GEMM_MIN_T - 1;
}

static inline bool use_qdot(const ds_tensor *w, int64_t T) {
    return isa() == 1 && ds_act_kind(w->dtype) != 0 && (use_x8(w) || T < DS_GEMM_MIN_T || T <= qgemm_max_t(w->dtype));
}

/* Work units of a quantized-activation matmul: x8 units or rows. */
static int64_t qdot_units(const ds_tensor *w, int64_t r0, int64_t N) {
    if (!use_x8(w)) return N;
    x8_units u = x8_split(w, r0, N);
    return u.ng + u.nt;
}

/* Activation rows quantized for the integer kernels (A8 / K8, quant.h):
 * rows of several jobs laid end to end (row prefix sums in start), split
 * across threads (each row's bytes are the same whoever quantizes it).
 * Prefill quantizes thousands of rows per call (the MoE's packed rows);
 * done by the calling thread alone they were a serial part of every
 * matmul pass. Few rows (decode) stay on the caller: a fork/join costs
 * more than they do. */
typedef struct {
    int n;                  /* jobs */
    const int64_t *start;   /* [n + 1] row prefix sums */
    const float *const *x; const int64_t *ldx;
    uint8_t *const *qa;     /* [n]: T rows of ab[j] bytes */
    const ds_dtype *dt; const int64_t *K;
} qact_ctx;

static void qact_worker(void *vctx, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const qact_ctx *c = vctx;
    int j = 0;
    for (int64_t r = r0; r < r1; r++) {
        while (c->start[j + 1] <= r) j++;
        int64_t t = r - c->start[j];
        size_t ab = ds_act_row_bytes(c->dt[j], c->K[j]);
        ds_quantize_act_avx2(c->dt[j], c->x[j] + t * c->ldx[j], c->qa[j] + (size_t)t * ab, c->K[j]);
    }
}

static void qact_run(const qact_ctx *c) {
    int64_t rows = c->start[c->n], elems = 0;
    for (int j = 0; j < c->n; j++) elems += (c->start[j + 1] - c->start[j]) * c->K[j];
    if (rows <= 0) return;
    /* ~64K values per thread at least (a few tens of µs of work) */
    int64_t min_rows = DS_MAX(1, rows * 65536 / DS_MAX(elems, 1));
    ds_par_for(rows, min_rows, qact_worker, (void *)c);
}

static void matmul_qrows_worker(void *vctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    matmul_ctx *c = vctx;
    ds_dtype dt = c->w->dtype;
    if (use_x8(c->w)) {
        matmul_x8_worker(c, i0, i1);
        return;
    }
    if (c->per_token && ds_dot_ext_token_exact(dt)) {
        /* the types of quant_ext.h: the multi-token kernel gives each token its
         * 1-token bits, so tokens share the block expansion, up to 4 at a time */
        for (int64_t n = i0; n < i1; n++) {
            const uint8_t *wr = row_ptr(c->w, c->r0 + n, c->K);
            for (int64_t t = 0; t < c->T; t += 4) {
                int m = (int)DS_MIN(4, c->T - t);
                const int8_t *a[4];
                float out[4];
                for (int k = 0; k < m; k++) a[k] = (const int8_t *)(c->qa + (size_t)(t + k) * c->ab);
                ds_dot_ext_avx2(dt, wr, a, m, c->K, out);
                for (int k = 0; k < m; k++) c->y[(t + k) * c->ldy + n] = out[k];
            }
        }
        return;
    }
    if (c->per_token) {
        /* one token at a time: each token's result is independent of the batch
         * (the 4-token kernel rounds differently from the 1-token one) */
        for (int64_t n = i0; n < i1; n++) {
            const uint8_t *wr = row_ptr(c->w, c->r0 + n, c->K);
            for (int64_t t = 0; t < c->T; t++)
                c->y[t * c->ldy + n] = ds_vec_dot_avx2(dt, wr, c->qa + (size_t)t * c->ab, c->K);
        }
        return;
    }
    for (int64_t t0 = 0; t0 < c->T; t0 += QTILE) {
        int64_t t1 = DS_MIN(c->T, t0 + QTILE);
        for (int64_t n = i0; n < i1; n++) {
            const uint8_t *wr = row_ptr(c->w, c->r0 + n, c->K);
            int64_t t = t0;
            for (; t < t1; t += 4) {
                int64_t m = DS_MIN(4, t1 - t);
                if (m == 1) {
                    c->y[t * c->ldy + n] = ds_vec_dot_avx2(dt, wr, c->qa + (size_t)t * c->ab, c->K);
                    break;
                }
                const void *a[4];
                float out[4];
                for (int k = 0; k < 4; k++) a[k] = c->qa + (size_t)(t + DS_MIN(k, m - 1)) * c->ab;
                ds_vec_dot4_avx2(dt, wr, a, c->K, out);
                for (int k = 0; k < m; k++) c->y[(t + k) * c->ldy + n] = out[k];
            }
        }
    }
}

static void matmul_rows_worker(void *vctx, int64_t i0, int64_t i1, int tid) {
    matmul_ctx *c = vctx;
    if (isa() == 1 && (c->w->dtype == DS_DTYPE_F32 || c->w->dtype == DS_DTYPE_BF16)) {
        /* up to 4 tokens per weight-row pass, each token's bits those of
         * dot_row_tid alone (ds_dot_rows_*: batch invariance kept) */
        for (int64_t n = i0; n < i1; n++) {
            size_t off = (size_t)(c->r0 + n) * (size_t)c->K;
            for (int64_t t = 0; t < c->T; t += 4) {
                int m = (int)DS_MIN(4, c->T - t);
                const float *xs[4];
                float out[4];
                for (int k = 0; k < m; k++) xs[k] = c->x + (t + k) * c->ldx;
                if (c->w->dtype == DS_DTYPE_F32) ds_dot_rows_f32_avx2((const float *)c->w->data + off, xs, m, c->K, out);
                else ds_dot_rows_bf16_avx2((const uint16_t *)c->w->data + off, xs, m, c->K, out);
                for (int k = 0; k < m; k++) c->y[(t + k) * c->ldy + n] = out[k];
            }
        }
        return;
    }
    for (int64_t n = i0; n < i1; n++)
        for (int64_t t = 0; t < c->T; t++)
            c->y[t * c->ldy + n] = dot_row_tid(c->w, c->r0 + n, c->x + t * c->ldx, c->K, tid);
}

static void matmul_panel_worker(void *vctx, int64_t p0, int64_t p1, int tid) {
    matmul_ctx *c = vctx;
    for (int64_t p = p0; p < p1; p++) {
        int64_t n0 = p * DS_PANEL, nr = DS_MIN(DS_PANEL, c->N - n0);
        const float *panel;
        if (c->w->dtype == DS_DTYPE_F32) {
            panel = (const float *)c->w->data + (size_t)(c->r0 + n0) * (size_t)c->K;
        } else {
            float *buf = ds_scratch(tid, 0, (size_t)nr * (size_t)c->K);
            if (!buf) return;
            dequant_rows(c->w, c->r0 + n0, nr, buf);
            panel = buf;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->T, (int)nr, (int)c->K, 1.0f,
                    c->x, (int)c->ldx, panel, (int)c->K, 0.0f, c->y + n0, (int)c->ldy);
    }
}

/* ------------------------------------------------------------ pass profile */

static ds_pass_stat g_prof[DS_PASS_PROFILE_THREADS][DS_DTYPE_COUNT][DS_PASS_SIZES];
static _Atomic bool g_prof_on;

void ds_pass_profile_start(void) {
    memset(g_prof, 0, sizeof g_prof);
    atomic_store(&g_prof_on, true);
}

void ds_pass_profile_stop(ds_pass_stat out[DS_DTYPE_COUNT][DS_PASS_SIZES]) {
    atomic_store(&g_prof_on, false);
    memset(out, 0, sizeof(ds_pass_stat) * DS_DTYPE_COUNT * DS_PASS_SIZES);
    for (int t = 0; t < DS_PASS_PROFILE_THREADS; t++)
        for (int d = 0; d < DS_DTYPE_COUNT; d++)
            for (int k = 0; k < DS_PASS_SIZES; k++) {
                out[d][k].passes += g_prof[t][d][k].passes;
                out[d][k].bytes += g_prof[t][d][k].bytes;
                out[d][k].seconds += g_prof[t][d][k].seconds;
            }
}

/* the start time of a pass to profile, or 0 */
static inline double prof_begin(void) { return atomic_load_explicit(&g_prof_on, memory_order_relaxed) ? ds_now() : 0; }

static void prof_end(double t0, ds_dtype dt, double bytes) {
    int tid = ds_thread_id();
    if (t0 <= 0 || tid >= DS_PASS_PROFILE_THREADS || (int)dt < 0 || (int)dt >= DS_DTYPE_COUNT) return;
    int k = bytes < 1e6 ? 0 : bytes < 4e6 ? 1 : bytes < 16e6 ? 2 : bytes < 64e6 ? 3 : 4;
    ds_pass_stat *p = &g_prof[tid][dt][k];
    p->passes++;
    p->bytes += bytes;
    p->seconds += ds_now() - t0;
}

void ds_matmul(float *y, int64_t ldy, const float *x, int64_t ldx,
               const ds_tensor *w, int64_t r0, int64_t N, int64_t T) {
    int64_t K = ds_tensor_cols(w);
    DS_ASSERT(r0 >= 0 && r0 + N <= ds_tensor_rows(w));
    if (N <= 0 || T <= 0) return;
    matmul_ctx c = { y, ldy, x, ldx, w, r0, N, T, K, NULL, 0, T < DS_GEMM_MIN_T };
    double t0 = T == 1 ? prof_begin() : 0;
    if (use_qdot(w, T)) {
        c.ab = ds_act_row_bytes(w->dtype, K);
        uint8_t *qa = act_buf(ds_thread_id(), c.ab * (size_t)T);
        if (!qa) return;
        int64_t qs[2] = { 0, T };
        ds_dtype qdt = w->dtype;
        qact_ctx qc = { 1, qs, &x, &ldx, &qa, &qdt, &K };
        qact_run(&qc);
        c.qa = qa;
        int64_t units = qdot_units(w, r0, N);
        int64_t min_units = DS_MAX(1, units * 16384 / DS_MAX(N * K * T, 1));
        ds_par_for_steal(units, min_units, 0, matmul_qrows_worker, &c);
    } else if (T < DS_GEMM_MIN_T || isa() == 0) {
        int64_t min_rows = DS_MAX(1, 16384 / DS_MAX(K * T, 1));
        ds_par_for(N, min_rows, matmul_rows_worker, &c);
    } else {
        int64_t np = (N + DS_PANEL - 1) / DS_PANEL;
        ds_par_for(np, 1, matmul_panel_worker, &c);
    }
    if (t0 > 0) prof_end(t0, w->dtype, (double)N * (double)ds_dtype_row_bytes(w->dtype, K));
}

/* Several independent matmuls in one parallel pass: the work units (rows
 * for few-token jobs, panels for many-token jobs) of all jobs are laid end
 * to end and split across threads once, instead of a fork/join per job. */
typedef struct {
    const ds_mm_job *jobs;
    int n;
    int64_t *start;   /* (n + 1) unit prefix sums */
    const uint8_t **qa; /* [n] quantized activations of quantized-weight decode jobs, else NULL */
} multi_ctx;

static void multi_worker(void *vctx, int64_t u0, int64_t u1, int tid) {
    multi_ctx *mc = vctx;
    int j = 0;
    while (j + 1 < mc->n && mc->start[j + 1] <= u0) j++;
    for (int64_t u = u0; u < u1;) {
        while (mc->start[j + 1] <= u) j++;
        const ds_mm_job *jb = &mc->jobs[j];
        int64_t a = u - mc->start[j], b = DS_MIN(u1, mc->start[j + 1]) - mc->start[j];
        int64_t K = ds_tensor_cols(jb->w);
        bool pt = jb->per_token || jb->T < DS_GEMM_MIN_T;
        matmul_ctx c = { jb->y, jb->ldy, jb->x, jb->ldx, jb->w, jb->r0, jb->N, jb->T, K, mc->qa[j],
                         mc->qa[j] ? ds_act_row_bytes(jb->w->dtype, K) : 0, pt };
        if (c.qa) matmul_qrows_worker(&c, a, b, tid);
        else if (pt || isa() == 0) matmul_rows_worker(&c, a, b, tid);
        else matmul_panel_worker(&c, a, b, tid);
        u += b - a;
    }
}

/* The units of one pass cost N·T·K / units of their job each: an expert
 * job's row group costs its token count, a shared expert's (every token)
 * ten times a routed one's in prefill. Equal unit counts per chunk left the
 * last chunks, holding the shared experts, to one thread while the other
 * waited; so the chunks are cut by work instead, 1/(32·nt) of the whole
 * each (whole units), and run by ds_par_for_steal: each thread owns an
 * equal run of chunks (equal work) and streams it front to back, a thread
 * done early takes chunks from the back of the other's run (a descheduled
 * thread holds up one chunk). Chunks handed out alternately from one
 * counter (before) made every thread's weight stream jump from chunk to
 * chunk: 2-thread decode read 50 GB/s of a 60-65 GB/s probe. Which thread
 * computes a unit changes no bits. */
#define MULTI_MAX_CHUNKS 4096   /* 32 KB of bounds on the caller's stack */
typedef struct { multi_ctx *mc; const int64_t *cb; } chunk_ctx;

static void chunk_worker(void *vctx, int64_t c0, int64_t c1, int tid) {
    const chunk_ctx *cc = vctx;
    for (int64_t c = c0; c < c1; c++)
        if (cc->cb[c + 1] > cc->cb[c]) multi_worker(cc->mc, cc->cb[c], cc->cb[c + 1], tid);
}

static void multi_chunks(multi_ctx *mc, const ds_mm_job *jobs, int n, const int64_t *start, int64_t work, int nt) {
    int64_t cb[MULTI_MAX_CHUNKS + 1];
    int nc = 0;
    cb[0] = 0;
    /* sized for up to 64 threads (32 chunks each, under the table's cap);
     * more threads split those chunks into their shares */
    const double ntc = (double)DS_MIN(nt, 64);
    double target = (double)work / (32.0 * ntc), acc = 0;
    for (int j = 0; j < n; j++) {
        int64_t nu = start[j + 1] - start[j];
        if (nu <= 0) continue;
        double uc = (double)jobs[j].N * (double)jobs[j].T * (double)ds_tensor_cols(jobs[j].w) / (double)nu;
        /* whole runs of units at a time (a decode expert pass has thousands
         * of row groups; a loop per unit cost several µs per pass) */
        for (int64_t u = start[j]; u < start[j + 1];) {
            int64_t need = DS_MAX(1, (int64_t)ceil((target - acc) / uc)), left = start[j + 1] - u;
            if (need > left || nc >= MULTI_MAX_CHUNKS - 1) {
                acc += (double)left * uc;
                break;
            }
            u += need;
            cb[++nc] = u;
            acc = 0;
        }
    }
    if (cb[nc] < start[n]) cb[++nc] = start[n];
    chunk_ctx cc = { mc, cb };
    ds_par_for_steal(nc, 1, 1, chunk_worker, &cc);
}

void ds_matmul_multi(const ds_mm_job *jobs, int n) {
    if (n <= 0) return;
    double t0 = prof_begin();   /* (the pass profile: one-token passes only) */
    for (int j = 0; t0 > 0 && j < n; j++) if (jobs[j].T != 1) t0 = 0;
    /* the unit table and the activation pointers: on the stack, or for many
     * jobs in the caller's scratch (kept between calls: no allocation per step) */
    int64_t stack[65], *start = stack;
    const uint8_t *qstack[64], **qa = qstack;
    /* the rows to quantize: per job (deduplicated), as qact_ctx wants them */
    int64_t qstart_s[65], *qstart = qstart_s, qK_s[64], *qK = qK_s, qldx_s[64], *qldx = qldx_s;
    const float *qx_s[64], **qx = qx_s;
    uint8_t *qo_s[64], **qo = qo_s;
    ds_dtype qdt_s[64], *qdt = qdt_s;
    if (n >= 64) {
        size_t tb = ((size_t)(n + 1) * sizeof *start + 63) / 64 * 64, pb = ((size_t)n * sizeof(void *) + 63) / 64 * 64;
        size_t ib = ((size_t)n * sizeof(int64_t) + 63) / 64 * 64, db = ((size_t)n * sizeof(ds_dtype) + 63) / 64 * 64;
        uint8_t *tab = ds_scratch_bytes(ds_thread_id(), DS_SLOT_MULTI, 2 * tb + 3 * pb + 2 * ib + db);
        if (!tab) return;
        start = (int64_t *)tab;
        qa = (const uint8_t **)(tab + tb);
        qstart = (int64_t *)(tab + tb + pb);
        qx = (const float **)(tab + 2 * tb + pb);
        qo = (uint8_t **)(tab + 2 * tb + 2 * pb);
        qK = (int64_t *)(tab + 2 * tb + 3 * pb);
        qldx = (int64_t *)(tab + 2 * tb + 3 * pb + ib);
        qdt = (ds_dtype *)(tab + 2 * tb + 3 * pb + 2 * ib);
    }
    start[0] = 0;
    int64_t work = 0;
    size_t qbytes = 0;
    for (int j = 0; j < n; j++) {
        const ds_mm_job *jb = &jobs[j];
        DS_ASSERT(jb->r0 >= 0 && jb->r0 + jb->N <= ds_tensor_rows(jb->w));
        bool qd = use_qdot(jb->w, jb->T) || (jb->per_token && use_qdot(jb->w, 1));
        int64_t units = jb->N <= 0 || jb->T <= 0 ? 0
                      : qd ? qdot_units(jb->w, jb->r0, jb->N)
                      : (jb->T < DS_GEMM_MIN_T || jb->per_token || isa() == 0) ? jb->N
                      : (jb->N + DS_PANEL - 1) / DS_PANEL;
        start[j + 1] = start[j] + units;
        work += jb->N * jb->T * ds_tensor_cols(jb->w);
        if (units && qd) qbytes += ds_act_row_bytes(jb->w->dtype, ds_tensor_cols(jb->w)) * (size_t)jb->T;
    }
    /* quantize each distinct activation once (jobs often share x) */
    uint8_t *qbuf = qbytes ? act_buf(ds_thread_id(), qbytes) : NULL;
    if (qbytes && !qbuf) return;
    size_t qoff = 0;
    int nq = 0;
    qstart[0] = 0;
    for (int j = 0; j < n; j++) {
        const ds_mm_job *jb = &jobs[j];
        qa[j] = NULL;
        if (start[j + 1] == start[j] || !(use_qdot(jb->w, jb->T) || (jb->per_token && use_qdot(jb->w, 1)))) continue;
        int64_t K = ds_tensor_cols(jb->w);
        int kind = ds_act_kind(jb->w->dtype);
        for (int i = 0; i < j; i++)
            if (qa[i] && jobs[i].x == jb->x && jobs[i].ldx == jb->ldx && jobs[i].T == jb->T &&
                ds_tensor_cols(jobs[i].w) == K && ds_act_kind(jobs[i].w->dtype) == kind) { qa[j] = qa[i]; break; }
        if (qa[j]) continue;
        size_t ab = ds_act_row_bytes(jb->w->dtype, K);
        qx[nq] = jb->x; qldx[nq] = jb->ldx; qo[nq] = qbuf + qoff; qdt[nq] = jb->w->dtype; qK[nq] = K;
        qstart[nq + 1] = qstart[nq] + jb->T;
        nq++;
        qa[j] = qbuf + qoff;
        qoff += ab * (size_t)jb->T;
    }
    qact_ctx qc = { nq, qstart, qx, qldx, qo, qdt, qK };
    qact_run(&qc);
    multi_ctx mc = { jobs, n, start, qa };
    int64_t units = start[n];
    int64_t min_units = DS_MAX(1, units * 16384 / DS_MAX(work, 1));
    int nt = ds_threads_get();
    if (nt > 1 && units >= 16 * (int64_t)nt) multi_chunks(&mc, jobs, n, start, work, nt);
    /* else shares with stealing: on a shared machine a descheduled thread
     * does not hold the pass up (the result does not depend on the split) */
    else ds_par_for_steal(units, min_units, 0, multi_worker, &mc);
    if (t0 > 0) {
        double bytes = 0;
        for (int j = 0; j < n; j++) bytes += (double)jobs[j].N * (double)ds_dtype_row_bytes(jobs[j].w->dtype, ds_tensor_cols(jobs[j].w));
        prof_end(t0, jobs[0].w->dtype, bytes);
    }
}

typedef struct {
    float *y; int64_t ldy;
    const float *x; int64_t ldx;
    const ds_tensor *w; int64_t r0, N, T, K;
} matmul_t_ctx;

static void matmul_t_worker(void *vctx, int64_t c0, int64_t c1, int tid) {
    matmul_t_ctx *c = vctx;
    int64_t nc = c1 - c0;
    float *buf = ds_scratch(tid, 0, (size_t)c->N * (size_t)nc);
    if (!buf) return;
    /* the AVX2 dequantization where its values are the reference's bits (a
     * prefill's c · W_UKᵀ: W_UK is Q5_0 / Q8_0 in the K-quant files; the
     * scalar reference was ~0.6 % of a Q4_K_M pp512 at 1 thread) */
    ds_dtype wt = c->w->dtype;
    bool sb = isa() == 1 && (wt == DS_DTYPE_Q8_0 || wt == DS_DTYPE_Q4_0 || wt == DS_DTYPE_Q5_0) && c0 % DS_QK == 0 &&
              nc % DS_QK == 0;
    for (int64_t r = 0; r < c->N; r++) {
        float *o = buf + (size_t)r * (size_t)nc;
        size_t off = (size_t)(c->r0 + r) * (size_t)c->K + (size_t)c0;
        if (isa() == 1 && c->w->dtype == DS_DTYPE_BF16) ds_cvt_bf16_avx2(o, (const uint16_t *)c->w->data + off, nc);
        else if (isa() == 1 && c->w->dtype == DS_DTYPE_F16) ds_cvt_f16_avx2(o, (const uint16_t *)c->w->data + off, nc);
        else if (sb)   /* whole 32-blocks of Q8_0/Q4_0/Q5_0: d · q, the reference's one product per value */
            ds_dequant_row_avx2(c->w->dtype, row_ptr(c->w, c->r0 + r, c->K) + (size_t)(c0 / DS_QK) * ds_dtype_block_bytes(c->w->dtype),
                                o, nc);
        else ds_tensor_row_f32(c->w, c->r0 + r, c0, nc, o);  /* quantized: whole blocks, reference */
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->T, (int)nc, (int)c->N, 1.0f,
                c->x, (int)c->ldx, buf, (int)nc, 0.0f, c->y + c0, (int)c->ldy);
}

/* Per-token form: y_t = Σ_r x_t[r] · W[r], rows in order, each weight row
 * dequantized once and applied to every token; columns split over threads. */
static void matmul_t_rows_worker(void *vctx, int64_t c0, int64_t c1, int tid) {
    matmul_t_ctx *c = vctx;
    int64_t nc = c1 - c0;
    float *row = ds_scratch(tid, 0, (size_t)ds_tensor_cols(c->w));
    if (!row) return;
    for (int64_t t = 0; t < c->T; t++) memset(c->y + t * c->ldy + c0, 0, (size_t)nc * sizeof(float));
    for (int64_t r = 0; r < c->N; r++) {
        ds_tensor_row_f32(c->w, c->r0 + r, 0, c->K, row);  /* whole row: block-quantized types need it */
        for (int64_t t = 0; t < c->T; t++) {
            float a = c->x[t * c->ldx + r];
            float *yt = c->y + t * c->ldy;
            if (isa() == 1) ds_axpy_avx2(yt + c0, a, row + c0, c1 - c0);   /* the same fmaf per element */
            else for (int64_t k = c0; k < c1; k++) yt[k] = fmaf(a, row[k], yt[k]);
        }
    }
}

void ds_matmul_t(float *y, int64_t ldy, const float *x, int64_t ldx,
                 const ds_tensor *w, int64_t r0, int64_t N, int64_t T) {
    ds_matmul_t_ex(y, ldy, x, ldx, w, r0, N, T, false);
}

void ds_matmul_t_ex(float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N, int64_t T, bool per_token) {
    int64_t K = ds_tensor_cols(w);
    DS_ASSERT(r0 >= 0 && r0 + N <= ds_tensor_rows(w));
    if (T <= 0 || K <= 0) return;
    if (N <= 0) {
        for (int64_t t = 0; t < T; t++) memset(y + t * ldy, 0, (size_t)K * sizeof(float));
        return;
    }
    isa();
    matmul_t_ctx c = { y, ldy, x, ldx, w, r0, N, T, K };
    if (per_token || T < DS_GEMM_MIN_T) ds_par_for(K, 256, matmul_t_rows_worker, &c);
    else ds_par_for(K, 64, matmul_t_worker, &c);
}

/* ------------------------------------------------------------------- sgemm */

typedef struct {
    bool ta, tb; int64_t M, N, K; float alpha;
    const float *A; int64_t lda; const float *B; int64_t ldb; float beta; float *C; int64_t ldc;
} sgemm_ctx;

static void sgemm_worker(void *vctx, int64_t m0, int64_t m1, int tid) {
    (void)tid;
    sgemm_ctx *c = vctx;
    const float *A = c->ta ? c->A + m0 : c->A + m0 * c->lda;
    cblas_sgemm(CblasRowMajor, c->ta ? CblasTrans : CblasNoTrans, c->tb ? CblasTrans : CblasNoTrans,
                (int)(m1 - m0), (int)c->N, (int)c->K, c->alpha, A, (int)c->lda, c->B, (int)c->ldb,
                c->beta, c->C + m0 * c->ldc, (int)c->ldc);
}

void ds_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    isa();
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    sgemm_ctx c = { trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc };
    int64_t min_rows = DS_MAX(1, 65536 / DS_MAX(N * K, 1));
    ds_par_for(M, min_rows, sgemm_worker, &c);
}

/* --------------------------------------------------------------- attention */

void ds_attn_rows(float *u, int64_t ldu, const float *q, int64_t ldq, int64_t nq, const float *kv, int64_t W,
                  int64_t R, int64_t vis0, float scale, float *sc) {
    bool fast = isa() == 1 && R % 8 == 0;
    for (int64_t i = 0; i < nq; i++) {
        int64_t vis = vis0 + i + 1;
        const float *qi = q + i * ldq;
        for (int64_t j = 0; j < vis; j++) {
            const float *kj = kv + j * W;
            float d;
            if (fast) d = ds_dot_f32_avx2(kj, qi, W);
            else {
                d = 0.0f;
                for (int64_t k = 0; k < W; k++) d += qi[k] * kj[k];
            }
            sc[j] = scale * d;
        }
        ds_softmax(sc, vis);
        float *ui = u + i * ldu;
        if (fast) ds_wsum_rows_avx2(ui, sc, kv, vis, W, R);
        else {
            for (int64_t k = 0; k < R; k++) ui[k] = 0.0f;
            for (int64_t j = 0; j < vis; j++)
                for (int64_t k = 0; k < R; k++) ui[k] += sc[j] * kv[j * W + k];
        }
    }
}

/* ------------------------------------------------- KV-cache rows */

void ds_kv_dequant_row_ref(float *y, const uint8_t *row, int64_t W, int block, bool fp8) {
    int64_t nb = (W + block - 1) / block;
    const uint8_t *q = row + 4 * nb;
    for (int64_t b = 0; b < nb; b++) {
        float d;
        memcpy(&d, row + 4 * b, 4);
        int64_t i0 = b * block, i1 = DS_MIN(W, i0 + block);
        if (fp8)
            for (int64_t i = i0; i < i1; i++) y[i] = d * ds_fp8_e4m3_to_f32(q[i]);
        else
            for (int64_t i = i0; i < i1; i++) y[i] = d * (float)(int8_t)q[i];
    }
}

void ds_kv_dequant_row(float *y, const uint8_t *row, int64_t W, int block, bool fp8) {
    if (isa() == 1) ds_kv_dequant_row_avx2(y, row, W, block, fp8);
    else ds_kv_dequant_row_ref(y, row, W, block, fp8);
}

/* ------------------------------------------------- flash decode (MLA) */

/* online softmax, scalar (expf): raw scores (stride n + 8 in sc) -> p,
 * the rescale factors after them (sc + H·(n + 8)), (m, l) updated */
static void mla_attn_softmax_generic(float *m, float *l, int64_t H, int64_t n, float scale, float *sc) {
    float *alpha = sc + H * (n + 8);
    for (int64_t h = 0; h < H; h++) {
        float *sh = sc + h * (n + 8);
        float bm = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            sh[j] = scale * sh[j];
            bm = sh[j] > bm ? sh[j] : bm;
        }
        float mn = m[h] > bm ? m[h] : bm;
        float a = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn), ls = 0.0f;
        for (int64_t j = 0; j < n; j++) { sh[j] = expf(sh[j] - mn); ls += sh[j]; }
        m[h] = mn;
        l[h] = l[h] * a + ls;
        alpha[h] = a;
    }
}

/* the step after the scores, scalar: softmax, rescale, weighted sum of the rows' first R columns */
static void mla_attn_update_generic(float *u, float *m, float *l, int64_t H, const float *kv, int64_t W, int64_t n,
                                    int64_t R, float scale, float *sc) {
    mla_attn_softmax_generic(m, l, H, n, scale, sc);
    for (int64_t h = 0; h < H; h++) {
        float *sh = sc + h * (n + 8), *uh = u + h * R, a = sc[H * (n + 8) + h];
        for (int64_t k = 0; k < R; k++) uh[k] *= a;
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < R; k++) uh[k] += sh[j] * kv[j * W + k];
    }
}

static void mla_attn_step_generic(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H,
                                  const float *kv, int64_t W, int64_t n, int64_t R, float scale, float *sc) {
    for (int64_t h = 0; h < H; h++) {
        const float *qh = q + h * ldq;
        float *sh = sc + h * (n + 8);
        for (int64_t j = 0; j < n; j++) {
            float d = 0.0f;
            for (int64_t k = 0; k < W; k++) d += qh[k] * kv[j * W + k];
            sh[j] = d;
        }
    }
    mla_attn_update_generic(u, m, l, H, kv, W, n, R, scale, sc);
}

void ds_mla_attn_step(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv, int64_t W,
                      int64_t n, int64_t R, float scale, float *sc) {
    if (n <= 0) return;
    DS_ASSERT(R <= W);   /* u sums each row's first R of its W values */
    if (level() >= DS_ISA_AVX512 && H % 2 == 0 && W % 8 == 0 && R % 16 == 0)
        ds_mla_attn_step_avx512(u, m, l, q, ldq, H, kv, W, n, R, scale, sc);
    else if (isa() == 1 && W % 8 == 0 && R % 8 == 0) ds_mla_attn_step_avx2(u, m, l, q, ldq, H, kv, W, n, R, scale, sc);
    else mla_attn_step_generic(u, m, l, q, ldq, H, kv, W, n, R, scale, sc);
}

/* bf16 rows (ds_mla_attn_step_bf16, ops.h): the scores by the AVX512-BF16
 * kernels where the level allows it and the CPU has the feature, else the
 * AVX2 ones (the same bits), else the scalar twins; the online softmax
 * between scores and weighted sum is the fp32 step's */
void ds_mla_scores_bf16(float *s, int64_t ls, const uint16_t *q, int64_t ldq, int64_t H, const uint16_t *kv,
                        int64_t W, int64_t n, float *scratch) {
    if (level() >= DS_ISA_AVX512_VNNI && ds_cpu_has(DS_CPU_AVX512_BF16) && H % 2 == 0 && W % 8 == 0)
        ds_mla_scores_bf16_avx512(s, ls, q, ldq, H, kv, W, n, scratch);
    else if (isa() == 1 && W % 8 == 0) ds_mla_scores_bf16_avx2(s, ls, q, ldq, H, kv, W, n, scratch);
    else ds_mla_scores_bf16_ref(s, ls, q, ldq, H, kv, W, n);
}

void ds_bf16_round_row(uint16_t *y, const float *x, int64_t n) {
    if (ds_mla_bf16_dp_in_use()) ds_bf16_round_row_avx512(y, x, n);   /* vcvtneps2bf16: the same bits */
    else if (isa() == 1) ds_bf16_round_row_avx2(y, x, n);
    else ds_bf16_round_row_ref(y, x, n);
}

bool ds_mla_bf16_dp_in_use(void) { return level() >= DS_ISA_AVX512_VNNI && ds_cpu_has(DS_CPU_AVX512_BF16); }

void ds_mla_pv_bf16(float *u, int64_t R, const float *p, int64_t ls, const float *alpha, int64_t H,
                    const uint16_t *kv, int64_t W, int64_t n, float *scratch) {
    if (ds_mla_bf16_dp_in_use() && R % 32 == 0) ds_mla_pv_bf16_avx512(u, R, p, ls, alpha, H, kv, W, n, scratch);
    else if (isa() == 1 && R % 8 == 0) ds_mla_pv_bf16_avx2(u, R, p, ls, alpha, H, kv, W, n, scratch);
    else ds_mla_pv_bf16_ref(u, R, p, ls, alpha, H, kv, W, n);
}

void ds_mla_attn_step_bf16(float *u, float *m, float *l, const uint16_t *q, int64_t ldq, int64_t H,
                           const uint16_t *kv, int64_t W, int64_t n, int64_t R, float scale, float *sc) {
    if (n <= 0) return;
    int64_t ls = n + 8;
    float *alpha = sc + H * ls, *scratch = alpha + H;   /* H·(W + n + 16) floats for the kernels */
    ds_mla_scores_bf16(sc, ls, q, ldq, H, kv, W, n, scratch);
    if (isa() == 1) ds_mla_attn_softmax_avx2(m, l, H, n, scale, sc);
    else mla_attn_softmax_generic(m, l, H, n, scale, sc);
    ds_mla_pv_bf16(u, R, sc, ls, alpha, H, kv, W, n, scratch);
}

/* int8 rows (ds_mla_attn_step_i8, ops.h): the vpdpbusd kernels at ISA level
 * avx512vnni or above, else the AVX2 ones, else the scalar twins (the same
 * bits); the online
 * softmax between scores and weighted sum is the fp32 step's */
bool ds_mla_i8_dp_in_use(void) { return level() >= DS_ISA_AVX512_VNNI; }

void ds_mla_scores_i8(float *s, int64_t ls, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb, int64_t W,
                      int64_t R, int64_t n) {
    if (ds_mla_i8_dp_in_use()) ds_mla_scores_i8_avx512(s, ls, qi, H, kv, rb, W, R, n);
    else if (isa() == 1) ds_mla_scores_i8_avx2(s, ls, qi, H, kv, rb, W, R, n);
    else ds_mla_scores_i8_ref(s, ls, qi, H, kv, rb, W, R, n);
}

void ds_mla_p_i8(uint8_t *pq, float *dp, const float *p, int64_t ls, int64_t H, const uint8_t *kv, int64_t rb,
                 int64_t n) {
    if (ds_mla_i8_dp_in_use() && n <= 256) ds_mla_p_i8_avx512(pq, dp, p, ls, H, kv, rb, n);
    else ds_mla_p_i8_ref(pq, dp, p, ls, H, kv, rb, n);
}

void ds_mla_pv_i8(float *u, int64_t R, const uint8_t *pq, const float *dp, const float *alpha, int64_t H,
                  const uint8_t *kv, int64_t rb, int64_t n, void *scratch) {
    if (ds_mla_i8_dp_in_use() && R % 64 == 0) ds_mla_pv_i8_avx512(u, R, pq, dp, alpha, H, kv, rb, n, scratch);
    else if (isa() == 1 && R % 16 == 0) ds_mla_pv_i8_avx2(u, R, pq, dp, alpha, H, kv, rb, n, scratch);
    else ds_mla_pv_i8_ref(u, R, pq, dp, alpha, H, kv, rb, n);
}

void ds_mla_attn_step_i8(float *u, float *m, float *l, const uint8_t *qi, int64_t H, const uint8_t *kv, int64_t rb,
                         int64_t W, int64_t n, int64_t R, float scale, float *sc) {
    if (n <= 0) return;
    DS_ASSERT(R % 4 == 0 && W % 4 == 0 && R <= W);
    int64_t ls = n + 8, np = (n + 3) / 4 * 4;
    float *alpha = sc + H * ls, *dp = alpha + H;
    uint8_t *pq = (uint8_t *)(dp + H);   /* H·np codes, then the pv kernel's scratch (64-byte aligned) */
    uint8_t *ks = (uint8_t *)(((uintptr_t)(pq + H * np) + 63) & ~(uintptr_t)63);
    ds_mla_scores_i8(sc, ls, qi, H, kv, rb, W, R, n);
    if (isa() == 1) ds_mla_attn_softmax_avx2(m, l, H, n, scale, sc);
    else mla_attn_softmax_generic(m, l, H, n, scale, sc);
    ds_mla_p_i8(pq, dp, sc, ls, H, kv, rb, n);
    ds_mla_pv_i8(u, R, pq, dp, alpha, H, kv, rb, n, ks);
}

void ds_mla_attn_merge(float *u, float *m, float *l, const float *u2, const float *m2, const float *l2, int64_t H,
                       int64_t R) {
    for (int64_t h = 0; h < H; h++) {
        if (m2[h] == -INFINITY) continue;   /* empty partial */
        float mn = m[h] > m2[h] ? m[h] : m2[h];
        float a = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn), b = expf(m2[h] - mn);
        float *uh = u + h * R;
        const float *vh = u2 + h * R;
        for (int64_t k = 0; k < R; k++) uh[k] = uh[k] * a + vh[k] * b;
        l[h] = l[h] * a + l2[h] * b;
        m[h] = mn;
    }
}

void ds_mla_attn_finish(float *out, int64_t ldo, const float *u, const float *l, int64_t H, int64_t R) {
    for (int64_t h = 0; h < H; h++) {
        float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        for (int64_t k = 0; k < R; k++) out[h * ldo + k] = u[h * R + k] * inv;
    }
}

/* -------------------------------------------------------------- elementwise */

typedef struct { float *out; const float *x, *w; int64_t D; float eps; } rms_ctx;

/* out row = (x · inv) · w, inv = 1/sqrt(Σ x² / D + eps) with the sum in
 * double, element by element in order. Four rows at a time: their four sums
 * are independent chains the core overlaps (one row's chain is bound by the
 * latency of its adds); each row's sum is still its own sequence of adds,
 * so the bits are those of one row alone. */
typedef float rms_v4 __attribute__((vector_size(16)));

static void rms_scale_row(float *o, const float *xr, const float *w, int64_t D, double ss, float eps) {
    float inv = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
    int64_t i = 0;
    for (; i + 4 <= D; i += 4) {   /* the same two roundings per element, 4 lanes */
        rms_v4 xv, wv;
        memcpy(&xv, xr + i, sizeof xv);
        memcpy(&wv, w + i, sizeof wv);
        rms_v4 ov = (xv * inv) * wv;
        memcpy(o + i, &ov, sizeof ov);
    }
    for (; i < D; i++) o[i] = (xr[i] * inv) * w[i];
}

static void rms_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    const rms_ctx *c = vctx;
    const int64_t D = c->D;
    const float *w = c->w;
    int64_t t = t0;
    for (; t + 4 <= t1; t += 4) {
        const float *x0 = c->x + t * D, *x1 = x0 + D, *x2 = x1 + D, *x3 = x2 + D;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (int64_t i = 0; i < D; i++) {
            s0 += (double)x0[i] * x0[i];
            s1 += (double)x1[i] * x1[i];
            s2 += (double)x2[i] * x2[i];
            s3 += (double)x3[i] * x3[i];
        }
        rms_scale_row(c->out + t * D, x0, w, D, s0, c->eps);
        rms_scale_row(c->out + (t + 1) * D, x1, w, D, s1, c->eps);
        rms_scale_row(c->out + (t + 2) * D, x2, w, D, s2, c->eps);
        rms_scale_row(c->out + (t + 3) * D, x3, w, D, s3, c->eps);
    }
    for (; t < t1; t++) {
        const float *xr = c->x + t * D;
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        rms_scale_row(c->out + t * D, xr, w, D, ss, c->eps);
    }
}

/* Rows split across threads (prefill); each row's arithmetic is the same
 * whoever computes it. A few rows (decode) stay on the caller. */
void ds_rmsnorm(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps) {
    rms_ctx c = { out, x, w, D, eps };
    ds_par_for(T, DS_MAX(1, 32768 / DS_MAX(D, 1)), rms_worker, &c);
}

typedef struct { float *x; const float *y; int64_t D; } add_ctx;

static void add_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    const add_ctx *c = vctx;
    for (int64_t i = t0 * c->D; i < t1 * c->D; i++) c->x[i] += c->y[i];
}

void ds_add_rows(float *x, const float *y, int64_t T, int64_t D) {
    add_ctx c = { x, y, D };
    ds_par_for(T, DS_MAX(1, 32768 / DS_MAX(D, 1)), add_worker, &c);
}

void ds_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    if (isa() == 1) { ds_softmax_avx2(x, n); return; }
    ds_softmax_ref(x, n);
}

void ds_softmax_ref(float *x, int64_t n) {
    if (n <= 0) return;
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) { /* everything masked: define as uniform zero */
        for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
        return;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - m); s += x[i]; }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void ds_silu_mul_ref(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

typedef struct { float *h; const float *g, *u; } silu_ctx;

static void silu_worker(void *vctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    silu_ctx *c = vctx;
    if (isa() == 1) ds_silu_mul_avx2(c->h + i0, c->g + i0, c->u + i0, i1 - i0);
    else ds_silu_mul_ref(c->h + i0, c->g + i0, c->u + i0, i1 - i0);
}

/* Elementwise, so any split gives the same bits (the AVX2 kernel runs its
 * tail through the same vector code, masked). */
void ds_silu_mul(float *h, const float *g, const float *u, int64_t n) {
    silu_ctx c = { h, g, u };
    ds_par_for(n, 16384, silu_worker, &c);
}
