/*
 * tgemm.c - fp32 GEMMs for training's shapes (see tgemm.h).
 *
 * Every mode packs B into 16-column panels [kc][16] (K blocked by DKC so a
 * packed block stays in L2); tn also packs A's columns into 6-wide
 * micro-panels. Per thread, over its rows of C:
 *   for kb in K by DKC:     pack B block (and A block for tn)
 *     for i0 by 6:          a 6-row tile of A stays in L1 ...
 *       for each panel:     ... while the 16-column B panels stream from L2
 *         6x16 kernel:      12 ymm sums, 2 B loads + 6 broadcasts + 12 FMAs per k
 * The full-tile kernel is inline assembly (see ukr_rows_asm); edge tiles use
 * the intrinsic kernels kern1..kern6.
 * Causal variants restrict k (or skip tiles) to the lower triangle of an
 * attention matrix: nn: k <= row; tn: k >= row; nt: column <= row.
 * dense_worker hands the rows to tgemm_avx512.c instead at ISA level avx512+
 * (6x32 fp32 tiles, the same bits) and in bf16 mode (tr_gemm_set_bf16);
 * this file owns the dispatch, the bf16 mode switch and its fp32 brackets.
 */
#include "tgemm.h"
#include "tgemm_impl.h"
#include "tops.h"
#include "../core/cpu.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define MR TG_MR
#define NR 16

static bool g_force_blas, g_force_avx2, g_bf16;
void tr_gemm_force_blas(bool on) { g_force_blas = on; }
void tr_gemm_force_avx2(bool on) { g_force_avx2 = on; }

static bool avx2_ok(void) { return ds_cpu_avx2_fma() && !g_force_blas; }

static bool bf16_usable(void) {
#if defined(__x86_64__)
    return ds_cpu_usable(DS_CPU_AVX512_BF16) && ds_isa_level() >= DS_ISA_AVX512;
#else
    return false;
#endif
}

int tr_gemm_set_bf16(bool on, ds_err *e) {
    if (on && !bf16_usable()) {
        char cpu[512];
        ds_cpu_describe(cpu, sizeof cpu);
        return ds_err_set(e, DS_EUNSUPPORTED,
                          "bf16 training GEMMs need the CPU flag avx512_bf16 (AVX512-BF16) at ISA level avx512vnni or "
                          "above; here: %s", cpu);
    }
    g_bf16 = on;
    return DS_OK;
}

bool tr_gemm_bf16(void) { return g_bf16; }

static _Thread_local int t_keep_fp32;
void tr_gemm_keep_fp32(bool on) { t_keep_fp32 += on ? 1 : -1; }

#if defined(__x86_64__)

/* Masks for the first nr lanes of the two 8-float halves of a 16-column panel. */
#define NR_MASKS(nr)                                                                  \
    const __m256i lane_ = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                  \
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane_);              \
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((nr) - 8), lane_)

/* C row r (16 or nr columns) = alpha·(v0 | v1) (+ C if load) */
__attribute__((target("avx2,fma"), always_inline)) static inline void store_row(float *cp, __m256 v0, __m256 v1,
                                                                               __m256 al, bool load, int nr,
                                                                               __m256i m0, __m256i m1) {
    v0 = _mm256_mul_ps(v0, al);
    v1 = _mm256_mul_ps(v1, al);
    if (nr == NR) {
        if (load) { v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp)); v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp + 8)); }
        _mm256_storeu_ps(cp, v0);
        _mm256_storeu_ps(cp + 8, v1);
    } else {
        if (load) { v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cp, m0)); v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cp + 8, m1)); }
        _mm256_maskstore_ps(cp, m0, v0);
        _mm256_maskstore_ps(cp + 8, m1, v1);
    }
}

/* An R x 16 tile (R = 1..6): C (+)= alpha · Σ_{k<kc} a(r, k) · b(k, :)
 *   a(r, k) = a[r·ars + k·aks],  b(k, j) = b[k·bks + j]
 * 2·R named accumulators so they stay in ymm registers; b is a packed,
 * zero-padded panel, so all 16 columns are read; only nr are stored. */
#define ROW_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0; const float *a##r = a + (r) * ars;
#define ROW_FMA(r) { __m256 x = _mm256_broadcast_ss(a##r); a##r += aks; \
                     c##r##0 = _mm256_fmadd_ps(x, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(x, b1, c##r##1); }
#define ROW_STORE(r) store_row(c + (r) * ldc, c##r##0, c##r##1, al, load, nr, m0, m1);
#define DEFINE_KERN(R, DECL, FMA, STORE)                                                                   \
    __attribute__((target("avx2,fma"))) static void kern##R(const float *a, int64_t ars, int64_t aks,     \
                                                            const float *b, int64_t bks, int64_t kc, float *c, \
                                                            int64_t ldc, int nr, float alpha, bool load) {   \
        NR_MASKS(nr);                                                                                      \
        DECL                                                                                               \
        for (int64_t k = 0; k < kc; k++, b += bks) {                                                       \
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);                                   \
            FMA                                                                                            \
        }                                                                                                  \
        __m256 al = _mm256_set1_ps(alpha);                                                                 \
        STORE                                                                                              \
    }
DEFINE_KERN(6, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3) ROW_DECL(4) ROW_DECL(5),
            ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5))
DEFINE_KERN(5, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3) ROW_DECL(4),
            ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4))
DEFINE_KERN(4, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2) ROW_DECL(3), ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3))
DEFINE_KERN(3, ROW_DECL(0) ROW_DECL(1) ROW_DECL(2), ROW_FMA(0) ROW_FMA(1) ROW_FMA(2),
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2))
DEFINE_KERN(2, ROW_DECL(0) ROW_DECL(1), ROW_FMA(0) ROW_FMA(1), ROW_STORE(0) ROW_STORE(1))
DEFINE_KERN(1, ROW_DECL(0), ROW_FMA(0), ROW_STORE(0))

static void kern_dispatch(const float *a, int64_t ars, int64_t aks, const float *b, int64_t bks, int64_t kc, float *c,
                          int64_t ldc, int mr, int nr, float alpha, bool load) {
    switch (mr) {
    case 6: kern6(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    case 5: kern5(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    case 4: kern4(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    case 3: kern3(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    case 2: kern2(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    default: kern1(a, ars, aks, b, bks, kc, c, ldc, nr, alpha, load); break;
    }
}

/* ---------------------------------------------------------------- dense (linear layers)
 *
 * B is packed into 16-column panels [kc][16] (zero-padded) for every mode;
 * nt packs with an 8x8 AVX2 transpose. nt/nn: A rows are read in place
 * (a 6-row tile, 6·kc floats, stays in L1 while it meets every panel);
 * tn: A's columns are packed into 6-row micro-panels [kc][6]. K is blocked
 * by DKC so the packed B block stays in L2. */

#define DKC TG_DKC

/* The full 6x16 tile, in assembly:
 *   C[r][0..16) = alpha · Σ_{k<kc} a(r, k) · b(k, 0..16)  (+ C[r] when load), C rows ldc apart.
 * GCC spilled accumulators when it compiled this from intrinsics inside the
 * tile loop (16 live ymm registers: 12 sums, 2 B vectors, 2 broadcasts),
 * which cost 5-7% of the GEMMs' speed; the register assignment here is fixed:
 * ymm0-11 sums (row r in ymm2r, ymm2r+1), ymm12-13 the B row, ymm14-15
 * alternate broadcasts. Results equal kern6 bit for bit (same FMA order per
 * element: k ascending from zero; then · alpha, + C; tested). Two A layouts:
 *   rows: a(r, k) = a[r·ars + k]        (nt/nn: A read in place)
 *   cols: a(r, k) = a[r + k·aks]        (tn: packed [kc][6] or A's own rows) */
#define UK_FMA2(x, c0, c1) "vfmadd231ps %%ymm12, %%ymm" #x ", %%ymm" #c0 "\n\t" \
                           "vfmadd231ps %%ymm13, %%ymm" #x ", %%ymm" #c1 "\n\t"
#define UK_BLOAD(bb) "vmovups " bb ", %%ymm12\n\t" "vmovups 32" bb ", %%ymm13\n\t"
/* one k step, rows layout; d = byte offset of column k in every row; bb = B row */
#define UK_STEP_ROWS(d, bb) UK_BLOAD(bb)                                                   \
    "vbroadcastss " #d "(%[a0]), %%ymm14\n\t" UK_FMA2(14, 0, 1)                            \
    "vbroadcastss " #d "(%[a0],%[ld],1), %%ymm15\n\t" UK_FMA2(15, 2, 3)                    \
    "vbroadcastss " #d "(%[a0],%[ld],2), %%ymm14\n\t" UK_FMA2(14, 4, 5)                    \
    "vbroadcastss " #d "(%[a3]), %%ymm15\n\t" UK_FMA2(15, 6, 7)                            \
    "vbroadcastss " #d "(%[a3],%[ld],1), %%ymm14\n\t" UK_FMA2(14, 8, 9)                    \
    "vbroadcastss " #d "(%[a3],%[ld],2), %%ymm15\n\t" UK_FMA2(15, 10, 11)
/* one k step, cols layout: the 6 values at BASE (an addressing-mode tail) */
#define UK_STEP_COLS(base, bb) UK_BLOAD(bb)                                                \
    "vbroadcastss 0" base ", %%ymm14\n\t" UK_FMA2(14, 0, 1)                                \
    "vbroadcastss 4" base ", %%ymm15\n\t" UK_FMA2(15, 2, 3)                                \
    "vbroadcastss 8" base ", %%ymm14\n\t" UK_FMA2(14, 4, 5)                                \
    "vbroadcastss 12" base ", %%ymm15\n\t" UK_FMA2(15, 6, 7)                               \
    "vbroadcastss 16" base ", %%ymm14\n\t" UK_FMA2(14, 8, 9)                               \
    "vbroadcastss 20" base ", %%ymm15\n\t" UK_FMA2(15, 10, 11)
#define UK_ZERO                                                                            \
    "vxorps %%ymm0, %%ymm0, %%ymm0\n\t" "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"                 \
    "vxorps %%ymm2, %%ymm2, %%ymm2\n\t" "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"                 \
    "vxorps %%ymm4, %%ymm4, %%ymm4\n\t" "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"                 \
    "vxorps %%ymm6, %%ymm6, %%ymm6\n\t" "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"                 \
    "vxorps %%ymm8, %%ymm8, %%ymm8\n\t" "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"                 \
    "vxorps %%ymm10, %%ymm10, %%ymm10\n\t" "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"
/* C rows 0..5 = alpha · sums (+ C when load), as store_row does it: the
 * tile's C pointer replaces a0 and ldc (bytes) n4, both dead after the loop */
#define UK_CROW(r0, r1, addr) \
    "vaddps " addr ", %%ymm" #r0 ", %%ymm" #r0 "\n\t" "vaddps 32" addr ", %%ymm" #r1 ", %%ymm" #r1 "\n\t"
#define UK_SROW(r0, r1, addr) \
    "vmovups %%ymm" #r0 ", " addr "\n\t" "vmovups %%ymm" #r1 ", 32" addr "\n\t"
#define UK_ROWS6(M, P0, P3) M(0, 1, "(" P0 ")") M(2, 3, "(" P0 ",%[n4],1)") M(4, 5, "(" P0 ",%[n4],2)") \
                            M(6, 7, "(" P3 ")") M(8, 9, "(" P3 ",%[n4],1)") M(10, 11, "(" P3 ",%[n4],2)")
/* P0, P3: two pointer operands free after the loop; they take rows 0 and 3 of C */
#define UK_STORE(P0, P3)                                                                   \
    "vbroadcastss %[alpha], %%ymm12\n\t"                                                   \
    "vmulps %%ymm12, %%ymm0, %%ymm0\n\t" "vmulps %%ymm12, %%ymm1, %%ymm1\n\t"              \
    "vmulps %%ymm12, %%ymm2, %%ymm2\n\t" "vmulps %%ymm12, %%ymm3, %%ymm3\n\t"              \
    "vmulps %%ymm12, %%ymm4, %%ymm4\n\t" "vmulps %%ymm12, %%ymm5, %%ymm5\n\t"              \
    "vmulps %%ymm12, %%ymm6, %%ymm6\n\t" "vmulps %%ymm12, %%ymm7, %%ymm7\n\t"              \
    "vmulps %%ymm12, %%ymm8, %%ymm8\n\t" "vmulps %%ymm12, %%ymm9, %%ymm9\n\t"              \
    "vmulps %%ymm12, %%ymm10, %%ymm10\n\t" "vmulps %%ymm12, %%ymm11, %%ymm11\n\t"          \
    "mov %[cm], " P0 "\n\t" "mov %[ldcm], %[n4]\n\t"                                       \
    "lea (" P0 ",%[n4],2), " P3 "\n\t" "add %[n4], " P3 "\n\t"                             \
    "cmpl $0, %[loadm]\n\t" "je 5f\n\t"                                                    \
    UK_ROWS6(UK_CROW, P0, P3)                                                              \
    "5:\n\t"                                                                               \
    UK_ROWS6(UK_SROW, P0, P3)
#define UK_CLOBBERS "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
                    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
/* B rows k, k+1 at (b), (b + bs); k+2, k+3 at (b2), (b2 + bs) */
#define UK_B0 "(%[b])"
#define UK_B1 "(%[b],%[bs],1)"
#define UK_B2 "(%[b2])"
#define UK_B3 "(%[b2],%[bs],1)"

/* b(k, :) = b[k·bks .. k·bks + 16) */
__attribute__((target("avx2,fma"))) static void ukr_rows_asm(const float *a, int64_t ars, const float *b, int64_t bks,
                                                           int64_t kc, float *c, int64_t ldc, float alpha, bool load) {
    const float *a3 = a + 3 * ars, *b2 = b + 2 * bks;
    int64_t ld = ars * (int64_t)sizeof(float), bs = bks * (int64_t)sizeof(float), bs4 = 4 * bs;
    int64_t n4 = kc / 4, n1 = kc % 4, ldcb = ldc * (int64_t)sizeof(float);
    int32_t load32 = load;
    __asm__ volatile(UK_ZERO
                     "test %[n4], %[n4]\n\t" "jz 2f\n\t"
                     "1:\n\t"
                     UK_STEP_ROWS(0, UK_B0) UK_STEP_ROWS(4, UK_B1) UK_STEP_ROWS(8, UK_B2) UK_STEP_ROWS(12, UK_B3)
                     "add $16, %[a0]\n\t" "add $16, %[a3]\n\t" "add %[bs4], %[b]\n\t" "add %[bs4], %[b2]\n\t"
                     "dec %[n4]\n\t" "jnz 1b\n\t"
                     "2:\n\t" "test %[n1], %[n1]\n\t" "jz 4f\n\t"
                     "3:\n\t"
                     UK_STEP_ROWS(0, UK_B0)
                     "add $4, %[a0]\n\t" "add $4, %[a3]\n\t" "add %[bs], %[b]\n\t"
                     "dec %[n1]\n\t" "jnz 3b\n\t"
                     "4:\n\t"
                     UK_STORE("%[a0]", "%[a3]")
                     : [a0] "+r"(a), [a3] "+r"(a3), [b] "+r"(b), [b2] "+r"(b2), [n4] "+r"(n4), [n1] "+r"(n1)
                     : [ld] "r"(ld), [bs] "r"(bs), [bs4] "r"(bs4), [alpha] "m"(alpha), [cm] "m"(c), [ldcm] "m"(ldcb),
                       [loadm] "m"(load32)
                     : UK_CLOBBERS);
}

__attribute__((target("avx2,fma"))) static void ukr_cols_asm(const float *a, int64_t aks, const float *b, int64_t bks,
                                                           int64_t kc, float *c, int64_t ldc, float alpha, bool load) {
    const float *q = a + 2 * aks, *b2 = b + 2 * bks;   /* k + 2 */
    int64_t s = aks * (int64_t)sizeof(float), s4 = 4 * s, bs = bks * (int64_t)sizeof(float), bs4 = 4 * bs;
    int64_t n4 = kc / 4, n1 = kc % 4, ldcb = ldc * (int64_t)sizeof(float);
    int32_t load32 = load;
    __asm__ volatile(UK_ZERO
                     "test %[n4], %[n4]\n\t" "jz 2f\n\t"
                     "1:\n\t"
                     UK_STEP_COLS("(%[p])", UK_B0) UK_STEP_COLS("(%[p],%[s],1)", UK_B1)
                     UK_STEP_COLS("(%[q])", UK_B2) UK_STEP_COLS("(%[q],%[s],1)", UK_B3)
                     "add %[s4], %[p]\n\t" "add %[s4], %[q]\n\t" "add %[bs4], %[b]\n\t" "add %[bs4], %[b2]\n\t"
                     "dec %[n4]\n\t" "jnz 1b\n\t"
                     "2:\n\t" "test %[n1], %[n1]\n\t" "jz 4f\n\t"
                     "3:\n\t"
                     UK_STEP_COLS("(%[p])", UK_B0)
                     "add %[s], %[p]\n\t" "add %[bs], %[b]\n\t"
                     "dec %[n1]\n\t" "jnz 3b\n\t"
                     "4:\n\t"
                     UK_STORE("%[p]", "%[q]")
                     : [p] "+r"(a), [q] "+r"(q), [b] "+r"(b), [b2] "+r"(b2), [n4] "+r"(n4), [n1] "+r"(n1)
                     : [s] "r"(s), [s4] "r"(s4), [bs] "r"(bs), [bs4] "r"(bs4), [alpha] "m"(alpha), [cm] "m"(c),
                       [ldcm] "m"(ldcb), [loadm] "m"(load32)
                     : UK_CLOBBERS);
}

__attribute__((target("avx2,fma"))) static void ukr_direct(const float *a, int64_t lda, const float *b, int64_t bks,
                                                         int64_t kc, float *c, int64_t ldc, float alpha, bool load) {
    ukr_rows_asm(a, lda, b, bks, kc, c, ldc, alpha, load);
}

__attribute__((target("avx2,fma"))) static void ukr_cols(const float *a, int64_t aks, const float *b, int64_t bks,
                                                       int64_t kc, float *c, int64_t ldc, float alpha, bool load) {
    ukr_cols_asm(a, aks, b, bks, kc, c, ldc, alpha, load);
}

/* 8x8 transpose: out row j (stride ldo) = column j of the 8 rows at in (stride ldi) */
__attribute__((target("avx2,fma"))) static void transpose8x8(float *out, int64_t ldo, const float *in, int64_t ldi) {
    __m256 r0 = _mm256_loadu_ps(in), r1 = _mm256_loadu_ps(in + ldi), r2 = _mm256_loadu_ps(in + 2 * ldi);
    __m256 r3 = _mm256_loadu_ps(in + 3 * ldi), r4 = _mm256_loadu_ps(in + 4 * ldi), r5 = _mm256_loadu_ps(in + 5 * ldi);
    __m256 r6 = _mm256_loadu_ps(in + 6 * ldi), r7 = _mm256_loadu_ps(in + 7 * ldi);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3);
    __m256 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + ldo, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * ldo, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * ldo, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * ldo, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * ldo, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * ldo, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * ldo, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* B block k in [kb, kb+kc), all N columns -> panels [n_pan][kc][16], zero-padded.
 * trans: b(k, j) = B[j·ldb + k] (nt), else B[k·ldb + j]. */
__attribute__((target("avx2,fma"))) static void pack_b(float *bp, const float *B, int64_t ldb, bool trans, int64_t N,
                                                     int64_t kb, int64_t kc) {
    int64_t n_pan = (N + NR - 1) / NR;
    for (int64_t p = 0; p < n_pan; p++) {
        float *dst = bp + p * kc * NR;
        int64_t j0 = p * NR, nr = DS_MIN(NR, N - j0);
        if (!trans) {   /* done below, row by row */
            if (nr < NR)
                for (int64_t k = 0; k < kc; k++)
                    for (int64_t jj = 0; jj < NR; jj++) dst[k * NR + jj] = jj < nr ? B[(kb + k) * ldb + j0 + jj] : 0.0f;
            continue;
        }
        const float *src = B + j0 * ldb + kb;   /* row jj of the panel = B row j0 + jj, from column kb */
        int64_t k = 0;
        if (nr == NR)
            for (; k + 8 <= kc; k += 8) {
                transpose8x8(dst + k * NR, NR, src + k, ldb);
                transpose8x8(dst + k * NR + 8, NR, src + 8 * ldb + k, ldb);
            }
        for (; k < kc; k++)
            for (int64_t jj = 0; jj < NR; jj++) dst[k * NR + jj] = jj < nr ? src[jj * ldb + k] : 0.0f;
    }
    if (!trans)   /* full panels: read each row of B once, in order (streams well from memory) */
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (kb + k) * ldb;
            for (int64_t p = 0; p < N / NR; p++) {
                _mm256_storeu_ps(bp + (p * kc + k) * NR, _mm256_loadu_ps(src + p * NR));
                _mm256_storeu_ps(bp + (p * kc + k) * NR + 8, _mm256_loadu_ps(src + p * NR + 8));
            }
        }
}

/* tn: A block rows k in [kb, kb+kc), columns i in [m0, m1) -> one micro-panel
 * [kc][6] per 6-column tile, tile t at ap + t·(6·kc + 2), zero-padded columns;
 * causal: rows k < k0(tile) are skipped (never read). Tile by tile, so the
 * writes are sequential (row by row, they went to 6·kc-float strides and
 * measured 4-10% slower); each k stores 8 lanes, the next k (or the tile's
 * 2 floats of slack) taking the extra 2; lanes past the tile are masked off
 * the load, so nothing outside A's columns is read. */
__attribute__((target("avx2,fma"))) static void pack_a_tn(float *ap, const float *A, int64_t lda, int64_t m0, int64_t m1,
                                                        int64_t kb, int64_t kc, bool causal) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i full = _mm256_cmpgt_epi32(_mm256_set1_epi32(MR), lane);
    int64_t nt = (m1 - m0 + MR - 1) / MR, stride = MR * kc + 2;
    int last = (int)(m1 - m0 - (nt - 1) * MR);
    const __m256i lmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last), lane);
    for (int64_t t = 0; t < nt; t++) {
        __m256i m = t == nt - 1 ? lmask : full;
        int64_t k0 = causal ? DS_MAX(0, m0 + t * MR - kb) : 0;   /* rows k with i0 <= kb + k */
        const float *src = A + (kb + k0) * lda + m0 + t * MR;
        float *dst = ap + t * stride + k0 * MR;
        for (int64_t k = k0; k < kc; k++, src += lda, dst += MR) _mm256_storeu_ps(dst, _mm256_maskload_ps(src, m));
    }
}

__attribute__((target("avx2,fma"))) static void dense_rows(const gemm_job *g, int64_t m0, int64_t m1, int tid) {
    int64_t n_pan = (g->N + NR - 1) / NR;
    int64_t kcap = DS_MIN(DKC, g->K);
    float *bp = tr_scratch(tid, 2, (size_t)(n_pan * NR * kcap));
    bool pack_a = g->mode == MODE_TN;
    float *ap = pack_a ? tr_scratch(tid, 3, (size_t)(((m1 - m0 + MR - 1) / MR) * (MR * kcap + 2))) : NULL;
    if (!bp || (pack_a && !ap)) return;
    for (int64_t kb = 0; kb < g->K; kb += DKC) {
        int64_t kc = DS_MIN(DKC, g->K - kb);
        bool load = g->acc || kb > 0;
        pack_b(bp, g->B, g->ldb, g->mode == MODE_NT, g->N, kb, kc);
        if (ap) pack_a_tn(ap, g->A, g->lda, m0, m1, kb, kc, g->causal == CAUSAL_TN);
        for (int64_t i0 = m0; i0 < m1; i0 += MR) {
            int mr = (int)DS_MIN(MR, m1 - i0);
            const float *a;
            int64_t ars, aks, k0 = 0, k1 = kc;
            if (ap) { a = ap + ((i0 - m0) / MR) * (MR * kc + 2); ars = 1; aks = MR; }
            else { a = g->A + i0 * g->lda + kb; ars = g->lda; aks = 1; }
            if (g->causal == CAUSAL_NN) k1 = DS_MAX(0, DS_MIN(kc, i0 + mr - kb));   /* A[i][k] = 0 for k > i */
            else if (g->causal == CAUSAL_TN) k0 = DS_MAX(0, DS_MIN(kc, i0 - kb));   /* A[k][i] = 0 for k < i */
            /* software prefetch, spread over this tile's panels: the next tile's A rows (nt/nn, when
             * there are panels enough to hide them: with 2-3, as in attention, A is cache-resident and
             * the prefetches only cost, 2-4% there) and C rows */
            int64_t nx = i0 + MR < m1 ? DS_MIN(MR, m1 - i0 - MR) : 0;
            int64_t a_lines = g->mode == MODE_TN || n_pan < 4 ? 0 : (kc * 4 + 63) / 64, c_lines = (g->N * 4 + 63) / 64;
            int64_t pf_total = nx * (a_lines + c_lines), pf_done = 0, pf_r = 0, pf_l = 0;   /* line pf_l of row pf_r */
            for (int64_t p = 0; p < n_pan; p++) {
                int64_t j0 = p * NR;
                for (int64_t pf_end = pf_total * (p + 1) / n_pan; pf_done < pf_end; pf_done++) {
                    if (pf_l < a_lines) __builtin_prefetch(g->A + (i0 + MR + pf_r) * g->lda + kb + pf_l * 16, 0, 3);
                    else __builtin_prefetch(g->C + (i0 + MR + pf_r) * g->ldc + (pf_l - a_lines) * 16, 1, 3);
                    if (++pf_l == a_lines + c_lines) { pf_l = 0; pf_r++; }
                }
                if (g->causal == CAUSAL_NT && j0 > i0 + mr - 1) break;   /* tiles entirely above the diagonal */
                int nr = (int)DS_MIN(NR, g->N - j0);
                const float *b = bp + p * kc * NR;
                float *c = g->C + i0 * g->ldc + j0;
                if (k1 <= k0) {
                    if (!load)   /* nothing to add: C = 0 */
                        for (int r = 0; r < mr; r++) memset(c + r * g->ldc, 0, (size_t)nr * sizeof(float));
                    continue;
                }
                if (mr == MR && nr == NR) {
                    if (ap) ukr_cols(a + k0 * MR, MR, b + k0 * NR, NR, k1 - k0, c, g->ldc, g->alpha, load);
                    else ukr_direct(a + k0, ars, b + k0 * NR, NR, k1 - k0, c, g->ldc, g->alpha, load);
                } else {
                    kern_dispatch(a + k0 * aks, ars, aks, b + k0 * NR, NR, k1 - k0, c, g->ldc, mr, nr, g->alpha, load);
                }
            }
        }
    }
}

static void dense_worker(void *vc, int64_t t0, int64_t t1, int tid) {
    const gemm_job *g = vc;
    int64_t m0 = t0 * MR, m1 = DS_MIN(g->M, t1 * MR);
    if (g->bf16) tg_rows_bf16_avx512(g, m0, m1, tid);
    else if (!g_force_avx2 && ds_isa_level() >= DS_ISA_AVX512) tg_rows_f32_avx512(g, m0, m1, tid);
    else dense_rows(g, m0, m1, tid);
}

#endif

int tr_gemm_causal_band(void) {
#if defined(__x86_64__)
    if (avx2_ok()) return MR;
#endif
    return 0;
}

bool tr_gemm_acc_once(int64_t k_max) {
#if defined(__x86_64__)
    return avx2_ok() && k_max <= DKC && !(g_bf16 && !bf16_usable());   /* (the bf16 twin fallback: not promised) */
#else
    (void)k_max;
    return false;
#endif
}

/* the frozen range (tr_gemm_freeze_begin); set and cleared outside parallel regions */
static const float *g_frz_lo;
static int64_t g_frz_n;
static uint64_t g_frz_epoch;

void tr_gemm_freeze_begin(const float *lo, int64_t n) {
    g_frz_lo = lo;
    g_frz_n = n;
    g_frz_epoch++;
}

void tr_gemm_freeze_end(void) { g_frz_lo = NULL; g_frz_n = 0; }

void tr_gemm_freeze_release(void) {
#if defined(__x86_64__)
    tg_pack_cache_free();
#endif
}

static void run(gemm_job *g) {
    if (g->M <= 0 || g->N <= 0) return;
    g->bf16 = g_bf16 && t_keep_fp32 == 0 && !g_force_blas;
    g->bpack = NULL;
#if defined(__x86_64__)
    /* x·Wᵀ (nt) and dy·W (nn) with W frozen: its panels from the cache (the
     * AVX-512 rows only: fp32 at level avx512+, bf16 mode). B's extent: N
     * rows of K (nt), K rows of N (nn). */
    bool trans = g->mode == MODE_NT;
    bool wide = g->bf16 ? bf16_usable() : !g_force_avx2 && ds_isa_level() >= DS_ISA_AVX512;
    if (g_frz_lo && g->mode != MODE_TN && g->causal == CAUSAL_NONE && g->K > 0 && avx2_ok() && wide &&
        g->B >= g_frz_lo &&
        g->B + (trans ? (g->N - 1) * g->ldb + g->K : (g->K - 1) * g->ldb + g->N) <= g_frz_lo + g_frz_n)
        g->bpack = tg_pack_cache_get(g->B, g->ldb, trans, g->bf16, g->N, g->K, g_frz_epoch);
#endif
    if (g->bf16 && (!bf16_usable() || g->K <= 0)) {   /* DS_ISA lowered since: the twin */
        tg_bf16_ref(g);
        return;
    }
#if defined(__x86_64__)
    if (avx2_ok() && g->K > 0) {
        int64_t tiles = (g->M + MR - 1) / MR;
        int64_t work = 2 * MR * g->N * g->K;   /* flops per row tile */
        ds_par_for(tiles, DS_MAX(1, (1 << 20) / DS_MAX(work, 1)), dense_worker, g);
        return;
    }
#endif
    /* fallback: OpenBLAS through ds_sgemm (dense; causal entries computed in full) */
    bool ta = g->mode == MODE_TN, tb = g->mode == MODE_NT;
    ds_sgemm(ta, tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->acc ? 1.0f : 0.0f, g->C, g->ldc);
}

void tr_gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_NT, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc, false, NULL };
    run(&g);
}

void tr_gemm_nn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_NN, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc, false, NULL };
    run(&g);
}

void tr_gemm_tn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t M, int64_t N,
                int64_t K, float alpha, bool acc) {
    gemm_job g = { MODE_TN, CAUSAL_NONE, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc, false, NULL };
    run(&g);
}

void tr_gemm_nt_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t K, float alpha) {
    gemm_job g = { MODE_NT, CAUSAL_NT, C, ldc, A, lda, B, ldb, T, T, K, alpha, false, false, NULL };
    run(&g);
}

void tr_gemm_nn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc) {
    gemm_job g = { MODE_NN, CAUSAL_NN, C, ldc, A, lda, B, ldb, T, N, T, alpha, acc, false, NULL };
    run(&g);
}

void tr_gemm_tn_causal(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t T,
                       int64_t N, float alpha, bool acc) {
    gemm_job g = { MODE_TN, CAUSAL_TN, C, ldc, A, lda, B, ldb, T, N, T, alpha, acc, false, NULL };
    run(&g);
}

void tr_gemm_bf16_ref(char op, bool causal, float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int64_t M, int64_t N, int64_t K, float alpha, bool acc) {
    int mode = op == 't' ? MODE_NT : op == 'T' ? MODE_TN : MODE_NN;
    int cz = !causal ? CAUSAL_NONE : mode == MODE_NT ? CAUSAL_NT : mode == MODE_NN ? CAUSAL_NN : CAUSAL_TN;
    gemm_job g = { mode, cz, C, ldc, A, lda, B, ldb, M, N, K, alpha, acc, true, NULL };
    if (M > 0 && N > 0) tg_bf16_ref(&g);
}
